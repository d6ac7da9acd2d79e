//! A location's header and access directives as bundled policies:
//! `proxy_set_header` → `request_transform`, `add_header` /
//! `proxy_hide_header` → `response_transform`, `allow`/`deny` → `ip`,
//! `client_max_body_size` → `request_size`, `auth_request` →
//! `forward_auth`. Also `gzip` → `compress`.

use toml::Value;
use toml::value::Table as TomlTable;

use super::super::parse::{Directive, Pos};
use super::super::report::Severity;
use super::super::values::{mg_template, size};
use super::Tx;
use super::scope::{Gzip, Scope};
use super::upstream::proxy_pass;

/// `proxy_set_header`s moongate does by itself (name, value).
const DEFAULT_HEADERS: &[(&str, &str)] = &[
    ("host", "$host"),
    ("host", "$http_host"),
    ("x-real-ip", "$remote_addr"),
    ("x-forwarded-for", "$proxy_add_x_forwarded_for"),
    ("x-forwarded-proto", "$scheme"),
    ("connection", ""),
    ("connection", "upgrade"),
    ("connection", "$connection_upgrade"),
    ("connection", "keep-alive"),
    ("upgrade", "$http_upgrade"),
];

/// A header value as a note shows it: quoted when empty or spaced.
fn shown(v: &str) -> String {
    if v.is_empty() || v.contains(char::is_whitespace) {
        format!("\"{v}\"")
    } else {
        v.to_owned()
    }
}

fn table(pairs: Vec<(&str, Value)>) -> Value {
    let mut t = TomlTable::new();
    for (k, v) in pairs {
        t.insert(k.to_owned(), v);
    }
    Value::Table(t)
}

impl Tx<'_> {
    /// The policies of a route, in the order they should run.
    pub(super) fn policies(
        &mut self,
        scope: &Scope,
        proxied: bool,
        auth_sets: &[(String, String)],
        locations: &[&Directive],
    ) -> Vec<Value> {
        let mut out = Vec::new();
        if let Some(ip) = self.ip_policy(scope) {
            out.push(ip);
        }
        if let Some((v, pos)) = &scope.client_max_body_size {
            match size(v) {
                Ok((s, _)) => out.push(table(vec![
                    ("use", "request_size".into()),
                    ("max_body_size", s.into()),
                ])),
                Err(e) => self.note(
                    pos,
                    format!("client_max_body_size {v}"),
                    Severity::NotTranslated,
                    e,
                ),
            }
        }
        let mut upstream_headers = Vec::new();
        if let Some(Some((uri, pos))) = &scope.auth_request {
            for (var, header) in auth_sets {
                let set =
                    scope.proxy_set_header.get().iter().find(|h| {
                        h.value == format!("${var}") && h.name.eq_ignore_ascii_case(header)
                    });
                match set {
                    Some(h) => upstream_headers.push(Value::from(h.name.clone())),
                    None => {
                        let why = format!(
                            "forward_auth sets the auth answer's headers on the request as they are: ${var} is not passed on as `{header}`"
                        );
                        self.note(
                            pos,
                            format!("auth_request_set ${var}"),
                            Severity::NotTranslated,
                            why,
                        );
                    }
                }
            }
            if let Some(p) = self.forward_auth(uri, pos, locations, upstream_headers.clone()) {
                out.push(p);
            }
        }
        if proxied {
            let mut set = TomlTable::new();
            let mut remove = Vec::new();
            let mut host_set = false;
            for h in scope.proxy_set_header.get() {
                let lname = h.name.to_ascii_lowercase();
                let summary = format!("proxy_set_header {} {}", h.name, shown(&h.value));
                host_set |= lname == "host";
                if upstream_headers
                    .iter()
                    .any(|u| u.as_str() == Some(h.name.as_str()))
                {
                    continue;
                }
                if DEFAULT_HEADERS
                    .iter()
                    .any(|(n, v)| *n == lname && *v == h.value)
                {
                    let why = "moongate does this by default (Host kept, X-Forwarded-For/-Proto and X-Real-IP set, keep-alive and WebSocket upgrades handled)";
                    self.note(&h.pos, summary, Severity::Unneeded, why);
                } else if h.value.is_empty() {
                    remove.push(Value::from(h.name.clone()));
                } else {
                    match mg_template(&h.value) {
                        Ok(t) => {
                            set.insert(h.name.clone(), Value::from(t));
                        }
                        Err(var) => {
                            let why =
                                format!("{var} is not a variable moongate's header templates know");
                            self.note(&h.pos, summary, Severity::NotTranslated, why);
                        }
                    }
                }
            }
            if !host_set && !self.host_noted {
                self.host_noted = true;
                let why = "nginx sends the upstream's name as Host unless `proxy_set_header Host` says otherwise; \
                           moongate passes the client's Host (and adds X-Forwarded-For, X-Forwarded-Proto, X-Real-IP)";
                let pos = self.last_proxy_pos.clone();
                self.note(&pos, "proxy_pass", Severity::Differs, why);
            }
            if !set.is_empty() || !remove.is_empty() {
                let mut p = vec![("use", Value::from("request_transform"))];
                if !remove.is_empty() {
                    p.push(("remove_headers", Value::Array(remove)));
                }
                if !set.is_empty() {
                    p.push(("set_headers", Value::Table(set)));
                }
                out.push(table(p));
            }
        }
        if let Some(p) = self.response_headers(scope, proxied) {
            out.push(p);
        }
        out
    }

    fn response_headers(&mut self, scope: &Scope, proxied: bool) -> Option<Value> {
        let mut append = TomlTable::new();
        for h in scope.add_header.get() {
            let summary = format!("add_header {} {}", h.name, shown(&h.value));
            if h.name.eq_ignore_ascii_case("x-cache-status") && h.value == "$upstream_cache_status"
            {
                let why = "moongate sends X-Cache-Status on every cached route";
                self.note(&h.pos, summary, Severity::Unneeded, why);
                continue;
            }
            match mg_template(&h.value) {
                Ok(t) => {
                    append.insert(h.name.clone(), Value::from(t));
                    if !h.always {
                        let why = "added to every answer; nginx adds it only to 2xx and 3xx answers (without `always`)";
                        self.note(&h.pos, summary, Severity::Differs, why);
                    }
                }
                Err(var) => {
                    let why = format!("{var} is not a variable moongate's header templates know");
                    self.note(&h.pos, summary, Severity::NotTranslated, why);
                }
            }
        }
        let mut remove = Vec::new();
        if proxied {
            remove.extend(
                scope
                    .hide_header
                    .get()
                    .iter()
                    .map(|(n, _)| Value::from(n.clone())),
            );
        }
        if append.is_empty() && remove.is_empty() {
            return None;
        }
        let mut p = vec![("use", Value::from("response_transform"))];
        if !remove.is_empty() {
            p.push(("remove_headers", Value::Array(remove)));
        }
        if !append.is_empty() {
            p.push(("append_headers", Value::Table(append)));
        }
        Some(table(p))
    }

    /// `allow`/`deny` as the `ip` policy, when their order means the same
    /// there (denies checked first, then the allow list).
    fn ip_policy(&mut self, scope: &Scope) -> Option<Value> {
        let rules = scope.access.get();
        if rules.is_empty() {
            return None;
        }
        let mut allow = Vec::new();
        let mut deny = Vec::new();
        let mut seen_allow = false;
        let mut faithful = true;
        for (i, (is_allow, what, _)) in rules.iter().enumerate() {
            let last = i + 1 == rules.len();
            match (is_allow, what.as_str()) {
                (false, "all") if last => {}
                (true, "all") if last && allow.is_empty() => {
                    // deny ...; allow all: the deny list alone.
                }
                (true, w) if w != "all" => {
                    seen_allow = true;
                    allow.push(Value::from(w));
                }
                (false, w) if w != "all" => {
                    faithful &= !seen_allow;
                    deny.push(Value::from(w));
                }
                _ => faithful = false,
            }
        }
        let ends_deny_all = matches!(rules.last(), Some((false, w, _)) if w == "all");
        if ends_deny_all && allow.is_empty() {
            deny = vec!["0.0.0.0/0".into(), "::/0".into()];
        }
        if !faithful {
            let (_, what, pos) = &rules[0];
            let why = "the ip policy checks every deny before the allow list; nginx takes the first rule that matches";
            self.note(
                pos,
                format!("allow/deny {what} ..."),
                Severity::Differs,
                why,
            );
        }
        let mut p = vec![("use", Value::from("ip"))];
        if !allow.is_empty() {
            p.push(("allow", Value::Array(allow)));
        }
        if !deny.is_empty() {
            p.push(("deny", Value::Array(deny)));
        }
        Some(table(p))
    }

    /// `auth_request URI` as `forward_auth`: the URL the location serving
    /// URI proxies to.
    fn forward_auth(
        &mut self,
        uri: &str,
        pos: &Pos,
        locations: &[&Directive],
        upstream_headers: Vec<Value>,
    ) -> Option<Value> {
        let summary = format!("auth_request {uri}");
        // As nginx finds the location: an exact match, else the longest prefix.
        let mut target: Option<(bool, String, String)> = None;
        for l in locations {
            let args: Vec<&str> = l.args.iter().map(|a| a.text.as_str()).collect();
            let (exact, p) = match args.as_slice() {
                ["=", p] => (true, *p),
                [p] if p.starts_with("=/") => (true, &p[1..]),
                ["^~", p] | [p] if p.starts_with('/') => (false, *p),
                _ => continue,
            };
            let hit = if exact { uri == p } else { uri.starts_with(p) };
            let Some(proxy) = l.children().iter().find(|c| c.name == "proxy_pass") else {
                continue;
            };
            let better = match &target {
                None => true,
                Some((t_exact, t_path, _)) => !t_exact && (exact || p.len() > t_path.len()),
            };
            if hit && better {
                target = Some((exact, p.to_owned(), proxy.arg(0).unwrap_or("").to_owned()));
            }
        }
        let Some((exact, prefix, url)) = target else {
            let why = "no location of this server proxies that URI: forward_auth needs the auth service's URL";
            self.note(pos, summary, Severity::NotTranslated, why);
            return None;
        };
        let pp = match proxy_pass(&url) {
            Ok(pp) => pp,
            Err(e) => {
                self.note(pos, summary, Severity::NotTranslated, e);
                return None;
            }
        };
        let servers = self.upstreams.get(&pp.upstream).map(|def| {
            let list = def.table.get("servers").and_then(Value::as_array);
            let first = list
                .and_then(|a| a.first())
                .and_then(|s| s.get("addr"))
                .and_then(Value::as_str)
                .map(str::to_owned);
            (first, list.map_or(0, Vec::len))
        });
        let host = match servers {
            Some((Some(first), n)) => {
                if n > 1 {
                    let why = "forward_auth asks one URL: the auth upstream's first server";
                    self.note(pos, summary.clone(), Severity::Differs, why);
                }
                first
            }
            Some((None, _)) => {
                self.note(
                    pos,
                    summary,
                    Severity::NotTranslated,
                    "the auth upstream has no server",
                );
                return None;
            }
            None => pp.upstream.clone(),
        };
        if host.starts_with("unix:") {
            self.note(
                pos,
                summary,
                Severity::NotTranslated,
                "forward_auth cannot ask a unix socket",
            );
            return None;
        }
        let path = match (&pp.uri, exact) {
            (None, _) => uri.to_owned(),
            (Some(u), true) => u.clone(),
            (Some(u), false) => format!("{u}{}", &uri[prefix.len().min(uri.len())..]),
        };
        let scheme = if pp.https { "https" } else { "http" };
        let why = "forward_auth asks with GET (nginx: the client's method) and adds X-Forwarded-Method/-Uri/-Host/-Proto/-For";
        self.note(pos, summary, Severity::Differs, why);
        let mut p = vec![
            ("use", Value::from("forward_auth")),
            ("uri", Value::from(format!("{scheme}://{host}{path}"))),
        ];
        if !upstream_headers.is_empty() {
            p.push(("upstream_headers", Value::Array(upstream_headers)));
        }
        Some(table(p))
    }

    /// `compress = {...}` for gzip settings; with `base`, only when they
    /// differ from it (`{ enabled = false }` when gzip is off here).
    pub(super) fn compress_of(&self, g: &Gzip, base: Option<&Gzip>) -> Option<Value> {
        let eff = |g: &Gzip| {
            let mut types = vec!["text/html".to_owned()];
            for t in g.types.iter().flatten() {
                if t == "*" {
                    types = vec!["*".to_owned()];
                    break;
                }
                if !types.contains(t) {
                    types.push(t.clone());
                }
            }
            (
                g.on.unwrap_or(false),
                types,
                g.min_length.unwrap_or(20),
                g.level.unwrap_or(1),
            )
        };
        let here = eff(g);
        if let Some(base) = base {
            if eff(base) == here {
                return None;
            }
            if !here.0 {
                return Some(table(vec![("enabled", Value::from(false))]));
            }
        } else if !here.0 {
            return None;
        }
        let (_, types, min_length, level) = here;
        Some(table(vec![
            ("algorithms", Value::Array(vec!["gzip".into()])),
            ("level", Value::from(level)),
            ("min_length", Value::from(min_length as i64)),
            (
                "types",
                Value::Array(types.into_iter().map(Value::from).collect()),
            ),
        ]))
    }
}

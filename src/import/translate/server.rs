//! `server { }`: its listen addresses (plain, TLS with its certificates,
//! HTTP/2), its names, its server-level rewrite directives, and its
//! locations (each through `location`).
//!
//! moongate's listeners are global and routes choose by host only, so a
//! server's addresses join every other's; `finish` reports servers that
//! listened apart.

use super::super::model::{PathOut, Route, Table};
use super::super::parse::{Directive, Pos};
use super::super::report::Severity;
use super::Tx;
use super::program::{self, Context};
use super::scope::Scope;

/// One `listen`.
#[derive(Debug, Clone)]
pub struct Listen {
    /// `ip:port`.
    pub addr: String,
    /// `ssl`.
    pub ssl: bool,
    /// `http2`.
    pub http2: bool,
    /// `default_server`.
    pub default: bool,
}

/// A translated server, before hosts are settled across servers.
#[derive(Debug)]
pub struct ServerDef {
    /// Its place among the http block's servers.
    pub index: usize,
    /// Where it starts.
    pub pos: Pos,
    /// Its listens.
    pub listens: Vec<Listen>,
    /// Its `server_name`s as written.
    pub names: Vec<String>,
    /// Host patterns for its routes.
    pub hosts: Vec<String>,
    /// (certificate, key) pairs.
    pub certs: Vec<(String, String)>,
    /// `http2 on`.
    pub http2: bool,
    /// Its routes.
    pub routes: Vec<Route>,
    /// It only redirects plain HTTP to HTTPS (status, where).
    pub to_https: Option<(u16, Pos)>,
}

impl Tx<'_> {
    pub(super) fn server_block(&mut self, index: usize, d: &Directive, http: &Scope) {
        let mut scope = http.child();
        let mut listens = Vec::new();
        let mut names: Vec<String> = Vec::new();
        let mut http2 = false;
        let mut all_ssl = false;
        let mut locations = Vec::new();
        let mut program = Vec::new();
        for c in d.children() {
            let args: Vec<&str> = c.args.iter().map(|a| a.text.as_str()).collect();
            match (c.name.as_str(), args.as_slice()) {
                ("listen", [addr, flags @ ..]) => {
                    if let Some(l) = self.listen(c, addr, flags) {
                        listens.push(l);
                    }
                }
                ("server_name", list) => names.extend(list.iter().map(|s| (*s).to_owned())),
                ("ssl", ["on"]) => all_ssl = true,
                ("ssl", ["off"]) => {}
                ("http2", [v @ ("on" | "off")]) => http2 = *v == "on",
                ("location", _) => locations.push(c),
                ("rewrite" | "return" | "set" | "break", _) => program.push(c),
                _ => self.apply_scope(&mut scope, c, "a server block"),
            }
        }
        if all_ssl {
            listens.iter_mut().for_each(|l| l.ssl = true);
        }
        if listens.is_empty() {
            let why = "no listen: nginx listens on *:80 (as root), and so does this translation";
            self.note(&d.pos, "server", Severity::Differs, why);
            listens.push(Listen {
                addr: "0.0.0.0:80".into(),
                ssl: false,
                http2: false,
                default: false,
            });
        }
        let certs = self.certs(&scope, &listens, &d.pos);
        let hosts = self.hosts(&names, &d.pos);
        let mut def = ServerDef {
            index,
            pos: d.pos.clone(),
            listens,
            names,
            hosts,
            certs,
            http2,
            routes: Vec::new(),
            to_https: None,
        };
        let ctx = Context {
            default_type: scope.default_type.clone(),
        };
        let answers = program.iter().position(|p| p.name == "return");
        match answers {
            Some(_) => self.answering_server(&mut def, &program, &ctx, &locations),
            None => {
                let prelude = if program.is_empty() {
                    None
                } else {
                    match program::compile(&program, &ctx, true) {
                        Ok(p) => Some(p.code),
                        Err((i, why)) => {
                            self.note_d(program[i], Severity::NotTranslated, why);
                            None
                        }
                    }
                };
                let mut build = super::location::ServerBuild {
                    index,
                    prelude,
                    locations: locations.clone(),
                    routes: Vec::new(),
                    caret_regexes: Vec::new(),
                };
                for loc in &locations {
                    self.location(&mut build, &scope, loc, None);
                }
                let mut routes = build.caret_regexes;
                routes.extend(build.routes);
                def.routes = routes;
            }
        }
        self.servers.push(def);
    }

    /// A server whose own `return` answers every request: one route for
    /// it (its locations are never reached).
    fn answering_server(
        &mut self,
        def: &mut ServerDef,
        program: &[&Directive],
        ctx: &Context,
        locations: &[&Directive],
    ) {
        for loc in locations {
            let why = "never reached: the server's `return` answers every request first";
            self.note_d(loc, Severity::Unneeded, why);
        }
        let compiled = match program::compile(program, ctx, false) {
            Ok(c) => c,
            Err((i, why)) => {
                self.note_d(program[i], Severity::NotTranslated, why);
                return;
            }
        };
        if let [only] = program
            && let Some(code) = https_redirect(only, &def.names)
            && def.listens.iter().all(|l| !l.ssl)
        {
            def.to_https = Some((code, only.pos.clone()));
        }
        let mut keys = Table::default();
        let label = format!("s{}-server-return", def.index);
        let from = format!("the server at {}", def.pos);
        let path = self.generated_lua(&label, &compiled.code, &from);
        keys.set("lua", lua_table("content", path));
        def.routes.push(Route {
            pos: def.pos.clone(),
            comment: vec![format!("server-level return ({})", program[0].pos)],
            hosts: Vec::new(),
            path: PathOut::Prefix("/".into()),
            keys,
        });
    }

    fn listen(&mut self, c: &Directive, addr: &str, flags: &[&str]) -> Option<Listen> {
        let mut l = Listen {
            addr: String::new(),
            ssl: false,
            http2: false,
            default: false,
        };
        let mut dropped = Vec::new();
        for f in flags {
            match *f {
                "ssl" => l.ssl = true,
                "http2" => l.http2 = true,
                "default_server" | "default" => l.default = true,
                "quic" | "http3" | "proxy_protocol" => {
                    let why = format!("moongate's listeners have no `{f}`");
                    self.note_d(c, Severity::NotTranslated, why);
                }
                other => dropped.push(other),
            }
        }
        if !dropped.is_empty() {
            let why = format!("{}: socket options moongate sets itself", dropped.join(" "));
            self.note_d(c, Severity::Unneeded, why);
        }
        if addr.starts_with("unix:") {
            self.note_d(
                c,
                Severity::NotTranslated,
                "moongate listens on TCP addresses only",
            );
            return None;
        }
        let (host, port) = match addr.rsplit_once(':') {
            Some((h, p))
                if !h.ends_with(':') && p.chars().all(|c| c.is_ascii_digit()) && !p.is_empty() =>
            {
                (h.to_owned(), p.to_owned())
            }
            _ if addr.chars().all(|c| c.is_ascii_digit()) => ("*".to_owned(), addr.to_owned()),
            _ => (addr.to_owned(), "80".to_owned()),
        };
        let host = match host.as_str() {
            "*" => "0.0.0.0".to_owned(),
            "localhost" => {
                let why = "moongate listens on addresses, not names: localhost is 127.0.0.1 here";
                self.note_d(c, Severity::Differs, why);
                "127.0.0.1".to_owned()
            }
            h if h.parse::<std::net::IpAddr>().is_ok() => h.to_owned(),
            h if h.starts_with('[') && h.ends_with(']') => h.to_owned(),
            h => {
                let why =
                    format!("`{h}` is a name; moongate listens on IP addresses (write it as one)");
                self.note_d(c, Severity::NotTranslated, why);
                return None;
            }
        };
        l.addr = format!("{host}:{port}");
        Some(l)
    }

    /// moongate host patterns for `server_name`s.
    fn hosts(&mut self, names: &[String], pos: &Pos) -> Vec<String> {
        let mut out = Vec::new();
        for n in names {
            let n = n.to_ascii_lowercase();
            if n.is_empty() || n == "_" {
                continue;
            }
            if n.starts_with('~') {
                let why =
                    format!("`{n}`: moongate's hosts are exact names or *.suffix, not regexes");
                self.note(
                    pos,
                    format!("server_name {n}"),
                    Severity::NotTranslated,
                    why,
                );
            } else if let Some(base) = n.strip_prefix('.') {
                out.push(base.to_owned());
                out.push(format!("*.{base}"));
            } else if n.ends_with(".*") || n.chars().skip(1).any(|c| c == '*') {
                let why = format!("`{n}`: moongate's wildcards are *.suffix only");
                self.note(
                    pos,
                    format!("server_name {n}"),
                    Severity::NotTranslated,
                    why,
                );
            } else {
                out.push(n);
            }
        }
        out.dedup();
        out
    }

    /// Certificate/key pairs, paired in order as nginx pairs them.
    fn certs(&mut self, scope: &Scope, listens: &[Listen], pos: &Pos) -> Vec<(String, String)> {
        let certs = scope.certs.get();
        let keys = scope.keys.get();
        if !listens.iter().any(|l| l.ssl) {
            return Vec::new();
        }
        if certs.is_empty() || certs.len() != keys.len() {
            let why = "a TLS listen needs ssl_certificate and ssl_certificate_key, as many of each";
            self.note(pos, "server", Severity::NotTranslated, why);
            return Vec::new();
        }
        let mut out = Vec::new();
        for ((c, cpos), (k, _)) in certs.iter().zip(keys) {
            if super::super::values::has_vars(c) || super::super::values::has_vars(k) {
                let why = "certificates chosen by variables: list each in [[server.tls]] certs";
                self.note(
                    cpos,
                    format!("ssl_certificate {c}"),
                    Severity::NotTranslated,
                    why,
                );
                continue;
            }
            out.push((self.conf_path(c), self.conf_path(k)));
        }
        out
    }
}

/// The status of `return 30x https://$host$request_uri` (or the server's
/// own name), the redirect moongate's `redirect` policy does with
/// `http_to_https`.
fn https_redirect(d: &Directive, names: &[String]) -> Option<u16> {
    let [code, target] = d.args.as_slice() else {
        return None;
    };
    let code: u16 = code.text.parse().ok()?;
    if !matches!(code, 301 | 302 | 303 | 307 | 308) {
        return None;
    }
    let host = target
        .text
        .strip_prefix("https://")?
        .strip_suffix("$request_uri")?;
    let ok =
        matches!(host, "$host" | "$server_name" | "$http_host") || names.iter().any(|n| n == host);
    ok.then_some(code)
}

/// `{ PHASE = path }` for a route's `lua` key.
pub fn lua_table(phase: &str, path: String) -> toml::Value {
    let mut t = toml::value::Table::new();
    t.insert(phase.to_owned(), toml::Value::from(path));
    toml::Value::Table(t)
}

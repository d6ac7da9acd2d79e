//! `upstream { }` blocks, `proxy_pass` targets, and the moongate upstreams
//! they become. nginx sets timeouts and retries per location, moongate
//! per upstream: each different combination a location asks for is its
//! own `[upstream.NAME]` (a variant), sharing the servers.

use toml::Value;
use toml::value::Table as TomlTable;

use super::super::model::Table;
use super::super::parse::{Directive, Pos};
use super::super::report::Severity;
use super::super::values::{duration, has_vars, mg_template, safe_name};
use super::Tx;
use super::lua::lua_handler;
use super::scope::Scope;

/// An nginx upstream, or the address of a `proxy_pass` to no upstream.
#[derive(Debug, Clone)]
pub struct UpstreamDef {
    /// The keys every variant shares (`balance`, `servers`, `keepalive`, ...).
    pub table: Table,
    /// The moongate name of the first variant.
    pub base_name: String,
}

/// One moongate upstream: an nginx upstream with a location's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Variant {
    /// The nginx upstream (its key in `Tx::upstreams`).
    pub nginx: String,
    /// The settings that differ between locations.
    pub settings: Vec<(String, Value)>,
    /// The moongate name.
    pub name: String,
    /// Where it was first asked for.
    pub pos: Pos,
}

/// What a `proxy_pass` names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyPass {
    /// The upstream's key in `Tx::upstreams` (its name, or `host:port`).
    pub upstream: String,
    /// `https://`.
    pub https: bool,
    /// The URI part (`/x/` of `http://up/x/`), if any.
    pub uri: Option<String>,
}

/// Parses `proxy_pass URL`.
pub fn proxy_pass(url: &str) -> Result<ProxyPass, String> {
    let (https, rest) = if let Some(r) = url.strip_prefix("http://") {
        (false, r)
    } else if let Some(r) = url.strip_prefix("https://") {
        (true, r)
    } else {
        return Err(format!("`{url}` is not an http:// or https:// URL"));
    };
    let (authority, uri) = if let Some(sock) = rest.strip_prefix("unix:") {
        // http://unix:/path/to.sock:/uri
        match sock.find(':') {
            Some(end) => (&rest[..5 + end], Some(&sock[end + 1..])),
            None => (rest, None),
        }
    } else {
        match rest.find('/') {
            Some(at) => (&rest[..at], Some(&rest[at..])),
            None => (rest, None),
        }
    };
    if has_vars(authority) {
        return Err("the upstream is chosen by variables".to_owned());
    }
    if authority.is_empty() {
        return Err(format!("`{url}` names no host"));
    }
    Ok(ProxyPass {
        upstream: authority.to_owned(),
        https,
        uri: uri.filter(|u| !u.is_empty()).map(str::to_owned),
    })
}

/// An upstream `server` address in moongate's form (`host:port`,
/// `unix:/path`), nginx's default port 80 added.
fn peer_addr(addr: &str, default_port: u16) -> String {
    if addr.starts_with("unix:") {
        return addr.to_owned();
    }
    let has_port = match addr.rfind(']') {
        Some(close) => addr[close..].contains(':'),
        None => addr.contains(':'),
    };
    if has_port {
        addr.to_owned()
    } else {
        format!("{addr}:{default_port}")
    }
}

impl Tx<'_> {
    /// `upstream NAME { ... }`.
    pub(super) fn upstream_block(&mut self, d: &Directive) {
        let Some(name) = d.arg(0).filter(|_| d.args.len() == 1) else {
            self.note_d(d, Severity::NotTranslated, "`upstream` takes one name");
            return;
        };
        let mut table = Table::default();
        table.comment.push(format!("upstream {name} ({})", d.pos));
        let mut servers = Vec::new();
        for c in d.children() {
            let args: Vec<&str> = c.args.iter().map(|a| a.text.as_str()).collect();
            match (c.name.as_str(), args.as_slice()) {
                ("server", [addr, params @ ..]) => {
                    if let Some(peer) = self.peer(c, addr, params) {
                        servers.push(Value::Table(peer));
                    }
                }
                ("least_conn", []) => table.set("balance", "least_conn"),
                ("ip_hash", []) => table.set("balance", "ip_hash"),
                ("hash", [key, rest @ ..]) => match mg_template(key) {
                    Ok(key) => {
                        table.set("balance", "hash");
                        table.set("key", key);
                        if rest != ["consistent"] {
                            let why = "moongate's hash is consistent (ketama-like), so keys map to other peers than nginx's plain hash";
                            self.note_d(c, Severity::Differs, why);
                        }
                    }
                    Err(var) => {
                        let why = format!("{var} is not a variable moongate's hash key can use");
                        self.note_d(c, Severity::NotTranslated, why)
                    }
                },
                ("random", rest) => {
                    table.set("balance", "random2");
                    if rest.first() != Some(&"two") {
                        let why = "moongate's random balancer picks the less loaded of two random peers";
                        self.note_d(c, Severity::Differs, why);
                    }
                }
                ("keepalive", [n]) => match n.parse::<i64>() {
                    Ok(n) => table.set("keepalive", n),
                    Err(_) => self.note_d(c, Severity::NotTranslated, "not a number"),
                },
                ("keepalive_timeout", [t]) => match duration(t) {
                    Ok(t) => table.set("keepalive_timeout", t),
                    Err(e) => self.note_d(c, Severity::NotTranslated, e),
                },
                ("zone", _) => self.note_d(
                    c,
                    Severity::Unneeded,
                    "peers' state is shared by every worker thread already",
                ),
                (n, _) if n.starts_with("balancer_by_lua") => {
                    if let Some((_, Ok(src))) = lua_handler_any(c) {
                        let label = format!("upstream-{}-balancer", safe_name(name));
                        if let Some(path) = self.lua_file(&src, &label, None) {
                            let mut lua = TomlTable::new();
                            lua.insert("balancer".into(), Value::from(path));
                            table.set("lua", Value::Table(lua));
                        }
                    } else {
                        self.note_d(c, Severity::NotTranslated, "not written as ngx_lua takes it");
                    }
                }
                ("sticky" | "ntlm" | "queue" | "least_time", _) => self.note_d(
                    c,
                    Severity::NotTranslated,
                    "moongate's balancers are round_robin, least_conn, ip_hash, hash and random2 (or a Lua balancer)",
                ),
                _ => self.unknown(c, "an upstream block"),
            }
        }
        if servers.is_empty() {
            self.note_d(
                d,
                Severity::NotTranslated,
                "the upstream has no server moongate can use",
            );
            return;
        }
        table.set("servers", servers);
        let base_name = self.unique_upstream_name(&safe_name(name));
        self.upstreams
            .insert(name.to_owned(), UpstreamDef { table, base_name });
    }

    fn peer(&mut self, c: &Directive, addr: &str, params: &[&str]) -> Option<TomlTable> {
        let mut peer = TomlTable::new();
        peer.insert("addr".into(), Value::from(peer_addr(addr, 80)));
        for p in params {
            let (key, value) = p.split_once('=').unwrap_or((p, ""));
            match key {
                "weight" | "max_fails" => match value.parse::<i64>() {
                    Ok(n) => {
                        peer.insert(key.into(), Value::from(n));
                    }
                    Err(_) => self.note_d(c, Severity::NotTranslated, format!("{key}= is not a number")),
                },
                "fail_timeout" => match duration(value) {
                    Ok(t) => {
                        peer.insert(key.into(), Value::from(t));
                    }
                    Err(e) => self.note_d(c, Severity::NotTranslated, e),
                },
                "backup" | "down" => {
                    peer.insert(key.into(), Value::from(true));
                }
                "resolve" => self.note_d(
                    c,
                    Severity::Differs,
                    "moongate resolves the name when the configuration loads, not again while running",
                ),
                _ => self.note_d(c, Severity::NotTranslated, format!("moongate's peers have no `{key}`")),
            }
        }
        Some(peer)
    }

    fn unique_upstream_name(&self, wanted: &str) -> String {
        let taken = |n: &str| {
            self.upstreams.values().any(|u| u.base_name == n)
                || self.variants.iter().any(|v| v.name == n)
        };
        if !taken(wanted) {
            return wanted.to_owned();
        }
        (2..)
            .map(|i| format!("{wanted}-{i}"))
            .find(|n| !taken(n))
            .unwrap_or_else(|| wanted.to_owned())
    }

    /// The moongate upstream for a location's `proxy_pass`, with its
    /// timeouts, retries and TLS settings.
    pub(super) fn upstream_for(&mut self, pp: &ProxyPass, scope: &Scope, pos: &Pos) -> String {
        if !self.upstreams.contains_key(&pp.upstream) {
            // A proxy_pass straight to an address: an upstream of one.
            let addr = peer_addr(&pp.upstream, if pp.https { 443 } else { 80 });
            let mut table = Table::default();
            table
                .comment
                .push(format!("proxy_pass {} ({pos})", pp.upstream));
            let mut peer = TomlTable::new();
            peer.insert("addr".into(), Value::from(addr));
            table.set("servers", vec![Value::Table(peer)]);
            let base_name = self.unique_upstream_name(&safe_name(&pp.upstream));
            self.upstreams
                .insert(pp.upstream.clone(), UpstreamDef { table, base_name });
        }
        let mut settings: Vec<(String, Value)> = Vec::new();
        for (key, v) in [
            ("connect_timeout", &scope.connect_timeout),
            ("read_timeout", &scope.read_timeout),
            ("send_timeout", &scope.send_timeout),
        ] {
            if let Some(v) = v {
                settings.push((key.into(), Value::from(v.clone())));
            }
        }
        match &scope.next_upstream {
            Some(None) => settings.push(("retries".into(), Value::from(0))),
            Some(Some(statuses)) if !statuses.is_empty() => {
                let list: Vec<Value> = statuses
                    .iter()
                    .map(|s| Value::from(i64::from(*s)))
                    .collect();
                settings.push(("retry_statuses".into(), Value::Array(list)));
            }
            _ => {}
        }
        if let Some(tries) = scope.next_upstream_tries.filter(|t| *t > 0)
            && !matches!(scope.next_upstream, Some(None))
        {
            settings.push(("retries".into(), Value::from(i64::from(tries - 1))));
        }
        if pp.https {
            let mut tls = TomlTable::new();
            tls.insert(
                "verify".into(),
                Value::from(scope.ssl_verify.unwrap_or(false)),
            );
            settings.push(("tls".into(), Value::Table(tls)));
        }
        if let Some(v) = self
            .variants
            .iter()
            .find(|v| v.nginx == pp.upstream && v.settings == settings)
        {
            return v.name.clone();
        }
        // The upstream as nginx defined it keeps its name; a location's
        // own settings make a variant with a suffix.
        let base = self
            .upstreams
            .get(&pp.upstream)
            .map(|u| u.base_name.clone())
            .unwrap_or_default();
        let name = if settings.is_empty() {
            base
        } else {
            self.unique_upstream_name(&base)
        };
        self.variants.push(Variant {
            nginx: pp.upstream.clone(),
            settings,
            name: name.clone(),
            pos: pos.clone(),
        });
        name
    }

    /// The `[upstream.NAME]` tables: every variant, and the upstreams no
    /// location used.
    pub(super) fn upstream_tables(&mut self) {
        let mut out = Vec::new();
        for (nginx, def) in &self.upstreams {
            let variants: Vec<&Variant> =
                self.variants.iter().filter(|v| &v.nginx == nginx).collect();
            if variants.is_empty() {
                out.push(super::super::model::Named {
                    name: def.base_name.clone(),
                    table: def.table.clone(),
                });
            }
            for v in variants {
                let mut table = def.table.clone();
                if v.name != def.base_name {
                    table.comment.push(format!(
                        "with the proxy settings of the location at {}",
                        v.pos
                    ));
                }
                let servers = table.keys.iter().position(|(k, _)| k == "servers");
                let servers = servers.map(|i| table.keys.remove(i));
                for (k, val) in &v.settings {
                    table.set(k, val.clone());
                }
                if let Some((k, val)) = servers {
                    table.keys.push((k, val));
                }
                out.push(super::super::model::Named {
                    name: v.name.clone(),
                    table,
                });
            }
        }
        self.conf.upstreams = out;
    }
}

/// `balancer_by_lua*` read like the route phases.
fn lua_handler_any(d: &Directive) -> Option<(&'static str, Result<super::lua::LuaSrc, String>)> {
    let renamed = Directive {
        name: d.name.replacen("balancer", "access", 1),
        ..d.clone()
    };
    lua_handler(&renamed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_pass_forms() {
        let p = proxy_pass("http://origin").unwrap();
        assert_eq!(
            (p.upstream.as_str(), p.https, p.uri),
            ("origin", false, None)
        );
        let p = proxy_pass("https://127.0.0.1:8443/api/").unwrap();
        assert_eq!(
            (p.upstream.as_str(), p.https, p.uri.as_deref()),
            ("127.0.0.1:8443", true, Some("/api/"))
        );
        let p = proxy_pass("http://unix:/run/app.sock:/x").unwrap();
        assert_eq!(
            (p.upstream.as_str(), p.uri.as_deref()),
            ("unix:/run/app.sock", Some("/x"))
        );
        assert!(proxy_pass("http://$backend").is_err());
        assert!(proxy_pass("ftp://x").is_err());
    }

    #[test]
    fn peer_addresses_get_nginx_default_port() {
        assert_eq!(peer_addr("10.0.0.1", 80), "10.0.0.1:80");
        assert_eq!(peer_addr("app.internal:8080", 80), "app.internal:8080");
        assert_eq!(peer_addr("[::1]", 80), "[::1]:80");
        assert_eq!(peer_addr("[::1]:81", 80), "[::1]:81");
        assert_eq!(peer_addr("unix:/run/a.sock", 80), "unix:/run/a.sock");
    }
}

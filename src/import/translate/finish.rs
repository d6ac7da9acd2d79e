//! What needs every server at once: listeners (plain ones joined, TLS ones
//! with the certificates of every server on the address), the hosts each
//! route answers (a port's default server also takes unknown hosts, as
//! nginx's does), the HTTP→HTTPS redirect servers folded into the
//! `redirect` policy, and routes two servers would both claim.

use toml::Value;
use toml::value::Table as TomlTable;

use super::super::model::{Conf, PathOut, ServerRoutes, Table};
use super::super::report::{Owner, Severity};
use super::Tx;

/// (certificate, key) pairs.
type Certs = Vec<(String, String)>;

impl Tx<'_> {
    pub(super) fn finish(mut self) -> Conf {
        self.upstream_tables();
        self.listeners();
        self.fold_https_redirects();
        self.assign_hosts();
        self.drop_duplicates();
        let servers = std::mem::take(&mut self.servers);
        self.conf.servers = servers
            .into_iter()
            .map(|s| ServerRoutes {
                index: s.index,
                pos: s.pos,
                names: s.names,
                routes: s.routes,
            })
            .collect();
        let mut seen = std::collections::HashSet::new();
        self.report
            .notes
            .retain(|n| seen.insert((n.pos.to_string(), n.directive.clone(), n.why.clone())));
        // In the order of the files as met, then by line.
        let mut files: Vec<std::sync::Arc<str>> = Vec::new();
        for n in &self.report.notes {
            if !files.contains(&n.pos.file) {
                files.push(n.pos.file.clone());
            }
        }
        self.report
            .notes
            .sort_by_key(|n| (files.iter().position(|f| *f == n.pos.file), n.pos.line));
        self.conf
    }

    fn listeners(&mut self) {
        let mut plain: Vec<String> = Vec::new();
        // Per TLS address: its certificate/key pairs, and whether h2 is offered.
        let mut tls: Vec<(String, Certs, bool)> = Vec::new();
        for s in &self.servers {
            for l in &s.listens {
                if l.ssl {
                    let at = match tls.iter().position(|(a, _, _)| *a == l.addr) {
                        Some(i) => i,
                        None => {
                            tls.push((l.addr.clone(), Vec::new(), false));
                            tls.len() - 1
                        }
                    };
                    let entry = &mut tls[at];
                    for c in &s.certs {
                        if !entry.1.contains(c) {
                            entry.1.push(c.clone());
                        }
                    }
                    entry.2 |= l.http2 || s.http2;
                } else if !plain.contains(&l.addr) {
                    plain.push(l.addr.clone());
                }
            }
        }
        let all: Vec<&String> = plain.iter().chain(tls.iter().map(|(a, _, _)| a)).collect();
        let mut notes = Vec::new();
        for s in &self.servers {
            let mine: Vec<&String> = s.listens.iter().map(|l| &l.addr).collect();
            let others: Vec<&str> = all
                .iter()
                .filter(|a| !mine.contains(a))
                .map(|a| a.as_str())
                .collect();
            if !others.is_empty() && s.to_https.is_none() {
                let why = format!(
                    "moongate's listeners are shared by every route: this server's routes also answer on {}",
                    others.join(", ")
                );
                notes.push((s.pos.clone(), s.index, why));
            }
        }
        for (pos, index, why) in notes {
            self.report
                .add(&pos, "server", Severity::Differs, why, Owner::Server(index));
        }
        let mut server = Table::default();
        server.set(
            "listen",
            plain.into_iter().map(Value::from).collect::<Vec<_>>(),
        );
        for (k, v) in std::mem::take(&mut self.conf.server.keys) {
            server.set(&k, v);
        }
        server.comment = std::mem::take(&mut self.conf.server.comment);
        self.conf.server = server;
        for (addr, certs, h2) in tls {
            let mut t = Table::default();
            t.set("listen", addr.clone());
            if certs.is_empty() {
                let why = format!("no certificate for the TLS listener {addr}: it is left out");
                let pos = self.servers.first().map(|s| s.pos.clone());
                if let Some(pos) = pos {
                    self.report.add(
                        &pos,
                        format!("listen {addr} ssl"),
                        Severity::NotTranslated,
                        why,
                        Owner::Global,
                    );
                }
                continue;
            }
            let list: Vec<Value> = certs
                .into_iter()
                .map(|(c, k)| {
                    let mut e = TomlTable::new();
                    e.insert("cert".into(), Value::from(c));
                    e.insert("key".into(), Value::from(k));
                    Value::Table(e)
                })
                .collect();
            t.set("certs", list);
            let alpn: Vec<Value> = if h2 {
                vec!["h2".into(), "http/1.1".into()]
            } else {
                vec!["http/1.1".into()]
            };
            t.set("alpn", alpn);
            self.conf.tls.push(t);
        }
    }

    /// A plain server that only redirects to `https://$host$request_uri`
    /// becomes the `redirect` policy (http_to_https) on the routes of the
    /// TLS server with the same names.
    fn fold_https_redirects(&mut self) {
        let mut folds = Vec::new();
        for (i, s) in self.servers.iter().enumerate() {
            let Some((code, pos)) = &s.to_https else {
                continue;
            };
            let target = self.servers.iter().position(|t| {
                t.listens.iter().any(|l| l.ssl)
                    && (t.hosts.iter().any(|h| s.hosts.contains(h))
                        || (s.hosts.is_empty() && t.hosts.is_empty()))
            });
            if let Some(t) = target {
                folds.push((i, t, *code, pos.clone()));
            }
        }
        for (i, t, code, pos) in folds.into_iter().rev() {
            let port = self.servers[t]
                .listens
                .iter()
                .find(|l| l.ssl)
                .and_then(|l| l.addr.rsplit(':').next())
                .and_then(|p| p.parse::<i64>().ok())
                .unwrap_or(443);
            let mut policy = TomlTable::new();
            policy.insert("use".into(), Value::from("redirect"));
            policy.insert("http_to_https".into(), Value::from(true));
            policy.insert("status_code".into(), Value::from(i64::from(code)));
            if port != 443 {
                policy.insert("https_port".into(), Value::from(port));
            }
            for r in &mut self.servers[t].routes {
                let mut list = match r.keys.get("policies") {
                    Some(Value::Array(a)) => a.clone(),
                    _ => Vec::new(),
                };
                list.insert(0, Value::Table(policy.clone()));
                r.keys.set("policies", list);
            }
            let why = format!(
                "done by the redirect policy (http_to_https) on the routes of the server at {}",
                self.servers[t].pos
            );
            self.report
                .add(&pos, "return", Severity::Unneeded, why, Owner::Server(i));
            self.servers[i].routes.clear();
        }
    }

    fn assign_hosts(&mut self) {
        // The default server of each address: marked default_server, else
        // the first to listen on it.
        let mut defaults: Vec<(String, usize)> = Vec::new();
        for (i, s) in self.servers.iter().enumerate() {
            for l in s.listens.iter().filter(|l| l.default) {
                if !defaults.iter().any(|(a, _)| *a == l.addr) {
                    defaults.push((l.addr.clone(), i));
                }
            }
        }
        for (i, s) in self.servers.iter().enumerate() {
            for l in &s.listens {
                if !defaults.iter().any(|(a, _)| *a == l.addr) {
                    defaults.push((l.addr.clone(), i));
                }
            }
        }
        for (i, s) in self.servers.iter_mut().enumerate() {
            let mut hosts = s.hosts.clone();
            if defaults.iter().any(|(_, d)| *d == i) || hosts.is_empty() {
                hosts.push("*".into());
            }
            for r in &mut s.routes {
                r.hosts = hosts.clone();
            }
        }
    }

    /// Two routes with a host, the same matcher and a method in common:
    /// moongate would never choose the later one, and `check` refuses it.
    fn drop_duplicates(&mut self) {
        let mut taken: Vec<(String, PathOut, Option<Vec<String>>, String)> = Vec::new();
        let mut notes = Vec::new();
        for s in &mut self.servers {
            for r in &mut s.routes {
                let methods = match r.keys.get("methods") {
                    Some(Value::Array(a)) => Some(
                        a.iter()
                            .filter_map(Value::as_str)
                            .map(str::to_owned)
                            .collect(),
                    ),
                    _ => None,
                };
                let mut dropped = Vec::new();
                r.hosts.retain(|h| {
                    let clash = taken.iter().find(|(th, tp, tm, _)| {
                        th == h && *tp == r.path && methods_meet(tm.as_deref(), methods.as_deref())
                    });
                    match clash {
                        Some((_, _, _, at)) => {
                            dropped.push(format!("{h} (taken by the route from {at})"));
                            false
                        }
                        None => true,
                    }
                });
                for h in &r.hosts {
                    taken.push((
                        h.clone(),
                        r.path.clone(),
                        methods.clone(),
                        r.pos.to_string(),
                    ));
                }
                if !dropped.is_empty() {
                    let why = format!(
                        "moongate chooses routes by host and path only, not by listen address: not answered here for {}",
                        dropped.join(", ")
                    );
                    notes.push((r.pos.clone(), s.index, why));
                }
            }
            s.routes.retain(|r| !r.hosts.is_empty());
        }
        for (pos, index, why) in notes {
            self.report.add(
                &pos,
                "location",
                Severity::Differs,
                why,
                Owner::Server(index),
            );
        }
    }
}

/// Whether two method lists share a method (`None` is every method; GET
/// brings HEAD).
fn methods_meet(a: Option<&[String]>, b: Option<&[String]>) -> bool {
    let expand = |l: &[String]| {
        let mut v: Vec<String> = l.to_vec();
        if v.iter().any(|m| m == "GET") {
            v.push("HEAD".into());
        }
        v
    };
    match (a, b) {
        (None, _) | (_, None) => true,
        (Some(a), Some(b)) => {
            let (a, b) = (expand(a), expand(b));
            a.iter().any(|m| b.contains(m))
        }
    }
}

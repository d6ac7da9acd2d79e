//! The directive tree → conf.d tables, routes and Lua files, with a note
//! for everything that does not carry over.
//!
//! This file walks the main and `http` contexts; the submodules own the
//! rest: `scope` (settings inherited downwards), `upstream` (`upstream`
//! blocks and the variants locations need), `server` (listen, names,
//! TLS), `location` (one route per location), `program` (the rewrite
//! module's directives as Lua), `zones` (limit and cache zones), `lua`
//! (handler files) and `finish` (hosts, duplicates, the final tables).

mod finish;
mod headers;
mod known;
mod location;
mod lua;
mod matching;
mod program;
mod scope;
mod server;
mod target;
mod upstream;
mod zones;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;

use toml::Value;

use super::model::Conf;
use super::parse::{Directive, Pos};
use super::report::{Owner, Report, Severity};
use super::values::{duration, size};
use scope::{Applied, Scope};
use server::ServerDef;
use upstream::{UpstreamDef, Variant};
use zones::{CacheDef, ZoneDef};

/// What the translation needs to know besides the tree.
#[derive(Debug, Clone)]
pub struct Options {
    /// How conf.d refers to the output directory's `lua/` (e.g.
    /// `conf.d/lua`), since conf.d paths are relative to its parent.
    pub lua_ref: String,
    /// nginx's prefix (`-p`), to make its relative paths absolute; `None`
    /// keeps them relative and notes each.
    pub nginx_prefix: Option<PathBuf>,
    /// nginx's conf directory (the main file's), for certificate paths.
    pub conf_dir: PathBuf,
}

/// Translates a whole configuration.
pub fn translate(tree: &[Directive], opts: &Options, report: &mut Report) -> Conf {
    let mut tx = Tx {
        opts,
        report,
        owner: Owner::Global,
        conf: Conf::default(),
        upstreams: BTreeMap::new(),
        variants: Vec::new(),
        zones: BTreeMap::new(),
        conn_zones: BTreeMap::new(),
        caches: BTreeMap::new(),
        limit_uses: Vec::new(),
        cache_settings: HashMap::new(),
        lua_written: HashMap::new(),
        lua_names: HashSet::new(),
        servers: Vec::new(),
        http_scope: Scope::default(),
        host_noted: false,
        last_proxy_pos: Pos {
            file: "".into(),
            line: 0,
        },
    };
    tx.main(tree);
    tx.finish()
}

/// The translation in progress.
struct Tx<'a> {
    opts: &'a Options,
    report: &'a mut Report,
    /// Which output file notes go to now.
    owner: Owner,
    conf: Conf,
    /// nginx upstreams (and `proxy_pass` addresses) by name.
    upstreams: BTreeMap<String, UpstreamDef>,
    /// The moongate upstreams the locations asked for.
    variants: Vec<Variant>,
    /// `limit_req_zone`s by name.
    zones: BTreeMap<String, ZoneDef>,
    /// `limit_conn_zone`s by name.
    conn_zones: BTreeMap<String, ZoneDef>,
    /// `proxy_cache_path`s by zone name.
    caches: BTreeMap<String, CacheDef>,
    /// moongate limit zones made: (nginx zone, burst or max, kind) → name.
    limit_uses: Vec<(String, u64, &'static str, String)>,
    /// Per nginx cache zone: the first location's settings, and the
    /// moongate zone's name.
    cache_settings: HashMap<String, (zones::CacheSettings, String)>,
    /// Lua files already written for a handler, by its position.
    lua_written: HashMap<String, String>,
    lua_names: HashSet<String>,
    servers: Vec<ServerDef>,
    http_scope: Scope,
    /// Whether the Host difference was reported (once is enough).
    host_noted: bool,
    /// The last `proxy_pass` translated, for that note.
    last_proxy_pos: Pos,
}

impl Tx<'_> {
    fn note(
        &mut self,
        pos: &Pos,
        directive: impl Into<String>,
        severity: Severity,
        why: impl Into<String>,
    ) {
        self.report.add(pos, directive, severity, why, self.owner);
    }

    fn note_d(&mut self, d: &Directive, severity: Severity, why: impl Into<String>) {
        self.note(&d.pos, d.summary(), severity, why);
    }

    /// A directive this context does not know.
    fn unknown(&mut self, d: &Directive, context: &str) {
        let why = match known::why(&d.name) {
            Some((severity, why)) => {
                self.note_d(d, severity, why);
                return;
            }
            None => format!("moongate import does not know `{}` in {context}", d.name),
        };
        self.note_d(d, Severity::NotTranslated, why);
    }

    fn main(&mut self, tree: &[Directive]) {
        let has = |name: &str| tree.iter().any(|d| d.name == name);
        if !has("http") && (has("server") || has("upstream")) {
            // A file of the http block's content (conf.d/*.conf,
            // sites-enabled/*), imported on its own.
            if let Some(first) = tree.first() {
                let why = "no http block: the file is read as the inside of one (a conf.d or sites-enabled file)";
                self.note(&first.pos, "(file)", Severity::Differs, why);
                let http = Directive {
                    name: "http".into(),
                    args: Vec::new(),
                    block: Some(tree.to_vec()),
                    lua: None,
                    pos: first.pos.clone(),
                };
                self.http(&http);
            }
            return;
        }
        for d in tree {
            let args: Vec<&str> = d.args.iter().map(|a| a.text.as_str()).collect();
            match (d.name.as_str(), args.as_slice()) {
                ("http", []) if d.block.is_some() => self.http(d),
                ("worker_processes", ["auto"]) => self.conf.server.set("workers", "auto"),
                ("worker_processes", [n]) => match n.parse::<i64>() {
                    Ok(n) if n > 0 => self.conf.server.set("workers", n),
                    _ => self.note_d(d, Severity::NotTranslated, "not a number of workers"),
                },
                ("pid", [path]) => {
                    let path = self.nginx_path(path, &d.pos, "pid");
                    self.conf.server.set("pid_file", path)
                }
                ("worker_shutdown_timeout", [t]) => match duration(t) {
                    Ok(t) => self.conf.server.set("shutdown_timeout", t),
                    Err(e) => self.note_d(d, Severity::NotTranslated, e),
                },
                ("load_module", [m]) if m.contains("lua") || m.contains("ndk") => {
                    self.note_d(d, Severity::Unneeded, "moongate's Lua (ngx_lua's API) is built in")
                }
                ("load_module", _) => self.note_d(
                    d,
                    Severity::NotTranslated,
                    "moongate cannot load nginx modules; what this module does is not carried over",
                ),
                ("events", _) => self.note_d(
                    d,
                    Severity::Unneeded,
                    "moongate sizes its event loops itself (one per worker thread, no connection limit to set)",
                ),
                ("stream" | "mail", _) => self.note_d(
                    d,
                    Severity::NotTranslated,
                    "moongate proxies HTTP only (no TCP/UDP stream or mail proxy)",
                ),
                _ => self.unknown(d, "the main context"),
            }
        }
    }

    fn http(&mut self, http: &Directive) {
        // Definitions first: a location may name an upstream or a zone
        // defined further down (or in a later include).
        for d in http.children() {
            match d.name.as_str() {
                "upstream" => self.upstream_block(d),
                "limit_req_zone" => self.limit_req_zone(d),
                "limit_conn_zone" => self.limit_conn_zone(d),
                "proxy_cache_path" => self.proxy_cache_path(d),
                _ => {}
            }
        }
        let mut scope = Scope::default();
        let mut servers = Vec::new();
        for d in http.children() {
            match d.name.as_str() {
                "upstream" | "limit_req_zone" | "limit_conn_zone" | "proxy_cache_path" => continue,
                "server" if d.block.is_some() => {
                    servers.push(d);
                    continue;
                }
                _ => {}
            }
            if self.http_only(d) {
                continue;
            }
            self.apply_scope(&mut scope, d, "the http block");
        }
        // http-level settings moongate keeps in [server].
        if let Some((v, pos)) = scope.client_max_body_size.take() {
            match size(&v) {
                Ok((s, _)) => self.conf.server.set("client_max_body_size", s),
                Err(e) => self.note(
                    &pos,
                    format!("client_max_body_size {v}"),
                    Severity::NotTranslated,
                    e,
                ),
            }
        }
        if let Some(compress) = self.compress_of(&scope.gzip, None) {
            self.conf.server.set("compress", compress);
        }
        self.http_scope = scope.clone();
        for (index, d) in servers.into_iter().enumerate() {
            self.owner = Owner::Server(index);
            self.server_block(index, d, &scope);
        }
        self.owner = Owner::Global;
    }

    /// Applies a directive valid at several levels; reports it when it is
    /// none of them.
    fn apply_scope(&mut self, scope: &mut Scope, d: &Directive, context: &str) {
        match scope.apply(d) {
            Applied::Yes => {}
            Applied::Note(severity, why) => self.note_d(d, severity, why),
            Applied::No => self.unknown(d, context),
        }
    }

    /// Directives of the http block only; false when `d` is not one.
    fn http_only(&mut self, d: &Directive) -> bool {
        let args: Vec<&str> = d.args.iter().map(|a| a.text.as_str()).collect();
        let server_time = |key: &str| -> Option<&'static str> {
            match key {
                "keepalive_timeout" => Some("keepalive_timeout"),
                "client_header_timeout" => Some("client_header_timeout"),
                "client_body_timeout" => Some("client_body_timeout"),
                "send_timeout" => Some("send_timeout"),
                _ => None,
            }
        };
        match (d.name.as_str(), args.as_slice()) {
            (name, [t, ..]) if server_time(name).is_some() => {
                let key = server_time(name).unwrap_or(name);
                match duration(t) {
                    Ok(t) => self.conf.server.set(key, t),
                    Err(e) => self.note_d(d, Severity::NotTranslated, e),
                }
                if args.len() > 1 {
                    let why = "the second value (a Keep-Alive response header) is not sent by moongate";
                    self.note_d(d, Severity::Differs, why);
                }
            }
            ("server_tokens", [v @ ("on" | "off")]) => self.conf.server.set("server_tokens", *v == "on"),
            ("underscores_in_headers", [v @ ("on" | "off")]) => {
                self.conf.server.set("underscores_in_headers", *v == "on")
            }
            ("access_log", ["off"]) => self.conf.server.set("access_log", "off"),
            ("access_log", [path, ..]) => {
                let path = if path.starts_with("syslog:") {
                    self.note_d(d, Severity::NotTranslated, "moongate does not log to syslog");
                    return true;
                } else {
                    self.nginx_path(path, &d.pos, "access_log")
                };
                self.conf.server.set("access_log", path);
                self.note_d(
                    d,
                    Severity::Differs,
                    "moongate writes the access log as JSON lines (fields: access_log_fields), not in an nginx log_format",
                );
            }
            ("log_format", _) => self.note_d(
                d,
                Severity::NotTranslated,
                "moongate's access log is JSON lines; choose its fields with [server] access_log_fields",
            ),
            ("set_real_ip_from", [cidr]) => {
                let mut list = match self.conf.server.get("trusted_proxies") {
                    Some(Value::Array(a)) => a.clone(),
                    _ => Vec::new(),
                };
                list.push(Value::from(*cidr));
                self.conf.server.set("trusted_proxies", list);
            }
            ("real_ip_header", ["X-Forwarded-For"]) | ("real_ip_recursive", ["on"]) => {}
            ("real_ip_header" | "real_ip_recursive", _) => self.note_d(
                d,
                Severity::Differs,
                "moongate takes the real client address from X-Forwarded-For, recursively, for trusted_proxies",
            ),
            ("lua_package_path", [path]) => self.lua_package_path(d, path),
            ("lua_shared_dict", [name, _]) if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') => {
                let why = "moongate's dict names are letters, digits and `_` (ngx.shared.NAME): rename it here and in the Lua";
                self.note_d(d, Severity::NotTranslated, why)
            }
            ("lua_shared_dict", [name, sz]) => match size(sz) {
                Ok((s, _)) => self.conf.shared_dicts.push(((*name).to_owned(), s)),
                Err(e) => self.note_d(d, Severity::NotTranslated, e),
            },
            ("lua_ssl_trusted_certificate", [path]) => {
                let path = self.nginx_path(path, &d.pos, "lua_ssl_trusted_certificate");
                self.conf.lua.set("ssl_trusted_certificate", path);
            }
            ("lua_package_cpath", _) => self.note_d(
                d,
                Severity::NotTranslated,
                "moongate loads no C modules; the modules it offers natively (cjson, resty.*) need none",
            ),
            (name, _) if name.starts_with("init_by_lua") || name.starts_with("init_worker_by_lua") => {
                self.init_handler(d)
            }
            ("map" | "geo" | "split_clients", _) => self.note_d(
                d,
                Severity::NotTranslated,
                "moongate has no such variable tables; compute the value in a Lua rewrite handler (ngx.var)",
            ),
            ("include", _) => {}
            _ => return false,
        }
        true
    }

    /// An nginx path made absolute against `--nginx-prefix`, or kept
    /// relative with a note.
    fn nginx_path(&mut self, path: &str, pos: &Pos, what: &str) -> String {
        if path.starts_with('/') {
            return path.to_owned();
        }
        if let Some(prefix) = &self.opts.nginx_prefix {
            return prefix.join(path).display().to_string();
        }
        self.note(
            pos,
            format!("{what} {path}"),
            Severity::Differs,
            "a relative path: nginx reads it from its prefix, moongate from the directory holding conf.d \
             (give --nginx-prefix to make such paths absolute)",
        );
        path.to_owned()
    }

    /// A path nginx resolves against its conf directory (certificates).
    fn conf_path(&self, path: &str) -> String {
        if path.starts_with('/') {
            return path.to_owned();
        }
        self.opts.conf_dir.join(path).display().to_string()
    }
}

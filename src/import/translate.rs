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
mod location;
mod lua;
mod program;
mod scope;
mod server;
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
    /// The first location's cache settings per zone: (valid, key, lock, methods).
    cache_settings: HashMap<String, zones::CacheSettings>,
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
        let why = match known_why(&d.name) {
            Some((severity, why)) => {
                self.note_d(d, severity, why);
                return;
            }
            None => format!("moongate import does not know `{}` in {context}", d.name),
        };
        self.note_d(d, Severity::NotTranslated, why);
    }

    fn main(&mut self, tree: &[Directive]) {
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

/// Why a directive moongate does not take is left out, for the ones
/// whose reason is known.
fn known_why(name: &str) -> Option<(Severity, &'static str)> {
    use Severity::{NotTranslated, Unneeded};
    Some(match name {
        "sendfile" | "tcp_nopush" | "tcp_nodelay" | "aio" | "directio" | "output_buffers"
        | "postpone_output" | "sendfile_max_chunk" => (
            Unneeded,
            "moongate writes responses its own way; there is nothing to tune",
        ),
        "types_hash_max_size"
        | "types_hash_bucket_size"
        | "server_names_hash_bucket_size"
        | "server_names_hash_max_size"
        | "variables_hash_max_size"
        | "variables_hash_bucket_size"
        | "proxy_headers_hash_max_size"
        | "proxy_headers_hash_bucket_size"
        | "map_hash_bucket_size" => (Unneeded, "moongate has no such hash tables to size"),
        "types" => (
            Unneeded,
            "moongate gives static files their Content-Type by file extension itself",
        ),
        "proxy_http_version" => (
            Unneeded,
            "moongate speaks HTTP/1.1 with keep-alive to upstreams",
        ),
        "proxy_buffering"
        | "proxy_buffers"
        | "proxy_buffer_size"
        | "proxy_busy_buffers_size"
        | "proxy_max_temp_file_size"
        | "proxy_temp_file_write_size"
        | "proxy_request_buffering"
        | "client_body_buffer_size"
        | "client_header_buffer_size"
        | "large_client_header_buffers" => {
            (Unneeded, "moongate streams bodies without nginx's buffers")
        }
        "client_body_temp_path"
        | "proxy_temp_path"
        | "fastcgi_temp_path"
        | "uwsgi_temp_path"
        | "scgi_temp_path" => (
            Unneeded,
            "moongate keeps no temp directories of nginx's kind",
        ),
        "ssl_protocols"
        | "ssl_ciphers"
        | "ssl_prefer_server_ciphers"
        | "ssl_ecdh_curve"
        | "ssl_session_cache"
        | "ssl_session_timeout"
        | "ssl_session_tickets"
        | "ssl_dhparam"
        | "ssl_buffer_size"
        | "ssl_conf_command" => (
            Unneeded,
            "TLS is rustls: TLS 1.2 and 1.3 with its own safe cipher suites and session resumption",
        ),
        "ssl_stapling"
        | "ssl_stapling_verify"
        | "ssl_trusted_certificate"
        | "ssl_client_certificate"
        | "ssl_verify_client"
        | "ssl_verify_depth"
        | "ssl_crl"
        | "ssl_early_data"
        | "ssl_password_file" => (
            NotTranslated,
            "moongate's TLS listeners have no such setting (no OCSP stapling, client certificates or 0-RTT)",
        ),
        "error_log" => (Unneeded, "moongate logs to stderr; RUST_LOG sets the level"),
        "user"
        | "daemon"
        | "master_process"
        | "worker_rlimit_nofile"
        | "worker_cpu_affinity"
        | "worker_priority"
        | "pcre_jit"
        | "timer_resolution"
        | "lock_file"
        | "thread_pool"
        | "working_directory"
        | "worker_rlimit_core"
        | "env"
        | "ssl_engine"
        | "accept_mutex"
        | "multi_accept"
        | "worker_connections"
        | "use" => (
            Unneeded,
            "process settings: moongate runs as one process, in the foreground, as its caller",
        ),
        "resolver" | "resolver_timeout" => (
            Unneeded,
            "moongate resolves upstream host names with the system resolver when the configuration loads",
        ),
        "keepalive_requests" | "keepalive_time" => (
            Unneeded,
            "moongate does not cap the requests or the time of a connection",
        ),
        "open_file_cache"
        | "open_file_cache_valid"
        | "open_file_cache_min_uses"
        | "open_file_cache_errors"
        | "log_not_found"
        | "log_subrequest"
        | "reset_timedout_connection"
        | "lingering_close"
        | "lingering_time"
        | "lingering_timeout"
        | "server_name_in_redirect"
        | "port_in_redirect"
        | "absolute_redirect"
        | "msie_padding"
        | "msie_refresh"
        | "etag"
        | "if_modified_since" => (
            Unneeded,
            "moongate has fixed behaviour here (nginx's defaults)",
        ),
        "gzip_vary" => (
            Unneeded,
            "moongate always sends Vary: Accept-Encoding with compressible responses",
        ),
        "gzip_http_version" | "gzip_buffers" | "gzip_proxied" | "gzip_disable" => (
            Unneeded,
            "moongate compresses for any client that accepts gzip, proxied or not",
        ),
        "gzip_static" => (
            Unneeded,
            "static routes serve precompressed .gz and .br siblings by themselves",
        ),
        "lua_code_cache"
        | "lua_load_resty_core"
        | "lua_regex_cache_max_entries"
        | "lua_regex_match_limit"
        | "lua_max_pending_timers"
        | "lua_max_running_timers"
        | "lua_socket_pool_size"
        | "lua_socket_log_errors"
        | "lua_check_client_abort"
        | "lua_ssl_verify_depth"
        | "lua_malloc_trim"
        | "lua_sa_restart"
        | "lua_use_default_type"
        | "lua_http10_buffering"
        | "lua_thread_cache_max_entries"
        | "lua_socket_connect_timeout"
        | "lua_socket_send_timeout"
        | "lua_socket_read_timeout"
        | "lua_socket_buffer_size"
        | "lua_socket_keepalive_timeout"
        | "lua_need_request_body"
        | "lua_transform_underscores_in_response_headers"
        | "lua_capture_error_log" => (
            Unneeded,
            "moongate's Lua runtime fixes this itself (scripts are compiled at load and on change; see docs/lua-api.md)",
        ),
        "if" => (
            NotTranslated,
            "moongate has no `if`; write the condition in a Lua rewrite or access handler",
        ),
        "set" => (
            NotTranslated,
            "moongate has no `set` outside Lua; set ngx.var.NAME in a Lua handler",
        ),
        "try_files" => (
            NotTranslated,
            "moongate has no try_files; a static route serves the file, the directory's index.html, or 404",
        ),
        "error_page" | "proxy_intercept_errors" | "recursive_error_pages" => (
            NotTranslated,
            "moongate has no error_page: its own errors are JSON or HTML (error_format); a header_filter can replace others",
        ),
        "proxy_redirect" => (
            NotTranslated,
            "moongate does not rewrite the upstream's Location headers",
        ),
        "proxy_pass_header"
        | "proxy_ignore_headers"
        | "proxy_pass_request_headers"
        | "proxy_pass_request_body"
        | "proxy_set_body"
        | "proxy_method"
        | "proxy_bind"
        | "proxy_ignore_client_abort"
        | "proxy_cookie_domain"
        | "proxy_cookie_path"
        | "proxy_ssl_server_name"
        | "proxy_ssl_name"
        | "proxy_ssl_certificate"
        | "proxy_ssl_certificate_key"
        | "proxy_ssl_trusted_certificate"
        | "proxy_ssl_protocols" => (NotTranslated, "moongate's proxy has no such setting"),
        "proxy_cache_use_stale"
        | "proxy_cache_bypass"
        | "proxy_no_cache"
        | "proxy_cache_min_uses"
        | "proxy_cache_revalidate"
        | "proxy_cache_background_update"
        | "proxy_cache_lock_timeout"
        | "proxy_cache_lock_age"
        | "proxy_cache_convert_head"
        | "proxy_cache_purge" => (
            NotTranslated,
            "set the cache zone's stale_while_revalidate / stale_if_error / lock_timeout, or steer it from Lua (mg.cache)",
        ),
        "autoindex" | "autoindex_exact_size" | "autoindex_format" | "autoindex_localtime" => {
            (NotTranslated, "moongate does not list directories")
        }
        "stub_status" => (
            NotTranslated,
            "moongate's status is on the admin listener: GET /status and /metrics",
        ),
        "fastcgi_pass" | "uwsgi_pass" | "grpc_pass" | "scgi_pass" | "memcached_pass" => (
            NotTranslated,
            "write the upstream with protocol = \"fastcgi\", \"uwsgi\" or \"grpc\" by hand (see README)",
        ),
        "sub_filter" | "sub_filter_once" | "sub_filter_types" | "ssi" | "addition_types"
        | "charset" | "source_charset" | "charset_types" | "image_filter" | "xslt_stylesheet" => (
            NotTranslated,
            "moongate has no response body filters of this kind; a Lua body_filter can do it",
        ),
        "limit_rate" | "limit_rate_after" => (
            NotTranslated,
            "moongate does not throttle response bandwidth",
        ),
        "satisfy" | "auth_basic" | "auth_basic_user_file" => (
            NotTranslated,
            "use the basic_auth policy with [consumer.NAME] basic = { password_hash } (see docs/policies.md)",
        ),
        "internal" => (NotTranslated, "moongate has no internal-only routes"),
        "server_tokens" => (
            NotTranslated,
            "server_tokens is global in moongate ([server]); set it in the http block",
        ),
        "chunked_transfer_encoding" | "max_ranges" | "merge_slashes" | "ignore_invalid_headers" => {
            (Unneeded, "moongate has fixed behaviour here")
        }
        "ssl" | "http2" | "listen" | "server_name" => (NotTranslated, "not valid here"),
        _ => return None,
    })
}

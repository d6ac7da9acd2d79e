//! The validated configuration: what the server compiles into a snapshot.
//!
//! Every value here has been checked: addresses parsed, regexes compiled, names resolved,
//! defaults filled in, relative paths resolved against the prefix (so every path here is
//! absolute), and the files named found. Places are kept where a later stage may still
//! have to report a problem (binding a listener, loading a certificate) or show where a
//! route came from.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::error::Place;

/// The whole validated conf.d.
#[derive(Debug, Clone)]
pub struct Config {
    /// `[server]`: listeners and connection limits.
    pub server: Server,
    /// `[[server.tls]]` listeners, in file order.
    pub tls: Vec<TlsListener>,
    /// `[admin]`, if configured.
    pub admin: Option<Admin>,
    /// `[upstream.NAME]` by name; a reload keeps a pool whose `Upstream` compares equal.
    pub upstreams: BTreeMap<String, Upstream>,
    /// `[[route]]` in file-name then file order, which is the order they are tried in.
    pub routes: Vec<Route>,
    /// `[lua]`, with defaults when absent.
    pub lua: LuaSettings,
    /// `[limit.NAME]` by name.
    pub limits: BTreeMap<String, LimitZone>,
    /// `[redis]`, if configured.
    pub redis: Option<RedisSettings>,
    /// `[tracing]`, if configured.
    pub tracing: Option<TracingSettings>,
    /// `[cache.NAME]` by name.
    pub caches: BTreeMap<String, CacheZone>,
    /// `[consumer.NAME]` and the `[consumers]` file's, indexed by credential.
    pub consumers: std::sync::Arc<crate::auth::consumer::Consumers>,
    /// The `[consumers]` file, if any (re-read by every reload, and watched).
    pub consumers_file: Option<PathBuf>,
    /// The files read, in merge order (for `check` output and the status page).
    pub files: Vec<PathBuf>,
    /// The directory relative paths were resolved against: the one holding conf.d (the
    /// working directory for configuration given as a string).
    pub prefix: PathBuf,
}

/// `[server]`, with nginx-like defaults for whatever is not set.
#[derive(Debug, Clone)]
pub struct Server {
    /// Plain HTTP/1.1 (+ h2c prior knowledge) listeners.
    pub listen: Vec<Listen>,
    /// Tokio worker threads; `None` = one per core.
    pub workers: Option<usize>,
    /// Whether `Server:` and error pages carry the version.
    pub server_tokens: bool,
    /// The body format of moongate's own error answers.
    pub error_format: ErrorFormat,
    /// Time allowed to receive the request head (408 after).
    pub client_header_timeout: Duration,
    /// Time allowed between two reads of the request body.
    pub client_body_timeout: Duration,
    /// How long an idle keep-alive connection is kept open.
    pub keepalive_timeout: Duration,
    /// Time allowed between two writes to the client.
    pub send_timeout: Duration,
    /// Largest request head in bytes (431 above): the request line and
    /// every header line, each counted with its CRLF.
    pub max_header_size: usize,
    /// Most header lines in a request head (431 above).
    pub max_header_count: usize,
    /// Whether header names with underscores are passed on; by default
    /// they are dropped (nginx's `underscores_in_headers off`), since a
    /// WSGI/CGI app cannot tell `X_Forwarded_For` from `X-Forwarded-For`.
    pub underscores_in_headers: bool,
    /// Largest request body in bytes (413 above); `u64::MAX` = unlimited.
    pub client_max_body_size: u64,
    /// How long a graceful stop waits for in-flight requests.
    pub shutdown_timeout: Duration,
    /// Peers whose `X-Forwarded-For` is believed for the real client address.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Where access-log lines go.
    pub access_log: AccessLog,
    /// The access log's fields, in the order written (every field by
    /// default).
    pub access_log_fields: Vec<crate::access_log::Field>,
    /// Where to write the pid, so `moongate reload` can signal us (absolute).
    pub pid_file: Option<PathBuf>,
}

/// One listen address and where it was written (bind errors are reported there).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listen {
    /// The socket address to bind; port 0 asks the OS for a free port.
    pub addr: SocketAddr,
    /// Where in conf.d it came from.
    pub place: Place,
}

/// `[server] error_format`: how moongate's own error answers (404, 502,
/// a Lua `ngx.exit(403)` with nothing printed …) are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ErrorFormat {
    /// JSON, or a short HTML page when the request's `Accept` prefers
    /// `text/html` (a browser).
    #[default]
    Auto,
    /// Always JSON `{"error": ..., "status": N}`.
    Json,
    /// Always the HTML page, as nginx answers whatever the client accepts.
    Html,
}

/// Where access-log lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessLog {
    /// No access log.
    Off,
    /// JSON lines on standard output.
    Stdout,
    /// JSON lines appended to this file (absolute).
    File(PathBuf),
}

/// One `[[server.tls]]` listener.
#[derive(Debug, Clone)]
pub struct TlsListener {
    /// Where to bind.
    pub listen: Listen,
    /// Certificates offered; SNI picks among them (the first is the fallback).
    pub certs: Vec<CertPair>,
    /// ALPN protocols offered, in preference order.
    pub alpn: Vec<String>,
}

/// A certificate chain and its key, with the place to report load errors at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertPair {
    /// PEM certificate chain (absolute; found readable by validation).
    pub cert: PathBuf,
    /// PEM private key (absolute; found readable by validation).
    pub key: PathBuf,
    /// Where the `{ cert, key }` entry is.
    pub place: Place,
}

/// `[admin]`: status page, metrics, reload and purge.
#[derive(Debug, Clone)]
pub struct Admin {
    /// Where to bind.
    pub listen: Listen,
    /// Bearer token required on every admin request; `None` only on loopback.
    pub token: Option<String>,
    /// `metrics = false` turns the counting for `GET /metrics` off (the
    /// request path then skips it; `/metrics` answers 404): to measure
    /// what it costs, or to save it where nothing scrapes.
    pub metrics: bool,
}

/// One `[upstream.NAME]`.
///
/// `PartialEq` decides whether a reload may keep the pool, health marks and counters, so it
/// ignores [`Upstream::place`]: moving a definition to another line or file changes nothing.
#[derive(Debug, Clone)]
pub struct Upstream {
    /// The NAME in `[upstream.NAME]`.
    pub name: String,
    /// Where the definition starts, for errors found while building the pool.
    pub place: Place,
    /// How a peer is picked.
    pub balance: Balance,
    /// The `$var` template hashed when `balance` is [`Balance::Hash`].
    pub key: Option<String>,
    /// Idle pooled connections per peer in the whole process (one pool
    /// shared by every worker thread); 0 = no pooling.
    pub keepalive: usize,
    /// How long a pooled connection may stay idle.
    pub keepalive_timeout: Duration,
    /// Time allowed to connect to a peer (then the next peer is tried).
    pub connect_timeout: Duration,
    /// Time allowed between two reads from a peer (504 after).
    pub read_timeout: Duration,
    /// Time allowed between two writes to a peer.
    pub send_timeout: Duration,
    /// How many times an idempotent request without a body may go on to
    /// another peer after the peer failed before any response byte (reset,
    /// closed, send/read timeout); default 1, 0 = never. Connect failures
    /// move any request on regardless (nothing was sent).
    pub retries: u32,
    /// Peer answers that also count as a failure and move such a request
    /// on, within `retries` (nginx's `proxy_next_upstream http_502 …`);
    /// empty by default: an app's own 502/504 reaches the client.
    pub retry_statuses: Vec<u16>,
    /// The peers, in file order; at least one is neither backup nor down.
    /// Empty when `workers` supplies the peers.
    pub servers: Vec<ServerPeer>,
    /// `[upstream.NAME.workers]`: app processes moongate runs and whose
    /// sockets are this upstream's peers.
    pub workers: Option<Workers>,
    /// `lua.balancer`: a Lua handler run before every try, which may choose
    /// the peer (`ngx.balancer`). Not part of the pool's identity: a changed
    /// script keeps the pool (the script runs from the Lua program).
    pub balancer: Option<Script>,
    /// The protocol spoken to the peers.
    pub protocol: Protocol,
    /// `params`: CGI variables added to (or overriding) those built from the
    /// request, nginx's `uwsgi_param`; values are `$var` templates (checked).
    /// Only with a CGI-style protocol.
    pub params: BTreeMap<String, String>,
    /// `h2_connections`: HTTP/2 connections per peer per worker thread
    /// (`h2` and `grpc` only; default 1). Another is opened only while every
    /// open one has as many streams as the peer's
    /// `SETTINGS_MAX_CONCURRENT_STREAMS`; past the bound, streams queue on
    /// the least busy connection.
    pub h2_connections: usize,
    /// `tls = {...}`, or peers written `https://host:port`: TLS to every
    /// peer (ALPN `h2` for `h2`/`grpc`, `http/1.1` otherwise).
    pub tls: Option<UpstreamTls>,
    /// `root` (fastcgi only; absolute): the scripts' directory on the
    /// FastCGI server, nginx's `root` with `fastcgi_param SCRIPT_FILENAME
    /// $document_root$fastcgi_script_name`. Without it `params` gives
    /// `SCRIPT_FILENAME`.
    pub root: Option<PathBuf>,
    /// `health = {...}`: active checks of every peer by one prober per
    /// process (`upstream::health`); `None` = passive health only.
    pub health: Option<Health>,
}

/// `health = {...}` of an upstream: how often and how each peer is checked,
/// and how many checks in a row take it out or bring it back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    /// Time from the start of one round of checks to the next.
    pub interval: Duration,
    /// A check that has not succeeded within this time fails (a slow peer
    /// counts as failing).
    pub timeout: Duration,
    /// Failed checks in a row that take a peer out.
    pub fails: u32,
    /// Passed checks in a row that bring a peer back.
    pub passes: u32,
    /// What a check asks; `None` for `type = "tcp"` (a connect only).
    pub request: Option<HealthRequest>,
}

/// The request of a check (or of a managed worker's readiness probe): a
/// `GET path` in the upstream's protocol whose status must match `expect`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthRequest {
    /// Path and query asked (for FastCGI: the script under `root`).
    pub path: String,
    /// The `Host` (`:authority` over HTTP/2, `HTTP_HOST` and `SERVER_NAME`
    /// over uwsgi and FastCGI); "localhost" when `None`.
    pub host: Option<String>,
    /// Extra request headers (checked names, lowercase, and values).
    pub headers: Vec<(String, String)>,
    /// The statuses that pass; never empty.
    pub expect: Vec<StatusMatch>,
}

impl HealthRequest {
    /// A plain `GET path` expecting 2xx (a managed worker's `ready`).
    pub fn get(path: &str) -> HealthRequest {
        HealthRequest {
            path: path.to_owned(),
            host: None,
            headers: Vec::new(),
            expect: vec![StatusMatch::Class(2)],
        }
    }

    /// Whether `status` passes.
    pub fn accepts(&self, status: u16) -> bool {
        self.expect.iter().any(|m| m.matches(status))
    }
}

/// One entry of `expect`: a class (`"2xx"`) or an exact status (`301`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusMatch {
    /// Every status of the class: 2 for "2xx".
    Class(u8),
    /// Exactly this status.
    Code(u16),
}

impl StatusMatch {
    /// Whether `status` is matched.
    pub fn matches(self, status: u16) -> bool {
        match self {
            StatusMatch::Class(c) => status / 100 == u16::from(c),
            StatusMatch::Code(code) => status == code,
        }
    }
}

/// TLS to an upstream's peers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamTls {
    /// Trusted certificates (PEM); the system's CA bundle when `None`.
    pub ca: Option<PathBuf>,
    /// SNI and the name the certificate must be valid for; without it, a
    /// host name written in `https://host:port`, else the peer's IP.
    pub server_name: Option<String>,
    /// Whether the certificate is checked at all (default true).
    pub verify: bool,
}

/// The protocol an upstream's peers speak (SPEC §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Protocol {
    /// HTTP/1.1, pooled keep-alive connections.
    #[default]
    Http1,
    /// uWSGI's binary protocol (nginx's `uwsgi_pass`): CGI variables, the
    /// body, an HTTP/1.x response; one connection per request.
    Uwsgi,
    /// HTTP/2 with prior knowledge (h2c): streams multiplexed on a few
    /// connections per peer, trailers carried both ways.
    H2,
    /// gRPC: HTTP/2 as [`Protocol::H2`], plus gRPC's rules (`te: trailers`
    /// sent, `grpc-timeout` honoured, moongate's own errors answered as a
    /// gRPC status).
    Grpc,
    /// FastCGI (nginx's `fastcgi_pass`, PHP-FPM): CGI variables as PARAMS,
    /// the body as STDIN, a CGI response on STDOUT; pooled connections
    /// (`FCGI_KEEP_CONN`).
    Fastcgi,
}

impl Protocol {
    /// The name written in conf.d.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Http1 => "http1",
            Protocol::Uwsgi => "uwsgi",
            Protocol::H2 => "h2",
            Protocol::Grpc => "grpc",
            Protocol::Fastcgi => "fastcgi",
        }
    }

    /// Whether requests go as CGI variables (uwsgi, fastcgi) rather than
    /// HTTP.
    pub fn is_cgi(self) -> bool {
        matches!(self, Protocol::Uwsgi | Protocol::Fastcgi)
    }

    /// Whether the peers speak HTTP/2 (`h2` and `grpc`).
    pub fn is_h2(self) -> bool {
        matches!(self, Protocol::H2 | Protocol::Grpc)
    }
}

/// `[upstream.NAME.workers]`: a pool of app processes moongate spawns,
/// supervises, recycles and rolls (gunicorn's master, supervisor-style).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workers {
    /// argv; `{socket}` becomes a unix socket path moongate owns, `{port}`
    /// a free loopback port (the worker is reached where it was told to listen).
    pub command: Vec<String>,
    /// How many processes run ("auto" resolved to 2 × cores + 1).
    pub count: usize,
    /// Working directory (absolute; by default the prefix, so a command naming
    /// `examples/todo/app.py` finds it wherever moongate was started).
    pub dir: PathBuf,
    /// Extra environment variables (added to moongate's own environment).
    pub env: BTreeMap<String, String>,
    /// A path that must answer 2xx before a worker takes traffic; without
    /// it a worker is ready once its socket accepts.
    pub ready: Option<String>,
    /// How long a new worker may take to become ready before it is killed
    /// and started again.
    pub start_timeout: Duration,
    /// Requests after which a worker is drained and replaced; 0 = never.
    pub max_requests: u64,
    /// Resident memory in bytes past which a worker is drained and replaced.
    pub max_rss: Option<u64>,
    /// The first delay before restarting a worker that failed; doubled on
    /// each failure in a row.
    pub backoff_min: Duration,
    /// The largest delay before restarting a failed worker.
    pub backoff_max: Duration,
    /// Time between SIGTERM and SIGKILL when a worker is stopped.
    pub stop_timeout: Duration,
    /// The upstream's protocol: what the workers listen for on `{socket}`,
    /// and what the `ready` probe speaks.
    pub protocol: Protocol,
    /// The upstream's `root` (fastcgi): the `ready` probe asks for the
    /// script `root` + `ready`.
    pub root: Option<PathBuf>,
}

impl Workers {
    /// Whether `other` runs the same processes, so that only the number of
    /// workers may differ (a count change adds or removes workers instead
    /// of rolling the pool).
    pub fn same_processes(&self, other: &Workers) -> bool {
        Workers {
            count: other.count,
            ..self.clone()
        } == *other
    }
}

impl PartialEq for Upstream {
    fn eq(&self, other: &Self) -> bool {
        // Destructured so a new field cannot be forgotten here.
        let Upstream {
            name,
            place: _,
            balance,
            key,
            keepalive,
            keepalive_timeout,
            connect_timeout,
            read_timeout,
            send_timeout,
            retries,
            retry_statuses,
            servers,
            workers,
            balancer: _,
            protocol,
            params,
            h2_connections,
            tls,
            root,
            health,
        } = self;
        *name == other.name
            && *balance == other.balance
            && *key == other.key
            && *keepalive == other.keepalive
            && *keepalive_timeout == other.keepalive_timeout
            && *connect_timeout == other.connect_timeout
            && *read_timeout == other.read_timeout
            && *send_timeout == other.send_timeout
            && *retries == other.retries
            && *retry_statuses == other.retry_statuses
            && *servers == other.servers
            && *workers == other.workers
            && *protocol == other.protocol
            && *params == other.params
            && *h2_connections == other.h2_connections
            && *tls == other.tls
            && *root == other.root
            && *health == other.health
    }
}

/// Balancing method of an upstream (the balancer's own type).
pub use crate::upstream::balance::Balance;

/// One peer of an upstream.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerPeer {
    /// Where to connect.
    pub addr: PeerAddr,
    /// Relative share of traffic, ≥ 1.
    pub weight: u32,
    /// Failures within `fail_timeout` that take the peer out; 0 = never.
    pub max_fails: u32,
    /// Window for counting failures, and how long a failed peer rests.
    pub fail_timeout: Duration,
    /// Only used when every non-backup peer is unavailable.
    pub backup: bool,
    /// Configured out: listed but sent nothing.
    pub down: bool,
}

/// A peer's address: TCP (host names resolved at load) or a Unix socket.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PeerAddr {
    /// `ip:port`, or the first address `host:port` resolved to.
    Tcp(SocketAddr),
    /// `unix:/path` (a relative path is resolved against the prefix).
    Unix(PathBuf),
}

impl fmt::Display for PeerAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PeerAddr::Tcp(addr) => write!(f, "{addr}"),
            PeerAddr::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

/// `[lua]`: settings shared by every Lua VM.
#[derive(Debug, Clone, PartialEq)]
pub struct LuaSettings {
    /// `require` search path (`;`-separated templates with `?`), relative
    /// templates resolved against the prefix.
    pub package_path: String,
    /// Run once in every VM when it is created (and on reload).
    pub init: Option<Script>,
    /// Run once per worker VM after `init` (`init_worker`: may start timers).
    pub init_worker: Option<Script>,
    /// A phase handler running longer than this (CPU, one slice between
    /// yields) is stopped with a 500.
    pub time_budget: Duration,
    /// Without `os.execute`, `io.popen`, writing files, `loadfile`/`dofile`
    /// outside `package_path`.
    pub sandbox: bool,
    /// LuaJIT's `ffi` is offered.
    pub ffi: bool,
    /// `[lua.shared_dict]`: name, size in bytes, place.
    pub shared_dicts: Vec<SharedDictDef>,
    /// The directory holding conf.d (what `ngx.config.prefix()` returns).
    pub prefix: PathBuf,
    /// `ssl_trusted_certificate`: the PEM file of CAs `sslhandshake` trusts
    /// when verifying (else the system's CA bundle).
    pub ssl_trusted_certificate: Option<PathBuf>,
}

/// One `[lua.shared_dict]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedDictDef {
    /// `ngx.shared.NAME`.
    pub name: String,
    /// Capacity in bytes.
    pub size: usize,
}

/// A Lua script: a file, or code written inline in conf.d.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Script {
    /// Where the code is.
    pub source: ScriptSource,
    /// The conf.d value that names it (errors in inline code count lines
    /// from here).
    pub place: Place,
}

/// Where a script's code is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScriptSource {
    /// A file path (absolute; found readable by validation).
    File(PathBuf),
    /// The code itself.
    Inline(String),
}

/// One bundled policy on a route (`lua/policies/NAME.lua`).
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    /// The policy (`use = "NAME"`).
    pub name: String,
    /// Its options, as written, but for file options (`*_file`), made absolute.
    pub options: toml::Table,
    /// Where it is configured.
    pub place: Place,
}

/// The Lua handlers of one route, by phase.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RouteLua {
    /// Bundled policies, run before the route's own handlers.
    pub policies: Vec<Policy>,
    /// Runs first: may change the URI, headers, method.
    pub rewrite: Option<Script>,
    /// Runs next: may refuse the request.
    pub access: Option<Script>,
    /// Answers the request (no upstream).
    pub content: Option<Script>,
    /// Sees and may change the response status and headers.
    pub header_filter: Option<Script>,
    /// Sees and may change the response body, chunk by chunk.
    pub body_filter: Option<Script>,
    /// Runs after the response was sent.
    pub log: Option<Script>,
}

impl RouteLua {
    /// True when no phase has a handler.
    pub fn is_empty(&self) -> bool {
        self.policies.is_empty()
            && self.rewrite.is_none()
            && self.access.is_none()
            && self.content.is_none()
            && self.header_filter.is_none()
            && self.body_filter.is_none()
            && self.log.is_none()
    }
}

/// One `[[route]]`.
#[derive(Debug, Clone)]
pub struct Route {
    /// Where the `[[route]]` table starts.
    pub place: Place,
    /// What names the route in the access log, metrics and the status
    /// page: its `name`, else `file:line` of its table; unique in conf.d.
    pub name: String,
    /// Where the name was given (the table's place for a default name).
    pub name_place: Place,
    /// Host patterns, lowercased: `"*"`, `"*.suffix"` or an exact name.
    pub hosts: Vec<String>,
    /// How the path is matched.
    pub path: PathMatch,
    /// Allowed methods; `None` = any.
    pub methods: Option<Vec<http::Method>>,
    /// Where matching requests go.
    pub target: RouteTarget,
    /// Path rewrite applied before the target sees the request.
    pub rewrite: Option<Rewrite>,
    /// Cache lifetime sent for static files (`root` routes only).
    pub expires: Option<Duration>,
    /// Lua handlers by phase.
    pub lua: RouteLua,
    /// Rate-limit zones checked after the Lua access phase, in order
    /// (names known to exist in [`Config::limits`]).
    pub limits: Vec<String>,
    /// The proxy cache zone for upstream responses (a name known to exist
    /// in [`Config::caches`]).
    pub cache: Option<String>,
    /// Protocols (lowercase `Upgrade` tokens without version) a client may
    /// switch to through this route; any other `Upgrade` is not forwarded.
    /// Never `h2c`.
    pub upgrade: Vec<String>,
    /// Response compression (the route's `compress` keys over
    /// `[server]`'s); `None` when off.
    pub compress: Option<std::sync::Arc<crate::compress::Settings>>,
}

/// `[cache.NAME]`: a two-level proxy cache zone.
#[derive(Debug, Clone)]
pub struct CacheZone {
    /// The zone's name (`cache = "NAME"`).
    pub name: String,
    /// L1 bound in bytes (keys, headers and bodies weighed).
    pub memory: u64,
    /// The L2 tier on disk, if any.
    pub disk: Option<CacheDisk>,
    /// `$var` template naming an entry (before the Vary variant).
    pub key: String,
    /// Freshness of a storable response that states none.
    pub default_ttl: Duration,
    /// Default stale-while-revalidate window.
    pub stale_while_revalidate: Duration,
    /// Default stale-if-error window.
    pub stale_if_error: Duration,
    /// Largest body stored, in bytes; larger responses pass through.
    pub max_object_size: u64,
    /// Methods looked up (GET and HEAD at most; only GET responses are stored).
    pub methods: Vec<http::Method>,
    /// One origin request per key at a time (see `cache::lock`).
    pub lock: bool,
    /// How long a request waits for the lock before going to the origin.
    pub lock_timeout: Duration,
    /// Targeted cache-control fields (RFC 9213) obeyed instead of
    /// Cache-Control, most specific first; lowercased, no duplicates.
    pub targeted: Vec<http::HeaderName>,
    /// Send the targeted fields on to clients; off, they are removed
    /// from every response of a cached route (they are meant for us).
    pub forward_targeted: bool,
    /// Where the `[cache.NAME]` table is.
    pub place: Place,
}

impl CacheZone {
    /// True when `other` defines the same zone (wherever it is written): a
    /// reload then keeps the zone's tiers and their contents.
    pub fn same_definition(&self, other: &CacheZone) -> bool {
        let CacheZone { place: _, .. } = self;
        self.name == other.name
            && self.memory == other.memory
            && self.disk == other.disk
            && self.key == other.key
            && self.default_ttl == other.default_ttl
            && self.stale_while_revalidate == other.stale_while_revalidate
            && self.stale_if_error == other.stale_if_error
            && self.max_object_size == other.max_object_size
            && self.methods == other.methods
            && self.lock == other.lock
            && self.lock_timeout == other.lock_timeout
            && self.targeted == other.targeted
            && self.forward_targeted == other.forward_targeted
    }
}

/// `disk = { path, size }` of a cache zone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheDisk {
    /// The directory the L2 tier owns (absolute; created when missing).
    pub path: std::path::PathBuf,
    /// Bound on the bytes its files take.
    pub size: u64,
}

/// `[limit.NAME]`: a rate-limit zone.
#[derive(Debug, Clone)]
pub struct LimitZone {
    /// The zone's name (`limit = "NAME"`, `mg.limit.take("NAME", ...)`).
    pub name: String,
    /// Token bucket or concurrency counter.
    pub kind: LimitKind,
    /// `$var` template naming the bucket a request takes from.
    pub key: String,
    /// The status a denied request gets.
    pub status: u16,
    /// Whether responses carry `RateLimit-*` headers.
    pub headers: bool,
    /// Where the buckets live: this node, or the Redis every node shares.
    pub scope: LimitScope,
    /// Where the `[limit.NAME]` table is.
    pub place: Place,
}

impl LimitZone {
    /// True when `other` defines the same zone (wherever it is written):
    /// a reload then keeps the zone's buckets.
    pub fn same_definition(&self, other: &LimitZone) -> bool {
        self.name == other.name
            && self.kind == other.kind
            && self.key == other.key
            && self.status == other.status
            && self.headers == other.headers
            && self.scope == other.scope
    }
}

/// `scope` of a `[limit.NAME]` zone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LimitScope {
    /// Buckets in this process (the default).
    Local,
    /// One bucket per key in Redis, shared by every node pointed at it
    /// (rate zones only).
    Redis {
        /// The `[redis]` table the zone uses (part of its definition: a
        /// reload that changes it starts the zone afresh).
        redis: RedisSettings,
        /// What a take does when Redis fails or is slow.
        on_error: OnRedisError,
    },
}

/// `on_redis_error`: what a redis-scope take does when Redis does not answer
/// in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnRedisError {
    /// Take from the zone's local bucket (same rate and burst) instead.
    Local,
    /// Allow the request.
    Allow,
    /// Deny the request with the zone's status.
    Deny,
}

impl OnRedisError {
    /// The conf.d spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            OnRedisError::Local => "local",
            OnRedisError::Allow => "allow",
            OnRedisError::Deny => "deny",
        }
    }
}

/// `[tracing]`: W3C trace context for every request, and span export
/// when `otlp_endpoint` is set.
#[derive(Debug, Clone, PartialEq)]
pub struct TracingSettings {
    /// The collector's OTLP/HTTP traces URL (`http://...`); `None`:
    /// propagation only, nothing exported.
    pub otlp_endpoint: Option<String>,
    /// `service.name` of the exported spans (default "moongate").
    pub service_name: String,
    /// Share of new traces (no incoming `traceparent`) sampled, 0 to 1
    /// (default 1); a continued trace follows the caller's flag.
    pub sample_ratio: f64,
    /// Requests whose spans may wait for export; more are dropped.
    pub queue_size: usize,
    /// Spans per export request, at most.
    pub batch_size: usize,
    /// Time allowed for one export request.
    pub export_timeout: Duration,
}

/// `[redis]`: the Redis that nodes share state through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisSettings {
    /// Where it is: one server or a Redis Cluster.
    pub target: RedisTarget,
    /// Time allowed for one call; past it the caller falls back.
    pub timeout: Duration,
    /// `ca`: the certificates trusted for `rediss://` URLs; `None`: the
    /// system's roots. Part of the settings' identity, so a reload after
    /// the file changed connects afresh.
    pub ca: Option<RedisCa>,
}

/// `ca` of `[redis]`: a PEM file of trusted certificates, read (and
/// checked to hold usable certificates) when conf.d is loaded. Two are the
/// same when their contents are (compared by SHA-256, so a per-take lookup
/// of a worker's connection hashes 32 bytes, not the file).
#[derive(Clone)]
pub struct RedisCa {
    /// The resolved path, for messages.
    pub path: PathBuf,
    /// The file's contents as read at load time: what the clients trust.
    pub pem: std::sync::Arc<[u8]>,
    /// SHA-256 of `pem`: the identity.
    pub digest: [u8; 32],
}

impl RedisCa {
    /// The trust file at `path` holding `pem`.
    pub fn new(path: PathBuf, pem: Vec<u8>) -> RedisCa {
        use sha2::Digest;
        let digest = sha2::Sha256::digest(&pem).into();
        RedisCa {
            path,
            pem: pem.into(),
            digest,
        }
    }
}

impl PartialEq for RedisCa {
    fn eq(&self, other: &Self) -> bool {
        self.digest == other.digest
    }
}

impl Eq for RedisCa {}

impl std::hash::Hash for RedisCa {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.digest.hash(state);
    }
}

impl std::fmt::Debug for RedisCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisCa")
            .field("path", &self.path)
            .field("pem_bytes", &self.pem.len())
            .finish_non_exhaustive()
    }
}

/// `url` or `cluster` of `[redis]`: exactly one is written.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RedisTarget {
    /// `url`: one server, `redis://host:port[/db]` as written (checked to
    /// parse).
    Server(String),
    /// `cluster`: seed nodes of a Redis Cluster, `redis://host:port` each,
    /// as written (checked to parse, in order). The client learns the
    /// other nodes and the slot map from any of them.
    Cluster(Vec<String>),
}

/// What a zone counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitKind {
    /// A token bucket per key: `burst` at once from a full bucket, refilled at `rate`.
    Rate {
        /// Refill rate.
        rate: crate::limit::Rate,
        /// Bucket size.
        burst: u32,
    },
    /// At most `max` requests in flight per key (`kind = "conn"`).
    Conn {
        /// Requests in flight allowed per key.
        max: u32,
    },
}

/// How a route matches the request path (the router's own type).
pub use crate::route::PathMatch;

/// Where a route sends requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteTarget {
    /// Proxy to the named upstream (known to exist in [`Config::upstreams`]).
    Upstream(String),
    /// Serve files from a directory.
    Static {
        /// The directory (absolute; found by validation).
        root: PathBuf,
    },
    /// Answered by the route's `lua.content` handler.
    Lua,
}

/// `rewrite = { from, to }` (the router's own type).
pub use crate::route::Rewrite;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_addr_display() {
        let tcp = PeerAddr::Tcp("127.0.0.1:8001".parse().unwrap());
        assert_eq!(tcp.to_string(), "127.0.0.1:8001");
        let v6 = PeerAddr::Tcp("[::1]:80".parse().unwrap());
        assert_eq!(v6.to_string(), "[::1]:80");
        let unix = PeerAddr::Unix("/run/todo.sock".into());
        assert_eq!(unix.to_string(), "unix:/run/todo.sock");
    }

    #[test]
    fn balance_names_round_trip_the_conf_spelling() {
        assert_eq!(Balance::LeastConn.as_str(), "least_conn");
        assert_eq!(Balance::Random2.as_str(), "random2");
    }
}

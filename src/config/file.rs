//! The conf.d file format: serde types that mirror one TOML file exactly.
//!
//! Every table denies unknown keys, so a typo is an error rather than a silent default.
//! Values that validation must point back at are kept as `Spanned`. Nothing here checks
//! meaning (addresses, regexes, cross-references); `validate` does, and turns these into
//! the model. Field order is the order error messages list the keys in.

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, SeqAccess, Unexpected, Visitor};
use toml::Spanned;

use super::units::{Dur, Size};

mod compress;
mod consumer;
pub use compress::RawCompress;
pub use consumer::{RawConsumer, RawConsumerBasic, RawConsumerJwt, RawConsumers};

/// One conf.d file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFile {
    /// `[server]` and `[[server.tls]]`.
    pub server: Option<Spanned<RawServer>>,
    /// `[admin]`.
    pub admin: Option<Spanned<RawAdmin>>,
    /// `[upstream.NAME]`, keyed by the spanned name so duplicates can point at it.
    #[serde(default)]
    pub upstream: BTreeMap<Spanned<String>, Spanned<RawUpstream>>,
    /// `[[route]]`, in file order.
    #[serde(default)]
    pub route: Vec<Spanned<RawRoute>>,
    /// `[lua]` and `[lua.shared_dict]`.
    pub lua: Option<Spanned<RawLua>>,
    /// `[limit.NAME]`: rate-limit zones, keyed by the spanned name.
    #[serde(default)]
    pub limit: BTreeMap<Spanned<String>, Spanned<RawLimit>>,
    /// `[redis]`: the Redis shared by every node (scope = "redis" zones).
    pub redis: Option<Spanned<RawRedis>>,
    /// `[cache.NAME]`: proxy cache zones, keyed by the spanned name.
    #[serde(default)]
    pub cache: BTreeMap<Spanned<String>, Spanned<RawCache>>,
    /// `[tracing]`: W3C trace context and OTLP span export.
    pub tracing: Option<Spanned<RawTracing>>,
    /// `[consumer.NAME]`: credentials and groups, keyed by the spanned name.
    #[serde(default)]
    pub consumer: BTreeMap<Spanned<String>, Spanned<RawConsumer>>,
    /// `[consumers]`: a file of more consumers.
    pub consumers: Option<Spanned<RawConsumers>>,
}

/// `[cache.NAME]`: a two-level proxy cache zone.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCache {
    /// L1 size in memory (required).
    pub memory: Option<Spanned<Size>>,
    /// L2 on disk: `{ path, size }`.
    pub disk: Option<Spanned<RawCacheDisk>>,
    /// `$var` template naming an entry, default `$scheme$host$request_uri`.
    pub key: Option<Spanned<String>>,
    /// Freshness of a storable response that states none (default 0s).
    pub default_ttl: Option<Spanned<Dur>>,
    /// Default stale-while-revalidate window (default 0s).
    pub stale_while_revalidate: Option<Spanned<Dur>>,
    /// Default stale-if-error window (default 0s).
    pub stale_if_error: Option<Spanned<Dur>>,
    /// Largest body stored (default 8MiB).
    pub max_object_size: Option<Spanned<Size>>,
    /// Methods looked up and stored (default GET, HEAD).
    pub methods: Option<Spanned<Vec<Spanned<String>>>>,
    /// One origin request per key at a time (see `cache::lock`).
    pub lock: Option<bool>,
    /// How long others wait for the lock before going to the origin.
    pub lock_timeout: Option<Spanned<Dur>>,
    /// Targeted cache-control fields obeyed instead of Cache-Control
    /// (RFC 9213), most specific first (default `["CDN-Cache-Control"]`).
    pub targeted: Option<Spanned<Vec<Spanned<String>>>>,
    /// Pass the targeted fields on to clients (default false: removed).
    pub forward_targeted: Option<bool>,
}

/// `disk = { path, size }` of a cache zone.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCacheDisk {
    /// The directory the L2 tier owns.
    pub path: Spanned<String>,
    /// Bound on the bytes its files take.
    pub size: Spanned<Size>,
}

/// `[tracing]`: W3C trace context propagation and OTLP/HTTP export.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTracing {
    /// The collector's OTLP/HTTP traces URL; absent: propagation only.
    pub otlp_endpoint: Option<Spanned<String>>,
    /// `service.name` of the exported spans.
    pub service_name: Option<Spanned<String>>,
    /// Share of new traces sampled, 0 to 1.
    pub sample_ratio: Option<Spanned<f64>>,
    /// Requests' spans waiting for export before more are dropped.
    pub queue_size: Option<Spanned<i64>>,
    /// Spans sent per export request, at most.
    pub batch_size: Option<Spanned<i64>>,
    /// Time allowed for one export request.
    pub export_timeout: Option<Spanned<Dur>>,
}

/// `[redis]`: where state shared by many moongate nodes lives.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRedis {
    /// One server: "redis://host:port[/db]" (or "rediss://", "redis+unix://").
    pub url: Option<Spanned<String>>,
    /// A Redis Cluster instead: seed nodes, "redis://host:port" (or
    /// "rediss://host:port") each.
    pub cluster: Option<Spanned<Vec<Spanned<String>>>>,
    /// Time allowed for one call before the caller falls back (default 50ms).
    pub timeout: Option<Spanned<Dur>>,
    /// PEM file of the certificates trusted for "rediss://" (default: the
    /// system's roots).
    pub ca: Option<Spanned<String>>,
}

/// `[limit.NAME]`: a token-bucket zone (`rate`, `burst`) or, with
/// `kind = "conn"`, a concurrency zone (`max`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimit {
    /// "rate" (default) or "conn".
    pub kind: Option<Spanned<String>>,
    /// Refill rate, "100/s" or "600/m" (rate zones).
    pub rate: Option<Spanned<String>>,
    /// Bucket size: how many at once from a full bucket (rate zones).
    pub burst: Option<Spanned<i64>>,
    /// Requests in flight per key (conn zones).
    pub max: Option<Spanned<i64>>,
    /// `$var` template naming the bucket, default `$remote_addr`.
    pub key: Option<Spanned<String>>,
    /// Status of a denied request, default 429.
    pub status: Option<Spanned<i64>>,
    /// "local" (default) or "redis".
    pub scope: Option<Spanned<String>>,
    /// Send `RateLimit-*` headers (default true).
    pub headers: Option<bool>,
    /// With scope = "redis": "local" (default), "allow" or "deny" when Redis fails.
    pub on_redis_error: Option<Spanned<String>>,
}

/// `[lua]`: settings for every Lua VM.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLua {
    /// Where `require` looks, `;`-separated `?` templates.
    pub package_path: Option<Spanned<String>>,
    /// A script run once in every VM when it is created.
    pub init: Option<Spanned<String>>,
    /// A script run once per worker VM, after `init` (may start timers).
    pub init_worker: Option<Spanned<String>>,
    /// `init_worker` as inline code.
    pub init_worker_inline: Option<Spanned<String>>,
    /// How long one phase handler may run before it is stopped.
    pub time_budget: Option<Spanned<Dur>>,
    /// Remove process and file-writing functions from scripts.
    pub sandbox: Option<bool>,
    /// Offer LuaJIT's `ffi` module.
    pub ffi: Option<bool>,
    /// PEM file of CAs cosockets' `sslhandshake` trusts.
    pub ssl_trusted_certificate: Option<Spanned<String>>,
    /// `[lua.shared_dict]`: name = size.
    #[serde(default)]
    pub shared_dict: BTreeMap<Spanned<String>, Spanned<Size>>,
}

/// `lua.PHASE` (a file) or `lua.PHASE_inline` (code) keys of a route.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRouteLua {
    /// Rewrite phase script file.
    pub rewrite: Option<Spanned<String>>,
    /// Rewrite phase code.
    pub rewrite_inline: Option<Spanned<String>>,
    /// Access phase script file.
    pub access: Option<Spanned<String>>,
    /// Access phase code.
    pub access_inline: Option<Spanned<String>>,
    /// Content phase script file (the route answers from Lua).
    pub content: Option<Spanned<String>>,
    /// Content phase code.
    pub content_inline: Option<Spanned<String>>,
    /// Header filter script file.
    pub header_filter: Option<Spanned<String>>,
    /// Header filter code.
    pub header_filter_inline: Option<Spanned<String>>,
    /// Body filter script file.
    pub body_filter: Option<Spanned<String>>,
    /// Body filter code.
    pub body_filter_inline: Option<Spanned<String>>,
    /// Log phase script file.
    pub log: Option<Spanned<String>>,
    /// Log phase code.
    pub log_inline: Option<Spanned<String>>,
}

/// `[server]`: every key optional, so a file may hold only `[[server.tls]]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    /// Plain-HTTP listen addresses, "ip:port".
    pub listen: Option<Spanned<Vec<Spanned<String>>>>,
    /// "auto" or a thread count.
    pub workers: Option<Workers>,
    /// Whether to send the version in `Server:` and error pages.
    pub server_tokens: Option<bool>,
    /// "auto", "json" or "html": the body of moongate's own error answers.
    pub error_format: Option<Spanned<String>>,
    /// Time allowed to receive request headers.
    pub client_header_timeout: Option<Dur>,
    /// Time allowed between body reads.
    pub client_body_timeout: Option<Dur>,
    /// How long an idle keep-alive connection is kept.
    pub keepalive_timeout: Option<Dur>,
    /// Time allowed between writes to the client.
    pub send_timeout: Option<Dur>,
    /// Largest request head accepted; bounded in validation.
    pub max_header_size: Option<Spanned<Size>>,
    /// Most header lines in a request head; bounded in validation.
    pub max_header_count: Option<Spanned<u64>>,
    /// Whether header names with underscores are kept (nginx's directive).
    pub underscores_in_headers: Option<bool>,
    /// Largest request body accepted; 0 = unlimited.
    pub client_max_body_size: Option<Size>,
    /// Grace period for in-flight requests on stop.
    pub shutdown_timeout: Option<Dur>,
    /// CIDRs or IPs whose X-Forwarded-For is believed.
    pub trusted_proxies: Option<Vec<Spanned<String>>>,
    /// "off", "stdout" or a path.
    pub access_log: Option<Spanned<String>>,
    /// The access log's fields, in the order written.
    pub access_log_fields: Option<Spanned<Vec<Spanned<String>>>>,
    /// Where to write the pid for `moongate reload`.
    pub pid_file: Option<Spanned<String>>,
    /// Response compression for every route that sets none of its own.
    pub compress: Option<Spanned<RawCompress>>,
    /// `[[server.tls]]`, appended across files.
    #[serde(default)]
    pub tls: Vec<Spanned<RawTls>>,
}

impl RawServer {
    /// Whether this file sets any `[server]` key other than `tls`: only one file may.
    pub fn sets_keys(&self) -> bool {
        let RawServer {
            listen,
            workers,
            server_tokens,
            error_format,
            client_header_timeout,
            client_body_timeout,
            keepalive_timeout,
            send_timeout,
            max_header_size,
            max_header_count,
            underscores_in_headers,
            client_max_body_size,
            shutdown_timeout,
            trusted_proxies,
            access_log,
            access_log_fields,
            pid_file,
            compress,
            tls: _,
        } = self;
        listen.is_some()
            || workers.is_some()
            || server_tokens.is_some()
            || error_format.is_some()
            || client_header_timeout.is_some()
            || client_body_timeout.is_some()
            || keepalive_timeout.is_some()
            || send_timeout.is_some()
            || max_header_size.is_some()
            || max_header_count.is_some()
            || underscores_in_headers.is_some()
            || client_max_body_size.is_some()
            || shutdown_timeout.is_some()
            || trusted_proxies.is_some()
            || access_log.is_some()
            || access_log_fields.is_some()
            || pid_file.is_some()
            || compress.is_some()
    }
}

/// `[[server.tls]]`: one TLS listener.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    /// "ip:port".
    pub listen: Spanned<String>,
    /// Certificate/key pairs; SNI picks among them.
    pub certs: Spanned<Vec<Spanned<RawCert>>>,
    /// ALPN protocols offered, in order.
    pub alpn: Option<Spanned<Vec<Spanned<String>>>>,
}

/// `{ cert = "...", key = "..." }` in `[[server.tls]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCert {
    /// PEM certificate chain path.
    pub cert: Spanned<String>,
    /// PEM private key path.
    pub key: Spanned<String>,
}

/// `[admin]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    /// "ip:port".
    pub listen: Spanned<String>,
    /// Bearer token; "" = none.
    pub token: Option<String>,
    /// Whether requests are counted for `GET /metrics` (default true).
    pub metrics: Option<bool>,
}

/// `[upstream.NAME]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstream {
    /// Balancing method name.
    pub balance: Option<Spanned<String>>,
    /// `$var` template hashed by `balance = "hash"`.
    pub key: Option<Spanned<String>>,
    /// Idle pooled connections per peer, in the whole process.
    pub keepalive: Option<usize>,
    /// How long a pooled connection may idle.
    pub keepalive_timeout: Option<Dur>,
    /// Time allowed to connect to a peer.
    pub connect_timeout: Option<Dur>,
    /// Time allowed between reads from a peer.
    pub read_timeout: Option<Dur>,
    /// Time allowed between writes to a peer.
    pub send_timeout: Option<Dur>,
    /// Extra tries on another peer.
    pub retries: Option<u32>,
    /// Peer answers (statuses) that also move a request on.
    pub retry_statuses: Option<Vec<Spanned<u16>>>,
    /// The peers; absent when `workers` supplies them.
    pub servers: Option<Spanned<Vec<Spanned<RawPeer>>>>,
    /// `[upstream.NAME.workers]`: app processes moongate runs itself.
    pub workers: Option<Spanned<RawWorkers>>,
    /// `lua.balancer` (a file) or `lua.balancer_inline` (code).
    pub lua: Option<Spanned<RawUpstreamLua>>,
    /// The protocol spoken to the peers: "http1" (default), "h2", "grpc",
    /// "uwsgi", "fastcgi".
    pub protocol: Option<Spanned<String>>,
    /// CGI variables added or overridden (uwsgi, fastcgi), values `$var`
    /// templates.
    pub params: Option<Spanned<BTreeMap<String, Spanned<String>>>>,
    /// HTTP/2 connections per peer per worker thread (h2, grpc).
    pub h2_connections: Option<Spanned<usize>>,
    /// TLS to the peers.
    pub tls: Option<Spanned<RawUpstreamTls>>,
    /// The scripts' directory on the FastCGI server (fastcgi only).
    pub root: Option<Spanned<String>>,
    /// Active health checks.
    pub health: Option<Spanned<RawHealth>>,
}

/// `health = { ... }` of an upstream.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHealth {
    /// "http" (a GET in the upstream's protocol, the default) or "tcp".
    #[serde(rename = "type")]
    pub kind: Option<Spanned<String>>,
    /// Path (and query) asked.
    pub path: Option<Spanned<String>>,
    /// Time between two rounds of checks.
    pub interval: Option<Spanned<Dur>>,
    /// Time one check may take.
    pub timeout: Option<Spanned<Dur>>,
    /// Failed checks in a row that take a peer out.
    pub fails: Option<Spanned<u32>>,
    /// Passed checks in a row that bring it back.
    pub passes: Option<Spanned<u32>>,
    /// "2xx", a status, or a list of them.
    pub expect: Option<Spanned<toml::Value>>,
    /// The Host asked for.
    pub host: Option<Spanned<String>>,
    /// Extra request headers.
    pub headers: Option<Spanned<BTreeMap<String, Spanned<String>>>>,
}

/// `tls = { ... }` of an upstream.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstreamTls {
    /// PEM file of trusted certificates (default: the system's CA bundle).
    pub ca: Option<Spanned<String>>,
    /// The name sent (SNI) and checked in the peer's certificate.
    pub server_name: Option<Spanned<String>>,
    /// Whether the peer's certificate is checked (default true).
    pub verify: Option<bool>,
}

/// The `lua.*` keys of an upstream.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstreamLua {
    /// Balancer script file, run before every try.
    pub balancer: Option<Spanned<String>>,
    /// Balancer code.
    pub balancer_inline: Option<Spanned<String>>,
}

/// `[upstream.NAME.workers]`: a pool of app processes moongate spawns and
/// supervises.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWorkers {
    /// argv; `{socket}` and `{port}` are filled in per worker.
    pub command: Spanned<Vec<String>>,
    /// A number, or "auto" (2 × cores + 1).
    pub count: Option<Spanned<toml::Value>>,
    /// Working directory of the workers.
    pub dir: Option<Spanned<String>>,
    /// Extra environment variables.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Path that must answer 2xx before a worker takes traffic.
    pub ready: Option<Spanned<String>>,
    /// How long a worker may take to become ready.
    pub start_timeout: Option<Spanned<Dur>>,
    /// Requests after which a worker is recycled; 0 = never.
    pub max_requests: Option<Spanned<u64>>,
    /// Resident memory past which a worker is recycled.
    pub max_rss: Option<Spanned<Size>>,
    /// "MIN..MAX": the first and the largest delay before a restart.
    pub restart_backoff: Option<Spanned<String>>,
    /// Time between SIGTERM and SIGKILL when a worker is stopped.
    pub stop_timeout: Option<Spanned<Dur>>,
}

/// One entry of `servers` in `[upstream.NAME]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPeer {
    /// "ip:port", "host:port" or "unix:/path".
    pub addr: Spanned<String>,
    /// Relative share of traffic, ≥ 1.
    pub weight: Option<Spanned<u32>>,
    /// Failures within `fail_timeout` that mark the peer down; 0 = never.
    pub max_fails: Option<u32>,
    /// Window for `max_fails`, and how long the peer then rests.
    pub fail_timeout: Option<Dur>,
    /// Used only when every primary peer is down.
    #[serde(default)]
    pub backup: bool,
    /// Kept in the list but sent no traffic.
    #[serde(default)]
    pub down: bool,
}

/// `[[route]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    /// The route's name in metrics and the access log (default `file:line`).
    pub name: Option<Spanned<String>>,
    /// One host pattern or several.
    pub host: Option<Spanned<OneOrMany>>,
    /// Prefix match.
    pub path: Option<Spanned<String>>,
    /// Exact match.
    pub path_exact: Option<Spanned<String>>,
    /// Regex match.
    pub path_regex: Option<Spanned<String>>,
    /// Allowed methods; absent = all.
    pub methods: Option<Spanned<Vec<Spanned<String>>>>,
    /// Proxy to this upstream.
    pub upstream: Option<Spanned<String>>,
    /// Serve static files from this directory.
    pub root: Option<Spanned<String>>,
    /// Path rewrite before proxying.
    pub rewrite: Option<Spanned<RawRewrite>>,
    /// Cache lifetime for static files.
    pub expires: Option<Spanned<Dur>>,
    /// Lua phase handlers.
    pub lua: Option<Spanned<RawRouteLua>>,
    /// Bundled policies: `[{ use = "NAME", ...options }]`, each option spanned so a
    /// bad one (or a missing `keys_file`) is reported at its own place.
    pub policies: Option<Vec<Spanned<RawPolicy>>>,
    /// Rate-limit zones (`[limit.NAME]`) applied to the route.
    pub limit: Option<Spanned<OneOrMany>>,
    /// The proxy cache zone (`[cache.NAME]`) for the route's upstream responses.
    pub cache: Option<Spanned<String>>,
    /// Protocols a client may upgrade to through the route (default: websocket).
    pub upgrade: Option<Spanned<Vec<Spanned<String>>>>,
    /// Response compression; its keys override `[server]`'s.
    pub compress: Option<Spanned<RawCompress>>,
}

/// One entry of a route's `policies`: option name → value (`use` among them).
pub type RawPolicy = BTreeMap<String, Spanned<toml::Value>>;

/// `rewrite = { from = "...", to = "..." }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRewrite {
    /// Regex matched against the path.
    pub from: Spanned<String>,
    /// Replacement, with `$1` / `${name}` references.
    pub to: Spanned<String>,
}

/// `workers`: `"auto"` (None) or a thread count ≥ 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Workers(pub Option<usize>);

impl<'de> Deserialize<'de> for Workers {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(WorkersVisitor)
    }
}

struct WorkersVisitor;

impl Visitor<'_> for WorkersVisitor {
    type Value = Workers;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("\"auto\" or a whole number of 1 or more")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Workers, E> {
        match v {
            "auto" => Ok(Workers(None)),
            _ => Err(E::invalid_value(Unexpected::Str(v), &self)),
        }
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Workers, E> {
        match usize::try_from(v) {
            Ok(n) if n >= 1 => Ok(Workers(Some(n))),
            _ => Err(E::invalid_value(Unexpected::Unsigned(v), &self)),
        }
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Workers, E> {
        match u64::try_from(v) {
            Ok(n) => self.visit_u64(n),
            Err(_) => Err(E::invalid_value(Unexpected::Signed(v), &self)),
        }
    }
}

/// One name (spanned by the outer `Spanned`) or an array of spanned names:
/// `host = "example.com"` or `host = ["a.example", "*.b.example"]`,
/// `limit = "per_client"` or `limit = ["per_client", "per_key"]`.
#[derive(Debug)]
pub enum OneOrMany {
    /// A single string.
    One(String),
    /// An array of strings.
    Many(Vec<Spanned<String>>),
}

impl OneOrMany {
    /// The names with their spans (`whole` for the single form).
    pub fn spanned(&self, whole: std::ops::Range<usize>) -> Vec<(String, std::ops::Range<usize>)> {
        match self {
            OneOrMany::One(one) => vec![(one.clone(), whole)],
            OneOrMany::Many(many) => many
                .iter()
                .map(|s| (s.get_ref().clone(), s.span()))
                .collect(),
        }
    }
}

impl<'de> Deserialize<'de> for OneOrMany {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(OneOrManyVisitor)
    }
}

struct OneOrManyVisitor;

impl<'de> Visitor<'de> for OneOrManyVisitor {
    type Value = OneOrMany;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string or an array of strings")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<OneOrMany, E> {
        Ok(OneOrMany::One(v.to_owned()))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<OneOrMany, A::Error> {
        let mut names = Vec::new();
        while let Some(name) = seq.next_element::<Spanned<String>>()? {
            names.push(name);
        }
        Ok(OneOrMany::Many(names))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_every_table() {
        let text = r#"
            [server]
            workers = 4
            [[server.tls]]
            listen = "0.0.0.0:8443"
            certs = [{ cert = "c.pem", key = "k.pem" }]
            [admin]
            listen = "127.0.0.1:9901"
            [upstream.app]
            servers = [{ addr = "127.0.0.1:8001", backup = true }]
            [[route]]
            host = ["a.example", "*.b.example"]
            path = "/"
            upstream = "app"
        "#;
        let file: RawFile = toml::from_str(text).unwrap();
        let server = file.server.unwrap().into_inner();
        assert_eq!(server.workers, Some(Workers(Some(4))));
        assert!(server.sets_keys());
        assert_eq!(server.tls.len(), 1);
        assert!(file.admin.is_some());
        let (name, up) = file.upstream.into_iter().next().unwrap();
        assert_eq!(name.get_ref(), "app");
        assert!(
            up.get_ref().servers.as_ref().unwrap().get_ref()[0]
                .get_ref()
                .backup
        );
        match &file.route[0].get_ref().host.as_ref().unwrap().get_ref() {
            OneOrMany::Many(h) => assert_eq!(h[1].get_ref(), "*.b.example"),
            other => panic!("wanted many hosts, got {other:?}"),
        }
    }

    #[test]
    fn tls_only_file_does_not_set_server_keys() {
        let text = "[[server.tls]]\nlisten = \"0.0.0.0:8443\"\ncerts = []\n";
        let file: RawFile = toml::from_str(text).unwrap();
        assert!(!file.server.unwrap().get_ref().sets_keys());
    }

    #[test]
    fn workers_accepts_auto_or_positive_numbers_only() {
        #[derive(Deserialize)]
        struct W {
            workers: Workers,
        }
        let w = |t: &str| toml::from_str::<W>(t).map(|w| w.workers);
        assert_eq!(w("workers = \"auto\"").unwrap(), Workers(None));
        assert_eq!(w("workers = 2").unwrap(), Workers(Some(2)));
        for bad in [
            "workers = 0",
            "workers = -1",
            "workers = \"many\"",
            "workers = true",
        ] {
            let e = w(bad).unwrap_err();
            assert!(
                e.message().contains("\"auto\" or a whole number"),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn a_single_host_string_is_accepted() {
        let file: RawFile = toml::from_str("[[route]]\nhost = \"x.example\"\n").unwrap();
        let host = file.route[0].get_ref().host.as_ref().unwrap();
        assert!(matches!(host.get_ref(), OneOrMany::One(h) if h == "x.example"));
        assert_eq!(host.span(), (17..28));
    }
}

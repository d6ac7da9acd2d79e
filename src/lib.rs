//! moongate: an edge server and API gateway in the tradition of nginx +
//! ngx_lua. Operators describe listeners, routes and upstreams in a
//! `conf.d/` directory of TOML files; moongate serves them from one
//! `current_thread` runtime per core and reloads them live.
//!
//! # Layout
//!
//! Modules are listed in the order a request meets them; reading them top
//! to bottom follows a request through the server.
//!
//! - [`listener`]: binds each address once per worker (SO_REUSEPORT)
//! - [`runtime`]: the worker threads and their accept loops
//! - [`worker_local`]: what one worker thread owns (pools, Lua VMs, …)
//! - [`tls`]: rustls, certificates by SNI, ALPN
//! - [`tls_client`]: rustls client configurations (upstreams, Lua cosockets)
//! - [`conn`]: one client connection (HTTP/1.1, h2, deadlines, 408)
//! - [`interim`]: 1xx answers a request queues for its connection to send
//!   ahead of the response
//! - [`proxy`]: **the order of the phases** for one request
//! - [`route`]: host/path/method routing table and rewrites
//! - [`lua`]: ngx_lua-style phase handlers (rewrite, access, content,
//!   header_filter, log) and the `ngx` API
//! - [`policies`]: the bundled policies' descriptors (name, phases, option
//!   schema, docs, implementation) and their registry
//! - [`throttle`]: a route's rate-limit zones on the request path
//! - [`cache`]: the two-level proxy cache (`[cache.NAME]` zones: L1 in
//!   memory, L2 on disk; looked up before the upstream, stored after)
//! - [`ngx`]: codecs, times and regexes behind that API (no Lua)
//! - [`shdict`]: the stores behind `ngx.shared.DICT` (kept across reloads)
//! - [`limit`]: token buckets and concurrency counters behind rate-limit zones
//! - [`auth`]: JWT and JWKS verification, htpasswd checks and the consumer
//!   index behind the authentication policies
//! - [`cluster`]: cluster-wide buckets in Redis (`scope = "redis"` zones)
//! - [`forward`]: forwarding and hop-by-hop header rules
//! - [`grpc`]: gRPC's rules at the edge (own errors as gRPC statuses,
//!   `grpc-timeout`)
//! - [`conditional`]: validators, conditional requests and byte ranges
//!   (RFC 9110 §13-14), for answers from a whole representation
//! - [`vars`]: nginx-style `$variables`
//! - [`upstream`]: peers, balancers, pooled connections, our HTTP/1.1
//!   client, HTTP/2 and gRPC, uwsgi, FastCGI, TLS to peers, retries
//! - [`static_files`]: `root` routes
//! - [`compress`]: response compression (`compress = {...}`: gzip, br,
//!   zstd by `Accept-Encoding`, streamed), the last filter on a response
//! - [`body`]: request/response body types and their limits
//! - [`error`]: the request path's error type and its status mapping
//! - [`error_page`]: the one format of moongate's own error answers
//! - [`access_log`]: one JSON line per request
//! - [`metrics`]: per-worker counters of requests and upstream tries,
//!   added up for `GET /metrics`
//! - [`write_timed`]: sockets whose stalled writes time out (clients and peers)
//! - [`lazy_timer`]: the timer behind those deadlines, registered only when a
//!   wait starts
//! - [`h1_wire`]: HTTP/1 header fields and response heads as written
//! - [`h1_framing`]: HTTP/1 body framing as read (requests and responses)
//!
//! Side modules: [`config`] (conf.d → validated model), [`snapshot`]
//! (model → immutable compiled snapshot), [`state`] (what outlives
//! reloads), [`reload`] (building, checking and swapping snapshots;
//! watching conf.d), [`workers`] (the app processes of managed upstreams:
//! spawned, supervised, recycled, rolled and stopped), [`admin`] (status,
//! reload, purge and worker restart API), [`fanout`] (purges to and from
//! other nodes over Redis pub/sub), [`upgrade`] (zero-downtime binary
//! upgrade: the listening sockets handed to a new process), [`server`]
//! (the embedding API and the control thread), [`sd_notify`] (systemd's
//! readiness, reload and stop notifications), [`import`] (`moongate
//! import`: an nginx configuration translated into conf.d and Lua). With
//! the `fuzzing` feature, `fuzz_api` exposes a few private parsers to the
//! cargo-fuzz targets in `fuzz/`; with `alloc-count`, `alloc_count` is the
//! bench build's counting allocator.
//!
//! # Embedding
//!
//! ```no_run
//! let running = moongate::Server::from_toml(r#"
//!     [server]
//!     listen = ["127.0.0.1:0"]
//!     [upstream.app]
//!     servers = [{ addr = "127.0.0.1:3000" }]
//!     [[route]]
//!     path = "/"
//!     upstream = "app"
//! "#).start()?;
//! println!("serving on {:?}", running.listeners());
//! running.stop()?;
//! # Ok::<(), moongate::ServerError>(())
//! ```

// `unsafe` is denied everywhere but three functions: loading LuaJIT's `ffi`
// (see `lua::vm::new_state`), setting a worker process's parent-death
// signal between fork and exec (see `workers::spawn::die_with_parent`),
// and owning a descriptor received over a unix socket (`upgrade::wire::own`);
// PCRE2's C API for `ngx.re` (the module `ngx::re::pcre`, which says why);
// and, in the bench build only, the counting allocator (`alloc_count`).
#![deny(unsafe_code)]

pub mod listener;
pub mod runtime;
pub mod worker_local;
pub mod tls;
pub mod tls_client;
pub mod conn;
pub mod client_upgrade;
pub mod interim;
pub mod proxy;
pub mod route;
pub mod lua;
pub mod policies;
pub mod throttle;
pub mod cache;
pub mod ngx;
pub mod shdict;
pub mod limit;
pub mod auth;
pub mod cluster;
pub mod forward;
pub mod grpc;
pub mod conditional;
pub mod vars;
pub mod upstream;
pub mod static_files;
pub mod compress;
pub mod body;
pub mod error;
pub mod error_page;
pub mod access_log;
pub mod otel;
pub mod metrics;
pub mod write_timed;
pub mod lazy_timer;
pub mod h1_wire;
pub mod h1_framing;

pub mod config;
pub mod snapshot;
pub mod state;
pub mod reload;
pub mod workers;
pub mod admin;
pub mod fanout;
pub mod upgrade;
pub mod server;
pub mod sd_notify;
pub mod import;
#[cfg(feature = "fuzzing")]
pub mod fuzz_api;
#[cfg(feature = "alloc-count")]
pub mod alloc_count;

pub use server::{Running, Server, ServerError};

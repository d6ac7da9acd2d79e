//! The compiled configuration: an immutable [`Snapshot`] built from a
//! validated [`Config`] and swapped in whole behind an `ArcSwap`. A request
//! loads one snapshot when it starts and uses it to its end, so a reload
//! never changes the rules under a request in flight.
//!
//! Compiling is where a new configuration meets the state that outlives
//! reloads: an upstream whose definition is unchanged is taken over from
//! the previous snapshot as the same `Arc<Upstream>` — same peers, health
//! marks, in-flight counts and (via peer ids) pooled connections. Rate-limit
//! zones are taken over the same way, with their buckets, and cache zones
//! with their contents (a changed cache zone keeps its disk store when its
//! `disk` is unchanged, since a directory must not be opened twice).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use crate::cache;
use crate::config::{self, Config, ConfigError, RouteTarget};
use crate::lua::{LuaProgram, RoutePhases};
use crate::route::{PathMatch, Rewrite, RouteSpec, Router};
use crate::static_files::StaticOptions;
use crate::throttle::Zone;
use crate::upstream::Upstream;

mod summary;

pub use summary::RouteSummary;

/// One compiled configuration.
pub struct Snapshot {
    /// Counts successful loads, starting at 1.
    pub generation: u64,
    /// `[server]` settings (timeouts, limits, trusted proxies, logging);
    /// `client_max_body_size` is the limit applied before routing: the
    /// largest any route allows (see [`RouteEntry::body_limit`]).
    pub server: config::Server,
    /// The routing table.
    pub router: Router<RouteEntry>,
    /// Every route as written, in config order, for the status page.
    pub routes: Vec<RouteSummary>,
    /// Upstreams by name.
    pub upstreams: BTreeMap<String, Arc<Upstream>>,
    /// Every listener to keep open.
    pub listeners: Vec<ListenerSpec>,
    /// The admin listener, if any.
    pub admin: Option<config::Admin>,
    /// Whether requests are counted for `GET /metrics`: there is an admin
    /// listener to scrape and its `metrics` is not off. Read per request
    /// (a plain field: when off, the counting costs this one branch).
    pub metrics: bool,
    /// The files this configuration came from.
    pub files: Vec<PathBuf>,
    /// Other files the configuration read (the consumers file, the files
    /// policies name: htpasswd, keys, JWKS): a change to one reloads, as a
    /// change to conf.d does.
    pub data_files: Vec<PathBuf>,
    /// The directory its relative paths were resolved against (the one holding conf.d).
    pub prefix: PathBuf,
    /// Every Lua script of this configuration.
    pub lua: Arc<LuaProgram>,
    /// `[limit.NAME]` zones by name (`mg.limit.take` finds them here too).
    pub limits: Arc<BTreeMap<String, Arc<Zone>>>,
    /// `[cache.NAME]` zones by name.
    pub caches: BTreeMap<String, Arc<cache::Zone>>,
    /// `[redis]`, if configured (purges fan out through it).
    pub redis: Option<config::RedisSettings>,
    /// `[tracing]`, if configured: read per request (when absent, one
    /// branch is all a request pays).
    pub tracing: Option<Arc<crate::otel::Tracer>>,
}

/// What a route leads to, plus its own per-route settings.
pub struct RouteEntry {
    /// What names the route in logs and metrics: its `name`, else
    /// `file:line` (see [`config::Route::name`]).
    pub name: String,
    /// Its position among the snapshot's routes (how a worker finds the
    /// route's counters, see [`crate::metrics::WorkerStats::route`]).
    pub index: usize,
    /// Where the request goes.
    pub target: Target,
    /// Optional regex rewrite of the path.
    pub rewrite: Option<Rewrite>,
    /// Lua handlers by phase.
    pub lua: RoutePhases,
    /// Rate-limit zones checked after the Lua access phase, in order.
    pub limits: Vec<Arc<Zone>>,
    /// The proxy cache zone for upstream responses.
    pub cache: Option<Arc<cache::Zone>>,
    /// Protocols a client may upgrade to (lowercase, never `h2c`).
    pub upgrade: Vec<String>,
    /// Response compression; `None` when off (one check per response).
    pub compress: Option<Arc<crate::compress::Settings>>,
    /// The route's first exact host (`$server_name`).
    pub server_name: Option<Arc<str>>,
    /// The route's `path_regex` (its captures are `ngx.var[N]`).
    pub path_regex: Option<regex::Regex>,
    /// The header holding the request's id (the access log's
    /// `request_id`): the `request_id` policy's `header`, else
    /// `X-Request-Id`.
    pub request_id_header: http::HeaderName,
    /// The route's own request-body limit (a `request_size` policy, or
    /// `client_max_body_size` where another route raised the limit applied
    /// before routing); None: the one applied before routing stands.
    pub body_limit: Option<u64>,
}

/// Where a routed request goes.
pub enum Target {
    /// Proxied to an upstream.
    Upstream {
        /// The upstream's name.
        name: String,
        /// The upstream.
        upstream: Arc<Upstream>,
    },
    /// Served from a directory.
    Static {
        /// The route's prefix, removed from the path before the file is
        /// looked up under `root` (like nginx's `alias`).
        prefix: String,
        /// Root directory, index files, expires.
        options: StaticOptions,
    },
    /// Answered by the route's `lua.content` handler.
    Lua,
}

/// One listening address.
#[derive(Clone)]
pub struct ListenerSpec {
    /// Where to listen.
    pub addr: SocketAddr,
    /// TLS settings, for `[[server.tls]]` listeners.
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

impl Snapshot {
    /// The TLS configuration of the listener on `addr`, if it is a TLS one.
    pub fn tls_for(&self, addr: SocketAddr) -> Option<Arc<rustls::ServerConfig>> {
        self.listeners
            .iter()
            .find_map(|l| l.tls.clone().filter(|_| l.addr == addr))
    }
}

/// Compiles `config`, reusing unchanged upstreams of `previous`.
pub fn compile(
    config: Config,
    previous: Option<&Snapshot>,
    generation: u64,
) -> Result<Snapshot, ConfigError> {
    let balancers: Vec<(String, config::Script)> = (config.upstreams.iter())
        .filter_map(|(name, def)| Some((name.clone(), def.balancer.clone()?)))
        .collect();
    let mut upstreams = BTreeMap::new();
    for (name, def) in config.upstreams {
        let kept = previous
            .and_then(|p| p.upstreams.get(&name))
            .filter(|u| u.def == def)
            .cloned();
        let up = match kept {
            Some(u) => u,
            None => {
                let place = def.place.clone();
                Arc::new(Upstream::new(def).map_err(|e| ConfigError::at(&place, e))?)
            }
        };
        upstreams.insert(name, up);
    }

    let mut limits = BTreeMap::new();
    for (name, def) in config.limits {
        let kept = previous
            .and_then(|p| p.limits.get(&name))
            .filter(|z| z.def.same_definition(&def))
            .cloned();
        let zone = match kept {
            Some(z) => z,
            None => {
                let place = def.place.clone();
                Arc::new(Zone::new(def).map_err(|e| ConfigError::at(&place, e))?)
            }
        };
        limits.insert(name, zone);
    }
    let limits = Arc::new(limits);

    let mut caches = BTreeMap::new();
    for (name, def) in config.caches {
        let old = previous.and_then(|p| p.caches.get(&name));
        let zone = match old.filter(|z| z.def.same_definition(&def)) {
            Some(z) => z.clone(),
            None => {
                let disk = old
                    .filter(|z| z.def.disk == def.disk)
                    .and_then(|z| z.disk().cloned());
                let place = def.place.clone();
                Arc::new(cache::Zone::new(def, disk).map_err(|e| ConfigError::at(&place, e))?)
            }
        };
        caches.insert(name, zone);
    }

    let metrics = config.admin.as_ref().is_some_and(|a| a.metrics);
    let route_lua: Vec<&config::RouteLua> = config.routes.iter().map(|r| &r.lua).collect();
    let (lua, phases) = LuaProgram::compile(
        &config.lua,
        &route_lua,
        &balancers,
        crate::lua::program::References {
            upstreams: upstreams.keys().cloned().collect(),
            limits: limits.clone(),
            consumers: config.consumers.clone(),
        },
        previous.map(|p| p.lua.as_ref()),
        metrics,
    )?;
    // Before routing only the largest limit any route allows can be
    // applied; routes allowing less apply theirs once found.
    let route_body_limits: Vec<Option<u64>> = (config.routes.iter())
        .map(|r| route_body_limit(&r.lua.policies))
        .collect();
    let server_body_limit = config.server.client_max_body_size;
    let before_route =
        (route_body_limits.iter().flatten().copied()).fold(server_body_limit, u64::max);
    let mut specs = Vec::with_capacity(config.routes.len());
    let summaries = config.routes.iter().map(RouteSummary::of).collect();
    let data_files = data_files(&config.routes, config.consumers_file.clone());
    for (index, (route, lua_phases)) in config.routes.into_iter().zip(phases).enumerate() {
        let body_limit = Some(route_body_limits[index].unwrap_or(server_body_limit))
            .filter(|l| *l != before_route);
        let name = route.name;
        let target = match route.target {
            RouteTarget::Upstream(up_name) => {
                let Some(upstream) = upstreams.get(&up_name).cloned() else {
                    return Err(ConfigError::at(
                        &route.place,
                        format!("route names upstream `{up_name}`, which is not defined"),
                    ));
                };
                Target::Upstream {
                    name: up_name,
                    upstream,
                }
            }
            RouteTarget::Lua => Target::Lua,
            RouteTarget::Static { root } => Target::Static {
                prefix: match &route.path {
                    PathMatch::Prefix(p) => p.clone(),
                    _ => String::new(),
                },
                options: StaticOptions {
                    root,
                    expires: route.expires,
                    index: vec!["index.html".to_string()],
                },
            },
        };
        let mut route_limits = Vec::with_capacity(route.limits.len());
        for zone_name in &route.limits {
            let Some(zone) = limits.get(zone_name).cloned() else {
                return Err(ConfigError::at(
                    &route.place,
                    format!("route names limit zone `{zone_name}`, which is not defined"),
                ));
            };
            route_limits.push(zone);
        }
        let route_cache = match &route.cache {
            None => None,
            Some(zone_name) => match caches.get(zone_name) {
                Some(z) => Some(z.clone()),
                None => {
                    return Err(ConfigError::at(
                        &route.place,
                        format!("route names cache zone `{zone_name}`, which is not defined"),
                    ));
                }
            },
        };
        let server_name = route
            .hosts
            .iter()
            .find(|h| *h != "*" && !h.starts_with("*."))
            .map(|h| Arc::from(h.to_ascii_lowercase()));
        let path_regex = match &route.path {
            PathMatch::Regex(re) => Some(re.clone()),
            _ => None,
        };
        let request_id_header = request_id_header(&route.lua.policies);
        // nginx redirects a request for a proxied location's path without
        // its trailing `/` to it (see `crate::route`).
        let auto_redirect = matches!(target, Target::Upstream { .. });
        specs.push(RouteSpec {
            hosts: route.hosts,
            path: route.path,
            methods: route.methods,
            auto_redirect,
            value: RouteEntry {
                name,
                index,
                target,
                rewrite: route.rewrite,
                lua: lua_phases,
                limits: route_limits,
                cache: route_cache,
                upgrade: route.upgrade,
                compress: route.compress,
                server_name,
                path_regex,
                request_id_header,
                body_limit,
            },
        });
    }

    let mut listeners = Vec::new();
    for l in &config.server.listen {
        listeners.push(ListenerSpec {
            addr: l.addr,
            tls: None,
        });
    }
    for t in &config.tls {
        listeners.push(ListenerSpec {
            addr: t.listen.addr,
            tls: Some(crate::tls::server_config(t)?),
        });
    }

    // An unchanged `[tracing]` keeps its tracer (and export thread and
    // queue); a changed one starts anew, the old thread ending once the
    // old snapshot's requests are done.
    let tracing = match config.tracing {
        None => None,
        Some(settings) => match previous.and_then(|p| p.tracing.as_ref()) {
            Some(t) if t.settings == settings => Some(t.clone()),
            _ => Some(Arc::new(crate::otel::Tracer::new(settings).map_err(
                |m| {
                    let file = config.files.first().cloned().unwrap_or_default();
                    ConfigError::at(&config::Place::whole(file), m)
                },
            )?)),
        },
    };
    Ok(Snapshot {
        generation,
        tracing,
        server: config::Server {
            client_max_body_size: before_route,
            ..config.server
        },
        router: Router::new(specs),
        routes: summaries,
        upstreams,
        listeners,
        metrics,
        admin: config.admin,
        data_files,
        files: config.files,
        prefix: config.prefix,
        lua,
        limits,
        caches,
        redis: config.redis,
    })
}

/// The files the routes' policies read (their `File` options) and the
/// consumers file, each once.
fn data_files(routes: &[config::Route], consumers: Option<PathBuf>) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = consumers.into_iter().collect();
    for p in routes.iter().flat_map(|r| &r.lua.policies) {
        let Some(d) = crate::policies::find(&p.name) else {
            continue;
        };
        let files = (d.options.iter())
            .filter(|o| matches!(o.kind, crate::policies::Kind::File))
            .filter_map(|o| p.options.get(o.key)?.as_str().map(PathBuf::from));
        for f in files {
            if !out.contains(&f) {
                out.push(f);
            }
        }
    }
    out
}

/// The body limit of a route's `request_size` policy, if it has one.
fn route_body_limit(policies: &[config::Policy]) -> Option<u64> {
    use crate::policies::request_size;
    (policies.iter().rev())
        .find(|p| p.name == request_size::POLICY.name)
        .and_then(|p| request_size::max_body_size(&p.options))
}

/// The header a route's `request_id` policy keeps the request's id in
/// (its `header` option, the policy's own default otherwise).
fn request_id_header(policies: &[config::Policy]) -> http::HeaderName {
    policies
        .iter()
        .find(|p| p.name == "request_id")
        .and_then(|p| p.options.get("header")?.as_str())
        .and_then(|h| http::HeaderName::from_bytes(h.as_bytes()).ok())
        .unwrap_or(crate::access_log::REQUEST_ID_HEADER)
}
#[cfg(test)]
mod tests {
    use super::*;

    /// `redis` is `[redis]`'s `url = ...` or `cluster = [...]` line.
    fn compiled(redis: &str, rate: &str, previous: Option<&Snapshot>) -> Snapshot {
        let text = format!(
            "[server]\nlisten = [\"127.0.0.1:0\"]\n[redis]\n{redis}\n[limit.shared]\nrate = \"{rate}\"\nscope = \"redis\"\n[limit.here]\nrate = \"{rate}\"\n"
        );
        let config = config::load_str("t.toml", &text).expect("valid");
        compile(config, previous, previous.map_or(1, |p| p.generation + 1)).expect("compiles")
    }

    const R6379: &str = "url = \"redis://127.0.0.1:6379\"";
    const R6380: &str = "url = \"redis://127.0.0.1:6380\"";

    #[test]
    fn a_reload_keeps_zones_whose_definition_and_redis_are_unchanged() {
        let first = compiled(R6379, "10/s", None);
        let same = compiled(R6379, "10/s", Some(&first));
        for zone in ["shared", "here"] {
            assert!(
                Arc::ptr_eq(&first.limits[zone], &same.limits[zone]),
                "{zone}"
            );
        }
        assert!(same.limits["shared"].is_remote());
        // Another Redis: the redis zone starts afresh, the local one stays.
        let moved = compiled(R6380, "10/s", Some(&same));
        assert!(!Arc::ptr_eq(
            &same.limits["shared"],
            &moved.limits["shared"]
        ));
        assert!(Arc::ptr_eq(&same.limits["here"], &moved.limits["here"]));
        // A changed rate takes effect at once.
        let faster = compiled(R6380, "20/s", Some(&moved));
        assert!(!Arc::ptr_eq(
            &moved.limits["shared"],
            &faster.limits["shared"]
        ));
    }

    fn with_cache(memory: &str, previous: Option<&Snapshot>) -> Snapshot {
        let text =
            format!("[server]\nlisten = [\"127.0.0.1:0\"]\n[cache.pages]\nmemory = \"{memory}\"\n");
        let config = config::load_str("t.toml", &text).expect("valid");
        compile(config, previous, previous.map_or(1, |p| p.generation + 1)).expect("compiles")
    }

    #[test]
    fn a_reload_keeps_cache_zones_whose_definition_is_unchanged() {
        let first = with_cache("1MiB", None);
        let same = with_cache("1MiB", Some(&first));
        assert!(Arc::ptr_eq(&first.caches["pages"], &same.caches["pages"]));
        let bigger = with_cache("2MiB", Some(&same));
        assert!(!Arc::ptr_eq(&same.caches["pages"], &bigger.caches["pages"]));
    }

    #[test]
    fn a_reload_keeps_redis_zones_only_while_the_cluster_nodes_are_unchanged() {
        let two = "cluster = [\"redis://127.0.0.1:7000\", \"redis://127.0.0.1:7001\"]";
        let first = compiled(two, "10/s", None);
        assert!(first.limits["shared"].is_remote());
        let same = compiled(two, "10/s", Some(&first));
        assert!(Arc::ptr_eq(&first.limits["shared"], &same.limits["shared"]));
        // Another seed list, or one server instead: a changed definition.
        let three = "cluster = [\"redis://127.0.0.1:7000\", \"redis://127.0.0.1:7001\", \"redis://127.0.0.1:7002\"]";
        let grown = compiled(three, "10/s", Some(&same));
        assert!(!Arc::ptr_eq(
            &same.limits["shared"],
            &grown.limits["shared"]
        ));
        assert!(Arc::ptr_eq(&same.limits["here"], &grown.limits["here"]));
        let single = compiled(R6379, "10/s", Some(&grown));
        assert!(!Arc::ptr_eq(
            &grown.limits["shared"],
            &single.limits["shared"]
        ));
    }

    fn with_tracing(tracing: &str, previous: Option<&Snapshot>) -> Snapshot {
        let text = format!("[server]\nlisten = [\"127.0.0.1:0\"]\n{tracing}");
        let config = config::load_str("t.toml", &text).expect("valid");
        compile(config, previous, previous.map_or(1, |p| p.generation + 1)).expect("compiles")
    }

    #[test]
    fn a_reload_keeps_an_unchanged_tracer_and_replaces_a_changed_one() {
        let first = with_tracing("[tracing]\nsample_ratio = 0.5\n", None);
        let kept = with_tracing("[tracing]\nsample_ratio = 0.5\n", Some(&first));
        let (a, b) = (first.tracing.as_ref(), kept.tracing.as_ref());
        assert!(a.zip(b).is_some_and(|(a, b)| Arc::ptr_eq(a, b)));
        let changed = with_tracing("[tracing]\nsample_ratio = 0.25\n", Some(&kept));
        let c = changed.tracing.as_ref().expect("tracer");
        assert!(!Arc::ptr_eq(c, kept.tracing.as_ref().expect("tracer")));
        assert_eq!(c.settings.sample_ratio, 0.25);
        assert!(with_tracing("", Some(&changed)).tracing.is_none());
    }
}

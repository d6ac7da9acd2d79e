//! The typed report behind `GET /status` (its JSON) and `GET /` (the
//! status page renders the same value, [`super::page`]): version and
//! uptime, the configuration generation and the last reload, listeners,
//! request and 5xx rates over the last minute, routes, upstream peers with
//! their health, rate-limit zones, managed worker pools and cache zones.
//! Built on the control thread when asked for; nothing here is kept or
//! read by requests.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use serde::Serialize;

use super::rates::{History, Rate};
use crate::cache::stats::ZoneStats;
use crate::cluster::HealthStatus;
use crate::config::{self, LimitKind, LimitScope};
use crate::listener::Bound;
use crate::reload::Control;
use crate::snapshot::RouteSummary;
use crate::state::ReloadStatus;
use crate::throttle::Zone;
use crate::upstream::Upstream;
use crate::upstream::call::peer_name;
use crate::upstream::peer::PeerHealth;
use crate::workers::PoolStatus;

/// Everything `/status` and the status page show.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// moongate's version.
    pub version: &'static str,
    /// This process's id (after a binary upgrade, the new process's).
    pub pid: u32,
    /// Seconds since the server started.
    pub uptime_secs: f64,
    /// When this report was made (milliseconds since the Unix epoch): what
    /// the page's "ago" figures are counted from.
    pub time_unix_ms: u64,
    /// The configuration generation serving.
    pub generation: u64,
    /// Worker threads serving requests.
    pub threads: usize,
    /// The files the configuration came from.
    pub files: Vec<String>,
    /// The client listeners open.
    pub listeners: Vec<Bound>,
    /// Reloads so far and the last attempt (with its error).
    pub reload: ReloadStatus,
    /// Binary upgrades asked of this process and the last one's outcome.
    pub upgrade: crate::upgrade::UpgradeStatus,
    /// Every request over the last minute.
    pub rates: Rate,
    /// The routes, in config order, each with its rates.
    pub routes: Vec<RouteReport>,
    /// Upstreams by name.
    pub upstreams: BTreeMap<String, UpstreamReport>,
    /// Rate-limit zones by name.
    pub limits: BTreeMap<String, LimitReport>,
    /// Managed worker pools by upstream name.
    pub workers: BTreeMap<String, PoolStatus>,
    /// Cache zones by name.
    pub caches: BTreeMap<String, ZoneStats>,
    /// The bench build's allocation counters, read after the rest was
    /// built (so a reader's window holds about one whole status request,
    /// which bench/run.py measures and subtracts).
    #[cfg(feature = "alloc-count")]
    pub allocations: crate::alloc_count::Counts,
}

/// A route and its traffic.
#[derive(Debug, Clone, Serialize)]
pub struct RouteReport {
    /// The route as written.
    #[serde(flatten)]
    pub route: RouteSummary,
    /// Its requests over the last minute.
    pub rate: Rate,
}

/// An upstream and its peers.
#[derive(Debug, Clone, Serialize)]
pub struct UpstreamReport {
    /// The balancer (`round_robin`, `least_conn`, ...).
    pub balance: &'static str,
    /// The protocol spoken to the peers.
    pub protocol: &'static str,
    /// Its active checks; `None` = passive health only.
    pub health: Option<CheckReport>,
    /// Every peer now (managed workers come and go).
    pub peers: Vec<PeerReport>,
}

/// How an upstream's peers are checked (`health = {...}`).
#[derive(Debug, Clone, Serialize)]
pub struct CheckReport {
    /// `"http"` (a request in the upstream's protocol) or `"tcp"`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// The path asked (http checks).
    pub path: Option<String>,
    /// Milliseconds between rounds.
    pub interval_ms: u64,
    /// Milliseconds a check may take.
    pub timeout_ms: u64,
    /// Failed checks in a row that take a peer out.
    pub fails: u32,
    /// Passed checks in a row that bring it back.
    pub passes: u32,
}

/// One peer and its health.
#[derive(Debug, Clone, Serialize)]
pub struct PeerReport {
    /// Its address.
    pub addr: String,
    /// What logs and metrics call it (its address, or a managed worker's
    /// name).
    pub name: String,
    /// Its `weight`.
    pub weight: u32,
    /// Whether it is a `backup`.
    pub backup: bool,
    /// Its state, passive and active.
    #[serde(flatten)]
    pub health: PeerHealth,
}

/// A rate-limit zone.
#[derive(Debug, Clone, Serialize)]
pub struct LimitReport {
    /// `"local"` or `"redis"`.
    pub scope: &'static str,
    /// `"rate"` (a token bucket per key) or `"conn"` (requests in flight).
    pub kind: &'static str,
    /// The refill rate and burst (`"100/s burst 50"`), or the concurrency
    /// (`"10 in flight"`).
    pub limit: String,
    /// The `$var` template naming a bucket.
    pub key: String,
    /// What a take does when Redis fails (redis zones).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on_redis_error: Option<&'static str>,
    /// Whether Redis answers, fallbacks, the last error (redis zones).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis: Option<HealthStatus>,
}

impl Report {
    /// The report as of now.
    pub fn build(control: &Control, history: &History) -> Report {
        let shared = &control.shared;
        let snap = shared.snapshot.load();
        let now = Instant::now();
        let rates = history.rates(&shared.metrics.merged(), now);
        let routes = snap
            .routes
            .iter()
            .map(|route| RouteReport {
                rate: rates
                    .routes
                    .get(route.name.as_str())
                    .cloned()
                    .unwrap_or_else(|| rates.all.idle()),
                route: route.clone(),
            })
            .collect();
        #[allow(unused_mut)] // set last in the alloc-count build
        let mut report = Report {
            version: env!("CARGO_PKG_VERSION"),
            pid: std::process::id(),
            uptime_secs: shared.started.elapsed().as_secs_f64(),
            time_unix_ms: unix_ms(SystemTime::now()),
            generation: snap.generation,
            threads: shared.workers,
            files: snap.files.iter().map(|f| f.display().to_string()).collect(),
            listeners: control.bound(),
            reload: shared.reload_status(),
            upgrade: shared.upgrades.status(),
            rates: rates.all,
            routes,
            upstreams: (snap.upstreams.iter())
                .map(|(name, up)| (name.clone(), upstream(up, now)))
                .collect(),
            limits: (snap.limits.iter())
                .map(|(name, zone)| (name.clone(), limit(zone)))
                .collect(),
            workers: shared.app_workers.status(),
            caches: (snap.caches.iter())
                .map(|(name, zone)| (name.clone(), zone.stats()))
                .collect(),
            #[cfg(feature = "alloc-count")]
            allocations: crate::alloc_count::Counts::default(),
        };
        #[cfg(feature = "alloc-count")]
        {
            report.allocations = crate::alloc_count::totals();
        }
        report
    }
}

impl Rate {
    /// No requests over the same window (a route not asked for since the
    /// counters began).
    fn idle(&self) -> Rate {
        Rate {
            window_secs: self.window_secs,
            requests: 0,
            requests_per_sec: 0.0,
            errors_5xx: 0,
            error_ratio: None,
        }
    }
}

fn upstream(up: &Arc<Upstream>, now: Instant) -> UpstreamReport {
    let members = up.members();
    let peers = (members.peers.iter().zip(&members.addrs))
        .map(|(peer, addr)| PeerReport {
            addr: addr.to_string(),
            name: peer_name(peer, addr),
            weight: peer.config.weight,
            backup: peer.config.backup,
            health: peer.health(now),
        })
        .collect();
    UpstreamReport {
        balance: up.def.balance.as_str(),
        protocol: up.def.protocol.as_str(),
        health: up.def.health.as_ref().map(check),
        peers,
    }
}

fn check(health: &config::Health) -> CheckReport {
    let ms = |d: std::time::Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    CheckReport {
        kind: if health.request.is_some() {
            "http"
        } else {
            "tcp"
        },
        path: health.request.as_ref().map(|r| r.path.clone()),
        interval_ms: ms(health.interval),
        timeout_ms: ms(health.timeout),
        fails: health.fails,
        passes: health.passes,
    }
}

fn limit(zone: &Zone) -> LimitReport {
    let def = &zone.def;
    let (kind, limit) = match &def.kind {
        LimitKind::Rate { rate, burst } => ("rate", format!("{rate} burst {burst}")),
        LimitKind::Conn { max } => ("conn", format!("{max} in flight")),
    };
    let (scope, on_redis_error) = match &def.scope {
        LimitScope::Local => ("local", None),
        LimitScope::Redis { on_error, .. } => ("redis", Some(on_error.as_str())),
    };
    LimitReport {
        scope,
        kind,
        limit,
        key: def.key.clone(),
        on_redis_error,
        redis: zone.redis_status(),
    }
}

/// Milliseconds since the Unix epoch (0 for a clock before it).
pub fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

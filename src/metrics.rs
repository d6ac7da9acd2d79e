//! `GET /metrics`: what the proxy counts, and how a scrape adds it up.
//!
//! Cost on the request path is the design's first concern (target: ≤ 2 %
//! of the proxy's instructions per request). So every worker thread counts
//! into its own [`WorkerMetrics`], plain atomics that only that thread
//! writes (a load and a store, no locked read-modify-write, and no cache
//! line shared with another writer); a scrape reads every worker's values
//! and adds them up ([`Registry::merged`]). Each worker reaches its
//! counters through [`WorkerStats`], its own cache of them (by route index,
//! peer id and rate-limit zone id; a Lua VM keeps its scripts' by script
//! index), so a request looks nothing up by name. With `[admin] metrics =
//! false` (or no admin listener) the snapshot says so and the request path
//! skips the counting.
//!
//! What is read rather than counted (peer health, reloads, the config
//! generation, cache zones, Redis fallbacks, managed worker pools) is
//! taken from the shared state at scrape time ([`read`]) and costs
//! requests nothing here.
//!
//! Layout: `counters` (routes, peers, and the per-worker maps), `conns`
//! (client connections by protocol), `steps` (rate-limit zones, Lua
//! handlers), `histogram` (latency buckets), `local` ([`WorkerStats`]),
//! [`read`] (the scrape's readings from the shared state) and [`expose`]
//! (the text format).
//!
//! Label values are bounded: route names (conf.d `name` or `file:line`),
//! upstream names, peer addresses from the config, zone, pool and script
//! names from the config; never a request path or a client address. This
//! module knows nothing of HTTP beyond status and method classes (but
//! [`read`], the glue to the shared state).

mod counters;
mod histogram;
mod conns;
mod steps;
mod local;
pub mod read;
pub mod expose;

pub use conns::{ConnCounters, ConnValues, ListenerKey, OpenConn, Protocol};
pub use counters::{
    LuaKey, MethodClass, PeerCounters, PeerValues, RouteCounters, RouteValues, WorkerMetrics,
};
pub use histogram::{Buckets, HistogramValues, LATENCY, LUA_PHASE};
pub use local::WorkerStats;
pub use steps::{LimitCounters, LimitValues, LuaCounters, LuaEnd, LuaValues};

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

/// The label value of requests no route served (refused by the checks,
/// 404, 405): route names are never empty.
pub const UNROUTED: &str = "";

/// The label value of a peer a Lua `balancer` named outside the
/// upstream's list (any address: not a label value).
pub const OTHER_PEER: &str = "(balancer)";

/// Every worker's counters, for the scrape. Workers register at start and
/// stay listed (their counts stay in the totals after they exit).
#[derive(Debug, Default)]
pub struct Registry {
    workers: Mutex<Vec<Arc<WorkerMetrics>>>,
}

/// The workers' counts added up, by label values.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Merged {
    /// By route name.
    pub routes: BTreeMap<Arc<str>, RouteValues>,
    /// By upstream name and peer label.
    pub peers: BTreeMap<(Arc<str>, Arc<str>), PeerValues>,
    /// Client connections by listener and whether it is TLS.
    pub listeners: BTreeMap<ListenerKey, ConnValues>,
    /// Rate-limit decisions by zone name.
    pub limits: BTreeMap<Arc<str>, LimitValues>,
    /// Lua handler runs by script and phase.
    pub lua: BTreeMap<LuaKey, LuaValues>,
}

impl Registry {
    /// Lists a worker's counters.
    pub fn register(&self, worker: Arc<WorkerMetrics>) {
        self.lock().push(worker);
    }

    /// The sum of every worker's counts.
    pub fn merged(&self) -> Merged {
        let workers = self.lock().clone();
        let mut merged = Merged::default();
        for w in &workers {
            w.add_to(&mut merged);
        }
        merged
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Arc<WorkerMetrics>>> {
        self.workers.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_scrape_adds_up_every_workers_counts_by_label() {
        let registry = Registry::default();
        let (one, two) = (WorkerStats::new(), WorkerStats::new());
        registry.register(one.shared());
        registry.register(two.shared());
        let ms = Duration::from_millis(3);
        one.route(1, 0, "api")
            .record(MethodClass::Get, 200, ms, 0, 10);
        one.route(1, 0, "api")
            .record(MethodClass::Get, 204, ms, 0, 5);
        two.route(1, 0, "api")
            .record(MethodClass::Get, 200, ms, 7, 1);
        two.route(1, 1, "web")
            .record(MethodClass::Post, 503, Duration::from_secs(20), 0, 0);
        one.unrouted().record(MethodClass::Other, 404, ms, 0, 0);

        let merged = registry.merged();
        let api = &merged.routes[&Arc::from("api")];
        assert_eq!(api.requests[MethodClass::Get as usize][1], 3);
        assert_eq!(api.requests.iter().flatten().sum::<u64>(), 3);
        assert_eq!((api.request_bytes, api.response_bytes), (7, 16));
        assert_eq!(api.duration.count, 3);
        assert_eq!(api.duration.sum_ns, 9_000_000);
        // 3 ms lands in the 5 ms bucket (the first bound it is under).
        let at = LATENCY.seconds.iter().position(|b| *b == 0.005).unwrap();
        assert_eq!(api.duration.buckets[at], 3);
        let web = &merged.routes[&Arc::from("web")];
        assert_eq!(web.requests[MethodClass::Post as usize][4], 1);
        // Past the last bound: the +Inf bucket.
        assert_eq!(web.duration.buckets[LATENCY.seconds.len()], 1);
        assert_eq!(
            merged.routes[&Arc::from(UNROUTED)].requests[MethodClass::Other as usize][3],
            1
        );
    }

    #[test]
    fn peers_are_counted_per_upstream_and_peer_and_merged_across_workers() {
        let registry = Registry::default();
        let (one, two) = (WorkerStats::new(), WorkerStats::new());
        registry.register(one.shared());
        registry.register(two.shared());
        let label = || ("app", "127.0.0.1:1".to_owned());
        one.peer(Some(7), label)
            .answered(200, Duration::from_millis(1));
        two.peer(Some(7), label)
            .answered(502, Duration::from_millis(1));
        two.peer(Some(7), label).connect_error();
        // Another peer id with the same labels (kept across a reload as a
        // new peer) adds to the same series.
        two.peer(Some(8), label).retry();
        one.peer(None, || ("app", OTHER_PEER.to_owned())).timeout();
        let a = one.shared().listener("127.0.0.1:80", false).open();
        let b = two.shared().listener("127.0.0.1:80", false).open();
        let c = two.shared().listener("127.0.0.1:80", false).open();
        drop((a, b));

        let merged = registry.merged();
        let key = (Arc::from("app"), Arc::from("127.0.0.1:1"));
        let p = &merged.peers[&key];
        assert_eq!(p.responses, [0, 1, 0, 0, 1]);
        assert_eq!(p.response_time.count, 2);
        assert_eq!((p.connect_errors, p.retries, p.timeouts), (1, 1, 0));
        let other = &merged.peers[&(Arc::from("app"), Arc::from(OTHER_PEER))];
        assert_eq!(other.timeouts, 1);
        let conns = merged.listeners[&(Arc::from("127.0.0.1:80"), false)];
        assert_eq!((conns.accepted, conns.closed), (3, [2, 0, 0]));
        assert_eq!(conns.open(Protocol::None), 1);
        drop(c);
    }

    #[test]
    fn a_new_generation_finds_the_routes_counters_by_name() {
        let stats = WorkerStats::new();
        let before = stats.route(1, 0, "api");
        before.record(MethodClass::Get, 200, Duration::ZERO, 0, 0);
        // After a reload the route is at another index: same counters.
        let after = stats.route(2, 3, "api");
        assert!(Arc::ptr_eq(&before, &after));
        assert!(!Arc::ptr_eq(&after, &stats.route(2, 0, "other")));
    }

    #[test]
    fn zones_and_scripts_are_counted_per_worker_and_merged_by_name() {
        let registry = Registry::default();
        let (one, two) = (WorkerStats::new(), WorkerStats::new());
        registry.register(one.shared());
        registry.register(two.shared());
        one.limit(7, "per_ip", LimitCounters::allowed);
        one.limit(7, "per_ip", LimitCounters::limited);
        // A zone rebuilt by a reload (a new id) counts on under its name.
        two.limit(9, "per_ip", LimitCounters::allowed);
        let lua = one.shared().lua("lua/auth.lua", "access");
        lua.ran(LuaEnd::Ok, Duration::from_micros(40));
        lua.ran(LuaEnd::Error, Duration::from_micros(40));
        two.shared()
            .lua("lua/auth.lua", "access")
            .ran(LuaEnd::Overrun, Duration::from_millis(60));
        two.shared()
            .lua("lua/auth.lua", "log")
            .ran(LuaEnd::Ok, Duration::ZERO);

        let merged = registry.merged();
        let zone = merged.limits[&Arc::from("per_ip")];
        assert_eq!((zone.allowed, zone.limited), (2, 1));
        let access = &merged.lua[&(Arc::from("lua/auth.lua"), "access")];
        assert_eq!((access.errors, access.overruns), (1, 1));
        assert_eq!(access.duration.count, 3);
        let at = LUA_PHASE
            .seconds
            .iter()
            .position(|b| *b == 0.00005)
            .unwrap();
        assert_eq!(access.duration.buckets[at], 2, "40 µs: the 50 µs bucket");
        assert_eq!(merged.lua[&(Arc::from("lua/auth.lua"), "log")].errors, 0);
    }

    #[test]
    fn a_worker_finds_a_zones_counters_by_id_and_forgets_the_gone() {
        let stats = WorkerStats::new();
        let registry = Registry::default();
        registry.register(stats.shared());
        stats.limit(1, "a", LimitCounters::allowed);
        stats.sweep_limits(|id| id != 1);
        // Forgotten by id, its counts stay (found again by name).
        stats.limit(2, "a", LimitCounters::allowed);
        assert_eq!(registry.merged().limits[&Arc::from("a")].allowed, 2);
    }
}

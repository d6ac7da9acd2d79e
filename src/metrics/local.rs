//! [`WorkerStats`]: how one worker thread reaches its own counters without
//! looking names up per request: routes by their index in the snapshot
//! serving (forgotten when another generation serves), peers and
//! rate-limit zones by their process-unique ids. A miss asks the worker's [`WorkerMetrics`] by label
//! values, so a route or peer kept across a reload counts on in the same
//! series.

use std::cell::{Cell, RefCell};
use std::sync::Arc;

use super::{LimitCounters, PeerCounters, RouteCounters, UNROUTED, WorkerMetrics};

/// One worker's way to its counters; part of its
/// [`WorkerLocal`](crate::worker_local::WorkerLocal).
#[derive(Debug, Default)]
pub struct WorkerStats {
    shared: Arc<WorkerMetrics>,
    /// The generation `routes` is indexed for.
    generation: Cell<u64>,
    /// By the route's index in that generation's snapshot.
    routes: RefCell<Vec<Option<Arc<RouteCounters>>>>,
    /// Requests no route served.
    unrouted: RefCell<Option<Arc<RouteCounters>>>,
    /// By peer id: a list, not a hash map, since a worker meets few peers
    /// (a scan of a few ids costs less than hashing one).
    peers: RefCell<Vec<(u64, Arc<PeerCounters>)>>,
    /// By rate-limit zone id, a list for the same reason.
    limits: RefCell<Vec<(u64, Arc<LimitCounters>)>>,
}

impl WorkerStats {
    /// A worker's empty counters (to be [registered](super::Registry::register)
    /// for scrapes to see them).
    pub fn new() -> WorkerStats {
        WorkerStats::default()
    }

    /// The counters a scrape reads.
    pub fn shared(&self) -> Arc<WorkerMetrics> {
        self.shared.clone()
    }

    /// The counters of the route at `index` in the snapshot of
    /// `generation`, named `name`.
    pub fn route(&self, generation: u64, index: usize, name: &str) -> Arc<RouteCounters> {
        let mut routes = self.routes.borrow_mut();
        if self.generation.get() != generation {
            self.generation.set(generation);
            routes.clear();
        }
        if let Some(Some(c)) = routes.get(index) {
            return c.clone();
        }
        let c = self.shared.route(name);
        if routes.len() <= index {
            routes.resize(index + 1, None);
        }
        routes[index] = Some(c.clone());
        c
    }

    /// The counters of requests no route served.
    pub fn unrouted(&self) -> Arc<RouteCounters> {
        self.unrouted
            .borrow_mut()
            .get_or_insert_with(|| self.shared.route(UNROUTED))
            .clone()
    }

    /// The counters of the peer with `id` (`None`: a peer outside the
    /// upstream's list, which has no lasting id); `labels` gives the
    /// upstream's name and the peer's label when they are not known yet.
    pub fn peer<'n>(
        &self,
        id: Option<u64>,
        labels: impl FnOnce() -> (&'n str, String),
    ) -> Arc<PeerCounters> {
        let Some(id) = id else {
            let (upstream, peer) = labels();
            return self.shared.peer(upstream, &peer);
        };
        let mut peers = self.peers.borrow_mut();
        if let Some((_, c)) = peers.iter().find(|(known, _)| *known == id) {
            return c.clone();
        }
        let (upstream, peer) = labels();
        let c = self.shared.peer(upstream, &peer);
        peers.push((id, c.clone()));
        c
    }

    /// Forgets the peers whose id `live` does not know (after reloads and
    /// managed workers' restarts; their counts stay in the totals).
    pub fn sweep_peers(&self, live: impl Fn(u64) -> bool) {
        self.peers.borrow_mut().retain(|(id, _)| live(*id));
    }

    /// Counts with the counters of the rate-limit zone with `id`, named
    /// `name` (no reference count is taken: a route's zones are counted
    /// on every limited request).
    #[inline]
    pub fn limit(&self, id: u64, name: &str, count: impl FnOnce(&LimitCounters)) {
        let mut limits = self.limits.borrow_mut();
        if let Some((_, c)) = limits.iter().find(|(known, _)| *known == id) {
            return count(c);
        }
        let c = self.shared.limit(name);
        count(&c);
        limits.push((id, c));
    }

    /// Forgets the rate-limit zones whose id `live` does not know (after
    /// reloads; their counts stay in the totals).
    pub fn sweep_limits(&self, live: impl Fn(u64) -> bool) {
        self.limits.borrow_mut().retain(|(id, _)| live(*id));
    }
}

//! The counters one worker thread writes ([`WorkerMetrics`]: per route,
//! per upstream peer, with the others of [`super::conns`] and
//! [`super::steps`]) and their values as a scrape reads and adds them
//! up. Only the owning thread writes a counter, so an increment is a
//! relaxed load and store ([`add`]): no locked instruction, and a reader
//! on another thread sees each value whole.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use super::Merged;
use super::conns::{ConnCounters, ListenerKey};
use super::histogram::{Histogram, HistogramValues, LATENCY};
use super::steps::{LimitCounters, LuaCounters};

/// Status classes counted: 1xx to 5xx.
pub const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// Adds `n` to a counter only the calling thread writes (see the module
/// docs).
#[inline]
pub(super) fn add(counter: &AtomicU64, n: u64) {
    counter.store(
        counter.load(Ordering::Relaxed).wrapping_add(n),
        Ordering::Relaxed,
    );
}

pub(super) fn read(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

/// The index of `status`'s class in [`STATUS_CLASSES`] (anything past
/// 599 counts as 5xx).
#[inline]
fn status_class(status: u16) -> usize {
    usize::from(status / 100).clamp(1, 5) - 1
}

/// A request method, as the metrics group them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum MethodClass {
    /// GET.
    Get,
    /// HEAD.
    Head,
    /// POST.
    Post,
    /// PUT.
    Put,
    /// DELETE.
    Delete,
    /// Any other method.
    Other,
}

impl MethodClass {
    /// Every class, in index order.
    pub const ALL: [MethodClass; 6] = [
        MethodClass::Get,
        MethodClass::Head,
        MethodClass::Post,
        MethodClass::Put,
        MethodClass::Delete,
        MethodClass::Other,
    ];

    /// The class of `method`.
    pub fn of(method: &http::Method) -> MethodClass {
        match *method {
            http::Method::GET => MethodClass::Get,
            http::Method::HEAD => MethodClass::Head,
            http::Method::POST => MethodClass::Post,
            http::Method::PUT => MethodClass::Put,
            http::Method::DELETE => MethodClass::Delete,
            _ => MethodClass::Other,
        }
    }

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            MethodClass::Get => "GET",
            MethodClass::Head => "HEAD",
            MethodClass::Post => "POST",
            MethodClass::Put => "PUT",
            MethodClass::Delete => "DELETE",
            MethodClass::Other => "OTHER",
        }
    }
}

/// One route's counters on one worker.
#[derive(Debug, Default)]
pub struct RouteCounters {
    /// Requests by method class and status class.
    requests: [[AtomicU64; 5]; 6],
    /// From the request's arrival to the end of its response body.
    duration: Histogram,
    request_bytes: AtomicU64,
    response_bytes: AtomicU64,
}

impl RouteCounters {
    /// Counts a request that was answered `status` and took `elapsed`.
    #[inline]
    pub fn record(
        &self,
        method: MethodClass,
        status: u16,
        elapsed: Duration,
        request_bytes: u64,
        response_bytes: u64,
    ) {
        let by_method = &self.requests[method as usize];
        add(&by_method[status_class(status)], 1);
        self.duration.observe(elapsed, &LATENCY);
        if request_bytes > 0 {
            add(&self.request_bytes, request_bytes);
        }
        add(&self.response_bytes, response_bytes);
    }

    fn values(&self) -> RouteValues {
        RouteValues {
            requests: std::array::from_fn(|m| std::array::from_fn(|s| read(&self.requests[m][s]))),
            duration: self.duration.values(),
            request_bytes: read(&self.request_bytes),
            response_bytes: read(&self.response_bytes),
        }
    }
}

/// A route's values.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RouteValues {
    /// Requests by [`MethodClass`] and status class ([`STATUS_CLASSES`]).
    pub requests: [[u64; 5]; 6],
    /// Request durations.
    pub duration: HistogramValues,
    /// Request body bytes (as declared by `Content-Length`).
    pub request_bytes: u64,
    /// Response body bytes sent.
    pub response_bytes: u64,
}

impl RouteValues {
    fn add(&mut self, other: &RouteValues) {
        for (a, b) in self.requests.iter_mut().zip(&other.requests) {
            for (x, y) in a.iter_mut().zip(b) {
                *x += y;
            }
        }
        self.duration.add(&other.duration);
        self.request_bytes += other.request_bytes;
        self.response_bytes += other.response_bytes;
    }
}

/// One upstream peer's counters on one worker (every try of every
/// protocol counts here, see `upstream::call::forward`).
#[derive(Debug, Default)]
pub struct PeerCounters {
    /// Answers by status class.
    responses: [AtomicU64; 5],
    /// From the try's start to the answer's head.
    response_time: Histogram,
    connect_errors: AtomicU64,
    timeouts: AtomicU64,
    retries: AtomicU64,
}

impl PeerCounters {
    /// The peer answered `status` after `elapsed`.
    #[inline]
    pub fn answered(&self, status: u16, elapsed: Duration) {
        add(&self.responses[status_class(status)], 1);
        self.response_time.observe(elapsed, &LATENCY);
    }

    /// Connecting to the peer failed or timed out.
    pub fn connect_error(&self) {
        add(&self.connect_errors, 1);
    }

    /// A try on the peer timed out (connecting, sending or reading).
    pub fn timeout(&self) {
        add(&self.timeouts, 1);
    }

    /// After this peer's try failed, the request went on to another try.
    pub fn retry(&self) {
        add(&self.retries, 1);
    }

    fn values(&self) -> PeerValues {
        PeerValues {
            responses: std::array::from_fn(|i| read(&self.responses[i])),
            response_time: self.response_time.values(),
            connect_errors: read(&self.connect_errors),
            timeouts: read(&self.timeouts),
            retries: read(&self.retries),
        }
    }
}

/// A peer's values.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PeerValues {
    /// Answers by status class ([`STATUS_CLASSES`]).
    pub responses: [u64; 5],
    /// Time to the answer's head.
    pub response_time: HistogramValues,
    /// Tries that could not connect (timeouts included).
    pub connect_errors: u64,
    /// Tries that timed out (connect, send, read, a gRPC deadline).
    pub timeouts: u64,
    /// Tries that failed and were followed by another.
    pub retries: u64,
}

impl PeerValues {
    fn add(&mut self, other: &PeerValues) {
        for (a, b) in self.responses.iter_mut().zip(&other.responses) {
            *a += b;
        }
        self.response_time.add(&other.response_time);
        self.connect_errors += other.connect_errors;
        self.timeouts += other.timeouts;
        self.retries += other.retries;
    }
}

/// Everything one worker thread counts, by label values; the maps are
/// locked when a worker meets a route, peer, zone or script the first
/// time (see [`super::WorkerStats`]) and when a scrape reads them, never
/// per request.
#[derive(Debug, Default)]
pub struct WorkerMetrics {
    routes: Mutex<HashMap<Arc<str>, Arc<RouteCounters>>>,
    peers: Mutex<HashMap<PeerKey, Arc<PeerCounters>>>,
    listeners: Mutex<HashMap<ListenerKey, Arc<ConnCounters>>>,
    limits: Mutex<HashMap<Arc<str>, Arc<LimitCounters>>>,
    lua: Mutex<HashMap<LuaKey, Arc<LuaCounters>>>,
}

/// A peer's label values: its upstream's name and its own.
pub type PeerKey = (Arc<str>, Arc<str>);

/// A Lua handler's label values: its script and its phase.
pub type LuaKey = (Arc<str>, &'static str);

fn lock<K, V>(map: &Mutex<HashMap<K, V>>) -> std::sync::MutexGuard<'_, HashMap<K, V>> {
    map.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The map's entries, copied out so the lock is not held while they are
/// read.
fn entries<K: Clone, V>(map: &Mutex<HashMap<K, Arc<V>>>) -> Vec<(K, Arc<V>)> {
    lock(map)
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

impl WorkerMetrics {
    /// The counters of the route named `name` (made on first use).
    pub fn route(&self, name: &str) -> Arc<RouteCounters> {
        let mut routes = lock(&self.routes);
        if let Some(c) = routes.get(name) {
            return c.clone();
        }
        let c = Arc::new(RouteCounters::default());
        routes.insert(Arc::from(name), c.clone());
        c
    }

    /// The counters of `peer` of `upstream` (made on first use).
    pub fn peer(&self, upstream: &str, peer: &str) -> Arc<PeerCounters> {
        let key = (Arc::from(upstream), Arc::from(peer));
        lock(&self.peers).entry(key).or_default().clone()
    }

    /// The connection counters of the listener at `addr` (made on first
    /// use).
    pub fn listener(&self, addr: &str, tls: bool) -> Arc<ConnCounters> {
        let key = (Arc::from(addr), tls);
        lock(&self.listeners).entry(key).or_default().clone()
    }

    /// The counters of the rate-limit zone named `zone` (made on first
    /// use).
    pub fn limit(&self, zone: &str) -> Arc<LimitCounters> {
        lock(&self.limits)
            .entry(Arc::from(zone))
            .or_default()
            .clone()
    }

    /// The counters of `script`'s runs in `phase` (made on first use).
    pub fn lua(&self, script: &str, phase: &'static str) -> Arc<LuaCounters> {
        let key = (Arc::from(script), phase);
        lock(&self.lua).entry(key).or_default().clone()
    }

    /// Adds this worker's values to `merged`.
    pub(super) fn add_to(&self, merged: &mut Merged) {
        for (name, c) in entries(&self.routes) {
            merged.routes.entry(name).or_default().add(&c.values());
        }
        for (key, c) in entries(&self.peers) {
            merged.peers.entry(key).or_default().add(&c.values());
        }
        for (key, c) in entries(&self.listeners) {
            merged.listeners.entry(key).or_default().add(&c.values());
        }
        for (zone, c) in entries(&self.limits) {
            merged.limits.entry(zone).or_default().add(&c.values());
        }
        for (key, c) in entries(&self.lua) {
            merged.lua.entry(key).or_default().add(&c.values());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_fall_in_their_class() {
        assert_eq!(status_class(101), 0);
        assert_eq!(status_class(200), 1);
        assert_eq!(status_class(399), 2);
        assert_eq!(status_class(404), 3);
        assert_eq!(status_class(599), 4);
        assert_eq!(status_class(999), 4);
    }
}

//! The counters one worker thread writes ([`WorkerMetrics`]: per route,
//! per upstream peer) and their values as a scrape reads and adds them
//! up. Only the owning thread writes a counter, so an increment is a
//! relaxed load and store ([`add`]): no locked instruction, and a reader
//! on another thread sees each value whole.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use super::Merged;

/// Upper bounds (seconds) of the latency histograms' buckets; one more
/// bucket (+Inf) takes the rest.
pub const DURATION_BUCKETS: [f64; 13] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// [`DURATION_BUCKETS`] in nanoseconds: an observation is placed by
/// comparing integers, without a conversion to seconds.
const BOUNDS_NS: [u64; 13] = [
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    10_000_000_000,
];

/// Buckets with the +Inf one.
const BUCKETS: usize = DURATION_BUCKETS.len() + 1;

/// Status classes counted: 1xx to 5xx.
pub const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// Adds `n` to a counter only the calling thread writes (see the module
/// docs).
#[inline]
fn add(counter: &AtomicU64, n: u64) {
    counter.store(
        counter.load(Ordering::Relaxed).wrapping_add(n),
        Ordering::Relaxed,
    );
}

fn read(counter: &AtomicU64) -> u64 {
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

/// A latency histogram with [`DURATION_BUCKETS`].
#[derive(Debug, Default)]
struct Histogram {
    /// Observations per bucket (not cumulative), the last one +Inf.
    buckets: [AtomicU64; BUCKETS],
    count: AtomicU64,
    sum_ns: AtomicU64,
}

impl Histogram {
    #[inline]
    fn observe(&self, d: Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        let i = BOUNDS_NS.partition_point(|b| *b < ns);
        if let Some(b) = self.buckets.get(i) {
            add(b, 1);
        }
        add(&self.count, 1);
        add(&self.sum_ns, ns);
    }

    fn values(&self) -> HistogramValues {
        HistogramValues {
            buckets: std::array::from_fn(|i| read(&self.buckets[i])),
            count: read(&self.count),
            sum_ns: read(&self.sum_ns),
        }
    }
}

/// A histogram's values.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct HistogramValues {
    /// Observations per bucket of [`DURATION_BUCKETS`] (not cumulative),
    /// the last one +Inf.
    pub buckets: [u64; BUCKETS],
    /// Observations.
    pub count: u64,
    /// Their sum in nanoseconds.
    pub sum_ns: u64,
}

impl HistogramValues {
    fn add(&mut self, other: &HistogramValues) {
        for (a, b) in self.buckets.iter_mut().zip(&other.buckets) {
            *a += b;
        }
        self.count += other.count;
        self.sum_ns += other.sum_ns;
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
        self.duration.observe(elapsed);
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
        self.response_time.observe(elapsed);
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

/// One listener's client connections on one worker.
#[derive(Debug, Default)]
pub struct ConnCounters {
    accepted: AtomicU64,
    closed: AtomicU64,
}

impl ConnCounters {
    /// Counts an accepted connection; the guard counts it closed when
    /// dropped (on the same worker thread: the connection's task ends there).
    pub fn open(self: &Arc<Self>) -> OpenConn {
        add(&self.accepted, 1);
        OpenConn(self.clone())
    }
}

/// A client connection counted open until dropped.
#[derive(Debug)]
pub struct OpenConn(Arc<ConnCounters>);

impl Drop for OpenConn {
    fn drop(&mut self) {
        add(&self.0.closed, 1);
    }
}

/// A listener's connection counts.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ConnValues {
    /// Connections accepted.
    pub accepted: u64,
    /// Connections closed.
    pub closed: u64,
}

/// A listener's label values: its configured address and `"tcp"` or
/// `"tls"`.
pub type ListenerKey = (Arc<str>, &'static str);

/// Everything one worker thread counts, by label values; the maps are
/// locked when a worker meets a route or peer the first time (see
/// [`super::WorkerStats`]) and when a scrape reads them, never per request.
#[derive(Debug, Default)]
pub struct WorkerMetrics {
    routes: Mutex<HashMap<Arc<str>, Arc<RouteCounters>>>,
    peers: Mutex<HashMap<PeerKey, Arc<PeerCounters>>>,
    listeners: Mutex<HashMap<ListenerKey, Arc<ConnCounters>>>,
}

/// A peer's label values: its upstream's name and its own.
pub type PeerKey = (Arc<str>, Arc<str>);

impl WorkerMetrics {
    /// The counters of the route named `name` (made on first use).
    pub fn route(&self, name: &str) -> Arc<RouteCounters> {
        let mut routes = self.routes.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(c) = routes.get(name) {
            return c.clone();
        }
        let c = Arc::new(RouteCounters::default());
        routes.insert(Arc::from(name), c.clone());
        c
    }

    /// The counters of `peer` of `upstream` (made on first use).
    pub fn peer(&self, upstream: &str, peer: &str) -> Arc<PeerCounters> {
        let mut peers = self.peers.lock().unwrap_or_else(PoisonError::into_inner);
        let key = (Arc::from(upstream), Arc::from(peer));
        peers.entry(key).or_default().clone()
    }

    /// The connection counters of the listener at `addr` (made on first
    /// use).
    pub fn listener(&self, addr: &str, tls: bool) -> Arc<ConnCounters> {
        let mut map = self
            .listeners
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let key = (Arc::from(addr), if tls { "tls" } else { "tcp" });
        map.entry(key).or_default().clone()
    }

    /// Adds this worker's values to `merged`.
    pub(super) fn add_to(&self, merged: &mut Merged) {
        let routes: Vec<_> = {
            let map = self.routes.lock().unwrap_or_else(PoisonError::into_inner);
            map.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
        };
        for (name, c) in routes {
            merged.routes.entry(name).or_default().add(&c.values());
        }
        let peers: Vec<_> = {
            let map = self.peers.lock().unwrap_or_else(PoisonError::into_inner);
            map.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
        };
        for (key, c) in peers {
            merged.peers.entry(key).or_default().add(&c.values());
        }
        let listeners: Vec<_> = {
            let map = self
                .listeners
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            map.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
        };
        for (key, c) in listeners {
            let v = merged.listeners.entry(key).or_default();
            v.accepted += read(&c.accepted);
            v.closed += read(&c.closed);
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

    #[test]
    fn the_bounds_in_nanoseconds_are_the_bounds_in_seconds() {
        for (ns, s) in BOUNDS_NS.iter().zip(DURATION_BUCKETS) {
            assert_eq!(Duration::from_nanos(*ns), Duration::from_secs_f64(s));
        }
    }

    #[test]
    fn a_bound_is_inclusive() {
        let h = Histogram::default();
        h.observe(Duration::from_millis(1));
        h.observe(Duration::from_micros(1001));
        let v = h.values();
        assert_eq!(v.buckets[0], 1);
        assert_eq!(v.buckets[1], 1);
        assert_eq!(v.count, 2);
        assert_eq!(v.sum_ns, 2_001_000);
    }
}

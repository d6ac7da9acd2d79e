//! Latency histograms as one worker thread writes them ([`Histogram`]) and
//! as a scrape adds them up ([`HistogramValues`]), with their bucket
//! bounds ([`Buckets`]): one set for request and upstream latencies, one
//! for Lua phase handlers, which take microseconds.

use std::sync::atomic::AtomicU64;
use std::time::Duration;

use super::counters::{add, read};

/// Bounds per histogram; one more bucket (+Inf) takes the rest.
const BOUNDS: usize = 13;

/// Buckets with the +Inf one.
pub const BUCKETS: usize = BOUNDS + 1;

/// A histogram's bucket bounds, in seconds (as exposed) and in
/// nanoseconds (as compared: an observation is placed by comparing
/// integers, without a conversion to seconds).
#[derive(Debug)]
pub struct Buckets {
    /// Upper bounds in seconds.
    pub seconds: [f64; BOUNDS],
    ns: [u64; BOUNDS],
}

/// Requests and upstream tries: 1 ms to 10 s.
pub const LATENCY: Buckets = Buckets {
    seconds: [
        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    ],
    ns: [
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
    ],
};

/// Lua phase handlers: 25 µs to 1 s (a handler typically takes tens of
/// microseconds, and `time_budget` defaults to 50 ms; one that waits on a
/// socket or `ngx.sleep` takes longer).
pub const LUA_PHASE: Buckets = Buckets {
    seconds: [
        0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
        0.25, 1.0,
    ],
    ns: [
        25_000,
        50_000,
        100_000,
        250_000,
        500_000,
        1_000_000,
        2_500_000,
        5_000_000,
        10_000_000,
        25_000_000,
        50_000_000,
        250_000_000,
        1_000_000_000,
    ],
};

/// One histogram written by one thread (see [`add`]).
#[derive(Debug, Default)]
pub struct Histogram {
    /// Observations per bucket (not cumulative), the last one +Inf.
    buckets: [AtomicU64; BUCKETS],
    count: AtomicU64,
    sum_ns: AtomicU64,
}

impl Histogram {
    /// Counts one observation of `d` in the bucket of `bounds` it falls in.
    #[inline]
    pub fn observe(&self, d: Duration, bounds: &Buckets) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        let i = bounds.ns.partition_point(|b| *b < ns);
        if let Some(b) = self.buckets.get(i) {
            add(b, 1);
        }
        add(&self.count, 1);
        add(&self.sum_ns, ns);
    }

    /// Its values now.
    pub fn values(&self) -> HistogramValues {
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
    /// Observations per bucket (not cumulative), the last one +Inf.
    pub buckets: [u64; BUCKETS],
    /// Observations.
    pub count: u64,
    /// Their sum in nanoseconds.
    pub sum_ns: u64,
}

impl HistogramValues {
    /// Adds another worker's values.
    pub fn add(&mut self, other: &HistogramValues) {
        for (a, b) in self.buckets.iter_mut().zip(&other.buckets) {
            *a += b;
        }
        self.count += other.count;
        self.sum_ns += other.sum_ns;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bounds_in_nanoseconds_are_the_bounds_in_seconds() {
        for buckets in [&LATENCY, &LUA_PHASE] {
            for (ns, s) in buckets.ns.iter().zip(buckets.seconds) {
                assert_eq!(Duration::from_nanos(*ns), Duration::from_secs_f64(s));
            }
            assert!(buckets.ns.is_sorted());
        }
    }

    #[test]
    fn a_bound_is_inclusive() {
        let h = Histogram::default();
        h.observe(Duration::from_millis(1), &LATENCY);
        h.observe(Duration::from_micros(1001), &LATENCY);
        let v = h.values();
        assert_eq!(v.buckets[0], 1);
        assert_eq!(v.buckets[1], 1);
        assert_eq!(v.count, 2);
        assert_eq!(v.sum_ns, 2_001_000);
    }

    #[test]
    fn lua_handlers_fall_in_microsecond_buckets_and_the_slow_in_inf() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(30), &LUA_PHASE);
        h.observe(Duration::from_secs(2), &LUA_PHASE);
        let v = h.values();
        assert_eq!(v.buckets[1], 1, "30 µs: the 50 µs bucket");
        assert_eq!(v.buckets[BUCKETS - 1], 1);
    }
}

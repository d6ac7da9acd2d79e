//! Request rate and 5xx share over the last minute, for `/status` and the
//! status page. The workers' request counters only ever grow
//! ([`crate::metrics`]); a task on the control thread writes their totals
//! down every [`EVERY`] ([`sample`]), and a report compares the totals now
//! with the oldest sample of the last [`WINDOW`]. Nothing here runs on the
//! request path.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::metrics::{Merged, RouteValues};
use crate::state::Shared;

/// How often the totals are written down.
pub const EVERY: Duration = Duration::from_secs(2);

/// The span rates are taken over.
pub const WINDOW: Duration = Duration::from_secs(60);

/// The index of 5xx among the status classes.
const CLASS_5XX: usize = 4;

/// Requests and 5xx answers counted so far.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Count {
    requests: u64,
    errors: u64,
}

impl Count {
    fn of(values: &RouteValues) -> Count {
        Count {
            requests: values.requests.iter().flatten().sum(),
            errors: values.requests.iter().map(|m| m[CLASS_5XX]).sum(),
        }
    }

    fn add(&mut self, other: Count) {
        self.requests += other.requests;
        self.errors += other.errors;
    }
}

/// Every counter's total at one moment: all requests, and by route name.
#[derive(Debug, Default)]
struct Totals {
    all: Count,
    routes: BTreeMap<Arc<str>, Count>,
}

impl Totals {
    fn of(merged: &Merged) -> Totals {
        let mut totals = Totals::default();
        for (name, values) in &merged.routes {
            let count = Count::of(values);
            totals.all.add(count);
            totals.routes.insert(name.clone(), count);
        }
        totals
    }
}

/// What happened over the window.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Rate {
    /// The span measured, in seconds (up to [`WINDOW`]; shorter just
    /// after the admin listener started).
    pub window_secs: f64,
    /// Requests answered in it.
    pub requests: u64,
    /// `requests` per second.
    pub requests_per_sec: f64,
    /// Of those, answered with a 5xx status.
    pub errors_5xx: u64,
    /// `errors_5xx / requests`; `None` without requests.
    pub error_ratio: Option<f64>,
}

impl Rate {
    fn between(then: Count, now: Count, window: Duration) -> Rate {
        let requests = now.requests.saturating_sub(then.requests);
        let errors_5xx = now.errors.saturating_sub(then.errors);
        let window_secs = window.as_secs_f64();
        Rate {
            window_secs,
            requests,
            // Under a second of history is too little to divide by.
            requests_per_sec: requests as f64 / window_secs.max(1.0),
            errors_5xx,
            error_ratio: (requests > 0).then(|| errors_5xx as f64 / requests as f64),
        }
    }
}

/// The rates over the window, in all and by route name.
#[derive(Debug, Clone, PartialEq)]
pub struct Rates {
    /// Every request (unrouted ones too).
    pub all: Rate,
    /// By route name.
    pub routes: BTreeMap<Arc<str>, Rate>,
}

/// The samples of the last [`WINDOW`], oldest first.
#[derive(Debug, Default)]
pub struct History {
    samples: Mutex<VecDeque<(Instant, Totals)>>,
}

impl History {
    /// Writes down the totals of `merged` as of `at`, and forgets samples
    /// that fell out of the window.
    pub fn record(&self, merged: &Merged, at: Instant) {
        let mut samples = self.lock();
        while samples
            .front()
            .is_some_and(|(t, _)| at.saturating_duration_since(*t) > WINDOW)
        {
            samples.pop_front();
        }
        samples.push_back((at, Totals::of(merged)));
    }

    /// The rates from the oldest sample within the window to `merged`,
    /// the totals at `now` (no history: an empty window).
    pub fn rates(&self, merged: &Merged, now: Instant) -> Rates {
        let current = Totals::of(merged);
        let samples = self.lock();
        let base = samples
            .iter()
            .find(|(t, _)| now.saturating_duration_since(*t) <= WINDOW);
        let (window, then) = match base {
            Some((t, totals)) => (now.saturating_duration_since(*t), Some(totals)),
            None => (Duration::ZERO, None),
        };
        let then_all = then.map_or(current.all, |t| t.all);
        let routes = current
            .routes
            .iter()
            .map(|(name, now_count)| {
                let then_count = match then {
                    // A route new since the sample started from nothing.
                    Some(t) => t.routes.get(name).copied().unwrap_or_default(),
                    None => *now_count,
                };
                (name.clone(), Rate::between(then_count, *now_count, window))
            })
            .collect();
        Rates {
            all: Rate::between(then_all, current.all, window),
            routes,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<(Instant, Totals)>> {
        self.samples.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Writes the workers' totals into `history` now and every [`EVERY`]
/// until `stop`. Runs on the control thread's runtime.
pub async fn sample(history: Arc<History>, shared: Arc<Shared>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => history.record(&shared.metrics.merged(), Instant::now()),
            () = stop.cancelled() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Merged counters with `(route, 2xx, 5xx)` GET answers.
    fn merged(routes: &[(&str, u64, u64)]) -> Merged {
        let mut m = Merged::default();
        for (name, ok, failed) in routes {
            let mut v = RouteValues::default();
            v.requests[0][1] = *ok;
            v.requests[0][CLASS_5XX] = *failed;
            // Another method's answers count too.
            v.requests[2][3] = 1;
            m.routes.insert(Arc::from(*name), v);
        }
        m
    }

    #[test]
    fn rates_compare_now_with_the_oldest_sample_of_the_last_minute() {
        let history = History::default();
        let t0 = Instant::now();
        history.record(&merged(&[("api", 0, 0)]), t0);
        history.record(&merged(&[("api", 50, 0)]), t0 + Duration::from_secs(10));
        history.record(&merged(&[("api", 100, 10)]), t0 + Duration::from_secs(30));

        // 40 s in: the window starts at the first sample.
        let r = history.rates(
            &merged(&[("api", 190, 10), ("web", 9, 0)]),
            t0 + Duration::from_secs(40),
        );
        assert_eq!(r.all.window_secs, 40.0);
        // api: 200 more requests (190 + 10 + 1 - 1), 10 of them 5xx;
        // web is new since the first sample: all 10 of its requests count.
        assert_eq!((r.all.requests, r.all.errors_5xx), (210, 10));
        assert_eq!(r.all.requests_per_sec, 210.0 / 40.0);
        assert_eq!(r.routes[&Arc::from("api")].error_ratio, Some(0.05));
        assert_eq!(r.routes[&Arc::from("web")].requests, 10);

        // 65 s in: the first sample is out of the window; the next one is
        // the base.
        let r = history.rates(&merged(&[("api", 100, 10)]), t0 + Duration::from_secs(65));
        assert_eq!(r.all.window_secs, 55.0);
        assert_eq!((r.all.requests, r.all.errors_5xx), (60, 10));
    }

    #[test]
    fn samples_older_than_the_window_are_forgotten() {
        let history = History::default();
        let t0 = Instant::now();
        for s in 0..100 {
            history.record(&merged(&[]), t0 + Duration::from_secs(s * 2));
        }
        let kept = history.lock().len();
        assert_eq!(kept, 31, "60 s of samples every 2 s, both ends included");
    }

    #[test]
    fn without_history_or_requests_nothing_is_made_up() {
        let history = History::default();
        let r = history.rates(&merged(&[("api", 5, 5)]), Instant::now());
        assert_eq!((r.all.window_secs, r.all.requests), (0.0, 0));
        assert_eq!(r.all.error_ratio, None);
        assert_eq!(r.routes[&Arc::from("api")].requests, 0);
    }
}

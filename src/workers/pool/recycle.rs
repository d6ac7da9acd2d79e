//! The pool's periodic look at its workers: a slot whose worker stayed up
//! gets its backoff and failure count back, and a ready worker past
//! `max_requests` (plus its jitter) or `max_rss` is recycled. While another
//! worker takes traffic, it leaves the members at once and drains (what
//! gunicorn does: the worker stops taking requests at its limit) and the
//! next reconcile starts its successor; the last worker taking traffic
//! keeps serving until its successor is ready instead, so recycling never
//! leaves a pool without a worker.

use std::time::Instant;

use super::{Pool, ProcState, RSS_EVERY, STABLE};
use crate::workers::spawn;

impl Pool {
    /// Resets the backoff of slots whose worker stayed up, and marks ready
    /// workers past `max_requests` or `max_rss` for recycling.
    pub(super) fn tick(&mut self, now: Instant) {
        self.ticks += 1;
        let min = self.def.backoff_min;
        for slot in &mut self.slots {
            if slot
                .last_ready
                .is_some_and(|t| now.duration_since(t) >= STABLE)
            {
                slot.failures = 0;
                slot.backoff = min;
            }
        }
        if self.stopping {
            return;
        }
        let rss_due = self.ticks.is_multiple_of(RSS_EVERY);
        let candidates: Vec<u64> = self
            .slots
            .iter()
            .filter(|s| s.starting.is_none())
            .filter_map(|s| s.serving)
            .collect();
        for key in candidates {
            let Some(p) = self.procs.get_mut(&key) else {
                continue;
            };
            if p.recycle.is_some() || p.state != ProcState::Ready {
                continue;
            }
            let served = p.peer.served();
            let why = if p.limit.is_some_and(|l| served >= l) {
                Some(format!(
                    "served {served} requests (max_requests = {})",
                    self.def.max_requests
                ))
            } else if rss_due
                && let Some(max) = self.def.max_rss
                && let Some(rss) = spawn::rss_bytes(p.pid)
                && rss > max
            {
                Some(format!(
                    "resident memory {} KiB is above max_rss ({} KiB)",
                    rss / 1024,
                    max / 1024
                ))
            } else {
                None
            };
            let Some(why) = why else { continue };
            tracing::info!(pool = %self.name, worker = p.slot, pid = p.pid, "recycling worker: {why}");
            p.recycle = Some(why);
            let slot = p.slot;
            if self.others_serving(key) {
                self.retire(key);
                if let Some(s) = self.slots.get_mut(slot)
                    && s.serving == Some(key)
                {
                    s.serving = None;
                }
            }
        }
    }

    /// Whether a ready worker other than `key`, not itself being recycled,
    /// takes traffic now.
    fn others_serving(&self, key: u64) -> bool {
        self.procs
            .iter()
            .any(|(k, p)| *k != key && p.state == ProcState::Ready && p.recycle.is_none())
    }
}

//! Recycling, and the pool's periodic look at its workers. A ready worker
//! whose peer was sent `max_requests` (plus the jitter drawn when it
//! started) is recycled as soon as the request that reached the limit wakes
//! the pool; one above `max_rss` at the next look (every second). The limit
//! is exact: the balancer sends a spent peer nothing while another peer can
//! serve. While another worker below its limit takes traffic, a recycled
//! one leaves the members at once and drains (what gunicorn does: the
//! worker stops taking requests at its limit) and the next reconcile starts
//! its successor; otherwise it stays a member until its successor is
//! ready. A request finding only spent members waits for a successor (at
//! most `connect_timeout`, [`crate::upstream::Upstream::wait_for_members`]);
//! only when none comes does the one that reached its limit last serve
//! it, so recycling never leaves a pool without a worker. The look
//! also gives a slot whose worker stayed up its backoff and failure count
//! back.

use std::time::Instant;

use super::{Pool, ProcState, RSS_EVERY, Recycled, STABLE};
use crate::workers::spawn;

impl Pool {
    /// Resets the backoff of slots whose worker stayed up, and recycles
    /// ready workers past `max_requests` or (every [`RSS_EVERY`] ticks)
    /// `max_rss`.
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
        self.recycle(self.ticks.is_multiple_of(RSS_EVERY));
    }

    /// Recycles the ready workers past `max_requests`, and with `rss_due`
    /// those above `max_rss` (see the module docs).
    pub(super) fn recycle(&mut self, rss_due: bool) {
        if self.stopping {
            return;
        }
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
                Some((
                    Recycled::MaxRequests,
                    format!(
                        "served {served} requests (max_requests = {})",
                        self.def.max_requests
                    ),
                ))
            } else if rss_due
                && let Some(max) = self.def.max_rss
                && let Some(rss) = spawn::rss_bytes(p.pid)
                && rss > max
            {
                Some((
                    Recycled::MaxRss,
                    format!(
                        "resident memory {} KiB is above max_rss ({} KiB)",
                        rss / 1024,
                        max / 1024
                    ),
                ))
            } else {
                None
            };
            let Some((reason, why)) = why else { continue };
            tracing::info!(pool = %self.name, worker = p.slot, pid = p.pid, "recycling worker: {why}");
            p.recycle = Some(why);
            let slot = p.slot;
            self.count_recycle(reason);
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

    /// Whether a ready worker other than `key`, neither being recycled nor
    /// at its limit (the supervisor may not have seen it yet), takes
    /// traffic now. When none does, the spent workers stay members until
    /// a successor is ready: requests wait for it, and go to the one that
    /// reached its limit last only if it does not come in time.
    fn others_serving(&self, key: u64) -> bool {
        self.procs.iter().any(|(k, p)| {
            *k != key && p.state == ProcState::Ready && p.recycle.is_none() && !p.peer.is_spent()
        })
    }
}

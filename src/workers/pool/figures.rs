//! A pool's figures for `GET /metrics` ([`Figures`]): its processes by
//! state, replacements after failures, and recycled workers by reason.
//! Read at scrape time from the pool's state, which counts them anyway:
//! nothing here runs per request.

use super::{Pool, PoolShared, ProcState, lock};

/// Why a worker was recycled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recycled {
    /// It served `max_requests`.
    MaxRequests,
    /// Its resident memory went above `max_rss`.
    MaxRss,
}

impl Recycled {
    /// Every reason, in index order.
    pub const ALL: [Recycled; 2] = [Recycled::MaxRequests, Recycled::MaxRss];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Recycled::MaxRequests => "max_requests",
            Recycled::MaxRss => "max_rss",
        }
    }
}

/// What a pool's processes are doing, in [`Figures::procs`]' order.
pub const STATES: [&str; 4] = [
    ProcState::Starting.as_str(),
    ProcState::Ready.as_str(),
    ProcState::Draining.as_str(),
    ProcState::Stopping.as_str(),
];

/// One pool's figures.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Figures {
    /// Processes alive by state ([`STATES`]).
    pub procs: [u64; 4],
    /// Replacements after failures (failed starts, exits, kills).
    pub restarts: u64,
    /// Workers recycled, by [`Recycled`] reason.
    pub recycles: [u64; 2],
}

impl Figures {
    /// Adds another pool's figures (a pool of the same name still
    /// stopping while its successor runs).
    pub fn add(&mut self, other: &Figures) {
        for (a, b) in self.procs.iter_mut().zip(other.procs) {
            *a += b;
        }
        self.restarts += other.restarts;
        for (a, b) in self.recycles.iter_mut().zip(other.recycles) {
            *a += b;
        }
    }
}

impl Pool {
    /// Counts a worker recycled for `why`.
    pub(super) fn count_recycle(&mut self, why: Recycled) {
        self.recycles[why as usize] += 1;
    }

    /// The pool's figures now.
    pub(super) fn figures(&self) -> Figures {
        let mut procs = [0; 4];
        for p in self.procs.values() {
            // The enum's order is STATES' order.
            procs[p.state as usize] += 1;
        }
        Figures {
            procs,
            restarts: self.restarts,
            recycles: self.recycles,
        }
    }
}

impl PoolShared {
    /// The pool's figures now.
    pub(crate) fn figures(&self) -> Figures {
        lock(&self.pool).figures()
    }
}

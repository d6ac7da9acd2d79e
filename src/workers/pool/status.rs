//! A pool's entry in `GET /status` and on the status page
//! ([`PoolStatus`]): its command, count, state, last error, restarts, and
//! every process with its pid, state, generation, uptime, requests and
//! address.

use std::time::{Duration, Instant};

use super::{Pool, PoolShared, ProcState, lock};

impl ProcState {
    /// Its name in `/status` and the metrics' `state` label.
    pub(super) const fn as_str(self) -> &'static str {
        match self {
            ProcState::Starting => "starting",
            ProcState::Ready => "ready",
            ProcState::Draining => "draining",
            ProcState::Stopping => "stopping",
        }
    }
}

impl Pool {
    /// "stopping", "failing", "rolling", "starting" (no worker ready yet)
    /// or "ok".
    pub(super) fn state(&self) -> &'static str {
        if self.stopping {
            "stopping"
        } else if self.failing() {
            "failing"
        } else if !self.previous.is_empty() {
            "rolling"
        } else if self.slots.iter().all(|s| s.serving.is_none()) {
            "starting"
        } else {
            "ok"
        }
    }

    /// The pool's `/status` entry.
    pub(super) fn status(&self, now: Instant) -> PoolStatus {
        let mut procs: Vec<_> = self.procs.values().collect();
        procs.sort_by_key(|p| (p.slot, p.generation, p.started));
        let workers = procs
            .iter()
            .map(|p| {
                let restarts = self
                    .slots
                    .get(p.slot)
                    .filter(|_| p.generation == self.generation)
                    .map_or(0, |s| s.restarts);
                ProcStatus {
                    id: p.slot,
                    pid: p.pid,
                    state: p.state.as_str(),
                    generation: p.generation,
                    uptime_secs: now.saturating_duration_since(p.started).as_secs_f64(),
                    requests: p.peer.served(),
                    restarts,
                    addr: p.addr.to_string(),
                }
            })
            .collect();
        PoolStatus {
            command: self.def.command.clone(),
            count: self.def.count,
            generation: self.generation,
            state: self.state(),
            last_error: self.last_error.clone(),
            restarts: self.restarts,
            workers,
        }
    }
}

impl PoolShared {
    /// Whether the pool is still starting its first workers (none ready
    /// yet, and not failing), and how long one may take to become ready
    /// (its `start_timeout`): what `Registry::wait_started` polls.
    pub(in crate::workers) fn starting(&self) -> (bool, Duration) {
        let pool = lock(&self.pool);
        (pool.state() == "starting", pool.def.start_timeout)
    }
}

/// A managed pool as `/status` and the status page show it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct PoolStatus {
    /// The argv it runs.
    pub command: Vec<String>,
    /// Processes it keeps running.
    pub count: usize,
    /// Its definition's generation (a rolling restart adds one).
    pub generation: u64,
    /// "ok", "starting", "rolling", "failing" or "stopping".
    pub state: &'static str,
    /// The latest failure ("worker N: what happened").
    pub last_error: Option<String>,
    /// Replacements after failures, pool total.
    pub restarts: u64,
    /// Every process alive, by slot.
    pub workers: Vec<ProcStatus>,
}

/// One process of a managed pool.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ProcStatus {
    /// Its slot in the pool.
    pub id: usize,
    /// Its process id.
    pub pid: u32,
    /// "starting", "ready", "draining" or "stopping".
    pub state: &'static str,
    /// The pool generation it was started for.
    pub generation: u64,
    /// Seconds since it was started.
    pub uptime_secs: f64,
    /// Requests sent to it (tries included).
    pub requests: u64,
    /// Replacements of its slot after failures (current generation only).
    pub restarts: u64,
    /// Where it listens.
    pub addr: String,
}

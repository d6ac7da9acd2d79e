//! A pool's entry in `GET /status`: its command, count, state, last error,
//! restarts, and every process with its pid, state, generation, uptime,
//! requests and address.

use std::time::Instant;

use serde_json::{Value, json};

use super::{Pool, ProcState};

impl ProcState {
    fn as_str(self) -> &'static str {
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
    pub(super) fn status(&self, now: Instant) -> Value {
        let mut procs: Vec<_> = self.procs.values().collect();
        procs.sort_by_key(|p| (p.slot, p.generation, p.started));
        let workers: Vec<Value> = procs
            .iter()
            .map(|p| {
                let restarts = self
                    .slots
                    .get(p.slot)
                    .filter(|_| p.generation == self.generation)
                    .map_or(0, |s| s.restarts);
                json!({
                    "id": p.slot,
                    "pid": p.pid,
                    "state": p.state.as_str(),
                    "generation": p.generation,
                    "uptime_secs": now.saturating_duration_since(p.started).as_secs_f64(),
                    "requests": p.peer.served(),
                    "restarts": restarts,
                    "addr": p.addr.to_string(),
                })
            })
            .collect();
        json!({
            "command": self.def.command,
            "count": self.def.count,
            "generation": self.generation,
            "state": self.state(),
            "last_error": self.last_error,
            "restarts": self.restarts,
            "workers": workers,
        })
    }
}

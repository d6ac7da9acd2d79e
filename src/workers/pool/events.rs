//! What a pool does when one of its processes reports: ready (it joins,
//! and the worker it replaces drains), failed to start or exited (counted
//! as a failure of its slot: backoff, restart, maybe "failing"), stopping
//! and stopped.

use std::time::Instant;

use super::{Pool, ProcState};
use crate::workers::process::Event;

impl Pool {
    /// What a process task reported.
    pub(super) fn on_event(&mut self, ev: Event, now: Instant) {
        match ev {
            Event::Ready(key) => self.on_ready(key, now),
            Event::Failed(key, why) => {
                let Some(p) = self.procs.remove(&key) else {
                    return;
                };
                if let Some(slot) = self.slots.get_mut(p.slot)
                    && slot.starting == Some(key)
                {
                    slot.starting = None;
                    self.slot_failed(p.slot, &why, now);
                }
            }
            Event::Exited(key, why) => {
                let Some(p) = self.procs.remove(&key) else {
                    return;
                };
                if let Some(slot) = self.slots.get_mut(p.slot)
                    && slot.serving == Some(key)
                {
                    slot.serving = None;
                    tracing::warn!(pool = %self.name, worker = p.slot, pid = p.pid, "worker {why}; replacing it");
                    self.slot_failed(p.slot, &why, now);
                } else if let Some(i) = self.previous.iter().position(|k| *k == key) {
                    self.previous.swap_remove(i);
                    tracing::warn!(pool = %self.name, worker = p.slot, pid = p.pid, generation = p.generation, "worker of the previous generation {why}");
                }
            }
            Event::Terminating(key) => {
                if let Some(p) = self.procs.get_mut(&key) {
                    p.state = ProcState::Stopping;
                }
            }
            Event::Stopped(key) => {
                self.procs.remove(&key);
            }
        }
    }

    fn on_ready(&mut self, key: u64, now: Instant) {
        let Some(p) = self.procs.get_mut(&key) else {
            return;
        };
        if p.state != ProcState::Starting {
            return;
        }
        let Some(slot) = self.slots.get_mut(p.slot) else {
            return;
        };
        if slot.starting != Some(key) {
            return;
        }
        p.state = ProcState::Ready;
        slot.starting = None;
        slot.last_ready = Some(now);
        let old = slot.serving.replace(key);
        tracing::info!(
            pool = %self.name,
            worker = p.slot,
            pid = p.pid,
            generation = p.generation,
            addr = %p.addr,
            "worker ready"
        );
        if let Some(old) = old {
            self.retire(old);
        }
    }

    /// Counts a failure in slot `i` and schedules the next start.
    pub(super) fn slot_failed(&mut self, i: usize, why: &str, now: Instant) {
        let Some(slot) = self.slots.get_mut(i) else {
            return;
        };
        slot.failures += 1;
        slot.restarts += 1;
        slot.last_ready = None;
        slot.retry_at = Some(now + slot.backoff);
        tracing::debug!(pool = %self.name, worker = i, failures = slot.failures, "worker {why}; starting again in {:?}", slot.backoff);
        slot.backoff = (slot.backoff * 2).min(self.def.backoff_max);
        self.restarts += 1;
        self.last_error = Some(format!("worker {i}: {why}"));
    }
}

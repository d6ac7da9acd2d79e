//! Counters of two request steps, per worker thread: rate-limit zones
//! ([`LimitCounters`], by zone) and Lua handlers ([`LuaCounters`], by
//! script and phase). Like the others, only the owning thread writes
//! them.

use std::sync::atomic::AtomicU64;
use std::time::Duration;

use super::counters::{add, read};
use super::histogram::{Histogram, HistogramValues, LUA_PHASE};

/// One rate-limit zone's decisions on one worker.
#[derive(Debug, Default)]
pub struct LimitCounters {
    allowed: AtomicU64,
    limited: AtomicU64,
}

impl LimitCounters {
    /// The zone let a request through (it took a token or a place).
    #[inline]
    pub fn allowed(&self) {
        add(&self.allowed, 1);
    }

    /// The zone refused a request.
    pub fn limited(&self) {
        add(&self.limited, 1);
    }

    pub(super) fn values(&self) -> LimitValues {
        LimitValues {
            allowed: read(&self.allowed),
            limited: read(&self.limited),
        }
    }
}

/// A zone's values.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct LimitValues {
    /// Requests let through.
    pub allowed: u64,
    /// Requests refused.
    pub limited: u64,
}

impl LimitValues {
    pub(super) fn add(&mut self, other: &LimitValues) {
        self.allowed += other.allowed;
        self.limited += other.limited;
    }
}

/// How a Lua handler's run ended, as counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LuaEnd {
    /// It returned or called `ngx.exit`.
    Ok,
    /// It raised an error (or could not be loaded).
    Error,
    /// It was stopped past `time_budget`.
    Overrun,
}

/// One script's runs in one phase, on one worker.
#[derive(Debug, Default)]
pub struct LuaCounters {
    errors: AtomicU64,
    overruns: AtomicU64,
    duration: Histogram,
}

impl LuaCounters {
    /// Counts a run that ended as `end` after `elapsed` (its wall time,
    /// waits included).
    #[inline]
    pub fn ran(&self, end: LuaEnd, elapsed: Duration) {
        self.duration.observe(elapsed, &LUA_PHASE);
        match end {
            LuaEnd::Ok => {}
            LuaEnd::Error => add(&self.errors, 1),
            LuaEnd::Overrun => add(&self.overruns, 1),
        }
    }

    pub(super) fn values(&self) -> LuaValues {
        LuaValues {
            errors: read(&self.errors),
            overruns: read(&self.overruns),
            duration: self.duration.values(),
        }
    }
}

/// A script's values in one phase.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct LuaValues {
    /// Runs that raised an error.
    pub errors: u64,
    /// Runs stopped past `time_budget`.
    pub overruns: u64,
    /// Run durations ([`LUA_PHASE`] buckets).
    pub duration: HistogramValues,
}

impl LuaValues {
    pub(super) fn add(&mut self, other: &LuaValues) {
        self.errors += other.errors;
        self.overruns += other.overruns;
        self.duration.add(&other.duration);
    }
}

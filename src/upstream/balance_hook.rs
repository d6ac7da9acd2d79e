//! A hook asked before every try of a request to an upstream (an
//! upstream's Lua `balancer`, ngx_lua's `balancer_by_lua`): it may name the
//! address this try goes to instead of the balancer's pick, allow further
//! tries should this one fail, and change the timeouts. [`super::call`]
//! knows it only as [`TryHook`]; nothing here knows Lua.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use crate::config::PeerAddr;
use crate::error::ProxyError;

/// How the previous try of a request failed (ngx.balancer's
/// `get_last_failure`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LastFailure {
    /// The peer could not be reached or failed before answering
    /// (`"failed"`), with the status that failure means (502, 504).
    Failed(u16),
    /// The peer answered a status listed in `retry_statuses` (`"next"`).
    Next(u16),
}

impl LastFailure {
    /// ngx_lua's state name.
    pub fn name(self) -> &'static str {
        match self {
            LastFailure::Failed(_) => "failed",
            LastFailure::Next(_) => "next",
        }
    }

    /// The status of the failed try.
    pub fn status(self) -> u16 {
        match self {
            LastFailure::Failed(s) | LastFailure::Next(s) => s,
        }
    }
}

/// What the hook is told before a try.
#[derive(Debug, Clone, Copy)]
pub struct TryInfo {
    /// How the previous try failed; `None` on the first.
    pub last_failure: Option<LastFailure>,
    /// How many more tries the limit (the upstream's `retries`) still
    /// allows after this one.
    pub more_allowed: u32,
}

/// Timeouts for this try and the next ones; `None` keeps the upstream's.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Timeouts {
    /// Connecting.
    pub connect: Option<Duration>,
    /// Between two writes to the peer.
    pub send: Option<Duration>,
    /// Between two reads from the peer.
    pub read: Option<Duration>,
}

/// What the hook decided for one try.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TryPlan {
    /// Send this try here; `None`: the upstream's balancer picks.
    pub peer: Option<PeerAddr>,
    /// Further tries allowed should this try fail (already bounded by
    /// [`TryInfo::more_allowed`]); counted only for a peer the hook named.
    pub more_tries: u32,
    /// The timeouts from now on.
    pub timeouts: Timeouts,
}

/// The hook's future: local to the worker thread, like the request's.
pub type PlanFuture<'a> = Pin<Box<dyn Future<Output = Result<TryPlan, ProxyError>> + 'a>>;

/// Asked before every try of one request.
pub trait TryHook {
    /// The plan for the next try.
    fn before_try(&self, info: TryInfo) -> PlanFuture<'_>;
}

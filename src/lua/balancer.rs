//! The `balancer` phase: an upstream's `lua.balancer` handler, run before
//! every try of a request to it ([`LuaBalancer`], the upstream's
//! [`TryHook`]), and what the handler decided through `ngx.balancer`
//! ([`BalancerState`], kept with the request).
//!
//! Unlike ngx_lua, the handler may yield (SPEC §4: async in every phase),
//! under the time budget like any handler. `ngx.exit(status)` with a status
//! of 300 or more ends the request with that status (OpenResty's bundle
//! does the same); `ngx.exit(ngx.OK)` ends the handler only; an error or
//! another `ngx.exit` value is a 500 logged with the script and line.

use std::rc::Rc;

use super::Phase;
use super::program::ScriptId;
use super::request::ReqCtx;
use super::vm::{Outcome, Vm};
use crate::config::PeerAddr;
use crate::error::ProxyError;
use crate::upstream::balance_hook::{LastFailure, PlanFuture, Timeouts, TryHook, TryInfo, TryPlan};

/// What `ngx.balancer` reads and sets during one request's tries.
#[derive(Debug, Default)]
pub struct BalancerState {
    /// `set_current_peer` in this try.
    pub peer: Option<PeerAddr>,
    /// `set_more_tries` in this try.
    pub more_tries: u32,
    /// `set_timeouts`: for this try and the next ones.
    pub timeouts: Timeouts,
    /// `get_last_failure`.
    pub last_failure: Option<LastFailure>,
    /// How many more tries the upstream's `retries` allows after this one
    /// (`set_more_tries` beyond it is reduced, with a warning).
    pub more_allowed: u32,
}

/// An upstream's `lua.balancer` for one request.
pub struct LuaBalancer {
    /// The VM of the request's Lua handlers.
    pub vm: Rc<Vm>,
    /// The request (its `ngx.var`, `ngx.ctx`, and [`BalancerState`]).
    pub req: Rc<ReqCtx>,
    /// The handler.
    pub script: ScriptId,
    /// The upstream's name, for the log.
    pub upstream: String,
}

impl TryHook for LuaBalancer {
    fn before_try(&self, info: TryInfo) -> PlanFuture<'_> {
        Box::pin(async move {
            {
                let mut state = self.req.balancer.borrow_mut();
                state.peer = None;
                state.more_tries = 0;
                state.last_failure = info.last_failure;
                state.more_allowed = info.more_allowed;
            }
            let failed = |m: String| {
                ProxyError::Lua(format!("balancer of [upstream.{}]: {m}", self.upstream))
            };
            match self.vm.run(self.script, Phase::Balancer, &self.req).await {
                Outcome::Next | Outcome::Exit(0) => {}
                Outcome::Exit(code) => {
                    let status = u16::try_from(code)
                        .ok()
                        .filter(|c| (300..=599).contains(c))
                        .and_then(|c| http::StatusCode::from_u16(c).ok());
                    return Err(match status {
                        Some(status) => ProxyError::LuaExit(status),
                        None => failed(format!("ngx.exit({code})")),
                    });
                }
                Outcome::Failed(m) => return Err(failed(m)),
            }
            let state = self.req.balancer.borrow();
            Ok(TryPlan {
                peer: state.peer.clone(),
                more_tries: state.more_tries.min(info.more_allowed),
                timeouts: state.timeouts,
            })
        })
    }
}

//! What a worker thread's Lua VMs share: [`LuaWorker`], part of the
//! worker's [`WorkerLocal`](crate::worker_local::WorkerLocal). Lua
//! callbacks get no context argument, so each VM keeps an
//! `Rc<LuaWorker>` as its app data ([`of`]); the VM's count hook and
//! [`super::vm::Vm::run`] hold it directly.

use std::rc::Rc;

use mlua::{AppDataRef, Lua};

use super::api::socket::SocketPool;
use super::api::tasks::Timers;
use super::budget::Running;
use crate::cluster::RedisConnections;
use crate::metrics::WorkerMetrics;
use crate::worker_local::WorkerInfo;

/// The Lua side of one worker thread.
pub struct LuaWorker {
    /// `ngx.worker.id()` / `ngx.worker.count()`.
    pub info: WorkerInfo,
    /// The request and deadline of the Lua code running now.
    pub running: Running,
    /// `ngx.timer` counts (and whether timer code is running).
    pub timers: Timers,
    /// The worker's Redis connections (`mg.limit.take` on redis zones).
    pub redis: Rc<RedisConnections>,
    /// Idle cosocket connections (`tcpsock:setkeepalive`).
    pub sockets: SocketPool,
    /// `ngx.worker.exiting()`: set once the worker drains on a graceful
    /// stop.
    pub exiting: std::cell::Cell<bool>,
    /// `ngx.re`'s compiled patterns and match scratch (no lock: one thread).
    pub re: crate::ngx::re::Engine,
    /// The worker's counters, where its VMs count handler runs (when their
    /// program says so).
    pub metrics: std::sync::Arc<WorkerMetrics>,
}

impl LuaWorker {
    /// The Lua side of worker `info`, taking from Redis over `redis` and
    /// counting into `metrics`.
    pub fn new(
        info: WorkerInfo,
        redis: Rc<RedisConnections>,
        metrics: std::sync::Arc<WorkerMetrics>,
    ) -> LuaWorker {
        LuaWorker {
            info,
            running: Running::default(),
            timers: Timers::default(),
            redis,
            sockets: SocketPool::default(),
            exiting: std::cell::Cell::new(false),
            re: Default::default(),
            metrics,
        }
    }
}

/// The worker of the VM `lua` (set when the VM is made, so missing only in
/// a state moongate did not make).
pub fn of(lua: &Lua) -> mlua::Result<AppDataRef<'_, Rc<LuaWorker>>> {
    lua.app_data_ref::<Rc<LuaWorker>>()
        .ok_or_else(|| mlua::Error::runtime("no moongate worker for this Lua state"))
}

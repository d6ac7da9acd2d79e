//! What one worker thread owns, as one value: [`WorkerLocal`]. The worker's
//! main function ([`crate::runtime`]) creates it and hands it down; the
//! request path reaches it through its connection's
//! [`ConnCtx`](crate::proxy::ConnCtx).
//!
//! It owns its access to the process's idle upstream connections, the
//! Redis connections, the Lua
//! VMs with what they share (the running request and its deadline, timer
//! counts), the `Date` header value of HTTP/1 responses, its metrics
//! counters (see [`crate::metrics`]), and whether the worker's `LocalSet`
//! still takes tasks. Lua callbacks get no context
//! argument: they reach the Lua part through their VM's app data (see
//! [`crate::lua::worker`]).
//!
//! Nothing here but the idle upstream connections (one pool per process,
//! see [`crate::upstream::pool`]) is shared between threads, so it needs
//! no locks, and two values never see each other's state (see the tests): there is no
//! `thread_local!` behind it. Code outside the workers (the control
//! thread, admin, `moongate check`) needs none of it; a test that does
//! makes its own with [`WorkerLocal::new`].

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;

use crate::cluster::RedisConnections;
use crate::h1_wire::DateCache;
use crate::lua::vm::Vms;
use crate::lua::worker::LuaWorker;
use crate::metrics::WorkerStats;
use crate::upstream::pool::{IdlePool, SharedPool};

/// Which worker a thread is, as Lua sees it (`ngx.worker.id()` and
/// `ngx.worker.count()`).
#[derive(Debug, Clone, Copy)]
pub struct WorkerInfo {
    /// `ngx.worker.id()`.
    pub id: usize,
    /// `ngx.worker.count()`.
    pub count: usize,
}

/// The state of one worker thread.
pub struct WorkerLocal {
    /// Which worker this is.
    pub info: WorkerInfo,
    /// The worker's way into the process's idle keep-alive connections to
    /// upstream peers. An `Rc` because a response body gives its
    /// connection back after the request's borrows have ended.
    pub upstream_idle: Rc<IdlePool>,
    /// The connection to each Redis that `scope = "redis"` zones use
    /// (shared with the Lua VMs, for `mg.limit.take`).
    pub redis: Rc<RedisConnections>,
    /// The Lua VMs, and what they share: the request and deadline of the
    /// Lua code running now, `ngx.timer` counts.
    pub lua: Vms,
    /// The `Date` value of HTTP/1 responses, formatted once a second for
    /// all of the worker's connections (an idle connection holds none).
    pub dates: RefCell<DateCache>,
    /// The worker's counters (`GET /metrics` adds up every worker's).
    pub metrics: WorkerStats,
    /// Set while the worker's `LocalSet` runs its tasks, when
    /// `tokio::task::spawn_local` may be called (not while the set's
    /// leftover tasks are dropped at exit).
    tasks: Cell<bool>,
}

impl WorkerLocal {
    /// Empty state for worker `info`, reaching the process's upstream
    /// connections in `pool`; it takes no tasks until
    /// [`WorkerLocal::run_tasks`] says so.
    pub fn new(info: WorkerInfo, pool: Arc<SharedPool>) -> WorkerLocal {
        let redis = Rc::new(RedisConnections::default());
        let metrics = WorkerStats::new();
        WorkerLocal {
            info,
            upstream_idle: Rc::new(IdlePool::new(pool, info.id)),
            lua: Vms::new(LuaWorker::new(info, redis.clone(), metrics.shared())),
            redis,
            dates: RefCell::default(),
            metrics,
            tasks: Cell::new(false),
        }
    }

    /// Tells whether the worker's `LocalSet` is running its tasks (set by
    /// the worker's main function around its event loop).
    pub fn run_tasks(&self, running: bool) {
        self.tasks.set(running);
    }

    /// Whether the caller may `tokio::task::spawn_local` onto this
    /// worker's `LocalSet`.
    pub fn takes_tasks(&self) -> bool {
        self.tasks.get()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::upstream::h1::Conn;

    const IDLE: Duration = Duration::from_secs(60);

    /// An open connection to a listener on this host (kept open by the
    /// returned stream).
    async fn conn() -> (Conn, tokio::net::TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        (Conn::new(Box::new(client), IDLE), server)
    }

    #[tokio::test]
    async fn two_workers_share_their_idle_connections() {
        let pool = SharedPool::new(2);
        let one = WorkerLocal::new(WorkerInfo { id: 0, count: 2 }, pool.clone());
        let two = WorkerLocal::new(WorkerInfo { id: 1, count: 2 }, pool);
        let (c, _peer) = conn().await;
        one.upstream_idle.checkin(7, c, 4);
        let back = two.upstream_idle.checkout(7, IDLE).expect("pooled");
        assert!(back.reused);
        assert!(one.upstream_idle.checkout(7, IDLE).is_none());
    }

    #[test]
    fn one_workers_lua_deadline_does_not_stop_another() {
        let one = WorkerLocal::new(WorkerInfo { id: 0, count: 2 }, SharedPool::new(2));
        let two = WorkerLocal::new(WorkerInfo { id: 1, count: 2 }, SharedPool::new(2));
        let (a, b) = (&one.lua.worker().running, &two.lua.worker().running);
        a.with_deadline(Duration::ZERO, || {
            assert!(a.check().is_err(), "past its deadline");
            assert!(a.timed_out());
            assert!(b.check().is_ok(), "the other worker runs no Lua");
            assert!(!b.timed_out());
        });
        assert!(a.check().is_ok(), "the deadline ends with the run");
    }

    #[test]
    fn a_worker_takes_tasks_only_while_told() {
        let w = WorkerLocal::new(WorkerInfo { id: 0, count: 1 }, SharedPool::new(1));
        assert!(!w.takes_tasks());
        w.run_tasks(true);
        assert!(w.takes_tasks());
        w.run_tasks(false);
        assert!(!w.takes_tasks());
    }
}

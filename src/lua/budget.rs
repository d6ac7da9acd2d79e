//! What a worker thread knows about the Lua code running on it right now
//! ([`Running`], one per worker, in its [`LuaWorker`](super::worker::LuaWorker)):
//! which request it belongs to, and until when it may run. A coroutine
//! only runs while its future is polled, so [`Budgeted`] sets both on
//! every poll; the VM's count hook ([`Running::check`]) stops a handler
//! past its deadline, and [`Running::timed_out`] lets `pcall` wrappers
//! re-raise the stop.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use super::request::ReqCtx;

/// The message a stopped handler ends with.
pub const TIMEOUT_MESSAGE: &str = "time budget exceeded";

/// The Lua code running on one worker thread: its request and deadline.
#[derive(Default)]
pub struct Running {
    deadline: Cell<Option<Instant>>,
    timed_out: Cell<bool>,
    current: RefCell<Option<Rc<ReqCtx>>>,
}

impl Running {
    /// The request whose Lua code is running.
    pub fn current(&self) -> Option<Rc<ReqCtx>> {
        self.current.borrow().clone()
    }

    /// Called by the count hook: an error once the deadline has passed.
    pub fn check(&self) -> mlua::Result<mlua::VmState> {
        if self.deadline.get().is_some_and(|d| Instant::now() >= d) {
            self.timed_out.set(true);
            return Err(mlua::Error::runtime(TIMEOUT_MESSAGE));
        }
        Ok(mlua::VmState::Continue)
    }

    /// Runs `f` (synchronous Lua, e.g. `init`) stopped after `budget`.
    pub fn with_deadline<T>(&self, budget: Duration, f: impl FnOnce() -> T) -> T {
        let previous = self.deadline.replace(Some(Instant::now() + budget));
        let out = f();
        self.deadline.set(previous);
        self.timed_out.set(false);
        out
    }

    /// Whether the running handler has been stopped (for `pcall` wrappers).
    pub fn timed_out(&self) -> bool {
        self.timed_out.get()
    }
}

pin_project_lite::pin_project! {
    /// Runs `inner` (a coroutine's future) with `req` as the current
    /// request of `running` and `budget` as the time it may run per poll.
    /// The coroutine's future is held in place, not boxed: one allocation
    /// less per phase handler run.
    pub struct Budgeted<'r, F> {
        running: &'r Running,
        #[pin]
        inner: F,
        req: Option<Rc<ReqCtx>>,
        budget: Duration,
    }
}

impl<'r, F> Budgeted<'r, F> {
    /// Wraps a coroutine's future run by the VM whose worker keeps
    /// `running`; `req` is `None` for timers, which run outside any
    /// request.
    pub fn new(running: &'r Running, inner: F, req: Option<Rc<ReqCtx>>, budget: Duration) -> Self {
        Budgeted {
            running,
            inner,
            req,
            budget,
        }
    }
}

/// How a budgeted run ended.
pub enum Ran<T> {
    /// The coroutine returned (or failed).
    Done(T),
    /// The script called `ngx.exit` (or `ngx.redirect`); the coroutine is
    /// abandoned where it waits.
    Exited,
    /// The handler ran past its budget.
    TimedOut,
}

impl<F: Future> Future for Budgeted<'_, F> {
    type Output = Ran<F::Output>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let running = *this.running;
        let previous = running.current.replace(this.req.clone());
        let previous_deadline = running
            .deadline
            .replace(Some(Instant::now() + *this.budget));
        running.timed_out.set(false);
        let polled = this.inner.poll(cx);
        let timed_out = running.timed_out.replace(false);
        running.deadline.set(previous_deadline);
        *running.current.borrow_mut() = previous;
        if timed_out {
            return Poll::Ready(Ran::TimedOut);
        }
        if this.req.as_ref().is_some_and(|r| r.exit_status().is_some()) {
            return Poll::Ready(Ran::Exited);
        }
        polled.map(Ran::Done)
    }
}

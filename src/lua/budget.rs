//! What a worker thread knows about the Lua code running on it right now:
//! which request it belongs to, and until when it may run. A coroutine only
//! runs while its future is polled, so [`Budgeted`] sets both on every
//! poll; the VM's count hook ([`check`]) stops a handler past its
//! deadline, and [`timed_out`] lets `pcall` wrappers re-raise the stop.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use super::request::ReqCtx;

/// The message a stopped handler ends with.
pub const TIMEOUT_MESSAGE: &str = "time budget exceeded";

thread_local! {
    static DEADLINE: Cell<Option<Instant>> = const { Cell::new(None) };
    static TIMED_OUT: Cell<bool> = const { Cell::new(false) };
    static CURRENT: RefCell<Option<Rc<ReqCtx>>> = const { RefCell::new(None) };
}

/// The request whose Lua code is running on this thread.
pub fn current() -> Option<Rc<ReqCtx>> {
    CURRENT.with(|c| c.borrow().clone())
}

/// Called by the count hook: an error once the deadline has passed.
pub fn check() -> mlua::Result<mlua::VmState> {
    let expired = DEADLINE.with(|d| d.get().is_some_and(|d| Instant::now() >= d));
    if expired {
        TIMED_OUT.with(|t| t.set(true));
        return Err(mlua::Error::runtime(TIMEOUT_MESSAGE));
    }
    Ok(mlua::VmState::Continue)
}

/// Runs `f` (synchronous Lua, e.g. `init`) stopped after `budget`.
pub fn with_deadline<T>(budget: Duration, f: impl FnOnce() -> T) -> T {
    let previous = DEADLINE.with(|d| d.replace(Some(Instant::now() + budget)));
    let out = f();
    DEADLINE.with(|d| d.set(previous));
    TIMED_OUT.with(|t| t.set(false));
    out
}

/// Whether the running handler has been stopped (for `pcall` wrappers).
pub fn timed_out() -> bool {
    TIMED_OUT.with(Cell::get)
}

/// Runs `inner` (a coroutine's future) with `req` as the current request
/// and `budget` as the time it may run per poll.
pub struct Budgeted<F> {
    inner: Pin<Box<F>>,
    req: Option<Rc<ReqCtx>>,
    budget: Duration,
}

impl<F> Budgeted<F> {
    /// Wraps a coroutine's future; `req` is `None` for timers, which run
    /// outside any request.
    pub fn new(inner: F, req: Option<Rc<ReqCtx>>, budget: Duration) -> Self {
        Budgeted {
            inner: Box::pin(inner),
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

impl<F: Future> Future for Budgeted<F> {
    type Output = Ran<F::Output>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let previous = CURRENT.with(|c| c.replace(this.req.clone()));
        let previous_deadline = DEADLINE.with(|d| d.replace(Some(Instant::now() + this.budget)));
        TIMED_OUT.with(|t| t.set(false));
        let polled = this.inner.as_mut().poll(cx);
        let timed_out = TIMED_OUT.with(|t| t.replace(false));
        DEADLINE.with(|d| d.set(previous_deadline));
        CURRENT.with(|c| *c.borrow_mut() = previous);
        if timed_out {
            return Poll::Ready(Ran::TimedOut);
        }
        if this.req.as_ref().is_some_and(|r| r.exit_status().is_some()) {
            return Poll::Ready(Ran::Exited);
        }
        polled.map(Ran::Done)
    }
}

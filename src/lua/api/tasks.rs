//! `ngx.timer.at` / `ngx.timer.every` (callbacks in the `timer` phase, on
//! the worker's event loop, outside any request) and `ngx.thread.spawn` /
//! `wait` / `kill` (`tasks/thread.rs`: light threads sharing their parent's
//! request, scheduled with it by [`crate::lua::light_threads`]). Both are
//! coroutines run under the time budget.
//!
//! A VM whose configuration generation was replaced on its worker is
//! [`Retired`] (nginx's exiting worker, on reload): its pending timers fire
//! at once with `premature = true` and `ngx.timer.every` timers stop after
//! that call; new timers with a delay are refused with `"process exiting"`,
//! and `ngx.worker.exiting()` is true there. Requests still in flight on
//! the old VM finish normally.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

use mlua::{Function, Lua, MultiValue, Table, Value};
use tokio_util::sync::CancellationToken;

use super::err;
use crate::lua::Phase;
use crate::lua::budget::{self, Budgeted, Ran};
use crate::lua::light_threads::{self, LightThreads};
use crate::lua::worker::{self, LuaWorker};

mod thread;
pub(super) use thread::status as thread_status;

/// Most timers pending at once per worker (ngx_lua's lua_max_pending_timers).
const MAX_PENDING_TIMERS: usize = 1024;

/// One worker's `ngx.timer` bookkeeping.
#[derive(Default)]
pub struct Timers {
    /// Set while timer code is polled.
    in_timer: Cell<bool>,
    /// Timers waiting to fire (`ngx.timer.pending_count`).
    pending: Cell<usize>,
    /// Callbacks running (`ngx.timer.running_count`).
    running: Cell<usize>,
    /// Set while `init_worker` runs.
    init_worker: Cell<bool>,
    /// The light threads of the timer callback being polled.
    threads: RefCell<Option<Rc<LightThreads>>>,
}

/// Set on a VM (as its app data) when a newer configuration's VM replaced
/// it on its worker; see the module docs.
#[derive(Clone, Default)]
pub struct Retired(CancellationToken);

impl Retired {
    /// Marks the VM retired: its timers fire prematurely and stop.
    pub fn retire(&self) {
        self.0.cancel();
    }
}

/// Whether the VM `lua` is retired (`ngx.worker.exiting()`).
pub(crate) fn retired(lua: &Lua) -> bool {
    lua.app_data_ref::<Retired>()
        .is_some_and(|r| r.0.is_cancelled())
}

/// What the timers of VM `lua` wait on besides their delay.
fn retirement(lua: &Lua) -> CancellationToken {
    lua.app_data_ref::<Retired>()
        .map(|r| r.0.clone())
        .unwrap_or_default()
}

impl Timers {
    /// The phase Lua code runs in when no request is current.
    pub(super) fn phase_outside_requests(&self) -> Phase {
        if self.in_timer.get() {
            Phase::Timer
        } else if self.init_worker.get() {
            Phase::InitWorker
        } else {
            Phase::Init
        }
    }

    /// Runs `f` (the `init_worker` handler) in the `init_worker` phase.
    pub fn in_init_worker<T>(&self, f: impl FnOnce() -> T) -> T {
        let before = self.init_worker.replace(true);
        let out = f();
        self.init_worker.set(before);
        out
    }

    /// Counts one more pending timer, unless the limit is reached.
    fn reserve(&self) -> bool {
        let n = self.pending.get();
        if n >= MAX_PENDING_TIMERS {
            return false;
        }
        self.pending.set(n + 1);
        true
    }
}

/// Marks the wrapped future as timer code of `timers`, whose light threads
/// are those of the given set, while it is polled.
struct TimerScope<'t, F>(&'t Timers, Rc<LightThreads>, Pin<Box<F>>);

impl<F: Future> Future for TimerScope<'_, F> {
    type Output = F::Output;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = &mut *self;
        let before = this.0.in_timer.replace(true);
        let threads = this.0.threads.replace(Some(this.1.clone()));
        let out = this.2.as_mut().poll(cx);
        *this.0.threads.borrow_mut() = threads;
        this.0.in_timer.set(before);
        out
    }
}

impl Timers {
    /// The light threads of the timer callback running, if one is.
    pub(super) fn light_threads(&self) -> Option<Rc<LightThreads>> {
        self.threads.borrow().clone()
    }
}

/// Runs `callback(premature, args...)` once as a timer of `worker`.
async fn fire(
    worker: &LuaWorker,
    lua: Lua,
    (callback, args): (Function, MultiValue),
    budget: Duration,
    premature: bool,
) {
    let timers = &worker.timers;
    timers.running.set(timers.running.get() + 1);
    let mut call = MultiValue::from_vec(vec![Value::Boolean(premature)]);
    call.extend(args);
    let run = lua
        .create_thread(callback)
        .and_then(|t| t.into_async::<()>(call));
    match run {
        Ok(fut) => {
            // A timer's light threads are scheduled as a request's.
            let threads = Rc::new(LightThreads::default());
            let entry = Budgeted::new(&worker.running, fut, None, budget);
            let run = light_threads::drive(&threads, || threads.exited(), entry);
            match TimerScope(timers, threads.clone(), Box::pin(run)).await {
                Ran::Done(Err(e)) => {
                    tracing::error!(target: "moongate::lua", "timer callback failed: {e}")
                }
                Ran::TimedOut => {
                    tracing::error!(target: "moongate::lua", "timer callback stopped: {}", budget::TIMEOUT_MESSAGE)
                }
                _ => {}
            }
        }
        Err(e) => tracing::error!(target: "moongate::lua", "timer callback failed: {e}"),
    }
    timers.running.set(timers.running.get().saturating_sub(1));
}

fn delay(secs: f64) -> mlua::Result<Duration> {
    Duration::try_from_secs_f64(secs).map_err(|_| err("bad delay"))
}

pub(super) fn install(lua: &Lua, ngx: &Table, budget: Duration) -> mlua::Result<()> {
    let timer = lua.create_table()?;
    timer.set(
        "at",
        lua.create_function(
            move |lua, (secs, callback, args): (f64, Function, MultiValue)| {
                let wait = delay(secs)?;
                let worker = worker::of(lua)?.clone();
                let retired = retirement(lua);
                if retired.is_cancelled() && !wait.is_zero() {
                    return Ok((
                        Value::Nil,
                        Value::String(lua.create_string("process exiting")?),
                    ));
                }
                if !worker.timers.reserve() {
                    return Ok((
                        Value::Nil,
                        Value::String(lua.create_string("too many pending timers")?),
                    ));
                }
                let lua = lua.clone();
                tokio::task::spawn_local(async move {
                    let premature = !wait.is_zero()
                        && tokio::select! {
                            biased;
                            () = retired.cancelled() => true,
                            () = tokio::time::sleep(wait) => false,
                        };
                    let pending = &worker.timers.pending;
                    pending.set(pending.get().saturating_sub(1));
                    fire(&worker, lua, (callback, args), budget, premature).await;
                });
                Ok((Value::Boolean(true), Value::Nil))
            },
        )?,
    )?;
    timer.set(
        "every",
        lua.create_function(
            move |lua, (secs, callback, args): (f64, Function, MultiValue)| {
                let every = delay(secs)?;
                if every.is_zero() {
                    return Err(err("bad delay: the interval must be above 0"));
                }
                let worker = worker::of(lua)?.clone();
                let retired = retirement(lua);
                if retired.is_cancelled() {
                    return Ok((
                        Value::Nil,
                        Value::String(lua.create_string("process exiting")?),
                    ));
                }
                if !worker.timers.reserve() {
                    return Ok((
                        Value::Nil,
                        Value::String(lua.create_string("too many pending timers")?),
                    ));
                }
                let lua = lua.clone();
                tokio::task::spawn_local(async move {
                    let mut tick =
                        tokio::time::interval_at(tokio::time::Instant::now() + every, every);
                    loop {
                        let premature = tokio::select! {
                            biased;
                            () = retired.cancelled() => true,
                            _ = tick.tick() => false,
                        };
                        let call = (callback.clone(), args.clone());
                        fire(&worker, lua.clone(), call, budget, premature).await;
                        if premature {
                            break;
                        }
                    }
                    let pending = &worker.timers.pending;
                    pending.set(pending.get().saturating_sub(1));
                });
                Ok((Value::Boolean(true), Value::Nil))
            },
        )?,
    )?;
    timer.set(
        "pending_count",
        lua.create_function(|lua, ()| Ok(worker::of(lua)?.timers.pending.get()))?,
    )?;
    timer.set(
        "running_count",
        lua.create_function(|lua, ()| Ok(worker::of(lua)?.timers.running.get()))?,
    )?;
    ngx.set("timer", timer)?;

    thread::install(lua, ngx, budget)?;
    Ok(())
}

//! `ngx.timer.at` / `ngx.timer.every` (callbacks in the `timer` phase, on
//! the worker's event loop, outside any request) and `ngx.thread.spawn` /
//! `wait` / `kill` (light threads sharing their parent's request). Both are
//! coroutines run as local tasks under the time budget.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

use mlua::{
    AnyUserData, Function, Lua, MultiValue, Table, UserData, UserDataMethods, Value, Variadic,
};
use tokio::task::JoinHandle;

use super::err;
use crate::lua::Phase;
use crate::lua::budget::{self, Budgeted, Ran};

/// Most timers pending at once per worker (ngx_lua's lua_max_pending_timers).
const MAX_PENDING_TIMERS: usize = 1024;

thread_local! {
    static IN_TIMER: Cell<bool> = const { Cell::new(false) };
    static PENDING: Cell<usize> = const { Cell::new(0) };
    static RUNNING: Cell<usize> = const { Cell::new(0) };
}

/// The phase Lua code runs in when no request is current.
pub(super) fn phase_outside_requests() -> Phase {
    if IN_TIMER.with(Cell::get) {
        Phase::Timer
    } else {
        Phase::Init
    }
}

/// Marks the wrapped future as timer code while it is polled.
struct TimerScope<F>(Pin<Box<F>>);

impl<F: Future> Future for TimerScope<F> {
    type Output = F::Output;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let before = IN_TIMER.with(|t| t.replace(true));
        let out = self.0.as_mut().poll(cx);
        IN_TIMER.with(|t| t.set(before));
        out
    }
}

/// Runs `callback(premature, args...)` once as a timer.
async fn fire(lua: Lua, callback: Function, args: MultiValue, budget: Duration) {
    RUNNING.with(|r| r.set(r.get() + 1));
    let mut call = MultiValue::from_vec(vec![Value::Boolean(false)]);
    call.extend(args);
    let run = lua
        .create_thread(callback)
        .and_then(|t| t.into_async::<()>(call));
    match run {
        Ok(fut) => match TimerScope(Box::pin(Budgeted::new(fut, None, budget))).await {
            Ran::Done(Err(e)) => {
                tracing::error!(target: "moongate::lua", "timer callback failed: {e}")
            }
            Ran::TimedOut => {
                tracing::error!(target: "moongate::lua", "timer callback stopped: {}", budget::TIMEOUT_MESSAGE)
            }
            _ => {}
        },
        Err(e) => tracing::error!(target: "moongate::lua", "timer callback failed: {e}"),
    }
    RUNNING.with(|r| r.set(r.get().saturating_sub(1)));
}

/// Counts one more pending timer, unless the limit is reached.
fn reserve_timer() -> bool {
    PENDING.with(|p| {
        let n = p.get();
        if n >= MAX_PENDING_TIMERS {
            return false;
        }
        p.set(n + 1);
        true
    })
}

fn delay(secs: f64) -> mlua::Result<Duration> {
    Duration::try_from_secs_f64(secs).map_err(|_| err("bad delay"))
}

/// A light thread's task.
struct LightThread {
    task: RefCell<Option<JoinHandle<Ran<mlua::Result<MultiValue>>>>>,
}

impl UserData for LightThread {
    fn add_methods<M: UserDataMethods<Self>>(_: &mut M) {}
}

pub(super) fn install(lua: &Lua, ngx: &Table, budget: Duration) -> mlua::Result<()> {
    let timer = lua.create_table()?;
    timer.set(
        "at",
        lua.create_function(
            move |lua, (secs, callback, args): (f64, Function, MultiValue)| {
                let wait = delay(secs)?;
                if !reserve_timer() {
                    return Ok((
                        Value::Nil,
                        Value::String(lua.create_string("too many pending timers")?),
                    ));
                }
                let lua = lua.clone();
                tokio::task::spawn_local(async move {
                    tokio::time::sleep(wait).await;
                    PENDING.with(|p| p.set(p.get().saturating_sub(1)));
                    fire(lua, callback, args, budget).await;
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
                if !reserve_timer() {
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
                        tick.tick().await;
                        fire(lua.clone(), callback.clone(), args.clone(), budget).await;
                    }
                });
                Ok((Value::Boolean(true), Value::Nil))
            },
        )?,
    )?;
    timer.set(
        "pending_count",
        lua.create_function(|_, ()| Ok(PENDING.with(Cell::get)))?,
    )?;
    timer.set(
        "running_count",
        lua.create_function(|_, ()| Ok(RUNNING.with(Cell::get)))?,
    )?;
    ngx.set("timer", timer)?;

    let thread = lua.create_table()?;
    thread.set(
        "spawn",
        lua.create_function(move |lua, (f, args): (Function, MultiValue)| {
            let fut = lua.create_thread(f)?.into_async::<MultiValue>(args)?;
            let req = budget::current();
            let task = tokio::task::spawn_local(Budgeted::new(fut, req, budget));
            lua.create_userdata(LightThread {
                task: RefCell::new(Some(task)),
            })
        })?,
    )?;
    thread.set(
        "wait",
        lua.create_async_function(|lua, threads: Variadic<AnyUserData>| async move {
            let handles: Vec<Rc<AnyUserData>> = threads.into_iter().map(Rc::new).collect();
            let ran = std::future::poll_fn(|cx| {
                for ud in &handles {
                    let Ok(t) = ud.borrow::<LightThread>() else {
                        continue;
                    };
                    let mut slot = t.task.borrow_mut();
                    let Some(task) = slot.as_mut() else { continue };
                    if let Poll::Ready(out) = Pin::new(task).poll(cx) {
                        *slot = None;
                        return Poll::Ready(Some(out));
                    }
                }
                if handles.iter().all(|ud| {
                    ud.borrow::<LightThread>()
                        .map_or(true, |t| t.task.borrow().is_none())
                }) {
                    return Poll::Ready(None);
                }
                Poll::Pending
            })
            .await;
            let fail = |m: String| -> mlua::Result<MultiValue> {
                Ok(MultiValue::from_vec(vec![
                    Value::Boolean(false),
                    Value::String(lua.create_string(m)?),
                ]))
            };
            match ran {
                None => fail("already waited or killed".into()),
                Some(Ok(Ran::Done(Ok(values)))) => {
                    let mut out = MultiValue::from_vec(vec![Value::Boolean(true)]);
                    out.extend(values);
                    Ok(out)
                }
                Some(Ok(Ran::Done(Err(e)))) => fail(e.to_string()),
                Some(Ok(Ran::TimedOut)) => fail(budget::TIMEOUT_MESSAGE.into()),
                Some(Ok(Ran::Exited)) => fail("the thread called ngx.exit".into()),
                Some(Err(e)) => fail(e.to_string()),
            }
        })?,
    )?;
    thread.set(
        "kill",
        lua.create_function(|lua, t: AnyUserData| {
            let t = t.borrow::<LightThread>()?;
            match t.task.borrow_mut().take() {
                Some(task) => {
                    task.abort();
                    Ok((Value::Boolean(true), Value::Nil))
                }
                None => Ok((
                    Value::Nil,
                    Value::String(lua.create_string("already waited or killed")?),
                )),
            }
        })?,
    )?;
    ngx.set("thread", thread)?;
    Ok(())
}

//! `ngx.thread.spawn` / `wait` / `kill`. A light thread is a coroutine of
//! the request (or timer callback) that spawns it, scheduled with its entry
//! thread by [`crate::lua::light_threads`]; what `spawn` returns is that
//! coroutine (`type(t) == "thread"`, `coroutine.status(t)`), as in ngx_lua.

use std::rc::Rc;
use std::task::Poll;
use std::time::Duration;

use mlua::{Function, Lua, MultiValue, Table, Thread, Value, Variadic};

use crate::lua::budget::{self, Budgeted, Ran};
use crate::lua::light_threads::{Found, Scheduler, Status, ThreadFuture, ThreadRun};
use crate::lua::request::ReqCtx;
use crate::lua::worker;

/// `nil, message`.
fn fail(lua: &Lua, message: &str) -> mlua::Result<MultiValue> {
    Ok(MultiValue::from_vec(vec![
        Value::Nil,
        Value::String(lua.create_string(message)?),
    ]))
}

/// What `ngx.thread.wait` returns for a thread that ran to `out`: `true`
/// and its results, or `false` and its error.
fn results(lua: &Lua, out: ThreadRun) -> mlua::Result<MultiValue> {
    let error = |m: String| -> mlua::Result<MultiValue> {
        Ok(MultiValue::from_vec(vec![
            Value::Boolean(false),
            Value::String(lua.create_string(m)?),
        ]))
    };
    match out {
        Ran::Done(Ok(values)) => {
            let mut out = MultiValue::from_vec(vec![Value::Boolean(true)]);
            out.extend(values);
            Ok(out)
        }
        Ran::Done(Err(e)) => error(error_value(&e)),
        Ran::TimedOut => error(budget::TIMEOUT_MESSAGE.into()),
        Ran::Exited => error("the thread called ngx.exit".into()),
    }
}

/// The message a thread's error was raised with, as ngx_lua's `wait`
/// gives it: without mlua's wrapping and traceback, and without the
/// `chunk:line: ` position `error` adds (`error("bad")` waits as "bad").
fn error_value(e: &mlua::Error) -> String {
    match e {
        mlua::Error::RuntimeError(m) => {
            let m = m.split("\nstack traceback:").next().unwrap_or(m);
            strip_position(m).to_string()
        }
        mlua::Error::CallbackError { cause, .. } => error_value(cause),
        mlua::Error::WithContext { cause, .. } => error_value(cause),
        other => other.to_string(),
    }
}

/// `m` without a leading `chunk:LINE: `.
fn strip_position(m: &str) -> &str {
    let first_line = m.split('\n').next().unwrap_or("");
    let mut from = 0;
    while let Some(i) = first_line[from..].find(": ") {
        let head = &first_line[..from + i];
        if let Some(colon) = head.rfind(':') {
            let line = &head[colon + 1..];
            if !line.is_empty() && line.bytes().all(|b| b.is_ascii_digit()) {
                return &m[from + i + 2..];
            }
        }
        from += i + 2;
    }
    m
}

/// A scheduler and the request (none for a timer) its threads belong to.
type Home = (Rc<Scheduler>, Option<Rc<ReqCtx>>);

/// The scheduler of the running request's phase (or timer callback),
/// made on first use, and that request; `None` where no light thread may
/// run (`init_worker`, an `ngx.on_abort`... outside its handler).
fn scheduler(lua: &Lua) -> mlua::Result<Option<Home>> {
    let worker = worker::of(lua)?;
    Ok(match worker.running.current() {
        Some(r) => r.light.scheduler().map(|s| (s, Some(r))),
        None => worker
            .timers
            .light_threads()
            .and_then(|l| l.scheduler())
            .map(|s| (s, None)),
    })
}

/// The scheduler of the running phase (or timer callback), if it spawned
/// a thread.
fn existing(lua: &Lua) -> mlua::Result<Option<Rc<Scheduler>>> {
    let worker = worker::of(lua)?;
    Ok(match worker.running.current() {
        Some(r) => r.light.existing(),
        None => worker.timers.light_threads().and_then(|l| l.existing()),
    })
}

/// The light thread `v` (argument `i` of `name`) of the request.
fn find(lua: &Lua, s: &Scheduler, v: &Value, i: usize, name: &str) -> mlua::Result<Found> {
    let Value::Thread(t) = v else {
        return Err(mlua::Error::runtime(format!(
            "bad argument #{i} to '{name}' (lua thread expected)"
        )));
    };
    s.find(t, lua.current_thread().to_pointer()).ok_or_else(|| {
        mlua::Error::runtime("attempt to wait on a coroutine that is not a user thread")
    })
}

/// `coroutine.status` of a light thread of the running request:
/// "running" (alive), "zombie" or "dead"; nil for any other coroutine.
pub(in crate::lua::api) fn status(lua: &Lua, co: &Thread) -> mlua::Result<Option<&'static str>> {
    Ok(existing(lua)?
        .and_then(|s| s.status(co))
        .map(|st| match st {
            Status::Running => "running",
            Status::Zombie => "zombie",
            Status::Dead => "dead",
        }))
}

pub(super) fn install(lua: &Lua, ngx: &Table, budget: Duration) -> mlua::Result<()> {
    let thread = lua.create_table()?;
    thread.set(
        "spawn",
        lua.create_async_function(move |lua, (f, args): (Function, MultiValue)| async move {
            let Some((s, req)) = scheduler(&lua)? else {
                let worker = worker::of(&lua)?;
                let phase = match worker.running.current() {
                    Some(r) => r.phase.get(),
                    None => worker.timers.phase_outside_requests(),
                };
                return Err(phase.disabled());
            };
            let worker = worker::of(&lua)?.clone();
            let parent = lua.current_thread().to_pointer();
            let co = lua.create_thread(f)?;
            let fut = co.clone().into_async::<MultiValue>(args)?;
            let run: ThreadFuture = Box::pin(async move {
                let worker = worker;
                Budgeted::new(&worker.running, fut, req, budget).await
            });
            // Runs the thread until it first waits and posts this one.
            s.spawn(co.clone(), parent, run);
            drop(s);
            // This thread goes on when its turn in the queue comes.
            let mut posted = false;
            std::future::poll_fn(|_| {
                if std::mem::replace(&mut posted, true) {
                    Poll::Ready(())
                } else {
                    Poll::Pending
                }
            })
            .await;
            Ok(Value::Thread(co))
        })?,
    )?;
    thread.set(
        "wait",
        lua.create_async_function(|lua, threads: Variadic<Value>| async move {
            if threads.is_empty() {
                return Err(mlua::Error::runtime(
                    "at least one coroutine should be specified",
                ));
            }
            let Some(s) = existing(&lua)? else {
                return Err(mlua::Error::runtime(
                    "attempt to wait on a coroutine that is not a user thread",
                ));
            };
            let mut found = Vec::with_capacity(threads.len());
            for (i, v) in threads.iter().enumerate() {
                let t = find(&lua, &s, v, i + 1, "wait")?;
                if !t.by_parent {
                    return Err(mlua::Error::runtime(
                        "only the parent coroutine can wait on the thread",
                    ));
                }
                found.push(t);
            }
            let last = found.len() - 1;
            for (i, t) in found.iter().enumerate() {
                match s.status_of(t) {
                    Status::Zombie => match s.reap(t) {
                        Some(out) => return results(&lua, out),
                        None => return fail(&lua, "already waited or killed"),
                    },
                    Status::Dead if i == last => return fail(&lua, "already waited or killed"),
                    Status::Dead => {}
                    Status::Running => s.set_waited(t, true),
                }
            }
            // The scheduler runs this thread next when one of them ends.
            let out = std::future::poll_fn(|_| match found.iter().find_map(|t| s.reap(t)) {
                Some(out) => Poll::Ready(out),
                None => Poll::Pending,
            })
            .await;
            for t in &found {
                s.set_waited(t, false);
            }
            results(&lua, out)
        })?,
    )?;
    thread.set(
        "kill",
        lua.create_function(|lua, t: Value| {
            let Value::Thread(co) = &t else {
                return Err(mlua::Error::runtime(
                    "bad argument #1 to 'kill' (lua thread expected)",
                ));
            };
            let Some(s) = existing(lua)? else {
                return fail(lua, "not user thread");
            };
            let Some(found) = s.find(co, lua.current_thread().to_pointer()) else {
                return fail(lua, "not user thread");
            };
            if !found.by_parent {
                return fail(lua, "killer not parent");
            }
            match s.status_of(&found) {
                Status::Zombie => {
                    s.kill(&found);
                    fail(lua, "already terminated")
                }
                Status::Dead => fail(lua, "already waited or killed"),
                Status::Running => {
                    s.kill(&found);
                    Ok(MultiValue::from_vec(vec![Value::Integer(1)]))
                }
            }
        })?,
    )?;
    ngx.set("thread", thread)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::strip_position;

    #[test]
    fn error_positions_are_stripped_as_ngx_lua_waits_them() {
        assert_eq!(strip_position("/tmp/a.toml:14: bad bad!"), "bad bad!");
        assert_eq!(strip_position("x:1: a: b:2: c"), "a: b:2: c");
        assert_eq!(strip_position("no position: here"), "no position: here");
        assert_eq!(strip_position("plain"), "plain");
        assert_eq!(strip_position("a:b: c:3: d"), "d");
    }
}

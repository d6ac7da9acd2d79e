//! `ngx.semaphore`, as lua-resty-core's: `new(n)`, `sema:post(n)`,
//! `sema:wait(timeout)` (yields the coroutine until a resource is posted
//! or the timeout passes: `true` or `nil, "timeout"`), `sema:count()`
//! (resources, or minus the number of waiters).
//!
//! A semaphore lives in the Lua VM that made it, so it is per worker
//! thread, as ngx_lua's is per worker process: light threads and requests
//! of one worker hand resources to each other (keep it in a module-level
//! table), other workers never see it. Waiting is not CPU time: the
//! handler's time budget does not run while it waits.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use mlua::{Lua, MultiValue, Table, UserData, UserDataRef, Value};

/// The Lua side: lua-resty-core's argument checks and error strings over
/// the Rust functions it is called with.
const MODULE: &str = r#"
local new_sema, wait, post, count = ...
local _M = { version = "0.1.28" }
local mt = { __index = _M }

function _M.new(n)
    n = tonumber(n) or 0
    if n < 0 then
        error("no negative number", 2)
    end
    return setmetatable({ sem = new_sema(n) }, mt)
end

local function check(self)
    if type(self) ~= "table" or type(self.sem) ~= "userdata" then
        error("not a semaphore instance", 3)
    end
end

function _M.wait(self, seconds)
    check(self)
    if ngx.get_phase() == "init" then
        error("no request found")
    end
    local milliseconds = tonumber(seconds) * 1000
    if milliseconds < 0 then
        error("no negative number", 2)
    end
    return wait(self.sem, milliseconds)
end

function _M.post(self, n)
    check(self)
    local num = n and tonumber(n) or 1
    if num < 1 then
        error("positive number required", 2)
    end
    post(self.sem, num)
    return true
end

function _M.count(self)
    check(self)
    return count(self.sem)
end

return _M
"#;

/// One waiting light thread: granted a resource by `post`, woken then.
#[derive(Default)]
struct Waiter {
    granted: Cell<bool>,
    waker: RefCell<Option<Waker>>,
}

/// A semaphore's state.
#[derive(Default)]
struct State {
    resources: i64,
    queue: VecDeque<Rc<Waiter>>,
}

/// The userdata behind a semaphore object's `sem` field.
#[derive(Clone, Default)]
struct Sema(Rc<RefCell<State>>);

impl UserData for Sema {}

impl Sema {
    /// Releases `n` resources: the first waiters get them (and are woken),
    /// the rest are kept.
    fn post(&self, n: i64) {
        let mut s = self.0.borrow_mut();
        for _ in 0..n {
            match s.queue.pop_front() {
                Some(w) => {
                    w.granted.set(true);
                    if let Some(waker) = w.waker.borrow_mut().take() {
                        waker.wake();
                    }
                }
                None => s.resources += 1,
            }
        }
    }

    fn count(&self) -> i64 {
        let s = self.0.borrow();
        s.resources - s.queue.len() as i64
    }

    /// Takes a resource, waiting up to `timeout` for one; whether it got one.
    async fn wait(&self, timeout: Duration) -> bool {
        let waiter = {
            let mut s = self.0.borrow_mut();
            if s.resources > 0 {
                s.resources -= 1;
                return true;
            }
            if timeout.is_zero() {
                return false;
            }
            let w = Rc::new(Waiter::default());
            s.queue.push_back(w.clone());
            w
        };
        let mut queued = Queued {
            sema: self,
            waiter,
            taken: false,
        };
        let _ = tokio::time::timeout(timeout, Granted(&queued.waiter)).await;
        // A grant that raced the timeout still counts.
        queued.taken = queued.waiter.granted.get();
        queued.taken
    }
}

/// Resolves once the waiter is granted a resource.
struct Granted<'a>(&'a Waiter);

impl Future for Granted<'_> {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0.granted.get() {
            return Poll::Ready(());
        }
        *self.0.waker.borrow_mut() = Some(cx.waker().clone());
        Poll::Pending
    }
}

/// A place in the queue, given up when the wait ends however it ends (the
/// request may be dropped mid-wait): a waiter still queued leaves the
/// queue; one granted a resource it did not take passes it on.
struct Queued<'a> {
    sema: &'a Sema,
    waiter: Rc<Waiter>,
    taken: bool,
}

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        if self.waiter.granted.get() {
            if !self.taken {
                self.sema.post(1);
            }
            return;
        }
        self.sema
            .0
            .borrow_mut()
            .queue
            .retain(|w| !Rc::ptr_eq(w, &self.waiter));
    }
}

/// Registers `ngx.semaphore` in `preload`.
pub(super) fn install(lua: &Lua, preload: &Table) -> mlua::Result<()> {
    let new_sema = lua.create_function(|_, n: f64| {
        let sema = Sema::default();
        sema.0.borrow_mut().resources = n as i64;
        Ok(sema)
    })?;
    let wait = lua.create_async_function(|lua, (sema, ms): (UserDataRef<Sema>, f64)| {
        let sema = sema.clone();
        async move {
            let timeout = Duration::try_from_secs_f64(ms / 1000.0).unwrap_or(Duration::MAX);
            if sema.wait(timeout).await {
                return Ok((Value::Boolean(true), Value::Nil));
            }
            Ok((Value::Nil, Value::String(lua.create_string("timeout")?)))
        }
    })?;
    let post = lua.create_function(|_, (sema, n): (UserDataRef<Sema>, f64)| {
        sema.post(n as i64);
        Ok(())
    })?;
    let count = lua.create_function(|_, sema: UserDataRef<Sema>| Ok(sema.count()))?;
    let module = lua
        .load(MODULE)
        .set_name("=ngx.semaphore")
        .into_function()?;
    preload.set(
        "ngx.semaphore",
        lua.create_function(move |_, _: MultiValue| {
            module.call::<Value>((new_sema.clone(), wait.clone(), post.clone(), count.clone()))
        })?,
    )
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::Sema;

    #[tokio::test(start_paused = true)]
    async fn post_hands_resources_to_waiters_in_order() {
        let local = tokio::task::LocalSet::new();
        local
            .run_until(async {
                let sema = Sema::default();
                assert!(!sema.wait(Duration::ZERO).await);
                let (a, b) = (sema.clone(), sema.clone());
                let first =
                    tokio::task::spawn_local(async move { a.wait(Duration::from_secs(5)).await });
                let second =
                    tokio::task::spawn_local(async move { b.wait(Duration::from_secs(1)).await });
                tokio::task::yield_now().await;
                assert_eq!(sema.count(), -2);
                sema.post(1);
                assert_eq!(sema.count(), -1);
                assert_eq!(first.await.ok(), Some(true));
                // The second times out; its place in the queue goes.
                assert_eq!(second.await.ok(), Some(false));
                assert_eq!(sema.count(), 0);
                sema.post(2);
                assert_eq!(sema.count(), 2);
                assert!(sema.wait(Duration::ZERO).await);
                assert_eq!(sema.count(), 1);
            })
            .await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_dropped_waiter_passes_its_grant_on() {
        let sema = Sema::default();
        let waiting = sema.wait(Duration::from_secs(5));
        let mut waiting = Box::pin(waiting);
        assert!(futures_util::poll!(&mut waiting).is_pending());
        sema.post(1);
        drop(waiting);
        assert_eq!(sema.count(), 1);
    }
}

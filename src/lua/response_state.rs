//! The state of a response as Lua handlers make it, in ngx_lua's model:
//! [`Output`] says whether the headers are out (the first `ngx.say` /
//! `ngx.print`, `ngx.send_headers`, `ngx.flush`, `ngx.eof`) and with which
//! status, whether `ngx.eof` ended the body, and keeps the `ngx.on_abort`
//! callback; [`FilterArg`] is `ngx.arg` in the body_filter phase. The
//! bodies that act on them are [`super::stream`] and
//! [`super::body_filter`].

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::task::{Poll, Waker};

use bytes::Bytes;
use mlua::Function;

/// The output side of one request's Lua handlers.
#[derive(Default)]
pub struct Output {
    /// The status the headers went out with (`None`: not sent yet).
    sent_status: Cell<Option<u16>>,
    /// `ngx.eof()` was called: the body ends once the output is taken.
    eof: Cell<bool>,
    /// The `ngx.flush(true)` calls (one per light thread) waiting for the
    /// output to be taken.
    flush_waiters: RefCell<Vec<Waker>>,
    /// `ngx.on_abort(callback)`.
    on_abort: RefCell<Option<Function>>,
    /// `ngx.on_abort` was called (a second call is refused, as ngx_lua does).
    abort_registered: Cell<bool>,
}

impl Output {
    /// Whether the response headers have gone out (`ngx.headers_sent`).
    pub fn headers_sent(&self) -> bool {
        self.sent_status.get().is_some()
    }

    /// The status the headers went out with.
    pub fn sent_status(&self) -> Option<u16> {
        self.sent_status.get()
    }

    /// Sends the headers, with `status` (0: not set, so 200), unless they
    /// are out already.
    pub fn send_headers(&self, status: u16) {
        if self.sent_status.get().is_none() {
            self.sent_status
                .set(Some(if status == 0 { 200 } else { status }));
        }
    }

    /// Marks the end of the body (`ngx.eof`).
    pub fn set_eof(&self) {
        self.eof.set(true);
    }

    /// Whether `ngx.eof` was called.
    pub fn eof(&self) -> bool {
        self.eof.get()
    }

    /// Registers the `ngx.on_abort` callback; `Err` with ngx_lua's message
    /// on a second call.
    pub fn set_on_abort(&self, callback: Function) -> Result<(), &'static str> {
        if self.abort_registered.replace(true) {
            return Err("duplicate call");
        }
        *self.on_abort.borrow_mut() = Some(callback);
        Ok(())
    }

    /// The `ngx.on_abort` callback, taken (it runs at most once).
    pub fn take_on_abort(&self) -> Option<Function> {
        self.on_abort.borrow_mut().take()
    }

    /// Waits until `out` has been taken by the body (`ngx.flush(true)`).
    pub fn flushed<'a>(&'a self, out: &'a RefCell<Vec<u8>>) -> impl Future<Output = ()> + 'a {
        std::future::poll_fn(move |cx| {
            if out.borrow().is_empty() {
                return Poll::Ready(());
            }
            let mut waiters = self.flush_waiters.borrow_mut();
            if !waiters.iter().any(|w| w.will_wake(cx.waker())) {
                waiters.push(cx.waker().clone());
            }
            Poll::Pending
        })
    }

    /// Wakes the `ngx.flush(true)` calls (one per light thread) waiting
    /// for the output to be taken.
    pub fn wake_flush(&self) {
        let waiters = std::mem::take(&mut *self.flush_waiters.borrow_mut());
        for w in waiters {
            w.wake();
        }
    }
}

/// `ngx.arg` in the body_filter phase.
#[derive(Default)]
pub struct FilterArg {
    /// `ngx.arg[1]`: the chunk (handlers may replace it).
    pub chunk: Bytes,
    /// `ngx.arg[2]`: the last chunk (handlers may set it to end the body).
    pub eof: bool,
}

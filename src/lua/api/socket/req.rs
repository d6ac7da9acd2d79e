//! `ngx.req.socket()`: ngx_lua's read-only cosocket over the request body
//! still arriving from the client, with `receive`, `receiveany`,
//! `receiveuntil`, `settimeout` and `settimeouts` (the methods ngx_lua
//! gives it), read by the shared [`reader`](super::reader).
//!
//! The body stays the request's ([`ReqCtx::body`]): a read takes it out
//! while it waits and puts back what it read but did not hand to Lua, so
//! whatever the script has not read is still there for
//! `ngx.req.read_body()` or for the upstream (whose Content-Length is
//! shortened by what the script read, [`ReqCtx::body_socket`]).
//! `ngx.req.socket(true)` (the raw, full-duplex form) is not offered: the
//! client connection belongs to moongate's HTTP stack.

use std::cell::Cell;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::BytesMut;
use http_body::Body;
use http_body_util::BodyExt;
use mlua::{Function, Lua, MultiValue, Table, Value};

use super::reader::{self, Read, Source};
use super::{DEFAULT_TIMEOUT, Owner, fail, timeout_arg};
use crate::body::{RequestBody, RequestBodyError};
use crate::lua::Phase;
use crate::lua::api::{err, lua_int, req};
use crate::lua::request::ReqCtx;
use crate::lua::worker;

/// What `ngx.req.socket(true)` returns after `nil`.
const RAW_UNSUPPORTED: &str = "raw request sockets are not supported by moongate";

/// One request-body cosocket.
struct ReqSocket {
    owner: Owner,
    read_timeout: Cell<Duration>,
    /// A read is waiting (another light thread gets "socket busy reading").
    busy: Cell<bool>,
}

/// The request body taken out of the request for one read; dropping it
/// (the read ended, or its thread was killed) puts back what was not
/// handed to Lua and counts what was.
struct BodyReader {
    r: Rc<ReqCtx>,
    sock: Rc<ReqSocket>,
    body: RequestBody,
    buf: BytesMut,
    /// Bytes in `buf` and read from `body` so far.
    seen: u64,
}

impl BodyReader {
    /// Takes the body of the request running now; `Err` is the error
    /// string for Lua.
    fn take(lua: &Lua, sock: &Rc<ReqSocket>) -> mlua::Result<Result<BodyReader, &'static str>> {
        if sock.busy.get() {
            return Ok(Err("socket busy reading"));
        }
        let r = req(lua)?;
        let mut body = std::mem::replace(&mut *r.body.borrow_mut(), RequestBody::empty());
        let buf = body.take_held().map(BytesMut::from).unwrap_or_default();
        sock.busy.set(true);
        Ok(Ok(BodyReader {
            r,
            sock: sock.clone(),
            body,
            seen: buf.len() as u64,
            buf,
        }))
    }
}

impl Drop for BodyReader {
    fn drop(&mut self) {
        self.sock.busy.set(false);
        let read = self.seen.saturating_sub(self.buf.len() as u64);
        let before = self.r.body_socket.get().unwrap_or(0);
        self.r.body_socket.set(Some(before + read));
        let mut body = std::mem::replace(&mut self.body, RequestBody::empty());
        body.unread(self.buf.split().freeze());
        if let Ok(mut slot) = self.r.body.try_borrow_mut() {
            *slot = body;
        }
    }
}

impl Source for BodyReader {
    fn buf(&mut self) -> &mut BytesMut {
        &mut self.buf
    }

    async fn fill(&mut self, timeout: Duration) -> Result<usize, String> {
        loop {
            let frame = match tokio::time::timeout(timeout, self.body.frame()).await {
                Err(_) => return Err("timeout".into()),
                Ok(None) => return Ok(0),
                Ok(Some(Err(e))) => return Err(body_error(&e)),
                Ok(Some(Ok(frame))) => frame,
            };
            // Trailers (HTTP/2) carry no body bytes.
            if let Ok(data) = frame.into_data()
                && !data.is_empty()
            {
                self.seen += data.len() as u64;
                self.buf.extend_from_slice(&data);
                return Ok(data.len());
            }
        }
    }
}

/// A body that failed, as the socket reports it: the client going away
/// reads as "closed" (what ngx_lua's req socket says when the client
/// closes early).
fn body_error(e: &RequestBodyError) -> String {
    match e {
        RequestBodyError::Timeout => "timeout".into(),
        RequestBodyError::TooLarge => e.to_string(),
        RequestBodyError::Client(_) => "closed".into(),
    }
}

/// The socket state of method receiver `this` (a socket table).
fn this(lua: &Lua, this: &Table) -> mlua::Result<Rc<ReqSocket>> {
    super::state(lua, this, "tcp")
}

impl super::Owned for ReqSocket {
    fn owner(&self) -> &Owner {
        &self.owner
    }
}

/// `ngx.req.socket`: makes request-body socket tables sharing one
/// metatable of methods (its own fields, reached through `__index`, as in
/// ngx_lua).
pub(super) fn constructor(lua: &Lua) -> mlua::Result<Function> {
    let methods = lua.create_table()?;
    methods.set("receive", lua.create_async_function(receive)?)?;
    methods.set("receiveany", lua.create_async_function(receiveany)?)?;
    methods.set("receiveuntil", lua.create_function(receiveuntil)?)?;
    methods.set("settimeout", lua.create_function(settimeout)?)?;
    methods.set("settimeouts", lua.create_function(settimeouts)?)?;
    methods.set("__index", methods.clone())?;
    let meta = methods;
    lua.create_function(move |lua, args: MultiValue| {
        if args.len() > 1 {
            return Err(err(format!(
                "expecting zero arguments, but got {}",
                args.len()
            )));
        }
        let raw =
            matches!(args.front(), Some(v) if !matches!(v, Value::Nil | Value::Boolean(false)));
        let r = req(lua)?;
        if r.subrequest {
            return Err(err("attempt to read the request body in a subrequest"));
        }
        if raw {
            return fail(lua, RAW_UNSUPPORTED);
        }
        if is_chunked(&r) {
            return fail(lua, "chunked request bodies not supported yet");
        }
        let phase = r.phase.get();
        if !matches!(phase, Phase::Rewrite | Phase::Access | Phase::Content) {
            return Err(phase.disabled());
        }
        if r.body_socket.get().is_some() || r.body_data.borrow().is_some() {
            return fail(lua, "request body already exists");
        }
        if r.body.borrow().is_empty() {
            return fail(lua, "no body");
        }
        r.body_socket.set(Some(0));
        send_continue(&r);
        let worker = worker::of(lua)?;
        let (owner, _) = Owner::current(&worker)?;
        let sock = Rc::new(ReqSocket {
            owner,
            read_timeout: Cell::new(DEFAULT_TIMEOUT),
            busy: Cell::new(false),
        });
        Ok(MultiValue::from_vec(vec![Value::Table(
            super::socket_table(lua, sock, &meta)?,
        )]))
    })
}

/// Answers `Expect: 100-continue` now, as nginx does when it hands out
/// the socket (rather than at the first read, when the response may have
/// begun): the body is polled once, without waiting, and what came is
/// put back.
fn send_continue(r: &ReqCtx) {
    let expects = r
        .head
        .borrow()
        .headers
        .get(http::header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    if !expects {
        return;
    }
    let Ok(mut body) = r.body.try_borrow_mut() else {
        return;
    };
    let mut cx = Context::from_waker(Waker::noop());
    if let Poll::Ready(Some(Ok(frame))) = Pin::new(&mut *body).poll_frame(&mut cx)
        && let Ok(data) = frame.into_data()
    {
        body.unread(data);
    }
}

/// An HTTP/1 body sent with `Transfer-Encoding: chunked`.
fn is_chunked(r: &ReqCtx) -> bool {
    r.head
        .borrow()
        .headers
        .get_all(http::header::TRANSFER_ENCODING)
        .iter()
        .any(|v| {
            v.to_str()
                .is_ok_and(|s| s.to_ascii_lowercase().contains("chunked"))
        })
}

async fn receive(lua: Lua, (sock, pattern): (Table, Value)) -> mlua::Result<MultiValue> {
    let sock = this(&lua, &sock)?;
    let pattern = reader::pattern_arg(&pattern)?;
    let mut body = match BodyReader::take(&lua, &sock)? {
        Ok(b) => b,
        Err(e) => return fail(&lua, e),
    };
    let read: Read = reader::receive(&mut body, pattern, sock.read_timeout.get()).await;
    drop(body);
    reader::results(&lua, read)
}

async fn receiveany(lua: Lua, (sock, max): (Table, Value)) -> mlua::Result<MultiValue> {
    let sock = this(&lua, &sock)?;
    let max = reader::max_arg(&max)?;
    let mut body = match BodyReader::take(&lua, &sock)? {
        Ok(b) => b,
        Err(e) => return fail(&lua, e),
    };
    let read = reader::receive_any(&mut body, max, sock.read_timeout.get()).await;
    drop(body);
    reader::any_results(&lua, read)
}

/// `sock:receiveuntil(pattern, {inclusive = bool})`: an iterator function
/// taking an optional size.
fn receiveuntil(
    lua: &Lua,
    (sock, pattern, opts): (Table, mlua::LuaString, Option<Table>),
) -> mlua::Result<MultiValue> {
    let sock = this(lua, &sock)?;
    reader::until_iterator(
        lua,
        &pattern.as_bytes(),
        opts.as_ref(),
        move |lua, until, size| {
            let sock = sock.clone();
            async move {
                sock.owner.check(&lua)?;
                let mut body = match BodyReader::take(&lua, &sock)? {
                    Ok(b) => b,
                    Err(e) => return fail(&lua, e),
                };
                let timeout = sock.read_timeout.get();
                let read = reader::receive_until(&mut body, &until, size, timeout).await;
                drop(body);
                reader::until_results(&lua, read)
            }
        },
    )
}

/// Keeps the timeouts in the socket table's slots 2, 4 and 5 (connect,
/// send, read), where ngx_lua keeps them.
fn store_timeouts(t: &Table, connect: &Value, send: &Value, read: &Value) -> mlua::Result<()> {
    for (slot, v) in [(2, connect), (4, send), (5, read)] {
        t.raw_set(slot, lua_int(v).unwrap_or(0))?;
    }
    Ok(())
}

fn settimeout(lua: &Lua, (t, ms): (Table, Value)) -> mlua::Result<()> {
    let sock = this(lua, &t)?;
    sock.read_timeout.set(timeout_arg(&ms)?);
    store_timeouts(&t, &ms, &ms, &ms)
}

fn settimeouts(lua: &Lua, (t, c, s, r): (Table, Value, Value, Value)) -> mlua::Result<()> {
    let sock = this(lua, &t)?;
    timeout_arg(&c)?;
    timeout_arg(&s)?;
    sock.read_timeout.set(timeout_arg(&r)?);
    store_timeouts(&t, &c, &s, &r)
}

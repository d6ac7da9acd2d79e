//! TCP (and stream unix-domain) cosockets: `ngx.socket.tcp()` and its
//! methods. The connection is held by [`Tcp`]; an operation takes it out
//! while it waits (another light thread then gets "socket busy ...") and
//! puts it back unless the socket was closed meanwhile or the error was
//! fatal (every error but a read timeout, as in ngx_lua). Connecting and
//! TLS are in [`connect`], the reading methods in [`read`].

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;

use bytes::BytesMut;
use mlua::{Function, Lua, MultiValue, Table, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::pool::{DEFAULT_POOL_SIZE, Ticket};
use super::stream::Stream;
use super::tls::TlsClients;
use super::{Closable, DEFAULT_TIMEOUT, Owner, SEND_EXPECTED, fail, io_error, timeout_arg};
use crate::lua::api::{bad_argument, err, lua_int};
use crate::lua::worker;

mod connect;
mod read;

/// Bytes asked of the kernel per read.
const READ_CHUNK: usize = 16 * 1024;

/// One TCP cosocket.
pub(super) struct Tcp {
    owner: Owner,
    connect_timeout: Cell<Duration>,
    send_timeout: Cell<Duration>,
    read_timeout: Cell<Duration>,
    /// The connection, absent while closed or while an operation holds it.
    conn: RefCell<Option<Conn>>,
    /// What holds the connection now ("socket busy reading" ...).
    busy: Cell<Option<&'static str>>,
    /// Bumped by every close and connect: an operation that took the
    /// connection out puts it back only if this did not change.
    generation: Cell<u64>,
    /// `getreusedtimes()` of the current connection.
    reused: Cell<u32>,
}

/// An open connection and what `setkeepalive` needs to pool it.
pub(super) struct Conn {
    pub stream: Stream,
    /// Read but not yet returned to Lua.
    pub buf: BytesMut,
    pool: String,
    pool_size: Option<usize>,
    /// Its place in a pool bounded by `backlog`.
    ticket: Option<Ticket>,
}

impl Closable for Tcp {
    fn force_close(&self) {
        self.generation.set(self.generation.get() + 1);
        if let Ok(mut conn) = self.conn.try_borrow_mut() {
            conn.take();
        }
    }
}

impl Tcp {
    /// Takes the connection for an operation described by `busy`; `Err` is
    /// the error string ("closed", "socket busy ...").
    fn take(&self, busy: &'static str) -> Result<(Conn, u64), &'static str> {
        if let Some(other) = self.busy.get() {
            return Err(other);
        }
        let conn = self.conn.borrow_mut().take().ok_or("closed")?;
        self.busy.set(Some(busy));
        Ok((conn, self.generation.get()))
    }

    /// Ends an operation: the connection goes back if `keep` and the socket
    /// was not closed meanwhile; otherwise it is closed.
    fn give_back(&self, conn: Conn, generation: u64, keep: bool) {
        self.busy.set(None);
        if keep && generation == self.generation.get() {
            *self.conn.borrow_mut() = Some(conn);
        }
    }

    fn close(&self) -> Result<(), &'static str> {
        if let Some(busy) = self.busy.get() {
            return Err(busy);
        }
        self.generation.set(self.generation.get() + 1);
        self.conn.borrow_mut().take().map(drop).ok_or("closed")
    }
}

/// The socket state of method receiver `this` (a socket table).
fn this(lua: &Lua, this: &Table) -> mlua::Result<Rc<Tcp>> {
    super::state(lua, this, "tcp")
}

impl super::Owned for Tcp {
    fn owner(&self) -> &Owner {
        &self.owner
    }
}

fn ok1() -> mlua::Result<MultiValue> {
    Ok(MultiValue::from_vec(vec![Value::Integer(1)]))
}

/// `ngx.socket.tcp`: makes socket tables sharing one metatable of methods.
pub(super) fn constructor(lua: &Lua, tls: Rc<TlsClients>) -> mlua::Result<Function> {
    let methods = lua.create_table()?;
    methods.set("connect", lua.create_async_function(connect::connect)?)?;
    methods.set(
        "sslhandshake",
        lua.create_async_function(move |lua, args| connect::sslhandshake(lua, tls.clone(), args))?,
    )?;
    methods.set("send", lua.create_async_function(send)?)?;
    read::install(lua, &methods)?;
    methods.set("close", lua.create_function(close)?)?;
    methods.set("setkeepalive", lua.create_function(setkeepalive)?)?;
    methods.set("getreusedtimes", lua.create_function(getreusedtimes)?)?;
    methods.set("settimeout", lua.create_function(settimeout)?)?;
    methods.set("settimeouts", lua.create_function(settimeouts)?)?;
    methods.set("setoption", lua.create_function(setoption)?)?;
    // As in ngx_lua, the methods are the metatable's own fields
    // (`getmetatable(sock).connect`), reached through `__index` = itself.
    methods.set("__index", methods.clone())?;
    let meta = methods;
    lua.create_function(move |lua, ()| {
        let worker = worker::of(lua)?;
        let (owner, req) = Owner::current(&worker)?;
        let tcp = Rc::new(Tcp {
            owner,
            connect_timeout: Cell::new(DEFAULT_TIMEOUT),
            send_timeout: Cell::new(DEFAULT_TIMEOUT),
            read_timeout: Cell::new(DEFAULT_TIMEOUT),
            conn: RefCell::new(None),
            busy: Cell::new(None),
            generation: Cell::new(0),
            reused: Cell::new(0),
        });
        if let Some(req) = req {
            let weak: std::rc::Weak<dyn Closable> = Rc::downgrade(&tcp) as _;
            req.sockets.add(weak);
        }
        super::socket_table(lua, tcp, &meta)
    })
}

/// What `send` writes: strings, numbers, booleans, nil, and (nested)
/// tables of them, as ngx_lua renders them.
fn flatten(data: &Value, out: &mut Vec<u8>) -> mlua::Result<()> {
    match data {
        Value::Table(_)
        | Value::String(_)
        | Value::Integer(_)
        | Value::Number(_)
        | Value::Boolean(_)
        | Value::Nil => crate::lua::api::output::push_value(data, out),
        other => Err(bad_argument(1, "send", SEND_EXPECTED, Some(other))),
    }
}

/// `sock:send(data)`: the bytes sent, or `nil, err` (the socket closed).
async fn send(lua: Lua, (sock, data): (Table, Value)) -> mlua::Result<MultiValue> {
    let tcp = this(&lua, &sock)?;
    let mut bytes = Vec::new();
    flatten(&data, &mut bytes)?;
    let (mut conn, generation) = match tcp.take("socket busy writing") {
        Ok(c) => c,
        Err(e) => return fail(&lua, e),
    };
    if bytes.is_empty() {
        tcp.give_back(conn, generation, true);
        return Ok(MultiValue::from_vec(vec![Value::Integer(0)]));
    }
    let write = async {
        conn.stream.write_all(&bytes).await?;
        conn.stream.flush().await
    };
    let sent = tokio::time::timeout(tcp.send_timeout.get(), write).await;
    let outcome = match sent {
        Err(_) => Err("timeout".to_string()),
        Ok(Err(e)) => Err(io_error(&e)),
        Ok(Ok(())) => Ok(bytes.len()),
    };
    tcp.give_back(conn, generation, outcome.is_ok());
    match outcome {
        Ok(n) => Ok(MultiValue::from_vec(vec![Value::Integer(n as i64)])),
        Err(e) => fail(&lua, &e),
    }
}

fn close(lua: &Lua, sock: Table) -> mlua::Result<MultiValue> {
    let tcp = this(lua, &sock)?;
    match tcp.close() {
        Ok(()) => ok1(),
        Err(e) => fail(lua, e),
    }
}

/// `sock:setkeepalive(timeout?, size?)`: into the worker's pool; the
/// socket is closed either way.
fn setkeepalive(
    lua: &Lua,
    (sock, timeout, size): (Table, Value, Value),
) -> mlua::Result<MultiValue> {
    let tcp = this(lua, &sock)?;
    let idle = match &timeout {
        Value::Nil => DEFAULT_TIMEOUT,
        v => match lua_int(v) {
            Some(0) => Duration::ZERO,
            Some(n) if n > 0 => Duration::from_millis(n as u64),
            _ => return Err(err("bad argument #1 to 'setkeepalive' (bad timeout value)")),
        },
    };
    let size = match &size {
        Value::Nil => None,
        v => match lua_int(v) {
            Some(n) if n > 0 => usize::try_from(n).ok(),
            n => {
                return Err(err(format!(
                    "bad \"pool_size\" option value: {}",
                    n.unwrap_or(0)
                )));
            }
        },
    };
    if let Some(busy) = tcp.busy.get() {
        return fail(lua, busy);
    }
    let Some(conn) = tcp.conn.borrow_mut().take() else {
        return fail(lua, "closed");
    };
    tcp.generation.set(tcp.generation.get() + 1);
    if !conn.buf.is_empty() {
        return fail(lua, "unread data in buffer");
    }
    if !conn.stream.is_idle_and_open() {
        return fail(lua, "connection in dubious state");
    }
    let worker = worker::of(lua)?.clone();
    let size = conn.pool_size.or(size).unwrap_or(DEFAULT_POOL_SIZE);
    let id = worker
        .sockets
        .put(&conn.pool, size, conn.stream, tcp.reused.get(), conn.ticket);
    if !idle.is_zero() {
        let pool = conn.pool;
        tokio::task::spawn_local(async move {
            tokio::time::sleep(idle).await;
            worker.sockets.expire(&pool, id);
        });
    }
    ok1()
}

fn getreusedtimes(lua: &Lua, sock: Table) -> mlua::Result<MultiValue> {
    let tcp = this(lua, &sock)?;
    if tcp.conn.borrow().is_none() && tcp.busy.get().is_none() {
        return fail(lua, "closed");
    }
    Ok(MultiValue::from_vec(vec![Value::Integer(i64::from(
        tcp.reused.get(),
    ))]))
}

fn settimeout(lua: &Lua, (sock, ms): (Table, Value)) -> mlua::Result<()> {
    let tcp = this(lua, &sock)?;
    let t = timeout_arg(&ms)?;
    tcp.connect_timeout.set(t);
    tcp.send_timeout.set(t);
    tcp.read_timeout.set(t);
    Ok(())
}

fn settimeouts(lua: &Lua, (sock, c, s, r): (Table, Value, Value, Value)) -> mlua::Result<()> {
    let tcp = this(lua, &sock)?;
    let (c, s, r) = (timeout_arg(&c)?, timeout_arg(&s)?, timeout_arg(&r)?);
    tcp.connect_timeout.set(c);
    tcp.send_timeout.set(s);
    tcp.read_timeout.set(r);
    Ok(())
}

/// `sock:setoption(name, value)`: keepalive, reuseaddr, tcp-nodelay,
/// sndbuf, rcvbuf (TCP connections; accepted and ignored on unix ones).
fn setoption(
    lua: &Lua,
    (sock, name, value): (Table, mlua::LuaString, Value),
) -> mlua::Result<MultiValue> {
    let tcp = this(lua, &sock)?;
    let conn = tcp.conn.borrow();
    let Some(conn) = conn.as_ref() else {
        return fail(lua, tcp.busy.get().unwrap_or("closed"));
    };
    let flag = match &value {
        Value::Boolean(b) => *b,
        v => lua_int(v).is_some_and(|n| n != 0),
    };
    let Some(stream) = conn.stream.plain().tcp() else {
        return Ok(MultiValue::from_vec(vec![Value::Boolean(true)]));
    };
    let s = socket2::SockRef::from(stream);
    let size = || {
        lua_int(&value)
            .and_then(|n| usize::try_from(n).ok())
            .ok_or_else(|| err("bad option value"))
    };
    let done = match name.to_str()?.as_ref() {
        "keepalive" => s.set_keepalive(flag),
        "reuseaddr" => s.set_reuse_address(flag),
        "tcp-nodelay" => s.set_tcp_nodelay(flag),
        "sndbuf" => s.set_send_buffer_size(size()?),
        "rcvbuf" => s.set_recv_buffer_size(size()?),
        other => return fail(lua, &format!("unsupported option: {other}")),
    };
    match done {
        Ok(()) => Ok(MultiValue::from_vec(vec![Value::Boolean(true)])),
        Err(e) => fail(lua, &io_error(&e)),
    }
}

/// Reads at least one more chunk into `conn.buf`: `Ok(0)` at end of
/// stream, `Err("timeout")` after `timeout` without data.
pub(super) async fn fill(conn: &mut Conn, timeout: Duration) -> Result<usize, String> {
    conn.buf.reserve(READ_CHUNK);
    match tokio::time::timeout(timeout, conn.stream.read_buf(&mut conn.buf)).await {
        Err(_) => Err("timeout".into()),
        Ok(Err(e)) => Err(io_error(&e)),
        Ok(Ok(n)) => Ok(n),
    }
}

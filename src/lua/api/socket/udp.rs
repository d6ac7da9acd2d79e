//! UDP (and datagram unix-domain) cosockets: `ngx.socket.udp()` with
//! `setpeername`, `send`, `receive`, `settimeout` and `close`.

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use mlua::{Function, Lua, MultiValue, Table, Value};
use tokio::net::{UdpSocket, UnixDatagram};

use super::{Closable, DEFAULT_TIMEOUT, Owner, SEND_EXPECTED, fail, io_error, timeout_arg};
use crate::lua::api::{bad_argument, err, lua_int};
use crate::lua::worker;

/// ngx_lua's largest datagram `receive` returns.
const MAX_DATAGRAM: usize = 8192;

/// One UDP cosocket.
struct Udp {
    owner: Owner,
    timeout: Cell<Duration>,
    /// The connected socket; operations hold a clone while they wait, so
    /// `close` never waits on them.
    sock: RefCell<Option<Rc<Datagram>>>,
}

enum Datagram {
    Inet(UdpSocket),
    Unix(UnixDatagram),
}

impl Closable for Udp {
    fn force_close(&self) {
        if let Ok(mut s) = self.sock.try_borrow_mut() {
            s.take();
        }
    }
}

/// The socket state of method receiver `this` (a socket table).
fn this(lua: &Lua, this: &Table) -> mlua::Result<Rc<Udp>> {
    super::state(lua, this, "udp")
}

impl super::Owned for Udp {
    fn owner(&self) -> &Owner {
        &self.owner
    }
}

fn ok1() -> mlua::Result<MultiValue> {
    Ok(MultiValue::from_vec(vec![Value::Integer(1)]))
}

/// `ngx.socket.udp`.
pub(super) fn constructor(lua: &Lua) -> mlua::Result<Function> {
    let methods = lua.create_table()?;
    methods.set("setpeername", lua.create_async_function(setpeername)?)?;
    methods.set("send", lua.create_async_function(send)?)?;
    methods.set("receive", lua.create_async_function(receive)?)?;
    methods.set(
        "settimeout",
        lua.create_function(|lua, (sock, ms): (Table, Value)| {
            this(lua, &sock)?.timeout.set(timeout_arg(&ms)?);
            Ok(())
        })?,
    )?;
    methods.set(
        "close",
        lua.create_function(|lua, sock: Table| {
            let udp = this(lua, &sock)?;
            let open = udp.sock.borrow_mut().take();
            match open {
                Some(_) => ok1(),
                None => fail(lua, "closed"),
            }
        })?,
    )?;
    // As in ngx_lua, the methods are the metatable's own fields
    // (`getmetatable(sock).connect`), reached through `__index` = itself.
    methods.set("__index", methods.clone())?;
    let meta = methods;
    lua.create_function(move |lua, ()| {
        let worker = worker::of(lua)?;
        let (owner, req) = Owner::current(&worker)?;
        let udp = Rc::new(Udp {
            owner,
            timeout: Cell::new(DEFAULT_TIMEOUT),
            sock: RefCell::new(None),
        });
        if let Some(req) = req {
            let weak: std::rc::Weak<dyn Closable> = Rc::downgrade(&udp) as _;
            req.sockets.add(weak);
        }
        super::socket_table(lua, udp, &meta)
    })
}

/// `sock:setpeername(host, port)` / `sock:setpeername("unix:/path")`.
async fn setpeername(
    lua: Lua,
    (sock, host, port): (Table, mlua::LuaString, Value),
) -> mlua::Result<MultiValue> {
    let udp = this(&lua, &sock)?;
    let host = host.to_str()?.to_string();
    // Naming a new peer closes the old socket first.
    udp.sock.borrow_mut().take();
    let made = match host.strip_prefix("unix:") {
        Some(path) => UnixDatagram::unbound()
            .and_then(|s| s.connect(path).map(|()| s))
            .map(Datagram::Unix)
            .map_err(|e| io_error(&e)),
        None => {
            let port = lua_int(&port)
                .and_then(|p| u16::try_from(p).ok())
                .ok_or_else(|| err("bad argument #2 to 'setpeername' (bad port number)"))?;
            let connected =
                tokio::time::timeout(udp.timeout.get(), connect_inet(&host, port)).await;
            match connected {
                Err(_) => Err("timeout".to_string()),
                Ok(r) => r.map(Datagram::Inet),
            }
        }
    };
    match made {
        Ok(d) => {
            *udp.sock.borrow_mut() = Some(Rc::new(d));
            ok1()
        }
        Err(e) => fail(&lua, &e),
    }
}

async fn connect_inet(host: &str, port: u16) -> Result<UdpSocket, String> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let addr = match bare.parse::<std::net::IpAddr>() {
        Ok(ip) => SocketAddr::new(ip, port),
        Err(_) => {
            let found: Vec<SocketAddr> = tokio::net::lookup_host((bare, port))
                .await
                .map_err(|e| format!("{host} could not be resolved ({e})"))?
                .collect();
            if found.is_empty() {
                return Err(format!("{host} could not be resolved (3: Host not found)"));
            }
            found[fastrand::usize(..found.len())]
        }
    };
    let local: SocketAddr = if addr.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        ([0u16; 8], 0).into()
    };
    let sock = UdpSocket::bind(local).await.map_err(|e| io_error(&e))?;
    sock.connect(addr).await.map_err(|e| io_error(&e))?;
    Ok(sock)
}

/// `sock:send(data)`: `1`, or `nil, err`.
async fn send(lua: Lua, (sock, data): (Table, Value)) -> mlua::Result<MultiValue> {
    let udp = this(&lua, &sock)?;
    let mut bytes = Vec::new();
    match &data {
        Value::Table(_)
        | Value::String(_)
        | Value::Integer(_)
        | Value::Number(_)
        | Value::Boolean(_)
        | Value::Nil => crate::lua::api::output::push_value(&data, &mut bytes)?,
        other => {
            return Err(bad_argument(1, "send", SEND_EXPECTED, Some(other)));
        }
    }
    let Some(d) = udp.sock.borrow().clone() else {
        return fail(&lua, "closed");
    };
    let sent = match &*d {
        Datagram::Inet(s) => s.send(&bytes).await,
        Datagram::Unix(s) => s.send(&bytes).await,
    };
    match sent {
        Ok(_) => ok1(),
        Err(e) => fail(&lua, &io_error(&e)),
    }
}

/// `sock:receive(size?)`: one datagram (at most 8192 bytes), or
/// `nil, "timeout"` (the socket stays usable).
async fn receive(lua: Lua, (sock, size): (Table, Value)) -> mlua::Result<MultiValue> {
    let udp = this(&lua, &sock)?;
    let size = match &size {
        Value::Nil => MAX_DATAGRAM,
        v => match lua_int(v) {
            Some(n) if n >= 0 => usize::try_from(n).unwrap_or(MAX_DATAGRAM).min(MAX_DATAGRAM),
            _ => return Err(err("bad argument #1 to 'receive' (bad size argument)")),
        },
    };
    let Some(d) = udp.sock.borrow().clone() else {
        return fail(&lua, "closed");
    };
    let mut buf = vec![0u8; size.max(1)];
    let got = tokio::time::timeout(udp.timeout.get(), async {
        match &*d {
            Datagram::Inet(s) => s.recv(&mut buf).await,
            Datagram::Unix(s) => s.recv(&mut buf).await,
        }
    })
    .await;
    match got {
        Err(_) => fail(&lua, "timeout"),
        Ok(Err(e)) => fail(&lua, &io_error(&e)),
        Ok(Ok(n)) => Ok(MultiValue::from_vec(vec![Value::String(
            lua.create_string(&buf[..n.min(size)])?,
        )])),
    }
}

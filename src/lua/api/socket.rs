//! `ngx.socket`: ngx_lua's cosockets. `tcp()` / `stream()` ([`tcp`]),
//! `udp()` ([`udp`]) and the `connect` shortcut. A socket object is a
//! table (as in ngx_lua, so libraries may index and compare it) holding
//! the Rust state at index 1, with the methods in its metatable. Every
//! wait is an async function, so the request's coroutine yields and the
//! time spent waiting is outside its time budget (which
//! [`Budgeted`](crate::lua::budget::Budgeted) counts per poll).
//!
//! A socket belongs to the request (or timer) that made it: another
//! request using it gets ngx_lua's "bad request" error, and the request's
//! end closes what is still open ([`RequestSockets`]). Idle kept-alive
//! connections live in the worker's [`SocketPool`]. `ngx.req.socket()`
//! ([`req`]) reads the request body with the same reading methods
//! ([`reader`]).

use std::cell::RefCell;
use std::path::PathBuf;
use std::rc::{Rc, Weak};
use std::time::Duration;

use mlua::{Function, Lua, MultiValue, Table, Value};

mod pool;
mod reader;
mod req;
mod stream;
mod tcp;
pub mod tls;
mod udp;
mod until;

pub use pool::SocketPool;

use super::err;
use crate::lua::Phase;
use crate::lua::request::ReqCtx;
use crate::lua::worker::{self, LuaWorker};

/// What a cosocket's `send` takes (its argument error says so).
const SEND_EXPECTED: &str = "string, number, boolean, nil, or array table";

/// ngx_lua's `lua_socket_{connect,send,read}_timeout` and
/// `lua_socket_keepalive_timeout` defaults.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// The cosockets a request opened, closed when the request ends (dropped
/// with its [`ReqCtx`]) if the script did not close them or keep them
/// alive.
#[derive(Default)]
pub struct RequestSockets(RefCell<Vec<Weak<dyn Closable>>>);

impl RequestSockets {
    fn add(&self, sock: Weak<dyn Closable>) {
        let mut list = self.0.borrow_mut();
        list.retain(|s| s.strong_count() > 0);
        list.push(sock);
    }
}

impl Drop for RequestSockets {
    fn drop(&mut self) {
        for sock in self.0.get_mut().drain(..) {
            if let Some(sock) = sock.upgrade() {
                sock.force_close();
            }
        }
    }
}

/// A socket the request's end closes.
trait Closable {
    fn force_close(&self);
}

/// Which request (or timer, `None`) a socket belongs to.
struct Owner(Option<Weak<ReqCtx>>);

impl Owner {
    /// The request running now on `worker`; registers `sock` to be closed
    /// at its end. Raises in `init`, where ngx_lua disables cosockets.
    fn current(worker: &LuaWorker) -> mlua::Result<(Owner, Option<Rc<ReqCtx>>)> {
        let req = worker.running.current();
        if req.is_none() {
            let phase = worker.timers.phase_outside_requests();
            if phase != Phase::Timer {
                return Err(phase.disabled());
            }
        }
        Ok((Owner(req.as_ref().map(Rc::downgrade)), req))
    }

    /// ngx_lua's "bad request" unless the code running now is the owner's.
    fn check(&self, lua: &Lua) -> mlua::Result<()> {
        let now = worker::of(lua)?.running.current();
        let same = match (&self.0, &now) {
            (None, None) => true,
            (Some(owner), Some(now)) => std::ptr::eq(owner.as_ptr(), Rc::as_ptr(now)),
            _ => false,
        };
        if same {
            Ok(())
        } else {
            Err(err("bad request"))
        }
    }
}

/// The userdata at index 1 of a socket table: the socket's Rust state.
struct Handle<T>(Rc<T>);

impl<T: 'static> mlua::UserData for Handle<T> {}

/// A socket's state: it knows its owner.
trait Owned {
    fn owner(&self) -> &Owner;
}

/// The state of method receiver `this` (a socket table of sockets of
/// `kind`), checked to belong to the code running now.
fn state<T: Owned + 'static>(lua: &Lua, this: &Table, kind: &str) -> mlua::Result<Rc<T>> {
    let ud: mlua::AnyUserData = this
        .raw_get(1)
        .map_err(|_| err(format!("bad argument #1 ({kind} socket expected)")))?;
    let state = ud.borrow::<Handle<T>>()?.0.clone();
    state.owner().check(lua)?;
    Ok(state)
}

/// A socket table holding `state`, with the methods in `meta`.
fn socket_table<T: 'static>(lua: &Lua, state: Rc<T>, meta: &Table) -> mlua::Result<Table> {
    let sock = lua.create_table()?;
    sock.raw_set(1, lua.create_userdata(Handle(state))?)?;
    sock.set_metatable(Some(meta.clone()))?;
    Ok(sock)
}

/// `nil, message` (ngx_lua's soft error).
fn fail(lua: &Lua, message: &str) -> mlua::Result<MultiValue> {
    Ok(MultiValue::from_vec(vec![
        Value::Nil,
        Value::String(lua.create_string(message)?),
    ]))
}

/// A timeout argument in milliseconds: 0 means the default; negative or
/// past 2^31 raises ngx_lua's "bad timeout value".
fn timeout_arg(v: &Value) -> mlua::Result<Duration> {
    let ms = match v {
        Value::Integer(i) => *i as f64,
        Value::Number(n) => *n,
        Value::String(s) => s.to_str()?.trim().parse::<f64>().unwrap_or(0.0),
        _ => 0.0,
    };
    let ms = ms.trunc();
    if !(0.0..2_147_483_648.0).contains(&ms) {
        return Err(err("bad timeout value"));
    }
    if ms == 0.0 {
        return Ok(DEFAULT_TIMEOUT);
    }
    Ok(Duration::from_millis(ms as u64))
}

/// ngx_lua's lower-case system error text ("connection refused"), or
/// "timeout" / "closed".
fn io_error(e: &std::io::Error) -> String {
    use std::io::ErrorKind;
    match e.kind() {
        ErrorKind::TimedOut => return "timeout".into(),
        ErrorKind::UnexpectedEof => return "closed".into(),
        _ => {}
    }
    if let Some(n) = e.raw_os_error() {
        let text = nix::errno::Errno::from_raw(n).desc();
        let mut chars = text.chars();
        return match chars.next() {
            Some(c) => c.to_lowercase().chain(chars).collect(),
            None => "error".into(),
        };
    }
    e.to_string()
}

/// `ngx.req.socket`: a read-only cosocket over the request body ([`req`]).
pub(super) fn req_socket(lua: &Lua) -> mlua::Result<Function> {
    req::constructor(lua)
}

/// Installs `ngx.socket`; `trusted` is `[lua] ssl_trusted_certificate`.
pub(super) fn install(lua: &Lua, ngx: &Table, trusted: Option<PathBuf>) -> mlua::Result<()> {
    let socket = lua.create_table()?;
    let tls = Rc::new(tls::TlsClients::new(trusted));
    let tcp = tcp::constructor(lua, tls)?;
    socket.set("tcp", tcp.clone())?;
    socket.set("stream", tcp.clone())?;
    socket.set("udp", udp::constructor(lua)?)?;
    let connect: Function = lua
        .load(
            r#"
            local tcp = ...
            return function(...)
                local sock = tcp()
                local ok, err = sock:connect(...)
                if not ok then return nil, err end
                return sock
            end
            "#,
        )
        .set_name("=ngx.socket.connect")
        .call(tcp)?;
    socket.set("connect", connect)?;
    ngx.set("socket", socket)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_follow_ngx_lua() {
        assert_eq!(
            timeout_arg(&Value::Integer(150)).ok(),
            Some(Duration::from_millis(150))
        );
        assert_eq!(timeout_arg(&Value::Integer(0)).ok(), Some(DEFAULT_TIMEOUT));
        assert_eq!(timeout_arg(&Value::Nil).ok(), Some(DEFAULT_TIMEOUT));
        assert!(timeout_arg(&Value::Integer(-1)).is_err());
        assert!(timeout_arg(&Value::Number(3e9)).is_err());
    }

    #[test]
    fn system_errors_read_as_ngx_lua_gives_them() {
        let refused = std::io::Error::from_raw_os_error(nix::libc::ECONNREFUSED);
        assert_eq!(io_error(&refused), "connection refused");
        let timed = std::io::Error::from(std::io::ErrorKind::TimedOut);
        assert_eq!(io_error(&timed), "timeout");
    }
}

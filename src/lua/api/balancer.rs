//! `require "ngx.balancer"`: lua-resty-core's module for the `balancer`
//! phase (an upstream's `lua.balancer`), natively. It reads and sets the
//! request's [`BalancerState`](crate::lua::balancer::BalancerState); the
//! proxy acts on it when the handler returns.
//!
//! As in ngx_lua, every function raises `no request found` outside a
//! request and returns `nil, "API disabled in the current context"` in a
//! request's other phases (`set_timeouts` returns `false, err`, and
//! `get_last_failure` `nil, nil, err`, as lua-resty-core does). Beyond
//! ngx_lua, `set_current_peer` takes a host name (resolved, which may
//! yield) and `"unix:/path"`. `recreate_request` and `enable_keepalive` are
//! accepted and change nothing: every try sends the request as the access
//! phase left it (changes made in the balancer phase are not sent), and
//! connections are pooled per the upstream's `keepalive`;
//! `set_upstream_tls` and `bind_to_local_addr` return `nil` and "not
//! supported" (peers are plain HTTP, and sockets are not bound).

use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::time::Duration;

use mlua::{Lua, MultiValue, Table, Value};

use super::{bad_argument, err, lua_int};
use crate::config::PeerAddr;
use crate::lua::Phase;
use crate::lua::request::ReqCtx;

/// ngx_lua's error outside the balancer phase.
const DISABLED: &str = "API disabled in the current context";

/// Registers `ngx.balancer` in `package.preload`.
pub fn install(lua: &Lua) -> mlua::Result<()> {
    let module = lua.create_table()?;
    module.set("version", "0.1.28")?;
    module.set(
        "set_current_peer",
        lua.create_async_function(|lua, (addr, port): (Value, Value)| async move {
            let req = in_request(&lua)?;
            let addr = match addr {
                Value::String(s) => s.to_str()?.to_string(),
                other => return Err(bad_argument(1, "set_current_peer", "string", Some(&other))),
            };
            if req.phase.get() != Phase::Balancer {
                return fail(&lua, DISABLED);
            }
            let port = match &port {
                Value::Nil => Some(0),
                v => lua_int(v),
            };
            let Some(port) = port.and_then(|p| u16::try_from(p).ok()) else {
                return fail(&lua, "invalid port");
            };
            match peer_addr(&addr, port).await {
                Ok(peer) => {
                    req.balancer.borrow_mut().peer = Some(peer);
                    ok(&lua, None)
                }
                Err(message) => fail(&lua, message),
            }
        })?,
    )?;
    module.set(
        "set_more_tries",
        lua.create_function(|lua, count: Value| {
            let req = in_request(lua)?;
            if req.phase.get() != Phase::Balancer {
                return fail(lua, DISABLED);
            }
            let count = lua_int(&count)
                .ok_or_else(|| err("bad argument #1 to 'set_more_tries' (number expected)"))?;
            let count = u32::try_from(count.max(0)).unwrap_or(u32::MAX);
            let mut state = req.balancer.borrow_mut();
            if count > state.more_allowed {
                state.more_tries = state.more_allowed;
                return ok(lua, Some("reduced tries due to limit"));
            }
            state.more_tries = count;
            ok(lua, None)
        })?,
    )?;
    module.set(
        "get_last_failure",
        lua.create_function(|lua, ()| {
            let req = in_request(lua)?;
            if req.phase.get() != Phase::Balancer {
                return Ok(MultiValue::from_vec(vec![
                    Value::Nil,
                    Value::Nil,
                    Value::String(lua.create_string(DISABLED)?),
                ]));
            }
            let last = req.balancer.borrow().last_failure;
            Ok(match last {
                None => MultiValue::from_vec(vec![Value::Nil]),
                Some(f) => MultiValue::from_vec(vec![
                    Value::String(lua.create_string(f.name())?),
                    Value::Integer(i64::from(f.status())),
                ]),
            })
        })?,
    )?;
    module.set(
        "set_timeouts",
        lua.create_function(|lua, (connect, send, read): (Value, Value, Value)| {
            let req = in_request(lua)?;
            let connect = timeout(&connect, "connect")?;
            let send = timeout(&send, "send")?;
            let read = timeout(&read, "read")?;
            if req.phase.get() != Phase::Balancer {
                return Ok((
                    Value::Boolean(false),
                    Value::String(lua.create_string(DISABLED)?),
                ));
            }
            let mut state = req.balancer.borrow_mut();
            let t = &mut state.timeouts;
            t.connect = connect.or(t.connect);
            t.send = send.or(t.send);
            t.read = read.or(t.read);
            Ok((Value::Boolean(true), Value::Nil))
        })?,
    )?;
    for name in ["recreate_request", "enable_keepalive"] {
        module.set(
            name,
            lua.create_function(|lua, _: MultiValue| {
                let req = in_request(lua)?;
                if req.phase.get() != Phase::Balancer {
                    return fail(lua, DISABLED);
                }
                ok(lua, None)
            })?,
        )?;
    }
    for name in ["set_upstream_tls", "bind_to_local_addr"] {
        module.set(
            name,
            lua.create_function(move |lua, _: MultiValue| {
                in_request(lua)?;
                fail(lua, &format!("{name} is not supported by moongate"))
            })?,
        )?;
    }
    let preload: Table = lua.globals().get::<Table>("package")?.get("preload")?;
    preload.set(
        "ngx.balancer",
        lua.create_function(move |_, _: MultiValue| Ok(module.clone()))?,
    )
}

/// The request running, or ngx_lua's error outside any.
fn in_request(lua: &Lua) -> mlua::Result<Rc<ReqCtx>> {
    super::req(lua).map_err(|_| err("no request found"))
}

fn ok(lua: &Lua, warning: Option<&str>) -> mlua::Result<(Value, Value)> {
    let warning = match warning {
        Some(w) => Value::String(lua.create_string(w)?),
        None => Value::Nil,
    };
    Ok((Value::Boolean(true), warning))
}

fn fail(lua: &Lua, message: &str) -> mlua::Result<(Value, Value)> {
    Ok((Value::Nil, Value::String(lua.create_string(message)?)))
}

/// A `set_timeouts` argument in seconds: `nil` keeps the current one.
fn timeout(v: &Value, which: &str) -> mlua::Result<Option<Duration>> {
    let secs = match v {
        Value::Nil => return Ok(None),
        Value::Integer(i) => *i as f64,
        Value::Number(n) => *n,
        _ => return Err(err(format!("bad {which} timeout"))),
    };
    if secs <= 0.0 {
        return Err(err(format!("bad {which} timeout")));
    }
    Duration::try_from_secs_f64(secs)
        .map(Some)
        .map_err(|_| err(format!("bad {which} timeout")))
}

/// The address of `set_current_peer(addr, port)`: `"unix:/path"`, an IP
/// (with `port`, or its own `ip:port`), or a host name resolved now.
async fn peer_addr(addr: &str, port: u16) -> Result<PeerAddr, &'static str> {
    if let Some(path) = addr.strip_prefix("unix:") {
        if path.is_empty() {
            return Err("no path in the unix domain socket");
        }
        return Ok(PeerAddr::Unix(path.into()));
    }
    if let Ok(sa) = addr.parse::<SocketAddr>() {
        return Ok(PeerAddr::Tcp(sa));
    }
    let bare = addr.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<IpAddr>() {
        if port == 0 {
            return Err("invalid port");
        }
        return Ok(PeerAddr::Tcp(SocketAddr::new(ip, port)));
    }
    // A name, with or without its own port.
    let (host, port) = match addr.rsplit_once(':') {
        Some((h, p)) if p.parse::<u16>().is_ok() => (h, p.parse::<u16>().unwrap_or(port)),
        _ => (addr, port),
    };
    if host.is_empty() {
        return Err("no host");
    }
    if port == 0 {
        return Err("invalid port");
    }
    match tokio::net::lookup_host((host, port)).await {
        Ok(mut found) => found.next().map(PeerAddr::Tcp).ok_or("no host allowed"),
        Err(_) => Err("no host allowed"),
    }
}

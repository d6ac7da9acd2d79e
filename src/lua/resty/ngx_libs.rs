//! lua-resty-core's small `ngx.*` modules, native: `ngx.resp`
//! (`add_header`), `ngx.process` (`type`, `enable_privileged_agent`,
//! `signal_graceful_exit`, `get_master_pid`), `ngx.errlog` (`raw_log`,
//! `get_sys_filter_level`; `set_filter_level` and `get_logs` need
//! `lua_capture_error_log`, which moongate has not, and say so as ngx_lua
//! does without it) and `ngx.base64` (`encode_base64url`,
//! `decode_base64url`).

use http::header::{HeaderName, HeaderValue};
use mlua::{Lua, LuaString, MultiValue, Table, Value};
use tracing::level_filters::LevelFilter;

use crate::lua::api::req;
use crate::ngx::codec;

/// lua-resty-core's version, as its modules report it.
const VERSION: &str = "0.1.28";

/// ngx_lua's error when the error log is not captured.
const NO_CAPTURE: &str = "directive \"lua_capture_error_log\" is not set";

fn module(lua: &Lua) -> mlua::Result<Table> {
    let m = lua.create_table()?;
    m.set("version", VERSION)?;
    Ok(m)
}

fn text(lua: &Lua, s: &str) -> mlua::Result<Value> {
    lua.create_string(s).map(Value::String)
}

/// One header value as ngx_lua writes it (numbers and booleans as text).
fn header_value(lua: &Lua, v: &Value) -> mlua::Result<HeaderValue> {
    let bad = || mlua::Error::runtime("bad header value");
    let s = match v {
        Value::Boolean(b) => return HeaderValue::from_str(&b.to_string()).map_err(|_| bad()),
        v => lua.coerce_string(v.clone())?.ok_or_else(bad)?,
    };
    HeaderValue::from_bytes(&s.as_bytes()).map_err(|_| bad())
}

/// `ngx.resp.add_header(key, value)`: adds a response header (a table
/// value adds each element) without replacing those already set;
/// underscores in the name become dashes, as `ngx.header` does.
fn add_header(lua: &Lua, (key, value): (LuaString, Value)) -> mlua::Result<()> {
    let r = req(lua)?;
    let key = key.to_str()?.replace('_', "-");
    let name = HeaderName::from_bytes(key.as_bytes())
        .map_err(|_| mlua::Error::runtime(format!("invalid header name \"{key}\"")))?;
    let values = match &value {
        Value::Nil => return Ok(()),
        Value::Table(t) => t
            .sequence_values::<Value>()
            .map(|v| header_value(lua, &v?))
            .collect::<mlua::Result<Vec<_>>>()?,
        v => vec![header_value(lua, v)?],
    };
    let mut headers = r.resp_headers.borrow_mut();
    for v in values {
        headers.append(name.clone(), v);
    }
    Ok(())
}

/// The nginx log level (`ngx.ERR` …) matching the log filter in force.
fn sys_filter_level() -> i64 {
    match LevelFilter::current() {
        LevelFilter::OFF => 0,
        LevelFilter::ERROR => 4,
        LevelFilter::WARN => 5,
        LevelFilter::INFO => 7,
        _ => 8,
    }
}

/// `ngx.errlog.raw_log(level, msg)`: `msg` as is, no `file:line` prefix.
fn raw_log(_: &Lua, (level, msg): (Value, Value)) -> mlua::Result<()> {
    let level = match level {
        Value::Integer(i) => i,
        Value::Number(n) => n as i64,
        _ => {
            return Err(mlua::Error::runtime(
                "bad argument #1 to 'raw_log' (must be a number)",
            ));
        }
    };
    let Value::String(msg) = msg else {
        return Err(mlua::Error::runtime(
            "bad argument #2 to 'raw_log' (must be a string)",
        ));
    };
    let msg = msg.to_string_lossy();
    match level {
        0..=4 => tracing::error!(target: "moongate::lua", "{msg}"),
        5 => tracing::warn!(target: "moongate::lua", "{msg}"),
        6 | 7 => tracing::info!(target: "moongate::lua", "{msg}"),
        8 => tracing::debug!(target: "moongate::lua", "{msg}"),
        _ => return Err(mlua::Error::runtime("bad log level")),
    }
    Ok(())
}

/// Registers the modules in `preload`.
pub(super) fn install(lua: &Lua, preload: &Table) -> mlua::Result<()> {
    preload.set(
        "ngx.resp",
        lua.create_function(|lua, _: MultiValue| {
            let m = module(lua)?;
            m.set("add_header", lua.create_function(add_header)?)?;
            Ok(m)
        })?,
    )?;
    preload.set(
        "ngx.process",
        lua.create_function(|lua, _: MultiValue| {
            let m = module(lua)?;
            // Workers are threads of one process, which has no master,
            // helper or privileged-agent processes.
            m.set("type", lua.create_function(|_, ()| Ok("worker"))?)?;
            m.set(
                "enable_privileged_agent",
                lua.create_function(|lua, _: MultiValue| {
                    let msg = match crate::lua::worker::of(lua)?.running.current() {
                        Some(_) => "API disabled in the current context",
                        None => "privileged agent processes are not supported in moongate",
                    };
                    Ok((Value::Nil, text(lua, msg)?))
                })?,
            )?;
            m.set(
                "signal_graceful_exit",
                lua.create_function(|_, ()| -> mlua::Result<()> {
                    Err(mlua::Error::runtime(
                        "ngx.process.signal_graceful_exit is not supported in moongate",
                    ))
                })?,
            )?;
            m.set(
                "get_master_pid",
                lua.create_function(|_, ()| Ok(std::process::id()))?,
            )?;
            Ok(m)
        })?,
    )?;
    preload.set(
        "ngx.errlog",
        lua.create_function(|lua, _: MultiValue| {
            let m = module(lua)?;
            m.set("raw_log", lua.create_function(raw_log)?)?;
            m.set(
                "get_sys_filter_level",
                lua.create_function(|_, ()| Ok(sys_filter_level()))?,
            )?;
            m.set(
                "set_filter_level",
                lua.create_function(|lua, level: Value| {
                    let msg = match level {
                        Value::Nil => "missing \"level\" argument",
                        _ => NO_CAPTURE,
                    };
                    Ok((Value::Nil, text(lua, msg)?))
                })?,
            )?;
            m.set(
                "get_logs",
                lua.create_function(|lua, _: MultiValue| Ok((Value::Nil, text(lua, NO_CAPTURE)?)))?,
            )?;
            Ok(m)
        })?,
    )?;
    preload.set(
        "ngx.base64",
        lua.create_function(|lua, _: MultiValue| {
            let m = module(lua)?;
            m.set(
                "encode_base64url",
                lua.create_function(|lua, s: Value| match s {
                    Value::String(s) => Ok((
                        text(lua, &codec::encode_base64url(&s.as_bytes()))?,
                        Value::Nil,
                    )),
                    _ => Ok((Value::Nil, text(lua, "must provide a string")?)),
                })?,
            )?;
            m.set(
                "decode_base64url",
                lua.create_function(|lua, s: Value| {
                    let Value::String(s) = s else {
                        return Ok((Value::Nil, text(lua, "must provide a string")?));
                    };
                    match codec::decode_base64url(&s.as_bytes()) {
                        Some(d) => Ok((Value::String(lua.create_string(d)?), Value::Nil)),
                        None => Ok((Value::Nil, text(lua, "invalid input")?)),
                    }
                })?,
            )?;
            Ok(m)
        })?,
    )
}

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

/// A single return value.
fn one(v: Value) -> mlua::Result<MultiValue> {
    Ok(MultiValue::from_vec(vec![v]))
}

/// `nil, message`.
fn failure(lua: &Lua, message: &str) -> mlua::Result<MultiValue> {
    Ok(MultiValue::from_vec(vec![Value::Nil, text(lua, message)?]))
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

/// `ngx.errlog.raw_log(level, msg)`: lua-resty-core's argument errors,
/// raised as plain strings at the caller, over [`log_raw`].
const RAW_LOG: &str = r#"
local log_raw = ...
return function(level, msg)
    if type(level) ~= "number" then
        error("bad argument #1 to 'raw_log' (must be a number)", 2)
    end
    if type(msg) ~= "string" then
        error("bad argument #2 to 'raw_log' (must be a string)", 2)
    end
    if not log_raw(level, msg) then
        error("bad log level", 2)
    end
end
"#;

/// Logs `msg` as is (no `file:line` prefix) at nginx level `level`;
/// false for a level that does not exist.
fn log_raw(_: &Lua, (level, msg): (i64, LuaString)) -> mlua::Result<bool> {
    let msg = msg.to_string_lossy();
    match level {
        0..=4 => tracing::error!(target: "moongate::lua", "{msg}"),
        5 => tracing::warn!(target: "moongate::lua", "{msg}"),
        6 | 7 => tracing::info!(target: "moongate::lua", "{msg}"),
        8 => tracing::debug!(target: "moongate::lua", "{msg}"),
        _ => return Ok(false),
    }
    Ok(true)
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
                lua.load(
                    "return function() error('ngx.process.signal_graceful_exit is not supported in moongate', 2) end",
                )
                .set_name("=ngx.process")
                .call::<mlua::Function>(())?,
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
            let raw_log: mlua::Function = lua
                .load(RAW_LOG)
                .set_name("=ngx.errlog")
                .call(lua.create_function(log_raw)?)?;
            m.set("raw_log", raw_log)?;
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
                    Value::String(s) => one(text(lua, &codec::encode_base64url(&s.as_bytes()))?),
                    _ => failure(lua, "must provide a string"),
                })?,
            )?;
            m.set(
                "decode_base64url",
                lua.create_function(|lua, s: Value| {
                    let Value::String(s) = s else {
                        return failure(lua, "must provide a string");
                    };
                    match codec::decode_base64url(&s.as_bytes()) {
                        Some(d) => one(Value::String(lua.create_string(d)?)),
                        None => failure(lua, "invalid input"),
                    }
                })?,
            )?;
            Ok(m)
        })?,
    )
}

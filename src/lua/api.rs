//! The `ngx` table, with ngx_lua's names, arguments and return
//! conventions. Functions reach the request they serve through their VM's
//! worker ([`super::worker::of`], then [`super::budget::Running::current`]);
//! anything that waits is an async function, so the coroutine yields
//! instead of blocking the thread.

use std::rc::Rc;

use mlua::{Function, Lua, Table, Value, Variadic};

mod arg;
mod balancer;
mod codec;
mod coroutine;
mod header;
mod location;
mod output;
mod re;
mod req;
mod shared;
pub use shared::dict_table;
pub mod socket;
pub mod tasks;
mod time;
mod var;

use super::Phase;
use super::request::ReqCtx;
use super::worker::{self, LuaWorker};

/// ngx_lua's method constants (`ngx.HTTP_GET` …), as `set_method` takes them.
pub(super) const METHODS: [(&str, i64); 15] = [
    ("GET", 2),
    ("HEAD", 4),
    ("POST", 8),
    ("PUT", 16),
    ("DELETE", 32),
    ("MKCOL", 64),
    ("COPY", 128),
    ("MOVE", 256),
    ("OPTIONS", 512),
    ("PROPFIND", 1024),
    ("PROPPATCH", 2048),
    ("LOCK", 4096),
    ("UNLOCK", 8192),
    ("PATCH", 16384),
    ("TRACE", 32768),
];

/// Log levels (`ngx.ERR` …).
const LEVELS: [(&str, i64); 9] = [
    ("STDERR", 0),
    ("EMERG", 1),
    ("ALERT", 2),
    ("CRIT", 3),
    ("ERR", 4),
    ("WARN", 5),
    ("NOTICE", 6),
    ("INFO", 7),
    ("DEBUG", 8),
];

const STATUSES: [(&str, i64); 36] = [
    ("HTTP_CONTINUE", 100),
    ("HTTP_SWITCHING_PROTOCOLS", 101),
    ("HTTP_OK", 200),
    ("HTTP_CREATED", 201),
    ("HTTP_ACCEPTED", 202),
    ("HTTP_NO_CONTENT", 204),
    ("HTTP_PARTIAL_CONTENT", 206),
    ("HTTP_SPECIAL_RESPONSE", 300),
    ("HTTP_MOVED_PERMANENTLY", 301),
    ("HTTP_MOVED_TEMPORARILY", 302),
    ("HTTP_SEE_OTHER", 303),
    ("HTTP_NOT_MODIFIED", 304),
    ("HTTP_TEMPORARY_REDIRECT", 307),
    ("HTTP_PERMANENT_REDIRECT", 308),
    ("HTTP_BAD_REQUEST", 400),
    ("HTTP_UNAUTHORIZED", 401),
    ("HTTP_PAYMENT_REQUIRED", 402),
    ("HTTP_FORBIDDEN", 403),
    ("HTTP_NOT_FOUND", 404),
    ("HTTP_NOT_ALLOWED", 405),
    ("HTTP_NOT_ACCEPTABLE", 406),
    ("HTTP_REQUEST_TIMEOUT", 408),
    ("HTTP_CONFLICT", 409),
    ("HTTP_GONE", 410),
    ("HTTP_UPGRADE_REQUIRED", 426),
    ("HTTP_TOO_MANY_REQUESTS", 429),
    ("HTTP_CLOSE", 444),
    ("HTTP_ILLEGAL", 451),
    ("HTTP_INTERNAL_SERVER_ERROR", 500),
    ("HTTP_METHOD_NOT_IMPLEMENTED", 501),
    ("HTTP_NOT_IMPLEMENTED", 501),
    ("HTTP_BAD_GATEWAY", 502),
    ("HTTP_SERVICE_UNAVAILABLE", 503),
    ("HTTP_GATEWAY_TIMEOUT", 504),
    ("HTTP_VERSION_NOT_SUPPORTED", 505),
    ("HTTP_INSUFFICIENT_STORAGE", 507),
];

/// The request whose Lua code is running on `lua`'s worker.
pub(super) fn req(lua: &Lua) -> mlua::Result<Rc<ReqCtx>> {
    current(&**worker::of(lua)?)
}

/// The request `worker` is running Lua code for.
fn current(worker: &LuaWorker) -> mlua::Result<Rc<ReqCtx>> {
    worker
        .running
        .current()
        .ok_or_else(|| worker.timers.phase_outside_requests().disabled())
}

/// A function of the request being served: `f` gets the request that
/// `worker` runs Lua code for. The functions a handler calls per request
/// (`ngx.var`, `ngx.req.*`) are made with it: they hold their worker
/// instead of looking it up in the state's app data on every call.
pub(super) fn request_fn<A, R>(
    lua: &Lua,
    worker: &Rc<LuaWorker>,
    f: impl Fn(&Lua, &ReqCtx, A) -> mlua::Result<R> + 'static,
) -> mlua::Result<Function>
where
    A: mlua::FromLuaMulti,
    R: mlua::IntoLuaMulti,
{
    let worker = worker.clone();
    lua.create_function(move |lua, args: A| f(lua, &*current(&worker)?, args))
}

pub(super) fn err<E: std::fmt::Display>(e: E) -> mlua::Error {
    mlua::Error::runtime(e.to_string())
}

/// ngx_lua's (luaL_argerror's) error for argument `pos` of `func` when it
/// is not the `expected` kind: `bad argument #1 to 'sleep' (number
/// expected, got string)`; `got` is `None` when the argument is missing.
pub(super) fn bad_argument(
    pos: usize,
    func: &str,
    expected: &str,
    got: Option<&Value>,
) -> mlua::Error {
    let got = got.map_or("no value", lua_type);
    err(format!(
        "bad argument #{pos} to '{func}' ({expected} expected, got {got})"
    ))
}

/// Lua's name for the type of `v` (`type(v)`): integers are numbers.
pub(super) fn lua_type(v: &Value) -> &'static str {
    match v {
        Value::Integer(_) => "number",
        other => other.type_name(),
    }
}

/// Installs the `ngx` global; `prefix` is the directory holding conf.d (what relative
/// paths in it start from, as nginx's prefix), returned by `ngx.config.prefix()`.
pub fn install(
    lua: &Lua,
    worker: &Rc<LuaWorker>,
    budget: std::time::Duration,
    dicts: &std::collections::BTreeMap<String, std::sync::Arc<crate::shdict::SharedDict>>,
    prefix: &std::path::Path,
    ssl_trusted: Option<std::path::PathBuf>,
) -> mlua::Result<()> {
    let ngx = lua.create_table()?;
    for (name, v) in STATUSES {
        ngx.set(name, v)?;
    }
    for (name, v) in METHODS {
        ngx.set(format!("HTTP_{name}"), v)?;
    }
    for (name, v) in LEVELS {
        ngx.set(name, v)?;
    }
    ngx.set("OK", 0)?;
    ngx.set("ERROR", -1)?;
    ngx.set("AGAIN", -2)?;
    ngx.set("DONE", -4)?;
    ngx.set("DECLINED", -5)?;
    ngx.set("null", Value::NULL)?;

    ngx.set("var", var::var_table(lua, worker)?)?;
    ngx.set("req", req::req_table(lua, worker)?)?;
    ngx.set("header", header::header_table(lua)?)?;
    ngx.set("arg", arg::arg_table(lua, worker)?)?;
    let resp = lua.create_table()?;
    let meta = header::headers_meta(lua)?;
    resp.set(
        "get_headers",
        request_fn(lua, worker, move |lua, r, args: (Option<i64>, Value)| {
            let case = |name: &http::HeaderName| header::lua_case(r, name);
            match header::with_default_type(r) {
                Some(headers) => header::headers_table(lua, &headers, args, &meta, &case),
                None => header::headers_table(lua, &r.resp_headers.borrow(), args, &meta, &case),
            }
        })?,
    )?;
    ngx.set("resp", resp)?;
    ngx.set(
        "quote_sql_str",
        lua.create_function(|lua, s: mlua::LuaString| {
            lua.create_string(quote_sql_str(&s.as_bytes()))
        })?,
    )?;
    output::output_functions(lua, worker, &ngx)?;
    tasks::install(lua, &ngx, budget)?;
    codec::install(lua, &ngx)?;
    re::install(lua, &ngx)?;
    location::install(lua, &ngx)?;
    shared::install(lua, &ngx, dicts)?;
    socket::install(lua, &ngx, ssl_trusted)?;
    coroutine::install(lua)?;
    time::time_functions(lua, &ngx)?;
    balancer::install(lua)?;

    ngx.set(
        "get_phase",
        lua.create_function(|lua, ()| {
            let worker = worker::of(lua)?;
            Ok(worker
                .running
                .current()
                .map_or_else(|| worker.timers.phase_outside_requests(), |r| r.phase.get())
                .name())
        })?,
    )?;
    ngx.set(
        "log",
        lua.create_function(|lua, (level, args): (i64, Variadic<Value>)| {
            let text = output::concat(&args)?;
            let at = caller(lua);
            match level {
                0..=4 => tracing::error!(target: "moongate::lua", "{at}{text}"),
                5 => tracing::warn!(target: "moongate::lua", "{at}{text}"),
                6 | 7 => tracing::info!(target: "moongate::lua", "{at}{text}"),
                _ => tracing::debug!(target: "moongate::lua", "{at}{text}"),
            }
            Ok(())
        })?,
    )?;

    // ngx_lua sends `print` to the error log at NOTICE, not stdout.
    lua.globals().set(
        "print",
        lua.create_function(|lua, args: Variadic<Value>| {
            let text = output::concat(&args)?;
            tracing::info!(target: "moongate::lua", "{}[lua] {text}", caller(lua));
            Ok(())
        })?,
    )?;

    let info = worker.info;
    let w = lua.create_table()?;
    w.set("id", lua.create_function(move |_, ()| Ok(info.id))?)?;
    w.set("count", lua.create_function(move |_, ()| Ok(info.count))?)?;
    w.set("pid", lua.create_function(|_, ()| Ok(std::process::id()))?)?;
    // One process serves every worker thread: its pid is the only one.
    w.set(
        "pids",
        lua.create_function(|_, ()| Ok(vec![std::process::id()]))?,
    )?;
    w.set(
        "exiting",
        lua.create_function(|lua, ()| Ok(tasks::retired(lua) || worker::of(lua)?.exiting.get()))?,
    )?;
    ngx.set("worker", w)?;

    let config = lua.create_table()?;
    config.set("subsystem", "http")?;
    config.set("ngx_lua_version", 10026)?;
    config.set("nginx_version", var::NGINX_VERSION.0)?;
    config.set("debug", false)?;
    // nginx's prefix ends with a slash.
    let prefix = prefix.display().to_string();
    let prefix = if prefix.ends_with('/') {
        prefix
    } else {
        format!("{prefix}/")
    };
    // What nginx's `./configure` was given; moongate's build has no such
    // line: this names the prefix and the modules it stands in for.
    let configure = format!(
        " --prefix={prefix} --with-http_ssl_module --with-http_v2_module --with-pcre-jit \
         --add-module=moongate-{}",
        env!("CARGO_PKG_VERSION")
    );
    config.set(
        "prefix",
        lua.create_function(move |_, ()| Ok(prefix.clone()))?,
    )?;
    config.set(
        "nginx_configure",
        lua.create_function(move |_, ()| Ok(configure.clone()))?,
    )?;
    ngx.set("config", config)?;

    // ngx.status and ngx.ctx are per request: served by a metatable.
    let meta = lua.create_table()?;
    meta.set(
        "__index",
        lua.create_function(|lua, (_, key): (Table, String)| match key.as_str() {
            "status" => Ok(Value::Integer(
                req(lua).map_or(0, |r| i64::from(r.status.get())),
            )),
            "ctx" => ctx_table(lua).map(Value::Table),
            "headers_sent" => Ok(Value::Boolean(
                req(lua).is_ok_and(|r| r.output.headers_sent()),
            )),
            "is_subrequest" => Ok(Value::Boolean(req(lua)?.subrequest)),
            _ => Ok(Value::Nil),
        })?,
    )?;
    meta.set(
        "__newindex",
        lua.create_function(
            |lua, (t, key, value): (Table, String, Value)| match key.as_str() {
                "status" => {
                    let r = req(lua)?;
                    let n = lua_int(&value).ok_or_else(|| err("ngx.status must be a number"))?;
                    let code = u16::try_from(n).map_err(|_| err(format!("invalid status {n}")))?;
                    if r.output.headers_sent() && r.phase.get() != Phase::HeaderFilter {
                        tracing::error!(target: "moongate::lua", "{}attempt to set ngx.status after sending out response headers", caller(lua));
                        return Ok(());
                    }
                    r.status.set(code);
                    Ok(())
                }
                "ctx" => {
                    let r = req(lua)?;
                    let Value::Table(t) = value else {
                        return Err(err("ngx.ctx must be a table"));
                    };
                    *r.ctx.borrow_mut() = Some(lua.create_registry_value(t)?);
                    Ok(())
                }
                _ => t.raw_set(key, value),
            },
        )?,
    )?;
    ngx.set_metatable(Some(meta))?;
    lua.globals().set("ngx", ngx)?;
    Ok(())
}

/// `ngx.quote_sql_str`: `s` as a MySQL string literal (ngx_lua's escapes;
/// bytes beyond ASCII are left alone).
fn quote_sql_str(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len() + 2);
    out.push(b'\'');
    for &b in s {
        let escaped = match b {
            0 => b'0',
            0x08 => b'b',
            b'\n' => b'n',
            b'\r' => b'r',
            b'\t' => b't',
            26 => b'Z',
            b'\\' | b'\'' | b'"' => b,
            _ => {
                out.push(b);
                continue;
            }
        };
        out.extend_from_slice(&[b'\\', escaped]);
    }
    out.push(b'\'');
    out
}

fn ctx_table(lua: &Lua) -> mlua::Result<Table> {
    let r = req(lua)?;
    if let Some(key) = r.ctx.borrow().as_ref() {
        return lua.registry_value(key);
    }
    let t = lua.create_table()?;
    *r.ctx.borrow_mut() = Some(lua.create_registry_value(t.clone())?);
    Ok(t)
}

/// `file:line: ` of the Lua code calling into Rust, for log lines.
fn caller(lua: &Lua) -> String {
    lua.inspect_stack(1, |d| {
        let s = d.source();
        format!(
            "{}:{}: ",
            s.short_src.as_deref().unwrap_or("?"),
            d.current_line().unwrap_or(0)
        )
    })
    .unwrap_or_default()
}

pub(super) fn lua_int(v: &Value) -> Option<i64> {
    match v {
        Value::Integer(i) => Some(*i),
        Value::Number(n) if n.fract() == 0.0 => Some(*n as i64),
        Value::String(s) => s.to_str().ok()?.trim().parse().ok(),
        _ => None,
    }
}

/// Replaces `pcall`, `xpcall` and `coroutine.resume` with versions that
/// re-raise once the running handler was stopped by its budget, so a
/// script cannot catch the stop and go on, and that hand errors raised by
/// the Rust side to the script as strings.
pub fn guard_protected_calls(lua: &Lua) -> mlua::Result<()> {
    let stopped: Function =
        lua.create_function(|lua, ()| Ok(worker::of(lua)?.running.timed_out()))?;
    let message_of = lua.create_function(|_, e: Value| {
        Ok(match e {
            Value::Error(e) => error_message(&e),
            other => other.to_string()?,
        })
    })?;
    lua.load(
        r#"
        local stopped, raw_pcall, raw_xpcall, raw_resume, message_of = ...
        local function check(ok, ...)
            if stopped() then error("time budget exceeded", 0) end
            -- Errors raised by the Rust side are objects; OpenResty code
            -- expects the message string, as ngx_lua gives it.
            if not ok and type((...)) == "userdata" then
                return ok, message_of((...)), select(2, ...)
            end
            return ok, ...
        end
        pcall = function(...) return check(raw_pcall(...)) end
        xpcall = function(...) return check(raw_xpcall(...)) end
        coroutine.resume = function(...) return check(raw_resume(...)) end
        "#,
    )
    .set_name("=moongate")
    .call::<()>((
        stopped,
        lua.globals().get::<Function>("pcall")?,
        lua.globals().get::<Function>("xpcall")?,
        lua.globals()
            .get::<Table>("coroutine")?
            .get::<Function>("resume")?,
        message_of,
    ))
}

/// What a script sees of an error raised by the Rust side: the message
/// alone, as ngx_lua's C functions give it (`luaL_error` from C adds no
/// place), without mlua's "runtime error:" and traceback.
fn error_message(e: &mlua::Error) -> String {
    match e {
        mlua::Error::RuntimeError(m) => m.clone(),
        mlua::Error::CallbackError { cause, .. } => error_message(cause),
        mlua::Error::WithContext { cause, .. } => error_message(cause),
        other => other.to_string(),
    }
}

//! The `ngx` table, with ngx_lua's names, arguments and return
//! conventions. Functions reach the request they serve through
//! [`super::budget::current`]; anything that waits is an async function,
//! so the coroutine yields instead of blocking the thread.

use std::rc::Rc;
use std::time::{Duration, SystemTime};

use http::header::{HeaderName, HeaderValue};
use mlua::{Function, Lua, MultiValue, Table, Value, Variadic};

use super::Phase;
use super::budget;
use super::request::ReqCtx;
use crate::vars::{RequestVars, Var};

/// ngx_lua's method constants (`ngx.HTTP_GET` …), as `set_method` takes them.
const METHODS: [(&str, i64); 15] = [
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

const STATUSES: [(&str, i64); 28] = [
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
    ("HTTP_TOO_MANY_REQUESTS", 429),
    ("HTTP_INTERNAL_SERVER_ERROR", 500),
    ("HTTP_BAD_GATEWAY", 502),
    ("HTTP_SERVICE_UNAVAILABLE", 503),
];

/// What the VM needs to know about the worker it runs on.
#[derive(Debug, Clone, Copy)]
pub struct WorkerInfo {
    /// `ngx.worker.id()`.
    pub id: usize,
    /// `ngx.worker.count()`.
    pub count: usize,
}

fn req() -> mlua::Result<Rc<ReqCtx>> {
    budget::current().ok_or_else(|| mlua::Error::runtime("API disabled in the context of init"))
}

fn err<E: std::fmt::Display>(e: E) -> mlua::Error {
    mlua::Error::runtime(e.to_string())
}

/// Installs the `ngx` global.
pub fn install(lua: &Lua, worker: WorkerInfo) -> mlua::Result<()> {
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

    ngx.set("var", var_table(lua)?)?;
    ngx.set("req", req_table(lua)?)?;
    ngx.set("header", header_table(lua)?)?;
    let resp = lua.create_table()?;
    resp.set(
        "get_headers",
        lua.create_function(|lua, ()| {
            let r = req()?;
            headers_to_table(lua, &r.resp_headers.borrow())
        })?,
    )?;
    ngx.set("resp", resp)?;
    output_functions(lua, &ngx)?;
    time_functions(lua, &ngx)?;

    ngx.set(
        "get_phase",
        lua.create_function(|_, ()| {
            Ok(budget::current()
                .map_or(Phase::Init, |r| r.phase.get())
                .name())
        })?,
    )?;
    ngx.set(
        "log",
        lua.create_function(|lua, (level, args): (i64, Variadic<Value>)| {
            let text = concat(&args)?;
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

    let w = lua.create_table()?;
    w.set("id", lua.create_function(move |_, ()| Ok(worker.id))?)?;
    w.set("count", lua.create_function(move |_, ()| Ok(worker.count))?)?;
    w.set("pid", lua.create_function(|_, ()| Ok(std::process::id()))?)?;
    w.set("exiting", lua.create_function(|_, ()| Ok(false))?)?;
    ngx.set("worker", w)?;

    let config = lua.create_table()?;
    config.set("subsystem", "http")?;
    config.set("ngx_lua_version", 10026)?;
    config.set("nginx_version", 1_022_001)?;
    config.set("debug", false)?;
    config.set("is_console", false)?;
    config.set(
        "prefix",
        lua.create_function(|_, ()| {
            Ok(std::env::current_dir()
                .map_or_else(|_| "./".to_string(), |d| format!("{}/", d.display())))
        })?,
    )?;
    ngx.set("config", config)?;

    // ngx.status and ngx.ctx are per request: served by a metatable.
    let meta = lua.create_table()?;
    meta.set(
        "__index",
        lua.create_function(|lua, (_, key): (Table, String)| match key.as_str() {
            "status" => Ok(Value::Integer(
                req().map_or(0, |r| i64::from(r.status.get())),
            )),
            "ctx" => ctx_table(lua).map(Value::Table),
            _ => Ok(Value::Nil),
        })?,
    )?;
    meta.set(
        "__newindex",
        lua.create_function(
            |lua, (t, key, value): (Table, String, Value)| match key.as_str() {
                "status" => {
                    let r = req()?;
                    let n = lua_int(&value).ok_or_else(|| err("ngx.status must be a number"))?;
                    let code = u16::try_from(n).map_err(|_| err(format!("invalid status {n}")))?;
                    r.status.set(code);
                    Ok(())
                }
                "ctx" => {
                    let r = req()?;
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

fn ctx_table(lua: &Lua) -> mlua::Result<Table> {
    let r = req()?;
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

fn lua_int(v: &Value) -> Option<i64> {
    match v {
        Value::Integer(i) => Some(*i),
        Value::Number(n) if n.fract() == 0.0 => Some(*n as i64),
        Value::String(s) => s.to_str().ok()?.trim().parse().ok(),
        _ => None,
    }
}

/// ngx.say/print's rendering of values (tables are arrays of pieces).
fn push_value(v: &Value, out: &mut Vec<u8>) -> mlua::Result<()> {
    match v {
        Value::Nil => out.extend_from_slice(b"nil"),
        Value::Boolean(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        Value::String(s) => out.extend_from_slice(&s.as_bytes()),
        Value::Integer(i) => out.extend_from_slice(i.to_string().as_bytes()),
        Value::Number(n) => out.extend_from_slice(format_number(*n).as_bytes()),
        Value::LightUserData(p) if p.0.is_null() => out.extend_from_slice(b"null"),
        Value::Table(t) => {
            for item in t.clone().sequence_values::<Value>() {
                push_value(&item?, out)?;
            }
        }
        other => {
            return Err(err(format!(
                "bad argument: {} not a string",
                other.type_name()
            )));
        }
    }
    Ok(())
}

fn format_number(n: f64) -> String {
    if n.fract() == 0.0 && n.abs() < 1e15 {
        format!("{}", n as i64)
    } else {
        format!("{n}")
    }
}

fn concat(args: &[Value]) -> mlua::Result<String> {
    let mut out = Vec::new();
    for a in args {
        push_value(a, &mut out)?;
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}

fn output_functions(lua: &Lua, ngx: &Table) -> mlua::Result<()> {
    let emit = |newline: bool| {
        lua.create_function(move |_, args: Variadic<Value>| {
            let r = req()?;
            let mut out = r.out.borrow_mut();
            for a in args.iter() {
                push_value(a, &mut out)?;
            }
            if newline {
                out.push(b'\n');
            }
            Ok(1)
        })
    };
    ngx.set("say", emit(true)?)?;
    ngx.set("print", emit(false)?)?;
    ngx.set("flush", lua.create_function(|_, _: MultiValue| Ok(1))?)?;
    ngx.set(
        "exit",
        lua.create_async_function(|_, status: Value| async move {
            let r = req()?;
            let code = lua_int(&status).ok_or_else(|| err("ngx.exit takes a status number"))?;
            r.set_exit(code);
            // The handler ends here: the runner abandons this coroutine.
            std::future::pending::<()>().await;
            Ok(())
        })?,
    )?;
    ngx.set(
        "redirect",
        lua.create_async_function(|_, (uri, status): (String, Option<i64>)| async move {
            let r = req()?;
            let status = status.unwrap_or(302);
            if ![301, 302, 303, 307, 308].contains(&status) {
                return Err(err(format!("only ngx.HTTP_MOVED_TEMPORARILY, ngx.HTTP_MOVED_PERMANENTLY, ngx.HTTP_PERMANENT_REDIRECT, ngx.HTTP_SEE_OTHER, and ngx.HTTP_TEMPORARY_REDIRECT are allowed, got {status}")));
            }
            let value = HeaderValue::from_str(&uri).map_err(err)?;
            r.resp_headers.borrow_mut().insert(http::header::LOCATION, value);
            r.set_exit(status);
            std::future::pending::<()>().await;
            Ok(())
        })?,
    )?;
    Ok(())
}

fn now_secs() -> f64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

fn time_functions(lua: &Lua, ngx: &Table) -> mlua::Result<()> {
    ngx.set(
        "now",
        lua.create_function(|_, ()| Ok((now_secs() * 1000.0).floor() / 1000.0))?,
    )?;
    ngx.set(
        "time",
        lua.create_function(|_, ()| Ok(now_secs().floor() as i64))?,
    )?;
    ngx.set("update_time", lua.create_function(|_, ()| Ok(()))?)?;
    ngx.set(
        "http_time",
        lua.create_function(|_, secs: i64| {
            let t = SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(secs).unwrap_or(0));
            Ok(httpdate::fmt_http_date(t))
        })?,
    )?;
    ngx.set(
        "sleep",
        lua.create_async_function(|_, secs: f64| async move {
            if secs.is_nan() || secs < 0.0 || !secs.is_finite() {
                return Err(err("invalid sleep duration"));
            }
            tokio::time::sleep(Duration::from_secs_f64(secs)).await;
            Ok(())
        })?,
    )?;
    Ok(())
}

/// `ngx.var`: request variables by name, read and (for uri, args and new
/// names) written.
fn var_table(lua: &Lua) -> mlua::Result<Table> {
    let t = lua.create_table()?;
    let meta = lua.create_table()?;
    meta.set(
        "__index",
        lua.create_function(|lua, (_, name): (Table, String)| {
            let r = req()?;
            var_value(lua, &r, &name)
        })?,
    )?;
    meta.set(
        "__newindex",
        lua.create_function(|_, (_, name, value): (Table, String, Option<String>)| {
            let r = req()?;
            match name.as_str() {
                "uri" => set_path(&r, value.as_deref().unwrap_or("/")),
                "args" | "query_string" => set_query(&r, value.as_deref()),
                _ => {
                    let mut vars = r.vars.borrow_mut();
                    match value {
                        Some(v) => vars.insert(name, v),
                        None => vars.remove(&name),
                    };
                    Ok(())
                }
            }
        })?,
    )?;
    t.set_metatable(Some(meta))?;
    Ok(t)
}

fn var_value(lua: &Lua, r: &ReqCtx, name: &str) -> mlua::Result<Value> {
    if let Some(v) = r.vars.borrow().get(name) {
        return lua.create_string(v).map(Value::String);
    }
    let head = r.head.borrow();
    let text: Option<String> = match name {
        "binary_remote_addr" => {
            let bytes = match r.client {
                std::net::IpAddr::V4(v4) => v4.octets().to_vec(),
                std::net::IpAddr::V6(v6) => v6.octets().to_vec(),
            };
            return lua.create_string(bytes).map(Value::String);
        }
        "is_args" => Some(if head.uri.query().is_some() { "?" } else { "" }.to_string()),
        "server_protocol" => Some(format!("{:?}", head.version)),
        "request_time" => Some(format!("{:.3}", r.started.elapsed().as_secs_f64())),
        "status" => Some(r.status.get().max(r.upstream_status.get()).to_string()),
        "upstream_addr" => r.upstream_addr.borrow().clone(),
        "upstream_status" => {
            (r.upstream_status.get() > 0).then(|| r.upstream_status.get().to_string())
        }
        "content_type" => head
            .headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
        "content_length" => head
            .headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
        _ => match Var::by_name(name) {
            Ok(var) => {
                let vars = RequestVars {
                    parts: &head,
                    request_uri: &r.request_uri,
                    host: &r.host,
                    client: r.client,
                    scheme: r.scheme,
                    server_port: r.server_port,
                };
                let mut out = String::new();
                vars.write_var(&var, &mut out);
                let present = match &var {
                    Var::Http(h) => head.headers.contains_key(h),
                    Var::Cookie(_) | Var::Arg(_) => !out.is_empty(),
                    _ => true,
                };
                present.then_some(out)
            }
            Err(_) => None,
        },
    };
    match text {
        Some(t) => lua.create_string(t).map(Value::String),
        None => Ok(Value::Nil),
    }
}

fn set_path(r: &ReqCtx, path: &str) -> mlua::Result<()> {
    if !path.starts_with('/') {
        return Err(err(format!("the uri must start with \"/\": {path:?}")));
    }
    let mut head = r.head.borrow_mut();
    let query = head
        .uri
        .query()
        .map(|q| format!("?{q}"))
        .unwrap_or_default();
    let escaped = percent_encoding::utf8_percent_encode(path, PATH_UNSAFE).to_string();
    head.uri = format!("{escaped}{query}").parse().map_err(err)?;
    Ok(())
}

fn set_query(r: &ReqCtx, query: Option<&str>) -> mlua::Result<()> {
    let mut head = r.head.borrow_mut();
    let path = head.uri.path().to_string();
    head.uri = match query {
        Some(q) if !q.is_empty() => format!("{path}?{q}"),
        _ => path,
    }
    .parse()
    .map_err(err)?;
    Ok(())
}

/// Bytes `ngx.req.set_uri` escapes (controls, space and what a URI may
/// not hold unescaped).
const PATH_UNSAFE: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'`')
    .add(b'{')
    .add(b'}');

fn headers_to_table(lua: &Lua, headers: &http::HeaderMap) -> mlua::Result<Table> {
    let t = lua.create_table()?;
    for name in headers.keys() {
        let values: Vec<mlua::LuaString> = headers
            .get_all(name)
            .iter()
            .map(|v| lua.create_string(v.as_bytes()))
            .collect::<mlua::Result<_>>()?;
        match values.len() {
            1 => t.set(name.as_str(), values.into_iter().next())?,
            _ => t.set(name.as_str(), values)?,
        }
    }
    Ok(t)
}

/// `ngx.header.content_type` means `Content-Type`.
fn header_name(key: &str) -> mlua::Result<HeaderName> {
    HeaderName::from_bytes(key.replace('_', "-").as_bytes())
        .map_err(|_| err(format!("invalid header name {key:?}")))
}

fn set_header_values(
    headers: &mut http::HeaderMap,
    name: HeaderName,
    value: Value,
) -> mlua::Result<()> {
    headers.remove(&name);
    let mut add = |v: &Value| -> mlua::Result<()> {
        let text = match v {
            Value::String(s) => s.to_str()?.to_string(),
            Value::Integer(i) => i.to_string(),
            Value::Number(n) => format_number(*n),
            Value::Boolean(b) => b.to_string(),
            other => {
                return Err(err(format!(
                    "invalid header value type {}",
                    other.type_name()
                )));
            }
        };
        headers.append(name.clone(), HeaderValue::from_str(&text).map_err(err)?);
        Ok(())
    };
    match value {
        Value::Nil => Ok(()),
        Value::Table(list) => {
            for v in list.sequence_values::<Value>() {
                add(&v?)?;
            }
            Ok(())
        }
        v => add(&v),
    }
}

/// `ngx.header`: the response headers being built.
fn header_table(lua: &Lua) -> mlua::Result<Table> {
    let t = lua.create_table()?;
    let meta = lua.create_table()?;
    meta.set(
        "__index",
        lua.create_function(|lua, (_, key): (Table, String)| {
            let r = req()?;
            let name = header_name(&key)?;
            let headers = r.resp_headers.borrow();
            let values: Vec<&HeaderValue> = headers.get_all(&name).iter().collect();
            match values.as_slice() {
                [] => Ok(Value::Nil),
                [one] => lua.create_string(one.as_bytes()).map(Value::String),
                many => {
                    let list = lua.create_table()?;
                    for v in many {
                        list.push(lua.create_string(v.as_bytes())?)?;
                    }
                    Ok(Value::Table(list))
                }
            }
        })?,
    )?;
    meta.set(
        "__newindex",
        lua.create_function(|_, (_, key, value): (Table, String, Value)| {
            let r = req()?;
            set_header_values(&mut r.resp_headers.borrow_mut(), header_name(&key)?, value)
        })?,
    )?;
    t.set_metatable(Some(meta))?;
    Ok(t)
}

fn req_table(lua: &Lua) -> mlua::Result<Table> {
    let t = lua.create_table()?;
    t.set(
        "get_method",
        lua.create_function(|_, ()| Ok(req()?.head.borrow().method.to_string()))?,
    )?;
    t.set(
        "set_method",
        lua.create_function(|_, code: i64| {
            let r = req()?;
            let name = METHODS
                .iter()
                .find(|(_, c)| *c == code)
                .map(|(n, _)| *n)
                .ok_or_else(|| err(format!("unsupported HTTP method: {code}")))?;
            r.head.borrow_mut().method = http::Method::from_bytes(name.as_bytes()).map_err(err)?;
            Ok(())
        })?,
    )?;
    t.set(
        "http_version",
        lua.create_function(|_, ()| {
            Ok(match req()?.head.borrow().version {
                http::Version::HTTP_10 => 1.0,
                http::Version::HTTP_2 => 2.0,
                _ => 1.1,
            })
        })?,
    )?;
    t.set(
        "start_time",
        lua.create_function(|_, ()| Ok(req()?.started_wall))?,
    )?;
    t.set(
        "set_uri",
        lua.create_function(|_, (uri, _jump): (String, Option<bool>)| {
            let r = req()?;
            set_path(&r, &uri)
        })?,
    )?;
    t.set(
        "set_uri_args",
        lua.create_function(|_, args: Value| {
            let query = match args {
                Value::String(s) => s.to_str()?.to_string(),
                Value::Table(t) => encode_args(&t)?,
                Value::Nil => String::new(),
                other => {
                    return Err(err(format!(
                        "bad argument: {} not a string or table",
                        other.type_name()
                    )));
                }
            };
            let r = req()?;
            set_query(&r, Some(&query))
        })?,
    )?;
    t.set(
        "get_uri_args",
        lua.create_function(|lua, max: Option<usize>| {
            let r = req()?;
            let query = r.head.borrow().uri.query().unwrap_or("").to_string();
            decode_args(lua, &query, max.unwrap_or(100))
        })?,
    )?;
    t.set(
        "get_headers",
        lua.create_function(|lua, _: MultiValue| {
            let r = req()?;
            let headers = headers_to_table(lua, &r.head.borrow().headers)?;
            // ngx_lua's table looks names up case-insensitively, `_` for `-`.
            let meta = lua.create_table()?;
            meta.set(
                "__index",
                lua.create_function(|_, (t, key): (Table, String)| {
                    t.raw_get::<Value>(key.to_ascii_lowercase().replace('_', "-"))
                })?,
            )?;
            headers.set_metatable(Some(meta))?;
            Ok(headers)
        })?,
    )?;
    t.set(
        "set_header",
        lua.create_function(|_, (name, value): (String, Value)| {
            let r = req()?;
            let name = header_name(&name)?;
            set_header_values(&mut r.head.borrow_mut().headers, name, value)
        })?,
    )?;
    t.set(
        "clear_header",
        lua.create_function(|_, name: String| {
            let r = req()?;
            r.head.borrow_mut().headers.remove(header_name(&name)?);
            Ok(())
        })?,
    )?;
    // The body is streamed to the upstream, never buffered whole: reading
    // it from Lua is not supported yet (ngx_lua's behaviour without
    // `lua_need_request_body`: get_body_data returns nil).
    t.set("read_body", lua.create_function(|_, ()| Ok(()))?)?;
    t.set("discard_body", lua.create_function(|_, ()| Ok(()))?)?;
    t.set(
        "get_body_data",
        lua.create_function(|_, ()| Ok(Value::Nil))?,
    )?;
    Ok(t)
}

fn encode_args(t: &Table) -> mlua::Result<String> {
    let enc = |s: &str| {
        percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
    };
    let mut parts = Vec::new();
    for pair in t.clone().pairs::<String, Value>() {
        let (k, v) = pair?;
        let mut push = |v: &Value| -> mlua::Result<()> {
            match v {
                Value::Boolean(true) => parts.push(enc(&k)),
                Value::Boolean(false) => {}
                other => {
                    let mut out = Vec::new();
                    push_value(other, &mut out)?;
                    parts.push(format!(
                        "{}={}",
                        enc(&k),
                        enc(&String::from_utf8_lossy(&out))
                    ));
                }
            }
            Ok(())
        };
        match &v {
            Value::Table(list) => {
                for item in list.clone().sequence_values::<Value>() {
                    push(&item?)?;
                }
            }
            other => push(other)?,
        }
    }
    Ok(parts.join("&"))
}

fn decode_args(lua: &Lua, query: &str, max: usize) -> mlua::Result<Table> {
    let t = lua.create_table()?;
    let unescape = |s: &str| -> Vec<u8> {
        percent_encoding::percent_decode(s.replace('+', " ").as_bytes()).collect()
    };
    for (i, pair) in query.split('&').filter(|p| !p.is_empty()).enumerate() {
        if max > 0 && i >= max {
            break;
        }
        let (key, value) = match pair.split_once('=') {
            Some((k, v)) => (unescape(k), Value::String(lua.create_string(unescape(v))?)),
            None => (unescape(pair), Value::Boolean(true)),
        };
        let key = lua.create_string(key)?;
        match t.raw_get::<Value>(&key)? {
            Value::Nil => t.raw_set(key, value)?,
            Value::Table(list) => list.push(value)?,
            first => {
                let list = lua.create_table()?;
                list.push(first)?;
                list.push(value)?;
                t.raw_set(key, list)?;
            }
        }
    }
    Ok(t)
}

/// Replaces `pcall`, `xpcall` and `coroutine.resume` with versions that
/// re-raise once the running handler was stopped by its budget, so a
/// script cannot catch the stop and go on.
pub fn guard_protected_calls(lua: &Lua) -> mlua::Result<()> {
    let stopped: Function = lua.create_function(|_, ()| Ok(budget::timed_out()))?;
    lua.load(
        r#"
        local stopped, raw_pcall, raw_xpcall, raw_resume = ...
        local function check(...)
            if stopped() then error("time budget exceeded", 0) end
            return ...
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
    ))
}

//! `ngx.var`: request variables by name, and `ngx.var[N]`, the captures
//! of the route's `path_regex`.

use mlua::{Either, Lua, Table, Value};

use std::rc::Rc;

use super::{err, request_fn};
use crate::lua::request::ReqCtx;
use crate::lua::worker::LuaWorker;
use crate::vars::Var;

/// `ngx.var`: request variables by name, read and (for uri, args and new
/// names) written.
///
/// The metamethods are small Lua functions that pass only the name (and
/// value) to Rust: a table or `LuaString` argument would cost a reference
/// on mlua's side, and names and values cross as plain strings instead.
pub(super) fn var_table(lua: &Lua, worker: &Rc<LuaWorker>) -> mlua::Result<Table> {
    let get = request_fn(lua, worker, |lua, r, name: String| var_value(lua, r, &name))?;
    let set = request_fn(
        lua,
        worker,
        |_, r, (name, value): (String, Option<String>)| match name.as_str() {
            "uri" => set_path(r, value.as_deref().unwrap_or("/")),
            "args" => set_query(r, value.as_deref()),
            _ if read_only(&name) => Err(err(format!(
                "variable \"{}\" not changeable",
                name.to_ascii_lowercase()
            ))),
            _ if PREFIXES.iter().any(|p| name.starts_with(p)) => {
                let name = name.to_ascii_lowercase();
                Err(err(format!(
                    "variable \"{name}\" not found for writing; maybe it is a built-in \
                     variable that is not changeable or you forgot to use \"set ${name} '';\" \
                     in the config file to define it first"
                )))
            }
            _ => {
                let mut vars = r.vars.borrow_mut();
                match value {
                    Some(v) => vars.insert(name, v),
                    None => vars.remove(&name),
                };
                Ok(())
            }
        },
    )?;
    lua.load(
        r#"
        local get, set = ...
        return setmetatable({}, {
            __index = function(_, name) return get(name) end,
            __newindex = function(_, name, value) return set(name, value) end,
        })
        "#,
    )
    .set_name("=ngx.var")
    .call((get, set))
}

/// A variable's value for Lua: text crosses as a plain string (pushed
/// straight onto the Lua stack), bytes that are not UTF-8 as a Lua string.
pub(super) type VarOut = Either<Option<String>, Value>;

fn text_or_bytes(lua: &Lua, bytes: &[u8]) -> mlua::Result<VarOut> {
    match std::str::from_utf8(bytes) {
        Ok(text) => Ok(Either::Left(Some(text.to_owned()))),
        Err(_) => lua
            .create_string(bytes)
            .map(|s| Either::Right(Value::String(s))),
    }
}

/// What ngx_lua reports for `ngx.config.nginx_version` and
/// `$nginx_version`.
pub(super) const NGINX_VERSION: (i64, &str) = (1_022_001, "1.22.1");

/// Built-in variables a handler may not set (nginx: "not changeable").
const READ_ONLY: [&str; 36] = [
    "host",
    "remote_port",
    "https",
    "pid",
    "msec",
    "time_local",
    "time_iso8601",
    "request_uri",
    "request_method",
    "scheme",
    "remote_addr",
    "binary_remote_addr",
    "server_port",
    "server_addr",
    "server_name",
    "server_protocol",
    "request_time",
    "status",
    "query_string",
    "is_args",
    "content_type",
    "content_length",
    "request_id",
    "trace_id",
    "nginx_version",
    "hostname",
    "connection",
    "connection_requests",
    "request_length",
    "bytes_sent",
    "body_bytes_sent",
    "upstream_addr",
    "upstream_status",
    "upstream_response_time",
    "cache_status",
    "request_body",
];

/// The families of variables named by a prefix (nginx has no such
/// variable to write: "not found for writing").
const PREFIXES: [&str; 4] = ["http_", "cookie_", "arg_", "sent_http_"];

fn read_only(name: &str) -> bool {
    READ_ONLY.iter().any(|v| v.eq_ignore_ascii_case(name))
}

pub(super) fn var_value(lua: &Lua, r: &ReqCtx, name: &str) -> mlua::Result<VarOut> {
    if let Some(v) = r.vars.borrow().get(name) {
        return Ok(Either::Left(Some(v.clone())));
    }
    let head = r.head.borrow();
    if name == "uri" {
        // nginx's `$uri` is the normalized path (see `route::normalize_path`).
        let path = head.uri.path();
        let normal = crate::route::normalize_path(path).unwrap_or(path.into());
        return text_or_bytes(lua, normal.as_bytes());
    }
    // The common ones straight from the request head (`$args` is nil
    // without a query, as in nginx).
    let direct: Option<Option<&[u8]>> = match name {
        "host" => Some(Some(r.facts.host.as_bytes())),
        "request_uri" => Some(Some(r.facts.request_uri().as_bytes())),
        "request_method" => Some(Some(head.method.as_str().as_bytes())),
        "scheme" => Some(Some(r.facts.scheme.as_bytes())),
        "args" | "query_string" => Some(head.uri.query().map(str::as_bytes)),
        _ => name
            .strip_prefix("http_")
            .and_then(|h| request_header(&head.headers, h)),
    };
    if let Some(bytes) = direct {
        return match bytes {
            Some(b) => text_or_bytes(lua, b),
            None => Ok(Either::Left(None)),
        };
    }
    // The rarer ones, after the common ones above.
    if name.bytes().any(|b| b.is_ascii_uppercase()) {
        // nginx's names are case-insensitive.
        return var_value(lua, r, &name.to_ascii_lowercase());
    }
    if let Ok(n) = name.parse::<usize>() {
        return capture(lua, r, n);
    }
    if name == "request_body" {
        // In memory only, as nginx's.
        let data = r.body_data.borrow();
        return match data.as_ref() {
            Some(d) if !d.is_empty() && r.body_file.borrow().is_none() => text_or_bytes(lua, d),
            _ => Ok(Either::Left(None)),
        };
    }
    if let Some(text) = connection_var(r, name) {
        return Ok(Either::Left(text));
    }
    if let Some(h) = name.strip_prefix("sent_http_") {
        return sent_header(lua, r, h);
    }
    let text: Option<String> = match name {
        "binary_remote_addr" => {
            let bytes = match r.facts.client {
                std::net::IpAddr::V4(v4) => v4.octets().to_vec(),
                std::net::IpAddr::V6(v6) => v6.octets().to_vec(),
            };
            return lua
                .create_string(bytes)
                .map(|s| Either::Right(Value::String(s)));
        }
        "is_args" => Some(if head.uri.query().is_some() { "?" } else { "" }.to_string()),
        "server_protocol" => Some(format!("{:?}", head.version)),
        "request_time" => Some(format!("{:.3}", r.started.elapsed().as_secs_f64())),
        "status" => (r.status.get() > 0).then(|| r.status.get().to_string()),
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
                let vars = r.facts.vars(&head);
                let mut out = String::new();
                vars.write_var(&var, &mut out);
                let present = match &var {
                    Var::Http(h) => head.headers.contains_key(h),
                    Var::Cookie(_) | Var::Arg(_) => !out.is_empty(),
                    Var::Consumer => r.facts.consumer.is_some(),
                    _ => true,
                };
                present.then_some(out)
            }
            Err(_) => None,
        },
    };
    Ok(Either::Left(text))
}

/// The variables of the connection and the route, and those made on
/// demand; `None` when `name` is none of them.
fn connection_var(r: &ReqCtx, name: &str) -> Option<Option<String>> {
    Some(match name {
        "request_id" => Some(r.request_id()),
        // `[tracing]`'s trace id (32 hex digits); nil without `[tracing]`.
        "trace_id" => (r.trace_id.get() != 0).then(|| format!("{:032x}", r.trace_id.get())),
        "server_addr" => Some(r.conn.server_addr.to_string()),
        "server_name" => Some(
            r.route
                .server_name
                .as_deref()
                .unwrap_or(&r.facts.host)
                .to_string(),
        ),
        "nginx_version" => Some(NGINX_VERSION.1.to_string()),
        "hostname" => nix::unistd::gethostname()
            .ok()
            .map(|h| h.to_string_lossy().into_owned()),
        "remote_port" => Some(r.conn.remote_port.to_string()),
        "https" => Some(if r.facts.scheme == "https" { "on" } else { "" }.to_string()),
        "pid" => Some(std::process::id().to_string()),
        "msec" => Some(format!(
            "{:.3}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64())
        )),
        "time_local" => Some(local_now("%d/%b/%Y:%H:%M:%S %z")),
        "time_iso8601" => Some(local_now("%Y-%m-%dT%H:%M:%S%:z")),
        "connection" => Some(r.conn.serial.to_string()),
        "connection_requests" => Some(r.conn.requests.to_string()),
        "request_length" => Some(request_length(r).to_string()),
        // Known once the response is sent (the log phase).
        "bytes_sent" | "body_bytes_sent" => Some("0".to_string()),
        _ => return None,
    })
}

/// The time now in the system's zone, formatted by `strftime` `format`
/// (`$time_local`, `$time_iso8601`).
fn local_now(format: &str) -> String {
    jiff::Timestamp::now()
        .to_zoned(jiff::tz::TimeZone::system())
        .strftime(format)
        .to_string()
}

/// `$request_length`: the head as received (as HTTP/1.1 would send it,
/// for HTTP/2) and the body's length.
fn request_length(r: &ReqCtx) -> usize {
    let head = r.head.borrow();
    let head_len = if r.conn.raw_head.is_empty() {
        raw_head(r, &head).len()
    } else {
        r.conn.raw_head.len()
    };
    let body_len = match r.body_data.borrow().as_ref() {
        Some(data) => data.len(),
        None => head
            .headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse().ok())
            .unwrap_or(0),
    };
    head_len + body_len
}

/// The head of the request as received (`ngx.req.raw_header`): the
/// bytes the client sent for HTTP/1; for HTTP/2, made from the head as
/// nginx does (request line, then one line per header).
pub(super) fn raw_head(r: &ReqCtx, head: &http::request::Parts) -> bytes::Bytes {
    if !r.conn.raw_head.is_empty() {
        return r.conn.raw_head.clone();
    }
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(head.method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(r.facts.request_uri().as_bytes());
    out.extend_from_slice(b" HTTP/2.0\r\n");
    if !head.headers.contains_key(http::header::HOST) && !r.facts.host.is_empty() {
        out.extend_from_slice(b"host: ");
        out.extend_from_slice(r.facts.host.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    for (name, value) in &head.headers {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.into()
}

/// `ngx.var[N]`: capture `N` of the route's `path_regex` on the path the
/// request was routed by; nil when there is no such capture (0 included,
/// as in ngx_lua), "" for a group that took no part in the match.
fn capture(lua: &Lua, r: &ReqCtx, n: usize) -> mlua::Result<VarOut> {
    let Some(re) = r.route.path_regex.as_ref().filter(|_| n > 0) else {
        return Ok(Either::Left(None));
    };
    let raw = r.facts.request_uri.path();
    let path = crate::route::normalize_path(raw).unwrap_or(raw.into());
    let Some(caps) = re.captures(&path).filter(|c| n < c.len()) else {
        return Ok(Either::Left(None));
    };
    text_or_bytes(lua, caps.get(n).map_or("", |m| m.as_str()).as_bytes())
}

/// `$sent_http_NAME`: the response header as set so far (or sent), its
/// lines joined with ", " as nginx joins them.
fn sent_header(lua: &Lua, r: &ReqCtx, name: &str) -> mlua::Result<VarOut> {
    let Ok(name) = http::HeaderName::from_bytes(name.replace('_', "-").as_bytes()) else {
        return Ok(Either::Left(None));
    };
    let headers = r.resp_headers.borrow();
    let mut values = headers.get_all(&name).iter();
    let Some(first) = values.next() else {
        return Ok(Either::Left(None));
    };
    let mut joined = first.as_bytes().to_vec();
    for v in values {
        joined.extend_from_slice(b", ");
        joined.extend_from_slice(v.as_bytes());
    }
    text_or_bytes(lua, &joined)
}

/// `$http_NAME` (`_` for `-`, any case): `Some(None)` when the request
/// has no such header, `None` when `NAME` is too long for the fast path.
fn request_header<'h>(headers: &'h http::HeaderMap, name: &str) -> Option<Option<&'h [u8]>> {
    let mut buf = [0u8; 64];
    let dst = buf.get_mut(..name.len())?;
    for (d, s) in dst.iter_mut().zip(name.bytes()) {
        *d = if s == b'_' { b'-' } else { s };
    }
    // Only `_` became `-`: still valid UTF-8.
    let header = std::str::from_utf8(dst).ok()?;
    Some(headers.get(header).map(http::HeaderValue::as_bytes))
}

pub(super) fn set_path(r: &ReqCtx, path: &str) -> mlua::Result<()> {
    if !path.starts_with('/') {
        return Err(err(format!("the uri must start with \"/\": {path:?}")));
    }
    let mut head = r.head.borrow_mut();
    let query = head
        .uri
        .query()
        .map(|q| format!("?{q}"))
        .unwrap_or_default();
    let escaped: std::borrow::Cow<'_, str> =
        percent_encoding::utf8_percent_encode(path, PATH_UNSAFE).into();
    head.uri = if query.is_empty() {
        http::Uri::from_maybe_shared(bytes::Bytes::copy_from_slice(escaped.as_bytes()))
    } else {
        format!("{escaped}{query}").parse()
    }
    .map_err(err)?;
    Ok(())
}

pub(super) fn set_query(r: &ReqCtx, query: Option<&str>) -> mlua::Result<()> {
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
pub(super) const PATH_UNSAFE: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'`')
    .add(b'{')
    .add(b'}');

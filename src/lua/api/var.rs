//! `ngx.var`: request variables by name.

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
            "args" | "query_string" => set_query(r, value.as_deref()),
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

pub(super) fn var_value(lua: &Lua, r: &ReqCtx, name: &str) -> mlua::Result<VarOut> {
    if let Some(v) = r.vars.borrow().get(name) {
        return Ok(Either::Left(Some(v.clone())));
    }
    let head = r.head.borrow();
    // The common ones straight from the request head (`$args` is nil
    // without a query, as in nginx).
    let direct: Option<Option<&[u8]>> = match name {
        "uri" => Some(Some(head.uri.path().as_bytes())),
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
                    _ => true,
                };
                present.then_some(out)
            }
            Err(_) => None,
        },
    };
    Ok(Either::Left(text))
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

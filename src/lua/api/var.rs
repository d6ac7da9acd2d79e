//! `ngx.var`: request variables by name.

use mlua::{Lua, Table, Value};

use super::{err, req};
use crate::lua::request::ReqCtx;
use crate::vars::{RequestVars, Var};

/// `ngx.var`: request variables by name, read and (for uri, args and new
/// names) written.
pub(super) fn var_table(lua: &Lua) -> mlua::Result<Table> {
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

pub(super) fn var_value(lua: &Lua, r: &ReqCtx, name: &str) -> mlua::Result<Value> {
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
    let escaped = percent_encoding::utf8_percent_encode(path, PATH_UNSAFE).to_string();
    head.uri = format!("{escaped}{query}").parse().map_err(err)?;
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

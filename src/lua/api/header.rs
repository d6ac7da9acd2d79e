//! `ngx.header` and the header tables of `ngx.req.get_headers` and
//! `ngx.resp.get_headers`.

use http::header::{HeaderName, HeaderValue};
use mlua::{Lua, Table, Value};

use super::output::format_number;
use super::{err, req};

pub(super) fn headers_to_table(lua: &Lua, headers: &http::HeaderMap) -> mlua::Result<Table> {
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
pub(super) fn header_name(key: &str) -> mlua::Result<HeaderName> {
    let dashed = if key.contains('_') {
        std::borrow::Cow::Owned(key.replace('_', "-"))
    } else {
        std::borrow::Cow::Borrowed(key)
    };
    HeaderName::from_bytes(dashed.as_bytes())
        .map_err(|_| err(format!("invalid header name {key:?}")))
}

pub(super) fn set_header_values(
    headers: &mut http::HeaderMap,
    name: HeaderName,
    value: Value,
) -> mlua::Result<()> {
    headers.remove(&name);
    let mut add = |v: &Value| -> mlua::Result<()> {
        let text = match v {
            Value::String(s) => {
                let value = HeaderValue::from_bytes(&s.as_bytes()).map_err(err)?;
                headers.append(name.clone(), value);
                return Ok(());
            }
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
pub(super) fn header_table(lua: &Lua) -> mlua::Result<Table> {
    let t = lua.create_table()?;
    let meta = lua.create_table()?;
    meta.set(
        "__index",
        lua.create_function(|lua, (_, key): (Table, String)| {
            let r = req(lua)?;
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
        lua.create_function(|lua, (_, key, value): (Table, String, Value)| {
            let r = req(lua)?;
            if r.output.headers_sent() && r.phase.get() != crate::lua::Phase::HeaderFilter {
                tracing::error!(target: "moongate::lua", "attempt to set ngx.header.HEADER after sending out response headers");
                return Ok(());
            }
            set_header_values(&mut r.resp_headers.borrow_mut(), header_name(&key)?, value)
        })?,
    )?;
    t.set_metatable(Some(meta))?;
    Ok(t)
}

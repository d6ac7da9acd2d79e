//! `ngx.header` and the header tables of `ngx.req.get_headers` and
//! `ngx.resp.get_headers`; header names and values set from Lua are
//! escaped as ngx_lua escapes them (a `\r` or `\n` becomes `%0D` / `%0A`,
//! so a value can never start another header line).

use std::borrow::Cow;

use http::header::{HeaderName, HeaderValue};
use mlua::{Lua, Table, Value};

use super::output::format_number;
use super::{err, req};
use crate::lua::request::ReqCtx;

/// How many header lines the tables hold unless told otherwise (ngx_lua's
/// default).
const MAX_HEADERS: usize = 100;

/// Bytes ngx_lua escapes in a header name set from Lua: controls, space,
/// the separators and everything beyond ASCII.
const NAME_UNSAFE: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'(')
    .add(b')')
    .add(b',')
    .add(b'/')
    .add(b':')
    .add(b';')
    .add(b'<')
    .add(b'=')
    .add(b'>')
    .add(b'?')
    .add(b'@')
    .add(b'[')
    .add(b'\\')
    .add(b']')
    .add(b'{')
    .add(b'}');

/// A header name set from Lua, escaped as ngx_lua does.
fn escape_name(name: &[u8]) -> Cow<'_, [u8]> {
    match Cow::from(percent_encoding::percent_encode(name, NAME_UNSAFE)) {
        Cow::Borrowed(_) => Cow::Borrowed(name),
        Cow::Owned(s) => Cow::Owned(s.into_bytes()),
    }
}

/// A header value set from Lua, escaped as ngx_lua does: control bytes
/// but tab (CR and LF among them) and DEL become `%XX`.
fn escape_value(value: &[u8]) -> Cow<'_, [u8]> {
    let unsafe_byte = |b: u8| (b < 0x20 && b != b'\t') || b == 0x7f;
    if !value.iter().any(|&b| unsafe_byte(b)) {
        return Cow::Borrowed(value);
    }
    let mut out = Vec::with_capacity(value.len() + 8);
    for &b in value {
        if unsafe_byte(b) {
            out.extend_from_slice(format!("%{b:02X}").as_bytes());
        } else {
            out.push(b);
        }
    }
    Cow::Owned(out)
}

/// A header value from Lua text, escaped.
pub(super) fn header_value(value: &[u8]) -> mlua::Result<HeaderValue> {
    HeaderValue::from_bytes(&escape_value(value)).map_err(err)
}

/// The metatable of the non-raw header tables: a key that misses is
/// looked up again lowercase with `_` as `-` (`h.content_type`,
/// `h["Content-Type"]`), as ngx_lua's.
pub(super) fn headers_meta(lua: &Lua) -> mlua::Result<Table> {
    lua.load(
        r#"
        local lower, gsub, rawget = string.lower, string.gsub, rawget
        return {
            __index = function(t, key)
                if type(key) ~= "string" then return nil end
                local norm = gsub(lower(key), "_", "-")
                if norm ~= key then return rawget(t, norm) end
                return nil
            end,
        }
        "#,
    )
    .set_name("=ngx.req.get_headers")
    .call(())
}

/// Builds the table of `ngx.req.get_headers(max, raw)` /
/// `ngx.resp.get_headers(max, raw)`: at most `max` header lines (`nil`:
/// 100; 0: all), names lowercase with `meta` as metatable, or with `raw`
/// as `case` gives them and no metatable; a repeated name's values as an
/// array. The second value is `"truncated"` when lines were left out.
pub(super) fn headers_table(
    lua: &Lua,
    headers: &http::HeaderMap,
    (max, raw): (Option<i64>, Value),
    meta: &Table,
    case: &dyn Fn(&HeaderName) -> Option<String>,
) -> mlua::Result<(Table, Option<&'static str>)> {
    let max = match max {
        Some(n) if n >= 0 => usize::try_from(n).unwrap_or(usize::MAX),
        _ => MAX_HEADERS,
    };
    let raw = !matches!(raw, Value::Nil | Value::Boolean(false));
    let t = lua.create_table()?;
    let mut truncated = None;
    for (count, (name, value)) in headers.iter().enumerate() {
        if max > 0 && count == max {
            tracing::debug!(
                target: "moongate::lua",
                "lua exceeding header limit {} > {max}",
                headers.len()
            );
            truncated = Some("truncated");
            break;
        }
        let key = if raw {
            Cow::Owned(case(name).unwrap_or_else(|| name.as_str().to_string()))
        } else {
            Cow::Borrowed(name.as_str())
        };
        let value = lua.create_string(value.as_bytes())?;
        match t.raw_get::<Value>(key.as_ref())? {
            Value::Nil => t.raw_set(key.as_ref(), value)?,
            Value::Table(list) => list.raw_push(value)?,
            first => t.raw_set(
                key.as_ref(),
                lua.create_sequence_from([first, Value::String(value)])?,
            )?,
        }
    }
    if !raw {
        t.set_metatable(Some(meta.clone()))?;
    }
    Ok((t, truncated))
}

/// The response headers with the `Content-Type` the response will get
/// when a handler answering it set none (nginx's `default_type`, set once
/// a handler writes a header or output): `ngx.resp.get_headers` counts it
/// as ngx_lua does. `None` when the headers stand as they are.
pub(super) fn with_default_type(r: &ReqCtx) -> Option<http::HeaderMap> {
    use crate::lua::Phase;
    let answering = matches!(
        r.phase.get(),
        Phase::Rewrite | Phase::Access | Phase::Content
    );
    let headers = r.resp_headers.borrow();
    if !answering
        || headers.contains_key(http::header::CONTENT_TYPE)
        || (headers.is_empty() && r.out.borrow().is_empty())
    {
        return None;
    }
    let mut with = http::HeaderMap::with_capacity(headers.len() + 1);
    with.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static(DEFAULT_CONTENT_TYPE),
    );
    for (name, value) in headers.iter() {
        with.append(name, value.clone());
    }
    Some(with)
}

/// What a Lua answer without a `Content-Type` is sent with
/// ([`crate::lua::respond`]).
const DEFAULT_CONTENT_TYPE: &str = "text/plain; charset=utf-8";

/// The case a header name was last given in by Lua (`ngx.header`,
/// `ngx.req.set_header`), for the raw tables.
pub(super) fn lua_case(r: &ReqCtx, name: &HeaderName) -> Option<String> {
    r.header_case
        .borrow()
        .iter()
        .rev()
        .find(|n| n.eq_ignore_ascii_case(name.as_str()))
        .cloned()
}

/// Notes the case Lua gave a header name in, when it is not all lowercase.
fn remember_case(r: &ReqCtx, given: &[u8]) {
    if given.iter().any(u8::is_ascii_uppercase)
        && let Ok(text) = std::str::from_utf8(given)
    {
        let mut names = r.header_case.borrow_mut();
        if !names.iter().any(|n| n == text) {
            names.push(text.to_string());
        }
    }
}

/// A request header name from Lua (`ngx.req.set_header`): escaped, kept
/// as given otherwise (underscores stay).
pub(super) fn request_header_name(r: &ReqCtx, key: &[u8]) -> mlua::Result<HeaderName> {
    let escaped = escape_name(key);
    remember_case(r, &escaped);
    HeaderName::from_bytes(&escaped).map_err(|_| err(format!("invalid header name {key:?}")))
}

/// `ngx.header.content_type` means `Content-Type`: a response header name
/// from Lua, `_` as `-`, escaped.
pub(super) fn header_name(key: &str) -> mlua::Result<HeaderName> {
    let dashed = if key.contains('_') {
        Cow::Owned(key.replace('_', "-"))
    } else {
        Cow::Borrowed(key)
    };
    HeaderName::from_bytes(&escape_name(dashed.as_bytes()))
        .map_err(|_| err(format!("invalid header name {key:?}")))
}

/// Sets header `name` to `value` (a string, number, boolean, or an array
/// of them for several lines; nil removes it), escaping the values.
/// Response fields nginx holds one value of (`ngx.header.content_type =
/// {"a", "b"}` sends `b`).
fn single_valued(name: &HeaderName) -> bool {
    use http::header;
    [
        header::CONTENT_TYPE,
        header::CONTENT_LENGTH,
        header::LOCATION,
        header::LAST_MODIFIED,
        header::ETAG,
        header::CONTENT_ENCODING,
        header::SERVER,
        header::DATE,
        header::EXPIRES,
        header::REFRESH,
    ]
    .contains(name)
}

/// Whether a `Content-Length` value from Lua is a length: digits (a
/// non-negative integer), as nginx's `ngx_atoof` takes.
fn is_length(value: &Value) -> bool {
    match value {
        Value::Integer(i) => *i >= 0,
        Value::Number(n) => *n >= 0.0 && n.fract() == 0.0,
        Value::String(s) => {
            let b = s.as_bytes();
            !b.is_empty() && b.iter().all(u8::is_ascii_digit)
        }
        Value::Table(t) => t
            .clone()
            .sequence_values::<Value>()
            .all(|v| v.is_ok_and(|v| is_length(&v))),
        _ => false,
    }
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
                headers.append(name.clone(), header_value(&s.as_bytes())?);
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
        // Fields nginx keeps one of take the last value of a list.
        Value::Table(list) if single_valued(&name) => {
            match list.sequence_values::<Value>().last() {
                Some(v) => add(&v?),
                None => Ok(()),
            }
        }
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
            let name = header_name(&key)?;
            if key.bytes().any(|b| b.is_ascii_uppercase()) {
                remember_case(&r, key.replace('_', "-").as_bytes());
            }
            if name == http::header::CONTENT_LENGTH {
                if !value.is_nil() && !is_length(&value) {
                    // nginx refuses the value (ngx_atoof), and ngx_lua raises.
                    tracing::error!(target: "moongate::lua", "invalid Content-Length {:?}", value.to_string().unwrap_or_default());
                    return Err(err("failed to set header"));
                }
                r.length_cleared.set(value.is_nil());
            }
            set_header_values(&mut r.resp_headers.borrow_mut(), name, value)
        })?,
    )?;
    t.set_metatable(Some(meta))?;
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_as_ngx_lua() {
        assert_eq!(
            &*escape_value(b"value\rfoo:bar\nbar:foo"),
            b"value%0Dfoo:bar%0Abar:foo"
        );
        assert_eq!(
            &*escape_value(b"tab\tstays \xc3\xa9"),
            b"tab\tstays \xc3\xa9"
        );
        assert_eq!(
            &*escape_name(b"\rheader: value\rfoo:bar\nbar:foo"),
            b"%0Dheader%3A%20value%0Dfoo%3Abar%0Abar%3Afoo"
        );
        assert!(matches!(escape_name(b"X-Plain_Name"), Cow::Borrowed(_)));
    }
}

//! The `ngx` codecs and times: hashes, base64, URI escaping, query
//! arguments, HTTP and log dates — thin bindings over [`crate::ngx`].

use mlua::{Lua, LuaString, Table, Value};

use super::err;
use crate::ngx::codec::{self, ArgValue};
use crate::ngx::time;

fn now_secs() -> i64 {
    super::time::now_secs() as i64
}

pub(super) fn install(lua: &Lua, ngx: &Table) -> mlua::Result<()> {
    let bin = |f: fn(&[u8]) -> Vec<u8>| {
        lua.create_function(move |lua, s: LuaString| lua.create_string(f(&s.as_bytes())))
    };
    ngx.set(
        "md5",
        lua.create_function(|_, s: LuaString| Ok(codec::md5_hex(&s.as_bytes())))?,
    )?;
    ngx.set("md5_bin", bin(|d| codec::md5_bin(d).to_vec())?)?;
    ngx.set("sha1_bin", bin(|d| codec::sha1_bin(d).to_vec())?)?;
    ngx.set("unescape_uri", bin(codec::unescape_uri)?)?;
    ngx.set(
        "hmac_sha1",
        lua.create_function(|lua, (key, s): (LuaString, LuaString)| {
            lua.create_string(codec::hmac_sha1(&key.as_bytes(), &s.as_bytes()))
        })?,
    )?;
    ngx.set(
        "crc32_short",
        lua.create_function(|_, s: LuaString| Ok(codec::crc32_short(&s.as_bytes())))?,
    )?;
    ngx.set(
        "crc32_long",
        lua.create_function(|_, s: LuaString| Ok(codec::crc32_long(&s.as_bytes())))?,
    )?;
    ngx.set(
        "encode_base64",
        lua.create_function(|_, (s, no_padding): (LuaString, Option<bool>)| {
            Ok(codec::encode_base64(
                &s.as_bytes(),
                no_padding.unwrap_or(false),
            ))
        })?,
    )?;
    ngx.set(
        "decode_base64",
        lua.create_function(
            |lua, s: LuaString| match codec::decode_base64(&s.as_bytes()) {
                Some(d) => lua.create_string(d).map(Value::String),
                None => Ok(Value::Nil),
            },
        )?,
    )?;
    ngx.set(
        "escape_uri",
        lua.create_function(|lua, (s, kind): (LuaString, Option<i64>)| {
            let kind = codec::check_escape_type(kind.unwrap_or(2)).map_err(err)?;
            lua.create_string(codec::escape_uri(&s.as_bytes(), kind))
        })?,
    )?;
    ngx.set(
        "encode_args",
        lua.create_function(|lua, t: Table| lua.create_string(encode_args(&t)?))?,
    )?;
    ngx.set(
        "decode_args",
        lua.create_function(|lua, (s, max): (LuaString, Option<i64>)| {
            decode_args(lua, &s.as_bytes(), max)
        })?,
    )?;

    ngx.set(
        "http_time",
        lua.create_function(|_, secs: i64| Ok(time::http_time(secs)))?,
    )?;
    ngx.set(
        "cookie_time",
        lua.create_function(|_, secs: i64| Ok(time::cookie_time(secs)))?,
    )?;
    ngx.set(
        "parse_http_time",
        lua.create_function(|_, s: LuaString| Ok(time::parse_http_time(s.as_bytes().as_ref())))?,
    )?;
    ngx.set(
        "today",
        lua.create_function(|_, ()| {
            let now = now_secs();
            Ok(time::today(now, time::system_gmtoff(now)))
        })?,
    )?;
    ngx.set(
        "localtime",
        lua.create_function(|_, ()| {
            let now = now_secs();
            Ok(time::localtime(now, time::system_gmtoff(now)))
        })?,
    )?;
    ngx.set(
        "utctime",
        lua.create_function(|_, ()| Ok(time::utctime(now_secs())))?,
    )?;
    Ok(())
}

/// `ngx.decode_args` / `get_uri_args` / `get_post_args`: a table (strings,
/// `true` for bare keys, lists for repeated keys) and "truncated" when
/// `max_args` stopped it.
pub(super) fn decode_args(
    lua: &Lua,
    data: &[u8],
    max: Option<i64>,
) -> mlua::Result<(Table, Value)> {
    let max = match max {
        Some(n) if n >= 0 => n as usize,
        _ => codec::DEFAULT_MAX_ARGS,
    };
    let decoded = codec::decode_args(data, max);
    let t = lua.create_table()?;
    for (k, v) in &decoded.args {
        t.raw_set(lua.create_string(k)?, arg_to_lua(lua, v)?)?;
    }
    let truncated = if decoded.truncated {
        Value::String(lua.create_string("truncated")?)
    } else {
        Value::Nil
    };
    Ok((t, truncated))
}

fn arg_to_lua(lua: &Lua, v: &ArgValue) -> mlua::Result<Value> {
    Ok(match v {
        ArgValue::Str(s) => Value::String(lua.create_string(s)?),
        ArgValue::Bool(b) => Value::Boolean(*b),
        ArgValue::List(items) => {
            let t = lua.create_table()?;
            for item in items {
                t.push(arg_to_lua(lua, item)?)?;
            }
            Value::Table(t)
        }
    })
}

/// `ngx.encode_args` / `set_uri_args` with a table.
pub(super) fn encode_args(t: &Table) -> mlua::Result<Vec<u8>> {
    let mut args: Vec<(Vec<u8>, ArgValue)> = Vec::new();
    for pair in t.clone().pairs::<Value, Value>() {
        let (k, v) = pair?;
        let key =
            scalar(&k).ok_or_else(|| err("attempt to use a non-string key as query arg name"))?;
        let value = match &v {
            Value::Table(list) => {
                let mut items = Vec::new();
                for item in list.clone().sequence_values::<Value>() {
                    items.push(arg_value(&item?)?);
                }
                ArgValue::List(items)
            }
            other => arg_value(other)?,
        };
        args.push((key, value));
    }
    codec::encode_args(&args).map_err(err)
}

fn scalar(v: &Value) -> Option<Vec<u8>> {
    match v {
        Value::String(s) => Some(s.as_bytes().to_vec()),
        Value::Integer(i) => Some(i.to_string().into_bytes()),
        Value::Number(n) => Some(super::output::format_number(*n).into_bytes()),
        _ => None,
    }
}

fn arg_value(v: &Value) -> mlua::Result<ArgValue> {
    match v {
        Value::Boolean(b) => Ok(ArgValue::Bool(*b)),
        Value::Table(_) => Err(err("attempt to use table as query arg value")),
        other => scalar(other).map(ArgValue::Str).ok_or_else(|| {
            err(format!(
                "attempt to use {} as query arg value",
                other.type_name()
            ))
        }),
    }
}

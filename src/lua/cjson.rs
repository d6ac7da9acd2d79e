//! `cjson` and `cjson.safe`, as OpenResty code expects them: a table with
//! keys 1..n only is an array, any other table an object (the empty table
//! an object, unless it is `cjson.empty_array`), `cjson.null` is
//! `ngx.null`; `cjson.safe` returns `nil, err` where `cjson` raises.
//! Encoding goes through serde_json.

use mlua::{Lua, MultiValue, Table, Value};
use serde_json::{Map, Number, Value as Json};

/// Nesting deeper than this is refused (as cjson's default of 1000).
const MAX_DEPTH: usize = 1000;

/// Registers `cjson` and `cjson.safe` in `package.preload`.
pub fn install(lua: &Lua) -> mlua::Result<()> {
    let preload: Table = lua.globals().get::<Table>("package")?.get("preload")?;
    preload.set("cjson", lua.create_function(|lua, ()| module(lua, false))?)?;
    preload.set(
        "cjson.safe",
        lua.create_function(|lua, ()| module(lua, true))?,
    )?;
    Ok(())
}

fn module(lua: &Lua, safe: bool) -> mlua::Result<Table> {
    let m = lua.create_table()?;
    m.set("null", Value::NULL)?;
    let empty_array = lua.create_table()?;
    m.set("empty_array", empty_array.clone())?;
    let marker = empty_array.clone();
    m.set(
        "encode",
        lua.create_function(move |lua, v: Value| {
            let encoded = to_json(&v, &marker, 0)
                .and_then(|j| serde_json::to_string(&j).map_err(|e| e.to_string()));
            answer(
                lua,
                safe,
                encoded.map(|text| lua.create_string(text).map(Value::String)),
            )
        })?,
    )?;
    m.set(
        "decode",
        lua.create_function(move |lua, text: mlua::LuaString| {
            let parsed: Result<Json, String> = serde_json::from_slice(&text.as_bytes())
                .map_err(|e| format!("Expected value but found invalid token: {e}"));
            answer(lua, safe, parsed.map(|j| from_json(lua, &j)))
        })?,
    )?;
    // Settings OpenResty code calls; the defaults above are what they set.
    for name in [
        "encode_empty_table_as_object",
        "encode_escape_forward_slash",
        "decode_array_with_array_mt",
        "encode_number_precision",
        "encode_max_depth",
        "decode_max_depth",
        "encode_sparse_array",
    ] {
        m.set(
            name,
            lua.create_function(|_, _: mlua::MultiValue| Ok(true))?,
        )?;
    }
    m.set("_NAME", if safe { "cjson.safe" } else { "cjson" })?;
    m.set("_VERSION", "2.1.0.10")?;
    Ok(m)
}

/// One value on success; on failure `nil, err` (cjson.safe) or an error.
fn answer(
    lua: &Lua,
    safe: bool,
    result: Result<mlua::Result<Value>, String>,
) -> mlua::Result<MultiValue> {
    match result {
        Ok(v) => Ok(MultiValue::from_vec(vec![v?])),
        Err(e) if safe => Ok(MultiValue::from_vec(vec![
            Value::Nil,
            Value::String(lua.create_string(e)?),
        ])),
        Err(e) => Err(mlua::Error::runtime(e)),
    }
}

fn to_json(v: &Value, empty_array: &Table, depth: usize) -> Result<Json, String> {
    if depth > MAX_DEPTH {
        return Err("Cannot serialise, excessive nesting (1001)".into());
    }
    Ok(match v {
        Value::Nil => Json::Null,
        Value::LightUserData(p) if p.0.is_null() => Json::Null,
        Value::Boolean(b) => Json::Bool(*b),
        Value::Integer(i) => Json::Number((*i).into()),
        Value::Number(n) => {
            if n.fract() == 0.0 && n.abs() < 9.0e15 {
                Json::Number((*n as i64).into())
            } else {
                Json::Number(
                    Number::from_f64(*n)
                        .ok_or("Cannot serialise number: must not be NaN or Infinity")?,
                )
            }
        }
        Value::String(s) => Json::String(s.to_string_lossy().to_string()),
        Value::Table(t) => table_to_json(t, empty_array, depth)?,
        other => {
            return Err(format!(
                "Cannot serialise {}: type not supported",
                other.type_name()
            ));
        }
    })
}

fn table_to_json(t: &Table, empty_array: &Table, depth: usize) -> Result<Json, String> {
    if t == empty_array {
        return Ok(Json::Array(Vec::new()));
    }
    let len = t.raw_len();
    let mut count = 0usize;
    let mut all_index = true;
    for pair in t.clone().pairs::<Value, Value>() {
        let (k, _) = pair.map_err(|e| e.to_string())?;
        count += 1;
        let is_index = match k {
            Value::Integer(i) => i >= 1 && (i as usize) <= len,
            Value::Number(n) => n.fract() == 0.0 && n >= 1.0 && (n as usize) <= len,
            _ => false,
        };
        all_index &= is_index;
    }
    if count > 0 && all_index && count == len {
        let mut items = Vec::with_capacity(len);
        for i in 1..=len {
            let v: Value = t.raw_get(i).map_err(|e| e.to_string())?;
            items.push(to_json(&v, empty_array, depth + 1)?);
        }
        return Ok(Json::Array(items));
    }
    let mut map = Map::new();
    for pair in t.clone().pairs::<Value, Value>() {
        let (k, v) = pair.map_err(|e| e.to_string())?;
        let key = match k {
            Value::String(s) => s.to_string_lossy().to_string(),
            Value::Integer(i) => i.to_string(),
            Value::Number(n) => n.to_string(),
            other => {
                return Err(format!(
                    "Cannot serialise table: {} key not supported",
                    other.type_name()
                ));
            }
        };
        map.insert(key, to_json(&v, empty_array, depth + 1)?);
    }
    Ok(Json::Object(map))
}

fn from_json(lua: &Lua, j: &Json) -> mlua::Result<Value> {
    Ok(match j {
        Json::Null => Value::NULL,
        Json::Bool(b) => Value::Boolean(*b),
        Json::Number(n) => match n.as_i64() {
            Some(i) => Value::Integer(i),
            None => Value::Number(n.as_f64().unwrap_or(f64::NAN)),
        },
        Json::String(s) => Value::String(lua.create_string(s)?),
        Json::Array(items) => {
            let t = lua.create_table_with_capacity(items.len(), 0)?;
            for item in items {
                t.push(from_json(lua, item)?)?;
            }
            Value::Table(t)
        }
        Json::Object(map) => {
            let t = lua.create_table_with_capacity(0, map.len())?;
            for (k, v) in map {
                t.set(k.as_str(), from_json(lua, v)?)?;
            }
            Value::Table(t)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(code: &str) -> String {
        let lua = Lua::new();
        install(&lua).unwrap_or_else(|e| panic!("{e}"));
        lua.load(code)
            .eval::<String>()
            .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn encodes_arrays_objects_and_null() {
        assert_eq!(
            run(r#"local c = require "cjson"; return c.encode({1, 2, "x"})"#),
            r#"[1,2,"x"]"#
        );
        assert_eq!(
            run(r#"local c = require "cjson"; return c.encode({a = c.null})"#),
            r#"{"a":null}"#
        );
        assert_eq!(
            run(r#"local c = require "cjson"; return c.encode({})"#),
            "{}"
        );
        assert_eq!(
            run(r#"local c = require "cjson"; return c.encode(c.empty_array)"#),
            "[]"
        );
        assert_eq!(
            run(r#"local c = require "cjson"; return c.encode({[1] = 1, [3] = 3})"#),
            r#"{"1":1,"3":3}"#
        );
        assert_eq!(
            run(r#"local c = require "cjson"; return c.encode(1.5)"#),
            "1.5"
        );
    }

    #[test]
    fn decodes_and_safe_returns_errors() {
        assert_eq!(
            run(
                r#"local c = require "cjson"; local t = c.decode('{"a":[1,2,{"b":null}]}'); return tostring(t.a[2]) .. tostring(t.a[3].b == c.null)"#
            ),
            "2true"
        );
        assert_eq!(
            run(
                r#"local s = require "cjson.safe"; local v, err = s.decode("{bad"); return tostring(v) .. "|" .. tostring(err ~= nil)"#
            ),
            "nil|true"
        );
        assert_eq!(
            run(
                r#"local c = require "cjson"; local ok = pcall(c.decode, "{bad"); return tostring(ok)"#
            ),
            "false"
        );
    }
}

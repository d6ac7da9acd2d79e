//! `ngx.shared.NAME`, over [`crate::shdict::SharedDict`], shaped as
//! lua-resty-core makes it: each dict is a table holding its zone at `[1]`
//! (`type(ngx.shared.d) == "table"`), all dicts share one metatable whose
//! `__index` holds the methods, and the methods follow lua-resty-core's and
//! ngx_lua's argument checks, return values and error strings (`ok, err,
//! forcible` from setters, `nil, err` on failure, flags only when not 0).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use mlua::{AnyUserData, FromLuaMulti, IntoLuaMulti, Lua, MultiValue, Table, UserData, Value};

use super::err;
use crate::shdict::{DictError, SetResult, SharedDict, Value as DictValue};

/// The zone of a dict table (its `[1]`).
struct Dict(Arc<SharedDict>);

impl UserData for Dict {}

/// Longest key ngx_lua accepts.
const MAX_KEY: usize = 65535;

/// `get_keys()` without a count, as ngx_lua.
const DEFAULT_KEYS: usize = 1024;

fn values(v: Vec<Value>) -> MultiValue {
    MultiValue::from_vec(v)
}

fn text(lua: &Lua, s: &str) -> mlua::Result<Value> {
    lua.create_string(s).map(Value::String)
}

fn failure(lua: &Lua, message: &str) -> mlua::Result<MultiValue> {
    Ok(values(vec![Value::Nil, text(lua, message)?]))
}

/// The key's bytes (`tostring`ed when not a string, as lua-resty-core
/// does), or the error string ngx_lua gives.
fn key(v: &Value) -> mlua::Result<Result<Vec<u8>, &'static str>> {
    let k = match v {
        Value::Nil => return Ok(Err("nil key")),
        Value::String(s) => s.as_bytes().to_vec(),
        Value::Integer(i) => i.to_string().into_bytes(),
        Value::Number(n) => super::output::format_number(*n).into_bytes(),
        other => other.to_string()?.into_bytes(),
    };
    if k.is_empty() {
        return Ok(Err("empty key"));
    }
    if k.len() > MAX_KEY {
        return Ok(Err("key too long"));
    }
    Ok(Ok(k))
}

/// Evaluates to the key's bytes, or returns `nil, err` from the method.
macro_rules! key_or_fail {
    ($lua:expr, $k:expr) => {
        match key(&$k)? {
            Ok(k) => k,
            Err(e) => return failure($lua, e),
        }
    };
}

fn to_dict(v: &Value) -> Result<Option<DictValue>, &'static str> {
    Ok(match v {
        Value::Nil => None,
        Value::Boolean(b) => Some(DictValue::Bool(*b)),
        Value::Integer(i) => Some(DictValue::Number(*i as f64)),
        Value::Number(n) => Some(DictValue::Number(*n)),
        Value::String(s) => Some(DictValue::Str(Bytes::copy_from_slice(&s.as_bytes()))),
        _ => return Err("bad value type"),
    })
}

fn to_lua(lua: &Lua, v: DictValue) -> mlua::Result<Value> {
    Ok(match v {
        DictValue::Bool(b) => Value::Boolean(b),
        DictValue::Number(n) => Value::Number(n),
        DictValue::Str(s) => Value::String(lua.create_string(&s)?),
    })
}

/// A number argument as lua-resty-core takes it (`tonumber`).
fn number(v: &Value) -> Option<f64> {
    match v {
        Value::Integer(i) => Some(*i as f64),
        Value::Number(n) => Some(*n),
        Value::String(s) => s.to_str().ok()?.trim().parse().ok(),
        _ => None,
    }
}

fn exptime(v: &Value) -> mlua::Result<Option<Duration>> {
    let secs = match v {
        Value::Nil => return Ok(None),
        v => number(v).ok_or_else(|| err("bad \"exptime\" argument"))?,
    };
    if secs < 0.0 || !secs.is_finite() {
        return Err(err("bad \"exptime\" argument"));
    }
    Ok((secs > 0.0).then(|| Duration::from_secs_f64(secs)))
}

/// `ok, err, forcible` from a setter.
fn set_result(lua: &Lua, r: SetResult) -> mlua::Result<MultiValue> {
    Ok(match r {
        Ok(forcible) => values(vec![
            Value::Boolean(true),
            Value::Nil,
            Value::Boolean(forcible),
        ]),
        Err(e) => values(vec![
            Value::Boolean(false),
            text(lua, &e.to_string())?,
            Value::Boolean(e == DictError::NoMemoryForcible),
        ]),
    })
}

type Setter =
    fn(&SharedDict, &[u8], Option<DictValue>, Option<Duration>, u32, Instant) -> SetResult;

/// A method: `f` gets the dict of the table it is called on (`self`), or
/// the call fails with lua-resty-core's `bad "zone" argument`.
fn method<A, R>(
    lua: &Lua,
    f: impl Fn(&Lua, &SharedDict, A) -> mlua::Result<R> + 'static,
) -> mlua::Result<mlua::Function>
where
    A: FromLuaMulti,
    R: IntoLuaMulti,
{
    lua.create_function(move |lua, mut args: MultiValue| {
        let bad = || err("bad \"zone\" argument");
        let Some(Value::Table(zone)) = args.pop_front() else {
            return Err(bad());
        };
        let zone: AnyUserData = match zone.raw_get(1)? {
            Value::UserData(u) => u,
            _ => return Err(bad()),
        };
        let dict = zone.borrow::<Dict>().map_err(|_| bad())?;
        f(lua, &dict.0, A::from_lua_multi(args, lua)?)
    })
}

/// The methods every dict shares.
fn methods(lua: &Lua) -> mlua::Result<Table> {
    let m = lua.create_table()?;
    m.set(
        "get",
        method(lua, |lua, d, k: Value| {
            let k = key_or_fail!(lua, k);
            match d.get(&k, Instant::now()) {
                Ok(Some((v, 0))) => Ok(values(vec![to_lua(lua, v)?])),
                Ok(Some((v, flags))) => Ok(values(vec![
                    to_lua(lua, v)?,
                    Value::Integer(i64::from(flags)),
                ])),
                Ok(None) => Ok(values(vec![Value::Nil])),
                Err(e) => failure(lua, &e.to_string()),
            }
        })?,
    )?;
    m.set(
        "get_stale",
        method(lua, |lua, d, k: Value| {
            let k = key_or_fail!(lua, k);
            match d.get_stale(&k, Instant::now()) {
                Ok(Some((v, flags, stale))) => {
                    let flags = if flags == 0 {
                        Value::Nil
                    } else {
                        Value::Integer(i64::from(flags))
                    };
                    Ok(values(vec![to_lua(lua, v)?, flags, Value::Boolean(stale)]))
                }
                Ok(None) => Ok(values(vec![Value::Nil])),
                Err(e) => failure(lua, &e.to_string()),
            }
        })?,
    )?;
    let setters: [(&str, Setter); 5] = [
        ("set", SharedDict::set),
        ("safe_set", SharedDict::safe_set),
        ("add", SharedDict::add),
        ("safe_add", SharedDict::safe_add),
        ("replace", SharedDict::replace),
    ];
    for (name, setter) in setters {
        m.set(
            name,
            method(
                lua,
                move |lua, d, (k, v, exp, flags): (Value, Value, Value, Option<u32>)| {
                    let ttl = exptime(&exp)?;
                    let k = key_or_fail!(lua, k);
                    let v = match to_dict(&v) {
                        Ok(v) => v,
                        Err(e) => return failure(lua, e),
                    };
                    let r = setter(d, &k, v, ttl, flags.unwrap_or(0), Instant::now());
                    set_result(lua, r)
                },
            )?,
        )?;
    }
    // As lua-resty-core's: `set(key, nil)`.
    m.set(
        "delete",
        method(lua, |lua, d, k: Value| {
            let k = key_or_fail!(lua, k);
            d.delete(&k);
            Ok(values(vec![Value::Boolean(true)]))
        })?,
    )?;
    m.set(
        "incr",
        method(
            lua,
            |lua, d, (k, by, init, init_ttl): (Value, Value, Value, Value)| {
                let k = key_or_fail!(lua, k);
                let by = number(&by).ok_or_else(|| err("cannot convert 'nil' to 'double'"))?;
                let init = match &init {
                    Value::Nil | Value::Boolean(false) => None,
                    v => Some(number(v).ok_or_else(|| {
                        err(format!(
                            "bad init arg: number expected, got {}",
                            v.type_name()
                        ))
                    })?),
                };
                let init_ttl = match &init_ttl {
                    Value::Nil => None,
                    v => {
                        let t = number(v).ok_or_else(|| {
                            err(format!(
                                "bad init_ttl arg: number expected, got {}",
                                v.type_name()
                            ))
                        })?;
                        if t < 0.0 || !t.is_finite() {
                            return Err(err("bad \"init_ttl\" argument"));
                        }
                        if init.is_none() {
                            return Err(err("must provide \"init\" when providing \"init_ttl\""));
                        }
                        (t > 0.0).then(|| Duration::from_secs_f64(t))
                    }
                };
                match d.incr(&k, by, init, init_ttl, Instant::now()) {
                    Ok((n, _)) if init.is_none() => Ok(values(vec![Value::Number(n)])),
                    Ok((n, forcible)) => Ok(values(vec![
                        Value::Number(n),
                        Value::Nil,
                        Value::Boolean(forcible),
                    ])),
                    Err(e) => failure(lua, &e.to_string()),
                }
            },
        )?,
    )?;
    for (name, left) in [("lpush", true), ("rpush", false)] {
        m.set(
            name,
            method(lua, move |lua, d, (k, v): (Value, Value)| {
                let k = key_or_fail!(lua, k);
                let v = match v {
                    Value::String(_) | Value::Integer(_) | Value::Number(_) => to_dict(&v),
                    _ => Err("bad value type"),
                };
                let Ok(Some(v)) = v else {
                    return failure(lua, "bad value type");
                };
                let now = Instant::now();
                let r = if left {
                    d.lpush(&k, v, now)
                } else {
                    d.rpush(&k, v, now)
                };
                match r {
                    Ok(n) => Ok(values(vec![Value::Integer(n as i64)])),
                    Err(e) => failure(lua, &e.to_string()),
                }
            })?,
        )?;
    }
    for (name, left) in [("lpop", true), ("rpop", false)] {
        m.set(
            name,
            method(lua, move |lua, d, k: Value| {
                let k = key_or_fail!(lua, k);
                let now = Instant::now();
                let r = if left {
                    d.lpop(&k, now)
                } else {
                    d.rpop(&k, now)
                };
                match r {
                    Ok(Some(v)) => Ok(values(vec![to_lua(lua, v)?])),
                    Ok(None) => Ok(values(vec![Value::Nil])),
                    Err(e) => failure(lua, &e.to_string()),
                }
            })?,
        )?;
    }
    m.set(
        "llen",
        method(lua, |lua, d, k: Value| {
            let k = key_or_fail!(lua, k);
            match d.llen(&k, Instant::now()) {
                Ok(n) => Ok(values(vec![Value::Integer(n as i64)])),
                Err(e) => failure(lua, &e.to_string()),
            }
        })?,
    )?;
    m.set(
        "ttl",
        method(lua, |lua, d, k: Value| {
            let k = key_or_fail!(lua, k);
            match d.ttl(&k, Instant::now()) {
                Ok(t) => Ok(values(vec![Value::Number(
                    t.map_or(0.0, |t| t.as_secs_f64()),
                )])),
                Err(e) => failure(lua, &e.to_string()),
            }
        })?,
    )?;
    m.set(
        "expire",
        method(lua, |lua, d, (k, exp): (Value, Value)| {
            let ttl = exptime(&exp)?;
            let k = key_or_fail!(lua, k);
            match d.expire(&k, ttl, Instant::now()) {
                Ok(()) => Ok(values(vec![Value::Boolean(true)])),
                Err(e) => failure(lua, &e.to_string()),
            }
        })?,
    )?;
    m.set(
        "flush_all",
        method(lua, |_, d, ()| {
            d.flush_all();
            Ok(())
        })?,
    )?;
    m.set(
        "flush_expired",
        method(lua, |_, d, max: Option<usize>| {
            Ok(d.flush_expired(max.unwrap_or(0), Instant::now()))
        })?,
    )?;
    m.set(
        "get_keys",
        method(lua, |lua, d, max: Option<usize>| {
            let t = lua.create_table()?;
            for k in d.get_keys(max.unwrap_or(DEFAULT_KEYS), Instant::now()) {
                t.push(lua.create_string(&k)?)?;
            }
            Ok(t)
        })?,
    )?;
    m.set("capacity", method(lua, |_, d, ()| Ok(d.capacity()))?)?;
    m.set("free_space", method(lua, |_, d, ()| Ok(d.free_space()))?)?;
    Ok(m)
}

/// `ngx.shared`: one table per configured dict.
pub(super) fn install(
    lua: &Lua,
    ngx: &Table,
    dicts: &BTreeMap<String, Arc<SharedDict>>,
) -> mlua::Result<()> {
    let shared = lua.create_table()?;
    // lua-resty-core's layout: the methods are the metatable's own fields,
    // and `__index` is the metatable itself (`ngx.shared.d.__index`).
    let meta = methods(lua)?;
    meta.set("__index", meta.clone())?;
    lua.set_named_registry_value(META, meta)?;
    for (name, dict) in dicts {
        shared.set(name.as_str(), dict_table(lua, dict.clone())?)?;
    }
    ngx.set("shared", shared)?;
    Ok(())
}

/// Where [`install`] keeps the dicts' metatable.
const META: &str = "moongate.shared_dict";

/// `dict` as a table with the `ngx.shared.NAME` methods, for a store that
/// has no name in `ngx.shared` (a bundled policy's own, see
/// `lua::policies::PolicyStores`). Needs [`install`] first.
pub fn dict_table(lua: &Lua, dict: Arc<SharedDict>) -> mlua::Result<Table> {
    let meta: Table = lua.named_registry_value(META)?;
    let zone = lua.create_table()?;
    zone.raw_set(1, lua.create_userdata(Dict(dict))?)?;
    zone.set_metatable(Some(meta))?;
    Ok(zone)
}

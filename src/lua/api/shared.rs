//! `ngx.shared.NAME`: a dict userdata over [`crate::shdict::SharedDict`],
//! with ngx_lua's methods and return conventions (`ok, err, forcible` from
//! setters, `nil, err` on failure, flags only when not 0).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use mlua::{Lua, MultiValue, Table, UserData, UserDataMethods, Value};

use super::err;
use crate::shdict::{DictError, SetResult, SharedDict, Value as DictValue};

/// The userdata behind `ngx.shared.NAME`.
struct Dict(Arc<SharedDict>);

/// Longest key ngx_lua accepts.
const MAX_KEY: usize = 65535;

fn values(v: Vec<Value>) -> MultiValue {
    MultiValue::from_vec(v)
}

fn text(lua: &Lua, s: &str) -> mlua::Result<Value> {
    lua.create_string(s).map(Value::String)
}

/// The key's bytes, or the error string ngx_lua gives.
fn key(v: &Value) -> Result<Vec<u8>, &'static str> {
    let k = match v {
        Value::Nil => return Err("nil key"),
        Value::String(s) => s.as_bytes().to_vec(),
        Value::Integer(i) => i.to_string().into_bytes(),
        Value::Number(n) => super::output::format_number(*n).into_bytes(),
        _ => return Err("bad key type"),
    };
    if k.is_empty() {
        return Err("empty key");
    }
    if k.len() > MAX_KEY {
        return Err("key too long");
    }
    Ok(k)
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

fn ttl(secs: Option<f64>) -> mlua::Result<Option<Duration>> {
    match secs {
        None => Ok(None),
        Some(s) if s < 0.0 || !s.is_finite() => Err(err("bad \"exptime\" argument")),
        Some(0.0) => Ok(None),
        Some(s) => Ok(Some(Duration::from_secs_f64(s))),
    }
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
            Value::Boolean(false),
        ]),
    })
}

fn failure(lua: &Lua, message: &str) -> mlua::Result<MultiValue> {
    Ok(values(vec![Value::Nil, text(lua, message)?]))
}

type Setter =
    fn(&SharedDict, &[u8], Option<DictValue>, Option<Duration>, u32, Instant) -> SetResult;

impl UserData for Dict {
    fn add_methods<M: UserDataMethods<Self>>(m: &mut M) {
        m.add_method("get", |lua, d, k: Value| {
            let k = match key(&k) {
                Ok(k) => k,
                Err(e) => return failure(lua, e),
            };
            match d.0.get(&k, Instant::now()) {
                Some((v, 0)) => Ok(values(vec![to_lua(lua, v)?])),
                Some((v, flags)) => Ok(values(vec![
                    to_lua(lua, v)?,
                    Value::Integer(i64::from(flags)),
                ])),
                None => Ok(values(vec![Value::Nil])),
            }
        });
        m.add_method("get_stale", |lua, d, k: Value| {
            let k = match key(&k) {
                Ok(k) => k,
                Err(e) => return failure(lua, e),
            };
            match d.0.get_stale(&k, Instant::now()) {
                Some((v, flags, stale)) => {
                    let flags = if flags == 0 {
                        Value::Nil
                    } else {
                        Value::Integer(i64::from(flags))
                    };
                    Ok(values(vec![to_lua(lua, v)?, flags, Value::Boolean(stale)]))
                }
                None => Ok(values(vec![Value::Nil])),
            }
        });
        let setters: [(&str, Setter); 5] = [
            ("set", SharedDict::set),
            ("safe_set", SharedDict::safe_set),
            ("add", SharedDict::add),
            ("safe_add", SharedDict::safe_add),
            ("replace", SharedDict::replace),
        ];
        for (name, setter) in setters {
            m.add_method(
                name,
                move |lua, d, (k, v, exptime, flags): (Value, Value, Option<f64>, Option<u32>)| {
                    let k = match key(&k) {
                        Ok(k) => k,
                        Err(e) => return Ok(values(vec![Value::Boolean(false), text(lua, e)?])),
                    };
                    let v = match to_dict(&v) {
                        Ok(v) => v,
                        Err(e) => return Ok(values(vec![Value::Boolean(false), text(lua, e)?])),
                    };
                    let r = setter(
                        &d.0,
                        &k,
                        v,
                        ttl(exptime)?,
                        flags.unwrap_or(0),
                        Instant::now(),
                    );
                    set_result(lua, r)
                },
            );
        }
        // As lua-resty-core's: `set(key, nil)`, so `true`, or
        // `false, err` for a bad key.
        m.add_method("delete", |lua, d, k: Value| match key(&k) {
            Ok(k) => {
                d.0.delete(&k);
                Ok(values(vec![Value::Boolean(true)]))
            }
            Err(e) => Ok(values(vec![Value::Boolean(false), text(lua, e)?])),
        });
        m.add_method(
            "incr",
            |lua, d, (k, by, init, init_ttl): (Value, f64, Option<f64>, Option<f64>)| {
                let k = match key(&k) {
                    Ok(k) => k,
                    Err(e) => return failure(lua, e),
                };
                match d.0.incr(&k, by, init, ttl(init_ttl)?, Instant::now()) {
                    Ok((n, forcible)) => Ok(values(vec![
                        Value::Number(n),
                        Value::Nil,
                        Value::Boolean(forcible),
                    ])),
                    Err(e) => failure(lua, &e.to_string()),
                }
            },
        );
        for (name, left) in [("lpush", true), ("rpush", false)] {
            m.add_method(name, move |lua, d, (k, v): (Value, Value)| {
                let k = match key(&k) {
                    Ok(k) => k,
                    Err(e) => return failure(lua, e),
                };
                let v = match v {
                    Value::String(_) | Value::Integer(_) | Value::Number(_) => to_dict(&v),
                    _ => Err("bad value type"),
                };
                let Ok(Some(v)) = v else {
                    return failure(lua, "bad value type");
                };
                let now = Instant::now();
                let r = if left {
                    d.0.lpush(&k, v, now)
                } else {
                    d.0.rpush(&k, v, now)
                };
                match r {
                    Ok(n) => Ok(values(vec![Value::Integer(n as i64)])),
                    Err(e) => failure(lua, &e.to_string()),
                }
            });
        }
        for (name, left) in [("lpop", true), ("rpop", false)] {
            m.add_method(name, move |lua, d, k: Value| {
                let k = match key(&k) {
                    Ok(k) => k,
                    Err(e) => return failure(lua, e),
                };
                let now = Instant::now();
                let r = if left {
                    d.0.lpop(&k, now)
                } else {
                    d.0.rpop(&k, now)
                };
                match r {
                    Ok(Some(v)) => Ok(values(vec![to_lua(lua, v)?])),
                    Ok(None) => Ok(values(vec![Value::Nil])),
                    Err(e) => failure(lua, &e.to_string()),
                }
            });
        }
        m.add_method("llen", |lua, d, k: Value| {
            let k = match key(&k) {
                Ok(k) => k,
                Err(e) => return failure(lua, e),
            };
            match d.0.llen(&k, Instant::now()) {
                Ok(n) => Ok(values(vec![Value::Integer(n as i64)])),
                Err(e) => failure(lua, &e.to_string()),
            }
        });
        m.add_method("ttl", |lua, d, k: Value| {
            let k = match key(&k) {
                Ok(k) => k,
                Err(e) => return failure(lua, e),
            };
            match d.0.ttl(&k, Instant::now()) {
                Ok(t) => Ok(values(vec![Value::Number(
                    t.map_or(0.0, |t| t.as_secs_f64()),
                )])),
                Err(e) => failure(lua, &e.to_string()),
            }
        });
        m.add_method("expire", |lua, d, (k, exptime): (Value, Option<f64>)| {
            let k = match key(&k) {
                Ok(k) => k,
                Err(e) => return failure(lua, e),
            };
            match d.0.expire(&k, ttl(exptime)?, Instant::now()) {
                Ok(()) => Ok(values(vec![Value::Boolean(true)])),
                Err(DictError::NotFound) => failure(lua, "not found"),
                Err(e) => failure(lua, &e.to_string()),
            }
        });
        m.add_method("flush_all", |_, d, ()| {
            d.0.flush_all();
            Ok(())
        });
        m.add_method("flush_expired", |_, d, max: Option<usize>| {
            Ok(d.0.flush_expired(max.unwrap_or(0), Instant::now()))
        });
        m.add_method("get_keys", |lua, d, max: Option<usize>| {
            let t = lua.create_table()?;
            for k in d.0.get_keys(max.unwrap_or(1024), Instant::now()) {
                t.push(lua.create_string(&k)?)?;
            }
            Ok(t)
        });
        m.add_method("capacity", |_, d, ()| Ok(d.0.capacity()));
        m.add_method("free_space", |_, d, ()| Ok(d.0.free_space()));
    }
}

/// `ngx.shared`: one entry per configured dict.
pub(super) fn install(
    lua: &Lua,
    ngx: &Table,
    dicts: &BTreeMap<String, Arc<SharedDict>>,
) -> mlua::Result<()> {
    let shared = lua.create_table()?;
    for (name, dict) in dicts {
        shared.set(name.as_str(), lua.create_userdata(Dict(dict.clone()))?)?;
    }
    ngx.set("shared", shared)?;
    Ok(())
}

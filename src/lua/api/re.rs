//! `ngx.re.match`, `find`, `gmatch`, `sub` and `gsub` over
//! [`crate::ngx::re`]: PCRE syntax and option letters, ngx_lua's return
//! conventions (a bad option letter raises; a bad pattern or a failed
//! match returns `nil, err`), 1-based positions and `ctx.pos`.

use std::cell::RefCell;
use std::sync::Arc;

use mlua::{Function, Lua, LuaString, MultiValue, Table, Value};

use super::err;
use crate::ngx::re::{self, Captures, Regex, ReplaceError, Template};

/// Compiles (cached); the outer error is a Lua error (bad flag), the
/// inner one is returned to the script as `nil, err`.
fn compile(
    pattern: &LuaString,
    opts: &Option<LuaString>,
) -> mlua::Result<Result<Arc<Regex>, String>> {
    let opts = opts
        .as_ref()
        .map(|o| o.as_bytes().to_vec())
        .unwrap_or_default();
    let flags = re::parse_flags(&opts).map_err(err)?;
    Ok(re::compile_with(pattern.as_bytes().as_ref(), flags))
}

fn failure(lua: &Lua, values: usize, message: String) -> mlua::Result<MultiValue> {
    let mut out = vec![Value::Nil; values];
    out.push(Value::String(lua.create_string(message)?));
    Ok(MultiValue::from_vec(out))
}

/// The captures table: `m[0]`, `m[1]`…, names; unmatched groups are `false`.
fn captures(lua: &Lua, caps: &Captures, subject: &[u8]) -> mlua::Result<Table> {
    let t = lua.create_table()?;
    let value = |n: usize| -> mlua::Result<Value> {
        Ok(match caps.bytes(n, subject) {
            Some(b) => Value::String(lua.create_string(b)?),
            None => Value::Boolean(false),
        })
    };
    t.raw_set(0, value(0)?)?;
    for n in 1..=caps.groups.len() {
        t.raw_set(n, value(n)?)?;
    }
    for (name, n) in &caps.names {
        t.raw_set(name.as_str(), value(*n)?)?;
    }
    Ok(t)
}

/// `ctx.pos` (1-based) as a 0-based start.
fn start_of(ctx: &Option<Table>) -> mlua::Result<usize> {
    match ctx {
        Some(c) => Ok(c
            .get::<Option<i64>>("pos")?
            .map_or(0, |p| p.max(1) as usize - 1)),
        None => Ok(0),
    }
}

pub(super) fn install(lua: &Lua, ngx: &Table) -> mlua::Result<()> {
    let t = lua.create_table()?;
    t.set(
        "match",
        lua.create_function(
            |lua,
             (subject, pattern, opts, ctx): (
                LuaString,
                LuaString,
                Option<LuaString>,
                Option<Table>,
            )| {
                let re = match compile(&pattern, &opts)? {
                    Ok(re) => re,
                    Err(e) => return failure(lua, 1, e),
                };
                let subject = subject.as_bytes();
                match re.find_at(&*subject, start_of(&ctx)?) {
                    Ok(Some(caps)) => {
                        if let Some(c) = &ctx {
                            c.set("pos", caps.whole.1 + 1)?;
                        }
                        Ok(MultiValue::from_vec(vec![Value::Table(captures(
                            lua, &caps, &subject,
                        )?)]))
                    }
                    Ok(None) => Ok(MultiValue::from_vec(vec![Value::Nil])),
                    Err(e) => failure(lua, 1, e),
                }
            },
        )?,
    )?;
    t.set(
        "find",
        lua.create_function(
            |lua,
             (subject, pattern, opts, ctx, nth): (
                LuaString,
                LuaString,
                Option<LuaString>,
                Option<Table>,
                Option<usize>,
            )| {
                let re = match compile(&pattern, &opts)? {
                    Ok(re) => re,
                    Err(e) => return failure(lua, 2, e),
                };
                let subject = subject.as_bytes();
                match re.find_at(&*subject, start_of(&ctx)?) {
                    Ok(Some(caps)) => {
                        if let Some(c) = &ctx {
                            c.set("pos", caps.whole.1 + 1)?;
                        }
                        Ok(match caps.get(nth.unwrap_or(0)) {
                            Some((s, e)) => MultiValue::from_vec(vec![
                                Value::Integer(s as i64 + 1),
                                Value::Integer(e as i64),
                            ]),
                            None => MultiValue::from_vec(vec![Value::Nil]),
                        })
                    }
                    Ok(None) => Ok(MultiValue::from_vec(vec![Value::Nil])),
                    Err(e) => failure(lua, 2, e),
                }
            },
        )?,
    )?;
    t.set(
        "gmatch",
        lua.create_function(
            |lua, (subject, pattern, opts): (LuaString, LuaString, Option<LuaString>)| {
                let re = match compile(&pattern, &opts)? {
                    Ok(re) => re,
                    Err(e) => return failure(lua, 1, e),
                };
                let subject = subject.as_bytes().to_vec();
                let found: Vec<Result<Captures, String>> = re.matches(&subject).collect();
                let pending = RefCell::new(found.into_iter());
                let iter =
                    lua.create_function(move |lua, ()| match pending.borrow_mut().next() {
                        Some(Ok(caps)) => Ok(MultiValue::from_vec(vec![Value::Table(captures(
                            lua, &caps, &subject,
                        )?)])),
                        Some(Err(e)) => failure(lua, 1, e),
                        None => Ok(MultiValue::from_vec(vec![Value::Nil])),
                    })?;
                Ok(MultiValue::from_vec(vec![Value::Function(iter)]))
            },
        )?,
    )?;
    for (name, global) in [("sub", false), ("gsub", true)] {
        t.set(
            name,
            lua.create_function(
                move |lua,
                      (subject, pattern, replace, opts): (
                    LuaString,
                    LuaString,
                    Value,
                    Option<LuaString>,
                )| {
                    let re = match compile(&pattern, &opts)? {
                        Ok(re) => re,
                        Err(e) => return failure(lua, 2, e),
                    };
                    let subject = subject.as_bytes();
                    let replaced = match &replace {
                        Value::Function(f) => by_function(lua, &re, &subject, global, f)?,
                        other => {
                            let text = match other {
                                Value::String(s) => s.as_bytes().to_vec(),
                                Value::Integer(i) => i.to_string().into_bytes(),
                                Value::Number(n) => n.to_string().into_bytes(),
                                _ => {
                                    return Err(err(
                                        "bad argument #3: string or function expected",
                                    ));
                                }
                            };
                            Template::compile(&text)
                                .and_then(|tpl| re::sub(&re, &*subject, &tpl, global))
                        }
                    };
                    match replaced {
                        Ok((out, n)) => Ok(MultiValue::from_vec(vec![
                            Value::String(lua.create_string(out)?),
                            Value::Integer(n as i64),
                        ])),
                        Err(e) => failure(lua, 2, e),
                    }
                },
            )?,
        )?;
    }
    ngx.set("re", t)?;
    Ok(())
}

/// `sub`/`gsub` whose replacement is a Lua function of the captures.
fn by_function(
    lua: &Lua,
    re: &Regex,
    subject: &[u8],
    global: bool,
    f: &Function,
) -> mlua::Result<Result<(Vec<u8>, usize), String>> {
    let result = re::replace_with(re, subject, global, |caps| -> mlua::Result<Vec<u8>> {
        let piece: Value = f.call(captures(lua, caps, subject)?)?;
        match piece {
            Value::String(s) => Ok(s.as_bytes().to_vec()),
            Value::Integer(i) => Ok(i.to_string().into_bytes()),
            Value::Number(n) => Ok(n.to_string().into_bytes()),
            other => Err(err(format!(
                "attempt to use {} as the replacement",
                other.type_name()
            ))),
        }
    });
    match result {
        Ok(done) => Ok(Ok(done)),
        Err(ReplaceError::Regex(e)) => Ok(Err(e)),
        Err(ReplaceError::Callback(e)) => Err(e),
    }
}

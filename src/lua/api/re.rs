//! `ngx.re.match`, `find`, `gmatch`, `sub` and `gsub` over
//! [`crate::ngx::re`], with lua-resty-core's calling conventions: the
//! subject goes through `tostring`, a bad option letter raises, a bad
//! pattern, template or failed match returns `nil[, nil], err`, positions
//! are 1-based and `ctx.pos` moves past each match. Also registers
//! `require "ngx.re"` (`split`, `opt`; see [`module`]).
//!
//! Compiled patterns and match scratch belong to the worker
//! ([`Engine`], a field of [`LuaWorker`]); what is per VM (whether a
//! pattern was cached with `o`, which `ngx.re.opt` checks) lives in
//! [`ReVm`], shared by this VM's functions.

use std::cell::Cell;
use std::rc::Rc;

use mlua::{Function, Lua, LuaString, MultiValue, Table, Value};

use super::err;
use crate::lua::worker::{self, LuaWorker};
use crate::ngx::re::{self, Captures, Engine, OwnedHay, Regex, ReplaceError, Template};

mod module;

/// What this VM's `ngx.re` functions share.
struct ReVm {
    worker: Rc<LuaWorker>,
    /// A pattern was compiled with `o` by match, find, gmatch or split
    /// (resty.core's "regex cache is not empty"): `ngx.re.opt` then refuses
    /// to change the JIT stack size.
    cached_once: Cell<bool>,
}

impl ReVm {
    fn engine(&self) -> &Engine {
        &self.worker.re
    }

    /// Compiles (cached); the outer error is a Lua error (bad flag), the
    /// inner one is returned to the script as `nil, err`. `once` marks an
    /// `o` pattern as cached (match, find, gmatch, split).
    fn compile(
        &self,
        pattern: &LuaString,
        opts: &Option<LuaString>,
        once: bool,
    ) -> mlua::Result<Result<Rc<Regex>, String>> {
        let flags = match opts {
            Some(o) => re::parse_flags(o.as_bytes()).map_err(err)?,
            None => re::Flags::default(),
        };
        let compiled = self.engine().compile(pattern.as_bytes(), flags);
        if once && flags.compile_once && compiled.is_ok() {
            self.cached_once.set(true);
        }
        Ok(compiled)
    }
}

/// Lua's `tostring(v)`, as resty.core applies it to subjects and
/// replacements.
fn tostring(lua: &Lua, v: Value) -> mlua::Result<LuaString> {
    match v {
        Value::String(s) => Ok(s),
        Value::Nil => lua.create_string("nil"),
        Value::Boolean(b) => lua.create_string(if b { "true" } else { "false" }),
        Value::Integer(_) | Value::Number(_) => lua
            .coerce_string(v)?
            .ok_or_else(|| err("number cannot be converted to a string")),
        other => lua.globals().get::<Function>("tostring")?.call(other),
    }
}

/// A table argument that may be absent (`nil` or `false`, as resty.core
/// tests it).
fn optional_table(v: Value, what: &str) -> mlua::Result<Option<Table>> {
    match v {
        Value::Nil | Value::Boolean(false) => Ok(None),
        Value::Table(t) => Ok(Some(t)),
        other => Err(err(format!(
            "bad argument ({what} expected to be a table, got {})",
            other.type_name()
        ))),
    }
}

fn failure(lua: &Lua, values: usize, message: String) -> mlua::Result<MultiValue> {
    let mut out = vec![Value::Nil; values];
    out.push(Value::String(lua.create_string(message)?));
    Ok(MultiValue::from_vec(out))
}

/// Fills `t` as resty.core's `collect_captures`: `t[0]`…`t[n]` (`false`
/// for a group that did not take part), then the names; with `D`, a name
/// holds the list of its groups that took part.
fn fill_captures(
    lua: &Lua,
    t: &Table,
    re: &Regex,
    caps: &Captures,
    subject: &[u8],
) -> mlua::Result<()> {
    let groups = re.group_count();
    let value = |n: usize| -> mlua::Result<Value> {
        if n > groups {
            return Ok(Value::Nil);
        }
        Ok(match caps.bytes(n, subject) {
            Some(b) => Value::String(lua.create_string(b)?),
            None => Value::Boolean(false),
        })
    };
    for n in 0..=groups {
        t.set(n, value(n)?)?;
    }
    let dupnames = re.flags().dupnames;
    for (name, n) in re.names() {
        let name = lua.create_string(name)?;
        let cap = value(*n)?;
        if !dupnames {
            t.set(name, cap)?;
        } else if let Value::String(_) = cap {
            match t.get::<Value>(&name)? {
                Value::Table(list) => list.set(list.raw_len() + 1, cap)?,
                _ => t.set(name, lua.create_sequence_from([cap])?)?,
            }
        }
    }
    Ok(())
}

fn captures(lua: &Lua, re: &Regex, caps: &Captures, subject: &[u8]) -> mlua::Result<Table> {
    let t = lua.create_table_with_capacity(re.group_count(), re.names().len())?;
    fill_captures(lua, &t, re, caps, subject)?;
    Ok(t)
}

/// The 0-based start from `ctx.pos` (1-based; absent or <= 0: the start).
fn start_of(ctx: &Option<Table>) -> mlua::Result<usize> {
    let Some(c) = ctx else { return Ok(0) };
    Ok(match c.get::<Option<f64>>("pos")? {
        Some(p) if p > 0.0 => (p - 1.0) as usize,
        _ => 0,
    })
}

/// Runs `re` once for match and find: `Ok(None)` no match, `Err` the
/// `pcre_exec() failed` message; on a match `ctx.pos` is set past it.
fn run_once(
    vm: &ReVm,
    re: &Regex,
    subject: &[u8],
    ctx: &Option<Table>,
) -> mlua::Result<Result<Option<Captures>, String>> {
    let found = vm.engine().find_at(re, subject, start_of(ctx)?);
    if let (Ok(Some(caps)), Some(c)) = (&found, ctx) {
        c.set("pos", caps.whole.1 + 1)?;
    }
    Ok(found)
}

fn re_match(
    lua: &Lua,
    vm: &ReVm,
    (subject, pattern, opts, ctx, res): (Value, LuaString, Option<LuaString>, Value, Value),
) -> mlua::Result<MultiValue> {
    let subject = tostring(lua, subject)?;
    let re = match vm.compile(&pattern, &opts, true)? {
        Ok(re) => re,
        Err(e) => return failure(lua, 1, e),
    };
    let ctx = optional_table(ctx, "ctx")?;
    let res = optional_table(res, "res_table")?;
    let subject = subject.as_bytes();
    match run_once(vm, &re, &subject, &ctx)? {
        Ok(Some(caps)) => {
            let t = match res {
                Some(t) => {
                    fill_captures(lua, &t, &re, &caps, &subject)?;
                    t
                }
                None => captures(lua, &re, &caps, &subject)?,
            };
            Ok(MultiValue::from_vec(vec![Value::Table(t)]))
        }
        Ok(None) => Ok(MultiValue::from_vec(vec![Value::Nil])),
        Err(e) => failure(lua, 1, e),
    }
}

fn re_find(
    lua: &Lua,
    vm: &ReVm,
    (subject, pattern, opts, ctx, nth): (Value, LuaString, Option<LuaString>, Value, Option<f64>),
) -> mlua::Result<MultiValue> {
    let subject = tostring(lua, subject)?;
    let re = match vm.compile(&pattern, &opts, true)? {
        Ok(re) => re,
        Err(e) => return failure(lua, 2, e),
    };
    let ctx = optional_table(ctx, "ctx")?;
    let caps = match run_once(vm, &re, &subject.as_bytes(), &ctx)? {
        Ok(Some(caps)) => caps,
        Ok(None) => return Ok(MultiValue::from_vec(vec![Value::Nil])),
        Err(e) => return failure(lua, 2, e),
    };
    let nth = nth.filter(|&n| n >= 0.0).map_or(0, |n| n as usize);
    if nth > re.group_count() {
        return failure(lua, 2, "nth out of bound".to_string());
    }
    Ok(MultiValue::from_vec(match caps.get(nth) {
        Some((from, to)) => vec![Value::Integer(from as i64 + 1), Value::Integer(to as i64)],
        None => vec![Value::Nil, Value::Nil],
    }))
}

fn re_gmatch(
    lua: &Lua,
    vm: &Rc<ReVm>,
    (subject, pattern, opts): (Value, LuaString, Option<LuaString>),
) -> mlua::Result<MultiValue> {
    let subject = tostring(lua, subject)?;
    let re = match vm.compile(&pattern, &opts, true)? {
        Ok(re) => re,
        Err(e) => return failure(lua, 1, e),
    };
    // Checked once here; a bad subject is reported by the first call.
    let hay: Result<OwnedHay, String> = re.hay(&subject.as_bytes()).map(|h| h.to_owned_hay());
    let pos = Cell::new(Some(0usize));
    let vm = Rc::clone(vm);
    let iter = lua.create_function(move |lua, ()| {
        let Some(start) = pos.take() else {
            return Ok(MultiValue::from_vec(vec![Value::Nil]));
        };
        let owned = match &hay {
            Ok(owned) => owned,
            Err(e) => return failure(lua, 1, e.clone()),
        };
        let h = owned.as_hay();
        match vm.engine().exec(&re, h, start) {
            Ok(Some(caps)) => {
                pos.set(h.next_start(caps.whole.1, caps.whole.0 == caps.whole.1));
                let t = captures(lua, &re, &caps, h.bytes())?;
                Ok(MultiValue::from_vec(vec![Value::Table(t)]))
            }
            Ok(None) => Ok(MultiValue::from_vec(vec![Value::Nil])),
            Err(e) => failure(lua, 1, e),
        }
    })?;
    Ok(MultiValue::from_vec(vec![Value::Function(iter)]))
}

fn re_sub(
    lua: &Lua,
    vm: &ReVm,
    global: bool,
    (subject, pattern, replace, opts): (Value, LuaString, Value, Option<LuaString>),
) -> mlua::Result<MultiValue> {
    let re = match vm.compile(&pattern, &opts, false)? {
        Ok(re) => re,
        Err(e) => return failure(lua, 2, e),
    };
    let replaced = if let Value::Function(f) = &replace {
        let subject = tostring(lua, subject)?;
        by_function(lua, vm, &re, &subject.as_bytes(), global, f)?
    } else {
        let template = tostring(lua, replace)?;
        let subject = tostring(lua, subject)?;
        Template::compile(template.as_bytes())
            .and_then(|tpl| re::sub(vm.engine(), &re, subject.as_bytes(), &tpl, global))
    };
    match replaced {
        Ok((out, n)) => Ok(MultiValue::from_vec(vec![
            Value::String(lua.create_string(out)?),
            Value::Integer(n as i64),
        ])),
        Err(e) => failure(lua, 2, e),
    }
}

/// `sub`/`gsub` whose replacement is a Lua function of the captures; its
/// result goes through `tostring`.
fn by_function(
    lua: &Lua,
    vm: &ReVm,
    re: &Regex,
    subject: &[u8],
    global: bool,
    f: &Function,
) -> mlua::Result<Result<(Vec<u8>, usize), String>> {
    let result = re::replace_with(vm.engine(), re, subject, global, |caps| {
        let piece: Value = f.call(captures(lua, re, caps, subject)?)?;
        Ok::<_, mlua::Error>(tostring(lua, piece)?.as_bytes().to_vec())
    });
    match result {
        Ok(done) => Ok(Ok(done)),
        Err(ReplaceError::Regex(e)) => Ok(Err(e)),
        Err(ReplaceError::Callback(e)) => Err(e),
    }
}

/// Installs `ngx.re` and registers `require "ngx.re"`.
pub(super) fn install(lua: &Lua, ngx: &Table) -> mlua::Result<()> {
    let vm = Rc::new(ReVm {
        worker: Rc::clone(&*worker::of(lua)?),
        cached_once: Cell::new(false),
    });
    let t = lua.create_table()?;
    let v = Rc::clone(&vm);
    t.set(
        "match",
        lua.create_function(move |lua, args| re_match(lua, &v, args))?,
    )?;
    let v = Rc::clone(&vm);
    t.set(
        "find",
        lua.create_function(move |lua, args| re_find(lua, &v, args))?,
    )?;
    let v = Rc::clone(&vm);
    t.set(
        "gmatch",
        lua.create_function(move |lua, args| re_gmatch(lua, &v, args))?,
    )?;
    for (name, global) in [("sub", false), ("gsub", true)] {
        let v = Rc::clone(&vm);
        t.set(
            name,
            lua.create_function(move |lua, args| re_sub(lua, &v, global, args))?,
        )?;
    }
    ngx.set("re", t)?;
    module::register(lua, &vm)
}

//! `require "ngx.re"`: lua-resty-core's `split(subject, regex, options?,
//! ctx?, max?, res?)` and `opt(name, value)`, native, registered in
//! `package.preload` (so it wins over any `ngx/re.lua` on `package_path`).

use std::rc::Rc;

use mlua::{Lua, LuaString, MultiValue, Table, Value};

use super::{ReVm, failure, optional_table, tostring};
use crate::lua::api::err;
use crate::ngx::re;

/// resty.core's initial array size of a new result table.
const DEFAULT_SPLIT_RES_SIZE: usize = 4;

/// A Lua number argument as an integer (Lua's conversion truncates).
fn integer(v: Option<f64>) -> i64 {
    v.map_or(0, |n| n as i64)
}

fn split(
    lua: &Lua,
    vm: &ReVm,
    (subject, pattern, opts, ctx, max, res): (
        Value,
        LuaString,
        Option<LuaString>,
        Value,
        Option<f64>,
        Value,
    ),
) -> mlua::Result<MultiValue> {
    let subject = tostring(lua, subject)?;
    let ctx = optional_table(ctx, "ctx")?;
    let pos = match &ctx {
        None => 1,
        Some(c) => match c.get::<Option<f64>>("pos")? {
            Some(p) => integer(Some(p)),
            None => {
                c.set("pos", 1)?;
                1
            }
        },
    };
    let max = integer(max);
    let res = match res {
        Value::Nil | Value::Boolean(false) => {
            let narr = if max > 0 {
                DEFAULT_SPLIT_RES_SIZE.min(usize::try_from(max).unwrap_or(usize::MAX))
            } else {
                DEFAULT_SPLIT_RES_SIZE
            };
            lua.create_table_with_capacity(narr, 0)?
        }
        Value::Table(t) => t,
        _ => return Err(err("res is not a table")),
    };
    let bytes = subject.as_bytes();
    if pos > i64::try_from(bytes.len()).unwrap_or(i64::MAX) {
        res.set(1, Value::Nil)?;
        return Ok(MultiValue::from_vec(vec![Value::Table(res)]));
    }
    let re = match vm.compile(&pattern, &opts, true)? {
        Ok(re) => re,
        Err(e) => return failure(lua, 1, e),
    };
    let done = match re::split(vm.engine(), &re, &bytes, pos, max) {
        Ok(done) => done,
        Err(e) => return failure(lua, 1, e),
    };
    for (i, value) in done.values.iter().enumerate() {
        let value = match value.and_then(|(s, e)| bytes.get(s..e)) {
            Some(piece) => Value::String(lua.create_string(piece)?),
            None => Value::Nil,
        };
        res.set(i + 1, value)?;
    }
    if let Some(c) = &ctx {
        c.set("pos", done.ctx_pos)?;
    }
    Ok(MultiValue::from_vec(vec![Value::Table(res)]))
}

fn opt(vm: &ReVm, (name, value): (LuaString, Value)) -> mlua::Result<()> {
    if name.as_bytes().as_ref() != b"jit_stack_size" {
        return Err(err("unrecognized option name"));
    }
    if vm.cached_once.get() {
        return Err(err(
            "changing jit stack size is not allowed when some regexs have already been compiled and cached",
        ));
    }
    let size = match value {
        Value::Integer(i) => i,
        Value::Number(n) => n as i64,
        other => {
            return Err(err(format!(
                "cannot convert '{}' to 'int'",
                other.type_name()
            )));
        }
    };
    vm.engine()
        .set_jit_stack_size(usize::try_from(size).unwrap_or(0))
        .map_err(err)
}

/// Registers `package.preload["ngx.re"]` for this VM.
pub(super) fn register(lua: &Lua, vm: &Rc<ReVm>) -> mlua::Result<()> {
    let module = lua.create_table()?;
    let v = Rc::clone(vm);
    module.set(
        "split",
        lua.create_function(move |lua, args| split(lua, &v, args))?,
    )?;
    let v = Rc::clone(vm);
    module.set("opt", lua.create_function(move |_, args| opt(&v, args))?)?;
    module.set("version", "0.1.28")?;
    let preload: Table = lua.globals().get::<Table>("package")?.get("preload")?;
    preload.set(
        "ngx.re",
        lua.create_function(move |_, ()| Ok(module.clone()))?,
    )
}

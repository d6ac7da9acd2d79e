//! `ngx.arg` in the body_filter phase: `ngx.arg[1]` the chunk in hand (a
//! string; handlers may replace it with a string, a table of strings or
//! nil), `ngx.arg[2]` whether it is the last (handlers may set it to end
//! the body there). Elsewhere both read as nil.

use std::rc::Rc;

use bytes::Bytes;
use mlua::{Lua, Table, Value};

use super::output::push_value;
use super::{err, request_fn};
use crate::lua::Phase;
use crate::lua::worker::LuaWorker;

/// The `ngx.arg` table.
pub(super) fn arg_table(lua: &Lua, worker: &Rc<LuaWorker>) -> mlua::Result<Table> {
    let t = lua.create_table()?;
    let meta = lua.create_table()?;
    meta.set(
        "__index",
        request_fn(lua, worker, |lua, r, (_, key): (Table, Value)| {
            if r.phase.get() != Phase::BodyFilter {
                return Ok(Value::Nil);
            }
            let arg = r.filter_arg.borrow();
            match key {
                Value::Integer(1) => lua.create_string(&arg.chunk).map(Value::String),
                Value::Integer(2) => Ok(Value::Boolean(arg.eof)),
                _ => Ok(Value::Nil),
            }
        })?,
    )?;
    meta.set(
        "__newindex",
        request_fn(
            lua,
            worker,
            |_, r, (_, key, value): (Table, Value, Value)| {
                if r.phase.get() != Phase::BodyFilter {
                    return Err(r.phase.get().disabled());
                }
                let mut arg = r.filter_arg.borrow_mut();
                match key {
                    Value::Integer(1) => {
                        let mut chunk = Vec::new();
                        match &value {
                            Value::Nil => {}
                            Value::String(_)
                            | Value::Table(_)
                            | Value::Integer(_)
                            | Value::Number(_) => {
                                push_value(&value, &mut chunk)?;
                            }
                            other => {
                                return Err(err(format!(
                                    "bad chunk data type: {}",
                                    other.type_name()
                                )));
                            }
                        }
                        arg.chunk = Bytes::from(chunk);
                        Ok(())
                    }
                    Value::Integer(2) => {
                        arg.eof = matches!(value, Value::Boolean(true));
                        Ok(())
                    }
                    _ => Err(err("bad index")),
                }
            },
        )?,
    )?;
    t.set_metatable(Some(meta))?;
    Ok(t)
}

//! `ngx.say`, `ngx.print`, `ngx.flush`, `ngx.exit`, `ngx.redirect`.

use http::header::HeaderValue;
use mlua::{Lua, MultiValue, Table, Value, Variadic};

use super::{err, lua_int, req};

/// ngx.say/print's rendering of values (tables are arrays of pieces).
pub(super) fn push_value(v: &Value, out: &mut Vec<u8>) -> mlua::Result<()> {
    match v {
        Value::Nil => out.extend_from_slice(b"nil"),
        Value::Boolean(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        Value::String(s) => out.extend_from_slice(&s.as_bytes()),
        Value::Integer(i) => out.extend_from_slice(i.to_string().as_bytes()),
        Value::Number(n) => out.extend_from_slice(format_number(*n).as_bytes()),
        Value::LightUserData(p) if p.0.is_null() => out.extend_from_slice(b"null"),
        Value::Table(t) => {
            for item in t.clone().sequence_values::<Value>() {
                push_value(&item?, out)?;
            }
        }
        other => {
            return Err(err(format!(
                "bad argument: {} not a string",
                other.type_name()
            )));
        }
    }
    Ok(())
}

pub(super) fn format_number(n: f64) -> String {
    if n.fract() == 0.0 && n.abs() < 1e15 {
        format!("{}", n as i64)
    } else {
        format!("{n}")
    }
}

pub(super) fn concat(args: &[Value]) -> mlua::Result<String> {
    let mut out = Vec::new();
    for a in args {
        push_value(a, &mut out)?;
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}

pub(super) fn output_functions(lua: &Lua, ngx: &Table) -> mlua::Result<()> {
    let emit = |newline: bool| {
        lua.create_function(move |lua, args: Variadic<Value>| {
            let r = req(lua)?;
            let mut out = r.out.borrow_mut();
            for a in args.iter() {
                push_value(a, &mut out)?;
            }
            if newline {
                out.push(b'\n');
            }
            Ok(1)
        })
    };
    ngx.set("say", emit(true)?)?;
    ngx.set("print", emit(false)?)?;
    ngx.set("flush", lua.create_function(|_, _: MultiValue| Ok(1))?)?;
    ngx.set(
        "exit",
        lua.create_async_function(|lua, status: Value| async move {
            let r = req(&lua)?;
            let code = lua_int(&status).ok_or_else(|| err("ngx.exit takes a status number"))?;
            r.set_exit(code);
            // The handler ends here: the runner abandons this coroutine.
            std::future::pending::<()>().await;
            Ok(())
        })?,
    )?;
    ngx.set(
        "redirect",
        lua.create_async_function(|lua, (uri, status): (String, Option<i64>)| async move {
            let r = req(&lua)?;
            let status = status.unwrap_or(302);
            if ![301, 302, 303, 307, 308].contains(&status) {
                return Err(err(format!("only ngx.HTTP_MOVED_TEMPORARILY, ngx.HTTP_MOVED_PERMANENTLY, ngx.HTTP_PERMANENT_REDIRECT, ngx.HTTP_SEE_OTHER, and ngx.HTTP_TEMPORARY_REDIRECT are allowed, got {status}")));
            }
            let value = HeaderValue::from_str(&uri).map_err(err)?;
            r.resp_headers.borrow_mut().insert(http::header::LOCATION, value);
            r.set_exit(status);
            std::future::pending::<()>().await;
            Ok(())
        })?,
    )?;
    Ok(())
}

//! `ngx.say`, `ngx.print`, `ngx.flush`, `ngx.eof`, `ngx.send_headers`,
//! `ngx.on_abort`, `ngx.exit`, `ngx.redirect`.

use std::rc::Rc;

use http::header::HeaderValue;
use mlua::{Function, Lua, Table, Value, Variadic};

use super::{err, lua_int, req, request_fn};
use crate::lua::Phase;
use crate::lua::request::ReqCtx;
use crate::lua::worker::{self, LuaWorker};

/// ngx.say/print's rendering of values (tables are arrays of pieces).
pub(super) fn push_value(v: &Value, out: &mut Vec<u8>) -> mlua::Result<()> {
    match v {
        Value::Nil => out.extend_from_slice(b"nil"),
        Value::Boolean(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        Value::String(s) => out.extend_from_slice(&s.as_bytes()),
        // Numbers are doubles in LuaJIT: large integral ones print as
        // `%.14g` does too.
        Value::Integer(i) if i.unsigned_abs() >= 100_000_000_000_000 => {
            out.extend_from_slice(format_number(*i as f64).as_bytes());
        }
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

/// A number as ngx_lua prints it: C's `%.14g` (so `0.1 + 0.2` is
/// `0.3`, and `1e15` is `1e+15`).
pub(super) fn format_number(n: f64) -> String {
    if n.is_nan() {
        return if n.is_sign_negative() { "-nan" } else { "nan" }.into();
    }
    if n.is_infinite() {
        return if n < 0.0 { "-inf" } else { "inf" }.into();
    }
    if n == 0.0 {
        return if n.is_sign_negative() { "-0" } else { "0" }.into();
    }
    const PRECISION: i32 = 14;
    // The exponent after rounding to 14 significant digits.
    let sci = format!("{:.*e}", (PRECISION - 1) as usize, n);
    let (mantissa, exp) = sci.split_once('e').unwrap_or((sci.as_str(), "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    if !(-4..PRECISION).contains(&exp) {
        let mantissa = strip_zeros(mantissa);
        let sign = if exp < 0 { '-' } else { '+' };
        return format!("{mantissa}e{sign}{:02}", exp.abs());
    }
    let decimals = (PRECISION - 1 - exp).max(0) as usize;
    strip_zeros(&format!("{n:.decimals$}")).to_string()
}

/// `1.500` → `1.5`, `2.000` → `2` (as `%g` does).
fn strip_zeros(s: &str) -> &str {
    if !s.contains('.') {
        return s;
    }
    s.trim_end_matches('0').trim_end_matches('.')
}

pub(super) fn concat(args: &[Value]) -> mlua::Result<String> {
    let mut out = Vec::new();
    for a in args {
        push_value(a, &mut out)?;
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// Refuses output functions outside rewrite, access and content, with
/// ngx_lua's message.
fn output_allowed(r: &ReqCtx) -> mlua::Result<()> {
    match r.phase.get() {
        Phase::Rewrite | Phase::Access | Phase::Content => Ok(()),
        other => Err(other.disabled()),
    }
}

/// `ngx.say` / `ngx.print`: sends the headers on first output, then adds
/// to the body (`nil, "seen eof"` after `ngx.eof`).
fn emit(
    r: &ReqCtx,
    args: &[Value],
    newline: bool,
) -> mlua::Result<(Option<i64>, Option<&'static str>)> {
    output_allowed(r)?;
    if r.output.eof() {
        return Ok((None, Some("seen eof")));
    }
    let mut piece = Vec::new();
    for a in args {
        push_value(a, &mut piece)?;
    }
    if newline {
        piece.push(b'\n');
    }
    r.send_headers();
    r.out.borrow_mut().extend_from_slice(&piece);
    Ok((Some(1), None))
}

pub(super) fn output_functions(lua: &Lua, worker: &Rc<LuaWorker>, ngx: &Table) -> mlua::Result<()> {
    ngx.set(
        "say",
        request_fn(lua, worker, |_, r, args: Variadic<Value>| {
            emit(r, &args, true)
        })?,
    )?;
    ngx.set(
        "print",
        request_fn(lua, worker, |_, r, args: Variadic<Value>| {
            emit(r, &args, false)
        })?,
    )?;
    ngx.set(
        "send_headers",
        request_fn(lua, worker, |_, r, ()| {
            output_allowed(r)?;
            r.send_headers();
            Ok(1)
        })?,
    )?;
    // `ngx.flush(wait)`: sends the headers and yields, so that what was
    // printed goes out (a content handler's response starts streaming);
    // with `wait`, returns once the output has been taken.
    ngx.set(
        "flush",
        lua.create_async_function(|lua, wait: Option<bool>| async move {
            let r = req(&lua)?;
            output_allowed(&r)?;
            if r.output.eof() {
                return Ok((None, Some("seen eof")));
            }
            r.send_headers();
            if wait.unwrap_or(false) && r.phase.get() == Phase::Content {
                r.output.flushed(&r.out).await;
            } else {
                tokio::task::yield_now().await;
            }
            Ok((Some(1), None))
        })?,
    )?;
    ngx.set(
        "eof",
        lua.create_async_function(|lua, ()| async move {
            let r = req(&lua)?;
            output_allowed(&r)?;
            if r.output.eof() {
                return Ok((None, Some("seen eof")));
            }
            r.send_headers();
            r.output.set_eof();
            tokio::task::yield_now().await;
            Ok((Some(1), None))
        })?,
    )?;
    ngx.set(
        "on_abort",
        request_fn(lua, worker, |_, r, callback: Function| {
            output_allowed(r)?;
            match r.output.set_on_abort(callback) {
                Ok(()) => Ok((Some(1), None)),
                Err(e) => Ok((None, Some(e))),
            }
        })?,
    )?;
    ngx.set(
        "exit",
        lua.create_async_function(|lua, status: Value| async move {
            let code = lua_int(&status).ok_or_else(|| err("ngx.exit takes a status number"))?;
            let worker = worker::of(&lua)?;
            match (worker.running.current(), worker.timers.light_threads()) {
                (Some(r), _) => r.set_exit(code),
                // In a timer callback it ends the callback and its threads.
                (None, Some(timer)) => timer.exit(),
                (None, None) => return Err(worker.timers.phase_outside_requests().disabled()),
            }
            // The handler ends here: the runner abandons this coroutine.
            std::future::pending::<()>().await;
            Ok(())
        })?,
    )?;
    ngx.set(
        "redirect",
        lua.create_async_function(|lua, (uri, status): (String, Option<i64>)| async move {
            let r = req(&lua)?;
            output_allowed(&r)?;
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

#[cfg(test)]
mod tests {
    use super::format_number;

    #[test]
    fn numbers_print_as_c_percent_14g() {
        let cases = [
            (0.1 + 0.2, "0.3"),
            (3.0, "3"),
            (-2.5, "-2.5"),
            (1e15, "1e+15"),
            (1e14, "1e+14"),
            (99_999_999_999_999.0, "99999999999999"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (1.0 / 3.0, "0.33333333333333"),
            (123_456.789, "123456.789"),
            (f64::INFINITY, "inf"),
            (f64::NEG_INFINITY, "-inf"),
            (0.0, "0"),
        ];
        for (n, want) in cases {
            assert_eq!(format_number(n), want, "{n}");
        }
    }
}

//! `ngx.now`, `ngx.time`, `ngx.update_time`, `ngx.http_time`, `ngx.sleep`.

use std::time::{Duration, SystemTime};

use mlua::{Lua, MultiValue, Table};

use super::{bad_argument, err};

pub(super) fn now_secs() -> f64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

pub(super) fn time_functions(lua: &Lua, ngx: &Table) -> mlua::Result<()> {
    ngx.set(
        "now",
        lua.create_function(|_, ()| Ok((now_secs() * 1000.0).floor() / 1000.0))?,
    )?;
    ngx.set(
        "time",
        lua.create_function(|_, ()| Ok(now_secs().floor() as i64))?,
    )?;
    ngx.set("update_time", lua.create_function(|_, ()| Ok(()))?)?;
    ngx.set(
        "sleep",
        lua.create_async_function(|lua, args: MultiValue| async move {
            // luaL_checknumber's rule and message, as ngx_lua's.
            let arg = args.front();
            let secs = match arg {
                Some(v) => lua.coerce_number(v.clone())?,
                None => None,
            };
            let Some(secs) = secs else {
                return Err(bad_argument(1, "sleep", "number", arg));
            };
            if secs.is_nan() || secs < 0.0 || !secs.is_finite() {
                return Err(err("invalid sleep duration"));
            }
            tokio::time::sleep(Duration::from_secs_f64(secs)).await;
            Ok(())
        })?,
    )?;
    Ok(())
}

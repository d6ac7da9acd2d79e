//! `coroutine.resume` / `coroutine.wrap` that let a cosocket (or any
//! async `ngx.*` call) wait inside a coroutine the script made, as
//! ngx_lua's do: lua-resty-http reads bodies through `coroutine.wrap`.
//!
//! An async function suspends its coroutine by yielding mlua's "pending"
//! marker; a script's own `coroutine.resume` would take that for a value
//! the coroutine yielded. These wrappers pass the marker on up instead
//! (yielding it from the resumer's coroutine, up to the request's, which
//! the executor polls), and resume the inner coroutine when resumed
//! themselves, so the script sees only its own yields.

use mlua::{Lua, Table, Thread, Value};

pub(super) fn install(lua: &Lua) -> mlua::Result<()> {
    let co: Table = lua.globals().get("coroutine")?;
    // mlua's marker for "the future is pending" (public, if undocumented).
    let pending = Value::LightUserData(Lua::poll_pending());
    let light_status = lua.create_function(|lua, co: Value| match co {
        Value::Thread(t) => super::tasks::thread_status(lua, &t as &Thread),
        _ => Ok(None),
    })?;
    lua.load(
        r##"
        local co, pending, light_status = ...
        local create, raw_resume, yield, status = co.create, co.resume, co.yield, co.status
        local running = co.running
        -- coroutines waiting on one they resumed (which waits on I/O)
        local resuming = setmetatable({}, { __mode = "k" })
        local pass
        local function resumed(me, c, ...)
            resuming[me] = nil
            return pass(c, raw_resume(c, ...))
        end
        pass = function(c, ok, first, ...)
            if ok and first == pending and select('#', ...) == 0
                and status(c) == "suspended" then
                local me = running()
                resuming[me] = true
                return resumed(me, c, yield(pending))
            end
            return ok, first, ...
        end
        co.status = function(c)
            local s = light_status(c)
            if s == "running" then
                if resuming[c] or status(c) == "normal" then
                    return "normal"
                end
                return s
            end
            return s or status(c)
        end
        local function resume(c, ...)
            return pass(c, raw_resume(c, ...))
        end
        local function finish(ok, ...)
            if not ok then error((...), 0) end
            return ...
        end
        co.resume = resume
        co.wrap = function(f)
            local c = create(f)
            return function(...)
                return finish(co.resume(c, ...))
            end
        end
        "##,
    )
    .set_name("=moongate.coroutine")
    .call::<()>((co, pending, light_status))?;
    Ok(())
}

//! `resty.core` and `resty.core.*`. lua-resty-core's modules install the
//! `ngx` API over nginx's C functions through FFI; here that API is native
//! already, so each module returns what lua-resty-core's returns
//! (`{ version = ... }` and the helpers other libraries read, chiefly
//! `resty.core.base`'s) without touching `ngx`.

use mlua::{Lua, Table};

/// `resty.core.base`: what libraries read from it (`version`, `new_tab`,
/// `clear_tab`, `ref_in_table`, `allows_subsystem`, the `FFI_*` codes,
/// the string-buffer helpers when `ffi` is available, `get_request`).
const BASE: &str = r##"
local base = {
    version = "0.1.28",
    new_tab = require "table.new",
    clear_tab = require "table.clear",
    FFI_OK = 0, FFI_NO_REQ_CTX = -100, FFI_BAD_CONTEXT = -101,
    FFI_ERROR = -1, FFI_AGAIN = -2, FFI_BUSY = -3, FFI_DONE = -4,
    FFI_DECLINED = -5, FFI_ABORT = -6,
}
local FREE_LIST_REF = 0
function base.ref_in_table(tb, key)
    if key == nil then
        return -1
    end
    local ref = tb[FREE_LIST_REF]
    if ref and ref ~= 0 then
        tb[FREE_LIST_REF] = tb[ref]
    else
        ref = #tb + 1
    end
    tb[ref] = key
    return ref
end
function base.allows_subsystem(...)
    local subsystem = ngx.config.subsystem
    for i = 1, select("#", ...) do
        if select(i, ...) == subsystem then
            return
        end
    end
    error("unsupported subsystem: " .. subsystem, 2)
end
-- No nginx request pointer exists here: a truthy token wherever ngx_lua
-- has a (possibly fake) request, i.e. everywhere but `init`, which is what
-- callers test.
local token = {}
function base.get_request()
    if ngx.get_phase() ~= "init" then
        return token
    end
end
local str_buf_size = 4096
function base.set_string_buf_size(size)
    if size > 0 then
        str_buf_size = math.ceil(size)
    end
end
function base.get_string_buf_size()
    return str_buf_size
end
local ok, ffi = pcall(require, "ffi")
if ok then
    local errmsg, size_ptr, str_buf
    function base.get_errmsg_ptr()
        errmsg = errmsg or ffi.new("char *[1]")
        return errmsg
    end
    function base.get_size_ptr()
        size_ptr = size_ptr or ffi.new("size_t[1]")
        return size_ptr
    end
    function base.get_string_buf(size, must_alloc)
        if size > str_buf_size or must_alloc then
            return ffi.new("char[?]", size)
        end
        str_buf = str_buf or ffi.new("char[?]", str_buf_size)
        return str_buf
    end
end
return base
"##;

/// The other `resty.core.*` modules: `{ version = base.version }`, plus
/// `resty.core.ctx`'s `get_ctx_table`.
const MODULE: &str = r#"
local name = ...
local base = require "resty.core.base"
local m = { version = base.version }
if name == "resty.core.ctx" then
    m.get_ctx_table = function(ctx)
        if ctx then
            ngx.ctx = ctx
        end
        return ngx.ctx
    end
end
return m
"#;

/// The modules `require "resty.core"` loads in lua-resty-core, and the
/// ones libraries require directly.
const MODULES: [&str; 19] = [
    "resty.core.shdict",
    "resty.core.var",
    "resty.core.ctx",
    "resty.core.regex",
    "resty.core.time",
    "resty.core.request",
    "resty.core.response",
    "resty.core.exit",
    "resty.core.worker",
    "resty.core.phase",
    "resty.core.uri",
    "resty.core.hash",
    "resty.core.base64",
    "resty.core.misc",
    "resty.core.ndk",
    "resty.core.coroutine",
    "resty.core.param",
    "resty.core.socket",
    "resty.core.utils",
];

/// Registers `resty.core`, `resty.core.base` and [`MODULES`] in `preload`.
pub(super) fn install(lua: &Lua, preload: &Table) -> mlua::Result<()> {
    preload.set(
        "resty.core.base",
        lua.load(BASE)
            .set_name("=resty.core.base")
            .into_function()?,
    )?;
    let module = lua.load(MODULE).set_name("=resty.core").into_function()?;
    for name in MODULES {
        preload.set(name, module.clone())?;
    }
    // `resty.core` itself loads the others, as lua-resty-core's does.
    let core = format!(
        "{} return {{ version = require('resty.core.base').version }}",
        MODULES
            .iter()
            .map(|m| format!("require '{m}'"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    preload.set(
        "resty.core",
        lua.load(core).set_name("=resty.core").into_function()?,
    )
}

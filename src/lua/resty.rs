//! lua-resty-core's and lua-resty-string's modules, provided natively and
//! registered in `package.preload`, which `require` searches before
//! `package.path`: a copy of lua-resty-core on `package_path` (whose
//! modules call nginx's C symbols through FFI and cannot work here) never
//! shadows them.
//!
//! - [`hashes`] — `resty.md5`, `resty.sha*`, `resty.random`, `resty.string`
//! - [`hmac`] — `resty.hmac` (jkeys089/lua-resty-hmac's API)
//! - [`aes`] — `resty.aes` (lua-resty-string's API)
//! - [`core`] — `resty.core` and `resty.core.*` (the `ngx` API they install
//!   through FFI is native already)
//! - [`semaphore`] — `ngx.semaphore`, per worker
//! - [`ngx_libs`] — `ngx.resp`, `ngx.process`, `ngx.errlog`, `ngx.base64`
//! - [`ssl`] — `ngx.ssl` (PEM parsing; the rest needs nginx's TLS)

use mlua::{Lua, Table};

mod aes;
mod core;
mod hashes;
mod hmac;
mod ngx_libs;
mod semaphore;
mod ssl;

/// Registers every module in `package.preload`.
pub fn install(lua: &Lua) -> mlua::Result<()> {
    let preload: Table = lua.globals().get::<Table>("package")?.get("preload")?;
    hashes::install(lua, &preload)?;
    hmac::install(lua, &preload)?;
    aes::install(lua, &preload)?;
    core::install(lua, &preload)?;
    semaphore::install(lua, &preload)?;
    ngx_libs::install(lua, &preload)?;
    ssl::install(lua, &preload)?;
    Ok(())
}

//! lua-resty-string's hash modules, native: `resty.md5`, `resty.sha1`,
//! `resty.sha224` … `resty.sha512` (`:new()`, `:update(s)`, `:final()`,
//! `:reset()`), `resty.random` (`bytes(n, strong)`) and `resty.string`
//! (`to_hex`, `atoi`), with the same API.

use mlua::{Lua, LuaString, MultiValue, Table, UserData, UserDataMethods, Value};

use crate::ngx::codec::{
    self, Md5State, Sha1State, Sha224State, Sha256State, Sha384State, Sha512State,
};

/// One incremental hash.
enum Hasher {
    Md5(Md5State),
    Sha1(Sha1State),
    Sha224(Sha224State),
    Sha256(Sha256State),
    Sha384(Sha384State),
    Sha512(Sha512State),
}

impl Hasher {
    fn update(&mut self, data: &[u8]) {
        match self {
            Hasher::Md5(h) => h.update(data),
            Hasher::Sha1(h) => h.update(data),
            Hasher::Sha224(h) => h.update(data),
            Hasher::Sha256(h) => h.update(data),
            Hasher::Sha384(h) => h.update(data),
            Hasher::Sha512(h) => h.update(data),
        }
    }

    fn finish(&mut self) -> Vec<u8> {
        match self {
            Hasher::Md5(h) => h.finish(),
            Hasher::Sha1(h) => h.finish(),
            Hasher::Sha224(h) => h.finish(),
            Hasher::Sha256(h) => h.finish(),
            Hasher::Sha384(h) => h.finish(),
            Hasher::Sha512(h) => h.finish(),
        }
    }

    fn reset(&mut self) {
        match self {
            Hasher::Md5(h) => h.reset(),
            Hasher::Sha1(h) => h.reset(),
            Hasher::Sha224(h) => h.reset(),
            Hasher::Sha256(h) => h.reset(),
            Hasher::Sha384(h) => h.reset(),
            Hasher::Sha512(h) => h.reset(),
        }
    }
}

impl UserData for Hasher {
    fn add_methods<M: UserDataMethods<Self>>(methods: &mut M) {
        // `resty.md5`'s `update(s, len)` hashes the first `len` bytes
        // (clamped to the string here: OpenSSL would read past it).
        methods.add_method_mut(
            "update",
            |_, this, (data, len): (LuaString, Option<usize>)| {
                let data = data.as_bytes();
                let len = len.map_or(data.len(), |n| n.min(data.len()));
                this.update(&data[..len]);
                Ok(true)
            },
        );
        methods.add_method_mut("final", |lua, this, ()| lua.create_string(this.finish()));
        methods.add_method_mut("reset", |_, this, ()| {
            this.reset();
            Ok(true)
        });
    }
}

/// Builds a fresh hasher for `:new()`.
type MakeHasher = fn() -> Hasher;

/// Registers the modules in `preload`.
pub(super) fn install(lua: &Lua, preload: &Table) -> mlua::Result<()> {
    let hashes: [(&str, MakeHasher); 6] = [
        ("resty.md5", || Hasher::Md5(Md5State::new())),
        ("resty.sha1", || Hasher::Sha1(Sha1State::new())),
        ("resty.sha224", || Hasher::Sha224(Sha224State::new())),
        ("resty.sha256", || Hasher::Sha256(Sha256State::new())),
        ("resty.sha384", || Hasher::Sha384(Sha384State::new())),
        ("resty.sha512", || Hasher::Sha512(Sha512State::new())),
    ];
    for (name, make) in hashes {
        preload.set(
            name,
            lua.create_function(move |lua, _: MultiValue| {
                let m = lua.create_table()?;
                m.set("_VERSION", "0.16")?;
                m.set(
                    "new",
                    lua.create_function(move |lua, _: MultiValue| lua.create_userdata(make()))?,
                )?;
                Ok(m)
            })?,
        )?;
    }
    preload.set(
        "resty.random",
        lua.create_function(|lua, _: MultiValue| {
            let m = lua.create_table()?;
            m.set(
                "bytes",
                lua.create_function(|lua, (n, strong): (usize, Option<bool>)| {
                    match codec::resty_random_bytes(n, strong.unwrap_or(false)) {
                        Some(b) => lua.create_string(b).map(Value::String),
                        None => Ok(Value::Nil),
                    }
                })?,
            )?;
            Ok(m)
        })?,
    )?;
    preload.set(
        "resty.string",
        lua.create_function(|lua, _: MultiValue| {
            let m = lua.create_table()?;
            m.set("_VERSION", "0.16")?;
            m.set(
                "to_hex",
                lua.create_function(|_, s: LuaString| Ok(codec::to_hex(&s.as_bytes())))?,
            )?;
            m.set(
                "atoi",
                lua.create_function(|_, s: LuaString| {
                    Ok(s.to_str().ok().and_then(|t| t.trim().parse::<i64>().ok()))
                })?,
            )?;
            Ok(m)
        })?,
    )?;
    Ok(())
}

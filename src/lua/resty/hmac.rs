//! `resty.hmac`, with the API of jkeys089/lua-resty-hmac (whose original
//! calls OpenSSL through `ffi.C`): `hmac:new(key, hmac.ALGOS.SHA256)`,
//! `:update(s)`, `:final(s?, hex?)`, `:reset()`. `ALGOS` holds MD5, SHA1,
//! SHA224, SHA256, SHA384 and SHA512 (here as names, not `EVP_MD*`
//! pointers: code only passes them back to `new`).

use hmac::{Hmac, Mac};
use md5::Md5;
use mlua::{Lua, LuaString, MultiValue, Table, UserData, UserDataMethods, Value};
use sha1::Sha1;
use sha2::{Sha224, Sha256, Sha384, Sha512};

use crate::ngx::codec;

/// The algorithms of `hmac.ALGOS`, by the name `new` takes.
const ALGOS: [(&str, &str); 6] = [
    ("MD5", "md5"),
    ("SHA1", "sha1"),
    ("SHA224", "sha224"),
    ("SHA256", "sha256"),
    ("SHA384", "sha384"),
    ("SHA512", "sha512"),
];

/// One HMAC in progress; `final` and `reset` start it again with the same
/// key, as `HMAC_Init_ex(ctx, NULL, …)` does.
enum State {
    Md5(Hmac<Md5>),
    Sha1(Hmac<Sha1>),
    Sha224(Hmac<Sha224>),
    Sha256(Hmac<Sha256>),
    Sha384(Hmac<Sha384>),
    Sha512(Hmac<Sha512>),
}

macro_rules! each {
    ($state:expr, $h:ident => $e:expr) => {
        match $state {
            State::Md5($h) => $e,
            State::Sha1($h) => $e,
            State::Sha224($h) => $e,
            State::Sha256($h) => $e,
            State::Sha384($h) => $e,
            State::Sha512($h) => $e,
        }
    };
}

impl State {
    /// A keyed HMAC for the algorithm called `algo`; `None` if unknown.
    /// (HMAC takes keys of any length, so the key cannot be refused.)
    fn new(algo: &str, key: &[u8]) -> Option<State> {
        fn keyed<M: Mac + hmac::digest::KeyInit>(key: &[u8]) -> Option<M> {
            <M as Mac>::new_from_slice(key).ok()
        }
        Some(match algo {
            "md5" => State::Md5(keyed(key)?),
            "sha1" => State::Sha1(keyed(key)?),
            "sha224" => State::Sha224(keyed(key)?),
            "sha256" => State::Sha256(keyed(key)?),
            "sha384" => State::Sha384(keyed(key)?),
            "sha512" => State::Sha512(keyed(key)?),
            _ => return None,
        })
    }

    fn update(&mut self, data: &[u8]) {
        each!(self, h => h.update(data))
    }

    fn finish(&mut self) -> Vec<u8> {
        each!(self, h => h.finalize_reset().into_bytes().to_vec())
    }

    fn reset(&mut self) {
        each!(self, h => h.reset())
    }
}

impl UserData for State {
    fn add_methods<M: UserDataMethods<Self>>(methods: &mut M) {
        methods.add_method_mut("update", |_, this, data: LuaString| {
            this.update(&data.as_bytes());
            Ok(true)
        });
        methods.add_method_mut(
            "final",
            |lua, this, (data, hex): (Option<LuaString>, Option<bool>)| {
                if let Some(data) = data {
                    this.update(&data.as_bytes());
                }
                let mac = this.finish();
                if hex == Some(true) {
                    return lua.create_string(codec::to_hex(&mac));
                }
                lua.create_string(mac)
            },
        );
        methods.add_method_mut("reset", |_, this, ()| {
            this.reset();
            Ok(true)
        });
    }
}

/// Registers `resty.hmac` in `preload`.
pub(super) fn install(lua: &Lua, preload: &Table) -> mlua::Result<()> {
    preload.set(
        "resty.hmac",
        lua.create_function(|lua, _: MultiValue| {
            let m = lua.create_table()?;
            m.set("_VERSION", "0.06")?;
            let algos = lua.create_table()?;
            for (field, name) in ALGOS {
                algos.set(field, name)?;
            }
            m.set("ALGOS", algos)?;
            // `hmac:new(key, algo)`: the module is `self`; MD5 by default,
            // as the original.
            m.set(
                "new",
                lua.create_function(|lua, (_, key, algo): (Value, LuaString, Option<String>)| {
                    match State::new(algo.as_deref().unwrap_or("md5"), &key.as_bytes()) {
                        Some(state) => lua.create_userdata(state).map(Value::UserData),
                        None => Ok(Value::Nil),
                    }
                })?,
            )?;
            Ok(m)
        })?,
    )
}

#[cfg(test)]
mod tests {
    use super::State;

    fn hex(algo: &str, key: &[u8], data: &[u8]) -> String {
        let mut s = State::new(algo, key).expect("known algorithm");
        s.update(data);
        crate::ngx::codec::to_hex(&s.finish())
    }

    #[test]
    fn rfc_4231_and_2202_vectors() {
        // RFC 4231 test case 2.
        assert_eq!(
            hex("sha256", b"Jefe", b"what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        // RFC 2202 test cases 2 (MD5, SHA-1).
        assert_eq!(
            hex("md5", b"Jefe", b"what do ya want for nothing?"),
            "750c783e6ab0b503eaa86e310a5db738"
        );
        assert_eq!(
            hex("sha1", b"Jefe", b"what do ya want for nothing?"),
            "effcdf6ae5eb2fa2d27416d5f184df9c259a7c79"
        );
    }

    #[test]
    fn final_starts_again_with_the_same_key() {
        let mut s = State::new("sha1", b"k").expect("sha1");
        s.update(b"abc");
        let first = s.finish();
        s.update(b"abc");
        assert_eq!(s.finish(), first);
        s.update(b"zzz");
        s.reset();
        s.update(b"abc");
        assert_eq!(s.finish(), first);
        assert!(State::new("sha3", b"k").is_none());
    }
}

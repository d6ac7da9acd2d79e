//! `resty.aes`, with lua-resty-string's API (whose original calls OpenSSL's
//! EVP functions through `ffi.C`) over RustCrypto's AES and block modes:
//! `aes:new(key, salt, cipher, hash, hash_rounds, iv_len, enable_padding)`,
//! `aes.cipher(size, mode)`, `aes.hash.*`, `:encrypt(s, aad?)`,
//! `:decrypt(s, tag?, aad?)`.
//!
//! The argument handling is the original's, in Lua ([`MODULE`]); the key
//! derivation ([`bytes_to_key`], OpenSSL's `EVP_BytesToKey`, so keys made
//! from a passphrase are byte-identical to `openssl enc`'s) and the ciphers
//! are Rust. Modes: ecb, cbc (PKCS#7 padding unless disabled), cfb8,
//! cfb128, ofb, ctr (128-bit big-endian counter) and gcm (16-byte tag,
//! nonces of 12, 16, 24 or 32 bytes); `cfb1` is not offered (`cipher`
//! returns nil for it, as it does for any cipher OpenSSL lacks).

use aes::cipher::{
    AsyncStreamCipher, BlockCipher, BlockDecrypt, BlockDecryptMut, BlockEncrypt, BlockEncryptMut,
    KeyInit, KeyIvInit, StreamCipher,
    block_padding::{NoPadding, Pkcs7},
    consts::{U12, U16, U24, U32},
    generic_array::ArrayLength,
};
use aes::{Aes128, Aes192, Aes256};
use aes_gcm::{AeadInPlace, AesGcm};
use md5::Md5;
use mlua::{Lua, LuaString, MultiValue, Table, UserData, UserDataMethods, Value};
use sha1::Sha1;
use sha2::digest::DynDigest;
use sha2::{Sha224, Sha256, Sha384, Sha512};

/// The module: lua-resty-string's argument checks and error strings, over
/// the Rust `derive` and `context` functions it is called with.
const MODULE: &str = r#"
local derive, context = ...
local _M = { _VERSION = "0.17" }
local mt = { __index = _M }
local hash = {
    md5 = "md5", sha1 = "sha1", sha224 = "sha224",
    sha256 = "sha256", sha384 = "sha384", sha512 = "sha512",
}
_M.hash = hash
local sizes = { [128] = true, [192] = true, [256] = true }
local modes = { ecb = true, cbc = true, cfb8 = true, cfb128 = true, ofb = true, ctr = true, gcm = true }

function _M.cipher(size, _cipher)
    local _size = size or 128
    _cipher = _cipher or "cbc"
    if sizes[_size] and modes[_cipher] then
        return { size = _size, cipher = _cipher, method = "aes-" .. _size .. "-" .. _cipher }
    end
    return nil
end

function _M.new(self, key, salt, _cipher, _hash, hash_rounds, iv_len, enable_padding)
    _cipher = _cipher or _M.cipher()
    _hash = _hash or hash.md5
    hash_rounds = hash_rounds or 1
    local key_len = _cipher.size / 8
    iv_len = iv_len or key_len
    local padding = enable_padding == nil or enable_padding and true or false
    local gen_key, gen_iv
    if type(_hash) == "table" then
        if not _hash.iv then
            return nil, "iv is needed"
        end
        iv_len = #_hash.iv
        if iv_len > key_len then
            return nil, "bad iv length"
        end
        if _hash.method then
            gen_key = _hash.method(key)
            if #gen_key ~= key_len then
                return nil, "bad key length"
            end
        elseif #key ~= key_len then
            return nil, "bad key length"
        else
            gen_key = key
        end
        gen_iv = _hash.iv
    else
        if salt and #salt ~= 8 then
            return nil, "salt must be 8 characters or nil"
        end
        gen_key, gen_iv = derive(_cipher.size, _cipher.cipher, _hash, salt, key, hash_rounds)
        if not gen_key then
            return nil, "failed to generate key and iv"
        end
    end
    local ctx, err = context(_cipher.size, _cipher.cipher, gen_key, gen_iv, iv_len, padding)
    if not ctx then
        return nil, err
    end
    return setmetatable({ _ctx = ctx, _cipher = _cipher.cipher }, mt)
end

function _M.encrypt(self, s, aad)
    local typ = type(self)
    if typ ~= "table" then
        error("bad argument #1 self: table expected, got " .. typ, 2)
    end
    return self._ctx:encrypt(s, aad)
end

function _M.decrypt(self, s, tag, aad)
    local typ = type(self)
    if typ ~= "table" then
        error("bad argument #1 self: table expected, got " .. typ, 2)
    end
    return self._ctx:decrypt(s, tag, aad)
end

return _M
"#;

/// A block mode of lua-resty-string's `cipher(size, mode)`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    Ecb,
    Cbc,
    Cfb8,
    Cfb128,
    Ofb,
    Ctr,
    Gcm,
}

impl Mode {
    fn parse(name: &str) -> Option<Mode> {
        Some(match name {
            "ecb" => Mode::Ecb,
            "cbc" => Mode::Cbc,
            "cfb8" => Mode::Cfb8,
            "cfb128" => Mode::Cfb128,
            "ofb" => Mode::Ofb,
            "ctr" => Mode::Ctr,
            "gcm" => Mode::Gcm,
            _ => return None,
        })
    }

    /// OpenSSL's IV length for the mode (`EVP_CIPHER_iv_length`).
    fn iv_len(self) -> usize {
        match self {
            Mode::Ecb => 0,
            Mode::Gcm => 12,
            _ => 16,
        }
    }
}

/// A digest by lua-resty-string's `aes.hash` name.
fn digest(name: &str) -> Option<Box<dyn DynDigest>> {
    Some(match name {
        "md5" => Box::new(Md5::default()),
        "sha1" => Box::new(Sha1::default()),
        "sha224" => Box::new(Sha224::default()),
        "sha256" => Box::new(Sha256::default()),
        "sha384" => Box::new(Sha384::default()),
        "sha512" => Box::new(Sha512::default()),
        _ => return None,
    })
}

/// OpenSSL's `EVP_BytesToKey`: `D_i = H^rounds(D_{i-1} || data || salt)`,
/// concatenated until `key_len + iv_len` bytes, split into key and IV.
fn bytes_to_key(
    md: &str,
    salt: Option<&[u8]>,
    data: &[u8],
    rounds: u32,
    key_len: usize,
    iv_len: usize,
) -> Option<(Vec<u8>, Vec<u8>)> {
    let mut out = Vec::with_capacity(key_len + iv_len + 64);
    let mut prev: Vec<u8> = Vec::new();
    while out.len() < key_len + iv_len {
        let mut h = digest(md)?;
        h.update(&prev);
        h.update(data);
        if let Some(salt) = salt {
            h.update(salt);
        }
        let mut d = h.finalize_reset().to_vec();
        for _ in 1..rounds.max(1) {
            h.update(&d);
            d = h.finalize_reset().to_vec();
        }
        out.extend_from_slice(&d);
        prev = d;
    }
    let iv = out[key_len..key_len + iv_len].to_vec();
    out.truncate(key_len);
    Some((out, iv))
}

/// One `aes:new()` object's cipher: key, IV (zero-padded as the
/// original's fixed buffer is) and mode.
struct Context {
    size: usize,
    mode: Mode,
    key: Vec<u8>,
    iv: Vec<u8>,
    padding: bool,
}

/// Why a run failed: the original's error string for the step.
type Failed = &'static str;

impl Context {
    fn new(
        size: usize,
        mode: Mode,
        key: &[u8],
        iv: &[u8],
        iv_len: usize,
        padding: bool,
    ) -> Result<Context, Failed> {
        if key.len() != size / 8 {
            return Err("bad key length");
        }
        // The original copies the IV into a buffer of the key's length;
        // OpenSSL reads the mode's IV length (GCM: the length set).
        let want = if mode == Mode::Gcm {
            iv_len
        } else {
            mode.iv_len()
        };
        if mode == Mode::Gcm && ![12, 16, 24, 32].contains(&want) {
            return Err("failed to set IV length");
        }
        let mut iv = iv.to_vec();
        iv.resize(want.max(iv.len()), 0);
        iv.truncate(want);
        Ok(Context {
            size,
            mode,
            key: key.to_vec(),
            iv,
            padding,
        })
    }

    fn encrypt(&self, data: &[u8], aad: &[u8]) -> Result<Sealed, Failed> {
        match self.size {
            128 => self.run::<Aes128>(data, aad, None, true),
            192 => self.run::<Aes192>(data, aad, None, true),
            _ => self.run::<Aes256>(data, aad, None, true),
        }
    }

    fn decrypt(&self, data: &[u8], tag: Option<&[u8]>, aad: &[u8]) -> Result<Sealed, Failed> {
        match self.size {
            128 => self.run::<Aes128>(data, aad, tag, false),
            192 => self.run::<Aes192>(data, aad, tag, false),
            _ => self.run::<Aes256>(data, aad, tag, false),
        }
    }

    fn run<C>(
        &self,
        data: &[u8],
        aad: &[u8],
        tag: Option<&[u8]>,
        encrypt: bool,
    ) -> Result<Sealed, Failed>
    where
        C: BlockCipher<BlockSize = U16> + BlockEncrypt + BlockDecrypt + KeyInit + Clone,
    {
        let (init, update, last) = if encrypt {
            (
                "EVP_EncryptInit_ex failed",
                "EVP_EncryptUpdate failed",
                "EVP_EncryptFinal_ex failed",
            )
        } else {
            (
                "EVP_DecryptInit_ex failed",
                "EVP_DecryptUpdate failed",
                "EVP_DecryptFinal_ex failed",
            )
        };
        let (key, iv) = (self.key.as_slice(), self.iv.as_slice());
        let mut buf = data.to_vec();
        let plain = |v: Vec<u8>| Ok(Sealed::Plain(v));
        match self.mode {
            Mode::Ecb | Mode::Cbc => {
                if !self.padding && !data.len().is_multiple_of(16) {
                    return Err(last);
                }
                let out = match (self.mode, encrypt, self.padding) {
                    (Mode::Ecb, true, true) => ecb::Encryptor::<C>::new_from_slice(key)
                        .map_err(|_| init)?
                        .encrypt_padded_vec_mut::<Pkcs7>(data),
                    (Mode::Ecb, true, false) => ecb::Encryptor::<C>::new_from_slice(key)
                        .map_err(|_| init)?
                        .encrypt_padded_vec_mut::<NoPadding>(data),
                    (Mode::Ecb, false, true) => ecb::Decryptor::<C>::new_from_slice(key)
                        .map_err(|_| init)?
                        .decrypt_padded_vec_mut::<Pkcs7>(data)
                        .map_err(|_| last)?,
                    (Mode::Ecb, false, false) => ecb::Decryptor::<C>::new_from_slice(key)
                        .map_err(|_| init)?
                        .decrypt_padded_vec_mut::<NoPadding>(data)
                        .map_err(|_| last)?,
                    (_, true, true) => cbc::Encryptor::<C>::new_from_slices(key, iv)
                        .map_err(|_| init)?
                        .encrypt_padded_vec_mut::<Pkcs7>(data),
                    (_, true, false) => cbc::Encryptor::<C>::new_from_slices(key, iv)
                        .map_err(|_| init)?
                        .encrypt_padded_vec_mut::<NoPadding>(data),
                    (_, false, true) => cbc::Decryptor::<C>::new_from_slices(key, iv)
                        .map_err(|_| init)?
                        .decrypt_padded_vec_mut::<Pkcs7>(data)
                        .map_err(|_| last)?,
                    (_, false, false) => cbc::Decryptor::<C>::new_from_slices(key, iv)
                        .map_err(|_| init)?
                        .decrypt_padded_vec_mut::<NoPadding>(data)
                        .map_err(|_| last)?,
                };
                plain(out)
            }
            Mode::Cfb8 => {
                if encrypt {
                    cfb8::Encryptor::<C>::new_from_slices(key, iv)
                        .map_err(|_| init)?
                        .encrypt(&mut buf);
                } else {
                    cfb8::Decryptor::<C>::new_from_slices(key, iv)
                        .map_err(|_| init)?
                        .decrypt(&mut buf);
                }
                plain(buf)
            }
            Mode::Cfb128 => {
                if encrypt {
                    cfb_mode::Encryptor::<C>::new_from_slices(key, iv)
                        .map_err(|_| init)?
                        .encrypt(&mut buf);
                } else {
                    cfb_mode::Decryptor::<C>::new_from_slices(key, iv)
                        .map_err(|_| init)?
                        .decrypt(&mut buf);
                }
                plain(buf)
            }
            Mode::Ofb => {
                ofb::Ofb::<C>::new_from_slices(key, iv)
                    .map_err(|_| init)?
                    .apply_keystream(&mut buf);
                plain(buf)
            }
            Mode::Ctr => {
                ctr::Ctr128BE::<C>::new_from_slices(key, iv)
                    .map_err(|_| init)?
                    .apply_keystream(&mut buf);
                plain(buf)
            }
            Mode::Gcm => match iv.len() {
                12 => gcm::<C, U12>(key, iv, aad, buf, tag, encrypt, (init, update, last)),
                16 => gcm::<C, U16>(key, iv, aad, buf, tag, encrypt, (init, update, last)),
                24 => gcm::<C, U24>(key, iv, aad, buf, tag, encrypt, (init, update, last)),
                _ => gcm::<C, U32>(key, iv, aad, buf, tag, encrypt, (init, update, last)),
            },
        }
    }
}

/// What `encrypt`/`decrypt` return: a string, or GCM's `{ciphertext, tag}`.
enum Sealed {
    Plain(Vec<u8>),
    WithTag(Vec<u8>, Vec<u8>),
}

/// AES-GCM with a nonce of `N` bytes, a 16-byte tag.
#[allow(clippy::too_many_arguments)]
fn gcm<C, N>(
    key: &[u8],
    iv: &[u8],
    aad: &[u8],
    mut buf: Vec<u8>,
    tag: Option<&[u8]>,
    encrypt: bool,
    (init, _update, last): (Failed, Failed, Failed),
) -> Result<Sealed, Failed>
where
    C: BlockCipher<BlockSize = U16> + BlockEncrypt + KeyInit,
    N: ArrayLength<u8>,
{
    let cipher = AesGcm::<C, N>::new_from_slice(key).map_err(|_| init)?;
    let nonce = aes_gcm::Nonce::<N>::from_slice(iv);
    if encrypt {
        let tag = cipher
            .encrypt_in_place_detached(nonce, aad, &mut buf)
            .map_err(|_| last)?;
        return Ok(Sealed::WithTag(buf, tag.to_vec()));
    }
    // Without a tag OpenSSL's final step fails.
    let tag = tag.filter(|t| t.len() == 16).ok_or(last)?;
    cipher
        .decrypt_in_place_detached(nonce, aad, &mut buf, aes_gcm::Tag::from_slice(tag))
        .map_err(|_| last)?;
    Ok(Sealed::Plain(buf))
}

impl UserData for Context {
    fn add_methods<M: UserDataMethods<Self>>(methods: &mut M) {
        methods.add_method(
            "encrypt",
            |lua, this, (s, aad): (LuaString, Option<LuaString>)| {
                let aad = aad.map(|a| a.as_bytes().to_vec()).unwrap_or_default();
                sealed(lua, this.encrypt(&s.as_bytes(), &aad))
            },
        );
        methods.add_method(
            "decrypt",
            |lua, this, (s, tag, aad): (LuaString, Option<LuaString>, Option<LuaString>)| {
                let aad = aad.map(|a| a.as_bytes().to_vec()).unwrap_or_default();
                let tag = tag.map(|t| t.as_bytes().to_vec());
                sealed(lua, this.decrypt(&s.as_bytes(), tag.as_deref(), &aad))
            },
        );
    }
}

/// The string (or GCM's table) alone, or `nil, err`.
fn sealed(lua: &Lua, r: Result<Sealed, Failed>) -> mlua::Result<MultiValue> {
    Ok(match r {
        Ok(Sealed::Plain(v)) => MultiValue::from_vec(vec![Value::String(lua.create_string(v)?)]),
        Ok(Sealed::WithTag(v, tag)) => {
            let t = lua.create_sequence_from([lua.create_string(v)?, lua.create_string(tag)?])?;
            MultiValue::from_vec(vec![Value::Table(t)])
        }
        Err(e) => MultiValue::from_vec(vec![Value::Nil, Value::String(lua.create_string(e)?)]),
    })
}

/// Registers `resty.aes` in `preload`.
pub(super) fn install(lua: &Lua, preload: &Table) -> mlua::Result<()> {
    let derive = lua.create_function(
        |lua,
         (size, mode, md, salt, key, rounds): (
            usize,
            String,
            String,
            Option<LuaString>,
            LuaString,
            u32,
        )| {
            let Some(mode) = Mode::parse(&mode) else {
                return Ok((Value::Nil, Value::Nil));
            };
            let salt = salt.map(|s| s.as_bytes().to_vec());
            match bytes_to_key(
                &md,
                salt.as_deref(),
                &key.as_bytes(),
                rounds,
                size / 8,
                mode.iv_len(),
            ) {
                Some((k, iv)) => Ok((
                    Value::String(lua.create_string(k)?),
                    Value::String(lua.create_string(iv)?),
                )),
                None => Ok((Value::Nil, Value::Nil)),
            }
        },
    )?;
    let context = lua.create_function(
        |lua,
         (size, mode, key, iv, iv_len, padding): (
            usize,
            String,
            LuaString,
            LuaString,
            usize,
            bool,
        )| {
            let made = Mode::parse(&mode)
                .ok_or("failed to init ctx")
                .and_then(|mode| {
                    Context::new(size, mode, &key.as_bytes(), &iv.as_bytes(), iv_len, padding)
                });
            match made {
                Ok(ctx) => Ok((Value::UserData(lua.create_userdata(ctx)?), Value::Nil)),
                Err(e) => Ok((Value::Nil, Value::String(lua.create_string(e)?))),
            }
        },
    )?;
    let module = lua.load(MODULE).set_name("=resty.aes").into_function()?;
    preload.set(
        "resty.aes",
        lua.create_function(move |_, _: MultiValue| {
            module.call::<Value>((derive.clone(), context.clone()))
        })?,
    )
}

#[cfg(test)]
mod tests {
    use super::{Context, Mode, Sealed, bytes_to_key};
    use crate::ngx::codec::to_hex;

    fn unhex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
            .collect()
    }

    fn plain(r: Result<Sealed, &'static str>) -> Vec<u8> {
        match r {
            Ok(Sealed::Plain(v)) => v,
            _ => panic!("expected a string"),
        }
    }

    /// Vectors from `openssl enc` (OpenSSL 3.0) on the build machine:
    /// `printf 'hello world' | openssl enc -aes-128-cbc -md md5
    /// -S 0102030405060708 -pass pass:secret [-P]`.
    #[test]
    fn passphrase_keys_match_openssl_enc() {
        let salt = unhex("0102030405060708");
        let (key, iv) = bytes_to_key("md5", Some(&salt), b"secret", 1, 16, 16).expect("md5");
        assert_eq!(to_hex(&key), "c9e5a1bd216dbe1317e230cef48f38ee");
        assert_eq!(to_hex(&iv), "7f0e17ad64022144bccec4a1aa2879ab");
        let ctx = Context::new(128, Mode::Cbc, &key, &iv, 16, true).expect("ctx");
        let out = plain(ctx.encrypt(b"hello world", b""));
        assert_eq!(to_hex(&out), "071c941f3544608e7c05eda85a9c9a68");
        assert_eq!(plain(ctx.decrypt(&out, None, b"")), b"hello world");

        // -aes-256-cbc -md sha256 -nosalt
        let (key, iv) = bytes_to_key("sha256", None, b"secret", 1, 32, 16).expect("sha256");
        assert_eq!(
            to_hex(&key),
            "2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b"
        );
        assert_eq!(to_hex(&iv), "015e42ff678b2b90b743111a396ef850");
        let ctx = Context::new(256, Mode::Cbc, &key, &iv, 16, true).expect("ctx");
        assert_eq!(
            to_hex(&plain(ctx.encrypt(b"hello world", b""))),
            "8ad2af0f118c9708fe7a8aee553f4430"
        );
    }

    /// `printf 'hello world, moongate' | openssl enc -aes-128-MODE
    /// -K 000102…0f -iv 101112…1f`.
    #[test]
    fn modes_match_openssl_enc() {
        let key = unhex("000102030405060708090a0b0c0d0e0f");
        let iv = unhex("101112131415161718191a1b1c1d1e1f");
        let cases = [
            (
                Mode::Ecb,
                "3bf5146fb647b3ac611bbb391cc727169d2079dbe8b6965d5396e630be095c97",
            ),
            (Mode::Cfb8, "6f3d8885c08f21e05c58ddd22ea3f068376f943d5e"),
            (Mode::Cfb128, "6f9b83188ef57401e2628a3daef9fdfcac110dbc1a"),
            (Mode::Ofb, "6f9b83188ef57401e2628a3daef9fdfce7a8e57c40"),
            (Mode::Ctr, "6f9b83188ef57401e2628a3daef9fdfcfca5a470bd"),
        ];
        for (mode, want) in cases {
            let ctx = Context::new(128, mode, &key, &iv, 16, true).expect("ctx");
            let out = plain(ctx.encrypt(b"hello world, moongate", b""));
            assert_eq!(to_hex(&out), want, "{mode:?}");
            assert_eq!(
                plain(ctx.decrypt(&out, None, b"")),
                b"hello world, moongate"
            );
        }
    }

    #[test]
    fn gcm_round_trips_and_checks_its_tag() {
        let key = [7u8; 32];
        let ctx = Context::new(256, Mode::Gcm, &key, &[1u8; 12], 12, true).expect("ctx");
        let Ok(Sealed::WithTag(ct, tag)) = ctx.encrypt(b"secret text", b"aad") else {
            panic!("gcm gives a tag");
        };
        assert_eq!(plain(ctx.decrypt(&ct, Some(&tag), b"aad")), b"secret text");
        assert!(ctx.decrypt(&ct, Some(&tag), b"other").is_err());
        assert!(ctx.decrypt(&ct, None, b"aad").is_err());
    }

    #[test]
    fn unpadded_input_must_be_whole_blocks() {
        let ctx = Context::new(128, Mode::Cbc, &[0; 16], &[0; 16], 16, false).expect("ctx");
        assert_eq!(
            ctx.encrypt(b"short", b"").err(),
            Some("EVP_EncryptFinal_ex failed")
        );
        assert_eq!(plain(ctx.encrypt(&[1; 32], b"")).len(), 32);
    }
}

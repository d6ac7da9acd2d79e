//! The byte codecs behind `ngx.md5`, `ngx.sha1_bin`, `ngx.hmac_sha1`,
//! `ngx.crc32_*`, `ngx.encode/decode_base64`, `ngx.escape/unescape_uri`,
//! `ngx.encode/decode_args`, and the native stand-ins for `resty.md5`,
//! `resty.sha*`, `resty.random` and `resty.string`.
//!
//! Plain functions over bytes, byte-exact with ngx_lua (the URI tables and
//! the base64 and query-string parsers follow nginx's C code, quirks
//! included), so scripts that compare outputs behave as under OpenResty.
//! This module knows nothing of Lua: argument coercion (`nil` → `""`,
//! numbers → strings) and raising errors belong to the Lua layer.

use std::collections::HashMap;

use hmac::{Hmac, Mac};
use md5::Md5;
use sha1::Sha1;
use sha2::{Digest, Sha224, Sha256, Sha384, Sha512};

/// MD5 digest of `data` (`ngx.md5_bin`).
pub fn md5_bin(data: &[u8]) -> [u8; 16] {
    Md5::digest(data).into()
}

/// MD5 digest of `data` as 32 lowercase hex digits (`ngx.md5`).
pub fn md5_hex(data: &[u8]) -> String {
    to_hex(&md5_bin(data))
}

/// SHA-1 digest of `data` (`ngx.sha1_bin`).
pub fn sha1_bin(data: &[u8]) -> [u8; 20] {
    Sha1::digest(data).into()
}

/// SHA-224 digest of `data`.
pub fn sha224_bin(data: &[u8]) -> [u8; 28] {
    Sha224::digest(data).into()
}

/// SHA-256 digest of `data`.
pub fn sha256_bin(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

/// SHA-384 digest of `data`.
pub fn sha384_bin(data: &[u8]) -> [u8; 48] {
    Sha384::digest(data).into()
}

/// SHA-512 digest of `data`.
pub fn sha512_bin(data: &[u8]) -> [u8; 64] {
    Sha512::digest(data).into()
}

/// HMAC-SHA1 of `data` under `key` (`ngx.hmac_sha1`); keys of any length.
pub fn hmac_sha1(key: &[u8], data: &[u8]) -> [u8; 20] {
    // HMAC accepts keys of every length, so `new_from_slice` cannot fail;
    // the fallback keeps this free of `unwrap` all the same.
    match Hmac::<Sha1>::new_from_slice(key) {
        Ok(mut mac) => {
            mac.update(data);
            mac.finalize().into_bytes().into()
        }
        Err(_) => [0; 20],
    }
}

/// HMAC-SHA256 of `data` under `key` (for the bundled JWT HS256 policy).
pub fn hmac_sha256(key: &[u8], data: &[u8]) -> [u8; 32] {
    match Hmac::<Sha256>::new_from_slice(key) {
        Ok(mut mac) => {
            mac.update(data);
            mac.finalize().into_bytes().into()
        }
        Err(_) => [0; 32],
    }
}

/// CRC-32 (IEEE) of `data` (`ngx.crc32_short`; nginx's short-input variant
/// gives the same value).
pub fn crc32_short(data: &[u8]) -> u32 {
    crc32fast::hash(data)
}

/// CRC-32 (IEEE) of `data` (`ngx.crc32_long`).
pub fn crc32_long(data: &[u8]) -> u32 {
    crc32fast::hash(data)
}

/// Lowercase hex of `data` (`resty.string.to_hex`, the digits of `ngx.md5`).
pub fn to_hex(data: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(data.len() * 2);
    for &b in data {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 0xf)]));
    }
    out
}

/// `n` random bytes (`resty.random.bytes(n, strong)`), from the operating
/// system's CSPRNG whether or not `strong` is asked for. `None` only when
/// `strong` is set and the OS generator fails (resty.random returns `nil`
/// then); without `strong` a failing OS generator falls back to `fastrand`,
/// as OpenSSL's `RAND_pseudo_bytes` never fails.
pub fn resty_random_bytes(n: usize, strong: bool) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; n];
    match getrandom::fill(&mut buf) {
        Ok(()) => Some(buf),
        Err(_) if strong => None,
        Err(_) => {
            fastrand::fill(&mut buf);
            Some(buf)
        }
    }
}

const B64_STD: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const B64_URL: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

fn encode_base64_with(data: &[u8], basis: &[u8; 64], padding: bool) -> String {
    let sym = |v: u8| char::from(basis[usize::from(v & 0x3f)]);
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    let mut chunks = data.chunks_exact(3);
    for c in &mut chunks {
        out.push(sym(c[0] >> 2));
        out.push(sym((c[0] << 4) | (c[1] >> 4)));
        out.push(sym((c[1] << 2) | (c[2] >> 6)));
        out.push(sym(c[2]));
    }
    match *chunks.remainder() {
        [a] => {
            out.push(sym(a >> 2));
            out.push(sym(a << 4));
            if padding {
                out.push_str("==");
            }
        }
        [a, b] => {
            out.push(sym(a >> 2));
            out.push(sym((a << 4) | (b >> 4)));
            out.push(sym(b << 2));
            if padding {
                out.push('=');
            }
        }
        _ => {}
    }
    out
}

/// Base64 (standard alphabet) of `data` (`ngx.encode_base64(s, no_padding)`).
pub fn encode_base64(data: &[u8], no_padding: bool) -> String {
    encode_base64_with(data, B64_STD, !no_padding)
}

/// Base64url of `data`, unpadded (`ngx.base64.encode_base64url`).
pub fn encode_base64url(data: &[u8]) -> String {
    encode_base64_with(data, B64_URL, false)
}

/// nginx's `ngx_decode_base64_internal`: every byte before the first `=`
/// must be in the alphabet, whatever follows the first `=` is ignored,
/// missing padding is fine, and only a length of 4k+1 symbols is refused.
fn decode_base64_with(data: &[u8], basis: &[u8; 64]) -> Option<Vec<u8>> {
    let mut rev = [0xffu8; 256];
    for (i, &c) in basis.iter().enumerate() {
        rev[usize::from(c)] = i as u8;
    }
    let len = data.iter().position(|&b| b == b'=').unwrap_or(data.len());
    let syms = &data[..len];
    if syms.iter().any(|&b| rev[usize::from(b)] == 0xff) || len % 4 == 1 {
        return None;
    }
    let v = |b: u8| rev[usize::from(b)];
    let mut out = Vec::with_capacity(len / 4 * 3 + 2);
    let mut chunks = syms.chunks_exact(4);
    for c in &mut chunks {
        out.push((v(c[0]) << 2) | (v(c[1]) >> 4));
        out.push((v(c[1]) << 4) | (v(c[2]) >> 2));
        out.push((v(c[2]) << 6) | v(c[3]));
    }
    let rest = chunks.remainder();
    if rest.len() > 1 {
        out.push((v(rest[0]) << 2) | (v(rest[1]) >> 4));
    }
    if rest.len() > 2 {
        out.push((v(rest[1]) << 4) | (v(rest[2]) >> 2));
    }
    Some(out)
}

/// Decodes standard base64 (`ngx.decode_base64`); `None` (Lua `nil`) when
/// the input is not well formed. Padding may be missing, as in nginx.
pub fn decode_base64(data: &[u8]) -> Option<Vec<u8>> {
    decode_base64_with(data, B64_STD)
}

/// Decodes base64url (`ngx.base64.decode_base64url`), same rules.
pub fn decode_base64url(data: &[u8]) -> Option<Vec<u8>> {
    decode_base64_with(data, B64_URL)
}

/// `ngx.ESCAPE_URI`: escape as a full URI (space, `#`, `%`, `?`, controls,
/// bytes 0x7F and above).
pub const ESCAPE_URI: u8 = 0;
/// `ngx.ESCAPE_ARGS` (type 1): as [`ESCAPE_URI`] plus `+`.
pub const ESCAPE_ARGS: u8 = 1;
/// `ngx.ESCAPE_URI_COMPONENT`, the default: everything but `A-Za-z0-9`,
/// `-._~` and, as nginx's table really has it, `!*'()`.
pub const ESCAPE_URI_COMPONENT: u8 = 2;
/// `ngx.ESCAPE_HTML` (type 3).
pub const ESCAPE_HTML: u8 = 3;
/// `ngx.ESCAPE_REFRESH` (type 4).
pub const ESCAPE_REFRESH: u8 = 4;
/// `ngx.ESCAPE_MEMCACHED` (type 5): space, `%` and controls only.
pub const ESCAPE_MEMCACHED: u8 = 5;
/// `ngx.ESCAPE_MAIL_AUTH` (type 6), the same table as memcached.
pub const ESCAPE_MAIL_AUTH: u8 = 6;

/// nginx's escape bitmaps (ngx_http_lua_escape_uri), one bit per byte
/// value, indexed by type 0..=6.
const ESCAPE_TABLES: [[u32; 8]; 7] = {
    const HI: u32 = 0xffff_ffff;
    const MEMCACHED: [u32; 8] = [HI, 0x0000_0021, 0, 0, 0, 0, 0, 0];
    [
        [HI, 0x8000_0029, 0, 0x8000_0000, HI, HI, HI, HI],
        [HI, 0x8000_0829, 0, 0x8000_0000, HI, HI, HI, HI],
        [HI, 0xfc00_987d, 0x7800_0001, 0xb800_0001, HI, HI, HI, HI],
        [HI, 0x0000_00ad, 0, 0x8000_0000, HI, HI, HI, HI],
        [HI, 0x0000_0085, 0, 0x8000_0000, HI, HI, HI, HI],
        MEMCACHED,
        MEMCACHED,
    ]
};

/// Checks the `type` argument of `ngx.escape_uri` as resty.core does,
/// returning ngx_lua's error message (to be raised) when out of range.
pub fn check_escape_type(esc_type: i64) -> Result<u8, String> {
    match u8::try_from(esc_type) {
        Ok(t) if t <= ESCAPE_MAIL_AUTH => Ok(t),
        _ => Err(format!("\"esc_type\" {esc_type} out of range")),
    }
}

/// Percent-escapes `data` with nginx's table for `esc_type`
/// (`ngx.escape_uri(s, type)`), uppercase hex. Types above 6 fall back to
/// [`ESCAPE_URI_COMPONENT`]; validate with [`check_escape_type`] first.
/// Types 5 and 6 leave bytes ≥ 0x80 alone, so the output is bytes.
pub fn escape_uri(data: &[u8], esc_type: u8) -> Vec<u8> {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let table = ESCAPE_TABLES
        .get(usize::from(esc_type))
        .unwrap_or(&ESCAPE_TABLES[usize::from(ESCAPE_URI_COMPONENT)]);
    let mut out = Vec::with_capacity(data.len());
    for &b in data {
        if table[usize::from(b >> 5)] & (1 << (b & 0x1f)) != 0 {
            out.extend_from_slice(&[b'%', HEX[usize::from(b >> 4)], HEX[usize::from(b & 0xf)]]);
        } else {
            out.push(b);
        }
    }
    out
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Decodes `%XX` escapes and `+` (to a space), as `ngx.unescape_uri`
/// does: a `%` not followed by two hex digits is kept as it is.
pub fn unescape_uri(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len());
    let mut i = 0;
    while i < data.len() {
        match data[i] {
            b'%' => match (
                data.get(i + 1).copied().and_then(hex_val),
                data.get(i + 2).copied().and_then(hex_val),
            ) {
                (Some(h), Some(l)) => {
                    out.push((h << 4) | l);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    out
}

/// One query-argument value, as `ngx.decode_args` returns it and
/// `ngx.encode_args` takes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ArgValue {
    /// `key=value` (the value may be empty: `key=`).
    Str(Vec<u8>),
    /// A bare `key` is `true`; `false` is skipped by `encode_args`.
    Bool(bool),
    /// A repeated key: its values in order (strings and booleans only).
    List(Vec<ArgValue>),
}

/// `ngx.decode_args`' default `max_args`.
pub const DEFAULT_MAX_ARGS: usize = 100;

/// What [`decode_args`] found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DecodedArgs {
    /// Each key once, in order of first appearance; repeated keys hold an
    /// [`ArgValue::List`].
    pub args: Vec<(Vec<u8>, ArgValue)>,
    /// `max_args` was reached (ngx_lua returns `"truncated"` as a second
    /// value then).
    pub truncated: bool,
}

impl DecodedArgs {
    /// The value of `key`, if present.
    pub fn get(&self, key: &[u8]) -> Option<&ArgValue> {
        self.args.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }
}

/// Parses a query string as `ngx.decode_args(str, max_args)` does
/// (ngx_http_lua_parse_args): `&`-separated, `a` → `true`, `a=` → `""`,
/// keys and values unescaped with `+` as space, empty keys dropped, a
/// repeated key collects a list. `max_args` counts `&`-terminated pieces
/// (empty ones too) and 0 means unlimited; the Lua layer maps a negative
/// argument to [`DEFAULT_MAX_ARGS`], as ngx_lua does.
pub fn decode_args(data: &[u8], max_args: usize) -> DecodedArgs {
    let mut args: Vec<(Vec<u8>, ArgValue)> = Vec::new();
    let mut truncated = false;
    let mut index: HashMap<Vec<u8>, usize> = HashMap::new();
    let mut add = |key: Vec<u8>, value: ArgValue| {
        if key.is_empty() {
            return;
        }
        match index.get(&key) {
            Some(&i) => {
                let slot = &mut args[i].1;
                match slot {
                    ArgValue::List(list) => list.push(value),
                    other => {
                        let first = std::mem::replace(other, ArgValue::Bool(false));
                        *other = ArgValue::List(vec![first, value]);
                    }
                }
            }
            None => {
                index.insert(key.clone(), args.len());
                args.push((key, value));
            }
        }
    };
    let mut count = 0usize;
    let mut pieces = data.split(|&b| b == b'&').peekable();
    while let Some(piece) = pieces.next() {
        let last = pieces.peek().is_none();
        if last && piece.is_empty() {
            break;
        }
        match piece.iter().position(|&b| b == b'=') {
            Some(eq) => add(
                unescape_uri(&piece[..eq]),
                ArgValue::Str(unescape_uri(&piece[eq + 1..])),
            ),
            None => add(unescape_uri(piece), ArgValue::Bool(true)),
        }
        if !last {
            count += 1;
            if max_args > 0 && count == max_args {
                truncated = true;
                break;
            }
        }
    }
    DecodedArgs { args, truncated }
}

/// Builds a query string as `ngx.encode_args(t)` does: pairs in the given
/// order (a Lua table's order is the Lua layer's to choose), keys and
/// values escaped as URI components, `true` → bare key, `false` → left
/// out, a list → the key repeated per element. A list inside a list is
/// ngx_lua's "attempt to use table as query arg value" error.
pub fn encode_args<K: AsRef<[u8]>>(args: &[(K, ArgValue)]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    let mut pieces = 0usize;
    let mut piece = |key: &[u8], value: &ArgValue| -> Result<(), String> {
        let (key, value) = match value {
            ArgValue::Str(v) => (key, Some(v)),
            ArgValue::Bool(true) => (key, None),
            ArgValue::Bool(false) => return Ok(()),
            ArgValue::List(_) => return Err("attempt to use table as query arg value".into()),
        };
        if pieces > 0 {
            out.push(b'&');
        }
        pieces += 1;
        out.extend(escape_uri(key, ESCAPE_URI_COMPONENT));
        if let Some(v) = value {
            out.push(b'=');
            out.extend(escape_uri(v, ESCAPE_URI_COMPONENT));
        }
        Ok(())
    };
    for (key, value) in args {
        match value {
            ArgValue::List(items) => {
                for item in items {
                    piece(key.as_ref(), item)?;
                }
            }
            single => piece(key.as_ref(), single)?,
        }
    }
    Ok(out)
}

macro_rules! hash_state {
    ($(#[$doc:meta])* $name:ident, $hasher:ty) => {
        $(#[$doc])*
        #[derive(Clone, Default)]
        pub struct $name($hasher);

        impl $name {
            /// A fresh state (`resty.X:new()`).
            pub fn new() -> Self {
                Self::default()
            }

            /// Feeds `data` (`:update(s)`).
            pub fn update(&mut self, data: &[u8]) {
                Digest::update(&mut self.0, data);
            }

            /// The digest of everything fed so far (`:final()`); the state
            /// is reset afterwards, ready for new input.
            pub fn finish(&mut self) -> Vec<u8> {
                self.0.finalize_reset().to_vec()
            }

            /// Forgets everything fed so far (`:reset()`).
            pub fn reset(&mut self) {
                Digest::reset(&mut self.0);
            }
        }

        impl std::fmt::Debug for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(stringify!($name))
            }
        }
    };
}

hash_state!(
    /// Incremental MD5 (`resty.md5`).
    Md5State, Md5
);
hash_state!(
    /// Incremental SHA-1 (`resty.sha1`).
    Sha1State, Sha1
);
hash_state!(
    /// Incremental SHA-224 (`resty.sha224`).
    Sha224State, Sha224
);
hash_state!(
    /// Incremental SHA-256 (`resty.sha256`).
    Sha256State, Sha256
);
hash_state!(
    /// Incremental SHA-384 (`resty.sha384`).
    Sha384State, Sha384
);
hash_state!(
    /// Incremental SHA-512 (`resty.sha512`).
    Sha512State, Sha512
);

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn md5_vectors() {
        assert_eq!(md5_hex(b""), "d41d8cd98f00b204e9800998ecf8427e");
        assert_eq!(md5_hex(b"abc"), "900150983cd24fb0d6963f7d28e17f72");
        assert_eq!(
            md5_bin(b"abc").to_vec(),
            hex("900150983cd24fb0d6963f7d28e17f72")
        );
    }

    #[test]
    fn sha_vectors() {
        assert_eq!(
            to_hex(&sha1_bin(b"abc")),
            "a9993e364706816aba3e25717850c26c9cd0d89d"
        );
        assert_eq!(
            to_hex(&sha256_bin(b"abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            to_hex(&sha224_bin(b"abc")),
            "23097d223405d8228642a477bda255b32aadbce4bda0b3f7e36c9da7"
        );
        assert!(to_hex(&sha384_bin(b"abc")).starts_with("cb00753f45a35e8bb5a03d699ac65007"));
        assert!(to_hex(&sha512_bin(b"abc")).starts_with("ddaf35a193617abacc417349ae204131"));
    }

    #[test]
    fn hmac_sha1_rfc2202() {
        // Test cases 1, 2 and 6 of RFC 2202.
        assert_eq!(
            to_hex(&hmac_sha1(&[0x0b; 20], b"Hi There")),
            "b617318655057264e28bc0b6fb378c8ef146be00"
        );
        assert_eq!(
            to_hex(&hmac_sha1(b"Jefe", b"what do ya want for nothing?")),
            "effcdf6ae5eb2fa2d27416d5f184df9c259a7c79"
        );
        assert_eq!(
            to_hex(&hmac_sha1(
                &[0xaa; 80],
                b"Test Using Larger Than Block-Size Key - Hash Key First"
            )),
            "aa4ae5e15272d00e95705637ce8a3b55ed402112"
        );
        // RFC 4231 test case 2.
        assert_eq!(
            to_hex(&hmac_sha256(b"Jefe", b"what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn crc32_vectors() {
        let fox = b"The quick brown fox jumps over the lazy dog";
        assert_eq!(crc32_short(fox), 0x414F_A339);
        assert_eq!(crc32_long(fox), 0x414F_A339);
        assert_eq!(crc32_short(b""), 0);
    }

    #[test]
    fn base64_encode() {
        assert_eq!(encode_base64(b"", false), "");
        assert_eq!(encode_base64(b"f", false), "Zg==");
        assert_eq!(encode_base64(b"fo", false), "Zm8=");
        assert_eq!(encode_base64(b"foo", false), "Zm9v");
        assert_eq!(encode_base64(b"foob", true), "Zm9vYg");
        assert_eq!(encode_base64(b"fooba", true), "Zm9vYmE");
        assert_eq!(encode_base64(&[0xfb, 0xff], false), "+/8=");
        assert_eq!(encode_base64url(&[0xfb, 0xff]), "-_8");
    }

    #[test]
    fn base64_decode() {
        assert_eq!(decode_base64(b"Zm9vYmFy").as_deref(), Some(&b"foobar"[..]));
        assert_eq!(decode_base64(b"Zm9vYg==").as_deref(), Some(&b"foob"[..]));
        // Missing padding is accepted, like nginx.
        assert_eq!(decode_base64(b"Zm9vYg").as_deref(), Some(&b"foob"[..]));
        assert_eq!(decode_base64(b"").as_deref(), Some(&b""[..]));
        // Whatever follows the first '=' is ignored by nginx.
        assert_eq!(decode_base64(b"Zg==junk!").as_deref(), Some(&b"f"[..]));
        // Invalid symbols and a 4k+1 length are refused.
        assert_eq!(decode_base64(b"Zm9v!"), None);
        assert_eq!(decode_base64(b"Zm9vY"), None);
        assert_eq!(decode_base64(b"Zm 9v"), None);
        assert_eq!(decode_base64(b"-_8"), None);
        assert_eq!(decode_base64url(b"-_8").as_deref(), Some(&[0xfb, 0xff][..]));
        for n in 0..40u8 {
            let data: Vec<u8> = (0..n).map(|i| i.wrapping_mul(37)).collect();
            assert_eq!(
                decode_base64(encode_base64(&data, false).as_bytes()),
                Some(data.clone())
            );
            assert_eq!(
                decode_base64(encode_base64(&data, true).as_bytes()),
                Some(data)
            );
        }
    }

    #[test]
    fn escape_uri_tables() {
        let s = b" /?=&";
        assert_eq!(escape_uri(s, ESCAPE_URI_COMPONENT), b"%20%2F%3F%3D%26");
        assert_eq!(escape_uri(s, ESCAPE_URI), b"%20/%3F=&");
        assert_eq!(escape_uri(b"a+b", ESCAPE_URI), b"a+b");
        assert_eq!(escape_uri(b"a+b", ESCAPE_ARGS), b"a%2Bb");
        assert_eq!(escape_uri(b"-_.~!*'()", ESCAPE_URI_COMPONENT), b"-_.~!*'()");
        assert_eq!(
            escape_uri(b"\"a/b={}:<>;&[]\\^", ESCAPE_URI_COMPONENT),
            b"%22a%2Fb%3D%7B%7D%3A%3C%3E%3B%26%5B%5D%5C%5E"
        );
        assert_eq!(
            escape_uri("a 你".as_bytes(), ESCAPE_URI_COMPONENT),
            b"a%20%E4%BD%A0"
        );
        assert_eq!(
            escape_uri("a 你".as_bytes(), ESCAPE_MEMCACHED),
            "a%20你".as_bytes()
        );
        assert_eq!(escape_uri(b"#%", ESCAPE_URI), b"%23%25");
        assert_eq!(
            escape_uri(b"<a href='x'>", ESCAPE_HTML),
            b"<a%20href=%27x%27>"
        );
        assert_eq!(check_escape_type(2), Ok(2));
        assert_eq!(
            check_escape_type(7),
            Err("\"esc_type\" 7 out of range".into())
        );
        assert_eq!(
            check_escape_type(-1),
            Err("\"esc_type\" -1 out of range".into())
        );
    }

    #[test]
    fn unescape_uri_rules() {
        assert_eq!(unescape_uri(b"a%20%e4%bd%a0"), "a 你".as_bytes());
        assert_eq!(unescape_uri(b"a+b%2Bc"), b"a b+c");
        assert_eq!(
            unescape_uri(b"try %search%%20%again%"),
            b"try %search% %again%"
        );
        assert_eq!(unescape_uri(b"%4"), b"%4");
        assert_eq!(unescape_uri(b"%zz%"), b"%zz%");
        for s in [
            &b" /?=&+"[..],
            "a 你+%".as_bytes(),
            &[0u8, 0x7f, 0x80, 0xff],
        ] {
            assert_eq!(unescape_uri(&escape_uri(s, ESCAPE_URI_COMPONENT)), s);
            assert_eq!(unescape_uri(&escape_uri(s, ESCAPE_ARGS)), s);
        }
        // ESCAPE_URI keeps '+', which unescaping turns into a space.
        assert_eq!(unescape_uri(&escape_uri(b"a+b c", ESCAPE_URI)), b"a b c");
    }

    fn s(v: &str) -> ArgValue {
        ArgValue::Str(v.as_bytes().to_vec())
    }

    #[test]
    fn decode_args_rules() {
        let d = decode_args(b"a=1&b&c=&a=2&=x&&d=x%20y+z&b=3", DEFAULT_MAX_ARGS);
        assert!(!d.truncated);
        assert_eq!(
            d.args,
            vec![
                (b"a".to_vec(), ArgValue::List(vec![s("1"), s("2")])),
                (
                    b"b".to_vec(),
                    ArgValue::List(vec![ArgValue::Bool(true), s("3")])
                ),
                (b"c".to_vec(), s("")),
                (b"d".to_vec(), s("x y z")),
            ]
        );
        assert_eq!(decode_args(b"k=a=b", 0).get(b"k"), Some(&s("a=b")));
        assert_eq!(decode_args(b"", 0), DecodedArgs::default());
        assert_eq!(decode_args(b"&", 0), DecodedArgs::default());
    }

    #[test]
    fn decode_args_max() {
        let d = decode_args(b"a=1&b=2&c=3", 2);
        assert!(d.truncated);
        assert_eq!(
            d.args,
            vec![(b"a".to_vec(), s("1")), (b"b".to_vec(), s("2"))]
        );
        // The last piece is not '&'-terminated, so it does not count.
        let d = decode_args(b"a=1&b=2", 2);
        assert!(!d.truncated);
        assert_eq!(d.args.len(), 2);
        // Empty pieces count towards the limit.
        let d = decode_args(b"&&a=1", 2);
        assert!(d.truncated);
        assert!(d.args.is_empty());
        // 0 is unlimited.
        let many: Vec<u8> = (0..300)
            .map(|i| format!("k{i}=v&"))
            .collect::<String>()
            .into_bytes();
        let d = decode_args(&many, 0);
        assert!(!d.truncated);
        assert_eq!(d.args.len(), 300);
        assert_eq!(decode_args(&many, DEFAULT_MAX_ARGS).args.len(), 100);
    }

    #[test]
    fn encode_args_rules() {
        let args = vec![
            ("b c", s("x/y")),
            ("t", ArgValue::Bool(true)),
            ("f", ArgValue::Bool(false)),
            (
                "m",
                ArgValue::List(vec![
                    s("1"),
                    ArgValue::Bool(true),
                    ArgValue::Bool(false),
                    s(""),
                ]),
            ),
            ("e", ArgValue::List(vec![])),
        ];
        assert_eq!(encode_args(&args).unwrap(), b"b%20c=x%2Fy&t&m=1&m&m=");
        assert_eq!(encode_args::<&str>(&[]).unwrap(), b"");
        // An empty key still takes its place, as in ngx_lua.
        assert_eq!(
            encode_args(&[("", ArgValue::Bool(true)), ("a", s("1"))]).unwrap(),
            b"&a=1"
        );
        assert_eq!(
            encode_args(&[("f", ArgValue::Bool(false)), ("a", s("1"))]).unwrap(),
            b"a=1"
        );
        assert_eq!(
            encode_args(&[("a", ArgValue::List(vec![ArgValue::List(vec![])]))]),
            Err("attempt to use table as query arg value".into())
        );
        // Round trip through decode_args.
        let enc = encode_args(&[("k", ArgValue::List(vec![s("a b"), s("c&d")]))]).unwrap();
        assert_eq!(
            decode_args(&enc, 0).get(b"k"),
            Some(&ArgValue::List(vec![s("a b"), s("c&d")]))
        );
    }

    #[test]
    fn incremental_hashers() {
        let mut h = Sha256State::new();
        h.update(b"a");
        h.update(b"bc");
        assert_eq!(h.finish(), sha256_bin(b"abc").to_vec());
        h.update(b"zzz");
        h.reset();
        h.update(b"abc");
        assert_eq!(h.finish(), sha256_bin(b"abc").to_vec());
        let mut m = Md5State::new();
        m.update(b"abc");
        assert_eq!(to_hex(&m.finish()), "900150983cd24fb0d6963f7d28e17f72");
        let mut s1 = Sha1State::new();
        s1.update(b"ab");
        s1.update(b"c");
        assert_eq!(s1.finish(), sha1_bin(b"abc").to_vec());
        let mut s5 = Sha512State::new();
        s5.update(b"abc");
        assert_eq!(s5.finish(), sha512_bin(b"abc").to_vec());
    }

    #[test]
    fn random_and_hex() {
        assert_eq!(to_hex(&[0x00, 0xab, 0xff]), "00abff");
        let a = resty_random_bytes(32, true).unwrap();
        let b = resty_random_bytes(32, false).unwrap();
        assert_eq!(a.len(), 32);
        assert_ne!(a, b);
        assert_eq!(resty_random_bytes(0, true), Some(vec![]));
    }
}

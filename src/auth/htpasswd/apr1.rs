//! Apache's `$apr1$` password hash: FreeBSD's MD5-crypt with the magic
//! string `$apr1$`. No maintained crate implements it, so this follows the
//! published algorithm (Poul-Henning Kamp's `md5crypt.c`, as copied into
//! APR's `apr_md5.c`); the tests check it against Debian's `htpasswd -m`.

use md5::{Digest, Md5};

/// The crypt alphabet (not standard base64: `.` and `/` first).
const ITOA64: &[u8; 64] = b"./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
const MAGIC: &[u8] = b"$apr1$";

/// The 22-character hash part of `$apr1$SALT$HASH` for `password` and
/// `salt` (at most the first 8 bytes of `salt` are used, as in APR).
pub fn hash(password: &[u8], salt: &[u8]) -> [u8; 22] {
    let salt = &salt[..salt.len().min(8)];
    let mut ctx = Md5::new();
    ctx.update(password);
    ctx.update(MAGIC);
    ctx.update(salt);
    let alt = Md5::new()
        .chain_update(password)
        .chain_update(salt)
        .chain_update(password)
        .finalize();
    let mut left = password.len();
    while left > 0 {
        let n = left.min(16);
        ctx.update(&alt[..n]);
        left -= n;
    }
    let mut bits = password.len();
    while bits > 0 {
        if bits & 1 != 0 {
            ctx.update([0u8]);
        } else {
            ctx.update(&password[..1]);
        }
        bits >>= 1;
    }
    let mut fin = ctx.finalize();
    // The 1000 rounds exist only to slow a brute force down.
    for i in 0..1000 {
        let mut round = Md5::new();
        if i & 1 != 0 {
            round.update(password);
        } else {
            round.update(fin);
        }
        if i % 3 != 0 {
            round.update(salt);
        }
        if i % 7 != 0 {
            round.update(password);
        }
        if i & 1 != 0 {
            round.update(fin);
        } else {
            round.update(password);
        }
        fin = round.finalize();
    }
    let mut out = [0u8; 22];
    let mut at = 0;
    let mut put = |v: u32, n: usize| {
        let mut v = v;
        for _ in 0..n {
            out[at] = ITOA64[(v & 0x3f) as usize];
            v >>= 6;
            at += 1;
        }
    };
    for (a, b, c) in [(0, 6, 12), (1, 7, 13), (2, 8, 14), (3, 9, 15), (4, 10, 5)] {
        put(
            (u32::from(fin[a]) << 16) | (u32::from(fin[b]) << 8) | u32::from(fin[c]),
            4,
        );
    }
    put(u32::from(fin[11]), 2);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_htpasswd_m_output() {
        // `htpasswd -nbm u p` on Debian 12 (apache2-utils 2.4.65).
        assert_eq!(&hash(b"p", b"/DhO3Mxr"), b"xbNTfL4/tWIM652bJpiWr/");
    }

    #[test]
    fn long_passwords_and_salts_follow_apr() {
        // A salt longer than 8 bytes is cut, so both give the same hash.
        assert_eq!(hash(b"pw", b"abcdefgh"), hash(b"pw", b"abcdefghXYZ"));
        assert_ne!(hash(b"pw", b"abcdefgh"), hash(b"pw", b"abcdefgi"));
        // Past 16 bytes the password is fed in several pieces.
        let long = [b'x'; 40];
        assert_ne!(hash(&long, b"s"), hash(&long[..39], b"s"));
    }
}

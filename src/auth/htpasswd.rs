//! htpasswd files (`user:hash` lines) and password checks for the schemes
//! Apache's `htpasswd` writes: bcrypt (`$2y$`, `$2a$`, `$2b$`),
//! SHA-256-crypt (`$5$`), SHA-512-crypt (`$6$`), apr1-MD5 (`$apr1$`) and
//! `{SHA}` (unsalted SHA-1, accepted only so old files can be migrated).
//! Plain text and DES `crypt` lines are refused at load.
//!
//! Cost: bcrypt at cost 5 (htpasswd's default) is about a millisecond of
//! CPU per check, cost 10 about 50 ms; SHA-crypt at 5000 rounds and apr1
//! are tens of microseconds. [`VerifyCache`] remembers successful checks so
//! a client sending the same credentials on every request pays that once
//! per TTL; the lead measures the per-request figures in bench/.

mod apr1;

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use sha1::Sha1;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// One stored password hash, parsed once at load so a check does no
/// string parsing.
#[derive(Debug, Clone)]
pub enum PasswordHash {
    /// `$2y$`/`$2a$`/`$2b$` bcrypt, kept whole: the `bcrypt` crate parses it.
    Bcrypt(String),
    /// `$5$[rounds=N$]salt$hash`.
    Sha256Crypt {
        /// Rounds (5000 when the line names none).
        rounds: usize,
        /// The salt as written.
        salt: String,
        /// The 43-character crypt-base64 hash.
        hash: String,
    },
    /// `$6$[rounds=N$]salt$hash`.
    Sha512Crypt {
        /// Rounds (5000 when the line names none).
        rounds: usize,
        /// The salt as written.
        salt: String,
        /// The 86-character crypt-base64 hash.
        hash: String,
    },
    /// `$apr1$salt$hash`.
    Apr1 {
        /// Up to 8 salt characters.
        salt: String,
        /// The 22-character hash.
        hash: [u8; 22],
    },
    /// `{SHA}base64(sha1(password))`.
    Sha1([u8; 20]),
}

impl PasswordHash {
    /// Parses the hash part of an htpasswd line, or says why it cannot be
    /// used.
    pub fn parse(s: &str) -> Result<PasswordHash, String> {
        if let Some(b64) = s.strip_prefix("{SHA}") {
            let raw = STANDARD
                .decode(b64)
                .map_err(|_| "{SHA} hash is not base64".to_string())?;
            let digest: [u8; 20] = raw
                .try_into()
                .map_err(|_| "{SHA} hash is not 20 bytes".to_string())?;
            return Ok(PasswordHash::Sha1(digest));
        }
        if ["$2y$", "$2a$", "$2b$"].iter().any(|p| s.starts_with(p)) {
            // Checked now so a bad line fails at load, not per request.
            let parts: Vec<&str> = s.split('$').collect();
            let ok = parts.len() == 4
                && parts[2].parse::<u32>().is_ok_and(|c| (4..=31).contains(&c))
                && parts[3].len() == 53;
            return if ok {
                Ok(PasswordHash::Bcrypt(s.to_string()))
            } else {
                Err("malformed bcrypt hash".to_string())
            };
        }
        if let Some(rest) = s.strip_prefix("$apr1$") {
            let (salt, hash) = rest
                .split_once('$')
                .ok_or("malformed $apr1$ hash (no salt)")?;
            let hash: [u8; 22] = hash
                .as_bytes()
                .try_into()
                .map_err(|_| "malformed $apr1$ hash (not 22 characters)".to_string())?;
            if salt.is_empty() || salt.len() > 8 {
                return Err("malformed $apr1$ hash (salt of 1-8 characters)".to_string());
            }
            return Ok(PasswordHash::Apr1 {
                salt: salt.to_string(),
                hash,
            });
        }
        for (prefix, len) in [("$5$", 43), ("$6$", 86)] {
            let Some(rest) = s.strip_prefix(prefix) else {
                continue;
            };
            let (rounds, rest) = match rest.strip_prefix("rounds=") {
                Some(r) => {
                    let (n, rest) = r.split_once('$').ok_or("malformed rounds=")?;
                    let n: usize = n.parse().map_err(|_| "rounds= is not a number")?;
                    // glibc clamps out-of-range rounds; so do we.
                    (n.clamp(1000, 999_999_999), rest)
                }
                None => (5000, rest),
            };
            let (salt, hash) = rest
                .split_once('$')
                .ok_or_else(|| format!("malformed {prefix} hash (no salt)"))?;
            if hash.len() != len || hash.contains('$') {
                return Err(format!("malformed {prefix} hash (not {len} characters)"));
            }
            let (salt, hash) = (salt.to_string(), hash.to_string());
            return Ok(if prefix == "$5$" {
                PasswordHash::Sha256Crypt { rounds, salt, hash }
            } else {
                PasswordHash::Sha512Crypt { rounds, salt, hash }
            });
        }
        if s.starts_with('$') {
            Err("unsupported hash scheme (use bcrypt, $5$, $6$ or $apr1$)".to_string())
        } else {
            Err("plain-text or DES crypt passwords are not accepted (use htpasswd -B)".to_string())
        }
    }

    /// Whether `password` matches. Comparisons are constant-time (bcrypt's
    /// own included).
    pub fn verify(&self, password: &[u8]) -> bool {
        match self {
            PasswordHash::Bcrypt(h) => bcrypt::verify(password, h).unwrap_or(false),
            PasswordHash::Sha256Crypt { rounds, salt, hash } => {
                sha_crypt::Sha256Params::new(*rounds)
                    .ok()
                    .and_then(|p| sha_crypt::sha256_crypt_b64(password, salt.as_bytes(), &p).ok())
                    .is_some_and(|out| ct_eq(out.as_bytes(), hash.as_bytes()))
            }
            PasswordHash::Sha512Crypt { rounds, salt, hash } => {
                sha_crypt::Sha512Params::new(*rounds)
                    .ok()
                    .and_then(|p| sha_crypt::sha512_crypt_b64(password, salt.as_bytes(), &p).ok())
                    .is_some_and(|out| ct_eq(out.as_bytes(), hash.as_bytes()))
            }
            PasswordHash::Apr1 { salt, hash } => {
                ct_eq(&apr1::hash(password, salt.as_bytes()), hash)
            }
            PasswordHash::Sha1(digest) => ct_eq(&Sha1::digest(password), digest),
        }
    }

    /// Whether a check costs enough to be worth caching ({SHA} is one
    /// SHA-1, cheaper than the cache's own key).
    pub fn is_slow(&self) -> bool {
        !matches!(self, PasswordHash::Sha1(_))
    }
}

fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

/// A bad line of an htpasswd file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct LineError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong with it.
    pub message: String,
}

/// The users of one htpasswd file.
#[derive(Debug, Clone, Default)]
pub struct Htpasswd {
    users: HashMap<String, PasswordHash>,
}

impl Htpasswd {
    /// Parses a whole file: `user:hash` lines, `#` comments and blank lines.
    /// Every bad line is reported (not only the first), and a user named
    /// twice is an error, because which line would win is a guess.
    pub fn parse(text: &str) -> Result<Htpasswd, Vec<LineError>> {
        let mut users = HashMap::new();
        let mut errors = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = |message: String| LineError {
                line: i + 1,
                message,
            };
            let Some((user, hash)) = line.split_once(':') else {
                errors.push(bad("expected user:hash".to_string()));
                continue;
            };
            if user.is_empty() {
                errors.push(bad("empty user name".to_string()));
                continue;
            }
            match PasswordHash::parse(hash) {
                Err(e) => errors.push(bad(format!("user {user:?}: {e}"))),
                Ok(h) => {
                    if users.insert(user.to_string(), h).is_some() {
                        errors.push(bad(format!("user {user:?} appears twice")));
                    }
                }
            }
        }
        if errors.is_empty() {
            Ok(Htpasswd { users })
        } else {
            Err(errors)
        }
    }

    /// Reads and parses `path`; the error names the file and each bad line.
    pub fn load(path: &Path) -> Result<Htpasswd, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        Htpasswd::parse(&text).map_err(|errs| {
            errs.iter()
                .map(|e| format!("{}:{}: {}", path.display(), e.line, e.message))
                .collect::<Vec<_>>()
                .join("\n")
        })
    }

    /// The stored hash of `user`.
    pub fn get(&self, user: &str) -> Option<&PasswordHash> {
        self.users.get(user)
    }

    /// How many users the file holds.
    pub fn len(&self) -> usize {
        self.users.len()
    }

    /// Whether the file holds no user.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// Whether `user` exists and `password` is theirs, going through
    /// `cache` for the slow schemes.
    pub fn verify(&self, cache: &VerifyCache, user: &str, password: &[u8]) -> bool {
        self.get(user)
            .is_some_and(|h| cache.verify(user, password, h))
    }
}

/// Successful password checks remembered per process, so repeated
/// requests with the same credentials skip bcrypt.
///
/// The trade-off: the cache holds SHA-256 digests of (per-process random
/// salt, user, password, stored hash) for up to `ttl`. Someone able to read
/// the process's memory could brute-force those far faster than bcrypt
/// (though they would need the salt too, and could as well read passwords
/// off live requests); a password changed in the file stops matching at
/// once because the stored hash is part of the key. Failed checks are not
/// cached, so a guesser pays full bcrypt price on every attempt.
pub struct VerifyCache {
    ok: moka::sync::Cache<[u8; 32], ()>,
    salt: [u8; 16],
}

impl VerifyCache {
    /// A cache of at most `capacity` successful checks, each kept for `ttl`.
    pub fn new(capacity: u64, ttl: Duration) -> VerifyCache {
        let mut salt = [0u8; 16];
        // Without randomness the salt is all zeros: still correct, only the
        // precomputation defence is lost.
        let _ = getrandom::fill(&mut salt);
        VerifyCache {
            ok: moka::sync::Cache::builder()
                .max_capacity(capacity)
                .time_to_live(ttl)
                .build(),
            salt,
        }
    }

    /// Whether `password` matches `stored`, remembering a success.
    pub fn verify(&self, user: &str, password: &[u8], stored: &PasswordHash) -> bool {
        if !stored.is_slow() {
            return stored.verify(password);
        }
        let key = self.key(user, password, stored);
        if self.ok.contains_key(&key) {
            return true;
        }
        let ok = stored.verify(password);
        if ok {
            self.ok.insert(key, ());
        }
        ok
    }

    /// The answer when it needs no slow hashing: a fast scheme checked
    /// now, or a remembered success; `None` when the slow check must run
    /// (then [`VerifyCache::remember`] a success).
    pub fn quick(&self, user: &str, password: &[u8], stored: &PasswordHash) -> Option<bool> {
        if !stored.is_slow() {
            return Some(stored.verify(password));
        }
        self.ok
            .contains_key(&self.key(user, password, stored))
            .then_some(true)
    }

    /// Remembers that `password` is `user`'s (after a slow check said so).
    pub fn remember(&self, user: &str, password: &[u8], stored: &PasswordHash) {
        self.ok.insert(self.key(user, password, stored), ());
    }

    fn key(&self, user: &str, password: &[u8], stored: &PasswordHash) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(self.salt);
        // Lengths first so ("ab","c") and ("a","bc") differ.
        h.update((user.len() as u64).to_le_bytes());
        h.update(user.as_bytes());
        h.update((password.len() as u64).to_le_bytes());
        h.update(password);
        match stored {
            PasswordHash::Bcrypt(s) => h.update(s.as_bytes()),
            PasswordHash::Sha256Crypt { salt, hash, .. }
            | PasswordHash::Sha512Crypt { salt, hash, .. } => {
                h.update(salt.as_bytes());
                h.update(hash.as_bytes());
            }
            PasswordHash::Apr1 { salt, hash } => {
                h.update(salt.as_bytes());
                h.update(hash);
            }
            PasswordHash::Sha1(d) => h.update(d),
        }
        h.finalize().into()
    }

    /// How many successes are remembered (after pending evictions).
    pub fn len(&self) -> u64 {
        self.ok.run_pending_tasks();
        self.ok.entry_count()
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
#[path = "htpasswd/tests.rs"]
mod tests;

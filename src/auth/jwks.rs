//! JSON Web Key Sets (RFC 7517): a document parsed into verification keys
//! with `kid` lookup, and a [`JwksCache`] refreshed in the background
//! (file or URL, every N seconds, last good set kept on failure) with a
//! rate-limited early refresh when a token names an unknown `kid`, so a
//! rotated key is picked up without waiting for the next period.

mod fetch;

use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::Value;

pub use fetch::{JwksSource, fetch, spawn_refresher, start_refresher};

/// Which kind of key an algorithm needs. A key is only ever used with
/// algorithms of its own family: an RSA public key fed to HMAC is the
/// classic forgery (and would panic inside `jsonwebtoken`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// HS256/384/512: a shared secret.
    Hmac,
    /// RS* and PS*: an RSA public key.
    Rsa,
    /// ES256/ES384: an EC public key.
    Ec,
    /// EdDSA: an Ed25519 public key.
    Ed,
}

impl Family {
    /// The family `alg` belongs to.
    pub fn of(alg: Algorithm) -> Family {
        match alg {
            Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => Family::Hmac,
            Algorithm::ES256 | Algorithm::ES384 => Family::Ec,
            Algorithm::EdDSA => Family::Ed,
            Algorithm::RS256
            | Algorithm::RS384
            | Algorithm::RS512
            | Algorithm::PS256
            | Algorithm::PS384
            | Algorithm::PS512 => Family::Rsa,
        }
    }
}

/// One verification key.
#[derive(Clone)]
pub struct Key {
    /// The `kid` a token names to pick this key.
    pub kid: Option<String>,
    /// The one algorithm this key may verify, when known (a JWK's `alg`,
    /// or implied by an EC curve); otherwise any of its family.
    pub alg: Option<Algorithm>,
    /// The key's family.
    pub family: Family,
    /// The key itself.
    pub key: DecodingKey,
    /// An HMAC secret's keys with their pads computed once (one per hash),
    /// which verification uses instead of `key`.
    pub hmac: Option<Arc<HmacKeys>>,
}

/// One HMAC secret as ring keys for HS256, HS384 and HS512.
pub struct HmacKeys([ring::hmac::Key; 3]);

impl HmacKeys {
    /// The keys of `secret`.
    pub fn new(secret: &[u8]) -> HmacKeys {
        HmacKeys([
            ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret),
            ring::hmac::Key::new(ring::hmac::HMAC_SHA384, secret),
            ring::hmac::Key::new(ring::hmac::HMAC_SHA512, secret),
        ])
    }

    /// The key for `alg` (`None` for a non-HMAC algorithm).
    pub fn get(&self, alg: Algorithm) -> Option<&ring::hmac::Key> {
        match alg {
            Algorithm::HS256 => Some(&self.0[0]),
            Algorithm::HS384 => Some(&self.0[1]),
            Algorithm::HS512 => Some(&self.0[2]),
            _ => None,
        }
    }
}

impl Key {
    /// Whether this key may verify a token signed with `alg`.
    pub fn accepts(&self, alg: Algorithm) -> bool {
        Family::of(alg) == self.family && self.alg.is_none_or(|a| a == alg)
    }
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Key")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .field("family", &self.family)
            .finish_non_exhaustive()
    }
}

/// The usable keys of one JWKS document.
#[derive(Debug, Clone, Default)]
pub struct KeySet {
    keys: Vec<Key>,
}

impl KeySet {
    /// Parses a JWKS document. Keys for encryption (`use: enc`) or of a kind
    /// we cannot verify with are skipped, each with a reason in the second
    /// value (for the log); a document with no usable key is an error, so
    /// a refresh never replaces a working set with an empty one.
    pub fn parse(bytes: &[u8]) -> Result<(KeySet, Vec<String>), String> {
        let doc: Value =
            serde_json::from_slice(bytes).map_err(|e| format!("JWKS is not JSON: {e}"))?;
        let Some(raw) = doc.get("keys").and_then(Value::as_array) else {
            return Err("JWKS has no \"keys\" array".to_string());
        };
        let mut keys = Vec::with_capacity(raw.len());
        let mut skipped = Vec::new();
        for (i, jwk) in raw.iter().enumerate() {
            match parse_jwk(jwk) {
                Ok(k) => keys.push(k),
                Err(why) => {
                    let kid = jwk.get("kid").and_then(Value::as_str).unwrap_or("-");
                    skipped.push(format!("key {i} (kid {kid:?}): {why}"));
                }
            }
        }
        if keys.is_empty() {
            return Err(format!("JWKS has no usable key ({})", skipped.join("; ")));
        }
        Ok((KeySet { keys }, skipped))
    }

    /// A set of keys built elsewhere (inline PEM keys, secrets).
    pub fn from_keys(keys: Vec<Key>) -> KeySet {
        KeySet { keys }
    }

    /// The key named `kid`. A linear scan: sets hold a handful of keys,
    /// where comparing a few short strings beats hashing one.
    pub fn find(&self, kid: &str) -> Option<&Key> {
        self.keys.iter().find(|k| k.kid.as_deref() == Some(kid))
    }

    /// Every key, in document order.
    pub fn keys(&self) -> &[Key] {
        &self.keys
    }
}

fn field<'a>(jwk: &'a Value, name: &str) -> Result<&'a str, String> {
    jwk.get(name)
        .and_then(Value::as_str)
        .ok_or_else(|| format!("no {name:?}"))
}

fn parse_jwk(jwk: &Value) -> Result<Key, String> {
    if jwk.get("use").and_then(Value::as_str) == Some("enc") {
        return Err("an encryption key (use: enc)".to_string());
    }
    let alg = match jwk.get("alg").and_then(Value::as_str) {
        None => None,
        Some(a) => Some(Algorithm::from_str(a).map_err(|_| format!("unsupported alg {a:?}"))?),
    };
    let bad = |e: jsonwebtoken::errors::Error| format!("bad key material: {e}");
    let kty = field(jwk, "kty")?;
    let mut hmac = None;
    let (family, key, implied) = match kty {
        "RSA" => {
            let key = DecodingKey::from_rsa_components(field(jwk, "n")?, field(jwk, "e")?)
                .map_err(bad)?;
            (Family::Rsa, key, None)
        }
        "EC" => {
            let implied = match field(jwk, "crv")? {
                "P-256" => Algorithm::ES256,
                "P-384" => Algorithm::ES384,
                other => return Err(format!("unsupported curve {other:?}")),
            };
            let key =
                DecodingKey::from_ec_components(field(jwk, "x")?, field(jwk, "y")?).map_err(bad)?;
            (Family::Ec, key, Some(implied))
        }
        "OKP" => {
            let crv = field(jwk, "crv")?;
            if crv != "Ed25519" {
                return Err(format!("unsupported curve {crv:?}"));
            }
            let key = DecodingKey::from_ed_components(field(jwk, "x")?).map_err(bad)?;
            (Family::Ed, key, Some(Algorithm::EdDSA))
        }
        "oct" => {
            let secret = URL_SAFE_NO_PAD
                .decode(field(jwk, "k")?)
                .map_err(|_| "\"k\" is not base64url".to_string())?;
            let mut key = crate::auth::jwt::key_from_secret(&secret, None);
            hmac = key.hmac.take();
            (Family::Hmac, key.key, None)
        }
        other => return Err(format!("unsupported kty {other:?}")),
    };
    if let Some(a) = alg
        && (Family::of(a) != family || implied.is_some_and(|i| i != a))
    {
        return Err(format!("alg {a:?} does not fit a {kty} key"));
    }
    Ok(Key {
        kid: jwk.get("kid").and_then(Value::as_str).map(str::to_string),
        alg: alg.or(implied),
        family,
        key,
        hmac,
    })
}

/// A key set that a background task replaces, read per request without a
/// lock (one `ArcSwap` load).
///
/// A request that meets an unknown `kid` (or runs before the first fetch)
/// can wait for the refresher: [`JwksCache::fetches`], then
/// [`JwksCache::request_refresh`], then [`JwksCache::fetched_since`]. All
/// of it is atomics and [`tokio::sync::Notify`], so it works from any
/// thread and from `!Send` futures, and no lock is held across an await.
pub struct JwksCache {
    set: ArcSwap<KeySet>,
    /// Unix seconds of the last early refresh granted; `NEVER` before one.
    last_early: AtomicU64,
    /// Least time between two early refreshes, so tokens with made-up
    /// `kid`s cannot turn into a flood of fetches.
    min_early: u64,
    /// Wakes the refresher: an early refresh was granted, or the cache is
    /// gone (its `Drop`). Shared with the refresher, which holds only a
    /// `Weak` to the cache between fetches.
    wake: Arc<tokio::sync::Notify>,
    /// Fetch attempts begun. Read by a request before it waits, so it
    /// waits for an attempt that began after it looked, not one in flight
    /// that may have read the document before the key was rotated in.
    started: AtomicU64,
    /// Fetch attempts completed (either way); attempts run one at a time,
    /// so the `n`th completion is the `n`th attempt's.
    completed: AtomicU64,
    /// Whether a fetched set was ever stored.
    loaded: AtomicBool,
    /// Told after each completed attempt.
    done: tokio::sync::Notify,
}

const NEVER: u64 = u64::MAX;

impl JwksCache {
    /// A cache holding `initial`, granting at most one early refresh per
    /// `min_early_interval`.
    pub fn new(initial: KeySet, min_early_interval: Duration) -> JwksCache {
        JwksCache {
            set: ArcSwap::from_pointee(initial),
            last_early: AtomicU64::new(NEVER),
            min_early: min_early_interval.as_secs(),
            wake: Arc::new(tokio::sync::Notify::new()),
            started: AtomicU64::new(0),
            completed: AtomicU64::new(0),
            loaded: AtomicBool::new(false),
            done: tokio::sync::Notify::new(),
        }
    }

    /// The current set.
    pub fn current(&self) -> arc_swap::Guard<Arc<KeySet>> {
        self.set.load()
    }

    /// Replaces the set with the one in `bytes`; on a bad document the last
    /// good set stays and the error says why. Returns the skipped-key notes.
    pub fn refresh_from(&self, bytes: &[u8]) -> Result<Vec<String>, String> {
        let (set, skipped) = KeySet::parse(bytes)?;
        self.set.store(Arc::new(set));
        self.loaded.store(true, Ordering::Release);
        Ok(skipped)
    }

    /// Whether a set was ever stored by [`JwksCache::refresh_from`] (the
    /// refresher's first good fetch).
    pub fn loaded(&self) -> bool {
        self.loaded.load(Ordering::Acquire)
    }

    /// Asks the refresher for an early fetch (a token named an unknown
    /// `kid`); granted at most once per interval. Returns whether it was.
    pub fn request_refresh(&self, now: u64) -> bool {
        let last = self.last_early.load(Ordering::Relaxed);
        if last != NEVER && now.saturating_sub(last) < self.min_early {
            return false;
        }
        let granted = self
            .last_early
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok();
        if granted {
            // A permit is stored when the refresher is busy, so the
            // request is not lost.
            self.wake.notify_one();
        }
        granted
    }

    /// When the last early refresh was granted (Unix seconds), if ever.
    pub fn early_refresh_at(&self) -> Option<u64> {
        Some(self.last_early.load(Ordering::Relaxed)).filter(|&t| t != NEVER)
    }

    /// Waits until [`JwksCache::request_refresh`] grants a refresh.
    pub async fn refresh_requested(&self) {
        self.wake.notified().await;
    }

    /// A mark for [`JwksCache::fetched_since`]: the number of fetch
    /// attempts begun so far. Read it before or after the failed lookup
    /// (either is right), then ask for the refresh.
    pub fn fetches(&self) -> u64 {
        self.started.load(Ordering::Acquire)
    }

    /// Waits until a fetch attempt begun after `seen` (from
    /// [`JwksCache::fetches`]) has completed, successfully or not, or
    /// `timeout` passes; returns whether one did. Needs a tokio timer
    /// (any runtime); the future is `Send` but need not be.
    pub async fn fetched_since(&self, seen: u64, timeout: Duration) -> bool {
        self.completed_reaches(seen.saturating_add(1), timeout)
            .await
    }

    /// Waits until the first fetch attempt has completed (it began when
    /// the refresher started), or `timeout` passes; returns
    /// [`JwksCache::loaded`]. Returns at once after that first attempt,
    /// even a failed one, so requests do not queue behind a server that
    /// is down.
    pub async fn first_fetch(&self, timeout: Duration) -> bool {
        self.completed_reaches(1, timeout).await;
        self.loaded()
    }

    async fn completed_reaches(&self, target: u64, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let done = self.done.notified();
            let mut done = std::pin::pin!(done);
            // Registered before the check, so a completion between the
            // check and the await still wakes this waiter.
            done.as_mut().enable();
            if self.completed.load(Ordering::Acquire) >= target {
                return true;
            }
            if tokio::time::timeout_at(deadline, done).await.is_err() {
                return self.completed.load(Ordering::Acquire) >= target;
            }
        }
    }

    /// The refresher begins an attempt.
    fn begin_fetch(&self) {
        self.started.fetch_add(1, Ordering::AcqRel);
    }

    /// The refresher completed an attempt (its set, if any, is stored).
    fn end_fetch(&self) {
        self.completed.fetch_add(1, Ordering::AcqRel);
        self.done.notify_waiters();
    }
}

impl Drop for JwksCache {
    fn drop(&mut self) {
        // The refresher sleeps on `wake` holding only a `Weak`: tell it
        // now rather than at its next period.
        self.wake.notify_one();
    }
}

#[cfg(test)]
#[path = "jwks/tests.rs"]
mod tests;

//! JWT (RFC 7519) verification for the `jwt` policy: a [`Verifier`] built
//! once from config (inline or file keys, a JWKS cache, allowed
//! algorithms, leeway, `iss`, `aud`, required claims) whose
//! [`Verifier::verify`] checks one compact JWS token. Signatures are
//! checked by `jsonwebtoken` over ring; the header, time and claim rules
//! are ours so that `now` is a parameter (tests need no clock) and each
//! refusal says plainly why ([`JwtError`]).
//!
//! Cost per request: two base64url decodes and two small JSON parses
//! (header, claims), one `ArcSwap` load when a JWKS is configured, and the
//! signature itself: HMAC is about a microsecond, RS256 verification tens
//! of microseconds, ES256/EdDSA in between. The lead measures the real
//! figures in bench/.

mod claims;
mod error;
pub mod extract;

use std::path::Path;
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::{Map, Value};

pub use claims::{ClaimError, Claims};
pub use error::{JwtError, challenge};

use super::jwks::{Family, HmacKeys, JwksCache, Key, KeySet};

/// What a [`Verifier`] is built from (the policy's options, resolved).
#[derive(Default)]
pub struct VerifierConfig {
    /// Keys given inline or from files (see [`key_from_pem`],
    /// [`key_from_secret`], [`key_from_file`]).
    pub keys: Vec<Key>,
    /// A JWKS set refreshed in the background, searched after `keys`.
    pub jwks: Option<Arc<JwksCache>>,
    /// Algorithms a token may use; anything else is refused before any key
    /// is touched (never `none`: `jsonwebtoken` has no such algorithm).
    pub algorithms: Vec<Algorithm>,
    /// Seconds of clock skew allowed on `exp` and `nbf`.
    pub leeway: u64,
    /// Accepted `iss` values; empty: not checked.
    pub issuers: Vec<String>,
    /// Accepted `aud` values (any one in the token suffices); empty: not
    /// checked.
    pub audiences: Vec<String>,
    /// Claims that must be present (e.g. `exp`, `sub`).
    pub required_claims: Vec<String>,
    /// Keys may also come with each call ([`Verifier::verify_with`]: a
    /// consumer's own key), so a verifier without `keys` or `jwks` is fine.
    pub keys_per_call: bool,
}

type PemParser = fn(&[u8]) -> jsonwebtoken::errors::Result<DecodingKey>;

/// A verification key from PEM text: an RSA, EC (P-256/P-384) or Ed25519
/// public key (`PUBLIC KEY` or `RSA PUBLIC KEY`).
pub fn key_from_pem(pem: &[u8], kid: Option<String>) -> Result<Key, String> {
    let tries: [(Family, PemParser); 3] = [
        (Family::Rsa, DecodingKey::from_rsa_pem),
        (Family::Ec, DecodingKey::from_ec_pem),
        (Family::Ed, DecodingKey::from_ed_pem),
    ];
    tries
        .into_iter()
        .find_map(|(family, parse)| {
            parse(pem).ok().map(|key| Key {
                hmac: None,
                kid: kid.clone(),
                alg: None,
                family,
                key,
            })
        })
        .ok_or_else(|| "not a PEM RSA, EC or Ed25519 public key".to_string())
}

/// An HMAC key from its secret bytes.
pub fn key_from_secret(secret: &[u8], kid: Option<String>) -> Key {
    Key {
        hmac: Some(Arc::new(HmacKeys::new(secret))),
        kid,
        alg: None,
        family: Family::Hmac,
        key: DecodingKey::from_secret(secret),
    }
}

/// A public key from a PEM file; the error names the file.
pub fn key_from_file(path: &Path, kid: Option<String>) -> Result<Key, String> {
    let pem = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    key_from_pem(&pem, kid).map_err(|e| format!("{}: {e}", path.display()))
}

/// Checks tokens against one policy's keys and rules. Built once per
/// config; [`Verifier::verify`] takes `&self` and is safe to share.
pub struct Verifier {
    keys: KeySet,
    jwks: Option<Arc<JwksCache>>,
    algorithms: Vec<Algorithm>,
    leeway: u64,
    issuers: Vec<String>,
    audiences: Vec<String>,
    required: Vec<String>,
}

#[derive(serde::Deserialize)]
struct Header {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
}

impl Verifier {
    /// A verifier for `cfg`, or why it cannot work (no algorithm, no key,
    /// an algorithm no configured key could verify).
    pub fn new(cfg: VerifierConfig) -> Result<Verifier, String> {
        if cfg.algorithms.is_empty() {
            return Err("no algorithm allowed".to_string());
        }
        if cfg.keys.is_empty() && cfg.jwks.is_none() && !cfg.keys_per_call {
            return Err("no key and no JWKS".to_string());
        }
        if cfg.jwks.is_none()
            && !cfg.keys_per_call
            && let Some(alg) = cfg
                .algorithms
                .iter()
                .find(|a| !cfg.keys.iter().any(|k| k.accepts(**a)))
        {
            return Err(format!("no configured key can verify {alg:?}"));
        }
        Ok(Verifier {
            keys: KeySet::from_keys(cfg.keys),
            jwks: cfg.jwks,
            algorithms: cfg.algorithms,
            leeway: cfg.leeway,
            issuers: cfg.issuers,
            audiences: cfg.audiences,
            required: cfg.required_claims,
        })
    }

    /// Verifies `token` at `now` (Unix seconds): signature first, then
    /// `exp`/`nbf` (with leeway), `iss`, `aud` and required claims.
    pub fn verify(&self, token: &str, now: u64) -> Result<Claims, JwtError> {
        self.verify_inner(token, now, None)
    }

    /// Verifies `token` with `key` alone (a consumer's own key, which
    /// states its one algorithm), under the same rules as [`Verifier::verify`].
    pub fn verify_with(&self, token: &str, now: u64, key: &Key) -> Result<Claims, JwtError> {
        self.verify_inner(token, now, Some(key))
    }

    /// Whether the verifier has keys of its own (inline, files or a JWKS).
    pub fn has_keys(&self) -> bool {
        !self.keys.keys().is_empty() || self.jwks.is_some()
    }

    fn verify_inner(&self, token: &str, now: u64, only: Option<&Key>) -> Result<Claims, JwtError> {
        let mut parts = token.split('.');
        let (Some(h64), Some(p64), Some(sig), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(JwtError::Malformed("not three dot-separated parts"));
        };
        let header: Header = decode_json(h64).ok_or(JwtError::Malformed("bad header"))?;
        let alg: Algorithm = header
            .alg
            .parse()
            .map_err(|_| JwtError::AlgorithmNotAllowed)?;
        if !self.algorithms.contains(&alg) {
            return Err(JwtError::AlgorithmNotAllowed);
        }
        if sig.is_empty()
            || !sig
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(JwtError::Malformed("signature is not base64url"));
        }
        // Signed message = the first two parts with their dot, as sent.
        let message = &token.as_bytes()[..h64.len() + 1 + p64.len()];
        match only {
            Some(key) if key.accepts(alg) => {
                if !signature_ok(key, sig, message, alg) {
                    return Err(JwtError::BadSignature);
                }
            }
            // The consumer's key is for another algorithm.
            Some(_) => return Err(JwtError::AlgorithmNotAllowed),
            None => self.check_signature(header.kid.as_deref(), alg, message, sig, now)?,
        }
        let claims: Map<String, Value> =
            decode_json(p64).ok_or(JwtError::Malformed("claims are not a JSON object"))?;
        let claims = Claims::new(claims);
        self.check_claims(&claims, now)?;
        Ok(claims)
    }

    fn check_signature(
        &self,
        kid: Option<&str>,
        alg: Algorithm,
        message: &[u8],
        sig: &str,
        now: u64,
    ) -> Result<(), JwtError> {
        let jwks = self.jwks.as_ref().map(|c| c.current());
        let jwks_keys = jwks.as_ref().map_or(&[][..], |s| s.keys());
        let candidates = self.keys.keys().iter().chain(jwks_keys);
        let mut tried_any = false;
        for key in candidates {
            // A key without a kid (one inline key) serves any token.
            if let (Some(want), Some(have)) = (kid, key.kid.as_deref())
                && want != have
            {
                continue;
            }
            // The family check is what keeps an RSA key away from HMAC
            // (forgery) and from jsonwebtoken's panicking paths.
            if !key.accepts(alg) {
                continue;
            }
            tried_any = true;
            // An error is a signature that cannot be decoded for this key
            // (wrong length): as bad as a mismatch.
            if signature_ok(key, sig, message, alg) {
                return Ok(());
            }
        }
        if tried_any {
            return Err(JwtError::BadSignature);
        }
        match (kid, &self.jwks) {
            (Some(_), Some(cache)) => {
                // Maybe a key rotated in since the last fetch.
                cache.request_refresh(now);
                Err(JwtError::UnknownKid)
            }
            (Some(_), None) => Err(JwtError::UnknownKid),
            (None, _) => Err(JwtError::BadSignature),
        }
    }

    fn check_claims(&self, claims: &Claims, now: u64) -> Result<(), JwtError> {
        if let Some(exp) = claims.time("exp")? {
            // RFC 7519 4.1.4: not accepted on or after exp.
            if now >= exp.saturating_add(self.leeway) {
                return Err(JwtError::Expired);
            }
        }
        if let Some(nbf) = claims.time("nbf")?
            && now.saturating_add(self.leeway) < nbf
        {
            return Err(JwtError::NotYetValid);
        }
        if !self.issuers.is_empty() {
            match claims.get("iss") {
                None => return Err(JwtError::MissingClaim("iss".to_string())),
                Some(Value::String(iss)) if self.issuers.iter().any(|i| i == iss) => {}
                Some(_) => return Err(JwtError::WrongIssuer),
            }
        }
        if !self.audiences.is_empty() {
            let ok = |a: &Value| {
                a.as_str()
                    .is_some_and(|a| self.audiences.iter().any(|x| x == a))
            };
            match claims.get("aud") {
                None => return Err(JwtError::MissingClaim("aud".to_string())),
                Some(Value::Array(auds)) if auds.iter().any(ok) => {}
                Some(a @ Value::String(_)) if ok(a) => {}
                Some(_) => return Err(JwtError::WrongAudience),
            }
        }
        if let Some(missing) = self.required.iter().find(|c| claims.get(c).is_none()) {
            return Err(JwtError::MissingClaim(missing.clone()));
        }
        Ok(())
    }
}

/// Whether `sig` (base64url) signs `message` with `key` by `alg` (a key
/// already known to accept `alg`). HMAC goes straight to ring with the
/// key's precomputed pads; the rest through jsonwebtoken. A signature that
/// cannot be decoded for the key is as bad as a mismatch.
fn signature_ok(key: &Key, sig: &str, message: &[u8], alg: Algorithm) -> bool {
    if let Some(hmac) = key.hmac.as_ref().and_then(|h| h.get(alg)) {
        // HS512's tag is the longest: 64 bytes.
        let mut tag = [0u8; 64];
        return match URL_SAFE_NO_PAD.decode_slice(sig, &mut tag) {
            Ok(n) => ring::hmac::verify(hmac, message, &tag[..n]).is_ok(),
            Err(_) => false,
        };
    }
    matches!(
        jsonwebtoken::crypto::verify(sig, message, &key.key, alg),
        Ok(true)
    )
}

/// The string claim `name` of `token`, read WITHOUT verifying anything:
/// only to pick the consumer whose key then verifies the token.
pub fn unverified_claim(token: &str, name: &str) -> Option<String> {
    let payload = token.split('.').nth(1)?;
    let claims: Map<String, Value> = decode_json(payload)?;
    match claims.get(name)? {
        Value::String(s) => Some(s.clone()),
        _ => None,
    }
}

fn decode_json<T: serde::de::DeserializeOwned>(part: &str) -> Option<T> {
    let raw = URL_SAFE_NO_PAD.decode(part).ok()?;
    serde_json::from_slice(&raw).ok()
}

#[cfg(test)]
#[path = "jwt/tests.rs"]
pub(crate) mod tests;

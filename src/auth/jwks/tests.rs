//! JWKS documents built from keys generated in the test; rotation through
//! [`JwksCache`]; waiting for a fetch. The refresher against real servers
//! is tested in `fetch/tests.rs`.

use jsonwebtoken::EncodingKey;
use serde_json::json;

use super::*;
use crate::auth::jwt::{JwtError, Verifier, VerifierConfig};

pub(super) const NOW: u64 = 1_700_000_000;

/// (signing key, JWK) for a fresh EC P-256 or Ed25519 key named `kid`.
pub(super) fn jwk(alg: &'static rcgen::SignatureAlgorithm, kid: &str) -> (EncodingKey, Value) {
    let kp = rcgen::KeyPair::generate_for(alg).expect("key generation");
    let raw = kp.public_key_raw();
    let pem = kp.serialize_pem();
    if raw.len() == 65 {
        let (x, y) = raw[1..].split_at(32);
        let enc = EncodingKey::from_ec_pem(pem.as_bytes()).expect("ec");
        let jwk = json!({"kty": "EC", "crv": "P-256", "kid": kid, "use": "sig",
            "x": URL_SAFE_NO_PAD.encode(x), "y": URL_SAFE_NO_PAD.encode(y)});
        (enc, jwk)
    } else {
        let enc = EncodingKey::from_ed_pem(pem.as_bytes()).expect("ed");
        let jwk = json!({"kty": "OKP", "crv": "Ed25519", "kid": kid, "alg": "EdDSA",
            "x": URL_SAFE_NO_PAD.encode(raw)});
        (enc, jwk)
    }
}

pub(super) fn doc(keys: &[&Value]) -> Vec<u8> {
    serde_json::to_vec(&json!({ "keys": keys })).expect("json")
}

pub(super) fn token(alg: Algorithm, kid: &str, key: &EncodingKey) -> String {
    crate::auth::jwt::tests::sign(alg, Some(kid), key, &json!({"sub": kid}))
}

pub(super) fn verifier(cache: &Arc<JwksCache>) -> Verifier {
    Verifier::new(VerifierConfig {
        jwks: Some(cache.clone()),
        algorithms: vec![Algorithm::ES256, Algorithm::EdDSA],
        ..VerifierConfig::default()
    })
    .expect("verifier")
}

#[test]
fn parses_keys_and_skips_what_it_cannot_use() {
    let (_, ec) = jwk(&rcgen::PKCS_ECDSA_P256_SHA256, "ec1");
    let (_, ed) = jwk(&rcgen::PKCS_ED25519, "ed1");
    let rsa = json!({"kty": "RSA", "kid": "r1", "alg": "RS256", "n": "sXchDaQebHnPiGvyDOAT4saGEUetSyo9MKLOoWFsueri23bOdgWp4Dy1WlUzewbgBHod5pcM9H95GQRV3JDXboIRROSBigeC5yjU1hGzHHyXss8UDprecbAYxknTcQkhslANGRUZmdTOQ5qTRsLAt6BTYuyvVRdhS8exSZEy_c4gs_7svlJJQ4H9_NxsiIoLwAEk7-Q3UXERGYw_75IDrGA84-lA_-Ct4eTlXHBIY2EaV7t7LjJaynVJCpkv4LKjTTAumiGUIuQhrNhZLuF_RJLqHpM2kgWFLU7-VTdL1VbC2tejvcI2BlMkEpk1BzBZI0KQB0GaDWFLN-aEAw3vRw", "e": "AQAB"});
    let enc = json!({"kty": "RSA", "kid": "e1", "use": "enc", "n": "AQAB", "e": "AQAB"});
    let p521 = json!({"kty": "EC", "crv": "P-521", "kid": "p5", "x": "AA", "y": "AA"});
    let mismatch = json!({"kty": "OKP", "crv": "Ed25519", "kid": "m", "alg": "RS256", "x": "AA"});
    let (set, skipped) =
        KeySet::parse(&doc(&[&ec, &ed, &rsa, &enc, &p521, &mismatch])).expect("usable keys");
    assert_eq!(set.keys().len(), 3);
    assert_eq!(
        set.find("ec1").map(|k| (k.family, k.alg)),
        Some((Family::Ec, Some(Algorithm::ES256)))
    );
    assert_eq!(set.find("ed1").map(|k| k.family), Some(Family::Ed));
    assert_eq!(set.find("r1").map(|k| k.alg), Some(Some(Algorithm::RS256)));
    assert!(set.find("e1").is_none());
    assert_eq!(skipped.len(), 3, "{skipped:?}");
    assert!(
        skipped[0].contains("use: enc") && skipped[1].contains("P-521"),
        "{skipped:?}"
    );
    assert!(KeySet::parse(b"{}").is_err());
    assert!(KeySet::parse(b"not json").is_err());
    assert!(KeySet::parse(&doc(&[&enc])).is_err_and(|e| e.contains("no usable key")));
}

#[test]
fn rotation_is_picked_up_and_unknown_kids_refresh_at_most_once_per_interval() {
    let (enc_a, a) = jwk(&rcgen::PKCS_ECDSA_P256_SHA256, "a");
    let (enc_b, b) = jwk(&rcgen::PKCS_ED25519, "b");
    let (set, _) = KeySet::parse(&doc(&[&a])).expect("set");
    let cache = Arc::new(JwksCache::new(set, Duration::from_secs(30)));
    let v = verifier(&cache);
    assert!(v.verify(&token(Algorithm::ES256, "a", &enc_a), NOW).is_ok());
    let tb = token(Algorithm::EdDSA, "b", &enc_b);
    // Unknown kid: refused, and an early refresh is granted (used up).
    assert_eq!(v.verify(&tb, NOW), Err(JwtError::UnknownKid));
    assert!(
        !cache.request_refresh(NOW + 29),
        "rate-limited within the interval"
    );
    assert_eq!(v.verify(&tb, NOW + 1), Err(JwtError::UnknownKid));
    assert!(
        cache.request_refresh(NOW + 30),
        "granted once the interval passed"
    );
    // A bad document keeps the last good set.
    assert!(cache.refresh_from(b"{\"keys\": []}").is_err());
    assert!(v.verify(&token(Algorithm::ES256, "a", &enc_a), NOW).is_ok());
    // The rotated set: b arrives, a leaves.
    cache.refresh_from(&doc(&[&b])).expect("refresh");
    assert_eq!(
        v.verify(&tb, NOW).map(|c| c.str("sub").map(str::to_string)),
        Ok(Some("b".into()))
    );
    assert_eq!(
        v.verify(&token(Algorithm::ES256, "a", &enc_a), NOW),
        Err(JwtError::UnknownKid)
    );
}

#[tokio::test(start_paused = true)]
async fn waiting_for_a_fetch_waits_for_one_begun_after_the_mark() {
    let cache = Arc::new(JwksCache::new(KeySet::default(), Duration::ZERO));
    assert!(!cache.loaded());
    // Nothing fetched, nothing begun: the wait runs out.
    assert!(!cache.first_fetch(Duration::from_secs(1)).await);
    let seen = cache.fetches();
    let waiter = tokio::spawn({
        let cache = cache.clone();
        async move { cache.fetched_since(seen, Duration::from_secs(10)).await }
    });
    tokio::task::yield_now().await;
    cache.begin_fetch();
    let (_, a) = jwk(&rcgen::PKCS_ED25519, "a");
    cache.refresh_from(&doc(&[&a])).expect("set");
    cache.end_fetch();
    assert!(waiter.await.expect("waiter"));
    assert!(cache.loaded() && cache.first_fetch(Duration::ZERO).await);
    // An attempt already in flight when the mark is read does not count:
    // it may have read the document before the key was rotated in.
    cache.begin_fetch();
    let seen = cache.fetches();
    cache.end_fetch();
    assert!(!cache.fetched_since(seen, Duration::from_secs(1)).await);
    cache.begin_fetch();
    cache.end_fetch();
    assert!(cache.fetched_since(seen, Duration::from_secs(1)).await);
    // A failed first attempt ends the first wait too, unloaded.
    let fresh = JwksCache::new(KeySet::default(), Duration::ZERO);
    fresh.begin_fetch();
    fresh.end_fetch();
    assert!(!fresh.first_fetch(Duration::from_secs(1)).await);
    assert_eq!(fresh.fetches(), 1);
}

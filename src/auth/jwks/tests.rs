//! JWKS documents built from keys generated in the test; rotation through
//! [`JwksCache`]; the refresher against a file and a 127.0.0.1 server.

use std::sync::Mutex;
use std::sync::atomic::AtomicUsize;

use jsonwebtoken::EncodingKey;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;
use crate::auth::jwt::{JwtError, Verifier, VerifierConfig};

const NOW: u64 = 1_700_000_000;

/// (signing key, JWK) for a fresh EC P-256 or Ed25519 key named `kid`.
fn jwk(alg: &'static rcgen::SignatureAlgorithm, kid: &str) -> (EncodingKey, Value) {
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

fn doc(keys: &[&Value]) -> Vec<u8> {
    serde_json::to_vec(&json!({ "keys": keys })).expect("json")
}

fn token(alg: Algorithm, kid: &str, key: &EncodingKey) -> String {
    crate::auth::jwt::tests::sign(alg, Some(kid), key, &json!({"sub": kid}))
}

fn verifier(cache: &Arc<JwksCache>) -> Verifier {
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

/// A 127.0.0.1 server answering every GET with the current `body`.
async fn serve(body: Arc<Mutex<Vec<u8>>>, hits: Arc<AtomicUsize>) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let mut buf = vec![0u8; 4096];
            let mut got = 0;
            while !buf[..got].windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut buf[got..]).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => got += n,
                }
            }
            hits.fetch_add(1, Ordering::SeqCst);
            let body = body.lock().expect("lock").clone();
            let head = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                body.len()
            );
            let _ = s.write_all(head.as_bytes()).await;
            let _ = s.write_all(&body).await;
        }
    });
    addr
}

async fn until(what: &str, mut ok: impl FnMut() -> bool) {
    for _ in 0..500 {
        if ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test]
async fn refresher_fetches_by_url_on_early_request_and_keeps_last_good() {
    let (enc_a, a) = jwk(&rcgen::PKCS_ECDSA_P256_SHA256, "a");
    let (enc_b, b) = jwk(&rcgen::PKCS_ED25519, "b");
    let body = Arc::new(Mutex::new(doc(&[&a])));
    let hits = Arc::new(AtomicUsize::new(0));
    let addr = serve(body.clone(), hits.clone()).await;
    let source = JwksSource::Url {
        uri: format!("http://{addr}/jwks.json").parse().expect("uri"),
        tls: None,
    };
    let first = fetch(&source, Duration::from_secs(5))
        .await
        .expect("first fetch");
    let (set, _) = KeySet::parse(&first).expect("set");
    let cache = Arc::new(JwksCache::new(set, Duration::from_secs(60)));
    let errors = Arc::new(Mutex::new(Vec::new()));
    let errs = errors.clone();
    // A period far beyond the test: only early requests fetch.
    // The upstream client's futures are not Send: moongate runs them on
    // current-thread runtimes, and so does this test.
    let local = tokio::task::LocalSet::new();
    let task = local.spawn_local(refresh_loop(
        cache.clone(),
        source,
        Duration::from_secs(3600),
        Duration::from_secs(5),
        move |e| errs.lock().expect("lock").push(e),
    ));
    let v = verifier(&cache);
    local
        .run_until(async {
            assert!(v.verify(&token(Algorithm::ES256, "a", &enc_a), NOW).is_ok());
            *body.lock().expect("lock") = doc(&[&a, &b]);
            let tb = token(Algorithm::EdDSA, "b", &enc_b);
            assert_eq!(v.verify(&tb, NOW), Err(JwtError::UnknownKid));
            until("the rotated key", || v.verify(&tb, NOW + 1).is_ok()).await;
            assert_eq!(hits.load(Ordering::SeqCst), 2);
            // A broken document later: the last good set stays, the error is told.
            *body.lock().expect("lock") = b"<html>".to_vec();
            assert!(cache.request_refresh(NOW + 61));
            until("the error report", || {
                !errors.lock().expect("lock").is_empty()
            })
            .await;
            assert!(v.verify(&tb, NOW).is_ok());
        })
        .await;
    task.abort();
}

#[tokio::test]
async fn file_source_and_fetch_errors() {
    let (_, a) = jwk(&rcgen::PKCS_ED25519, "a");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("jwks.json");
    std::fs::write(&path, doc(&[&a])).expect("write");
    let got = fetch(&JwksSource::File(path.clone()), Duration::from_secs(1))
        .await
        .expect("file");
    assert!(KeySet::parse(&got).is_ok());
    let err = fetch(
        &JwksSource::File(dir.path().join("gone")),
        Duration::from_secs(1),
    )
    .await;
    assert!(err.is_err_and(|e| e.contains("cannot read")));
    // Nothing listens on the port a closed listener had.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = closed.local_addr().expect("addr").port();
    drop(closed);
    let uri = format!("http://127.0.0.1:{port}/").parse().expect("uri");
    let err = fetch(&JwksSource::Url { uri, tls: None }, Duration::from_secs(2)).await;
    assert!(err.is_err_and(|e| e.starts_with("GET http://127.0.0.1")));
    let uri = "https://127.0.0.1/".parse().expect("uri");
    let err = fetch(&JwksSource::Url { uri, tls: None }, Duration::from_secs(2)).await;
    assert!(err.is_err_and(|e| e.contains("needs TLS")));
}

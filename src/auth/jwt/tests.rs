//! Tokens signed in the test with freshly generated keys (rcgen/ring for
//! EC and Ed25519, the `openssl` CLI for RSA, which ring cannot generate),
//! verified through [`Verifier`].

use jsonwebtoken::{EncodingKey, Header, encode};
use serde_json::json;

use super::*;

const NOW: u64 = 1_700_000_000;

/// A freshly generated key pair: (private PEM for signing, public PEM).
pub(crate) fn generate(alg: &'static rcgen::SignatureAlgorithm) -> (String, String) {
    let kp = rcgen::KeyPair::generate_for(alg).expect("key generation");
    (kp.serialize_pem(), kp.public_key_pem())
}

/// A fresh 2048-bit RSA key pair from the openssl CLI (installed by
/// test.sh); fails loudly when it is missing.
pub(crate) fn generate_rsa() -> (String, String) {
    let run = |args: &[&str], input: Option<&[u8]>| -> String {
        use std::io::Write;
        let mut child = std::process::Command::new("openssl")
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run openssl ({e}): test.sh installs it"));
        if let Some(input) = input {
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(input)
                .expect("write");
        }
        let out = child.wait_with_output().expect("openssl output");
        assert!(out.status.success(), "openssl {args:?}: {out:?}");
        String::from_utf8(out.stdout).expect("PEM text")
    };
    let private = run(
        &[
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
        ],
        None,
    );
    let public = run(&["pkey", "-pubout"], Some(private.as_bytes()));
    (private, public)
}

pub(crate) fn sign(alg: Algorithm, kid: Option<&str>, key: &EncodingKey, claims: &Value) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_string);
    encode(&header, claims, key).expect("signing")
}

fn verifier(keys: Vec<Key>, algorithms: &[Algorithm]) -> Verifier {
    Verifier::new(VerifierConfig {
        keys,
        algorithms: algorithms.to_vec(),
        ..VerifierConfig::default()
    })
    .expect("verifier")
}

#[test]
fn each_algorithm_family_verifies_and_rejects_other_keys() {
    let (ec_priv, ec_pub) = generate(&rcgen::PKCS_ECDSA_P256_SHA256);
    let (ed_priv, ed_pub) = generate(&rcgen::PKCS_ED25519);
    let (rsa_priv, rsa_pub) = generate_rsa();
    let claims = json!({"sub": "alice", "exp": NOW + 60});
    let cases = [
        (
            Algorithm::HS256,
            EncodingKey::from_secret(b"0123456789abcdef0123456789abcdef"),
            key_from_secret(b"0123456789abcdef0123456789abcdef", None),
        ),
        (
            Algorithm::ES256,
            EncodingKey::from_ec_pem(ec_priv.as_bytes()).expect("ec"),
            key_from_pem(ec_pub.as_bytes(), None).expect("ec pub"),
        ),
        (
            Algorithm::EdDSA,
            EncodingKey::from_ed_pem(ed_priv.as_bytes()).expect("ed"),
            key_from_pem(ed_pub.as_bytes(), None).expect("ed pub"),
        ),
        (
            Algorithm::RS256,
            EncodingKey::from_rsa_pem(rsa_priv.as_bytes()).expect("rsa"),
            key_from_pem(rsa_pub.as_bytes(), None).expect("rsa pub"),
        ),
    ];
    for (alg, enc, dec) in cases {
        let token = sign(alg, None, &enc, &claims);
        let v = verifier(vec![dec.clone()], &[alg]);
        let got = v
            .verify(&token, NOW)
            .unwrap_or_else(|e| panic!("{alg:?}: {e}"));
        assert_eq!(got.str("sub"), Some("alice"));
        // One byte of the signature changed.
        let mut bad = token.clone().into_bytes();
        let last = bad.len() - 2;
        bad[last] = if bad[last] == b'A' { b'B' } else { b'A' };
        let bad = String::from_utf8(bad).expect("ascii");
        assert_eq!(v.verify(&bad, NOW), Err(JwtError::BadSignature), "{alg:?}");
        // Claims changed under the old signature.
        let parts: Vec<&str> = token.split('.').collect();
        let forged = URL_SAFE_NO_PAD.encode(br#"{"sub":"mallory","exp":1800000000}"#);
        let forged = format!("{}.{forged}.{}", parts[0], parts[2]);
        assert_eq!(
            v.verify(&forged, NOW),
            Err(JwtError::BadSignature),
            "{alg:?}"
        );
    }
    // A key of another family is never tried, whatever the token says.
    let rsa_key = key_from_pem(rsa_pub.as_bytes(), None).expect("rsa pub");
    let v = verifier(vec![rsa_key], &[Algorithm::RS256]);
    let hs = sign(
        Algorithm::HS256,
        None,
        &EncodingKey::from_secret(rsa_pub.as_bytes()),
        &claims,
    );
    assert_eq!(v.verify(&hs, NOW), Err(JwtError::AlgorithmNotAllowed));
    assert!(
        Verifier::new(VerifierConfig {
            keys: vec![key_from_pem(ec_pub.as_bytes(), None).expect("ec")],
            algorithms: vec![Algorithm::HS256],
            ..VerifierConfig::default()
        })
        .is_err_and(|e| e.contains("HS256"))
    );
}

#[test]
fn rsa_key_behind_hs256_is_no_forgery() {
    // The classic confusion: alg HS256 signed with the RSA public key's
    // bytes, sent to a verifier that allows both families.
    let (_, rsa_pub) = generate_rsa();
    let rsa_key = key_from_pem(rsa_pub.as_bytes(), None).expect("rsa pub");
    let hmac = key_from_secret(b"real secret", None);
    let v = verifier(vec![rsa_key, hmac], &[Algorithm::RS256, Algorithm::HS256]);
    let forged = sign(
        Algorithm::HS256,
        None,
        &EncodingKey::from_secret(rsa_pub.as_bytes()),
        &json!({"sub": "mallory"}),
    );
    assert_eq!(v.verify(&forged, NOW), Err(JwtError::BadSignature));
}

#[test]
fn time_issuer_audience_and_required_claims() {
    let enc = EncodingKey::from_secret(b"k");
    let v = Verifier::new(VerifierConfig {
        keys: vec![key_from_secret(b"k", None)],
        algorithms: vec![Algorithm::HS256, Algorithm::HS512],
        leeway: 30,
        issuers: vec!["https://issuer.example".into()],
        audiences: vec!["api".into(), "api2".into()],
        required_claims: vec!["exp".into(), "sub".into()],
        ..VerifierConfig::default()
    })
    .expect("verifier");
    let base = json!({"iss": "https://issuer.example", "aud": "api", "sub": "a", "exp": NOW + 10});
    let with = |k: &str, v: Value| {
        let mut c = base.clone();
        c[k] = v;
        sign(Algorithm::HS256, None, &enc, &c)
    };
    let without = |k: &str| {
        let mut c = base.clone();
        c.as_object_mut().expect("object").remove(k);
        sign(Algorithm::HS256, None, &enc, &c)
    };
    assert!(
        v.verify(&sign(Algorithm::HS512, None, &enc, &base), NOW)
            .is_ok()
    );
    assert_eq!(
        v.verify(&sign(Algorithm::HS384, None, &enc, &base), NOW),
        Err(JwtError::AlgorithmNotAllowed)
    );
    // exp with 30 s leeway: valid until exp + 30, refused from then on.
    assert!(v.verify(&with("exp", json!(NOW - 29)), NOW).is_ok());
    assert_eq!(
        v.verify(&with("exp", json!(NOW - 30)), NOW),
        Err(JwtError::Expired)
    );
    assert_eq!(
        v.verify(&with("exp", json!("tomorrow")), NOW),
        Err(JwtError::Malformed("a time claim is not a number"))
    );
    assert!(v.verify(&with("nbf", json!(NOW + 30)), NOW).is_ok());
    assert_eq!(
        v.verify(&with("nbf", json!(NOW + 31)), NOW),
        Err(JwtError::NotYetValid)
    );
    assert_eq!(
        v.verify(&with("iss", json!("https://evil.example")), NOW),
        Err(JwtError::WrongIssuer)
    );
    assert_eq!(
        v.verify(&without("iss"), NOW),
        Err(JwtError::MissingClaim("iss".into()))
    );
    assert!(
        v.verify(&with("aud", json!(["other", "api2"])), NOW)
            .is_ok()
    );
    assert_eq!(
        v.verify(&with("aud", json!(["other"])), NOW),
        Err(JwtError::WrongAudience)
    );
    assert_eq!(
        v.verify(&with("aud", json!("apix")), NOW),
        Err(JwtError::WrongAudience)
    );
    assert_eq!(
        v.verify(&without("aud"), NOW),
        Err(JwtError::MissingClaim("aud".into()))
    );
    assert_eq!(
        v.verify(&without("sub"), NOW),
        Err(JwtError::MissingClaim("sub".into()))
    );
    assert_eq!(
        v.verify(&without("exp"), NOW),
        Err(JwtError::MissingClaim("exp".into()))
    );
}

#[test]
fn malformed_tokens_say_so() {
    let v = verifier(vec![key_from_secret(b"k", None)], &[Algorithm::HS256]);
    let good = sign(
        Algorithm::HS256,
        None,
        &EncodingKey::from_secret(b"k"),
        &json!({}),
    );
    assert!(v.verify(&good, NOW).is_ok());
    let parts: Vec<&str> = good.split('.').collect();
    let none_hdr = URL_SAFE_NO_PAD.encode(br#"{"alg":"none"}"#);
    let cases = [
        ("", JwtError::Malformed("not three dot-separated parts")),
        ("a.b", JwtError::Malformed("not three dot-separated parts")),
        (
            "a.b.c.d",
            JwtError::Malformed("not three dot-separated parts"),
        ),
        ("!!.b.c", JwtError::Malformed("bad header")),
        (
            &format!("{none_hdr}.{}.", parts[1]),
            JwtError::AlgorithmNotAllowed,
        ),
        (
            &format!("{}.{}.", parts[0], parts[1]),
            JwtError::Malformed("signature is not base64url"),
        ),
        (
            &format!("{}.{}.@@", parts[0], parts[1]),
            JwtError::Malformed("signature is not base64url"),
        ),
    ];
    for (token, want) in cases {
        assert_eq!(v.verify(token, NOW), Err(want), "{token}");
    }
    // A correctly signed payload that is not an object.
    let msg = format!("{}.{}", parts[0], URL_SAFE_NO_PAD.encode(b"[1]"));
    let sig = jsonwebtoken::crypto::sign(
        msg.as_bytes(),
        &EncodingKey::from_secret(b"k"),
        Algorithm::HS256,
    )
    .expect("sign");
    assert_eq!(
        v.verify(&format!("{msg}.{sig}"), NOW),
        Err(JwtError::Malformed("claims are not a JSON object"))
    );
}

#[test]
fn kid_selects_among_inline_keys() {
    let v = verifier(
        vec![
            key_from_secret(b"one", Some("k1".into())),
            key_from_secret(b"two", Some("k2".into())),
        ],
        &[Algorithm::HS256],
    );
    let t2 = sign(
        Algorithm::HS256,
        Some("k2"),
        &EncodingKey::from_secret(b"two"),
        &json!({}),
    );
    assert!(v.verify(&t2, NOW).is_ok());
    let wrong = sign(
        Algorithm::HS256,
        Some("k1"),
        &EncodingKey::from_secret(b"two"),
        &json!({}),
    );
    assert_eq!(v.verify(&wrong, NOW), Err(JwtError::BadSignature));
    let unknown = sign(
        Algorithm::HS256,
        Some("k9"),
        &EncodingKey::from_secret(b"two"),
        &json!({}),
    );
    assert_eq!(v.verify(&unknown, NOW), Err(JwtError::UnknownKid));
    // Without a kid every key of the family is tried.
    let bare = sign(
        Algorithm::HS256,
        None,
        &EncodingKey::from_secret(b"two"),
        &json!({}),
    );
    assert!(v.verify(&bare, NOW).is_ok());
}

#[test]
fn key_files_and_bad_pem() {
    let (_, ec_pub) = generate(&rcgen::PKCS_ECDSA_P384_SHA384);
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("ec.pem");
    std::fs::write(&path, &ec_pub).expect("write");
    let key = key_from_file(&path, None).expect("ec key file");
    assert_eq!(key.family, Family::Ec);
    let err = key_from_file(&dir.path().join("nope.pem"), None).expect_err("missing");
    assert!(err.contains("cannot read"), "{err}");
    std::fs::write(&path, "not a key").expect("write");
    let err = key_from_file(&path, None).expect_err("garbage");
    assert!(err.contains("not a PEM"), "{err}");
}

#[test]
fn hmac_tags_of_each_hash_verify_through_the_precomputed_keys() {
    let secret = b"a secret of some thirty-two bytes";
    let claims = json!({"sub": "alice", "exp": NOW + 60});
    for alg in [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512] {
        let v = verifier(vec![key_from_secret(secret, None)], &[alg]);
        let token = sign(alg, None, &EncodingKey::from_secret(secret), &claims);
        assert_eq!(
            v.verify(&token, NOW)
                .ok()
                .and_then(|c| c.str("sub").map(str::to_owned)),
            Some("alice".to_owned()),
            "{alg:?}"
        );
        // A truncated tag, and one too long to decode into 64 bytes.
        let cut = &token[..token.len() - 4];
        assert_eq!(v.verify(cut, NOW), Err(JwtError::BadSignature), "{alg:?}");
        let long = format!("{token}{}", "A".repeat(100));
        assert_eq!(v.verify(&long, NOW), Err(JwtError::BadSignature), "{alg:?}");
    }
}

//! The `jwt` policy through the real server, with keys generated in the
//! test (ring through rcgen for EC and Ed25519, the `openssl` CLI for
//! RSA): HS256 with claim checks and the three places a token travels,
//! RS256 and ES256 from PEM keys, a JWKS file picked by `kid`, consumers'
//! own credentials with `acl`, and config errors with file:line.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::{Value, json};

use crate::support::{Moongate, Origin, check_one, client, echo};

/// Unix seconds now.
pub(crate) fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A token for `claims`, signed with `key` by `alg`, naming `kid`.
pub(crate) fn sign(alg: Algorithm, kid: Option<&str>, key: &EncodingKey, claims: &Value) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_string);
    encode(&header, claims, key).expect("signing")
}

/// A fresh EC P-256 or Ed25519 key: the signing key, the public PEM, and
/// its JWK (with `kid`).
pub(crate) fn keypair(
    alg: &'static rcgen::SignatureAlgorithm,
    kid: &str,
) -> (EncodingKey, String, Value) {
    let kp = rcgen::KeyPair::generate_for(alg).expect("key generation");
    let raw = kp.public_key_raw();
    if alg == &rcgen::PKCS_ED25519 {
        let enc = EncodingKey::from_ed_pem(kp.serialize_pem().as_bytes()).expect("ed key");
        let jwk = json!({"kty": "OKP", "crv": "Ed25519", "kid": kid, "alg": "EdDSA",
            "x": URL_SAFE_NO_PAD.encode(raw)});
        (enc, kp.public_key_pem(), jwk)
    } else {
        let enc = EncodingKey::from_ec_pem(kp.serialize_pem().as_bytes()).expect("ec key");
        let (x, y) = raw[1..].split_at(32);
        let jwk = json!({"kty": "EC", "crv": "P-256", "kid": kid, "alg": "ES256",
            "x": URL_SAFE_NO_PAD.encode(x), "y": URL_SAFE_NO_PAD.encode(y)});
        (enc, kp.public_key_pem(), jwk)
    }
}

/// A fresh 2048-bit RSA key from the openssl CLI (test.sh installs it):
/// the signing key and the public PEM.
pub(crate) fn rsa_keypair() -> (EncodingKey, String) {
    let run = |args: &[&str], input: Option<&[u8]>| -> Vec<u8> {
        use std::io::Write;
        let mut child = std::process::Command::new("openssl")
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run openssl ({e}): test.sh installs it"));
        if let Some(input) = input {
            let mut stdin = child.stdin.take().expect("stdin");
            stdin.write_all(input).expect("write");
        }
        let out = child.wait_with_output().expect("openssl output");
        assert!(out.status.success(), "openssl {args:?}: {out:?}");
        out.stdout
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
    let public = run(&["pkey", "-pubout"], Some(&private));
    let enc = EncodingKey::from_rsa_pem(&private).expect("rsa key");
    (enc, String::from_utf8(public).expect("PEM text"))
}

/// GET `path` with extra headers: the status, the `WWW-Authenticate`
/// value, and the upstream's view of the request (the echo JSON) when
/// it got there.
pub(crate) async fn get(
    mg: &Moongate,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, String, Option<Value>) {
    let mut req = client().get(mg.url(path));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.expect("GET");
    let status = resp.status().as_u16();
    let challenge = (resp.headers().get("www-authenticate"))
        .map(|v| v.to_str().unwrap_or("").to_owned())
        .unwrap_or_default();
    let body = resp.text().await.unwrap_or_default();
    let echoed = serde_json::from_str::<Value>(&body)
        .ok()
        .filter(|v| v.get("headers").is_some());
    (status, challenge, echoed)
}

/// The first value of header `name` the upstream received.
pub(crate) fn upstream_header<'a>(echoed: &'a Option<Value>, name: &str) -> Option<&'a str> {
    echoed.as_ref()?.get("headers")?.get(name)?.get(0)?.as_str()
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write");
    path.display().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hs256_checks_claims_and_finds_the_token_where_it_travels() {
    let origin = Origin::start(echo).await;
    let conf = format!(
        r#"[server]
listen = ["127.0.0.1:0"]
workers = 1
access_log = "off"

[upstream.o]
servers = [{{ addr = "{origin}" }}]

[[route]]
path = "/"
upstream = "o"
policies = [{{ use = "jwt", secret = "s3cret-s3cret-s3cret-s3cret-s3cr", realm = "api", issuers = ["https://idp"], audiences = ["todo"], leeway = "30s", required_claims = ["sub"], cookie = "jwt", query_arg = "access_token", consumer_claim = "sub", claims_to_headers = {{ sub = "X-User", roles = "X-Roles" }}, hide_credentials = true }}]
"#,
        origin = origin.addr
    );
    let mg = Moongate::start(&conf);
    let key = EncodingKey::from_secret(b"s3cret-s3cret-s3cret-s3cret-s3cr");
    let t = now();
    let claims = |extra: Value| {
        let mut c = json!({"iss": "https://idp", "aud": "todo", "sub": "alice",
            "roles": ["reader", "writer"], "exp": t + 300, "nbf": t - 10});
        for (k, v) in extra.as_object().into_iter().flatten() {
            c[k] = v.clone();
        }
        c
    };
    let good = sign(Algorithm::HS256, None, &key, &claims(json!({})));

    // No token: a bare challenge (RFC 6750 §3.1), nothing upstream.
    let (status, challenge, echoed) = get(&mg, "/a", &[]).await;
    assert_eq!((status, challenge.as_str()), (401, "Bearer realm=\"api\""));
    assert!(echoed.is_none());

    // A good token from the header: claims go upstream as headers (the
    // client's own copies dropped), the token does not (hide_credentials),
    // and the consumer is named by `sub`.
    let auth = bearer(&good);
    let (status, _, echoed) = get(
        &mg,
        "/a",
        &[
            ("authorization", &auth),
            ("x-user", "mallory"),
            ("x-consumer-username", "root"),
        ],
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(upstream_header(&echoed, "x-user"), Some("alice"));
    assert_eq!(upstream_header(&echoed, "x-roles"), Some("reader,writer"));
    assert_eq!(
        upstream_header(&echoed, "x-consumer-username"),
        Some("alice")
    );
    assert_eq!(upstream_header(&echoed, "authorization"), None);

    // From the cookie and from the query argument (removed upstream).
    let cookie = format!("a=1; jwt={good}; b=2");
    let (status, _, echoed) = get(&mg, "/c", &[("cookie", &cookie)]).await;
    assert_eq!(status, 200);
    assert_eq!(upstream_header(&echoed, "cookie"), Some("a=1; b=2"));
    let (status, _, echoed) = get(&mg, &format!("/q?x=1&access_token={good}"), &[]).await;
    assert_eq!(status, 200);
    let uri = echoed.as_ref().and_then(|e| e["uri"].as_str());
    assert_eq!(uri, Some("/q?x=1"));

    // Each refusal says why.
    let refused = [
        (claims(json!({"exp": t - 60})), "token expired"),
        (claims(json!({"exp": t - 10})), ""), // within the 30 s leeway
        (claims(json!({"nbf": t + 600})), "token not yet valid"),
        (claims(json!({"iss": "https://evil"})), "wrong issuer"),
        (claims(json!({"aud": ["other", "todo"]})), ""), // any one audience
        (claims(json!({"aud": "other"})), "wrong audience"),
    ];
    for (c, why) in refused {
        let token = sign(Algorithm::HS256, None, &key, &c);
        let (status, challenge, _) = get(&mg, "/r", &[("authorization", &bearer(&token))]).await;
        if why.is_empty() {
            assert_eq!(status, 200, "{c}");
            continue;
        }
        assert_eq!(status, 401, "{c}");
        assert_eq!(
            challenge,
            format!("Bearer realm=\"api\", error=\"invalid_token\", error_description=\"{why}\"")
        );
    }
    let mut no_sub = claims(json!({}));
    no_sub.as_object_mut().map(|o| o.remove("sub"));
    let token = sign(Algorithm::HS256, None, &key, &no_sub);
    let (status, challenge, _) = get(&mg, "/r", &[("authorization", &bearer(&token))]).await;
    assert_eq!(status, 401);
    assert!(challenge.contains("missing claim sub"), "{challenge}");

    // Another secret, `alg: none`, an algorithm the key cannot do, junk.
    let other = sign(
        Algorithm::HS256,
        None,
        &EncodingKey::from_secret(b"another-secret-another-secret-00"),
        &claims(json!({})),
    );
    let parts: Vec<&str> = good.split('.').collect();
    let none = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#),
        parts[1]
    );
    for (token, why) in [
        (other.as_str(), "bad signature"),
        (none.as_str(), "algorithm not allowed"),
        ("a.b", "malformed token"),
    ] {
        let (status, challenge, echoed) =
            get(&mg, "/r", &[("authorization", &bearer(token))]).await;
        assert_eq!(status, 401, "{token}");
        assert!(challenge.contains(why), "{token}: {challenge}");
        assert!(echoed.is_none());
    }
    assert_eq!(origin.hits(), 5, "only the accepted requests went upstream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rs256_and_es256_keys_and_a_jwks_file_by_kid() {
    let origin = Origin::start(echo).await;
    let dir = tempfile::tempdir().expect("dir");
    let (rsa, rsa_pub) = rsa_keypair();
    let (ec, ec_pub, _) = keypair(&rcgen::PKCS_ECDSA_P256_SHA256, "-");
    let (k1, _, jwk1) = keypair(&rcgen::PKCS_ECDSA_P256_SHA256, "k1");
    let (k2, _, jwk2) = keypair(&rcgen::PKCS_ED25519, "k2");
    let rsa_file = write(dir.path(), "rsa.pem", &rsa_pub);
    let jwks = write(
        dir.path(),
        "jwks.json",
        &json!({"keys": [jwk1, jwk2]}).to_string(),
    );
    let conf = format!(
        r#"[server]
listen = ["127.0.0.1:0"]
workers = 2
access_log = "off"

[upstream.o]
servers = [{{ addr = "{origin}" }}]

[[route]]
path = "/rsa/"
upstream = "o"
policies = [{{ use = "jwt", public_key_file = "{rsa_file}", algorithms = ["RS256"], consumers = false }}]

[[route]]
path = "/ec/"
upstream = "o"
policies = [{{ use = "jwt", public_key = """{ec_pub}""", consumers = false }}]

[[route]]
path = "/jwks/"
upstream = "o"
policies = [{{ use = "jwt", jwks_file = "{jwks}", consumers = false }}]
"#,
        origin = origin.addr
    );
    std::fs::write(dir.path().join("00-test.toml"), conf).expect("conf");
    let mg = Moongate::start_in(dir);
    let claims = json!({"sub": "svc", "exp": now() + 60});
    let ok = |alg, kid, key: &EncodingKey| bearer(&sign(alg, kid, key, &claims));
    let (other_rsa, _) = rsa_keypair();
    let (other_ec, _, _) = keypair(&rcgen::PKCS_ECDSA_P256_SHA256, "k1");
    for (path, auth, want) in [
        ("/rsa/x", ok(Algorithm::RS256, None, &rsa), 200),
        ("/rsa/x", ok(Algorithm::RS256, None, &other_rsa), 401),
        // The public key used as an HMAC secret: the classic confusion.
        (
            "/rsa/x",
            ok(
                Algorithm::HS256,
                None,
                &EncodingKey::from_secret(rsa_pub.as_bytes()),
            ),
            401,
        ),
        // RS512 is a fit for the key but not in `algorithms`.
        ("/rsa/x", ok(Algorithm::RS512, None, &rsa), 401),
        ("/ec/x", ok(Algorithm::ES256, None, &ec), 200),
        ("/ec/x", ok(Algorithm::ES256, None, &other_ec), 401),
        ("/jwks/x", ok(Algorithm::ES256, Some("k1"), &k1), 200),
        ("/jwks/x", ok(Algorithm::EdDSA, Some("k2"), &k2), 200),
        // k1's kid on a token signed by another key; an unknown kid.
        ("/jwks/x", ok(Algorithm::ES256, Some("k1"), &other_ec), 401),
        ("/jwks/x", ok(Algorithm::ES256, Some("k9"), &k1), 401),
    ] {
        let (status, challenge, _) = get(&mg, path, &[("authorization", &auth)]).await;
        assert_eq!(status, want, "{path} {auth}: {challenge}");
    }
    let (_, challenge, _) = get(
        &mg,
        "/jwks/x",
        &[("authorization", &ok(Algorithm::ES256, Some("k9"), &k1))],
    )
    .await;
    assert!(challenge.contains("unknown key id"), "{challenge}");
}

/// Consumers' own JWT credentials, picked by the key claim, then `acl` by
/// their groups.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_credentials_and_acl_groups() {
    let origin = Origin::start(echo).await;
    let dir = tempfile::tempdir().expect("dir");
    let (bob_key, bob_pub, _) = keypair(&rcgen::PKCS_ECDSA_P256_SHA256, "-");
    let bob_file = write(dir.path(), "bob.pem", &bob_pub);
    let conf = format!(
        r#"[server]
listen = ["127.0.0.1:0"]
workers = 1
access_log = "off"

[upstream.o]
servers = [{{ addr = "{origin}" }}]

[consumer.alice]
jwt = {{ key = "alice-iss", secret = "alice-secret-alice-secret-alice!" }}
groups = ["admins", "staff"]

[consumer.bob]
jwt = {{ key = "bob-iss", public_key_file = "{bob_file}", algorithm = "ES256" }}
groups = ["staff"]

[[route]]
path = "/admin/"
upstream = "o"
policies = [{{ use = "jwt" }}, {{ use = "acl", allow = ["admins"] }}]

[[route]]
path = "/staff/"
upstream = "o"
policies = [{{ use = "jwt" }}, {{ use = "acl", allow = ["staff"], deny = ["banned"], hide_groups_header = true }}]
"#,
        origin = origin.addr
    );
    std::fs::write(dir.path().join("00-test.toml"), conf).expect("conf");
    let mg = Moongate::start_in(dir);
    let alice_key = EncodingKey::from_secret(b"alice-secret-alice-secret-alice!");
    let exp = now() + 60;
    let alice = bearer(&sign(
        Algorithm::HS256,
        None,
        &alice_key,
        &json!({"iss": "alice-iss", "exp": exp}),
    ));
    let bob = bearer(&sign(
        Algorithm::ES256,
        None,
        &bob_key,
        &json!({"iss": "bob-iss", "exp": exp}),
    ));

    let (status, _, echoed) = get(&mg, "/admin/x", &[("authorization", &alice)]).await;
    assert_eq!(status, 200);
    assert_eq!(
        upstream_header(&echoed, "x-consumer-username"),
        Some("alice")
    );
    assert_eq!(
        upstream_header(&echoed, "x-consumer-groups"),
        Some("admins, staff")
    );
    assert_eq!(
        upstream_header(&echoed, "x-credential-identifier"),
        Some("alice-iss")
    );
    let (status, _, _) = get(&mg, "/admin/x", &[("authorization", &bob)]).await;
    assert_eq!(status, 403, "bob is not an admin");
    let (status, _, echoed) = get(&mg, "/staff/x", &[("authorization", &bob)]).await;
    assert_eq!(status, 200);
    assert_eq!(upstream_header(&echoed, "x-consumer-username"), Some("bob"));
    assert_eq!(
        upstream_header(&echoed, "x-consumer-groups"),
        None,
        "hidden"
    );

    // Alice's key claim with a token signed by someone else; bob's claim
    // on an HMAC token (his key is EC: never an HMAC secret); a key claim
    // no consumer has.
    let forged = bearer(&sign(
        Algorithm::HS256,
        None,
        &EncodingKey::from_secret(b"guess-guess-guess-guess-guess-gu"),
        &json!({"iss": "alice-iss", "exp": exp}),
    ));
    let bob_hs = bearer(&sign(
        Algorithm::HS256,
        None,
        &EncodingKey::from_secret(bob_pub.as_bytes()),
        &json!({"iss": "bob-iss", "exp": exp}),
    ));
    let nobody = bearer(&sign(
        Algorithm::HS256,
        None,
        &alice_key,
        &json!({"iss": "carol-iss", "exp": exp}),
    ));
    for (auth, why) in [
        (&forged, "bad signature"),
        (&bob_hs, "algorithm not allowed"),
        (&nobody, "no credential for this token"),
    ] {
        let (status, challenge, _) = get(&mg, "/staff/x", &[("authorization", auth)]).await;
        assert_eq!(status, 401, "{why}");
        assert!(challenge.contains(why), "{why}: {challenge}");
    }
}

#[test]
fn config_errors_name_file_and_line() {
    let dir = tempfile::tempdir().expect("dir");
    let not_pem = write(dir.path(), "not.pem", "hello");
    let route = |entry: &str| {
        format!("[[route]]\npath = \"/\"\nroot = \".\"\npolicies = [\n  {entry},\n]\n")
    };
    for (entry, message) in [
        (
            r#"{ use = "jwt", secret = "s", algorithms = ["HS256", "XS1"] }"#,
            "10-x.toml:5:45: `algorithms`: `XS1` is not one of \"HS256\"",
        ),
        (
            r#"{ use = "jwt", secret = "s", bad_key = 1 }"#,
            "10-x.toml:5:42: unknown option `bad_key` for policy `jwt`",
        ),
        (
            r#"{ use = "jwt", consumers = false }"#,
            "10-x.toml:5:3: policy `jwt`: give a key",
        ),
        (
            r#"{ use = "jwt" }"#,
            "10-x.toml:5:3: policy `jwt`: no key: give `secret`",
        ),
        (
            r#"{ use = "jwt", public_key_file = "/nonexistent/key.pem" }"#,
            "/nonexistent/key.pem",
        ),
        (
            &format!(r#"{{ use = "jwt", public_key_file = "{not_pem}" }}"#),
            "10-x.toml:5:3: policy `jwt`: `public_key_file`: ",
        ),
        (
            r#"{ use = "jwt", jwks_url = "ftp://idp/jwks" }"#,
            "`jwks_url`: `ftp://idp/jwks`: ftp:// is not supported; use http:// or https://",
        ),
        (
            r#"{ use = "acl", allow = ["a"] }, { use = "jwt", secret = "s" }"#,
            "10-x.toml:5:3: policy `acl` runs before `jwt`, which recognises the consumer it decides by",
        ),
        (
            r#"{ use = "jwt", secret = "s", algorithms = ["RS256"], consumers = false }"#,
            "10-x.toml:5:3: policy `jwt`: no configured key can verify RS256",
        ),
    ] {
        let run = check_one(&route(entry));
        assert_eq!(run.code, Some(1), "{entry}");
        assert!(run.stderr.contains(message), "{entry}: {}", run.stderr);
    }
    let consumer = |table: &str| format!("[server]\nlisten = [\"127.0.0.1:0\"]\n\n{table}");
    for (table, message) in [
        (
            "[consumer.a]\njwt = { secret = \"s\", algorithm = \"RS256\" }\n",
            "10-x.toml:5:35: consumer `a`: jwt.algorithm RS256 cannot be verified with a Hmac key",
        ),
        (
            "[consumer.a]\njwt = { secret = \"s\", algorithm = \"HS1\" }\n",
            "10-x.toml:5:35: consumer `a`: unknown algorithm \"HS1\"",
        ),
        (
            "[consumer.a]\njwt = { public_key_file = \"/nonexistent.pem\" }\n",
            "10-x.toml:5:27: cannot read `public_key_file` /nonexistent.pem",
        ),
        (
            "[consumer.a]\nkeys = [\"k\"]\n\n[consumer.b]\nkeys = [\"k\"]\n",
            "10-x.toml:7:1: consumers a and b share an API key",
        ),
        (
            "[consumer.a]\ngroup = [\"x\"]\n",
            "10-x.toml:5:1: unknown key `group` in [consumer.a]; expected one of keys, jwt, basic, groups",
        ),
    ] {
        let run = check_one(&consumer(table));
        assert_eq!(run.code, Some(1), "{table}");
        assert!(run.stderr.contains(message), "{table}: {}", run.stderr);
    }
}

/// A JWKS served by a test origin: the first request waits for the first
/// fetch, a key rotated in is picked up by the first token naming it (an
/// early fetch, long before `jwks_refresh`), and the origin going away
/// keeps the keys already fetched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jwks_url_is_fetched_and_a_rotated_key_picked_up() {
    use std::sync::{Arc, Mutex};

    let upstream = Origin::start(echo).await;
    let (k1, _, jwk1) = keypair(&rcgen::PKCS_ECDSA_P256_SHA256, "k1");
    let (k2, _, jwk2) = keypair(&rcgen::PKCS_ED25519, "k2");
    let doc = Arc::new(Mutex::new(json!({"keys": [jwk1.clone()]})));
    let served = doc.clone();
    let idp = Origin::start(move |req| {
        let served = served.clone();
        async move {
            if req.uri().path() != "/.well-known/jwks.json" {
                return crate::support::text(404, "no");
            }
            let body = served.lock().map(|d| d.to_string()).unwrap_or_default();
            let mut reply = crate::support::text(200, &body);
            reply.headers_mut().insert(
                "content-type",
                http::HeaderValue::from_static("application/json"),
            );
            reply
        }
    })
    .await;
    let conf = format!(
        r#"[server]
listen = ["127.0.0.1:0"]
workers = 2
access_log = "off"

[upstream.o]
servers = [{{ addr = "{upstream}" }}]

[[route]]
path = "/"
upstream = "o"
policies = [{{ use = "jwt", jwks_url = "http://{idp}/.well-known/jwks.json", jwks_refresh = "1h", consumers = false }}]
"#,
        upstream = upstream.addr,
        idp = idp.addr
    );
    let mg = Moongate::start(&conf);
    let claims = json!({"sub": "svc", "exp": now() + 60});
    let token = |alg, kid, key: &EncodingKey| bearer(&sign(alg, Some(kid), key, &claims));

    let (status, challenge, _) = get(
        &mg,
        "/x",
        &[("authorization", &token(Algorithm::ES256, "k1", &k1))],
    )
    .await;
    assert_eq!(status, 200, "{challenge}");
    let before = idp.hits();
    assert!(before >= 1, "the JWKS was fetched");

    // k2 is published; its first token is accepted after one early fetch.
    if let Ok(mut d) = doc.lock() {
        *d = json!({"keys": [jwk1, jwk2]});
    }
    let (status, challenge, _) = get(
        &mg,
        "/x",
        &[("authorization", &token(Algorithm::EdDSA, "k2", &k2))],
    )
    .await;
    assert_eq!(status, 200, "{challenge}");
    assert_eq!(idp.hits(), before + 1, "one early fetch");
    // Early fetches are rate-limited: a made-up kid now is refused without
    // another one.
    let (status, challenge, _) = get(
        &mg,
        "/x",
        &[("authorization", &token(Algorithm::EdDSA, "k9", &k2))],
    )
    .await;
    assert_eq!(status, 401);
    assert!(challenge.contains("unknown key id"), "{challenge}");
    assert_eq!(idp.hits(), before + 1);

    // The IdP gone: the keys fetched still verify.
    idp.stop();
    for (alg, kid, key) in [(Algorithm::ES256, "k1", &k1), (Algorithm::EdDSA, "k2", &k2)] {
        let (status, _, _) = get(&mg, "/x", &[("authorization", &token(alg, kid, key))]).await;
        assert_eq!(status, 200, "{kid}");
    }
}

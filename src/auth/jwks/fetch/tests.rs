//! The refresher against real servers on 127.0.0.1 (plain and TLS under
//! a CA made in the test) whose answer the test changes: loading at
//! start, early pick-up of a rotated key, failures keeping the last good
//! set, the thread ending with its cache; URL checks and the backoff.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;

use jsonwebtoken::Algorithm;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;

use super::*;
use crate::auth::jwks::KeySet;
use crate::auth::jwks::tests::{NOW, doc, jwk, token, verifier};
use crate::auth::jwt::JwtError;

/// Long enough for any fetch on a loaded machine; the tests wait on
/// events, this only bounds a test that would otherwise hang.
const WAIT: Duration = Duration::from_secs(20);

/// A period no test reaches: only early requests and retries fetch.
const NEVER_DUE: Duration = Duration::from_secs(3600);

/// What the test server does with the next GET.
#[derive(Clone)]
enum Answer {
    /// 200 with this body.
    Json(Vec<u8>),
    /// 500.
    Fail,
    /// Reads the request and never answers.
    Hang,
}

/// The server's state, shared with the test.
#[derive(Default)]
struct Origin {
    answer: Mutex<Option<Answer>>,
    /// GETs received.
    hits: AtomicUsize,
    /// The last request head, as received.
    last_head: Mutex<String>,
}

impl Origin {
    fn set(&self, answer: Answer) {
        *self.answer.lock().expect("lock") = Some(answer);
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

/// Serves `origin` on 127.0.0.1, over TLS with `tls` when given.
async fn serve(
    origin: Arc<Origin>,
    tls: Option<tokio_rustls::TlsAcceptor>,
) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            let origin = origin.clone();
            let tls = tls.clone();
            tokio::spawn(async move {
                match tls {
                    None => answer(s, &origin).await,
                    Some(acceptor) => {
                        if let Ok(s) = acceptor.accept(s).await {
                            answer(s, &origin).await;
                        }
                    }
                }
            });
        }
    });
    addr
}

async fn answer<S: AsyncRead + AsyncWrite + Unpin>(mut s: S, origin: &Origin) {
    let mut buf = vec![0u8; 4096];
    let mut got = 0;
    while !buf[..got].windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut buf[got..]).await {
            Ok(0) | Err(_) => return,
            Ok(n) => got += n,
        }
    }
    *origin.last_head.lock().expect("lock") = String::from_utf8_lossy(&buf[..got]).into_owned();
    origin.hits.fetch_add(1, Ordering::SeqCst);
    let answer = origin.answer.lock().expect("lock").clone();
    let (status, body) = match answer {
        Some(Answer::Json(body)) => ("200 OK", body),
        Some(Answer::Fail) | None => ("500 Internal Server Error", b"oops".to_vec()),
        Some(Answer::Hang) => {
            tokio::time::sleep(Duration::from_secs(600)).await;
            return;
        }
    };
    let head = format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    let _ = s.write_all(head.as_bytes()).await;
    let _ = s.write_all(&body).await;
    let _ = s.shutdown().await;
}

async fn until(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A cache with nothing loaded that grants every early refresh.
fn empty_cache() -> Arc<JwksCache> {
    Arc::new(JwksCache::new(KeySet::default(), Duration::ZERO))
}

/// Starts the refresher for `url`, returning its thread.
fn refresher(
    url: &str,
    cache: &Arc<JwksCache>,
    every: Duration,
    timeout: Duration,
    tls: Option<Arc<ClientConfig>>,
) -> JoinHandle<()> {
    let source = JwksSource::url(url, tls).expect("url");
    start_refresher(source, cache, every, timeout).expect("refresher")
}

#[tokio::test]
async fn loads_at_start_and_picks_up_a_rotated_key_early() {
    let (enc_a, a) = jwk(&rcgen::PKCS_ECDSA_P256_SHA256, "a");
    let (enc_b, b) = jwk(&rcgen::PKCS_ED25519, "b");
    let origin = Arc::new(Origin::default());
    origin.set(Answer::Json(doc(&[&a])));
    let addr = serve(origin.clone(), None).await;
    let cache = Arc::new(JwksCache::new(KeySet::default(), Duration::from_secs(30)));
    let url = format!("http://{addr}/keys/jwks.json?v=1");
    spawn_refresher(&url, &cache, NEVER_DUE, WAIT, None).expect("refresher");
    assert!(
        cache.first_fetch(WAIT).await,
        "the first fetch loads the set"
    );
    let v = verifier(&cache);
    let ta = token(Algorithm::ES256, "a", &enc_a);
    assert!(v.verify(&ta, NOW).is_ok());
    assert_eq!(origin.hits(), 1);
    let head = origin.last_head.lock().expect("lock").to_ascii_lowercase();
    assert!(
        head.starts_with("get /keys/jwks.json?v=1 http/1.1\r\n"),
        "{head}"
    );
    for field in [
        format!("host: {addr}\r\n"),
        "accept: application/json\r\n".into(),
        "user-agent: moongate\r\n".into(),
    ] {
        assert!(head.contains(&field), "{field:?} in {head}");
    }
    // The key rotates: b in, a out. The verifier asks for an early fetch
    // on b's unknown kid; the request waits for it and verifies again.
    origin.set(Answer::Json(doc(&[&b])));
    let tb = token(Algorithm::EdDSA, "b", &enc_b);
    let seen = cache.fetches();
    assert_eq!(v.verify(&tb, NOW), Err(JwtError::UnknownKid));
    assert!(cache.fetched_since(seen, WAIT).await);
    assert!(v.verify(&tb, NOW).is_ok());
    assert_eq!(v.verify(&ta, NOW), Err(JwtError::UnknownKid));
    // ... which is rate-limited: within the interval, no second fetch.
    let seen = cache.fetches();
    assert!(!cache.request_refresh(NOW + 1));
    assert!(!cache.fetched_since(seen, Duration::from_millis(300)).await);
    assert_eq!(origin.hits(), 2);
}

#[tokio::test]
async fn failures_keep_the_last_good_set_and_retry_before_the_period() {
    let (enc_a, a) = jwk(&rcgen::PKCS_ED25519, "a");
    let origin = Arc::new(Origin::default());
    origin.set(Answer::Json(doc(&[&a])));
    let addr = serve(origin.clone(), None).await;
    let cache = empty_cache();
    let url = format!("http://{addr}/jwks.json");
    let _thread = refresher(&url, &cache, NEVER_DUE, Duration::from_secs(1), None);
    assert!(cache.first_fetch(WAIT).await);
    let v = verifier(&cache);
    let ta = token(Algorithm::EdDSA, "a", &enc_a);
    for (i, bad) in [
        Answer::Fail,
        Answer::Json(b"<html>".to_vec()),
        Answer::Json(b"{\"keys\": []}".to_vec()),
        Answer::Hang,
    ]
    .into_iter()
    .enumerate()
    {
        origin.set(bad);
        let seen = cache.fetches();
        let hits = origin.hits();
        assert!(cache.request_refresh(NOW));
        assert!(cache.fetched_since(seen, WAIT).await);
        assert!(origin.hits() > hits, "the server was asked");
        assert!(v.verify(&ta, NOW).is_ok(), "the last good set stays");
        if i == 0 {
            // Retried on its own (after 1 s), long before the hour-long
            // period. Later retries back off further than the test waits.
            let hits = origin.hits();
            until("a retry after the failure", || origin.hits() > hits).await;
        }
    }
    // The server mends: the next fetch stores its set.
    let (enc_b, b) = jwk(&rcgen::PKCS_ED25519, "b");
    origin.set(Answer::Json(doc(&[&b])));
    let tb = token(Algorithm::EdDSA, "b", &enc_b);
    let seen = cache.fetches();
    assert!(cache.request_refresh(NOW));
    assert!(cache.fetched_since(seen, WAIT).await);
    assert!(v.verify(&tb, NOW).is_ok());
    assert_eq!(v.verify(&ta, NOW), Err(JwtError::UnknownKid));
}

#[tokio::test]
async fn the_thread_ends_when_its_cache_is_dropped() {
    let (_, a) = jwk(&rcgen::PKCS_ED25519, "a");
    let origin = Arc::new(Origin::default());
    origin.set(Answer::Json(doc(&[&a])));
    let addr = serve(origin.clone(), None).await;
    let url = format!("http://{addr}/jwks.json");
    // Between fetches: a period of an hour does not keep it alive.
    let cache = empty_cache();
    let thread = refresher(&url, &cache, NEVER_DUE, WAIT, None);
    assert!(cache.first_fetch(WAIT).await);
    assert!(!thread.is_finished());
    drop(cache);
    until("the refresher to end", || thread.is_finished()).await;
    thread.join().expect("no panic");
    // In the middle of a fetch that would hang for the whole timeout.
    origin.set(Answer::Hang);
    let cache = empty_cache();
    let hits = origin.hits();
    let thread = refresher(&url, &cache, NEVER_DUE, Duration::from_secs(600), None);
    until("the hanging fetch", || origin.hits() > hits).await;
    drop(cache);
    until("the refresher to end", || thread.is_finished()).await;
    thread.join().expect("no panic");
}

/// A CA made for the test, and a TLS acceptor for 127.0.0.1 under it.
fn local_ca(dir: &std::path::Path) -> (std::path::PathBuf, tokio_rustls::TlsAcceptor) {
    let ca_key = rcgen::KeyPair::generate().expect("key");
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "moongate test CA");
    let ca_cert = ca_params.self_signed(&ca_key).expect("ca");
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()])
        .expect("params")
        .signed_by(&key, &issuer)
        .expect("cert");
    let ca_path = dir.join("ca.pem");
    std::fs::write(&ca_path, ca_cert.pem()).expect("write");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone(), ca_cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).expect("key"),
        )
        .expect("server config");
    (ca_path, tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

#[tokio::test]
async fn https_under_a_trusted_ca_and_not_under_another() {
    let (enc_a, a) = jwk(&rcgen::PKCS_ECDSA_P256_SHA256, "a");
    let dir = tempfile::tempdir().expect("tempdir");
    let (ca, acceptor) = local_ca(dir.path());
    let origin = Arc::new(Origin::default());
    origin.set(Answer::Json(doc(&[&a])));
    let addr = serve(origin.clone(), Some(acceptor)).await;
    let url = format!("https://{addr}/jwks.json");
    let trusting = TlsClients::new(Some(ca))
        .config(Verify::Chain { name: true })
        .expect("client config");
    let cache = empty_cache();
    spawn_refresher(&url, &cache, NEVER_DUE, WAIT, Some(trusting)).expect("refresher");
    assert!(cache.first_fetch(WAIT).await);
    assert!(
        verifier(&cache)
            .verify(&token(Algorithm::ES256, "a", &enc_a), NOW)
            .is_ok()
    );
    assert_eq!(origin.hits(), 1);
    // A client trusting another CA refuses the server: nothing loads and
    // the server never sees a request.
    let other = tempfile::tempdir().expect("tempdir");
    let (other_ca, _) = local_ca(other.path());
    let stranger = TlsClients::new(Some(other_ca))
        .config(Verify::Chain { name: true })
        .expect("client config");
    let cache = empty_cache();
    spawn_refresher(&url, &cache, NEVER_DUE, WAIT, Some(stranger)).expect("refresher");
    assert!(!cache.first_fetch(WAIT).await);
    assert!(cache.fetches() >= 1);
    assert_eq!(origin.hits(), 1);
}

#[test]
fn urls_are_checked_with_a_reason() {
    for (url, why) in [
        ("ftp://keys.example/jwks.json", "only http:// and https://"),
        ("keys.example/jwks.json", "not a valid URL"),
        ("keys.example:443", "only http:// and https://"),
        ("/jwks.json", "only http:// and https://"),
        ("http://user:pw@keys.example/", "user info"),
        ("http://keys.example:0/", "port 0"),
        ("http://keys example/", "not a valid URL"),
        ("http://keys.example:99999/", "99999 is not a port"),
    ] {
        match JwksSource::url(url, None) {
            Ok(_) => panic!("{url} was taken"),
            Err(e) => assert!(e.contains(url) && e.contains(why), "{url}: {e}"),
        }
    }
    let ok = JwksSource::url("http://[::1]:8080/k?x=1", None).expect("ipv6");
    assert_eq!(ok.to_string(), "http://[::1]:8080/k?x=1");
    assert!(matches!(ok, JwksSource::Url { tls: None, .. }));
}

#[test]
fn retries_back_off_up_to_the_period() {
    let every = Duration::from_secs(300);
    let delays: Vec<u64> = (1..=10).map(|n| retry_delay(n, every).as_secs()).collect();
    assert_eq!(delays, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300]);
    assert_eq!(retry_delay(u32::MAX, every), every);
    assert_eq!(
        retry_delay(1, Duration::from_millis(1500)),
        Duration::from_secs(1)
    );
    assert_eq!(
        retry_delay(2, Duration::from_millis(1500)),
        Duration::from_millis(1500)
    );
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
    let closed = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = closed.local_addr().expect("addr").port();
    drop(closed);
    let source = JwksSource::url(&format!("http://127.0.0.1:{port}/"), None).expect("url");
    let err = fetch(&source, Duration::from_secs(2)).await;
    assert!(err.is_err_and(|e| e.starts_with("GET http://127.0.0.1")));
    // An answer over the size bound is refused.
    let origin = Arc::new(Origin::default());
    origin.set(Answer::Json(vec![b' '; MAX_BODY + 1]));
    let addr = serve(origin, None).await;
    let source = JwksSource::url(&format!("http://{addr}/"), None).expect("url");
    let err = fetch(&source, WAIT).await;
    assert!(err.is_err_and(|e| e.contains("larger than")));
}

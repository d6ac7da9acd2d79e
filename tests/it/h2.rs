//! HTTP/2 as clients meet it: over TLS only the protocol ALPN chose is
//! spoken, `:authority` names the host (port kept) over a `host` field,
//! and interim responses (103 Early Hints) reach HTTP/1.1 and HTTP/2
//! clients without ever being cached.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::support::{self, Moongate, Origin, echo, raw_status};

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

struct Tls {
    /// Holds the certificate files for as long as the test runs.
    _dir: tempfile::TempDir,
    cert_pem: String,
    entry: String,
}

fn tls_files() -> Tls {
    let dir = tempfile::tempdir().expect("dir");
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("cert");
    let (cert, key) = (dir.path().join("c.pem"), dir.path().join("c.key"));
    std::fs::write(&cert, ck.cert.pem()).expect("write cert");
    std::fs::write(&key, ck.signing_key.serialize_pem()).expect("write key");
    let entry = format!(
        "{{ cert = \"{}\", key = \"{}\" }}",
        cert.display(),
        key.display()
    );
    Tls {
        _dir: dir,
        cert_pem: ck.cert.pem(),
        entry,
    }
}

fn conf(origin: SocketAddr, tls: Option<&Tls>, route_extra: &str) -> String {
    let tls = tls.map_or(String::new(), |t| {
        format!(
            "[[server.tls]]\nlisten = \"127.0.0.1:0\"\ncerts = [{}]\nalpn = [\"h2\", \"http/1.1\"]\n",
            t.entry
        )
    });
    format!(
        r#"[server]
listen = ["127.0.0.1:0"]
workers = 1
access_log = "off"

{tls}
[upstream.app]
servers = [{{ addr = "{origin}" }}]

[[route]]
host = "other.test"
path = "/"
upstream = "app"
lua.header_filter_inline = "ngx.header['x-route'] = 'other'"

[[route]]
path = "/"
upstream = "app"
lua.header_filter_inline = "ngx.header['x-route'] = 'default'"
{route_extra}
"#
    )
}

/// A TLS client connection offering `alpn`; returns it with what was chosen.
async fn tls_connect(
    tls: &Tls,
    addr: SocketAddr,
    alpn: &[&[u8]],
) -> (tokio_rustls::client::TlsStream<TcpStream>, Option<Vec<u8>>) {
    support::install_crypto();
    let mut roots = rustls::RootCertStore::empty();
    use rustls::pki_types::pem::PemObject;
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(tls.cert_pem.as_bytes()) {
        roots.add(cert.expect("pem")).expect("root");
    }
    let mut config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    let stream = connector.connect(name, tcp).await.expect("TLS handshake");
    let chosen = stream.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
    (stream, chosen)
}

/// Everything the peer sends until it closes or `wait` passes.
async fn read_all<S: AsyncRead + Unpin>(s: &mut S, wait: Duration) -> Vec<u8> {
    let mut out = Vec::new();
    let _ = tokio::time::timeout(wait, s.read_to_end(&mut out)).await;
    out
}

/// An HTTP/2 client connection over `io`.
async fn h2_client<S>(io: S) -> h2::client::SendRequest<Bytes>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (send, conn) = h2::client::handshake(io).await.expect("h2 handshake");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    send
}

/// Sends a bodiless GET; returns the interim statuses with their `link`
/// fields, the final status, headers and body.
async fn h2_get(
    send: &mut h2::client::SendRequest<Bytes>,
    req: http::Request<()>,
) -> (Vec<(u16, String)>, http::response::Parts, Bytes) {
    let ready = send.clone().ready().await.expect("h2 ready");
    *send = ready;
    let (mut fut, _) = send.send_request(req, true).expect("send request");
    let mut interim = Vec::new();
    // Interim responses first (the stream yields none once the final
    // head is in), then the response itself.
    while let Some(Ok(r)) = std::future::poll_fn(|cx| fut.poll_informational(cx)).await {
        let link = r
            .headers()
            .get("link")
            .map_or(String::new(), |v| v.to_str().unwrap_or("").to_string());
        interim.push((r.status().as_u16(), link));
    }
    let resp = fut.await.expect("response");
    let (parts, mut body) = resp.into_parts();
    let mut bytes = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.expect("body");
        let _ = body.flow_control().release_capacity(chunk.len());
        bytes.extend_from_slice(&chunk);
    }
    (interim, parts, Bytes::from(bytes))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alpn_h2_speaks_only_http2() {
    let origin = Origin::start(echo).await;
    let tls = tls_files();
    let mg = Moongate::start(&conf(origin.addr, Some(&tls), ""));
    let (mut s, chosen) = tls_connect(&tls, mg.https[0], &[b"h2", b"http/1.1"]).await;
    assert_eq!(chosen.as_deref(), Some(&b"h2"[..]));
    s.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .expect("write");
    let got = read_all(&mut s, Duration::from_secs(3)).await;
    let text = String::from_utf8_lossy(&got);
    assert!(
        !text.contains("HTTP/1.1"),
        "HTTP/1.1 answered on an h2 connection: {text}"
    );
    assert_eq!(origin.hits(), 0);
    // HTTP/2 itself works there.
    let (s, _) = tls_connect(&tls, mg.https[0], &[b"h2"]).await;
    let mut send = h2_client(s).await;
    let req = http::Request::get(format!("https://localhost:{}/x", mg.https[0].port()))
        .body(())
        .expect("req");
    let (_, parts, _) = h2_get(&mut send, req).await;
    assert_eq!(parts.status, 200);
    assert_eq!(origin.hits(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alpn_http11_or_none_speaks_only_http1() {
    let origin = Origin::start(echo).await;
    let tls = tls_files();
    let mg = Moongate::start(&conf(origin.addr, Some(&tls), ""));
    for offer in [&[&b"http/1.1"[..]][..], &[]] {
        let (mut s, chosen) = tls_connect(&tls, mg.https[0], offer).await;
        assert_ne!(chosen.as_deref(), Some(&b"h2"[..]));
        s.write_all(PREFACE).await.expect("write preface");
        let got = read_all(&mut s, Duration::from_secs(3)).await;
        let text = String::from_utf8_lossy(&got);
        assert_eq!(raw_status(&text), 400, "{text}");
        assert!(text.contains("connection: close"), "{text}");
        // And the connection is closed after it.
        assert!(
            s.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
                .await
                .is_err()
                || read_all(&mut s, Duration::from_secs(1)).await.is_empty()
        );
        let (mut s, _) = tls_connect(&tls, mg.https[0], offer).await;
        s.write_all(b"GET /ok HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .await
            .expect("write");
        let text =
            String::from_utf8_lossy(&read_all(&mut s, Duration::from_secs(3)).await).into_owned();
        assert_eq!(raw_status(&text), 200, "{text}");
    }
    assert_eq!(origin.hits(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authority_names_the_host_and_keeps_its_port() {
    let origin = Origin::start(echo).await;
    let tls = tls_files();
    let mg = Moongate::start(&conf(origin.addr, Some(&tls), ""));
    // h2c with prior knowledge: :authority other.test:8443, host a.test.
    let mut send = h2_client(TcpStream::connect(mg.http[0]).await.expect("connect")).await;
    let req = http::Request::get("http://other.test:8443/x")
        .header("host", "a.test")
        .body(())
        .expect("req");
    let (_, parts, body) = h2_get(&mut send, req).await;
    assert_eq!(parts.status, 200);
    assert_eq!(
        parts.headers["x-route"], "other",
        "routed on the host field"
    );
    let seen: serde_json::Value = serde_json::from_slice(&body).expect("echo");
    assert_eq!(
        seen["headers"]["host"],
        serde_json::json!(["other.test:8443"])
    );
    // Over TLS, the authority's port reaches the origin.
    let (s, _) = tls_connect(&tls, mg.https[0], &[b"h2"]).await;
    let mut send = h2_client(s).await;
    let authority = format!("127.0.0.1:{}", mg.https[0].port());
    let req = http::Request::get(format!("https://{authority}/y"))
        .body(())
        .expect("req");
    let (_, parts, body) = h2_get(&mut send, req).await;
    assert_eq!(parts.status, 200);
    assert_eq!(parts.headers["x-route"], "default");
    let seen: serde_json::Value = serde_json::from_slice(&body).expect("echo");
    assert_eq!(seen["headers"]["host"], serde_json::json!([authority]));
}

/// An origin that answers every request with a 103 carrying a `link`,
/// then (after a pause) a cacheable 200 "ok".
async fn early_hints_origin() -> (SocketAddr, Arc<std::sync::atomic::AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let hits = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = hits.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let count = count.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        buf.drain(..end + 4);
                        count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        let hints =
                            b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n";
                        if s.write_all(hints).await.is_err() {
                            return;
                        }
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        let fin = b"HTTP/1.1 200 OK\r\ncache-control: max-age=60\r\nlink: </style.css>; rel=preload\r\ncontent-length: 2\r\n\r\nok";
                        if s.write_all(fin).await.is_err() {
                            return;
                        }
                    }
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
            });
        }
    });
    (addr, hits)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn early_hints_reach_http1_and_http2_clients_and_are_never_cached() {
    let (origin, hits) = early_hints_origin().await;
    let mg = Moongate::start(&format!(
        "{}\n[cache.pages]\nmemory = \"1MiB\"\n",
        conf(origin, None, "")
    ));
    // HTTP/1.1: the 103 arrives ahead of the 200, on its own, in time.
    let mut s = TcpStream::connect(mg.http[0]).await.expect("connect");
    s.write_all(b"GET /page HTTP/1.1\r\nHost: a.test\r\n\r\n")
        .await
        .expect("write");
    let mut first = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_millis(150), s.read(&mut first))
        .await
        .expect("the 103 comes before the origin's final answer")
        .expect("read");
    let early = String::from_utf8_lossy(&first[..n]).into_owned();
    assert!(
        early.starts_with("HTTP/1.1 103 Early Hints\r\nlink: </style.css>; rel=preload\r\n\r\n"),
        "{early}"
    );
    let rest =
        String::from_utf8_lossy(&read_all(&mut s, Duration::from_millis(800)).await).into_owned();
    let whole = format!("{early}{rest}");
    let final_at = whole.find("HTTP/1.1 200 OK").expect("the final response");
    assert!(whole[final_at..].ends_with("ok"), "{whole}");

    // HTTP/1.0 clients get no interim responses (RFC 9110 §15.2).
    let answer = support::raw_exchange(
        mg.http[0],
        b"GET /old HTTP/1.0\r\nHost: a.test\r\n\r\n",
        Duration::from_secs(2),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.0 200 OK"), "{answer}");

    // HTTP/2: an informational HEADERS frame, then the response.
    let mut send = h2_client(TcpStream::connect(mg.http[0]).await.expect("connect")).await;
    let req = http::Request::get("http://a.test/h2")
        .body(())
        .expect("req");
    let (interim, parts, body) = h2_get(&mut send, req).await;
    assert_eq!(
        interim,
        vec![(103, "</style.css>; rel=preload".to_string())]
    );
    assert_eq!(parts.status, 200);
    assert_eq!(&body[..], b"ok");
    assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 3);

    // Behind a cache: the miss forwards the 103; the hit has none.
    let cached = Moongate::start(&format!(
        "{}\n[cache.pages]\nmemory = \"1MiB\"\n",
        conf(origin, None, "cache = \"pages\"")
    ));
    for (round, want_hint) in [(1, true), (2, false)] {
        let answer = support::raw_exchange(
            cached.http[0],
            b"GET /cached HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n",
            Duration::from_secs(2),
        )
        .await;
        assert_eq!(
            answer.starts_with("HTTP/1.1 103 "),
            want_hint,
            "round {round}: {answer}"
        );
        let status = if want_hint { "MISS" } else { "HIT" };
        assert!(
            answer.contains(&format!("x-cache-status: {status}")),
            "round {round}: {answer}"
        );
        assert!(
            !answer[3..].contains("HTTP/1.1 103") || round == 1,
            "{answer}"
        );
    }
    assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 4);
}

//! `protocol = "h2"` upstreams against a real HTTP/2 origin (the `h2`
//! crate's server, counting its connections and the streams in flight):
//! streams multiplexed on a bounded number of connections, a second
//! connection only when the peer's stream limit is reached, trailers
//! carried both ways, `:authority` from `Host`, a 10 MB body streamed, a
//! silent peer timed out, an unreachable one answered 502, and a reload
//! that keeps the connection when the upstream is unchanged.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response};
use tokio::net::{TcpListener, TcpStream};

use crate::support::{Moongate, client};

/// What the origin saw.
#[derive(Default)]
struct Seen {
    connections: AtomicUsize,
    in_flight: AtomicUsize,
    peak: AtomicUsize,
}

/// An HTTP/2 (prior knowledge) origin. Per stream: `/slow?MS` answers
/// after MS milliseconds; `/big` sends 10 MB in 64 KiB chunks; anything
/// else answers 200 with the method, path and `:authority` in the body,
/// the `te` field in `x-te`, and trailers: `x-trailer: done` plus the
/// request's `x-req-trailer` trailer echoed as `x-echo-trailer`.
pub(crate) struct H2Origin {
    pub(crate) addr: SocketAddr,
    seen: Arc<Seen>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for H2Origin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl H2Origin {
    pub(crate) async fn start(max_streams: u32) -> H2Origin {
        Self::start_with(max_streams, None).await
    }

    /// Over TLS with `tls` (ALPN h2) when given, else h2c.
    async fn start_with(max_streams: u32, tls: Option<Arc<rustls::ServerConfig>>) -> H2Origin {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let seen = Arc::new(Seen::default());
        let counters = seen.clone();
        let task = tokio::spawn(async move {
            while let Ok((io, _)) = listener.accept().await {
                counters.connections.fetch_add(1, Ordering::SeqCst);
                let counters = counters.clone();
                let tls = tls.clone();
                tokio::spawn(async move {
                    match tls {
                        None => serve(io, max_streams, counters).await,
                        Some(config) => {
                            let acceptor = tokio_rustls::TlsAcceptor::from(config);
                            if let Ok(io) = acceptor.accept(io).await {
                                serve(io, max_streams, counters).await;
                            }
                        }
                    }
                });
            }
        });
        H2Origin { addr, seen, task }
    }

    fn connections(&self) -> usize {
        self.seen.connections.load(Ordering::SeqCst)
    }

    fn peak(&self) -> usize {
        self.seen.peak.load(Ordering::SeqCst)
    }
}

async fn serve<S>(io: S, max_streams: u32, counters: Arc<Seen>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut b = h2::server::Builder::new();
    b.max_concurrent_streams(max_streams);
    let Ok(mut conn) = b.handshake::<_, Bytes>(io).await else {
        return;
    };
    while let Some(Ok((req, respond))) = conn.accept().await {
        tokio::spawn(stream(req, respond, counters.clone()));
    }
}

async fn stream(
    req: Request<h2::RecvStream>,
    mut respond: h2::server::SendResponse<Bytes>,
    seen: Arc<Seen>,
) {
    let now = seen.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    seen.peak.fetch_max(now, Ordering::SeqCst);
    let (parts, mut body) = req.into_parts();
    let mut received = 0usize;
    while let Some(Ok(chunk)) = body.data().await {
        received += chunk.len();
        let _ = body.flow_control().release_capacity(chunk.len());
    }
    let req_trailers = body.trailers().await.ok().flatten();
    let path = parts.uri.path().to_string();
    if path == "/slow" {
        let ms: u64 = parts.uri.query().and_then(|q| q.parse().ok()).unwrap_or(0);
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    let mut head = Response::new(());
    if let Some(te) = parts.headers.get("te") {
        head.headers_mut().insert("x-te", te.clone());
    }
    seen.in_flight.fetch_sub(1, Ordering::SeqCst);
    let Ok(mut tx) = respond.send_response(head, false) else {
        return;
    };
    if path == "/big" {
        let chunk = Bytes::from(vec![b'x'; 64 * 1024]);
        for _ in 0..160 {
            tx.reserve_capacity(chunk.len());
            let mut left = chunk.clone();
            while !left.is_empty() {
                match std::future::poll_fn(|cx| tx.poll_capacity(cx)).await {
                    Some(Ok(n)) if n > 0 => {
                        let part = left.split_to(n.min(left.len()));
                        if tx.send_data(part, false).is_err() {
                            return;
                        }
                    }
                    Some(Ok(_)) => {}
                    _ => return,
                }
            }
        }
        let _ = tx.send_data(Bytes::new(), true);
        return;
    }
    let text = format!(
        "{} {} authority={} received={received}",
        parts.method,
        path,
        parts.uri.authority().map_or("", |a| a.as_str())
    );
    let _ = tx.send_data(Bytes::from(text), false);
    let mut trailers = HeaderMap::new();
    trailers.insert("x-trailer", HeaderValue::from_static("done"));
    if let Some(v) = req_trailers.as_ref().and_then(|t| t.get("x-req-trailer")) {
        trailers.insert("x-echo-trailer", v.clone());
    }
    let _ = tx.send_trailers(trailers);
}

fn conf(origin: SocketAddr, workers: usize, extra: &str) -> String {
    format!(
        r#"[server]
listen = ["127.0.0.1:0"]
workers = {workers}
access_log = "off"

[admin]
listen = "127.0.0.1:0"

[upstream.h2app]
protocol = "h2"
servers = [{{ addr = "{origin}" }}]
{extra}

[[route]]
path = "/"
upstream = "h2app"
"#
    )
}

/// An HTTP/2 client (prior knowledge) to moongate.
async fn h2_client(addr: SocketAddr) -> h2::client::SendRequest<Bytes> {
    let io = TcpStream::connect(addr).await.expect("connect");
    let (send, conn) = h2::client::handshake(io).await.expect("h2 handshake");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    send
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hundred_concurrent_requests_share_at_most_two_connections() {
    let origin = H2Origin::start(256).await;
    let mg = Moongate::start(&conf(origin.addr, 2, ""));
    let c = client();
    let calls = (0..100).map(|_| {
        let (c, url) = (c.clone(), mg.url("/slow?300"));
        async move {
            let resp = c.get(url).send().await.expect("request");
            let status = resp.status().as_u16();
            (status, resp.text().await.unwrap_or_default())
        }
    });
    let answers = futures_util::future::join_all(calls).await;
    for (status, body) in &answers {
        assert_eq!(*status, 200, "{body}");
        assert!(body.starts_with("GET /slow authority=127.0.0.1:"), "{body}");
    }
    // Two worker threads, one connection each (h2_connections = 1), and
    // the streams really ran side by side on them.
    assert!(
        origin.connections() <= 2,
        "{} connections",
        origin.connections()
    );
    assert!(
        origin.peak() > 2,
        "peak of {} streams in flight",
        origin.peak()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_second_connection_opens_only_at_the_peers_stream_limit() {
    // The peer takes 5 streams per connection; moongate may open 2.
    let origin = H2Origin::start(5).await;
    let mg = Moongate::start(&conf(origin.addr, 1, "h2_connections = 2"));
    // One request first: the peer's SETTINGS are known before the burst.
    let (status, _) = crate::support::get_origin(&client(), &mg.url("/")).await;
    assert_eq!(status, 200);
    assert_eq!(origin.connections(), 1);
    let c = client();
    let calls = (0..20).map(|_| {
        let (c, url) = (c.clone(), mg.url("/slow?200"));
        async move {
            c.get(url)
                .send()
                .await
                .map(|r| r.status().as_u16())
                .unwrap_or(0)
        }
    });
    let statuses = futures_util::future::join_all(calls).await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    assert_eq!(origin.connections(), 2);
    // 2 connections × 5 streams: the rest queued, none refused.
    assert!(origin.peak() <= 10, "peak {}", origin.peak());
    assert!(origin.peak() > 5, "peak {}", origin.peak());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trailers_and_authority_travel_end_to_end() {
    let origin = H2Origin::start(100).await;
    let mg = Moongate::start(&conf(origin.addr, 1, ""));
    let mut send = h2_client(mg.http[0]).await;
    let req = Request::builder()
        .method("POST")
        .uri("http://svc.example:8080/echo")
        .body(())
        .expect("request");
    send = send.ready().await.expect("ready");
    let (fut, mut tx) = send.send_request(req, false).expect("send");
    tx.send_data(Bytes::from_static(b"12345"), false)
        .expect("data");
    let mut trailers = HeaderMap::new();
    trailers.insert("x-req-trailer", HeaderValue::from_static("from-client"));
    tx.send_trailers(trailers).expect("trailers");
    let resp = fut.await.expect("response");
    assert_eq!(resp.status(), 200);
    // A plain h2 upstream is not asked for trailers (only gRPC is).
    assert!(resp.headers().get("x-te").is_none());
    let mut body = resp.into_body();
    let mut text = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.expect("chunk");
        let _ = body.flow_control().release_capacity(chunk.len());
        text.extend_from_slice(&chunk);
    }
    let text = String::from_utf8_lossy(&text).to_string();
    assert_eq!(text, "POST /echo authority=svc.example:8080 received=5");
    let trailers = body.trailers().await.expect("trailers").expect("some");
    assert_eq!(trailers["x-trailer"], "done");
    assert_eq!(trailers["x-echo-trailer"], "from-client");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_bodies_stream_and_silent_or_absent_peers_fail_clearly() {
    let origin = H2Origin::start(100).await;
    let dead = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let dead_addr = dead.local_addr().expect("addr");
    drop(dead);
    let text = format!(
        "{}\n[upstream.gone]\nprotocol = \"h2\"\nservers = [{{ addr = \"{dead_addr}\" }}]\n\n[[route]]\npath = \"/gone/\"\nupstream = \"gone\"\n",
        conf(origin.addr, 1, "read_timeout = \"300ms\"")
    );
    let mg = Moongate::start(&text);
    let c = client();
    let resp = c.get(mg.url("/big")).send().await.expect("big");
    assert_eq!(resp.status(), 200);
    let body = resp.bytes().await.expect("big body");
    assert_eq!(body.len(), 160 * 64 * 1024);
    assert!(body.iter().all(|b| *b == b'x'));
    let resp = c.get(mg.url("/slow?2000")).send().await.expect("slow");
    assert_eq!(resp.status(), 504);
    let resp = c.get(mg.url("/gone/x")).send().await.expect("gone");
    assert_eq!(resp.status(), 502);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_keeps_an_unchanged_h2_upstreams_connection() {
    let origin = H2Origin::start(100).await;
    let mg = Moongate::start(&conf(origin.addr, 1, ""));
    let c = client();
    for _ in 0..3 {
        assert_eq!(crate::support::get_origin(&c, &mg.url("/")).await.0, 200);
    }
    assert_eq!(origin.connections(), 1);
    // Another route in another file: the upstream stays as it was.
    mg.write_conf(
        "10-more.toml",
        "[[route]]\npath = \"/more/\"\nupstream = \"h2app\"\n",
    );
    let (code, body) = mg.admin_reload().await;
    assert_eq!(code, 200, "{body}");
    for path in ["/", "/more/x"] {
        assert_eq!(crate::support::get_origin(&c, &mg.url(path)).await.0, 200);
    }
    assert_eq!(origin.connections(), 1, "the reload dropped the connection");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_to_the_peer_picks_h2_by_alpn_and_checks_the_name() {
    let peer = crate::support::tls_peer(&[b"h2"]);
    let (ca, other_ca, server) = (&peer.ca, &peer.other_ca, peer.server.clone());
    let other_ca = other_ca.display();
    let origin = H2Origin::start_with(100, Some(server)).await;
    let port = origin.addr.port();
    let ca = ca.display();
    let text = format!(
        r#"[server]
listen = ["127.0.0.1:0"]
workers = 1
access_log = "off"

[upstream.checked]
protocol = "h2"
servers = [{{ addr = "https://localhost:{port}" }}]
tls = {{ ca = "{ca}" }}

[upstream.wrong_name]
protocol = "h2"
servers = [{{ addr = "127.0.0.1:{port}" }}]
tls = {{ ca = "{ca}", server_name = "other.example" }}

[upstream.unchecked]
protocol = "h2"
servers = [{{ addr = "127.0.0.1:{port}" }}]
tls = {{ server_name = "other.example", verify = false }}

[upstream.untrusted]
protocol = "h2"
servers = [{{ addr = "https://localhost:{port}" }}]
tls = {{ ca = "{other_ca}" }}

[[route]]
path = "/checked/"
upstream = "checked"
[[route]]
path = "/wrong/"
upstream = "wrong_name"
[[route]]
path = "/unchecked/"
upstream = "unchecked"
[[route]]
path = "/untrusted/"
upstream = "untrusted"
"#
    );
    let mg = Moongate::start(&text);
    let c = client();
    for (path, want) in [
        ("/checked/a", 200),
        ("/wrong/a", 502),
        ("/unchecked/a", 200),
        ("/untrusted/a", 502),
    ] {
        let resp = c.get(mg.url(path)).send().await.expect("request");
        let status = resp.status().as_u16();
        let body = resp.text().await.unwrap_or_default();
        assert_eq!(status, want, "{path}: {body}");
        if want == 200 {
            assert!(
                body.starts_with(&format!("GET {path} authority=")),
                "{body}"
            );
        }
    }
    let log = mg.log_lines().join("\n");
    assert!(
        log.contains("certificate"),
        "the log says why TLS failed: {log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http1_upstream_over_tls_reuses_its_connection() {
    let peer = crate::support::tls_peer(&[b"h2", b"http/1.1"]);
    let ca = &peer.ca;
    let acceptor = tokio_rustls::TlsAcceptor::from(peer.server.clone());
    // An HTTP/1.1 origin over TLS that counts its connections and says
    // which ALPN protocol was chosen.
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let connections = Arc::new(AtomicUsize::new(0));
    let count = connections.clone();
    let task = tokio::spawn(async move {
        while let Ok((io, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(io) = acceptor.accept(io).await else {
                    return;
                };
                let alpn = io.get_ref().1.alpn_protocol().map(|p| p.to_vec());
                let alpn = String::from_utf8_lossy(&alpn.unwrap_or_default()).to_string();
                let service = hyper::service::service_fn(move |_req| {
                    let alpn = alpn.clone();
                    async move { Ok::<_, std::convert::Infallible>(crate::support::text(200, &alpn)) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(io), service)
                    .await;
            });
        }
    });
    let ca = ca.display();
    let mg = Moongate::start(&format!(
        r#"[server]
listen = ["127.0.0.1:0"]
workers = 1
access_log = "off"
[upstream.tls_app]
servers = [{{ addr = "https://localhost:{port}" }}]
tls = {{ ca = "{ca}" }}
[[route]]
path = "/"
upstream = "tls_app"
"#
    ));
    let c = client();
    for _ in 0..5 {
        let resp = c.get(mg.url("/x")).send().await.expect("request");
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.text().await.unwrap_or_default(), "http/1.1");
    }
    assert_eq!(
        connections.load(Ordering::SeqCst),
        1,
        "the TLS connection was pooled"
    );
    task.abort();
}

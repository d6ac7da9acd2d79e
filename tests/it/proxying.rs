//! Proxying: 502/504 answers, retries, unix-socket peers, forwarded and
//! hop-by-hop headers, rewrites, streaming bodies, upstream keep-alive and
//! routing.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::{Moongate, Origin, client, counting_origin, echo, text, unix_origin};

/// `[server]` for these tests, plus `extra` keys in it.
fn server(extra: &str) -> String {
    format!(
        r#"
[server]
listen = ["127.0.0.1:0"]
workers = 2
access_log = "off"
{extra}
"#
    )
}

/// A config with one upstream `app` (its TOML body) behind `path = "/"`.
fn conf(upstream: &str) -> String {
    format!(
        "{}\n[upstream.app]\n{upstream}\n\n[[route]]\npath = \"/\"\nupstream = \"app\"\n",
        server("")
    )
}

/// An address on loopback where nothing listens (bound, read, released).
fn closed_port() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_peers_down_is_502() {
    let (a, b) = (closed_port(), closed_port());
    let mg = Moongate::start(&conf(&format!(
        r#"retries = 1
servers = [ {{ addr = "{a}" }}, {{ addr = "{b}" }} ]"#
    )));
    let c = client(); // its 15 s timeout fails the test if the answer hangs
    for _ in 0..3 {
        let resp = c.get(mg.url("/")).send().await.expect("an answer");
        assert_eq!(resp.status(), 502);
    }
    let resp = c
        .post(mg.url("/"))
        .body("x")
        .send()
        .await
        .expect("an answer");
    assert_eq!(resp.status(), 502);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_error_moves_any_request_to_the_next_peer() {
    // Nothing was sent to a peer that refused the connection, so even a
    // POST with a body goes on to the next one (with retries = 0, and a
    // dead peer that is never marked, so every other request meets it).
    let good = Origin::start(echo).await;
    let dead = closed_port();
    let mg = Moongate::start(&conf(&format!(
        r#"servers = [ {{ addr = "{dead}", max_fails = 0 }}, {{ addr = "{}", max_fails = 0 }} ]"#,
        good.addr
    )));
    let c = client();
    for i in 0..10 {
        let resp = c
            .post(mg.url("/"))
            .body(vec![b'x'; 1000 + i])
            .send()
            .await
            .expect("POST");
        assert_eq!(resp.status(), 200, "POST {i}");
        let body = resp.bytes().await.expect("body");
        let v: serde_json::Value = serde_json::from_slice(&body).expect("echo json");
        assert_eq!(v["body_len"], 1000 + i, "{v}");
    }
    assert_eq!(good.hits(), 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_timeout_is_504() {
    let slow = Origin::start(|_req| async {
        tokio::time::sleep(Duration::from_secs(3)).await;
        text(200, "late")
    })
    .await;
    let mg = Moongate::start(&conf(&format!(
        r#"read_timeout = "300ms"
servers = [ {{ addr = "{}" }} ]"#,
        slow.addr
    )));
    let resp = client().get(mg.url("/")).send().await.expect("an answer");
    assert_eq!(resp.status(), 504);
    assert_eq!(slow.hits(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_timeout_is_504() {
    // A loopback listener whose accept queue is full: Linux drops further
    // SYNs, so a connect to it hangs (no traffic leaves the machine).
    use socket2::{Domain, Socket, Type};
    let sock = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
    let any: SocketAddr = "127.0.0.1:0".parse().expect("addr");
    sock.bind(&any.into()).expect("bind");
    sock.listen(0).expect("listen");
    let addr = sock
        .local_addr()
        .expect("addr")
        .as_socket()
        .expect("inet addr");
    // Fill the queue: connections that complete are held; once one hangs
    // the queue is full.
    let mut fillers = Vec::new();
    let mut full = false;
    for _ in 0..8 {
        match tokio::time::timeout(
            Duration::from_millis(300),
            tokio::net::TcpStream::connect(addr),
        )
        .await
        {
            Ok(Ok(s)) => fillers.push(s),
            _ => {
                full = true;
                break;
            }
        }
    }
    assert!(full, "could not fill the accept queue of {addr}");
    let mg = Moongate::start(&conf(&format!(
        r#"connect_timeout = "300ms"
servers = [ {{ addr = "{addr}" }} ]"#
    )));
    let resp = client().get(mg.url("/")).send().await.expect("an answer");
    assert_eq!(resp.status(), 504);
    drop(sock);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_is_retried_after_502_but_post_is_not() {
    let seen_a: Arc<Mutex<Vec<String>>> = Arc::default();
    let seen_b: Arc<Mutex<Vec<String>>> = Arc::default();
    let log = seen_a.clone();
    let a = Origin::start(move |req| {
        log.lock().unwrap().push(req.method().to_string());
        async { text(502, "a") }
    })
    .await;
    let log = seen_b.clone();
    let b = Origin::start(move |req| {
        log.lock().unwrap().push(req.method().to_string());
        async { text(200, "b") }
    })
    .await;
    let mg = Moongate::start(&conf(&format!(
        r#"balance = "round_robin"
retry_statuses = [502]
servers = [ {{ addr = "{}", max_fails = 0 }}, {{ addr = "{}", max_fails = 0 }} ]"#,
        a.addr, b.addr
    )));
    let c = client();
    for i in 0..10 {
        let resp = c.get(mg.url("/")).send().await.expect("GET");
        assert_eq!(resp.status(), 200, "GET {i}");
        assert_eq!(resp.text().await.expect("body"), "b");
    }
    let count = |log: &Arc<Mutex<Vec<String>>>, m: &str| {
        log.lock().unwrap().iter().filter(|x| *x == m).count()
    };
    assert!(count(&seen_a, "GET") >= 1, "A never saw a GET to retry");
    assert_eq!(count(&seen_b, "GET"), 10);

    let mut statuses = Vec::new();
    for _ in 0..10 {
        let resp = c
            .post(mg.url("/"))
            .body("payload")
            .send()
            .await
            .expect("POST");
        statuses.push(resp.status().as_u16());
    }
    let bad = statuses.iter().filter(|s| **s == 502).count();
    let ok = statuses.iter().filter(|s| **s == 200).count();
    assert_eq!(bad + ok, 10, "statuses: {statuses:?}");
    assert!(bad >= 1, "no POST reached A: {statuses:?}");
    // Every POST reached exactly one peer: those A answered 502 were not
    // sent again to B.
    assert_eq!(count(&seen_a, "POST"), bad);
    assert_eq!(count(&seen_b, "POST"), ok);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unix_socket_upstream() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("app.sock");
    let hits = unix_origin(&path, |_req| async { text(200, "from-unix") }).await;
    let mg = Moongate::start(&conf(&format!(
        r#"servers = [ {{ addr = "unix:{}" }} ]"#,
        path.display()
    )));
    let c = client();
    for _ in 0..3 {
        let resp = c.get(mg.url("/u")).send().await.expect("request");
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.text().await.expect("body"), "from-unix");
    }
    assert_eq!(hits.load(Ordering::SeqCst), 3);
}

/// Sends one raw HTTP/1.1 request on a fresh connection and reads one
/// response with a Content-Length body: (status, lowercased head, body).
async fn raw_request(addr: SocketAddr, request: &str) -> (u16, String, Vec<u8>) {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(request.as_bytes()).await.expect("write");
    let mut buf = Vec::new();
    let read = async {
        loop {
            let mut chunk = [0u8; 8192];
            let n = s.read(&mut chunk).await.expect("read");
            buf.extend_from_slice(&chunk[..n]);
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                if buf.len() >= end + 4 + len || n == 0 {
                    let body = buf[end + 4..].to_vec();
                    return (head, body);
                }
            } else if n == 0 {
                panic!("connection closed before a response head");
            }
        }
    };
    let (head, body) = tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .expect("response within 10s");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status");
    (status, head, body)
}

fn forwarding_conf(origin: SocketAddr, trusted: bool) -> String {
    let extra = if trusted {
        r#"trusted_proxies = ["127.0.0.1/32"]"#
    } else {
        ""
    };
    format!(
        "{}\n[upstream.app]\nservers = [ {{ addr = \"{origin}\" }} ]\n\n[[route]]\npath = \"/\"\nupstream = \"app\"\n",
        server(extra)
    )
}

/// The request headers the echo origin saw, by name.
fn echoed_headers(body: &[u8]) -> serde_json::Value {
    let v: serde_json::Value = serde_json::from_slice(body).expect("echo json");
    v["headers"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_headers_set_and_hop_by_hop_stripped() {
    let origin = Origin::start(echo).await;
    let mg = Moongate::start(&forwarding_conf(origin.addr, true));
    let request = "GET /fwd HTTP/1.1\r\n\
        Host: app.example\r\n\
        X-Forwarded-For: 203.0.113.7\r\n\
        Connection: keep-alive, X-Drop-Me\r\n\
        X-Drop-Me: 1\r\n\
        Keep-Alive: timeout=5\r\n\
        TE: trailers\r\n\
        Proxy-Connection: keep-alive\r\n\
        X-Kept: yes\r\n\
        \r\n";
    let (status, head, body) = raw_request(mg.http[0], request).await;
    assert_eq!(status, 200, "{head}");
    let h = echoed_headers(&body);
    assert_eq!(h["x-forwarded-for"][0], "203.0.113.7, 127.0.0.1", "{h}");
    assert_eq!(h["x-real-ip"][0], "203.0.113.7", "{h}");
    assert_eq!(h["x-forwarded-proto"][0], "http", "{h}");
    let fwd = h["forwarded"][0].as_str().expect("forwarded header");
    assert!(
        fwd.contains("for=127.0.0.1") && fwd.contains("proto=http"),
        "{fwd}"
    );
    assert_eq!(h["host"][0], "app.example", "{h}");
    assert_eq!(h["x-kept"][0], "yes", "{h}");
    for gone in ["x-drop-me", "keep-alive", "te", "proxy-connection"] {
        assert!(h.get(gone).is_none(), "{gone} reached the upstream: {h}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x_forwarded_for_is_not_believed_without_trusted_proxies() {
    let origin = Origin::start(echo).await;
    let mg = Moongate::start(&forwarding_conf(origin.addr, false));
    let request = "GET / HTTP/1.1\r\nHost: app.example\r\nX-Forwarded-For: 203.0.113.7\r\n\r\n";
    let (status, head, body) = raw_request(mg.http[0], request).await;
    assert_eq!(status, 200, "{head}");
    let h = echoed_headers(&body);
    assert_eq!(h["x-real-ip"][0], "127.0.0.1", "{h}");
    assert_eq!(h["x-forwarded-for"][0], "203.0.113.7, 127.0.0.1", "{h}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rewrite_changes_the_path_and_keeps_the_query() {
    let origin = Origin::start(echo).await;
    let mg = Moongate::start(&format!(
        r#"{}
[upstream.app]
servers = [ {{ addr = "{}" }} ]

[[route]]
path = "/v1/"
upstream = "app"
rewrite = {{ from = "^/v1/(.*)$", to = "/api/$1" }}
"#,
        server(""),
        origin.addr
    ));
    let body = client()
        .get(mg.url("/v1/x?q=1"))
        .send()
        .await
        .expect("request")
        .bytes()
        .await
        .expect("body");
    let v: serde_json::Value = serde_json::from_slice(&body).expect("echo json");
    assert_eq!(v["uri"], "/api/x?q=1", "{v}");
}

/// Deterministic test bytes: byte `i` of a stream.
fn pattern(i: usize) -> u8 {
    (i % 251) as u8
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_bodies_stream_both_ways_intact() {
    const SIZE: usize = 20 << 20;
    // The origin checks the request body against the pattern and answers a
    // GET with SIZE pattern bytes.
    let origin = Origin::start(|req| async move {
        if req.method() == hyper::Method::GET {
            let body: Vec<u8> = (0..SIZE).map(pattern).collect();
            return hyper::Response::new(Full::new(Bytes::from(body)));
        }
        let mut body = req.into_body();
        let (mut n, mut bad) = (0usize, 0usize);
        while let Some(frame) = body.frame().await {
            let Ok(frame) = frame else { break };
            if let Ok(data) = frame.into_data() {
                for b in data.iter() {
                    if *b != pattern(n) {
                        bad += 1;
                    }
                    n += 1;
                }
            }
        }
        text(200, &format!("{n} {bad}"))
    })
    .await;
    let mg = Moongate::start(&format!(
        "{}\n[upstream.app]\nservers = [ {{ addr = \"{}\" }} ]\n\n[[route]]\npath = \"/\"\nupstream = \"app\"\n",
        server(r#"client_max_body_size = "64MiB""#),
        origin.addr
    ));
    let c = client();

    let chunks = (0..SIZE / 65536).map(|k| {
        let chunk: Vec<u8> = (k * 65536..(k + 1) * 65536).map(pattern).collect();
        Ok::<_, Infallible>(Bytes::from(chunk))
    });
    let body = reqwest::Body::wrap_stream(futures_util::stream::iter(chunks));
    let resp = c
        .post(mg.url("/upload"))
        .body(body)
        .send()
        .await
        .expect("upload");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.expect("body"), format!("{SIZE} 0"));

    let resp = c.get(mg.url("/download")).send().await.expect("download");
    assert_eq!(resp.status(), 200);
    let got = resp.bytes().await.expect("body");
    assert_eq!(got.len(), SIZE);
    let first_bad = got.iter().enumerate().position(|(i, b)| *b != pattern(i));
    assert_eq!(first_bad, None, "response body differs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_connections_are_reused() {
    let (addr, accepted) = counting_origin().await;
    let mg = Moongate::start(&conf(&format!(
        r#"keepalive = 8
servers = [ {{ addr = "{addr}" }} ]"#
    )));
    let c = client();
    for _ in 0..50 {
        let resp = c.get(mg.url("/")).send().await.expect("request");
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.text().await.expect("body"), "ok");
    }
    let n = accepted.load(Ordering::SeqCst);
    assert_eq!(n, 1, "{n} upstream connections for 50 requests in a row");
}

/// One pool for the process: a connection parked by one worker thread
/// carries the next request another thread serves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_threads_reuse_each_others_upstream_connections() {
    let (addr, accepted) = counting_origin().await;
    let mg = Moongate::start(&format!(
        "{}\n[upstream.app]\nkeepalive = 8\nservers = [ {{ addr = \"{addr}\" }} ]\n\n\
         [[route]]\npath = \"/\"\nupstream = \"app\"\n\
         lua.header_filter_inline = \"ngx.header['x-worker'] = ngx.worker.id()\"\n",
        server("")
    ));
    // A new client connection per request, so the kernel spreads them over
    // both workers' listening sockets; one request at a time.
    crate::support::install_crypto();
    let c = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(15))
        .build()
        .expect("client");
    let mut served = [0usize; 2];
    let mut switches = 0;
    let mut last = None;
    for _ in 0..400 {
        let resp = c.get(mg.url("/")).send().await.expect("request");
        assert_eq!(resp.status(), 200);
        let worker: usize = resp.headers()["x-worker"]
            .to_str()
            .expect("id")
            .parse()
            .expect("id");
        assert_eq!(resp.text().await.expect("body"), "ok");
        served[worker] += 1;
        if last.is_some_and(|l| l != worker) {
            switches += 1;
        }
        last = Some(worker);
        if served[0] >= 10 && served[1] >= 10 && switches >= 10 {
            break;
        }
    }
    assert!(
        served[0] >= 10 && served[1] >= 10 && switches >= 10,
        "both workers should serve, in turns: {served:?}, {switches} switches"
    );
    let n = accepted.load(Ordering::SeqCst);
    assert_eq!(
        n,
        1,
        "{n} upstream connections for {} requests served by both workers in turns",
        served[0] + served[1]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routing_by_host_path_and_method() {
    let names = [
        "exact-host",
        "wild-host",
        "api",
        "api-v2",
        "path-exact",
        "path-regex",
        "get-only",
    ];
    let mut origins = Vec::new();
    for name in names {
        origins.push(Origin::named(name).await);
    }
    let mut cfg = server("");
    for (name, o) in names.iter().zip(&origins) {
        cfg.push_str(&format!(
            "[upstream.{name}]\nservers = [ {{ addr = \"{}\" }} ]\n",
            o.addr
        ));
    }
    cfg.push_str(
        r#"
[[route]]
host = "app.example.com"
path = "/"
upstream = "exact-host"

[[route]]
host = "*.example.com"
path = "/"
upstream = "wild-host"

[[route]]
host = "*"
path = "/api/"
upstream = "api"

[[route]]
path = "/api/v2/"
upstream = "api-v2"

[[route]]
path_exact = "/exact"
upstream = "path-exact"

[[route]]
path_regex = "^/re/[0-9]+$"
upstream = "path-regex"

[[route]]
path = "/only/"
methods = ["GET", "PUT"]
upstream = "get-only"
"#,
    );
    let mg = Moongate::start(&cfg);
    let c = client();
    let ask = |method: reqwest::Method, host: &'static str, path: &'static str| {
        let req = c.request(method, mg.url(path)).header("host", host);
        async move {
            let resp = req.send().await.expect("request");
            let status = resp.status().as_u16();
            let allow = resp
                .headers()
                .get("allow")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            let origin = resp
                .headers()
                .get("x-origin")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            (status, origin, allow)
        }
    };
    let get = reqwest::Method::GET;
    let cases: [(&str, &str, u16, &str); 14] = [
        // The exact host wins over the wildcard and over `*`, even for
        // paths only the `*` group routes.
        ("app.example.com", "/anything", 200, "exact-host"),
        ("APP.example.com:8080", "/api/x", 200, "exact-host"),
        ("foo.example.com", "/x", 200, "wild-host"),
        ("a.b.example.com", "/api/x", 200, "wild-host"),
        // `*.example.com` does not cover example.com itself.
        ("example.com", "/api/x", 200, "api"),
        ("other.test", "/api/x", 200, "api"),
        ("other.test", "/api/v2/x", 200, "api-v2"),
        ("other.test", "/exact", 200, "path-exact"),
        ("other.test", "/exact/more", 404, ""),
        ("other.test", "/re/123", 200, "path-regex"),
        ("other.test", "/re/12a", 404, ""),
        ("other.test", "/only/x", 200, "get-only"),
        ("other.test", "/nowhere", 404, ""),
        ("other.test", "/", 404, ""),
    ];
    for (host, path, status, origin) in cases {
        let (s, o, _) = ask(get.clone(), host, path).await;
        assert_eq!((s, o.as_str()), (status, origin), "GET {host}{path}");
    }
    let (s, o, allow) = ask(reqwest::Method::POST, "other.test", "/only/x").await;
    assert_eq!((s, o.as_str()), (405, ""), "POST /only/x");
    let allowed: Vec<&str> = allow.split(',').map(str::trim).collect();
    assert!(
        allowed.contains(&"GET") && allowed.contains(&"PUT") && !allowed.contains(&"POST"),
        "Allow: {allow}"
    );
    let (s, o, _) = ask(reqwest::Method::PUT, "other.test", "/only/x").await;
    assert_eq!((s, o.as_str()), (200, "get-only"), "PUT /only/x");
}

/// An origin that answers one request per connection as keep-alive, then
/// closes the idle connection shortly after (as servers with a short
/// keep-alive timeout do): moongate must notice or retry, never fail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_closed_by_the_origin_are_not_reused() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65536];
                let mut got = Vec::new();
                // Read one request head (and a small body, if any).
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                    .await;
                tokio::time::sleep(Duration::from_millis(30)).await;
            });
        }
    });
    let mg = Moongate::start(&format!(
        r#"
{}
[upstream.app]
servers = [{{ addr = "{addr}", max_fails = 0 }}]

[[route]]
path = "/"
upstream = "app"
"#,
        server("")
    ));
    let http = client();
    for i in 0..6 {
        let get = http.get(mg.url("/")).send().await.expect("GET");
        assert_eq!(get.status(), 200, "GET {i}");
        tokio::time::sleep(Duration::from_millis(80)).await;
        let post = http
            .post(mg.url("/"))
            .body("payload")
            .send()
            .await
            .expect("POST");
        assert_eq!(post.status(), 200, "POST {i}");
        tokio::time::sleep(Duration::from_millis(80)).await;
    }
    assert!(
        accepted.load(Ordering::SeqCst) >= 12,
        "every request needed a new connection"
    );
}

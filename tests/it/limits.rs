//! Bad input gets a clear answer (SPEC §10): 404, 413, 431, 408, 400 over
//! raw sockets (clients would fix or refuse what is sent here), the
//! connection closed where the answer says so, the origin not bothered,
//! and the server none the worse afterwards.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::support::{self, Moongate, Origin};

/// A plain HTTP/1.1 client (rustls needs its provider even for http://).
fn client() -> reqwest::Client {
    support::install_crypto();
    support::client()
}

/// `[server]` on port 0 with `extra` keys, then `rest`.
fn conf(extra: &str, rest: &str) -> String {
    format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\nworkers = 2\naccess_log = \"off\"\n{extra}\n{rest}\n"
    )
}

/// An upstream `o` at `addr` and a route `/up` to it.
fn up_route(addr: SocketAddr) -> String {
    format!(
        "[upstream.o]\nservers = [{{ addr = \"{addr}\" }}]\n\n[[route]]\npath = \"/up\"\nupstream = \"o\"\n"
    )
}

/// What came back on a raw connection.
#[derive(Debug)]
struct Raw {
    /// Everything read.
    text: String,
    /// Whether the server closed (EOF or reset) before the wait ran out.
    closed: bool,
}

/// Reads until the server closes the connection or `wait` passes.
async fn read_until_close(s: &mut TcpStream, wait: Duration) -> Raw {
    let deadline = Instant::now() + wait;
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    let closed = loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break true,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Err(_) => break false,
        }
    };
    Raw {
        text: String::from_utf8_lossy(&out).into_owned(),
        closed,
    }
}

/// Sends `bytes` on a new connection, then reads until close or `wait`.
async fn raw(addr: SocketAddr, bytes: &[u8], wait: Duration) -> Raw {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    // The server may answer and close before reading everything: a failed
    // write is not the point, the answer is.
    let _ = s.write_all(bytes).await;
    read_until_close(&mut s, wait).await
}

/// Asserts the answer is one response with `status`, then a closed connection.
fn assert_status_and_closed(r: &Raw, status: u16, what: &str) {
    assert!(!r.text.is_empty(), "{what}: no answer at all: {r:?}");
    assert_eq!(support::raw_status(&r.text), status, "{what}: {:?}", r.text);
    assert!(r.text.starts_with("HTTP/1.1 "), "{what}: {:?}", r.text);
    assert!(r.closed, "{what}: connection left open after {status}");
    assert_eq!(
        r.text.matches("HTTP/1.1 ").count(),
        1,
        "{what}: more than one response: {:?}",
        r.text
    );
}

/// Reads one response (head + Content-Length body) from a keep-alive connection.
async fn read_one_response(s: &mut TcpStream) -> (String, Vec<u8>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut chunk))
            .await
            .expect("response head in time")
            .expect("read");
        assert!(n > 0, "closed before a response: {buf:?}");
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let len: usize = support::raw_content_length(&head).expect("content-length in response");
    let mut body = buf[head_end..].to_vec();
    while body.len() < len {
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut chunk))
            .await
            .expect("response body in time")
            .expect("read");
        assert!(n > 0, "closed inside a body");
        body.extend_from_slice(&chunk[..n]);
    }
    assert_eq!(body.len(), len, "no extra bytes after the body");
    (head, body)
}

const WAIT: Duration = Duration::from_secs(5);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_route_is_404() {
    // No routes at all.
    let mg = Moongate::start(&conf("", ""));
    let r = raw(
        mg.http[0],
        b"GET /anything HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n",
        WAIT,
    )
    .await;
    assert_eq!(support::raw_status(&r.text), 404, "{:?}", r.text);

    // A route table for another host and another path.
    let origin = Origin::named("app").await;
    let rest = format!(
        "[upstream.o]\nservers = [{{ addr = \"{}\" }}]\n\n[[route]]\nhost = \"a.test\"\npath = \"/app/\"\nupstream = \"o\"\n",
        origin.addr
    );
    let mg = Moongate::start(&conf("", &rest));
    let ask = |host: &str, path: &str| {
        format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").into_bytes()
    };
    let r = raw(mg.http[0], &ask("a.test", "/app/x"), WAIT).await;
    assert_eq!(support::raw_status(&r.text), 200, "the route works: {r:?}");
    assert_eq!(origin.hits(), 1);
    for (host, path) in [
        ("b.test", "/app/x"),
        ("a.test", "/other"),
        ("a.test", "/ap"),
        ("sub.a.test", "/app/x"),
    ] {
        let r = raw(mg.http[0], &ask(host, path), WAIT).await;
        assert_eq!(
            support::raw_status(&r.text),
            404,
            "{host}{path}: {:?}",
            r.text
        );
    }
    assert_eq!(origin.hits(), 1, "no 404 reached the origin");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_over_client_max_body_size_is_413() {
    let origin = Origin::start(support::echo).await;
    let mg = Moongate::start(&conf(
        "client_max_body_size = \"1KiB\"",
        &up_route(origin.addr),
    ));

    // Declared too large: refused before anything goes upstream.
    let r = raw(
        mg.http[0],
        b"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n",
        WAIT,
    )
    .await;
    assert_status_and_closed(&r, 413, "Content-Length: 5000");
    assert_eq!(origin.hits(), 0, "the origin saw the oversized request");

    // Chunked, 2 x 600 bytes: found out while streaming.
    let mut req = b"POST /up HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..2 {
        req.extend_from_slice(b"258\r\n");
        req.extend_from_slice(&[b'a'; 600]);
        req.extend_from_slice(b"\r\n");
    }
    let r = raw(mg.http[0], &req, WAIT).await;
    assert_status_and_closed(&r, 413, "chunked body of 1200 bytes");

    // Within the limit, both ways are fine.
    let small = client()
        .post(format!("http://{}/up", mg.http[0]))
        .body(vec![b'b'; 1000])
        .send()
        .await
        .expect("small body");
    assert_eq!(small.status(), 200);
    let json: serde_json::Value =
        serde_json::from_slice(&small.bytes().await.expect("echo json")).expect("echo json");
    assert_eq!(json["body_len"], 1000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_over_max_header_size_is_431() {
    let mg = Moongate::start(&conf("max_header_size = \"8KiB\"", ""));
    let mut req = b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: ".to_vec();
    req.extend_from_slice(&[b'h'; 20 * 1024]);
    req.extend_from_slice(b"\r\n\r\n");
    let r = raw(mg.http[0], &req, WAIT).await;
    assert_status_and_closed(&r, 431, "20 KiB header");

    // A head under the limit is served (here: 404, no routes).
    let mut req = b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Big: ".to_vec();
    req.extend_from_slice(&[b'h'; 4 * 1024]);
    req.extend_from_slice(b"\r\n\r\n");
    let r = raw(mg.http[0], &req, WAIT).await;
    assert_eq!(support::raw_status(&r.text), 404, "{:?}", r.text);
}

/// Request `n` on a keep-alive connection to the "ka" origin: 200, its body.
async fn get_ka(s: &mut TcpStream, n: usize) {
    s.write_all(b"GET /up HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let (head, body) = read_one_response(s).await;
    assert!(head.starts_with("HTTP/1.1 200"), "request {n}: {head}");
    assert_eq!(body, b"ka");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_head_is_408_and_idle_keepalive_closes_quietly() {
    let origin = Origin::named("ka").await;
    let mg = Moongate::start(&conf(
        "client_header_timeout = \"500ms\"\nkeepalive_timeout = \"500ms\"",
        &up_route(origin.addr),
    ));

    // Half a request line, then nothing.
    let r = raw(mg.http[0], b"GET /up HT", WAIT).await;
    assert!(r.text.starts_with("HTTP/1.1 408"), "{r:?}");
    assert!(r.closed, "connection left open after 408");
    assert_eq!(origin.hits(), 0);

    // Nothing at all after connecting is a slow head too.
    let r = raw(mg.http[0], b"", WAIT).await;
    assert!(r.text.starts_with("HTTP/1.1 408"), "{r:?}");
    assert!(r.closed);

    // Two requests on one connection, then idle: closed without a word.
    // Several connections at once, as the end of a response and the next
    // read of the socket may come in either order.
    let mut conns = Vec::new();
    for _ in 0..6 {
        let addr = mg.http[0];
        conns.push(tokio::spawn(async move {
            let mut s = TcpStream::connect(addr).await.expect("connect");
            for n in 1..=2 {
                get_ka(&mut s, n).await;
            }
            let rest = read_until_close(&mut s, WAIT).await;
            assert!(rest.closed, "idle keep-alive connection not closed");
            assert_eq!(rest.text, "", "an idle connection got bytes (a 408?)");
        }));
    }
    for c in conns {
        c.await.expect("keep-alive connection");
    }
    assert_eq!(origin.hits(), 12);
}

/// The keep-alive deadline runs from the end of each response, not from
/// the first one (the timer behind it fires early and is re-armed), and a
/// head begun on an idle connection gets `client_header_timeout` from its
/// first byte: 408, not a quiet close.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keepalive_deadline_moves_with_each_request_and_a_late_head_gets_408() {
    let origin = Origin::named("ka").await;
    let mg = Moongate::start(&conf(
        "client_header_timeout = \"600ms\"\nkeepalive_timeout = \"600ms\"",
        &up_route(origin.addr),
    ));
    let mut s = TcpStream::connect(mg.http[0]).await.expect("connect");
    let started = std::time::Instant::now();
    for n in 1..=6 {
        get_ka(&mut s, n).await;
        tokio::time::sleep(Duration::from_millis(350)).await;
    }
    // Six requests 350 ms apart: well past one keep-alive timeout in all.
    assert!(started.elapsed() > Duration::from_millis(1800));
    // Part of a head after 350 ms idle, then nothing: the head's deadline.
    s.write_all(b"GET /up HT").await.expect("write");
    let rest = read_until_close(&mut s, WAIT).await;
    assert!(rest.text.starts_with("HTTP/1.1 408"), "{rest:?}");
    assert!(rest.closed, "connection left open after 408");
    assert_eq!(origin.hits(), 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_body_is_408() {
    let complete = Arc::new(AtomicUsize::new(0));
    let seen = complete.clone();
    let origin = Origin::start(move |req| {
        let seen = seen.clone();
        async move {
            if let Ok(body) = req.into_body().collect().await
                && body.to_bytes().len() == 100
            {
                seen.fetch_add(1, Ordering::SeqCst);
            }
            support::text(200, "got it")
        }
    })
    .await;
    let mg = Moongate::start(&conf(
        "client_body_timeout = \"500ms\"",
        &up_route(origin.addr),
    ));
    let mut req = b"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n".to_vec();
    req.extend_from_slice(&[b'x'; 10]);
    let r = raw(mg.http[0], &req, WAIT).await;
    assert!(r.text.starts_with("HTTP/1.1 408"), "{r:?}");
    assert!(r.closed, "connection left open after 408");
    assert_eq!(complete.load(Ordering::SeqCst), 0);

    // The whole body in time goes through.
    let mut req =
        b"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\nConnection: close\r\n\r\n"
            .to_vec();
    req.extend_from_slice(&[b'x'; 100]);
    let r = raw(mg.http[0], &req, WAIT).await;
    assert_eq!(support::raw_status(&r.text), 200, "{r:?}");
    assert_eq!(complete.load(Ordering::SeqCst), 1);
}

/// Requests that must get 400 and a closed connection, never reaching the origin.
const BAD_REQUESTS: &[(&str, &[u8])] = &[
    (
        "Content-Length then Transfer-Encoding",
        b"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /up HTTP/1.1\r\nHost: x\r\n\r\n",
    ),
    (
        "Transfer-Encoding then Content-Length",
        b"POST /up HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\nGET /up HTTP/1.1\r\nHost: x\r\n\r\n",
    ),
    ("request line without target", b"GET\r\n\r\n"),
    (
        "request line without spaces",
        b"GARBAGE/HTTP/1.1\r\nHost: x\r\n\r\n",
    ),
    (
        "request line with a space in the target",
        b"GET /up x HTTP/1.1\r\nHost: x\r\n\r\n",
    ),
    (
        "header without colon",
        b"GET /up HTTP/1.1\r\nHost: x\r\nNoColonHere\r\n\r\n",
    ),
    ("HTTP/1.1 without Host", b"GET /up HTTP/1.1\r\n\r\n"),
    (
        "two different Content-Length values",
        b"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
    ),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_ambiguous_requests_are_400() {
    let origin = Origin::start(support::echo).await;
    let mg = Moongate::start(&conf("", &up_route(origin.addr)));
    for (what, req) in BAD_REQUESTS {
        let r = raw(mg.http[0], req, WAIT).await;
        assert_status_and_closed(&r, 400, what);
    }
    assert_eq!(origin.hits(), 0, "a bad request reached the origin");
}

/// Open file descriptors of a process.
fn fd_count(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_neither_leaks_nor_kills_the_server() {
    let origin = Origin::start(support::echo).await;
    let mg = Moongate::start(&conf(
        "client_max_body_size = \"1KiB\"\nmax_header_size = \"8KiB\"\n\
         client_header_timeout = \"500ms\"\nclient_body_timeout = \"500ms\"",
        &format!(
            "[admin]\nlisten = \"127.0.0.1:0\"\n\n{}",
            up_route(origin.addr)
        ),
    ));
    let http = client();
    // Warm up: both workers' pools may hold a connection to the origin.
    for _ in 0..4 {
        let r = http.get(mg.url("/up")).send().await.expect("warm-up");
        assert_eq!(r.status(), 200);
    }
    drop(http);
    let baseline = fd_count(mg.pid());

    let mut big_header = b"GET /up HTTP/1.1\r\nHost: x\r\nX-Big: ".to_vec();
    big_header.extend_from_slice(&[b'h'; 20 * 1024]);
    big_header.extend_from_slice(b"\r\n\r\n");
    let mut chunked =
        b"POST /up HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..2 {
        chunked.extend_from_slice(b"258\r\n");
        chunked.extend_from_slice(&[b'a'; 600]);
        chunked.extend_from_slice(b"\r\n");
    }
    let mut slow_body = b"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n".to_vec();
    slow_body.extend_from_slice(&[b'x'; 10]);
    let mut cases: Vec<(&str, Vec<u8>, u16)> = BAD_REQUESTS
        .iter()
        .map(|(what, req)| (*what, req.to_vec(), 400))
        .collect();
    cases.push(("big header", big_header, 431));
    cases.push((
        "declared big body",
        b"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n".to_vec(),
        413,
    ));
    cases.push(("chunked big body", chunked, 413));
    cases.push(("slow head", b"GET /up HTTP/1.1\r\nHos".to_vec(), 408));
    cases.push(("slow body", slow_body, 408));
    // Several rounds, all at once: a leak would add up.
    let mut tasks = Vec::new();
    for _ in 0..3 {
        for (what, req, status) in &cases {
            let (what, req, status, addr) = (*what, req.clone(), *status, mg.http[0]);
            tasks.push(tokio::spawn(async move {
                let r = raw(addr, &req, WAIT).await;
                assert!(!r.text.is_empty(), "{what}: no answer");
                assert_eq!(support::raw_status(&r.text), status, "{what}: {r:?}");
                assert!(r.closed, "{what}: left open");
            }));
        }
    }
    for t in tasks {
        t.await.expect("bad request task");
    }

    // Still serving, both the proxy and the admin listener.
    let http = client();
    for _ in 0..4 {
        let r = http
            .get(mg.url("/up"))
            .send()
            .await
            .expect("after bad input");
        assert_eq!(r.status(), 200);
    }
    let status = http
        .get(mg.admin_url("/status"))
        .send()
        .await
        .expect("admin status");
    assert_eq!(status.status(), 200);
    let _: serde_json::Value =
        serde_json::from_slice(&status.bytes().await.expect("status json")).expect("status json");
    drop(http);

    // Every client connection was let go (pooled upstream connections may
    // differ by a couple).
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let now = fd_count(mg.pid());
        if now <= baseline + 2 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "moongate holds {now} file descriptors, {baseline} before the bad requests"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

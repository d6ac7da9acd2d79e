//! moongate's own HTTP/1.1 server side, over raw sockets: pipelined
//! requests answered in order, `Expect: 100-continue`, chunked request
//! bodies, HTTP/1.0 framing and keep-alive, and the answers to heads it
//! cannot take.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::{self, Moongate, Origin};

const WAIT: Duration = Duration::from_secs(5);

fn conf(origin: SocketAddr) -> String {
    format!(
        r#"[server]
listen = ["127.0.0.1:0"]
workers = 1
access_log = "off"

[upstream.o]
servers = [{{ addr = "{origin}" }}]

[[route]]
path = "/"
upstream = "o"
"#
    )
}

/// Reads responses off `s` until `n` whole ones (Content-Length framed)
/// came, or the connection closed, or [`WAIT`] passed.
pub(crate) async fn responses(s: &mut TcpStream, n: usize) -> Vec<(String, String)> {
    let mut buf = Vec::new();
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    while out.len() < n {
        if let Some((head, body, used)) = split_one(&buf) {
            out.push((head, body));
            buf.drain(..used);
            continue;
        }
        let mut chunk = [0u8; 8192];
        let read = tokio::time::timeout_at(deadline, s.read(&mut chunk)).await;
        match read {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(k)) => buf.extend_from_slice(&chunk[..k]),
        }
    }
    out
}

/// One response at the front of `buf`: head, body, bytes used.
fn split_one(buf: &[u8]) -> Option<(String, String, usize)> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    if head.starts_with("HTTP/1.1 100 ") {
        return Some((head, String::new(), end));
    }
    let len: usize = support::raw_content_length(&head).unwrap_or(0);
    if buf.len() < end + len {
        return None;
    }
    let body = String::from_utf8_lossy(&buf[end..end + len]).into_owned();
    Some((head, body, end + len))
}

fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body:?}"))
}

/// Whether the server closed `s` (EOF within [`WAIT`]).
pub(crate) async fn closed(s: &mut TcpStream) -> bool {
    let mut b = [0u8; 64];
    matches!(
        tokio::time::timeout(WAIT, s.read(&mut b)).await,
        Ok(Ok(0)) | Ok(Err(_))
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_are_answered_in_order() {
    let origin = Origin::start(support::echo).await;
    let mg = Moongate::start(&conf(origin.addr));
    let mut s = TcpStream::connect(mg.http[0]).await.expect("connect");
    // Three requests in one write: a GET, a POST with a body, a chunked POST.
    s.write_all(
        b"GET /one HTTP/1.1\r\nHost: a\r\n\r\n\
          POST /two HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello\
          POST /three HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n4;ext=1\r\ndefg\r\n0\r\nX-Trailer: t\r\n\r\n",
    )
    .await
    .expect("write");
    let got = responses(&mut s, 3).await;
    assert_eq!(got.len(), 3, "{got:?}");
    let echoed: Vec<(String, u64)> = got
        .iter()
        .map(|(head, body)| {
            assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
            let j = json(body);
            (
                j["uri"].as_str().unwrap_or("").to_string(),
                j["body_len"].as_u64().unwrap_or(u64::MAX),
            )
        })
        .collect();
    assert_eq!(
        echoed,
        [("/one".into(), 0), ("/two".into(), 5), ("/three".into(), 7)]
    );
    // Still open for a fourth.
    s.write_all(b"GET /four HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let got = responses(&mut s, 1).await;
    assert_eq!(got.len(), 1);
    assert!(got[0].0.contains("connection: close\r\n"), "{}", got[0].0);
    assert!(closed(&mut s).await, "connection: close was not honoured");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expect_100_continue_is_answered_before_the_body_is_sent() {
    let origin = Origin::start(support::echo).await;
    let mg = Moongate::start(&conf(origin.addr));
    let mut s = TcpStream::connect(mg.http[0]).await.expect("connect");
    s.write_all(
        b"PUT /up HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n",
    )
    .await
    .expect("write");
    let got = responses(&mut s, 1).await;
    assert_eq!(got.len(), 1, "no 100 Continue before the body");
    assert!(
        got[0].0.starts_with("HTTP/1.1 100 Continue\r\n"),
        "{:?}",
        got[0]
    );
    s.write_all(b"data").await.expect("write");
    let got = responses(&mut s, 1).await;
    assert!(got[0].0.starts_with("HTTP/1.1 200 "), "{:?}", got[0]);
    assert_eq!(json(&got[0].1)["body_len"], 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_1_0_closes_unless_kept_alive() {
    let origin = Origin::start(support::echo).await;
    let mg = Moongate::start(&conf(origin.addr));
    let mut s = TcpStream::connect(mg.http[0]).await.expect("connect");
    s.write_all(b"GET /a HTTP/1.0\r\n\r\n")
        .await
        .expect("write");
    let got = responses(&mut s, 1).await;
    assert!(got[0].0.starts_with("HTTP/1.0 200 OK\r\n"), "{:?}", got[0]);
    assert!(closed(&mut s).await, "an HTTP/1.0 connection stayed open");

    let mut s = TcpStream::connect(mg.http[0]).await.expect("connect");
    for path in ["/b", "/c"] {
        let req = format!("GET {path} HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
        s.write_all(req.as_bytes()).await.expect("write");
        let got = responses(&mut s, 1).await;
        assert_eq!(got.len(), 1, "{path}");
        assert!(
            got[0].0.contains("connection: keep-alive\r\n"),
            "{:?}",
            got[0]
        );
        assert_eq!(json(&got[0].1)["uri"], path);
    }
}

/// An origin that answers every request with a chunked body (`hello`,
/// `world`), on a raw socket.
async fn chunked_origin() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        buf.drain(..end + 4);
                        let answer = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n5\r\nworld\r\n0\r\n\r\n";
                        if s.write_all(answer).await.is_err() {
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
    addr
}

/// A whole chunked body decoded, `None` if it is not one.
fn dechunk(mut wire: &str) -> Option<String> {
    let mut out = String::new();
    loop {
        let (size, rest) = wire.split_once("\r\n")?;
        let n = usize::from_str_radix(size, 16).ok()?;
        if n == 0 {
            return (rest == "\r\n").then_some(out);
        }
        out.push_str(rest.get(..n)?);
        wire = rest.get(n..)?.strip_prefix("\r\n")?;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_of_unknown_length_is_chunked_on_1_1_and_ends_the_connection_on_1_0() {
    let mg = Moongate::start(&conf(chunked_origin().await));
    let mut s = TcpStream::connect(mg.http[0]).await.expect("connect");
    s.write_all(b"GET /a HTTP/1.1\r\nHost: a\r\n\r\nGET /b HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut all = Vec::new();
    let _ = tokio::time::timeout(WAIT, s.read_to_end(&mut all)).await;
    let text = String::from_utf8_lossy(&all);
    let answers: Vec<&str> = text.split("HTTP/1.1 200 OK\r\n").skip(1).collect();
    assert_eq!(answers.len(), 2, "{text}");
    for answer in answers {
        let (head, body) = answer.split_once("\r\n\r\n").expect("a head");
        assert!(head.contains("transfer-encoding: chunked"), "{head}");
        assert_eq!(dechunk(body), Some("helloworld".to_string()), "{body:?}");
    }

    let mut s = TcpStream::connect(mg.http[0]).await.expect("connect");
    s.write_all(b"GET /c HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        .await
        .expect("write");
    let mut all = Vec::new();
    let read = tokio::time::timeout(WAIT, s.read_to_end(&mut all)).await;
    assert!(
        read.is_ok(),
        "a body without a length must end the HTTP/1.0 connection"
    );
    let text = String::from_utf8_lossy(&all);
    assert!(text.starts_with("HTTP/1.0 200 OK\r\n"), "{text}");
    assert!(
        !text.to_ascii_lowercase().contains("content-length"),
        "{text}"
    );
    assert!(!text.contains("transfer-encoding"), "{text}");
    assert!(!text.contains("keep-alive"), "{text}");
    assert!(text.ends_with("\r\n\r\nhelloworld"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heads_the_server_cannot_take_get_a_json_answer_and_a_close() {
    let origin = Origin::start(support::echo).await;
    let mg = Moongate::start(&conf(origin.addr));
    for (req, status) in [
        (&b"GET / HTTP/2.0\r\nHost: a\r\n\r\n"[..], 505),
        (b"GET / HTTP/1.1\r\nHost: a\r\nBad Name: v\r\n\r\n", 400),
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n", 400),
    ] {
        let mut s = TcpStream::connect(mg.http[0]).await.expect("connect");
        s.write_all(req).await.expect("write");
        let got = responses(&mut s, 1).await;
        assert_eq!(got.len(), 1, "{req:?}");
        assert_eq!(support::raw_status(&got[0].0), status, "{:?}", got[0]);
        assert!(got[0].0.contains("application/json"), "{:?}", got[0]);
        assert_eq!(json(&got[0].1)["status"], status);
        assert!(closed(&mut s).await);
    }
    assert_eq!(origin.hits(), 0);
}

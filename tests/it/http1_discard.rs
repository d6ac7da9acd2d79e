//! A request body its handler never read (a Lua `ngx.exit` in the access
//! phase, a 404) is read and dropped, as nginx's
//! `ngx_http_discard_request_body` does, and the next request on the
//! keep-alive connection is answered; a body over the bound, malformed, or
//! behind an unanswered `Expect: 100-continue` closes the connection
//! instead. Either way the body's bytes are never read as a request: each
//! body here carries a whole `GET /secret` request that must not be
//! answered.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::http1_server::{closed, responses};
use crate::support::{self, Moongate, Origin};

/// A whole request, smuggled in the bodies below.
const SECRET: &str = "GET /secret HTTP/1.1\r\nHost: a\r\n\r\n";

/// More than the connection reads and drops to stay open (256 KiB).
const OVER_BOUND: usize = 300 * 1024;

fn conf(origin: SocketAddr, extra: &str) -> String {
    format!(
        r#"[server]
listen = ["127.0.0.1:0"]
workers = 1
access_log = "off"
{extra}

[upstream.o]
servers = [{{ addr = "{origin}" }}]

[[route]]
path = "/echo/"
upstream = "o"

[[route]]
path_exact = "/early"
upstream = "o"
lua.access_inline = '''
ngx.say("early")
ngx.exit(200)
'''

[[route]]
path_exact = "/secret"
lua.content_inline = 'ngx.say("SECRET")'
"#
    )
}

/// The echo origin's view of a response body: the URI it was asked for.
fn echoed_uri(body: &str) -> String {
    let j: serde_json::Value =
        serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body:?}"));
    j["uri"].as_str().unwrap_or_default().to_string()
}

/// `SECRET` as one chunk, then chunks of `a` adding up to `pad` bytes,
/// then the last chunk and a trailer.
fn chunked_body(pad: usize) -> Vec<u8> {
    let mut b = format!("{:x}\r\n{SECRET}\r\n", SECRET.len()).into_bytes();
    let mut left = pad;
    while left > 0 {
        let n = left.min(4000);
        b.extend_from_slice(format!("{n:x}\r\n").as_bytes());
        b.extend(std::iter::repeat_n(b'a', n));
        b.extend_from_slice(b"\r\n");
        left -= n;
    }
    b.extend_from_slice(b"0\r\nX-Trailer: t\r\n\r\n");
    b
}

/// Writes `bytes` from a task of its own (a server that closes stops
/// reading, so a large write may never end), ignoring write errors.
fn write_behind(s: TcpStream, bytes: Vec<u8>) -> tokio::net::tcp::OwnedReadHalf {
    let (r, mut w) = s.into_split();
    tokio::spawn(async move {
        let _ = w.write_all(&bytes).await;
        // Kept open until the reader is done.
        tokio::time::sleep(Duration::from_secs(10)).await;
    });
    r
}

/// Everything read from `r` until the server closes it.
async fn read_to_close(mut r: tokio::net::tcp::OwnedReadHalf) -> String {
    let mut all = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), r.read_to_end(&mut all)).await;
    assert!(read.is_ok(), "the connection was not closed");
    String::from_utf8_lossy(&all).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unread_body_is_discarded_and_the_next_request_answered() {
    let origin = Origin::start(support::echo).await;
    let mg = Moongate::start(&conf(origin.addr, ""));
    let mut s = TcpStream::connect(mg.http[0]).await.expect("connect");
    // An access handler that answers without reading the body, a 404,
    // then a request for the origin: all in one write.
    let req = format!(
        "POST /early HTTP/1.1\r\nHost: a\r\nContent-Length: {n}\r\n\r\n{SECRET}\
         POST /nowhere HTTP/1.1\r\nHost: a\r\nContent-Length: {n}\r\n\r\n{SECRET}\
         GET /echo/next HTTP/1.1\r\nHost: a\r\n\r\n",
        n = SECRET.len()
    );
    s.write_all(req.as_bytes()).await.expect("write");
    let got = responses(&mut s, 4).await;
    assert_eq!(got.len(), 3, "{got:?}");
    assert!(got[0].0.starts_with("HTTP/1.1 200 "), "{got:?}");
    assert_eq!(got[0].1, "early\n");
    assert!(got[1].0.starts_with("HTTP/1.1 404 "), "{got:?}");
    assert!(got[2].0.starts_with("HTTP/1.1 200 "), "{got:?}");
    assert_eq!(echoed_uri(&got[2].1), "/echo/next");
    for (head, body) in &got {
        assert!(!head.contains("connection: close"), "{head}");
        assert!(!body.contains("SECRET"), "the body was read as a request");
    }
    // Still open.
    s.write_all(b"GET /echo/last HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .expect("write");
    let got = responses(&mut s, 1).await;
    assert_eq!(got.len(), 1, "the connection did not stay open");
    assert_eq!(echoed_uri(&got[0].1), "/echo/last");
    assert_eq!(origin.hits(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unread_chunked_body_is_discarded() {
    let origin = Origin::start(support::echo).await;
    let mg = Moongate::start(&conf(origin.addr, ""));
    let mut s = TcpStream::connect(mg.http[0]).await.expect("connect");
    let mut req = b"POST /early HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    req.extend(chunked_body(10_000));
    req.extend_from_slice(b"GET /echo/next HTTP/1.1\r\nHost: a\r\n\r\n");
    s.write_all(&req).await.expect("write");
    let got = responses(&mut s, 3).await;
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(got[0].1, "early\n");
    assert!(!got[0].0.contains("connection: close"), "{}", got[0].0);
    assert_eq!(echoed_uri(&got[1].1), "/echo/next");
    assert_eq!(origin.hits(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_still_arriving_after_the_response_is_discarded() {
    let origin = Origin::start(support::echo).await;
    let mg = Moongate::start(&conf(origin.addr, ""));
    let mut s = TcpStream::connect(mg.http[0]).await.expect("connect");
    let head = format!(
        "POST /early HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\n\r\nGET /se",
        SECRET.len()
    );
    s.write_all(head.as_bytes()).await.expect("write");
    // The answer comes before the body is complete, and keeps the
    // connection.
    let got = responses(&mut s, 1).await;
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].1, "early\n");
    assert!(!got[0].0.contains("connection: close"), "{}", got[0].0);
    let rest = format!("{}GET /echo/next HTTP/1.1\r\nHost: a\r\n\r\n", &SECRET[7..]);
    s.write_all(rest.as_bytes()).await.expect("write");
    let got = responses(&mut s, 2).await;
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(echoed_uri(&got[0].1), "/echo/next");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unread_body_over_the_bound_closes_the_connection() {
    let origin = Origin::start(support::echo).await;
    let mg = Moongate::start(&conf(origin.addr, ""));

    // Declared too large: the response says it closes, and it does.
    let s = TcpStream::connect(mg.http[0]).await.expect("connect");
    let mut req =
        format!("POST /early HTTP/1.1\r\nHost: a\r\nContent-Length: {OVER_BOUND}\r\n\r\n{SECRET}")
            .into_bytes();
    req.extend(std::iter::repeat_n(b'a', OVER_BOUND - SECRET.len()));
    req.extend_from_slice(b"GET /echo/next HTTP/1.1\r\nHost: a\r\n\r\n");
    let all = read_to_close(write_behind(s, req)).await;
    assert_eq!(all.matches("HTTP/1.1 ").count(), 1, "{all}");
    assert!(all.starts_with("HTTP/1.1 200 "), "{all}");
    assert!(all.contains("connection: close\r\n"), "{all}");
    assert!(all.ends_with("\r\n\r\nearly\n"), "{all}");

    // Chunked, found out while discarding: closed after the response.
    let s = TcpStream::connect(mg.http[0]).await.expect("connect");
    let mut req = b"POST /early HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    req.extend(chunked_body(OVER_BOUND));
    req.extend_from_slice(b"GET /echo/next HTTP/1.1\r\nHost: a\r\n\r\n");
    let all = read_to_close(write_behind(s, req)).await;
    assert_eq!(all.matches("HTTP/1.1 ").count(), 1, "{all}");
    assert!(all.ends_with("\r\n\r\nearly\n"), "{all}");
    assert!(!all.contains("SECRET"), "{all}");
    assert_eq!(origin.hits(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_or_unsent_unread_body_closes_the_connection() {
    let origin = Origin::start(support::echo).await;
    let mg = Moongate::start(&conf(origin.addr, ""));

    // A chunk size that is not hexadecimal: what follows cannot be told
    // apart from the body.
    let req = format!(
        "POST /early HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n\
         zz\r\n{SECRET}GET /echo/next HTTP/1.1\r\nHost: a\r\n\r\n"
    );
    let s = TcpStream::connect(mg.http[0]).await.expect("connect");
    let all = read_to_close(write_behind(s, req.into_bytes())).await;
    assert_eq!(all.matches("HTTP/1.1 ").count(), 1, "{all}");
    assert!(all.ends_with("\r\n\r\nearly\n"), "{all}");

    // Expect: 100-continue, never answered: the client may not send the
    // body, so the connection cannot wait for it.
    let mut s = TcpStream::connect(mg.http[0]).await.expect("connect");
    s.write_all(
        b"POST /early HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n",
    )
    .await
    .expect("write");
    let got = responses(&mut s, 1).await;
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(got[0].0.starts_with("HTTP/1.1 200 "), "{got:?}");
    assert!(got[0].0.contains("connection: close\r\n"), "{}", got[0].0);
    assert!(closed(&mut s).await);
    assert_eq!(origin.hits(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_over_client_max_body_size_still_gets_413_and_a_close() {
    let origin = Origin::start(support::echo).await;
    let mg = Moongate::start(&conf(origin.addr, "client_max_body_size = \"1KiB\""));
    let mut req = b"POST /echo/up HTTP/1.1\r\nHost: a\r\nContent-Length: 2000\r\n\r\n".to_vec();
    req.extend_from_slice(SECRET.as_bytes());
    req.extend(std::iter::repeat_n(b'a', 2000 - SECRET.len()));
    req.extend_from_slice(b"GET /echo/next HTTP/1.1\r\nHost: a\r\n\r\n");
    let s = TcpStream::connect(mg.http[0]).await.expect("connect");
    let all = read_to_close(write_behind(s, req)).await;
    assert_eq!(all.matches("HTTP/1.1 ").count(), 1, "{all}");
    assert!(all.starts_with("HTTP/1.1 413 "), "{all}");
    assert!(all.contains("connection: close\r\n"), "{all}");
    assert_eq!(origin.hits(), 0);
}

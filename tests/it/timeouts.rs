//! Send timeouts: a peer that stops reading the request, and a client that
//! stops reading the response, are cut off after `send_timeout` instead of
//! holding a connection forever.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::{Moongate, Origin};

/// A peer that accepts connections and never reads from them.
async fn deaf_peer() -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s);
        }
    });
    (addr, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_stops_reading_the_body_fails_after_send_timeout() {
    let (addr, _peer) = deaf_peer().await;
    let mg = Moongate::start(&format!(
        r#"
[server]
listen = ["127.0.0.1:0"]
workers = 1
access_log = "off"
client_max_body_size = "0"

[upstream.deaf]
send_timeout = "300ms"
read_timeout = "30s"
servers = [{{ addr = "{addr}", max_fails = 0 }}]

[[route]]
path = "/"
upstream = "deaf"
"#
    ));
    let total: u64 = 256 * 1024 * 1024;
    let stream = tokio::net::TcpStream::connect(mg.http[0])
        .await
        .expect("connect");
    let (mut rd, mut wr) = stream.into_split();
    // The client keeps sending (bounded); the answer must come long before
    // it could have sent it all, and be a gateway error.
    let writer = tokio::spawn(async move {
        let head = format!("POST /upload HTTP/1.1\r\nhost: x\r\ncontent-length: {total}\r\n\r\n");
        if wr.write_all(head.as_bytes()).await.is_err() {
            return;
        }
        let chunk = vec![b'x'; 64 * 1024];
        for _ in 0..(total / chunk.len() as u64) {
            if wr.write_all(&chunk).await.is_err() {
                return;
            }
        }
    });
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    let got = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    answer.extend_from_slice(&buf[..n]);
                    if answer.windows(4).any(|w| w == b"\r\n\r\n") {
                        break;
                    }
                }
            }
        }
    })
    .await;
    writer.abort();
    assert!(
        got.is_ok(),
        "no answer within 10 s: the stalled upstream write never timed out"
    );
    let text = String::from_utf8_lossy(&answer);
    assert!(
        text.starts_with("HTTP/1.1 502") || text.starts_with("HTTP/1.1 504"),
        "expected a gateway error, got {text:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_disconnected_after_send_timeout() {
    let big = bytes::Bytes::from(vec![b'y'; 64 * 1024 * 1024]);
    let origin = Origin::start(move |_req| {
        let big = big.clone();
        async move {
            hyper::Response::builder()
                .status(200)
                .body(http_body_util::Full::new(big))
                .expect("reply")
        }
    })
    .await;
    let mg = Moongate::start(&format!(
        r#"
[server]
listen = ["127.0.0.1:0"]
workers = 1
access_log = "off"
send_timeout = "300ms"

[upstream.big]
servers = [{{ addr = "{}" }}]

[[route]]
path = "/"
upstream = "big"
"#,
        origin.addr
    ));
    let mut s = tokio::net::TcpStream::connect(mg.http[0])
        .await
        .expect("connect");
    s.write_all(b"GET /big HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .expect("request");
    // Don't read: moongate's writes stall, and after send_timeout it must
    // give up on this client.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut received = 0usize;
    let mut buf = vec![0u8; 256 * 1024];
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return true,
                Ok(n) => received += n,
            }
        }
    })
    .await;
    assert_eq!(closed, Ok(true), "the connection was not closed");
    assert!(
        received < 64 * 1024 * 1024,
        "the whole body arrived ({received} bytes): the stalled write was not cut"
    );
}

//! Protocol upgrades are a way past routing: once a connection is spliced
//! to an origin, whatever the client sends next goes there unchecked. Only
//! the protocols a route lists (`websocket` by default) are forwarded;
//! `h2c` never is, and a 101 the client did not ask for is refused.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::support::{Moongate, moongate_check, raw_status};

/// An origin that records every byte it receives, answers a request that
/// asks to upgrade with 101 (after which it only records), and any other
/// request with 200 "ok". `always_101` switches even unasked.
async fn upgrading_origin(always_101: bool) -> (SocketAddr, Arc<Mutex<Vec<u8>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let log = log.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                let mut upgraded = false;
                loop {
                    let Ok(n) = s.read(&mut buf).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    log.lock().unwrap().extend_from_slice(&buf[..n]);
                    if upgraded {
                        continue;
                    }
                    head.extend_from_slice(&buf[..n]);
                    let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") else {
                        continue;
                    };
                    let text = String::from_utf8_lossy(&head[..end]).to_ascii_lowercase();
                    head.drain(..end + 4);
                    let asked = text
                        .lines()
                        .find_map(|l| l.strip_prefix("upgrade:"))
                        .map(|p| p.trim().to_string());
                    let switch = asked.clone().or(always_101.then(|| "h2c".to_string()));
                    let answer = match switch {
                        Some(proto) => {
                            upgraded = true;
                            format!(
                                "HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: {proto}\r\n\r\n"
                            )
                        }
                        None => "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok".to_string(),
                    };
                    if s.write_all(answer.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, seen)
}

fn conf(origin: SocketAddr, route_extra: &str) -> String {
    format!(
        r#"[server]
listen = ["127.0.0.1:0"]
workers = 1
access_log = "off"

[upstream.app]
servers = [{{ addr = "{origin}" }}]

[[route]]
path = "/"
upstream = "app"
{route_extra}
lua.access_inline = """
if ngx.var.uri == "/secret" then return ngx.exit(403) end
"""
"#
    )
}

/// Reads what arrives on `s` within `wait`.
async fn read_for(s: &mut TcpStream, wait: Duration) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + wait;
    while let Ok(Ok(n)) = tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn an_h2c_upgrade_is_never_forwarded_so_no_tunnel_reaches_a_denied_path() {
    let (origin, seen) = upgrading_origin(false).await;
    let mg = Moongate::start(&conf(origin, ""));
    let mut s = TcpStream::connect(mg.http[0]).await.expect("connect");
    s.write_all(
        b"GET /public HTTP/1.1\r\nHost: a.test\r\nConnection: Upgrade, HTTP2-Settings\r\n\
          Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n\r\n",
    )
    .await
    .expect("send upgrade request");
    let answer = read_for(&mut s, Duration::from_millis(500)).await;
    assert_eq!(raw_status(&answer), 200, "{answer}");
    assert!(answer.ends_with("ok"), "{answer}");
    // The tunnel attempt: what would travel inside an h2c connection, and
    // a plain request for the denied path on the same connection.
    let _ = s
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\nGET /secret HTTP/1.1\r\nHost: a.test\r\n\r\n")
        .await;
    let after = read_for(&mut s, Duration::from_millis(500)).await;
    assert!(
        !after.contains(" 200 "),
        "the tunnel got an answer: {after}"
    );
    let mut s2 = TcpStream::connect(mg.http[0]).await.expect("connect");
    s2.write_all(b"GET /secret HTTP/1.1\r\nHost: a.test\r\n\r\n")
        .await
        .expect("send");
    let denied = read_for(&mut s2, Duration::from_millis(500)).await;
    assert_eq!(raw_status(&denied), 403, "{denied}");

    let origin_saw = String::from_utf8_lossy(&seen.lock().unwrap()).to_ascii_lowercase();
    assert!(origin_saw.contains("get /public http/1.1"), "{origin_saw}");
    assert!(
        !origin_saw.contains("upgrade"),
        "Upgrade reached the origin:\n{origin_saw}"
    );
    assert!(!origin_saw.contains("http2-settings"), "{origin_saw}");
    assert!(
        !origin_saw.contains("/secret"),
        "the denied path reached the origin:\n{origin_saw}"
    );
    assert!(!origin_saw.contains("pri *"), "{origin_saw}");
}

#[tokio::test]
async fn a_route_may_list_other_protocols_but_never_h2c() {
    let (origin, seen) = upgrading_origin(false).await;
    let mg = Moongate::start(&conf(origin, r#"upgrade = ["websocket", "x-tunnel"]"#));
    let mut s = TcpStream::connect(mg.http[0]).await.expect("connect");
    s.write_all(
        b"GET /t HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: x-tunnel, h2c\r\n\r\n",
    )
    .await
    .expect("send");
    let answer = read_for(&mut s, Duration::from_millis(500)).await;
    assert_eq!(raw_status(&answer), 101, "{answer}");
    s.write_all(b"tunnelled bytes")
        .await
        .expect("write into the tunnel");
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !String::from_utf8_lossy(&seen.lock().unwrap()).contains("tunnelled bytes") {
        assert!(
            std::time::Instant::now() < deadline,
            "tunnel bytes never arrived"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let origin_saw = String::from_utf8_lossy(&seen.lock().unwrap()).to_ascii_lowercase();
    assert!(origin_saw.contains("upgrade: x-tunnel\r\n"), "{origin_saw}");
    assert!(!origin_saw.contains("h2c"), "{origin_saw}");

    let dir = tempfile::tempdir().expect("dir");
    std::fs::write(
        dir.path().join("00.toml"),
        "[upstream.a]\nservers = [{ addr = \"127.0.0.1:9\" }]\n[[route]]\npath = \"/\"\nupstream = \"a\"\nupgrade = [\"websocket\", \"h2c\"]\n",
    )
    .expect("write conf");
    let run = moongate_check(dir.path());
    assert_eq!(run.code, Some(1), "{}{}", run.stdout, run.stderr);
    assert!(
        run.stderr
            .contains("00.toml:6:25: `upgrade` cannot list \"h2c\""),
        "{}",
        run.stderr
    );
}

#[tokio::test]
async fn a_switch_nobody_asked_for_is_a_bad_gateway() {
    let (origin, _seen) = upgrading_origin(true).await;
    let mg = Moongate::start(&conf(origin, ""));
    let mut s = TcpStream::connect(mg.http[0]).await.expect("connect");
    s.write_all(b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .expect("send");
    let answer = read_for(&mut s, Duration::from_millis(800)).await;
    assert_eq!(raw_status(&answer), 502, "{answer}");
    assert!(answer.contains("\"status\":502"), "{answer}");
}

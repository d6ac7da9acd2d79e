//! Readiness of a new worker: polled until a deadline. Without a `ready`
//! path a worker is ready once its socket (or port) accepts a connection;
//! with one, once `GET {ready}` answers 2xx. The probe is a few lines of
//! HTTP/1.1 written by hand (`Connection: close`, read the status line), or
//! for a pool speaking uwsgi a uwsgi packet asking the same (the answer is
//! an HTTP/1.x response either way); for `h2` and `grpc` pools an HTTP/2
//! GET with prior knowledge.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};
use tokio::time::Instant;

use crate::config::{PeerAddr, Protocol};

/// Time between two probes.
const POLL: Duration = Duration::from_millis(50);

/// The longest one probe may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// The status line must arrive within this many bytes.
const MAX_HEAD: usize = 1024;

/// After the status line, the rest of the answer is read (so the app never
/// writes into a closed socket and logs a broken pipe) up to this many
/// bytes or [`REST_TIMEOUT`], whichever comes first.
const MAX_REST: usize = 64 * 1024;

/// See [`MAX_REST`]: for an app that keeps the connection open anyway.
const REST_TIMEOUT: Duration = Duration::from_millis(250);

/// Probes `addr` until it is ready or `deadline` passes; the error is the
/// last probe's outcome, for the log and `/status`.
pub(super) async fn wait_ready(
    addr: &PeerAddr,
    path: Option<&str>,
    protocol: Protocol,
    deadline: Instant,
) -> Result<(), String> {
    let mut last = String::from("no probe answered");
    loop {
        let now = Instant::now();
        if now >= deadline {
            return Err(last);
        }
        let budget = (deadline - now).min(PROBE_TIMEOUT);
        match tokio::time::timeout(budget, probe(addr, path, protocol)).await {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(e)) => last = e,
            Err(_) => last = "a probe got no answer in time".into(),
        }
        tokio::time::sleep_until((Instant::now() + POLL).min(deadline)).await;
    }
}

/// One probe.
pub(super) async fn probe(
    addr: &PeerAddr,
    path: Option<&str>,
    protocol: Protocol,
) -> Result<(), String> {
    match addr {
        PeerAddr::Unix(p) => {
            let stream = UnixStream::connect(p)
                .await
                .map_err(|e| format!("connect to {}: {e}", p.display()))?;
            ask(stream, path, protocol).await
        }
        PeerAddr::Tcp(a) => {
            let stream = TcpStream::connect(a)
                .await
                .map_err(|e| format!("connect to {a}: {e}"))?;
            ask(stream, path, protocol).await
        }
    }
}

/// Without a path, the connection is the answer; with one, the status
/// line of `GET path` must be 2xx.
async fn ask<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    path: Option<&str>,
    protocol: Protocol,
) -> Result<(), String> {
    let Some(path) = path else { return Ok(()) };
    let request = match protocol {
        Protocol::Http1 => format!(
            "GET {path} HTTP/1.1\r\nHost: localhost\r\nUser-Agent: moongate-ready\r\nConnection: close\r\n\r\n"
        )
        .into_bytes(),
        Protocol::Uwsgi => crate::upstream::uwsgi::probe_packet(path),
        Protocol::H2 | Protocol::Grpc => {
            return match crate::upstream::http2::probe(stream, path).await {
                Ok(code) if (200..300).contains(&code) => Ok(()),
                Ok(code) => Err(format!("GET {path} answered {code}")),
                Err(e) => Err(format!("GET {path}: {e}")),
            };
        }
    };
    stream
        .write_all(&request)
        .await
        .map_err(|e| format!("GET {path}: {e}"))?;
    let mut head = Vec::with_capacity(128);
    let mut buf = [0u8; 256];
    while !head.windows(2).any(|w| w == b"\r\n") && head.len() < MAX_HEAD {
        let n = stream
            .read(&mut buf)
            .await
            .map_err(|e| format!("GET {path}: {e}"))?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let code = status_code(&head);
    if code.is_some() {
        let rest = async {
            let mut total = head.len();
            while total < MAX_REST {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => total += n,
                }
            }
        };
        let _ = tokio::time::timeout(REST_TIMEOUT, rest).await;
    }
    match code {
        Some(code) if (200..300).contains(&code) => Ok(()),
        Some(code) => Err(format!("GET {path} answered {code}")),
        None => Err(format!("GET {path} got no HTTP status line")),
    }
}

/// The status code of an HTTP/1.x status line at the start of `head`.
fn status_code(head: &[u8]) -> Option<u16> {
    let end = head.windows(2).position(|w| w == b"\r\n")?;
    let line = std::str::from_utf8(&head[..end]).ok()?;
    let mut parts = line.split(' ');
    if !parts.next()?.starts_with("HTTP/1.") {
        return None;
    }
    let code = parts.next()?;
    if code.len() != 3 {
        return None;
    }
    code.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines() {
        assert_eq!(status_code(b"HTTP/1.1 200 OK\r\n"), Some(200));
        assert_eq!(
            status_code(b"HTTP/1.0 503 Service Unavailable\r\nx"),
            Some(503)
        );
        assert_eq!(status_code(b"HTTP/1.1 204\r\n"), Some(204));
        assert_eq!(status_code(b"HTTP/1.1 200 OK"), None);
        assert_eq!(status_code(b"SSH-2.0\r\n"), None);
        assert_eq!(status_code(b"HTTP/1.1 2000 OK\r\n"), None);
    }

    /// A listener answering every connection with `answer`.
    async fn server(answer: &'static [u8]) -> std::net::SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let mut buf = [0u8; 512];
                let _ = s.read(&mut buf).await;
                let _ = s.write_all(answer).await;
            }
        });
        addr
    }

    #[tokio::test]
    async fn a_2xx_is_ready_and_a_503_is_not() {
        let ok = PeerAddr::Tcp(server(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n").await);
        assert_eq!(probe(&ok, Some("/healthz"), Protocol::Http1).await, Ok(()));
        let busy = PeerAddr::Tcp(server(b"HTTP/1.1 503 Busy\r\n\r\n").await);
        assert_eq!(
            probe(&busy, Some("/healthz"), Protocol::Http1).await,
            Err("GET /healthz answered 503".into())
        );
        // Without a path, accepting is enough.
        assert_eq!(probe(&busy, None, Protocol::Http1).await, Ok(()));
    }

    #[tokio::test]
    async fn nobody_listening_times_out_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let addr = PeerAddr::Unix(dir.path().join("none.sock"));
        let err = wait_ready(
            &addr,
            None,
            Protocol::Http1,
            Instant::now() + Duration::from_millis(300),
        )
        .await
        .unwrap_err();
        assert!(err.contains("none.sock"), "{err}");
    }
}

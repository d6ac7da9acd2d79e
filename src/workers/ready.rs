//! Readiness of a new worker: polled until a deadline. Without a `ready`
//! path a worker is ready once its socket (or port) accepts a connection;
//! with one, once `GET {ready}` answers 2xx in the pool's protocol (the
//! probe is [`crate::upstream::probe`], shared with active health checks).

use std::path::Path;
use std::time::Duration;

use tokio::time::Instant;

use crate::config::{HealthRequest, PeerAddr, Protocol};
use crate::upstream::probe::{Target, probe};

/// Time between two probes.
const POLL: Duration = Duration::from_millis(50);

/// The longest one probe may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Probes `addr` until it is ready or `deadline` passes; the error is the
/// last probe's outcome, for the log and `/status`.
pub(super) async fn wait_ready(
    addr: &PeerAddr,
    path: Option<&str>,
    (protocol, root): (Protocol, Option<&Path>),
    deadline: Instant,
) -> Result<(), String> {
    let request = path.map(HealthRequest::get);
    let target = Target {
        addr,
        protocol,
        root,
        tls: None,
        connect_timeout: PROBE_TIMEOUT,
        agent: "moongate-ready",
    };
    let mut last = String::from("no probe answered");
    loop {
        let now = Instant::now();
        if now >= deadline {
            return Err(last);
        }
        let budget = (deadline - now).min(PROBE_TIMEOUT);
        match tokio::time::timeout(budget, probe(&target, request.as_ref())).await {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(e)) => last = e,
            Err(_) => last = "a probe got no answer in time".into(),
        }
        tokio::time::sleep_until((Instant::now() + POLL).min(deadline)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

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
        let soon = || Instant::now() + Duration::from_millis(300);
        let ok = PeerAddr::Tcp(server(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n").await);
        assert_eq!(
            wait_ready(&ok, Some("/healthz"), (Protocol::Http1, None), soon()).await,
            Ok(())
        );
        let busy = PeerAddr::Tcp(server(b"HTTP/1.1 503 Busy\r\n\r\n").await);
        assert_eq!(
            wait_ready(&busy, Some("/healthz"), (Protocol::Http1, None), soon()).await,
            Err("GET /healthz answered 503".into())
        );
        // Without a path, accepting is enough.
        assert_eq!(
            wait_ready(&busy, None, (Protocol::Http1, None), soon()).await,
            Ok(())
        );
    }

    #[tokio::test]
    async fn nobody_listening_times_out_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let addr = PeerAddr::Unix(dir.path().join("none.sock"));
        let err = wait_ready(
            &addr,
            None,
            (Protocol::Http1, None),
            Instant::now() + Duration::from_millis(300),
        )
        .await
        .unwrap_err();
        assert!(err.contains("none.sock"), "{err}");
    }
}

//! The client socket with the connection's deadlines. What the
//! connection is waiting for decides which deadline applies to reads
//! ([`ReadPhase`], set by the HTTP/1 server as the exchange goes on):
//!
//! - *head*: a request head is arriving; it must be complete within
//!   `client_header_timeout` (counted from accept, or from the first byte
//!   of a keep-alive request), else 408 is written and the connection
//!   closed (SPEC §10).
//! - *request*: a request is being served (its body has its own
//!   `client_body_timeout`), or the connection left HTTP/1's deadlines
//!   behind (HTTP/2, a tunnel after `101`).
//! - *idle*: between keep-alive requests; the connection is closed quietly
//!   after `keepalive_timeout`.
//!
//! Deadlines are plain values; the one timer behind them is a
//! [`LazyTimer`], so serving request after request does not touch tokio's
//! timer wheel. Writes that make no progress for `send_timeout` fail the
//! connection. Before anything else, [`ClientIo::sniff_h2`] reads far
//! enough to tell an HTTP/2 preface from an HTTP/1 request (the bytes are
//! replayed to whichever server takes the connection). On HTTP/1.1,
//! interim responses queued by the request being served
//! ([`crate::interim`]) are written ahead of anything else written, and
//! at each flush.

use std::io;
use std::pin::Pin;
use std::sync::Arc;

use http::StatusCode;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

use crate::interim::Interim;
use crate::lazy_timer::LazyTimer;
use crate::write_timed::WriteTimed;

/// The HTTP/2 connection preface (RFC 9113 §3.4).
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Timeouts applied to one client connection.
#[derive(Debug, Clone, Copy)]
pub struct ConnTimeouts {
    /// A request head must arrive within this.
    pub header: Duration,
    /// An idle keep-alive connection is closed after this.
    pub keepalive: Duration,
    /// A stalled write fails after this.
    pub send: Duration,
}

/// What the connection waits for, which decides the read deadline (see
/// the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadPhase {
    /// A request head: 408 at the header deadline.
    Head,
    /// Nothing the connection times: a request is served, or the
    /// connection speaks HTTP/2 or tunnels.
    Request,
    /// As `Request`, once the HTTP/1 response has begun to go out: a
    /// `100 Continue` still owed for the body is not sent any more (no
    /// interim response may follow the final one, RFC 9110 §15.2).
    Responding,
    /// The next keep-alive request: a quiet close at the keep-alive deadline.
    Idle,
}

/// The client socket with request-phase deadlines; see the module docs.
pub struct ClientIo<S> {
    inner: WriteTimed<S>,
    /// `client_header_timeout` and `keepalive_timeout` in milliseconds
    /// (rounded up): the read deadlines' lengths, kept small because every
    /// connection holds them.
    header_ms: u32,
    keepalive_ms: u32,
    phase: ReadPhase,
    /// When the phase's wait ends (head and idle phases).
    deadline: Instant,
    timer: LazyTimer,
    wrote_408: bool,
    /// Bytes read by [`ClientIo::sniff_h2`], handed out again first.
    replay: Vec<u8>,
    replayed: usize,
    /// The current request's interim responses (HTTP/1.1 only).
    interim: Option<Arc<Interim>>,
    /// Interim responses being written, and how much of them went out.
    interim_out: Vec<u8>,
    interim_sent: usize,
}

/// `d` in whole milliseconds, rounded up (so that a wait never ends
/// early), at most `u32::MAX` (49 days).
fn millis_ceil(d: Duration) -> u32 {
    let ms = d.as_nanos().div_ceil(1_000_000);
    u32::try_from(ms).unwrap_or(u32::MAX)
}

/// The instant `ms` milliseconds from now.
fn after_millis(ms: u32) -> Instant {
    Instant::now() + Duration::from_millis(u64::from(ms))
}

impl<S> ClientIo<S> {
    /// Wraps a freshly accepted (and, for TLS, handshaken) socket: a
    /// request head is expected within `client_header_timeout` from now.
    pub fn new(inner: S, timeouts: ConnTimeouts) -> Self {
        ClientIo {
            inner: WriteTimed::new(inner, timeouts.send),
            header_ms: millis_ceil(timeouts.header),
            keepalive_ms: millis_ceil(timeouts.keepalive),
            phase: ReadPhase::Head,
            deadline: Instant::now() + timeouts.header,
            timer: LazyTimer::new(),
            wrote_408: false,
            replay: Vec::new(),
            replayed: 0,
            interim: None,
            interim_out: Vec::new(),
            interim_sent: 0,
        }
    }

    /// Moves to `phase`; entering the head or idle phase starts its
    /// deadline from now (staying in one keeps its deadline).
    pub fn set_phase(&mut self, phase: ReadPhase) {
        if phase == self.phase {
            return;
        }
        self.phase = phase;
        match phase {
            ReadPhase::Head => self.deadline = after_millis(self.header_ms),
            ReadPhase::Idle => self.deadline = after_millis(self.keepalive_ms),
            ReadPhase::Request | ReadPhase::Responding => {}
        }
    }

    /// Whether the response of the request being served has begun.
    pub fn responding(&self) -> bool {
        self.phase == ReadPhase::Responding
    }

    /// Writes interim responses queued in `interim` ahead of whatever is
    /// written next (HTTP/1.1 connections).
    pub fn set_interim(&mut self, interim: Arc<Interim>) {
        self.interim = Some(interim);
    }

    /// Writes queued interim responses; ready when all are out.
    fn poll_interim(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>>
    where
        S: AsyncWrite + Unpin,
    {
        if let Some(q) = &self.interim
            && q.is_queued()
        {
            q.write_h1(&mut self.interim_out);
        }
        while self.interim_sent < self.interim_out.len() {
            let rest = &self.interim_out[self.interim_sent..];
            let n = std::task::ready!(Pin::new(&mut self.inner).poll_write(cx, rest))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.interim_sent += n;
        }
        if !self.interim_out.is_empty() {
            self.interim_out.clear();
            self.interim_sent = 0;
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> ClientIo<S> {
    /// Reads until the first bytes tell whether this is an HTTP/2
    /// connection (the prior-knowledge preface) or HTTP/1; what was read
    /// is replayed to the server that takes the connection. Fails like a
    /// read (408 after `client_header_timeout`).
    pub async fn sniff_h2(&mut self) -> io::Result<bool> {
        loop {
            let seen = &self.replay[..];
            if seen.len() >= PREFACE.len() || !PREFACE.starts_with(seen) {
                return Ok(seen.starts_with(PREFACE));
            }
            // Read straight into the replay buffer: a buffer on the stack
            // here would stay in the connection task's future for its life.
            let n = std::future::poll_fn(|cx| {
                let mut chunk = [0u8; 2048];
                let mut buf = ReadBuf::new(&mut chunk);
                std::task::ready!(self.poll_read_socket(cx, &mut buf))?;
                let n = buf.filled().len();
                self.replay.extend_from_slice(&chunk[..n]);
                Poll::Ready(Ok::<_, io::Error>(n))
            })
            .await?;
            if n == 0 {
                return Ok(false);
            }
        }
    }

    /// Whether [`ClientIo::sniff_h2`] read any byte (a connection closed
    /// before its first byte speaks no protocol).
    pub fn sniffed_any(&self) -> bool {
        !self.replay.is_empty()
    }

    /// Answers a connection that cannot be served (an HTTP/2 preface where
    /// ALPN chose HTTP/1.1) with `status`, then closes it.
    pub async fn refuse(&mut self, status: StatusCode) {
        use tokio::io::AsyncWriteExt;
        let raw = crate::error_page::raw_h1(status);
        let _ = self.inner.write_all(&raw).await;
        let _ = self.inner.shutdown().await;
    }

    /// Reads from the socket under the phase's deadline (see the module
    /// docs).
    fn poll_read_socket(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let pending = Pin::new(&mut self.inner).poll_read(cx, buf);
        if pending.is_ready() || matches!(self.phase, ReadPhase::Request | ReadPhase::Responding) {
            return pending;
        }
        if self.timer.poll_until(cx, self.deadline).is_pending() {
            return Poll::Pending;
        }
        if self.phase == ReadPhase::Idle {
            // Quiet close of an idle keep-alive connection: EOF.
            return Poll::Ready(Ok(()));
        }
        if !self.wrote_408 {
            self.wrote_408 = true;
            let raw = self.inner.get_mut();
            let answer = crate::error_page::raw_h1(StatusCode::REQUEST_TIMEOUT);
            let _ = Pin::new(&mut *raw).poll_write(cx, &answer);
            let _ = Pin::new(raw).poll_flush(cx);
        }
        Poll::Ready(Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "client_header_timeout: request head incomplete",
        )))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for ClientIo<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.replayed < this.replay.len() {
            let rest = &this.replay[this.replayed..];
            let n = rest.len().min(buf.remaining());
            buf.put_slice(&rest[..n]);
            this.replayed += n;
            if this.replayed == this.replay.len() {
                this.replay = Vec::new();
                this.replayed = 0;
            }
            return Poll::Ready(Ok(()));
        }
        this.poll_read_socket(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for ClientIo<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        std::task::ready!(self.poll_interim(cx))?;
        Pin::new(&mut self.inner).poll_write(cx, data)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        std::task::ready!(self.poll_interim(cx))?;
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // The HTTP/1 server flushes while the request's future waits when
        // interim responses are queued: that is when they go.
        std::task::ready!(self.poll_interim(cx))?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadline_lengths_round_up_to_whole_milliseconds() {
        assert_eq!(millis_ceil(Duration::from_secs(75)), 75_000);
        assert_eq!(
            millis_ceil(Duration::from_micros(500)),
            1,
            "never ends early"
        );
        assert_eq!(millis_ceil(Duration::from_micros(1_001)), 2);
        assert_eq!(millis_ceil(Duration::ZERO), 0);
        assert_eq!(millis_ceil(Duration::from_secs(u64::MAX)), u32::MAX);
    }
}

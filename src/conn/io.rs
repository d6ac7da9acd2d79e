//! The client socket with the connection's deadlines. A slow head gets 408
//! and a head naming both `Content-Length` and `Transfer-Encoding` 400
//! (SPEC §10), whichever server reads it, so the socket is wrapped in
//! [`ClientIo`], which follows each HTTP/1 exchange through three phases:
//!
//! - *in head*: bytes of a request head are arriving; the head must be
//!   complete within `client_header_timeout` (counted from accept, or from
//!   the first byte of a keep-alive request), else 408 is written and the
//!   connection closed. The head is scanned for the two framing headers.
//! - *in request*: the head is complete; the request is being served.
//! - *idle*: the response ended ([`ConnWatch::request_done`]); an idle
//!   keep-alive connection is closed quietly after `keepalive_timeout`.
//!
//! Writes that make no progress for `send_timeout` fail the connection.
//! Before anything else, [`ClientIo::sniff_h2`] reads far enough to tell
//! an HTTP/2 preface from an HTTP/1 request (the bytes are replayed to
//! whichever server takes the connection). An HTTP/2 connection is passed
//! through with only the write timeout: [`super::h2`] handles its streams.
//! On HTTP/1.1, interim responses queued by the request being served
//! ([`crate::interim`]) are written ahead of anything else written, and
//! at each flush.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;

use http::StatusCode;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use super::head_scan::HeadScan;
use crate::write_timed::WriteTimed;

use crate::conn_watch::{ConnWatch, H2, IDLE, IN_HEAD, IN_REQUEST};
use crate::interim::Interim;

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

/// The client socket with request-phase deadlines; see the module docs.
pub struct ClientIo<S> {
    inner: WriteTimed<S>,
    watch: Arc<ConnWatch>,
    timeouts: ConnTimeouts,
    timer_phase: u8,
    timer: Pin<Box<Sleep>>,
    scan: HeadScan,
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

impl<S> ClientIo<S> {
    /// Wraps a freshly accepted (and, for TLS, handshaken) socket.
    pub fn new(inner: S, watch: Arc<ConnWatch>, timeouts: ConnTimeouts) -> Self {
        ClientIo {
            inner: WriteTimed::new(inner, timeouts.send),
            watch,
            timeouts,
            timer_phase: IN_HEAD,
            timer: Box::pin(tokio::time::sleep(timeouts.header)),
            scan: HeadScan::default(),
            wrote_408: false,
            replay: Vec::new(),
            replayed: 0,
            interim: None,
            interim_out: Vec::new(),
            interim_sent: 0,
        }
    }

    fn set_phase(&mut self, phase: u8) {
        self.watch.set_phase(phase);
        self.sync_timer(phase);
    }

    fn sync_timer(&mut self, phase: u8) {
        if phase == self.timer_phase {
            return;
        }
        self.timer_phase = phase;
        match phase {
            IN_HEAD => self
                .timer
                .as_mut()
                .reset(Instant::now() + self.timeouts.header),
            IDLE => self
                .timer
                .as_mut()
                .reset(Instant::now() + self.timeouts.keepalive),
            _ => {}
        }
    }

    /// Writes interim responses queued in `interim` ahead of whatever is
    /// written next (HTTP/1.1 connections).
    pub fn set_interim(&mut self, interim: Arc<Interim>) {
        self.interim = Some(interim);
    }

    /// The connection speaks HTTP/2 from now on: no head scanning or
    /// request deadlines (h2 has its own streams).
    pub fn enter_h2(&mut self) {
        self.set_phase(H2);
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

    /// Answers a connection that cannot be served (an HTTP/2 preface where
    /// ALPN chose HTTP/1.1) with `status`, then closes it.
    pub async fn refuse(&mut self, status: StatusCode) {
        use tokio::io::AsyncWriteExt;
        let raw = crate::error_page::raw_h1(status);
        let _ = self.inner.write_all(&raw).await;
        let _ = self.inner.shutdown().await;
    }

    /// Reads from the socket, following the request phases (see the
    /// module docs).
    fn poll_read_socket(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self;
        let phase = this.watch.phase();
        this.sync_timer(phase);
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let new = &buf.filled()[before..];
                if new.is_empty() {
                    return Poll::Ready(Ok(()));
                }
                let mut phase = phase;
                if phase == H2 {
                    return Poll::Ready(Ok(()));
                }
                if phase == IDLE {
                    this.scan = HeadScan::default();
                    this.set_phase(IN_HEAD);
                    phase = IN_HEAD;
                }
                if phase == IN_HEAD && this.scan.feed(new).is_some() {
                    if this.scan.conflict() {
                        this.watch.note_conflict();
                    }
                    this.scan = HeadScan::default();
                    this.set_phase(IN_REQUEST);
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending => {
                if (phase == IN_HEAD || phase == IDLE) && this.timer.as_mut().poll(cx).is_ready() {
                    if phase == IDLE {
                        // Quiet close of an idle keep-alive connection: EOF.
                        return Poll::Ready(Ok(()));
                    }
                    if !this.wrote_408 {
                        this.wrote_408 = true;
                        let raw = this.inner.get_mut();
                        let answer = crate::error_page::raw_h1(StatusCode::REQUEST_TIMEOUT);
                        let _ = Pin::new(&mut *raw).poll_write(cx, &answer);
                        let _ = Pin::new(raw).poll_flush(cx);
                    }
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "client_header_timeout: request head incomplete",
                    )));
                }
                if phase == IN_REQUEST {
                    this.watch.park_reader(cx.waker());
                }
                Poll::Pending
            }
            other => other,
        }
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

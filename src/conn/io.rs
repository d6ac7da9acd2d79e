//! The client socket as hyper sees it. hyper closes a slow connection
//! silently and, for a request carrying both `Content-Length` and
//! `Transfer-Encoding`, quietly drops the length; moongate must answer 408
//! and 400 instead (SPEC §10). So the socket is wrapped in [`ClientIo`],
//! which follows each HTTP/1 exchange through three phases:
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
//! ([`super::interim`]) are written ahead of anything hyper writes.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

use http::StatusCode;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

const IN_HEAD: u8 = 0;
const IN_REQUEST: u8 = 1;
const IDLE: u8 = 2;
const H2: u8 = 3;

use super::interim::Interim;

/// The HTTP/2 connection preface (RFC 9113 §3.4).
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// What the connection's IO and its request handling tell each other.
#[derive(Debug)]
pub struct ConnWatch {
    phase: AtomicU8,
    conflict: AtomicBool,
    /// The reader parked while a request is served: hyper may poll the
    /// socket for the next head before the response body reports its end,
    /// and must be woken then to start the keep-alive timer.
    reader: Mutex<Option<Waker>>,
}

impl ConnWatch {
    /// A watch for a fresh connection (a request head is expected).
    pub fn new() -> Arc<Self> {
        Arc::new(ConnWatch {
            phase: AtomicU8::new(IN_HEAD),
            conflict: AtomicBool::new(false),
            reader: Mutex::new(None),
        })
    }

    /// The response of the current request has ended: the connection is idle.
    pub fn request_done(&self) {
        let idle = self
            .phase
            .compare_exchange(IN_REQUEST, IDLE, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok();
        let parked = self.reader.lock().ok().and_then(|mut w| w.take());
        if idle && let Some(waker) = parked {
            waker.wake();
        }
    }

    /// Remembers the reader to wake when the request is done.
    fn park_reader(&self, waker: &Waker) {
        if let Ok(mut slot) = self.reader.lock()
            && !slot.as_ref().is_some_and(|w| w.will_wake(waker))
        {
            *slot = Some(waker.clone());
        }
    }

    /// The connection leaves HTTP (a 101 upgrade): no more deadlines or
    /// head scanning; the tunnel lasts as long as both sides keep it open.
    pub fn passthrough(&self) {
        self.phase.store(H2, Ordering::Release);
    }

    /// Whether a request head on this connection carried both
    /// `Content-Length` and `Transfer-Encoding`.
    pub fn saw_conflicting_framing(&self) -> bool {
        self.conflict.load(Ordering::Relaxed)
    }
}

/// Arms a timer while writes make no progress.
struct WriteTimer {
    timeout: Duration,
    sleep: Option<Pin<Box<Sleep>>>,
    armed: bool,
}

impl WriteTimer {
    /// A timer that fails writes stalled for `timeout`.
    fn new(timeout: Duration) -> Self {
        WriteTimer {
            timeout,
            sleep: None,
            armed: false,
        }
    }

    /// Passes `result` through, turning a stall past the timeout into an error.
    fn check<T>(
        &mut self,
        cx: &mut Context<'_>,
        result: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        match result {
            Poll::Ready(r) => {
                self.armed = false;
                Poll::Ready(r)
            }
            Poll::Pending => {
                if !self.armed {
                    self.armed = true;
                    let deadline = Instant::now() + self.timeout;
                    match self.sleep.as_mut() {
                        Some(s) => s.as_mut().reset(deadline),
                        None => self.sleep = Some(Box::pin(tokio::time::sleep_until(deadline))),
                    }
                }
                let fired = self
                    .sleep
                    .as_mut()
                    .is_some_and(|s| s.as_mut().poll(cx).is_ready());
                if fired {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "send timeout: the peer is not reading",
                    )));
                }
                Poll::Pending
            }
        }
    }
}

/// A socket whose stalled writes fail after a timeout (reads pass through).
pub struct WriteTimed<S> {
    inner: S,
    writes: WriteTimer,
}

impl<S> WriteTimed<S> {
    /// Wraps `inner`; a write making no progress for `timeout` fails.
    pub fn new(inner: S, timeout: Duration) -> Self {
        WriteTimed {
            inner,
            writes: WriteTimer::new(timeout),
        }
    }

    /// The wrapped socket.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for WriteTimed<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for WriteTimed<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let r = Pin::new(&mut this.inner).poll_write(cx, data);
        this.writes.check(cx, r)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let r = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.writes.check(cx, r)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let r = Pin::new(&mut this.inner).poll_flush(cx);
        this.writes.check(cx, r)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

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
        self.watch.phase.store(phase, Ordering::Release);
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
            let mut chunk = [0u8; 2048];
            let n = std::future::poll_fn(|cx| {
                let mut buf = ReadBuf::new(&mut chunk);
                std::task::ready!(self.poll_read_socket(cx, &mut buf))?;
                Poll::Ready(Ok::<_, io::Error>(buf.filled().len()))
            })
            .await?;
            if n == 0 {
                return Ok(false);
            }
            self.replay.extend_from_slice(&chunk[..n]);
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
        let phase = this.watch.phase.load(Ordering::Acquire);
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
                        this.watch.conflict.store(true, Ordering::Relaxed);
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
                        let raw = &mut this.inner.inner;
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
        // hyper flushes after each turn of its loop, also while the
        // request's future waits: that is when queued interim responses go.
        std::task::ready!(self.poll_interim(cx))?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Finds the end of an HTTP/1 request head in a byte stream and notes
/// whether it named both `Content-Length` and `Transfer-Encoding`. The
/// answer does not depend on how the stream is split into reads.
#[derive(Default)]
pub(crate) struct HeadScan {
    name: [u8; 20],
    name_len: usize,
    in_name: bool,
    line_has_text: bool,
    lines: u32,
    cl: bool,
    te: bool,
}

impl HeadScan {
    /// Feeds bytes; once the blank line ending the head is seen, returns
    /// how many of `bytes` belong to the head (through that line's LF).
    /// Bytes after it are not looked at.
    pub(crate) fn feed(&mut self, bytes: &[u8]) -> Option<usize> {
        if self.lines == 0 && !self.line_has_text {
            self.in_name = true;
        }
        for (i, &b) in bytes.iter().enumerate() {
            match b {
                b'\n' => {
                    if !self.line_has_text {
                        if self.lines > 0 {
                            return Some(i + 1);
                        }
                        // Blank lines before the request line are ignored (RFC 9112 §2.2).
                        continue;
                    }
                    self.lines += 1;
                    self.line_has_text = false;
                    self.in_name = true;
                    self.name_len = 0;
                }
                b'\r' => {}
                _ => {
                    self.line_has_text = true;
                    if !self.in_name {
                        continue;
                    }
                    if b == b':' {
                        self.in_name = false;
                        if self.lines > 0 {
                            match &self.name[..self.name_len] {
                                b"content-length" => self.cl = true,
                                b"transfer-encoding" => self.te = true,
                                _ => {}
                            }
                        }
                    } else if self.name_len < self.name.len() {
                        self.name[self.name_len] = b.to_ascii_lowercase();
                        self.name_len += 1;
                    } else {
                        self.in_name = false;
                    }
                }
            }
        }
        None
    }

    /// Whether the head named both `Content-Length` and `Transfer-Encoding`.
    pub(crate) fn conflict(&self) -> bool {
        self.cl && self.te
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scan_finds_head_end_across_reads() {
        let mut s = HeadScan::default();
        assert_eq!(
            s.feed(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r"),
            None
        );
        assert_eq!(s.feed(b"\nTransfer-Encoding: chunked\r\n"), None);
        assert_eq!(s.feed(b"\r\n0\r\n\r\n"), Some(2));
        assert!(s.conflict());
    }

    #[test]
    fn scan_plain_head_has_no_conflict() {
        let mut s = HeadScan::default();
        let head = b"\r\nGET /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(s.feed(head), Some(head.len()));
        assert!(!s.conflict());
        let mut s = HeadScan::default();
        assert!(
            s.feed(b"GET /content-length: HTTP/1.1\r\nX-Content-Length: 1\r\nTransfer-Encoding: chunked\n\n")
                .is_some()
        );
        assert!(!s.conflict());
    }

    /// Scans `bytes` cut at `cuts` (offsets, any order): where the head
    /// ends (an offset into `bytes`) and whether it had both framings.
    fn scan_split(bytes: &[u8], cuts: &[usize]) -> (Option<usize>, bool) {
        let mut cuts: Vec<usize> = cuts.iter().map(|&c| c.min(bytes.len())).collect();
        cuts.push(bytes.len());
        cuts.sort_unstable();
        let mut s = HeadScan::default();
        let mut from = 0;
        for to in cuts {
            if let Some(n) = s.feed(&bytes[from..to]) {
                return (Some(from + n), s.conflict());
            }
            from = to;
        }
        (None, s.conflict())
    }

    /// Bytes that look like request heads often enough to reach every
    /// branch of the scanner.
    fn head_bytes() -> impl proptest::strategy::Strategy<Value = Vec<u8>> {
        use proptest::prelude::*;
        let piece = prop_oneof![
            Just(&b"\r\n"[..]),
            Just(&b"\n"[..]),
            Just(&b"\r"[..]),
            Just(&b"GET / HTTP/1.1"[..]),
            Just(&b"Content-Length: 3"[..]),
            Just(&b"transfer-encoding:chunked"[..]),
            Just(&b"Host: a"[..]),
            Just(&b":"[..]),
            Just(&b"x"[..]),
            Just(&b"a-very-long-header-name-indeed"[..]),
        ];
        proptest::collection::vec(piece, 0..24).prop_map(|p| p.concat())
    }

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config::with_cases(256))]

        #[test]
        fn scan_does_not_depend_on_the_reads(
            bytes in head_bytes(),
            cuts in proptest::collection::vec(0usize..400, 0..8),
        ) {
            proptest::prop_assert_eq!(scan_split(&bytes, &cuts), scan_split(&bytes, &[]));
        }
    }
}

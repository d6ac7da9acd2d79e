//! A socket whose writes fail after making no progress for a timeout
//! (nginx's `send_timeout` for clients, `proxy_send_timeout` for peers).
//! Shared by the client connection ([`crate::conn`]) and the upstream
//! HTTP/1.1 client ([`crate::upstream`]).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

use crate::lazy_timer::LazyTimer;

/// Times writes while they make no progress.
struct WriteTimer {
    timeout: Duration,
    /// When the stalled write fails; `None` while writes make progress.
    deadline: Option<Instant>,
    timer: LazyTimer,
}

impl WriteTimer {
    /// A timer that fails writes stalled for `timeout`.
    fn new(timeout: Duration) -> Self {
        WriteTimer {
            timeout,
            deadline: None,
            timer: LazyTimer::new(),
        }
    }

    /// Passes `result` through, turning a stall past the timeout into an error.
    fn check<T>(
        &mut self,
        cx: &mut Context<'_>,
        result: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        if result.is_ready() {
            self.deadline = None;
            return result;
        }
        let timeout = self.timeout;
        let deadline = *self
            .deadline
            .get_or_insert_with(|| Instant::now() + timeout);
        if self.timer.poll_until(cx, deadline).is_ready() {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "send timeout: the peer is not reading",
            )));
        }
        Poll::Pending
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

    /// Changes the timeout of later writes.
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.writes.timeout = timeout;
    }

    /// The timeout of writes.
    pub fn timeout(&self) -> Duration {
        self.writes.timeout
    }

    /// The wrapped socket (its timer, made on this thread's runtime, is
    /// dropped).
    pub fn into_inner(self) -> S {
        self.inner
    }

    /// The wrapped socket.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The wrapped socket, for a write that bypasses the timer (a last
    /// answer written once before closing).
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
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

//! The byte stream under a TCP cosocket: a TCP or unix-domain connection,
//! optionally wrapped in TLS, as one type the reader, writer and pool can
//! hold. Knows nothing of Lua.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpStream, UnixStream};
use tokio_rustls::client::TlsStream;

/// A connection before (or without) TLS.
pub enum Plain {
    /// `connect(host, port)`.
    Tcp(TcpStream),
    /// `connect("unix:/path")`.
    Unix(UnixStream),
}

/// What a cosocket reads and writes.
pub enum Stream {
    /// No TLS.
    Plain(Plain),
    /// After `sslhandshake`.
    Tls(Box<TlsStream<Plain>>),
}

impl Plain {
    /// Whether the connection may be handed out again from the pool: the
    /// peer has not closed it and sent nothing unasked. Peeks without
    /// blocking (a non-blocking socket answers `WouldBlock` when idle).
    pub fn is_idle_and_open(&self) -> bool {
        let mut byte = [std::mem::MaybeUninit::<u8>::uninit(); 1];
        let peeked = match self {
            Plain::Tcp(s) => socket2::SockRef::from(s).peek(&mut byte),
            Plain::Unix(s) => socket2::SockRef::from(s).peek(&mut byte),
        };
        matches!(peeked, Err(e) if e.kind() == io::ErrorKind::WouldBlock)
    }

    /// The TCP connection, for socket options (`None` for unix sockets).
    pub fn tcp(&self) -> Option<&TcpStream> {
        match self {
            Plain::Tcp(s) => Some(s),
            Plain::Unix(_) => None,
        }
    }
}

impl Stream {
    /// The connection under any TLS.
    pub fn plain(&self) -> &Plain {
        match self {
            Stream::Plain(p) => p,
            Stream::Tls(t) => t.get_ref().0,
        }
    }

    /// Whether `sslhandshake` has been done on it.
    pub fn is_tls(&self) -> bool {
        matches!(self, Stream::Tls(_))
    }

    /// See [`Plain::is_idle_and_open`]. TLS records the peer sent (a
    /// session ticket, a close_notify) count as unread data.
    pub fn is_idle_and_open(&self) -> bool {
        self.plain().is_idle_and_open()
    }
}

impl AsyncRead for Plain {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Plain::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Plain::Unix(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Plain {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Plain::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Plain::Unix(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Plain::Tcp(s) => Pin::new(s).poll_flush(cx),
            Plain::Unix(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Plain::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Plain::Unix(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

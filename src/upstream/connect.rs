//! Opening a new HTTP/1.1 connection to a peer over TCP or a unix socket.
//! The connection's driver runs as a task on this worker thread; writes
//! that stall for the upstream's `send_timeout` fail it.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpStream, UnixStream};

use super::pool::Sender;
use crate::config::PeerAddr;
use crate::conn::io::WriteTimer;
use crate::error::ProxyError;

/// Connects to `addr` within `connect_timeout` and starts the HTTP/1.1
/// connection task.
pub async fn connect(
    addr: &PeerAddr,
    connect_timeout: Duration,
    send_timeout: Duration,
) -> Result<Sender, ProxyError> {
    let stream = match tokio::time::timeout(connect_timeout, open(addr)).await {
        Err(_) => return Err(ProxyError::ConnectTimeout(addr.to_string())),
        Ok(Err(source)) => {
            return Err(ProxyError::Connect {
                addr: addr.to_string(),
                source,
            });
        }
        Ok(Ok(s)) => s,
    };
    let io = TokioIo::new(UpstreamIo {
        inner: stream,
        writes: WriteTimer::new(send_timeout),
    });
    let (sender, conn) = hyper::client::conn::http1::Builder::new()
        .handshake(io)
        .await
        .map_err(|source| ProxyError::Upstream {
            addr: addr.to_string(),
            source,
        })?;
    tokio::task::spawn_local(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(error = %e, "upstream connection ended");
        }
    });
    Ok(sender)
}

async fn open(addr: &PeerAddr) -> io::Result<Stream> {
    match addr {
        PeerAddr::Tcp(sa) => {
            let s = TcpStream::connect(sa).await?;
            s.set_nodelay(true)?;
            Ok(Stream::Tcp(s))
        }
        PeerAddr::Unix(path) => Ok(Stream::Unix(UnixStream::connect(path).await?)),
    }
}

enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

/// A peer socket whose stalled writes time out.
struct UpstreamIo {
    inner: Stream,
    writes: WriteTimer,
}

impl AsyncRead for UpstreamIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match &mut self.inner {
            Stream::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Unix(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for UpstreamIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let r = match &mut this.inner {
            Stream::Tcp(s) => Pin::new(s).poll_write(cx, data),
            Stream::Unix(s) => Pin::new(s).poll_write(cx, data),
        };
        this.writes.check(cx, r)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let r = match &mut this.inner {
            Stream::Tcp(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Unix(s) => Pin::new(s).poll_write_vectored(cx, bufs),
        };
        this.writes.check(cx, r)
    }

    fn is_write_vectored(&self) -> bool {
        match &self.inner {
            Stream::Tcp(s) => s.is_write_vectored(),
            Stream::Unix(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let r = match &mut this.inner {
            Stream::Tcp(s) => Pin::new(s).poll_flush(cx),
            Stream::Unix(s) => Pin::new(s).poll_flush(cx),
        };
        this.writes.check(cx, r)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.inner {
            Stream::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Unix(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

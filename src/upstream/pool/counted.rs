//! [`Counted`]: a peer connection that counts itself among its peer's open
//! connections from connect to close, wherever it goes meanwhile (idle in
//! the pool, carrying a request, moved to another thread), for the pool
//! figures of `GET /metrics`.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::peer_idle::PeerIdle;
use crate::upstream::h1::Socket;
use crate::upstream::rehome::rehome_in_place;

/// A socket counted open in its peer's pool while it lives.
pub struct Counted {
    socket: Box<dyn Socket>,
    peer: Arc<PeerIdle>,
}

impl Counted {
    /// Counts `socket`, just connected, as a connect and an open
    /// connection of `peer`.
    pub(super) fn new(socket: Box<dyn Socket>, peer: Arc<PeerIdle>) -> Counted {
        peer.connects.fetch_add(1, Ordering::Relaxed);
        peer.open.fetch_add(1, Ordering::Relaxed);
        Counted { socket, peer }
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.peer.open.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Socket for Counted {
    fn is_idle_open(&self) -> bool {
        self.socket.is_idle_open()
    }

    fn rehome(mut self: Box<Self>) -> io::Result<Box<dyn Socket>> {
        // The count stays with the moved socket.
        rehome_in_place(&mut self.socket)?;
        Ok(self)
    }
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.socket).poll_read(cx, buf)
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.socket).poll_write(cx, data)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.socket).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.socket.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.socket).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.socket).poll_shutdown(cx)
    }
}

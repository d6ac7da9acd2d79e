//! Moving an idle upstream connection to another worker thread.
//!
//! Each worker thread runs its own tokio runtime, and a tokio socket is
//! registered with the reactor (and its timers with the timer wheel) of
//! the runtime that opened it. A socket used from another thread would
//! still work, but its readiness would only be noticed when its first
//! thread polls its reactor, which couples the two threads' latencies. So
//! a connection taken from the shared pool by another thread than the one
//! that parked it is re-registered there first: the socket is taken out
//! of the old reactor (`into_std`, one `epoll_ctl` DEL) and put into the
//! current one (`from_std`, one ADD), and its timers are dropped, to be
//! made anew on the current runtime at their next use.
//!
//! TLS streams cannot be taken apart and rebuilt around a new socket
//! (tokio-rustls has no constructor from parts), so the socket under TLS
//! is moved in place ([`rehome_in_place`]).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpStream, UnixStream};

use super::h1::Socket;

/// A socket that can be moved to the current thread's runtime.
pub trait Rehome: Sized {
    /// The same socket, registered with the current runtime's reactor.
    /// Must be called on a runtime; fails when the socket cannot be
    /// re-registered (it is closed then).
    fn rehome(self) -> io::Result<Self>;
}

impl Rehome for TcpStream {
    fn rehome(self) -> io::Result<Self> {
        TcpStream::from_std(self.into_std()?)
    }
}

impl Rehome for UnixStream {
    fn rehome(self) -> io::Result<Self> {
        UnixStream::from_std(self.into_std()?)
    }
}

/// Moves the socket in `slot` to the current runtime in place (for a
/// socket held by `&mut` only, as under a TLS stream or a wrapper); the
/// slot holds a closed stand-in if that fails.
pub fn rehome_in_place(slot: &mut Box<dyn Socket>) -> io::Result<()> {
    let socket = std::mem::replace(slot, Box::new(Detached));
    *slot = socket.rehome()?;
    Ok(())
}

/// Stands in for a socket while it is being moved: every use fails.
struct Detached;

fn detached() -> io::Error {
    io::Error::new(
        io::ErrorKind::NotConnected,
        "the connection was lost while moving it to another worker thread",
    )
}

impl Socket for Detached {
    fn is_idle_open(&self) -> bool {
        false
    }

    fn rehome(self: Box<Self>) -> io::Result<Box<dyn Socket>> {
        Err(detached())
    }
}

impl AsyncRead for Detached {
    fn poll_read(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        _: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Poll::Ready(Err(detached()))
    }
}

impl AsyncWrite for Detached {
    fn poll_write(self: Pin<&mut Self>, _: &mut Context<'_>, _: &[u8]) -> Poll<io::Result<usize>> {
        Poll::Ready(Err(detached()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// The thread a socket was opened on: its runtime blocked (so its
    /// reactor is never polled) until the value is dropped, as a busy
    /// worker thread would be.
    struct Blocked {
        release: Option<std::sync::mpsc::Sender<()>>,
        thread: Option<std::thread::JoinHandle<()>>,
    }

    impl Drop for Blocked {
        fn drop(&mut self) {
            self.release.take();
            if let Some(t) = self.thread.take() {
                let _ = t.join();
            }
        }
    }

    /// A connected pair: the client end opened on another thread's
    /// runtime, which then blocks; the server end here.
    fn pair_from_another_runtime() -> (TcpStream, std::net::TcpStream, Blocked) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let (release, blocked) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let s = TcpStream::connect(addr).await.unwrap();
                tx.send(s).unwrap();
                // Blocks the runtime's only thread: its reactor is not
                // polled until the test ends.
                let _ = blocked.recv();
            });
        });
        let client = rx.recv().unwrap();
        let (server, _) = listener.accept().unwrap();
        let blocked = Blocked {
            release: Some(release),
            thread: Some(thread),
        };
        (client, server, blocked)
    }

    #[tokio::test]
    async fn a_moved_socket_is_woken_by_this_runtime() {
        let (client, mut server, _other) = pair_from_another_runtime();
        let mut client = client.rehome().unwrap();
        let reader = tokio::spawn(async move {
            let mut buf = [0u8; 5];
            client.read_exact(&mut buf).await.unwrap();
            client.write_all(b"pong!").await.unwrap();
            buf
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        let server = tokio::task::spawn_blocking(move || {
            use std::io::{Read, Write};
            server.write_all(b"ping!").unwrap();
            let mut back = [0u8; 5];
            server.read_exact(&mut back).unwrap();
            back
        });
        let got = tokio::time::timeout(Duration::from_secs(5), reader)
            .await
            .expect("woken by this runtime's reactor")
            .unwrap();
        assert_eq!(&got, b"ping!");
        assert_eq!(&server.await.unwrap(), b"pong!");
    }

    #[tokio::test]
    async fn a_socket_moves_in_place() {
        let (client, mut server, _other) = pair_from_another_runtime();
        let mut slot: Box<dyn Socket> = Box::new(client);
        rehome_in_place(&mut slot).unwrap();
        assert!(slot.is_idle_open());
        let write = tokio::task::spawn_blocking(move || {
            use std::io::Write;
            std::thread::sleep(Duration::from_millis(20));
            server.write_all(b"hello").unwrap();
        });
        let mut buf = [0u8; 5];
        tokio::time::timeout(Duration::from_secs(5), slot.read_exact(&mut buf))
            .await
            .expect("woken by this runtime's reactor")
            .unwrap();
        assert_eq!(&buf, b"hello");
        write.await.unwrap();
    }
}

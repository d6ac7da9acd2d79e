//! Handing a client connection over to a tunnel after `101 Switching
//! Protocols`. The HTTP/1 server puts a [`ClientUpgrade`] in the request's
//! extensions when the request asks for an upgrade; the proxy takes it
//! when the peer switched as asked, and awaits the connection: the server
//! sends it once the 101 head is written, with the bytes the client sent
//! after its request (they belong to the new protocol).

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::oneshot;

/// A client socket, whatever its transport.
pub trait ClientStream: AsyncRead + AsyncWrite + Unpin + Send {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send> ClientStream for T {}

/// The client's side of an upgraded connection.
pub struct Upgraded {
    /// The socket.
    pub io: Box<dyn ClientStream>,
    /// Bytes the client sent after its request head, not read yet by
    /// anyone: the first bytes of the new protocol.
    pub early: Bytes,
}

/// The promise of the client's connection after a 101 (in the request's
/// extensions, which want it `Clone`: clones share the one promise).
#[derive(Clone)]
pub struct ClientUpgrade(Arc<Mutex<Option<oneshot::Receiver<Upgraded>>>>);

/// The server's end of a [`ClientUpgrade`].
pub struct UpgradeSender(oneshot::Sender<Upgraded>);

impl ClientUpgrade {
    /// A promise and the sender that keeps it.
    pub fn pair() -> (UpgradeSender, ClientUpgrade) {
        let (tx, rx) = oneshot::channel();
        (
            UpgradeSender(tx),
            ClientUpgrade(Arc::new(Mutex::new(Some(rx)))),
        )
    }

    /// The connection, once the 101 went out; `None` when the server
    /// could not hand it over.
    pub async fn connection(self) -> Option<Upgraded> {
        let rx = self.0.lock().ok()?.take()?;
        rx.await.ok()
    }
}

impl UpgradeSender {
    /// Whether someone still waits for the connection.
    pub fn is_wanted(&self) -> bool {
        !self.0.is_closed()
    }

    /// Hands the connection over.
    pub fn send(self, up: Upgraded) {
        let _ = self.0.send(up);
    }
}

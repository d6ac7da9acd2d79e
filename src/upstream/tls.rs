//! TLS to an upstream's peers (`tls = {...}`, or `https://` peers): the
//! client configuration built once per upstream definition (trust roots,
//! verification, ALPN `h2` for `h2`/`grpc` or `http/1.1`), and the
//! handshake on a freshly connected socket, within `connect_timeout`. An
//! HTTP/2 upstream whose peer does not choose `h2` by ALPN fails the
//! connect, saying so, rather than speaking HTTP/2 at an HTTP/1 server.

use std::io;
use std::sync::Arc;

use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::h1::Socket;
use super::rehome::rehome_in_place;
use crate::config::{PeerAddr, Protocol, UpstreamTls};
use crate::tls_client::{TlsClients, Verify};

/// An upstream's TLS client side.
pub struct PeerTls {
    connector: TlsConnector,
    /// The name sent and checked; the peer's IP when `None`.
    server_name: Option<ServerName<'static>>,
    /// ALPN must pick `h2`.
    h2: bool,
}

impl PeerTls {
    /// The client side for `def`, or why there is none (an unreadable CA
    /// file, no system CA bundle).
    pub fn new(def: &UpstreamTls, protocol: Protocol) -> Result<PeerTls, String> {
        let clients = TlsClients::new(def.ca.clone());
        let verify = if def.verify {
            Verify::Chain { name: true }
        } else {
            Verify::Off
        };
        let mut config: ClientConfig = (*clients.config(verify)?).clone();
        let h2 = protocol.is_h2();
        config.alpn_protocols = vec![if h2 {
            b"h2".to_vec()
        } else {
            b"http/1.1".to_vec()
        }];
        let server_name = match &def.server_name {
            Some(name) => Some(
                ServerName::try_from(name.clone())
                    .map_err(|e| format!("server_name \"{name}\": {e}"))?,
            ),
            None => None,
        };
        Ok(PeerTls {
            connector: TlsConnector::from(Arc::new(config)),
            server_name,
            h2,
        })
    }

    /// The client side for a one-off HTTP/1.1 client (a JWKS fetch) over a
    /// configuration built elsewhere (`TlsClients::config`), sending and
    /// checking `server_name` (the peer's IP when `None`).
    pub fn from_config(
        config: Arc<ClientConfig>,
        server_name: Option<ServerName<'static>>,
    ) -> PeerTls {
        PeerTls {
            connector: TlsConnector::from(config),
            server_name,
            h2: false,
        }
    }

    /// The TLS handshake on `socket`, connected to `addr`.
    pub async fn handshake<S>(&self, socket: S, addr: &PeerAddr) -> io::Result<TlsStream<S>>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        let name = match (&self.server_name, addr) {
            (Some(name), _) => name.clone(),
            (None, PeerAddr::Tcp(a)) => ServerName::IpAddress(a.ip().into()),
            (None, PeerAddr::Unix(_)) => ServerName::try_from("localhost")
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?,
        };
        let stream = self.connector.connect(name, socket).await?;
        if self.h2 && stream.get_ref().1.alpn_protocol() != Some(b"h2") {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "the peer did not choose HTTP/2 (ALPN h2) in the TLS handshake",
            ));
        }
        Ok(stream)
    }
}

impl Socket for TlsStream<Box<dyn Socket>> {
    fn is_idle_open(&self) -> bool {
        self.get_ref().0.is_idle_open()
    }

    fn rehome(mut self: Box<Self>) -> io::Result<Box<dyn Socket>> {
        rehome_in_place(self.get_mut().0)?;
        Ok(self)
    }
}

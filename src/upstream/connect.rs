//! Opening a new connection to a peer over TCP (with TCP_NODELAY) or a
//! unix socket, within `connect_timeout`.

use std::time::Duration;

use tokio::net::{TcpStream, UnixStream};

use super::h1::{Conn, Socket};
use crate::config::PeerAddr;
use crate::error::ProxyError;

/// Connects to `addr`; writes on the connection that stall for
/// `send_timeout` fail.
pub async fn connect(
    addr: &PeerAddr,
    connect_timeout: Duration,
    send_timeout: Duration,
) -> Result<Conn, ProxyError> {
    Ok(Conn::new(
        connect_socket(addr, connect_timeout).await?,
        send_timeout,
    ))
}

/// Connects to `addr` and hands back the bare socket (for a protocol that
/// reads it with its own reader, like FastCGI).
pub async fn connect_socket(
    addr: &PeerAddr,
    connect_timeout: Duration,
) -> Result<Box<dyn Socket>, ProxyError> {
    match tokio::time::timeout(connect_timeout, open(addr)).await {
        Err(_) => Err(ProxyError::ConnectTimeout(addr.to_string())),
        Ok(Err(source)) => Err(ProxyError::Connect {
            addr: addr.to_string(),
            source,
        }),
        Ok(Ok(socket)) => Ok(socket),
    }
}

async fn open(addr: &PeerAddr) -> std::io::Result<Box<dyn Socket>> {
    match addr {
        PeerAddr::Tcp(sa) => {
            let s = TcpStream::connect(sa).await?;
            s.set_nodelay(true)?;
            Ok(Box::new(s))
        }
        PeerAddr::Unix(path) => Ok(Box::new(UnixStream::connect(path).await?)),
    }
}

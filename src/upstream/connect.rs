//! Opening a new connection to a peer over TCP (with TCP_NODELAY) or a
//! unix socket, and TLS on it for an upstream with `tls`, all within
//! `connect_timeout`.

use std::time::Duration;

use tokio::net::{TcpStream, UnixStream};

use super::h1::{Conn, Socket};
use super::tls::PeerTls;
use crate::config::PeerAddr;
use crate::error::ProxyError;

/// Connects to `addr`; writes on the connection that stall for
/// `send_timeout` fail.
pub async fn connect(
    addr: &PeerAddr,
    connect_timeout: Duration,
    send_timeout: Duration,
    tls: Option<&PeerTls>,
) -> Result<Conn, ProxyError> {
    let socket = connect_socket(addr, connect_timeout, tls).await?;
    Ok(Conn::new(socket, send_timeout))
}

/// Connects to `addr`, handing back the bare socket (for a protocol that
/// frames the connection itself, as HTTP/2 and FastCGI do).
pub async fn connect_socket(
    addr: &PeerAddr,
    connect_timeout: Duration,
    tls: Option<&PeerTls>,
) -> Result<Box<dyn Socket>, ProxyError> {
    match tokio::time::timeout(connect_timeout, open(addr, tls)).await {
        Err(_) => Err(ProxyError::ConnectTimeout(addr.to_string())),
        Ok(Err(source)) => Err(ProxyError::Connect {
            addr: addr.to_string(),
            source,
        }),
        Ok(Ok(socket)) => Ok(socket),
    }
}

async fn open(addr: &PeerAddr, tls: Option<&PeerTls>) -> std::io::Result<Box<dyn Socket>> {
    match addr {
        PeerAddr::Tcp(sa) => {
            let s = TcpStream::connect(sa).await?;
            s.set_nodelay(true)?;
            match tls {
                Some(tls) => Ok(Box::new(
                    tls.handshake(Box::new(s) as Box<dyn Socket>, addr).await?,
                )),
                None => Ok(Box::new(s)),
            }
        }
        PeerAddr::Unix(path) => {
            let s = UnixStream::connect(path).await?;
            match tls {
                Some(tls) => Ok(Box::new(
                    tls.handshake(Box::new(s) as Box<dyn Socket>, addr).await?,
                )),
                None => Ok(Box::new(s)),
            }
        }
    }
}

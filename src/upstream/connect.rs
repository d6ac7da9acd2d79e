//! Opening a new HTTP/1.1 connection to a peer over TCP or a unix socket.
//! The connection's driver runs as a task on this worker thread; writes
//! that stall for the upstream's `send_timeout` fail it.

use std::io;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpStream, UnixStream};

use super::pool::Sender;
use crate::config::PeerAddr;
use crate::conn::io::WriteTimed;
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
    let io = TokioIo::new(WriteTimed::new(stream, send_timeout));
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

/// Any connected byte stream (TCP or unix socket).
trait Socket: AsyncRead + AsyncWrite + Unpin + Send {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send> Socket for T {}

async fn open(addr: &PeerAddr) -> io::Result<Box<dyn Socket>> {
    match addr {
        PeerAddr::Tcp(sa) => {
            let s = TcpStream::connect(sa).await?;
            s.set_nodelay(true)?;
            Ok(Box::new(s))
        }
        PeerAddr::Unix(path) => Ok(Box::new(UnixStream::connect(path).await?)),
    }
}

//! One client connection: TLS handshake (for TLS listeners), then hyper's
//! HTTP/1.1 (keep-alive, upgrades) or HTTP/2 (ALPN `h2`, or prior
//! knowledge on plain listeners) on top of [`io::ClientIo`], which adds the
//! request-phase deadlines hyper lacks. Requests go to [`crate::proxy`].
//! On graceful stop the connection finishes its in-flight requests and
//! closes.

pub mod io;

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;

use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use crate::proxy::{self, ConnCtx};
use crate::state::Shared;
use io::{ClientIo, ConnTimeouts, ConnWatch};

/// Runs futures on the current thread's `LocalSet` (hyper's HTTP/2 streams
/// included), so request handling may hold thread-local state such as a
/// Lua VM.
#[derive(Clone, Copy, Debug, Default)]
pub struct LocalExec;

impl<F> hyper::rt::Executor<F> for LocalExec
where
    F: std::future::Future + 'static,
{
    fn execute(&self, fut: F) {
        tokio::task::spawn_local(fut);
    }
}

/// Serves one accepted TCP connection until it closes or `stop` fires.
/// `listener` is the configured address it was accepted on (the key its
/// TLS settings are found by).
pub async fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    listener: SocketAddr,
    tls: bool,
    shared: Arc<Shared>,
    stop: CancellationToken,
) {
    let _ = stream.set_nodelay(true);
    let local = stream.local_addr().unwrap_or(listener);
    let snap = shared.snapshot.load_full();
    let timeouts = ConnTimeouts {
        header: snap.server.client_header_timeout,
        keepalive: snap.server.keepalive_timeout,
        send: snap.server.send_timeout,
    };
    let max_header = snap.server.max_header_size;
    let tls_config = if tls {
        match snap.tls_for(listener) {
            Some(c) => Some(c),
            // The listener's TLS settings are gone (a reload is removing it):
            // refuse rather than answer in plain text.
            None => return,
        }
    } else {
        None
    };
    drop(snap);
    let ctx = |scheme| ConnCtx {
        peer,
        local,
        scheme,
        watch: ConnWatch::new(),
        shared,
    };
    let limits = (timeouts, max_header);
    match tls_config {
        None => run_http(stream, ctx("http"), stop, limits).await,
        Some(tls) => {
            let acceptor = tokio_rustls::TlsAcceptor::from(tls);
            let handshake = tokio::time::timeout(timeouts.header, acceptor.accept(stream));
            match handshake.await {
                Ok(Ok(tls_stream)) => run_http(tls_stream, ctx("https"), stop, limits).await,
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
            }
        }
    }
}

/// Serves HTTP on an established (plain or TLS) stream; `limits` are the
/// connection's timeouts and the request head size limit.
async fn run_http<S>(
    stream: S,
    ctx: ConnCtx,
    stop: CancellationToken,
    (timeouts, max_header): (ConnTimeouts, usize),
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let peer = ctx.peer;
    let io = TokioIo::new(ClientIo::new(stream, ctx.watch.clone(), timeouts));
    let ctx = Rc::new(ctx);
    let service = service_fn(move |req| {
        let ctx = ctx.clone();
        async move {
            // Each request first goes to the back of this thread's run
            // queue. hyper serves a keep-alive connection's next request in
            // the same turn when it has already arrived (up to 16 in a row),
            // so busy clients were served ahead of others: cache hits had a
            // p99 1.35x nginx's with a p50 of 0.6x. With the yield every
            // ready connection gets its turn, as in nginx's event loop: p99
            // 0.78x nginx's, and no loss of req/CPU-s (bench/RESULTS.md),
            // for ~2k instructions per request.
            tokio::task::yield_now().await;
            proxy::handle(req, ctx).await
        }
    });

    let mut builder = auto::Builder::new(LocalExec);
    builder
        .http1()
        .keep_alive(true)
        // hyper answers 431 when a request head outgrows the read buffer;
        // its floor is 8 KiB.
        .max_buf_size(max_header.max(8192))
        .header_read_timeout(None)
        .timer(TokioTimer::new());
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(256)
        .max_header_list_size(max_header as u32);
    let conn = builder.serve_connection_with_upgrades(io, service);
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        }
        _ = stop.cancelled() => {
            conn.as_mut().graceful_shutdown();
            if let Err(e) = conn.await {
                tracing::debug!(%peer, error = %e, "connection ended with an error while draining");
            }
        }
    }
}

//! One client connection: TLS handshake (for TLS listeners), then the
//! protocol it speaks — over TLS only the one ALPN chose (`h2`, else
//! HTTP/1.1), on plain listeners HTTP/1.1 or HTTP/2 with prior knowledge
//! (the first bytes tell) — on top of [`io::ClientIo`], which adds the
//! request-phase deadlines hyper lacks. HTTP/1.1 is hyper's, HTTP/2 our
//! own glue on the `h2` crate ([`h2`]). Requests go to [`crate::proxy`].
//! On graceful stop the connection finishes its in-flight requests and
//! closes.

pub mod io;
pub(crate) mod head_scan;
pub mod h2;

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;

use http::{StatusCode, Version};
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use crate::body::ClientBody;
use crate::conn_watch::ConnWatch;
use crate::interim::Interim;
use crate::proxy::{self, ConnCtx};
use crate::state::Shared;
use io::{ClientIo, ConnTimeouts};

/// hyper's default limit on request header lines.
const HYPER_MAX_HEADERS: usize = 100;

/// What a connection needs to know from the configuration when it starts.
#[derive(Debug, Clone, Copy)]
struct Limits {
    timeouts: ConnTimeouts,
    /// `max_header_size`: hyper's read buffer is sized from it.
    max_header: usize,
    /// `max_header_count`: hyper refuses longer heads with 431.
    max_headers: usize,
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
    let limits = Limits {
        timeouts: ConnTimeouts {
            header: snap.server.client_header_timeout,
            keepalive: snap.server.keepalive_timeout,
            send: snap.server.send_timeout,
        },
        max_header: snap.server.max_header_size,
        max_headers: snap.server.max_header_count,
    };
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
    let watch = ConnWatch::new();
    let ctx = |scheme| ConnCtx {
        peer,
        local,
        scheme,
        watch: watch.clone(),
        shared,
    };
    match tls_config {
        None => {
            let io = ClientIo::new(stream, watch.clone(), limits.timeouts);
            serve_sniffed(io, ctx("http"), stop, limits, true).await;
        }
        Some(tls) => {
            let acceptor = tokio_rustls::TlsAcceptor::from(tls);
            let handshake = tokio::time::timeout(limits.timeouts.header, acceptor.accept(stream));
            let tls_stream = match handshake.await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => return tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                Err(_) => return tracing::debug!(%peer, "TLS handshake timed out"),
            };
            // Only the protocol ALPN chose is spoken (RFC 9113 §3.3).
            let alpn_h2 = tls_stream.get_ref().1.alpn_protocol() == Some(b"h2");
            let mut io = ClientIo::new(tls_stream, watch.clone(), limits.timeouts);
            if alpn_h2 {
                io.enter_h2();
                h2::serve(io, ctx("https"), stop, h2_settings(limits)).await;
            } else {
                serve_sniffed(io, ctx("https"), stop, limits, false).await;
            }
        }
    }
}

fn h2_settings(limits: Limits) -> h2::Settings {
    h2::Settings {
        handshake_timeout: limits.timeouts.header,
        max_header_list: u32::try_from(limits.max_header).unwrap_or(u32::MAX),
    }
}

/// Reads the first bytes: an HTTP/2 preface goes to [`h2::serve`] when
/// `h2_allowed` (plain listeners: prior knowledge), else is answered 400
/// and closed (ALPN chose HTTP/1.1); anything else is HTTP/1.
async fn serve_sniffed<S>(
    mut io: ClientIo<S>,
    ctx: ConnCtx,
    stop: CancellationToken,
    limits: Limits,
    h2_allowed: bool,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let peer = ctx.peer;
    let sniffed = tokio::select! {
        r = io.sniff_h2() => r,
        // Stopping: a connection that has sent nothing yet just closes.
        _ = stop.cancelled() => return,
    };
    match sniffed {
        Ok(true) if h2_allowed => {
            io.enter_h2();
            h2::serve(io, ctx, stop, h2_settings(limits)).await;
        }
        Ok(true) => {
            tracing::debug!(%peer, "HTTP/2 preface on a connection where ALPN chose HTTP/1.1");
            io.refuse(StatusCode::BAD_REQUEST).await;
        }
        Ok(false) => run_h1(io, ctx, stop, limits).await,
        Err(e) => tracing::debug!(%peer, error = %e, "connection ended before a request"),
    }
}

/// Serves HTTP/1.1 with hyper on an established (plain or TLS) stream.
async fn run_h1<S>(mut io: ClientIo<S>, ctx: ConnCtx, stop: CancellationToken, limits: Limits)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let peer = ctx.peer;
    // Interim responses of the request being served are written ahead of
    // hyper's bytes by the socket wrapper.
    let interim = Arc::new(Interim::new());
    io.set_interim(interim.clone());
    let io = TokioIo::new(io);
    let ctx = Rc::new(ctx);
    let service = service_fn(move |req: http::Request<hyper::body::Incoming>| {
        let ctx = ctx.clone();
        // HTTP/1.0 clients get no interim responses (RFC 9110 §15.2).
        let interim = (req.version() == Version::HTTP_11).then(|| interim.clone());
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
            proxy::handle(req.map(ClientBody::H1), ctx, interim).await
        }
    });

    let mut builder = hyper::server::conn::http1::Builder::new();
    // hyper's own limit is 100 lines, parsed into arrays on the stack;
    // naming any limit makes it fill arrays of that size on every parse
    // (~1.5k instructions a request for 100), so only a different one is.
    if limits.max_headers != HYPER_MAX_HEADERS {
        builder.max_headers(limits.max_headers);
    }
    builder
        .keep_alive(true)
        // hyper answers 431 itself when a head outgrows its read buffer (at
        // least 8 KiB) or has more header lines than `max_headers`; heads
        // within the buffer are measured exactly by the proxy's checks. The
        // same bound caps hyper's write buffer: a larger one holds back a
        // response head until a body error discards it (the client then
        // sees no answer at all instead of a cut body).
        .max_buf_size(limits.max_header.max(8192))
        .header_read_timeout(None)
        .timer(TokioTimer::new());
    let conn = builder.serve_connection(io, service).with_upgrades();
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

//! One client connection: TLS handshake (for TLS listeners), then the
//! protocol it speaks — over TLS only the one ALPN chose (`h2`, else
//! HTTP/1.1), on plain listeners HTTP/1.1 or HTTP/2 with prior knowledge
//! (the first bytes tell) — on top of [`io::ClientIo`], which keeps the
//! connection's deadlines. HTTP/1.1 is moongate's own server side
//! ([`h1`]), HTTP/2 our glue on the `h2` crate ([`h2`]). Requests go to
//! [`crate::proxy`].
//! On graceful stop (SIGTERM, or a binary upgrade's old process) the
//! connection finishes its in-flight requests and closes: an HTTP/1
//! response written after the stop says `Connection: close`, and a
//! connection between requests (or not yet past its first bytes) waits
//! [`STOP_GRACE`] for a request the client may already have sent — closing
//! at once would lose it, and a busy keep-alive client always has one on
//! the way — answers it, and closes. While metrics are on it is counted
//! open (with the protocol it speaks, once known) until its future ends.

pub mod io;
pub(crate) mod h1;
pub mod h2;

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;

use http::{HeaderValue, StatusCode};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_util::either::Either;
use tokio_util::sync::CancellationToken;

use crate::metrics::{ConnCounters, OpenConn, Protocol};
use crate::proxy::ConnCtx;
use crate::state::Shared;
use crate::worker_local::WorkerLocal;
use io::{ClientIo, ConnTimeouts, ReadPhase};

/// How long a connection idle at a graceful stop still waits for a
/// request: a client that got its last answer just before the stop sends
/// the next one within a round trip; one idle longer is closed as by the
/// keep-alive timeout.
pub(crate) const STOP_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

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
/// TLS settings are found by), `counted` its connection counters;
/// `worker` is the state of the worker thread serving it. Not an `async
/// fn`: what the connection is set up with is made before its future,
/// which then holds each part once (an idle connection's memory is
/// mostly this future).
#[allow(clippy::too_many_arguments)]
pub fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    listener: SocketAddr,
    tls: bool,
    counted: &Arc<ConnCounters>,
    shared: Arc<Shared>,
    worker: Rc<WorkerLocal>,
    stop: CancellationToken,
) -> impl Future<Output = ()> + use<> {
    let _ = stream.set_nodelay(true);
    let local = stream.local_addr().unwrap_or(listener);
    let snap = shared.snapshot.load_full();
    let open = snap.metrics.then(|| counted.open());
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
            None => return Either::Left(Either::Left(std::future::ready(()))),
        }
    } else {
        None
    };
    drop(snap);
    let peer_ip_text = HeaderValue::from_str(&peer.ip().to_string())
        .unwrap_or_else(|_| HeaderValue::from_static(""));
    let serial = shared
        .connections
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        + 1;
    let ctx = move |scheme| {
        Rc::new(ConnCtx {
            peer,
            peer_ip_text,
            local,
            scheme,
            shared,
            worker,
            serial,
            requests: std::cell::Cell::new(0),
            raw_head: std::cell::RefCell::default(),
        })
    };
    match tls_config {
        None => {
            let io = ClientIo::new(stream, limits.timeouts);
            Either::Left(Either::Right(serve_sniffed(
                io,
                ctx("http"),
                stop,
                limits,
                true,
                open,
            )))
        }
        // Boxed, like the HTTP/2 server: a plain HTTP/1 connection should
        // not carry the TLS session's space (a TLS one holds rustls'
        // buffers anyway).
        Some(tls) => Either::Right(Box::pin(serve_tls(stream, tls, ctx, stop, limits, open))),
    }
}

/// Runs `serving`, the connection counted open (if it is) until it ends.
fn while_open<F: Future<Output = ()>>(
    serving: F,
    open: Option<OpenConn>,
) -> impl Future<Output = ()> {
    use futures_util::FutureExt;
    serving.map(move |()| drop(open))
}

/// The TLS handshake, then the protocol ALPN chose; `open` counts the
/// connection (a failed handshake closes it as speaking no protocol).
async fn serve_tls(
    stream: TcpStream,
    tls: Arc<rustls::ServerConfig>,
    ctx: impl FnOnce(&'static str) -> Rc<ConnCtx>,
    stop: CancellationToken,
    limits: Limits,
    mut open: Option<OpenConn>,
) {
    let peer = stream.peer_addr().ok();
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let handshake = tokio::time::timeout(limits.timeouts.header, acceptor.accept(stream));
    let tls_stream = match handshake.await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return tracing::debug!(?peer, error = %e, "TLS handshake failed"),
        Err(_) => return tracing::debug!(?peer, "TLS handshake timed out"),
    };
    // Only the protocol ALPN chose is spoken (RFC 9113 §3.3).
    let alpn_h2 = tls_stream.get_ref().1.alpn_protocol() == Some(b"h2");
    let mut io = ClientIo::new(tls_stream, limits.timeouts);
    if alpn_h2 {
        if let Some(open) = &mut open {
            open.speaks(Protocol::H2);
        }
        // HTTP/2 keeps its own deadlines.
        io.set_phase(ReadPhase::Request);
        Box::pin(h2::serve(io, ctx("https"), stop, h2_settings(limits))).await;
        drop(open);
    } else {
        serve_sniffed(io, ctx("https"), stop, limits, false, open).await;
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
/// and closed (ALPN chose HTTP/1.1); anything else is HTTP/1. `open`
/// counts the connection under the protocol chosen.
///
/// Two stages, one after the other in the same space: the sniff (holding
/// the socket and what the connection is set up with), then the protocol's
/// server, which took them over. An `async` block around both would keep
/// room for the first stage's parts for the connection's whole life.
fn serve_sniffed<S>(
    io: ClientIo<S>,
    ctx: Rc<ConnCtx>,
    stop: CancellationToken,
    limits: Limits,
    h2_allowed: bool,
    mut open: Option<OpenConn>,
) -> impl Future<Output = ()>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    use futures_util::FutureExt;
    // The sniff is boxed: it holds the socket until the protocol's server
    // takes it, and unboxed it would size the whole connection's future
    // (a task of 640 bytes instead of 512 for every idle connection).
    Box::pin(sniff(io, stop)).then(move |(mut io, stop, sniffed)| {
        let peer = ctx.peer;
        let speaks = |protocol| {
            if let Some(open) = &mut open {
                open.speaks(protocol);
            }
            open
        };
        match sniffed {
            Some(Ok(true)) if h2_allowed => {
                io.set_phase(ReadPhase::Request);
                let serving = h2::serve(io, ctx, stop, h2_settings(limits));
                Either::Left(Either::Left(Box::pin(while_open(
                    serving,
                    speaks(Protocol::H2),
                ))))
            }
            Some(Ok(true)) => {
                tracing::debug!(%peer, "HTTP/2 preface on a connection where ALPN chose HTTP/1.1");
                let refusing = while_open(refuse_h2(io), speaks(Protocol::None));
                Either::Left(Either::Right(refusing))
            }
            Some(Ok(false)) => {
                // Closed before its first byte: HTTP/1's server sees the
                // end, but the connection spoke nothing.
                let protocol = if io.sniffed_any() {
                    Protocol::H1
                } else {
                    Protocol::None
                };
                let serving = h1::serve(io, ctx, stop, limits);
                Either::Right(Either::Left(while_open(serving, speaks(protocol))))
            }
            Some(Err(e)) => {
                tracing::debug!(%peer, error = %e, "connection ended before a request");
                Either::Right(Either::Right(std::future::ready(())))
            }
            // Stopping: a connection that sent nothing within the grace closes.
            None => Either::Right(Either::Right(std::future::ready(()))),
        }
    })
}

/// Waits for the first bytes (after a stop, [`STOP_GRACE`] at most):
/// whether they are HTTP/2's preface, `None` when none came; the socket
/// and the token go back.
// Not `async fn`s: a `mut` argument would be held twice (as the argument
// and as the local it becomes).
#[expect(
    clippy::manual_async_fn,
    reason = "an async fn holds its arguments twice"
)]
fn sniff<S>(
    mut io: ClientIo<S>,
    stop: CancellationToken,
) -> impl Future<
    Output = (
        ClientIo<S>,
        CancellationToken,
        Option<std::io::Result<bool>>,
    ),
>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    async move {
        let sniffed = tokio::select! {
            r = io.sniff_h2() => Some(r),
            _ = stop.cancelled() => {
                let last_call = tokio::time::timeout(STOP_GRACE, io.sniff_h2());
                Box::pin(last_call).await.ok()
            }
        };
        (io, stop, sniffed)
    }
}

/// Answers an HTTP/2 preface that ALPN did not agree to with 400.
#[expect(
    clippy::manual_async_fn,
    reason = "an async fn holds its arguments twice"
)]
fn refuse_h2<S>(mut io: ClientIo<S>) -> impl Future<Output = ()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    async move { io.refuse(StatusCode::BAD_REQUEST).await }
}

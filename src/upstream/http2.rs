//! HTTP/2 to peers (`protocol = "h2"` and `protocol = "grpc"`: with prior
//! knowledge, or over TLS with ALPN `h2` when the upstream has `tls`): one try of a request on a stream of a multiplexed
//! connection ([`conns`]), the request body sent as the peer's window
//! allows ([`pump`]) while the response head is awaited, and the response
//! body with its trailers ([`body`]). Retrying on another peer, health and
//! the response's way back are the call path's (`call.rs`), as for HTTP/1.
//!
//! The request goes out as the client sent it, minus what HTTP/2 forbids:
//! `Host` becomes `:authority`, hop-by-hop fields are already gone; a gRPC
//! call carries `te: trailers` (gRPC servers ask for it).

pub mod body;
pub mod conns;
pub mod pump;

use std::cell::Cell;
use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::rc::Rc;
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use h2::client::SendRequest;
use h2::{Reason, RecvStream};
use http::header::{self, HeaderValue};
use http::request::Parts;
use http::uri::{Authority, Scheme};
use http::{Request, Response, Uri, Version};
use tokio::time::Instant;

pub use body::H2Body;
pub use conns::MuxPool;
use conns::{Checkout, Slot};
use pump::{Pump, PumpError};

use super::connect::connect_socket;
use super::h1::{ExchangeError, Socket};
use super::tls::PeerTls;
use crate::body::RequestBody;
use crate::config::PeerAddr;
use crate::error::ProxyError;
use crate::lazy_timer::LazyTimer;

/// What one try needs to know besides the request.
pub struct TryOptions {
    /// The pool key of the peer.
    pub peer_id: u64,
    /// Connections per peer (`h2_connections`).
    pub bound: usize,
    /// Time allowed to connect.
    pub connect_timeout: Duration,
    /// Time the peer may stay silent.
    pub read_timeout: Duration,
    /// How long an unused connection is kept.
    pub idle_timeout: Duration,
    /// The request is a gRPC call.
    pub grpc: bool,
    /// The gRPC call's deadline (`grpc-timeout`), if any.
    pub call_deadline: Option<Instant>,
}

/// How one try failed, which decides whether another may be made.
#[derive(Debug)]
pub enum TryError {
    /// Nothing reached the peer (connecting failed, or no stream could be
    /// opened).
    NotSent(ProxyError),
    /// The peer refused the stream unprocessed (`REFUSED_STREAM`, or a
    /// GOAWAY that did not cover it): safe to send again when the body can
    /// be, whatever the method.
    Refused(ProxyError),
    /// The request went out and the peer failed before a response head.
    NoResponse(ProxyError),
    /// Anything else (the client's body failed).
    Final(ProxyError),
}

/// Counts a new connection's socket among its peer's open connections
/// (the shared pool's [`counted`](super::pool::IdlePool::counted), given
/// as a function so this module needs nothing of the pool).
pub type Count<'a> = &'a dyn Fn(Box<dyn Socket>) -> Box<dyn Socket>;

/// Sends the request on a stream to the peer at `addr` and waits for the
/// response head. A body that is not empty is taken from `body` (it cannot
/// be sent twice anyway) and, when the head comes before its end, sent on
/// in the background. Also says how long connecting took (zero on a
/// pooled connection).
pub async fn exchange(
    addr: &PeerAddr,
    parts: &Parts,
    body: &mut RequestBody,
    opts: &TryOptions,
    (pool, count, tls): (&Rc<MuxPool>, Count<'_>, Option<&PeerTls>),
) -> Result<(Response<RecvStream>, Slot, Duration), TryError> {
    let request = request(parts, addr, opts.grpc);
    let eos = body.is_empty();
    let (mut send, mut conn_id, mut slot, mut connected) =
        stream_handle(addr, opts, (pool, count), tls).await?;
    let sent = loop {
        let opened = match send.ready().await {
            Ok(mut ready) => ready.send_request(request.clone(), eos),
            Err(e) => Err(e),
        };
        match opened {
            Ok(sent) => break sent,
            // A pooled connection the peer is closing (GOAWAY) or lost:
            // forget it and use another, once.
            Err(e) if connected.is_none() => {
                tracing::debug!(peer = %addr, error = %e, "pooled HTTP/2 connection unusable; taking another");
                pool.forget(opts.peer_id, conn_id);
                (send, conn_id, slot, connected) =
                    stream_handle(addr, opts, (pool, count), tls).await?;
            }
            Err(e) => {
                pool.forget(opts.peer_id, conn_id);
                return Err(TryError::NotSent(peer_error(addr, e)));
            }
        }
    };
    let (response, tx) = sent;
    let mut pump = (!eos).then(|| Pump::new(std::mem::replace(body, RequestBody::empty()), tx));
    let head = wait_head(response, &mut pump, opts).await;
    // The rest of the body goes on only to a peer that answered; otherwise
    // dropping it (and the response future) resets the stream.
    if let (Some(pump), Ok(_)) = (pump, &head) {
        pump.finish_in_background();
    }
    let connect_time = connected.unwrap_or_default();
    head.map(|resp| (resp, slot, connect_time))
        .map_err(|e| match e {
            HeadError::Timeout => TryError::NoResponse(ProxyError::ReadTimeout(addr.to_string())),
            HeadError::Deadline => TryError::Final(ProxyError::CallDeadline(addr.to_string())),
            HeadError::Client(e) => TryError::Final(super::call::request_error(e)),
            HeadError::Peer(e) if refused(&e) => TryError::Refused(peer_error(addr, e)),
            HeadError::Peer(e) => TryError::NoResponse(peer_error(addr, e)),
        })
}

/// Whether the peer refused a stream without processing it (RFC 9113
/// §8.7): a `REFUSED_STREAM` reset, or a GOAWAY that did not include it.
fn refused(e: &h2::Error) -> bool {
    e.reason() == Some(Reason::REFUSED_STREAM) && (e.is_reset() || e.is_go_away())
}

fn peer_error(addr: &PeerAddr, e: h2::Error) -> ProxyError {
    ProxyError::Upstream {
        addr: addr.to_string(),
        source: ExchangeError::H2(Box::new(e)),
    }
}

/// A handle to open a stream on: a pooled connection's, or a new
/// connection's (whose driver then runs on this worker's task set). Also
/// says which connection, the stream's place on it, and, when it is new,
/// how long connecting took (the socket, TLS and the HTTP/2 handshake).
async fn stream_handle(
    addr: &PeerAddr,
    opts: &TryOptions,
    (pool, count): (&Rc<MuxPool>, Count<'_>),
    tls: Option<&PeerTls>,
) -> Result<(SendRequest<Bytes>, u64, Slot, Option<Duration>), TryError> {
    let ticket = match pool.checkout(opts.peer_id, opts.bound).await {
        Checkout::Ready(send, id, slot) => return Ok((send, id, slot, None)),
        Checkout::Connect(ticket) => ticket,
    };
    let connecting = Instant::now();
    let socket = connect_socket(addr, opts.connect_timeout, tls)
        .await
        .map_err(TryError::NotSent)?;
    // Counted among the peer's open connections (all active: an HTTP/2
    // connection is never idle in the shared pool).
    let socket = count(socket);
    let handshake = conns::builder().handshake::<_, Bytes>(socket);
    let (send, conn) = match tokio::time::timeout(opts.connect_timeout, handshake).await {
        Ok(Ok(pair)) => pair,
        Ok(Err(e)) => return Err(TryError::NotSent(peer_error(addr, e))),
        Err(_) => {
            return Err(TryError::NotSent(ProxyError::ConnectTimeout(
                addr.to_string(),
            )));
        }
    };
    let alive = Rc::new(Cell::new(true));
    let flag = alive.clone();
    let peer = addr.to_string();
    tokio::task::spawn_local(async move {
        if let Err(e) = conn.await {
            tracing::debug!(%peer, error = %e, "HTTP/2 connection to the peer ended with an error");
        }
        flag.set(false);
    });
    let connect_time = connecting.elapsed();
    let (id, slot) = pool.register(ticket, &send, alive, opts.idle_timeout);
    Ok((send, id, slot, Some(connect_time)))
}

/// The request as sent: an absolute URI (HTTP/2's `:scheme` and
/// `:authority`, from `Host`), the headers but `Host`, and for gRPC
/// `te: trailers`.
fn request(parts: &Parts, addr: &PeerAddr, grpc: bool) -> Request<()> {
    let mut headers = parts.headers.clone();
    let host = headers.remove(header::HOST);
    let authority = host
        .as_ref()
        .and_then(|h| Authority::try_from(h.as_bytes()).ok())
        .or_else(|| match addr {
            PeerAddr::Tcp(a) => Authority::try_from(a.to_string()).ok(),
            PeerAddr::Unix(_) => None,
        })
        .unwrap_or_else(|| Authority::from_static("localhost"));
    let mut uri = http::uri::Parts::default();
    uri.scheme = Some(Scheme::HTTP);
    uri.authority = Some(authority);
    uri.path_and_query = parts.uri.path_and_query().cloned();
    if uri.path_and_query.is_none() {
        uri.path_and_query = Some(http::uri::PathAndQuery::from_static("/"));
    }
    if grpc {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
    let mut req = Request::new(());
    *req.method_mut() = parts.method.clone();
    *req.uri_mut() = Uri::from_parts(uri).unwrap_or_else(|_| Uri::from_static("/"));
    *req.version_mut() = Version::HTTP_2;
    *req.headers_mut() = headers;
    req
}

/// How the wait for a response head ended without one.
enum HeadError {
    /// The peer was silent past `read_timeout`.
    Timeout,
    /// The gRPC call's deadline passed.
    Deadline,
    /// The client's body failed.
    Client(crate::body::RequestBodyError),
    /// The stream or connection failed.
    Peer(h2::Error),
}

/// Waits for the response head, sending the body meanwhile. The peer's
/// silence is timed from the last body bytes sent.
async fn wait_head(
    mut response: h2::client::ResponseFuture,
    pump: &mut Option<Pump>,
    opts: &TryOptions,
) -> Result<Response<RecvStream>, HeadError> {
    let mut timer = LazyTimer::new();
    let mut silent_until = Instant::now() + opts.read_timeout;
    let mut mark = 0;
    poll_fn(|cx| {
        loop {
            if let Some(p) = pump.as_mut() {
                match p.poll(cx) {
                    Poll::Ready(Ok(())) => {
                        *pump = None;
                        silent_until = Instant::now() + opts.read_timeout;
                    }
                    Poll::Ready(Err(PumpError::Client(e))) => {
                        *pump = None;
                        return Poll::Ready(Err(HeadError::Client(e)));
                    }
                    // The stream failed: the response future says how.
                    Poll::Ready(Err(PumpError::Peer(_))) => *pump = None,
                    Poll::Pending if p.sent != mark => {
                        mark = p.sent;
                        silent_until = Instant::now() + opts.read_timeout;
                    }
                    Poll::Pending => {}
                }
            }
            if let Poll::Ready(head) = Pin::new(&mut response).poll(cx) {
                return Poll::Ready(head.map_err(HeadError::Peer));
            }
            let deadline = opts
                .call_deadline
                .map_or(silent_until, |d| d.min(silent_until));
            match timer.poll_until(cx, deadline) {
                Poll::Ready(()) if Instant::now() >= deadline => {
                    let call_over = opts.call_deadline.is_some_and(|d| d <= Instant::now());
                    let why = if call_over {
                        HeadError::Deadline
                    } else {
                        HeadError::Timeout
                    };
                    return Poll::Ready(Err(why));
                }
                // Woken early by a timer set for an earlier deadline.
                Poll::Ready(()) => continue,
                Poll::Pending => return Poll::Pending,
            }
        }
    })
    .await
}

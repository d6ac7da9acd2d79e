//! Sending one request to an upstream: pick a peer, reuse or open a
//! connection, send, and retry like nginx — on a connect error the next
//! peer is tried for any method (nothing was sent); after a sent request
//! failed, or a peer answered 502/504, the next peer is tried only for
//! idempotent requests whose body can be sent again, at most `retries`
//! times. Failures feed the peer's passive health.

use std::time::{Duration, Instant};

use http::request::Parts;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;

use super::balance::{PickKey, Tried};
use super::connect::connect;
use super::pool::{self, Sender};
use super::{Upstream, UpstreamBody};
use crate::body::{BodyFault, FaultCell, RequestBody};
use crate::config::PeerAddr;
use crate::error::ProxyError;

/// A request prepared for the upstream (headers already rewritten).
pub struct Outgoing<'a> {
    /// Method, origin-form URI, HTTP/1.1, forwarded headers.
    pub parts: Parts,
    /// The client's body, limited.
    pub body: RequestBody,
    /// What the balancer hashes (client IP or key bytes).
    pub key: PickKey<'a>,
    /// Whether the method is idempotent (may be retried after sending).
    pub idempotent: bool,
}

/// A response from a peer.
pub struct Exchange {
    /// The peer's response, its body streaming from the peer.
    pub response: Response<UpstreamBody>,
    /// The address of the peer that answered.
    pub peer: String,
    /// Time from the first try to the response head.
    pub elapsed: Duration,
}

enum Failure {
    /// Nothing reached the peer; the request is intact.
    NotSent(Box<Request<RequestBody>>, ProxyError),
    /// The request (or part of it) was sent.
    Sent(ProxyError),
}

/// Sends `out` to a peer of `up`, retrying as described in the module docs.
pub async fn forward(up: &Upstream, name: &str, out: Outgoing<'_>) -> Result<Exchange, ProxyError> {
    let started = Instant::now();
    let Outgoing {
        parts,
        body,
        key,
        idempotent,
    } = out;
    let body_state = body.state();
    // A request can be rebuilt for another try only if it has no body.
    let replay = (idempotent && body.is_empty() && up.def.retries > 0).then(|| head_copy(&parts));
    let mut pending = Some(Request::from_parts(parts, body));
    let mut tried = Tried::new(up.peers.len());
    let mut retries_left = up.def.retries;
    let mut last_err: Option<ProxyError> = None;

    loop {
        let Some(idx) = up.balancer.pick(&up.peers, key, &tried, Instant::now()) else {
            return Err(last_err.unwrap_or_else(|| ProxyError::NoPeer(name.to_string())));
        };
        tried.insert(idx);
        let (Some(peer), Some(addr)) = (up.peers.get(idx), up.addr(idx)) else {
            return Err(ProxyError::NoPeer(name.to_string()));
        };
        let Some(req) = pending.take().or_else(|| replay.as_ref().map(rebuild)) else {
            return Err(last_err.unwrap_or_else(|| ProxyError::NoPeer(name.to_string())));
        };
        let active = peer.begin();
        let can_retry = |left: u32| idempotent && left > 0 && replay.is_some();
        match send_to_peer(peer.id(), addr, req, up, &body_state).await {
            Ok((resp, sender)) => {
                let status = resp.status();
                let gateway_error =
                    status == StatusCode::BAD_GATEWAY || status == StatusCode::GATEWAY_TIMEOUT;
                if gateway_error && up.def.retries > 0 {
                    peer.record_failure(Instant::now());
                    if can_retry(retries_left) && tried.len() < up.peers.len() {
                        retries_left -= 1;
                        tracing::warn!(upstream = name, peer = %addr, %status, "peer answered with a gateway error; trying the next peer");
                        continue;
                    }
                } else {
                    peer.record_success(Instant::now());
                }
                let back = Some((peer.id(), sender, up.def.keepalive));
                let response =
                    resp.map(|b| UpstreamBody::new(b, back, up.def.read_timeout, active));
                return Ok(Exchange {
                    response,
                    peer: addr.to_string(),
                    elapsed: started.elapsed(),
                });
            }
            Err(Failure::NotSent(req, err)) => {
                peer.record_failure(Instant::now());
                tracing::warn!(upstream = name, peer = %addr, error = %err, "peer unreachable; trying the next peer");
                pending = Some(*req);
                last_err = Some(err);
            }
            Err(Failure::Sent(err)) => {
                if err.blame() != crate::error::Blame::Upstream {
                    return Err(err);
                }
                peer.record_failure(Instant::now());
                if !(err.retryable() && can_retry(retries_left)) {
                    return Err(err);
                }
                retries_left -= 1;
                tracing::warn!(upstream = name, peer = %addr, error = %err, "peer failed; retrying on the next peer");
                last_err = Some(err);
            }
        }
    }
}

/// What is needed to send a body-less request again.
struct Head {
    method: http::Method,
    uri: http::Uri,
    headers: http::HeaderMap,
}

fn head_copy(parts: &Parts) -> Head {
    Head {
        method: parts.method.clone(),
        uri: parts.uri.clone(),
        headers: parts.headers.clone(),
    }
}

fn rebuild(head: &Head) -> Request<RequestBody> {
    let mut req = Request::new(RequestBody::empty());
    *req.method_mut() = head.method.clone();
    *req.uri_mut() = head.uri.clone();
    *req.headers_mut() = head.headers.clone();
    req
}

/// Sends on a pooled connection if one is alive, else on a new one.
async fn send_to_peer(
    peer_id: u64,
    addr: &PeerAddr,
    mut req: Request<RequestBody>,
    up: &Upstream,
    body_state: &FaultCell,
) -> Result<(Response<Incoming>, Sender), Failure> {
    // A pooled connection may have been closed by the peer while idle; hyper
    // then gives the request back untouched and another connection is tried.
    for _ in 0..4 {
        let Some(mut sender) = pool::checkout(peer_id, up.def.keepalive_timeout) else {
            break;
        };
        if sender.ready().await.is_err() {
            continue;
        }
        match send(&mut sender, req, up.def.read_timeout, body_state, addr).await {
            Ok(resp) => return Ok((resp, sender)),
            Err((Some(back), _)) => req = back,
            Err((None, err)) => return Err(Failure::Sent(err)),
        }
    }
    let mut sender = match connect(addr, up.def.connect_timeout, up.def.send_timeout).await {
        Ok(s) => s,
        Err(err) => return Err(Failure::NotSent(Box::new(req), err)),
    };
    if let Err(source) = sender.ready().await {
        let err = ProxyError::Upstream {
            addr: addr.to_string(),
            source,
        };
        return Err(Failure::NotSent(Box::new(req), err));
    }
    match send(&mut sender, req, up.def.read_timeout, body_state, addr).await {
        Ok(resp) => Ok((resp, sender)),
        Err((Some(req), err)) => Err(Failure::NotSent(Box::new(req), err)),
        Err((None, err)) => Err(Failure::Sent(err)),
    }
}

/// One exchange on one connection. The read timeout counts from the moment
/// the request body has been sent in full.
async fn send(
    sender: &mut Sender,
    req: Request<RequestBody>,
    read_timeout: Duration,
    body_state: &FaultCell,
    addr: &PeerAddr,
) -> Result<Response<Incoming>, (Option<Request<RequestBody>>, ProxyError)> {
    let fut = sender.try_send_request(req);
    tokio::pin!(fut);
    let mut deadline = tokio::time::Instant::now() + read_timeout;
    loop {
        tokio::select! {
            r = &mut fut => {
                return r.map_err(|mut e| {
                    let back = e.take_message();
                    let err = match body_state.get() {
                        BodyFault::TooLarge => ProxyError::BodyTooLarge,
                        BodyFault::Timeout => ProxyError::ClientBodyTimeout,
                        BodyFault::None => ProxyError::Upstream { addr: addr.to_string(), source: e.into_error() },
                    };
                    (back, err)
                });
            }
            _ = tokio::time::sleep_until(deadline) => {
                if body_state.is_done() {
                    return Err((None, ProxyError::ReadTimeout(addr.to_string())));
                }
                deadline = tokio::time::Instant::now() + read_timeout;
            }
        }
    }
}

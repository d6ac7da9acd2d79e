//! Upstream pools: the peers of one `[upstream.NAME]`, how one is chosen,
//! and how a request reaches it. The shared parts ([`Upstream`], its
//! [`peer::Peer`] health and in-flight counts, the [`balance::Balancer`])
//! are built once per definition and kept across reloads while the
//! definition is unchanged; idle keep-alive connections live per worker
//! thread in [`pool`], keyed by peer id, so a kept `Upstream` keeps them.
//!
//! Request order inside this module: [`call::forward`] picks a peer
//! (balance), takes an idle connection or opens one ([`pool`],
//! [`connect`]), sends the request, and hands back the response with an
//! [`UpstreamBody`] that returns the connection to the pool at its end.

pub mod balance;
pub mod peer;
pub mod pool;
pub mod connect;
pub mod call;

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::time::{Instant, Sleep};

use crate::config::{self, PeerAddr};
use crate::vars::VarTemplate;
use balance::Balancer;
use peer::{ActiveGuard, Peer, PeerConfig};

/// One compiled `[upstream.NAME]`.
pub struct Upstream {
    /// The definition it was built from; a reload keeps this `Upstream`
    /// (and so its health marks and pooled connections) when the new
    /// definition is equal.
    pub def: config::Upstream,
    /// The peers' shared state, in the order of `def.servers`.
    pub peers: Vec<Arc<Peer>>,
    /// Chooses a peer per request.
    pub balancer: Balancer,
    /// The `hash` balancer's key.
    pub hash_key: Option<VarTemplate>,
}

impl Upstream {
    /// Builds the runtime pool for a definition.
    pub fn new(def: config::Upstream) -> Result<Upstream, String> {
        let peers: Vec<Arc<Peer>> = def
            .servers
            .iter()
            .map(|s| {
                let config = PeerConfig {
                    weight: s.weight,
                    max_fails: s.max_fails,
                    fail_timeout: s.fail_timeout,
                    backup: s.backup,
                    down: s.down,
                };
                // Named by address so the hash ring is stable across restarts.
                Arc::new(Peer::with_name(config, s.addr.to_string()))
            })
            .collect();
        let hash_key = match &def.key {
            Some(k) => Some(VarTemplate::parse(k)?),
            None => None,
        };
        let balancer = Balancer::new(def.balance, &peers);
        Ok(Upstream {
            def,
            peers,
            balancer,
            hash_key,
        })
    }

    /// The address of peer `i`.
    pub fn addr(&self, i: usize) -> Option<&PeerAddr> {
        self.def.servers.get(i).map(|s| &s.addr)
    }
}

/// Where a finished response hands its connection back.
struct Return {
    peer_id: u64,
    sender: pool::Sender,
    max_idle: usize,
}

/// A response body streamed from a peer. Between frames the peer may stay
/// silent at most `read_timeout`; at the end the connection goes back to
/// this thread's pool, and the peer's in-flight count drops.
pub struct UpstreamBody {
    inner: Incoming,
    back: Option<Return>,
    read_timeout: Duration,
    sleep: Option<Pin<Box<Sleep>>>,
    armed: bool,
    _active: Option<ActiveGuard>,
}

impl UpstreamBody {
    fn new(
        inner: Incoming,
        back: Option<(u64, pool::Sender, usize)>,
        read_timeout: Duration,
        active: ActiveGuard,
    ) -> Self {
        let mut body = UpstreamBody {
            inner,
            back: back.map(|(peer_id, sender, max_idle)| Return {
                peer_id,
                sender,
                max_idle,
            }),
            read_timeout,
            sleep: None,
            armed: false,
            _active: Some(active),
        };
        body.release_if_done();
        body
    }

    fn release_if_done(&mut self) {
        if self.inner.is_end_stream() {
            if let Some(r) = self.back.take() {
                pool::checkin(r.peer_id, r.sender, r.max_idle);
            }
            self._active = None;
        }
    }
}

impl Drop for UpstreamBody {
    fn drop(&mut self) {
        self.release_if_done();
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = crate::body::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Pending => {
                if !this.armed {
                    this.armed = true;
                    let deadline = Instant::now() + this.read_timeout;
                    match this.sleep.as_mut() {
                        Some(s) => s.as_mut().reset(deadline),
                        None => this.sleep = Some(Box::pin(tokio::time::sleep_until(deadline))),
                    }
                }
                if let Some(s) = this.sleep.as_mut()
                    && std::future::Future::poll(s.as_mut(), cx).is_ready()
                {
                    this.back = None;
                    return Poll::Ready(Some(Err("upstream read timeout in body".into())));
                }
                Poll::Pending
            }
            Poll::Ready(None) => {
                this.release_if_done();
                Poll::Ready(None)
            }
            Poll::Ready(Some(Ok(frame))) => {
                this.armed = false;
                this.release_if_done();
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                this.back = None;
                Poll::Ready(Some(Err(e.into())))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

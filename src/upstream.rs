//! Upstream pools: the peers of one `[upstream.NAME]`, how one is chosen,
//! and how a request reaches it. The shared parts ([`Upstream`], its
//! [`peer::Peer`] health and in-flight counts, the [`balance::Balancer`])
//! are built once per definition and kept across reloads while the
//! definition is unchanged; idle keep-alive connections live per worker
//! thread in [`pool`], keyed by peer id, so a kept `Upstream` keeps them.
//!
//! Request order inside this module: [`call::forward`] picks a peer
//! (balance), takes an idle connection or opens one ([`pool`],
//! [`connect`]), runs the exchange ([`h1`]), and hands back the response
//! with an [`UpstreamBody`] that returns the connection to the pool at its
//! end.

pub mod balance;
pub mod peer;
pub mod pool;
pub mod connect;
pub mod h1;
pub mod call;

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::time::{Instant, Sleep};

use crate::config::{self, PeerAddr};
use crate::vars::VarTemplate;
use balance::Balancer;
use h1::Conn;
use h1::framing::{Decoder, Framing};
use peer::{ActiveGuard, Peer, PeerConfig};

/// One compiled `[upstream.NAME]`.
pub struct Upstream {
    /// The definition it was built from; a reload keeps this `Upstream`
    /// (and so its health marks and pooled connections) when the new
    /// definition is equal.
    pub def: config::Upstream,
    /// The peers taking traffic now: fixed for `servers`, replaced by the
    /// worker supervisor as managed workers come and go.
    members: ArcSwap<Members>,
    /// The `hash` balancer's key.
    pub hash_key: Option<VarTemplate>,
}

/// The peers of an upstream at one moment, and the balancer built over them.
pub struct Members {
    /// The peers' shared state.
    pub peers: Vec<Arc<Peer>>,
    /// Their addresses, in the same order.
    pub addrs: Vec<PeerAddr>,
    /// Chooses a peer per request.
    pub balancer: Balancer,
}

impl Members {
    fn new(kind: config::Balance, list: Vec<(Arc<Peer>, PeerAddr)>) -> Members {
        let (peers, addrs): (Vec<_>, Vec<_>) = list.into_iter().unzip();
        let balancer = Balancer::new(kind, &peers);
        Members {
            peers,
            addrs,
            balancer,
        }
    }
}

impl Upstream {
    /// Builds the runtime pool for a definition. An upstream of managed
    /// workers starts with no peers until its supervisor adds them.
    pub fn new(def: config::Upstream) -> Result<Upstream, String> {
        let list: Vec<(Arc<Peer>, PeerAddr)> = def
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
                let peer = Arc::new(Peer::with_name(config, s.addr.to_string()));
                (peer, s.addr.clone())
            })
            .collect();
        let hash_key = match &def.key {
            Some(k) => Some(VarTemplate::parse(k)?),
            None => None,
        };
        let members = ArcSwap::from_pointee(Members::new(def.balance, list));
        Ok(Upstream {
            def,
            members,
            hash_key,
        })
    }

    /// The peers taking traffic now.
    pub fn members(&self) -> arc_swap::Guard<Arc<Members>> {
        self.members.load()
    }

    /// Replaces the peers (managed workers joining or leaving). Requests
    /// already sent keep their peer; new ones see the new list.
    pub fn set_members(&self, list: Vec<(Arc<Peer>, PeerAddr)>) {
        self.members
            .store(Arc::new(Members::new(self.def.balance, list)));
    }

    /// Whether `peer_id` is one of the peers now.
    pub fn has_peer(&self, peer_id: u64) -> bool {
        self.members.load().peers.iter().any(|p| p.id() == peer_id)
    }
}

/// A response body read straight from the peer's connection. Between
/// reads the peer may stay silent at most `read_timeout`; when the body is
/// complete the connection goes back to this thread's pool (if the
/// exchange allows reuse), and the peer's in-flight count drops.
pub struct UpstreamBody {
    conn: Option<Conn>,
    decoder: Decoder,
    /// Peer id and pool size, when the connection may be reused.
    back: Option<(u64, usize)>,
    read_timeout: Duration,
    sleep: Option<Pin<Box<Sleep>>>,
    armed: bool,
    active: Option<ActiveGuard>,
}

impl UpstreamBody {
    /// The body of a response whose head was read from `conn`.
    pub fn new(
        conn: Option<Conn>,
        framing: Framing,
        back: Option<(u64, usize)>,
        read_timeout: Duration,
        active: ActiveGuard,
    ) -> Self {
        let mut body = UpstreamBody {
            conn,
            decoder: Decoder::new(framing),
            back,
            read_timeout,
            sleep: None,
            armed: false,
            active: Some(active),
        };
        body.release_if_done();
        body
    }

    fn release_if_done(&mut self) {
        if !self.decoder.is_done() {
            return;
        }
        if let (Some(conn), Some((peer_id, max_idle))) = (self.conn.take(), self.back.take()) {
            pool::checkin(peer_id, conn, max_idle);
        }
        self.active = None;
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
        let Some(conn) = this.conn.as_mut() else {
            return Poll::Ready(None);
        };
        match conn.poll_body(cx, &mut this.decoder) {
            Poll::Ready(Some(Ok(data))) => {
                this.armed = false;
                this.release_if_done();
                Poll::Ready(Some(Ok(Frame::data(data))))
            }
            Poll::Ready(None) => {
                this.release_if_done();
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(e))) => {
                this.conn = None;
                Poll::Ready(Some(Err(e.into())))
            }
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
                    this.conn = None;
                    return Poll::Ready(Some(Err("upstream read timeout in body".into())));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.decoder.is_done()
    }

    fn size_hint(&self) -> SizeHint {
        self.decoder
            .remaining()
            .map_or_else(SizeHint::default, SizeHint::with_exact)
    }
}

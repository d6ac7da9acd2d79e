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

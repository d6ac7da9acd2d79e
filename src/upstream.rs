//! Upstream pools: the peers of one `[upstream.NAME]`, how one is chosen,
//! and how a request reaches it. The shared parts ([`Upstream`], its
//! [`peer::Peer`] health and in-flight counts, the [`balance::Balancer`])
//! are built once per definition and kept across reloads while the
//! definition is unchanged; idle keep-alive connections live per worker
//! thread in [`pool`], keyed by peer id, so a kept `Upstream` keeps them.
//!
//! Request order inside this module: [`call::forward`] picks a peer
//! (balance), takes an idle connection or opens one ([`pool`],
//! [`connect`]), runs the exchange ([`h1`]; for `protocol = "uwsgi"` a
//! [`uwsgi`] packet of [`cgi`] variables in place of the request head, on a
//! connection of its own; for `protocol = "fastcgi"` the [`fastcgi`]
//! engine through [`call::fastcgi`]; for `h2` and `grpc` a stream on a
//! multiplexed [`http2`] connection), and hands back the response with an
//! [`UpstreamBody`] that returns the connection to the pool at its end.

pub mod balance;
pub mod balance_hook;
pub mod peer;
pub mod pool;
pub mod rehome;
pub mod connect;
pub mod h1;
pub mod cgi;
pub mod uwsgi;
pub mod call;
pub mod fastcgi;
pub mod http2;
pub mod tls;
pub mod probe;
pub mod health;

use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::body::BoxError;
use crate::config::{self, PeerAddr};
use crate::h1_framing::{Decoder, Framing};
use crate::vars::VarTemplate;
use balance::Balancer;
use h1::Conn;
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
    /// Woken whenever the members change.
    changed: Notify,
    /// Whether the worker supervisor is starting successors for spent
    /// workers (it is neither stopping nor failing): a request that finds
    /// only spent peers then waits for one (see [`Upstream::wait_for_members`]).
    successors_expected: AtomicBool,
    /// The `hash` balancer's key.
    pub hash_key: Option<VarTemplate>,
    /// `params`, compiled (CGI-style protocols only).
    pub params: Vec<(String, VarTemplate)>,
    /// TLS to the peers, when the definition asks for it.
    pub tls: Option<tls::PeerTls>,
    /// Set once this upstream's prober was started ([`health::start`]):
    /// one per `Upstream`, so one per definition per process.
    prober: AtomicBool,
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
        let params = def
            .params
            .iter()
            .map(|(k, v)| Ok((k.clone(), VarTemplate::parse(v)?)))
            .collect::<Result<_, String>>()?;
        let tls = match &def.tls {
            Some(t) => Some(tls::PeerTls::new(t, def.protocol)?),
            None => None,
        };
        let members = ArcSwap::from_pointee(Members::new(def.balance, list));
        Ok(Upstream {
            tls,
            params,
            def,
            members,
            changed: Notify::new(),
            successors_expected: AtomicBool::new(false),
            hash_key,
            prober: AtomicBool::new(false),
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
        self.changed.notify_waiters();
    }

    /// Says whether successors of spent workers are on their way (set by
    /// the worker supervisor).
    pub fn expect_successors(&self, expected: bool) {
        self.successors_expected.store(expected, Ordering::Release);
    }

    /// Waits, at most `bound`, for the members to differ from `seen`, when
    /// successors are expected; `true` when they changed. Used when every
    /// peer left is spent (past `max_requests`), so that a spent worker
    /// serves on only when no successor comes in time.
    pub async fn wait_for_members(&self, seen: &Members, bound: Duration) -> bool {
        let changed = self.changed.notified();
        tokio::pin!(changed);
        changed.as_mut().enable();
        if !std::ptr::eq(Arc::as_ptr(&self.members.load()), seen) {
            return true;
        }
        if !self.successors_expected.load(Ordering::Acquire) {
            return false;
        }
        tokio::time::timeout(bound, changed).await.is_ok()
    }

    /// True for the one caller that may start this upstream's prober.
    fn claim_prober(&self) -> bool {
        !self.prober.swap(true, Ordering::AcqRel)
    }

    /// Whether `peer_id` is one of the peers now.
    pub fn has_peer(&self, peer_id: u64) -> bool {
        self.members.load().peers.iter().any(|p| p.id() == peer_id)
    }
}

/// A response body read straight from the peer: an HTTP/1.x body off its
/// connection (HTTP/1.1 and uwsgi), an HTTP/2 stream's, or a FastCGI
/// response's. The peer's in-flight count drops when it ends.
pub struct UpstreamBody {
    source: Source,
}

/// Where an [`UpstreamBody`] comes from; the others are boxed, as most
/// bodies are HTTP/1.
enum Source {
    H1(H1Body),
    H2(Box<http2::H2Body>, Option<ActiveGuard>),
    /// It hands its connection back, and drops its in-flight count, itself.
    Fastcgi(Box<call::fastcgi::FastcgiBody>),
}

/// An HTTP/1.x body read from the connection its head came on. Between
/// reads the peer may stay silent at most `read_timeout`; when the body is
/// complete the connection goes back to this thread's pool (if the
/// exchange allows reuse).
struct H1Body {
    conn: Option<Conn>,
    decoder: Decoder,
    /// Where the connection goes back to, when it may be reused.
    back: Option<Back>,
    read_timeout: Duration,
    /// When a silent peer fails the body; `None` while data comes.
    deadline: Option<Instant>,
    active: Option<ActiveGuard>,
}

impl UpstreamBody {
    /// The body of a response whose head was read from `conn`.
    pub fn new(
        conn: Option<Conn>,
        framing: Framing,
        back: Option<Back>,
        read_timeout: Duration,
        active: ActiveGuard,
    ) -> Self {
        let mut body = H1Body {
            conn,
            decoder: Decoder::new(framing),
            back,
            read_timeout,
            deadline: None,
            active: Some(active),
        };
        body.release_if_done();
        UpstreamBody {
            source: Source::H1(body),
        }
    }

    /// The body of an HTTP/2 response.
    pub fn h2(body: http2::H2Body, active: ActiveGuard) -> Self {
        UpstreamBody {
            source: Source::H2(Box::new(body), Some(active)),
        }
    }

    /// The body of a FastCGI response.
    pub fn fastcgi(body: call::fastcgi::FastcgiBody) -> Self {
        UpstreamBody {
            source: Source::Fastcgi(Box::new(body)),
        }
    }
}

impl H1Body {
    fn release_if_done(&mut self) {
        if !self.decoder.is_done() {
            return;
        }
        if let (Some(conn), Some(back)) = (self.conn.take(), self.back.take()) {
            back.pool.checkin(back.peer_id, conn, back.max_idle);
        }
        self.active = None;
    }

    fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let Some(conn) = self.conn.as_mut() else {
            return Poll::Ready(None);
        };
        match conn.poll_body(cx, &mut self.decoder) {
            Poll::Ready(Some(Ok(data))) => {
                self.deadline = None;
                self.release_if_done();
                Poll::Ready(Some(Ok(Frame::data(data))))
            }
            Poll::Ready(None) => {
                self.release_if_done();
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(e))) => {
                self.conn = None;
                Poll::Ready(Some(Err(e.into())))
            }
            Poll::Pending => {
                let timeout = self.read_timeout;
                let deadline = *self
                    .deadline
                    .get_or_insert_with(|| Instant::now() + timeout);
                if conn.poll_timer(cx, deadline).is_ready() {
                    self.conn = None;
                    return Poll::Ready(Some(Err("upstream read timeout in body".into())));
                }
                Poll::Pending
            }
        }
    }
}

impl Drop for H1Body {
    fn drop(&mut self) {
        self.release_if_done();
    }
}

/// Where a reusable connection goes when its response body is complete.
pub struct Back {
    /// The worker's pool (the body may outlive the request's borrows).
    pub pool: Rc<pool::IdlePool>,
    /// The peer it is connected to.
    pub peer_id: u64,
    /// The upstream's `keepalive`: idle connections kept per peer.
    pub max_idle: usize,
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match &mut self.source {
            Source::H1(body) => body.poll_frame(cx),
            Source::H2(body, active) => {
                let polled = Pin::new(body.as_mut()).poll_frame(cx);
                if matches!(polled, Poll::Ready(None | Some(Err(_)))) || body.is_end_stream() {
                    *active = None;
                }
                polled
            }
            Source::Fastcgi(body) => Pin::new(body.as_mut()).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.source {
            Source::H1(body) => body.decoder.is_done(),
            Source::H2(body, _) => body.is_end_stream(),
            Source::Fastcgi(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.source {
            Source::H1(body) => body.decoder.size_hint(),
            Source::H2(body, _) => body.size_hint(),
            Source::Fastcgi(body) => body.size_hint(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upstream() -> Upstream {
        let text = "[upstream.app]\nservers = [{ addr = \"127.0.0.1:9\" }]\n";
        let config = crate::config::load_str("t.toml", text).unwrap();
        Upstream::new(config.upstreams["app"].clone()).unwrap()
    }

    /// `wait_for_members` with a bound of an hour, failing the test if it
    /// does not return within 10 s.
    async fn wait_long(up: &Upstream, seen: &Members) -> bool {
        let hour = Duration::from_secs(3600);
        tokio::time::timeout(Duration::from_secs(10), up.wait_for_members(seen, hour))
            .await
            .expect("waited for members nobody was bringing")
    }

    #[tokio::test]
    async fn waiting_for_members_only_while_successors_are_expected() {
        let up = upstream();
        // No successor on its way (not a managed pool, or a failing one):
        // no wait at all.
        let seen = up.members();
        assert!(!wait_long(&up, &seen).await);

        // Expected: the wait ends with the new members...
        up.expect_successors(true);
        let list: Vec<_> = seen
            .peers
            .iter()
            .cloned()
            .zip(seen.addrs.iter().cloned())
            .collect();
        let (changed, ()) = tokio::join!(wait_long(&up, &seen), async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            up.set_members(list.clone());
        });
        assert!(changed);
        // ...or at once when they changed before the wait began...
        assert!(wait_long(&up, &seen).await);
        // ...or at the bound, with nothing new.
        let now = up.members();
        let start = Instant::now();
        assert!(!up.wait_for_members(&now, Duration::from_millis(100)).await);
        assert!(start.elapsed() >= Duration::from_millis(100));
    }
}

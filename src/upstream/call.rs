//! Sending one request to an upstream: pick a peer, reuse or open a
//! connection, run the exchange, and move on to the next peer like nginx
//! with `proxy_next_upstream error timeout`:
//!
//! - connecting failed or timed out: nothing reached the peer, so any
//!   request goes on to the next peer (not counted in `retries`);
//! - the request was sent and the peer reset or closed the connection, or
//!   stayed silent past `send_timeout` / `read_timeout`, before any byte of
//!   a response (an interim 1xx counts as a byte): an idempotent request
//!   without a body goes on to the next peer, at most `retries` times
//!   (default 1; 0 turns this off);
//! - a peer answered a status listed in `retry_statuses` (nginx's
//!   `http_502 http_504` …): the same; any other answer is passed on;
//! - anything after a response began (an invalid head, a cut-off head), a
//!   request whose body was streamed, a non-idempotent request once it was
//!   sent: never retried.
//!
//! A pooled connection the peer had closed while idle (reset or closed
//! before any response byte) is replaced by a fresh one to the same peer
//! transparently when the request has no body. Failures feed the peer's
//! passive health (through the balancer, which spares a sole peer).
//!
//! An upstream speaking uwsgi builds its packet of CGI variables once,
//! before the first try (reading a body of unknown length whole, since
//! uwsgi needs `CONTENT_LENGTH`), and sends it on a new connection per try
//! (uwsgi has no keep-alive); the rules above are the same.
//!
//! An upstream speaking FastCGI builds its CGI variables once the same way
//! ([`fastcgi::prepare`]) and runs each try through [`fastcgi::exchange`]:
//! pooled connections (`FCGI_KEEP_CONN`) as for HTTP/1, the same retry
//! rules, a [`fastcgi::FastcgiBody`] as the response body.
//!
//! An upstream with a Lua `balancer` ([`TryHook`]) is asked before every
//! try. When it names a peer, that try goes there (one of the upstream's
//! peers, with its health and pool, or any other address, pooled by
//! address), and whether a failed try goes on is its `set_more_tries`
//! (within the upstream's `retries`, and for the same kinds of failure as
//! above); when it names none, the balancer picks as described above.

use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::request::Parts;
use http::{Response, StatusCode};

use super::balance::{PickKey, Tried};
use super::balance_hook::{LastFailure, Timeouts, TryHook, TryInfo};
use super::cgi::CgiFacts;
use super::connect::connect_socket;
use super::h1::{Conn, ExchangeError, InterimSink, ResponseHead};
use super::http2;
use super::peer::{Peer, PeerConfig};
use super::pool::IdlePool;
use super::{Back, Upstream, UpstreamBody};
use crate::body::{RequestBody, RequestBodyError};
use crate::config::{PeerAddr, Protocol};
use crate::error::{Blame, ProxyError};
use crate::h1_framing::Framing;
use crate::metrics::{OTHER_PEER, PeerCounters, WorkerStats};

pub mod fastcgi;

/// A request prepared for the upstream (headers already rewritten).
pub struct Outgoing<'a> {
    /// Method, origin-form URI, forwarded headers.
    pub parts: Parts,
    /// The client's body, limited.
    pub body: RequestBody,
    /// What the balancer hashes (client IP or key bytes).
    pub key: PickKey<'a>,
    /// Whether the method is idempotent (may be retried after sending).
    pub idempotent: bool,
    /// Where interim responses (103 Early Hints …) go, if the client can
    /// take them.
    pub interim: Option<InterimSink<'a>>,
    /// This worker's idle connections (taken from, and given back to when
    /// the response body is complete).
    pub pool: &'a Rc<IdlePool>,
    /// This worker's counters: every try is counted here, whatever the
    /// protocol (`None`: metrics are off).
    pub stats: Option<&'a WorkerStats>,
    /// Asked before every try (the upstream's Lua `balancer`), if any.
    pub hook: Option<&'a dyn TryHook>,
    /// What the CGI variables are built from, for an upstream speaking a
    /// CGI-style protocol (uwsgi); `None` for HTTP/1.
    pub cgi: Option<CgiFacts<'a>>,
}

/// A response from a peer.
pub struct Exchange {
    /// The peer's response, its body streaming from the peer.
    pub response: Response<UpstreamBody>,
    /// The address of the peer that answered.
    pub peer: String,
    /// Time from the first try to the response head.
    pub elapsed: Duration,
    /// Time the answering try spent connecting to the peer (TCP, and TLS
    /// or the HTTP/2 handshake); zero when it went on a pooled
    /// connection.
    pub connect: Duration,
    /// After a 101 response: the peer connection, to be tunnelled.
    pub upgraded: Option<Conn>,
}

/// How one try failed, which decides whether another peer may be tried.
enum Failure {
    /// Nothing reached the peer (connecting failed or timed out).
    NotSent(ProxyError),
    /// The request (or part of it) was sent, and the peer failed before any
    /// byte of a response in a way [`ProxyError::retryable`] covers.
    NoResponse(ProxyError),
    /// Anything else: a response had begun, or the client or moongate
    /// failed.
    Final(ProxyError),
}

/// Sends `out` to a peer of `up`, retrying as described in the module docs.
pub async fn forward(
    up: &Upstream,
    name: &str,
    out: &mut Outgoing<'_>,
) -> Result<Exchange, ProxyError> {
    let started = Instant::now();
    // Borrowed, not moved in: the request stays in the caller's future
    // (moved, it would take room twice in this one's).
    let (idempotent, pool, hook, stats) = (out.idempotent, out.pool, out.hook, out.stats);
    // What a CGI-style protocol sends in place of the request head, built
    // once for every try: uwsgi's packet, FastCGI's parameters.
    let (mut packet, mut fcgi) = (None, None);
    if let Some(cgi) = &out.cgi {
        if up.def.protocol == Protocol::Fastcgi {
            // Boxed, as the try below: the FastCGI futures add nothing
            // to every HTTP/1 request's.
            fcgi = Some(Box::pin(fastcgi::prepare(up, cgi, &out.parts, &mut out.body)).await?);
        } else {
            packet = Some(uwsgi_packet(up, name, cgi, &out.parts, &mut out.body).await?);
        }
    }
    let packet = packet.as_deref();
    // Only a request without a body can be sent a second time.
    let replayable = out.body.is_empty();
    let grpc = up.def.protocol == Protocol::Grpc;
    // A gRPC call's deadline runs from its arrival (here, near enough).
    let call_deadline = grpc
        .then(|| crate::grpc::timeout(&out.parts.headers))
        .flatten()
        .map(|t| tokio::time::Instant::from_std(started + t));
    let mut members = up.members();
    let mut tried = Tried::new(members.peers.len());
    let mut retries_left = up.def.retries;
    let mut last_err: Option<ProxyError> = None;
    // Until when a request finding only spent workers waits for a successor.
    let mut wait_until: Option<Instant> = None;
    let mut hooked = Hooked::default();
    let mut failed_try: Option<Arc<PeerCounters>> = None;
    let no_peer =
        |last: Option<ProxyError>| last.unwrap_or_else(|| ProxyError::NoPeer(name.to_string()));

    loop {
        // The hook (a Lua balancer) first: it may name this try's peer.
        let plan = match hook {
            Some(h) => Some(h.before_try(hooked.info(up.def.retries)).await?),
            None => None,
        };
        let limits = Limits::of(up, plan.as_ref().map(|p| p.timeouts));
        let adhoc: Arc<Peer>;
        // `health`: the peer is one of the upstream's (a peer the hook named
        // outside the list has no health to feed).
        let (peer, addr, pool_key, by_hook, health, active);
        if let Some(named) = plan.as_ref().and_then(|p| p.peer.as_ref()) {
            hooked.extra += plan.as_ref().map_or(0, |p| p.more_tries);
            let listed = (members.addrs.iter().position(|a| a == named))
                .and_then(|i| Some((members.peers.get(i)?, members.addrs.get(i)?)));
            match listed {
                Some((p, a)) => (peer, addr, pool_key, health) = (p, a, p.id(), true),
                // Outside the upstream's peers: no passive health, and
                // idle connections pooled by address (see `IdlePool`).
                None => {
                    adhoc = Arc::new(Peer::with_name(PeerConfig::default(), named.to_string()));
                    (peer, addr, pool_key, health) =
                        (&adhoc, named, pool.address_key(named), false);
                }
            }
            by_hook = true;
            active = peer.begin();
        } else {
            let balancer = &members.balancer;
            let Some(pick) = balancer.pick(&members.peers, out.key, &tried, Instant::now()) else {
                return Err(no_peer(last_err));
            };
            // Every managed worker left is past `max_requests`: wait for a
            // successor (at most `connect_timeout`, like waiting to connect)
            // rather than serve past the limit; a spent worker serves on only
            // when none comes.
            if pick.spent && tried.is_empty() {
                let deadline =
                    *wait_until.get_or_insert_with(|| Instant::now() + up.def.connect_timeout);
                let left = deadline.saturating_duration_since(Instant::now());
                if !left.is_zero() && up.wait_for_members(&members, left).await {
                    members = up.members();
                    tried = Tried::new(members.peers.len());
                    continue;
                }
            }
            let (Some(p), Some(a)) = (members.peers.get(pick.index), members.addrs.get(pick.index))
            else {
                return Err(no_peer(last_err));
            };
            if pick.revived > 0 {
                tracing::warn!(
                    upstream = name,
                    peers = pick.revived,
                    "every peer was marked down; trying them again"
                );
            }
            active = if pick.spent {
                p.begin()
            } else {
                match p.try_begin() {
                    Some(active) => active,
                    // It reached its request limit since the balancer looked;
                    // now spent, it is picked again only if nothing else is left.
                    None => continue,
                }
            };
            tried.insert(pick.index);
            (peer, addr, pool_key, by_hook, health) = (p, a, p.id(), false, true);
        }
        hooked.made += 1;
        // The try that failed before this one is counted as retried.
        if let Some(failed) = failed_try.take() {
            failed.retry();
        }
        // The first try started with the request (one clock read saved).
        let try_started = if hooked.made == 1 {
            started
        } else {
            Instant::now()
        };
        let counters = stats.map(|stats| {
            stats.peer(health.then(|| peer.id()), || {
                let label = if health {
                    peer_name(peer, addr)
                } else {
                    OTHER_PEER.to_owned()
                };
                (name, label)
            })
        });
        let balancer = &members.balancer;
        let may_retry = |left: u32, extra: u32| {
            idempotent
                && replayable
                && if by_hook {
                    extra > 0
                } else {
                    left > 0 && tried.len() < members.peers.len()
                }
        };
        let answer = match &fcgi {
            Some(params) => {
                let (body, to) = (&mut out.body, (up, name));
                let once =
                    fastcgi::exchange(pool_key, addr, params, body, replayable, to, &limits, pool);
                Box::pin(once)
                    .await
                    .map(|(a, connect)| (Answer::Fastcgi(Box::new(a)), connect))
            }
            None if up.def.protocol.is_h2() => {
                let opts = http2::TryOptions {
                    peer_id: pool_key,
                    bound: up.def.h2_connections,
                    connect_timeout: limits.connect,
                    read_timeout: limits.read,
                    idle_timeout: up.def.keepalive_timeout,
                    grpc,
                    call_deadline,
                };
                // Boxed, as FastCGI's: an HTTP/1 request's future stays small.
                Box::pin(h2_try(addr, out, &opts, pool, replayable, up.tls.as_ref())).await
            }
            None => exchange(
                pool_key,
                addr,
                &out.parts,
                &mut out.body,
                packet,
                replayable,
                up,
                &limits,
                pool,
                &mut out.interim,
            )
            .await
            .map(|(head, conn, connect)| (Answer::Http(head, conn), connect)),
        };
        if let (Err(failure), Some(counters)) = (&answer, &counters) {
            count_failure(counters, failure);
        }
        match answer {
            Ok((answer, connect)) => {
                let status = answer.status();
                // One clock read for the try's time and the request's.
                let now = Instant::now();
                if let Some(counters) = &counters {
                    counters.answered(status.as_u16(), now - try_started);
                }
                if up.def.retry_statuses.contains(&status.as_u16()) {
                    if health {
                        balancer.record_failure(peer, Instant::now());
                    }
                    if may_retry(retries_left, hooked.extra) {
                        failed_try = counters;
                        hooked.spend(by_hook, &mut retries_left);
                        hooked.last = Some(LastFailure::Next(status.as_u16()));
                        tracing::warn!(upstream = name, peer = %addr, status = %status, "peer answered with a gateway error; trying the next peer");
                        continue;
                    }
                } else if health {
                    peer.record_success(Instant::now());
                }
                let back = (pool_key, limits.read);
                let call = (grpc, call_deadline);
                return Ok(respond(
                    answer,
                    peer,
                    addr,
                    up,
                    pool,
                    back,
                    active,
                    (now - started, connect),
                    call,
                ));
            }
            Err(Failure::NotSent(err)) => {
                if health {
                    balancer.record_failure(peer, Instant::now());
                }
                if by_hook {
                    // A peer the hook named is tried again only as it allows.
                    if hooked.extra == 0 {
                        return Err(err);
                    }
                    hooked.extra -= 1;
                }
                failed_try = counters;
                tracing::warn!(upstream = name, peer = %addr, error = %err, "peer unreachable; trying the next peer");
                hooked.last = Some(LastFailure::Failed(err.status().as_u16()));
                last_err = Some(err);
            }
            Err(Failure::NoResponse(err)) => {
                if health {
                    balancer.record_failure(peer, Instant::now());
                }
                if !may_retry(retries_left, hooked.extra) {
                    return Err(err);
                }
                hooked.spend(by_hook, &mut retries_left);
                failed_try = counters;
                tracing::warn!(upstream = name, peer = %addr, error = %err, "peer failed before responding; retrying on the next peer");
                hooked.last = Some(LastFailure::Failed(err.status().as_u16()));
                last_err = Some(err);
            }
            Err(Failure::Final(err)) => {
                if health && err.blame() == Blame::Upstream {
                    balancer.record_failure(peer, Instant::now());
                }
                return Err(err);
            }
        }
    }
}

/// Counts a failed try in its peer's counters: a connect error, a
/// timeout, or both (a connect timeout).
fn count_failure(counters: &PeerCounters, failure: &Failure) {
    let (Failure::NotSent(err) | Failure::NoResponse(err) | Failure::Final(err)) = failure;
    if matches!(
        err,
        ProxyError::Connect { .. } | ProxyError::ConnectTimeout(_)
    ) {
        counters.connect_error();
    }
    let timed_out = match err {
        ProxyError::ConnectTimeout(_)
        | ProxyError::ReadTimeout(_)
        | ProxyError::CallDeadline(_) => true,
        // A write stalled past `send_timeout`.
        ProxyError::Upstream {
            source: ExchangeError::Io(e),
            ..
        } => e.kind() == std::io::ErrorKind::TimedOut,
        _ => false,
    };
    if timed_out {
        counters.timeout();
    }
}

/// The uwsgi packet of a request (see [`super::uwsgi::prepare`]); too many
/// variables fail the request with a 502 and an error line, as in nginx.
async fn uwsgi_packet(
    up: &Upstream,
    name: &str,
    cgi: &CgiFacts<'_>,
    parts: &Parts,
    body: &mut RequestBody,
) -> Result<Vec<u8>, ProxyError> {
    use super::uwsgi::{PrepareError, prepare};
    match prepare(parts, cgi, &up.params, body).await {
        Ok(packet) => Ok(packet),
        Err(PrepareError::Body(e)) => Err(request_error(e)),
        Err(PrepareError::TooBig(size)) => {
            let err = ProxyError::UwsgiTooBig {
                upstream: name.to_owned(),
                size,
            };
            tracing::error!(upstream = name, "{err}");
            Err(err)
        }
    }
}

/// What the tries of one request tell a [`TryHook`], and the tries it allowed.
#[derive(Default)]
struct Hooked {
    /// Tries made so far.
    made: u32,
    /// Tries still allowed by the hook (`set_more_tries`).
    extra: u32,
    /// How the last try failed.
    last: Option<LastFailure>,
}

impl Hooked {
    /// What the hook is told before the next try; `retries` bounds the tries
    /// after the first (nginx's `proxy_next_upstream_tries`, less one).
    fn info(&self, retries: u32) -> TryInfo {
        TryInfo {
            last_failure: self.last,
            more_allowed: retries.saturating_sub(self.made + self.extra),
        }
    }

    /// Counts one more try after a failure: from the hook's allowance for a
    /// peer it named, else from the upstream's `retries`.
    fn spend(&mut self, by_hook: bool, retries_left: &mut u32) {
        if by_hook {
            self.extra = self.extra.saturating_sub(1);
        } else {
            *retries_left = retries_left.saturating_sub(1);
        }
    }
}

/// The timeouts of one try: the upstream's, or those a hook set.
struct Limits {
    connect: Duration,
    send: Duration,
    read: Duration,
}

impl Limits {
    fn of(up: &Upstream, set: Option<Timeouts>) -> Limits {
        let set = set.unwrap_or_default();
        Limits {
            connect: set.connect.unwrap_or(up.def.connect_timeout),
            send: set.send.unwrap_or(up.def.send_timeout),
            read: set.read.unwrap_or(up.def.read_timeout),
        }
    }
}

/// What one try brought back: a response head and what its body comes on
/// (the other protocols' boxed, so that an HTTP/1 answer moves no more
/// bytes than its own).
// The HTTP/1 answer is the common one: boxing it instead would cost every
// request an allocation.
#[allow(clippy::large_enum_variant)]
enum Answer {
    /// An HTTP/1.x response (HTTP/1.1 and uwsgi upstreams).
    Http(ResponseHead, Conn),
    /// A FastCGI response.
    Fastcgi(Box<fastcgi::Answered>),
    /// An HTTP/2 response, with its stream's place on the connection.
    H2(Box<(Response<h2::RecvStream>, http2::conns::Slot)>),
}

impl Answer {
    fn status(&self) -> StatusCode {
        match self {
            Answer::Http(head, _) => head.status,
            Answer::Fastcgi(answered) => answered.0.status,
            Answer::H2(answered) => answered.0.status(),
        }
    }
}

/// One try on an HTTP/2 peer ([`http2::exchange`]), its failure sorted as
/// an HTTP/1 try's: a stream the peer refused unprocessed is as good as
/// never sent, when the body can be sent again. Also says how long
/// connecting took.
async fn h2_try(
    addr: &PeerAddr,
    out: &mut Outgoing<'_>,
    opts: &http2::TryOptions,
    pool: &IdlePool,
    replayable: bool,
    tls: Option<&super::tls::PeerTls>,
) -> Result<(Answer, Duration), Failure> {
    use http2::TryError;
    match http2::exchange(
        addr,
        &out.parts,
        &mut out.body,
        opts,
        (&pool.mux, &|s| pool.counted(opts.peer_id, s), tls),
    )
    .await
    {
        Ok((resp, slot, connect)) => Ok((Answer::H2(Box::new((resp, slot))), connect)),
        Err(TryError::NotSent(e)) => Err(Failure::NotSent(e)),
        Err(TryError::Refused(e)) if replayable => Err(Failure::NotSent(e)),
        Err(TryError::NoResponse(e)) if e.retryable() => Err(Failure::NoResponse(e)),
        Err(TryError::Refused(e) | TryError::NoResponse(e) | TryError::Final(e)) => {
            Err(Failure::Final(e))
        }
    }
}

/// Turns a peer's answer into the response.
#[allow(clippy::too_many_arguments)]
fn respond(
    answer: Answer,
    peer: &super::peer::Peer,
    addr: &PeerAddr,
    up: &Upstream,
    pool: &Rc<IdlePool>,
    (pool_key, read_timeout): (u64, Duration),
    active: super::peer::ActiveGuard,
    (elapsed, connect): (Duration, Duration),
    (grpc, call_deadline): (bool, Option<tokio::time::Instant>),
) -> Exchange {
    let (head, conn) = match answer {
        Answer::Http(head, conn) => (head, conn),
        Answer::H2(answered) => {
            let (resp, slot) = *answered;
            let (head, recv) = resp.into_parts();
            let body = http2::H2Body::new(recv, read_timeout, call_deadline, grpc, slot);
            let mut response = Response::from_parts(head, UpstreamBody::h2(body, active));
            *response.version_mut() = http::Version::HTTP_11;
            return Exchange {
                response,
                peer: peer_name(peer, addr),
                elapsed,
                connect,
                upgraded: None,
            };
        }
        Answer::Fastcgi(answered) => {
            let (head, body) = *answered;
            let back = Back {
                pool: pool.clone(),
                peer_id: pool_key,
                max_idle: up.def.keepalive,
            };
            let body = fastcgi::FastcgiBody::new(body, Some(back), active);
            let mut response = Response::new(UpstreamBody::fastcgi(body));
            *response.status_mut() = head.status;
            *response.headers_mut() = head.headers;
            return Exchange {
                response,
                peer: peer_name(peer, addr),
                elapsed,
                connect,
                upgraded: None,
            };
        }
    };
    let back = head.keep_alive.then(|| Back {
        pool: pool.clone(),
        peer_id: pool_key,
        max_idle: up.def.keepalive,
    });
    let (body, upgraded) = if head.status == StatusCode::SWITCHING_PROTOCOLS {
        (
            UpstreamBody::new(None, Framing::Empty, None, read_timeout, active),
            Some(conn),
        )
    } else {
        (
            UpstreamBody::new(Some(conn), head.framing, back, read_timeout, active),
            None,
        )
    };
    let mut response = Response::new(body);
    *response.status_mut() = head.status;
    *response.version_mut() = head.version;
    *response.headers_mut() = head.headers;
    Exchange {
        response,
        peer: peer_name(peer, addr),
        elapsed,
        connect,
        upgraded,
    }
}

/// The name a peer is logged and labelled by in metrics: its address as
/// the config gives it (or the managed worker's name).
pub fn peer_name(peer: &super::peer::Peer, addr: &PeerAddr) -> String {
    if peer.name().is_empty() {
        addr.to_string()
    } else {
        peer.name().to_owned()
    }
}

/// One exchange with one peer: on a pooled connection if one is alive (a
/// connection the peer closed while idle is replaced by a new one when the
/// request can be sent again), else on a new connection. With a uwsgi
/// `packet`, always on a new connection, never pooled afterwards. Also
/// says how long connecting took (zero on a pooled connection).
#[allow(clippy::too_many_arguments)]
async fn exchange(
    peer_id: u64,
    addr: &PeerAddr,
    parts: &Parts,
    body: &mut RequestBody,
    packet: Option<&[u8]>,
    replayable: bool,
    up: &Upstream,
    limits: &Limits,
    pool: &IdlePool,
    interim: &mut Option<InterimSink<'_>>,
) -> Result<(ResponseHead, Conn, Duration), Failure> {
    if let Some(mut conn) = packet
        .is_none()
        .then(|| pool.checkout(peer_id, up.def.keepalive_timeout))
        .flatten()
    {
        conn.set_send_timeout(limits.send);
        match run(&mut conn, parts, body, None, limits.read, interim).await {
            Ok(head) => return Ok((head, conn, Duration::ZERO)),
            Err(ExchangeError::Closed | ExchangeError::Io(_))
                if replayable && !conn.response_began() =>
            {
                tracing::debug!(peer = %addr, "pooled connection was closed by the peer; reconnecting");
            }
            Err(e) => return Err(failure(e, &conn, addr)),
        }
    }
    let connecting = Instant::now();
    let socket = connect_socket(addr, limits.connect, up.tls.as_ref())
        .await
        .map_err(Failure::NotSent)?;
    let connect_time = connecting.elapsed();
    let mut conn = Conn::new(pool.counted(peer_id, socket), limits.send);
    match run(&mut conn, parts, body, packet, limits.read, interim).await {
        Ok(head) => Ok((head, conn, connect_time)),
        Err(e) => Err(failure(e, &conn, addr)),
    }
}

/// How a sent request failed on `conn`: before any response byte, or not.
fn failure(e: ExchangeError, conn: &Conn, addr: &PeerAddr) -> Failure {
    let err = to_proxy_error(e, addr);
    if err.retryable() && !conn.response_began() {
        Failure::NoResponse(err)
    } else {
        Failure::Final(err)
    }
}

/// Sends the request (its HTTP/1.1 head, or the uwsgi `packet`) and reads
/// the response head.
async fn run(
    conn: &mut Conn,
    parts: &Parts,
    body: &mut RequestBody,
    packet: Option<&[u8]>,
    read_timeout: Duration,
    interim: &mut Option<InterimSink<'_>>,
) -> Result<ResponseHead, ExchangeError> {
    match packet {
        None => conn.send(parts, body).await?,
        Some(packet) => conn.send_packet(packet, body).await?,
    }
    let sink = interim.as_mut().map(|s| &mut **s as InterimSink<'_>);
    let mut head = conn
        .read_head_with(&parts.method, read_timeout, sink)
        .await?;
    // uwsgi has no keep-alive, whatever the app's response says.
    head.keep_alive &= packet.is_none();
    Ok(head)
}

fn to_proxy_error(e: ExchangeError, addr: &PeerAddr) -> ProxyError {
    match e {
        ExchangeError::Request(e) => request_error(e),
        ExchangeError::ReadTimeout => ProxyError::ReadTimeout(addr.to_string()),
        source => ProxyError::Upstream {
            addr: addr.to_string(),
            source,
        },
    }
}

/// How a failure of the client's body is answered.
pub(super) fn request_error(e: RequestBodyError) -> ProxyError {
    match e {
        RequestBodyError::TooLarge => ProxyError::BodyTooLarge,
        RequestBodyError::Timeout => ProxyError::ClientBodyTimeout,
        RequestBodyError::Client(_) => {
            ProxyError::BadRequest("the client's request body was cut off")
        }
    }
}

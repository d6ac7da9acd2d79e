//! moongate's own HTTP/1.1 server side, one loop per connection: read a
//! head from the connection's buffer ([`head`]), hand the request to
//! [`crate::proxy::handle`] with a body that reads from the same buffer
//! ([`body`]), write the response ([`response`]), and go on with the next
//! head (keep-alive and pipelining) while the exchange allows it.
//!
//! The loop tells [`ClientIo`] what it waits for ([`ReadPhase`]): a head
//! (408 when it is slow), a request being served, or the next request
//! (the keep-alive timeout); `send_timeout` is the socket's own. A head this server cannot take is answered
//! here (400, 431, 505; JSON like every answer of moongate's own) and the
//! connection closed; the proxy's checks judge the rest. After `101
//! Switching Protocols` the connection goes to the tunnel through
//! [`ClientUpgrade`]. A connection closed after a response whose request
//! was not read to its end lingers, reading and dropping what the client
//! still sends for a moment, so that closing does not reset the answer
//! away (nginx's `lingering_close`).
//!
//! A request whose handler answered without reading its body to the end
//! (a Lua `ngx.exit`, a 404, a redirect) does not cost the connection:
//! the rest of the body is read and dropped ([`discard`], nginx's
//! `ngx_http_discard_request_body`), up to [`DISCARD_BYTES`] and within
//! `client_body_timeout`, and the next request is read after it. Only a
//! body that cannot be told apart from what follows it (a decoding error,
//! a `100 Continue` never sent) or that is larger than the bound closes
//! the connection, so its bytes are never read as a request.

mod body;
pub(crate) mod head;
mod response;
mod wire;

use std::cell::RefCell;
use std::convert::Infallible;
use std::future::{Future, poll_fn};
use std::pin::{Pin, pin};
use std::rc::Rc;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use http::{Request, StatusCode, Version};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::sync::CancellationToken;

use super::Limits;
use super::io::{ClientIo, ReadPhase};
use crate::body::ClientBody;
use crate::client_upgrade::{ClientUpgrade, UpgradeSender, Upgraded};
use crate::h1_framing::{Decoder, Framing, Step};
use crate::interim::Interim;
use crate::proxy::{self, ConnCtx};
use body::WireBody;
use head::{BodyFraming, RequestHead};
use response::{Exchange, Sending};
use wire::{BodyState, Wire};

/// How long a closing connection keeps reading what the client still sends.
const LINGER: Duration = Duration::from_secs(2);
/// How much a closing connection reads at most while lingering.
const LINGER_BYTES: usize = 256 * 1024;
/// How many bytes of a request body its handler left unread (framing
/// included) the connection reads and drops to stay open. nginx discards
/// a body of any size; moongate bounds it so that a client cannot keep a
/// connection reading for as long as it sends. The bound is the lingering
/// close's: reading that much to keep the connection costs no more than
/// closing it would, and a body that declares more closes at once (its
/// response says `Connection: close`).
const DISCARD_BYTES: usize = LINGER_BYTES;

/// What reading a head ended with. Returned once per request and never
/// stored, so the head is moved rather than boxed (an allocation each).
#[allow(clippy::large_enum_variant)]
enum Next {
    /// A request.
    Head(RequestHead),
    /// The client closed, went idle past the keep-alive timeout, or the
    /// server is stopping: close quietly.
    Close,
    /// A head the server cannot take: answer this and close.
    Refuse(StatusCode, &'static str),
}

/// Serves HTTP/1.x on `io` until the connection closes or `stop` fires.
/// Not an `async fn`: the socket and the context move to where the
/// connection keeps them before the future is made, so an idle
/// connection's future does not hold them (twice) as well.
pub(super) fn serve<S>(
    mut io: ClientIo<S>,
    ctx: Rc<ConnCtx>,
    stop: CancellationToken,
    limits: Limits,
) -> impl Future<Output = ()>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let peer = ctx.peer;
    // Interim responses of the request being served are written ahead of
    // the response by the socket wrapper.
    let interim = Arc::new(Interim::new());
    io.set_interim(interim.clone());
    let wire = Rc::new(RefCell::new(Wire::new(io)));
    // hyper's bound, kept: a head that outgrows this buffer gets 431.
    let max_buf = limits.max_header.max(8192);

    async move {
        // The loop keeps only what waiting for the next head needs; how
        // the connection ends is settled after it, in one boxed future,
        // so its parts take no room in an idle connection's future.
        let end = loop {
            let head = match read_head(&wire, &stop, max_buf, limits.max_headers).await {
                Next::Head(h) => h,
                Next::Close => break End::Quiet,
                Next::Refuse(status, why) => break End::Refuse(status, why),
            };
            // One exchange, boxed: what a request needs lives only while it is
            // served, and a connection waiting for its next request keeps
            // only the loop's few words (an idle connection's memory is
            // mostly its task's future).
            let conn = Conn {
                wire: &wire,
                ctx: &ctx,
                interim: &interim,
                max_buf,
                stop: &stop,
            };
            match Box::pin(exchange(conn, head)).await {
                // A stop after the response went out keep-alive is seen by
                // `read_head`, which then serves one more request.
                Outcome::KeepAlive => {
                    let pipelined = {
                        let mut w = wire.borrow_mut();
                        w.io.set_phase(ReadPhase::Idle);
                        w.release_if_empty();
                        !w.buf.is_empty()
                    };
                    // A pipelined request waits for what the last one left
                    // to run (its Lua `log` handlers) to have a turn, as
                    // nginx finishes a request before reading the next.
                    if pipelined {
                        tokio::task::yield_now().await;
                    }
                }
                Outcome::Close { read_all } => break End::Close { read_all },
                Outcome::Gone => break End::Quiet,
                Outcome::Switched(tx) => break End::Switched(tx),
            }
        };
        match end {
            End::Quiet => {}
            End::Refuse(status, why) => Box::pin(refuse(&wire, peer, status, why)).await,
            End::Close { read_all } => Box::pin(close(&wire, read_all)).await,
            End::Switched(tx) => hand_over(wire, tx),
        }
    }
}

/// How a connection's loop ended: what is left to do before it closes.
enum End {
    /// Nothing: the client closed or went away, or the server is stopping
    /// while the connection is idle.
    Quiet,
    /// Answer a head this server cannot take, then close.
    Refuse(StatusCode, &'static str),
    /// Close; `read_all` is false when request bytes were left unread.
    Close { read_all: bool },
    /// The 101 went out: hand the socket to the tunnel.
    Switched(UpgradeSender),
}

/// Answers a head this server cannot take with `status`, then closes.
async fn refuse<S>(
    wire: &Rc<RefCell<Wire<ClientIo<S>>>>,
    peer: std::net::SocketAddr,
    status: StatusCode,
    why: &str,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    tracing::debug!(%peer, %status, "refusing a request head: {why}");
    let answer = crate::error_page::raw_h1(status);
    let mut written = 0;
    let wrote = poll_fn(|cx| wire.borrow_mut().poll_write_all(cx, &answer, &mut written));
    if wrote.await.is_ok() {
        close(wire, false).await;
    }
}

/// What one exchange leaves the connection to do.
enum Outcome {
    /// Read the next request.
    KeepAlive,
    /// Close; `read_all` is false when request bytes were left unread.
    Close { read_all: bool },
    /// Nothing: the connection is broken or the client went away.
    Gone,
    /// The 101 went out: hand the socket to the tunnel.
    Switched(UpgradeSender),
}

/// What an exchange borrows from its connection.
struct Conn<'a, S> {
    wire: &'a Rc<RefCell<Wire<ClientIo<S>>>>,
    ctx: &'a Rc<ConnCtx>,
    interim: &'a Arc<Interim>,
    max_buf: usize,
    /// The graceful stop: a response written after it closes the connection.
    stop: &'a CancellationToken,
}

/// Serves one request whose head was read: its handler, then its response.
/// Not an `async fn`: its arguments are taken apart before the future is
/// made, so they are not held twice in it.
fn exchange<S>(conn: Conn<'_, S>, head: RequestHead) -> impl Future<Output = Outcome> + '_
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let Conn {
        wire,
        ctx,
        interim,
        max_buf,
        stop,
    } = conn;
    let peer = ctx.peer;
    let RequestHead {
        mut parts,
        framing,
        keep_alive,
        expect_continue,
        raw,
        ..
    } = head;
    async move {
        let decoder = match framing {
            BodyFraming::Empty | BodyFraming::Unknown => None,
            BodyFraming::Length(n) => Some(Decoder::new(Framing::Length(n))),
            BodyFraming::Chunked => Some(Decoder::new(Framing::Chunked)),
        };
        let body = match decoder {
            None => {
                wire.borrow_mut().body = BodyState::Done;
                ClientBody::Empty
            }
            Some(d) => ClientBody::Wire(Box::pin(WireBody::new(wire.clone(), d, expect_continue))),
        };
        // The proxy decides whether the route may switch (`upgrade`).
        let upgrade = crate::forward::wants_upgrade(&parts.headers).then(|| {
            let (tx, rx) = ClientUpgrade::pair();
            parts.extensions.insert(rx);
            tx
        });
        let mut ex = Exchange {
            version: parts.version,
            head: parts.method == http::Method::HEAD,
            keep_alive,
        };
        // HTTP/1.0 clients get no interim responses (RFC 9110 §15.2).
        let queue = (ex.version == Version::HTTP_11).then(|| interim.clone());
        // The request is served at once, without first yielding to the other
        // ready connections: yielding batched requests, so more of them were
        // in flight upstream at once than the pool keeps, and at 256
        // connections a quarter more upstream connections were opened per
        // request than nginx does (bench/RESULTS.md, issue 12 point 5).
        let req = Request::from_parts(parts, body);
        ctx.raw_head.replace(raw);
        // Pinned here, where it is made: passed by value, the handler's future
        // (the largest part of an exchange) would be held twice.
        let handler = pin!(proxy::handle(req, ctx.clone(), queue));
        let Some(resp) = serve_one(wire, handler, interim, max_buf).await else {
            tracing::debug!(%peer, "the client closed the connection during its request");
            return Outcome::Gone;
        };

        // A body left unread that cannot be discarded closes the
        // connection: the response says so.
        if ex.keep_alive && !wire.borrow().body_done() && !may_discard(wire) {
            ex.keep_alive = false;
        }
        // Stopping: the response says the connection closes after it, so
        // the client sends its next request elsewhere instead of into a
        // closing socket.
        if ex.keep_alive && stop.is_cancelled() {
            ex.keep_alive = false;
        }
        // The response body (and its completion hook: the access log, the
        // connection told the exchange is over) is gone once this is done.
        let (sent, keep_alive, switched) = {
            let (mut parts, body) = resp.into_parts();
            let mut body = pin!(body);
            let mut out = Vec::with_capacity(512);
            let (encoding, keep_alive) = {
                let dates = &mut ctx.worker.dates.borrow_mut();
                response::encode_head(&mut parts, &body, ex, dates, &mut out)
            };
            let mut send = Sending {
                body: body.as_mut(),
                encoding,
                out,
                written: 0,
                pending: bytes::Bytes::new(),
                body_done: false,
            };
            wire.borrow_mut().io.set_phase(ReadPhase::Responding);
            let io = || std::cell::RefMut::map(wire.borrow_mut(), |w| &mut w.io);
            let sent = poll_fn(|cx| send.poll_send(cx, io)).await;
            (
                sent,
                keep_alive,
                parts.status == StatusCode::SWITCHING_PROTOCOLS,
            )
        };
        if let Err(e) = sent {
            tracing::debug!(%peer, error = %e, "response not sent whole; closing");
            return Outcome::Gone;
        }
        if switched {
            return upgrade.map_or(Outcome::Gone, Outcome::Switched);
        }
        let body_done = wire.borrow().body_done();
        // A body left unread is read and dropped to keep the connection;
        // a request whose body was read or absent does not get there.
        if keep_alive && (body_done || discard(wire, ctx).await) {
            Outcome::KeepAlive
        } else {
            Outcome::Close {
                read_all: body_done,
            }
        }
    }
}

/// Whether the request body its handler left unread may be discarded
/// once the response is sent ([`discard`]): its decoder was handed back
/// and says no more than [`DISCARD_BYTES`] are left, or the body is still
/// held (by a response still to be sent) and is judged afterwards.
fn may_discard<S>(wire: &Rc<RefCell<Wire<S>>>) -> bool {
    match wire.borrow().body {
        BodyState::Unread(p) => p.remaining().is_none_or(|n| n <= DISCARD_BYTES as u64),
        _ => Rc::strong_count(wire) > 1,
    }
}

/// Reads and drops the rest of a request body its handler left unread, so
/// that the next request's head follows in the buffer (nginx's
/// `ngx_http_discard_request_body`). At most [`DISCARD_BYTES`] are taken
/// off the connection for it, and each read must come within
/// `client_body_timeout`. False when the connection must close instead:
/// no decoder was handed back (the body failed, a `100 Continue` is owed,
/// or it is still held), the body is larger than the bound or malformed,
/// the client is slow or gone.
async fn discard<S>(wire: &Rc<RefCell<Wire<ClientIo<S>>>>, ctx: &ConnCtx) -> bool
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    if Rc::strong_count(wire) > 1 {
        return false;
    }
    let BodyState::Unread(parked) = wire.borrow().body else {
        return false;
    };
    let mut decoder = Decoder::unpark(parked);
    let timeout = ctx.shared.snapshot.load().server.client_body_timeout;
    let mut budget = DISCARD_BYTES;
    loop {
        {
            let mut w = wire.borrow_mut();
            loop {
                let before = w.buf.len();
                let step = decoder.decode(&mut w.buf);
                let Some(left) = budget.checked_sub(before - w.buf.len()) else {
                    return false;
                };
                budget = left;
                match step {
                    Ok(Step::Data(_)) => {}
                    Ok(Step::Done) => {
                        w.body = BodyState::Done;
                        return true;
                    }
                    Ok(Step::NeedMore) => break,
                    Err(_) => return false,
                }
            }
            // Only this much more may be read for the body.
            if w.buf.len() >= budget {
                return false;
            }
        }
        let read = poll_fn(|cx| wire.borrow_mut().poll_fill(cx));
        match tokio::time::timeout(timeout, read).await {
            Ok(Ok(n)) if n > 0 => {}
            _ => return false,
        }
    }
}

/// Runs the request's handler to its response. Meanwhile, interim
/// responses it queues are written as they come, and once the request's
/// body is read the socket is watched: a client that closes aborts the
/// request (the handler is dropped, giving back what it holds), as nginx
/// does unless told to ignore client aborts. Bytes of a pipelined next
/// request are kept in the buffer, up to `max_buf`. `None` when aborted.
fn serve_one<'a, S, F, R>(
    wire: &'a Rc<RefCell<Wire<ClientIo<S>>>>,
    mut handler: Pin<&'a mut F>,
    interim: &'a Interim,
    max_buf: usize,
) -> impl Future<Output = Option<R>> + 'a
where
    S: AsyncRead + AsyncWrite + Unpin,
    F: Future<Output = Result<R, Infallible>>,
{
    poll_fn(move |cx| {
        if let Poll::Ready(r) = handler.as_mut().poll(cx) {
            return Poll::Ready(match r {
                Ok(r) => Some(r),
                Err(never) => match never {},
            });
        }
        let Ok(mut w) = wire.try_borrow_mut() else {
            return Poll::Pending;
        };
        if interim.is_queued() {
            // Pending only while the socket is full; polled again then.
            let _ = Pin::new(&mut w.io).poll_flush(cx);
        }
        while w.body_done() && w.buf.len() < max_buf {
            match w.poll_fill(cx) {
                Poll::Ready(Ok(0) | Err(_)) => return Poll::Ready(None),
                Poll::Ready(Ok(_)) => {}
                Poll::Pending => break,
            }
        }
        Poll::Pending
    })
}

/// Reads until the buffer holds a whole head.
async fn read_head<S>(
    wire: &Rc<RefCell<Wire<ClientIo<S>>>>,
    stop: &CancellationToken,
    max_buf: usize,
    max_headers: usize,
) -> Next
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    loop {
        {
            let mut w = wire.borrow_mut();
            if !w.buf.is_empty() {
                match head::take(&mut w.buf, max_headers) {
                    Ok(Some(h)) => {
                        w.io.set_phase(ReadPhase::Request);
                        return Next::Head(h);
                    }
                    Ok(None) if w.buf.len() >= max_buf => {
                        return Next::Refuse(
                            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                            "the head outgrew its buffer",
                        );
                    }
                    // A head has begun: it has `client_header_timeout`.
                    Ok(None) => w.io.set_phase(ReadPhase::Head),
                    Err(e) => return Next::Refuse(e.status, e.why),
                }
            }
        }
        let idle = wire.borrow().buf.is_empty();
        let read = poll_fn(|cx| wire.borrow_mut().poll_fill(cx));
        let n = if idle {
            // Stopping: a connection between requests gets a last moment
            // for a request already on its way (answered with `Connection:
            // close`), then closes. Boxed: no room in an idle connection.
            tokio::select! {
                r = read => r,
                () = stop.cancelled() => {
                    let last_call = poll_fn(|cx| wire.borrow_mut().poll_fill(cx));
                    match Box::pin(tokio::time::timeout(super::STOP_GRACE, last_call)).await {
                        Ok(r) => r,
                        Err(_) => return Next::Close,
                    }
                }
            }
        } else {
            read.await
        };
        match n {
            Ok(0) | Err(_) => return Next::Close,
            Ok(_) => {}
        }
    }
}

/// Gives the connection to whoever took the request's [`ClientUpgrade`].
fn hand_over<S>(wire: Rc<RefCell<Wire<ClientIo<S>>>>, tx: UpgradeSender)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    if !tx.is_wanted() {
        return;
    }
    match Rc::try_unwrap(wire) {
        Ok(w) => {
            let w = w.into_inner();
            tx.send(Upgraded {
                io: Box::new(w.io),
                early: w.buf.freeze(),
            });
        }
        Err(_) => tracing::debug!("upgraded connection still in use by a request body"),
    }
}

/// Ends the connection: our side is shut down, then, unless everything
/// the client sent was read (`read_all`), [`linger`].
async fn close<S>(wire: &Rc<RefCell<Wire<ClientIo<S>>>>, read_all: bool)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let _ = poll_fn(|cx| Pin::new(&mut wire.borrow_mut().io).poll_shutdown(cx)).await;
    if !read_all {
        linger(wire).await;
    }
}

/// Reads and drops what the client still sends, for at most [`LINGER`]
/// and [`LINGER_BYTES`], so that closing does not reset an answer the
/// client has not read yet.
async fn linger<S>(wire: &Rc<RefCell<Wire<ClientIo<S>>>>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let drain = async {
        let mut total = 0usize;
        loop {
            let n = poll_fn(|cx| {
                let mut w = wire.borrow_mut();
                w.buf.clear();
                w.poll_fill(cx)
            })
            .await;
            match n {
                Ok(0) | Err(_) => return,
                Ok(n) => total += n,
            }
            if total >= LINGER_BYTES {
                return;
            }
        }
    };
    let _ = tokio::time::timeout(LINGER, drain).await;
}

//! A lean HTTP/1.1 client for pooled peer connections. It runs inside the
//! request's own task — no connection task, no channels — which is where
//! most of the per-request CPU of a general-purpose client went (measured:
//! bench/RESULTS.md). One exchange at a time per connection: write the
//! request head and body, read the response head, then the response body is
//! polled straight from the socket by [`super::UpstreamBody`].

use std::io;
use std::ops::Range;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::request::Parts;
use http::{Method, StatusCode, Version};
use http_body_util::BodyExt;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};
use tokio::time::Instant;

use super::rehome::Rehome;
use crate::body::{RequestBody, RequestBodyError};
use crate::forward::connection_has;
use crate::h1_framing::{DecodeError, Decoder, Framing, Step};
use crate::lazy_timer::LazyTimer;
use crate::write_timed::WriteTimed;

/// Largest response head accepted.
const MAX_HEAD: usize = 64 * 1024;
/// Most headers accepted in a response head.
const MAX_HEADERS: usize = 128;
/// How much to read at a time.
const READ_CHUNK: usize = 16 * 1024;

/// Receives the interim responses of an exchange as they are read.
pub type InterimSink<'a> = &'a mut dyn FnMut(StatusCode, HeaderMap);

/// A connected byte stream to a peer (TCP or unix socket).
pub trait Socket: AsyncRead + AsyncWrite + Unpin + Send {
    /// Whether an idle connection is still open with nothing unread: the
    /// peer neither closed it nor sent anything.
    fn is_idle_open(&self) -> bool;

    /// The same socket, registered with the current thread's runtime (an
    /// idle connection handed to another worker thread: see
    /// [`super::rehome`]).
    fn rehome(self: Box<Self>) -> io::Result<Box<dyn Socket>>;
}

/// The check behind [`Socket::is_idle_open`]: tokio's readiness says
/// whether anything (data or a close) arrived since the last short read, so
/// the common case costs no system call; a stale readiness is settled by
/// one non-blocking read.
macro_rules! idle_open {
    ($sock:expr) => {{
        let mut cx = Context::from_waker(std::task::Waker::noop());
        match $sock.poll_read_ready(&mut cx) {
            Poll::Pending => true,
            Poll::Ready(Err(_)) => false,
            Poll::Ready(Ok(())) => {
                let mut probe = [0u8; 1];
                matches!($sock.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
            }
        }
    }};
}

impl Socket for TcpStream {
    fn is_idle_open(&self) -> bool {
        idle_open!(self)
    }

    fn rehome(self: Box<Self>) -> io::Result<Box<dyn Socket>> {
        Ok(Box::new((*self).rehome()?))
    }
}

impl Socket for UnixStream {
    fn is_idle_open(&self) -> bool {
        idle_open!(self)
    }

    fn rehome(self: Box<Self>) -> io::Result<Box<dyn Socket>> {
        Ok(Box::new((*self).rehome()?))
    }
}

/// What went wrong in an exchange.
#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    /// The peer closed the connection before any byte of a response: on a
    /// pooled connection, the peer had closed it while it was idle.
    #[error("the peer closed the connection before responding")]
    Closed,
    /// A socket error (also a write stalled past `send_timeout`).
    #[error("{0}")]
    Io(#[from] io::Error),
    /// No response head within `read_timeout`.
    #[error("no response within read_timeout")]
    ReadTimeout,
    /// The peer's response is not valid HTTP/1.1.
    #[error("invalid response: {0}")]
    Invalid(&'static str),
    /// The response body is not validly framed.
    #[error("invalid response body: {0}")]
    Body(#[from] DecodeError),
    /// The client's request body failed (too large, too slow, aborted).
    #[error("{0}")]
    Request(#[from] RequestBodyError),
    /// An HTTP/2 peer reset the stream or the connection, or broke the
    /// protocol (`protocol = "h2"` or `"grpc"`).
    #[error("HTTP/2: {0}")]
    H2(Box<h2::Error>),
}

/// A response head.
#[derive(Debug)]
pub struct ResponseHead {
    /// The status.
    pub status: StatusCode,
    /// The peer's HTTP version.
    pub version: Version,
    /// The headers as sent (values share the read buffer's memory).
    pub headers: HeaderMap,
    /// How the body is delimited.
    pub framing: Framing,
    /// Whether the connection may carry another exchange afterwards.
    pub keep_alive: bool,
}

/// One HTTP/1.1 connection to a peer.
pub struct Conn {
    io: WriteTimed<Box<dyn Socket>>,
    buf: BytesMut,
    out: Vec<u8>,
    /// True when the connection came from the pool (so an immediate close
    /// means the peer dropped it while idle, and a retry is safe).
    pub reused: bool,
    /// Whether a byte of a response to the current request arrived (an
    /// interim 1xx included); cleared when a request is written.
    heard: bool,
    /// The read timeout's timer, kept with the connection so an exchange
    /// on a pooled connection registers none of its own.
    timer: LazyTimer,
}

impl Conn {
    /// A fresh connection over `socket`; stalled writes fail after `send_timeout`.
    pub fn new(socket: Box<dyn Socket>, send_timeout: Duration) -> Conn {
        Conn {
            io: WriteTimed::new(socket, send_timeout),
            buf: BytesMut::with_capacity(READ_CHUNK),
            out: Vec::with_capacity(1024),
            reused: false,
            heard: false,
            timer: LazyTimer::new(),
        }
    }

    /// The connection, moved to the current thread's runtime: its socket
    /// re-registered and its timers dropped (made anew when next used);
    /// see [`super::rehome`].
    pub fn rehome(self) -> io::Result<Conn> {
        let timeout = self.io.timeout();
        let socket = self.io.into_inner().rehome()?;
        Ok(Conn {
            io: WriteTimed::new(socket, timeout),
            timer: LazyTimer::new(),
            ..self
        })
    }

    /// Sets the send timeout for the next exchange (a pooled connection
    /// serves requests whose timeouts a Lua balancer may have changed).
    pub fn set_send_timeout(&mut self, timeout: Duration) {
        self.io.set_timeout(timeout);
    }

    /// Ready once `deadline` (a read timeout) has passed; see [`LazyTimer`].
    pub fn poll_timer(&mut self, cx: &mut Context<'_>, deadline: Instant) -> Poll<()> {
        self.timer.poll_until(cx, deadline)
    }

    /// Whether the peer sent any byte of a response to the current request:
    /// a failure after that is never retried (the response had begun).
    pub fn response_began(&self) -> bool {
        self.heard
    }

    /// Whether an idle connection is still open and clean.
    pub fn is_alive(&self) -> bool {
        self.io.get_ref().is_idle_open()
    }

    /// True when nothing unread is left in the read buffer.
    pub fn is_clean(&self) -> bool {
        self.buf.is_empty()
    }

    /// Writes the request head and streams the body.
    pub async fn send(
        &mut self,
        parts: &Parts,
        body: &mut RequestBody,
    ) -> Result<(), ExchangeError> {
        let chunked = write_head(&mut self.out, parts, body.is_empty());
        self.heard = false;
        self.io.write_all(&self.out).await?;
        self.send_body(body, chunked).await
    }

    /// Writes the start of a request in another protocol (a uwsgi packet)
    /// and streams the body after it as is; the response is read as an
    /// HTTP/1.x response.
    pub async fn send_packet(
        &mut self,
        packet: &[u8],
        body: &mut RequestBody,
    ) -> Result<(), ExchangeError> {
        self.heard = false;
        self.io.write_all(packet).await?;
        self.send_body(body, false).await
    }

    /// Streams the request body, in chunks when `chunked`.
    async fn send_body(
        &mut self,
        body: &mut RequestBody,
        chunked: bool,
    ) -> Result<(), ExchangeError> {
        if body.is_empty() {
            return Ok(());
        }
        while let Some(frame) = body.frame().await {
            let Ok(data) = frame?.into_data() else {
                continue;
            };
            if data.is_empty() {
                continue;
            }
            if chunked {
                let size = format!("{:x}\r\n", data.len());
                self.io.write_all(size.as_bytes()).await?;
                self.io.write_all(&data).await?;
                self.io.write_all(b"\r\n").await?;
            } else {
                self.io.write_all(&data).await?;
            }
        }
        if chunked {
            self.io.write_all(b"0\r\n\r\n").await?;
        }
        Ok(())
    }

    /// Writes a request whose whole body is in memory (`parts` must carry
    /// its Content-Length when `body` is not empty).
    pub async fn send_full(&mut self, parts: &Parts, body: &[u8]) -> Result<(), ExchangeError> {
        write_head(&mut self.out, parts, body.is_empty());
        self.heard = false;
        self.out.extend_from_slice(body);
        self.io.write_all(&self.out).await?;
        Ok(())
    }

    /// Reads the response head (skipping interim 1xx responses but 101).
    pub async fn read_head(
        &mut self,
        method: &Method,
        read_timeout: Duration,
    ) -> Result<ResponseHead, ExchangeError> {
        self.read_head_with(method, read_timeout, None).await
    }

    /// Reads the response head; interim responses (1xx but 100 and 101:
    /// 103 Early Hints and the like) go to `on_interim` as they arrive,
    /// without their hop-by-hop fields.
    pub async fn read_head_with(
        &mut self,
        method: &Method,
        read_timeout: Duration,
        mut on_interim: Option<InterimSink<'_>>,
    ) -> Result<ResponseHead, ExchangeError> {
        let deadline = Instant::now() + read_timeout;
        loop {
            if !self.buf.is_empty() {
                if let Some(head) = parse_head(&mut self.buf, method, &mut on_interim)? {
                    return Ok(head);
                }
                if self.buf.len() > MAX_HEAD {
                    return Err(ExchangeError::Invalid("response head too large"));
                }
            }
            self.buf.reserve(READ_CHUNK);
            let n = std::future::poll_fn(|cx| {
                let read = tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, &mut self.buf);
                if read.is_pending() && self.timer.poll_until(cx, deadline).is_ready() {
                    return Poll::Ready(Err(ExchangeError::ReadTimeout));
                }
                read.map_err(ExchangeError::from)
            })
            .await?;
            self.heard |= n > 0;
            if n == 0 {
                return Err(if self.buf.is_empty() {
                    ExchangeError::Closed
                } else {
                    ExchangeError::Invalid("connection closed inside the response head")
                });
            }
        }
    }

    /// Polls the next piece of the response body.
    pub fn poll_body(
        &mut self,
        cx: &mut Context<'_>,
        decoder: &mut Decoder,
    ) -> Poll<Option<Result<Bytes, ExchangeError>>> {
        loop {
            match decoder.decode(&mut self.buf) {
                Err(e) => return Poll::Ready(Some(Err(e.into()))),
                Ok(Step::Data(b)) => return Poll::Ready(Some(Ok(b))),
                Ok(Step::Done) => return Poll::Ready(None),
                Ok(Step::NeedMore) => {}
            }
            self.buf.reserve(READ_CHUNK);
            match tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, &mut self.buf) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Some(Err(e.into()))),
                Poll::Ready(Ok(0)) => {
                    return Poll::Ready(match decoder.eof() {
                        Ok(()) => None,
                        Err(e) => Some(Err(e.into())),
                    });
                }
                Poll::Ready(Ok(_)) => {}
            }
        }
    }

    /// The socket and any bytes already read past the head (after a 101).
    pub fn into_upgraded(self) -> (WriteTimed<Box<dyn Socket>>, Bytes) {
        (self.io, self.buf.freeze())
    }
}

/// Parses a complete response head off the front of `buf`, skipping
/// interim responses (1xx but 101; all but 100 go to `on_interim`);
/// `None` when more bytes are needed. A loop, not recursion: a peer may
/// send thousands of interim responses in one read.
pub(crate) fn parse_head(
    buf: &mut BytesMut,
    method: &Method,
    on_interim: &mut Option<InterimSink<'_>>,
) -> Result<Option<ResponseHead>, ExchangeError> {
    loop {
        let Some((status, version, headers)) = split_head(buf)? else {
            return Ok(None);
        };
        if status.is_informational() && status != StatusCode::SWITCHING_PROTOCOLS {
            // 100 Continue (moongate answers the client's Expect itself),
            // 103 Early Hints: the final response follows.
            if status != StatusCode::CONTINUE
                && let Some(sink) = on_interim.as_mut()
            {
                let mut headers = headers;
                crate::forward::strip_hop_by_hop(&mut headers, false);
                sink(status, headers);
            }
            continue;
        }
        let framing = framing_of(method, status, &headers)?;
        let keep_alive = framing != Framing::Close
            && status != StatusCode::SWITCHING_PROTOCOLS
            && match version {
                Version::HTTP_10 => connection_has(&headers, "keep-alive"),
                _ => !connection_has(&headers, "close"),
            };
        return Ok(Some(ResponseHead {
            status,
            version,
            headers,
            framing,
            keep_alive,
        }));
    }
}

/// Splits one complete head (interim or final) off the front of `buf`.
fn split_head(
    buf: &mut BytesMut,
) -> Result<Option<(StatusCode, Version, HeaderMap)>, ExchangeError> {
    // httparse writes the slots it uses: none is initialised beforehand.
    let mut slots = [const { std::mem::MaybeUninit::uninit() }; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut []);
    let parsed = httparse::ParserConfig::default()
        .parse_response_with_uninit_headers(&mut resp, buf, &mut slots);
    let len = match parsed {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(ExchangeError::Invalid("too many response headers"));
        }
        Err(_) => return Err(ExchangeError::Invalid("malformed response head")),
    };
    let code = resp.code.unwrap_or(0);
    let status =
        StatusCode::from_u16(code).map_err(|_| ExchangeError::Invalid("bad status code"))?;
    let version = if resp.version == Some(0) {
        Version::HTTP_10
    } else {
        Version::HTTP_11
    };
    let base = buf.as_ptr() as usize;
    let ranges: Vec<(Range<usize>, Range<usize>)> = resp
        .headers
        .iter()
        .map(|h| {
            let name = h.name.as_ptr() as usize - base;
            let value = h.value.as_ptr() as usize - base;
            (name..name + h.name.len(), value..value + h.value.len())
        })
        .collect();
    let raw = buf.split_to(len).freeze();
    let mut headers = HeaderMap::with_capacity(ranges.len() + 2); // room for fields added on the way out
    for (name, value) in ranges {
        let name = HeaderName::from_bytes(&raw[name])
            .map_err(|_| ExchangeError::Invalid("bad header name"))?;
        let value = HeaderValue::from_maybe_shared(raw.slice(value))
            .map_err(|_| ExchangeError::Invalid("bad header value"))?;
        headers.append(name, value);
    }
    Ok(Some((status, version, headers)))
}

/// Serializes the request head into `out`; returns whether the body is
/// sent chunked (it has one, and no Content-Length).
fn write_head(out: &mut Vec<u8>, parts: &Parts, no_body: bool) -> bool {
    out.clear();
    out.extend_from_slice(parts.method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(
        parts
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .as_bytes(),
    );
    out.extend_from_slice(b" HTTP/1.1\r\n");
    crate::h1_wire::write_fields(&parts.headers, out);
    let has_length = parts.headers.contains_key(header::CONTENT_LENGTH);
    let chunked = !no_body && !has_length;
    if chunked {
        out.extend_from_slice(b"transfer-encoding: chunked\r\n");
    } else if no_body
        && !has_length
        && matches!(parts.method, Method::POST | Method::PUT | Method::PATCH)
    {
        out.extend_from_slice(b"content-length: 0\r\n");
    }
    out.extend_from_slice(b"\r\n");
    chunked
}

/// How the response body is delimited (RFC 9112 §6.3).
fn framing_of(
    method: &Method,
    status: StatusCode,
    headers: &HeaderMap,
) -> Result<Framing, ExchangeError> {
    if method == Method::HEAD
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        return Ok(Framing::Empty);
    }
    if let Some(te) = headers
        .get_all(header::TRANSFER_ENCODING)
        .iter()
        .next_back()
    {
        let last = te
            .to_str()
            .ok()
            .and_then(|v| v.rsplit(',').next())
            .map(str::trim);
        return Ok(if last.is_some_and(|c| c.eq_ignore_ascii_case("chunked")) {
            Framing::Chunked
        } else {
            Framing::Close
        });
    }
    let mut length = None;
    for v in headers.get_all(header::CONTENT_LENGTH) {
        let n: u64 = v
            .to_str()
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .ok_or(ExchangeError::Invalid("bad Content-Length"))?;
        if length.is_some_and(|l| l != n) {
            return Err(ExchangeError::Invalid("conflicting Content-Length values"));
        }
        length = Some(n);
    }
    Ok(length.map_or(Framing::Close, Framing::Length))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    fn parts(method: &str, uri: &str, headers: &[(&str, &str)]) -> Parts {
        let mut b = http::Request::builder().method(method).uri(uri);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(())
            .map(|r| r.into_parts().0)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn request_heads_carry_the_right_framing() {
        let mut out = Vec::new();
        let get = parts("GET", "/a?b=1", &[("host", "x")]);
        assert!(!write_head(&mut out, &get, true));
        assert_eq!(out, b"GET /a?b=1 HTTP/1.1\r\nhost: x\r\n\r\n");
        let post = parts("POST", "/p", &[("host", "x")]);
        assert!(!write_head(&mut out, &post, true));
        assert!(out.ends_with(b"content-length: 0\r\n\r\n"));
        assert!(write_head(&mut out, &post, false));
        assert!(out.ends_with(b"transfer-encoding: chunked\r\n\r\n"));
        let sized = parts("PUT", "/p", &[("content-length", "5")]);
        assert!(!write_head(&mut out, &sized, false));
        assert!(!out.windows(17).any(|w| w == b"transfer-encoding"));
    }

    /// A connection whose peer end is returned for the test to drive.
    fn pair() -> (Conn, UnixStream) {
        let (ours, theirs) = UnixStream::pair().unwrap_or_else(|e| panic!("socket pair: {e}"));
        (Conn::new(Box::new(ours), Duration::from_secs(5)), theirs)
    }

    async fn body_of(conn: &mut Conn, framing: Framing) -> Result<Vec<u8>, ExchangeError> {
        let mut decoder = Decoder::new(framing);
        let mut out = Vec::new();
        while let Some(piece) = std::future::poll_fn(|cx| conn.poll_body(cx, &mut decoder)).await {
            out.extend_from_slice(&piece?);
        }
        Ok(out)
    }

    #[tokio::test]
    async fn reads_a_head_after_interim_responses_then_a_chunked_body() {
        let (mut conn, mut peer) = pair();
        let wire = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nX-A: 1\r\nX-A: 2\r\n\
                     Transfer-Encoding: chunked\r\n\r\n4\r\nwiki\r\n0\r\n\r\n";
        peer.write_all(wire).await.unwrap_or_else(|e| panic!("{e}"));
        let head = conn
            .read_head(&Method::POST, Duration::from_secs(5))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(head.status, StatusCode::CREATED);
        assert_eq!(head.headers.get_all("x-a").iter().count(), 2);
        assert_eq!(head.framing, Framing::Chunked);
        assert!(head.keep_alive);
        assert_eq!(
            body_of(&mut conn, head.framing).await.ok().as_deref(),
            Some(&b"wiki"[..])
        );
        assert!(conn.is_clean());
        assert!(conn.is_alive());
        drop(peer);
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(
            !conn.is_alive(),
            "a connection the peer closed is not reused"
        );
    }

    #[tokio::test]
    async fn close_before_any_response_and_timeouts_are_told_apart() {
        let (mut conn, peer) = pair();
        drop(peer);
        let e = conn.read_head(&Method::GET, Duration::from_secs(5)).await;
        assert!(matches!(e, Err(ExchangeError::Closed)), "{e:?}");
        assert!(!conn.response_began());

        let (mut conn, _peer) = pair();
        let e = conn
            .read_head(&Method::GET, Duration::from_millis(50))
            .await;
        assert!(matches!(e, Err(ExchangeError::ReadTimeout)), "{e:?}");
        assert!(!conn.response_began(), "silent: a retry may follow");

        // An interim response is a response byte: no retry after it, even
        // though what failed afterwards looks like a plain close.
        let (mut conn, mut peer) = pair();
        peer.write_all(b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        drop(peer);
        let e = conn.read_head(&Method::GET, Duration::from_secs(5)).await;
        assert!(matches!(e, Err(ExchangeError::Closed)), "{e:?}");
        assert!(conn.response_began());

        let (mut conn, mut peer) = pair();
        peer.write_all(b"HTTP/1.1 200 OK\r\nContent-Len")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        drop(peer);
        let e = conn.read_head(&Method::GET, Duration::from_secs(5)).await;
        assert!(matches!(e, Err(ExchangeError::Invalid(_))), "{e:?}");
    }

    #[tokio::test]
    async fn http10_and_connection_close_are_not_reused() {
        let (mut conn, mut peer) = pair();
        peer.write_all(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nhi")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let head = conn
            .read_head(&Method::GET, Duration::from_secs(5))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(head.version, Version::HTTP_10);
        assert!(!head.keep_alive);
        assert_eq!(
            body_of(&mut conn, head.framing).await.ok().as_deref(),
            Some(&b"hi"[..])
        );

        let (mut conn, mut peer) = pair();
        peer.write_all(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        drop(peer);
        let head = conn
            .read_head(&Method::GET, Duration::from_secs(5))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(head.framing, Framing::Close);
        assert!(!head.keep_alive);
        assert_eq!(
            body_of(&mut conn, head.framing).await.ok().as_deref(),
            Some(&b"until the end"[..])
        );
    }

    #[tokio::test]
    async fn a_truncated_body_is_an_error() {
        let (mut conn, mut peer) = pair();
        peer.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        drop(peer);
        let head = conn
            .read_head(&Method::GET, Duration::from_secs(5))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(
            body_of(&mut conn, head.framing).await,
            Err(ExchangeError::Body(DecodeError::Truncated))
        ));
    }

    #[test]
    fn thousands_of_interim_responses_do_not_overflow_a_worker_stack() {
        // Found reading the head parser for the fuzz target: it recursed
        // once per interim response, ~4 KiB of stack each, so one 64 KiB
        // read of `100`s overflowed a worker thread's 2 MiB stack.
        let mut wire = b"HTTP/1.1 100 \r\n\r\n".repeat(4000);
        wire.extend_from_slice(b"HTTP/1.1 204 No Content\r\n\r\nrest");
        let parsed = std::thread::Builder::new()
            .stack_size(2 << 20)
            .spawn(move || {
                let mut buf = BytesMut::from(&wire[..]);
                let head = parse_head(&mut buf, &Method::GET, &mut None);
                (head.map(|h| h.map(|h| h.status)).ok(), buf)
            })
            .and_then(|t| t.join().map_err(|_| io::Error::other("panicked")))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(parsed.0, Some(Some(StatusCode::NO_CONTENT)));
        assert_eq!(&parsed.1[..], b"rest");
    }

    #[test]
    fn response_framing_follows_rfc_9112() {
        let h = |pairs: &[(&'static str, &'static str)]| {
            let mut m = HeaderMap::new();
            for (k, v) in pairs {
                m.append(*k, HeaderValue::from_static(v));
            }
            m
        };
        let ok = StatusCode::OK;
        assert_eq!(
            framing_of(&Method::GET, ok, &h(&[("content-length", "7")])).ok(),
            Some(Framing::Length(7))
        );
        assert_eq!(
            framing_of(&Method::HEAD, ok, &h(&[("content-length", "7")])).ok(),
            Some(Framing::Empty)
        );
        assert_eq!(
            framing_of(&Method::GET, StatusCode::NOT_MODIFIED, &h(&[])).ok(),
            Some(Framing::Empty)
        );
        let te = h(&[
            ("transfer-encoding", "gzip, chunked"),
            ("content-length", "9"),
        ]);
        assert_eq!(
            framing_of(&Method::GET, ok, &te).ok(),
            Some(Framing::Chunked)
        );
        assert_eq!(
            framing_of(&Method::GET, ok, &h(&[])).ok(),
            Some(Framing::Close)
        );
        let two = h(&[("content-length", "1"), ("content-length", "2")]);
        assert!(framing_of(&Method::GET, ok, &two).is_err());
    }
}

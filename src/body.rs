//! Body types of the request path. [`ResponseBody`] is what every response
//! carries back to the client: one of the body kinds below, plus a
//! completion hook that runs once when the body ends or is dropped (the
//! access log, and telling the connection the exchange is over).
//! [`ClientBody`] is a request body as the connection delivers it (hyper's
//! HTTP/1 body, or an HTTP/2 stream's data), and
//! [`RequestBody`] is the client's body on its way upstream, with the
//! `client_max_body_size` and `client_body_timeout` limits applied while it
//! streams (nothing is buffered whole); it ends with a
//! [`RequestBodyError`] that says which limit was hit.

use std::cell::Cell;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::time::Instant;

use crate::lazy_timer::LazyTimer;

use crate::cache::stream::CacheBody;
use crate::static_files::StaticBody;
use crate::upstream::UpstreamBody;

/// Boxed error used by bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The kinds of response body moongate sends.
pub enum Kind {
    /// No body.
    Empty,
    /// A body held in memory (error pages, admin answers, Lua output).
    Full(Option<Bytes>),
    /// Streamed from an upstream peer.
    Upstream(UpstreamBody),
    /// Streamed from a static file.
    Static(StaticBody),
    /// Streamed through the proxy cache (stored while sent, or another
    /// request's response followed).
    Cache(Box<CacheBody>),
    /// Made while it is sent by code this module does not know: a Lua
    /// content handler still writing, or a Lua body filter over another
    /// body.
    Stream(Pin<Box<dyn Body<Data = Bytes, Error = BoxError>>>),
}

/// Runs once when a response body has been sent in full, or abandoned.
pub trait OnComplete {
    /// `bytes` is how many body bytes were handed to the connection;
    /// `complete` is false when the body was dropped before its end.
    fn complete(self: Box<Self>, bytes: u64, complete: bool);
}

/// A response body: the kind plus its completion hook.
pub struct ResponseBody {
    kind: Kind,
    sent: u64,
    on_complete: Option<Box<dyn OnComplete>>,
}

impl ResponseBody {
    /// An empty body.
    pub fn empty() -> Self {
        Self::from_kind(Kind::Empty)
    }

    /// A body held in memory.
    pub fn full(bytes: impl Into<Bytes>) -> Self {
        let bytes = bytes.into();
        if bytes.is_empty() {
            return Self::empty();
        }
        Self::from_kind(Kind::Full(Some(bytes)))
    }

    /// Wraps one of the body kinds.
    pub fn from_kind(kind: Kind) -> Self {
        ResponseBody {
            kind,
            sent: 0,
            on_complete: None,
        }
    }

    /// Sets the hook that runs when the body ends or is dropped.
    pub fn set_on_complete(&mut self, hook: Box<dyn OnComplete>) {
        self.on_complete = Some(hook);
    }

    /// Hides the body's length from the connection, which then sends it
    /// chunked on HTTP/1.1 (a Lua handler cleared `Content-Length`, as
    /// nginx then streams). A body already ended keeps its length of 0.
    pub fn hide_length(&mut self) {
        if self.is_end_stream() {
            return;
        }
        let kind = std::mem::replace(&mut self.kind, Kind::Empty);
        self.kind = Kind::Stream(Box::pin(LengthHidden(ResponseBody::from_kind(kind))));
    }

    fn finish(&mut self, complete: bool) {
        if let Some(hook) = self.on_complete.take() {
            hook.complete(self.sent, complete);
        }
    }
}

impl Drop for ResponseBody {
    fn drop(&mut self) {
        // hyper stops polling once `is_end_stream` says so: that is a
        // complete body too.
        let complete = self.is_end_stream();
        self.finish(complete);
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let polled: Option<Result<Frame<Bytes>, BoxError>> = match &mut this.kind {
            Kind::Empty => None,
            Kind::Full(bytes) => bytes.take().map(|b| Ok(Frame::data(b))),
            Kind::Upstream(body) => ready!(Pin::new(body).poll_frame(cx)),
            Kind::Static(body) => {
                ready!(Pin::new(body).poll_frame(cx)).map(|r| r.map_err(BoxError::from))
            }
            Kind::Cache(body) => ready!(Pin::new(body.as_mut()).poll_frame(cx)),
            Kind::Stream(body) => ready!(body.as_mut().poll_frame(cx)),
        };
        match &polled {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    this.sent += data.len() as u64;
                }
                if this.is_end_stream() {
                    this.finish(true);
                }
            }
            None => this.finish(true),
            Some(Err(_)) => this.finish(false),
        }
        Poll::Ready(polled)
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Empty => true,
            Kind::Full(bytes) => bytes.is_none(),
            Kind::Upstream(body) => body.is_end_stream(),
            Kind::Static(body) => body.is_end_stream(),
            Kind::Cache(body) => body.is_end_stream(),
            Kind::Stream(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Empty => SizeHint::with_exact(0),
            Kind::Full(bytes) => SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64)),
            Kind::Upstream(body) => body.size_hint(),
            Kind::Static(body) => body.size_hint(),
            Kind::Cache(body) => body.size_hint(),
            Kind::Stream(body) => body.size_hint(),
        }
    }
}

/// The error a [`RequestBody`] ends with.
#[derive(Debug, thiserror::Error)]
pub enum RequestBodyError {
    /// More than `client_max_body_size` arrived.
    #[error("request body larger than client_max_body_size")]
    TooLarge,
    /// The client paused longer than `client_body_timeout`.
    #[error("client body timeout")]
    Timeout,
    /// The client connection failed (or reset its stream).
    #[error("client body: {0}")]
    Client(BoxError),
}

/// A response body whose length is not told (see
/// [`ResponseBody::hide_length`]).
struct LengthHidden(ResponseBody);

impl Body for LengthHidden {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Pin::new(&mut self.0).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_end_stream()
    }
}

/// A request body as the client connection delivers it.
pub enum ClientBody {
    /// No body.
    Empty,
    /// An HTTP/1 body read from the client connection by moongate's own
    /// server (`conn::h1`).
    Wire(Pin<Box<dyn Body<Data = Bytes, Error = BoxError>>>),
    /// The data of an HTTP/2 stream; flow-control credit is given back as
    /// data is taken, so the client may send more.
    H2(h2::RecvStream),
}

impl Body for ClientBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            ClientBody::Empty => Poll::Ready(None),
            ClientBody::Wire(b) => b.as_mut().poll_frame(cx),
            ClientBody::H2(stream) => {
                if !stream.is_end_stream() {
                    match ready!(stream.poll_data(cx)) {
                        Some(Ok(data)) => {
                            let _ = stream.flow_control().release_capacity(data.len());
                            return Poll::Ready(Some(Ok(Frame::data(data))));
                        }
                        Some(Err(e)) => return Poll::Ready(Some(Err(e.into()))),
                        None => {}
                    }
                }
                match ready!(stream.poll_trailers(cx)) {
                    Ok(Some(trailers)) => Poll::Ready(Some(Ok(Frame::trailers(trailers)))),
                    Ok(None) => Poll::Ready(None),
                    Err(e) => Poll::Ready(Some(Err(e.into()))),
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ClientBody::Empty => true,
            ClientBody::Wire(b) => b.is_end_stream(),
            ClientBody::H2(s) => s.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ClientBody::Empty => SizeHint::with_exact(0),
            ClientBody::Wire(b) => b.size_hint(),
            ClientBody::H2(_) => SizeHint::default(),
        }
    }
}

/// The client's request body on its way upstream, limited in size and in
/// the time between chunks.
pub struct RequestBody {
    inner: Option<ClientBody>,
    /// A body already read into memory (by a Lua handler), sent as is.
    held: Option<Bytes>,
    limit: u64,
    seen: u64,
    /// Where `seen` is also kept for the access log (`bytes_received`),
    /// when it asked.
    seen_out: Option<Rc<Cell<u64>>>,
    timeout: Duration,
    /// When a silent client fails the body; `None` while data comes.
    deadline: Option<Instant>,
    timer: LazyTimer,
}

impl RequestBody {
    /// No body.
    pub fn empty() -> Self {
        RequestBody {
            inner: None,
            held: None,
            limit: u64::MAX,
            seen: 0,
            seen_out: None,
            timeout: Duration::MAX,
            deadline: None,
            timer: LazyTimer::new(),
        }
    }

    /// The client's body with its limits.
    pub fn limited(body: ClientBody, limit: u64, timeout: Duration) -> Self {
        if body.is_end_stream() {
            return Self::empty();
        }
        RequestBody {
            inner: Some(body),
            limit,
            timeout,
            ..Self::empty()
        }
    }

    /// Changes the size limit (a route's own, once it is known); what was
    /// read so far counts against it.
    pub fn set_limit(&mut self, limit: u64) {
        if self.inner.is_some() {
            self.limit = limit;
        }
    }

    /// A counter of the bytes read from the client's body from now on,
    /// for the access log; `None` when no byte is to come (only a body
    /// still to be read pays for the counter).
    pub fn count_read(&mut self) -> Option<Rc<Cell<u64>>> {
        self.inner.as_ref()?;
        let counter = Rc::new(Cell::new(self.seen));
        self.seen_out = Some(counter.clone());
        Some(counter)
    }

    /// A body held in memory.
    pub fn buffered(bytes: Bytes) -> Self {
        RequestBody {
            held: (!bytes.is_empty()).then_some(bytes),
            ..Self::empty()
        }
    }

    /// True when no body bytes are left to send (none at all, or all sent).
    pub fn is_empty(&self) -> bool {
        self.inner.is_none() && self.held.is_none()
    }

    /// Takes the bytes at the front of the body held in memory (put back by
    /// [`unread`](Self::unread), or a buffered body's), if any.
    pub fn take_held(&mut self) -> Option<Bytes> {
        self.held.take()
    }

    /// Puts `bytes` (read from this body but not used) back at its front:
    /// they come first when it is read or sent on.
    pub fn unread(&mut self, bytes: Bytes) {
        if bytes.is_empty() {
            return;
        }
        self.held = Some(match self.held.take() {
            None => bytes,
            Some(rest) => {
                let mut both = bytes::BytesMut::from(&bytes[..]);
                both.extend_from_slice(&rest);
                both.freeze()
            }
        });
    }

    /// Reads the whole body into memory, under the same limits.
    pub async fn read_all(mut self) -> Result<Bytes, RequestBodyError> {
        use http_body_util::BodyExt;
        let mut out = bytes::BytesMut::new();
        while let Some(frame) = self.frame().await {
            if let Ok(data) = frame?.into_data() {
                out.extend_from_slice(&data);
            }
        }
        Ok(out.freeze())
    }

    /// Ends the body with `err`.
    fn fail(
        &mut self,
        err: RequestBodyError,
    ) -> Poll<Option<Result<Frame<Bytes>, RequestBodyError>>> {
        self.inner = None;
        Poll::Ready(Some(Err(err)))
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = RequestBodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, RequestBodyError>>> {
        let this = &mut *self;
        if let Some(held) = this.held.take() {
            return Poll::Ready(Some(Ok(Frame::data(held))));
        }
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        match Pin::new(inner).poll_frame(cx) {
            Poll::Pending => {
                // The inactivity timer runs only while the client makes us wait.
                let timeout = this.timeout;
                let deadline = *this.deadline.get_or_insert_with(|| {
                    let now = Instant::now();
                    // A year stands for "no timeout" (`Duration::MAX`).
                    now.checked_add(timeout)
                        .unwrap_or(now + Duration::from_secs(365 * 86_400))
                });
                if this.timer.poll_until(cx, deadline).is_ready() {
                    return this.fail(RequestBodyError::Timeout);
                }
                Poll::Pending
            }
            Poll::Ready(None) => {
                this.inner = None;
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(e))) => this.fail(RequestBodyError::Client(e)),
            Poll::Ready(Some(Ok(frame))) => {
                this.deadline = None;
                if let Some(data) = frame.data_ref() {
                    this.seen += data.len() as u64;
                    if let Some(out) = &this.seen_out {
                        out.set(this.seen);
                    }
                    if this.seen > this.limit {
                        return this.fail(RequestBodyError::TooLarge);
                    }
                }
                if this.inner.as_ref().is_some_and(|b| b.is_end_stream()) {
                    this.inner = None;
                }
                Poll::Ready(Some(Ok(frame)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.held.is_none() && self.inner.as_ref().is_none_or(|b| b.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        match (&self.held, &self.inner) {
            (Some(b), _) => SizeHint::with_exact(b.len() as u64),
            (None, Some(i)) => i.size_hint(),
            (None, None) => SizeHint::with_exact(0),
        }
    }
}

//! A FastCGI response body: STDOUT data streamed from the connection as
//! it arrives (one record at a time, so a large response is never held
//! whole), up to END_REQUEST. The connection may carry another request
//! afterwards when `FCGI_KEEP_CONN` was asked, the request completed
//! (`FCGI_REQUEST_COMPLETE`) and nothing unread is left; the body then
//! hands it back through [`FcgiBody::take_conn`].

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::io::AsyncRead;
use tokio::time::Instant;

use super::FcgiError;
use super::output::{Output, Reader};
use super::record::ProtocolStatus;
use crate::lazy_timer::LazyTimer;

/// Where the body is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading STDOUT.
    Reading,
    /// END_REQUEST read: the body is complete.
    Ended,
    /// Failed; the connection was dropped.
    Failed,
}

/// The body of a FastCGI response; see the module docs.
pub struct FcgiBody<S> {
    /// The connection; `None` once dropped (failure, or not reusable at
    /// the end) or taken back.
    reader: Option<Reader<S>>,
    /// STDOUT read with the head, sent first.
    first: Option<Bytes>,
    state: State,
    keep_conn: bool,
    /// Whether the connection may carry another request (known at the end).
    reusable: bool,
    app_status: Option<u32>,
    read_timeout: Duration,
    /// When a silent application fails the body; `None` while data comes.
    deadline: Option<Instant>,
    timer: LazyTimer,
}

impl<S: AsyncRead + Unpin> FcgiBody<S> {
    /// The body after a response head read through `reader`; `first` is
    /// the STDOUT read past the head.
    pub(super) fn new(
        reader: Reader<S>,
        first: Bytes,
        keep_conn: bool,
        read_timeout: Duration,
    ) -> FcgiBody<S> {
        FcgiBody {
            reader: Some(reader),
            first: (!first.is_empty()).then_some(first),
            state: State::Reading,
            keep_conn,
            reusable: false,
            app_status: None,
            read_timeout,
            deadline: None,
            timer: LazyTimer::new(),
        }
    }

    /// Whether the connection may carry another request: true once the
    /// body ended with END_REQUEST (`FCGI_REQUEST_COMPLETE`), when
    /// `FCGI_KEEP_CONN` was asked and no byte past it arrived.
    pub fn reusable(&self) -> bool {
        self.reusable && self.reader.is_some()
    }

    /// Takes the connection back after the body ended, when
    /// [`FcgiBody::reusable`]; `None` otherwise (the connection is closed
    /// when the body is dropped).
    pub fn take_conn(&mut self) -> Option<S> {
        if !self.reusable {
            return None;
        }
        self.reader.take().map(|r| r.io)
    }

    /// The application's exit status from END_REQUEST, once the body ended.
    pub fn app_status(&self) -> Option<u32> {
        self.app_status
    }

    /// Acts on END_REQUEST.
    fn end(&mut self, app_status: u32, protocol_status: ProtocolStatus) -> Option<FcgiError> {
        self.app_status = Some(app_status);
        if protocol_status != ProtocolStatus::RequestComplete {
            self.fail();
            return Some(FcgiError::Refused(protocol_status));
        }
        self.state = State::Ended;
        self.reusable = self.keep_conn && self.reader.as_ref().is_some_and(|r| r.buf.is_empty());
        if !self.reusable {
            self.reader = None;
        }
        None
    }

    fn fail(&mut self) {
        self.state = State::Failed;
        self.reader = None;
    }
}

impl<S: AsyncRead + Unpin> Body for FcgiBody<S> {
    type Data = Bytes;
    type Error = FcgiError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, FcgiError>>> {
        let this = &mut *self;
        if let Some(first) = this.first.take() {
            return Poll::Ready(Some(Ok(Frame::data(first))));
        }
        if this.state != State::Reading {
            return Poll::Ready(None);
        }
        let Some(reader) = this.reader.as_mut() else {
            return Poll::Ready(None);
        };
        match reader.poll_next(cx) {
            Poll::Ready(Ok(Output::Stdout(data))) => {
                this.deadline = None;
                Poll::Ready(Some(Ok(Frame::data(data))))
            }
            Poll::Ready(Ok(Output::End {
                app_status,
                protocol_status,
            })) => {
                this.deadline = None;
                match this.end(app_status, protocol_status) {
                    Some(e) => Poll::Ready(Some(Err(e))),
                    None => Poll::Ready(None),
                }
            }
            Poll::Ready(Err(e)) => {
                this.fail();
                Poll::Ready(Some(Err(e)))
            }
            Poll::Pending => {
                let timeout = this.read_timeout;
                let deadline = *this
                    .deadline
                    .get_or_insert_with(|| Instant::now() + timeout);
                if this.timer.poll_until(cx, deadline).is_ready() {
                    this.fail();
                    return Poll::Ready(Some(Err(FcgiError::ReadTimeout)));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.first.is_none() && self.state != State::Reading
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

//! A response body read from an HTTP/2 stream to a peer: DATA as it comes
//! (flow-control credit given back as it is taken), then the peer's
//! trailers (`grpc-status`, `grpc-message` …) as a trailers frame. The
//! peer may stay silent at most `read_timeout` between frames; a gRPC call
//! also ends at its deadline (`grpc-timeout`). For a gRPC call a failure
//! after the head ends the body with trailers saying so (UNAVAILABLE, or
//! DEADLINE_EXCEEDED) rather than a reset, so the client gets a status.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use h2::RecvStream;
use http_body::{Body, Frame, SizeHint};
use tokio::time::Instant;

use super::conns::Slot;
use crate::body::BoxError;
use crate::grpc::Code;
use crate::lazy_timer::LazyTimer;

/// See the module docs.
pub struct H2Body {
    recv: RecvStream,
    read_timeout: Duration,
    /// When a silent peer fails the body; `None` while data comes.
    silent_until: Option<Instant>,
    /// The gRPC call's deadline, if it has one.
    call_deadline: Option<Instant>,
    timer: LazyTimer,
    /// The body belongs to a gRPC call.
    grpc: bool,
    /// The body has ended (trailers or an error were handed out).
    done: bool,
    /// The stream's place on its connection, given up with the body.
    _slot: Slot,
}

impl H2Body {
    /// The body of a response whose head came on `recv`.
    pub fn new(
        recv: RecvStream,
        read_timeout: Duration,
        call_deadline: Option<Instant>,
        grpc: bool,
        slot: Slot,
    ) -> H2Body {
        H2Body {
            recv,
            read_timeout,
            silent_until: None,
            call_deadline,
            timer: LazyTimer::new(),
            grpc,
            done: false,
            _slot: slot,
        }
    }

    /// Ends the body after a failure: for a gRPC call with trailers telling
    /// the client `code`, otherwise with the error.
    fn fail(&mut self, code: Code, why: String) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.done = true;
        tracing::warn!(error = %why, "HTTP/2 response from the peer ended early");
        if self.grpc {
            let trailers = crate::grpc::status_fields(code as u8, &why);
            return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
        }
        Poll::Ready(Some(Err(why.into())))
    }

    /// Ready when the peer was silent too long or the call's deadline
    /// passed (the body then fails).
    fn poll_timers(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let timeout = self.read_timeout;
        let silent = *self
            .silent_until
            .get_or_insert_with(|| Instant::now() + timeout);
        let deadline = self.call_deadline.map_or(silent, |d| d.min(silent));
        if self.timer.poll_until(cx, deadline).is_pending() {
            return Poll::Pending;
        }
        if self.call_deadline.is_some_and(|d| d <= Instant::now()) {
            return self.fail(
                Code::DeadlineExceeded,
                "the call's grpc-timeout passed".into(),
            );
        }
        if silent <= Instant::now() {
            return self.fail(
                Code::DeadlineExceeded,
                "upstream read timeout in body".into(),
            );
        }
        Poll::Pending
    }
}

impl Body for H2Body {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        if !this.recv.is_end_stream() {
            match this.recv.poll_data(cx) {
                Poll::Ready(Some(Ok(data))) => {
                    let _ = this.recv.flow_control().release_capacity(data.len());
                    this.silent_until = None;
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Poll::Ready(Some(Err(e))) => {
                    return this.fail(Code::Unavailable, format!("HTTP/2: {e}"));
                }
                Poll::Ready(None) => {}
                Poll::Pending => return this.poll_timers(cx),
            }
        }
        match this.recv.poll_trailers(cx) {
            Poll::Ready(Ok(Some(trailers))) => {
                this.done = true;
                Poll::Ready(Some(Ok(Frame::trailers(trailers))))
            }
            Poll::Ready(Ok(None)) => {
                this.done = true;
                Poll::Ready(None)
            }
            Poll::Ready(Err(e)) => this.fail(Code::Unavailable, format!("HTTP/2: {e}")),
            Poll::Pending => this.poll_timers(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done || self.recv.is_end_stream()
    }

    /// Unknown: the peer's `Content-Length`, when it sent one, travels
    /// in the head and frames the answer to the client.
    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

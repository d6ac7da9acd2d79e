//! A request body read straight from the client connection: the bytes the
//! head said follow it (`Content-Length` or chunked), decoded from the
//! [`Wire`]'s buffer as the request's handler asks for them. On its first
//! read, a request that sent `Expect: 100-continue` gets its `100
//! Continue` (RFC 9110 §10.1.1): a client that is refused before its body
//! is read never has to send it. A body dropped before its end leaves its
//! decoder with the [`Wire`] ([`BodyState::Unread`]), so that the
//! connection can read and drop the rest and go on with the next request.

use std::cell::RefCell;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite};

use super::wire::{BodyState, ResponseStarted, Wire};
use crate::body::BoxError;
use crate::h1_framing::{Decoder, Step};

const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// One request's body, read from the connection it came on.
pub(crate) struct WireBody<S> {
    wire: Rc<RefCell<Wire<S>>>,
    decoder: Decoder,
    /// `Some(bytes written)` while a `100 Continue` is owed.
    expect: Option<usize>,
    /// The body could not be decoded, or the client left mid-body: what
    /// follows on the connection cannot be told apart from it.
    failed: bool,
}

impl<S> WireBody<S> {
    /// A body decoded by `decoder` from `wire`; `expect_continue` when the
    /// client waits for `100 Continue` before sending it.
    pub fn new(wire: Rc<RefCell<Wire<S>>>, decoder: Decoder, expect_continue: bool) -> Self {
        if let Ok(mut w) = wire.try_borrow_mut() {
            w.body = BodyState::of(&decoder);
        }
        WireBody {
            wire,
            decoder,
            expect: expect_continue.then_some(0),
            failed: false,
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin + ResponseStarted> Body for WireBody<S> {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let Ok(mut wire) = this.wire.try_borrow_mut() else {
            return Poll::Ready(Some(Err("the connection is busy".into())));
        };
        if let Some(written) = this.expect.as_mut() {
            // Only while the body has not started arriving anyway.
            if wire.buf.is_empty() && !this.decoder.is_done() && !wire.io.response_started() {
                std::task::ready!(wire.poll_write_all(cx, CONTINUE, written))?;
            }
            this.expect = None;
        }
        loop {
            match this.decoder.decode(&mut wire.buf) {
                Err(e) => {
                    this.failed = true;
                    return Poll::Ready(Some(Err(e.into())));
                }
                Ok(Step::Data(b)) => {
                    wire.body = BodyState::of(&this.decoder);
                    return Poll::Ready(Some(Ok(Frame::data(b))));
                }
                Ok(Step::Done) => {
                    wire.body = BodyState::Done;
                    return Poll::Ready(None);
                }
                Ok(Step::NeedMore) => {}
            }
            match std::task::ready!(wire.poll_fill(cx)) {
                Err(e) => {
                    this.failed = true;
                    return Poll::Ready(Some(Err(e.into())));
                }
                Ok(0) => {
                    this.failed = true;
                    return Poll::Ready(Some(Err(
                        "the client closed the connection before the body was complete".into(),
                    )));
                }
                Ok(_) => {}
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.decoder.is_done()
    }

    fn size_hint(&self) -> SizeHint {
        self.decoder.size_hint()
    }
}

impl<S> Drop for WireBody<S> {
    /// A body left before its end hands its decoder to the wire, unless it
    /// failed or a `100 Continue` is still owed (the client may never send
    /// the body): then nothing is handed over and the connection closes.
    fn drop(&mut self) {
        if self.decoder.is_done() || self.failed || self.expect.is_some() {
            return;
        }
        if let (Ok(mut w), Some(parked)) = (self.wire.try_borrow_mut(), self.decoder.park()) {
            w.body = BodyState::Unread(parked);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::h1_framing::Framing;
    use http_body_util::BodyExt;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

    fn body(
        framing: Framing,
        expect: bool,
    ) -> (
        WireBody<DuplexStream>,
        DuplexStream,
        Rc<RefCell<Wire<DuplexStream>>>,
    ) {
        let (server, client) = tokio::io::duplex(1024);
        let wire = Rc::new(RefCell::new(Wire::new(server)));
        (
            WireBody::new(wire.clone(), Decoder::new(framing), expect),
            client,
            wire,
        )
    }

    #[tokio::test]
    async fn continue_is_sent_on_the_first_read_then_the_body_is_read() {
        let (b, mut client, wire) = body(Framing::Length(4), true);
        assert!(!wire.borrow().body_done());
        let reader = tokio::spawn(async move {
            let mut got = [0u8; CONTINUE.len()];
            client.read_exact(&mut got).await.unwrap();
            assert_eq!(&got, CONTINUE);
            client.write_all(b"da").await.unwrap();
            client.write_all(b"ta").await.unwrap();
            client
        });
        let data = b.collect().await.unwrap().to_bytes();
        assert_eq!(&data[..], b"data");
        assert!(wire.borrow().body_done());
        drop(reader.await.unwrap());
    }

    #[tokio::test]
    async fn no_continue_when_the_body_is_already_there() {
        let (b, mut client, wire) = body(Framing::Chunked, true);
        wire.borrow_mut()
            .buf
            .extend_from_slice(b"3\r\nabc\r\n0\r\n\r\nGET /next");
        let data = b.collect().await.unwrap().to_bytes();
        assert_eq!(&data[..], b"abc");
        // The next request stays in the buffer, and nothing was written.
        assert_eq!(&wire.borrow().buf[..], b"GET /next");
        drop(wire);
        let mut written = Vec::new();
        client.shutdown().await.unwrap();
        let _ = tokio::time::timeout(
            std::time::Duration::from_millis(100),
            client.read_to_end(&mut written),
        )
        .await;
        assert!(written.is_empty(), "{written:?}");
    }

    #[tokio::test]
    async fn a_client_gone_mid_body_is_an_error() {
        let (b, mut client, wire) = body(Framing::Length(10), false);
        client.write_all(b"abc").await.unwrap();
        drop(client);
        let err = b.collect().await.err().map(|e| e.to_string());
        assert!(err.is_some_and(|e| e.contains("closed")));
        assert!(!wire.borrow().body_done());
    }
}

//! The client's request body sent on an HTTP/2 stream to a peer, as the
//! peer's flow-control window allows: data as DATA frames, the client's
//! trailers (a gRPC client's, say) as a trailing HEADERS frame, the end as
//! END_STREAM. Polled alongside the wait for the response head, and on its
//! own task when the response begins before the body ends (a
//! bidirectional or client-streaming call).

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use h2::{Reason, SendStream};
use http_body::Body;

use crate::body::{RequestBody, RequestBodyError};

/// Why a request body could not be sent.
#[derive(Debug)]
pub enum PumpError {
    /// The client's body failed (too large, too slow, cut off).
    Client(RequestBodyError),
    /// The stream to the peer failed (reset, connection lost).
    Peer(h2::Error),
}

/// A request body on its way to a peer.
pub struct Pump {
    body: RequestBody,
    tx: SendStream<Bytes>,
    /// Data waiting for window.
    pending: Option<Bytes>,
    /// Body bytes handed to the stream so far (a progress mark: the peer's
    /// read timeout starts again whenever it moves).
    pub sent: u64,
}

impl Pump {
    /// Sends `body` on `tx`.
    pub fn new(body: RequestBody, tx: SendStream<Bytes>) -> Pump {
        Pump {
            body,
            tx,
            pending: None,
            sent: 0,
        }
    }

    /// Sends what can be sent; ready when the body has ended (and the
    /// stream with it) or failed. A failing client body resets the stream
    /// (CANCEL), so the peer does not take a cut-off body as whole.
    pub fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), PumpError>> {
        loop {
            if let Some(mut data) = self.pending.take() {
                if self.tx.capacity() == 0 {
                    self.tx.reserve_capacity(data.len());
                    match self.tx.poll_capacity(cx) {
                        Poll::Pending => {
                            self.pending = Some(data);
                            return Poll::Pending;
                        }
                        Poll::Ready(Some(Ok(_))) => {
                            self.pending = Some(data);
                            continue;
                        }
                        Poll::Ready(Some(Err(e))) => return Poll::Ready(Err(PumpError::Peer(e))),
                        Poll::Ready(None) => {
                            return Poll::Ready(Err(PumpError::Peer(Reason::CANCEL.into())));
                        }
                    }
                }
                let n = self.tx.capacity().min(data.len());
                let chunk = data.split_to(n);
                self.sent += chunk.len() as u64;
                if let Err(e) = self.tx.send_data(chunk, false) {
                    return Poll::Ready(Err(PumpError::Peer(e)));
                }
                if !data.is_empty() {
                    self.pending = Some(data);
                }
                continue;
            }
            match ready!(Pin::new(&mut self.body).poll_frame(cx)) {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) if data.is_empty() => {}
                    Ok(data) => {
                        self.tx.reserve_capacity(data.len());
                        self.pending = Some(data);
                    }
                    Err(frame) => {
                        if let Ok(trailers) = frame.into_trailers() {
                            let sent = self.tx.send_trailers(trailers);
                            return Poll::Ready(sent.map_err(PumpError::Peer));
                        }
                    }
                },
                Some(Err(e)) => {
                    self.tx.send_reset(Reason::CANCEL);
                    return Poll::Ready(Err(PumpError::Client(e)));
                }
                None => {
                    let sent = self.tx.send_data(Bytes::new(), true);
                    return Poll::Ready(sent.map_err(PumpError::Peer));
                }
            }
        }
    }

    /// Sends the rest of the body on a task of its own (the response has
    /// begun; a bidirectional call keeps both directions going).
    pub fn finish_in_background(mut self) {
        tokio::task::spawn_local(async move {
            if let Err(e) = std::future::poll_fn(|cx| self.poll(cx)).await {
                tracing::debug!(error = ?e, "request body to the HTTP/2 peer ended early");
            }
        });
    }
}

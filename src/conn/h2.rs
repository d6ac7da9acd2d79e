//! HTTP/2 connections, on the `h2` crate directly (hyper's server has no
//! way to send interim responses such as 103 Early Hints): the handshake,
//! one task per stream that runs [`proxy::handle`] and sends its response
//! with flow control, interim responses queued by the request sent as
//! informational HEADERS, and graceful shutdown (GOAWAY, then in-flight
//! streams finish). A client's RST_STREAM cancels the stream's work.

use std::future::{Future, poll_fn};
use std::pin::pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use h2::server::SendResponse;
use h2::{Reason, RecvStream, SendStream};
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response};
use http_body::Body;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::sync::CancellationToken;

use crate::body::{ClientBody, ResponseBody};
use crate::interim::Interim;
use crate::proxy::{self, ConnCtx};

/// Connection-level settings for one HTTP/2 connection.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// Time allowed for the client's preface and SETTINGS.
    pub handshake_timeout: Duration,
    /// SETTINGS_MAX_HEADER_LIST_SIZE.
    pub max_header_list: u32,
}

/// Streams one client may have open at once (hyper's default is 200).
const MAX_CONCURRENT_STREAMS: u32 = 256;
/// Receive windows, per stream and per connection (hyper's defaults).
const WINDOW: u32 = 1024 * 1024;
/// Response bytes buffered per stream beyond the peer's window.
const MAX_SEND_BUFFER: usize = 400 * 1024;

/// Serves HTTP/2 on `io` (after the preface was seen, or ALPN chose h2)
/// until the client closes, an error ends the connection, or `stop` fires
/// and the streams in flight have finished.
pub async fn serve<S>(io: S, ctx: Rc<ConnCtx>, stop: CancellationToken, settings: Settings)
where
    S: AsyncRead + AsyncWrite + Unpin + 'static,
{
    let peer = ctx.peer;
    let mut builder = h2::server::Builder::new();
    builder
        .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
        .max_header_list_size(settings.max_header_list)
        .initial_window_size(WINDOW)
        .initial_connection_window_size(WINDOW)
        .max_send_buffer_size(MAX_SEND_BUFFER);
    let handshake = builder.handshake::<_, Bytes>(io);
    let mut conn = match tokio::time::timeout(settings.handshake_timeout, handshake).await {
        Ok(Ok(conn)) => conn,
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "HTTP/2 handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!(%peer, "HTTP/2 handshake timed out");
            return;
        }
    };
    let mut draining = false;
    // One waiter on the token for the connection's life: a new one per
    // turn of the loop would lock and relink the token's waiter list every
    // time the connection is polled (measured: ~10% of an h2 request).
    let stopped = stop.cancelled();
    tokio::pin!(stopped);
    loop {
        tokio::select! {
            biased;
            next = conn.accept() => match next {
                Some(Ok((req, respond))) => {
                    tokio::task::spawn_local(stream(req, respond, ctx.clone()));
                }
                Some(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "HTTP/2 connection ended with an error");
                    return;
                }
                None => break,
            },
            _ = &mut stopped, if !draining => {
                draining = true;
                conn.graceful_shutdown();
            }
        }
    }
    if let Err(e) = poll_fn(|cx| conn.poll_closed(cx)).await {
        tracing::debug!(%peer, error = %e, "HTTP/2 connection ended with an error");
    }
}

/// One stream: the request through the proxy, then its response.
async fn stream(req: Request<RecvStream>, mut respond: SendResponse<Bytes>, ctx: Rc<ConnCtx>) {
    let (parts, recv) = req.into_parts();
    let head_only = parts.method == Method::HEAD;
    if expects_continue(&parts.headers) && !recv.is_end_stream() {
        // The body is read as the request is served; say so at once.
        let _ = respond
            .send_informational(Response::builder().status(100).body(()).unwrap_or_default());
    }
    let interim = Arc::new(Interim::new());
    let req = Request::from_parts(parts, ClientBody::H2(recv));
    // Boxed: the request's future is large, and a stream task's future is
    // copied when it is spawned and again when it completes.
    let mut handled = Box::pin(proxy::handle(req, ctx, Some(interim.clone())));
    let resp = poll_fn(|cx| {
        let polled = handled.as_mut().poll(cx);
        send_interim(&mut respond, &interim);
        match polled {
            Poll::Ready(Ok(resp)) => Poll::Ready(Some(resp)),
            Poll::Ready(Err(never)) => match never {},
            Poll::Pending => match respond.poll_reset(cx) {
                // The client cancelled the stream: drop the work.
                Poll::Ready(_) => Poll::Ready(None),
                Poll::Pending => Poll::Pending,
            },
        }
    })
    .await;
    let Some(resp) = resp else { return };
    let (mut head, body) = resp.into_parts();
    strip_connection_headers(&mut head.headers);
    if !head.headers.contains_key(header::DATE)
        && let Ok(date) =
            HeaderValue::from_str(&httpdate::fmt_http_date(std::time::SystemTime::now()))
    {
        head.headers.insert(header::DATE, date);
    }
    if head_only || body.is_end_stream() {
        // A HEAD answer keeps its Content-Length but sends no data.
        let _ = respond.send_response(Response::from_parts(head, ()), true);
        return;
    }
    if !head.headers.contains_key(header::CONTENT_LENGTH)
        && let Some(len) = body.size_hint().exact()
    {
        head.headers
            .insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    }
    match respond.send_response(Response::from_parts(head, ()), false) {
        Ok(tx) => pipe(body, tx).await,
        Err(e) => tracing::debug!(error = %e, "HTTP/2 response could not be sent"),
    }
}

/// Sends the interim responses the request queued, in order.
fn send_interim(respond: &mut SendResponse<Bytes>, interim: &Interim) {
    for (status, headers) in interim.take() {
        let mut head = Response::new(());
        *head.status_mut() = status;
        *head.headers_mut() = headers;
        strip_connection_headers(head.headers_mut());
        if let Err(e) = respond.send_informational(head) {
            tracing::debug!(error = %e, "interim response not sent");
        }
    }
}

fn expects_continue(headers: &HeaderMap) -> bool {
    headers
        .get(header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"))
}

/// Fields that describe an HTTP/1 connection, forbidden in HTTP/2
/// (RFC 9113 §8.2.2), with those `Connection` names.
fn strip_connection_headers(headers: &mut HeaderMap) {
    for name in crate::forward::connection_listed(headers) {
        headers.remove(name);
    }
    for name in crate::forward::HOP_BY_HOP {
        headers.remove(name);
    }
}

/// Sends a response body as DATA frames as the client's window allows,
/// then trailers or the end of the stream. A client reset or a failing
/// body ends the stream (the body's completion hook then reports it cut).
async fn pipe(body: ResponseBody, tx: SendStream<Bytes>) {
    let mut pipe = Pipe {
        body: pin!(body),
        tx,
        pending: None,
    };
    poll_fn(|cx| pipe.poll(cx)).await;
}

struct Pipe<'a> {
    body: std::pin::Pin<&'a mut ResponseBody>,
    tx: SendStream<Bytes>,
    /// Data waiting for window, and whether it ends the body.
    pending: Option<(Bytes, bool)>,
}

impl Pipe<'_> {
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            if let Poll::Ready(reason) = self.tx.poll_reset(cx) {
                tracing::debug!(?reason, "client reset the stream");
                return Poll::Ready(());
            }
            if let Some((data, eos)) = self.pending.take() {
                if self.tx.capacity() == 0 {
                    self.tx.reserve_capacity(data.len());
                    match self.tx.poll_capacity(cx) {
                        Poll::Pending => {
                            self.pending = Some((data, eos));
                            return Poll::Pending;
                        }
                        Poll::Ready(Some(Ok(_))) => {
                            self.pending = Some((data, eos));
                            continue;
                        }
                        Poll::Ready(Some(Err(_)) | None) => return Poll::Ready(()),
                    }
                }
                let mut data = data;
                let n = self.tx.capacity().min(data.len());
                let chunk = data.split_to(n);
                let last = data.is_empty();
                if self.tx.send_data(chunk, last && eos).is_err() {
                    return Poll::Ready(());
                }
                if !last {
                    self.pending = Some((data, eos));
                } else if eos {
                    return Poll::Ready(());
                }
                continue;
            }
            match ready!(self.body.as_mut().poll_frame(cx)) {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => {
                        let eos = self.body.is_end_stream();
                        if data.is_empty() && !eos {
                            continue;
                        }
                        if data.is_empty() {
                            let _ = self.tx.send_data(data, true);
                            return Poll::Ready(());
                        }
                        self.tx.reserve_capacity(data.len());
                        self.pending = Some((data, eos));
                    }
                    Err(frame) => {
                        if let Ok(trailers) = frame.into_trailers() {
                            let _ = self.tx.send_trailers(trailers);
                            return Poll::Ready(());
                        }
                    }
                },
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "response body failed; resetting the stream");
                    self.tx.send_reset(Reason::INTERNAL_ERROR);
                    return Poll::Ready(());
                }
                None => {
                    let _ = self.tx.send_data(Bytes::new(), true);
                    return Poll::Ready(());
                }
            }
        }
    }
}

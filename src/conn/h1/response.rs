//! Writing one HTTP/1 response: the head (status line, the handler's
//! headers, `date`, and the framing this server chooses: `content-length`
//! when the length is known, chunked on HTTP/1.1 otherwise, the end of the
//! connection on HTTP/1.0), then the body, re-framed as chosen. Head and
//! body are gathered in one buffer while the body has data ready, so a
//! small response goes out in one write.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use http::header::{self, HeaderValue};
use http::response::Parts;
use http::{StatusCode, Version};
use http_body::Body;
use tokio::io::AsyncWrite;

use crate::body::ResponseBody;
use crate::h1_wire::DateCache;

/// Body bytes up to this size are copied next to the head (one write);
/// larger frames are written from their own buffer.
const GATHER: usize = 16 * 1024;

/// What the request said that shapes its response.
#[derive(Debug, Clone, Copy)]
pub(super) struct Exchange {
    /// The request's version (the response is written in it).
    pub version: Version,
    /// A HEAD request: the response has no body.
    pub head: bool,
    /// The connection may stay open (the client's `Connection` and the
    /// request's framing allow it).
    pub keep_alive: bool,
}

/// How the body is delimited on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Encoding {
    /// No body is sent.
    None,
    /// Exactly this many bytes are still to come.
    Length(u64),
    /// Chunked.
    Chunked,
    /// Until the connection closes (HTTP/1.0 without a length).
    Close,
}

/// Writes the head of `parts` into `out` and says how the body follows
/// and whether the connection stays open after it.
pub(super) fn encode_head(
    parts: &mut Parts,
    body: &ResponseBody,
    ex: Exchange,
    dates: &mut DateCache,
    out: &mut Vec<u8>,
) -> (Encoding, bool) {
    let status = parts.status;
    let bodiless = ex.head
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    let mut keep_alive = ex.keep_alive && !crate::forward::connection_has(&parts.headers, "close");
    parts.headers.remove(header::TRANSFER_ENCODING);
    let declared = parts.headers.get(header::CONTENT_LENGTH).map(|v| {
        std::str::from_utf8(v.as_bytes())
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
    });
    let encoding = if bodiless {
        Encoding::None
    } else {
        match declared {
            Some(Some(n)) => Encoding::Length(n),
            other => {
                if other.is_some() {
                    // Not a number: ours replaces it.
                    parts.headers.remove(header::CONTENT_LENGTH);
                }
                let exact = if body.is_end_stream() {
                    Some(0)
                } else {
                    body.size_hint().exact()
                };
                match exact {
                    Some(n) => {
                        parts
                            .headers
                            .insert(header::CONTENT_LENGTH, HeaderValue::from(n));
                        Encoding::Length(n)
                    }
                    None if ex.version == Version::HTTP_11 => {
                        parts.headers.insert(
                            header::TRANSFER_ENCODING,
                            HeaderValue::from_static("chunked"),
                        );
                        Encoding::Chunked
                    }
                    None => {
                        keep_alive = false;
                        Encoding::Close
                    }
                }
            }
        }
    };
    if status == StatusCode::SWITCHING_PROTOCOLS {
        keep_alive = false;
    } else if ex.version == Version::HTTP_11 {
        if !keep_alive && !parts.headers.contains_key(header::CONNECTION) {
            parts
                .headers
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
    } else if keep_alive {
        parts
            .headers
            .insert(header::CONNECTION, HeaderValue::from_static("keep-alive"));
    }
    if !parts.headers.contains_key(header::DATE) {
        parts.headers.insert(header::DATE, dates.now());
    }

    let case = parts.extensions.get::<crate::h1_wire::HeaderCase>();
    crate::h1_wire::write_response_head(ex.version, status, &parts.headers, case, out);
    (encoding, keep_alive)
}

/// Why a response could not be written whole: the connection must close.
#[derive(Debug, thiserror::Error)]
pub(super) enum WriteError {
    /// The socket failed (or a write stalled past `send_timeout`).
    #[error("{0}")]
    Io(#[from] io::Error),
    /// The body failed, or did not match its declared length.
    #[error("response body: {0}")]
    Body(String),
}

/// Sends a head (already in `out`) and the body, framed as `encoding`.
pub(super) struct Sending<'a> {
    pub body: Pin<&'a mut ResponseBody>,
    pub encoding: Encoding,
    pub out: Vec<u8>,
    pub written: usize,
    /// A large frame written after `out`.
    pub pending: Bytes,
    pub body_done: bool,
}

impl Sending<'_> {
    /// Drives the write to the writer `io` lends; `Ready(Ok)` once
    /// everything is written and flushed. The writer is borrowed only
    /// around each write, not while the body is polled: a Lua handler
    /// making the body may read the request body from the same connection
    /// (`ngx.req.socket()`, `ngx.req.read_body()` after output).
    pub fn poll_send<W: AsyncWrite + Unpin, D: std::ops::DerefMut<Target = W>>(
        &mut self,
        cx: &mut Context<'_>,
        io: impl Fn() -> D,
    ) -> Poll<Result<(), WriteError>> {
        if self.encoding == Encoding::None {
            self.body_done = true;
        }
        loop {
            // Gather what the body has ready, up to a buffer's worth.
            if !self.body_done && self.pending.is_empty() && self.out.len() < GATHER {
                match self.body.as_mut().poll_frame(cx) {
                    Poll::Ready(Some(Ok(frame))) => {
                        if let Ok(data) = frame.into_data() {
                            self.frame(data)?;
                        }
                        continue;
                    }
                    Poll::Ready(Some(Err(e))) => {
                        return Poll::Ready(Err(WriteError::Body(e.to_string())));
                    }
                    Poll::Ready(None) => {
                        self.end()?;
                        continue;
                    }
                    Poll::Pending if self.out.len() == self.written => {
                        // Nothing to write: flush what went out and wait.
                        std::task::ready!(Pin::new(&mut *io()).poll_flush(cx))?;
                        return Poll::Pending;
                    }
                    Poll::Pending => {}
                }
            }
            if self.written < self.out.len() {
                let n = if self.pending.is_empty() {
                    std::task::ready!(
                        Pin::new(&mut *io()).poll_write(cx, &self.out[self.written..])
                    )?
                } else {
                    let slices = [
                        io::IoSlice::new(&self.out[self.written..]),
                        io::IoSlice::new(&self.pending),
                    ];
                    std::task::ready!(Pin::new(&mut *io()).poll_write_vectored(cx, &slices))?
                };
                if n == 0 {
                    return Poll::Ready(Err(io::Error::from(io::ErrorKind::WriteZero).into()));
                }
                let in_out = n.min(self.out.len() - self.written);
                self.written += in_out;
                self.pending.advance(n - in_out);
                if self.written == self.out.len() {
                    self.out.clear();
                    self.written = 0;
                }
                continue;
            }
            if !self.pending.is_empty() {
                let n = std::task::ready!(Pin::new(&mut *io()).poll_write(cx, &self.pending))?;
                if n == 0 {
                    return Poll::Ready(Err(io::Error::from(io::ErrorKind::WriteZero).into()));
                }
                self.pending.advance(n);
                continue;
            }
            if self.body_done {
                std::task::ready!(Pin::new(&mut *io()).poll_flush(cx))?;
                return Poll::Ready(Ok(()));
            }
        }
    }

    /// Frames one data frame into `out` (or `pending`).
    fn frame(&mut self, data: Bytes) -> Result<(), WriteError> {
        if data.is_empty() {
            return Ok(());
        }
        match &mut self.encoding {
            Encoding::None => return Ok(()),
            Encoding::Length(left) => {
                let n = data.len() as u64;
                if n > *left {
                    return Err(WriteError::Body("longer than its Content-Length".into()));
                }
                *left -= n;
            }
            Encoding::Chunked => {
                self.out
                    .extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
            }
            Encoding::Close => {}
        }
        // Chunks are copied (their CRLF must follow them); a large frame
        // of a length-framed body is written from its own buffer.
        let chunked = self.encoding == Encoding::Chunked;
        if chunked || data.len() <= GATHER {
            self.out.extend_from_slice(&data);
            if chunked {
                self.out.extend_from_slice(b"\r\n");
            }
        } else {
            self.pending = data;
        }
        Ok(())
    }

    /// The body ended.
    fn end(&mut self) -> Result<(), WriteError> {
        self.body_done = true;
        match self.encoding {
            Encoding::Length(0) | Encoding::None | Encoding::Close => Ok(()),
            Encoding::Length(_) => Err(WriteError::Body("shorter than its Content-Length".into())),
            Encoding::Chunked => {
                self.out.extend_from_slice(b"0\r\n\r\n");
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Response;

    fn ex(version: Version, head: bool) -> Exchange {
        Exchange {
            version,
            head,
            keep_alive: true,
        }
    }

    /// The head written for `resp`, how its body follows, and keep-alive.
    fn head_of(resp: Response<ResponseBody>, ex: Exchange) -> (String, Encoding, bool) {
        let (mut parts, body) = resp.into_parts();
        let mut out = Vec::new();
        let (enc, keep) = encode_head(&mut parts, &body, ex, &mut DateCache::default(), &mut out);
        (String::from_utf8(out).unwrap(), enc, keep)
    }

    /// The whole response on the wire.
    async fn wire(resp: Response<ResponseBody>, ex: Exchange) -> String {
        let (mut parts, body) = resp.into_parts();
        let mut body = std::pin::pin!(body);
        let mut out = Vec::new();
        let (encoding, _) = encode_head(&mut parts, &body, ex, &mut DateCache::default(), &mut out);
        let mut send = Sending {
            body: body.as_mut(),
            encoding,
            out,
            written: 0,
            pending: Bytes::new(),
            body_done: false,
        };
        let sink = std::cell::RefCell::new(Vec::<u8>::new());
        std::future::poll_fn(|cx| send.poll_send(cx, || sink.borrow_mut()))
            .await
            .unwrap();
        String::from_utf8(sink.into_inner()).unwrap()
    }

    #[tokio::test]
    async fn a_known_length_is_declared_and_the_body_follows_in_the_same_write() {
        let resp = Response::builder()
            .status(200)
            .header("x-a", "1")
            .body(ResponseBody::full("hello"))
            .unwrap();
        let text = wire(resp, ex(Version::HTTP_11, false)).await;
        assert!(
            text.starts_with("HTTP/1.1 200 OK\r\nx-a: 1\r\ncontent-length: 5\r\ndate: "),
            "{text}"
        );
        assert!(text.ends_with(" GMT\r\n\r\nhello"), "{text}");
    }

    #[test]
    fn a_declared_length_that_is_not_a_number_is_replaced() {
        let unknown = || {
            Response::builder()
                .header("content-length", "x")
                .body(ResponseBody::from_kind(crate::body::Kind::Full(Some(
                    Bytes::from("ab"),
                ))))
                .unwrap()
        };
        let (text, enc, keep) = head_of(unknown(), ex(Version::HTTP_11, false));
        assert_eq!((enc, keep), (Encoding::Length(2), true), "{text}");
        assert!(!text.contains("content-length: x"), "{text}");

        let empty = Response::builder().body(ResponseBody::empty()).unwrap();
        let (text, enc, _) = head_of(empty, ex(Version::HTTP_11, false));
        assert_eq!(enc, Encoding::Length(0));
        assert!(text.contains("content-length: 0\r\n"), "{text}");
    }

    #[test]
    fn bodiless_answers_send_no_body_and_keep_their_length() {
        for (status, head) in [(204, false), (304, false), (200, true)] {
            let resp = Response::builder()
                .status(status)
                .header("content-length", "10")
                .body(ResponseBody::empty())
                .unwrap();
            let (text, enc, keep) = head_of(resp, ex(Version::HTTP_11, head));
            assert_eq!((enc, keep), (Encoding::None, true), "{status}");
            assert!(text.contains("content-length: 10\r\n"), "{text}");
        }
    }

    #[test]
    fn connection_close_from_the_handler_closes_and_1_0_keep_alive_is_said() {
        let resp = Response::builder()
            .header("connection", "close")
            .body(ResponseBody::full("x"))
            .unwrap();
        let (_, _, keep) = head_of(resp, ex(Version::HTTP_11, false));
        assert!(!keep);
        let resp = Response::builder().body(ResponseBody::full("x")).unwrap();
        let (text, _, keep) = head_of(resp, ex(Version::HTTP_10, false));
        assert!(keep && text.starts_with("HTTP/1.0 200 OK\r\n"), "{text}");
        assert!(text.contains("connection: keep-alive\r\n"), "{text}");
        let closing = Exchange {
            keep_alive: false,
            ..ex(Version::HTTP_11, false)
        };
        let resp = Response::builder().body(ResponseBody::full("x")).unwrap();
        let (text, _, keep) = head_of(resp, closing);
        assert!(!keep && text.contains("connection: close\r\n"), "{text}");
    }

    #[test]
    fn frames_are_chunked_or_counted() {
        let mut body = std::pin::pin!(ResponseBody::empty());
        let mut send = Sending {
            body: body.as_mut(),
            encoding: Encoding::Chunked,
            out: Vec::new(),
            written: 0,
            pending: Bytes::new(),
            body_done: false,
        };
        send.frame(Bytes::from_static(b"abc")).unwrap();
        send.frame(Bytes::new()).unwrap();
        send.frame(Bytes::from(vec![b'x'; 20_000])).unwrap();
        send.end().unwrap();
        let mut expect = b"3\r\nabc\r\n4e20\r\n".to_vec();
        expect.extend(std::iter::repeat_n(b'x', 20_000));
        expect.extend_from_slice(b"\r\n0\r\n\r\n");
        assert_eq!(send.out, expect);

        send.encoding = Encoding::Length(3);
        send.out.clear();
        send.frame(Bytes::from_static(b"ab")).unwrap();
        assert!(send.end().is_err(), "short of the length");
        send.encoding = Encoding::Length(1);
        assert!(
            send.frame(Bytes::from_static(b"ab")).is_err(),
            "past the length"
        );
        // A large frame of a counted body is written from its own buffer.
        send.encoding = Encoding::Length(20_000);
        send.out.clear();
        send.frame(Bytes::from(vec![b'y'; 20_000])).unwrap();
        assert!(send.out.is_empty() && send.pending.len() == 20_000);
    }
}

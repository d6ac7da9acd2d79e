//! The body of a static-file response: nothing, bytes already in memory, or
//! a stream read from disk in 64 KiB chunks (a whole file, one byte range,
//! or a compressor's output). Knows nothing of paths or HTTP headers.

use std::fmt;
use std::future::Future;
use std::io;
use std::pin::{Pin, pin};
use std::task::{Context, Poll, ready};

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncReadExt};

/// How much is read from disk per frame: large enough to keep syscalls few,
/// small enough that a slow client never pins much memory.
const CHUNK: usize = 64 * 1024;

/// Anything the body can stream from. `Sync` so callers may box the body into
/// `http_body_util::combinators::BoxBody`.
type Reader = Box<dyn AsyncRead + Send + Sync + Unpin>;

/// The body of a response from [`serve`](super::serve).
///
/// Its `size_hint` is exact for in-memory bytes, whole files and byte
/// ranges (so a server can send `Content-Length`), and unknown for a body
/// compressed on the fly. An I/O error while reading (or a file that shrank
/// under us) ends the stream with that error.
pub struct StaticBody {
    inner: Inner,
}

enum Inner {
    /// Bytes in memory; `None` once sent (or for an empty body).
    Full(Option<Bytes>),
    /// A stream from disk. `remaining` is the exact number of bytes still
    /// owed, or `None` when the length is not known in advance.
    Stream {
        reader: Reader,
        remaining: Option<u64>,
    },
    /// The stream has ended, cleanly or with an error.
    Done,
}

impl StaticBody {
    /// A body with no bytes (HEAD, 304, error statuses).
    pub fn empty() -> Self {
        Self {
            inner: Inner::Full(None),
        }
    }

    /// A body of bytes already in memory.
    pub fn full(bytes: Bytes) -> Self {
        Self {
            inner: Inner::Full(Some(bytes)),
        }
    }

    /// A body read from `reader`, which must yield exactly `len` bytes when
    /// `len` is known; fewer is reported as `UnexpectedEof`, more is cut off.
    pub(super) fn stream(reader: Reader, len: Option<u64>) -> Self {
        Self {
            inner: Inner::Stream {
                reader,
                remaining: len,
            },
        }
    }
}

impl fmt::Debug for StaticBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.inner {
            Inner::Full(bytes) => f
                .debug_struct("StaticBody::Full")
                .field("len", &bytes.as_ref().map_or(0, Bytes::len))
                .finish(),
            Inner::Stream { remaining, .. } => f
                .debug_struct("StaticBody::Stream")
                .field("remaining", remaining)
                .finish(),
            Inner::Done => f.write_str("StaticBody::Done"),
        }
    }
}

impl Body for StaticBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = self.get_mut();
        let (reader, remaining) = match &mut this.inner {
            Inner::Done => return Poll::Ready(None),
            Inner::Full(bytes) => {
                let frame = bytes.take().filter(|b| !b.is_empty()).map(Frame::data);
                return Poll::Ready(frame.map(Ok));
            }
            Inner::Stream { reader, remaining } => (reader, remaining),
        };
        if *remaining == Some(0) {
            this.inner = Inner::Done;
            return Poll::Ready(None);
        }
        let want = remaining.map_or(CHUNK, |r| {
            usize::try_from(r).map_or(CHUNK, |r| r.min(CHUNK))
        });
        let mut buf = BytesMut::with_capacity(want);
        // `read_buf` keeps no state between polls (it is one `poll_read`),
        // so a fresh future per poll is correct, and it fills the spare
        // capacity without zeroing it first.
        let read = ready!(pin!(reader.read_buf(&mut buf)).poll(cx));
        match read {
            Ok(0) => {
                let short = remaining.is_some_and(|r| r > 0);
                this.inner = Inner::Done;
                if short {
                    let err =
                        io::Error::new(io::ErrorKind::UnexpectedEof, "file shrank while sent");
                    Poll::Ready(Some(Err(err)))
                } else {
                    Poll::Ready(None)
                }
            }
            Ok(_) => {
                if let Some(r) = remaining {
                    let owed = usize::try_from(*r).unwrap_or(usize::MAX);
                    buf.truncate(owed);
                    *r = r.saturating_sub(buf.len() as u64);
                }
                Poll::Ready(Some(Ok(Frame::data(buf.freeze()))))
            }
            Err(err) => {
                this.inner = Inner::Done;
                Poll::Ready(Some(Err(err)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Full(bytes) => bytes.as_ref().is_none_or(Bytes::is_empty),
            Inner::Stream { remaining, .. } => *remaining == Some(0),
            Inner::Done => true,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Full(bytes) => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
            Inner::Stream {
                remaining: Some(r), ..
            } => SizeHint::with_exact(*r),
            Inner::Stream {
                remaining: None, ..
            } => SizeHint::default(),
            Inner::Done => SizeHint::with_exact(0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn full_and_empty_report_exact_sizes() {
        let body = StaticBody::full(Bytes::from_static(b"hello"));
        assert_eq!(body.size_hint().exact(), Some(5));
        assert!(!body.is_end_stream());
        let bytes = body.collect().await.map(|c| c.to_bytes());
        assert_eq!(bytes.ok().as_deref(), Some(&b"hello"[..]));

        let empty = StaticBody::empty();
        assert!(empty.is_end_stream());
        assert_eq!(empty.size_hint().exact(), Some(0));
        assert!(StaticBody::full(Bytes::new()).is_end_stream());
    }

    #[tokio::test]
    async fn stream_is_chunked_and_counts_down() {
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let mut body = StaticBody::stream(Box::new(io::Cursor::new(data.clone())), Some(200_000));
        assert_eq!(body.size_hint().exact(), Some(200_000));
        let mut got = Vec::new();
        while let Some(frame) = body.frame().await {
            let chunk = frame
                .ok()
                .and_then(|f| f.into_data().ok())
                .unwrap_or_default();
            assert!(!chunk.is_empty() && chunk.len() <= CHUNK);
            got.extend_from_slice(&chunk);
            assert_eq!(body.size_hint().exact(), Some(200_000 - got.len() as u64));
        }
        assert_eq!(got, data);
        assert!(body.is_end_stream());
    }

    #[tokio::test]
    async fn stream_stops_at_its_length() {
        let body = StaticBody::stream(Box::new(io::Cursor::new(b"0123456789".to_vec())), Some(4));
        let bytes = body.collect().await.map(|c| c.to_bytes());
        assert_eq!(bytes.ok().as_deref(), Some(&b"0123"[..]));
    }

    #[tokio::test]
    async fn a_short_stream_ends_with_an_error() {
        let body = StaticBody::stream(Box::new(io::Cursor::new(b"abc".to_vec())), Some(10));
        let err = body.collect().await.err().map(|e| e.kind());
        assert_eq!(err, Some(io::ErrorKind::UnexpectedEof));
    }

    #[tokio::test]
    async fn unknown_length_stream_has_no_exact_size() {
        let body = StaticBody::stream(Box::new(io::Cursor::new(b"abc".to_vec())), None);
        assert_eq!(body.size_hint().exact(), None);
        assert!(!body.is_end_stream());
        let bytes = body.collect().await.map(|c| c.to_bytes());
        assert_eq!(bytes.ok().as_deref(), Some(&b"abc"[..]));
    }
}

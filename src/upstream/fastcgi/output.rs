//! Reading one request's output off the connection: the next STDOUT data
//! or the END_REQUEST, with STDERR records logged on the way (target
//! `moongate::upstream`, at warn, as nginx logs "FastCGI sent in stderr")
//! and never handed on. Shared by the head read and the body.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use tokio::io::AsyncRead;

use super::FcgiError;
use super::decode::{Record, RecordDecoder};
use super::record::ProtocolStatus;

/// How much to read at a time (a STDOUT record is at most 64 KB).
const READ_CHUNK: usize = 16 * 1024;
/// Longest STDERR text logged per record; the rest is cut (a script
/// dumping megabytes to stderr must not make megabyte log lines).
const MAX_LOGGED: usize = 4096;

/// What the application sent next.
#[derive(Debug)]
pub enum Output {
    /// STDOUT data (never empty).
    Stdout(Bytes),
    /// END_REQUEST.
    End {
        /// The application's exit status.
        app_status: u32,
        /// Whether the request completed.
        protocol_status: ProtocolStatus,
    },
}

/// A connection being read for one request's output.
pub struct Reader<S> {
    /// The connection.
    pub io: S,
    /// Bytes read and not decoded yet.
    pub buf: BytesMut,
    decoder: RecordDecoder,
    /// Whether any byte of a response arrived (a close before that is
    /// [`FcgiError::Closed`], after it [`FcgiError::Truncated`]).
    heard: bool,
    /// The upstream's name, for the STDERR log lines.
    upstream: Option<Arc<str>>,
}

impl<S: AsyncRead + Unpin> Reader<S> {
    /// Reads the output of `request_id` from `io`.
    pub fn new(io: S, request_id: u16, upstream: Option<Arc<str>>) -> Reader<S> {
        Reader {
            io,
            buf: BytesMut::with_capacity(READ_CHUNK),
            decoder: RecordDecoder::new(request_id),
            heard: false,
            upstream,
        }
    }

    /// The next STDOUT data or the END_REQUEST.
    pub fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Result<Output, FcgiError>> {
        loop {
            match self.decoder.decode(&mut self.buf)? {
                Some(Record::Stdout(data)) if data.is_empty() => {}
                Some(Record::Stdout(data)) => return Poll::Ready(Ok(Output::Stdout(data))),
                Some(Record::Stderr(text)) => log_stderr(self.upstream.as_deref(), &text),
                Some(Record::End {
                    app_status,
                    protocol_status,
                }) => {
                    return Poll::Ready(Ok(Output::End {
                        app_status,
                        protocol_status,
                    }));
                }
                None => {
                    self.buf.reserve(READ_CHUNK);
                    match tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, &mut self.buf) {
                        Poll::Pending => return Poll::Pending,
                        Poll::Ready(Err(e)) => return Poll::Ready(Err(e.into())),
                        Poll::Ready(Ok(0)) if self.heard => {
                            return Poll::Ready(Err(FcgiError::Truncated));
                        }
                        Poll::Ready(Ok(0)) => return Poll::Ready(Err(FcgiError::Closed)),
                        Poll::Ready(Ok(_)) => self.heard = true,
                    }
                }
            }
        }
    }

    /// The next STDOUT data or the END_REQUEST.
    pub async fn next(&mut self) -> Result<Output, FcgiError> {
        std::future::poll_fn(|cx| self.poll_next(cx)).await
    }
}

/// Logs one STDERR record.
fn log_stderr(upstream: Option<&str>, text: &[u8]) {
    let text = text.trim_ascii_end();
    if text.is_empty() {
        return;
    }
    let cut = &text[..text.len().min(MAX_LOGGED)];
    let text = String::from_utf8_lossy(cut);
    tracing::warn!(
        target: "moongate::upstream",
        upstream = upstream.unwrap_or(""),
        "FastCGI sent in stderr: \"{text}\""
    );
}

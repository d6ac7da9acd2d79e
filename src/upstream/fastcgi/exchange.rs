//! One FastCGI request over a connection: BEGIN_REQUEST (responder, with
//! `FCGI_KEEP_CONN` when the connection is to be pooled), the CGI
//! variables as PARAMS, the request body streamed as STDIN records, then
//! the CGI response head read from STDOUT. The body that follows is a
//! [`FcgiBody`] read straight from the connection.
//!
//! The request is sent whole before the response is read, as nginx does
//! (PHP-FPM reads all of STDIN before the script runs). The caller must
//! give `CONTENT_LENGTH` for a body: PHP reads no more STDIN than it says.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use http_body::Body;
use http_body_util::BodyExt;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use super::output::{Output, Reader};
use super::record::{self, ProtocolStatus, STDIN};
use super::{FcgiBody, FcgiError, Head, REQUEST_ID, cgi_head, params};

/// How one exchange behaves.
#[derive(Debug, Clone)]
pub struct Options {
    /// Ask the application to keep the connection open after the request
    /// (`FCGI_KEEP_CONN`), so it can go back to a pool.
    pub keep_conn: bool,
    /// How long the application may stay silent: before the response head
    /// is complete, and between reads of the body.
    pub read_timeout: Duration,
    /// The upstream's name, logged with the application's STDERR lines.
    pub upstream: Option<Arc<str>>,
}

/// Sends one request over `io` and reads the response head; the body
/// follows in the returned [`FcgiBody`], which owns the connection and
/// gives it back ([`FcgiBody::take_conn`]) when it may carry another
/// request. `params` are the CGI variables (names and values as bytes:
/// `String`, `Bytes`, `&str`, ...), `body` the request body, streamed as
/// STDIN. Stalled writes are the caller's to bound (e.g. by giving a
/// [`crate::write_timed::WriteTimed`] socket).
pub async fn exchange<S, B, N, V>(
    mut io: S,
    params: &[(N, V)],
    body: B,
    options: &Options,
) -> Result<(Head, FcgiBody<S>), FcgiError>
where
    S: AsyncRead + AsyncWrite + Unpin,
    B: Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    N: AsRef<[u8]>,
    V: AsRef<[u8]>,
{
    send(&mut io, params, body, options.keep_conn).await?;
    let mut reader = Reader::new(io, REQUEST_ID, options.upstream.clone());
    let (head, first) = tokio::time::timeout(options.read_timeout, read_head(&mut reader))
        .await
        .map_err(|_| FcgiError::ReadTimeout)??;
    let body = FcgiBody::new(reader, first, options.keep_conn, options.read_timeout);
    Ok((head, body))
}

/// Writes BEGIN_REQUEST, the PARAMS stream and the STDIN stream.
async fn send<S, B, N, V>(
    io: &mut S,
    params: &[(N, V)],
    body: B,
    keep_conn: bool,
) -> Result<(), FcgiError>
where
    S: AsyncWrite + Unpin,
    B: Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    N: AsRef<[u8]>,
    V: AsRef<[u8]>,
{
    let mut out = Vec::with_capacity(2048);
    record::put_begin_request(&mut out, REQUEST_ID, keep_conn);
    params::put_params(&mut out, REQUEST_ID, params)?;
    let mut body = std::pin::pin!(body);
    if !body.is_end_stream() {
        // The head goes out before the body arrives: the application
        // may start on it while a slow client still sends.
        io.write_all(&out).await?;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| FcgiError::Request(e.into()))?;
            let Ok(data) = frame.into_data() else {
                continue;
            };
            out.clear();
            record::put_stream(&mut out, STDIN, REQUEST_ID, &data);
            io.write_all(&out).await?;
        }
        out.clear();
    }
    record::put_stream_end(&mut out, STDIN, REQUEST_ID);
    io.write_all(&out).await?;
    io.flush().await?;
    Ok(())
}

/// Reads STDOUT up to the end of the CGI head; returns the head and the
/// STDOUT bytes after it (the start of the body, maybe empty).
async fn read_head<S: AsyncRead + Unpin>(
    reader: &mut Reader<S>,
) -> Result<(Head, Bytes), FcgiError> {
    let mut acc = BytesMut::new();
    loop {
        let data = match reader.next().await? {
            Output::Stdout(data) => data,
            Output::End {
                protocol_status: ProtocolStatus::RequestComplete,
                ..
            } => return Err(FcgiError::NoHead),
            Output::End {
                protocol_status, ..
            } => return Err(FcgiError::Refused(protocol_status)),
        };
        if acc.is_empty() {
            // The common case, a head within one record: no copy.
            if let Some((head, len)) = cgi_head::parse(&data)? {
                return Ok((head, data.slice(len..)));
            }
        }
        acc.extend_from_slice(&data);
        if let Some((head, len)) = cgi_head::parse(&acc)? {
            acc.advance(len);
            return Ok((head, acc.freeze()));
        }
    }
}

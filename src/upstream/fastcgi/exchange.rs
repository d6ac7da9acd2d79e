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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::fastcgi::decode::DecodeError;
    use crate::upstream::fastcgi::params::decode_pairs;
    use crate::upstream::fastcgi::record::{
        BEGIN_REQUEST, FLAG_KEEP_CONN, HEADER_LEN, Header, PARAMS, STDERR, STDOUT, put_end_request,
        put_record, put_stream,
    };
    use http_body::Frame;
    use http_body_util::{Empty, Full, StreamBody};
    use tokio::io::{AsyncReadExt, DuplexStream};

    fn options(keep_conn: bool) -> Options {
        Options {
            keep_conn,
            read_timeout: Duration::from_secs(5),
            upstream: Some("php".into()),
        }
    }

    /// What the fake application read: (type, request id, content) per record.
    type Recs = Vec<(u8, u16, Vec<u8>)>;

    /// Reads records until the empty STDIN record ends the request.
    async fn read_request(app: &mut DuplexStream) -> Recs {
        let mut recs = Vec::new();
        loop {
            let mut hb = [0u8; HEADER_LEN];
            app.read_exact(&mut hb).await.unwrap();
            let h = Header::parse(&hb);
            let mut body = vec![0u8; h.body_len()];
            app.read_exact(&mut body).await.unwrap();
            body.truncate(usize::from(h.content_length));
            let end = h.kind == STDIN && body.is_empty();
            recs.push((h.kind, h.request_id, body));
            if end {
                return recs;
            }
        }
    }

    fn stream_of(recs: &Recs, kind: u8) -> Vec<u8> {
        recs.iter()
            .filter(|r| r.0 == kind)
            .flat_map(|r| r.2.clone())
            .collect()
    }

    fn response(stdout: &[u8], status: ProtocolStatus) -> Vec<u8> {
        let mut out = Vec::new();
        put_stream(&mut out, STDOUT, REQUEST_ID, stdout);
        put_record(&mut out, STDOUT, REQUEST_ID, b"");
        put_end_request(&mut out, REQUEST_ID, 0, status);
        out
    }

    async fn collect<S: AsyncRead + Unpin>(body: &mut FcgiBody<S>) -> Result<Vec<u8>, FcgiError> {
        let mut all = Vec::new();
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame?.into_data() {
                all.extend_from_slice(&data);
            }
        }
        Ok(all)
    }

    #[tokio::test]
    async fn request_records_and_a_reused_connection() {
        let (conn, mut app) = tokio::io::duplex(1 << 20);
        let app_task = tokio::spawn(async move {
            let mut seen = Vec::new();
            for i in 0..2 {
                let recs = read_request(&mut app).await;
                let mut out = Vec::new();
                put_stream(&mut out, STDERR, REQUEST_ID, b"warning from the app\n");
                out.extend(response(
                    format!("Status: 201 Created\r\nX-N: {i}\r\n\r\nbody {i}").as_bytes(),
                    ProtocolStatus::RequestComplete,
                ));
                app.write_all(&out).await.unwrap();
                seen.push(recs);
            }
            seen
        });
        let params = [("REQUEST_METHOD", "POST"), ("CONTENT_LENGTH", "11")];
        let chunks: Vec<Result<Frame<Bytes>, std::io::Error>> = vec![
            Ok(Frame::data(Bytes::from_static(b"hello "))),
            Ok(Frame::data(Bytes::from_static(b"world"))),
        ];
        let body = StreamBody::new(futures_util::stream::iter(chunks));
        let (head, mut body) = exchange(conn, &params, body, &options(true)).await.unwrap();
        assert_eq!(head.status, 201);
        assert_eq!(head.headers["x-n"], "0");
        assert_eq!(collect(&mut body).await.unwrap(), b"body 0");
        assert!(body.is_end_stream());
        assert!(body.reusable());
        assert_eq!(body.app_status(), Some(0));
        let conn = body.take_conn().unwrap();
        let (head, mut body) = exchange(conn, &params, Empty::<Bytes>::new(), &options(true))
            .await
            .unwrap();
        assert_eq!(head.headers["x-n"], "1");
        assert_eq!(collect(&mut body).await.unwrap(), b"body 1");

        let seen = app_task.await.unwrap();
        let first = &seen[0];
        assert_eq!((first[0].0, first[0].1), (BEGIN_REQUEST, REQUEST_ID));
        assert_eq!(first[0].2, [0, 1, FLAG_KEEP_CONN, 0, 0, 0, 0, 0]);
        let pairs = decode_pairs(&stream_of(first, PARAMS)).unwrap();
        assert_eq!(pairs[0], (b"REQUEST_METHOD".to_vec(), b"POST".to_vec()));
        assert_eq!(stream_of(first, STDIN), b"hello world");
        assert_eq!(stream_of(&seen[1], STDIN), b"");
    }

    /// Runs one exchange against an application that answers `reply`
    /// (then closes); returns the head's status or the error, and the
    /// body's outcome.
    async fn against(
        reply: Vec<u8>,
        keep_conn: bool,
    ) -> Result<(u16, Result<Vec<u8>, FcgiError>, bool), FcgiError> {
        let (conn, mut app) = tokio::io::duplex(1 << 20);
        tokio::spawn(async move {
            read_request(&mut app).await;
            app.write_all(&reply).await.unwrap();
        });
        let (head, mut body) = exchange(
            conn,
            &[("A", "b")],
            Full::new(Bytes::from_static(b"x")),
            &options(keep_conn),
        )
        .await?;
        let data = collect(&mut body).await;
        Ok((head.status.as_u16(), data, body.reusable()))
    }

    #[tokio::test]
    async fn failures_are_distinct_errors() {
        let err = against(Vec::new(), true).await.err().unwrap();
        assert!(matches!(err, FcgiError::Closed), "{err}");
        assert!(err.before_response());

        let mut half = Vec::new();
        put_stream(&mut half, STDOUT, REQUEST_ID, b"Status: 200\r\n");
        let err = against(half, true).await.err().unwrap();
        assert!(matches!(err, FcgiError::Truncated), "{err}");

        let mut cut = Vec::new();
        put_stream(&mut cut, STDOUT, REQUEST_ID, b"Status: 200\r\n\r\npart");
        let (status, data, _) = against(cut, true).await.unwrap();
        assert_eq!(status, 200);
        assert!(matches!(data, Err(FcgiError::Truncated)));

        let mut refused = Vec::new();
        put_end_request(&mut refused, REQUEST_ID, 0, ProtocolStatus::Overloaded);
        let err = against(refused, true).await.err().unwrap();
        assert!(
            matches!(err, FcgiError::Refused(ProtocolStatus::Overloaded)),
            "{err}"
        );

        let late = response(b"\r\nstarted", ProtocolStatus::CantMpxConn);
        let (_, data, reusable) = against(late, true).await.unwrap();
        assert!(matches!(
            data,
            Err(FcgiError::Refused(ProtocolStatus::CantMpxConn))
        ));
        assert!(!reusable);

        let err = against(response(b"", ProtocolStatus::RequestComplete), true)
            .await
            .err()
            .unwrap();
        assert!(matches!(err, FcgiError::NoHead), "{err}");

        let err = against(
            response(b"Status: abc\r\n\r\n", ProtocolStatus::RequestComplete),
            true,
        )
        .await
        .err()
        .unwrap();
        assert!(matches!(err, FcgiError::Head(_)), "{err}");

        let mut foreign = Vec::new();
        put_record(&mut foreign, STDOUT, 7, b"x");
        let err = against(foreign, true).await.err().unwrap();
        assert!(
            matches!(err, FcgiError::Record(DecodeError::RequestId(7))),
            "{err}"
        );
    }

    #[tokio::test]
    async fn reuse_needs_keep_conn_and_a_clean_end() {
        let ok = response(b"\r\nfine", ProtocolStatus::RequestComplete);
        let (_, data, reusable) = against(ok.clone(), true).await.unwrap();
        assert_eq!(data.unwrap(), b"fine");
        assert!(reusable);
        let (_, _, reusable) = against(ok.clone(), false).await.unwrap();
        assert!(!reusable, "no FCGI_KEEP_CONN");
        let mut extra = ok;
        put_record(&mut extra, STDOUT, REQUEST_ID, b"after the end");
        let (_, data, reusable) = against(extra, true).await.unwrap();
        assert_eq!(data.unwrap(), b"fine");
        assert!(!reusable, "bytes after END_REQUEST");
    }

    #[tokio::test(start_paused = true)]
    async fn silent_applications_time_out() {
        let (conn, mut app) = tokio::io::duplex(1 << 16);
        let silent = tokio::spawn(async move {
            read_request(&mut app).await;
            std::future::pending::<()>().await;
        });
        let err = exchange(conn, &[("A", "b")], Empty::<Bytes>::new(), &options(true))
            .await
            .err()
            .unwrap();
        assert!(matches!(err, FcgiError::ReadTimeout), "{err}");
        silent.abort();

        let (conn, mut app) = tokio::io::duplex(1 << 16);
        let stalls = tokio::spawn(async move {
            read_request(&mut app).await;
            let mut out = Vec::new();
            put_stream(&mut out, STDOUT, REQUEST_ID, b"\r\nsome");
            app.write_all(&out).await.unwrap();
            std::future::pending::<()>().await;
        });
        let (_, mut body) = exchange(conn, &[("A", "b")], Empty::<Bytes>::new(), &options(true))
            .await
            .unwrap();
        let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(first, "some");
        let err = body.frame().await.unwrap().err().unwrap();
        assert!(matches!(err, FcgiError::ReadTimeout), "{err}");
        assert!(body.take_conn().is_none());
        stalls.abort();
    }
}

//! One probe of a peer, in the upstream's protocol: a connection (TLS
//! included when the upstream has `tls`), then, when there is a request,
//! `GET path` as an HTTP/1.1 request (`Connection: close`, the status line
//! read), a uwsgi packet asking the same (the answer is an HTTP/1.x
//! response), a FastCGI request for the script `root` + path (the CGI
//! response's `Status:`), or for `h2` and `grpc` an HTTP/2 GET with prior
//! knowledge (ALPN `h2` over TLS). The status must match the request's
//! `expect`. Used by managed workers' readiness (`workers::ready`) and by
//! active health checks ([`super::health`]); the caller bounds the whole
//! probe with its own timeout.

use std::future::poll_fn;
use std::path::Path;
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

use http::header::{HeaderName, HeaderValue};
use http::uri::Scheme;
use http::{Request, Uri};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::connect::connect_socket;
use super::tls::PeerTls;
use crate::config::{HealthRequest, PeerAddr, Protocol};

/// The status line must arrive within this many bytes.
const MAX_HEAD: usize = 1024;

/// After the status, the rest of the answer is read (so the app never
/// writes into a closed socket and logs a broken pipe) up to this many
/// bytes or [`REST_TIMEOUT`], whichever comes first.
const MAX_REST: usize = 64 * 1024;

/// See [`MAX_REST`]: for an app that keeps the connection open anyway.
const REST_TIMEOUT: Duration = Duration::from_millis(250);

/// The Host of a probe without `host`.
const DEFAULT_HOST: &str = "localhost";

/// Whom a probe goes to and how.
#[derive(Clone, Copy)]
pub struct Target<'a> {
    /// The peer.
    pub addr: &'a PeerAddr,
    /// The protocol it speaks.
    pub protocol: Protocol,
    /// FastCGI: the scripts' directory (SCRIPT_FILENAME = root + path).
    pub root: Option<&'a Path>,
    /// TLS to the peer, when the upstream has it.
    pub tls: Option<&'a PeerTls>,
    /// Time allowed to connect (and shake hands).
    pub connect_timeout: Duration,
    /// The `User-Agent` sent (says whether readiness or health asks).
    pub agent: &'a str,
}

/// One probe: `Ok` when the peer accepts a connection and, with a
/// `request`, answers it with a status `expect` lists. The error says
/// what failed, for the log and `/status`.
pub async fn probe(target: &Target<'_>, request: Option<&HealthRequest>) -> Result<(), String> {
    let stream = connect_socket(target.addr, target.connect_timeout, target.tls)
        .await
        .map_err(|e| e.to_string())?;
    let Some(req) = request else {
        return Ok(());
    };
    let path = &req.path;
    let status = match target.protocol {
        Protocol::Fastcgi => ask_fastcgi(stream, req, target).await,
        Protocol::H2 | Protocol::Grpc => ask_h2(stream, req, target).await,
        Protocol::Http1 | Protocol::Uwsgi => ask_h1(stream, req, target).await,
    }
    .map_err(|e| format!("GET {path}: {e}"))?;
    if req.accepts(status) {
        Ok(())
    } else {
        Err(format!("GET {path} answered {status}"))
    }
}

/// The Host a probe asks for.
fn host(req: &HealthRequest) -> &str {
    req.host.as_deref().unwrap_or(DEFAULT_HOST)
}

/// The CGI variables of a probe over uwsgi: what a WSGI app needs to route
/// `GET path`, plus the headers as `HTTP_*`.
fn cgi_vars(req: &HealthRequest, agent: &str) -> Vec<(String, String)> {
    let (path_info, query) = req.path.split_once('?').unwrap_or((&req.path, ""));
    let host = host(req);
    let server_name = host.rsplit_once(':').map_or(host, |(name, _)| name);
    let mut vars: Vec<(String, String)> = [
        ("REQUEST_METHOD", "GET"),
        ("REQUEST_URI", req.path.as_str()),
        ("PATH_INFO", path_info),
        ("QUERY_STRING", query),
        ("SERVER_PROTOCOL", "HTTP/1.1"),
        ("REQUEST_SCHEME", "http"),
        ("SERVER_NAME", server_name),
        ("SERVER_PORT", "80"),
        ("REMOTE_ADDR", "127.0.0.1"),
        ("HTTP_HOST", host),
        ("HTTP_USER_AGENT", agent),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    add_headers(&mut vars, req);
    vars
}

/// Adds the request's headers as `HTTP_*` variables (replacing one of the
/// same name, as `User-Agent` can be).
fn add_headers(vars: &mut Vec<(String, String)>, req: &HealthRequest) {
    for (name, value) in &req.headers {
        let var = format!("HTTP_{}", name.to_ascii_uppercase().replace('-', "_"));
        vars.retain(|(k, _)| *k != var);
        vars.push((var, value.clone()));
    }
}

/// HTTP/1.1 (or a uwsgi packet): the status of the answer's status line.
async fn ask_h1<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    req: &HealthRequest,
    target: &Target<'_>,
) -> Result<u16, String> {
    let request = if target.protocol == Protocol::Uwsgi {
        super::uwsgi::probe_packet(&cgi_vars(req, target.agent))
    } else {
        let mut head = format!(
            "GET {} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n",
            req.path,
            host(req)
        );
        if !req.headers.iter().any(|(n, _)| n == "user-agent") {
            head.push_str(&format!("User-Agent: {}\r\n", target.agent));
        }
        for (name, value) in &req.headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        head.into_bytes()
    };
    stream
        .write_all(&request)
        .await
        .map_err(|e| e.to_string())?;
    let mut head = Vec::with_capacity(128);
    let mut buf = [0u8; 256];
    while !head.windows(2).any(|w| w == b"\r\n") && head.len() < MAX_HEAD {
        let n = stream.read(&mut buf).await.map_err(|e| e.to_string())?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let code = status_code(&head).ok_or("got no HTTP status line")?;
    let rest = async {
        let mut total = head.len();
        while total < MAX_REST {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => total += n,
            }
        }
    };
    let _ = tokio::time::timeout(REST_TIMEOUT, rest).await;
    Ok(code)
}

/// A FastCGI `GET path` (the variables of
/// [`super::call::fastcgi::probe_params`], with the request's Host and
/// headers): the CGI response's status. The body is read (briefly) so the
/// application never writes into a closed socket.
async fn ask_fastcgi<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    req: &HealthRequest,
    target: &Target<'_>,
) -> Result<u16, String> {
    use super::fastcgi::{Options, exchange};
    use http_body_util::{BodyExt, Empty};
    let mut params: Vec<(String, String)> =
        super::call::fastcgi::probe_params(&req.path, target.root)
            .into_iter()
            .map(|(k, v)| {
                let k = String::from_utf8_lossy(&k).into_owned();
                let host = host(req);
                let v = match k.as_str() {
                    "HTTP_HOST" => host.to_owned(),
                    "SERVER_NAME" => host.rsplit_once(':').map_or(host, |(n, _)| n).to_owned(),
                    "HTTP_USER_AGENT" => target.agent.to_owned(),
                    _ => String::from_utf8_lossy(&v).into_owned(),
                };
                (k, v)
            })
            .collect();
    add_headers(&mut params, req);
    let options = Options {
        keep_conn: false,
        // The caller's timeout bounds the probe; this only must not be first.
        read_timeout: Duration::from_secs(3600),
        upstream: None,
    };
    let (head, mut body) = exchange(stream, &params, Empty::<bytes::Bytes>::new(), &options)
        .await
        .map_err(|e| e.to_string())?;
    let rest = async {
        let mut total = 0;
        while let Some(Ok(frame)) = body.frame().await {
            total += frame.data_ref().map_or(0, |d| d.len());
            if total >= MAX_REST {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(REST_TIMEOUT, rest).await;
    Ok(head.status.as_u16())
}

/// HTTP/2 with prior knowledge (or ALPN h2 over TLS): `GET path` on a
/// connection of its own, the status of the answer's head.
async fn ask_h2<S: AsyncRead + AsyncWrite + Unpin>(
    io: S,
    req: &HealthRequest,
    target: &Target<'_>,
) -> Result<u16, String> {
    let scheme = if target.tls.is_some() {
        Scheme::HTTPS
    } else {
        Scheme::HTTP
    };
    let uri = Uri::builder()
        .scheme(scheme)
        .authority(host(req))
        .path_and_query(req.path.as_str())
        .build()
        .map_err(|e| e.to_string())?;
    let mut request = Request::new(());
    *request.uri_mut() = uri;
    let headers = request.headers_mut();
    if let Ok(agent) = HeaderValue::from_str(target.agent) {
        headers.insert(http::header::USER_AGENT, agent);
    }
    for (name, value) in &req.headers {
        // Checked by the config loader.
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            headers.insert(n, v);
        }
    }
    let (send, mut conn) = h2::client::handshake(io).await.map_err(|e| e.to_string())?;
    let ask = async move {
        let mut send = send.ready().await?;
        let (response, _) = send.send_request(request, true)?;
        let resp = response.await?;
        Ok::<u16, h2::Error>(resp.status().as_u16())
    };
    tokio::pin!(ask);
    // The connection is driven here until the answer's head arrives.
    poll_fn(|cx| {
        if let Poll::Ready(r) = ask.as_mut().poll(cx) {
            return Poll::Ready(r);
        }
        match Pin::new(&mut conn).poll(cx) {
            Poll::Ready(Ok(())) => Poll::Ready(Err(h2::Error::from(h2::Reason::NO_ERROR))),
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    })
    .await
    .map_err(|e| e.to_string())
}

/// The status code of an HTTP/1.x status line at the start of `head`.
fn status_code(head: &[u8]) -> Option<u16> {
    let end = head.windows(2).position(|w| w == b"\r\n")?;
    let line = std::str::from_utf8(&head[..end]).ok()?;
    let mut parts = line.split(' ');
    if !parts.next()?.starts_with("HTTP/1.") {
        return None;
    }
    let code = parts.next()?;
    if code.len() != 3 {
        return None;
    }
    code.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::StatusMatch;

    #[test]
    fn status_lines() {
        assert_eq!(status_code(b"HTTP/1.1 200 OK\r\n"), Some(200));
        assert_eq!(
            status_code(b"HTTP/1.0 503 Service Unavailable\r\nx"),
            Some(503)
        );
        assert_eq!(status_code(b"HTTP/1.1 204\r\n"), Some(204));
        assert_eq!(status_code(b"HTTP/1.1 200 OK"), None);
        assert_eq!(status_code(b"SSH-2.0\r\n"), None);
        assert_eq!(status_code(b"HTTP/1.1 2000 OK\r\n"), None);
    }

    /// A listener answering every connection with `answer`, handing the
    /// request it read to `seen`.
    async fn server(
        answer: &'static [u8],
    ) -> (
        std::net::SocketAddr,
        tokio::sync::mpsc::UnboundedReceiver<String>,
    ) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let mut buf = [0u8; 2048];
                let n = s.read(&mut buf).await.unwrap_or(0);
                let _ = tx.send(String::from_utf8_lossy(&buf[..n]).into_owned());
                let _ = s.write_all(answer).await;
            }
        });
        (addr, rx)
    }

    fn target(addr: &PeerAddr, protocol: Protocol) -> Target<'_> {
        Target {
            addr,
            protocol,
            root: None,
            tls: None,
            connect_timeout: Duration::from_secs(1),
            agent: "moongate-health",
        }
    }

    #[tokio::test]
    async fn expect_decides_and_host_and_headers_are_sent() {
        let (ok, mut seen) = server(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n").await;
        let ok = PeerAddr::Tcp(ok);
        let mut req = HealthRequest::get("/healthz");
        req.host = Some("app.test".into());
        req.headers = vec![("x-check".into(), "1".into())];
        assert_eq!(
            probe(&target(&ok, Protocol::Http1), Some(&req)).await,
            Ok(())
        );
        let head = seen.recv().await.unwrap();
        assert!(head.starts_with("GET /healthz HTTP/1.1\r\n"), "{head}");
        assert!(head.contains("Host: app.test\r\n"), "{head}");
        assert!(head.contains("x-check: 1\r\n"), "{head}");
        assert!(head.contains("User-Agent: moongate-health\r\n"), "{head}");

        let (moved, _seen) = server(b"HTTP/1.1 301 Moved\r\n\r\n").await;
        let moved = PeerAddr::Tcp(moved);
        assert_eq!(
            probe(&target(&moved, Protocol::Http1), Some(&req)).await,
            Err("GET /healthz answered 301".into())
        );
        req.expect = vec![StatusMatch::Class(2), StatusMatch::Code(301)];
        assert_eq!(
            probe(&target(&moved, Protocol::Http1), Some(&req)).await,
            Ok(())
        );
        // Without a request, accepting is enough.
        assert_eq!(probe(&target(&moved, Protocol::Http1), None).await, Ok(()));
    }

    #[tokio::test]
    async fn uwsgi_carries_host_and_headers_as_variables() {
        let (addr, mut seen) = server(b"HTTP/1.1 204 No Content\r\n\r\n").await;
        let addr = PeerAddr::Tcp(addr);
        let mut req = HealthRequest::get("/h?x=1");
        req.host = Some("app.test:8080".into());
        req.headers = vec![("x-check".into(), "yes".into())];
        assert_eq!(
            probe(&target(&addr, Protocol::Uwsgi), Some(&req)).await,
            Ok(())
        );
        let packet = seen.recv().await.unwrap();
        for needle in [
            "PATH_INFO\u{2}\0/h",
            "HTTP_HOST\r\0app.test:8080",
            "SERVER_NAME\u{8}\0app.test",
            "HTTP_X_CHECK\u{3}\0yes",
        ] {
            assert!(packet.contains(needle), "{needle:?} in {packet:?}");
        }
    }

    #[tokio::test]
    async fn nobody_listening_names_the_address() {
        let dir = tempfile::tempdir().unwrap();
        let addr = PeerAddr::Unix(dir.path().join("none.sock"));
        let err = probe(
            &target(&addr, Protocol::Http1),
            Some(&HealthRequest::get("/")),
        )
        .await
        .unwrap_err();
        assert!(err.contains("none.sock"), "{err}");
    }
}

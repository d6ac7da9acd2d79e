//! One request to a FastCGI upstream (`protocol = "fastcgi"`, nginx's
//! `fastcgi_pass` to PHP-FPM), on top of the protocol engine
//! ([`crate::upstream::fastcgi`]):
//!
//! - [`prepare`]: the request's CGI variables, built once before the first
//!   try: those of [`crate::upstream::cgi`] (as for uwsgi, but no
//!   `PATH_INFO`, as nginx's `fastcgi_params`), plus `SCRIPT_NAME`,
//!   `DOCUMENT_URI`, `GATEWAY_INTERFACE`, `SERVER_SOFTWARE`,
//!   `REDIRECT_STATUS` and, with `root`, `SCRIPT_FILENAME` (root + path)
//!   and `DOCUMENT_ROOT`; never `HTTP_PROXY` (httpoxy); `params` override
//!   any of them. A body of unknown
//!   length is read whole first (PHP reads no more STDIN than
//!   `CONTENT_LENGTH` says).
//! - [`exchange`]: one try: a pooled connection of the peer (asked to stay
//!   open with `FCGI_KEEP_CONN` when the upstream keeps any) or a new one;
//!   a pooled connection the application had closed is replaced once by a
//!   new one when the request has no body, as for HTTP/1.
//! - [`FastcgiBody`]: the response body, handing the connection back to
//!   the worker's pool at END_REQUEST when it may carry another request.
//!
//! The retry rules across peers are those of the parent module.

use std::ops::Range;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::request::Parts;
use http_body::{Body, Frame, SizeHint};
use percent_encoding::percent_decode_str;

use super::{Failure, Limits, request_error};
use crate::body::{RequestBody, RequestBodyError};
use crate::config::PeerAddr;
use crate::error::ProxyError;
use crate::upstream::cgi::{CgiFacts, body_length, cgi_vars};
use crate::upstream::connect::connect_socket;
use crate::upstream::fastcgi::{FcgiBody, FcgiError, Head, Options};
use crate::upstream::peer::ActiveGuard;
use crate::upstream::pool::{FcgiSocket, IdlePool};
use crate::upstream::{Back, Upstream};
use crate::write_timed::WriteTimed;

/// The CGI variables of one request, built once and sent on every try:
/// names and values side by side in one buffer.
pub(super) struct Params {
    buf: Vec<u8>,
    pairs: Vec<(Range<usize>, Range<usize>)>,
}

impl Params {
    fn new() -> Params {
        Params {
            buf: Vec::with_capacity(2048),
            pairs: Vec::with_capacity(40),
        }
    }

    fn push(&mut self, name: &[u8], value: &[u8]) {
        let n = self.buf.len();
        self.buf.extend_from_slice(name);
        let v = self.buf.len();
        self.buf.extend_from_slice(value);
        self.pairs.push((n..v, v..self.buf.len()));
    }

    /// The pairs, as the engine takes them.
    fn slices(&self) -> Vec<(&[u8], &[u8])> {
        let at = |r: &Range<usize>| self.buf.get(r.clone()).unwrap_or_default();
        self.pairs.iter().map(|(n, v)| (at(n), at(v))).collect()
    }

    /// The value of `name`, if sent.
    #[cfg(test)]
    fn get(&self, name: &str) -> Option<&[u8]> {
        self.slices()
            .into_iter()
            .find(|(n, _)| *n == name.as_bytes())
            .map(|(_, v)| v)
    }
}

/// The CGI variables of the request `parts` (as forwarded) for upstream
/// `up`; see the module docs. A body without a length is read whole into
/// `body`. A path that climbs out of `root` (a `..` segment or a NUL once
/// decoded) is a 400: it would name a file outside the scripts' directory.
pub(super) async fn prepare(
    up: &Upstream,
    cgi: &CgiFacts<'_>,
    parts: &Parts,
    body: &mut RequestBody,
) -> Result<Params, ProxyError> {
    let length = body_length(parts, body).await.map_err(request_error)?;
    let path: Vec<u8> = percent_decode_str(parts.uri.path()).collect();
    if up.def.root.is_some()
        && (path.contains(&0) || path.split(|&b| b == b'/').any(|seg| seg == b".."))
    {
        return Err(ProxyError::BadRequest(
            "the request path leaves the FastCGI root",
        ));
    }
    let mut out = Params::new();
    let overridden = |name: &str| up.params.iter().any(|(p, _)| p == name);
    let put = |out: &mut Params, name: &str, value: &[u8]| {
        if !overridden(name) {
            out.push(name.as_bytes(), value);
        }
    };
    if let Some(root) = &up.def.root {
        let root = root_bytes(root);
        let mut file = Vec::with_capacity(root.len() + path.len());
        file.extend_from_slice(root);
        file.extend_from_slice(&path);
        put(&mut out, "SCRIPT_FILENAME", &file);
        put(
            &mut out,
            "DOCUMENT_ROOT",
            if root.is_empty() { b"/" } else { root },
        );
    }
    put(&mut out, "SCRIPT_NAME", &path);
    put(&mut out, "DOCUMENT_URI", &path);
    put(&mut out, "GATEWAY_INTERFACE", b"CGI/1.1");
    put(&mut out, "SERVER_SOFTWARE", b"moongate");
    // nginx's fastcgi.conf: PHP built with --enable-force-cgi-redirect
    // runs nothing without it.
    put(&mut out, "REDIRECT_STATUS", b"200");
    // nginx's fastcgi_params send no PATH_INFO (PHP would take the whole
    // path for it); one in `params` is sent. A client's `Proxy:` header is
    // never sent as HTTP_PROXY, which PHP libraries read as the proxy to
    // use for their own requests ("httpoxy", CVE-2016-5385).
    let (keep_path_info, keep_proxy) = (overridden("PATH_INFO"), overridden("HTTP_PROXY"));
    cgi_vars(parts, cgi, length, &up.params, &mut |name, value| {
        let dropped =
            (name == b"PATH_INFO" && !keep_path_info) || (name == b"HTTP_PROXY" && !keep_proxy);
        if !dropped {
            out.push(name, value);
        }
    });
    Ok(out)
}

/// `root` as bytes, without a trailing `/` (so root + "/a.php" is one path).
fn root_bytes(root: &Path) -> &[u8] {
    use std::os::unix::ffi::OsStrExt;
    let bytes = root.as_os_str().as_bytes();
    let mut end = bytes.len();
    while end > 0 && bytes.get(end - 1) == Some(&b'/') {
        end -= 1;
    }
    bytes.get(..end).unwrap_or_default()
}

/// The variables of a plain `GET path` from moongate itself (a managed
/// worker's readiness probe): the script `root` + path when the upstream
/// has a `root` (PHP-FPM's `ping.path` needs none).
pub fn probe_params(path: &str, root: Option<&Path>) -> Vec<(Vec<u8>, Vec<u8>)> {
    let (script, query) = path.split_once('?').unwrap_or((path, ""));
    let mut vars: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    let mut put = |k: &str, v: &[u8]| vars.push((k.as_bytes().to_vec(), v.to_vec()));
    if let Some(root) = root {
        let root = root_bytes(root);
        put("SCRIPT_FILENAME", &[root, script.as_bytes()].concat());
        put("DOCUMENT_ROOT", root);
    }
    for (k, v) in [
        ("SCRIPT_NAME", script),
        ("DOCUMENT_URI", script),
        ("REQUEST_URI", path),
        ("QUERY_STRING", query),
        ("REQUEST_METHOD", "GET"),
        ("CONTENT_TYPE", ""),
        ("CONTENT_LENGTH", ""),
        ("SERVER_PROTOCOL", "HTTP/1.1"),
        ("GATEWAY_INTERFACE", "CGI/1.1"),
        ("SERVER_SOFTWARE", "moongate"),
        ("REDIRECT_STATUS", "200"),
        ("REQUEST_SCHEME", "http"),
        ("SERVER_NAME", "localhost"),
        ("SERVER_PORT", "80"),
        ("REMOTE_ADDR", "127.0.0.1"),
        ("HTTP_HOST", "localhost"),
        ("HTTP_USER_AGENT", "moongate-ready"),
    ] {
        put(k, v.as_bytes());
    }
    vars
}

/// A response head and its body, still on the connection.
pub(super) type Answered = (Head, FcgiBody<FcgiSocket>);

/// One try on one peer: on a pooled connection if one is alive (replaced
/// by a new one once when the application had closed it and the request
/// has no body), else on a new connection. Also says how long connecting
/// took (zero on a pooled connection).
#[allow(clippy::too_many_arguments)]
pub(super) async fn exchange(
    peer_id: u64,
    addr: &PeerAddr,
    params: &Params,
    body: &mut RequestBody,
    replayable: bool,
    (up, name): (&Upstream, &str),
    limits: &Limits,
    pool: &IdlePool,
) -> Result<(Answered, Duration), Failure> {
    let pairs = params.slices();
    let options = Options {
        keep_conn: up.def.keepalive > 0,
        read_timeout: limits.read,
        upstream: Some(Arc::from(name)),
    };
    if let Some(mut socket) = pool.checkout_fastcgi(peer_id, up.def.keepalive_timeout) {
        socket.set_timeout(limits.send);
        match crate::upstream::fastcgi::exchange(socket, &pairs, &mut *body, &options).await {
            Ok(answered) => return Ok((answered, Duration::ZERO)),
            Err(FcgiError::Closed | FcgiError::Io(_)) if replayable => {
                tracing::debug!(peer = %addr, "pooled FastCGI connection was closed by the application; reconnecting");
            }
            Err(e) => return Err(failure(e, addr)),
        }
    }
    let connecting = Instant::now();
    let socket = connect_socket(addr, limits.connect, None)
        .await
        .map_err(Failure::NotSent)?;
    let connect_time = connecting.elapsed();
    let socket = WriteTimed::new(pool.counted(peer_id, socket), limits.send);
    crate::upstream::fastcgi::exchange(socket, &pairs, &mut *body, &options)
        .await
        .map(|answered| (answered, connect_time))
        .map_err(|e| failure(e, addr))
}

/// How a try failed: before any response (so another peer may be tried
/// under the parent module's rules) or for good.
fn failure(e: FcgiError, addr: &PeerAddr) -> Failure {
    let err = match e {
        FcgiError::Request(e) => {
            return Failure::Final(match e.downcast::<RequestBodyError>() {
                Ok(e) => request_error(*e),
                Err(_) => ProxyError::BadRequest("the client's request body was cut off"),
            });
        }
        FcgiError::ReadTimeout => ProxyError::ReadTimeout(addr.to_string()),
        source => ProxyError::Fastcgi {
            addr: addr.to_string(),
            source,
        },
    };
    if err.retryable() {
        Failure::NoResponse(err)
    } else {
        Failure::Final(err)
    }
}

/// A FastCGI response body on its way to the client: STDOUT as it comes;
/// at END_REQUEST the connection goes back to the pool (when the engine
/// says it may carry another request) and the peer's in-flight count
/// drops. Between reads the application may stay silent `read_timeout`.
pub struct FastcgiBody {
    body: FcgiBody<FcgiSocket>,
    /// Where the connection goes back to; `None` when not pooled.
    back: Option<Back>,
    active: Option<ActiveGuard>,
}

impl FastcgiBody {
    /// The body of an answered request.
    pub(crate) fn new(body: FcgiBody<FcgiSocket>, back: Option<Back>, active: ActiveGuard) -> Self {
        FastcgiBody {
            body,
            back,
            active: Some(active),
        }
    }

    /// At the end (or when dropped): the connection back to the pool if
    /// it may be reused, and the request no longer in flight.
    fn finish(&mut self) {
        if let Some(back) = self.back.take()
            && let Some(socket) = self.body.take_conn()
        {
            back.pool
                .checkin_fastcgi(back.peer_id, socket, back.max_idle);
        }
        self.active = None;
    }
}

impl Drop for FastcgiBody {
    fn drop(&mut self) {
        self.finish();
    }
}

impl Body for FastcgiBody {
    type Data = Bytes;
    type Error = crate::body::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.body).poll_frame(cx) {
            Poll::Ready(None) => {
                this.finish();
                Poll::Ready(None)
            }
            Poll::Ready(Some(Ok(frame))) => Poll::Ready(Some(Ok(frame))),
            Poll::Ready(Some(Err(e))) => {
                this.finish();
                Poll::Ready(Some(Err(e.into())))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::*;
    use crate::vars::RequestFacts;

    fn upstream(extra: &str) -> Upstream {
        let text = format!(
            "[upstream.php]\nprotocol = \"fastcgi\"\nservers = [{{ addr = \"127.0.0.1:9\" }}]\n{extra}\n"
        );
        let config = crate::config::load_str("t.toml", &text).unwrap();
        Upstream::new(config.upstreams["php"].clone()).unwrap()
    }

    fn parts(method: &str, uri: &str, headers: &[(&str, &str)]) -> Parts {
        let mut b = http::Request::builder().method(method).uri(uri);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap().into_parts().0
    }

    fn facts() -> RequestFacts {
        RequestFacts {
            host: "h".into(),
            request_uri: http::Uri::from_static("/app/x.php?a=1"),
            client: IpAddr::from([127, 0, 0, 1]),
            scheme: "http",
            server_port: 80,
            consumer: None,
        }
    }

    async fn vars(up: &Upstream, p: &Parts, body: &mut RequestBody) -> Result<Params, ProxyError> {
        let f = facts();
        let cgi = CgiFacts {
            facts: &f,
            remote_port: Some(4000),
            server_addr: IpAddr::from([127, 0, 0, 1]),
        };
        prepare(up, &cgi, p, body).await
    }

    fn text(v: Option<&[u8]>) -> Option<&str> {
        v.map(|v| std::str::from_utf8(v).unwrap())
    }

    #[tokio::test]
    async fn root_names_the_script_and_path_info_is_left_out() {
        let up = upstream("root = \"/srv/www/\"");
        let p = parts(
            "GET",
            "/app/x%20y.php?a=1",
            &[("x-a", "1"), ("proxy", "http://evil:1")],
        );
        let v = vars(&up, &p, &mut RequestBody::empty()).await.unwrap();
        assert_eq!(text(v.get("SCRIPT_FILENAME")), Some("/srv/www/app/x y.php"));
        assert_eq!(text(v.get("DOCUMENT_ROOT")), Some("/srv/www"));
        assert_eq!(text(v.get("SCRIPT_NAME")), Some("/app/x y.php"));
        assert_eq!(text(v.get("DOCUMENT_URI")), Some("/app/x y.php"));
        assert_eq!(text(v.get("QUERY_STRING")), Some("a=1"));
        assert_eq!(text(v.get("GATEWAY_INTERFACE")), Some("CGI/1.1"));
        assert_eq!(text(v.get("HTTP_X_A")), Some("1"));
        assert_eq!(text(v.get("CONTENT_LENGTH")), Some(""));
        assert_eq!(v.get("PATH_INFO"), None);
        assert_eq!(v.get("HTTP_PROXY"), None);
    }

    #[tokio::test]
    async fn params_override_and_a_body_without_length_is_counted() {
        let up = upstream(
            "params = { SCRIPT_FILENAME = \"/srv/index.php\", PATH_INFO = \"$uri\", APP = \"x\" }",
        );
        let p = parts("POST", "/a/b", &[("content-type", "text/plain")]);
        let mut body = RequestBody::buffered(Bytes::from_static(b"hello"));
        let v = vars(&up, &p, &mut body).await.unwrap();
        let names: Vec<_> = v.slices().iter().map(|(n, _)| n.to_vec()).collect();
        let count = |n: &str| names.iter().filter(|x| *x == n.as_bytes()).count();
        assert_eq!(count("SCRIPT_FILENAME"), 1);
        assert_eq!(text(v.get("SCRIPT_FILENAME")), Some("/srv/index.php"));
        assert_eq!(text(v.get("PATH_INFO")), Some("/a/b"));
        assert_eq!(text(v.get("APP")), Some("x"));
        assert_eq!(v.get("DOCUMENT_ROOT"), None);
        assert_eq!(text(v.get("CONTENT_LENGTH")), Some("5"));
        assert_eq!(text(v.get("CONTENT_TYPE")), Some("text/plain"));
        assert_eq!(&body.read_all().await.unwrap()[..], b"hello");
    }

    #[tokio::test]
    async fn a_path_leaving_the_root_is_refused() {
        let up = upstream("root = \"/srv/www\"");
        for uri in ["/a/../../etc/passwd", "/%2e%2e/x.php", "/x.php%00.jpg"] {
            let p = parts("GET", uri, &[]);
            let e = vars(&up, &p, &mut RequestBody::empty()).await.err();
            assert!(matches!(e, Some(ProxyError::BadRequest(_))), "{uri}: {e:?}");
        }
        let p = parts("GET", "/a..b/x.php", &[]);
        assert!(vars(&up, &p, &mut RequestBody::empty()).await.is_ok());
    }

    #[test]
    fn failures_map_to_statuses_and_retry_kinds() {
        let addr = PeerAddr::Tcp(([127, 0, 0, 1], 9000).into());
        let status = |f: &Failure| match f {
            Failure::NotSent(e) | Failure::NoResponse(e) | Failure::Final(e) => e.status().as_u16(),
        };
        let timeout = failure(FcgiError::ReadTimeout, &addr);
        assert!(matches!(
            timeout,
            Failure::NoResponse(ProxyError::ReadTimeout(_))
        ));
        assert_eq!(status(&timeout), 504);
        let closed = failure(FcgiError::Closed, &addr);
        assert!(matches!(closed, Failure::NoResponse(_)));
        assert_eq!(status(&closed), 502);
        let no_head = failure(FcgiError::NoHead, &addr);
        assert!(matches!(no_head, Failure::Final(_)));
        assert_eq!(status(&no_head), 502);
        let big = FcgiError::Request(Box::new(RequestBodyError::TooLarge));
        let big = failure(big, &addr);
        assert!(matches!(big, Failure::Final(ProxyError::BodyTooLarge)));
        assert_eq!(status(&big), 413);
    }

    #[test]
    fn the_probe_asks_for_the_script_under_root() {
        let vars = probe_params("/ping?full", Some(Path::new("/srv/www")));
        let get = |n: &str| {
            vars.iter()
                .find(|(k, _)| k == n.as_bytes())
                .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
        };
        assert_eq!(get("SCRIPT_FILENAME").as_deref(), Some("/srv/www/ping"));
        assert_eq!(get("SCRIPT_NAME").as_deref(), Some("/ping"));
        assert_eq!(get("QUERY_STRING").as_deref(), Some("full"));
        assert!(
            probe_params("/ping", None)
                .iter()
                .all(|(k, _)| k != b"SCRIPT_FILENAME")
        );
    }
}

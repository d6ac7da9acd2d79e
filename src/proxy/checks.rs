//! Step 1 of a request: the checks SPEC §10 asks for before anything is
//! routed, each answered without contacting an upstream — conflicting
//! framing, a `Transfer-Encoding` other than exactly `chunked` (501, as
//! nginx), more than `max_header_count` header lines or a head larger than
//! `max_header_size` (431), two `Host` headers or none on HTTP/1.1 (400),
//! a declared body over `client_max_body_size` (413). It also settles the
//! request's host: the target's authority (absolute-form, or HTTP/2's
//! `:authority`) wins over a `Host` header (RFC 9112 §3.2.2, RFC 9113
//! §8.3.1) and becomes the `Host` sent upstream, port included; and it
//! drops header names with underscores unless `underscores_in_headers`.

use http::Version;
use http::header::{self, HeaderValue};
use http::request::Parts;

use crate::body::RequestBody;
use crate::config::Server;
use crate::error::ProxyError;

/// Checks a request head and settles its host; returns the host to route
/// on (lowercase, without port; empty for an HTTP/1.0 request without
/// one).
pub fn check(parts: &mut Parts, server: &Server) -> Result<String, ProxyError> {
    if parts.headers.len() > server.max_header_count {
        return Err(ProxyError::HeadTooLarge("too many header lines"));
    }
    let head = survey(parts);
    if head.te_fields > 0 {
        if head.cl_fields > 0 {
            return Err(ProxyError::BadRequest(
                "both Content-Length and Transfer-Encoding",
            ));
        }
        if !only_chunked(parts) {
            return Err(ProxyError::UnsupportedTransferEncoding);
        }
    }
    if head.size > server.max_header_size {
        return Err(ProxyError::HeadTooLarge(
            "request head larger than max_header_size",
        ));
    }
    if head.host_fields > 1 {
        return Err(ProxyError::BadRequest("more than one Host header"));
    }
    let host = settle_host(parts)?;
    if head.underscored && !server.underscores_in_headers {
        drop_underscored(&mut parts.headers);
    }
    if head
        .content_length
        .is_some_and(|n| n > server.client_max_body_size)
    {
        return Err(ProxyError::BodyTooLarge);
    }
    Ok(host)
}

/// A route's own body limit (`request_size`), once the route is known: a
/// declared length over it is refused, and the body is read under it.
pub fn route_body_limit(
    parts: &Parts,
    body: &mut RequestBody,
    limit: u64,
) -> Result<(), ProxyError> {
    let declared = parts
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(ProxyError::BodyTooLarge);
    }
    body.set_limit(limit);
    Ok(())
}

/// What one pass over a request's fields finds (this runs for every
/// request: no lookups by name, no allocation).
#[derive(Debug, Default, PartialEq, Eq)]
struct Survey {
    /// The head's size as it would be sent: the request line and each
    /// header line as `name: value`, with their CRLFs, and the blank line.
    size: usize,
    /// Whether a field name has an underscore.
    underscored: bool,
    /// How many `Transfer-Encoding` fields there are.
    te_fields: usize,
    /// How many `Host` fields there are.
    host_fields: usize,
    /// How many `Content-Length` fields there are.
    cl_fields: usize,
    /// The declared `Content-Length`, if one parses.
    content_length: Option<u64>,
}

fn survey(parts: &Parts) -> Survey {
    let target = parts.uri.path_and_query().map_or(1, |p| p.as_str().len());
    let mut out = Survey {
        size: parts.method.as_str().len() + 1 + target + " HTTP/1.1\r\n".len() + 2,
        ..Survey::default()
    };
    for (name, value) in &parts.headers {
        out.size += name.as_str().len() + 2 + value.len() + 2;
        if name == header::TRANSFER_ENCODING {
            out.te_fields += 1;
        } else if name == header::HOST {
            out.host_fields += 1;
        } else if name == header::CONTENT_LENGTH {
            out.cl_fields += 1;
            out.content_length = std::str::from_utf8(value.as_bytes())
                .ok()
                .and_then(|v| v.parse().ok());
        } else {
            out.underscored |= name.as_str().as_bytes().contains(&b'_');
        }
    }
    out
}

/// Whether the request says exactly `Transfer-Encoding: chunked` (one
/// field, that one coding); not for `gzip, chunked`, `chunked, chunked`,
/// `identity`, or two fields.
fn only_chunked(parts: &Parts) -> bool {
    let mut values = parts.headers.get_all(header::TRANSFER_ENCODING).iter();
    let first = values.next();
    values.next().is_none()
        && first.is_some_and(|v| v.as_bytes().trim_ascii().eq_ignore_ascii_case(b"chunked"))
}

/// Decides the request's host (see the module docs) and makes the `Host`
/// header say it (one `Host` field at most, checked before).
fn settle_host(parts: &mut Parts) -> Result<String, ProxyError> {
    if let Some(authority) = parts.uri.authority() {
        // Userinfo is never part of the host (RFC 9110 §4.2.4).
        let host_port = authority
            .as_str()
            .rsplit_once('@')
            .map_or(authority.as_str(), |(_, h)| h);
        if host_port.is_empty() {
            return Err(ProxyError::BadRequest(
                "empty authority in the request target",
            ));
        }
        let value = HeaderValue::from_str(host_port)
            .map_err(|_| ProxyError::BadRequest("invalid authority in the request target"))?;
        let host = routing_host(host_port);
        parts.headers.insert(header::HOST, value);
        return Ok(host);
    }
    match parts.headers.get(header::HOST) {
        Some(value) => {
            // Visible ASCII, no list, no spaces (the value is trimmed).
            let bytes = value.as_bytes();
            if !bytes.iter().all(|b| (0x21..0x7f).contains(b) && *b != b',') {
                return Err(ProxyError::BadRequest("invalid Host header"));
            }
            let text = std::str::from_utf8(bytes)
                .map_err(|_| ProxyError::BadRequest("invalid Host header"))?;
            Ok(routing_host(text))
        }
        None if parts.version == Version::HTTP_11 => {
            Err(ProxyError::BadRequest("missing Host header"))
        }
        None => Ok(String::new()),
    }
}

/// A host as routes match it: lowercase, without port or IPv6 brackets.
fn routing_host(host_port: &str) -> String {
    let no_port = match host_port.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(v6),
        None => host_port.split(':').next().unwrap_or(host_port),
    };
    no_port.to_ascii_lowercase()
}

/// Removes header fields whose names contain `_` (nginx's
/// `underscores_in_headers off`: ignored, so no one downstream sees them).
fn drop_underscored(headers: &mut http::HeaderMap) {
    let names: Vec<_> = headers
        .keys()
        .filter(|n| n.as_str().contains('_'))
        .cloned()
        .collect();
    for name in names {
        headers.remove(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Request;

    fn server() -> Server {
        crate::config::load_str("t.toml", "")
            .map(|c| c.server)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    fn parts(req: http::request::Builder) -> Parts {
        req.body(())
            .map(|r| r.into_parts().0)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    fn status(r: Result<String, ProxyError>) -> u16 {
        r.map_or_else(|e| e.status().as_u16(), |_| 200)
    }

    #[test]
    fn transfer_encoding_must_be_exactly_chunked() {
        let s = server();
        for (te, want) in [
            ("chunked", 200),
            ("Chunked ", 200),
            ("gzip, chunked", 501),
            ("chunked, chunked", 501),
            ("identity", 501),
        ] {
            let mut p = parts(
                Request::post("/")
                    .header("host", "a")
                    .header("transfer-encoding", te),
            );
            assert_eq!(status(check(&mut p, &s)), want, "{te}");
        }
        let mut p = parts(
            Request::post("/")
                .header("host", "a")
                .header("transfer-encoding", "chunked")
                .header("transfer-encoding", "chunked"),
        );
        assert_eq!(status(check(&mut p, &s)), 501);
        let mut p = parts(
            Request::post("/")
                .header("host", "a")
                .header("content-length", "5")
                .header("transfer-encoding", "chunked"),
        );
        assert_eq!(status(check(&mut p, &s)), 400);
    }

    #[test]
    fn two_hosts_or_none_are_bad_requests() {
        let s = server();
        let mut p = parts(Request::get("/").header("host", "a").header("host", "b"));
        assert_eq!(status(check(&mut p, &s)), 400);
        let mut p = parts(Request::get("/"));
        assert_eq!(status(check(&mut p, &s)), 400);
        let mut p = parts(Request::get("/").version(Version::HTTP_10));
        assert_eq!(check(&mut p, &s).ok().as_deref(), Some(""));
        let mut p = parts(Request::get("/").header("host", "a, b"));
        assert_eq!(status(check(&mut p, &s)), 400);
    }

    #[test]
    fn the_targets_authority_wins_and_keeps_its_port() {
        let s = server();
        let mut p = parts(Request::get("http://Other.Test:8443/x").header("host", "a.test"));
        assert_eq!(check(&mut p, &s).ok().as_deref(), Some("other.test"));
        assert_eq!(
            p.headers.get("host").map(|v| v.as_bytes()),
            Some(&b"Other.Test:8443"[..])
        );
        let mut p = parts(Request::get("http://u:pw@[::1]:8080/").version(Version::HTTP_2));
        assert_eq!(check(&mut p, &s).ok().as_deref(), Some("::1"));
        assert_eq!(
            p.headers.get("host").map(|v| v.as_bytes()),
            Some(&b"[::1]:8080"[..])
        );
        let mut p = parts(Request::get("/").header("host", "A.test:81"));
        assert_eq!(check(&mut p, &s).ok().as_deref(), Some("a.test"));
        assert_eq!(
            p.headers.get("host").map(|v| v.as_bytes()),
            Some(&b"A.test:81"[..])
        );
    }

    #[test]
    fn underscored_names_go_unless_kept() {
        let mut s = server();
        let mut p = parts(
            Request::get("/")
                .header("host", "a")
                .header("x_forwarded_for", "1.2.3.4")
                .header("x-kept", "1"),
        );
        assert!(check(&mut p, &s).is_ok());
        assert!(p.headers.get("x_forwarded_for").is_none());
        assert!(p.headers.get("x-kept").is_some());
        s.underscores_in_headers = true;
        let mut p = parts(Request::get("/").header("host", "a").header("x_y", "1"));
        assert!(check(&mut p, &s).is_ok());
        assert!(p.headers.get("x_y").is_some());
    }

    #[test]
    fn head_limits_are_exact() {
        let mut s = server();
        s.max_header_size = 1024;
        // "GET / HTTP/1.1\r\n" (16) + "host: a\r\n" (9) + "x: v..\r\n" + "\r\n" (2)
        let fits = 1024 - 16 - 9 - 2 - 5;
        let mut p = parts(
            Request::get("/")
                .header("host", "a")
                .header("x", "v".repeat(fits)),
        );
        assert_eq!((survey(&p).size, survey(&p).underscored), (1024, false));
        assert_eq!(status(check(&mut p, &s)), 200);
        let mut p = parts(
            Request::get("/")
                .header("host", "a")
                .header("x", "v".repeat(fits + 1)),
        );
        assert_eq!(status(check(&mut p, &s)), 431);
        s.max_header_count = 10;
        let mut req = Request::get("/").header("host", "a");
        for i in 0..9 {
            req = req.header(format!("x-{i}"), "1");
        }
        let mut p = parts(req);
        assert_eq!(status(check(&mut p, &s)), 200);
        p.headers.insert("x-last", HeaderValue::from_static("1"));
        assert_eq!(status(check(&mut p, &s)), 431);
    }
}

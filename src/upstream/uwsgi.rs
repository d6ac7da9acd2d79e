//! uWSGI's binary protocol, as nginx's `uwsgi_pass` speaks it to a
//! `uwsgi --socket`: a 4-byte header (modifier1 0, the size of the
//! variables as a little-endian u16, modifier2 0), the CGI variables
//! ([`super::cgi`]) as u16-length-prefixed key/value pairs, then the request
//! body as is. The answer is an HTTP/1.x response read by the HTTP/1 client
//! ([`super::h1::Conn`]), usually delimited by the connection's close.
//!
//! uwsgi has no keep-alive: every request opens its own connection, which
//! is never pooled. The body must be announced (`CONTENT_LENGTH`): one
//! without a length (chunked) is read whole first, as nginx does for
//! `uwsgi_pass` (it buffers a chunked body whatever `uwsgi_request_buffering`
//! says), within `client_max_body_size`.

use http::request::Parts;

use super::cgi::{CgiFacts, Params, body_length, cgi_vars};
use crate::body::{RequestBody, RequestBodyError};

/// The most bytes of variables a packet can carry (its size is a u16).
pub const MAX_VARS: usize = u16::MAX as usize;

/// Why a request cannot be sent over uwsgi.
#[derive(Debug)]
pub enum PrepareError {
    /// The client's body failed while it was read whole.
    Body(RequestBodyError),
    /// The variables take more than [`MAX_VARS`] bytes (so many or so
    /// large headers); the size they would take.
    TooBig(usize),
}

/// The packet that starts a uwsgi request for the head `parts` (as
/// forwarded), with its variables. A body of unknown length is read into
/// memory first (and left in `body`, to be sent after the packet).
pub async fn prepare(
    parts: &Parts,
    cgi: &CgiFacts<'_>,
    params: &Params,
    body: &mut RequestBody,
) -> Result<Vec<u8>, PrepareError> {
    let length = body_length(parts, body).await.map_err(PrepareError::Body)?;
    packet(parts, cgi, length, params)
}

/// The header and variables of a request whose body is `length` bytes.
fn packet(
    parts: &Parts,
    cgi: &CgiFacts<'_>,
    length: Option<u64>,
    params: &Params,
) -> Result<Vec<u8>, PrepareError> {
    let mut out = Vec::with_capacity(1024);
    out.extend_from_slice(&[0, 0, 0, 0]);
    cgi_vars(parts, cgi, length, params, &mut |name, value| {
        for part in [name, value] {
            // A part past u16 makes the whole too big, refused below.
            let len = u16::try_from(part.len()).unwrap_or(u16::MAX);
            out.extend_from_slice(&len.to_le_bytes());
            out.extend_from_slice(part);
        }
    });
    let size = out.len() - 4;
    let Ok(size16) = u16::try_from(size) else {
        return Err(PrepareError::TooBig(size));
    };
    out[1..3].copy_from_slice(&size16.to_le_bytes());
    Ok(out)
}

/// The packet of a request from moongate itself (a readiness probe or a
/// health check, `upstream::probe`), given its variables.
pub fn probe_packet(vars: &[(String, String)]) -> Vec<u8> {
    let mut out = vec![0, 0, 0, 0];
    for part in vars.iter().flat_map(|(k, v)| [k, v]) {
        // A part past 4 KiB is cut (no probe path is that long), so the
        // whole stays within a u16.
        let part = &part.as_bytes()[..part.len().min(4096)];
        out.extend_from_slice(&(part.len() as u16).to_le_bytes());
        out.extend_from_slice(part);
    }
    let size = u16::try_from(out.len() - 4).unwrap_or(u16::MAX);
    out[1..3].copy_from_slice(&size.to_le_bytes());
    out
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use bytes::Bytes;

    use super::*;
    use crate::vars::RequestFacts;

    fn parts(method: &str, headers: &[(&str, &str)]) -> Parts {
        let mut b = http::Request::builder().method(method).uri("/p?x=1");
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(())
            .map(|r| r.into_parts().0)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    fn facts() -> RequestFacts {
        RequestFacts {
            host: "h".into(),
            request_uri: http::Uri::from_static("/p?x=1"),
            client: IpAddr::from([127, 0, 0, 1]),
            scheme: "http",
            server_port: 80,
            consumer: None,
        }
    }

    /// The packet read back the way uWSGI reads it.
    fn decode(packet: &[u8]) -> Vec<(String, String)> {
        assert_eq!((packet[0], packet[3]), (0, 0), "modifiers");
        let size = u16::from_le_bytes([packet[1], packet[2]]) as usize;
        assert_eq!(size, packet.len() - 4, "datasize covers exactly the vars");
        fn take(rest: &mut &[u8]) -> String {
            let len = u16::from_le_bytes([rest[0], rest[1]]) as usize;
            let s = String::from_utf8_lossy(&rest[2..2 + len]).into_owned();
            *rest = &rest[2 + len..];
            s
        }
        let mut rest = &packet[4..];
        let mut vars = Vec::new();
        while !rest.is_empty() {
            let k = take(&mut rest);
            let v = take(&mut rest);
            vars.push((k, v));
        }
        vars
    }

    fn cgi(f: &RequestFacts) -> CgiFacts<'_> {
        CgiFacts {
            facts: f,
            remote_port: Some(4000),
            server_addr: IpAddr::from([127, 0, 0, 1]),
        }
    }

    fn var<'a>(vars: &'a [(String, String)], name: &str) -> Option<&'a str> {
        vars.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    #[tokio::test]
    async fn a_packet_carries_the_variables_and_the_declared_length() {
        let f = facts();
        let p = parts("POST", &[("content-length", "5"), ("x-a", "1")]);
        let mut body = RequestBody::buffered(Bytes::from_static(b"hello"));
        let packet = prepare(&p, &cgi(&f), &[], &mut body)
            .await
            .unwrap_or_else(|e| panic!("{e:?}"));
        let vars = decode(&packet);
        assert_eq!(var(&vars, "REQUEST_METHOD"), Some("POST"));
        assert_eq!(var(&vars, "CONTENT_LENGTH"), Some("5"));
        assert_eq!(var(&vars, "QUERY_STRING"), Some("x=1"));
        assert_eq!(var(&vars, "HTTP_X_A"), Some("1"));
        assert!(!body.is_empty(), "the body is left to stream");
    }

    #[tokio::test]
    async fn a_body_without_a_length_is_read_whole_and_counted() {
        let f = facts();
        let p = parts("POST", &[]);
        let mut body = RequestBody::buffered(Bytes::from_static(b"chunked body"));
        let packet = prepare(&p, &cgi(&f), &[], &mut body)
            .await
            .unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(var(&decode(&packet), "CONTENT_LENGTH"), Some("12"));
        let read = body.read_all().await.unwrap_or_default();
        assert_eq!(&read[..], b"chunked body");
        // No body, no length: an empty CONTENT_LENGTH, as nginx sends it.
        let mut none = RequestBody::empty();
        let packet = prepare(&parts("GET", &[]), &cgi(&f), &[], &mut none)
            .await
            .unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(var(&decode(&packet), "CONTENT_LENGTH"), Some(""));
    }

    #[test]
    fn the_probe_packet_carries_its_variables() {
        let given = [("REQUEST_METHOD", "GET"), ("PATH_INFO", "/healthz")]
            .map(|(k, v)| (k.to_owned(), v.to_owned()));
        let vars = decode(&probe_packet(&given));
        assert_eq!(var(&vars, "REQUEST_METHOD"), Some("GET"));
        assert_eq!(var(&vars, "PATH_INFO"), Some("/healthz"));
    }

    #[tokio::test]
    async fn variables_past_64k_are_refused() {
        let f = facts();
        let big = "x".repeat(40_000);
        let p = parts("GET", &[("x-one", &big), ("x-two", &big)]);
        let e = prepare(&p, &cgi(&f), &[], &mut RequestBody::empty()).await;
        assert!(
            matches!(e, Err(PrepareError::TooBig(n)) if n > MAX_VARS),
            "{e:?}"
        );
        // Just under the limit passes.
        let p = parts("GET", &[("x-one", &big)]);
        let ok = prepare(&p, &cgi(&f), &[], &mut RequestBody::empty()).await;
        assert!(ok.is_ok_and(|packet| packet.len() - 4 <= MAX_VARS));
    }
}

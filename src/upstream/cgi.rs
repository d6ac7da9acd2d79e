//! The CGI variables of a forwarded request, as nginx's `uwsgi_params` (and
//! `fastcgi_params`) give them: the request line's parts, the client's and
//! the server's addresses, every header as `HTTP_NAME`, then the upstream's
//! `params` over them. Shared by the CGI-style protocols (uwsgi, FastCGI);
//! it knows nothing of how they are framed on the wire.
//!
//! The variables are handed to a sink one pair at a time, so a protocol
//! writes them straight into its packet without a list in between.

use std::borrow::Cow;
use std::net::IpAddr;

use http::header::{self, HeaderName};
use http::request::Parts;
use percent_encoding::percent_decode_str;

use crate::body::{RequestBody, RequestBodyError};
use crate::vars::{RequestFacts, VarTemplate};

/// What the variables are built from besides the forwarded head.
#[derive(Clone, Copy)]
pub struct CgiFacts<'a> {
    /// Host, original URI, real client address, scheme, server port.
    pub facts: &'a RequestFacts,
    /// `REMOTE_PORT`: the client's port, when the client is the connection's
    /// peer (none when the real address came from a trusted proxy's
    /// `X-Forwarded-For`, as nginx's realip leaves `$remote_port` empty).
    pub remote_port: Option<u16>,
    /// `SERVER_ADDR`: the address the request arrived on.
    pub server_addr: IpAddr,
}

/// An upstream's compiled `params`: name and value template.
pub type Params = [(String, VarTemplate)];

/// Hands every variable of the request to `emit`, in nginx's order:
/// the fixed ones, then the headers, then `params` (a variable `params`
/// names is only sent with its value there). `parts` is the head as
/// forwarded (hop-by-hop fields gone, `X-Forwarded-*` set; the URI
/// possibly rewritten); `content_length` is the body's length when known.
pub fn cgi_vars(
    parts: &Parts,
    cgi: &CgiFacts<'_>,
    content_length: Option<u64>,
    params: &Params,
    emit: &mut dyn FnMut(&[u8], &[u8]),
) {
    let facts = cgi.facts;
    let mut put = |name: &str, value: &[u8]| {
        if !params.iter().any(|(p, _)| p == name) {
            emit(name.as_bytes(), value);
        }
    };
    // Numbers and addresses as text on the stack: no `fmt`, no allocation.
    let mut int = itoa::Buffer::new();
    let mut ip = [0u8; IP_TEXT];
    put("QUERY_STRING", parts.uri.query().unwrap_or("").as_bytes());
    put("REQUEST_METHOD", parts.method.as_str().as_bytes());
    let content_type = parts.headers.get(header::CONTENT_TYPE);
    put(
        "CONTENT_TYPE",
        content_type.map_or(&b""[..], |v| v.as_bytes()),
    );
    match content_length {
        Some(n) => put("CONTENT_LENGTH", int.format(n).as_bytes()),
        None => put("CONTENT_LENGTH", b""),
    }
    put("REQUEST_URI", facts.request_uri().as_bytes());
    // nginx's `$document_uri`: the path, decoded.
    let path: Cow<'_, [u8]> = percent_decode_str(parts.uri.path()).into();
    put("PATH_INFO", &path);
    put("SERVER_PROTOCOL", protocol(parts.version).as_bytes());
    put("REQUEST_SCHEME", facts.scheme.as_bytes());
    if facts.scheme == "https" {
        put("HTTPS", b"on");
    }
    put("REMOTE_ADDR", ip_text(facts.client, &mut ip));
    match cgi.remote_port {
        Some(port) => put("REMOTE_PORT", int.format(port).as_bytes()),
        None => put("REMOTE_PORT", b""),
    }
    put("SERVER_ADDR", ip_text(cgi.server_addr, &mut ip));
    put("SERVER_PORT", int.format(facts.server_port).as_bytes());
    put("SERVER_NAME", facts.host.as_bytes());

    let mut name_buf = Vec::with_capacity(32);
    let mut joined = Vec::new();
    for name in parts.headers.keys() {
        if name == header::CONTENT_TYPE || name == header::CONTENT_LENGTH {
            continue;
        }
        cgi_header_name(name, &mut name_buf);
        let Ok(var) = std::str::from_utf8(&name_buf) else {
            continue;
        };
        let mut values = parts.headers.get_all(name).iter();
        let Some(first) = values.next() else { continue };
        match values.next() {
            None => put(var, first.as_bytes()),
            Some(second) => {
                // Repeated fields go as one variable, as nginx (1.23+) joins
                // them: `; ` between cookies, `, ` otherwise.
                let sep: &[u8] = if name == header::COOKIE { b"; " } else { b", " };
                joined.clear();
                joined.extend_from_slice(first.as_bytes());
                for v in std::iter::once(second).chain(values) {
                    joined.extend_from_slice(sep);
                    joined.extend_from_slice(v.as_bytes());
                }
                put(var, &joined);
            }
        }
    }

    if !params.is_empty() {
        let vars = facts.vars(parts);
        for (name, value) in params {
            emit(name.as_bytes(), value.render(&vars).as_bytes());
        }
    }
}

/// The body's length for `CONTENT_LENGTH` (which the CGI-style protocols
/// need): the declared one, none without a body, else that of the body read
/// whole into memory first (left in `body`, to be sent), within the
/// body's limits, as nginx reads a chunked body for `uwsgi_pass` and
/// `fastcgi_pass`.
pub async fn body_length(
    parts: &Parts,
    body: &mut RequestBody,
) -> Result<Option<u64>, RequestBodyError> {
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    Ok(match declared {
        Some(n) => Some(n),
        None if body.is_empty() => None,
        None => {
            let whole = std::mem::replace(body, RequestBody::empty())
                .read_all()
                .await?;
            let n = whole.len() as u64;
            *body = RequestBody::buffered(whole);
            Some(n)
        }
    })
}

/// Room for the longest IP address as text (an IPv6 address with an
/// embedded IPv4 one: 45 bytes).
const IP_TEXT: usize = 48;

/// `ip` as text in `buf`: IPv4 digit by digit (every request has two),
/// IPv6 through its `Display` (into the same buffer, no allocation).
fn ip_text(ip: IpAddr, buf: &mut [u8; IP_TEXT]) -> &[u8] {
    match ip {
        IpAddr::V4(v4) => {
            let mut n = 0;
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    buf[n] = b'.';
                    n += 1;
                }
                if octet >= 100 {
                    buf[n] = b'0' + octet / 100;
                    n += 1;
                }
                if octet >= 10 {
                    buf[n] = b'0' + octet / 10 % 10;
                    n += 1;
                }
                buf[n] = b'0' + octet % 10;
                n += 1;
            }
            &buf[..n]
        }
        IpAddr::V6(v6) => {
            use std::io::Write;
            let mut cursor = std::io::Cursor::new(&mut buf[..]);
            // 48 bytes always hold an IPv6 address's text.
            let _ = write!(cursor, "{v6}");
            let n = usize::try_from(cursor.position()).unwrap_or(0);
            &buf[..n]
        }
    }
}

/// `HTTP_` and the header's name in upper case, `-` as `_`.
fn cgi_header_name(name: &HeaderName, out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(b"HTTP_");
    out.extend(name.as_str().bytes().map(|b| match b {
        b'-' => b'_',
        b => b.to_ascii_uppercase(),
    }));
}

fn protocol(version: http::Version) -> &'static str {
    match version {
        http::Version::HTTP_10 => "HTTP/1.0",
        _ => "HTTP/1.1",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(method: &str, uri: &str, headers: &[(&str, &str)]) -> Parts {
        let mut b = http::Request::builder().method(method).uri(uri);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(())
            .map(|r| r.into_parts().0)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    fn facts(scheme: &'static str) -> RequestFacts {
        RequestFacts {
            host: "shop.example".into(),
            request_uri: http::Uri::from_static("/v1/items%20all?page=2"),
            client: IpAddr::from([10, 0, 0, 7]),
            scheme,
            server_port: 8443,
            consumer: None,
        }
    }

    fn collect(
        parts: &Parts,
        facts: &RequestFacts,
        length: Option<u64>,
        params: &Params,
    ) -> Vec<(String, String)> {
        let cgi = CgiFacts {
            facts,
            remote_port: Some(50123),
            server_addr: IpAddr::from([127, 0, 0, 1]),
        };
        let mut out = Vec::new();
        cgi_vars(parts, &cgi, length, params, &mut |k, v| {
            out.push((
                String::from_utf8_lossy(k).into_owned(),
                String::from_utf8_lossy(v).into_owned(),
            ));
        });
        out
    }

    fn get<'a>(vars: &'a [(String, String)], name: &str) -> Option<&'a str> {
        let mut found = vars.iter().filter(|(k, _)| k == name);
        let first = found.next().map(|(_, v)| v.as_str());
        assert!(found.next().is_none(), "{name} sent twice");
        first
    }

    #[test]
    fn the_request_line_and_addresses_as_nginx_uwsgi_params() {
        let p = parts(
            "GET",
            "/items%20all?page=2",
            &[
                ("host", "shop.example:8443"),
                ("x-forwarded-for", "10.0.0.7"),
            ],
        );
        let f = facts("https");
        let vars = collect(&p, &f, None, &[]);
        let expect = [
            ("QUERY_STRING", "page=2"),
            ("REQUEST_METHOD", "GET"),
            ("CONTENT_TYPE", ""),
            ("CONTENT_LENGTH", ""),
            // The original URI; PATH_INFO is the (rewritten) path, decoded.
            ("REQUEST_URI", "/v1/items%20all?page=2"),
            ("PATH_INFO", "/items all"),
            ("SERVER_PROTOCOL", "HTTP/1.1"),
            ("REQUEST_SCHEME", "https"),
            ("HTTPS", "on"),
            ("REMOTE_ADDR", "10.0.0.7"),
            ("REMOTE_PORT", "50123"),
            ("SERVER_ADDR", "127.0.0.1"),
            ("SERVER_PORT", "8443"),
            ("SERVER_NAME", "shop.example"),
            ("HTTP_HOST", "shop.example:8443"),
            ("HTTP_X_FORWARDED_FOR", "10.0.0.7"),
        ];
        for (k, v) in expect {
            assert_eq!(get(&vars, k), Some(v), "{k}");
        }
        assert_eq!(vars.len(), expect.len());
        // Over plain HTTP there is no HTTPS variable at all.
        let vars = collect(&p, &facts("http"), None, &[]);
        assert_eq!(get(&vars, "HTTPS"), None);
        assert_eq!(get(&vars, "REQUEST_SCHEME"), Some("http"));
    }

    #[test]
    fn the_body_fields_go_as_content_and_repeated_headers_are_joined() {
        let p = parts(
            "POST",
            "/form",
            &[
                ("content-type", "application/x-www-form-urlencoded"),
                ("content-length", "11"),
                ("cookie", "a=1"),
                ("cookie", "b=2"),
                ("accept", "text/html"),
                ("accept", "application/json"),
                ("x-request-id", "abc"),
            ],
        );
        let vars = collect(&p, &facts("http"), Some(11), &[]);
        assert_eq!(
            get(&vars, "CONTENT_TYPE"),
            Some("application/x-www-form-urlencoded")
        );
        assert_eq!(get(&vars, "CONTENT_LENGTH"), Some("11"));
        assert_eq!(get(&vars, "HTTP_CONTENT_TYPE"), None);
        assert_eq!(get(&vars, "HTTP_CONTENT_LENGTH"), None);
        assert_eq!(get(&vars, "HTTP_COOKIE"), Some("a=1; b=2"));
        assert_eq!(
            get(&vars, "HTTP_ACCEPT"),
            Some("text/html, application/json")
        );
        assert_eq!(get(&vars, "HTTP_X_REQUEST_ID"), Some("abc"));
    }

    #[test]
    fn params_add_and_override_with_templates() {
        let p = parts("GET", "/app/x?q=1", &[("host", "h"), ("x-user", "bob")]);
        let params = vec![
            (
                "SCRIPT_NAME".to_owned(),
                VarTemplate::parse("/app").unwrap(),
            ),
            (
                "SERVER_NAME".to_owned(),
                VarTemplate::parse("site-$host").unwrap(),
            ),
            (
                "HTTP_X_USER".to_owned(),
                VarTemplate::parse("$http_x_user!").unwrap(),
            ),
        ];
        let vars = collect(&p, &facts("http"), None, &params);
        assert_eq!(get(&vars, "SCRIPT_NAME"), Some("/app"));
        assert_eq!(get(&vars, "SERVER_NAME"), Some("site-shop.example"));
        assert_eq!(get(&vars, "HTTP_X_USER"), Some("bob!"));
        // Params come last, after the request's own variables.
        assert_eq!(
            vars.last().map(|(k, _)| k.as_str()),
            Some("HTTP_X_USER"),
            "params at the end, in their order"
        );
    }

    #[test]
    fn without_a_known_client_port_remote_port_is_empty() {
        let p = parts("GET", "/", &[]);
        let f = facts("http");
        let cgi = CgiFacts {
            facts: &f,
            remote_port: None,
            server_addr: IpAddr::from([0, 0, 0, 0, 0, 0, 0, 1]),
        };
        let mut vars = Vec::new();
        cgi_vars(&p, &cgi, None, &[], &mut |k, v| {
            vars.push((
                String::from_utf8_lossy(k).into_owned(),
                String::from_utf8_lossy(v).into_owned(),
            ))
        });
        assert_eq!(get(&vars, "REMOTE_PORT"), Some(""));
        assert_eq!(get(&vars, "SERVER_ADDR"), Some("::1"));
        assert_eq!(get(&vars, "QUERY_STRING"), Some(""));
    }

    #[test]
    fn addresses_as_text_match_their_display() {
        let mut buf = [0u8; IP_TEXT];
        for text in [
            "0.0.0.0",
            "127.0.0.1",
            "10.20.100.255",
            "255.255.255.255",
            "::1",
            "2001:db8::8a2e:370:7334",
            "::ffff:192.168.100.200",
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
        ] {
            let ip: IpAddr = text.parse().unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(ip_text(ip, &mut buf), ip.to_string().as_bytes(), "{text}");
        }
    }
}

//! A client's request head: the HTTP/1 server's head parser
//! (`conn::h1::head::parse`) over arbitrary bytes as they arrive in
//! arbitrary reads, then the proxy's request checks on what it parsed.
//! Invariants: a prefix of the bytes never yields a different head than
//! the whole (the server parses its buffer again after each read); the
//! parser agrees with httparse on where a head ends; the body's framing
//! follows RFC 9112 §6.3 and a head with both `Content-Length` and
//! `Transfer-Encoding` never keeps the connection; a head the checks must
//! refuse never passes; a passed head's `Host` says the host that is
//! routed on.

#![no_main]

#[path = "../common.rs"]
mod common;

use std::sync::LazyLock;

use http::{Version, header};
use libfuzzer_sys::fuzz_target;
use moongate::config::Server;
use moongate::fuzz_api::{ParsedRequestHead, RequestFraming, check_request, parse_request_head};

static SERVER: LazyLock<Server> =
    LazyLock::new(|| match moongate::config::load_str("t.toml", "") {
        Ok(c) => c.server,
        Err(e) => panic!("the default config is rejected: {e}"),
    });

/// The parse as comparable values: the head's length and its parts as text.
fn summary(r: &Result<Option<ParsedRequestHead>, u16>) -> Result<Option<(usize, String)>, u16> {
    match r {
        Ok(Some(h)) => Ok(Some((h.len, format!("{:?} {:?}", h.parts, h.framing)))),
        Ok(None) => Ok(None),
        Err(s) => Err(*s),
    }
}

fuzz_target!(|data: &[u8]| {
    let (cuts, bytes) = common::cuts_and_payload(data);
    let max_headers = SERVER.max_header_count;
    let whole = parse_request_head(bytes, max_headers);
    let whole_summary = summary(&whole);
    // The server parses what it has after each read: the bytes so far.
    let mut read = 0;
    for piece in common::pieces(bytes, &cuts) {
        read += piece.len();
        let prefix = &bytes[..read];
        match summary(&parse_request_head(prefix, max_headers)) {
            Ok(None) => {
                if let Ok(Some((len, _))) = &whole_summary {
                    assert!(
                        *len > prefix.len(),
                        "a complete head was not seen in a prefix"
                    );
                }
            }
            Ok(Some(head)) => assert_eq!(
                Ok(Some(head)),
                whole_summary,
                "a prefix parsed to another head"
            ),
            Err(_) => assert!(
                whole_summary.is_err(),
                "a prefix was refused, the whole not"
            ),
        }
    }

    let mut slots = vec![httparse::EMPTY_HEADER; max_headers];
    let mut req = httparse::Request::new(&mut slots);
    let reference = req.parse(bytes);
    let Ok(Some(head)) = whole else {
        if let Ok(httparse::Status::Complete(_)) = reference
            && let Ok(None) = whole
        {
            panic!("httparse found a complete head the parser did not");
        }
        return;
    };
    assert_eq!(
        reference.ok(),
        Some(httparse::Status::Complete(head.len)),
        "httparse and the parser disagree on the head's end"
    );

    let ParsedRequestHead {
        mut parts,
        framing,
        keep_alive,
        ..
    } = head;
    let has = |name: header::HeaderName| parts.headers.contains_key(name);
    let (cl, has_te) = (has(header::CONTENT_LENGTH), has(header::TRANSFER_ENCODING));
    match framing {
        RequestFraming::Empty | RequestFraming::Length(_) => {
            assert!(!has_te, "TE but {framing:?}")
        }
        RequestFraming::Chunked | RequestFraming::Unknown => {
            assert!(has_te, "{framing:?} without TE")
        }
    }
    if let RequestFraming::Length(n) = framing {
        let declared = parts.headers.get(header::CONTENT_LENGTH).and_then(|v| {
            std::str::from_utf8(v.as_bytes())
                .ok()?
                .trim()
                .parse::<u64>()
                .ok()
        });
        assert_eq!(
            declared,
            Some(n),
            "the length framed is not the one declared"
        );
    }
    if cl && has_te {
        assert!(!keep_alive, "CL + TE left the connection open");
    }
    if framing == RequestFraming::Unknown {
        assert!(!keep_alive, "an unknown framing left the connection open");
    }

    let before = parts.clone();
    let server = &*SERVER;
    let result = check_request(&mut parts, server);

    let te: Vec<_> = before
        .headers
        .get_all(header::TRANSFER_ENCODING)
        .iter()
        .collect();
    let hosts = before.headers.get_all(header::HOST).iter().count();
    let body_len = before
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    let must_refuse = (!te.is_empty() && cl)
        || (!te.is_empty()
            && !(te.len() == 1
                && te[0]
                    .as_bytes()
                    .trim_ascii()
                    .eq_ignore_ascii_case(b"chunked")))
        || before.headers.len() > server.max_header_count
        || hosts > 1
        || (hosts == 0 && before.uri.authority().is_none() && before.version == Version::HTTP_11)
        || body_len.is_some_and(|n| n > server.client_max_body_size);
    let host = match result {
        Ok(host) => host,
        Err(e) => {
            let status = e.status().as_u16();
            assert!(
                matches!(status, 400 | 413 | 431 | 501),
                "refused with {status}"
            );
            return;
        }
    };
    assert!(
        !must_refuse,
        "a head that must be refused passed: {before:?}"
    );
    assert!(
        !host.bytes().any(|b| b.is_ascii_uppercase()),
        "routing host {host:?} not lowercase"
    );
    assert!(
        parts.headers.keys().all(|n| !n.as_str().contains('_')),
        "an underscored name was kept"
    );
    match parts.headers.get(header::HOST) {
        Some(value) => {
            let shown = String::from_utf8_lossy(value.as_bytes()).to_ascii_lowercase();
            let bare = shown.strip_prefix('[').unwrap_or(&shown);
            let rest = bare.strip_prefix(host.as_str());
            assert!(
                rest.is_some_and(|r| r.is_empty() || r.starts_with(':') || r.starts_with(']')),
                "Host {shown:?} is not the routing host {host:?} with a port"
            );
        }
        None => assert!(host.is_empty() && before.version == Version::HTTP_10),
    }
    // Checking a checked head changes nothing. The `Host` line an
    // authority put in may be one line, and its bytes, over the limits
    // (they count the client's head, not the forwarded one).
    let mut roomy = server.clone();
    roomy.max_header_count += 1;
    roomy.max_header_size += parts.headers.get(header::HOST).map_or(0, |v| v.len() + 8);
    let mut again = parts.clone();
    assert_eq!(check_request(&mut again, &roomy).ok(), Some(host));
});

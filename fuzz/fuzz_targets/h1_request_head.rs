//! A client's request head: moongate's head scanner (`conn::io`) over
//! arbitrary bytes in arbitrary reads, then — when httparse (hyper's
//! parser) takes the bytes as a complete request — the proxy's request
//! checks. Invariants: the scanner's answer does not depend on the reads
//! and agrees with httparse on where the head ends and on CL + TE; a head
//! the checks must refuse never passes; a passed head's `Host` says the
//! host that is routed on.

#![no_main]

#[path = "../common.rs"]
mod common;

use std::sync::LazyLock;

use http::{Version, header};
use libfuzzer_sys::fuzz_target;
use moongate::config::Server;
use moongate::fuzz_api::{HeadScan, check_request};

static SERVER: LazyLock<Server> =
    LazyLock::new(|| match moongate::config::load_str("t.toml", "") {
        Ok(c) => c.server,
        Err(e) => panic!("the default config is rejected: {e}"),
    });

/// Where the head ends (an offset into the bytes) and whether it had
/// both framings, reading `pieces` one after the other.
fn scan(pieces: &[&[u8]]) -> (Option<usize>, bool) {
    let mut s = HeadScan::new();
    let mut at = 0;
    for piece in pieces {
        if let Some(n) = s.feed(piece) {
            assert!(n <= piece.len());
            return (Some(at + n), s.conflict());
        }
        at += piece.len();
    }
    (None, s.conflict())
}

fuzz_target!(|data: &[u8]| {
    let (cuts, bytes) = common::cuts_and_payload(data);
    let whole = scan(&[bytes]);
    assert_eq!(
        scan(&common::pieces(bytes, &cuts)),
        whole,
        "the reads changed the scan"
    );
    let one_by_one: Vec<&[u8]> = bytes.chunks(1).collect();
    assert_eq!(
        scan(&one_by_one),
        whole,
        "byte-by-byte reads changed the scan"
    );

    let mut slots = [httparse::EMPTY_HEADER; 128];
    let mut req = httparse::Request::new(&mut slots);
    let Ok(httparse::Status::Complete(len)) = req.parse(bytes) else {
        return;
    };
    assert_eq!(
        whole.0,
        Some(len),
        "httparse and the scanner disagree on the head's end"
    );
    let has = |name: &str| {
        req.headers
            .iter()
            .any(|h| h.name.eq_ignore_ascii_case(name))
    };
    if has("content-length") && has("transfer-encoding") {
        assert!(whole.1, "CL + TE went unnoticed by the scanner");
    }

    // The head as hyper hands it over (hyper refuses what `http` refuses).
    let (Some(method), Some(path), Some(version)) = (req.method, req.path, req.version) else {
        return;
    };
    let mut builder = http::Request::builder()
        .method(method)
        .uri(path)
        .version(if version == 0 {
            Version::HTTP_10
        } else {
            Version::HTTP_11
        });
    for h in req.headers.iter() {
        builder = builder.header(h.name, h.value);
    }
    let Ok(request) = builder.body(()) else {
        return;
    };
    let (mut parts, ()) = request.into_parts();
    let before = parts.clone();
    let server = &*SERVER;
    let result = check_request(&mut parts, server, whole.1);

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
    let must_refuse = (!te.is_empty() && whole.1)
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
    assert_eq!(check_request(&mut again, &roomy, false).ok(), Some(host));
});

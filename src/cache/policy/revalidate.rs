//! Revalidation and what a shared cache keeps of a response's headers
//! (RFC 9111 §3.1, §3.2, §4.3): conditional request headers from an
//! entry's validators, merging a 304 into the entry, and dropping what
//! must not be stored.

use http::HeaderMap;
use http::header::{AGE, ETAG, IF_MODIFIED_SINCE, IF_NONE_MATCH, LAST_MODIFIED};

use crate::forward;

/// Headers for revalidating an entry: If-None-Match from its ETag,
/// If-Modified-Since from its Last-Modified (both when both exist; the
/// origin gives the ETag precedence). Empty when it has no validator.
pub fn conditional_headers(entry_headers: &HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::new();
    if let Some(etag) = entry_headers.get(ETAG) {
        out.insert(IF_NONE_MATCH, etag.clone());
    }
    if let Some(modified) = entry_headers.get(LAST_MODIFIED) {
        out.insert(IF_MODIFIED_SINCE, modified.clone());
    }
    out
}

/// Besides the hop-by-hop headers ([`forward::HOP_BY_HOP`]), what a shared
/// cache never stores nor takes from a 304: proxy authentication (RFC 9111
/// §3.1).
const PROXY_AUTH: &[&str] = &[
    "proxy-authenticate",
    "proxy-authentication-info",
    "proxy-authorization",
];

/// True for a header a shared cache never stores nor takes from a 304.
fn unstorable(name: &str) -> bool {
    forward::HOP_BY_HOP.contains(&name) || PROXY_AUTH.contains(&name)
}

/// Headers describing the stored bytes rather than the resource: a 304
/// must not change them (RFC 9111 §3.2 lets a cache keep them for the
/// stored response's integrity).
const BODY_FRAMING: &[&str] = &["content-length", "content-encoding", "content-range"];

/// Updates an entry's headers from a 304 (RFC 9111 §4.3.4, §3.2): every
/// header the 304 carries replaces all stored values of that name, except
/// hop-by-hop ones (including those its `Connection` lists) and
/// Content-Length / Content-Encoding / Content-Range, which describe the
/// stored body. The stored `Age` goes: it told how old the stored response
/// was when it arrived, and the 304's own `Age` (if any) now does.
/// Recompute the [`Lifetime`](super::Lifetime) afterwards; the caller sets
/// its own `Age` when serving.
pub fn merge_304(entry_headers: &mut HeaderMap, not_modified_headers: &HeaderMap) {
    entry_headers.remove(AGE);
    let listed = forward::connection_listed(not_modified_headers);
    for name in not_modified_headers.keys() {
        let kept = unstorable(name.as_str()) || BODY_FRAMING.contains(&name.as_str());
        if kept || listed.contains(name) {
            continue;
        }
        entry_headers.remove(name);
        for value in not_modified_headers.get_all(name) {
            entry_headers.append(name.clone(), value.clone());
        }
    }
}

/// Removes what a shared cache must not store from a response's headers
/// (RFC 9111 §3.1): hop-by-hop headers, those `Connection` lists, proxy
/// authentication. Content-Length and the content headers stay.
pub fn strip_unstorable(headers: &mut HeaderMap) {
    for name in forward::connection_listed(headers) {
        headers.remove(name);
    }
    for name in forward::HOP_BY_HOP.iter().chain(PROXY_AUTH) {
        headers.remove(*name);
    }
}

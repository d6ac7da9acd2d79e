//! What an answer of the cache step becomes on its way to the client.
//!
//! A looked-up request never sends its own conditions (If-None-Match,
//! If-Modified-Since, If-Match, If-Unmodified-Since) nor its Range
//! upstream (as nginx's proxy_cache does: the origin's whole answer can
//! then be stored); here they are evaluated against the answer, a stored
//! entry or the origin's 200 as it streams, with [`crate::conditional`]
//! (RFC 9110 §13-14): 304 Not Modified (only the headers §15.4.5 asks
//! for), 412, a single-range 206 or 416 instead of the 200. Several
//! ranges, a failed If-Range or an unknown length get the whole 200.
//! Only 200 answers to GET/HEAD are touched (Range: GET only).
//!
//! And the zone's targeted fields (RFC 9213, `CDN-Cache-Control` by
//! default) are removed from every answer unless the zone forwards them:
//! they are directives for this cache, not for the client.

use http::header::{self, HeaderName, HeaderValue};
use http::{HeaderMap, Method, Response, StatusCode};

use super::{CLIENT_CONDITIONS, STATUS_HEADER};
use crate::body::{Kind, ResponseBody};
use crate::cache::stream::CacheBody;
use crate::cache::zone::Zone;
use crate::conditional::{self, Precondition, RangeDecision, Validators};

/// What a 304 carries from the 200 it stands for (RFC 9110 §15.4.5:
/// those a 200 would carry, Last-Modified to help caches update), plus
/// the cache's own Age and status.
const NOT_MODIFIED_KEEPS: &[HeaderName] = &[
    header::CACHE_CONTROL,
    header::CONTENT_LOCATION,
    header::DATE,
    header::ETAG,
    header::EXPIRES,
    header::VARY,
    header::LAST_MODIFIED,
    header::AGE,
];

/// The client request an answer goes to.
pub(super) struct Client<'a> {
    /// Its method.
    pub method: &'a Method,
    /// Its conditions and Range, when the origin did not see them (so
    /// they are ours to answer); other headers are ignored. Empty for a
    /// BYPASS: the origin answered them.
    pub headers: &'a HeaderMap,
}

/// `resp` as the client gets it: its conditions and Range answered, the
/// targeted fields removed. The whole body's length comes from
/// Content-Length (a stored entry always has one).
pub(super) fn deliver(
    zone: &Zone,
    client: &Client<'_>,
    resp: Response<ResponseBody>,
) -> Response<ResponseBody> {
    let mut resp = answer(client, resp, &zone.def.targeted);
    // One pass over the names (no hashing) decides whether there is
    // anything to remove: usually there is not.
    let targeted = &zone.def.targeted;
    if !zone.def.forward_targeted && resp.headers().keys().any(|k| targeted.contains(k)) {
        for name in targeted {
            resp.headers_mut().remove(name);
        }
    }
    resp
}

/// Evaluates the client's conditions, then its Range, against a 200.
fn answer(
    client: &Client<'_>,
    resp: Response<ResponseBody>,
    targeted: &[HeaderName],
) -> Response<ResponseBody> {
    let get = *client.method == Method::GET;
    // A pass over the request's few names, not six lookups by name.
    let asked = client
        .headers
        .keys()
        .any(|name| CLIENT_CONDITIONS.contains(name));
    if !asked || resp.status() != StatusCode::OK || !(get || *client.method == Method::HEAD) {
        return resp;
    }
    let validators = Validators::of_response(resp.headers());
    match conditional::evaluate(client.headers, &validators) {
        Precondition::Proceed => {}
        Precondition::NotModified => {
            let keep = |name: &HeaderName| {
                NOT_MODIFIED_KEEPS.contains(name)
                    || targeted.contains(name)
                    || name.as_str() == STATUS_HEADER
            };
            return bodiless(resp, StatusCode::NOT_MODIFIED, keep);
        }
        Precondition::Failed => {
            let keep = |name: &HeaderName| name.as_str() == STATUS_HEADER;
            return bodiless(resp, StatusCode::PRECONDITION_FAILED, keep);
        }
    }
    let len = content_length(resp.headers());
    let (true, Some(len)) = (get && client.headers.contains_key(header::RANGE), len) else {
        return resp;
    };
    match conditional::range(client.headers, &validators, len) {
        RangeDecision::Full => resp,
        RangeDecision::Partial { start, end } => {
            let count = end.saturating_sub(start).saturating_add(1);
            let (mut parts, body) = resp.into_parts();
            parts.status = StatusCode::PARTIAL_CONTENT;
            put(
                &mut parts.headers,
                header::CONTENT_LENGTH,
                count.to_string(),
            );
            let range = format!("bytes {start}-{end}/{len}");
            put(&mut parts.headers, header::CONTENT_RANGE, range);
            let body = CacheBody::slice(body, start, count);
            Response::from_parts(parts, ResponseBody::from_kind(Kind::Cache(Box::new(body))))
        }
        RangeDecision::Unsatisfiable => {
            let keep = |name: &HeaderName| name.as_str() == STATUS_HEADER;
            let mut resp = bodiless(resp, StatusCode::RANGE_NOT_SATISFIABLE, keep);
            put(
                resp.headers_mut(),
                header::CONTENT_RANGE,
                format!("bytes */{len}"),
            );
            resp
        }
    }
}

/// `resp` as a bodiless `status` with the headers `keep` accepts. Its
/// body is held (not sent) until the answer is done with: a response
/// still being stored goes on being stored.
fn bodiless(
    resp: Response<ResponseBody>,
    status: StatusCode,
    keep: impl Fn(&HeaderName) -> bool,
) -> Response<ResponseBody> {
    let (mut parts, body) = resp.into_parts();
    parts.status = status;
    let mut headers = HeaderMap::new();
    for (name, value) in &parts.headers {
        if keep(name) {
            headers.append(name.clone(), value.clone());
        }
    }
    if status != StatusCode::NOT_MODIFIED {
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
    }
    parts.headers = headers;
    if status.is_client_error() {
        // 412, 416: moongate's own error answers, rendered in the client's
        // format (the body is given when the response leaves the proxy).
        parts
            .extensions
            .insert(crate::error_page::OwnError { message: "".into() });
    }
    let body = CacheBody::slice(body, 0, 0);
    Response::from_parts(parts, ResponseBody::from_kind(Kind::Cache(Box::new(body))))
}

/// The Content-Length a response states, if valid.
pub(super) fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// Sets a header we build from digits and ASCII (always valid).
fn put(headers: &mut HeaderMap, name: HeaderName, value: String) {
    if let Ok(value) = HeaderValue::try_from(value) {
        headers.insert(name, value);
    }
}

#[cfg(test)]
mod tests;

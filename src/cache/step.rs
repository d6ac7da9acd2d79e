//! The cache step of the request path, for routes with `cache = "NAME"`:
//! [`lookup`] before the upstream (a fresh hit answers at once), then
//! [`finish`] with the upstream's response (stored when the rules allow,
//! entries invalidated by unsafe methods). `proxy` calls both and knows
//! nothing else of caching.
//!
//! What this step does, and what it does not do yet:
//! - `X-Cache-Status`: HIT (fresh entry), MISS (looked up, not found; the
//!   origin's answer is stored if it may be), EXPIRED (found but stale,
//!   or the request's own directives ask for a fresher one: treated as a
//!   miss), BYPASS (not looked up nor stored: a method outside the zone's
//!   `methods`, an unsafe method, or a request with `Cache-Control:
//!   no-store`).
//! - Only GET responses are stored; a HEAD is answered from a stored GET,
//!   and a HEAD miss goes to the origin as HEAD and is not stored (a HEAD
//!   answer must never stand in for a GET).
//! - A response is stored only whole, when it states a Content-Length of
//!   at most `max_object_size`; others stream through unchanged (MISS).
//! - `Vary`: the base key holds a small [`Entry::Variants`] marker with
//!   the header names; each variant lives under `base \n id \n variant`.
//! - Not yet: the lock, stale serving, revalidation (304), Lua decisions,
//!   storing while streaming.

use std::sync::Arc;
use std::time::SystemTime;

use bytes::BytesMut;
use http::header::{AGE, CONTENT_LENGTH, HeaderValue};
use http::{HeaderMap, HeaderName, Method, Response};
use http_body_util::BodyExt;

use super::entry::{Entry, Stored, new_variants_id, variant_key};
use super::policy::{self, CacheControl, Freshness, Lifetime, Overrides};
use super::zone::Zone;
use crate::body::ResponseBody;
use crate::error::ProxyError;
use crate::vars::RequestVars;

/// The response header saying what the cache did.
pub const STATUS_HEADER: &str = "x-cache-status";

/// What the cache did for one request (`X-Cache-Status`, `$cache_status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheStatus {
    /// Answered from a fresh entry.
    Hit,
    /// Not found; went to the origin.
    Miss,
    /// Found stale; went to the origin.
    Expired,
    /// Not looked up nor stored.
    Bypass,
}

impl CacheStatus {
    /// The header value.
    pub fn as_str(self) -> &'static str {
        match self {
            CacheStatus::Hit => "HIT",
            CacheStatus::Miss => "MISS",
            CacheStatus::Expired => "EXPIRED",
            CacheStatus::Bypass => "BYPASS",
        }
    }
}

/// A request that goes to the origin, with what [`finish`] needs.
pub struct Pending {
    zone: Arc<Zone>,
    base: String,
    method: Method,
    req_headers: HeaderMap,
    request_time: SystemTime,
    status: CacheStatus,
    /// The Vary marker found under the base key, if any.
    marker: Option<(u64, Vec<HeaderName>)>,
}

/// The outcome of [`lookup`].
pub enum Lookup {
    /// A fresh entry answers.
    Hit(Response<ResponseBody>),
    /// Go to the origin, then call [`finish`].
    Fetch(Pending),
}

/// Looks the request (`vars.parts`) up in `zone`.
pub async fn lookup(zone: &Arc<Zone>, vars: &RequestVars<'_>) -> Lookup {
    let head = vars.parts;
    let mut pending = Pending {
        zone: zone.clone(),
        base: zone.key.render(vars),
        method: head.method.clone(),
        req_headers: head.headers.clone(),
        request_time: SystemTime::now(),
        status: CacheStatus::Bypass,
        marker: None,
    };
    let request_cc = CacheControl::parse(&head.headers);
    if !zone.def.methods.contains(&head.method) || request_cc.no_store {
        return Lookup::Fetch(pending);
    }
    pending.status = CacheStatus::Miss;
    let mut found = zone.get(&pending.base).await;
    if let Some(Entry::Variants { id, names }) = found.as_deref() {
        let variant = policy::variant_key(names, &head.headers);
        pending.marker = Some((*id, names.clone()));
        found = zone.get(&variant_key(&pending.base, *id, &variant)).await;
    }
    let Some(Entry::Response(stored)) = found.as_deref() else {
        return Lookup::Fetch(pending);
    };
    let now = SystemTime::now();
    if stored.lifetime.freshness(&request_cc, now) != Freshness::Fresh {
        pending.status = CacheStatus::Expired;
        return Lookup::Fetch(pending);
    }
    let mut resp = Response::new(if head.method == Method::HEAD {
        ResponseBody::empty()
    } else {
        ResponseBody::full(stored.body.clone())
    });
    *resp.status_mut() = stored.status;
    *resp.headers_mut() = stored.headers.clone();
    let age = policy::age_header(stored.lifetime.age(now));
    resp.headers_mut().insert(AGE, age);
    set_status(&mut resp, CacheStatus::Hit);
    Lookup::Hit(resp)
}

/// Acts on the origin's response to a request [`lookup`] sent there:
/// invalidates on an unsafe method's success, stores what may be stored,
/// and says what was done in `X-Cache-Status`.
pub async fn finish(
    pending: Pending,
    mut resp: Response<ResponseBody>,
) -> Result<Response<ResponseBody>, ProxyError> {
    let zone = &pending.zone;
    if !pending.method.is_safe() {
        if policy::invalidates(&pending.method, resp.status()) {
            zone.invalidate(&pending.base);
        }
        set_status(&mut resp, CacheStatus::Bypass);
        return Ok(resp);
    }
    let status = pending.status;
    if status == CacheStatus::Bypass || pending.method != Method::GET {
        set_status(&mut resp, status);
        return Ok(resp);
    }
    let allowed = policy::storable(
        &pending.method,
        &pending.req_headers,
        resp.status(),
        resp.headers(),
        &zone.settings,
        &Overrides::default(),
    );
    let length = resp
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let fits = length.filter(|n| *n <= zone.def.max_object_size);
    let (Ok(()), Some(length)) = (allowed, fits) else {
        set_status(&mut resp, status);
        return Ok(resp);
    };
    let response_time = SystemTime::now();
    let (mut parts, body) = resp.into_parts();
    let body = read_whole(body, length, zone.def.max_object_size).await?;

    let mut headers = parts.headers.clone();
    policy::strip_unstorable(&mut headers);
    let lifetime = Lifetime::new(
        &headers,
        pending.request_time,
        response_time,
        &zone.settings,
        &Overrides::default(),
    );
    let names = policy::vary_names(&headers).unwrap_or_default();
    let key = if names.is_empty() {
        pending.base.clone()
    } else {
        let id = match pending.marker {
            Some((id, known)) if known == names => id,
            _ => {
                let id = new_variants_id(response_time);
                let marker = Entry::Variants {
                    id,
                    names: names.clone(),
                };
                zone.put(pending.base.clone(), marker);
                id
            }
        };
        let variant = policy::variant_key(&names, &pending.req_headers);
        variant_key(&pending.base, id, &variant)
    };
    let stored = Stored {
        status: parts.status,
        headers,
        body: body.clone(),
        lifetime,
    };
    zone.put(key, Entry::Response(stored));
    parts.headers.insert(
        http::header::HeaderName::from_static(STATUS_HEADER),
        HeaderValue::from_static(status.as_str()),
    );
    Ok(Response::from_parts(parts, ResponseBody::full(body)))
}

/// Reads a body of `length` bytes, refusing more than `max`.
async fn read_whole(
    mut body: ResponseBody,
    length: u64,
    max: u64,
) -> Result<bytes::Bytes, ProxyError> {
    let mut buf = BytesMut::with_capacity(usize::try_from(length).unwrap_or(0));
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| ProxyError::UpstreamBody(e.to_string()))?;
        if let Ok(data) = frame.into_data() {
            if (buf.len() + data.len()) as u64 > max {
                return Err(ProxyError::UpstreamBody(
                    "body longer than its Content-Length".into(),
                ));
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(buf.freeze())
}

fn set_status(resp: &mut Response<ResponseBody>, status: CacheStatus) {
    resp.headers_mut().insert(
        http::header::HeaderName::from_static(STATUS_HEADER),
        HeaderValue::from_static(status.as_str()),
    );
}

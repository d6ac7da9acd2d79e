//! The cache step of the request path, for routes with `cache = "NAME"`:
//! [`lookup`] before the upstream (a fresh hit answers at once), then
//! [`finish`] with the upstream's response (stored when the rules allow,
//! entries invalidated by unsafe methods). `proxy` calls both, sends a
//! [`Refresh`] upstream in the background, and knows nothing else of
//! caching.
//!
//! What this step does, and what it does not do yet:
//! - `X-Cache-Status`: HIT (fresh entry), MISS (looked up, not found; the
//!   origin's answer is stored if it may be), EXPIRED (found but stale,
//!   or the request's own directives ask for a fresher one: refetched or
//!   revalidated), STALE (a stale entry served at once while this
//!   request's background refresh runs, or in place of a failed origin
//!   within stale-if-error), UPDATING (a stale entry served while another
//!   request refreshes it), REVALIDATED (the origin answered 304 to the
//!   entry's validators: the entry's headers are updated and it is
//!   served), BYPASS (not looked up nor stored: a method outside the
//!   zone's `methods`, an unsafe method, or a request with
//!   `Cache-Control: no-store`).
//! - The lock ([`super::lock`]): with `lock = true`, concurrent misses and
//!   expired lookups of one key send one request upstream; the others
//!   wait for it (at most `lock_timeout`) and look up again, going to the
//!   origin themselves if there is still nothing to serve. Background
//!   refreshes always take the same lock, so one runs per key.
//! - Only GET responses are stored; a HEAD is answered from a stored GET,
//!   and a HEAD miss goes to the origin as HEAD and is not stored (a HEAD
//!   answer must never stand in for a GET).
//! - A response is stored only whole, when it states a Content-Length of
//!   at most `max_object_size`; others stream through unchanged (MISS).
//! - `Vary`: the base key holds a small [`Entry::Variants`] marker with
//!   the header names; each variant lives under `base \n id \n variant`.
//! - Lua decisions ([`CacheDecisions`], `mg.cache.*`): `key` replaces the
//!   rendered key; `bypass` skips the lookup (BYPASS, no lock) but still
//!   stores; `no_store` and `ttl` become [`Overrides`]. Those made in
//!   header_filter count too: [`finish`] hands back a [`Store`] that the
//!   caller commits after header_filter ran, with its decisions. The
//!   stored headers are the upstream's, before header_filter changed them.
//!   A background refresh uses the rewrite/access decisions only.
//! - Not yet: storing while streaming (waiters are served once the
//!   leader's whole body is stored).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::BytesMut;
use http::header::{self, AGE, CONTENT_LENGTH, HeaderValue};
use http::request::Parts;
use http::{HeaderMap, HeaderName, Method, Request, Response, StatusCode};
use http_body_util::BodyExt;

use super::entry::{Entry, Stored, new_variants_id, variant_key};
use super::lock::{Acquired, Guard};
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
    /// A stale entry answered (being refreshed, or the origin failed).
    Stale,
    /// A stale entry answered while another request refreshes it.
    Updating,
    /// A stale entry answered after the origin confirmed it (304).
    Revalidated,
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
            CacheStatus::Stale => "STALE",
            CacheStatus::Updating => "UPDATING",
            CacheStatus::Revalidated => "REVALIDATED",
            CacheStatus::Bypass => "BYPASS",
        }
    }
}

/// What a request's Lua handlers decided about caching (`mg.cache.*`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CacheDecisions {
    /// `mg.cache.key(k)`: the key instead of the zone's rendered one.
    pub key: Option<String>,
    /// `mg.cache.bypass()`: don't look up, still store.
    pub bypass: bool,
    /// `mg.cache.no_store()` and `mg.cache.ttl(sec)`.
    pub overrides: Overrides,
}

/// A stale entry found by [`lookup`].
struct Found {
    /// The key it is stored under (a variant's key under Vary).
    key: String,
    stored: Stored,
    /// It may stand in for a failed origin (stale-if-error).
    on_error: bool,
}

/// A request that goes to the origin, with what [`finish`] needs.
pub struct Pending {
    zone: Arc<Zone>,
    base: String,
    method: Method,
    req_headers: HeaderMap,
    request_time: SystemTime,
    status: CacheStatus,
    /// Lua's bypass: stored although not looked up.
    store_bypassed: bool,
    /// Lua's rewrite/access decisions.
    overrides: Overrides,
    /// The Vary marker found under the base key, if any.
    marker: Option<(u64, Vec<HeaderName>)>,
    /// The stale entry this request refetches or revalidates.
    stale: Option<Box<Found>>,
    /// The stale entry's validators, for the upstream request.
    conditional: HeaderMap,
    /// Held while this request fetches the key: dropped (waking the
    /// waiters) once [`finish`] stored the answer or gave up, or when the
    /// request is cancelled.
    _guard: Option<Guard>,
}

impl Pending {
    /// Adds what the cache asks of the upstream request: the stale
    /// entry's validators (If-None-Match / If-Modified-Since), if any.
    pub fn prepare(&self, headers: &mut HeaderMap) {
        for (name, value) in &self.conditional {
            headers.insert(name.clone(), value.clone());
        }
    }
}

/// A stale entry's background refresh: send `parts` (a bodiless GET)
/// upstream, then hand the answer to [`finish`] with `pending`.
pub struct Refresh {
    /// The request head to send upstream.
    pub parts: Parts,
    /// What [`finish`] needs; holds the key's lock.
    pub pending: Pending,
}

/// The outcome of [`lookup`].
pub enum Lookup {
    /// A fresh entry answers.
    Hit(Response<ResponseBody>),
    /// A stale entry answers now; send the refresh (if this request won
    /// the lock) upstream in the background.
    Stale(Response<ResponseBody>, Option<Box<Refresh>>),
    /// Go to the origin (after [`Pending::prepare`]), then call [`finish`].
    Fetch(Pending),
}

/// Request headers the client's own conditions or framing put there,
/// which a cache's own upstream request must not carry.
const CLIENT_CONDITIONS: &[HeaderName] = &[
    header::IF_NONE_MATCH,
    header::IF_MODIFIED_SINCE,
    header::IF_MATCH,
    header::IF_UNMODIFIED_SINCE,
    header::IF_RANGE,
    header::RANGE,
];

/// Looks the request (`vars.parts`) up in `zone`, waiting for the key's
/// lock when another request is fetching it.
/// `lua` holds the request's `mg.cache.*` decisions.
pub async fn lookup(zone: &Arc<Zone>, vars: &RequestVars<'_>, lua: &CacheDecisions) -> Lookup {
    let head = vars.parts;
    let mut pending = Pending {
        zone: zone.clone(),
        base: lua.key.clone().unwrap_or_else(|| zone.key.render(vars)),
        method: head.method.clone(),
        req_headers: head.headers.clone(),
        request_time: SystemTime::now(),
        status: CacheStatus::Bypass,
        store_bypassed: false,
        overrides: lua.overrides,
        marker: None,
        stale: None,
        conditional: HeaderMap::new(),
        _guard: None,
    };
    let request_cc = CacheControl::parse(&head.headers);
    if !zone.def.methods.contains(&head.method) || request_cc.no_store {
        return Lookup::Fetch(pending);
    }
    if lua.bypass {
        pending.store_bypassed = true;
        return Lookup::Fetch(pending);
    }
    let client_conditional = CLIENT_CONDITIONS
        .iter()
        .any(|n| head.headers.contains_key(n));
    let mut waited = false;
    loop {
        let (key, found) = find(zone, &mut pending, &head.headers).await;
        let now = SystemTime::now();
        pending.request_time = now;
        pending.status = CacheStatus::Miss;
        pending.stale = None;
        pending.conditional.clear();
        if let Some(Entry::Response(stored)) = found.as_deref() {
            match stored.lifetime.freshness(&request_cc, now) {
                Freshness::Fresh => {
                    return Lookup::Hit(serve(stored, &head.method, CacheStatus::Hit, now));
                }
                Freshness::StaleWhileRevalidate => {
                    let refresh = zone
                        .locks
                        .try_lead(&key)
                        .map(|guard| refresh(&pending, head, &key, stored, guard));
                    let status = match refresh {
                        Some(_) => CacheStatus::Stale,
                        None => CacheStatus::Updating,
                    };
                    let resp = serve(stored, &head.method, status, now);
                    return Lookup::Stale(resp, refresh);
                }
                Freshness::Stale { serve_on_error } => {
                    pending.status = CacheStatus::Expired;
                    if head.method == Method::GET && !client_conditional {
                        pending.conditional = policy::conditional_headers(&stored.headers);
                    }
                    pending.stale = Some(Box::new(Found {
                        key: key.clone(),
                        stored: stored.clone(),
                        on_error: serve_on_error,
                    }));
                }
            }
        }
        if !zone.def.lock || waited {
            return Lookup::Fetch(pending);
        }
        match zone.locks.acquire(&key) {
            Acquired::Leader(guard) => {
                pending._guard = Some(guard);
                return Lookup::Fetch(pending);
            }
            Acquired::Wait(waiter) => {
                waited = true;
                if !waiter.wait(zone.def.lock_timeout).await {
                    return Lookup::Fetch(pending);
                }
            }
        }
    }
}

/// The key a request's entry lives under, and the entry there; records
/// the Vary marker in `pending`.
async fn find(
    zone: &Zone,
    pending: &mut Pending,
    headers: &HeaderMap,
) -> (String, Option<Arc<Entry>>) {
    let mut key = pending.base.clone();
    let mut found = zone.get(&key).await;
    pending.marker = None;
    if let Some(Entry::Variants { id, names }) = found.as_deref() {
        let variant = policy::variant_key(names, headers);
        pending.marker = Some((*id, names.clone()));
        key = variant_key(&pending.base, *id, &variant);
        found = zone.get(&key).await;
    }
    (key, found)
}

/// The background refresh of the stale entry `stored` under `key`: a GET
/// carrying the request's headers (so its key and Vary'd headers are the
/// same) minus the client's own conditions and framing, plus the entry's
/// validators.
fn refresh(
    pending: &Pending,
    head: &Parts,
    key: &str,
    stored: &Stored,
    guard: Guard,
) -> Box<Refresh> {
    let mut headers = head.headers.clone();
    for name in CLIENT_CONDITIONS {
        headers.remove(name);
    }
    for name in [
        header::CONTENT_LENGTH,
        header::TRANSFER_ENCODING,
        header::EXPECT,
        header::UPGRADE,
        header::CONNECTION,
    ] {
        headers.remove(name);
    }
    let conditional = policy::conditional_headers(&stored.headers);
    let mut req = Request::new(());
    *req.method_mut() = Method::GET;
    *req.uri_mut() = head.uri.clone();
    *req.version_mut() = head.version;
    *req.headers_mut() = headers.clone();
    for (name, value) in &conditional {
        req.headers_mut().insert(name.clone(), value.clone());
    }
    let (parts, ()) = req.into_parts();
    let pending = Pending {
        zone: pending.zone.clone(),
        base: pending.base.clone(),
        method: Method::GET,
        req_headers: headers,
        request_time: SystemTime::now(),
        status: CacheStatus::Expired,
        store_bypassed: false,
        overrides: pending.overrides,
        marker: pending.marker.clone(),
        stale: Some(Box::new(Found {
            key: key.to_owned(),
            stored: stored.clone(),
            on_error: false,
        })),
        conditional,
        _guard: Some(guard),
    };
    Box::new(Refresh { parts, pending })
}

/// A response from a stored entry, with its Age and `status`.
fn serve(
    stored: &Stored,
    method: &Method,
    status: CacheStatus,
    now: SystemTime,
) -> Response<ResponseBody> {
    let mut resp = Response::new(if *method == Method::HEAD {
        ResponseBody::empty()
    } else {
        ResponseBody::full(stored.body.clone())
    });
    *resp.status_mut() = stored.status;
    *resp.headers_mut() = stored.headers.clone();
    let age = policy::age_header(stored.lifetime.age(now));
    resp.headers_mut().insert(AGE, age);
    set_status(&mut resp, status);
    resp
}

/// Acts on the origin's answer (or failure) to a request [`lookup`] sent
/// there: invalidates on an unsafe method's success, serves a stale entry
/// in place of a failure within stale-if-error, updates a revalidated
/// entry on a 304, reads what may be stored whole, and says what was done
/// in `X-Cache-Status`. What may be stored comes back as a [`Store`]:
/// commit it (after header_filter, with its decisions) to store it.
/// `filtered`: header_filter handlers may still call `mg.cache.ttl`, so a
/// response only their ttl would make storable is read whole too.
pub async fn finish(
    pending: Pending,
    resp: Result<Response<ResponseBody>, ProxyError>,
    filtered: bool,
) -> Result<(Response<ResponseBody>, Option<Store>), ProxyError> {
    let zone = &pending.zone;
    let stand_in = || {
        let found = pending.stale.as_ref().filter(|f| f.on_error)?;
        let now = SystemTime::now();
        Some(serve(
            &found.stored,
            &pending.method,
            CacheStatus::Stale,
            now,
        ))
    };
    let mut resp = match resp {
        Err(e) => return stand_in().map(|r| (r, None)).ok_or(e),
        Ok(r) if r.status().is_server_error() => match stand_in() {
            Some(stale) => return Ok((stale, None)),
            None => r,
        },
        Ok(r) => r,
    };
    if !pending.method.is_safe() {
        if policy::invalidates(&pending.method, resp.status()) {
            zone.invalidate(&pending.base);
        }
        set_status(&mut resp, CacheStatus::Bypass);
        return Ok((resp, None));
    }
    let status = pending.status;
    if let (StatusCode::NOT_MODIFIED, Some(found), false) = (
        resp.status(),
        &pending.stale,
        pending.conditional.is_empty(),
    ) {
        return Ok((revalidated(&pending, found, resp.headers()), None));
    }
    let skipped = status == CacheStatus::Bypass && !pending.store_bypassed;
    if skipped || pending.method != Method::GET {
        set_status(&mut resp, status);
        return Ok((resp, None));
    }
    // A header_filter ttl may still make the response storable.
    let mut maybe = pending.overrides;
    if filtered && maybe.ttl.is_none() {
        maybe.ttl = Some(Duration::ZERO);
    }
    let allowed = policy::storable(
        &pending.method,
        &pending.req_headers,
        resp.status(),
        resp.headers(),
        &zone.settings,
        &maybe,
    );
    let length = resp
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let fits = length.filter(|n| *n <= zone.def.max_object_size);
    let (Ok(()), Some(length)) = (allowed, fits) else {
        set_status(&mut resp, status);
        return Ok((resp, None));
    };
    let response_time = SystemTime::now();
    let (mut parts, body) = resp.into_parts();
    let body = read_whole(body, length, zone.def.max_object_size).await?;

    let mut headers = parts.headers.clone();
    policy::strip_unstorable(&mut headers);
    parts.headers.insert(
        http::header::HeaderName::from_static(STATUS_HEADER),
        HeaderValue::from_static(status.as_str()),
    );
    let store = Store {
        status: parts.status,
        headers,
        body: body.clone(),
        response_time,
        pending,
    };
    Ok((
        Response::from_parts(parts, ResponseBody::full(body)),
        Some(store),
    ))
}

/// A response [`finish`] read whole and may store; holds the key's lock
/// until committed or dropped.
pub struct Store {
    status: StatusCode,
    /// The upstream's headers, minus what is never stored.
    headers: HeaderMap,
    body: bytes::Bytes,
    response_time: SystemTime,
    pending: Pending,
}

impl Store {
    /// Stores the response unless the rules, with Lua's rewrite/access
    /// decisions and `later` ones (header_filter) on top, refuse.
    pub fn commit(self, later: &Overrides) {
        let Store {
            status,
            headers,
            body,
            response_time,
            pending,
        } = self;
        let zone = &pending.zone;
        let overrides = Overrides {
            ttl: later.ttl.or(pending.overrides.ttl),
            no_store: pending.overrides.no_store || later.no_store,
        };
        let allowed = policy::storable(
            &pending.method,
            &pending.req_headers,
            status,
            &headers,
            &zone.settings,
            &overrides,
        );
        if allowed.is_err() {
            return;
        }
        let lifetime = Lifetime::new(
            &headers,
            pending.request_time,
            response_time,
            &zone.settings,
            &overrides,
        );
        let names = policy::vary_names(&headers).unwrap_or_default();
        let key = if names.is_empty() {
            pending.base.clone()
        } else {
            let id = match &pending.marker {
                Some((id, known)) if *known == names => *id,
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
            status,
            headers,
            body,
            lifetime,
        };
        zone.put(key, Entry::Response(stored));
    }
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

/// The stale entry `found`, confirmed by the origin's 304 (headers
/// `not_modified`): its headers updated, its lifetime recomputed, stored
/// again and served as REVALIDATED.
fn revalidated(
    pending: &Pending,
    found: &Found,
    not_modified: &HeaderMap,
) -> Response<ResponseBody> {
    let now = SystemTime::now();
    let mut stored = found.stored.clone();
    policy::merge_304(&mut stored.headers, not_modified);
    stored.lifetime = Lifetime::new(
        &stored.headers,
        pending.request_time,
        now,
        &pending.zone.settings,
        &pending.overrides,
    );
    let resp = serve(&stored, &pending.method, CacheStatus::Revalidated, now);
    pending.zone.put(found.key.clone(), Entry::Response(stored));
    resp
}

//! The cache step of the request path, for routes with `cache = "NAME"`:
//! [`lookup`] before the upstream (a fresh hit answers at once), then
//! [`finish`] with the upstream's response (stored as it streams when the
//! rules allow, entries invalidated by unsafe methods; the `store`
//! submodule). `proxy` calls both, sends a [`Refresh`] upstream in the
//! background ([`refreshed`]), and knows nothing else of caching.
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
//!   wait (at most `lock_timeout`) for its head and are answered (HIT)
//!   from its response while it streams ([`super::fill`]). If it is not
//!   shared (not storable, too large before it started, failed, or
//!   selecting another Vary variant) they look up again and go to the
//!   origin themselves if there is still nothing to serve. Background
//!   refreshes always take the same lock, so one runs per key.
//! - The client's conditions and Range are the cache's to answer
//!   (the `deliver` submodule): a looked-up request goes upstream without them (with
//!   the stale entry's validators instead, if any), so that the origin's
//!   whole 200 can be stored, and every answer (HIT, STALE, UPDATING,
//!   REVALIDATED, or the origin's 200 on a MISS / EXPIRED as it streams)
//!   becomes a 304, 412, 206 or 416 when they say so. A BYPASS request
//!   goes upstream as sent. The zone's targeted fields (RFC 9213) are
//!   removed from every answer unless it forwards them.
//! - Only GET responses are stored; a HEAD is answered from a stored GET,
//!   and a HEAD miss goes to the origin as HEAD and is not stored (a HEAD
//!   answer must never stand in for a GET). A HEAD finding a stale entry
//!   revalidates it like a GET (a 304 updates the entry).
//! - A response is stored while it streams to the client (any framing):
//!   kept while it stays within `max_object_size`, stored when it ends
//!   cleanly; a larger one (or one whose Content-Length says so) passes
//!   through uncached, and one whose body fails or whose client goes
//!   away is not stored.
//! - `Vary`: the base key holds a small [`Entry::Variants`] marker with
//!   the header names; each variant lives under `base \n id \n variant`.
//! - Lua decisions ([`CacheDecisions`], `mg.cache.*`): `key` replaces the
//!   rendered key; `bypass` skips the lookup (BYPASS, no lock) but still
//!   stores; `no_store` and `ttl` become [`Overrides`]. Those made in
//!   header_filter count too: [`finish`] hands back a [`Store`] that the
//!   caller commits after header_filter ran, with its decisions. The
//!   stored headers are the upstream's, before header_filter changed them.
//!   A background refresh uses the rewrite/access decisions only.
//! - Only final responses reach this step: the upstream client reads past
//!   interim ones (100, 103 Early Hints), and [`policy::storable`] refuses
//!   any 1xx besides, so nothing interim is stored or replayed.
//! - Every answer is counted by its status in the zone's counters
//!   ([`super::stats`]); a background refresh is not an answer.

mod deliver;
mod store;

use std::sync::Arc;
use std::time::SystemTime;

use http::header::{self, AGE, CONTENT_LENGTH, HeaderValue};
use http::request::Parts;
use http::{HeaderMap, HeaderName, Method, Request, Response};

use super::entry::{Entry, Stored, variant_key};
use super::fill::{Follower, Head, Lead, Waited};
use super::lock::Acquired;
use super::policy::{self, CacheControl, Freshness, Overrides};
use super::stream::CacheBody;
use super::zone::Zone;
use crate::body::{Kind, ResponseBody};
use crate::vars::RequestVars;
use deliver::{Client, deliver};

pub use store::{Store, finish, refreshed};

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
    /// Every status.
    pub const ALL: [CacheStatus; 7] = [
        CacheStatus::Hit,
        CacheStatus::Miss,
        CacheStatus::Expired,
        CacheStatus::Stale,
        CacheStatus::Updating,
        CacheStatus::Revalidated,
        CacheStatus::Bypass,
    ];

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
    /// The fill this request leads when it holds the key's lock: the
    /// waiters follow it; dropped (sending them elsewhere) if the answer
    /// is not stored, or when the request is cancelled.
    lead: Option<Lead>,
    /// A background refresh: its answer reaches no client, so it is not
    /// counted.
    background: bool,
}

impl Pending {
    /// Makes the upstream request the cache's own: a looked-up request
    /// leaves its conditions and Range out (the origin's whole answer can
    /// be stored; the cache answers them, see `deliver`) and carries the
    /// stale entry's validators (If-None-Match / If-Modified-Since), if
    /// any. A BYPASS goes as the client sent it.
    pub fn prepare(&self, headers: &mut HeaderMap) {
        if self.status != CacheStatus::Bypass {
            for name in CLIENT_CONDITIONS {
                headers.remove(name);
            }
        }
        for (name, value) in &self.conditional {
            headers.insert(name.clone(), value.clone());
        }
    }

    /// The client's conditions and Range that [`Pending::prepare`] kept
    /// from the origin, for `deliver` to answer.
    fn conditions(&self) -> HeaderMap {
        let mut out = HeaderMap::new();
        if self.status == CacheStatus::Bypass {
            return out;
        }
        for name in CLIENT_CONDITIONS {
            for value in self.req_headers.get_all(name) {
                out.append(name.clone(), value.clone());
            }
        }
        out
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
    /// A stale entry answers now (STALE, or UPDATING when another request
    /// refreshes it); send the refresh (if this request won the lock)
    /// upstream in the background.
    Stale(Response<ResponseBody>, CacheStatus, Option<Box<Refresh>>),
    /// Go to the origin (after [`Pending::prepare`]), then call [`finish`].
    Fetch(Pending),
}

/// Request headers with the client's own conditions and Range, which a
/// cache's own upstream request does not carry: the cache answers them.
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
        // Copied only for a request that goes to the origin ([`fetch`]).
        req_headers: HeaderMap::new(),
        request_time: SystemTime::now(),
        status: CacheStatus::Bypass,
        store_bypassed: false,
        overrides: lua.overrides,
        marker: None,
        stale: None,
        conditional: HeaderMap::new(),
        lead: None,
        background: false,
    };
    let request_cc = CacheControl::parse(&head.headers);
    if !zone.def.methods.contains(&head.method) || request_cc.no_store {
        return fetch(pending, head);
    }
    if lua.bypass {
        pending.store_bypassed = true;
        return fetch(pending, head);
    }
    let max = zone.def.max_object_size;
    let client = Client {
        method: &head.method,
        headers: &head.headers,
    };
    let mut waited = false;
    loop {
        let (variant, found) = find(zone, &mut pending, &head.headers).await;
        let key = variant.as_deref().unwrap_or(&pending.base);
        let now = SystemTime::now();
        pending.request_time = now;
        pending.status = CacheStatus::Miss;
        pending.stale = None;
        pending.conditional.clear();
        if let Some(Entry::Response(stored)) = found.as_deref() {
            match stored.lifetime.freshness(&request_cc, now) {
                Freshness::Fresh => {
                    zone.counters.lookup(CacheStatus::Hit);
                    let resp = serve(stored, &head.method, CacheStatus::Hit, now);
                    return Lookup::Hit(deliver(zone, &client, resp));
                }
                Freshness::StaleWhileRevalidate => {
                    let refresh = zone
                        .locks
                        .try_lead(key, max)
                        .map(|lead| refresh(&pending, head, key, stored, lead));
                    let status = match refresh {
                        Some(_) => CacheStatus::Stale,
                        None => CacheStatus::Updating,
                    };
                    zone.counters.lookup(status);
                    let resp = serve(stored, &head.method, status, now);
                    return Lookup::Stale(deliver(zone, &client, resp), status, refresh);
                }
                Freshness::Stale { serve_on_error } => {
                    pending.status = CacheStatus::Expired;
                    pending.conditional = policy::conditional_headers(&stored.headers);
                    pending.stale = Some(Box::new(Found {
                        key: key.to_owned(),
                        stored: stored.clone(),
                        on_error: serve_on_error,
                    }));
                }
            }
        }
        if !zone.def.lock || waited {
            return fetch(pending, head);
        }
        match zone.locks.acquire(key, max) {
            Acquired::Leader(lead) => {
                pending.lead = Some(lead);
                return fetch(pending, head);
            }
            Acquired::Wait(mut follower) => {
                waited = true;
                match follower.head(zone.def.lock_timeout).await {
                    Waited::Head(h) if h.matches(&head.headers) => {
                        zone.counters.lookup(CacheStatus::Hit);
                        let resp = follow(&h, follower, &head.method);
                        return Lookup::Hit(deliver(zone, &client, resp));
                    }
                    // Another variant, or nothing shared: look again.
                    Waited::Head(_) | Waited::Gone => {}
                    Waited::TimedOut => return fetch(pending, head),
                }
            }
        }
    }
}

/// Sends the request to the origin, with a copy of its headers for
/// [`finish`] (the client's conditions, the Vary variant it stores under).
fn fetch(mut pending: Pending, head: &Parts) -> Lookup {
    pending.req_headers = head.headers.clone();
    Lookup::Fetch(pending)
}

/// The entry a request's key holds, and the variant's own key when the
/// base key holds a Vary marker (else the entry is under the base key);
/// records the marker in `pending`.
async fn find(
    zone: &Zone,
    pending: &mut Pending,
    headers: &HeaderMap,
) -> (Option<String>, Option<Arc<Entry>>) {
    let found = zone.get(&pending.base).await;
    pending.marker = None;
    if let Some(Entry::Variants { id, names }) = found.as_deref() {
        let variant = policy::variant_key(names, headers);
        pending.marker = Some((*id, names.clone()));
        let key = variant_key(&pending.base, *id, &variant);
        let found = zone.get(&key).await;
        return (Some(key), found);
    }
    (None, found)
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
    lead: Lead,
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
        lead: Some(lead),
        background: true,
    };
    Box::new(Refresh { parts, pending })
}

/// A response from a stored entry, with its Age, `status` and the stored
/// body's length (a HEAD too: the length its GET has).
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
    // A body stored whole matches the Content-Length it came with; one
    // stored from a chunked or close-delimited response gets its length.
    if stored.status != http::StatusCode::NO_CONTENT && !resp.headers().contains_key(CONTENT_LENGTH)
    {
        let len = HeaderValue::from(stored.body.len());
        resp.headers_mut().insert(CONTENT_LENGTH, len);
    }
    let age = policy::age_header(stored.lifetime.age(now));
    resp.headers_mut().insert(AGE, age);
    set_status(&mut resp, status);
    resp
}

/// A response from another request's fill (`head`), its body following
/// the fill; answered as HIT, with the Age of the head.
fn follow(head: &Head, follower: Follower, method: &Method) -> Response<ResponseBody> {
    let body = if *method == Method::HEAD {
        ResponseBody::empty()
    } else {
        ResponseBody::from_kind(Kind::Cache(Box::new(CacheBody::follow(follower))))
    };
    let mut resp = Response::new(body);
    *resp.status_mut() = head.status;
    *resp.headers_mut() = head.headers.clone();
    let age = policy::age_header(head.lifetime.age(SystemTime::now()));
    resp.headers_mut().insert(AGE, age);
    set_status(&mut resp, CacheStatus::Hit);
    resp
}

fn set_status(resp: &mut Response<ResponseBody>, status: CacheStatus) {
    resp.headers_mut().insert(
        http::header::HeaderName::from_static(STATUS_HEADER),
        HeaderValue::from_static(status.as_str()),
    );
}

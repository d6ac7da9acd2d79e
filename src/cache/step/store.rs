//! The cache step once the upstream answered: [`finish`] acts on the
//! answer (invalidation, a stale stand-in for a failure, a 304
//! revalidation) and, when it may be stored, tees its body into the
//! request's [`Fill`] and hands back a [`Store`], which the caller
//! commits once header_filter ran; [`refreshed`] does all of it for a
//! background refresh. Nothing is read ahead of the client: the body is
//! stored as it streams (see [`super::super::fill`]).

use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::header::HeaderValue;
use http::{HeaderMap, Method, Response, StatusCode};
use http_body_util::BodyExt;

use super::deliver::{Client, content_length, deliver};
use super::{CacheStatus, Found, Pending, STATUS_HEADER, serve, set_status};
use crate::body::{Kind, ResponseBody};
use crate::cache::entry::{Entry, new_variants_id, variant_key};
use crate::cache::fill::{Fill, Head, Lead, Plan};
use crate::cache::policy::{self, Lifetime, Overrides};
use crate::cache::stream::CacheBody;
use crate::error::ProxyError;
use crate::worker_local::WorkerLocal;

/// What [`finish`] answers: the response, and what may be stored.
type Finished = Result<(Response<ResponseBody>, Option<Store>), ProxyError>;

/// Acts on the origin's answer (or failure) to a request [`super::lookup`]
/// sent there: invalidates on an unsafe method's success, serves a stale
/// entry in place of a failure within stale-if-error, updates a
/// revalidated entry on a 304, and says what was done (returned, and in
/// `X-Cache-Status`). What may be stored streams through a tee and comes
/// back as a [`Store`]: commit it (after header_filter, with its
/// decisions) to store the body when it ends. `filtered`: header_filter
/// handlers may still call `mg.cache.ttl`, so a response only their ttl
/// would make storable is teed too. `worker` is the worker thread's state:
/// a tee whose client leaves early finishes on its task set.
pub async fn finish(
    pending: Pending,
    resp: Result<Response<ResponseBody>, ProxyError>,
    filtered: bool,
    worker: &Rc<WorkerLocal>,
) -> (Finished, CacheStatus) {
    let zone = pending.zone.clone();
    let background = pending.background;
    let method = pending.method.clone();
    let conditions = pending.conditions();
    let (finished, status) = answer(pending, resp, filtered, worker);
    if !background {
        zone.counters.lookup(status);
    }
    let finished = finished.map(|(resp, store)| {
        let client = Client {
            method: &method,
            headers: &conditions,
        };
        (deliver(&zone, &client, resp), store)
    });
    (finished, status)
}

/// [`finish`], with the status answered.
fn answer(
    mut pending: Pending,
    resp: Result<Response<ResponseBody>, ProxyError>,
    filtered: bool,
    worker: &Rc<WorkerLocal>,
) -> (Finished, CacheStatus) {
    let zone = pending.zone.clone();
    let stand_in = |pending: &Pending| {
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
        Err(e) => {
            return match stand_in(&pending) {
                Some(stale) => (Ok((stale, None)), CacheStatus::Stale),
                None => (Err(e), pending.status),
            };
        }
        Ok(r) if r.status().is_server_error() => match stand_in(&pending) {
            Some(stale) => return (Ok((stale, None)), CacheStatus::Stale),
            None => r,
        },
        Ok(r) => r,
    };
    if !pending.method.is_safe() {
        if policy::invalidates(&pending.method, resp.status()) {
            zone.invalidate(&pending.base);
        }
        set_status(&mut resp, CacheStatus::Bypass);
        return (Ok((resp, None)), CacheStatus::Bypass);
    }
    let status = pending.status;
    if let (StatusCode::NOT_MODIFIED, Some(found), false) = (
        resp.status(),
        &pending.stale,
        pending.conditional.is_empty(),
    ) {
        let resp = revalidated(&pending, found, resp.headers());
        return (Ok((resp, None)), CacheStatus::Revalidated);
    }
    let skipped = status == CacheStatus::Bypass && !pending.store_bypassed;
    if skipped || pending.method != Method::GET {
        set_status(&mut resp, status);
        return (Ok((resp, None)), status);
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
    let length = content_length(resp.headers());
    let max = zone.def.max_object_size;
    let skip = if allowed.is_err() {
        zone.counters.not_storable();
        true
    } else if length.is_some_and(|n| n > max) {
        zone.counters.too_large();
        true
    } else {
        false
    };
    if skip {
        // Dropping `pending` sends the lock's waiters to the origin.
        set_status(&mut resp, status);
        return (Ok((resp, None)), status);
    }
    let lead = pending
        .lead
        .take()
        .unwrap_or_else(|| Lead::new(Arc::new(Fill::new(max, None))));
    let fill = lead.fill().clone();
    let response_time = SystemTime::now();
    let (mut parts, body) = resp.into_parts();
    let mut headers = parts.headers.clone();
    policy::strip_unstorable(&mut headers);
    parts.headers.insert(
        http::header::HeaderName::from_static(STATUS_HEADER),
        HeaderValue::from_static(status.as_str()),
    );
    let store = Store {
        status: parts.status,
        headers,
        response_time,
        pending,
        fill,
    };
    let body = ResponseBody::from_kind(Kind::Cache(Box::new(CacheBody::tee(
        body,
        lead,
        worker.clone(),
    ))));
    (Ok((Response::from_parts(parts, body), Some(store))), status)
}

/// A response [`finish`] may store, its body teed into `fill`; dropped
/// uncommitted, nothing is stored and the lock's waiters go elsewhere.
pub struct Store {
    status: StatusCode,
    /// The upstream's headers, minus what is never stored.
    headers: HeaderMap,
    response_time: SystemTime,
    pending: Pending,
    fill: Arc<Fill>,
}

impl Store {
    /// Decides, with Lua's rewrite/access decisions and `later` ones
    /// (header_filter) on top, whether the body is stored when it ends;
    /// if so, the lock's waiters are answered from it as it streams.
    pub fn commit(mut self, later: &Overrides) {
        let pending = &self.pending;
        let zone = &pending.zone;
        let overrides = Overrides {
            ttl: later.ttl.or(pending.overrides.ttl),
            no_store: pending.overrides.no_store || later.no_store,
        };
        let allowed = policy::storable(
            &pending.method,
            &pending.req_headers,
            self.status,
            &self.headers,
            &zone.settings,
            &overrides,
        );
        if allowed.is_err() {
            zone.counters.not_storable();
            return;
        }
        let lifetime = Lifetime::new(
            &self.headers,
            pending.request_time,
            self.response_time,
            &zone.settings,
            &overrides,
        );
        let names = policy::vary_names(&self.headers).unwrap_or_default();
        let (key, marker, vary) = if names.is_empty() {
            (pending.base.clone(), None, None)
        } else {
            let (id, marker) = match &pending.marker {
                Some((id, known)) if *known == names => (*id, None),
                _ => {
                    let id = new_variants_id(self.response_time);
                    let marker = Entry::Variants {
                        id,
                        names: names.clone(),
                    };
                    (id, Some((pending.base.clone(), marker)))
                }
            };
            let variant = policy::variant_key(&names, &pending.req_headers);
            let key = variant_key(&pending.base, id, &variant);
            (key, marker, Some((names, variant)))
        };
        let head = Arc::new(Head {
            status: self.status,
            headers: std::mem::take(&mut self.headers),
            lifetime,
            vary,
        });
        let plan = Plan {
            zone: zone.clone(),
            key,
            marker,
        };
        self.fill.commit(head, plan);
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        // A no-op once committed.
        self.fill.abandon();
    }
}

/// A background refresh's answer (`resp` to the request `pending`
/// describes): handled like a client's, stored with the rewrite/access
/// decisions, its body read to the end so that it is stored (and the
/// lock's waiters follow it). Returns how many body bytes were read.
pub async fn refreshed(
    pending: Pending,
    resp: Result<Response<ResponseBody>, ProxyError>,
    worker: &Rc<WorkerLocal>,
) -> Result<u64, ProxyError> {
    let (resp, store) = finish(pending, resp, false, worker).await.0?;
    if let Some(store) = store {
        store.commit(&Overrides::default());
    }
    let mut body = resp.into_body();
    let mut read = 0;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| ProxyError::UpstreamBody(e.to_string()))?;
        if let Some(data) = frame.data_ref() {
            read += data.len() as u64;
        }
    }
    Ok(read)
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

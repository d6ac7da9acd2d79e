//! RFC 9111 shared-cache rules: whether a response may be stored
//! ([`storable`]), for how long it is fresh ([`Lifetime`],
//! [`freshness_lifetime`], [`age`]), whether a stored entry may answer a
//! request now ([`Freshness`]), which variant a request wants ([`vary_names`],
//! [`variant_key`]), how to revalidate ([`conditional_headers`]) and how a
//! 304 updates an entry ([`merge_304`]).
//!
//! Plain functions over `http` types and `SystemTime`: no I/O, no clocks
//! (the caller passes every time), no hyper, no Lua. The zone's defaults
//! arrive as [`Settings`] and Lua's decisions as [`Overrides`].
//!
//! Decisions beyond the RFC, in one place:
//! - Heuristic freshness is the zone's `default_ttl`, never 10% of
//!   Last-Modified; it applies to heuristically cacheable statuses and to
//!   `public` responses without explicit freshness.
//! - Lua's `ttl` answers *how long*: it replaces every freshness input
//!   (max-age, s-maxage, Expires, response no-cache) and makes any
//!   status but 206/304/1xx storable. It never answers *whether sharing is
//!   safe*: no-store, private, Set-Cookie, Authorization and `Vary: *`
//!   still refuse, and Lua's `no_store` always wins.
//! - `private` and `no-cache` with field names count as the bare directives.
//! - A directive given twice keeps its first value (RFC 9111 §4.2.1).
//! - must-revalidate, proxy-revalidate and response no-cache forbid every
//!   kind of stale serving. `s-maxage` (which implies proxy-revalidate)
//!   forbids the zone's default windows and client max-stale, but the
//!   response's own stale-while-revalidate / stale-if-error still apply,
//!   so the common `s-maxage=60, stale-while-revalidate=30` works.
//! - Targeted fields (RFC 9213, the zone's `targeted` list, by default
//!   `CDN-Cache-Control`): the first one present with a valid, non-empty
//!   value replaces Cache-Control *and* Expires for every storing and
//!   freshness decision ([`response_directives`]); request directives
//!   still come from the request's Cache-Control.
//! - An `Age` list (or several lines) counts by its first member (RFC
//!   9111 §5.1). An `Age` that is not delta-seconds makes the response as
//!   old as can be (stale on arrival, revalidated before use) rather than
//!   ignored: a cache must never take a response for fresher than it is,
//!   as §4.2.1 asks of invalid freshness information.

use std::time::{Duration, SystemTime};

use http::header::{AGE, AUTHORIZATION, DATE, EXPIRES, SET_COOKIE};
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};

fn http_date(v: &HeaderValue) -> Option<SystemTime> {
    httpdate::parse_http_date(v.to_str().ok()?.trim()).ok()
}

/// The targeted field a zone uses when its definition names none.
pub const CDN_CACHE_CONTROL: &str = "cdn-cache-control";

/// A zone's defaults, compiled from `[cache.NAME]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Freshness of a storable response that states none (our only
    /// heuristic).
    pub default_ttl: Duration,
    /// Stale-while-revalidate window when the response gives none.
    pub stale_while_revalidate: Duration,
    /// Stale-if-error window when the response gives none.
    pub stale_if_error: Duration,
    /// Store responses carrying `Set-Cookie` (off: a cookie is usually
    /// one user's).
    pub store_set_cookie: bool,
    /// Targeted cache-control fields (RFC 9213) this cache obeys instead
    /// of Cache-Control, most specific first.
    pub targeted: Vec<HeaderName>,
}

impl Default for Settings {
    /// No heuristic freshness, no stale windows, cookies not stored, and
    /// `CDN-Cache-Control` as the one targeted field.
    fn default() -> Settings {
        Settings {
            default_ttl: Duration::ZERO,
            stale_while_revalidate: Duration::ZERO,
            stale_if_error: Duration::ZERO,
            store_set_cookie: false,
            targeted: vec![HeaderName::from_static(CDN_CACHE_CONTROL)],
        }
    }
}

/// The response directives that govern this cache, and whether they came
/// from a targeted field (then Cache-Control and Expires are ignored, RFC
/// 9213 §2.1).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Directives {
    /// The directives.
    pub cc: CacheControl,
    /// They came from a targeted field.
    pub targeted: bool,
}

/// The directives of the first of `settings.targeted` the response
/// carries with a valid, non-empty value, else its Cache-Control.
pub fn response_directives(resp_headers: &HeaderMap, settings: &Settings) -> Directives {
    match targeted::select(resp_headers, &settings.targeted) {
        Some(cc) => Directives { cc, targeted: true },
        None => Directives {
            cc: CacheControl::parse(resp_headers),
            targeted: false,
        },
    }
}

/// Lua's decisions for one request (`mg.cache.ttl`, `mg.cache.no_store`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Overrides {
    /// Fresh for exactly this long, whatever the response says about
    /// freshness; also makes statuses without heuristic freshness storable.
    pub ttl: Option<Duration>,
    /// Never store; beats everything, `ttl` included.
    pub no_store: bool,
}

/// Why a response was not stored (for logs and `$cache_status` reasoning).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotStored {
    /// The request method is neither GET nor HEAD.
    Method,
    /// Lua called `mg.cache.no_store()`.
    Override,
    /// The request said `Cache-Control: no-store`.
    RequestNoStore,
    /// The response said `Cache-Control: no-store`.
    ResponseNoStore,
    /// The response said `Cache-Control: private`.
    Private,
    /// The request carried Authorization and the response did not say
    /// public, s-maxage or must-revalidate (RFC 9111 §3.5).
    Authorization,
    /// The response sets a cookie and the zone does not store those.
    SetCookie,
    /// `Vary: *`: no later request can be shown to match.
    VaryStar,
    /// The status is never stored (1xx, 206, 304) or has no heuristic
    /// freshness and the response states none.
    Status,
}

impl NotStored {
    /// A short stable name for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            NotStored::Method => "method",
            NotStored::Override => "lua no_store",
            NotStored::RequestNoStore => "request no-store",
            NotStored::ResponseNoStore => "response no-store",
            NotStored::Private => "private",
            NotStored::Authorization => "authorization",
            NotStored::SetCookie => "set-cookie",
            NotStored::VaryStar => "vary *",
            NotStored::Status => "status",
        }
    }
}

impl std::fmt::Display for NotStored {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Statuses with heuristic freshness (RFC 9110 §15.1), minus 206: we do
/// not store or combine partial content.
fn heuristically_cacheable(status: StatusCode) -> bool {
    matches!(
        status.as_u16(),
        200 | 203 | 204 | 300 | 301 | 308 | 404 | 405 | 410 | 414 | 501
    )
}

/// May this response be stored (RFC 9111 §3, shared cache)? Checks in
/// order: method, Lua no_store, request and response no-store, status,
/// `Vary: *`, private, Authorization, Set-Cookie, freshness. HEAD
/// responses are storable, but the caller must never let one answer a GET
/// (nginx's way: fetch GET on a HEAD miss). The zone's own `methods` list
/// is the caller's to check.
pub fn storable(
    method: &Method,
    req_headers: &HeaderMap,
    status: StatusCode,
    resp_headers: &HeaderMap,
    settings: &Settings,
    overrides: &Overrides,
) -> Result<(), NotStored> {
    if method != Method::GET && method != Method::HEAD {
        return Err(NotStored::Method);
    }
    if overrides.no_store {
        return Err(NotStored::Override);
    }
    if CacheControl::parse(req_headers).no_store {
        return Err(NotStored::RequestNoStore);
    }
    let Directives { cc, targeted } = response_directives(resp_headers, settings);
    if cc.no_store {
        return Err(NotStored::ResponseNoStore);
    }
    let code = status.as_u16();
    if code < 200 || code == 206 || code == 304 {
        return Err(NotStored::Status);
    }
    if vary_names(resp_headers).is_none() {
        return Err(NotStored::VaryStar);
    }
    if cc.private {
        return Err(NotStored::Private);
    }
    let shared_ok = cc.public || cc.s_maxage.is_some() || cc.must_revalidate;
    if req_headers.contains_key(AUTHORIZATION) && !shared_ok {
        return Err(NotStored::Authorization);
    }
    if resp_headers.contains_key(SET_COOKIE) && !settings.store_set_cookie {
        return Err(NotStored::SetCookie);
    }
    let explicit = overrides.ttl.is_some()
        || cc.max_age.is_some()
        || cc.s_maxage.is_some()
        || (!targeted && resp_headers.contains_key(EXPIRES))
        || cc.public;
    if !explicit && !heuristically_cacheable(status) {
        return Err(NotStored::Status);
    }
    Ok(())
}

/// How long the response is fresh from its origin's point of view (RFC
/// 9111 §4.2.1): Lua's ttl, else zero for response no-cache, else
/// s-maxage, else max-age, else Expires − Date (Date missing or invalid:
/// `response_time`; Expires invalid or past: zero; ignored under a
/// targeted field), else `default_ttl`. The directives are
/// [`response_directives`]'.
pub fn freshness_lifetime(
    resp_headers: &HeaderMap,
    response_time: SystemTime,
    settings: &Settings,
    overrides: &Overrides,
) -> Duration {
    match overrides.ttl {
        Some(ttl) => ttl,
        None => {
            let directives = response_directives(resp_headers, settings);
            lifetime_from(&directives, resp_headers, response_time, settings)
        }
    }
}

fn lifetime_from(
    directives: &Directives,
    headers: &HeaderMap,
    response_time: SystemTime,
    settings: &Settings,
) -> Duration {
    let cc = &directives.cc;
    if cc.no_cache {
        return Duration::ZERO;
    }
    if let Some(lifetime) = cc.s_maxage.or(cc.max_age) {
        return lifetime;
    }
    let expires = headers.get(EXPIRES).filter(|_| !directives.targeted);
    let Some(expires) = expires else {
        return settings.default_ttl;
    };
    let Some(expires) = http_date(expires) else {
        return Duration::ZERO;
    };
    let date = headers
        .get(DATE)
        .and_then(http_date)
        .unwrap_or(response_time);
    expires.duration_since(date).unwrap_or(Duration::ZERO)
}

/// The response's age when it arrived (RFC 9111 §4.2.3
/// `corrected_initial_age`): the larger of its apparent age (arrival −
/// Date, never negative) and its Age header plus the request's round trip.
pub fn initial_age(
    resp_headers: &HeaderMap,
    request_time: SystemTime,
    response_time: SystemTime,
) -> Duration {
    let apparent = resp_headers
        .get(DATE)
        .and_then(http_date)
        .and_then(|date| response_time.duration_since(date).ok())
        .unwrap_or(Duration::ZERO);
    let delay = response_time
        .duration_since(request_time)
        .unwrap_or(Duration::ZERO);
    apparent.max(age_value(resp_headers).saturating_add(delay))
}

/// The `Age` a response arrived with (RFC 9111 §5.1): zero when absent;
/// the first member of the first line when it is a list or repeated; as
/// old as can be (2^31 s) when that member is not delta-seconds, so that
/// the response is never taken for fresher than it is.
fn age_value(resp_headers: &HeaderMap) -> Duration {
    let Some(line) = resp_headers.get(AGE) else {
        return Duration::ZERO;
    };
    let line = String::from_utf8_lossy(line.as_bytes());
    let first = line.split(',').next().unwrap_or_default();
    delta_seconds(first).unwrap_or(Duration::from_secs(DELTA_MAX))
}

/// The response's age at `now` (RFC 9111 §4.2.3 `current_age`): its
/// initial age plus the time it has been resident here.
pub fn age(
    resp_headers: &HeaderMap,
    request_time: SystemTime,
    response_time: SystemTime,
    now: SystemTime,
) -> Duration {
    let resident = now.duration_since(response_time).unwrap_or(Duration::ZERO);
    initial_age(resp_headers, request_time, response_time).saturating_add(resident)
}

/// What an entry remembers about time, computed once when it is stored
/// (and again after a 304 merge). Plain data, for the tiers to persist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lifetime {
    /// Freshness lifetime ([`freshness_lifetime`]).
    pub fresh_for: Duration,
    /// Age on arrival ([`initial_age`]).
    pub initial_age: Duration,
    /// When the response arrived (`response_time`).
    pub stored_at: SystemTime,
    /// How long past freshness it may be served while refreshing:
    /// the response's directive, else the zone's default; zero when
    /// stale serving is forbidden.
    pub stale_while_revalidate: Duration,
    /// How long past freshness it may be served when the origin fails;
    /// chosen like `stale_while_revalidate`.
    pub stale_if_error: Duration,
    /// Once stale, it must be revalidated: must-revalidate,
    /// proxy-revalidate, s-maxage or (without a Lua ttl) no-cache. Client
    /// max-stale is then ignored.
    pub must_revalidate: bool,
}

#[cfg(test)]
impl Lifetime {
    /// For unit tests: stored at `stored_at`, fresh for `fresh_for`, no
    /// initial age, no stale windows.
    pub(crate) fn fresh(fresh_for: Duration, stored_at: SystemTime) -> Lifetime {
        Lifetime {
            fresh_for,
            initial_age: Duration::ZERO,
            stored_at,
            stale_while_revalidate: Duration::ZERO,
            stale_if_error: Duration::ZERO,
            must_revalidate: false,
        }
    }
}

/// May a stored entry answer a request now?
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freshness {
    /// Serve it as is.
    Fresh,
    /// Stale but servable: serve it now and refresh it in the background
    /// (within stale-while-revalidate, or the client allowed it with
    /// max-stale).
    StaleWhileRevalidate,
    /// Revalidate (or refetch) before serving. If the origin fails, it may
    /// be served anyway when `serve_on_error` (still fresh, or within
    /// stale-if-error).
    Stale {
        /// The entry may stand in for a failed origin response.
        serve_on_error: bool,
    },
}

impl Lifetime {
    /// The lifetime of a response that arrived at `response_time` for a
    /// request sent at `request_time`, by [`response_directives`].
    pub fn new(
        resp_headers: &HeaderMap,
        request_time: SystemTime,
        response_time: SystemTime,
        settings: &Settings,
        overrides: &Overrides,
    ) -> Lifetime {
        let directives = response_directives(resp_headers, settings);
        let fresh_for = match overrides.ttl {
            Some(ttl) => ttl,
            None => lifetime_from(&directives, resp_headers, response_time, settings),
        };
        let cc = directives.cc;
        let forbid_stale =
            cc.must_revalidate || cc.proxy_revalidate || (cc.no_cache && overrides.ttl.is_none());
        let implied = cc.s_maxage.is_some() && overrides.ttl.is_none();
        let (swr, sie) = if forbid_stale {
            (Duration::ZERO, Duration::ZERO)
        } else if implied {
            (
                cc.stale_while_revalidate.unwrap_or(Duration::ZERO),
                cc.stale_if_error.unwrap_or(Duration::ZERO),
            )
        } else {
            (
                cc.stale_while_revalidate
                    .unwrap_or(settings.stale_while_revalidate),
                cc.stale_if_error.unwrap_or(settings.stale_if_error),
            )
        };
        Lifetime {
            fresh_for,
            initial_age: initial_age(resp_headers, request_time, response_time),
            stored_at: response_time,
            stale_while_revalidate: swr,
            stale_if_error: sie,
            must_revalidate: forbid_stale || implied,
        }
    }

    /// The entry's age at `now`.
    pub fn age(&self, now: SystemTime) -> Duration {
        let resident = now.duration_since(self.stored_at).unwrap_or(Duration::ZERO);
        self.initial_age.saturating_add(resident)
    }

    /// When the entry stops being fresh.
    pub fn expires_at(&self) -> SystemTime {
        let left = self.fresh_for.saturating_sub(self.initial_age);
        self.stored_at.checked_add(left).unwrap_or(self.stored_at)
    }

    /// The last moment the entry may be served without the origin's word
    /// (end of the longer stale window). After it, it is only good for a
    /// conditional request; tiers may use it to pick what to evict.
    pub fn keep_until(&self) -> SystemTime {
        let window = self.stale_while_revalidate.max(self.stale_if_error);
        let end = self.expires_at();
        end.checked_add(window).unwrap_or(end)
    }

    /// May the entry answer a request carrying `request` directives at
    /// `now`? Request no-cache, an exceeded max-age or min-fresh force a
    /// revalidation; max-stale widens the stale window unless the
    /// response forbids stale serving.
    pub fn freshness(&self, request: &CacheControl, now: SystemTime) -> Freshness {
        let age = self.age(now);
        // Fresh while the lifetime exceeds the age (RFC 9111 §4.2).
        let staleness = age.checked_sub(self.fresh_for);
        let serve_on_error = match staleness {
            None => true,
            Some(s) => s < self.stale_if_error,
        };
        let revalidate = Freshness::Stale { serve_on_error };
        let too_old = request.max_age.is_some_and(|max| age > max);
        if request.no_cache || too_old {
            return revalidate;
        }
        let Some(staleness) = staleness else {
            let left = self.fresh_for - age;
            return match request.min_fresh {
                Some(min) if left < min => revalidate,
                _ => Freshness::Fresh,
            };
        };
        if staleness < self.stale_while_revalidate {
            return Freshness::StaleWhileRevalidate;
        }
        let client_ok = request.max_stale.is_some_and(|max| staleness <= max);
        if client_ok && !self.must_revalidate {
            return Freshness::StaleWhileRevalidate;
        }
        revalidate
    }
}

/// The `Age` header for an entry of this age: whole seconds, rounded
/// down, at most 2^31.
pub fn age_header(age: Duration) -> HeaderValue {
    HeaderValue::from(age.as_secs().min(DELTA_MAX))
}

/// Does a response with `status` to a request with `method` invalidate
/// the stored entries of its URL (RFC 9111 §4.4)? Yes for unsafe methods
/// (POST, PUT, DELETE, PATCH and unknown ones; not CONNECT) with a 2xx or
/// 3xx status. Invalidating Location / Content-Location is the caller's.
pub fn invalidates(method: &Method, status: StatusCode) -> bool {
    let unsafe_method = !method.is_safe() && method != Method::CONNECT;
    unsafe_method && (status.is_success() || status.is_redirection())
}

mod directives;
mod revalidate;
mod targeted;
mod vary;

pub use directives::CacheControl;
use directives::{DELTA_MAX, delta_seconds};

pub use revalidate::{conditional_headers, merge_304, strip_unstorable};
pub use vary::{variant_key, vary_names};

#[cfg(test)]
mod tests;

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

use std::time::{Duration, SystemTime};

use http::header::{AUTHORIZATION, CACHE_CONTROL, DATE, EXPIRES, SET_COOKIE};
use http::{HeaderMap, HeaderValue, Method, StatusCode};

/// The largest delta-seconds we represent; larger values (and overflows)
/// become this, as RFC 9111 §1.2.2 asks.
const DELTA_MAX: u64 = 1 << 31;

/// The `Cache-Control` directives of a request or a response. Each
/// directive is meaningful on one side only; the other side ignores it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CacheControl {
    /// Neither side may be stored (request or response).
    pub no_store: bool,
    /// Response: store, but revalidate before every use. Request: the
    /// client wants a validated answer. Field names, if any, are ignored.
    pub no_cache: bool,
    /// Response: for one user; a shared cache never stores it.
    pub private: bool,
    /// Response: storable even where it would not be (Authorization,
    /// statuses without heuristic freshness).
    pub public: bool,
    /// Response: freshness lifetime. Request: the oldest entry accepted.
    pub max_age: Option<Duration>,
    /// Response: freshness lifetime for shared caches; beats `max_age`.
    pub s_maxage: Option<Duration>,
    /// Response: once stale, never served without revalidation.
    pub must_revalidate: bool,
    /// Response: `must_revalidate` for shared caches only (so: for us).
    pub proxy_revalidate: bool,
    /// Response (RFC 5861): how long past freshness it may be served while
    /// a background request refreshes it.
    pub stale_while_revalidate: Option<Duration>,
    /// Response (RFC 5861): how long past freshness it may be served when
    /// the origin fails.
    pub stale_if_error: Option<Duration>,
    /// Request: answer from the cache or with 504, never from the origin.
    /// The caller acts on it; [`Lifetime::freshness`] does not.
    pub only_if_cached: bool,
    /// Request: stale entries are acceptable up to this much staleness;
    /// a bare `max-stale` is `Duration::MAX`.
    pub max_stale: Option<Duration>,
    /// Request: the entry must stay fresh at least this much longer.
    pub min_fresh: Option<Duration>,
}

impl CacheControl {
    /// Parses every `Cache-Control` line of `headers`: comma lists,
    /// quoted values (commas inside quotes do not split), directive names
    /// in any case. Garbage is tolerated: an unknown directive is skipped,
    /// a bad or missing value drops that one directive, and the
    /// restrictive flags (no-store, no-cache, private, must-revalidate,
    /// proxy-revalidate) count whatever argument they carry.
    pub fn parse(headers: &HeaderMap) -> CacheControl {
        let mut cc = CacheControl::default();
        for line in headers.get_all(CACHE_CONTROL) {
            let line = String::from_utf8_lossy(line.as_bytes());
            for item in split_list(&line) {
                let (name, value) = match item.split_once('=') {
                    Some((n, v)) => (n, Some(unquote(v.trim()))),
                    None => (item, None),
                };
                cc.apply(&name.trim().to_ascii_lowercase(), value);
            }
        }
        cc
    }

    /// Records one directive; `value` is `Some(None)` when it was present
    /// but malformed (an unterminated quote).
    fn apply(&mut self, name: &str, value: Option<Option<String>>) {
        let seconds = || value.clone().flatten().as_deref().and_then(delta_seconds);
        let first = |slot: &mut Option<Duration>, v: Option<Duration>| {
            if slot.is_none() {
                *slot = v;
            }
        };
        match name {
            "no-store" => self.no_store = true,
            "no-cache" => self.no_cache = true,
            "private" => self.private = true,
            "public" => self.public |= value.is_none(),
            "must-revalidate" => self.must_revalidate = true,
            "proxy-revalidate" => self.proxy_revalidate = true,
            "only-if-cached" => self.only_if_cached = true,
            "max-age" => first(&mut self.max_age, seconds()),
            "s-maxage" => first(&mut self.s_maxage, seconds()),
            "stale-while-revalidate" => first(&mut self.stale_while_revalidate, seconds()),
            "stale-if-error" => first(&mut self.stale_if_error, seconds()),
            "min-fresh" => first(&mut self.min_fresh, seconds()),
            "max-stale" => {
                let v = if value.is_none() {
                    Some(Duration::MAX)
                } else {
                    seconds()
                };
                first(&mut self.max_stale, v);
            }
            _ => {}
        }
    }
}

/// Splits a comma list, leaving commas inside quoted strings alone.
fn split_list(s: &str) -> Vec<&str> {
    let (mut items, mut start, mut quoted, mut escaped) = (Vec::new(), 0, false, false);
    for (i, c) in s.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            ',' if !quoted => {
                items.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    items.push(&s[start..]);
    items.into_iter().filter(|i| !i.trim().is_empty()).collect()
}

/// A token as is, a quoted string without its quotes and escapes, `None`
/// for an unterminated quote.
fn unquote(v: &str) -> Option<String> {
    let Some(inner) = v.strip_prefix('"') else {
        return Some(v.to_owned());
    };
    let inner = inner.strip_suffix('"')?;
    let (mut out, mut escaped) = (String::with_capacity(inner.len()), false);
    for c in inner.chars() {
        if escaped || c != '\\' {
            out.push(c);
            escaped = false;
        } else {
            escaped = true;
        }
    }
    Some(out)
}

/// RFC 9111 delta-seconds: digits only, saturating at 2^31.
fn delta_seconds(v: &str) -> Option<Duration> {
    let v = v.trim();
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let secs = v.parse::<u64>().unwrap_or(DELTA_MAX).min(DELTA_MAX);
    Some(Duration::from_secs(secs))
}

fn http_date(v: &HeaderValue) -> Option<SystemTime> {
    httpdate::parse_http_date(v.to_str().ok()?.trim()).ok()
}

/// A zone's defaults, compiled from `[cache.NAME]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
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
    let cc = CacheControl::parse(resp_headers);
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
        || resp_headers.contains_key(EXPIRES)
        || cc.public;
    if !explicit && !heuristically_cacheable(status) {
        return Err(NotStored::Status);
    }
    Ok(())
}

/// How long the response is fresh from its origin's point of view (RFC
/// 9111 §4.2.1): Lua's ttl, else zero for response no-cache, else
/// s-maxage, else max-age, else Expires − Date (Date missing or invalid:
/// `response_time`; Expires invalid or past: zero), else `default_ttl`.
pub fn freshness_lifetime(
    resp_headers: &HeaderMap,
    response_time: SystemTime,
    settings: &Settings,
    overrides: &Overrides,
) -> Duration {
    match overrides.ttl {
        Some(ttl) => ttl,
        None => {
            let cc = CacheControl::parse(resp_headers);
            lifetime_from(&cc, resp_headers, response_time, settings)
        }
    }
}

fn lifetime_from(
    cc: &CacheControl,
    headers: &HeaderMap,
    response_time: SystemTime,
    settings: &Settings,
) -> Duration {
    if cc.no_cache {
        return Duration::ZERO;
    }
    if let Some(lifetime) = cc.s_maxage.or(cc.max_age) {
        return lifetime;
    }
    let Some(expires) = headers.get(EXPIRES) else {
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
    let age_value = resp_headers
        .get(http::header::AGE)
        .and_then(|v| delta_seconds(&String::from_utf8_lossy(v.as_bytes())))
        .unwrap_or(Duration::ZERO);
    let delay = response_time
        .duration_since(request_time)
        .unwrap_or(Duration::ZERO);
    apparent.max(age_value.saturating_add(delay))
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
    /// request sent at `request_time`.
    pub fn new(
        resp_headers: &HeaderMap,
        request_time: SystemTime,
        response_time: SystemTime,
        settings: &Settings,
        overrides: &Overrides,
    ) -> Lifetime {
        let cc = CacheControl::parse(resp_headers);
        let fresh_for = match overrides.ttl {
            Some(ttl) => ttl,
            None => lifetime_from(&cc, resp_headers, response_time, settings),
        };
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

mod revalidate;
mod vary;

pub use revalidate::{conditional_headers, merge_304, strip_unstorable};
pub use vary::{variant_key, vary_names};

#[cfg(test)]
mod tests;

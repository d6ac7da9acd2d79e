//! Cache directives (RFC 9111 §5.2): [`CacheControl`], parsed leniently
//! from `Cache-Control` lines, and the delta-seconds they carry. What the
//! directives mean for storing and freshness is the parent's.

use std::time::Duration;

use http::HeaderMap;
use http::header::CACHE_CONTROL;

/// The largest delta-seconds we represent; larger values (and overflows)
/// become this, as RFC 9111 §1.2.2 asks.
pub(super) const DELTA_MAX: u64 = 1 << 31;

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
    /// The caller acts on it; [`super::Lifetime::freshness`] does not.
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
    pub(super) fn apply(&mut self, name: &str, value: Option<Option<String>>) {
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
pub(super) fn delta_seconds(v: &str) -> Option<Duration> {
    let v = v.trim();
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let secs = v.parse::<u64>().unwrap_or(DELTA_MAX).min(DELTA_MAX);
    Some(Duration::from_secs(secs))
}

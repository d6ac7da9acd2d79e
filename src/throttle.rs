//! Rate-limit zones on the request path: a compiled [`Zone`] (its key
//! template and its buckets or counters, kept across reloads while its
//! definition is unchanged), what a route's zones decide for one request,
//! and the `RateLimit-*` / `Retry-After` headers that follow. The counting
//! itself is [`crate::limit`]'s; building the response is the proxy's.

use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use http::header::{HeaderMap, HeaderName, HeaderValue};

use crate::config::{LimitKind, LimitZone};
use crate::limit::{Buckets, Concurrency, Decision, Permit};
use crate::vars::{RequestVars, VarTemplate};

/// `RateLimit-Limit`: the bucket size.
pub const LIMIT: HeaderName = HeaderName::from_static("ratelimit-limit");
/// `RateLimit-Remaining`: tokens left after this request.
pub const REMAINING: HeaderName = HeaderName::from_static("ratelimit-remaining");
/// `RateLimit-Reset`: seconds until the bucket is full again.
pub const RESET: HeaderName = HeaderName::from_static("ratelimit-reset");

/// One `[limit.NAME]` zone, ready to count.
pub struct Zone {
    /// The definition it was built from (a reload keeps the zone, and its
    /// state, while this is unchanged).
    pub def: LimitZone,
    key: VarTemplate,
    store: Store,
}

impl std::fmt::Debug for Zone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Zone")
            .field("def", &self.def)
            .finish_non_exhaustive()
    }
}

enum Store {
    Rate(Buckets),
    Conn(Arc<Concurrency>),
}

/// What taking from a zone decided, for `mg.limit.take`.
#[derive(Debug, Clone, PartialEq)]
pub enum Taken {
    /// A rate zone answered.
    Rate(Decision),
    /// The zone counts requests in flight, not tokens.
    NotARateZone,
}

impl Zone {
    /// Builds the zone's (empty) buckets or counters.
    pub fn new(def: LimitZone) -> Result<Zone, String> {
        let key = VarTemplate::parse(&def.key)?;
        let store = match def.kind {
            LimitKind::Rate { rate, burst } => Store::Rate(Buckets::new(rate, burst)),
            LimitKind::Conn { max } => Store::Conn(Arc::new(Concurrency::new(max))),
        };
        Ok(Zone { def, key, store })
    }

    /// Takes `cost` tokens from `key`'s bucket (rate zones only).
    pub fn take(&self, key: &[u8], cost: u32) -> Taken {
        match &self.store {
            Store::Rate(b) => Taken::Rate(b.take(key, cost)),
            Store::Conn(_) => Taken::NotARateZone,
        }
    }

    /// Drops buckets of keys that went idle (full again); returns the keys
    /// still tracked.
    pub fn forget_idle(&self) -> usize {
        match &self.store {
            Store::Rate(b) => b.forget_idle(),
            Store::Conn(c) => c.len(),
        }
    }
}

/// What a route's zones decided for one request.
pub enum Verdict {
    /// Go on. `headers` are the `RateLimit-*` headers for the response (of
    /// the zone with the fewest tokens left); `permits` hold the request's
    /// places in concurrency zones until they are dropped, when the
    /// response has been sent (or abandoned).
    Pass {
        /// Headers to add to the response.
        headers: HeaderMap,
        /// Places held in `kind = "conn"` zones.
        permits: Vec<Permit>,
    },
    /// Refused by zone `zone`: answer `status` with `headers`.
    Deny {
        /// The zone that refused.
        zone: String,
        /// The zone's status.
        status: StatusCode,
        /// `Retry-After` (and `RateLimit-*`) headers.
        headers: HeaderMap,
    },
}

/// Takes one token from every rate zone, and a place in every concurrency
/// zone, of a request whose variables are `vars`.
pub fn check(zones: &[Arc<Zone>], vars: &RequestVars<'_>) -> Verdict {
    let mut permits = Vec::new();
    let mut fewest: Option<(u32, &Zone, Decision)> = None;
    for zone in zones {
        let key = zone.key.render(vars);
        match &zone.store {
            Store::Conn(c) => match c.acquire(key.as_bytes()) {
                Some(p) => permits.push(p),
                None => return deny(zone, HeaderMap::new()),
            },
            Store::Rate(b) => match b.take(key.as_bytes(), 1) {
                d @ Decision::Allowed { remaining, .. } => {
                    if zone.def.headers && fewest.as_ref().is_none_or(|(r, _, _)| remaining < *r) {
                        fewest = Some((remaining, zone, d));
                    }
                }
                d => return deny(zone, headers_for(zone, &d)),
            },
        }
    }
    let headers = fewest.map_or_else(HeaderMap::new, |(_, zone, d)| headers_for(zone, &d));
    Verdict::Pass { headers, permits }
}

fn deny(zone: &Zone, headers: HeaderMap) -> Verdict {
    Verdict::Deny {
        zone: zone.def.name.clone(),
        status: StatusCode::from_u16(zone.def.status).unwrap_or(StatusCode::TOO_MANY_REQUESTS),
        headers,
    }
}

/// `RateLimit-*` headers for a decision (when the zone sends them), and
/// `Retry-After` for a refusal (always: it tells the client when to come
/// back).
pub fn headers_for(zone: &Zone, d: &Decision) -> HeaderMap {
    let mut h = HeaderMap::new();
    let (limit, remaining, reset) = match d {
        Decision::Allowed {
            limit,
            remaining,
            reset,
        } => (*limit, *remaining, *reset),
        Decision::Denied {
            limit,
            retry_after,
            reset,
        } => {
            h.insert(http::header::RETRY_AFTER, secs(*retry_after));
            (*limit, 0, *reset)
        }
        Decision::TooCostly { limit, .. } => (*limit, 0, Duration::ZERO),
    };
    if zone.def.headers {
        h.insert(LIMIT, HeaderValue::from(limit));
        h.insert(REMAINING, HeaderValue::from(remaining));
        h.insert(RESET, secs(reset));
    }
    h
}

/// Whole seconds, rounded up (a client told "0" would come straight back).
pub fn ceil_secs(d: Duration) -> u64 {
    let whole = d.as_secs();
    if d.subsec_nanos() > 0 {
        whole + 1
    } else {
        whole
    }
}

fn secs(d: Duration) -> HeaderValue {
    HeaderValue::from(ceil_secs(d))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Place;
    use crate::limit::Rate;

    fn zone(kind: LimitKind, headers: bool) -> Arc<Zone> {
        let def = LimitZone {
            name: "z".into(),
            kind,
            key: "$remote_addr".into(),
            status: 429,
            headers,
            place: Place::whole(std::path::Path::new("t.toml")),
        };
        Arc::new(Zone::new(def).expect("zone"))
    }

    fn vars<'a>(parts: &'a http::request::Parts, ip: &str) -> RequestVars<'a> {
        RequestVars {
            parts,
            request_uri: "/",
            host: "example",
            client: ip.parse().expect("ip"),
            scheme: "http",
            server_port: 80,
        }
    }

    #[test]
    fn ceil_secs_rounds_up() {
        assert_eq!(ceil_secs(Duration::ZERO), 0);
        assert_eq!(ceil_secs(Duration::from_millis(100)), 1);
        assert_eq!(ceil_secs(Duration::from_secs(2)), 2);
        assert_eq!(ceil_secs(Duration::from_millis(2001)), 3);
    }

    #[test]
    fn a_full_bucket_passes_burst_then_denies_with_retry_after() {
        let rate = Rate::parse("1/m").expect("rate");
        let z = zone(LimitKind::Rate { rate, burst: 2 }, true);
        let (parts, ()) = http::Request::new(()).into_parts();
        let v = vars(&parts, "10.0.0.1");
        let zones = [z];
        for left in ["1", "0"] {
            match check(&zones, &v) {
                Verdict::Pass { headers, .. } => {
                    assert_eq!(headers[LIMIT], "2");
                    assert_eq!(headers[REMAINING], left);
                }
                Verdict::Deny { .. } => panic!("denied too early"),
            }
        }
        match check(&zones, &v) {
            Verdict::Deny {
                status, headers, ..
            } => {
                assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
                let retry: u64 = headers[http::header::RETRY_AFTER]
                    .to_str()
                    .expect("ascii")
                    .parse()
                    .expect("number");
                assert!((59..=60).contains(&retry), "one token a minute: {retry}");
                assert_eq!(headers[REMAINING], "0");
            }
            Verdict::Pass { .. } => panic!("not denied"),
        }
        // Another client has its own bucket.
        assert!(matches!(
            check(&zones, &vars(&parts, "10.0.0.2")),
            Verdict::Pass { .. }
        ));
    }

    #[test]
    fn headers_can_be_turned_off_but_retry_after_stays() {
        let rate = Rate::parse("1/m").expect("rate");
        let zones = [zone(LimitKind::Rate { rate, burst: 1 }, false)];
        let (parts, ()) = http::Request::new(()).into_parts();
        let v = vars(&parts, "10.0.0.1");
        match check(&zones, &v) {
            Verdict::Pass { headers, .. } => assert!(headers.is_empty()),
            Verdict::Deny { .. } => panic!("denied"),
        }
        match check(&zones, &v) {
            Verdict::Deny { headers, .. } => {
                assert!(headers.contains_key(http::header::RETRY_AFTER));
                assert!(!headers.contains_key(LIMIT));
            }
            Verdict::Pass { .. } => panic!("not denied"),
        }
    }

    #[test]
    fn concurrency_zones_hold_places_until_the_permits_drop() {
        let zones = [zone(LimitKind::Conn { max: 1 }, true)];
        let (parts, ()) = http::Request::new(()).into_parts();
        let v = vars(&parts, "10.0.0.1");
        let held = match check(&zones, &v) {
            Verdict::Pass { permits, .. } => permits,
            Verdict::Deny { .. } => panic!("denied"),
        };
        assert_eq!(held.len(), 1);
        assert!(matches!(check(&zones, &v), Verdict::Deny { .. }));
        drop(held);
        assert!(matches!(check(&zones, &v), Verdict::Pass { .. }));
    }
}

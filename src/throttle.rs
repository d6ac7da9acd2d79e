//! Rate-limit zones on the request path: a compiled [`Zone`] (its key
//! template and its buckets or counters, kept across reloads while its
//! definition is unchanged), what a route's zones decide for one request,
//! and the `RateLimit-*` / `Retry-After` headers that follow. The counting
//! itself is [`crate::limit`]'s; building the response is the proxy's.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use http::StatusCode;
use http::header::{HeaderMap, HeaderName, HeaderValue};

use crate::cluster::{HealthStatus, RedisBuckets, RedisConnections};
use crate::config::{LimitKind, LimitScope, LimitZone, OnRedisError};
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
    /// Unique in the process, kept with the zone across reloads: how a
    /// worker finds the zone's counters without hashing its name (see
    /// [`crate::metrics::WorkerStats::limit`]).
    pub id: u64,
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
    Redis(Box<Remote>),
    Conn(Arc<Concurrency>),
}

/// A redis-scope zone: its buckets in Redis and what to do without them.
struct Remote {
    redis: RedisBuckets,
    /// The fallback bucket for `on_redis_error = "local"` (same rate and
    /// burst; empty otherwise).
    local: Buckets,
    on_error: OnRedisError,
}

/// Numbers the zones made in this process.
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// A refused fallback (`on_redis_error = "deny"`) tells the client to come
/// back after this long, when Redis may answer again.
const DENY_RETRY: Duration = Duration::from_secs(1);

impl Remote {
    /// Takes from Redis, or from the fallback when Redis does not answer
    /// (or is known to be failing and this take is not the probe).
    async fn take(&self, conns: &RedisConnections, key: &[u8], cost: u32) -> Decision {
        let (limit, cost) = (self.redis.burst(), cost.max(1));
        if cost > limit {
            return Decision::TooCostly { limit, cost };
        }
        if self.redis.health.should_try()
            && let Ok(d) = self.redis.take(conns, key, cost).await
        {
            return d;
        }
        self.redis.health.fell_back();
        match self.on_error {
            OnRedisError::Local => self.local.take(key, cost),
            OnRedisError::Allow => Decision::Allowed {
                limit,
                remaining: limit - cost,
                reset: Duration::ZERO,
            },
            OnRedisError::Deny => Decision::Denied {
                limit,
                retry_after: DENY_RETRY,
                reset: DENY_RETRY,
            },
        }
    }
}

/// What taking from a zone decided, for `mg.limit.take`.
#[derive(Debug, Clone, PartialEq)]
pub enum Taken {
    /// A rate zone answered.
    Rate(Decision),
    /// The zone counts requests in flight, not tokens.
    NotARateZone,
    /// A redis-scope zone: ask [`Zone::take_remote`], which waits.
    Remote,
}

impl Zone {
    /// Builds the zone's (empty) buckets or counters.
    pub fn new(def: LimitZone) -> Result<Zone, String> {
        let key = VarTemplate::parse(&def.key)?;
        let store = match (def.kind, &def.scope) {
            (LimitKind::Rate { rate, burst }, LimitScope::Local) => {
                Store::Rate(Buckets::new(rate, burst))
            }
            (LimitKind::Rate { rate, burst }, LimitScope::Redis { redis, on_error }) => {
                let local = Buckets::new(rate, burst);
                let redis = RedisBuckets::new(&def.name, redis, &local)?;
                Store::Redis(Box::new(Remote {
                    redis,
                    local,
                    on_error: *on_error,
                }))
            }
            (LimitKind::Conn { max }, _) => Store::Conn(Arc::new(Concurrency::new(max))),
        };
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        Ok(Zone {
            def,
            id,
            key,
            store,
        })
    }

    /// Whether takes from this zone wait for Redis.
    pub fn is_remote(&self) -> bool {
        matches!(self.store, Store::Redis(_))
    }

    /// Takes `cost` tokens from `key`'s bucket (rate zones only) without
    /// waiting; a redis-scope zone answers [`Taken::Remote`].
    pub fn take(&self, key: &[u8], cost: u32) -> Taken {
        match &self.store {
            Store::Rate(b) => Taken::Rate(b.take(key, cost)),
            Store::Redis(_) => Taken::Remote,
            Store::Conn(_) => Taken::NotARateZone,
        }
    }

    /// Like [`Zone::take`], and for a redis-scope zone asks Redis over
    /// this worker's `conns` (or the fallback when Redis fails): never
    /// [`Taken::Remote`].
    pub async fn take_remote(&self, conns: &RedisConnections, key: &[u8], cost: u32) -> Taken {
        match &self.store {
            Store::Redis(r) => Taken::Rate(r.take(conns, key, cost).await),
            _ => self.take(key, cost),
        }
    }

    /// Drops buckets of keys that went idle (full again); returns the keys
    /// still tracked (locally: a redis zone's keys expire in Redis).
    pub fn forget_idle(&self) -> usize {
        match &self.store {
            Store::Rate(b) => b.forget_idle(),
            Store::Redis(r) => r.local.forget_idle(),
            Store::Conn(c) => c.len(),
        }
    }

    /// A redis-scope zone's Redis health (`None` for local zones).
    pub fn redis_status(&self) -> Option<HealthStatus> {
        match &self.store {
            Store::Redis(r) => Some(r.redis.health.status()),
            _ => None,
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
        /// Its position among the route's zones (those before it let the
        /// request through; those after it were not asked).
        index: usize,
        /// The zone's status.
        status: StatusCode,
        /// `Retry-After` (and `RateLimit-*`) headers.
        headers: HeaderMap,
    },
}

/// A route's zones checked, or ready to be once Redis answers.
pub enum Check<'z> {
    /// Every zone is local: decided without waiting.
    Done(Verdict),
    /// A zone is redis-scoped: await [`Pending::verdict`].
    Waits(Pending<'z>),
}

/// Zones with their keys rendered, waiting to be taken from.
pub struct Pending<'z> {
    zones: &'z [Arc<Zone>],
    keys: Vec<String>,
}

/// Takes one token from every rate zone, and a place in every concurrency
/// zone, of a request whose variables are `vars`; zones are taken in order
/// and the first refusal stops the rest.
pub fn check<'z>(zones: &'z [Arc<Zone>], vars: &RequestVars<'_>) -> Check<'z> {
    if zones.iter().any(|z| z.is_remote()) {
        let keys = zones.iter().map(|z| z.key.render(vars)).collect();
        return Check::Waits(Pending { zones, keys });
    }
    let mut tally = Tally::default();
    for (index, zone) in zones.iter().enumerate() {
        let key = zone.key.render(vars);
        let step = match &zone.store {
            Store::Conn(c) => tally.conn(c, &key),
            Store::Rate(b) => tally.rate(zone, b.take(key.as_bytes(), 1)),
            // Not reached: routes with a redis zone wait.
            Store::Redis(_) => Ok(()),
        };
        if let Err(headers) = step {
            return Check::Done(deny(zone, index, headers));
        }
    }
    Check::Done(tally.pass())
}

impl Pending<'_> {
    /// Takes from every zone, waiting for Redis (over this worker's
    /// `conns`) where a zone lives there.
    pub async fn verdict(self, conns: &RedisConnections) -> Verdict {
        let mut tally = Tally::default();
        for (index, (zone, key)) in self.zones.iter().zip(&self.keys).enumerate() {
            let step = match &zone.store {
                Store::Conn(c) => tally.conn(c, key),
                Store::Rate(b) => tally.rate(zone, b.take(key.as_bytes(), 1)),
                Store::Redis(r) => {
                    // Boxed so a local-only route's future stays small.
                    let d = Box::pin(r.take(conns, key.as_bytes(), 1)).await;
                    tally.rate(zone, d)
                }
            };
            if let Err(headers) = step {
                return deny(zone, index, headers);
            }
        }
        tally.pass()
    }
}

/// What the zones taken so far decided.
#[derive(Default)]
struct Tally<'z> {
    permits: Vec<Permit>,
    /// The allowed decision with the fewest tokens left (of zones that
    /// send headers).
    fewest: Option<(u32, &'z Zone, Decision)>,
}

impl<'z> Tally<'z> {
    /// Takes a place in a concurrency zone; `Err` holds the refusal's
    /// headers.
    fn conn(&mut self, c: &Arc<Concurrency>, key: &str) -> Result<(), HeaderMap> {
        match c.acquire(key.as_bytes()) {
            Some(p) => {
                self.permits.push(p);
                Ok(())
            }
            None => Err(HeaderMap::new()),
        }
    }

    /// Records a rate zone's decision; `Err` holds the refusal's headers.
    fn rate(&mut self, zone: &'z Zone, d: Decision) -> Result<(), HeaderMap> {
        match d {
            Decision::Allowed { remaining, .. } => {
                if zone.def.headers && self.fewest.as_ref().is_none_or(|(r, _, _)| remaining < *r) {
                    self.fewest = Some((remaining, zone, d));
                }
                Ok(())
            }
            d => Err(headers_for(zone, &d)),
        }
    }

    fn pass(self) -> Verdict {
        let headers = self
            .fewest
            .map_or_else(HeaderMap::new, |(_, zone, d)| headers_for(zone, &d));
        Verdict::Pass {
            headers,
            permits: self.permits,
        }
    }
}

fn deny(zone: &Zone, index: usize, headers: HeaderMap) -> Verdict {
    Verdict::Deny {
        zone: zone.def.name.clone(),
        index,
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
    use crate::vars::RequestFacts;

    fn zone(kind: LimitKind, headers: bool) -> Arc<Zone> {
        named("z", kind, headers)
    }

    fn named(name: &str, kind: LimitKind, headers: bool) -> Arc<Zone> {
        let def = LimitZone {
            name: name.into(),
            kind,
            key: "$remote_addr".into(),
            status: 429,
            headers,
            scope: LimitScope::Local,
            place: Place::whole(std::path::Path::new("t.toml")),
        };
        Arc::new(Zone::new(def).expect("zone"))
    }

    fn facts(ip: &str) -> RequestFacts {
        RequestFacts {
            host: "example".into(),
            request_uri: http::Uri::from_static("/"),
            client: ip.parse().expect("ip"),
            scheme: "http",
            server_port: 80,
            consumer: None,
        }
    }

    /// Checks local zones (which never wait).
    fn check(zones: &[Arc<Zone>], v: &RequestVars<'_>) -> Verdict {
        match super::check(zones, v) {
            Check::Done(v) => v,
            Check::Waits(_) => panic!("local zones wait for nothing"),
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
        let f = facts("10.0.0.1");
        let v = f.vars(&parts);
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
            check(&zones, &facts("10.0.0.2").vars(&parts)),
            Verdict::Pass { .. }
        ));
    }

    #[test]
    fn headers_can_be_turned_off_but_retry_after_stays() {
        let rate = Rate::parse("1/m").expect("rate");
        let zones = [zone(LimitKind::Rate { rate, burst: 1 }, false)];
        let (parts, ()) = http::Request::new(()).into_parts();
        let f = facts("10.0.0.1");
        let v = f.vars(&parts);
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
        let f = facts("10.0.0.1");
        let v = f.vars(&parts);
        let held = match check(&zones, &v) {
            Verdict::Pass { permits, .. } => permits,
            Verdict::Deny { .. } => panic!("denied"),
        };
        assert_eq!(held.len(), 1);
        assert!(matches!(check(&zones, &v), Verdict::Deny { .. }));
        drop(held);
        assert!(matches!(check(&zones, &v), Verdict::Pass { .. }));
    }

    #[test]
    fn a_refusal_says_which_zone_of_the_route_refused() {
        let rate = Rate::parse("1/m").expect("rate");
        let zones = [
            named("wide", LimitKind::Rate { rate, burst: 5 }, true),
            named("narrow", LimitKind::Rate { rate, burst: 1 }, true),
            named("never", LimitKind::Conn { max: 9 }, true),
        ];
        assert_ne!(zones[0].id, zones[1].id, "every zone has its own id");
        let (parts, ()) = http::Request::new(()).into_parts();
        let f = facts("10.0.0.1");
        let v = f.vars(&parts);
        assert!(matches!(check(&zones, &v), Verdict::Pass { .. }));
        match check(&zones, &v) {
            Verdict::Deny { zone, index, .. } => assert_eq!((zone.as_str(), index), ("narrow", 1)),
            Verdict::Pass { .. } => panic!("not denied"),
        }
    }
}

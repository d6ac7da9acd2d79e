//! Step 5 of a request: the route's rate-limit zones (`[limit.NAME]`):
//! a refusal to send, or the `RateLimit-*` headers and the places held in
//! concurrency zones until the response is done (by the request's
//! completion hook, [`super::request`]).

use std::net::IpAddr;
use std::sync::Arc;

use http::{HeaderMap, Response};

use crate::body::ResponseBody;
use crate::cluster::RedisConnections;
use crate::error_page;
use crate::limit::Permit;
use crate::metrics::{LimitCounters, WorkerStats};
use crate::snapshot::RouteEntry;
use crate::throttle::{self, Verdict, Zone};
use crate::vars::RequestVars;

/// The zones' verdict if it needs no waiting, else their keys, rendered
/// from the request's variables (not borrowed past this call). `None`
/// when the route has no zones.
pub(super) fn start<'a>(
    entry: &'a RouteEntry,
    vars: &RequestVars<'_>,
) -> Option<throttle::Check<'a>> {
    if entry.limits.is_empty() {
        return None;
    }
    Some(throttle::check(&entry.limits, vars))
}

/// Acts on what [`start`] found, waiting for Redis if a zone lives there:
/// the `RateLimit-*` headers for the response, with the places taken in
/// concurrency zones added to `permits`; or the refusal to send. The
/// route's `zones` decisions are counted in `stats` (when metrics are on).
pub(super) async fn finish(
    check: Option<throttle::Check<'_>>,
    zones: &[Arc<Zone>],
    stats: Option<&WorkerStats>,
    redis: &RedisConnections,
    client: IpAddr,
    permits: &mut Vec<Permit>,
) -> Result<HeaderMap, Box<Response<ResponseBody>>> {
    let verdict = match check {
        None => return Ok(HeaderMap::new()),
        Some(throttle::Check::Done(v)) => v,
        Some(throttle::Check::Waits(p)) => p.verdict(redis).await,
    };
    if let Some(stats) = stats {
        count(stats, zones, &verdict);
    }
    match verdict {
        Verdict::Pass {
            headers,
            permits: taken,
        } => {
            *permits = taken;
            Ok(headers)
        }
        Verdict::Deny {
            zone,
            status,
            headers,
            ..
        } => {
            tracing::info!(zone = %zone, client = %client, "rate limited");
            let mut resp = error_page::response(status);
            resp.headers_mut().extend(headers);
            // Whatever status the zone answers with, a gRPC client is told
            // it was rate limited.
            let code = crate::grpc::Code::ResourceExhausted;
            resp.extensions_mut().insert(crate::grpc::OwnCode(code));
            Err(Box::new(resp))
        }
    }
}

/// Counts the zones `verdict` asked: every one let the request through,
/// or those before the one that refused it did (the zones after it were
/// not asked). Per worker ([`WorkerStats::limit`]) rather than in the
/// zone, which every thread shares: a limited route counts on every
/// request, and a counter of its own per thread is a plain add, where
/// one in the zone would be a locked add on a cache line the threads
/// pass around.
fn count(stats: &WorkerStats, zones: &[Arc<Zone>], verdict: &Verdict) {
    let refused = match verdict {
        Verdict::Pass { .. } => None,
        Verdict::Deny { index, .. } => Some(*index),
    };
    let passed = refused.unwrap_or(zones.len());
    for zone in zones.iter().take(passed) {
        stats.limit(zone.id, &zone.def.name, LimitCounters::allowed);
    }
    if let Some(zone) = refused.and_then(|i| zones.get(i)) {
        stats.limit(zone.id, &zone.def.name, LimitCounters::limited);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{LimitKind, LimitScope, LimitZone, Place};
    use crate::metrics::{Registry, WorkerStats};

    fn zone(name: &str, max: u32) -> Arc<Zone> {
        let def = LimitZone {
            name: name.into(),
            kind: LimitKind::Conn { max },
            key: "$remote_addr".into(),
            status: 429,
            headers: false,
            scope: LimitScope::Local,
            place: Place::whole(std::path::Path::new("t.toml")),
        };
        Arc::new(Zone::new(def).unwrap_or_else(|e| panic!("{e}")))
    }

    fn denied_by(index: usize) -> Verdict {
        Verdict::Deny {
            zone: String::new(),
            index,
            status: http::StatusCode::TOO_MANY_REQUESTS,
            headers: HeaderMap::new(),
        }
    }

    #[test]
    fn the_zones_before_a_refusal_allowed_and_those_after_were_not_asked() {
        let zones = [zone("a", 1), zone("b", 1), zone("c", 1)];
        let stats = WorkerStats::new();
        let registry = Registry::default();
        registry.register(stats.shared());
        let pass = Verdict::Pass {
            headers: HeaderMap::new(),
            permits: Vec::new(),
        };
        count(&stats, &zones, &pass);
        count(&stats, &zones, &denied_by(1));
        count(&stats, &zones, &denied_by(0));
        let merged = registry.merged();
        let got = |name: &str| {
            let v = merged.limits.get(name).copied().unwrap_or_default();
            (v.allowed, v.limited)
        };
        assert_eq!(got("a"), (2, 1));
        assert_eq!(got("b"), (1, 1));
        assert_eq!(got("c"), (1, 0));
    }
}

//! Step 5 of a request: the route's rate-limit zones (`[limit.NAME]`):
//! a refusal to send, or the `RateLimit-*` headers and the places held in
//! concurrency zones until the response is done (by the request's
//! completion hook, [`super::request`]).

use std::net::IpAddr;

use http::{HeaderMap, Response};

use crate::body::ResponseBody;
use crate::cluster::RedisConnections;
use crate::error_page;
use crate::limit::Permit;
use crate::snapshot::RouteEntry;
use crate::throttle::{self, Verdict};
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
/// concurrency zones added to `permits`; or the refusal to send.
pub(super) async fn finish(
    check: Option<throttle::Check<'_>>,
    redis: &RedisConnections,
    client: IpAddr,
    permits: &mut Vec<Permit>,
) -> Result<HeaderMap, Box<Response<ResponseBody>>> {
    let verdict = match check {
        None => return Ok(HeaderMap::new()),
        Some(throttle::Check::Done(v)) => v,
        Some(throttle::Check::Waits(p)) => p.verdict(redis).await,
    };
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

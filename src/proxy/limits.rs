//! Step 5 of a request: the route's rate-limit zones (`[limit.NAME]`):
//! a refusal to send, or the `RateLimit-*` headers and the places held in
//! concurrency zones until the response is done ([`Release`]).

use http::Response;
use http::request::Parts;

use super::{ConnCtx, Served};
use crate::body::{OnComplete, ResponseBody};
use crate::error_page;
use crate::limit::Permit;
use crate::throttle::{self, Verdict};
use crate::vars::RequestVars;

/// What a route's rate-limit zones need to know about a request.
pub(super) struct Limits<'a> {
    pub(super) entry: &'a crate::snapshot::RouteEntry,
    pub(super) request_uri: &'a str,
    pub(super) host: &'a str,
    pub(super) client: std::net::IpAddr,
    pub(super) conn: &'a ConnCtx,
}

impl<'a> Limits<'a> {
    /// Takes from the route's zones for a request with head `head`: the
    /// `RateLimit-*` headers for the response go to `headers` and places in
    /// concurrency zones to `served` (held until the response is done); a
    /// refusal is the response to send.
    pub(super) async fn check(
        &self,
        head: &Parts,
        served: &mut Served,
        headers: &mut http::HeaderMap,
    ) -> Result<(), Box<Response<ResponseBody>>> {
        let pending = self.start(head);
        self.finish(pending, served, headers).await
    }

    /// The zones' verdict if it needs no waiting, else their keys, rendered
    /// from `head` (which is not borrowed past this call).
    pub(super) fn start(&self, head: &Parts) -> Option<throttle::Check<'a>> {
        if self.entry.limits.is_empty() {
            return None;
        }
        let vars = RequestVars {
            parts: head,
            request_uri: self.request_uri,
            host: self.host,
            client: self.client,
            scheme: self.conn.scheme,
            server_port: self.conn.local.port(),
        };
        Some(throttle::check(&self.entry.limits, &vars))
    }

    /// Acts on what [`Limits::start`] found, waiting for Redis if a zone
    /// lives there.
    pub(super) async fn finish(
        &self,
        check: Option<throttle::Check<'a>>,
        served: &mut Served,
        headers: &mut http::HeaderMap,
    ) -> Result<(), Box<Response<ResponseBody>>> {
        let verdict = match check {
            None => return Ok(()),
            Some(throttle::Check::Done(v)) => v,
            Some(throttle::Check::Waits(p)) => p.verdict(&self.conn.worker.redis).await,
        };
        match verdict {
            Verdict::Pass {
                headers: h,
                permits,
            } => {
                *headers = h;
                served.permits = permits;
                Ok(())
            }
            Verdict::Deny {
                zone,
                status,
                headers: h,
            } => {
                tracing::info!(zone = %zone, client = %self.client, "rate limited");
                let mut resp = error_page::response(status);
                resp.headers_mut().extend(h);
                Err(Box::new(resp))
            }
        }
    }
}

/// Holds a request's places in concurrency zones until its response has
/// been sent or abandoned, then hands over to the next hook.
pub(super) struct Release {
    pub(super) permits: Vec<Permit>,
    pub(super) next: Box<dyn OnComplete>,
}

impl OnComplete for Release {
    fn complete(self: Box<Self>, bytes: u64, complete: bool) {
        let Release { permits, next } = *self;
        drop(permits);
        next.complete(bytes, complete);
    }
}

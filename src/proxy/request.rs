//! One request as the steps of [`super`] share it: [`RequestCtx`], made
//! when the request arrives and filled in as the steps go (the host and
//! real client address once checked, the route, what the upstream and the
//! cache did, the places held in concurrency zones, the Lua state when the
//! route has handlers), then turned into the response body's completion
//! hook ([`RequestCtx::into_completion`]): once the body is sent or
//! abandoned, the request is counted in its route's metrics, the places
//! are released, the access log line written and the Lua `log` handlers
//! run.
//!
//! While the phases before the target run, the request head and body are
//! in [`Held`]: with the Lua request state when the route has handlers
//! (they read and change them there), else here; every step reads the
//! head the same way.

use std::cell::Ref;
use std::ops::Deref;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::header::{self, HeaderValue};
use http::request::Parts;
use http::{Method, Request, Version};

use super::ConnCtx;
use super::log_copies::LogCopies;
use crate::access_log::{AccessRecord, Field, FieldSet, RequestId};
use crate::body::{ClientBody, OnComplete, RequestBody};
use crate::cache::step::CacheStatus;
use crate::limit::Permit;
use crate::lua::request::{ConnInfo, ReqCtx, RouteInfo};
use crate::lua::respond::run_log_phase;
use crate::lua::vm::Vm;
use crate::lua::{RoutePhases, ScriptId};
use crate::metrics::{MethodClass, RouteCounters};
use crate::otel::{RequestTrace, Settled, UpstreamSpan};
use crate::snapshot::RouteEntry;
use crate::vars::RequestFacts;

/// What the upstream exchange produced (`$upstream_addr`,
/// `$upstream_status`, `$upstream_connect_time`,
/// `$upstream_response_time`).
#[derive(Debug, Clone)]
pub struct UpstreamDone {
    /// The peer that answered.
    pub addr: String,
    /// The status it answered with.
    pub status: u16,
    /// Time spent connecting to it (zero on a pooled connection).
    pub connect: Duration,
    /// Time to its response head.
    pub elapsed: Duration,
}

/// The Lua side of a request on a route with handlers.
pub struct LuaReq {
    /// The VM the handlers run on.
    pub vm: Rc<Vm>,
    /// The request as the handlers see it.
    pub ctx: Rc<ReqCtx>,
}

/// One request; see the module docs.
pub struct RequestCtx {
    /// When it arrived.
    pub started: Instant,
    /// The method as the client sent it.
    pub method: Method,
    /// The client's protocol version (the answer is sent in it).
    pub version: Version,
    /// The client's `Accept` (the format of moongate's own errors).
    pub accept: Option<HeaderValue>,
    /// The request is a gRPC call (moongate's own errors are then answered
    /// as a gRPC status).
    pub grpc: bool,
    /// Host, original URI, real client address, scheme, port.
    pub facts: RequestFacts,
    /// The access log fields chosen when it arrived (empty: the log is
    /// off, nothing is copied for it).
    pub log: FieldSet,
    /// What the chosen fields need copied from the request.
    pub log_copies: LogCopies,
    /// The route that serves it (its name), for the access log.
    pub route: Option<String>,
    /// What the upstream exchange produced, if there was one.
    pub upstream: Option<UpstreamDone>,
    /// What the route's cache did, if it has one.
    pub cache_status: Option<CacheStatus>,
    /// Places held in concurrency zones until the response is done.
    pub permits: Vec<Permit>,
    /// The route's Lua state, when it has handlers.
    pub lua: Option<LuaReq>,
    /// What the connection says about the request, for its Lua code
    /// (filled in when a route's Lua state starts: other requests pay
    /// nothing for it).
    pub conn: ConnInfo,
    /// `conn` has been filled in.
    conn_known: bool,
    /// The size of the response head (`$bytes_sent` counts it), set once
    /// the response is settled when Lua `log` handlers will read it.
    pub head_bytes: u64,
    /// The client lets the connection stay open (what the response head
    /// says about it counts in `$bytes_sent`).
    pub keep_alive: bool,
    /// The request body's declared length (`Content-Length`), for the
    /// route's byte counter; 0 when unknown.
    pub request_bytes: u64,
    /// Its trace, when `[tracing]` is configured.
    pub trace: Option<Box<RequestTrace>>,
}

impl RequestCtx {
    /// A request as it arrived on `conn`; the host and the real client
    /// address are filled in by the checks.
    pub fn new(req: &Request<ClientBody>, conn: &ConnCtx) -> RequestCtx {
        let requests = conn.requests.get() + 1;
        conn.requests.set(requests);
        let log = conn.shared.access_log.wants();
        let log_copies = if log.is_empty() {
            LogCopies::default()
        } else {
            LogCopies::of(req, conn, log)
        };
        RequestCtx {
            started: Instant::now(),
            method: req.method().clone(),
            version: req.version(),
            accept: req.headers().get(header::ACCEPT).cloned(),
            // gRPC runs over HTTP/2 only: an HTTP/1 request is never one.
            grpc: req.version() == Version::HTTP_2 && crate::grpc::is_grpc(req.headers()),
            facts: RequestFacts {
                host: String::new(),
                request_uri: req.uri().clone(),
                client: conn.peer.ip(),
                scheme: conn.scheme,
                server_port: conn.local.port(),
                consumer: None,
            },
            log,
            log_copies,
            route: None,
            upstream: None,
            cache_status: None,
            permits: Vec::new(),
            lua: None,
            conn: ConnInfo {
                requests,
                ..ConnInfo::default()
            },
            conn_known: false,
            head_bytes: 0,
            keep_alive: true,
            request_bytes: http_body::Body::size_hint(req.body()).exact().unwrap_or(0),
            trace: None,
        }
    }

    /// A subrequest of a request with `facts` (`ngx.location.capture`).
    pub fn subrequest(method: Method, facts: RequestFacts) -> RequestCtx {
        RequestCtx {
            started: Instant::now(),
            method,
            version: Version::HTTP_11,
            accept: None,
            grpc: false,
            facts,
            log: FieldSet::NONE,
            log_copies: LogCopies::default(),
            route: None,
            upstream: None,
            cache_status: None,
            permits: Vec::new(),
            lua: None,
            conn: ConnInfo::default(),
            conn_known: false,
            head_bytes: 0,
            keep_alive: true,
            request_bytes: 0,
            trace: None,
        }
    }

    /// Starts the route's Lua state when it has handlers (the head and
    /// body move into it; `setup` fills in where the request stands among
    /// subrequests and redirects) and says where the request is held.
    #[allow(clippy::too_many_arguments)]
    pub fn hold(
        &mut self,
        vm: Option<Rc<Vm>>,
        entry: &RouteEntry,
        conn: &ConnCtx,
        parts: Parts,
        body: RequestBody,
        setup: impl FnOnce(&mut ReqCtx),
    ) -> Held {
        let Some(vm) = vm else {
            return Held::Here(parts, body);
        };
        if !self.conn_known {
            self.conn_known = true;
            self.conn.server_addr = conn.local.ip();
            self.conn.remote_port = conn.peer.port();
            self.conn.serial = conn.serial;
            self.conn.raw_head = conn.raw_head.take();
            // What the response head will say about the connection
            // (`$bytes_sent` counts it).
            self.keep_alive = match parts.version {
                Version::HTTP_10 => crate::forward::connection_has(&parts.headers, "keep-alive"),
                _ => !crate::forward::connection_has(&parts.headers, "close"),
            };
        }
        let mut ctx = ReqCtx::new(parts, body, self.facts.clone(), self.started);
        // Cloned, not taken: `ngx.exec` holds the request again.
        ctx.conn = self.conn.clone();
        ctx.route = RouteInfo {
            server_name: entry.server_name.clone(),
            path_regex: entry.path_regex.clone(),
        };
        setup(&mut ctx);
        if let Some(trace) = &self.trace {
            ctx.trace_id
                .set(u128::from_be_bytes(trace.trace_id.to_bytes()));
        }
        if self.trace.as_ref().is_some_and(|t| t.recording()) {
            // After `ngx.exec` the runs so far carry over.
            let before = self.lua.as_ref().and_then(|l| l.ctx.phase_runs.take());
            *ctx.phase_runs.get_mut() = Some(before.unwrap_or_default());
        }
        let ctx = Rc::new(ctx);
        ctx.cache_zone.set(entry.cache.is_some());
        self.lua = Some(LuaReq {
            vm,
            ctx: ctx.clone(),
        });
        Held::Lua(ctx)
    }

    /// Notes what the log phase reads of the response about to be sent
    /// (`$bytes_sent`, `ngx.resp.get_headers`, `$sent_http_NAME`), when
    /// the route has Lua `log` handlers.
    pub fn response_settled(
        &mut self,
        resp: &http::Response<crate::body::ResponseBody>,
        log_phase: bool,
    ) {
        let Some(lua) = self.lua.as_ref().filter(|_| log_phase) else {
            return;
        };
        self.head_bytes = head_size(resp, self.version, self.keep_alive);
        *lua.ctx.resp_headers.borrow_mut() = resp.headers().clone();
    }

    /// Notes the request's id header as the Lua phases left it (a
    /// `request_id` policy sets it), when the log wants it: `header` is
    /// the route's id header.
    pub fn note_request_id(&mut self, head: &Parts, header: &header::HeaderName) {
        if self.log.has(Field::RequestId) {
            self.log_copies.request_id = head.headers.get(header).cloned();
        }
    }

    /// `$consumer` as the rewrite and access handlers left it (an
    /// authentication policy, or a script's `ngx.var.consumer = ...`), for
    /// limit keys and the access log.
    pub fn note_consumer(&mut self) {
        if let Some(lua) = &self.lua {
            let vars = lua.ctx.vars.borrow();
            if !vars.is_empty() {
                self.facts.consumer = vars.get(crate::lua::auth::CONSUMER).cloned();
            }
        }
    }

    /// The response body's completion hook for a response with `status`:
    /// counts the request in its route's `counters` (`None`: metrics are
    /// off), releases the concurrency places, writes the access log line
    /// (when the log was on as the request arrived; through `conn`'s log)
    /// and runs the route's Lua `log` handlers. `None` when there is
    /// nothing to do.
    pub fn into_completion(
        self,
        status: u16,
        conn: &Rc<ConnCtx>,
        phases: Option<&RoutePhases>,
        counters: Option<Arc<RouteCounters>>,
    ) -> Option<Box<dyn OnComplete>> {
        let log = !self.log.is_empty();
        // The id the Lua code made (`$request_id`) when the request
        // carried none.
        let made_id = match (&self.lua, &self.log_copies.request_id) {
            (Some(lua), None) if log => Some(lua.ctx.request_id.get()).filter(|&id| id != 0),
            _ => None,
        };
        let trace_id = match &self.trace {
            Some(t) if self.log.has(Field::TraceId) => Some(t.trace_id),
            _ => None,
        };
        let trace = self.trace.filter(|t| t.recording()).map(|mut t| {
            let method = crate::otel::method_name(&self.method);
            let upstream = self.upstream.as_ref();
            let attributes = crate::otel::server_attributes(
                method,
                self.facts.request_uri.path(),
                self.facts.scheme,
                self.route.as_deref(),
                &self.facts.host,
                self.facts.client,
                status,
                upstream.map(|u| u.addr.as_str()),
            );
            let name = match &self.route {
                Some(route) => format!("HTTP {method} {route}"),
                None => format!("HTTP {method}"),
            };
            t.settle(Settled {
                name,
                method,
                attributes,
                status,
                upstream: upstream.map(|u| UpstreamSpan {
                    addr: u.addr.clone(),
                    status: u.status,
                    elapsed: u.elapsed,
                }),
                lua: self.lua.as_ref().map(|l| l.ctx.clone()),
            });
            t
        });
        let lua_log = match (self.lua, phases) {
            (Some(lua), Some(p)) if !p.log.is_empty() => Some((lua, p.log.clone())),
            _ => None,
        };
        let tally = Tally {
            counters,
            method: MethodClass::of(&self.method),
            request_bytes: self.request_bytes,
            started: self.started,
            status,
        };
        // Only the counting to do: a small hook (the access record's
        // fields are not moved into it), or none.
        if !log && self.permits.is_empty() && lua_log.is_none() && trace.is_none() {
            return tally
                .counters
                .is_some()
                .then(|| Box::new(tally) as Box<dyn OnComplete>);
        }
        let head_bytes = self.head_bytes;
        let copies = self.log_copies;
        let upstream = self.upstream.as_ref();
        Some(Box::new(Completion {
            record: AccessRecord {
                fields: self.log,
                started: self.started,
                client: self.facts.client,
                method: self.method,
                uri: self.facts.request_uri,
                host: self.facts.host,
                version: self.version,
                status,
                route: self.route,
                upstream_status: upstream.map(|u| u.status),
                upstream_connect_time: upstream.map(|u| u.connect),
                upstream_time: upstream.map(|u| u.elapsed),
                upstream_addr: self.upstream.map(|u| u.addr),
                cache_status: self.cache_status.map(CacheStatus::as_str),
                request_id: copies
                    .request_id
                    .map(RequestId::Header)
                    .or(made_id.map(RequestId::Made)),
                trace_id,
                consumer: self
                    .facts
                    .consumer
                    .filter(|_| self.log.has(Field::Consumer)),
                user_agent: copies.user_agent,
                referer: copies.referer,
                head_received: copies.head_received,
                body_received: copies.body_received,
            },
            conn: conn.clone(),
            permits: self.permits,
            lua_log,
            head_bytes,
            tally,
            trace,
        }))
    }
}

/// What the route's counters are told when the response is done.
struct Tally {
    counters: Option<Arc<RouteCounters>>,
    method: MethodClass,
    request_bytes: u64,
    started: Instant,
    status: u16,
}

impl Tally {
    /// Counts the request, `bytes` of its body sent.
    fn record(self, bytes: u64) {
        let Some(counters) = self.counters else {
            return;
        };
        let elapsed = self.started.elapsed();
        let (method, status) = (self.method, self.status);
        counters.record(method, status, elapsed, self.request_bytes, bytes);
    }
}

impl OnComplete for Tally {
    fn complete(self: Box<Self>, bytes: u64, _complete: bool) {
        self.record(bytes);
    }
}

/// What runs when a response body is done; see [`RequestCtx::into_completion`].
struct Completion {
    record: AccessRecord,
    /// The connection, whose server's log the line goes to.
    conn: Rc<ConnCtx>,
    permits: Vec<Permit>,
    lua_log: Option<(LuaReq, Vec<ScriptId>)>,
    head_bytes: u64,
    tally: Tally,
    trace: Option<Box<RequestTrace>>,
}

impl OnComplete for Completion {
    fn complete(self: Box<Self>, bytes: u64, complete: bool) {
        let Completion {
            record,
            conn,
            permits,
            lua_log,
            head_bytes,
            tally,
            trace,
        } = *self;
        drop(permits);
        if let Some(trace) = trace {
            trace.finish();
        }
        tally.record(bytes);
        conn.shared.access_log.write(&record, bytes, complete);
        if let Some((lua, ids)) = lua_log {
            lua.ctx.set_sent(head_bytes, bytes);
            run_log_phase(lua.vm, lua.ctx, ids, record.status);
        }
    }
}

/// Where the request head and body are while the phases before the
/// target run; see the module docs. One per request, on the stack:
/// boxing the head would cost an allocation per request.
#[allow(clippy::large_enum_variant)]
pub enum Held {
    /// No Lua on the route: here.
    Here(Parts, RequestBody),
    /// With the route's Lua request state.
    Lua(Rc<ReqCtx>),
}

/// The request head, wherever it is held.
pub enum HeadRef<'a> {
    /// Held here.
    Here(&'a Parts),
    /// Borrowed from the Lua request state (no handler runs meanwhile).
    Lua(Ref<'a, Parts>),
}

impl Deref for HeadRef<'_> {
    type Target = Parts;

    fn deref(&self) -> &Parts {
        match self {
            HeadRef::Here(p) => p,
            HeadRef::Lua(r) => r,
        }
    }
}

impl Held {
    /// The request head as the phases so far left it.
    pub fn head(&self) -> HeadRef<'_> {
        match self {
            Held::Here(parts, _) => HeadRef::Here(parts),
            Held::Lua(ctx) => HeadRef::Lua(ctx.head.borrow()),
        }
    }

    /// The request to send on: the head, and the body (from memory if a
    /// handler read or replaced it). `keep_copy`: Lua handlers run after
    /// the response (header_filter, log) and read `ngx.var`, so a copy of
    /// the head stays with them. `take_body` false: the body stays with
    /// the Lua state (an empty one is returned).
    pub fn release(self, keep_copy: bool, take_body: bool) -> (Parts, RequestBody) {
        match self {
            Held::Here(parts, body) => (parts, body),
            Held::Lua(ctx) => ctx.take_request(keep_copy, take_body),
        }
    }
}

/// The size of `resp`'s head as HTTP/1.x sends it (`$bytes_sent` counts
/// it): the status line, the headers, those the connection adds (`Date`,
/// the framing, `Connection`) and the empty line. An estimate the
/// connection does not confirm (HTTP/2 compresses heads).
pub fn head_size(
    resp: &http::Response<crate::body::ResponseBody>,
    version: Version,
    keep_alive: bool,
) -> u64 {
    use http_body::Body as _;
    let status = resp.status();
    // "HTTP/1.1 200 OK\r\n"
    let mut n = 13 + status.canonical_reason().map_or(0, str::len) + 2;
    for (name, value) in resp.headers() {
        n += name.as_str().len() + 2 + value.len() + 2;
    }
    if !resp.headers().contains_key(header::DATE) {
        // "Date: Thu, 01 Jan 1970 00:00:00 GMT\r\n"
        n += 37;
    }
    let exact = resp.body().size_hint().exact();
    if !resp.headers().contains_key(header::CONTENT_LENGTH) {
        n += match exact {
            Some(len) => "Content-Length: \r\n".len() + len.to_string().len(),
            None if version == Version::HTTP_11 => "Transfer-Encoding: chunked\r\n".len(),
            None => 0,
        };
    }
    let closes = !keep_alive || (exact.is_none() && version == Version::HTTP_10);
    if !resp.headers().contains_key(header::CONNECTION) {
        n += match (version, closes) {
            (Version::HTTP_11, true) => "Connection: close\r\n".len(),
            (Version::HTTP_10, false) => "Connection: keep-alive\r\n".len(),
            _ => 0,
        };
    }
    (n + 2) as u64
}

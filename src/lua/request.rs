//! Per-request state that Lua handlers read and change: the request head
//! (`ngx.req.*`, `ngx.var`), the response being built (`ngx.status`,
//! `ngx.header`, `ngx.say`), `ngx.ctx`, and how the handler ended
//! (`ngx.exit`). One per request, never shared: nothing leaks between
//! requests.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use http::HeaderMap;
use http::request::Parts;

use super::Phase;
use super::response_state::{FilterArg, Output};
use super::subrequest::SubRunner;
use crate::body::RequestBody;
use crate::cache::policy::Overrides;
use crate::cache::step::CacheDecisions;
use crate::vars::RequestFacts;

/// The state of one request as its Lua handlers see it.
pub struct ReqCtx {
    /// The running phase (`ngx.get_phase()`).
    pub phase: Cell<Phase>,
    /// The request head; handlers may change method, URI and headers.
    pub head: RefCell<Parts>,
    /// Host, original URI, real client address, scheme and port
    /// (`ngx.var.host`, `request_uri`, `remote_addr`, ...).
    pub facts: RequestFacts,
    /// When the request started (`ngx.req.start_time`, `$request_time`).
    pub started: Instant,
    /// Wall-clock start, seconds since the epoch.
    pub started_wall: f64,
    /// `ngx.status` (0 = not set).
    pub status: Cell<u16>,
    /// `ngx.header`: headers for the response.
    pub resp_headers: RefCell<HeaderMap>,
    /// What `ngx.say` / `ngx.print` produced.
    pub out: RefCell<Vec<u8>>,
    /// Set by `ngx.exit` / `ngx.redirect`.
    exit: Cell<Option<i64>>,
    /// Variables set by handlers (`ngx.var.NAME = ...` for new names).
    pub vars: RefCell<HashMap<String, String>>,
    /// `ngx.ctx`, created on first use.
    pub ctx: RefCell<Option<mlua::RegistryKey>>,
    /// The upstream chosen by `mg.upstream.set`, replacing the route's.
    pub upstream: RefCell<Option<String>>,
    /// The client's body, still streaming (sent upstream as it arrives)
    /// until a handler calls `ngx.req.read_body`.
    pub body: RefCell<RequestBody>,
    /// The body once read (or set) by a handler.
    pub body_data: RefCell<Option<Bytes>>,
    /// The route has a cache zone (`mg.cache.*` act only then).
    pub cache_zone: Cell<bool>,
    /// `mg.cache.*` decisions from rewrite/access.
    pub cache: RefCell<CacheDecisions>,
    /// `mg.cache.ttl` / `no_store` from header_filter.
    pub cache_late: Cell<Overrides>,
    /// Whether the headers are out, `ngx.eof`, `ngx.on_abort`.
    pub output: Output,
    /// `ngx.arg` in the body_filter phase.
    pub filter_arg: RefCell<FilterArg>,
    /// What `ngx.balancer` set in the `balancer` phase.
    pub balancer: RefCell<super::balancer::BalancerState>,
    /// Cosockets opened by the request's handlers, closed at its end.
    pub sockets: super::api::socket::RequestSockets,
    /// A subrequest (`ngx.is_subrequest`), set at construction.
    pub subrequest: bool,
    /// Reached by an internal redirect (`ngx.req.is_internal`).
    pub internal: Cell<bool>,
    /// How deep among subrequests (0 for a main request), set at construction.
    pub depth: u8,
    /// Runs `ngx.location.capture`'s subrequests (given by the proxy).
    pub runner: Option<Rc<dyn SubRunner>>,
    /// The target of `ngx.exec` (`/path?args`), once called.
    exec: RefCell<Option<String>>,
}

impl ReqCtx {
    /// State for a request with this head and body.
    pub fn new(head: Parts, body: RequestBody, facts: RequestFacts, started: Instant) -> ReqCtx {
        let started_wall = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        ReqCtx {
            phase: Cell::new(Phase::Rewrite),
            head: RefCell::new(head),
            facts,
            started,
            started_wall,
            status: Cell::new(0),
            resp_headers: RefCell::new(HeaderMap::new()),
            out: RefCell::new(Vec::new()),
            exit: Cell::new(None),
            vars: RefCell::new(HashMap::new()),
            ctx: RefCell::new(None),
            upstream: RefCell::new(None),
            body: RefCell::new(body),
            body_data: RefCell::new(None),
            cache_zone: Cell::new(false),
            cache: RefCell::new(CacheDecisions::default()),
            cache_late: Cell::new(Overrides::default()),
            output: Output::default(),
            filter_arg: RefCell::new(FilterArg::default()),
            balancer: RefCell::default(),
            sockets: Default::default(),
            subrequest: false,
            internal: Cell::new(false),
            depth: 0,
            runner: None,
            exec: RefCell::new(None),
        }
    }

    /// Records `ngx.exit(status)`.
    pub fn set_exit(&self, status: i64) {
        self.exit.set(Some(status));
    }

    /// The status given to `ngx.exit`, if it was called in this phase.
    pub fn exit_status(&self) -> Option<i64> {
        self.exit.get()
    }

    /// Hands the (possibly changed) request back for proxying: the head,
    /// and the body (from memory, with its Content-Length, if a handler
    /// read or replaced it).
    /// `keep_copy`: later phases (header_filter, log) will read `ngx.var`,
    /// so a copy of the head stays behind.
    pub fn take_request(&self, keep_copy: bool) -> (Parts, RequestBody) {
        let body = match self.body_data.borrow_mut().take() {
            Some(data) => {
                let mut head = self.head.borrow_mut();
                head.headers.remove(http::header::TRANSFER_ENCODING);
                head.headers.insert(
                    http::header::CONTENT_LENGTH,
                    http::HeaderValue::from(data.len()),
                );
                RequestBody::buffered(data)
            }
            None => std::mem::replace(&mut *self.body.borrow_mut(), RequestBody::empty()),
        };
        (self.take_head(keep_copy), body)
    }

    /// Hands the request head back, keeping a copy for later phases
    /// (`ngx.var` in header_filter and log).
    fn take_head(&self, keep_copy: bool) -> Parts {
        let mut head = self.head.borrow_mut();
        if !keep_copy {
            return std::mem::replace(&mut *head, http::Request::new(()).into_parts().0);
        }
        let mut copy = http::Request::new(()).into_parts().0;
        copy.method = head.method.clone();
        copy.uri = head.uri.clone();
        copy.version = head.version;
        copy.headers = head.headers.clone();
        std::mem::replace(&mut *head, copy)
    }

    /// Records what the upstream exchange produced, for `ngx.var` in the
    /// header_filter and log phases.
    pub fn set_upstream(&self, addr: &str, status: u16, elapsed: std::time::Duration) {
        let mut vars = self.vars.borrow_mut();
        vars.insert("upstream_addr".into(), addr.to_string());
        vars.insert("upstream_status".into(), status.to_string());
        vars.insert(
            "upstream_response_time".into(),
            format!("{:.3}", elapsed.as_secs_f64()),
        );
    }

    /// Records what the cache did (`ngx.var.cache_status`), for the
    /// header_filter and log phases.
    pub fn set_cache_status(&self, status: &str) {
        self.vars
            .borrow_mut()
            .insert("cache_status".into(), status.to_string());
    }

    /// Sends the response headers (the first output does), with the
    /// status set so far (200 if none); `ngx.status` reads it from then on.
    pub fn send_headers(&self) {
        self.output.send_headers(self.status.get());
        if let Some(status) = self.output.sent_status() {
            self.status.set(status);
        }
    }

    /// Records `ngx.exec(target)`; the handler then ends as with `ngx.exit`.
    pub fn set_exec(&self, target: String) {
        *self.exec.borrow_mut() = Some(target);
        // NGX_DONE, what nginx's handlers return after an internal
        // redirect: not 0, so no later handler of the phase runs.
        self.exit.set(Some(-4));
    }

    /// The target of `ngx.exec`, if a handler called it (taken once).
    pub fn take_exec(&self) -> Option<String> {
        self.exec.borrow_mut().take()
    }

    /// Forgets an `ngx.exit(ngx.OK)` between phases.
    pub fn clear_exit(&self) {
        self.exit.set(None);
    }
}

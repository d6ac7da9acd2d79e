//! Per-request state that Lua handlers read and change: the request head
//! (`ngx.req.*`, `ngx.var`), the response being built (`ngx.status`,
//! `ngx.header`, `ngx.say`), `ngx.ctx`, and how the handler ended
//! (`ngx.exit`). One per request, never shared: nothing leaks between
//! requests.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use bytes::{Bytes, BytesMut};
use http::HeaderMap;
use http::request::Parts;

use super::Phase;
use super::light_threads::LightThreads;
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
    /// A handler set `ngx.header.content_length = nil`: the response goes
    /// out without a length (chunked), as nginx's then does.
    pub length_cleared: Cell<bool>,
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
    /// Set once `ngx.req.socket()` handed the body to the script: how many
    /// of its bytes the script has read (the rest goes on upstream).
    pub body_socket: Cell<Option<u64>>,
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
    /// What the connection says about the request (`$connection`,
    /// `$server_addr`, `ngx.req.raw_header`); set by the proxy.
    pub conn: ConnInfo,
    /// What the route says (`$server_name`, `ngx.var[N]`); set by the proxy.
    pub route: RouteInfo,
    /// `$request_id`, made on first use (0 until then).
    pub request_id: Cell<u128>,
    /// The handler runs of a request whose spans are exported (`[tracing]`);
    /// `None` otherwise, and nothing is written down.
    pub phase_runs: crate::otel::PhaseRuns,
    /// The request's trace id under `[tracing]` (`$trace_id`); 0 without.
    pub trace_id: Cell<u128>,
    /// The file holding the body (`ngx.req.get_body_file`): the temp file
    /// a read body was spooled to when larger than [`BODY_BUFFER_SIZE`],
    /// or the one `ngx.req.set_body_file` named.
    pub body_file: RefCell<Option<BodyFile>>,
    /// The body `ngx.req.init_body` / `append_body` are building.
    pub new_body: RefCell<Option<NewBody>>,
    /// Header names as `ngx.req.set_header` was given them, for
    /// `ngx.req.get_headers(_, true)`.
    pub header_case: RefCell<Vec<String>>,
    /// Light threads (`ngx.thread.spawn`) of the running phase: a phase
    /// ends only once they have, as in ngx_lua.
    pub light: LightThreads,
}

/// nginx's `client_body_buffer_size` on 64-bit platforms (two pages): a
/// body read by `ngx.req.read_body` (or built by `ngx.req.init_body`
/// without a size) larger than this is written to a temp file as well
/// (`ngx.req.get_body_file`), and `ngx.req.get_body_data` returns nil for
/// it, as in ngx_lua.
pub const BODY_BUFFER_SIZE: usize = 16 * 1024;

/// The file a request body is in.
#[derive(Debug)]
pub struct BodyFile {
    /// Its path.
    pub path: std::path::PathBuf,
    /// Set when the file goes with the request (a temp file, or
    /// `set_body_file(path, true)`): removed when this is dropped.
    pub remove: Option<tempfile::TempPath>,
}

/// A body being built by `ngx.req.init_body` / `append_body`.
#[derive(Debug, Default)]
pub struct NewBody {
    /// The data so far.
    pub data: BytesMut,
    /// The buffer size given to `init_body` (over it, the body goes to a
    /// temp file when finished).
    pub buffer_size: usize,
}

/// What the connection carrying a request tells its Lua code.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    /// The address the request arrived on (`$server_addr`).
    pub server_addr: IpAddr,
    /// The client's port (`$remote_port`).
    pub remote_port: u16,
    /// The connection's number in the process (`$connection`).
    pub serial: u64,
    /// Requests on the connection so far, this one included
    /// (`$connection_requests`).
    pub requests: u64,
    /// The HTTP/1 head as received (empty for HTTP/2).
    pub raw_head: Bytes,
}

impl Default for ConnInfo {
    fn default() -> Self {
        ConnInfo {
            server_addr: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            remote_port: 0,
            serial: 0,
            requests: 0,
            raw_head: Bytes::new(),
        }
    }
}

/// What the route serving a request tells its Lua code.
#[derive(Debug, Clone, Default)]
pub struct RouteInfo {
    /// The route's first exact host (`$server_name`; the request's host
    /// when the route names none).
    pub server_name: Option<Arc<str>>,
    /// The route's `path_regex`, whose captures `ngx.var[N]` reads.
    pub path_regex: Option<regex::Regex>,
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
            length_cleared: Cell::new(false),
            out: RefCell::new(Vec::new()),
            exit: Cell::new(None),
            vars: RefCell::new(HashMap::new()),
            ctx: RefCell::new(None),
            upstream: RefCell::new(None),
            body: RefCell::new(body),
            body_data: RefCell::new(None),
            body_socket: Cell::new(None),
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
            conn: ConnInfo::default(),
            route: RouteInfo::default(),
            request_id: Cell::new(0),
            phase_runs: std::cell::RefCell::new(None),
            trace_id: Cell::new(0),
            body_file: RefCell::new(None),
            new_body: RefCell::new(None),
            header_case: RefCell::new(Vec::new()),
            light: LightThreads::default(),
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
    /// so a copy of the head stays behind. `take_body` false: the body
    /// stays here (a handler still running may read it) and an empty one
    /// is returned.
    pub fn take_request(&self, keep_copy: bool, take_body: bool) -> (Parts, RequestBody) {
        if !take_body {
            return (self.take_head(keep_copy), RequestBody::empty());
        }
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
            None => {
                if let Some(read) = self.body_socket.get().filter(|&n| n > 0) {
                    self.shorten_length(read);
                    self.body_socket.set(Some(0));
                }
                std::mem::replace(&mut *self.body.borrow_mut(), RequestBody::empty())
            }
        };
        (self.take_head(keep_copy), body)
    }

    /// Takes `read` bytes (read by the script through `ngx.req.socket()`)
    /// off the request's Content-Length: the upstream gets the rest.
    fn shorten_length(&self, read: u64) {
        let mut head = self.head.borrow_mut();
        let length = head
            .headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        if let Some(length) = length {
            head.headers.insert(
                http::header::CONTENT_LENGTH,
                http::HeaderValue::from(length.saturating_sub(read)),
            );
        }
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

    /// Records what was sent to the client (`$bytes_sent`: head and body;
    /// `$body_bytes_sent`), for the log phase.
    pub fn set_sent(&self, head: u64, body: u64) {
        let mut vars = self.vars.borrow_mut();
        vars.insert("bytes_sent".into(), (head + body).to_string());
        vars.insert("body_bytes_sent".into(), body.to_string());
    }

    /// `$request_id`: 32 hex digits, random, made on first use and the
    /// same for the rest of the request.
    pub fn request_id(&self) -> String {
        let mut id = self.request_id.get();
        while id == 0 {
            let mut bytes = [0u8; 16];
            if getrandom::fill(&mut bytes).is_err() {
                bytes = fastrand::u128(..).to_le_bytes();
            }
            id = u128::from_le_bytes(bytes);
        }
        self.request_id.set(id);
        format!("{id:032x}")
    }

    /// Forgets an `ngx.exit(ngx.OK)` between phases.
    pub fn clear_exit(&self) {
        self.exit.set(None);
    }
}

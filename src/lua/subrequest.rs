//! What `ngx.location.capture` hands the proxy and gets back: a
//! [`SubRequest`] to run through moongate's own routes in-process, and the
//! [`SubResponse`] it produced, buffered whole. The Lua side must not know
//! the proxy (it sits below it), so the proxy gives each request with Lua
//! handlers a [`SubRunner`] that runs the steps of a request for it.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;

use bytes::Bytes;
use http::{HeaderMap, Method, Uri};

use crate::vars::RequestFacts;

/// nginx's limit on nested subrequests (`NGX_HTTP_MAX_SUBREQUESTS`): a
/// subrequest deeper than this is refused ("subrequests cycle").
pub const MAX_DEPTH: u8 = 50;

/// One subrequest, as `ngx.location.capture` built it from its options.
pub struct SubRequest {
    /// `method` (GET by default).
    pub method: Method,
    /// The URI with its query (the uri's own args, then `args`).
    pub uri: Uri,
    /// The parent's request headers (nginx: subrequests inherit them),
    /// with Content-Length set for the body given to the subrequest.
    pub headers: HeaderMap,
    /// The body: the `body` option, or the parent's (read) body for a
    /// POST/PUT or with `always_forward_body`.
    pub body: Option<Bytes>,
    /// The parent's host, original URI, client and scheme
    /// (`$request_uri` of a subrequest is its main request's, as in nginx).
    pub facts: RequestFacts,
    /// How deep the subrequest is (1 for a main request's subrequest).
    pub depth: u8,
    /// The `ctx` option: the table to be the subrequest's `ngx.ctx`.
    pub ctx: Option<mlua::RegistryKey>,
    /// Variables the subrequest starts with (`copy_all_vars`, `vars`).
    pub vars: HashMap<String, String>,
}

/// What a subrequest answered.
pub struct SubResponse {
    /// `res.status`.
    pub status: u16,
    /// `res.header`.
    pub headers: HeaderMap,
    /// `res.body`, cut at the capture limit or where the body failed.
    pub body: Bytes,
    /// `res.truncated`: the body failed (e.g. the upstream closed early)
    /// or passed the capture limit.
    pub truncated: bool,
    /// The subrequest's variables when it ended (`share_all_vars` copies
    /// them back into the parent).
    pub vars: HashMap<String, String>,
}

/// Runs subrequests for the requests of one main request (one per main
/// request, shared by its subrequests).
pub trait SubRunner {
    /// Counts one more subrequest of the main request; false once the
    /// main request has issued as many as it may.
    fn admit(&self) -> bool;

    /// Runs `req` through the routes and collects its response.
    fn run(self: Rc<Self>, req: SubRequest) -> Pin<Box<dyn Future<Output = SubResponse>>>;
}

//! Subrequests (`ngx.location.capture`) and internal redirects
//! (`ngx.exec`) as the proxy runs them. A subrequest enters the steps of
//! [`super`] at step 2 (route) with a synthetic request and its response
//! is buffered whole for the Lua caller ([`Tree`], the
//! [`SubRunner`] of a main request and all its subrequests); an internal
//! redirect starts the same request at step 2 again with the new URI.
//! [`Lineage`] says which of these a pass through the steps is, and what
//! its Lua state starts with.
//!
//! As in nginx, subrequests skip the access phase (Lua `access` handlers
//! and the bundled policies that run there: nginx's access phase does
//! nothing for a subrequest), the rate limits (they apply once per main
//! request) and the access log and `log` handlers (nginx's
//! `log_subrequest off`); they run the target route's rewrite, Lua
//! rewrite/content and header_filter handlers and its target.

use std::cell::Cell;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use http::{Request, Response, Version};
use http_body_util::BodyExt;

use super::ConnCtx;
use super::request::RequestCtx;
use crate::body::{RequestBody, ResponseBody};
use crate::lua::request::ReqCtx;
use crate::lua::subrequest::{SubRequest, SubResponse, SubRunner};
use crate::snapshot::Snapshot;

/// Most subrequests one main request may issue in all (with their own
/// subrequests): past this `ngx.location.capture` fails, so a handler
/// capturing in an endless loop ends instead of running forever.
const MAX_SUBREQUESTS: u32 = 4096;

/// Most bytes of a subrequest's body kept for `res.body`; past this the
/// body is cut and `res.truncated` is true.
const MAX_CAPTURED_BODY: usize = 64 << 20;

/// nginx's limit on internal redirects of one request (`uri_changes`):
/// one more is answered with 500 ("rewrite or internal redirection cycle").
pub(super) const MAX_INTERNAL_REDIRECTS: u32 = 10;

/// Runs the subrequests of one main request (and of its subrequests), on
/// the connection and snapshot of the main request.
pub(super) struct Tree {
    conn: Rc<ConnCtx>,
    snap: Arc<Snapshot>,
    /// Subrequests issued so far.
    issued: Cell<u32>,
}

impl SubRunner for Tree {
    fn admit(&self) -> bool {
        let n = self.issued.get();
        if n >= MAX_SUBREQUESTS {
            return false;
        }
        self.issued.set(n + 1);
        true
    }

    fn run(self: Rc<Self>, sub: SubRequest) -> Pin<Box<dyn Future<Output = SubResponse>>> {
        Box::pin(async move {
            let (mut head, ()) = Request::new(()).into_parts();
            head.method = sub.method.clone();
            head.uri = sub.uri;
            head.version = Version::HTTP_11;
            head.headers = sub.headers;
            let body = sub
                .body
                .map_or_else(RequestBody::empty, RequestBody::buffered);
            let mut rq = RequestCtx::subrequest(sub.method, sub.facts);
            let lineage = Lineage {
                depth: sub.depth,
                internal: false,
                tree: Some(self.clone()),
                ctx: sub.ctx,
                vars: sub.vars,
            };
            let mut entry = None;
            let (conn, snap) = (&self.conn, &self.snap);
            let answer =
                super::routed(head, body, conn, snap, &mut rq, &mut entry, None, lineage).await;
            // moongate's own error answers stay without a body, as
            // nginx's error pages do in a subrequest (a `return 500` or
            // `ngx.exit(ngx.ERROR)` captures as status 500, body "").
            let resp = answer.unwrap_or_else(|e| super::error_response(&e));
            let vars = rq
                .lua
                .as_ref()
                .map(|l| l.ctx.vars.borrow().clone())
                .unwrap_or_default();
            collect(resp, vars).await
        })
    }
}

/// Where one pass through the steps stands: a main request or a
/// subrequest (how deep), reached by an internal redirect or not, and what
/// its Lua state starts with.
pub(super) struct Lineage {
    /// 0 for a main request.
    pub depth: u8,
    /// Reached by `ngx.exec`.
    pub internal: bool,
    /// The main request's runner, made when a route with Lua needs it.
    pub tree: Option<Rc<Tree>>,
    /// `ngx.ctx` given by the `ctx` option of the capture.
    pub ctx: Option<mlua::RegistryKey>,
    /// Variables to start with (capture's `vars` / `copy_all_vars`, or
    /// those set before an `ngx.exec`).
    pub vars: HashMap<String, String>,
}

impl Lineage {
    /// A main request as it arrived.
    pub fn main() -> Lineage {
        Lineage {
            depth: 0,
            internal: false,
            tree: None,
            ctx: None,
            vars: HashMap::new(),
        }
    }

    /// The same request after `ngx.exec`: `ngx.ctx` is gone (as in
    /// nginx, an internal redirect clears the modules' contexts), the
    /// variables set so far (`left`) stay.
    pub fn redirected(&mut self, left: Option<&ReqCtx>) {
        self.internal = true;
        self.ctx = None;
        self.vars = left.map(|c| c.vars.borrow().clone()).unwrap_or_default();
    }

    /// Fills in a new Lua request state: what it is, its runner for
    /// subrequests, the `ngx.ctx` and variables it starts with.
    pub fn apply(&mut self, ctx: &mut ReqCtx, conn: &Rc<ConnCtx>, snap: &Arc<Snapshot>) {
        ctx.subrequest = self.depth > 0;
        ctx.depth = self.depth;
        ctx.internal.set(self.internal);
        let tree = self.tree.get_or_insert_with(|| {
            Rc::new(Tree {
                conn: conn.clone(),
                snap: snap.clone(),
                issued: Cell::new(0),
            })
        });
        ctx.runner = Some(tree.clone());
        if let Some(key) = self.ctx.take() {
            *ctx.ctx.borrow_mut() = Some(key);
        }
        if !self.vars.is_empty() {
            ctx.vars.borrow_mut().extend(std::mem::take(&mut self.vars));
        }
    }
}

/// A subrequest's response, its body read whole (up to
/// [`MAX_CAPTURED_BODY`]).
async fn collect(resp: Response<ResponseBody>, vars: HashMap<String, String>) -> SubResponse {
    let (parts, mut body) = resp.into_parts();
    let mut out = BytesMut::new();
    let mut truncated = false;
    while let Some(frame) = body.frame().await {
        let data = match frame {
            Ok(frame) => match frame.into_data() {
                Ok(data) => data,
                Err(_) => continue,
            },
            Err(e) => {
                tracing::warn!(error = %e, "subrequest body cut short");
                truncated = true;
                break;
            }
        };
        let room = MAX_CAPTURED_BODY - out.len();
        if data.len() > room {
            out.extend_from_slice(&data[..room]);
            truncated = true;
            break;
        }
        out.extend_from_slice(&data);
    }
    SubResponse {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body: Bytes::from(out),
        truncated,
        vars,
    }
}

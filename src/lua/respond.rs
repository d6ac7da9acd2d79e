//! What a request's Lua handlers produce for the proxy: a response built
//! from `ngx.status`, `ngx.header` and `ngx.say` output when a handler ends
//! the request, and the `log` phase run once the response has been sent.

use std::rc::Rc;

use http::header::{self, HeaderValue};
use http::{Response, StatusCode};

use super::Phase;
use super::program::{RoutePhases, ScriptId};
use super::request::ReqCtx;
use super::vm::{Outcome, Vm};
use crate::body::ResponseBody;

/// What the rewrite, access and content handlers decided.
pub enum Flow {
    /// Go on to the route's target (upstream, static files).
    Continue,
    /// Answer with this response (ngx.exit, or the content phase).
    Respond(Box<Response<ResponseBody>>),
    /// A handler failed (error or budget): the message, for the log.
    Failed(String),
}

/// Runs the `rewrite` and `access` handlers in that order.
pub async fn access_phases(vm: &Vm, phases: &RoutePhases, ctx: &Rc<ReqCtx>) -> Flow {
    let handlers = phases
        .rewrite
        .iter()
        .map(|id| (Phase::Rewrite, *id))
        .chain(phases.access.iter().map(|id| (Phase::Access, *id)));
    for (phase, id) in handlers {
        match vm.run(id, phase, ctx).await {
            Outcome::Next => {}
            // ngx.exit(ngx.OK) ends this phase only.
            Outcome::Exit(0) => {}
            Outcome::Exit(code) => return Flow::Respond(Box::new(exit_response(ctx, code))),
            Outcome::Failed(m) => return Flow::Failed(m),
        }
    }
    Flow::Continue
}

/// Runs the `content` handler, if the route has one: it answers the request.
pub async fn content_phase(vm: &Vm, phases: &RoutePhases, ctx: &Rc<ReqCtx>) -> Flow {
    let Some(id) = phases.content else {
        return Flow::Continue;
    };
    match vm.run(id, Phase::Content, ctx).await {
        Outcome::Next | Outcome::Exit(0) => Flow::Respond(Box::new(exit_response(ctx, 0))),
        Outcome::Exit(code) => Flow::Respond(Box::new(exit_response(ctx, code))),
        Outcome::Failed(m) => Flow::Failed(m),
    }
}

/// Runs the `header_filter` handlers on a response's status and headers.
pub async fn header_filter(
    vm: &Vm,
    ids: &[ScriptId],
    ctx: &Rc<ReqCtx>,
    resp: &mut Response<ResponseBody>,
) -> Result<(), String> {
    ctx.status.set(resp.status().as_u16());
    *ctx.resp_headers.borrow_mut() = std::mem::take(resp.headers_mut());
    let mut outcome = Outcome::Next;
    for id in ids {
        outcome = vm.run(*id, Phase::HeaderFilter, ctx).await;
        if matches!(outcome, Outcome::Failed(_)) {
            break;
        }
    }
    *resp.headers_mut() = std::mem::take(&mut *ctx.resp_headers.borrow_mut());
    if let Ok(status) = StatusCode::from_u16(ctx.status.get()) {
        *resp.status_mut() = status;
    }
    match outcome {
        Outcome::Failed(m) => Err(m),
        _ => Ok(()),
    }
}

/// The response for `ngx.exit(code)` (0 in the content phase: "done").
fn exit_response(ctx: &ReqCtx, code: i64) -> Response<ResponseBody> {
    let out = std::mem::take(&mut *ctx.out.borrow_mut());
    let status = match code {
        200..=999 => code as u16,
        -1 => 500,
        _ if ctx.status.get() > 0 => ctx.status.get(),
        _ => 200,
    };
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let headers = std::mem::take(&mut *ctx.resp_headers.borrow_mut());
    // An error status with nothing printed gets moongate's own error page.
    let mut resp = if out.is_empty() && status.as_u16() >= 300 {
        crate::error_page::response(status)
    } else {
        Response::new(ResponseBody::full(out))
    };
    *resp.status_mut() = status;
    resp.headers_mut().extend(headers);
    if !resp.headers().contains_key(header::CONTENT_TYPE) && status.as_u16() < 300 {
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
    }
    resp
}

/// Runs the route's `log` handlers `ids` for a request whose response
/// (with `status`) is done, on the worker's task set: nothing waits for them.
pub fn run_log_phase(vm: Rc<Vm>, ctx: Rc<ReqCtx>, ids: Vec<ScriptId>, status: u16) {
    ctx.status.set(status);
    tokio::task::spawn_local(async move {
        for id in ids {
            if let Outcome::Failed(m) = vm.run(id, Phase::Log, &ctx).await {
                tracing::error!(target: "moongate::lua", "log phase: {m}");
            }
        }
    });
}

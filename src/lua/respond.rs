//! What a request's Lua handlers produce for the proxy: a response built
//! from `ngx.status`, `ngx.header` and `ngx.say` output when a handler ends
//! the request, and the `log` phase run once the response has been sent.

use std::rc::Rc;

use http::header::{self, HeaderValue};
use http::{Response, StatusCode};

use super::Phase;
use super::program::{RoutePhases, ScriptId};
use super::request::ReqCtx;
use super::stream::{ContentBody, Run, Started, until_headers};
use super::vm::{AbortGuard, Outcome, Vm};
use crate::body::{Kind, ResponseBody};

/// What the rewrite, access and content handlers decided.
pub enum Flow {
    /// Go on to the route's target (upstream, static files).
    Continue,
    /// Answer with this response (ngx.exit, or the content phase).
    Respond(Box<Response<ResponseBody>>),
    /// A handler failed (error or budget): the message, for the log.
    Failed(String),
}

/// Runs the `rewrite` and `access` handlers in that order. Dropped on the
/// way (the client went away), the request's `ngx.on_abort` callback runs.
pub async fn access_phases(vm: &Rc<Vm>, phases: &RoutePhases, ctx: &Rc<ReqCtx>) -> Flow {
    let guard = AbortGuard::new(vm, ctx);
    let flow = rewrite_and_access(vm, phases, ctx).await;
    guard.disarm();
    flow
}

async fn rewrite_and_access(vm: &Vm, phases: &RoutePhases, ctx: &Rc<ReqCtx>) -> Flow {
    let handlers = phases
        .rewrite
        .iter()
        .map(|id| (Phase::Rewrite, *id))
        .chain(phases.access.iter().map(|id| (Phase::Access, *id)));
    for (phase, id) in handlers {
        match vm.run(id, phase, ctx).await {
            // A handler that sent output ends the request there, as in
            // ngx_lua (the headers are out: nothing else may answer).
            Outcome::Next | Outcome::Exit(0) if ctx.output.headers_sent() => {
                return Flow::Respond(Box::new(exit_response(ctx, 0)));
            }
            Outcome::Next => {}
            // ngx.exit(ngx.OK) ends this phase only.
            Outcome::Exit(0) => {}
            Outcome::Exit(code) => return Flow::Respond(Box::new(exit_response(ctx, code))),
            Outcome::Failed(m) => return Flow::Failed(m),
        }
    }
    Flow::Continue
}

/// Runs the `content` handler, if the route has one: it answers the
/// request. A handler that sends its headers and then waits (`ngx.flush`,
/// `ngx.sleep`, a socket) answers with a body that streams the rest of
/// its output as it runs; `route` names it in the log if it fails then.
pub async fn content_phase(
    vm: &Rc<Vm>,
    phases: &RoutePhases,
    ctx: &Rc<ReqCtx>,
    route: &str,
) -> Flow {
    let Some(id) = phases.content else {
        return Flow::Continue;
    };
    let guard = AbortGuard::new(vm, ctx);
    let run: Run = {
        let (vm, ctx) = (vm.clone(), ctx.clone());
        Box::pin(async move { vm.run(id, Phase::Content, &ctx).await })
    };
    let started = until_headers(run, ctx).await;
    guard.disarm();
    match started {
        Started::Done(Outcome::Next | Outcome::Exit(0)) => {
            Flow::Respond(Box::new(exit_response(ctx, 0)))
        }
        Started::Done(Outcome::Exit(code)) => Flow::Respond(Box::new(exit_response(ctx, code))),
        Started::Done(Outcome::Failed(m)) => Flow::Failed(m),
        Started::Streaming(run) => {
            let body = ContentBody::new(run, vm.clone(), ctx.clone(), route.to_string());
            let body = ResponseBody::from_kind(Kind::Stream(Box::pin(body)));
            Flow::Respond(Box::new(respond_with(ctx, 0, body, true)))
        }
    }
}

/// Adds the headers that rewrite/access handlers set with `ngx.header` to
/// a response they did not make (upstream, cache, static file), as
/// ngx_lua does: both the handler's and the response's values go out,
/// except for the framing and type fields, where the response's win.
pub fn merge_headers(ctx: &ReqCtx, resp: &mut Response<ResponseBody>) {
    let set = std::mem::take(&mut *ctx.resp_headers.borrow_mut());
    if !set.is_empty() {
        keep_header_case(ctx, resp);
    }
    let mut last = None;
    for (name, value) in set {
        let Some(name) = name.or(last.take()) else {
            continue;
        };
        last = Some(name.clone());
        let owned_by_response = matches!(
            name,
            header::CONTENT_LENGTH | header::TRANSFER_ENCODING | header::CONNECTION
        ) || (name == header::CONTENT_TYPE
            && resp.headers().contains_key(&name));
        if !owned_by_response {
            resp.headers_mut().append(name, value);
        }
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
    ctx.length_cleared.set(false);
    let mut outcome = Outcome::Next;
    for id in ids {
        outcome = vm.run(*id, Phase::HeaderFilter, ctx).await;
        if matches!(outcome, Outcome::Failed(_) | Outcome::Exit(200..)) {
            break;
        }
    }
    if let Outcome::Exit(code @ 200..=999) = outcome {
        // `ngx.exit(status)` here replaces the response with that status's
        // own answer, as ngx_lua's filter finalization does.
        let status = StatusCode::from_u16(code as u16).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        *resp = crate::error_page::response(status);
        ctx.resp_headers.borrow_mut().clear();
        return Ok(());
    }
    *resp.headers_mut() = std::mem::take(&mut *ctx.resp_headers.borrow_mut());
    if let Ok(status) = StatusCode::from_u16(ctx.status.get()) {
        *resp.status_mut() = status;
    }
    if ctx.length_cleared.get() {
        resp.body_mut().hide_length();
    }
    keep_header_case(ctx, resp);
    match outcome {
        Outcome::Failed(m) => Err(m),
        _ => Ok(()),
    }
}

/// The response for `ngx.exit(code)` (0 in the content phase: "done").
/// Once the headers are out (`ngx.say`, `ngx.send_headers`, ...) their
/// status stands whatever `code` says, as in nginx.
fn exit_response(ctx: &ReqCtx, code: i64) -> Response<ResponseBody> {
    let mut out = std::mem::take(&mut *ctx.out.borrow_mut());
    let printed = !out.is_empty();
    // A `Content-Length` the handler set is what goes out, as with
    // nginx: a longer body is cut to it, a shorter one loses the header.
    let declared = ctx
        .resp_headers
        .borrow()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.trim().parse::<usize>().ok());
    match declared {
        Some(n) if n < out.len() => out.truncate(n),
        Some(n) if n > out.len() => {
            tracing::error!(target: "moongate::lua", "the handler set Content-Length: {n} and sent {} bytes; the header is dropped", out.len());
            ctx.resp_headers.borrow_mut().remove(header::CONTENT_LENGTH);
        }
        _ => {}
    }
    let len = out.len();
    let mut resp = respond_with(ctx, code, ResponseBody::full(out), printed);
    // The whole body is here: its length is known to header_filter
    // handlers (`ngx.resp.get_headers()["Content-Length"]`) as to the client.
    // Unless the handler cleared the header: then it goes out chunked.
    if ctx.length_cleared.get() {
        resp.body_mut().hide_length();
    } else if printed
        && !matches!(
            resp.status(),
            StatusCode::NO_CONTENT | StatusCode::NOT_MODIFIED
        )
        && !resp.headers().contains_key(header::CONTENT_LENGTH)
    {
        resp.headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    }
    not_modified(ctx, &mut resp);
    resp
}

/// nginx's not-modified filter over a Lua handler's 200: the request's
/// `If-None-Match` / `If-Modified-Since` against the `ETag` /
/// `Last-Modified` the handler set answer 304 (or 412 for a failed
/// `If-Match` / `If-Unmodified-Since`).
fn not_modified(ctx: &ReqCtx, resp: &mut Response<ResponseBody>) {
    if resp.status() != StatusCode::OK || ctx.subrequest {
        return;
    }
    let validators = crate::conditional::Validators::of_response(resp.headers());
    if validators == crate::conditional::Validators::default() {
        return;
    }
    let head = ctx.head.borrow();
    if head.method != http::Method::GET && head.method != http::Method::HEAD {
        return;
    }
    let status = match crate::conditional::evaluate(&head.headers, &validators) {
        crate::conditional::Precondition::Proceed => return,
        crate::conditional::Precondition::NotModified => StatusCode::NOT_MODIFIED,
        crate::conditional::Precondition::Failed => StatusCode::PRECONDITION_FAILED,
    };
    *resp.status_mut() = status;
    *resp.body_mut() = ResponseBody::empty();
    resp.headers_mut().remove(header::CONTENT_LENGTH);
}

/// The response a Lua handler made, with `body`; `printed`: the handler
/// output something (else an error status gets moongate's error page).
fn respond_with(
    ctx: &ReqCtx,
    code: i64,
    body: ResponseBody,
    printed: bool,
) -> Response<ResponseBody> {
    let sent = ctx.output.sent_status();
    let status = match (sent, code) {
        (Some(status), _) => status,
        (None, 200..=999) => code as u16,
        (None, -1) => 500,
        (None, _) if ctx.status.get() > 0 => ctx.status.get(),
        (None, _) => 200,
    };
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let headers = std::mem::take(&mut *ctx.resp_headers.borrow_mut());
    // `ngx.exit(status)` with nothing printed gets moongate's own error
    // page; a handler that set `ngx.status` and returned sends an empty
    // body, as ngx_lua's does.
    let mut resp = if !printed && sent.is_none() && (code >= 300 || code == -1) {
        crate::error_page::response(status)
    } else {
        Response::new(body)
    };
    *resp.status_mut() = status;
    resp.headers_mut().extend(headers);
    if !resp.headers().contains_key(header::CONTENT_TYPE) && status.as_u16() < 300 {
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
    }
    keep_header_case(ctx, &mut resp);
    resp
}

/// Keeps how the handlers spelled header names (`ngx.header["X-Foo"]`)
/// with the response, for HTTP/1 heads to write them so.
fn keep_header_case(ctx: &ReqCtx, resp: &mut Response<ResponseBody>) {
    let names = ctx.header_case.borrow();
    if !names.is_empty() {
        resp.extensions_mut()
            .insert(crate::h1_wire::HeaderCase(names.clone()));
    }
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

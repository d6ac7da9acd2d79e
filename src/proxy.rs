//! The order of the phases for one request — the only module that knows
//! it. Each step below returns a value this function acts on; the steps
//! don't call each other.
//!
//! 1. request checks (SPEC §10; `proxy/checks.rs`): framing, head limits, the
//!    host (authority over `Host`), underscored names, body size
//! 2. route (host, path, method) → 404 / 405 / a [`RouteEntry`](crate::snapshot::RouteEntry)
//! 3. rewrite
//! 4. Lua `rewrite`, `access` handlers (may answer themselves)
//! 5. rate limits (`[limit.NAME]` zones; `proxy/limits.rs`): 429 + `Retry-After`,
//!    or `RateLimit-*` headers and places held in concurrency zones
//! 6. Lua `content` handler (answers instead of a target)
//! 7. target: static files, or an upstream (`proxy/upstream.rs`: forwarding headers, balance,
//!    pool, retries), with protocol upgrades tunnelled both ways; on a
//!    route with `cache = "NAME"` the cache is looked up first (a fresh
//!    hit answers) and the upstream's answer handed to it after
//! 8. Lua `header_filter`; the Lua `log` handler and the access log run
//!    when the body has been sent (concurrency places are released then)
//!
//! moongate's own error answers get their body last, in the format the
//! client's `Accept` prefers ([`crate::error_page`]).

pub(crate) mod checks;
mod limits;
mod upstream;

use limits::{Limits, Release};
use upstream::{UpstreamTarget, cached_upstream, proxy_upstream};

use std::convert::Infallible;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri};

use crate::access_log::AccessRecord;
use crate::body::{ClientBody, Kind, OnComplete, RequestBody, ResponseBody};
use crate::error::ProxyError;
use crate::error_page;
use crate::forward;
use crate::interim::Interim;
use crate::limit::Permit;
use crate::lua::{
    self,
    request::ReqCtx,
    respond::{Flow, LogPhase},
};
use crate::route::RouteMatch;
use crate::snapshot::{Snapshot, Target};
use crate::state::Shared;
use crate::worker_local::WorkerLocal;

/// What one client connection tells the requests it carries.
pub struct ConnCtx {
    /// The client's socket address.
    pub peer: SocketAddr,
    /// The client's IP address as text, formatted once per connection
    /// (it goes into the forwarding headers of every request).
    pub peer_ip_text: HeaderValue,
    /// Our socket address (`$server_port`).
    pub local: SocketAddr,
    /// "http" or "https".
    pub scheme: &'static str,
    /// State shared by the whole server.
    pub shared: Arc<Shared>,
    /// What the worker thread serving the connection owns (its pools, Lua
    /// VMs, …).
    pub worker: Rc<WorkerLocal>,
}

/// What the log needs to know about how a request was served.
#[derive(Default)]
struct Served {
    route: Option<String>,
    upstream_addr: Option<String>,
    upstream_time: Option<Duration>,
    /// The route's Lua `log` handler, with the VM and request state it runs on.
    lua_log: Option<(Rc<lua::vm::Vm>, Rc<ReqCtx>, Vec<lua::ScriptId>)>,
    /// Places held in concurrency zones, released when the response is done.
    permits: Vec<Permit>,
    /// What the route's cache did (`$cache_status`).
    cache_status: Option<String>,
}

/// Serves one request (the connection's service function). `interim`
/// takes interim responses (103 Early Hints) for a client that can
/// receive them.
pub async fn handle(
    req: Request<ClientBody>,
    conn: Rc<ConnCtx>,
    interim: Option<Arc<Interim>>,
) -> Result<Response<ResponseBody>, Infallible> {
    let started = Instant::now();
    let snap = conn.shared.snapshot.load_full();
    let method = req.method().clone();
    let version = req.version();
    let uri = req.uri().clone();
    let accept = req.headers().get(header::ACCEPT).cloned();
    let mut served = Served::default();
    let mut resp = match serve(req, &conn, &snap, &mut served, interim.as_deref()).await {
        Ok(r) => r,
        Err(e) => error_response(&e),
    };
    // Answer in the client's protocol version, whatever the peer spoke.
    *resp.version_mut() = version;
    let server = if snap.server.server_tokens {
        concat!("moongate/", env!("CARGO_PKG_VERSION"))
    } else {
        "moongate"
    };
    error_page::render(&mut resp, accept.as_ref(), server);
    if !resp.headers().contains_key(header::SERVER) {
        resp.headers_mut()
            .insert(header::SERVER, HeaderValue::from_static(server));
    }
    let status = resp.status().as_u16();
    let record = AccessRecord {
        enabled: conn.shared.access_log.enabled(),
        started,
        client: conn.peer.ip(),
        method,
        uri,
        status,
        route: served.route,
        upstream_addr: served.upstream_addr,
        upstream_time: served.upstream_time,
        cache_status: served.cache_status,
    };
    let hook: Box<dyn OnComplete> = match served.lua_log {
        Some((vm, ctx, ids)) => Box::new(LogPhase {
            vm,
            ids,
            ctx,
            status,
            next: Box::new(record),
        }),
        None => Box::new(record),
    };
    let hook: Box<dyn OnComplete> = if served.permits.is_empty() {
        hook
    } else {
        Box::new(Release {
            permits: served.permits,
            next: hook,
        })
    };
    resp.body_mut().set_on_complete(hook);
    Ok(resp)
}

async fn serve(
    req: Request<ClientBody>,
    conn: &ConnCtx,
    snap: &Snapshot,
    served: &mut Served,
    interim: Option<&Interim>,
) -> Result<Response<ResponseBody>, ProxyError> {
    // 1. Request checks.
    let (mut parts, body) = req.into_parts();
    let host = checks::check(&mut parts, &snap.server)?;

    // 2. Route.
    let entry = match snap.router.find(&host, parts.uri.path(), &parts.method) {
        RouteMatch::Found(e) => e,
        RouteMatch::NotFound => return Ok(error_page::response(StatusCode::NOT_FOUND)),
        RouteMatch::MethodNotAllowed { allow } => {
            let mut resp = error_page::response(StatusCode::METHOD_NOT_ALLOWED);
            let list = allow
                .iter()
                .map(Method::as_str)
                .collect::<Vec<_>>()
                .join(", ");
            if let Ok(v) = HeaderValue::from_str(&list) {
                resp.headers_mut().insert(header::ALLOW, v);
            }
            return Ok(resp);
        }
    };
    served.route = Some(entry.name.clone());

    // 3. Rewrite.
    let original_uri = parts.uri.clone();
    if let Some(new_path) = entry
        .rewrite
        .as_ref()
        .and_then(|r| r.apply(parts.uri.path()))
    {
        let query = parts
            .uri
            .query()
            .map(|q| format!("?{q}"))
            .unwrap_or_default();
        let uri: Uri = format!("{new_path}{query}")
            .parse()
            .map_err(|_| ProxyError::BadRequest("rewrite produced an invalid URI"))?;
        parts.uri = uri;
    }

    let real_ip =
        forward::real_client_ip(conn.peer.ip(), &parts.headers, &snap.server.trusted_proxies);
    let mut body = RequestBody::limited(
        body,
        snap.server.client_max_body_size,
        snap.server.client_body_timeout,
    );

    // 4. Lua rewrite and access handlers; 5. rate limits, after the access
    // phase (so it may refuse or pick first, as API gateways do) and before
    // 6. the Lua content handler or the target.
    let limits = Limits {
        entry,
        request_uri: original_uri.path_and_query().map_or("/", |p| p.as_str()),
        host: &host,
        client: real_ip,
        conn,
    };
    let mut lua_response = None;
    let mut limit_headers = http::HeaderMap::new();
    let lua = if entry.lua.is_empty() {
        if let Err(refused) = limits.check(&parts, served, &mut limit_headers).await {
            return Ok(*refused);
        }
        None
    } else {
        let vm = conn
            .worker
            .lua
            .for_program(&snap.lua)
            .map_err(ProxyError::Lua)?;
        let ctx = Rc::new(ReqCtx::new(
            parts,
            body,
            host.clone(),
            real_ip,
            conn.scheme,
            conn.local.port(),
        ));
        ctx.cache_zone.set(entry.cache.is_some());
        let mut flow = lua::respond::access_phases(&vm, &entry.lua, &ctx).await;
        if matches!(flow, Flow::Continue) {
            let pending = limits.start(&ctx.head.borrow());
            let checked = limits.finish(pending, served, &mut limit_headers).await;
            if let Err(refused) = checked {
                return Ok(*refused);
            }
            flow = lua::respond::content_phase(&vm, &entry.lua, &ctx).await;
        }
        match flow {
            Flow::Continue => {}
            Flow::Respond(resp) => lua_response = Some(*resp),
            Flow::Failed(m) => return Err(ProxyError::Lua(format!("{}: {m}", entry.name))),
        }
        (parts, body) = ctx.take_request(entry.lua.runs_after_response());
        Some((vm, ctx))
    };
    // `mg.upstream.set(name)` replaces the route's target.
    let chosen = lua
        .as_ref()
        .and_then(|(_, ctx)| ctx.upstream.borrow().clone())
        .and_then(|name| snap.upstreams.get(&name).cloned().map(|u| (name, u)));
    let to_upstream = match (&chosen, &entry.target) {
        (Some((name, upstream)), _) | (None, Target::Upstream { name, upstream }) => {
            Some((name.as_str(), upstream))
        }
        _ => None,
    };

    // 7. Target.
    let mut to_store = None;
    let mut resp = match (lua_response, to_upstream, &entry.target) {
        (Some(resp), _, _) => resp,
        (None, Some((name, upstream)), _) => {
            let to = UpstreamTarget {
                name,
                upstream,
                host: &host,
                real_ip,
                original_uri: &original_uri,
                upgrade: &entry.upgrade,
                interim,
            };
            let (resp, store) = match &entry.cache {
                None => (proxy_upstream(parts, body, to, conn, served).await?, None),
                Some(zone) => {
                    let decisions = lua.as_ref().map(|(_, ctx)| ctx.cache.borrow().clone());
                    let filtered = lua.is_some() && !entry.lua.header_filter.is_empty();
                    let cache = (decisions.unwrap_or_default(), filtered);
                    cached_upstream(zone, parts, body, to, conn, served, cache).await?
                }
            };
            to_store = store;
            let later = lua.as_ref().filter(|_| entry.lua.runs_after_response());
            if let (Some((_, ctx)), Some(addr), Some(elapsed)) =
                (later, &served.upstream_addr, served.upstream_time)
            {
                ctx.set_upstream(addr, resp.status().as_u16(), elapsed);
            }
            resp
        }
        (None, None, Target::Static { prefix, options }) => {
            let path = parts.uri.path();
            let rel = path.strip_prefix(prefix.as_str()).unwrap_or(path);
            let resp =
                crate::static_files::serve(options, rel, &parts.method, &parts.headers).await;
            resp.map(|b| ResponseBody::from_kind(Kind::Static(b)))
        }
        (None, None, _) => {
            return Err(ProxyError::Lua(format!(
                "{}: the content handler sent no response",
                entry.name
            )));
        }
    };

    if !limit_headers.is_empty() {
        resp.headers_mut().extend(limit_headers);
    }
    served.cache_status = cache_status(&resp).map(str::to_owned);
    if let (Some((_, ctx)), Some(status)) = (&lua, &served.cache_status) {
        ctx.set_cache_status(status);
    }

    // 8. Lua header filter; the log handler runs when the body is sent.
    if let Some((vm, ctx)) = lua.as_ref().filter(|_| !entry.lua.header_filter.is_empty()) {
        lua::respond::header_filter(vm, &entry.lua.header_filter, ctx, &mut resp)
            .await
            .map_err(|m| ProxyError::Lua(format!("{}: {m}", entry.name)))?;
    }
    // The cache stores with header_filter's `mg.cache.*` decisions.
    if let Some(store) = to_store {
        let later = lua.as_ref().map(|(_, ctx)| ctx.cache_late.get());
        store.commit(&later.unwrap_or_default());
    }
    served.lua_log = lua
        .filter(|_| !entry.lua.log.is_empty())
        .map(|(vm, ctx)| (vm, ctx, entry.lua.log.clone()));
    Ok(resp)
}

/// The `X-Cache-Status` the cache step put on a response.
fn cache_status(resp: &Response<ResponseBody>) -> Option<&str> {
    let value = resp.headers().get(crate::cache::step::STATUS_HEADER)?;
    value.to_str().ok()
}

fn error_response(err: &ProxyError) -> Response<ResponseBody> {
    match (err, err.blame()) {
        (ProxyError::Lua(_), _) => tracing::error!(error = %err, "Lua handler failed"),
        (_, crate::error::Blame::Client) => tracing::info!(error = %err, "request refused"),
        _ => tracing::warn!(error = %err, "request failed"),
    }
    let mut resp = error_page::with_message(err.status(), err.client_message());
    if err.closes_connection() {
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}

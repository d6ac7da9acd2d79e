//! The order of the phases for one request — the only module that knows
//! it. Each step below returns a value this function acts on; the steps
//! don't call each other.
//!
//! 1. request checks (SPEC §10; `proxy/checks.rs`): framing, head limits, the
//!    host (authority over `Host`), underscored names, body size
//! 2. route (host, path, method) → 404 / 405 / a [`RouteEntry`](crate::snapshot::RouteEntry),
//!    or nginx's auto-redirect to a proxied route's path ending in `/`
//!    (`proxy/auto_redirect.rs`: answered there, through the route's
//!    header filter and log)
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
//!    when the body has been sent (concurrency places are released, and
//!    the request counted in its route's metrics, then)
//! 9. response compression (`crate::compress`), over whatever body the
//!    steps before made
//!
//! moongate's own error answers get their body last, in the format the
//! client's `Accept` prefers ([`crate::error_page`]).

mod auto_redirect;
pub(crate) mod checks;
mod limits;
mod log_copies;
mod request;
mod subrequest;
mod upstream;

use request::RequestCtx;
use subrequest::Lineage;
use upstream::{UpstreamTarget, balanced, cached_upstream, lua_balancer, proxy_upstream};

use std::convert::Infallible;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;

use http::header::{self, HeaderValue};
use http::request::Parts;
use http::{Method, Request, Response, StatusCode, Uri};

use crate::access_log::Field;
use crate::body::{ClientBody, Kind, RequestBody, ResponseBody};
use crate::error::ProxyError;
use crate::error_page;
use crate::forward;
use crate::interim::Interim;
use crate::lua::respond::{self, Flow};
use crate::route::RouteMatch;
use crate::snapshot::{RouteEntry, Snapshot, Target};
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
    /// Its number among the process's connections (`$connection`).
    pub serial: u64,
    /// Requests begun on it so far (`$connection_requests`).
    pub requests: std::cell::Cell<u64>,
    /// The HTTP/1 head of the request being served, as received
    /// (`ngx.req.raw_header`): put here by the connection before the
    /// request is handed over, taken by the request. It shares the read
    /// buffer's bytes (no copy).
    pub raw_head: std::cell::RefCell<bytes::Bytes>,
}

/// Serves one request (the connection's service function). `interim`
/// takes interim responses (103 Early Hints) for a client that can
/// receive them. Not an `async fn`: step 1 runs before the future is
/// made, so that the request is held once, by [`routed`]'s future, and
/// that future is not wrapped in one more (each level is a copy of it).
pub fn handle(
    req: Request<ClientBody>,
    conn: Rc<ConnCtx>,
    interim: Option<Arc<Interim>>,
) -> impl Future<Output = Result<Response<ResponseBody>, Infallible>> {
    let mut rq = RequestCtx::new(&req, &conn);
    let snap = conn.shared.snapshot.load_full();
    if let Some(tracer) = &snap.tracing {
        rq.trace = Some(tracer.begin(req.headers(), rq.started));
    }
    let admitted = admit(req, &conn, &snap, &mut rq);
    async move {
        let mut entry = None;
        let served = match admitted {
            Ok((parts, body)) => {
                let interim = interim.as_deref();
                let main = Lineage::main();
                routed(
                    parts, body, &conn, &snap, &mut rq, &mut entry, interim, main,
                )
                .await
            }
            Err(e) => Err(e),
        };
        let mut resp = served.unwrap_or_else(|e| error_response(&e));
        // Answer in the client's protocol version, whatever the peer spoke.
        *resp.version_mut() = rq.version;
        auto_redirect::absolute_location(&mut resp, conn.scheme, &rq.facts.host, conn.local);
        let server = if snap.server.server_tokens {
            concat!("moongate/", env!("CARGO_PKG_VERSION"))
        } else {
            "moongate"
        };
        error_page::render(
            &mut resp,
            snap.server.error_format,
            (rq.accept.as_ref(), rq.grpc),
            server,
        );
        if !resp.headers().contains_key(header::SERVER) {
            resp.headers_mut()
                .insert(header::SERVER, HeaderValue::from_static(server));
        }
        let status = resp.status().as_u16();
        rq.response_settled(&resp, entry.is_some_and(|e| !e.lua.log.is_empty()));
        let stats = &conn.worker.metrics;
        let counters = match entry {
            _ if !snap.metrics => None,
            Some(e) => Some(stats.route(snap.generation, e.index, &e.name)),
            None => Some(stats.unrouted()),
        };
        let hook = rq.into_completion(status, &conn, entry.map(|e: &RouteEntry| &e.lua), counters);
        if let Some(hook) = hook {
            resp.body_mut().set_on_complete(hook);
        }
        Ok(resp)
    }
}

/// Step 1: the request checks and the real client address; the body
/// gets its size and time limits.
fn admit(
    req: Request<ClientBody>,
    conn: &ConnCtx,
    snap: &Snapshot,
    rq: &mut RequestCtx,
) -> Result<(Parts, RequestBody), ProxyError> {
    let (mut parts, body) = req.into_parts();
    rq.facts.host = checks::check(&mut parts, &snap.server)?;
    rq.facts.client =
        forward::real_client_ip(conn.peer.ip(), &parts.headers, &snap.server.trusted_proxies);
    let mut body = RequestBody::limited(
        body,
        snap.server.client_max_body_size,
        snap.server.client_body_timeout,
    );
    if rq.log.has(Field::BytesReceived) {
        rq.log_copies.body_received = body.count_read();
    }
    Ok((parts, body))
}

/// Steps 2 to 8 for a request whose head passed the checks: a main
/// request, or a subrequest (`lineage`). After `ngx.exec` they start again
/// at step 2 with the new URI.
// A function returning its steps as one async block (not an `async fn`),
// like `handle`.
#[allow(clippy::too_many_arguments, clippy::manual_async_fn)]
fn routed<'a, 's: 'a>(
    mut parts: Parts,
    mut body: RequestBody,
    conn: &'a Rc<ConnCtx>,
    snap: &'s Arc<Snapshot>,
    rq: &'a mut RequestCtx,
    route: &'a mut Option<&'s RouteEntry>,
    interim: Option<&'a Interim>,
    mut lineage: Lineage,
) -> impl Future<Output = Result<Response<ResponseBody>, ProxyError>> + 'a {
    async move {
        // Rate limits apply once per main request, as nginx's.
        let mut limits_due = lineage.depth == 0;
        let mut limit_headers = http::HeaderMap::new();
        let mut redirects = 0;
        let (entry, held, lua_response) = loop {
            // 2. Route.
            let (entry, redirect) = match find_route(snap, &rq.facts.host, &parts) {
                Ok(found) => found,
                Err(answer) => return Ok(*answer),
            };
            *route = Some(entry);
            if let Some(limit) = entry.body_limit {
                checks::route_body_limit(&parts, &mut body, limit)?;
            }
            if rq.log.has(Field::Route) || rq.trace.is_some() {
                rq.route = Some(entry.name.clone());
            }
            if let Some(to) = redirect {
                // Answered before the rewrite and access phases, as nginx
                // does; the route's filters and log run on the answer.
                let answer = auto_redirect::response(to, &parts);
                let vm = lua_vm(entry, &conn.worker, snap)?;
                let held = rq.hold(vm, entry, conn, parts, body, |ctx| {
                    lineage.apply(ctx, conn, snap)
                });
                break (entry, held, Some(answer));
            }

            // 3. Rewrite.
            rewrite(entry, &mut parts)?;

            // 4. Lua rewrite and access handlers (they may answer, or
            // redirect internally); 5. rate limits, after the access phase
            // (so it may refuse or pick first, as API gateways do); 6. the
            // Lua content handler, which answers instead of the target.
            let vm = lua_vm(entry, &conn.worker, snap)?;
            let held = rq.hold(vm, entry, conn, parts, body, |ctx| {
                lineage.apply(ctx, conn, snap)
            });
            // Each step's future is made only when the route has the step:
            // a request without Lua or limits copies none of them.
            let answer = match rq.lua {
                Some(_) => lua_access(rq, entry).await?,
                None => None,
            };
            if rq.lua.is_some() {
                // The id as the rewrite and access handlers left it (a
                // `request_id` policy sets it).
                rq.note_request_id(&held.head(), &entry.request_id_header);
                rq.note_consumer();
            }
            let mut content = None;
            if answer.is_none() && limits_due && !entry.limits.is_empty() {
                limits_due = false;
                let pending = limits::start(entry, &rq.facts.vars(&held.head()));
                limit_headers = match limits::finish(
                    pending,
                    &entry.limits,
                    snap.metrics.then_some(&conn.worker.metrics),
                    &conn.worker.redis,
                    rq.facts.client,
                    &mut rq.permits,
                )
                .await
                {
                    Ok(h) => h,
                    Err(refused) => return Ok(*refused),
                };
            }
            if answer.is_none() && rq.lua.is_some() {
                content = lua_content(rq, entry).await?;
            }
            let Some(target) = rq.lua.as_ref().and_then(|l| l.ctx.take_exec()) else {
                if let Some(answer) = answer {
                    return Ok(answer);
                }
                break (entry, held, content);
            };
            // ngx.exec: the request starts again at step 2.
            redirects += 1;
            if redirects > subrequest::MAX_INTERNAL_REDIRECTS {
                tracing::error!(
                    "rewrite or internal redirection cycle while internally redirecting to \"{target}\""
                );
                return Ok(error_page::response(StatusCode::INTERNAL_SERVER_ERROR));
            }
            lineage.redirected(rq.lua.as_ref().map(|l| &*l.ctx));
            (parts, body) = held.release(false, true);
            // A target that is not a path matches no route.
            let Ok(uri) = target.parse::<Uri>() else {
                return Ok(error_page::response(StatusCode::NOT_FOUND));
            };
            parts.uri = uri;
        };
        let chosen = target(rq, entry, snap);
        let balancer = chosen.and_then(|(name, _)| lua_balancer(rq.lua.as_ref(), &snap.lua, name));
        // Handlers that run on after this (header_filter, body_filter,
        // log, a balancer, a content handler still streaming) read
        // `ngx.var`: they keep a copy of the head.
        let streaming = rq.lua.as_ref().is_some_and(|l| l.ctx.output.headers_sent());
        let keep_head = entry.lua.runs_after_response() || balancer.is_some() || streaming;
        // A content handler still running (it streams) may read the body
        // yet (`ngx.req.read_body()` after output): the body stays with it.
        let take_body = !(streaming && lua_response.is_some());
        let (mut parts, body) = held.release(keep_head, take_body);
        if let Some(trace) = &rq.trace {
            trace.inject(&mut parts.headers);
        }
        // What compression the request allows, read from its final head;
        // a subrequest's body goes to Lua, not to a client: never encoded.
        let compress = entry
            .compress
            .as_deref()
            .filter(|_| lineage.depth == 0)
            .and_then(|c| Some((c, c.offer(&parts)?)));

        // 7. Target.
        let mut to_store = None;
        let from_lua = lua_response.is_some();
        let mut resp = match lua_response {
            Some(resp) => resp,
            None => match chosen {
                Some((name, upstream)) => {
                    let to = UpstreamTarget {
                        name,
                        upstream,
                        facts: &rq.facts,
                        upgrade: &entry.upgrade,
                        interim,
                        route: rq.route.as_ref(),
                        hook: balancer.as_ref().map(|b| b as _),
                        stats: snap.metrics.then_some(&conn.worker.metrics),
                    };
                    match &entry.cache {
                        None => proxy_upstream(parts, body, to, conn, &mut rq.upstream).await?,
                        Some(zone) => {
                            let decisions = rq.lua.as_ref().map(|l| l.ctx.cache.borrow().clone());
                            let filtered = !entry.lua.header_filter.is_empty();
                            let cache = (&decisions.unwrap_or_default(), filtered);
                            let (resp, store, status) = cached_upstream(
                                zone,
                                parts,
                                body,
                                to,
                                conn,
                                &mut rq.upstream,
                                cache,
                            )
                            .await?;
                            // Boxed: held across header_filter, it
                            // would otherwise take room in every request.
                            to_store = store.map(Box::new);
                            rq.cache_status = Some(status);
                            resp
                        }
                    }
                }
                None => serve_static(entry, &parts).await?,
            },
        };
        if let (Some(trace), Some(_)) = (rq.trace.as_mut(), &rq.upstream) {
            trace.upstream_head = Some(std::time::Instant::now());
        }
        if !limit_headers.is_empty() {
            resp.headers_mut().extend(limit_headers);
        }
        // Headers rewrite/access handlers set with `ngx.header` go out
        // with the target's response too, as in ngx_lua.
        if let Some(lua) = rq.lua.as_ref().filter(|_| !from_lua) {
            respond::merge_headers(&lua.ctx, &mut resp);
        }

        // 8. Lua header filter (the cache stores with its `mg.cache.*`
        // decisions); the log handlers run when the body is sent.
        if let Some(lua) = rq.lua.as_ref().filter(|_| entry.lua.runs_after_response()) {
            if let Some(up) = &rq.upstream {
                lua.ctx
                    .set_upstream(&up.addr, resp.status().as_u16(), up.elapsed);
            }
            if let Some(status) = rq.cache_status {
                lua.ctx.set_cache_status(status.as_str());
            }
        }
        if let Some(lua) = rq
            .lua
            .as_ref()
            .filter(|_| !entry.lua.header_filter.is_empty())
        {
            respond::header_filter(&lua.vm, &entry.lua.header_filter, &lua.ctx, &mut resp)
                .await
                .map_err(|m| ProxyError::Lua(format!("{}: {m}", entry.name)))?;
        }
        if let Some(store) = to_store {
            let late = rq.lua.as_ref().map(|l| l.ctx.cache_late.get());
            store.commit(&late.unwrap_or_default());
        }
        // The body filters stream over whatever body it is (the cache
        // stored the upstream's own).
        if let Some(lua) = rq
            .lua
            .as_ref()
            .filter(|_| !entry.lua.body_filter.is_empty())
        {
            crate::lua::body_filter::filter(&mut resp, &lua.vm, &lua.ctx, &entry.lua.body_filter);
        }
        // 9. Compression, last: over what the body filters made, and over
        // the cache's identity body on a HIT as on a MISS.
        if let Some((settings, offer)) = compress {
            settings.apply(offer, &mut resp);
        }
        Ok(resp)
    }
}

/// Step 2: the route for the request, and the path it redirects to when
/// it is nginx's auto-redirect; or the answer when there is none (404, or
/// 405 with `Allow`).
fn find_route<'s>(
    snap: &'s Snapshot,
    host: &str,
    parts: &Parts,
) -> Result<(&'s RouteEntry, Option<&'s str>), Box<Response<ResponseBody>>> {
    // Matched on the normalized path, as nginx chooses a location; what
    // goes upstream stays as received (see `rewrite`).
    let path = crate::route::normalize_path(parts.uri.path())
        .map_err(|bad| Box::new(error_response(&ProxyError::BadRequest(bad.message()))))?;
    match snap.router.find(host, &path, &parts.method) {
        RouteMatch::Found(e) => Ok((e, None)),
        RouteMatch::Redirect { value, path } => Ok((value, Some(path))),
        RouteMatch::NotFound => Err(Box::new(error_page::response(StatusCode::NOT_FOUND))),
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
            Err(Box::new(resp))
        }
    }
}

/// Step 3: the route's `rewrite`, applied to the path (the query stays).
/// A route with a rewrite sends the normalized path, re-encoded, on (as
/// nginx's `proxy_pass` with a URI part does), rewritten when `from`
/// matched it; a route without one leaves the request target as received.
fn rewrite(entry: &RouteEntry, parts: &mut Parts) -> Result<(), ProxyError> {
    let Some(rule) = entry.rewrite.as_ref() else {
        return Ok(());
    };
    let normal = crate::route::normalize_path(parts.uri.path())
        .map_err(|bad| ProxyError::BadRequest(bad.message()))?;
    let encoded = crate::route::encode_path(&normal);
    let new_path = match rule.apply(&encoded) {
        Some(rewritten) => rewritten,
        None if encoded == parts.uri.path() => return Ok(()),
        None => encoded.into_owned(),
    };
    let query = parts
        .uri
        .query()
        .map(|q| format!("?{q}"))
        .unwrap_or_default();
    parts.uri = format!("{new_path}{query}")
        .parse::<Uri>()
        .map_err(|_| ProxyError::BadRequest("rewrite produced an invalid URI"))?;
    Ok(())
}

/// The worker's VM for the snapshot's Lua program, when the route has
/// handlers or its upstream a Lua `balancer`.
fn lua_vm(
    entry: &RouteEntry,
    worker: &WorkerLocal,
    snap: &Snapshot,
) -> Result<Option<Rc<crate::lua::vm::Vm>>, ProxyError> {
    if entry.lua.is_empty() && !balanced(entry, snap) {
        return Ok(None);
    }
    worker
        .lua
        .for_program(&snap.lua)
        .map(Some)
        .map_err(ProxyError::Lua)
}

/// Step 4: the route's Lua rewrite and access handlers; their answer, if
/// they give one. A subrequest skips the access phase, as nginx's do.
async fn lua_access(
    rq: &RequestCtx,
    entry: &RouteEntry,
) -> Result<Option<Response<ResponseBody>>, ProxyError> {
    let Some(lua) = &rq.lua else {
        return Ok(None);
    };
    let flow = if lua.ctx.subrequest && !entry.lua.access.is_empty() {
        let rewrite_only = crate::lua::RoutePhases {
            access: Vec::new(),
            ..entry.lua.clone()
        };
        respond::access_phases(&lua.vm, &rewrite_only, &lua.ctx).await
    } else {
        respond::access_phases(&lua.vm, &entry.lua, &lua.ctx).await
    };
    lua_answer(flow, entry)
}

/// Step 6: the route's Lua content handler's answer, if it has one.
async fn lua_content(
    rq: &RequestCtx,
    entry: &RouteEntry,
) -> Result<Option<Response<ResponseBody>>, ProxyError> {
    let Some(lua) = &rq.lua else {
        return Ok(None);
    };
    let flow = respond::content_phase(&lua.vm, &entry.lua, &lua.ctx, &entry.name).await;
    lua_answer(flow, entry)
}

fn lua_answer(
    flow: Flow,
    entry: &RouteEntry,
) -> Result<Option<Response<ResponseBody>>, ProxyError> {
    match flow {
        Flow::Continue => Ok(None),
        Flow::Respond(resp) => Ok(Some(*resp)),
        Flow::Failed(m) => Err(ProxyError::Lua(format!("{}: {m}", entry.name))),
    }
}

/// Step 7's choice: the upstream `mg.upstream.set(name)` picked, else the
/// route's; `None` for a static route.
fn target<'s>(
    rq: &RequestCtx,
    entry: &'s RouteEntry,
    snap: &'s Snapshot,
) -> Option<(&'s str, &'s Arc<crate::upstream::Upstream>)> {
    let chosen = rq.lua.as_ref().and_then(|l| {
        let name = l.ctx.upstream.borrow();
        snap.upstreams.get_key_value(name.as_deref()?)
    });
    match (chosen, &entry.target) {
        (Some((name, upstream)), _) | (None, Target::Upstream { name, upstream }) => {
            Some((name.as_str(), upstream))
        }
        _ => None,
    }
}

/// Step 7 for a `root` route (or the error when a Lua-only route's
/// content handler sent nothing).
async fn serve_static(
    entry: &RouteEntry,
    parts: &Parts,
) -> Result<Response<ResponseBody>, ProxyError> {
    let Target::Static { prefix, options } = &entry.target else {
        return Err(ProxyError::Lua(format!(
            "{}: the content handler sent no response",
            entry.name
        )));
    };
    // The prefix the route matched is taken off the normalized path; the
    // rest goes back to its encoded form, which the file lookup decodes.
    let path = crate::route::normalize_path(parts.uri.path())
        .map_err(|bad| ProxyError::BadRequest(bad.message()))?;
    let rel = path.strip_prefix(prefix.as_str()).unwrap_or(&path);
    let rel = crate::route::encode_path(rel);
    let resp = crate::static_files::serve(options, &rel, &parts.method, &parts.headers).await;
    Ok(resp.map(|b| ResponseBody::from_kind(Kind::Static(b))))
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

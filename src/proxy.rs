//! The order of the phases for one request — the only module that knows
//! it. Each step below returns a value this function acts on; the steps
//! don't call each other.
//!
//! 1. request checks (SPEC §10; [`checks`]): framing, head limits, the
//!    host (authority over `Host`), underscored names, body size
//! 2. route (host, path, method) → 404 / 405 / a [`RouteEntry`](crate::snapshot::RouteEntry)
//! 3. rewrite
//! 4. Lua `rewrite`, `access` handlers (may answer themselves)
//! 5. rate limits (`[limit.NAME]` zones): 429 + `Retry-After`, or
//!    `RateLimit-*` headers and places held in concurrency zones
//! 6. Lua `content` handler (answers instead of a target)
//! 7. target: static files, or an upstream (forwarding headers, balance,
//!    pool, retries), with protocol upgrades tunnelled both ways; on a
//!    route with `cache = "NAME"` the cache is looked up first (a fresh
//!    hit answers) and the upstream's answer handed to it after
//! 8. Lua `header_filter`; the Lua `log` handler and the access log run
//!    when the body has been sent (concurrency places are released then)
//!
//! moongate's own error answers get their body last, in the format the
//! client's `Accept` prefers ([`crate::error_page`]).

pub(crate) mod checks;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::header::{self, HeaderValue};
use http::request::Parts;
use http::{Method, Request, Response, StatusCode, Uri, Version};
use hyper_util::rt::TokioIo;

use crate::access_log::AccessRecord;
use crate::body::{ClientBody, Kind, OnComplete, RequestBody, ResponseBody};
use crate::conn::interim::Interim;
use crate::conn::io::ConnWatch;
use crate::error::ProxyError;
use crate::error_page;
use crate::forward;
use crate::limit::Permit;
use crate::lua::{
    self,
    request::ReqCtx,
    respond::{Flow, LogPhase},
};
use crate::route::RouteMatch;
use crate::snapshot::{Snapshot, Target};
use crate::state::Shared;
use crate::throttle::{self, Verdict};
use crate::upstream::balance::PickKey;
use crate::upstream::call::{self, Outgoing};
use crate::vars::RequestVars;

/// What one client connection tells the requests it carries.
pub struct ConnCtx {
    /// The client's socket address.
    pub peer: SocketAddr,
    /// Our socket address (`$server_port`).
    pub local: SocketAddr,
    /// "http" or "https".
    pub scheme: &'static str,
    /// The connection's phase tracking (see [`crate::conn::io`]).
    pub watch: Arc<ConnWatch>,
    /// State shared by the whole server.
    pub shared: Arc<Shared>,
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
        watch: conn.watch.clone(),
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
    let host = checks::check(
        &mut parts,
        &snap.server,
        conn.watch.saw_conflicting_framing(),
    )?;

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
        let vm = lua::vm::for_program(&snap.lua).map_err(ProxyError::Lua)?;
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

/// What a route's rate-limit zones need to know about a request.
struct Limits<'a> {
    entry: &'a crate::snapshot::RouteEntry,
    request_uri: &'a str,
    host: &'a str,
    client: std::net::IpAddr,
    conn: &'a ConnCtx,
}

impl<'a> Limits<'a> {
    /// Takes from the route's zones for a request with head `head`: the
    /// `RateLimit-*` headers for the response go to `headers` and places in
    /// concurrency zones to `served` (held until the response is done); a
    /// refusal is the response to send.
    async fn check(
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
    fn start(&self, head: &Parts) -> Option<throttle::Check<'a>> {
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
    async fn finish(
        &self,
        check: Option<throttle::Check<'a>>,
        served: &mut Served,
        headers: &mut http::HeaderMap,
    ) -> Result<(), Box<Response<ResponseBody>>> {
        let verdict = match check {
            None => return Ok(()),
            Some(throttle::Check::Done(v)) => v,
            Some(throttle::Check::Waits(p)) => p.verdict().await,
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
struct Release {
    permits: Vec<Permit>,
    next: Box<dyn OnComplete>,
}

impl OnComplete for Release {
    fn complete(self: Box<Self>, bytes: u64, complete: bool) {
        let Release { permits, next } = *self;
        drop(permits);
        next.complete(bytes, complete);
    }
}

/// Where an upstream-bound request goes, and what it carries from routing.
struct UpstreamTarget<'a> {
    name: &'a str,
    upstream: &'a Arc<crate::upstream::Upstream>,
    host: &'a str,
    real_ip: std::net::IpAddr,
    original_uri: &'a Uri,
    /// Protocols the route lets a client upgrade to.
    upgrade: &'a [String],
    /// Where the peer's interim responses go, if the client takes them.
    interim: Option<&'a Interim>,
}

/// Forwards the request to the upstream (forwarding headers, balance,
/// pool, retries), tunnelling a protocol upgrade both ways.
async fn proxy_upstream(
    mut parts: Parts,
    body: RequestBody,
    to: UpstreamTarget<'_>,
    conn: &ConnCtx,
    served: &mut Served,
) -> Result<Response<ResponseBody>, ProxyError> {
    let UpstreamTarget {
        name,
        upstream,
        host,
        real_ip,
        original_uri,
        upgrade: allowed,
        interim,
    } = to;
    // Only protocols the route allows are asked for upstream (websocket by
    // default, never h2c); any other `Upgrade` is dropped with the
    // hop-by-hop fields and the request goes as a plain one.
    let upgrade = parts.version == Version::HTTP_11
        && forward::wants_upgrade(&parts.headers)
        && forward::keep_allowed_upgrades(&mut parts.headers, allowed);
    let client_upgrade = upgrade
        .then(|| parts.extensions.remove::<hyper::upgrade::OnUpgrade>())
        .flatten();
    if !parts.headers.contains_key(header::HOST)
        && let Ok(v) = HeaderValue::from_str(host)
    {
        parts.headers.insert(header::HOST, v);
    }
    let asked = upgrade
        .then(|| parts.headers.get(header::UPGRADE).cloned())
        .flatten();
    forward::strip_hop_by_hop(&mut parts.headers, upgrade);
    // moongate answers `Expect: 100-continue` itself (hyper sends the
    // 100 when the body is first read); the peer must not wait for it.
    parts.headers.remove(header::EXPECT);
    forward::set_forwarding_headers(&mut parts.headers, conn.peer.ip(), real_ip, conn.scheme);
    let hash_key = upstream.hash_key.as_ref().map(|t| {
        t.render(&RequestVars {
            parts: &parts,
            request_uri: original_uri.path_and_query().map_or("/", |p| p.as_str()),
            host,
            client: real_ip,
            scheme: conn.scheme,
            server_port: conn.local.port(),
        })
    });
    parts.uri = origin_form(&parts.uri);
    parts.version = Version::HTTP_11;
    let body = if upgrade { RequestBody::empty() } else { body };
    let key = match (&hash_key, upstream.def.balance) {
        (Some(k), _) => PickKey::Bytes(k.as_bytes()),
        (None, crate::config::Balance::IpHash) => PickKey::Ip(real_ip),
        _ => PickKey::None,
    };
    let idempotent = is_idempotent(&parts.method);
    let mut relay = |status: StatusCode, headers: http::HeaderMap| {
        if let Some(q) = interim {
            q.push(status, headers);
        }
    };
    let out = Outgoing {
        parts,
        body,
        key,
        idempotent,
        interim: interim.is_some().then_some(&mut relay as _),
    };
    let exchange = call::forward(upstream, name, out).await?;
    served.upstream_addr = Some(exchange.peer);
    served.upstream_time = Some(exchange.elapsed);
    let mut resp = exchange.response;
    match (exchange.upgraded, client_upgrade) {
        (Some(peer_conn), Some(client_upgrade))
            if forward::switched_to_asked(resp.headers(), asked.as_ref()) =>
        {
            conn.watch.passthrough();
            tokio::task::spawn_local(tunnel(client_upgrade, peer_conn));
            forward::strip_hop_by_hop(resp.headers_mut(), true);
        }
        (Some(_), _) => {
            // A 101 nobody asked for (or to another protocol) would hand
            // the client a raw connection to the peer: refuse it.
            return Err(ProxyError::UnaskedUpgrade(
                served.upstream_addr.clone().unwrap_or_default(),
            ));
        }
        (None, _) => forward::strip_hop_by_hop(resp.headers_mut(), false),
    }
    Ok(resp.map(|b| ResponseBody::from_kind(Kind::Upstream(b))))
}

/// [`proxy_upstream`] behind the route's cache zone: a fresh hit answers
/// without the upstream; otherwise the upstream's answer goes through the
/// cache step (invalidating, or passed through, and what may be stored
/// handed back to commit after header_filter). `cache`: Lua's decisions
/// and whether header_filter handlers run.
async fn cached_upstream(
    zone: &Arc<crate::cache::Zone>,
    parts: Parts,
    body: RequestBody,
    to: UpstreamTarget<'_>,
    conn: &ConnCtx,
    served: &mut Served,
    cache: (crate::cache::step::CacheDecisions, bool),
) -> Result<(Response<ResponseBody>, Option<crate::cache::step::Store>), ProxyError> {
    let vars = RequestVars {
        parts: &parts,
        request_uri: to.original_uri.path_and_query().map_or("/", |p| p.as_str()),
        host: to.host,
        client: to.real_ip,
        scheme: conn.scheme,
        server_port: conn.local.port(),
    };
    let (decisions, filtered) = cache;
    match crate::cache::step::lookup(zone, &vars, &decisions).await {
        crate::cache::Lookup::Hit(resp) => Ok((resp, None)),
        crate::cache::Lookup::Stale(resp, refresh) => {
            if let Some(refresh) = refresh {
                spawn_refresh(refresh, &to, conn, served.route.clone());
            }
            Ok((resp, None))
        }
        crate::cache::Lookup::Fetch(pending) => {
            let mut parts = parts;
            pending.prepare(&mut parts.headers);
            let resp = proxy_upstream(parts, body, to, conn, served).await;
            crate::cache::step::finish(pending, resp, filtered).await
        }
    }
}

/// Sends a stale entry's refresh upstream in the background, on this
/// worker's task set; the key's lock (in the refresh) is held until the
/// answer is stored or given up. The refresh writes its own access log
/// line (`cache_status` REFRESH, the upstream's status), for `route`.
fn spawn_refresh(
    refresh: Box<crate::cache::step::Refresh>,
    to: &UpstreamTarget<'_>,
    conn: &ConnCtx,
    route: Option<String>,
) {
    let (name, upstream, host) = (to.name.to_owned(), to.upstream.clone(), to.host.to_owned());
    let (real_ip, uri) = (to.real_ip, to.original_uri.clone());
    let conn = ConnCtx {
        peer: conn.peer,
        local: conn.local,
        scheme: conn.scheme,
        watch: conn.watch.clone(),
        shared: conn.shared.clone(),
    };
    tokio::task::spawn_local(async move {
        let to = UpstreamTarget {
            name: &name,
            upstream: &upstream,
            host: &host,
            real_ip,
            original_uri: &uri,
            upgrade: &[],
            interim: None,
        };
        let started = Instant::now();
        let mut served = Served::default();
        let resp =
            proxy_upstream(refresh.parts, RequestBody::empty(), to, &conn, &mut served).await;
        let status = match &resp {
            Ok(r) => r.status().as_u16(),
            Err(e) => e.status().as_u16(),
        };
        let read = crate::cache::step::refreshed(refresh.pending, resp).await;
        if let Err(e) = &read {
            tracing::warn!(upstream = %name, "cache refresh failed: {e}");
        }
        let record = AccessRecord {
            enabled: conn.shared.access_log.enabled(),
            // Its own: no client connection waits for this exchange.
            watch: crate::conn::io::ConnWatch::new(),
            started,
            client: conn.peer.ip(),
            method: Method::GET,
            uri,
            status,
            route,
            upstream_addr: served.upstream_addr,
            upstream_time: served.upstream_time,
            cache_status: Some("REFRESH".into()),
        };
        Box::new(record).complete(*read.as_ref().unwrap_or(&0), read.is_ok());
    });
}

/// The `X-Cache-Status` the cache step put on a response.
fn cache_status(resp: &Response<ResponseBody>) -> Option<&str> {
    let value = resp.headers().get(crate::cache::step::STATUS_HEADER)?;
    value.to_str().ok()
}

/// Copies bytes both ways between an upgraded client connection and the
/// peer connection that answered 101, for as long as both keep it open.
async fn tunnel(client: hyper::upgrade::OnUpgrade, peer: crate::upstream::h1::Conn) {
    use tokio::io::AsyncWriteExt;
    let client = match client.await {
        Ok(c) => c,
        Err(e) => {
            tracing::debug!(error = %e, "protocol upgrade failed");
            return;
        }
    };
    let mut client = TokioIo::new(client);
    let (mut peer, early) = peer.into_upgraded();
    // Bytes the peer sent right after its 101 belong to the client.
    if !early.is_empty() && client.write_all(&early).await.is_err() {
        return;
    }
    if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut peer).await {
        tracing::debug!(error = %e, "upgraded connection ended");
    }
}

/// The URI as sent upstream: path and query only (absolute-form and h2
/// authorities dropped; the Host header carries the host).
fn origin_form(uri: &Uri) -> Uri {
    uri.path_and_query()
        .map_or_else(|| Uri::from_static("/"), |pq| Uri::from(pq.clone()))
}

fn is_idempotent(m: &Method) -> bool {
    matches!(
        *m,
        Method::GET | Method::HEAD | Method::PUT | Method::DELETE | Method::OPTIONS | Method::TRACE
    )
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origin_form_drops_scheme_and_authority() {
        let u: Uri = "http://example.com:8080/a/b?x=1"
            .parse()
            .unwrap_or_default();
        assert_eq!(origin_form(&u).to_string(), "/a/b?x=1");
        let u: Uri = "/only?q".parse().unwrap_or_default();
        assert_eq!(origin_form(&u).to_string(), "/only?q");
    }

    #[test]
    fn idempotency_follows_rfc_9110() {
        assert!(is_idempotent(&Method::GET));
        assert!(is_idempotent(&Method::PUT));
        assert!(!is_idempotent(&Method::POST));
        assert!(!is_idempotent(&Method::PATCH));
    }
}

//! Step 7 of a request bound for an upstream: forwarding headers,
//! balance, pool and retries ([`crate::upstream::call`]), the route's
//! cache zone in front ([`cached_upstream`]), stale entries refreshed in
//! the background, and protocol upgrades tunnelled both ways (only those
//! the route allows; a 101 nobody asked for is refused). An upstream's Lua
//! `balancer` is asked before every try ([`lua_balancer`]).

use std::sync::Arc;
use std::time::Instant;

use http::header::{self, HeaderValue};
use http::request::Parts;
use http::{Method, Response, StatusCode, Uri, Version};

use super::ConnCtx;
use super::request::{LuaReq, UpstreamDone};
use crate::access_log::AccessRecord;
use crate::body::{Kind, RequestBody, ResponseBody};
use crate::cache::step::{CacheDecisions, CacheStatus, Store};
use crate::error::ProxyError;
use crate::forward;
use crate::interim::Interim;
use crate::lua::LuaProgram;
use crate::lua::balancer::LuaBalancer;
use crate::metrics::WorkerStats;
use crate::snapshot::{RouteEntry, Snapshot, Target};
use crate::upstream::balance::PickKey;
use crate::upstream::balance_hook::TryHook;
use crate::upstream::call::{self, Outgoing};
use crate::upstream::cgi::CgiFacts;
use crate::vars::RequestFacts;

/// Where an upstream-bound request goes, and what it carries from routing.
pub(super) struct UpstreamTarget<'a> {
    pub(super) name: &'a str,
    pub(super) upstream: &'a Arc<crate::upstream::Upstream>,
    /// Host, original URI, real client address.
    pub(super) facts: &'a RequestFacts,
    /// Protocols the route lets a client upgrade to.
    pub(super) upgrade: &'a [String],
    /// Where the peer's interim responses go, if the client takes them.
    pub(super) interim: Option<&'a Interim>,
    /// The route's name, for the access log line of a background refresh.
    pub(super) route: Option<&'a String>,
    /// The upstream's Lua `balancer`, asked before every try.
    pub(super) hook: Option<&'a dyn TryHook>,
    /// Where the tries are counted (`None`: metrics are off).
    pub(super) stats: Option<&'a WorkerStats>,
}

/// Whether the route's upstream has a Lua `balancer` (the request then
/// needs its Lua state even when the route has no handlers).
pub(super) fn balanced(entry: &RouteEntry, snap: &Snapshot) -> bool {
    matches!(&entry.target, Target::Upstream { name, .. } if snap.lua.balancers.contains_key(name))
}

/// The Lua `balancer` of upstream `name` for this request, if it has one.
pub(super) fn lua_balancer(
    lua: Option<&LuaReq>,
    program: &LuaProgram,
    name: &str,
) -> Option<LuaBalancer> {
    let (lua, script) = (lua?, *program.balancers.get(name)?);
    Some(LuaBalancer {
        vm: lua.vm.clone(),
        req: lua.ctx.clone(),
        script,
        upstream: name.to_owned(),
    })
}

/// Forwards the request to the upstream (forwarding headers, balance,
/// pool, retries), tunnelling a protocol upgrade both ways. What the
/// exchange produced goes to `done`.
///
/// Not an `async fn`: its arguments are captured once, not also copied
/// into locals (this future is part of every proxied request's).
pub(super) fn proxy_upstream<'a>(
    mut parts: Parts,
    body: RequestBody,
    to: UpstreamTarget<'a>,
    conn: &'a ConnCtx,
    done: &'a mut Option<UpstreamDone>,
) -> impl Future<Output = Result<Response<ResponseBody>, ProxyError>> + 'a {
    let UpstreamTarget {
        name,
        upstream,
        facts,
        upgrade: allowed,
        interim,
        hook,
        stats,
        ..
    } = to;
    async move {
        let real_ip = facts.client;
        // Only protocols the route allows are asked for upstream (websocket by
        // default, never h2c); any other `Upgrade` is dropped with the
        // hop-by-hop fields and the request goes as a plain one.
        let cgi_style = upstream.def.protocol.is_cgi();
        // uwsgi tunnels no upgrade (nor does nginx's uwsgi_pass).
        let upgrade = parts.version == Version::HTTP_11
            && !cgi_style
            && forward::wants_upgrade(&parts.headers)
            && forward::keep_allowed_upgrades(&mut parts.headers, allowed);
        let client_upgrade = upgrade
            .then(|| {
                parts
                    .extensions
                    .remove::<crate::client_upgrade::ClientUpgrade>()
            })
            .flatten();
        if !parts.headers.contains_key(header::HOST)
            && let Ok(v) = HeaderValue::from_str(&facts.host)
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
        forward::set_forwarding_headers(
            &mut parts.headers,
            conn.peer.ip(),
            &conn.peer_ip_text,
            real_ip,
            conn.scheme,
        );
        let hash_key = upstream
            .hash_key
            .as_ref()
            .map(|t| t.render(&facts.vars(&parts)));
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
        let mut out = Outgoing {
            parts,
            body,
            key,
            idempotent,
            interim: interim.is_some().then_some(&mut relay as _),
            pool: &conn.worker.upstream_idle,
            stats,
            hook,
            cgi: cgi_style.then(|| CgiFacts {
                facts,
                remote_port: (real_ip == conn.peer.ip()).then_some(conn.peer.port()),
                server_addr: conn.local.ip(),
            }),
        };
        let exchange = call::forward(upstream, name, &mut out).await?;
        let peer = done.insert(UpstreamDone {
            addr: exchange.peer,
            status: exchange.response.status().as_u16(),
            connect: exchange.connect,
            elapsed: exchange.elapsed,
        });
        let mut resp = exchange.response;
        match (exchange.upgraded, client_upgrade) {
            (Some(peer_conn), Some(client_upgrade))
                if forward::switched_to_asked(resp.headers(), asked.as_ref()) =>
            {
                tokio::task::spawn_local(tunnel(client_upgrade, peer_conn));
                forward::strip_hop_by_hop(resp.headers_mut(), true);
            }
            (Some(_), _) => {
                // A 101 nobody asked for (or to another protocol) would hand
                // the client a raw connection to the peer: refuse it.
                return Err(ProxyError::UnaskedUpgrade(peer.addr.clone()));
            }
            (None, _) => forward::strip_hop_by_hop(resp.headers_mut(), false),
        }
        Ok(resp.map(|b| ResponseBody::from_kind(Kind::Upstream(b))))
    }
}

/// [`proxy_upstream`] behind the route's cache zone: a fresh hit answers
/// without the upstream; otherwise the upstream's answer goes through the
/// cache step (invalidating, or passed through, and what may be stored
/// handed back to commit after header_filter). `cache`: Lua's decisions
/// and whether header_filter handlers run. Also says what the cache did.
pub(super) async fn cached_upstream(
    zone: &Arc<crate::cache::Zone>,
    parts: Parts,
    body: RequestBody,
    to: UpstreamTarget<'_>,
    conn: &ConnCtx,
    done: &mut Option<UpstreamDone>,
    cache: (&CacheDecisions, bool),
) -> Result<(Response<ResponseBody>, Option<Store>, CacheStatus), ProxyError> {
    let (decisions, filtered) = cache;
    let lookup = crate::cache::step::lookup(zone, &to.facts.vars(&parts), decisions).await;
    match lookup {
        crate::cache::Lookup::Hit(resp) => Ok((resp, None, CacheStatus::Hit)),
        crate::cache::Lookup::Stale(resp, status, refresh) => {
            if let Some(refresh) = refresh {
                spawn_refresh(refresh, &to, conn);
            }
            Ok((resp, None, status))
        }
        crate::cache::Lookup::Fetch(pending) => {
            let mut parts = parts;
            pending.prepare(&mut parts.headers);
            // Boxed: only a miss waits on the upstream here, and a hit's
            // future (every request's, on this route) stays small.
            let resp = Box::pin(proxy_upstream(parts, body, to, conn, done)).await;
            let (finished, status) =
                crate::cache::step::finish(pending, resp, filtered, &conn.worker).await;
            finished.map(|(resp, store)| (resp, store, status))
        }
    }
}

/// Sends a stale entry's refresh upstream in the background, on this
/// worker's task set; the key's lock (in the refresh) is held until the
/// answer is stored or given up. The refresh writes its own access log
/// line (`cache_status` REFRESH, the upstream's status).
fn spawn_refresh(
    refresh: Box<crate::cache::step::Refresh>,
    to: &UpstreamTarget<'_>,
    conn: &ConnCtx,
) {
    let route = to.route.cloned();
    let (name, upstream, facts) = (to.name.to_owned(), to.upstream.clone(), to.facts.clone());
    let conn = ConnCtx {
        peer: conn.peer,
        peer_ip_text: conn.peer_ip_text.clone(),
        local: conn.local,
        scheme: conn.scheme,
        shared: conn.shared.clone(),
        worker: conn.worker.clone(),
        serial: conn.serial,
        requests: std::cell::Cell::new(conn.requests.get()),
        raw_head: std::cell::RefCell::default(),
    };
    let counted = to.stats.is_some();
    tokio::task::spawn_local(async move {
        let to = UpstreamTarget {
            name: &name,
            upstream: &upstream,
            facts: &facts,
            upgrade: &[],
            interim: None,
            route: None,
            hook: None,
            stats: counted.then_some(&conn.worker.metrics),
        };
        let started = Instant::now();
        let mut done = None;
        let resp = proxy_upstream(refresh.parts, RequestBody::empty(), to, &conn, &mut done).await;
        let status = match &resp {
            Ok(r) => r.status().as_u16(),
            Err(e) => e.status().as_u16(),
        };
        let read = crate::cache::step::refreshed(refresh.pending, resp, &conn.worker).await;
        if let Err(e) = &read {
            tracing::warn!(upstream = %name, "cache refresh failed: {e}");
        }
        // No client waits on it: nothing of a client's request is logged
        // (no headers, no bytes received).
        let record = AccessRecord {
            fields: conn.shared.access_log.wants(),
            started,
            client: conn.peer.ip(),
            method: Method::GET,
            uri: facts.request_uri,
            host: facts.host,
            version: Version::HTTP_11,
            status,
            route,
            upstream_status: done.as_ref().map(|d| d.status),
            upstream_connect_time: done.as_ref().map(|d| d.connect),
            upstream_time: done.as_ref().map(|d| d.elapsed),
            upstream_addr: done.map(|d| d.addr),
            cache_status: Some("REFRESH"),
            request_id: None,
            trace_id: None,
            consumer: None,
            user_agent: None,
            referer: None,
            head_received: 0,
            body_received: None,
        };
        let (bytes, complete) = (*read.as_ref().unwrap_or(&0), read.is_ok());
        conn.shared.access_log.write(&record, bytes, complete);
    });
}

/// Copies bytes both ways between an upgraded client connection and the
/// peer connection that answered 101, for as long as both keep it open.
async fn tunnel(client: crate::client_upgrade::ClientUpgrade, peer: crate::upstream::h1::Conn) {
    use tokio::io::AsyncWriteExt;
    let Some(client) = client.connection().await else {
        tracing::debug!("protocol upgrade failed: the client connection was not handed over");
        return;
    };
    let mut client_io = client.io;
    let (mut peer, early) = peer.into_upgraded();
    // Bytes the peer sent right after its 101 belong to the client, and
    // those the client sent after its request to the peer.
    if !early.is_empty() && client_io.write_all(&early).await.is_err() {
        return;
    }
    if !client.early.is_empty() && peer.write_all(&client.early).await.is_err() {
        return;
    }
    if let Err(e) = tokio::io::copy_bidirectional(&mut client_io, &mut peer).await {
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

//! The admin listener: `GET /metrics` (Prometheus, see [`crate::metrics`]),
//! `GET /status` (JSON: version, uptime, config
//! generation, last reload and its error, listeners, upstream peers with
//! their health, rate-limit zones with their Redis state and fallback
//! count, managed worker pools with their processes, cache zones with
//! their figures), `POST /reload`, `DELETE /cache/{zone}?key=..|prefix=..`
//! (a purge: [`crate::cache::purge`] here, [`crate::fanout`] to the other
//! nodes when `[redis]` is configured) and `POST /workers/{pool}/restart`
//! (a rolling restart of a managed pool). In the bench build
//! (`alloc-count`) the status also has the process's allocation counters
//! under `"allocations"`. It runs on the control thread,
//! apart from request traffic. When `[admin] token` is set every call needs
//! `Authorization: Bearer TOKEN`; config validation requires a token when
//! the admin listener is not on loopback.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::cache::{self, purge::Target};
use crate::config::LimitScope;
use crate::fanout;
use crate::metrics::expose;
use crate::reload::Control;

/// A running admin listener.
pub struct AdminServer {
    key: SocketAddr,
    bound: SocketAddr,
    stop: CancellationToken,
}

impl AdminServer {
    /// Binds `addr` and starts serving on the current runtime.
    pub fn bind(addr: SocketAddr, control: Arc<Control>) -> std::io::Result<AdminServer> {
        crate::listener::ensure_free(addr)?;
        let socket = crate::listener::bind_one(addr)?;
        let listener = TcpListener::from_std(socket)?;
        let bound = listener.local_addr()?;
        let stop = CancellationToken::new();
        tracing::info!("admin listening on http://{bound}");
        tokio::spawn(accept(listener, control, stop.clone()));
        Ok(AdminServer {
            key: addr,
            bound,
            stop,
        })
    }

    /// The configured address.
    pub fn key(&self) -> SocketAddr {
        self.key
    }

    /// The bound address.
    pub fn bound(&self) -> SocketAddr {
        self.bound
    }

    /// Stops accepting.
    pub fn stop(self) {
        self.stop.cancel();
    }
}

async fn accept(listener: TcpListener, control: Arc<Control>, stop: CancellationToken) {
    loop {
        tokio::select! {
            r = listener.accept() => {
                let Ok((stream, _)) = r else { continue };
                let control = control.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| handle(req, control.clone()));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
            _ = stop.cancelled() => break,
        }
    }
}

async fn handle(
    req: Request<Incoming>,
    control: Arc<Control>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let token = control
        .shared
        .snapshot
        .load()
        .admin
        .as_ref()
        .and_then(|a| a.token.clone());
    if let Some(token) = token {
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if given != Some(token.as_str()) {
            return Ok(json_response(
                StatusCode::UNAUTHORIZED,
                &json!({"error": "admin token required: send Authorization: Bearer <token>"}),
            ));
        }
    }
    let resp = match (req.method(), req.uri().path()) {
        (&Method::GET, "/status") => {
            json_response(StatusCode::OK, &with_allocations(status(&control)))
        }
        (&Method::GET, "/metrics") => metrics(&control),
        (&Method::POST, "/reload") => match control.reload("admin").await {
            Ok(generation) => json_response(
                StatusCode::OK,
                &json!({"ok": true, "generation": generation}),
            ),
            Err(error) => json_response(
                StatusCode::UNPROCESSABLE_ENTITY,
                &json!({"ok": false, "error": error, "generation": control.shared.snapshot.load().generation}),
            ),
        },
        (method, path) if path.starts_with("/cache/") => {
            let zone = &path["/cache/".len()..];
            purge(method, zone, req.uri().query(), &control).await
        }
        (method, path) if path.starts_with("/workers/") => {
            restart_workers(method, &path["/workers/".len()..], &control)
        }
        (_, "/status") | (_, "/reload") | (_, "/metrics") => json_response(
            StatusCode::METHOD_NOT_ALLOWED,
            &json!({"error": "use GET /status, GET /metrics or POST /reload"}),
        ),
        _ => json_response(
            StatusCode::NOT_FOUND,
            &json!({"error": "not found; try GET /status or GET /metrics"}),
        ),
    };
    Ok(resp)
}

/// `DELETE /cache/{zone}?key=..|prefix=..`: purges here, then publishes
/// to the other nodes (a Redis failure is reported, not an error: the
/// local purge stands).
async fn purge(
    method: &Method,
    zone: &str,
    query: Option<&str>,
    control: &Control,
) -> Response<Full<Bytes>> {
    if method != Method::DELETE {
        return json_response(
            StatusCode::METHOD_NOT_ALLOWED,
            &json!({"error": "use DELETE /cache/{zone}?key=KEY or ?prefix=PREFIX"}),
        );
    }
    let snap = control.shared.snapshot.load_full();
    let Some(cache) = snap.caches.get(zone).cloned() else {
        return json_response(
            StatusCode::NOT_FOUND,
            &json!({"error": format!("no cache zone `{zone}`"), "zones": snap.caches.keys().collect::<Vec<_>>()}),
        );
    };
    let target = match Target::from_query(query) {
        Ok(t) => t,
        Err(error) => return json_response(StatusCode::BAD_REQUEST, &json!({"error": error})),
    };
    let local = target.clone();
    let Ok(purged) = tokio::task::spawn_blocking(move || cache::purge::purge(&cache, &local)).await
    else {
        return json_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            &json!({"error": "the purge task failed"}),
        );
    };
    let mut body = json!({
        "zone": zone,
        "purged": purged.total(),
        "memory": purged.memory,
        "disk": purged.disk,
        "fanout": "off",
    });
    if let Some(redis) = &snap.redis {
        let message = fanout::Message {
            zone: zone.to_owned(),
            target,
            origin: control.shared.node_id.clone(),
        };
        match fanout::publish(redis, &message).await {
            Ok(_) => body["fanout"] = json!("published"),
            Err(e) => {
                tracing::warn!(zone, error = %e, "purge done here but not published to other nodes");
                body["fanout"] = json!("failed");
                body["fanout_error"] = json!(e);
            }
        }
    }
    json_response(StatusCode::OK, &body)
}

/// `POST /workers/{pool}/restart`: a rolling restart of a managed pool with
/// its current definition (202: it goes on in the background).
fn restart_workers(method: &Method, rest: &str, control: &Control) -> Response<Full<Bytes>> {
    let Some(pool) = rest.strip_suffix("/restart").filter(|p| !p.contains('/')) else {
        return json_response(
            StatusCode::NOT_FOUND,
            &json!({"error": "not found; try POST /workers/{pool}/restart"}),
        );
    };
    if method != Method::POST {
        return json_response(
            StatusCode::METHOD_NOT_ALLOWED,
            &json!({"error": "use POST /workers/{pool}/restart"}),
        );
    }
    let registry = &control.shared.app_workers;
    match registry.restart(pool) {
        Some(generation) => json_response(
            StatusCode::ACCEPTED,
            &json!({"ok": true, "pool": pool, "generation": generation}),
        ),
        None => json_response(
            StatusCode::NOT_FOUND,
            &json!({"error": format!("no managed workers pool `{pool}`"), "pools": registry.names()}),
        ),
    }
}

/// `GET /metrics`: every worker's counters added up, with what is read
/// now (peer health, reloads, zones, pools), as Prometheus scrapes it;
/// 404 when `[admin] metrics = false` (nothing is counted then).
fn metrics(control: &Control) -> Response<Full<Bytes>> {
    let shared = &control.shared;
    if !shared.snapshot.load().metrics {
        return json_response(
            StatusCode::NOT_FOUND,
            &json!({"error": "metrics are off ([admin] metrics = false)"}),
        );
    }
    match crate::metrics::read::scrape(shared) {
        Ok(text) => {
            let mut resp = Response::new(Full::new(Bytes::from(text)));
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static(expose::CONTENT_TYPE),
            );
            resp
        }
        Err(_) => json_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            &json!({"error": "the metrics could not be encoded"}),
        ),
    }
}

fn status(control: &Control) -> Value {
    let shared = &control.shared;
    let snap = shared.snapshot.load();
    let now = Instant::now();
    let upstreams: serde_json::Map<String, Value> = snap
        .upstreams
        .iter()
        .map(|(name, up)| {
            let members = up.members();
            let peers: Vec<Value> = members
                .peers
                .iter()
                .zip(&members.addrs)
                .map(|(peer, addr)| {
                    let mut v = serde_json::to_value(peer.health(now)).unwrap_or(Value::Null);
                    if let Value::Object(m) = &mut v {
                        m.insert("addr".into(), json!(addr.to_string()));
                        m.insert("weight".into(), json!(peer.config.weight));
                        m.insert("backup".into(), json!(peer.config.backup));
                    }
                    v
                })
                .collect();
            (
                name.clone(),
                json!({"balance": up.def.balance.as_str(), "peers": peers}),
            )
        })
        .collect();
    let limits: serde_json::Map<String, Value> = snap
        .limits
        .iter()
        .map(|(name, zone)| {
            let v = match (&zone.def.scope, zone.redis_status()) {
                (LimitScope::Redis { on_error, .. }, Some(redis)) => json!({
                    "scope": "redis",
                    "on_redis_error": on_error.as_str(),
                    "redis": redis,
                }),
                _ => json!({"scope": "local"}),
            };
            (name.clone(), v)
        })
        .collect();
    let caches: serde_json::Map<String, Value> = snap
        .caches
        .iter()
        .map(|(name, zone)| (name.clone(), zone.stats()))
        .collect();
    json!({
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_secs": shared.started.elapsed().as_secs_f64(),
        "generation": snap.generation,
        "threads": shared.workers,
        "files": snap.files,
        "listeners": control.bound(),
        "reload": shared.reload_status(),
        "upstreams": upstreams,
        "limits": limits,
        "workers": shared.app_workers.status(),
        "caches": caches,
    })
}

/// The bench build (`alloc-count`): the status plus the allocation counters,
/// taken after the rest was built (so a reader's window holds about one
/// whole status request, which bench/run.py measures and subtracts).
#[cfg(feature = "alloc-count")]
fn with_allocations(mut status: Value) -> Value {
    status["allocations"] = json!(crate::alloc_count::totals());
    status
}

#[cfg(not(feature = "alloc-count"))]
fn with_allocations(status: Value) -> Value {
    status
}

fn json_response(status: StatusCode, body: &Value) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body.to_string())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    resp
}

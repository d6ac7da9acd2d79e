//! The admin listener: `GET /` (the status page, [`page`]), `GET /status`
//! (the same [`status::Report`] as JSON: version, uptime, config
//! generation, last reload and its error, listeners, request and 5xx
//! rates over the last minute ([`rates`]), routes, upstream peers with
//! their health, rate-limit zones with their Redis state and fallback
//! count, managed worker pools with their processes, cache zones with
//! their figures), `GET /metrics` (Prometheus, see [`crate::metrics`]),
//! `POST /reload`, `DELETE /cache/{zone}?key=..|prefix=..`
//! (a purge: [`crate::cache::purge`] here, [`crate::fanout`] to the other
//! nodes when `[redis]` is configured) and `POST /workers/{pool}/restart`
//! (a rolling restart of a managed pool). In the bench build
//! (`alloc-count`) the status also has the process's allocation counters
//! under `"allocations"`. It runs on the control thread,
//! apart from request traffic. When `[admin] token` is set every call needs
//! `Authorization: Bearer TOKEN`, but for `GET /`, which also takes
//! `?token=TOKEN` (a browser cannot be made to send the header; the
//! page's script sends it on to `/status`); config validation requires a
//! token when the admin listener is not on loopback.

mod page;
mod rates;
pub mod status;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use subtle::ConstantTimeEq;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::cache::{self, purge::Target};
use crate::fanout;
use crate::metrics::expose;
use crate::reload::Control;
use rates::History;
use status::Report;

/// A running admin listener.
pub struct AdminServer {
    key: SocketAddr,
    bound: SocketAddr,
    stop: CancellationToken,
    /// A duplicate of the listening socket, for a binary upgrade to pass on.
    socket: std::net::TcpListener,
}

impl AdminServer {
    /// Binds `addr` (or serves on `inherited`, the socket a binary upgrade
    /// handed over for it) and starts serving on the current runtime.
    pub fn bind(
        addr: SocketAddr,
        control: Arc<Control>,
        inherited: Option<std::net::TcpListener>,
    ) -> std::io::Result<AdminServer> {
        let socket = match inherited {
            Some(socket) => socket,
            None => {
                crate::listener::ensure_free(addr)?;
                crate::listener::bind_one(addr)?
            }
        };
        let kept = socket.try_clone()?;
        let listener = TcpListener::from_std(socket)?;
        let bound = listener.local_addr()?;
        let stop = CancellationToken::new();
        tracing::info!("admin listening on http://{bound}");
        // Sampled only while there is an admin listener to show the rates;
        // a listener moved to another address starts a new minute.
        let history = Arc::new(History::default());
        tokio::spawn(rates::sample(
            history.clone(),
            control.shared.clone(),
            stop.clone(),
        ));
        tokio::spawn(accept(listener, control, history, stop.clone()));
        Ok(AdminServer {
            key: addr,
            bound,
            stop,
            socket: kept,
        })
    }

    /// A duplicate of its socket, for a binary upgrade.
    pub fn passed(&self) -> std::io::Result<crate::upgrade::Passed> {
        Ok(crate::upgrade::Passed {
            kind: crate::upgrade::Kind::Admin,
            key: self.key,
            socket: self.socket.try_clone()?,
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
        drop(self);
    }
}

impl Drop for AdminServer {
    /// A listener dropped unused (a reload or start that failed after it
    /// was bound) stops accepting too.
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn accept(
    listener: TcpListener,
    control: Arc<Control>,
    history: Arc<History>,
    stop: CancellationToken,
) {
    loop {
        tokio::select! {
            r = listener.accept() => {
                let Ok((stream, _)) = r else { continue };
                let control = control.clone();
                let history = history.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| {
                        handle(req, control.clone(), history.clone())
                    });
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
    history: Arc<History>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let token = control
        .shared
        .snapshot
        .load()
        .admin
        .as_ref()
        .and_then(|a| a.token.clone());
    if let Some(token) = token
        && !authorized(&req, &token)
    {
        return Ok(json_response(
            StatusCode::UNAUTHORIZED,
            &json!({"error": "admin token required: send Authorization: Bearer <token> (or open GET /?token=<token>)"}),
        ));
    }
    let resp = match (req.method(), req.uri().path()) {
        (&Method::GET, "/") => status_page(&Report::build(&control, &history)),
        (&Method::GET, "/status") => status_json(&Report::build(&control, &history)),
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
        (_, "/") | (_, "/status") | (_, "/reload") | (_, "/metrics") => json_response(
            StatusCode::METHOD_NOT_ALLOWED,
            &json!({"error": "use GET /, GET /status, GET /metrics or POST /reload"}),
        ),
        _ => json_response(
            StatusCode::NOT_FOUND,
            &json!({"error": "not found; try GET / (the status page), GET /status or GET /metrics"}),
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

/// Whether `req` carries the admin token: `Authorization: Bearer TOKEN`,
/// or on `GET /` (a page a browser opens) `?token=TOKEN`.
fn authorized(req: &Request<Incoming>, token: &str) -> bool {
    let header = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    // Compared in constant time: the admin listener may be on a network.
    let same = |given: &str| bool::from(given.as_bytes().ct_eq(token.as_bytes()));
    if header.is_some_and(same) {
        return true;
    }
    if req.method() != Method::GET || req.uri().path() != "/" {
        return false;
    }
    query_token(req.uri().query()).is_some_and(|given| same(&given))
}

/// The `token` parameter of a query string, percent-decoded.
fn query_token(query: Option<&str>) -> Option<String> {
    let value = query?
        .split('&')
        .find_map(|pair| pair.strip_prefix("token="))?;
    // A `+` is a space in a form-encoded query.
    let value = value.replace('+', " ");
    percent_encoding::percent_decode_str(&value)
        .decode_utf8()
        .ok()
        .map(|v| v.into_owned())
}

/// `GET /`: the status page.
fn status_page(report: &Report) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(page::render(report))));
    let headers = resp.headers_mut();
    let set = |name, value| (name, header::HeaderValue::from_static(value));
    for (name, value) in [
        set(header::CONTENT_TYPE, "text/html; charset=utf-8"),
        set(header::CACHE_CONTROL, "no-store"),
        set(header::CONTENT_SECURITY_POLICY, page::CSP),
        // The page may be opened with ?token=: never pass its URL on.
        set(header::REFERRER_POLICY, "no-referrer"),
        set(header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
    ] {
        headers.insert(name, value);
    }
    resp
}

/// `GET /status`: the report as JSON.
fn status_json(report: &Report) -> Response<Full<Bytes>> {
    match serde_json::to_vec(report) {
        Ok(body) => {
            let mut resp = Response::new(Full::new(Bytes::from(body)));
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("application/json"),
            );
            resp
        }
        Err(_) => json_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            &json!({"error": "the status could not be encoded"}),
        ),
    }
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

#[cfg(test)]
mod tests {
    use super::query_token;

    #[test]
    fn the_page_token_is_read_from_the_query_percent_decoded() {
        assert_eq!(query_token(Some("token=s3cret")).as_deref(), Some("s3cret"));
        assert_eq!(
            query_token(Some("x=1&token=a%2Bb%26c")).as_deref(),
            Some("a+b&c")
        );
        assert_eq!(query_token(Some("token=a+b")).as_deref(), Some("a b"));
        assert_eq!(query_token(Some("notoken=x&tokens=y")), None);
        assert_eq!(query_token(None), None);
    }
}

//! The auth service of the `forward_auth` tests: it decides by the
//! client's `Authorization` and records every request it receives, over
//! plain HTTP or TLS.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};

use crate::support::{Origin, Reply};

/// A request as the auth service received it.
#[derive(Clone, Debug)]
pub struct Seen {
    /// The request's method.
    pub method: String,
    /// Its request target.
    pub uri: String,
    /// Its headers by lowercase name, values in the order sent.
    pub headers: HashMap<String, Vec<String>>,
    /// Its body.
    pub body: Vec<u8>,
}

impl Seen {
    /// The first value of header `name` (lowercase).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v[0].as_str())
    }
}

/// Every request the service received, in order.
pub type Record = Arc<Mutex<Vec<Seen>>>;

/// The auth service's decision, by the `Authorization` it was sent.
async fn decide(req: Request<Incoming>, record: Record) -> Reply {
    let mut headers: HashMap<String, Vec<String>> = HashMap::new();
    for (k, v) in req.headers() {
        headers
            .entry(k.as_str().to_string())
            .or_default()
            .push(String::from_utf8_lossy(v.as_bytes()).into_owned());
    }
    let method = req.method().to_string();
    let uri = req.uri().to_string();
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes().to_vec())
        .unwrap_or_default();
    let seen = Seen {
        method,
        uri,
        headers,
        body,
    };
    let auth = seen.header("authorization").unwrap_or("").to_string();
    record.lock().expect("record").push(seen);
    let reply = Response::builder();
    let reply = match auth.as_str() {
        "Bearer good" => reply
            .status(200)
            .header("x-user-id", "alice")
            .header("x-auth-extra", "not-copied")
            .body(Full::new(Bytes::new())),
        "Bearer anon" => reply.status(204).body(Full::new(Bytes::new())),
        "Bearer login" => reply
            .status(302)
            .header("location", "https://login.example.test/?next=/api/")
            .header("set-cookie", "state=abc; Path=/")
            .header("set-cookie", "nonce=xyz; Path=/")
            .body(Full::new(Bytes::new())),
        "Bearer slow" => {
            tokio::time::sleep(Duration::from_secs(3)).await;
            reply.status(200).body(Full::new(Bytes::new()))
        }
        _ => reply
            .status(401)
            .header("www-authenticate", "Bearer realm=\"api\"")
            .header("content-type", "application/json")
            .header("x-internal", "auth-only")
            .body(Full::new(Bytes::from_static(
                b"{\"error\":\"invalid token\"}\xff",
            ))),
    };
    reply.expect("reply")
}

/// The auth service on 127.0.0.1 and what it has seen.
pub async fn auth_service() -> (Origin, Record) {
    let record: Record = Arc::default();
    let seen = record.clone();
    let origin = Origin::start(move |req| decide(req, seen.clone())).await;
    (origin, record)
}

/// How many requests the service received.
pub fn count(record: &Record) -> usize {
    record.lock().expect("record").len()
}

/// The last request the service received.
pub fn last(record: &Record) -> Seen {
    record
        .lock()
        .expect("record")
        .last()
        .cloned()
        .expect("a request")
}

/// An auth service over TLS for `localhost` on 127.0.0.1, recording what
/// it is sent.
pub async fn tls_auth_service(peer: &crate::support::TlsPeer) -> (u16, Record) {
    let acceptor = tokio_rustls::TlsAcceptor::from(peer.server.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let record: Record = Arc::default();
    let seen = record.clone();
    tokio::spawn(async move {
        while let Ok((io, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let seen = seen.clone();
            tokio::spawn(async move {
                let Ok(io) = acceptor.accept(io).await else {
                    return;
                };
                let service = hyper::service::service_fn(move |req| {
                    let seen = seen.clone();
                    async move { Ok::<_, std::convert::Infallible>(decide(req, seen).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(io), service)
                    .await;
            });
        }
    });
    (port, record)
}

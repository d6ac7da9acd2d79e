//! `[redis]` → redis clients, and each worker thread's connections made
//! from them. Owns how moongate reaches Redis: one server or a Redis
//! Cluster, in plain TCP or in TLS (`rediss://`, trusting `[redis] ca` or,
//! without it, the system's roots) — the purge fan-out's short-lived
//! connections ([`open`]) and the limit zones' long-lived ones alike.
//! Knows nothing of buckets, purges or HTTP.

use std::cell::RefCell;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster::{ClusterClient, ClusterConfig};
use redis::cluster_async::ClusterConnection;

use crate::config::{RedisCa, RedisSettings, RedisTarget};

/// How long one connection attempt may take (the caller's own timeout
/// still bounds every take).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// How many times the cluster client retries one command on its own
/// (after a `MOVED`, a refreshed slot map or a reconnect); the caller's
/// timeout still bounds the whole take.
const CLUSTER_RETRIES: u32 = 2;

/// The trust for TLS connections: `ca`'s certificates (the system's roots
/// are used when there is no `ca`, by the client itself).
fn certificates(ca: &RedisCa) -> redis::TlsCertificates {
    redis::TlsCertificates {
        client_tls: None,
        root_cert: Some(ca.pem.to_vec()),
    }
}

/// A client for one server at `url` (a `[redis] url`, or one cluster node
/// for a plain connection to it); `ca` is the trust for a `rediss://` URL
/// (conf.d allows it only with one). Parses, never connects.
pub fn open(url: &str, ca: Option<&RedisCa>) -> redis::RedisResult<redis::Client> {
    match ca {
        Some(ca) => redis::Client::build_with_tls(url, certificates(ca)),
        None => redis::Client::open(url),
    }
}

/// Where one worker thread's connection goes: the same Redis with the same
/// trust shares a connection, whichever zone takes from it.
type Endpoint = (RedisTarget, Option<RedisCa>);

/// The configured Redis, ready to make connections (no connection yet).
/// Boxed: a client with its TLS parameters is a few hundred bytes.
#[derive(Clone)]
pub(super) enum Client {
    /// `[redis] url`: one server.
    Server(Box<redis::Client>),
    /// `[redis] cluster`: a Redis Cluster, from its seed nodes.
    Cluster(Box<ClusterClient>),
}

impl Client {
    /// The client for `settings`; parses, never connects.
    pub(super) fn new(settings: &RedisSettings) -> Result<Client, String> {
        let ca = settings.ca.as_ref();
        match &settings.target {
            RedisTarget::Server(url) => open(url, ca)
                .map(|c| Client::Server(Box::new(c)))
                .map_err(|e| format!("redis url \"{url}\": {e}")),
            RedisTarget::Cluster(nodes) => {
                let mut builder = ClusterClient::builder(nodes.iter().map(String::as_str))
                    .retries(CLUSTER_RETRIES)
                    .connection_timeout(CONNECT_TIMEOUT);
                if let Some(ca) = ca {
                    builder = builder.certs(certificates(ca));
                }
                builder
                    .build()
                    .map(|c| Client::Cluster(Box::new(c)))
                    .map_err(|e| format!("redis cluster nodes: {e}"))
            }
        }
    }

    /// A new connection that connects in the background (the first take
    /// waits for it, within its timeout). Must run inside a tokio runtime:
    /// the connection's tasks are spawned on it.
    fn connect_lazily(&self) -> redis::RedisResult<Connection> {
        match self {
            Client::Server(client) => {
                // No retries inside the manager: a failed take triggers the
                // next reconnect, and the probe gate paces them.
                let config = ConnectionManagerConfig::new()
                    .set_number_of_retries(0)
                    .set_connection_timeout(Some(CONNECT_TIMEOUT));
                let conn = ConnectionManager::new_lazy_with_config((**client).clone(), config)?;
                // Connect now, in the background, rather than on the first take.
                let mut warm = conn.clone();
                tokio::spawn(async move {
                    let _: redis::RedisResult<()> = redis::cmd("PING").query_async(&mut warm).await;
                });
                Ok(Connection::Server(conn))
            }
            // Pending: it fetches the slot map and connects to the masters
            // in the background; it reconnects (and refreshes the slot map)
            // by itself when a node fails or a slot moves.
            Client::Cluster(client) => Ok(Connection::Cluster(
                client.get_pending_async_connection_with_config(
                    ClusterConfig::new().set_connection_timeout(CONNECT_TIMEOUT),
                ),
            )),
        }
    }
}

/// One worker thread's connection to one configured Redis: multiplexed,
/// cheap to clone (clones share it). The take script runs over either kind
/// the same way; on a cluster the script's one key picks the master.
#[derive(Clone)]
pub(super) enum Connection {
    /// To one server; reconnects in the background.
    Server(ConnectionManager),
    /// To every master of a Redis Cluster, routed by key slot.
    Cluster(ClusterConnection),
}

impl redis::aio::ConnectionLike for Connection {
    fn req_packed_command<'a>(
        &'a mut self,
        cmd: &'a redis::Cmd,
    ) -> redis::RedisFuture<'a, redis::Value> {
        match self {
            Connection::Server(c) => c.req_packed_command(cmd),
            Connection::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<redis::Value>> {
        match self {
            Connection::Server(c) => c.req_packed_commands(pipeline, offset, count),
            Connection::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Connection::Server(c) => c.get_db(),
            Connection::Cluster(c) => c.get_db(),
        }
    }
}

/// One worker thread's connection to each configured Redis (see the
/// [`cluster`](super) module doc), owned by its
/// [`WorkerLocal`](crate::worker_local::WorkerLocal).
#[derive(Default)]
pub struct RedisConnections {
    /// Searched in order: a conf.d has one `[redis]`, so this holds one
    /// entry (more only after reloads that changed it), and comparing a URL
    /// and a digest costs less than hashing them.
    by_endpoint: RefCell<Vec<(Endpoint, Connection)>>,
}

impl RedisConnections {
    /// The connection to `settings`' Redis, made by `client` (lazily: it
    /// connects in the background) on first use. Must run inside a tokio
    /// runtime.
    pub(super) fn get(
        &self,
        settings: &RedisSettings,
        client: &Client,
    ) -> redis::RedisResult<Connection> {
        let mut conns = self.by_endpoint.borrow_mut();
        let found = conns
            .iter()
            .find(|((target, ca), _)| *target == settings.target && *ca == settings.ca);
        if let Some((_, c)) = found {
            return Ok(c.clone());
        }
        let conn = client.connect_lazily()?;
        conns.push(((settings.target.clone(), settings.ca.clone()), conn.clone()));
        Ok(conn)
    }

    /// How many connections this thread holds.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.by_endpoint.borrow().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A self-signed CA certificate in PEM.
    fn ca_pem() -> Vec<u8> {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let cert = params.self_signed(&key).expect("ca");
        cert.pem().into_bytes()
    }

    fn settings(target: RedisTarget, ca: Option<RedisCa>) -> RedisSettings {
        RedisSettings {
            target,
            timeout: Duration::from_millis(50),
            ca,
        }
    }

    #[test]
    fn a_ca_is_for_rediss_urls_and_must_hold_certificates() {
        let ca = RedisCa::new("/ca.pem".into(), ca_pem());
        assert!(open("rediss://127.0.0.1:6380", Some(&ca)).is_ok());
        assert!(open("rediss://127.0.0.1:6380", None).is_ok());
        let e = open("redis://127.0.0.1:6379", Some(&ca)).expect_err("plain URL with a CA");
        assert!(e.to_string().contains("rediss://"), "{e}");
        let junk = RedisCa::new(
            "/junk.pem".into(),
            b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n".to_vec(),
        );
        assert!(open("rediss://127.0.0.1:6380", Some(&junk)).is_err());
        let cluster = settings(
            RedisTarget::Cluster(vec!["rediss://127.0.0.1:7000".into()]),
            Some(ca),
        );
        assert!(matches!(Client::new(&cluster), Ok(Client::Cluster(_))));
    }

    #[tokio::test]
    async fn one_connection_per_redis_and_trust() {
        let url = RedisTarget::Server("rediss://127.0.0.1:1".into());
        let (a, b) = (
            RedisCa::new("/a.pem".into(), ca_pem()),
            RedisCa::new("/b.pem".into(), ca_pem()),
        );
        // Same contents under another name: the same trust.
        let a_again = RedisCa::new("/elsewhere/a.pem".into(), a.pem.to_vec());
        let conns = RedisConnections::default();
        for s in [
            settings(url.clone(), Some(a)),
            settings(url.clone(), Some(a_again)),
            settings(url.clone(), Some(b)),
            settings(url, None),
        ] {
            let client = Client::new(&s).expect("client");
            conns.get(&s, &client).expect("lazy connection");
        }
        assert_eq!(conns.len(), 3);
    }
}

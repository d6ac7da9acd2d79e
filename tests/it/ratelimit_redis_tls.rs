//! `[redis]` over TLS (`rediss://`) against a real redis-server that
//! speaks only TLS (`--port 0 --tls-port`), its certificate signed by a CA
//! made for the test: a `scope = "redis"` zone trusting that CA (`ca`) is
//! enforced through it — two nodes share one bucket, whose key is in that
//! Redis — and a node trusting another CA does not talk to it (the zone
//! falls back, saying why); purges fan out over the same TLS Redis.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::Response;

use crate::support::{Moongate, Origin, Redis, TestCa, cache_status, client};

/// A node with an admin listener, `[redis]` at `redis` trusting `ca`, a
/// 1/m burst-3 zone keyed by `x-key` on "/" (refusing while Redis does not
/// answer), and a cache zone on "/cached".
fn conf(redis: &Redis, ca: &std::path::Path, origin: std::net::SocketAddr) -> String {
    format!(
        r#"[server]
listen = ["127.0.0.1:0"]
workers = 2
access_log = "off"

[admin]
listen = "127.0.0.1:0"

[upstream.app]
servers = [{{ addr = "{origin}" }}]

[[route]]
path = "/"
upstream = "app"
limit = "tls_zone"

[[route]]
path = "/cached"
upstream = "app"
cache = "pages"

[limit.tls_zone]
rate = "1/m"
burst = 3
key = "$http_x_key"
scope = "redis"
on_redis_error = "deny"

[cache.pages]
memory = "4MiB"

[redis]
url = "{url}"
ca = "{ca}"
timeout = "2s"
"#,
        url = redis.url(),
        ca = ca.display(),
    )
}

/// An origin answering with `max-age=60` (so "/cached" is stored).
async fn origin() -> Origin {
    Origin::start(|req| async move {
        Response::builder()
            .status(200)
            .header("cache-control", "max-age=60")
            .body(Full::new(Bytes::from(req.uri().to_string())))
            .expect("reply")
    })
    .await
}

async fn status(mg: &Moongate, key: &str) -> u16 {
    client()
        .get(mg.url("/"))
        .header("x-key", key)
        .send()
        .await
        .expect("GET")
        .status()
        .as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_zone_is_enforced_through_redis_over_tls() {
    let ca = TestCa::new();
    let redis = Redis::start_tls(&ca);
    assert!(redis.url().starts_with("rediss://127.0.0.1:"));
    let origin = origin().await;
    let (a, b) = (
        Moongate::start(&conf(&redis, &ca.ca, origin.addr)),
        Moongate::start(&conf(&redis, &ca.ca, origin.addr)),
    );

    // One bucket of 3 per key, shared by the two nodes through Redis: the
    // deny fallback would refuse all four, a per-node bucket allow six.
    let mut seen = Vec::new();
    for mg in [&a, &b, &a, &b] {
        seen.push(status(mg, "tls-client").await);
    }
    assert_eq!(seen, [200, 200, 200, 429]);
    assert_eq!(status(&b, "tls-client").await, 429);
    assert_eq!(
        redis.integer(&["EXISTS", "mg:{tls_zone:tls-client}"]),
        Some(1),
        "the bucket is in the TLS Redis"
    );
    for mg in [&a, &b] {
        let st = mg.status().await;
        let z = &st["limits"]["tls_zone"]["redis"];
        assert_eq!(z["state"], "ok", "{st}");
        assert_eq!(z["fallbacks"], 0, "{st}");
    }

    // Purges travel over the same TLS Redis.
    a.wait_log("purge fan-out: subscribed", Duration::from_secs(10));
    b.wait_log("purge fan-out: subscribed", Duration::from_secs(10));
    let get = |mg: &Moongate| {
        let url = mg.url("/cached");
        async move {
            let resp = client().get(url).send().await.expect("GET");
            cache_status(&resp)
        }
    };
    for mg in [&a, &b] {
        assert_eq!(get(mg).await, "MISS");
        assert_eq!(get(mg).await, "HIT");
    }
    let resp = client()
        .delete(a.admin_url("/cache/pages"))
        .query(&[("key", "http127.0.0.1/cached")])
        .send()
        .await
        .expect("purge");
    let body: serde_json::Value =
        serde_json::from_str(&resp.text().await.expect("body")).expect("JSON");
    assert_eq!(body["fanout"], "published", "{body}");
    assert_eq!(body["purged"], 1, "{body}");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while get(&b).await != "MISS" {
        assert!(
            std::time::Instant::now() < deadline,
            "the purge did not reach node B within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A node trusting another CA does not talk to the server: the handshake
/// fails, the zone refuses per `on_redis_error = "deny"` and says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_signed_by_another_ca_is_not_trusted() {
    let (ca, stranger) = (TestCa::new(), TestCa::new());
    let redis = Redis::start_tls(&ca);
    let origin = origin().await;
    let mg = Moongate::start(&conf(&redis, &stranger.ca, origin.addr));
    assert_eq!(status(&mg, "k").await, 429, "denied: Redis is not trusted");
    let st = mg.status().await;
    let z = &st["limits"]["tls_zone"]["redis"];
    assert_eq!(z["state"], "failing", "{st}");
    let error = z["last_error"].as_str().unwrap_or("");
    assert!(
        error.to_lowercase().contains("certificate"),
        "the error names the certificate: {st}"
    );
    mg.wait_log("redis unreachable", Duration::from_secs(5));
    assert_eq!(redis.integer(&["DBSIZE"]), Some(0), "nothing reached Redis");
}

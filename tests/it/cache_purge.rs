//! Purging the proxy cache through the admin API: by key (the next
//! request is a MISS, then a HIT again), by prefix (two URLs under it,
//! not a third), through to the disk tier (a restart after a purge misses),
//! the 404/400/405/401 answers, and the fan-out over a real Redis: a purge
//! on node A makes node B's next request a MISS.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::Response;
use serde_json::Value;

use crate::support::{Moongate, Origin, Redis, app_conf, client};

/// An origin answering every path with `max-age=60` and a body naming
/// the path (`/vary...` varies on Accept-Language); `Origin::hits` counts
/// its requests.
async fn origin() -> Origin {
    Origin::start(|req| async move {
        let body = format!("{}", req.uri());
        let mut reply = Response::builder()
            .status(200)
            .header("cache-control", "max-age=60");
        if req.uri().path().starts_with("/vary") {
            reply = reply.header("vary", "Accept-Language");
        }
        reply.body(Full::new(Bytes::from(body))).expect("reply")
    })
    .await
}

/// A cached route in front of `origin`, an admin listener with a token,
/// and `extra` (a disk tier, `[redis]`).
fn conf(origin: std::net::SocketAddr, extra: &str) -> String {
    format!(
        r#"{}
[admin]
listen = "127.0.0.1:0"
token = "t0k"

[[route]]
path = "/"
upstream = "app"
cache = "pages"

[cache.pages]
memory = "4MiB"
{extra}
"#,
        app_conf(origin, 2)
    )
}

fn disk(path: &std::path::Path) -> String {
    format!(
        "disk = {{ path = \"{}\", size = \"16MiB\" }}\n",
        path.display()
    )
}

/// X-Cache-Status of one GET.
async fn cache_status(url: &str) -> String {
    cache_status_lang(url, "-").await
}

/// X-Cache-Status of one GET with this Accept-Language.
async fn cache_status_lang(url: &str, lang: &str) -> String {
    let resp = client()
        .get(url)
        .header("accept-language", lang)
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), 200);
    crate::support::cache_status(&resp)
}

/// The rendered cache key of `path` (`$scheme$host$request_uri`; `$host`
/// is without the port, as nginx's).
fn key(path: &str) -> String {
    format!("http127.0.0.1{path}")
}

/// Sends `DELETE /cache/{zone}` with `query` params (percent-encoded by the
/// client); answers the status and the JSON body.
async fn purge(mg: &Moongate, zone: &str, query: &[(&str, &str)]) -> (u16, Value) {
    let resp = client()
        .delete(mg.admin_url(&format!("/cache/{zone}")))
        .bearer_auth("t0k")
        .query(query)
        .send()
        .await
        .expect("purge");
    let status = resp.status().as_u16();
    let text = resp.text().await.expect("body");
    let body = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_purge_makes_the_next_request_a_miss_then_a_hit_again() {
    let origin = origin().await;
    let mg = Moongate::start(&conf(origin.addr, ""));
    let url = mg.url("/a?x=1&y=a b");
    assert_eq!(cache_status(&url).await, "MISS");
    assert_eq!(cache_status(&url).await, "HIT");
    let other = mg.url("/b");
    assert_eq!(cache_status(&other).await, "MISS");
    assert_eq!(origin.hits(), 2);

    let (status, body) = purge(&mg, "pages", &[("key", &key("/a?x=1&y=a%20b"))]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["zone"], "pages");
    assert_eq!(body["purged"], 1, "{body}");
    assert_eq!(body["fanout"], "off");

    assert_eq!(cache_status(&url).await, "MISS");
    assert_eq!(origin.hits(), 3);
    assert_eq!(cache_status(&url).await, "HIT");
    assert_eq!(cache_status(&other).await, "HIT");
    assert_eq!(origin.hits(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_purge_drops_every_vary_variant_of_the_key() {
    let origin = origin().await;
    let dir = tempfile::tempdir().expect("disk dir");
    let mg = Moongate::start(&conf(origin.addr, &disk(&dir.path().join("pages"))));
    for lang in ["en", "fr"] {
        assert_eq!(cache_status_lang(&mg.url("/vary"), lang).await, "MISS");
        assert_eq!(cache_status_lang(&mg.url("/vary"), lang).await, "HIT");
    }
    assert_eq!(origin.hits(), 2);
    let (status, body) = purge(&mg, "pages", &[("key", &key("/vary"))]).await;
    assert_eq!(status, 200, "{body}");
    // The Vary marker and its two variants.
    assert_eq!(body["memory"], 3, "{body}");
    for lang in ["en", "fr"] {
        assert_eq!(cache_status_lang(&mg.url("/vary"), lang).await, "MISS");
    }
    assert_eq!(origin.hits(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prefix_purge_removes_the_urls_under_it_and_no_other() {
    let origin = origin().await;
    let dir = tempfile::tempdir().expect("disk dir");
    let mg = Moongate::start(&conf(origin.addr, &disk(&dir.path().join("pages"))));
    for path in ["/img/1.png", "/img/2.png", "/css/site.css"] {
        assert_eq!(cache_status(&mg.url(path)).await, "MISS");
        assert_eq!(cache_status(&mg.url(path)).await, "HIT");
    }
    assert_eq!(origin.hits(), 3);
    let (status, body) = purge(&mg, "pages", &[("prefix", &key("/img/"))]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["purged"], 2, "{body}");
    assert_eq!(cache_status(&mg.url("/img/1.png")).await, "MISS");
    assert_eq!(cache_status(&mg.url("/img/2.png")).await, "MISS");
    assert_eq!(cache_status(&mg.url("/css/site.css")).await, "HIT");
    assert_eq!(origin.hits(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purge_reaches_the_disk_tier_across_a_restart() {
    let origin = origin().await;
    let dir = tempfile::tempdir().expect("disk dir");
    let text = conf(origin.addr, &disk(&dir.path().join("pages")));
    let mut mg = Moongate::start(&text);
    assert_eq!(cache_status(&mg.url("/gone")).await, "MISS");
    assert_eq!(cache_status(&mg.url("/kept")).await, "MISS");
    let (status, body) = purge(&mg, "pages", &[("key", &key("/gone"))]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["purged"], 1, "{body}");
    assert_eq!(body["disk"], 1, "{body}");
    mg.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(mg.wait_exit(Duration::from_secs(15)), Some(0));
    let mg = Moongate::start(&text);
    assert_eq!(cache_status(&mg.url("/kept")).await, "HIT");
    assert_eq!(cache_status(&mg.url("/gone")).await, "MISS");
    assert_eq!(origin.hits(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_purges_get_404_400_405_and_401() {
    let origin = origin().await;
    let mg = Moongate::start(&conf(origin.addr, ""));
    let (status, body) = purge(&mg, "nope", &[("key", "k")]).await;
    assert_eq!(status, 404, "{body}");
    for query in [
        &[][..],
        &[("key", "a"), ("prefix", "b")][..],
        &[("key", "")][..],
        &[("kye", "a")][..],
    ] {
        let (status, body) = purge(&mg, "pages", query).await;
        assert_eq!(status, 400, "{query:?}: {body}");
    }
    let get = client()
        .get(mg.admin_url("/cache/pages?key=k"))
        .bearer_auth("t0k")
        .send()
        .await
        .expect("get");
    assert_eq!(get.status(), 405);
    let post = client()
        .post(mg.admin_url("/cache/pages?key=k"))
        .bearer_auth("t0k")
        .send()
        .await
        .expect("post");
    assert_eq!(post.status(), 405);
    let anonymous = client()
        .delete(mg.admin_url("/cache/pages?key=k"))
        .send()
        .await
        .expect("delete");
    assert_eq!(anonymous.status(), 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purge_on_one_node_reaches_another_through_redis() {
    let mut redis = Redis::start();
    let origin_a = origin().await;
    let origin_b = origin().await;
    let with_redis = format!(
        "\n[redis]\nurl = \"{}\"\ntimeout = \"500ms\"\n",
        redis.url()
    );
    // [redis] must follow the zone's lines: it starts a new table.
    let a = Moongate::start(&conf(origin_a.addr, &with_redis));
    let b = Moongate::start(&conf(origin_b.addr, &with_redis));
    b.wait_log("purge fan-out: subscribed", Duration::from_secs(10));
    a.wait_log("purge fan-out: subscribed", Duration::from_secs(10));

    // Both nodes cache the same URL under the same key.
    for mg in [&a, &b] {
        assert_eq!(cache_status(&mg.url("/shared")).await, "MISS");
        assert_eq!(cache_status(&mg.url("/shared")).await, "HIT");
    }
    assert_eq!((origin_a.hits(), origin_b.hits()), (1, 1));
    let (status, body) = purge(&a, "pages", &[("key", &key("/shared"))]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["fanout"], "published", "{body}");
    assert_eq!(body["purged"], 1, "{body}");

    wait_for_miss(&b).await;
    assert_eq!(origin_b.hits(), 2);
    assert_eq!(cache_status(&a.url("/shared")).await, "MISS");
    assert_eq!(origin_a.hits(), 2);

    // Redis gone: the purge still happens here, and says the fan-out failed.
    redis.kill();
    let (status, body) = purge(&a, "pages", &[("prefix", "")]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["purged"], 1, "{body}");
    assert_eq!(body["fanout"], "failed", "{body}");
    assert_eq!(cache_status(&a.url("/shared")).await, "MISS");

    // Redis back: B subscribes again (its loss logged once) and purges
    // from A reach it again.
    let seen = b.log_lines().len();
    redis.restart();
    b.wait_log_after(seen, "purge fan-out: subscribed", Duration::from_secs(15));
    let lost = b
        .log_lines()
        .iter()
        .filter(|l| l.contains("purge fan-out: not subscribed"))
        .count();
    assert_eq!(lost, 1);
    assert_eq!(cache_status(&b.url("/shared")).await, "HIT");
    let (_, body) = purge(&a, "pages", &[("prefix", &key("/sh"))]).await;
    assert_eq!(body["fanout"], "published", "{body}");
    wait_for_miss(&b).await;
    assert_eq!(origin_b.hits(), 3);
}

/// Waits (at most 5 s) until `/shared` on `mg` is a MISS.
async fn wait_for_miss(mg: &Moongate) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let status = cache_status(&mg.url("/shared")).await;
        if status == "MISS" {
            return;
        }
        assert!(Instant::now() < deadline, "still {status}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

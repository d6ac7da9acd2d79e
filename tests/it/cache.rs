//! The proxy cache's first step through real requests: MISS then HIT with
//! one origin request, responses that must not be stored, max-age expiry,
//! Vary variants, HEAD from a cached GET, invalidation by POST, the disk
//! tier across a graceful restart (and a corrupted entry file), an
//! unknown `cache = "x"` refused with its place; the lock (40 concurrent
//! cold misses, and a hot key expiring under load, each one origin
//! request), stale-while-revalidate, stale-if-error (origin 500 and
//! origin down) and revalidation with a 304.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::Response;

use crate::support::{self, Moongate, Origin, app_conf, client};

/// An origin whose answers depend on the path, each body carrying a
/// serial number so two origin answers never look alike:
/// `/pub` max-age=60, `/nostore` no-store, `/private` private, `/short`
/// max-age=1, `/vary` max-age=60 varying on Accept-Language (echoed).
async fn origin() -> Origin {
    let serial = Arc::new(AtomicUsize::new(0));
    Origin::start(move |req| {
        let serial = serial.clone();
        async move {
            let n = serial.fetch_add(1, Ordering::SeqCst);
            let path = req.uri().path().to_owned();
            let lang = req
                .headers()
                .get("accept-language")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("-")
                .to_owned();
            let cc = match path.as_str() {
                "/nostore" => "no-store",
                "/private" => "private, max-age=60",
                "/short" => "max-age=1",
                _ => "max-age=60",
            };
            let mut reply = Response::builder()
                .status(200)
                .header("cache-control", cc)
                .header("content-type", "text/plain");
            if path == "/vary" {
                reply = reply.header("vary", "Accept-Language");
            }
            let body = format!("{} {path} {n} {lang}", req.method());
            reply.body(Full::new(Bytes::from(body))).expect("reply")
        }
    })
    .await
}

/// One cached route `/` in front of `origin` (zone `pages`, 4 MiB in
/// memory), the zone taking `zone_extra` too.
fn conf(origin: std::net::SocketAddr, zone_extra: &str) -> String {
    format!(
        "{}\n[[route]]\npath = \"/\"\nupstream = \"app\"\ncache = \"pages\"\n\n[cache.pages]\nmemory = \"4MiB\"\n{zone_extra}",
        app_conf(origin, 2)
    )
}

/// The zone's L2 tier in `dir`.
fn disk_tier(dir: &std::path::Path) -> String {
    format!(
        "disk = {{ path = \"{}\", size = \"16MiB\" }}\n",
        dir.display()
    )
}

/// Status, X-Cache-Status and body of one request.
async fn get(url: &str, lang: Option<&str>) -> (u16, String, String) {
    let mut req = client().get(url);
    if let Some(l) = lang {
        req = req.header("accept-language", l);
    }
    let resp = req.send().await.expect("request");
    let status = resp.status().as_u16();
    let cache = crate::support::cache_status(&resp);
    (status, cache, resp.text().await.expect("body"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_miss_then_a_hit_with_one_origin_request_and_the_same_bytes() {
    let origin = origin().await;
    let mg = Moongate::start(&conf(origin.addr, ""));
    let (s1, c1, b1) = get(&mg.url("/pub?a=1"), None).await;
    let resp = client().get(mg.url("/pub?a=1")).send().await.expect("hit");
    let age = resp.headers().get("age").cloned();
    let c2 = resp.headers()["x-cache-status"]
        .to_str()
        .expect("ascii")
        .to_owned();
    let b2 = resp.text().await.expect("body");
    assert_eq!((s1, c1.as_str(), c2.as_str()), (200, "MISS", "HIT"));
    assert_eq!(b1, b2);
    assert!(age.is_some(), "a hit carries Age");
    assert_eq!(origin.hits(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_store_and_private_responses_are_not_stored() {
    let origin = origin().await;
    let mg = Moongate::start(&conf(origin.addr, ""));
    for path in ["/nostore", "/private"] {
        let before = origin.hits();
        let (_, c1, b1) = get(&mg.url(path), None).await;
        let (_, c2, b2) = get(&mg.url(path), None).await;
        assert_eq!((c1.as_str(), c2.as_str()), ("MISS", "MISS"), "{path}");
        assert_ne!(b1, b2, "{path}: both from the origin");
        assert_eq!(origin.hits() - before, 2, "{path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_entry_goes_back_to_the_origin() {
    let origin = origin().await;
    let mg = Moongate::start(&conf(origin.addr, ""));
    let (_, c1, _) = get(&mg.url("/short"), None).await;
    assert_eq!(c1, "MISS");
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let (_, c2, _) = get(&mg.url("/short"), None).await;
    assert_eq!(c2, "EXPIRED");
    assert_eq!(origin.hits(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vary_keeps_variants_apart() {
    let origin = origin().await;
    let mg = Moongate::start(&conf(origin.addr, ""));
    let (_, c_en, en) = get(&mg.url("/vary"), Some("en")).await;
    let (_, c_fr, fr) = get(&mg.url("/vary"), Some("fr")).await;
    assert_eq!((c_en.as_str(), c_fr.as_str()), ("MISS", "MISS"));
    assert!(en.ends_with(" en") && fr.ends_with(" fr"), "{en} / {fr}");
    let (_, h_en, en2) = get(&mg.url("/vary"), Some("en")).await;
    let (_, h_fr, fr2) = get(&mg.url("/vary"), Some("fr")).await;
    assert_eq!((h_en.as_str(), h_fr.as_str()), ("HIT", "HIT"));
    assert_eq!((en2, fr2), (en, fr));
    assert_eq!(origin.hits(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_after_get_is_a_hit_without_a_body() {
    let origin = origin().await;
    let mg = Moongate::start(&conf(origin.addr, ""));
    let (_, _, body) = get(&mg.url("/pub"), None).await;
    let resp = client().head(mg.url("/pub")).send().await.expect("head");
    assert_eq!(resp.headers()["x-cache-status"], "HIT");
    assert_eq!(
        resp.headers()["content-length"].to_str().expect("ascii"),
        body.len().to_string()
    );
    assert!(resp.bytes().await.expect("body").is_empty());
    assert_eq!(origin.hits(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_invalidates_the_url() {
    let origin = origin().await;
    let mg = Moongate::start(&conf(origin.addr, ""));
    get(&mg.url("/pub"), None).await;
    assert_eq!(get(&mg.url("/pub"), None).await.1, "HIT");
    let posted = client()
        .post(mg.url("/pub"))
        .body("x")
        .send()
        .await
        .expect("post");
    assert_eq!(posted.status(), 200);
    assert_eq!(posted.headers()["x-cache-status"], "BYPASS");
    let (_, after, body) = get(&mg.url("/pub"), None).await;
    assert_eq!(after, "MISS");
    assert!(body.starts_with("GET /pub "), "{body}");
    assert_eq!(origin.hits(), 3);
}

/// Stops `mg` with SIGTERM and waits for it (the disk tier is flushed).
fn stop(mut mg: Moongate) {
    mg.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(mg.wait_exit(Duration::from_secs(15)), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_serves_from_disk_without_the_origin() {
    let origin = origin().await;
    let disk = tempfile::tempdir().expect("disk dir");
    let path = disk.path().join("pages");
    let mg = Moongate::start(&conf(origin.addr, &disk_tier(&path)));
    let (_, c1, b1) = get(&mg.url("/pub"), None).await;
    assert_eq!(c1, "MISS");
    stop(mg);
    let mg = Moongate::start(&conf(origin.addr, &disk_tier(&path)));
    let (_, c2, b2) = get(&mg.url("/pub"), None).await;
    assert_eq!(c2, "HIT");
    assert_eq!(b1, b2);
    assert_eq!(origin.hits(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupted_disk_entry_is_a_miss_with_correct_bytes() {
    let origin = origin().await;
    let disk = tempfile::tempdir().expect("disk dir");
    let path = disk.path().join("pages");
    let mg = Moongate::start(&conf(origin.addr, &disk_tier(&path)));
    get(&mg.url("/pub"), None).await;
    stop(mg);
    let mut flipped = 0;
    for file in walk(&path) {
        let mut bytes = std::fs::read(&file).expect("read entry");
        if bytes.len() > 8 {
            let at = bytes.len() - 3;
            bytes[at] ^= 0x55;
            std::fs::write(&file, &bytes).expect("write entry");
            flipped += 1;
        }
    }
    assert!(flipped > 0, "no entry file under {}", path.display());
    let mg = Moongate::start(&conf(origin.addr, &disk_tier(&path)));
    let (_, c, body) = get(&mg.url("/pub"), None).await;
    assert_eq!(c, "MISS");
    assert_eq!(body, "GET /pub 1 -");
    assert_eq!(get(&mg.url("/pub"), None).await, (200, "HIT".into(), body));
    assert_eq!(origin.hits(), 2);
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read dir").flatten() {
        let p = entry.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn an_unknown_cache_zone_is_a_config_error_with_its_place() {
    let dir = tempfile::tempdir().expect("conf dir");
    let text = "[server]\nlisten = [\"127.0.0.1:0\"]\n[upstream.app]\nservers = [{ addr = \"127.0.0.1:9\" }]\n[[route]]\npath = \"/\"\nupstream = \"app\"\ncache = \"x\"\n";
    std::fs::write(dir.path().join("00-test.toml"), text).expect("write conf");
    let run = support::moongate_check(dir.path());
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    let place = format!("{}:8:", dir.path().join("00-test.toml").display());
    assert!(run.stderr.starts_with(&place), "{}", run.stderr);
    assert!(run.stderr.contains("cache zone `x`"), "{}", run.stderr);
}

/// A zone with the lock on (or off), for the lock and stale tests.
fn locked_conf(origin: std::net::SocketAddr, lock: bool) -> String {
    let lock = if lock {
        "lock = true\nlock_timeout = \"10s\"\n"
    } else {
        ""
    };
    conf(origin, lock)
}

/// An origin that waits `delay` before each answer, with `cache-control`
/// `cc` and a serial-numbered body; `connection: close` so that stopping
/// it leaves no pooled connection behind.
async fn slow_origin(delay: Duration, cc: &'static str) -> Origin {
    let serial = Arc::new(AtomicUsize::new(0));
    Origin::start(move |_req| {
        let serial = serial.clone();
        async move {
            tokio::time::sleep(delay).await;
            let n = serial.fetch_add(1, Ordering::SeqCst);
            Response::builder()
                .status(200)
                .header("cache-control", cc)
                .header("connection", "close")
                .body(Full::new(Bytes::from(format!("body {n}"))))
                .expect("reply")
        }
    })
    .await
}

/// `n` concurrent GETs of `url`: (status, X-Cache-Status, body) each.
async fn concurrent(url: &str, n: usize) -> Vec<(u16, String, String)> {
    let mut tasks = Vec::new();
    for _ in 0..n {
        let url = url.to_owned();
        tasks.push(tokio::spawn(async move { get(&url, None).await }));
    }
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.expect("task"));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_lock_sends_forty_concurrent_cold_misses_to_the_origin_once() {
    let origin = slow_origin(Duration::from_millis(300), "max-age=60").await;
    let mg = Moongate::start(&locked_conf(origin.addr, true));
    let answers = concurrent(&mg.url("/hot"), 40).await;
    assert_eq!(origin.hits(), 1, "{answers:?}");
    for (status, _, body) in &answers {
        assert_eq!((*status, body.as_str()), (200, "body 0"));
    }
    let misses = answers.iter().filter(|a| a.1 == "MISS").count();
    let hits = answers.iter().filter(|a| a.1 == "HIT").count();
    assert_eq!((misses, hits), (1, 39), "{answers:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hot_key_expiring_under_load_goes_to_the_origin_once() {
    let origin = slow_origin(Duration::from_millis(300), "max-age=1").await;
    let mg = Moongate::start(&locked_conf(origin.addr, true));
    assert_eq!(get(&mg.url("/hot"), None).await.2, "body 0");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let answers = concurrent(&mg.url("/hot"), 40).await;
    assert_eq!(origin.hits(), 2, "{answers:?}");
    for (status, _, body) in &answers {
        assert_eq!((*status, body.as_str()), (200, "body 1"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_while_revalidate_answers_at_once_and_refreshes_once() {
    // max-age=2: a whole-second Date may take up to 1 s of it, and the
    // refreshed entry must stay fresh until the loop below sees it.
    let origin = slow_origin(
        Duration::from_millis(500),
        "max-age=2, stale-while-revalidate=30",
    )
    .await;
    let mg = Moongate::start(&locked_conf(origin.addr, false));
    assert_eq!(get(&mg.url("/s"), None).await.2, "body 0");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (status, cache, body) = get(&mg.url("/s"), None).await;
    assert_eq!(
        (status, cache.as_str(), body.as_str()),
        (200, "STALE", "body 0")
    );
    // The old body: served without waiting for the refresh's answer.
    let (_, again, old) = get(&mg.url("/s"), None).await;
    assert!(
        (again.as_str(), old.as_str()) == ("UPDATING", "body 0")
            || (again.as_str(), old.as_str()) == ("HIT", "body 1"),
        "{again} {old}"
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (_, cache, body) = get(&mg.url("/s"), None).await;
        if cache == "HIT" {
            assert_eq!(body, "body 1");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never refreshed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(origin.hits(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_if_error_serves_the_stale_entry_on_a_500_and_when_the_origin_is_down() {
    let failing = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let fail = failing.clone();
    let origin = Origin::start(move |_req| {
        let fail = fail.load(Ordering::SeqCst);
        async move {
            Response::builder()
                .status(if fail { 500 } else { 200 })
                .header("cache-control", "max-age=1, stale-if-error=60")
                .header("connection", "close")
                .body(Full::new(Bytes::from(if fail { "broken" } else { "good" })))
                .expect("reply")
        }
    })
    .await;
    let mg = Moongate::start(&locked_conf(origin.addr, true));
    assert_eq!(get(&mg.url("/e"), None).await.2, "good");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    failing.store(true, Ordering::SeqCst);
    let (status, cache, body) = get(&mg.url("/e"), None).await;
    assert_eq!(
        (status, cache.as_str(), body.as_str()),
        (200, "STALE", "good")
    );
    assert_eq!(origin.hits(), 2);
    origin.stop();
    support::wait_refused(origin.addr, Duration::from_secs(5)).await;
    let (status, cache, body) = get(&mg.url("/e"), None).await;
    assert_eq!(
        (status, cache.as_str(), body.as_str()),
        (200, "STALE", "good")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_304_revalidates_the_entry_with_the_new_headers() {
    let origin = Origin::start(move |req| {
        let validated = req
            .headers()
            .get("if-none-match")
            .is_some_and(|v| v == "\"v1\"");
        async move {
            let reply = Response::builder()
                .header("cache-control", "max-age=2")
                .header("etag", "\"v1\"");
            if validated {
                reply
                    .status(304)
                    .header("x-version", "2")
                    .body(Full::new(Bytes::new()))
                    .expect("reply")
            } else {
                reply
                    .status(200)
                    .header("x-version", "1")
                    .body(Full::new(Bytes::from("the body")))
                    .expect("reply")
            }
        }
    })
    .await;
    let mg = Moongate::start(&locked_conf(origin.addr, true));
    assert_eq!(get(&mg.url("/r"), None).await.2, "the body");
    // Date has whole seconds: the entry's age on arrival may be up to 1 s,
    // so max-age=2 leaves the revalidated entry at least 1 s of freshness.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let resp = client().get(mg.url("/r")).send().await.expect("revalidate");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-cache-status"], "REVALIDATED");
    assert_eq!(resp.headers()["x-version"], "2");
    assert_eq!(resp.text().await.expect("body"), "the body");
    assert_eq!(origin.hits(), 2);
    let resp = client().get(mg.url("/r")).send().await.expect("hit");
    assert_eq!(resp.headers()["x-cache-status"], "HIT");
    assert_eq!(resp.headers()["x-version"], "2");
    assert_eq!(origin.hits(), 2);
}

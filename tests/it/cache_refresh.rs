//! Keeping entries current: a HEAD finding a stale entry revalidates it
//! like a GET (the 304 updates the entry), and a stale-while-revalidate
//! background refresh writes its own access log line (`REFRESH`).

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::Response;

use crate::support::{Moongate, Origin, app_conf, client};

/// A cached route `/` (zone `pages`) in front of `origin`, with the
/// access log going to `log`.
fn conf(origin: std::net::SocketAddr, log: &Path) -> String {
    let base = app_conf(origin, 2).replace(
        "access_log = \"off\"",
        &format!("access_log = \"{}\"", log.display()),
    );
    format!(
        "{base}\n[[route]]\npath = \"/\"\nupstream = \"app\"\ncache = \"pages\"\n\n[cache.pages]\nmemory = \"4MiB\"\n"
    )
}

/// The access log's JSON lines once `done` holds for them (at most 5 s).
fn log_lines(path: &Path, done: impl Fn(&[serde_json::Value]) -> bool) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l:?}: {e}")))
            .collect();
        if done(&lines) || Instant::now() > deadline {
            return lines;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_revalidates_a_stale_entry_like_a_get() {
    // What the origin saw: method and If-None-Match of each request.
    let seen: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let record = seen.clone();
    let origin = Origin::start(move |req| {
        let inm = req
            .headers()
            .get("if-none-match")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        record
            .lock()
            .expect("seen")
            .push((req.method().to_string(), inm.clone()));
        async move {
            let reply = Response::builder()
                .header("cache-control", "max-age=2")
                .header("etag", "\"v1\"");
            if inm == "\"v1\"" {
                let reply = reply.status(304).header("x-version", "2");
                reply.body(Full::new(Bytes::new())).expect("reply")
            } else {
                let reply = reply.status(200).header("x-version", "1");
                reply
                    .body(Full::new(Bytes::from("the body")))
                    .expect("reply")
            }
        }
    })
    .await;
    let dir = tempfile::tempdir().expect("temp dir");
    let mg = Moongate::start(&conf(origin.addr, &dir.path().join("access.log")));
    let first = client().get(mg.url("/r")).send().await.expect("get");
    assert_eq!(first.headers()["x-cache-status"], "MISS");
    assert_eq!(first.text().await.expect("body"), "the body");
    // Date has whole seconds: max-age=2 leaves the revalidated entry at
    // least 1 s of freshness for the GET below.
    tokio::time::sleep(Duration::from_millis(2500)).await;

    let head = client().head(mg.url("/r")).send().await.expect("head");
    assert_eq!(head.status(), 200);
    assert_eq!(head.headers()["x-cache-status"], "REVALIDATED");
    assert_eq!(head.headers()["x-version"], "2");
    assert_eq!(head.headers()["content-length"], "8");
    assert!(head.bytes().await.expect("no body").is_empty());
    let seen_now = seen.lock().expect("seen").clone();
    assert_eq!(
        seen_now,
        vec![
            ("GET".to_owned(), String::new()),
            ("HEAD".to_owned(), "\"v1\"".to_owned())
        ]
    );

    let again = client().get(mg.url("/r")).send().await.expect("get");
    assert_eq!(again.headers()["x-cache-status"], "HIT");
    assert_eq!(again.headers()["x-version"], "2");
    assert_eq!(again.text().await.expect("body"), "the body");
    assert_eq!(origin.hits(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_background_refresh_writes_its_own_access_log_line() {
    let serial = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let origin = Origin::start(move |_req| {
        let n = serial.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        async move {
            Response::builder()
                .header("cache-control", "max-age=2, stale-while-revalidate=30")
                .body(Full::new(Bytes::from(format!("body {n}"))))
                .expect("reply")
        }
    })
    .await;
    let dir = tempfile::tempdir().expect("temp dir");
    let log = dir.path().join("access.log");
    let mg = Moongate::start(&conf(origin.addr, &log));
    let get = |url: String| async move {
        let resp = client().get(url).send().await.expect("get");
        let cache = resp.headers()["x-cache-status"]
            .to_str()
            .expect("ascii")
            .to_owned();
        (cache, resp.text().await.expect("body"))
    };
    assert_eq!(get(mg.url("/s")).await, ("MISS".into(), "body 0".into()));
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(get(mg.url("/s")).await, ("STALE".into(), "body 0".into()));

    let lines = log_lines(&log, |l| l.iter().any(|v| v["cache_status"] == "REFRESH"));
    let mut statuses: Vec<&str> = lines
        .iter()
        .map(|v| v["cache_status"].as_str().unwrap_or(""))
        .collect();
    // The refresh and the STALE answer end in either order.
    statuses.sort_unstable();
    assert_eq!(statuses, ["MISS", "REFRESH", "STALE"], "{lines:?}");
    let refresh = lines
        .iter()
        .find(|v| v["cache_status"] == "REFRESH")
        .expect("refresh line");
    assert_eq!(
        (&refresh["method"], &refresh["uri"], &refresh["status"]),
        (&"GET".into(), &"/s".into(), &200.into()),
        "{refresh}"
    );
    assert_eq!(refresh["bytes"], "body 1".len(), "{refresh}");
    assert_eq!(refresh["aborted"], false, "{refresh}");
    assert_eq!(
        refresh["upstream_addr"].as_str(),
        Some(origin.addr.to_string().as_str()),
        "{refresh}"
    );
    assert!(
        !refresh["route"].as_str().unwrap_or("").is_empty(),
        "{refresh}"
    );
    assert_eq!(get(mg.url("/s")).await, ("HIT".into(), "body 1".into()));
    assert_eq!(origin.hits(), 2);
}

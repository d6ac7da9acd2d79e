//! The cache answering what a client asks of a stored response, through
//! real requests: conditional requests answered 304 from fresh, stale and
//! revalidated entries (and from a miss fetched whole); Range answered
//! 206 / 416 from the cache, a miss fetched without Range and stored
//! whole, an origin's 206 never stored; `Age` lists and repeated lines
//! making a response stale; `CDN-Cache-Control` and the zone's
//! `targeted` fields taking precedence over Cache-Control (kept from
//! clients unless `forward_targeted`, across a restart from disk; a bad
//! field name's place is in `check`); an interim 103 never replayed from
//! the cache.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::Response;
use tokio::io::AsyncWriteExt;

use crate::support::{self, Moongate, Origin, RawOrigin, app_conf, client};

/// The body of `/doc`: 26 bytes, so ranges are easy to read.
const DOC: &str = "abcdefghijklmnopqrstuvwxyz";
/// `/doc`'s Last-Modified.
const LM: &str = "Sun, 13 Sep 2020 12:26:40 GMT";

/// What the origin saw of one request: path, Range, If-None-Match.
type Seen = Arc<Mutex<Vec<(String, Option<String>, Option<String>)>>>;

/// An origin answering by path (every answer `max-age=60` unless said):
/// `/doc` DOC with `ETag: "v1"` and Last-Modified LM; `/reval` (max-age=0)
/// and `/swr` (max-age=0, stale-while-revalidate=60) with `ETag: "r1"`,
/// 304 to `If-None-Match: "r1"`; `/partial` always a 206; `/age-list`
/// `Age: 7200, 0` and `/age-lines` two Age lines 7200 and 0 (max-age=3600);
/// `/cdn` Cache-Control no-store but CDN-Cache-Control max-age=60;
/// `/cdn-no-store` the other way round; `/cdn-bad` an invalid
/// CDN-Cache-Control over Cache-Control no-store; `/own` a
/// `Moongate-Cache-Control: max-age=60` over two no-stores. Other bodies
/// carry a serial number.
async fn origin() -> (Origin, Seen) {
    let seen: Seen = Arc::default();
    let log = seen.clone();
    let serial = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let origin = Origin::start(move |req| {
        let header = |name: &str| {
            req.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let path = req.uri().path().to_owned();
        let inm = header("if-none-match");
        log.lock()
            .expect("seen")
            .push((path.clone(), header("range"), inm.clone()));
        let n = serial.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        async move { reply(&path, inm.as_deref(), n) }
    })
    .await;
    (origin, seen)
}

fn reply(path: &str, inm: Option<&str>, n: usize) -> support::Reply {
    let r = Response::builder().header("content-type", "text/plain");
    let r = match path {
        "/doc" => r
            .header("cache-control", "max-age=60")
            .header("etag", "\"v1\"")
            .header("last-modified", LM)
            .header("x-doc", "1"),
        "/reval" | "/swr" if inm == Some("\"r1\"") => {
            let cc = if path == "/swr" {
                "max-age=0, stale-while-revalidate=60"
            } else {
                "max-age=0"
            };
            let r = r
                .status(304)
                .header("cache-control", cc)
                .header("etag", "\"r1\"");
            return r.body(Full::new(Bytes::new())).expect("reply");
        }
        "/reval" => r
            .header("cache-control", "max-age=0")
            .header("etag", "\"r1\""),
        "/swr" => r
            .header("cache-control", "max-age=0, stale-while-revalidate=60")
            .header("etag", "\"r1\""),
        "/partial" => r
            .status(206)
            .header("cache-control", "max-age=60")
            .header("content-range", "bytes 0-3/26"),
        "/age-list" => r
            .header("cache-control", "max-age=3600")
            .header("age", "7200, 0"),
        "/age-lines" => r
            .header("cache-control", "max-age=3600")
            .header("age", "7200")
            .header("age", "0"),
        "/cdn" => r
            .header("cache-control", "no-store")
            .header("cdn-cache-control", "max-age=60"),
        "/cdn-no-store" => r
            .header("cache-control", "max-age=60")
            .header("cdn-cache-control", "no-store"),
        "/cdn-bad" => r
            .header("cache-control", "no-store")
            .header("cdn-cache-control", "Max-Age=60"),
        "/own" => r
            .header("cache-control", "no-store")
            .header("cdn-cache-control", "no-store")
            .header("moongate-cache-control", "max-age=60"),
        _ => r.header("cache-control", "max-age=60"),
    };
    let body = match path {
        "/doc" => DOC.to_owned(),
        "/partial" => "abcd".to_owned(),
        _ => format!("{path} {n}"),
    };
    r.body(Full::new(Bytes::from(body))).expect("reply")
}

/// A cached route `/` in front of `origin` (zone `pages`, plus `zone_extra`).
fn conf(origin: std::net::SocketAddr, zone_extra: &str) -> String {
    format!(
        "{}\n[admin]\nlisten = \"127.0.0.1:0\"\n\n[[route]]\npath = \"/\"\nupstream = \"app\"\ncache = \"pages\"\n\n[cache.pages]\nmemory = \"4MiB\"\n{zone_extra}",
        app_conf(origin, 2)
    )
}

/// Waits until zone `pages` has stored `n` responses. A short answer to a
/// miss (304, 206) reaches the client before the whole response it was cut
/// from has been read and stored; the next request may come sooner.
async fn stored(mg: &Moongate, n: u64) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let stores = mg.status().await["caches"]["pages"]["stores"].as_u64();
        if stores.is_some_and(|s| s >= n) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never stored: {stores:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// One answer: status, X-Cache-Status, headers and body.
struct Answer {
    status: u16,
    cache: String,
    headers: reqwest::header::HeaderMap,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// `method` on `url` with the request headers `extra`.
async fn ask(method: reqwest::Method, url: &str, extra: &[(&str, &str)]) -> Answer {
    let mut req = client().request(method, url);
    for (name, value) in extra {
        req = req.header(*name, *value);
    }
    let resp = req.send().await.expect("request");
    Answer {
        status: resp.status().as_u16(),
        cache: support::cache_status(&resp),
        headers: resp.headers().clone(),
        body: resp.text().await.expect("body"),
    }
}

async fn get(url: &str, extra: &[(&str, &str)]) -> Answer {
    ask(reqwest::Method::GET, url, extra).await
}

// ---- conditional requests (304 from the cache) ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_hit_answers_if_none_match_with_304_from_the_cache() {
    let (origin, _) = origin().await;
    let mg = Moongate::start(&conf(origin.addr, ""));
    let url = mg.url("/doc");
    assert_eq!(get(&url, &[]).await.cache, "MISS");
    for inm in ["\"v1\"", "W/\"v1\"", "\"x\", \"v1\"", "*"] {
        let a = get(&url, &[("if-none-match", inm)]).await;
        assert_eq!((a.status, a.cache.as_str()), (304, "HIT"), "{inm}");
        assert_eq!(a.body, "", "{inm}");
        assert_eq!(a.header("etag"), Some("\"v1\""));
        assert_eq!(a.header("cache-control"), Some("max-age=60"));
        assert_eq!(a.header("last-modified"), Some(LM));
        assert!(a.header("date").is_some() && a.header("age").is_some());
        // Representation metadata stays out of a 304.
        assert_eq!((a.header("x-doc"), a.header("content-type")), (None, None));
    }
    let other = get(&url, &[("if-none-match", "\"v2\"")]).await;
    assert_eq!((other.status, other.cache.as_str()), (200, "HIT"));
    assert_eq!(other.body, DOC);
    let head = ask(reqwest::Method::HEAD, &url, &[("if-none-match", "\"v1\"")]).await;
    assert_eq!((head.status, head.cache.as_str()), (304, "HIT"));
    assert_eq!(origin.hits(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn if_modified_since_counts_only_without_if_none_match() {
    let (origin, _) = origin().await;
    let mg = Moongate::start(&conf(origin.addr, ""));
    let url = mg.url("/doc");
    get(&url, &[]).await;
    let same = get(&url, &[("if-modified-since", LM)]).await;
    assert_eq!((same.status, same.cache.as_str()), (304, "HIT"));
    let before = get(
        &url,
        &[("if-modified-since", "Sun, 13 Sep 2020 12:26:39 GMT")],
    )
    .await;
    assert_eq!((before.status, before.body.as_str()), (200, DOC));
    let both = get(
        &url,
        &[("if-modified-since", LM), ("if-none-match", "\"v2\"")],
    )
    .await;
    assert_eq!((both.status, both.body.as_str()), (200, DOC));
    // If-Match is a precondition the cache evaluates too.
    let failed = get(&url, &[("if-match", "\"v2\"")]).await;
    assert_eq!((failed.status, failed.cache.as_str()), (412, "HIT"));
    assert_eq!(origin.hits(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_miss_is_fetched_whole_stored_and_answered_304() {
    let (origin, seen) = origin().await;
    let mg = Moongate::start(&conf(origin.addr, ""));
    let url = mg.url("/doc");
    let a = get(&url, &[("if-none-match", "\"v1\"")]).await;
    assert_eq!((a.status, a.cache.as_str()), (304, "MISS"));
    stored(&mg, 1).await;
    let b = get(&url, &[]).await;
    assert_eq!(
        (b.status, b.cache.as_str(), b.body.as_str()),
        (200, "HIT", DOC)
    );
    assert_eq!(origin.hits(), 1);
    let seen = seen.lock().expect("seen").clone();
    let plain: (String, Option<String>, Option<String>) = ("/doc".into(), None, None);
    assert_eq!(seen, [plain], "the client's conditions went upstream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_and_revalidated_entries_answer_conditions_too() {
    let (origin, seen) = origin().await;
    let mg = Moongate::start(&conf(origin.addr, ""));
    let inm = [("if-none-match", "\"r1\"")];
    // max-age=0: stored, stale at once, revalidated with the entry's ETag.
    assert_eq!(get(&mg.url("/reval"), &[]).await.cache, "MISS");
    let a = get(&mg.url("/reval"), &inm).await;
    assert_eq!((a.status, a.cache.as_str()), (304, "REVALIDATED"));
    assert_eq!(a.header("etag"), Some("\"r1\""));
    let a = get(&mg.url("/reval"), &[("if-none-match", "\"r0\"")]).await;
    assert_eq!((a.status, a.cache.as_str()), (200, "REVALIDATED"));
    assert!(a.body.starts_with("/reval 0"), "{}", a.body);
    // Within stale-while-revalidate: answered at once.
    get(&mg.url("/swr"), &[]).await;
    let s = get(&mg.url("/swr"), &inm).await;
    assert_eq!(s.status, 304);
    assert!(
        ["STALE", "UPDATING"].contains(&s.cache.as_str()),
        "{}",
        s.cache
    );
    let seen = seen.lock().expect("seen").clone();
    let reval: Vec<_> = seen.iter().filter(|s| s.0 == "/reval").collect();
    assert_eq!(reval.len(), 3);
    assert_eq!(reval[0].2, None);
    assert_eq!(
        reval[1].2.as_deref(),
        Some("\"r1\""),
        "the entry's validator"
    );
}

// ---- Range (206 / 416 from the cache) ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_range_on_a_stored_response_is_answered_from_the_cache() {
    let (origin, _) = origin().await;
    let mg = Moongate::start(&conf(origin.addr, ""));
    let url = mg.url("/doc");
    get(&url, &[]).await;
    let cases = [
        ("bytes=0-4", "abcde", "bytes 0-4/26"),
        ("bytes=20-", "uvwxyz", "bytes 20-25/26"),
        ("bytes=-3", "xyz", "bytes 23-25/26"),
        ("bytes=24-99", "yz", "bytes 24-25/26"),
    ];
    for (range, body, content_range) in cases {
        let a = get(&url, &[("range", range)]).await;
        assert_eq!((a.status, a.cache.as_str()), (206, "HIT"), "{range}");
        assert_eq!(a.body, body, "{range}");
        assert_eq!(a.header("content-range"), Some(content_range), "{range}");
        let len = body.len().to_string();
        assert_eq!(a.header("content-length"), Some(len.as_str()), "{range}");
    }
    let none = get(&url, &[("range", "bytes=26-")]).await;
    assert_eq!((none.status, none.cache.as_str()), (416, "HIT"));
    assert_eq!(none.header("content-range"), Some("bytes */26"));
    // One of moongate's own errors: the JSON format.
    assert_eq!(none.header("content-type"), Some("application/json"));
    assert_eq!(
        none.body,
        r#"{"error":"Range Not Satisfiable","status":416}"#
    );
    let several = get(&url, &[("range", "bytes=0-1,3-4")]).await;
    assert_eq!((several.status, several.body.as_str()), (200, DOC));
    let if_range = [
        ("\"v1\"", 206),
        (LM, 206),
        ("\"v2\"", 200),
        ("W/\"v1\"", 200),
        ("Sun, 13 Sep 2020 12:26:41 GMT", 200),
    ];
    for (condition, status) in if_range {
        let a = get(&url, &[("range", "bytes=1-2"), ("if-range", condition)]).await;
        assert_eq!(a.status, status, "If-Range: {condition}");
        let body = if status == 206 { "bc" } else { DOC };
        assert_eq!(a.body, body, "If-Range: {condition}");
    }
    // HEAD ignores Range.
    let head = ask(reqwest::Method::HEAD, &url, &[("range", "bytes=0-4")]).await;
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-length"), Some("26"));
    assert_eq!(origin.hits(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_range_on_a_miss_is_fetched_whole_stored_and_sliced() {
    let (origin, seen) = origin().await;
    let mg = Moongate::start(&conf(origin.addr, ""));
    let url = mg.url("/doc");
    let a = get(&url, &[("range", "bytes=2-5")]).await;
    assert_eq!(
        (a.status, a.cache.as_str(), a.body.as_str()),
        (206, "MISS", "cdef")
    );
    assert_eq!(a.header("content-range"), Some("bytes 2-5/26"));
    stored(&mg, 1).await;
    let b = get(&url, &[]).await;
    assert_eq!(
        (b.status, b.cache.as_str(), b.body.as_str()),
        (200, "HIT", DOC)
    );
    let c = get(&url, &[("range", "bytes=-1")]).await;
    assert_eq!(
        (c.status, c.cache.as_str(), c.body.as_str()),
        (206, "HIT", "z")
    );
    assert_eq!(origin.hits(), 1);
    assert_eq!(seen.lock().expect("seen")[0].1, None, "Range went upstream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_206_from_the_origin_is_never_stored() {
    let (origin, _) = origin().await;
    let mg = Moongate::start(&conf(origin.addr, ""));
    for _ in 0..2 {
        let a = get(&mg.url("/partial"), &[("range", "bytes=0-3")]).await;
        assert_eq!(
            (a.status, a.cache.as_str(), a.body.as_str()),
            (206, "MISS", "abcd")
        );
        let b = get(&mg.url("/partial"), &[]).await;
        assert_eq!((b.status, b.cache.as_str()), (206, "MISS"));
    }
    assert_eq!(origin.hits(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_range_on_a_chunked_miss_gets_the_whole_body_and_a_later_hit_the_range() {
    let origin = RawOrigin::start(|_path, mut s| async move {
        let _ = s
            .write_all(b"HTTP/1.1 200 OK\r\ncache-control: max-age=60\r\nconnection: close\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
            .await;
    })
    .await;
    let mg = Moongate::start(&conf(origin.addr, ""));
    let url = mg.url("/c");
    // The length is unknown while it streams: the whole 200 is right.
    let a = get(&url, &[("range", "bytes=0-4")]).await;
    assert_eq!(
        (a.status, a.cache.as_str(), a.body.as_str()),
        (200, "MISS", "hello world")
    );
    let b = get(&url, &[("range", "bytes=6-")]).await;
    assert_eq!(
        (b.status, b.cache.as_str(), b.body.as_str()),
        (206, "HIT", "world")
    );
    assert_eq!(b.header("content-range"), Some("bytes 6-10/11"));
    assert_eq!(origin.hits("/c"), 1);
}

// ---- Age ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_age_list_or_repeated_age_makes_the_response_as_old_as_its_first_value() {
    let (origin, _) = origin().await;
    let mg = Moongate::start(&conf(origin.addr, ""));
    for path in ["/age-list", "/age-lines"] {
        assert_eq!(get(&mg.url(path), &[]).await.cache, "MISS", "{path}");
        // max-age=3600 but two hours old on arrival: stale, refetched.
        assert_eq!(get(&mg.url(path), &[]).await.cache, "EXPIRED", "{path}");
    }
    assert_eq!(origin.hits(), 4);
}

// ---- targeted fields (RFC 9213) ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cdn_cache_control_beats_cache_control_and_stays_with_the_cache() {
    let (origin, _) = origin().await;
    let mg = Moongate::start(&conf(origin.addr, ""));
    let first = get(&mg.url("/cdn"), &[]).await;
    let second = get(&mg.url("/cdn"), &[]).await;
    assert_eq!(
        (first.cache.as_str(), second.cache.as_str()),
        ("MISS", "HIT")
    );
    assert_eq!(first.body, second.body);
    for a in [&first, &second] {
        assert_eq!(a.header("cdn-cache-control"), None);
        assert_eq!(
            a.header("cache-control"),
            Some("no-store"),
            "sent unchanged"
        );
    }
    for path in ["/cdn-no-store", "/cdn-bad"] {
        let a = get(&mg.url(path), &[]).await;
        let b = get(&mg.url(path), &[]).await;
        assert_eq!(
            (a.cache.as_str(), b.cache.as_str()),
            ("MISS", "MISS"),
            "{path}"
        );
        assert_eq!(b.header("cdn-cache-control"), None, "{path}");
    }
    assert_eq!(origin.hits(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_zone_lists_its_targeted_fields_and_may_forward_them() {
    let (origin, _) = origin().await;
    let extra =
        "targeted = [\"Moongate-Cache-Control\", \"CDN-Cache-Control\"]\nforward_targeted = true\n";
    let mg = Moongate::start(&conf(origin.addr, extra));
    let first = get(&mg.url("/own"), &[]).await;
    let second = get(&mg.url("/own"), &[]).await;
    assert_eq!(
        (first.cache.as_str(), second.cache.as_str()),
        ("MISS", "HIT")
    );
    assert_eq!(second.header("moongate-cache-control"), Some("max-age=60"));
    assert_eq!(second.header("cdn-cache-control"), Some("no-store"));
    // CDN-Cache-Control still counts, after the more specific field.
    let (a, b) = (
        get(&mg.url("/cdn"), &[]).await,
        get(&mg.url("/cdn"), &[]).await,
    );
    assert_eq!((a.cache.as_str(), b.cache.as_str()), ("MISS", "HIT"));
    assert_eq!(origin.hits(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_targeted_entry_behaves_the_same_after_a_restart() {
    let (origin, _) = origin().await;
    let disk = tempfile::tempdir().expect("disk dir");
    let tier = format!(
        "disk = {{ path = \"{}\", size = \"16MiB\" }}\n",
        disk.path().join("pages").display()
    );
    let mut mg = Moongate::start(&conf(origin.addr, &tier));
    let first = get(&mg.url("/cdn"), &[]).await;
    assert_eq!(first.cache, "MISS");
    mg.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(mg.wait_exit(Duration::from_secs(15)), Some(0));
    let mg = Moongate::start(&conf(origin.addr, &tier));
    let again = get(&mg.url("/cdn"), &[("range", "bytes=0-3")]).await;
    assert_eq!((again.status, again.cache.as_str()), (206, "HIT"));
    assert_eq!(again.body, first.body[..4]);
    assert_eq!(again.header("cdn-cache-control"), None);
    assert_eq!(origin.hits(), 1);
}

// ---- interim responses ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_early_hints_response_is_never_stored_nor_replayed() {
    let origin = RawOrigin::start(|_path, mut s| async move {
        let _ = s
            .write_all(b"HTTP/1.1 103 Early Hints\r\nlink: </a.css>; rel=preload\r\n\r\nHTTP/1.1 200 OK\r\ncache-control: max-age=60\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok")
            .await;
    })
    .await;
    let mg = Moongate::start(&conf(origin.addr, ""));
    let a = get(&mg.url("/e"), &[]).await;
    assert_eq!(
        (a.status, a.cache.as_str(), a.body.as_str()),
        (200, "MISS", "ok")
    );
    let raw = support::raw_exchange(
        mg.http[0],
        b"GET /e HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    assert!(raw.starts_with("HTTP/1.1 200 "), "{raw}");
    assert!(
        raw.to_ascii_lowercase().contains("x-cache-status: hit"),
        "{raw}"
    );
    assert!(!raw.to_ascii_lowercase().contains("link:"), "{raw}");
    assert_eq!(origin.hits("/e"), 1);
}

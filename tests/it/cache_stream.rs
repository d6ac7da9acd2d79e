//! The cache on streamed bodies, through real requests: chunked and
//! close-delimited bodies stored while they stream, larger ones passed
//! through uncached, a body cut by the origin or abandoned by its client
//! not stored; lock waiters answered from the leader's response while
//! the origin is still sending it; a disk tier too small for the objects
//! or made unwritable (answers stay right, logged once); the zones'
//! figures on the admin API's `/status`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::Notify;

use crate::support::{Moongate, RawOrigin, app_conf, client};

/// A response head with `framing` (a header line) and `cache-control`.
fn head(framing: &str) -> Vec<u8> {
    format!("HTTP/1.1 200 OK\r\ncache-control: max-age=60\r\nconnection: close\r\n{framing}\r\n")
        .into_bytes()
}

/// One chunk of a chunked body.
fn chunk(data: &[u8]) -> Vec<u8> {
    let mut out = format!("{:x}\r\n", data.len()).into_bytes();
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
    out
}

/// `n` bytes of body part `part`: a letter per part, so misordered or
/// mixed bodies show.
fn part(part: usize, n: usize) -> Vec<u8> {
    vec![b'a' + (part % 26) as u8; n]
}

/// The body of `parts` parts of `size` bytes each.
fn body_of(parts: usize, size: usize) -> Vec<u8> {
    (0..parts).flat_map(|p| part(p, size)).collect()
}

/// Writes a chunked body of `parts` parts of `size` bytes.
async fn send_chunked(stream: &mut TcpStream, parts: usize, size: usize) {
    let _ = stream
        .write_all(&head("transfer-encoding: chunked\r\n"))
        .await;
    for p in 0..parts {
        if stream.write_all(&chunk(&part(p, size))).await.is_err() {
            return;
        }
    }
    let _ = stream.write_all(b"0\r\n\r\n").await;
}

/// A route `/` with cache zone `pages` (`zone_extra` added), and an
/// admin listener.
fn conf(origin: SocketAddr, zone_extra: &str) -> String {
    format!(
        "{}\n[admin]\nlisten = \"127.0.0.1:0\"\n\n[[route]]\npath = \"/\"\nupstream = \"app\"\ncache = \"pages\"\n\n[cache.pages]\nmemory = \"16MiB\"\n{zone_extra}",
        app_conf(origin, 2)
    )
}

/// Status, X-Cache-Status and body (or the error reading it).
async fn get(url: &str) -> (u16, String, Result<Vec<u8>, String>) {
    let resp = client().get(url).send().await.expect("request");
    let status = resp.status().as_u16();
    let cache = crate::support::cache_status(&resp);
    let body = resp
        .bytes()
        .await
        .map(|b| b.to_vec())
        .map_err(|e| e.to_string());
    (status, cache, body)
}

/// The zone's figures from `/status`.
async fn figures(mg: &Moongate, zone: &str) -> serde_json::Value {
    mg.status().await["caches"][zone].clone()
}

/// Polls the zone's figures until `ready` holds; panics with them after 10 s.
async fn figures_until(
    mg: &Moongate,
    zone: &str,
    ready: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let f = figures(mg, zone).await;
        if ready(&f) {
            return f;
        }
        assert!(Instant::now() < deadline, "figures never got there: {f}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_are_stored_while_they_stream_and_larger_ones_pass_through() {
    let origin = RawOrigin::start(|path, mut s| async move {
        match path.as_str() {
            // 3 x 10 KiB chunked: within the 64 KiB limit.
            "/chunked-small" => send_chunked(&mut s, 3, 10 << 10).await,
            // 20 x 10 KiB chunked: over it, found out while streaming.
            "/chunked-big" => send_chunked(&mut s, 20, 10 << 10).await,
            // Over it by its Content-Length.
            "/length-big" => {
                let body = body_of(20, 10 << 10);
                let framing = format!("content-length: {}\r\n", body.len());
                let _ = s.write_all(&head(&framing)).await;
                let _ = s.write_all(&body).await;
            }
            // Neither length nor chunks: the body ends when we close.
            "/close-small" => {
                let _ = s.write_all(&head("")).await;
                for p in 0..4 {
                    let _ = s.write_all(&part(p, 2048)).await;
                }
            }
            // Promises 50000 bytes, sends 20000 and closes.
            _ => {
                let _ = s.write_all(&head("content-length: 50000\r\n")).await;
                let _ = s.write_all(&part(0, 20000)).await;
            }
        }
    })
    .await;
    let mg = Moongate::start(&conf(origin.addr, "max_object_size = \"64KiB\"\n"));
    let cases = [
        ("/chunked-small", body_of(3, 10 << 10), "HIT", 1),
        ("/chunked-big", body_of(20, 10 << 10), "MISS", 2),
        ("/length-big", body_of(20, 10 << 10), "MISS", 2),
        ("/close-small", body_of(4, 2048), "HIT", 1),
    ];
    for (path, want, second, origin_hits) in cases {
        let (s1, c1, b1) = get(&mg.url(path)).await;
        assert_eq!((s1, c1.as_str()), (200, "MISS"), "{path}");
        assert!(b1.as_ref().is_ok_and(|b| *b == want), "{path}: first body");
        let (s2, c2, b2) = get(&mg.url(path)).await;
        assert_eq!((s2, c2.as_str()), (200, second), "{path}");
        assert!(b2.as_ref().is_ok_and(|b| *b == want), "{path}: second body");
        assert_eq!(origin.hits(path), origin_hits, "{path}");
    }
    // A body the origin cut short reaches the client cut short, and is
    // not stored.
    for round in 1..=2 {
        let (status, cache, body) = get(&mg.url("/truncated")).await;
        assert_eq!((status, cache.as_str()), (200, "MISS"));
        assert!(body.is_err(), "a short body must not look complete");
        assert_eq!(origin.hits("/truncated"), round);
    }
    let f = figures(&mg, "pages").await;
    assert_eq!(f["stores"], 2, "{f}");
    // /chunked-big found out while streaming, /length-big up front; twice.
    assert_eq!(f["store_skips"]["too_large"], 4, "{f}");
    assert_eq!(f["store_skips"]["aborted"], 2, "{f}");
}

/// An origin that sends a chunked head and 1 KiB, then waits for
/// `release` (at most 10 s) before 2 MiB more (so moongate finds out when
/// a client has gone: writes to it fail), for the first request only.
async fn pausing_origin(release: Arc<Notify>) -> RawOrigin {
    let first = Arc::new(AtomicBool::new(true));
    RawOrigin::start(move |_path, mut s| {
        let (gate, once) = (release.clone(), first.clone());
        async move {
            let _ = s.write_all(&head("transfer-encoding: chunked\r\n")).await;
            let _ = s.write_all(&chunk(&part(0, 1024))).await;
            if once.swap(false, Ordering::SeqCst) {
                let _ = tokio::time::timeout(Duration::from_secs(10), gate.notified()).await;
            }
            for p in 1..=32 {
                if s.write_all(&chunk(&part(p, 64 << 10))).await.is_err() {
                    return;
                }
            }
            let _ = s.write_all(b"0\r\n\r\n").await;
        }
    })
    .await
}

/// What [`pausing_origin`] sends.
fn paused_body() -> Vec<u8> {
    let mut want = part(0, 1024);
    for p in 1..=32 {
        want.extend(part(p, 64 << 10));
    }
    want
}

/// A client leaving mid-body does not stop the store: the rest of a
/// cacheable body is read and stored without it, as nginx does with
/// `proxy_cache` (it keeps reading a cacheable response after the client
/// closed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_going_away_mid_body_still_stores_it() {
    let release = Arc::new(Notify::new());
    let origin = pausing_origin(release.clone()).await;
    let mg = Moongate::start(&conf(origin.addr, ""));
    let mut resp = client().get(mg.url("/big")).send().await.expect("request");
    assert_eq!(resp.headers()["x-cache-status"], "MISS");
    assert!(resp.chunk().await.expect("first chunk").is_some());
    drop(resp);
    release.notify_one();
    let f = figures_until(&mg, "pages", |f| f["stores"] == 1).await;
    assert_eq!(f["store_skips"]["aborted"], 0, "{f}");
    let (status, cache, body) = get(&mg.url("/big")).await;
    assert_eq!((status, cache.as_str()), (200, "HIT"));
    assert!(body == Ok(paused_body()), "the stored body is whole");
    assert_eq!(origin.hits("/big"), 1);
}

/// Lock waiters following the leader's response get all of it when the
/// leader's client goes away mid-body: the rest is read for them.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn waiters_get_the_whole_body_when_the_leaders_client_goes_away() {
    const WAITERS: usize = 8;
    let release = Arc::new(Notify::new());
    let origin = pausing_origin(release.clone()).await;
    let mg = Moongate::start(&conf(origin.addr, "lock = true\nlock_timeout = \"10s\"\n"));
    let mut leader = client().get(mg.url("/big")).send().await.expect("request");
    assert_eq!(leader.headers()["x-cache-status"], "MISS");
    assert!(leader.chunk().await.expect("first chunk").is_some());

    let (firsts, mut got_first) = tokio::sync::mpsc::channel(WAITERS);
    let mut tasks = Vec::new();
    for _ in 0..WAITERS {
        let (url, firsts) = (mg.url("/big"), firsts.clone());
        tasks.push(tokio::spawn(async move {
            let mut resp = client().get(url).send().await.expect("request");
            let cache = resp.headers()["x-cache-status"]
                .to_str()
                .expect("ascii")
                .to_owned();
            let mut body = Vec::new();
            if let Some(first) = resp.chunk().await.expect("first chunk") {
                body.extend_from_slice(&first);
            }
            let _ = firsts.send(()).await;
            loop {
                match resp.chunk().await {
                    Ok(Some(more)) => body.extend_from_slice(&more),
                    Ok(None) => return (cache, Ok(body)),
                    Err(e) => return (cache, Err(format!("{e} after {} bytes", body.len()))),
                }
            }
        }));
    }
    drop(firsts);
    for _ in 0..WAITERS {
        let got = tokio::time::timeout(Duration::from_secs(15), got_first.recv()).await;
        assert!(
            matches!(got, Ok(Some(()))),
            "a waiter never got its first bytes"
        );
    }
    // Every waiter follows the fill; now the leader's client leaves.
    drop(leader);
    release.notify_one();
    let want = paused_body();
    for t in tasks {
        let (cache, body) = t.await.expect("waiter");
        assert_eq!(cache, "HIT");
        match body {
            Ok(b) => assert!(
                b == want,
                "a waiter got {} bytes, not the whole body",
                b.len()
            ),
            Err(e) => panic!("a waiter's body was cut short: {e}"),
        }
    }
    assert_eq!(origin.hits("/big"), 1);
    let (_, cache, body) = get(&mg.url("/big")).await;
    assert_eq!(cache, "HIT");
    assert!(body == Ok(want), "the stored body is whole");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lock_waiters_receive_the_leaders_first_bytes_while_the_origin_pauses() {
    const CLIENTS: usize = 40;
    let release = Arc::new(Notify::new());
    // True while the origin holds back the rest of the body.
    let paused = Arc::new(AtomicBool::new(true));
    let (gate, flag) = (release.clone(), paused.clone());
    let origin = RawOrigin::start(move |_path, mut s| {
        let (gate, flag) = (gate.clone(), flag.clone());
        async move {
            let _ = s.write_all(&head("transfer-encoding: chunked\r\n")).await;
            let _ = s.write_all(&chunk(b"first bytes;")).await;
            // Until every client has its first bytes (at most 10 s, so a
            // broken build fails instead of hanging).
            let _ = tokio::time::timeout(Duration::from_secs(10), gate.notified()).await;
            flag.store(false, Ordering::SeqCst);
            for p in 0..4 {
                let _ = s.write_all(&chunk(&part(p, 4096))).await;
            }
            let _ = s.write_all(b"0\r\n\r\n").await;
        }
    })
    .await;
    let mg = Moongate::start(&conf(origin.addr, "lock = true\nlock_timeout = \"10s\"\n"));
    let (firsts, mut got_first) = tokio::sync::mpsc::channel(CLIENTS);
    let mut tasks = Vec::new();
    for _ in 0..CLIENTS {
        let (url, firsts, paused) = (mg.url("/slow"), firsts.clone(), paused.clone());
        tasks.push(tokio::spawn(async move {
            let mut resp = client().get(url).send().await.expect("request");
            let cache = resp.headers()["x-cache-status"]
                .to_str()
                .expect("ascii")
                .to_owned();
            let mut body = resp
                .chunk()
                .await
                .expect("first chunk")
                .expect("bytes")
                .to_vec();
            let while_paused = paused.load(Ordering::SeqCst);
            let _ = firsts.send(()).await;
            while let Some(more) = resp.chunk().await.expect("chunk") {
                body.extend_from_slice(&more);
            }
            (cache, while_paused, body)
        }));
    }
    drop(firsts);
    for _ in 0..CLIENTS {
        let got = tokio::time::timeout(Duration::from_secs(15), got_first.recv()).await;
        assert!(
            matches!(got, Ok(Some(()))),
            "a client never got its first bytes"
        );
    }
    release.notify_one();
    let mut want = b"first bytes;".to_vec();
    want.extend(body_of(4, 4096));
    let mut statuses = Vec::new();
    for t in tasks {
        let (cache, while_paused, body) = t.await.expect("client");
        assert!(
            while_paused,
            "first bytes arrived only after the origin resumed"
        );
        assert!(
            body == want,
            "a client got a wrong body ({} bytes)",
            body.len()
        );
        statuses.push(cache);
    }
    assert_eq!(origin.hits("/slow"), 1);
    let misses = statuses.iter().filter(|c| *c == "MISS").count();
    let hits = statuses.iter().filter(|c| *c == "HIT").count();
    assert_eq!((misses, hits), (1, CLIENTS - 1), "{statuses:?}");
    let (_, cache, body) = get(&mg.url("/slow")).await;
    assert_eq!((cache.as_str(), body), ("HIT", Ok(want)));
}

/// An origin answering `/NAME` with 4 KiB of a letter and max-age=60,
/// counting requests per path.
async fn page_origin() -> RawOrigin {
    RawOrigin::start(|path, mut s| async move {
        let body = part(path.len(), 4096);
        let framing = format!("content-length: {}\r\n", body.len());
        let _ = s.write_all(&head(&framing)).await;
        let _ = s.write_all(&body).await;
    })
    .await
}

/// MISS then HIT with the right bytes for each of `paths`, never a 5xx.
async fn miss_then_hit(mg: &Moongate, origin: &RawOrigin, paths: &[&str]) {
    for path in paths {
        let want = part(path.len(), 4096);
        for expected in ["MISS", "HIT"] {
            let (status, cache, body) = get(&mg.url(path)).await;
            assert_eq!((status, cache.as_str()), (200, expected), "{path}");
            assert!(body.is_ok_and(|b| b == want), "{path}: body");
        }
        assert_eq!(origin.hits(path), 1, "{path}");
    }
}

/// Log lines containing `needle`.
fn count_log(mg: &Moongate, needle: &str) -> usize {
    mg.log_lines().iter().filter(|l| l.contains(needle)).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disk_tier_smaller_than_the_objects_serves_from_origin_and_memory() {
    let origin = page_origin().await;
    let disk = tempfile::tempdir().expect("disk dir");
    let tier = format!(
        "disk = {{ path = \"{}\", size = \"1KiB\" }}\n",
        disk.path().join("pages").display()
    );
    let mg = Moongate::start(&conf(origin.addr, &tier));
    miss_then_hit(&mg, &origin, &["/a", "/bb", "/ccc"]).await;
    let needle = "entry larger than the disk tier";
    mg.wait_log(needle, Duration::from_secs(5));
    let f = figures(&mg, "pages").await;
    assert_eq!(f["disk"]["oversized"], 3, "{f}");
    assert_eq!(f["disk"]["entries"], 0, "{f}");
    assert_eq!(f["memory"]["entries"], 3, "{f}");
    assert_eq!(count_log(&mg, needle), 1, "logged once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unwritable_disk_path_keeps_serving_and_is_logged_once() {
    let origin = page_origin().await;
    let disk = tempfile::tempdir().expect("disk dir");
    let path = disk.path().join("pages");
    let tier = format!(
        "disk = {{ path = \"{}\", size = \"16MiB\" }}\n",
        path.display()
    );
    let mg = Moongate::start(&conf(origin.addr, &tier));
    // The directory becomes a plain file: no entry can be written there
    // (root included).
    std::fs::remove_dir_all(&path).expect("remove disk dir");
    std::fs::write(&path, b"not a directory").expect("write file");
    miss_then_hit(&mg, &origin, &["/a", "/bb", "/ccc"]).await;
    figures_until(&mg, "pages", |f| f["disk_write_errors"] == 3).await;
    let needle = "cache disk: writes failing";
    assert_eq!(count_log(&mg, needle), 1, "logged once");
    // Still serving: from memory, and from the origin for new keys.
    miss_then_hit(&mg, &origin, &["/dddd"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_each_zones_tiers_lookups_and_stores() {
    let origin = RawOrigin::start(|path, mut s| async move {
        let cc = if path == "/nostore" {
            "no-store"
        } else {
            "max-age=60"
        };
        let reply = format!(
            "HTTP/1.1 200 OK\r\ncache-control: {cc}\r\ncontent-length: 5\r\nconnection: close\r\n\r\nhello"
        );
        let _ = s.write_all(reply.as_bytes()).await;
    })
    .await;
    let disk = tempfile::tempdir().expect("disk dir");
    let tier = format!(
        "disk = {{ path = \"{}\", size = \"16MiB\" }}\n",
        disk.path().join("pages").display()
    );
    let text = format!(
        "{}\n[[route]]\npath = \"/m/\"\nupstream = \"app\"\ncache = \"mem\"\n\n[cache.mem]\nmemory = \"1MiB\"\n",
        conf(origin.addr, &tier)
    );
    let mg = Moongate::start(&text);
    for (path, expected) in [
        ("/pub", "MISS"),
        ("/pub", "HIT"),
        ("/pub", "HIT"),
        ("/nostore", "MISS"),
    ] {
        assert_eq!(get(&mg.url(path)).await.1, expected, "{path}");
    }
    let posted = client().post(mg.url("/other")).body("x").send().await;
    assert_eq!(posted.expect("post").headers()["x-cache-status"], "BYPASS");
    let f = figures_until(&mg, "pages", |f| f["disk"]["entries"] == 1).await;
    let lookups = &f["lookups"];
    assert_eq!(
        (&lookups["miss"], &lookups["hit"], &lookups["bypass"]),
        (&2.into(), &2.into(), &1.into()),
        "{f}"
    );
    assert_eq!(lookups["expired"], 0, "{f}");
    assert_eq!(f["stores"], 1, "{f}");
    assert_eq!(f["store_skips"]["not_storable"], 1, "{f}");
    assert_eq!(f["memory"]["entries"], 1, "{f}");
    assert!(f["memory"]["bytes"].as_u64().is_some_and(|b| b > 5), "{f}");
    assert!(f["disk"]["bytes"].as_u64().is_some_and(|b| b > 5), "{f}");
    assert_eq!(f["disk_write_errors"], 0, "{f}");
    let mem = figures(&mg, "mem").await;
    assert!(mem["disk"].is_null(), "{mem}");
    assert_eq!(mem["lookups"]["miss"], 0, "{mem}");
}

//! The admin status page (`GET /`, issue 15 point 2): server-rendered
//! HTML with every value escaped, behind the admin token (header, or
//! `?token=` on the page only), from the same report as `GET /status`;
//! and in a real headless Chromium, a peer going down shows within a few
//! seconds without reloading the page (the script's 2 s refresh from
//! `/status`, passing the token on), with a screenshot kept under
//! `target/test-artifacts/`.

mod browser;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::{Moongate, Origin, client, text};
use browser::Browser;

/// A route name only an escaping renderer shows as text.
const EVIL: &str = "<b id=\"evil\">x</b> & 'co'";

/// An origin answering `/healthz` with the status in `health`, `/boom`
/// with 500, anything else with 200.
async fn origin(health: Arc<AtomicU16>) -> Origin {
    Origin::start(move |req| {
        let health = health.clone();
        async move {
            match req.uri().path() {
                "/healthz" => text(health.load(Ordering::SeqCst), "health"),
                "/boom" => text(500, "boom"),
                _ => text(200, "app"),
            }
        }
    })
    .await
}

/// moongate with an admin token, upstream `app` on `peer` (checked every
/// 300 ms, out after one failure) and a route named [`EVIL`] with a limit
/// zone and a cache zone.
fn start(peer: &Origin) -> Moongate {
    let name = EVIL.replace('"', "\\\"");
    Moongate::start(&format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\nworkers = 2\naccess_log = \"off\"\n\n\
         [admin]\nlisten = \"127.0.0.1:0\"\ntoken = \"s3cret\"\n\n\
         [upstream.app]\nretries = 0\nservers = [{{ addr = \"{}\" }}]\n\
         health = {{ path = \"/healthz\", interval = \"300ms\", timeout = \"250ms\", fails = 1, passes = 1 }}\n\n\
         [[route]]\nname = \"{name}\"\npath_regex = \"^/(boom|ok)\"\nupstream = \"app\"\n\
         limit = \"per_client\"\ncache = \"pages\"\n\n\
         [limit.per_client]\nrate = \"100/s\"\nburst = 50\nkey = \"$remote_addr\"\n\n\
         [cache.pages]\nmemory = \"1MiB\"\n",
        peer.addr
    ))
}

/// GET on the admin listener, with the token as a header or not.
async fn admin_get(mg: &Moongate, path: &str, bearer: bool) -> reqwest::Response {
    let mut req = client().get(mg.admin_url(path));
    if bearer {
        req = req.bearer_auth("s3cret");
    }
    req.send().await.expect("admin GET")
}

async fn status(mg: &Moongate) -> Value {
    let resp = admin_get(mg, "/status", true).await;
    assert_eq!(resp.status(), 200);
    serde_json::from_str(&resp.text().await.expect("body")).expect("status JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_is_server_rendered_escaped_and_behind_the_token() {
    let peer = origin(Arc::new(AtomicU16::new(200))).await;
    let mg = start(&peer);

    for (path, bearer, why) in [
        ("/", false, "no token"),
        ("/?token=guess", false, "a wrong token"),
        (
            "/status?token=s3cret",
            false,
            "?token= is for the page only",
        ),
    ] {
        let resp = admin_get(&mg, path, bearer).await;
        assert_eq!(resp.status(), 401, "GET {path}: {why}");
    }

    for (path, bearer) in [
        ("/", true),
        ("/?token=s3cret", false),
        ("/?x=1&token=s3%63ret", false),
    ] {
        let resp = admin_get(&mg, path, bearer).await;
        assert_eq!(resp.status(), 200, "GET {path}");
        let headers = resp.headers().clone();
        assert_eq!(headers["content-type"], "text/html; charset=utf-8");
        assert_eq!(headers["referrer-policy"], "no-referrer");
        let csp = headers["content-security-policy"].to_str().expect("csp");
        assert!(csp.contains("default-src 'none'"), "{csp}");
        let html = resp.text().await.expect("page");
        assert!(html.starts_with("<!DOCTYPE html>"), "{html}");
        assert!(
            html.contains("<dd id=\"generation\">1</dd>"),
            "the generation: {html}"
        );
        assert!(html.contains("<h3>app</h3>"), "the upstream: {html}");
        assert!(
            html.contains(&format!("data-peer=\"{}\"", peer.addr)),
            "the peer: {html}"
        );
        // The route's name and regex as text, never as markup.
        assert!(!html.contains("<b id"), "unescaped route name: {html}");
        assert!(
            html.contains("&lt;b id=&quot;evil&quot;&gt;x&lt;/b&gt; &amp; &#39;co&#39;"),
            "escaped route name: {html}"
        );
        assert!(html.contains("regex ^/(boom|ok)"), "{html}");
        // Complete without the script; the script is inline.
        assert!(html.contains("<section id=\"routes\">"), "{html}");
        assert!(!html.contains("<script src"), "{html}");
    }

    // Traffic: 200s and 500s, counted in the last minute's rates.
    let c = client();
    for path in ["/ok", "/ok", "/ok", "/boom"] {
        let code = c.get(mg.url(path)).send().await.expect("GET").status();
        assert_eq!(code.as_u16(), if path == "/boom" { 500 } else { 200 });
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    let st = loop {
        let st = status(&mg).await;
        if st["rates"]["requests"] == 4 {
            break st;
        }
        assert!(Instant::now() < deadline, "rates never counted 4: {st}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(st["rates"]["errors_5xx"], 1, "{st}");
    assert_eq!(st["rates"]["error_ratio"], 0.25, "{st}");
    assert!(
        st["rates"]["requests_per_sec"]
            .as_f64()
            .is_some_and(|r| r > 0.0),
        "{st}"
    );
    let route = &st["routes"][0];
    assert_eq!(route["name"], EVIL, "{st}");
    assert_eq!(
        (&route["path_kind"], &route["target"], &route["to"]),
        (&"regex".into(), &"upstream".into(), &"app".into())
    );
    assert_eq!(route["rate"]["requests"], 4, "{st}");

    // The JSON keeps the keys it always had.
    for key in [
        "version",
        "uptime_secs",
        "generation",
        "threads",
        "files",
        "listeners",
        "reload",
        "upstreams",
        "limits",
        "workers",
        "caches",
    ] {
        assert!(st.get(key).is_some(), "no {key:?} in {st}");
    }
    assert_eq!(st["generation"], 1);
    assert_eq!(st["reload"]["last"]["ok"], true, "{st}");
    let p = &st["upstreams"]["app"]["peers"][0];
    assert_eq!(p["addr"], peer.addr.to_string(), "{st}");
    for key in ["state", "fails", "active", "weight", "backup", "check"] {
        assert!(p.get(key).is_some(), "no peer {key:?} in {st}");
    }
    assert_eq!(st["upstreams"]["app"]["balance"], "round_robin");
    assert_eq!(st["limits"]["per_client"]["scope"], "local", "{st}");
    assert_eq!(
        st["limits"]["per_client"]["limit"], "100/s burst 50",
        "{st}"
    );
    let pages = &st["caches"]["pages"];
    assert_eq!(pages["memory"]["max_bytes"], 1 << 20, "{st}");
    let lookups: u64 = (pages["lookups"].as_object().expect("lookups").values())
        .filter_map(Value::as_u64)
        .sum();
    assert_eq!(lookups, 4, "{st}");
    assert!(pages["hit_ratio"].is_f64(), "{st}");
    assert_eq!(st["upstreams"]["app"]["health"]["type"], "http");

    // The page shows the same figures.
    let html = admin_get(&mg, "/", true).await.text().await.expect("page");
    assert!(html.contains("<dd id=\"errors\">25.0 %</dd>"), "{html}");
    assert!(html.contains("<td>rate 100/s burst 50</td>"), "{html}");
    assert!(html.contains("<td>pages</td><td>"), "{html}");
    assert!(html.contains(" of 1.0 MiB</td>"), "{html}");
}

/// Where the screenshot goes: `test-artifacts/` in the target directory.
fn artifact(name: &str) -> PathBuf {
    let tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let dir = tmp
        .parent()
        .map_or_else(|| tmp.join("test-artifacts"), |t| t.join("test-artifacts"));
    std::fs::create_dir_all(&dir).expect("artifact dir");
    dir.join(name)
}

/// Polls `script` in the page until it returns `want`; what it last
/// returned otherwise (after `within`).
async fn wait_dom(b: &Browser, script: &str, want: &str, within: Duration) -> Result<(), Value> {
    let deadline = Instant::now() + within;
    loop {
        let got = b.eval(script).await;
        if got == want {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(got);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_a_browser_a_peer_going_down_shows_without_a_reload() {
    let health = Arc::new(AtomicU16::new(200));
    let peer = origin(health.clone()).await;
    let mg = start(&peer);
    let browser = Browser::start().await;
    browser.open(&mg.admin_url("/?token=s3cret")).await;

    let state = format!(
        "const td = document.querySelector('tr.peer[data-upstream=\"app\"][data-peer=\"{}\"] td.state'); \
         return td ? td.textContent.split(' ')[0] : 'missing';",
        peer.addr
    );
    wait_dom(&browser, &state, "up", Duration::from_secs(10))
        .await
        .unwrap_or_else(|got| panic!("the peer never showed up: {got}"));
    // The script renders what the server rendered: the page as served,
    // parsed by the browser, against the page after a refresh (digits
    // aside: uptime and "ago" move on).
    let live = "return document.getElementById('live').textContent.split(' ')[1];";
    wait_dom(&browser, live, "updated", Duration::from_secs(10))
        .await
        .unwrap_or_else(|got| panic!("the script never refreshed the page: {got}"));
    let served = admin_get(&mg, "/", true).await.text().await.expect("page");
    let same = browser
        .eval_with(
            "const norm = (s) => s.replace(/[0-9]+/g, '0'); \
             const served = new DOMParser().parseFromString(arguments[0], 'text/html'); \
             const a = norm(served.getElementById('report').innerHTML); \
             const b = norm(document.getElementById('report').innerHTML); \
             return a === b ? 'same' : 'served:\\n' + a + '\\nrefreshed:\\n' + b;",
            &[Value::from(served)],
        )
        .await;
    assert_eq!(same, "same", "the two renderers disagree");
    // Survives only as long as the page is not loaded again.
    browser
        .eval("window.stillThisPage = 'yes'; return null;")
        .await;

    health.store(500, Ordering::SeqCst);
    wait_dom(&browser, &state, "down", Duration::from_secs(8))
        .await
        .unwrap_or_else(|got| panic!("the page did not show the peer down: {got}"));
    assert_eq!(
        browser
            .eval("return window.stillThisPage || 'reloaded';")
            .await,
        "yes",
        "the page must refresh itself, not be loaded again"
    );
    let live = browser
        .eval("return document.getElementById('live').textContent;")
        .await;
    assert!(
        live.as_str()
            .is_some_and(|l| l.starts_with("live: updated")),
        "{live}"
    );
    let reason = browser.eval(&state.replace(".split(' ')[0]", "")).await;
    assert_eq!(reason, "down (active)");
    // The script's renderer escapes as the server's does.
    let name = browser
        .eval("return document.querySelector('tr.route td').textContent;")
        .await;
    assert_eq!(name, EVIL);
    assert_eq!(
        browser
            .eval("return document.getElementById('evil') === null;")
            .await,
        true
    );

    let png = browser.screenshot().await;
    assert!(png.starts_with(b"\x89PNG"), "not a PNG");
    let path = artifact("status-page.png");
    std::fs::write(&path, &png).expect("write screenshot");
    println!("status page screenshot: {}", path.display());
}

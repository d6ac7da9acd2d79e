//! Hot reload (SPEC §7): by conf.d edit, SIGHUP, `POST /reload` and the
//! `moongate reload` command; a broken file keeps the old configuration; a
//! reload under load loses no request; listeners come and go; an upstream
//! whose definition did not change keeps its health marks.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use serde_json::Value;

use crate::support::{Moongate, Origin, client, wait_refused};

/// One listener, an admin listener on port 0, and `/` proxied to `origin`.
fn conf(origin: SocketAddr) -> String {
    conf_with(origin, "")
}

/// [`conf`] plus `extra` TOML appended at the end.
fn conf_with(origin: SocketAddr, extra: &str) -> String {
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
{extra}"#
    )
}

/// Status and body of a GET.
async fn get(url: &str) -> (u16, String) {
    let resp = client()
        .get(url)
        .send()
        .await
        .expect("GET through moongate");
    let status = resp.status().as_u16();
    (status, resp.text().await.expect("body"))
}

/// Polls `GET url` until its body is `want`; panics after `timeout`.
async fn wait_body(url: &str, want: &str, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    let mut last = (0, String::new());
    while Instant::now() < deadline {
        last = get(url).await;
        if last == (200, want.to_string()) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{url} did not answer 200 {want:?} within {timeout:?}; last answer: {last:?}");
}

/// A loopback port nobody listens on right now (bound, then released).
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    l.local_addr().expect("local addr").port()
}

/// A conf.d whose only file is a symlink to a file outside it: rewriting
/// the target makes no event in conf.d, so the watcher stays quiet and a
/// reload happens only when asked for (SIGHUP, admin, CLI).
struct QuietConf {
    outside: tempfile::TempDir,
}

impl QuietConf {
    /// Writes `text` outside and starts moongate on a conf.d linking to it.
    fn start(text: &str) -> (QuietConf, Moongate) {
        let outside = tempfile::tempdir().expect("temp dir");
        let quiet = QuietConf { outside };
        quiet.write(text);
        let confd = tempfile::tempdir().expect("conf.d");
        std::os::unix::fs::symlink(quiet.target(), confd.path().join("00-test.toml"))
            .expect("symlink conf");
        (quiet, Moongate::start_in(confd))
    }

    fn target(&self) -> PathBuf {
        self.outside.path().join("real.toml")
    }

    /// Replaces the linked file atomically.
    fn write(&self, text: &str) {
        let tmp = self.outside.path().join("real.toml.tmp");
        std::fs::write(&tmp, text).expect("write conf");
        std::fs::rename(&tmp, self.target()).expect("rename conf");
    }
}

/// Whether the process is still running (it was never restarted).
fn still_running(mg: &mut Moongate) -> bool {
    mg.wait_exit(Duration::ZERO).is_none()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_by_file_edit() {
    let a = Origin::named("a").await;
    let b = Origin::named("b").await;
    let mut mg = tokio::task::block_in_place(|| Moongate::start(&conf(a.addr)));
    let pid = mg.pid();
    assert_eq!(get(&mg.url("/")).await, (200, "a".to_string()));
    assert_eq!(mg.status().await["generation"], 1);

    mg.write_conf("00-test.toml", &conf(b.addr));
    wait_body(&mg.url("/"), "b", Duration::from_secs(10)).await;

    assert_eq!(mg.pid(), pid);
    assert!(still_running(&mut mg), "moongate exited during the reload");
    let st = mg.status().await;
    assert!(st["generation"].as_u64().unwrap_or(0) >= 2, "{st}");
    assert_eq!(st["reload"]["last"]["ok"], true, "{st}");
    assert_eq!(st["reload"]["last"]["trigger"], "watch", "{st}");
    let ready = mg
        .log_lines()
        .iter()
        .filter(|l| l.contains("moongate ready"))
        .count();
    assert_eq!(ready, 1, "moongate started more than once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_by_sighup() {
    let a = Origin::named("a").await;
    let b = Origin::named("b").await;
    let (quiet, mut mg) = tokio::task::block_in_place(|| QuietConf::start(&conf(a.addr)));
    let pid = mg.pid();
    assert_eq!(get(&mg.url("/")).await, (200, "a".to_string()));

    quiet.write(&conf(b.addr));
    // The watcher sees nothing (the edit is outside conf.d): still A.
    assert_eq!(get(&mg.url("/")).await, (200, "a".to_string()));

    let skip = mg.log_lines().len();
    mg.signal(Signal::SIGHUP);
    let line = tokio::task::block_in_place(|| {
        mg.wait_log_after(skip, "configuration reloaded", Duration::from_secs(10))
    });
    assert!(line.contains("trigger=\"signal\""), "{line}");
    assert!(line.contains("generation=2"), "{line}");

    // The snapshot is swapped before the line is logged.
    assert_eq!(get(&mg.url("/")).await, (200, "b".to_string()));
    assert_eq!(mg.pid(), pid);
    assert!(still_running(&mut mg), "SIGHUP stopped moongate");
    let st = mg.status().await;
    assert_eq!(st["generation"], 2, "{st}");
    assert_eq!(st["reload"]["last"]["trigger"], "signal", "{st}");
    assert!(
        !mg.log_lines()
            .iter()
            .any(|l| l.contains("trigger=\"watch\"")),
        "the watcher reloaded too; the test did not isolate SIGHUP"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_by_admin_api() {
    let a = Origin::named("a").await;
    let b = Origin::named("b").await;
    let (quiet, mg) = tokio::task::block_in_place(|| QuietConf::start(&conf(a.addr)));
    assert_eq!(get(&mg.url("/")).await, (200, "a".to_string()));

    quiet.write(&conf(b.addr));
    let (code, body) = mg.admin_reload().await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["ok"], true, "{body}");
    assert_eq!(body["generation"], 2, "{body}");
    // The answer comes after the swap: new requests see the new config.
    assert_eq!(get(&mg.url("/")).await, (200, "b".to_string()));

    let st = mg.status().await;
    assert_eq!(st["generation"], 2, "{st}");
    assert_eq!(st["reload"]["last"]["trigger"], "admin", "{st}");
    assert_eq!(st["reload"]["reloads"], 2, "start + one reload: {st}");

    // Only POST reloads.
    let resp = client()
        .get(mg.admin_url("/reload"))
        .send()
        .await
        .expect("GET /reload");
    assert_eq!(resp.status(), 405);
    assert_eq!(mg.status().await["generation"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_by_cli_command() {
    let a = Origin::named("a").await;
    let b = Origin::named("b").await;
    // `moongate reload` finds the admin listener in conf.d, so it needs a
    // real port there (port 0 cannot be reached from another process).
    let admin = format!("127.0.0.1:{}", free_port());
    let with_admin = |origin: SocketAddr| {
        conf(origin).replace(
            "[admin]\nlisten = \"127.0.0.1:0\"",
            &format!("[admin]\nlisten = \"{admin}\""),
        )
    };
    let (quiet, mg) = tokio::task::block_in_place(|| QuietConf::start(&with_admin(a.addr)));
    assert_eq!(mg.admin.map(|a| a.to_string()), Some(admin.clone()));
    assert_eq!(get(&mg.url("/")).await, (200, "a".to_string()));

    quiet.write(&with_admin(b.addr));
    let out = run_cli(&["reload", "-c"], mg.conf_dir()).await;
    assert!(
        out.status.success(),
        "moongate reload failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let answer: Value =
        serde_json::from_slice(&out.stdout).expect("moongate reload prints the admin answer");
    assert_eq!(answer["ok"], true, "{answer}");
    assert_eq!(answer["generation"], 2, "{answer}");
    assert_eq!(get(&mg.url("/")).await, (200, "b".to_string()));
    assert_eq!(mg.status().await["reload"]["last"]["trigger"], "admin");
}

/// Runs the moongate binary with `args` followed by `dir`.
async fn run_cli(args: &[&str], dir: &Path) -> std::process::Output {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_moongate"));
    cmd.args(args).arg(dir);
    tokio::time::timeout(Duration::from_secs(30), cmd.output())
        .await
        .expect("moongate reload finishes")
        .expect("run moongate reload")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_file_keeps_the_old_config() {
    let a = Origin::named("a").await;
    let b = Origin::named("b").await;
    let mg = tokio::task::block_in_place(|| Moongate::start(&conf(a.addr)));
    assert_eq!(get(&mg.url("/")).await, (200, "a".to_string()));

    // Line 9 opens an array table without closing it.
    let broken = conf(b.addr).replace("[upstream.app]", "[[upstream.app]");
    assert!(
        broken
            .lines()
            .nth(8)
            .is_some_and(|l| l.starts_with("[[upstream"))
    );
    let skip = mg.log_lines().len();
    mg.write_conf("00-test.toml", &broken);
    let line = tokio::task::block_in_place(|| {
        mg.wait_log_after(skip, "reload failed", Duration::from_secs(10))
    });
    assert!(line.contains("00-test.toml:9:"), "{line}");

    // Still the old configuration, still generation 1.
    assert_eq!(get(&mg.url("/")).await, (200, "a".to_string()));
    let deadline = Instant::now() + Duration::from_secs(5);
    let st = loop {
        let st = mg.status().await;
        if st["reload"]["last"]["ok"] == false || Instant::now() > deadline {
            break st;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(st["generation"], 1, "{st}");
    assert_eq!(st["reload"]["last"]["ok"], false, "{st}");
    assert!(st["reload"]["failures"].as_u64().unwrap_or(0) >= 1, "{st}");
    let error = st["reload"]["last"]["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("00-test.toml:9:"),
        "error names file:line: {st}"
    );
    assert_eq!(b.hits(), 0);

    // The admin API reports the same failure.
    let (code, body) = mg.admin_reload().await;
    assert_eq!(code, 422, "{body}");
    assert_eq!(body["ok"], false, "{body}");
    assert_eq!(body["generation"], 1, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap_or_default()
            .contains("00-test.toml:9:"),
        "{body}"
    );

    // Fixed: the new configuration serves.
    mg.write_conf("00-test.toml", &conf(b.addr));
    wait_body(&mg.url("/"), "b", Duration::from_secs(10)).await;
    let st = mg.status().await;
    assert!(st["generation"].as_u64().unwrap_or(0) >= 2, "{st}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_under_load_loses_nothing() {
    const REQUESTS: usize = 2000;
    const RELOADS: usize = 25;
    const TASKS: usize = 4;
    let a = Origin::named("a").await;
    let b = Origin::named("b").await;
    let mg = tokio::task::block_in_place(|| Moongate::start(&conf(a.addr)));
    let url = mg.url("/");
    let deadline = Instant::now() + Duration::from_secs(60);

    let done = Arc::new(AtomicUsize::new(0));
    let reloading = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let mut clients = Vec::new();
    for _ in 0..TASKS {
        let (url, done, reloading) = (url.clone(), done.clone(), reloading.clone());
        clients.push(tokio::spawn(async move {
            let http = client();
            let mut bad: Vec<String> = Vec::new();
            let mut served = 0usize;
            // Until both enough requests and every reload are done (bounded).
            while (done.load(Ordering::SeqCst) < REQUESTS || reloading.load(Ordering::SeqCst))
                && served < 20 * REQUESTS
                && Instant::now() < deadline
            {
                match http.get(&url).send().await {
                    Ok(resp) if resp.status().is_success() => match resp.text().await {
                        Ok(body) if body == "a" || body == "b" => {}
                        Ok(body) => bad.push(format!("unexpected body {body:?}")),
                        Err(e) => bad.push(format!("body error: {e}")),
                    },
                    Ok(resp) => bad.push(format!("status {}", resp.status())),
                    Err(e) => bad.push(format!("client error: {e}")),
                }
                served += 1;
                done.fetch_add(1, Ordering::SeqCst);
            }
            (served, bad)
        }));
    }

    let base = mg.status().await["generation"].as_u64().unwrap_or(0);
    let mut ok_reloads = 0;
    for i in 0..RELOADS {
        // Spread the reloads over the traffic.
        while done.load(Ordering::SeqCst) < i * (REQUESTS * 3 / 4) / RELOADS
            && Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let origin = if i % 2 == 0 { b.addr } else { a.addr };
        mg.write_conf("00-test.toml", &conf(origin));
        let (code, body) = mg.admin_reload().await;
        assert_eq!(code, 200, "reload {i}: {body}");
        assert_eq!(body["ok"], true, "reload {i}: {body}");
        ok_reloads += 1;
    }
    reloading.store(false, Ordering::SeqCst);

    let mut total = 0;
    let mut failures = Vec::new();
    for c in clients {
        let (served, bad) = c.await.expect("client task");
        total += served;
        failures.extend(bad);
    }
    assert!(
        failures.is_empty(),
        "{} of {total} requests failed across reloads, e.g. {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert!(
        total >= REQUESTS,
        "only {total} requests ran before the deadline"
    );
    assert_eq!(ok_reloads, RELOADS);
    let generation = mg.status().await["generation"].as_u64().unwrap_or(0);
    assert!(
        generation >= base + RELOADS as u64,
        "generation went from {base} to {generation} over {RELOADS} reloads"
    );
    assert!(a.hits() > 0 && b.hits() > 0, "both configurations served");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_adds_and_removes_listeners() {
    let a = Origin::named("a").await;
    let mg = tokio::task::block_in_place(|| Moongate::start(&conf(a.addr)));
    assert_eq!(mg.http.len(), 1);
    let extra: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    let two = conf(a.addr).replace(
        "listen = [\"127.0.0.1:0\"]",
        &format!("listen = [\"127.0.0.1:0\", \"{extra}\"]"),
    );

    mg.write_conf("00-test.toml", &two);
    let (code, body) = mg.admin_reload().await;
    assert_eq!(code, 200, "{body}");
    let url = format!("http://{extra}/");
    assert_eq!(get(&url).await, (200, "a".to_string()));
    assert_eq!(get(&mg.url("/")).await, (200, "a".to_string()));
    let st = mg.status().await;
    let listed = |st: &Value, addr: SocketAddr| {
        st["listeners"]
            .as_array()
            .is_some_and(|ls| ls.iter().any(|l| l["addr"] == addr.to_string()))
    };
    assert!(listed(&st, extra), "{st}");
    assert!(listed(&st, mg.http[0]), "{st}");

    mg.write_conf("00-test.toml", &conf(a.addr));
    let (code, body) = mg.admin_reload().await;
    assert_eq!(code, 200, "{body}");
    wait_refused(extra, Duration::from_secs(5)).await;
    // The listener that stayed was not touched.
    assert_eq!(get(&mg.url("/")).await, (200, "a".to_string()));
    let st = mg.status().await;
    assert!(!listed(&st, extra), "{st}");
    assert!(listed(&st, mg.http[0]), "{st}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unchanged_upstream_keeps_its_health_marks() {
    let a = Origin::named("a").await;
    // Two dead peers: a sole peer is never marked down.
    let closed = format!("127.0.0.1:{}", free_port());
    let closed2 = format!("127.0.0.1:{}", free_port());
    let bad = |fail_timeout: &str| {
        format!(
            r#"
[upstream.bad]
servers = [{{ addr = "{closed}", max_fails = 1, fail_timeout = "{fail_timeout}" }},
           {{ addr = "{closed2}", max_fails = 1, fail_timeout = "{fail_timeout}" }}]

[[route]]
path = "/bad/"
upstream = "bad"
"#
        )
    };
    let (quiet, mg) =
        tokio::task::block_in_place(|| QuietConf::start(&conf_with(a.addr, &bad("30s"))));
    let peer_state = |st: &Value| st["upstreams"]["bad"]["peers"][0]["state"].clone();
    assert_eq!(peer_state(&mg.status().await), "up");

    let (code, _) = get(&mg.url("/bad/x")).await;
    assert_eq!(code, 502);
    let st = mg.status().await;
    assert_eq!(peer_state(&st), "failed", "{st}");

    // An unrelated change (a new route): the upstream is kept, mark and all.
    let extra_route = "\n[[route]]\npath_exact = \"/new\"\nupstream = \"app\"\n";
    let mut text = conf_with(a.addr, &bad("30s"));
    text.push_str(extra_route);
    quiet.write(&text);
    let (code, body) = mg.admin_reload().await;
    assert_eq!(
        (code, &body["generation"]),
        (200, &Value::from(2)),
        "{body}"
    );
    assert_eq!(get(&mg.url("/new")).await, (200, "a".to_string()));
    let st = mg.status().await;
    assert_eq!(peer_state(&st), "failed", "{st}");
    assert_eq!(st["upstreams"]["bad"]["peers"][0]["fails"], 1, "{st}");

    // The upstream's definition changes: a fresh pool, no mark.
    let mut text = conf_with(a.addr, &bad("31s"));
    text.push_str(extra_route);
    quiet.write(&text);
    let (code, body) = mg.admin_reload().await;
    assert_eq!(
        (code, &body["generation"]),
        (200, &Value::from(3)),
        "{body}"
    );
    let st = mg.status().await;
    assert_eq!(peer_state(&st), "up", "{st}");
    assert_eq!(st["upstreams"]["bad"]["peers"][0]["fails"], 0, "{st}");
}

/// A reload that leaves an upstream's definition alone keeps its pooled
/// connections open and in use; changing the definition starts a new pool.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unchanged_upstream_keeps_its_pooled_connections() {
    let (origin, accepted) = crate::support::counting_origin().await;
    // One worker: pools are per worker thread, and a second client
    // connection could otherwise land on the other worker's empty pool.
    let one_worker = |text: String| text.replace("workers = 2", "workers = 1");
    let (quiet, mg) = tokio::task::block_in_place(|| QuietConf::start(&one_worker(conf(origin))));
    let http = client();
    let burst = || async {
        for _ in 0..10 {
            let r = http.get(mg.url("/")).send().await.expect("GET");
            assert_eq!(r.status(), 200);
            assert_eq!(r.text().await.expect("body"), "ok");
        }
    };
    burst().await;
    let before = accepted.load(Ordering::SeqCst);
    assert!(
        (1..=2).contains(&before),
        "{before} connections for one keep-alive client"
    );

    let extra_route = "\n[[route]]\npath_exact = \"/new\"\nupstream = \"app\"\n";
    quiet.write(&one_worker(conf_with(origin, extra_route)));
    assert_eq!(mg.admin_reload().await.0, 200);
    burst().await;
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        before,
        "an unrelated reload must not reopen upstream connections"
    );

    let changed = one_worker(conf_with(origin, extra_route))
        .replace("servers = [", "keepalive = 16\nservers = [");
    quiet.write(&changed);
    assert_eq!(mg.admin_reload().await.0, 200);
    burst().await;
    assert!(
        accepted.load(Ordering::SeqCst) > before,
        "a changed upstream definition gets a fresh pool"
    );
}

//! Running under systemd (issue 17, SPEC §12): `moongate run` with
//! `NOTIFY_SOCKET` pointing at a datagram socket the test binds, as systemd
//! does for a `Type=notify` unit. `READY=1` comes once the server answers
//! (its managed worker pool included), each reload is bracketed by
//! `RELOADING=1` (with `MONOTONIC_USEC`) and `READY=1`, a graceful stop
//! says `STOPPING=1`, and the app workers do not inherit the socket. The
//! shipped unit file, examples/systemd/moongate.service, is read and its
//! key settings checked.

use std::collections::BTreeMap;
use std::time::Duration;

use nix::sys::signal::Signal;
use nix::time::{ClockId, clock_gettime};
use tokio::net::UnixDatagram;

use crate::support::{Moongate, client};

/// The managed-worker fixture app (ready on /healthz after READY_DELAY s).
const APP_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/workers");

/// The next notification, as `KEY=VALUE` lines.
async fn next(systemd: &UnixDatagram) -> BTreeMap<String, String> {
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(30), systemd.recv(&mut buf))
        .await
        .expect("a notification within 30 s")
        .expect("recv");
    let text = String::from_utf8_lossy(&buf[..n]).into_owned();
    text.lines()
        .map(|l| {
            let (k, v) = l
                .split_once('=')
                .unwrap_or_else(|| panic!("not KEY=VALUE: {l:?} in {text:?}"));
            (k.to_string(), v.to_string())
        })
        .collect()
}

fn monotonic_usec() -> u64 {
    let t = clock_gettime(ClockId::CLOCK_MONOTONIC).expect("clock");
    t.tv_sec() as u64 * 1_000_000 + t.tv_nsec() as u64 / 1000
}

/// One managed worker that is ready a second after it starts, and that
/// writes what it sees of `NOTIFY_SOCKET` to `env_file` first.
fn conf(env_file: &std::path::Path) -> String {
    format!(
        r#"[server]
listen = ["127.0.0.1:0"]
workers = 1
access_log = "off"

[upstream.app]
[upstream.app.workers]
command = ["sh", "-c", "printenv NOTIFY_SOCKET > {env}; exec python3 app.py --unix {{socket}}"]
dir = "{APP_DIR}"
count = 1
ready = "/healthz"
env = {{ READY_DELAY = "1" }}
start_timeout = "20s"
stop_timeout = "2s"

[[route]]
path = "/"
upstream = "app"
"#,
        env = env_file.display()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tells_systemd_ready_reloading_and_stopping() {
    let sock_dir = tempfile::tempdir().expect("dir");
    let sock_path = sock_dir.path().join("notify");
    let systemd = UnixDatagram::bind(&sock_path).expect("bind the notify socket");
    let env_file = sock_dir.path().join("worker-env");
    let mut mg = Moongate::start_env(
        &conf(&env_file),
        &[("NOTIFY_SOCKET", sock_path.as_os_str())],
    );

    // READY=1 waits for the pool: the worker answers /healthz only after a
    // second, long after "moongate ready" is logged, and a request sent the
    // moment READY=1 arrives is served by it (no 502 for want of a worker).
    let ready = next(&systemd).await;
    assert_eq!(
        ready.get("READY").map(String::as_str),
        Some("1"),
        "{ready:?}"
    );
    assert_eq!(ready.get("MAINPID"), Some(&mg.pid().to_string()));
    assert_eq!(
        ready.get("STATUS").map(String::as_str),
        Some("serving generation 1")
    );
    let res = client().get(mg.url("/")).send().await.expect("GET /");
    assert_eq!(res.status(), 200, "served once systemd was told READY=1");
    let text = res.text().await.expect("body");
    let body: serde_json::Value = serde_json::from_str(&text).expect("the app's JSON");
    assert_eq!(body["ready"], true, "{body}");
    let ready_logged = mg
        .log_lines()
        .iter()
        .position(|l| l.contains("told systemd: ready"))
        .expect("the READY=1 is logged");
    let serving_logged = mg
        .log_lines()
        .iter()
        .position(|l| l.contains("moongate ready"))
        .expect("ready line");
    assert!(serving_logged < ready_logged, "{:#?}", mg.log_lines());

    // The worker was started without systemd's socket in its environment.
    let seen = std::fs::read_to_string(&env_file).expect("the worker wrote its env file");
    assert_eq!(seen, "", "NOTIFY_SOCKET leaked to an app worker");

    // SIGHUP: RELOADING=1 stamped with the time the reload began, then READY=1.
    let before = monotonic_usec();
    mg.signal(Signal::SIGHUP);
    let reloading = next(&systemd).await;
    let after = monotonic_usec();
    assert_eq!(
        reloading.get("RELOADING").map(String::as_str),
        Some("1"),
        "{reloading:?}"
    );
    let stamp: u64 = reloading["MONOTONIC_USEC"].parse().expect("a number");
    assert!(
        before <= stamp && stamp <= after,
        "{before} <= {stamp} <= {after}"
    );
    let done = next(&systemd).await;
    assert_eq!(done.get("READY").map(String::as_str), Some("1"), "{done:?}");
    assert_eq!(
        done.get("STATUS").map(String::as_str),
        Some("serving generation 2")
    );

    // A broken file (picked up by the conf.d watcher): the reload fails,
    // the old configuration serves on, and systemd hears READY=1 again.
    mg.write_conf("10-broken.toml", "[upstream.x]\nservers = 3\n");
    let failed = loop {
        let reloading = next(&systemd).await;
        assert_eq!(
            reloading.get("RELOADING").map(String::as_str),
            Some("1"),
            "{reloading:?}"
        );
        let done = next(&systemd).await;
        assert_eq!(done.get("READY").map(String::as_str), Some("1"), "{done:?}");
        let status = done.get("STATUS").cloned().unwrap_or_default();
        if status.starts_with("reload failed") {
            break status;
        }
    };
    assert!(
        failed.contains("still serving generation 2") && failed.contains("10-broken.toml:2"),
        "{failed}"
    );
    let res = client().get(mg.url("/")).send().await.expect("GET /");
    assert_eq!(res.status(), 200);

    // SIGTERM: STOPPING=1 as the graceful stop begins, then exit 0.
    mg.signal(Signal::SIGTERM);
    let stopping = next(&systemd).await;
    assert_eq!(
        stopping.get("STOPPING").map(String::as_str),
        Some("1"),
        "{stopping:?}"
    );
    assert_eq!(mg.wait_exit(Duration::from_secs(20)), Some(0));
}

/// `[Section]` → its `Key=value` lines, in order (repeated keys kept).
fn unit_file(text: &str) -> BTreeMap<String, Vec<(String, String)>> {
    let mut out: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    let mut section = String::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.to_string();
            continue;
        }
        let (k, v) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("not Key=value: {line:?}"));
        assert!(!section.is_empty(), "{line:?} before any [Section]");
        out.entry(section.clone())
            .or_default()
            .push((k.trim().to_string(), v.trim().to_string()));
    }
    out
}

#[test]
fn the_shipped_unit_file_is_a_hardened_notify_service() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/systemd/moongate.service"
    );
    let text = std::fs::read_to_string(path).expect("examples/systemd/moongate.service");
    let unit = unit_file(&text);
    let keys: Vec<&String> = unit.keys().collect();
    assert_eq!(keys, ["Install", "Service", "Unit"], "sections");
    let service = &unit["Service"];
    let all = |key: &str| -> Vec<&str> {
        (service.iter())
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .collect()
    };
    let one = |key: &str| -> &str {
        match all(key).as_slice() {
            [v] => v,
            other => panic!("[Service] {key}= set {} times: {other:?}", other.len()),
        }
    };

    assert_eq!(one("Type"), "notify");
    assert!(one("ExecStart").ends_with("moongate run -c /srv/moongate/conf.d"));
    assert!(one("ExecStartPre").ends_with("moongate check -c /srv/moongate/conf.d"));
    // A configuration that does not check refuses `systemctl reload`;
    // one that does is reloaded by SIGHUP.
    assert_eq!(
        all("ExecReload"),
        [
            "/usr/local/bin/moongate check -c /srv/moongate/conf.d",
            "/bin/kill -HUP $MAINPID"
        ]
    );
    // SIGTERM to moongate alone: it drains, then stops its app workers
    // itself; systemd's default would signal the workers at once too.
    assert_eq!(one("KillMode"), "mixed");
    assert_eq!(one("Restart"), "on-failure");
    assert_eq!(one("WorkingDirectory"), "/srv/moongate");

    for (key, value) in [
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("PrivateDevices", "yes"),
        ("ProtectKernelTunables", "yes"),
        ("ProtectKernelModules", "yes"),
        ("ProtectControlGroups", "yes"),
        ("RestrictSUIDSGID", "yes"),
        ("LockPersonality", "yes"),
        ("AmbientCapabilities", "CAP_NET_BIND_SERVICE"),
        ("CapabilityBoundingSet", "CAP_NET_BIND_SERVICE"),
        ("CacheDirectory", "moongate"),
        ("RuntimeDirectory", "moongate"),
    ] {
        assert_eq!(one(key), value, "[Service] {key}=");
    }
    let writable: Vec<&str> = one("ReadWritePaths").split_whitespace().collect();
    assert!(writable.contains(&"/srv/moongate/var"), "{writable:?}");
    // PCRE2's JIT (ngx.re) needs writable+executable memory.
    assert!(
        !service.iter().any(|(k, _)| k == "MemoryDenyWriteExecute"),
        "MemoryDenyWriteExecute would break ngx.re's JIT"
    );
    // The stop must outlast shutdown_timeout's default (30 s).
    let stop: u64 = one("TimeoutStopSec")
        .trim_end_matches('s')
        .parse()
        .expect("TimeoutStopSec in seconds");
    assert!(stop > 30, "TimeoutStopSec={stop}");

    let install = &unit["Install"];
    assert!(install.contains(&("WantedBy".to_string(), "multi-user.target".to_string())));
}

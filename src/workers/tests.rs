//! The supervisor against real processes: a small python3 HTTP app on a
//! unix socket or a loopback port, and `sh -c` commands that fail. Every
//! test ends with `stop_all`; a test that fails midway still leaves nothing
//! behind, since the workers die with the test's thread (parent-death
//! signal) and are killed when their handles drop.

use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::Registry;
use crate::config::{self, PeerAddr};
use crate::snapshot::{self, Snapshot};
use crate::upstream::Upstream;

/// The app: `--unix PATH` or `--port N`; `GET /` answers "pid worker
/// version"; `/healthz` answers 503 until the file `$GO_FILE` exists.
const APP: &str = r#"
import http.server, os, socketserver, sys
class Unix(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
class Tcp(socketserver.ThreadingMixIn, socketserver.TCPServer):
    daemon_threads = True
    allow_reuse_address = True
class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        if self.path == "/healthz" and not os.path.exists(os.environ.get("GO_FILE", "/")):
            return self.answer(503, b"not yet")
        body = "%d %s %s" % (os.getpid(), os.environ["MOONGATE_WORKER"], os.environ.get("APP_VERSION", "-"))
        self.answer(200, body.encode())
    def answer(self, status, body):
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
    def address_string(self):
        return "local"
kind, where = sys.argv[1], sys.argv[2]
print("worker", os.environ["MOONGATE_WORKER"], "listening", flush=True)
server = Unix(where, Handler) if kind == "--unix" else Tcp(("127.0.0.1", int(where)), Handler)
server.serve_forever()
"#;

/// A directory holding the app script.
struct App {
    dir: tempfile::TempDir,
}

impl App {
    fn new() -> App {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("app.py"), APP).unwrap();
        App { dir }
    }

    fn script(&self) -> String {
        self.dir.path().join("app.py").display().to_string()
    }

    /// A workers table running the app on `{socket}`, with `extra` lines.
    fn unix(&self, extra: &str) -> String {
        format!(
            "command = [\"python3\", \"{}\", \"--unix\", \"{{socket}}\"]\nrestart_backoff = \"50ms..1s\"\n{extra}",
            self.script()
        )
    }
}

/// Compiles a configuration with upstream `app` managed by `workers`.
fn compile(workers: &str, previous: Option<&Snapshot>) -> Snapshot {
    let text = format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\n[upstream.app.workers]\n{workers}\n[[route]]\npath = \"/\"\nupstream = \"app\"\n"
    );
    let config = config::load_str("t.toml", &text).expect("valid");
    let generation = previous.map_or(1, |p| p.generation + 1);
    snapshot::compile(config, previous, generation).expect("compiles")
}

/// Polls `f` every 50 ms until it gives a value (at most 30 s).
async fn until<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The members' addresses once there are `n`.
async fn members(up: &Upstream, n: usize) -> Vec<PeerAddr> {
    until(&format!("{n} members"), || {
        let m = up.members();
        (m.addrs.len() == n).then(|| m.addrs.clone())
    })
    .await
}

/// What one worker answers to `GET /`.
#[derive(Debug, PartialEq)]
struct Reply {
    pid: i32,
    worker: String,
    version: String,
}

async fn get(addr: &PeerAddr) -> Reply {
    let request = b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";
    let mut raw = Vec::new();
    match addr {
        PeerAddr::Unix(p) => {
            let mut s = tokio::net::UnixStream::connect(p).await.unwrap();
            s.write_all(request).await.unwrap();
            s.read_to_end(&mut raw).await.unwrap();
        }
        PeerAddr::Tcp(a) => {
            let mut s = tokio::net::TcpStream::connect(a).await.unwrap();
            s.write_all(request).await.unwrap();
            s.read_to_end(&mut raw).await.unwrap();
        }
    }
    let text = String::from_utf8(raw).unwrap();
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    let body = text.split("\r\n\r\n").nth(1).unwrap();
    let mut parts = body.split(' ');
    Reply {
        pid: parts.next().unwrap().parse().unwrap(),
        worker: parts.next().unwrap().to_string(),
        version: parts.next().unwrap().to_string(),
    }
}

/// Whether `pid` runs (a zombie waiting for its reaper does not count).
fn alive(pid: i32) -> bool {
    if kill(Pid::from_raw(pid), None).is_err() {
        return false;
    }
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let state = stat.rsplit(") ").next().and_then(|r| r.chars().next());
    !matches!(state, None | Some('Z') | Some('X'))
}

/// The registry's `/status` object, as the admin API serialises it.
fn status_json(registry: &Registry) -> Value {
    serde_json::to_value(registry.status()).unwrap()
}

/// Pids of the pool's workers in `state`, in `generation` if given.
fn pids(status: &Value, state: &str, generation: Option<u64>) -> Vec<i32> {
    status["workers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|w| w["state"] == state)
        .filter(|w| generation.is_none_or(|g| w["generation"] == g))
        .map(|w| w["pid"].as_i64().unwrap() as i32)
        .collect()
}

#[tokio::test]
async fn a_pool_serves_with_distinct_pids_and_replaces_a_killed_worker() {
    let app = App::new();
    let snap = compile(&app.unix("count = 2\nstop_timeout = \"5s\""), None);
    let registry = Registry::new();
    registry.apply(&snap.upstreams);
    let up = &snap.upstreams["app"];
    let first = members(up, 2).await;
    let a = get(&first[0]).await;
    let b = get(&first[1]).await;
    assert_ne!(a.pid, b.pid);
    let mut ids = [a.worker.clone(), b.worker.clone()];
    ids.sort();
    assert_eq!(ids, ["0", "1"], "MOONGATE_WORKER is the slot id");
    let status = status_json(&registry)["app"].clone();
    assert_eq!(status["state"], "ok");
    assert_eq!(status["count"], 2);
    assert_eq!(status["generation"], 1);
    assert_eq!(status["last_error"], Value::Null);
    let mut ready = pids(&status, "ready", Some(1));
    ready.sort();
    let mut served = vec![a.pid, b.pid];
    served.sort();
    assert_eq!(ready, served);
    for w in status["workers"].as_array().unwrap() {
        assert!(w["addr"].as_str().unwrap().starts_with("unix:"), "{w}");
        assert!(w["uptime_secs"].as_f64().unwrap() >= 0.0);
    }

    kill(Pid::from_raw(a.pid), Signal::SIGKILL).unwrap();
    let now = until("a replacement for the killed worker", || {
        let m = up.members();
        (m.addrs.len() == 2 && !m.addrs.contains(&first[0])).then(|| m.addrs.clone())
    })
    .await;
    let fresh = now.iter().find(|a| **a != first[1]).unwrap();
    let c = get(fresh).await;
    assert_ne!(c.pid, a.pid);
    assert_eq!(c.worker, a.worker, "the replacement takes the same slot");
    assert_eq!(
        get(&first[1]).await.pid,
        b.pid,
        "the other worker is untouched"
    );
    let status = status_json(&registry)["app"].clone();
    assert_eq!(status["restarts"], 1);
    assert!(
        status["last_error"].as_str().unwrap().contains("SIGKILL"),
        "{status}"
    );
    let figures = &registry.figures()["app"];
    assert_eq!((figures.restarts, figures.recycles), (1, [0, 0]));
    assert_eq!(figures.procs[1], 2, "two ready: {figures:?}");

    registry.stop_all().await;
    assert!(up.members().addrs.is_empty());
    assert!(!alive(b.pid) && !alive(c.pid));
    for addr in now {
        let PeerAddr::Unix(path) = addr else { panic!() };
        assert!(!path.exists(), "{} left behind", path.display());
    }
    assert!(registry.status().is_empty());
}

#[tokio::test]
async fn a_command_that_keeps_failing_is_reported_and_backs_off() {
    let snap = compile(
        "command = [\"sh\", \"-c\", \"echo oops >&2; exit 3\", \"{socket}\"]\ncount = 1\nrestart_backoff = \"100ms..400ms\"",
        None,
    );
    let registry = Registry::new();
    registry.apply(&snap.upstreams);
    let status = until("the pool to be failing", || {
        let s = status_json(&registry)["app"].clone();
        (s["state"] == "failing").then_some(s)
    })
    .await;
    assert_eq!(
        status["last_error"],
        "worker 0: exited with status 3 before it was ready"
    );
    let restarts = status["restarts"].as_u64().unwrap();
    assert!(restarts >= 3, "{status}");
    assert!(snap.upstreams["app"].members().peers.is_empty());
    // With the delay doubled up to 400 ms, half a second holds at most two
    // more attempts (fewer on a slow machine).
    tokio::time::sleep(Duration::from_millis(500)).await;
    let later = status_json(&registry)["app"]["restarts"].as_u64().unwrap();
    assert!(later - restarts <= 2, "{restarts} -> {later}");
    registry.stop_all().await;
}

#[tokio::test]
async fn a_missing_program_is_a_failed_start() {
    let snap = compile(
        "command = [\"moongate-no-such-program\", \"{port}\"]\ncount = 1\nrestart_backoff = \"20ms..50ms\"",
        None,
    );
    let registry = Registry::new();
    registry.apply(&snap.upstreams);
    let status = until("the pool to be failing", || {
        let s = status_json(&registry)["app"].clone();
        (s["state"] == "failing").then_some(s)
    })
    .await;
    let error = status["last_error"].as_str().unwrap();
    assert!(
        error.starts_with("worker 0: cannot start `moongate-no-such-program`"),
        "{error}"
    );
    registry.stop_all().await;
}

#[tokio::test]
async fn a_worker_takes_traffic_only_once_its_ready_path_answers() {
    let app = App::new();
    let go = app.dir.path().join("go");
    let workers = format!(
        "command = [\"python3\", \"{}\", \"--port\", \"{{port}}\"]\ncount = 1\nready = \"/healthz\"\nenv = {{ GO_FILE = \"{}\" }}",
        app.script(),
        go.display()
    );
    let snap = compile(&workers, None);
    let registry = Registry::new();
    registry.apply(&snap.upstreams);
    let up = &snap.upstreams["app"];
    // Listening (its stdout line is out) but not healthy: no traffic.
    until("the worker to listen", || {
        let s = status_json(&registry)["app"].clone();
        let w = s["workers"][0].clone();
        (w["state"] == "starting" && w["pid"].is_number()).then_some(())
    })
    .await;
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(up.members().peers.is_empty());
        assert_eq!(status_json(&registry)["app"]["state"], "starting");
    }
    std::fs::write(&go, "").unwrap();
    let addrs = members(up, 1).await;
    assert!(matches!(addrs[0], PeerAddr::Tcp(a) if a.ip().is_loopback()));
    assert_eq!(get(&addrs[0]).await.worker, "0");
    registry.stop_all().await;
}

#[tokio::test]
async fn a_worker_not_ready_in_time_is_killed_and_reported() {
    let app = App::new();
    let never = app.dir.path().join("never");
    let snap = compile(
        &app.unix(&format!(
            "count = 1\nready = \"/healthz\"\nstart_timeout = \"300ms\"\nenv = {{ GO_FILE = \"{}\" }}",
            never.display()
        )),
        None,
    );
    let registry = Registry::new();
    registry.apply(&snap.upstreams);
    let status = until("a timed-out start", || {
        let s = status_json(&registry)["app"].clone();
        s["last_error"].is_string().then_some(s)
    })
    .await;
    let error = status["last_error"].as_str().unwrap();
    assert!(
        error.starts_with("worker 0: not ready within 300ms"),
        "{error}"
    );
    registry.stop_all().await;
}

#[tokio::test]
async fn reloads_keep_resize_and_roll_the_pool() {
    let app = App::new();
    let def = |version: u32, count: u32| {
        app.unix(&format!(
            "count = {count}\nenv = {{ APP_VERSION = \"{version}\" }}\nstop_timeout = \"30s\""
        ))
    };
    let registry = Registry::new();
    let s1 = compile(&def(1, 2), None);
    registry.apply(&s1.upstreams);
    members(&s1.upstreams["app"], 2).await;
    let gen1 = pids(&status_json(&registry)["app"], "ready", Some(1));

    // The same definition: the same upstream object, nothing restarted.
    let same = compile(&def(1, 2), Some(&s1));
    assert!(Arc::ptr_eq(&s1.upstreams["app"], &same.upstreams["app"]));
    registry.apply(&same.upstreams);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(pids(&status_json(&registry)["app"], "ready", Some(1)), gen1);

    // A count change: a new upstream object that has the ready workers at
    // once; one worker is added, the others stay.
    let s2 = compile(&def(1, 3), Some(&same));
    let up2 = s2.upstreams["app"].clone();
    assert!(up2.members().peers.is_empty());
    registry.apply(&s2.upstreams);
    assert_eq!(up2.members().peers.len(), 2, "attached with the ready ones");
    members(&up2, 3).await;
    let status = status_json(&registry)["app"].clone();
    assert_eq!(status["generation"], 1);
    let three = pids(&status, "ready", Some(1));
    assert!(gen1.iter().all(|p| three.contains(p)), "{gen1:?} {three:?}");

    // A changed env: a rolling restart. An old worker with a request in
    // flight drains until it finishes.
    let busy = up2.members().peers[0].clone();
    let in_flight = busy.begin();
    let s3 = compile(&def(2, 3), Some(&s2));
    let up3 = s3.upstreams["app"].clone();
    registry.apply(&s3.upstreams);
    assert_eq!(up3.members().peers.len(), 3, "the old ones serve meanwhile");
    assert_eq!(status_json(&registry)["app"]["generation"], 2);
    let rolled = until("generation 2 serving alone", || {
        let m = up3.members();
        let s = status_json(&registry)["app"].clone();
        (m.addrs.len() == 3 && pids(&s, "ready", Some(1)).is_empty()).then(|| m.addrs.clone())
    })
    .await;
    for addr in &rolled {
        assert_eq!(get(addr).await.version, "2");
    }
    let draining = until("the busy worker draining", || {
        let s = status_json(&registry)["app"].clone();
        let d = pids(&s, "draining", Some(1));
        (!d.is_empty()).then_some(d)
    })
    .await;
    assert_eq!(draining.len(), 1);
    assert!(alive(draining[0]));
    drop(in_flight);
    until("generation 1 gone", || {
        three.iter().all(|p| !alive(*p)).then_some(())
    })
    .await;
    assert_eq!(status_json(&registry)["app"]["state"], "ok");

    // The admin restart: generation 3, same definition.
    assert_eq!(registry.restart("app"), Some(3));
    assert_eq!(registry.restart("nope"), None);
    until("generation 3 serving alone", || {
        let s = status_json(&registry)["app"].clone();
        (pids(&s, "ready", Some(3)).len() == 3 && s["workers"].as_array()?.len() == 3).then_some(())
    })
    .await;

    // The upstream gone: the pool stops.
    let empty = snapshot::compile(
        config::load_str("t.toml", "[server]\nlisten = [\"127.0.0.1:0\"]\n").unwrap(),
        Some(&s3),
        4,
    )
    .unwrap();
    let last = pids(&status_json(&registry)["app"], "ready", None);
    registry.apply(&empty.upstreams);
    assert!(up3.members().peers.is_empty());
    assert!(registry.names().is_empty());
    until("the pool's workers gone", || {
        last.iter().all(|p| !alive(*p)).then_some(())
    })
    .await;
    registry.stop_all().await;
}

#[tokio::test]
async fn a_worker_ignoring_sigterm_is_killed_with_what_it_forked() {
    let app = App::new();
    let forked = app.dir.path().join("forked.pid");
    // The shell starts a `sleep` in the worker's process group, then becomes
    // the app; both ignore SIGTERM.
    let snap = compile(
        &format!(
            "command = [\"sh\", \"-c\", \"trap '' TERM; sleep 600 & echo $! > {}; exec python3 {} --unix \\\"$0\\\"\", \"{{socket}}\"]\ncount = 1\nstop_timeout = \"300ms\"",
            forked.display(),
            app.script()
        ),
        None,
    );
    let registry = Registry::new();
    registry.apply(&snap.upstreams);
    let addrs = members(&snap.upstreams["app"], 1).await;
    let worker = get(&addrs[0]).await.pid;
    let sleeper: i32 = std::fs::read_to_string(&forked)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(alive(worker) && alive(sleeper));
    registry.stop_all().await;
    assert!(!alive(worker), "SIGKILL after stop_timeout");
    until("the forked sleep to be gone", || {
        (!alive(sleeper)).then_some(())
    })
    .await;
}

mod recycle;

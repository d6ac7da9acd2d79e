//! Managed app workers (SPEC §3 `[upstream.NAME.workers]`, §5, §7; issue 6):
//! moongate spawns python3 processes from tests/fixtures/workers/app.py,
//! gives each its own socket, routes to them only once ready, replaces the
//! dead with backoff, recycles after `max_requests`, rolls the pool on a
//! changed definition (or `POST /workers/{pool}/restart`) without a failed
//! request, logs their output tagged with pool and worker, and leaves no
//! worker behind when it stops or is killed. State is read from the admin
//! `/status` document, polled with a deadline.
//!
//! This file holds the harness (configs, a [`Gate`] that cleans up after
//! moongate, a concurrent GET [`Load`]); the tests are in `lifecycle`
//! (start, readiness, logs, stop), `supervise` (kill -9, crash loops,
//! `max_requests`) and `roll` (reloads and restarts).

use std::collections::{BTreeMap, BTreeSet};
use std::ops::{Deref, DerefMut};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;

use crate::support::{Moongate, client, gone, wait_gone};

mod lifecycle;
mod roll;
mod supervise;

/// The fixture app's directory (the pools' `dir`).
const APP_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/workers");

/// A server with an admin listener, then `body` (pools from [`pool`]).
pub(crate) fn conf(body: &str) -> String {
    format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\nworkers = 2\naccess_log = \"off\"\n\n\
         [admin]\nlisten = \"127.0.0.1:0\"\n\n{body}"
    )
}

/// `[upstream.NAME]` run as `count` fixture workers on unix sockets, ready
/// on /healthz, quick backoff and stop, with `extra` lines in the workers
/// table; routed from `/NAME/`.
pub(crate) fn pool(name: &str, count: usize, extra: &str) -> String {
    pool_on(
        name,
        "--unix",
        "{socket}",
        count,
        &format!("ready = \"/healthz\"\n{extra}"),
    )
}

/// Like [`pool`] but listening with `flag place` and no `ready` of its own
/// (`extra` may set its own `restart_backoff`).
fn pool_on(name: &str, flag: &str, place: &str, count: usize, extra: &str) -> String {
    let backoff = if extra.contains("restart_backoff") {
        ""
    } else {
        "restart_backoff = \"50ms..1s\""
    };
    format!(
        r#"[upstream.{name}]
balance = "round_robin"

[upstream.{name}.workers]
command = ["python3", "app.py", "{flag}", "{place}"]
dir = "{APP_DIR}"
count = {count}
{backoff}
start_timeout = "10s"
stop_timeout = "2s"
{extra}

[[route]]
path = "/{name}/"
upstream = "{name}"

"#
    )
}

/// A running moongate that remembers every worker pid it reported, and on
/// drop kills moongate, then any of those still running the fixture (so a
/// supervisor bug cannot leave python processes on the machine).
pub(crate) struct Gate {
    mg: Option<Moongate>,
    seen: Mutex<BTreeSet<i32>>,
}

impl Gate {
    pub(crate) fn start(body: &str) -> Gate {
        let mg = tokio::task::block_in_place(|| Moongate::start(&conf(body)));
        Gate {
            mg: Some(mg),
            seen: Mutex::new(BTreeSet::new()),
        }
    }

    /// The admin `/status` document.
    async fn status(&self) -> Value {
        let st = self.mg.as_ref().expect("moongate").status().await;
        let mut seen = self.seen.lock().unwrap();
        for pool in st["workers"].as_object().into_iter().flatten() {
            for w in pool.1["workers"].as_array().into_iter().flatten() {
                seen.extend(w["pid"].as_i64().map(|p| p as i32));
            }
        }
        st
    }

    /// `/status` → `workers.NAME`.
    pub(crate) async fn pool(&self, name: &str) -> Value {
        self.status().await["workers"][name].clone()
    }

    /// Polls `workers.NAME` every 50 ms until `pred` holds; returns it.
    async fn wait_pool(
        &self,
        name: &str,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let p = self.pool(name).await;
            if pred(&p) {
                return p;
            }
            assert!(
                Instant::now() < deadline,
                "pool {name}: not {what} within {timeout:?}; last /status workers.{name}:\n{p:#}\nlog:\n{}",
                self.log_lines().join("\n")
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until pool `name` is "ok" with `count` workers, all ready.
    pub(crate) async fn wait_settled(&self, name: &str, count: usize) -> Value {
        let what = format!("ok with {count} ready workers");
        self.wait_pool(name, &what, Duration::from_secs(20), |p| settled(p, count))
            .await
    }
}

impl Deref for Gate {
    type Target = Moongate;
    fn deref(&self) -> &Moongate {
        self.mg.as_ref().expect("moongate")
    }
}

impl DerefMut for Gate {
    fn deref_mut(&mut self) -> &mut Moongate {
        self.mg.as_mut().expect("moongate")
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        drop(self.mg.take());
        for &pid in self.seen.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            if !gone(pid) && String::from_utf8_lossy(&cmdline).contains("app.py") {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
        }
    }
}

/// Whether a pool document says "ok" with `count` workers, all ready.
fn settled(p: &Value, count: usize) -> bool {
    let workers = p["workers"].as_array().map_or(&[][..], |w| w.as_slice());
    p["state"] == "ok" && workers.len() == count && workers.iter().all(|w| w["state"] == "ready")
}

/// The pids of a pool's workers (any state).
pub(crate) fn pids(p: &Value) -> BTreeSet<i32> {
    p["workers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|w| w["pid"].as_i64())
        .map(|p| p as i32)
        .collect()
}

/// What the fixture app answered.
#[derive(Debug, Clone)]
pub(crate) struct Answer {
    pid: i32,
    version: String,
    worker: String,
    ready: bool,
}

/// A GET through moongate: the app's answer, or why it is not a 200.
async fn get_app(http: &reqwest::Client, url: &str) -> Result<Answer, String> {
    let resp = http.get(url).send().await.map_err(|e| format!("{e:?}"))?;
    let status = resp.status().as_u16();
    let text = resp.text().await.map_err(|e| format!("body: {e:?}"))?;
    if status != 200 {
        return Err(format!("{status} {text}"));
    }
    let v: Value = serde_json::from_str(&text).map_err(|e| format!("{e}: {text}"))?;
    Ok(Answer {
        pid: v["pid"].as_i64().unwrap_or(-1) as i32,
        version: v["version"].as_str().unwrap_or("").to_string(),
        worker: v["worker"].as_str().unwrap_or("").to_string(),
        ready: v["ready"].as_bool().unwrap_or(false),
    })
}

/// `n` GETs in a row; panics on any failure.
pub(crate) async fn get_n(url: &str, n: usize) -> Vec<Answer> {
    let http = client();
    let mut out = Vec::new();
    for i in 0..n {
        match get_app(&http, url).await {
            Ok(a) => out.push(a),
            Err(e) => panic!("GET {url} #{i} failed: {e}"),
        }
    }
    out
}

/// Concurrent clients GETting one URL in a loop until finished.
struct Load {
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<Vec<Result<Answer, String>>>>,
}

/// Everything a [`Load`] saw.
struct Report {
    answers: Vec<Answer>,
    failures: Vec<String>,
}

impl Load {
    fn start(url: String, clients: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let http = client();
        let tasks = (0..clients)
            .map(|_| {
                let (stop, http, url) = (stop.clone(), http.clone(), url.clone());
                tokio::spawn(async move {
                    let mut seen = Vec::new();
                    while !stop.load(Ordering::SeqCst) {
                        seen.push(get_app(&http, &url).await);
                    }
                    seen
                })
            })
            .collect();
        Load { stop, tasks }
    }

    async fn finish(self) -> Report {
        self.stop.store(true, Ordering::SeqCst);
        let mut report = Report {
            answers: Vec::new(),
            failures: Vec::new(),
        };
        for t in self.tasks {
            for r in t.await.expect("load task") {
                match r {
                    Ok(a) => report.answers.push(a),
                    Err(e) => report.failures.push(e),
                }
            }
        }
        report
    }
}

impl Report {
    /// Zero failures, and at least `min` answers (the load really ran).
    fn assert_clean(&self, min: usize) {
        assert!(
            self.failures.is_empty(),
            "{} of {} requests failed; first ones: {:#?}",
            self.failures.len(),
            self.failures.len() + self.answers.len(),
            &self.failures[..self.failures.len().min(10)]
        );
        assert!(
            self.answers.len() >= min,
            "the load made only {} requests (want at least {min})",
            self.answers.len()
        );
    }
}

/// Whether `line` carries the field `key` with `value` (`k=v` or `k="v"`).
fn tagged(line: &str, key: &str, value: &str) -> bool {
    let (bare, quoted) = (format!("{key}={value}"), format!("{key}=\"{value}\""));
    line.split_whitespace().any(|t| t == bare || t == quoted)
}

/// Requests answered per worker pid.
fn per_pid(answers: &[Answer]) -> BTreeMap<i32, usize> {
    let mut counts = BTreeMap::new();
    for a in answers {
        *counts.entry(a.pid).or_default() += 1;
    }
    counts
}

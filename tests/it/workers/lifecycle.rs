//! A pool's life: N workers with N pids on sockets or ports, no traffic
//! before ready, output in the log tagged with pool and worker, and no
//! worker left when moongate stops (SIGTERM) or is killed (SIGKILL).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use super::{Gate, client, get_app, get_n, gone, pids, pool, pool_on, tagged, wait_gone};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_of_n_serves_with_n_distinct_pids() {
    let gate = Gate::start(&format!(
        "{}{}",
        pool("app", 3, "env = { APP_VERSION = \"1\" }"),
        pool_on("tcp", "--port", "{port}", 2, "")
    ));
    let app = gate.wait_settled("app", 3).await;
    let tcp = gate.wait_settled("tcp", 2).await;

    let answers = get_n(&gate.url("/app/"), 30).await;
    let served: BTreeSet<i32> = answers.iter().map(|a| a.pid).collect();
    assert_eq!(
        served,
        pids(&app),
        "round robin reaches every worker: {app:#}"
    );
    assert_eq!(served.len(), 3);
    assert!(
        answers.iter().all(|a| a.version == "1"),
        "env reaches the app"
    );
    // MOONGATE_WORKER is the slot id /status shows for that pid.
    for w in app["workers"].as_array().expect("workers") {
        let pid = w["pid"].as_i64().expect("pid") as i32;
        let a = answers.iter().find(|a| a.pid == pid).expect("served");
        assert_eq!(a.worker, w["id"].to_string(), "{w}");
        assert_eq!(w["generation"], 1, "{w}");
        assert_eq!(w["restarts"], 0, "{w}");
        assert!(
            w["addr"].as_str().is_some_and(|a| a.starts_with("unix:")),
            "{w}"
        );
    }
    let ids: BTreeSet<String> = answers.iter().map(|a| a.worker.clone()).collect();
    assert_eq!(ids.len(), 3, "three slot ids: {ids:?}");
    assert_eq!(app["count"], 3);
    assert_eq!(app["restarts"], 0);
    assert_eq!(app["command"][0], "python3");
    assert!(app["last_error"].is_null(), "{app:#}");

    // {port} workers listen on loopback ports.
    let served: BTreeSet<i32> = get_n(&gate.url("/tcp/x"), 10)
        .await
        .iter()
        .map(|a| a.pid)
        .collect();
    assert_eq!(served, pids(&tcp));
    assert_eq!(served.len(), 2);
    for w in tcp["workers"].as_array().expect("workers") {
        assert!(
            w["addr"].as_str().is_some_and(|a| a.contains("127.0.0.1:")),
            "{w}"
        );
    }
    // /status counts what each worker served.
    let app = gate.pool("app").await;
    let counted: u64 = app["workers"]
        .as_array()
        .expect("workers")
        .iter()
        .map(|w| w["requests"].as_u64().expect("requests"))
        .sum();
    assert!(counted >= 30, "requests per worker add up: {app:#}");
    for pid in pids(&app).into_iter().chain(pids(&tcp)) {
        assert!(!gone(pid), "worker {pid} is not running");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_starting_workers_get_no_traffic_before_ready() {
    // "ready" pool: the socket comes after 0.3 s, /healthz says 200 after
    // 1.5 s; "plain" pool: no `ready`, the socket comes after 1 s.
    let gate = Gate::start(&format!(
        "{}{}",
        pool(
            "ready",
            2,
            "env = { START_DELAY = \"0.3\", READY_DELAY = \"1.5\" }"
        ),
        pool_on(
            "plain",
            "--unix",
            "{socket}",
            2,
            "env = { START_DELAY = \"1\" }"
        )
    ));
    let http = client();
    let (mut refused, mut served) = (0, BTreeMap::<&str, usize>::new());
    let deadline = Instant::now() + Duration::from_secs(20);
    while served.len() < 2 || served.values().any(|&n| n < 10) {
        assert!(
            Instant::now() < deadline,
            "the pools never served; /status: {:#}",
            gate.status().await["workers"]
        );
        for name in ["ready", "plain"] {
            match get_app(&http, &gate.url(&format!("/{name}/"))).await {
                Ok(a) => {
                    assert!(
                        a.ready,
                        "pool {name}: worker {a:?} got traffic before /healthz said ready"
                    );
                    *served.entry(name).or_default() += 1;
                }
                Err(e) => {
                    assert!(
                        e.starts_with("502") || e.starts_with("503"),
                        "pool {name} before ready: want 502/503, got {e}"
                    );
                    refused += 1;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!("{refused} requests answered 502/503 while the pools started");
    gate.wait_settled("ready", 2).await;
    gate.wait_settled("plain", 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_output_is_logged_with_pool_and_worker() {
    let gate = Gate::start(&pool("app", 2, ""));
    let p = gate.wait_settled("app", 2).await;
    for w in p["workers"].as_array().expect("workers") {
        let (id, pid) = (w["id"].to_string(), w["pid"].to_string());
        // The app prints its own pid and MOONGATE_WORKER: the tags must agree.
        let out_line = tokio::task::block_in_place(|| {
            gate.wait_log(&format!("pid {pid} worker {id}"), Duration::from_secs(5))
        });
        assert!(out_line.contains("app listening on unix:"), "{out_line}");
        for (k, v) in [
            ("pool", "app"),
            ("worker", id.as_str()),
            ("pid", pid.as_str()),
            ("stream", "stdout"),
        ] {
            assert!(
                tagged(&out_line, k, v),
                "stdout line lacks {k}={v}: {out_line}"
            );
        }
        let err_line = tokio::task::block_in_place(|| {
            let hello = format!("app worker {id} says hello on stderr");
            gate.wait_log(&hello, Duration::from_secs(5))
        });
        for (k, v) in [
            ("pool", "app"),
            ("worker", id.as_str()),
            ("stream", "stderr"),
        ] {
            assert!(
                tagged(&err_line, k, v),
                "stderr line lacks {k}={v}: {err_line}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_of_moongate_stops_every_worker() {
    // "stubborn" ignores SIGTERM: it must get SIGKILL after stop_timeout.
    let mut gate = Gate::start(&format!(
        "{}{}",
        pool("app", 2, ""),
        pool("stubborn", 1, "env = { IGNORE_SIGTERM = \"1\" }")
    ));
    let mut workers = pids(&gate.wait_settled("app", 2).await);
    workers.extend(pids(&gate.wait_settled("stubborn", 1).await));
    assert_eq!(workers.len(), 3);

    gate.signal(Signal::SIGTERM);
    let code = tokio::task::block_in_place(|| gate.wait_exit(Duration::from_secs(15)));
    assert_eq!(code, Some(0), "moongate exits 0 on SIGTERM");
    wait_gone(&workers, Duration::from_secs(3)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_of_moongate_leaves_no_worker() {
    let mut gate = Gate::start(&pool("app", 3, ""));
    let workers = pids(&gate.wait_settled("app", 3).await);
    assert_eq!(workers.len(), 3);

    let moongate = gate.pid();
    gate.signal(Signal::SIGKILL);
    tokio::task::block_in_place(|| gate.wait_exit(Duration::from_secs(5)));
    assert!(gone(moongate), "moongate survived SIGKILL");
    wait_gone(&workers, Duration::from_secs(5)).await;
}

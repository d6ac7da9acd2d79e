//! Supervision: a killed worker is replaced under load without a failed
//! request, a crash-looping command backs off and is reported while other
//! routes serve, and `max_requests` recycles workers.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::{Gate, Load, client, get_app, get_n, per_pid, pids, pool, pool_on, settled, wait_gone};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_a_worker_under_load_fails_no_request() {
    let gate = Gate::start(&pool("app", 3, ""));
    let before = gate.wait_settled("app", 3).await;
    let load = Load::start(gate.url("/app/slow?ms=20"), 8);
    tokio::time::sleep(Duration::from_millis(500)).await;

    let victim = *pids(&before).iter().next().expect("a worker");
    kill(Pid::from_raw(victim), Signal::SIGKILL).expect("kill -9 a worker");
    let after = gate
        .wait_pool(
            "app",
            "replacing the killed worker",
            Duration::from_secs(10),
            |p| settled(p, 3) && !pids(p).contains(&victim),
        )
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let report = load.finish().await;
    report.assert_clean(100);

    let old: BTreeSet<i32> = pids(&before);
    let new: Vec<i32> = pids(&after).difference(&old).copied().collect();
    assert_eq!(new.len(), 1, "exactly one replacement: {after:#}");
    assert_eq!(
        pids(&after).intersection(&old).count(),
        2,
        "the others were left alone: {after:#}"
    );
    assert!(after["restarts"].as_u64() >= Some(1), "{after:#}");
    assert!(
        report.answers.iter().any(|a| a.pid == new[0]) || {
            let a = get_n(&gate.url("/app/"), 6).await;
            a.iter().any(|a| a.pid == new[0])
        },
        "the replacement takes traffic"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_looping_command_backs_off_and_is_reported() {
    let gate = Gate::start(&format!(
        "{}{}",
        pool("good", 1, ""),
        pool_on(
            "bad",
            "--unix",
            "{socket}",
            2,
            "env = { CRASH = \"1\" }\nrestart_backoff = \"100ms..1s\""
        )
    ));
    gate.wait_settled("good", 1).await;
    let load = Load::start(gate.url("/good/"), 4);
    let bad = gate
        .wait_pool("bad", "failing", Duration::from_secs(15), |p| {
            p["state"] == "failing"
        })
        .await;
    let error = bad["last_error"].as_str().unwrap_or("");
    assert!(
        error.contains('3'),
        "last_error names exit status 3: {bad:#}"
    );

    // Over 4 s the two workers are started again a few times, not in a
    // tight loop (python exits in ~50 ms: ~160 starts without backoff).
    let crashes = |gate: &Gate| {
        gate.log_lines()
            .iter()
            .filter(|l| l.contains("crashing on purpose"))
            .count()
    };
    let (first, restarts) = (crashes(&gate), bad["restarts"].as_u64().unwrap_or(0));
    let http = client();
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(4) {
        let e = get_app(&http, &gate.url("/bad/"))
            .await
            .expect_err("no worker");
        assert!(
            e.starts_with("502") || e.starts_with("503"),
            "a failing pool's route: want 502/503, got {e}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let again = crashes(&gate) - first;
    assert!(
        (1..=16).contains(&again),
        "{again} starts of the crashing command in 4 s with backoff 100ms..1s (want 1..=16)"
    );
    let bad = gate.pool("bad").await;
    assert!(
        bad["restarts"].as_u64().unwrap_or(0) > restarts,
        "restarts grow: {bad:#}"
    );
    assert_eq!(bad["state"], "failing", "{bad:#}");
    // The failure is in the log (beyond the app's own stderr lines).
    let reported = gate.log_lines().iter().any(|l| {
        (l.contains("WARN") || l.contains("ERROR"))
            && l.contains("bad")
            && !l.contains("crashing on purpose")
    });
    assert!(
        reported,
        "no WARN/ERROR line about pool bad; log:\n{}",
        gate.log_lines().join("\n")
    );
    // The rest of the server kept serving.
    load.finish().await.assert_clean(50);
    assert_eq!(gate.pool("good").await["state"], "ok");
}

/// A worker is replaced because of the number of requests it served (no
/// request is sent while the replacement happens), not before; under load
/// workers keep being recycled without a failed request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_requests_recycles_workers_without_a_failed_request() {
    // Limits of 10 or 11 (10% jitter).
    let gate = Gate::start(&pool("app", 2, "max_requests = 10"));
    let first = pids(&gate.wait_settled("app", 2).await);
    let url = gate.url("/app/");

    // 4 requests each: below the limit, nothing is recycled.
    let mut answers = get_n(&url, 8).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let p = gate.wait_settled("app", 2).await;
    assert_eq!(pids(&p), first, "recycled below max_requests: {p:#}");

    // 24 in all: both reach their limit (10 or 11 each; the requests past
    // both limits wait for a successor); then no more requests.
    answers.extend(get_n(&url, 16).await);
    let p = gate
        .wait_pool("app", "recycled", Duration::from_secs(15), |p| {
            settled(p, 2) && pids(p).is_disjoint(&first)
        })
        .await;
    wait_gone(&first, Duration::from_secs(5)).await;
    assert_eq!(p["restarts"], 0, "recycling is not a failure: {p:#}");
    let counts = per_pid(&answers);
    assert_eq!(counts.values().sum::<usize>(), 24, "{counts:?}");
    assert!(
        first
            .iter()
            .all(|pid| counts.get(pid).is_some_and(|n| (10..=11).contains(n))),
        "{first:?} each served its limit: {counts:?}"
    );

    // Under load: both recycled again, nothing fails, none early.
    let second = pids(&p);
    let load = Load::start(gate.url("/app/slow?ms=5"), 4);
    gate.wait_pool("app", "recycled under load", Duration::from_secs(20), |p| {
        pids(p).is_disjoint(&second)
    })
    .await;
    // Requests that found both workers spent waited for a successor; the
    // load goes on a little on the new ones.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let report = load.finish().await;
    report.assert_clean(40);
    let p = gate.wait_settled("app", 2).await;
    let current = pids(&p);
    let counts = per_pid(&report.answers);
    assert!(
        second.iter().all(|pid| counts.contains_key(pid)),
        "{second:?} served under load: {counts:?}"
    );
    // A successor may have served the last requests of the burst above.
    answers.extend(report.answers);
    let counts = per_pid(&answers);
    let retired: BTreeMap<_, _> = counts
        .iter()
        .filter(|(pid, _)| !current.contains(pid))
        .collect();
    assert!(
        retired.values().all(|&&n| n >= 10),
        "a worker was recycled before max_requests: {counts:?}"
    );
    assert_eq!(p["restarts"], 0, "{p:#}");
    wait_gone(&second, Duration::from_secs(5)).await;
}

/// `max_requests` is exact: the request that takes a worker to its limit
/// (10, or 11 with the jitter drawn when it started) is its last. When
/// every worker is spent, requests wait for a successor (at most
/// `connect_timeout`) instead of going past the limit. 50 requests in a
/// row, back to back (a few ms each, while a successor takes ~250 ms to be
/// ready): at least four workers answer, none fails, and every worker that
/// left served exactly its limit. Fails with a spent worker serving on
/// (two or three workers, the last with 30-odd requests).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_requests_is_exact() {
    let gate = Gate::start(&pool("app", 2, "max_requests = 10"));
    gate.wait_settled("app", 2).await;
    let answers = get_n(&gate.url("/app/"), 50).await;
    let counts = per_pid(&answers);
    let order: Vec<i32> = answers.iter().map(|a| a.pid).collect();
    assert!(
        counts.len() >= 4,
        "50 requests met only {} workers: {counts:?}\n{order:?}",
        counts.len()
    );
    let p = gate.wait_settled("app", 2).await;
    let current = pids(&p);
    for (pid, n) in counts.iter().filter(|(pid, _)| !current.contains(pid)) {
        assert!(
            (10..=11).contains(n),
            "worker {pid} left after {n} requests: {counts:?}\n{order:?}"
        );
    }
    assert!(counts.values().all(|&n| n <= 11), "{counts:?}\n{order:?}");
    assert_eq!(p["restarts"], 0, "recycling is not a failure: {p:#}");
}

/// A worker that reaches `max_requests` while another one takes traffic
/// stops taking requests then (it drains while its successor starts), as a
/// gunicorn worker does; only the last worker taking traffic serves on
/// until its successor is ready. 50 requests in a row, 30 ms each (time for
/// successors to start): the first worker to reach its limit (10 or 11)
/// served exactly that many, and at least four workers answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_at_max_requests_leaves_the_pool_while_another_serves() {
    let gate = Gate::start(&pool("app", 2, "max_requests = 10"));
    let first = pids(&gate.wait_settled("app", 2).await);
    let url = gate.url("/app/slow?ms=30");
    let answers = get_n(&url, 50).await;
    let counts = per_pid(&answers);
    let fewest = first
        .iter()
        .map(|pid| counts.get(pid).copied().unwrap_or(0))
        .min()
        .unwrap_or(0);
    let recycling: Vec<String> = gate
        .log_lines()
        .into_iter()
        .filter(|l| l.contains("recycl") || l.contains("ready"))
        .collect();
    assert!(
        (10..=11).contains(&fewest),
        "the first worker to reach its limit served {fewest} requests: {counts:?}\n{recycling:#?}"
    );
    assert!(
        counts.len() >= 4,
        "50 requests met only {} workers: {counts:?}\n{recycling:#?}",
        counts.len()
    );
    let p = gate.wait_settled("app", 2).await;
    assert_eq!(p["restarts"], 0, "recycling is not a failure: {p:#}");
}

//! Reloads and restarts: a changed env rolls the pool under load, a count
//! change only adds or removes workers, an unchanged reload leaves them
//! alone, and `POST /workers/{pool}/restart` rolls the pool.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{Answer, Gate, Load, client, conf, get_n, pids, pool, settled, wait_gone};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_env_rolls_the_pool_under_load() {
    let version = |v: &str| {
        pool(
            "app",
            3,
            &format!("env = {{ APP_VERSION = \"{v}\", READY_DELAY = \"0.5\" }}"),
        )
    };
    let gate = Gate::start(&version("1"));
    let before = gate.wait_settled("app", 3).await;
    let load = Load::start(gate.url("/app/slow?ms=10"), 8);
    tokio::time::sleep(Duration::from_millis(300)).await;

    gate.write_conf("00-test.toml", &conf(&version("2")));
    let old = pids(&before);
    let after = gate
        .wait_pool(
            "app",
            "rolled to generation 2",
            Duration::from_secs(20),
            |p| {
                settled(p, 3)
                    && p["workers"]
                        .as_array()
                        .is_some_and(|w| w.iter().all(|w| w["generation"] == 2))
            },
        )
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let report = load.finish().await;
    report.assert_clean(100);

    assert!(
        pids(&after).is_disjoint(&old),
        "every worker replaced: {after:#}"
    );
    let early: Vec<&Answer> = report
        .answers
        .iter()
        .filter(|a| a.version == "2" && !a.ready)
        .collect();
    assert!(
        early.is_empty(),
        "new workers served before ready: {early:?}"
    );
    assert!(report.answers.iter().any(|a| a.version == "1"));
    assert!(report.answers.iter().any(|a| a.version == "2"));
    let now = get_n(&gate.url("/app/"), 9).await;
    assert!(
        now.iter()
            .all(|a| a.version == "2" && pids(&after).contains(&a.pid)),
        "after the roll only new workers serve: {now:?}"
    );
    assert_eq!(after["restarts"], 0, "{after:#}");
    wait_gone(&old, Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_count_change_adds_and_removes_workers_only() {
    let gate = Gate::start(&pool("app", 2, ""));
    let two = pids(&gate.wait_settled("app", 2).await);

    gate.write_conf("00-test.toml", &conf(&pool("app", 3, "")));
    let three = gate.wait_settled("app", 3).await;
    assert!(
        two.is_subset(&pids(&three)),
        "the two kept their pids: {two:?} {three:#}"
    );
    assert_eq!(three["count"], 3);

    gate.write_conf("00-test.toml", &conf(&pool("app", 1, "")));
    let one = gate.wait_settled("app", 1).await;
    assert!(
        pids(&one).is_subset(&pids(&three)),
        "the last one is one of the three: {one:#}"
    );
    let removed: BTreeSet<i32> = pids(&three).difference(&pids(&one)).copied().collect();
    wait_gone(&removed, Duration::from_secs(5)).await;
    let served: BTreeSet<i32> = get_n(&gate.url("/app/"), 4)
        .await
        .iter()
        .map(|a| a.pid)
        .collect();
    assert_eq!(served, pids(&one));
    assert_eq!(one["restarts"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unchanged_reload_leaves_workers_alone() {
    let body = pool("app", 2, "env = { APP_VERSION = \"1\" }");
    let gate = Gate::start(&body);
    let before = pids(&gate.wait_settled("app", 2).await);

    // POST /reload of the same files, then an edit elsewhere in the config.
    let resp = client()
        .post(gate.admin_url("/reload"))
        .send()
        .await
        .expect("POST /reload");
    assert_eq!(resp.status(), 200);
    gate.write_conf(
        "00-test.toml",
        &conf(&format!(
            "{body}\n[[route]]\npath_exact = \"/other\"\nupstream = \"app\"\n"
        )),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while gate.status().await["generation"].as_u64() < Some(3) {
        assert!(Instant::now() < deadline, "the edit was not reloaded");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(get_n(&gate.url("/other"), 1).await[0].version, "1");
    // Still the same two a little later (nothing rolls in the background).
    tokio::time::sleep(Duration::from_secs(1)).await;
    let p = gate.wait_settled("app", 2).await;
    assert_eq!(pids(&p), before, "{p:#}");
    assert!(
        p["workers"]
            .as_array()
            .expect("workers")
            .iter()
            .all(|w| w["generation"] == 1),
        "{p:#}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_workers_restart_rolls_the_pool() {
    let gate = Gate::start(&pool("app", 2, ""));
    let before = pids(&gate.wait_settled("app", 2).await);
    let load = Load::start(gate.url("/app/"), 8);
    tokio::time::sleep(Duration::from_millis(300)).await;

    let http = client();
    let resp = http
        .post(gate.admin_url("/workers/app/restart"))
        .send()
        .await
        .expect("POST restart");
    assert_eq!(resp.status(), 202);
    let after = gate
        .wait_pool("app", "restarted", Duration::from_secs(20), |p| {
            settled(p, 2)
                && p["workers"]
                    .as_array()
                    .is_some_and(|w| w.iter().all(|w| w["generation"] == 2))
        })
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    load.finish().await.assert_clean(100);
    assert!(pids(&after).is_disjoint(&before), "{after:#}");
    wait_gone(&before, Duration::from_secs(5)).await;

    let resp = http
        .post(gate.admin_url("/workers/nope/restart"))
        .send()
        .await
        .expect("POST restart of an unknown pool");
    assert_eq!(resp.status(), 404);
    let body: Value = serde_json::from_str(&resp.text().await.expect("body")).expect("JSON error");
    assert!(body.get("error").is_some(), "{body}");
}

//! A binary upgrade with a managed worker pool: the new process starts its
//! own pool and takes traffic only once it is ready; the old one stops its
//! pool after draining.

use std::collections::BTreeSet;
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::{Ask, Load, Pids, conf_dir, status, upgrade};
use crate::support::{Moongate, client, wait_gone};

/// The fixture app's directory.
const APP_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/workers");

/// Two fixture workers that answer `/healthz` only a second after they
/// start (so a new pool is not ready at once), routed from `/app/`.
fn pool() -> String {
    format!(
        r#"[upstream.app]
balance = "round_robin"

[upstream.app.workers]
command = ["python3", "app.py", "--unix", "{{socket}}"]
dir = "{APP_DIR}"
count = 2
ready = "/healthz"
env = {{ READY_DELAY = "1" }}
start_timeout = "10s"
stop_timeout = "2s"

[[route]]
path = "/app/"
upstream = "app"
"#
    )
}

/// The pids of the pool's ready workers, once all `count` are ready.
async fn ready_pool(mg: &Moongate) -> BTreeSet<i32> {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let st = status(mg).await;
        let workers = st["workers"]["app"]["workers"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let ready: BTreeSet<i32> = workers
            .iter()
            .filter(|w| w["state"] == "ready")
            .filter_map(|w| w["pid"].as_i64())
            .map(|p| p as i32)
            .collect();
        if ready.len() == 2 {
            return ready;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the pool never had 2 ready workers: {}",
            st["workers"]
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_new_process_serves_with_its_own_pool() {
    let (dir, pid_file) = conf_dir(&pool());
    let conf = dir.path().to_path_buf();
    let mg = tokio::task::block_in_place(|| Moongate::start_in(dir));
    let pids = Pids::default();
    let old = mg.pid();
    pids.saw(old);
    let old_pool = ready_pool(&mg).await;

    // Every answer during the upgrade comes from a ready worker: the new
    // process's pool is not ready for a second after it starts.
    let load = Load::start(mg.url("/app/"), 4, "\"pid\"");
    load.run_for(Duration::from_millis(300)).await;
    let skip = mg.log_lines().len();
    kill(Pid::from_raw(old), Signal::SIGUSR2).expect("SIGUSR2");
    mg.wait_log_after(
        skip,
        "upgrade: the new process started",
        Duration::from_secs(10),
    );
    // One at a time: a second request while the pool starts is turned down.
    kill(Pid::from_raw(old), Signal::SIGUSR2).expect("SIGUSR2");
    mg.wait_log_after(skip, "one is already under way", Duration::from_secs(10));
    let new = upgrade(Ask::Asked, old, &conf, &pid_file, &pids).await;
    let started = mg.log_lines()[skip..]
        .iter()
        .filter(|l| l.contains("upgrade: the new process started"))
        .count();
    assert_eq!(started, 1, "one upgrade, one new process");
    load.run_for(Duration::from_millis(300)).await;
    load.finish(20).await;

    assert_eq!(status(&mg).await["pid"], new);
    let new_pool = ready_pool(&mg).await;
    assert!(
        new_pool.is_disjoint(&old_pool),
        "old {old_pool:?}, new {new_pool:?}"
    );
    wait_gone(&old_pool, Duration::from_secs(10)).await;
    let http = client();
    for _ in 0..4 {
        let body = http
            .get(mg.url("/app/"))
            .send()
            .await
            .expect("GET /app/")
            .text()
            .await
            .expect("app body");
        let doc: serde_json::Value = serde_json::from_str(&body).expect("app JSON");
        let pid = doc["pid"].as_i64().expect("app pid") as i32;
        assert!(
            new_pool.contains(&pid),
            "answered by {pid}, not in {new_pool:?}"
        );
    }
}

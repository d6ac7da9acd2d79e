//! The families of the server's own state: peer health from an active
//! check, reloads, managed worker pools (by state, restarts after a kill
//! -9, recycles at `max_requests`); the admin token, and `[admin] metrics
//! = false` (nothing counted, `/metrics` 404, on again by a reload).

use std::time::{Duration, Instant};

use super::{REQUESTS, SERVER, fresh_client, parse, scrape};
use crate::support::{Moongate, Origin, client, text};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_taken_out_by_an_active_check_is_shown_down() {
    let good = Origin::named("good").await;
    let bad = Origin::start(|req| async move {
        if req.uri().path() == "/healthz" {
            text(500, "sick")
        } else {
            text(200, "bad")
        }
    })
    .await;
    let mg = Moongate::start(&format!(
        "{SERVER}[upstream.app]\nservers = [{{ addr = \"{}\" }}, {{ addr = \"{}\" }}]\n\
         health = {{ path = \"/healthz\", interval = \"100ms\", timeout = \"1s\", fails = 1, passes = 1 }}\n\n\
         [[route]]\npath = \"/\"\nupstream = \"app\"\n",
        good.addr, bad.addr
    ));
    let bad_down = [
        ("upstream", "app"),
        ("peer", &*bad.addr.to_string()),
        ("reason", "active"),
    ];
    let deadline = Instant::now() + Duration::from_secs(5);
    let m = loop {
        let m = scrape(&mg).await;
        if m.has("moongate_upstream_peer_up", &bad_down) {
            break m;
        }
        assert!(Instant::now() < deadline, "never down:\n{}", m.text);
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(m.get("moongate_upstream_peer_up", &bad_down), 0.0);
    let good_up = [
        ("upstream", "app"),
        ("peer", &*good.addr.to_string()),
        ("reason", "up"),
    ];
    assert_eq!(m.get("moongate_upstream_peer_up", &good_up), 1.0);
    // One series per peer.
    let bad_series = m
        .samples
        .keys()
        .filter(|k| k.name == "moongate_upstream_peer_up")
        .filter(|k| k.labels["peer"] == bad.addr.to_string())
        .count();
    assert_eq!(bad_series, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_are_counted_and_a_route_counts_on_in_its_series() {
    let origin = Origin::named("app").await;
    let upstream = format!(
        "[upstream.app]\nservers = [{{ addr = \"{}\" }}]\n\n",
        origin.addr
    );
    let api = "[[route]]\nname = \"api\"\npath = \"/api/\"\nupstream = \"app\"\n";
    // conf.d holds a link to a file outside it, so rewriting the file
    // wakes no watcher: only the admin reloads below count.
    let outside = tempfile::tempdir().unwrap();
    let real = outside.path().join("real.toml");
    let write = |text: &str| {
        let tmp = outside.path().join("real.toml.tmp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, &real).unwrap();
    };
    write(&format!("{SERVER}{upstream}{api}"));
    let confd = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(&real, confd.path().join("00-test.toml")).unwrap();
    let mg = Moongate::start_in(confd);
    let http = fresh_client();
    let get = |path: &'static str| {
        let http = http.clone();
        let url = mg.url(path);
        async move {
            let resp = http.get(url).send().await.unwrap();
            assert_eq!(resp.status(), 200);
        }
    };
    get("/api/a").await;
    let before = scrape(&mg).await;
    assert_eq!(
        before.get("moongate_reloads_total", &[("result", "ok")]),
        0.0
    );

    // The route moves to another index in the new snapshot.
    let extra = "[[route]]\nname = \"first\"\npath = \"/first/\"\nupstream = \"app\"\n\n";
    write(&format!("{SERVER}{upstream}{extra}{api}"));
    let (status, body) = mg.admin_reload().await;
    assert_eq!(status, 200, "{body}");
    get("/api/b").await;
    get("/first/c").await;
    write("[[route]]\npath = 3\n");
    let (status, _) = mg.admin_reload().await;
    assert_eq!(status, 422);

    let after = scrape(&mg).await;
    assert_eq!(
        after.get("moongate_reloads_total", &[("result", "ok")]),
        1.0
    );
    assert_eq!(
        after.get("moongate_reloads_total", &[("result", "failed")]),
        1.0
    );
    assert_eq!(
        after.get("moongate_config_generation", &[]),
        before.get("moongate_config_generation", &[]) + 1.0
    );
    assert!(after.get("moongate_last_reload_timestamp_seconds", &[]) > 1.7e9);
    assert_eq!(after.get(REQUESTS, &[("route", "api")]), 2.0);
    assert_eq!(after.get(REQUESTS, &[("route", "first")]), 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_need_the_admin_token_when_one_is_set() {
    let mg = Moongate::start(
        "[server]\nlisten = [\"127.0.0.1:0\"]\nworkers = 1\naccess_log = \"off\"\n\n\
         [admin]\nlisten = \"127.0.0.1:0\"\ntoken = \"s3cret\"\n\n\
         [[route]]\npath = \"/\"\nlua.content_inline = \"ngx.say('hi')\"\n",
    );
    let http = client();
    let none = http.get(mg.admin_url("/metrics")).send().await.unwrap();
    assert_eq!(none.status(), 401);
    let ok = http
        .get(mg.admin_url("/metrics"))
        .bearer_auth("s3cret")
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    let m = parse(&ok.text().await.unwrap());
    assert_eq!(m.get("moongate_build_info", &[]), 1.0);
    let post = http
        .post(mg.admin_url("/metrics"))
        .bearer_auth("s3cret")
        .send()
        .await
        .unwrap();
    assert_eq!(post.status(), 405);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn managed_worker_pools_are_counted_by_state_with_restarts_and_recycles() {
    use crate::workers::{Gate, get_n, pids, pool};
    let gate = Gate::start(&pool("app", 2, "max_requests = 3"));
    gate.wait_settled("app", 2).await;
    let ready = [("pool", "app"), ("state", "ready")];
    let m = scrape(&gate).await;
    assert_eq!(m.get("moongate_workers", &ready), 2.0, "{}", m.text);
    assert_eq!(m.get("moongate_workers", &[("pool", "app")]), 2.0);
    assert_eq!(
        m.get("moongate_workers_restarts_total", &[("pool", "app")]),
        0.0
    );

    // Three requests each (round robin): both workers reach max_requests.
    get_n(&gate.url("/app/x"), 6).await;
    let recycled = [("pool", "app"), ("reason", "max_requests")];
    let m = until(&gate, "both workers recycled", |m| {
        m.get("moongate_workers_recycles_total", &recycled) >= 2.0
    })
    .await;
    assert_eq!(
        m.get(
            "moongate_workers_recycles_total",
            &[("pool", "app"), ("reason", "max_rss")]
        ),
        0.0
    );
    let settled = gate.wait_settled("app", 2).await;

    // A worker killed: replaced, and counted as a restart.
    let victim = *pids(&settled).iter().next().expect("a worker");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(victim),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill -9 a worker");
    let m = until(&gate, "the killed worker replaced", |m| {
        m.get("moongate_workers_restarts_total", &[("pool", "app")]) == 1.0
            && m.get("moongate_workers", &ready) == 2.0
    })
    .await;
    assert_eq!(m.get("moongate_workers_recycles_total", &recycled), 2.0);
}

/// Scrapes every 50 ms until `done` holds (at most 20 s).
async fn until(mg: &Moongate, what: &str, done: impl Fn(&super::Scrape) -> bool) -> super::Scrape {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let m = scrape(mg).await;
        if done(&m) {
            return m;
        }
        assert!(Instant::now() < deadline, "not {what}:\n{}", m.text);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_metrics_off_nothing_is_counted_and_metrics_answers_404() {
    let conf = |metrics: bool| {
        format!(
            "[server]\nlisten = [\"127.0.0.1:0\"]\nworkers = 2\naccess_log = \"off\"\n\n\
             [admin]\nlisten = \"127.0.0.1:0\"\nmetrics = {metrics}\n\n\
             [[route]]\nname = \"hi\"\npath = \"/\"\nlua.content_inline = \"ngx.say('hi')\"\n"
        )
    };
    let mg = Moongate::start(&conf(false));
    let http = fresh_client();
    for _ in 0..3 {
        let resp = http.get(mg.url("/")).send().await.unwrap();
        assert_eq!(resp.status(), 200);
    }
    let off = client().get(mg.admin_url("/metrics")).send().await.unwrap();
    assert_eq!(off.status(), 404);
    assert!(off.text().await.unwrap().contains("metrics = false"));
    // The rest of the admin API is there.
    assert_eq!(mg.status().await["generation"], 1);

    // Turned on by a reload: only what follows is counted.
    mg.write_conf("00-test.toml", &conf(true));
    let (status, body) = mg.admin_reload().await;
    assert_eq!(status, 200, "{body}");
    let resp = http.get(mg.url("/")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let m = scrape(&mg).await;
    assert_eq!(m.get(REQUESTS, &[("route", "hi")]), 1.0, "{}", m.text);
    let runs = m.get(
        "moongate_lua_phase_duration_seconds_count",
        &[("phase", "content")],
    );
    assert_eq!(runs, 1.0);
    assert_eq!(m.get("moongate_connections_accepted_total", &[]), 1.0);
}

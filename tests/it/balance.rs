//! The balancers (round robin weights, least_conn, ip_hash, hash, random2),
//! backup and `down` peers, and passive health as `/status` shows it.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::support::{Moongate, Origin, client, get_origin, text};

/// A moongate config with one upstream `app` (the given TOML body) behind
/// `path = "/"`.
fn conf(upstream: &str) -> String {
    format!(
        r#"
[server]
listen = ["127.0.0.1:0"]
workers = 2
access_log = "off"

[upstream.app]
{upstream}

[[route]]
path = "/"
upstream = "app"
"#
    )
}

/// An address on loopback where nothing listens (bound, read, released).
fn closed_port() -> std::net::SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_honours_weights_5_to_1() {
    let a = Origin::named("a").await;
    let b = Origin::named("b").await;
    let mg = Moongate::start(&conf(&format!(
        r#"balance = "round_robin"
servers = [ {{ addr = "{}", weight = 5 }}, {{ addr = "{}", weight = 1 }} ]"#,
        a.addr, b.addr
    )));
    let c = client();
    for _ in 0..300 {
        let (status, _) = get_origin(&c, &mg.url("/")).await;
        assert_eq!(status, 200);
    }
    let (ha, hb) = (a.hits(), b.hits());
    assert_eq!(ha + hb, 300);
    assert!((225..=275).contains(&ha), "a (weight 5) got {ha} of 300");
    assert!((45..=55).contains(&hb), "b (weight 1) got {hb} of 300");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_conn_prefers_the_peer_with_fewer_requests_in_flight() {
    let slow = Origin::start(|_req| async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        text(200, "slow")
    })
    .await;
    let fast = Origin::named("fast").await;
    let mg = Moongate::start(&conf(&format!(
        r#"balance = "least_conn"
servers = [ {{ addr = "{}" }}, {{ addr = "{}" }} ]"#,
        slow.addr, fast.addr
    )));
    let c = client();
    // Ten clients in a closed loop share a budget of 300 requests (and a
    // deadline). Round robin would split them evenly; least_conn sends the
    // slow peer only as many as it has in flight next to the fast one.
    let budget = Arc::new(AtomicUsize::new(300));
    let deadline = Instant::now() + Duration::from_secs(4);
    let mut tasks = Vec::new();
    for _ in 0..10 {
        let (c, url, budget) = (c.clone(), mg.url("/"), budget.clone());
        tasks.push(tokio::spawn(async move {
            while Instant::now() < deadline
                && budget
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                    .is_ok()
            {
                let resp = c.get(&url).send().await.expect("request");
                assert_eq!(resp.status(), 200);
                let _ = resp.bytes().await;
            }
        }));
    }
    for t in tasks {
        t.await.expect("client task");
    }
    let (hs, hf) = (slow.hits(), fast.hits());
    assert!(hs >= 1, "the slow peer got no request at all");
    assert!(
        hf > 3 * hs,
        "least_conn should favour the fast peer: fast {hf}, slow {hs}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ip_hash_pins_a_client_to_one_peer() {
    let origins = [
        Origin::named("a").await,
        Origin::named("b").await,
        Origin::named("c").await,
    ];
    let mg = Moongate::start(&conf(&format!(
        r#"balance = "ip_hash"
servers = [ {{ addr = "{}" }}, {{ addr = "{}" }}, {{ addr = "{}" }} ]"#,
        origins[0].addr, origins[1].addr, origins[2].addr
    )));
    let c = client();
    let mut seen = HashSet::new();
    for _ in 0..30 {
        let (status, origin) = get_origin(&c, &mg.url("/")).await;
        assert_eq!(status, 200);
        seen.insert(origin);
    }
    assert_eq!(seen.len(), 1, "127.0.0.1 reached several peers: {seen:?}");
    let hits: Vec<usize> = origins.iter().map(Origin::hits).collect();
    assert!(hits.contains(&30), "hits per origin: {hits:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hash_keeps_each_key_on_one_peer_and_spreads_keys() {
    let origins = [
        Origin::named("a").await,
        Origin::named("b").await,
        Origin::named("c").await,
    ];
    let mg = Moongate::start(&conf(&format!(
        r#"balance = "hash"
key = "$arg_k"
servers = [ {{ addr = "{}" }}, {{ addr = "{}" }}, {{ addr = "{}" }} ]"#,
        origins[0].addr, origins[1].addr, origins[2].addr
    )));
    let c = client();
    let mut by_key: HashMap<String, HashSet<String>> = HashMap::new();
    for round in 0..5 {
        for k in 0..20 {
            let key = format!("key-{k}");
            let (status, origin) = get_origin(&c, &mg.url(&format!("/x?k={key}&r={round}"))).await;
            assert_eq!(status, 200);
            by_key.entry(key).or_default().insert(origin);
        }
    }
    for (key, peers) in &by_key {
        assert_eq!(peers.len(), 1, "key {key} reached {peers:?}");
    }
    let used: HashSet<&String> = by_key.values().flatten().collect();
    assert!(used.len() > 1, "20 keys all went to {used:?}");
    // The header key works too ($http_x_key), and a different query does not
    // move a request whose key is the same.
    let mg2 = Moongate::start(&conf(&format!(
        r#"balance = "hash"
key = "$http_x_key"
servers = [ {{ addr = "{}" }}, {{ addr = "{}" }}, {{ addr = "{}" }} ]"#,
        origins[0].addr, origins[1].addr, origins[2].addr
    )));
    let mut seen = HashSet::new();
    for i in 0..10 {
        let resp = c
            .get(mg2.url(&format!("/p{i}?q={i}")))
            .header("x-key", "tenant-7")
            .send()
            .await
            .expect("request");
        assert_eq!(resp.status(), 200);
        seen.insert(resp.text().await.expect("body"));
    }
    assert_eq!(seen.len(), 1, "x-key: tenant-7 reached {seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random2_uses_both_peers() {
    let a = Origin::named("a").await;
    let b = Origin::named("b").await;
    let mg = Moongate::start(&conf(&format!(
        r#"balance = "random2"
servers = [ {{ addr = "{}" }}, {{ addr = "{}" }} ]"#,
        a.addr, b.addr
    )));
    let c = client();
    for _ in 0..100 {
        let (status, _) = get_origin(&c, &mg.url("/")).await;
        assert_eq!(status, 200);
    }
    let (ha, hb) = (a.hits(), b.hits());
    assert_eq!(ha + hb, 100);
    assert!(ha > 0 && hb > 0, "random2 split: a {ha}, b {hb}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_takes_over_only_when_primaries_are_down() {
    // Primary dead: every request is served by the backup.
    let backup = Origin::named("backup").await;
    let dead = closed_port();
    let mg = Moongate::start(&conf(&format!(
        r#"servers = [ {{ addr = "{dead}" }}, {{ addr = "{}", backup = true }} ]"#,
        backup.addr
    )));
    let c = client();
    for _ in 0..10 {
        let (status, origin) = get_origin(&c, &mg.url("/")).await;
        assert_eq!((status, origin.as_str()), (200, "backup"));
    }
    assert_eq!(backup.hits(), 10);
    drop(mg);

    // Primary alive: the backup sees nothing.
    let primary = Origin::named("primary").await;
    let backup2 = Origin::named("backup").await;
    let mg = Moongate::start(&conf(&format!(
        r#"servers = [ {{ addr = "{}" }}, {{ addr = "{}", backup = true }} ]"#,
        primary.addr, backup2.addr
    )));
    for _ in 0..20 {
        let (status, origin) = get_origin(&c, &mg.url("/")).await;
        assert_eq!((status, origin.as_str()), (200, "primary"));
    }
    assert_eq!(primary.hits(), 20);
    assert_eq!(backup2.hits(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_marked_down_gets_no_traffic() {
    let up = Origin::named("up").await;
    let down = Origin::named("down").await;
    let mg = Moongate::start(&conf(&format!(
        r#"servers = [ {{ addr = "{}", down = true }}, {{ addr = "{}" }} ]"#,
        down.addr, up.addr
    )));
    let c = client();
    for _ in 0..20 {
        let (status, origin) = get_origin(&c, &mg.url("/")).await;
        assert_eq!((status, origin.as_str()), (200, "up"));
    }
    assert_eq!(up.hits(), 20);
    assert_eq!(down.hits(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passive_health_marks_a_failing_peer_and_requests_still_succeed() {
    let good = Origin::named("good").await;
    let dead = closed_port();
    let upstream = format!(
        r#"servers = [ {{ addr = "{dead}", max_fails = 1, fail_timeout = "2s" }}, {{ addr = "{}" }} ]"#,
        good.addr
    );
    let mg = Moongate::start(&format!(
        "{}\n[admin]\nlisten = \"127.0.0.1:0\"\n",
        conf(&upstream)
    ));
    let c = client();
    // Until /status shows the mark (requests and the check are
    // milliseconds apart, well within fail_timeout; bounded retries cover a
    // slow machine where the mark lapsed before the check).
    let dead_text = dead.to_string();
    let mut last = serde_json::Value::Null;
    let mut marked = false;
    for _ in 0..5 {
        for _ in 0..10 {
            let (status, origin) = get_origin(&c, &mg.url("/")).await;
            assert_eq!((status, origin.as_str()), (200, "good"));
        }
        last = mg.status().await;
        let peers = last["upstreams"]["app"]["peers"]
            .as_array()
            .expect("peers array")
            .clone();
        let dead_peer = peers
            .iter()
            .find(|p| p["addr"] == dead_text.as_str())
            .expect("dead peer listed");
        let good_peer = peers
            .iter()
            .find(|p| p["addr"] == good.addr.to_string().as_str())
            .expect("good peer listed");
        assert_eq!(good_peer["state"], "up", "{last}");
        if dead_peer["state"] == "failed" {
            assert!(dead_peer["fails"].as_u64() >= Some(1), "{last}");
            marked = true;
            break;
        }
    }
    assert!(marked, "the dead peer was never shown as failed: {last}");
    assert!(good.hits() >= 10);
}

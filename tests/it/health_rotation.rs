//! Active health checks under traffic (issue 15's health test): a peer
//! whose `/healthz` turns 500 leaves the rotation within `interval ×
//! fails` (plus one interval) while a client loop runs, and comes back
//! after `passes` good checks, with not one failed client request, since
//! another peer is up.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::health_checks::{Peer, SERVER, peer, wait_state};
use crate::support::{Moongate, client};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_healthz_takes_a_peer_out_under_load_without_a_failed_request() {
    let (good, sick) = (Peer::start("good").await, Peer::start("sick").await);
    let interval = Duration::from_millis(300);
    let mg = Arc::new(Moongate::start(&format!(
        "{SERVER}[upstream.app]\nservers = [{{ addr = \"{}\" }}, {{ addr = \"{}\" }}]\n\
         health = {{ path = \"/healthz\", interval = \"300ms\", timeout = \"250ms\", fails = 2, passes = 2 }}\n\n\
         [[route]]\npath = \"/\"\nupstream = \"app\"\n",
        good.addr(),
        sick.addr()
    )));
    wait_state(&mg, "app", &sick.addr(), "up", Duration::from_secs(3)).await;

    // A client loop for the whole test, counting answers by peer.
    let stop = Arc::new(AtomicBool::new(false));
    let (failed, from_sick, total) = (
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
    );
    let load = {
        let (mg, stop) = (mg.clone(), stop.clone());
        let (failed, from_sick, total) = (failed.clone(), from_sick.clone(), total.clone());
        tokio::spawn(async move {
            let c = client();
            while !stop.load(Ordering::SeqCst) {
                let ok = match c.get(mg.url("/x")).send().await {
                    Ok(r) if r.status() == 200 => r.text().await.ok(),
                    _ => None,
                };
                total.fetch_add(1, Ordering::SeqCst);
                match ok.as_deref() {
                    Some("sick") => _ = from_sick.fetch_add(1, Ordering::SeqCst),
                    Some("good") => {}
                    _ => _ = failed.fetch_add(1, Ordering::SeqCst),
                }
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        from_sick.load(Ordering::SeqCst) > 0,
        "both peers serve first"
    );

    sick.health.store(500, Ordering::SeqCst);
    let (p, took) = wait_state(&mg, "app", &sick.addr(), "down", Duration::from_secs(4)).await;
    assert_eq!(p["reason"], "active", "{p}");
    // interval × fails, plus one interval (the round in progress) and a
    // check's timeout of slack for a loaded machine.
    assert!(
        took < interval * 3 + Duration::from_millis(250),
        "out after {took:?}"
    );
    // Out of rotation: nothing more reaches it.
    let served = from_sick.load(Ordering::SeqCst);
    let since = total.load(Ordering::SeqCst);
    let until = Instant::now() + Duration::from_millis(600);
    while Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(total.load(Ordering::SeqCst) > since + 10, "the loop runs");
    assert_eq!(from_sick.load(Ordering::SeqCst), served, "served while out");

    sick.health.store(200, Ordering::SeqCst);
    let (p, _) = wait_state(&mg, "app", &sick.addr(), "up", Duration::from_secs(4)).await;
    assert!(p["check"]["passes"].as_u64().unwrap_or(0) >= 2, "{p}");
    let back = from_sick.load(Ordering::SeqCst);
    let until = Instant::now() + Duration::from_secs(3);
    while from_sick.load(Ordering::SeqCst) == back {
        assert!(Instant::now() < until, "never served again");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, Ordering::SeqCst);
    load.await.unwrap();
    assert_eq!(
        failed.load(Ordering::SeqCst),
        0,
        "failed requests out of {}",
        total.load(Ordering::SeqCst)
    );
    let status = mg.status().await;
    assert_eq!(peer(&status, "app", &good.addr())["state"], "up");
}

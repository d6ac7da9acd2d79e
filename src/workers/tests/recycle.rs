//! Recycling against real processes: `max_requests` and `max_rss`.

use super::{App, alive, compile, get, members, until};
use crate::workers::Registry;

#[tokio::test]
async fn a_worker_past_max_requests_is_replaced_after_its_successor_is_ready() {
    let app = App::new();
    let snap = compile(&app.unix("count = 1\nmax_requests = 3"), None);
    let registry = Registry::new();
    registry.apply(&snap.upstreams);
    let up = &snap.upstreams["app"];
    let first = members(up, 1).await;
    let old = get(&first[0]).await;
    let peer = up.members().peers[0].clone();
    for _ in 0..3 {
        drop(peer.begin());
    }
    let next = until("the successor", || {
        let m = up.members();
        (m.addrs.len() == 1 && m.addrs[0] != first[0]).then(|| m.addrs[0].clone())
    })
    .await;
    let new = get(&next).await;
    assert_ne!(new.pid, old.pid);
    until("the recycled worker to be gone", || {
        (!alive(old.pid)).then_some(())
    })
    .await;
    let status = registry.status()["app"].clone();
    assert_eq!(status["restarts"], 0, "recycling is no failure: {status}");
    assert_eq!(status["state"], "ok");
    registry.stop_all().await;
}

#[tokio::test]
async fn a_worker_above_max_rss_is_recycled() {
    let app = App::new();
    // Any python process is above 1 MiB.
    let snap = compile(&app.unix("count = 1\nmax_rss = \"1MiB\""), None);
    let registry = Registry::new();
    registry.apply(&snap.upstreams);
    let up = &snap.upstreams["app"];
    let first = members(up, 1).await;
    let old = get(&first[0]).await.pid;
    until("a successor", || {
        let m = up.members();
        (m.addrs.len() == 1 && m.addrs[0] != first[0]).then_some(())
    })
    .await;
    until("the recycled worker to be gone", || {
        (!alive(old)).then_some(())
    })
    .await;
    assert_eq!(registry.status()["app"]["restarts"], 0);
    registry.stop_all().await;
}

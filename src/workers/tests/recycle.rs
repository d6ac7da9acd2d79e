//! Recycling against real processes: `max_requests` and `max_rss`.

use std::sync::Arc;

use super::{App, alive, compile, get, members, until};
use crate::config::PeerAddr;
use crate::snapshot::Snapshot;
use crate::upstream::balance::{PickKey, Tried};
use crate::upstream::peer::Peer;
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
    assert_eq!(status.restarts, 0, "recycling is no failure: {status:?}");
    assert_eq!(status.state, "ok");
    // The exit may be seen by the pool a moment after it happened.
    let figures = until("only the successor in the figures", || {
        let f = registry.figures().remove("app")?;
        (f.procs == [0, 1, 0, 0]).then_some(f)
    })
    .await;
    assert_eq!(figures.recycles, [1, 0], "one recycle, for max_requests");
    assert_eq!(figures.restarts, 0);
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
    assert_eq!(registry.status()["app"].restarts, 0);
    let figures = &registry.figures()["app"];
    assert!(
        figures.recycles[1] >= 1,
        "recycled for max_rss: {figures:?}"
    );
    assert_eq!(figures.recycles[0], 0);
    registry.stop_all().await;
}

/// A pool of two workers with `max_requests = 3` (exactly: the jitter, up
/// to 10 %, rounds down to 0), ready; its registry, snapshot, the workers'
/// addresses and their peers.
async fn two_of_limit_3(app: &App) -> (Registry, Snapshot, Vec<PeerAddr>, [Arc<Peer>; 2]) {
    let snap = compile(&app.unix("count = 2\nmax_requests = 3"), None);
    let registry = Registry::new();
    registry.apply(&snap.upstreams);
    let up = &snap.upstreams["app"];
    let addrs = members(up, 2).await;
    let m = up.members();
    let peers = [m.peers[0].clone(), m.peers[1].clone()];
    drop(m);
    (registry, snap, addrs, peers)
}

/// Sends `peer` requests up to its limit.
fn spend(peer: &Arc<Peer>) {
    while !peer.is_spent() {
        drop(peer.try_begin().expect("below the limit"));
    }
}

#[tokio::test]
async fn the_request_at_the_limit_retires_a_worker_while_another_serves() {
    let app = App::new();
    let (registry, snap, _, [a, b]) = two_of_limit_3(&app).await;
    let up = &snap.upstreams["app"];
    // `a` spent, `b` not: `a` leaves, woken by the request that reached it.
    spend(&a);
    assert_eq!(a.served(), 3);
    assert!(!b.is_spent());
    until("the spent worker to leave", || {
        let m = up.members();
        (!m.peers.iter().any(|p| p.id() == a.id())).then_some(())
    })
    .await;
    registry.stop_all().await;
}

#[tokio::test]
async fn when_every_worker_is_spent_the_last_one_serves_on() {
    let app = App::new();
    let (registry, snap, first, [a, b]) = two_of_limit_3(&app).await;
    let up = &snap.upstreams["app"];
    // Both reach their limits before the supervisor runs: both stay
    // members (neither has another to leave the traffic to), and the
    // balancer gives everything to `b`, spent last.
    spend(&a);
    spend(&b);
    tokio::task::yield_now().await;
    {
        let m = up.members();
        assert_eq!(m.peers.len(), 2);
        let pick = m
            .balancer
            .pick(
                &m.peers,
                PickKey::None,
                &Tried::new(2),
                std::time::Instant::now(),
            )
            .expect("a peer");
        assert_eq!((m.peers[pick.index].id(), pick.spent), (b.id(), true));
    }
    // Both are replaced once their successors are ready.
    until("two successors", || {
        let m = up.members();
        (m.addrs.len() == 2 && m.addrs.iter().all(|a| !first.contains(a))).then_some(())
    })
    .await;
    assert_eq!(a.served(), 3, "nothing past its limit");
    registry.stop_all().await;
}

//! Recycling against real processes: `max_requests` and `max_rss`.

use super::{App, alive, compile, get, members, until};
use crate::upstream::balance::{PickKey, Tried};
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

#[tokio::test]
async fn the_request_at_the_limit_retires_a_worker_while_another_serves() {
    let app = App::new();
    let snap = compile(&app.unix("count = 2\nmax_requests = 3"), None);
    let registry = Registry::new();
    registry.apply(&snap.upstreams);
    let up = &snap.upstreams["app"];
    members(up, 2).await;
    let (a, b) = {
        let m = up.members();
        (m.peers[0].clone(), m.peers[1].clone())
    };
    // Limits of exactly 3 (the jitter, up to 10 %, rounds down to 0). `a`
    // spent, `b` not: `a` leaves, woken by the request that reached it.
    for _ in 0..3 {
        drop(a.try_begin().expect("below the limit"));
    }
    assert!(a.is_spent() && !b.is_spent());
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
    let snap = compile(&app.unix("count = 2\nmax_requests = 3"), None);
    let registry = Registry::new();
    registry.apply(&snap.upstreams);
    let up = &snap.upstreams["app"];
    let first = members(up, 2).await;
    let (a, b) = {
        let m = up.members();
        (m.peers[0].clone(), m.peers[1].clone())
    };
    // Both reach their limits before the supervisor runs: both stay
    // members (neither has another to leave the traffic to), and the
    // balancer gives everything to `b`, spent last.
    for p in [&a, &b] {
        for _ in 0..3 {
            drop(p.try_begin().expect("below the limit"));
        }
    }
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

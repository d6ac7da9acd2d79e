//! The rules around the balancing methods, for each of them: a sole peer
//! is never marked down, every peer is tried again when all are down
//! (backups first, `down` never), and a spent peer serves only as the last
//! resort.

use super::*;

/// A key every balancer can use (the hashing ones hash it).
fn some_key(kind: Balance) -> PickKey<'static> {
    match kind {
        Balance::IpHash => PickKey::Ip(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 9))),
        _ => PickKey::Bytes(b"/some/key"),
    }
}

#[test]
fn a_sole_peer_is_never_marked_down() {
    let t0 = Instant::now();
    let down = PeerConfig {
        down: true,
        ..cfg(1)
    };
    let backup = PeerConfig {
        backup: true,
        ..cfg(1)
    };
    // Alone, or next to a peer taken out by config: never marked.
    for list in [vec![cfg(1)], vec![cfg(1), down.clone()]] {
        let ps = peers(list);
        let b = Balancer::new(Balance::RoundRobin, &ps);
        for i in 0..5 {
            assert!(!b.record_failure(&ps[0], t0 + Duration::from_secs(i)));
        }
        assert!(ps[0].is_available(t0 + Duration::from_secs(5)));
        assert_eq!(
            pick_index(&b, &ps, PickKey::None, &Tried::new(ps.len()), t0),
            Some(0)
        );
    }
    // A backup is a second usable peer: passive health applies.
    let ps = peers(vec![cfg(1), backup]);
    let b = Balancer::new(Balance::RoundRobin, &ps);
    assert!(b.record_failure(&ps[0], t0));
    assert_eq!(
        pick_index(&b, &ps, PickKey::None, &Tried::new(2), t0),
        Some(1)
    );
}

#[test]
fn when_every_peer_is_down_they_are_tried_again_at_once() {
    let t0 = Instant::now();
    for kind in KINDS {
        let ps = weighted(&[1, 1, 1]);
        let b = Balancer::new(kind, &ps);
        let key = some_key(kind);
        for p in &ps {
            assert!(b.record_failure(p, t0), "{kind:?}");
        }
        let now = t0 + Duration::from_secs(1);
        let pick = b.pick(&ps, key, &Tried::new(3), now).expect("revived");
        assert_eq!(pick.revived, 3, "{kind:?}");
        assert!(!pick.spent);
        // The marks are gone: the next picks are plain ones, by the method.
        let again = b.pick(&ps, key, &Tried::new(3), now).expect("a peer");
        assert_eq!(again.revived, 0, "{kind:?}");
        if matches!(kind, Balance::IpHash | Balance::Hash) {
            assert_eq!(again.index, pick.index, "{kind:?} keeps its key's peer");
        }
        // Only peers this request has not tried are revived.
        for p in &ps {
            b.record_failure(p, now);
        }
        let mut tried = Tried::new(3);
        tried.insert(0);
        let pick = b.pick(&ps, key, &tried, now).expect("revived");
        assert_eq!(pick.revived, 2, "{kind:?}");
        assert_ne!(pick.index, 0, "{kind:?}");
        assert!(
            !ps[0].is_available(now),
            "{kind:?}: the tried one stays marked"
        );
        tried.insert(1);
        tried.insert(2);
        assert_eq!(b.pick(&ps, key, &tried, now), None, "{kind:?}");
    }
}

#[test]
fn backups_are_tried_before_every_peer_is_revived() {
    let t0 = Instant::now();
    let backup = |w| PeerConfig {
        backup: true,
        ..cfg(w)
    };
    for kind in KINDS {
        let ps = peers(vec![cfg(1), cfg(1), backup(1), backup(1)]);
        let b = Balancer::new(kind, &ps);
        let key = some_key(kind);
        let pick = |now| b.pick(&ps, key, &Tried::new(4), now).expect("a peer");
        b.record_failure(&ps[0], t0);
        b.record_failure(&ps[1], t0);
        // Primaries down: the backups, nothing revived.
        for _ in 0..6 {
            let p = pick(t0);
            assert!(
                matches!(p.index, 2 | 3) && p.revived == 0,
                "{kind:?}: {p:?}"
            );
        }
        // All down: every mark is cleared, and a primary serves again.
        b.record_failure(&ps[2], t0);
        b.record_failure(&ps[3], t0);
        let p = pick(t0);
        assert_eq!(p.revived, 4, "{kind:?}");
        assert!(matches!(p.index, 0 | 1), "{kind:?}: {p:?}");
        for _ in 0..6 {
            assert!(matches!(pick(t0).index, 0 | 1), "{kind:?}");
        }
    }
}

#[test]
fn down_peers_are_never_revived() {
    let t0 = Instant::now();
    let down = PeerConfig {
        down: true,
        ..cfg(1)
    };
    let ps = peers(vec![down.clone(), cfg(1), cfg(1), down]);
    for kind in KINDS {
        let b = Balancer::new(kind, &ps);
        b.record_failure(&ps[1], t0);
        b.record_failure(&ps[2], t0);
        let p = b
            .pick(&ps, some_key(kind), &Tried::new(4), t0)
            .expect("revived");
        assert_eq!(p.revived, 2, "{kind:?}");
        assert!(matches!(p.index, 1 | 2), "{kind:?}: {p:?}");
    }
}

#[test]
fn a_spent_peer_is_picked_only_when_nothing_else_is_left() {
    let t0 = Instant::now();
    let notify = Arc::new(tokio::sync::Notify::new());
    for kind in KINDS {
        let ps: Vec<Arc<Peer>> = (0..2)
            .map(|_| Arc::new(Peer::new(cfg(1)).with_limit(3, notify.clone())))
            .collect();
        let b = Balancer::new(kind, &ps);
        let key = some_key(kind);
        let pick = || b.pick(&ps, key, &Tried::new(2), t0).expect("a peer");
        for _ in 0..3 {
            drop(ps[0].begin());
        }
        // Spent: the other one takes every request, up to its own limit.
        for _ in 0..3 {
            let p = pick();
            assert_eq!((p.index, p.spent), (1, false), "{kind:?}");
            drop(ps[1].try_begin().expect("below its limit"));
        }
        // Both spent: the one spent last serves on, told as such; the
        // first one gets nothing past its limit.
        for _ in 0..5 {
            let p = pick();
            assert_eq!((p.index, p.spent, p.revived), (1, true, 0), "{kind:?}");
            drop(ps[1].begin());
        }
        // Unless that one was tried already.
        let mut tried = Tried::new(2);
        tried.insert(1);
        let p = b.pick(&ps, key, &tried, t0).expect("a peer");
        assert_eq!((p.index, p.spent), (0, true), "{kind:?}");
    }
}

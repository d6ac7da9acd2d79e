//! The balancers against peer lists built in memory: weights, smoothness,
//! `down`, backups, passive health, and each method's own rule; the rules
//! around them (sole peer, revival, spent peers) in `health`.

use super::*;
use crate::upstream::peer::PeerConfig;
use std::net::Ipv4Addr;
use std::time::Duration;

const _: () = {
    const fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Balancer>();
};

/// [`Balancer::pick`]'s choice, as an index.
fn pick_index(
    b: &Balancer,
    peers: &[Arc<Peer>],
    key: PickKey<'_>,
    tried: &Tried,
    now: Instant,
) -> Option<usize> {
    b.pick(peers, key, tried, now).map(|p| p.index)
}

/// Every balancing method.
const KINDS: [Balance; 5] = [
    Balance::RoundRobin,
    Balance::LeastConn,
    Balance::IpHash,
    Balance::Hash,
    Balance::Random2,
];

fn cfg(weight: u32) -> PeerConfig {
    PeerConfig {
        weight,
        ..PeerConfig::default()
    }
}

fn peers(configs: Vec<PeerConfig>) -> Vec<Arc<Peer>> {
    configs
        .into_iter()
        .map(|c| Arc::new(Peer::new(c)))
        .collect()
}

fn weighted(weights: &[u32]) -> Vec<Arc<Peer>> {
    peers(weights.iter().map(|&w| cfg(w)).collect())
}

/// `n` picks with nothing tried; panics if a pick finds no peer.
fn picks(b: &Balancer, ps: &[Arc<Peer>], n: usize, now: Instant) -> Vec<usize> {
    (0..n)
        .map(|_| pick_index(b, ps, PickKey::None, &Tried::new(ps.len()), now).unwrap())
        .collect()
}

fn counts(seq: &[usize], n: usize) -> Vec<usize> {
    let mut c = vec![0; n];
    for &i in seq {
        c[i] += 1;
    }
    c
}

#[test]
fn tried_is_a_set() {
    let mut t = Tried::new(200);
    assert!(t.is_empty());
    assert!(t.insert(3));
    assert!(!t.insert(3));
    assert!(t.insert(63));
    assert!(t.insert(64));
    assert!(t.insert(199));
    assert!(t.contains(3) && t.contains(63) && t.contains(64) && t.contains(199));
    assert!(!t.contains(4) && !t.contains(65) && !t.contains(1000));
    assert_eq!(t.len(), 4);
    assert!(!t.is_empty());
    assert_eq!(Tried::new(64).high.capacity(), 0, "no heap for n <= 64");
}

#[test]
fn round_robin_weights_5_to_1_split_exactly() {
    let ps = weighted(&[5, 1]);
    let b = Balancer::new(Balance::RoundRobin, &ps);
    let seq = picks(&b, &ps, 300, Instant::now());
    assert_eq!(counts(&seq, 2), vec![250, 50]);
}

#[test]
fn round_robin_is_smooth() {
    // nginx's documented order for weights 5, 1, 1.
    let ps = weighted(&[5, 1, 1]);
    let b = Balancer::new(Balance::RoundRobin, &ps);
    let seq = picks(&b, &ps, 700, Instant::now());
    assert_eq!(&seq[..7], &[0, 0, 1, 0, 2, 0, 0]);
    // A plain weighted round robin would send 5 in a row to peer 0.
    let longest_run = seq
        .chunk_by(|a, b| a == b)
        .filter(|run| run[0] == 0)
        .map(<[usize]>::len)
        .max();
    assert_eq!(longest_run, Some(4));
    assert_eq!(counts(&seq, 3), vec![500, 100, 100]);
}

#[test]
fn down_peer_is_never_picked() {
    let ps = peers(vec![
        cfg(1),
        PeerConfig {
            down: true,
            ..cfg(10)
        },
        cfg(1),
    ]);
    for kind in [Balance::RoundRobin, Balance::LeastConn, Balance::Random2] {
        let b = Balancer::new(kind, &ps);
        let seq = picks(&b, &ps, 100, Instant::now());
        assert_eq!(counts(&seq, 3)[1], 0, "{kind:?}");
    }
}

#[test]
fn failed_peer_is_skipped_until_fail_timeout_passes() {
    let ps = peers(vec![
        PeerConfig {
            max_fails: 2,
            fail_timeout: Duration::from_secs(10),
            ..cfg(1)
        },
        cfg(1),
    ]);
    let b = Balancer::new(Balance::RoundRobin, &ps);
    let t0 = Instant::now();
    ps[0].record_failure(t0);
    assert!(
        counts(&picks(&b, &ps, 10, t0), 2)[0] > 0,
        "one failure is not enough"
    );
    ps[0].record_failure(t0 + Duration::from_secs(3));
    let during = picks(&b, &ps, 10, t0 + Duration::from_secs(12));
    assert_eq!(counts(&during, 2), vec![0, 10]);
    let after = picks(&b, &ps, 10, t0 + Duration::from_secs(13));
    assert_eq!(counts(&after, 2), vec![5, 5]);
}

#[test]
fn backup_only_when_every_primary_is_unavailable() {
    let t0 = Instant::now();
    let timeout = Duration::from_secs(10);
    let ps = peers(vec![
        PeerConfig {
            fail_timeout: timeout,
            ..cfg(1)
        },
        PeerConfig {
            fail_timeout: timeout,
            ..cfg(1)
        },
        PeerConfig {
            backup: true,
            ..cfg(3)
        },
        PeerConfig {
            backup: true,
            ..cfg(1)
        },
    ]);
    for kind in KINDS {
        let b = Balancer::new(kind, &ps);
        let key = PickKey::Bytes(b"/some/key");
        let pick = |now| pick_index(&b, &ps, key, &Tried::new(4), now);
        let now = t0;
        assert!(matches!(pick(now), Some(0 | 1)), "{kind:?}");
        ps[0].record_failure(now);
        assert_eq!(pick(now), Some(1), "{kind:?}");
        ps[1].record_failure(now + Duration::from_secs(1));
        // Every primary down: the backups, 3:1 by round robin.
        let backups: Vec<_> = (0..8).map(|_| pick(now)).collect();
        let threes = backups.iter().filter(|&&p| p == Some(2)).count();
        let fours = backups.iter().filter(|&&p| p == Some(3)).count();
        assert_eq!((threes, fours), (6, 2), "{kind:?}");
        // A primary back: backups are dropped again.
        let later = now + timeout;
        ps[0].record_success(later);
        for _ in 0..10 {
            assert_eq!(pick(later), Some(0), "{kind:?}");
        }
        ps[1].record_success(later + Duration::from_secs(1));
    }
}

#[test]
fn tried_peers_are_excluded_and_all_tried_is_none() {
    let ps = weighted(&[1, 1, 1]);
    for kind in KINDS {
        let b = Balancer::new(kind, &ps);
        let key = PickKey::Ip(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7)));
        let now = Instant::now();
        let mut tried = Tried::new(3);
        for _ in 0..3 {
            let i = pick_index(&b, &ps, key, &tried, now).unwrap();
            assert!(tried.insert(i), "{kind:?} picked a tried peer");
        }
        assert_eq!(pick_index(&b, &ps, key, &tried, now), None, "{kind:?}");
    }
}

#[test]
fn least_conn_follows_active_counts() {
    let ps = weighted(&[1, 1, 2]);
    let b = Balancer::new(Balance::LeastConn, &ps);
    let now = Instant::now();
    let pick = || pick_index(&b, &ps, PickKey::None, &Tried::new(3), now).unwrap();
    let _a = [ps[0].begin(), ps[0].begin()];
    let _c = [ps[2].begin(), ps[2].begin()];
    // active/weight: 2/1, 0/1, 2/2.
    assert_eq!(pick(), 1);
    let b1 = [ps[1].begin(), ps[1].begin()];
    // 2/1, 2/1, 2/2: the weighted one is least loaded.
    assert_eq!(pick(), 2);
    drop(b1);
    assert_eq!(pick(), 1);
    // Ties take turns, by weight.
    let idle = weighted(&[1, 1, 2]);
    let fresh = Balancer::new(Balance::LeastConn, &idle);
    let seq: Vec<_> = (0..8)
        .map(|_| pick_index(&fresh, &idle, PickKey::None, &Tried::new(3), now).unwrap())
        .collect();
    assert_eq!(counts(&seq, 3), vec![2, 2, 4]);
}

#[test]
fn ip_hash_is_stable_per_ip_and_spreads() {
    let ps = weighted(&[1, 1, 1]);
    let b = Balancer::new(Balance::IpHash, &ps);
    let now = Instant::now();
    let ip = |n: u8| PickKey::Ip(IpAddr::V4(Ipv4Addr::new(10, 0, 0, n)));
    let mut spread = vec![0; 3];
    for n in 1..=100 {
        let first = pick_index(&b, &ps, ip(n), &Tried::new(3), now).unwrap();
        for _ in 0..5 {
            assert_eq!(pick_index(&b, &ps, ip(n), &Tried::new(3), now), Some(first));
        }
        spread[first] += 1;
    }
    assert!(spread.iter().all(|&c| c >= 15), "{spread:?}");
    // The same client over IPv4-mapped IPv6 is the same client.
    let mapped = PickKey::Ip(IpAddr::V6(Ipv4Addr::new(10, 0, 0, 1).to_ipv6_mapped()));
    assert_eq!(
        pick_index(&b, &ps, mapped, &Tried::new(3), now),
        pick_index(&b, &ps, ip(1), &Tried::new(3), now)
    );
}

#[test]
fn ip_hash_moves_only_the_clients_of_a_failed_peer() {
    let ps = weighted(&[1, 1, 1]);
    let b = Balancer::new(Balance::IpHash, &ps);
    let t0 = Instant::now();
    let ip = |n: u8| PickKey::Ip(IpAddr::V4(Ipv4Addr::new(10, 0, 1, n)));
    let before: Vec<_> = (0..100)
        .map(|n| pick_index(&b, &ps, ip(n), &Tried::new(3), t0).unwrap())
        .collect();
    ps[2].record_failure(t0);
    for (n, &was) in (0..100).zip(&before) {
        let now = pick_index(&b, &ps, ip(n), &Tried::new(3), t0).unwrap();
        if was == 2 {
            assert_ne!(now, 2);
        } else {
            assert_eq!(now, was);
        }
    }
}

#[test]
fn hash_is_stable_and_consistent() {
    let named = |names: &[&str]| -> Vec<Arc<Peer>> {
        names
            .iter()
            .map(|n| Arc::new(Peer::with_name(PeerConfig::default(), *n)))
            .collect()
    };
    let all = named(&["a:80", "b:80", "c:80", "d:80"]);
    let three = named(&["a:80", "c:80", "d:80"]);
    let (b4, b3) = (
        Balancer::new(Balance::Hash, &all),
        Balancer::new(Balance::Hash, &three),
    );
    // New peer objects with the same names, as after a restart.
    let restarted = named(&["a:80", "b:80", "c:80", "d:80"]);
    let b4_again = Balancer::new(Balance::Hash, &restarted);
    let now = Instant::now();
    let owner = |b: &Balancer, ps: &[Arc<Peer>], key: &str| {
        let i = pick_index(
            b,
            ps,
            PickKey::Bytes(key.as_bytes()),
            &Tried::new(ps.len()),
            now,
        )
        .unwrap();
        ps[i].name().to_owned()
    };
    let keys: Vec<String> = (0..1000).map(|k| format!("/item/{k}")).collect();
    let mut moved = 0;
    let mut per_peer = std::collections::HashMap::new();
    for key in &keys {
        let before = owner(&b4, &all, key);
        assert_eq!(owner(&b4, &all, key), before, "stable per key");
        assert_eq!(
            owner(&b4_again, &restarted, key),
            before,
            "stable across restarts"
        );
        let after = owner(&b3, &three, key);
        if before != after {
            assert_eq!(before, "b:80", "only the removed peer's keys move");
            moved += 1;
        }
        *per_peer.entry(before).or_insert(0) += 1;
    }
    assert!(moved < 400, "{moved} of 1000 keys moved");
    assert!(per_peer.values().all(|&c| c > 150), "{per_peer:?}");
}

#[test]
fn hash_walks_past_unusable_peers() {
    let ps = weighted(&[1, 1, 1, 1]);
    let b = Balancer::new(Balance::Hash, &ps);
    let now = Instant::now();
    let key = PickKey::Bytes(b"/cart");
    let mut tried = Tried::new(4);
    let first = pick_index(&b, &ps, key, &tried, now).unwrap();
    tried.insert(first);
    let second = pick_index(&b, &ps, key, &tried, now).unwrap();
    assert_ne!(first, second);
    assert_eq!(
        pick_index(&b, &ps, key, &tried, now),
        Some(second),
        "the walk is deterministic"
    );
}

#[test]
fn missing_key_falls_back_to_round_robin() {
    let ps = weighted(&[1, 1]);
    for kind in [Balance::IpHash, Balance::Hash] {
        let b = Balancer::new(kind, &ps);
        let seq = picks(&b, &ps, 10, Instant::now());
        assert_eq!(counts(&seq, 2), vec![5, 5], "{kind:?}");
    }
}

#[test]
fn random2_prefers_the_idle_peer() {
    let ps = weighted(&[1, 1, 1]);
    let b = Balancer::new(Balance::Random2, &ps);
    let now = Instant::now();
    let _load: Vec<_> = (0..5).map(|_| ps[0].begin()).collect();
    let seq = picks(&b, &ps, 300, now);
    let c = counts(&seq, 3);
    assert_eq!(c[0], 0, "{c:?}");
    assert!(c[1] > 0 && c[2] > 0, "{c:?}");
    // With two peers both are always drawn, so the idle one always wins.
    let two = weighted(&[1, 1]);
    let b2 = Balancer::new(Balance::Random2, &two);
    let _busy = two[1].begin();
    assert_eq!(counts(&picks(&b2, &two, 50, now), 2), vec![50, 0]);
}

mod health;

#[test]
fn actively_down_peers_are_skipped_and_never_revived() {
    let peers: Vec<Arc<Peer>> = (0..2)
        .map(|_| Arc::new(Peer::new(PeerConfig::default())))
        .collect();
    let b = Balancer::new(Balance::RoundRobin, &peers);
    let now = Instant::now();
    let fail = || Err::<(), String>("GET / answered 500".into());
    peers[1].record_check(fail(), (1, 1), now);
    for _ in 0..4 {
        let pick = b.pick(&peers, PickKey::None, &Tried::new(2), now).unwrap();
        assert_eq!(pick.index, 0);
    }
    // The other one only passively failed: revived as before; the actively
    // down one is not.
    peers[0].record_failure(now);
    let pick = b.pick(&peers, PickKey::None, &Tried::new(2), now).unwrap();
    assert_eq!((pick.index, pick.revived), (0, 1));
    let mut tried = Tried::new(2);
    tried.insert(0);
    assert_eq!(b.pick(&peers, PickKey::None, &tried, now), None);

    // A sole peer down by its checks is not picked either.
    let sole = vec![Arc::new(Peer::new(PeerConfig::default()))];
    let b = Balancer::new(Balance::RoundRobin, &sole);
    sole[0].record_check(fail(), (1, 1), now);
    assert_eq!(b.pick(&sole, PickKey::None, &Tried::new(1), now), None);
    sole[0].record_check(Ok(()), (1, 1), now);
    assert!(b.pick(&sole, PickKey::None, &Tried::new(1), now).is_some());
}

//! Passive health, revival, requests in flight and the request limit of
//! one peer, on a clock passed in.

use super::*;

const SEC: Duration = Duration::from_secs(1);

fn peer(max_fails: u32, fail_timeout: Duration) -> Peer {
    Peer::new(PeerConfig {
        max_fails,
        fail_timeout,
        ..PeerConfig::default()
    })
}

#[test]
fn ids_are_unique() {
    let a = Peer::new(PeerConfig::default());
    let b = Peer::new(PeerConfig::default());
    assert_ne!(a.id(), b.id());
    assert_eq!(
        Peer::with_name(PeerConfig::default(), "10.0.0.1:80").name(),
        "10.0.0.1:80"
    );
}

#[test]
fn config_down_is_never_available() {
    let p = Peer::new(PeerConfig {
        down: true,
        ..PeerConfig::default()
    });
    let t0 = Instant::now();
    assert!(!p.is_available(t0));
    p.record_success(t0);
    assert!(!p.is_available(t0 + 3600 * SEC));
    assert_eq!(p.health(t0).state, "down");
    assert_eq!(p.health(t0).retry_in_ms, None);
}

#[test]
fn max_fails_within_window_marks_failed_until_timeout() {
    let p = peer(3, 10 * SEC);
    let t0 = Instant::now();
    assert!(!p.record_failure(t0));
    assert!(!p.record_failure(t0 + 2 * SEC));
    assert!(p.is_available(t0 + 3 * SEC));
    assert!(
        p.record_failure(t0 + 4 * SEC),
        "third failure within 10s marks it"
    );
    assert!(!p.is_available(t0 + 4 * SEC));
    assert!(!p.is_available(t0 + 13 * SEC));
    let h = p.health(t0 + 13 * SEC);
    assert_eq!((h.state, h.fails, h.retry_in_ms), ("failed", 3, Some(1000)));
    // The down period is over: requests go through again.
    assert!(p.is_available(t0 + 14 * SEC));
    assert_eq!(p.health(t0 + 14 * SEC).state, "up");
}

#[test]
fn failed_probe_marks_again_and_success_clears() {
    let p = peer(2, 10 * SEC);
    let t0 = Instant::now();
    p.record_failure(t0);
    assert!(p.record_failure(t0));
    // A straggler failing during the down period extends it.
    assert!(!p.record_failure(t0 + 5 * SEC));
    assert!(!p.is_available(t0 + 12 * SEC));
    // A success inside the down period forgives nothing.
    p.record_success(t0 + 12 * SEC);
    assert!(!p.is_available(t0 + 14 * SEC));
    assert!(p.is_available(t0 + 15 * SEC));
    // One failure of the probe is enough to mark it again.
    assert!(p.record_failure(t0 + 15 * SEC));
    assert!(!p.is_available(t0 + 24 * SEC));
    assert!(p.is_available(t0 + 25 * SEC));
    // A successful probe clears the count: it takes max_fails again.
    p.record_success(t0 + 25 * SEC);
    assert_eq!(p.health(t0 + 25 * SEC).fails, 0);
    assert!(!p.record_failure(t0 + 26 * SEC));
    assert!(p.is_available(t0 + 26 * SEC));
    assert!(p.record_failure(t0 + 27 * SEC));
}

#[test]
fn failures_spread_wider_than_timeout_do_not_mark() {
    let p = peer(3, 10 * SEC);
    let t0 = Instant::now();
    for i in 0..10u32 {
        assert!(!p.record_failure(t0 + i * 6 * SEC), "failure {i}");
    }
    assert!(p.is_available(t0 + 60 * SEC));
    assert_eq!(p.health(t0 + 80 * SEC).fails, 0, "the window has lapsed");
}

#[test]
fn max_fails_zero_disables_accounting() {
    let p = peer(0, 10 * SEC);
    let t0 = Instant::now();
    for _ in 0..100 {
        assert!(!p.record_failure(t0));
    }
    assert!(p.is_available(t0));
    assert_eq!(p.health(t0).fails, 0);
}

#[test]
fn active_guard_counts_requests_in_flight() {
    let p = Arc::new(Peer::new(PeerConfig::default()));
    let a = p.begin();
    let b = p.begin();
    assert_eq!(p.active(), 2);
    assert_eq!(a.peer().id(), p.id());
    drop(a);
    assert_eq!(p.active(), 1);
    assert_eq!(p.health(Instant::now()).active, 1);
    drop(b);
    assert_eq!(p.active(), 0);
}

#[test]
fn health_serializes_for_status() {
    fn assert_serialize<T: serde::Serialize>(_: &T) {}
    let p = peer(1, 10 * SEC);
    let t0 = Instant::now();
    p.record_failure(t0);
    let h = p.health(t0 + SEC);
    assert_eq!(
        h,
        PeerHealth {
            state: "failed",
            reason: Some("passive"),
            fails: 1,
            retry_in_ms: Some(9000),
            active: 0,
            check: None,
        }
    );
    assert_serialize(&h);
}

#[test]
fn revive_clears_a_mark_within_the_down_period_only() {
    let p = peer(2, 10 * SEC);
    let t0 = Instant::now();
    assert!(!p.revive(t0), "nothing to clear on a healthy peer");
    p.record_failure(t0);
    assert!(!p.revive(t0), "one failure of two is no mark");
    assert!(p.record_failure(t0 + SEC));
    assert!(!p.is_available(t0 + 2 * SEC));
    assert!(p.revive(t0 + 2 * SEC));
    assert!(p.is_available(t0 + 2 * SEC));
    assert!(
        !p.revive(t0 + 2 * SEC),
        "a second thread finds nothing to clear"
    );
    // The failure count starts over: max_fails failures mark it again.
    let h = p.health(t0 + 2 * SEC);
    assert_eq!((h.state, h.fails), ("up", 0));
    assert!(!p.record_failure(t0 + 3 * SEC));
    assert!(p.record_failure(t0 + 4 * SEC));
    // Once the down period is over there is nothing to revive.
    assert!(!p.revive(t0 + 14 * SEC));
    let down = Peer::new(PeerConfig {
        down: true,
        ..PeerConfig::default()
    });
    assert!(!down.revive(t0), "`down` by config stays down");
}

#[test]
fn the_request_that_reaches_the_limit_wakes_the_supervisor_once() {
    let notify = Arc::new(Notify::new());
    let p = Arc::new(Peer::new(PeerConfig::default()).with_limit(3, notify.clone()));
    // Whether a wake-up is waiting (taking it).
    let woken = || std::pin::pin!(notify.notified()).enable();
    assert!(!p.is_spent());
    drop(p.try_begin().expect("1 of 3"));
    let second = p.try_begin().expect("2 of 3");
    assert!(!woken(), "below the limit");
    let third = p.try_begin().expect("3 of 3");
    assert!(woken(), "the third request reached the limit");
    assert!(p.is_spent());
    assert!(
        p.try_begin().is_none(),
        "no fourth unless nothing else is left"
    );
    assert_eq!((p.served(), p.active()), (3, 2));
    // The last resort: served past the limit, no second wake-up.
    let fourth = p.begin();
    assert_eq!((p.served(), p.active()), (4, 3));
    assert!(!woken());
    drop((second, third, fourth));
    assert_eq!(p.active(), 0);
}

#[test]
fn no_limit_is_never_spent() {
    let p = Arc::new(Peer::new(PeerConfig::default()).with_limit(0, Arc::new(Notify::new())));
    for _ in 0..100 {
        drop(p.try_begin().expect("no limit"));
    }
    assert!(!p.is_spent());
    assert_eq!(p.served(), 100);
}

const RULE: (u32, u32) = (2, 2);

fn fail() -> Result<(), String> {
    Err("GET /healthz answered 500".into())
}

#[test]
fn fails_in_a_row_take_the_peer_out_and_passes_in_a_row_bring_it_back() {
    let p = peer(1, 10 * SEC);
    let t0 = Instant::now();
    assert_eq!(p.health(t0).check, None);
    // A pass between two failures resets the count.
    assert_eq!(p.record_check(fail(), RULE, t0), None);
    assert_eq!(p.record_check(Ok(()), RULE, t0), None);
    assert_eq!(p.record_check(fail(), RULE, t0), None);
    assert!(p.is_available(t0));
    assert_eq!(
        p.record_check(fail(), RULE, t0),
        Some(Transition::Down("GET /healthz answered 500".into()))
    );
    assert!(!p.is_available(t0) && p.is_checked_down());
    // Logged once: more failures change nothing.
    assert_eq!(p.record_check(fail(), RULE, t0), None);
    let h = p.health(t0);
    assert_eq!((h.state, h.reason), ("down", Some("active")));
    let c = h.check.unwrap();
    assert_eq!((c.state, c.fails, c.passes), ("down", 3, 0));
    assert_eq!(c.error.as_deref(), Some("GET /healthz answered 500"));
    assert!(c.last_check_unix_ms > 0);
    // Active marks outlast any fail_timeout.
    assert!(!p.is_available(t0 + 100 * SEC));
    assert_eq!(p.record_check(Ok(()), RULE, t0), None);
    assert!(!p.is_available(t0));
    assert_eq!(p.record_check(Ok(()), RULE, t0), Some(Transition::Up));
    assert!(p.is_available(t0));
    let h = p.health(t0);
    assert_eq!((h.state, h.reason), ("up", None));
    assert_eq!(h.check.unwrap().error, None);
}

#[test]
fn revival_never_clears_an_active_mark() {
    let p = peer(1, 10 * SEC);
    let t0 = Instant::now();
    p.record_failure(t0);
    p.record_check(fail(), (1, 1), t0);
    assert!(!p.revive(t0));
    assert!(!p.is_available(t0));
}

#[test]
fn marks_combine_and_active_recovery_clears_the_passive_mark() {
    let p = peer(1, 10 * SEC);
    let t0 = Instant::now();
    // Passive only: out, although the checks pass...
    assert!(p.record_failure(t0));
    assert!(!p.is_available(t0));
    assert_eq!(p.health(t0).reason, Some("passive"));
    // ...until `passes` checks in a row after the mark.
    assert_eq!(p.record_check(Ok(()), RULE, t0), None);
    assert!(!p.is_available(t0));
    // A failure on a request starts the count again.
    p.record_failure(t0);
    assert_eq!(p.record_check(Ok(()), RULE, t0), None);
    assert!(!p.is_available(t0));
    assert_eq!(
        p.record_check(Ok(()), RULE, t0),
        Some(Transition::PassiveCleared)
    );
    assert!(p.is_available(t0));

    // Both marks: the active recovery clears the passive one with it.
    let q = peer(1, 10 * SEC);
    q.record_check(fail(), RULE, t0);
    q.record_check(fail(), RULE, t0);
    assert!(q.record_failure(t0));
    q.record_check(Ok(()), RULE, t0);
    assert_eq!(q.record_check(Ok(()), RULE, t0), Some(Transition::Up));
    assert!(q.is_available(t0));
    assert_eq!(q.health(t0).fails, 0);

    // Active up but passively failed is out too.
    let r = peer(1, 10 * SEC);
    r.record_check(Ok(()), RULE, t0);
    r.record_failure(t0);
    assert!(!r.is_available(t0));
}

//! Unit tests for [`super`]: buckets run on governor's fake clock, so time
//! only moves when a test advances it; no sleeps.

use super::*;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use governor::clock::FakeRelativeClock;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn rate(text: &str) -> Rate {
    match Rate::parse(text) {
        Ok(rate) => rate,
        Err(e) => panic!("{text}: {e}"),
    }
}

/// A zone on a fake clock, and the clock to advance it.
fn zone(text: &str, burst: u32) -> (Buckets<FakeRelativeClock>, FakeRelativeClock) {
    let clock = FakeRelativeClock::default();
    (Buckets::with_clock(rate(text), burst, clock.clone()), clock)
}

/// How many unit takes in a row `key` gets right now.
fn drain(b: &Buckets<FakeRelativeClock>, key: &[u8]) -> u32 {
    let mut n = 0;
    while b.take(key, 1).is_allowed() {
        n += 1;
        assert!(n <= b.burst(), "more than the burst allowed at once");
    }
    n
}

fn allowed(limit: u32, remaining: u32, reset: Duration) -> Decision {
    Decision::Allowed {
        limit,
        remaining,
        reset,
    }
}

// ---- Rate ----

#[test]
fn parse_accepts_units_and_nginx_spelling() {
    let sec = Duration::from_secs(1);
    let cases = [
        ("100/s", 100, sec),
        ("600/m", 600, sec * 60),
        ("10/h", 10, sec * 3600),
        ("5/d", 5, sec * 86400),
        ("100r/s", 100, sec),
        ("30r/m", 30, sec * 60),
        ("  7/s ", 7, sec),
        ("4294967295/s", u32::MAX, sec),
    ];
    for (text, count, period) in cases {
        assert_eq!(Rate::parse(text), Ok(Rate { count, period }), "{text}");
    }
}

#[test]
fn parse_rejects_malformed_zero_and_overflow() {
    let shape = "rate must look like \"100/s\" or \"600/m\"";
    for text in [
        "", "100", "/s", "r/s", "100/", "100/x", "100/sec", "100/ms", "1/500ms", "+5/s", "-5/s",
        "1.5/s", "10 /s", "ten/s", "100rr/s", "100/s/s", "100/S",
    ] {
        assert_eq!(Rate::parse(text), Err(shape.to_string()), "{text:?}");
    }
    assert_eq!(Rate::parse("0/s"), Err("rate must be above 0".into()));
    assert_eq!(Rate::parse("0r/m"), Err("rate must be above 0".into()));
    assert_eq!(
        Rate::parse("4294967296/s"),
        Err("rate must be at most 4294967295 per period".into())
    );
}

#[test]
fn per_second_interval_and_display() {
    assert_eq!(rate("100/s").per_second(), 100.0);
    assert_eq!(rate("600/m").per_second(), 10.0);
    assert_eq!(rate("7200/h").per_second(), 2.0);
    assert_eq!(rate("600/m").interval(), ms(100));
    assert_eq!(rate("5/d").interval(), Duration::from_secs(86400 / 5));
    for text in ["100/s", "600/m", "10/h", "5/d"] {
        assert_eq!(rate(text).to_string(), text);
    }
    assert_eq!(rate("100r/s").to_string(), "100/s");
    let odd = Rate {
        count: 3,
        period: ms(1500),
    };
    assert_eq!(odd.to_string(), "3/1.5s");
}

// ---- Buckets ----

#[test]
fn full_bucket_allows_burst_at_once_then_denies() {
    let (b, _clock) = zone("10/s", 5);
    assert_eq!(drain(&b, b"k"), 5);
    assert!(matches!(b.take(b"k", 1), Decision::Denied { limit: 5, .. }));
}

#[test]
fn refills_one_token_per_interval() {
    let (b, clock) = zone("10/s", 5);
    assert_eq!(drain(&b, b"k"), 5);
    for _ in 0..10 {
        clock.advance(ms(99));
        assert!(!b.take(b"k", 1).is_allowed(), "a token came back early");
        clock.advance(ms(1));
        assert!(b.take(b"k", 1).is_allowed());
        assert!(!b.take(b"k", 1).is_allowed(), "two tokens in 100 ms");
    }
    // After t seconds idle, rate * t come back, up to the burst.
    clock.advance(ms(300));
    assert_eq!(drain(&b, b"k"), 3);
    clock.advance(Duration::from_secs(60));
    assert_eq!(drain(&b, b"k"), 5);
}

#[test]
fn remaining_counts_down_and_reset_tracks_refill() {
    let (b, clock) = zone("10/s", 5);
    for left in (0..5).rev() {
        let used = 5 - left;
        assert_eq!(b.take(b"k", 1), allowed(5, left, ms(100) * used));
    }
    clock.advance(ms(250));
    // 2.5 tokens back, one taken: 1.5 left, 1 whole; full in 350 ms,
    // reported to the whole token (400 ms).
    assert_eq!(b.take(b"k", 1), allowed(5, 1, ms(400)));
}

#[test]
fn denied_reports_retry_after_and_reset() {
    let (b, clock) = zone("10/s", 5);
    drain(&b, b"k");
    let full_in = ms(500);
    assert_eq!(
        b.take(b"k", 1),
        Decision::Denied {
            limit: 5,
            retry_after: ms(100),
            reset: full_in,
        }
    );
    clock.advance(ms(30));
    assert_eq!(
        b.take(b"k", 1),
        Decision::Denied {
            limit: 5,
            retry_after: ms(70),
            reset: full_in - ms(30),
        }
    );
    // A bigger cost waits for more tokens; the bucket fills just as soon.
    assert_eq!(
        b.take(b"k", 3),
        Decision::Denied {
            limit: 5,
            retry_after: ms(270),
            reset: full_in - ms(30),
        }
    );
    clock.advance(ms(70));
    assert_eq!(b.take(b"k", 1), allowed(5, 0, ms(500)));
}

#[test]
fn keys_are_independent() {
    let (b, _clock) = zone("10/s", 2);
    assert_eq!(drain(&b, b"alice"), 2);
    assert!(!b.take(b"alice", 1).is_allowed());
    assert_eq!(b.take(b"bob", 1), allowed(2, 1, ms(100)));
    assert_eq!(b.take(b"", 1), allowed(2, 1, ms(100)));
    assert_eq!(b.take(b"\xff\x00", 1), allowed(2, 1, ms(100)));
    assert_eq!(b.len(), 4);
}

#[test]
fn cost_takes_several_tokens() {
    let (b, clock) = zone("10/s", 5);
    assert_eq!(b.take(b"k", 3), allowed(5, 2, ms(300)));
    // Two left: a cost of 3 is refused whole, leaving the two.
    assert!(!b.take(b"k", 3).is_allowed());
    assert_eq!(b.take(b"k", 2), allowed(5, 0, ms(500)));
    clock.advance(ms(500));
    assert_eq!(b.take(b"k", 5), allowed(5, 0, ms(500)));
}

#[test]
fn cost_zero_counts_as_one() {
    let (b, _clock) = zone("10/s", 5);
    assert_eq!(b.take(b"k", 0), allowed(5, 4, ms(100)));
}

#[test]
fn cost_above_burst_is_too_costly() {
    let (b, _clock) = zone("10/s", 5);
    assert_eq!(b.take(b"k", 6), Decision::TooCostly { limit: 5, cost: 6 });
    // Even on a fresh key nothing is stored, and the bucket is untouched.
    assert!(b.is_empty());
    assert_eq!(b.take(b"k", 5), allowed(5, 0, ms(500)));
}

#[test]
fn burst_zero_is_clamped_to_one() {
    let (b, clock) = zone("1/s", 0);
    assert_eq!(b.burst(), 1);
    assert_eq!(b.take(b"k", 1), allowed(1, 0, ms(1000)));
    assert!(!b.take(b"k", 1).is_allowed());
    clock.advance(ms(1000));
    assert!(b.take(b"k", 1).is_allowed());
}

#[test]
fn per_minute_rate_behaves_like_per_second() {
    let (per_min, clock_m) = zone("600/m", 5);
    let (per_sec, clock_s) = zone("10/s", 5);
    for step in [0, 0, 0, 0, 0, 0, 40, 60, 60, 100, 250, 1000, 5] {
        clock_m.advance(ms(step));
        clock_s.advance(ms(step));
        assert_eq!(per_min.take(b"k", 1), per_sec.take(b"k", 1), "at +{step}ms");
    }
    assert_eq!(per_min.rate().per_second(), 10.0);
}

#[test]
fn forget_idle_drops_refilled_keys_and_keeps_busy_ones() {
    let (b, clock) = zone("10/s", 5);
    b.take(b"idle", 5);
    b.take(b"quiet", 1);
    assert_eq!(b.len(), 2);
    // Nothing has refilled yet.
    assert_eq!(b.forget_idle(), 2);
    clock.advance(ms(1000));
    b.take(b"busy", 5);
    b.take(b"quiet", 1);
    // idle refilled long ago; busy and quiet are still short of full.
    assert_eq!(b.forget_idle(), 2);
    assert_eq!(b.len(), 2);
    // The state of a kept key is untouched.
    assert!(!b.take(b"busy", 1).is_allowed());
    // A forgotten key starts full, as it was.
    assert_eq!(b.take(b"idle", 1), allowed(5, 4, ms(100)));
    clock.advance(ms(1000));
    assert_eq!(b.forget_idle(), 0);
    assert!(b.is_empty());
}

#[test]
fn absurd_rates_do_not_overflow() {
    let clock = FakeRelativeClock::default();
    let slow = Rate {
        count: 1,
        period: Duration::from_secs(u64::MAX),
    };
    let b = Buckets::with_clock(slow, u32::MAX, clock.clone());
    assert!(b.take(b"k", 1).is_allowed());
    assert!(!b.take(b"k", b.burst()).is_allowed());
    let fast = Rate {
        count: u32::MAX,
        period: Duration::ZERO,
    };
    let b = Buckets::with_clock(fast, u32::MAX, clock);
    assert!(b.take(b"k", u32::MAX).is_allowed());
}

#[test]
fn real_clock_zone_is_shared_across_threads() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Buckets>();
    send_sync::<Concurrency>();
    fn send<T: Send>() {}
    send::<Permit>();

    let b = Arc::new(Buckets::new(rate("1/h"), 8));
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let b = Arc::clone(&b);
            thread::spawn(move || (0..4).filter(|_| b.take(b"k", 1).is_allowed()).count())
        })
        .collect();
    let taken: usize = workers.into_iter().map(|w| w.join().unwrap()).sum();
    assert_eq!(taken, 8);
    assert_eq!(b.len(), 1);
    assert_eq!(format!("{b:?}"), "Buckets { rate: 1/h, burst: 8, keys: 1 }");
}

// ---- Concurrency ----

#[test]
fn concurrency_allows_max_per_key_then_refuses() {
    let zone = Arc::new(Concurrency::new(3));
    let held: Vec<Permit> = (0..3).map(|_| zone.acquire(b"k").unwrap()).collect();
    assert_eq!(zone.in_flight(b"k"), 3);
    assert!(zone.acquire(b"k").is_none());
    assert_eq!(zone.in_flight(b"k"), 3, "a refusal counts nothing");
    assert_eq!(zone.max(), 3);
    assert_eq!(held[0].key(), b"k");
}

#[test]
fn dropping_a_permit_frees_a_slot() {
    let zone = Arc::new(Concurrency::new(2));
    let a = zone.acquire(b"k").unwrap();
    let _b = zone.acquire(b"k").unwrap();
    assert!(zone.acquire(b"k").is_none());
    drop(a);
    assert_eq!(zone.in_flight(b"k"), 1);
    let _c = zone.acquire(b"k").unwrap();
    assert!(zone.acquire(b"k").is_none());
}

#[test]
fn concurrency_keys_are_independent() {
    let zone = Arc::new(Concurrency::new(1));
    let _a = zone.acquire(b"alice").unwrap();
    assert!(zone.acquire(b"alice").is_none());
    let _b = zone.acquire(b"bob").unwrap();
    assert_eq!(zone.in_flight(b"bob"), 1);
    assert_eq!(zone.in_flight(b"carol"), 0);
    assert_eq!(zone.len(), 2);
}

#[test]
fn key_at_zero_is_removed() {
    let zone = Arc::new(Concurrency::new(2));
    for i in 0..100u32 {
        let key = i.to_be_bytes();
        let p = zone.acquire(&key).unwrap();
        let q = zone.acquire(&key).unwrap();
        drop(p);
        assert_eq!(zone.len(), 1);
        drop(q);
        assert_eq!(zone.in_flight(&key), 0);
    }
    assert!(zone.is_empty(), "the map grew: {zone:?}");
}

#[test]
fn permit_released_on_another_thread() {
    let zone = Arc::new(Concurrency::new(1));
    let p = zone.acquire(b"k").unwrap();
    assert_eq!(format!("{p:?}"), "Permit { key: \"k\", max: 1 }");
    thread::spawn(move || drop(p)).join().unwrap();
    assert!(zone.is_empty());
    assert!(zone.acquire(b"k").is_some());
}

#[test]
fn max_zero_refuses_everything() {
    let zone = Arc::new(Concurrency::new(0));
    assert!(zone.acquire(b"k").is_none());
    assert!(zone.is_empty());
}

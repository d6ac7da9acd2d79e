//! [`Buckets`]: one token bucket per key, on governor's keyed GCRA limiter.
//!
//! governor keeps one "theoretical arrival time" per key instead of a token
//! count, so a take is one atomic compare-and-swap in a sharded map and no
//! timer ever runs. Remaining tokens, `reset` and `retry_after` are derived
//! from what it reports.

use std::fmt;
use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DashMapStateStore;
use governor::{InsufficientCapacity, Quota, RateLimiter};

use super::Rate;

/// What a [`Buckets::take`] decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Allowed: `limit` is the burst (bucket size), `remaining` the whole
    /// tokens left after this take, `reset` the time until the bucket is
    /// full again.
    Allowed {
        /// The bucket size.
        limit: u32,
        /// Whole tokens left after this take.
        remaining: u32,
        /// Time until the bucket is full again (rounded up to a whole
        /// token).
        reset: Duration,
    },
    /// Denied: `retry_after` is the time until `cost` tokens are available;
    /// nothing was taken.
    Denied {
        /// The bucket size.
        limit: u32,
        /// Time until a take of the same cost would be allowed.
        retry_after: Duration,
        /// Time until the bucket is full again.
        reset: Duration,
    },
    /// `cost` is larger than the burst: it can never be allowed.
    TooCostly {
        /// The bucket size.
        limit: u32,
        /// The cost asked for (0 counted as 1).
        cost: u32,
    },
}

impl Decision {
    /// Whether the take was allowed.
    pub fn is_allowed(&self) -> bool {
        matches!(self, Decision::Allowed { .. })
    }

    /// The bucket size, whatever was decided.
    pub fn limit(&self) -> u32 {
        match *self {
            Decision::Allowed { limit, .. }
            | Decision::Denied { limit, .. }
            | Decision::TooCostly { limit, .. } => limit,
        }
    }
}

/// governor counts time in u64 nanoseconds from the limiter's start;
/// keeping a bucket's whole refill under 2^62 ns (~146 years) leaves room
/// for uptime and rules out overflow whatever `Rate` and burst are given.
const MAX_FILL_NANOS: u64 = 1 << 62;

type Limiter<C> =
    RateLimiter<Box<[u8]>, DashMapStateStore<Box<[u8]>>, C, StateInformationMiddleware>;

/// One token-bucket zone: a bucket of size `burst` per key, refilled at
/// `rate`; a full bucket allows `burst` at once.
///
/// Shared by every worker thread (`Send + Sync`, put it in an `Arc`); a
/// take locks one shard of the key map, not the zone. `C` is the clock:
/// real time unless a test injects governor's `FakeRelativeClock` through
/// [`Buckets::with_clock`].
pub struct Buckets<C: Clock = DefaultClock> {
    limiter: Limiter<C>,
    rate: Rate,
    /// The bucket size after clamping; the `limit` of every decision.
    burst: u32,
    /// `rate.interval()` after clamping: the time one token takes to refill.
    interval: Duration,
}

impl Buckets {
    /// A zone on the real clock. `burst` 0 is taken as 1.
    pub fn new(rate: Rate, burst: u32) -> Buckets {
        Buckets::with_clock(rate, burst, DefaultClock::default())
    }
}

impl<C: Clock> Buckets<C> {
    /// A zone on `clock` (tests pass governor's `FakeRelativeClock`).
    /// `burst` 0 is taken as 1; absurd combinations (a bucket that would
    /// take more than ~146 years to refill) are capped.
    pub fn with_clock(rate: Rate, burst: u32, clock: C) -> Buckets<C> {
        let max_interval = Duration::from_nanos(MAX_FILL_NANOS);
        let interval = rate.interval().min(max_interval);
        // interval is at least 1 ns, so the division is safe.
        let interval_nanos = u64::try_from(interval.as_nanos()).unwrap_or(MAX_FILL_NANOS);
        let most = u32::try_from(MAX_FILL_NANOS / interval_nanos).unwrap_or(u32::MAX);
        let burst = burst.clamp(1, most.max(1));
        let quota = Quota::with_period(interval)
            .unwrap_or_else(|| Quota::per_second(NonZeroU32::MAX))
            .allow_burst(NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN));
        Buckets {
            limiter: RateLimiter::new(quota, DashMapStateStore::default(), clock),
            rate,
            burst,
            interval,
        }
    }

    /// Takes `cost` tokens (0 counts as 1) from `key`'s bucket, all or
    /// nothing. A key seen for the first time starts with a full bucket.
    pub fn take(&self, key: &[u8], cost: u32) -> Decision {
        let n = NonZeroU32::new(cost).unwrap_or(NonZeroU32::MIN);
        let (limit, cost) = (self.burst, n.get());
        if cost > limit {
            // Checked here too so a hopeless take leaves no key behind.
            return Decision::TooCostly { limit, cost };
        }
        // governor's map wants `&K`: one small allocation per take.
        let key: Box<[u8]> = key.into();
        match self.limiter.check_key_n(&key, n) {
            Ok(Ok(state)) => {
                let remaining = state.remaining_burst_capacity().min(limit);
                Decision::Allowed {
                    limit,
                    remaining,
                    reset: self.interval.saturating_mul(limit - remaining),
                }
            }
            Ok(Err(not_until)) => {
                let retry_after = not_until.wait_time_from(self.limiter.clock().now());
                // governor refuses until `cost` tokens are back; the other
                // `limit - cost` follow one interval apart.
                let rest = self.interval.saturating_mul(limit - cost);
                Decision::Denied {
                    limit,
                    retry_after,
                    reset: retry_after.saturating_add(rest),
                }
            }
            Err(InsufficientCapacity(_)) => Decision::TooCostly { limit, cost },
        }
    }

    /// Drops keys whose bucket is full again, so memory is bounded by the
    /// keys active within about one refill of the bucket; returns how many
    /// keys remain. A dropped key comes back with a full bucket, which is
    /// what it had, so this changes no decision. governor keeps a key one
    /// token interval past full before dropping it.
    pub fn forget_idle(&self) -> usize {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
        self.limiter.len()
    }

    /// How many keys have a bucket (full ones included until
    /// [`Buckets::forget_idle`]).
    pub fn len(&self) -> usize {
        self.limiter.len()
    }

    /// Whether no key has a bucket.
    pub fn is_empty(&self) -> bool {
        self.limiter.is_empty()
    }

    /// The refill rate this zone was built with.
    pub fn rate(&self) -> Rate {
        self.rate
    }

    /// The bucket size (after clamping 0 to 1).
    pub fn burst(&self) -> u32 {
        self.burst
    }
}

impl<C: Clock> fmt::Debug for Buckets<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Buckets")
            .field("rate", &format_args!("{}", self.rate))
            .field("burst", &self.burst)
            .field("keys", &self.limiter.len())
            .finish()
    }
}

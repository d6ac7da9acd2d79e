//! One upstream peer's shared state: its configuration, passive health
//! (nginx's `max_fails` within `fail_timeout`), active health (the marks of
//! the upstream's prober, `super::health`), its requests in flight and
//! the requests it was sent (against an optional limit: a managed worker's
//! `max_requests`).
//!
//! Every worker thread shares one `Arc<Peer>`, and it should outlive config
//! reloads while its definition is unchanged, so health marks survive. It
//! knows nothing of addresses, sockets or HTTP: the proxy reports outcomes,
//! and time is passed in as an `Instant` so tests need no sleeps.
//!
//! The two marks combine: either takes the peer out. Active checks know
//! better than a fail_timeout, so they bring a peer back: the check that
//! ends an active mark clears a passive one too, and a passively marked
//! peer that passes `passes` checks in a row after its mark is back before
//! its `fail_timeout` ends.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::Notify;

/// Source of [`Peer::id`]: unique for the life of the process.
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// Orders the moments peers became spent (see [`Peer::spent_order`]).
static SPENT_SEQ: AtomicU64 = AtomicU64::new(1);

/// A peer's settings, as in an nginx `server` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerConfig {
    /// Share of the traffic relative to the other peers; 0 counts as 1.
    pub weight: u32,
    /// Failures within `fail_timeout` that mark the peer failed; 0 turns
    /// passive health off for this peer.
    pub max_fails: u32,
    /// Both the window in which failures are counted and how long a failed
    /// peer is left alone before requests are let through again.
    pub fail_timeout: Duration,
    /// Used only when no primary (non-backup) peer is available.
    pub backup: bool,
    /// Taken out of rotation by the operator; never picked.
    pub down: bool,
}

impl Default for PeerConfig {
    /// nginx's defaults: `weight=1 max_fails=1 fail_timeout=10s`.
    fn default() -> Self {
        PeerConfig {
            weight: 1,
            max_fails: 1,
            fail_timeout: Duration::from_secs(10),
            backup: false,
            down: false,
        }
    }
}

/// One upstream peer, shared by all worker threads.
#[derive(Debug)]
pub struct Peer {
    /// The settings this peer was built with.
    pub config: PeerConfig,
    /// Process-unique, for logs and for telling peers apart across reloads.
    id: u64,
    /// Stable identity (usually the address) that places the peer on the
    /// consistent-hash ring; empty when none was given.
    name: String,
    /// Mirrors `health.failed_at.is_some()`, so the common "healthy" check
    /// in [`Peer::is_available`] takes no lock.
    marked: AtomicBool,
    /// Passive health accounting; short critical sections only.
    health: Mutex<Health>,
    /// Mirrors `check.down`: the prober took the peer out.
    checked_down: AtomicBool,
    /// Active health: the prober's results. Never locked together with
    /// `health` (taken and released first when both are needed).
    check: Mutex<Check>,
    /// Requests in flight, kept by [`ActiveGuard`].
    active: AtomicU32,
    /// Requests sent to this peer since it was made (tries included).
    served: AtomicU64,
    /// Requests after which the peer is spent (see [`Peer::is_spent`]);
    /// 0 = no limit.
    limit: u64,
    /// Woken by the request that reaches `limit` (the worker supervisor
    /// waits on it to retire the worker at once, not at its next look).
    at_limit: Option<Arc<Notify>>,
    /// When it became spent, from [`SPENT_SEQ`]; 0 = not (yet) stamped.
    spent_at: AtomicU64,
}

/// Passive health, nginx-style.
#[derive(Debug, Default)]
struct Health {
    /// Failures counted in the current window (or since the peer was marked).
    fails: u32,
    /// When the current counting window began (its first failure).
    window_start: Option<Instant>,
    /// When the peer was last marked failed. Stays set after the down period
    /// ends, until a success proves it healthy: a failure then re-marks it
    /// at once (the failed probe).
    failed_at: Option<Instant>,
    /// Active checks passed in a row since the mark was (last) set.
    passes_since_mark: u32,
}

/// Active health, as the prober found it.
#[derive(Debug, Default)]
struct Check {
    /// Taken out: `fails` checks failed in a row, and since then fewer
    /// than `passes` passed in a row.
    down: bool,
    /// Checks failed in a row (0 after a pass).
    fails: u32,
    /// Checks passed in a row (0 after a failure).
    passes: u32,
    /// When the last check ended; `None` before the first.
    last: Option<SystemTime>,
    /// What the last failed check said, while it is the latest outcome.
    error: Option<String>,
}

/// A change of a peer's state that an active check made, to be logged once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transition {
    /// `fails` checks failed in a row: the peer is out; the last failure.
    Down(String),
    /// `passes` checks passed in a row: an actively down peer is back
    /// (any passive mark cleared with it).
    Up,
    /// A peer only passively marked passed `passes` checks in a row after
    /// its mark: the mark is cleared before its `fail_timeout` ends.
    PassiveCleared,
}

impl Peer {
    /// A peer with no name; on a hash ring it is placed by its position in
    /// the peer list. Prefer [`Peer::with_name`] for `hash` upstreams.
    pub fn new(config: PeerConfig) -> Self {
        Self::with_name(config, String::new())
    }

    /// A peer with a stable name (its address, say) that places it on the
    /// consistent-hash ring, so adding or removing other peers, or a restart,
    /// does not move its keys.
    pub fn with_name(config: PeerConfig, name: impl Into<String>) -> Self {
        Peer {
            config,
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            name: name.into(),
            marked: AtomicBool::new(false),
            health: Mutex::new(Health::default()),
            checked_down: AtomicBool::new(false),
            check: Mutex::new(Check::default()),
            active: AtomicU32::new(0),
            served: AtomicU64::new(0),
            limit: 0,
            at_limit: None,
            spent_at: AtomicU64::new(0),
        }
    }

    /// Limits the peer to `limit` requests (0 = none): once it was sent that
    /// many it is spent, and the request that reached the limit wakes
    /// `notify` (once).
    pub fn with_limit(mut self, limit: u64, notify: Arc<Notify>) -> Self {
        self.limit = limit;
        self.at_limit = (limit > 0).then_some(notify);
        self
    }

    /// Process-unique id of this peer.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The name given to [`Peer::with_name`], or `""`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// False when the operator marked the peer `down`, when active checks
    /// took it out, or when it was marked failed and `fail_timeout` has not
    /// yet passed since.
    pub fn is_available(&self, now: Instant) -> bool {
        if self.config.down || self.checked_down.load(Ordering::Acquire) {
            return false;
        }
        if !self.marked.load(Ordering::Acquire) {
            return true;
        }
        !self.is_failed(&self.lock(), now)
    }

    /// Counts a failed attempt (connect error, timeout, 502/504). When
    /// `max_fails` failures fall within one `fail_timeout` window, the peer
    /// is unavailable for `fail_timeout`; after that a single failure marks
    /// it again. Returns true when this call marked the peer failed.
    pub fn record_failure(&self, now: Instant) -> bool {
        let max_fails = self.config.max_fails;
        if max_fails == 0 {
            return false;
        }
        let timeout = self.config.fail_timeout;
        let mut health = self.lock();
        health.fails = health.fails.saturating_add(1);
        health.passes_since_mark = 0;
        if let Some(failed_at) = health.failed_at {
            if self.is_failed(&health, now) {
                // Requests that were in flight when it was marked: fresh
                // evidence, so the down period runs from the latest one.
                health.failed_at = Some(failed_at.max(now));
                return false;
            }
            // The first requests let through after the down period failed.
            health.failed_at = Some(now);
            return true;
        }
        let window_over = health
            .window_start
            .is_none_or(|start| now.saturating_duration_since(start) >= timeout);
        if window_over {
            health.window_start = Some(now);
            health.fails = 1;
        }
        if health.fails >= max_fails {
            health.failed_at = Some(now);
            self.marked.store(true, Ordering::Release);
            return true;
        }
        false
    }

    /// Clears the failure mark of a peer within its down period, so that it
    /// is tried again at once: what nginx does when every peer of an
    /// upstream is down. Returns true when there was a mark to clear (false
    /// for a peer that is up, `down` by config, taken out by active checks
    /// — their mark is never cleared this way: the prober knows better —
    /// or was cleared meanwhile by another thread).
    pub fn revive(&self, now: Instant) -> bool {
        if self.config.down
            || self.checked_down.load(Ordering::Acquire)
            || !self.marked.load(Ordering::Acquire)
        {
            return false;
        }
        let mut health = self.lock();
        if !self.is_failed(&health, now) {
            return false;
        }
        *health = Health::default();
        self.marked.store(false, Ordering::Release);
        true
    }

    /// Counts a successful attempt. After the down period has ended this
    /// clears the failure count and the mark; within a counting window it
    /// changes nothing (as in nginx, successes do not forgive failures).
    pub fn record_success(&self, now: Instant) {
        if !self.marked.load(Ordering::Acquire) {
            return;
        }
        let mut health = self.lock();
        if health.failed_at.is_some() && !self.is_failed(&health, now) {
            *health = Health::default();
            self.marked.store(false, Ordering::Release);
        }
    }

    /// Counts the outcome of one active check (`Err` says why it failed),
    /// with the upstream's `fails` and `passes`: `fails` failures in a row
    /// take the peer out, then `passes` passes in a row bring it back and
    /// clear its passive mark too. Returns the change to log, if any.
    pub fn record_check(
        &self,
        outcome: Result<(), String>,
        (fails, passes): (u32, u32),
        now: Instant,
    ) -> Option<Transition> {
        let mut check = self.lock_check();
        check.last = Some(SystemTime::now());
        match outcome {
            Err(error) => {
                check.passes = 0;
                check.fails = check.fails.saturating_add(1);
                check.error = Some(error.clone());
                if !check.down && check.fails >= fails.max(1) {
                    check.down = true;
                    self.checked_down.store(true, Ordering::Release);
                    return Some(Transition::Down(error));
                }
                None
            }
            Ok(()) => {
                check.fails = 0;
                check.passes = check.passes.saturating_add(1);
                check.error = None;
                let up = check.down && check.passes >= passes.max(1);
                if up {
                    check.down = false;
                    self.checked_down.store(false, Ordering::Release);
                }
                drop(check);
                if !self.marked.load(Ordering::Acquire) {
                    return up.then_some(Transition::Up);
                }
                let mut health = self.lock();
                health.passes_since_mark = health.passes_since_mark.saturating_add(1);
                let cleared =
                    health.failed_at.is_some() && (up || health.passes_since_mark >= passes.max(1));
                if cleared {
                    let was_failed = self.is_failed(&health, now);
                    *health = Health::default();
                    self.marked.store(false, Ordering::Release);
                    if !up && was_failed {
                        return Some(Transition::PassiveCleared);
                    }
                }
                up.then_some(Transition::Up)
            }
        }
    }

    /// Whether active checks took the peer out.
    pub fn is_checked_down(&self) -> bool {
        self.checked_down.load(Ordering::Acquire)
    }

    /// Requests in flight to this peer.
    pub fn active(&self) -> u32 {
        self.active.load(Ordering::Relaxed)
    }

    /// Requests sent to this peer so far (what `max_requests` counts).
    pub fn served(&self) -> u64 {
        self.served.load(Ordering::Relaxed)
    }

    /// Whether the peer was sent as many requests as its limit allows: the
    /// balancer then picks it only when no other peer is available (a
    /// managed worker at `max_requests` serves on only while it is the last
    /// one). Peers without a limit are never spent.
    pub fn is_spent(&self) -> bool {
        self.limit != 0 && self.served() >= self.limit
    }

    /// Of two spent peers, the one that became spent later has the larger
    /// order (a spent peer not yet stamped counts as the latest). The
    /// balancer gives a spent peer's requests to the latest one, so the
    /// last worker to reach its limit is the one that serves on, and the
    /// others get nothing past theirs.
    pub fn spent_order(&self) -> u64 {
        match self.spent_at.load(Ordering::Relaxed) {
            0 => u64::MAX,
            n => n,
        }
    }

    /// Counts a request sent to the peer, in flight until the returned guard
    /// is dropped; past the limit too (a spent peer picked as the last
    /// resort).
    pub fn begin(self: &Arc<Self>) -> ActiveGuard {
        let served = self.served.fetch_add(1, Ordering::Relaxed) + 1;
        self.count_in(served)
    }

    /// Like [`Peer::begin`], but refuses (`None`) once the peer is spent: a
    /// request on another thread took its last request since the balancer
    /// looked. One atomic operation either way, so the limit is exact under
    /// concurrency too.
    pub fn try_begin(self: &Arc<Self>) -> Option<ActiveGuard> {
        if self.limit == 0 {
            return Some(self.begin());
        }
        let before = self
            .served
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < self.limit).then_some(n + 1)
            })
            .ok()?;
        Some(self.count_in(before + 1))
    }

    /// The in-flight half of [`Peer::begin`], after `served` was counted.
    fn count_in(self: &Arc<Self>, served: u64) -> ActiveGuard {
        self.active.fetch_add(1, Ordering::Relaxed);
        if served == self.limit
            && let Some(notify) = &self.at_limit
        {
            let seq = SPENT_SEQ.fetch_add(1, Ordering::Relaxed);
            self.spent_at.store(seq, Ordering::Relaxed);
            notify.notify_one();
        }
        ActiveGuard {
            peer: Arc::clone(self),
        }
    }

    /// A snapshot for the status page.
    pub fn health(&self, now: Instant) -> PeerHealth {
        let health = self.lock();
        let timeout = self.config.fail_timeout;
        let failed = self.is_failed(&health, now);
        let window_live = health
            .window_start
            .is_some_and(|start| now.saturating_duration_since(start) < timeout);
        let fails = if health.failed_at.is_some() || window_live {
            health.fails
        } else {
            0
        };
        let retry_in_ms = match health.failed_at {
            Some(at) if failed => {
                let left = timeout.saturating_sub(now.saturating_duration_since(at));
                // Round up, so a peer still failed never shows 0.
                Some(u64::try_from(left.as_micros().div_ceil(1000)).unwrap_or(u64::MAX))
            }
            _ => None,
        };
        drop(health);
        let check = self.lock_check();
        let (state, reason) = if self.config.down {
            ("down", Some("config"))
        } else if check.down {
            ("down", Some("active"))
        } else if failed {
            ("failed", Some("passive"))
        } else {
            ("up", None)
        };
        let checked = check.last.map(|last| CheckHealth {
            state: if check.down { "down" } else { "up" },
            fails: check.fails,
            passes: check.passes,
            last_check_unix_ms: last
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            error: check.error.clone(),
        });
        PeerHealth {
            state,
            reason,
            fails,
            retry_in_ms: if self.config.down { None } else { retry_in_ms },
            active: self.active(),
            check: checked,
        }
    }

    /// Whether the peer is within its down period at `now`. An `Instant`
    /// earlier than the mark (another thread's clock read) counts as within.
    fn is_failed(&self, health: &Health, now: Instant) -> bool {
        health
            .failed_at
            .is_some_and(|at| now.saturating_duration_since(at) < self.config.fail_timeout)
    }

    /// The critical sections cannot panic, but a poisoned lock must not
    /// take the peer out for good either.
    fn lock(&self) -> MutexGuard<'_, Health> {
        self.health.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// As [`Peer::lock`], for the active health.
    fn lock_check(&self) -> MutexGuard<'_, Check> {
        self.check.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Holds one request "in flight" on a peer; dropping it ends the request.
#[derive(Debug)]
#[must_use = "the request counts as active only while the guard is alive"]
pub struct ActiveGuard {
    peer: Arc<Peer>,
}

impl ActiveGuard {
    /// The peer this request is on.
    pub fn peer(&self) -> &Arc<Peer> {
        &self.peer
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.peer.active.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A peer's health as the status page shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PeerHealth {
    /// `"up"`, `"down"` (taken out by config or by active checks) or
    /// `"failed"` (passive health).
    pub state: &'static str,
    /// Why it is not up: `"config"`, `"active"` or `"passive"`; `None`
    /// when up.
    pub reason: Option<&'static str>,
    /// Failures counted in the current window.
    pub fails: u32,
    /// While failed: milliseconds until requests are let through again.
    pub retry_in_ms: Option<u64>,
    /// Requests in flight.
    pub active: u32,
    /// Active health, once the peer was checked (an upstream with `health`).
    pub check: Option<CheckHealth>,
}

/// A peer's active health as the status page shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CheckHealth {
    /// `"up"` or `"down"` by the checks alone.
    pub state: &'static str,
    /// Checks failed in a row.
    pub fails: u32,
    /// Checks passed in a row.
    pub passes: u32,
    /// When the last check ended (milliseconds since the Unix epoch).
    pub last_check_unix_ms: u64,
    /// Why the last check failed, while it is the latest outcome.
    pub error: Option<String>,
}

#[cfg(test)]
mod tests;

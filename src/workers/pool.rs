//! One pool of managed workers (one `[upstream.NAME.workers]`): its slots
//! and generations, what happens when a process gets ready, fails or exits,
//! recycling, rolling restarts, resizing, stopping, and publishing the
//! ready workers as the members of every upstream object of that name.
//!
//! The [`Pool`] is a plain state machine behind a mutex: every change goes
//! through [`PoolShared::update`], which afterwards starts what is missing
//! ([`Pool::reconcile`]), logs a change of failing state once, and
//! publishes the members if they changed. A task per pool feeds it the
//! processes' [`Event`]s, the wake-up of a worker's peer reaching
//! `max_requests` (so recycling follows the request that reached the limit
//! at once), and a tick (for backoff, `max_rss` and the failure count's
//! reset). Processes are started from here, on the control thread, and
//! then run by [`process::run`].

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tokio::sync::mpsc::{self, UnboundedReceiver, UnboundedSender};
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use super::process::{self, Event, Life};
use super::sockets::SocketDir;
use super::spawn::{self, Ident};
use crate::config::PeerAddr;
use crate::config::model::Workers as WorkersDef;
use crate::upstream::Upstream;
use crate::upstream::peer::{Peer, PeerConfig};

mod events;
mod figures;
mod recycle;
mod status;

pub use figures::{Figures, Recycled, STATES};
pub use status::{PoolStatus, ProcStatus};

/// How often the pool looks at its workers (backoff, recycling).
const TICK: Duration = Duration::from_millis(100);

/// Resident memory is read every this many ticks (~1 s).
const RSS_EVERY: u64 = 10;

/// A slot's backoff and failure count are reset once a worker in it stayed
/// ready this long.
const STABLE: Duration = Duration::from_secs(5);

/// Failed starts in a row after which the pool is reported as failing.
const FAILING_AFTER: u32 = 3;

/// What every pool of a registry shares.
#[derive(Clone)]
pub(super) struct Ctx {
    /// The private directory for the workers' sockets.
    pub sockets: Arc<SocketDir>,
    /// Numbers every process the registry starts.
    pub seq: Arc<AtomicU64>,
}

/// A pool as the registry holds it: its state, and the upstream objects it
/// feeds.
pub(super) struct PoolShared {
    pool: Mutex<Pool>,
    attached: Mutex<Attached>,
}

/// The upstream objects of the pool's name (old snapshots' too, while they
/// live) and the members last given to them.
#[derive(Default)]
struct Attached {
    upstreams: Vec<Weak<Upstream>>,
    members: Vec<(Arc<Peer>, PeerAddr)>,
    /// What the upstreams were last told of successors for spent workers
    /// ([`Upstream::expect_successors`]): expected unless the pool is
    /// stopping or failing.
    expected: bool,
}

/// The state of one pool.
pub(super) struct Pool {
    name: Arc<str>,
    /// The definition the current generation runs.
    def: WorkersDef,
    /// 1 at start, +1 per rolling restart.
    generation: u64,
    /// The current generation's slots; `def.count` of them.
    slots: Vec<Slot>,
    /// During a rolling restart: the previous generation's ready workers,
    /// serving until every slot of the new one has a ready worker.
    previous: Vec<u64>,
    /// Every process alive, by key (starting, ready, draining, stopping).
    procs: BTreeMap<u64, Proc>,
    /// Replacements after failures, pool total.
    restarts: u64,
    /// Workers recycled, pool total, by [`Recycled`] reason.
    recycles: [u64; 2],
    /// The latest failure, "worker N: what happened".
    last_error: Option<String>,
    /// Whether "failing" was last logged (a change is logged once).
    failing_logged: bool,
    /// Set once the pool is being stopped for good.
    stopping: bool,
    /// Peer ids last published, in order.
    published: Option<Vec<u64>>,
    events: UnboundedSender<Event>,
    /// Woken by the request that takes a worker's peer to its limit.
    at_limit: Arc<Notify>,
    ctx: Ctx,
    ticks: u64,
}

/// One place for a worker: the ready process serving in it, and the one
/// starting (the first, a replacement after a failure, or a recycled
/// worker's successor).
struct Slot {
    serving: Option<u64>,
    starting: Option<u64>,
    /// Failures in a row (failed starts, and exits before [`STABLE`]).
    failures: u32,
    /// The delay before the next start after a failure.
    backoff: Duration,
    /// No start before this (set after a failure).
    retry_at: Option<Instant>,
    /// When the latest process of this slot got ready, unless one failed
    /// since.
    last_ready: Option<Instant>,
    /// Replacements after failures in this slot.
    restarts: u64,
}

impl Slot {
    fn new(backoff: Duration) -> Slot {
        Slot {
            serving: None,
            starting: None,
            failures: 0,
            backoff,
            retry_at: None,
            last_ready: None,
            restarts: 0,
        }
    }
}

/// One process.
struct Proc {
    slot: usize,
    generation: u64,
    pid: u32,
    peer: Arc<Peer>,
    addr: PeerAddr,
    started: Instant,
    state: ProcState,
    stop: CancellationToken,
    /// Requests after which it is recycled (`max_requests` + jitter, drawn
    /// when it starts); its peer counts them and yields at this number.
    limit: Option<u64>,
    /// Why it is being replaced, once it is.
    recycle: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ProcState {
    Starting,
    Ready,
    Draining,
    Stopping,
}

impl PoolShared {
    /// Creates the pool, starts its workers and the task that supervises
    /// them (on the current runtime, which must be the control thread's).
    pub(super) fn start(
        name: &str,
        def: WorkersDef,
        ctx: Ctx,
    ) -> (Arc<PoolShared>, JoinHandle<()>) {
        let (tx, rx) = mpsc::unbounded_channel();
        tracing::info!(pool = name, count = def.count, "starting managed workers");
        let pool = Pool {
            name: Arc::from(name),
            slots: (0..def.count).map(|_| Slot::new(def.backoff_min)).collect(),
            def,
            generation: 1,
            previous: Vec::new(),
            procs: BTreeMap::new(),
            restarts: 0,
            recycles: [0; 2],
            last_error: None,
            failing_logged: false,
            stopping: false,
            published: None,
            events: tx,
            at_limit: Arc::new(Notify::new()),
            ctx,
            ticks: 0,
        };
        let at_limit = pool.at_limit.clone();
        let shared = Arc::new(PoolShared {
            pool: Mutex::new(pool),
            attached: Mutex::new(Attached::default()),
        });
        shared.update(|_, _| {});
        let task = tokio::spawn(supervise(shared.clone(), rx, at_limit));
        (shared, task)
    }

    /// Runs `f` on the pool, then starts what is missing, logs a change of
    /// failing state and publishes the members if they changed.
    pub(super) fn update<R>(&self, f: impl FnOnce(&mut Pool, Instant) -> R) -> R {
        let mut pool = lock(&self.pool);
        let now = Instant::now();
        let r = f(&mut pool, now);
        pool.reconcile(now);
        pool.log_failing();
        let expected = !pool.stopping && !pool.failing();
        let changed = pool.changed_members();
        let mut attached = lock(&self.attached);
        if let Some(members) = changed {
            attached.upstreams.retain(|w| w.strong_count() > 0);
            for up in attached.upstreams.iter().filter_map(Weak::upgrade) {
                up.set_members(members.clone());
            }
            attached.members = members;
        }
        if attached.expected != expected {
            attached.expected = expected;
            for up in attached.upstreams.iter().filter_map(Weak::upgrade) {
                up.expect_successors(expected);
            }
        }
        r
    }

    /// Makes `up` follow this pool's ready workers, starting now.
    pub(super) fn attach(&self, up: &Arc<Upstream>) {
        let mut attached = lock(&self.attached);
        attached.upstreams.retain(|w| w.strong_count() > 0);
        if attached
            .upstreams
            .iter()
            .any(|w| std::ptr::eq(w.as_ptr(), Arc::as_ptr(up)))
        {
            return;
        }
        up.set_members(attached.members.clone());
        up.expect_successors(attached.expected);
        attached.upstreams.push(Arc::downgrade(up));
    }

    /// The pool's `/status` entry.
    pub(super) fn status(&self) -> PoolStatus {
        lock(&self.pool).status(Instant::now())
    }

    /// True once a stopping pool has no process left.
    pub(super) fn finished(&self) -> bool {
        let pool = lock(&self.pool);
        pool.stopping && pool.procs.is_empty()
    }

    /// The pids of the processes alive (for a last-resort SIGKILL).
    pub(super) fn pids(&self) -> Vec<u32> {
        lock(&self.pool).procs.values().map(|p| p.pid).collect()
    }
}

/// The pool's task: events from its processes, workers reaching
/// `max_requests`, and a tick, until it was stopped and every process is
/// gone.
async fn supervise(
    shared: Arc<PoolShared>,
    mut events: UnboundedReceiver<Event>,
    at_limit: Arc<Notify>,
) {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            ev = events.recv() => match ev {
                Some(ev) => shared.update(|pool, now| pool.on_event(ev, now)),
                None => break,
            },
            () = at_limit.notified() => shared.update(|pool, _| pool.recycle(false)),
            _ = tick.tick() => shared.update(|pool, now| pool.tick(now)),
        }
        if shared.finished() {
            break;
        }
    }
}

impl Pool {
    /// Takes a new definition: the same one changes nothing, a new count
    /// adds or removes workers, anything else rolls the pool.
    pub(super) fn redefine(&mut self, def: WorkersDef) {
        if self.stopping || def == self.def {
            return;
        }
        if def.same_processes(&self.def) {
            self.resize(def.count);
        } else {
            self.roll(def, "the definition changed");
        }
    }

    /// A rolling restart with the same definition (the admin endpoint);
    /// returns the new generation.
    pub(super) fn restart(&mut self) -> u64 {
        if !self.stopping {
            self.roll(self.def.clone(), "asked for");
        }
        self.generation
    }

    /// Starts a new generation of `def`. The old generation's ready workers
    /// keep serving until every new slot has a ready worker; if a rolling
    /// restart was already under way, its new generation (not fully ready)
    /// is dropped instead, and the oldest one keeps serving.
    fn roll(&mut self, def: WorkersDef, why: &str) {
        self.generation += 1;
        let in_progress = !self.previous.is_empty();
        for slot in std::mem::take(&mut self.slots) {
            if let Some(key) = slot.starting {
                self.retire(key);
            }
            if let Some(key) = slot.serving {
                if in_progress {
                    self.retire(key);
                } else {
                    self.previous.push(key);
                }
            }
        }
        self.slots = (0..def.count).map(|_| Slot::new(def.backoff_min)).collect();
        self.def = def;
        tracing::info!(
            pool = %self.name,
            generation = self.generation,
            "rolling restart ({why}): starting {} new workers",
            self.def.count
        );
    }

    /// Adds slots, or drains and stops the highest ones.
    fn resize(&mut self, count: usize) {
        tracing::info!(pool = %self.name, from = self.slots.len(), to = count, "resizing the pool");
        if count > self.slots.len() {
            let min = self.def.backoff_min;
            self.slots.resize_with(count, || Slot::new(min));
        } else {
            let gone: Vec<Slot> = self.slots.drain(count..).collect();
            for slot in gone {
                for key in slot.starting.into_iter().chain(slot.serving) {
                    self.retire(key);
                }
            }
        }
        self.def.count = count;
    }

    /// Stops every worker for good (drained first).
    pub(super) fn begin_stop(&mut self) {
        if self.stopping {
            return;
        }
        self.stopping = true;
        let keys: Vec<u64> = self.procs.keys().copied().collect();
        for key in keys {
            self.retire(key);
        }
        self.previous.clear();
        self.slots.clear();
        tracing::info!(pool = %self.name, "stopping managed workers");
    }

    /// The definition's `stop_timeout`.
    pub(super) fn stop_timeout(&self) -> Duration {
        self.def.stop_timeout
    }

    /// Takes a process out of the members and tells it to stop (a ready
    /// one drains first). The caller unlinks it from its slot.
    fn retire(&mut self, key: u64) {
        if let Some(p) = self.procs.get_mut(&key) {
            p.stop.cancel();
            p.state = match p.state {
                ProcState::Ready => ProcState::Draining,
                ProcState::Starting => ProcState::Stopping,
                other => other,
            };
        }
    }

    /// Starts a process in every slot that needs one (and whose backoff
    /// passed); ends a rolling restart once every new slot is served.
    pub(super) fn reconcile(&mut self, now: Instant) {
        if self.stopping {
            return;
        }
        for i in 0..self.slots.len() {
            let slot = &self.slots[i];
            let replacing = slot
                .serving
                .and_then(|k| self.procs.get(&k))
                .is_some_and(|p| p.recycle.is_some());
            let due = slot.retry_at.is_none_or(|t| now >= t);
            if slot.starting.is_none() && (slot.serving.is_none() || replacing) && due {
                self.start(i, now);
            }
        }
        if !self.previous.is_empty()
            && !self.slots.is_empty()
            && self.slots.iter().all(|s| s.serving.is_some())
        {
            for key in std::mem::take(&mut self.previous) {
                self.retire(key);
            }
            tracing::info!(pool = %self.name, generation = self.generation, "rolling restart done; the previous generation is draining");
        }
    }

    /// Spawns a process for slot `i` and its task.
    fn start(&mut self, i: usize, now: Instant) {
        let seq = self.ctx.seq.fetch_add(1, Ordering::Relaxed) + 1;
        let who = Ident {
            pool: &self.name,
            slot: i,
            seq,
        };
        let spawned = match spawn::spawn(&who, &self.def, &self.ctx.sockets) {
            Ok(s) => s,
            Err(why) => return self.slot_failed(i, &why, now),
        };
        let stop = CancellationToken::new();
        let max = self.def.max_requests;
        // The jitter is drawn now, so the limit is exact for this worker.
        let limit = (max > 0).then(|| max.saturating_add(fastrand::u64(0..=max / 10)));
        let peer = Arc::new(
            Peer::with_name(PeerConfig::default(), spawned.addr.to_string())
                .with_limit(limit.unwrap_or(0), self.at_limit.clone()),
        );
        tracing::debug!(pool = %self.name, worker = i, pid = spawned.pid, addr = %spawned.addr, "worker started");
        self.procs.insert(
            seq,
            Proc {
                slot: i,
                generation: self.generation,
                pid: spawned.pid,
                peer: peer.clone(),
                addr: spawned.addr.clone(),
                started: now,
                state: ProcState::Starting,
                stop: stop.clone(),
                limit,
                recycle: None,
            },
        );
        if let Some(slot) = self.slots.get_mut(i) {
            slot.starting = Some(seq);
            slot.retry_at = None;
        }
        tokio::spawn(process::run(Life {
            key: seq,
            spawned,
            ready: self.def.ready.clone(),
            protocol: self.def.protocol,
            root: self.def.root.clone(),
            start_timeout: self.def.start_timeout,
            stop_timeout: self.def.stop_timeout,
            peer,
            stop,
            events: self.events.clone(),
        }));
    }

    /// True when a slot keeps failing and has no ready worker since.
    fn failing(&self) -> bool {
        !self.stopping
            && self
                .slots
                .iter()
                .any(|s| s.failures >= FAILING_AFTER && s.last_ready.is_none())
    }

    /// Logs a change of failing state, once per change.
    fn log_failing(&mut self) {
        let failing = self.failing();
        if failing == self.failing_logged {
            return;
        }
        self.failing_logged = failing;
        let error = self.last_error.as_deref().unwrap_or("");
        if failing {
            tracing::warn!(pool = %self.name, "workers keep failing: {error}; retrying with backoff");
        } else {
            tracing::info!(pool = %self.name, "workers start again");
        }
    }

    /// The ready workers, if they differ from those last published.
    fn changed_members(&mut self) -> Option<Vec<(Arc<Peer>, PeerAddr)>> {
        let mut ready: Vec<&Proc> = self
            .procs
            .values()
            .filter(|p| p.state == ProcState::Ready)
            .collect();
        ready.sort_by_key(|p| (p.generation, p.slot));
        let ids: Vec<u64> = ready.iter().map(|p| p.peer.id()).collect();
        if self.published.as_ref() == Some(&ids) {
            return None;
        }
        let list = ready
            .iter()
            .map(|p| (p.peer.clone(), p.addr.clone()))
            .collect();
        self.published = Some(ids);
        Some(list)
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

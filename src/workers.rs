//! Managed app workers (`[upstream.NAME.workers]`): moongate spawns the app
//! processes of an upstream itself, like gunicorn's master or supervisord,
//! and feeds the ready ones to the upstream as its members.
//!
//! The [`Registry`] (one per server, in [`crate::state::Shared`]) holds a
//! pool per upstream with workers. [`Registry::apply`] is called with each
//! new snapshot's upstreams just before it is swapped in (and at start): it
//! starts new pools, changes the others (same definition: nothing; a new
//! count: workers added or drained; anything else: a rolling restart), makes
//! every upstream object of a pool's name follow its ready workers, and
//! drains and stops the pools whose upstream is gone.
//! [`Registry::stop_all`] ends them all on a graceful stop.
//!
//! Layout: `sockets` owns the private socket directory, `spawn` starts
//! one process (argv, process group, parent-death signal, log
//! forwarding), `ready` probes a new one,
//! `process` runs one process's life (ready, serve, drain, stop, reap),
//! `pool` is one pool's state machine (slots, generations, backoff,
//! recycling, rolling restarts, members, status).
//!
//! Everything here runs on the control thread's runtime: the parent-death
//! signal (SIGKILL, so no worker outlives moongate even when moongate is
//! killed) is tied to the thread that forked the worker, and the control
//! thread lives as long as the server.

mod sockets;
mod spawn;
mod ready;
mod process;
mod pool;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use nix::sys::signal::Signal;
use tokio::task::JoinHandle;

use crate::upstream::Upstream;
use pool::{Ctx, PoolShared};
pub use pool::{Figures, Recycled, STATES};
pub use pool::{PoolStatus, ProcStatus};
use sockets::SocketDir;

/// Added to the longest stop of a pool before [`Registry::stop_all`] gives
/// up waiting and kills what is left.
const STOP_GRACE: Duration = Duration::from_secs(2);

/// How often [`Registry::wait_started`] looks at the pools.
const STARTED_POLL: Duration = Duration::from_millis(50);

/// Every pool of managed workers of one server.
pub struct Registry {
    inner: Mutex<Inner>,
    ctx: Ctx,
}

#[derive(Default)]
struct Inner {
    /// The pools of the current configuration, by upstream name.
    pools: BTreeMap<String, Entry>,
    /// Pools whose upstream is gone, while they drain and stop.
    leaving: Vec<(String, Entry)>,
    /// Set by [`Registry::stop_all`]: nothing starts after it.
    stopped: bool,
}

struct Entry {
    shared: Arc<PoolShared>,
    task: JoinHandle<()>,
}

impl Default for Registry {
    fn default() -> Self {
        Self::new()
    }
}

impl Registry {
    /// An empty registry; nothing is started until [`Registry::apply`].
    pub fn new() -> Registry {
        Registry {
            inner: Mutex::new(Inner::default()),
            ctx: Ctx {
                sockets: Arc::new(SocketDir::new()),
                seq: Arc::new(AtomicU64::new(0)),
            },
        }
    }

    /// Brings the pools in line with `upstreams` (a new snapshot's, before it
    /// is swapped in): see the module docs. Every upstream object with
    /// workers gets the pool's ready workers as members before this returns,
    /// so a new snapshot never shows a managed upstream without its ready
    /// workers. Must be called on the control thread's runtime.
    pub fn apply(&self, upstreams: &BTreeMap<String, Arc<Upstream>>) {
        let mut inner = lock(&self.inner);
        if inner.stopped {
            return;
        }
        let mut wanted = BTreeSet::new();
        for (name, up) in upstreams {
            let Some(def) = &up.def.workers else { continue };
            wanted.insert(name.as_str());
            let entry = match inner.pools.get(name) {
                Some(entry) => {
                    entry.shared.update(|pool, _| pool.redefine(def.clone()));
                    entry
                }
                None => {
                    let (shared, task) = PoolShared::start(name, def.clone(), self.ctx.clone());
                    inner
                        .pools
                        .entry(name.clone())
                        .or_insert(Entry { shared, task })
                }
            };
            entry.shared.attach(up);
        }
        let gone: Vec<String> = inner
            .pools
            .keys()
            .filter(|n| !wanted.contains(n.as_str()))
            .cloned()
            .collect();
        for name in gone {
            if let Some(entry) = inner.pools.remove(&name) {
                tracing::info!(pool = %name, "its upstream is gone or has no workers now");
                entry.shared.update(|pool, _| pool.begin_stop());
                inner.leaving.push((name, entry));
            }
        }
        inner.leaving.retain(|(_, e)| !e.task.is_finished());
    }

    /// A rolling restart of pool `name` with its current definition; the new
    /// generation, or `None` when there is no such pool.
    pub fn restart(&self, name: &str) -> Option<u64> {
        let inner = lock(&self.inner);
        let entry = inner.pools.get(name)?;
        Some(entry.shared.update(|pool, _| pool.restart()))
    }

    /// The names of the pools running now.
    pub fn names(&self) -> Vec<String> {
        lock(&self.inner).pools.keys().cloned().collect()
    }

    /// Every pool's figures for `GET /metrics`, by name (a pool whose
    /// upstream is gone counts under its name while it stops).
    pub fn figures(&self) -> BTreeMap<String, Figures> {
        let inner = lock(&self.inner);
        let mut out: BTreeMap<String, Figures> = BTreeMap::new();
        let leaving = inner.leaving.iter().filter(|(_, e)| !e.task.is_finished());
        for (name, entry) in inner.pools.iter().chain(leaving.map(|(n, e)| (n, e))) {
            out.entry(name.clone())
                .or_default()
                .add(&entry.shared.figures());
        }
        out
    }

    /// `/status`'s "workers" object: every pool by name (those whose
    /// upstream is gone too, while they stop).
    pub fn status(&self) -> BTreeMap<String, PoolStatus> {
        let inner = lock(&self.inner);
        let mut map = BTreeMap::new();
        for (name, entry) in &inner.leaving {
            if !entry.task.is_finished() {
                map.insert(name.clone(), entry.shared.status());
            }
        }
        for (name, entry) in &inner.pools {
            map.insert(name.clone(), entry.shared.status());
        }
        map
    }

    /// Waits until no pool is still starting its first workers (each has a
    /// ready worker, or is failing and says so in the log and `/status`),
    /// at most the longest `start_timeout` and a second; `true` when none
    /// is left starting. systemd's `READY=1` waits for this, so that a
    /// started unit means its apps answer too.
    pub async fn wait_started(&self) -> bool {
        let starting = || {
            let inner = lock(&self.inner);
            let each = inner.pools.values().map(|e| e.shared.starting());
            each.fold((false, Duration::ZERO), |(any, longest), (s, t)| {
                (any || s, longest.max(t))
            })
        };
        let deadline = tokio::time::Instant::now() + starting().1 + Duration::from_secs(1);
        loop {
            if !starting().0 {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(STARTED_POLL).await;
        }
    }

    /// Stops every worker: out of the members, drained, SIGTERM to its
    /// group, SIGKILL after `stop_timeout`, reaped; then removes the socket
    /// directory. Returns when all are gone (bounded: what is left after
    /// twice the longest `stop_timeout` and a little is killed at once).
    pub async fn stop_all(&self) {
        let mut entries: Vec<Entry> = {
            let mut inner = lock(&self.inner);
            inner.stopped = true;
            let pools = std::mem::take(&mut inner.pools).into_values();
            let leaving = std::mem::take(&mut inner.leaving)
                .into_iter()
                .map(|(_, e)| e);
            pools.chain(leaving).collect()
        };
        let mut longest = Duration::ZERO;
        for entry in &entries {
            let t = entry.shared.update(|pool, _| {
                pool.begin_stop();
                pool.stop_timeout()
            });
            longest = longest.max(t);
        }
        let deadline = tokio::time::Instant::now() + longest * 2 + STOP_GRACE;
        for entry in &mut entries {
            if tokio::time::timeout_at(deadline, &mut entry.task)
                .await
                .is_err()
            {
                for pid in entry.shared.pids() {
                    tracing::warn!(pid, "worker still running at exit; killing it");
                    spawn::signal_group(pid, Signal::SIGKILL);
                }
            }
        }
        self.ctx.sockets.remove();
        if !entries.is_empty() {
            tracing::info!("managed workers stopped");
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests;

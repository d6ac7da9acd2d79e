//! State shared by every thread for the life of the process: the current
//! snapshot (swapped by reloads), the access log sink, what `/status`
//! reports about reloads, and the managed app workers. Per-thread state
//! (pooled connections, Lua VMs) lives in each worker's
//! [`WorkerLocal`](crate::worker_local::WorkerLocal); per-upstream state lives in
//! the `Arc<Upstream>`s that snapshots share.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use arc_swap::ArcSwap;

use crate::access_log::AccessLog;
use crate::snapshot::Snapshot;
use crate::workers::Registry;

/// Shared by the control thread and every worker.
pub struct Shared {
    /// The configuration requests are served with; replaced whole by reloads.
    pub snapshot: ArcSwap<Snapshot>,
    /// Where access log lines go.
    pub access_log: AccessLog,
    /// When the server started (for uptime).
    pub started: Instant,
    /// Worker threads serving requests.
    pub workers: usize,
    /// The outcome of reloads, for `/status`.
    pub reloads: Mutex<ReloadStatus>,
    /// Binary upgrades asked of this process, for `/status`.
    pub upgrades: crate::upgrade::Tracker,
    /// This process's id among nodes (pid and start time), so a purge it
    /// fans out is not applied twice here.
    pub node_id: String,
    /// The pools of managed app workers (`[upstream.NAME.workers]`); they
    /// outlive reloads and are stopped with the server.
    pub app_workers: Arc<Registry>,
    /// Connections accepted so far: each takes the next number
    /// (`$connection`, unique in the process as nginx's).
    pub connections: AtomicU64,
    /// Every worker's counters, added up by `GET /metrics`.
    pub metrics: crate::metrics::Registry,
    /// Idle keep-alive connections to upstream peers, shared by every
    /// worker thread.
    pub upstream_pool: Arc<crate::upstream::pool::SharedPool>,
}

/// What `/status` says about reloads.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ReloadStatus {
    /// Successful reloads since start.
    pub reloads: u64,
    /// Failed reloads since start.
    pub failures: u64,
    /// The most recent attempt.
    pub last: Option<ReloadAttempt>,
}

/// One reload attempt.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ReloadAttempt {
    /// True when the new configuration was swapped in.
    pub ok: bool,
    /// What asked for it: "watch", "signal", "admin", "start".
    pub trigger: String,
    /// Seconds since the Unix epoch.
    pub at: u64,
    /// The generation serving after the attempt.
    pub generation: u64,
    /// The error (file:line:column: message) when it failed.
    pub error: Option<String>,
}

impl Shared {
    /// Records a reload attempt.
    pub fn record_reload(&self, trigger: &str, result: Result<u64, String>) {
        let generation = self.snapshot.load().generation;
        let at = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let mut st = match self.reloads.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        let (ok, error) = match result {
            Ok(_) => {
                st.reloads += 1;
                (true, None)
            }
            Err(e) => {
                st.failures += 1;
                (false, Some(e))
            }
        };
        st.last = Some(ReloadAttempt {
            ok,
            trigger: trigger.to_string(),
            at,
            generation,
            error,
        });
    }

    /// A copy of the reload status.
    pub fn reload_status(&self) -> ReloadStatus {
        match self.reloads.lock() {
            Ok(g) => g.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }
}

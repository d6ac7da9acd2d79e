//! Zero-downtime binary upgrade (nginx's `USR2` + `QUIT`, Pingora's socket
//! hand-off), Linux only. On SIGUSR2 (what `moongate upgrade` sends) the
//! serving process starts the executable at the path it was started from
//! (read from disk again, so a package upgrade that replaced the file runs
//! the new one) with its own arguments, and passes it every listening
//! socket — plain, TLS and admin — over a unix socket ([`wire`]). The new
//! process adopts them instead of binding, starts its managed worker pools
//! and waits for them, then reports ready; only then does the old process
//! stop accepting and drain as on SIGTERM, and stop its own pools. A new
//! process that fails (bad configuration, crash, no answer in time) is
//! stopped and the old one keeps serving and logs why.
//!
//! Layout: [`wire`] is the channel and its messages, `handoff` the old
//! process's side (start the binary, send the sockets, wait for the
//! answer), `child` the new process's side ([`Taking`]); this file holds
//! what both share, where the binary is found ([`Relaunch`]), the one
//! upgrade at a time a server runs ([`Upgrader`]) and what `/status` says
//! about it ([`Tracker`]). `request` is `moongate upgrade`'s side.

pub mod wire;
mod handoff;
mod child;
mod request;

use std::ffi::{OsStr, OsString};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use child::Taking;
pub use request::{Requested, request};
pub use wire::Kind;

use crate::reload::Control;
use crate::snapshot::Snapshot;
use crate::workers::Registry;

/// The environment variable naming the hand-off socket; set by the old
/// process for the new one only.
pub const SOCKET_ENV: &str = "MOONGATE_UPGRADE_SOCKET";

/// How long the old process waits for the new one to report ready, on top
/// of twice the longest managed-worker `start_timeout` (loading the
/// configuration, compiling the Lua, binding new listeners).
const READY_BASE: Duration = Duration::from_secs(30);

/// How long the new process waits for its managed workers beyond the
/// longest `start_timeout` before it reports ready with what it has (at
/// least one ready worker per pool) or gives up.
const POOLS_GRACE: Duration = Duration::from_secs(5);

/// A listening socket on its way to the new process, or just received.
#[derive(Debug)]
pub struct Passed {
    /// What it was in the old process.
    pub kind: Kind,
    /// Its configured address there (port 0 included).
    pub key: SocketAddr,
    /// The socket itself.
    pub socket: std::net::TcpListener,
}

/// The executable and arguments this process was started with, resolved
/// at start: the binary an upgrade runs.
#[derive(Debug, Clone)]
pub struct Relaunch {
    /// `argv[0]` made absolute against the start directory, or found on
    /// `PATH`; not `/proc/self/exe`, which still names the old file after a
    /// package upgrade replaced it.
    pub program: PathBuf,
    /// The arguments after `argv[0]`.
    pub args: Vec<OsString>,
}

impl Relaunch {
    /// This process's own command line (call it early: the directory a
    /// relative `argv[0]` is resolved against is the current one).
    pub fn from_start() -> Relaunch {
        let mut argv = std::env::args_os();
        let argv0 = argv.next();
        let cwd = std::env::current_dir().ok();
        let path = std::env::var_os("PATH");
        let program = argv0
            .as_deref()
            .and_then(|a| resolve(Path::new(a), cwd.as_deref(), path.as_deref()))
            .or_else(|| std::env::current_exe().ok())
            .unwrap_or_else(|| PathBuf::from("moongate"));
        Relaunch {
            program,
            args: argv.collect(),
        }
    }
}

/// Where `argv0` names a file: a path with a slash against `cwd`, a bare
/// name by `PATH` (as the shell found it).
fn resolve(argv0: &Path, cwd: Option<&Path>, path: Option<&OsStr>) -> Option<PathBuf> {
    if argv0.as_os_str().is_empty() {
        return None;
    }
    if argv0.is_absolute() {
        return Some(argv0.to_path_buf());
    }
    if argv0.components().count() > 1 {
        return cwd.map(|c| c.join(argv0));
    }
    std::env::split_paths(path?)
        .filter_map(|dir| {
            if dir.is_absolute() {
                Some(dir)
            } else {
                cwd.map(|c| c.join(dir))
            }
        })
        .map(|dir| dir.join(argv0))
        .find(|p| executable(p))
}

fn executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// What `/status` says about binary upgrades asked of this process.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct UpgradeStatus {
    /// An upgrade is under way.
    pub running: bool,
    /// Upgrades begun (`moongate upgrade` waits for this to move).
    pub attempts: u64,
    /// Upgrades that failed (this process went on serving).
    pub failures: u64,
    /// The latest attempt that ended.
    pub last: Option<UpgradeAttempt>,
}

/// One upgrade attempt that ended.
#[derive(Debug, Clone, serde::Serialize)]
pub struct UpgradeAttempt {
    /// True when the new process took over.
    pub ok: bool,
    /// Seconds since the Unix epoch.
    pub at: u64,
    /// The executable started.
    pub program: String,
    /// The new process's pid, once it was started.
    pub pid: Option<u32>,
    /// Why it failed.
    pub error: Option<String>,
}

/// Records upgrades for `/status`.
#[derive(Debug, Default)]
pub struct Tracker {
    inner: Mutex<UpgradeStatus>,
}

impl Tracker {
    fn update(&self, f: impl FnOnce(&mut UpgradeStatus)) {
        let mut st = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut st);
    }

    /// A copy of the status.
    pub fn status(&self) -> UpgradeStatus {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// How an upgrade ended: the new process serves, or why not (and the pid
/// of the new process if one was started).
type Outcome = Result<u32, (String, Option<u32>)>;

/// The upgrade a server's signal loop may have under way (one at a time).
pub struct Upgrader {
    relaunch: Option<Relaunch>,
    task: Option<JoinHandle<Outcome>>,
    abandon: CancellationToken,
}

impl Upgrader {
    /// `relaunch` is `None` when upgrades are off (an embedding program).
    pub fn new(relaunch: Option<Relaunch>) -> Upgrader {
        Upgrader {
            relaunch,
            task: None,
            abandon: CancellationToken::new(),
        }
    }

    /// Begins an upgrade, unless one is under way or upgrades are off.
    pub fn start(&mut self, control: &Arc<Control>) {
        if self.task.is_some() {
            tracing::warn!("upgrade: one is already under way; this request is ignored");
            return;
        }
        let Some(relaunch) = self.relaunch.clone() else {
            tracing::warn!("upgrade: this program does not upgrade itself; SIGUSR2 ignored");
            return;
        };
        self.abandon = CancellationToken::new();
        self.task = Some(tokio::spawn(run(
            control.clone(),
            relaunch,
            self.abandon.clone(),
        )));
    }

    /// Resolves when the upgrade under way ends, with the new process's pid
    /// once it serves (never, while none runs).
    pub async fn finished(&mut self) -> Result<u32, String> {
        let Some(task) = &mut self.task else {
            return std::future::pending().await;
        };
        let outcome = task.await;
        self.task = None;
        match outcome {
            Ok(Ok(pid)) => Ok(pid),
            Ok(Err((e, _))) => Err(e),
            Err(e) => Err(format!("the upgrade task failed: {e}")),
        }
    }

    /// This process is stopping: a new process still starting is stopped.
    pub fn abandon(&self) {
        self.abandon.cancel();
    }
}

/// One upgrade, from the old process's side: see the module docs.
async fn run(control: Arc<Control>, relaunch: Relaunch, abandon: CancellationToken) -> Outcome {
    let shared = control.shared.clone();
    shared.upgrades.update(|s| {
        s.running = true;
        s.attempts += 1;
    });
    let outcome = hand_over(&control, relaunch.clone(), abandon).await;
    let me = std::process::id();
    match &outcome {
        Ok(pid) => tracing::info!(
            "upgrade: pid {pid} serves now; this process (pid {me}) stops accepting and drains"
        ),
        Err((e, _)) => {
            tracing::error!("upgrade failed; still serving (pid {me}): {e}");
            // The failed process may have written its pid already.
            if let Some(path) = &shared.snapshot.load().server.pid_file
                && let Err(e) = std::fs::write(path, format!("{me}\n"))
            {
                tracing::warn!(path = %path.display(), error = %e, "cannot write the pid file");
            }
        }
    }
    let at = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    shared.upgrades.update(|s| {
        s.running = false;
        if outcome.is_err() {
            s.failures += 1;
        }
        s.last = Some(UpgradeAttempt {
            ok: outcome.is_ok(),
            at,
            program: relaunch.program.display().to_string(),
            pid: match &outcome {
                Ok(pid) => Some(*pid),
                Err((_, pid)) => *pid,
            },
            error: outcome.as_ref().err().map(|(e, _)| e.clone()),
        });
    });
    outcome
}

/// Freezes the listeners (no reload changes them meanwhile), and runs the
/// blocking hand-off on a thread of its own.
async fn hand_over(control: &Control, relaunch: Relaunch, abandon: CancellationToken) -> Outcome {
    let frozen = control.freeze().await;
    let sockets = frozen
        .sockets()
        .map_err(|e| (format!("cannot pass the listening sockets on: {e}"), None))?;
    let timeout = READY_BASE + longest_start(&control.shared.snapshot.load()) * 2;
    tracing::info!(
        program = %relaunch.program.display(),
        sockets = sockets.len(),
        "upgrade: starting the new binary and handing it the listening sockets"
    );
    let (tx, rx) = oneshot::channel();
    std::thread::Builder::new()
        .name("moongate-upgrade".into())
        .spawn(move || {
            let _ = tx.send(handoff::hand_over(&relaunch, sockets, timeout, &abandon));
        })
        .map_err(|e| (format!("cannot start the hand-off thread: {e}"), None))?;
    let outcome = rx
        .await
        .unwrap_or_else(|_| Err(("the hand-off thread ended without an answer".into(), None)));
    drop(frozen);
    outcome
}

/// The longest `start_timeout` of the managed pools in `snap`.
fn longest_start(snap: &Snapshot) -> Duration {
    snap.upstreams
        .values()
        .filter_map(|u| u.def.workers.as_ref())
        .map(|w| w.start_timeout)
        .max()
        .unwrap_or_default()
}

/// In the new process: waits until every managed pool of `snap` has all its
/// workers ready, as long as the longest `start_timeout` and a little;
/// then at least one ready worker per pool will do. A pool that is failing
/// to start workers fails the upgrade at once.
pub async fn pools_ready(registry: &Registry, snap: &Snapshot) -> Result<(), String> {
    let patience = longest_start(snap) + POOLS_GRACE;
    let deadline = tokio::time::Instant::now() + patience;
    loop {
        let mut short = Vec::new();
        for (name, pool) in registry.status() {
            let ready = pool.workers.iter().filter(|w| w.state == "ready").count();
            let why = || {
                pool.last_error
                    .clone()
                    .unwrap_or_else(|| "no error yet".into())
            };
            if pool.state == "failing" {
                return Err(format!(
                    "the managed workers of upstream {name} fail to start: {}",
                    why()
                ));
            }
            if ready < pool.count {
                short.push((name, ready, pool.count, why()));
            }
        }
        if short.is_empty() {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            if let Some((name, _, count, why)) = short.iter().find(|s| s.1 == 0) {
                return Err(format!(
                    "none of the {count} managed workers of upstream {name} was ready within {patience:?}: {why}"
                ));
            }
            for (name, ready, count, _) in &short {
                tracing::warn!(
                    upstream = %name,
                    "upgrade: {ready} of {count} managed workers ready; taking over with those"
                );
            }
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argv0_is_found_as_the_shell_found_it() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        let exe = bin.join("moongate");
        std::fs::write(&exe, "#!/bin/sh\n").unwrap();
        let plain = bin.join("notexec");
        std::fs::write(&plain, "").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
        let cwd = Path::new("/srv/gw");
        let path = std::env::join_paths(["/nonexistent", bin.to_str().unwrap()]).unwrap();

        assert_eq!(
            resolve(Path::new("/usr/sbin/moongate"), Some(cwd), None),
            Some(PathBuf::from("/usr/sbin/moongate"))
        );
        assert_eq!(
            resolve(Path::new("./target/moongate"), Some(cwd), None),
            Some(PathBuf::from("/srv/gw/./target/moongate"))
        );
        assert_eq!(
            resolve(Path::new("moongate"), Some(cwd), Some(&path)),
            Some(exe)
        );
        // Not executable, or nowhere on PATH: not found (current_exe then).
        assert_eq!(resolve(Path::new("notexec"), Some(cwd), Some(&path)), None);
        assert_eq!(resolve(Path::new("moongate"), Some(cwd), None), None);
        assert_eq!(resolve(Path::new(""), Some(cwd), Some(&path)), None);
        // A relative PATH entry counts from the start directory.
        assert_eq!(
            resolve(
                Path::new("moongate"),
                Some(dir.path()),
                Some(OsStr::new("bin"))
            ),
            Some(dir.path().join("bin").join("moongate"))
        );
    }
}

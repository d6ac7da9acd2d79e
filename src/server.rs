//! The embedding API and the control thread. [`Server`] is built from a
//! conf.d directory or a TOML string; [`Server::run`] serves until SIGTERM
//! or SIGINT (what the `moongate` binary does), [`Server::start`] serves
//! in the background and returns a [`Running`] handle (for programs that
//! embed moongate, and for tests).
//!
//! Start-up: load + compile generation 1, start the worker threads, bind
//! listeners and the admin listener, then wait for signals, conf.d changes
//! and admin calls. Under systemd (`NOTIFY_SOCKET`), `moongate run` says
//! `READY=1` once the managed worker pools have ready workers too.
//! Graceful stop: stop accepting, let in-flight requests finish (up to
//! `shutdown_timeout`), stop the managed app workers (drained, SIGTERM,
//! SIGKILL after their `stop_timeout`), exit. A binary upgrade
//! ([`crate::upgrade`]) ends the same way once the new process serves, but
//! leaves the pid file (now the new process's) in place; a process started
//! by one takes the listening sockets over and waits for its managed
//! workers before it says it is ready.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use arc_swap::ArcSwap;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use crate::access_log::AccessLog;
use crate::config::ConfigError;
use crate::listener::Bound;
use crate::reload::{self, ConfigSource, Control};
use crate::runtime::Workers;
use crate::snapshot;
use crate::state::{ReloadStatus, Shared};
use crate::upgrade::{Relaunch, Taking, Upgrader};
use crate::workers::Registry;

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The configuration is invalid.
    #[error("{0}")]
    Config(#[from] ConfigError),
    /// A socket, thread or file could not be set up.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// Listeners could not be opened.
    #[error("{0}")]
    Start(String),
}

/// A moongate server, not yet running.
pub struct Server {
    source: ConfigSource,
    access_log: AccessLog,
    relaunch: Option<Relaunch>,
}

/// A server started with [`Server::start`].
pub struct Running {
    listeners: Vec<Bound>,
    admin: Option<std::net::SocketAddr>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<Result<(), ServerError>>>,
}

impl Running {
    /// The listeners it opened (port 0 resolved).
    pub fn listeners(&self) -> &[Bound] {
        &self.listeners
    }

    /// The admin listener's address, if configured.
    pub fn admin_addr(&self) -> Option<std::net::SocketAddr> {
        self.admin
    }

    /// Stops gracefully and waits for the server to finish.
    pub fn stop(mut self) -> Result<(), ServerError> {
        self.stop_inner()
    }

    fn stop_inner(&mut self) -> Result<(), ServerError> {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        match self.thread.take().map(|t| t.join()) {
            Some(Ok(r)) => r,
            Some(Err(_)) => Err(ServerError::Start("the server thread panicked".into())),
            None => Ok(()),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.stop_inner();
    }
}

impl Server {
    /// A server configured by every `*.toml` in `dir` (watched for changes).
    pub fn from_dir(dir: impl Into<PathBuf>) -> Server {
        Self::with_source(ConfigSource::Dir(dir.into()))
    }

    /// A server configured by one TOML document.
    pub fn from_toml(text: impl Into<String>) -> Server {
        Self::with_source(ConfigSource::Toml {
            name: "<config>".into(),
            text: text.into(),
        })
    }

    fn with_source(source: ConfigSource) -> Server {
        Server {
            source,
            access_log: AccessLog::new(),
            relaunch: None,
        }
    }

    /// Lets [`Server::run`] upgrade itself on SIGUSR2 by starting
    /// `relaunch` (what the `moongate` binary does), and take over from a
    /// serving process when it was started by such an upgrade.
    pub fn with_upgrade(mut self, relaunch: Relaunch) -> Server {
        self.relaunch = Some(relaunch);
        self
    }

    /// Writes access lines through `log` (a handle the embedder may keep,
    /// e.g. to read [`AccessLog::wants`]).
    pub fn with_access_log(mut self, log: AccessLog) -> Server {
        self.access_log = log;
        self
    }

    /// Validates everything `run` would load, without serving.
    pub fn check(&self) -> Result<(), ConfigError> {
        self.source.check().map(|_| ())
    }

    /// Serves until SIGTERM/SIGINT (graceful) or SIGQUIT (immediate);
    /// SIGHUP reloads; with [`Server::with_upgrade`], SIGUSR2 upgrades.
    pub fn run(self) -> Result<(), ServerError> {
        let mut taking = match self.relaunch {
            Some(_) => Taking::from_env().map_err(ServerError::Start)?,
            None => None,
        };
        let trigger = Trigger::Signals(self.relaunch);
        let result = run(self.source, self.access_log, trigger, None, taking.as_mut());
        if let (Some(taking), Err(e)) = (&mut taking, &result) {
            taking.failed(&e.to_string());
        }
        result
    }

    /// Serves on background threads; returns once listeners are open.
    pub fn start(self) -> Result<Running, ServerError> {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = oneshot::channel();
        let source = self.source;
        let log = self.access_log;
        let thread = std::thread::Builder::new()
            .name("moongate-control".into())
            .spawn(move || run(source, log, Trigger::Channel(stop_rx), Some(ready_tx), None))?;
        match ready_rx.recv() {
            Ok(Ok((listeners, admin))) => Ok(Running {
                listeners,
                admin,
                stop: Some(stop_tx),
                thread: Some(thread),
            }),
            Ok(Err(e)) => {
                let _ = thread.join();
                Err(ServerError::Start(e))
            }
            Err(_) => match thread.join() {
                Ok(Err(e)) => Err(e),
                _ => Err(ServerError::Start(
                    "the server stopped while starting".into(),
                )),
            },
        }
    }
}

enum Trigger {
    /// The process's signals; the binary to start on SIGUSR2, if any.
    Signals(Option<Relaunch>),
    Channel(oneshot::Receiver<()>),
}

/// How serving ended.
enum Stop {
    /// Asked to stop (a signal, [`Running::stop`]).
    Asked,
    /// A new process took over (the pid file is its now): its pid.
    HandedOver(u32),
}

type Ready = std::sync::mpsc::Sender<Result<(Vec<Bound>, Option<std::net::SocketAddr>), String>>;

fn run(
    source: ConfigSource,
    access_log: AccessLog,
    trigger: Trigger,
    ready: Option<Ready>,
    mut taking: Option<&mut Taking>,
) -> Result<(), ServerError> {
    let snap = snapshot::compile(source.load()?, None, 1)?;
    let workers = snap
        .server
        .workers
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let pid_file = snap.server.pid_file.clone();
    access_log.configure(&snap.server.access_log, &snap.server.access_log_fields)?;
    let shared = Arc::new(Shared {
        snapshot: ArcSwap::from_pointee(snap),
        access_log,
        started: Instant::now(),
        workers,
        reloads: Mutex::new(ReloadStatus::default()),
        upgrades: Default::default(),
        node_id: node_id(),
        app_workers: Arc::new(Registry::new()),
        connections: std::sync::atomic::AtomicU64::new(0),
        metrics: crate::metrics::Registry::default(),
        upstream_pool: crate::upstream::pool::SharedPool::new(workers),
    });
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let drain = CancellationToken::new();
    let (handles, threads) = Workers::spawn(workers, shared.clone(), drain.clone())?;

    let result = rt.block_on(async {
        // Handlers go in before the pid file and the "ready" line exist, so a
        // SIGHUP or SIGTERM sent as soon as either appears is handled instead
        // of killing the process (the signals' default action).
        let signals = match &trigger {
            Trigger::Signals(_) => Some(Signals::register()?),
            Trigger::Channel(_) => None,
        };
        let control = Control::new(shared.clone(), source.clone(), handles);
        // Only `moongate run` speaks for a systemd unit, not an embedder.
        let systemd = match &trigger {
            Trigger::Signals(_) => crate::sd_notify::Notifier::from_env().map(Arc::new),
            Trigger::Channel(_) => None,
        };
        if let Some(taking) = taking.as_deref_mut() {
            control.inherit(taking.take_sockets()).await;
        }
        // Workers start on this thread, which lives as long as the server:
        // their parent-death signal is tied to it.
        shared.app_workers.apply(&shared.snapshot.load().upstreams);
        crate::upstream::health::start(&shared.snapshot.load().upstreams);
        // Taking over: no request is accepted before the pools can serve it.
        if taking.is_some() {
            crate::upgrade::pools_ready(&shared.app_workers, &shared.snapshot.load())
                .await
                .map_err(ServerError::Start)?;
        }
        if let Err(e) = control.open().await {
            if let Some(r) = &ready {
                let _ = r.send(Err(e.clone()));
            }
            return Err(ServerError::Start(e));
        }
        shared.record_reload("start", Ok(1));
        tokio::spawn(forget_idle_keys(shared.clone()));
        tokio::spawn(crate::fanout::subscribe(shared.clone()));
        if let Some(path) = &pid_file
            && let Err(e) = std::fs::write(path, format!("{}\n", std::process::id())) {
                tracing::warn!(path = %path.display(), error = %e, "cannot write the pid file");
            }
        if let ConfigSource::Dir(dir) = &source
            && let Err(e) = reload::watch(dir, control.clone())
        {
            tracing::warn!(error = %e, "cannot watch the config directory; reload with SIGHUP or the admin API");
        }
        tracing::info!(
            generation = 1,
            workers,
            "moongate ready (pid {})",
            std::process::id()
        );
        if let Some(taking) = taking {
            tracing::info!("took over from pid {}", taking.old_pid());
            taking.ready();
        }
        if let Some(r) = &ready {
            let _ = r.send(Ok((control.bound(), control.admin_addr().await)));
        }
        if let Some(n) = &systemd {
            tokio::spawn(notify_ready(n.clone(), shared.clone(), control.clone()));
        }
        let stop = match trigger {
            Trigger::Signals(relaunch) => match signals {
                Some(signals) => signals.wait(&control, Upgrader::new(relaunch)).await,
                None => Stop::Asked,
            },
            Trigger::Channel(rx) => {
                let _ = rx.await;
                Stop::Asked
            }
        };
        tracing::info!("stopping: no new connections; finishing requests in flight");
        if let Some(n) = &systemd {
            match stop {
                // The service goes on in the new process: systemd follows
                // it (the unit's NotifyAccess=all lets it speak).
                Stop::HandedOver(pid) => {
                    let _ = n.send(&format!("MAINPID={pid}"));
                }
                Stop::Asked => n.stopping(),
            }
        }
        control.close().await;
        Ok(stop)
    });

    drain.cancel();
    let (done_tx, done_rx) = oneshot::channel();
    std::thread::spawn(move || {
        threads.join();
        let _ = done_tx.send(());
    });
    // The value of the configuration serving now: a reload may have changed it.
    let shutdown_timeout = shared.snapshot.load().server.shutdown_timeout;
    // Driven on the control runtime, so the workers stay supervised while
    // the last requests finish on them; then they are stopped.
    rt.block_on(async {
        if tokio::time::timeout(shutdown_timeout, done_rx)
            .await
            .is_err()
        {
            tracing::warn!("shutdown_timeout passed with requests still in flight; exiting anyway");
        }
        shared.app_workers.stop_all().await;
    });
    // Queued disk-cache writes reach the disk before the process ends, so
    // a restart finds them.
    for (name, zone) in &shared.snapshot.load().caches {
        if !zone.flush_blocking(CACHE_FLUSH_TIMEOUT) {
            tracing::warn!(zone = %name, "disk cache writes still queued at exit were lost");
        }
    }
    // Handed over: the pid file names the new process now.
    if let Some(path) = &pid_file
        && !matches!(result, Ok(Stop::HandedOver(_)))
    {
        let _ = std::fs::remove_file(path);
    }
    result.map(drop)
}

/// Tells systemd `READY=1` once the managed worker pools have their first
/// ready workers (listeners are bound already), then lets every reload
/// tell it `RELOADING=1` / `READY=1`.
async fn notify_ready(
    systemd: Arc<crate::sd_notify::Notifier>,
    shared: Arc<Shared>,
    control: Arc<Control>,
) {
    let started = shared.app_workers.wait_started().await;
    let generation = shared.snapshot.load().generation;
    let status = if started {
        format!("serving generation {generation}")
    } else {
        tracing::warn!("managed workers are still starting; telling systemd the server is ready");
        format!("serving generation {generation}; managed workers still starting")
    };
    systemd.ready(&status);
    tracing::info!("told systemd: ready");
    control.notify_systemd(systemd);
}

/// This node's id for purge fan-out: unique per process run.
fn node_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{}-{nanos:x}", std::process::id())
}

/// How long a graceful stop waits for each cache zone's queued disk writes.
const CACHE_FLUSH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// How often rate-limit zones drop the buckets of keys gone idle.
const IDLE_SWEEP: std::time::Duration = std::time::Duration::from_secs(10);

/// Drops the buckets of idle keys from every zone now serving, so a zone's
/// memory follows its active keys however many distinct keys arrive.
async fn forget_idle_keys(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(IDLE_SWEEP);
    loop {
        tick.tick().await;
        for zone in shared.snapshot.load().limits.values() {
            zone.forget_idle();
        }
    }
}

/// The signals `moongate run` answers: SIGHUP reloads, SIGUSR2 upgrades,
/// SIGTERM/SIGINT stop gracefully, SIGQUIT stops at once.
struct Signals {
    hup: tokio::signal::unix::Signal,
    usr2: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    quit: tokio::signal::unix::Signal,
}

impl Signals {
    /// Installs the handlers (on the current runtime).
    fn register() -> std::io::Result<Signals> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Signals {
            hup: signal(SignalKind::hangup())?,
            usr2: signal(SignalKind::user_defined2())?,
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            quit: signal(SignalKind::quit())?,
        })
    }

    /// Reloads on SIGHUP, upgrades on SIGUSR2; returns on SIGTERM or
    /// SIGINT, or once an upgrade's new process serves.
    async fn wait(mut self, control: &Arc<Control>, mut upgrader: Upgrader) -> Stop {
        loop {
            tokio::select! {
                _ = self.hup.recv() => { let _ = control.reload("signal").await; }
                _ = self.usr2.recv() => upgrader.start(control),
                done = upgrader.finished() => if let Ok(pid) = done {
                    return Stop::HandedOver(pid);
                },
                _ = self.term.recv() => {
                    upgrader.abandon();
                    return Stop::Asked;
                }
                _ = self.int.recv() => {
                    upgrader.abandon();
                    return Stop::Asked;
                }
                _ = self.quit.recv() => {
                    tracing::info!("SIGQUIT: stopping at once");
                    std::process::exit(0);
                }
            }
        }
    }
}

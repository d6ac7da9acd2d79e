//! Reloading: where a configuration comes from, building and checking a
//! new snapshot off to the side, and swapping it in only when everything
//! (parsing, validation, TLS files, binding new listeners) succeeded.
//! On any error the old snapshot keeps serving and the error, with its
//! file:line:column, is logged and kept for `/status`. Reloads are asked
//! for by the conf.d watcher (debounced), SIGHUP and `POST /reload`, and
//! run one at a time.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;

use crate::admin::AdminServer;
use crate::config::{self, Config, ConfigError};
use crate::listener::{Bound, Listeners};
use crate::runtime::Workers;
use crate::sd_notify::Notifier;
use crate::snapshot::{self, Snapshot};
use crate::state::Shared;
use crate::upgrade::Passed;

/// Where the configuration is read from.
#[derive(Debug, Clone)]
pub enum ConfigSource {
    /// A conf.d directory of `*.toml` files.
    Dir(PathBuf),
    /// One TOML document held in memory (embedding, tests).
    Toml {
        /// A name used in error messages in place of a file name.
        name: String,
        /// The TOML text.
        text: String,
    },
}

impl ConfigSource {
    /// Reads and validates the configuration.
    pub fn load(&self) -> Result<Config, ConfigError> {
        match self {
            ConfigSource::Dir(dir) => config::load_dir(dir),
            ConfigSource::Toml { name, text } => config::load_str(name, text),
        }
    }

    /// Reads, validates and compiles (loading TLS files): what `moongate
    /// check` runs.
    pub fn check(&self) -> Result<Snapshot, ConfigError> {
        snapshot::compile(self.load()?, None, 1)
    }
}

/// The control thread's handle on the running server.
pub struct Control {
    /// State shared with the workers.
    pub shared: Arc<Shared>,
    source: ConfigSource,
    workers: Workers,
    serving: tokio::sync::Mutex<Serving>,
    bound: Mutex<Vec<Bound>>,
    /// systemd's notification socket, once the server is ready (set by
    /// `moongate run` under a `Type=notify` unit): every reload is then
    /// bracketed by `RELOADING=1` and `READY=1`.
    systemd: OnceLock<Arc<Notifier>>,
}

struct Serving {
    listeners: Listeners,
    admin: Option<AdminServer>,
}

impl Control {
    /// Wraps the running parts; nothing is bound yet.
    pub fn new(shared: Arc<Shared>, source: ConfigSource, workers: Workers) -> Arc<Control> {
        Arc::new(Control {
            shared,
            source,
            workers,
            serving: tokio::sync::Mutex::new(Serving {
                listeners: Listeners::default(),
                admin: None,
            }),
            bound: Mutex::new(Vec::new()),
            systemd: OnceLock::new(),
        })
    }

    /// Tells systemd about every reload from now on (see [`Notifier`]).
    pub fn notify_systemd(&self, notifier: Arc<Notifier>) {
        let _ = self.systemd.set(notifier);
    }

    /// Opens the current snapshot's listeners and admin listener (taking
    /// over the sockets [`Control::inherit`] was given).
    pub async fn open(self: &Arc<Self>) -> Result<(), String> {
        let snap = self.shared.snapshot.load_full();
        let mut serving = self.serving.lock().await;
        let opened = self.apply(&mut serving, &snap).await;
        serving.listeners.release_inherited();
        opened
    }

    /// Gives [`Control::open`] the sockets a binary upgrade handed over.
    pub async fn inherit(&self, sockets: Vec<Passed>) {
        self.serving.lock().await.listeners.inherit(sockets);
    }

    /// Holds reloads off until the guard is dropped, so the sockets a
    /// binary upgrade hands over stay the ones open.
    pub async fn freeze(&self) -> Frozen<'_> {
        Frozen {
            serving: self.serving.lock().await,
        }
    }

    async fn apply(self: &Arc<Self>, serving: &mut Serving, snap: &Snapshot) -> Result<(), String> {
        let admin_addr = snap.admin.as_ref().map(|a| a.listen.addr);
        let new_admin = if serving.admin.as_ref().map(AdminServer::key) != admin_addr {
            match admin_addr {
                Some(addr) => {
                    let inherited = (serving.listeners)
                        .take_inherited(addr, crate::upgrade::Kind::Admin)
                        .into_iter()
                        .next();
                    Some(Some(
                        AdminServer::bind(addr, self.clone(), inherited)
                            .map_err(|e| e.to_string())?,
                    ))
                }
                None => Some(None),
            }
        } else {
            None
        };
        serving
            .listeners
            .apply(&snap.listeners, &self.workers)
            .map_err(|e| e.to_string())?;
        if let Some(admin) = new_admin {
            if let Some(old) = serving.admin.take() {
                old.stop();
            }
            serving.admin = admin;
        }
        self.shared
            .access_log
            .configure(&snap.server.access_log, &snap.server.access_log_fields)
            .map_err(|e| format!("cannot open the access log: {e}"))?;
        let bound = serving.listeners.bound();
        match self.bound.lock() {
            Ok(mut b) => *b = bound,
            Err(p) => *p.into_inner() = bound,
        }
        Ok(())
    }

    /// Reloads the configuration; returns the generation now serving.
    pub async fn reload(self: &Arc<Self>, trigger: &str) -> Result<u64, String> {
        let mut serving = self.serving.lock().await;
        let systemd = self.systemd.get();
        if let Some(n) = systemd {
            n.reloading();
        }
        let result = self.try_reload(&mut serving).await;
        let generation = self.shared.snapshot.load().generation;
        match &result {
            Ok(g) => tracing::info!(generation = g, trigger, "configuration reloaded"),
            Err(e) => tracing::error!(
                trigger,
                "reload failed; still serving generation {generation}: {e}"
            ),
        }
        // Ready either way: a failed reload leaves the old configuration serving.
        if let Some(n) = systemd {
            n.ready(&match &result {
                Ok(g) => format!("serving generation {g}"),
                Err(e) => format!("reload failed; still serving generation {generation}: {e}"),
            });
        }
        self.shared.record_reload(trigger, result.clone());
        result
    }

    async fn try_reload(self: &Arc<Self>, serving: &mut Serving) -> Result<u64, String> {
        let source = self.source.clone();
        let config = tokio::task::spawn_blocking(move || source.load())
            .await
            .map_err(|e| format!("config loader failed: {e}"))?
            .map_err(|e| e.to_string())?;
        let prev = self.shared.snapshot.load_full();
        let next = snapshot::compile(config, Some(&prev), prev.generation + 1)
            .map_err(|e| e.to_string())?;
        if next
            .server
            .workers
            .is_some_and(|n| n != self.shared.workers)
        {
            tracing::warn!(
                running = self.shared.workers,
                "a change of `workers` takes effect at the next restart"
            );
        }
        self.apply(serving, &next).await?;
        let generation = next.generation;
        // Managed upstreams get their ready workers before anyone sees them.
        self.shared.app_workers.apply(&next.upstreams);
        crate::upstream::health::start(&next.upstreams);
        let lua = next.lua.clone();
        self.shared.snapshot.store(Arc::new(next));
        self.workers.activate_lua(&lua);
        Ok(generation)
    }

    /// The listeners open now.
    pub fn bound(&self) -> Vec<Bound> {
        match self.bound.lock() {
            Ok(b) => b.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// The admin listener's bound address.
    pub async fn admin_addr(&self) -> Option<SocketAddr> {
        self.serving
            .lock()
            .await
            .admin
            .as_ref()
            .map(AdminServer::bound)
    }

    /// Stops accepting everywhere (graceful stop).
    pub async fn close(&self) {
        let mut serving = self.serving.lock().await;
        serving.listeners.close_all();
        if let Some(admin) = serving.admin.take() {
            admin.stop();
        }
    }
}

/// The listeners held still for a binary upgrade ([`Control::freeze`]).
pub struct Frozen<'a> {
    serving: tokio::sync::MutexGuard<'a, Serving>,
}

impl Frozen<'_> {
    /// Duplicates of every listening socket, the admin listener's too.
    pub fn sockets(&self) -> std::io::Result<Vec<Passed>> {
        let mut all = self.serving.listeners.passed()?;
        if let Some(admin) = &self.serving.admin {
            all.push(admin.passed()?);
        }
        Ok(all)
    }
}

/// Watches a conf.d directory (its `*.toml`) and the directories of the
/// Lua scripts the configuration uses (their `*.lua`) and the data files
/// it read (consumers, htpasswd, keys: [`Snapshot::data_files`]), and
/// reloads after changes settle (debounced: a burst of writes makes one
/// reload). Script directories and data files are re-read after every
/// reload, whatever triggered it.
pub fn watch(dir: &Path, control: Arc<Control>) -> notify::Result<()> {
    let (tx, mut rx) = mpsc::unbounded_channel::<()>();
    let data_files: Arc<Mutex<Vec<PathBuf>>> = Arc::default();
    let data = data_files.clone();
    let mut watcher = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
        if let Ok(ev) = ev {
            let data = data.lock().map(|d| d.clone()).unwrap_or_default();
            let relevant = !ev.kind.is_access()
                && ev.paths.iter().any(|p| {
                    p.extension().is_some_and(|e| e == "toml" || e == "lua") || data.contains(p)
                });
            if relevant {
                let _ = tx.send(());
            }
        }
    })?;
    watcher.watch(dir, RecursiveMode::NonRecursive)?;
    tokio::spawn(async move {
        let mut watched: Vec<PathBuf> = Vec::new();
        let mut synced = 0;
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                ev = rx.recv() => {
                    if ev.is_none() {
                        break;
                    }
                    // Debounce: wait until 200 ms pass with no further change.
                    while let Ok(Some(())) =
                        tokio::time::timeout(Duration::from_millis(200), rx.recv()).await
                    {}
                    let _ = control.reload("watch").await;
                }
                _ = tick.tick() => {}
            }
            let snap = control.shared.snapshot.load();
            if snap.generation != synced {
                synced = snap.generation;
                if let Ok(mut files) = data_files.lock() {
                    files.clone_from(&snap.data_files);
                }
                let data_dirs = (snap.data_files.iter())
                    .filter_map(|f| f.parent().map(Path::to_path_buf))
                    .filter(|d| d.is_dir());
                for d in snap.lua.script_dirs().into_iter().chain(data_dirs) {
                    if !watched.contains(&d)
                        && watcher.watch(&d, RecursiveMode::NonRecursive).is_ok()
                    {
                        watched.push(d);
                    }
                }
            }
        }
    });
    Ok(())
}

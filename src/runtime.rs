//! Worker threads. Each worker is an OS thread running a `current_thread`
//! tokio runtime with a `LocalSet`, and accepts from its own SO_REUSEPORT
//! socket for every listener, so the kernel spreads connections and a
//! request never changes thread.
//!
//! Why this layout: measured on this machine (shared/notes/deps.md §4-5),
//! one runtime per core with SO_REUSEPORT listeners gave the best req/s and
//! the lowest p99 of the layouts tried (e.g. 39.6k req/s and p99 1.6-3.7 ms
//! against 34.7k and 3.5-4.0 ms for the multi-thread runtime with
//! thread-local Lua VMs), and it lets each thread own a Lua VM whose
//! coroutines never migrate. The cost — no work stealing, a pool of
//! upstream connections per thread — is what nginx's workers pay too.

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::state::Shared;
use crate::worker_local::{WorkerInfo, WorkerLocal};

/// Orders sent from the control thread to a worker.
pub enum Command {
    /// Start accepting on this socket (this worker's SO_REUSEPORT copy).
    Listen {
        /// The configured address (the key TLS settings are found by).
        key: SocketAddr,
        /// Whether it is a `[[server.tls]]` listener.
        tls: bool,
        /// The bound, listening, non-blocking socket.
        socket: std::net::TcpListener,
        /// Fires when a reload removes the listener.
        stop: CancellationToken,
    },
    /// A new configuration's Lua program is serving (its `init_worker`
    /// runs now; older VMs' timers stop).
    Lua(Arc<crate::lua::LuaProgram>),
}

/// How the control thread reaches the running workers.
#[derive(Clone)]
pub struct Workers {
    senders: Vec<mpsc::UnboundedSender<Command>>,
}

/// The worker threads themselves, joined at shutdown.
pub struct Threads {
    threads: Vec<JoinHandle<()>>,
}

impl Workers {
    /// Starts `n` worker threads. `drain` fires on graceful stop: workers
    /// stop accepting, let connections finish, and exit.
    pub fn spawn(
        n: usize,
        shared: Arc<Shared>,
        drain: CancellationToken,
    ) -> std::io::Result<(Workers, Threads)> {
        let mut senders = Vec::with_capacity(n);
        let mut threads = Vec::with_capacity(n);
        for id in 0..n {
            let (tx, rx) = mpsc::unbounded_channel();
            let shared = shared.clone();
            let drain = drain.clone();
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let handle = std::thread::Builder::new()
                .name(format!("moongate-w{id}"))
                .spawn(move || {
                    // Everything the thread owns; dropped after the
                    // `LocalSet` (and the tasks it still holds).
                    let worker = Rc::new(WorkerLocal::new(
                        WorkerInfo { id, count: n },
                        shared.upstream_pool.clone(),
                    ));
                    shared.metrics.register(worker.metrics.shared());
                    let local = tokio::task::LocalSet::new();
                    local.block_on(&rt, async {
                        worker.run_tasks(true);
                        worker_main(rx, shared, worker.clone(), drain).await;
                        worker.run_tasks(false);
                    });
                })?;
            senders.push(tx);
            threads.push(handle);
        }
        Ok((Workers { senders }, Threads { threads }))
    }

    /// How many workers run.
    pub fn len(&self) -> usize {
        self.senders.len()
    }

    /// True when there are no workers.
    pub fn is_empty(&self) -> bool {
        self.senders.is_empty()
    }

    /// Tells every worker about a new Lua program.
    pub fn activate_lua(&self, program: &Arc<crate::lua::LuaProgram>) {
        for tx in &self.senders {
            let _ = tx.send(Command::Lua(program.clone()));
        }
    }

    /// Sends a command to worker `i`.
    pub fn send(&self, i: usize, cmd: Command) -> bool {
        self.senders.get(i).is_some_and(|tx| tx.send(cmd).is_ok())
    }
}

impl Threads {
    /// Waits (blocking) for every worker thread to finish.
    pub fn join(self) {
        for t in self.threads {
            if t.join().is_err() {
                tracing::error!("a worker thread panicked");
            }
        }
    }
}

async fn worker_main(
    mut rx: mpsc::UnboundedReceiver<Command>,
    shared: Arc<Shared>,
    worker: Rc<WorkerLocal>,
    drain: CancellationToken,
) {
    let connections = TaskTracker::new();
    let mut sweep = tokio::time::interval(Duration::from_secs(15));
    worker.lua.activate(&shared.snapshot.load().lua);
    loop {
        tokio::select! {
            cmd = rx.recv() => match cmd {
                Some(Command::Listen { key, tls, socket, stop }) => {
                    match TcpListener::from_std(socket) {
                        Ok(listener) => {
                            tokio::task::spawn_local(accept_loop(
                                listener, key, tls, stop, drain.clone(), shared.clone(), worker.clone(), connections.clone(),
                            ));
                        }
                        Err(e) => tracing::error!(%key, error = %e, "cannot use listener socket"),
                    }
                }
                Some(Command::Lua(program)) => worker.lua.activate(&program),
                None => break,
            },
            _ = drain.cancelled() => break,
            _ = sweep.tick() => {
                let snap = shared.snapshot.load();
                let live = |id: u64| snap.upstreams.values().any(|u| u.has_peer(id));
                worker.upstream_idle.sweep(&live, Duration::from_secs(300));
                worker.metrics.sweep_peers(live);
                worker.metrics.sweep_limits(|id| snap.limits.values().any(|z| z.id == id));
            }
        }
    }
    worker.lua.worker().exiting.set(true);
    // Timers get their premature call while connections drain.
    worker.lua.retire_all();
    tokio::task::yield_now().await;
    connections.close();
    connections.wait().await;
}

#[allow(clippy::too_many_arguments)]
async fn accept_loop(
    listener: TcpListener,
    key: SocketAddr,
    tls: bool,
    stop: CancellationToken,
    drain: CancellationToken,
    shared: Arc<Shared>,
    worker: Rc<WorkerLocal>,
    connections: TaskTracker,
) {
    let counted = worker.metrics.shared().listener(&key.to_string(), tls);
    loop {
        tokio::select! {
            r = listener.accept() => match r {
                Ok((stream, peer)) => {
                    let conn = crate::conn::serve(stream, peer, key, tls, &counted, shared.clone(), worker.clone(), drain.clone());
                    connections.spawn_local(conn);
                }
                Err(e) => {
                    // Out of file descriptors and the like: back off briefly
                    // instead of spinning.
                    tracing::warn!(%key, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            },
            _ = stop.cancelled() => break,
            _ = drain.cancelled() => break,
        }
    }
}

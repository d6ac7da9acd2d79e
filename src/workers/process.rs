//! One worker process's life after it was spawned, as a task on the
//! control thread: wait until it is ready (or it exits, or the start times
//! out), serve until it exits or is told to stop, and on stop drain it
//! (its requests in flight finish, up to `stop_timeout`), SIGTERM its
//! process group and SIGKILL it after `stop_timeout`. The task always reaps
//! the process and removes its socket file, and tells the pool what
//! happened through [`Event`]s; the pool decides everything else.

use std::io;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::Signal;
use tokio::process::Child;
use tokio::sync::mpsc::UnboundedSender;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::ready;
use super::spawn::{Spawned, signal_group};
use crate::upstream::peer::Peer;

/// How often a draining worker's requests in flight are counted.
const DRAIN_POLL: Duration = Duration::from_millis(50);

/// What a process task reports to its pool; the `u64` is the process's key.
#[derive(Debug)]
pub(super) enum Event {
    /// It answered its readiness probe.
    Ready(u64),
    /// It exited, or was killed for not getting ready in time, before it
    /// was ready; the text says which.
    Failed(u64, String),
    /// It exited on its own after it was ready.
    Exited(u64, String),
    /// It was drained and is now being sent SIGTERM.
    Terminating(u64),
    /// It was stopped as asked and reaped.
    Stopped(u64),
}

/// What the task needs to run one process.
pub(super) struct Life {
    /// The pool's key for this process.
    pub key: u64,
    /// The started process.
    pub spawned: Spawned,
    /// `ready` of the definition.
    pub ready: Option<String>,
    /// What the `ready` probe speaks: the upstream's protocol.
    pub protocol: crate::config::Protocol,
    /// The upstream's FastCGI `root`: where the `ready` probe's script is.
    pub root: Option<std::path::PathBuf>,
    /// How long it may take to become ready.
    pub start_timeout: Duration,
    /// Drain limit, and time between SIGTERM and SIGKILL.
    pub stop_timeout: Duration,
    /// Its peer, for the in-flight count while draining.
    pub peer: Arc<Peer>,
    /// Cancelled by the pool to stop the process.
    pub stop: CancellationToken,
    /// Where events go.
    pub events: UnboundedSender<Event>,
}

enum Start {
    Ready(Result<(), String>),
    Exited(io::Result<ExitStatus>),
    Stop,
}

/// Runs the process to its end (see the module docs).
pub(super) async fn run(life: Life) {
    let Life {
        key,
        spawned,
        ready,
        protocol,
        root,
        start_timeout,
        stop_timeout,
        peer,
        stop,
        events,
    } = life;
    let Spawned {
        mut child,
        pid,
        addr,
        socket,
    } = spawned;
    let _socket = SocketFile(socket);
    let deadline = Instant::now() + start_timeout;
    let start = tokio::select! {
        biased;
        _ = stop.cancelled() => Start::Stop,
        status = child.wait() => Start::Exited(status),
        r = ready::wait_ready(&addr, ready.as_deref(), (protocol, root.as_deref()), deadline) => Start::Ready(r),
    };
    match start {
        Start::Ready(Ok(())) => {}
        Start::Ready(Err(last)) => {
            signal_group(pid, Signal::SIGKILL);
            let _ = child.wait().await;
            let why = format!(
                "not ready within {} (last probe: {last})",
                humantime::format_duration(start_timeout)
            );
            let _ = events.send(Event::Failed(key, why));
            return;
        }
        Start::Exited(status) => {
            signal_group(pid, Signal::SIGKILL);
            let why = format!("{} before it was ready", describe(&status));
            let _ = events.send(Event::Failed(key, why));
            return;
        }
        Start::Stop => {
            terminate(&mut child, pid, stop_timeout, key, &events).await;
            let _ = events.send(Event::Stopped(key));
            return;
        }
    }
    let _ = events.send(Event::Ready(key));
    tokio::select! {
        biased;
        _ = stop.cancelled() => {}
        status = child.wait() => {
            // Whatever it forked goes with it.
            signal_group(pid, Signal::SIGKILL);
            let _ = events.send(Event::Exited(key, describe(&status)));
            return;
        }
    }
    // Drain: the pool took it out of the members before asking it to stop.
    let until = Instant::now() + stop_timeout;
    while peer.active() > 0 && Instant::now() < until {
        tokio::select! {
            _ = tokio::time::sleep(DRAIN_POLL) => {}
            _ = child.wait() => break,
        }
    }
    terminate(&mut child, pid, stop_timeout, key, &events).await;
    let _ = events.send(Event::Stopped(key));
}

/// SIGTERM to the group, SIGKILL after `stop_timeout`, reaped.
async fn terminate(
    child: &mut Child,
    pid: u32,
    stop_timeout: Duration,
    key: u64,
    events: &UnboundedSender<Event>,
) {
    let _ = events.send(Event::Terminating(key));
    if let Ok(Some(_)) = child.try_wait() {
        signal_group(pid, Signal::SIGKILL);
        return;
    }
    signal_group(pid, Signal::SIGTERM);
    if tokio::time::timeout(stop_timeout, child.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            pid,
            "worker still running {} after SIGTERM; sending SIGKILL",
            humantime::format_duration(stop_timeout)
        );
        signal_group(pid, Signal::SIGKILL);
        let _ = child.wait().await;
    }
    // Anything of its group that ignored SIGTERM.
    signal_group(pid, Signal::SIGKILL);
}

/// "exited with status 3", "was killed by signal SIGKILL".
pub(super) fn describe(status: &io::Result<ExitStatus>) -> String {
    use std::os::unix::process::ExitStatusExt;
    match status {
        Ok(s) => match (s.code(), s.signal()) {
            (Some(code), _) => format!("exited with status {code}"),
            (None, Some(sig)) => {
                let name =
                    Signal::try_from(sig).map_or_else(|_| sig.to_string(), |s| s.to_string());
                format!("was killed by signal {name}")
            }
            (None, None) => "exited".into(),
        },
        Err(e) => format!("could not be waited for: {e}"),
    }
}

/// Removes a worker's socket file when its task ends.
struct SocketFile(Option<PathBuf>);

impl Drop for SocketFile {
    fn drop(&mut self) {
        if let Some(path) = &self.0 {
            let _ = std::fs::remove_file(path);
        }
    }
}

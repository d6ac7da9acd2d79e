//! The old process's side of an upgrade, on a thread of its own (every
//! call blocks): start the new binary with the hand-off socket's path in
//! its environment, check that what connects is that process, send it the
//! listening sockets, and wait for "ready". Any other ending — the process
//! exits, reports a failure, closes the channel, takes too long, or this
//! process is stopping — stops the new process (SIGTERM, then SIGKILL) and
//! says why, with its exit status.

use std::os::fd::AsFd;
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio_util::sync::CancellationToken;

use super::wire::{Channel, Listener, PROTOCOL, ToNew, ToOld};
use super::{Outcome, Passed, Relaunch, SOCKET_ENV};

/// How often a wait looks at the new process and the stop.
const POLL: Duration = Duration::from_millis(100);

/// How long a new process that reported a failure may take to exit (its
/// exit status goes into the error), and how long a stopped one gets
/// between SIGTERM and SIGKILL.
const EXIT_WAIT: Duration = Duration::from_secs(10);

/// Starts `relaunch` and hands it `sockets`; the new process's pid once it
/// reported ready within `timeout`.
pub(super) fn hand_over(
    relaunch: &Relaunch,
    sockets: Vec<Passed>,
    timeout: Duration,
    abandon: &CancellationToken,
) -> Outcome {
    let deadline = Instant::now() + timeout;
    // A private directory (mode 0700): no other user can connect and take
    // the sockets.
    let dir = tempfile::Builder::new()
        .prefix("moongate-upgrade-")
        .tempdir()
        .map_err(|e| (format!("cannot create the hand-off directory: {e}"), None))?;
    let path = dir.path().join("handoff.sock");
    let listener = Listener::bind(&path)
        .map_err(|e| (format!("cannot listen on {}: {e}", path.display()), None))?;
    let mut child = Command::new(&relaunch.program)
        .args(&relaunch.args)
        .env(SOCKET_ENV, &path)
        .stdin(Stdio::null())
        .spawn()
        .map_err(|e| {
            (
                format!("cannot start {}: {e}", relaunch.program.display()),
                None,
            )
        })?;
    let pid = child.id();
    tracing::info!(pid, "upgrade: the new process started");
    match talk(&listener, &mut child, sockets, deadline, abandon) {
        Ok(ready) => Ok(ready),
        Err(why) => {
            let status = stop(&mut child);
            Err((
                format!("the new process (pid {pid}) {why}{}", status_suffix(status)),
                Some(pid),
            ))
        }
    }
}

/// The conversation; the error completes "the new process (pid N) …".
fn talk(
    listener: &Listener,
    child: &mut Child,
    sockets: Vec<Passed>,
    deadline: Instant,
    abandon: &CancellationToken,
) -> Result<u32, String> {
    let pid = child.id();
    let chan = loop {
        if let Some(chan) = listener
            .accept(POLL)
            .map_err(|e| format!("could not be reached: {e}"))?
        {
            break chan;
        }
        check(child, deadline, abandon, "before it connected")?;
    };
    match chan.peer_pid() {
        Ok(p) if u32::try_from(p).is_ok_and(|p| p == pid) => {}
        Ok(p) => return Err(format!("was not what connected (pid {p} did)")),
        Err(e) => return Err(format!("could not be identified: {e}")),
    }
    send(&chan, sockets).map_err(|e| format!("could not be sent the sockets: {e}"))?;
    loop {
        match chan.recv::<ToOld>(POLL) {
            Ok(Some((ToOld::Ready { pid: said }, _))) if said == pid => return Ok(pid),
            Ok(Some((ToOld::Ready { pid: said }, _))) => {
                return Err(format!("reported ready for another pid ({said})"));
            }
            Ok(Some((ToOld::Failed { error }, _))) => {
                // It is on its way out: its exit status completes the story.
                let _ = wait_exit(child, EXIT_WAIT);
                return Err(format!("could not start: {error}"));
            }
            Ok(None) => check(child, deadline, abandon, "before it was ready")?,
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                return Err("closed the hand-off before it was ready".into());
            }
            Err(e) => return Err(format!("broke the hand-off: {e}")),
        }
    }
}

/// Hello, every socket, End.
fn send(chan: &Channel, sockets: Vec<Passed>) -> std::io::Result<()> {
    chan.send(
        &ToNew::Hello {
            protocol: PROTOCOL,
            pid: std::process::id(),
        },
        None,
    )?;
    for s in &sockets {
        chan.send(
            &ToNew::Socket {
                kind: s.kind,
                key: s.key,
            },
            Some(s.socket.as_fd()),
        )?;
    }
    chan.send(&ToNew::End, None)
}

/// An error when the new process exited, the deadline passed or this
/// process is stopping.
fn check(
    child: &mut Child,
    deadline: Instant,
    abandon: &CancellationToken,
    when: &str,
) -> Result<(), String> {
    if let Ok(Some(_)) = child.try_wait() {
        return Err(format!("exited {when}"));
    }
    if abandon.is_cancelled() {
        return Err(format!("was stopped {when}: this process is stopping"));
    }
    if Instant::now() >= deadline {
        return Err(format!("was not ready in time; stopped it {when}"));
    }
    Ok(())
}

/// Waits for the new process to exit: SIGTERM first (it may have started
/// workers and adopted sockets), SIGKILL if it is still there after
/// [`EXIT_WAIT`]. Its exit status, when it could be had.
fn stop(child: &mut Child) -> Option<ExitStatus> {
    if let Some(status) = wait_exit(child, Duration::from_millis(500)) {
        return Some(status);
    }
    if let Ok(pid) = i32::try_from(child.id()) {
        let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
    }
    if let Some(status) = wait_exit(child, EXIT_WAIT) {
        return Some(status);
    }
    let _ = child.kill();
    child.wait().ok()
}

fn wait_exit(child: &mut Child, within: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + within;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            _ => return None,
        }
    }
}

fn status_suffix(status: Option<ExitStatus>) -> String {
    match status {
        Some(s) => match (s.code(), s.signal()) {
            (Some(code), _) => format!(" (exit status {code})"),
            (None, Some(sig)) => format!(" (killed by signal {sig})"),
            _ => format!(" ({s})"),
        },
        None => String::new(),
    }
}

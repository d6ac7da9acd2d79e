//! The new process's side of an upgrade: started with [`SOCKET_ENV`] set,
//! it connects to the old process at start, receives the listening
//! sockets (adopted by the listeners instead of binding), and once it
//! serves tells the old process "ready" — or, if it cannot start, why.

use std::path::Path;
use std::time::{Duration, Instant};

use super::wire::{Channel, PROTOCOL, ToNew, ToOld};
use super::{Passed, SOCKET_ENV};

/// How long receiving the sockets may take (the old process sends them
/// all at once).
const RECEIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// A start that takes over from a serving process.
pub struct Taking {
    chan: Option<Channel>,
    sockets: Vec<Passed>,
    old_pid: u32,
}

impl Taking {
    /// `None` for a plain start; else connects to the serving process and
    /// receives its listening sockets. The error is for the start-up log
    /// (the old process is told it too, as far as it can be reached).
    pub fn from_env() -> Result<Option<Taking>, String> {
        let Some(path) = std::env::var_os(SOCKET_ENV) else {
            return Ok(None);
        };
        let chan = Channel::connect(Path::new(&path)).map_err(|e| {
            format!(
                "upgrade: cannot reach the serving process at {}: {e}",
                Path::new(&path).display()
            )
        })?;
        let mut taking = Taking {
            chan: Some(chan),
            sockets: Vec::new(),
            old_pid: 0,
        };
        match taking.receive() {
            Ok(()) => Ok(Some(taking)),
            Err(e) => {
                let e = format!("upgrade: {e}");
                taking.failed(&e);
                Err(e)
            }
        }
    }

    fn receive(&mut self) -> Result<(), String> {
        let Some(chan) = &self.chan else {
            return Err("no hand-off channel".into());
        };
        let deadline = Instant::now() + RECEIVE_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err("the serving process did not send its sockets in time".into());
            }
            let (msg, mut fds) = match chan.recv::<ToNew>(left) {
                Ok(Some(m)) => m,
                Ok(None) => continue,
                Err(e) => return Err(format!("receiving the listening sockets failed: {e}")),
            };
            match msg {
                ToNew::Hello { protocol, pid } if protocol == PROTOCOL => self.old_pid = pid,
                ToNew::Hello { protocol, .. } => {
                    return Err(format!(
                        "the serving process hands over with protocol {protocol}, this binary speaks {PROTOCOL}"
                    ));
                }
                ToNew::Socket { kind, key } => {
                    let Some(fd) = fds.pop().filter(|_| fds.is_empty()) else {
                        return Err(format!("the socket for {key} did not come (or not alone)"));
                    };
                    self.sockets.push(Passed {
                        kind,
                        key,
                        socket: std::net::TcpListener::from(fd),
                    });
                }
                ToNew::End => return Ok(()),
            }
        }
    }

    /// The pid of the process handing over.
    pub fn old_pid(&self) -> u32 {
        self.old_pid
    }

    /// The sockets received (once; the listeners adopt them).
    pub fn take_sockets(&mut self) -> Vec<Passed> {
        std::mem::take(&mut self.sockets)
    }

    /// Tells the old process this one serves; it then drains and exits.
    pub fn ready(&mut self) {
        self.tell(&ToOld::Ready {
            pid: std::process::id(),
        });
    }

    /// Tells the old process this one could not start (and is exiting).
    pub fn failed(&mut self, error: &str) {
        self.tell(&ToOld::Failed {
            error: error.to_string(),
        });
    }

    /// Sends the one answer and closes the channel.
    fn tell(&mut self, msg: &ToOld) {
        if let Some(chan) = self.chan.take()
            && let Err(e) = chan.send(msg, None)
        {
            tracing::warn!(
                old_pid = self.old_pid,
                error = %e,
                "upgrade: cannot answer the process that handed over"
            );
        }
    }
}

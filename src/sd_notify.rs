//! systemd's service notifications (sd_notify(3)). Under a `Type=notify`
//! unit, systemd passes a datagram socket in `NOTIFY_SOCKET` (a path, or
//! `@name` in the abstract namespace) and counts the start as done only
//! when the service sends `READY=1`; `RELOADING=1` (with `MONOTONIC_USEC`)
//! and `READY=1` around a reload, and `STOPPING=1` on a graceful stop, let
//! `systemctl` show what a running service is doing.
//!
//! This module owns the socket and the wire format only; the server says
//! when to send (`server::run`, `reload::Control::reload`). Without
//! `NOTIFY_SOCKET` nothing is sent. Sending never blocks (the socket is
//! non-blocking) and a failure is logged, never fatal: systemd's view is
//! a convenience, serving is the job.

use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::path::Path;

/// The environment variable systemd names its socket in. Managed app
/// workers do not inherit it (see `workers::spawn`): their readiness is
/// moongate's business, and systemd would take their `READY=1` (gunicorn
/// sends one) for moongate's.
pub const NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";

/// A connection to systemd's notification socket.
#[derive(Debug)]
pub struct Notifier {
    socket: UnixDatagram,
    addr: SocketAddr,
}

impl Notifier {
    /// The notifier `NOTIFY_SOCKET` asks for; `None` when it is unset or
    /// empty (not under systemd), or unusable (logged).
    pub fn from_env() -> Option<Notifier> {
        let target = std::env::var_os(NOTIFY_SOCKET).filter(|v| !v.is_empty())?;
        match Notifier::new(&target) {
            Ok(n) => Some(n),
            Err(e) => {
                tracing::warn!(
                    socket = %target.to_string_lossy(),
                    error = %e,
                    "NOTIFY_SOCKET is set but cannot be used; systemd will not hear that moongate is ready"
                );
                None
            }
        }
    }

    /// A notifier sending to `target`: an absolute path, or `@name` for
    /// Linux's abstract namespace (as `NOTIFY_SOCKET` writes them).
    pub fn new(target: &OsStr) -> io::Result<Notifier> {
        let addr = match target.as_bytes() {
            [b'@', name @ ..] => abstract_addr(name)?,
            [b'/', ..] => SocketAddr::from_pathname(Path::new(target))?,
            _ => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "not an absolute path or an @abstract name",
                ));
            }
        };
        let socket = UnixDatagram::unbound()?;
        socket.set_nonblocking(true)?;
        Ok(Notifier { socket, addr })
    }

    /// Sends one notification (newline-separated `KEY=VALUE` lines).
    pub fn send(&self, message: &str) -> io::Result<()> {
        let sent = self.socket.send_to_addr(message.as_bytes(), &self.addr)?;
        if sent == message.len() {
            Ok(())
        } else {
            Err(io::Error::new(io::ErrorKind::WriteZero, "short datagram"))
        }
    }

    /// `READY=1`: listeners bound, managed pools ready (or a reload done,
    /// whatever its outcome: the configuration serving is ready), with
    /// this process as the main one and a one-line `STATUS`.
    pub fn ready(&self, status: &str) {
        let message = format!(
            "READY=1\nMAINPID={}\nSTATUS={}\n",
            std::process::id(),
            one_line(status)
        );
        self.log_failure("READY=1", self.send(&message));
    }

    /// `RELOADING=1` with the time it began, as systemd's reload protocol
    /// asks (`MONOTONIC_USEC` lets it tell this reload from an older one).
    pub fn reloading(&self) {
        let message = format!("RELOADING=1\nMONOTONIC_USEC={}\n", monotonic_usec());
        self.log_failure("RELOADING=1", self.send(&message));
    }

    /// `STOPPING=1`: a graceful stop began (in-flight requests finishing).
    pub fn stopping(&self) {
        self.log_failure("STOPPING=1", self.send("STOPPING=1\n"));
    }

    fn log_failure(&self, what: &str, result: io::Result<()>) {
        if let Err(e) = result {
            tracing::warn!(error = %e, "cannot tell systemd {what}");
        }
    }
}

#[cfg(target_os = "linux")]
fn abstract_addr(name: &[u8]) -> io::Result<SocketAddr> {
    use std::os::linux::net::SocketAddrExt;
    SocketAddr::from_abstract_name(name)
}

#[cfg(not(target_os = "linux"))]
fn abstract_addr(_name: &[u8]) -> io::Result<SocketAddr> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "abstract socket names exist on Linux only",
    ))
}

/// CLOCK_MONOTONIC in microseconds, the clock systemd compares against.
fn monotonic_usec() -> u64 {
    use nix::time::{ClockId, clock_gettime};
    clock_gettime(ClockId::CLOCK_MONOTONIC).map_or(0, |t| {
        let secs = u64::try_from(t.tv_sec()).unwrap_or(0);
        let micros = u64::try_from(t.tv_nsec() / 1000).unwrap_or(0);
        secs * 1_000_000 + micros
    })
}

/// `STATUS=` is one line: a reload error's own line breaks become spaces.
fn one_line(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn received(socket: &UnixDatagram) -> String {
        socket
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let mut buf = [0u8; 512];
        let n = socket.recv(&mut buf).expect("a notification");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    #[test]
    fn sends_to_a_path_socket() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("notify");
        let systemd = UnixDatagram::bind(&path).expect("bind");
        let n = Notifier::new(path.as_os_str()).expect("notifier");
        n.ready("serving generation 1");
        let msg = received(&systemd);
        let pid = std::process::id();
        assert_eq!(
            msg,
            format!("READY=1\nMAINPID={pid}\nSTATUS=serving generation 1\n")
        );
        n.stopping();
        assert_eq!(received(&systemd), "STOPPING=1\n");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn sends_to_an_abstract_socket_with_the_monotonic_time() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("moongate-sd-notify-test-{}", std::process::id());
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).expect("addr");
        let systemd = UnixDatagram::bind_addr(&addr).expect("bind");
        let n = Notifier::new(OsStr::new(&format!("@{name}"))).expect("notifier");
        let before = monotonic_usec();
        n.reloading();
        let after = monotonic_usec();
        let msg = received(&systemd);
        let usec: u64 = msg
            .strip_prefix("RELOADING=1\nMONOTONIC_USEC=")
            .and_then(|rest| rest.strip_suffix('\n'))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("unexpected message {msg:?}"));
        assert!(
            before <= usec && usec <= after,
            "{before} <= {usec} <= {after}"
        );
    }

    #[test]
    fn refuses_relative_and_empty_targets() {
        for bad in ["", "run/notify", "notify"] {
            let e = Notifier::new(OsStr::new(bad)).expect_err(bad);
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{bad}");
        }
    }

    #[test]
    fn a_status_stays_on_one_line() {
        assert_eq!(one_line("a.toml:3:1: bad\nvalue"), "a.toml:3:1: bad value");
    }
}

//! `moongate upgrade`: finds the running instance of a configuration (its
//! `pid_file`, else the admin listener's `GET /status`), sends it SIGUSR2
//! and waits for the outcome — a new pid in the pid file or on `/status`
//! (success); `/status` reporting the attempt failed, or the old process
//! writing its own pid into the pid file again (what it does when an
//! upgrade fails), is a failure.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::READY_BASE;
use crate::config::Config;

/// How often the outcome is looked for.
const POLL: Duration = Duration::from_millis(200);

/// A successful upgrade as `moongate upgrade` saw it.
#[derive(Debug, Clone, Copy)]
pub struct Requested {
    /// The process that handed over (it drains and exits).
    pub old: i32,
    /// The process serving now.
    pub new: i32,
}

/// What `/status` says that matters here.
struct Seen {
    pid: i32,
    attempts: u64,
    running: bool,
    failed: Option<String>,
}

/// Asks the instance running `config` to upgrade and waits for the end.
pub fn request(config: &Config) -> Result<Requested, String> {
    let admin = (config.admin.as_ref())
        .filter(|a| a.listen.addr.port() != 0)
        .map(|a| (a.listen.addr, a.token.as_deref()));
    let pid_file = config.server.pid_file.as_deref();
    let before = admin.and_then(|(addr, token)| status(addr, token).ok());
    let old = match (pid_file.map(read_pid), &before) {
        (Some(Ok(pid)), _) => pid,
        (_, Some(seen)) => seen.pid,
        (Some(Err(e)), None) => return Err(e),
        (None, None) if admin.is_some() => {
            return Err("the admin listener does not answer GET /status".into());
        }
        (None, None) => {
            return Err(
                "no [admin] listener and no server.pid_file configured: nothing to find the running server by"
                    .into(),
            );
        }
    };
    let written = pid_file.and_then(modified);
    kill(Pid::from_raw(old), Signal::SIGUSR2)
        .map_err(|e| format!("cannot signal process {old}: {e}"))?;
    let longest = (config.upstreams.values())
        .filter_map(|u| u.workers.as_ref())
        .map(|w| w.start_timeout)
        .max()
        .unwrap_or_default();
    // A little past the server's own deadline, so its verdict comes first.
    let wait = READY_BASE + longest * 2 + Duration::from_secs(15);
    let deadline = Instant::now() + wait;
    loop {
        std::thread::sleep(POLL);
        if let Some(Ok(pid)) = pid_file.map(read_pid) {
            if pid != old {
                return Ok(Requested { old, new: pid });
            }
            if pid_file.and_then(modified) != written {
                // Admin's reason, if it can be had, says more.
                let why = admin
                    .and_then(|(addr, token)| status(addr, token).ok())
                    .and_then(|seen| seen.failed)
                    .unwrap_or_else(|| "its log says why".into());
                return Err(format!("upgrade failed; pid {old} still serves: {why}"));
            }
        }
        if let Some((addr, token)) = admin
            && let Ok(seen) = status(addr, token)
        {
            if seen.pid != old {
                return Ok(Requested { old, new: seen.pid });
            }
            let began = before.as_ref().map_or(0, |b| b.attempts);
            if seen.attempts > began
                && !seen.running
                && let Some(why) = seen.failed
            {
                return Err(format!("upgrade failed; pid {old} still serves: {why}"));
            }
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "no new process took over from pid {old} within {wait:?}; its log says why"
            ));
        }
    }
}

fn modified(path: &Path) -> Option<std::time::SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

fn read_pid(path: &Path) -> Result<i32, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read pid file {}: {e}", path.display()))?;
    text.trim()
        .parse()
        .map_err(|_| format!("pid file {} does not hold a process id", path.display()))
}

/// `GET /status` in a plain HTTP/1.1 exchange.
fn status(addr: SocketAddr, token: Option<&str>) -> Result<Seen, String> {
    let fail = |e: std::io::Error| e.to_string();
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(3)).map_err(fail)?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(fail)?;
    let auth = token
        .map(|t| format!("authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        stream,
        "GET /status HTTP/1.1\r\nhost: {addr}\r\n{auth}accept: application/json\r\nconnection: close\r\n\r\n"
    )
    .map_err(fail)?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).map_err(fail)?;
    let raw = String::from_utf8_lossy(&raw);
    let body = raw.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    let doc: serde_json::Value =
        serde_json::from_str(body).map_err(|e| format!("GET /status: {e}"))?;
    let upgrade = &doc["upgrade"];
    let last = &upgrade["last"];
    Ok(Seen {
        pid: doc["pid"]
            .as_i64()
            .and_then(|p| i32::try_from(p).ok())
            .ok_or("GET /status names no pid")?,
        attempts: upgrade["attempts"].as_u64().unwrap_or(0),
        running: upgrade["running"].as_bool().unwrap_or(false),
        failed: (last["ok"] == false).then(|| {
            last["error"]
                .as_str()
                .unwrap_or("no reason given")
                .to_string()
        }),
    })
}

//! Starting one worker process: the argv with `{socket}` / `{port}` filled
//! in, its own process group, a parent-death signal so it never outlives
//! moongate, `dir` and `env`, and its stdout/stderr forwarded line by line
//! to the log. Also the signals sent to a worker's group and the
//! resident-memory reading used for recycling.
//! Nothing here knows about pools or readiness.

use std::io;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};

use super::sockets::SocketDir;
use crate::config::PeerAddr;
use crate::config::model::Workers as WorkersDef;

/// A worker's log line is cut after this many bytes.
const MAX_LINE: usize = 8 * 1024;

/// Pool names are cut to this many characters in socket file names, so
/// paths stay under the 108-byte limit of a unix socket address.
const MAX_NAME_IN_PATH: usize = 24;

/// A started worker process.
pub(super) struct Spawned {
    /// The process (reaped by whoever waits on it; killed if dropped).
    pub child: Child,
    /// Its pid, which is also its process group id.
    pub pid: u32,
    /// Where it was told to listen.
    pub addr: PeerAddr,
    /// The socket file to remove once it exited (unix sockets only).
    pub socket: Option<PathBuf>,
}

/// What identifies a worker in the log and in its socket's name.
pub(super) struct Ident<'a> {
    /// The pool (upstream) name.
    pub pool: &'a Arc<str>,
    /// The slot, 0-based: `MOONGATE_WORKER` and the `worker` log field.
    pub slot: usize,
    /// Unique per process started by this registry.
    pub seq: u64,
}

/// Starts one worker of `def`. Must run on the thread that lives as long as
/// moongate (the control thread): the parent-death signal is tied to the
/// thread that forks. The error is a plain sentence for `/status`.
pub(super) fn spawn(
    who: &Ident<'_>,
    def: &WorkersDef,
    sockets: &SocketDir,
) -> Result<Spawned, String> {
    let wants_socket = def.command.iter().any(|a| a.contains("{socket}"));
    let wants_port = def.command.iter().any(|a| a.contains("{port}"));
    let socket = if wants_socket {
        let dir = sockets
            .ensure()
            .map_err(|e| format!("cannot create the socket directory: {e}"))?;
        let path = dir.join(socket_name(who));
        if path.as_os_str().len() >= 108 {
            return Err(format!(
                "the socket path {} is longer than a unix socket allows; set TMPDIR to a shorter directory",
                path.display()
            ));
        }
        Some(path)
    } else {
        None
    };
    let port = if wants_port {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .map_err(|e| format!("cannot find a free port: {e}"))?;
        let port = listener
            .local_addr()
            .map_err(|e| format!("cannot find a free port: {e}"))?
            .port();
        Some(port)
    } else {
        None
    };
    let addr = match (&socket, port) {
        (Some(path), _) => PeerAddr::Unix(path.clone()),
        (None, Some(port)) => PeerAddr::Tcp(SocketAddr::from((Ipv4Addr::LOCALHOST, port))),
        (None, None) => {
            return Err("`command` names neither {socket} nor {port}".into());
        }
    };
    let argv: Vec<String> = def
        .command
        .iter()
        .map(|a| {
            let mut a = a.clone();
            if let Some(path) = &socket {
                a = a.replace("{socket}", &path.to_string_lossy());
            }
            if let Some(port) = port {
                a = a.replace("{port}", &port.to_string());
            }
            a
        })
        .collect();
    let Some((program, args)) = argv.split_first() else {
        return Err("`command` is empty".into());
    };
    let mut cmd = Command::new(program);
    cmd.args(args)
        // systemd's socket is moongate's: an app that notifies (gunicorn
        // sends READY=1) must not speak for the service (unless `env`
        // passes it on explicitly).
        .env_remove(crate::sd_notify::NOTIFY_SOCKET)
        .envs(&def.env)
        .env("MOONGATE_WORKER", who.slot.to_string())
        // Meant for this process alone (when an upgrade started it).
        .env_remove(crate::upgrade::SOCKET_ENV)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .process_group(0);
    cmd.current_dir(&def.dir);
    die_with_parent(&mut cmd);
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot start `{program}` in {}: {e}", def.dir.display()))?;
    let Some(pid) = child.id() else {
        return Err(format!("`{program}` exited at once"));
    };
    if let Some(out) = child.stdout.take() {
        tokio::spawn(forward_lines(
            out,
            who.pool.clone(),
            who.slot,
            pid,
            "stdout",
        ));
    }
    if let Some(err) = child.stderr.take() {
        tokio::spawn(forward_lines(
            err,
            who.pool.clone(),
            who.slot,
            pid,
            "stderr",
        ));
    }
    Ok(Spawned {
        child,
        pid,
        addr,
        socket,
    })
}

/// `{pool}-{slot}-{seq}.sock`, the pool name cut short and kept to safe
/// characters; a new name for every process, so a stale file left by an
/// earlier one never answers a readiness probe.
fn socket_name(who: &Ident<'_>) -> String {
    let pool: String = who
        .pool
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .take(MAX_NAME_IN_PATH)
        .collect();
    format!("{pool}-{}-{}.sock", who.slot, who.seq)
}

/// Has the child killed (SIGKILL) when moongate's control thread dies, also
/// when moongate itself is SIGKILLed; a child forked just as moongate died
/// (so the parent-death signal was set too late) refuses to start.
#[allow(unsafe_code)]
fn die_with_parent(cmd: &mut Command) {
    let parent = nix::unistd::getpid();
    // SAFETY: the closure runs in the forked child before exec, where only
    // async-signal-safe calls are allowed. It makes two plain system calls
    // (prctl(PR_SET_PDEATHSIG) and getppid) and builds an `io::Error` from a
    // raw errno, which allocates nothing and takes no lock.
    unsafe {
        cmd.pre_exec(move || {
            #[cfg(target_os = "linux")]
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(io::Error::from)?;
            if nix::unistd::getppid() != parent {
                return Err(io::Error::from(nix::errno::Errno::ESRCH));
            }
            Ok(())
        });
    }
}

/// Sends `signal` to the worker's process group (the worker and whatever
/// it forked). A group already gone is not an error.
pub(super) fn signal_group(pid: u32, signal: Signal) {
    let Ok(raw) = i32::try_from(pid) else { return };
    if raw <= 1 {
        return;
    }
    match killpg(Pid::from_raw(raw), signal) {
        Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
        Err(e) => {
            tracing::debug!(pid, %signal, error = %e, "cannot signal a worker's process group")
        }
    }
}

/// The resident memory of `pid` in bytes (VmRSS in /proc/PID/status).
pub(super) fn rss_bytes(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_vm_rss(&text)
}

fn parse_vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let mut parts = line["VmRSS:".len()..].split_whitespace();
    let n: u64 = parts.next()?.parse().ok()?;
    let unit = match parts.next() {
        Some("kB") | None => 1024,
        Some("mB") => 1024 * 1024,
        Some(_) => return None,
    };
    n.checked_mul(unit)
}

/// Logs each line the worker writes, tagged with pool, worker, pid and
/// stream; a line longer than [`MAX_LINE`] is cut there.
async fn forward_lines<R: AsyncRead + Unpin>(
    reader: R,
    pool: Arc<str>,
    worker: usize,
    pid: u32,
    stream: &'static str,
) {
    let mut reader = BufReader::new(reader);
    let mut line: Vec<u8> = Vec::new();
    let emit = |line: &[u8]| {
        let text = String::from_utf8_lossy(line);
        let text = text.trim_end_matches('\r');
        tracing::info!(pool = %pool, worker, pid, stream, "{text}");
    };
    loop {
        let buf = match reader.fill_buf().await {
            Ok([]) | Err(_) => break,
            Ok(buf) => buf,
        };
        let newline = buf.iter().position(|b| *b == b'\n');
        let chunk = &buf[..newline.unwrap_or(buf.len())];
        let room = MAX_LINE.saturating_sub(line.len());
        line.extend_from_slice(&chunk[..chunk.len().min(room)]);
        let used = newline.map_or(buf.len(), |i| i + 1);
        reader.consume(used);
        if newline.is_some() {
            emit(&line);
            line.clear();
        }
    }
    if !line.is_empty() {
        emit(&line);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_rss_is_read_in_bytes() {
        let status = "Name:\tpython3\nVmPeak:\t  20000 kB\nVmRSS:\t    9876 kB\nThreads:\t1\n";
        assert_eq!(parse_vm_rss(status), Some(9876 * 1024));
        assert_eq!(parse_vm_rss("Name:\tx\n"), None);
    }

    #[test]
    fn socket_names_are_short_and_safe() {
        let pool: Arc<str> = Arc::from("a/very.long-pool_name-that-goes-on-and-on-forever");
        let who = Ident {
            pool: &pool,
            slot: 3,
            seq: 17,
        };
        let name = socket_name(&who);
        assert_eq!(name, "averylong-pool_name-that-3-17.sock");
        assert!(!name.contains('/'));
    }

    #[test]
    fn own_process_rss_is_found() {
        let rss = rss_bytes(std::process::id());
        assert!(rss.is_some_and(|b| b > 0), "{rss:?}");
    }
}

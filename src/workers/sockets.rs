//! The private directory (mode 0700) holding the workers' unix sockets,
//! `{tmp}/moongate-{pid}/`: created at first use, removed when the registry
//! stops. A moongate that was killed cannot remove its own, so the first
//! one created also removes the directories of moongate processes that are
//! gone.

use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use nix::errno::Errno;
use nix::sys::signal::kill;
use nix::unistd::Pid;

/// Tells registries in one process apart (embedding, tests).
static NEXT_DIR: AtomicU64 = AtomicU64::new(0);

/// One registry's socket directory.
#[derive(Debug)]
pub(super) struct SocketDir {
    path: PathBuf,
}

impl SocketDir {
    /// The directory for this process (a second registry in the same
    /// process gets its own, suffixed).
    pub(super) fn new() -> SocketDir {
        let n = NEXT_DIR.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let name = if n == 0 {
            format!("moongate-{pid}")
        } else {
            format!("moongate-{pid}-{n}")
        };
        SocketDir {
            path: std::env::temp_dir().join(name),
        }
    }

    /// Creates the directory if needed and returns it.
    pub(super) fn ensure(&self) -> io::Result<&Path> {
        match std::fs::DirBuilder::new().mode(0o700).create(&self.path) {
            Ok(()) => {
                if let Some(tmp) = self.path.parent() {
                    sweep_stale(tmp, &self.path);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                // Left by an earlier process with our pid: make it ours again.
                std::fs::set_permissions(&self.path, std::fs::Permissions::from_mode(0o700))?;
            }
            Err(e) => return Err(e),
        }
        Ok(&self.path)
    }

    /// Removes the directory and whatever is left in it.
    pub(super) fn remove(&self) {
        match std::fs::remove_dir_all(&self.path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!(
                path = %self.path.display(),
                error = %e,
                "cannot remove the workers' socket directory"
            ),
        }
    }
}

/// Removes the socket directories in `tmp` left by moongate processes that
/// are gone: named `moongate-PID` or `moongate-PID-N`, owned by the owner of
/// `own`, PID not running here, and no socket in it accepting connections
/// (so a moongate in another pid namespace sharing `tmp` keeps its own).
fn sweep_stale(tmp: &Path, own: &Path) {
    let Ok(me) = std::fs::symlink_metadata(own).map(|m| m.uid()) else {
        return;
    };
    let Ok(entries) = std::fs::read_dir(tmp) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path == own {
            continue;
        }
        let Some(pid) = entry.file_name().to_str().and_then(stale_pid) else {
            continue;
        };
        // DirEntry::metadata does not follow a symlink.
        let Ok(meta) = entry.metadata() else { continue };
        if !meta.is_dir() || meta.uid() != me || running(pid) || answers(&path) {
            continue;
        }
        match std::fs::remove_dir_all(&path) {
            Ok(()) => {
                tracing::debug!(path = %path.display(), "removed the socket directory of a moongate that is gone")
            }
            Err(e) => {
                tracing::debug!(path = %path.display(), error = %e, "cannot remove a stale socket directory")
            }
        }
    }
}

/// The pid in `moongate-PID` or `moongate-PID-N`.
fn stale_pid(name: &str) -> Option<i32> {
    let rest = name.strip_prefix("moongate-")?;
    let (pid, n) = match rest.split_once('-') {
        Some((pid, n)) => (pid, Some(n)),
        None => (rest, None),
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(pid) || n.is_some_and(|n| !digits(n)) {
        return None;
    }
    pid.parse().ok().filter(|p| *p > 1)
}

/// Whether a process `pid` exists (ours or not).
fn running(pid: i32) -> bool {
    !matches!(kill(Pid::from_raw(pid), None), Err(Errno::ESRCH))
}

/// Whether any `*.sock` in `dir` accepts a connection.
fn answers(dir: &Path) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return false;
    };
    entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "sock"))
        .any(|p| UnixStream::connect(p).is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_of_socket_directories() {
        assert_eq!(stale_pid("moongate-1234"), Some(1234));
        assert_eq!(stale_pid("moongate-1234-2"), Some(1234));
        assert_eq!(stale_pid("moongate-1"), None);
        assert_eq!(stale_pid("moongate-"), None);
        assert_eq!(stale_pid("moongate-12a"), None);
        assert_eq!(stale_pid("moongate-12-"), None);
        assert_eq!(stale_pid("moongate-12-x"), None);
        assert_eq!(stale_pid("other-12"), None);
    }

    #[test]
    fn only_directories_of_processes_that_are_gone_are_swept() {
        let tmp = tempfile::tempdir().unwrap();
        let make = |name: &str| {
            let p = tmp.path().join(name);
            std::fs::create_dir(&p).unwrap();
            std::fs::write(p.join("app-0-1.sock"), "").unwrap();
            p
        };
        let own = make(&format!("moongate-{}", std::process::id()));
        // No process has a pid this large (pid_max is at most 2^22).
        let gone = make("moongate-2147483000");
        let gone_second = make("moongate-2147483000-1");
        let alive = make(&format!("moongate-{}-7", std::process::id()));
        let unrelated = make("moongate-cache");
        let listening = make("moongate-2147483001");
        let sock = listening.join("live.sock");
        let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();

        sweep_stale(tmp.path(), &own);

        assert!(!gone.exists() && !gone_second.exists());
        for kept in [&own, &alive, &unrelated, &listening] {
            assert!(kept.exists(), "{} was removed", kept.display());
        }
    }
}

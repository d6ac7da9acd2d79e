//! Debian's real nginx for the comparisons: one process (`master_process
//! off`, so its PID is the whole server) on a free loopback port, under a
//! temp prefix, killed on drop.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Where Debian's `nginx` package puts the binary (test.sh installs it).
pub const NGINX: &str = "/usr/sbin/nginx";

/// A running nginx.
pub struct Nginx {
    child: Option<Child>,
    /// Where it listens.
    pub addr: SocketAddr,
    _prefix: tempfile::TempDir,
}

/// A loopback address no one listens on now.
pub fn free_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    l.local_addr().expect("free port")
}

/// The configuration without the main-context directives the test sets on
/// the command line (`-g`), which nginx refuses twice.
fn strip_process_directives(conf: &str) -> String {
    conf.lines()
        .filter(|l| {
            let t = l.trim_start();
            !["daemon ", "master_process ", "pid ", "error_log "]
                .iter()
                .any(|d| t.starts_with(d))
        })
        .map(|l| format!("{l}\n"))
        .collect()
}

impl Nginx {
    /// Starts nginx on `conf` (which must listen on `addr`), with `files`
    /// (relative path, text) beside it, and waits until it accepts
    /// connections.
    pub fn start(conf: &str, files: &[(String, String)], addr: SocketAddr) -> Nginx {
        assert!(
            Path::new(NGINX).is_file(),
            "{NGINX} is missing: install Debian's nginx and libnginx-mod-http-lua (test.sh does)"
        );
        let prefix = tempfile::tempdir().expect("nginx prefix");
        for d in ["tmp", "logs", "html"] {
            std::fs::create_dir_all(prefix.path().join(d)).expect("prefix dirs");
        }
        for (rel, text) in files {
            let path = prefix.path().join(rel);
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).expect("mkdir");
            }
            std::fs::write(path, text).expect("write an included file");
        }
        let conf_path = prefix.path().join("nginx.conf");
        std::fs::write(&conf_path, strip_process_directives(conf)).expect("write nginx.conf");
        let globals = format!(
            "daemon off; master_process off; pid {}; error_log stderr warn;",
            prefix.path().join("nginx.pid").display()
        );
        let mut child = Command::new(NGINX)
            .arg("-p")
            .arg(prefix.path())
            .arg("-c")
            .arg(&conf_path)
            .arg("-e")
            .arg("stderr")
            .arg("-g")
            .arg(globals)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn nginx");
        // Drained as it comes, so a chatty nginx never blocks on the pipe.
        let log = Arc::new(Mutex::new(String::new()));
        if let Some(stderr) = child.stderr.take() {
            let sink = log.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    if let Ok(mut l) = sink.lock() {
                        l.push_str(&line);
                        l.push('\n');
                    }
                }
            });
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                break;
            }
            if let Ok(Some(status)) = child.try_wait() {
                std::thread::sleep(Duration::from_millis(100));
                let err = log.lock().map(|l| l.clone()).unwrap_or_default();
                panic!("nginx exited ({status}) before listening on {addr}:\n{err}");
            }
            assert!(
                Instant::now() < deadline,
                "nginx did not listen on {addr} within 10 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Nginx {
            child: Some(child),
            addr,
            _prefix: prefix,
        }
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

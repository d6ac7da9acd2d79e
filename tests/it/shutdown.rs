//! Graceful stop: SIGTERM stops accepting, lets requests in flight finish
//! (up to `shutdown_timeout`) and exits 0.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use tokio::io::AsyncReadExt;

use crate::support::{Moongate, Origin, client, text, wait_refused};

fn conf(origin: SocketAddr, server_extra: &str) -> String {
    format!(
        r#"[server]
listen = ["127.0.0.1:0"]
workers = 2
access_log = "off"
{server_extra}

[upstream.slow]
servers = [{{ addr = "{origin}" }}]
read_timeout = "30s"

[[route]]
path = "/"
upstream = "slow"
"#
    )
}

/// An origin that answers 200 "slow" after `delay`.
async fn slow_origin(delay: Duration) -> Origin {
    Origin::start(move |_req| async move {
        tokio::time::sleep(delay).await;
        text(200, "slow")
    })
    .await
}

/// Polls until `origin` has received a request; panics after `timeout`.
async fn wait_hit(origin: &Origin, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while origin.hits() == 0 {
        assert!(
            Instant::now() < deadline,
            "the request never reached the origin"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_a_request_in_flight() {
    let origin = slow_origin(Duration::from_millis(1500)).await;
    let mut mg = tokio::task::block_in_place(|| Moongate::start(&conf(origin.addr, "")));
    let addr = mg.http[0];
    let url = mg.url("/slow");
    let in_flight = tokio::spawn(async move {
        let resp = client().get(url).send().await?;
        let status = resp.status().as_u16();
        Ok::<_, reqwest::Error>((status, resp.text().await?))
    });
    wait_hit(&origin, Duration::from_secs(5)).await;
    // An accepted connection that never sends a request must not hold up
    // the exit (the default shutdown_timeout is 30 s).
    let mut idle = tokio::net::TcpStream::connect(addr)
        .await
        .expect("idle connection");

    mg.signal(Signal::SIGTERM);
    // New connections are refused; the old request is still served.
    wait_refused(addr, Duration::from_secs(5)).await;

    let answer = tokio::time::timeout(Duration::from_secs(10), in_flight)
        .await
        .expect("the in-flight request finishes")
        .expect("request task")
        .expect("the in-flight request completes");
    assert_eq!(answer, (200, "slow".to_string()));
    let code = tokio::task::block_in_place(|| mg.wait_exit(Duration::from_secs(5)));
    assert_eq!(code, Some(0), "moongate did not exit 0 after draining");
    mg.wait_log("stopping: no new connections", Duration::from_secs(2));
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(5), idle.read(&mut buf))
        .await
        .expect("the idle connection is closed");
    assert!(
        matches!(read, Ok(0) | Err(_)),
        "the idle connection got {read:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_stops_gracefully() {
    let origin = slow_origin(Duration::from_millis(300)).await;
    let mut mg = tokio::task::block_in_place(|| Moongate::start(&conf(origin.addr, "")));
    let url = mg.url("/");
    let in_flight = tokio::spawn(async move {
        let resp = client().get(url).send().await?;
        let status = resp.status().as_u16();
        Ok::<_, reqwest::Error>((status, resp.text().await?))
    });
    wait_hit(&origin, Duration::from_secs(5)).await;
    mg.signal(Signal::SIGINT);
    let answer = tokio::time::timeout(Duration::from_secs(10), in_flight)
        .await
        .expect("the in-flight request finishes")
        .expect("request task")
        .expect("the in-flight request completes");
    assert_eq!(answer, (200, "slow".to_string()));
    let code = tokio::task::block_in_place(|| mg.wait_exit(Duration::from_secs(5)));
    assert_eq!(code, Some(0), "moongate did not exit 0 on SIGINT");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigquit_stops_at_once() {
    // The default shutdown_timeout (30 s) would wait for this request.
    let origin = slow_origin(Duration::from_secs(10)).await;
    let mut mg = tokio::task::block_in_place(|| Moongate::start(&conf(origin.addr, "")));
    let url = mg.url("/");
    let in_flight = tokio::spawn(async move { client().get(url).send().await });
    wait_hit(&origin, Duration::from_secs(5)).await;
    mg.signal(Signal::SIGQUIT);
    let code = tokio::task::block_in_place(|| mg.wait_exit(Duration::from_secs(5)));
    assert_eq!(code, Some(0), "moongate did not stop at once on SIGQUIT");
    let cut = tokio::time::timeout(Duration::from_secs(5), in_flight)
        .await
        .expect("the client notices the closed connection")
        .expect("request task");
    assert!(cut.is_err(), "got an answer: {cut:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_timeout_bounds_the_drain() {
    let origin = slow_origin(Duration::from_secs(10)).await;
    let mut mg = tokio::task::block_in_place(|| {
        Moongate::start(&conf(origin.addr, "shutdown_timeout = \"500ms\""))
    });
    let url = mg.url("/");
    let in_flight = tokio::spawn(async move { client().get(url).send().await });
    wait_hit(&origin, Duration::from_secs(5)).await;

    mg.signal(Signal::SIGTERM);
    let code = tokio::task::block_in_place(|| mg.wait_exit(Duration::from_secs(5)));
    assert_eq!(
        code,
        Some(0),
        "moongate did not exit 0 within 5 s of SIGTERM with a 500ms shutdown_timeout"
    );
    mg.wait_log("shutdown_timeout passed", Duration::from_secs(2));
    // The request that outlived the timeout was cut, not answered.
    let cut = tokio::time::timeout(Duration::from_secs(5), in_flight)
        .await
        .expect("the client notices the closed connection")
        .expect("request task");
    assert!(cut.is_err(), "got an answer: {cut:?}");
}

/// The binary started directly, its log lines handed over as they are
/// written, so a signal can follow the "moongate ready" line at once (the
/// support harness polls its log every 20 ms).
struct Raw {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
    _dir: tempfile::TempDir,
}

impl Raw {
    fn start() -> Raw {
        let dir = tempfile::tempdir().expect("temp dir");
        let conf = "[server]\nlisten = [\"127.0.0.1:0\"]\nworkers = 2\naccess_log = \"off\"\n";
        std::fs::write(dir.path().join("00-test.toml"), conf).expect("write conf");
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_moongate"))
            .arg("run")
            .arg("-c")
            .arg(dir.path())
            .env("RUST_LOG", "info")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn moongate");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Raw {
            child,
            lines,
            _dir: dir,
        }
    }

    /// Waits for a line containing `needle`; None if the log ended or
    /// `timeout` passed first.
    fn wait_line(&self, needle: &str, timeout: Duration) -> Option<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            let line = self.lines.recv_timeout(left).ok()?;
            if line.contains(needle) {
                return Some(line);
            }
        }
    }

    fn signal(&self, sig: Signal) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, sig).expect("signal");
    }

    /// Waits for the exit; None if it is still running after `timeout`.
    fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                return Some(st);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Raw {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn sigterm_right_after_ready_exits_0() {
    // "ready" means the signals are handled: a SIGTERM sent the moment the
    // line appears must stop gracefully, not kill by the default action.
    for round in 0..5 {
        let mut mg = Raw::start();
        mg.wait_line("moongate ready", Duration::from_secs(20))
            .expect("moongate ready");
        mg.signal(Signal::SIGTERM);
        let status = mg.wait_exit(Duration::from_secs(10));
        assert_eq!(
            status.map(|s| s.code()),
            Some(Some(0)),
            "round {round}: SIGTERM right after ready gave {status:?}"
        );
    }
}

#[test]
fn sighup_right_after_ready_reloads() {
    for round in 0..5 {
        let mut mg = Raw::start();
        mg.wait_line("moongate ready", Duration::from_secs(20))
            .expect("moongate ready");
        mg.signal(Signal::SIGHUP);
        let reloaded = mg.wait_line("configuration reloaded", Duration::from_secs(10));
        let early_exit = mg.wait_exit(Duration::ZERO);
        assert!(
            reloaded
                .as_deref()
                .is_some_and(|l| l.contains("trigger=\"signal\"")),
            "round {round}: SIGHUP right after ready did not reload ({reloaded:?}); exit: {early_exit:?}"
        );
        assert!(early_exit.is_none(), "round {round}: {early_exit:?}");
        mg.signal(Signal::SIGTERM);
        let status = mg.wait_exit(Duration::from_secs(10));
        assert_eq!(status.map(|s| s.code()), Some(Some(0)), "round {round}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloaded_shutdown_timeout_applies() {
    let origin = slow_origin(Duration::from_secs(10)).await;
    let admin = "\n[admin]\nlisten = \"127.0.0.1:0\"\n";
    let mut mg = tokio::task::block_in_place(|| {
        Moongate::start(&format!("{}{admin}", conf(origin.addr, "")))
    });
    // Reload from the default 30 s to 500 ms.
    mg.write_conf(
        "00-test.toml",
        &format!(
            "{}{admin}",
            conf(origin.addr, "shutdown_timeout = \"500ms\"")
        ),
    );
    let resp = client()
        .post(mg.admin_url("/reload"))
        .send()
        .await
        .expect("POST /reload");
    assert_eq!(resp.status(), 200);

    let url = mg.url("/");
    let in_flight = tokio::spawn(async move { client().get(url).send().await });
    wait_hit(&origin, Duration::from_secs(5)).await;
    mg.signal(Signal::SIGTERM);
    let code = tokio::task::block_in_place(|| mg.wait_exit(Duration::from_secs(5)));
    assert_eq!(
        code,
        Some(0),
        "the reloaded shutdown_timeout (500ms) was not used: no exit within 5 s"
    );
    let cut = tokio::time::timeout(Duration::from_secs(5), in_flight)
        .await
        .expect("the client notices the closed connection")
        .expect("request task");
    assert!(cut.is_err(), "got an answer: {cut:?}");
}

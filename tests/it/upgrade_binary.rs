//! Zero-downtime binary upgrade (SPEC §12, issue 17 point 1): SIGUSR2 or
//! `moongate upgrade` starts the executable again, hands it the listening
//! sockets, and the old process drains and exits once the new one reports
//! ready. Through the real binary on loopback: upgrades under keep-alive
//! client loops lose no request, the pid file and `/status` follow the
//! serving process, a new process that cannot start leaves the old one
//! serving (its log says why), a request in flight finishes on the old
//! process, managed worker pools are replaced, and the executable is read
//! again from the path it was started by.
//!
//! The processes an upgrade starts are not the test's children: a
//! [`Pids`] guard kills whichever of them still runs when a test ends.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::support::{Moongate, Origin, client, gone, text};
use crate::tls::{https, self_signed, tls_client, write_pair};

mod workers;

/// A conf.d for `body`, with a pid file and an admin listener, written
/// into a fresh temp dir: (dir, pid file).
fn conf_dir(body: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("temp dir");
    let pid_file = dir.path().join("moongate.pid");
    std::fs::write(dir.path().join("00-test.toml"), conf(&pid_file, body)).expect("write conf");
    (dir, pid_file)
}

fn conf(pid_file: &Path, body: &str) -> String {
    format!(
        r#"[server]
listen = ["127.0.0.1:0"]
workers = 2
access_log = "off"
shutdown_timeout = "10s"
pid_file = "{}"

[admin]
listen = "127.0.0.1:0"

{body}"#,
        pid_file.display()
    )
}

/// An upstream `origin` routed from `/`.
fn proxied(origin: &Origin) -> String {
    format!(
        r#"[upstream.origin]
servers = [{{ addr = "{}" }}]
read_timeout = "10s"

[[route]]
path = "/"
upstream = "origin"
"#,
        origin.addr
    )
}

/// An origin answering "ok", and "slow" after a second on `/slow`.
async fn origin() -> Origin {
    Origin::start(|req| async move {
        if req.uri().path() == "/slow" {
            tokio::time::sleep(Duration::from_secs(1)).await;
            return text(200, "slow");
        }
        text(200, "ok")
    })
    .await
}

/// Every moongate pid a test saw; those still running at the end are
/// killed (the upgrades' processes are not the test's children).
#[derive(Default)]
struct Pids(std::sync::Mutex<BTreeSet<i32>>);

impl Pids {
    fn saw(&self, pid: i32) {
        self.0.lock().unwrap().insert(pid);
    }
}

impl Drop for Pids {
    fn drop(&mut self) {
        for &pid in self.0.lock().unwrap().iter() {
            let ours = std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains("moongate"));
            if ours && !gone(pid) {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
        }
    }
}

fn read_pid(pid_file: &Path) -> Option<i32> {
    std::fs::read_to_string(pid_file).ok()?.trim().parse().ok()
}

/// How an upgrade is asked for.
#[derive(Clone, Copy)]
enum Ask {
    /// SIGUSR2 to the serving process.
    Signal,
    /// `moongate upgrade -c DIR`.
    Command,
    /// The test asked already.
    Asked,
}

/// Asks `old` (the process serving `conf_dir`) to upgrade, waits until the
/// pid file names another process and `old` has exited; the new pid.
async fn upgrade(ask: Ask, old: i32, conf_dir: &Path, pid_file: &Path, pids: &Pids) -> i32 {
    match ask {
        Ask::Asked => {}
        Ask::Signal => kill(Pid::from_raw(old), Signal::SIGUSR2).expect("SIGUSR2"),
        Ask::Command => {
            let out = upgrade_command(conf_dir).await;
            assert!(
                out.status.success(),
                "moongate upgrade failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            let said = String::from_utf8_lossy(&out.stdout);
            assert!(said.contains(&format!("pid {old} drains")), "{said}");
        }
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    let new = loop {
        match read_pid(pid_file) {
            Some(pid) if pid != old => break pid,
            _ => {}
        }
        assert!(Instant::now() < deadline, "the pid file still names {old}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    pids.saw(new);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !gone(old) {
        assert!(
            Instant::now() < deadline,
            "the old process {old} did not exit"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    new
}

/// Runs `moongate upgrade -c conf_dir`.
async fn upgrade_command(conf_dir: &Path) -> std::process::Output {
    let conf_dir = conf_dir.to_path_buf();
    tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_moongate"))
            .arg("upgrade")
            .arg("-c")
            .arg(&conf_dir)
            .output()
            .expect("run moongate upgrade")
    })
    .await
    .expect("moongate upgrade")
}

/// `GET /status` on the admin listener (whichever process answers it).
async fn status(mg: &Moongate) -> serde_json::Value {
    let text = client()
        .get(mg.admin_url("/status"))
        .send()
        .await
        .expect("GET /status")
        .text()
        .await
        .expect("status body");
    serde_json::from_str(&text).expect("status JSON")
}

/// Keep-alive clients GETting a URL in a loop, each its own client (so
/// its own connection), until finished.
struct Load {
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<(usize, Vec<String>)>>,
}

impl Load {
    fn start(url: String, clients: usize, want: &'static str) -> Load {
        Self::start_with(url, clients, want, client)
    }

    /// Like [`Load::start`], each client made by `make`.
    fn start_with(
        url: String,
        clients: usize,
        want: &'static str,
        make: impl Fn() -> reqwest::Client,
    ) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = (0..clients)
            .map(|_| {
                let (stop, url, http) = (stop.clone(), url.clone(), make());
                tokio::spawn(async move {
                    let (mut ok, mut failed) = (0, Vec::new());
                    while !stop.load(Ordering::SeqCst) {
                        match http.get(&url).send().await {
                            Ok(resp) => {
                                let status = resp.status().as_u16();
                                match resp.text().await {
                                    Ok(body) if status == 200 && body.contains(want) => ok += 1,
                                    Ok(body) => failed.push(format!("{status}: {body}")),
                                    Err(e) => failed.push(format!("body: {e:?}")),
                                }
                            }
                            Err(e) => failed.push(format!("{e:?}")),
                        }
                    }
                    (ok, failed)
                })
            })
            .collect();
        Load { stop, tasks }
    }

    /// Lets the clients run for `d`.
    async fn run_for(&self, d: Duration) {
        tokio::time::sleep(d).await;
    }

    /// Stops the clients; asserts no request failed and at least `min`
    /// were answered.
    async fn finish(self, min: usize) -> usize {
        self.stop.store(true, Ordering::SeqCst);
        let (mut ok, mut failed) = (0, Vec::new());
        for t in self.tasks {
            let (o, f) = t.await.expect("load task");
            ok += o;
            failed.extend(f);
        }
        assert!(
            failed.is_empty(),
            "{} of {} requests failed; first ones: {:#?}",
            failed.len(),
            failed.len() + ok,
            &failed[..failed.len().min(5)]
        );
        assert!(ok >= min, "only {ok} requests were answered (want {min})");
        ok
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_upgrades_under_load_lose_no_request() {
    let origin = origin().await;
    // A TLS listener (HTTP/2 by ALPN) beside the plain one and the admin.
    let pem = self_signed(&["a.test"]);
    let certs = tempfile::tempdir().expect("cert dir");
    let tls = format!(
        r#"[[server.tls]]
listen = "127.0.0.1:0"
certs = [{}]
alpn = ["h2", "http/1.1"]

{}"#,
        write_pair(certs.path(), "a", &pem),
        proxied(&origin)
    );
    let (dir, pid_file) = conf_dir(&tls);
    let conf = dir.path().to_path_buf();
    let mg = tokio::task::block_in_place(|| Moongate::start_in(dir));
    let pids = Pids::default();
    let mut serving = mg.pid();
    pids.saw(serving);
    assert_eq!(read_pid(&pid_file), Some(serving));

    let load = Load::start(mg.url("/"), 6, "ok");
    let tls_addr = mg.https[0];
    let tls_load = Load::start_with(https("a.test", tls_addr, "/"), 2, "ok", || {
        tls_client(&pem, "a.test", tls_addr)
    });
    load.run_for(Duration::from_millis(300)).await;
    for ask in [Ask::Signal, Ask::Command, Ask::Signal] {
        let old = serving;
        serving = upgrade(ask, old, &conf, &pid_file, &pids).await;
        let st = status(&mg).await;
        assert_eq!(st["pid"], serving, "/status is answered by {}", st["pid"]);
        // The listeners are the same sockets: same addresses.
        let addrs: BTreeSet<String> = (st["listeners"].as_array().into_iter().flatten())
            .filter_map(|l| l["addr"].as_str().map(String::from))
            .collect();
        let opened = BTreeSet::from([mg.http[0].to_string(), tls_addr.to_string()]);
        assert_eq!(addrs, opened, "{}", st["listeners"]);
        mg.wait_log(&format!("pid {serving} serves now"), Duration::from_secs(5));
        mg.wait_log(&format!("took over from pid {old}"), Duration::from_secs(5));
        load.run_for(Duration::from_millis(300)).await;
    }
    let answered = load.finish(100).await + tls_load.finish(20).await;
    assert!(origin.hits() >= answered);
    // The last one is the only one left, and serves.
    assert_eq!(read_pid(&pid_file), Some(serving));
    let resp = client().get(mg.url("/")).send().await.expect("GET /");
    assert_eq!(resp.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_in_flight_finishes_on_the_old_process() {
    let origin = origin().await;
    let (dir, pid_file) = conf_dir(&proxied(&origin));
    let mg = tokio::task::block_in_place(|| Moongate::start_in(dir));
    let pids = Pids::default();
    let old = mg.pid();
    pids.saw(old);

    let url = mg.url("/slow");
    let slow = tokio::spawn(async move {
        let resp = client().get(url).send().await?;
        let status = resp.status().as_u16();
        Ok::<_, reqwest::Error>((status, resp.text().await?))
    });
    let deadline = Instant::now() + Duration::from_secs(5);
    while origin.hits() == 0 {
        assert!(Instant::now() < deadline, "the slow request never arrived");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    kill(Pid::from_raw(old), Signal::SIGUSR2).expect("SIGUSR2");
    // The new process serves while the old one still has the request.
    let deadline = Instant::now() + Duration::from_secs(30);
    let new = loop {
        match read_pid(&pid_file) {
            Some(pid) if pid != old => break pid,
            _ => {}
        }
        assert!(Instant::now() < deadline, "no new process took over");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    pids.saw(new);
    assert!(!slow.is_finished() && !gone(old));
    let answer = tokio::time::timeout(Duration::from_secs(10), slow)
        .await
        .expect("the slow request finishes")
        .expect("request task")
        .expect("the slow request is answered");
    assert_eq!(answer, (200, "slow".to_string()));
    let deadline = Instant::now() + Duration::from_secs(20);
    while !gone(old) {
        assert!(Instant::now() < deadline, "the old process did not exit");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(status(&mg).await["pid"], new);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_process_that_cannot_start_leaves_the_old_one_serving() {
    let origin = origin().await;
    let body = proxied(&origin);
    let (dir, pid_file) = conf_dir(&body);
    let conf = dir.path().to_path_buf();
    let mg = tokio::task::block_in_place(|| Moongate::start_in(dir));
    let pids = Pids::default();
    let old = mg.pid();
    pids.saw(old);
    let good = std::fs::read_to_string(conf.join("00-test.toml")).expect("conf");

    // Broken on disk: the new process fails its configuration.
    mg.write_conf("00-test.toml", &format!("{good}\n[[route]]\npath = \n"));
    let skip = mg.log_lines().len();
    kill(Pid::from_raw(old), Signal::SIGUSR2).expect("SIGUSR2");
    let why = mg.wait_log_after(skip, "upgrade failed", Duration::from_secs(30));
    assert!(why.contains(&format!("still serving (pid {old})")), "{why}");
    assert!(
        why.contains("00-test.toml:"),
        "the reason names the file: {why}"
    );
    assert!(why.contains("exit status 1"), "{why}");
    let st = status(&mg).await;
    assert_eq!(st["pid"], old);
    assert_eq!(st["upgrade"]["failures"], 1, "{}", st["upgrade"]);
    assert_eq!(st["upgrade"]["last"]["ok"], false);
    let page = client()
        .get(mg.admin_url("/"))
        .send()
        .await
        .expect("GET /")
        .text()
        .await
        .expect("page");
    assert!(
        page.contains("Last binary upgrade: <span class=\"st-down\">failed</span>")
            && page.contains("invalid TOML"),
        "the status page shows the failed upgrade"
    );
    assert_eq!(read_pid(&pid_file), Some(old));
    let resp = client().get(mg.url("/")).send().await.expect("GET /");
    assert_eq!(resp.status(), 200);

    // A listen address another process holds: the configuration loads
    // (so `moongate upgrade` finds the server) but the new process cannot
    // open it. The command says so.
    let busy = std::net::TcpListener::bind("127.0.0.1:0").expect("busy port");
    let taken = busy.local_addr().expect("busy addr");
    let clashing = good.replacen(
        "listen = [\"127.0.0.1:0\"]",
        &format!("listen = [\"127.0.0.1:0\", \"{taken}\"]"),
        1,
    );
    mg.write_conf("00-test.toml", &clashing);
    let out = upgrade_command(&conf).await;
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(said.contains(&format!("pid {old} still serves")), "{said}");
    mg.wait_log(
        &format!("another process listens on {taken}"),
        Duration::from_secs(5),
    );
    assert_eq!(status(&mg).await["pid"], old);
    drop(busy);

    // Mended: the next upgrade goes through.
    mg.write_conf("00-test.toml", &good);
    let load = Load::start(mg.url("/"), 2, "ok");
    let new = upgrade(Ask::Command, old, &conf, &pid_file, &pids).await;
    load.finish(1).await;
    assert_eq!(status(&mg).await["pid"], new);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_executable_is_read_again_from_its_path() {
    let origin = origin().await;
    let (dir, pid_file) = conf_dir(&proxied(&origin));
    let conf = dir.path().to_path_buf();
    // Started through a link, as a package's /usr/bin/moongate would be;
    // the "new version" replaces the link with a script that says so and
    // runs the real binary.
    let bin = tempfile::tempdir().expect("bin dir");
    let link = bin.path().join("moongate");
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_moongate"), &link).expect("link");
    let mg = tokio::task::block_in_place(|| Moongate::start_program(&link, dir, conf.clone()));
    let pids = Pids::default();
    let old = mg.pid();
    pids.saw(old);

    let script = bin.path().join("moongate-next");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\necho \"new binary started with: $*\" >&2\nexec {} \"$@\"\n",
            env!("CARGO_BIN_EXE_moongate")
        ),
    )
    .expect("script");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let swap = bin.path().join("moongate.tmp");
    std::os::unix::fs::symlink(&script, &swap).expect("new link");
    std::fs::rename(&swap, &link).expect("replace the link");

    let new = upgrade(Ask::Signal, old, &conf, &pid_file, &pids).await;
    let line = mg.wait_log("new binary started with:", Duration::from_secs(5));
    assert!(
        line.contains(&format!("run -c {}", conf.display())),
        "the same arguments: {line}"
    );
    assert_eq!(status(&mg).await["pid"], new);
}

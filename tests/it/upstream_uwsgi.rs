//! `protocol = "uwsgi"` (issue 14, SPEC §5): moongate in front of a real
//! uWSGI (Debian's `uwsgi` with the python3 plugin, installed by
//! ./test.sh) speaking its binary protocol, as nginx's `uwsgi_pass`. The
//! WSGI app, written here, answers with the CGI variables and body it got
//! as JSON, so each test checks what the app really saw.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;

use crate::support::{self, Moongate, client, gone, raw_exchange, raw_status};

/// The WSGI app: `/big?N` streams N bytes (no Content-Length, 64 KiB a
/// piece); anything else answers the string CGI variables, the body and
/// its pid as JSON.
const APP: &str = r#"
import json, os

def application(environ, start_response):
    if environ.get("PATH_INFO") == "/big":
        n = int(environ.get("QUERY_STRING") or 0)
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        piece = b"u" * 65536
        return (piece for _ in range(n // 65536))
    length = int(environ.get("CONTENT_LENGTH") or 0)
    body = environ["wsgi.input"].read(length) if length > 0 else b""
    out = {k: v for k, v in environ.items() if isinstance(v, str)}
    out["body"] = body.decode("latin-1")
    out["pid"] = os.getpid()
    data = json.dumps(out).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("X-App", "wsgi")])
    return [data]
"#;

/// A temp dir holding the app.
fn app_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("app dir");
    std::fs::write(dir.path().join("app.py"), APP).expect("write app.py");
    dir
}

/// The argv that runs the app under uWSGI on `socket` (a single process:
/// its pid is the one that serves).
fn uwsgi_argv(socket: &str) -> Vec<String> {
    [
        "uwsgi",
        "--plugin",
        "python3",
        "--socket",
        socket,
        "--wsgi-file",
        "app.py",
        "--need-app",
        "--disable-logging",
        "--buffer-size",
        "32768",
    ]
    .map(String::from)
    .to_vec()
}

/// A real uWSGI on a free loopback port; killed by its PID on drop.
pub(crate) struct Uwsgi {
    child: Option<Child>,
    pub(crate) addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Uwsgi {
    /// Starts the app; waits until the socket accepts.
    pub(crate) fn start() -> Uwsgi {
        let installed = Command::new("uwsgi")
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        assert!(
            installed,
            "uwsgi is not installed: run ./test.sh (it installs Debian's uwsgi-core and uwsgi-plugin-python3)"
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let dir = app_dir();
        let argv = uwsgi_argv(&addr.to_string());
        let child = Command::new(&argv[0])
            .args(&argv[1..])
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn uwsgi");
        let deadline = Instant::now() + Duration::from_secs(15);
        while std::net::TcpStream::connect(addr).is_err() {
            assert!(Instant::now() < deadline, "uwsgi did not listen on {addr}");
            std::thread::sleep(Duration::from_millis(50));
        }
        Uwsgi {
            child: Some(child),
            addr,
            _dir: dir,
        }
    }

    /// Kills it (SIGKILL to its PID) and waits for it to exit.
    pub(crate) fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Uwsgi {
    fn drop(&mut self) {
        self.kill();
    }
}

/// moongate with `[upstream.py]` speaking uwsgi to `addr` (`extra` lines in
/// it), routed from `/`, and `server` lines in [server].
fn gateway(addr: SocketAddr, extra: &str, server: &str) -> Moongate {
    Moongate::start(&format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\nworkers = 2\naccess_log = \"off\"\n{server}\n\
         [upstream.py]\nprotocol = \"uwsgi\"\nservers = [{{ addr = \"{addr}\" }}]\n{extra}\n\
         [[route]]\npath = \"/\"\nupstream = \"py\"\n"
    ))
}

/// What the app saw, from a 200 JSON answer.
async fn seen(resp: reqwest::Response) -> Value {
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers().get("x-app").map(|v| v.as_bytes()),
        Some(&b"wsgi"[..])
    );
    let text = resp.text().await.expect("body");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_get_with_a_query_reaches_the_app_as_cgi_variables() {
    let app = Uwsgi::start();
    let mg = gateway(app.addr, "", "");
    let resp = client()
        .get(mg.url("/items%20all/7?page=2&sort=name"))
        .header("x-request-id", "r-1")
        .header("x-forwarded-for", "203.0.113.9")
        .header("cookie", "a=1")
        .send()
        .await
        .expect("GET");
    let env = seen(resp).await;
    let port = mg.http[0].port().to_string();
    for (name, want) in [
        ("REQUEST_METHOD", "GET"),
        ("PATH_INFO", "/items all/7"),
        ("QUERY_STRING", "page=2&sort=name"),
        ("REQUEST_URI", "/items%20all/7?page=2&sort=name"),
        ("SERVER_PROTOCOL", "HTTP/1.1"),
        ("REQUEST_SCHEME", "http"),
        ("SERVER_NAME", "127.0.0.1"),
        ("SERVER_PORT", port.as_str()),
        ("SERVER_ADDR", "127.0.0.1"),
        ("REMOTE_ADDR", "127.0.0.1"),
        ("HTTP_HOST", &format!("127.0.0.1:{port}")),
        ("HTTP_X_REQUEST_ID", "r-1"),
        ("HTTP_COOKIE", "a=1"),
        // moongate's forwarding rules apply: the client's chain, then the peer.
        ("HTTP_X_FORWARDED_FOR", "203.0.113.9, 127.0.0.1"),
        ("HTTP_X_FORWARDED_PROTO", "http"),
        ("HTTP_X_REAL_IP", "127.0.0.1"),
        ("CONTENT_LENGTH", ""),
        ("wsgi.url_scheme", "http"),
    ] {
        assert_eq!(env[name].as_str(), Some(want), "{name} in {env:#}");
    }
    assert!(
        env["REMOTE_PORT"]
            .as_str()
            .is_some_and(|p| p.parse::<u16>().is_ok()),
        "{env:#}"
    );
    assert!(env.get("HTTPS").is_none(), "no TLS, no HTTPS: {env:#}");
    // Hop-by-hop fields never reach the app.
    let raw = raw_exchange(
        mg.http[0],
        b"GET /hop HTTP/1.1\r\nHost: x\r\nConnection: close, X-Secret\r\nX-Secret: s\r\nTE: trailers\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(raw_status(&raw), 200, "{raw}");
    let body = &raw[raw.find("\r\n\r\n").expect("head end")..];
    assert!(
        !body.contains("HTTP_X_SECRET")
            && !body.contains("HTTP_TE")
            && !body.contains("HTTP_CONNECTION"),
        "{raw}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_form_json_and_chunked_bodies_reach_the_app_with_their_length() {
    let app = Uwsgi::start();
    let mg = gateway(app.addr, "", "");
    let form = client()
        .post(mg.url("/form"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("name=moon&kind=gate")
        .send()
        .await
        .expect("POST form");
    let env = seen(form).await;
    assert_eq!(env["REQUEST_METHOD"], "POST");
    assert_eq!(env["CONTENT_TYPE"], "application/x-www-form-urlencoded");
    assert_eq!(env["CONTENT_LENGTH"], "19");
    assert_eq!(env["body"], "name=moon&kind=gate");
    assert!(env.get("HTTP_CONTENT_TYPE").is_none(), "{env:#}");

    let json = serde_json::json!({"todo": "write tests", "done": false, "pad": "é".repeat(3000)});
    let text = json.to_string();
    let resp = client()
        .put(mg.url("/todo/1"))
        .header("content-type", "application/json")
        .body(text.clone())
        .send()
        .await
        .expect("PUT json");
    let env = seen(resp).await;
    assert_eq!(env["REQUEST_METHOD"], "PUT");
    assert_eq!(env["CONTENT_TYPE"], "application/json");
    assert_eq!(env["CONTENT_LENGTH"], text.len().to_string());
    let got: Vec<u8> = env["body"]
        .as_str()
        .expect("body")
        .chars()
        .map(|c| c as u8)
        .collect();
    assert_eq!(got, text.as_bytes());

    // Chunked: read whole first (uwsgi needs CONTENT_LENGTH), as nginx does.
    let raw = raw_exchange(
        mg.http[0],
        b"POST /chunked HTTP/1.1\r\nHost: x\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n\
          5\r\nhello\r\n7\r\n, world\r\n0\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(raw_status(&raw), 200, "{raw}");
    let json_start = raw.find('{').expect("JSON body");
    let env: Value = serde_json::from_str(raw[json_start..].trim_end_matches(|c: char| c != '}'))
        .unwrap_or_else(|e| panic!("{e}: {raw}"));
    assert_eq!(env["CONTENT_LENGTH"], "12");
    assert_eq!(env["body"], "hello, world");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn params_add_and_override_variables() {
    let app = Uwsgi::start();
    let mg = gateway(
        app.addr,
        "params = { SCRIPT_NAME = \"/shop\", SERVER_NAME = \"site-$host\", APP_USER = \"$http_x_user\" }",
        "",
    );
    let resp = client()
        .get(mg.url("/shop/cart"))
        .header("x-user", "bob")
        .send()
        .await
        .expect("GET");
    let env = seen(resp).await;
    assert_eq!(env["SCRIPT_NAME"], "/shop");
    assert_eq!(env["SERVER_NAME"], "site-127.0.0.1");
    assert_eq!(env["APP_USER"], "bob");
    assert_eq!(env["PATH_INFO"], "/shop/cart");
}

/// The peak resident set of process `pid`, in KiB.
fn peak_rss_kib(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_10_mib_response_streams_through_in_bounded_memory() {
    let app = Uwsgi::start();
    let mg = gateway(app.addr, "", "");
    // Warm up (the first request's allocations are not the body's).
    let small = client()
        .get(mg.url("/big?65536"))
        .send()
        .await
        .expect("GET");
    assert_eq!(small.bytes().await.expect("body").len(), 65536);

    let before = peak_rss_kib(mg.pid());
    let size = 10 * 1024 * 1024;
    let mut resp = client()
        .get(mg.url(&format!("/big?{size}")))
        .send()
        .await
        .expect("GET");
    assert_eq!(resp.status(), 200);
    let mut total = 0usize;
    while let Some(piece) = resp.chunk().await.expect("chunk") {
        assert!(piece.iter().all(|&b| b == b'u'));
        total += piece.len();
    }
    assert_eq!(total, size, "the whole body, read to the app's close");
    let grew = peak_rss_kib(mg.pid()).saturating_sub(before);
    assert!(
        grew < 5 * 1024,
        "peak RSS grew by {grew} KiB for a 10 MiB body"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uwsgi_down_is_a_502_and_too_many_variables_are_refused() {
    let mut app = Uwsgi::start();
    let mg = gateway(app.addr, "", "max_header_size = \"256KiB\"\n");
    let ok = client().get(mg.url("/up")).send().await.expect("GET");
    assert_eq!(ok.status(), 200);

    // Headers past what one uwsgi packet can carry: 502 and an error line,
    // the app never asked.
    let big = "h".repeat(40_000);
    let resp = client()
        .get(mg.url("/huge"))
        .header("x-one", &big)
        .header("x-two", &big)
        .send()
        .await
        .expect("GET");
    assert_eq!(resp.status(), 502);
    mg.wait_log("uwsgi request is too big", Duration::from_secs(5));

    app.kill();
    let started = Instant::now();
    let resp = client().get(mg.url("/down")).send().await.expect("GET");
    assert_eq!(resp.status(), 502);
    assert!(started.elapsed() < Duration::from_secs(3), "at once");
}

/// moongate running `[upstream.py]` as a managed pool of two uWSGI
/// workers (`extra` lines in the upstream table); on drop, after moongate,
/// any uWSGI it reported that still runs this test's app is killed by PID.
pub(crate) struct Managed {
    mg: Option<Moongate>,
    dir: tempfile::TempDir,
    seen: std::sync::Mutex<BTreeSet<i32>>,
}

impl Managed {
    fn conf(dir: &std::path::Path, extra: &str) -> String {
        let command = uwsgi_argv("{socket}")
            .iter()
            .map(|a| format!("\"{a}\""))
            .collect::<Vec<_>>()
            .join(", ");
        format!(
            "[server]\nlisten = [\"127.0.0.1:0\"]\nworkers = 2\naccess_log = \"off\"\n\n\
             [admin]\nlisten = \"127.0.0.1:0\"\n\n\
             [upstream.py]\nprotocol = \"uwsgi\"\n{extra}\n\n\
             [upstream.py.workers]\ncommand = [{command}]\ndir = \"{}\"\ncount = 2\n\
             ready = \"/healthz\"\nrestart_backoff = \"50ms..1s\"\nstart_timeout = \"15s\"\nstop_timeout = \"2s\"\n\n\
             [[route]]\npath = \"/\"\nupstream = \"py\"\n",
            dir.display()
        )
    }

    pub(crate) fn start(extra: &str) -> Managed {
        let dir = app_dir();
        let mg = tokio::task::block_in_place(|| Moongate::start(&Managed::conf(dir.path(), extra)));
        Managed {
            mg: Some(mg),
            dir,
            seen: std::sync::Mutex::new(BTreeSet::new()),
        }
    }

    pub(crate) fn mg(&self) -> &Moongate {
        self.mg.as_ref().expect("moongate")
    }

    /// The pids of pool `py` once it is ok with two ready workers, none of
    /// them `not`.
    pub(crate) async fn settled(&self, not: Option<i32>) -> BTreeSet<i32> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let pool = self.mg().status().await["workers"]["py"].clone();
            let workers = pool["workers"].as_array().cloned().unwrap_or_default();
            let pids: BTreeSet<i32> = workers
                .iter()
                .filter_map(|w| w["pid"].as_i64())
                .map(|p| p as i32)
                .collect();
            self.seen
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .extend(&pids);
            let ready = pool["state"] == "ok"
                && workers.len() == 2
                && workers.iter().all(|w| w["state"] == "ready");
            if ready && not.is_none_or(|p| !pids.contains(&p)) {
                return pids;
            }
            assert!(
                Instant::now() < deadline,
                "pool py not settled: {pool:#}\nlog:\n{}",
                self.mg().log_lines().join("\n")
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// What the app saw for `GET path`.
    pub(crate) async fn get(&self, path: &str) -> Value {
        let resp = client().get(self.mg().url(path)).send().await.expect("GET");
        seen(resp).await
    }
}

impl Drop for Managed {
    fn drop(&mut self) {
        drop(self.mg.take());
        for &pid in self.seen.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            let cwd = std::fs::read_link(format!("/proc/{pid}/cwd")).unwrap_or_default();
            if !gone(pid) && cwd == self.dir.path() {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
        }
    }
}

/// Managed pool: `[upstream.py.workers]` runs uWSGI itself on `{socket}`,
/// probes readiness with a uwsgi request (a plain HTTP probe would never
/// pass), and replaces a worker killed with -9 while requests keep being
/// answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_managed_uwsgi_pool_survives_kill_9_of_a_worker() {
    let pool = Managed::start("");
    let first = pool.settled(None).await;
    for _ in 0..4 {
        let pid = pool.get("/hello").await["pid"].as_i64().unwrap_or(-1) as i32;
        assert!(
            first.contains(&pid),
            "answered by {pid}, not one of {first:?}"
        );
    }

    // Clients keep asking while one worker is killed: none fails.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load: Vec<_> = (0..4)
        .map(|_| {
            let (http, url, stop) = (client(), pool.mg().url("/load"), stop.clone());
            tokio::spawn(async move {
                let mut out = Vec::new();
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    let r = match http.get(&url).send().await {
                        Ok(resp) => match resp.status().as_u16() {
                            200 => resp.text().await.map(|_| ()).map_err(|e| e.to_string()),
                            s => Err(format!("status {s}")),
                        },
                        Err(e) => Err(e.to_string()),
                    };
                    out.push(r);
                }
                out
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let victim = *first.iter().next().expect("a worker");
    kill(Pid::from_raw(victim), Signal::SIGKILL).expect("kill -9 a worker");
    let after = pool.settled(Some(victim)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let mut answered = 0;
    for task in load {
        for r in task.await.expect("load task") {
            if let Err(e) = r {
                panic!("a request failed while a worker was replaced: {e}");
            }
            answered += 1;
        }
    }
    assert!(answered >= 20, "only {answered} requests during the kill");
    let new: Vec<i32> = after.difference(&first).copied().collect();
    assert!(
        new.len() == 1 && after.intersection(&first).count() == 1,
        "one replacement expected: {first:?} -> {after:?}"
    );
    // The replacement serves.
    let mut served = false;
    for _ in 0..20 {
        if pool.get("/again").await["pid"].as_i64() == Some(i64::from(new[0])) {
            served = true;
            break;
        }
    }
    assert!(served, "the replacement {} took no request", new[0]);
}

/// A reload keeps the uWSGI workers when nothing changed, and when only
/// `params` did (they are not the workers' business); the new params
/// apply at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_keeps_the_uwsgi_pool_and_applies_new_params() {
    let pool = Managed::start("params = { APP_TAG = \"one\" }");
    let first = pool.settled(None).await;
    assert_eq!(pool.get("/tag").await["APP_TAG"], "one");

    let (code, body) = pool.mg().admin_reload().await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(pool.settled(None).await, first, "unchanged: same workers");

    pool.mg().write_conf(
        "00-test.toml",
        &Managed::conf(pool.dir.path(), "params = { APP_TAG = \"two\" }"),
    );
    let (code, body) = pool.mg().admin_reload().await;
    assert_eq!(code, 200, "{body}");
    for _ in 0..6 {
        let env = pool.get("/tag").await;
        assert_eq!(env["APP_TAG"], "two", "{env:#}");
        let pid = env["pid"].as_i64().unwrap_or(-1) as i32;
        assert!(first.contains(&pid), "served by the kept workers: {pid}");
    }
    assert_eq!(pool.settled(None).await, first, "params only: same workers");
}

/// `moongate check` names the line of a protocol it does not know, of
/// `params` on an HTTP/1 upstream, and of `h2_connections` on a uwsgi one.
#[test]
fn config_errors_name_file_and_line() {
    let cases = [
        (
            "[upstream.py]\nservers = [{ addr = \"127.0.0.1:9\" }]\nprotocol = \"h3\"\n",
            "30-py.toml:3:12: unknown protocol \"h3\"",
        ),
        (
            "[upstream.py]\nprotocol = \"uwsgi\"\nh2_connections = 2\nservers = [{ addr = \"127.0.0.1:9\" }]\n",
            "30-py.toml:3:18: `h2_connections` is for protocol = \"h2\" or \"grpc\"",
        ),
        (
            "[upstream.py]\nservers = [{ addr = \"127.0.0.1:9\" }]\n\nparams = { SCRIPT_NAME = \"/app\" }\n",
            "30-py.toml:4:10: `params` are CGI variables for protocol = \"uwsgi\"",
        ),
    ];
    support::assert_check_errors("30-py.toml", &cases);
}

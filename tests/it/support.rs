//! Test support: the real `moongate` binary started on port 0 from a
//! conf.d written into a temp dir (killed on drop), fake origins built on
//! hyper (TCP or unix socket, port 0), and HTTP clients.

#![allow(dead_code)]

use std::collections::HashMap;
use std::convert::Infallible;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

/// A running `moongate run` process.
pub struct Moongate {
    child: Option<Child>,
    /// The temp dir holding the configuration: the conf.d itself, or (see
    /// [`Moongate::start_at`]) the prefix that holds it.
    pub dir: tempfile::TempDir,
    /// The conf.d directory.
    conf: PathBuf,
    /// Every `http://` listener, in the order logged.
    pub http: Vec<SocketAddr>,
    /// Every `https://` listener.
    pub https: Vec<SocketAddr>,
    /// The admin listener, if configured.
    pub admin: Option<SocketAddr>,
    log: Arc<Mutex<Vec<String>>>,
}

impl Moongate {
    /// Writes `conf` as conf.d/00-test.toml and starts moongate on it.
    pub fn start(conf: &str) -> Moongate {
        Self::start_files(&[("00-test.toml", conf)])
    }

    /// Starts moongate on a conf.d made of these files.
    pub fn start_files(files: &[(&str, &str)]) -> Moongate {
        let dir = tempfile::tempdir().expect("temp dir");
        for (name, text) in files {
            std::fs::write(dir.path().join(name), text).expect("write conf");
        }
        Self::start_in(dir)
    }

    /// Starts moongate on an already written conf.d.
    pub fn start_in(dir: tempfile::TempDir) -> Moongate {
        let conf = dir.path().to_path_buf();
        Self::start_at(dir, conf)
    }

    /// Starts moongate on the conf.d `conf`, kept alive by `dir` (e.g. a
    /// prefix holding `conf` and the files its relative paths name). It
    /// runs in `conf` itself, not the repository, so that a path resolved
    /// against the working directory instead of the prefix shows.
    pub fn start_at(dir: tempfile::TempDir, conf: PathBuf) -> Moongate {
        Self::start_at_env(dir, conf, &[])
    }

    /// Writes `conf` as conf.d/00-test.toml and starts moongate on it with
    /// `env` added to its environment.
    pub fn start_env(conf: &str, env: &[(&str, &std::ffi::OsStr)]) -> Moongate {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("00-test.toml"), conf).expect("write conf");
        let conf = dir.path().to_path_buf();
        Self::start_at_env(dir, conf, env)
    }

    /// [`Moongate::start_at`] with `env` added to moongate's environment.
    pub fn start_at_env(
        dir: tempfile::TempDir,
        conf: PathBuf,
        env: &[(&str, &std::ffi::OsStr)],
    ) -> Moongate {
        Self::start_program_env(Path::new(env!("CARGO_BIN_EXE_moongate")), dir, conf, env)
    }

    /// Like [`Moongate::start_at`], running `program` (a link to the
    /// binary, say) instead of the binary itself.
    pub fn start_program(program: &Path, dir: tempfile::TempDir, conf: PathBuf) -> Moongate {
        Self::start_program_env(program, dir, conf, &[])
    }

    /// [`Moongate::start_program`] with `env` added to moongate's
    /// environment.
    pub fn start_program_env(
        program: &Path,
        dir: tempfile::TempDir,
        conf: PathBuf,
        env: &[(&str, &std::ffi::OsStr)],
    ) -> Moongate {
        let mut child = Command::new(program)
            .arg("run")
            .arg("-c")
            .arg(&conf)
            .current_dir(&conf)
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn moongate");
        let log = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().expect("stderr");
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if std::env::var_os("MOONGATE_TEST_LOG").is_some() {
                    eprintln!("[moongate] {line}");
                }
                sink.lock().unwrap().push(line);
            }
        });
        let mut mg = Moongate {
            child: Some(child),
            dir,
            conf,
            http: Vec::new(),
            https: Vec::new(),
            admin: None,
            log,
        };
        mg.wait_log("moongate ready", Duration::from_secs(20));
        for line in mg.log_lines() {
            if let Some(rest) = line.split("admin listening on http://").nth(1) {
                mg.admin = rest.trim().parse().ok();
            } else if let Some(rest) = line.split("listening on http://").nth(1) {
                mg.http.push(rest.trim().parse().expect("http addr"));
            } else if let Some(rest) = line.split("listening on https://").nth(1) {
                mg.https.push(rest.trim().parse().expect("https addr"));
            }
        }
        mg
    }

    /// The first plain listener as a base URL.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.http[0], path)
    }

    /// The admin base URL.
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{}", self.admin.expect("admin listener"), path)
    }

    /// The admin `GET /status` document (asserts a 200 with JSON).
    pub async fn status(&self) -> serde_json::Value {
        let resp = client()
            .get(self.admin_url("/status"))
            .send()
            .await
            .expect("GET /status");
        assert_eq!(resp.status(), 200, "GET /status");
        let text = resp.text().await.expect("status body");
        serde_json::from_str(&text).expect("status JSON")
    }

    /// `POST /reload` on the admin listener: status and JSON body.
    pub async fn admin_reload(&self) -> (u16, serde_json::Value) {
        let resp = client()
            .post(self.admin_url("/reload"))
            .send()
            .await
            .expect("POST /reload");
        let code = resp.status().as_u16();
        let text = resp.text().await.expect("reload body");
        (code, serde_json::from_str(&text).expect("reload JSON"))
    }

    /// The conf.d path.
    pub fn conf_dir(&self) -> &Path {
        &self.conf
    }

    /// Lines logged so far.
    pub fn log_lines(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// Waits until a log line contains `needle`; panics with the log otherwise.
    pub fn wait_log(&self, needle: &str, timeout: Duration) -> String {
        self.wait_log_after(0, needle, timeout)
    }

    /// Like `wait_log`, considering only lines after the first `skip`.
    pub fn wait_log_after(&self, skip: usize, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(l) = self
                .log_lines()
                .iter()
                .skip(skip)
                .find(|l| l.contains(needle))
            {
                return l.clone();
            }
            if Instant::now() > deadline {
                panic!(
                    "no log line containing {needle:?} within {timeout:?}; log:\n{}",
                    self.log_lines().join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The process id.
    pub fn pid(&self) -> i32 {
        self.child.as_ref().map(|c| c.id() as i32).expect("running")
    }

    /// Sends a signal to the process.
    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), sig).expect("signal");
    }

    /// Waits for the process to exit; returns its exit code.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        let child = self.child.as_mut()?;
        loop {
            if let Ok(Some(st)) = child.try_wait() {
                self.child = None;
                return st.code();
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Replaces a conf.d file (atomically, as editors and deploy tools do).
    pub fn write_conf(&self, name: &str, text: &str) {
        let tmp = self.conf.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, text).expect("write tmp conf");
        std::fs::rename(&tmp, self.conf.join(name)).expect("rename conf");
    }
}

impl Drop for Moongate {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// What an origin's handler returns.
pub type Reply = Response<Full<Bytes>>;

/// A fake origin on loopback: counts requests, answers with `handler`.
pub struct Origin {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Requests served.
    pub hits: Arc<AtomicUsize>,
    stop: tokio::sync::watch::Sender<bool>,
}

impl Origin {
    /// Starts an origin on 127.0.0.1:0 on the current tokio runtime.
    pub async fn start<F, Fut>(handler: F) -> Origin
    where
        F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
        Fut: std::future::Future<Output = Reply> + Send + 'static,
    {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind origin");
        let addr = listener.local_addr().expect("origin addr");
        let hits = Arc::new(AtomicUsize::new(0));
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        let counter = hits.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    r = listener.accept() => {
                        let Ok((stream, _)) = r else { continue };
                        let _ = stream.set_nodelay(true);
                        serve_origin_conn(TokioIo::new(stream), handler.clone(), counter.clone());
                    }
                    _ = stopped.changed() => break,
                }
            }
        });
        Origin { addr, hits, stop }
    }

    /// An origin that answers every request with 200 and body `name`,
    /// plus an `x-origin: name` header.
    pub async fn named(name: &'static str) -> Origin {
        Self::start(move |_req| async move { text(200, name) }).await
    }

    /// Requests served so far.
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    /// Stops accepting (open connections stay).
    pub fn stop(&self) {
        let _ = self.stop.send(true);
    }
}

fn serve_origin_conn<I, F, Fut>(io: I, handler: F, hits: Arc<AtomicUsize>)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Reply> + Send + 'static,
{
    tokio::spawn(async move {
        let service = service_fn(move |req| {
            hits.fetch_add(1, Ordering::SeqCst);
            let fut = handler(req);
            async move { Ok::<_, Infallible>(fut.await) }
        });
        let _ = hyper::server::conn::http1::Builder::new()
            .serve_connection(io, service)
            .with_upgrades()
            .await;
    });
}

/// An origin on a unix socket at `path`.
pub async fn unix_origin<F, Fut>(path: &Path, handler: F) -> Arc<AtomicUsize>
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Reply> + Send + 'static,
{
    let listener = tokio::net::UnixListener::bind(path).expect("bind unix origin");
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            serve_origin_conn(TokioIo::new(stream), handler.clone(), counter.clone());
        }
    });
    hits
}

/// A text reply with `x-origin` set to the body.
pub fn text(status: u16, body: &str) -> Reply {
    Response::builder()
        .status(status)
        .header("x-origin", body)
        .header("content-type", "text/plain")
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("reply")
}

/// Replies with the request's method, URI and headers as JSON.
pub async fn echo(req: Request<Incoming>) -> Reply {
    let mut headers: HashMap<String, Vec<String>> = HashMap::new();
    for (k, v) in req.headers() {
        headers
            .entry(k.as_str().to_string())
            .or_default()
            .push(v.to_str().unwrap_or("").to_string());
    }
    let method = req.method().to_string();
    let uri = req.uri().to_string();
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let json = serde_json::json!({
        "method": method,
        "uri": uri,
        "headers": headers,
        "body_len": body.len(),
    });
    Response::builder()
        .status(200)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(json.to_string())))
        .expect("reply")
}

/// GETs `url`: the status and the answering origin's `x-origin` header
/// ("" when absent).
pub async fn get_origin(c: &reqwest::Client, url: &str) -> (u16, String) {
    let resp = c.get(url).send().await.expect("request");
    let status = resp.status().as_u16();
    let origin = resp
        .headers()
        .get("x-origin")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    (status, origin)
}

/// A reqwest client for plain HTTP/1.1 (no proxy from the environment).
pub fn client() -> reqwest::Client {
    install_crypto();
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(15))
        .build()
        .expect("client")
}

/// Installs ring as rustls' provider for test clients (once).
pub fn install_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A fresh temp path for a unix socket.
pub fn sock_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(name)
}

/// Sends raw bytes on a new connection and reads until the server closes
/// it or `timeout` passes; returns everything read.
pub async fn raw_exchange(addr: SocketAddr, bytes: &[u8], timeout: Duration) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(bytes).await.expect("write");
    let mut out = Vec::new();
    let _ = tokio::time::timeout(timeout, s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// The status code of the first response in a raw HTTP/1.1 answer.
pub fn raw_status(answer: &str) -> u16 {
    answer
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {answer:?}"))
}

/// The `Content-Length` of a raw HTTP/1.1 response head, if it has one.
pub fn raw_content_length(head: &str) -> Option<usize> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case("content-length")
            .then(|| v.trim().parse().ok())?
    })
}

/// What `moongate check -c DIR` printed, and its exit code.
pub struct CheckRun {
    /// The exit code (`None` if killed by a signal).
    pub code: Option<i32>,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

/// Runs `moongate check -c dir` to completion. It runs in `dir` itself, not
/// the repository, so that a path resolved against the working directory
/// instead of the prefix shows.
pub fn moongate_check(dir: &Path) -> CheckRun {
    moongate_check_from(dir, dir)
}

/// Runs `moongate check -c conf` in the working directory `cwd` (`conf`
/// may be relative to it).
pub fn moongate_check_from(cwd: &Path, conf: &Path) -> CheckRun {
    let out = Command::new(env!("CARGO_BIN_EXE_moongate"))
        .arg("check")
        .arg("-c")
        .arg(conf)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .output()
        .expect("run moongate check");
    CheckRun {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// An origin that counts the connections it accepts and answers 200 "ok"
/// with keep-alive.
pub async fn counting_origin() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let service = service_fn(|_req| async { Ok::<_, Infallible>(text(200, "ok")) });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, accepted)
}

/// Polls until connecting to `addr` is refused; panics after `timeout`.
pub async fn wait_refused(addr: SocketAddr, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        match tokio::net::TcpStream::connect(addr).await {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => return,
            other => {
                assert!(
                    Instant::now() < deadline,
                    "{addr} still accepts connections after {timeout:?}: {other:?}"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

/// A real `redis-server` on a free loopback port, in its own temp dir, with
/// no persistence; killed (by its own PID) on drop.
pub struct Redis {
    child: Option<Child>,
    /// The port it listens on (kept across [`Redis::restart`]).
    pub port: u16,
    dir: tempfile::TempDir,
    /// Arguments beyond the port, bind address and persistence.
    extra: Vec<String>,
    /// Speaking only TLS: the CA file clients check it against.
    tls_ca: Option<PathBuf>,
}

/// A certificate authority made for a test, and a server certificate it
/// signed for 127.0.0.1 and localhost, written as PEM files in `dir`.
pub struct TestCa {
    /// Holds the files.
    pub dir: tempfile::TempDir,
    /// The CA's certificate (what clients trust).
    pub ca: PathBuf,
    /// The server's certificate.
    pub cert: PathBuf,
    /// The server's private key.
    pub key: PathBuf,
}

impl TestCa {
    /// Generates the CA and the server certificate (rcgen).
    pub fn new() -> TestCa {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, SanType};
        let dir = tempfile::tempdir().expect("temp dir");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "moongate test CA");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_key = KeyPair::generate().expect("CA key");
        let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).expect("CA certificate");
        let mut params = CertificateParams::new(vec!["localhost".to_string()]).expect("params");
        params
            .subject_alt_names
            .push(SanType::IpAddress(std::net::Ipv4Addr::LOCALHOST.into()));
        let key = KeyPair::generate().expect("server key");
        let cert = params.signed_by(&key, &ca).expect("server certificate");
        let write = |name: &str, text: String| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).expect("write PEM");
            path
        };
        TestCa {
            ca: write("ca.pem", ca.pem()),
            cert: write("server.pem", cert.pem()),
            key: write("server.key", key.serialize_pem()),
            dir,
        }
    }
}

/// Panics (naming ./test.sh) when `program` is not installed.
pub fn require_installed(program: &str, package: &str) {
    let installed = Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        installed,
        "{program} is not installed: run ./test.sh (it installs Debian's {package})"
    );
}

impl Redis {
    /// Starts redis-server on a free port; panics (naming ./test.sh) when
    /// it is not installed.
    pub fn start() -> Redis {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        Redis::start_on(port, Vec::new())
    }

    /// Starts redis-server speaking only TLS (`--port 0`, `--tls-port`)
    /// with `ca`'s server certificate, asking clients for none; panics
    /// (naming ./test.sh) when redis-server or redis-cli is missing.
    pub fn start_tls(ca: &TestCa) -> Redis {
        require_installed("redis-cli", "redis-tools");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let mut extra = Vec::new();
        for (flag, path) in [
            ("--tls-cert-file", &ca.cert),
            ("--tls-key-file", &ca.key),
            ("--tls-ca-cert-file", &ca.ca),
        ] {
            extra.push(flag.to_string());
            extra.push(path.display().to_string());
        }
        extra.extend(["--tls-auth-clients".to_string(), "no".to_string()]);
        Redis::start_with(port, extra, Some(ca.ca.clone()))
    }

    /// Starts redis-server on `port` with `extra` arguments (a path in
    /// them may use `{dir}`, the server's temp dir).
    fn start_on(port: u16, extra: Vec<String>) -> Redis {
        Redis::start_with(port, extra, None)
    }

    fn start_with(port: u16, extra: Vec<String>, tls_ca: Option<PathBuf>) -> Redis {
        require_installed("redis-server", "redis-server");
        let dir = tempfile::tempdir().expect("temp dir");
        let dir_text = dir.path().display().to_string();
        let mut redis = Redis {
            child: None,
            port,
            extra: extra
                .into_iter()
                .map(|a| a.replace("{dir}", &dir_text))
                .collect(),
            dir,
            tls_ca,
        };
        redis.restart();
        redis
    }

    /// `redis://127.0.0.1:PORT`, or `rediss://` for a TLS server.
    pub fn url(&self) -> String {
        let scheme = if self.tls_ca.is_some() {
            "rediss"
        } else {
            "redis"
        };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// Kills the server (SIGKILL to its PID) and waits for it to exit.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the server (again) on the same port, empty; returns once it
    /// answers PING.
    pub fn restart(&mut self) {
        self.kill();
        let port = self.port.to_string();
        let ports: &[&str] = match self.tls_ca {
            Some(_) => &["--port", "0", "--tls-port", &port],
            None => &["--port", &port],
        };
        let child = Command::new("redis-server")
            .args(ports)
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.command(&["PING"]).as_deref() != Some("+PONG") {
            assert!(
                Instant::now() < deadline,
                "redis-server on port {} did not answer PING within 10 s",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops (`false`: SIGSTOP) or resumes (`true`: SIGCONT) the server's
    /// process: a Redis that accepts but does not answer.
    pub fn set_running(&self, running: bool) {
        use nix::sys::signal::{Signal, kill};
        let pid = self.child.as_ref().expect("running redis").id() as i32;
        let sig = if running {
            Signal::SIGCONT
        } else {
            Signal::SIGSTOP
        };
        kill(nix::unistd::Pid::from_raw(pid), sig).expect("signal redis-server");
    }

    /// Sends one command; returns the first line of the reply, if any.
    pub fn command(&self, args: &[&str]) -> Option<String> {
        self.reply(args)
            .and_then(|text| text.lines().next().map(str::to_owned))
    }

    /// Sends one command; returns the raw reply (up to 4 KiB), if any.
    /// A TLS server is asked through `redis-cli --tls` (which checks its
    /// certificate against the CA), and the reply given in RESP's first
    /// line form for the replies tests read: `+PONG`, `:1`.
    pub fn reply(&self, args: &[&str]) -> Option<String> {
        use std::io::{Read, Write};
        if let Some(ca) = &self.tls_ca {
            let out = Command::new("redis-cli")
                .arg("--tls")
                .arg("--cacert")
                .arg(ca)
                .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
                .args(args)
                .stdin(Stdio::null())
                .stderr(Stdio::null())
                .output()
                .ok()?;
            let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
            return match text.as_str() {
                "" => None,
                "PONG" | "OK" => Some(format!("+{text}")),
                t if t.parse::<i64>().is_ok() => Some(format!(":{t}")),
                t => Some(t.to_owned()),
            };
        }
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        let mut req = format!("*{}\r\n", args.len());
        for a in args {
            req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        s.write_all(req.as_bytes()).ok()?;
        let mut buf = [0u8; 4096];
        let n = s.read(&mut buf).ok()?;
        Some(String::from_utf8_lossy(&buf[..n]).into_owned())
    }

    /// An integer reply (`:N`), if the command answers one.
    pub fn integer(&self, args: &[&str]) -> Option<i64> {
        self.command(args)?.strip_prefix(':')?.parse().ok()
    }
}

/// A real 3-master Redis Cluster on loopback (no replicas): three
/// `redis-server --cluster-enabled yes` on free ports whose cluster bus
/// ports (+10000) are free too, joined by `redis-cli --cluster create`;
/// ready once every node says `cluster_state:ok`. Each node is killed by
/// its PID on drop.
pub struct RedisCluster {
    /// The masters, in the order given to `--cluster create` (so they own
    /// slots 0-5460, 5461-10922 and 10923-16383).
    pub nodes: Vec<Redis>,
}

impl RedisCluster {
    /// Starts and joins the cluster; panics (naming ./test.sh) when
    /// redis-server or redis-cli is missing.
    pub fn start() -> RedisCluster {
        require_installed("redis-server", "redis-server");
        require_installed("redis-cli", "redis-tools");
        let nodes: Vec<Redis> = cluster_ports(3)
            .into_iter()
            .map(|port| {
                let extra = [
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "{dir}/nodes.conf",
                    "--cluster-node-timeout",
                    "5000",
                ];
                Redis::start_on(port, extra.iter().map(|a| a.to_string()).collect())
            })
            .collect();
        let addrs: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let out = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .expect("run redis-cli --cluster create");
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let ok = nodes.iter().all(|n| {
                n.reply(&["CLUSTER", "INFO"])
                    .is_some_and(|info| info.contains("cluster_state:ok"))
            });
            if ok {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the cluster on {addrs:?} did not reach cluster_state:ok within 20 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        RedisCluster { nodes }
    }

    /// `redis://127.0.0.1:PORT` of each node.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(Redis::url).collect()
    }

    /// How many keys each node holds.
    pub fn dbsizes(&self) -> Vec<i64> {
        self.nodes
            .iter()
            .map(|n| n.integer(&["DBSIZE"]).expect("DBSIZE"))
            .collect()
    }

    /// The node that owns `key`'s slot (by `CLUSTER KEYSLOT`).
    pub fn owner(&self, key: &str) -> &Redis {
        let slot = self.nodes[0]
            .integer(&["CLUSTER", "KEYSLOT", key])
            .expect("CLUSTER KEYSLOT");
        // Slots as `--cluster create` splits them among three masters.
        &self.nodes[match slot {
            0..=5460 => 0,
            5461..=10922 => 1,
            _ => 2,
        }]
    }
}

/// `n` loopback ports P that are free with their cluster bus port P+10000
/// too. P is below 22768 so neither is in Linux's ephemeral range (32768
/// and up), where clients' ports could take them meanwhile.
fn cluster_ports(n: usize) -> Vec<u16> {
    let bindable = |port: u16| std::net::TcpListener::bind(("127.0.0.1", port)).is_ok();
    // Start somewhere different per process and per call.
    static CALLS: AtomicUsize = AtomicUsize::new(0);
    let seed = std::process::id() as usize * 7919 + CALLS.fetch_add(1, Ordering::Relaxed) * 101;
    let (low, span) = (10_000usize, 12_000usize);
    let mut ports = Vec::new();
    for i in 0..span {
        let port = u16::try_from(low + (seed + i * 37) % span).expect("port");
        if !ports.contains(&port) && bindable(port) && bindable(port + 10_000) {
            ports.push(port);
            if ports.len() == n {
                return ports;
            }
        }
    }
    panic!(
        "no {n} free loopback ports with free bus ports in {low}..{}",
        low + span
    );
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Fires GETs as fast as `clients` concurrent clients can for `run_for`,
/// each going round `urls` in turn (with `x-key: key` when given), and
/// counts the 200s and 429s; any other status fails the test. Returns
/// (allowed, limited, seconds it took).
pub async fn fire(
    urls: &[String],
    key: Option<&'static str>,
    clients: usize,
    run_for: Duration,
) -> (u32, u32, f64) {
    let http = client();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let (http, urls) = (http.clone(), urls.to_vec());
        tasks.push(tokio::spawn(async move {
            let (mut ok, mut limited, mut i) = (0u32, 0u32, c);
            while started.elapsed() < run_for {
                let mut req = http.get(&urls[i % urls.len()]);
                if let Some(k) = key {
                    req = req.header("x-key", k);
                }
                i += 1;
                match req.send().await.expect("GET").status().as_u16() {
                    200 => ok += 1,
                    429 => limited += 1,
                    other => panic!("unexpected status {other}"),
                }
            }
            (ok, limited)
        }));
    }
    let (mut ok, mut limited) = (0u32, 0u32);
    for t in tasks {
        let (o, l) = t.await.expect("client task");
        ok += o;
        limited += l;
    }
    (ok, limited, started.elapsed().as_secs_f64())
}

/// The start of most test configs: a plain listener on a free port,
/// `workers` threads, no access log, and `[upstream.app]` with `origin` as
/// its one server.
pub fn app_conf(origin: SocketAddr, workers: usize) -> String {
    format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\nworkers = {workers}\naccess_log = \"off\"\n\n\
         [upstream.app]\nservers = [{{ addr = \"{origin}\" }}]\n"
    )
}

/// Whether a process is gone: no /proc entry, or a zombie ('Z').
pub fn gone(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

/// Polls until every pid is gone (or a zombie); panics naming the living.
pub async fn wait_gone(pids: &std::collections::BTreeSet<i32>, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let alive: Vec<i32> = pids.iter().copied().filter(|&p| !gone(p)).collect();
        if alive.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "worker processes {alive:?} still running {timeout:?} later"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A response's `X-Cache-Status` ("" when absent).
pub fn cache_status(resp: &reqwest::Response) -> String {
    resp.headers()
        .get("x-cache-status")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned()
}

/// An origin speaking raw HTTP/1.1, so that tests choose the framing and
/// when each byte is sent: for every connection it reads one request
/// head and hands its path and the socket to the test's `reply`.
pub struct RawOrigin {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Requests per path.
    hits: Arc<Mutex<HashMap<String, usize>>>,
}

impl RawOrigin {
    /// Starts it on 127.0.0.1:0; `reply` gets each request's path and
    /// the socket, to write the answer.
    pub async fn start<F, Fut>(reply: F) -> RawOrigin
    where
        F: Fn(String, tokio::net::TcpStream) -> Fut + Clone + Send + Sync + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind origin");
        let addr = listener.local_addr().expect("origin addr");
        let hits: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
        let counts = hits.clone();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let (reply, counts) = (reply.clone(), counts.clone());
                tokio::spawn(async move {
                    let Some(path) = read_head(&mut stream).await else {
                        return;
                    };
                    *counts
                        .lock()
                        .expect("counts")
                        .entry(path.clone())
                        .or_default() += 1;
                    reply(path, stream).await;
                });
            }
        });
        RawOrigin { addr, hits }
    }

    /// Requests for `path` so far.
    pub fn hits(&self, path: &str) -> usize {
        self.hits
            .lock()
            .expect("counts")
            .get(path)
            .copied()
            .unwrap_or(0)
    }
}

/// Reads a request head; its path.
async fn read_head(stream: &mut tokio::net::TcpStream) -> Option<String> {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tokio::io::AsyncReadExt::read(stream, &mut buf).await.ok()?;
        if n == 0 {
            return None;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&head).into_owned();
    text.split_whitespace().nth(1).map(str::to_owned)
}

/// One call by tests/grpc/echo_client.py (grpcio) to `target`: its JSON
/// line (code, details, responses, metadata).
pub async fn grpc_call(target: &str, method: &str, args: &[&str]) -> serde_json::Value {
    let out = tokio::process::Command::new("python3")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/grpc/echo_client.py"))
        .arg(target)
        .arg(method)
        .args(args)
        .kill_on_drop(true)
        .output()
        .await
        .expect("run tests/grpc/echo_client.py");
    assert!(
        out.status.success(),
        "echo_client.py {method} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "echo_client.py {method}: {e}: {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// A TLS peer's side for tests: a self-signed certificate for `localhost`
/// served by rustls with the given ALPN protocols, its PEM (`ca`, for a
/// client to trust) and an unrelated certificate's (`other_ca`), in `dir`.
pub struct TlsPeer {
    /// Holds the files for as long as the test runs.
    pub dir: tempfile::TempDir,
    /// The peer's certificate (PEM): trusting it trusts the peer.
    pub ca: PathBuf,
    /// A certificate the peer's does not come from (PEM).
    pub other_ca: PathBuf,
    /// The server configuration to accept with.
    pub server: Arc<rustls::ServerConfig>,
}

/// See [`TlsPeer`].
pub fn tls_peer(alpn: &[&[u8]]) -> TlsPeer {
    install_crypto();
    let dir = tempfile::tempdir().expect("dir");
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("cert");
    let ca = dir.path().join("peer.pem");
    std::fs::write(&ca, ck.cert.pem()).expect("write cert");
    let stranger = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("cert");
    let other_ca = dir.path().join("other.pem");
    std::fs::write(&other_ca, stranger.cert.pem()).expect("write cert");
    let cert = rustls::pki_types::CertificateDer::from(ck.cert.der().to_vec());
    let key =
        rustls::pki_types::PrivateKeyDer::try_from(ck.signing_key.serialize_der()).expect("key");
    let mut server = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .expect("server config");
    server.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    TlsPeer {
        dir,
        ca,
        other_ca,
        server: Arc::new(server),
    }
}

/// Runs `moongate check` on a conf.d holding `file` with each case's text,
/// and checks it fails with the case's message at the case's place
/// (`"FILE:LINE:COL: message start"`).
pub fn assert_check_errors(file: &str, cases: &[(&str, &str)]) {
    for (text, want) in cases {
        let dir = tempfile::tempdir().expect("conf dir");
        std::fs::write(dir.path().join(file), text).expect("write");
        let run = moongate_check(dir.path());
        assert_eq!(run.code, Some(1), "{}{}", run.stdout, run.stderr);
        let place = format!("{}/{want}", dir.path().display());
        assert!(
            run.stderr.starts_with(&place),
            "wanted {place}, got {}",
            run.stderr
        );
    }
}

/// Runs `moongate check` on a conf.d of one file, `10-x.toml` holding
/// `text`, for tests of config errors.
pub fn check_one(text: &str) -> CheckRun {
    let dir = tempfile::tempdir().expect("dir");
    std::fs::write(dir.path().join("10-x.toml"), text).expect("conf");
    moongate_check(dir.path())
}

/// A reqwest client that does not follow redirects.
pub fn client_no_redirects() -> reqwest::Client {
    install_crypto();
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(15))
        .build()
        .expect("client")
}

//! A headless Chromium driven over WebDriver: Debian's `chromedriver`
//! started on a free loopback port (it prints the port it took), spoken
//! to with plain JSON over HTTP. Chromedriver runs in a process group of
//! its own, so that dropping the [`Browser`] ends the session and then
//! kills that group (chromedriver and the Chromium it started), by the
//! id of the child this test spawned, never by name.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::{Value, json};

/// Debian's paths (packages `chromium` and `chromium-driver`).
const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// One browser session.
pub struct Browser {
    /// Held for its drop, after the session's end.
    _driver: Driver,
    port: u16,
    session: String,
    http: reqwest::Client,
    /// Chromium's profile and chromedriver's log, removed on drop.
    dir: tempfile::TempDir,
}

impl Browser {
    /// Starts chromedriver and a headless Chromium session. Panics (never
    /// skips) when either is not installed.
    pub async fn start() -> Browser {
        for (path, package) in [(CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")] {
            assert!(
                Path::new(path).exists(),
                "{path} is missing: the status page test needs a real browser; \
                 install Debian's `{package}` (./test.sh installs chromium and chromium-driver)"
            );
        }
        let profile = tempfile::tempdir().expect("profile dir");
        let log = profile.path().join("chromedriver.log");
        // Owned by the guard at once: a panic from here on still kills it.
        let mut driver = Driver(
            Command::new(CHROMEDRIVER)
                .arg("--port=0")
                .arg(format!("--log-path={}", log.display()))
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .process_group(0)
                .spawn()
                .expect("spawn chromedriver"),
        );
        let stdout = driver.0.stdout.take().expect("chromedriver stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(port) = line
                    .split("started successfully on port ")
                    .nth(1)
                    .and_then(|rest| rest.trim_end_matches('.').trim().parse::<u16>().ok())
                {
                    let _ = tx.send(port);
                }
            }
        });
        let port = rx
            .recv_timeout(Duration::from_secs(20))
            .unwrap_or_else(|e| {
                panic!(
                    "chromedriver did not say which port it took ({e}); exit: {:?}; its log:\n{}",
                    driver.0.try_wait(),
                    std::fs::read_to_string(&log).unwrap_or_default()
                )
            });
        crate::support::install_crypto();
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(60))
            .build()
            .expect("client");
        let mut browser = Browser {
            _driver: driver,
            port,
            session: String::new(),
            http,
            dir: profile,
        };
        let args = [
            "--headless=new".to_owned(),
            // Root in a container has no user namespace for the sandbox.
            "--no-sandbox".to_owned(),
            "--disable-gpu".to_owned(),
            "--disable-dev-shm-usage".to_owned(),
            "--no-first-run".to_owned(),
            "--window-size=1280,1100".to_owned(),
            format!(
                "--user-data-dir={}",
                browser.dir.path().join("profile").display()
            ),
        ];
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": CHROMIUM, "args": args},
        }}});
        let created = browser.call("POST", "/session", Some(caps)).await;
        browser.session = created["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session id in {created}"))
            .to_owned();
        browser
    }

    /// Opens `url` and waits for it to load.
    pub async fn open(&self, url: &str) {
        let path = format!("/session/{}/url", self.session);
        self.call("POST", &path, Some(json!({ "url": url }))).await;
    }

    /// Runs `script` (a function body; `return` gives the value) in the page.
    pub async fn eval(&self, script: &str) -> Value {
        self.eval_with(script, &[]).await
    }

    /// As [`Browser::eval`], with `arguments[0..]` set to `args`.
    pub async fn eval_with(&self, script: &str, args: &[Value]) -> Value {
        let path = format!("/session/{}/execute/sync", self.session);
        self.call("POST", &path, Some(json!({"script": script, "args": args})))
            .await
    }

    /// A PNG of the viewport.
    pub async fn screenshot(&self) -> Vec<u8> {
        use base64::Engine;
        let path = format!("/session/{}/screenshot", self.session);
        let data = self.call("GET", &path, None).await;
        let text = data.as_str().expect("screenshot data");
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .expect("screenshot base64")
    }

    /// One WebDriver command: its `value`; panics on a WebDriver error.
    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let url = format!("http://127.0.0.1:{}{path}", self.port);
        let req = match method {
            "GET" => self.http.get(&url),
            _ => self
                .http
                .post(&url)
                .header("content-type", "application/json")
                .body(body.unwrap_or(json!({})).to_string()),
        };
        let resp = req.send().await.expect("WebDriver request");
        let status = resp.status();
        let text = resp.text().await.expect("WebDriver answer");
        let answer: Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("WebDriver answer is not JSON ({e}): {text}"));
        assert!(
            status.is_success(),
            "WebDriver {method} {path}: {status} {answer}"
        );
        answer["value"].clone()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // End the session (Chromium exits), with a plain blocking request:
        // drop cannot wait on the async client.
        if !self.session.is_empty()
            && let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port))
        {
            let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
            let _ = write!(
                s,
                "DELETE /session/{} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                self.session, self.port
            );
            let _ = s.read_to_end(&mut Vec::new());
        }
        // Then `_driver` is dropped.
    }
}

/// The chromedriver process, in its own process group.
struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        // Whatever is left of the group this test started (its id is the
        // child's pid): chromedriver and any Chromium it started.
        if let Ok(pid) = i32::try_from(self.0.id()) {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

//! The FastCGI engine (`moongate::upstream::fastcgi`) against a real
//! PHP-FPM: php-fpm started in the foreground on a free loopback port and
//! a unix socket in a temp dir, serving tests/fixtures/fastcgi/app.php,
//! driven directly through `exchange` over a tokio TcpStream/UnixStream.

use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use hyper::body::Frame;
use moongate::upstream::fastcgi::{FcgiBody, Head, Options, exchange};
use tokio::io::AsyncRead;
use tokio::net::{TcpStream, UnixStream};

/// A php-fpm master (and its 2 workers per pool), stopped on drop.
struct PhpFpm {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
}

/// php-fpm's path: Debian names it by PHP version (php-fpm8.2) in /usr/sbin.
fn php_fpm_program() -> PathBuf {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/sbin")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("php-fpm"))
        })
        .collect();
    found.sort();
    found.pop().unwrap_or_else(|| {
        panic!("php-fpm is not installed: run ./test.sh (it installs Debian's php-fpm)")
    })
}

impl PhpFpm {
    /// Starts php-fpm with a TCP pool and a unix-socket pool, each of 2
    /// static workers; returns once both accept connections.
    fn start() -> PhpFpm {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let dir = tempfile::tempdir().expect("temp dir");
        let d = dir.path().display();
        let conf = format!(
            "[global]\n\
             error_log = {d}/fpm.log\n\
             pid = {d}/fpm.pid\n\
             daemonize = no\n\
             [tcp]\n\
             listen = 127.0.0.1:{port}\n\
             pm = static\n\
             pm.max_children = 2\n\
             catch_workers_output = yes\n\
             [unix]\n\
             listen = {d}/fpm.sock\n\
             pm = static\n\
             pm.max_children = 2\n\
             catch_workers_output = yes\n"
        );
        std::fs::write(dir.path().join("fpm.conf"), conf).expect("write fpm.conf");
        let mut cmd = Command::new(php_fpm_program());
        cmd.arg("-F")
            .arg("-n")
            .arg("-y")
            .arg(dir.path().join("fpm.conf"));
        // php-fpm refuses to run as root unless told it may; /proc/self
        // belongs to this process's effective user.
        let root = std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0);
        if root {
            cmd.arg("-R");
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn php-fpm");
        let mut fpm = PhpFpm {
            child: Some(child),
            port,
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err()
            || std::os::unix::net::UnixStream::connect(fpm.socket()).is_err()
        {
            if let Some(Ok(Some(status))) = fpm.child.as_mut().map(|c| c.try_wait()) {
                panic!("php-fpm exited ({status}): {}", fpm.log());
            }
            assert!(
                Instant::now() < deadline,
                "php-fpm did not listen within 10 s: {}",
                fpm.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        fpm
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("fpm.sock")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("fpm.log")).unwrap_or_default()
    }

    async fn tcp(&self) -> TcpStream {
        TcpStream::connect(("127.0.0.1", self.port))
            .await
            .expect("connect to php-fpm")
    }
}

impl Drop for PhpFpm {
    /// SIGTERM to the master (by its PID), which stops its workers; SIGKILL
    /// if it has not exited within 5 s.
    fn drop(&mut self) {
        let Some(mut c) = self.child.take() else {
            return;
        };
        let pid = nix::unistd::Pid::from_raw(c.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = c.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = c.kill();
        let _ = c.wait();
    }
}

/// The fixture script's path.
fn script() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/fastcgi/app.php")
        .display()
        .to_string()
}

/// The CGI variables of a request, as a web server would send them.
fn cgi(method: &str, query: &str, content_type: &str, length: usize) -> Vec<(String, String)> {
    let mut p = vec![
        ("SCRIPT_FILENAME".into(), script()),
        ("SCRIPT_NAME".into(), "/app.php".into()),
        ("REQUEST_METHOD".into(), method.into()),
        ("QUERY_STRING".into(), query.into()),
        ("REQUEST_URI".into(), format!("/app.php?{query}")),
        ("SERVER_PROTOCOL".into(), "HTTP/1.1".into()),
        ("GATEWAY_INTERFACE".into(), "CGI/1.1".into()),
        ("SERVER_NAME".into(), "localhost".into()),
        ("SERVER_PORT".into(), "80".into()),
        ("REMOTE_ADDR".into(), "127.0.0.1".into()),
        ("HTTP_X_CUSTOM".into(), "from the client".into()),
    ];
    if length > 0 {
        p.push(("CONTENT_TYPE".into(), content_type.into()));
        p.push(("CONTENT_LENGTH".into(), length.to_string()));
    }
    p
}

fn options(keep_conn: bool) -> Options {
    Options {
        keep_conn,
        read_timeout: Duration::from_secs(10),
        upstream: Some("php".into()),
    }
}

/// Runs a body-less GET of `?query`.
async fn get<S>(io: S, query: &str, keep_conn: bool) -> (Head, FcgiBody<S>)
where
    S: AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    exchange(
        io,
        &cgi("GET", query, "", 0),
        Empty::<Bytes>::new(),
        &options(keep_conn),
    )
    .await
    .expect("FastCGI exchange")
}

async fn read_all<S: AsyncRead + Unpin>(body: &mut FcgiBody<S>) -> String {
    let bytes = body.collect().await.expect("FastCGI body").to_bytes();
    String::from_utf8(bytes.to_vec()).expect("UTF-8 body")
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

#[tokio::test]
async fn get_with_a_query_sees_the_cgi_variables() {
    let fpm = PhpFpm::start();
    let (head, mut body) = get(fpm.tcp().await, "mode=vars&a=1&b=two", false).await;
    assert_eq!(head.status, 200);
    assert_eq!(head.headers["content-type"], "application/json");
    let v = json(&read_all(&mut body).await);
    assert_eq!(v["method"], "GET");
    assert_eq!(v["query"], "mode=vars&a=1&b=two");
    assert_eq!(v["get"]["b"], "two");
    assert_eq!(v["uri"], "/app.php?mode=vars&a=1&b=two");
    assert_eq!(v["script"], script());
    assert_eq!(v["protocol"], "HTTP/1.1");
    assert_eq!(v["gateway"], "CGI/1.1");
    assert_eq!(v["header"], "from the client");
    assert_eq!(v["input"], "");
    assert!(!body.reusable(), "no FCGI_KEEP_CONN asked");
}

#[tokio::test]
async fn post_form_and_json_bodies_reach_php() {
    let fpm = PhpFpm::start();
    let form = "name=moon+gate&n=42";
    let (head, mut body) = exchange(
        fpm.tcp().await,
        &cgi(
            "POST",
            "mode=vars",
            "application/x-www-form-urlencoded",
            form.len(),
        ),
        Full::new(Bytes::from(form)),
        &options(true),
    )
    .await
    .expect("FastCGI exchange");
    assert_eq!(head.status, 200);
    let v = json(&read_all(&mut body).await);
    assert_eq!(v["method"], "POST");
    assert_eq!(v["post"]["name"], "moon gate");
    assert_eq!(v["post"]["n"], "42");
    assert_eq!(v["content_type"], "application/x-www-form-urlencoded");

    // A JSON body of 300 KB, streamed in pieces (several STDIN records).
    let doc = serde_json::json!({ "items": vec!["x".repeat(100); 3000] }).to_string();
    let pieces: Vec<Result<Frame<Bytes>, std::io::Error>> = doc
        .as_bytes()
        .chunks(70_000)
        .map(|c| Ok(Frame::data(Bytes::copy_from_slice(c))))
        .collect();
    let (_, mut body) = exchange(
        fpm.unix().await,
        &cgi("POST", "mode=vars", "application/json", doc.len()),
        StreamBody::new(futures_util::stream::iter(pieces)),
        &options(true),
    )
    .await
    .expect("FastCGI exchange");
    let v = json(&read_all(&mut body).await);
    assert_eq!(v["input"].as_str().map(str::len), Some(doc.len()));
    assert_eq!(json(v["input"].as_str().unwrap_or_default()), json(&doc));
    assert_eq!(v["post"], serde_json::json!([]));
    assert!(body.reusable());
}

#[tokio::test]
async fn status_header_response_code_and_location() {
    let fpm = PhpFpm::start();
    let (head, mut body) = get(fpm.tcp().await, "mode=status", false).await;
    assert_eq!(head.status, 404);
    assert!(!head.headers.contains_key("status"));
    assert_eq!(read_all(&mut body).await, "no such thing\n");

    let (head, mut body) = get(fpm.tcp().await, "mode=code", false).await;
    assert_eq!(head.status, 418);
    let cookies: Vec<_> = head.headers.get_all("set-cookie").iter().collect();
    assert_eq!(cookies, ["a=1", "b=2"]);
    assert_eq!(read_all(&mut body).await, "teapot\n");

    let (head, mut body) = get(fpm.tcp().await, "mode=redirect", false).await;
    assert_eq!(head.status, 302);
    assert_eq!(head.headers["location"], "/elsewhere");
    assert_eq!(read_all(&mut body).await, "");
}

#[tokio::test]
async fn ten_megabytes_stream_record_by_record() {
    let fpm = PhpFpm::start();
    let (head, mut body) = get(fpm.tcp().await, "mode=big", true).await;
    assert_eq!(head.status, 200);
    let block: Vec<u8> = b"0123456789abcdef".repeat(4096);
    let (mut total, mut frames, mut largest) = (0usize, 0usize, 0usize);
    while let Some(frame) = body.frame().await {
        let data = frame.expect("FastCGI body").into_data().unwrap_or_default();
        // Each piece is where it belongs in the repeated pattern.
        let at = total % block.len();
        let expected: Vec<u8> = block
            .iter()
            .cycle()
            .skip(at)
            .take(data.len())
            .copied()
            .collect();
        assert_eq!(&data[..], &expected[..], "at byte {total}");
        total += data.len();
        frames += 1;
        largest = largest.max(data.len());
    }
    assert_eq!(total, 10 * 1024 * 1024);
    assert!(
        largest <= 65535,
        "one record at a time, not {largest} bytes"
    );
    assert!(frames >= 160, "{frames} pieces");
    assert!(body.reusable());
}

/// A writer for log lines, shared with the test.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Ok(mut v) = self.0.lock() {
            v.extend_from_slice(buf);
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn stderr_is_logged_and_kept_out_of_the_body() {
    let fpm = PhpFpm::start();
    let logs = Captured::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    // The test runs on one thread, so the subscriber sees the exchange.
    let _guard = tracing::subscriber::set_default(subscriber);
    let (head, mut body) = get(fpm.tcp().await, "mode=stderr", true).await;
    assert_eq!(head.status, 200);
    assert_eq!(read_all(&mut body).await, "clean body\n");
    let text =
        String::from_utf8(logs.0.lock().map(|v| v.clone()).unwrap_or_default()).expect("UTF-8 log");
    let line = text
        .lines()
        .find(|l| l.contains("a note from php on stderr"))
        .unwrap_or_else(|| panic!("no stderr line in the log: {text:?}"));
    assert!(line.contains("WARN"), "{line}");
    assert!(line.contains("moongate::upstream"), "{line}");
    assert!(line.contains("upstream=\"php\""), "{line}");
    assert!(line.contains("FastCGI sent in stderr"), "{line}");
    assert!(body.reusable());
}

#[tokio::test]
async fn keep_conn_carries_requests_over_one_connection() {
    let fpm = PhpFpm::start();
    for conn_kind in ["tcp", "unix"] {
        let mut pids = Vec::new();
        if conn_kind == "tcp" {
            let mut conn = fpm.tcp().await;
            for i in 0..3 {
                let (head, mut body) = get(conn, &format!("mode=vars&i={i}"), true).await;
                pids.push(head.headers["x-pid"].clone());
                let v = json(&read_all(&mut body).await);
                assert_eq!(v["get"]["i"], i.to_string());
                conn = body.take_conn().expect("a reusable connection");
            }
        } else {
            let mut conn = fpm.unix().await;
            for i in 0..3 {
                let (head, mut body) = get(conn, &format!("mode=vars&i={i}"), true).await;
                pids.push(head.headers["x-pid"].clone());
                read_all(&mut body).await;
                conn = body.take_conn().expect("a reusable connection");
            }
        }
        // One connection is served by one php-fpm worker throughout.
        assert!(
            pids.windows(2).all(|w| w[0] == w[1]),
            "{conn_kind}: {pids:?}"
        );
    }

    // Without FCGI_KEEP_CONN php-fpm closes the connection after the
    // request: the body does not offer it back.
    let (_, mut body) = get(fpm.tcp().await, "mode=vars", false).await;
    read_all(&mut body).await;
    assert!(!body.reusable());
    assert!(body.take_conn().is_none());
}

impl PhpFpm {
    async fn unix(&self) -> UnixStream {
        UnixStream::connect(self.socket())
            .await
            .expect("connect to php-fpm's socket")
    }
}

/// PHP refuses a body over `post_max_size` (8 MB by default) but still
/// reads it all off STDIN, so sending it whole before reading the answer
/// does not stall, and the connection serves on.
#[tokio::test]
async fn a_body_over_post_max_size_is_answered_and_the_connection_kept() {
    let fpm = PhpFpm::start();
    let big = vec![b'a'; 12 * 1024 * 1024];
    let params = cgi("POST", "mode=vars", "application/octet-stream", big.len());
    let opts = options(true);
    let sent = exchange(fpm.tcp().await, &params, Full::new(Bytes::from(big)), &opts);
    let (head, mut body) = tokio::time::timeout(Duration::from_secs(30), sent)
        .await
        .expect("an answer within 30 s")
        .expect("FastCGI exchange");
    assert_eq!(head.status, 200);
    let text = read_all(&mut body).await;
    assert!(text.contains("exceeds the limit"), "{text}");
    let conn = body.take_conn().expect("a reusable connection");
    let (head, mut body) = get(conn, "mode=vars&after=1", true).await;
    assert_eq!(head.status, 200);
    assert_eq!(json(&read_all(&mut body).await)["get"]["after"], "1");
}

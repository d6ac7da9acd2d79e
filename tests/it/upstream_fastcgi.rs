//! FastCGI against a real PHP-FPM (php-fpm started in the foreground on a
//! free loopback port, or a unix socket in a temp dir). First the engine
//! (`moongate::upstream::fastcgi`) alone, serving
//! tests/fixtures/fastcgi/app.php, driven directly through `exchange` over
//! a tokio TcpStream/UnixStream; then `protocol = "fastcgi"` through
//! moongate (issue 14, nginx's `fastcgi_pass`): a real HTTP client,
//! moongate, php-fpm running the script [`INDEX_PHP`] from the upstream's
//! `root`, each test asserting what PHP really saw and answered.

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
        let workers = "pm = static\npm.max_children = 2\ncatch_workers_output = yes\n";
        Self::launch(
            |port, d| {
                format!(
                    "[tcp]\nlisten = 127.0.0.1:{port}\n{workers}[unix]\nlisten = {d}/fpm.sock\n{workers}"
                )
            },
            true,
        )
    }

    /// php-fpm with one TCP pool made of `pool` lines; returns once it
    /// accepts connections.
    fn start_pool(pool: &str) -> PhpFpm {
        Self::launch(
            |port, _| format!("[app]\nlisten = 127.0.0.1:{port}\n{pool}\n"),
            false,
        )
    }

    /// php-fpm with the pools `pools(port, dir)` writes (a free port, its
    /// own directory), in the foreground; returns once the port (and with
    /// `unix` the socket `dir/fpm.sock`) accepts connections.
    fn launch(pools: impl FnOnce(u16, &str) -> String, unix: bool) -> PhpFpm {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let dir = tempfile::tempdir().expect("temp dir");
        let d = dir.path().display().to_string();
        let conf = format!(
            "[global]\nerror_log = {d}/fpm.log\npid = {d}/fpm.pid\ndaemonize = no\n{}",
            pools(port, &d)
        );
        std::fs::write(dir.path().join("fpm.conf"), conf).expect("write fpm.conf");
        let mut cmd = Command::new(php_fpm_program());
        cmd.args(["-F", "-n", "-y"])
            .arg(dir.path().join("fpm.conf"));
        if is_root() {
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
            || (unix && std::os::unix::net::UnixStream::connect(fpm.socket()).is_err())
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

// ---------------------------------------------------------------------
// `protocol = "fastcgi"` through moongate: a real HTTP client, moongate,
// and php-fpm running the script below from the upstream's `root`.
// ---------------------------------------------------------------------

use crate::support::{self, Moongate, client, raw_exchange, raw_status};

/// The PHP app behind moongate, by `?mode=`. Every answer says which
/// FastCGI connection carried it (`X-Conn`: the sockets the php-fpm child
/// holds, its listening socket and the accepted connection, by inode) and
/// which child ran it (`X-Pid`).
const INDEX_PHP: &str = r#"<?php
function conn_id() {
    $ids = [];
    foreach (scandir('/proc/self/fd') as $fd) {
        $link = @readlink("/proc/self/fd/$fd");
        if ($link !== false && strncmp($link, 'socket:', 7) === 0) {
            $ids[] = $link;
        }
    }
    sort($ids);
    return implode(',', $ids);
}
header('X-Conn: ' . conn_id());
header('X-Pid: ' . getmypid());
switch ($_GET['mode'] ?? 'vars') {
case 'vars':
    header('Content-Type: application/json');
    echo json_encode([
        'method' => $_SERVER['REQUEST_METHOD'],
        'query' => $_SERVER['QUERY_STRING'],
        'get' => $_GET,
        'post' => $_POST,
        'input' => file_get_contents('php://input'),
        'content_type' => $_SERVER['CONTENT_TYPE'] ?? null,
        'content_length' => $_SERVER['CONTENT_LENGTH'] ?? null,
        'uri' => $_SERVER['REQUEST_URI'],
        'script_name' => $_SERVER['SCRIPT_NAME'],
        'script_filename' => $_SERVER['SCRIPT_FILENAME'],
        'document_root' => $_SERVER['DOCUMENT_ROOT'],
        'path_info' => $_SERVER['PATH_INFO'] ?? null,
        'php_self' => $_SERVER['PHP_SELF'],
        'header' => $_SERVER['HTTP_X_CUSTOM'] ?? null,
        'tag' => $_SERVER['APP_TAG'] ?? null,
    ]);
    break;
case 'missing':
    header('Status: 404 Not Found');
    echo "no such item\n";
    break;
case 'created':
    http_response_code(201);
    header('Location: /items/7');
    echo "made item 7\n";
    break;
case 'big':
    // 10 MiB: 160 blocks of 64 KiB, each its number (3 digits) then a
    // pattern, flushed one by one.
    header('Content-Type: application/octet-stream');
    $pattern = str_repeat('0123456789abcdef', 4096);
    for ($i = 0; $i < 160; $i++) {
        echo sprintf('%03d', $i) . substr($pattern, 3);
        flush();
    }
    break;
case 'stderr':
    error_log('php says: ' . $_GET['note']);
    echo "logged\n";
    break;
case 'slow':
    sleep((int) $_GET['s']);
    echo "late\n";
    break;
case 'stall':
    echo "started\n";
    flush();
    sleep((int) $_GET['s']);
    echo "ended\n";
    break;
}
"#;

/// php-fpm serving `root` (holding index.php) on one TCP pool of
/// `children` static children, with `extra` lines in the pool.
pub(crate) struct Php {
    fpm: PhpFpm,
    pub(crate) root: tempfile::TempDir,
}

impl Php {
    pub(crate) fn start(children: usize, extra: &str) -> Php {
        let root = tempfile::tempdir().expect("root dir");
        std::fs::write(root.path().join("index.php"), INDEX_PHP).expect("write index.php");
        let fpm = PhpFpm::start_pool(&format!(
            "pm = static\npm.max_children = {children}\ncatch_workers_output = yes\n{extra}\n"
        ));
        Php { fpm, root }
    }

    pub(crate) fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.fpm.port)
    }

    fn root(&self) -> String {
        self.root.path().display().to_string()
    }
}

/// Whether the tests run as root (php-fpm then needs `-R`).
fn is_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// moongate with `[upstream.php]` speaking FastCGI to `php` (its root as
/// `root`, `extra` lines in the table), routed from `/`; one worker thread
/// so that every request meets the same connection pool; an admin
/// listener for reloads.
fn fcgi_conf(php: &Php, extra: &str) -> String {
    format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\nworkers = 1\naccess_log = \"off\"\n\n\
         [admin]\nlisten = \"127.0.0.1:0\"\n\n\
         [upstream.php]\nprotocol = \"fastcgi\"\nroot = \"{}\"\nservers = [{{ addr = \"{}\" }}]\n{extra}\n\n\
         [[route]]\npath = \"/\"\nupstream = \"php\"\n",
        php.root(),
        php.addr()
    )
}

/// The JSON answer of `mode=vars`.
async fn php_vars(resp: reqwest::Response) -> serde_json::Value {
    assert_eq!(resp.status(), 200);
    let text = resp.text().await.expect("body");
    json(&text)
}

fn header(resp: &reqwest::Response, name: &str) -> String {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_moongate_a_get_runs_the_script_under_root() {
    let php = Php::start(2, "");
    let mg = Moongate::start(&fcgi_conf(&php, "params = { APP_TAG = \"tag-$host\" }"));
    let resp = client()
        .get(mg.url("/index.php?mode=vars&a=1&b=two%20words"))
        .header("x-custom", "from the client")
        .send()
        .await
        .expect("GET");
    let v = php_vars(resp).await;
    assert_eq!(v["method"], "GET");
    assert_eq!(v["query"], "mode=vars&a=1&b=two%20words");
    assert_eq!(v["get"]["a"], "1");
    assert_eq!(v["get"]["b"], "two words");
    assert_eq!(v["uri"], "/index.php?mode=vars&a=1&b=two%20words");
    assert_eq!(v["script_name"], "/index.php");
    assert_eq!(v["php_self"], "/index.php");
    assert_eq!(v["script_filename"], format!("{}/index.php", php.root()));
    assert_eq!(v["document_root"], php.root());
    assert_eq!(v["path_info"], serde_json::Value::Null);
    assert_eq!(v["header"], "from the client");
    assert_eq!(v["tag"], "tag-127.0.0.1");
    assert_eq!(v["input"], "");

    // HEAD: the script's head, no body.
    let resp = client()
        .head(mg.url("/index.php?mode=vars"))
        .send()
        .await
        .expect("HEAD");
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "content-type"), "application/json");
    assert!(!header(&resp, "x-conn").is_empty());
    assert_eq!(resp.bytes().await.expect("body").len(), 0);

    // A script that is not there: php-fpm's own 404.
    let resp = client().get(mg.url("/nope.php")).send().await.expect("GET");
    assert_eq!(resp.status(), 404);

    // A path climbing out of root never reaches php-fpm.
    let raw = raw_exchange(
        mg.http[0],
        b"GET /%2e%2e/etc/passwd HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(raw_status(&raw), 400, "{raw}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_moongate_form_json_and_chunked_bodies_reach_php() {
    let php = Php::start(2, "");
    let mg = Moongate::start(&fcgi_conf(&php, ""));
    let resp = client()
        .post(mg.url("/index.php?mode=vars"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("name=moon+gate&n=42")
        .send()
        .await
        .expect("POST form");
    let v = php_vars(resp).await;
    assert_eq!(v["method"], "POST");
    assert_eq!(v["post"]["name"], "moon gate");
    assert_eq!(v["post"]["n"], "42");
    assert_eq!(v["content_type"], "application/x-www-form-urlencoded");
    assert_eq!(v["content_length"], "19");

    let doc = serde_json::json!({ "todo": "write tests", "items": vec!["é"; 5000] }).to_string();
    let resp = client()
        .put(mg.url("/index.php?mode=vars"))
        .header("content-type", "application/json")
        .body(doc.clone())
        .send()
        .await
        .expect("PUT json");
    let v = php_vars(resp).await;
    assert_eq!(v["method"], "PUT");
    assert_eq!(v["content_type"], "application/json");
    assert_eq!(v["content_length"], doc.len().to_string());
    assert_eq!(v["input"].as_str(), Some(doc.as_str()));
    assert_eq!(v["post"], serde_json::json!([]));

    // Chunked: read whole first, sent with its CONTENT_LENGTH.
    let raw = raw_exchange(
        mg.http[0],
        b"POST /index.php?mode=vars HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\
          Content-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n\
          5\r\nhello\r\n7\r\n, world\r\n0\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(raw_status(&raw), 200, "{raw}");
    let start = raw.find('{').expect("JSON body");
    let end = raw.rfind('}').expect("JSON end");
    let v = json(&raw[start..=end]);
    assert_eq!(v["content_length"], "12");
    assert_eq!(v["input"], "hello, world");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_moongate_status_headers_and_a_10_mib_stream() {
    let php = Php::start(2, "");
    let mg = Moongate::start(&fcgi_conf(&php, ""));
    let resp = client()
        .get(mg.url("/index.php?mode=missing"))
        .send()
        .await
        .expect("GET");
    assert_eq!(resp.status(), 404);
    assert!(resp.headers().get("status").is_none());
    assert_eq!(resp.text().await.expect("body"), "no such item\n");

    let resp = client()
        .post(mg.url("/index.php?mode=created"))
        .send()
        .await
        .expect("POST");
    assert_eq!(resp.status(), 201);
    assert_eq!(header(&resp, "location"), "/items/7");
    assert_eq!(resp.text().await.expect("body"), "made item 7\n");

    let before = peak_rss_kib(mg.pid());
    let mut resp = client()
        .get(mg.url("/index.php?mode=big"))
        .send()
        .await
        .expect("GET big");
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "content-type"), "application/octet-stream");
    let pattern = "0123456789abcdef".repeat(4096);
    let mut all = Vec::with_capacity(10 << 20);
    while let Some(piece) = resp.chunk().await.expect("chunk") {
        all.extend_from_slice(&piece);
    }
    assert_eq!(all.len(), 10 * 1024 * 1024);
    for (i, block) in all.chunks(65536).enumerate() {
        let want = format!("{i:03}{}", &pattern[3..]);
        assert!(block == want.as_bytes(), "block {i} differs");
    }
    // Streamed, not held: moongate's peak memory barely moved.
    let grew = peak_rss_kib(mg.pid()).saturating_sub(before);
    assert!(
        grew < 5 * 1024,
        "peak RSS grew by {grew} KiB for a 10 MiB body"
    );
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
async fn through_moongate_php_stderr_is_logged() {
    let php = Php::start(2, "");
    let mg = Moongate::start(&fcgi_conf(&php, ""));
    let resp = client()
        .get(mg.url("/index.php?mode=stderr&note=disk%20nearly%20full"))
        .send()
        .await
        .expect("GET");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.expect("body"), "logged\n");
    let line = mg.wait_log("php says: disk nearly full", Duration::from_secs(5));
    assert!(line.contains("WARN"), "{line}");
    assert!(line.contains("php"), "{line}");
}

/// A peer that refuses connections is passed over for the next one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_moongate_a_refusing_peer_is_passed_over() {
    let php = Php::start(2, "");
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port");
    let conf = fcgi_conf(&php, "").replace(
        "servers = [{ addr",
        &format!("servers = [{{ addr = \"{closed}\" }}, {{ addr"),
    );
    assert!(
        conf.contains(&format!("[{{ addr = \"{closed}\" }}, {{ addr")),
        "{conf}"
    );
    let mg = Moongate::start(&conf);
    for i in 0..4 {
        let resp = client()
            .get(mg.url(&format!("/index.php?mode=vars&i={i}")))
            .send()
            .await
            .expect("GET");
        assert_eq!(php_vars(resp).await["get"]["i"], i.to_string());
    }
}

/// `X-Conn` and `X-Pid` of `n` sequential GETs.
async fn conns(mg: &Moongate, n: usize) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for i in 0..n {
        let resp = client()
            .get(mg.url(&format!("/index.php?mode=vars&i={i}")))
            .send()
            .await
            .expect("GET");
        let seen = (header(&resp, "x-conn"), header(&resp, "x-pid"));
        let v = php_vars(resp).await;
        assert_eq!(v["get"]["i"], i.to_string());
        out.push(seen);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_moongate_connections_are_kept_alive_and_reused() {
    let php = Php::start(3, "");
    let mg = Moongate::start(&fcgi_conf(&php, ""));
    let seen = conns(&mg, 6).await;
    assert!(!seen[0].0.is_empty(), "{seen:?}");
    assert!(
        seen.iter().all(|s| *s == seen[0]),
        "one connection, one child: {seen:?}"
    );

    // Without keep-alive every request has a connection of its own.
    let mg = Moongate::start(&fcgi_conf(&php, "keepalive = 0"));
    let seen = conns(&mg, 4).await;
    let distinct: std::collections::BTreeSet<_> = seen.iter().map(|s| &s.0).collect();
    assert_eq!(distinct.len(), 4, "{seen:?}");
}

/// php-fpm children that exit after 2 requests close the connection moongate
/// keeps: the next request goes on a new connection, none fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_moongate_a_pooled_connection_php_closed_is_replaced() {
    let php = Php::start(1, "pm.max_requests = 2");
    let mg = Moongate::start(&fcgi_conf(&php, ""));
    let seen = conns(&mg, 6).await;
    let children: std::collections::BTreeSet<_> = seen.iter().map(|s| &s.1).collect();
    assert!(children.len() >= 3, "children replaced: {seen:?}");
    assert_eq!(seen[0], seen[1], "two requests per connection: {seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_moongate_php_down_is_502_and_slow_is_504() {
    let php = Php::start(2, "");
    let mut mg = Moongate::start(&fcgi_conf(&php, "read_timeout = \"1s\""));
    let started = Instant::now();
    let resp = client()
        .get(mg.url("/index.php?mode=slow&s=3"))
        .send()
        .await
        .expect("GET");
    assert_eq!(resp.status(), 504);
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_millis(2900),
        "{took:?}"
    );
    let ok = client()
        .get(mg.url("/index.php?mode=vars"))
        .send()
        .await
        .expect("GET");
    assert_eq!(ok.status(), 200);

    // Silent past read_timeout in the middle of the body: the body fails
    // (the client sees it cut off), it does not wait for the script.
    let started = Instant::now();
    let resp = client()
        .get(mg.url("/index.php?mode=stall&s=3"))
        .send()
        .await
        .expect("GET");
    assert_eq!(resp.status(), 200);
    let body = resp.text().await;
    assert!(body.is_err(), "{body:?}");
    let took = started.elapsed();
    assert!(took < Duration::from_millis(2900), "{took:?}");

    drop(php);
    let resp = client()
        .get(mg.url("/index.php?mode=vars"))
        .send()
        .await
        .expect("GET");
    assert_eq!(resp.status(), 502);
    assert_eq!(
        mg.wait_exit(Duration::from_millis(1)),
        None,
        "still running"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_moongate_a_reload_keeps_the_pooled_fastcgi_connection() {
    let php = Php::start(3, "");
    let mg = Moongate::start(&fcgi_conf(&php, "params = { APP_TAG = \"one\" }"));
    let before = conns(&mg, 2).await;
    assert_eq!(before[0], before[1]);

    let (code, body) = mg.admin_reload().await;
    assert_eq!(code, 200, "{body}");
    let after = conns(&mg, 2).await;
    assert_eq!(after[0], before[0], "unchanged upstream: same connection");

    // A changed upstream is a new pool: a new connection.
    mg.write_conf(
        "00-test.toml",
        &fcgi_conf(&php, "params = { APP_TAG = \"two\" }"),
    );
    let (code, body) = mg.admin_reload().await;
    assert_eq!(code, 200, "{body}");
    let resp = client()
        .get(mg.url("/index.php?mode=vars"))
        .send()
        .await
        .expect("GET");
    let conn = header(&resp, "x-conn");
    assert_eq!(php_vars(resp).await["tag"], "two");
    assert_ne!(conn, before[0].0, "changed upstream: a new connection");
}

/// A managed pool of php-fpm masters (`[upstream.php.workers]`), each told
/// its socket through the environment; ready once a FastCGI request for
/// root + `ready` answers 2xx (an HTTP probe would never pass).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_managed_php_fpm_pool_is_probed_over_fastcgi() {
    let root = tempfile::tempdir().expect("root");
    std::fs::write(root.path().join("index.php"), INDEX_PHP).expect("write index.php");
    let fpm_conf = root.path().join("fpm.conf");
    std::fs::write(
        &fpm_conf,
        "[global]\nerror_log = /proc/self/fd/2\ndaemonize = no\n\
         [app]\nlisten = ${FPM_LISTEN}\npm = static\npm.max_children = 2\n",
    )
    .expect("write fpm.conf");
    let mut argv = vec![
        "env".to_owned(),
        "FPM_LISTEN={socket}".to_owned(),
        php_fpm_program().display().to_string(),
        "-F".into(),
        "-n".into(),
        "-y".into(),
        fpm_conf.display().to_string(),
    ];
    if is_root() {
        argv.push("-R".into());
    }
    let command = argv
        .iter()
        .map(|a| format!("\"{a}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let mg = Moongate::start(&format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\nworkers = 1\naccess_log = \"off\"\n\n\
         [admin]\nlisten = \"127.0.0.1:0\"\n\n\
         [upstream.php]\nprotocol = \"fastcgi\"\nroot = \"{}\"\n\n\
         [upstream.php.workers]\ncommand = [{command}]\ncount = 1\nready = \"/index.php?mode=missing\"\n\
         start_timeout = \"3s\"\nrestart_backoff = \"100ms..1s\"\nstop_timeout = \"2s\"\n\n\
         [[route]]\npath = \"/\"\nupstream = \"php\"\n",
        root.path().display()
    ));
    // The probe asks a path answering 404: never ready.
    let deadline = Instant::now() + Duration::from_secs(10);
    let line = mg.wait_log("not ready within", Duration::from_secs(10));
    assert!(line.contains("answered 404"), "{line}");
    assert!(Instant::now() < deadline);

    // With a path answering 200 it is ready, and serves.
    mg.write_conf(
        "00-test.toml",
        &std::fs::read_to_string(mg.conf_dir().join("00-test.toml"))
            .expect("read conf")
            .replace(
                "ready = \"/index.php?mode=missing\"",
                "ready = \"/index.php?mode=vars\"",
            ),
    );
    let (code, body) = mg.admin_reload().await;
    assert_eq!(code, 200, "{body}");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let pool = mg.status().await["workers"]["php"].clone();
        if pool["state"] == "ok" {
            break;
        }
        assert!(Instant::now() < deadline, "pool not ready: {pool:#}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let resp = client()
        .get(mg.url("/index.php?mode=vars&x=1"))
        .send()
        .await
        .expect("GET");
    let v = php_vars(resp).await;
    assert_eq!(v["get"]["x"], "1");
    assert_eq!(
        v["script_filename"],
        format!("{}/index.php", root.path().display())
    );
}

/// `moongate check` names the line of what is wrong with a FastCGI upstream.
#[test]
fn fastcgi_config_errors_name_file_and_line() {
    let cases = [
        (
            "[upstream.php]\nprotocol = \"fastcgi\"\nservers = [{ addr = \"127.0.0.1:9\" }]\n",
            "30-php.toml:1:11: [upstream.php] speaks fastcgi but says no script to run",
        ),
        (
            "[upstream.php]\nservers = [{ addr = \"127.0.0.1:9\" }]\nroot = \"/srv/www\"\n",
            "30-php.toml:3:8: `root` is where a FastCGI server finds the scripts",
        ),
    ];
    support::assert_check_errors("30-php.toml", &cases);
}

/// A FastCGI responder written here from raw records, for what PHP-FPM
/// cannot be made to do on cue: every connection answers its first request
/// ("conn C req 0", keeping the connection when asked) and, having read a
/// second one, closes without answering. Counts connections; notes the
/// BEGIN_REQUEST flags and STDIN of each request.
struct ClosingResponder {
    addr: std::net::SocketAddr,
    conns: Arc<std::sync::atomic::AtomicUsize>,
    seen: Arc<Mutex<Vec<Seen>>>,
}

/// What [`ClosingResponder`] read of one request: BEGIN_REQUEST's flags
/// and the STDIN.
type Seen = (u8, Vec<u8>);

impl ClosingResponder {
    async fn start() -> ClosingResponder {
        use moongate::upstream::fastcgi::record::{
            self, BEGIN_REQUEST, HEADER_LEN, Header, ProtocolStatus, STDIN, STDOUT,
        };
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let conns = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (count, notes) = (conns.clone(), seen.clone());
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let c = count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let notes = notes.clone();
                tokio::spawn(async move {
                    for r in 0.. {
                        // One request: records up to the empty STDIN.
                        let (mut flags, mut stdin) = (0u8, Vec::new());
                        loop {
                            let mut hb = [0u8; HEADER_LEN];
                            if s.read_exact(&mut hb).await.is_err() {
                                return;
                            }
                            let h = Header::parse(&hb);
                            let mut body = vec![0u8; h.body_len()];
                            if s.read_exact(&mut body).await.is_err() {
                                return;
                            }
                            body.truncate(usize::from(h.content_length));
                            if h.kind == BEGIN_REQUEST {
                                flags = body.get(2).copied().unwrap_or(0);
                            }
                            if h.kind == STDIN {
                                if body.is_empty() {
                                    break;
                                }
                                stdin.extend_from_slice(&body);
                            }
                        }
                        notes.lock().unwrap().push((flags, stdin));
                        if r == 1 {
                            return; // closes
                        }
                        let mut out = Vec::new();
                        let text = format!("Status: 200\r\nX-Fake: 1\r\n\r\nconn {c} req {r}");
                        record::put_stream(&mut out, STDOUT, 1, text.as_bytes());
                        record::put_stream_end(&mut out, STDOUT, 1);
                        record::put_end_request(&mut out, 1, 0, ProtocolStatus::RequestComplete);
                        if s.write_all(&out).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        ClosingResponder { addr, conns, seen }
    }

    fn conns(&self) -> usize {
        self.conns.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// A pooled connection the application closes on receiving a request is
/// replaced once by a new one when the request has no body; a request
/// with a body is not sent twice (502).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pooled_connection_closed_on_a_request_is_retried_only_without_a_body() {
    let app = ClosingResponder::start().await;
    let mg = Moongate::start(&format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\nworkers = 1\naccess_log = \"off\"\n\n\
         [upstream.app]\nprotocol = \"fastcgi\"\nparams = {{ SCRIPT_FILENAME = \"/srv/index.php\" }}\n\
         servers = [{{ addr = \"{}\" }}]\n\n\
         [[route]]\npath = \"/\"\nupstream = \"app\"\n",
        app.addr
    ));
    let get = |path: &'static str| {
        let url = mg.url(path);
        async move {
            let resp = client().get(url).send().await.expect("GET");
            (
                resp.status().as_u16(),
                resp.text().await.unwrap_or_default(),
            )
        }
    };
    assert_eq!(get("/a").await, (200, "conn 0 req 0".to_owned()));
    // Pooled connection 0 closes on this request: sent again on a new one.
    assert_eq!(get("/b").await, (200, "conn 1 req 0".to_owned()));
    assert_eq!(app.conns(), 2);

    // Connection 1 is pooled now and closes on this one, which had a body:
    // not sent twice.
    let resp = client()
        .put(mg.url("/c"))
        .body("payload")
        .send()
        .await
        .expect("PUT");
    assert_eq!(resp.status(), 502);
    assert_eq!(app.conns(), 2, "no second try");
    assert_eq!(get("/d").await, (200, "conn 2 req 0".to_owned()));

    let seen = app.seen.lock().unwrap().clone();
    assert!(
        seen.iter().all(|(flags, _)| *flags == 1),
        "FCGI_KEEP_CONN asked: {seen:?}"
    );
    assert_eq!(seen[3].1, b"payload");
}

//! The examples end to end through the real binary (issue 6, points 7-8):
//! the default gateway — the repository's own conf.d, only its listen
//! addresses and data file moved — serving the todo app of examples/todo
//! as managed workers (API key on writes, per-client rate limit, cached
//! list), the same app under uWSGI as a managed pool spoken to over the
//! uwsgi protocol (examples/todo/uwsgi.toml), and the Flask app of
//! examples/flask under gunicorn as a managed pool, and the gRPC echo
//! service of examples/grpc behind a Lua metadata check, called by a real
//! gRPC client (grpcio). Workers are real python3 processes; every pid seen is killed on
//! drop if a supervisor bug left it running.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::support::{Moongate, client, gone, grpc_call, wait_gone};

const KEY: &str = "demo-key-123";

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// A copy of the repository's conf.d with the listeners on port 0 and the
/// todo database at `db`; fails if the default files stop saying what is
/// replaced (so this test keeps testing the real defaults). The copy is
/// `PREFIX/conf.d`, beside a link `PREFIX/examples` to the repository's
/// examples: the default's relative paths (the app, the static site, the
/// key file) resolve against the directory holding conf.d, as they do in
/// the repository. Returns the prefix and the conf.d path.
fn default_conf_d(db: &Path) -> (tempfile::TempDir, PathBuf) {
    let db = format!("\"{}\"", db.display());
    let subs = [
        ("\"127.0.0.1:8080\"", "\"127.0.0.1:0\""),
        ("\"127.0.0.1:9901\"", "\"127.0.0.1:0\""),
        ("\"var/todo.db\"", db.as_str()),
    ];
    let mut used = [false; 3];
    let prefix = tempfile::tempdir().expect("prefix dir");
    std::os::unix::fs::symlink(repo("examples"), prefix.path().join("examples"))
        .expect("link examples");
    let dir = prefix.path().join("conf.d");
    std::fs::create_dir(&dir).expect("conf dir");
    for entry in std::fs::read_dir(repo("conf.d")).expect("read conf.d") {
        let path = entry.expect("conf.d entry").path();
        let Some(name) = path.file_name() else {
            continue;
        };
        let mut text = std::fs::read_to_string(&path).expect("read conf file");
        if path.extension().is_some_and(|e| e == "toml") {
            for (i, (from, to)) in subs.iter().enumerate() {
                if text.contains(from) {
                    used[i] = true;
                    text = text.replace(from, to);
                }
            }
        }
        std::fs::write(dir.join(name), text).expect("write conf file");
    }
    for (i, (from, _)) in subs.iter().enumerate() {
        assert!(
            used[i],
            "the default conf.d no longer contains {from}; update tests/it/examples.rs"
        );
    }
    (prefix, dir)
}

/// Pids of worker processes seen during a test: on drop (after moongate,
/// so declare it first), any still running python is killed.
#[derive(Default)]
struct Leftovers(Mutex<BTreeSet<i32>>);

impl Leftovers {
    fn add(&self, pids: impl IntoIterator<Item = i32>) {
        self.0.lock().unwrap().extend(pids);
    }

    fn pids(&self) -> BTreeSet<i32> {
        self.0.lock().unwrap().clone()
    }
}

impl Drop for Leftovers {
    fn drop(&mut self) {
        for &pid in self.0.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            if !gone(pid) && String::from_utf8_lossy(&cmdline).contains("python") {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
        }
    }
}

/// A request through moongate: status, headers, body as JSON (`Null` when
/// empty or not JSON).
struct Answer {
    status: StatusCode,
    headers: reqwest::header::HeaderMap,
    json: Value,
}

impl Answer {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
}

async fn call(mg: &Moongate, method: Method, path: &str, key: Option<&str>, body: &str) -> Answer {
    let mut req = client().request(method.clone(), mg.url(path));
    if let Some(key) = key {
        req = req.header("x-api-key", key);
    }
    if !body.is_empty() {
        req = req
            .header("content-type", "application/json")
            .body(body.to_string());
    }
    let resp = req
        .send()
        .await
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    let status = resp.status();
    let headers = resp.headers().clone();
    let text = resp.text().await.expect("body");
    let json = serde_json::from_str(&text).unwrap_or(Value::Null);
    Answer {
        status,
        headers,
        json,
    }
}

async fn get(mg: &Moongate, path: &str) -> Answer {
    call(mg, Method::GET, path, None, "").await
}

/// The admin `/status` document's `workers.NAME`, polled until `count`
/// workers are ready (at most 60 s: python starts slowly on a busy CI
/// machine); their pids are added to `seen`.
async fn wait_ready(mg: &Moongate, pool: &str, count: usize, seen: &Leftovers) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let p = mg.status().await["workers"][pool].clone();
        let workers = p["workers"].as_array().cloned().unwrap_or_default();
        seen.add(
            workers
                .iter()
                .filter_map(|w| w["pid"].as_i64())
                .map(|p| p as i32),
        );
        if p["state"] == "ok"
            && workers.len() == count
            && workers.iter().all(|w| w["state"] == "ready")
        {
            return p;
        }
        assert!(
            Instant::now() < deadline,
            "pool {pool}: {count} workers not ready in time; workers.{pool}: {p:#}\nlog:\n{}",
            mg.log_lines().join("\n")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn pids_of(pool: &Value) -> BTreeSet<i32> {
    pool["workers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|w| w["pid"].as_i64())
        .map(|p| p as i32)
        .collect()
}

/// SIGTERM: moongate exits 0 and every process in `pids` is gone.
async fn stop_and_check_gone(mg: &mut Moongate, pids: &BTreeSet<i32>) {
    mg.signal(Signal::SIGTERM);
    let code = tokio::task::block_in_place(|| mg.wait_exit(Duration::from_secs(60)));
    assert_eq!(code, Some(0), "log:\n{}", mg.log_lines().join("\n"));
    wait_gone(pids, Duration::from_secs(20)).await;
}

fn titles(list: &Value) -> Vec<&str> {
    list["todos"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t["title"].as_str())
        .collect()
}

/// The README's tour of the default gateway: every todo endpoint through
/// moongate, with the API key, the rate limit and the cache at work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_gateway_serves_the_todo_app() {
    let data = tempfile::tempdir().expect("data dir");
    let db = data.path().join("todo.db");
    let seen = Leftovers::default();
    let (prefix, conf) = default_conf_d(&db);
    let mut mg = tokio::task::block_in_place(|| Moongate::start_at(prefix, conf));
    let pool = wait_ready(&mg, "todo", 2, &seen).await;
    let pids = pids_of(&pool);
    assert_eq!(pids.len(), 2, "two processes: {pool:#}");
    assert!(db.exists(), "the database is created on first use");

    // The empty list: open to anyone, cacheable, rate-limited.
    let list = get(&mg, "/todos").await;
    assert_eq!(list.status, 200);
    assert_eq!(list.json, json!({"todos": [], "next": null}));
    assert_eq!(list.header("cache-control"), "public, max-age=2");
    assert_eq!(list.header("x-cache-status"), "MISS");
    assert_eq!(list.header("ratelimit-limit"), "50", "{:?}", list.headers);
    assert!(!list.header("ratelimit-remaining").is_empty());
    assert!(!list.header("x-request-id").is_empty());
    // Fresh for 2 s: the next look is a HIT (asked again if the machine
    // was slow enough for the entry to expire in between).
    let mut hit = false;
    for _ in 0..5 {
        let again = get(&mg, "/todos").await;
        assert_eq!(again.json, list.json);
        if again.header("x-cache-status") == "HIT" {
            hit = true;
            break;
        }
    }
    assert!(hit, "the list is answered from the cache");

    // Writes need a key: none -> 401, an unknown one -> 403.
    let add = r#"{"title": "first"}"#;
    let no_key = call(&mg, Method::POST, "/todos", None, add).await;
    assert_eq!(no_key.status, 401);
    assert!(no_key.header("www-authenticate").contains("X-Api-Key"));
    let bad_key = call(&mg, Method::POST, "/todos", Some("nope"), add).await;
    assert_eq!(bad_key.status, 403);

    let first = call(&mg, Method::POST, "/todos", Some(KEY), add).await;
    assert_eq!(first.status, 201, "{:?}", first.json);
    assert_eq!(first.json["title"], "first");
    assert_eq!(first.json["done"], false);
    assert_eq!(first.header("cache-control"), "no-store");
    let second = call(
        &mg,
        Method::POST,
        "/todos",
        Some(KEY),
        r#"{"title": "second"}"#,
    )
    .await;
    assert_eq!(second.status, 201);
    let (first_id, second_id) = (first.json["id"].clone(), second.json["id"].clone());

    // The adds dropped the cached first page: newest first.
    let list = get(&mg, "/todos").await;
    assert_eq!(list.header("x-cache-status"), "MISS");
    assert_eq!(titles(&list.json), ["second", "first"]);
    assert_eq!(list.json["next"], Value::Null);

    // Pages of 20, `next` says where the following one starts.
    for n in 3..=22 {
        let body = json!({ "title": format!("todo {n}") }).to_string();
        let added = call(&mg, Method::POST, "/todos", Some(KEY), &body).await;
        assert_eq!(added.status, 201, "{:?}", added.json);
    }
    let page = get(&mg, "/todos").await;
    let shown = titles(&page.json);
    assert_eq!(shown.len(), 20);
    assert_eq!((shown[0], shown[19]), ("todo 22", "todo 3"));
    assert_eq!(page.json["next"], 20);
    let rest = get(&mg, "/todos?start=20").await;
    assert_eq!(titles(&rest.json), ["second", "first"]);
    assert_eq!(rest.json["next"], Value::Null);

    // Finish one: PATCH with the key.
    let path = format!("/todos/{first_id}");
    let done = r#"{"done": true}"#;
    let refused = call(&mg, Method::PATCH, &path, None, done).await;
    assert_eq!(refused.status, 401);
    let finished = call(&mg, Method::PATCH, &path, Some(KEY), done).await;
    assert_eq!(finished.status, 200, "{:?}", finished.json);
    assert_eq!(finished.json["done"], true);
    assert!(finished.json["done_at"].is_string());
    let one = get(&mg, &path).await;
    assert_eq!(
        (one.json["title"].clone(), one.json["done"].clone()),
        (json!("first"), json!(true))
    );

    // Delete the other one.
    let path = format!("/todos/{second_id}");
    // Deleting needs an admin's password (basic_auth + acl), not the key.
    let with_key = call(&mg, Method::DELETE, &path, Some(KEY), "").await;
    assert_eq!(with_key.status, 401);
    assert!(
        with_key
            .header("www-authenticate")
            .starts_with("Basic realm=\"todo admin\""),
        "{:?}",
        with_key.headers
    );
    let wrong = client()
        .delete(mg.url(&path))
        .basic_auth("admin", Some("guess"))
        .send()
        .await
        .expect("DELETE");
    assert_eq!(wrong.status(), 401);
    let deleted = client()
        .delete(mg.url(&path))
        .basic_auth("admin", Some("admin-demo-pw"))
        .send()
        .await
        .expect("DELETE");
    assert_eq!(deleted.status(), 204);
    let missing = get(&mg, &path).await;
    assert_eq!(missing.status, 404);
    assert!(missing.json["error"].is_string(), "{:?}", missing.json);

    // Bad input gets the app's JSON errors; a method no route takes, 405.
    let bad = call(&mg, Method::POST, "/todos", Some(KEY), "{not json").await;
    assert_eq!(bad.status, 400);
    assert!(bad.json["error"].as_str().unwrap_or("").contains("JSON"));
    let long = json!({ "title": "x".repeat(201) }).to_string();
    let too_long = call(&mg, Method::POST, "/todos", Some(KEY), &long).await;
    assert_eq!(too_long.status, 400);
    let put = call(&mg, Method::PUT, "/todos", Some(KEY), "{}").await;
    assert_eq!(put.status, 405);
    assert!(put.header("allow").contains("POST"), "{:?}", put.headers);

    // A web app on another origin: its preflight is answered at the edge
    // (no API key needed for it), its calls get the CORS headers.
    let preflight = client()
        .request(Method::OPTIONS, mg.url("/todos"))
        .header("origin", "http://localhost:3000")
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "content-type, x-api-key")
        .send()
        .await
        .expect("OPTIONS");
    assert_eq!(preflight.status(), 204);
    let allowed = |r: &reqwest::Response, name: &str| {
        (r.headers().get(name).and_then(|v| v.to_str().ok())).map(str::to_owned)
    };
    assert_eq!(
        allowed(&preflight, "access-control-allow-origin").as_deref(),
        Some("http://localhost:3000")
    );
    assert_eq!(
        allowed(&preflight, "access-control-allow-headers").as_deref(),
        Some("Content-Type, X-Api-Key")
    );
    let list = client()
        .get(mg.url("/todos"))
        .header("origin", "http://localhost:3000")
        .send()
        .await
        .expect("GET");
    assert_eq!(list.status(), 200);
    assert_eq!(
        allowed(&list, "access-control-allow-origin").as_deref(),
        Some("http://localhost:3000")
    );
    let elsewhere = client()
        .get(mg.url("/todos"))
        .header("origin", "https://evil.test")
        .send()
        .await
        .expect("GET");
    assert_eq!(elsewhere.status(), 200);
    assert_eq!(allowed(&elsewhere, "access-control-allow-origin"), None);

    // The static site is still there.
    let site = client().get(mg.url("/")).send().await.expect("GET /");
    assert_eq!(site.status(), 200);

    seen.add(pids.iter().copied());
    stop_and_check_gone(&mut mg, &pids).await;
}

/// A real WSGI stack: Flask under gunicorn (a master and two workers per
/// moongate worker), two managed gunicorn masters behind moongate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flask_under_gunicorn_runs_as_a_managed_pool() {
    let found = std::process::Command::new("python3")
        .args(["-c", "import flask, gunicorn"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        found,
        "python3 cannot import flask and gunicorn: run ./test.sh (it installs them)"
    );
    let conf = format!(
        r#"[server]
listen = ["127.0.0.1:0"]
workers = 2
access_log = "off"

[admin]
listen = "127.0.0.1:0"

[upstream.flask]
balance = "round_robin"

[upstream.flask.workers]
command = ["python3", "-m", "gunicorn", "--workers", "2", "--bind", "unix:{{socket}}", "app:app"]
dir = "{}"
count = 2
ready = "/healthz"
start_timeout = "60s"
stop_timeout = "10s"

[[route]]
path = "/"
upstream = "flask"
"#,
        repo("examples/flask").display()
    );
    let seen = Leftovers::default();
    let mut mg = tokio::task::block_in_place(|| Moongate::start(&conf));
    let pool = wait_ready(&mg, "flask", 2, &seen).await;
    let masters = pids_of(&pool);
    assert_eq!(masters.len(), 2, "{pool:#}");

    // Round robin over the two masters; each answers from its own workers.
    let mut answered_by = BTreeSet::new();
    let mut slots = BTreeSet::new();
    for _ in 0..12 {
        let hello = get(&mg, "/").await;
        assert_eq!(hello.status, 200, "{:?}", hello.json);
        assert_eq!(hello.json["hello"], "flask");
        let master = hello.json["master"].as_i64().expect("master pid") as i32;
        let pid = hello.json["pid"].as_i64().expect("pid") as i32;
        assert!(masters.contains(&master), "{master} not in {masters:?}");
        assert_ne!(pid, master, "a gunicorn worker answers, not the master");
        seen.add([pid]);
        answered_by.insert(master);
        slots.insert(hello.json["worker"].as_str().unwrap_or("").to_string());
    }
    assert_eq!(answered_by, masters, "both masters take traffic");
    assert_eq!(slots, BTreeSet::from(["0".to_string(), "1".to_string()]));

    let echo = call(&mg, Method::POST, "/echo", None, r#"{"n": 7}"#).await;
    assert_eq!(echo.status, 200);
    assert_eq!(echo.json["you_sent"], json!({"n": 7}));

    // Stopping moongate stops the masters and, through them, their workers.
    let all = seen.pids();
    stop_and_check_gone(&mut mg, &all).await;
}

/// examples/todo/uwsgi.toml: the todo app's WSGI entry under uWSGI as a
/// managed pool, spoken to over the uwsgi protocol, the file used as it
/// stands (beside a `[server]` file, its data file moved).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_todo_app_under_uwsgi_runs_as_a_managed_pool() {
    let found = std::process::Command::new("uwsgi")
        .arg("--version")
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        found,
        "uwsgi is not installed: run ./test.sh (it installs uwsgi-core and uwsgi-plugin-python3)"
    );
    let data = tempfile::tempdir().expect("data dir");
    let db = data.path().join("todo.db");
    let prefix = tempfile::tempdir().expect("prefix dir");
    std::os::unix::fs::symlink(repo("examples"), prefix.path().join("examples"))
        .expect("link examples");
    let dir = prefix.path().join("conf.d");
    std::fs::create_dir(&dir).expect("conf dir");
    let example = std::fs::read_to_string(repo("examples/todo/uwsgi.toml")).expect("example");
    assert!(example.contains("TODO_DB=var/todo.db"), "{example}");
    let example = example.replace("TODO_DB=var/todo.db", &format!("TODO_DB={}", db.display()));
    std::fs::write(dir.join("10-todo.toml"), example).expect("write example");
    std::fs::write(
        dir.join("00-server.toml"),
        "[server]\nlisten = [\"127.0.0.1:0\"]\nworkers = 2\naccess_log = \"off\"\n\n[admin]\nlisten = \"127.0.0.1:0\"\n",
    )
    .expect("write server");

    let seen = Leftovers::default();
    let mut mg = tokio::task::block_in_place(|| Moongate::start_at(prefix, dir));
    let pool = wait_ready(&mg, "todo", 2, &seen).await;
    assert_eq!(pids_of(&pool).len(), 2, "two uWSGI masters: {pool:#}");

    let added = call(
        &mg,
        Method::POST,
        "/todos",
        None,
        r#"{"title": "buy milk"}"#,
    )
    .await;
    assert_eq!(added.status, StatusCode::CREATED, "{:?}", added.json);
    let id = added.json["id"].as_i64().expect("id");
    let list = get(&mg, "/todos").await;
    assert_eq!(list.status, StatusCode::OK);
    assert_eq!(titles(&list.json), ["buy milk"]);
    let path = format!("/todos/{id}");
    let done = call(&mg, Method::PATCH, &path, None, r#"{"done": true}"#).await;
    assert_eq!(done.json["done"], true, "{:?}", done.json);
    let bad = call(&mg, Method::POST, "/todos", None, "not json").await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST, "{:?}", bad.json);
    assert!(bad.json["error"].is_string());
    let gone_todo = call(&mg, Method::DELETE, &path, None, "").await;
    assert_eq!(gone_todo.status, StatusCode::NO_CONTENT);
    assert_eq!(get(&mg, &path).await.status, StatusCode::NOT_FOUND);
    assert!(db.exists(), "the app wrote its data file");

    let all = seen.pids();
    stop_and_check_gone(&mut mg, &all).await;
}

/// examples/grpc/grpc.toml as it stands: the echo.Echo service (grpcio) as
/// a managed pool behind `protocol = "grpc"`, guarded by check.lua on the
/// caller's `x-api-key` metadata; every kind of call from a real gRPC
/// client, over h2c and over TLS (ALPN h2).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_grpc_echo_service_runs_behind_a_metadata_check() {
    let found = std::process::Command::new("python3")
        .args(["-c", "import grpc"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        found,
        "python3 cannot import grpc: run ./test.sh (it installs grpcio)"
    );
    let prefix = tempfile::tempdir().expect("prefix dir");
    std::os::unix::fs::symlink(repo("examples"), prefix.path().join("examples"))
        .expect("link examples");
    let dir = prefix.path().join("conf.d");
    std::fs::create_dir(&dir).expect("conf dir");
    let ck = rcgen::generate_simple_self_signed(vec!["grpc.test".to_string()])
        .expect("generate certificate");
    let (cert, key) = (
        prefix.path().join("grpc.pem"),
        prefix.path().join("grpc.key"),
    );
    std::fs::write(&cert, ck.cert.pem()).expect("write cert");
    std::fs::write(&key, ck.signing_key.serialize_pem()).expect("write key");
    let example = std::fs::read_to_string(repo("examples/grpc/grpc.toml")).expect("example");
    std::fs::write(dir.join("30-grpc.toml"), example).expect("write example");
    std::fs::write(
        dir.join("00-server.toml"),
        format!(
            r#"[server]
listen = ["127.0.0.1:0"]
workers = 2
access_log = "off"

[[server.tls]]
listen = "127.0.0.1:0"
certs = [{{ cert = "{}", key = "{}" }}]
alpn = ["h2"]

[admin]
listen = "127.0.0.1:0"
"#,
            cert.display(),
            key.display()
        ),
    )
    .expect("write server");
    let ca = cert.display().to_string();

    let seen = Leftovers::default();
    let mut mg = tokio::task::block_in_place(|| Moongate::start_at(prefix, dir));
    let pool = wait_ready(&mg, "echo", 2, &seen).await;
    assert_eq!(pids_of(&pool).len(), 2, "two echo servers: {pool:#}");
    let h2c = mg.http[0].to_string();
    // the key check.lua accepts, plus more arguments
    let key =
        |more: &[&'static str]| [&["--metadata", "x-api-key=demo-grpc-key"][..], more].concat();

    // The Lua check: no key is 401 -> UNAUTHENTICATED, a wrong one 403 ->
    // PERMISSION_DENIED, both as gRPC statuses.
    let none = grpc_call(&h2c, "Unary", &["--payload", "hi"]).await;
    assert_eq!(none["code"], "UNAUTHENTICATED", "{none}");
    let wrong = grpc_call(&h2c, "Unary", &["--metadata", "x-api-key=nope"]).await;
    assert_eq!(wrong["code"], "PERMISSION_DENIED", "{wrong}");

    // Allowed: the service sees the user check.lua set, not the caller's.
    let args = key(&["--metadata", "x-user=mallory", "--payload", "hi"]);
    let unary = grpc_call(&h2c, "Unary", &args).await;
    assert_eq!(unary["code"], "OK", "{unary}");
    assert_eq!(unary["responses"], json!(["hi"]));
    assert_eq!(unary["initial_metadata"]["echo-x-user"], "alice", "{unary}");
    assert_eq!(unary["initial_metadata"]["echo-x-api-key"], "demo-grpc-key");
    assert_eq!(unary["trailing_metadata"]["x-trailer"], "done", "{unary}");

    let stream = grpc_call(&h2c, "ServerStream", &key(&["--payload", "3:abc"])).await;
    assert_eq!(
        stream["responses"],
        json!(["abc", "abc", "abc"]),
        "{stream}"
    );
    let upload = grpc_call(&h2c, "ClientStream", &key(&["--messages", "a,bb,ccc"])).await;
    assert_eq!(upload["responses"], json!(["count=3 bytes=6"]), "{upload}");
    let bidi = grpc_call(&h2c, "Bidi", &key(&["--messages", "1,2,3,4"])).await;
    assert_eq!(bidi["responses"], json!(["1", "2", "3", "4"]), "{bidi}");
    assert_eq!(
        bidi["interleaved"], true,
        "each answer before the next message: {bidi}"
    );
    let failed = grpc_call(&h2c, "Fail", &key(&["--payload", "5:gone"])).await;
    assert_eq!(
        failed["code"], "NOT_FOUND",
        "the service's status: {failed}"
    );
    assert_eq!(failed["details"], "gone");

    // The same over TLS.
    let tls = mg.https[0].to_string();
    let secure = ["--tls-ca", ca.as_str(), "--authority", "grpc.test"];
    let unary = grpc_call(&tls, "Unary", &[&secure[..], &key(&[])[..]].concat()).await;
    assert_eq!(unary["code"], "OK", "{unary}");
    assert_eq!(
        unary["initial_metadata"]["echo-x-forwarded-proto"], "https",
        "{unary}"
    );
    let args = [&secure[..], &key(&["--messages", "x,y"])[..]].concat();
    let bidi = grpc_call(&tls, "Bidi", &args).await;
    assert_eq!(bidi["responses"], json!(["x", "y"]), "{bidi}");
    assert_eq!(bidi["interleaved"], true, "{bidi}");
    let none = grpc_call(&tls, "Unary", &secure).await;
    assert_eq!(none["code"], "UNAUTHENTICATED", "{none}");

    let all = seen.pids();
    stop_and_check_gone(&mut mg, &all).await;
}

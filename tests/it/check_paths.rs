//! Paths in conf.d (issue 11, point 14): a relative path is relative to the
//! directory that holds conf.d (the prefix), wherever moongate is started,
//! and every file a config names must exist when `check` runs and when a
//! reload is asked for. Each test builds a prefix `P` holding `P/conf.d`
//! and the files its relative paths name, and runs moongate from another
//! directory.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::support::{self, Moongate, client};

/// `P/conf.d/00-gw.toml`: every path-valued key, written relative.
const CONF: &str = r#"[server]
listen = ["127.0.0.1:0"]
workers = 1
access_log = "logs/access.log"
pid_file = "run/moongate.pid"

[[server.tls]]
listen = "127.0.0.1:0"
certs = [{ cert = "tls/gw.pem", key = "tls/gw.key" }]

[admin]
listen = "127.0.0.1:0"

[lua]
init = "lua/init.lua"

[[route]]
path = "/static/"
root = "site"

[[route]]
path = "/private/"
root = "site"
policies = [{ use = "api_key", keys_file = "keys.txt" }]

[[route]]
path_exact = "/hello"
lua.content = "lua/hello.lua"
"#;

/// Only `check` gets this far: a managed pool (never started by `check`)
/// whose `dir` is relative.
const WORKERS: &str = r#"
[upstream.app.workers]
command = ["python3", "app.py", "--port", "{port}"]
dir = "app"

[[route]]
path = "/app/"
upstream = "app"
"#;

const KEY: &str = "k-alice";

/// A prefix: `conf.d/00-gw.toml` (`conf`) and every file it names.
struct Prefix {
    dir: tempfile::TempDir,
}

impl Prefix {
    fn new(conf: &str) -> Prefix {
        let dir = tempfile::tempdir().expect("prefix dir");
        let p = Prefix { dir };
        for sub in ["conf.d", "site", "lua", "tls", "app", "logs", "run"] {
            std::fs::create_dir(p.path().join(sub)).expect("prefix subdir");
        }
        let pem =
            rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("certificate");
        p.write("tls/gw.pem", &pem.cert.pem());
        p.write("tls/gw.key", &pem.signing_key.serialize_pem());
        p.write("site/index.html", "<h1>site</h1>\n");
        p.write("keys.txt", &format!("{KEY} alice\n"));
        p.write("lua/init.lua", "greeting = 'hello'\n");
        p.write(
            "lua/hello.lua",
            "ngx.say(greeting, ' from ', ngx.config.prefix())\n",
        );
        p.write("conf.d/00-gw.toml", conf);
        p
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn conf(&self) -> PathBuf {
        self.path().join("conf.d")
    }

    fn write(&self, rel: &str, text: &str) {
        std::fs::write(self.path().join(rel), text).expect("write prefix file");
    }

    /// `moongate check -c P/conf.d`, run from `cwd`.
    fn check_from(&self, cwd: &Path) -> support::CheckRun {
        support::moongate_check_from(cwd, &self.conf())
    }

    /// Starts `moongate run -c P/conf.d` (in P/conf.d, see `start_at`).
    fn start(self) -> Moongate {
        let conf = self.conf();
        Moongate::start_at(self.dir, conf)
    }
}

/// `line:column` of the first `needle` in `text` (1-based).
fn place_of(text: &str, needle: &str) -> String {
    let at = text
        .find(needle)
        .unwrap_or_else(|| panic!("{needle} not in the conf"));
    let line = text[..at].matches('\n').count() + 1;
    let column = at - text[..at].rfind('\n').map_or(0, |nl| nl + 1) + 1;
    format!("{line}:{column}")
}

/// `moongate check -c P/conf.d` from another directory, and `-c conf.d`
/// from P itself: both OK, and the OK line says where paths start.
#[test]
fn check_resolves_relative_paths_against_the_prefix_from_anywhere() {
    let gw = Prefix::new(&format!("{CONF}{WORKERS}"));
    let elsewhere = tempfile::tempdir().expect("another dir");
    for run in [
        gw.check_from(elsewhere.path()),
        support::moongate_check_from(gw.path(), Path::new("conf.d")),
    ] {
        assert_eq!(run.code, Some(0), "{}{}", run.stdout, run.stderr);
        let from = format!("relative paths from {})", gw.path().display());
        assert!(run.stdout.contains(&from), "{}", run.stdout);
    }
}

/// Each file a config names, missing from the prefix: `check` exits 1 at
/// the key's file:line:column with the resolved path and the system's
/// reason. It runs from a directory where every relative path *would*
/// resolve, so a lookup against the working directory would pass.
#[test]
fn check_names_each_missing_file_at_its_key() {
    let conf = format!("{CONF}{WORKERS}");
    let cwd = Prefix::new(&conf);
    let cases = [
        ("root", "site", "\"site\"", true),
        ("keys_file", "keys.txt", "\"keys.txt\"", false),
        ("lua.content", "lua/hello.lua", "\"lua/hello.lua\"", false),
        ("init", "lua/init.lua", "\"lua/init.lua\"", false),
        ("cert", "tls/gw.pem", "\"tls/gw.pem\"", false),
        ("key", "tls/gw.key", "\"tls/gw.key\"", false),
        ("dir", "app", "\"app\"", true),
    ];
    for (key, rel, written, is_dir) in cases {
        let gw = Prefix::new(&conf);
        let gone = gw.path().join(rel);
        if is_dir {
            std::fs::remove_dir_all(&gone).expect("remove dir");
        } else {
            std::fs::remove_file(&gone).expect("remove file");
        }
        let run = gw.check_from(cwd.path());
        assert_eq!(run.code, Some(1), "{key}: {}{}", run.stdout, run.stderr);
        let wanted = format!(
            "{}:{}: {key} {}: No such file or directory",
            gw.conf().join("00-gw.toml").display(),
            place_of(&conf, written),
            gone.display()
        );
        assert_eq!(run.stderr.trim_end(), wanted, "{key}");
        assert!(!run.stdout.contains("OK"), "{}", run.stdout);
    }
}

/// A file that exists but is not what the key wants is refused too.
#[test]
fn check_refuses_a_directory_for_a_file_and_a_file_for_a_directory() {
    let cases = [
        (
            "keys_file = \"keys.txt\"",
            "keys_file = \"site\"",
            "keys_file",
            "site",
            "is a directory, not a file",
        ),
        (
            "root = \"site\"",
            "root = \"keys.txt\"",
            "root",
            "keys.txt",
            "is not a directory",
        ),
    ];
    for (from, to, key, rel, why) in cases {
        let gw = Prefix::new(&CONF.replace(from, to));
        let run = gw.check_from(gw.path());
        assert_eq!(run.code, Some(1), "{}", run.stdout);
        let wanted = format!("{key} {}: {why}", gw.path().join(rel).display());
        assert!(run.stderr.contains(&wanted), "{}", run.stderr);
    }
}

/// Polls `GET url` until `ok` accepts the (status, body); panics after 10 s.
async fn wait_for(url: &str, ok: impl Fn(u16, &str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let resp = client().get(url).send().await.expect("GET");
        let status = resp.status().as_u16();
        let body = resp.text().await.expect("body");
        if ok(status, &body) {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "{url}: last answer {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn get_with_key(url: &str, key: Option<&str>) -> u16 {
    let mut req = client().get(url);
    if let Some(key) = key {
        req = req.header("x-api-key", key);
    }
    req.send().await.expect("GET").status().as_u16()
}

/// A server started in another directory serves what the relative paths
/// name: static root, key file, Lua script and init, certificate, access
/// log, pid file; `ngx.config.prefix()` is the prefix, and an edit of a
/// script under P/lua is picked up live.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_started_elsewhere_serves_from_the_prefix() {
    let gw = Prefix::new(CONF);
    let prefix = gw.path().to_path_buf();
    let mg = tokio::task::block_in_place(|| gw.start());
    assert_eq!(mg.https.len(), 1, "the TLS listener loaded tls/gw.pem");

    let site = |s: u16, b: &str| s == 200 && b == "<h1>site</h1>\n";
    wait_for(&mg.url("/static/index.html"), site).await;
    let private = mg.url("/private/index.html");
    assert_eq!(get_with_key(&private, None).await, 401);
    assert_eq!(get_with_key(&private, Some("nope")).await, 403);
    assert_eq!(get_with_key(&private, Some(KEY)).await, 200);
    let hello = format!("hello from {}/\n", prefix.display());
    wait_for(&mg.url("/hello"), |s, b| s == 200 && b == hello).await;

    let pid = std::fs::read_to_string(prefix.join("run/moongate.pid")).expect("pid file");
    assert_eq!(pid.trim(), mg.pid().to_string());
    let deadline = Instant::now() + Duration::from_secs(5);
    while !std::fs::read_to_string(prefix.join("logs/access.log"))
        .unwrap_or_default()
        .contains("/hello")
    {
        assert!(
            Instant::now() < deadline,
            "no /hello line in P/logs/access.log"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // The script watcher follows the same rule: P/lua, not ./lua.
    std::fs::write(prefix.join("lua/hello.lua"), "ngx.say('edited')\n").expect("edit");
    wait_for(&mg.url("/hello"), |s, b| s == 200 && b == "edited\n").await;
}

/// A reload (file edit, then `POST /reload`) naming a key file that does
/// not exist is refused with its place and path; the old configuration
/// keeps serving. Once the file is there, the same configuration loads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_naming_a_missing_keys_file_is_refused() {
    let gw = Prefix::new(CONF);
    let prefix = gw.path().to_path_buf();
    let mg = tokio::task::block_in_place(|| gw.start());
    let private = mg.url("/private/index.html");
    assert_eq!(get_with_key(&private, Some(KEY)).await, 200);

    let broken = CONF.replace("keys.txt", "new-keys.txt");
    let wanted = format!(
        "{}:{}: keys_file {}: No such file or directory",
        mg.conf_dir().join("00-gw.toml").display(),
        place_of(&broken, "\"new-keys.txt\""),
        prefix.join("new-keys.txt").display()
    );
    let skip = mg.log_lines().len();
    mg.write_conf("00-gw.toml", &broken);
    let line = tokio::task::block_in_place(|| {
        mg.wait_log_after(skip, "reload failed", Duration::from_secs(10))
    });
    assert!(line.contains(&wanted), "wanted {wanted} in {line}");

    // Still generation 1, still the old key file.
    assert_eq!(get_with_key(&private, Some(KEY)).await, 200);
    let st = mg.status().await;
    assert_eq!(st["generation"], 1, "{st}");
    assert_eq!(st["reload"]["last"]["ok"], false, "{st}");
    assert_eq!(st["reload"]["last"]["error"], wanted.as_str(), "{st}");
    let (code, body) = mg.admin_reload().await;
    assert_eq!(code, 422, "{body}");
    assert_eq!(body["error"], wanted.as_str(), "{body}");

    // The file appears: the same configuration now loads, with its keys.
    std::fs::write(prefix.join("new-keys.txt"), "k-bob bob\n").expect("keys");
    let (code, body) = mg.admin_reload().await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(get_with_key(&private, Some("k-bob")).await, 200);
    assert_eq!(get_with_key(&private, Some(KEY)).await, 403);
}

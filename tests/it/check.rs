//! `moongate check` and a failed `moongate run`: every config error names
//! file:line:column, in plain words, and exits 1.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support;

const SERVER: &str = "[server]\nlisten = [\"127.0.0.1:0\"]\nworkers = 2\naccess_log = \"off\"\n";

const UPSTREAM_APP: &str = "[upstream.app]\nservers = [{ addr = \"127.0.0.1:9\" }]\n";

/// A conf.d made of `files`.
fn conf_dir(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("conf dir");
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).expect("write conf");
    }
    dir
}

/// Runs `check` on `files`; asserts exit 1 and stderr starting with
/// `DIR/file:line:column:`; returns stderr.
fn check_fails_at(files: &[(&str, &str)], file: &str, line: usize, column: usize) -> String {
    let dir = conf_dir(files);
    let run = support::moongate_check(dir.path());
    assert_eq!(
        run.code,
        Some(1),
        "stdout {} stderr {}",
        run.stdout,
        run.stderr
    );
    let place = format!("{}:{line}:{column}:", dir.path().join(file).display());
    assert!(
        run.stderr.starts_with(&place),
        "wanted {place}, got {}",
        run.stderr
    );
    assert!(!run.stdout.contains("OK"), "{}", run.stdout);
    run.stderr
}

/// The default gateway (the repository's conf.d, what `cargo run --release`
/// serves) is valid, its rate-limit zone and policies included.
#[test]
fn the_default_conf_d_is_ok() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("conf.d");
    let run = support::moongate_check(&dir);
    assert_eq!(run.code, Some(0), "{}{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("configuration OK"), "{}", run.stdout);
}

#[test]
fn valid_conf_d_is_ok() {
    let root = tempfile::tempdir().expect("static root");
    let routes = format!(
        "[[route]]\npath = \"/api/\"\nupstream = \"app\"\nrewrite = {{ from = \"^/api/(.*)$\", to = \"/$1\" }}\n\n\
         [[route]]\npath = \"/static/\"\nroot = \"{}\"\nexpires = \"30d\"\n",
        root.path().display()
    );
    let dir = conf_dir(&[
        ("00-server.toml", SERVER),
        ("10-app.toml", UPSTREAM_APP),
        ("20-routes.toml", &routes),
    ]);
    let run = support::moongate_check(dir.path());
    assert_eq!(run.code, Some(0), "stderr {}", run.stderr);
    let ok = run
        .stdout
        .lines()
        .find(|l| l.contains("OK"))
        .unwrap_or_else(|| panic!("no OK line in {:?}", run.stdout));
    assert!(ok.contains("3 files"), "{ok}");
    assert!(ok.contains("2 routes"), "{ok}");
    assert!(ok.contains("1 upstreams"), "{ok}");
    assert_eq!(run.stderr, "");
}

#[test]
fn unknown_key_names_file_line_and_column() {
    let x = "[upstream.app]\nservers = [\n  { addr = \"127.0.0.1:8001\" },\n  { addr = \"127.0.0.1:8002\", wieght = 2 },\n]\n";
    let err = check_fails_at(
        &[("00-server.toml", SERVER), ("10-x.toml", x)],
        "10-x.toml",
        4,
        30,
    );
    assert!(err.contains("unknown key `wieght`"), "{err}");
    assert!(err.contains("weight"), "suggests the known keys: {err}");

    // A top-level typo in [server].
    let server = "[server]\nlisten = [\"127.0.0.1:0\"]\nkeepalive_timout = \"5s\"\n";
    let err = check_fails_at(&[("10-x.toml", server)], "10-x.toml", 3, 1);
    assert!(err.contains("keepalive_timout"), "{err}");

    // A wrong type.
    let server = "[server]\nlisten = [\"127.0.0.1:0\"]\nworkers = \"many\"\n";
    check_fails_at(&[("10-x.toml", server)], "10-x.toml", 3, 11);
}

#[test]
fn undefined_upstream_names_the_route() {
    let routes = "# routes\n\n[[route]]\npath = \"/\"\nupstream = \"nope\"\n";
    let err = check_fails_at(
        &[
            ("00-server.toml", SERVER),
            ("10-app.toml", UPSTREAM_APP),
            ("20-routes.toml", routes),
        ],
        "20-routes.toml",
        5,
        12,
    );
    assert!(err.contains("`nope`"), "{err}");
}

#[test]
fn upstream_defined_twice_names_both_files() {
    let again = "\n[upstream.app]\nservers = [{ addr = \"127.0.0.1:10\" }]\n";
    let dir = conf_dir(&[
        ("00-server.toml", SERVER),
        ("10-app.toml", UPSTREAM_APP),
        ("30-more.toml", again),
    ]);
    let run = support::moongate_check(dir.path());
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    let second = format!("{}:2:1:", dir.path().join("30-more.toml").display());
    let first = format!("{}:1:1", dir.path().join("10-app.toml").display());
    assert!(run.stderr.starts_with(&second), "{}", run.stderr);
    assert!(run.stderr.contains(&first), "{}", run.stderr);
    assert!(run.stderr.contains("`app`"), "{}", run.stderr);
}

#[test]
fn a_bad_targeted_cache_field_names_its_place() {
    let zone = "[cache.pages]\nmemory = \"1MiB\"\ntargeted = [\"CDN-Cache-Control\", \"\"]\n";
    let text = format!("{SERVER}{zone}");
    let err = check_fails_at(&[("00-a.toml", &text)], "00-a.toml", 7, 34);
    assert!(err.contains("empty field name in `targeted`"), "{err}");
}

#[test]
fn bad_regex_names_file_and_line() {
    let routes = "[[route]]\nhost = \"*\"\npath_regex = \"^/(v1\"\nupstream = \"app\"\n";
    let err = check_fails_at(
        &[
            ("00-server.toml", SERVER),
            ("10-app.toml", UPSTREAM_APP),
            ("20-routes.toml", routes),
        ],
        "20-routes.toml",
        3,
        14,
    );
    assert!(err.contains("regular expression"), "{err}");

    let rewrite =
        "[[route]]\npath = \"/\"\nupstream = \"app\"\nrewrite = { from = \"([a-\", to = \"/\" }\n";
    let err = check_fails_at(
        &[
            ("00-server.toml", SERVER),
            ("10-app.toml", UPSTREAM_APP),
            ("20-routes.toml", rewrite),
        ],
        "20-routes.toml",
        4,
        20,
    );
    assert!(err.contains("regular expression"), "{err}");
}

#[test]
fn missing_certificate_names_file_line_and_the_cert() {
    let cert_dir = tempfile::tempdir().expect("cert dir");
    let cert = cert_dir.path().join("nowhere.pem");
    let key = cert_dir.path().join("nowhere.key");
    let tls = format!(
        "[[server.tls]]\nlisten = \"127.0.0.1:0\"\ncerts = [{{ cert = \"{}\", key = \"{}\" }}]\n",
        cert.display(),
        key.display()
    );
    // At the `cert` value, naming the path and the system's reason.
    let err = check_fails_at(
        &[("00-server.toml", SERVER), ("10-x.toml", &tls)],
        "10-x.toml",
        3,
        19,
    );
    let wanted = format!("cert {}: No such file or directory", cert.display());
    assert!(err.contains(&wanted), "wanted {wanted} in {err}");
}

/// Two routes with the same host, path and a method in common: the second
/// could never be chosen, so `check` refuses it and names both places.
/// Splitting one path between routes by method stays fine.
#[test]
fn a_duplicate_route_names_both_places() {
    let reads = "[[route]]\npath = \"/api\"\nmethods = [\"GET\", \"POST\"]\nupstream = \"app\"\n";
    let again = "# the same prefix again, for GET\n\n[[route]]\nhost = \"*\"\npath = \"/api\"\nmethods = [\"GET\"]\nupstream = \"app\"\n";
    let dir = conf_dir(&[
        ("00-server.toml", SERVER),
        ("10-a.toml", &format!("{UPSTREAM_APP}\n{reads}")),
        ("20-b.toml", again),
    ]);
    let run = support::moongate_check(dir.path());
    assert_eq!(run.code, Some(1), "{}{}", run.stdout, run.stderr);
    assert_eq!(
        run.stderr.trim_end(),
        format!(
            "{}:3:1: route duplicates {}:4:1 (same host \"*\", path \"/api\", methods GET)",
            dir.path().join("20-b.toml").display(),
            dir.path().join("10-a.toml").display()
        )
    );

    let writes = again.replace("[\"GET\"]", "[\"PUT\", \"DELETE\"]");
    std::fs::write(dir.path().join("20-b.toml"), writes).expect("rewrite conf");
    let run = support::moongate_check(dir.path());
    assert_eq!(run.code, Some(0), "{}", run.stderr);
}

/// Runs `moongate run -c dir` until it exits (killed after `wait`);
/// returns its exit code and stderr.
fn run_until_exit(dir: &Path, wait: Duration) -> (Option<i32>, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_moongate"))
        .arg("run")
        .arg("-c")
        .arg(dir)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn moongate");
    let deadline = Instant::now() + wait;
    let code = loop {
        if let Ok(Some(status)) = child.try_wait() {
            break status.code();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut stderr);
    }
    (code, stderr)
}

#[test]
fn run_with_a_broken_conf_d_exits_1_with_the_place() {
    let broken = "[[route]]\npath = \"/\"\nupstream = \"ghost\"\n";
    let dir = conf_dir(&[("00-server.toml", SERVER), ("10-x.toml", broken)]);
    let (code, stderr) = run_until_exit(dir.path(), Duration::from_secs(10));
    assert_eq!(code, Some(1), "stderr: {stderr}");
    let place = format!("{}:3:12:", dir.path().join("10-x.toml").display());
    assert!(stderr.contains(&place), "wanted {place} in {stderr}");
    assert!(stderr.contains("`ghost`"), "{stderr}");
    assert!(!stderr.contains("listening on"), "{stderr}");
    assert!(!stderr.contains("moongate ready"), "{stderr}");
}

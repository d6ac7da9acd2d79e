//! `[upstream.NAME.workers]` → [`Workers`]: the command, how many, where
//! they run, when they are ready and when they are recycled. Nothing is
//! started here; a command that does not exist is found when the pool
//! starts (and reported there), since a program on the `PATH` may be
//! installed later. The working directory must exist; it is the prefix
//! (the directory holding conf.d) unless `dir` says otherwise.

use std::time::Duration;

use toml::Spanned;

use super::paths::Paths;
use crate::config::error::{ConfigError, Source};
use crate::config::file::RawWorkers;
use crate::config::model::{Protocol, Workers};
use crate::config::units::parse_duration;

/// The most workers one pool may run.
const MAX_COUNT: i64 = 1024;

/// Validates one workers table of upstream `upstream`, which speaks
/// `protocol` (with its FastCGI `root`, if any).
pub(super) fn workers(
    src: &Source<'_>,
    upstream: &str,
    def: &Spanned<RawWorkers>,
    (protocol, root): (Protocol, Option<&std::path::Path>),
    paths: &mut Paths,
) -> Result<Workers, ConfigError> {
    let raw = def.get_ref();
    let command = raw.command.get_ref();
    if command.first().is_none_or(|c| c.trim().is_empty()) {
        let message = format!(
            "`command` of [upstream.{upstream}.workers] is empty; give the program and its arguments, like [\"python3\", \"app.py\", \"--unix\", \"{{socket}}\"]"
        );
        return Err(src.err(raw.command.span(), message));
    }
    let listens = command
        .iter()
        .any(|a| a.contains("{socket}") || a.contains("{port}"));
    if !listens {
        let message = "`command` must tell each worker where to listen with `{socket}` (a unix socket moongate owns) or `{port}` (a free loopback port)";
        return Err(src.err(raw.command.span(), message));
    }
    let count = match &raw.count {
        None => auto_count(),
        Some(v) => count(v.get_ref()).map_err(|m| src.err(v.span(), m))?,
    };
    if let Some(ready) = &raw.ready
        && !ready.get_ref().starts_with('/')
    {
        let message = format!(
            "`ready` is a path that answers 2xx once a worker can take traffic, like \"/healthz\"; \"{}\" does not start with /",
            ready.get_ref()
        );
        return Err(src.err(ready.span(), message));
    }
    for key in raw.env.keys() {
        if key.is_empty() || key.contains('=') || key.contains('\0') {
            let message = format!("environment variable name \"{key}\" is not valid");
            return Err(src.err(def.span(), message));
        }
    }
    let (backoff_min, backoff_max) = match &raw.restart_backoff {
        None => (Duration::from_millis(100), Duration::from_secs(10)),
        Some(b) => backoff(b.get_ref()).map_err(|m| src.err(b.span(), m))?,
    };
    let dir = match &raw.dir {
        Some(d) if d.get_ref().is_empty() => {
            let message = "`dir` is empty; leave it out to run the workers in the directory that holds conf.d";
            return Err(src.err(d.span(), message));
        }
        Some(d) => paths.dir(src.place(d.span()), "dir", d.get_ref()),
        None => paths.prefix().to_path_buf(),
    };
    let dur = |v: &Option<Spanned<crate::config::units::Dur>>, default: Duration| {
        v.as_ref().map_or(default, |d| d.get_ref().0)
    };
    Ok(Workers {
        command: command.clone(),
        count,
        dir,
        env: raw.env.clone(),
        ready: raw.ready.as_ref().map(|r| r.get_ref().clone()),
        start_timeout: dur(&raw.start_timeout, Duration::from_secs(30)),
        max_requests: raw.max_requests.as_ref().map_or(0, |m| *m.get_ref()),
        max_rss: raw.max_rss.as_ref().map(|m| m.get_ref().0),
        backoff_min,
        backoff_max,
        stop_timeout: dur(&raw.stop_timeout, Duration::from_secs(10)),
        protocol,
        root: root.map(std::path::Path::to_path_buf),
    })
}

/// gunicorn's advice: 2 × cores + 1.
fn auto_count() -> usize {
    2 * std::thread::available_parallelism().map_or(1, |n| n.get()) + 1
}

fn count(value: &toml::Value) -> Result<usize, String> {
    match value {
        toml::Value::String(s) if s == "auto" => Ok(auto_count()),
        toml::Value::Integer(n) if (1..=MAX_COUNT).contains(n) => Ok(*n as usize),
        toml::Value::Integer(n) => Err(format!(
            "`count` must be between 1 and {MAX_COUNT} (found {n})"
        )),
        other => Err(format!(
            "`count` is a number of workers or \"auto\" (2 × cores + 1), not {other}"
        )),
    }
}

/// "MIN..MAX", or one duration for both.
fn backoff(text: &str) -> Result<(Duration, Duration), String> {
    let (min, max) = match text.split_once("..") {
        Some((a, b)) => (parse_duration(a.trim())?, parse_duration(b.trim())?),
        None => {
            let d = parse_duration(text.trim())?;
            (d, d)
        }
    };
    if min.is_zero() || min > max {
        return Err(format!(
            "`restart_backoff` is \"MIN..MAX\" with 0 < MIN <= MAX, like \"100ms..10s\" (found \"{text}\")"
        ));
    }
    Ok((min, max))
}

#[cfg(test)]
mod tests {
    use crate::config::validate::validate;
    use std::path::{Path, PathBuf};

    /// Validates a conf.d whose prefix (the directory holding it) is `prefix`.
    fn check_in(prefix: &Path, workers: &str) -> Result<crate::config::Config, String> {
        let text = format!(
            "[server]\nlisten = [\"127.0.0.1:0\"]\n[upstream.app.workers]\n{workers}\n[[route]]\npath = \"/\"\nupstream = \"app\"\n"
        );
        validate(&[(PathBuf::from("w.toml"), text)], prefix.to_path_buf())
            .map_err(|e| e.to_string())
    }

    fn check(workers: &str) -> Result<crate::config::Config, String> {
        check_in(Path::new(env!("CARGO_MANIFEST_DIR")), workers)
    }

    #[test]
    fn workers_run_in_the_prefix_unless_dir_says_otherwise() {
        let prefix = tempfile::tempdir().unwrap();
        std::fs::create_dir(prefix.path().join("app")).unwrap();
        let dir_of = |table: &str| {
            let config = check_in(prefix.path(), table).unwrap();
            config.upstreams["app"].workers.clone().unwrap().dir
        };
        let command = "command = [\"python3\", \"app/app.py\", \"{port}\"]";
        assert_eq!(dir_of(command), prefix.path());
        assert_eq!(
            dir_of(&format!("{command}\ndir = \"app\"")),
            prefix.path().join("app")
        );
        assert_eq!(
            dir_of(&format!("{command}\ndir = \"/tmp\"")),
            Path::new("/tmp")
        );
        let err = check_in(prefix.path(), &format!("{command}\ndir = \"nope\"")).unwrap_err();
        assert_eq!(
            err,
            format!(
                "w.toml:5:7: dir {}: No such file or directory",
                prefix.path().join("nope").display()
            )
        );
        let err = check_in(prefix.path(), &format!("{command}\ndir = \"\"")).unwrap_err();
        assert!(err.starts_with("w.toml:5:7: `dir` is empty"), "{err}");
    }

    #[test]
    fn a_full_table_is_read_with_its_defaults() {
        let config = check(
            "command = [\"python3\", \"app.py\", \"{socket}\"]\ncount = 3\nenv = { A = \"1\" }\nready = \"/healthz\"\nrestart_backoff = \"50ms..2s\"\nmax_rss = \"200MiB\"",
        )
        .unwrap();
        let up = &config.upstreams["app"];
        let w = up.workers.as_ref().unwrap();
        assert_eq!(w.count, 3);
        assert_eq!(w.command[2], "{socket}");
        assert_eq!(w.env["A"], "1");
        assert_eq!(w.ready.as_deref(), Some("/healthz"));
        assert_eq!(w.backoff_min, std::time::Duration::from_millis(50));
        assert_eq!(w.backoff_max, std::time::Duration::from_secs(2));
        assert_eq!(w.max_rss, Some(200 * 1024 * 1024));
        assert_eq!(w.max_requests, 0);
        assert!(up.servers.is_empty());
        assert_eq!(
            up.retries, 1,
            "managed pools retry in-flight requests by default"
        );
    }

    #[test]
    fn auto_is_two_per_core_plus_one() {
        let config = check("command = [\"app\", \"{port}\"]\ncount = \"auto\"").unwrap();
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        assert_eq!(
            config.upstreams["app"].workers.as_ref().unwrap().count,
            2 * cores + 1
        );
    }

    #[test]
    fn bad_tables_are_refused_with_their_place() {
        let cases = [
            ("command = []", "is empty"),
            ("command = [\"app\"]", "{socket}"),
            (
                "command = [\"app\", \"{port}\"]\ncount = 0",
                "between 1 and",
            ),
            (
                "command = [\"app\", \"{port}\"]\ncount = \"many\"",
                "\"auto\"",
            ),
            (
                "command = [\"app\", \"{port}\"]\nready = \"healthz\"",
                "does not start with /",
            ),
            (
                "command = [\"app\", \"{port}\"]\nrestart_backoff = \"10s..1s\"",
                "MIN <= MAX",
            ),
            ("command = [\"app\", \"{port}\"]\ncomand = 1", "comand"),
        ];
        for (table, wanted) in cases {
            let err = check(table).unwrap_err();
            assert!(err.contains(wanted), "{table}: {err}");
            assert!(err.starts_with("w.toml:"), "{table}: {err}");
        }
    }

    fn check_in_text(text: &str) -> Result<crate::config::Config, crate::config::ConfigError> {
        validate(&[(PathBuf::from("w.toml"), text.to_string())], "/".into())
    }

    #[test]
    fn servers_and_workers_together_are_refused() {
        let text = "[server]\nlisten = [\"127.0.0.1:0\"]\n[upstream.app]\nservers = [{ addr = \"127.0.0.1:1\" }]\n[upstream.app.workers]\ncommand = [\"app\", \"{port}\"]\n";
        let err = check_in_text(text).unwrap_err();
        assert!(err.to_string().contains("both `servers`"), "{err}");
        let text = "[server]\nlisten = [\"127.0.0.1:0\"]\n[upstream.app]\nretries = 2\n";
        let err = check_in_text(text).unwrap_err();
        assert!(err.to_string().contains("needs `servers"), "{err}");
    }

    #[test]
    fn same_processes_ignores_count_only() {
        let a = check("command = [\"app\", \"{port}\"]\ncount = 2").unwrap();
        let b = check("command = [\"app\", \"{port}\"]\ncount = 4").unwrap();
        let c = check("command = [\"app\", \"{port}\"]\ncount = 2\nenv = { V = \"2\" }").unwrap();
        let wa = a.upstreams["app"].workers.clone().unwrap();
        let wb = b.upstreams["app"].workers.clone().unwrap();
        let wc = c.upstreams["app"].workers.clone().unwrap();
        assert!(wa.same_processes(&wb));
        assert_ne!(wa, wb);
        assert!(!wa.same_processes(&wc));
    }
}

//! conf.d → a validated [`Config`]: parse, merge, validate; never serve.
//!
//! Every `*.toml` file of the directory is read in file-name order, deserialized into the
//! raw file types (unknown keys are errors), merged, and validated into the model that the
//! server compiles into a snapshot. Every error carries `file:line:column` and says what is
//! wrong in plain words, so `moongate check` and a failed reload can show it as is.
//!
//! A relative path in conf.d is relative to the *prefix*, the directory that holds conf.d
//! (see `validate::paths`); the model holds only absolute paths. The files and directories
//! the configuration names (scripts, key files, certificates, static roots, worker
//! directories) must exist, which is checked last. Nothing here panics on input, binds a
//! socket or parses a certificate: later stages do that and report with
//! [`ConfigError::at`] against the [`Place`]s kept in the model.
//!
//! Layout:
//! - `file`: the TOML schema as serde types (one file).
//! - `units`: durations and sizes.
//! - `error`: [`ConfigError`], [`Place`], byte span → line:column.
//! - `explain`: toml/serde errors reworded for operators.
//! - `validate`: merging and cross-file checks; beside it `server`, `listeners`, `upstream`,
//!   `route` and `matchers` hold the rules for each table.
//! - `model`: the validated types.

// Alphabetical, so rustfmt leaves the order alone with or without `reorder_modules`.
pub mod error;
mod explain;
pub mod file;
pub mod model;
pub mod units;
mod validate;

use std::path::{Path, PathBuf};

pub use error::{ConfigError, Place};
pub use model::{
    AccessLog, Admin, Balance, CacheDisk, CacheZone, CertPair, Config, Health, HealthRequest,
    LimitKind, LimitScope, LimitZone, Listen, LuaSettings, OnRedisError, PathMatch, PeerAddr,
    Policy, Protocol, RedisCa, RedisSettings, RedisTarget, Rewrite, Route, RouteLua, RouteTarget,
    Script, ScriptSource, Server, ServerPeer, SharedDictDef, StatusMatch, TlsListener,
    TracingSettings, Upstream, UpstreamTls,
};
pub use units::{parse_duration, parse_size};

/// Loads every `*.toml` file in `dir`, merged in file-name order; relative paths in them
/// are relative to the directory that holds `dir`.
///
/// Hidden files (names starting with `.`, such as editors' lock files) are skipped. A
/// directory without any `*.toml` file is an error naming the directory, since serving
/// defaults from an empty or mistyped `-c` path would hide the mistake.
pub fn load_dir(dir: &Path) -> Result<Config, ConfigError> {
    let whole = || Place::whole(dir);
    let entries = std::fs::read_dir(dir)
        .map_err(|e| ConfigError::at(&whole(), format!("cannot read the config directory: {e}")))?;
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| {
            ConfigError::at(&whole(), format!("cannot list the config directory: {e}"))
        })?;
        let name = entry.file_name();
        let Some(text_name) = name.to_str() else {
            continue;
        };
        // `metadata` follows symlinks, so a linked-in file counts like a plain one.
        let is_file = std::fs::metadata(entry.path()).is_ok_and(|m| m.is_file());
        if is_file && text_name.ends_with(".toml") && !text_name.starts_with('.') {
            names.push(name);
        }
    }
    if names.is_empty() {
        let message = "no *.toml files in this directory; is it the right conf.d?";
        return Err(ConfigError::at(&whole(), message));
    }
    names.sort();
    let mut files = Vec::with_capacity(names.len());
    for name in names {
        let path = dir.join(name);
        let text = read_text(&path)?;
        files.push((path, text));
    }
    validate::validate(&files, validate::paths::prefix_of(dir)?)
}

/// Reads a file as UTF-8, placing an encoding error at the first bad byte.
fn read_text(path: &Path) -> Result<String, ConfigError> {
    let bytes = std::fs::read(path)
        .map_err(|e| ConfigError::at(&Place::whole(path), format!("cannot read the file: {e}")))?;
    String::from_utf8(bytes).map_err(|e| {
        let valid = e.utf8_error().valid_up_to();
        let good = String::from_utf8_lossy(&e.as_bytes()[..valid]).into_owned();
        let place = error::Source::new(path, &good).place_of(valid);
        ConfigError::at(&place, "the file is not UTF-8 text")
    })
}

/// Loads one in-memory file called `name`: for embedding moongate and for tests. Relative
/// paths in it are relative to the working directory.
pub fn load_str(name: &str, text: &str) -> Result<Config, ConfigError> {
    load_files(&[(PathBuf::from(name), text.to_owned())])
}

/// Loads already-read files (display name, text), merged in the order given. Relative
/// paths in them are relative to the working directory.
pub fn load_files(files: &[(PathBuf, String)]) -> Result<Config, ConfigError> {
    let Some((first, _)) = files.first() else {
        return Err(ConfigError::at(
            &Place::whole("(no files)"),
            "no configuration files were given",
        ));
    };
    validate::validate(files, validate::paths::working_dir(first)?)
}

/// A `certs = [...]` line naming readable files (test helper: validation checks that
/// the files exist; tests that load certificates make real ones).
#[cfg(test)]
pub(crate) const TEST_CERTS: &str = "certs = [{ cert = \"tests/fixtures/config/certs/example.pem\", key = \"tests/fixtures/config/certs/example.key\" }]\n";

/// The message a config made of `text` is rejected with (test helper).
#[cfg(test)]
pub(crate) fn rejected(text: &str) -> String {
    match load_str("t.toml", text) {
        Ok(_) => panic!("the config should be rejected:\n{text}"),
        Err(e) => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/config")
            .join(name)
    }

    fn fixture_err(name: &str) -> String {
        let dir = fixture(name);
        let err = load_dir(&dir).expect_err("the fixture should be rejected");
        // Make the message independent of where the repository is checked out.
        let shown = err.to_string();
        shown.replace(&format!("{}/", dir.display()), "")
    }

    #[test]
    fn good_fixture_merges_files_in_name_order() {
        let dir = fixture("good");
        let config = load_dir(&dir).expect("good fixture loads");
        let names: Vec<_> = config
            .files
            .iter()
            .map(|f| f.file_name().unwrap())
            .collect();
        assert_eq!(names, ["00-server.toml", "10-app.toml", "20-routes.toml"]);
        assert_eq!(config.server.listen[0].addr.to_string(), "127.0.0.1:8080");
        assert_eq!(
            config.server.listen[0].place.file,
            dir.join("00-server.toml")
        );
        assert_eq!(config.server.client_max_body_size, 8 << 20);
        let upstream_names: Vec<_> = config.upstreams.keys().collect();
        assert_eq!(upstream_names, ["api", "app"]);
        // Routes keep file order across files; the route in 10-app.toml comes first.
        let targets: Vec<_> = config.routes.iter().map(|r| r.target.clone()).collect();
        assert_eq!(
            targets,
            [
                RouteTarget::Upstream("app".into()),
                RouteTarget::Upstream("api".into()),
                RouteTarget::Static {
                    root: fixture("static")
                },
            ]
        );
        // Relative paths start from the directory that holds the conf.d.
        assert_eq!(config.prefix, fixture(""));
        assert_eq!(config.tls[0].certs[0].cert, fixture("certs/example.pem"));
        assert_eq!(config.tls[0].certs[0].key, fixture("certs/example.key"));
        assert_eq!(
            config.routes[1].place.to_string(),
            format!("{}:1:1", dir.join("20-routes.toml").display())
        );
        assert_eq!(config.tls.len(), 1);
        assert_eq!(
            config.admin.as_ref().map(|a| a.listen.addr.port()),
            Some(9901)
        );
    }

    #[test]
    fn duplicate_upstream_across_files_names_both() {
        assert_eq!(
            fixture_err("dup-upstream"),
            "30-x.toml:1:1: upstream `app` is defined twice (also defined at 10-app.toml:3:1)"
        );
    }

    #[test]
    fn unknown_key_fixture() {
        assert_eq!(
            fixture_err("unknown-key"),
            "10-app.toml:4:30: unknown key `wieght` in a server of [upstream.app]; \
             expected one of addr, weight, max_fails, fail_timeout, backup, down"
        );
    }

    #[test]
    fn bad_regex_fixture() {
        assert_eq!(
            fixture_err("bad-regex"),
            "10-routes.toml:3:14: `path_regex` is not a valid regular expression: unclosed group"
        );
    }

    #[test]
    fn missing_upstream_fixture() {
        assert_eq!(
            fixture_err("missing-upstream"),
            "20-routes.toml:3:12: route names upstream `nope`, which is not defined (defined upstreams: api, app)"
        );
    }

    #[test]
    fn dir_problems_name_the_dir() {
        let empty = fixture("empty");
        let e = load_dir(&empty).unwrap_err();
        assert_eq!(e.place, Place::whole(&empty));
        assert!(
            e.to_string()
                .ends_with("no *.toml files in this directory; is it the right conf.d?")
        );
        let missing = fixture("no-such-dir");
        let e = load_dir(&missing).unwrap_err();
        assert!(
            e.message.starts_with("cannot read the config directory"),
            "{e}"
        );
        assert!(load_files(&[]).is_err());
    }

    #[test]
    fn non_utf8_is_placed_at_the_bad_byte() {
        let e = read_text(&fixture("latin1.toml")).unwrap_err();
        assert_eq!((e.place.line, e.place.column), (2, 12));
        assert_eq!(e.message, "the file is not UTF-8 text");
    }

    #[test]
    fn load_str_uses_the_given_name() {
        let e = load_str("inline.toml", "[[route]]\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "inline.toml:1:1: a [[route]] needs one of `path`, `path_exact` or `path_regex`"
        );
        assert!(load_str("empty.toml", "").is_ok());
    }
}

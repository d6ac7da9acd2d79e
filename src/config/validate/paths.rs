//! The path rule, in one place: a relative path anywhere in conf.d is relative to the
//! *prefix*, the directory that holds conf.d (nginx's prefix; for `-c /srv/gw/conf.d`
//! it is `/srv/gw`), never to the directory moongate happens to be started in. Every
//! path-valued key is resolved here into the model, so runtime code only sees absolute
//! paths.
//!
//! Files and directories that must exist (scripts, key files, certificates, static
//! roots, worker directories) are noted while the tables are validated and checked at
//! the end, after every other rule passed, so an error in meaning is reported before a
//! missing file and the file checks run in file order. Paths moongate creates or writes
//! (the access log, the pid file, a cache's disk directory, unix sockets) are resolved
//! but not checked here.

use std::io;
use std::path::{Path, PathBuf};

use crate::config::error::{ConfigError, Place};

/// The prefix of a conf.d directory: the directory that holds it.
///
/// `dir` is made absolute lexically, so a symlinked conf.d counts where it is named
/// from (`-c /srv/gw/conf.d` → `/srv/gw` even if that conf.d links elsewhere); only a
/// name ending in `..` (or the root) is resolved on disk to find its parent.
pub(crate) fn prefix_of(dir: &Path) -> Result<PathBuf, ConfigError> {
    let fail = |e: io::Error| {
        let message = format!(
            "cannot tell which directory holds the config directory (relative paths start there): {}",
            os_reason(&e)
        );
        ConfigError::at(&Place::whole(dir), message)
    };
    let mut abs = std::path::absolute(dir).map_err(fail)?;
    if abs.file_name().is_none() {
        abs = abs.canonicalize().map_err(fail)?;
    }
    Ok(abs.parent().map_or_else(|| abs.clone(), Path::to_path_buf))
}

/// The prefix of configuration given without a directory (a TOML string, when
/// embedding): the working directory, which is what such a program names paths from.
pub(crate) fn working_dir(name: &Path) -> Result<PathBuf, ConfigError> {
    std::env::current_dir().map_err(|e| {
        let message = format!(
            "cannot tell the working directory, which relative paths start from: {}",
            os_reason(&e)
        );
        ConfigError::at(&Place::whole(name), message)
    })
}

/// What a noted path must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A regular file moongate can open for reading.
    File,
    /// A directory moongate can list.
    Dir,
}

/// A path that must exist, and the key that named it.
#[derive(Debug)]
struct Needed {
    place: Place,
    key: String,
    path: PathBuf,
    kind: Kind,
}

/// Resolves conf.d's paths against the prefix and keeps the ones that must exist.
#[derive(Debug)]
pub(super) struct Paths {
    prefix: PathBuf,
    needed: Vec<Needed>,
}

impl Paths {
    /// Paths relative to `prefix` (an absolute directory).
    pub(super) fn new(prefix: PathBuf) -> Paths {
        Paths {
            prefix,
            needed: Vec::new(),
        }
    }

    /// The directory relative paths start from.
    pub(super) fn prefix(&self) -> &Path {
        &self.prefix
    }

    /// `value` as an absolute path (an absolute `value` is kept as written).
    pub(super) fn resolve(&self, value: &str) -> PathBuf {
        self.prefix.join(value)
    }

    /// Resolves a file `key` at `place` names; it must be readable at check time.
    pub(super) fn file(&mut self, place: Place, key: &str, value: &str) -> PathBuf {
        self.need(place, key, value, Kind::File)
    }

    /// Resolves a directory `key` at `place` names; it must exist at check time.
    pub(super) fn dir(&mut self, place: Place, key: &str, value: &str) -> PathBuf {
        self.need(place, key, value, Kind::Dir)
    }

    fn need(&mut self, place: Place, key: &str, value: &str, kind: Kind) -> PathBuf {
        let path = self.resolve(value);
        self.needed.push(Needed {
            place,
            key: key.to_owned(),
            path: path.clone(),
            kind,
        });
        path
    }

    /// `package_path`: each relative `;`-separated template resolved (empty ones, Lua's
    /// `;;` "default path" marker, are kept).
    pub(super) fn templates(&self, value: &str) -> Option<String> {
        let resolved: Option<Vec<String>> = value
            .split(';')
            .map(|t| {
                if t.trim().is_empty() || Path::new(t).is_absolute() {
                    Some(t.to_owned())
                } else {
                    self.resolve(t).into_os_string().into_string().ok()
                }
            })
            .collect();
        resolved.map(|parts| parts.join(";"))
    }

    /// Checks every noted path, in the order they were noted: the first one missing
    /// or unreadable is an error at the key that named it, with the resolved path and
    /// the operating system's reason (`keys_file /srv/gw/keys.txt: No such file or
    /// directory`).
    pub(super) fn check(&self) -> Result<(), ConfigError> {
        for n in &self.needed {
            let problem = match n.kind {
                Kind::File => readable_file(&n.path),
                Kind::Dir => listable_dir(&n.path),
            };
            if let Err(why) = problem {
                let message = format!("{} {}: {why}", n.key, n.path.display());
                return Err(ConfigError::at(&n.place, message));
            }
        }
        Ok(())
    }
}

fn readable_file(path: &Path) -> Result<(), String> {
    let meta = std::fs::metadata(path).map_err(|e| os_reason(&e))?;
    if meta.is_dir() {
        return Err("is a directory, not a file".to_owned());
    }
    std::fs::File::open(path)
        .map(drop)
        .map_err(|e| os_reason(&e))
}

fn listable_dir(path: &Path) -> Result<(), String> {
    let meta = std::fs::metadata(path).map_err(|e| os_reason(&e))?;
    if !meta.is_dir() {
        return Err("is not a directory".to_owned());
    }
    std::fs::read_dir(path).map(drop).map_err(|e| os_reason(&e))
}

/// The operating system's words for an error, without Rust's "(os error N)".
pub(crate) fn os_reason(e: &io::Error) -> String {
    let text = e.to_string();
    match text.rfind(" (os error ") {
        Some(at) if text.ends_with(')') => text[..at].to_owned(),
        _ => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(line: usize) -> Place {
        Place {
            file: "t.toml".into(),
            line,
            column: 3,
        }
    }

    #[test]
    fn the_prefix_is_the_directory_holding_conf_d() {
        let cwd = std::env::current_dir().unwrap();
        assert_eq!(
            prefix_of(Path::new("/srv/gw/conf.d")).unwrap(),
            Path::new("/srv/gw")
        );
        assert_eq!(
            prefix_of(Path::new("/srv/gw/conf.d/")).unwrap(),
            Path::new("/srv/gw")
        );
        assert_eq!(prefix_of(Path::new("conf.d")).unwrap(), cwd);
        assert_eq!(prefix_of(Path::new("./conf.d")).unwrap(), cwd);
        assert_eq!(prefix_of(Path::new("/")).unwrap(), Path::new("/"));
        // `..` is resolved on disk: the parent of src/config/.. is the crate root.
        assert_eq!(prefix_of(Path::new("src/config/..")).unwrap(), cwd);
    }

    #[test]
    fn relative_values_resolve_against_the_prefix_absolute_ones_stay() {
        let paths = Paths::new("/srv/gw".into());
        assert_eq!(paths.resolve("keys.txt"), Path::new("/srv/gw/keys.txt"));
        assert_eq!(paths.resolve("../x/y"), Path::new("/srv/gw/../x/y"));
        assert_eq!(paths.resolve("/etc/k.txt"), Path::new("/etc/k.txt"));
        assert_eq!(
            paths
                .templates("lua/?.lua;/usr/share/lua/5.1/?.lua;;?.lua")
                .as_deref(),
            Some("/srv/gw/lua/?.lua;/usr/share/lua/5.1/?.lua;;/srv/gw/?.lua")
        );
    }

    #[test]
    fn missing_and_wrong_kinds_name_key_path_and_reason() {
        let prefix = tempfile::tempdir().unwrap();
        std::fs::write(prefix.path().join("keys.txt"), "k\n").unwrap();
        std::fs::create_dir(prefix.path().join("site")).unwrap();
        let p = prefix.path().display().to_string();

        let mut ok = Paths::new(prefix.path().into());
        assert_eq!(
            ok.file(at(1), "keys_file", "keys.txt"),
            prefix.path().join("keys.txt")
        );
        ok.dir(at(2), "root", "site");
        ok.dir(at(3), "dir", &p);
        assert!(ok.check().is_ok());

        let fails = |kind: Kind, key: &str, value: &str| {
            let mut paths = Paths::new(prefix.path().into());
            paths.need(at(7), key, value, kind);
            paths.check().unwrap_err().to_string()
        };
        let cases = [
            (
                Kind::File,
                "keys_file",
                "nope.txt",
                "No such file or directory",
            ),
            (
                Kind::File,
                "lua.access",
                "site",
                "is a directory, not a file",
            ),
            (Kind::Dir, "root", "keys.txt", "is not a directory"),
            (Kind::Dir, "root", "gone/site", "No such file or directory"),
        ];
        for (kind, key, value, why) in cases {
            assert_eq!(
                fails(kind, key, value),
                format!("t.toml:7:3: {key} {p}/{value}: {why}")
            );
        }
    }

    #[test]
    fn the_first_missing_path_noted_is_reported() {
        let mut paths = Paths::new("/nonexistent-prefix".into());
        paths.file(at(4), "cert", "a.pem");
        paths.file(at(9), "key", "a.key");
        let e = paths.check().unwrap_err();
        assert_eq!(e.place.line, 4);
        assert!(
            e.message.starts_with("cert /nonexistent-prefix/a.pem: "),
            "{e}"
        );
    }

    #[test]
    fn os_reasons_drop_the_error_number() {
        let e = io::Error::from_raw_os_error(13);
        assert_eq!(os_reason(&e), "Permission denied");
        let custom = io::Error::other("odd");
        assert_eq!(os_reason(&custom), "odd");
    }
}

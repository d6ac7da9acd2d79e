//! Reading the configuration: one file and what it `include`s, or the
//! output of `nginx -T` (every file, each after a `# configuration file
//! PATH:` line), into one directive tree with `include`s expanded in place.
//!
//! Relative include paths are resolved as nginx does, against the
//! directory of the main file (nginx's conf prefix), falling back to the
//! including file's own directory; a wildcard is allowed in the last path
//! component (`conf.d/*.conf`), matched in name order as glob(3) does.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::lexer::tokenize;
use super::parse::{Directive, parse};
use super::report::{Owner, Report, Severity};

/// How deep includes may nest before the import gives up (a cycle).
const MAX_INCLUDE_DEPTH: usize = 16;

/// The whole configuration, read.
#[derive(Debug)]
pub struct Loaded {
    /// The main file's directives with includes expanded.
    pub tree: Vec<Directive>,
    /// nginx's conf prefix: the main file's directory (relative
    /// certificate paths are resolved against it).
    pub conf_dir: PathBuf,
    /// Whether the input was `nginx -T` output.
    pub dump: bool,
}

/// The input could not be read or parsed.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// A file could not be read.
    #[error("cannot read {path}: {error}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        error: std::io::Error,
    },
    /// A file is not valid nginx syntax.
    #[error("{0}")]
    Syntax(String),
}

/// Reads `path` (a configuration file, or saved `nginx -T` output) and
/// every file it includes.
pub fn load(path: &Path, report: &mut Report) -> Result<Loaded, SourceError> {
    let text = std::fs::read_to_string(path).map_err(|error| SourceError::Read {
        path: path.display().to_string(),
        error,
    })?;
    let (files, main, dump) = match split_dump(&text) {
        Some((files, main)) => (files, main, true),
        None => {
            let mut files = BTreeMap::new();
            files.insert(path.to_path_buf(), text);
            (files, path.to_path_buf(), false)
        }
    };
    let conf_dir = main.parent().map(Path::to_path_buf).unwrap_or_default();
    let mut reader = Reader {
        files,
        conf_dir: conf_dir.clone(),
        dump,
    };
    let main_text = reader.files.get(&main).cloned().unwrap_or_default();
    let tree = reader.parse_file(&main, &main_text, 0, report)?;
    Ok(Loaded {
        tree,
        conf_dir,
        dump,
    })
}

/// Splits `nginx -T` output into files, keyed by path; the first is the
/// main one. `None` when the text has no `# configuration file` markers.
fn split_dump(text: &str) -> Option<(BTreeMap<PathBuf, String>, PathBuf)> {
    let mut files = BTreeMap::new();
    let mut main = None;
    let mut current: Option<(PathBuf, String)> = None;
    for line in text.split_inclusive('\n') {
        let marker = line
            .trim_end()
            .strip_prefix("# configuration file ")
            .and_then(|rest| rest.strip_suffix(':'));
        if let Some(path) = marker {
            if let Some((p, t)) = current.take() {
                files.entry(p).or_insert(t);
            }
            let path = PathBuf::from(path);
            main.get_or_insert_with(|| path.clone());
            current = Some((path, String::new()));
        } else if let Some((_, t)) = current.as_mut() {
            t.push_str(line);
        }
        // Lines before the first marker ("nginx: the configuration file
        // ... syntax is ok") are nginx's own messages.
    }
    if let Some((p, t)) = current {
        files.entry(p).or_insert(t);
    }
    Some((files, main?))
}

struct Reader {
    /// Files known without reading the disk (the dump's, and the main file).
    files: BTreeMap<PathBuf, String>,
    conf_dir: PathBuf,
    dump: bool,
}

impl Reader {
    fn parse_file(
        &mut self,
        path: &Path,
        text: &str,
        depth: usize,
        report: &mut Report,
    ) -> Result<Vec<Directive>, SourceError> {
        let name: Arc<str> = Arc::from(path.display().to_string());
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let tokens = tokenize(text)
            .map_err(|e| SourceError::Syntax(format!("{}:{}: {}", name, e.line, e.message)))?;
        let tree = parse(&name, tokens).map_err(|e| SourceError::Syntax(e.to_string()))?;
        self.expand(tree, path, depth, report)
    }

    /// Replaces every `include` in `tree` (at any depth) by what it names.
    fn expand(
        &mut self,
        tree: Vec<Directive>,
        file: &Path,
        depth: usize,
        report: &mut Report,
    ) -> Result<Vec<Directive>, SourceError> {
        let mut out = Vec::with_capacity(tree.len());
        for mut d in tree {
            if d.name == "include" && d.block.is_none() && d.lua.is_none() {
                out.extend(self.include(&d, file, depth, report)?);
                continue;
            }
            if let Some(block) = d.block.take() {
                d.block = Some(self.expand(block, file, depth, report)?);
            }
            out.push(d);
        }
        Ok(out)
    }

    fn include(
        &mut self,
        d: &Directive,
        file: &Path,
        depth: usize,
        report: &mut Report,
    ) -> Result<Vec<Directive>, SourceError> {
        let [pattern] = d.args.as_slice() else {
            let why = "`include` takes one file name or pattern";
            report.add(
                &d.pos,
                d.summary(),
                Severity::NotTranslated,
                why,
                Owner::Global,
            );
            return Ok(Vec::new());
        };
        let pattern = pattern.text.as_str();
        if Path::new(pattern)
            .file_name()
            .is_some_and(|n| n == "mime.types")
        {
            let why = "moongate gives static files their Content-Type by file extension itself";
            report.add(&d.pos, d.summary(), Severity::Unneeded, why, Owner::Global);
            return Ok(Vec::new());
        }
        if depth >= MAX_INCLUDE_DEPTH {
            return Err(SourceError::Syntax(format!(
                "{}: includes nest more than {MAX_INCLUDE_DEPTH} deep (a file includes itself?)",
                d.pos
            )));
        }
        let paths = match self.resolve(pattern, file) {
            Ok(paths) => paths,
            Err(why) => {
                report.add(
                    &d.pos,
                    d.summary(),
                    Severity::NotTranslated,
                    why,
                    Owner::Global,
                );
                return Ok(Vec::new());
            }
        };
        let mut out = Vec::new();
        for path in paths {
            let text = match self.files.get(&path) {
                Some(t) => t.clone(),
                None => match std::fs::read_to_string(&path) {
                    Ok(t) => t,
                    Err(e) => {
                        let why = format!("cannot read {}: {e}", path.display());
                        report.add(
                            &d.pos,
                            d.summary(),
                            Severity::NotTranslated,
                            why,
                            Owner::Global,
                        );
                        continue;
                    }
                },
            };
            out.extend(self.parse_file(&path, &text, depth + 1, report)?);
        }
        Ok(out)
    }

    /// The files an include pattern names, in order.
    fn resolve(&self, pattern: &str, including: &Path) -> Result<Vec<PathBuf>, String> {
        let raw = Path::new(pattern);
        let candidates: Vec<PathBuf> = if raw.is_absolute() {
            vec![raw.to_path_buf()]
        } else {
            let mut c = vec![self.conf_dir.join(raw)];
            if let Some(dir) = including.parent().filter(|d| *d != self.conf_dir) {
                c.push(dir.join(raw));
            }
            c
        };
        let wild = |s: &str| s.contains(['*', '?', '[']);
        let parent_wild = raw.parent().is_some_and(|p| wild(&p.to_string_lossy()));
        if parent_wild {
            return Err("a wildcard is supported only in the file name, not in directories".into());
        }
        if !wild(pattern) {
            let found = candidates
                .iter()
                .find(|c| self.files.contains_key(*c) || c.is_file());
            return match found {
                Some(p) => Ok(vec![p.clone()]),
                None => Err(format!(
                    "no such file: {}",
                    candidates
                        .first()
                        .map_or(String::new(), |c| c.display().to_string())
                )),
            };
        }
        for candidate in &candidates {
            let (Some(dir), Some(name)) = (candidate.parent(), candidate.file_name()) else {
                continue;
            };
            let name = name.to_string_lossy();
            let mut found: Vec<PathBuf> = if self.dump {
                self.files
                    .keys()
                    .filter(|k| k.parent() == Some(dir))
                    .filter(|k| {
                        k.file_name()
                            .is_some_and(|n| glob_match(&name, &n.to_string_lossy()))
                    })
                    .cloned()
                    .collect()
            } else {
                match std::fs::read_dir(dir) {
                    Ok(entries) => entries
                        .filter_map(Result::ok)
                        .map(|e| e.path())
                        .filter(|p| p.is_file())
                        .filter(|p| {
                            p.file_name().is_some_and(|n| {
                                let n = n.to_string_lossy();
                                !n.starts_with('.') && glob_match(&name, &n)
                            })
                        })
                        .collect(),
                    Err(_) => continue,
                }
            };
            if !found.is_empty() {
                found.sort();
                return Ok(found);
            }
        }
        // nginx accepts a pattern that matches nothing.
        Ok(Vec::new())
    }
}

/// Shell-style matching of one file name: `*`, `?` and `[...]` classes
/// (`[!...]` negated).
fn glob_match(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    glob_at(&p, &n)
}

fn glob_at(p: &[char], n: &[char]) -> bool {
    match p.first() {
        None => n.is_empty(),
        Some('*') => (0..=n.len()).any(|skip| glob_at(&p[1..], &n[skip..])),
        Some('?') => !n.is_empty() && glob_at(&p[1..], &n[1..]),
        Some('[') => {
            let Some(end) = p.iter().skip(2).position(|&c| c == ']').map(|e| e + 2) else {
                return n.first() == Some(&'[') && glob_at(&p[1..], &n[1..]);
            };
            let Some(&c) = n.first() else { return false };
            let (negate, set) = match p[1] {
                '!' | '^' => (true, &p[2..end]),
                _ => (false, &p[1..end]),
            };
            let mut hit = false;
            let mut i = 0;
            while i < set.len() {
                if i + 2 < set.len() && set[i + 1] == '-' {
                    hit |= set[i] <= c && c <= set[i + 2];
                    i += 3;
                } else {
                    hit |= set[i] == c;
                    i += 1;
                }
            }
            hit != negate && glob_at(&p[end + 1..], &n[1..])
        }
        Some(&c) => n.first() == Some(&c) && glob_at(&p[1..], &n[1..]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(tree: &[Directive]) -> Vec<String> {
        tree.iter()
            .map(|d| format!("{}@{}", d.name, d.pos))
            .collect()
    }

    #[test]
    fn includes_expand_in_place_relative_to_the_main_file() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("conf.d")).unwrap();
        std::fs::create_dir_all(root.join("snippets")).unwrap();
        std::fs::write(
            root.join("nginx.conf"),
            "http {\n  include conf.d/*.conf;\n  include mime.types;\n}\n",
        )
        .unwrap();
        std::fs::write(root.join("conf.d/b.conf"), "server { listen 2; }\n").unwrap();
        // Relative to the main file's directory, as nginx resolves it.
        std::fs::write(
            root.join("conf.d/a.conf"),
            "server {\n  listen 1;\n  include snippets/x.conf;\n}\n",
        )
        .unwrap();
        std::fs::write(root.join("conf.d/.hidden.conf"), "broken {").unwrap();
        std::fs::write(root.join("snippets/x.conf"), "\n\nserver_name x;\n").unwrap();
        let mut report = Report::default();
        let loaded = load(&root.join("nginx.conf"), &mut report).unwrap();
        assert!(!loaded.dump);
        let http = loaded.tree[0].children();
        assert_eq!(http.len(), 2);
        let a = root.join("conf.d/a.conf").display().to_string();
        assert_eq!(names(http)[0], format!("server@{a}:1"));
        let inner = names(http[0].children());
        let x = root.join("snippets/x.conf").display().to_string();
        assert_eq!(
            inner,
            [format!("listen@{a}:2"), format!("server_name@{x}:3")]
        );
        assert_eq!(http[1].children()[0].arg(0), Some("2"));
        // mime.types is not read: it is noted as not needed.
        assert_eq!(report.notes.len(), 1);
        assert_eq!(report.notes[0].severity, Severity::Unneeded);
    }

    #[test]
    fn a_missing_include_is_reported_and_a_cycle_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let main = dir.path().join("nginx.conf");
        std::fs::write(&main, "include nope.conf;\ninclude nothing/*.conf;\n").unwrap();
        let mut report = Report::default();
        let loaded = load(&main, &mut report).unwrap();
        assert!(loaded.tree.is_empty());
        assert_eq!(report.notes.len(), 1, "{:?}", report.notes);
        assert!(
            report.notes[0].why.starts_with("no such file"),
            "{}",
            report.notes[0]
        );
        std::fs::write(&main, "include nginx.conf;\n").unwrap();
        let e = load(&main, &mut Report::default()).unwrap_err();
        assert!(e.to_string().contains("nest more than"), "{e}");
    }

    #[test]
    fn nginx_dash_t_output_is_split_into_files() {
        let dump = "nginx: the configuration file /etc/nginx/nginx.conf syntax is ok\n\
            nginx: configuration file /etc/nginx/nginx.conf test is successful\n\
            # configuration file /etc/nginx/nginx.conf:\n\
            events {}\n\
            http {\n\
            \x20   include /etc/nginx/sites-enabled/*;\n\
            }\n\
            \n\
            # configuration file /etc/nginx/sites-enabled/default:\n\
            server {\n\
            \x20   listen 8080;\n\
            }\n\
            # configuration file /etc/nginx/sites-enabled/api:\n\
            # a comment\n\
            server { listen 8081; }\n";
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dump.txt");
        std::fs::write(&path, dump).unwrap();
        let loaded = load(&path, &mut Report::default()).unwrap();
        assert!(loaded.dump);
        assert_eq!(loaded.conf_dir, PathBuf::from("/etc/nginx"));
        assert_eq!(
            names(&loaded.tree),
            [
                "events@/etc/nginx/nginx.conf:1",
                "http@/etc/nginx/nginx.conf:2"
            ]
        );
        // The glob matches in name order: api before default.
        assert_eq!(
            names(loaded.tree[1].children()),
            [
                "server@/etc/nginx/sites-enabled/api:2",
                "server@/etc/nginx/sites-enabled/default:1"
            ]
        );
    }

    #[test]
    fn syntax_errors_name_the_included_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("nginx.conf"), "http { include b.conf; }").unwrap();
        std::fs::write(dir.path().join("b.conf"), "server {\n listen 80\n}").unwrap();
        let e = load(&dir.path().join("nginx.conf"), &mut Report::default()).unwrap_err();
        assert!(
            e.to_string()
                .ends_with("b.conf:2: directive \"listen\" has no closing \";\""),
            "{e}"
        );
    }

    #[test]
    fn globs() {
        assert!(glob_match("*.conf", "a.conf"));
        assert!(!glob_match("*.conf", "a.conf.bak"));
        assert!(glob_match("*", "default"));
        assert!(glob_match("site-?.[a-c]*", "site-1.b.conf"));
        assert!(!glob_match("[!a]*", "abc"));
    }
}

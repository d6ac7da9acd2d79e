//! Raw conf.d files → the validated [`Config`]: merging, defaults, and every check that
//! needs more than one value.
//!
//! Merge rules: files are taken in the order given (file-name order for `load_dir`);
//! `[server]` keys and `[admin]` may come from one file only; `[[server.tls]]` entries,
//! upstreams and routes are gathered from all, a name defined twice being an error that
//! names both places. Upstreams are validated before routes so routes can refer to an
//! upstream from any file. The rules for each table live in the submodules; `paths` holds
//! the one rule for relative paths and checks, last, that the files named exist.

mod cache;
mod compress;
mod consumer;
mod health;
mod limit;
mod listeners;
mod lua;
mod matchers;
pub(crate) mod paths;
mod policy;
mod protocol;
mod redis;
mod route;
mod route_overlap;
mod server;
mod tracing;
mod upstream;
mod upstream_tls;
mod workers;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use toml::Spanned;

use super::error::{ConfigError, Place, Source};
use super::explain::explain;
use super::file::RawFile;
use super::model::{Admin, CacheZone, Config, LimitZone, Listen, Server, TlsListener, Upstream};
use paths::Paths;

/// Parses and validates conf.d files (display name, text) into a [`Config`]; relative
/// paths in them are relative to `prefix` (see `paths`).
pub(crate) fn validate(
    files: &[(PathBuf, String)],
    prefix: PathBuf,
) -> Result<Config, ConfigError> {
    let sources: Vec<Source<'_>> = files
        .iter()
        .map(|(name, text)| Source::new(name, text))
        .collect();
    let mut raws = Vec::with_capacity(sources.len());
    for src in &sources {
        let raw: RawFile = toml::from_str(src.text).map_err(|e| explain(src, &e))?;
        raws.push(raw);
    }
    let parsed: Vec<(&Source<'_>, &RawFile)> = sources.iter().zip(&raws).collect();
    let mut paths = Paths::new(prefix);

    let server = server::server(&parsed, &paths)?;
    let tls = listeners::tls_listeners(&parsed, &mut paths)?;
    let admin = listeners::admin(&parsed)?;
    check_listeners(&parsed, &server, &tls, admin.as_ref())?;

    let mut upstreams: BTreeMap<String, Upstream> = BTreeMap::new();
    for (src, raw) in &parsed {
        for (name, def) in &raw.upstream {
            let place = table_place(src, name, def);
            if let Some(first) = upstreams.get(name.get_ref()) {
                let message = format!("upstream `{}` is defined twice", name.get_ref());
                return Err(ConfigError::at(&place, message).also_at(&first.place));
            }
            let validated = upstream::upstream(src, name, def, place, &mut paths)?;
            upstreams.insert(name.get_ref().clone(), validated);
        }
    }

    let lua = lua::settings(&parsed, &mut paths)?;
    let (consumers, consumers_file) = consumer::consumers(&parsed, &paths)?;
    let redis = redis::settings(&parsed, &paths)?;
    let tracing = tracing::settings(&parsed)?;

    let mut limits: BTreeMap<String, LimitZone> = BTreeMap::new();
    for (src, raw) in &parsed {
        for (name, def) in &raw.limit {
            let place = table_place(src, name, def);
            if let Some(first) = limits.get(name.get_ref()) {
                let message = format!("limit zone `{}` is defined twice", name.get_ref());
                return Err(ConfigError::at(&place, message).also_at(&first.place));
            }
            let validated = limit::zone(src, name, def, place, redis.as_ref())?;
            limits.insert(name.get_ref().clone(), validated);
        }
    }

    let mut caches: BTreeMap<String, CacheZone> = BTreeMap::new();
    for (src, raw) in &parsed {
        for (name, def) in &raw.cache {
            let place = table_place(src, name, def);
            if let Some(first) = caches.get(name.get_ref()) {
                let message = format!("cache zone `{}` is defined twice", name.get_ref());
                return Err(ConfigError::at(&place, message).also_at(&first.place));
            }
            let validated = cache::zone(src, name, def, place, &paths)?;
            let same_dir = caches.values().find(|z| {
                z.disk.is_some()
                    && z.disk.as_ref().map(|d| &d.path) == validated.disk.as_ref().map(|d| &d.path)
            });
            if let Some(other) = same_dir {
                let message = format!(
                    "cache zones `{}` and `{}` use the same disk path; each zone needs its own directory",
                    other.name, validated.name
                );
                return Err(ConfigError::at(&validated.place, message).also_at(&other.place));
            }
            caches.insert(name.get_ref().clone(), validated);
        }
    }

    // `[server]`'s compress table, checked even when no route uses it.
    let server_compress = parsed.iter().find_map(|(src, raw)| {
        let table = raw.server.as_ref()?.get_ref().compress.as_ref()?;
        Some((*src, table))
    });
    compress::settings(server_compress, None)?;
    let mut routes = Vec::new();
    for (src, raw) in &parsed {
        for def in &raw.route {
            let mut route = route::route(src, def, &upstreams, &limits, &caches, &mut paths)?;
            let own = def.get_ref().compress.as_ref().map(|t| (*src, t));
            route.compress = compress::settings(server_compress, own)?;
            routes.push(route);
        }
    }
    route::unique_names(&routes)?;
    route_overlap::check(&routes)?;
    paths.check()?;

    Ok(Config {
        server,
        tls,
        admin,
        upstreams,
        routes,
        lua,
        limits,
        redis,
        tracing,
        caches,
        consumers,
        consumers_file,
        files: files.iter().map(|(name, _)| name.clone()).collect(),
        prefix: paths.prefix().to_path_buf(),
    })
}

/// Where a named table is: its `[header]` if written as one, else its key.
fn table_place<T>(src: &Source<'_>, key: &Spanned<String>, value: &Spanned<T>) -> Place {
    if src.slice(value.span()).starts_with('[') {
        src.place(value.span())
    } else {
        src.place(key.span())
    }
}

/// Finds the one file allowed to define a table, erroring on a second one.
fn only_one<'a, T>(
    parsed: &[(&'a Source<'a>, &'a RawFile)],
    what: &str,
    pick: impl Fn(&'a RawFile) -> Option<&'a Spanned<T>>,
) -> Result<Option<(&'a Source<'a>, &'a Spanned<T>)>, ConfigError> {
    let mut found: Option<(&Source<'_>, &Spanned<T>)> = None;
    for (src, raw) in parsed {
        let Some(def) = pick(raw) else { continue };
        if let Some((first_src, first)) = found {
            let message = format!("{what} is defined in two files; keep it in one");
            return Err(src
                .err(def.span(), message)
                .also_at(&first_src.place(first.span())));
        }
        found = Some((src, def));
    }
    Ok(found)
}

/// No address may be bound twice, and there must be something to listen on. Port 0
/// asks the OS for a fresh port, so a plain and a TLS listener may both say
/// `127.0.0.1:0`; two of the same kind could not be told apart on reload.
fn check_listeners(
    parsed: &[(&Source<'_>, &RawFile)],
    server: &Server,
    tls: &[TlsListener],
    admin: Option<&Admin>,
) -> Result<(), ConfigError> {
    let written_listen = parsed.iter().find_map(|(src, raw)| {
        let list = raw.server.as_ref()?.get_ref().listen.as_ref()?;
        Some(src.place(list.span()))
    });
    let serving = server.listen.iter().chain(tls.iter().map(|t| &t.listen));
    let kinds = server
        .listen
        .iter()
        .map(|_| "plain")
        .chain(tls.iter().map(|_| "tls"));
    let all: Vec<(&Listen, &str)> = serving
        .clone()
        .zip(kinds)
        .chain(admin.map(|a| (&a.listen, "admin")))
        .collect();
    for (i, (later, kind)) in all.iter().enumerate() {
        let clash = |(l, k): &(&Listen, &str)| {
            l.addr == later.addr && (later.addr.port() != 0 || k == kind)
        };
        let Some(first) = all[..i].iter().position(clash) else {
            continue;
        };
        if written_listen.is_none() && first < server.listen.len() {
            let message = format!(
                "listen address {} is already the default plain-HTTP listener; set `listen` in [server] to move that one",
                later.addr
            );
            return Err(ConfigError::at(&later.place, message));
        }
        let message = format!("listen address {} is used twice", later.addr);
        return Err(ConfigError::at(&later.place, message).also_at(&all[first].0.place));
    }
    if serving.count() == 0 {
        let place =
            written_listen.unwrap_or_else(|| Place::whole(Path::new(server::DEFAULT_PLACE)));
        let message = "nothing to listen on: `listen` is empty and there is no [[server.tls]]";
        return Err(ConfigError::at(&place, message));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{load_files, load_str};

    fn files(list: &[(&str, &str)]) -> Vec<(PathBuf, String)> {
        list.iter()
            .map(|(n, t)| (PathBuf::from(n), t.to_string()))
            .collect()
    }

    use crate::config::rejected as err;

    #[test]
    fn server_keys_in_two_files_is_an_error_naming_both() {
        let e = load_files(&files(&[
            ("a.toml", "[server]\nworkers = 2\n"),
            ("b.toml", "# x\n[server]\nserver_tokens = true\n"),
        ]))
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "b.toml:2:1: [server] is defined in two files; keep it in one (also defined at a.toml:1:1)"
        );
    }

    #[test]
    fn files_merge_in_the_order_given() {
        let app = "[upstream.app]\nservers = [{ addr = \"127.0.0.1:8001\" }]\n";
        let route = |p: &str| format!("[[route]]\npath = \"{p}\"\nupstream = \"app\"\n");
        let c = load_files(&files(&[
            ("b.toml", &format!("{}{}", route("/b1"), route("/b2"))),
            ("a.toml", &format!("{}{app}", route("/a"))),
        ]))
        .unwrap();
        let paths: Vec<String> = c
            .routes
            .iter()
            .map(|r| match &r.path {
                crate::config::PathMatch::Prefix(p) => format!("{p} {}", r.place),
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        assert_eq!(paths, ["/b1 b.toml:1:1", "/b2 b.toml:4:1", "/a a.toml:1:1"]);
        assert_eq!(c.files, [PathBuf::from("b.toml"), PathBuf::from("a.toml")]);

        // Whichever file comes second is the one reported; the first is named too.
        let e = load_files(&files(&[("b.toml", app), ("a.toml", app)])).unwrap_err();
        assert_eq!(e.place.file, PathBuf::from("a.toml"));
        assert_eq!(e.also.map(|p| p.to_string()).as_deref(), Some("b.toml:1:1"));
    }

    #[test]
    fn tls_listeners_are_appended_across_files() {
        let tls = |port: u16| {
            format!(
                "[[server.tls]]\nlisten = \"127.0.0.1:{port}\"\ncerts = [{{ cert = \"c{port}\", key = \"k{port}\" }}]\n"
            )
        };
        let prefix = tempfile::tempdir().unwrap();
        for name in ["c8443", "k8443", "c9443", "k9443"] {
            std::fs::write(prefix.path().join(name), "").unwrap();
        }
        let c = validate(
            &files(&[
                ("00.toml", &format!("[server]\nlisten = []\n{}", tls(8443))),
                ("10.toml", &tls(9443)),
            ]),
            prefix.path().to_path_buf(),
        )
        .unwrap();
        assert!(c.server.listen.is_empty());
        let ports: Vec<u16> = c.tls.iter().map(|t| t.listen.addr.port()).collect();
        assert_eq!(ports, [8443, 9443]);
        assert_eq!(c.tls[1].certs[0].cert, prefix.path().join("c9443"));
        assert_eq!(c.tls[1].certs[0].place.to_string(), "10.toml:3:10");
        assert_eq!(c.tls[0].alpn, ["h2", "http/1.1"]);
    }

    #[test]
    fn nothing_to_listen_on() {
        let e = err("[server]\nlisten = []\n");
        assert_eq!(
            e,
            "t.toml:2:10: nothing to listen on: `listen` is empty and there is no [[server.tls]]"
        );
    }

    #[test]
    fn a_listen_address_may_be_bound_once() {
        let e = load_files(&files(&[
            (
                "a.toml",
                "[server]\nlisten = [\"127.0.0.1:8080\", \"127.0.0.1:0\"]\n",
            ),
            ("b.toml", "[admin]\nlisten = \"127.0.0.1:8080\"\n"),
        ]))
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "b.toml:2:10: listen address 127.0.0.1:8080 is used twice (also defined at a.toml:2:11)"
        );
        // The listener is wrong before any file is looked for.
        let tls =
            "[[server.tls]]\nlisten = \"0.0.0.0:8080\"\ncerts = [{ cert = \"c\", key = \"k\" }]\n";
        let e = err(tls);
        assert_eq!(
            e,
            "t.toml:2:10: listen address 0.0.0.0:8080 is already the default plain-HTTP listener; set `listen` in [server] to move that one"
        );
        let e = err(&format!("[server]\nworkers = 2\n{tls}"));
        assert!(
            e.contains("is already the default plain-HTTP listener"),
            "{e}"
        );
        // Port 0 means "any free port": a plain and a TLS listener may both
        // say it, two of the same kind may not (they could not be told apart).
        let e = err("[server]\nlisten = [\"127.0.0.1:0\", \"127.0.0.1:0\"]\n");
        assert!(e.contains("127.0.0.1:0 is used twice"), "{e}");
        let both = format!(
            "[server]\nlisten = [\"127.0.0.1:0\"]\n[[server.tls]]\nlisten = \"127.0.0.1:0\"\n{}",
            crate::config::TEST_CERTS
        );
        assert!(load_str("t", &both).is_ok());
    }
}

//! `[[route]]` → [`Route`]: host patterns, one path matcher, methods, one target, rewrite.
//!
//! Upstream names are checked against every upstream of every file, so a route may live in
//! a different file from its upstream.

use std::collections::BTreeMap;

use toml::Spanned;

use super::matchers::{check_replacement, compile, host_pattern, method, path_match};
use super::paths::Paths;

use crate::config::error::{ConfigError, Place, Source};
use crate::config::file::{OneOrMany, RawRoute};
use crate::config::model::{CacheZone, LimitZone, Rewrite, Route, RouteTarget, Upstream};

/// What an error about an undefined upstream adds: the names there are.
pub(super) fn defined_upstreams(upstreams: &BTreeMap<String, Upstream>) -> String {
    if upstreams.is_empty() {
        return "no upstreams are defined".to_owned();
    }
    let names: Vec<&str> = upstreams.keys().map(String::as_str).collect();
    format!("defined upstreams: {}", names.join(", "))
}

/// Validates one route against the upstreams defined anywhere in conf.d.
pub(super) fn route(
    src: &Source<'_>,
    def: &Spanned<RawRoute>,
    upstreams: &BTreeMap<String, Upstream>,
    zones: &BTreeMap<String, LimitZone>,
    caches: &BTreeMap<String, CacheZone>,
    paths: &mut Paths,
) -> Result<Route, ConfigError> {
    let raw = def.get_ref();
    let place = src.place(def.span());
    let hosts = hosts(src, raw)?;
    let (name, name_place) = route_name(src, raw, &place)?;

    let given: Vec<(&str, &Spanned<String>)> = [
        ("path", &raw.path),
        ("path_exact", &raw.path_exact),
        ("path_regex", &raw.path_regex),
    ]
    .into_iter()
    .filter_map(|(k, v)| Some((k, v.as_ref()?)))
    .collect();
    let path = match given.as_slice() {
        [] => {
            let message = "a [[route]] needs one of `path`, `path_exact` or `path_regex`";
            return Err(ConfigError::at(&place, message));
        }
        [(kind, value)] => {
            path_match(kind, value.get_ref()).map_err(|m| src.err(value.span(), m))?
        }
        [(first, _), (second, value), ..] => {
            let message = format!(
                "a [[route]] takes only one of `path`, `path_exact` or `path_regex`, but has both `{first}` and `{second}`"
            );
            return Err(src.err(value.span(), message));
        }
    };

    let methods = match &raw.methods {
        None => None,
        Some(list) if list.get_ref().is_empty() => {
            let message = "`methods` is empty, so the route would match nothing; leave it out to allow every method";
            return Err(src.err(list.span(), message));
        }
        Some(list) => {
            let mut out: Vec<http::Method> = Vec::new();
            for m in list.get_ref() {
                let method = method(m.get_ref()).map_err(|e| src.err(m.span(), e))?;
                if !out.contains(&method) {
                    out.push(method);
                }
            }
            Some(out)
        }
    };

    let policies = super::policy::policies(src, raw.policies.as_ref(), upstreams, paths)?;
    let lua = super::lua::route_lua(src, raw.lua.as_ref(), policies, paths)?;
    let target = match (&raw.upstream, &raw.root) {
        (Some(_), _) | (_, Some(_)) if lua.content.is_some() => {
            let at = raw
                .upstream
                .as_ref()
                .or(raw.root.as_ref())
                .map_or(def.span(), |v| v.span());
            let message =
                "a route with `lua.content` answers from Lua; it takes no `upstream` or `root`";
            return Err(src.err(at, message));
        }
        (None, None) if lua.content.is_some() => RouteTarget::Lua,
        (Some(name), None) => {
            if !upstreams.contains_key(name.get_ref()) {
                let message = format!(
                    "route names upstream `{}`, which is not defined ({})",
                    name.get_ref(),
                    defined_upstreams(upstreams)
                );
                return Err(src.err(name.span(), message));
            }
            RouteTarget::Upstream(name.get_ref().clone())
        }
        (None, Some(root)) => {
            if root.get_ref().is_empty() {
                return Err(src.err(root.span(), "`root` is empty; give the directory to serve"));
            }
            RouteTarget::Static {
                root: paths.dir(src.place(root.span()), "root", root.get_ref()),
            }
        }
        (Some(_), Some(root)) => {
            let message = "a [[route]] takes `upstream` or `root`, not both";
            return Err(src.err(root.span(), message));
        }
        (None, None) => {
            let message = "a [[route]] needs `upstream` (proxy), `root` (static files) or `lua.content` to say where requests go";
            return Err(ConfigError::at(&place, message));
        }
    };

    let rewrite = match &raw.rewrite {
        None => None,
        Some(rw) => {
            let rw = rw.get_ref();
            let from = compile(rw.from.get_ref(), "`from` in `rewrite`")
                .map_err(|m| src.err(rw.from.span(), m))?;
            check_replacement(&from, rw.to.get_ref()).map_err(|m| src.err(rw.to.span(), m))?;
            Some(Rewrite {
                from,
                to: rw.to.get_ref().clone(),
            })
        }
    };

    let expires = match (&raw.expires, &target) {
        (None, _) => None,
        (Some(e), RouteTarget::Static { .. }) => Some(e.get_ref().0),
        (Some(e), RouteTarget::Upstream(_) | RouteTarget::Lua) => {
            let message = "`expires` only applies to static files (`root`); upstream responses keep their own caching headers";
            return Err(src.err(e.span(), message));
        }
    };

    let limits = limit_zones(src, raw, zones)?;
    let cache = cache_zone(src, raw, &target, caches)?;
    let upgrade = upgrade_protocols(src, raw)?;

    Ok(Route {
        name,
        name_place,
        limits,
        cache,
        upgrade,
        // Set by the caller, which knows `[server]`'s table.
        compress: None,
        place,
        hosts,
        path,
        methods,
        target,
        rewrite,
        expires,
        lua,
    })
}

/// `name = "..."`: what names the route in the access log and metrics
/// (a label value there, so short and printable); `file:line` of the
/// `[[route]]` table when absent (the file's name within conf.d). Uniqueness is checked over all routes
/// ([`unique_names`]).
fn route_name(
    src: &Source<'_>,
    raw: &RawRoute,
    place: &Place,
) -> Result<(String, Place), ConfigError> {
    let Some(name) = &raw.name else {
        // The file's name, not its path: conf.d is one directory, and the
        // name is a metrics label and a log field, kept short and the same
        // wherever the directory is deployed.
        let file = place.file.file_name().map_or_else(
            || place.file.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
        let default = format!("{file}:{}", place.line);
        return Ok((default, place.clone()));
    };
    let value = name.get_ref();
    let message = if value.is_empty() {
        Some("`name` is empty; give the route a name, or leave `name` out for `file:line`")
    } else if value.chars().count() > MAX_NAME {
        Some("`name` is longer than 128 characters")
    } else if value.chars().any(char::is_control) {
        Some("`name` contains a control character")
    } else {
        None
    };
    match message {
        Some(m) => Err(src.err(name.span(), m)),
        None => Ok((value.clone(), src.place(name.span()))),
    }
}

/// The longest route `name`, in characters.
const MAX_NAME: usize = 128;

/// Every route's name is its own: a name given twice (or equal to another
/// route's default `file:line`) is an error naming both places.
pub(super) fn unique_names(routes: &[Route]) -> Result<(), ConfigError> {
    let mut seen: BTreeMap<&str, &Place> = BTreeMap::new();
    for route in routes {
        if let Some(first) = seen.insert(&route.name, &route.name_place) {
            let message = format!("route name `{}` is used twice", route.name);
            return Err(ConfigError::at(&route.name_place, message).also_at(first));
        }
    }
    Ok(())
}

/// `upgrade = [...]`: the protocols a client may switch to through the
/// route, `["websocket"]` when absent. `h2c` is refused: an upgraded h2c
/// connection would carry requests for any path past routing and Lua.
fn upgrade_protocols(src: &Source<'_>, raw: &RawRoute) -> Result<Vec<String>, ConfigError> {
    let Some(list) = &raw.upgrade else {
        return Ok(vec!["websocket".to_owned()]);
    };
    let mut out = Vec::new();
    for proto in list.get_ref() {
        let name = proto.get_ref().trim().to_ascii_lowercase();
        let is_token = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
        if !is_token {
            let message = format!(
                "`upgrade` lists {:?}, which is not a protocol name like \"websocket\"",
                proto.get_ref()
            );
            return Err(src.err(proto.span(), message));
        }
        if name == "h2c" {
            let message = "`upgrade` cannot list \"h2c\": an upgraded HTTP/2 connection would carry requests for any path past routing and Lua policies (clients reach HTTP/2 with prior knowledge or TLS ALPN instead)";
            return Err(src.err(proto.span(), message));
        }
        if !out.contains(&name) {
            out.push(name);
        }
    }
    Ok(out)
}

/// `limit = "NAME"` or a list: zones defined anywhere in conf.d, each once.
fn limit_zones(
    src: &Source<'_>,
    raw: &RawRoute,
    zones: &BTreeMap<String, LimitZone>,
) -> Result<Vec<String>, ConfigError> {
    let Some(limit) = &raw.limit else {
        return Ok(Vec::new());
    };
    let mut out: Vec<String> = Vec::new();
    for (name, span) in limit.get_ref().spanned(limit.span()) {
        if !zones.contains_key(&name) {
            let defined = if zones.is_empty() {
                "no [limit.NAME] zones are defined".to_owned()
            } else {
                let names: Vec<&str> = zones.keys().map(String::as_str).collect();
                format!("defined zones: {}", names.join(", "))
            };
            let message =
                format!("route names limit zone `{name}`, which is not defined ({defined})");
            return Err(src.err(span, message));
        }
        if !out.contains(&name) {
            out.push(name);
        }
    }
    Ok(out)
}

/// `cache = "NAME"`: a zone defined anywhere in conf.d, on a route whose
/// answers come from an upstream (static files and Lua content are not
/// cached).
fn cache_zone(
    src: &Source<'_>,
    raw: &RawRoute,
    target: &RouteTarget,
    caches: &BTreeMap<String, CacheZone>,
) -> Result<Option<String>, ConfigError> {
    let Some(name) = &raw.cache else {
        return Ok(None);
    };
    if !caches.contains_key(name.get_ref()) {
        let defined = if caches.is_empty() {
            "no [cache.NAME] zones are defined".to_owned()
        } else {
            let names: Vec<&str> = caches.keys().map(String::as_str).collect();
            format!("defined zones: {}", names.join(", "))
        };
        let message = format!(
            "route names cache zone `{}`, which is not defined ({defined})",
            name.get_ref()
        );
        return Err(src.err(name.span(), message));
    }
    if !matches!(target, RouteTarget::Upstream(_)) {
        let message = "`cache` applies to routes with an `upstream`; static files and `lua.content` answers are not cached";
        return Err(src.err(name.span(), message));
    }
    Ok(Some(name.get_ref().clone()))
}

fn hosts(src: &Source<'_>, raw: &RawRoute) -> Result<Vec<String>, ConfigError> {
    let Some(host) = &raw.host else {
        return Ok(vec!["*".to_owned()]);
    };
    match host.get_ref() {
        OneOrMany::One(one) => Ok(vec![
            host_pattern(one).map_err(|m| src.err(host.span(), m))?,
        ]),
        OneOrMany::Many(many) if many.is_empty() => {
            let message = "`host` is empty; leave it out (or write \"*\") to match every host";
            Err(src.err(host.span(), message))
        }
        OneOrMany::Many(many) => many
            .iter()
            .map(|h| host_pattern(h.get_ref()).map_err(|m| src.err(h.span(), m)))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::load_str;
    use crate::config::model::PathMatch;

    const APP: &str = "[upstream.app]\nservers = [{ addr = \"127.0.0.1:8001\" }]\n";

    /// Loads one route (written first, so its lines are 1-based from the top) plus `APP`.
    fn route_of(text: &str) -> Result<Route, String> {
        load_str("t.toml", &format!("{text}\n{APP}"))
            .map(|mut c| c.routes.remove(0))
            .map_err(|e| e.to_string())
    }

    fn err(text: &str) -> String {
        route_of(text).expect_err("the route should be rejected")
    }

    #[test]
    fn defaults_and_every_key() {
        let r = route_of("[[route]]\npath = \"/\"\nupstream = \"app\"").unwrap();
        assert_eq!(r.hosts, ["*"]);
        assert!(matches!(&r.path, PathMatch::Prefix(p) if p == "/"));
        assert!(r.methods.is_none() && r.rewrite.is_none() && r.expires.is_none());
        assert_eq!(r.place.to_string(), "t.toml:1:1");

        let r = route_of(
            "[[route]]\nhost = [\"Api.Example.com\", \"*.example.org\"]\npath_exact = \"/hello\"\n\
             methods = [\"GET\", \"POST\", \"GET\"]\nupstream = \"app\"\n\
             rewrite = { from = \"^/v1/(.*)$\", to = \"/$1\" }",
        )
        .unwrap();
        assert_eq!(r.hosts, ["api.example.com", "*.example.org"]);
        assert!(matches!(&r.path, PathMatch::Exact(p) if p == "/hello"));
        assert_eq!(r.methods, Some(vec![http::Method::GET, http::Method::POST]));
        assert_eq!(r.target, RouteTarget::Upstream("app".into()));
        let rw = r.rewrite.unwrap();
        assert_eq!(rw.from.replace("/v1/todo", rw.to.as_str()), "/todo");

        // A relative root is relative to the prefix (the working directory for a
        // TOML string: the crate root under `cargo test`).
        let r = route_of("[[route]]\npath = \"/s/\"\nroot = \"examples/site\"\nexpires = \"30d\"")
            .unwrap();
        let cwd = std::env::current_dir().unwrap();
        assert_eq!(
            r.target,
            RouteTarget::Static {
                root: cwd.join("examples/site")
            }
        );
        let e = err("[[route]]\npath = \"/s/\"\nroot = \"examples/nowhere\"");
        assert_eq!(
            e,
            format!(
                "t.toml:3:8: root {}: No such file or directory",
                cwd.join("examples/nowhere").display()
            )
        );
        assert_eq!(r.expires, Some(std::time::Duration::from_secs(30 * 86_400)));
    }

    #[test]
    fn host_wildcards_are_validated_at_their_place() {
        let e = err(
            "[[route]]\nhost = [\"ok.example\", \"api.*.example\"]\npath = \"/\"\nupstream = \"app\"",
        );
        assert!(
            e.starts_with("t.toml:2:23: host \"api.*.example\" has a `*` in the wrong place"),
            "{e}"
        );
        let e = err("[[route]]\nhost = \"*example.com\"\npath = \"/\"\nupstream = \"app\"");
        assert!(
            e.starts_with("t.toml:2:8: host \"*example.com\" has a `*`"),
            "{e}"
        );
        let e = err("[[route]]\nhost = []\npath = \"/\"\nupstream = \"app\"");
        assert!(e.starts_with("t.toml:2:8: `host` is empty"), "{e}");
    }

    #[test]
    fn exactly_one_path_kind() {
        assert_eq!(
            err("[[route]]\nupstream = \"app\""),
            "t.toml:1:1: a [[route]] needs one of `path`, `path_exact` or `path_regex`"
        );
        assert_eq!(
            err("[[route]]\npath = \"/\"\npath_regex = \"^/\"\nupstream = \"app\""),
            "t.toml:3:14: a [[route]] takes only one of `path`, `path_exact` or `path_regex`, but has both `path` and `path_regex`"
        );
        assert_eq!(
            err("[[route]]\npath_exact = \"x\"\nupstream = \"app\""),
            "t.toml:2:14: `path_exact` must start with \"/\", found \"x\""
        );
        assert_eq!(
            err("[[route]]\npath_regex = \"^/(v1\"\nupstream = \"app\""),
            "t.toml:2:14: `path_regex` is not a valid regular expression: unclosed group"
        );
    }

    #[test]
    fn exactly_one_target() {
        assert_eq!(
            err("[[route]]\npath = \"/\""),
            "t.toml:1:1: a [[route]] needs `upstream` (proxy), `root` (static files) or `lua.content` to say where requests go"
        );
        assert_eq!(
            err("[[route]]\npath = \"/\"\nupstream = \"app\"\nroot = \"s\""),
            "t.toml:4:8: a [[route]] takes `upstream` or `root`, not both"
        );
        assert_eq!(
            err("[[route]]\npath = \"/\"\nupstream = \"nope\""),
            "t.toml:3:12: route names upstream `nope`, which is not defined (defined upstreams: app)"
        );
        let e = load_str("t.toml", "[[route]]\npath = \"/\"\nupstream = \"nope\"").unwrap_err();
        assert!(e.message.ends_with("(no upstreams are defined)"), "{e}");
        assert!(
            err("[[route]]\npath = \"/\"\nroot = \"\"").starts_with("t.toml:3:8: `root` is empty")
        );
    }

    #[test]
    fn methods_expires_and_rewrite_are_checked() {
        let e = err("[[route]]\npath = \"/\"\nmethods = [\"GET\", \"post\"]\nupstream = \"app\"");
        assert_eq!(
            e,
            "t.toml:3:19: method \"post\" must be written in capitals: \"POST\""
        );
        let e = err("[[route]]\npath = \"/\"\nmethods = []\nupstream = \"app\"");
        assert!(e.starts_with("t.toml:3:11: `methods` is empty"), "{e}");
        let e = err("[[route]]\npath = \"/\"\nupstream = \"app\"\nexpires = \"1h\"");
        assert!(
            e.starts_with("t.toml:4:11: `expires` only applies to static files (`root`)"),
            "{e}"
        );
        let e = err(
            "[[route]]\npath = \"/\"\nupstream = \"app\"\nrewrite = { from = \"[\", to = \"/\" }",
        );
        assert!(e.starts_with("t.toml:4:20: `from` in `rewrite` is not a valid regular expression: unclosed character class"), "{e}");
        let e = err(
            "[[route]]\npath = \"/\"\nupstream = \"app\"\nrewrite = { from = \"^/(.*)\", to = \"/$2\" }",
        );
        assert!(
            e.starts_with("t.toml:4:35: `to` refers to group `2`"),
            "{e}"
        );
        let e = err("[[route]]\npath = \"/\"\nupstream = \"app\"\nrewrite = { from = \"^/\" }");
        assert_eq!(e, "t.toml:4:11: the rewrite of a [[route]] is missing `to`");
    }
}

#[cfg(test)]
mod name_tests {
    use crate::config::load_files;
    use std::path::PathBuf;

    const APP: &str = "[upstream.app]\nservers = [{ addr = \"127.0.0.1:8001\" }]\n";

    fn load(a: &str, b: &str) -> Result<Vec<String>, String> {
        let files = [
            (PathBuf::from("a.toml"), format!("{APP}{a}")),
            (PathBuf::from("b.toml"), b.to_owned()),
        ];
        let config = load_files(&files).map_err(|e| e.to_string())?;
        Ok(config.routes.into_iter().map(|r| r.name).collect())
    }

    fn route(path: &str, name: Option<&str>) -> String {
        let name = name.map_or(String::new(), |n| {
            format!("name = {}\n", toml::Value::String(n.to_owned()))
        });
        format!("[[route]]\n{name}path = {path:?}\nupstream = \"app\"\n")
    }

    #[test]
    fn a_route_is_named_by_its_name_or_its_file_and_line() {
        let names = load(&route("/a", Some("api")), &route("/b", None)).unwrap();
        assert_eq!(names, ["api", "b.toml:1"]);
    }

    #[test]
    fn a_name_used_twice_names_both_places() {
        let e = load(
            &route("/a", Some("api")),
            &format!("\n{}", route("/b", Some("api"))),
        );
        assert_eq!(
            e.unwrap_err(),
            "b.toml:3:8: route name `api` is used twice (also defined at a.toml:4:8)"
        );
        // A name equal to another route's default.
        let e = load(&route("/a", None), &route("/b", Some("a.toml:3")));
        assert!(
            e.unwrap_err()
                .contains("route name `a.toml:3` is used twice")
        );
    }

    #[test]
    fn a_name_must_be_a_short_printable_label() {
        for (name, says) in [
            ("", "`name` is empty"),
            ("a\u{7}b", "control character"),
            (&"x".repeat(129), "longer than 128"),
        ] {
            let e = load(&route("/a", Some(name)), "").unwrap_err();
            assert!(e.starts_with("a.toml:4:8: ") && e.contains(says), "{e}");
        }
    }
}

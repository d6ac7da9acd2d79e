//! Two routes that would take the same requests: an error naming both places.
//!
//! A route matches on host, path and method only, so two routes are duplicates when they
//! have the same path matcher (the same kind and the same value: prefix, exact path or
//! regex pattern), share a host pattern (patterns are lowercased by validation; `*` only
//! equals `*`, since the router tries exact names before wildcards) and accept a common
//! method. The router would always pick the first, so the second one could never serve
//! those requests: without this check an edit that copies a route silently does nothing.

use http::Method;

use crate::config::error::ConfigError;
use crate::config::model::{PathMatch, Route};

/// The first route that duplicates an earlier one, as an error at the later route.
pub(super) fn check(routes: &[Route]) -> Result<(), ConfigError> {
    for (later_at, later) in routes.iter().enumerate() {
        for earlier in &routes[..later_at] {
            if let Some(why) = duplicate(earlier, later) {
                let message = format!("route duplicates {} ({why})", earlier.place);
                return Err(ConfigError::at(&later.place, message));
            }
        }
    }
    Ok(())
}

/// What two routes share, when the second can never be chosen for some request.
fn duplicate(a: &Route, b: &Route) -> Option<String> {
    let (kind, path) = matcher(&a.path);
    if (kind, path) != matcher(&b.path) {
        return None;
    }
    let host = a.hosts.iter().find(|h| b.hosts.contains(h))?;
    let methods = shared_methods(a.methods.as_deref(), b.methods.as_deref())?;
    Some(format!(
        "same host \"{host}\", {kind} \"{path}\", methods {methods}"
    ))
}

/// A path matcher as the key it was written with and its value.
fn matcher(path: &PathMatch) -> (&'static str, &str) {
    match path {
        PathMatch::Prefix(p) => ("path", p),
        PathMatch::Exact(p) => ("path_exact", p),
        PathMatch::Regex(re) => ("path_regex", re.as_str()),
    }
}

/// The methods both lists accept, for the message; `None` when they share none. No list
/// accepts every method, and `GET` accepts `HEAD` too (as in the router).
fn shared_methods(a: Option<&[Method]>, b: Option<&[Method]>) -> Option<String> {
    let written: Vec<&Method> = match (a, b) {
        (None, None) => return Some("any".to_owned()),
        (Some(list), None) | (None, Some(list)) => list.iter().collect(),
        (Some(a), Some(b)) => a.iter().filter(|m| b.contains(m)).collect(),
    };
    if !written.is_empty() {
        let names: Vec<&str> = written.iter().map(|m| m.as_str()).collect();
        return Some(names.join(", "));
    }
    let (a, b) = (a.unwrap_or_default(), b.unwrap_or_default());
    let head = |list: &[Method]| list.contains(&Method::HEAD) || list.contains(&Method::GET);
    (head(a) && head(b)).then(|| "HEAD (GET includes HEAD)".to_owned())
}

#[cfg(test)]
mod tests {
    use crate::config::load_files;
    use std::path::PathBuf;

    const APP: &str = "[upstream.app]\nservers = [{ addr = \"127.0.0.1:8001\" }]\n";

    /// `a.toml` holds the upstream and `first`, `b.toml` holds `second`.
    fn pair(first: &str, second: &str) -> Result<(), String> {
        let files = [
            (PathBuf::from("a.toml"), format!("{APP}{first}")),
            (PathBuf::from("b.toml"), second.to_owned()),
        ];
        load_files(&files).map(drop).map_err(|e| e.to_string())
    }

    fn route(keys: &str) -> String {
        format!("[[route]]\n{keys}\nupstream = \"app\"\n")
    }

    #[test]
    fn the_same_route_in_two_files_names_both() {
        let api = route("path = \"/api\"\nmethods = [\"GET\"]");
        assert_eq!(
            pair(&api, &format!("\n\n{api}")).unwrap_err(),
            "b.toml:3:1: route duplicates a.toml:3:1 (same host \"*\", path \"/api\", methods GET)"
        );
        let cases = [
            (
                "host = \"API.example.com\"\npath_exact = \"/x\"",
                "host = [\"other.example\", \"api.example.com\"]\npath_exact = \"/x\"\nmethods = [\"DELETE\", \"POST\"]",
                "(same host \"api.example.com\", path_exact \"/x\", methods DELETE, POST)",
            ),
            (
                "path_regex = \"^/v[0-9]+/\"",
                "path_regex = \"^/v[0-9]+/\"",
                "(same host \"*\", path_regex \"^/v[0-9]+/\", methods any)",
            ),
        ];
        for (first, second, why) in cases {
            let e = pair(&route(first), &route(second)).unwrap_err();
            assert!(e.ends_with(why), "{e}");
        }
    }

    #[test]
    fn methods_overlap_when_the_sets_meet() {
        let get = route("path = \"/t\"\nmethods = [\"GET\", \"PUT\"]");
        let e = pair(&get, &route("path = \"/t\"\nmethods = [\"PUT\", \"POST\"]")).unwrap_err();
        assert!(e.ends_with("methods PUT)"), "{e}");
        // A route without `methods` takes every method.
        let e = pair(&get, &route("path = \"/t\"")).unwrap_err();
        assert!(e.ends_with("methods GET, PUT)"), "{e}");
        // GET takes HEAD too, so a HEAD route after it would never be chosen.
        let e = pair(&get, &route("path = \"/t\"\nmethods = [\"HEAD\"]")).unwrap_err();
        assert!(e.ends_with("methods HEAD (GET includes HEAD))"), "{e}");
        // Disjoint methods split one path between two routes (the default conf.d does).
        assert_eq!(
            pair(
                &get,
                &route("path = \"/t\"\nmethods = [\"POST\", \"DELETE\"]")
            ),
            Ok(())
        );
    }

    #[test]
    fn routes_that_differ_in_host_or_path_are_distinct() {
        let cases = [
            ("path = \"/a\"", "path = \"/a/\""),
            ("path = \"/a\"", "path_exact = \"/a\""),
            ("path_regex = \"^/a\"", "path = \"/a\""),
            ("path_regex = \"^/a\"", "path_regex = \"^/a$\""),
            (
                "host = \"a.example\"\npath = \"/\"",
                "host = \"b.example\"\npath = \"/\"",
            ),
            // The router tries exact names before `*.suffix` and `*`: not the same host.
            ("host = \"a.example\"\npath = \"/\"", "path = \"/\""),
            (
                "host = \"*.example\"\npath = \"/\"",
                "host = \"a.example\"\npath = \"/\"",
            ),
        ];
        for (first, second) in cases {
            assert_eq!(
                pair(&route(first), &route(second)),
                Ok(()),
                "{first} / {second}"
            );
        }
    }
}

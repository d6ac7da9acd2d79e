//! The routing table: which route serves a request, chosen nginx-style from
//! its Host, path and method, plus regex path rewrites.
//!
//! nginx's auto-redirect is kept too: a route marked
//! [`RouteSpec::auto_redirect`] (an exact or prefix path ending in `/`,
//! proxied) takes a request for its path without the slash and answers it
//! with a redirect to the path with it ([`RouteMatch::Redirect`]), unless
//! a route has that path itself (exact, or a prefix equal to it). As in
//! nginx's `ngx_http_core_find_static_location`, this wins over shorter
//! prefixes and over regexes (nginx decides it before trying them), and
//! methods play no part in it (nginx redirects before `limit_except`).
//!
//! Paths are matched once normalized as nginx does ([`normalize_path`]:
//! decoded, slashes merged, `.` and `..` resolved), so `/%61dmin/` and
//! `/x/../admin/` reach the `/admin/` route.
//!
//! It owns only the matching rules. It knows nothing of connections, config
//! files or what a route does: `T` is whatever the caller compiled a route
//! into, and the caller turns `MethodNotAllowed` / `NotFound` into responses.

use std::borrow::Cow;
use std::collections::HashMap;

use http::Method;
use regex::Regex;

mod normalize;

pub use normalize::{BadPath, encode_path, normalize_path};

/// How a route matches the request path (the path only, without the query).
#[derive(Debug, Clone)]
pub enum PathMatch {
    /// The path starts with this string (nginx `location /prefix`); the
    /// longest matching prefix wins.
    Prefix(String),
    /// The path is exactly this string (nginx `location = /path`); checked
    /// before anything else.
    Exact(String),
    /// The regex matches somewhere in the path (anchor it with `^` / `$`);
    /// checked after exact paths, in config order, first match wins.
    Regex(Regex),
}

/// One route as the config compiled it, before the table is built.
#[derive(Debug, Clone)]
pub struct RouteSpec<T> {
    /// Host patterns this route serves: `"*"`, `"*.example.com"` (any name
    /// ending in `.example.com`, not `example.com` itself) or an exact name.
    /// Matched case-insensitively. An empty list means `["*"]`.
    pub hosts: Vec<String>,
    /// Which paths the route serves.
    pub path: PathMatch,
    /// Methods the route accepts; `None` accepts every method. Listing `GET`
    /// also accepts `HEAD`, as nginx's `limit_except` does.
    pub methods: Option<Vec<Method>>,
    /// What the caller wants back when this route is chosen.
    pub value: T,
    /// The route redirects a request for its path without the trailing
    /// `/` to the path with it (nginx does so for a location ending in `/`
    /// handled by `proxy_pass`). Ignored unless the path is exact or a
    /// prefix, ends in `/`, and is longer than `/`.
    pub auto_redirect: bool,
}

/// The result of [`Router::find`].
#[derive(Debug, PartialEq, Eq)]
pub enum RouteMatch<'a, T> {
    /// This route serves the request.
    Found(&'a T),
    /// Some route matched the host and path, but none accepts the method:
    /// answer 405 with these methods in `Allow` (deduplicated, config order).
    MethodNotAllowed {
        /// Every method accepted by the routes that matched the path.
        allow: Vec<Method>,
    },
    /// No route matched the host and path: answer 404.
    NotFound,
    /// The path is this route's path without its trailing `/` (see the
    /// module docs): answer `301` with `Location` set to the route's path
    /// (the string given, with the query string kept).
    Redirect {
        /// The route (its handlers see the redirect, as a location's
        /// filters do in nginx).
        value: &'a T,
        /// The route's path, with its trailing `/`.
        path: &'a str,
    },
}

/// A compiled, immutable routing table; build it once per config snapshot.
#[derive(Debug)]
pub struct Router<T> {
    /// Every route, in config order; groups refer to them by index.
    routes: Vec<Route<T>>,
    /// Groups for exact host names, looked up without scanning.
    exact_hosts: HashMap<String, Group>,
    /// Groups for `*.suffix` patterns, keyed by the suffix without `*.`.
    wildcard_hosts: HashMap<String, Group>,
    /// The `*` group, used only when no other group matches the host.
    any_host: Option<Group>,
}

/// The parts of a route that the match needs after its group is chosen.
#[derive(Debug)]
struct Route<T> {
    methods: Option<Vec<Method>>,
    value: T,
}

/// The routes of one host pattern, arranged in the order they are tried.
#[derive(Debug, Default)]
struct Group {
    /// Exact paths; several routes may share a path (told apart by method).
    exact: HashMap<String, Vec<usize>>,
    /// Regexes in config order.
    regex: Vec<(Regex, usize)>,
    /// Prefixes, longest first (config order among equal lengths).
    prefix: Vec<(String, usize)>,
    /// Auto-redirecting routes by their path without its trailing `/`.
    redirect: HashMap<String, AutoRedirect>,
    /// Bit `n % 64` set for each key of `redirect` of length `n`: a path
    /// whose length has no bit set is not looked up (most are not), so
    /// routing pays no hash for it.
    redirect_lens: u64,
}

/// The route a path without its trailing `/` is redirected for: an exact
/// route if there is one, else the first prefix route (nginx's location
/// tree node takes its exact location first).
#[derive(Debug)]
struct AutoRedirect {
    /// The route's path, with the slash.
    to: String,
    /// The route.
    index: usize,
    /// Whether the route's path is exact.
    exact: bool,
}

impl Group {
    fn add(&mut self, path: &PathMatch, index: usize, auto_redirect: bool) {
        if auto_redirect {
            self.add_redirect(path, index);
        }
        match path {
            PathMatch::Exact(p) => self.exact.entry(p.clone()).or_default().push(index),
            PathMatch::Regex(re) => self.regex.push((re.clone(), index)),
            PathMatch::Prefix(p) => self.prefix.push((p.clone(), index)),
        }
    }

    /// Registers `path` (an exact path or prefix ending in `/`) as
    /// redirecting its path without the slash to itself.
    fn add_redirect(&mut self, path: &PathMatch, index: usize) {
        let (p, exact) = match path {
            PathMatch::Exact(p) => (p, true),
            PathMatch::Prefix(p) => (p, false),
            PathMatch::Regex(_) => return,
        };
        let Some(bare) = p.strip_suffix('/').filter(|b| !b.is_empty()) else {
            return;
        };
        let this = AutoRedirect {
            to: p.clone(),
            index,
            exact,
        };
        match self.redirect.get_mut(bare) {
            None => {
                self.redirect_lens |= len_bit(bare);
                self.redirect.insert(bare.to_owned(), this);
            }
            Some(have) if exact && !have.exact => *have = this,
            Some(_) => {}
        }
    }

    /// The auto-redirecting route for `path`, unless a route has `path`
    /// itself (exact, or a prefix equal to it).
    fn redirect_for(&self, path: &str) -> Option<(&str, usize)> {
        if self.redirect_lens & len_bit(path) == 0 {
            return None;
        }
        let found = self.redirect.get(path)?;
        if self.exact.contains_key(path) || self.prefix.iter().any(|(p, _)| p == path) {
            return None;
        }
        Some((found.to.as_str(), found.index))
    }

    /// Route indexes whose path matches, in the order they are tried. Lazy,
    /// so regexes run only when no exact path took the request.
    fn candidates<'a>(&'a self, path: &'a str) -> impl Iterator<Item = usize> + 'a {
        let exact = self.exact.get(path).into_iter().flatten().copied();
        let regex = self
            .regex
            .iter()
            .filter(move |(re, _)| re.is_match(path))
            .map(|&(_, i)| i);
        let prefix = self
            .prefix
            .iter()
            .filter(move |(p, _)| path.starts_with(p.as_str()))
            .map(|&(_, i)| i);
        exact.chain(regex).chain(prefix)
    }
}

/// `path`'s bit in [`Group::redirect_lens`].
fn len_bit(path: &str) -> u64 {
    1 << (path.len() % 64)
}

/// A host pattern from the config, normalised.
enum HostPattern {
    Any,
    Wildcard(String),
    Exact(String),
}

impl HostPattern {
    /// Lowercased, trimmed, without a trailing dot: two spellings of one
    /// pattern compare equal.
    fn normalize(pattern: &str) -> String {
        let pattern = pattern.trim();
        pattern
            .strip_suffix('.')
            .unwrap_or(pattern)
            .to_ascii_lowercase()
    }

    /// Parses a pattern already passed through [`HostPattern::normalize`].
    fn parse(pattern: &str) -> Self {
        if pattern == "*" {
            HostPattern::Any
        } else if let Some(suffix) = pattern.strip_prefix("*.") {
            HostPattern::Wildcard(suffix.to_owned())
        } else {
            HostPattern::Exact(pattern.to_owned())
        }
    }
}

impl<T> Router<T> {
    /// Compiles the routes (in config order) into a table: groups by host
    /// pattern, hashes exact hosts and paths, sorts prefixes longest first.
    pub fn new(routes: Vec<RouteSpec<T>>) -> Self {
        let mut router = Router {
            routes: Vec::with_capacity(routes.len()),
            exact_hosts: HashMap::new(),
            wildcard_hosts: HashMap::new(),
            any_host: None,
        };
        for (index, spec) in routes.into_iter().enumerate() {
            let mut patterns: Vec<String> = spec
                .hosts
                .iter()
                .map(|h| HostPattern::normalize(h))
                .collect();
            if patterns.is_empty() {
                patterns.push("*".to_owned());
            }
            // A route listing the same host twice still belongs to it once.
            patterns.sort_unstable();
            patterns.dedup();
            for pattern in &patterns {
                let group = match HostPattern::parse(pattern) {
                    HostPattern::Any => router.any_host.get_or_insert_with(Group::default),
                    HostPattern::Wildcard(suffix) => {
                        router.wildcard_hosts.entry(suffix).or_default()
                    }
                    HostPattern::Exact(name) => router.exact_hosts.entry(name).or_default(),
                };
                group.add(&spec.path, index, spec.auto_redirect);
            }
            router.routes.push(Route {
                methods: spec.methods,
                value: spec.value,
            });
        }
        let groups = router
            .exact_hosts
            .values_mut()
            .chain(router.wildcard_hosts.values_mut())
            .chain(router.any_host.as_mut());
        for group in groups {
            // Stable sort: equal lengths keep config order.
            group
                .prefix
                .sort_by_key(|(p, _)| std::cmp::Reverse(p.len()));
        }
        router
    }

    /// Finds the route for a request. `host` is the Host header as received
    /// (any case, maybe with `:port` or `[v6]:port`); `path` is the URI path
    /// without the query string, already through [`normalize_path`].
    pub fn find(&self, host: &str, path: &str, method: &Method) -> RouteMatch<'_, T> {
        let host = normalize_host(host);
        let Some(group) = self.group_for(&host) else {
            return RouteMatch::NotFound;
        };
        if let Some((to, index)) = group.redirect_for(path)
            && let Some(route) = self.routes.get(index)
        {
            return RouteMatch::Redirect {
                value: &route.value,
                path: to,
            };
        }
        let mut path_matched = false;
        for index in group.candidates(path) {
            let Some(route) = self.routes.get(index) else {
                continue;
            };
            path_matched = true;
            if allows(route.methods.as_deref(), method) {
                return RouteMatch::Found(&route.value);
            }
        }
        if !path_matched {
            return RouteMatch::NotFound;
        }
        // Rare path: walk the candidates again to build the Allow list.
        let mut allow: Vec<Method> = Vec::new();
        for index in group.candidates(path) {
            let Some(methods) = self.routes.get(index).and_then(|r| r.methods.as_deref()) else {
                continue;
            };
            for m in methods {
                if !allow.contains(m) {
                    allow.push(m.clone());
                }
            }
        }
        if allow.contains(&Method::GET) && !allow.contains(&Method::HEAD) {
            allow.push(Method::HEAD);
        }
        RouteMatch::MethodNotAllowed { allow }
    }

    /// Number of routes in the table (a route with several hosts counts once).
    pub fn len(&self) -> usize {
        self.routes.len()
    }

    /// True when the table has no routes.
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// The most specific group for a normalised host: exact name, then the
    /// longest `*.suffix`, then `*`. Only that group's routes are considered.
    fn group_for(&self, host: &str) -> Option<&Group> {
        if let Some(group) = self.exact_hosts.get(host) {
            return Some(group);
        }
        if !self.wildcard_hosts.is_empty() {
            // Left to right, so the longest suffix is tried first; a dot at
            // 0 would leave an empty first label, which `*.` does not match.
            for (dot, _) in host.match_indices('.').filter(|&(i, _)| i > 0) {
                if let Some(group) = host.get(dot + 1..).and_then(|s| self.wildcard_hosts.get(s)) {
                    return Some(group);
                }
            }
        }
        self.any_host.as_ref()
    }
}

/// Whether a route's method list accepts `method`; `GET` implies `HEAD`.
fn allows(methods: Option<&[Method]>, method: &Method) -> bool {
    match methods {
        None => true,
        Some(list) => {
            list.contains(method) || (*method == Method::HEAD && list.contains(&Method::GET))
        }
    }
}

/// Strips the port and a trailing dot and lowercases, borrowing when the
/// host is already clean (the common case).
fn normalize_host(host: &str) -> Cow<'_, str> {
    let host = strip_port(host);
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(host.to_ascii_lowercase())
    } else {
        Cow::Borrowed(host)
    }
}

/// `example.com:8080` → `example.com`, `[::1]:8080` → `[::1]`; a bare IPv6
/// address (several colons, no brackets) is left alone.
fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return match host.find(']') {
            Some(end) => host.get(..=end).unwrap_or(host),
            None => host,
        };
    }
    match host.rfind(':') {
        Some(colon) if !host[..colon].contains(':') => &host[..colon],
        _ => host,
    }
}

/// A regex path rewrite: `from` is matched against the path and the first
/// match is replaced by `to`, which may use `$1` / `${name}` captures.
#[derive(Debug, Clone)]
pub struct Rewrite {
    /// What to look for in the path.
    pub from: Regex,
    /// The replacement, with `$N` / `${name}` expanded as by
    /// [`Regex::replace`] (`$$` is a literal `$`).
    pub to: String,
}

impl Rewrite {
    /// The rewritten path, or `None` when `from` does not match `path`.
    pub fn apply(&self, path: &str) -> Option<String> {
        let caps = self.from.captures(path)?;
        let whole = caps.get(0)?;
        let mut out = String::with_capacity(path.len() + self.to.len());
        out.push_str(&path[..whole.start()]);
        caps.expand(&self.to, &mut out);
        out.push_str(&path[whole.end()..]);
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn re(s: &str) -> Regex {
        Regex::new(s).unwrap()
    }

    fn route(host: &str, path: PathMatch, value: &'static str) -> RouteSpec<&'static str> {
        RouteSpec {
            hosts: vec![host.to_owned()],
            path,
            methods: None,
            value,
            auto_redirect: false,
        }
    }

    /// A route that redirects its path without the trailing slash.
    fn redirecting(path: PathMatch, value: &'static str) -> RouteSpec<&'static str> {
        RouteSpec {
            auto_redirect: true,
            ..route("*", path, value)
        }
    }

    fn prefix(p: &str) -> PathMatch {
        PathMatch::Prefix(p.to_owned())
    }

    fn exact(p: &str) -> PathMatch {
        PathMatch::Exact(p.to_owned())
    }

    fn get<'a>(
        router: &'a Router<&'static str>,
        host: &str,
        path: &str,
    ) -> RouteMatch<'a, &'static str> {
        router.find(host, path, &Method::GET)
    }

    fn redirect<'a>(value: &'a &'static str, path: &'a str) -> RouteMatch<'a, &'static str> {
        RouteMatch::Redirect { value, path }
    }

    #[test]
    fn a_path_without_the_slash_redirects_over_shorter_prefixes_and_regexes() {
        let router = Router::new(vec![
            route("*", prefix("/"), "root"),
            route("*", PathMatch::Regex(re("^/t($|x)")), "regex"),
            redirecting(prefix("/t/"), "t"),
            redirecting(exact("/e/"), "e"),
            redirecting(prefix("/a/b/"), "ab"),
        ]);
        assert_eq!(get(&router, "h", "/t"), redirect(&"t", "/t/"));
        assert_eq!(get(&router, "h", "/e"), redirect(&"e", "/e/"));
        assert_eq!(get(&router, "h", "/a/b"), redirect(&"ab", "/a/b/"));
        // Methods play no part (nginx redirects before `limit_except`).
        assert_eq!(router.find("h", "/t", &Method::POST), redirect(&"t", "/t/"));
        // Only the path without the slash: anything else routes as ever.
        assert_eq!(get(&router, "h", "/t/"), RouteMatch::Found(&"t"));
        assert_eq!(get(&router, "h", "/t/x"), RouteMatch::Found(&"t"));
        assert_eq!(get(&router, "h", "/tx"), RouteMatch::Found(&"regex"));
        assert_eq!(get(&router, "h", "/a"), RouteMatch::Found(&"root"));
        assert_eq!(get(&router, "h", "/a/b/c"), RouteMatch::Found(&"ab"));
        // A length that shares `/t`'s bit (2 + 64) is looked up, and routes.
        let long = format!("/t/{}", "x".repeat(63));
        assert_eq!(get(&router, "h", &long), RouteMatch::Found(&"t"));
    }

    #[test]
    fn a_route_for_the_path_itself_is_not_redirected() {
        let router = Router::new(vec![
            redirecting(prefix("/t/"), "t"),
            route("*", exact("/t"), "exact"),
            redirecting(prefix("/q/"), "q"),
            route("*", prefix("/q"), "prefix"),
            // Unmarked, a regex, or `/` itself: never redirects.
            route("*", prefix("/plain/"), "plain"),
            redirecting(PathMatch::Regex(re("^/r/")), "regex"),
            redirecting(prefix("/"), "root"),
        ]);
        assert_eq!(get(&router, "h", "/t"), RouteMatch::Found(&"exact"));
        assert_eq!(get(&router, "h", "/q"), RouteMatch::Found(&"prefix"));
        assert_eq!(get(&router, "h", "/plain"), RouteMatch::Found(&"root"));
        assert_eq!(get(&router, "h", "/r"), RouteMatch::Found(&"root"));
        assert_eq!(get(&router, "h", ""), RouteMatch::NotFound);
    }

    #[test]
    fn an_exact_route_is_redirected_for_before_a_prefix_and_hosts_stay_apart() {
        let router = Router::new(vec![
            redirecting(prefix("/t/"), "prefix"),
            redirecting(exact("/t/"), "exact"),
            RouteSpec {
                auto_redirect: true,
                ..route("a.example", prefix("/only-a/"), "a")
            },
        ]);
        assert_eq!(get(&router, "h", "/t"), redirect(&"exact", "/t/"));
        assert_eq!(
            get(&router, "a.example", "/only-a"),
            redirect(&"a", "/only-a/")
        );
        assert_eq!(get(&router, "b.example", "/only-a"), RouteMatch::NotFound);
    }

    #[test]
    fn exact_beats_regex_beats_longest_prefix() {
        let router = Router::new(vec![
            route("*", prefix("/"), "root"),
            route("*", prefix("/api/"), "api"),
            route("*", prefix("/api/v1/"), "api-v1"),
            route(
                "*",
                PathMatch::Regex(re(r"^/api/v[0-9]+/users")),
                "users-re",
            ),
            route("*", PathMatch::Regex(re(r"^/api/v1/users/me")), "second-re"),
            route("*", exact("/api/v1/users"), "users-exact"),
        ]);
        assert_eq!(router.len(), 6);
        assert!(!router.is_empty());
        assert_eq!(
            get(&router, "h", "/api/v1/users"),
            RouteMatch::Found(&"users-exact")
        );
        // The first regex in config order wins, even if a later one is longer.
        assert_eq!(
            get(&router, "h", "/api/v1/users/me"),
            RouteMatch::Found(&"users-re")
        );
        assert_eq!(
            get(&router, "h", "/api/v1/orders"),
            RouteMatch::Found(&"api-v1")
        );
        assert_eq!(
            get(&router, "h", "/api/v2/orders"),
            RouteMatch::Found(&"api")
        );
        assert_eq!(get(&router, "h", "/other"), RouteMatch::Found(&"root"));
    }

    #[test]
    fn host_exact_then_longest_wildcard_then_any() {
        let router = Router::new(vec![
            route("*", prefix("/"), "any"),
            route("*.example.com", prefix("/"), "wild"),
            route("*.api.example.com", prefix("/"), "wild-api"),
            route("www.example.com", prefix("/"), "exact"),
        ]);
        assert_eq!(
            get(&router, "www.example.com", "/"),
            RouteMatch::Found(&"exact")
        );
        assert_eq!(
            get(&router, "a.example.com", "/"),
            RouteMatch::Found(&"wild")
        );
        assert_eq!(
            get(&router, "a.b.example.com", "/"),
            RouteMatch::Found(&"wild")
        );
        assert_eq!(
            get(&router, "v1.api.example.com", "/"),
            RouteMatch::Found(&"wild-api")
        );
        // `*.example.com` does not match the bare domain.
        assert_eq!(get(&router, "example.com", "/"), RouteMatch::Found(&"any"));
        assert_eq!(get(&router, "other.org", "/"), RouteMatch::Found(&"any"));
        assert_eq!(get(&router, "", "/"), RouteMatch::Found(&"any"));
    }

    #[test]
    fn host_port_case_and_trailing_dot_are_normalised() {
        let router = Router::new(vec![
            route("www.example.com", prefix("/"), "www"),
            route("*.example.com", prefix("/"), "wild"),
            route("[::1]", prefix("/"), "v6"),
            route("*", prefix("/"), "any"),
        ]);
        assert_eq!(
            get(&router, "WWW.Example.COM:8080", "/"),
            RouteMatch::Found(&"www")
        );
        assert_eq!(
            get(&router, "www.example.com.", "/"),
            RouteMatch::Found(&"www")
        );
        assert_eq!(
            get(&router, "A.EXAMPLE.com:443", "/"),
            RouteMatch::Found(&"wild")
        );
        assert_eq!(get(&router, "[::1]:8080", "/"), RouteMatch::Found(&"v6"));
        assert_eq!(get(&router, "[::1]", "/"), RouteMatch::Found(&"v6"));
        assert_eq!(get(&router, "[::2]:8080", "/"), RouteMatch::Found(&"any"));
        assert!(matches!(
            normalize_host("example.com:80"),
            Cow::Borrowed("example.com")
        ));
        assert!(matches!(normalize_host("Example.com"), Cow::Owned(_)));
        assert_eq!(strip_port("::1"), "::1");
    }

    #[test]
    fn no_match_is_not_found() {
        let router = Router::new(vec![route("*", prefix("/api/"), "api")]);
        assert_eq!(get(&router, "h", "/web"), RouteMatch::NotFound);
        let only_exact_host = Router::new(vec![route("a.com", prefix("/"), "a")]);
        assert_eq!(get(&only_exact_host, "b.com", "/"), RouteMatch::NotFound);
        let empty: Router<&str> = Router::new(vec![]);
        assert!(empty.is_empty());
        assert_eq!(get(&empty, "h", "/"), RouteMatch::NotFound);
    }

    #[test]
    fn chosen_host_group_does_not_fall_back_to_any() {
        let router = Router::new(vec![
            route("*", prefix("/"), "any"),
            route("api.example.com", prefix("/v1/"), "api"),
            route("*.example.com", exact("/only"), "wild"),
        ]);
        assert_eq!(
            get(&router, "api.example.com", "/v1/x"),
            RouteMatch::Found(&"api")
        );
        assert_eq!(
            get(&router, "api.example.com", "/web"),
            RouteMatch::NotFound
        );
        assert_eq!(get(&router, "b.example.com", "/web"), RouteMatch::NotFound);
        assert_eq!(get(&router, "other.org", "/web"), RouteMatch::Found(&"any"));
    }

    #[test]
    fn route_with_several_hosts_joins_each_group() {
        let router = Router::new(vec![
            RouteSpec {
                hosts: vec!["a.com".into(), "*.b.com".into(), "A.com.".into()],
                path: prefix("/"),
                methods: None,
                value: "shared",
                auto_redirect: false,
            },
            route("*", prefix("/"), "any"),
        ]);
        assert_eq!(router.len(), 2);
        // Two spellings of `a.com` put the route in its group once.
        assert_eq!(
            router.exact_hosts.get("a.com").map(|g| g.prefix.len()),
            Some(1)
        );
        assert_eq!(get(&router, "a.com", "/"), RouteMatch::Found(&"shared"));
        assert_eq!(get(&router, "x.b.com", "/"), RouteMatch::Found(&"shared"));
        assert_eq!(get(&router, "c.com", "/"), RouteMatch::Found(&"any"));
    }

    #[test]
    fn method_filter_skips_to_next_candidate() {
        let router = Router::new(vec![
            RouteSpec {
                methods: Some(vec![Method::POST]),
                ..route("*", exact("/items"), "post-exact")
            },
            RouteSpec {
                methods: Some(vec![Method::PUT]),
                ..route("*", PathMatch::Regex(re("^/items")), "put-re")
            },
            RouteSpec {
                methods: Some(vec![Method::GET]),
                ..route("*", prefix("/items"), "get-prefix")
            },
            route("*", prefix("/"), "fallback"),
        ]);
        assert_eq!(
            router.find("h", "/items", &Method::POST),
            RouteMatch::Found(&"post-exact")
        );
        assert_eq!(
            router.find("h", "/items", &Method::PUT),
            RouteMatch::Found(&"put-re")
        );
        assert_eq!(
            router.find("h", "/items", &Method::GET),
            RouteMatch::Found(&"get-prefix")
        );
        // HEAD rides on GET, as with nginx's limit_except.
        assert_eq!(
            router.find("h", "/items", &Method::HEAD),
            RouteMatch::Found(&"get-prefix")
        );
        assert_eq!(
            router.find("h", "/items", &Method::DELETE),
            RouteMatch::Found(&"fallback")
        );
    }

    #[test]
    fn method_not_allowed_lists_the_union() {
        let router = Router::new(vec![
            RouteSpec {
                methods: Some(vec![Method::POST, Method::GET]),
                ..route("*", exact("/items"), "a")
            },
            RouteSpec {
                methods: Some(vec![Method::GET, Method::PUT]),
                ..route("*", prefix("/items"), "b")
            },
            RouteSpec {
                methods: Some(vec![Method::DELETE]),
                ..route("*", prefix("/other"), "c")
            },
        ]);
        assert_eq!(
            router.find("h", "/items", &Method::PATCH),
            RouteMatch::MethodNotAllowed {
                allow: vec![Method::POST, Method::GET, Method::PUT, Method::HEAD]
            }
        );
        assert_eq!(
            router.find("h", "/items/1", &Method::POST),
            RouteMatch::MethodNotAllowed {
                allow: vec![Method::GET, Method::PUT, Method::HEAD]
            }
        );
        assert_eq!(
            router.find("h", "/nothing", &Method::PATCH),
            RouteMatch::NotFound
        );
    }

    #[test]
    fn rewrite_expands_captures() {
        let rw = Rewrite {
            from: re(r"^/v1/(?P<rest>.*)$"),
            to: "/api/${rest}".to_owned(),
        };
        assert_eq!(rw.apply("/v1/users/7").as_deref(), Some("/api/users/7"));
        assert_eq!(rw.apply("/v2/users"), None);

        let numbered = Rewrite {
            from: re(r"/old/([a-z]+)"),
            to: "/new/$1/x".to_owned(),
        };
        // Only the matched part is replaced; the rest of the path is kept.
        assert_eq!(
            numbered.apply("/a/old/page/tail").as_deref(),
            Some("/a/new/page/x/tail")
        );
    }
}

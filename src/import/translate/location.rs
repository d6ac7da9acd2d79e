//! One `location` → one `[[route]]`: its matcher, its target (upstream
//! with nginx's proxy_pass URI rules, static root with nginx's `root` /
//! `alias` rules, a Lua content handler, or the answer of a `return`),
//! its Lua phases, limits, cache and policies.
//!
//! Matching: moongate tries exact paths, then regexes in order, then the
//! longest prefix. nginx's `^~` (a prefix that stops the regexes) becomes
//! a regex tried before the others when the server has regexes, unless a
//! longer ordinary prefix lies under it.

use toml::Value;
use toml::value::Table as TomlTable;

use super::super::model::{PathOut, Route, Table};
use super::super::parse::{Directive, Pos};
use super::super::report::Severity;
use super::super::values::{duration, has_vars, lua_str};
use super::Tx;
use super::program::{self, Context};
use super::scope::{LuaSrc, PHASES, Scope, lua_handler};
use super::upstream::proxy_pass;

/// A server's routes as they are made.
#[derive(Debug)]
pub struct ServerBuild<'d> {
    /// The server's place among the http block's servers.
    pub index: usize,
    /// The server-level rewrite directives, compiled (run first on every route).
    pub prelude: Option<String>,
    /// The server's top-level locations.
    pub locations: Vec<&'d Directive>,
    /// Routes in location order.
    pub routes: Vec<Route>,
    /// `^~` locations made regexes: tried before every other regex.
    pub caret_regexes: Vec<Route>,
}

/// How a location matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Exact,
    Prefix,
    Caret,
    Regex,
}

/// `location [=|~|~*|^~] PATH` → kind and path (`(?i)` for `~*`).
fn matcher(args: &[&str]) -> Result<(Kind, String), String> {
    let (kind, path) = match args {
        ["=", p] => (Kind::Exact, (*p).to_owned()),
        ["~", p] => (Kind::Regex, (*p).to_owned()),
        ["~*", p] => (Kind::Regex, format!("(?i){p}")),
        ["^~", p] => (Kind::Caret, (*p).to_owned()),
        [p] if p.starts_with('@') => {
            return Err(
                "a named location: moongate has none (ngx.exec(\"@name\") is an error)".into(),
            );
        }
        [p] if p.starts_with("=/") => (Kind::Exact, p[1..].to_owned()),
        [p] if p.starts_with("~*") => (Kind::Regex, format!("(?i){}", &p[2..])),
        [p] if p.starts_with('~') => (Kind::Regex, p[1..].to_owned()),
        [p] if p.starts_with("^~") => (Kind::Caret, p[2..].to_owned()),
        [p] => (Kind::Prefix, (*p).to_owned()),
        _ => return Err("not a location form nginx takes".into()),
    };
    if kind == Kind::Regex {
        regex::Regex::new(&path).map_err(|e| {
            let why = e.to_string().lines().last().unwrap_or_default().to_owned();
            format!("moongate's regexes (Rust's regex crate) cannot take this one: {why}")
        })?;
    }
    Ok((kind, path))
}

/// A short name for files: `/api/v1/` → `api-v1`.
fn slug(path: &str) -> String {
    let s: String = path
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    let s: Vec<&str> = s.split('-').filter(|p| !p.is_empty()).collect();
    let s = s.join("-");
    let s: String = s.chars().take(40).collect();
    if s.is_empty() { "root".into() } else { s }
}

/// Every location (nested too) of a list, with its parsed matcher.
fn all_matchers(locs: &[&Directive], out: &mut Vec<(Kind, String)>) {
    for l in locs {
        let args: Vec<&str> = l.args.iter().map(|a| a.text.as_str()).collect();
        if let Ok(m) = matcher(&args) {
            out.push(m);
        }
        let nested: Vec<&Directive> = l
            .children()
            .iter()
            .filter(|c| c.name == "location")
            .collect();
        all_matchers(&nested, out);
    }
}

/// What a location's own (not inherited) directives say.
#[derive(Default)]
struct Own<'d> {
    proxy: Option<&'d Directive>,
    alias: Option<(String, Pos)>,
    content: Option<LuaSrc>,
    stmts: Vec<&'d Directive>,
    internal: bool,
    methods: Option<Vec<String>>,
    nested: Vec<&'d Directive>,
    auth_sets: Vec<(String, String)>,
    try_files: Option<&'d Directive>,
    /// A content handler moongate has no equivalent of (`stub_status`,
    /// `fastcgi_pass`, ...): the location gets no route.
    lost_handler: bool,
}

/// nginx content handlers the import cannot translate.
const LOST_HANDLERS: &[&str] = &[
    "stub_status",
    "fastcgi_pass",
    "uwsgi_pass",
    "scgi_pass",
    "grpc_pass",
    "memcached_pass",
    "empty_gif",
    "perl",
    "js_content",
    "mp4",
    "flv",
    "autoindex",
];

impl Tx<'_> {
    pub(super) fn location<'d>(
        &mut self,
        build: &mut ServerBuild<'d>,
        parent: &Scope,
        d: &'d Directive,
        outer: Option<&str>,
    ) {
        let args: Vec<&str> = d.args.iter().map(|a| a.text.as_str()).collect();
        let (kind, path) = match matcher(&args) {
            Ok(m) => m,
            Err(why) => {
                self.note_d(d, Severity::NotTranslated, why);
                return;
            }
        };
        if let Some(outer) = outer {
            let why = format!(
                "nested in location {outer}: it becomes a route of its own (moongate's routes do not nest)"
            );
            self.note_d(d, Severity::Differs, why);
        }
        let mut scope = parent.child();
        let own = self.own_directives(d, &mut scope);
        if own.internal && self.is_auth_target(build, kind, &path) {
            let why = "used by auth_request: translated into the forward_auth policy of the routes that ask it";
            self.note_d(d, Severity::Unneeded, why);
            return;
        }
        let path_out = self.path_out(build, d, kind, &path, own.alias.is_some());
        let label = format!("s{}-{}", build.index, slug(&path));
        let mut keys = Table::default();
        let mut lua: Vec<(&'static str, String)> = Vec::new();
        let mut rewrite_pre = String::new();
        if own.internal {
            rewrite_pre.push_str("if not ngx.req.is_internal() then return ngx.exit(404) end\n");
        }
        if let Some(p) = &build.prelude {
            rewrite_pre.push_str(p);
        }
        let ctx = Context {
            default_type: scope.default_type.clone(),
        };
        let compiled = match program::compile(&own.stmts, &ctx, false) {
            Ok(c) if !own.stmts.is_empty() => Some(c),
            Ok(_) => None,
            Err((i, why)) => {
                self.note_d(own.stmts[i], Severity::NotTranslated, why);
                None
            }
        };
        let terminates = compiled.as_ref().is_some_and(|c| c.terminates);
        let rewrites = compiled.as_ref().is_some_and(|c| c.rewrites);
        let mut proxied = false;
        let mut program_is_content = false;
        let mut uri_replace = String::new();
        if let Some(pd) = own.proxy {
            if let Some(src) = &own.content {
                let why =
                    "the location also has proxy_pass, which nginx uses as its content handler";
                self.note(src.pos(), "content_by_lua*", Severity::NotTranslated, why);
            }
            match pd.arg(0).map(proxy_pass) {
                Some(Ok(pp)) => {
                    self.last_proxy_pos = pd.pos.clone();
                    let name = self.upstream_for(&pp, &scope, &pd.pos);
                    keys.set("upstream", name);
                    proxied = true;
                    if let Some(uri) = &pp.uri {
                        uri_replace = self.proxy_uri(pd, kind, &path, uri, rewrites, &mut keys);
                    }
                }
                Some(Err(why)) => self.note_d(pd, Severity::NotTranslated, why),
                None => self.note_d(pd, Severity::NotTranslated, "no URL"),
            }
        } else if let Some(src) = &own.content {
            if let Some(p) = self.lua_file(src, &format!("{label}-content"), None) {
                lua.push(("content", p));
            }
        } else if terminates {
            program_is_content = true;
        } else if own.lost_handler {
            let why = "its content handler is not translated: no route";
            self.note_d(d, Severity::NotTranslated, why);
            return;
        } else {
            let strips = matches!(path_out, PathOut::Prefix(_));
            self.static_target(&scope, &own, kind, strips, &path, d, &mut keys);
            let missing = keys
                .get("root")
                .and_then(toml::Value::as_str)
                .is_some_and(|r| !std::path::Path::new(r).is_dir());
            if missing && compiled.is_some() && own.alias.is_none() {
                // A location of rewrites only: nginx serves the files of
                // an inherited root that does not exist here (404s).
                let why = "its rewrites run as a content handler answering 404 when none applies: \
                           the root nginx would serve files from does not exist here";
                self.note_d(d, Severity::Differs, why);
                keys.keys.retain(|(k, _)| k != "root" && k != "expires");
                program_is_content = true;
            }
        }
        if !uri_replace.is_empty() {
            rewrite_pre.push_str("local import_uri = ngx.var.uri\n");
        }
        if let Some(c) = &compiled {
            if !program_is_content {
                rewrite_pre.push_str(&c.code);
            }
        }
        rewrite_pre.push_str(&uri_replace);
        if program_is_content {
            let mut code = compiled
                .as_ref()
                .map(|c| c.code.clone())
                .unwrap_or_default();
            if !terminates {
                code.push_str("return ngx.exit(404)\n");
            }
            let from = format!(
                "the rewrite-module directives of location {} ({})",
                args.join(" "),
                d.pos
            );
            let p = self.generated_lua(&format!("{label}-content"), &code, &from);
            lua.push(("content", p));
        }
        match (scope.lua("rewrite").cloned(), rewrite_pre.is_empty()) {
            (Some(src), pre_empty) => {
                let pre = (!pre_empty).then_some(rewrite_pre.as_str());
                if let Some(p) = self.lua_file(&src, &format!("{label}-rewrite"), pre) {
                    lua.push(("rewrite", p));
                }
            }
            (None, false) => {
                let from = format!("location {} ({})", args.join(" "), d.pos);
                let p = self.generated_lua(&format!("{label}-rewrite"), &rewrite_pre, &from);
                lua.push(("rewrite", p));
            }
            (None, true) => {}
        }
        for phase in ["access", "header_filter", "body_filter", "log"] {
            if let Some(src) = scope.lua(phase).cloned() {
                if let Some(p) = self.lua_file(&src, &format!("{label}-{phase}"), None) {
                    lua.push((phase, p));
                }
            }
        }
        if program_is_content
            && (scope.lua("access").is_some() || !scope.limit_req.get().is_empty())
        {
            let why = "the location's `return` answers in the content phase here, after its access handler and limits (nginx answers before them)";
            self.note_d(d, Severity::Differs, why);
        }
        self.finish_route(build, &scope, &own, d, kind, path_out, keys, lua, proxied);
        let here = args.join(" ");
        for n in &own.nested {
            self.location(build, &scope, n, Some(&here));
        }
    }

    fn own_directives<'d>(&mut self, d: &'d Directive, scope: &mut Scope) -> Own<'d> {
        let mut own = Own::default();
        for c in d.children() {
            let args: Vec<&str> = c.args.iter().map(|a| a.text.as_str()).collect();
            match (c.name.as_str(), args.as_slice()) {
                ("location", _) => own.nested.push(c),
                ("proxy_pass", [_]) => own.proxy = Some(c),
                ("alias", [a]) => own.alias = Some(((*a).to_owned(), c.pos.clone())),
                ("rewrite" | "return" | "set" | "break", _) => own.stmts.push(c),
                ("internal", []) => own.internal = true,
                ("try_files", _) => own.try_files = Some(c),
                ("auth_request_set", [var, value]) => {
                    match (var.strip_prefix('$'), value.strip_prefix("$upstream_http_")) {
                        (Some(v), Some(h)) => {
                            own.auth_sets.push((v.to_owned(), h.replace('_', "-")))
                        }
                        _ => self.note_d(
                            c,
                            Severity::NotTranslated,
                            "only `auth_request_set $var $upstream_http_NAME` is translated",
                        ),
                    }
                }
                ("limit_except", methods) => {
                    let denies_all =
                        matches!(c.children(), [x] if x.name == "deny" && x.arg(0) == Some("all"));
                    if denies_all {
                        own.methods =
                            Some(methods.iter().map(|m| m.to_ascii_uppercase()).collect());
                        let why = "other methods get 405 with Allow here; nginx answers 403";
                        self.note_d(c, Severity::Differs, why);
                    } else {
                        self.note_d(
                            c,
                            Severity::NotTranslated,
                            "only `limit_except METHODS { deny all; }` is translated",
                        );
                    }
                }
                (name, _) if name.starts_with("content_by_lua") => match lua_handler(c) {
                    Some((_, Ok(src))) => own.content = Some(src),
                    _ => self.note_d(
                        c,
                        Severity::NotTranslated,
                        "not written as ngx_lua takes it",
                    ),
                },
                (name, _) if LOST_HANDLERS.contains(&name) => {
                    own.lost_handler |= name != "autoindex" || c.arg(0) == Some("on");
                    self.unknown(c, "a location");
                }
                _ => self.apply_scope(scope, c, "a location"),
            }
        }
        own
    }

    fn is_auth_target(&self, build: &ServerBuild<'_>, kind: Kind, path: &str) -> bool {
        fn asks(d: &Directive, kind: Kind, path: &str) -> bool {
            d.children().iter().any(|c| {
                (c.name == "auth_request"
                    && c.arg(0).is_some_and(|u| match kind {
                        Kind::Exact => u == path,
                        Kind::Prefix | Kind::Caret => u.starts_with(path),
                        Kind::Regex => false,
                    }))
                    || asks(c, kind, path)
            })
        }
        build.locations.iter().any(|l| asks(l, kind, path))
            || self
                .http_scope
                .auth_request
                .as_ref()
                .is_some_and(|a| a.as_ref().is_some_and(|(u, _)| u == path))
    }

    fn path_out(
        &mut self,
        build: &ServerBuild<'_>,
        d: &Directive,
        kind: Kind,
        path: &str,
        alias: bool,
    ) -> PathOut {
        match kind {
            Kind::Exact => PathOut::Exact(path.to_owned()),
            Kind::Prefix => PathOut::Prefix(path.to_owned()),
            Kind::Regex => PathOut::Regex(path.to_owned()),
            Kind::Caret => {
                let mut all = Vec::new();
                all_matchers(&build.locations, &mut all);
                let has_regex = all.iter().any(|(k, _)| *k == Kind::Regex);
                if !has_regex {
                    return PathOut::Prefix(path.to_owned());
                }
                let longer = all.iter().any(|(k, p)| {
                    *k == Kind::Prefix && p.len() > path.len() && p.starts_with(path)
                });
                if longer || alias {
                    let why = if alias {
                        "kept a prefix (it has an alias): regex routes are tried before it here, nginx's ^~ stops them"
                    } else {
                        "kept a prefix (a longer prefix lies under it): regex routes are tried before it here, nginx's ^~ stops them"
                    };
                    self.note_d(d, Severity::Differs, why);
                    return PathOut::Prefix(path.to_owned());
                }
                PathOut::Regex(format!("^{}", regex::escape(path)))
            }
        }
    }

    /// proxy_pass with a URI part: the matched prefix (or exact path) is
    /// replaced by it. As a route `rewrite` when nothing else changes the
    /// URI; in the generated rewrite handler (only when no rewrite
    /// directive changed the URI, as nginx) otherwise.
    fn proxy_uri(
        &mut self,
        pd: &Directive,
        kind: Kind,
        path: &str,
        uri: &str,
        rewrites: bool,
        keys: &mut Table,
    ) -> String {
        if kind == Kind::Regex {
            let why = "a URI part in a regex location (nginx refuses it outside `if`); the request URI is passed as is";
            self.note_d(pd, Severity::NotTranslated, why);
            return String::new();
        }
        if uri == "$request_uri" {
            let why = "moongate passes the request's (possibly rewritten) URI, which equals $request_uri unless a rewrite changed it";
            self.note_d(pd, Severity::Differs, why);
            return String::new();
        }
        if has_vars(uri) {
            self.note_d(pd, Severity::NotTranslated, "a URI part with variables");
            return String::new();
        }
        let exact = kind == Kind::Exact;
        if rewrites {
            let set = if exact {
                format!("ngx.req.set_uri({})", lua_str(uri))
            } else {
                format!(
                    "ngx.req.set_uri({} .. string.sub(import_uri, {}))",
                    lua_str(uri),
                    path.len() + 1
                )
            };
            return format!(
                "-- {}: the URI part replaces the location's path unless a rewrite changed the URI\n\
                 if ngx.var.uri == import_uri then {set} end\n",
                pd.pos
            );
        }
        let from = if exact {
            format!("^{}$", regex::escape(path))
        } else {
            format!("^{}", regex::escape(path))
        };
        let mut rw = TomlTable::new();
        rw.insert("from".into(), Value::from(from));
        rw.insert("to".into(), Value::from(uri.replace('$', "$$")));
        keys.set("rewrite", Value::Table(rw));
        String::new()
    }

    /// `strips`: the route is a prefix, which moongate takes off the path.
    #[allow(clippy::too_many_arguments)]
    fn static_target(
        &mut self,
        scope: &Scope,
        own: &Own<'_>,
        kind: Kind,
        strips: bool,
        path: &str,
        d: &Directive,
        keys: &mut Table,
    ) {
        let root = match (&own.alias, &scope.root) {
            (Some((a, pos)), _) if kind == Kind::Exact && !has_vars(a) && !a.ends_with('/') => {
                // The location is one file: its directory as the root,
                // the path rewritten to the file's name.
                let a = self.nginx_path(a, pos, "alias");
                let (dir, file) = a.rsplit_once('/').unwrap_or((".", a.as_str()));
                let mut rw = TomlTable::new();
                rw.insert("from".into(), Value::from("^.*$"));
                rw.insert(
                    "to".into(),
                    Value::from(format!("/{}", file.replace('$', "$$"))),
                );
                keys.set(
                    "root",
                    if dir.is_empty() {
                        "/".to_owned()
                    } else {
                        dir.to_owned()
                    },
                );
                keys.set("rewrite", Value::Table(rw));
                return;
            }
            (Some((a, pos)), _) => {
                if has_vars(a) || kind == Kind::Regex || kind == Kind::Exact {
                    let why = "an alias in a regex location (or with variables): moongate's root is a directory the route's prefix is taken off";
                    self.note(pos, format!("alias {a}"), Severity::NotTranslated, why);
                    return;
                }
                self.nginx_path(a, pos, "alias")
            }
            (None, Some((r, pos))) => {
                if has_vars(r) {
                    self.note(
                        pos,
                        format!("root {r}"),
                        Severity::NotTranslated,
                        "a root with variables",
                    );
                    return;
                }
                let r = self.nginx_path(r, pos, "root");
                match kind {
                    // moongate takes the prefix off, nginx's root keeps it.
                    _ if strips && path != "/" => {
                        if !path.ends_with('/') {
                            let why = "a prefix without a trailing `/`: paths that only start with it (not under it as a directory) map elsewhere";
                            self.note(pos, format!("root {r}"), Severity::Differs, why);
                        }
                        format!("{}{path}", r.trim_end_matches('/'))
                    }
                    _ => r,
                }
            }
            (None, None) => {
                let why = "no root: nginx serves <prefix>/html, and so does this translation";
                self.note_d(d, Severity::Differs, why);
                self.nginx_path("html", &d.pos, "root")
            }
        };
        keys.set("root", root);
        if let Some((index, pos)) = &scope.index {
            if index.first().map(String::as_str) != Some("index.html") || index.len() > 1 {
                let why = "moongate's static routes serve index.html as a directory's index";
                self.note(
                    pos,
                    format!("index {}", index.join(" ")),
                    Severity::Differs,
                    why,
                );
            }
        }
        if let Some(t) = own.try_files {
            let args: Vec<&str> = t.args.iter().map(|a| a.text.as_str()).collect();
            if matches!(
                args.as_slice(),
                ["$uri", "=404"] | ["$uri", "$uri/", "=404"]
            ) {
                self.note_d(
                    t,
                    Severity::Unneeded,
                    "a static route serves the file, the directory's index.html, or 404",
                );
            } else {
                self.unknown(t, "a location");
            }
        }
        if let Some((e, pos)) = &scope.expires {
            match duration(e) {
                Ok(t) => keys.set("expires", t),
                Err(_) => {
                    let why = "moongate's expires is a duration (no off, epoch, max or @time)";
                    self.note(pos, format!("expires {e}"), Severity::NotTranslated, why);
                }
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn finish_route(
        &mut self,
        build: &mut ServerBuild<'_>,
        scope: &Scope,
        own: &Own<'_>,
        d: &Directive,
        kind: Kind,
        path: PathOut,
        mut keys: Table,
        lua: Vec<(&'static str, String)>,
        proxied: bool,
    ) {
        if !proxied {
            if let Some(t) = own.try_files.filter(|_| keys.get("root").is_none()) {
                self.unknown(t, "a location");
            }
            if let (Some((e, pos)), None) = (&scope.expires, keys.get("root")) {
                let why = "moongate sets expires on static routes only; a Lua header_filter can set Cache-Control";
                self.note(pos, format!("expires {e}"), Severity::NotTranslated, why);
            }
        }
        let mut limits = Vec::new();
        for lu in scope.limit_req.get().to_vec() {
            limits.extend(self.limit_for(&lu, scope));
        }
        for (zone, max, pos) in scope.limit_conn.get().to_vec() {
            limits.extend(self.conn_limit_for(&zone, max, &pos, scope));
        }
        let cache = match &scope.cache.zone {
            Some(Some(zone)) if proxied => self.cache_for(zone, scope, &d.pos),
            Some(Some(zone)) => {
                let why = "moongate caches upstream answers only";
                self.note_d(
                    d,
                    Severity::NotTranslated,
                    format!("proxy_cache {zone}: {why}"),
                );
                None
            }
            _ => None,
        };
        let compress = self.compress_of(&scope.gzip, Some(&self.http_scope.gzip.clone()));
        let locations = build.locations.clone();
        let policies = self.policies(scope, proxied, &own.auth_sets, &locations);
        let mut ordered = Table::default();
        if let Some(m) = &own.methods {
            ordered.set(
                "methods",
                m.iter().cloned().map(Value::from).collect::<Vec<_>>(),
            );
        }
        for k in ["upstream", "root", "rewrite", "expires"] {
            if let Some(v) = keys.get(k) {
                ordered.set(k, v.clone());
            }
        }
        match limits.as_slice() {
            [] => {}
            [one] => ordered.set("limit", one.clone()),
            many => ordered.set(
                "limit",
                many.iter().cloned().map(Value::from).collect::<Vec<_>>(),
            ),
        }
        if let Some(c) = cache {
            ordered.set("cache", c);
        }
        if let Some(c) = compress {
            ordered.set("compress", c);
        }
        if !policies.is_empty() {
            ordered.set("policies", policies);
        }
        if !lua.is_empty() {
            let mut t = TomlTable::new();
            for phase in PHASES {
                if let Some((_, p)) = lua.iter().find(|(ph, _)| *ph == phase) {
                    t.insert(phase.to_owned(), Value::from(p.clone()));
                }
            }
            ordered.set("lua", Value::Table(t));
        }
        keys = ordered;
        if keys.get("upstream").is_none()
            && keys.get("root").is_none()
            && !lua.iter().any(|(p, _)| *p == "content")
        {
            let why = "nothing left to serve (its handler was not translated): no route";
            self.note_d(d, Severity::NotTranslated, why);
            return;
        }
        let args: Vec<&str> = d.args.iter().map(|a| a.text.as_str()).collect();
        let route = Route {
            pos: d.pos.clone(),
            comment: vec![format!("location {} ({})", args.join(" "), d.pos)],
            hosts: Vec::new(),
            path: path.clone(),
            keys,
        };
        if kind == Kind::Caret && matches!(path, PathOut::Regex(_)) {
            build.caret_regexes.push(route);
        } else {
            build.routes.push(route);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn location_forms() {
        assert_eq!(matcher(&["=", "/x"]).unwrap(), (Kind::Exact, "/x".into()));
        assert_eq!(matcher(&["=/x"]).unwrap(), (Kind::Exact, "/x".into()));
        assert_eq!(
            matcher(&["~*", "\\.png$"]).unwrap(),
            (Kind::Regex, "(?i)\\.png$".into())
        );
        assert_eq!(matcher(&["~^/a"]).unwrap(), (Kind::Regex, "^/a".into()));
        assert_eq!(
            matcher(&["^~", "/s/"]).unwrap(),
            (Kind::Caret, "/s/".into())
        );
        assert_eq!(matcher(&["/p"]).unwrap(), (Kind::Prefix, "/p".into()));
        assert!(matcher(&["@fallback"]).is_err());
        // PCRE look-around has no equivalent in the regex crate.
        assert!(
            matcher(&["~", "^/(?!admin)"])
                .unwrap_err()
                .contains("cannot take")
        );
    }

    #[test]
    fn slugs() {
        assert_eq!(slug("/api/v1/"), "api-v1");
        assert_eq!(slug("/"), "root");
        assert_eq!(slug("(?i)\\.(png|jpg)$"), "i-png-jpg");
    }
}

//! One `location` → one `[[route]]`: its matcher, its target (upstream
//! with nginx's proxy_pass URI rules, static root with nginx's `root` /
//! `alias` rules, a Lua content handler, or the answer of a `return`),
//! its Lua phases, limits, cache and policies.

use toml::Value;
use toml::value::Table as TomlTable;

use super::super::model::{PathOut, Route, Table};
use super::super::parse::{Directive, Pos};
use super::super::report::Severity;
use super::Tx;
use super::lua::{LuaSrc, PHASES, lua_handler};
use super::matching::{Kind, matcher, slug};
use super::program::{self, Context};
use super::scope::Scope;
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

/// What a location's own (not inherited) directives say.
#[derive(Default)]
pub(super) struct Own<'d> {
    pub(super) proxy: Option<&'d Directive>,
    pub(super) alias: Option<(String, Pos)>,
    pub(super) content: Option<LuaSrc>,
    pub(super) stmts: Vec<&'d Directive>,
    pub(super) internal: bool,
    pub(super) methods: Option<Vec<String>>,
    pub(super) nested: Vec<&'d Directive>,
    pub(super) auth_sets: Vec<(String, String)>,
    pub(super) try_files: Option<&'d Directive>,
    /// A content handler moongate has no equivalent of (`stub_status`,
    /// `fastcgi_pass`, ...): the location gets no route.
    pub(super) lost_handler: bool,
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
        } else if terminates && !access_phase(&scope) {
            program_is_content = true;
        } else if terminates {
            // nginx answers in the rewrite phase, before access handlers
            // and limits; the route still needs a content handler.
            let code = "-- Never reached: the route's rewrite handler always answers.\nreturn ngx.exit(500)\n";
            let from = format!("location {} ({})", args.join(" "), d.pos);
            let p = self.generated_lua(&format!("{label}-content"), code, &from);
            lua.push(("content", p));
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
        if let Some(c) = &compiled
            && !program_is_content
        {
            rewrite_pre.push_str(&c.code);
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
            if let Some(src) = scope.lua(phase).cloned()
                && let Some(p) = self.lua_file(&src, &format!("{label}-{phase}"), None)
            {
                lua.push((phase, p));
            }
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
        // nginx's proxy_cache does nothing for a location that does not proxy.
        let cache = match &scope.cache.zone {
            Some(Some(zone)) if proxied => self.cache_for(zone, scope, &d.pos),
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

/// Whether anything runs in the access phase (or the limits after it).
fn access_phase(scope: &Scope) -> bool {
    scope.lua("access").is_some()
        || !scope.limit_req.get().is_empty()
        || !scope.limit_conn.get().is_empty()
        || !scope.access.get().is_empty()
        || matches!(scope.auth_request, Some(Some(_)))
}

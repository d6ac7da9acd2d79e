//! A location's target, by nginx's rules: a `proxy_pass` URI part replaces
//! the matched prefix (or exact path); `root` keeps the location's path,
//! `alias` replaces it, while moongate's `root` always takes a prefix
//! route's path off.

use toml::Value;
use toml::value::Table as TomlTable;

use super::super::model::Table;
use super::super::parse::Directive;
use super::super::report::Severity;
use super::super::values::{Part, duration, has_vars, lua_str};
use super::Tx;
use super::location::Own;
use super::matching::Kind;
use super::scope::Scope;

impl Tx<'_> {
    /// proxy_pass with a URI part: the matched prefix (or exact path) is
    /// replaced by it. As a route `rewrite` when nothing else changes the
    /// URI; in the generated rewrite handler (only when no rewrite
    /// directive changed the URI, as nginx) otherwise.
    pub(super) fn proxy_uri(
        &mut self,
        pd: &Directive,
        kind: Kind,
        path: &str,
        uri: &str,
        rewrites: bool,
        keys: &mut Table,
    ) -> String {
        if kind == Kind::Regex {
            self.regex_proxy_uri(pd, path, uri, rewrites, keys);
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
        if uri == path {
            return String::new();
        }
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

    /// A regex location's `proxy_pass http://up/x/$1$is_args$args`: the
    /// URI is the value with the location's captures (nginx's rule for a
    /// URI with variables), as a route rewrite of the whole path.
    fn regex_proxy_uri(
        &mut self,
        pd: &Directive,
        regex: &str,
        uri: &str,
        rewrites: bool,
        keys: &mut Table,
    ) {
        let (body, keeps_args) = match uri.strip_suffix("$is_args$args") {
            Some(b) => (b, true),
            None => (uri, false),
        };
        let parts = super::super::values::parts(body);
        if rewrites || parts.iter().any(|p| matches!(p, Part::Var(_))) {
            let why = "a URI with variables other than the location's captures (or after rewrites); the request URI is passed as is";
            self.note_d(pd, Severity::NotTranslated, why);
            return;
        }
        let to: String = parts
            .iter()
            .map(|p| match p {
                Part::Lit(s) => s.replace('$', "$$"),
                Part::Capture(n) => format!("${{{n}}}"),
                Part::Var(_) => String::new(),
            })
            .collect();
        if !keeps_args {
            let why = "nginx sends no query string here (the URI has no $is_args$args); moongate keeps the request's";
            self.note_d(pd, Severity::Differs, why);
        }
        let mut rw = TomlTable::new();
        rw.insert("from".into(), Value::from(format!("^.*?(?:{regex}).*$")));
        rw.insert("to".into(), Value::from(to));
        keys.set("rewrite", Value::Table(rw));
    }

    /// `strips`: the route is a prefix, which moongate takes off the path.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn static_target(
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
        if let Some((index, pos)) = &scope.index
            && (index.first().map(String::as_str) != Some("index.html") || index.len() > 1)
        {
            let why = "moongate's static routes serve index.html as a directory's index";
            self.note(
                pos,
                format!("index {}", index.join(" ")),
                Severity::Differs,
                why,
            );
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
}

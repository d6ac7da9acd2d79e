//! Settings nginx inherits from `http` to `server` to `location`, read
//! from the directives that set them, with nginx's rule for lists: a
//! level that sets any `proxy_set_header` (or `add_header`, `limit_req`,
//! ...) replaces the whole inherited list.

use super::super::parse::{Directive, Pos};
use super::super::values::{duration, size};
use super::lua::{LuaSrc, lua_handler};

/// A list directive's items, and whether this level started its own list.
#[derive(Debug, Clone)]
pub struct List<T> {
    /// The items in effect (`None`: never set).
    pub items: Option<Vec<T>>,
    here: bool,
}

impl<T> Default for List<T> {
    fn default() -> Self {
        List {
            items: None,
            here: false,
        }
    }
}

impl<T> List<T> {
    fn push(&mut self, item: T) {
        if !self.here {
            self.items = Some(Vec::new());
            self.here = true;
        }
        self.items.get_or_insert_with(Vec::new).push(item);
    }

    /// The items in effect.
    pub fn get(&self) -> &[T] {
        self.items.as_deref().unwrap_or(&[])
    }
}

/// A header set by `proxy_set_header` or `add_header`.
#[derive(Debug, Clone)]
pub struct Header {
    /// Its name.
    pub name: String,
    /// Its value, an nginx complex value.
    pub value: String,
    /// `add_header ... always`.
    pub always: bool,
    /// The directive.
    pub pos: Pos,
}

/// `limit_req zone=NAME burst=N nodelay`.
#[derive(Debug, Clone)]
pub struct LimitUse {
    /// The zone.
    pub zone: String,
    /// Requests over the rate allowed at once (`burst=`, default 0).
    pub burst: u64,
    /// The directive.
    pub pos: Pos,
}

/// `gzip` and its settings.
#[derive(Debug, Clone, Default)]
pub struct Gzip {
    /// `gzip on|off`.
    pub on: Option<bool>,
    /// `gzip_types` (text/html is always included by nginx).
    pub types: Option<Vec<String>>,
    /// `gzip_min_length`, bytes.
    pub min_length: Option<u64>,
    /// `gzip_comp_level`.
    pub level: Option<i64>,
}

/// `proxy_cache` and its settings.
#[derive(Debug, Clone, Default)]
pub struct CacheUse {
    /// `proxy_cache NAME` (`Some(None)`: `off`).
    pub zone: Option<Option<String>>,
    /// `proxy_cache_valid [codes] time`, each.
    pub valid: List<(Vec<String>, String, Pos)>,
    /// `proxy_cache_key`.
    pub key: Option<(String, Pos)>,
    /// `proxy_cache_lock on|off`.
    pub lock: Option<bool>,
    /// `proxy_cache_methods`.
    pub methods: Option<Vec<String>>,
}

/// What nginx inherits downwards.
#[derive(Debug, Clone, Default)]
pub struct Scope {
    /// `proxy_set_header`.
    pub proxy_set_header: List<Header>,
    /// `add_header`.
    pub add_header: List<Header>,
    /// `proxy_hide_header`.
    pub hide_header: List<(String, Pos)>,
    /// `proxy_connect_timeout`.
    pub connect_timeout: Option<String>,
    /// `proxy_read_timeout`.
    pub read_timeout: Option<String>,
    /// `proxy_send_timeout`.
    pub send_timeout: Option<String>,
    /// `proxy_next_upstream`: `None` default, `Some(None)` off, else the statuses.
    pub next_upstream: Option<Option<Vec<u16>>>,
    /// `proxy_next_upstream_tries`.
    pub next_upstream_tries: Option<u32>,
    /// `proxy_ssl_verify`.
    pub ssl_verify: Option<bool>,
    /// `root`.
    pub root: Option<(String, Pos)>,
    /// `index`.
    pub index: Option<(Vec<String>, Pos)>,
    /// `expires`.
    pub expires: Option<(String, Pos)>,
    /// `default_type`.
    pub default_type: Option<String>,
    /// gzip settings.
    pub gzip: Gzip,
    /// `limit_req`.
    pub limit_req: List<LimitUse>,
    /// `limit_req_status`.
    pub limit_req_status: Option<u16>,
    /// `limit_conn ZONE N`.
    pub limit_conn: List<(String, u64, Pos)>,
    /// `limit_conn_status`.
    pub limit_conn_status: Option<u16>,
    /// proxy cache settings.
    pub cache: CacheUse,
    /// Inherited Lua handlers (rewrite, access, header_filter, body_filter, log).
    pub lua: Vec<(&'static str, LuaSrc)>,
    lua_here: Vec<&'static str>,
    /// `auth_request URI` (`Some(None)`: `off`).
    pub auth_request: Option<Option<(String, Pos)>>,
    /// `allow` / `deny`, in order.
    pub access: List<(bool, String, Pos)>,
    /// `client_max_body_size`.
    pub client_max_body_size: Option<(String, Pos)>,
    /// `ssl_certificate`s.
    pub certs: List<(String, Pos)>,
    /// `ssl_certificate_key`s.
    pub keys: List<(String, Pos)>,
}

/// What applying a directive to a scope came to.
#[derive(Debug)]
pub enum Applied {
    /// The directive is not a scope setting.
    No,
    /// Taken.
    Yes,
    /// Taken, with something to report.
    Note(super::super::report::Severity, String),
}

impl Scope {
    /// The scope a nested block starts with.
    pub fn child(&self) -> Scope {
        let mut s = self.clone();
        s.proxy_set_header.here = false;
        s.add_header.here = false;
        s.hide_header.here = false;
        s.limit_req.here = false;
        s.limit_conn.here = false;
        s.cache.valid.here = false;
        s.access.here = false;
        s.certs.here = false;
        s.keys.here = false;
        s.lua_here.clear();
        s
    }

    /// The inherited Lua handler of `phase`.
    pub fn lua(&self, phase: &str) -> Option<&LuaSrc> {
        self.lua.iter().find(|(p, _)| *p == phase).map(|(_, s)| s)
    }

    fn set_lua(&mut self, phase: &'static str, src: LuaSrc) -> Applied {
        if self.lua_here.contains(&phase) {
            return Applied::Note(
                super::super::report::Severity::NotTranslated,
                format!(
                    "a second {phase} handler at this level (nginx refuses it: \"is duplicate\")"
                ),
            );
        }
        self.lua_here.push(phase);
        self.lua.retain(|(p, _)| *p != phase);
        self.lua.push((phase, src));
        Applied::Yes
    }

    /// Applies `d` if it is an inherited setting.
    pub fn apply(&mut self, d: &Directive) -> Applied {
        use super::super::report::Severity::{Differs, NotTranslated};
        let args: Vec<&str> = d.args.iter().map(|a| a.text.as_str()).collect();
        let bad = |why: &str| Applied::Note(NotTranslated, why.to_owned());
        let time = |v: &str| duration(v);
        match (d.name.as_str(), args.as_slice()) {
            ("proxy_set_header", [name, value]) => self.proxy_set_header.push(Header {
                name: (*name).to_owned(),
                value: (*value).to_owned(),
                always: false,
                pos: d.pos.clone(),
            }),
            ("add_header", [name, value, rest @ ..]) if rest.is_empty() || rest == ["always"] => {
                self.add_header.push(Header {
                    name: (*name).to_owned(),
                    value: (*value).to_owned(),
                    always: !rest.is_empty(),
                    pos: d.pos.clone(),
                })
            }
            ("proxy_hide_header", [name]) => {
                self.hide_header.push(((*name).to_owned(), d.pos.clone()))
            }
            ("proxy_connect_timeout" | "proxy_read_timeout" | "proxy_send_timeout", [v]) => {
                let Ok(t) = time(v) else {
                    return bad("not a time");
                };
                let slot = match d.name.as_str() {
                    "proxy_connect_timeout" => &mut self.connect_timeout,
                    "proxy_read_timeout" => &mut self.read_timeout,
                    _ => &mut self.send_timeout,
                };
                *slot = Some(t);
            }
            ("proxy_next_upstream", list) if !list.is_empty() => {
                if list == ["off"] {
                    self.next_upstream = Some(None);
                    return Applied::Yes;
                }
                let mut statuses = Vec::new();
                let mut skipped = Vec::new();
                for item in list {
                    match item
                        .strip_prefix("http_")
                        .and_then(|s| s.parse::<u16>().ok())
                    {
                        Some(s) => statuses.push(s),
                        None if matches!(*item, "error" | "timeout") => {}
                        None => skipped.push(*item),
                    }
                }
                self.next_upstream = Some(Some(statuses));
                if !skipped.is_empty() {
                    return Applied::Note(
                        Differs,
                        format!(
                            "moongate moves on after connection errors, timeouts and listed statuses only; not after {}",
                            skipped.join(", ")
                        ),
                    );
                }
            }
            ("proxy_next_upstream_tries", [n]) => match n.parse::<u32>() {
                Ok(n) => self.next_upstream_tries = Some(n),
                Err(_) => return bad("not a number"),
            },
            ("proxy_ssl_verify", [v @ ("on" | "off")]) => self.ssl_verify = Some(*v == "on"),
            ("root", [path]) => self.root = Some(((*path).to_owned(), d.pos.clone())),
            ("index", list) if !list.is_empty() => {
                self.index = Some((
                    list.iter().map(|s| (*s).to_owned()).collect(),
                    d.pos.clone(),
                ))
            }
            ("expires", [v]) => self.expires = Some(((*v).to_owned(), d.pos.clone())),
            ("default_type", [t]) => self.default_type = Some((*t).to_owned()),
            ("gzip", [v @ ("on" | "off")]) => self.gzip.on = Some(*v == "on"),
            ("gzip_types", list) if !list.is_empty() => {
                self.gzip.types = Some(list.iter().map(|s| (*s).to_owned()).collect())
            }
            ("gzip_min_length", [v]) => match size(v) {
                Ok((_, n)) => self.gzip.min_length = Some(n),
                Err(e) => return bad(&e),
            },
            ("gzip_comp_level", [v]) => match v.parse::<i64>() {
                Ok(n) if (1..=9).contains(&n) => self.gzip.level = Some(n),
                _ => return bad("not a level from 1 to 9"),
            },
            ("limit_req", list) if !list.is_empty() => return self.limit_req(d, list),
            ("limit_req_status", [s]) => match s.parse() {
                Ok(s) => self.limit_req_status = Some(s),
                Err(_) => return bad("not a status"),
            },
            ("limit_conn", [zone, n]) => match n.parse() {
                Ok(n) => self.limit_conn.push(((*zone).to_owned(), n, d.pos.clone())),
                Err(_) => return bad("not a number"),
            },
            ("limit_conn_status", [s]) => match s.parse() {
                Ok(s) => self.limit_conn_status = Some(s),
                Err(_) => return bad("not a status"),
            },
            ("proxy_cache", [v]) => {
                self.cache.zone = Some((*v != "off").then(|| (*v).to_owned()));
                if super::super::values::has_vars(v) {
                    return bad("a cache zone chosen by variables");
                }
            }
            ("proxy_cache_valid", list) if !list.is_empty() => {
                let (codes, t) = list.split_at(list.len() - 1);
                self.cache.valid.push((
                    codes.iter().map(|s| (*s).to_owned()).collect(),
                    t[0].to_owned(),
                    d.pos.clone(),
                ));
            }
            ("proxy_cache_key", [k]) => self.cache.key = Some(((*k).to_owned(), d.pos.clone())),
            ("proxy_cache_lock", [v @ ("on" | "off")]) => self.cache.lock = Some(*v == "on"),
            ("proxy_cache_methods", list) if !list.is_empty() => {
                self.cache.methods = Some(list.iter().map(|s| s.to_ascii_uppercase()).collect())
            }
            ("auth_request", [v]) => {
                self.auth_request = Some((*v != "off").then(|| ((*v).to_owned(), d.pos.clone())))
            }
            ("allow" | "deny", [what]) => {
                self.access
                    .push((d.name == "allow", (*what).to_owned(), d.pos.clone()))
            }
            ("client_max_body_size", [v]) => {
                self.client_max_body_size = Some(((*v).to_owned(), d.pos.clone()))
            }
            ("ssl_certificate", [v]) => self.certs.push(((*v).to_owned(), d.pos.clone())),
            ("ssl_certificate_key", [v]) => self.keys.push(((*v).to_owned(), d.pos.clone())),
            _ => {
                if let Some((phase, src)) = lua_handler(d).filter(|(p, _)| *p != "content") {
                    return match src {
                        Ok(src) => self.set_lua(phase, src),
                        Err(why) => bad(&why),
                    };
                }
                return Applied::No;
            }
        }
        Applied::Yes
    }

    fn limit_req(&mut self, d: &Directive, list: &[&str]) -> Applied {
        use super::super::report::Severity::{Differs, NotTranslated};
        let mut zone = None;
        let mut burst = 0;
        let mut nodelay = false;
        let mut delay = false;
        for item in list {
            if let Some(z) = item.strip_prefix("zone=") {
                zone = Some(z.to_owned());
            } else if let Some(b) = item.strip_prefix("burst=") {
                match b.parse() {
                    Ok(b) => burst = b,
                    Err(_) => return Applied::Note(NotTranslated, "burst= is not a number".into()),
                }
            } else if *item == "nodelay" {
                nodelay = true;
            } else if item.starts_with("delay=") {
                delay = true;
            } else {
                return Applied::Note(NotTranslated, format!("unknown parameter `{item}`"));
            }
        }
        let Some(zone) = zone else {
            return Applied::Note(NotTranslated, "no zone=".into());
        };
        self.limit_req.push(LimitUse {
            zone,
            burst,
            pos: d.pos.clone(),
        });
        if burst > 0 && !nodelay {
            let why = if delay {
                "moongate serves requests within the burst at once; nginx delays those past delay="
            } else {
                "moongate serves requests within the burst at once; nginx (without nodelay) delays them to the rate"
            };
            return Applied::Note(Differs, why.into());
        }
        Applied::Yes
    }
}

#[cfg(test)]
mod tests {
    use super::super::super::lexer::tokenize;
    use super::super::super::parse::parse;
    use super::*;

    fn scope_of(text: &str) -> (Scope, Vec<Applied>) {
        let tree = parse(&"t".into(), tokenize(text).unwrap()).unwrap();
        let mut s = Scope::default();
        let applied = tree.iter().map(|d| s.apply(d)).collect();
        (s, applied)
    }

    #[test]
    fn a_level_that_sets_a_list_replaces_the_inherited_one() {
        let (http, _) = scope_of("proxy_set_header A 1; proxy_set_header B 2; root /srv;");
        let mut server = http.child();
        let tree = parse(
            &"t".into(),
            tokenize("proxy_set_header C 3; proxy_set_header D 4;").unwrap(),
        )
        .unwrap();
        for d in &tree {
            server.apply(d);
        }
        let names: Vec<&str> = server
            .proxy_set_header
            .get()
            .iter()
            .map(|h| h.name.as_str())
            .collect();
        assert_eq!(names, ["C", "D"]);
        // A level that sets none keeps the parent's, and the scalars.
        let location = server.child();
        assert_eq!(location.proxy_set_header.get().len(), 2);
        assert_eq!(location.root.as_ref().unwrap().0, "/srv");
    }

    #[test]
    fn limit_req_parameters() {
        let (s, applied) =
            scope_of("limit_req zone=one burst=5 nodelay; limit_req zone=two burst=2;");
        assert_eq!(s.limit_req.get().len(), 2);
        assert_eq!(s.limit_req.get()[0].burst, 5);
        assert!(matches!(applied[0], Applied::Yes));
        assert!(matches!(
            applied[1],
            Applied::Note(super::super::super::report::Severity::Differs, _)
        ));
    }

    #[test]
    fn lua_handlers_by_phase_and_form() {
        let (s, applied) = scope_of(
            "access_by_lua_block { ngx.exit(403) }\nlog_by_lua_file /x.lua;\nheader_filter_by_lua 'ngx.header.a = 1';\ncontent_by_lua_block { }",
        );
        assert!(matches!(s.lua("access"), Some(LuaSrc::Code { code, .. }) if code.contains("403")));
        assert!(matches!(s.lua("log"), Some(LuaSrc::File { path, .. }) if path == "/x.lua"));
        assert!(s.lua("header_filter").is_some());
        // content handlers are not inherited: the location takes them.
        assert!(matches!(applied[3], Applied::No));
    }

    #[test]
    fn timeouts_and_next_upstream() {
        let (s, applied) = scope_of(
            "proxy_read_timeout 90; proxy_connect_timeout 2s; proxy_next_upstream error timeout http_502 invalid_header;",
        );
        assert_eq!(s.read_timeout.as_deref(), Some("90s"));
        assert_eq!(s.connect_timeout.as_deref(), Some("2s"));
        assert_eq!(s.next_upstream, Some(Some(vec![502])));
        assert!(matches!(&applied[2], Applied::Note(_, why) if why.contains("invalid_header")));
    }
}

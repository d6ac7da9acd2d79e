//! What the status page and `/status` show of each route, written down
//! when the snapshot is compiled: the router keeps only what matching
//! needs (groups by host, paths sorted for lookup), not the route as the
//! operator wrote it. Never read on the request path.

use serde::Serialize;

use crate::config::{self, RouteTarget};
use crate::route::PathMatch;

/// One `[[route]]` as the operator wrote it, in config order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RouteSummary {
    /// Its `name`, else `file:line` (as in the access log and metrics).
    pub name: String,
    /// Host patterns; empty means any host.
    pub hosts: Vec<String>,
    /// How the path matches: `"prefix"`, `"exact"` or `"regex"`.
    pub path_kind: &'static str,
    /// The prefix, the exact path or the regex.
    pub path: String,
    /// Methods accepted; `None` = any.
    pub methods: Option<Vec<String>>,
    /// `"upstream"`, `"static"` or `"lua"`.
    pub target: &'static str,
    /// The upstream's name, the static root, or empty for Lua content.
    pub to: String,
    /// `rewrite`, as `from -> to`.
    pub rewrite: Option<String>,
    /// Bundled policies (`use = "NAME"`), in the order they run.
    pub policies: Vec<String>,
    /// Phases with a route handler of its own (`rewrite`, `access`, ...).
    pub lua: Vec<&'static str>,
    /// Rate-limit zones, in the order they are checked.
    pub limits: Vec<String>,
    /// The proxy cache zone.
    pub cache: Option<String>,
}

impl RouteSummary {
    /// Describes `route` (before it is compiled away).
    pub fn of(route: &config::Route) -> RouteSummary {
        let (path_kind, path) = match &route.path {
            PathMatch::Prefix(p) => ("prefix", p.clone()),
            PathMatch::Exact(p) => ("exact", p.clone()),
            PathMatch::Regex(re) => ("regex", re.as_str().to_owned()),
        };
        let (target, to) = match &route.target {
            RouteTarget::Upstream(name) => ("upstream", name.clone()),
            RouteTarget::Static { root } => ("static", root.display().to_string()),
            RouteTarget::Lua => ("lua", String::new()),
        };
        let lua = &route.lua;
        let phases = [
            ("rewrite", lua.rewrite.is_some()),
            ("access", lua.access.is_some()),
            ("content", lua.content.is_some()),
            ("header_filter", lua.header_filter.is_some()),
            ("body_filter", lua.body_filter.is_some()),
            ("log", lua.log.is_some()),
        ];
        RouteSummary {
            name: route.name.clone(),
            hosts: route.hosts.clone(),
            path_kind,
            path,
            methods: route
                .methods
                .as_ref()
                .map(|ms| ms.iter().map(ToString::to_string).collect()),
            target,
            to,
            rewrite: route
                .rewrite
                .as_ref()
                .map(|r| format!("{} -> {}", r.from.as_str(), r.to)),
            policies: lua.policies.iter().map(|p| p.name.clone()).collect(),
            lua: phases
                .iter()
                .filter(|(_, set)| *set)
                .map(|(phase, _)| *phase)
                .collect(),
            limits: route.limits.clone(),
            cache: route.cache.clone(),
        }
    }
}

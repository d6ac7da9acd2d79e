//! The translated configuration, before it is written: conf.d tables as
//! ordered key/value lists (so the output reads in a sensible order and
//! carries comments), routes grouped by the nginx `server` they came
//! from, and the Lua files to write.

use toml::Value;

use super::parse::Pos;

/// A conf.d table: `[NAME]` or `[kind.NAME]`, with keys in order.
#[derive(Debug, Clone, Default)]
pub struct Table {
    /// Comment lines written above the table.
    pub comment: Vec<String>,
    /// Keys and values, in order.
    pub keys: Vec<(String, Value)>,
}

impl Table {
    /// Sets `key` (replacing an earlier value, keeping its place).
    pub fn set(&mut self, key: &str, value: impl Into<Value>) {
        let value = value.into();
        match self.keys.iter_mut().find(|(k, _)| k == key) {
            Some((_, v)) => *v = value,
            None => self.keys.push((key.to_owned(), value)),
        }
    }

    /// The value of `key`, if set.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.keys.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }
}

/// A named table: `[upstream.NAME]`, `[limit.NAME]`, `[cache.NAME]`.
#[derive(Debug, Clone)]
pub struct Named {
    /// The name after the dot.
    pub name: String,
    /// The table.
    pub table: Table,
}

/// How a route matches paths.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathOut {
    /// `path`: a prefix.
    Prefix(String),
    /// `path_exact`.
    Exact(String),
    /// `path_regex`.
    Regex(String),
}

impl PathOut {
    /// The conf.d key and its value.
    pub fn key_value(&self) -> (&'static str, &str) {
        match self {
            PathOut::Prefix(p) => ("path", p),
            PathOut::Exact(p) => ("path_exact", p),
            PathOut::Regex(p) => ("path_regex", p),
        }
    }
}

/// One `[[route]]`.
#[derive(Debug, Clone)]
pub struct Route {
    /// The location (or server) it came from.
    pub pos: Pos,
    /// Comment lines above it (the nginx location it translates).
    pub comment: Vec<String>,
    /// Host patterns; filled in once every server is known.
    pub hosts: Vec<String>,
    /// The path matcher.
    pub path: PathOut,
    /// Every other key (`methods`, `upstream`, `root`, `lua.access`, ...), in order.
    pub keys: Table,
}

/// The routes of one nginx `server { }`.
#[derive(Debug, Clone)]
pub struct ServerRoutes {
    /// Its position in the input (0-based), naming its output file.
    pub index: usize,
    /// Where the server block starts.
    pub pos: Pos,
    /// Its `server_name`s (for the file's header).
    pub names: Vec<String>,
    /// Its routes, in the order they are tried among regexes.
    pub routes: Vec<Route>,
}

/// A Lua file to write under the output directory.
#[derive(Debug, Clone)]
pub struct LuaFile {
    /// Path relative to the output directory (`lua/s0-api-access.lua`).
    pub rel: String,
    /// The code, with its header comment.
    pub text: String,
}

/// Everything the import writes.
#[derive(Debug, Default)]
pub struct Conf {
    /// `[server]`.
    pub server: Table,
    /// `[[server.tls]]`, one per TLS listen address.
    pub tls: Vec<Table>,
    /// `[lua]`.
    pub lua: Table,
    /// `[lua.shared_dict]`: name → size.
    pub shared_dicts: Vec<(String, String)>,
    /// `[upstream.NAME]`.
    pub upstreams: Vec<Named>,
    /// `[limit.NAME]`.
    pub limits: Vec<Named>,
    /// `[cache.NAME]`.
    pub caches: Vec<Named>,
    /// Routes by server.
    pub servers: Vec<ServerRoutes>,
    /// Lua files.
    pub lua_files: Vec<LuaFile>,
}

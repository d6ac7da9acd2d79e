//! The Lua side of the bundled policies (`crate::policies`): each Lua
//! descriptor's module, compiled into the binary so it works wherever
//! moongate runs, registered as `policies.NAME`; the handlers generated for a route's `policies = [...]`: each
//! policy object is built once per VM from its options and its phase
//! methods run before the route's own handlers; and the stores a policy
//! may keep answers in across every worker thread ([`PolicyStores`]).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use mlua::{Lua, Table};

use super::Phase;
use super::program::LoadedScript;
use crate::config::Policy;
use crate::policies::{self, Implementation, Kind};
use crate::shdict::SharedDict;

/// Lua modules the policies share (`require "policies.NAME"`).
const HELPERS: [(&str, &str); 2] = [
    ("template", include_str!("../../lua/policies/template.lua")),
    (
        "native_check",
        include_str!("../../lua/policies/native_check.lua"),
    ),
];

/// Registers `policies.NAME` in `package.preload`, and the per-VM cache
/// of policy objects the generated handlers use.
pub fn install(lua: &Lua) -> mlua::Result<()> {
    let preload: Table = lua.globals().get::<Table>("package")?.get("preload")?;
    let lua_policies = (crate::policies::REGISTRY.iter()).filter_map(|d| match d.implementation {
        Implementation::Lua(source) => Some((d.name, source)),
        Implementation::Native(_) => None,
    });
    for (name, source) in lua_policies.chain(HELPERS) {
        let chunk = lua
            .load(source)
            .set_name(format!("@lua/policies/{name}.lua"))
            .into_function()?;
        preload.set(format!("policies.{name}"), chunk)?;
    }
    lua.load(
        r#"
        local built = {}
        __moongate_policies = built
        function __moongate_policy(id, name, opts)
            local p = require("policies." .. name).new(opts, id)
            built[id] = p
            return p
        end
        "#,
    )
    .set_name("=moongate")
    .exec()
}

/// The stores of one program's policies, by policy id (`new(opts, id)`'s
/// second argument): each made by the first VM that asks
/// (`__moongate_policy_store(id, bytes)` from a policy's `new`) and then
/// shared by every worker thread's VM, as an `ngx.shared` dict is (the
/// same LRU-evicting, TTL-keeping store, with its methods), but unnamed:
/// no script reaches another policy's store by name. A reload compiles a
/// new program, so its policies start with empty stores.
#[derive(Debug, Default)]
pub struct PolicyStores(Mutex<BTreeMap<usize, Arc<SharedDict>>>);

impl PolicyStores {
    /// Policy `id`'s store, made with `bytes` of capacity if it has none.
    pub fn get(&self, id: usize, bytes: usize) -> Arc<SharedDict> {
        let mut stores = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        stores
            .entry(id)
            .or_insert_with(|| Arc::new(SharedDict::new(&format!("policy#{id}"), bytes)))
            .clone()
    }
}

/// Installs `__moongate_policy_store(id, bytes)` over `stores` (after the
/// `ngx` API, whose dict methods the store tables share).
pub fn install_stores(lua: &Lua, stores: Arc<PolicyStores>) -> mlua::Result<()> {
    let f = lua.create_function(move |lua, (id, bytes): (usize, usize)| {
        super::api::dict_table(lua, stores.get(id, bytes))
    })?;
    lua.globals().set("__moongate_policy_store", f)
}

/// The handlers for one configured policy: (phase, script) pairs. `id`
/// tells the policy's object apart from others in the VM.
pub fn handlers(policy: &Policy, id: usize) -> Vec<(Phase, LoadedScript)> {
    let Some(d) = crate::policies::find(&policy.name) else {
        return Vec::new();
    };
    if !matches!(d.implementation, Implementation::Lua(_)) {
        return Vec::new();
    }
    let options = lua_literal(&toml::Value::Table(lua_options(d, &policy.options)));
    d.phases
        .iter()
        .map(|phase| {
            let method = phase.name();
            let code = format!(
                "{pad}local p = __moongate_policies[{id}] or __moongate_policy({id}, {name}, {options})\nreturn p:{method}()\n",
                pad = "\n".repeat(policy.place.line.saturating_sub(1)),
                name = lua_string(&policy.name),
            );
            let script = LoadedScript {
                chunk_name: format!("={}", policy.place.file.display()),
                code,
                path: None,
                label: format!(
                    "policy {} ({}:{})",
                    policy.name,
                    policy.place.file.display(),
                    policy.place.line
                ),
            };
            let phase = match phase {
                policies::Phase::Rewrite => Phase::Rewrite,
                policies::Phase::Access => Phase::Access,
                policies::Phase::HeaderFilter => Phase::HeaderFilter,
                policies::Phase::BodyFilter => Phase::BodyFilter,
                policies::Phase::Log => Phase::Log,
            };
            (phase, script)
        })
        .collect()
}

/// The options as the Lua implementation gets them: durations in seconds
/// and sizes in bytes (numbers), the rest as written. Checked values, so a
/// failed parse cannot happen; it would leave the text as it was.
fn lua_options(d: &policies::Descriptor, options: &toml::Table) -> toml::Table {
    let mut out = options.clone();
    for spec in d.options {
        let Some(toml::Value::String(text)) = options.get(spec.key) else {
            continue;
        };
        let number = match spec.kind {
            Kind::Duration => crate::config::parse_duration(text)
                .ok()
                .map(|d| toml::Value::Float(d.as_secs_f64())),
            Kind::Size => crate::config::parse_size(text)
                .ok()
                .and_then(|n| i64::try_from(n).ok())
                .map(toml::Value::Integer),
            _ => None,
        };
        if let Some(n) = number {
            out.insert(spec.key.to_owned(), n);
        }
    }
    out
}

/// A TOML value as a Lua literal.
fn lua_literal(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) => lua_string(s),
        toml::Value::Integer(i) => i.to_string(),
        toml::Value::Float(f) => format!("{f:?}"),
        toml::Value::Boolean(b) => b.to_string(),
        toml::Value::Datetime(d) => lua_string(&d.to_string()),
        toml::Value::Array(items) => {
            let inner: Vec<String> = items.iter().map(lua_literal).collect();
            format!("{{{}}}", inner.join(", "))
        }
        toml::Value::Table(t) => {
            let inner: Vec<String> = t
                .iter()
                .map(|(k, v)| format!("[{}] = {}", lua_string(k), lua_literal(v)))
                .collect();
            format!("{{{}}}", inner.join(", "))
        }
    }
}

/// A Lua string literal holding exactly `s`.
fn lua_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for b in s.bytes() {
        match b {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            b' '..=b'~' => out.push(b as char),
            other => out.push_str(&format!("\\{other:03}")),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_round_trip_through_lua() {
        let lua = Lua::new();
        let text = "a \"quoted\" \\ line\nwith é";
        let back: String = lua
            .load(format!("return {}", lua_string(text)))
            .eval()
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(back, text);
        let value: toml::Value =
            toml::from_str::<toml::Table>("x = [\"10.0.0.0/8\", \"::1\"]\ny = { z = 3 }")
                .map(toml::Value::Table)
                .unwrap_or_else(|e| panic!("{e}"));
        let t: Table = lua
            .load(format!("return {}", lua_literal(&value)))
            .eval()
            .unwrap_or_else(|e| panic!("{e}"));
        let x: Table = t.get("x").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(x.get::<String>(2).ok().as_deref(), Some("::1"));
        let y: Table = t.get("y").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(y.get::<i64>("z").ok(), Some(3));
    }

    #[test]
    fn durations_and_sizes_reach_lua_as_numbers() {
        let d = crate::policies::find("forward_auth").unwrap_or_else(|| panic!("registered"));
        let options: toml::Table = toml::from_str(
            "uri = \"http://a/\"\ntimeout = \"300ms\"\ncache_ttl = \"2m\"\ncache_size = \"1MiB\"",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let out = lua_options(d, &options);
        assert_eq!(out.get("timeout").and_then(|v| v.as_float()), Some(0.3));
        assert_eq!(out.get("cache_ttl").and_then(|v| v.as_float()), Some(120.0));
        assert_eq!(
            out.get("cache_size").and_then(|v| v.as_integer()),
            Some(1024 * 1024)
        );
        assert_eq!(out.get("uri").and_then(|v| v.as_str()), Some("http://a/"));
    }

    /// Each Lua policy has a method for every phase its descriptor names
    /// (the generated handlers call `p:PHASE()`).
    #[test]
    fn lua_policies_have_their_descriptors_phase_methods() {
        let lua = Lua::new();
        let preload: Table = (lua.globals().get::<Table>("package"))
            .and_then(|p| p.get("preload"))
            .unwrap_or_else(|e| panic!("{e}"));
        let stub = lua
            .create_function(|lua, ()| lua.create_table())
            .unwrap_or_else(|e| panic!("{e}"));
        for module in ["moongate", "policies.native", "cjson.safe"] {
            preload
                .set(module, stub.clone())
                .unwrap_or_else(|e| panic!("{e}"));
        }
        for (name, source) in HELPERS {
            let chunk = lua.load(source).set_name(name).into_function();
            preload
                .set(
                    format!("policies.{name}"),
                    chunk.unwrap_or_else(|e| panic!("{e}")),
                )
                .unwrap_or_else(|e| panic!("{e}"));
        }
        for d in crate::policies::REGISTRY {
            let Implementation::Lua(source) = d.implementation else {
                continue;
            };
            let module: Table = (lua.load(source).set_name(d.name).eval())
                .unwrap_or_else(|e| panic!("{}: {e}", d.name));
            assert!(
                module.get::<mlua::Function>("new").is_ok(),
                "{}: new",
                d.name
            );
            for phase in d.phases {
                assert!(
                    module.get::<mlua::Function>(phase.name()).is_ok(),
                    "{} runs in {} but has no `{}` method",
                    d.name,
                    phase.name(),
                    phase.name()
                );
            }
        }
    }

    #[test]
    fn every_bundled_policy_compiles() {
        let lua = Lua::new();
        for d in crate::policies::REGISTRY {
            let Implementation::Lua(source) = d.implementation else {
                continue;
            };
            lua.load(source)
                .set_name(d.name)
                .into_function()
                .unwrap_or_else(|e| panic!("{}: {e}", d.name));
        }
        for (name, source) in HELPERS {
            assert!(
                crate::policies::find(name).is_none(),
                "policies.{name} is both a helper and a policy"
            );
            lua.load(source)
                .set_name(name)
                .into_function()
                .unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    }
}

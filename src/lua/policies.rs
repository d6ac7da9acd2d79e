//! The bundled policies of `lua/policies/` (API key, IP allow/deny,
//! request id), compiled into the binary so they work wherever moongate
//! runs, and the handlers generated for a route's `policies = [...]`: each
//! policy object is built once per VM from its options and its phase
//! methods run before the route's own handlers.

use mlua::{Lua, Table};

use super::Phase;
use super::program::LoadedScript;
use crate::config::Policy;

/// Module name, source, and the phases the policy has methods for.
const BUNDLED: [(&str, &str, &[Phase]); 3] = [
    (
        "api_key",
        include_str!("../../lua/policies/api_key.lua"),
        &[Phase::Access],
    ),
    (
        "ip",
        include_str!("../../lua/policies/ip.lua"),
        &[Phase::Access],
    ),
    (
        "request_id",
        include_str!("../../lua/policies/request_id.lua"),
        &[Phase::Rewrite, Phase::HeaderFilter],
    ),
];

/// Registers `policies.NAME` in `package.preload`, and the per-VM cache
/// of policy objects the generated handlers use.
pub fn install(lua: &Lua) -> mlua::Result<()> {
    let preload: Table = lua.globals().get::<Table>("package")?.get("preload")?;
    for (name, source, _) in BUNDLED {
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
            local p = require("policies." .. name).new(opts)
            built[id] = p
            return p
        end
        "#,
    )
    .set_name("=moongate")
    .exec()
}

/// The handlers for one configured policy: (phase, script) pairs. `id`
/// tells the policy's object apart from others in the VM.
pub fn handlers(policy: &Policy, id: usize) -> Vec<(Phase, LoadedScript)> {
    let Some((_, _, phases)) = BUNDLED.iter().find(|(n, _, _)| *n == policy.name) else {
        return Vec::new();
    };
    let options = lua_literal(&toml::Value::Table(policy.options.clone()));
    phases
        .iter()
        .map(|phase| {
            let method = match phase {
                Phase::Rewrite => "rewrite",
                Phase::HeaderFilter => "header_filter",
                Phase::Log => "log",
                _ => "access",
            };
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
            (*phase, script)
        })
        .collect()
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
    fn every_bundled_policy_compiles() {
        let lua = Lua::new();
        for (name, source, _) in BUNDLED {
            lua.load(source)
                .set_name(name)
                .into_function()
                .unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    }
}

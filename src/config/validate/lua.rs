//! `[lua]` (one file at most) and the `lua.*` keys of a route.

use std::path::PathBuf;
use std::time::Duration;

use toml::Spanned;

use super::Source;
use crate::config::error::ConfigError;
use crate::config::file::{RawFile, RawRouteLua};
use crate::config::model::{LuaSettings, Policy, RouteLua, Script, ScriptSource, SharedDictDef};

/// The default `require` path: the bundled and the operator's scripts.
pub const DEFAULT_PACKAGE_PATH: &str = "lua/?.lua;lua/?/init.lua";

/// `[lua]` from the one file that may define it, with defaults.
pub(super) fn settings(parsed: &[(&Source<'_>, &RawFile)]) -> Result<LuaSettings, ConfigError> {
    let mut out = LuaSettings {
        package_path: DEFAULT_PACKAGE_PATH.to_owned(),
        init: None,
        time_budget: Duration::from_millis(50),
        sandbox: true,
        ffi: true,
        shared_dicts: Vec::new(),
    };
    let Some((src, def)) = super::only_one(parsed, "[lua]", |raw| raw.lua.as_ref())? else {
        return Ok(out);
    };
    let raw = def.get_ref();
    if let Some(p) = &raw.package_path {
        if p.get_ref().trim().is_empty() || !p.get_ref().contains('?') {
            let message = "`package_path` lists templates with `?` for the module name, like \"lua/?.lua;lua/?/init.lua\"";
            return Err(src.err(p.span(), message));
        }
        out.package_path = p.get_ref().clone();
    }
    if let Some(init) = &raw.init {
        out.init = Some(file_script(src, init)?);
    }
    if let Some(b) = &raw.time_budget {
        if b.get_ref().0.is_zero() {
            return Err(src.err(b.span(), "`time_budget` must be more than 0"));
        }
        out.time_budget = b.get_ref().0;
    }
    out.sandbox = raw.sandbox.unwrap_or(true);
    out.ffi = raw.ffi.unwrap_or(true);
    for (name, size) in &raw.shared_dict {
        let n = name.get_ref();
        if n.is_empty() || !n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            let message = format!(
                "shared dict name `{n}` may use only letters, digits and `_` (it is ngx.shared.{n})"
            );
            return Err(src.err(name.span(), message));
        }
        let bytes = size.get_ref().0;
        if bytes < 8 * 1024 {
            return Err(src.err(size.span(), "a shared dict needs at least \"8KiB\""));
        }
        out.shared_dicts.push(SharedDictDef {
            name: n.clone(),
            size: usize::try_from(bytes).unwrap_or(usize::MAX),
        });
    }
    Ok(out)
}

/// The bundled policies and the options each accepts.
pub const POLICIES: [(&str, &[&str]); 3] = [
    (
        "api_key",
        &[
            "header",
            "query_arg",
            "keys",
            "keys_file",
            "dict",
            "consumer_header",
        ],
    ),
    ("ip", &["allow", "deny", "status"]),
    ("request_id", &["header"]),
];

/// A route's `policies = [{ use = "NAME", ... }]`.
fn policies(
    src: &Source<'_>,
    raw: Option<&Vec<Spanned<toml::Table>>>,
) -> Result<Vec<Policy>, ConfigError> {
    let known: Vec<&str> = POLICIES.iter().map(|(n, _)| *n).collect();
    let mut out = Vec::new();
    for entry in raw.into_iter().flatten() {
        let place = src.place(entry.span());
        let mut options = entry.get_ref().clone();
        let name = match options.remove("use") {
            Some(toml::Value::String(n)) => n,
            _ => {
                let message = format!(
                    "a policy needs `use = \"NAME\"`, one of {}",
                    known.join(", ")
                );
                return Err(ConfigError::at(&place, message));
            }
        };
        let Some((_, keys)) = POLICIES.iter().find(|(n, _)| *n == name) else {
            let message = format!(
                "unknown policy `{name}`; bundled policies: {}",
                known.join(", ")
            );
            return Err(ConfigError::at(&place, message));
        };
        if let Some(key) = options.keys().find(|k| !keys.contains(&k.as_str())) {
            let message = format!(
                "unknown option `{key}` for policy `{name}`; expected one of {}",
                keys.join(", ")
            );
            return Err(ConfigError::at(&place, message));
        }
        for list in ["allow", "deny"] {
            let Some(value) = options.get(list) else {
                continue;
            };
            let cidrs: Option<Vec<&str>> = value
                .as_array()
                .and_then(|a| a.iter().map(|v| v.as_str()).collect());
            let Some(cidrs) = cidrs else {
                let message = format!("`{list}` is a list of addresses or CIDRs");
                return Err(ConfigError::at(&place, message));
            };
            if let Some(bad) = cidrs.iter().find(|c| {
                c.parse::<ipnet::IpNet>().is_err() && c.parse::<std::net::IpAddr>().is_err()
            }) {
                let message = format!("`{bad}` in `{list}` is not an IP address or CIDR");
                return Err(ConfigError::at(&place, message));
            }
        }
        out.push(Policy {
            name,
            options,
            place,
        });
    }
    Ok(out)
}

/// The `lua.*` handlers and bundled policies of a route.
pub(super) fn route_lua(
    src: &Source<'_>,
    raw: Option<&Spanned<RawRouteLua>>,
    raw_policies: Option<&Vec<Spanned<toml::Table>>>,
) -> Result<RouteLua, ConfigError> {
    let policies = policies(src, raw_policies)?;
    let Some(raw) = raw else {
        return Ok(RouteLua {
            policies,
            ..RouteLua::default()
        });
    };
    let r = raw.get_ref();
    Ok(RouteLua {
        policies,
        rewrite: phase(src, "rewrite", &r.rewrite, &r.rewrite_inline)?,
        access: phase(src, "access", &r.access, &r.access_inline)?,
        content: phase(src, "content", &r.content, &r.content_inline)?,
        header_filter: phase(
            src,
            "header_filter",
            &r.header_filter,
            &r.header_filter_inline,
        )?,
        log: phase(src, "log", &r.log, &r.log_inline)?,
    })
}

fn phase(
    src: &Source<'_>,
    name: &str,
    file: &Option<Spanned<String>>,
    inline: &Option<Spanned<String>>,
) -> Result<Option<Script>, ConfigError> {
    match (file, inline) {
        (None, None) => Ok(None),
        (Some(f), None) => file_script(src, f).map(Some),
        (None, Some(code)) => Ok(Some(Script {
            source: ScriptSource::Inline(code.get_ref().clone()),
            place: src.place(code.span()),
        })),
        (Some(_), Some(code)) => {
            let message = format!(
                "a route takes `lua.{name}` (a file) or `lua.{name}_inline` (code), not both"
            );
            Err(src.err(code.span(), message))
        }
    }
}

fn file_script(src: &Source<'_>, path: &Spanned<String>) -> Result<Script, ConfigError> {
    if path.get_ref().trim().is_empty() {
        return Err(src.err(path.span(), "the script path is empty"));
    }
    Ok(Script {
        source: ScriptSource::File(PathBuf::from(path.get_ref())),
        place: src.place(path.span()),
    })
}

#[cfg(test)]
mod tests {
    use crate::config::model::ScriptSource;
    use crate::config::{load_str, rejected as err};
    use std::time::Duration;

    #[test]
    fn defaults_and_settings() {
        let c = load_str("t.toml", "").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.lua.time_budget, Duration::from_millis(50));
        assert!(c.lua.sandbox && c.lua.ffi);
        let c = load_str(
            "t.toml",
            "[lua]\ntime_budget = \"20ms\"\nsandbox = false\ninit = \"lua/init.lua\"\n[lua.shared_dict]\nkeys = \"1MiB\"\n",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.lua.time_budget, Duration::from_millis(20));
        assert!(!c.lua.sandbox);
        assert_eq!(c.lua.shared_dicts[0].name, "keys");
        assert_eq!(c.lua.shared_dicts[0].size, 1024 * 1024);
        assert!(matches!(
            c.lua.init.map(|s| s.source),
            Some(ScriptSource::File(_))
        ));
    }

    #[test]
    fn route_handlers_and_their_errors() {
        let c = load_str(
            "t.toml",
            "[[route]]\npath = \"/\"\nlua.access_inline = \"ngx.exit(403)\"\nlua.content = \"lua/hello.lua\"\n",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let r = &c.routes[0];
        assert!(
            matches!(&r.lua.access.as_ref().map(|s| &s.source), Some(ScriptSource::Inline(code)) if code == "ngx.exit(403)")
        );
        assert_eq!(r.lua.access.as_ref().map(|s| s.place.line), Some(3));
        assert!(r.lua.content.is_some());
        let e =
            err("[[route]]\npath = \"/\"\nlua.content = \"a.lua\"\nlua.content_inline = \"x\"\n");
        assert!(e.contains("not both"), "{e}");
        let e = err("[[route]]\npath = \"/\"\nlua.acess = \"a.lua\"\n");
        assert!(e.contains("acess"), "{e}");
        let e = err("[lua.shared_dict]\nbad-name = \"1MiB\"\n");
        assert!(e.contains("bad-name"), "{e}");
    }
}

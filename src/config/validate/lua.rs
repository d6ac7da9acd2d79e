//! `[lua]` (one file at most), the `lua.*` keys of a route and an upstream's
//! `lua.balancer`. Script files, `init`, `init_worker` and
//! `package_path` templates are resolved against the prefix; the files
//! must exist. A route's `policies` are checked in `policy`.

use std::time::Duration;

use toml::Spanned;

use super::Source;
use super::paths::Paths;
use crate::config::error::{ConfigError, Place};
use crate::config::file::{RawFile, RawRouteLua, RawUpstreamLua};
use crate::config::model::{LuaSettings, Policy, RouteLua, Script, ScriptSource, SharedDictDef};

/// The default `require` path: the bundled and the operator's scripts (relative to the
/// prefix, like any path in conf.d).
pub const DEFAULT_PACKAGE_PATH: &str = "lua/?.lua;lua/?/init.lua";

/// `[lua]` from the one file that may define it, with defaults.
pub(super) fn settings(
    parsed: &[(&Source<'_>, &RawFile)],
    paths: &mut Paths,
) -> Result<LuaSettings, ConfigError> {
    let found = super::only_one(parsed, "[lua]", |raw| raw.lua.as_ref())?;
    let package_path = match found
        .and_then(|(src, def)| Some((src, def.get_ref().package_path.as_ref()?)))
    {
        None => templates(paths, DEFAULT_PACKAGE_PATH, || {
            Place::whole(DEFAULT_PACKAGE_PATH)
        })?,
        Some((src, p)) => {
            if p.get_ref().trim().is_empty() || !p.get_ref().contains('?') {
                let message = "`package_path` lists templates with `?` for the module name, like \"lua/?.lua;lua/?/init.lua\"";
                return Err(src.err(p.span(), message));
            }
            templates(paths, p.get_ref(), || src.place(p.span()))?
        }
    };
    let mut out = LuaSettings {
        package_path,
        init: None,
        init_worker: None,
        time_budget: Duration::from_millis(50),
        sandbox: true,
        ffi: true,
        shared_dicts: Vec::new(),
        prefix: paths.prefix().to_path_buf(),
        ssl_trusted_certificate: None,
    };
    let Some((src, def)) = found else {
        return Ok(out);
    };
    let raw = def.get_ref();
    if let Some(init) = &raw.init {
        out.init = Some(file_script(src, "init", init, paths)?);
    }
    out.init_worker = script(
        src,
        ("`[lua]`", "init_worker"),
        &raw.init_worker,
        &raw.init_worker_inline,
        paths,
    )?;
    if let Some(b) = &raw.time_budget {
        if b.get_ref().0.is_zero() {
            return Err(src.err(b.span(), "`time_budget` must be more than 0"));
        }
        out.time_budget = b.get_ref().0;
    }
    if let Some(pem) = &raw.ssl_trusted_certificate {
        let place = src.place(pem.span());
        out.ssl_trusted_certificate =
            Some(paths.file(place, "ssl_trusted_certificate", pem.get_ref()));
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

/// `package_path` with its relative templates resolved; `place` for the error when the
/// result is not text (a prefix that is not UTF-8).
fn templates(paths: &Paths, value: &str, place: impl Fn() -> Place) -> Result<String, ConfigError> {
    paths.templates(value).ok_or_else(|| {
        let message = format!(
            "`package_path` cannot be made absolute: {} is not UTF-8 text",
            paths.prefix().display()
        );
        ConfigError::at(&place(), message)
    })
}

/// The `lua.*` handlers of a route, with its bundled policies (checked
/// by `policy::policies`).
pub(super) fn route_lua(
    src: &Source<'_>,
    raw: Option<&Spanned<RawRouteLua>>,
    policies: Vec<Policy>,
    paths: &mut Paths,
) -> Result<RouteLua, ConfigError> {
    let Some(raw) = raw else {
        return Ok(RouteLua {
            policies,
            ..RouteLua::default()
        });
    };
    let r = raw.get_ref();
    let mut phase = |name: &str, file: &Option<Spanned<String>>, inline| {
        script(
            src,
            ("a route", &format!("lua.{name}")),
            file,
            inline,
            paths,
        )
    };
    Ok(RouteLua {
        policies,
        rewrite: phase("rewrite", &r.rewrite, &r.rewrite_inline)?,
        access: phase("access", &r.access, &r.access_inline)?,
        content: phase("content", &r.content, &r.content_inline)?,
        header_filter: phase("header_filter", &r.header_filter, &r.header_filter_inline)?,
        body_filter: phase("body_filter", &r.body_filter, &r.body_filter_inline)?,
        log: phase("log", &r.log, &r.log_inline)?,
    })
}

/// An upstream's `lua.balancer` (a file) or `lua.balancer_inline` (code).
pub(super) fn upstream_balancer(
    src: &Source<'_>,
    raw: Option<&Spanned<RawUpstreamLua>>,
    paths: &mut Paths,
) -> Result<Option<Script>, ConfigError> {
    let Some(raw) = raw else { return Ok(None) };
    let r = raw.get_ref();
    script(
        src,
        ("an upstream", "lua.balancer"),
        &r.balancer,
        &r.balancer_inline,
        paths,
    )
}

/// The script of `key` (a file) or `key_inline` (code); `owner` names
/// what takes them, for the error when both are given.
fn script(
    src: &Source<'_>,
    (owner, key): (&str, &str),
    file: &Option<Spanned<String>>,
    inline: &Option<Spanned<String>>,
    paths: &mut Paths,
) -> Result<Option<Script>, ConfigError> {
    match (file, inline) {
        (None, None) => Ok(None),
        (Some(f), None) => file_script(src, key, f, paths).map(Some),
        (None, Some(code)) => Ok(Some(Script {
            source: ScriptSource::Inline(code.get_ref().clone()),
            place: src.place(code.span()),
        })),
        (Some(_), Some(code)) => {
            let message =
                format!("{owner} takes `{key}` (a file) or `{key}_inline` (code), not both");
            Err(src.err(code.span(), message))
        }
    }
}

/// A script file named by `key`: resolved, and noted as a file that must exist.
fn file_script(
    src: &Source<'_>,
    key: &str,
    path: &Spanned<String>,
    paths: &mut Paths,
) -> Result<Script, ConfigError> {
    if path.get_ref().trim().is_empty() {
        return Err(src.err(path.span(), "the script path is empty"));
    }
    let place = src.place(path.span());
    Ok(Script {
        source: ScriptSource::File(paths.file(place.clone(), key, path.get_ref())),
        place,
    })
}

#[cfg(test)]
mod tests {
    use crate::config::model::ScriptSource;
    use crate::config::rejected as err;
    use crate::config::validate::validate;
    use crate::config::{Config, load_str};
    use std::path::{Path, PathBuf};
    use std::time::Duration;

    /// A prefix holding `lua/init.lua`, `lua/hello.lua` and `keys.txt`.
    fn prefix() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("lua")).unwrap();
        for file in ["lua/init.lua", "lua/hello.lua", "keys.txt"] {
            std::fs::write(dir.path().join(file), "").unwrap();
        }
        dir
    }

    fn load_in(prefix: &Path, text: &str) -> Result<Config, String> {
        validate(
            &[(PathBuf::from("t.toml"), text.to_owned())],
            prefix.to_path_buf(),
        )
        .map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_and_settings() {
        let c = load_str("t.toml", "").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.lua.time_budget, Duration::from_millis(50));
        assert!(c.lua.sandbox && c.lua.ffi);
        let p = prefix();
        let c = load_in(
            p.path(),
            "[lua]\ntime_budget = \"20ms\"\nsandbox = false\ninit = \"lua/init.lua\"\n[lua.shared_dict]\nkeys = \"1MiB\"\n",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.lua.time_budget, Duration::from_millis(20));
        assert!(!c.lua.sandbox);
        assert_eq!(c.lua.shared_dicts[0].name, "keys");
        assert_eq!(c.lua.shared_dicts[0].size, 1024 * 1024);
        assert_eq!(
            c.lua.init.map(|s| s.source),
            Some(ScriptSource::File(p.path().join("lua/init.lua")))
        );
        assert_eq!(c.lua.prefix, p.path());
    }

    #[test]
    fn package_path_templates_resolve_against_the_prefix() {
        let p = prefix();
        let at = p.path().display();
        let c = load_in(p.path(), "").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            c.lua.package_path,
            format!("{at}/lua/?.lua;{at}/lua/?/init.lua")
        );
        let c = load_in(
            p.path(),
            "[lua]\npackage_path = \"/usr/share/lua/5.1/?.lua;mods/?.lua;;\"\n",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            c.lua.package_path,
            format!("/usr/share/lua/5.1/?.lua;{at}/mods/?.lua;;")
        );
    }

    #[test]
    fn script_files_must_exist() {
        let p = prefix();
        let at = p.path().display();
        let e = load_in(p.path(), "[lua]\ninit = \"lua/nope.lua\"\n").unwrap_err();
        assert_eq!(
            e,
            format!("t.toml:2:8: init {at}/lua/nope.lua: No such file or directory")
        );
        let e = load_in(p.path(), "[[route]]\npath = \"/\"\nlua.content = \"lua\"\n").unwrap_err();
        assert_eq!(
            e,
            format!("t.toml:3:15: lua.content {at}/lua: is a directory, not a file")
        );
    }

    #[test]
    fn ssl_trusted_certificate_resolves_and_must_exist() {
        let p = prefix();
        let at = p.path().display();
        let c = load_in(p.path(), "").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.lua.ssl_trusted_certificate, None);
        let c = load_in(p.path(), "[lua]\nssl_trusted_certificate = \"keys.txt\"\n")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            c.lua.ssl_trusted_certificate,
            Some(p.path().join("keys.txt"))
        );
        let e = load_in(p.path(), "[lua]\nssl_trusted_certificate = \"ca.pem\"\n").unwrap_err();
        assert_eq!(
            e,
            format!("t.toml:2:27: ssl_trusted_certificate {at}/ca.pem: No such file or directory")
        );
    }

    #[test]
    fn route_handlers_and_their_errors() {
        let p = prefix();
        let c = load_in(
            p.path(),
            "[[route]]\npath = \"/\"\nlua.access_inline = \"ngx.exit(403)\"\nlua.content = \"lua/hello.lua\"\n",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let r = &c.routes[0];
        assert!(
            matches!(&r.lua.access.as_ref().map(|s| &s.source), Some(ScriptSource::Inline(code)) if code == "ngx.exit(403)")
        );
        assert_eq!(r.lua.access.as_ref().map(|s| s.place.line), Some(3));
        assert_eq!(
            r.lua.content.as_ref().map(|s| &s.source),
            Some(&ScriptSource::File(p.path().join("lua/hello.lua")))
        );
        let e =
            err("[[route]]\npath = \"/\"\nlua.content = \"a.lua\"\nlua.content_inline = \"x\"\n");
        assert!(e.contains("not both"), "{e}");
        let e = err("[[route]]\npath = \"/\"\nlua.acess = \"a.lua\"\n");
        assert!(e.contains("acess"), "{e}");
        let e = err("[lua.shared_dict]\nbad-name = \"1MiB\"\n");
        assert!(e.contains("bad-name"), "{e}");
    }

    #[test]
    fn init_worker_and_upstream_balancers() {
        let p = prefix();
        let c = load_in(
            p.path(),
            "[lua]\ninit_worker_inline = \"ngx.log(ngx.INFO, 1)\"\n[upstream.a]\nservers = [{ addr = \"127.0.0.1:9\" }]\nlua.balancer = \"lua/hello.lua\"\n",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.lua.init_worker.map(|s| s.place.line), Some(2));
        assert_eq!(
            c.upstreams["a"].balancer.as_ref().map(|s| &s.source),
            Some(&ScriptSource::File(p.path().join("lua/hello.lua")))
        );
        let e = err("[lua]\ninit_worker = \"a.lua\"\ninit_worker_inline = \"x\"\n");
        assert!(
            e.contains("`[lua]` takes `init_worker` (a file) or `init_worker_inline`"),
            "{e}"
        );
        let e = err(
            "[upstream.a]\nservers = [{ addr = \"127.0.0.1:9\" }]\nlua.balancer = \"a.lua\"\nlua.balancer_inline = \"x\"\n",
        );
        assert!(e.contains("an upstream takes `lua.balancer`"), "{e}");
        let e =
            err("[upstream.a]\nservers = [{ addr = \"127.0.0.1:9\" }]\nlua.access = \"a.lua\"\n");
        assert!(e.contains("access"), "{e}");
    }
}

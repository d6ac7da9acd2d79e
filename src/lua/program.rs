//! The Lua side of a configuration: every script read and compiled (to
//! check its syntax) while the snapshot is built, so a missing file or a
//! syntax error is a config error with its place and the old
//! configuration keeps serving.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::Phase;
use crate::auth::consumer::Consumers;
use crate::config::{ConfigError, LuaSettings, Place, RouteLua, Script, ScriptSource};
use crate::policies::native::{self, Natives};
use crate::shdict::SharedDict;
use crate::throttle::Zone;

/// Index of a script in [`LuaProgram::scripts`].
pub type ScriptId = usize;

/// One script, ready to load into a VM.
#[derive(Debug)]
pub struct LoadedScript {
    /// The chunk name (`@path` for files, `=conf.d file` for inline code),
    /// which Lua puts in front of error messages.
    pub chunk_name: String,
    /// The code. Inline code is preceded by blank lines so that Lua's line
    /// numbers are those of the conf.d file.
    pub code: String,
    /// The file it was read from (watched for changes).
    pub path: Option<PathBuf>,
    /// What names it in metrics (the `script` label): the file's path, or
    /// `file:line` of inline code in conf.d, or `policy NAME (file:line)`
    /// for a bundled policy's handler. Bounded: scripts come from config.
    pub label: String,
}

/// The handlers of one route, as script ids, in the order they run
/// (bundled policies first, then the route's own scripts).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoutePhases {
    /// `rewrite` handlers.
    pub rewrite: Vec<ScriptId>,
    /// `access` handlers.
    pub access: Vec<ScriptId>,
    /// `lua.content`.
    pub content: Option<ScriptId>,
    /// `header_filter` handlers.
    pub header_filter: Vec<ScriptId>,
    /// `body_filter` handlers.
    pub body_filter: Vec<ScriptId>,
    /// `log` handlers.
    pub log: Vec<ScriptId>,
}

impl RoutePhases {
    /// True when the route has no Lua at all.
    pub fn is_empty(&self) -> bool {
        *self == RoutePhases::default()
    }

    /// True when handlers run after the upstream answered (header_filter,
    /// log): they may read `ngx.var`, so the request head and the upstream
    /// variables must be kept for them.
    pub fn runs_after_response(&self) -> bool {
        !self.header_filter.is_empty() || !self.body_filter.is_empty() || !self.log.is_empty()
    }
}

/// All the Lua of one configuration generation.
#[derive(Debug)]
pub struct LuaProgram {
    /// Unique per compiled program: threads key their VMs by it.
    pub id: u64,
    /// `[lua]`.
    pub settings: LuaSettings,
    /// Every script, routes' and `init`.
    pub scripts: Vec<LoadedScript>,
    /// `[lua] init`.
    pub init: Option<ScriptId>,
    /// `[lua] init_worker`: run once per worker VM after `init`; a worker
    /// makes its VM for this program as soon as it learns of it (not on the
    /// first request) when this is set.
    pub init_worker: Option<ScriptId>,
    /// Each upstream's `lua.balancer`, by upstream name.
    pub balancers: BTreeMap<String, ScriptId>,
    /// The upstreams `mg.upstream.set` may choose.
    pub upstreams: Arc<Vec<String>>,
    /// The zones `mg.limit.take` may take from.
    pub limits: Arc<BTreeMap<String, Arc<Zone>>>,
    /// `ngx.shared.NAME` stores, shared by every VM of every thread; a
    /// reload keeps a store (and its data) whose name and size are
    /// unchanged.
    pub dicts: BTreeMap<String, Arc<SharedDict>>,
    /// The stores its bundled policies keep answers in (forward_auth's
    /// cache), shared by every VM of every thread like `dicts`.
    pub policy_stores: Arc<super::policies::PolicyStores>,
    /// Whether handler runs are counted for `GET /metrics` (the
    /// snapshot's `metrics`).
    pub metrics: bool,
    /// The policies' native halves (`jwt`, `basic_auth`, `acl`) and the
    /// consumers, which `require "policies.native"` reaches.
    pub natives: Arc<Natives>,
}

/// What a configuration's scripts and policies may refer to besides their
/// own code.
#[derive(Default)]
pub struct References {
    /// The upstreams `mg.upstream.set` may choose.
    pub upstreams: Vec<String>,
    /// The zones `mg.limit.take` may take from.
    pub limits: Arc<BTreeMap<String, Arc<Zone>>>,
    /// The consumers authentication policies recognise.
    pub consumers: Arc<Consumers>,
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

impl LuaProgram {
    /// The directories holding this program's script files and the
    /// `package_path` directories that exist (watched for changes).
    pub fn script_dirs(&self) -> Vec<PathBuf> {
        let mut dirs: Vec<PathBuf> = Vec::new();
        let from_scripts = self
            .scripts
            .iter()
            .filter_map(|s| s.path.as_ref()?.parent().map(Path::to_path_buf));
        let from_path = self
            .settings
            .package_path
            .split(';')
            .filter_map(|t| Path::new(t).parent().map(Path::to_path_buf));
        for d in from_scripts.chain(from_path) {
            let d = if d.as_os_str().is_empty() {
                PathBuf::from(".")
            } else {
                d
            };
            if d.is_dir() && !dirs.contains(&d) {
                dirs.push(d);
            }
        }
        dirs
    }

    /// Reads and checks `settings.init`, `init_worker`, every route's
    /// handlers and the upstreams' `balancers` (by upstream name); returns
    /// the program and each route's phases (in route order).
    /// `refs` are the upstreams, limit zones and consumers they may name;
    /// policies with a native half are compiled (an unreadable key file
    /// is an error at the policy); shared
    /// dicts unchanged since `previous` are taken over with their data.
    /// With `metrics`, VMs count their handlers' runs.
    pub fn compile(
        settings: &LuaSettings,
        routes: &[&RouteLua],
        balancers: &[(String, Script)],
        refs: References,
        previous: Option<&LuaProgram>,
        metrics: bool,
    ) -> Result<(Arc<LuaProgram>, Vec<RoutePhases>), ConfigError> {
        let checker = mlua::Lua::new();
        let mut scripts: Vec<LoadedScript> = Vec::new();
        let add = |scripts: &mut Vec<LoadedScript>,
                   script: &Option<Script>|
         -> Result<Option<ScriptId>, ConfigError> {
            let Some(script) = script else {
                return Ok(None);
            };
            let loaded = load(script)?;
            check_syntax(&checker, &loaded, &script.place)?;
            scripts.push(loaded);
            Ok(Some(scripts.len() - 1))
        };
        let init = add(&mut scripts, &settings.init)?;
        let init_worker = add(&mut scripts, &settings.init_worker)?;
        let mut balancer_ids = BTreeMap::new();
        for (name, script) in balancers {
            if let Some(id) = add(&mut scripts, &Some(script.clone()))? {
                balancer_ids.insert(name.clone(), id);
            }
        }
        let mut policy_count = 0;
        let mut natives = Natives {
            compiled: Vec::new(),
            consumers: refs.consumers.clone(),
        };
        let native_cx = native::Context {
            consumers: &refs.consumers,
            trusted_certificate: settings.ssl_trusted_certificate.clone(),
        };
        let mut phases = Vec::with_capacity(routes.len());
        for r in routes {
            let mut route = RoutePhases::default();
            for policy in &r.policies {
                let id = policy_count;
                policy_count += 1;
                let compile = crate::policies::find(&policy.name).and_then(|d| d.compile);
                let compiled = compile
                    .map(|c| c(&policy.options, &native_cx))
                    .transpose()
                    .map_err(|e| {
                        ConfigError::at(&policy.place, format!("policy `{}`: {e}", policy.name))
                    })?;
                natives.compiled.push(compiled);
                for (phase, script) in super::policies::handlers(policy, id) {
                    check_syntax(&checker, &script, &policy.place)?;
                    scripts.push(script);
                    let sid = scripts.len() - 1;
                    match phase {
                        Phase::Rewrite => route.rewrite.push(sid),
                        Phase::HeaderFilter => route.header_filter.push(sid),
                        Phase::BodyFilter => route.body_filter.push(sid),
                        Phase::Log => route.log.push(sid),
                        _ => route.access.push(sid),
                    }
                }
            }
            route.rewrite.extend(add(&mut scripts, &r.rewrite)?);
            route.access.extend(add(&mut scripts, &r.access)?);
            route.content = add(&mut scripts, &r.content)?;
            route
                .header_filter
                .extend(add(&mut scripts, &r.header_filter)?);
            route.body_filter.extend(add(&mut scripts, &r.body_filter)?);
            route.log.extend(add(&mut scripts, &r.log)?);
            phases.push(route);
        }
        let program = LuaProgram {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            settings: settings.clone(),
            scripts,
            init,
            init_worker,
            balancers: balancer_ids,
            upstreams: Arc::new(refs.upstreams),
            limits: refs.limits,
            dicts: settings
                .shared_dicts
                .iter()
                .map(|d| {
                    let kept = previous
                        .and_then(|p| p.dicts.get(&d.name))
                        .filter(|old| old.capacity() == d.size)
                        .cloned();
                    let dict = kept.unwrap_or_else(|| Arc::new(SharedDict::new(&d.name, d.size)));
                    (d.name.clone(), dict)
                })
                .collect(),
            policy_stores: Arc::default(),
            metrics,
            natives: Arc::new(natives),
        };
        Ok((Arc::new(program), phases))
    }
}

fn load(script: &Script) -> Result<LoadedScript, ConfigError> {
    match &script.source {
        ScriptSource::File(path) => {
            let code = std::fs::read_to_string(path).map_err(|e| {
                ConfigError::at(
                    &script.place,
                    format!("cannot read Lua script {}: {e}", path.display()),
                )
            })?;
            Ok(LoadedScript {
                chunk_name: format!("@{}", path.display()),
                code,
                path: Some(path.clone()),
                label: path.display().to_string(),
            })
        }
        ScriptSource::Inline(code) => Ok(LoadedScript {
            chunk_name: format!("={}", script.place.file.display()),
            code: format!("{}{code}", "\n".repeat(script.place.line.saturating_sub(1))),
            path: None,
            label: format!("{}:{}", script.place.file.display(), script.place.line),
        }),
    }
}

/// Compiles without running; a syntax error becomes a config error at the
/// script's own file and line (`lua/x.lua:3: '=' expected near 'y'`).
fn check_syntax(lua: &mlua::Lua, script: &LoadedScript, place: &Place) -> Result<(), ConfigError> {
    let compiled = lua
        .load(script.code.as_str())
        .set_name(script.chunk_name.as_str())
        .into_function();
    let Err(e) = compiled else { return Ok(()) };
    let message = match &e {
        mlua::Error::SyntaxError { message, .. } => message.clone(),
        other => other.to_string(),
    };
    Err(error_place(&message).map_or_else(
        || ConfigError::at(place, format!("Lua syntax error: {message}")),
        |(at, text)| ConfigError::at(&at, format!("Lua syntax error: {text}")),
    ))
}

/// Splits Lua's `file:line: message` into a place and the message.
pub fn error_place(message: &str) -> Option<(Place, String)> {
    let (file, rest) = message.split_once(':')?;
    let (line, text) = rest.split_once(':')?;
    let line: usize = line.trim().parse().ok()?;
    Some((
        Place {
            file: file.into(),
            line,
            column: 1,
        },
        text.trim().to_string(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn settings() -> LuaSettings {
        LuaSettings {
            package_path: "lua/?.lua".into(),
            init: None,
            init_worker: None,
            time_budget: Duration::from_millis(50),
            sandbox: true,
            ffi: true,
            shared_dicts: Vec::new(),
            prefix: "/".into(),
            ssl_trusted_certificate: None,
        }
    }

    fn inline(code: &str, line: usize) -> Option<Script> {
        Some(Script {
            source: ScriptSource::Inline(code.into()),
            place: Place {
                file: "conf.d/10-x.toml".into(),
                line,
                column: 20,
            },
        })
    }

    #[test]
    fn syntax_errors_point_at_the_conf_d_line() {
        let bad = RouteLua {
            access: inline("local x = = 1", 7),
            ..RouteLua::default()
        };
        let e = LuaProgram::compile(
            &settings(),
            &[&bad],
            &[],
            References::default(),
            None,
            false,
        )
        .map(|_| ())
        .unwrap_err();
        assert_eq!(e.place.file, std::path::PathBuf::from("conf.d/10-x.toml"));
        assert_eq!(e.place.line, 7);
        assert!(e.message.contains("Lua syntax error"), "{e}");
    }

    #[test]
    fn missing_files_are_config_errors_and_good_scripts_get_ids() {
        let missing = RouteLua {
            content: Some(Script {
                source: ScriptSource::File("no/such.lua".into()),
                place: Place {
                    file: "c.toml".into(),
                    line: 3,
                    column: 1,
                },
            }),
            ..RouteLua::default()
        };
        let e = LuaProgram::compile(
            &settings(),
            &[&missing],
            &[],
            References::default(),
            None,
            false,
        )
        .map(|_| ())
        .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("c.toml:3:1: cannot read Lua script no/such.lua"),
            "{e}"
        );
        let good = RouteLua {
            rewrite: inline("ngx.req.set_uri('/x')", 2),
            log: inline("ngx.log(ngx.INFO, 'done')", 3),
            ..RouteLua::default()
        };
        let (program, phases) = LuaProgram::compile(
            &settings(),
            &[&good],
            &[],
            References::default(),
            None,
            false,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(program.scripts.len(), 2);
        assert_eq!(program.scripts[0].label, "conf.d/10-x.toml:2");
        assert_eq!(phases[0].rewrite, [0]);
        assert_eq!(phases[0].log, [1]);
        assert!(phases[0].access.is_empty());
    }

    #[test]
    fn init_worker_and_balancers_are_compiled_and_checked() {
        let mut with_worker = settings();
        with_worker.init_worker = inline("ngx.timer.every(1, function() end)", 4);
        let balancers = [(
            "app".to_string(),
            inline("local b = require 'ngx.balancer'", 9).unwrap_or_else(|| unreachable!()),
        )];
        let (program, _) = LuaProgram::compile(
            &with_worker,
            &[],
            &balancers,
            References::default(),
            None,
            false,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(program.init_worker, Some(0));
        assert_eq!(program.balancers.get("app"), Some(&1));
        let bad = [(
            "app".to_string(),
            inline("return = 1", 12).unwrap_or_else(|| unreachable!()),
        )];
        let e = LuaProgram::compile(&settings(), &[], &bad, References::default(), None, false)
            .map(|_| ())
            .unwrap_err();
        assert_eq!(e.place.line, 12, "{e}");
    }
}

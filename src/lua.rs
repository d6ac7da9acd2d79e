//! Lua policies in ngx_lua style (SPEC §4): per-route handlers for the
//! `rewrite`, `access`, `content`, `header_filter` and `log` phases, an
//! upstream's `balancer` (before every try, [`balancer`]), `[lua] init` and
//! `init_worker` (per VM), with the `ngx` API they are written against.
//!
//! # Execution model
//!
//! One LuaJIT VM per worker thread and per configuration generation, and a
//! coroutine per phase handler. Worker threads run a `current_thread`
//! runtime each (see [`crate::runtime`]), so a coroutine never changes
//! thread and the VM needs no lock; measured on this machine
//! (shared/notes/deps.md §4-5) this layout beat a shared VM (which
//! serialises every call: 620k calls/s on 2 threads against 1,054k) and a
//! pool behind a mutex, and a fresh VM per request costs 5x throughput.
//! Anything that waits (`ngx.sleep`, later HTTP and Redis calls) is an
//! async Rust function: the coroutine yields and the thread serves other
//! requests meanwhile.
//!
//! What a handler costs is mostly the crossings between Lua and Rust
//! (deps.md: ~150 ns per userdata field): finished coroutines are reused
//! from the VM's pool, and the `ngx` functions on the request path take
//! and return plain strings, which cross on the Lua stack without the
//! registry references that `Table`/`LuaString` arguments cost. Measured
//! with callgrind on the lua-access benchmark (bench/RESULTS.md) this took
//! the handler from ~22k to ~13k instructions per request.
//!
//! A reload compiles a new [`LuaProgram`]; each thread builds a VM for it
//! on the first request that needs it (running `[lua] init` there), or at
//! once when it has `init_worker`, while requests already in flight finish
//! on the VM of their own generation; the older VMs are retired (their
//! timers fire prematurely and stop, see [`api::tasks`]).
//!
//! Budgets: count hooks never fire inside JIT-compiled loops (deps.md §6),
//! so every VM runs with `jit.off()` (and `jit.on` made a no-op, so a
//! script cannot bring compiled loops back) and a hook every 1000
//! instructions that stops a handler past `time_budget`; `pcall`, `xpcall` and
//! `coroutine.resume` re-raise once a handler has been stopped, so a script
//! cannot swallow it. On the access path the interpreter costs next to
//! nothing (660 ns against 675 ns with the JIT, deps.md §6).
//!
//! Layout: [`program`] (reading and checking scripts at config time),
//! [`vm`] (a worker's VMs and running a phase), [`worker`] (what a
//! worker's VMs share, reached by callbacks through the VM's app data),
//! [`budget`] (deadlines and the current request of a worker),
//! [`light_threads`] (a phase's entry thread and the light threads it
//! spawns, scheduled as ngx_lua does), [`request`] (per-request state),
//! [`api`] (the `ngx` table), [`balancer`] (the `balancer` phase as the
//! upstream's per-try hook).

pub mod program;
pub mod budget;
pub mod light_threads;
pub mod request;
pub mod subrequest;
pub mod api;
pub mod cjson;
pub mod moongate;
pub mod resty;
pub mod policies;
pub mod auth;
pub mod vm;
pub mod worker;
pub mod balancer;
pub mod respond;
pub mod response_state;
pub mod stream;
pub mod body_filter;

pub use program::{LuaProgram, RoutePhases, ScriptId};

/// ngx_lua's phase names, as `ngx.get_phase()` returns them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// `init` (once per VM).
    Init,
    /// `init_worker` (once per worker VM, after `init`).
    InitWorker,
    /// `rewrite`.
    Rewrite,
    /// `access`.
    Access,
    /// `content`.
    Content,
    /// `balancer` (an upstream's `lua.balancer`, before every try).
    Balancer,
    /// `header_filter`.
    HeaderFilter,
    /// `body_filter` (once per body chunk, `ngx.arg[1]` / `ngx.arg[2]`).
    BodyFilter,
    /// `log`.
    Log,
    /// `timer` (callbacks of `ngx.timer.at` / `every`).
    Timer,
}

impl Phase {
    /// The name ngx_lua uses.
    pub fn name(self) -> &'static str {
        match self {
            Phase::Init => "init",
            Phase::InitWorker => "init_worker",
            Phase::Rewrite => "rewrite",
            Phase::Access => "access",
            Phase::Content => "content",
            Phase::Balancer => "balancer",
            Phase::HeaderFilter => "header_filter",
            Phase::BodyFilter => "body_filter",
            Phase::Log => "log",
            Phase::Timer => "timer",
        }
    }

    /// ngx_lua's error for an API the phase may not use.
    pub fn disabled(self) -> mlua::Error {
        mlua::Error::runtime(format!("API disabled in the context of {}", self.context()))
    }

    /// How ngx_lua names the phase in "API disabled in the context of
    /// ..." errors.
    pub fn context(self) -> &'static str {
        match self {
            Phase::Init => "init_by_lua*",
            Phase::InitWorker => "init_worker_by_lua*",
            Phase::Balancer => "balancer_by_lua*",
            Phase::Rewrite => "rewrite_by_lua*",
            Phase::Access => "access_by_lua*",
            Phase::Content => "content_by_lua*",
            Phase::HeaderFilter => "header_filter_by_lua*",
            Phase::BodyFilter => "body_filter_by_lua*",
            Phase::Log => "log_by_lua*",
            Phase::Timer => "ngx.timer",
        }
    }
}

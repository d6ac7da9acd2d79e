//! The `moongate` command: `run` (the default), `check`, `reload`,
//! `upgrade` and `import`.

use std::io::{IsTerminal, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use moongate::reload::ConfigSource;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::prelude::*;

/// An edge server and API gateway: conf.d routes and upstreams, hot reload.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// The configuration directory.
    ///
    /// Relative paths in its files are relative to the directory that holds it (for
    /// `-c /srv/gw/conf.d`, `/srv/gw`), wherever moongate is started.
    #[arg(short = 'c', long = "conf", default_value = "conf.d", global = true)]
    conf: PathBuf,
}

#[derive(Subcommand)]
enum Command {
    /// Serve, using the configuration directory (the default command).
    Run,
    /// Parse and validate every file; exit 1 with file:line:column on the first error.
    ///
    /// Also checks that every file the configuration names exists (Lua scripts, key
    /// files, certificates, static roots, worker directories) and that no two routes
    /// take the same requests, loads the certificates and compiles the Lua, as a start
    /// or a reload would. Relative paths are relative to the directory that holds the
    /// configuration directory, wherever `check` is run from.
    Check,
    /// Ask the running instance to reload (admin API, else pid file + SIGHUP).
    Reload,
    /// Ask the running instance to start its executable anew and hand over (Linux).
    ///
    /// Finds it by the pid file (else the admin API's /status), sends it SIGUSR2 and
    /// waits: the new process takes the listening sockets over, starts its managed
    /// workers and reports ready, then the old one drains and exits. A new process
    /// that fails to start leaves the old one serving; exit 1 with the reason.
    Upgrade,
    /// Translate an nginx/OpenResty configuration into conf.d and Lua files.
    ///
    /// Reads the file and what it includes (or saved `nginx -T` output), writes
    /// conf.d TOML and Lua files into the output directory, prints every directive
    /// that did not carry over as written (file:line and why), then checks the
    /// result as `moongate check` does.
    Import {
        /// The nginx configuration file, or a file holding `nginx -T` output.
        file: PathBuf,
        /// The conf.d directory to write (new, empty, or an earlier import's).
        #[arg(short = 'o', long = "out", default_value = "conf.d")]
        out: PathBuf,
        /// nginx's prefix (its `-p`): relative paths in the configuration
        /// (root, alias, Lua files) are made absolute against it.
        #[arg(long = "nginx-prefix")]
        nginx_prefix: Option<PathBuf>,
    },
}

/// mimalloc: allocation is a visible share of the per-request CPU with
/// glibc's malloc (measured in bench/RESULTS.md).
#[cfg(not(feature = "alloc-count"))]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The bench build (`--features alloc-count`): the same, counted (see
/// `moongate::alloc_count`).
#[cfg(all(feature = "alloc-count", not(feature = "alloc-system")))]
#[global_allocator]
static GLOBAL: moongate::alloc_count::Counting<mimalloc::MiMalloc> =
    moongate::alloc_count::Counting(mimalloc::MiMalloc);

/// `--features alloc-system`: counted over the system's malloc, which
/// valgrind's DHAT can see.
#[cfg(feature = "alloc-system")]
#[global_allocator]
static GLOBAL: moongate::alloc_count::Counting<std::alloc::System> =
    moongate::alloc_count::Counting(std::alloc::System);

fn main() -> ExitCode {
    // Before anything else: a relative argv[0] is resolved against the
    // directory moongate was started in.
    let relaunch = moongate::upgrade::Relaunch::from_start();
    let cli = Cli::parse();
    match cli.command.unwrap_or(Command::Run) {
        Command::Run => run(cli.conf, relaunch),
        Command::Check => check(cli.conf),
        Command::Reload => reload(cli.conf),
        Command::Upgrade => upgrade(cli.conf),
        Command::Import {
            file,
            out,
            nginx_prefix,
        } => import(moongate::import::ImportOptions {
            input: file,
            out,
            nginx_prefix,
        }),
    }
}

fn import(opts: moongate::import::ImportOptions) -> ExitCode {
    let done = match moongate::import::import(&opts) {
        Ok(done) => done,
        Err(e) => {
            eprintln!("moongate import: {e}");
            return ExitCode::FAILURE;
        }
    };
    for note in &done.report.notes {
        println!("{note}");
    }
    println!(
        "moongate import: {} read{}; wrote {} files ({} routes) to {}; directives: {}",
        opts.input.display(),
        if done.dump { " (nginx -T output)" } else { "" },
        done.files.len(),
        done.routes,
        opts.out.display(),
        done.report.summary(),
    );
    check(opts.out)
}

fn run(conf: PathBuf, relaunch: moongate::upgrade::Relaunch) -> ExitCode {
    // The access log writes its own lines (not tracing events).
    let human = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")));
    tracing_subscriber::registry().with(human).init();
    match moongate::Server::from_dir(&conf)
        .with_upgrade(relaunch)
        .run()
    {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("moongate: {e}");
            ExitCode::FAILURE
        }
    }
}

fn check(conf: PathBuf) -> ExitCode {
    match ConfigSource::Dir(conf.clone()).check() {
        Ok(snap) => {
            println!(
                "{}: configuration OK ({} files, {} routes, {} upstreams; relative paths from {})",
                conf.display(),
                snap.files.len(),
                snap.router.len(),
                snap.upstreams.len(),
                snap.prefix.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

fn reload(conf: PathBuf) -> ExitCode {
    let config = match ConfigSource::Dir(conf).load() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    // An admin listener on port 0 cannot be found from the config alone;
    // the pid file (if any) still can.
    if let Some(admin) = config.admin.as_ref().filter(|a| a.listen.addr.port() != 0) {
        return match post_reload(admin.listen.addr, admin.token.as_deref()) {
            Ok((status, body)) if (200..300).contains(&status) => {
                println!("{body}");
                ExitCode::SUCCESS
            }
            Ok((_, body)) => {
                eprintln!("reload refused: {body}");
                ExitCode::FAILURE
            }
            Err(e) => {
                eprintln!(
                    "cannot reach the admin listener on {}: {e}",
                    admin.listen.addr
                );
                ExitCode::FAILURE
            }
        };
    }
    if let Some(pid_file) = &config.server.pid_file {
        return match signal_hup(pid_file) {
            Ok(pid) => {
                println!("sent SIGHUP to {pid}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::FAILURE
            }
        };
    }
    eprintln!(
        "no [admin] listener and no server.pid_file configured: nothing to reach the running server with"
    );
    ExitCode::FAILURE
}

fn upgrade(conf: PathBuf) -> ExitCode {
    let config = match ConfigSource::Dir(conf).load() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    match moongate::upgrade::request(&config) {
        Ok(done) => {
            println!(
                "upgraded: pid {} serves; pid {} drains and exits",
                done.new, done.old
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// POST /reload with a plain HTTP/1.1 exchange; returns status and body.
fn post_reload(addr: std::net::SocketAddr, token: Option<&str>) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(3))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let auth = token
        .map(|t| format!("authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        stream,
        "POST /reload HTTP/1.1\r\nhost: {addr}\r\n{auth}content-length: 0\r\nconnection: close\r\n\r\n"
    )?;
    let mut raw = String::new();
    stream.read_to_string(&mut raw)?;
    let status = raw
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = raw
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .trim()
        .to_string();
    Ok((status, body))
}

fn signal_hup(pid_file: &std::path::Path) -> Result<i32, String> {
    let text = std::fs::read_to_string(pid_file)
        .map_err(|e| format!("cannot read pid file {}: {e}", pid_file.display()))?;
    let pid: i32 = text
        .trim()
        .parse()
        .map_err(|_| format!("pid file {} does not hold a process id", pid_file.display()))?;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGHUP,
    )
    .map_err(|e| format!("cannot signal process {pid}: {e}"))?;
    Ok(pid)
}

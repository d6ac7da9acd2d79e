//! The set of open listeners, kept by the control thread. Each configured
//! address is bound once per worker with SO_REUSEPORT (port 0 is resolved
//! by the first bind, and the rest bind the port it got). SO_REUSEPORT
//! would also let a second moongate bind the same address beside this one
//! (and then share its traffic at random), so every new address is first
//! probed with a socket that does not set it: if another process listens
//! there, start-up or the reload fails with "address in use". A reload binds
//! every new address first — if one fails, nothing changes and the reload
//! fails — then hands the sockets to the workers and stops the listeners
//! that are gone. Connections already accepted are not touched.
//!
//! A process started by a binary upgrade is handed the old one's sockets
//! first ([`Listeners::inherit`]): an address the old process listened on
//! (by its configured or its bound address) takes those sockets over
//! instead of binding — same port, same accept queues, so no connection is
//! refused while the two processes overlap — and binds more copies if it
//! has more workers. Each open listener keeps a duplicate of its sockets
//! for the next upgrade to hand on.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;

use socket2::{Domain, Protocol, Socket, Type};
use tokio_util::sync::CancellationToken;

use crate::runtime::{Command, Workers};
use crate::snapshot::ListenerSpec;
use crate::upgrade::{Kind, Passed};

struct Open {
    bound: SocketAddr,
    tls: bool,
    stop: CancellationToken,
    /// Duplicates of the workers' sockets, for a binary upgrade to pass on.
    sockets: Vec<std::net::TcpListener>,
}

/// Addresses being listened on, by configured address.
#[derive(Default)]
pub struct Listeners {
    open: HashMap<(SocketAddr, bool), Open>,
    /// Sockets handed over by the process this one upgrades, until the
    /// listeners (and the admin listener) that want them take them.
    inherited: Vec<Passed>,
}

/// A listener as reported in logs and `/status`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Bound {
    /// "http" or "https".
    pub scheme: &'static str,
    /// The address actually bound (port 0 resolved).
    pub addr: SocketAddr,
}

impl Listeners {
    /// Makes the open listeners match `specs`.
    pub fn apply(&mut self, specs: &[ListenerSpec], workers: &Workers) -> io::Result<()> {
        let mut fresh = Vec::new();
        for spec in specs {
            let tls = spec.tls.is_some();
            if self.open.contains_key(&(spec.addr, tls)) {
                continue;
            }
            let ours = self
                .open
                .values()
                .any(|o| o.bound.port() == spec.addr.port());
            let kind = if tls { Kind::Https } else { Kind::Http };
            let adopted = self.take_inherited(spec.addr, kind);
            let sockets = if adopted.is_empty() {
                bind_all(spec.addr, workers.len(), !ours)
            } else {
                adopt(adopted, workers.len())
            }
            .map_err(|e| {
                io::Error::new(e.kind(), format!("cannot listen on {}: {e}", spec.addr))
            })?;
            let kept = (sockets.iter())
                .map(std::net::TcpListener::try_clone)
                .collect::<io::Result<Vec<_>>>()?;
            fresh.push((spec.addr, tls, sockets, kept));
        }
        let wanted: Vec<(SocketAddr, bool)> =
            specs.iter().map(|s| (s.addr, s.tls.is_some())).collect();
        self.open.retain(|key, o| {
            let keep = wanted.contains(key);
            if !keep {
                o.stop.cancel();
                tracing::info!("stopped listening on {}://{}", scheme(o.tls), o.bound);
            }
            keep
        });
        let n = workers.len().max(1);
        for (key, tls, sockets, kept) in fresh {
            let stop = CancellationToken::new();
            let bound = sockets
                .first()
                .and_then(|s| s.local_addr().ok())
                .unwrap_or(key);
            // More sockets than workers (handed over by a process that had
            // more): a worker accepts on several.
            for (i, socket) in sockets.into_iter().enumerate() {
                workers.send(
                    i % n,
                    Command::Listen {
                        key,
                        tls,
                        socket,
                        stop: stop.clone(),
                    },
                );
            }
            tracing::info!("listening on {}://{}", scheme(tls), bound);
            self.open.insert(
                (key, tls),
                Open {
                    bound,
                    tls,
                    stop,
                    sockets: kept,
                },
            );
        }
        Ok(())
    }

    /// Keeps the sockets a binary upgrade handed over, for [`Listeners::apply`]
    /// (and the admin listener) to take.
    pub fn inherit(&mut self, sockets: Vec<Passed>) {
        self.inherited = sockets;
    }

    /// Takes the handed-over sockets of a `kind` listener on `addr`: those
    /// of the same kind the old process had configured on `addr` or had
    /// bound there; failing that, any bound on `addr` (a fixed port that
    /// changed kind, say plain to TLS). Port 0 matches only by kind: every
    /// `127.0.0.1:0` is a different socket.
    pub fn take_inherited(&mut self, addr: SocketAddr, kind: Kind) -> Vec<std::net::TcpListener> {
        let bound = |p: &Passed| p.socket.local_addr().ok();
        let same_kind = |p: &Passed| p.kind == kind && (p.key == addr || bound(p) == Some(addr));
        let by_kind = self.inherited.iter().any(same_kind);
        let (mine, rest): (Vec<Passed>, Vec<Passed>) = std::mem::take(&mut self.inherited)
            .into_iter()
            .partition(|p| {
                if by_kind {
                    same_kind(p)
                } else {
                    addr.port() != 0 && bound(p) == Some(addr)
                }
            });
        self.inherited = rest;
        if let Some(p) = mine.first() {
            tracing::info!(
                "took over {} socket(s) of {}://{} from the old process",
                mine.len(),
                p.kind.scheme(),
                p.socket.local_addr().map_or(p.key, |a| a)
            );
        }
        mine.into_iter().map(|p| p.socket).collect()
    }

    /// Closes the handed-over sockets no listener took (addresses the new
    /// configuration dropped).
    pub fn release_inherited(&mut self) {
        for p in self.inherited.drain(..) {
            tracing::info!(
                "closing a handed-over socket of {}://{}: not in this configuration",
                p.kind.scheme(),
                p.socket.local_addr().map_or(p.key, |a| a)
            );
        }
    }

    /// Duplicates of every open listener's sockets, for a binary upgrade.
    pub fn passed(&self) -> io::Result<Vec<Passed>> {
        let mut out = Vec::new();
        for (&(key, tls), o) in &self.open {
            for s in &o.sockets {
                out.push(Passed {
                    kind: if tls { Kind::Https } else { Kind::Http },
                    key,
                    socket: s.try_clone()?,
                });
            }
        }
        Ok(out)
    }

    /// What is open now.
    pub fn bound(&self) -> Vec<Bound> {
        let mut v: Vec<Bound> = self
            .open
            .values()
            .map(|o| Bound {
                scheme: scheme(o.tls),
                addr: o.bound,
            })
            .collect();
        v.sort_by_key(|b| b.addr);
        v
    }

    /// Stops every listener.
    pub fn close_all(&mut self) {
        for (_, o) in self.open.drain() {
            o.stop.cancel();
        }
    }
}

fn scheme(tls: bool) -> &'static str {
    if tls { "https" } else { "http" }
}

/// Binds `n` SO_REUSEPORT sockets to `addr` (port 0: all on the port the
/// first one got), after checking that no other process listens there
/// when `probe` is set (it is not when this process already listens on
/// the port, which the probe would mistake for another process).
fn bind_all(addr: SocketAddr, n: usize, probe: bool) -> io::Result<Vec<std::net::TcpListener>> {
    if probe {
        ensure_free(addr)?;
    }
    let first = bind_one(addr)?;
    let actual = first.local_addr()?;
    let mut all = vec![first];
    for _ in 1..n.max(1) {
        all.push(bind_one(actual)?);
    }
    Ok(all)
}

/// Handed-over sockets, and more bound beside them (SO_REUSEPORT, the port
/// they have) until there is one per worker.
fn adopt(
    mut sockets: Vec<std::net::TcpListener>,
    n: usize,
) -> io::Result<Vec<std::net::TcpListener>> {
    let bound = match sockets.first() {
        Some(s) => s.local_addr()?,
        None => return Ok(sockets),
    };
    while sockets.len() < n {
        sockets.push(bind_one(bound)?);
    }
    Ok(sockets)
}

/// Fails with `AddrInUse` when a socket of another process is bound to
/// `addr` (or to the wildcard address of its port): a bind without
/// SO_REUSEPORT conflicts with any such socket, listening ones included,
/// while SO_REUSEADDR still lets it pass connections in TIME_WAIT. Port 0
/// needs no check.
pub fn ensure_free(addr: SocketAddr) -> io::Result<()> {
    if addr.port() == 0 {
        return Ok(());
    }
    let probe = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    probe.set_reuse_address(true)?;
    if addr.is_ipv6() {
        probe.set_only_v6(true)?;
    }
    probe.bind(&addr.into()).map_err(|e| {
        if e.kind() == io::ErrorKind::AddrInUse {
            io::Error::new(
                e.kind(),
                format!("address in use: another process listens on {addr}"),
            )
        } else {
            e
        }
    })
}

/// One listening socket with SO_REUSEPORT, ready for tokio.
pub fn bind_one(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.set_tcp_nodelay(true)?;
    socket.bind(&addr.into())?;
    socket.listen(4096)?;
    Ok(socket.into())
}

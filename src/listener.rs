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

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;

use socket2::{Domain, Protocol, Socket, Type};
use tokio_util::sync::CancellationToken;

use crate::runtime::{Command, Workers};
use crate::snapshot::ListenerSpec;

struct Open {
    bound: SocketAddr,
    tls: bool,
    stop: CancellationToken,
}

/// Addresses being listened on, by configured address.
#[derive(Default)]
pub struct Listeners {
    open: HashMap<(SocketAddr, bool), Open>,
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
            let sockets = bind_all(spec.addr, workers.len(), !ours).map_err(|e| {
                io::Error::new(e.kind(), format!("cannot listen on {}: {e}", spec.addr))
            })?;
            fresh.push((spec.addr, tls, sockets));
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
        for (key, tls, sockets) in fresh {
            let stop = CancellationToken::new();
            let bound = sockets
                .first()
                .and_then(|s| s.local_addr().ok())
                .unwrap_or(key);
            for (i, socket) in sockets.into_iter().enumerate() {
                workers.send(
                    i,
                    Command::Listen {
                        key,
                        tls,
                        socket,
                        stop: stop.clone(),
                    },
                );
            }
            tracing::info!("listening on {}://{}", scheme(tls), bound);
            self.open.insert((key, tls), Open { bound, tls, stop });
        }
        Ok(())
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

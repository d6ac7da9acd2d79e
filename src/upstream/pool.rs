//! Idle keep-alive connections to peers, one pool per process shared by
//! every worker thread (SPEC §5; Pingora's design, where nginx keeps one
//! per worker process): an upstream's `keepalive` is the number of idle
//! connections kept per peer in the whole process, and a connection
//! returned on one thread can carry the next request of another.
//!
//! The shared part is [`SharedPool`] (in [`crate::state::Shared`]); each
//! worker reaches it through its [`IdlePool`], part of its
//! [`WorkerLocal`](crate::worker_local::WorkerLocal). Per peer the idle
//! connections sit in one list per worker thread, each behind its own
//! lock on its own cache line ([`peer_idle`]): a worker takes from and
//! returns to its own list, which no other thread touches while it has
//! connections to spare, and only when its list is empty takes one from
//! another thread's list, moving it to its own runtime first
//! ([`super::rehome`]). So at steady load each thread reuses the
//! connections it parked, as with per-thread pools, and a thread short of
//! connections borrows another's instead of connecting.
//!
//! Keyed by peer id, so a reload that keeps an upstream keeps its
//! connections, and a changed upstream's old connections simply age out.
//! Two kinds of connection are kept: HTTP/1.1 ones ([`Conn`], with their
//! buffers) and FastCGI ones (the bare socket, [`FcgiSocket`]: the FastCGI
//! engine brings its own reader). A peer speaks one protocol, so its list
//! holds one kind; a connection of the other kind found when taking one
//! (an address a Lua balancer named from upstreams of both protocols) is
//! closed, never handed to the wrong protocol.
//!
//! HTTP/2 connections ([`MuxPool`]) stay per thread: each is driven by a
//! task on the thread that opened it, so a stream from another thread
//! would cross threads on every frame.

mod counted;
mod peer_idle;

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

pub use counted::Counted;
use peer_idle::{Kept, PeerIdle};

use super::h1::{Conn, Socket};
use super::http2::MuxPool;
use super::peer::{Peer, PeerConfig};
use crate::config::PeerAddr;
use crate::write_timed::WriteTimed;

/// An idle FastCGI connection: the socket, its writes timed by
/// `send_timeout`.
pub type FcgiSocket = WriteTimed<Box<dyn Socket>>;

/// What a peer's connections look like now (`GET /metrics`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolFigures {
    /// Idle in the pool.
    pub idle: u64,
    /// Open and carrying a request (or its response).
    pub active: u64,
    /// Connections opened since start.
    pub connects: u64,
}

/// The process's idle connections, by peer id; see the module docs.
#[derive(Debug)]
pub struct SharedPool {
    /// Worker threads: each has its own list per peer.
    homes: usize,
    peers: Mutex<HashMap<u64, Arc<PeerIdle>>>,
    /// Pool keys of addresses a Lua balancer sent tries to outside an
    /// upstream's peers (ids taken from the peers' id sequence, so they
    /// never meet a peer's); forgotten once their pool is empty.
    addresses: Mutex<HashMap<PeerAddr, u64>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl SharedPool {
    /// An empty pool for `homes` worker threads.
    pub fn new(homes: usize) -> Arc<SharedPool> {
        Arc::new(SharedPool {
            homes: homes.max(1),
            peers: Mutex::default(),
            addresses: Mutex::default(),
        })
    }

    /// The pool of `peer_id`, made on first use.
    fn peer(&self, peer_id: u64) -> Arc<PeerIdle> {
        lock(&self.peers)
            .entry(peer_id)
            .or_insert_with(|| Arc::new(PeerIdle::new(self.homes)))
            .clone()
    }

    /// The figures of `peer_id`'s connections (zeros for a peer never
    /// connected to).
    pub fn figures(&self, peer_id: u64) -> PoolFigures {
        lock(&self.peers)
            .get(&peer_id)
            .map_or_else(PoolFigures::default, |p| p.figures())
    }

    /// The pool key of `addr`, an address that is none of an upstream's
    /// peers (chosen by a Lua balancer): one per address.
    pub fn address_key(&self, addr: &PeerAddr) -> u64 {
        let mut keys = lock(&self.addresses);
        if let Some(key) = keys.get(addr) {
            return *key;
        }
        let key = Peer::new(PeerConfig::default()).id();
        keys.insert(addr.clone(), key);
        key
    }

    /// Forgets the pools of peers neither `live` nor an address's key
    /// (their idle connections are closed by each worker's sweep), and the
    /// keys of addresses whose pool is empty.
    fn forget(&self, live: &dyn Fn(u64) -> bool) {
        let mut addresses = lock(&self.addresses);
        let mut peers = lock(&self.peers);
        peers.retain(|id, p| live(*id) || (p.in_use() && addresses.values().any(|k| k == id)));
        addresses.retain(|_, key| peers.contains_key(key));
    }
}

/// One worker thread's way into the [`SharedPool`].
pub struct IdlePool {
    shared: Arc<SharedPool>,
    /// This worker's list in every peer's pool.
    home: usize,
    /// The peers this worker met, by id: a list, not a hash map, since a
    /// worker meets few peers (a scan of a few ids costs less than
    /// hashing one), and no lock is taken to find one.
    known: RefCell<Vec<(u64, Arc<PeerIdle>)>>,
    /// HTTP/2 connections (`h2` and `grpc` upstreams), shared by the
    /// streams they carry rather than idle between requests; per thread
    /// (see the module docs).
    pub mux: Rc<MuxPool>,
}

impl IdlePool {
    /// Worker `home`'s access to `shared`.
    pub fn new(shared: Arc<SharedPool>, home: usize) -> IdlePool {
        IdlePool {
            home: home % shared.homes,
            shared,
            known: RefCell::default(),
            mux: Rc::default(),
        }
    }

    /// The pool key of `addr`, an address that is none of an upstream's
    /// peers; see [`SharedPool::address_key`].
    pub fn address_key(&self, addr: &PeerAddr) -> u64 {
        self.shared.address_key(addr)
    }

    /// Runs `f` on the pool of `peer_id`, lent rather than cloned: an
    /// `Arc` clone per request would bounce its count's cache line
    /// between the threads.
    fn with_peer<R>(&self, peer_id: u64, f: impl FnOnce(&Arc<PeerIdle>) -> R) -> R {
        let mut known = self.known.borrow_mut();
        let at = match known.iter().position(|(id, _)| *id == peer_id) {
            Some(at) => at,
            None => {
                known.push((peer_id, self.shared.peer(peer_id)));
                known.len() - 1
            }
        };
        f(&known[at].1)
    }

    /// `socket`, newly connected to `peer_id`, counted among the peer's
    /// open connections while it lives.
    pub fn counted(&self, peer_id: u64, socket: Box<dyn Socket>) -> Box<dyn Socket> {
        Box::new(Counted::new(socket, self.with_peer(peer_id, Arc::clone)))
    }

    /// Takes the most recently used idle connection to `peer_id` that is
    /// still open and was idle less than `idle_timeout`.
    pub fn checkout(&self, peer_id: u64, idle_timeout: Duration) -> Option<Conn> {
        let (kept, moved) = self.with_peer(peer_id, |p| {
            p.take(self.home, idle_timeout, |k| matches!(k, Kept::Http1(_)))
        })?;
        let Kept::Http1(conn) = kept else {
            return None;
        };
        let mut conn = if moved { conn.rehome().ok()? } else { conn };
        conn.reused = true;
        Some(conn)
    }

    /// [`IdlePool::checkout`] for a FastCGI connection.
    pub fn checkout_fastcgi(&self, peer_id: u64, idle_timeout: Duration) -> Option<FcgiSocket> {
        let (kept, moved) = self.with_peer(peer_id, |p| {
            p.take(self.home, idle_timeout, |k| matches!(k, Kept::Fastcgi(_)))
        })?;
        let Kept::Fastcgi(socket) = kept else {
            return None;
        };
        if !moved {
            return Some(socket);
        }
        let timeout = socket.timeout();
        let socket = socket.into_inner().rehome().ok()?;
        Some(WriteTimed::new(socket, timeout))
    }

    /// Returns a connection whose exchange completed; closed instead when
    /// the process already keeps `max_idle` idle connections to the peer
    /// (this worker's oldest is closed in its place when it has one).
    pub fn checkin(&self, peer_id: u64, conn: Conn, max_idle: usize) {
        if !conn.is_clean() || max_idle == 0 {
            return;
        }
        self.with_peer(peer_id, |p| p.put(self.home, Kept::Http1(conn), max_idle));
    }

    /// Returns a FastCGI connection whose request ended cleanly (the
    /// engine's `reusable`); as [`IdlePool::checkin`].
    pub fn checkin_fastcgi(&self, peer_id: u64, socket: FcgiSocket, max_idle: usize) {
        if max_idle == 0 {
            return;
        }
        self.with_peer(peer_id, |p| {
            p.put(self.home, Kept::Fastcgi(socket), max_idle)
        });
    }

    /// Closes this worker's idle connections older than `max_age` or
    /// closed by their peer, and those of peers not in `live`; forgets
    /// such peers (called periodically by each worker).
    pub fn sweep(&self, live: &dyn Fn(u64) -> bool, max_age: Duration) {
        self.mux.sweep(live);
        self.shared.forget(live);
        let peers = lock(&self.shared.peers);
        self.known.borrow_mut().retain(|(id, p)| {
            let kept = peers.contains_key(id);
            p.sweep(self.home, if kept { max_age } else { Duration::ZERO });
            kept
        });
    }
}

#[cfg(test)]
mod tests;

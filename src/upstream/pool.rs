//! Idle keep-alive connections to peers, one pool per worker thread (no
//! locks on the hot path; SPEC: `keepalive` idle connections per worker
//! thread, here per peer), owned by the worker's
//! [`WorkerLocal`](crate::worker_local::WorkerLocal). Keyed by peer id, so
//! a reload that keeps an upstream keeps its connections, and a changed
//! upstream's old connections simply age out.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::rc::Rc;
use std::time::{Duration, Instant};

use super::h1::Conn;
use super::http2::MuxPool;
use super::peer::{Peer, PeerConfig};
use crate::config::PeerAddr;

struct Idle {
    conn: Conn,
    since: Instant,
}

/// One worker thread's idle connections, by peer id.
#[derive(Default)]
pub struct IdlePool {
    idle: RefCell<HashMap<u64, Vec<Idle>>>,
    /// HTTP/2 connections (`h2` and `grpc` upstreams), shared by the
    /// streams they carry rather than idle between requests.
    pub mux: Rc<MuxPool>,
    /// Pool keys of addresses a Lua balancer sent tries to outside an
    /// upstream's peers (ids taken from the peers' id sequence, so they
    /// never meet a peer's); forgotten once their pool is empty.
    addresses: RefCell<HashMap<PeerAddr, u64>>,
}

impl IdlePool {
    /// The pool key of `addr`, an address that is none of an upstream's
    /// peers (chosen by a Lua balancer): one per address.
    pub fn address_key(&self, addr: &PeerAddr) -> u64 {
        let mut keys = self.addresses.borrow_mut();
        if let Some(key) = keys.get(addr) {
            return *key;
        }
        let key = Peer::new(PeerConfig::default()).id();
        keys.insert(addr.clone(), key);
        key
    }

    /// Takes the most recently used idle connection to `peer_id` that is
    /// still open and was idle less than `idle_timeout`.
    pub fn checkout(&self, peer_id: u64, idle_timeout: Duration) -> Option<Conn> {
        let mut pool = self.idle.borrow_mut();
        let list = pool.get_mut(&peer_id)?;
        while let Some(idle) = list.pop() {
            if idle.since.elapsed() < idle_timeout && idle.conn.is_alive() {
                let mut conn = idle.conn;
                conn.reused = true;
                return Some(conn);
            }
        }
        None
    }

    /// Returns a connection whose exchange completed; dropped (closed) when
    /// the pool for that peer already holds `max_idle`.
    pub fn checkin(&self, peer_id: u64, conn: Conn, max_idle: usize) {
        if max_idle == 0 || !conn.is_clean() {
            return;
        }
        let mut pool = self.idle.borrow_mut();
        let list = pool.entry(peer_id).or_default();
        if list.len() >= max_idle {
            list.remove(0);
        }
        list.push(Idle {
            conn,
            since: Instant::now(),
        });
    }

    /// Drops idle connections older than `max_age` or closed by their
    /// peer, and pools of peers not in `live` (called periodically by each
    /// worker).
    pub fn sweep(&self, live: &dyn Fn(u64) -> bool, max_age: Duration) {
        self.mux.sweep(live);
        let mut addresses = self.addresses.borrow_mut();
        let by_address: HashSet<u64> = addresses.values().copied().collect();
        let mut idle = self.idle.borrow_mut();
        idle.retain(|id, list| {
            list.retain(|i| i.since.elapsed() < max_age && i.conn.is_alive());
            (live(*id) || by_address.contains(id)) && !list.is_empty()
        });
        addresses.retain(|_, key| idle.contains_key(key));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_outside_the_peers_get_one_key_each_until_their_pool_empties() {
        let pool = IdlePool::default();
        let a = PeerAddr::Tcp(([127, 0, 0, 1], 8001).into());
        let b = PeerAddr::Unix("/run/b.sock".into());
        let key_a = pool.address_key(&a);
        assert_eq!(pool.address_key(&a), key_a);
        assert_ne!(pool.address_key(&b), key_a);
        // Nothing pooled for them: a sweep forgets the keys.
        pool.sweep(&|_| true, Duration::from_secs(300));
        assert!(pool.addresses.borrow().is_empty());
    }
}

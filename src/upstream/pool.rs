//! Idle keep-alive connections to peers, one pool per worker thread (no
//! locks on the hot path; SPEC: `keepalive` idle connections per worker
//! thread, here per peer), owned by the worker's
//! [`WorkerLocal`](crate::worker_local::WorkerLocal). Keyed by peer id, so
//! a reload that keeps an upstream keeps its connections, and a changed
//! upstream's old connections simply age out.

use std::cell::RefCell;
use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::h1::Conn;

struct Idle {
    conn: Conn,
    since: Instant,
}

/// One worker thread's idle connections, by peer id.
#[derive(Default)]
pub struct IdlePool {
    idle: RefCell<HashMap<u64, Vec<Idle>>>,
}

impl IdlePool {
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
        self.idle.borrow_mut().retain(|id, list| {
            list.retain(|i| i.since.elapsed() < max_age && i.conn.is_alive());
            live(*id) && !list.is_empty()
        });
    }
}

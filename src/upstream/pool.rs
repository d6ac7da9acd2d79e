//! Idle keep-alive connections to peers, one pool per worker thread (no
//! locks on the hot path; SPEC: `keepalive` idle connections per worker
//! thread). Keyed by peer id, so a reload that keeps an upstream keeps its
//! connections, and a changed upstream's old connections simply age out.

use std::cell::RefCell;
use std::collections::HashMap;
use std::time::{Duration, Instant};

use hyper::client::conn::http1::SendRequest;

use crate::body::RequestBody;

/// The sending half of one HTTP/1.1 connection to a peer.
pub type Sender = SendRequest<RequestBody>;

struct Idle {
    sender: Sender,
    since: Instant,
}

thread_local! {
    static IDLE: RefCell<HashMap<u64, Vec<Idle>>> = RefCell::new(HashMap::new());
}

/// Takes the most recently used idle connection to `peer_id` that is
/// still open and was idle less than `idle_timeout`.
pub fn checkout(peer_id: u64, idle_timeout: Duration) -> Option<Sender> {
    IDLE.with(|pool| {
        let mut pool = pool.borrow_mut();
        let list = pool.get_mut(&peer_id)?;
        while let Some(idle) = list.pop() {
            if !idle.sender.is_closed() && idle.since.elapsed() < idle_timeout {
                return Some(idle.sender);
            }
        }
        None
    })
}

/// Returns a connection whose exchange completed; dropped (closed) when the
/// pool for that peer already holds `max_idle`.
pub fn checkin(peer_id: u64, sender: Sender, max_idle: usize) {
    if max_idle == 0 || sender.is_closed() {
        return;
    }
    IDLE.with(|pool| {
        let mut pool = pool.borrow_mut();
        let list = pool.entry(peer_id).or_default();
        if list.len() >= max_idle {
            list.remove(0);
        }
        list.push(Idle {
            sender,
            since: Instant::now(),
        });
    });
}

/// Drops idle connections older than `max_age` and pools of peers not in
/// `live` (called periodically by each worker).
pub fn sweep(live: &dyn Fn(u64) -> bool, max_age: Duration) {
    IDLE.with(|pool| {
        let mut pool = pool.borrow_mut();
        pool.retain(|id, list| {
            list.retain(|i| !i.sender.is_closed() && i.since.elapsed() < max_age);
            live(*id) && !list.is_empty()
        });
    });
}

/// How many idle connections this thread holds to `peer_id`.
pub fn idle_count(peer_id: u64) -> usize {
    IDLE.with(|pool| pool.borrow().get(&peer_id).map_or(0, Vec::len))
}

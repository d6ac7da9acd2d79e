//! The per-worker cosocket connection pool (`tcpsock:setkeepalive`,
//! looked up by `tcpsock:connect`), one [`SocketPool`] in each
//! [`LuaWorker`](crate::lua::worker::LuaWorker), shared by the worker's
//! VMs of every configuration generation. Pools are named `host:port`,
//! `unix:/path` or by the `pool` option; each keeps at most its size of
//! idle connections, the least recently used closed first. Knows nothing
//! of Lua.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};

use super::stream::Stream;

/// ngx_lua's `lua_socket_pool_size` default.
pub const DEFAULT_POOL_SIZE: usize = 30;

/// One worker's idle cosocket connections, by pool name.
#[derive(Default)]
pub struct SocketPool {
    pools: RefCell<HashMap<String, Pool>>,
    /// Names idle connections, so an idle timeout finds its own.
    next_id: Cell<u64>,
}

struct Pool {
    /// Most idle connections kept; fixed when the pool is made.
    size: usize,
    /// Oldest first.
    idle: VecDeque<Idle>,
}

struct Idle {
    id: u64,
    stream: Stream,
    /// How often it was handed out of the pool before.
    reused: u32,
}

impl SocketPool {
    /// Makes pool `name` with room for `size` connections, unless it exists
    /// (a pool's size cannot change once made, as in ngx_lua).
    pub fn create(&self, name: &str, size: usize) {
        let mut pools = self.pools.borrow_mut();
        if !pools.contains_key(name) {
            pools.insert(
                name.to_string(),
                Pool {
                    size,
                    idle: VecDeque::new(),
                },
            );
        }
    }

    /// The most recently kept connection of pool `name` that is still open
    /// with nothing unread, and how often it was reused before. Dead ones
    /// met on the way are closed.
    pub fn take(&self, name: &str) -> Option<(Stream, u32)> {
        let mut pools = self.pools.borrow_mut();
        let pool = pools.get_mut(name)?;
        while let Some(idle) = pool.idle.pop_back() {
            if idle.stream.is_idle_and_open() {
                return Some((idle.stream, idle.reused));
            }
        }
        None
    }

    /// Keeps `stream` in pool `name` (made with `size` if it does not
    /// exist), closing the least recently used connection if it is full.
    /// Returns the id [`SocketPool::expire`] takes.
    pub fn put(&self, name: &str, size: usize, stream: Stream, reused: u32) -> u64 {
        self.create(name, size);
        let id = self.next_id.get() + 1;
        self.next_id.set(id);
        let mut pools = self.pools.borrow_mut();
        if let Some(pool) = pools.get_mut(name) {
            if pool.size == 0 {
                return id;
            }
            while pool.idle.len() >= pool.size {
                pool.idle.pop_front();
            }
            pool.idle.push_back(Idle { id, stream, reused });
        }
        id
    }

    /// Closes connection `id` of pool `name` if it is still idle there
    /// (its keepalive timeout passed).
    pub fn expire(&self, name: &str, id: u64) {
        if let Some(pool) = self.pools.borrow_mut().get_mut(name) {
            pool.idle.retain(|idle| idle.id != id);
        }
    }

    /// Idle connections in pool `name` (for tests and status).
    pub fn idle_count(&self, name: &str) -> usize {
        self.pools.borrow().get(name).map_or(0, |p| p.idle.len())
    }
}

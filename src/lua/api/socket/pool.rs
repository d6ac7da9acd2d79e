//! The per-worker cosocket connection pool (`tcpsock:setkeepalive`,
//! looked up by `tcpsock:connect`), one [`SocketPool`] in each
//! [`LuaWorker`](crate::lua::worker::LuaWorker), shared by the worker's
//! VMs of every configuration generation. Pools are named `host:port`,
//! `unix:/path` or by the `pool` option; each keeps at most its size of
//! idle connections, the least recently used closed first. A pool made
//! with a `backlog` also bounds the connections open at once (idle or in
//! use) to its size, queueing up to `backlog` connects. Knows nothing of
//! Lua.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::rc::Rc;

use tokio::sync::Notify;
use tokio::time::Instant;

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
    /// With a backlog: the bound on open connections.
    limit: Option<Rc<Slots>>,
}

/// A pooled connection waiting to be reused.
pub struct Idle {
    id: u64,
    /// The connection.
    pub stream: Stream,
    /// How often it was handed out of the pool before.
    pub reused: u32,
    /// Its place under the pool's bound, if it has one.
    pub ticket: Option<Ticket>,
}

/// The open connections of a pool with a backlog.
pub struct Slots {
    size: usize,
    backlog: usize,
    open: Cell<usize>,
    waiting: Cell<usize>,
    /// Wakes a queued connect when a connection closes or goes idle.
    freed: Notify,
}

/// One open connection counted by [`Slots`]; dropping it (the connection
/// closed) frees the place.
pub struct Ticket(Rc<Slots>);

impl Drop for Ticket {
    fn drop(&mut self) {
        self.0.open.set(self.0.open.get().saturating_sub(1));
        self.0.freed.notify_one();
    }
}

/// What a connect gets from the pool.
pub enum Checkout {
    /// An idle connection.
    Reuse(Idle),
    /// Open a new connection (holding the ticket, if the pool is bounded).
    Open(Option<Ticket>),
    /// The error to return ("timeout", "too many waiting connect operations").
    Fail(&'static str),
}

impl SocketPool {
    /// Makes pool `name` with room for `size` connections (and, with
    /// `backlog`, at most `size` open at once), unless it exists: a pool's
    /// size cannot change once made, as in ngx_lua.
    pub fn create(&self, name: &str, size: usize, backlog: Option<usize>) {
        let mut pools = self.pools.borrow_mut();
        if !pools.contains_key(name) {
            let limit = backlog.map(|backlog| {
                Rc::new(Slots {
                    size,
                    backlog,
                    open: Cell::new(0),
                    waiting: Cell::new(0),
                    freed: Notify::new(),
                })
            });
            pools.insert(
                name.to_string(),
                Pool {
                    size,
                    idle: VecDeque::new(),
                    limit,
                },
            );
        }
    }

    /// The most recently kept connection of pool `name` that is still open
    /// with nothing unread. Dead ones met on the way are closed.
    fn take(&self, name: &str) -> Option<Idle> {
        let mut pools = self.pools.borrow_mut();
        let pool = pools.get_mut(name)?;
        while let Some(idle) = pool.idle.pop_back() {
            if idle.stream.is_idle_and_open() {
                return Some(idle);
            }
        }
        None
    }

    /// An idle connection of pool `name`, or leave to open one: at once,
    /// or in a bounded pool once fewer than its size are open (waiting
    /// until `deadline` at most, behind at most `backlog` others).
    pub async fn checkout(&self, name: &str, deadline: Instant) -> Checkout {
        loop {
            if let Some(idle) = self.take(name) {
                return Checkout::Reuse(idle);
            }
            let limit = self.pools.borrow().get(name).and_then(|p| p.limit.clone());
            let Some(slots) = limit else {
                return Checkout::Open(None);
            };
            if slots.open.get() < slots.size {
                slots.open.set(slots.open.get() + 1);
                return Checkout::Open(Some(Ticket(slots)));
            }
            if slots.waiting.get() >= slots.backlog {
                return Checkout::Fail("too many waiting connect operations");
            }
            slots.waiting.set(slots.waiting.get() + 1);
            let woken = tokio::time::timeout_at(deadline, slots.freed.notified()).await;
            slots.waiting.set(slots.waiting.get().saturating_sub(1));
            if woken.is_err() {
                return Checkout::Fail("timeout");
            }
        }
    }

    /// Keeps `stream` in pool `name` (made with `size` if it does not
    /// exist), closing the least recently used connection if it is full.
    /// Returns the id [`SocketPool::expire`] takes.
    pub fn put(
        &self,
        name: &str,
        size: usize,
        stream: Stream,
        reused: u32,
        ticket: Option<Ticket>,
    ) -> u64 {
        self.create(name, size, None);
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
            pool.idle.push_back(Idle {
                id,
                stream,
                reused,
                ticket,
            });
            // A queued connect may take it.
            if let Some(slots) = &pool.limit {
                slots.freed.notify_one();
            }
        }
        id
    }

    /// Closes connection `id` of pool `name` if it is still idle there
    /// (its keepalive timeout passed).
    pub fn expire(&self, name: &str, id: u64) {
        let expired: VecDeque<Idle> = match self.pools.borrow_mut().get_mut(name) {
            Some(pool) => {
                let (gone, kept) = std::mem::take(&mut pool.idle)
                    .into_iter()
                    .partition(|idle| idle.id == id);
                pool.idle = kept;
                gone
            }
            None => VecDeque::new(),
        };
        // Closed (and their tickets freed) outside the borrow.
        drop(expired);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn is_open(c: &Checkout) -> bool {
        matches!(c, Checkout::Open(Some(_)))
    }

    fn failed(c: &Checkout) -> Option<&'static str> {
        match c {
            Checkout::Fail(e) => Some(e),
            _ => None,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_bounded_pool_queues_up_to_its_backlog_then_times_out() {
        let pool = SocketPool::default();
        pool.create("p", 1, Some(1));
        let soon = Instant::now() + Duration::from_millis(100);
        let first = pool.checkout("p", soon).await;
        assert!(is_open(&first));
        // One connect waits (the backlog), the next is refused at once.
        let (queued, refused) = tokio::join!(pool.checkout("p", soon), pool.checkout("p", soon));
        assert_eq!(failed(&queued), Some("timeout"));
        assert_eq!(
            failed(&refused),
            Some("too many waiting connect operations")
        );
        // Closing the first connection frees its place.
        drop(first);
        let later = Instant::now() + Duration::from_millis(100);
        assert!(is_open(&pool.checkout("p", later).await));
    }

    #[tokio::test(start_paused = true)]
    async fn a_queued_connect_gets_the_place_a_closing_connection_frees() {
        let pool = SocketPool::default();
        pool.create("p", 1, Some(5));
        let soon = Instant::now() + Duration::from_secs(1);
        let first = pool.checkout("p", soon).await;
        let (queued, ()) = tokio::join!(pool.checkout("p", soon), async {
            tokio::time::sleep(Duration::from_millis(10)).await;
            drop(first);
        });
        assert!(is_open(&queued));
    }

    #[tokio::test]
    async fn an_unbounded_pool_always_lets_a_connect_open() {
        let pool = SocketPool::default();
        pool.create("p", 2, None);
        let now = Instant::now();
        for _ in 0..5 {
            assert!(matches!(
                pool.checkout("p", now).await,
                Checkout::Open(None)
            ));
        }
    }
}

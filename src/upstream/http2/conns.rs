//! One worker thread's HTTP/2 connections to peers, by peer id: each
//! connection carries many streams at once, so a request takes a stream on
//! a connection with room (below the peer's
//! `SETTINGS_MAX_CONCURRENT_STREAMS`), a new connection is opened only when
//! none has room and the peer has fewer than `h2_connections`, and past
//! that bound streams queue on the least busy connection (the `h2` crate
//! opens them as others close). Requests arriving while a connection is
//! being opened wait for it rather than open their own, so a burst of a
//! hundred calls makes one connection, not a hundred.
//!
//! Each connection is driven by a task of its own on the worker's task
//! set; it ends when the peer closes, or when the sweep drops the last
//! handle of a connection idle past the upstream's `keepalive_timeout`.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use h2::client::SendRequest;
use tokio::sync::Notify;

/// Connection-level receive window (per stream it is [`STREAM_WINDOW`]).
const CONN_WINDOW: u32 = 4 * 1024 * 1024;
/// Receive window of one stream.
const STREAM_WINDOW: u32 = 1024 * 1024;
/// Request bytes buffered per stream beyond the peer's window.
const MAX_SEND_BUFFER: usize = 256 * 1024;
/// Largest response head (decoded) taken from a peer, as for HTTP/1.
const MAX_HEADER_LIST: u32 = 64 * 1024;

/// One connection: a handle to open streams on, and whether its driver
/// still runs.
struct Mux {
    id: u64,
    send: SendRequest<Bytes>,
    /// Streams taken and not yet done (see [`Slot`]).
    streams: Rc<Cell<usize>>,
    alive: Rc<Cell<bool>>,
    last_used: Cell<Instant>,
    idle_timeout: Duration,
}

impl Mux {
    fn busy(&self) -> usize {
        self.streams.get()
    }

    fn take(&self) -> (SendRequest<Bytes>, u64, Slot) {
        self.last_used.set(Instant::now());
        (self.send.clone(), self.id, Slot::new(&self.streams))
    }

    fn has_room(&self) -> bool {
        self.busy() < self.send.current_max_send_streams()
    }
}

/// The connections to one peer, and those being opened.
#[derive(Default)]
struct PeerConns {
    open: Vec<Mux>,
    connecting: usize,
    /// Woken when a connection attempt ends (made or failed).
    settled: Rc<Notify>,
}

/// What [`MuxPool::checkout`] hands back.
pub enum Checkout {
    /// A handle on a connection with room (or the least busy one), the
    /// connection's id in the pool, and the stream's place on it.
    Ready(SendRequest<Bytes>, u64, Slot),
    /// No connection to use: the caller opens one and registers it with
    /// [`MuxPool::register`] (the ticket holds the place meanwhile).
    Connect(Ticket),
}

/// A place held for a connection being opened; dropping it (the attempt
/// failed) frees the place and wakes the requests waiting for it.
pub struct Ticket {
    pool: Rc<MuxPool>,
    peer_id: u64,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut peers = self.pool.peers.borrow_mut();
        if let Some(p) = peers.get_mut(&self.peer_id) {
            p.connecting = p.connecting.saturating_sub(1);
            p.settled.notify_waiters();
        }
    }
}

/// One worker thread's HTTP/2 connections (see the module docs).
#[derive(Default)]
pub struct MuxPool {
    peers: RefCell<HashMap<u64, PeerConns>>,
    /// The id of the next connection.
    next_id: Cell<u64>,
}

impl MuxPool {
    /// A stream handle for `peer_id`, or a ticket to open a connection
    /// (at most `bound` per peer), waiting for a connection being opened
    /// when that is the only way to get one.
    pub async fn checkout(self: &Rc<Self>, peer_id: u64, bound: usize) -> Checkout {
        loop {
            let settled = {
                let mut peers = self.peers.borrow_mut();
                let p = peers.entry(peer_id).or_default();
                p.open.retain(|m| m.alive.get());
                if let Some(m) = p.open.iter().find(|m| m.has_room()) {
                    let (send, id, slot) = m.take();
                    return Checkout::Ready(send, id, slot);
                }
                if p.open.len() + p.connecting < bound.max(1) {
                    p.connecting += 1;
                    return Checkout::Connect(Ticket {
                        pool: self.clone(),
                        peer_id,
                    });
                }
                if let Some(m) = p.open.iter().min_by_key(|m| m.busy()) {
                    let (send, id, slot) = m.take();
                    return Checkout::Ready(send, id, slot);
                }
                p.settled.clone()
            };
            // Only connections being opened: wait for one to settle.
            let notified = settled.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let still_connecting = self
                .peers
                .borrow()
                .get(&peer_id)
                .is_some_and(|p| p.open.is_empty() && p.connecting > 0);
            if still_connecting {
                notified.await;
            }
        }
    }

    /// Adds a connection opened under `ticket`, returning its id and the
    /// first stream's place on it; `alive` turns false when its driver ends.
    pub fn register(
        &self,
        ticket: Ticket,
        send: &SendRequest<Bytes>,
        alive: Rc<Cell<bool>>,
        idle_timeout: Duration,
    ) -> (u64, Slot) {
        let id = self.next_id.get();
        self.next_id.set(id + 1);
        let streams = Rc::new(Cell::new(0));
        let slot = Slot::new(&streams);
        {
            let mut peers = self.peers.borrow_mut();
            let p = peers.entry(ticket.peer_id).or_default();
            p.open.push(Mux {
                id,
                send: send.clone(),
                streams,
                alive,
                last_used: Cell::new(Instant::now()),
                idle_timeout,
            });
        }
        // Frees the connecting place and wakes the waiters, who now find it.
        drop(ticket);
        (id, slot)
    }

    /// Forgets connection `conn_id` of `peer_id`, which failed to open a
    /// stream (the peer sent GOAWAY, or the connection broke): no new
    /// stream goes there; those it carries finish on it.
    pub fn forget(&self, peer_id: u64, conn_id: u64) {
        if let Some(p) = self.peers.borrow_mut().get_mut(&peer_id) {
            p.open.retain(|m| m.id != conn_id);
        }
    }

    /// Drops connections whose driver ended, those idle (no stream) past
    /// their `keepalive_timeout`, and peers not in `live` (called
    /// periodically by each worker): a dropped connection's driver closes
    /// it once its last stream ends.
    pub fn sweep(&self, live: &dyn Fn(u64) -> bool) {
        let mut peers = self.peers.borrow_mut();
        peers.retain(|id, p| {
            p.open.retain(|m| {
                m.alive.get() && (m.busy() > 0 || m.last_used.get().elapsed() < m.idle_timeout)
            });
            (live(*id) && !p.open.is_empty()) || p.connecting > 0
        });
    }
}

/// One stream's place on a connection, counted while the stream is in use
/// (its response body not yet over): how busy a connection is, for
/// choosing one with room.
pub struct Slot(Rc<Cell<usize>>);

impl Slot {
    fn new(streams: &Rc<Cell<usize>>) -> Slot {
        streams.set(streams.get() + 1);
        Slot(streams.clone())
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.set(self.0.get().saturating_sub(1));
    }
}

/// The `h2` client settings moongate connects to peers with.
pub fn builder() -> h2::client::Builder {
    let mut b = h2::client::Builder::new();
    b.initial_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONN_WINDOW)
        .max_send_buffer_size(MAX_SEND_BUFFER)
        .max_header_list_size(MAX_HEADER_LIST)
        .enable_push(false);
    b
}

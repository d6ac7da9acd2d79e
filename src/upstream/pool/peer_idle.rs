//! One peer's idle connections in the shared pool: a list per worker
//! thread, each behind its own lock on its own cache line, and the
//! process-wide counts (idle, open, connects) the `keepalive` bound and
//! the metrics read.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::{FcgiSocket, PoolFigures, lock};
use crate::upstream::h1::Conn;

/// One idle connection, of either kind.
pub(super) enum Kept {
    Http1(Conn),
    Fastcgi(FcgiSocket),
}

impl Kept {
    fn is_alive(&self) -> bool {
        match self {
            Kept::Http1(conn) => conn.is_alive(),
            Kept::Fastcgi(socket) => socket.get_ref().is_idle_open(),
        }
    }
}

struct Idle {
    conn: Kept,
    since: Instant,
}

/// One worker's list: oldest at the front, most recent at the back. On a
/// cache line of its own, so a worker taking its lock does not disturb
/// another's.
#[repr(align(128))]
#[derive(Default)]
struct Home(Mutex<VecDeque<Idle>>);

/// One peer's pool; see the module docs.
pub(super) struct PeerIdle {
    homes: Box<[Home]>,
    /// Idle connections in all the lists.
    idle: AtomicUsize,
    /// Open connections (idle or carrying a request); kept by
    /// [`super::Counted`].
    pub(super) open: AtomicUsize,
    /// Connections opened since start.
    pub(super) connects: AtomicU64,
}

impl std::fmt::Debug for PeerIdle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerIdle")
            .field("figures", &self.figures())
            .finish()
    }
}

impl PeerIdle {
    /// An empty pool with a list for each of `homes` workers.
    pub(super) fn new(homes: usize) -> PeerIdle {
        PeerIdle {
            homes: (0..homes).map(|_| Home::default()).collect(),
            idle: AtomicUsize::new(0),
            open: AtomicUsize::new(0),
            connects: AtomicU64::new(0),
        }
    }

    /// The counts now.
    pub(super) fn figures(&self) -> PoolFigures {
        let idle = self.idle.load(Ordering::Relaxed) as u64;
        let open = self.open.load(Ordering::Relaxed) as u64;
        PoolFigures {
            idle,
            active: open.saturating_sub(idle),
            connects: self.connects.load(Ordering::Relaxed),
        }
    }

    /// Whether it holds or counts any connection.
    pub(super) fn in_use(&self) -> bool {
        self.idle.load(Ordering::Relaxed) > 0 || self.open.load(Ordering::Relaxed) > 0
    }

    /// The most recent idle connection of the kind `wanted` accepts, from
    /// `home`'s list first, else from another's (then `true`: it must be
    /// moved to this thread). Stale, closed or other connections met on
    /// the way are closed.
    pub(super) fn take(
        &self,
        home: usize,
        idle_timeout: Duration,
        wanted: impl Fn(&Kept) -> bool,
    ) -> Option<(Kept, bool)> {
        // Nothing idle anywhere (the common case when all are busy): no
        // lock taken.
        if self.idle.load(Ordering::Relaxed) == 0 {
            return None;
        }
        let n = self.homes.len();
        for i in 0..n {
            let h = (home + i) % n;
            let mut list = lock(&self.homes[h].0);
            while let Some(idle) = list.pop_back() {
                self.idle.fetch_sub(1, Ordering::Relaxed);
                if idle.since.elapsed() < idle_timeout && wanted(&idle.conn) && idle.conn.is_alive()
                {
                    return Some((idle.conn, h != home));
                }
            }
        }
        None
    }

    /// Parks `conn` in `home`'s list, unless `max_idle` are idle already:
    /// then it replaces `home`'s oldest, or is closed when `home` has none.
    pub(super) fn put(&self, home: usize, conn: Kept, max_idle: usize) {
        let Some(slot) = self.homes.get(home) else {
            return;
        };
        let idle = Idle {
            conn,
            since: Instant::now(),
        };
        let mut list = lock(&slot.0);
        let closed = if self.idle.fetch_add(1, Ordering::Relaxed) >= max_idle {
            self.idle.fetch_sub(1, Ordering::Relaxed);
            match list.pop_front() {
                Some(oldest) => {
                    list.push_back(idle);
                    oldest
                }
                None => idle,
            }
        } else {
            list.push_back(idle);
            return;
        };
        // Closed outside the lock.
        drop(list);
        drop(closed);
    }

    /// Closes `home`'s connections idle for `max_age` or more, or closed
    /// by their peer.
    pub(super) fn sweep(&self, home: usize, max_age: Duration) {
        let Some(slot) = self.homes.get(home) else {
            return;
        };
        let mut list = lock(&slot.0);
        let before = list.len();
        list.retain(|i| i.since.elapsed() < max_age && i.conn.is_alive());
        self.idle.fetch_sub(before - list.len(), Ordering::Relaxed);
    }
}

//! Client connections as one worker thread counts them, per listener
//! ([`ConnCounters`]): accepted, then the HTTP version they speak once it
//! is known (after the TLS handshake's ALPN, or the first bytes on a
//! plain listener), then closed under that version. A scrape derives the
//! connections open now from these ([`ConnValues::open`]), so nothing is
//! decremented and each counter keeps one writer.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use super::counters::{add, read};

/// The HTTP version a client connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Protocol {
    /// Not known yet: the TLS handshake or the first bytes are awaited
    /// (or the connection ended before either).
    None,
    /// HTTP/1.x.
    H1,
    /// HTTP/2 (ALPN `h2`, or prior knowledge on a plain listener).
    H2,
}

impl Protocol {
    /// Every version, in index order.
    pub const ALL: [Protocol; 3] = [Protocol::None, Protocol::H1, Protocol::H2];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::None => "none",
            Protocol::H1 => "h1",
            Protocol::H2 => "h2",
        }
    }
}

/// One listener's client connections on one worker.
#[derive(Debug, Default)]
pub struct ConnCounters {
    accepted: AtomicU64,
    /// Connections that went from [`Protocol::None`] to H1 and H2.
    chose: [AtomicU64; 2],
    /// Closed, by the [`Protocol`] they spoke.
    closed: [AtomicU64; 3],
}

impl ConnCounters {
    /// Counts an accepted connection; the guard counts it closed when
    /// dropped (on the same worker thread: the connection's task ends
    /// there).
    pub fn open(self: &Arc<Self>) -> OpenConn {
        add(&self.accepted, 1);
        OpenConn {
            counters: self.clone(),
            protocol: Protocol::None,
        }
    }

    /// Its values now.
    pub fn values(&self) -> ConnValues {
        ConnValues {
            accepted: read(&self.accepted),
            chose: std::array::from_fn(|i| read(&self.chose[i])),
            closed: std::array::from_fn(|i| read(&self.closed[i])),
        }
    }
}

/// A client connection counted open until dropped.
#[derive(Debug)]
pub struct OpenConn {
    counters: Arc<ConnCounters>,
    protocol: Protocol,
}

impl OpenConn {
    /// The connection speaks `protocol` from now on (said once).
    pub fn speaks(&mut self, protocol: Protocol) {
        let i = match protocol {
            Protocol::None => return,
            Protocol::H1 => 0,
            Protocol::H2 => 1,
        };
        if self.protocol == Protocol::None {
            add(&self.counters.chose[i], 1);
            self.protocol = protocol;
        }
    }
}

impl Drop for OpenConn {
    fn drop(&mut self) {
        add(&self.counters.closed[self.protocol as usize], 1);
    }
}

/// A listener's connection counts.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ConnValues {
    /// Connections accepted.
    pub accepted: u64,
    /// Connections that came to speak HTTP/1 and HTTP/2.
    pub chose: [u64; 2],
    /// Connections closed, by [`Protocol`].
    pub closed: [u64; 3],
}

impl ConnValues {
    /// Adds another worker's counts.
    pub fn add(&mut self, other: &ConnValues) {
        self.accepted += other.accepted;
        for (a, b) in self.chose.iter_mut().zip(other.chose) {
            *a += b;
        }
        for (a, b) in self.closed.iter_mut().zip(other.closed) {
            *a += b;
        }
    }

    /// Connections open now that speak `protocol` ([`Protocol::None`]:
    /// accepted, not speaking HTTP yet).
    pub fn open(&self, protocol: Protocol) -> u64 {
        let came = match protocol {
            Protocol::None => self
                .accepted
                .saturating_sub(self.chose[0])
                .saturating_sub(self.chose[1]),
            Protocol::H1 => self.chose[0],
            Protocol::H2 => self.chose[1],
        };
        came.saturating_sub(self.closed[protocol as usize])
    }
}

/// A listener's label values: its configured address and whether it is a
/// TLS listener.
pub type ListenerKey = (Arc<str>, bool);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_are_open_under_the_protocol_they_speak_until_closed() {
        let c = Arc::new(ConnCounters::default());
        let mut h1 = c.open();
        let mut h2 = c.open();
        let pending = c.open();
        let failed = c.open();
        h1.speaks(Protocol::H1);
        h2.speaks(Protocol::H2);
        // Said again (or changed): counted once, under the first.
        h2.speaks(Protocol::H1);
        drop(failed);
        let v = c.values();
        assert_eq!(v.accepted, 4);
        assert_eq!(v.open(Protocol::None), 1);
        assert_eq!(v.open(Protocol::H1), 1);
        assert_eq!(v.open(Protocol::H2), 1);
        assert_eq!(v.closed, [1, 0, 0]);
        drop((h1, h2, pending));
        let v = c.values();
        assert_eq!(v.closed, [2, 1, 1]);
        assert!(Protocol::ALL.iter().all(|p| v.open(*p) == 0));
    }
}

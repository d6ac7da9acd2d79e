//! What one client connection and the requests it serves tell each other:
//! the HTTP/1 exchange's phase (so the connection knows which deadline
//! applies, and a finished response starts the keep-alive timer) and
//! whether the head carried conflicting framing. Written by
//! [`crate::conn::io`], read and signalled by [`crate::proxy`] and
//! [`crate::access_log`]; neither side imports the other for it.

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Waker;

/// Phases of an HTTP/1 exchange (see [`crate::conn::io`]): a request head
/// is arriving, a request is being served, the connection is idle, or it
/// left HTTP/1 deadlines behind (HTTP/2 or an upgrade).
pub(crate) const IN_HEAD: u8 = 0;
pub(crate) const IN_REQUEST: u8 = 1;
pub(crate) const IDLE: u8 = 2;
pub(crate) const H2: u8 = 3;

/// What the connection's IO and its request handling tell each other.
#[derive(Debug)]
pub struct ConnWatch {
    phase: AtomicU8,
    conflict: AtomicBool,
    /// The reader parked while a request is served: hyper may poll the
    /// socket for the next head before the response body reports its end,
    /// and must be woken then to start the keep-alive timer.
    reader: Mutex<Option<Waker>>,
}

impl ConnWatch {
    /// A watch for a fresh connection (a request head is expected).
    pub fn new() -> Arc<Self> {
        Arc::new(ConnWatch {
            phase: AtomicU8::new(IN_HEAD),
            conflict: AtomicBool::new(false),
            reader: Mutex::new(None),
        })
    }

    /// The response of the current request has ended: the connection is idle.
    pub fn request_done(&self) {
        let idle = self
            .phase
            .compare_exchange(IN_REQUEST, IDLE, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok();
        let parked = self.reader.lock().ok().and_then(|mut w| w.take());
        if idle && let Some(waker) = parked {
            waker.wake();
        }
    }

    /// Remembers the reader to wake when the request is done.
    pub(crate) fn park_reader(&self, waker: &Waker) {
        if let Ok(mut slot) = self.reader.lock()
            && !slot.as_ref().is_some_and(|w| w.will_wake(waker))
        {
            *slot = Some(waker.clone());
        }
    }

    /// The connection leaves HTTP (a 101 upgrade): no more deadlines or
    /// head scanning; the tunnel lasts as long as both sides keep it open.
    pub fn passthrough(&self) {
        self.phase.store(H2, Ordering::Release);
    }

    /// Whether a request head on this connection carried both
    /// `Content-Length` and `Transfer-Encoding`.
    pub fn saw_conflicting_framing(&self) -> bool {
        self.conflict.load(Ordering::Relaxed)
    }

    /// The connection's current phase.
    pub(crate) fn phase(&self) -> u8 {
        self.phase.load(Ordering::Acquire)
    }

    /// Moves the connection to `phase`.
    pub(crate) fn set_phase(&self, phase: u8) {
        self.phase.store(phase, Ordering::Release);
    }

    /// A request head carried both `Content-Length` and `Transfer-Encoding`.
    pub(crate) fn note_conflict(&self) {
        self.conflict.store(true, Ordering::Relaxed);
    }
}

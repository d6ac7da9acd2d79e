//! [`Concurrency`]: at most N in flight per key, like nginx's `limit_conn`.
//!
//! One mutex over a small map: the critical sections are a lookup and an
//! add, and the map only holds keys with something in flight.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// A concurrency zone: at most `max` [`Permit`]s alive per key. Shared by
/// every worker thread through an `Arc`.
pub struct Concurrency {
    max: u32,
    /// In-flight count per key; a key is removed when its count reaches 0,
    /// so the map is bounded by what is in flight. `Arc` so a permit shares
    /// the key instead of copying it.
    in_flight: Mutex<HashMap<Arc<[u8]>, u32>>,
}

impl Concurrency {
    /// A zone allowing `max` in flight per key (0 refuses everything).
    pub fn new(max: u32) -> Concurrency {
        Concurrency {
            max,
            in_flight: Mutex::new(HashMap::new()),
        }
    }

    /// A permit when fewer than `max` are in flight for `key`, else `None`.
    /// The count goes down when the permit is dropped, whatever path drops
    /// it (a finished response, an error, a cancelled future).
    pub fn acquire(self: &Arc<Self>, key: &[u8]) -> Option<Permit> {
        let mut map = self.lock();
        let shared = match map.get_key_value(key) {
            Some((_, &n)) if n >= self.max => return None,
            Some((shared, _)) => Arc::clone(shared),
            None if self.max == 0 => return None,
            None => Arc::from(key),
        };
        *map.entry(Arc::clone(&shared)).or_insert(0) += 1;
        Some(Permit {
            zone: Arc::clone(self),
            key: shared,
        })
    }

    /// How many permits are alive for `key`.
    pub fn in_flight(&self, key: &[u8]) -> u32 {
        self.lock().get(key).copied().unwrap_or(0)
    }

    /// The most permits allowed per key.
    pub fn max(&self) -> u32 {
        self.max
    }

    /// How many keys have at least one permit alive.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no permit is alive.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    fn release(&self, key: &[u8]) {
        let mut map = self.lock();
        if let Some(n) = map.get_mut(key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                map.remove(key);
            }
        }
    }

    /// The map stays consistent whatever panicked while holding it (every
    /// change is a single insert, add or remove), so poison is ignored.
    fn lock(&self) -> MutexGuard<'_, HashMap<Arc<[u8]>, u32>> {
        self.in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

impl fmt::Debug for Concurrency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Concurrency")
            .field("max", &self.max)
            .field("keys", &self.len())
            .finish()
    }
}

/// One slot in a [`Concurrency`] zone, held for as long as the work it
/// admits; dropping it frees the slot.
pub struct Permit {
    zone: Arc<Concurrency>,
    key: Arc<[u8]>,
}

impl Permit {
    /// The key this permit counts against.
    pub fn key(&self) -> &[u8] {
        &self.key
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.zone.release(&self.key);
    }
}

impl fmt::Debug for Permit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Permit")
            .field("key", &String::from_utf8_lossy(&self.key))
            .field("max", &self.zone.max)
            .finish()
    }
}

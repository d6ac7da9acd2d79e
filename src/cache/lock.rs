//! The cache lock: one origin request per key at a time, for misses,
//! expired entries and background refreshes alike (SPEC §6, and §11's
//! "no stampede at expiry", which nginx's proxy_cache_lock leaves out).
//!
//! A zone's [`Locks`] table is shared by every worker thread. The first
//! request on a key becomes the leader and holds a [`Guard`]; later ones
//! get a [`Waiter`] that wakes when the guard is dropped: after the
//! leader stored (or gave up on) the response, or when the leader's
//! request was cancelled. Knows keys, not HTTP.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::watch;

/// The keys being fetched right now, shared by every worker thread.
#[derive(Default, Clone)]
pub struct Locks {
    held: Arc<Mutex<HashMap<String, watch::Receiver<()>>>>,
}

/// What [`Locks::acquire`] gave.
pub enum Acquired {
    /// This request fetches the key; the others wait for the guard.
    Leader(Guard),
    /// Another request is fetching the key.
    Wait(Waiter),
}

/// Held by the request fetching a key; dropping it wakes the waiters and
/// frees the key (also when the request is cancelled).
pub struct Guard {
    locks: Locks,
    key: String,
    /// Never sends: its drop is the signal.
    tx: watch::Sender<()>,
}

/// Waits for a key's leader to finish.
pub struct Waiter {
    rx: watch::Receiver<()>,
}

impl Locks {
    fn table(&self) -> MutexGuard<'_, HashMap<String, watch::Receiver<()>>> {
        // A panic while holding this lock cannot leave the map half
        // changed (single inserts and removes): go on with it.
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Leads the fetch of `key`, or waits for the request that does.
    pub fn acquire(&self, key: &str) -> Acquired {
        let mut table = self.table();
        if let Some(rx) = table.get(key) {
            return Acquired::Wait(Waiter { rx: rx.clone() });
        }
        let (tx, rx) = watch::channel(());
        table.insert(key.to_owned(), rx);
        Acquired::Leader(Guard {
            locks: self.clone(),
            key: key.to_owned(),
            tx,
        })
    }

    /// Leads the fetch of `key` if nobody does.
    pub fn try_lead(&self, key: &str) -> Option<Guard> {
        match self.acquire(key) {
            Acquired::Leader(guard) => Some(guard),
            Acquired::Wait(_) => None,
        }
    }

    /// How many keys are held (for tests).
    pub fn len(&self) -> usize {
        self.table().len()
    }

    /// True when no key is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Waiter {
    /// Waits until the leader is done, at most `timeout`; false on timeout.
    pub async fn wait(mut self, timeout: Duration) -> bool {
        // `changed` fails once the sender (in the guard) is dropped.
        tokio::time::timeout(timeout, async { while self.rx.changed().await.is_ok() {} })
            .await
            .is_ok()
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let mut table = self.locks.table();
        // Only our own entry: the key may have been taken anew since.
        if table
            .get(&self.key)
            .is_some_and(|rx| rx.same_channel(&self.tx.subscribe()))
        {
            table.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_leader_and_waiters_wake_when_it_is_dropped() {
        let locks = Locks::default();
        let Acquired::Leader(guard) = locks.acquire("k") else {
            panic!("first is the leader");
        };
        let Acquired::Wait(waiter) = locks.acquire("k") else {
            panic!("second waits");
        };
        assert!(locks.try_lead("k").is_none());
        assert!(locks.try_lead("other").is_some());
        let woke = tokio::spawn(waiter.wait(Duration::from_secs(5)));
        tokio::time::sleep(Duration::from_millis(10)).await;
        drop(guard);
        assert!(woke.await.unwrap_or(false));
        assert!(locks.is_empty());
    }

    #[tokio::test]
    async fn a_waiter_gives_up_after_its_timeout() {
        let locks = Locks::default();
        let _guard = locks.try_lead("k");
        let Acquired::Wait(waiter) = locks.acquire("k") else {
            panic!("second waits");
        };
        assert!(!waiter.wait(Duration::from_millis(100)).await);
    }

    #[tokio::test]
    async fn a_cancelled_leader_frees_the_key() {
        let locks = Locks::default();
        let held = locks.clone();
        let task = tokio::spawn(async move {
            let _guard = held.try_lead("k");
            std::future::pending::<()>().await;
        });
        tokio::task::yield_now().await;
        task.abort();
        let _ = task.await;
        assert!(locks.try_lead("k").is_some());
    }
}

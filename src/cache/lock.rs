//! The cache lock: one origin request per key at a time, for misses,
//! expired entries and background refreshes alike (SPEC §6, and §11's
//! "no stampede at expiry", which nginx's proxy_cache_lock leaves out).
//!
//! A zone's [`Locks`] table is shared by every worker thread and maps a
//! key to the [`Fill`] of the request fetching it. The first request on
//! a key becomes the leader ([`Lead`]); later ones attach to its fill as
//! [`Follower`]s, answered from the response while it streams (or sent
//! elsewhere if it is not shared). The fill keeps the key's [`Guard`]
//! until the response is stored or given up, so that requests arriving
//! meanwhile follow it too; the guard is dropped, freeing the key, also
//! when the leader's request is cancelled. Knows keys, not HTTP.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use super::fill::{Fill, Follower, Lead};

/// The keys being fetched right now, shared by every worker thread.
#[derive(Default, Clone)]
pub struct Locks {
    held: Arc<Mutex<HashMap<String, Weak<Fill>>>>,
}

/// What [`Locks::acquire`] gave.
pub enum Acquired {
    /// This request fetches the key, filling the [`Fill`] the others
    /// follow.
    Leader(Lead),
    /// Another request is fetching the key: follow its fill.
    Wait(Follower),
}

/// A key's place in the table, kept by its [`Fill`] until the response
/// is stored or given up; dropping it frees the key.
pub struct Guard {
    locks: Locks,
    key: String,
    fill: Weak<Fill>,
}

impl Locks {
    fn table(&self) -> MutexGuard<'_, HashMap<String, Weak<Fill>>> {
        // A panic while holding this lock cannot leave the map half
        // changed (single inserts and removes): go on with it.
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Leads the fetch of `key` (a fill bounded by `max` bytes), or
    /// follows the request that does.
    pub fn acquire(&self, key: &str, max: u64) -> Acquired {
        let mut table = self.table();
        if let Some(follower) = table
            .get(key)
            .and_then(Weak::upgrade)
            .and_then(|fill| fill.attach())
        {
            return Acquired::Wait(follower);
        }
        Acquired::Leader(self.lead(&mut table, key, max))
    }

    /// Leads the fetch of `key` if nobody does.
    pub fn try_lead(&self, key: &str, max: u64) -> Option<Lead> {
        let mut table = self.table();
        if table.get(key).and_then(Weak::upgrade).is_some() {
            return None;
        }
        Some(self.lead(&mut table, key, max))
    }

    fn lead(&self, table: &mut HashMap<String, Weak<Fill>>, key: &str, max: u64) -> Lead {
        let fill = Arc::new_cyclic(|me| {
            let guard = Guard {
                locks: self.clone(),
                key: key.to_owned(),
                fill: me.clone(),
            };
            Fill::new(max, Some(guard))
        });
        table.insert(key.to_owned(), Arc::downgrade(&fill));
        Lead::new(fill)
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

impl Drop for Guard {
    fn drop(&mut self) {
        let mut table = self.locks.table();
        // Only our own entry: the key may have been taken anew since.
        if table.get(&self.key).is_some_and(|w| w.ptr_eq(&self.fill)) {
            table.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::cache::fill::Waited;

    #[tokio::test]
    async fn one_leader_and_followers_are_told_when_it_gives_up() {
        let locks = Locks::default();
        let Acquired::Leader(lead) = locks.acquire("k", 100) else {
            panic!("first is the leader");
        };
        let Acquired::Wait(mut follower) = locks.acquire("k", 100) else {
            panic!("second follows");
        };
        assert!(locks.try_lead("k", 100).is_none());
        assert!(locks.try_lead("other", 100).is_some());
        let woke = tokio::spawn(async move {
            matches!(follower.head(Duration::from_secs(5)).await, Waited::Gone)
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        lead.fill().abandon();
        assert!(woke.await.unwrap_or(false));
        assert!(locks.is_empty());
        drop(lead);
    }

    #[tokio::test]
    async fn a_follower_gives_up_after_its_timeout() {
        let locks = Locks::default();
        let _lead = locks.try_lead("k", 100);
        let Acquired::Wait(mut follower) = locks.acquire("k", 100) else {
            panic!("second follows");
        };
        let waited = follower.head(Duration::from_millis(100)).await;
        assert!(matches!(waited, Waited::TimedOut));
    }

    #[tokio::test]
    async fn a_cancelled_leader_frees_the_key() {
        let locks = Locks::default();
        let held = locks.clone();
        let task = tokio::spawn(async move {
            let _lead = held.try_lead("k", 100);
            std::future::pending::<()>().await;
        });
        tokio::task::yield_now().await;
        task.abort();
        let _ = task.await;
        assert!(locks.try_lead("k", 100).is_some());
    }
}

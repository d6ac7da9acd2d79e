//! The in-memory index of the disk tier: key → file name, size and
//! recency, the byte total, and the purges a queued write must not undo.
//! Pure bookkeeping: it never touches the disk; callers delete the files
//! whose names it hands back.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// One indexed entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Entry {
    /// The file name (hash of the key).
    pub name: u64,
    /// Bytes the file takes on disk.
    pub size: u64,
    /// Recency: the higher, the more recently used.
    tick: u64,
    /// Unique per insertion, so a reader that found a bad file removes
    /// that entry and not a fresh one written since.
    pub id: u64,
}

/// A purge that queued writes older than it must not undo.
#[derive(Debug)]
pub(super) enum Purge {
    Key(String),
    Prefix(String),
}

impl Purge {
    fn matches(&self, key: &str) -> bool {
        match self {
            Purge::Key(k) => k == key,
            Purge::Prefix(p) => key.starts_with(p.as_str()),
        }
    }
}

/// The index; lives behind the store's mutex.
#[derive(Debug, Default)]
pub(super) struct Index {
    entries: HashMap<Arc<str>, Entry>,
    /// Which key holds each file name, to notice hash collisions.
    by_name: HashMap<u64, Arc<str>>,
    /// Keys by recency, oldest first.
    lru: BTreeMap<u64, Arc<str>>,
    tick: u64,
    next_id: u64,
    used: u64,
    /// How many purges have happened; a write remembers it when queued.
    purge_seq: u64,
    /// Purges not yet seen by every queued write, with their sequence.
    purges: Vec<(u64, Purge)>,
}

impl Index {
    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Bytes of all indexed files.
    pub fn used(&self) -> u64 {
        self.used
    }

    /// Looks a key up and marks it most recently used: (name, id).
    pub fn touch(&mut self, key: &str) -> Option<(u64, u64)> {
        self.tick += 1;
        let tick = self.tick;
        let entry = self.entries.get_mut(key)?;
        if let Some(k) = self.lru.remove(&entry.tick) {
            self.lru.insert(tick, k);
        }
        entry.tick = tick;
        Some((entry.name, entry.id))
    }

    /// Indexes a file just published under `name` as most recently used.
    /// Whatever the key or the name held before is dropped from the index
    /// without naming its file: the new file has replaced it.
    pub fn insert(&mut self, key: &str, name: u64, size: u64) {
        self.forget(key, name);
        self.tick += 1;
        self.next_id += 1;
        let key: Arc<str> = Arc::from(key);
        self.lru.insert(self.tick, Arc::clone(&key));
        self.by_name.insert(name, Arc::clone(&key));
        self.used += size;
        let entry = Entry {
            name,
            size,
            tick: self.tick,
            id: self.next_id,
        };
        self.entries.insert(key, entry);
    }

    /// Drops `key` and whichever key holds `name` (a collision) from the
    /// index; returns the names they held (at most `name` itself).
    pub fn forget(&mut self, key: &str, name: u64) -> Vec<u64> {
        let mut names = Vec::new();
        if let Some(e) = self.remove(key) {
            names.push(e.name);
        }
        if let Some(holder) = self.by_name.get(&name).cloned()
            && let Some(e) = self.remove(&holder)
        {
            names.push(e.name);
        }
        names
    }

    /// Removes a key from the index.
    pub fn remove(&mut self, key: &str) -> Option<Entry> {
        let entry = self.entries.remove(key)?;
        self.unlink(&entry);
        Some(entry)
    }

    /// Removes a key only if it is still the entry a reader found.
    pub fn remove_if(&mut self, key: &str, id: u64) -> Option<Entry> {
        if self.entries.get(key)?.id != id {
            return None;
        }
        self.remove(key)
    }

    /// Removes every key starting with `prefix`; returns their names.
    pub fn remove_prefix(&mut self, prefix: &str) -> Vec<u64> {
        let keys: Vec<Arc<str>> = self
            .entries
            .keys()
            .filter(|k| k.starts_with(prefix))
            .cloned()
            .collect();
        keys.iter()
            .filter_map(|k| self.remove(k))
            .map(|e| e.name)
            .collect()
    }

    /// Removes the least recently used entry.
    pub fn pop_lru(&mut self) -> Option<Entry> {
        let (_, key) = self.lru.pop_first()?;
        let entry = self.entries.remove(&key)?;
        self.by_name.remove(&entry.name);
        self.used -= entry.size;
        Some(entry)
    }

    fn unlink(&mut self, entry: &Entry) {
        self.lru.remove(&entry.tick);
        self.by_name.remove(&entry.name);
        self.used -= entry.size;
    }

    /// The purge sequence a write queued now must remember.
    pub fn purge_seq(&self) -> u64 {
        self.purge_seq
    }

    /// Records a purge. `writes_pending` says whether any queued write
    /// could predate it; if none, there is nothing to cancel and nothing
    /// is kept.
    pub fn record_purge(&mut self, purge: Purge, writes_pending: bool) {
        self.purge_seq += 1;
        if writes_pending {
            self.purges.push((self.purge_seq, purge));
        }
    }

    /// Whether a write queued at `seq` for `key` was purged since. Also
    /// forgets purges no later write can predate: writes leave the queue
    /// in order, so every later one has a sequence of at least `seq`.
    pub fn cancelled(&mut self, seq: u64, key: &str) -> bool {
        self.purges.retain(|(s, _)| *s > seq);
        self.purges.iter().any(|(_, p)| p.matches(key))
    }
}

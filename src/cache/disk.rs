//! The L2 disk tier (SPEC §6, §10): opaque entries (`meta` bytes chosen by
//! the caller and a body) stored one file per key under a directory,
//! bounded in bytes with least-recently-used eviction, checksummed, and
//! found again after a restart.
//!
//! It owns the directory, the file format (the `entry` submodule), the
//! in-memory index and one background writer thread. It knows nothing of
//! HTTP, freshness, hyper or Lua: what `meta` means, which key to use and
//! whether a response may be stored are the caller's business.
//!
//! Guarantees:
//! - a reader never sees a partial entry: files are written under a temp
//!   name and renamed into place;
//! - bad bytes are never returned: a wrong header, length, key or checksum
//!   is a miss and the file is deleted;
//! - [`DiskStore::put`] never blocks and never fails the caller: writes go
//!   through a bounded queue to the writer thread and are dropped (and
//!   counted) when the queue is full, the entry is too big or the disk
//!   fails; reads keep working;
//! - a purge also cancels writes of matching keys queued before it.
//!
//! The directory belongs to the store: at open, files in it that are not
//! valid entries are deleted. One store per directory.

pub(crate) mod entry;
mod index;
mod scan;
mod writer;
#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use std::{fs, io};

use bytes::Bytes;

use entry::ReadError;
use index::{Index, Purge};
use writer::Writer;

/// Limits on the queue between [`DiskStore::put`] and the writer thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiskOptions {
    /// Writes that may wait in the queue; beyond it `put` drops the write.
    pub queue_len: usize,
    /// Bytes (file sizes) that may wait in the queue, so a slow disk
    /// cannot make queued bodies grow memory without bound.
    pub queue_bytes: u64,
}

impl Default for DiskOptions {
    fn default() -> DiskOptions {
        DiskOptions {
            queue_len: 1024,
            queue_bytes: 64 * 1024 * 1024,
        }
    }
}

/// Figures for /status and /metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct DiskStats {
    /// Entries in the index.
    pub entries: usize,
    /// Bytes their files take (headers included).
    pub bytes: u64,
    /// The bound on `bytes`.
    pub max_bytes: u64,
    /// Writes that failed on an I/O error (disk full, unwritable).
    pub write_errors: u64,
    /// Writes dropped because the queue was full (by count or bytes).
    pub dropped_writes: u64,
    /// Writes refused because the entry alone exceeds `max_bytes`.
    pub oversized: u64,
    /// Invalid files deleted: at open, or found bad by a read.
    pub corrupt_removed: u64,
    /// Least-recently-used entries evicted to stay within `max_bytes`.
    pub evicted: u64,
}

/// The disk tier of one cache zone. `Send + Sync`; share it with an `Arc`.
/// Dropping it lets the writer finish the queued writes and joins it.
#[derive(Debug)]
pub struct DiskStore {
    shared: Arc<Shared>,
    /// `None` only while dropping, to close the queue.
    tx: Option<SyncSender<Job>>,
    writer: Option<JoinHandle<()>>,
}

/// State shared by callers and the writer thread.
#[derive(Debug)]
struct Shared {
    dir: PathBuf,
    max_bytes: u64,
    queue_bytes: u64,
    index: Mutex<Index>,
    /// Bytes of the jobs in the queue (or being written).
    queued_bytes: AtomicU64,
    /// Jobs accepted by the queue, and jobs the writer has finished: equal
    /// when nothing is pending. `flush` waits on `done` via `done_cv`.
    enqueued: AtomicU64,
    done: AtomicU64,
    done_lock: Mutex<()>,
    done_cv: Condvar,
    write_errors: AtomicU64,
    dropped_writes: AtomicU64,
    oversized: AtomicU64,
    corrupt_removed: AtomicU64,
    evicted: AtomicU64,
}

/// One queued write.
#[derive(Debug)]
struct Job {
    key: String,
    meta: Vec<u8>,
    body: Bytes,
    /// File size, as counted against the bounds.
    size: u64,
    /// The purge sequence when queued: later purges of this key cancel it.
    purge_seq: u64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl DiskStore {
    /// Opens (creating if needed) the store in `dir`, bounded to
    /// `max_bytes`, with default queue limits. See [`DiskStore::open_with`].
    pub fn open(dir: PathBuf, max_bytes: u64) -> io::Result<DiskStore> {
        DiskStore::open_with(dir, max_bytes, DiskOptions::default())
    }

    /// Opens the store: creates `dir`, rebuilds the index from the entry
    /// files there (deleting invalid ones and temp files left by a crash;
    /// checksums are verified on read, not here), evicts the oldest
    /// entries while over `max_bytes`, and starts the writer thread.
    /// Blocking: run it off the async workers for a large cache. Fails
    /// only if the directory cannot be created or listed, or the thread
    /// cannot start.
    pub fn open_with(dir: PathBuf, max_bytes: u64, options: DiskOptions) -> io::Result<DiskStore> {
        fs::create_dir_all(&dir)?;
        let scan = scan::scan(&dir)?;
        let mut index = scan.index;
        let mut evicted = 0;
        while index.used() > max_bytes {
            let Some(e) = index.pop_lru() else { break };
            remove_logged(&entry::entry_path(&dir, e.name));
            evicted += 1;
        }
        tracing::info!(
            dir = %dir.display(),
            entries = index.len(),
            bytes = index.used(),
            removed = scan.removed,
            evicted,
            "cache disk opened"
        );
        let shared = Arc::new(Shared {
            dir,
            max_bytes,
            queue_bytes: options.queue_bytes,
            index: Mutex::new(index),
            queued_bytes: AtomicU64::new(0),
            enqueued: AtomicU64::new(0),
            done: AtomicU64::new(0),
            done_lock: Mutex::new(()),
            done_cv: Condvar::new(),
            write_errors: AtomicU64::new(0),
            dropped_writes: AtomicU64::new(0),
            oversized: AtomicU64::new(0),
            corrupt_removed: AtomicU64::new(scan.removed),
            evicted: AtomicU64::new(evicted),
        });
        let (tx, rx) = mpsc::sync_channel(options.queue_len.max(1));
        let writer = Writer::new(Arc::clone(&shared));
        let writer = std::thread::Builder::new()
            .name("moongate-cache-disk".into())
            .spawn(move || writer.run(rx))?;
        Ok(DiskStore {
            shared,
            tx: Some(tx),
            writer: Some(writer),
        })
    }

    /// The directory the store owns.
    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    /// Reads an entry off the async workers: `(meta, body)`, or `None` on a
    /// miss. A file found bad is deleted and counted, never returned. A hit
    /// makes the entry the most recently used.
    pub async fn get(&self, key: &str) -> Option<(Vec<u8>, Bytes)> {
        let (name, id) = lock(&self.shared.index).touch(key)?;
        let shared = Arc::clone(&self.shared);
        let key = key.to_owned();
        tokio::task::spawn_blocking(move || shared.read(&key, name, id))
            .await
            .ok()
            .flatten()
    }

    /// [`DiskStore::get`] on the calling thread (tests, blocking contexts).
    pub fn get_blocking(&self, key: &str) -> Option<(Vec<u8>, Bytes)> {
        let (name, id) = lock(&self.shared.index).touch(key)?;
        self.shared.read(key, name, id)
    }

    /// Queues an entry for writing and returns at once. The write is
    /// dropped and counted if the entry alone exceeds `max_bytes`, if the
    /// queue is full, or later if the disk fails; the store stays usable.
    pub fn put(&self, key: String, meta: Vec<u8>, body: Bytes) {
        let s = &self.shared;
        let size = entry::file_len(key.len() as u64, meta.len() as u64, body.len() as u64);
        if size > s.max_bytes || u32::try_from(key.len().max(meta.len())).is_err() {
            if s.oversized.fetch_add(1, Ordering::Relaxed) == 0 {
                tracing::warn!(
                    dir = %s.dir.display(),
                    size,
                    max_bytes = s.max_bytes,
                    "cache disk: entry larger than the disk tier, kept in memory only \
                     (logged once; see oversized on /status)"
                );
            }
            return;
        }
        let Some(tx) = &self.tx else { return };
        let before = s.queued_bytes.fetch_add(size, Ordering::AcqRel);
        if before.saturating_add(size) > s.queue_bytes {
            s.queued_bytes.fetch_sub(size, Ordering::AcqRel);
            s.dropped_writes.fetch_add(1, Ordering::Relaxed);
            return;
        }
        // Queued under the index lock so no purge falls between reading
        // the purge sequence and the job entering the queue.
        let index = lock(&s.index);
        let job = Job {
            key,
            meta,
            body,
            size,
            purge_seq: index.purge_seq(),
        };
        match tx.try_send(job) {
            Ok(()) => {
                s.enqueued.fetch_add(1, Ordering::AcqRel);
            }
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                s.queued_bytes.fetch_sub(size, Ordering::AcqRel);
                s.dropped_writes.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Purges one key: gone from the index at once, its file deleted, and
    /// a write of it queued before now cancelled. Returns whether it was
    /// indexed.
    pub fn remove(&self, key: &str) -> bool {
        let s = &self.shared;
        let mut index = lock(&s.index);
        index.record_purge(Purge::Key(key.to_owned()), s.writes_pending());
        let Some(e) = index.remove(key) else {
            return false;
        };
        // Under the lock: a write of this key published right after must
        // not lose its file to this unlink.
        remove_logged(&entry::entry_path(&s.dir, e.name));
        true
    }

    /// Purges every key starting with `prefix` (as [`DiskStore::remove`]);
    /// returns how many were indexed. Deletes files on the calling thread:
    /// call it off the async workers for a large purge.
    pub fn remove_prefix(&self, prefix: &str) -> usize {
        let s = &self.shared;
        let names = {
            let mut index = lock(&s.index);
            index.record_purge(Purge::Prefix(prefix.to_owned()), s.writes_pending());
            index.remove_prefix(prefix)
        };
        // Outside the lock (there may be many). A write of one of these
        // keys queued after the purge and published before its unlink
        // loses its file: a later read misses and drops it. Never bad bytes.
        for name in &names {
            remove_logged(&entry::entry_path(&s.dir, *name));
        }
        names.len()
    }

    /// Entries in the index.
    pub fn len(&self) -> usize {
        lock(&self.shared.index).len()
    }

    /// Whether the store holds no entry.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes the indexed files take.
    pub fn used_bytes(&self) -> u64 {
        lock(&self.shared.index).used()
    }

    /// Current figures.
    pub fn stats(&self) -> DiskStats {
        let s = &self.shared;
        let (entries, bytes) = {
            let index = lock(&s.index);
            (index.len(), index.used())
        };
        DiskStats {
            entries,
            bytes,
            max_bytes: s.max_bytes,
            write_errors: s.write_errors.load(Ordering::Relaxed),
            dropped_writes: s.dropped_writes.load(Ordering::Relaxed),
            oversized: s.oversized.load(Ordering::Relaxed),
            corrupt_removed: s.corrupt_removed.load(Ordering::Relaxed),
            evicted: s.evicted.load(Ordering::Relaxed),
        }
    }

    /// Waits, off the async workers, until every write queued before the
    /// call is on disk (or dropped), at most `timeout`. Returns whether
    /// it got there in time. A graceful stop calls it.
    pub async fn flush(&self, timeout: Duration) -> bool {
        let shared = Arc::clone(&self.shared);
        let target = shared.enqueued.load(Ordering::Acquire);
        tokio::task::spawn_blocking(move || shared.wait_done(target, timeout))
            .await
            .unwrap_or(false)
    }

    /// [`DiskStore::flush`] on the calling thread.
    pub fn flush_blocking(&self, timeout: Duration) -> bool {
        let target = self.shared.enqueued.load(Ordering::Acquire);
        self.shared.wait_done(target, timeout)
    }
}

impl Drop for DiskStore {
    fn drop(&mut self) {
        // Closing the queue ends the writer once it has written what was
        // queued; join it so no thread outlives the store.
        drop(self.tx.take());
        if let Some(writer) = self.writer.take()
            && writer.join().is_err()
        {
            tracing::error!("cache disk writer thread panicked");
        }
    }
}

impl Shared {
    fn writes_pending(&self) -> bool {
        self.enqueued.load(Ordering::Acquire) > self.done.load(Ordering::Acquire)
    }

    fn wait_done(&self, target: u64, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut guard = lock(&self.done_lock);
        loop {
            if self.done.load(Ordering::Acquire) >= target {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            guard = self
                .done_cv
                .wait_timeout(guard, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// Reads the file `name` indexed for `key` (entry `id`); removes the
    /// entry if the file is gone or bad.
    fn read(&self, key: &str, name: u64, id: u64) -> Option<(Vec<u8>, Bytes)> {
        let path = entry::entry_path(&self.dir, name);
        match entry::read_entry(&path, key) {
            Ok(found) => Some(found),
            Err(ReadError::Missing) => {
                lock(&self.index).remove_if(key, id);
                None
            }
            Err(ReadError::Bad) => {
                let mut index = lock(&self.index);
                // Only if still the entry we read: a fresh file written
                // since is left alone.
                if index.remove_if(key, id).is_some() {
                    remove_logged(&path);
                    self.corrupt_removed.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(path = %path.display(), "cache disk: bad entry removed");
                }
                None
            }
            Err(ReadError::Io(e)) => {
                tracing::debug!(path = %path.display(), error = %e, "cache disk: read failed");
                None
            }
        }
    }
}

/// Deletes a file, logging failures (the index no longer counts it).
fn remove_logged(path: &Path) {
    if let Err(e) = entry::remove_file(path) {
        tracing::warn!(path = %path.display(), error = %e, "cache disk: cannot delete entry file");
    }
}

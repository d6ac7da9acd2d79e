//! The writer thread: takes queued writes in order, writes each under a
//! temp name, makes room by evicting least-recently-used entries, and
//! publishes it with a rename. Disk errors drop the write, are counted,
//! and are logged once per run of failures.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::Receiver;
use std::{fs, io};

use super::entry::{self, Header};
use super::{Job, Shared, lock, remove_logged};

/// The writer thread's state.
pub(super) struct Writer {
    shared: Arc<Shared>,
    /// Whether the last write failed, so a run of failures logs once.
    failing: bool,
    /// Makes temp names unique.
    tmp_seq: u64,
}

impl Writer {
    /// A writer for the store's shared state.
    pub(super) fn new(shared: Arc<Shared>) -> Writer {
        Writer {
            shared,
            failing: false,
            tmp_seq: 0,
        }
    }

    /// Writes jobs until the queue closes and is empty.
    pub(super) fn run(mut self, rx: Receiver<Job>) {
        while let Ok(job) = rx.recv() {
            let size = job.size;
            self.write(job);
            let s = &self.shared;
            s.queued_bytes.fetch_sub(size, Ordering::AcqRel);
            let _guard = lock(&s.done_lock);
            s.done.fetch_add(1, Ordering::AcqRel);
            s.done_cv.notify_all();
        }
    }

    fn write(&mut self, job: Job) {
        let s = Arc::clone(&self.shared);
        if lock(&s.index).cancelled(job.purge_seq, &job.key) {
            return;
        }
        let Some(header) = Header::for_entry(job.key.as_bytes(), &job.meta, &job.body) else {
            s.oversized.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let name = entry::name_of(&job.key);
        let shard = entry::shard_dir(&s.dir, name);
        self.tmp_seq += 1;
        let tmp = shard.join(format!("{}{name:016x}-{}", entry::TMP_PREFIX, self.tmp_seq));
        let written = fs::create_dir_all(&shard)
            .and_then(|()| entry::write_file(&tmp, &header, &job.key, &job.meta, &job.body));
        if let Err(e) = written {
            let _ = entry::remove_file(&tmp);
            self.failed(e);
            return;
        }
        let path = entry::entry_path(&s.dir, name);
        let mut victims = Vec::new();
        let published = {
            let mut index = lock(&s.index);
            if index.cancelled(job.purge_seq, &job.key) {
                None
            } else {
                // The old file of this key (or of a colliding key) is
                // replaced by the rename, not deleted.
                let replaced = index.forget(&job.key, name);
                while index.used() + job.size > s.max_bytes {
                    let Some(e) = index.pop_lru() else { break };
                    victims.push(e.name);
                }
                s.evicted.fetch_add(victims.len() as u64, Ordering::Relaxed);
                // Rename under the lock: no reader or purge sees the index
                // and the file disagree.
                let renamed = fs::rename(&tmp, &path);
                match &renamed {
                    Ok(()) => index.insert(&job.key, name, job.size),
                    Err(_) => victims.extend(replaced),
                }
                Some(renamed)
            }
        };
        for victim in victims {
            remove_logged(&entry::entry_path(&s.dir, victim));
        }
        match published {
            None => {
                let _ = entry::remove_file(&tmp);
            }
            Some(Ok(())) => self.succeeded(),
            Some(Err(e)) => {
                let _ = entry::remove_file(&tmp);
                self.failed(e);
            }
        }
    }

    fn failed(&mut self, e: io::Error) {
        self.shared.write_errors.fetch_add(1, Ordering::Relaxed);
        if !self.failing {
            self.failing = true;
            tracing::warn!(
                dir = %self.shared.dir.display(),
                error = %e,
                "cache disk: writes failing, entries not stored until it recovers"
            );
        }
    }

    fn succeeded(&mut self) {
        if self.failing {
            self.failing = false;
            tracing::info!(dir = %self.shared.dir.display(), "cache disk: writes recovered");
        }
    }
}

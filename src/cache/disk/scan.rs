//! Rebuilding the index from the directory at open: every valid entry
//! file is indexed (oldest modification first, so recency survives a
//! restart approximately), everything else the store could have left
//! behind (temp files from a crash, truncated or foreign files) is
//! deleted.

use std::fs;
use std::io;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use super::entry::{self, ReadError};
use super::index::Index;

/// What a scan found.
pub(super) struct Scan {
    pub index: Index,
    /// Files deleted because they were not valid entries.
    pub removed: u64,
}

struct Found {
    modified: SystemTime,
    key: String,
    name: u64,
    size: u64,
}

/// Scans `dir` (which exists). Regular files at the top level and
/// anything in a shard directory that is not a valid entry are deleted;
/// directories that are not shards (e.g. `lost+found`) are left alone.
pub(super) fn scan(dir: &Path) -> io::Result<Scan> {
    let mut found = Vec::new();
    let mut removed = 0;
    for item in fs::read_dir(dir)? {
        let item = item?;
        let path = item.path();
        if item.file_type()?.is_dir() {
            if let Some(shard) = item.file_name().to_str()
                && entry::is_shard(shard)
            {
                scan_shard(&path, shard, &mut found, &mut removed)?;
            }
        } else {
            discard(&path, &mut removed);
        }
    }
    found.sort_by_key(|f| f.modified);
    let mut index = Index::default();
    for f in found {
        index.insert(&f.key, f.name, f.size);
    }
    Ok(Scan { index, removed })
}

fn scan_shard(
    shard_path: &Path,
    shard: &str,
    found: &mut Vec<Found>,
    removed: &mut u64,
) -> io::Result<()> {
    for item in fs::read_dir(shard_path)? {
        let item = item?;
        let path = item.path();
        let name = item
            .file_name()
            .to_str()
            .and_then(entry::parse_name)
            .filter(|n| format!("{:02x}", n >> 56) == shard);
        let Some(name) = name.filter(|_| item.file_type().is_ok_and(|t| t.is_file())) else {
            discard(&path, removed);
            continue;
        };
        match entry::scan_file(&path, name) {
            Ok(key) => {
                let meta = item.metadata()?;
                found.push(Found {
                    modified: meta.modified().unwrap_or(UNIX_EPOCH),
                    key,
                    name,
                    size: meta.len(),
                });
            }
            Err(ReadError::Missing) => {}
            Err(ReadError::Bad) => discard(&path, removed),
            Err(ReadError::Io(e)) => {
                tracing::warn!(path = %path.display(), error = %e, "cache disk: cannot read entry at open; left out of the index");
            }
        }
    }
    Ok(())
}

/// Deletes a file (or a stray directory inside a shard) that is not a
/// valid entry.
fn discard(path: &Path, removed: &mut u64) {
    let result = if path.is_dir() {
        fs::remove_dir_all(path)
    } else {
        entry::remove_file(path)
    };
    match result {
        Ok(()) => *removed += 1,
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cache disk: cannot remove an invalid file at open");
        }
    }
}

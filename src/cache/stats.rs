//! A zone's figures for the admin API's `/status`: lookups by outcome
//! (the `X-Cache-Status` answered), stores, and why responses were not
//! stored; with the tiers' sizes ([`report`]). Counters are relaxed
//! atomics, one set per zone: figures, never synchronisation.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use serde_json::{Value, json};

use super::step::CacheStatus;
use super::zone::Zone;

/// A zone's counters.
#[derive(Debug, Default)]
pub struct Counters {
    hit: AtomicU64,
    miss: AtomicU64,
    expired: AtomicU64,
    stale: AtomicU64,
    updating: AtomicU64,
    bypass: AtomicU64,
    revalidated: AtomicU64,
    stores: AtomicU64,
    too_large: AtomicU64,
    not_storable: AtomicU64,
    aborted: AtomicU64,
}

impl Counters {
    /// A client was answered with `status`.
    pub fn lookup(&self, status: CacheStatus) {
        let counter = match status {
            CacheStatus::Hit => &self.hit,
            CacheStatus::Miss => &self.miss,
            CacheStatus::Expired => &self.expired,
            CacheStatus::Stale => &self.stale,
            CacheStatus::Updating => &self.updating,
            CacheStatus::Bypass => &self.bypass,
            CacheStatus::Revalidated => &self.revalidated,
        };
        counter.fetch_add(1, Relaxed);
    }

    /// A response was stored.
    pub fn stored(&self) {
        self.stores.fetch_add(1, Relaxed);
    }

    /// A response was not stored: larger than `max_object_size`.
    pub fn too_large(&self) {
        self.too_large.fetch_add(1, Relaxed);
    }

    /// A response was not stored: the caching rules (or Lua) refused it.
    pub fn not_storable(&self) {
        self.not_storable.fetch_add(1, Relaxed);
    }

    /// A response being stored was not: its body failed upstream or its
    /// client went away before the end.
    pub fn aborted(&self) {
        self.aborted.fetch_add(1, Relaxed);
    }
}

/// A zone's figures: L1 and L2 entries and bytes (`disk` is null without
/// an L2), lookups by outcome, stores, store skips, disk write errors.
pub fn report(zone: &Zone) -> Value {
    let c = &zone.counters;
    let n = |a: &AtomicU64| a.load(Relaxed);
    let (l1, l2) = zone.tiers();
    // moka applies inserts and evictions lazily: settle them first.
    l1.run_pending_tasks();
    let disk = l2.map(|d| d.stats());
    json!({
        "memory": {
            "entries": l1.entry_count(),
            "bytes": l1.weighted_size(),
            "max_bytes": zone.def.memory,
        },
        "disk": disk.map(|d| json!({
            "entries": d.entries,
            "bytes": d.bytes,
            "max_bytes": d.max_bytes,
            "write_errors": d.write_errors,
            "dropped_writes": d.dropped_writes,
            "oversized": d.oversized,
            "evicted": d.evicted,
            "corrupt_removed": d.corrupt_removed,
        })),
        "lookups": {
            "hit": n(&c.hit),
            "miss": n(&c.miss),
            "expired": n(&c.expired),
            "stale": n(&c.stale),
            "updating": n(&c.updating),
            "bypass": n(&c.bypass),
            "revalidated": n(&c.revalidated),
        },
        "stores": n(&c.stores),
        "store_skips": {
            "too_large": n(&c.too_large),
            "not_storable": n(&c.not_storable),
            "aborted": n(&c.aborted),
        },
        "disk_write_errors": disk.map_or(0, |d| d.write_errors),
    })
}

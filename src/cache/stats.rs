//! A zone's figures for the admin API's `/status` ([`report`]) and
//! `/metrics` ([`figures`]): lookups by outcome (the `X-Cache-Status`
//! answered), stores, and why responses were not stored; with the tiers'
//! sizes. Counters are relaxed atomics, one set per zone: figures, never
//! synchronisation. `/metrics` reads these rather than counting again per
//! worker: they are counted for `/status` anyway, and the cache step
//! around them already shares its zone between threads (moka's lookups,
//! the lock table), so one more shared add per answer is not what a
//! cached request costs.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use serde_json::{Value, json};

use super::disk::DiskStats;
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

/// A zone's figures as numbers, for `/metrics`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Figures {
    /// Answers by status, in [`CacheStatus::ALL`]'s order.
    pub lookups: [u64; 7],
    /// Responses stored.
    pub stores: u64,
    /// Responses not stored: too large, not storable, aborted.
    pub store_skips: [u64; 3],
    /// L1 entries.
    pub memory_entries: u64,
    /// L1 bytes (keys and entries, as weighed).
    pub memory_bytes: u64,
    /// L1's bound in bytes.
    pub memory_max_bytes: u64,
    /// L2's figures, when the zone has a disk tier.
    pub disk: Option<DiskStats>,
}

/// Why a response was not stored, in [`Figures::store_skips`]' order.
pub const STORE_SKIPS: [&str; 3] = ["too_large", "not_storable", "aborted"];

/// The zone's figures now.
pub fn figures(zone: &Zone) -> Figures {
    let c = &zone.counters;
    let n = |a: &AtomicU64| a.load(Relaxed);
    let (l1, l2) = zone.tiers();
    // moka applies inserts and evictions lazily: settle them first.
    l1.run_pending_tasks();
    let lookups = CacheStatus::ALL.map(|s| {
        n(match s {
            CacheStatus::Hit => &c.hit,
            CacheStatus::Miss => &c.miss,
            CacheStatus::Expired => &c.expired,
            CacheStatus::Stale => &c.stale,
            CacheStatus::Updating => &c.updating,
            CacheStatus::Bypass => &c.bypass,
            CacheStatus::Revalidated => &c.revalidated,
        })
    });
    Figures {
        lookups,
        stores: n(&c.stores),
        store_skips: [n(&c.too_large), n(&c.not_storable), n(&c.aborted)],
        memory_entries: l1.entry_count(),
        memory_bytes: l1.weighted_size(),
        memory_max_bytes: zone.def.memory,
        disk: l2.map(|d| d.stats()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::entry::{Entry, Stored};
    use crate::cache::policy::Lifetime;
    use std::time::{Duration, SystemTime};

    #[test]
    fn figures_count_lookups_by_status_and_weigh_the_memory_tier() {
        let zone =
            Zone::new(crate::cache::zone::test_def(), None).unwrap_or_else(|e| panic!("{e}"));
        let empty = figures(&zone);
        assert_eq!((empty.memory_entries, empty.memory_bytes), (0, 0));
        assert_eq!(empty.memory_max_bytes, 1 << 20);
        assert!(empty.disk.is_none());
        zone.counters.lookup(CacheStatus::Miss);
        zone.counters.lookup(CacheStatus::Hit);
        zone.counters.lookup(CacheStatus::Hit);
        zone.counters.stored();
        zone.counters.aborted();
        zone.put(
            "k".into(),
            Entry::Response(Stored {
                status: http::StatusCode::OK,
                headers: http::HeaderMap::new(),
                body: bytes::Bytes::from_static(b"body"),
                lifetime: Lifetime::fresh(Duration::from_secs(60), SystemTime::now()),
            }),
        );
        let f = figures(&zone);
        let at = |s: CacheStatus| CacheStatus::ALL.iter().position(|x| *x == s).unwrap_or(99);
        assert_eq!(f.lookups[at(CacheStatus::Hit)], 2);
        assert_eq!(f.lookups[at(CacheStatus::Miss)], 1);
        assert_eq!(f.lookups.iter().sum::<u64>(), 3);
        assert_eq!((f.stores, f.store_skips), (1, [0, 0, 1]));
        assert_eq!(f.memory_entries, 1);
        assert!(f.memory_bytes >= 5, "{}", f.memory_bytes);
    }
}

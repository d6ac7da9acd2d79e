//! A zone's figures for the admin API's `/status` and `/metrics`
//! ([`report`]): lookups by outcome (the `X-Cache-Status`
//! answered), stores, and why responses were not stored; with the tiers'
//! sizes. Counters are relaxed atomics, one set per zone: figures, never
//! synchronisation. `/metrics` reads these rather than counting again per
//! worker: they are counted for `/status` anyway, and the cache step
//! around them already shares its zone between threads (moka's lookups,
//! the lock table), so one more shared add per answer is not what a
//! cached request costs.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

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

/// A zone's figures for `/status` and the status page.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ZoneStats {
    /// The memory tier (L1).
    pub memory: TierStats,
    /// The disk tier (L2); `None` without one.
    pub disk: Option<DiskStats>,
    /// Lookups by the `X-Cache-Status` they answered.
    pub lookups: Lookups,
    /// HIT, STALE, UPDATING and REVALIDATED over every lookup but BYPASS
    /// (answers served from the cache among those it could serve); `None`
    /// before the first such lookup.
    pub hit_ratio: Option<f64>,
    /// Responses stored.
    pub stores: u64,
    /// Responses not stored, by why.
    pub store_skips: StoreSkips,
    /// The disk tier's failed writes (0 without one).
    pub disk_write_errors: u64,
}

/// The memory tier's size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct TierStats {
    /// Entries held.
    pub entries: u64,
    /// Bytes they weigh.
    pub bytes: u64,
    /// The zone's `memory` bound.
    pub max_bytes: u64,
}

/// Lookups by outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Lookups {
    /// HIT.
    pub hit: u64,
    /// MISS.
    pub miss: u64,
    /// EXPIRED.
    pub expired: u64,
    /// STALE.
    pub stale: u64,
    /// UPDATING.
    pub updating: u64,
    /// BYPASS.
    pub bypass: u64,
    /// REVALIDATED.
    pub revalidated: u64,
}

impl Lookups {
    /// The counts labelled by `X-Cache-Status` value, in
    /// [`CacheStatus::ALL`]'s order (for `/metrics`).
    pub fn by_status(&self) -> [(&'static str, u64); 7] {
        CacheStatus::ALL.map(|s| {
            let n = match s {
                CacheStatus::Hit => self.hit,
                CacheStatus::Miss => self.miss,
                CacheStatus::Expired => self.expired,
                CacheStatus::Stale => self.stale,
                CacheStatus::Updating => self.updating,
                CacheStatus::Bypass => self.bypass,
                CacheStatus::Revalidated => self.revalidated,
            };
            (s.as_str(), n)
        })
    }

    /// See [`ZoneStats::hit_ratio`]: a stale or revalidated answer still
    /// spared the origin a full response, so it counts as served.
    pub fn hit_ratio(&self) -> Option<f64> {
        let served = self.hit + self.stale + self.updating + self.revalidated;
        let cacheable = served + self.miss + self.expired;
        (cacheable > 0).then(|| served as f64 / cacheable as f64)
    }
}

/// Responses not stored, by why.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct StoreSkips {
    /// Larger than `max_object_size`.
    pub too_large: u64,
    /// Refused by the caching rules (or Lua).
    pub not_storable: u64,
    /// The body failed upstream or the client left before its end.
    pub aborted: u64,
}

impl StoreSkips {
    /// The counts labelled by reason (for `/metrics`).
    pub fn by_reason(&self) -> [(&'static str, u64); 3] {
        [
            ("too_large", self.too_large),
            ("not_storable", self.not_storable),
            ("aborted", self.aborted),
        ]
    }
}

/// A zone's figures now.
pub fn report(zone: &Zone) -> ZoneStats {
    let c = &zone.counters;
    let n = |a: &AtomicU64| a.load(Relaxed);
    let (l1, l2) = zone.tiers();
    // moka applies inserts and evictions lazily: settle them first.
    l1.run_pending_tasks();
    let disk = l2.map(|d| d.stats());
    let lookups = Lookups {
        hit: n(&c.hit),
        miss: n(&c.miss),
        expired: n(&c.expired),
        stale: n(&c.stale),
        updating: n(&c.updating),
        bypass: n(&c.bypass),
        revalidated: n(&c.revalidated),
    };
    ZoneStats {
        memory: TierStats {
            entries: l1.entry_count(),
            bytes: l1.weighted_size(),
            max_bytes: zone.def.memory,
        },
        disk,
        hit_ratio: lookups.hit_ratio(),
        lookups,
        stores: n(&c.stores),
        store_skips: StoreSkips {
            too_large: n(&c.too_large),
            not_storable: n(&c.not_storable),
            aborted: n(&c.aborted),
        },
        disk_write_errors: disk.map_or(0, |d| d.write_errors),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hit_ratio_counts_answers_from_the_cache_among_cacheable_lookups() {
        let none = Lookups {
            hit: 0,
            miss: 0,
            expired: 0,
            stale: 0,
            updating: 0,
            bypass: 5,
            revalidated: 0,
        };
        assert_eq!(
            none.hit_ratio(),
            None,
            "bypasses alone are not lookups the cache could serve"
        );
        let some = Lookups {
            hit: 2,
            miss: 3,
            expired: 1,
            stale: 1,
            updating: 0,
            bypass: 9,
            revalidated: 1,
        };
        assert_eq!(some.hit_ratio(), Some(0.5));
    }
}

#[cfg(test)]
mod zone_tests {
    use super::*;
    use crate::cache::entry::{Entry, Stored};
    use crate::cache::policy::Lifetime;
    use std::time::{Duration, SystemTime};

    #[test]
    fn figures_count_lookups_by_status_and_weigh_the_memory_tier() {
        let zone =
            Zone::new(crate::cache::zone::test_def(), None).unwrap_or_else(|e| panic!("{e}"));
        let empty = report(&zone);
        assert_eq!((empty.memory.entries, empty.memory.bytes), (0, 0));
        assert_eq!(empty.memory.max_bytes, 1 << 20);
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
        let f = report(&zone);
        let by = f.lookups.by_status();
        assert_eq!(by[0], ("HIT", 2));
        assert_eq!(by[1], ("MISS", 1));
        assert_eq!(by.iter().map(|(_, n)| n).sum::<u64>(), 3);
        assert_eq!(
            (f.stores, f.store_skips.by_reason()[2]),
            (1, ("aborted", 1))
        );
        assert_eq!(f.memory.entries, 1);
        assert!(f.memory.bytes >= 5, "{}", f.memory.bytes);
    }
}

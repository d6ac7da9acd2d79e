//! One compiled `[cache.NAME]` zone: its L1 (moka, weighed in bytes,
//! frequency-aware admission), its optional L2 ([`DiskStore`]), its key
//! template and its [`Settings`]. It lives outside the snapshot's
//! lifetime: a reload with an unchanged definition keeps the same
//! `Arc<Zone>` and so its contents.
//!
//! Knows keys and [`Entry`]s, not requests: the request path
//! (`super::step`) decides what to look up and store.

use std::sync::Arc;
use std::time::Duration;

use super::disk::DiskStore;
use super::entry::{Entry, variants_prefix};
use super::policy::Settings;
use crate::config::CacheZone;
use crate::vars::VarTemplate;

/// A zone's two tiers and settings.
pub struct Zone {
    /// The definition it was compiled from (compared on reload).
    pub def: CacheZone,
    /// The compiled key template.
    pub key: VarTemplate,
    /// Defaults for the RFC 9111 rules.
    pub settings: Settings,
    /// Keys being fetched from the origin (the cache lock), shared by
    /// every worker thread.
    pub locks: super::lock::Locks,
    /// Lookups by outcome, stores and store skips (for `/status`).
    pub counters: super::stats::Counters,
    l1: moka::sync::Cache<String, Arc<Entry>>,
    l2: Option<Arc<DiskStore>>,
}

impl Zone {
    /// Compiles a zone, opening its disk tier, or taking over `disk` (the
    /// previous zone's store of the same directory and size, which must
    /// not be opened twice).
    pub fn new(def: CacheZone, disk: Option<Arc<DiskStore>>) -> Result<Zone, String> {
        let key = VarTemplate::parse(&def.key)?;
        let l2 = match (&def.disk, disk) {
            (None, _) => None,
            (Some(_), Some(kept)) => Some(kept),
            (Some(d), None) => Some(Arc::new(DiskStore::open(d.path.clone(), d.size).map_err(
                |e| {
                    format!(
                        "cache zone `{}`: cannot open disk path {}: {e}",
                        def.name,
                        d.path.display()
                    )
                },
            )?)),
        };
        let l1 = moka::sync::Cache::builder()
            .max_capacity(def.memory)
            .weigher(|k: &String, v: &Arc<Entry>| {
                u32::try_from(k.len().saturating_add(v.weight())).unwrap_or(u32::MAX)
            })
            .build();
        let settings = Settings {
            default_ttl: def.default_ttl,
            stale_while_revalidate: def.stale_while_revalidate,
            stale_if_error: def.stale_if_error,
            store_set_cookie: false,
            targeted: def.targeted.clone(),
        };
        Ok(Zone {
            def,
            key,
            settings,
            locks: Default::default(),
            counters: Default::default(),
            l1,
            l2,
        })
    }

    /// The disk tier, to hand over to the next zone of the same directory.
    pub fn disk(&self) -> Option<&Arc<DiskStore>> {
        self.l2.as_ref()
    }

    /// The entry under `key`: from L1, else from L2 (then promoted to L1).
    /// An L2 entry whose meta does not decode is removed: a miss.
    pub async fn get(&self, key: &str) -> Option<Arc<Entry>> {
        if let Some(e) = self.l1.get(key) {
            return Some(e);
        }
        let l2 = self.l2.as_ref()?;
        let (meta, body) = l2.get(key).await?;
        let Some(entry) = Entry::decode(&meta, body) else {
            tracing::warn!(zone = %self.def.name, "undecodable disk cache entry removed");
            l2.remove(key);
            return None;
        };
        let entry = Arc::new(entry);
        self.l1.insert(key.to_owned(), entry.clone());
        Some(entry)
    }

    /// Stores `entry` in L1 and queues it for L2.
    pub fn put(&self, key: String, entry: Entry) {
        if let Some(l2) = &self.l2 {
            let (meta, body) = entry.encode();
            l2.put(key.clone(), meta, body);
        }
        self.l1.insert(key, Arc::new(entry));
    }

    /// Drops the entry under `base` and every variant of it, in both tiers.
    pub fn invalidate(&self, base: &str) {
        // Variants in L1 become unreachable with their marker (their keys
        // carry its id) and age out; L2 drops them by prefix.
        self.l1.invalidate(base);
        if let Some(l2) = &self.l2 {
            l2.remove(base);
            l2.remove_prefix(&variants_prefix(base));
        }
    }

    /// The zone's figures for `/status` ([`super::stats::report`]).
    pub fn stats(&self) -> super::stats::ZoneStats {
        super::stats::report(self)
    }

    /// Both tiers, for [`super::purge`] (which walks L1's keys) and
    /// [`super::stats`].
    pub(super) fn tiers(&self) -> (&moka::sync::Cache<String, Arc<Entry>>, Option<&DiskStore>) {
        (&self.l1, self.l2.as_deref())
    }

    /// Waits until queued L2 writes are on disk, at most `timeout`.
    pub fn flush_blocking(&self, timeout: Duration) -> bool {
        self.l2.as_ref().is_none_or(|l2| l2.flush_blocking(timeout))
    }
}

/// A small zone definition for unit tests: 1 MiB, key `$request_uri`,
/// GET only, no disk, no lock, `CDN-Cache-Control` targeted.
#[cfg(test)]
pub(crate) fn test_def() -> CacheZone {
    CacheZone {
        name: "z".into(),
        memory: 1 << 20,
        disk: None,
        key: "$request_uri".into(),
        default_ttl: Duration::ZERO,
        stale_while_revalidate: Duration::ZERO,
        stale_if_error: Duration::ZERO,
        max_object_size: 1 << 20,
        methods: vec![http::Method::GET],
        lock: false,
        lock_timeout: Duration::from_secs(1),
        targeted: Settings::default().targeted,
        forward_targeted: false,
        place: crate::config::Place::whole("t.toml"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::entry::Stored;
    use crate::cache::policy::Lifetime;
    use crate::config::CacheDisk;
    use std::time::SystemTime;

    fn def(disk: Option<CacheDisk>) -> CacheZone {
        CacheZone { disk, ..test_def() }
    }

    fn entry(body: &'static [u8]) -> Entry {
        Entry::Response(Stored {
            status: http::StatusCode::OK,
            headers: http::HeaderMap::new(),
            body: bytes::Bytes::from_static(body),
            lifetime: Lifetime::fresh(Duration::from_secs(60), SystemTime::now()),
        })
    }

    #[tokio::test]
    async fn l2_survives_a_new_zone_and_invalidation_reaches_both_tiers() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let disk = CacheDisk {
            path: dir.path().join("c"),
            size: 1 << 20,
        };
        let first = Zone::new(def(Some(disk.clone())), None).unwrap_or_else(|e| panic!("{e}"));
        first.put("k".into(), entry(b"one"));
        first.put("b\n1\nv".into(), entry(b"two"));
        assert!(first.flush_blocking(Duration::from_secs(5)));
        drop(first);
        let second = Zone::new(def(Some(disk)), None).unwrap_or_else(|e| panic!("{e}"));
        match second.get("k").await.as_deref() {
            Some(Entry::Response(s)) => assert_eq!(&s.body[..], b"one"),
            other => panic!("expected the stored response, got {other:?}"),
        }
        second.invalidate("b");
        assert!(second.get("b\n1\nv").await.is_none());
    }
}

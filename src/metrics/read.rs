//! What a scrape reads from the shared state ([`readings`]): peer health,
//! reloads, cache zones, rate-limit zones' Redis, managed worker pools.
//! The one part of `metrics` that knows those modules: it turns their
//! figures into the plain [`Readings`] the exposition encodes.

use std::fmt;
use std::time::Instant;

use super::expose::{
    self, CacheReading, LimitReading, PeerConns, PeerState, PoolReading, Readings, TierReading,
};
use crate::cache::stats::{self, ZoneStats};
use crate::state::Shared;
use crate::upstream::call::peer_name;
use crate::upstream::pool::PoolFigures;
use crate::workers::{Recycled, STATES};

/// The text of `GET /metrics`: every worker's counts added up, with what
/// is read now.
pub fn scrape(shared: &Shared) -> Result<String, fmt::Error> {
    expose::render(shared.metrics.merged(), readings(shared))
}

/// What the scrape reads now.
pub fn readings(shared: &Shared) -> Readings {
    let snap = shared.snapshot.load();
    let reloads = shared.reload_status();
    let now = Instant::now();
    let mut peers = Vec::new();
    for (name, up) in &snap.upstreams {
        let members = up.members();
        for (peer, addr) in members.peers.iter().zip(&members.addrs) {
            peers.push(PeerState {
                upstream: name.clone(),
                peer: peer_name(peer, addr),
                reason: peer.health(now).reason.unwrap_or("up"),
                conns: conns(shared.upstream_pool.figures(peer.id())),
            });
        }
    }
    let caches = snap
        .caches
        .iter()
        .map(|(name, zone)| cache(name, &stats::report(zone)))
        .collect();
    let limits = snap
        .limits
        .iter()
        .filter_map(|(name, zone)| {
            let redis = zone.redis_status()?;
            Some(LimitReading {
                zone: name.clone(),
                fallbacks: redis.fallbacks,
                redis_up: redis.state == "ok",
            })
        })
        .collect();
    let pools = shared
        .app_workers
        .figures()
        .into_iter()
        .map(|(pool, f)| PoolReading {
            pool,
            workers: STATES.iter().copied().zip(f.procs).collect(),
            restarts: f.restarts,
            recycles: Recycled::ALL
                .iter()
                .map(|r| (r.as_str(), f.recycles[*r as usize]))
                .collect(),
        })
        .collect();
    Readings {
        generation: snap.generation,
        // `/status` counts the load at start among them; a reload it is not.
        reloads_ok: reloads.reloads.saturating_sub(1),
        reloads_failed: reloads.failures,
        last_reload: reloads.last.as_ref().map(|l| l.at),
        peers,
        caches,
        limits,
        pools,
        tracing_dropped: snap
            .tracing
            .as_ref()
            .filter(|t| t.exports())
            .map(|t| t.dropped()),
    }
}

/// A peer's connections from the pool's figures.
fn conns(f: PoolFigures) -> PeerConns {
    PeerConns {
        idle: f.idle,
        active: f.active,
        connects: f.connects,
    }
}

/// A cache zone's reading from its figures.
fn cache(zone: &str, f: &ZoneStats) -> CacheReading {
    let mut tiers = vec![TierReading {
        tier: "memory",
        entries: f.memory.entries,
        bytes: f.memory.bytes,
        max_bytes: f.memory.max_bytes,
    }];
    let mut disk_errors = Vec::new();
    if let Some(d) = &f.disk {
        tiers.push(TierReading {
            tier: "disk",
            entries: u64::try_from(d.entries).unwrap_or(u64::MAX),
            bytes: d.bytes,
            max_bytes: d.max_bytes,
        });
        disk_errors = vec![
            ("write", d.write_errors),
            ("corrupt", d.corrupt_removed),
            ("dropped", d.dropped_writes),
        ];
    }
    CacheReading {
        zone: zone.to_owned(),
        lookups: f.lookups.by_status().to_vec(),
        stores: f.stores,
        store_skips: f.store_skips.by_reason().to_vec(),
        disk_errors,
        tiers,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::disk::DiskStats;
    use crate::cache::stats::{Lookups, StoreSkips, TierStats};

    #[test]
    fn a_zone_without_a_disk_tier_has_no_disk_series() {
        let memory_only = ZoneStats {
            memory: TierStats {
                entries: 4,
                bytes: 0,
                max_bytes: 0,
            },
            disk: None,
            lookups: Lookups {
                hit: 1,
                miss: 2,
                expired: 0,
                stale: 0,
                updating: 0,
                bypass: 0,
                revalidated: 3,
            },
            hit_ratio: None,
            stores: 0,
            store_skips: StoreSkips {
                too_large: 0,
                not_storable: 0,
                aborted: 0,
            },
            disk_write_errors: 0,
        };
        let r = cache("pages", &memory_only);
        assert_eq!(r.lookups[0], ("HIT", 1));
        assert_eq!(r.lookups[1], ("MISS", 2));
        assert_eq!(r.lookups.iter().map(|(_, n)| n).sum::<u64>(), 6);
        assert_eq!(r.tiers.len(), 1);
        assert_eq!((r.tiers[0].tier, r.tiers[0].entries), ("memory", 4));
        assert!(r.disk_errors.is_empty());
        let with_disk = ZoneStats {
            disk: Some(DiskStats {
                entries: 2,
                write_errors: 5,
                corrupt_removed: 1,
                ..Default::default()
            }),
            ..memory_only
        };
        let r = cache("pages", &with_disk);
        assert_eq!((r.tiers[1].tier, r.tiers[1].entries), ("disk", 2));
        assert_eq!(
            r.disk_errors,
            [("write", 5), ("corrupt", 1), ("dropped", 0)]
        );
    }
}

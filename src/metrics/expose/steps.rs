//! The families of the request's steps: cache zones and rate-limit zones
//! (partly read from the zones at the scrape), Lua handlers by script and
//! phase.

use std::fmt;

use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Unit;

use super::{Labels, Readings, counter, gauge, histogram};
use crate::metrics::{LUA_PHASE, Merged};

/// Cache zones: lookups by `X-Cache-Status`, stores and store skips, disk
/// errors, and each tier's entries and bytes.
pub(super) fn caches(enc: &mut DescriptorEncoder<'_>, readings: &Readings) -> fmt::Result {
    let mut m = enc.encode_descriptor(
        "moongate_cache_lookups",
        "Requests answered on a route with a cache zone, by the X-Cache-Status they got.",
        None,
        MetricType::Counter,
    )?;
    for c in &readings.caches {
        for (status, n) in &c.lookups {
            let l: Labels<2> = [("zone", &c.zone), ("cache_status", status)];
            counter(&mut m, &l, *n)?;
        }
    }
    let mut m = enc.encode_descriptor(
        "moongate_cache_stores",
        "Responses stored in the zone.",
        None,
        MetricType::Counter,
    )?;
    for c in &readings.caches {
        counter(&mut m, &[("zone", &*c.zone)], c.stores)?;
    }
    let mut m = enc.encode_descriptor(
        "moongate_cache_store_skips",
        "Responses not stored, by reason (too_large, not_storable, aborted).",
        None,
        MetricType::Counter,
    )?;
    for c in &readings.caches {
        for (reason, n) in &c.store_skips {
            counter(&mut m, &[("zone", &*c.zone), ("reason", reason)], *n)?;
        }
    }
    let mut m = enc.encode_descriptor(
        "moongate_cache_disk_errors",
        "Disk tier errors, by kind: write (an I/O error), corrupt (an invalid entry file removed), dropped (a write lost to a full queue).",
        None,
        MetricType::Counter,
    )?;
    for c in &readings.caches {
        for (kind, n) in &c.disk_errors {
            counter(&mut m, &[("zone", &*c.zone), ("kind", kind)], *n)?;
        }
    }
    type Field = fn(&super::TierReading) -> u64;
    let per_tier: [(&str, &str, Option<&Unit>, Field); 3] = [
        (
            "moongate_cache_entries",
            "Entries in the zone's tier (memory, disk).",
            None,
            |t| t.entries,
        ),
        (
            "moongate_cache",
            "Bytes the zone's tier holds (memory: keys and entries as weighed; disk: file sizes).",
            Some(&Unit::Bytes),
            |t| t.bytes,
        ),
        (
            "moongate_cache_capacity",
            "The bound on the zone's tier, in bytes (memory, disk size).",
            Some(&Unit::Bytes),
            |t| t.max_bytes,
        ),
    ];
    for (name, help, unit, field) in per_tier {
        let mut m = enc.encode_descriptor(name, help, unit, MetricType::Gauge)?;
        for c in &readings.caches {
            for t in &c.tiers {
                gauge(&mut m, &[("zone", &*c.zone), ("tier", t.tier)], field(t))?;
            }
        }
    }
    Ok(())
}

/// Rate-limit zones: decisions (counted per worker), Redis fallbacks and
/// health (read from the zones).
pub(super) fn limits(
    enc: &mut DescriptorEncoder<'_>,
    merged: &Merged,
    readings: &Readings,
) -> fmt::Result {
    let mut m = enc.encode_descriptor(
        "moongate_limit_requests",
        "Requests a route's rate-limit zone decided on, by result (allowed, limited).",
        None,
        MetricType::Counter,
    )?;
    for (zone, v) in &merged.limits {
        counter(
            &mut m,
            &[("zone", &**zone), ("result", "allowed")],
            v.allowed,
        )?;
        counter(
            &mut m,
            &[("zone", &**zone), ("result", "limited")],
            v.limited,
        )?;
    }
    let mut m = enc.encode_descriptor(
        "moongate_limit_redis_fallbacks",
        "Takes from a scope = \"redis\" zone answered by its on_redis_error fallback (Redis failing or not answering).",
        None,
        MetricType::Counter,
    )?;
    for z in &readings.limits {
        counter(&mut m, &[("zone", &*z.zone)], z.fallbacks)?;
    }
    let mut m = enc.encode_descriptor(
        "moongate_limit_redis_up",
        "1 while a scope = \"redis\" zone's Redis answers, 0 while it is failing.",
        None,
        MetricType::Gauge,
    )?;
    for z in &readings.limits {
        gauge(&mut m, &[("zone", &*z.zone)], u64::from(z.redis_up))?;
    }
    Ok(())
}

/// Lua handlers by script and phase: errors, budget overruns, durations.
pub(super) fn lua(enc: &mut DescriptorEncoder<'_>, merged: &Merged) -> fmt::Result {
    let mut m = enc.encode_descriptor(
        "moongate_lua_errors",
        "Lua handler runs that raised an error, by script and phase.",
        None,
        MetricType::Counter,
    )?;
    for ((script, phase), v) in &merged.lua {
        let l: Labels<2> = [("script", script), ("phase", phase)];
        counter(&mut m, &l, v.errors)?;
    }
    let mut m = enc.encode_descriptor(
        "moongate_lua_budget_overruns",
        "Lua handler runs stopped past [lua] time_budget, by script and phase.",
        None,
        MetricType::Counter,
    )?;
    for ((script, phase), v) in &merged.lua {
        let l: Labels<2> = [("script", script), ("phase", phase)];
        counter(&mut m, &l, v.overruns)?;
    }
    let mut m = enc.encode_descriptor(
        "moongate_lua_phase_duration",
        "Wall time of a Lua handler's run (its waits included), by script and phase.",
        Some(&Unit::Seconds),
        MetricType::Histogram,
    )?;
    for ((script, phase), v) in &merged.lua {
        let l: Labels<2> = [("script", script), ("phase", phase)];
        histogram(&mut m, &l, &v.duration, &LUA_PHASE)?;
    }
    Ok(())
}

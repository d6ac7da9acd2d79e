//! The families of the server's own state, read at the scrape: reloads
//! and the configuration serving, managed worker pools.

use std::fmt;

use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Unit;

use super::{Readings, counter, gauge};

/// Reloads, the generation serving, the last reload's time.
pub(super) fn reloads(enc: &mut DescriptorEncoder<'_>, readings: &Readings) -> fmt::Result {
    let mut m = enc.encode_descriptor(
        "moongate_reloads",
        "Configuration reloads by result.",
        None,
        MetricType::Counter,
    )?;
    counter(&mut m, &[("result", "ok")], readings.reloads_ok)?;
    counter(&mut m, &[("result", "failed")], readings.reloads_failed)?;
    let mut m = enc.encode_descriptor(
        "moongate_config_generation",
        "The generation of the configuration serving (1 at start, one more per successful reload).",
        None,
        MetricType::Gauge,
    )?;
    m.encode_gauge(&i64::try_from(readings.generation).unwrap_or(i64::MAX))?;
    if let Some(at) = readings.last_reload {
        let mut m = enc.encode_descriptor(
            "moongate_last_reload_timestamp",
            "When the configuration was last loaded (the start included) or a reload tried.",
            Some(&Unit::Seconds),
            MetricType::Gauge,
        )?;
        m.encode_gauge(&i64::try_from(at).unwrap_or(i64::MAX))?;
    }
    if let Some(dropped) = readings.tracing_dropped {
        let mut m = enc.encode_descriptor(
            "moongate_tracing_dropped_spans",
            "Spans not exported because the export queue was full (the collector down or slow); starts again at 0 when a reload changes [tracing].",
            None,
            MetricType::Counter,
        )?;
        m.encode_counter::<prometheus_client::encoding::NoLabelSet, _, u64>(&dropped, None)?;
    }
    Ok(())
}

/// Managed worker pools: processes by state, restarts, recycles.
pub(super) fn pools(enc: &mut DescriptorEncoder<'_>, readings: &Readings) -> fmt::Result {
    let mut m = enc.encode_descriptor(
        "moongate_workers",
        "Managed worker processes alive, by pool and state (starting, ready, draining, stopping).",
        None,
        MetricType::Gauge,
    )?;
    for p in &readings.pools {
        for (state, n) in &p.workers {
            gauge(&mut m, &[("pool", &*p.pool), ("state", state)], *n)?;
        }
    }
    let mut m = enc.encode_descriptor(
        "moongate_workers_restarts",
        "Managed workers replaced after a failure (a failed start, an exit, a kill), by pool.",
        None,
        MetricType::Counter,
    )?;
    for p in &readings.pools {
        counter(&mut m, &[("pool", &*p.pool)], p.restarts)?;
    }
    let mut m = enc.encode_descriptor(
        "moongate_workers_recycles",
        "Managed workers recycled, by pool and reason (max_requests, max_rss).",
        None,
        MetricType::Counter,
    )?;
    for p in &readings.pools {
        for (reason, n) in &p.recycles {
            counter(&mut m, &[("pool", &*p.pool), ("reason", reason)], *n)?;
        }
    }
    Ok(())
}

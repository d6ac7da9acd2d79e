//! The exposition of one scrape: the workers' counts added up
//! ([`Merged`]) and what was read from the shared state ([`Readings`]),
//! encoded by `prometheus-client` in the OpenMetrics text format (which
//! Prometheus asks for and parses). A [`Collector`] made per scrape
//! encodes the values as they are; nothing here is kept between scrapes.
//! The families are grouped by what they describe: traffic (`traffic`),
//! the request's steps (`steps`: cache, limits, Lua) and the server's own
//! state (`control`: reloads, worker pools).

mod traffic;
mod steps;
mod control;

use std::fmt;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::exemplar::Exemplar;
use prometheus_client::registry::Registry;

use super::{Buckets, HistogramValues, Merged};

/// The content type of [`render`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// What a scrape reads from the shared state rather than from counters.
#[derive(Debug, Default, Clone)]
pub struct Readings {
    /// The configuration generation serving.
    pub generation: u64,
    /// Reloads that swapped a new configuration in.
    pub reloads_ok: u64,
    /// Reloads that failed (the old configuration serves on).
    pub reloads_failed: u64,
    /// When the configuration was last loaded or a reload tried, the
    /// start included (seconds since the Unix epoch).
    pub last_reload: Option<u64>,
    /// Every upstream peer's health now.
    pub peers: Vec<PeerState>,
    /// Every cache zone's figures.
    pub caches: Vec<CacheReading>,
    /// Every `scope = "redis"` rate-limit zone's Redis figures.
    pub limits: Vec<LimitReading>,
    /// Every managed worker pool's figures.
    pub pools: Vec<PoolReading>,
    /// Spans the tracing export queue dropped since its exporter started
    /// (`None` without `[tracing]` export).
    pub tracing_dropped: Option<u64>,
}

/// One peer's health at the scrape.
#[derive(Debug, Clone)]
pub struct PeerState {
    /// The upstream's name.
    pub upstream: String,
    /// The peer's label (its address from the config).
    pub peer: String,
    /// `"up"`, or why it is out: `"config"`, `"active"`, `"passive"`.
    pub reason: &'static str,
    /// Its connections: idle in the shared pool, carrying requests (an
    /// HTTP/2 connection always counts as active), opened since start.
    pub conns: PeerConns,
}

/// One peer's connections at the scrape.
#[derive(Debug, Clone, Copy, Default)]
pub struct PeerConns {
    /// Idle in the process's pool.
    pub idle: u64,
    /// Open and carrying a request (HTTP/2 ones always).
    pub active: u64,
    /// Opened since start.
    pub connects: u64,
}

/// A label value with its count.
pub type Count = (&'static str, u64);

/// One cache zone's figures at the scrape.
#[derive(Debug, Clone, Default)]
pub struct CacheReading {
    /// The zone's name.
    pub zone: String,
    /// Answers by `X-Cache-Status` value.
    pub lookups: Vec<Count>,
    /// Responses stored.
    pub stores: u64,
    /// Responses not stored, by reason.
    pub store_skips: Vec<Count>,
    /// Disk tier errors by kind (none without a disk tier).
    pub disk_errors: Vec<Count>,
    /// Its tiers (memory, and disk when it has one).
    pub tiers: Vec<TierReading>,
}

/// One tier of a cache zone.
#[derive(Debug, Clone, Default)]
pub struct TierReading {
    /// `"memory"` or `"disk"`.
    pub tier: &'static str,
    /// Entries held.
    pub entries: u64,
    /// Bytes held.
    pub bytes: u64,
    /// The bound on `bytes`.
    pub max_bytes: u64,
}

/// One `scope = "redis"` rate-limit zone's Redis figures.
#[derive(Debug, Clone, Default)]
pub struct LimitReading {
    /// The zone's name.
    pub zone: String,
    /// Takes the fallback answered.
    pub fallbacks: u64,
    /// Whether its Redis answered the last take.
    pub redis_up: bool,
}

/// One managed worker pool's figures.
#[derive(Debug, Clone, Default)]
pub struct PoolReading {
    /// The pool's (its upstream's) name.
    pub pool: String,
    /// Processes alive by state.
    pub workers: Vec<Count>,
    /// Replacements after failures.
    pub restarts: u64,
    /// Workers recycled, by reason.
    pub recycles: Vec<Count>,
}

/// The scrape's text.
pub fn render(merged: Merged, readings: Readings) -> Result<String, fmt::Error> {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Scrape { merged, readings }));
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &registry)?;
    Ok(out)
}

#[derive(Debug)]
struct Scrape {
    merged: Merged,
    readings: Readings,
}

type Labels<'a, const N: usize> = [(&'static str, &'a str); N];

fn counter(m: &mut MetricEncoder<'_>, labels: &impl EncodeLabelSet, v: u64) -> fmt::Result {
    m.encode_family(labels)?
        .encode_counter::<NoLabelSet, u64, u64>(&v, None::<&Exemplar<NoLabelSet, u64>>)
}

fn gauge(m: &mut MetricEncoder<'_>, labels: &impl EncodeLabelSet, v: u64) -> fmt::Result {
    m.encode_family(labels)?
        .encode_gauge(&i64::try_from(v).unwrap_or(i64::MAX))
}

fn histogram(
    m: &mut MetricEncoder<'_>,
    labels: &impl EncodeLabelSet,
    h: &HistogramValues,
    bounds: &Buckets,
) -> fmt::Result {
    let buckets: Vec<(f64, u64)> = bounds
        .seconds
        .iter()
        .copied()
        .chain(std::iter::once(f64::INFINITY))
        .zip(h.buckets.iter().copied())
        .collect();
    let sum = h.sum_ns as f64 / 1e9;
    m.encode_family(labels)?
        .encode_histogram::<NoLabelSet>(sum, h.count, &buckets, None)
}

impl Collector for Scrape {
    fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
        let (merged, readings) = (&self.merged, &self.readings);
        let version: Labels<1> = [("version", env!("CARGO_PKG_VERSION"))];
        enc.encode_descriptor(
            "moongate_build",
            "The running moongate's version.",
            None,
            MetricType::Info,
        )?
        .encode_info(&version)?;
        traffic::routes(&mut enc, merged)?;
        traffic::upstreams(&mut enc, merged, readings)?;
        traffic::connections(&mut enc, merged)?;
        steps::caches(&mut enc, readings)?;
        steps::limits(&mut enc, merged, readings)?;
        steps::lua(&mut enc, merged)?;
        control::reloads(&mut enc, readings)?;
        control::pools(&mut enc, readings)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::metrics::counters::MethodClass;
    use crate::metrics::{LATENCY, RouteValues, UNROUTED};

    #[test]
    fn the_text_has_the_families_with_their_units_and_labels() {
        let mut merged = Merged::default();
        let mut api = RouteValues::default();
        api.requests[MethodClass::Get as usize][1] = 3;
        api.duration.count = 3;
        api.duration.buckets[0] = 2;
        api.duration.buckets[LATENCY.seconds.len()] = 1;
        api.duration.sum_ns = 1_500_000_000;
        merged.routes.insert(Arc::from("api"), api);
        merged
            .routes
            .insert(Arc::from(UNROUTED), RouteValues::default());
        let readings = Readings {
            generation: 4,
            reloads_ok: 3,
            peers: vec![PeerState {
                upstream: "app".into(),
                peer: "127.0.0.1:9".into(),
                reason: "active",
                conns: PeerConns {
                    idle: 3,
                    active: 2,
                    connects: 7,
                },
            }],
            ..Readings::default()
        };
        let text = render(merged, readings).unwrap();
        for line in [
            "moongate_build_info{version=\"0.1.0\"} 1",
            "moongate_requests_total{route=\"api\",method_class=\"GET\",status_class=\"2xx\"} 3",
            "moongate_request_duration_seconds_bucket{le=\"0.001\",route=\"api\"} 2",
            "moongate_request_duration_seconds_bucket{le=\"10.0\",route=\"api\"} 2",
            "moongate_request_duration_seconds_bucket{le=\"+Inf\",route=\"api\"} 3",
            "moongate_request_duration_seconds_sum{route=\"api\"} 1.5",
            "moongate_request_duration_seconds_count{route=\"api\"} 3",
            "# UNIT moongate_request_duration_seconds seconds",
            "moongate_response_bytes_total{route=\"\"} 0",
            "moongate_upstream_peer_up{upstream=\"app\",peer=\"127.0.0.1:9\",reason=\"active\"} 0",
            "moongate_upstream_connections{upstream=\"app\",peer=\"127.0.0.1:9\",state=\"idle\"} 3",
            "moongate_upstream_connections{upstream=\"app\",peer=\"127.0.0.1:9\",state=\"active\"} 2",
            "moongate_upstream_connects_total{upstream=\"app\",peer=\"127.0.0.1:9\"} 7",
            "moongate_reloads_total{result=\"ok\"} 3",
            "moongate_config_generation 4",
            "# EOF",
        ] {
            assert!(text.lines().any(|l| l == line), "no `{line}` in:\n{text}");
        }
        // A class with no requests is left out.
        assert!(!text.contains("status_class=\"5xx\""), "{text}");
    }

    #[test]
    fn zones_scripts_pools_and_connections_have_their_families() {
        let mut merged = Merged::default();
        let lua = crate::metrics::WorkerMetrics::default();
        lua.lua("lua/auth.lua", "access").ran(
            crate::metrics::LuaEnd::Error,
            std::time::Duration::from_micros(30),
        );
        lua.limit("per_ip").limited();
        let conns = lua.listener("127.0.0.1:8443", true);
        let mut open = conns.open();
        open.speaks(crate::metrics::Protocol::H2);
        lua.add_to(&mut merged);
        let readings = Readings {
            caches: vec![CacheReading {
                zone: "pages".into(),
                lookups: vec![("HIT", 2), ("MISS", 1)],
                stores: 1,
                store_skips: vec![("too_large", 0)],
                disk_errors: vec![("write", 3)],
                tiers: vec![TierReading {
                    tier: "memory",
                    entries: 1,
                    bytes: 120,
                    max_bytes: 1024,
                }],
            }],
            limits: vec![LimitReading {
                zone: "shared".into(),
                fallbacks: 4,
                redis_up: false,
            }],
            pools: vec![PoolReading {
                pool: "app".into(),
                workers: vec![("ready", 2), ("starting", 0)],
                restarts: 1,
                recycles: vec![("max_requests", 5)],
            }],
            ..Readings::default()
        };
        let text = render(merged, readings).unwrap();
        for line in [
            "moongate_cache_lookups_total{zone=\"pages\",cache_status=\"HIT\"} 2",
            "moongate_cache_stores_total{zone=\"pages\"} 1",
            "moongate_cache_store_skips_total{zone=\"pages\",reason=\"too_large\"} 0",
            "moongate_cache_disk_errors_total{zone=\"pages\",kind=\"write\"} 3",
            "moongate_cache_entries{zone=\"pages\",tier=\"memory\"} 1",
            "moongate_cache_bytes{zone=\"pages\",tier=\"memory\"} 120",
            "moongate_cache_capacity_bytes{zone=\"pages\",tier=\"memory\"} 1024",
            "moongate_limit_requests_total{zone=\"per_ip\",result=\"limited\"} 1",
            "moongate_limit_requests_total{zone=\"per_ip\",result=\"allowed\"} 0",
            "moongate_limit_redis_fallbacks_total{zone=\"shared\"} 4",
            "moongate_limit_redis_up{zone=\"shared\"} 0",
            "moongate_lua_errors_total{script=\"lua/auth.lua\",phase=\"access\"} 1",
            "moongate_lua_budget_overruns_total{script=\"lua/auth.lua\",phase=\"access\"} 0",
            "moongate_lua_phase_duration_seconds_bucket{le=\"0.00005\",script=\"lua/auth.lua\",phase=\"access\"} 1",
            "moongate_lua_phase_duration_seconds_count{script=\"lua/auth.lua\",phase=\"access\"} 1",
            "moongate_workers{pool=\"app\",state=\"ready\"} 2",
            "moongate_workers_restarts_total{pool=\"app\"} 1",
            "moongate_workers_recycles_total{pool=\"app\",reason=\"max_requests\"} 5",
            "moongate_connections_accepted_total{listener=\"127.0.0.1:8443\",tls=\"true\"} 1",
            "moongate_connections_open{listener=\"127.0.0.1:8443\",tls=\"true\",protocol=\"h2\"} 1",
            "moongate_connections_open{listener=\"127.0.0.1:8443\",tls=\"true\",protocol=\"none\"} 0",
            "moongate_connections_closed_total{listener=\"127.0.0.1:8443\",tls=\"true\",protocol=\"h2\"} 0",
        ] {
            assert!(text.lines().any(|l| l == line), "no `{line}` in:\n{text}");
        }
        drop(open);
    }
}

//! The exposition of one scrape: the workers' counts added up
//! ([`Merged`]) and what was read from the shared state ([`Readings`]),
//! encoded by `prometheus-client` in the OpenMetrics text format (which
//! Prometheus asks for and parses). A [`Collector`] made per scrape
//! encodes the values as they are; nothing here is kept between scrapes.

use std::fmt;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::exemplar::Exemplar;
use prometheus_client::registry::{Registry, Unit};

use super::Merged;
use super::counters::{DURATION_BUCKETS, HistogramValues, MethodClass, STATUS_CLASSES};

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

fn counter(
    m: &mut MetricEncoder<'_>,
    labels: &impl prometheus_client::encoding::EncodeLabelSet,
    v: u64,
) -> fmt::Result {
    m.encode_family(labels)?
        .encode_counter::<NoLabelSet, u64, u64>(&v, None::<&Exemplar<NoLabelSet, u64>>)
}

fn gauge(
    m: &mut MetricEncoder<'_>,
    labels: &impl prometheus_client::encoding::EncodeLabelSet,
    v: i64,
) -> fmt::Result {
    m.encode_family(labels)?.encode_gauge(&v)
}

fn histogram(
    m: &mut MetricEncoder<'_>,
    labels: &impl prometheus_client::encoding::EncodeLabelSet,
    h: &HistogramValues,
) -> fmt::Result {
    let buckets: Vec<(f64, u64)> = DURATION_BUCKETS
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

        let mut m = enc.encode_descriptor(
            "moongate_requests",
            "Requests by route, method class and status class.",
            None,
            MetricType::Counter,
        )?;
        for (route, v) in &merged.routes {
            for method in MethodClass::ALL {
                for (s, class) in STATUS_CLASSES.iter().enumerate() {
                    let n = v.requests[method as usize][s];
                    if n > 0 {
                        let l: Labels<3> = [
                            ("route", route),
                            ("method_class", method.as_str()),
                            ("status_class", class),
                        ];
                        counter(&mut m, &l, n)?;
                    }
                }
            }
        }
        let mut m = enc.encode_descriptor(
            "moongate_request_duration",
            "Time from a request's arrival to the end of its response, by route.",
            Some(&Unit::Seconds),
            MetricType::Histogram,
        )?;
        for (route, v) in &merged.routes {
            histogram(&mut m, &[("route", &**route)], &v.duration)?;
        }
        let mut m = enc.encode_descriptor(
            "moongate_request",
            "Request body bytes received (as declared by Content-Length), by route.",
            Some(&Unit::Bytes),
            MetricType::Counter,
        )?;
        for (route, v) in &merged.routes {
            counter(&mut m, &[("route", &**route)], v.request_bytes)?;
        }
        let mut m = enc.encode_descriptor(
            "moongate_response",
            "Response body bytes sent, by route.",
            Some(&Unit::Bytes),
            MetricType::Counter,
        )?;
        for (route, v) in &merged.routes {
            counter(&mut m, &[("route", &**route)], v.response_bytes)?;
        }

        let mut m = enc.encode_descriptor(
            "moongate_upstream_requests",
            "Answers from upstream peers (every try), by status class.",
            None,
            MetricType::Counter,
        )?;
        for ((upstream, peer), v) in &merged.peers {
            for (s, class) in STATUS_CLASSES.iter().enumerate() {
                if v.responses[s] > 0 {
                    let l: Labels<3> = [
                        ("upstream", upstream),
                        ("peer", peer),
                        ("status_class", class),
                    ];
                    counter(&mut m, &l, v.responses[s])?;
                }
            }
        }
        let mut m = enc.encode_descriptor(
            "moongate_upstream_response",
            "Time from the start of a try to the peer's response head.",
            Some(&Unit::Seconds),
            MetricType::Histogram,
        )?;
        for ((upstream, peer), v) in &merged.peers {
            let l: Labels<2> = [("upstream", upstream), ("peer", peer)];
            histogram(&mut m, &l, &v.response_time)?;
        }
        type Field = fn(&super::PeerValues) -> u64;
        let per_peer: [(&str, &str, Field); 3] = [
            (
                "moongate_upstream_connect_errors",
                "Tries that could not connect to the peer (connect timeouts included).",
                |v| v.connect_errors,
            ),
            (
                "moongate_upstream_timeouts",
                "Tries on the peer that timed out (connecting, sending, reading, a gRPC deadline).",
                |v| v.timeouts,
            ),
            (
                "moongate_upstream_retries",
                "Failed tries on the peer that the request followed with another try.",
                |v| v.retries,
            ),
        ];
        for (name, help, field) in per_peer {
            let mut m = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
            for ((upstream, peer), v) in &merged.peers {
                let l: Labels<2> = [("upstream", upstream), ("peer", peer)];
                counter(&mut m, &l, field(v))?;
            }
        }
        let mut m = enc.encode_descriptor(
            "moongate_upstream_peer_up",
            "1 when the peer takes traffic, 0 when it is out; `reason` says why (config, active, passive).",
            None,
            MetricType::Gauge,
        )?;
        for p in &readings.peers {
            let l: Labels<3> = [
                ("upstream", &p.upstream),
                ("peer", &p.peer),
                ("reason", p.reason),
            ];
            gauge(&mut m, &l, i64::from(p.reason == "up"))?;
        }

        let per_listener: [(&str, &str, MetricType); 3] = [
            (
                "moongate_connections_accepted",
                "Client connections accepted, by listener and transport (tcp, tls).",
                MetricType::Counter,
            ),
            (
                "moongate_connections_closed",
                "Client connections closed, by listener and transport.",
                MetricType::Counter,
            ),
            (
                "moongate_connections_open",
                "Client connections open now, by listener and transport.",
                MetricType::Gauge,
            ),
        ];
        for (i, (name, help, kind)) in per_listener.into_iter().enumerate() {
            let mut m = enc.encode_descriptor(name, help, None, kind)?;
            for ((listener, transport), v) in &merged.listeners {
                let l: Labels<2> = [("listener", listener), ("protocol", transport)];
                match i {
                    0 => counter(&mut m, &l, v.accepted)?,
                    1 => counter(&mut m, &l, v.closed)?,
                    _ => {
                        let open = v.accepted.saturating_sub(v.closed);
                        gauge(&mut m, &l, i64::try_from(open).unwrap_or(i64::MAX))?;
                    }
                }
            }
        }

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
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::metrics::{RouteValues, UNROUTED};

    #[test]
    fn the_text_has_the_families_with_their_units_and_labels() {
        let mut merged = Merged::default();
        let mut api = RouteValues::default();
        api.requests[MethodClass::Get as usize][1] = 3;
        api.duration.count = 3;
        api.duration.buckets[0] = 2;
        api.duration.buckets[DURATION_BUCKETS.len()] = 1;
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
            "moongate_reloads_total{result=\"ok\"} 3",
            "moongate_config_generation 4",
            "# EOF",
        ] {
            assert!(text.lines().any(|l| l == line), "no `{line}` in:\n{text}");
        }
        // A class with no requests is left out.
        assert!(!text.contains("status_class=\"5xx\""), "{text}");
    }
}

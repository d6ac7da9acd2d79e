//! The traffic families: requests by route, upstream tries by peer (with
//! the peers' health read at the scrape), client connections by listener.

use std::fmt;

use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Unit;

use super::{Labels, Readings, counter, gauge, histogram};
use crate::metrics::counters::{MethodClass, STATUS_CLASSES};
use crate::metrics::{ConnValues, LATENCY, Merged, PeerValues, Protocol};

/// Requests by route: counts, durations, bytes.
pub(super) fn routes(enc: &mut DescriptorEncoder<'_>, merged: &Merged) -> fmt::Result {
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
        histogram(&mut m, &[("route", &**route)], &v.duration, &LATENCY)?;
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
    Ok(())
}

/// Upstream tries by peer, and every peer's health now.
pub(super) fn upstreams(
    enc: &mut DescriptorEncoder<'_>,
    merged: &Merged,
    readings: &Readings,
) -> fmt::Result {
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
        histogram(&mut m, &l, &v.response_time, &LATENCY)?;
    }
    type Field = fn(&PeerValues) -> u64;
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
        gauge(&mut m, &l, u64::from(p.reason == "up"))?;
    }
    let mut m = enc.encode_descriptor(
        "moongate_upstream_connections",
        "Connections to the peer open now: idle in the process's pool, or active (carrying a request; HTTP/2 ones always).",
        None,
        MetricType::Gauge,
    )?;
    for p in &readings.peers {
        for (state, n) in [("idle", p.conns.idle), ("active", p.conns.active)] {
            let l: Labels<3> = [
                ("upstream", &p.upstream),
                ("peer", &p.peer),
                ("state", state),
            ];
            gauge(&mut m, &l, n)?;
        }
    }
    let mut m = enc.encode_descriptor(
        "moongate_upstream_connects",
        "Connections opened to the peer (the rest of its requests reused pooled ones).",
        None,
        MetricType::Counter,
    )?;
    for p in &readings.peers {
        let l: Labels<2> = [("upstream", &p.upstream), ("peer", &p.peer)];
        counter(&mut m, &l, p.conns.connects)?;
    }
    Ok(())
}

/// Every listener's figures with the labels of each protocol.
fn by_protocol(merged: &Merged) -> impl Iterator<Item = (Labels<'_, 3>, &ConnValues, Protocol)> {
    merged.listeners.iter().flat_map(|((listener, t), v)| {
        Protocol::ALL.into_iter().map(move |p| {
            let l: Labels<'_, 3> = [
                ("listener", listener.as_ref()),
                ("tls", tls(*t)),
                ("protocol", p.as_str()),
            ];
            (l, v, p)
        })
    })
}

fn tls(t: bool) -> &'static str {
    if t { "true" } else { "false" }
}

/// Client connections by listener, TLS or not, and the HTTP version they
/// speak.
pub(super) fn connections(enc: &mut DescriptorEncoder<'_>, merged: &Merged) -> fmt::Result {
    let mut m = enc.encode_descriptor(
        "moongate_connections_accepted",
        "Client connections accepted, by listener and whether it is a TLS one.",
        None,
        MetricType::Counter,
    )?;
    for ((listener, t), v) in &merged.listeners {
        let l: Labels<2> = [("listener", listener), ("tls", tls(*t))];
        counter(&mut m, &l, v.accepted)?;
    }
    let mut m = enc.encode_descriptor(
        "moongate_connections_closed",
        "Client connections closed, by listener, TLS, and the protocol they spoke (h1, h2; none: closed before speaking HTTP, e.g. a failed TLS handshake).",
        None,
        MetricType::Counter,
    )?;
    for (l, v, p) in by_protocol(merged) {
        counter(&mut m, &l, v.closed[p as usize])?;
    }
    let mut m = enc.encode_descriptor(
        "moongate_connections_open",
        "Client connections open now, by listener, TLS and protocol (h1, h2; none: TLS handshake or first bytes awaited).",
        None,
        MetricType::Gauge,
    )?;
    for (l, v, p) in by_protocol(merged) {
        gauge(&mut m, &l, v.open(p))?;
    }
    Ok(())
}

//! `[tracing]`: W3C trace context for every request and, with an
//! `otlp_endpoint`, one exported span per sampled request with child spans
//! for its upstream exchange and the Lua phases that ran.
//!
//! A request's spans are plain recorded values ([`RequestTrace`]: ids,
//! instants, the attributes noted when the response is settled), built
//! into `opentelemetry_sdk` span records only when the response body is
//! done and handed to the export queue ([`export`]). Nothing here runs for
//! a request when `[tracing]` is absent: the snapshot holds no [`Tracer`].

mod export;
pub mod w3c;

use std::borrow::Cow;
use std::cell::RefCell;
use std::net::IpAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use http::header::{HeaderMap, HeaderName};
use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanLinks};

use crate::config::TracingSettings;
use crate::lua::Phase;
use crate::lua::request::ReqCtx;

pub use export::LOG_EVERY;

/// `traceparent`.
pub static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
/// `tracestate`.
pub static TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// One configuration's `[tracing]`: its settings and, when it exports, the
/// span queue. Kept across a reload that leaves `[tracing]` unchanged.
pub struct Tracer {
    /// The settings it was made from.
    pub settings: TracingSettings,
    queue: Option<export::Queue>,
    scope: InstrumentationScope,
}

impl Tracer {
    /// The tracer for `settings`; starts the export thread when they name
    /// an `otlp_endpoint`.
    pub fn new(settings: TracingSettings) -> Result<Tracer, String> {
        let queue = match &settings.otlp_endpoint {
            Some(endpoint) => Some(export::Queue::start(&settings, endpoint)?),
            None => None,
        };
        Ok(Tracer {
            settings,
            queue,
            scope: InstrumentationScope::builder("moongate")
                .with_version(env!("CARGO_PKG_VERSION"))
                .build(),
        })
    }

    /// Whether spans are exported (an `otlp_endpoint` is set).
    pub fn exports(&self) -> bool {
        self.queue.is_some()
    }

    /// Spans dropped because the export queue was full (0 without export).
    pub fn dropped(&self) -> u64 {
        self.queue.as_ref().map_or(0, export::Queue::dropped)
    }

    /// The trace of a request that arrived at `started` with `headers`:
    /// continues a valid incoming `traceparent`, else starts a trace.
    /// Sampling is parent-based: the caller's flag when there is one, else
    /// `sample_ratio`.
    pub fn begin(self: &Arc<Self>, headers: &HeaderMap, started: Instant) -> Box<RequestTrace> {
        let parent = headers
            .get(&TRACEPARENT)
            .and_then(|v| w3c::parse(v.as_bytes()));
        let (trace_id, sampled) = match parent {
            Some(p) => (p.trace_id, p.sampled),
            None => {
                let ratio = self.settings.sample_ratio;
                (new_trace_id(), ratio >= 1.0 || fastrand::f64() < ratio)
            }
        };
        Box::new(RequestTrace {
            trace_id,
            parent: parent.map(|p| p.span_id),
            span_id: new_span_id(),
            client_span_id: new_span_id(),
            sampled,
            started,
            wall: SystemTime::now(),
            upstream_head: None,
            settled: None,
            exporter: (sampled && self.queue.is_some()).then(|| self.clone()),
        })
    }

    /// Builds a finished request's spans and queues them.
    fn export(&self, trace: &RequestTrace, settled: Settled, end: Instant) {
        let Some(queue) = &self.queue else {
            return;
        };
        queue.offer(trace.spans(settled, end, &self.scope));
    }
}

/// One Lua handler run, as the server span's child.
#[derive(Debug, Clone, Copy)]
pub struct PhaseRun {
    /// The phase it ran in.
    pub phase: Phase,
    /// When it started.
    pub start: Instant,
    /// When it ended.
    pub end: Instant,
    /// It failed (a script error or its time budget).
    pub failed: bool,
}

/// Most handler runs one request's spans record (a bound on what a
/// looping `ngx.exec` or many handlers can make it hold).
const MAX_PHASE_RUNS: usize = 64;

/// Writes down one handler run. The `body_filter` runs of a response (one
/// per chunk) make one span, from the first chunk to the last.
pub fn note_run(
    runs: &mut Vec<PhaseRun>,
    phase: Phase,
    start: Instant,
    end: Instant,
    failed: bool,
) {
    if let Some(last) = runs
        .last_mut()
        .filter(|l| l.phase == phase && phase == Phase::BodyFilter)
    {
        last.end = end;
        last.failed |= failed;
        return;
    }
    if runs.len() < MAX_PHASE_RUNS {
        runs.push(PhaseRun {
            phase,
            start,
            end,
            failed,
        });
    }
}

/// Where a traced request's Lua handler runs are written down
/// (`ReqCtx::phase_runs`): `None` when the request is not recorded.
pub type PhaseRuns = RefCell<Option<Vec<PhaseRun>>>;

/// What the upstream exchange was, for its client span.
pub struct UpstreamSpan {
    /// The peer that answered.
    pub addr: String,
    /// Its status.
    pub status: u16,
    /// From the first try to its response head.
    pub elapsed: Duration,
}

/// A request's trace: its ids, and what its spans say once the response
/// is settled. See the module docs.
pub struct RequestTrace {
    /// The trace it belongs to.
    pub trace_id: TraceId,
    /// The caller's span, from a valid incoming `traceparent`.
    pub parent: Option<SpanId>,
    /// moongate's span for the request (kind server).
    pub span_id: SpanId,
    /// The upstream exchange's span (kind client, the server span's
    /// child): the parent the upstream is told of.
    pub client_span_id: SpanId,
    /// Spans of this trace are recorded (and the flag sent upstream).
    pub sampled: bool,
    started: Instant,
    wall: SystemTime,
    /// When the upstream's response head arrived.
    pub upstream_head: Option<Instant>,
    settled: Option<Settled>,
    /// The tracer its spans go to, when they are recorded.
    exporter: Option<Arc<Tracer>>,
}

/// What the request's spans say, noted when its response is settled.
pub struct Settled {
    /// The server span's name.
    pub name: String,
    /// The request method.
    pub method: &'static str,
    /// The server span's attributes.
    pub attributes: Vec<KeyValue>,
    /// The response status.
    pub status: u16,
    /// The upstream exchange, if there was one.
    pub upstream: Option<UpstreamSpan>,
    /// The request's Lua state, whose handler runs (`phase_runs`) are
    /// read when the body is done (body filters run while it streams).
    pub lua: Option<Rc<ReqCtx>>,
}

impl RequestTrace {
    /// Sets the request's `traceparent` for the upstream (this request's
    /// client span as the parent) and, for a trace started here, removes
    /// any `tracestate` (it belonged to an invalid or absent parent, W3C
    /// §3.3). A continued trace's `tracestate` goes on unchanged.
    pub fn inject(&self, headers: &mut HeaderMap) {
        let value = w3c::format(self.trace_id, self.client_span_id, self.sampled);
        headers.insert(TRACEPARENT.clone(), value);
        if self.parent.is_none() {
            headers.remove(&TRACESTATE);
        }
    }

    /// Whether the request's spans are exported (sampled, and the
    /// tracer exports).
    pub fn recording(&self) -> bool {
        self.exporter.is_some()
    }

    /// Notes what the spans say once the response is settled.
    pub fn settle(&mut self, settled: Settled) {
        self.settled = Some(settled);
    }

    /// The request is done (its body sent or abandoned): its spans go to
    /// the export queue.
    pub fn finish(mut self: Box<Self>) {
        if let (Some(settled), Some(tracer)) = (self.settled.take(), self.exporter.take()) {
            tracer.export(&self, settled, Instant::now());
        }
    }

    fn at(&self, i: Instant) -> SystemTime {
        self.wall + i.saturating_duration_since(self.started)
    }

    fn context(&self, span: SpanId) -> SpanContext {
        let flags = if self.sampled {
            TraceFlags::SAMPLED
        } else {
            TraceFlags::default()
        };
        SpanContext::new(self.trace_id, span, flags, false, TraceState::NONE)
    }

    fn spans(&self, s: Settled, end: Instant, scope: &InstrumentationScope) -> Vec<SpanData> {
        let phases = (s.lua.as_ref())
            .and_then(|l| l.phase_runs.borrow_mut().take())
            .unwrap_or_default();
        let mut out = Vec::with_capacity(2 + phases.len());
        let error = |failed: bool| {
            if failed {
                Status::error("")
            } else {
                Status::Unset
            }
        };
        let span = |id, parent: SpanId, kind, name: String, (start, end), attrs, status| SpanData {
            span_context: self.context(id),
            parent_span_id: parent,
            parent_span_is_remote: parent == self.parent.unwrap_or(SpanId::INVALID)
                && parent != SpanId::INVALID,
            span_kind: kind,
            name: Cow::Owned(name),
            start_time: self.at(start),
            end_time: self.at(end),
            attributes: attrs,
            dropped_attributes_count: 0,
            events: SpanEvents::default(),
            links: SpanLinks::default(),
            status,
            instrumentation_scope: scope.clone(),
        };
        out.push(span(
            self.span_id,
            self.parent.unwrap_or(SpanId::INVALID),
            SpanKind::Server,
            s.name,
            (self.started, end),
            s.attributes,
            error(s.status >= 500),
        ));
        if let (Some(up), Some(head)) = (s.upstream, self.upstream_head) {
            let start = head.checked_sub(up.elapsed).unwrap_or(head);
            let mut attrs = vec![
                KeyValue::new("http.request.method", s.method),
                KeyValue::new("http.response.status_code", i64::from(up.status)),
            ];
            attrs.extend(peer_attributes(&up.addr));
            out.push(span(
                self.client_span_id,
                self.span_id,
                SpanKind::Client,
                s.method.to_owned(),
                (start, head),
                attrs,
                error(up.status >= 500),
            ));
        }
        for run in phases {
            let attrs = vec![KeyValue::new("moongate.lua.phase", run.phase.name())];
            out.push(span(
                new_span_id(),
                self.span_id,
                SpanKind::Internal,
                format!("lua {}", run.phase.name()),
                (run.start, run.end),
                attrs,
                error(run.failed),
            ));
        }
        out
    }
}

/// The server span's attributes (OTel HTTP semantic conventions).
#[allow(clippy::too_many_arguments)]
pub fn server_attributes(
    method: &'static str,
    path: &str,
    scheme: &'static str,
    route: Option<&str>,
    host: &str,
    client: IpAddr,
    status: u16,
    upstream: Option<&str>,
) -> Vec<KeyValue> {
    let mut attrs = vec![
        KeyValue::new("http.request.method", method),
        KeyValue::new("url.path", path.to_owned()),
        KeyValue::new("url.scheme", scheme),
        KeyValue::new("server.address", host.to_owned()),
        KeyValue::new("client.address", client.to_string()),
        KeyValue::new("http.response.status_code", i64::from(status)),
    ];
    if let Some(route) = route {
        attrs.push(KeyValue::new("http.route", route.to_owned()));
    }
    if let Some(peer) = upstream {
        attrs.push(KeyValue::new("moongate.upstream.address", peer.to_owned()));
    }
    attrs
}

/// `server.address`/`server.port` (and `network.peer.address`) of an
/// upstream peer written `ip:port` or `unix:/path`.
fn peer_attributes(addr: &str) -> Vec<KeyValue> {
    let mut out = vec![KeyValue::new("network.peer.address", addr.to_owned())];
    match addr.rsplit_once(':') {
        Some((host, port)) if !addr.starts_with("unix:") => {
            let host = host.trim_start_matches('[').trim_end_matches(']');
            out.push(KeyValue::new("server.address", host.to_owned()));
            if let Ok(port) = port.parse::<u16>() {
                out.push(KeyValue::new("server.port", i64::from(port)));
            }
        }
        _ => out.push(KeyValue::new("server.address", addr.to_owned())),
    }
    out
}

/// The method's name as a `'static` str (OTel's `_OTHER` for the rest).
pub fn method_name(m: &http::Method) -> &'static str {
    use http::Method as M;
    match *m {
        M::GET => "GET",
        M::POST => "POST",
        M::PUT => "PUT",
        M::DELETE => "DELETE",
        M::HEAD => "HEAD",
        M::OPTIONS => "OPTIONS",
        M::PATCH => "PATCH",
        M::CONNECT => "CONNECT",
        M::TRACE => "TRACE",
        _ => "_OTHER",
    }
}

fn new_trace_id() -> TraceId {
    TraceId::from_bytes(fastrand::u128(1..).to_be_bytes())
}

fn new_span_id() -> SpanId {
    SpanId::from_bytes(fastrand::u64(1..).to_be_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(endpoint: Option<&str>, ratio: f64) -> TracingSettings {
        TracingSettings {
            otlp_endpoint: endpoint.map(str::to_owned),
            service_name: "moongate".into(),
            sample_ratio: ratio,
            queue_size: 4,
            batch_size: 2,
            export_timeout: Duration::from_secs(1),
        }
    }

    #[test]
    fn a_valid_parent_is_continued_and_an_invalid_one_replaced() {
        let tracer = Arc::new(Tracer::new(settings(None, 0.0)).expect("tracer"));
        let mut h = HeaderMap::new();
        h.insert(
            &TRACEPARENT,
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
                .parse()
                .expect("value"),
        );
        h.insert(&TRACESTATE, "a=b".parse().expect("value"));
        let t = tracer.begin(&h, Instant::now());
        assert_eq!(
            format!("{:032x}", t.trace_id),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(
            t.parent.map(|p| format!("{p:016x}")).as_deref(),
            Some("00f067aa0ba902b7")
        );
        assert!(t.sampled, "the caller's flag wins over sample_ratio 0");
        t.inject(&mut h);
        let sent = w3c::parse(h[&TRACEPARENT].as_bytes()).expect("valid");
        assert_eq!(
            (sent.trace_id, sent.span_id),
            (t.trace_id, t.client_span_id)
        );
        assert_eq!(h[&TRACESTATE], "a=b");

        h.insert(&TRACEPARENT, "00-zz".parse().expect("value"));
        let fresh = tracer.begin(&h, Instant::now());
        assert_ne!(fresh.trace_id, t.trace_id);
        assert_eq!(fresh.parent, None);
        assert!(!fresh.sampled, "sample_ratio 0 samples no new trace");
        fresh.inject(&mut h);
        assert!(!h.contains_key(&TRACESTATE));
    }

    #[test]
    fn peers_are_split_into_address_and_port() {
        let a = peer_attributes("127.0.0.1:8080");
        assert!(a.contains(&KeyValue::new("server.port", 8080_i64)));
        assert!(a.contains(&KeyValue::new("server.address", "127.0.0.1")));
        let u = peer_attributes("unix:/run/a.sock");
        assert!(u.contains(&KeyValue::new("server.address", "unix:/run/a.sock")));
    }
}

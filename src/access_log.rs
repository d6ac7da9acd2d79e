//! The access log: one JSON line per request, written when the response
//! has been sent (or abandoned), with the fields `access_log_fields`
//! chooses in its order (by default every [`Field`], see README). The
//! line is built here ([`line`]), keys in that order, and handed to a
//! non-blocking writer, so a slow disk or pipe never stalls a worker. A
//! reload may change the sink ("off", "stdout" or a file) and the fields.
//!
//! A request reads [`AccessLog::wants`] once when it arrives and copies
//! into its [`AccessRecord`] only what a chosen field needs (a header
//! value, say); with the log off it copies nothing.

mod field;
mod line;

pub use field::{Field, FieldSet};

use std::cell::Cell;
use std::io::{self, Write as _};
use std::net::IpAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use http::HeaderValue;
use tracing_appender::non_blocking::{NonBlocking, WorkerGuard};

use crate::config;

/// The header holding the request's id when no `request_id` policy
/// names another (the access log's `request_id`).
pub const REQUEST_ID_HEADER: http::HeaderName = http::HeaderName::from_static("x-request-id");

/// Room for a typical line, so that building it seldom reallocates.
const LINE_CAPACITY: usize = 512;

/// Where lines go: a non-blocking writer on the configured destination.
struct Sink {
    writer: NonBlocking,
    /// Flushes what is queued when the sink is dropped (a reload that
    /// changes the destination, or the end of the process).
    _guard: WorkerGuard,
    dest: config::AccessLog,
}

/// The sink and the fields lines are written with now.
struct Current {
    sink: Arc<Sink>,
    fields: Box<[Field]>,
}

#[derive(Default)]
struct Inner {
    /// The chosen fields as a [`FieldSet`]'s bits; 0 when the log is off.
    wanted: AtomicU32,
    current: ArcSwapOption<Current>,
}

/// The access log's sink and fields, shared by all threads.
#[derive(Clone, Default)]
pub struct AccessLog {
    inner: Arc<Inner>,
}

impl AccessLog {
    /// A log that is off until [`AccessLog::configure`] is called.
    pub fn new() -> Self {
        Self::default()
    }

    /// The fields a request should gather for its line; empty when the
    /// log is off.
    pub fn wants(&self) -> FieldSet {
        FieldSet::from_bits(self.inner.wanted.load(Ordering::Relaxed))
    }

    /// Whether lines are written.
    pub fn enabled(&self) -> bool {
        !self.wants().is_empty()
    }

    /// Points the log at `dest` (the open sink is kept when it is already
    /// there) and writes `fields` from now on.
    pub fn configure(&self, dest: &config::AccessLog, fields: &[Field]) -> io::Result<()> {
        let kept = self
            .inner
            .current
            .load()
            .as_ref()
            .filter(|cur| &cur.sink.dest == dest)
            .map(|cur| cur.sink.clone());
        let sink = match (kept, dest) {
            (_, config::AccessLog::Off) => {
                self.inner.wanted.store(0, Ordering::Relaxed);
                self.inner.current.store(None);
                return Ok(());
            }
            (Some(sink), _) => sink,
            (None, config::AccessLog::Stdout) => Arc::new(Sink::new(io::stdout(), dest)),
            (None, config::AccessLog::File(path)) => {
                let file = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)?;
                Arc::new(Sink::new(file, dest))
            }
        };
        self.inner.current.store(Some(Arc::new(Current {
            sink,
            fields: fields.into(),
        })));
        // A request that read the old set and writes with the new list
        // logs null for a field it did not gather.
        self.inner
            .wanted
            .store(FieldSet::of(fields).bits(), Ordering::Relaxed);
        Ok(())
    }

    /// Writes `record`'s line (when the log was on for it): `bytes` of
    /// body were sent, `complete` is false when the body was abandoned
    /// before its end.
    pub fn write(&self, record: &AccessRecord, bytes: u64, complete: bool) {
        if record.fields.is_empty() {
            return;
        }
        let current = self.inner.current.load();
        let Some(cur) = current.as_ref() else {
            return;
        };
        let mut out = Vec::with_capacity(LINE_CAPACITY);
        line::render(&mut out, &cur.fields, record, bytes, complete);
        // Lossy: when the writer's queue is full the line is dropped
        // rather than stall the worker.
        let _ = cur.sink.writer.clone().write_all(&out);
    }
}

impl Sink {
    fn new<W: io::Write + Send + 'static>(to: W, dest: &config::AccessLog) -> Sink {
        let (writer, guard) = tracing_appender::non_blocking(to);
        Sink {
            writer,
            _guard: guard,
            dest: dest.clone(),
        }
    }
}

/// The request's id as the log knows it.
#[derive(Debug, Clone)]
pub enum RequestId {
    /// The id header's value (`X-Request-Id`, or the route's `request_id`
    /// policy's header), as the request carried it to its target.
    Header(HeaderValue),
    /// `$request_id`, made by the request's Lua code (32 hex digits).
    Made(u128),
}

/// What is logged about one request; written when its body completes.
/// Optional values are `None` when the request has none (no upstream, no
/// route, …) or when the field was not chosen; either way the line says
/// null.
pub struct AccessRecord {
    /// The fields chosen when the request arrived (empty: no line).
    pub fields: FieldSet,
    /// When the request started.
    pub started: Instant,
    /// The client address.
    pub client: IpAddr,
    /// The request method.
    pub method: http::Method,
    /// The original request URI.
    pub uri: http::Uri,
    /// The request's host (empty when the request had none).
    pub host: String,
    /// The client's protocol version.
    pub version: http::Version,
    /// The response status.
    pub status: u16,
    /// The route that served it (its `name`, else `file:line`).
    pub route: Option<String>,
    /// The peer that answered.
    pub upstream_addr: Option<String>,
    /// The status the peer answered with.
    pub upstream_status: Option<u16>,
    /// Time spent connecting to the peer that answered (zero on a pooled
    /// connection).
    pub upstream_connect_time: Option<Duration>,
    /// Time to the upstream's response head.
    pub upstream_time: Option<Duration>,
    /// What the route's cache did (`X-Cache-Status`), if it has one.
    pub cache_status: Option<&'static str>,
    /// The request's id, if it has one.
    pub request_id: Option<RequestId>,
    /// The request's trace id, under `[tracing]`.
    pub trace_id: Option<opentelemetry::trace::TraceId>,
    /// `$consumer`, when an authentication policy recognised one.
    pub consumer: Option<String>,
    /// The client's `User-Agent`.
    pub user_agent: Option<HeaderValue>,
    /// The client's `Referer`.
    pub referer: Option<HeaderValue>,
    /// Bytes of the request head as received.
    pub head_received: u64,
    /// Bytes of the request body read so far (counted by the body as it
    /// is read), when it has one.
    pub body_received: Option<Rc<Cell<u64>>>,
}

//! The access log: one JSON line per request, written when the response
//! has been sent (or abandoned), with SPEC §8's fields. Lines are tracing
//! events under the target `moongate::access`; [`AccessLog::layer`] turns
//! them into JSON lines on the configured sink ("off", "stdout" or a file),
//! through a non-blocking writer so a slow disk or pipe never stalls a
//! worker. A reload may change the sink.

use std::io;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use tracing_appender::non_blocking::{NonBlocking, WorkerGuard};
use tracing_subscriber::Layer;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::registry::LookupSpan;

use crate::config;

/// The tracing target of access log events.
pub const TARGET: &str = "moongate::access";

struct Sink {
    writer: NonBlocking,
    _guard: WorkerGuard,
    dest: config::AccessLog,
}

/// The access log's switch and sink, shared by all threads.
#[derive(Clone, Default)]
pub struct AccessLog {
    on: Arc<AtomicBool>,
    sink: Arc<ArcSwapOption<Sink>>,
}

impl AccessLog {
    /// A log that is off until [`AccessLog::configure`] is called.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether lines are written.
    pub fn enabled(&self) -> bool {
        self.on.load(Ordering::Relaxed)
    }

    /// Points the log at `dest` (a no-op when it is already there).
    pub fn configure(&self, dest: &config::AccessLog) -> io::Result<()> {
        if let Some(cur) = self.sink.load().as_ref()
            && &cur.dest == dest
        {
            return Ok(());
        }
        let (writer, guard) = match dest {
            config::AccessLog::Off => {
                self.on.store(false, Ordering::Relaxed);
                self.sink.store(None);
                return Ok(());
            }
            config::AccessLog::Stdout => tracing_appender::non_blocking(io::stdout()),
            config::AccessLog::File(path) => {
                let file = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)?;
                tracing_appender::non_blocking(file)
            }
        };
        self.sink.store(Some(Arc::new(Sink {
            writer,
            _guard: guard,
            dest: dest.clone(),
        })));
        self.on.store(true, Ordering::Relaxed);
        Ok(())
    }

    /// The tracing layer that writes access events as JSON lines.
    pub fn layer<S>(&self) -> impl Layer<S> + Send + Sync + 'static
    where
        S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    {
        tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_target(false)
            .with_level(false)
            .with_current_span(false)
            .with_span_list(false)
            .with_writer(SinkWriter { log: self.clone() })
            .with_filter(Targets::new().with_target(TARGET, tracing::Level::INFO))
    }
}

/// Hands tracing the current sink.
struct SinkWriter {
    log: AccessLog,
}

impl<'a> MakeWriter<'a> for SinkWriter {
    type Writer = Box<dyn io::Write + 'a>;

    fn make_writer(&'a self) -> Self::Writer {
        match self.log.sink.load_full() {
            Some(sink) => Box::new(sink.writer.clone()),
            None => Box::new(io::sink()),
        }
    }
}

/// What is logged about one request; written when its body completes.
pub struct AccessRecord {
    /// Whether to write a line at all.
    pub enabled: bool,
    /// When the request started.
    pub started: Instant,
    /// The client address.
    pub client: IpAddr,
    /// The request method.
    pub method: http::Method,
    /// The original request URI.
    pub uri: http::Uri,
    /// The response status.
    pub status: u16,
    /// The route that served it (`file:line`).
    pub route: Option<String>,
    /// The peer that answered.
    pub upstream_addr: Option<String>,
    /// Time to the upstream's response head.
    pub upstream_time: Option<Duration>,
    /// What the route's cache did (`X-Cache-Status`), if it has one.
    pub cache_status: Option<&'static str>,
}

impl AccessRecord {
    /// Writes the line (when the log is on): `bytes` of body were sent,
    /// `complete` is false when the body was abandoned before its end.
    pub fn write(&self, bytes: u64, complete: bool) {
        if !self.enabled {
            return;
        }
        tracing::info!(
            target: TARGET,
            client = %self.client,
            method = %self.method,
            uri = self.uri.path_and_query().map_or("/", |p| p.as_str()),
            status = self.status,
            bytes,
            request_time = self.started.elapsed().as_secs_f64(),
            upstream_addr = self.upstream_addr.as_deref().unwrap_or(""),
            upstream_time = self.upstream_time.map(|d| d.as_secs_f64()),
            cache_status = self.cache_status.unwrap_or(""),
            route = self.route.as_deref().unwrap_or(""),
            aborted = !complete,
        );
    }
}

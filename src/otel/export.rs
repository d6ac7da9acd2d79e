//! The span queue and the thread that sends it: requests hand finished
//! spans to a bounded queue without waiting ([`Queue::offer`]: a full
//! queue drops them and counts the drop), and one `moongate-otlp` thread
//! takes them in batches of `batch_size` (or whatever came within a
//! second) and posts each batch, as OTLP/HTTP JSON, to the collector
//! through `opentelemetry-otlp`'s exporter, giving it `export_timeout`.
//! A collector that is down or slow only makes the queue fill and spans
//! drop; drops and failed exports are logged at most once per
//! [`LOG_EVERY`]. Our own queue rather than `opentelemetry_sdk`'s
//! `BatchSpanProcessor`: that one does not tell how many spans it dropped.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel};
use std::time::{Duration, Instant};

use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{SpanData, SpanExporter as _};

use crate::config::TracingSettings;

/// How often, at most, drops and export failures are logged.
pub const LOG_EVERY: Duration = Duration::from_secs(10);

/// How long a batch waits to fill before it is sent anyway.
const BATCH_WAIT: Duration = Duration::from_secs(1);

/// The sending side of the span queue.
pub struct Queue {
    tx: SyncSender<Vec<SpanData>>,
    dropped: Arc<AtomicU64>,
}

impl Queue {
    /// Starts the export thread for `settings` (whose `otlp_endpoint` is
    /// set). The thread ends, after sending what is queued, once the
    /// queue is dropped (a reload that changes `[tracing]`).
    pub fn start(settings: &TracingSettings, endpoint: &str) -> Result<Queue, String> {
        // One slot per request's spans (a server span and its children).
        let (tx, rx) = sync_channel(settings.queue_size);
        let dropped = Arc::new(AtomicU64::new(0));
        let sender = Sender {
            endpoint: endpoint.to_owned(),
            service_name: settings.service_name.clone(),
            batch_size: settings.batch_size,
            timeout: settings.export_timeout,
            dropped: dropped.clone(),
        };
        std::thread::Builder::new()
            .name("moongate-otlp".into())
            .spawn(move || sender.run(rx))
            .map_err(|e| format!("cannot start the OTLP export thread: {e}"))?;
        Ok(Queue { tx, dropped })
    }

    /// Queues one request's spans; drops them (counted) when the queue
    /// is full. Never waits.
    pub fn offer(&self, spans: Vec<SpanData>) {
        match self.tx.try_send(spans) {
            Ok(()) => {}
            Err(TrySendError::Full(s) | TrySendError::Disconnected(s)) => {
                self.dropped.fetch_add(s.len() as u64, Ordering::Relaxed);
            }
        }
    }

    /// Spans dropped so far because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// The export thread's side.
struct Sender {
    endpoint: String,
    service_name: String,
    batch_size: usize,
    timeout: Duration,
    dropped: Arc<AtomicU64>,
}

impl Sender {
    fn run(self, rx: Receiver<Vec<SpanData>>) {
        let rt = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => {
                tracing::error!(error = %e, "OTLP export thread: no runtime; spans are dropped");
                return;
            }
        };
        let built = {
            let _in_rt = rt.enter();
            opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_protocol(Protocol::HttpJson)
                .with_endpoint(self.endpoint.as_str())
                .with_timeout(self.timeout)
                .build()
        };
        let mut exporter = match built {
            Ok(e) => e,
            Err(e) => {
                tracing::error!(error = %e, endpoint = %self.endpoint, "OTLP exporter not built; spans are dropped");
                return;
            }
        };
        let resource = Resource::builder_empty()
            .with_service_name(self.service_name.clone())
            .build();
        exporter.set_resource(&resource);
        let mut log = Throttled::new();
        let mut batch: Vec<SpanData> = Vec::with_capacity(self.batch_size);
        let mut open = true;
        while open {
            let deadline = Instant::now() + BATCH_WAIT;
            while batch.len() < self.batch_size {
                let wait = deadline.saturating_duration_since(Instant::now());
                match rx.recv_timeout(wait) {
                    Ok(spans) => batch.extend(spans),
                    Err(RecvTimeoutError::Timeout) => break,
                    Err(RecvTimeoutError::Disconnected) => {
                        open = false;
                        break;
                    }
                }
            }
            if !batch.is_empty() {
                let spans = std::mem::replace(&mut batch, Vec::with_capacity(self.batch_size));
                let n = spans.len();
                let sent = rt.block_on(async {
                    tokio::time::timeout(self.timeout, exporter.export(spans)).await
                });
                let failure = match sent {
                    Ok(Ok(())) => None,
                    Ok(Err(e)) => Some(e.to_string()),
                    Err(_) => Some(format!("no answer within {:?}", self.timeout)),
                };
                if let Some(why) = failure {
                    log.failed(n as u64, &why, &self.endpoint);
                }
            }
            log.dropped(self.dropped.load(Ordering::Relaxed));
        }
        let _ = exporter.shutdown();
    }
}

/// Logs drops and failures at most once per [`LOG_EVERY`], with the
/// counts since the last line.
struct Throttled {
    last_failed: Option<Instant>,
    last_dropped: Option<Instant>,
    dropped_logged: u64,
    failed: u64,
}

impl Throttled {
    fn new() -> Throttled {
        Throttled {
            last_failed: None,
            last_dropped: None,
            dropped_logged: 0,
            failed: 0,
        }
    }

    fn due(last: &mut Option<Instant>) -> bool {
        let now = Instant::now();
        if last.is_some_and(|t| now.duration_since(t) < LOG_EVERY) {
            return false;
        }
        *last = Some(now);
        true
    }

    fn failed(&mut self, spans: u64, why: &str, endpoint: &str) {
        self.failed += spans;
        if Self::due(&mut self.last_failed) {
            tracing::warn!(
                endpoint,
                error = why,
                spans_lost = self.failed,
                "OTLP export failed"
            );
            self.failed = 0;
        }
    }

    fn dropped(&mut self, total: u64) {
        if total > self.dropped_logged && Self::due(&mut self.last_dropped) {
            tracing::warn!(
                dropped = total - self.dropped_logged,
                dropped_total = total,
                "OTLP span queue full: spans dropped (the collector is down or slow)"
            );
            self.dropped_logged = total;
        }
    }
}

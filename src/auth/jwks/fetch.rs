//! Getting a JWKS document and keeping a [`JwksCache`] fresh: a file read,
//! or an HTTP GET through moongate's own upstream client (HTTP/1.1, TLS
//! over a rustls client configuration), bounded by a timeout and a body
//! size; and the refresher, one `moongate-jwks` thread per cache that
//! fetches at once, every period, early on a granted request, sooner with
//! backoff after a failure, and ends when the cache is dropped.

use std::path::PathBuf;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use http::header::{ACCEPT, CONNECTION, HOST, HeaderValue, USER_AGENT};
use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use tokio::sync::Notify;

use super::JwksCache;
use crate::config::PeerAddr;
use crate::h1_framing::Decoder;
use crate::tls_client::{TlsClients, Verify};
use crate::upstream::connect::connect;
use crate::upstream::tls::PeerTls;

/// Largest JWKS document read (real ones are a few kB).
const MAX_BODY: usize = 1 << 20;

/// The first retry after a failed fetch; each further failure doubles it,
/// up to the refresh period.
const RETRY_FIRST: Duration = Duration::from_secs(1);

/// While fetches keep failing, the failure is logged at most this often.
const LOG_EVERY: Duration = Duration::from_secs(60);

/// Where a key set comes from.
#[derive(Clone)]
pub enum JwksSource {
    /// A local file, re-read each period.
    File(PathBuf),
    /// An `http://` or `https://` URL; `tls` is required for `https://`.
    Url {
        /// The document's URL.
        uri: http::Uri,
        /// TLS to the server (its name and trust roots), for `https://`.
        tls: Option<Arc<PeerTls>>,
    },
}

impl JwksSource {
    /// The source for `url`, checked: `http://` or `https://`, a host, no
    /// user info, a port other than 0. An `https://` URL is fetched over
    /// `tls` (a `TlsClients::config`), or without it over the system's CA
    /// bundle, checking the host's name. The error reads as a config error
    /// once the caller puts file:line before it.
    pub fn url(url: &str, tls: Option<Arc<ClientConfig>>) -> Result<JwksSource, String> {
        let uri: http::Uri = url
            .parse()
            .map_err(|e| format!("\"{url}\" is not a valid URL: {e}"))?;
        let https = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => {
                return Err(format!(
                    "\"{url}\": only http:// and https:// URLs are supported"
                ));
            }
        };
        let authority = uri
            .authority()
            .ok_or_else(|| format!("\"{url}\": the URL has no host"))?;
        if authority.as_str().contains('@') {
            return Err(format!("\"{url}\": user info in the URL is not supported"));
        }
        if bare_host(authority).is_empty() {
            return Err(format!("\"{url}\": the URL has no host"));
        }
        // `Authority::port` hides a port it cannot read (`:99999`), which
        // would quietly become the scheme's default.
        let port = authority.as_str()[authority.host().len()..].trim_start_matches(':');
        if !port.is_empty() && port.parse::<u16>().is_err() {
            return Err(format!("\"{url}\": {port} is not a port"));
        }
        if authority.port_u16() == Some(0) {
            return Err(format!("\"{url}\": port 0 is not a port to fetch from"));
        }
        let tls = if https {
            let config = match tls {
                Some(c) => c,
                None => TlsClients::new(None)
                    .config(Verify::Chain { name: true })
                    .map_err(|e| format!("\"{url}\": {e}"))?,
            };
            let name = ServerName::try_from(bare_host(authority).to_string())
                .map_err(|e| format!("\"{url}\": the host is not a TLS server name: {e}"))?;
            Some(Arc::new(PeerTls::from_config(config, Some(name))))
        } else {
            None
        };
        Ok(JwksSource::Url { uri, tls })
    }
}

impl std::fmt::Display for JwksSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            JwksSource::File(path) => write!(f, "{}", path.display()),
            JwksSource::Url { uri, .. } => write!(f, "{uri}"),
        }
    }
}

/// The host without an IPv6 literal's brackets.
fn bare_host(authority: &http::uri::Authority) -> &str {
    let host = authority.host();
    host.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host)
}

/// The document's bytes, or why it could not be had within `timeout`.
pub async fn fetch(source: &JwksSource, timeout: Duration) -> Result<Vec<u8>, String> {
    match source {
        JwksSource::File(path) => tokio::fs::read(path)
            .await
            .map_err(|e| format!("cannot read {}: {e}", path.display())),
        JwksSource::Url { uri, tls } => {
            match tokio::time::timeout(timeout, get(uri, tls.as_deref(), timeout)).await {
                Err(_) => Err(format!("GET {uri}: timed out after {timeout:?}")),
                Ok(r) => r.map_err(|e| format!("GET {uri}: {e}")),
            }
        }
    }
}

async fn get(uri: &http::Uri, tls: Option<&PeerTls>, timeout: Duration) -> Result<Vec<u8>, String> {
    let (default_port, tls) = match (uri.scheme_str(), tls) {
        (Some("http"), _) => (80, None),
        (Some("https"), Some(tls)) => (443, Some(tls)),
        (Some("https"), None) => return Err("https:// needs TLS settings".to_string()),
        _ => return Err("only http:// and https:// URLs".to_string()),
    };
    let authority = uri.authority().ok_or("the URL has no host")?;
    let port = authority.port_u16().unwrap_or(default_port);
    let mut head = http::Request::get(uri.path_and_query().map_or("/", |p| p.as_str()))
        .body(())
        .map_err(|e| e.to_string())?
        .into_parts()
        .0;
    let host = HeaderValue::from_str(authority.as_str()).map_err(|e| e.to_string())?;
    head.headers.insert(HOST, host);
    head.headers
        .insert(ACCEPT, HeaderValue::from_static("application/json"));
    head.headers
        .insert(USER_AGENT, HeaderValue::from_static("moongate"));
    // One request per connection: nothing is pooled between fetches.
    head.headers
        .insert(CONNECTION, HeaderValue::from_static("close"));
    let host = bare_host(authority);
    let addr = tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| format!("cannot resolve {host}: {e}"))?
        .next()
        .ok_or_else(|| format!("{host} has no address"))?;
    let mut conn = connect(&PeerAddr::Tcp(addr), timeout, timeout, tls)
        .await
        .map_err(|e| e.to_string())?;
    conn.send_full(&head, &[])
        .await
        .map_err(|e| e.to_string())?;
    let resp = conn
        .read_head(&head.method, timeout)
        .await
        .map_err(|e| e.to_string())?;
    if !resp.status.is_success() {
        return Err(format!("status {}", resp.status.as_u16()));
    }
    let mut decoder = Decoder::new(resp.framing);
    let mut data = Vec::new();
    while let Some(piece) = std::future::poll_fn(|cx| conn.poll_body(cx, &mut decoder)).await {
        data.extend_from_slice(&piece.map_err(|e| e.to_string())?);
        if data.len() > MAX_BODY {
            return Err(format!("document larger than {MAX_BODY} bytes"));
        }
    }
    Ok(data)
}

/// Checks `url` (see [`JwksSource::url`]) and starts its refresher for
/// `cache` (see [`start_refresher`]). The error reads as a config error once the
/// caller puts file:line before it.
pub fn spawn_refresher(
    url: &str,
    cache: &Arc<JwksCache>,
    every: Duration,
    timeout: Duration,
    tls: Option<Arc<ClientConfig>>,
) -> Result<(), String> {
    start_refresher(JwksSource::url(url, tls)?, cache, every, timeout).map(drop)
}

/// Starts the `moongate-jwks` thread that keeps `cache` filled from
/// `source`: a fetch at once, then every `every`, and at once whenever
/// [`JwksCache::request_refresh`] grants one. Each fetch is bounded by
/// `timeout`. A failed fetch or bad document keeps the last good set, is
/// logged (at most once per [`LOG_EVERY`] while it keeps failing) and is
/// retried after 1 s, 2 s, 4 s ... up to `every`. The thread holds only a
/// `Weak` to the cache between fetches and ends as soon as the cache is
/// dropped (a reload's old generation). A period under 1 s is taken as
/// 1 s. The handle is for tests; dropping it detaches the thread.
pub fn start_refresher(
    source: JwksSource,
    cache: &Arc<JwksCache>,
    every: Duration,
    timeout: Duration,
) -> Result<std::thread::JoinHandle<()>, String> {
    // The upstream client's futures are not `Send`: the refresher runs on
    // a current-thread runtime of its own, off the workers.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the JWKS refresher for {source}: {e}"))?;
    let weak = Arc::downgrade(cache);
    let wake = cache.wake.clone();
    let every = every.max(Duration::from_secs(1));
    std::thread::Builder::new()
        .name("moongate-jwks".into())
        .spawn(move || rt.block_on(refresh(weak, wake, source, every, timeout)))
        .map_err(|e| format!("cannot start the JWKS refresher thread: {e}"))
}

/// The wait before the next attempt after `failures` failures in a row.
fn retry_delay(failures: u32, every: Duration) -> Duration {
    RETRY_FIRST
        .saturating_mul(1 << failures.saturating_sub(1).min(20))
        .min(every)
}

async fn refresh(
    weak: Weak<JwksCache>,
    wake: Arc<Notify>,
    source: JwksSource,
    every: Duration,
    timeout: Duration,
) {
    let mut log = FetchLog::default();
    let mut delay = Duration::ZERO;
    loop {
        if !delay.is_zero() {
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                // A granted early refresh, or the cache dropped.
                () = wake.notified() => {}
            }
        }
        let Some(cache) = weak.upgrade() else { return };
        cache.begin_fetch();
        drop(cache);
        let mut again = false;
        let got = {
            let mut fetching = std::pin::pin!(fetch(&source, timeout));
            loop {
                tokio::select! {
                    got = &mut fetching => break got,
                    () = wake.notified() => {
                        if weak.strong_count() == 0 {
                            return;
                        }
                        // Granted to a request that saw this attempt
                        // begin: it waits for the next one.
                        again = true;
                    }
                }
            }
        };
        let Some(cache) = weak.upgrade() else { return };
        let stored = got.and_then(|bytes| cache.refresh_from(&bytes));
        let loaded = cache.loaded();
        cache.end_fetch();
        drop(cache);
        delay = match stored {
            Ok(skipped) => {
                log.success(&source, skipped);
                every
            }
            Err(why) => {
                log.failure(&source, &why, loaded);
                retry_delay(log.failures, every)
            }
        };
        if again {
            delay = Duration::ZERO;
        }
    }
}

/// What the refresher has said, so a source that keeps failing, or keeps
/// serving a key we skip, is not logged on every attempt.
#[derive(Default)]
struct FetchLog {
    /// Failed attempts in a row.
    failures: u32,
    /// When a failure was last logged.
    logged: Option<Instant>,
    /// The skipped-key notes last logged.
    skipped: Vec<String>,
}

impl FetchLog {
    fn failure(&mut self, source: &JwksSource, why: &str, loaded: bool) {
        self.failures = self.failures.saturating_add(1);
        if self.logged.is_some_and(|at| at.elapsed() < LOG_EVERY) {
            return;
        }
        self.logged = Some(Instant::now());
        let keeping = if loaded {
            "the last good key set stays in use"
        } else {
            "no key set yet: tokens that need one are refused"
        };
        tracing::warn!(jwks = %source, error = %why, failures = self.failures,
            "cannot refresh the JWKS; {keeping}");
    }

    fn success(&mut self, source: &JwksSource, skipped: Vec<String>) {
        if self.failures > 0 {
            tracing::info!(jwks = %source, failures = self.failures,
                "JWKS fetched again after failures");
        }
        self.failures = 0;
        self.logged = None;
        if skipped != self.skipped {
            for note in &skipped {
                tracing::warn!(jwks = %source, key = %note, "JWKS key skipped");
            }
            self.skipped = skipped;
        }
    }
}

#[cfg(test)]
#[path = "fetch/tests.rs"]
mod tests;

//! Getting a JWKS document: a file read, or an HTTP GET through moongate's
//! own upstream client (HTTP/1.1, TLS when the caller gives a [`PeerTls`]),
//! bounded by a timeout; and the background loop that refreshes a
//! [`JwksCache`] every period and on early requests.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use http::header::{ACCEPT, HOST, HeaderValue};

use super::JwksCache;
use crate::config::PeerAddr;
use crate::h1_framing::Decoder;
use crate::upstream::connect::connect;
use crate::upstream::tls::PeerTls;

/// Largest JWKS document read (real ones are a few kB).
const MAX_BODY: usize = 1 << 20;

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
    let addr = tokio::net::lookup_host((authority.host(), port))
        .await
        .map_err(|e| format!("cannot resolve {}: {e}", authority.host()))?
        .next()
        .ok_or_else(|| format!("{} has no address", authority.host()))?;
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

/// Refreshes `cache` from `source` every `every` and whenever an early
/// refresh is granted, forever (the owner aborts the task on reload). A
/// failed fetch or a bad document keeps the last good set; `on_error`
/// hears why (for the log), as do skipped keys. The future is not `Send`
/// (moongate's upstream client lives on current-thread runtimes): spawn it
/// with `spawn_local` on a worker or the control thread.
pub async fn refresh_loop(
    cache: Arc<JwksCache>,
    source: JwksSource,
    every: Duration,
    timeout: Duration,
    on_error: impl Fn(String),
) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            () = cache.refresh_requested() => {}
        }
        match fetch(&source, timeout).await {
            Err(e) => on_error(e),
            Ok(bytes) => match cache.refresh_from(&bytes) {
                Err(e) => on_error(e),
                Ok(skipped) => skipped.into_iter().for_each(&on_error),
            },
        }
    }
}

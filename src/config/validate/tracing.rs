//! `[tracing]` → [`TracingSettings`]: the collector's URL (an `http://`
//! OTLP/HTTP traces endpoint: the exporter speaks plain HTTP only), the
//! sampling ratio and the export queue's bounds. Nothing is connected to
//! here: a collector that is down only makes spans drop at run time.

use std::time::Duration;

use toml::Spanned;

use crate::config::error::{ConfigError, Source};
use crate::config::file::RawFile;
use crate::config::model::TracingSettings;

/// `queue_size` when not set: requests whose spans may wait for export.
pub(crate) const DEFAULT_QUEUE_SIZE: usize = 2048;
/// `batch_size` when not set.
pub(crate) const DEFAULT_BATCH_SIZE: usize = 512;
/// `export_timeout` when not set.
pub(crate) const DEFAULT_EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// The one `[tracing]` table of conf.d, if any file has it.
pub(super) fn settings(
    parsed: &[(&Source<'_>, &RawFile)],
) -> Result<Option<TracingSettings>, ConfigError> {
    let Some((src, def)) = super::only_one(parsed, "[tracing]", |raw| raw.tracing.as_ref())? else {
        return Ok(None);
    };
    let raw = def.get_ref();
    let otlp_endpoint = match &raw.otlp_endpoint {
        None => None,
        Some(url) => Some(endpoint(src, url)?),
    };
    let service_name = match &raw.service_name {
        None => "moongate".to_owned(),
        Some(name) if name.get_ref().trim().is_empty() => {
            return Err(src.err(name.span(), "`service_name` in [tracing] is empty"));
        }
        Some(name) => name.get_ref().trim().to_owned(),
    };
    let sample_ratio = match &raw.sample_ratio {
        None => 1.0,
        Some(r) if (0.0..=1.0).contains(r.get_ref()) => *r.get_ref(),
        Some(r) => {
            let message = format!(
                "`sample_ratio` in [tracing] is {}; it must be from 0 (no new trace sampled) to 1 (every one)",
                r.get_ref()
            );
            return Err(src.err(r.span(), message));
        }
    };
    let queue_size = count(
        src,
        raw.queue_size.as_ref(),
        "queue_size",
        DEFAULT_QUEUE_SIZE,
    )?;
    let batch_size = count(
        src,
        raw.batch_size.as_ref(),
        "batch_size",
        DEFAULT_BATCH_SIZE,
    )?;
    let export_timeout = match &raw.export_timeout {
        None => DEFAULT_EXPORT_TIMEOUT,
        Some(t) if t.get_ref().0.is_zero() => {
            return Err(src.err(
                t.span(),
                "`export_timeout` in [tracing] must be more than 0",
            ));
        }
        Some(t) => t.get_ref().0,
    };
    Ok(Some(TracingSettings {
        otlp_endpoint,
        service_name,
        sample_ratio,
        queue_size,
        batch_size,
        export_timeout,
    }))
}

/// `otlp_endpoint`: an `http://host[:port]/path` URL, used as written
/// (the OTLP/HTTP traces path is usually `/v1/traces`).
fn endpoint(src: &Source<'_>, url: &Spanned<String>) -> Result<String, ConfigError> {
    let text = url.get_ref().trim();
    let example = "write it like \"http://127.0.0.1:4318/v1/traces\"";
    let parsed = text.parse::<http::Uri>().ok();
    let Some(uri) = parsed.filter(|u| u.host().is_some_and(|h| !h.is_empty())) else {
        let message = format!("`otlp_endpoint` \"{text}\" in [tracing] is not a URL; {example}");
        return Err(src.err(url.span(), message));
    };
    if uri.scheme_str() != Some("http") {
        let message = format!(
            "`otlp_endpoint` \"{text}\" in [tracing]: only plain http:// collectors are supported (no TLS); {example}"
        );
        return Err(src.err(url.span(), message));
    }
    Ok(text.to_owned())
}

/// A positive count (`queue_size`, `batch_size`).
fn count(
    src: &Source<'_>,
    value: Option<&Spanned<i64>>,
    key: &str,
    default: usize,
) -> Result<usize, ConfigError> {
    let Some(v) = value else {
        return Ok(default);
    };
    match usize::try_from(*v.get_ref()) {
        Ok(n) if n > 0 && n <= 1 << 20 => Ok(n),
        _ => {
            let message = format!(
                "`{key}` in [tracing] is {}; it must be from 1 to 1048576",
                v.get_ref()
            );
            Err(src.err(v.span(), message))
        }
    }
}

//! `compress = { ... }` on `[server]` or a `[[route]]`, as written.

use serde::Deserialize;
use toml::Spanned;

use crate::config::units::Size;

/// `compress = { enabled, types, min_length, level, algorithms }`: every
/// key optional; a route's keys override `[server]`'s one by one.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCompress {
    /// Whether responses are compressed (default true once the table is given).
    pub enabled: Option<Spanned<bool>>,
    /// Content types compressed: `"text/html"`, `"text/*"` or `"*"`.
    pub types: Option<Spanned<Vec<Spanned<String>>>>,
    /// Smallest known length compressed: bytes, or a size like "1KiB".
    pub min_length: Option<Spanned<Size>>,
    /// One level for every coding, or `{ gzip = 6, br = 4, zstd = 3 }`.
    pub level: Option<Spanned<toml::Value>>,
    /// Codings offered, in preference order for equal q-values.
    pub algorithms: Option<Spanned<Vec<Spanned<String>>>>,
}

//! Response compression (`compress = {...}` on `[server]` or a route; nginx's
//! `gzip`, Kong/APISIX `response-compression`): one filter over the body of
//! every response kind a route gives (upstream, cache, static, Lua content),
//! applied last, after the Lua header and body filters.
//!
//! It owns [`Settings`] (validated in `config/validate/compress.rs`), the
//! choice of coding (`negotiate`), when a response is left alone, the
//! headers a compressed response gets, and the streaming encoder (`stream`).
//!
//! The cache stores the identity body and this filter compresses on the way
//! out, a HIT exactly like a MISS: one stored variant serves every client
//! whatever its `Accept-Encoding` (no variant per coding to fill, purge and
//! weigh), and a HIT is compressed by the very code a MISS is. The cost is
//! compressing each HIT again; the identity bytes also let the cache answer
//! Range requests from the stored entry.

mod negotiate;
mod stream;

pub(crate) use negotiate::quality;

use http::header::{self, HeaderMap, HeaderValue};
use http::request::Parts;
use http::{Method, Response, StatusCode};
use http_body::Body;

use crate::body::{Kind, ResponseBody};

/// A content coding moongate compresses responses in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    /// gzip (RFC 1952).
    Gzip,
    /// Brotli (RFC 7932).
    Br,
    /// Zstandard (RFC 8878).
    Zstd,
}

impl Algorithm {
    /// The `Content-Encoding` token, also the name in `algorithms` and
    /// `level`.
    pub fn token(self) -> &'static str {
        match self {
            Algorithm::Gzip => "gzip",
            Algorithm::Br => "br",
            Algorithm::Zstd => "zstd",
        }
    }

    /// The coding named `name` in the configuration.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "gzip" => Some(Algorithm::Gzip),
            "br" => Some(Algorithm::Br),
            "zstd" => Some(Algorithm::Zstd),
            _ => None,
        }
    }

    /// The levels the coding accepts.
    pub fn levels(self) -> std::ops::RangeInclusive<i64> {
        match self {
            Algorithm::Gzip => 1..=9,
            Algorithm::Br => 0..=11,
            Algorithm::Zstd => 1..=22,
        }
    }

    /// The level used when `level` does not name one: zlib's own default
    /// for gzip, brotli 4 (near gzip's speed, a better ratio), zstd's
    /// default 3.
    pub fn default_level(self) -> i32 {
        match self {
            Algorithm::Gzip => 6,
            Algorithm::Br => 4,
            Algorithm::Zstd => 3,
        }
    }

    fn index(self) -> usize {
        match self {
            Algorithm::Gzip => 0,
            Algorithm::Br => 1,
            Algorithm::Zstd => 2,
        }
    }
}

/// The content types compressed when `types` is not given: nginx's
/// `text/html` plus the usual text formats.
pub const DEFAULT_TYPES: &[&str] = &[
    "text/html",
    "text/plain",
    "text/css",
    "text/xml",
    "text/javascript",
    "text/markdown",
    "text/csv",
    "text/event-stream",
    "application/javascript",
    "application/json",
    "application/xml",
    "application/rss+xml",
    "application/atom+xml",
    "application/problem+json",
    "application/manifest+json",
    "application/ld+json",
    "image/svg+xml",
];

/// nginx's `gzip_min_length` is 20; 1024 is where compression pays for
/// its framing and CPU on a typical response.
pub const DEFAULT_MIN_LENGTH: u64 = 1024;

/// The default preference among codings a client rates equally.
pub const DEFAULT_ALGORITHMS: [Algorithm; 3] = [Algorithm::Zstd, Algorithm::Br, Algorithm::Gzip];

/// A route's compression, `[server]`'s keys under the route's own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Content types compressed (lowercase, no parameters): exact, `type/*`
    /// or `*`.
    pub types: Vec<String>,
    /// Responses whose length is known and smaller are sent as they are.
    pub min_length: u64,
    /// Codings offered, in preference order for equal q-values.
    pub algorithms: Vec<Algorithm>,
    /// Level per coding (indexed gzip, br, zstd).
    pub levels: [i32; 3],
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            types: DEFAULT_TYPES.iter().map(|t| (*t).to_owned()).collect(),
            min_length: DEFAULT_MIN_LENGTH,
            algorithms: DEFAULT_ALGORITHMS.to_vec(),
            levels: [Algorithm::Gzip, Algorithm::Br, Algorithm::Zstd].map(Algorithm::default_level),
        }
    }
}

/// What the request allows, decided once its head is final (after the
/// Lua rewrite and access handlers): `None` when the response is left
/// alone whatever it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Offer {
    /// The coding to send, or `None` for identity (the response still gets
    /// `Vary: Accept-Encoding` when it would have been compressed).
    pub coding: Option<Algorithm>,
}

impl Settings {
    /// The request side: HEAD, a Range request and a protocol upgrade are
    /// left alone; otherwise the client's choice of coding.
    pub fn offer(&self, parts: &Parts) -> Option<Offer> {
        let h = &parts.headers;
        if parts.method == Method::HEAD
            || h.contains_key(header::RANGE)
            || h.contains_key(header::UPGRADE)
        {
            return None;
        }
        Some(Offer {
            coding: negotiate::choose(h, &self.algorithms),
        })
    }

    /// Whether `content_type` (a `Content-Type` value) is one of `types`.
    fn matches_type(&self, content_type: &str) -> bool {
        let essence = content_type.split(';').next().unwrap_or_default().trim();
        let (major, _) = essence.split_once('/').unwrap_or((essence, ""));
        self.types.iter().any(|t| {
            t == "*"
                || t.eq_ignore_ascii_case(essence)
                || t.strip_suffix("/*")
                    .is_some_and(|m| m.eq_ignore_ascii_case(major))
        })
    }

    /// The response side: compresses `resp` in the offered coding when it
    /// qualifies, and marks it `Vary: Accept-Encoding` when it qualifies
    /// whatever the client asked (a shared cache downstream must not hand
    /// one client's coding to another).
    pub fn apply(&self, offer: Offer, resp: &mut Response<ResponseBody>) {
        if !self.qualifies(resp) {
            return;
        }
        let headers = resp.headers_mut();
        add_vary(headers);
        let Some(alg) = offer.coding else { return };
        headers.insert(
            header::CONTENT_ENCODING,
            HeaderValue::from_static(alg.token()),
        );
        headers.remove(header::CONTENT_LENGTH);
        // Byte offsets into the encoded body would not be stable.
        headers.remove(header::ACCEPT_RANGES);
        // The encoded bytes are equivalent to the origin's, not identical
        // to them (nginx does the same).
        if let Some(tag) = headers.get(header::ETAG)
            && !tag.as_bytes().starts_with(b"W/")
        {
            let mut weak = Vec::with_capacity(tag.len() + 2);
            weak.extend_from_slice(b"W/");
            weak.extend_from_slice(tag.as_bytes());
            if let Ok(v) = HeaderValue::from_bytes(&weak) {
                headers.insert(header::ETAG, v);
            }
        }
        let level = self.levels[alg.index()];
        let body = std::mem::replace(resp.body_mut(), ResponseBody::empty());
        let compressed = stream::Compressed::new(body, alg, level);
        *resp.body_mut() = ResponseBody::from_kind(Kind::Stream(Box::pin(compressed)));
    }

    /// Whether the response is one compression applies to: a 200-class
    /// answer with a body (not 204/206), or a 4xx/5xx one; not encoded
    /// already, not `no-transform`, of a listed type, and not known to be
    /// shorter than `min_length`.
    fn qualifies(&self, resp: &Response<ResponseBody>) -> bool {
        let status = resp.status();
        if status.is_informational()
            || matches!(
                status,
                StatusCode::NO_CONTENT | StatusCode::PARTIAL_CONTENT | StatusCode::NOT_MODIFIED
            )
            || resp
                .extensions()
                .get::<crate::error_page::OwnError>()
                .is_some()
        {
            return false;
        }
        let h = resp.headers();
        if h.get(header::CONTENT_ENCODING)
            .is_some_and(|v| !v.as_bytes().eq_ignore_ascii_case(b"identity"))
            || no_transform(h)
        {
            return false;
        }
        let Some(ct) = h.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
            return false;
        };
        if !self.matches_type(ct) {
            return false;
        }
        // A length stated by the header, or known from the body; a body of
        // unknown length (chunked, streamed) is compressed.
        let length = h
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
            .or_else(|| resp.body().size_hint().exact());
        length.is_none_or(|n| n >= self.min_length)
    }
}

/// `Cache-Control: no-transform` (RFC 9111 §5.2.2.6): no coding may be
/// applied on the way.
fn no_transform(h: &HeaderMap) -> bool {
    h.get_all(header::CACHE_CONTROL).iter().any(|v| {
        v.to_str().is_ok_and(|s| {
            s.split(',')
                .any(|d| d.trim().eq_ignore_ascii_case("no-transform"))
        })
    })
}

/// Adds `Accept-Encoding` to `Vary`, into the one line there is (as one
/// list), unless it is named already or the response varies on `*`.
fn add_vary(h: &mut HeaderMap) {
    const AE: &str = "Accept-Encoding";
    let mut lines = 0;
    for v in h.get_all(header::VARY) {
        lines += 1;
        let named = v.to_str().is_ok_and(|s| {
            s.split(',')
                .map(str::trim)
                .any(|n| n == "*" || n.eq_ignore_ascii_case(AE))
        });
        if named {
            return;
        }
    }
    let merged = match (lines, h.get(header::VARY)) {
        (1, Some(one)) => {
            let mut value = Vec::with_capacity(one.len() + AE.len() + 2);
            value.extend_from_slice(one.as_bytes());
            value.extend_from_slice(b", ");
            value.extend_from_slice(AE.as_bytes());
            HeaderValue::from_bytes(&value).ok()
        }
        _ => None,
    };
    match merged {
        Some(v) => {
            h.insert(header::VARY, v);
        }
        None => {
            h.append(header::VARY, HeaderValue::from_static(AE));
        }
    }
}

#[cfg(test)]
mod tests;

//! Static files for routes with a `root` (SPEC §3): maps a request path to a
//! file under the root and answers GET/HEAD with ETag, Last-Modified,
//! conditional requests, a single byte range, br/gzip (precompressed
//! siblings or on the fly) and `expires`. Bodies stream from disk.
//!
//! It owns path safety (no `..`, no encoded separators, nothing outside the
//! canonical root) and HTTP caching semantics of files. It knows nothing of
//! routes, listeners or error pages: error statuses come back with an empty
//! body for the caller to dress.
//!
//! Layout: `path` (request path → opened file), [`crate::conditional`]
//! (validators, preconditions, Range; shared with the cache), `encoding` (content type, Accept-Encoding),
//! `body` ([`StaticBody`]); this file puts them in order.

mod body;
mod encoding;
mod path;

use std::io::{Seek, SeekFrom};
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_compression::Level;
use async_compression::tokio::bufread::{BrotliEncoder, GzipEncoder};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Response, StatusCode};
use tokio::io::{AsyncReadExt, BufReader};

use crate::conditional::{self, EntityTag, Precondition, RangeDecision, Validators};
pub use body::StaticBody;
use encoding::Encoding;
use path::{Reject, Target};

/// Read-buffer size for the on-the-fly compressors.
const COMPRESS_BUF: usize = 64 * 1024;

/// Brotli quality for on-the-fly compression: near gzip's speed with a
/// better ratio. Precompressed `.br` siblings are where quality 11 belongs.
const BROTLI_ON_THE_FLY: Level = Level::Precise(4);

/// How one static route serves files; built from a route's `root`/`expires`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticOptions {
    /// The directory files are served from. Nothing outside it (after
    /// resolving symlinks) is ever served.
    pub root: PathBuf,
    /// `expires`: adds `Cache-Control: max-age=N` and `Expires` to 200, 206
    /// and 304 answers. `None` sends neither.
    pub expires: Option<Duration>,
    /// Names tried, in order, when the path is a directory. There are no
    /// directory listings: a directory without one of them is a 404.
    pub index: Vec<String>,
}

impl StaticOptions {
    /// Options for `root` with no `expires` and the index `index.html`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            expires: None,
            index: vec!["index.html".to_owned()],
        }
    }
}

/// Answers a GET or HEAD for `rel_path` under `opts.root`.
///
/// `rel_path` is the request path with the route's prefix removed, still
/// percent-encoded, query already stripped ("css/app.css" or "/css/app.css").
///
/// Statuses: 200, 206, 304, 400 (malformed encoding, NUL, backslash or
/// encoded `/`), 403 (outside the root, unreadable, not a regular file),
/// 404 (missing, a `..` segment, a directory without index), 405 (not
/// GET/HEAD, with `Allow`), 412 (If-Match / If-Unmodified-Since), 416, 500.
/// Error statuses have an empty body. HEAD gets GET's headers and no body,
/// except that a Range is ignored for HEAD (RFC 9110 §14.2: range handling
/// is defined for GET only).
pub async fn serve(
    opts: &StaticOptions,
    rel_path: &str,
    method: &Method,
    headers: &HeaderMap,
) -> Response<StaticBody> {
    let is_get = method == Method::GET;
    if !is_get && method != Method::HEAD {
        let mut response = status(StatusCode::METHOD_NOT_ALLOWED);
        put(response.headers_mut(), header::ALLOW, "GET, HEAD");
        return response;
    }
    let rel = match path::decode(rel_path) {
        Ok(rel) => rel,
        Err(reject) => return rejected(reject),
    };
    // A ranged GET is answered in identity bytes so offsets mean one thing.
    let ranged = is_get && headers.contains_key(header::RANGE);
    let accepted = if ranged {
        Vec::new()
    } else {
        encoding::accepted(headers)
    };
    let (root, index) = (opts.root.clone(), opts.index.clone());
    // Every filesystem step of the lookup in one trip to the blocking pool.
    let found = tokio::task::spawn_blocking(move || find(&root, &index, &rel, &accepted)).await;
    match found {
        Ok(Ok(found)) => respond(opts, found, is_get, headers),
        Ok(Err(reject)) => rejected(reject),
        Err(_) => status(StatusCode::INTERNAL_SERVER_ERROR),
    }
}

/// The file to answer with, and how it will be encoded.
struct Found {
    target: Target,
    content_type: String,
    compressible: bool,
    coding: Coding,
}

enum Coding {
    Identity,
    /// A `file.br` / `file.gz` sibling, no older than the file.
    Precompressed(Encoding, Box<Target>),
    OnTheFly(Encoding),
}

/// Blocking: locates the file and picks its encoding (`accepted` best first).
fn find(
    root: &std::path::Path,
    index: &[String],
    rel: &path::RelPath,
    accepted: &[Encoding],
) -> Result<Found, Reject> {
    let root = path::canonical_root(root)?;
    let target = path::locate(&root, index, rel)?;
    let content_type = encoding::content_type(&target.path);
    let compressible = encoding::compressible(&content_type);
    let mut coding = Coding::Identity;
    if compressible
        && target.meta.len() >= encoding::MIN_COMPRESS_LEN
        && let Some(&best) = accepted.first()
    {
        // Any precompressed sibling the client accepts beats compressing
        // now, even in a coding it likes a little less.
        coding = accepted
            .iter()
            .find_map(|&enc| {
                sibling(&root, &target, enc).map(|s| Coding::Precompressed(enc, Box::new(s)))
            })
            .unwrap_or(Coding::OnTheFly(best));
    }
    Ok(Found {
        target,
        content_type,
        compressible,
        coding,
    })
}

/// `file.br` / `file.gz` inside the root, unless older than the file (stale).
fn sibling(root: &std::path::Path, target: &Target, enc: Encoding) -> Option<Target> {
    let mut name = target.path.clone().into_os_string();
    name.push(".");
    name.push(enc.suffix());
    let sib = path::open_inside(root, &PathBuf::from(name)).ok()?;
    let fresh = sib.meta.modified().ok()? >= target.meta.modified().ok()?;
    fresh.then_some(sib)
}

fn respond(
    opts: &StaticOptions,
    found: Found,
    is_get: bool,
    request: &HeaderMap,
) -> Response<StaticBody> {
    let Found {
        target,
        content_type,
        compressible,
        coding,
    } = found;
    let len = target.meta.len();
    let mtime = unix_secs(target.meta.modified().ok());
    let etag = match &coding {
        Coding::Identity => EntityTag {
            tag: format!("{mtime:x}-{len:x}"),
            weak: false,
        },
        // The sibling's own bytes: its stat makes the tag, as nginx's
        // gzip_static does; the suffix keeps encodings apart.
        Coding::Precompressed(enc, sib) => EntityTag {
            tag: format!(
                "{:x}-{:x}-{}",
                unix_secs(sib.meta.modified().ok()),
                sib.meta.len(),
                enc.suffix()
            ),
            weak: false,
        },
        // Compressor output is equivalent, not byte-for-byte promised: weak.
        Coding::OnTheFly(enc) => EntityTag {
            tag: format!("{mtime:x}-{len:x}-{}", enc.suffix()),
            weak: true,
        },
    };

    let mut common = HeaderMap::new();
    put(&mut common, header::ETAG, &etag.header());
    let validators = Validators {
        etag: Some(etag),
        last_modified: Some(mtime),
    };
    put(&mut common, header::LAST_MODIFIED, &http_date(mtime));
    if compressible {
        put(&mut common, header::VARY, "Accept-Encoding");
    }
    if let Some(ttl) = opts.expires {
        put(
            &mut common,
            header::CACHE_CONTROL,
            &format!("max-age={}", ttl.as_secs()),
        );
        let at = unix_secs(Some(SystemTime::now())).saturating_add(ttl.as_secs());
        put(&mut common, header::EXPIRES, &http_date(at));
    }

    match conditional::evaluate(request, &validators) {
        Precondition::Proceed => {}
        Precondition::NotModified => {
            return with_headers(StatusCode::NOT_MODIFIED, common, StaticBody::empty());
        }
        Precondition::Failed => return status(StatusCode::PRECONDITION_FAILED),
    }
    put(&mut common, header::CONTENT_TYPE, &content_type);
    match coding {
        Coding::Identity => identity(target.file, len, common, is_get, request, &validators),
        Coding::Precompressed(enc, sib) => {
            let sib_len = sib.meta.len();
            encoded(enc, sib.file, Some(sib_len), common, is_get)
        }
        Coding::OnTheFly(enc) => encoded(enc, target.file, None, common, is_get),
    }
}

/// 200, 206 or 416 in identity bytes.
fn identity(
    mut file: std::fs::File,
    len: u64,
    mut headers: HeaderMap,
    is_get: bool,
    request: &HeaderMap,
    validators: &Validators,
) -> Response<StaticBody> {
    put(&mut headers, header::ACCEPT_RANGES, "bytes");
    let decision = if is_get {
        conditional::range(request, validators, len)
    } else {
        RangeDecision::Full
    };
    match decision {
        RangeDecision::Full => {
            put(&mut headers, header::CONTENT_LENGTH, &len.to_string());
            let body = if is_get {
                StaticBody::stream(Box::new(tokio::fs::File::from_std(file)), Some(len))
            } else {
                StaticBody::empty()
            };
            with_headers(StatusCode::OK, headers, body)
        }
        RangeDecision::Partial { start, end } => {
            // lseek moves an offset and touches no disk: fine off the pool.
            if file.seek(SeekFrom::Start(start)).is_err() {
                return status(StatusCode::INTERNAL_SERVER_ERROR);
            }
            let count = end.saturating_sub(start).saturating_add(1);
            put(&mut headers, header::CONTENT_LENGTH, &count.to_string());
            put(
                &mut headers,
                header::CONTENT_RANGE,
                &format!("bytes {start}-{end}/{len}"),
            );
            let reader = tokio::fs::File::from_std(file).take(count);
            with_headers(
                StatusCode::PARTIAL_CONTENT,
                headers,
                StaticBody::stream(Box::new(reader), Some(count)),
            )
        }
        RangeDecision::Unsatisfiable => {
            let mut response = status(StatusCode::RANGE_NOT_SATISFIABLE);
            put(
                response.headers_mut(),
                header::CONTENT_RANGE,
                &format!("bytes */{len}"),
            );
            response
        }
    }
}

/// 200 in `enc`: a precompressed sibling of known length, or the file
/// through a compressor (`len` = `None`, so no Content-Length). No
/// `Accept-Ranges`: a client resuming this body would get identity bytes.
fn encoded(
    enc: Encoding,
    file: std::fs::File,
    len: Option<u64>,
    mut headers: HeaderMap,
    is_get: bool,
) -> Response<StaticBody> {
    put(&mut headers, header::CONTENT_ENCODING, enc.token());
    if let Some(n) = len {
        put(&mut headers, header::CONTENT_LENGTH, &n.to_string());
    }
    if !is_get {
        return with_headers(StatusCode::OK, headers, StaticBody::empty());
    }
    let file = tokio::fs::File::from_std(file);
    let body = match (len, enc) {
        (Some(n), _) => StaticBody::stream(Box::new(file.take(n)), Some(n)),
        (None, Encoding::Gzip) => {
            let reader = BufReader::with_capacity(COMPRESS_BUF, file);
            StaticBody::stream(
                Box::new(GzipEncoder::with_quality(reader, Level::Default)),
                None,
            )
        }
        (None, Encoding::Br) => {
            let reader = BufReader::with_capacity(COMPRESS_BUF, file);
            StaticBody::stream(
                Box::new(BrotliEncoder::with_quality(reader, BROTLI_ON_THE_FLY)),
                None,
            )
        }
    };
    with_headers(StatusCode::OK, headers, body)
}

fn rejected(reject: Reject) -> Response<StaticBody> {
    status(match reject {
        Reject::BadRequest => StatusCode::BAD_REQUEST,
        Reject::Forbidden => StatusCode::FORBIDDEN,
        Reject::NotFound => StatusCode::NOT_FOUND,
        Reject::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    })
}

/// A bodiless answer; an error among them is one of moongate's own, its
/// body rendered in the client's format (`crate::error_page`).
fn status(code: StatusCode) -> Response<StaticBody> {
    let mut response = with_headers(code, HeaderMap::new(), StaticBody::empty());
    if code.is_client_error() || code.is_server_error() {
        response
            .extensions_mut()
            .insert(crate::error_page::OwnError { message: "".into() });
    }
    response
}

fn with_headers(code: StatusCode, headers: HeaderMap, body: StaticBody) -> Response<StaticBody> {
    let mut response = Response::new(body);
    *response.status_mut() = code;
    *response.headers_mut() = headers;
    response
}

/// Sets a header; a value that is not a valid header value (it cannot
/// happen with what we build: ASCII dates, numbers, tags, MIME types) is
/// left out rather than panicking.
fn put(headers: &mut HeaderMap, name: HeaderName, value: &str) {
    if let Ok(value) = HeaderValue::from_str(value) {
        headers.insert(name, value);
    }
}

/// Whole seconds since the epoch; 0 for a time before it or unknown.
fn unix_secs(time: Option<SystemTime>) -> u64 {
    time.and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs())
}

/// An HTTP-date, clamped to the last second of 9999: `httpdate` panics past
/// it, and a file's mtime or a long `expires` can get there.
fn http_date(secs: u64) -> String {
    const LAST_HTTP_DATE: u64 = 253_402_300_799;
    let time = UNIX_EPOCH
        .checked_add(Duration::from_secs(secs.min(LAST_HTTP_DATE)))
        .unwrap_or(UNIX_EPOCH);
    httpdate::fmt_http_date(time)
}

#[cfg(test)]
mod tests;

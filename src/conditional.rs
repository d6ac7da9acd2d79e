//! Validators and the request headers that test them (RFC 9110 §8.8, §13,
//! §14): entity tags, If-Match / If-Unmodified-Since / If-None-Match /
//! If-Modified-Since, and a single byte Range with If-Range. Shared by
//! whoever answers from a whole representation it holds: `static_files`
//! (a file) and the proxy cache (a stored response). Pure functions over
//! header values; no I/O, no bodies.

use std::time::UNIX_EPOCH;

use http::HeaderMap;
use http::header::{self, HeaderValue};

/// An entity tag (RFC 9110 §8.8.3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntityTag {
    /// The opaque part, without quotes.
    pub tag: String,
    /// A weak tag (`W/"..."`): content is equivalent, not byte-identical.
    pub weak: bool,
}

impl EntityTag {
    /// The header value, quoted (`"tag"` or `W/"tag"`).
    pub fn header(&self) -> String {
        let prefix = if self.weak { "W/" } else { "" };
        format!("{prefix}\"{}\"", self.tag)
    }

    /// One entity tag as an `ETag` header carries it; `None` for anything
    /// else (`*`, a list, a missing quote).
    pub fn parse(value: &HeaderValue) -> Option<EntityTag> {
        let list = parse_tags(value.to_str().ok()?)?;
        match (list.any, list.tags.as_slice()) {
            (false, [(weak, tag)]) => Some(EntityTag {
                tag: tag.clone(),
                weak: *weak,
            }),
            _ => None,
        }
    }
}

/// The validators of the representation about to be sent. A missing one
/// makes the conditions that test it behave as RFC 9110 §13.1 says for a
/// resource without it (If-Modified-Since is ignored, If-None-Match can
/// only match `*`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Validators {
    /// The current entity tag.
    pub etag: Option<EntityTag>,
    /// Last modification, whole seconds since the Unix epoch.
    pub last_modified: Option<u64>,
}

impl Validators {
    /// The validators a response carries: its `ETag` and `Last-Modified`
    /// (an invalid one counts as absent).
    pub fn of_response(headers: &HeaderMap) -> Validators {
        Validators {
            etag: headers.get(header::ETAG).and_then(EntityTag::parse),
            last_modified: date(headers, &header::LAST_MODIFIED),
        }
    }
}

/// What the preconditions decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precondition {
    /// Go on and send the representation.
    Proceed,
    /// 304 Not Modified.
    NotModified,
    /// 412 Precondition Failed.
    Failed,
}

/// Evaluates the preconditions in RFC 9110 §13.2.2 order, for GET/HEAD.
/// A malformed header is ignored, as if it were absent.
pub fn evaluate(headers: &HeaderMap, v: &Validators) -> Precondition {
    match tag_list(headers, &header::IF_MATCH) {
        Some(list) => {
            if !list.matches(v, true) {
                return Precondition::Failed;
            }
        }
        None => {
            // Ignored without a modification date (RFC 9110 §13.1.4).
            let since = date(headers, &header::IF_UNMODIFIED_SINCE);
            if let (Some(since), Some(modified)) = (since, v.last_modified)
                && modified > since
            {
                return Precondition::Failed;
            }
        }
    }
    match tag_list(headers, &header::IF_NONE_MATCH) {
        Some(list) if list.matches(v, false) => Precondition::NotModified,
        Some(_) => Precondition::Proceed,
        // If-Modified-Since counts only when there is no If-None-Match,
        // and is ignored without a modification date (RFC 9110 §13.1.3).
        None => match (date(headers, &header::IF_MODIFIED_SINCE), v.last_modified) {
            (Some(since), Some(modified)) if since >= modified => Precondition::NotModified,
            _ => Precondition::Proceed,
        },
    }
}

/// What to do about a Range header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeDecision {
    /// Send the whole representation (no Range, or one to ignore).
    Full,
    /// 206 with bytes `start..=end`.
    Partial {
        /// The first byte sent.
        start: u64,
        /// The last byte sent (inclusive).
        end: u64,
    },
    /// 416 with `Content-Range: bytes */len`.
    Unsatisfiable,
}

/// Decides on the request's Range for a representation of `len` bytes.
///
/// Only a single `bytes=` range is honoured; several ranges, another unit
/// or a malformed value are ignored (a whole 200 is always a correct answer,
/// and it spares us multipart/byteranges). A failed If-Range also means
/// the whole representation.
pub fn range(headers: &HeaderMap, v: &Validators, len: u64) -> RangeDecision {
    let Some(spec) = headers
        .get(header::RANGE)
        .and_then(|h| parse_range(h.as_bytes()))
    else {
        return RangeDecision::Full;
    };
    if let Some(if_range) = headers.get(header::IF_RANGE)
        && !if_range_holds(if_range, v)
    {
        return RangeDecision::Full;
    }
    let (start, end) = match spec {
        RangeSpec::FromTo(first, last) => (first, last.min(len.saturating_sub(1))),
        RangeSpec::From(first) => (first, len.saturating_sub(1)),
        RangeSpec::Suffix(n) => (len.saturating_sub(n), len.saturating_sub(1)),
    };
    let empty_suffix = matches!(spec, RangeSpec::Suffix(0));
    if len == 0 || start >= len || empty_suffix {
        RangeDecision::Unsatisfiable
    } else {
        RangeDecision::Partial { start, end }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RangeSpec {
    /// `a-b`
    FromTo(u64, u64),
    /// `a-`
    From(u64),
    /// `-n`: the last n bytes.
    Suffix(u64),
}

fn parse_range(value: &[u8]) -> Option<RangeSpec> {
    let value = std::str::from_utf8(value).ok()?.trim();
    let (unit, spec) = value.split_once('=')?;
    if !unit.trim().eq_ignore_ascii_case("bytes") {
        return None;
    }
    // A comma means several ranges (or an empty list element): ignored.
    let (first, last) = spec.trim().split_once('-')?;
    let number = |s: &str| -> Option<u64> {
        let s = s.trim();
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        s.parse().ok()
    };
    match (first.trim().is_empty(), last.trim().is_empty()) {
        (true, true) => None,
        (true, false) => number(last).map(RangeSpec::Suffix),
        (false, true) => number(first).map(RangeSpec::From),
        (false, false) => {
            let (a, b) = (number(first)?, number(last)?);
            (a <= b).then_some(RangeSpec::FromTo(a, b))
        }
    }
}

/// If-Range holds with a strong ETag match, or a date equal to Last-Modified.
fn if_range_holds(value: &HeaderValue, v: &Validators) -> bool {
    let Ok(text) = value.to_str() else {
        return false;
    };
    let text = text.trim();
    if text.starts_with('"') || text.starts_with("W/") {
        parse_tags(text).is_some_and(|list| !list.any && list.matches(v, true))
    } else {
        http_secs(text).is_some_and(|d| Some(d) == v.last_modified)
    }
}

/// A parsed If-Match / If-None-Match value.
#[derive(Debug, Default, PartialEq, Eq)]
struct TagList {
    /// `*`: any current representation.
    any: bool,
    /// (weak, opaque tag)
    tags: Vec<(bool, String)>,
}

impl TagList {
    /// Strong comparison: both tags strong and equal. Weak: equal opaque
    /// tags. `*` matches any current representation, one without an ETag
    /// too.
    fn matches(&self, v: &Validators, strong: bool) -> bool {
        let Some(current) = &v.etag else {
            return self.any;
        };
        self.any
            || self
                .tags
                .iter()
                .any(|(weak, tag)| *tag == current.tag && (!strong || (!weak && !current.weak)))
    }
}

/// All lines of a list header, combined; `None` when absent or malformed.
fn tag_list(headers: &HeaderMap, name: &header::HeaderName) -> Option<TagList> {
    let mut list = TagList::default();
    let mut seen = false;
    for value in headers.get_all(name) {
        let part = parse_tags(value.to_str().ok()?)?;
        list.any |= part.any;
        list.tags.extend(part.tags);
        seen = true;
    }
    seen.then_some(list)
}

/// Parses `*` or a comma list of `"tag"` / `W/"tag"`. Tags may hold commas,
/// so this walks quotes rather than splitting.
fn parse_tags(text: &str) -> Option<TagList> {
    let mut list = TagList::default();
    let mut rest = text;
    loop {
        rest = rest.trim_start_matches([' ', '\t', ',']);
        if rest.is_empty() {
            break;
        }
        if let Some(after) = rest.strip_prefix('*') {
            list.any = true;
            rest = after;
            continue;
        }
        let (weak, quoted) = match rest.strip_prefix("W/") {
            Some(after) => (true, after),
            None => (false, rest),
        };
        let body = quoted.strip_prefix('"')?;
        let close = body.find('"')?;
        list.tags.push((weak, body.get(..close)?.to_owned()));
        rest = body.get(close + 1..)?;
    }
    (list.any || !list.tags.is_empty()).then_some(list)
}

/// A date header's value as whole seconds since the Unix epoch.
fn date(headers: &HeaderMap, name: &header::HeaderName) -> Option<u64> {
    http_secs(headers.get(name)?.to_str().ok()?)
}

/// An HTTP-date as whole seconds since the Unix epoch.
fn http_secs(text: &str) -> Option<u64> {
    let time = httpdate::parse_http_date(text.trim()).ok()?;
    Some(time.duration_since(UNIX_EPOCH).ok()?.as_secs())
}

#[cfg(test)]
mod tests;

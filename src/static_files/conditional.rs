//! Validators and the request headers that test them (RFC 9110 §8.8, §13,
//! §14): ETag lists, If-Match / If-Unmodified-Since / If-None-Match /
//! If-Modified-Since, and a single byte Range with If-Range. Pure functions
//! over header values; no I/O.

use http::HeaderMap;
use http::header::{self, HeaderValue};

/// The validators of the representation about to be sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Validators {
    /// The ETag's opaque part, without quotes.
    pub(super) tag: String,
    /// A weak ETag (`W/"..."`): content is equivalent, not byte-identical.
    pub(super) weak: bool,
    /// Last modification, whole seconds since the Unix epoch.
    pub(super) mtime: u64,
}

impl Validators {
    /// The ETag header value, quoted.
    pub(super) fn etag(&self) -> String {
        let prefix = if self.weak { "W/" } else { "" };
        format!("{prefix}\"{}\"", self.tag)
    }
}

/// What the preconditions decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Precondition {
    /// Go on and send the representation.
    Proceed,
    /// 304 Not Modified.
    NotModified,
    /// 412 Precondition Failed.
    Failed,
}

/// Evaluates the preconditions in RFC 9110 §13.2.2 order, for GET/HEAD.
/// A malformed header is ignored, as if it were absent.
pub(super) fn evaluate(headers: &HeaderMap, v: &Validators) -> Precondition {
    match tag_list(headers, &header::IF_MATCH) {
        Some(list) => {
            if !list.matches(v, true) {
                return Precondition::Failed;
            }
        }
        None => {
            if date(headers, &header::IF_UNMODIFIED_SINCE).is_some_and(|d| v.mtime > d) {
                return Precondition::Failed;
            }
        }
    }
    match tag_list(headers, &header::IF_NONE_MATCH) {
        Some(list) if list.matches(v, false) => Precondition::NotModified,
        Some(_) => Precondition::Proceed,
        // If-Modified-Since counts only when there is no If-None-Match.
        None => match date(headers, &header::IF_MODIFIED_SINCE) {
            Some(since) if since >= v.mtime => Precondition::NotModified,
            _ => Precondition::Proceed,
        },
    }
}

/// What to do about a Range header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum RangeDecision {
    /// Send the whole representation (no Range, or one to ignore).
    Full,
    /// 206 with bytes `start..=end`.
    Partial { start: u64, end: u64 },
    /// 416 with `Content-Range: bytes */len`.
    Unsatisfiable,
}

/// Decides on the request's Range for a representation of `len` bytes.
///
/// Only a single `bytes=` range is honoured; several ranges, another unit
/// or a malformed value are ignored (a whole 200 is always a correct answer,
/// and it spares us multipart/byteranges). A failed If-Range also means
/// the whole representation.
pub(super) fn range(headers: &HeaderMap, v: &Validators, len: u64) -> RangeDecision {
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
        httpdate::parse_http_date(text)
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .is_some_and(|d| d.as_secs() == v.mtime)
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
    /// Strong comparison: both tags strong and equal. Weak: equal opaque tags.
    fn matches(&self, v: &Validators, strong: bool) -> bool {
        self.any
            || self
                .tags
                .iter()
                .any(|(weak, tag)| *tag == v.tag && (!strong || (!weak && !v.weak)))
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

fn date(headers: &HeaderMap, name: &header::HeaderName) -> Option<u64> {
    let text = headers.get(name)?.to_str().ok()?;
    let time = httpdate::parse_http_date(text.trim()).ok()?;
    Some(time.duration_since(std::time::UNIX_EPOCH).ok()?.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(weak: bool) -> Validators {
        Validators {
            tag: "5f3a-1c".into(),
            weak,
            mtime: 1_600_000_000,
        }
    }

    fn map(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, val) in pairs {
            if let Ok(val) = HeaderValue::from_str(val) {
                m.append(k.clone(), val);
            }
        }
        m
    }

    const LM: &str = "Sun, 13 Sep 2020 12:26:40 GMT"; // 1_600_000_000

    #[test]
    fn etag_formats() {
        assert_eq!(v(false).etag(), "\"5f3a-1c\"");
        assert_eq!(v(true).etag(), "W/\"5f3a-1c\"");
    }

    #[test]
    fn if_none_match_uses_weak_comparison() {
        let cases = [
            ("\"5f3a-1c\"", Precondition::NotModified),
            ("W/\"5f3a-1c\"", Precondition::NotModified),
            ("\"x\", \"5f3a-1c\"", Precondition::NotModified),
            ("*", Precondition::NotModified),
            ("\"other\"", Precondition::Proceed),
            ("\"a,b\", \"c\"", Precondition::Proceed),
        ];
        for (inm, want) in cases {
            let h = map(&[(header::IF_NONE_MATCH, inm)]);
            assert_eq!(evaluate(&h, &v(false)), want, "{inm}");
        }
        // A second header line counts too.
        let h = map(&[
            (header::IF_NONE_MATCH, "\"x\""),
            (header::IF_NONE_MATCH, "\"5f3a-1c\""),
        ]);
        assert_eq!(evaluate(&h, &v(false)), Precondition::NotModified);
    }

    #[test]
    fn if_modified_since_only_without_if_none_match() {
        let h = map(&[(header::IF_MODIFIED_SINCE, LM)]);
        assert_eq!(evaluate(&h, &v(false)), Precondition::NotModified);
        let h = map(&[(header::IF_MODIFIED_SINCE, "Sun, 13 Sep 2020 12:26:39 GMT")]);
        assert_eq!(evaluate(&h, &v(false)), Precondition::Proceed);
        let h = map(&[
            (header::IF_MODIFIED_SINCE, LM),
            (header::IF_NONE_MATCH, "\"other\""),
        ]);
        assert_eq!(evaluate(&h, &v(false)), Precondition::Proceed);
        let h = map(&[(header::IF_MODIFIED_SINCE, "yesterday")]);
        assert_eq!(evaluate(&h, &v(false)), Precondition::Proceed);
    }

    #[test]
    fn if_match_and_if_unmodified_since_fail_with_412() {
        let h = map(&[(header::IF_MATCH, "\"other\"")]);
        assert_eq!(evaluate(&h, &v(false)), Precondition::Failed);
        let h = map(&[(header::IF_MATCH, "\"5f3a-1c\"")]);
        assert_eq!(evaluate(&h, &v(false)), Precondition::Proceed);
        // Strong comparison: a weak current tag never matches If-Match.
        assert_eq!(evaluate(&h, &v(true)), Precondition::Failed);
        let h = map(&[(header::IF_UNMODIFIED_SINCE, "Sun, 13 Sep 2020 12:26:39 GMT")]);
        assert_eq!(evaluate(&h, &v(false)), Precondition::Failed);
        let h = map(&[(header::IF_UNMODIFIED_SINCE, LM)]);
        assert_eq!(evaluate(&h, &v(false)), Precondition::Proceed);
    }

    fn decide(range_h: &str, if_range: Option<&str>, len: u64) -> RangeDecision {
        let mut pairs = vec![(header::RANGE, range_h)];
        if let Some(ir) = if_range {
            pairs.push((header::IF_RANGE, ir));
        }
        range(&map(&pairs), &v(false), len)
    }

    #[test]
    fn single_ranges() {
        use RangeDecision::*;
        assert_eq!(decide("bytes=0-9", None, 100), Partial { start: 0, end: 9 });
        assert_eq!(
            decide("bytes=90-200", None, 100),
            Partial { start: 90, end: 99 }
        );
        assert_eq!(decide("bytes=5-", None, 100), Partial { start: 5, end: 99 });
        assert_eq!(
            decide("bytes=-3", None, 100),
            Partial { start: 97, end: 99 }
        );
        assert_eq!(
            decide("bytes=-300", None, 100),
            Partial { start: 0, end: 99 }
        );
        assert_eq!(
            decide(" Bytes = 1 - 2 ", None, 100),
            Partial { start: 1, end: 2 }
        );
        assert_eq!(decide("bytes=100-", None, 100), Unsatisfiable);
        assert_eq!(decide("bytes=-0", None, 100), Unsatisfiable);
        assert_eq!(decide("bytes=0-0", None, 0), Unsatisfiable);
    }

    #[test]
    fn ignored_ranges() {
        for r in [
            "bytes=0-1,5-6",
            "bytes=0-1,",
            "items=0-1",
            "bytes=5-1",
            "bytes=-",
            "bytes=a-b",
            "bytes=+1-2",
            "0-1",
            "bytes=99999999999999999999-",
        ] {
            assert_eq!(decide(r, None, 100), RangeDecision::Full, "{r}");
        }
    }

    #[test]
    fn if_range_needs_a_strong_match_or_the_exact_date() {
        let partial = RangeDecision::Partial { start: 0, end: 9 };
        assert_eq!(decide("bytes=0-9", Some("\"5f3a-1c\""), 100), partial);
        assert_eq!(decide("bytes=0-9", Some(LM), 100), partial);
        assert_eq!(
            decide("bytes=0-9", Some("\"other\""), 100),
            RangeDecision::Full
        );
        assert_eq!(
            decide("bytes=0-9", Some("W/\"5f3a-1c\""), 100),
            RangeDecision::Full
        );
        assert_eq!(
            decide("bytes=0-9", Some("Sun, 13 Sep 2020 12:26:41 GMT"), 100),
            RangeDecision::Full
        );
        // A failed If-Range also turns an unsatisfiable range into a 200.
        assert_eq!(
            decide("bytes=500-", Some("\"other\""), 100),
            RangeDecision::Full
        );
    }
}

//! Parsing one HTTP/1 request head off the front of the connection's
//! buffer with `httparse`, into `http`'s request parts plus what the
//! connection needs to know about the exchange: how the body is framed
//! (RFC 9112 §6.3), whether the connection may stay open, whether the
//! client waits for `100 Continue`, whether it asks for an upgrade.
//! Malformed heads get the status the connection answers with before it
//! closes; the proxy's checks ([`crate::proxy::checks`]) judge the rest.

use bytes::BytesMut;
use http::header::{HeaderName, HeaderValue};
use http::request::Parts;
use http::{HeaderMap, Method, Request, StatusCode, Uri, Version};

/// hyper's default, and SPEC's `max_header_count` default: heads with up to
/// this many lines are parsed into an array on the stack.
const STACK_HEADERS: usize = 100;

/// How a request's body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BodyFraming {
    /// No body.
    Empty,
    /// `Content-Length`.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// A `Transfer-Encoding` other than exactly `chunked`: the checks refuse
    /// it (501), and the connection closes after the answer since the end
    /// of the body cannot be found.
    Unknown,
}

/// A parsed request head.
#[derive(Debug)]
pub(crate) struct RequestHead {
    /// Method, target, version and headers.
    pub parts: Parts,
    /// How the body is framed.
    pub framing: BodyFraming,
    /// Whether the client lets the connection stay open after this exchange.
    pub keep_alive: bool,
    /// `Expect: 100-continue` on HTTP/1.1.
    pub expect_continue: bool,
}

/// Why a head cannot be served; answered with `status`, then the connection closes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct HeadError {
    /// 400, 431, 501 or 505.
    pub status: StatusCode,
    /// For the debug log.
    pub why: &'static str,
}

const fn bad(why: &'static str) -> HeadError {
    HeadError {
        status: StatusCode::BAD_REQUEST,
        why,
    }
}

/// Parses the head at the front of `buf`: `Ok(None)` while incomplete,
/// else the head, taken off the front of `buf`: the target and the header
/// values share its bytes (no copy per field). `max_headers` is
/// `max_header_count`.
pub(crate) fn take(
    buf: &mut BytesMut,
    max_headers: usize,
) -> Result<Option<RequestHead>, HeadError> {
    let mut stack_fields = [Field::default(); STACK_HEADERS];
    let mut heap_fields = Vec::new();
    let fields: &mut [Field] = if max_headers <= STACK_HEADERS {
        &mut stack_fields[..max_headers]
    } else {
        heap_fields.resize(max_headers, Field::default());
        &mut heap_fields
    };
    let scanned = if max_headers <= STACK_HEADERS {
        let mut slots = [httparse::EMPTY_HEADER; STACK_HEADERS];
        scan(buf, &mut slots[..max_headers], fields)?
    } else {
        let mut slots = vec![httparse::EMPTY_HEADER; max_headers];
        scan(buf, &mut slots, fields)?
    };
    match scanned {
        Some(head) => build(buf, head, fields).map(Some),
        None => Ok(None),
    }
}

/// [`take`] on a copy of `buf`: the head and its length in bytes.
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) fn parse(
    buf: &[u8],
    max_headers: usize,
) -> Result<Option<(RequestHead, usize)>, HeadError> {
    let mut copy = BytesMut::from(buf);
    let head = take(&mut copy, max_headers)?;
    Ok(head.map(|h| (h, buf.len() - copy.len())))
}

/// Where something is in the head's bytes: offset and length.
type Span = (usize, usize);

/// Where a header line's name and value are in the head's bytes.
#[derive(Debug, Clone, Copy, Default)]
struct Field {
    name: Span,
    value: Span,
}

/// What [`scan`] found in a complete head, before its bytes are taken.
struct Scanned {
    len: usize,
    method: Method,
    version: Version,
    target: Span,
    fields: usize,
    length: Option<u64>,
    /// `Transfer-Encoding`: whether it is exactly `chunked`.
    te: Option<bool>,
    conn_close: bool,
    conn_keep_alive: bool,
    expect_continue: bool,
}

/// Parses `buf` with httparse; the header lines' places go to `fields`.
fn scan<'b>(
    buf: &'b [u8],
    slots: &mut [httparse::Header<'b>],
    fields: &mut [Field],
) -> Result<Option<Scanned>, HeadError> {
    let mut req = httparse::Request::new(slots);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(HeadError {
                status: StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                why: "more header lines than max_header_count",
            });
        }
        Err(httparse::Error::Version) if names_another_version(buf) => {
            return Err(HeadError {
                status: StatusCode::HTTP_VERSION_NOT_SUPPORTED,
                why: "not an HTTP/1.x request",
            });
        }
        Err(_) => return Err(bad("malformed request head")),
    };
    let version = match req.version {
        Some(0) => Version::HTTP_10,
        Some(1) => Version::HTTP_11,
        _ => {
            return Err(HeadError {
                status: StatusCode::HTTP_VERSION_NOT_SUPPORTED,
                why: "not an HTTP/1.x request",
            });
        }
    };
    let method = Method::from_bytes(req.method.unwrap_or_default().as_bytes())
        .map_err(|_| bad("invalid method"))?;
    let start = buf.as_ptr() as usize;
    let at = |s: &[u8]| (s.as_ptr() as usize - start, s.len());
    let mut out = Scanned {
        len,
        method,
        version,
        target: at(req.path.unwrap_or_default().as_bytes()),
        fields: req.headers.len(),
        length: None,
        te: None,
        conn_close: false,
        conn_keep_alive: false,
        expect_continue: false,
    };
    for (h, field) in req.headers.iter().zip(fields.iter_mut()) {
        *field = Field {
            name: at(h.name.as_bytes()),
            value: at(h.value),
        };
        let name = h.name.as_bytes();
        if name.eq_ignore_ascii_case(b"content-length") {
            let n = parse_length(h.value).ok_or(bad("invalid Content-Length"))?;
            if out.length.is_some_and(|l| l != n) {
                return Err(bad("two different Content-Length values"));
            }
            out.length = Some(n);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            // Exactly one `chunked` and nothing else frames a body; any
            // other coding is left for the checks to refuse (501).
            let exactly = out.te.is_none() && h.value.trim_ascii().eq_ignore_ascii_case(b"chunked");
            out.te = Some(exactly);
        } else if name.eq_ignore_ascii_case(b"connection") {
            for token in h.value.split(|&b| b == b',') {
                let token = token.trim_ascii();
                out.conn_close |= token.eq_ignore_ascii_case(b"close");
                out.conn_keep_alive |= token.eq_ignore_ascii_case(b"keep-alive");
            }
        } else if name.eq_ignore_ascii_case(b"expect") {
            out.expect_continue = h.value.trim_ascii().eq_ignore_ascii_case(b"100-continue");
        }
    }
    Ok(Some(out))
}

/// Takes the scanned head off the front of `buf` and builds its parts,
/// whose target and values share the head's bytes.
fn build(buf: &mut BytesMut, head: Scanned, fields: &[Field]) -> Result<RequestHead, HeadError> {
    let Scanned {
        len,
        method,
        version,
        target,
        fields: count,
        length,
        te,
        conn_close,
        conn_keep_alive,
        expect_continue,
    } = head;
    let bytes = buf.split_to(len).freeze();
    let slice = |(from, n): Span| bytes.slice(from..from + n);
    let uri = Uri::from_maybe_shared(slice(target)).map_err(|_| bad("invalid request target"))?;
    if method != Method::CONNECT && method != Method::OPTIONS && uri.path() == "*" {
        return Err(bad("`*` is a target only for OPTIONS"));
    }
    // Room for the forwarding headers the proxy adds, so the map is not
    // grown (rehashed) for them.
    let mut map = HeaderMap::with_capacity(count + 6);
    for field in &fields[..count] {
        let (from, n) = field.name;
        let name = HeaderName::from_bytes(&bytes[from..from + n])
            .map_err(|_| bad("invalid header name"))?;
        let value = HeaderValue::from_maybe_shared(slice(field.value))
            .map_err(|_| bad("invalid header value"))?;
        map.append(name, value);
    }

    let conflicting_framing = te.is_some() && length.is_some();
    let framing = match (te, length) {
        (Some(_), _) if version == Version::HTTP_10 => {
            return Err(bad("Transfer-Encoding in an HTTP/1.0 request"));
        }
        (Some(true), _) => BodyFraming::Chunked,
        (Some(false), _) => BodyFraming::Unknown,
        (None, Some(0) | None) => BodyFraming::Empty,
        (None, Some(n)) => BodyFraming::Length(n),
    };
    let keep_alive = match version {
        Version::HTTP_11 => !conn_close,
        _ => conn_keep_alive && !conn_close,
    } && framing != BodyFraming::Unknown
        && !conflicting_framing;

    let mut builder = Request::builder().method(method).uri(uri).version(version);
    if let Some(h) = builder.headers_mut() {
        *h = map;
    }
    let (parts, ()) = builder
        .body(())
        .map_err(|_| bad("invalid request head"))?
        .into_parts();
    Ok(RequestHead {
        parts,
        framing,
        keep_alive,
        expect_continue: expect_continue && version == Version::HTTP_11,
    })
}

/// Whether the request line is `METHOD TARGET HTTP/d.d` with a version
/// other than 1.x (505), rather than malformed (400).
fn names_another_version(buf: &[u8]) -> bool {
    let line = buf
        .split(|&b| b == b'\n')
        .next()
        .unwrap_or_default()
        .trim_ascii();
    let mut words = line.split(|&b| b == b' ');
    let (Some(_), Some(_), Some(v), None) =
        (words.next(), words.next(), words.next(), words.next())
    else {
        return false;
    };
    matches!(v, [b'H', b'T', b'T', b'P', b'/', major, b'.', minor]
        if major.is_ascii_digit() && minor.is_ascii_digit())
}

/// A `Content-Length` value: digits only (RFC 9110 §8.6), no sign, no
/// list.
fn parse_length(v: &[u8]) -> Option<u64> {
    let v = v.trim_ascii();
    if v.is_empty() || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(v).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(text: &str) -> RequestHead {
        match parse(text.as_bytes(), 100) {
            Ok(Some((h, n))) => {
                assert_eq!(n, text.len(), "{text:?}");
                h
            }
            other => panic!("{text:?}: {other:?}"),
        }
    }

    fn status(text: &str) -> u16 {
        match parse(text.as_bytes(), 100) {
            Err(e) => e.status.as_u16(),
            Ok(o) => panic!("{text:?} parsed: {o:?}"),
        }
    }

    #[test]
    fn a_head_and_its_framing() {
        let h = head("GET /a?b=c HTTP/1.1\r\nHost: x\r\nX-A: 1\r\nX-A: 2\r\n\r\n");
        assert_eq!(h.parts.method, Method::GET);
        assert_eq!(h.parts.uri, "/a?b=c");
        assert_eq!(h.parts.version, Version::HTTP_11);
        assert_eq!(h.parts.headers.get_all("x-a").iter().count(), 2);
        assert_eq!(h.framing, BodyFraming::Empty);
        assert!(h.keep_alive && !h.expect_continue);

        let h = head(
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 12\r\nExpect: 100-continue\r\n\r\n",
        );
        assert_eq!(h.framing, BodyFraming::Length(12));
        assert!(h.expect_continue);
        let h = head("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: Chunked\r\n\r\n");
        assert_eq!(h.framing, BodyFraming::Chunked);
        let h = head("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n");
        assert_eq!(h.framing, BodyFraming::Empty);
    }

    #[test]
    fn anything_but_exactly_chunked_is_unknown_and_closes() {
        for te in ["gzip, chunked", "identity", "chunked, chunked"] {
            let h = head(&format!(
                "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: {te}\r\n\r\n"
            ));
            assert_eq!(h.framing, BodyFraming::Unknown, "{te}");
            assert!(!h.keep_alive, "{te}");
        }
        let h = head(
            "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
        );
        assert_eq!(h.framing, BodyFraming::Unknown);
        let h = head(
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
        );
        // The checks refuse it (400); the connection closes after that.
        assert_eq!(h.framing, BodyFraming::Chunked);
        assert!(!h.keep_alive);
    }

    #[test]
    fn keep_alive_by_version_and_connection() {
        assert!(!head("GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").keep_alive);
        assert!(!head("GET / HTTP/1.0\r\n\r\n").keep_alive);
        assert!(head("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").keep_alive);
        assert!(!head("GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n").keep_alive);
        assert!(
            !head("POST / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n")
                .expect_continue
        );
    }

    #[test]
    fn partial_heads_wait_and_bad_ones_say_why() {
        assert!(matches!(
            parse(b"GET / HTTP/1.1\r\nHost: x\r\n", 100),
            Ok(None)
        ));
        assert!(matches!(parse(b"", 100), Ok(None)));
        assert_eq!(status("GET /up x HTTP/1.1\r\nHost: x\r\n\r\n"), 400);
        assert_eq!(
            status("GET /up HTTP/1.1\r\nHost: x\r\nNoColonHere\r\n\r\n"),
            400
        );
        assert_eq!(
            status("POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n"),
            400
        );
        assert_eq!(status("POST / HTTP/1.1\r\nContent-Length: +3\r\n\r\n"), 400);
        assert_eq!(
            status("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"),
            400
        );
        assert_eq!(status("GET * HTTP/1.1\r\nHost: x\r\n\r\n"), 400);
        assert_eq!(status("GET / HTTP/2.0\r\nHost: x\r\n\r\n"), 505);
        assert_eq!(status("GET / HTTP/1.1 x\r\nHost: x\r\n\r\n"), 400);
        let many: String = (0..8).map(|i| format!("X-{i}: v\r\n")).collect();
        let text = format!("GET / HTTP/1.1\r\n{many}\r\n");
        assert_eq!(parse(text.as_bytes(), 8).map(|o| o.is_some()), Ok(true));
        assert_eq!(
            parse(text.as_bytes(), 7).err().map(|e| e.status.as_u16()),
            Some(431)
        );
        let same = "POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n";
        assert_eq!(head(same).framing, BodyFraming::Length(3));
    }

    #[test]
    fn more_lines_than_the_stack_array_use_the_heap() {
        let many: String = (0..150).map(|i| format!("X-{i}: v\r\n")).collect();
        let text = format!("GET / HTTP/1.1\r\nHost: x\r\n{many}\r\n");
        let h = match parse(text.as_bytes(), 200) {
            Ok(Some((h, _))) => h,
            other => panic!("{other:?}"),
        };
        assert_eq!(h.parts.headers.len(), 151);
    }
}

#[cfg(test)]
mod props {
    use super::*;
    use proptest::prelude::*;

    /// A valid request head: a method, a path, some header lines, maybe a
    /// body length.
    fn heads() -> impl Strategy<Value = String> {
        (
            prop::sample::select(vec!["GET", "POST", "PUT", "DELETE", "OPTIONS"]),
            "/[a-z0-9/._-]{0,30}(\\?[a-z0-9=&]{0,20})?",
            prop::collection::vec(("[A-Za-z][A-Za-z0-9-]{0,15}", "[ -~]{0,40}"), 0..12),
            prop::option::of(0u32..100_000),
        )
            .prop_map(|(method, path, fields, length)| {
                let mut head = format!("{method} {path} HTTP/1.1\r\nHost: h\r\n");
                for (name, value) in fields {
                    let lower = name.to_ascii_lowercase();
                    if ["content-length", "transfer-encoding", "host"].contains(&lower.as_str()) {
                        continue;
                    }
                    head.push_str(&format!("{name}: {}\r\n", value.trim()));
                }
                if let Some(n) = length {
                    head.push_str(&format!("Content-Length: {n}\r\n"));
                }
                head.push_str("\r\n");
                head
            })
    }

    proptest! {
        /// Every strict prefix of a head waits for more; the whole head
        /// parses to its own length whatever follows it (a body, the next
        /// request); its framing is the length it declared.
        #[test]
        fn a_head_is_found_whole_and_only_whole(head in heads(), after in "[ -~]{0,40}") {
            let bytes = head.as_bytes();
            for cut in 0..bytes.len() {
                prop_assert!(matches!(parse(&bytes[..cut], 100), Ok(None)), "prefix {cut} of {head:?}");
            }
            let mut with_more = bytes.to_vec();
            with_more.extend_from_slice(after.as_bytes());
            let (h, n) = match parse(&with_more, 100) {
                Ok(Some(x)) => x,
                other => return Err(TestCaseError::fail(format!("{head:?}: {other:?}"))),
            };
            prop_assert_eq!(n, bytes.len());
            let declared = h.parts.headers.get("content-length")
                .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
            let expected = match declared {
                None | Some(0) => BodyFraming::Empty,
                Some(n) => BodyFraming::Length(n),
            };
            prop_assert_eq!(h.framing, expected);
            prop_assert!(h.keep_alive);
        }
    }
}

//! Parsing one HTTP/1 request head off the front of the connection's
//! buffer with `httparse`, into `http`'s request parts plus what the
//! connection needs to know about the exchange: how the body is framed
//! (RFC 9112 §6.3), whether the connection may stay open, whether the
//! client waits for `100 Continue`, whether it asks for an upgrade.
//! Malformed heads get the status the connection answers with before it
//! closes; the proxy's checks ([`crate::proxy::checks`]) judge the rest.

use std::mem::MaybeUninit;

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderName, HeaderValue};
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
    /// The head as received, request line to the empty line (sharing the
    /// read buffer's bytes), for `ngx.req.raw_header`.
    pub raw: Bytes,
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
    // The bytes read so far (the whole buffer, so that nothing else holds
    // it), frozen so that the target and the values can share them; what
    // follows the head goes back into `buf`.
    let all = std::mem::take(buf).freeze();
    // httparse writes the slots it uses: none is initialised beforehand
    // (zeroing 100 slots costs more than parsing a small head).
    let parsed = if max_headers <= STACK_HEADERS {
        let mut slots = [const { MaybeUninit::uninit() }; STACK_HEADERS];
        take_with(&all, &mut slots[..max_headers])
    } else {
        let mut slots = Vec::new();
        slots.resize_with(max_headers, MaybeUninit::uninit);
        take_with(&all, &mut slots)
    };
    match parsed? {
        Some((head, len)) => {
            if all.len() > len {
                *buf = BytesMut::from(&all[len..]);
            }
            Ok(Some(head))
        }
        None => {
            *buf = all
                .try_into_mut()
                .unwrap_or_else(|shared| BytesMut::from(&shared[..]));
            Ok(None)
        }
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

/// Parses the head at the front of `all` into parts sharing its bytes:
/// the head and its length, `None` while incomplete.
fn take_with<'b>(
    all: &'b Bytes,
    slots: &mut [MaybeUninit<httparse::Header<'b>>],
) -> Result<Option<(RequestHead, usize)>, HeadError> {
    let mut req = httparse::Request::new(&mut []);
    let len = match req.parse_with_uninit_headers(all, slots) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(HeadError {
                status: StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                why: "more header lines than max_header_count",
            });
        }
        Err(httparse::Error::Version) if names_another_version(all) => {
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
    let target = all.slice_ref(req.path.unwrap_or_default().as_bytes());
    let uri = Uri::from_maybe_shared(target).map_err(|_| bad("invalid request target"))?;
    if method != Method::CONNECT && method != Method::OPTIONS && uri.path() == "*" {
        return Err(bad("`*` is a target only for OPTIONS"));
    }

    // Room for the forwarding headers the proxy adds, so the map is not
    // grown (rehashed) for them.
    let mut map = HeaderMap::with_capacity(req.headers.len() + 6);
    let mut length: Option<u64> = None;
    let mut te: Option<bool> = None;
    let mut conn_close = false;
    let mut conn_keep_alive = false;
    let mut expect_continue = false;
    for h in req.headers.iter() {
        let name =
            HeaderName::from_bytes(h.name.as_bytes()).map_err(|_| bad("invalid header name"))?;
        let value = HeaderValue::from_maybe_shared(all.slice_ref(h.value))
            .map_err(|_| bad("invalid header value"))?;
        if name == header::CONTENT_LENGTH {
            let n = parse_length(h.value).ok_or(bad("invalid Content-Length"))?;
            if length.is_some_and(|l| l != n) {
                return Err(bad("two different Content-Length values"));
            }
            length = Some(n);
        } else if name == header::TRANSFER_ENCODING {
            // Exactly one `chunked` and nothing else frames a body; any
            // other coding is left for the checks to refuse (501).
            let exactly = te.is_none() && h.value.trim_ascii().eq_ignore_ascii_case(b"chunked");
            te = Some(exactly);
        } else if name == header::CONNECTION {
            for token in h.value.split(|&b| b == b',') {
                let token = token.trim_ascii();
                conn_close |= token.eq_ignore_ascii_case(b"close");
                conn_keep_alive |= token.eq_ignore_ascii_case(b"keep-alive");
            }
        } else if name == header::EXPECT {
            expect_continue = h.value.trim_ascii().eq_ignore_ascii_case(b"100-continue");
        }
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
    Ok(Some((
        RequestHead {
            parts,
            framing,
            keep_alive,
            expect_continue: expect_continue && version == Version::HTTP_11,
            raw: all.slice(..len),
        },
        len,
    )))
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

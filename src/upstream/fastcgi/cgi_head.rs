//! The CGI response head at the start of an application's STDOUT (RFC 3875
//! §6, as nginx's `fastcgi_pass` reads it): header lines up to an empty
//! line, the status taken from `Status:` (which is not passed on), else
//! 302 when there is a `Location:`, else 200. Pure: bytes in, status and
//! headers out.

use http::StatusCode;
use http::header::{HeaderMap, HeaderName, HeaderValue, LOCATION};

/// Largest CGI response head accepted.
pub const MAX_HEAD: usize = 64 * 1024;
/// Most header lines accepted in a CGI response head.
pub const MAX_HEADERS: usize = 128;

/// A CGI response head.
#[derive(Debug)]
pub struct Head {
    /// The status (from `Status:`, a `Location:`, or 200).
    pub status: StatusCode,
    /// The headers, `Status` left out.
    pub headers: HeaderMap,
}

/// Why a CGI response head is invalid.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HeadError {
    /// The head passed [`MAX_HEAD`] bytes or [`MAX_HEADERS`] lines.
    #[error("CGI response head too large")]
    TooLarge,
    /// A header line is not `Name: value`.
    #[error("invalid CGI response header line")]
    Line,
    /// `Status:` does not start with a 3-digit final status.
    #[error("invalid CGI Status header")]
    Status,
}

/// Parses the head at the front of `buf`: `Ok(None)` while it is
/// incomplete, else the head and how many bytes of `buf` it took (the body
/// follows).
pub fn parse(buf: &[u8]) -> Result<Option<(Head, usize)>, HeadError> {
    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let (len, lines) = match httparse::parse_headers(buf, &mut slots) {
        Ok(httparse::Status::Complete(done)) => done,
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => {
            return Err(HeadError::TooLarge);
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooLarge),
        Err(_) => return Err(HeadError::Line),
    };
    if len > MAX_HEAD {
        return Err(HeadError::TooLarge);
    }
    let mut headers = HeaderMap::with_capacity(lines.len());
    let mut status = None;
    for line in lines.iter() {
        if line.name.eq_ignore_ascii_case("status") {
            status = Some(parse_status(line.value)?);
            continue;
        }
        let name = HeaderName::from_bytes(line.name.as_bytes()).map_err(|_| HeadError::Line)?;
        let value = HeaderValue::from_bytes(line.value).map_err(|_| HeadError::Line)?;
        headers.append(name, value);
    }
    let status = match status {
        Some(s) => s,
        None if headers.contains_key(LOCATION) => StatusCode::FOUND,
        None => StatusCode::OK,
    };
    Ok(Some((Head { status, headers }, len)))
}

/// `Status: 404 Not Found` → 404. As nginx, the first three bytes are the
/// code and the reason phrase is not kept; a 1xx is refused, since a CGI
/// response has no interim responses.
fn parse_status(value: &[u8]) -> Result<StatusCode, HeadError> {
    let value = value.trim_ascii();
    let code = value.get(..3).ok_or(HeadError::Status)?;
    if !code.iter().all(u8::is_ascii_digit) || value.get(3).is_some_and(|b| *b != b' ') {
        return Err(HeadError::Status);
    }
    let status = StatusCode::from_bytes(code).map_err(|_| HeadError::Status)?;
    if status.is_informational() {
        return Err(HeadError::Status);
    }
    Ok(status)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(s: &str) -> Result<Option<(Head, usize)>, HeadError> {
        parse(s.as_bytes())
    }

    fn complete(s: &str) -> (Head, usize) {
        head(s).unwrap().unwrap()
    }

    #[test]
    fn default_status_is_200_and_body_follows() {
        let s = "Content-type: text/html; charset=UTF-8\r\nX-Powered-By: PHP/8.2\r\n\r\n<p>hi";
        let (h, len) = complete(s);
        assert_eq!(h.status, 200);
        assert_eq!(&s[len..], "<p>hi");
        assert_eq!(h.headers["content-type"], "text/html; charset=UTF-8");
        assert_eq!(h.headers["x-powered-by"], "PHP/8.2");
    }

    #[test]
    fn status_header_sets_the_status_and_is_dropped() {
        for (line, want) in [
            ("Status: 404 Not Found", 404),
            ("status: 404", 404),
            ("Status:   503 Busy  ", 503),
            ("Status: 200 OK", 200),
            ("Status: 599 Odd", 599),
        ] {
            let (h, _) = complete(&format!("{line}\r\nContent-Type: text/plain\r\n\r\n"));
            assert_eq!(h.status, want, "{line}");
            assert!(!h.headers.contains_key("status"));
        }
    }

    #[test]
    fn location_without_status_is_302() {
        let (h, _) = complete("Location: /elsewhere\r\n\r\n");
        assert_eq!(h.status, StatusCode::FOUND);
        assert_eq!(h.headers["location"], "/elsewhere");
        let (h, _) = complete("Status: 301 Moved Permanently\r\nLocation: https://x/\r\n\r\n");
        assert_eq!(h.status, StatusCode::MOVED_PERMANENTLY);
    }

    #[test]
    fn repeated_headers_are_kept() {
        let (h, _) = complete("Set-Cookie: a=1\r\nSet-Cookie: b=2\r\n\r\n");
        let all: Vec<_> = h.headers.get_all("set-cookie").iter().collect();
        assert_eq!(all, ["a=1", "b=2"]);
    }

    #[test]
    fn bare_newlines_and_an_empty_head() {
        let s = "Status: 201\nContent-Type: a/b\n\nbody";
        let (h, len) = complete(s);
        assert_eq!((h.status.as_u16(), &s[len..]), (201, "body"));
        let (h, len) = complete("\r\nbody");
        assert_eq!((h.status.as_u16(), len, h.headers.len()), (200, 2, 0));
    }

    #[test]
    fn incomplete_heads_wait() {
        let s = "Status: 404 Not Found\r\nContent-Type: text/plain\r\n\r\n";
        for cut in 0..s.len() {
            assert!(head(&s[..cut]).unwrap().is_none(), "cut at {cut}");
        }
    }

    #[test]
    fn bad_heads_are_errors() {
        for (s, e) in [
            ("Status: 4x4\r\n\r\n", HeadError::Status),
            ("Status: 40\r\n\r\n", HeadError::Status),
            ("Status: 4044\r\n\r\n", HeadError::Status),
            ("Status: 099\r\n\r\n", HeadError::Status),
            ("Status: 100 Continue\r\n\r\n", HeadError::Status),
            ("Status:\r\n\r\n", HeadError::Status),
            ("No colon here\r\n\r\n", HeadError::Line),
            ("Bad Name: x\r\n\r\n", HeadError::Line),
            ("X: a\x01b\r\n\r\n", HeadError::Line),
        ] {
            assert_eq!(head(s).err(), Some(e), "{s:?}");
        }
        let many: String = (0..=MAX_HEADERS).map(|i| format!("X-{i}: v\r\n")).collect();
        assert_eq!(
            head(&format!("{many}\r\n")).err(),
            Some(HeadError::TooLarge)
        );
        let long = format!("X: {}", "v".repeat(MAX_HEAD));
        assert_eq!(head(&long).err(), Some(HeadError::TooLarge));
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut rng = fastrand::Rng::with_seed(3875);
        let alphabet = b"Status: 404\r\nLocation:/x\n\x00\xff ab";
        for _ in 0..20_000 {
            let len = rng.usize(0..48);
            let bytes: Vec<u8> = (0..len)
                .map(|_| alphabet[rng.usize(..alphabet.len())])
                .collect();
            let _ = parse(&bytes);
        }
    }
}

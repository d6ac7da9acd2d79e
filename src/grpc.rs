//! gRPC's rules at the edge, for any request a client sends as gRPC
//! (over HTTP/2, `content-type: application/grpc…`): moongate's own errors answered as a
//! gRPC status (HTTP 200, `grpc-status` and `grpc-message` in a
//! trailers-only response, as gRPC clients expect), the HTTP status to gRPC
//! code mapping, and the `grpc-timeout` header. The proxying itself is
//! `upstream::http2`'s.

use std::time::Duration;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Response, StatusCode};

use crate::body::ResponseBody;

/// `grpc-status`.
pub static GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
/// `grpc-message`.
pub static GRPC_MESSAGE: HeaderName = HeaderName::from_static("grpc-message");
/// `grpc-timeout`.
pub static GRPC_TIMEOUT: HeaderName = HeaderName::from_static("grpc-timeout");

/// The gRPC status codes moongate answers with itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Code {
    /// 1: the client cancelled.
    Cancelled = 1,
    /// 2: no better code applies.
    Unknown = 2,
    /// 4: the deadline (`grpc-timeout`, or `read_timeout`) passed.
    DeadlineExceeded = 4,
    /// 7: refused by a policy (403).
    PermissionDenied = 7,
    /// 8: rate limited, or a message too large.
    ResourceExhausted = 8,
    /// 12: no route or method (404, 405).
    Unimplemented = 12,
    /// 13: moongate failed, or the request was malformed.
    Internal = 13,
    /// 14: the upstream could not be reached or failed.
    Unavailable = 14,
    /// 16: credentials missing or wrong (401).
    Unauthenticated = 16,
}

/// Marks one of moongate's own error responses with the gRPC code a gRPC
/// client gets for it, where the HTTP status alone does not say (a rate
/// limit answering with a configured 503 is still RESOURCE_EXHAUSTED).
#[derive(Debug, Clone, Copy)]
pub struct OwnCode(pub Code);

/// Whether a request is a gRPC call: its content type is
/// `application/grpc`, alone or with a `+format` or parameters.
pub fn is_grpc(headers: &HeaderMap) -> bool {
    headers.get(header::CONTENT_TYPE).is_some_and(|v| {
        let v = v.as_bytes();
        let prefix = b"application/grpc";
        v.len() >= prefix.len()
            && v[..prefix.len()].eq_ignore_ascii_case(prefix)
            && matches!(v.get(prefix.len()), None | Some(b'+' | b';'))
    })
}

/// The gRPC code for one of moongate's own HTTP error statuses: gRPC's
/// HTTP-to-gRPC mapping, except that moongate's 504 is a deadline it saw
/// pass (DEADLINE_EXCEEDED) and a 429 is its rate limit (RESOURCE_EXHAUSTED).
pub fn code_for(status: StatusCode) -> Code {
    match status.as_u16() {
        401 => Code::Unauthenticated,
        403 => Code::PermissionDenied,
        404 | 405 | 501 => Code::Unimplemented,
        408 | 504 => Code::DeadlineExceeded,
        413 | 429 | 431 => Code::ResourceExhausted,
        400 | 500 => Code::Internal,
        499 => Code::Cancelled,
        502 | 503 => Code::Unavailable,
        _ => Code::Unknown,
    }
}

/// Turns one of moongate's own error responses to a gRPC request into a
/// trailers-only gRPC answer: HTTP 200, `content-type: application/grpc`,
/// `grpc-status` and `grpc-message` (percent-encoded), no body. Headers
/// already set (a rate limit's `Retry-After`) stay.
pub fn own_error(resp: &mut Response<ResponseBody>, message: &str) {
    let status = resp.status();
    let code = resp
        .extensions_mut()
        .remove::<OwnCode>()
        .map_or_else(|| code_for(status), |c| c.0);
    let message = if message.is_empty() {
        status.canonical_reason().unwrap_or("error")
    } else {
        message
    };
    *resp.status_mut() = StatusCode::OK;
    let headers = resp.headers_mut();
    headers.remove(header::CONTENT_LENGTH);
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    headers.extend(status_fields(code as u8, message));
    *resp.body_mut() = ResponseBody::empty();
}

/// `grpc-status: code` and `grpc-message: message` (percent-encoded as
/// gRPC says), as trailers or in a trailers-only head.
pub fn status_fields(code: u8, message: &str) -> HeaderMap {
    let mut fields = HeaderMap::with_capacity(2);
    fields.insert(GRPC_STATUS.clone(), HeaderValue::from(u16::from(code)));
    if let Ok(v) = HeaderValue::from_str(&percent_encode(message)) {
        fields.insert(GRPC_MESSAGE.clone(), v);
    }
    fields
}

/// gRPC's `grpc-message` encoding: printable ASCII except `%` as is,
/// every other byte of the UTF-8 text as `%XX`.
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The call's deadline from `grpc-timeout` (`1-8 digits` and a unit:
/// `H`ours, `M`inutes, `S`econds, `m`illi-, `u`micro-, `n`anoseconds);
/// `None` when absent or malformed (then no deadline applies, as gRPC
/// servers treat a malformed one).
pub fn timeout(headers: &HeaderMap) -> Option<Duration> {
    let v = headers.get(&GRPC_TIMEOUT)?.as_bytes();
    let (digits, unit) = v.split_at(v.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some(match unit {
        b"H" => Duration::from_secs(n * 3600),
        b"M" => Duration::from_secs(n * 60),
        b"S" => Duration::from_secs(n),
        b"m" => Duration::from_millis(n),
        b"u" => Duration::from_micros(n),
        b"n" => Duration::from_nanos(n),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn grpc_requests_by_content_type() {
        assert!(is_grpc(&headers(&[("content-type", "application/grpc")])));
        assert!(is_grpc(&headers(&[(
            "content-type",
            "application/grpc+proto"
        )])));
        assert!(is_grpc(&headers(&[(
            "content-type",
            "Application/GRPC; x=1"
        )])));
        assert!(!is_grpc(&headers(&[(
            "content-type",
            "application/grpc-web"
        )])));
        assert!(!is_grpc(&headers(&[("content-type", "application/json")])));
        assert!(!is_grpc(&HeaderMap::new()));
    }

    #[test]
    fn timeouts_in_every_unit_and_malformed_ones_ignored() {
        let t = |v: &'static str| timeout(&headers(&[("grpc-timeout", v)]));
        assert_eq!(t("2H"), Some(Duration::from_secs(7200)));
        assert_eq!(t("3M"), Some(Duration::from_secs(180)));
        assert_eq!(t("10S"), Some(Duration::from_secs(10)));
        assert_eq!(t("250m"), Some(Duration::from_millis(250)));
        assert_eq!(t("99999999u"), Some(Duration::from_micros(99_999_999)));
        assert_eq!(t("5n"), Some(Duration::from_nanos(5)));
        for bad in ["", "S", "100", "123456789S", "1s", "-1S", "1.5S"] {
            assert_eq!(t(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn own_errors_become_trailers_only_answers() {
        let mut resp = crate::error_page::with_message(StatusCode::BAD_GATEWAY, "no peer, 100%");
        own_error(&mut resp, "no peer, 100%");
        assert_eq!(resp.status(), StatusCode::OK);
        let h = resp.headers();
        assert_eq!(h["content-type"], "application/grpc");
        assert_eq!(h["grpc-status"], "14");
        assert_eq!(h["grpc-message"], "no peer, 100%25");
        // A code set by whoever made the answer wins over the status.
        let mut resp = crate::error_page::response(StatusCode::SERVICE_UNAVAILABLE);
        resp.extensions_mut()
            .insert(OwnCode(Code::ResourceExhausted));
        own_error(&mut resp, "");
        assert_eq!(resp.headers()["grpc-status"], "8");
        assert_eq!(resp.headers()["grpc-message"], "Service Unavailable");
    }

    #[test]
    fn statuses_map_as_grpc_says_with_moongates_own_meanings() {
        assert_eq!(code_for(StatusCode::UNAUTHORIZED), Code::Unauthenticated);
        assert_eq!(code_for(StatusCode::FORBIDDEN), Code::PermissionDenied);
        assert_eq!(code_for(StatusCode::NOT_FOUND), Code::Unimplemented);
        assert_eq!(
            code_for(StatusCode::TOO_MANY_REQUESTS),
            Code::ResourceExhausted
        );
        assert_eq!(
            code_for(StatusCode::GATEWAY_TIMEOUT),
            Code::DeadlineExceeded
        );
        assert_eq!(code_for(StatusCode::BAD_GATEWAY), Code::Unavailable);
        assert_eq!(code_for(StatusCode::IM_A_TEAPOT), Code::Unknown);
        assert_eq!(percent_encode("héllo\n"), "h%C3%A9llo%0A");
    }
}

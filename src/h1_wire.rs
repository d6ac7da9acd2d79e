//! HTTP/1 text written by both sides of the proxy: header fields (the
//! client response, the upstream request), whole response heads (final
//! and interim responses to clients) and the `Date` value.

use std::time::SystemTime;

use http::{HeaderMap, HeaderValue, StatusCode, Version};

/// Appends `name: value\r\n` for every field of `headers`.
pub fn write_fields(headers: &HeaderMap, out: &mut Vec<u8>) {
    for (name, value) in headers {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
}

/// How a response's Lua handlers spelled header names (`X-Foo`,
/// `cache-Control`): a response extension; HTTP/1 heads write those names
/// as spelled, as nginx sends what ngx_lua was given, instead of the
/// lowercase form.
#[derive(Debug, Clone, Default)]
pub struct HeaderCase(pub Vec<String>);

/// Appends `name: value\r\n` for every field of `headers`, names spelled
/// as `case` says where it has them.
fn write_fields_cased(headers: &HeaderMap, case: &HeaderCase, out: &mut Vec<u8>) {
    for (name, value) in headers {
        let spelled = case
            .0
            .iter()
            .find(|s| s.eq_ignore_ascii_case(name.as_str()))
            .map_or(name.as_str(), String::as_str);
        out.extend_from_slice(spelled.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
}

/// Appends a response head: status line in `version` (HTTP/1.0, else
/// HTTP/1.1), the fields (names spelled as `case` says, if given), the
/// blank line.
pub fn write_response_head(
    version: Version,
    status: StatusCode,
    headers: &HeaderMap,
    case: Option<&HeaderCase>,
    out: &mut Vec<u8>,
) {
    out.extend_from_slice(if version == Version::HTTP_10 {
        b"HTTP/1.0 "
    } else {
        b"HTTP/1.1 "
    });
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    match case {
        Some(case) => write_fields_cased(headers, case, out),
        None => write_fields(headers, out),
    }
    out.extend_from_slice(b"\r\n");
}

/// `date` values, formatted once a second.
#[derive(Default)]
pub struct DateCache {
    second: u64,
    value: Option<HeaderValue>,
}

impl DateCache {
    /// The `date` value for now.
    pub fn now(&mut self) -> HeaderValue {
        let now = SystemTime::now();
        let second = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        match &self.value {
            Some(v) if self.second == second => v.clone(),
            _ => {
                let v = HeaderValue::from_str(&httpdate::fmt_http_date(now))
                    .unwrap_or_else(|_| HeaderValue::from_static(""));
                self.second = second;
                self.value = Some(v.clone());
                v
            }
        }
    }
}

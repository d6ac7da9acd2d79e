//! One access log line as JSON: `{"name":value,...}` with the chosen
//! fields in their order, then a newline. Strings go through serde_json's
//! escaping (quotes, backslashes, control characters); header values that
//! are not UTF-8 have their stray bytes replaced by U+FFFD, so the line is
//! always valid JSON. A value the request does not have is `null`: every
//! chosen key is on every line.

use std::io::Write as _;
use std::time::{Duration, SystemTime};

use http::Version;

use super::field::Field;
use super::{AccessRecord, RequestId};

/// Appends `record`'s line to `out`: `bytes` of body sent, `complete`
/// false when the body was abandoned.
pub(super) fn render(
    out: &mut Vec<u8>,
    fields: &[Field],
    record: &AccessRecord,
    bytes: u64,
    complete: bool,
) {
    out.push(b'{');
    for (i, &field) in fields.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.push(b'"');
        out.extend_from_slice(field.name().as_bytes());
        out.extend_from_slice(b"\":");
        value(out, field, record, bytes, complete);
    }
    out.extend_from_slice(b"}\n");
}

fn value(out: &mut Vec<u8>, field: Field, r: &AccessRecord, bytes: u64, complete: bool) {
    match field {
        Field::Timestamp => {
            let now = humantime::format_rfc3339_micros(SystemTime::now());
            let _ = write!(out, "\"{now}\"");
        }
        Field::Client => {
            let _ = write!(out, "\"{}\"", r.client);
        }
        Field::Method => string(out, r.method.as_str()),
        Field::Uri => string(out, r.uri.path_and_query().map_or("/", |p| p.as_str())),
        Field::Host => match r.host.as_str() {
            "" => null(out),
            host => string(out, host),
        },
        Field::Protocol => string(out, protocol(r.version)),
        Field::Status => number(out, r.status),
        Field::Bytes => number(out, bytes),
        Field::BytesReceived => {
            let body = r.body_received.as_ref().map_or(0, |n| n.get());
            number(out, r.head_received + body);
        }
        Field::RequestTime => seconds(out, Some(r.started.elapsed())),
        Field::UpstreamAddr => opt_string(out, r.upstream_addr.as_deref()),
        Field::UpstreamStatus => match r.upstream_status {
            Some(status) => number(out, status),
            None => null(out),
        },
        Field::UpstreamConnectTime => seconds(out, r.upstream_connect_time),
        Field::UpstreamTime => seconds(out, r.upstream_time),
        Field::CacheStatus => opt_string(out, r.cache_status),
        Field::Route => opt_string(out, r.route.as_deref()),
        Field::RequestId => match &r.request_id {
            Some(RequestId::Header(v)) => bytes_string(out, v.as_bytes()),
            Some(RequestId::Made(id)) => {
                let _ = write!(out, "\"{id:032x}\"");
            }
            None => null(out),
        },
        Field::UserAgent => opt_bytes(out, r.user_agent.as_ref().map(|v| v.as_bytes())),
        Field::Referer => opt_bytes(out, r.referer.as_ref().map(|v| v.as_bytes())),
        Field::Aborted => out.extend_from_slice(if complete { b"false" } else { b"true" }),
        Field::Consumer => opt_string(out, r.consumer.as_deref()),
        Field::TraceId => match r.trace_id {
            Some(id) => {
                let _ = write!(out, "\"{id:032x}\"");
            }
            None => null(out),
        },
    }
}

/// nginx's `$server_protocol` for `version`.
fn protocol(version: Version) -> &'static str {
    match version {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_2 => "HTTP/2.0",
        Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP/1.1",
    }
}

fn null(out: &mut Vec<u8>) {
    out.extend_from_slice(b"null");
}

fn string(out: &mut Vec<u8>, s: &str) {
    // Writing a `str` to a `Vec` cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

fn opt_string(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) => string(out, s),
        None => null(out),
    }
}

/// A header value as a JSON string (borrowed when it is UTF-8, as nearly
/// every one is).
fn bytes_string(out: &mut Vec<u8>, b: &[u8]) {
    string(out, &String::from_utf8_lossy(b));
}

fn opt_bytes(out: &mut Vec<u8>, b: Option<&[u8]>) {
    match b {
        Some(b) => bytes_string(out, b),
        None => null(out),
    }
}

fn number(out: &mut Vec<u8>, n: impl itoa::Integer) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

fn seconds(out: &mut Vec<u8>, d: Option<Duration>) {
    match d {
        // `f64` as serde_json writes it (shortest round-trip form).
        Some(d) => {
            let _ = serde_json::to_writer(&mut *out, &d.as_secs_f64());
        }
        None => null(out),
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::rc::Rc;
    use std::time::Instant;

    use http::HeaderValue;

    use super::*;
    use crate::access_log::FieldSet;

    fn record() -> AccessRecord {
        AccessRecord {
            fields: FieldSet::of(&Field::ALL),
            started: Instant::now(),
            client: "10.1.2.3"
                .parse()
                .unwrap_or(std::net::Ipv4Addr::LOCALHOST.into()),
            method: http::Method::POST,
            uri: http::Uri::from_static("/a?b=1"),
            host: "example.test".into(),
            version: Version::HTTP_2,
            status: 201,
            route: Some("api".into()),
            upstream_addr: Some("127.0.0.1:9".into()),
            upstream_status: Some(201),
            upstream_connect_time: Some(Duration::from_millis(2)),
            upstream_time: Some(Duration::from_millis(5)),
            cache_status: None,
            request_id: Some(RequestId::Made(0xab)),
            trace_id: None,
            consumer: None,
            user_agent: Some(HeaderValue::from_static("curl/8")),
            referer: None,
            head_received: 100,
            body_received: Some(Rc::new(Cell::new(23))),
        }
    }

    /// The line's values by key, and its keys in order.
    fn line(fields: &[Field], r: &AccessRecord) -> (serde_json::Value, Vec<String>) {
        let mut out = Vec::new();
        render(&mut out, fields, r, 7, false);
        assert_eq!(out.last(), Some(&b'\n'));
        let text = String::from_utf8_lossy(&out);
        let value: serde_json::Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON: {e}: {text}"));
        // In the order written (serde_json's map sorts them): by where
        // each appears as a key (the record's values hold no `"key":`).
        let object = value
            .as_object()
            .unwrap_or_else(|| panic!("not an object: {text}"));
        let mut keys: Vec<(usize, String)> = object
            .keys()
            .map(|k| {
                (
                    text.find(&format!("\"{k}\":")).unwrap_or(usize::MAX),
                    k.clone(),
                )
            })
            .collect();
        keys.sort();
        (value, keys.into_iter().map(|(_, k)| k).collect())
    }

    #[test]
    fn every_field_has_its_value() {
        let (m, keys) = line(&Field::ALL, &record());
        assert_eq!(keys, Field::ALL.map(Field::name));
        assert_eq!(m["client"], "10.1.2.3");
        assert_eq!(m["method"], "POST");
        assert_eq!(m["uri"], "/a?b=1");
        assert_eq!(m["host"], "example.test");
        assert_eq!(m["protocol"], "HTTP/2.0");
        assert_eq!(m["status"], 201);
        assert_eq!(m["bytes"], 7);
        assert_eq!(m["bytes_received"], 123);
        assert_eq!(m["upstream_status"], 201);
        assert_eq!(m["upstream_connect_time"], 0.002);
        assert_eq!(m["upstream_time"], 0.005);
        assert_eq!(m["cache_status"], serde_json::Value::Null);
        assert_eq!(m["route"], "api");
        assert_eq!(m["request_id"], format!("{:032x}", 0xab));
        assert_eq!(m["user_agent"], "curl/8");
        assert_eq!(m["referer"], serde_json::Value::Null);
        assert_eq!(m["aborted"], true);
        let ts = m["timestamp"].as_str().unwrap_or_default();
        assert!(humantime::parse_rfc3339(ts).is_ok(), "{ts}");
    }

    #[test]
    fn the_order_is_the_lists() {
        let fields = [Field::Status, Field::Referer, Field::Client];
        let (_, keys) = line(&fields, &record());
        assert_eq!(keys, ["status", "referer", "client"]);
    }

    #[test]
    fn header_values_are_escaped_and_made_utf8() {
        let mut r = record();
        let Ok(ua) = HeaderValue::from_bytes(b"a \"quoted\"\tback\\slash \xff end") else {
            panic!("a valid header value");
        };
        r.user_agent = Some(ua);
        r.request_id = Some(RequestId::Header(HeaderValue::from_static("id-1")));
        r.host = String::new();
        let (m, _) = line(&Field::ALL, &r);
        assert_eq!(m["user_agent"], "a \"quoted\"\tback\\slash \u{fffd} end");
        assert_eq!(m["request_id"], "id-1");
        assert_eq!(m["host"], serde_json::Value::Null);
    }
}

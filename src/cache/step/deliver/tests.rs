//! Unit tests for [`super`]: what a 304, 412, 206 and 416 keep, a range
//! cut across chunks, and the targeted fields removed or forwarded.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Response, StatusCode};
use http_body_util::BodyExt;

use super::*;
use crate::cache::fill::{Fill, Head, Lead, Plan};
use crate::cache::policy::Lifetime;
use crate::cache::zone::test_def;

fn zone(forward_targeted: bool) -> Zone {
    let def = crate::config::CacheZone {
        forward_targeted,
        ..test_def()
    };
    Zone::new(def, None).unwrap_or_else(|e| panic!("{e}"))
}

/// A 200 with `headers` and `body`.
fn ok(headers: &[(&'static str, &'static str)], body: ResponseBody) -> Response<ResponseBody> {
    let mut resp = Response::new(body);
    for (name, value) in headers {
        resp.headers_mut()
            .append(*name, HeaderValue::from_static(value));
    }
    resp
}

const STORED: &[(&str, &str)] = &[
    ("content-type", "text/plain"),
    ("content-length", "10"),
    ("cache-control", "max-age=60"),
    ("cdn-cache-control", "max-age=600"),
    ("etag", "\"v1\""),
    ("last-modified", "Sun, 13 Sep 2020 12:26:40 GMT"),
    ("vary", "accept-encoding"),
    ("age", "3"),
    ("x-cache-status", "HIT"),
    ("x-other", "1"),
];

fn request(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.append(*name, HeaderValue::from_static(value));
    }
    map
}

fn answer_to(
    zone: &Zone,
    method: Method,
    req: &[(&'static str, &'static str)],
    body: ResponseBody,
) -> Response<ResponseBody> {
    let headers = request(req);
    let client = Client {
        method: &method,
        headers: &headers,
    };
    deliver(zone, &client, ok(STORED, body))
}

async fn bytes(resp: Response<ResponseBody>) -> Result<Bytes, String> {
    let body = resp.into_body().collect().await;
    body.map(|c| c.to_bytes()).map_err(|e| e.to_string())
}

/// The response's header names, sorted.
fn names(resp: &Response<ResponseBody>) -> Vec<&str> {
    let mut names: Vec<&str> = resp.headers().keys().map(|n| n.as_str()).collect();
    names.sort_unstable();
    names
}

#[tokio::test]
async fn not_modified_keeps_the_headers_a_304_carries() {
    let zone = zone(false);
    let resp = answer_to(
        &zone,
        Method::GET,
        &[("if-none-match", "W/\"v1\"")],
        ResponseBody::full("0123456789"),
    );
    assert_eq!(resp.status(), StatusCode::NOT_MODIFIED);
    let want = [
        "age",
        "cache-control",
        "etag",
        "last-modified",
        "vary",
        "x-cache-status",
    ];
    assert_eq!(names(&resp), want);
    assert_eq!(bytes(resp).await.ok(), Some(Bytes::new()));
    // Forwarded targeted fields go with it.
    let zone = self::zone(true);
    let resp = answer_to(
        &zone,
        Method::HEAD,
        &[("if-none-match", "*")],
        ResponseBody::empty(),
    );
    assert_eq!(resp.status(), StatusCode::NOT_MODIFIED);
    assert!(resp.headers().contains_key("cdn-cache-control"));
}

#[tokio::test]
async fn a_failed_precondition_is_412_and_a_bad_range_416() {
    let zone = zone(false);
    let resp = answer_to(
        &zone,
        Method::GET,
        &[("if-match", "\"v2\"")],
        ResponseBody::full("0123456789"),
    );
    assert_eq!(resp.status(), StatusCode::PRECONDITION_FAILED);
    assert_eq!(names(&resp), ["content-length", "x-cache-status"]);
    let resp = answer_to(
        &zone,
        Method::GET,
        &[("range", "bytes=10-")],
        ResponseBody::full("0123456789"),
    );
    assert_eq!(resp.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(resp.headers()["content-range"], "bytes */10");
    assert_eq!(resp.headers()["content-length"], "0");
    assert_eq!(bytes(resp).await.ok(), Some(Bytes::new()));
}

#[tokio::test]
async fn a_range_is_206_with_its_bytes_and_the_rest_of_the_headers() {
    let zone = zone(false);
    let resp = answer_to(
        &zone,
        Method::GET,
        &[("range", "bytes=2-4")],
        ResponseBody::full("0123456789"),
    );
    assert_eq!(resp.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(resp.headers()["content-range"], "bytes 2-4/10");
    assert_eq!(resp.headers()["content-length"], "3");
    assert_eq!(resp.headers()["x-other"], "1");
    assert!(!resp.headers().contains_key("cdn-cache-control"));
    assert_eq!(bytes(resp).await.ok(), Some(Bytes::from_static(b"234")));
    // HEAD, another status, or no Range: untouched (but for the field).
    let head = answer_to(
        &zone,
        Method::HEAD,
        &[("range", "bytes=2-4")],
        ResponseBody::empty(),
    );
    assert_eq!(head.status(), StatusCode::OK);
    let mut gone = ok(STORED, ResponseBody::full("0123456789"));
    *gone.status_mut() = StatusCode::GONE;
    let headers = request(&[("range", "bytes=2-4"), ("if-none-match", "*")]);
    let client = Client {
        method: &Method::GET,
        headers: &headers,
    };
    let gone = deliver(&zone, &client, gone);
    assert_eq!(gone.status(), StatusCode::GONE);
    assert!(!gone.headers().contains_key("cdn-cache-control"));
}

/// A body of `parts`, one frame each (another request's fill, followed).
fn chunked(parts: &[&'static [u8]]) -> ResponseBody {
    let zone = Arc::new(zone(false));
    let fill = Arc::new(Fill::new(1 << 20, None));
    let lead = Lead::new(fill.clone());
    let Some(follower) = fill.attach() else {
        panic!("a new fill takes followers");
    };
    let head = Head {
        status: StatusCode::OK,
        headers: HeaderMap::new(),
        lifetime: Lifetime::fresh(Duration::from_secs(60), SystemTime::now()),
        vary: None,
    };
    let plan = Plan {
        zone,
        key: "k".into(),
        marker: None,
    };
    fill.commit(Arc::new(head), plan);
    for part in parts {
        fill.push(&Bytes::from_static(part));
    }
    fill.complete();
    drop(lead);
    ResponseBody::from_kind(Kind::Cache(Box::new(CacheBody::follow(follower))))
}

#[tokio::test]
async fn a_range_is_cut_across_chunks_and_a_short_body_is_an_error() {
    let zone = zone(false);
    let parts: &[&[u8]] = &[b"012", b"345", b"6789"];
    for (range, want) in [
        ("bytes=1-7", &b"1234567"[..]),
        ("bytes=3-5", b"345"),
        ("bytes=6-", b"6789"),
        ("bytes=-1", b"9"),
        ("bytes=0-0", b"0"),
    ] {
        let resp = answer_to(&zone, Method::GET, &[("range", range)], chunked(parts));
        assert_eq!(resp.status(), StatusCode::PARTIAL_CONTENT, "{range}");
        assert_eq!(bytes(resp).await.ok().as_deref(), Some(want), "{range}");
    }
    // Content-Length said 10; the body has 6 bytes.
    let short: &[&[u8]] = &[b"012", b"345"];
    let resp = answer_to(
        &zone,
        Method::GET,
        &[("range", "bytes=4-8")],
        chunked(short),
    );
    assert!(bytes(resp).await.is_err());
}

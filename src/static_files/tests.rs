//! `serve` end to end over real files in a temporary directory: headers,
//! conditionals and ranges here; encodings and path safety in `tests/`.

mod compression;
mod paths;

use std::fs;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Response, StatusCode};
use http_body::Body;
use http_body_util::BodyExt;
use tempfile::TempDir;

use super::{StaticBody, StaticOptions, serve};

/// 2020-09-13T12:26:40Z, so tags and dates are known in advance.
pub(super) const MTIME: u64 = 1_600_000_000;
pub(super) const MTIME_HTTP: &str = "Sun, 13 Sep 2020 12:26:40 GMT";
const DIGITS: &[u8] = b"0123456789abcdefghij";

pub(super) struct Site {
    pub(super) dir: TempDir,
    pub(super) opts: StaticOptions,
}

impl Site {
    pub(super) fn new() -> Self {
        let dir = TempDir::new().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let root = dir.path().join("root");
        fs::create_dir(&root).unwrap_or_else(|e| panic!("mkdir: {e}"));
        let opts = StaticOptions::new(root);
        Site { dir, opts }
    }

    pub(super) fn root(&self) -> &Path {
        &self.opts.root
    }

    /// Writes `rel` under the root with the fixed mtime.
    pub(super) fn file(&self, rel: &str, bytes: &[u8]) {
        self.file_at(rel, bytes, MTIME);
    }

    pub(super) fn file_at(&self, rel: &str, bytes: &[u8], mtime: u64) {
        let path = self.root().join(rel);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).unwrap_or_else(|e| panic!("mkdir: {e}"));
        }
        fs::write(&path, bytes).unwrap_or_else(|e| panic!("write: {e}"));
        let file = fs::File::options()
            .write(true)
            .open(&path)
            .unwrap_or_else(|e| panic!("open: {e}"));
        file.set_modified(UNIX_EPOCH + Duration::from_secs(mtime))
            .unwrap_or_else(|e| panic!("set_modified: {e}"));
    }

    pub(super) async fn req(
        &self,
        method: Method,
        path: &str,
        headers: &[(HeaderName, &str)],
    ) -> (Response<()>, Bytes) {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            let value = HeaderValue::from_str(value).unwrap_or_else(|e| panic!("header: {e}"));
            map.append(name.clone(), value);
        }
        let response = serve(&self.opts, path, &method, &map).await;
        let (parts, body) = response.into_parts();
        let bytes = body
            .collect()
            .await
            .unwrap_or_else(|e| panic!("body: {e}"))
            .to_bytes();
        (Response::from_parts(parts, ()), bytes)
    }

    pub(super) async fn get(
        &self,
        path: &str,
        headers: &[(HeaderName, &str)],
    ) -> (Response<()>, Bytes) {
        self.req(Method::GET, path, headers).await
    }
}

pub(super) fn h(response: &Response<()>, name: HeaderName) -> Option<&str> {
    response.headers().get(name).and_then(|v| v.to_str().ok())
}

#[tokio::test]
async fn serves_a_file_with_its_headers() {
    let site = Site::new();
    site.file("css/hello.txt", b"hello world\n");
    let (res, body) = site.get("css/hello.txt", &[]).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(&body[..], b"hello world\n");
    assert_eq!(
        h(&res, header::CONTENT_TYPE),
        Some("text/plain; charset=utf-8")
    );
    assert_eq!(h(&res, header::CONTENT_LENGTH), Some("12"));
    assert_eq!(h(&res, header::LAST_MODIFIED), Some(MTIME_HTTP));
    assert_eq!(h(&res, header::ETAG), Some("\"5f5e1000-c\""));
    assert_eq!(h(&res, header::ACCEPT_RANGES), Some("bytes"));
    assert_eq!(h(&res, header::VARY), Some("Accept-Encoding"));
    assert_eq!(h(&res, header::CONTENT_ENCODING), None);
    assert_eq!(h(&res, header::CACHE_CONTROL), None);
    // A leading slash names the same file.
    let (res, body) = site.get("/css/hello.txt", &[]).await;
    assert_eq!(
        (res.status(), &body[..]),
        (StatusCode::OK, &b"hello world\n"[..])
    );
}

#[tokio::test]
async fn body_has_an_exact_size_and_streams_in_chunks() {
    let site = Site::new();
    let data: Vec<u8> = (0..300_000u32).map(|i| (i % 253) as u8).collect();
    site.file("big.bin", &data);
    let response = serve(&site.opts, "big.bin", &Method::GET, &HeaderMap::new()).await;
    assert_eq!(
        response.headers().get(header::VARY),
        None,
        "octet-stream is not compressible"
    );
    let mut body: StaticBody = response.into_body();
    assert_eq!(body.size_hint().exact(), Some(300_000));
    let (mut got, mut frames) = (Vec::new(), 0);
    while let Some(frame) = body.frame().await {
        let chunk = frame
            .ok()
            .and_then(|f| f.into_data().ok())
            .unwrap_or_default();
        assert!(chunk.len() <= 64 * 1024, "chunk of {}", chunk.len());
        got.extend_from_slice(&chunk);
        frames += 1;
    }
    assert!(frames >= 5, "{frames} frames");
    assert_eq!(got, data);
}

#[tokio::test]
async fn head_has_the_headers_and_no_body() {
    let site = Site::new();
    site.file("hello.txt", b"hello world\n");
    let response = serve(&site.opts, "hello.txt", &Method::HEAD, &HeaderMap::new()).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response
            .headers()
            .get(header::CONTENT_LENGTH)
            .map(|v| v.as_bytes()),
        Some(&b"12"[..])
    );
    assert!(response.headers().contains_key(header::ETAG));
    assert!(response.body().is_end_stream());
    assert_eq!(response.body().size_hint().exact(), Some(0));
    // Range is defined for GET only: HEAD ignores it.
    let (res, body) = site
        .req(Method::HEAD, "hello.txt", &[(header::RANGE, "bytes=0-1")])
        .await;
    assert_eq!((res.status(), body.len()), (StatusCode::OK, 0));
    assert_eq!(h(&res, header::CONTENT_LENGTH), Some("12"));
}

#[tokio::test]
async fn not_modified_by_etag_or_date() {
    let mut site = Site::new();
    site.opts.expires = Some(Duration::from_secs(60));
    site.file("hello.txt", b"hello world\n");
    let (res, body) = site
        .get(
            "hello.txt",
            &[(header::IF_NONE_MATCH, "\"x\", \"5f5e1000-c\"")],
        )
        .await;
    assert_eq!(res.status(), StatusCode::NOT_MODIFIED);
    assert!(body.is_empty());
    assert_eq!(h(&res, header::ETAG), Some("\"5f5e1000-c\""));
    assert_eq!(h(&res, header::LAST_MODIFIED), Some(MTIME_HTTP));
    assert_eq!(h(&res, header::CACHE_CONTROL), Some("max-age=60"));
    assert_eq!(h(&res, header::VARY), Some("Accept-Encoding"));
    assert_eq!(h(&res, header::CONTENT_LENGTH), None);

    let (res, _) = site
        .get("hello.txt", &[(header::IF_NONE_MATCH, "W/\"5f5e1000-c\"")])
        .await;
    assert_eq!(res.status(), StatusCode::NOT_MODIFIED, "weak comparison");
    let (res, _) = site
        .get("hello.txt", &[(header::IF_MODIFIED_SINCE, MTIME_HTTP)])
        .await;
    assert_eq!(res.status(), StatusCode::NOT_MODIFIED);
    let (res, body) = site
        .get(
            "hello.txt",
            &[(header::IF_MODIFIED_SINCE, "Sun, 13 Sep 2020 12:26:39 GMT")],
        )
        .await;
    assert_eq!(
        (res.status(), &body[..]),
        (StatusCode::OK, &b"hello world\n"[..])
    );
}

#[tokio::test]
async fn if_none_match_mismatch_sends_the_file_even_if_unmodified_since() {
    let site = Site::new();
    site.file("hello.txt", b"hello world\n");
    let (res, body) = site
        .get(
            "hello.txt",
            &[
                (header::IF_NONE_MATCH, "\"5f5e1000-d\""),
                (header::IF_MODIFIED_SINCE, MTIME_HTTP),
            ],
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(&body[..], b"hello world\n");
}

#[tokio::test]
async fn if_match_mismatch_is_412() {
    let site = Site::new();
    site.file("hello.txt", b"hello world\n");
    let (res, body) = site
        .get("hello.txt", &[(header::IF_MATCH, "\"nope\"")])
        .await;
    assert_eq!(
        (res.status(), body.len()),
        (StatusCode::PRECONDITION_FAILED, 0)
    );
    let (res, _) = site
        .get("hello.txt", &[(header::IF_MATCH, "\"5f5e1000-c\"")])
        .await;
    assert_eq!(res.status(), StatusCode::OK);
}

#[tokio::test]
async fn single_ranges_are_206() {
    let site = Site::new();
    site.file("digits.txt", DIGITS);
    for (range, want, content_range) in [
        ("bytes=0-9", &b"0123456789"[..], "bytes 0-9/20"),
        ("bytes=5-", &b"56789abcdefghij"[..], "bytes 5-19/20"),
        ("bytes=-3", &b"hij"[..], "bytes 17-19/20"),
        ("bytes=18-100", &b"ij"[..], "bytes 18-19/20"),
    ] {
        let (res, body) = site.get("digits.txt", &[(header::RANGE, range)]).await;
        assert_eq!(res.status(), StatusCode::PARTIAL_CONTENT, "{range}");
        assert_eq!(&body[..], want, "{range}");
        assert_eq!(h(&res, header::CONTENT_RANGE), Some(content_range));
        assert_eq!(
            h(&res, header::CONTENT_LENGTH),
            Some(want.len().to_string().as_str())
        );
        assert_eq!(h(&res, header::ETAG), Some("\"5f5e1000-14\""));
    }
}

#[tokio::test]
async fn unsatisfiable_range_is_416() {
    let site = Site::new();
    site.file("digits.txt", DIGITS);
    let (res, body) = site
        .get("digits.txt", &[(header::RANGE, "bytes=20-")])
        .await;
    assert_eq!(res.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(h(&res, header::CONTENT_RANGE), Some("bytes */20"));
    assert!(body.is_empty());
}

#[tokio::test]
async fn multiple_or_malformed_ranges_get_the_whole_file() {
    let site = Site::new();
    site.file("digits.txt", DIGITS);
    for range in ["bytes=0-1,5-6", "bytes=9-2", "lines=1-2"] {
        let (res, body) = site.get("digits.txt", &[(header::RANGE, range)]).await;
        assert_eq!(res.status(), StatusCode::OK, "{range}");
        assert_eq!(&body[..], DIGITS);
        assert_eq!(h(&res, header::CONTENT_RANGE), None);
    }
}

#[tokio::test]
async fn if_range_must_match_to_keep_the_range() {
    let site = Site::new();
    site.file("digits.txt", DIGITS);
    let (res, body) = site
        .get(
            "digits.txt",
            &[
                (header::RANGE, "bytes=0-1"),
                (header::IF_RANGE, "\"5f5e1000-15\""),
            ],
        )
        .await;
    assert_eq!((res.status(), &body[..]), (StatusCode::OK, DIGITS));
    let (res, body) = site
        .get(
            "digits.txt",
            &[
                (header::RANGE, "bytes=0-1"),
                (header::IF_RANGE, "\"5f5e1000-14\""),
            ],
        )
        .await;
    assert_eq!(
        (res.status(), &body[..]),
        (StatusCode::PARTIAL_CONTENT, &b"01"[..])
    );
    let (res, _) = site
        .get(
            "digits.txt",
            &[(header::RANGE, "bytes=0-1"), (header::IF_RANGE, MTIME_HTTP)],
        )
        .await;
    assert_eq!(res.status(), StatusCode::PARTIAL_CONTENT);
}

#[tokio::test]
async fn only_get_and_head_are_allowed() {
    let site = Site::new();
    site.file("hello.txt", b"hello");
    for method in [Method::POST, Method::PUT, Method::DELETE, Method::OPTIONS] {
        let (res, body) = site.req(method.clone(), "hello.txt", &[]).await;
        assert_eq!(res.status(), StatusCode::METHOD_NOT_ALLOWED, "{method}");
        assert_eq!(h(&res, header::ALLOW), Some("GET, HEAD"));
        assert!(body.is_empty());
    }
}

#[tokio::test]
async fn expires_sets_max_age_and_expires() {
    let mut site = Site::new();
    site.opts.expires = Some(Duration::from_secs(30 * 24 * 3600));
    site.file("hello.txt", b"hello");
    let (res, _) = site.get("hello.txt", &[]).await;
    assert_eq!(h(&res, header::CACHE_CONTROL), Some("max-age=2592000"));
    let expires = h(&res, header::EXPIRES)
        .and_then(|v| httpdate::parse_http_date(v).ok())
        .and_then(|t| t.duration_since(SystemTime::now()).ok())
        .map(|d| d.as_secs());
    assert!(
        expires.is_some_and(|s| (2_591_990..=2_592_000).contains(&s)),
        "{expires:?}"
    );
    // Errors are not cacheable by `expires`.
    let (res, _) = site.get("missing.txt", &[]).await;
    assert_eq!(h(&res, header::CACHE_CONTROL), None);
}

#[tokio::test]
async fn dates_past_year_9999_do_not_panic() {
    let mut site = Site::new();
    site.opts.expires = Some(Duration::from_secs(u64::MAX / 2));
    site.file("hello.txt", b"hello");
    let (res, body) = site.get("hello.txt", &[]).await;
    assert_eq!((res.status(), &body[..]), (StatusCode::OK, &b"hello"[..]));
    assert_eq!(
        h(&res, header::EXPIRES),
        Some("Fri, 31 Dec 9999 23:59:59 GMT")
    );
    // Filesystems cap mtimes (ext4 at 2446), so the mtime path is checked
    // on the formatter itself.
    assert_eq!(
        super::http_date(300_000_000_000),
        "Fri, 31 Dec 9999 23:59:59 GMT"
    );
    assert_eq!(super::http_date(MTIME), MTIME_HTTP);
}

//! Content negotiation end to end: on-the-fly br/gzip, q-values,
//! precompressed siblings, and what is never compressed.

use async_compression::tokio::bufread::{BrotliDecoder, GzipDecoder, GzipEncoder};
use http::StatusCode;
use http::header;
use tokio::io::AsyncReadExt;

use super::{MTIME, MTIME_HTTP, Site, h};

/// Text long enough to be compressed, and compressible.
fn text(n: usize) -> Vec<u8> {
    b"moongate serves static files. "
        .iter()
        .copied()
        .cycle()
        .take(n)
        .collect()
}

async fn gunzip(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    GzipDecoder::new(bytes)
        .read_to_end(&mut out)
        .await
        .unwrap_or_else(|e| panic!("gunzip: {e}"));
    out
}

async fn unbrotli(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    BrotliDecoder::new(bytes)
        .read_to_end(&mut out)
        .await
        .unwrap_or_else(|e| panic!("unbrotli: {e}"));
    out
}

#[tokio::test]
async fn gzip_on_the_fly_decodes_to_the_file() {
    let site = Site::new();
    let original = text(20_000);
    site.file("app.css", &original);
    let (res, body) = site
        .get("app.css", &[(header::ACCEPT_ENCODING, "gzip, deflate")])
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(h(&res, header::CONTENT_ENCODING), Some("gzip"));
    assert_eq!(h(&res, header::CONTENT_LENGTH), None);
    assert_eq!(h(&res, header::VARY), Some("Accept-Encoding"));
    assert_eq!(
        h(&res, header::CONTENT_TYPE),
        Some("text/css; charset=utf-8")
    );
    assert_eq!(h(&res, header::ETAG), Some("W/\"5f5e1000-4e20-gz\""));
    assert!(body.len() < original.len() / 4, "{} bytes", body.len());
    assert_eq!(gunzip(&body).await, original);
    // The compressed tag revalidates the compressed response only.
    let (res, _) = site
        .get(
            "app.css",
            &[
                (header::ACCEPT_ENCODING, "gzip"),
                (header::IF_NONE_MATCH, "W/\"5f5e1000-4e20-gz\""),
            ],
        )
        .await;
    assert_eq!(res.status(), StatusCode::NOT_MODIFIED);
    let (res, _) = site
        .get(
            "app.css",
            &[(header::IF_NONE_MATCH, "W/\"5f5e1000-4e20-gz\"")],
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);
}

#[tokio::test]
async fn brotli_is_preferred_when_both_are_accepted() {
    let site = Site::new();
    let original = text(5_000);
    site.file("data.json", &original);
    let (res, body) = site
        .get("data.json", &[(header::ACCEPT_ENCODING, "gzip, br")])
        .await;
    assert_eq!(h(&res, header::CONTENT_ENCODING), Some("br"));
    assert_eq!(h(&res, header::ETAG), Some("W/\"5f5e1000-1388-br\""));
    assert_eq!(unbrotli(&body).await, original);
    // ...unless gzip has the higher q-value.
    let (res, body) = site
        .get("data.json", &[(header::ACCEPT_ENCODING, "br;q=0.5, gzip")])
        .await;
    assert_eq!(h(&res, header::CONTENT_ENCODING), Some("gzip"));
    assert_eq!(gunzip(&body).await, original);
}

#[tokio::test]
async fn q_zero_refuses_an_encoding() {
    let site = Site::new();
    let original = text(5_000);
    site.file("app.js", &original);
    let (res, body) = site
        .get("app.js", &[(header::ACCEPT_ENCODING, "br;q=0, gzip;q=0")])
        .await;
    assert_eq!(h(&res, header::CONTENT_ENCODING), None);
    assert_eq!(h(&res, header::CONTENT_LENGTH), Some("5000"));
    assert_eq!(h(&res, header::VARY), Some("Accept-Encoding"));
    assert_eq!(&body[..], &original[..]);
    let (res, body) = site
        .get("app.js", &[(header::ACCEPT_ENCODING, "br;q=0, gzip")])
        .await;
    assert_eq!(h(&res, header::CONTENT_ENCODING), Some("gzip"));
    assert_eq!(gunzip(&body).await, original);
}

#[tokio::test]
async fn small_ranged_or_binary_files_are_not_compressed() {
    let site = Site::new();
    site.file("small.txt", &text(255));
    site.file("big.txt", &text(5_000));
    site.file("logo.png", &text(5_000));
    let gzip = (header::ACCEPT_ENCODING, "gzip, br");
    let (res, body) = site.get("small.txt", std::slice::from_ref(&gzip)).await;
    assert_eq!((h(&res, header::CONTENT_ENCODING), body.len()), (None, 255));
    let (res, body) = site
        .get("big.txt", &[gzip.clone(), (header::RANGE, "bytes=0-3")])
        .await;
    assert_eq!(res.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(
        (h(&res, header::CONTENT_ENCODING), &body[..]),
        (None, &b"moon"[..])
    );
    let (res, body) = site.get("logo.png", &[gzip]).await;
    assert_eq!(
        (h(&res, header::CONTENT_ENCODING), body.len()),
        (None, 5_000)
    );
    assert_eq!(h(&res, header::VARY), None);
}

async fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    GzipEncoder::new(bytes)
        .read_to_end(&mut out)
        .await
        .unwrap_or_else(|e| panic!("gzip: {e}"));
    out
}

#[tokio::test]
async fn precompressed_sibling_is_used_when_fresh() {
    let site = Site::new();
    let original = text(4_000);
    // The sibling decodes to different text, so the test can tell it apart.
    let sibling = gzip(b"from the precompressed sibling").await;
    site.file("app.js", &original);
    site.file_at("app.js.gz", &sibling, MTIME + 5);
    let (res, body) = site
        .get("app.js", &[(header::ACCEPT_ENCODING, "br, gzip")])
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        h(&res, header::CONTENT_ENCODING),
        Some("gzip"),
        "a sibling beats br on the fly"
    );
    assert_eq!(
        h(&res, header::CONTENT_LENGTH),
        Some(sibling.len().to_string().as_str())
    );
    assert_eq!(
        h(&res, header::CONTENT_TYPE),
        Some("text/javascript; charset=utf-8")
    );
    assert_eq!(h(&res, header::LAST_MODIFIED), Some(MTIME_HTTP));
    let etag = format!("\"{:x}-{:x}-gz\"", MTIME + 5, sibling.len());
    assert_eq!(h(&res, header::ETAG), Some(etag.as_str()));
    assert_eq!(&body[..], &sibling[..]);

    // An older sibling is stale: compress the file itself instead.
    site.file_at("app.js.gz", &sibling, MTIME - 5);
    let (res, body) = site
        .get("app.js", &[(header::ACCEPT_ENCODING, "gzip")])
        .await;
    assert_eq!(h(&res, header::CONTENT_LENGTH), None);
    assert_eq!(gunzip(&body).await, original);
}

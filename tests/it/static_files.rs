//! Static routes (`root`): validators, conditional requests, ranges, gzip,
//! and no way out of the root.

use std::path::Path;
use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header;
use tokio::io::AsyncReadExt;

use crate::support::{self, Moongate};

/// A plain HTTP/1.1 client (rustls needs its provider even for http://).
fn client() -> reqwest::Client {
    support::install_crypto();
    support::client()
}

const SECRET: &str = "SECRET-OUTSIDE-THE-ROOT";

/// The bytes of `hello.bin`: 256 distinct bytes, so ranges are checkable.
fn hello_bytes() -> Vec<u8> {
    (0..=255u8).collect()
}

/// A compressible text file over 1 KiB.
fn big_text() -> String {
    (0..400)
        .map(|i| format!("line {i}: the quick brown fox jumps over the lazy dog\n"))
        .collect()
}

/// A site under `base/root`, with secrets beside the root.
fn write_site(base: &Path) {
    let root = base.join("root");
    std::fs::create_dir_all(root.join("a")).expect("mkdir a");
    std::fs::create_dir_all(root.join("noindex")).expect("mkdir noindex");
    std::fs::create_dir_all(root.join("site")).expect("mkdir site");
    std::fs::write(root.join("hello.bin"), hello_bytes()).expect("hello");
    std::fs::write(root.join("big.txt"), big_text()).expect("big");
    std::fs::write(root.join("a/inner.txt"), "inner").expect("inner");
    std::fs::write(root.join("noindex/file.txt"), "file").expect("file");
    std::fs::write(root.join("site/index.html"), "<h1>index page</h1>").expect("index");
    std::fs::write(base.join("Cargo.toml"), SECRET).expect("secret");
    std::fs::write(base.join("x"), SECRET).expect("secret x");
}

/// moongate with `/static/` served from a fresh site; returns the site's base too.
fn start() -> (Moongate, tempfile::TempDir) {
    let base = tempfile::tempdir().expect("site dir");
    write_site(base.path());
    let conf = format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\nworkers = 2\naccess_log = \"off\"\n\n\
         [[route]]\npath = \"/static/\"\nroot = \"{}\"\nexpires = \"1h\"\n",
        base.path().join("root").display()
    );
    (Moongate::start(&conf), base)
}

fn header_str(resp: &reqwest::Response, name: header::HeaderName) -> String {
    resp.headers()
        .get(&name)
        .unwrap_or_else(|| panic!("no {name} in {:?}", resp.headers()))
        .to_str()
        .expect("ascii header")
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_has_validators_length_and_max_age() {
    let (mg, _site) = start();
    let resp = client()
        .get(mg.url("/static/hello.bin"))
        .send()
        .await
        .expect("get");
    assert_eq!(resp.status(), StatusCode::OK);
    let etag = header_str(&resp, header::ETAG);
    assert!(etag.ends_with('"') && etag.contains('"'), "etag {etag}");
    let last_modified = header_str(&resp, header::LAST_MODIFIED);
    assert!(
        httpdate::parse_http_date(&last_modified).is_ok(),
        "{last_modified}"
    );
    assert_eq!(header_str(&resp, header::CONTENT_LENGTH), "256");
    let cache = header_str(&resp, header::CACHE_CONTROL);
    assert!(cache.contains("max-age=3600"), "{cache}");
    let body = resp.bytes().await.expect("body");
    assert_eq!(body.as_ref(), hello_bytes().as_slice());

    // HEAD: the same headers, no body.
    let head = client()
        .head(mg.url("/static/hello.bin"))
        .send()
        .await
        .expect("head");
    assert_eq!(head.status(), StatusCode::OK);
    assert_eq!(header_str(&head, header::ETAG), etag);
    assert_eq!(head.bytes().await.expect("head body").len(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conditional_requests_get_304() {
    let (mg, site) = start();
    let client = client();
    let url = mg.url("/static/hello.bin");
    let first = client.get(&url).send().await.expect("get");
    assert_eq!(first.status(), StatusCode::OK);
    let etag = header_str(&first, header::ETAG);
    let last_modified = header_str(&first, header::LAST_MODIFIED);

    let inm = client
        .get(&url)
        .header(header::IF_NONE_MATCH, &etag)
        .send()
        .await
        .expect("if-none-match");
    assert_eq!(inm.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(header_str(&inm, header::ETAG), etag);
    assert!(inm.bytes().await.expect("304 body").is_empty());

    let ims = client
        .get(&url)
        .header(header::IF_MODIFIED_SINCE, &last_modified)
        .send()
        .await
        .expect("if-modified-since");
    assert_eq!(ims.status(), StatusCode::NOT_MODIFIED);

    // Another tag, or an older date, gets the file.
    let other = client
        .get(&url)
        .header(header::IF_NONE_MATCH, "\"not-the-tag\"")
        .send()
        .await
        .expect("other tag");
    assert_eq!(other.status(), StatusCode::OK);
    let older = client
        .get(&url)
        .header(header::IF_MODIFIED_SINCE, "Mon, 01 Jan 2001 00:00:00 GMT")
        .send()
        .await
        .expect("older date");
    assert_eq!(older.status(), StatusCode::OK);

    // A changed file has a new tag: the old one no longer matches.
    let path = site.path().join("root/hello.bin");
    std::fs::write(&path, b"changed, and of another length").expect("rewrite");
    let after = client
        .get(&url)
        .header(header::IF_NONE_MATCH, &etag)
        .send()
        .await
        .expect("after change");
    assert_eq!(after.status(), StatusCode::OK);
    assert_ne!(header_str(&after, header::ETAG), etag);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ranges_get_206_or_416() {
    let (mg, _site) = start();
    let client = client();
    let url = mg.url("/static/hello.bin");
    let part = client
        .get(&url)
        .header(header::RANGE, "bytes=0-9")
        .send()
        .await
        .expect("range");
    assert_eq!(part.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(header_str(&part, header::CONTENT_RANGE), "bytes 0-9/256");
    assert_eq!(header_str(&part, header::CONTENT_LENGTH), "10");
    assert_eq!(
        part.bytes().await.expect("body").as_ref(),
        &hello_bytes()[..10]
    );

    let middle = client
        .get(&url)
        .header(header::RANGE, "bytes=100-")
        .send()
        .await
        .expect("open range");
    assert_eq!(middle.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(
        header_str(&middle, header::CONTENT_RANGE),
        "bytes 100-255/256"
    );
    assert_eq!(
        middle.bytes().await.expect("body").as_ref(),
        &hello_bytes()[100..]
    );

    let beyond = client
        .get(&url)
        .header(header::RANGE, "bytes=1000-2000")
        .send()
        .await
        .expect("unsatisfiable");
    assert_eq!(beyond.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(header_str(&beyond, header::CONTENT_RANGE), "bytes */256");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gzip_when_asked() {
    let (mg, _site) = start();
    let client = client();
    let url = mg.url("/static/big.txt");
    let zipped = client
        .get(&url)
        .header(header::ACCEPT_ENCODING, "gzip")
        .send()
        .await
        .expect("gzip");
    assert_eq!(zipped.status(), StatusCode::OK);
    assert_eq!(header_str(&zipped, header::CONTENT_ENCODING), "gzip");
    assert!(header_str(&zipped, header::VARY).contains("Accept-Encoding"));
    let wire = zipped.bytes().await.expect("gzip body");
    assert!(wire.len() < big_text().len(), "not smaller: {}", wire.len());
    let mut plain = Vec::new();
    async_compression::tokio::bufread::GzipDecoder::new(wire.as_ref())
        .read_to_end(&mut plain)
        .await
        .expect("valid gzip");
    assert_eq!(String::from_utf8(plain).expect("utf-8"), big_text());

    // Not asked: identity.
    let identity = client.get(&url).send().await.expect("identity");
    assert!(identity.headers().get(header::CONTENT_ENCODING).is_none());
    assert_eq!(identity.text().await.expect("text"), big_text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_way_out_of_the_root_and_directories_need_an_index() {
    let (mg, _site) = start();
    for path in [
        "/static/../Cargo.toml",
        "/static/%2e%2e/Cargo.toml",
        "/static/%2E%2E/Cargo.toml",
        "/static/..%2fCargo.toml",
        "/static/..%2FCargo.toml",
        "/static/a/%2e%2e/%2e%2e/x",
        "/static/a/../../x",
        "/static/a/..%5c..%5cx",
        "/static/%2e%2e%2fx",
    ] {
        let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        let answer =
            support::raw_exchange(mg.http[0], req.as_bytes(), Duration::from_secs(5)).await;
        let status = support::raw_status(&answer);
        assert!(
            [400, 403, 404].contains(&status),
            "{path}: status {status}: {answer:?}"
        );
        assert!(!answer.contains(SECRET), "{path} leaked: {answer:?}");
    }
    // The file inside is reachable, even through a harmless dot.
    let ok = support::raw_exchange(
        mg.http[0],
        b"GET /static/a/./inner.txt HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(support::raw_status(&ok), 200, "{ok:?}");
    assert!(ok.ends_with("inner"), "{ok:?}");

    let client = client();
    for path in ["/static/noindex/", "/static/noindex", "/static/hello.bin/"] {
        let r = client.get(mg.url(path)).send().await.expect("dir");
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{path}");
    }
    let index = client
        .get(mg.url("/static/site/"))
        .send()
        .await
        .expect("index");
    assert_eq!(index.status(), StatusCode::OK);
    let ct = header_str(&index, header::CONTENT_TYPE);
    assert!(ct.starts_with("text/html"), "{ct}");
    assert_eq!(
        index.text().await.expect("index body"),
        "<h1>index page</h1>"
    );
}

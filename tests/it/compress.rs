//! Response compression (`compress = {...}`) through real requests: the
//! coding chosen by q-values and decoded by the reference codec crates
//! (flate2, brotli-decompressor, zstd), every case left in identity, `Vary`
//! added and merged, a streamed 5 MB body (same bytes back, moongate's RSS
//! flat), a held event stream that still reaches the client, a Lua content
//! answer, the cache (one identity entry, MISS and HIT both compressed),
//! `[server]` defaults under route overrides. Config errors:
//! `compress_config.rs`.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::Response;
use tokio::io::AsyncWriteExt;
use tokio::sync::Notify;

use crate::support::{Moongate, Origin, RawOrigin, client};

/// Compressible text of `n` bytes (words, not one repeated byte).
fn text_of(n: usize) -> Vec<u8> {
    let words = ["alpha ", "beta ", "gamma ", "delta ", "moongate ", "edge\n"];
    let mut out = Vec::with_capacity(n + 16);
    let mut i = 0usize;
    while out.len() < n {
        out.extend_from_slice(words[(i * 7 + i / 5) % words.len()].as_bytes());
        i += 1;
    }
    out.truncate(n);
    out
}

/// The origin of most tests: the path picks the answer.
async fn origin() -> Origin {
    Origin::start(|req| async move {
        let path = req.uri().path().to_owned();
        let mut b = Response::builder().status(200);
        let body: Vec<u8> = match path.as_str() {
            "/page" => {
                b = b
                    .header("content-type", "text/html; charset=utf-8")
                    .header("etag", "\"v1\"");
                text_of(20_000)
            }
            "/small" => {
                b = b.header("content-type", "text/html");
                text_of(500)
            }
            "/png" => {
                b = b.header("content-type", "image/png");
                text_of(20_000)
            }
            "/encoded" => {
                b = b
                    .header("content-type", "text/html")
                    .header("content-encoding", "gzip");
                gzip(&text_of(20_000))
            }
            "/no-transform" => {
                b = b
                    .header("content-type", "text/html")
                    .header("cache-control", "public, no-transform");
                text_of(20_000)
            }
            "/vary" => {
                b = b
                    .header("content-type", "application/json")
                    .header("vary", "Origin");
                text_of(20_000)
            }
            "/cached" => {
                b = b
                    .header("content-type", "text/plain")
                    .header("cache-control", "max-age=60");
                text_of(30_000)
            }
            _ => {
                b = b.status(404).header("content-type", "text/plain");
                b"nope".to_vec()
            }
        };
        b.body(Full::new(Bytes::from(body))).expect("reply")
    })
    .await
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).expect("gzip");
    e.finish().expect("gzip")
}

/// `body` decoded from `coding` by the reference crates ("" = identity).
fn decode(coding: &str, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    match coding {
        "" => out.extend_from_slice(body),
        "gzip" => {
            flate2::read::GzDecoder::new(body)
                .read_to_end(&mut out)
                .expect("gunzip");
        }
        "br" => {
            brotli_decompressor::Decompressor::new(body, 4096)
                .read_to_end(&mut out)
                .expect("brotli");
        }
        "zstd" => out = zstd::stream::decode_all(body).expect("zstd"),
        other => panic!("unexpected coding {other:?}"),
    }
    out
}

/// One GET: status, headers, raw body.
async fn get(
    mg: &Moongate,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, reqwest::header::HeaderMap, Vec<u8>) {
    let mut req = client().get(mg.url(path));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.expect("request");
    let status = resp.status().as_u16();
    let h = resp.headers().clone();
    let body = resp.bytes().await.expect("body").to_vec();
    (status, h, body)
}

fn header<'a>(h: &'a reqwest::header::HeaderMap, name: &str) -> &'a str {
    h.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
}

fn conf(origin: SocketAddr, server_compress: &str, routes: &str) -> String {
    format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\nworkers = 2\naccess_log = \"off\"\n{server_compress}\n\n\
         [upstream.app]\nservers = [{{ addr = \"{origin}\" }}]\n\n{routes}"
    )
}

const ROUTE: &str = "[[route]]\npath = \"/\"\nupstream = \"app\"\ncompress = {}\n";

#[tokio::test]
async fn coding_follows_q_values_then_preference() {
    let o = origin().await;
    let mg = Moongate::start(&conf(o.addr, "", ROUTE));
    let want = text_of(20_000);
    for (accept, coding) in [
        ("gzip", "gzip"),
        ("gzip;q=0.5, br", "br"),
        ("br;q=0.5, zstd", "zstd"),
        ("gzip, br, zstd", "zstd"),
        ("GZIP;q=1, br;q=0.9, zstd;q=0.1", "gzip"),
        ("*", "zstd"),
        ("*;q=0.5, zstd;q=0, br;q=0", "gzip"),
    ] {
        let (status, h, body) = get(&mg, "/page", &[("accept-encoding", accept)]).await;
        assert_eq!(status, 200, "{accept}");
        assert_eq!(header(&h, "content-encoding"), coding, "{accept}");
        assert_eq!(header(&h, "vary"), "Accept-Encoding", "{accept}");
        assert_eq!(header(&h, "etag"), "W/\"v1\"", "{accept}");
        assert!(h.get("content-length").is_none(), "{accept}");
        assert!(
            body.len() < want.len() / 3,
            "{accept}: {} bytes",
            body.len()
        );
        assert_eq!(decode(coding, &body), want, "{accept}");
    }
}

#[tokio::test]
async fn configured_algorithms_levels_and_types() {
    let o = origin().await;
    let routes = "[[route]]\npath = \"/\"\nupstream = \"app\"\n\
                  compress = { algorithms = [\"gzip\", \"br\"], level = { gzip = 9, br = 1 }, types = [\"image/*\"], min_length = \"16KiB\" }\n";
    let mg = Moongate::start(&conf(o.addr, "", routes));
    // Only listed codings, in the listed order on a tie.
    let (_, h, body) = get(&mg, "/png", &[("accept-encoding", "zstd, br, gzip")]).await;
    assert_eq!(header(&h, "content-encoding"), "gzip");
    assert_eq!(decode("gzip", &body), text_of(20_000));
    let (_, h, _) = get(&mg, "/png", &[("accept-encoding", "zstd")]).await;
    assert_eq!(header(&h, "content-encoding"), "");
    // text/html is not listed now.
    let (_, h, _) = get(&mg, "/page", &[("accept-encoding", "gzip")]).await;
    assert_eq!(header(&h, "content-encoding"), "");
    assert_eq!(header(&h, "vary"), "");
}

#[tokio::test]
async fn identity_when_compression_does_not_apply() {
    let o = origin().await;
    let mg = Moongate::start(&conf(o.addr, "", ROUTE));
    let page = text_of(20_000);
    let ae = ("accept-encoding", "gzip, br, zstd");

    // Not asked: identity, but marked as varying for caches downstream.
    let (_, h, body) = get(&mg, "/page", &[]).await;
    assert_eq!(header(&h, "content-encoding"), "");
    assert_eq!(header(&h, "vary"), "Accept-Encoding");
    assert_eq!(header(&h, "etag"), "\"v1\"");
    assert_eq!(body, page);
    let (_, h, body) = get(&mg, "/page", &[("accept-encoding", "identity, gzip;q=0")]).await;
    assert_eq!(header(&h, "content-encoding"), "");
    assert_eq!(body, page);

    // Already encoded by the origin: passed as it is.
    let (_, h, body) = get(&mg, "/encoded", &[ae]).await;
    assert_eq!(header(&h, "content-encoding"), "gzip");
    assert_eq!(decode("gzip", &body), page);

    // no-transform, a non-matching type, below min_length.
    for path in ["/no-transform", "/png", "/small"] {
        let (status, h, body) = get(&mg, path, &[ae]).await;
        assert_eq!(status, 200, "{path}");
        assert_eq!(header(&h, "content-encoding"), "", "{path}");
        assert_eq!(header(&h, "vary"), "", "{path}");
        assert!(h.get("content-length").is_some(), "{path}");
        assert_eq!(
            body.len(),
            if path == "/small" { 500 } else { 20_000 },
            "{path}"
        );
    }

    // A Range request: identity bytes, whatever the origin did with it.
    let (_, h, body) = get(&mg, "/page", &[ae, ("range", "bytes=0-99")]).await;
    assert_eq!(header(&h, "content-encoding"), "");
    assert!(body.starts_with(&page[..100]));

    // HEAD: no coding named for a body not sent.
    let resp = client()
        .head(mg.url("/page"))
        .header("accept-encoding", "gzip")
        .send()
        .await
        .expect("head");
    assert_eq!(resp.status().as_u16(), 200);
    assert!(resp.headers().get("content-encoding").is_none());
}

#[tokio::test]
async fn vary_is_merged_with_the_origins() {
    let o = origin().await;
    let mg = Moongate::start(&conf(o.addr, "", ROUTE));
    let (_, h, body) = get(&mg, "/vary", &[("accept-encoding", "br")]).await;
    let vary: Vec<&str> = h
        .get_all("vary")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    assert_eq!(vary, ["Origin, Accept-Encoding"]);
    assert_eq!(decode("br", &body), text_of(20_000));
}

#[tokio::test]
async fn server_default_and_route_overrides() {
    let o = origin().await;
    let routes = "[[route]]\npath = \"/page\"\nupstream = \"app\"\n\n\
                  [[route]]\npath = \"/png\"\nupstream = \"app\"\ncompress = { types = [\"image/png\"] }\n\n\
                  [[route]]\npath = \"/vary\"\nupstream = \"app\"\ncompress = { enabled = false }\n";
    let server = "compress = { algorithms = [\"br\"] }";
    let mg = Moongate::start(&conf(o.addr, server, routes));
    let ae = ("accept-encoding", "gzip, br, zstd");
    let (_, h, _) = get(&mg, "/page", &[ae]).await;
    assert_eq!(header(&h, "content-encoding"), "br");
    // The route's `types` over the server's, its `algorithms` inherited.
    let (_, h, body) = get(&mg, "/png", &[ae]).await;
    assert_eq!(header(&h, "content-encoding"), "br");
    assert_eq!(decode("br", &body), text_of(20_000));
    let (_, h, _) = get(&mg, "/vary", &[ae]).await;
    assert_eq!(header(&h, "content-encoding"), "");
    assert_eq!(header(&h, "vary"), "Origin");
}

/// VmRSS of `pid` in KiB.
fn rss_kib(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// An origin streaming `total` bytes of text in 64 KiB chunks (chunked).
async fn streaming_origin(total: usize) -> RawOrigin {
    RawOrigin::start(move |_path, mut stream| async move {
        let head = "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n";
        if stream.write_all(head.as_bytes()).await.is_err() {
            return;
        }
        let body = text_of(total);
        for piece in body.chunks(64 * 1024) {
            let mut c = format!("{:x}\r\n", piece.len()).into_bytes();
            c.extend_from_slice(piece);
            c.extend_from_slice(b"\r\n");
            if stream.write_all(&c).await.is_err() {
                return;
            }
        }
        let _ = stream.write_all(b"0\r\n\r\n").await;
    })
    .await
}

#[tokio::test]
async fn a_streamed_5_mb_body_decodes_to_the_same_bytes_with_flat_rss() {
    const TOTAL: usize = 5 * 1024 * 1024;
    let o = streaming_origin(TOTAL).await;
    let mg = Moongate::start(&conf(o.addr, "", ROUTE));
    // Warm up (threads, pools, allocator arenas) before the baseline.
    let (_, h, _) = get(&mg, "/warm", &[("accept-encoding", "gzip")]).await;
    assert_eq!(header(&h, "content-encoding"), "gzip");
    let before = rss_kib(mg.pid());
    let want = text_of(TOTAL);
    for coding in ["gzip", "br", "zstd"] {
        // Read as it streams and decode incrementally: the test holds the
        // compressed bytes, never asks moongate for a buffered body.
        let mut resp = client()
            .get(mg.url("/big"))
            .header("accept-encoding", coding)
            .send()
            .await
            .expect("request");
        assert_eq!(header(resp.headers(), "content-encoding"), coding);
        let mut raw = Vec::new();
        let mut frames = 0;
        while let Some(chunk) = resp.chunk().await.expect("chunk") {
            raw.extend_from_slice(&chunk);
            frames += 1;
        }
        assert!(frames > 1, "{coding}: one frame only");
        assert!(raw.len() < TOTAL / 4, "{coding}: {} bytes", raw.len());
        assert!(
            decode(coding, &raw) == want,
            "{coding}: decoded bytes differ"
        );
    }
    let after = rss_kib(mg.pid());
    assert!(
        after < before + 30 * 1024,
        "moongate's RSS grew from {before} KiB to {after} KiB over three 5 MB bodies"
    );
}

#[tokio::test]
async fn a_held_event_stream_still_reaches_the_client() {
    let release = Arc::new(Notify::new());
    let gate = release.clone();
    let o = RawOrigin::start(move |_path, mut stream| {
        let gate = gate.clone();
        async move {
            let head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n";
            let event = b"data: first event\n\n";
            let mut c = format!("{:x}\r\n", event.len()).into_bytes();
            c.extend_from_slice(event);
            c.extend_from_slice(b"\r\n");
            let _ = stream.write_all(head.as_bytes()).await;
            let _ = stream.write_all(&c).await;
            // Held until the client has seen the first event.
            gate.notified().await;
            let _ = stream.write_all(b"0\r\n\r\n").await;
        }
    })
    .await;
    let mg = Moongate::start(&conf(o.addr, "", ROUTE));
    let mut resp = client()
        .get(mg.url("/events"))
        .header("accept-encoding", "gzip")
        .send()
        .await
        .expect("request");
    assert_eq!(header(resp.headers(), "content-encoding"), "gzip");
    let mut decoder = flate2::write::GzDecoder::new(Vec::new());
    let seen = tokio::time::timeout(Duration::from_secs(10), async {
        while !decoder.get_ref().ends_with(b"data: first event\n\n") {
            let chunk = resp
                .chunk()
                .await
                .expect("chunk")
                .expect("stream ended early");
            decoder.write_all(&chunk).expect("gunzip");
            decoder.flush().expect("gunzip");
        }
    })
    .await;
    release.notify_one();
    assert!(
        seen.is_ok(),
        "the first event did not arrive while the origin held the stream"
    );
    while let Some(chunk) = resp.chunk().await.expect("chunk") {
        decoder.write_all(&chunk).expect("gunzip");
    }
    assert_eq!(
        decoder.finish().expect("gunzip end"),
        b"data: first event\n\n"
    );
}

#[tokio::test]
async fn lua_content_is_compressed() {
    let routes = "[[route]]\npath_exact = \"/lua\"\ncompress = {}\nlua.content_inline = '''\n\
                  ngx.header.content_type = \"application/json\"\n\
                  for i = 1, 300 do ngx.print('{\"n\":', i, ',\"text\":\"compressible\"}\\n') end\n'''\n";
    let mg = Moongate::start(&format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\nworkers = 1\naccess_log = \"off\"\n\n{routes}"
    ));
    let (status, h, body) = get(&mg, "/lua", &[("accept-encoding", "zstd")]).await;
    assert_eq!(status, 200);
    assert_eq!(header(&h, "content-encoding"), "zstd");
    let text = String::from_utf8(decode("zstd", &body)).expect("utf-8");
    assert_eq!(text.lines().count(), 300);
    assert!(
        text.starts_with("{\"n\":1,\"text\":\"compressible\"}"),
        "{text:.80}"
    );
}

#[tokio::test]
async fn the_cache_stores_identity_and_compresses_hits() {
    let o = origin().await;
    let routes = "[[route]]\npath = \"/\"\nupstream = \"app\"\ncache = \"pages\"\ncompress = {}\n\n\
                  [cache.pages]\nmemory = \"4MiB\"\n";
    let mg = Moongate::start(&conf(o.addr, "", routes));
    let want = text_of(30_000);
    let status_of = |h: &reqwest::header::HeaderMap| header(h, "x-cache-status").to_owned();
    let (_, h, body) = get(&mg, "/cached", &[("accept-encoding", "gzip")]).await;
    assert_eq!(status_of(&h), "MISS");
    assert_eq!(header(&h, "content-encoding"), "gzip");
    assert_eq!(decode("gzip", &body), want);
    let (_, h, body) = get(&mg, "/cached", &[("accept-encoding", "gzip")]).await;
    assert_eq!(status_of(&h), "HIT");
    assert_eq!(header(&h, "content-encoding"), "gzip");
    assert_eq!(header(&h, "vary"), "Accept-Encoding");
    assert_eq!(decode("gzip", &body), want);
    // The one stored entry serves every coding, and identity.
    let (_, h, body) = get(&mg, "/cached", &[("accept-encoding", "br")]).await;
    assert_eq!(status_of(&h), "HIT");
    assert_eq!(header(&h, "content-encoding"), "br");
    assert_eq!(decode("br", &body), want);
    let (_, h, body) = get(&mg, "/cached", &[]).await;
    assert_eq!(status_of(&h), "HIT");
    assert_eq!(header(&h, "content-encoding"), "");
    assert_eq!(
        h.get("content-length").and_then(|v| v.to_str().ok()),
        Some("30000")
    );
    assert_eq!(body, want);
    assert_eq!(o.hits(), 1, "the origin was asked more than once");
}

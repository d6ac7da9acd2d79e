//! Lua's cache decisions (`mg.cache.*`) through real requests: a key
//! shared by two URLs, bypass (not looked up, still stored), no_store and
//! ttl from access, ttl and no_store from header_filter on an upstream
//! header, and the harmless `nil, err` outside a cache route or phase.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use http_body_util::Full;
use hyper::Response;

use crate::support::{Moongate, Origin, app_conf, client};

/// Paths ending in `/nocc` carry no Cache-Control, `/hf-no` says
/// `X-Cacheable: no`, `/hf-ttl` says `X-Ttl: 60` without Cache-Control;
/// the rest max-age=60. Each body carries a serial number.
async fn origin() -> Origin {
    let serial = Arc::new(AtomicUsize::new(0));
    Origin::start(move |req| {
        let serial = serial.clone();
        async move {
            let n = serial.fetch_add(1, Ordering::SeqCst);
            let path = req.uri().path().to_owned();
            let mut reply = Response::builder()
                .status(200)
                .header("content-type", "text/plain");
            if path.ends_with("/hf-no") {
                reply = reply
                    .header("cache-control", "max-age=60")
                    .header("x-cacheable", "no");
            } else if path.ends_with("/hf-ttl") {
                reply = reply.header("x-ttl", "60");
            } else if !path.ends_with("/nocc") {
                reply = reply.header("cache-control", "max-age=60");
            }
            let body = format!("{path} {n}");
            reply.body(Full::new(Bytes::from(body))).expect("reply")
        }
    })
    .await
}

fn conf(origin: std::net::SocketAddr) -> String {
    format!(
        r#"{}
[[route]]
path = "/k/"
upstream = "app"
cache = "pages"
lua.access_inline = 'require("moongate").cache.key("one key")'

[[route]]
path = "/b/"
upstream = "app"
cache = "pages"
lua.access_inline = 'if ngx.var.http_x_bypass then require("moongate").cache.bypass() end'

[[route]]
path = "/ns/"
upstream = "app"
cache = "pages"
lua.access_inline = 'require("moongate").cache.no_store()'

[[route]]
path = "/ttl/"
upstream = "app"
cache = "pages"
lua.access_inline = 'require("moongate").cache.ttl(60)'

[[route]]
path = "/hf/"
upstream = "app"
cache = "pages"
lua.header_filter_inline = '''
local mg = require "moongate"
if ngx.header["X-Cacheable"] == "no" then mg.cache.no_store() end
local t = ngx.header["X-Ttl"]
if t then mg.cache.ttl(tonumber(t)) end
'''

[[route]]
path = "/errs/nocache"
lua.content_inline = '''
local mg = require "moongate"
local ok, err = mg.cache.ttl(5)
local ok2, err2 = pcall(mg.cache.key, 42)
local ok3, err3 = pcall(mg.cache.ttl, -1)
ngx.say(tostring(ok), "|", err, "|", tostring(ok2), "|", tostring(ok3))
'''

[[route]]
path = "/errs/phase"
upstream = "app"
cache = "pages"
lua.header_filter_inline = '''
local ok, err = require("moongate").cache.key("late")
ngx.header["X-Err"] = tostring(ok) .. "|" .. err
'''

[[route]]
path = "/"
upstream = "app"
cache = "pages"

[cache.pages]
memory = "4MiB"
"#,
        app_conf(origin, 1)
    )
}

/// X-Cache-Status and body of one request, with `X-Bypass` if `bypass`.
async fn get(url: &str, bypass: bool) -> (String, String) {
    let mut req = client().get(url);
    if bypass {
        req = req.header("x-bypass", "1");
    }
    let resp = req.send().await.expect("request");
    let cache = crate::support::cache_status(&resp);
    (cache, resp.text().await.expect("body"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lua_key_maps_two_urls_to_one_entry() {
    let origin = origin().await;
    let mg = Moongate::start(&conf(origin.addr));
    let (c1, b1) = get(&mg.url("/k/a"), false).await;
    let (c2, b2) = get(&mg.url("/k/b"), false).await;
    assert_eq!((c1.as_str(), c2.as_str()), ("MISS", "HIT"));
    assert_eq!(b1, b2, "the second URL is served the first one's entry");
    assert_eq!(origin.hits(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bypass_skips_the_lookup_but_still_stores() {
    let origin = origin().await;
    let mg = Moongate::start(&conf(origin.addr));
    let url = mg.url("/b/x");
    let (c1, b1) = get(&url, true).await;
    let (c2, b2) = get(&url, true).await;
    assert_eq!((c1.as_str(), c2.as_str()), ("BYPASS", "BYPASS"));
    assert_ne!(b1, b2, "both from the origin");
    assert_eq!(origin.hits(), 2);
    let (c3, b3) = get(&url, false).await;
    assert_eq!(c3, "HIT");
    assert_eq!(b3, b2, "the last bypassed answer was stored");
    assert_eq!(origin.hits(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_store_from_access_never_hits() {
    let origin = origin().await;
    let mg = Moongate::start(&conf(origin.addr));
    let (c1, _) = get(&mg.url("/ns/pub"), false).await;
    let (c2, _) = get(&mg.url("/ns/pub"), false).await;
    assert_eq!((c1.as_str(), c2.as_str()), ("MISS", "MISS"));
    assert_eq!(origin.hits(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ttl_from_access_makes_a_response_without_cache_control_fresh() {
    let origin = origin().await;
    let mg = Moongate::start(&conf(origin.addr));
    // Without a ttl it is stored with default_ttl 0: stale at once.
    let (c1, _) = get(&mg.url("/plain/nocc"), false).await;
    let (c2, _) = get(&mg.url("/plain/nocc"), false).await;
    assert_eq!((c1.as_str(), c2.as_str()), ("MISS", "EXPIRED"));
    let (c3, b3) = get(&mg.url("/ttl/nocc"), false).await;
    let (c4, b4) = get(&mg.url("/ttl/nocc"), false).await;
    assert_eq!((c3.as_str(), c4.as_str()), ("MISS", "HIT"));
    assert_eq!(b3, b4);
    assert_eq!(origin.hits(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_filter_decides_on_the_upstream_response() {
    let origin = origin().await;
    let mg = Moongate::start(&conf(origin.addr));
    // X-Cacheable: no → no_store, although max-age=60.
    let (c1, _) = get(&mg.url("/hf/hf-no"), false).await;
    let (c2, _) = get(&mg.url("/hf/hf-no"), false).await;
    assert_eq!((c1.as_str(), c2.as_str()), ("MISS", "MISS"));
    // X-Ttl: 60 → ttl(60), without Cache-Control.
    let (c3, b3) = get(&mg.url("/hf/hf-ttl"), false).await;
    let (c4, b4) = get(&mg.url("/hf/hf-ttl"), false).await;
    assert_eq!((c3.as_str(), c4.as_str()), ("MISS", "HIT"));
    assert_eq!(b3, b4);
    // Neither header: the response's own max-age.
    let (c5, _) = get(&mg.url("/hf/pub"), false).await;
    let (c6, _) = get(&mg.url("/hf/pub"), false).await;
    assert_eq!((c5.as_str(), c6.as_str()), ("MISS", "HIT"));
    assert_eq!(origin.hits(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_where_no_cache_decides_return_nil_and_an_error() {
    let origin = origin().await;
    let mg = Moongate::start(&conf(origin.addr));
    let (_, body) = get(&mg.url("/errs/nocache"), false).await;
    assert_eq!(body.trim(), "nil|no cache zone on this route|false|false");
    let resp = client()
        .get(mg.url("/errs/phase"))
        .send()
        .await
        .expect("request");
    assert_eq!(
        resp.headers()["x-err"],
        "nil|mg.cache.key cannot be called in header_filter"
    );
}

//! nginx's auto-redirect, through the real server: a request for a
//! proxied route's path without its trailing `/` gets `301` to the path
//! with it (query kept, `Location` absolute with the request's host and
//! the server's port), ahead of shorter prefixes and regexes; a route for
//! the path itself, or a route that does not proxy, is not redirected.

use std::net::SocketAddr;
use std::time::Duration;

use crate::support::{self, Moongate, Origin};

const WAIT: Duration = Duration::from_secs(5);

fn conf(origin: SocketAddr) -> String {
    format!(
        r#"[server]
listen = ["127.0.0.1:0"]
workers = 1
access_log = "off"

[upstream.o]
servers = [{{ addr = "{origin}" }}]

[[route]]
path = "/"
upstream = "o"

[[route]]
path_regex = "^/api($|x)"
lua.content_inline = 'ngx.say("regex")'

[[route]]
path = "/api/"
upstream = "o"

[[route]]
path_exact = "/exact/"
upstream = "o"

[[route]]
path = "/own/"
upstream = "o"

[[route]]
path_exact = "/own"
lua.content_inline = 'ngx.say("own")'

[[route]]
path = "/lua/"
lua.content_inline = 'ngx.say("lua")'

[[route]]
path = "/seen/"
upstream = "o"
lua.header_filter_inline = 'ngx.header["X-Seen"] = ngx.status .. " " .. ngx.header.location'
lua.log_inline = 'ngx.log(ngx.ERR, "logged ", ngx.status, " ", ngx.var.uri)'
"#
    )
}

/// One request on its own connection (closed after it): the raw answer.
async fn get(mg: &Moongate, target: &str, extra: &str) -> String {
    let req =
        format!("GET {target} HTTP/1.1\r\nHost: Example.Test\r\nConnection: close\r\n{extra}\r\n");
    support::raw_exchange(mg.http[0], req.as_bytes(), WAIT).await
}

/// A header's value in a raw answer (names are matched in any case).
fn header<'a>(answer: &'a str, name: &str) -> Option<&'a str> {
    let head = answer.split("\r\n\r\n").next()?;
    head.lines().skip(1).find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

fn body(answer: &str) -> &str {
    answer.split_once("\r\n\r\n").map_or("", |(_, b)| b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxied_path_without_its_slash_is_redirected() {
    let origin = Origin::start(support::echo).await;
    let mg = Moongate::start(&conf(origin.addr));
    let port = mg.http[0].port();

    // Over the shorter `/` prefix and a regex matching `/api`; the query
    // kept.
    let r = get(&mg, "/api?x=1&y", "").await;
    assert_eq!(support::raw_status(&r), 301, "{r}");
    assert_eq!(
        header(&r, "location"),
        Some(format!("http://example.test:{port}/api/?x=1&y").as_str()),
        "{r}"
    );
    let j: serde_json::Value =
        serde_json::from_str(body(&r)).unwrap_or_else(|e| panic!("{e}: {r}"));
    assert_eq!(j["status"], 301);
    // An exact route's path too; HTML for a client that prefers it.
    let r = get(&mg, "/exact", "Accept: text/html\r\n").await;
    assert_eq!(support::raw_status(&r), 301, "{r}");
    assert_eq!(
        header(&r, "location"),
        Some(format!("http://example.test:{port}/exact/").as_str())
    );
    assert!(body(&r).contains("301 Moved Permanently"), "{r}");
    assert_eq!(origin.hits(), 0, "a redirect went upstream");

    // Other paths route as ever.
    let r = get(&mg, "/api/x", "").await;
    assert_eq!(support::raw_status(&r), 200, "{r}");
    assert!(body(&r).contains("\"/api/x\""), "{r}");
    assert_eq!(body(&get(&mg, "/apix", "").await), "regex\n");
    assert_eq!(origin.hits(), 1);

    // No Host (HTTP/1.0): the address the connection came to.
    let r = support::raw_exchange(mg.http[0], b"GET /api HTTP/1.0\r\n\r\n", WAIT).await;
    assert_eq!(support::raw_status(&r), 301, "{r}");
    assert_eq!(
        header(&r, "location"),
        Some(format!("http://127.0.0.1:{port}/api/").as_str())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_for_the_path_itself_or_one_that_does_not_proxy_is_not_redirected() {
    let origin = Origin::start(support::echo).await;
    let mg = Moongate::start(&conf(origin.addr));
    assert_eq!(body(&get(&mg, "/own", "").await), "own\n");
    // `/lua/` answers from Lua: `/lua` goes to the `/` route.
    let r = get(&mg, "/lua", "").await;
    assert_eq!(support::raw_status(&r), 200, "{r}");
    assert!(body(&r).contains("\"/lua\""), "{r}");
    assert_eq!(origin.hits(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_routes_header_filter_and_log_see_the_redirect() {
    let origin = Origin::start(support::echo).await;
    let mg = Moongate::start(&conf(origin.addr));
    let port = mg.http[0].port();
    let r = get(&mg, "/seen?q", "").await;
    assert_eq!(support::raw_status(&r), 301, "{r}");
    // The filter saw nginx's relative Location; the client gets it absolute.
    assert_eq!(header(&r, "x-seen"), Some("301 /seen/?q"), "{r}");
    assert_eq!(
        header(&r, "location"),
        Some(format!("http://example.test:{port}/seen/?q").as_str())
    );
    mg.wait_log("logged 301 /seen", WAIT);
    assert_eq!(origin.hits(), 0);
}

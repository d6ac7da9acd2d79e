//! `forward_auth` through the real server: a real auth service (deciding
//! by the client's `Authorization`, recording what it was sent) in front of
//! an upstream that echoes what reached it. Allow with headers copied
//! upstream (and spoofs dropped), refusals passed to the client as sent,
//! the forwarded request, the shared answer cache and its TTL, an auth
//! service down or too slow, https, and config errors with file:line.

use std::net::SocketAddr;
use std::time::Duration;

use crate::support::{Moongate, Origin, check_one, client, client_no_redirects, echo};

mod service;

use service::{Record, auth_service, count, last, tls_auth_service};

/// A port nothing listens on.
fn closed_port() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr")
}

fn conf(auth: SocketAddr, upstream: SocketAddr, slow: SocketAddr) -> String {
    let down = closed_port();
    format!(
        r#"[server]
listen = ["127.0.0.1:0"]
workers = 2
access_log = "off"

[upstream.echo]
servers = [{{ addr = "{upstream}" }}]

[[route]]
path = "/api/"
upstream = "echo"
policies = [{{ use = "forward_auth", uri = "http://{auth}/verify?from=edge", upstream_headers = ["X-User-Id"] }}]

[[route]]
path = "/post/"
upstream = "echo"
policies = [{{ use = "forward_auth", uri = "http://{auth}/verify", request_method = "POST", request_headers = ["Authorization"], upstream_headers = ["X-User-Id"] }}]

[[route]]
path = "/cached/"
upstream = "echo"
policies = [{{ use = "forward_auth", uri = "http://{auth}/verify", upstream_headers = ["X-User-Id"], cache_key = "$http_authorization", cache_ttl = "1s" }}]
lua.access_inline = 'ngx.req.set_header("X-Worker", ngx.worker.id())'

[[route]]
path = "/down/"
upstream = "echo"
policies = [{{ use = "forward_auth", uri = "http://{down}/verify", upstream_headers = ["X-User-Id"] }}]

[[route]]
path = "/down-403/"
upstream = "echo"
policies = [{{ use = "forward_auth", uri = "http://{down}/verify", status_on_error = 403 }}]

[[route]]
path = "/slow/"
upstream = "echo"
policies = [{{ use = "forward_auth", uri = "http://{slow}/verify", timeout = "300ms" }}]

[[route]]
path = "/degrade/"
upstream = "echo"
policies = [{{ use = "forward_auth", uri = "http://{down}/verify", upstream_headers = ["X-User-Id"], allow_degradation = true }}]
"#
    )
}

struct Setup {
    mg: Moongate,
    auth: Origin,
    record: Record,
    upstream: Origin,
    _slow: (Origin, Record),
}

async fn setup() -> Setup {
    let (auth, record) = auth_service().await;
    let slow = auth_service().await;
    let upstream = Origin::start(echo).await;
    let mg = Moongate::start(&conf(auth.addr, upstream.addr, slow.0.addr));
    Setup {
        mg,
        auth,
        record,
        upstream,
        _slow: slow,
    }
}

async fn upstream_saw(resp: reqwest::Response) -> serde_json::Value {
    assert_eq!(resp.status(), 200);
    serde_json::from_str(&resp.text().await.expect("body")).expect("echo JSON")
}

fn values(seen: &serde_json::Value, name: &str) -> Vec<String> {
    (seen["headers"][name].as_array().into_iter().flatten())
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_allowed_request_goes_on_with_the_auth_headers_and_no_spoofs() {
    let s = setup().await;
    let resp = client()
        .post(s.mg.url("/api/items?page=2"))
        .header("host", "app.example.test")
        .header("authorization", "Bearer good")
        .header("x-user-id", "mallory")
        .header("x-trace", "t-1")
        .header("x-trace", "t-2")
        .body("payload")
        .send()
        .await
        .expect("POST");
    let seen = upstream_saw(resp).await;
    assert_eq!(values(&seen, "x-user-id"), ["alice"], "copied, not spoofed");
    assert!(values(&seen, "x-auth-extra").is_empty(), "only the named");
    assert_eq!(seen["method"], "POST");
    assert_eq!(seen["body_len"], 7, "the body goes upstream untouched");

    // The auth service was asked with GET, its own URI and Host, the
    // client's headers and the forwarded ones.
    let asked = last(&s.record);
    assert_eq!(asked.method, "GET");
    assert_eq!(asked.uri, "/verify?from=edge");
    assert_eq!(asked.header("host"), Some(s.auth.addr.to_string().as_str()));
    assert_eq!(asked.header("authorization"), Some("Bearer good"));
    assert_eq!(asked.headers["x-trace"], ["t-1", "t-2"]);
    assert_eq!(asked.header("x-forwarded-method"), Some("POST"));
    assert_eq!(asked.header("x-forwarded-uri"), Some("/api/items?page=2"));
    assert_eq!(asked.header("x-forwarded-host"), Some("app.example.test"));
    assert_eq!(asked.header("x-forwarded-proto"), Some("http"));
    assert_eq!(asked.header("x-forwarded-for"), Some("127.0.0.1"));
    assert!(asked.body.is_empty(), "GET carries no body");
    assert_eq!(asked.header("content-length"), None);

    // A client's own X-Forwarded-* never reach the auth service.
    let resp = client()
        .get(s.mg.url("/api/x"))
        .header("authorization", "Bearer good")
        .header("x-forwarded-for", "10.9.9.9")
        .header("x-forwarded-uri", "/public")
        .send()
        .await
        .expect("GET");
    assert_eq!(resp.status(), 200);
    let asked = last(&s.record);
    assert_eq!(asked.headers["x-forwarded-for"], ["127.0.0.1"]);
    assert_eq!(asked.headers["x-forwarded-uri"], ["/api/x"]);

    // An allow without the header: the client's own is still dropped.
    let resp = client()
        .get(s.mg.url("/api/anon"))
        .header("authorization", "Bearer anon")
        .header("x-user-id", "mallory")
        .send()
        .await
        .expect("GET");
    let seen = upstream_saw(resp).await;
    assert!(values(&seen, "x-user-id").is_empty(), "{seen}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_asks_with_the_body_and_only_the_named_headers() {
    let s = setup().await;
    let resp = client()
        .post(s.mg.url("/post/form"))
        .header("authorization", "Bearer good")
        .header("x-trace", "t-2")
        .header("content-type", "text/plain")
        .body("payload")
        .send()
        .await
        .expect("POST");
    let seen = upstream_saw(resp).await;
    assert_eq!(values(&seen, "x-user-id"), ["alice"]);
    assert_eq!(seen["body_len"], 7, "the upstream still gets the body");
    let asked = last(&s.record);
    assert_eq!(asked.method, "POST");
    assert_eq!(asked.body, b"payload");
    assert_eq!(asked.header("content-length"), Some("7"));
    assert_eq!(asked.header("authorization"), Some("Bearer good"));
    assert_eq!(asked.header("x-trace"), None, "not in request_headers");
    assert_eq!(asked.header("content-type"), None, "not in request_headers");
    assert_eq!(asked.header("x-forwarded-method"), Some("POST"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_reach_the_client_as_the_auth_service_sent_them() {
    let s = setup().await;
    let http = client_no_redirects();
    let resp = http
        .get(s.mg.url("/api/secret"))
        .header("authorization", "Bearer forged")
        .send()
        .await
        .expect("GET");
    assert_eq!(resp.status(), 401);
    let h = resp.headers().clone();
    assert_eq!(h["www-authenticate"], "Bearer realm=\"api\"");
    assert_eq!(h["content-type"], "application/json");
    assert!(h.get("x-internal").is_none(), "not in client_headers");
    let body = resp.bytes().await.expect("body");
    assert_eq!(&body[..], b"{\"error\":\"invalid token\"}\xff");

    let resp = http
        .get(s.mg.url("/api/secret"))
        .header("authorization", "Bearer login")
        .send()
        .await
        .expect("GET");
    assert_eq!(resp.status(), 302);
    assert_eq!(
        resp.headers()["location"],
        "https://login.example.test/?next=/api/"
    );
    let cookies: Vec<&str> = (resp.headers().get_all("set-cookie").iter())
        .filter_map(|v| v.to_str().ok())
        .collect();
    assert_eq!(cookies, ["state=abc; Path=/", "nonce=xyz; Path=/"]);
    assert_eq!(
        s.upstream.hits(),
        0,
        "a refused request never goes upstream"
    );
    assert_eq!(count(&s.record), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_are_cached_per_key_across_workers_for_the_ttl() {
    let s = setup().await;
    // A new connection each time, until both worker threads served some
    // (the route's own handler tells which): the cache is one store for
    // all of them.
    let mut workers = std::collections::BTreeSet::new();
    let mut sent = 0;
    while sent < 6 || (workers.len() < 2 && sent < 60) {
        let resp = client()
            .get(s.mg.url("/cached/a"))
            .header("authorization", "Bearer good")
            .header("x-user-id", "mallory")
            .send()
            .await
            .expect("GET");
        let seen = upstream_saw(resp).await;
        assert_eq!(values(&seen, "x-user-id"), ["alice"]);
        workers.extend(values(&seen, "x-worker"));
        sent += 1;
    }
    assert_eq!(workers.len(), 2, "both workers served: {workers:?}");
    assert_eq!(count(&s.record), 1, "one ask for {sent} requests");

    for _ in 0..4 {
        let resp = client()
            .get(s.mg.url("/cached/a"))
            .header("authorization", "Bearer forged")
            .send()
            .await
            .expect("GET");
        assert_eq!(resp.status(), 401);
        assert_eq!(resp.headers()["www-authenticate"], "Bearer realm=\"api\"");
        assert_eq!(resp.headers()["content-type"], "application/json");
        let body = resp.bytes().await.expect("body");
        assert_eq!(&body[..], b"{\"error\":\"invalid token\"}\xff");
    }
    assert_eq!(count(&s.record), 2, "a refusal is cached under its own key");

    // No Authorization: the key renders empty, so nothing is cached.
    for _ in 0..2 {
        let resp = client()
            .get(s.mg.url("/cached/a"))
            .send()
            .await
            .expect("GET");
        assert_eq!(resp.status(), 401);
    }
    assert_eq!(count(&s.record), 4);
    assert_eq!(s.upstream.hits(), sent);

    // Past the TTL the service is asked again, and the answer kept again.
    tokio::time::sleep(Duration::from_millis(1300)).await;
    for _ in 0..3 {
        let resp = client()
            .get(s.mg.url("/cached/b"))
            .header("authorization", "Bearer good")
            .send()
            .await
            .expect("GET");
        assert_eq!(values(&upstream_saw(resp).await, "x-user-id"), ["alice"]);
    }
    assert_eq!(count(&s.record), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_auth_service_down_or_slow_answers_status_on_error() {
    let s = setup().await;
    let http = client();
    let get = |path: &str| {
        http.get(s.mg.url(path))
            .header("authorization", "Bearer slow")
            .header("x-user-id", "mallory")
            .send()
    };
    assert_eq!(get("/down/").await.expect("GET").status(), 500);
    assert_eq!(get("/down-403/").await.expect("GET").status(), 403);
    assert_eq!(get("/slow/").await.expect("GET").status(), 500);
    assert_eq!(s.upstream.hits(), 0);
    let log =
        s.mg.wait_log("forward_auth: cannot ask", Duration::from_secs(5));
    assert!(log.contains("/verify"), "{log}");

    // allow_degradation: on without the upstream headers, spoofs dropped.
    let seen = upstream_saw(get("/degrade/").await.expect("GET")).await;
    assert!(values(&seen, "x-user-id").is_empty(), "{seen}");
    assert_eq!(s.upstream.hits(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_auth_service_is_verified() {
    let peer = crate::support::tls_peer(&[b"http/1.1"]);
    let (port, record) = tls_auth_service(&peer).await;
    let upstream = Origin::start(echo).await;
    let mg = Moongate::start(&format!(
        r#"[server]
listen = ["127.0.0.1:0"]
workers = 1
access_log = "off"

[lua]
ssl_trusted_certificate = "{ca}"

[upstream.echo]
servers = [{{ addr = "{up}" }}]

[[route]]
path = "/named/"
upstream = "echo"
policies = [{{ use = "forward_auth", uri = "https://localhost:{port}/verify", upstream_headers = ["X-User-Id"] }}]

[[route]]
path = "/by-ip/"
upstream = "echo"
policies = [{{ use = "forward_auth", uri = "https://127.0.0.1:{port}/verify", upstream_headers = ["X-User-Id"] }}]

[[route]]
path = "/unchecked/"
upstream = "echo"
policies = [{{ use = "forward_auth", uri = "https://127.0.0.1:{port}/verify", upstream_headers = ["X-User-Id"], ssl_verify = false }}]
"#,
        ca = peer.ca.display(),
        up = upstream.addr,
    ));
    let http = client();
    let get = |path: &str| {
        http.get(mg.url(path))
            .header("authorization", "Bearer good")
            .send()
    };
    let seen = upstream_saw(get("/named/").await.expect("GET")).await;
    assert_eq!(values(&seen, "x-user-id"), ["alice"]);
    assert_eq!(count(&record), 1);
    assert_eq!(last(&record).header("x-forwarded-uri"), Some("/named/"));

    // The certificate names localhost, not 127.0.0.1: refused when checked.
    assert_eq!(get("/by-ip/").await.expect("GET").status(), 500);
    assert_eq!(count(&record), 1, "no request over an unverified TLS");
    let log = mg.wait_log("certificate", Duration::from_secs(5));
    assert!(log.contains("forward_auth"), "{log}");

    let seen = upstream_saw(get("/unchecked/").await.expect("GET")).await;
    assert_eq!(values(&seen, "x-user-id"), ["alice"]);
    assert_eq!(count(&record), 2);
}

#[test]
fn config_errors_name_file_and_line() {
    let route = |entry: &str| {
        format!("[[route]]\npath = \"/\"\nroot = \".\"\npolicies = [\n  {entry},\n]\n")
    };
    for (entry, message) in [
        (
            r#"{ use = "forward_auth" }"#,
            "10-x.toml:5:3: policy `forward_auth` needs `uri`",
        ),
        (
            r#"{ use = "forward_auth", uri = "ftp://auth/x" }"#,
            "10-x.toml:5:33: `uri`: `ftp://auth/x`: ftp:// is not supported; use http:// or https://",
        ),
        (
            r#"{ use = "forward_auth", uri = "/verify" }"#,
            "10-x.toml:5:33: `uri`: `/verify` needs http:// or https://",
        ),
        (
            r#"{ use = "forward_auth", uri = "http://a b/" }"#,
            "10-x.toml:5:33: `uri`: `http://a b/` is not a URL",
        ),
        (
            r#"{ use = "forward_auth", uri = "http://a/", cache_key = "$http_x", cache_ttl = "0s" }"#,
            "10-x.toml:5:3: policy `forward_auth`: `cache_ttl` must be more than 0",
        ),
        (
            r#"{ use = "forward_auth", uri = "http://a/", upstream_header = ["X-User"] }"#,
            "10-x.toml:5:64: unknown option `upstream_header` for policy `forward_auth`",
        ),
        (
            r#"{ use = "forward_auth", uri = "http://a/", request_method = "PUT" }"#,
            "10-x.toml:5:63: `request_method`: `PUT` is not one of \"GET\", \"POST\"",
        ),
        (
            r#"{ use = "forward_auth", uri = "http://a/", timeout = "soon" }"#,
            "10-x.toml:5:56: `timeout`: \"soon\" is not a duration",
        ),
        (
            r#"{ use = "forward_auth", uri = "http://a/", status_on_error = 200 }"#,
            "10-x.toml:5:64: `status_on_error`: 200 is outside 400..=599",
        ),
        (
            r#"{ use = "forward_auth", uri = "http://a/", cache_key = "$http_authorization" }"#,
            "10-x.toml:5:3: policy `forward_auth`: `cache_key` needs `cache_ttl`",
        ),
        (
            r#"{ use = "forward_auth", uri = "http://a/", cache_ttl = "30s" }"#,
            "10-x.toml:5:3: policy `forward_auth`: `cache_ttl` needs `cache_key`",
        ),
        (
            r#"{ use = "forward_auth", uri = "http://a/", cache_key = "$http_x_tok", cache_ttl = "30s", cache_size = "1KiB" }"#,
            "10-x.toml:5:3: policy `forward_auth`: `cache_size` must be at least \"8KiB\"",
        ),
        (
            r#"{ use = "forward_auth", uri = "http://a/", cache_key = "$htp_x", cache_ttl = "30s" }"#,
            "10-x.toml:5:58: `cache_key`: unknown variable `$htp_x`",
        ),
        (
            r#"{ use = "forward_auth", uri = "http://a/", upstream_headers = ["X User"] }"#,
            "10-x.toml:5:65: `upstream_headers`: `X User` is not a valid header name",
        ),
    ] {
        let run = check_one(&route(entry));
        assert_eq!(run.code, Some(1), "{entry}");
        assert!(run.stderr.contains(message), "{entry}: {}", run.stderr);
    }
}

//! The `cors` policy through the real server: preflights answered at the
//! edge (the origin sees none), allowed and refused origins (exact, regex,
//! `*`), credentials, exposed headers, max_age, `Vary: Origin` merged with
//! the origin's own `Vary`, and its config errors with file:line.

use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::Full;
use hyper::Response;

use crate::support::{Moongate, Origin, check_one, client};

fn conf(origin: SocketAddr) -> String {
    format!(
        r#"[server]
listen = ["127.0.0.1:0"]
workers = 1
access_log = "off"

[upstream.o]
servers = [{{ addr = "{origin}" }}]

[[route]]
path = "/api/"
upstream = "o"
policies = [{{ use = "cors", origins = ["https://app.example.com", 'https://[a-z]+\.example\.org'], headers = ["Content-Type", "Authorization"], exposed_headers = ["X-Total"], credentials = true, max_age = 600 }}]

[[route]]
path = "/open/"
upstream = "o"
policies = [{{ use = "cors" }}]
"#
    )
}

/// Answers 200 with `Vary: Accept-Encoding` and `X-Total: 3`.
async fn origin() -> Origin {
    Origin::start(|_req| async {
        Response::builder()
            .header("vary", "Accept-Encoding")
            .header("x-total", "3")
            .body(Full::new(Bytes::from_static(b"ok")))
            .expect("reply")
    })
    .await
}

fn header<'a>(r: &'a reqwest::Response, name: &str) -> Option<&'a str> {
    r.headers().get(name).and_then(|v| v.to_str().ok())
}

fn vary(r: &reqwest::Response) -> String {
    let all: Vec<&str> = (r.headers().get_all("vary").iter())
        .filter_map(|v| v.to_str().ok())
        .collect();
    all.join(", ")
}

async fn preflight(mg: &Moongate, path: &str, from: &str) -> reqwest::Response {
    client()
        .request(reqwest::Method::OPTIONS, mg.url(path))
        .header("origin", from)
        .header("access-control-request-method", "PUT")
        .header("access-control-request-headers", "content-type, x-trace")
        .send()
        .await
        .expect("OPTIONS")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preflights_are_answered_at_the_edge() {
    let origin = origin().await;
    let mg = Moongate::start(&conf(origin.addr));

    for allowed in ["https://app.example.com", "https://eu.example.org"] {
        let r = preflight(&mg, "/api/items", allowed).await;
        assert_eq!(r.status(), 204, "{allowed}");
        assert_eq!(header(&r, "access-control-allow-origin"), Some(allowed));
        assert_eq!(
            header(&r, "access-control-allow-methods"),
            Some("GET, HEAD, PUT, PATCH, POST, DELETE, OPTIONS")
        );
        assert_eq!(
            header(&r, "access-control-allow-headers"),
            Some("Content-Type, Authorization")
        );
        assert_eq!(header(&r, "access-control-allow-credentials"), Some("true"));
        assert_eq!(header(&r, "access-control-max-age"), Some("600"));
        assert_eq!(vary(&r), "Origin");
        assert_eq!(header(&r, "access-control-expose-headers"), None);
    }

    // Refused: no Access-Control-Allow-* at all, still answered here. A
    // regex matches the whole Origin, not a prefix of it.
    for refused in [
        "https://evil.example.com",
        "https://eu.example.org.evil.com",
        "http://app.example.com",
    ] {
        let r = preflight(&mg, "/api/items", refused).await;
        assert_eq!(r.status(), 204, "{refused}");
        for h in [
            "access-control-allow-origin",
            "access-control-allow-methods",
            "access-control-allow-headers",
            "access-control-allow-credentials",
            "access-control-max-age",
        ] {
            assert_eq!(header(&r, h), None, "{refused}: {h}");
        }
        assert_eq!(vary(&r), "Origin", "{refused}");
    }

    // "*" for everyone: no Vary on Origin; the request's headers are
    // echoed (so the answer varies on them).
    let r = preflight(&mg, "/open/x", "https://anyone.test").await;
    assert_eq!(r.status(), 204);
    assert_eq!(header(&r, "access-control-allow-origin"), Some("*"));
    assert_eq!(
        header(&r, "access-control-allow-headers"),
        Some("content-type, x-trace")
    );
    assert_eq!(vary(&r), "Access-Control-Request-Headers");
    assert_eq!(header(&r, "access-control-allow-credentials"), None);

    assert_eq!(origin.hits(), 0, "no preflight reached the upstream");

    // An OPTIONS that is no preflight belongs to the upstream.
    let plain = client()
        .request(reqwest::Method::OPTIONS, mg.url("/api/items"))
        .header("origin", "https://app.example.com")
        .send()
        .await
        .expect("OPTIONS");
    assert_eq!(plain.status(), 200);
    assert_eq!(plain.text().await.expect("body"), "ok");
    assert_eq!(origin.hits(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn actual_requests_get_the_headers_their_origin_allows() {
    let origin = origin().await;
    let mg = Moongate::start(&conf(origin.addr));
    let get = |path: &'static str, from: Option<&'static str>| {
        let mut req = client().get(mg.url(path));
        if let Some(from) = from {
            req = req.header("origin", from);
        }
        async move { req.send().await.expect("GET") }
    };

    let r = get("/api/items", Some("https://app.example.com")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        header(&r, "access-control-allow-origin"),
        Some("https://app.example.com")
    );
    assert_eq!(header(&r, "access-control-allow-credentials"), Some("true"));
    assert_eq!(header(&r, "access-control-expose-headers"), Some("X-Total"));
    assert_eq!(header(&r, "access-control-allow-methods"), None);
    // The origin's own Vary is kept, Origin added once.
    assert_eq!(vary(&r), "Accept-Encoding, Origin");

    let r = get("/api/items", Some("https://evil.example.com")).await;
    assert_eq!(
        r.status(),
        200,
        "the request is served; the browser refuses it"
    );
    assert_eq!(header(&r, "access-control-allow-origin"), None);
    assert_eq!(header(&r, "access-control-allow-credentials"), None);
    assert_eq!(header(&r, "access-control-expose-headers"), None);
    assert_eq!(vary(&r), "Accept-Encoding, Origin");

    // No Origin: no CORS headers, but the answer still varies on it (a
    // cache must not hand it to a cross-origin request).
    let r = get("/api/items", None).await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "access-control-allow-origin"), None);
    assert_eq!(vary(&r), "Accept-Encoding, Origin");

    let r = get("/open/x", Some("https://anyone.test")).await;
    assert_eq!(header(&r, "access-control-allow-origin"), Some("*"));
    assert_eq!(vary(&r), "Accept-Encoding", "`*` does not depend on Origin");
    assert_eq!(origin.hits(), 4);
}

/// Behind the route's cache: the CORS headers are made per request by the
/// header filter, so a hit stored for one origin answers another with its
/// own (or none), and the upstream is asked once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_answers_get_each_requests_cors_headers() {
    let origin = Origin::start(|_req| async {
        Response::builder()
            .header("cache-control", "public, max-age=60")
            .body(Full::new(Bytes::from_static(b"cached")))
            .expect("reply")
    })
    .await;
    let mg = Moongate::start(&format!(
        r#"[server]
listen = ["127.0.0.1:0"]
workers = 1
access_log = "off"

[upstream.o]
servers = [{{ addr = "{}" }}]

[cache.pages]
memory = "1MiB"

[[route]]
path = "/"
upstream = "o"
cache = "pages"
policies = [{{ use = "cors", origins = ["https://a.test", "https://b.test"] }}]
"#,
        origin.addr
    ));
    for (from, allowed) in [
        ("https://a.test", Some("https://a.test")),
        ("https://b.test", Some("https://b.test")),
        ("https://evil.test", None),
        ("https://a.test", Some("https://a.test")),
    ] {
        let r = client()
            .get(mg.url("/page"))
            .header("origin", from)
            .send()
            .await
            .expect("GET");
        assert_eq!(r.status(), 200);
        assert_eq!(header(&r, "access-control-allow-origin"), allowed, "{from}");
        assert_eq!(vary(&r), "Origin", "{from}");
        assert_eq!(r.text().await.expect("body"), "cached");
    }
    assert_eq!(origin.hits(), 1, "the later answers came from the cache");
}

#[test]
fn config_errors_name_file_and_line() {
    let route = |entry: &str| {
        format!("[[route]]\npath = \"/\"\nroot = \".\"\npolicies = [\n  {entry},\n]\n")
    };
    for (entry, message) in [
        (
            r#"{ use = "cors", origins = ["https://(a|b.example.com"] }"#,
            "10-x.toml:5:29: `origins`: `https://(a|b.example.com` is not a valid regex: unclosed group",
        ),
        (
            r#"{ use = "cors", credentials = "yes" }"#,
            "10-x.toml:5:33: `credentials`: expected boolean",
        ),
        (
            r#"{ use = "cors", allow_origins = ["*"] }"#,
            "10-x.toml:5:35: unknown option `allow_origins` for policy `cors`",
        ),
        (
            r#"{ use = "cors", methods = ["get"] }"#,
            "10-x.toml:5:29: `methods`: `get` is not a method",
        ),
        (
            r#"{ use = "cors", max_age = -1 }"#,
            "10-x.toml:5:29: `max_age`: -1 is outside 0..=31536000",
        ),
    ] {
        let run = check_one(&route(entry));
        assert_eq!(run.code, Some(1), "{entry}");
        assert!(run.stderr.contains(message), "{entry}: {}", run.stderr);
    }
}

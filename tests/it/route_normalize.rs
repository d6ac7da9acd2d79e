//! Routes match the normalized path, as nginx's locations do: an encoded,
//! doubled-slash or dotted spelling of `/admin/...` gets the `/admin/`
//! route and its `api_key` policy, never the open `/` route; a path that
//! climbs above `/` is a 400; what goes upstream is the request target as
//! sent unless the route rewrites; static files stay inside their root.
//! Requests are written raw, since an HTTP client library would resolve
//! the dots itself.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use crate::support::{self, Moongate, Origin, echo};

const SECRET: &str = "SECRET-BESIDE-THE-ROOT";

fn conf(admin: SocketAddr, open: SocketAddr, site: &Path) -> String {
    format!(
        r#"[server]
listen = ["127.0.0.1:0"]

[upstream.admin]
servers = [{{ addr = "{admin}" }}]

[upstream.open]
servers = [{{ addr = "{open}" }}]

[[route]]
path = "/admin/"
upstream = "admin"
policies = [{{ use = "api_key", keys = ["ops-key"] }}]

[[route]]
path = "/rw/"
upstream = "open"
rewrite = {{ from = "^/rw/(.*)$", to = "/new/$1" }}

[[route]]
path = "/vars/"
upstream = "open"
lua.rewrite_inline = 'ngx.req.set_header("X-Uri", ngx.var.uri); ngx.req.set_header("X-Request-Uri", ngx.var.request_uri)'

[[route]]
path = "/static/"
root = "{root}"

[[route]]
path = "/"
upstream = "open"
"#,
        root = site.join("root").display(),
    )
}

struct Setup {
    mg: Moongate,
    admin: Origin,
    open: Origin,
    _site: tempfile::TempDir,
}

async fn start() -> Setup {
    let admin = Origin::start(echo).await;
    let open = Origin::start(echo).await;
    let site = tempfile::tempdir().expect("site dir");
    std::fs::create_dir_all(site.path().join("root/a")).expect("mkdir");
    std::fs::write(site.path().join("root/a/inner.txt"), "inner").expect("inner");
    std::fs::write(site.path().join("secret.txt"), SECRET).expect("secret");
    let mg = Moongate::start(&conf(admin.addr, open.addr, site.path()));
    Setup {
        mg,
        admin,
        open,
        _site: site,
    }
}

/// Sends `GET target` with `extra` header lines; the status and the body.
async fn get(mg: &Moongate, target: &str, extra: &str) -> (u16, String) {
    let req = format!("GET {target} HTTP/1.1\r\nHost: x\r\n{extra}Connection: close\r\n\r\n");
    let answer = support::raw_exchange(mg.http[0], req.as_bytes(), Duration::from_secs(5)).await;
    let status = support::raw_status(&answer);
    let body = answer
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    (status, body)
}

/// The echo origin's JSON from a body.
fn echoed(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not an echo ({e}): {body:?}"))
}

/// moongate's JSON error body.
fn echoed_error(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not an error page ({e}): {body:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_spelling_of_admin_gets_the_admin_route() {
    let s = start().await;
    let spellings = [
        "/admin/x",
        "/%61dmin/x",
        "/x/../admin/x",
        "//admin/x",
        "/admin/./x",
        "/x/%2e%2e/admin/x",
        "/x%2F..%2Fadmin/x",
    ];
    for target in spellings {
        let (status, body) = get(&s.mg, target, "").await;
        assert_eq!(status, 401, "{target}: {body}");
    }
    assert_eq!(
        s.open.hits(),
        0,
        "a spelling of /admin/ reached the open route"
    );
    assert_eq!(
        s.admin.hits(),
        0,
        "no key, yet the admin upstream was asked"
    );

    // With the key they reach the admin upstream, which gets the target
    // exactly as the client sent it (no rewrite on the route).
    for target in spellings {
        let (status, body) = get(&s.mg, target, "X-Api-Key: ops-key\r\n").await;
        assert_eq!(status, 200, "{target}: {body}");
        assert_eq!(echoed(&body)["uri"], target, "{target}");
    }
    assert_eq!(s.admin.hits(), spellings.len());
    assert_eq!(s.open.hits(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unusable_paths_are_bad_requests() {
    let s = start().await;
    for target in [
        "/../x",
        "/..",
        "/a/../../admin/x",
        "/%2e%2e/admin/x",
        "/a%2F..%2F..%2Fx",
        "/a%00b",
        "/a%FFb",
        "/a%zz",
    ] {
        let (status, body) = get(&s.mg, target, "").await;
        assert_eq!(status, 400, "{target}: {body}");
        // moongate's own error answer, saying why.
        let answer = echoed_error(&body);
        assert_eq!(answer["status"], 400, "{target}: {body}");
        assert!(
            answer["error"]
                .as_str()
                .is_some_and(|e| e.contains("request path")),
            "{target}: {body}"
        );
    }
    assert_eq!(s.open.hits() + s.admin.hits(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn targets_go_upstream_as_sent_unless_the_route_rewrites() {
    let s = start().await;
    for target in ["/a%20b?q=%2F", "/x//y/./z?a=..", "/caf%C3%A9/%7e"] {
        let (status, body) = get(&s.mg, target, "").await;
        assert_eq!(status, 200, "{target}: {body}");
        assert_eq!(echoed(&body)["uri"], target, "forwarded byte-identical");
    }

    // A rewriting route works on the normalized path, re-encoded.
    let (status, body) = get(&s.mg, "/rw//a/../b%20c/./d?q=%2F", "").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(echoed(&body)["uri"], "/new/b%20c/d?q=%2F");
    let (status, body) = get(&s.mg, "/%72w/%2561", "").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(echoed(&body)["uri"], "/new/%2561");

    // `$uri` is the normalized path, `$request_uri` the target as sent.
    let (status, body) = get(&s.mg, "/vars//a/%2e/b%20c?x=1", "").await;
    assert_eq!(status, 200, "{body}");
    let headers = &echoed(&body)["headers"];
    assert_eq!(headers["x-uri"][0], "/vars/a/b c");
    assert_eq!(headers["x-request-uri"][0], "/vars//a/%2e/b%20c?x=1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_files_stay_inside_their_root() {
    let s = start().await;
    for target in [
        "/static/../secret.txt",
        "/static/%2e%2e/secret.txt",
        "/static/..%2fsecret.txt",
        "/static/a/%2e%2e/%2e%2e/secret.txt",
        "/static/a/..%5c..%5csecret.txt",
        "/static/%2e%2e%2f%2e%2e%2fsecret.txt",
    ] {
        let (status, body) = get(&s.mg, target, "").await;
        assert!(!body.contains(SECRET), "{target} leaked: {body}");
        // Either refused, or normalized to a path outside `/static/`,
        // which is the open route's (its echo, not the file).
        if status == 200 {
            assert!(echoed(&body)["uri"].is_string(), "{target}: {body}");
        } else {
            assert!([400, 403, 404].contains(&status), "{target}: {status}");
        }
    }
    for target in [
        "/static/a/inner.txt",
        "/static//a/./inner.txt",
        "/%73tatic/a/%69nner.txt",
        "/static/b/../a/inner.txt",
    ] {
        let (status, body) = get(&s.mg, target, "").await;
        assert_eq!((status, body.as_str()), (200, "inner"), "{target}");
    }
}

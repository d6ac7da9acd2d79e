//! The `redirect` policy through the real server: plain HTTP sent to
//! HTTPS (default port and another), `$var` templates, each status, the
//! upstream never reached, and config errors with file:line.

use std::net::SocketAddr;

use crate::support::{Moongate, Origin, check_one, client_no_redirects};

fn conf(origin: SocketAddr) -> String {
    format!(
        r#"[server]
listen = ["127.0.0.1:0"]
workers = 1
access_log = "off"

[upstream.o]
servers = [{{ addr = "{origin}" }}]

[[route]]
path = "/secure/"
upstream = "o"
policies = [{{ use = "redirect", http_to_https = true }}]

[[route]]
path = "/secure-port/"
upstream = "o"
policies = [{{ use = "redirect", http_to_https = true, https_port = 8443, status_code = 308 }}]

[[route]]
path = "/moved/"
upstream = "o"
policies = [{{ use = "redirect", location = "https://new.example.com$request_uri", status_code = 302 }}]

[[route]]
path = "/tenant/"
upstream = "o"
policies = [{{ use = "redirect", location = "https://${{http_x_tenant}}.example.com/t$uri?from=$arg_from", status_code = 307 }}]

[[route]]
path = "/plain/"
upstream = "o"
"#
    )
}

async fn get(mg: &Moongate, path: &str, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut req = client_no_redirects().get(mg.url(path));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.send().await.expect("GET")
}

fn location(r: &reqwest::Response) -> &str {
    r.headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_to_https_and_to_templates() {
    let origin = Origin::named("origin").await;
    let mg = Moongate::start(&conf(origin.addr));
    let host = [("host", "shop.example.com")];

    let r = get(&mg, "/secure/cart?id=7&x=%20", &host).await;
    assert_eq!(r.status(), 301);
    assert_eq!(
        location(&r),
        "https://shop.example.com/secure/cart?id=7&x=%20"
    );

    let r = get(&mg, "/secure-port/a", &[("host", "shop.example.com:8080")]).await;
    assert_eq!(r.status(), 308);
    assert_eq!(location(&r), "https://shop.example.com:8443/secure-port/a");

    let r = get(&mg, "/moved/page?q=1", &host).await;
    assert_eq!(r.status(), 302);
    assert_eq!(location(&r), "https://new.example.com/moved/page?q=1");

    let r = get(
        &mg,
        "/tenant/list?from=mail",
        &[("host", "shop.example.com"), ("x-tenant", "acme")],
    )
    .await;
    assert_eq!(r.status(), 307);
    assert_eq!(
        location(&r),
        "https://acme.example.com/t/tenant/list?from=mail"
    );
    assert_eq!(
        origin.hits(),
        0,
        "redirected requests never reach the upstream"
    );

    let r = get(&mg, "/plain/x", &host).await;
    assert_eq!(r.status(), 200);
    assert_eq!(location(&r), "");
    assert_eq!(origin.hits(), 1);
}

/// `http_to_https` leaves requests that came over TLS alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_requests_pass() {
    let origin = Origin::named("origin").await;
    let dir = tempfile::tempdir().expect("dir");
    let pem = crate::tls::self_signed(&["shop.test"]);
    let cert = crate::tls::write_pair(dir.path(), "shop", &pem);
    let mg = Moongate::start(&format!(
        r#"[server]
listen = ["127.0.0.1:0"]
workers = 1
access_log = "off"

[[server.tls]]
listen = "127.0.0.1:0"
certs = [{cert}]

[upstream.o]
servers = [{{ addr = "{}" }}]

[[route]]
path = "/"
upstream = "o"
policies = [{{ use = "redirect", http_to_https = true }}]
"#,
        origin.addr
    ));
    let r = get(&mg, "/a?b=1", &[("host", "shop.test")]).await;
    assert_eq!(r.status(), 301);
    assert_eq!(location(&r), "https://shop.test/a?b=1");
    assert_eq!(origin.hits(), 0);

    crate::support::install_crypto();
    let addr = mg.https[0];
    let tls = reqwest::Client::builder()
        .no_proxy()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(pem.cert.as_bytes()).expect("pem"))
        .resolve("shop.test", addr)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("tls client");
    let r = tls
        .get(format!("https://shop.test:{}/a?b=1", addr.port()))
        .send()
        .await
        .expect("GET over TLS");
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.expect("body"), "origin");
    assert_eq!(origin.hits(), 1);
}

#[test]
fn config_errors_name_file_and_line() {
    let route = |entry: &str| {
        format!("[[route]]\npath = \"/\"\nroot = \".\"\npolicies = [\n  {entry},\n]\n")
    };
    for (entry, message) in [
        (
            r#"{ use = "redirect", location = "/x", status_code = 305 }"#,
            "10-x.toml:5:54: `status_code`: expected one of 301, 302, 303, 307, 308",
        ),
        (
            r#"{ use = "redirect", location = "https://$hots/" }"#,
            "10-x.toml:5:34: `location`: unknown variable `$hots`",
        ),
        (
            r#"{ use = "redirect", location = "/x", http_to_https = true }"#,
            "10-x.toml:5:3: policy `redirect`: give `location` or `http_to_https = true`, not both",
        ),
        (
            r#"{ use = "redirect" }"#,
            "10-x.toml:5:3: policy `redirect`: give `location` or `http_to_https = true`",
        ),
        (
            r#"{ use = "redirect", http_to_https = true, https_port = 0 }"#,
            "10-x.toml:5:58: `https_port`: 0 is outside 1..=65535",
        ),
    ] {
        let run = check_one(&route(entry));
        assert_eq!(run.code, Some(1), "{entry}");
        assert!(run.stderr.contains(message), "{entry}: {}", run.stderr);
    }
}

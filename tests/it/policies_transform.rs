//! `request_transform` and `response_transform` through the real server:
//! headers and query arguments removed, renamed, set, added when absent
//! and appended, with `$var` templates, as the upstream and the client see
//! them; config errors with file:line.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::Full;
use hyper::Response;

use crate::support::{Moongate, Origin, check_one, client, echo};

fn conf(echo_at: SocketAddr, heads_at: SocketAddr) -> String {
    format!(
        r#"[server]
listen = ["127.0.0.1:0"]
workers = 1
access_log = "off"

[upstream.echo]
servers = [{{ addr = "{echo_at}" }}]

[upstream.heads]
servers = [{{ addr = "{heads_at}" }}]

[[route]]
path = "/rt/"
upstream = "echo"
policies = [{{ use = "request_transform", remove_headers = ["X-Secret"], rename_headers = {{ "X-Old" = "X-New" }}, set_headers = {{ "X-Client" = "$remote_addr", "X-Src" = "via-$http_x_src" }}, add_headers = {{ "X-Default" = "d", "X-Keep" = "never" }}, append_headers = {{ "X-Multi" = "two" }}, remove_querystring = ["debug"], rename_querystring = {{ q = "query" }}, set_querystring = {{ src = "$http_x_src" }}, add_querystring = {{ page = "1", lang = "en" }}, append_querystring = {{ tag = "edge" }} }}]

[[route]]
path = "/resp/"
upstream = "heads"
policies = [{{ use = "response_transform", remove_headers = ["X-Powered-By"], rename_headers = {{ "X-Old-Resp" = "X-New-Resp" }}, set_headers = {{ "X-Served-By" = "edge-$request_method" }}, add_headers = {{ "X-Keep" = "never", "X-Default" = "d" }}, append_headers = {{ "X-Multi" = "two" }} }}]

[[route]]
path_exact = "/lua"
lua.content_inline = 'ngx.header["X-Powered-By"] = "lua"; ngx.say("hi")'
policies = [{{ use = "response_transform", remove_headers = ["X-Powered-By"], set_headers = {{ "X-Served-By" = "edge" }} }}]
"#
    )
}

async fn heads() -> Origin {
    Origin::start(|_req| async {
        Response::builder()
            .header("x-powered-by", "php")
            .header("x-old-resp", "v")
            .header("x-keep", "origin")
            .header("x-multi", "one")
            .body(Full::new(Bytes::from_static(b"ok")))
            .expect("reply")
    })
    .await
}

fn all(r: &reqwest::Response, name: &str) -> Vec<String> {
    (r.headers().get_all(name).iter())
        .map(|v| v.to_str().unwrap_or("").to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_headers_and_query_are_transformed() {
    let echo_origin = Origin::start(echo).await;
    let heads_origin = heads().await;
    let mg = Moongate::start(&conf(echo_origin.addr, heads_origin.addr));
    let r = client()
        .get(mg.url("/rt/x?debug=1&q=cats&lang=fr&tag=a"))
        .header("x-secret", "s")
        .header("x-old", "o")
        .header("x-keep", "mine")
        .header("x-multi", "one")
        .header("x-src", "mail")
        .send()
        .await
        .expect("GET");
    assert_eq!(r.status(), 200);
    let seen: serde_json::Value =
        serde_json::from_str(&r.text().await.expect("body")).expect("JSON");
    let h = &seen["headers"];
    let one = |name: &str| h[name][0].as_str().unwrap_or("<absent>").to_string();
    assert!(h.get("x-secret").is_none(), "{h}");
    assert!(h.get("x-old").is_none(), "{h}");
    assert_eq!(one("x-new"), "o");
    assert_eq!(one("x-client"), "127.0.0.1");
    assert_eq!(
        one("x-src"),
        "via-mail",
        "templates read the request as it came"
    );
    assert_eq!(one("x-default"), "d");
    assert_eq!(one("x-keep"), "mine", "add leaves a present header alone");
    let multi: Vec<&str> = (h["x-multi"].as_array().into_iter().flatten())
        .filter_map(|v| v.as_str())
        .collect();
    assert_eq!(multi.join(","), "one,two");

    let uri = seen["uri"].as_str().expect("uri");
    let (path, query) = uri.split_once('?').expect("a query");
    assert_eq!(path, "/rt/x");
    let mut args: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for pair in query.split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        args.entry(k).or_default().push(v);
    }
    let expected: BTreeMap<&str, Vec<&str>> = [
        ("query", vec!["cats"]),
        ("lang", vec!["fr"]),
        ("src", vec!["mail"]),
        ("page", vec!["1"]),
        ("tag", vec!["a", "edge"]),
    ]
    .into_iter()
    .collect();
    assert_eq!(args, expected, "{uri}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn response_headers_are_transformed_for_proxied_and_lua_answers() {
    let echo_origin = Origin::start(echo).await;
    let heads_origin = heads().await;
    let mg = Moongate::start(&conf(echo_origin.addr, heads_origin.addr));
    let r = client().get(mg.url("/resp/x")).send().await.expect("GET");
    assert_eq!(r.status(), 200);
    assert!(all(&r, "x-powered-by").is_empty());
    assert!(all(&r, "x-old-resp").is_empty());
    assert_eq!(all(&r, "x-new-resp"), ["v"]);
    assert_eq!(all(&r, "x-served-by"), ["edge-GET"]);
    assert_eq!(all(&r, "x-keep"), ["origin"]);
    assert_eq!(all(&r, "x-default"), ["d"]);
    assert_eq!(all(&r, "x-multi"), ["one", "two"]);
    assert_eq!(r.text().await.expect("body"), "ok");

    let r = client().get(mg.url("/lua")).send().await.expect("GET");
    assert_eq!(r.status(), 200);
    assert!(all(&r, "x-powered-by").is_empty());
    assert_eq!(all(&r, "x-served-by"), ["edge"]);
    assert_eq!(r.text().await.expect("body"), "hi\n");
}

#[test]
fn config_errors_name_file_and_line() {
    let route = |entry: &str| {
        format!("[[route]]\npath = \"/\"\nroot = \".\"\npolicies = [\n  {entry},\n]\n")
    };
    let col = |entry: &str, key: &str| {
        let line = format!("  {entry}");
        let at = line.find(&format!("{key} =")).expect("key") + key.len() + 3;
        at + 1
    };
    for (entry, key, message) in [
        (
            r#"{ use = "request_transform", set_headers = { "bad header" = "x" } }"#,
            "set_headers",
            "`set_headers`: `bad header` is not a valid header name",
        ),
        (
            r#"{ use = "response_transform", set_headers = { "X-A" = "$nope" } }"#,
            "set_headers",
            "`set_headers`: `X-A`: unknown variable `$nope`",
        ),
        (
            r#"{ use = "request_transform", remove_querystring = "debug" }"#,
            "remove_querystring",
            "`remove_querystring`: expected list of strings",
        ),
        (
            r#"{ use = "request_transform", rename_headers = { "X-A" = 3 } }"#,
            "rename_headers",
            "`rename_headers`: `X-A`: expected table: header → new header name",
        ),
    ] {
        let run = check_one(&route(entry));
        assert_eq!(run.code, Some(1), "{entry}");
        let want = format!("10-x.toml:5:{}: {message}", col(entry, key));
        assert!(
            run.stderr.contains(&want),
            "{entry}: want {want}: {}",
            run.stderr
        );
    }
    let run = check_one(&route(r#"{ use = "response_transform" }"#));
    assert!(
        run.stderr
            .contains("10-x.toml:5:3: policy `response_transform`: give at least one change"),
        "{}",
        run.stderr
    );
}

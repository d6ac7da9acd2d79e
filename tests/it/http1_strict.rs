//! RFC 9112 strictness (SPEC §10): each bad request is answered by
//! moongate without contacting the upstream, and moongate's own error
//! answers share one format (JSON, or HTML for a browser).

use std::time::Duration;

use crate::support::{Moongate, Origin, client, echo, raw_exchange, raw_status};

fn conf(origin: std::net::SocketAddr, server_extra: &str) -> String {
    format!(
        r#"[server]
listen = ["127.0.0.1:0"]
workers = 1
access_log = "off"
client_max_body_size = "1KiB"
{server_extra}

[upstream.app]
servers = [{{ addr = "{origin}" }}]

[upstream.other]
servers = [{{ addr = "{origin}" }}]

[[route]]
host = "other.test"
path = "/"
upstream = "other"
lua.header_filter_inline = "ngx.header['x-route'] = 'other'"

[[route]]
path = "/"
methods = ["GET", "POST", "HEAD"]
upstream = "app"
lua.header_filter_inline = "ngx.header['x-route'] = 'app'"
"#
    )
}

/// The body of a raw answer.
fn body_of(answer: &str) -> &str {
    answer.split_once("\r\n\r\n").map_or("", |(_, b)| b)
}

/// The JSON body of a raw answer.
fn json_of(answer: &str) -> serde_json::Value {
    serde_json::from_str(body_of(answer)).unwrap_or_else(|e| panic!("{e}: {answer}"))
}

const WAIT: Duration = Duration::from_secs(2);

#[tokio::test]
async fn two_host_headers_are_refused() {
    let origin = Origin::start(echo).await;
    let mg = Moongate::start(&conf(origin.addr, ""));
    let answer = raw_exchange(
        mg.http[0],
        b"GET /x HTTP/1.1\r\nHost: a.test\r\nHost: other.test\r\n\r\n",
        WAIT,
    )
    .await;
    assert_eq!(raw_status(&answer), 400, "{answer}");
    assert_eq!(json_of(&answer)["status"], 400);
    assert!(
        answer.to_ascii_lowercase().contains("connection: close"),
        "{answer}"
    );
    assert_eq!(origin.hits(), 0);
}

#[tokio::test]
async fn transfer_encoding_must_be_exactly_chunked() {
    let origin = Origin::start(echo).await;
    let mg = Moongate::start(&conf(origin.addr, ""));
    for te in ["gzip, chunked", "chunked, chunked", "identity"] {
        let req = format!(
            "POST /x HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: {te}\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
        );
        let answer = raw_exchange(mg.http[0], req.as_bytes(), WAIT).await;
        let status = raw_status(&answer);
        // nginx answers 501; a coding hyper cannot frame at all is a 400.
        assert!(status == 501 || status == 400, "{te}: {answer}");
        if te != "identity" {
            assert_eq!(status, 501, "{te}: {answer}");
            assert_eq!(json_of(&answer)["status"], 501, "{te}");
        }
    }
    // Two fields, each "chunked".
    let answer = raw_exchange(
        mg.http[0],
        b"POST /x HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        WAIT,
    )
    .await;
    assert_eq!(raw_status(&answer), 501, "{answer}");
    assert_eq!(origin.hits(), 0);
    // Exactly "chunked" still works.
    let answer = raw_exchange(
        mg.http[0],
        b"POST /x HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        WAIT,
    )
    .await;
    assert_eq!(raw_status(&answer), 200, "{answer}");
    assert_eq!(json_of(&answer)["body_len"], 3);
}

#[tokio::test]
async fn an_absolute_form_target_names_the_host() {
    let origin = Origin::start(echo).await;
    let mg = Moongate::start(&conf(origin.addr, ""));
    let answer = raw_exchange(
        mg.http[0],
        b"GET http://Other.Test:8081/x?y=1 HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n",
        WAIT,
    )
    .await;
    assert_eq!(raw_status(&answer), 200, "{answer}");
    assert!(
        answer.contains("x-route: other"),
        "routed on the Host header: {answer}"
    );
    let seen = json_of(&answer);
    assert_eq!(seen["headers"]["host"][0], "Other.Test:8081");
    assert_eq!(seen["uri"], "/x?y=1");
}

#[tokio::test]
async fn underscored_header_names_are_dropped_unless_kept() {
    let origin = Origin::start(echo).await;
    let req = b"GET /x HTTP/1.1\r\nHost: a.test\r\nX_Forwarded_For: 6.6.6.6\r\nX-Kept: yes\r\nConnection: close\r\n\r\n";
    let mg = Moongate::start(&conf(origin.addr, ""));
    let seen = json_of(&raw_exchange(mg.http[0], req, WAIT).await);
    assert!(seen["headers"].get("x_forwarded_for").is_none(), "{seen}");
    assert_eq!(seen["headers"]["x-kept"][0], "yes");
    assert_eq!(seen["headers"]["x-forwarded-for"][0], "127.0.0.1");
    drop(mg);
    let mg = Moongate::start(&conf(origin.addr, "underscores_in_headers = true"));
    let seen = json_of(&raw_exchange(mg.http[0], req, WAIT).await);
    assert_eq!(seen["headers"]["x_forwarded_for"][0], "6.6.6.6", "{seen}");
}

#[tokio::test]
async fn head_size_and_count_limits_are_enforced_as_configured() {
    let origin = Origin::start(echo).await;
    let mg = Moongate::start(&conf(
        origin.addr,
        "max_header_size = \"4KiB\"\nmax_header_count = 20",
    ));
    // An 8 000-byte header with a 4 KiB limit.
    let big = format!(
        "GET /x HTTP/1.1\r\nHost: a.test\r\nX-Big: {}\r\n\r\n",
        "v".repeat(8000)
    );
    let answer = raw_exchange(mg.http[0], big.as_bytes(), WAIT).await;
    assert_eq!(
        raw_status(&answer),
        431,
        "{}",
        &answer[..answer.len().min(200)]
    );
    assert_eq!(json_of(&answer)["status"], 431);
    // Exactly 4096 bytes of head pass: "GET /x HTTP/1.1\r\n" (17),
    // "host: a.test\r\n" (14), "connection: close\r\n" (19), the blank line
    // (2) and "x-fill: ...\r\n" (10 + n).
    let fill = 4096 - 17 - 14 - 19 - 2 - 10;
    let exact = format!(
        "GET /x HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\nX-Fill: {}\r\n\r\n",
        "v".repeat(fill)
    );
    assert_eq!(
        raw_status(&raw_exchange(mg.http[0], exact.as_bytes(), WAIT).await),
        200
    );
    let over = exact.replace("X-Fill: v", "X-Fill: vv");
    assert_eq!(
        raw_status(&raw_exchange(mg.http[0], over.as_bytes(), WAIT).await),
        431
    );
    // 20 header lines pass, 21 do not.
    let mut lines = String::from("GET /x HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n");
    for i in 0..18 {
        lines.push_str(&format!("X-H{i}: 1\r\n"));
    }
    let twenty = format!("{lines}\r\n");
    assert_eq!(
        raw_status(&raw_exchange(mg.http[0], twenty.as_bytes(), WAIT).await),
        200
    );
    let twenty_one = format!("{lines}X-One-More: 1\r\n\r\n");
    assert_eq!(
        raw_status(&raw_exchange(mg.http[0], twenty_one.as_bytes(), WAIT).await),
        431
    );
    assert_eq!(origin.hits(), 2);
}

#[tokio::test]
async fn the_default_header_count_is_one_hundred() {
    // Answered by Lua: a test origin has its own limit of 100, which the
    // forwarding headers would pass.
    let mg = Moongate::start(
        "[server]\nlisten = [\"127.0.0.1:0\"]\naccess_log = \"off\"\n\
         [[route]]\npath = \"/\"\nlua.content_inline = \"ngx.say('ok')\"\n",
    );
    let mut head = String::from("GET /x HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n");
    for i in 0..98 {
        head.push_str(&format!("X-H{i}: 1\r\n"));
    }
    let hundred = format!("{head}\r\n");
    assert_eq!(
        raw_status(&raw_exchange(mg.http[0], hundred.as_bytes(), WAIT).await),
        200
    );
    let more = format!("{head}X-Extra: 1\r\n\r\n");
    assert_eq!(
        raw_status(&raw_exchange(mg.http[0], more.as_bytes(), WAIT).await),
        431
    );
}

/// Asserts a reqwest response is one of moongate's JSON errors.
async fn assert_json_error(resp: reqwest::Response, status: u16) {
    assert_eq!(resp.status(), status);
    assert_eq!(
        resp.headers()["content-type"],
        "application/json",
        "{status}"
    );
    let text = resp.text().await.expect("error body");
    let v: serde_json::Value = serde_json::from_str(&text).expect("JSON error body");
    assert_eq!(v["status"], status);
    assert!(v["error"].as_str().is_some_and(|e| !e.is_empty()), "{v}");
}

#[tokio::test]
async fn moongates_own_errors_are_json_or_html_for_browsers() {
    let origin = Origin::start(|req: hyper::Request<hyper::body::Incoming>| async move {
        if req.uri().path() == "/slow" {
            tokio::time::sleep(Duration::from_secs(3)).await;
        }
        crate::support::text(200, "ok")
    })
    .await;
    let keys = tempfile::NamedTempFile::new().expect("keys file");
    std::fs::write(keys.path(), "k-1\n").expect("write keys");
    let conf = format!(
        r#"[server]
listen = ["127.0.0.1:0"]
workers = 1
access_log = "off"
client_max_body_size = "1KiB"

[upstream.app]
servers = [{{ addr = "{origin}" }}]
read_timeout = "500ms"

[upstream.dead]
servers = [{{ addr = "127.0.0.1:1" }}]

[limit.one]
rate = "1/m"
burst = 1

[[route]]
path = "/keyed"
upstream = "app"
policies = [{{ use = "api_key", keys_file = "{keys}" }}]

[[route]]
path = "/denied"
upstream = "app"
lua.access_inline = "return ngx.exit(403)"

[[route]]
path = "/get-only"
methods = ["GET"]
upstream = "app"

[[route]]
path = "/limited"
upstream = "app"
limit = "one"

[[route]]
path = "/dead"
upstream = "dead"

[[route]]
path = "/any"
upstream = "app"

[[route]]
path = "/slow"
upstream = "app"
"#,
        origin = origin.addr,
        keys = keys.path().display()
    );
    let mg = Moongate::start(&conf);
    let http = client();
    let get = |path: &str| http.get(mg.url(path)).send();
    assert_json_error(get("/keyed").await.expect("GET"), 401).await;
    assert_json_error(get("/denied").await.expect("GET"), 403).await;
    let resp = http.post(mg.url("/get-only")).send().await.expect("POST");
    assert_eq!(resp.headers()["allow"], "GET, HEAD");
    assert_json_error(resp, 405).await;
    let big = http
        .post(mg.url("/any"))
        .body(vec![b'x'; 4096])
        .send()
        .await
        .expect("POST");
    assert_json_error(big, 413).await;
    assert_eq!(get("/limited").await.expect("GET").status(), 200);
    assert_json_error(get("/limited").await.expect("GET"), 429).await;
    assert_json_error(get("/dead").await.expect("GET"), 502).await;
    assert_json_error(get("/slow").await.expect("GET"), 504).await;
    let no_route = Moongate::start(&format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\naccess_log = \"off\"\n[upstream.a]\nservers = [{{ addr = \"{}\" }}]\n[[route]]\nhost = \"only.test\"\npath = \"/\"\nupstream = \"a\"\n",
        origin.addr
    ));
    assert_json_error(
        client().get(no_route.url("/")).send().await.expect("GET"),
        404,
    )
    .await;

    // A browser gets a page, not JSON.
    let page = http
        .get(mg.url("/denied"))
        .header(
            "accept",
            "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
        )
        .send()
        .await
        .expect("GET");
    assert_eq!(page.status(), 403);
    assert_eq!(page.headers()["content-type"], "text/html");
    let html = page.text().await.expect("page");
    assert!(html.contains("<title>403 Forbidden</title>"), "{html}");
    // An explicit JSON preference, and a HEAD, get no page.
    let json = http
        .get(mg.url("/denied"))
        .header("accept", "application/json")
        .send()
        .await
        .expect("GET");
    assert_json_error(json, 403).await;
    let head = http.head(mg.url("/denied")).send().await.expect("HEAD");
    assert_eq!(head.status(), 403);
    assert_eq!(head.bytes().await.expect("no body").len(), 0);
}

#[tokio::test]
async fn a_slow_head_gets_a_json_408() {
    let origin = Origin::start(echo).await;
    let mg = Moongate::start(&conf(origin.addr, "client_header_timeout = \"300ms\""));
    let answer = raw_exchange(
        mg.http[0],
        b"GET / HTTP/1.1\r\nHost: a",
        Duration::from_secs(3),
    )
    .await;
    assert_eq!(raw_status(&answer), 408, "{answer}");
    assert_eq!(json_of(&answer)["status"], 408);
}

#[tokio::test]
async fn error_format_pins_the_error_body_and_follows_reload() {
    let conf = |format: &str| {
        format!(
            "[server]\nlisten = [\"127.0.0.1:0\"]\nworkers = 1\naccess_log = \"off\"\nerror_format = \"{format}\"\n\n[admin]\nlisten = \"127.0.0.1:0\"\n\n[[route]]\npath = \"/denied\"\nlua.content_inline = \"return ngx.exit(403)\"\n"
        )
    };
    let mg = Moongate::start(&conf("html"));
    let http = client();
    // No Accept at all (as curl -s or an ngx_lua test client sends): HTML, as nginx answers.
    for path in ["/denied", "/nowhere"] {
        let resp = http.get(mg.url(path)).send().await.expect("GET");
        let status = resp.status().as_u16();
        assert_eq!(resp.headers()["content-type"], "text/html");
        let page = resp.text().await.expect("page");
        let title = if status == 403 {
            "403 Forbidden"
        } else {
            "404 Not Found"
        };
        assert!(page.contains(&format!("<title>{title}</title>")), "{page}");
    }
    let json_asked = http
        .get(mg.url("/denied"))
        .header("accept", "application/json")
        .send()
        .await
        .expect("GET");
    assert_eq!(json_asked.headers()["content-type"], "text/html");

    mg.write_conf("00-test.toml", &conf("json"));
    assert_eq!(mg.admin_reload().await.0, 200);
    let browser = http
        .get(mg.url("/denied"))
        .header("accept", "text/html")
        .send()
        .await
        .expect("GET");
    assert_json_error(browser, 403).await;
}

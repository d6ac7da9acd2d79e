//! The access log's fields, each as a real request through moongate sets
//! it (proxied over HTTP/1.0, 1.1 and 2, a static file, a Lua answer, the
//! `request_id` policy), header values of any bytes kept valid JSON, and
//! `access_log_fields` choosing and ordering them: refused by `check`
//! when it names an unknown field, and changed by a reload.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use crate::access_log::{DEFAULT_ORDER, keys, lines, lines_text};
use crate::support::{Moongate, Origin, client, raw_exchange, raw_status};

/// An origin answering 201 "created", telling the request id it was sent
/// in `x-seen-id`. It reads the whole body first (hyper closes a
/// connection whose request body was left unread, and the tests count on
/// it being pooled).
async fn id_origin() -> Origin {
    Origin::start(|req| async move {
        use http_body_util::BodyExt;
        let seen = req
            .headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let _ = req.into_body().collect().await;
        let mut reply = crate::support::text(201, "created");
        if let Ok(v) = seen.parse() {
            reply.headers_mut().insert("x-seen-id", v);
        }
        reply
    })
    .await
}

/// One worker (so a second request finds the first one's pooled upstream
/// connection): a named proxied route, one with the `request_id` policy,
/// a static route, a Lua route and a proxied route whose `header_filter`
/// changes the status; `server_extra` goes into `[server]`.
fn fields_conf(origin: SocketAddr, log: &Path, root: &Path, server_extra: &str) -> String {
    format!(
        r#"[server]
listen = ["127.0.0.1:0"]
workers = 1
access_log = "{log}"
{server_extra}

[admin]
listen = "127.0.0.1:0"

[upstream.app]
servers = [{{ addr = "{origin}" }}]

[[route]]
name = "app-route"
path = "/app/"
upstream = "app"

[[route]]
path = "/ids/"
upstream = "app"
policies = [{{ use = "request_id" }}]

[[route]]
path = "/static/"
root = "{root}"

[[route]]
path_exact = "/lua"
lua.content_inline = "ngx.print('from lua')"

[[route]]
path = "/filtered/"
upstream = "app"
lua.header_filter_inline = "ngx.status = 203"
"#,
        log = log.display(),
        root = root.display(),
    )
}

/// A started moongate on [`fields_conf`], its log file, and the dirs
/// that hold them.
struct Setup {
    mg: Moongate,
    log: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

fn setup(origin: &Origin, server_extra: &str) -> Setup {
    let dir = tempfile::tempdir().expect("temp dir");
    let log = dir.path().join("access.log");
    let root = dir.path().join("root");
    std::fs::create_dir(&root).expect("root dir");
    std::fs::write(root.join("hello.txt"), "hello file").expect("static file");
    let mg = Moongate::start(&fields_conf(origin.addr, &log, &root, server_extra));
    Setup { mg, log, _dir: dir }
}

async fn raw(addr: SocketAddr, request: &[u8]) -> String {
    raw_exchange(addr, request, Duration::from_secs(5)).await
}

fn secs(v: &Value) -> f64 {
    v.as_f64()
        .unwrap_or_else(|| panic!("not a number of seconds: {v}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxied_request_logs_every_field() {
    let origin = id_origin().await;
    let s = setup(&origin, "");
    let first = "POST /app/x?y=1 HTTP/1.1\r\nHost: app.test\r\nUser-Agent: tester/1.0\r\n\
                 Referer: http://ref.test/page\r\nX-Request-Id: req-42\r\n\
                 Content-Length: 5\r\nConnection: close\r\n\r\nhello";
    assert_eq!(raw_status(&raw(s.mg.http[0], first.as_bytes()).await), 201);
    // The same worker, so the upstream connection comes from the pool.
    let second = "GET /app/again HTTP/1.0\r\nHost: App.Test:8080\r\n\r\n";
    assert_eq!(raw_status(&raw(s.mg.http[0], second.as_bytes()).await), 201);

    // The client gets the status the filter set; the log tells both.
    let third = "GET /filtered/x HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n";
    assert_eq!(raw_status(&raw(s.mg.http[0], third.as_bytes()).await), 203);

    let entries = lines(&s.log, 3);
    assert_eq!(entries.len(), 3, "{entries:?}");
    let e = &entries[0];
    assert_eq!(keys(&lines_text(&s.log)[0]), DEFAULT_ORDER);
    assert_eq!(e["client"], "127.0.0.1");
    assert_eq!(e["method"], "POST");
    assert_eq!(e["uri"], "/app/x?y=1");
    assert_eq!(e["host"], "app.test");
    assert_eq!(e["protocol"], "HTTP/1.1");
    assert_eq!(e["status"], 201);
    assert_eq!(e["bytes"], "created".len());
    assert_eq!(e["bytes_received"], first.len(), "head and body: {e}");
    assert_eq!(e["upstream_addr"], origin.addr.to_string());
    assert_eq!(e["upstream_status"], 201);
    let connect = secs(&e["upstream_connect_time"]);
    assert!(connect > 0.0, "a new connection was made: {e}");
    assert!(secs(&e["upstream_time"]) >= connect, "{e}");
    assert!(secs(&e["request_time"]) >= secs(&e["upstream_time"]), "{e}");
    assert_eq!(e["cache_status"], Value::Null);
    assert_eq!(e["route"], "app-route");
    assert_eq!(e["request_id"], "req-42");
    assert_eq!(e["user_agent"], "tester/1.0");
    assert_eq!(e["referer"], "http://ref.test/page");
    assert_eq!(e["aborted"], false);

    let e = &entries[1];
    assert_eq!(e["protocol"], "HTTP/1.0");
    assert_eq!(e["host"], "app.test", "lowercase, no port: {e}");
    assert_eq!(e["upstream_connect_time"], 0.0, "a pooled connection: {e}");
    assert_eq!(e["upstream_status"], 201);
    assert_eq!(e["bytes_received"], second.len());
    for absent in ["request_id", "user_agent", "referer", "cache_status"] {
        assert_eq!(e[absent], Value::Null, "{absent}: {e}");
    }

    let e = &entries[2];
    assert_eq!(
        (&e["status"], &e["upstream_status"]),
        (&203.into(), &201.into()),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_and_lua_answers_have_no_upstream_fields() {
    let origin = id_origin().await;
    let s = setup(&origin, "");
    let http = client();
    let file = http.get(s.mg.url("/static/hello.txt")).send().await;
    assert_eq!(
        file.expect("static").text().await.ok().as_deref(),
        Some("hello file")
    );
    let lua = http.get(s.mg.url("/lua")).send().await;
    assert_eq!(
        lua.expect("lua").text().await.ok().as_deref(),
        Some("from lua")
    );

    let entries = lines(&s.log, 2);
    assert_eq!(entries.len(), 2, "{entries:?}");
    for (e, line) in [(&entries[0], 23), (&entries[1], 27)] {
        assert_eq!(e["status"], 200);
        for absent in [
            "upstream_addr",
            "upstream_status",
            "upstream_connect_time",
            "upstream_time",
            "cache_status",
            "request_id",
        ] {
            assert_eq!(e[absent], Value::Null, "{absent}: {e}");
        }
        let route = e["route"].as_str().unwrap_or_default();
        assert!(route.ends_with(&format!("00-test.toml:{line}")), "{e}");
        assert_eq!(e["host"], "127.0.0.1");
        assert_eq!(e["protocol"], "HTTP/1.1");
        assert!(e["bytes_received"].as_u64().is_some_and(|n| n > 20), "{e}");
    }
    assert_eq!(entries[0]["bytes"], "hello file".len());
    assert_eq!(entries[1]["bytes"], "from lua".len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_request_id_is_the_one_the_upstream_saw() {
    let origin = id_origin().await;
    let s = setup(&origin, "");
    let http = client();
    let made = http.get(s.mg.url("/ids/a")).send().await.expect("request");
    let seen = |r: &reqwest::Response, name| {
        r.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let made_id = seen(&made, "x-seen-id").expect("the policy made an id");
    assert_eq!(seen(&made, "x-request-id").as_ref(), Some(&made_id));
    let kept = http
        .get(s.mg.url("/ids/b"))
        .header("x-request-id", "client-7")
        .send()
        .await
        .expect("request");
    assert_eq!(seen(&kept, "x-seen-id").as_deref(), Some("client-7"));
    // Not a valid id: the policy replaces it, and the log says so.
    let bad = http
        .get(s.mg.url("/ids/c"))
        .header("x-request-id", "no spaces!")
        .send()
        .await
        .expect("request");
    let replaced = seen(&bad, "x-seen-id").expect("a replacement id");

    let entries = lines(&s.log, 3);
    assert_eq!(entries.len(), 3, "{entries:?}");
    assert_eq!(entries[0]["request_id"], made_id.as_str());
    assert!(
        made_id.len() == 32 && made_id.bytes().all(|b| b.is_ascii_hexdigit()),
        "{made_id}"
    );
    assert_eq!(entries[1]["request_id"], "client-7");
    assert_eq!(entries[2]["request_id"], replaced.as_str());
    assert_ne!(replaced, made_id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_requests_log_their_protocol() {
    let origin = id_origin().await;
    let s = setup(&origin, "");
    crate::support::install_crypto();
    let h2 = reqwest::Client::builder()
        .no_proxy()
        .http2_prior_knowledge()
        .timeout(Duration::from_secs(15))
        .build()
        .expect("h2 client");
    let resp = h2
        .post(s.mg.url("/app/h2"))
        .header("user-agent", "h2-tester")
        .body("twelve bytes")
        .send()
        .await
        .expect("h2 request");
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    assert_eq!(resp.status(), 201);

    let entries = lines(&s.log, 1);
    let e = &entries[0];
    assert_eq!(e["protocol"], "HTTP/2.0", "{e}");
    assert_eq!(e["host"], "127.0.0.1");
    assert_eq!(e["user_agent"], "h2-tester");
    assert_eq!(e["upstream_status"], 201);
    // The head as HTTP/1.1 would send it, and the 12 body bytes.
    let head = "POST /app/h2 HTTP/2.0\r\n\r\nuser-agent: h2-tester\r\n".len();
    assert!(
        e["bytes_received"]
            .as_u64()
            .is_some_and(|n| n as usize > head + 12),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_log_fields_choose_and_order_the_keys() {
    let origin = id_origin().await;
    let order = [
        "status",
        "user_agent",
        "uri",
        "upstream_status",
        "timestamp",
    ];
    let list = order.map(|f| format!("\"{f}\"")).join(", ");
    let s = setup(&origin, &format!("access_log_fields = [{list}]"));
    let http = client();
    http.get(s.mg.url("/app/chosen"))
        .header("user-agent", "picky")
        .send()
        .await
        .expect("request");
    http.get(s.mg.url("/lua")).send().await.expect("request");

    let entries = lines(&s.log, 2);
    assert_eq!(entries.len(), 2, "{entries:?}");
    for line in lines_text(&s.log) {
        assert_eq!(keys(&line), order, "{line}");
    }
    assert_eq!(entries[0]["status"], 201);
    assert_eq!(entries[0]["user_agent"], "picky");
    assert_eq!(entries[0]["uri"], "/app/chosen");
    assert_eq!(entries[0]["upstream_status"], 201);
    assert_eq!(entries[1]["upstream_status"], Value::Null);
}

#[test]
fn an_unknown_field_is_refused_with_its_place_and_the_valid_names() {
    let names = DEFAULT_ORDER.join(", ");
    crate::support::assert_check_errors(
        "00-log.toml",
        &[
            (
                "[server]\naccess_log = \"stdout\"\naccess_log_fields = [\"uri\", \"time\"]\n",
                &format!(
                    "00-log.toml:3:29: `access_log_fields`: unknown field \"time\"; the fields are: {names}"
                ),
            ),
            (
                "[server]\naccess_log_fields = [\"status\", \"status\"]\n",
                "00-log.toml:2:32: `access_log_fields` names \"status\" twice",
            ),
        ],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_values_with_quotes_and_odd_bytes_stay_valid_json() {
    let origin = id_origin().await;
    let s = setup(&origin, "");
    let mut request = b"GET /app/odd HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n".to_vec();
    // A quote, a backslash, a tab (the one control character a field value
    // may hold) and a byte that is not UTF-8; then a referer that tries to
    // close the string and add a key.
    request.extend_from_slice(b"User-Agent: a \"quoted\" back\\slash\ttab \xff end\r\n");
    request.extend_from_slice(b"Referer: x\", \"status\": 999, \"y\": \"\r\n\r\n");
    assert_eq!(raw_status(&raw(s.mg.http[0], &request).await), 201);

    let entries = lines(&s.log, 1);
    let e = &entries[0];
    assert_eq!(
        e["user_agent"],
        "a \"quoted\" back\\slash\ttab \u{fffd} end"
    );
    assert_eq!(e["referer"], "x\", \"status\": 999, \"y\": \"");
    assert_eq!(e["status"], 201);
    assert_eq!(keys(&lines_text(&s.log)[0]), DEFAULT_ORDER);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_changes_the_fields() {
    let origin = id_origin().await;
    let s = setup(&origin, "");
    let http = client();
    let conf = |extra: &str| {
        let root = s.log.with_file_name("root");
        fields_conf(origin.addr, &s.log, &root, extra)
    };
    let reload = || async {
        let (status, body) = s.mg.admin_reload().await;
        assert_eq!(status, 200, "{body}");
    };
    http.get(s.mg.url("/app/one"))
        .send()
        .await
        .expect("request");
    assert_eq!(lines(&s.log, 1).len(), 1);

    s.mg.write_conf(
        "00-test.toml",
        &conf("access_log_fields = [\"uri\", \"referer\", \"status\"]"),
    );
    reload().await;
    http.get(s.mg.url("/app/two"))
        .header("referer", "http://before.test/")
        .send()
        .await
        .expect("request");
    assert_eq!(lines(&s.log, 2).len(), 2);

    s.mg.write_conf("00-test.toml", &conf(""));
    reload().await;
    http.get(s.mg.url("/app/three"))
        .send()
        .await
        .expect("request");

    let entries = lines(&s.log, 3);
    let text = lines_text(&s.log);
    assert_eq!(entries.len(), 3, "{text:?}");
    assert_eq!(keys(&text[0]), DEFAULT_ORDER);
    assert_eq!(keys(&text[1]), ["uri", "referer", "status"]);
    assert_eq!(entries[1]["uri"], "/app/two");
    assert_eq!(entries[1]["referer"], "http://before.test/");
    assert_eq!(keys(&text[2]), DEFAULT_ORDER);
    assert_eq!(entries[2]["uri"], "/app/three");
}

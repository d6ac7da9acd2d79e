//! Response control from Lua through real requests: headers set in
//! access reaching a proxied response, a content handler streaming as it
//! runs (`ngx.flush`, `ngx.send_headers`, `ngx.headers_sent`, `ngx.eof`),
//! the status sent standing after `ngx.exit`, `ngx.on_abort` when the
//! client goes away, and the `body_filter` phase over a streamed body.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::support::{
    Moongate, Origin, client, echo, raw_content_length, raw_exchange, raw_status, text,
};

/// A server with a shared dict `d`, an upstream `app` at `origin`, and
/// `routes`.
fn conf(origin: SocketAddr, routes: &str) -> String {
    format!(
        r#"[server]
listen = ["127.0.0.1:0"]
workers = 2
access_log = "off"

[lua.shared_dict]
d = "1MiB"

[upstream.app]
servers = [{{ addr = "{origin}" }}]

[[route]]
path_exact = "/check"
lua.content_inline = '''
local v = ngx.shared.d:get(ngx.var.arg_k)
ngx.print(tostring(v))
'''

{routes}"#
    )
}

/// Reads `/check?k=KEY` until it says `want` (or gives up after 5 s).
async fn wait_dict(mg: &Moongate, key: &str, want: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let r = client()
            .get(mg.url(&format!("/check?k={key}")))
            .send()
            .await
            .expect("GET /check");
        let body = r.text().await.expect("body");
        if body == want || Instant::now() > deadline {
            return body;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_set_in_access_reach_the_proxied_response() {
    let origin = Origin::start(|_req| async { text(200, "from origin") }).await;
    let mg = Moongate::start(&conf(
        origin.addr,
        r#"[[route]]
path = "/"
upstream = "app"
lua.access_inline = '''
ngx.header["X-RateLimit-Remaining"] = "9"
ngx.header["X-Multi"] = { "a", "b" }
ngx.header.content_type = "application/x-from-lua"
'''
"#,
    ));
    let r = client().get(mg.url("/x")).send().await.expect("GET");
    assert_eq!(r.status(), 200);
    let h = r.headers().clone();
    assert_eq!(h["x-ratelimit-remaining"], "9");
    let multi: Vec<_> = h.get_all("x-multi").iter().collect();
    assert_eq!(multi, ["a", "b"]);
    // The upstream's own type wins over one set before it answered.
    let types: Vec<_> = h.get_all("content-type").iter().collect();
    assert_eq!(types.len(), 1, "{h:?}");
    assert_ne!(types[0], "application/x-from-lua");
    assert_eq!(r.text().await.expect("body"), "from origin");
    assert_eq!(origin.hits(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ngx_flush_streams_a_content_handler_as_it_runs() {
    let origin = Origin::named("unused").await;
    let mg = Moongate::start(&conf(
        origin.addr,
        r#"[[route]]
path_exact = "/stream"
lua.content_inline = '''
ngx.header["X-Early"] = "yes"
ngx.say("first")
local ok, err = ngx.flush(true)
ngx.sleep(0.6)
ngx.say("second ", tostring(ok), " ", tostring(err))
'''
"#,
    ));
    let started = Instant::now();
    let mut r = client().get(mg.url("/stream")).send().await.expect("GET");
    let head_after = started.elapsed();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-early"], "yes");
    assert!(r.headers().get("content-length").is_none());
    let first = r.chunk().await.expect("chunk").expect("a first chunk");
    let first_after = started.elapsed();
    assert_eq!(&first[..], b"first\n");
    let mut rest = Vec::new();
    while let Some(c) = r.chunk().await.expect("chunk") {
        rest.extend_from_slice(&c);
    }
    let total = started.elapsed();
    assert_eq!(String::from_utf8_lossy(&rest), "second 1 nil\n");
    // The head and the first line came before the handler's sleep ended;
    // the whole body only after it.
    assert!(head_after < Duration::from_millis(500), "{head_after:?}");
    assert!(first_after < Duration::from_millis(500), "{first_after:?}");
    assert!(total >= Duration::from_millis(600), "{total:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_sent_stands_and_late_changes_are_ignored() {
    let origin = Origin::named("unused").await;
    let mg = Moongate::start(&conf(
        origin.addr,
        r#"[[route]]
path_exact = "/exit-after-say"
lua.content_inline = '''
ngx.say("partial")
ngx.exit(500)
'''

[[route]]
path_exact = "/exit-after-flush"
lua.content_inline = '''
ngx.status = 202
ngx.say("streamed")
ngx.flush()
ngx.sleep(0.05)
ngx.exit(404)
'''

[[route]]
path_exact = "/late"
lua.content_inline = '''
local before = ngx.headers_sent
local ok = ngx.send_headers()
local after = ngx.headers_sent
ngx.status = 404
ngx.header["X-Late"] = "1"
ngx.say(tostring(before), " ", tostring(ok), " ", tostring(after), " ", ngx.status)
'''

[[route]]
path_exact = "/status-only"
lua.content_inline = '''
ngx.status = 302
ngx.header["Location"] = "http://example.test/foo"
'''

[[route]]
path_exact = "/eof"
lua.content_inline = '''
ngx.say("done")
ngx.eof()
local ok, err = ngx.say("more")
ngx.sleep(0.2)
ngx.shared.d:set("after_eof", tostring(ok) .. " " .. tostring(err))
'''
"#,
    ));
    let r = client()
        .get(mg.url("/exit-after-say"))
        .send()
        .await
        .expect("GET");
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.expect("body"), "partial\n");

    let r = client()
        .get(mg.url("/exit-after-flush"))
        .send()
        .await
        .expect("GET");
    assert_eq!(r.status(), 202);
    assert_eq!(r.text().await.expect("body"), "streamed\n");

    let r = client().get(mg.url("/late")).send().await.expect("GET");
    assert_eq!(r.status(), 200);
    assert!(r.headers().get("x-late").is_none());
    assert_eq!(r.text().await.expect("body"), "false 1 true 200\n");
    mg.wait_log(
        "attempt to set ngx.status after sending out response headers",
        Duration::from_secs(5),
    );

    // A handler that sets a status and returns sends an empty body (no
    // error page: only ngx.exit(status) gets one).
    let r = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
        .get(mg.url("/status-only"))
        .send()
        .await
        .expect("GET");
    assert_eq!(r.status(), 302);
    assert_eq!(r.headers()["location"], "http://example.test/foo");
    assert_eq!(r.text().await.expect("body"), "");

    // ngx.eof: the client has its answer while the handler goes on.
    let started = Instant::now();
    let r = client().get(mg.url("/eof")).send().await.expect("GET");
    assert_eq!(r.text().await.expect("body"), "done\n");
    assert!(started.elapsed() < Duration::from_millis(200));
    assert_eq!(
        wait_dict(&mg, "after_eof", "nil seen eof").await,
        "nil seen eof"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_abort_runs_when_the_client_goes_away() {
    let origin = Origin::named("unused").await;
    let mg = Moongate::start(&conf(
        origin.addr,
        r#"[[route]]
path_exact = "/wait"
lua.content_inline = '''
local ok = ngx.on_abort(function()
    ngx.shared.d:set("aborted", "yes " .. ngx.var.arg_id)
end)
local again, err = ngx.on_abort(function() end)
ngx.shared.d:set("second", tostring(again) .. " " .. tostring(err))
ngx.sleep(10)
ngx.shared.d:set("aborted", "slept through")
'''
"#,
    ));
    let addr = mg.http[0];
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.write_all(b"GET /wait?id=7 HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("send");
    assert_eq!(
        wait_dict(&mg, "second", "nil duplicate call").await,
        "nil duplicate call"
    );
    drop(s);
    assert_eq!(wait_dict(&mg, "aborted", "yes 7").await, "yes 7");
}

/// An origin on 127.0.0.1 answering every request with `total` bytes of
/// `x`, chunked, in 64 KiB chunks.
fn big_origin(total: usize) -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                let mut head = Vec::new();
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = conn.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n",
                );
                let chunk = vec![b'x'; 64 * 1024];
                let mut left = total;
                while left > 0 {
                    let n = left.min(chunk.len());
                    let mut piece = format!("{n:x}\r\n").into_bytes();
                    piece.extend_from_slice(&chunk[..n]);
                    piece.extend_from_slice(b"\r\n");
                    if conn.write_all(&piece).is_err() {
                        return;
                    }
                    left -= n;
                }
                let _ = conn.write_all(b"0\r\n\r\n");
            });
        }
    });
    addr
}

/// The peak resident set of process `pid`, in KiB.
fn peak_rss_kib(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_filter_rewrites_a_streamed_upstream_body() {
    let origin = Origin::start(echo).await;
    let big = big_origin(50 * 1024 * 1024);
    let short = Origin::start(|_req| async { text(200, "hello world") }).await;
    let mg = Moongate::start(&format!(
        "{}\n[upstream.big]\nservers = [{{ addr = \"{big}\" }}]\n\n[upstream.short]\nservers = [{{ addr = \"{}\" }}]\n",
        conf(
            origin.addr,
            r#"[[route]]
path = "/upper"
upstream = "short"
lua.body_filter_inline = '''
ngx.arg[1] = string.upper(ngx.arg[1])
if ngx.arg[2] then ngx.arg[1] = ngx.arg[1] .. "|" .. ngx.get_phase() end
'''

[[route]]
path = "/cut"
upstream = "big"
lua.body_filter_inline = '''
ngx.arg[1] = "cut"
ngx.arg[2] = true
'''

[[route]]
path = "/big"
upstream = "big"
lua.body_filter_inline = '''
local chunk = ngx.arg[1]
ngx.ctx.n = (ngx.ctx.n or 0) + #chunk
ngx.ctx.chunks = (ngx.ctx.chunks or 0) + 1
if ngx.arg[2] then
    ngx.arg[1] = chunk .. "|" .. ngx.ctx.n
end
'''
"#,
        ),
        short.addr
    ));
    let r = client().get(mg.url("/upper")).send().await.expect("GET");
    assert_eq!(r.status(), 200);
    assert!(r.headers().get("content-length").is_none());
    assert_eq!(r.text().await.expect("body"), "HELLO WORLD|body_filter");

    let r = client().get(mg.url("/cut")).send().await.expect("GET");
    assert_eq!(r.text().await.expect("body"), "cut");

    let before = peak_rss_kib(mg.pid());
    let mut r = client().get(mg.url("/big")).send().await.expect("GET");
    assert_eq!(r.status(), 200);
    let mut total = 0usize;
    let mut tail = Vec::new();
    while let Some(c) = r.chunk().await.expect("chunk") {
        total += c.len();
        tail.extend_from_slice(&c[c.len().saturating_sub(32)..]);
        if tail.len() > 64 {
            tail.drain(..tail.len() - 64);
        }
    }
    let size = 50 * 1024 * 1024;
    let suffix = format!("|{size}");
    assert_eq!(total, size + suffix.len());
    assert!(
        tail.ends_with(suffix.as_bytes()),
        "{}",
        String::from_utf8_lossy(&tail)
    );
    // Streamed chunk by chunk: the 50 MiB never sat in memory.
    let grew = peak_rss_kib(mg.pid()).saturating_sub(before);
    assert!(grew < 20 * 1024, "peak RSS grew by {grew} KiB");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_in_access_ends_the_request_and_print_goes_to_the_log() {
    let origin = Origin::named("origin").await;
    let mg = Moongate::start(&conf(
        origin.addr,
        r#"[[route]]
path = "/"
upstream = "app"
lua.access_inline = '''
if ngx.var.arg_say then
    ngx.say("from access ", 0.1 + 0.2, " ", 1e15)
end
print("printed ", ngx.var.uri)
'''
"#,
    ));
    let r = client().get(mg.url("/a?say=1")).send().await.expect("GET");
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.expect("body"), "from access 0.3 1e+15\n");
    assert_eq!(origin.hits(), 0);
    let r = client().get(mg.url("/b")).send().await.expect("GET");
    assert_eq!(r.text().await.expect("body"), "origin");
    assert_eq!(origin.hits(), 1);
    mg.wait_log("printed /b", Duration::from_secs(5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_outside_its_phases_is_refused_with_ngx_luas_plain_message() {
    let origin = Origin::named("origin").await;
    let mg = Moongate::start(&conf(
        origin.addr,
        r#"[[route]]
path = "/"
upstream = "app"
lua.log_inline = '''
local ok, err = pcall(ngx.say, "late")
ngx.shared.d:set("log_say", tostring(ok) .. "|" .. err)
'''
"#,
    ));
    let r = client().get(mg.url("/")).send().await.expect("GET");
    assert_eq!(r.text().await.expect("body"), "origin");
    // The message alone, as ngx_lua's C functions raise it: no
    // "runtime error:" and no traceback.
    assert_eq!(
        wait_dict(
            &mg,
            "log_say",
            "false|API disabled in the context of log_by_lua*"
        )
        .await,
        "false|API disabled in the context of log_by_lua*"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_filter_exit_replaces_the_response_and_more_variables_exist() {
    let origin = Origin::named("origin").await;
    let mg = Moongate::start(&conf(
        origin.addr,
        r#"[[route]]
path = "/deny"
upstream = "app"
lua.header_filter_inline = "return ngx.exit(ngx.HTTP_FORBIDDEN)"

[[route]]
path = "/redirect-late"
upstream = "app"
lua.header_filter_inline = '''
local ok, err = pcall(ngx.redirect, "/elsewhere")
ngx.header["X-Redirect"] = tostring(ok) .. "|" .. err
'''

[[route]]
path_exact = "/vars"
lua.content_inline = '''
local v = ngx.var
ngx.say(v.remote_port == tostring(tonumber(v.remote_port)), " ", v.https == "",
    " ", v.pid == tostring(ngx.worker.pid()), " ", v.msec:match("^%d+%.%d%d%d$") ~= nil,
    " ", v.time_local:match("^%d%d/%a%a%a/%d%d%d%d:%d%d:%d%d:%d%d [+-]%d%d%d%d$") ~= nil,
    " ", ngx.HTTP_GATEWAY_TIMEOUT, " ", ngx.HTTP_NOT_IMPLEMENTED)
'''
"#,
    ));
    let r = client().get(mg.url("/deny")).send().await.expect("GET");
    assert_eq!(r.status(), 403);
    assert_ne!(r.text().await.expect("body"), "origin");

    let r = client()
        .get(mg.url("/redirect-late"))
        .send()
        .await
        .expect("GET");
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["x-redirect"],
        "false|API disabled in the context of header_filter_by_lua*"
    );
    assert!(r.headers().get("location").is_none());

    let r = client().get(mg.url("/vars")).send().await.expect("GET");
    assert_eq!(
        r.text().await.expect("body"),
        "true true true true true 504 501\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lua_headers_follow_nginx_single_fields_lengths_and_validators() {
    let origin = Origin::named("unused").await;
    let mg = Moongate::start(&conf(
        origin.addr,
        r#"[[route]]
path_exact = "/short"
lua.content_inline = '''
ngx.header.content_length = 3
ngx.say("Hello")
'''

[[route]]
path_exact = "/type"
lua.content_inline = '''
ngx.header.content_type = { "a/a", "b/b" }
ngx.header["X-Many"] = { "1", "2" }
ngx.say("typed")
'''

[[route]]
path_exact = "/len"
lua.content_inline = 'ngx.say("hi")'
lua.header_filter_inline = 'ngx.header["X-Len"] = ngx.resp.get_headers()["Content-Length"]'

[[route]]
path_exact = "/dated"
lua.content_inline = '''
ngx.header["Last-Modified"] = ngx.http_time(1290079655)
ngx.header["ETag"] = '"v1"'
ngx.say("fresh body")
'''
"#,
    ));
    let r = client().get(mg.url("/short")).send().await.expect("GET");
    assert_eq!(r.headers()["content-length"], "3");
    assert_eq!(r.text().await.expect("body"), "Hel");

    // header_filter knows a Lua response's length.
    let r = client().get(mg.url("/len")).send().await.expect("GET");
    assert_eq!(r.headers()["x-len"], "3");
    assert_eq!(r.text().await.expect("body"), "hi\n");

    let r = client().get(mg.url("/type")).send().await.expect("GET");
    let types: Vec<_> = r.headers().get_all("content-type").iter().collect();
    assert_eq!(types, ["b/b"]);
    let many: Vec<_> = r.headers().get_all("x-many").iter().collect();
    assert_eq!(many, ["1", "2"]);

    let dated = |h: &'static str, v: &'static str| {
        let url = mg.url("/dated");
        async move {
            let r = client().get(url).header(h, v).send().await.expect("GET");
            (r.status().as_u16(), r.text().await.expect("body"))
        }
    };
    assert_eq!(
        dated("if-modified-since", "Thu, 18 Nov 2010 11:27:35 GMT").await,
        (304, String::new())
    );
    assert_eq!(dated("if-none-match", "\"v1\"").await, (304, String::new()));
    assert_eq!(
        dated("if-none-match", "\"v2\"").await,
        (200, "fresh body\n".to_string())
    );
    assert_eq!(
        dated("if-modified-since", "Thu, 18 Nov 2010 11:27:34 GMT").await,
        (200, "fresh body\n".to_string())
    );
    assert_eq!(dated("if-match", "\"v2\"").await, (412, String::new()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cleared_content_length_goes_out_chunked_and_a_bad_one_is_refused() {
    let origin = Origin::start(|_req| async { text(200, "from the origin") }).await;
    let mg = Moongate::start(&conf(
        origin.addr,
        r#"[[route]]
path_exact = "/cleared"
lua.content_inline = '''
ngx.header.content_length = 3
ngx.header.content_length = nil
ngx.say("Hello")
'''

[[route]]
path_exact = "/filtered"
lua.content_inline = 'ngx.header.content_length = 12 ngx.say("hello world")'
lua.header_filter_inline = 'ngx.header.content_length = nil'

[[route]]
path_exact = "/proxied"
upstream = "app"
lua.header_filter_inline = 'ngx.header["Content-Length"] = nil'

[[route]]
path_exact = "/bad"
lua.content_inline = 'ngx.header.content_length = "text/my-plain" ngx.say("Hi")'
"#,
    ));
    let get = |path: &str| {
        let req = format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
        let addr = mg.http[0];
        async move { raw_exchange(addr, req.as_bytes(), Duration::from_secs(5)).await }
    };
    for (path, body) in [
        ("/cleared", "Hello\n"),
        ("/filtered", "hello world\n"),
        ("/proxied", "from the origin"),
    ] {
        let answer = get(path).await;
        let (head, rest) = answer.split_once("\r\n\r\n").unwrap_or_default();
        assert_eq!(raw_status(&answer), 200, "{answer}");
        assert_eq!(raw_content_length(head), None, "{path}: {head}");
        assert!(
            head.to_ascii_lowercase()
                .contains("transfer-encoding: chunked"),
            "{path}: {head}"
        );
        let chunk = format!("{:x}\r\n{body}\r\n", body.len());
        assert!(
            rest.starts_with(&chunk) && rest.ends_with("0\r\n\r\n"),
            "{path}: {rest:?}"
        );
    }
    // A length that is not one: the call raises, the request gets a 500.
    let answer = get("/bad").await;
    assert_eq!(raw_status(&answer), 500, "{answer}");
    mg.wait_log("failed to set header", Duration::from_secs(5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipelined_request_runs_after_the_previous_ones_log_phase() {
    let origin = Origin::named("unused").await;
    let mg = Moongate::start(&conf(
        origin.addr,
        r#"[[route]]
path_exact = "/count"
lua.content_inline = 'ngx.print(ngx.shared.d:get("logged") or 0)'
lua.log_inline = 'ngx.shared.d:incr("logged", 1, 0)'
"#,
    ));
    // Three requests in one write: each sees the log phases of those
    // before it, as nginx finishes a request before reading the next.
    let get = "GET /count HTTP/1.1\r\nHost: t\r\n\r\n";
    let last = "GET /count HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";
    let answer = raw_exchange(
        mg.http[0],
        format!("{get}{get}{last}").as_bytes(),
        Duration::from_secs(5),
    )
    .await;
    let bodies: Vec<&str> = answer
        .split("HTTP/1.1 ")
        .skip(1)
        .map(|r| r.split_once("\r\n\r\n").map_or("", |(_, b)| b))
        .collect();
    assert_eq!(bodies, ["0", "1", "2"], "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_100_continue_follows_a_response_that_has_begun() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let origin = Origin::named("unused").await;
    let mg = Moongate::start(&conf(
        origin.addr,
        r#"[[route]]
path_exact = "/late-read"
lua.content_inline = '''
ngx.say("head out")
ngx.flush(true)
ngx.req.read_body()
ngx.say("body: ", ngx.req.get_body_data())
'''
"#,
    ));
    let mut s = tokio::net::TcpStream::connect(mg.http[0])
        .await
        .expect("connect");
    s.write_all(
        b"POST /late-read HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\
          Expect: 100-continue\r\nContent-Length: 5\r\n\r\n",
    )
    .await
    .expect("write head");
    // The response has begun before the body is read: the client gives up
    // waiting for 100 and sends the body, as curl does after a second.
    let mut first = vec![0u8; 512];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut first))
        .await
        .expect("response begins")
        .expect("read");
    let begun = String::from_utf8_lossy(&first[..n]).into_owned();
    assert!(begun.starts_with("HTTP/1.1 200 "), "{begun}");
    s.write_all(b"hello").await.expect("write body");
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut rest)).await;
    let answer = begun + &String::from_utf8_lossy(&rest);
    assert!(!answer.contains("100 Continue"), "{answer}");
    assert!(answer.contains("body: hello"), "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_names_go_out_as_the_handler_spelled_them() {
    let origin = Origin::named("origin").await;
    let mg = Moongate::start(&conf(
        origin.addr,
        r#"[[route]]
path_exact = "/cased"
lua.content_inline = '''
ngx.header["X-Foo"] = { "a", "bc" }
ngx.header["cache-Control"] = "private"
ngx.header.x_plain = "1"
ngx.say("ok")
'''

[[route]]
path = "/proxied"
upstream = "app"
lua.access_inline = 'ngx.header["X-RateLimit-Remaining"] = "9"'
"#,
    ));
    let get = |path: &str| format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let raw =
        crate::support::raw_exchange(mg.http[0], get("/cased").as_bytes(), Duration::from_secs(5))
            .await;
    assert!(raw.contains("\r\nX-Foo: a\r\nX-Foo: bc\r\n"), "{raw}");
    assert!(raw.contains("\r\ncache-Control: private\r\n"), "{raw}");
    // Names given in lowercase (or with `_`) stay lowercase.
    assert!(raw.contains("\r\nx-plain: 1\r\n"), "{raw}");
    let raw = crate::support::raw_exchange(
        mg.http[0],
        get("/proxied").as_bytes(),
        Duration::from_secs(5),
    )
    .await;
    assert!(raw.contains("\r\nX-RateLimit-Remaining: 9\r\n"), "{raw}");
    assert!(raw.ends_with("origin"), "{raw}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn light_threads_run_at_once_and_the_phase_waits_for_them() {
    let origin = Origin::named("origin").await;
    let mg = Moongate::start(&conf(
        origin.addr,
        r#"[[route]]
path_exact = "/threads"
lua.content_inline = '''
ngx.say("before")
ngx.thread.spawn(function()
    ngx.say("in thread")
    ngx.sleep(0.1)
    ngx.say("thread done")
end)
ngx.say("after")
'''

[[route]]
path = "/guarded"
upstream = "app"
lua.access_inline = '''
ngx.thread.spawn(function()
    ngx.sleep(0.05)
    if ngx.var.arg_deny then ngx.exit(403) end
end)
'''
"#,
    ));
    // The thread runs until it waits, then the entry thread goes on; the
    // response ends only when the thread has.
    let r = client().get(mg.url("/threads")).send().await.expect("GET");
    assert_eq!(
        r.text().await.expect("body"),
        "before\nin thread\nafter\nthread done\n"
    );
    // The access phase waits for its thread, whose ngx.exit ends the request.
    let r = client()
        .get(mg.url("/guarded?deny=1"))
        .send()
        .await
        .expect("GET");
    assert_eq!(r.status(), 403);
    let r = client().get(mg.url("/guarded")).send().await.expect("GET");
    assert_eq!(r.text().await.expect("body"), "origin");
    assert_eq!(origin.hits(), 1);
}

//! Subrequests (`ngx.location.capture`, `capture_multi`) and internal
//! redirects (`ngx.exec`) through real requests: captures of upstream and
//! Lua routes with their options, concurrency, a body cut short, the depth
//! and count limits, and `ngx.exec` to Lua and upstream routes, to a named
//! location and in a loop.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::Response;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::{Moongate, Origin, Reply, client, echo};

/// The routes the tests capture and redirect to: `/up` and `/slow` on
/// upstream origins (the slow one waits `?ms=` before answering), `/cut`
/// on an origin that closes in the middle of its body, and Lua routes.
fn conf(echo: SocketAddr, slow: SocketAddr, cut: SocketAddr) -> String {
    format!(
        r#"[server]
listen = ["127.0.0.1:0"]
workers = 1
access_log = "off"

[admin]
listen = "127.0.0.1:0"

[lua]
time_budget = "200ms"

[upstream.echo]
servers = [{{ addr = "{echo}" }}]

[upstream.slow]
servers = [{{ addr = "{slow}" }}]

[upstream.cut]
servers = [{{ addr = "{cut}" }}]

[[route]]
path = "/up"
upstream = "echo"

[[route]]
path = "/slow"
upstream = "slow"

[[route]]
path = "/cut"
upstream = "cut"

[[route]]
path_exact = "/echo"
lua.content_inline = """
ngx.req.read_body()
ngx.header["X-Multi"] = {{"a", "b"}}
ngx.status = 201
ngx.say(ngx.req.get_method(), " ", ngx.var.args, " ", ngx.req.get_body_data(),
        " dog=", tostring(ngx.var.dog), " foo=", tostring(ngx.ctx.foo),
        " parent=", tostring(ngx.req.get_headers()["x-parent"]))
ngx.ctx.from_sub = "set by sub"
ngx.var.cat = "from sub"
"""
lua.header_filter_inline = "ngx.header.uid = 'sub'"

[[route]]
path_exact = "/capture/upstream"
lua.content_inline = """
ngx.req.read_body()
local res = ngx.location.capture("/up/thing?x=1", {{ args = {{ y = 2 }} }})
ngx.say(res.status, " ", res.header["Content-Type"], " ", tostring(res.truncated))
ngx.print(res.body)
"""

[[route]]
path_exact = "/capture/post"
lua.content_inline = """
local ctx = {{}}
local res = ngx.location.capture("/echo?a=1", {{
    method = ngx.HTTP_POST, body = "hello", args = {{ b = "x y" }},
    ctx = ctx, vars = {{ dog = "woof" }},
}})
ngx.say(res.status, "|", res.body, "|", ctx.from_sub, "|",
        table.concat(res.header["X-Multi"], ","), "|", tostring(ngx.ctx.from_sub))
-- The subrequest's header filter ran; any spelling finds a header.
ngx.say(res.header.uid, " ", res.header["content-type"], " ", #res.header.x_multi)
"""

[[route]]
path_exact = "/capture/shared"
lua.content_inline = """
ngx.ctx.foo = "bar"
ngx.var.dog = "hello"
local plain = ngx.location.capture("/echo")
local copied = ngx.location.capture("/echo", {{ copy_all_vars = true }})
ngx.say("cat after copy: ", tostring(ngx.var.cat))
local shared = ngx.location.capture("/echo", {{ share_all_vars = true, ctx = ngx.ctx }})
ngx.print(plain.body, copied.body, shared.body)
ngx.say("cat after share: ", tostring(ngx.var.cat), ", ctx: ", ngx.ctx.from_sub)
"""

[[route]]
path_exact = "/capture/errors"
lua.content_inline = """
local function try(...)
    local ok, e = pcall(ngx.location.capture, ...)
    ngx.say(ok and "ok" or tostring(e):match("^[^\\n]*"))
end
try("/echo", {{ method = "POST" }})
try("/echo", {{ args = true }})
try("/echo", {{ ctx = 1 }})
try("/echo", {{ body = {{}} }})
try("/a/../b")
try()
"""

[[route]]
path_exact = "/guarded"
lua.rewrite_inline = "ngx.ctx.rewrote = true"
lua.access_inline = "ngx.exit(403)"
lua.content_inline = "ngx.say('inside, rewrite ran: ', tostring(ngx.ctx.rewrote))"

[[route]]
path_exact = "/capture/guarded"
lua.content_inline = """
local res = ngx.location.capture("/guarded")
ngx.print(res.status, " ", res.body)
"""

[[route]]
path_exact = "/capture/missing"
lua.content_inline = """
local res = ngx.location.capture("/nowhere")
ngx.say(res.status, " [", res.body, "]")
-- Not a path: no route matches it (ngx_lua: no location does).
res = ngx.location.capture("*(#*")
ngx.say(res.status, " [", res.body, "]")
"""

[[route]]
path_exact = "/nap"
lua.content_inline = """
ngx.sleep(tonumber(ngx.var.arg_s))
ngx.print("napped ", ngx.var.arg_s)
"""

[[route]]
path_exact = "/multi"
lua.content_inline = """
local a, b, c = ngx.location.capture_multi({{
    {{ "/slow/a", {{ args = "ms=300" }} }},
    {{ "/nap?s=0.4" }},
    {{ "/slow/c?ms=500" }},
}})
ngx.say(a.status, " ", a.body, "; ", b.status, " ", b.body, "; ", c.status, " ", c.body)
"""

[[route]]
path_exact = "/capture/cut"
lua.content_inline = """
local res = ngx.location.capture("/cut")
ngx.say(res.status, " ", tostring(res.truncated), " ", res.body)
"""

[[route]]
path_exact = "/loop"
lua.content_inline = """
local res = ngx.location.capture("/loop")
ngx.print(res.status == 200 and res.body or "deepest", "+")
"""

[[route]]
path_exact = "/tiny"
lua.content_inline = "ngx.print('t')"

[[route]]
path_exact = "/many"
lua.content_inline = """
for i = 1, 5000 do
    local ok, e = pcall(ngx.location.capture, "/tiny")
    if not ok then
        ngx.say(i, " ", tostring(e):match("^[^\\n]*"))
        return
    end
end
ngx.say("no limit")
"""

[[route]]
path_exact = "/in-filter"
lua.content_inline = "ngx.print('x')"
lua.header_filter_inline = """
local ok, e = pcall(ngx.location.capture, "/tiny")
ngx.header["X-Err"] = tostring(e):match("^[^\\n]*")
"""

[[route]]
path_exact = "/target"
lua.content_inline = """
ngx.say("target ", ngx.var.uri, " ", ngx.var.args, " ctx=", tostring(ngx.ctx.x),
        " var=", tostring(ngx.var.kept))
"""

[[route]]
path_exact = "/go"
upstream = "echo"
lua.rewrite_inline = """
ngx.ctx.x = 1
ngx.var.kept = "k"
return ngx.exec("/target?a=1", {{ b = 2 }})
"""
lua.access_inline = "ngx.header['X-Not-Reached'] = '1'"

[[route]]
path_exact = "/go-up"
upstream = "echo"
lua.access_inline = """
ngx.req.read_body()
return ngx.exec("/up/after-exec", "q=1")
"""

[[route]]
path_exact = "/late-exec"
lua.content_inline = """
ngx.say("out")
local ok, e = pcall(ngx.exec, "/tiny")
ngx.say(tostring(e):match("^[^\\n]*"))
"""

[[route]]
path_exact = "/capture/exec"
lua.content_inline = """
local res = ngx.location.capture("/go")
ngx.print(res.status, " ", res.body)
"""

[limit.once]
rate = "1/m"
burst = 1

[[route]]
path_exact = "/limited"
limit = "once"
lua.content_inline = "ngx.say('limited route')"

[[route]]
path_exact = "/go-limited"
upstream = "echo"
lua.rewrite_inline = "return ngx.exec('/limited')"

[[route]]
path_exact = "/go-named"
lua.content_inline = "ngx.exec('@foo')"

[[route]]
path_exact = "/ping"
lua.content_inline = "ngx.exec('/pong')"

[[route]]
path_exact = "/pong"
lua.content_inline = "ngx.exec('/ping')"
"#
    )
}

struct Fixture {
    mg: Moongate,
    _origins: Vec<Origin>,
    _cut: tokio::task::JoinHandle<()>,
}

async fn start() -> Fixture {
    let echo_origin = Origin::start(echo).await;
    let slow = Origin::start(|req: hyper::Request<hyper::body::Incoming>| async move {
        let ms: u64 = req
            .uri()
            .query()
            .and_then(|q| q.strip_prefix("ms="))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        tokio::time::sleep(Duration::from_millis(ms)).await;
        let body = format!("slow {ms}");
        let reply: Reply = Response::builder()
            .status(200)
            .body(Full::new(Bytes::from(body)))
            .expect("reply");
        reply
    })
    .await;
    let (cut_addr, cut) = cutting_origin().await;
    let mg = Moongate::start(&conf(echo_origin.addr, slow.addr, cut_addr));
    Fixture {
        mg,
        _origins: vec![echo_origin, slow],
        _cut: cut,
    }
}

/// An origin that promises 100 bytes, sends 5 and closes.
async fn cutting_origin() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let task = tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let mut seen = Vec::new();
                while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => seen.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = stream
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nhello")
                    .await;
                let _ = stream.flush().await;
            });
        }
    });
    (addr, task)
}

async fn get(url: &str) -> (u16, reqwest::header::HeaderMap, String) {
    let r = client()
        .get(url)
        .header("X-Parent", "p")
        .send()
        .await
        .expect("GET");
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    (status, headers, r.text().await.expect("body"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capture_of_an_upstream_route_inherits_headers_and_joins_args() {
    let f = start().await;
    let (status, _, body) = get(&f.mg.url("/capture/upstream")).await;
    assert_eq!(status, 200, "{body}");
    let (first, json) = body.split_once('\n').expect("two parts");
    assert_eq!(first, "200 application/json false");
    let json: serde_json::Value = serde_json::from_str(json).expect("echo JSON");
    assert_eq!(json["method"], "GET");
    assert_eq!(json["uri"], "/up/thing?x=1&y=2");
    // The parent's request headers go to the subrequest, as in nginx.
    assert_eq!(json["headers"]["x-parent"][0], "p");
    assert_eq!(json["body_len"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capture_of_a_lua_route_with_method_body_args_ctx_and_vars() {
    let f = start().await;
    let (status, _, body) = get(&f.mg.url("/capture/post")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        "201|POST a=1&b=x%20y hello dog=woof foo=nil parent=p\n|set by sub|a,b|nil\n\
         sub text/plain; charset=utf-8 2\n"
    );
    // Subrequests skip the access phase (nginx's do), not rewrite.
    let (status, _, _) = get(&f.mg.url("/guarded")).await;
    assert_eq!(status, 403);
    let (_, _, body) = get(&f.mg.url("/capture/guarded")).await;
    assert_eq!(body, "200 inside, rewrite ran: true\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn variables_are_copied_or_shared_and_ctx_can_be_the_parents() {
    let f = start().await;
    let (status, _, body) = get(&f.mg.url("/capture/shared")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        "cat after copy: nil\n\
         GET nil nil dog=nil foo=nil parent=p\n\
         GET nil nil dog=hello foo=nil parent=p\n\
         GET nil nil dog=hello foo=bar parent=p\n\
         cat after share: from sub, ctx: set by sub\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_capture_arguments_raise_ngx_luas_errors() {
    let f = start().await;
    let (status, _, body) = get(&f.mg.url("/capture/errors")).await;
    assert_eq!(status, 200, "{body}");
    let lines: Vec<&str> = body.lines().collect();
    let expect = [
        "Bad http request method",
        "Bad args option value",
        "Bad ctx option value type number, expected a Lua table",
        "Bad http request body",
        "unsafe uri in argument #1: /a/../b",
        "expecting one or two arguments",
    ];
    assert_eq!(lines.len(), expect.len(), "{body}");
    for (line, want) in lines.iter().zip(expect) {
        assert!(line.contains(want), "{line:?} should say {want:?}");
    }
    // moongate's own error answers have no body in a subrequest, as
    // nginx's error pages.
    let (_, _, body) = get(&f.mg.url("/capture/missing")).await;
    assert_eq!(body, "404 []\n404 []\n");
    // Not in header_filter (ngx_lua: rewrite, access and content only).
    let (_, headers, _) = get(&f.mg.url("/in-filter")).await;
    let err = headers["x-err"].to_str().expect("text");
    assert!(
        err.ends_with("API disabled in the context of header_filter_by_lua*"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capture_multi_runs_its_subrequests_concurrently() {
    let f = start().await;
    let started = Instant::now();
    let (status, _, body) = get(&f.mg.url("/multi")).await;
    let took = started.elapsed();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, "200 slow 300; 200 napped 0.4; 200 slow 500\n");
    // One after the other they would take 1.2 s; together, the slowest.
    assert!(took >= Duration::from_millis(500), "{took:?}");
    assert!(took < Duration::from_millis(1000), "{took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_cut_short_upstream_is_flagged_truncated() {
    let f = start().await;
    let (status, _, body) = get(&f.mg.url("/capture/cut")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, "200 true hello\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subrequests_stop_at_nginxs_depth_and_at_a_count_per_request() {
    let f = start().await;
    let (status, _, body) = get(&f.mg.url("/loop")).await;
    assert_eq!(status, 200, "{body}");
    // 50 levels below the main request answer; the 51st is refused.
    assert_eq!(body, format!("deepest{}", "+".repeat(50)));
    f.mg.wait_log(
        "subrequests cycle while processing \"/loop\"",
        Duration::from_secs(5),
    );
    let (status, _, body) = get(&f.mg.url("/many")).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.starts_with("4097 "), "{body}");
    assert!(body.ends_with("failed to issue subrequest: -1\n"), "{body}");
    // The server goes on serving.
    let (status, _, body) = get(&f.mg.url("/tiny")).await;
    assert_eq!((status, body.as_str()), (200, "t"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_routes_the_request_again_with_new_uri_and_args() {
    let f = start().await;
    let (status, headers, body) = get(&f.mg.url("/go")).await;
    assert_eq!(status, 200, "{body}");
    // ngx.ctx is gone after an internal redirect (as in nginx), variables
    // stay; the access handler of /go never ran.
    assert_eq!(body, "target /target a=1&b=2 ctx=nil var=k\n");
    assert!(headers.get("x-not-reached").is_none());

    // To an upstream route, with the body the client sent.
    let r = client()
        .post(f.mg.url("/go-up"))
        .body("abc")
        .send()
        .await
        .expect("POST");
    assert_eq!(r.status().as_u16(), 200);
    let text = r.text().await.expect("body");
    let json: serde_json::Value = serde_json::from_str(&text).expect("echo JSON");
    assert_eq!(json["uri"], "/up/after-exec?q=1");
    assert_eq!(json["method"], "POST");
    assert_eq!(json["body_len"], 3);

    // A subrequest may redirect too.
    let (_, _, body) = get(&f.mg.url("/capture/exec")).await;
    assert_eq!(body, "200 target /target a=1&b=2 ctx=nil var=k\n");

    // A route without limits that redirects to one with them: its limits
    // apply (nginx's limit_req runs in the location the request ends in,
    // once per main request).
    assert_eq!(get(&f.mg.url("/go-limited")).await.0, 200);
    assert_eq!(get(&f.mg.url("/go-limited")).await.0, 429);

    // Not once the headers are out.
    let (status, _, body) = get(&f.mg.url("/late-exec")).await;
    assert_eq!(status, 200);
    assert!(
        body.starts_with("out\n")
            && body.ends_with("attempt to call ngx.exec after sending out response headers\n"),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_to_a_named_location_or_in_a_loop_fails_with_500() {
    let f = start().await;
    let (status, _, _) = get(&f.mg.url("/go-named")).await;
    assert_eq!(status, 500);
    f.mg.wait_log("moongate has no named locations", Duration::from_secs(5));
    let (status, _, _) = get(&f.mg.url("/ping")).await;
    assert_eq!(status, 500);
    f.mg.wait_log(
        "rewrite or internal redirection cycle",
        Duration::from_secs(5),
    );
    let (status, _, _) = get(&f.mg.url("/tiny")).await;
    assert_eq!(status, 200);
}

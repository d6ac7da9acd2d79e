//! `ngx.req.socket()` through real requests: a request body read in
//! pieces (sizes, lines, `receiveany`, `"*a"`), a multipart body split on
//! its boundary the way lua-resty-upload does, a body that arrives in two
//! parts, read timeouts, a light thread reading while the entry thread
//! has returned, what is left for `read_body` and the upstream, `Expect:
//! 100-continue`, HTTP/2, and the errors ngx_lua gives.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Response;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::{Moongate, Origin, client, raw_exchange};

/// One worker, a 1 s time budget, an upstream `back` at `origin`, and
/// `routes`.
fn conf(origin: SocketAddr, routes: &str) -> String {
    format!(
        r#"[server]
listen = ["127.0.0.1:0"]
workers = 1
access_log = "off"

[lua]
time_budget = "1s"

[upstream.back]
servers = [{{ addr = "{origin}" }}]

{routes}"#
    )
}

/// moongate with `routes` (and an upstream nothing uses).
async fn start(routes: &str) -> (Origin, Moongate) {
    let origin = Origin::named("unused").await;
    let mg = Moongate::start(&conf(origin.addr, routes));
    (origin, mg)
}

/// An origin answering with the body it got, and its Content-Length in
/// `x-got-length`.
async fn body_origin() -> Origin {
    Origin::start(|req: hyper::Request<hyper::body::Incoming>| async move {
        let length = req
            .headers()
            .get("content-length")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("none")
            .to_string();
        let body = req
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        Response::builder()
            .status(200)
            .header("x-got-length", length)
            .body(Full::new(body))
            .expect("reply")
    })
    .await
}

/// Sends `head`, then each of `parts` after `pause`; reads the answer
/// until the server closes or 10 s pass.
async fn slow_exchange(addr: SocketAddr, head: &str, parts: &[&str], pause: Duration) -> String {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(head.as_bytes()).await.expect("write head");
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            tokio::time::sleep(pause).await;
        }
        s.write_all(part.as_bytes()).await.expect("write part");
    }
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// POSTs `body` to `url` over HTTP/1.1.
async fn post(url: String, body: impl Into<reqwest::Body>) -> reqwest::Response {
    client().post(url).body(body).send().await.expect("post")
}

/// The body of a raw HTTP/1.0-style answer (after the head).
fn raw_body(answer: &str) -> &str {
    answer.split_once("\r\n\r\n").map_or("", |(_, b)| b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_is_read_in_pieces() {
    let (_origin, mg) = start(
        r#"[[route]]
path_exact = "/pieces"
lua.content_inline = '''
local sock, err = ngx.req.socket()
if not sock then
    ngx.say("no socket: ", err)
    return
end
local function show(label, data, err, partial)
    ngx.say(label, ": ", tostring(data), " ", tostring(err), " [", tostring(partial), "]")
end
show("size", sock:receive(5))
show("line", sock:receive("*l"))
show("default", sock:receive())
show("any", sock:receiveany(3))
show("all", sock:receive("*a"))
show("after", sock:receive(1))
show("line after", sock:receive())
'''
"#,
    )
    .await;
    let resp = post(
        mg.url("/pieces"),
        "hello world\nsecond line\r\nxyz-the-rest",
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.text().await.expect("body"),
        "size: hello nil [nil]\n\
         line:  world nil [nil]\n\
         default: second line nil [nil]\n\
         any: xyz nil [nil]\n\
         all: -the-rest nil [nil]\n\
         after: nil closed []\n\
         line after: nil closed []\n"
    );

    // Over HTTP/2 (cleartext, prior knowledge) too.
    let h2 = reqwest::Client::builder()
        .no_proxy()
        .http2_prior_knowledge()
        .build()
        .expect("h2 client");
    let resp = h2
        .post(mg.url("/pieces"))
        .body("hello world\nsecond line\r\nxyz-the-rest")
        .send()
        .await
        .expect("h2 request");
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    let text = resp.text().await.expect("body");
    assert!(text.starts_with("size: hello nil [nil]\n"), "{text}");
    assert!(text.contains("all: -the-rest nil [nil]\n"), "{text}");
}

/// lua-resty-upload's way through a multipart body: `receiveuntil("\r\n--"
/// .. boundary)` and `receiveuntil("\r\n")` iterators called with a size.
const MULTIPART_READER: &str = r#"
local sock, err = ngx.req.socket()
if not sock then
    ngx.say("no socket: ", err)
    return
end
sock:settimeout(5000)
local boundary = ngx.var.http_content_type:match("boundary=(.+)$")
local read_to_boundary = sock:receiveuntil("\r\n--" .. boundary)
local read_line = sock:receiveuntil("\r\n")
local chunk = tonumber(ngx.var.arg_chunk) or 7

-- The preamble, up to the first boundary (which starts the body, so the
-- first boundary has no CRLF before it: read the first line instead).
local first = sock:receive("*l")
if first ~= "--" .. boundary then
    ngx.say("bad first line: ", first)
    return
end
while true do
    -- part headers
    local headers = {}
    while true do
        local line, err = read_line(chunk)
        if err then ngx.say("header error: ", err) return end
        local whole = line or ""
        while line do
            line, err = read_line(chunk)
            if err then ngx.say("header error: ", err) return end
            whole = whole .. (line or "")
        end
        if whole == "" then break end
        headers[#headers + 1] = whole
    end
    -- part body, in pieces of `chunk` bytes at most
    local body, pieces = {}, 0
    while true do
        local data, err = read_to_boundary(chunk)
        if err then ngx.say("body error: ", err) return end
        if not data then break end
        if #data > chunk then ngx.say("piece too big: ", #data) return end
        pieces = pieces + 1
        body[#body + 1] = data
    end
    ngx.say("part: ", table.concat(headers, "|"), " => [", table.concat(body), "] in ", pieces > 1 and "pieces" or "one")
    -- what follows the boundary: "--" ends the body, "" a new part
    local rest = ""
    while true do
        local line, err = read_line(chunk)
        if err then ngx.say("boundary line error: ", err) return end
        if not line then break end
        rest = rest .. line
    end
    if rest == "--" then
        ngx.say("end; epilogue: [", tostring(sock:receive("*a")), "]")
        return
    end
end
"#;

fn multipart_body(boundary: &str) -> String {
    format!(
        "--{b}\r\n\
         Content-Disposition: form-data; name=\"field\"\r\n\
         \r\n\
         value one\r\n\
         --{b}\r\n\
         Content-Disposition: form-data; name=\"file\"; filename=\"a.txt\"\r\n\
         Content-Type: text/plain\r\n\
         \r\n\
         line 1\r\nline 2 with -- dashes and \r\n-- almost a boundary\r\n\
         --{b}--\r\n\
         epilogue",
        b = boundary
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_multipart_body_is_split_on_its_boundary() {
    let routes = format!(
        "[[route]]\npath_exact = \"/upload\"\nlua.content_inline = '''{MULTIPART_READER}'''\n"
    );
    let (_origin, mg) = start(&routes).await;
    let boundary = "----moongate-b0undary";
    let want = "part: Content-Disposition: form-data; name=\"field\" => [value one] in pieces\n\
                part: Content-Disposition: form-data; name=\"file\"; filename=\"a.txt\"|Content-Type: text/plain \
                => [line 1\r\nline 2 with -- dashes and \r\n-- almost a boundary] in pieces\n\
                end; epilogue: [epilogue]\n";
    for chunk in [3, 7, 4096] {
        let resp = client()
            .post(mg.url(&format!("/upload?chunk={chunk}")))
            .header(
                "content-type",
                format!("multipart/form-data; boundary={boundary}"),
            )
            .body(multipart_body(boundary))
            .send()
            .await
            .expect("request");
        let text = resp.text().await.expect("body");
        let want = if chunk > 100 {
            want.replace("in pieces", "in one")
        } else {
            want.to_string()
        };
        assert_eq!(text, want, "chunk {chunk}");
    }

    // The same body arriving in two parts, cut inside the boundary.
    let body = multipart_body(boundary);
    let cut = body.rfind(boundary).expect("boundary") + 3;
    let head = format!(
        "POST /upload?chunk=5 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\
         Content-Type: multipart/form-data; boundary={boundary}\r\n\
         Content-Length: {}\r\n\r\n",
        body.len()
    );
    let answer = slow_exchange(
        mg.http[0],
        &head,
        &[&body[..cut], &body[cut..]],
        Duration::from_millis(300),
    )
    .await;
    assert!(answer.contains("end; epilogue: [epilogue]"), "{answer}");
    assert!(answer.contains("=> [value one]"), "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_body_is_waited_for_outside_the_time_budget() {
    let origin = Origin::named("unused").await;
    let mut text = conf(
        origin.addr,
        r#"[[route]]
path_exact = "/slow"
lua.content_inline = '''
local sock = assert(ngx.req.socket())
local start = ngx.now()
local a, err = sock:receive(8)
ngx.say("got ", tostring(a), " ", tostring(err))
local b = sock:receiveuntil("!")()
ngx.say("until ", tostring(b))
ngx.say("rest ", tostring(sock:receive("*a")))
ngx.update_time()
ngx.say("waited ", ngx.now() - start >= 0.5)
'''
"#,
    );
    // A budget far below the pauses: waiting for the client is not counted.
    text = text.replace("time_budget = \"1s\"", "time_budget = \"100ms\"");
    let mg = Moongate::start(&text);
    let head = "POST /slow HTTP/1.1\r\nHost: a\r\nConnection: close\r\nContent-Length: 20\r\n\r\n";
    let answer = slow_exchange(
        mg.http[0],
        head,
        &["abcd", "efgh-wx", "yz!tail!!"],
        Duration::from_millis(300),
    )
    .await;
    let body = raw_body(&answer);
    assert!(body.contains("got abcdefgh nil\n"), "{answer}");
    assert!(body.contains("until -wxyz\n"), "{answer}");
    assert!(body.contains("rest tail!!\n"), "{answer}");
    assert!(body.contains("waited true\n"), "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_client_times_out_and_the_socket_reads_on() {
    let (_origin, mg) = start(
        r#"[[route]]
path_exact = "/timeout"
lua.content_inline = '''
local sock = assert(ngx.req.socket())
if ngx.var.arg_three then
    sock:settimeouts(5000, 5000, 150)
else
    sock:settimeout(150)
end
local data, err, partial = sock:receive(10)
ngx.say("1: ", tostring(data), " ", err, " [", partial, "]")
data, err, partial = sock:receive(10)
ngx.say("2: ", tostring(data), " ", err, " [", partial, "]")
ngx.flush(true)
sock:settimeout(3000)
-- the client sends the rest now
data, err, partial = sock:receive(5)
ngx.say("3: ", tostring(data), " ", tostring(err))
'''
"#,
    )
    .await;
    for query in ["", "?three=1"] {
        let started = Instant::now();
        let mut s = TcpStream::connect(mg.http[0]).await.expect("connect");
        let head = format!(
            "POST /timeout{query} HTTP/1.1\r\nHost: a\r\nConnection: close\r\nContent-Length: 10\r\n\r\nhello"
        );
        s.write_all(head.as_bytes()).await.expect("write");
        // Wait for the first two lines (both timeouts), then send the rest.
        let mut seen = Vec::new();
        let mut buf = [0u8; 1024];
        while !String::from_utf8_lossy(&seen).contains("2: ") {
            let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
                .await
                .expect("timeouts answered")
                .expect("read");
            assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&seen));
            seen.extend_from_slice(&buf[..n]);
        }
        s.write_all(b"world").await.expect("write rest");
        let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut seen)).await;
        let answer = String::from_utf8_lossy(&seen);
        assert!(answer.contains("1: nil timeout [hello]"), "{answer}");
        assert!(answer.contains("2: nil timeout []"), "{answer}");
        assert!(answer.contains("3: world nil"), "{answer}");
        assert!(started.elapsed() < Duration::from_secs(4));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_light_thread_reads_the_body_after_the_entry_thread_returned() {
    let (_origin, mg) = start(
        r#"[[route]]
path_exact = "/thread"
lua.content_inline = '''
local sock = assert(ngx.req.socket())
ngx.thread.spawn(function()
    local data, err = sock:receive(10)
    ngx.say("thread: ", tostring(data), " ", tostring(err))
end)
-- the thread waits for the body: the socket is busy
local data, err = sock:receive(1)
ngx.say("entry: ", tostring(data), " ", tostring(err))
ngx.say("entry returns")
'''
"#,
    )
    .await;
    let head =
        "POST /thread HTTP/1.1\r\nHost: a\r\nConnection: close\r\nContent-Length: 10\r\n\r\n";
    let answer = slow_exchange(
        mg.http[0],
        head,
        &["01234", "56789"],
        Duration::from_millis(300),
    )
    .await;
    let body = raw_body(&answer);
    assert!(body.contains("entry: nil socket busy reading"), "{answer}");
    assert!(body.contains("thread: 0123456789 nil"), "{answer}");
    let entry = body.find("entry returns").expect("entry line");
    let thread = body.find("thread:").expect("thread line");
    assert!(entry < thread, "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_the_script_did_not_read_goes_on() {
    let origin = body_origin().await;
    let mg = Moongate::start(&conf(
        origin.addr,
        r#"[[route]]
path_exact = "/proxy"
upstream = "back"
lua.access_inline = '''
local sock = assert(ngx.req.socket())
local first = sock:receive("*l")
ngx.req.set_header("X-First", first)
'''

[[route]]
path_exact = "/read-body"
lua.content_inline = '''
local sock = assert(ngx.req.socket())
ngx.say("socket: ", sock:receive(4))
ngx.req.read_body()
ngx.say("read_body: ", ngx.req.get_body_data())
local again, err = ngx.req.socket()
ngx.say("again: ", tostring(again), " ", err)
'''
"#,
    ));
    let resp = post(mg.url("/proxy"), "first line\nand the rest of it").await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers().get("x-got-length").map(|v| v.as_bytes()),
        Some(&b"18"[..])
    );
    assert_eq!(resp.text().await.expect("body"), "and the rest of it");

    let resp = post(mg.url("/read-body"), Bytes::from_static(b"headtail")).await;
    assert_eq!(
        resp.text().await.expect("body"),
        "socket: head\nread_body: tail\nagain: nil request body already exists\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_expecting_100_continue_gets_it_when_the_socket_is_taken() {
    let (_origin, mg) = start(
        r#"[[route]]
path_exact = "/expect"
lua.content_inline = '''
local sock = assert(ngx.req.socket())
ngx.say("got: ", sock:receive(5))
'''
"#,
    )
    .await;
    let mut s = TcpStream::connect(mg.http[0]).await.expect("connect");
    s.write_all(
        b"POST /expect HTTP/1.1\r\nHost: a\r\nConnection: close\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n",
    )
    .await
    .expect("write head");
    let mut buf = vec![0u8; 256];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .expect("100 Continue before the body")
        .expect("read");
    assert!(
        String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 100 Continue\r\n\r\n"),
        "{}",
        String::from_utf8_lossy(&buf[..n])
    );
    s.write_all(b"hello").await.expect("write body");
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut rest)).await;
    assert!(String::from_utf8_lossy(&rest).contains("got: hello"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_errors_ngx_lua_gives() {
    let (_origin, mg) = start(
        r#"[[route]]
path_exact = "/errors"
lua.content_inline = '''
local what = ngx.var.arg_what
if what == "read" then ngx.req.read_body() end
if what == "raw" then
    local sock, err = ngx.req.socket(true)
    ngx.say("raw: ", tostring(sock), " ", err)
    return
end
local sock, err = ngx.req.socket()
ngx.say("socket: ", type(sock), " ", tostring(err))
if sock then
    local n = 0
    for _ in pairs(getmetatable(sock)) do n = n + 1 end
    ngx.say("methods: ", n, " ", type(sock.send), " ", type(sock.receiveuntil))
    local again, err2 = ngx.req.socket()
    ngx.say("again: ", tostring(again), " ", err2)
    local ok, e = pcall(sock.receive, sock, "*x")
    ngx.say("bad pattern: ", tostring(e):find("bad pattern argument", 1, true) ~= nil)
    local it, e2 = sock:receiveuntil("")
    ngx.say("empty: ", tostring(it), " ", e2)
end
'''

[[route]]
path_exact = "/phase"
lua.content_inline = '''
ngx.say("ok")
'''
lua.header_filter_inline = '''
local ok, e = pcall(ngx.req.socket)
ngx.header["X-Phase-Error"] = tostring(tostring(e):find("API disabled in the context of header_filter_by_lua*", 1, true) ~= nil)
'''
"#,
    )
    .await;
    let http = client();
    let get = |q: &'static str| {
        let url = mg.url(&format!("/errors?what={q}"));
        let http = http.clone();
        async move {
            http.get(url)
                .send()
                .await
                .expect("get")
                .text()
                .await
                .expect("body")
        }
    };
    assert_eq!(get("none").await, "socket: nil no body\n");
    let post = |q: &'static str, body: &'static str| {
        let url = mg.url(&format!("/errors?what={q}"));
        async move { post(url, body).await.text().await.expect("body") }
    };
    assert_eq!(post("empty", "").await, "socket: nil no body\n");
    assert_eq!(
        post("read", "data").await,
        "socket: nil request body already exists\n"
    );
    assert_eq!(
        post("raw", "data").await,
        "raw: nil raw request sockets are not supported by moongate\n"
    );
    assert_eq!(
        post("ok", "data").await,
        "socket: table nil\nmethods: 6 nil function\n\
         again: nil request body already exists\nbad pattern: true\n\
         empty: nil pattern is empty\n"
    );
    let chunked = raw_exchange(
        mg.http[0],
        b"POST /errors?what=chunked HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\
          Transfer-Encoding: chunked\r\n\r\n4\r\ndata\r\n0\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    assert!(
        chunked.contains("socket: nil chunked request bodies not supported yet"),
        "{chunked}"
    );
    let resp = http.get(mg.url("/phase")).send().await.expect("get");
    assert_eq!(
        resp.headers()
            .get("x-phase-error")
            .and_then(|v| v.to_str().ok()),
        Some("true")
    );
}

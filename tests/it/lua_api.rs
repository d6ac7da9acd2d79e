//! The details of the ngx API that OpenResty scripts lean on, through real
//! requests: the connection's and the route's variables (`$connection`,
//! `$request_id`, `ngx.var[N]`, `$bytes_sent` …), the header tables of
//! `ngx.req.get_headers` / `ngx.resp.get_headers` (limits, `"truncated"`,
//! case-insensitive lookup, raw case), ngx_lua's escaping of header
//! values, `ngx.req.raw_header`, bodies in temp files and bodies built by
//! `init_body` / `append_body` / `finish_body`, and the small functions
//! (`ngx.quote_sql_str`, `ngx.is_subrequest`, `ngx.req.is_internal`,
//! `ngx.config.nginx_configure`, `ngx.worker.exiting`).

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::{Moongate, Origin, client, echo, raw_exchange};

/// A server with `routes` (TOML) and a shared dict `notes`, plus an
/// upstream `echo` to `origin`.
fn conf(origin: SocketAddr, routes: &str) -> String {
    format!(
        r#"[server]
listen = ["127.0.0.1:0"]
workers = 1
access_log = "off"

[lua.shared_dict]
notes = "64KiB"

[upstream.echo]
servers = [{{ addr = "{origin}" }}]

{routes}"#
    )
}

/// The bodies of the responses in a raw HTTP/1.1 answer whose bodies have
/// a `Content-Length`.
fn bodies(answer: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = answer;
    while let Some(end) = rest.find("\r\n\r\n") {
        let head = &rest[..end];
        let len = crate::support::raw_content_length(head).unwrap_or(0);
        let body_start = end + 4;
        out.push(rest[body_start..body_start + len].to_string());
        rest = &rest[body_start + len..];
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_and_route_variables() {
    let origin = Origin::named("unused").await;
    let mg = Moongate::start(&conf(
        origin.addr,
        r#"[[route]]
path_exact = "/conn"
lua.content_inline = '''
ngx.say(ngx.var.connection, " ", ngx.var.connection_requests)
'''

[[route]]
path_exact = "/vars"
lua.content_inline = '''
local id = ngx.var.request_id
ngx.say(id, " ", tostring(id == ngx.var.request_id))
ngx.say(ngx.var.server_addr)
ngx.say(ngx.var.server_name)
local v = ngx.config.nginx_version
ngx.say(ngx.var.nginx_version == string.format("%d.%d.%d", math.floor(v / 1000000), math.floor(v / 1000) % 1000, v % 1000))
ngx.say(ngx.var.hostname)
'''

[[route]]
path_exact = "/named"
host = "api.example.test"
lua.content_inline = "ngx.say(ngx.var.server_name)"

[[route]]
path_regex = "^/items/([a-z]+)(?:/(\\d+))?"
lua.content_inline = '''
ngx.say(ngx.var[1], "|", ngx.var[2], "|", tostring(ngx.var[3]), "|", tostring(ngx.var[0]))
'''

[[route]]
path_exact = "/length"
lua.content_inline = '''
ngx.req.read_body()
ngx.say(ngx.var.request_length)
ngx.say(ngx.var.request_body)
'''

[[route]]
path_exact = "/readonly"
lua.content_inline = '''
local _, e1 = pcall(function() ngx.var.query_string = "x" end)
local _, e2 = pcall(function() ngx.var.connection = "1" end)
ngx.var.my_note = "writable"
ngx.say(tostring(e1):find('variable "query_string" not changeable', 1, true) ~= nil)
ngx.say(tostring(e2):find('variable "connection" not changeable', 1, true) ~= nil)
ngx.say(ngx.var.my_note)
ngx.req.set_header("Host", "New.Example:81")
ngx.say(ngx.var.host)
'''
"#,
    ));
    let addr = mg.http[0];

    // Three requests on one connection count 1, 2, 3 under one number;
    // another connection has another number.
    let pipelined = "GET /conn HTTP/1.1\r\nHost: a\r\n\r\n\
                     GET /conn HTTP/1.1\r\nHost: a\r\n\r\n\
                     GET /conn HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";
    let answer = raw_exchange(addr, pipelined.as_bytes(), Duration::from_secs(5)).await;
    let seen: Vec<(String, String)> = bodies(&answer)
        .iter()
        .map(|b| {
            let (c, n) = b.trim().split_once(' ').expect("two numbers");
            (c.to_string(), n.to_string())
        })
        .collect();
    assert_eq!(seen.len(), 3, "{answer}");
    assert!(seen.iter().all(|(c, _)| *c == seen[0].0), "{seen:?}");
    let counts: Vec<&str> = seen.iter().map(|(_, n)| n.as_str()).collect();
    assert_eq!(counts, ["1", "2", "3"]);
    let other = raw_exchange(
        addr,
        b"GET /conn HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    let other = bodies(&other).remove(0);
    let (serial, n) = other.trim().split_once(' ').expect("two numbers");
    assert_ne!(serial, seen[0].0);
    assert_eq!(n, "1");

    // request_id: 32 hex digits, the same within a request, new per request.
    let http = client();
    let vars = |body: String| body.lines().map(str::to_string).collect::<Vec<_>>();
    let one = vars(
        http.get(mg.url("/vars"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
    );
    let two = vars(
        http.get(mg.url("/vars"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
    );
    let (id, same) = one[0].split_once(' ').expect("id and check");
    assert_eq!(id.len(), 32, "{id}");
    assert!(id.bytes().all(|b| b.is_ascii_hexdigit()), "{id}");
    assert_eq!(same, "true");
    assert_ne!(one[0], two[0]);
    assert_eq!(one[1], "127.0.0.1");
    // No exact host on the route: the request's host.
    assert_eq!(one[2], "127.0.0.1");
    assert_eq!(one[3], "true", "nginx_version agrees with ngx.config");
    let host = nix::unistd::gethostname().expect("hostname");
    assert_eq!(one[4], host.to_string_lossy());

    let named = http
        .get(mg.url("/named"))
        .header("host", "API.example.test")
        .send()
        .await
        .unwrap();
    assert_eq!(named.text().await.unwrap(), "api.example.test\n");

    // ngx.var[N]: the route's path_regex captures; nil past the last
    // group and for 0, "" for a group that did not take part.
    let body = |url: String| async move {
        client()
            .get(url)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    assert_eq!(body(mg.url("/items/boots/42")).await, "boots|42|nil|nil\n");
    assert_eq!(body(mg.url("/items/hats")).await, "hats||nil|nil\n");

    // request_length: the head and the body as received.
    let post = "POST /length HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\nConnection: close\r\n\r\nhello world";
    let answer = raw_exchange(addr, post.as_bytes(), Duration::from_secs(5)).await;
    assert_eq!(
        bodies(&answer)[0],
        format!("{}\nhello world\n", post.len()),
        "and $request_body"
    );

    // Built-in variables are not changeable, with ngx_lua's message; new
    // names are.
    assert_eq!(
        body(mg.url("/readonly")).await,
        "true\ntrue\nwritable\nnew.example\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_sent_in_the_log_phase() {
    let origin = Origin::named("unused").await;
    let mg = Moongate::start(&conf(
        origin.addr,
        r#"[[route]]
path_exact = "/sent"
lua.content_inline = '''
ngx.header["X-Before"] = ngx.var.bytes_sent
ngx.print(string.rep("x", 1000))
'''
lua.log_inline = '''
ngx.shared.notes:set("sent", ngx.var.bytes_sent .. " " .. ngx.var.body_bytes_sent .. " " .. tostring(ngx.var.sent_http_x_before))
'''

[[route]]
path_exact = "/read"
lua.content_inline = "ngx.print(ngx.shared.notes:get('sent') or 'none')"
"#,
    ));
    let addr = mg.http[0];
    let answer = raw_exchange(
        addr,
        b"GET /sent HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    assert!(answer.ends_with(&"x".repeat(1000)), "{answer}");

    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let note = loop {
        let note = client()
            .get(mg.url("/read"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if note != "none" || std::time::Instant::now() > deadline {
            break note;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let parts: Vec<&str> = note.split(' ').collect();
    assert_eq!(parts.len(), 3, "{note}");
    let (total, body): (usize, usize) = (parts[0].parse().unwrap(), parts[1].parse().unwrap());
    assert_eq!(body, 1000);
    // The head counts too: moongate's count of it is what HTTP/1.1 sends
    // for a head like this one (it estimates, the connection does not
    // report back).
    assert_eq!(total, answer.len(), "bytes_sent");
    // sent_http_NAME: the response's headers as they went out; they say
    // bytes_sent was 0 before the response.
    assert_eq!(parts[2], "0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_tables_and_escaping() {
    let origin = Origin::start(echo).await;
    // Room for more header lines than the tables' default of 100.
    let more_lines = |c: String| c.replace("workers = 1", "workers = 1\nmax_header_count = 200");
    let mg = Moongate::start(&more_lines(conf(
        origin.addr,
        r#"[[route]]
path_exact = "/req"
lua.content_inline = '''
local h, err = ngx.req.get_headers()
ngx.say("default: ", tostring(err))
local small, err2 = ngx.req.get_headers(3)
local n = 0
for _ in pairs(small) do n = n + 1 end
ngx.say("max 3: ", n, " ", tostring(err2))
local all, err3 = ngx.req.get_headers(0)
n = 0
for _, v in pairs(all) do n = n + (type(v) == "table" and #v or 1) end
ngx.say("all: ", n, " ", tostring(err3))
ngx.say("lookup: ", h["X-Mixed-Case"], " ", h.x_mixed_case, " ", h["x-mixed-case"])
ngx.say("multi: ", type(h.x_multi), " ", table.concat(h.x_multi, ","))
local raw = ngx.req.get_headers(nil, true)
ngx.say("raw: ", tostring(raw["X-Mixed-Case"]), " ", tostring(raw["x-mixed-case"]), " ", tostring(getmetatable(raw)))
'''

[[route]]
path_exact = "/resp"
lua.content_inline = '''
ngx.header["X-Set-Case"] = "a"
ngx.header.x_other = {"1", "2"}
ngx.header["X-Bad"] = "value\r\nInjected: yes"
ngx.header["X-Bad-Name: x\r\n"] = "y"
for i = 1, 5 do ngx.header["X-N" .. i] = i end
local h, err = ngx.resp.get_headers(4)
local n = 0
for _ in pairs(h) do n = n + 1 end
ngx.say(n, " ", tostring(err))
h = ngx.resp.get_headers()
ngx.say(h.x_set_case, " ", h["X-OTHER"][2], " ", h["x-bad"])
local raw = ngx.resp.get_headers(0, true)
ngx.say(tostring(raw["X-Set-Case"]), " ", tostring(raw["x-set-case"]))
ngx.say(ngx.var.sent_http_x_other)
-- The Content-Type the answer will get, as nginx's default_type.
ngx.say(ngx.resp.get_headers()["Content-Type"])
'''

[[route]]
path_exact = "/proxied"
upstream = "echo"
lua.access_inline = '''
ngx.req.set_header("X-In", "v\nInjected: 1")
ngx.req.set_header("keep_underscore", "u")
'''

[[route]]
path_exact = "/raw"
lua.content_inline = '''
ngx.print(ngx.req.raw_header())
ngx.print("--\n")
ngx.print(ngx.req.raw_header(true))
'''
"#,
    )));
    let addr = mg.http[0];

    // 101 header lines (Host, Connection, 2 multi and 97 more): over the
    // default 100.
    let mut req = String::from("GET /req HTTP/1.1\r\nHost: a\r\nConnection: close\r\n");
    req.push_str("X-Mixed-Case: mixed\r\nX-Multi: one\r\nX-Multi: two\r\n");
    for i in 0..96 {
        req.push_str(&format!("X-Filler-{i}: {i}\r\n"));
    }
    req.push_str("\r\n");
    let answer = raw_exchange(addr, req.as_bytes(), Duration::from_secs(5)).await;
    let body = bodies(&answer).remove(0);
    let lines: Vec<&str> = body.lines().collect();
    assert_eq!(lines[0], "default: truncated", "{body}");
    assert_eq!(lines[1], "max 3: 3 truncated");
    assert_eq!(lines[2], "all: 101 nil");
    assert_eq!(lines[3], "lookup: mixed mixed mixed");
    assert_eq!(lines[4], "multi: table one,two");
    assert_eq!(
        lines[5], "raw: mixed nil nil",
        "raw keeps the case as received"
    );

    let r = client().get(mg.url("/resp")).send().await.unwrap();
    let headers = r.headers().clone();
    let body = r.text().await.unwrap();
    assert_eq!(
        body,
        "3 truncated\na 2 value%0D%0AInjected: yes\na nil\n1, 2\ntext/plain; charset=utf-8\n"
    );
    assert_eq!(headers["x-bad"], "value%0D%0AInjected: yes");
    assert!(headers.get("injected").is_none());
    assert_eq!(headers["x-bad-name%3a%20x%0d%0a"], "y");

    let seen: serde_json::Value = client()
        .get(mg.url("/proxied"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .map(|t| serde_json::from_str(&t).expect("JSON"))
        .unwrap();
    assert_eq!(seen["headers"]["x-in"][0], "v%0AInjected: 1");
    assert!(seen["headers"].get("injected").is_none());
    assert_eq!(seen["headers"]["keep_underscore"][0], "u");

    let raw = "GET /raw?a=1 HTTP/1.1\r\nHost: a\r\nX-Case-Kept: Yes\r\nConnection: close\r\n\r\n";
    let answer = raw_exchange(addr, raw.as_bytes(), Duration::from_secs(5)).await;
    let without_line = &raw[raw.find("\r\n").unwrap() + 2..];
    assert_eq!(bodies(&answer)[0], format!("{raw}--\n{without_line}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_bodies_in_files_and_built_bodies() {
    let origin = Origin::start(echo).await;
    let mg = Moongate::start(&conf(
        origin.addr,
        r#"[[route]]
path_exact = "/file"
lua.content_inline = '''
ngx.req.read_body()
local path = ngx.req.get_body_file()
local data = ngx.req.get_body_data()
if not path then
    ngx.say("memory ", #data)
    return
end
local f = assert(io.open(path, "rb"))
local content = f:read("*a")
f:close()
ngx.say("file ", path, " ", #content, " ", tostring(data), " ", content == string.rep("b", #content))
'''

[[route]]
path_exact = "/built"
upstream = "echo"
lua.access_inline = '''
ngx.req.read_body()
ngx.req.init_body(tonumber(ngx.var.arg_buf))
for i = 1, tonumber(ngx.var.arg_n) do
    ngx.req.append_body(string.rep("c", 1000))
end
ngx.req.finish_body()
ngx.req.set_header("X-Body-File", tostring(ngx.req.get_body_file() ~= nil))
'''

[[route]]
path_exact = "/from-file"
upstream = "echo"
lua.access_inline = '''
ngx.req.read_body()
ngx.req.set_body_file(ngx.var.arg_path, ngx.var.arg_clean == "1")
ngx.req.set_header("X-Body-File", ngx.req.get_body_file())
'''

[[route]]
path_exact = "/unread"
lua.content_inline = '''
local ok, e = pcall(ngx.req.init_body)
local ok2, e2 = pcall(ngx.req.append_body, "x")
ngx.say(tostring(e):find("request body not read yet", 1, true) ~= nil, " ",
        tostring(e2):find("request_body not initialized", 1, true) ~= nil)
'''
"#,
    ));
    let http = client();
    let small = http
        .post(mg.url("/file"))
        .body("a".repeat(100))
        .send()
        .await
        .unwrap();
    assert_eq!(small.text().await.unwrap(), "memory 100\n");

    let big = http
        .post(mg.url("/file"))
        .body("b".repeat(64 * 1024))
        .send()
        .await
        .unwrap();
    let answer = big.text().await.unwrap();
    let words: Vec<&str> = answer.split_whitespace().collect();
    assert_eq!(words[0], "file", "{answer}");
    assert_eq!(words[2], "65536");
    assert_eq!(words[3], "nil", "get_body_data is nil for a body in a file");
    assert_eq!(words[4], "true");
    // The temp file goes with the request.
    let path = std::path::Path::new(words[1]);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while path.exists() && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!path.exists(), "{} still there", path.display());

    // A built body replaces the client's on its way upstream.
    let seen: serde_json::Value = http
        .post(mg.url("/built?n=3"))
        .body("original")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .map(|t| serde_json::from_str(&t).expect("JSON"))
        .unwrap();
    assert_eq!(seen["body_len"], 3000);
    assert_eq!(seen["headers"]["content-length"][0], "3000");
    assert_eq!(seen["headers"]["x-body-file"][0], "false");
    let seen: serde_json::Value = http
        .get(mg.url("/built?n=5&buf=2048"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .map(|t| serde_json::from_str(&t).expect("JSON"))
        .unwrap();
    assert_eq!(seen["body_len"], 5000);
    assert_eq!(
        seen["headers"]["x-body-file"][0], "true",
        "over its buffer the built body is in a file"
    );

    // set_body_file: the file's content goes upstream; with auto_clean
    // the file goes with the request.
    let files = tempfile::tempdir().expect("temp dir");
    for (name, clean) in [("kept.txt", "0"), ("cleaned.txt", "1")] {
        let path = files.path().join(name);
        std::fs::write(&path, "d".repeat(1234)).expect("write");
        let url = mg.url(&format!("/from-file?path={}&clean={clean}", path.display()));
        let seen: serde_json::Value = http
            .get(url)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .map(|t| serde_json::from_str(&t).expect("JSON"))
            .unwrap();
        assert_eq!(seen["body_len"], 1234);
        assert_eq!(
            seen["headers"]["x-body-file"][0],
            path.display().to_string()
        );
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while clean == "1" && path.exists() && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(path.exists(), clean == "0", "{name}");
    }

    let r = http.get(mg.url("/unread")).send().await.unwrap();
    assert_eq!(r.text().await.unwrap(), "true true\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_functions_and_exiting() {
    let origin = Origin::named("unused").await;
    let mut mg = Moongate::start(&conf(
        origin.addr,
        r#"[[route]]
path_exact = "/misc"
lua.content_inline = '''
ngx.say(ngx.quote_sql_str("it's \"q\" \\ \0\b\n\r\t\26 é"))
ngx.say(ngx.quote_sql_str(""))
ngx.say(tostring(ngx.is_subrequest), " ", tostring(ngx.req.is_internal()), " ", tostring(ngx.worker.exiting()))
ngx.say(ngx.config.nginx_configure():find("--prefix=", 1, true) ~= nil)
-- Argument errors read as ngx_lua's (luaL_checknumber); numeric strings are numbers.
ngx.say(select(2, pcall(ngx.sleep, "a")))
ngx.say(select(2, pcall(ngx.sleep)))
ngx.say(pcall(ngx.sleep, "0"))
'''

[[route]]
path_exact = "/slow"
lua.content_inline = '''
ngx.sleep(1)
ngx.say("exiting ", tostring(ngx.worker.exiting()))
'''
"#,
    ));
    let body = client()
        .get(mg.url("/misc"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(
        body,
        "'it\\'s \\\"q\\\" \\\\ \\0\\b\\n\\r\\t\\Z é'\n''\nfalse false false\ntrue\n\
         bad argument #1 to 'sleep' (number expected, got string)\n\
         bad argument #1 to 'sleep' (number expected, got no value)\ntrue\n"
    );

    // A request in flight when the server stops sees the worker exiting.
    let addr = mg.http[0];
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /slow HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    mg.signal(nix::sys::signal::Signal::SIGTERM);
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    let answer = String::from_utf8_lossy(&out);
    assert!(answer.ends_with("exiting true\n"), "{answer}");
    assert_eq!(mg.wait_exit(Duration::from_secs(10)), Some(0));
}

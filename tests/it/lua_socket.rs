//! Cosockets (`ngx.socket.*`) through real requests: a Redis client written
//! in Lua against a real redis-server, an HTTP/1.1 client reading a chunked
//! response, UDP echo, unix sockets, TLS with and without verification,
//! sockets in the log phase and in timers, and the errors ngx_lua gives.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, UdpSocket, UnixListener};

use crate::support::{Moongate, Redis, client, install_crypto};

/// A RESP (Redis protocol) client over `ngx.socket.tcp`, `require "resp"`.
const RESP: &str = r#"
local _M = {}

local function encode(args)
    local out = { "*", #args, "\r\n" }
    for _, a in ipairs(args) do
        a = tostring(a)
        out[#out + 1] = { "$", #a, "\r\n", a, "\r\n" }
    end
    return out
end

local function read_reply(sock)
    local line, err, partial = sock:receive("*l")
    if not line then return nil, err, partial end
    local kind, rest = line:sub(1, 1), line:sub(2)
    if kind == "+" then return rest end
    if kind == "-" then return false, rest end
    if kind == ":" then return tonumber(rest) end
    if kind == "$" then
        local n = tonumber(rest)
        if n < 0 then return ngx.null end
        local data, err = sock:receive(n + 2)
        if not data then return nil, err end
        return data:sub(1, n)
    end
    if kind == "*" then
        local arr = {}
        for i = 1, tonumber(rest) do
            local v, err = read_reply(sock)
            if v == nil then return nil, err end
            arr[i] = v
        end
        return arr
    end
    return nil, "bad reply: " .. line
end

function _M.connect(port, timeout)
    local sock = ngx.socket.tcp()
    sock:settimeout(timeout or 1000)
    local ok, err = sock:connect("127.0.0.1", port)
    if not ok then return nil, err end
    return sock
end

function _M.call(sock, ...)
    local bytes, err = sock:send(encode({ ... }))
    if not bytes then return nil, err end
    return read_reply(sock)
end

function _M.pipeline(sock, cmds)
    local all = {}
    for i, c in ipairs(cmds) do all[i] = encode(c) end
    local bytes, err = sock:send(all)
    if not bytes then return nil, err end
    local res = {}
    for i = 1, #cmds do
        local v, err = read_reply(sock)
        if v == nil then return nil, err end
        res[i] = v
    end
    return res
end

return _M
"#;

/// One worker (so the connection pool is the same for every request),
/// `[lua]` with `lua` extra keys, and `routes`.
fn conf(lua: &str, routes: &str) -> String {
    format!(
        r#"[server]
listen = ["127.0.0.1:0"]
workers = 1
access_log = "off"

[lua]
package_path = "?.lua"
{lua}

{routes}"#
    )
}

fn start(lua: &str, routes: &str) -> Moongate {
    start_with(&conf(lua, routes), &[])
}

/// Starts moongate on `toml` in `PREFIX/conf.d`, with `resp.lua` and
/// `files` in the prefix (where the relative paths of conf.d point).
fn start_with(toml: &str, files: &[(&str, &str)]) -> Moongate {
    let dir = tempfile::tempdir().expect("temp dir");
    let conf_d = dir.path().join("conf.d");
    std::fs::create_dir(&conf_d).expect("conf.d");
    std::fs::write(conf_d.join("00-test.toml"), toml).expect("write conf");
    std::fs::write(dir.path().join("resp.lua"), RESP).expect("write resp.lua");
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).expect("write file");
    }
    Moongate::start_at(dir, conf_d)
}

async fn body(url: impl AsRef<str>) -> String {
    let url = url.as_ref();
    let r = client().get(url).send().await.expect("GET");
    assert_eq!(r.status().as_u16(), 200, "{url}");
    r.text().await.expect("body")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resp_client_talks_to_redis_and_reuses_pooled_connections() {
    let redis = Redis::start();
    let mg = start(
        "",
        &format!(
            r#"[[route]]
path_exact = "/redis"
lua.content_inline = '''
local resp = require "resp"
local sock, err = resp.connect({port})
if not sock then ngx.say("connect failed: ", err) return end
ngx.say("reused ", sock:getreusedtimes())
ngx.say("set ", resp.call(sock, "SET", "greeting", ngx.var.arg_v))
ngx.say("get ", resp.call(sock, "GET", "greeting"))
local res = assert(resp.pipeline(sock, {{
    {{ "SET", "n", 41 }}, {{ "INCR", "n" }}, {{ "GET", "n" }}, {{ "GET", "missing" }},
    {{ "LPUSH", "l", "a", "b" }}, {{ "LRANGE", "l", 0, -1 }}, {{ "DEL", "l" }},
}}))
ngx.say("pipeline ", res[1], " ", res[2], " ", res[3], " ", tostring(res[4] == ngx.null),
    " ", res[5], " ", table.concat(res[6], ","), " ", res[7])
local ok, e = resp.call(sock, "NOSUCHCOMMAND")
ngx.say("error ", tostring(ok), " ", e:sub(1, 3))
ngx.say("keepalive ", sock:setkeepalive(tonumber(ngx.var.arg_idle) or 10000, 10))
ngx.say("after ", select(2, sock:getreusedtimes()))
'''
"#,
            port = redis.port
        ),
    );
    let first = body(&mg.url("/redis?v=one&idle=300")).await;
    assert_eq!(
        first,
        "reused 0\nset OK\nget one\npipeline OK 42 42 true 2 b,a 1\nerror false ERR\nkeepalive 1\nafter closed\n"
    );
    assert_eq!(
        redis.reply(&["GET", "greeting"]).as_deref(),
        Some("$3\r\none\r\n")
    );
    // The connection kept by the first request is handed out again, and
    // the count grows with every reuse.
    let second = body(&mg.url("/redis?v=two&idle=300")).await;
    assert!(
        second.starts_with("reused 1\nset OK\nget two\n"),
        "{second}"
    );
    let third = body(&mg.url("/redis?v=three&idle=300")).await;
    assert!(third.starts_with("reused 2\n"), "{third}");
    // Past its idle timeout (300 ms) the pooled connection is closed: a
    // new one is made, and redis-server sees it go.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let clients = redis.reply(&["CLIENT", "LIST"]).unwrap_or_default();
    assert_eq!(
        clients.matches("cmd=").count(),
        1,
        "only CLIENT LIST's own: {clients}"
    );
    let fourth = body(&mg.url("/redis?v=four")).await;
    assert!(fourth.starts_with("reused 0\n"), "{fourth}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_redis_times_out_without_using_the_time_budget() {
    let redis = Redis::start();
    // The default 50 ms time budget: waiting 300 ms on the socket must not
    // count against it.
    let mg = start(
        "",
        &format!(
            r#"[[route]]
path_exact = "/ping"
lua.content_inline = '''
local resp = require "resp"
local sock, err = resp.connect({port}, 300)
if not sock then ngx.say("connect failed: ", err) return end
ngx.update_time()
local t0 = ngx.now()
local res, err, partial = resp.call(sock, "PING")
ngx.update_time()
ngx.say(tostring(res), " ", tostring(err), " [", tostring(partial), "]")
-- In tenths of a second, rounded: ngx.now() has millisecond steps, so
-- a 300 ms wait may read 299 ms.
ngx.say("waited ", math.floor((ngx.now() - t0) * 1000 / 100 + 0.5))
-- A read timeout does not close the socket.
ngx.say("send after timeout ", tostring(sock:send("")), " ", tostring(sock:getreusedtimes()))
sock:close()
'''
"#,
            port = redis.port
        ),
    );
    assert_eq!(
        body(&mg.url("/ping")).await,
        "PONG nil [nil]\nwaited 0\nsend after timeout 0 0\n"
    );
    redis.set_running(false);
    let started = Instant::now();
    let stopped = body(&mg.url("/ping")).await;
    redis.set_running(true);
    assert_eq!(
        stopped,
        "nil timeout []\nwaited 3\nsend after timeout 0 0\n"
    );
    assert!(started.elapsed() < Duration::from_secs(3));
    assert!(body(&mg.url("/ping")).await.starts_with("PONG"));
}

/// A test origin speaking raw HTTP/1.1: answers `GET /chunked` with a
/// chunked body written in small pieces (so chunk lines straddle reads),
/// and `GET /stream` with the receiveuntil example stream, then closes.
async fn raw_http_origin() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut stream = BufReader::new(stream);
                let mut request_line = String::new();
                let _ = stream.read_line(&mut request_line).await;
                loop {
                    let mut line = String::new();
                    match stream.read_line(&mut line).await {
                        Ok(0) | Err(_) => return,
                        Ok(_) if line == "\r\n" => break,
                        Ok(_) => {}
                    }
                }
                let pieces: Vec<&[u8]> = if request_line.starts_with("GET /chunked ") {
                    vec![
                        b"HTTP/1.1 200 OK\r\nTransfer-",
                        b"Encoding: chunked\r\nX-Origin: raw\r\n\r",
                        b"\n5\r\nhel",
                        b"lo\r\nf",
                        b"\r\n, chunked ",
                        b"world\r\n0\r",
                        b"\n\r\n",
                    ]
                } else {
                    vec![
                        b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n",
                        b"hello, world! -age",
                        b"ntzh\r\n--abc",
                        b"edhb blah blah",
                    ]
                };
                for p in pieces {
                    if stream.get_mut().write_all(p).await.is_err() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_client_reads_a_chunked_response_with_receiveuntil() {
    let origin = raw_http_origin().await;
    let mg = start(
        "",
        &format!(
            r#"[[route]]
path_exact = "/chunked"
lua.content_inline = '''
local sock = ngx.socket.tcp()
sock:settimeout(2000)
assert(sock:connect("127.0.0.1", {port}))
assert(sock:send({{ "GET /chunked HTTP/1.1\r\n", {{ "Host: origin\r\n" }}, "\r\n" }}))
local head = sock:receiveuntil("\r\n\r\n")()
local status = head:match("^HTTP/1%.1 (%d+)")
local chunked = head:lower():find("transfer-encoding: chunked", 1, true) ~= nil
local line = sock:receiveuntil("\r\n")
local parts = {{}}
while true do
    local size = tonumber(line(), 16)
    if size == 0 then assert(line() == "") break end
    parts[#parts + 1] = assert(sock:receive(size))
    assert(sock:receive(2) == "\r\n")
end
ngx.say(status, " chunked=", tostring(chunked), " body=", table.concat(parts))
sock:close()
'''

[[route]]
path_exact = "/stream"
lua.content_inline = '''
local sock = ngx.socket.tcp()
sock:settimeout(2000)
assert(sock:connect("127.0.0.1", {port}))
assert(sock:send("GET /stream HTTP/1.1\r\nHost: origin\r\n\r\n"))
assert(sock:receiveuntil("\r\n\r\n", {{ inclusive = true }})():find("\r\n\r\n$"))
local reader = sock:receiveuntil("\r\n--abcedhb")
local chunks = {{}}
while true do
    local data, err = reader(4)
    if not data then
        chunks[#chunks + 1] = err or "done"
        break
    end
    chunks[#chunks + 1] = data
end
ngx.say(table.concat(chunks, "|"))
ngx.say("rest=[", sock:receive("*a"), "]")
local data, err, partial = sock:receive(1)
ngx.say(tostring(data), " ", err, " [", partial, "]")
ngx.say(tostring(select(2, sock:send("x"))))
'''
"#,
            port = origin.port()
        ),
    );
    assert_eq!(
        body(&mg.url("/chunked")).await,
        "200 chunked=true body=hello, chunked world\n"
    );
    assert_eq!(
        body(&mg.url("/stream")).await,
        "hell|o, w|orld|! -a|gent|zh|done\nrest=[ blah blah]\nnil closed []\nclosed\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_echo_and_timeout() {
    let echo = UdpSocket::bind("127.0.0.1:0").await.expect("bind udp");
    let echo_port = echo.local_addr().expect("addr").port();
    tokio::spawn(async move {
        let mut buf = [0u8; 2048];
        while let Ok((n, from)) = echo.recv_from(&mut buf).await {
            let mut reply = b"echo:".to_vec();
            reply.extend_from_slice(&buf[..n]);
            let _ = echo.send_to(&reply, from).await;
        }
    });
    // Bound but never answering.
    let silent = UdpSocket::bind("127.0.0.1:0").await.expect("bind udp");
    let silent_port = silent.local_addr().expect("addr").port();
    let mg = start(
        "",
        &format!(
            r#"[[route]]
path_exact = "/udp"
lua.content_inline = '''
local u = ngx.socket.udp()
u:settimeout(1000)
ngx.say("peer ", u:setpeername("127.0.0.1", {echo_port}))
ngx.say("send ", u:send({{ "ping ", 1, {{ "-", true }} }}))
ngx.say("got ", u:receive())
ngx.say("close ", u:close(), " ", select(2, u:close()))
local s = ngx.socket.udp()
s:settimeout(150)
assert(s:setpeername("127.0.0.1", {silent_port}))
assert(s:send("anyone?"))
ngx.say("silent ", select(2, s:receive()))
'''
"#
        ),
    );
    assert_eq!(
        body(&mg.url("/udp")).await,
        "peer 1\nsend 1\ngot echo:ping 1-true\nclose 1 closed\nsilent timeout\n"
    );
    drop(silent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_connections_and_closed_sockets_give_ngx_lua_errors() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let mg = start(
        "",
        &format!(
            r#"[[route]]
path_exact = "/refused"
lua.content_inline = '''
local s = ngx.socket.tcp()
ngx.say(tostring(s:connect("127.0.0.1", {port})), " ", select(2, s:connect("127.0.0.1", {port})))
ngx.say("shortcut ", tostring(ngx.socket.connect("127.0.0.1", {port})), " ",
    select(2, ngx.socket.connect("127.0.0.1", {port})))
ngx.say("send ", select(2, s:send("x")))
ngx.say("receive ", select(2, s:receive()))
ngx.say("close ", select(2, s:close()))
ngx.say("keepalive ", select(2, s:setkeepalive()))
ngx.say("type ", type(s), " ", type(ngx.socket.stream()), " ", type(ngx.socket.udp()))
ngx.say("bad timeout ", tostring(pcall(s.settimeout, s, -1)))
'''
"#
        ),
    );
    assert_eq!(
        body(&mg.url("/refused")).await,
        "nil connection refused\nshortcut nil connection refused\nsend closed\nreceive closed\nclose closed\nkeepalive closed\ntype table table table\nbad timeout false\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unix_socket_connect() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("echo.sock");
    let listener = UnixListener::bind(&path).expect("bind unix");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut stream = BufReader::new(stream);
                let mut line = String::new();
                while stream.read_line(&mut line).await.is_ok_and(|n| n > 0) {
                    let reply = format!("unix:{line}");
                    if stream.get_mut().write_all(reply.as_bytes()).await.is_err() {
                        return;
                    }
                    line.clear();
                }
            });
        }
    });
    let mg = start(
        "",
        &format!(
            r#"[[route]]
path_exact = "/unix"
lua.content_inline = '''
local s = ngx.socket.stream()
assert(s:connect("unix:{path}"))
s:send("hi\r\n")
ngx.say(s:receive())
s:send("again\n")
ngx.say(s:receiveany(5), "|", s:receiveany(100))
ngx.say("keepalive ", s:setkeepalive())
local again = assert(ngx.socket.connect("unix:{path}"))
ngx.say("reused ", again:getreusedtimes())
again:close()
'''
"#,
            path = path.display()
        ),
    );
    assert_eq!(
        body(&mg.url("/unix")).await,
        "unix:hi\nunix:|again\n\nkeepalive 1\nreused 1\n"
    );
}

/// Accepts one connection on `listener` and reads it line by line until
/// `lines` lines came or the peer closed.
async fn read_lines(listener: &TcpListener, lines: usize) -> Vec<String> {
    let (stream, _) = tokio::time::timeout(Duration::from_secs(5), listener.accept())
        .await
        .expect("a connection in time")
        .expect("accept");
    let mut stream = BufReader::new(stream);
    let mut out = Vec::new();
    while out.len() < lines {
        let mut line = String::new();
        match tokio::time::timeout(Duration::from_secs(5), stream.read_line(&mut line)).await {
            Ok(Ok(n)) if n > 0 => out.push(line.trim_end().to_string()),
            _ => break,
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cosockets_work_in_the_log_phase_and_in_timers() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let mg = start(
        "",
        &format!(
            r#"[[route]]
path_exact = "/logged"
lua.content_inline = "ngx.say('content')"
lua.log_inline = '''
local s = ngx.socket.tcp()
s:settimeout(2000)
assert(s:connect("127.0.0.1", {port}))
assert(s:send({{ "log ", ngx.get_phase(), " ", ngx.var.uri, " ", ngx.status, "\n" }}))
s:close()
'''

[[route]]
path_exact = "/timer"
lua.content_inline = '''
assert(ngx.timer.at(0, function(premature)
    local s = ngx.socket.tcp()
    s:settimeout(2000)
    assert(s:connect("127.0.0.1", {port}))
    assert(s:send("timer " .. ngx.get_phase() .. "\n"))
    local reply = assert(s:receive())
    assert(s:send("got " .. reply .. "\n"))
    s:close()
end))
ngx.say("scheduled")
'''
"#
        ),
    );
    assert_eq!(body(&mg.url("/logged")).await, "content\n");
    assert_eq!(read_lines(&listener, 1).await, ["log log /logged 200"]);

    assert_eq!(body(&mg.url("/timer")).await, "scheduled\n");
    let (stream, _) = tokio::time::timeout(Duration::from_secs(5), listener.accept())
        .await
        .expect("timer connects")
        .expect("accept");
    let mut stream = BufReader::new(stream);
    let mut line = String::new();
    stream.read_line(&mut line).await.expect("read");
    assert_eq!(line, "timer timer\n");
    stream
        .get_mut()
        .write_all(b"pong\r\n")
        .await
        .expect("write");
    line.clear();
    stream.read_line(&mut line).await.expect("read");
    assert_eq!(line, "got pong\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sockets_belong_to_their_request_and_close_with_it() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let mg = start_with(
        &conf(
            r#"init = "init.lua""#,
            &format!(
                r#"[[route]]
path_exact = "/leave-open"
lua.content_inline = '''
local s = ngx.socket.tcp()
assert(s:connect("127.0.0.1", {port}))
assert(s:send("open\n"))
kept = s
ngx.say("left open")
'''

[[route]]
path_exact = "/use-other"
lua.content_inline = '''
local ok, err = pcall(kept.send, kept, "x")
ngx.say(tostring(ok), " ", tostring(err):match("bad request") or tostring(err))
ngx.say(tostring(INIT_ERR):match("API disabled in the context of init_by_lua%*") or tostring(INIT_ERR))
'''
"#
            ),
        ),
        &[(
            "init.lua",
            "local ok, err = pcall(ngx.socket.tcp)\nINIT_ERR = err\n",
        )],
    );
    assert_eq!(body(&mg.url("/leave-open")).await, "left open\n");
    let (stream, _) = tokio::time::timeout(Duration::from_secs(5), listener.accept())
        .await
        .expect("connected")
        .expect("accept");
    let mut stream = BufReader::new(stream);
    let mut line = String::new();
    stream.read_line(&mut line).await.expect("read");
    assert_eq!(line, "open\n");
    // The request is over: moongate closed the socket it left open.
    let mut rest = Vec::new();
    let n = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut rest))
        .await
        .expect("closed in time")
        .expect("read");
    assert_eq!(n, 0);
    assert_eq!(
        body(&mg.url("/use-other")).await,
        "false bad request\nAPI disabled in the context of init_by_lua*\n"
    );
}

/// A TLS server on loopback with `cert`/`key`: answers each line with
/// `tls:LINE`.
async fn tls_echo(cert: &rcgen::CertifiedKey<rcgen::KeyPair>) -> u16 {
    install_crypto();
    let der = cert.cert.der().clone();
    let key =
        rustls::pki_types::PrivateKeyDer::try_from(cert.signing_key.serialize_der()).expect("key");
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(vec![der], key)
        .expect("server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(stream).await else {
                    return;
                };
                let mut tls = BufReader::new(tls);
                let mut line = String::new();
                while tls.read_line(&mut line).await.is_ok_and(|n| n > 0) {
                    let reply = format!("tls:{line}");
                    if tls.get_mut().write_all(reply.as_bytes()).await.is_err() {
                        return;
                    }
                    line.clear();
                }
            });
        }
    });
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sslhandshake_verifies_against_the_trusted_certificate() {
    let trusted = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("cert");
    // Another self-signed certificate, under another name.
    let stranger = {
        let mut params =
            rcgen::CertificateParams::new(vec!["localhost".to_string()]).expect("params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "a stranger");
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = params.self_signed(&key).expect("cert");
        rcgen::CertifiedKey {
            cert,
            signing_key: key,
        }
    };
    let good = tls_echo(&trusted).await;
    let unknown = tls_echo(&stranger).await;
    let mg = start_with(
        &conf(
            r#"ssl_trusted_certificate = "trusted.pem""#,
            r#"[[route]]
path_exact = "/tls"
lua.content_inline = '''
local s = ngx.socket.tcp()
s:settimeout(2000)
assert(s:connect("127.0.0.1", tonumber(ngx.var.arg_port)))
local name = ngx.var.arg_name
if name == "" then name = nil end
local reuse = nil
if ngx.var.arg_bool == "1" then reuse = false end
local session, err = s:sslhandshake(reuse, name, ngx.var.arg_verify == "1")
if not session then
    ngx.say("handshake failed: ", err, " ", select(2, s:send("x")))
    return
end
ngx.say(type(session))
assert(s:send("hi\n"))
ngx.say(s:receive())
ngx.say(type(s:sslhandshake(false)))
s:close()
'''
"#,
        ),
        &[("trusted.pem", &trusted.cert.pem())],
    );
    let get = |q: String| {
        let url = mg.url(&format!("/tls?{q}"));
        async move { body(&url).await }
    };
    assert_eq!(
        get(format!("port={good}&name=localhost&verify=1")).await,
        "userdata\ntls:hi\nboolean\n"
    );
    assert_eq!(
        get(format!("port={good}&name=localhost&verify=1&bool=1")).await,
        "boolean\ntls:hi\nboolean\n"
    );
    // Without a server name the chain is checked, not the name.
    assert_eq!(
        get(format!("port={good}&name=&verify=1")).await,
        "userdata\ntls:hi\nboolean\n"
    );
    assert_eq!(
        get(format!("port={good}&name=other.example&verify=1")).await,
        "handshake failed: certificate host mismatch closed\n"
    );
    assert_eq!(
        get(format!("port={unknown}&name=localhost&verify=1")).await,
        "handshake failed: unable to get local issuer certificate closed\n"
    );
    // Verification off (ngx_lua's default) takes any certificate.
    assert_eq!(
        get(format!("port={unknown}&name=localhost&verify=0")).await,
        "userdata\ntls:hi\nboolean\n"
    );
}

/// A line server: answers `close` and then closes (50 ms later), `chatty` and then
/// sends an unasked line, `two` with two lines at once, anything else
/// with `ok:LINE`. Counts the connections it accepted.
async fn line_server() -> (u16, Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut stream = BufReader::new(stream);
                let mut line = String::new();
                while stream.read_line(&mut line).await.is_ok_and(|n| n > 0) {
                    let w = stream.get_mut();
                    let ok = match line.trim_end() {
                        "close" => {
                            let _ = w.write_all(b"bye\n").await;
                            // Closes once the connection is back in the pool.
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            return;
                        }
                        "chatty" => {
                            let _ = w.write_all(b"ok:chatty\n").await;
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            w.write_all(b"surprise\n").await
                        }
                        "two" => w.write_all(b"one\ntwo\n").await,
                        other => w.write_all(format!("ok:{other}\n").as_bytes()).await,
                    };
                    if ok.is_err() {
                        return;
                    }
                    line.clear();
                }
            });
        }
    });
    (port, accepted)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pool_never_hands_out_a_closed_or_talkative_connection() {
    use std::sync::atomic::Ordering;
    let (port, accepted) = line_server().await;
    let mg = start(
        "",
        &format!(
            r#"[[route]]
path_exact = "/say"
lua.content_inline = '''
local s = ngx.socket.tcp()
s:settimeout(1000)
assert(s:connect("127.0.0.1", {port}))
ngx.say("reused ", s:getreusedtimes())
assert(s:send(ngx.var.arg_w .. "\n"))
ngx.say(s:receive())
ngx.say("keepalive ", tostring(s:setkeepalive()))
'''

[[route]]
path_exact = "/two"
lua.content_inline = '''
local s = ngx.socket.tcp()
s:settimeout(1000)
assert(s:connect("127.0.0.1", {port}, {{ pool = "two" }}))
assert(s:send("two\n"))
ngx.sleep(0.05)
ngx.say(s:receive())
ngx.say("keepalive ", select(2, s:setkeepalive()))
ngx.say("after ", select(2, s:send("x")))
'''
"#
        ),
    );
    assert_eq!(
        body(&mg.url("/say?w=a")).await,
        "reused 0\nok:a\nkeepalive 1\n"
    );
    assert_eq!(
        body(&mg.url("/say?w=b")).await,
        "reused 1\nok:b\nkeepalive 1\n"
    );
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
    // The peer closes the pooled connection: the next request gets a new one.
    assert_eq!(
        body(&mg.url("/say?w=close")).await,
        "reused 2\nbye\nkeepalive 1\n"
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        body(&mg.url("/say?w=c")).await,
        "reused 0\nok:c\nkeepalive 1\n"
    );
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
    // The peer sends what nobody asked for on a pooled connection: it is
    // not handed out either.
    assert_eq!(
        body(&mg.url("/say?w=chatty")).await,
        "reused 1\nok:chatty\nkeepalive 1\n"
    );
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(
        body(&mg.url("/say?w=d")).await,
        "reused 0\nok:d\nkeepalive 1\n"
    );
    assert_eq!(accepted.load(Ordering::SeqCst), 3);
    // Data left unread: the connection is not pooled.
    let two = body(&mg.url("/two")).await;
    assert!(
        two == "one\nkeepalive unread data in buffer\nafter closed\n"
            || two == "one\nkeepalive connection in dubious state\nafter closed\n",
        "{two}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cosocket_waits_inside_the_scripts_own_coroutines() {
    let origin = raw_http_origin().await;
    let mg = start(
        "",
        &format!(
            r#"[[route]]
path_exact = "/wrapped"
lua.content_inline = '''
local sock = ngx.socket.tcp()
sock:settimeout(2000)
-- A generator of body chunks, as lua-resty-http's body reader is made.
local chunks = coroutine.wrap(function()
    assert(sock:connect("127.0.0.1", {port}))
    assert(sock:send("GET /chunked HTTP/1.1\r\nHost: origin\r\n\r\n"))
    sock:receiveuntil("\r\n\r\n")()
    coroutine.yield("head")
    local line = sock:receiveuntil("\r\n")
    while true do
        local size = tonumber(line(), 16)
        if size == 0 then return "end" end
        coroutine.yield(sock:receive(size))
        sock:receive(2)
    end
end)
local seen = {{}}
repeat
    local c = chunks()
    seen[#seen + 1] = c
until c == "end"
ngx.say(table.concat(seen, "|"))
local co = coroutine.create(function(a)
    ngx.sleep(0.01)
    local b = coroutine.yield(a + 1)
    ngx.sleep(0.01)
    return b * 2
end)
local ok1, v1 = coroutine.resume(co, 1)
local ok2, v2 = coroutine.resume(co, 10)
ngx.say(tostring(ok1), " ", v1, " ", tostring(ok2), " ", v2, " ", coroutine.status(co))
local bad = coroutine.wrap(function() ngx.sleep(0.01) error("boom", 0) end)
ngx.say(select(2, pcall(bad)))
'''
"#,
            port = origin.port()
        ),
    );
    assert_eq!(
        body(&mg.url("/wrapped")).await,
        "head|hello|, chunked world|end\ntrue 2 true 20 dead\nboom\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_with_a_backlog_bounds_open_connections_and_queues_connects() {
    use std::sync::atomic::Ordering;
    let (port, accepted) = line_server().await;
    let mg = start(
        "",
        &format!(
            r#"[[route]]
path_exact = "/bounded"
lua.content_inline = '''
local s = ngx.socket.tcp()
s:settimeout(tonumber(ngx.var.arg_timeout) or 2000)
local ok, err = s:connect("127.0.0.1", {port}, {{ pool = "bounded", pool_size = 1, backlog = 1 }})
if not ok then ngx.say("connect ", err) return end
ngx.say("reused ", s:getreusedtimes())
ngx.sleep(tonumber(ngx.var.arg_hold))
assert(s:send("x\n"))
ngx.say(s:receive())
ngx.say("keepalive ", s:setkeepalive())
'''
"#
        ),
    );
    let holder = tokio::spawn(body(mg.url("/bounded?hold=0.4")));
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Waits for the one connection the pool allows...
    let queued = tokio::spawn(body(mg.url("/bounded?hold=0")));
    tokio::time::sleep(Duration::from_millis(100)).await;
    // ...and the backlog (1) is full.
    assert_eq!(
        body(&mg.url("/bounded?hold=0")).await,
        "connect too many waiting connect operations\n"
    );
    assert_eq!(
        holder.await.expect("holder"),
        "reused 0\nok:x\nkeepalive 1\n"
    );
    assert_eq!(
        queued.await.expect("queued"),
        "reused 1\nok:x\nkeepalive 1\n"
    );
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
    // A queued connect gives up after its connect timeout.
    let holder = tokio::spawn(body(mg.url("/bounded?hold=0.5")));
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        body(&mg.url("/bounded?hold=0&timeout=100")).await,
        "connect timeout\n"
    );
    assert_eq!(
        holder.await.expect("holder"),
        "reused 2\nok:x\nkeepalive 1\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cosockets_work_in_header_filter_too() {
    let (port, _) = line_server().await;
    let mg = start(
        "",
        &format!(
            r#"[[route]]
path_exact = "/hf"
lua.content_inline = "ngx.say('body')"
lua.header_filter_inline = '''
local s = ngx.socket.tcp()
s:settimeout(1000)
assert(s:connect("127.0.0.1", {port}))
assert(s:send("header\n"))
ngx.header["X-From-Socket"] = s:receive()
s:setkeepalive()
'''
"#
        ),
    );
    let r = client().get(mg.url("/hf")).send().await.expect("GET");
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.headers()["x-from-socket"], "ok:header");
    assert_eq!(r.text().await.expect("body"), "body\n");
}

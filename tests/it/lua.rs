//! Lua handlers through real requests: phases and their order, ngx.ctx,
//! the ngx API, errors, budgets, the sandbox, sleeping without blocking,
//! and live edits of scripts.

use std::time::{Duration, Instant};

use crate::support::{Moongate, Origin, client, echo};

/// A server with one upstream route `/` to `origin` carrying `lua` keys,
/// plus `extra` TOML.
fn conf(origin: std::net::SocketAddr, lua: &str, extra: &str) -> String {
    format!(
        r#"[server]
listen = ["127.0.0.1:0"]
workers = 2
access_log = "off"

[admin]
listen = "127.0.0.1:0"

[upstream.app]
servers = [{{ addr = "{origin}" }}]

[[route]]
path = "/"
upstream = "app"
{lua}

{extra}"#
    )
}

async fn get(url: &str) -> (u16, reqwest::header::HeaderMap, String) {
    let r = client().get(url).send().await.expect("GET");
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    (status, headers, r.text().await.expect("body"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn phases_run_in_order_and_share_ngx_ctx() {
    let origin = Origin::start(echo).await;
    let mg = Moongate::start(&conf(
        origin.addr,
        r#"lua.rewrite_inline = "ngx.ctx.seen = { ngx.get_phase() }"
lua.access_inline = "table.insert(ngx.ctx.seen, ngx.get_phase())"
lua.header_filter_inline = "table.insert(ngx.ctx.seen, ngx.get_phase()); ngx.header['X-Phases'] = table.concat(ngx.ctx.seen, ',')""#,
        "",
    ));
    let (status, headers, _) = get(&mg.url("/x")).await;
    assert_eq!(status, 200);
    assert_eq!(headers["x-phases"], "rewrite,access,header_filter");
    // ngx.ctx is per request: a second request starts empty again.
    let (_, headers, _) = get(&mg.url("/y")).await;
    assert_eq!(headers["x-phases"], "rewrite,access,header_filter");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_handlers_answer_from_lua() {
    let origin = Origin::named("unused").await;
    let mg = Moongate::start(&conf(
        origin.addr,
        "",
        r#"[[route]]
path_exact = "/hello"
lua.content_inline = """
ngx.status = 201
ngx.header["X-A"] = "1"
ngx.header.content_type = "text/x-test"
ngx.say("hello ", ngx.var.arg_name, " ", 42, " ", true)
ngx.print({"a", {"b", "c"}})
"""
"#,
    ));
    let (status, headers, body) = get(&mg.url("/hello?name=bob")).await;
    assert_eq!(status, 201);
    assert_eq!(headers["x-a"], "1");
    assert_eq!(headers["content-type"], "text/x-test");
    assert_eq!(body, "hello bob 42 true\nabc");
    assert_eq!(origin.hits(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_redirect_and_ok() {
    let origin = Origin::named("app").await;
    let mg = Moongate::start(&conf(
        origin.addr,
        r#"lua.access_inline = """
local p = ngx.var.uri
if p == "/deny" then return ngx.exit(ngx.HTTP_FORBIDDEN) end
if p == "/teapot" then ngx.status = 418; ngx.say("short and stout"); return ngx.exit(418) end
if p == "/go" then return ngx.redirect("/elsewhere") end
if p == "/ok" then ngx.exit(ngx.OK); error("not reached") end
""""#,
        "",
    ));
    let (status, _, body) = get(&mg.url("/deny")).await;
    assert_eq!(status, 403);
    assert!(body.contains("403"), "{body}");
    let (status, _, body) = get(&mg.url("/teapot")).await;
    assert_eq!((status, body.as_str()), (418, "short and stout\n"));
    let r = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
        .get(mg.url("/go"))
        .send()
        .await
        .expect("GET");
    assert_eq!(r.status(), 302);
    assert_eq!(r.headers()["location"], "/elsewhere");
    assert_eq!(origin.hits(), 0, "denied requests never reach the upstream");
    let (status, _, body) = get(&mg.url("/ok")).await;
    assert_eq!(
        (status, body.as_str()),
        (200, "app"),
        "ngx.exit(ngx.OK) ends the phase only"
    );
    assert_eq!(origin.hits(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lua_access_scenario_rewrites_and_sets_headers() {
    let origin = Origin::start(echo).await;
    let mg = Moongate::start(&conf(
        origin.addr,
        r#"lua.access_inline = """
local tokens = { ["t-alice"] = "alice" }
local auth = ngx.var.http_authorization
if not auth or auth:sub(1, 7) ~= "Bearer " then return ngx.exit(ngx.HTTP_FORBIDDEN) end
local user = tokens[auth:sub(8)]
if not user then return ngx.exit(ngx.HTTP_FORBIDDEN) end
local uri = ngx.var.uri
if uri:sub(1, 4) == "/v1/" then ngx.req.set_uri("/api/" .. uri:sub(5)) end
ngx.req.set_header("X-User", user)
ngx.req.clear_header("X-Secret")
""""#,
        "",
    ));
    let http = client();
    let denied = http.get(mg.url("/v1/items")).send().await.expect("GET");
    assert_eq!(denied.status(), 403);
    let wrong = http
        .get(mg.url("/v1/items"))
        .bearer_auth("nope")
        .send()
        .await
        .expect("GET");
    assert_eq!(wrong.status(), 403);
    let ok = http
        .get(mg.url("/v1/items?page=2"))
        .bearer_auth("t-alice")
        .header("x-secret", "s")
        .send()
        .await
        .expect("GET");
    assert_eq!(ok.status(), 200);
    let seen: serde_json::Value =
        serde_json::from_str(&ok.text().await.expect("body")).expect("JSON");
    assert_eq!(seen["uri"], "/api/items?page=2");
    assert_eq!(seen["headers"]["x-user"][0], "alice");
    assert!(seen["headers"].get("x-secret").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ngx_var_and_ngx_req_read_the_request() {
    let origin = Origin::named("app").await;
    let mg = Moongate::start(&conf(
        origin.addr,
        "",
        r#"[[route]]
path_exact = "/vars"
lua.content_inline = """
local v = ngx.var
ngx.say(v.uri, "|", v.request_uri, "|", v.args, "|", v.arg_b, "|", v.http_x_test, "|", v.cookie_sid)
ngx.say(v.host, "|", v.scheme, "|", v.request_method, "|", v.remote_addr, "|", v.server_port == ngx.var.server_port)
ngx.say(tostring(v.no_such_thing), "|", #v.binary_remote_addr)
v.args = "x=1&x=2&flag"
local args = ngx.req.get_uri_args()
ngx.say(v.args, "|", args.x[1], args.x[2], "|", tostring(args.flag))
ngx.req.set_uri_args({ z = "a b" })
ngx.say(v.args)
local h = ngx.req.get_headers()
ngx.say(h["x-test"], "|", h.x_test, "|", ngx.req.get_method(), "|", ngx.req.http_version())
ngx.var.my_var = "mine"
ngx.say(v.my_var, "|", type(ngx.req.start_time()), "|", type(ngx.now()), "|", ngx.time() > 0)
"""
"#,
    ));
    let r = client()
        .get(mg.url("/vars?a=1&b=two"))
        .header("x-test", "yes")
        .header("cookie", "a=1; sid=abc")
        .send()
        .await
        .expect("GET");
    assert_eq!(r.status(), 200);
    let body = r.text().await.expect("body");
    let lines: Vec<&str> = body.lines().collect();
    assert_eq!(lines[0], "/vars|/vars?a=1&b=two|a=1&b=two|two|yes|abc");
    assert_eq!(lines[1], "127.0.0.1|http|GET|127.0.0.1|true");
    assert_eq!(lines[2], "nil|4");
    assert_eq!(lines[3], "x=1&x=2&flag|12|true");
    assert_eq!(lines[4], "z=a%20b");
    assert_eq!(lines[5], "yes|yes|GET|1.1");
    assert_eq!(lines[6], "mine|number|number|true");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_500_for_that_request_only() {
    let origin = Origin::named("app").await;
    let dir = tempfile::tempdir().expect("dir");
    let script = dir.path().join("boom.lua");
    std::fs::write(
        &script,
        "local x = nil\nif ngx.var.arg_boom then\n  return x.field\nend\n",
    )
    .expect("script");
    let mg = Moongate::start(&conf(
        origin.addr,
        &format!("lua.access = \"{}\"", script.display()),
        "",
    ));
    let (status, _, _) = get(&mg.url("/?boom=1")).await;
    assert_eq!(status, 500);
    let line = mg.wait_log("boom.lua:3:", Duration::from_secs(5));
    assert!(line.contains("attempt to index"), "{line}");
    let (status, _, body) = get(&mg.url("/")).await;
    assert_eq!((status, body.as_str()), (200, "app"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runaway_loops_are_stopped_by_the_budget() {
    let origin = Origin::named("app").await;
    let mg = Moongate::start(&conf(
        origin.addr,
        r#"lua.access_inline = """
local p = ngx.var.uri
if p == "/spin" then local i = 0; while true do i = i + 1 end end
if p == "/sneaky" then while true do pcall(function() while true do end end) end end
if p == "/jit" then
    -- The JIT would compile this loop, and compiled code never meets the
    -- count hook: jit.on must not bring it back.
    jit.on()
    local f = function(n) local s = 0; for i = 1, n do s = s + i % 7 end; return s end
    for _ = 1, 200 do f(1000) end
    local i = 0; while true do i = i + 1 end
end
if p == "/jitstatus" then ngx.exit(jit.status() and 418 or 204) end
""""#,
        "[lua]\ntime_budget = \"50ms\"\n",
    ));
    let (status, _, _) = get(&mg.url("/jitstatus")).await;
    assert_eq!(status, 204, "the JIT stays off");
    for path in ["/spin", "/sneaky", "/jit"] {
        let started = Instant::now();
        let (status, _, _) = get(&mg.url(path)).await;
        assert_eq!(status, 500, "{path}");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{path} was not stopped"
        );
    }
    mg.wait_log("time budget exceeded", Duration::from_secs(5));
    let (status, _, body) = get(&mg.url("/fine")).await;
    assert_eq!((status, body.as_str()), (200, "app"), "the VM stays usable");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sleeping_requests_do_not_block_each_other() {
    let origin = Origin::named("unused").await;
    let mg = Moongate::start(&conf(
        origin.addr,
        "",
        "[[route]]\npath_exact = \"/nap\"\nlua.content_inline = \"ngx.sleep(0.3); ngx.say('rested')\"\n",
    ));
    let started = Instant::now();
    let naps: Vec<_> = (0..20)
        .map(|_| {
            let url = mg.url("/nap");
            tokio::spawn(async move { get(&url).await })
        })
        .collect();
    for nap in naps {
        let (status, _, body) = nap.await.expect("task");
        assert_eq!((status, body.as_str()), (200, "rested\n"));
    }
    // 20 sleeps of 0.3 s on 2 threads: about one sleep, far from the sum (6 s).
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sandbox_keeps_scripts_in() {
    let origin = Origin::named("unused").await;
    let mg = Moongate::start(&conf(
        origin.addr,
        "",
        r#"[[route]]
path_exact = "/escape"
lua.content_inline = """
local f, err = io.open("/tmp/moongate-sandbox-test", "w")
ngx.say(tostring(os.execute), "|", tostring(io.popen), "|", tostring(f), "|", err)
local g, lerr = loadfile("/etc/hostname")
ngx.say(tostring(g), "|", lerr)
"""
"#,
    ));
    let (status, _, body) = get(&mg.url("/escape")).await;
    assert_eq!(status, 200);
    let lines: Vec<&str> = body.lines().collect();
    assert_eq!(
        lines[0],
        "nil|nil|nil|io.open for writing is not allowed (sandbox)"
    );
    assert_eq!(
        lines[1],
        "nil|loadfile outside package_path is not allowed (sandbox)"
    );
    assert!(!std::path::Path::new("/tmp/moongate-sandbox-test").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn script_edits_are_picked_up_and_syntax_errors_keep_the_old_script() {
    let origin = Origin::named("unused").await;
    let dir = tempfile::tempdir().expect("dir");
    let script = dir.path().join("hello.lua");
    std::fs::write(&script, "ngx.say('v1')\n").expect("script");
    let mg = Moongate::start(&conf(
        origin.addr,
        "",
        &format!(
            "[[route]]\npath_exact = \"/v\"\nlua.content = \"{}\"\n",
            script.display()
        ),
    ));
    assert_eq!(get(&mg.url("/v")).await.2, "v1\n");

    let write = |text: &str| {
        let tmp = dir.path().join(".hello.tmp");
        std::fs::write(&tmp, text).expect("write");
        std::fs::rename(&tmp, &script).expect("rename");
    };
    write("ngx.say('v2')\n");
    let deadline = Instant::now() + Duration::from_secs(10);
    while get(&mg.url("/v")).await.2 != "v2\n" {
        assert!(Instant::now() < deadline, "the edit was not picked up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let before = mg.log_lines().len();
    write("ngx.say('v3'\n");
    mg.wait_log_after(before, "reload failed", Duration::from_secs(10));
    let failure = mg.wait_log_after(before, "hello.lua:", Duration::from_secs(5));
    assert!(failure.contains("Lua syntax error"), "{failure}");
    assert_eq!(
        get(&mg.url("/v")).await.2,
        "v2\n",
        "the old script keeps serving"
    );
}

#[tokio::test]
async fn check_compiles_every_script() {
    let dir = tempfile::tempdir().expect("dir");
    std::fs::write(dir.path().join("bad.lua"), "local a = \nngx.say(\n").expect("script");
    std::fs::write(
        dir.path().join("10-x.toml"),
        format!(
            "[[route]]\npath = \"/\"\nlua.content = \"{}\"\n",
            dir.path().join("bad.lua").display()
        ),
    )
    .expect("conf");
    let run = crate::support::moongate_check(dir.path());
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    assert!(run.stderr.contains("bad.lua:"), "{}", run.stderr);
    assert!(run.stderr.contains("Lua syntax error"), "{}", run.stderr);
}

/// lua-resty-lrucache from Debian's package (`resty.lrucache` and
/// `resty.lrucache.pureffi`), loaded unchanged, behaves as documented.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lua_resty_lrucache_runs_unchanged() {
    assert!(
        std::path::Path::new("/usr/share/lua/5.1/resty/lrucache.lua").exists(),
        "install Debian's lua-resty-lrucache (test.sh does)"
    );
    let origin = Origin::named("unused").await;
    let mg = Moongate::start(&conf(
        origin.addr,
        "",
        &r#"[lua]
package_path = "/usr/share/lua/5.1/?.lua;{repo}/lua/?.lua"

[[route]]
path_exact = "/lru"
lua.content_inline = '''
local out = {}
for _, name in ipairs({ "resty.lrucache", "resty.lrucache.pureffi" }) do
    local lrucache = require(name)
    local c = assert(lrucache.new(2))
    c:set("dog", 32)
    c:set("cat", 56)
    local dog = c:get("dog")          -- dog is now the most recently used
    c:set("fish", 1)                  -- so cat is evicted
    local t = assert(lrucache.new(10))
    t:set("short", "s", 0.001)
    ngx.sleep(0.02)
    local gone, stale = t:get("short")
    t:set("k", "v")
    t:delete("k")
    out[#out + 1] = table.concat({ name, tostring(dog), tostring(c:get("cat")),
        tostring(c:get("fish")), tostring(gone), tostring(stale), tostring(t:get("k")) }, ",")
end
ngx.say(table.concat(out, "\n"))
'''
"#
        .replace("{repo}", env!("CARGO_MANIFEST_DIR")),
    ));
    let (status, _, body) = get(&mg.url("/lru")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        "resty.lrucache,32,nil,1,nil,s,nil\nresty.lrucache.pureffi,32,nil,1,nil,s,nil\n"
    );
}

/// cjson / cjson.safe and the table shims OpenResty code relies on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cjson_and_table_shims() {
    let origin = Origin::named("unused").await;
    let mg = Moongate::start(&conf(
        origin.addr,
        "",
        r#"[[route]]
path_exact = "/shims"
lua.content_inline = '''
require "resty.core"
local cjson = require "cjson"
local safe = require "cjson.safe"
local t = cjson.decode('{"list":[1,2,3],"none":null}')
ngx.say(#t.list, "|", tostring(t.none == ngx.null), "|", tostring(cjson.null == ngx.null))
ngx.say(cjson.encode({ ok = true }), "|", cjson.encode({ "a", "b" }))
local v, err = safe.decode("{oops")
ngx.say(tostring(v), "|", tostring(err ~= nil))
local n = table.new(4, 0)
n[1] = "x"
table.clear(n)
local nkeys = require "table.nkeys"
ngx.say(tostring(n[1]), "|", nkeys({ a = 1, b = 2 }), "|", tostring(table.isempty({})),
    "|", tostring(table.isarray({ 1, 2 })), "|", tostring(table.isarray({ a = 1 })),
    "|", table.clone({ k = "v" }).k)
'''
"#,
    ));
    let (status, _, body) = get(&mg.url("/shims")).await;
    assert_eq!(status, 200, "{body}");
    let lines: Vec<&str> = body.lines().collect();
    assert_eq!(lines[0], "3|true|true");
    assert_eq!(lines[1], r#"{"ok":true}|["a","b"]"#);
    assert_eq!(lines[2], "nil|true");
    assert_eq!(lines[3], "nil|2|true|true|false|v");
}

/// `require "moongate"`: mg.upstream.set picks the pool, mg.http.request
/// calls out without blocking and reports failures as `nil, err`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_moongate_module() {
    let stable = Origin::named("stable").await;
    let canary = Origin::named("canary").await;
    let api = Origin::start(echo).await;
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr")
    };
    let mg = Moongate::start(&conf(
        stable.addr,
        r#"lua.access_inline = '''
local mg = require "moongate"
if ngx.var.http_x_canary then
    local ok, err = mg.upstream.set(ngx.var.http_x_canary)
    if not ok then ngx.status = 400; ngx.say(err); return ngx.exit(400) end
end
'''"#,
        &format!(
            r#"[upstream.canary]
servers = [{{ addr = "{}" }}]

[[route]]
path_exact = "/call"
lua.content_inline = '''
local mg = require "moongate"
local res, err = mg.http.request{{ method = "POST", url = "http://{}/echo?x=1",
    headers = {{ ["X-From"] = "lua" }}, body = "payload", timeout = 5 }}
ngx.say(res.status, "|", res.headers["content-type"])
local seen = require("cjson").decode(res.body)
ngx.say(seen.method, "|", seen.uri, "|", seen.headers["x-from"][1], "|", seen.body_len)
local r2, err2 = mg.http.request{{ url = "http://{}/", timeout = 2 }}
ngx.say(tostring(r2), "|", tostring(err2 ~= nil))
local r3, err3 = mg.http.request{{ url = "ftp://example.invalid/" }}
ngx.say(tostring(r3), "|", err3)
'''
"#,
            canary.addr, api.addr, closed
        ),
    ));
    let http = client();
    let plain = http.get(mg.url("/")).send().await.expect("GET");
    assert_eq!(plain.text().await.expect("body"), "stable");
    let chosen = http
        .get(mg.url("/"))
        .header("x-canary", "canary")
        .send()
        .await
        .expect("GET");
    assert_eq!(chosen.text().await.expect("body"), "canary");
    let unknown = http
        .get(mg.url("/"))
        .header("x-canary", "nope")
        .send()
        .await
        .expect("GET");
    assert_eq!(unknown.status(), 400);
    assert_eq!(
        unknown.text().await.expect("body"),
        "no upstream named \"nope\"\n"
    );

    let (status, _, body) = get(&mg.url("/call")).await;
    assert_eq!(status, 200, "{body}");
    let lines: Vec<&str> = body.lines().collect();
    assert_eq!(lines[0], "200|application/json");
    assert_eq!(lines[1], "POST|/echo?x=1|lua|7");
    assert_eq!(lines[2], "nil|true");
    assert_eq!(
        lines[3],
        "nil|ftp:// is not supported by mg.http.request (http:// and https:// only)"
    );
}

/// ngx.timer.at / every run callbacks in the timer phase; ngx.thread.spawn
/// runs light threads that share the request, wait returns the first to end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timers_and_light_threads() {
    let mg = Moongate::start(
        r#"[server]
listen = ["127.0.0.1:0"]
workers = 1
access_log = "off"

[[route]]
path_exact = "/arm"
lua.content_inline = '''
local ok = ngx.timer.at(0.05, function(premature, x)
    _G.fired = x .. ":" .. ngx.get_phase() .. ":" .. tostring(premature)
end, "a")
ngx.timer.every(0.05, function() _G.ticks = (_G.ticks or 0) + 1 end)
ngx.say(tostring(ok))
'''

[[route]]
path_exact = "/check"
lua.content_inline = '''
ngx.sleep(0.4)
ngx.say(tostring(_G.fired), "|", tostring((_G.ticks or 0) >= 3))
'''

[[route]]
path_exact = "/threads"
lua.content_inline = '''
local t1 = ngx.thread.spawn(function(a) ngx.sleep(0.1); return "slow", a end, 1)
local t2 = ngx.thread.spawn(function() return "fast" end)
local ok, r = ngx.thread.wait(t1, t2)
ngx.say(tostring(ok), "|", r)
local ok1, s, a = ngx.thread.wait(t1)
ngx.say(tostring(ok1), "|", s, "|", a)
local t3 = ngx.thread.spawn(function() error("bad thing") end)
local ok3, e = ngx.thread.wait(t3)
ngx.say(tostring(ok3), "|", tostring(string.find(e, "bad thing", 1, true) ~= nil))
local t4 = ngx.thread.spawn(function() ngx.sleep(10) end)
ngx.say(tostring(ngx.thread.kill(t4)))
local t5 = ngx.thread.spawn(function() return ngx.var.uri end)
local _, uri = ngx.thread.wait(t5)
ngx.say(uri)
'''
"#,
    );
    assert_eq!(get(&mg.url("/arm")).await.2, "true\n");
    assert_eq!(get(&mg.url("/check")).await.2, "a:timer:false|true\n");
    let (status, _, body) = get(&mg.url("/threads")).await;
    assert_eq!(status, 200, "{body}");
    // kill returns ngx_lua's true value, 1.
    assert_eq!(body, "true|fast\ntrue|slow|1\nfalse|true\n1\n/threads\n");
}

/// ngx.req.read_body / get_body_data / get_post_args / set_body_data: the
/// body is read only when asked, and what a handler sets is what the
/// upstream receives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_bodies_in_lua() {
    let origin = Origin::start(echo).await;
    let mg = Moongate::start(
        &conf(
            origin.addr,
            r#"lua.access_inline = '''
local before = ngx.req.get_post_args()
ngx.req.read_body()
local args = ngx.req.get_post_args()
ngx.req.set_header("X-Before", tostring(before))
ngx.req.set_header("X-Name", args.name or "none")
ngx.req.set_header("X-Raw", ngx.req.get_body_data() or "nil")
if args.replace then ngx.req.set_body_data("replaced!") end
'''"#,
            "[server.extra]\n",
        )
        .replace("[server.extra]\n", "")
        .replace(
            "access_log = \"off\"",
            "access_log = \"off\"\nclient_max_body_size = \"1KiB\"",
        ),
    );
    let http = client();
    let r = http
        .post(mg.url("/form"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("name=moon%20gate&x=1")
        .send()
        .await
        .expect("POST");
    assert_eq!(r.status(), 200);
    let seen: serde_json::Value =
        serde_json::from_str(&r.text().await.expect("body")).expect("JSON");
    assert_eq!(seen["headers"]["x-before"][0], "nil");
    assert_eq!(seen["headers"]["x-name"][0], "moon gate");
    assert_eq!(seen["headers"]["x-raw"][0], "name=moon%20gate&x=1");
    assert_eq!(seen["body_len"], 20, "the read body is still sent upstream");

    let r = http
        .post(mg.url("/form"))
        .body("replace=1")
        .send()
        .await
        .expect("POST");
    let seen: serde_json::Value =
        serde_json::from_str(&r.text().await.expect("body")).expect("JSON");
    assert_eq!(
        seen["body_len"], 9,
        "set_body_data replaces what the upstream gets"
    );
    assert_eq!(seen["headers"]["content-length"][0], "9");

    let big = "a=".to_string() + &"x".repeat(4096);
    let r = http
        .post(mg.url("/form"))
        .body(big)
        .send()
        .await
        .expect("POST");
    assert_eq!(r.status(), 413);
}

/// The codecs and time functions of SPEC §4, with known vectors.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn codecs_and_times() {
    let origin = Origin::named("unused").await;
    let mg = Moongate::start(&conf(
        origin.addr,
        "",
        r#"[[route]]
path_exact = "/codecs"
lua.content_inline = '''
local function hex(s) return (s:gsub(".", function(c) return string.format("%02x", c:byte()) end)) end
ngx.say(ngx.md5("abc"), "|", hex(ngx.md5_bin("")), "|", hex(ngx.sha1_bin("abc")))
ngx.say(hex(ngx.hmac_sha1("key", "The quick brown fox jumps over the lazy dog")))
ngx.say(ngx.crc32_short("The quick brown fox jumps over the lazy dog"), "|", ngx.crc32_long("hello"))
ngx.say(ngx.encode_base64("hello?"), "|", ngx.encode_base64("a", true), "|", ngx.decode_base64("aGVsbG8/"), "|", tostring(ngx.decode_base64("!!!")))
ngx.say(ngx.escape_uri("a b/c?d=e&f"), "|", ngx.unescape_uri("a%20b+c"), "|", ngx.escape_uri("a b/c", 0))
local args = ngx.decode_args("a=1&b&c=&a=2")
ngx.say(args.a[1], args.a[2], "|", tostring(args.b), "|", args.c == "", "|", ngx.encode_args({ x = "y z" }))
ngx.say(ngx.http_time(1290079655), "|", ngx.cookie_time(1290079655), "|", ngx.parse_http_time("Thu, 18 Nov 2010 11:27:35 GMT"))
ngx.say(#ngx.today(), "|", #ngx.localtime(), "|", #ngx.utctime(), "|", tostring(ngx.parse_http_time("nonsense")))
'''
"#,
    ));
    let (status, _, body) = get(&mg.url("/codecs")).await;
    assert_eq!(status, 200, "{body}");
    let lines: Vec<&str> = body.lines().collect();
    assert_eq!(
        lines[0],
        "900150983cd24fb0d6963f7d28e17f72|d41d8cd98f00b204e9800998ecf8427e|a9993e364706816aba3e25717850c26c9cd0d89d"
    );
    assert_eq!(lines[1], "de7c9b85b8b78aa6bc8a7a36f70a90701c9db4d9");
    assert_eq!(lines[2], "1095738169|907060870");
    assert_eq!(lines[3], "aGVsbG8/|YQ|hello?|nil");
    assert_eq!(lines[4], "a%20b%2Fc%3Fd%3De%26f|a b c|a%20b/c");
    assert_eq!(lines[5], "12|true|true|x=y%20z");
    assert_eq!(
        lines[6],
        "Thu, 18 Nov 2010 11:27:35 GMT|Thu, 18-Nov-10 11:27:35 GMT|1290079655"
    );
    assert_eq!(lines[7], "10|19|19|nil");
}

/// ngx.re.match / find / gmatch / sub / gsub with PCRE syntax, options,
/// ctx.pos and ngx_lua's return conventions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ngx_re() {
    let origin = Origin::named("unused").await;
    let mg = Moongate::start(&conf(
        origin.addr,
        "",
        r#"[[route]]
path_exact = "/re"
lua.content_inline = '''
local m = ngx.re.match("hello, 1234 and 56", [[(\d+)\D+(?<second>\d+)]], "jo")
ngx.say(m[0], "|", m[1], "|", m.second, "|", m[2])
ngx.say(tostring(ngx.re.match("abc", "X", "i")), "|", ngx.re.match("ABC", "b", "i")[0])
local from, to = ngx.re.find("hello world", "wor")
ngx.say(from, "|", to)
local ctx = { pos = 7 }
local m2 = ngx.re.match("ab ab ab", "ab", "", ctx)
ngx.say(m2[0], "|", ctx.pos)
local out = {}
for w in ngx.re.gmatch("one two  three", [[\w+]]) do out[#out + 1] = w[0] end
ngx.say(table.concat(out, ","))
ngx.say(ngx.re.sub("hello world", "o", "0"), "|", (ngx.re.gsub("hello world", "o", "0")), "|", select(2, ngx.re.gsub("hello world", "o", "0")))
ngx.say((ngx.re.gsub("abc", "b*", "-")), "|", (ngx.re.gsub("a1b22", [[\d+]], function(m) return "<" .. m[0] .. ">" end)))
ngx.say((ngx.re.sub("john smith", [[(\w+) (\w+)]], "$2, ${1}!")), "|", (ngx.re.sub("x", "x", "$$")))
ngx.say(tostring(ngx.re.match("aa", [[(a)\1]])[0]), "|", tostring(ngx.re.match("foobar", "foo(?=bar)")[0]))
local bad, err = ngx.re.match("x", "(unclosed")
ngx.say(tostring(bad), "|", tostring(err ~= nil))
local ok, flag_err = pcall(ngx.re.match, "x", "x", "z")
ngx.say(tostring(ok), "|", tostring(string.find(flag_err, "unknown flag", 1, true) ~= nil))
local unmatched = ngx.re.match("a", "(a)|(b)")
ngx.say(tostring(unmatched[2]))
'''
"#,
    ));
    let (status, _, body) = get(&mg.url("/re")).await;
    assert_eq!(status, 200, "{body}");
    let lines: Vec<&str> = body.lines().collect();
    assert_eq!(lines[0], "1234 and 56|1234|56|56");
    assert_eq!(lines[1], "nil|B");
    assert_eq!(lines[2], "7|9");
    assert_eq!(lines[3], "ab|9");
    assert_eq!(lines[4], "one,two,three");
    assert_eq!(lines[5], "hell0 world|hell0 w0rld|2");
    assert_eq!(lines[6], "-a--c-|a<1>b<22>");
    assert_eq!(lines[7], "smith, john!|$");
    assert_eq!(lines[8], "aa|foo");
    assert_eq!(lines[9], "nil|true");
    assert_eq!(lines[10], "false|true");
    assert_eq!(lines[11], "false");
}

/// resty.sha1 / sha256 / md5 / random / string, with lua-resty-string's API.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn native_resty_string_modules() {
    let origin = Origin::named("unused").await;
    let mg = Moongate::start(&conf(
        origin.addr,
        "",
        r#"[[route]]
path_exact = "/resty"
lua.content_inline = '''
local str = require "resty.string"
local sha1 = require("resty.sha1"):new()
sha1:update("ab")
sha1:update("c")
ngx.say(str.to_hex(sha1:final()))
local sha256 = require("resty.sha256"):new()
sha256:update("abc")
ngx.say(str.to_hex(sha256:final()))
local md5 = require("resty.md5"):new()
md5:update("abc")
local d = md5:final()
md5:reset()
md5:update("")
ngx.say(str.to_hex(d), "|", str.to_hex(md5:final()))
local random = require "resty.random"
local a, b = random.bytes(16), random.bytes(16, true)
ngx.say(#a, "|", #b, "|", tostring(a ~= b), "|", str.atoi("42"))
'''
"#,
    ));
    let (status, _, body) = get(&mg.url("/resty")).await;
    assert_eq!(status, 200, "{body}");
    let lines: Vec<&str> = body.lines().collect();
    assert_eq!(lines[0], "a9993e364706816aba3e25717850c26c9cd0d89d");
    assert_eq!(
        lines[1],
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
    assert_eq!(
        lines[2],
        "900150983cd24fb0d6963f7d28e17f72|d41d8cd98f00b204e9800998ecf8427e"
    );
    assert_eq!(lines[3], "16|16|true|42");
}

/// Bundled policies configured from a route, without writing Lua.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bundled_policies() {
    let origin = Origin::start(echo).await;
    let dir = tempfile::tempdir().expect("dir");
    let keys = dir.path().join("keys.txt");
    std::fs::write(&keys, "# key consumer\nk-alice alice\nk-bob\n").expect("keys");
    let mg = Moongate::start(&format!(
        r#"[server]
listen = ["127.0.0.1:0"]
workers = 2
access_log = "off"

[upstream.app]
servers = [{{ addr = "{}" }}]

[[route]]
path = "/"
upstream = "app"
policies = [
  {{ use = "request_id" }},
  {{ use = "ip", allow = ["127.0.0.0/8", "::1"], deny = ["10.0.0.0/8"] }},
  {{ use = "api_key", keys_file = "{}", query_arg = "key" }},
]

[[route]]
path = "/internal/"
upstream = "app"
policies = [{{ use = "ip", allow = ["10.0.0.0/8"] }}]
"#,
        origin.addr,
        keys.display()
    ));
    let http = client();
    let none = http.get(mg.url("/x")).send().await.expect("GET");
    assert_eq!(none.status(), 401);
    assert!(
        none.headers()["www-authenticate"]
            .to_str()
            .unwrap_or("")
            .contains("X-Api-Key")
    );
    let bad = http
        .get(mg.url("/x"))
        .header("x-api-key", "nope")
        .send()
        .await
        .expect("GET");
    assert_eq!(bad.status(), 403);

    let ok = http
        .get(mg.url("/x"))
        .header("x-api-key", "k-alice")
        .send()
        .await
        .expect("GET");
    assert_eq!(ok.status(), 200);
    let id = ok.headers()["x-request-id"]
        .to_str()
        .expect("id")
        .to_string();
    assert_eq!(id.len(), 32, "{id}");
    let seen: serde_json::Value =
        serde_json::from_str(&ok.text().await.expect("body")).expect("JSON");
    assert_eq!(seen["headers"]["x-consumer"][0], "alice");
    assert!(
        seen["headers"].get("x-api-key").is_none(),
        "the key is not forwarded"
    );
    assert_eq!(seen["headers"]["x-request-id"][0], id.as_str());

    let passed = http
        .get(mg.url("/x?key=k-bob"))
        .header("x-request-id", "req-123.abc")
        .send()
        .await
        .expect("GET");
    assert_eq!(passed.status(), 200);
    assert_eq!(passed.headers()["x-request-id"], "req-123.abc");
    let seen: serde_json::Value =
        serde_json::from_str(&passed.text().await.expect("body")).expect("JSON");
    assert_eq!(seen["headers"]["x-consumer"][0], "k-bob");

    let internal = http.get(mg.url("/internal/x")).send().await.expect("GET");
    assert_eq!(
        internal.status(),
        403,
        "127.0.0.1 is outside the allow list"
    );

    // A policy that does not exist is a config error with its place.
    let bad_dir = tempfile::tempdir().expect("dir");
    std::fs::write(
        bad_dir.path().join("10-x.toml"),
        "[[route]]\npath = \"/\"\nroot = \".\"\npolicies = [{ use = \"jwt_magic\" }]\n",
    )
    .expect("conf");
    let run = crate::support::moongate_check(bad_dir.path());
    assert_eq!(run.code, Some(1));
    assert!(
        run.stderr.contains("10-x.toml:4:") && run.stderr.contains("unknown policy `jwt_magic`"),
        "{}",
        run.stderr
    );
}

/// ngx.shared.DICT: one store for every worker, bounded with LRU eviction
/// (`forcible`), TTLs, incr with init / init_ttl, lists, errors, and data
/// kept across a reload that leaves the dict unchanged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_dicts() {
    let origin = Origin::named("unused").await;
    let conf_text = |extra: &str| {
        conf(
            origin.addr,
            "",
            &format!(
                r#"[lua.shared_dict]
cache = "16KiB"
{extra}

[[route]]
path_exact = "/put"
lua.content_inline = '''
local d = ngx.shared.cache
ngx.say(tostring(d:set("who", "moon", 0, 7)), "|", tostring(d:add("who", "x")), "|", (select(2, d:add("who", "x"))))
'''

[[route]]
path_exact = "/get"
lua.content_inline = '''
local v, flags = ngx.shared.cache:get("who")
ngx.say(tostring(v), "|", tostring(flags))
'''

[[route]]
path_exact = "/ops"
lua.content_inline = '''
local d = ngx.shared.cache
ngx.say(tostring(d:incr("n", 1)), "|", select(2, d:incr("n", 1)))
ngx.say(d:incr("n", 5, 10), "|", d:incr("n", 1), "|", d:ttl("n"))
d:incr("t", 1, 0, 0.05)
ngx.say(string.format("%.2f", d:ttl("t")))
d:set("bin", "a\0b")
ngx.say(#d:get("bin"), "|", tostring(d:get("missing")))
d:set("short", "s", 0.01)
ngx.sleep(0.03)
local v, _, stale = d:get_stale("short")
ngx.say(tostring(d:get("short")), "|", v, "|", tostring(stale))
ngx.say(d:rpush("l", "a"), d:rpush("l", "b"), d:lpush("l", "z"), "|", d:lpop("l"), d:rpop("l"), "|", d:llen("l"))
d:set("str", "x")
ngx.say(select(2, d:lpush("str", "y")), "|", select(2, d:incr("str", 1)), "|", select(2, d:get("")))
ngx.say(d:capacity(), "|", tostring(d:free_space() < d:capacity()))
local evicted = false
for i = 1, 40 do
    d:get("bin")
    local ok, err, forcible = d:set("big" .. i, string.rep("x", 1024))
    if forcible then evicted = true end
end
ngx.say(tostring(evicted), "|", tostring(d:get("bin") ~= nil), "|", tostring(d:get("big1")))
local ok, err = d:safe_set("huge", string.rep("x", 64 * 1024))
ngx.say(tostring(ok), "|", err)
d:flush_all()
ngx.say(tostring(d:get("bin")), "|", #d:get_keys(0))
'''

[[route]]
path_exact = "/more"
lua.content_inline = '''
local d = ngx.shared.cache
d:flush_all()   -- marks everything expired; flush_expired frees it
d:flush_expired()
ngx.say(tostring(d:safe_add("a", 1)), "|", select(2, d:safe_add("a", 2)), "|", d:get("a"))
ngx.say(tostring(d:replace("nope", 1)), "|", select(2, d:replace("nope", 1)), "|", tostring(d:replace("a", 3)), "|", d:get("a"))
ngx.say(tostring(d:expire("a", 0.01)), "|", select(2, d:expire("gone", 1)))
d:set("b", 1, 0.01)
d:set("c", 1)
ngx.sleep(0.03)
ngx.say(d:flush_expired(), "|", tostring(d:get("c")), "|", #d:get_keys(0))
local t = tonumber(ngx.var.request_time)
ngx.say(tostring(t >= 0.03 and t < 5), "|", tostring(d:delete("c")), "|", tostring(d:get("c")), "|", select(2, d:delete("")))
'''
"#
            ),
        )
    };
    let mg = Moongate::start(&conf_text(""));
    assert_eq!(get(&mg.url("/put")).await.2, "true|false|exists\n");
    // Every request, whichever worker thread serves it, sees the same store.
    for _ in 0..6 {
        assert_eq!(get(&mg.url("/get")).await.2, "moon|7\n");
    }
    let (status, _, body) = get(&mg.url("/ops")).await;
    assert_eq!(status, 200, "{body}");
    let lines: Vec<&str> = body.lines().collect();
    assert_eq!(lines[0], "nil|not found");
    assert_eq!(lines[1], "15|16|0");
    assert_eq!(lines[2], "0.05");
    assert_eq!(lines[3], "3|nil");
    assert_eq!(lines[4], "nil|s|true");
    assert_eq!(lines[5], "123|zb|1");
    assert_eq!(lines[6], "value not a list|not a number|empty key");
    assert_eq!(lines[7], "16384|true");
    assert_eq!(
        lines[8], "true|true|nil",
        "LRU evicts the oldest, keeps the one in use"
    );
    assert_eq!(lines[9], "false|no memory");
    assert_eq!(lines[10], "nil|0");

    // safe_add, replace, expire, flush_expired, delete, $request_time.
    let (status, _, body) = get(&mg.url("/more")).await;
    assert_eq!(status, 200, "{body}");
    let lines: Vec<&str> = body.lines().collect();
    assert_eq!(lines[0], "true|exists|1");
    assert_eq!(lines[1], "false|not found|true|3");
    assert_eq!(lines[2], "true|not found");
    assert_eq!(lines[3], "2|1|1", "the two expired keys are freed, c stays");
    assert_eq!(lines[4], "true|true|nil|empty key");

    // A reload that keeps the dict keeps its data.
    assert_eq!(get(&mg.url("/put")).await.2, "true|false|exists\n");
    let admin = std::fs::read_to_string(mg.conf_dir().join("00-test.toml")).expect("conf");
    mg.write_conf("00-test.toml", &format!("{admin}\n# touched\n"));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !mg
        .log_lines()
        .iter()
        .any(|l| l.contains("configuration reloaded"))
    {
        assert!(std::time::Instant::now() < deadline, "no reload");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(get(&mg.url("/get")).await.2, "moon|7\n");
}

/// The rest of SPEC §4's list: log, worker, config, constants, flush,
/// resp.get_headers, set_method, and the upstream variables seen by the
/// header_filter and log phases.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rest_of_the_ngx_api() {
    let origin = Origin::start(echo).await;
    let mg = Moongate::start(&conf(
        origin.addr,
        r#"lua.access_inline = '''
if ngx.var.arg_m == "put" then ngx.req.set_method(ngx.HTTP_PUT) end
ngx.log(ngx.WARN, "corpus access ", ngx.var.uri, " ", 42)
'''
lua.header_filter_inline = '''
ngx.header["X-Up"] = ngx.var.upstream_addr .. " " .. ngx.var.upstream_status .. " " .. tostring(tonumber(ngx.var.upstream_response_time) >= 0)
local h = ngx.resp.get_headers()
ngx.header["X-Has-CT"] = tostring(h["content-type"] ~= nil)
'''
lua.log_inline = '''
ngx.shared.seen:set("last", ngx.var.uri .. " " .. ngx.var.status .. " " .. ngx.get_phase())
'''"#,
        r#"[lua.shared_dict]
seen = "64KiB"

[[route]]
path_exact = "/misc"
lua.content_inline = '''
ngx.print("a")
ngx.flush(true)
ngx.say("b")
ngx.update_time()
ngx.say(type(ngx.worker.id()), "|", ngx.worker.count(), "|", ngx.worker.pid() > 0)
ngx.say(ngx.config.subsystem, "|", tostring(ngx.config.ngx_lua_version >= 10012), "|", type(ngx.config.prefix()))
ngx.say(ngx.OK, ngx.ERROR, ngx.DECLINED, "|", ngx.HTTP_OK, ngx.HTTP_NOT_FOUND, ngx.HTTP_GET, ngx.HTTP_POST)
ngx.say(tostring(ngx.null == require("cjson").null), "|", ngx.shared.seen:get("last"))
'''
"#,
    ));
    let http = client();
    let r = http.get(mg.url("/thing?m=put")).send().await.expect("GET");
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["x-up"],
        format!("{} 200 true", origin.addr).as_str()
    );
    assert_eq!(r.headers()["x-has-ct"], "true");
    let seen: serde_json::Value =
        serde_json::from_str(&r.text().await.expect("body")).expect("JSON");
    assert_eq!(seen["method"], "PUT", "ngx.req.set_method");
    mg.wait_log("corpus access /thing 42", Duration::from_secs(5));

    // The log phase ran after the response: its note is there for the next request.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let body = loop {
        let (status, _, body) = get(&mg.url("/misc")).await;
        assert_eq!(status, 200, "{body}");
        if body.contains("/thing 200 log") || std::time::Instant::now() > deadline {
            break body;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let lines: Vec<&str> = body.lines().collect();
    assert_eq!(lines[0], "ab");
    assert_eq!(lines[1], "number|2|true");
    assert_eq!(lines[2], "http|true|string");
    assert_eq!(lines[3], "0-1-5|20040428");
    assert_eq!(lines[4], "true|/thing 200 log");
}

//! Light threads (`ngx.thread.spawn` / `wait` / `kill`) as ngx_lua
//! schedules them: `ngx.exit` / `ngx.redirect` in any thread ends the
//! phase at once and aborts the others, thread objects are coroutines
//! (`coroutine.status`), and nested threads and `coroutine.yield` run in
//! ngx_lua's order.

use std::time::{Duration, Instant};

use crate::support::{Moongate, Origin, client};

/// A one-worker server (so `_G` is shared between requests) with an
/// upstream route `/up/` to `origin` and the `routes` given.
fn conf(origin: std::net::SocketAddr, routes: &str) -> String {
    format!(
        r#"[server]
listen = ["127.0.0.1:0"]
workers = 1
access_log = "off"

[upstream.app]
servers = [{{ addr = "{origin}" }}]

{routes}"#
    )
}

async fn get(url: &str) -> (u16, reqwest::header::HeaderMap, String) {
    let r = client().get(url).send().await.expect("GET");
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    (status, headers, r.text().await.expect("body"))
}

/// `ngx.exit(N)` in a user thread while the entry thread (and another
/// thread) sleep: the response is N at once, the entry thread's later
/// output never appears, and the other thread never runs again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_in_a_thread_ends_the_phase_and_aborts_the_others() {
    let origin = Origin::named("origin").await;
    let mg = Moongate::start(&conf(
        origin.addr,
        r#"[[route]]
path_exact = "/content"
lua.content_inline = '''
ngx.say("before")
ngx.thread.spawn(function()
    ngx.sleep(0.05)
    ngx.say("thread")
    ngx.exit(200)
end)
ngx.thread.spawn(function()
    ngx.sleep(0.3)
    _G.leaked = "the other thread ran on"
end)
ngx.sleep(3)
ngx.say("entry thread ran on")
'''

[[route]]
path = "/guarded"
upstream = "app"
lua.access_inline = '''
ngx.thread.spawn(function()
    ngx.sleep(0.05)
    ngx.exit(403)
end)
ngx.sleep(3)
_G.leaked = "the entry thread ran on"
'''

[[route]]
path_exact = "/leaked"
lua.content_inline = 'ngx.say(tostring(_G.leaked))'
"#,
    ));
    let started = Instant::now();
    let (status, _, body) = get(&mg.url("/content")).await;
    assert_eq!((status, body.as_str()), (200, "before\nthread\n"));
    let (status, _, body) = get(&mg.url("/guarded")).await;
    assert_eq!(status, 403, "{body}");
    // Both ended with their thread's exit, not after the 3 s sleeps.
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(origin.hits(), 0);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(get(&mg.url("/leaked")).await.2, "nil\n");
}

/// `ngx.redirect` in a user thread while the entry thread sleeps.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirect_in_a_thread() {
    let origin = Origin::named("origin").await;
    let mg = Moongate::start(&conf(
        origin.addr,
        r#"[[route]]
path = "/old"
upstream = "app"
lua.access_inline = '''
ngx.thread.spawn(function()
    ngx.sleep(0.05)
    ngx.redirect("/new?from=thread", 301)
end)
ngx.sleep(3)
ngx.say("entry thread ran on")
'''
"#,
    ));
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let started = Instant::now();
    let r = client.get(mg.url("/old")).send().await.expect("GET");
    assert_eq!(r.status().as_u16(), 301);
    assert_eq!(r.headers()["location"], "/new?from=thread");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(origin.hits(), 0);
}

/// What `spawn` returns is the thread's coroutine, and `coroutine.status`
/// says what ngx_lua says of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thread_objects_are_coroutines() {
    let origin = Origin::named("origin").await;
    let mg = Moongate::start(&conf(
        origin.addr,
        r#"[[route]]
path_exact = "/status"
lua.content_inline = '''
local co
local t = ngx.thread.spawn(function()
    co = coroutine.running()
    ngx.sleep(0.05)
    return "slept"
end)
-- alive and waiting on a timer: "running", as in ngx_lua
ngx.say(type(t), " ", tostring(t == co), " ", coroutine.status(t))
local z = ngx.thread.spawn(function() return "at once" end)
ngx.say(coroutine.status(z))
local ok, v = ngx.thread.wait(z)
ngx.say(tostring(ok), " ", v, " ", coroutine.status(z))
local n = ngx.thread.spawn(function()
    local inner = coroutine.create(function() ngx.sleep(0.05) end)
    coroutine.resume(inner)
end)
-- resuming a coroutine of its own
ngx.say(coroutine.status(n))
local k = ngx.thread.spawn(function() ngx.sleep(5) end)
ngx.say(tostring(ngx.thread.kill(k)), " ", coroutine.status(k))
ngx.say(tostring(ngx.thread.kill(k)))
ngx.say(coroutine.status(coroutine.create(function() end)))
ngx.say(select(2, ngx.thread.wait(t)), " ", coroutine.status(t))
local e = ngx.thread.spawn(function() error("bad thing") end)
ngx.say(tostring(select(2, ngx.thread.wait(e))))
'''

[[route]]
path_exact = "/not-parent"
lua.content_inline = '''
local t
coroutine.resume(coroutine.create(function()
    t = ngx.thread.spawn(function() ngx.sleep(0.01) end)
end))
ngx.thread.wait(t)
'''
"#,
    ));
    let (status, _, body) = get(&mg.url("/status")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        "thread true running\nzombie\ntrue at once dead\nnormal\n1 dead\nnil\n\
         suspended\nslept dead\nbad thing\n"
    );
    // Only the coroutine that spawned a thread may wait on it.
    let (status, _, _) = get(&mg.url("/not-parent")).await;
    assert_eq!(status, 500);
    mg.wait_log(
        "only the parent coroutine can wait on the thread",
        Duration::from_secs(5),
    );
}

/// ngx_lua's order: `spawn` runs the new thread until it waits, then the
/// threads posted before it (its parent last); `coroutine.yield` in a
/// thread goes to the back of the queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nested_threads_and_yields_run_in_ngx_lua_order() {
    let origin = Origin::named("origin").await;
    let mg = Moongate::start(&conf(
        origin.addr,
        r#"[[route]]
path_exact = "/nested"
lua.content_inline = '''
ngx.say("entry 1")
ngx.thread.spawn(function()
    ngx.say("a 1")
    ngx.thread.spawn(function()
        ngx.say("b 1")
        ngx.sleep(0.01)
        ngx.say("b 2")
    end)
    ngx.say("a 2")
end)
ngx.say("entry 2")
'''

[[route]]
path_exact = "/nested-no-io"
lua.content_inline = '''
ngx.thread.spawn(function()
    ngx.say("a 1")
    ngx.thread.spawn(function() ngx.say("b") end)
    ngx.say("a 2")
end)
ngx.say("entry")
'''

[[route]]
path_exact = "/slices"
lua.content_inline = '''
local function worker(name)
    return function()
        for i = 1, 3 do
            ngx.say(name, " ", i)
            if i < 3 then coroutine.yield(coroutine.running()) end
        end
    end
end
ngx.thread.spawn(worker("f"))
ngx.thread.spawn(worker("g"))
ngx.say("done")
'''
"#,
    ));
    assert_eq!(
        get(&mg.url("/nested")).await.2,
        "entry 1\na 1\nb 1\nentry 2\na 2\nb 2\n"
    );
    assert_eq!(
        get(&mg.url("/nested-no-io")).await.2,
        "a 1\nb\nentry\na 2\n"
    );
    assert_eq!(
        get(&mg.url("/slices")).await.2,
        "f 1\ng 1\nf 2\ndone\ng 2\nf 3\ng 3\n"
    );
}

/// A timer callback's light threads (outside any request) are scheduled
/// as a request's: coroutines, waited for and killed the same way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn light_threads_in_a_timer() {
    let origin = Origin::named("origin").await;
    let mg = Moongate::start(&conf(
        origin.addr,
        r#"[[route]]
path_exact = "/arm"
lua.content_inline = '''
ngx.timer.at(0, function()
    local a = ngx.thread.spawn(function() ngx.sleep(0.02); return "a" end)
    local b = ngx.thread.spawn(function() ngx.sleep(5) end)
    local before = type(a) .. " " .. coroutine.status(a)
    local ok, v = ngx.thread.wait(a)
    _G.timer = table.concat({ before, tostring(ok), v, coroutine.status(a),
        tostring(ngx.thread.kill(b)), coroutine.status(b) }, " ")
end)
-- ngx.exit in a thread ends the callback and its other threads
ngx.timer.at(0, function()
    ngx.thread.spawn(function()
        ngx.sleep(0.02)
        _G.exited = "exited"
        ngx.exit(0)
    end)
    ngx.sleep(0.1)
    _G.exited = "the entry thread ran on"
end)
ngx.say("armed")
'''

[[route]]
path_exact = "/check"
lua.content_inline = 'ngx.sleep(0.3) ngx.say(tostring(_G.timer), "|", tostring(_G.exited))'
"#,
    ));
    assert_eq!(get(&mg.url("/arm")).await.2, "armed\n");
    assert_eq!(
        get(&mg.url("/check")).await.2,
        "thread running true a dead 1 dead|exited\n"
    );
}

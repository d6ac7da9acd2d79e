//! The Lua `balancer` phase on an upstream (`ngx.balancer` per try) and
//! `[lua] init_worker` (once per worker VM, timers stopped on reload),
//! through real requests.

use std::time::{Duration, Instant};

use crate::support::{self, Moongate, Origin, client, text};

async fn get(url: &str, headers: &[(&str, &str)]) -> (u16, reqwest::header::HeaderMap, String) {
    let mut req = client().get(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let r = req.send().await.expect("GET");
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    (status, headers, r.text().await.expect("body"))
}

fn header(h: &reqwest::header::HeaderMap, name: &str) -> String {
    h.get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

/// A loopback port nothing listens on (bound, then closed).
fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_balancer_picks_by_header_and_retries_where_it_says() {
    let a = Origin::named("a").await;
    let b = Origin::named("b").await;
    let dead = closed_port();
    let b_port = b.addr.port();
    let b_addr = b.addr;
    let conf = format!(
        r#"[server]
listen = ["127.0.0.1:0"]
workers = 2
access_log = "off"

[upstream.app]
servers = [{{ addr = "{a}" }}]
lua.balancer_inline = """
local balancer = require "ngx.balancer"
local pick = ngx.var.http_x_pick
ngx.ctx.tries = (ngx.ctx.tries or 0) + 1
ngx.ctx.phase = ngx.get_phase()
if pick == "b" then
    ngx.sleep(0.01)
    assert(balancer.set_current_peer("127.0.0.1", {b_port}))
elseif pick == "retry" then
    local state, status = balancer.get_last_failure()
    if state == nil then
        assert(balancer.set_current_peer("127.0.0.1", {dead}))
        local ok, warn = balancer.set_more_tries(5)
        ngx.ctx.warn = tostring(ok) .. " " .. tostring(warn)
    else
        ngx.ctx.seen = state .. " " .. status
        assert(balancer.set_current_peer("{b_addr}"))
    end
elseif pick == "dead" then
    assert(balancer.set_current_peer("127.0.0.1", {dead}))
elseif pick == "exit" then
    return ngx.exit(503)
elseif pick == "boom" then
    error("boom in the balancer")
end
"""

[[route]]
path = "/seen"
upstream = "app"
lua.header_filter_inline = """
ngx.header["X-Tries"] = ngx.ctx.tries
ngx.header["X-Phase"] = ngx.ctx.phase
ngx.header["X-Seen"] = ngx.ctx.seen
ngx.header["X-Warn"] = ngx.ctx.warn
"""

[[route]]
path = "/"
upstream = "app"
"#,
        a = a.addr
    );
    let mg = Moongate::start(&conf);

    // A route without Lua of its own: the balancer alone reads the header.
    let (status, _, body) = get(&mg.url("/"), &[("X-Pick", "b")]).await;
    assert_eq!((status, body.as_str()), (200, "b"));
    // It names no peer: the upstream's own balancer picks.
    let (status, _, body) = get(&mg.url("/"), &[]).await;
    assert_eq!((status, body.as_str()), (200, "a"));

    let (status, h, body) = get(&mg.url("/seen"), &[("X-Pick", "b")]).await;
    assert_eq!((status, body.as_str()), (200, "b"));
    assert_eq!(header(&h, "x-phase"), "balancer");
    assert_eq!(header(&h, "x-tries"), "1");

    // First try to a closed port, one more try allowed (5 asked, reduced to
    // the upstream's `retries` = 1): the second try sees the failure and
    // goes to B.
    let before = (a.hits(), b.hits());
    let (status, h, body) = get(&mg.url("/seen"), &[("X-Pick", "retry")]).await;
    assert_eq!((status, body.as_str()), (200, "b"));
    assert_eq!(header(&h, "x-tries"), "2");
    assert_eq!(header(&h, "x-seen"), "failed 502");
    assert_eq!(header(&h, "x-warn"), "true reduced tries due to limit");
    assert_eq!((a.hits(), b.hits()), (before.0, before.1 + 1));

    // No set_more_tries: a failed try is the last.
    let (status, _, _) = get(&mg.url("/"), &[("X-Pick", "dead")]).await;
    assert_eq!(status, 502);

    // ngx.exit(status) ends the request with it.
    let (status, _, _) = get(&mg.url("/"), &[("X-Pick", "exit")]).await;
    assert_eq!(status, 503);

    // An error in the handler: 500, logged with the script's place.
    let (status, _, _) = get(&mg.url("/"), &[("X-Pick", "boom")]).await;
    assert_eq!(status, 500);
    let line = mg.wait_log("boom in the balancer", Duration::from_secs(5));
    assert!(line.contains("00-test.toml:"), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_timeouts_applies_to_the_try() {
    let slow = Origin::start(|_req| async {
        tokio::time::sleep(Duration::from_millis(1000)).await;
        text(200, "slow")
    })
    .await;
    let conf = format!(
        r#"[server]
listen = ["127.0.0.1:0"]
access_log = "off"

[upstream.app]
servers = [{{ addr = "{}" }}]
retries = 0
lua.balancer_inline = """
if ngx.var.http_x_short then
    local balancer = require "ngx.balancer"
    assert(balancer.set_timeouts(nil, nil, 0.2))
end
"""

[[route]]
path = "/"
upstream = "app"
"#,
        slow.addr
    );
    let mg = Moongate::start(&conf);
    let started = Instant::now();
    let (status, _, _) = get(&mg.url("/"), &[("X-Short", "1")]).await;
    assert_eq!(status, 504);
    assert!(
        started.elapsed() < Duration::from_millis(900),
        "{:?}",
        started.elapsed()
    );
    // The upstream's own read_timeout otherwise.
    let (status, _, body) = get(&mg.url("/"), &[]).await;
    assert_eq!((status, body.as_str()), (200, "slow"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ngx_balancer_outside_the_balancer_phase() {
    let conf = r#"[server]
listen = ["127.0.0.1:0"]
access_log = "off"

[lua.shared_dict]
d = "1MiB"

[[route]]
path = "/"
lua.content_inline = """
local b = require "ngx.balancer"
local ok1, e1 = b.set_current_peer("127.0.0.1", 80)
local ok2, e2 = b.set_more_tries(1)
local s3, st3, e3 = b.get_last_failure()
local ok4, e4 = b.set_timeouts(1, 1, 1)
ngx.say(tostring(ok1), " ", e1)
ngx.say(tostring(ok2), " ", e2)
ngx.say(tostring(s3), " ", tostring(st3), " ", e3)
ngx.say(tostring(ok4), " ", e4)
local _, bad = pcall(b.set_timeouts, 0)
ngx.say(tostring(bad))
ngx.timer.at(0, function()
    local _, err = pcall(b.set_more_tries, 1)
    ngx.shared.d:set("timer", tostring(err))
end)
ngx.sleep(0.05)
ngx.say(ngx.shared.d:get("timer"))
"""
"#;
    let mg = Moongate::start(conf);
    let (status, _, body) = get(&mg.url("/"), &[]).await;
    assert_eq!(status, 200, "{body}");
    let lines: Vec<&str> = body.lines().collect();
    let disabled = "API disabled in the current context";
    assert_eq!(lines[0], format!("nil {disabled}"));
    assert_eq!(lines[1], format!("nil {disabled}"));
    assert_eq!(lines[2], format!("nil nil {disabled}"));
    assert_eq!(lines[3], format!("false {disabled}"));
    assert!(lines[4].contains("bad connect timeout"), "{body}");
    // The timer's error, said after the pcall's.
    let after = body.split("bad connect timeout").nth(1).unwrap_or_default();
    assert!(after.contains("no request found"), "{body}");
}

/// `[lua] init_worker` for generation `gen`: counts its runs, records its
/// phase, and starts a timer that counts its ticks and its premature stop.
fn init_worker_conf(generation: &str) -> String {
    format!(
        r#"[server]
listen = ["127.0.0.1:0"]
workers = 2
access_log = "off"

[lua]
init_worker_inline = """
local d = ngx.shared.state
d:incr("runs_{generation}", 1, 0)
d:set("phase_{generation}_" .. ngx.worker.id(), ngx.get_phase())
assert(ngx.timer.every(0.05, function(premature)
    if premature then
        d:incr("stopped_{generation}", 1, 0)
        return
    end
    d:incr("ticks_{generation}", 1, 0)
end))
"""

[lua.shared_dict]
state = "1MiB"

[[route]]
path = "/"
lua.content_inline = "ngx.say(tostring(ngx.shared.state:get(ngx.var.arg_k)))"
"#
    )
}

/// The shared dict's value of `key`, as text.
async fn value(mg: &Moongate, key: &str) -> String {
    let (status, _, body) = get(&mg.url(&format!("/?k={key}")), &[]).await;
    assert_eq!(status, 200, "{body}");
    body.trim().to_string()
}

/// Polls `key` until it reads `want`; panics after `timeout`.
async fn wait_value(mg: &Moongate, key: &str, want: &str, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let got = value(mg, key).await;
        if got == want {
            return;
        }
        assert!(Instant::now() < deadline, "{key} = {got}, wanted {want}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn count(mg: &Moongate, key: &str) -> i64 {
    value(mg, key).await.parse().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_worker_runs_once_per_worker_and_its_timers_stop_on_reload() {
    let mg = Moongate::start(&init_worker_conf("g1"));
    // Both workers ran it at start, before any request reached them.
    wait_value(&mg, "runs_g1", "2", Duration::from_secs(5)).await;
    assert_eq!(value(&mg, "phase_g1_0").await, "init_worker");
    assert_eq!(value(&mg, "phase_g1_1").await, "init_worker");
    let ticks = count(&mg, "ticks_g1").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(count(&mg, "ticks_g1").await > ticks);
    assert_eq!(value(&mg, "stopped_g1").await, "nil");

    // A new generation: its init_worker runs on both workers, the old
    // timers fire once prematurely and stop.
    mg.write_conf("00-test.toml", &init_worker_conf("g2"));
    wait_value(&mg, "runs_g2", "2", Duration::from_secs(10)).await;
    wait_value(&mg, "stopped_g1", "2", Duration::from_secs(5)).await;
    let frozen = count(&mg, "ticks_g1").await;
    let ticks = count(&mg, "ticks_g2").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(count(&mg, "ticks_g1").await, frozen);
    assert!(count(&mg, "ticks_g2").await > ticks);
    assert_eq!(value(&mg, "runs_g1").await, "2");
}

#[test]
fn check_rejects_a_bad_balancer_key_at_its_place() {
    let dir = tempfile::tempdir().expect("conf dir");
    let conf = "[server]\nlisten = [\"127.0.0.1:0\"]\n\n[upstream.app]\nservers = [{ addr = \"127.0.0.1:9\" }]\nlua.balancer_inline = \"local x = = 1\"\n";
    std::fs::write(dir.path().join("00-test.toml"), conf).expect("write");
    let run = support::moongate_check(dir.path());
    assert_eq!(run.code, Some(1), "{}{}", run.stdout, run.stderr);
    let at = format!("{}:6:", dir.path().join("00-test.toml").display());
    assert!(run.stderr.contains(&at), "{}", run.stderr);
    assert!(run.stderr.contains("Lua syntax error"), "{}", run.stderr);

    let missing = conf.replace(
        "lua.balancer_inline = \"local x = = 1\"",
        "lua.balancer = \"nope.lua\"",
    );
    std::fs::write(dir.path().join("00-test.toml"), missing).expect("write");
    let run = support::moongate_check(dir.path());
    assert_eq!(run.code, Some(1), "{}{}", run.stdout, run.stderr);
    assert!(run.stderr.contains(&at), "{}", run.stderr);
    assert!(run.stderr.contains("lua.balancer"), "{}", run.stderr);

    let unknown = conf.replace("lua.balancer_inline", "lua.balancr_inline");
    std::fs::write(dir.path().join("00-test.toml"), unknown).expect("write");
    let run = support::moongate_check(dir.path());
    assert_eq!(run.code, Some(1), "{}{}", run.stdout, run.stderr);
    assert!(run.stderr.contains("balancr_inline"), "{}", run.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_outside_the_list_keeps_its_connections_alive() {
    let (listed, _) = support::counting_origin().await;
    let (other, accepted) = support::counting_origin().await;
    let conf = format!(
        r#"[server]
listen = ["127.0.0.1:0"]
workers = 1
access_log = "off"

[upstream.app]
servers = [{{ addr = "{listed}" }}]
lua.balancer_inline = """
assert(require("ngx.balancer").set_current_peer("{ip}", {port}))
"""

[[route]]
path = "/"
upstream = "app"
"#,
        ip = other.ip(),
        port = other.port()
    );
    let mg = Moongate::start(&conf);
    for _ in 0..5 {
        let (status, _, body) = get(&mg.url("/"), &[]).await;
        assert_eq!((status, body.as_str()), (200, "ok"));
    }
    // One worker, sequential requests: one pooled connection by address.
    assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 1);
}

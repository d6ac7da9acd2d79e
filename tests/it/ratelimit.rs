//! Rate-limit zones through real requests: token-bucket accuracy over time,
//! `RateLimit-*` and `Retry-After` values, per-key buckets, `mg.limit.take`
//! with a cost, concurrency zones (released after the response and after a
//! client abort), and buckets kept across a reload.

use std::time::{Duration, Instant};

use crate::support::{Moongate, Origin, app_conf, client, fire, text};

/// A server with one upstream route `/` to `origin` carrying `route_extra`,
/// plus `extra` TOML.
fn conf(origin: std::net::SocketAddr, route_extra: &str, extra: &str) -> String {
    format!(
        "{}\n[[route]]\npath = \"/\"\nupstream = \"app\"\n{route_extra}\n\n{extra}",
        app_conf(origin, 2)
    )
}

fn header(r: &reqwest::Response, name: &str) -> Option<String> {
    r.headers()
        .get(name)
        .map(|v| v.to_str().expect("ascii header").to_string())
}

fn num(r: &reqwest::Response, name: &str) -> u64 {
    header(r, name)
        .unwrap_or_else(|| panic!("no {name} header"))
        .parse()
        .unwrap_or_else(|_| panic!("{name} is not a number"))
}

/// With rate r and burst b, a client firing as fast as it can for 2 s is
/// allowed b + r·t, within 10%; everything else is 429.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_bucket_allows_burst_plus_rate_over_time() {
    let origin = Origin::named("app").await;
    let mg = Moongate::start(&conf(
        origin.addr,
        r#"limit = "per_client""#,
        "[limit.per_client]\nrate = \"40/s\"\nburst = 20\n",
    ));
    let (ok, limited, elapsed) = fire(&[mg.url("/")], None, 4, Duration::from_secs(2)).await;
    let expected = 20.0 + 40.0 * elapsed;
    assert!(
        limited > 0,
        "the clients outran the bucket: nothing was limited"
    );
    assert!(
        (f64::from(ok) - expected).abs() <= expected * 0.10,
        "allowed {ok} in {elapsed:.2}s, expected {expected:.0} ±10% ({limited} limited)"
    );
    assert_eq!(
        origin.hits(),
        ok as usize,
        "denied requests never reach the origin"
    );
}

/// RateLimit-Limit / Remaining / Reset on allowed responses, 429 with
/// Retry-After when empty, one bucket per key, and `headers = false`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_say_what_is_left_and_when_to_retry() {
    let origin = Origin::named("app").await;
    let mg = Moongate::start(&conf(
        origin.addr,
        r#"limit = "per_key"

[[route]]
path = "/quiet/"
upstream = "app"
limit = ["quiet"]"#,
        r#"[limit.per_key]
rate = "6/m"          # one token every 10 s
burst = 2
key = "$http_x_key"

[limit.quiet]
rate = "6/m"
burst = 1
key = "$http_x_key"
status = 503
headers = false
"#,
    ));
    let http = client();
    let get = |key: &'static str, path: &'static str| {
        let http = http.clone();
        let url = mg.url(path);
        async move {
            http.get(url)
                .header("x-key", key)
                .send()
                .await
                .expect("GET")
        }
    };

    let r = get("alice", "/").await;
    assert_eq!(r.status(), 200);
    assert_eq!(num(&r, "ratelimit-limit"), 2);
    assert_eq!(num(&r, "ratelimit-remaining"), 1);
    assert!(
        (9..=10).contains(&num(&r, "ratelimit-reset")),
        "one token to refill: 10 s"
    );
    let r = get("alice", "/").await;
    assert_eq!(r.status(), 200);
    assert_eq!(num(&r, "ratelimit-remaining"), 0);
    assert!(
        (19..=20).contains(&num(&r, "ratelimit-reset")),
        "two tokens to refill: 20 s"
    );
    let r = get("alice", "/").await;
    assert_eq!(r.status(), 429);
    assert!(
        (9..=10).contains(&num(&r, "retry-after")),
        "next token in 10 s"
    );
    assert_eq!(num(&r, "ratelimit-remaining"), 0);

    // Another key has a bucket of its own.
    let r = get("bob", "/").await;
    assert_eq!(r.status(), 200);
    assert_eq!(num(&r, "ratelimit-remaining"), 1);

    // headers = false: no RateLimit-*; a refusal still says when to retry,
    // with the zone's own status.
    let r = get("carol", "/quiet/x").await;
    assert_eq!(r.status(), 200);
    assert!(header(&r, "ratelimit-limit").is_none());
    let r = get("carol", "/quiet/x").await;
    assert_eq!(r.status(), 503);
    assert!(header(&r, "ratelimit-limit").is_none());
    assert!((9..=10).contains(&num(&r, "retry-after")));
    assert_eq!(origin.hits(), 4);
}

/// `mg.limit.take(zone, key, cost)` from Lua: several tokens at once, the
/// refusal with its wait, and clear errors for what can never work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lua_takes_tokens_with_a_cost() {
    let origin = Origin::named("unused").await;
    let mg = Moongate::start(&conf(
        origin.addr,
        "",
        r#"[limit.tokens]
rate = "1/s"
burst = 5
key = "$http_x_key"

[limit.inflight]
kind = "conn"
max = 3

[[route]]
path_exact = "/take"
lua.content_inline = '''
local mg = require "moongate"
local ok, a, b = mg.limit.take(ngx.var.arg_zone or "tokens", ngx.var.arg_key, tonumber(ngx.var.arg_cost))
ngx.say(tostring(ok), "|", tostring(a), "|", tostring(b))
'''

[[route]]
path_exact = "/gate"
limit = "tokens"
lua.access_inline = '''
local ok, remaining = require("moongate").limit.take("tokens", ngx.var.http_x_key, 2)
if not ok then return ngx.exit(ngx.HTTP_TOO_MANY_REQUESTS) end
ngx.header["X-Left"] = remaining
'''
lua.content_inline = 'ngx.say("in")'
"#,
    ));
    let take = |q: &'static str| {
        let url = mg.url(&format!("/take?{q}"));
        async move {
            client()
                .get(url)
                .send()
                .await
                .expect("GET")
                .text()
                .await
                .expect("body")
        }
    };
    assert_eq!(take("key=k&cost=3").await, "true|2|0\n");
    let denied = take("key=k&cost=3").await;
    let parts: Vec<&str> = denied.trim_end().split('|').collect();
    assert_eq!(&parts[..2], ["false", "0"], "{denied}");
    let wait: f64 = parts[2].parse().expect("retry_after is seconds");
    assert!(
        (0.5..=1.01).contains(&wait),
        "one more token comes within 1 s: {wait}"
    );
    assert_eq!(
        take("key=other").await,
        "true|4|0\n",
        "cost defaults to 1, keys are apart"
    );
    let too_much = take("key=k&cost=6").await;
    assert!(
        too_much.starts_with("nil|cost 6 is more than"),
        "{too_much}"
    );
    assert!(too_much.contains("burst 5"), "{too_much}");
    assert!(
        take("zone=nope&key=k")
            .await
            .starts_with("nil|no limit zone named \"nope\"")
    );
    assert!(
        take("zone=inflight&key=k")
            .await
            .contains("counts requests in flight")
    );
    assert!(take("key=k&cost=0").await.starts_with("nil|cost must be"));

    // The access phase runs before the route's own zone, on the same
    // bucket: 2 from Lua, then 1 from the zone, per request.
    let gate = || async {
        client()
            .get(mg.url("/gate"))
            .header("x-key", "g")
            .send()
            .await
            .expect("GET")
    };
    let r = gate().await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-left").as_deref(), Some("3"));
    assert_eq!(
        num(&r, "ratelimit-remaining"),
        2,
        "the route zone took one more"
    );
    let r = gate().await;
    assert_eq!(r.status(), 429, "Lua took the last 2, the zone found none");
}

/// `kind = "conn"`: at most `max` in flight per key; the place is given back
/// when the response is done, and when the client goes away mid-request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrency_zones_count_requests_in_flight() {
    let origin = Origin::start(|req: hyper::Request<hyper::body::Incoming>| async move {
        match req.uri().path() {
            "/slow" => tokio::time::sleep(Duration::from_millis(800)).await,
            // Longer than the test waits: only the client's abort can free
            // a place held by this one.
            "/stuck" => tokio::time::sleep(Duration::from_secs(30)).await,
            _ => {}
        }
        text(200, "done")
    })
    .await;
    let mg = Moongate::start(&conf(
        origin.addr,
        r#"limit = "two""#,
        "[limit.two]\nkind = \"conn\"\nmax = 2\nkey = \"$http_x_key\"\n",
    ));
    let http = client();
    let slow = |key: &'static str| {
        let (http, url) = (http.clone(), mg.url("/slow"));
        tokio::spawn(async move {
            http.get(url)
                .header("x-key", key)
                .send()
                .await
                .expect("GET")
                .status()
                .as_u16()
        })
    };
    let fast = |key: &'static str| {
        let (http, url) = (http.clone(), mg.url("/fast"));
        async move {
            http.get(url)
                .header("x-key", key)
                .send()
                .await
                .expect("GET")
        }
    };
    let a = slow("k");
    let b = slow("k");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let third = fast("k").await;
    assert_eq!(third.status(), 429, "a third request in flight is refused");
    let other = fast("other").await;
    assert_eq!(other.status(), 200, "another key is counted apart");
    assert_eq!(a.await.expect("task"), 200);
    assert_eq!(b.await.expect("task"), 200);
    for _ in 0..3 {
        let r = fast("k").await;
        assert_eq!(r.status(), 200, "places are given back after the responses");
    }

    // A client that gives up mid-request gives its place back too.
    let quitters: Vec<_> = (0..2)
        .map(|_| {
            let (http, url) = (http.clone(), mg.url("/stuck"));
            tokio::spawn(async move {
                let _ = tokio::time::timeout(
                    Duration::from_millis(700),
                    http.get(url).header("x-key", "q").send(),
                )
                .await;
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r = fast("q").await;
    assert_eq!(r.status(), 429, "the stuck requests hold both places");
    for q in quitters {
        q.await.expect("task");
    }
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let r = fast("q").await;
        if r.status() == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "places of aborted requests were not given back"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A request that ends in an upstream error (here: nothing listens) gives
/// its place in a concurrency zone back like any other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrency_places_are_given_back_after_upstream_errors() {
    let dead = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = dead.local_addr().expect("addr");
    drop(dead);
    let mg = Moongate::start(&conf(
        addr,
        r#"limit = "one""#,
        "[limit.one]\nkind = \"conn\"\nmax = 1\n",
    ));
    for _ in 0..3 {
        let r = client().get(mg.url("/")).send().await.expect("GET");
        assert_eq!(
            r.status(),
            502,
            "the upstream is down, the place is free again"
        );
    }
}

/// A reload that leaves a zone unchanged keeps its buckets; a changed rate
/// takes effect at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_keeps_buckets_of_unchanged_zones() {
    let origin = Origin::named("app").await;
    let zone = |rate: &str| format!("[limit.z]\nrate = \"{rate}\"\nburst = 2\n");
    let mg = Moongate::start(&conf(origin.addr, r#"limit = "z""#, &zone("1/m")));
    let status = || async {
        client()
            .get(mg.url("/"))
            .send()
            .await
            .expect("GET")
            .status()
            .as_u16()
    };
    assert_eq!(status().await, 200);
    assert_eq!(status().await, 200);
    assert_eq!(status().await, 429);

    let reloaded = |n: usize| {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let count = mg
                .log_lines()
                .iter()
                .filter(|l| l.contains("configuration reloaded"))
                .count();
            if count >= n {
                return;
            }
            assert!(Instant::now() < deadline, "no reload");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    mg.write_conf(
        "00-test.toml",
        &format!(
            "{}\n# touched\n",
            conf(origin.addr, r#"limit = "z""#, &zone("1/m"))
        ),
    );
    reloaded(1);
    assert_eq!(
        status().await,
        429,
        "the unchanged zone kept its empty bucket"
    );

    mg.write_conf(
        "00-test.toml",
        &conf(origin.addr, r#"limit = "z""#, &zone("2/m")),
    );
    reloaded(2);
    assert_eq!(
        status().await,
        200,
        "a changed zone starts with a full bucket"
    );
}

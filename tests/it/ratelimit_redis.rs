//! Cluster-wide rate limits (`scope = "redis"`) against a real
//! redis-server on loopback: two moongate processes share one bucket per
//! key; with Redis killed, each `on_redis_error` does what it says and no
//! request gets a 5xx; Redis restarted on the same port is used again;
//! `mg.limit.take` on a redis zone from Lua. Against a real 3-master
//! Redis Cluster: two nodes given different seed nodes share one bucket
//! per key, and the keys spread over the masters by their hash tags.

use std::time::{Duration, Instant};

use crate::support::{Moongate, Origin, Redis, RedisCluster, client, fire};

/// A server with `[redis]` at `redis`, an admin listener, and `extra`.
fn conf(redis: &Redis, timeout: &str, extra: &str) -> String {
    conf_at(&format!("url = \"{}\"", redis.url()), timeout, extra)
}

/// A server with `[redis]` `target` (its `url = ...` or `cluster = [...]`
/// line), an admin listener, and `extra`.
fn conf_at(target: &str, timeout: &str, extra: &str) -> String {
    format!(
        r#"[server]
listen = ["127.0.0.1:0"]
workers = 2
access_log = "off"

[admin]
listen = "127.0.0.1:0"

[redis]
{target}
timeout = "{timeout}"

{extra}"#
    )
}

fn route(origin: std::net::SocketAddr, path: &str, zone: &str) -> String {
    format!(
        "[upstream.app_{zone}]\nservers = [{{ addr = \"{origin}\" }}]\n\n[[route]]\npath = \"{path}\"\nupstream = \"app_{zone}\"\nlimit = \"{zone}\"\n\n"
    )
}

/// The zone [`share_one_bucket`] fills: 10/s, burst 20, keyed by `x-key`.
const SHARED_ZONE: &str =
    "[limit.shared]\nrate = \"10/s\"\nburst = 20\nkey = \"$http_x_key\"\nscope = \"redis\"\n";

/// Two nodes started from `conf_a` and `conf_b` (each with
/// [`SHARED_ZONE`] on "/"), a client alternating between them as fast as
/// it can for 2 s with one key: together they allow one bucket's worth,
/// b + r·t (±10%), not twice that; both answered from Redis all along.
/// Returns the two nodes.
async fn share_one_bucket(conf_a: &str, conf_b: &str) -> (Moongate, Moongate) {
    let (a, b) = (Moongate::start(conf_a), Moongate::start(conf_b));
    let urls = [a.url("/"), b.url("/")];
    let (ok, limited, elapsed) =
        fire(&urls, Some("shared-client"), 2, Duration::from_secs(2)).await;
    let expected = 20.0 + 10.0 * elapsed;
    assert!(limited > 0, "nothing was limited");
    assert!(
        (f64::from(ok) - expected).abs() <= expected * 0.10,
        "two nodes allowed {ok} in {elapsed:.2}s, one bucket is {expected:.0} ±10% ({limited} limited)"
    );
    // Both nodes answered from Redis all along.
    for mg in [&a, &b] {
        let st = mg.status().await;
        let z = &st["limits"]["shared"];
        assert_eq!(z["scope"], "redis", "{st}");
        assert_eq!(z["redis"]["state"], "ok", "{st}");
        assert_eq!(z["redis"]["fallbacks"], 0, "{st}");
    }
    (a, b)
}

/// Two nodes on one Redis, a client alternating between them as fast as
/// it can for 2 s: together they allow one bucket's worth, b + r·t (±10%),
/// not twice that.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_share_one_bucket() {
    let redis = Redis::start();
    let origin = Origin::named("app").await;
    // A generous timeout: this test is about sharing, not about fallbacks
    // on a busy test machine.
    let text = conf(
        &redis,
        "2s",
        &format!("{}{SHARED_ZONE}", route(origin.addr, "/", "shared")),
    );
    share_one_bucket(&text, &text).await;
    assert_eq!(
        redis
            .command(&["EXISTS", "mg:{shared:shared-client}"])
            .as_deref(),
        Some(":1"),
        "the bucket is a hash-tagged key in Redis"
    );
    let ttl: i64 = redis
        .command(&["PTTL", "mg:{shared:shared-client}"])
        .and_then(|l| l.trim_start_matches(':').parse().ok())
        .expect("PTTL");
    assert!(
        (1..=2_100).contains(&ttl),
        "the key expires when the bucket is full again (≤ 2 s): {ttl} ms"
    );
}

/// Redis killed mid-test: no 5xx; "local" limits with the node's own
/// bucket, "allow" allows, "deny" answers the zone's status; each zone
/// logs the failure once. Redis restarted on the same port: the zones go
/// back to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_falls_back_per_zone_and_recovers() {
    let mut redis = Redis::start();
    let origin = Origin::named("app").await;
    let zone = |name: &str, on_error: &str| {
        format!(
            "[limit.{name}]\nrate = \"1/m\"\nburst = 3\nkey = \"$http_x_key\"\nscope = \"redis\"\non_redis_error = \"{on_error}\"\nstatus = 429\n\n"
        )
    };
    let extra = [
        route(origin.addr, "/local", "z_local"),
        route(origin.addr, "/allow", "z_allow"),
        route(origin.addr, "/deny", "z_deny"),
        zone("z_local", "local"),
        zone("z_allow", "allow"),
        zone("z_deny", "deny"),
    ]
    .concat();
    let mg = Moongate::start(&conf(&redis, "200ms", &extra));
    let http = client();
    let get = |path: &str, key: &str| {
        let req = http.get(mg.url(path)).header("x-key", key.to_owned());
        async move {
            let r = req.send().await.expect("GET");
            let status = r.status().as_u16();
            assert!(
                status == 200 || status == 429,
                "only 200 or 429, never a 5xx: got {status}"
            );
            (status, r.headers().get("retry-after").cloned())
        }
    };
    let statuses = |n: usize, path: &'static str, key: &'static str| {
        let get = &get;
        async move {
            let mut out = Vec::new();
            for _ in 0..n {
                out.push(get(path, key).await.0);
            }
            out
        }
    };

    // Redis up: every zone takes from Redis.
    assert_eq!(statuses(4, "/local", "k1").await, [200, 200, 200, 429]);
    assert_eq!(statuses(4, "/deny", "k1").await, [200, 200, 200, 429]);
    let st = mg.status().await;
    assert_eq!(st["limits"]["z_local"]["redis"]["state"], "ok", "{st}");

    redis.kill();
    // "allow": everything passes while Redis is away.
    assert_eq!(statuses(5, "/allow", "k1").await, [200; 5]);
    // "deny": the zone's status, with a Retry-After.
    let (status, retry) = get("/deny", "k2").await;
    assert_eq!(status, 429);
    assert!(retry.is_some(), "a fallback refusal says when to retry");
    assert_eq!(statuses(3, "/deny", "k2").await, [429; 3]);
    // "local": this node's bucket, same rate and burst (k1's local bucket
    // is full: it was never used while Redis answered).
    assert_eq!(statuses(4, "/local", "k1").await, [200, 200, 200, 429]);
    // After a probe interval, still failing, still limited, still no 5xx.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(statuses(2, "/local", "k1").await, [429, 429]);
    assert_eq!(statuses(2, "/allow", "k1").await, [200, 200]);

    let st = mg.status().await;
    for z in ["z_local", "z_allow", "z_deny"] {
        let r = &st["limits"][z]["redis"];
        assert_eq!(r["state"], "failing", "{z}: {st}");
        assert!(r["fallbacks"].as_u64().unwrap_or(0) >= 2, "{z}: {st}");
        assert!(r["last_error"].is_string(), "{z}: {st}");
        let logged = mg
            .log_lines()
            .iter()
            .filter(|l| l.contains("redis unreachable") && l.contains(&format!("zone={z}")))
            .count();
        assert_eq!(logged, 1, "{z}: the failure is logged once");
    }

    // Back on the same port (empty): the zones return to Redis.
    redis.restart();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        // "deny" answers 200 only when Redis does.
        if get("/deny", "k3").await.0 == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the deny zone did not go back to Redis within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    mg.wait_log("limit zone back on redis", Duration::from_secs(5));
    // Every zone recovers on its next takes (a probe each PROBE_EVERY).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        get("/local", "k4").await;
        get("/allow", "k4").await;
        let st = mg.status().await;
        let ok = ["z_local", "z_allow", "z_deny"]
            .iter()
            .all(|z| st["limits"][z]["redis"]["state"] == "ok");
        if ok {
            break;
        }
        assert!(Instant::now() < deadline, "zones still failing: {st}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        redis.command(&["EXISTS", "mg:{z_local:k4}"]).as_deref(),
        Some(":1"),
        "takes reach Redis again"
    );
}

/// `mg.limit.take` on a redis zone: a coroutine that yields while Redis
/// answers; costs, refusals and the too-costly error as for local zones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lua_takes_from_a_redis_zone() {
    let redis = Redis::start();
    let mg = Moongate::start(&conf(
        &redis,
        "2s",
        r#"[limit.lz]
rate = "1/m"
burst = 3
scope = "redis"

[limit.near]
rate = "1/m"
burst = 3

[[route]]
path_exact = "/take"
lua.content_inline = '''
local mg = require "moongate"
local out = {}
for _, zone in ipairs({ "lz", "near" }) do
    local a, ra = mg.limit.take(zone, "k", 2)
    local b, rb, wait = mg.limit.take(zone, "k", 2)
    local c, err = mg.limit.take(zone, "k", 4)
    out[#out + 1] = table.concat({ zone, tostring(a), ra, tostring(b), rb,
        tostring(wait > 50 and wait <= 60), tostring(c), err }, ",")
end
ngx.say(table.concat(out, "\n"))
'''
"#,
    ));
    let body = client()
        .get(mg.url("/take"))
        .send()
        .await
        .expect("GET")
        .text()
        .await
        .expect("body");
    assert_eq!(
        body,
        "lz,true,1,false,0,true,nil,cost 4 is more than limit zone \"lz\" ever allows at once (burst 3)\n\
         near,true,1,false,0,true,nil,cost 4 is more than limit zone \"near\" ever allows at once (burst 3)\n"
    );
    assert_eq!(
        redis.command(&["EXISTS", "mg:{lz:k}"]).as_deref(),
        Some(":1"),
        "the take went to Redis"
    );
    assert_eq!(
        redis.command(&["EXISTS", "mg:{near:k}"]).as_deref(),
        Some(":0")
    );
}

/// A Redis that stops answering (but keeps its connections) is cut off by
/// the per-call timeout: the request is answered by the fallback, late by
/// at most about the timeout, and the zone goes back to Redis when it
/// answers again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_redis_times_out_into_the_fallback() {
    let redis = Redis::start();
    let origin = Origin::named("app").await;
    let extra = format!(
        "{}[limit.slow]\nrate = \"1/m\"\nburst = 2\nkey = \"$http_x_key\"\nscope = \"redis\"\non_redis_error = \"allow\"\n",
        route(origin.addr, "/", "slow")
    );
    let mg = Moongate::start(&conf(&redis, "100ms", &extra));
    let http = client();
    let get = || async {
        let r = http
            .get(mg.url("/"))
            .header("x-key", "k")
            .send()
            .await
            .expect("GET");
        r.status().as_u16()
    };
    assert_eq!([get().await, get().await, get().await], [200, 200, 429]);

    redis.set_running(false);
    let started = Instant::now();
    assert_eq!(get().await, 200, "allowed by the fallback");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "the take gave up after its timeout: {:?}",
        started.elapsed()
    );
    let st = mg.status().await;
    let z = &st["limits"]["slow"]["redis"];
    assert_eq!(z["state"], "failing", "{st}");
    assert!(
        z["last_error"]
            .as_str()
            .unwrap_or("")
            .contains("no answer within"),
        "{st}"
    );
    mg.wait_log("redis unreachable", Duration::from_secs(2));

    redis.set_running(true);
    let deadline = Instant::now() + Duration::from_secs(10);
    // Back on Redis, where the bucket is still empty: 429 again.
    while get().await != 429 {
        assert!(
            Instant::now() < deadline,
            "the zone did not go back to Redis within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    mg.wait_log("limit zone back on redis", Duration::from_secs(5));
}

/// A real 3-master Redis Cluster: two nodes, each given a different seed
/// node, share one bucket per key (b + r·t ±10% together, as on one
/// server), and the buckets of different keys land on different masters
/// by their hash tags, each on the master that owns its slot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_share_one_bucket_on_a_redis_cluster() {
    let cluster = RedisCluster::start();
    let urls = cluster.urls();
    let origin = Origin::named("app").await;
    // Long-lived buckets (1/m: a key lives a minute) to count keys by node.
    let extra = format!(
        "{}{}{SHARED_ZONE}[limit.spread]\nrate = \"1/m\"\nburst = 5\nkey = \"$http_x_key\"\nscope = \"redis\"\n",
        route(origin.addr, "/", "shared"),
        route(origin.addr, "/spread", "spread"),
    );
    let seeded = |seed: &str| conf_at(&format!("cluster = [\"{seed}\"]"), "2s", &extra);
    let (a, b) = share_one_bucket(&seeded(&urls[0]), &seeded(&urls[1])).await;

    let http = client();
    let keys: Vec<String> = (0..12).map(|i| format!("user-{i}")).collect();
    for (i, key) in keys.iter().enumerate() {
        let mg = if i % 2 == 0 { &a } else { &b };
        for expected in [200, 200, 200, 200, 200, 429] {
            let status = http
                .get(mg.url("/spread"))
                .header("x-key", key.as_str())
                .send()
                .await
                .expect("GET")
                .status()
                .as_u16();
            assert_eq!(status, expected, "key {key}: one bucket of 5 per key");
        }
    }
    for key in &keys {
        let bucket = format!("mg:{{spread:{key}}}");
        assert_eq!(
            cluster.owner(&bucket).integer(&["EXISTS", &bucket]),
            Some(1),
            "{bucket} is on the master that owns its slot"
        );
    }
    let sizes = cluster.dbsizes();
    assert!(
        sizes.iter().filter(|&&n| n > 0).count() >= 2,
        "the buckets spread over the masters: keys per node {sizes:?}"
    );
    assert!(
        sizes.iter().sum::<i64>() >= 12,
        "every bucket is in the cluster: keys per node {sizes:?}"
    );
    for mg in [&a, &b] {
        let st = mg.status().await;
        let z = &st["limits"]["spread"]["redis"];
        assert_eq!(z["state"], "ok", "{st}");
        assert_eq!(z["fallbacks"], 0, "{st}");
    }

    // The whole cluster stops answering: the take times out into the
    // zone's local bucket (full: 200), and the zone goes back to the
    // cluster once it answers again (the key's bucket there is empty).
    let get = |key: &'static str| {
        let req = http.get(a.url("/spread")).header("x-key", key);
        async move { req.send().await.expect("GET").status().as_u16() }
    };
    for node in &cluster.nodes {
        node.set_running(false);
    }
    assert_eq!(get("user-0").await, 200, "the local fallback allows");
    let st = a.status().await;
    assert_eq!(st["limits"]["spread"]["redis"]["state"], "failing", "{st}");
    for node in &cluster.nodes {
        node.set_running(true);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while get("user-0").await != 429 {
        assert!(
            Instant::now() < deadline,
            "the zone did not go back to the cluster within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    a.wait_log("limit zone back on redis", Duration::from_secs(5));
}

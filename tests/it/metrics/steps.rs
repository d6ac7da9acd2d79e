//! The families of the request's steps through real requests: a cache
//! zone's MISS then HIT (stores, entries and bytes per tier, the disk
//! tier's error counts), a rate-limit zone's allowed and limited
//! requests and a Redis zone's fallbacks, Lua errors, budget overruns and
//! phase durations by script and phase.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::Response;

use super::{REQUESTS, SERVER, fresh_client, scrape};
use crate::support::{Moongate, Origin, cache_status};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cache_miss_then_hit_is_counted_with_the_store_and_the_tiers() {
    let origin = Origin::start(|_req| async move {
        Response::builder()
            .status(200)
            .header("cache-control", "max-age=60")
            .body(Full::new(Bytes::from_static(b"cacheable")))
            .expect("reply")
    })
    .await;
    let disk = tempfile::tempdir().unwrap();
    let mg = Moongate::start(&format!(
        "{SERVER}[upstream.app]\nservers = [{{ addr = \"{}\" }}]\n\n\
         [[route]]\nname = \"cached\"\npath = \"/\"\nupstream = \"app\"\ncache = \"pages\"\n\n\
         [cache.pages]\nmemory = \"1MiB\"\ndisk = {{ path = \"{}\", size = \"4MiB\" }}\n",
        origin.addr,
        disk.path().display()
    ));
    let http = fresh_client();
    let before = scrape(&mg).await;
    for want in ["MISS", "HIT", "HIT"] {
        let resp = http.get(mg.url("/page")).send().await.unwrap();
        assert_eq!(cache_status(&resp), want);
        assert_eq!(resp.text().await.unwrap(), "cacheable");
    }
    let no_store = http
        .get(mg.url("/page"))
        .header("cache-control", "no-store");
    let resp = no_store.send().await.unwrap();
    assert_eq!(
        cache_status(&resp),
        "BYPASS",
        "a request asking for no store"
    );
    assert_eq!(origin.hits(), 2);

    // The disk tier is written off the request path: wait for its entry.
    let deadline = Instant::now() + Duration::from_secs(5);
    let disk_entries = [("zone", "pages"), ("tier", "disk")];
    let after = loop {
        let m = scrape(&mg).await;
        if m.get("moongate_cache_entries", &disk_entries) >= 1.0 {
            break m;
        }
        assert!(Instant::now() < deadline, "no disk entry:\n{}", m.text);
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let lookups = |status: &str| {
        after.since(
            &before,
            "moongate_cache_lookups_total",
            &[("zone", "pages"), ("cache_status", status)],
        )
    };
    assert_eq!(lookups("MISS"), 1.0);
    assert_eq!(lookups("HIT"), 2.0);
    assert_eq!(lookups("BYPASS"), 1.0);
    assert_eq!(
        lookups("STALE") + lookups("EXPIRED") + lookups("UPDATING"),
        0.0
    );
    let zone = [("zone", "pages")];
    assert_eq!(
        after.since(&before, "moongate_cache_stores_total", &zone),
        1.0
    );
    // Every X-Cache-Status value has its series, counted or not.
    for status in [
        "HIT",
        "MISS",
        "EXPIRED",
        "STALE",
        "UPDATING",
        "REVALIDATED",
        "BYPASS",
    ] {
        let l = [("zone", "pages"), ("cache_status", status)];
        assert!(after.has("moongate_cache_lookups_total", &l), "{status}");
    }
    let memory = [("zone", "pages"), ("tier", "memory")];
    assert_eq!(after.get("moongate_cache_entries", &memory), 1.0);
    assert!(after.get("moongate_cache_bytes", &memory) >= "cacheable".len() as f64);
    assert_eq!(
        after.get("moongate_cache_capacity_bytes", &memory),
        1024.0 * 1024.0
    );
    assert!(after.get("moongate_cache_bytes", &disk_entries) > 0.0);
    for kind in ["write", "corrupt", "dropped"] {
        let l = [("zone", "pages"), ("kind", kind)];
        assert!(after.has("moongate_cache_disk_errors_total", &l), "{kind}");
        assert_eq!(after.get("moongate_cache_disk_errors_total", &l), 0.0);
    }
    // The route's requests are counted as any others.
    assert_eq!(after.since(&before, REQUESTS, &[("route", "cached")]), 4.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_limit_zone_counts_allowed_and_limited_requests_and_redis_fallbacks() {
    let origin = Origin::named("app").await;
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let mg = Moongate::start(&format!(
        "{SERVER}[redis]\nurl = \"redis://{closed}\"\ntimeout = \"200ms\"\n\n\
         [upstream.app]\nservers = [{{ addr = \"{}\" }}]\n\n\
         [[route]]\npath = \"/tight\"\nupstream = \"app\"\nlimit = \"tight\"\n\n\
         [[route]]\npath = \"/both\"\nupstream = \"app\"\nlimit = [\"wide\", \"tight\"]\n\n\
         [[route]]\npath = \"/shared\"\nupstream = \"app\"\nlimit = \"shared\"\n\n\
         [limit.tight]\nrate = \"1/m\"\nburst = 1\n\n\
         [limit.wide]\nrate = \"100/s\"\nburst = 100\n\n\
         [limit.shared]\nrate = \"100/s\"\nburst = 100\nscope = \"redis\"\non_redis_error = \"local\"\n",
        origin.addr
    ));
    let http = fresh_client();
    let before = scrape(&mg).await;
    let status = |path: &'static str| {
        let req = http.get(mg.url(path));
        async move { req.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(status("/tight").await, 200);
    assert_eq!(status("/tight").await, 429);
    // `wide` lets it through, then `tight` (empty) refuses it.
    assert_eq!(status("/both").await, 429);
    // Redis does not answer: the local fallback allows.
    assert_eq!(status("/shared").await, 200);
    assert_eq!(status("/shared").await, 200);

    let after = scrape(&mg).await;
    let zone = |zone: &str, result: &str| {
        after.since(
            &before,
            "moongate_limit_requests_total",
            &[("zone", zone), ("result", result)],
        )
    };
    assert_eq!(zone("tight", "allowed"), 1.0, "{}", after.text);
    assert_eq!(zone("tight", "limited"), 2.0);
    assert_eq!(zone("wide", "allowed"), 1.0);
    assert_eq!(zone("wide", "limited"), 0.0);
    assert_eq!(zone("shared", "allowed"), 2.0);
    assert_eq!(
        after.since(
            &before,
            "moongate_limit_redis_fallbacks_total",
            &[("zone", "shared")]
        ),
        2.0
    );
    assert_eq!(
        after.get("moongate_limit_redis_up", &[("zone", "shared")]),
        0.0
    );
    assert!(
        !after.has("moongate_limit_redis_up", &[("zone", "tight")]),
        "a local zone has no Redis"
    );
    assert_eq!(
        after.since(&before, REQUESTS, &[("status_class", "4xx")]),
        2.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lua_errors_overruns_and_phase_durations_are_counted_per_script_and_phase() {
    let scripts = tempfile::tempdir().unwrap();
    let failing = scripts.path().join("failing.lua");
    std::fs::write(&failing, "if ngx.var.arg_fail then error('boom') end\n").unwrap();
    let conf = format!(
        "{SERVER}[lua]\ntime_budget = \"30ms\"\n\n\
         [[route]]\npath = \"/checked\"\nlua.access = \"{}\"\nlua.content_inline = \"ngx.say('ok')\"\n\n\
         [[route]]\npath = \"/spin\"\nlua.content_inline = \"while true do end\"\n",
        failing.display()
    );
    // The inline scripts are named by their conf.d file and line.
    let line_of = |needle: &str| {
        let at = conf.find(needle).unwrap();
        conf[..at].lines().count() + 1
    };
    let content = format!("00-test.toml:{}", line_of("lua.content_inline = \"ngx.say"));
    let spin = format!("00-test.toml:{}", line_of("lua.content_inline = \"while"));
    let mg = Moongate::start(&conf);
    let http = fresh_client();
    let before = scrape(&mg).await;
    for (path, want) in [
        ("/checked", 200),
        ("/checked?fail=1", 500),
        ("/checked", 200),
        ("/spin", 500),
    ] {
        let resp = http.get(mg.url(path)).send().await.unwrap();
        assert_eq!(resp.status(), want, "{path}");
    }

    let after = scrape(&mg).await;
    // Labels end with the file (the conf.d path is the test's temp dir).
    let series = |name: &str, script: &str, phase: &str| -> f64 {
        after
            .samples
            .iter()
            .filter(|(k, _)| {
                k.name == name && k.labels.get("phase").map(String::as_str) == Some(phase)
            })
            .filter(|(k, _)| k.labels.get("script").is_some_and(|s| s.ends_with(script)))
            .map(|(k, v)| v - before.samples.get(k).copied().unwrap_or(0.0))
            .sum()
    };
    let errors = "moongate_lua_errors_total";
    let overruns = "moongate_lua_budget_overruns_total";
    let runs = "moongate_lua_phase_duration_seconds_count";
    assert_eq!(
        series(errors, "/failing.lua", "access"),
        1.0,
        "{}",
        after.text
    );
    assert_eq!(series(runs, "/failing.lua", "access"), 3.0);
    assert_eq!(series(overruns, "/failing.lua", "access"), 0.0);
    assert_eq!(
        series(runs, &content, "content"),
        2.0,
        "not after a failed access"
    );
    assert_eq!(series(errors, &content, "content"), 0.0);
    assert_eq!(series(overruns, &spin, "content"), 1.0);
    assert_eq!(
        series(errors, &spin, "content"),
        0.0,
        "an overrun is not an error"
    );
    // Stopped at its 30 ms budget: past the 25 ms bound, within +Inf.
    let spun = series("moongate_lua_phase_duration_seconds_sum", &spin, "content");
    assert!(spun >= 0.03, "{spun}");
    let bucket = |le: &str| {
        after
            .samples
            .iter()
            .filter(|(k, _)| k.name == "moongate_lua_phase_duration_seconds_bucket")
            .filter(|(k, _)| k.labels.get("le").map(String::as_str) == Some(le))
            .filter(|(k, _)| k.labels.get("script").is_some_and(|s| s.ends_with(&spin)))
            .map(|(_, v)| *v)
            .sum::<f64>()
    };
    assert_eq!((bucket("0.025"), bucket("+Inf")), (0.0, 1.0));
}

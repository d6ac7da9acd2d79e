//! The access log: one JSON line per request with SPEC §8's fields, written
//! to the configured sink, switched by a reload. Each field's value and
//! `access_log_fields` are tested in `access_log_fields.rs`.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::{Moongate, Origin, client};

/// Every field, in the default order.
pub const DEFAULT_ORDER: [&str; 20] = [
    "timestamp",
    "client",
    "method",
    "uri",
    "host",
    "protocol",
    "status",
    "bytes",
    "bytes_received",
    "request_time",
    "upstream_addr",
    "upstream_status",
    "upstream_connect_time",
    "upstream_time",
    "cache_status",
    "route",
    "request_id",
    "user_agent",
    "referer",
    "aborted",
];

fn conf(origin: std::net::SocketAddr, log: &str) -> String {
    format!(
        r#"
[server]
listen = ["127.0.0.1:0"]
workers = 2
access_log = "{log}"

[admin]
listen = "127.0.0.1:0"

[upstream.app]
servers = [{{ addr = "{origin}" }}]

[[route]]
path = "/app/"
upstream = "app"
"#
    )
}

/// The JSON lines in `path` once there are at least `n` (bounded wait: the
/// writer is non-blocking).
pub fn lines(path: &Path, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let parsed: Vec<Value> = lines_text(path)
            .iter()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l:?}: {e}")))
            .collect();
        if parsed.len() >= n || Instant::now() > deadline {
            return parsed;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The lines of `path` as written.
pub fn lines_text(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines().map(str::to_owned).collect()
}

/// The keys of a JSON object line in the order written (serde_json's
/// `Value` sorts them).
pub fn keys(line: &str) -> Vec<String> {
    struct Keys(Vec<String>);
    impl<'de> serde::Deserialize<'de> for Keys {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Keys, D::Error> {
            struct Visit;
            impl<'de> serde::de::Visitor<'de> for Visit {
                type Value = Keys;
                fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                    f.write_str("a JSON object")
                }
                fn visit_map<A: serde::de::MapAccess<'de>>(
                    self,
                    mut map: A,
                ) -> Result<Keys, A::Error> {
                    let mut keys = Vec::new();
                    while let Some((k, _)) = map.next_entry::<String, serde::de::IgnoredAny>()? {
                        keys.push(k);
                    }
                    Ok(Keys(keys))
                }
            }
            d.deserialize_map(Visit)
        }
    }
    serde_json::from_str::<Keys>(line)
        .unwrap_or_else(|e| panic!("not a JSON object: {line:?}: {e}"))
        .0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_are_logged_as_json_lines_with_the_spec_fields() {
    let origin = Origin::named("app").await;
    let dir = tempfile::tempdir().expect("temp dir");
    let log = dir.path().join("access.log");
    let mg = Moongate::start(&conf(origin.addr, &log.display().to_string()));
    let http = client();

    let ok = http
        .get(mg.url("/app/x?y=1"))
        .send()
        .await
        .expect("request");
    assert_eq!(ok.status(), 200);
    assert_eq!(ok.text().await.expect("body"), "app");
    let missing = http.post(mg.url("/nowhere")).send().await.expect("request");
    assert_eq!(missing.status(), 404);

    let entries = lines(&log, 2);
    assert_eq!(entries.len(), 2, "one line per request: {entries:?}");
    let proxied = &entries[0];
    assert_eq!(proxied["client"], "127.0.0.1");
    assert_eq!(proxied["method"], "GET");
    assert_eq!(proxied["uri"], "/app/x?y=1");
    assert_eq!(proxied["status"], 200);
    assert_eq!(proxied["bytes"], 3);
    assert_eq!(proxied["upstream_addr"], origin.addr.to_string());
    assert!(proxied["request_time"].as_f64().is_some_and(|t| t >= 0.0));
    assert!(proxied["upstream_time"].as_f64().is_some_and(|t| t >= 0.0));
    assert!(
        proxied["route"]
            .as_str()
            .is_some_and(|r| r.ends_with("00-test.toml:13")),
        "{proxied}"
    );
    assert!(proxied.get("cache_status").is_some());
    assert!(proxied.get("timestamp").is_some());
    assert_eq!(proxied["aborted"], false);

    let not_found = &entries[1];
    assert_eq!(not_found["method"], "POST");
    assert_eq!(not_found["status"], 404);
    // Every chosen key is on every line; a value the request lacks is null.
    assert_eq!(not_found["upstream_addr"], serde_json::Value::Null);
    assert_eq!(not_found["route"], serde_json::Value::Null);
    assert_eq!(keys(&lines_text(&log)[1]), DEFAULT_ORDER);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_turns_the_log_off_and_on() {
    let origin = Origin::named("app").await;
    let dir = tempfile::tempdir().expect("temp dir");
    let log = dir.path().join("access.log");
    let mg = Moongate::start(&conf(origin.addr, &log.display().to_string()));
    let http = client();
    let reload = || async {
        let r = http
            .post(mg.admin_url("/reload"))
            .send()
            .await
            .expect("reload");
        assert_eq!(r.status(), 200, "{:?}", r.text().await);
    };

    http.get(mg.url("/app/one")).send().await.expect("request");
    assert_eq!(lines(&log, 1).len(), 1);

    mg.write_conf("00-test.toml", &conf(origin.addr, "off"));
    reload().await;
    http.get(mg.url("/app/two")).send().await.expect("request");
    http.get(mg.url("/app/three"))
        .send()
        .await
        .expect("request");

    mg.write_conf(
        "00-test.toml",
        &conf(origin.addr, &log.display().to_string()),
    );
    reload().await;
    http.get(mg.url("/app/four")).send().await.expect("request");

    let uris: Vec<String> = lines(&log, 2)
        .iter()
        .map(|e| e["uri"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(
        uris,
        ["/app/one", "/app/four"],
        "requests while off are not logged"
    );
}

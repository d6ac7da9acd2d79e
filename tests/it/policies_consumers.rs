//! Consumers through the real server: `[consumer.NAME]` keys and a
//! `[consumers]` file recognised by `api_key`, `$consumer` as a limit key
//! (one bucket per consumer) and in the access log, a script setting
//! `ngx.var.consumer` for `acl`, and the file re-read by a reload (asked
//! for, or on its change).

use std::time::Duration;

use crate::policies_jwt::{get, upstream_header};
use crate::support::{Moongate, Origin, echo};

fn conf(origin: std::net::SocketAddr, dir: &std::path::Path) -> String {
    format!(
        r#"[server]
listen = ["127.0.0.1:0"]
workers = 2
access_log = "{log}"
access_log_fields = ["status", "uri", "consumer"]

[admin]
listen = "127.0.0.1:0"

[upstream.o]
servers = [{{ addr = "{origin}" }}]

[consumer.alice]
keys = ["alice-key"]
groups = ["gold"]

[consumer.bob]
keys = ["bob-key-1", "bob-key-2"]

[consumers]
file = "{file}"

[limit.per_consumer]
rate = "6/m"
burst = 3
key = "$consumer"

[[route]]
path = "/api/"
upstream = "o"
limit = "per_consumer"
policies = [{{ use = "api_key" }}]

[[route]]
path = "/gold/"
upstream = "o"
policies = [{{ use = "api_key" }}, {{ use = "acl", allow = ["gold"] }}]

[[route]]
path = "/scripted/"
upstream = "o"
policies = [{{ use = "acl", deny = ["blocked"] }}]
lua.rewrite_inline = 'if ngx.var.http_x_user then ngx.var.consumer = ngx.var.http_x_user end'
"#,
        log = dir.join("access.log").display(),
        file = dir.join("consumers.jsonl").display(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumers_from_tables_and_file_with_a_limit_zone_each() {
    let origin = Origin::start(echo).await;
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("consumers.jsonl");
    std::fs::write(
        &file,
        "# more consumers, one per line\n{\"name\":\"carol\",\"keys\":[\"carol-key\"],\"groups\":[\"gold\"]}\n",
    )
    .expect("consumers");
    std::fs::write(
        dir.path().join("00-test.toml"),
        conf(origin.addr, dir.path()),
    )
    .expect("conf");
    let mg = Moongate::start_in(dir);

    // One bucket per consumer: each gets its burst of 3, whichever of its
    // keys it uses, then 429, while the others still pass.
    for (key, consumer) in [
        ("alice-key", "alice"),
        ("bob-key-1", "bob"),
        ("bob-key-2", "bob"),
        ("carol-key", "carol"),
    ] {
        let (status, _, echoed) = get(&mg, "/api/x", &[("x-api-key", key)]).await;
        assert_eq!(status, 200, "{key}");
        assert_eq!(
            upstream_header(&echoed, "x-consumer-username"),
            Some(consumer)
        );
        assert_eq!(
            upstream_header(&echoed, "x-api-key"),
            None,
            "the key stays here"
        );
    }
    for _ in 0..2 {
        assert_eq!(
            get(&mg, "/api/x", &[("x-api-key", "alice-key")]).await.0,
            200
        );
    }
    assert_eq!(
        get(&mg, "/api/x", &[("x-api-key", "alice-key")]).await.0,
        429
    );
    assert_eq!(
        get(&mg, "/api/x", &[("x-api-key", "bob-key-2")]).await.0,
        200
    );
    assert_eq!(
        get(&mg, "/api/x", &[("x-api-key", "bob-key-1")]).await.0,
        429
    );
    assert_eq!(
        get(&mg, "/api/x", &[("x-api-key", "carol-key")]).await.0,
        200
    );
    assert_eq!(get(&mg, "/api/x", &[("x-api-key", "nobody")]).await.0, 403);
    assert_eq!(get(&mg, "/api/x", &[]).await.0, 401);

    // acl by the consumers' groups.
    assert_eq!(
        get(&mg, "/gold/x", &[("x-api-key", "alice-key")]).await.0,
        200
    );
    assert_eq!(
        get(&mg, "/gold/x", &[("x-api-key", "carol-key")]).await.0,
        200
    );
    assert_eq!(
        get(&mg, "/gold/x", &[("x-api-key", "bob-key-1")]).await.0,
        403
    );
    // A script names the consumer; acl then knows nothing of them but
    // their (empty) groups; without one, 401.
    assert_eq!(get(&mg, "/scripted/x", &[("x-user", "dave")]).await.0, 200);
    assert_eq!(get(&mg, "/scripted/x", &[]).await.0, 401);

    // `$consumer` in the access log.
    let log = mg.dir.path().join("access.log");
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let lines = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        if lines.len() >= 17 || std::time::Instant::now() > deadline {
            break lines;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let consumer_of = |uri: &str, status: u64| -> Vec<serde_json::Value> {
        (lines.iter())
            .filter(|l| l["uri"] == uri && l["status"] == status)
            .map(|l| l["consumer"].clone())
            .collect()
    };
    assert!(consumer_of("/api/x", 429).contains(&serde_json::json!("alice")));
    assert!(consumer_of("/scripted/x", 200).contains(&serde_json::json!("dave")));
    assert_eq!(consumer_of("/api/x", 401), vec![serde_json::Value::Null]);

    // The consumers file is read again by a reload.
    std::fs::write(
        mg.dir.path().join("consumers.jsonl"),
        "{\"name\":\"erin\",\"keys\":[\"erin-key\"]}\n",
    )
    .expect("consumers");
    let (status, body) = mg.admin_reload().await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        get(&mg, "/api/x", &[("x-api-key", "erin-key")]).await.0,
        200
    );
    assert_eq!(
        get(&mg, "/gold/x", &[("x-api-key", "carol-key")]).await.0,
        403
    );
    // A broken file keeps the last good consumers, and says where.
    std::fs::write(
        mg.dir.path().join("consumers.jsonl"),
        "{\"name\":\"erin\",\"keys\":[\"erin-key\"]}\n{\"nam\":\"x\"}\n",
    )
    .expect("consumers");
    let (status, body) = mg.admin_reload().await;
    assert_ne!(status, 200);
    assert!(
        body.to_string()
            .contains("consumers.jsonl:2: unknown field `nam`"),
        "{body}"
    );
    assert_eq!(
        get(&mg, "/api/x", &[("x-api-key", "erin-key")]).await.0,
        200
    );

    // Edited on disk, no reload asked for: the watcher reloads.
    std::fs::write(
        mg.dir.path().join("consumers.jsonl"),
        "{\"name\":\"frank\",\"keys\":[\"frank-key\"]}\n",
    )
    .expect("consumers");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while get(&mg, "/api/x", &[("x-api-key", "frank-key")]).await.0 != 200 {
        assert!(
            std::time::Instant::now() < deadline,
            "the consumers file's change was not picked up"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        get(&mg, "/api/x", &[("x-api-key", "erin-key")]).await.0,
        403
    );
}

//! The `request_size` policy through the real server: a route's own body
//! limit, lower or higher than `[server] client_max_body_size`, for
//! declared lengths (413 before the upstream is reached) and chunked
//! bodies; routes without it keep the server's limit; config errors carry
//! file:line.

use std::net::SocketAddr;
use std::time::Duration;

use crate::support::{Moongate, Origin, check_one, client, echo, raw_exchange, raw_status};

fn conf(origin: SocketAddr) -> String {
    format!(
        r#"[server]
listen = ["127.0.0.1:0"]
workers = 1
access_log = "off"
client_max_body_size = "1KiB"

[upstream.o]
servers = [{{ addr = "{origin}" }}]

[[route]]
path = "/small/"
upstream = "o"
policies = [{{ use = "request_size", max_body_size = 100 }}]

[[route]]
path = "/big/"
upstream = "o"
policies = [{{ use = "request_size", max_body_size = "64KiB" }}]

[[route]]
path = "/default/"
upstream = "o"
"#
    )
}

/// POSTs `len` bytes with a Content-Length: the status, and the body
/// length the upstream saw (None when it answered no JSON).
async fn post(mg: &Moongate, path: &str, len: usize) -> (u16, Option<u64>) {
    let r = client()
        .post(mg.url(path))
        .body(vec![b'x'; len])
        .send()
        .await
        .expect("POST");
    let status = r.status().as_u16();
    let text = r.text().await.unwrap_or_default();
    let seen: Option<serde_json::Value> = serde_json::from_str(&text).ok();
    (status, seen.and_then(|v| v["body_len"].as_u64()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_limit_lowers_or_raises_the_servers() {
    let origin = Origin::start(echo).await;
    let mg = Moongate::start(&conf(origin.addr));

    assert_eq!(post(&mg, "/small/x", 100).await, (200, Some(100)));
    assert_eq!(post(&mg, "/small/x", 101).await.0, 413);
    assert_eq!(post(&mg, "/small/x", 1000).await.0, 413);
    assert_eq!(
        origin.hits(),
        1,
        "declared lengths are refused before the upstream"
    );

    // Raised above the server's 1KiB.
    assert_eq!(post(&mg, "/big/x", 10_000).await, (200, Some(10_000)));
    assert_eq!(post(&mg, "/big/x", 65_536).await, (200, Some(65_536)));
    assert_eq!(post(&mg, "/big/x", 65_537).await.0, 413);

    // The server's limit stands for routes without the policy, though
    // another route raised the one applied before routing.
    assert_eq!(post(&mg, "/default/x", 1024).await, (200, Some(1024)));
    assert_eq!(post(&mg, "/default/x", 1025).await.0, 413);
    assert_eq!(post(&mg, "/nowhere", 70_000).await.0, 413);
    assert_eq!(origin.hits(), 4);

    // A chunked body is held to the route's limit as it streams.
    let addr = mg.http[0];
    let chunked = |path: &str, len: usize| {
        let mut req = format!(
            "POST {path} HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{len:x}\r\n"
        )
        .into_bytes();
        req.extend(std::iter::repeat_n(b'y', len));
        req.extend_from_slice(b"\r\n0\r\n\r\n");
        req
    };
    let answer = raw_exchange(addr, &chunked("/small/x", 300), Duration::from_secs(5)).await;
    assert_eq!(raw_status(&answer), 413, "{answer}");
    let answer = raw_exchange(addr, &chunked("/small/x", 80), Duration::from_secs(5)).await;
    assert_eq!(raw_status(&answer), 200, "{answer}");
    assert!(answer.contains("\"body_len\":80"), "{answer}");
    let answer = raw_exchange(addr, &chunked("/big/x", 5000), Duration::from_secs(5)).await;
    assert_eq!(raw_status(&answer), 200, "{answer}");
    assert!(answer.contains("\"body_len\":5000"), "{answer}");
}

#[test]
fn config_errors_name_file_and_line() {
    let route = |entry: &str| {
        format!("[[route]]\npath = \"/\"\nroot = \".\"\npolicies = [\n  {entry},\n]\n")
    };
    for (entry, message) in [
        (
            r#"{ use = "request_size", max_body_size = "12 parsecs" }"#,
            "10-x.toml:5:43: `max_body_size`: \"12 parsecs\" has an unknown size unit `parsecs`",
        ),
        (
            r#"{ use = "request_size", max_body_size = true }"#,
            "10-x.toml:5:43: `max_body_size`: expected size",
        ),
        (
            r#"{ use = "request_size" }"#,
            "10-x.toml:5:3: policy `request_size` needs `max_body_size`",
        ),
    ] {
        let run = check_one(&route(entry));
        assert_eq!(run.code, Some(1), "{entry}");
        assert!(run.stderr.contains(message), "{entry}: {}", run.stderr);
    }
}

//! The embedding API: `moongate::Server::from_toml(..).start()` serves in
//! this process on background threads; `stop()` stops it gracefully.

use std::net::SocketAddr;
use std::time::Duration;

use crate::support::{Origin, client, wait_refused};

fn conf(origin: SocketAddr) -> String {
    format!(
        r#"[server]
listen = ["127.0.0.1:0"]
workers = 2
access_log = "off"

[upstream.app]
servers = [{{ addr = "{origin}" }}]

[[route]]
path = "/"
upstream = "app"
"#
    )
}

/// The single plain listener of a running embedded server.
fn http_addr(running: &moongate::Running) -> SocketAddr {
    let ls = running.listeners();
    assert_eq!(ls.len(), 1, "{ls:?}");
    assert_eq!(ls[0].scheme, "http");
    assert_ne!(ls[0].addr.port(), 0, "port 0 is resolved");
    ls[0].addr
}

async fn get(addr: SocketAddr) -> (u16, String) {
    let resp = client()
        .get(format!("http://{addr}/x"))
        .send()
        .await
        .expect("GET through embedded moongate");
    let status = resp.status().as_u16();
    (status, resp.text().await.expect("body"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_server_serves_and_stops() {
    let origin = Origin::named("embedded").await;
    let running = tokio::task::block_in_place(|| {
        moongate::Server::from_toml(conf(origin.addr))
            .start()
            .expect("embedded moongate starts")
    });
    let addr = http_addr(&running);
    assert_eq!(running.admin_addr(), None);
    assert_eq!(get(addr).await, (200, "embedded".to_string()));
    assert_eq!(origin.hits(), 1);

    let stopped = tokio::task::block_in_place(|| running.stop());
    assert!(stopped.is_ok(), "{stopped:?}");
    wait_refused(addr, Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_embedded_servers_in_one_process() {
    let a = Origin::named("a").await;
    let b = Origin::named("b").await;
    let (one, two) = tokio::task::block_in_place(|| {
        let one = moongate::Server::from_toml(conf(a.addr))
            .start()
            .expect("first server starts");
        let two = moongate::Server::from_toml(conf(b.addr))
            .start()
            .expect("second server starts");
        (one, two)
    });
    let (addr_one, addr_two) = (http_addr(&one), http_addr(&two));
    assert_ne!(addr_one, addr_two);
    assert_eq!(get(addr_one).await, (200, "a".to_string()));
    assert_eq!(get(addr_two).await, (200, "b".to_string()));

    // Stopping one leaves the other serving.
    let stopped = tokio::task::block_in_place(|| one.stop());
    assert!(stopped.is_ok(), "{stopped:?}");
    wait_refused(addr_one, Duration::from_secs(5)).await;
    assert_eq!(get(addr_two).await, (200, "b".to_string()));
    let stopped = tokio::task::block_in_place(|| two.stop());
    assert!(stopped.is_ok(), "{stopped:?}");
    wait_refused(addr_two, Duration::from_secs(5)).await;
}

#[test]
fn embedded_server_with_a_bad_config_fails_to_start() {
    let err = match moongate::Server::from_toml("[server]\nlisten = [\"nowhere\"]\n").start() {
        Ok(_) => panic!("a config with a bad listen address started"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("<config>:2:"), "{err}");
}

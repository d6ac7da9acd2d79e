//! WebSocket through moongate: the HTTP/1.1 upgrade is passed both ways,
//! the tunnel survives reloads, and the client-side request timeouts do not
//! apply to an upgraded connection.

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::support::{Moongate, client};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A WebSocket origin that echoes text and binary messages.
async fn echo_origin() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind ws origin");
    let addr = listener.local_addr().expect("ws origin addr");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
                    return;
                };
                while let Some(Ok(msg)) = ws.next().await {
                    if (msg.is_text() || msg.is_binary()) && ws.send(msg).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    addr
}

fn conf(origin: SocketAddr, server_extra: &str) -> String {
    format!(
        r#"[server]
listen = ["127.0.0.1:0"]
workers = 2
access_log = "off"
{server_extra}

[admin]
listen = "127.0.0.1:0"

[upstream.ws]
servers = [{{ addr = "{origin}" }}]

[[route]]
path = "/ws"
upstream = "ws"
"#
    )
}

/// Opens `ws://moongate/ws`.
async fn connect(mg: &Moongate) -> Ws {
    let url = format!("ws://{}/ws", mg.http[0]);
    let (ws, resp) = tokio::time::timeout(
        Duration::from_secs(10),
        tokio_tungstenite::connect_async(url),
    )
    .await
    .expect("WebSocket handshake in time")
    .expect("WebSocket handshake through moongate");
    assert_eq!(resp.status(), 101);
    ws
}

/// Sends `msg` and expects the same message back.
async fn round_trip(ws: &mut Ws, msg: Message) {
    ws.send(msg.clone()).await.expect("send ws message");
    let back = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .expect("echo in time")
        .expect("connection still open")
        .expect("echo message");
    assert_eq!(back, msg);
}

/// Closes from the client side and expects the close handshake to finish.
async fn close(mut ws: Ws) {
    ws.close(None).await.expect("send close");
    let end = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(_))) | None => return Ok(()),
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(e),
            }
        }
    })
    .await
    .expect("close handshake in time");
    assert!(end.is_ok(), "close handshake failed: {end:?}");
}

/// `POST /reload`; returns the new generation.
async fn admin_reload(mg: &Moongate) -> u64 {
    let resp = client()
        .post(mg.admin_url("/reload"))
        .send()
        .await
        .expect("POST /reload");
    assert_eq!(resp.status(), 200);
    let body: serde_json::Value =
        serde_json::from_str(&resp.text().await.expect("reload body")).expect("reload JSON");
    assert_eq!(body["ok"], true, "{body}");
    body["generation"].as_u64().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_echo_through_moongate() {
    let origin = echo_origin().await;
    let mg = tokio::task::block_in_place(|| Moongate::start(&conf(origin, "")));
    let mut ws = connect(&mg).await;
    round_trip(&mut ws, Message::text("hello")).await;
    round_trip(&mut ws, Message::binary(vec![0u8, 1, 2, 255, 254])).await;
    round_trip(&mut ws, Message::text("é ünïcödé ✓")).await;
    // Larger than one read buffer, in both directions.
    round_trip(&mut ws, Message::binary(vec![7u8; 256 * 1024])).await;
    for i in 0..20 {
        round_trip(&mut ws, Message::text(format!("message {i}"))).await;
    }
    // A second connection at the same time is independent.
    let mut other = connect(&mg).await;
    round_trip(&mut other, Message::text("other")).await;
    round_trip(&mut ws, Message::text("first again")).await;
    close(other).await;
    close(ws).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_survives_reloads() {
    let origin = echo_origin().await;
    let mg = tokio::task::block_in_place(|| Moongate::start(&conf(origin, "")));
    let mut ws = connect(&mg).await;
    round_trip(&mut ws, Message::text("before")).await;

    // Two reloads, the second one changing the upstream's definition (a
    // fresh pool), and a client timeout that would cut an HTTP connection.
    assert_eq!(admin_reload(&mg).await, 2);
    mg.write_conf(
        "00-test.toml",
        &conf(
            origin,
            "client_header_timeout = \"200ms\"\nkeepalive_timeout = \"200ms\"",
        )
        .replace("[upstream.ws]", "[upstream.ws]\nretries = 0"),
    );
    assert!(admin_reload(&mg).await >= 3);

    round_trip(&mut ws, Message::text("after")).await;
    round_trip(&mut ws, Message::binary(vec![9u8; 1000])).await;
    // A new connection works on the new configuration too.
    let mut fresh = connect(&mg).await;
    round_trip(&mut fresh, Message::text("fresh")).await;
    close(fresh).await;
    round_trip(&mut ws, Message::text("still here")).await;
    close(ws).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_websocket_outlives_client_timeouts() {
    let origin = echo_origin().await;
    let mg = tokio::task::block_in_place(|| {
        Moongate::start(&conf(
            origin,
            "client_header_timeout = \"300ms\"\nkeepalive_timeout = \"300ms\"",
        ))
    });
    let mut ws = connect(&mg).await;
    round_trip(&mut ws, Message::text("hello")).await;
    // Idle for longer than both timeouts (this wait is the subject of the
    // test, not a synchronization).
    tokio::time::sleep(Duration::from_millis(1000)).await;
    round_trip(&mut ws, Message::text("still open")).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    round_trip(&mut ws, Message::binary(vec![1u8, 2, 3])).await;
    close(ws).await;
}

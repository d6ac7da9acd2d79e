use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;

const IDLE: Duration = Duration::from_secs(60);

/// A connection to a listener on this host, counted in `pool` as a
/// connect to `peer` (kept open by the returned stream).
async fn conn(pool: &IdlePool, peer: u64) -> (Conn, tokio::net::TcpStream) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let client = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (server, _) = listener.accept().await.unwrap();
    (
        Conn::new(pool.counted(peer, Box::new(client)), IDLE),
        server,
    )
}

#[tokio::test]
async fn keepalive_bounds_the_idle_connections_of_the_whole_process() {
    let shared = SharedPool::new(2);
    let (one, two) = (
        IdlePool::new(shared.clone(), 0),
        IdlePool::new(shared.clone(), 1),
    );
    let mut ends = Vec::new();
    for pool in [&one, &two, &one] {
        let (c, end) = conn(pool, 7).await;
        ends.push(end);
        pool.checkin(7, c, 2);
    }
    let f = shared.figures(7);
    assert_eq!((f.idle, f.connects), (2, 3), "{f:?}");
    // The third replaced worker one's oldest: the process keeps two.
    assert_eq!(f.active, 0, "{f:?}");
    let a = one.checkout(7, IDLE).expect("worker one's own");
    let b = one.checkout(7, IDLE).expect("then worker two's");
    assert!(one.checkout(7, IDLE).is_none());
    let f = shared.figures(7);
    assert_eq!((f.idle, f.active), (0, 2), "{f:?}");
    drop((a, b));
    assert_eq!(shared.figures(7).active, 0);
}

#[tokio::test]
async fn a_closed_or_stale_connection_is_not_handed_out() {
    let shared = SharedPool::new(1);
    let pool = IdlePool::new(shared.clone(), 0);
    let (c, end) = conn(&pool, 3).await;
    pool.checkin(3, c, 4);
    drop(end);
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(pool.checkout(3, IDLE).is_none(), "the peer closed it");
    let (c, _end) = conn(&pool, 3).await;
    pool.checkin(3, c, 4);
    assert!(pool.checkout(3, Duration::ZERO).is_none(), "idle too long");
    assert_eq!(shared.figures(3).idle, 0);
}

#[tokio::test]
async fn a_sweep_closes_the_connections_of_peers_gone() {
    let shared = SharedPool::new(1);
    let pool = IdlePool::new(shared.clone(), 0);
    let (c, mut end) = conn(&pool, 5).await;
    pool.checkin(5, c, 4);
    pool.sweep(&|id| id == 5, Duration::from_secs(300));
    assert_eq!(shared.figures(5).idle, 1, "still configured");
    pool.sweep(&|_| false, Duration::from_secs(300));
    assert_eq!(shared.figures(5), PoolFigures::default(), "forgotten");
    let mut buf = [0u8; 1];
    let n = tokio::time::timeout(Duration::from_secs(5), end.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(n, 0, "closed");
}

#[test]
fn a_connection_parked_on_one_thread_serves_a_request_on_another() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let shared = SharedPool::new(2);
    let runtime = || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    };
    // Worker one connects and parks the connection, then its thread
    // blocks: its reactor is never polled again during the test.
    let (parked, release) = (
        std::sync::mpsc::channel::<()>(),
        std::sync::mpsc::channel::<()>(),
    );
    let (parked_tx, parked_rx) = parked;
    let (release_tx, release_rx) = release;
    let first = {
        let shared = shared.clone();
        std::thread::spawn(move || {
            runtime().block_on(async move {
                let pool = IdlePool::new(shared, 0);
                let s = tokio::net::TcpStream::connect(addr).await.unwrap();
                pool.checkin(9, Conn::new(pool.counted(9, Box::new(s)), IDLE), 4);
                parked_tx.send(()).unwrap();
                let _ = release_rx.recv();
            });
        })
    };
    let (mut server, _) = listener.accept().unwrap();
    parked_rx.recv().unwrap();
    let echoed = runtime().block_on(async move {
        let pool = IdlePool::new(shared.clone(), 1);
        let conn = pool.checkout(9, IDLE).expect("worker one's connection");
        assert!(conn.reused);
        let (mut socket, _) = conn.into_upgraded();
        let server = tokio::task::spawn_blocking(move || {
            use std::io::{Read, Write};
            let mut buf = [0u8; 4];
            server.read_exact(&mut buf).unwrap();
            server.write_all(&buf).unwrap();
        });
        socket.write_all(b"ping").await.unwrap();
        let mut buf = [0u8; 4];
        tokio::time::timeout(Duration::from_secs(5), socket.read_exact(&mut buf))
            .await
            .expect("woken by this thread's reactor")
            .unwrap();
        server.await.unwrap();
        assert_eq!(shared.figures(9).connects, 1);
        buf
    });
    assert_eq!(&echoed, b"ping");
    release_tx.send(()).unwrap();
    first.join().unwrap();
}

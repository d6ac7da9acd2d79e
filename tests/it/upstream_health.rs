//! Passive health and retries as nginx has them (issue 11): a sole peer is
//! never marked down, an upstream whose peers are all down tries them again
//! (backups first), and an idempotent request whose peer fails before any
//! response byte goes on to the next peer by default (`retries = 1`), never
//! after a response began and never a POST once it was sent.
//!
//! The failing peers are [`Flaky`] origins: a hand-written HTTP/1.1 server
//! that can reset a connection right after reading a request (what clients
//! of a crashing app see), cut a response head short, or die mid-request.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use crate::support::{Moongate, Origin, client, get_origin, text};

/// moongate with one upstream `app` (`upstream`: its TOML body) on `/`.
fn start(upstream: &str) -> Moongate {
    let conf = format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\nworkers = 2\naccess_log = \"off\"\n\n\
         [upstream.app]\n{upstream}\n\n[[route]]\npath = \"/\"\nupstream = \"app\"\n"
    );
    tokio::task::block_in_place(|| Moongate::start(&conf))
}

/// `servers = [...]` of these addresses, each with `extra` keys.
fn servers(addrs: &[SocketAddr], extra: &str) -> String {
    let list: Vec<String> = addrs
        .iter()
        .map(|a| format!("{{ addr = \"{a}\"{extra} }}"))
        .collect();
    format!("servers = [ {} ]", list.join(", "))
}

/// GET `path`: the status and the answering origin's name ("" if none).
async fn get(c: &reqwest::Client, mg: &Moongate, path: &str) -> (u16, String) {
    get_origin(c, &mg.url(path)).await
}

/// An origin that answers after 3 s (past the tests' `read_timeout`), and
/// one that answers at once.
async fn slow_and_fast() -> (Origin, Origin) {
    let slow = Origin::start(|_req| async {
        tokio::time::sleep(Duration::from_secs(3)).await;
        text(200, "slow")
    })
    .await;
    (slow, Origin::named("fast").await)
}

/// How many log lines contain `needle`.
fn logged(mg: &Moongate, needle: &str) -> usize {
    mg.log_lines().iter().filter(|l| l.contains(needle)).count()
}

/// What moongate logs when it tries every peer again.
const REVIVED: &str = "every peer was marked down; trying them again";

/// An origin whose requests can be made to fail (see the module docs).
struct Flaky {
    addr: SocketAddr,
    state: Arc<State>,
}

struct State {
    name: &'static str,
    /// Requests read, whatever happened to them.
    requests: AtomicUsize,
    /// Reset the connection after each of the next this many requests.
    fail_next: AtomicUsize,
    /// Reset the connection after every request.
    broken: AtomicBool,
    /// Send a cut-off response head before the reset.
    half_head: AtomicBool,
    /// At this request (1-based; 0 = never) close the listener, then reset.
    die_at: AtomicUsize,
    /// The accept loop, while it runs.
    accept: std::sync::Mutex<Option<JoinHandle<()>>>,
}

impl Flaky {
    async fn start(name: &'static str) -> Flaky {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let state = Arc::new(State {
            name,
            requests: AtomicUsize::new(0),
            fail_next: AtomicUsize::new(0),
            broken: AtomicBool::new(false),
            half_head: AtomicBool::new(false),
            die_at: AtomicUsize::new(0),
            accept: std::sync::Mutex::new(None),
        });
        let st = state.clone();
        let accept = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve(stream, st.clone()));
            }
        });
        *state.accept.lock().unwrap() = Some(accept);
        Flaky { addr, state }
    }

    fn requests(&self) -> usize {
        self.state.requests.load(Ordering::SeqCst)
    }

    fn fail_next(&self, n: usize) {
        self.state.fail_next.store(n, Ordering::SeqCst);
    }

    fn set_broken(&self, broken: bool) {
        self.state.broken.store(broken, Ordering::SeqCst);
    }
}

impl Drop for Flaky {
    fn drop(&mut self) {
        if let Some(task) = self.state.accept.lock().unwrap().take() {
            task.abort();
        }
    }
}

/// One connection: requests in a row (keep-alive), each answered 200 with
/// the origin's name, or failed as the state says.
async fn serve(mut s: TcpStream, st: Arc<State>) {
    let mut buf = Vec::new();
    loop {
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            match s.read_buf(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
        let body_len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        while buf.len() < head_end + body_len {
            match s.read_buf(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
        buf.drain(..head_end + body_len);
        let n = st.requests.fetch_add(1, Ordering::SeqCst) + 1;
        let dies = st.die_at.load(Ordering::SeqCst) == n;
        let fails = dies
            || st.broken.load(Ordering::SeqCst)
            || st
                .fail_next
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |k| k.checked_sub(1))
                .is_ok();
        if fails {
            if dies {
                // Killed: nothing listens any more (connects are refused)
                // by the time the request in flight is cut off.
                let task = st.accept.lock().unwrap().take();
                if let Some(task) = task {
                    task.abort();
                    let _ = task.await;
                }
            }
            if st.half_head.load(Ordering::SeqCst) {
                let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Le").await;
                let _ = s.flush().await;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let _ = s.set_zero_linger();
            return; // dropped with SO_LINGER 0: a reset
        }
        let answer = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nx-origin: {}\r\n\r\n{}",
            st.name.len(),
            st.name,
            st.name
        );
        if s.write_all(answer.as_bytes()).await.is_err() {
            return;
        }
    }
}

// ---- point 12: a sole peer, and every peer down ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sole_peer_that_reset_a_connection_is_not_marked_down() {
    let only = Flaky::start("only").await;
    only.fail_next(1);
    // nginx's defaults: max_fails = 1, fail_timeout = 10s.
    let mg = start(&servers(&[only.addr], ""));
    let c = client();
    let (status, _) = get(&c, &mg, "/").await;
    assert_eq!(status, 502, "the reset request itself has no peer to go to");
    for i in 0..5 {
        assert_eq!(
            get(&c, &mg, "/").await,
            (200, "only".into()),
            "request {i} after the reset"
        );
    }
    assert_eq!(only.requests(), 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_every_peer_is_down_they_are_tried_again_for_each_balancer() {
    for balance in ["round_robin", "least_conn", "ip_hash", "hash", "random2"] {
        let (a, b) = (Flaky::start("a").await, Flaky::start("b").await);
        a.fail_next(1);
        b.fail_next(1);
        let key = if balance == "hash" {
            "key = \"$request_uri\"\n"
        } else {
            ""
        };
        let mg = start(&format!(
            "balance = \"{balance}\"\n{key}{}",
            servers(&[a.addr, b.addr], ", fail_timeout = \"60s\"")
        ));
        let c = client();
        // Both reset: the request fails on both, and both are marked down
        // for a minute.
        assert_eq!(get(&c, &mg, "/x").await.0, 502, "{balance}");
        assert_eq!((a.requests(), b.requests()), (1, 1), "{balance}");
        // Tried again at once (and healthy now), not a minute of 502s.
        for i in 0..6 {
            assert_eq!(get(&c, &mg, "/x").await.0, 200, "{balance}: request {i}");
        }
        // The log is written off the request path: wait for the line
        // before counting (a loaded machine writes it late).
        let warn = mg.wait_log(REVIVED, Duration::from_secs(5));
        assert!(warn.contains("WARN") && warn.contains("app"), "{warn}");
        assert_eq!(logged(&mg, REVIVED), 1, "{balance}: one reset, logged once");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backups_serve_before_the_primary_is_tried_again() {
    let primary = Flaky::start("primary").await;
    let backup = Flaky::start("backup").await;
    primary.set_broken(true);
    let mg = start(&format!(
        "servers = [ {{ addr = \"{}\", fail_timeout = \"60s\" }}, {{ addr = \"{}\", backup = true, fail_timeout = \"60s\" }} ]",
        primary.addr, backup.addr
    ));
    let c = client();
    // The primary resets the first request (which goes on to the backup)
    // and is marked down; the backup serves, the primary is left alone.
    for i in 0..8 {
        assert_eq!(get(&c, &mg, "/").await, (200, "backup".into()), "{i}");
    }
    assert_eq!(primary.requests(), 1);
    assert_eq!(logged(&mg, REVIVED), 0);
    // The primary recovers, the backup breaks: with both down, the primary
    // is tried again at once instead of a minute of 502s.
    primary.set_broken(false);
    backup.set_broken(true);
    for i in 0..4 {
        assert_eq!(get(&c, &mg, "/").await, (200, "primary".into()), "{i}");
    }
    // The backup's pooled connection (if still pooled: under load it may
    // have been let go first), then a new one, were reset: it was marked
    // down and left alone since.
    let backup_requests = backup.requests();
    assert!((9..=10).contains(&backup_requests), "{backup_requests}");
    mg.wait_log(REVIVED, Duration::from_secs(5));
    assert_eq!(logged(&mg, REVIVED), 1);
}

// ---- point 13: retries by default ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_failing_mid_run_costs_no_idempotent_request_by_default() {
    for (retries, want_failures) in [("", false), ("retries = 0\n", true)] {
        let (a, b) = (Flaky::start("a").await, Flaky::start("b").await);
        let mg = start(&format!(
            "{retries}{}",
            servers(&[a.addr, b.addr], ", max_fails = 0")
        ));
        let c = client();
        let mut failed = Vec::new();
        for i in 0..40 {
            if i == 10 {
                // From now on `a` resets every connection after reading the
                // request (it still accepts): no response byte ever comes.
                a.set_broken(true);
            }
            let (status, origin) = get(&c, &mg, "/").await;
            match status {
                200 => assert!(origin == "a" || origin == "b"),
                502 => failed.push(i),
                other => panic!("request {i}: {other}"),
            }
        }
        assert!(a.requests() > 5, "{}", a.requests());
        if want_failures {
            assert!(
                !failed.is_empty(),
                "retries = 0: every request to `a` fails"
            );
        } else {
            assert_eq!(failed, Vec::<usize>::new(), "default: no request is lost");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_killed_mid_request_costs_no_request_by_default() {
    // keepalive = 0: each request on a new connection, so the one in flight
    // when `a` dies is not saved by replacing a stale pooled connection.
    for (retries, want) in [("", 0), ("retries = 0\n", 1)] {
        let (a, b) = (Flaky::start("a").await, Flaky::start("b").await);
        a.state.die_at.store(5, Ordering::SeqCst);
        let mg = start(&format!(
            "keepalive = 0\n{retries}{}",
            servers(&[a.addr, b.addr], "")
        ));
        let c = client();
        let mut statuses = Vec::new();
        for _ in 0..30 {
            statuses.push(get(&c, &mg, "/").await.0);
        }
        let bad = statuses.iter().filter(|&&s| s != 200).count();
        assert_eq!(bad, want, "retries {retries:?}: {statuses:?}");
        assert_eq!(a.requests(), 5, "nothing reaches `a` once it is dead");
        assert_eq!(b.requests(), 25 + usize::from(want == 0));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_timeout_before_the_response_moves_a_get_on_but_not_a_post() {
    for (retries, want_get) in [("", 200), ("retries = 0\n", 504)] {
        let (slow, fast) = slow_and_fast().await;
        let mg = start(&format!(
            "read_timeout = \"300ms\"\n{retries}{}",
            servers(&[slow.addr, fast.addr], ", fail_timeout = \"60s\"")
        ));
        let c = client();
        // Round robin sends the first request to the slow peer.
        let (status, _) = get(&c, &mg, "/").await;
        assert_eq!(status, want_get, "retries {retries:?}");
        assert_eq!(slow.hits(), 1);
        assert_eq!(fast.hits(), usize::from(want_get == 200));
        for _ in 0..4 {
            assert_eq!(get(&c, &mg, "/").await, (200, "fast".into()));
        }
    }
    // A POST that timed out is never sent to another peer.
    let (slow, fast) = slow_and_fast().await;
    let mg = start(&format!(
        "read_timeout = \"300ms\"\n{}",
        servers(&[slow.addr, fast.addr], "")
    ));
    let resp = client()
        .post(mg.url("/"))
        .body("order")
        .send()
        .await
        .expect("an answer");
    assert_eq!(resp.status(), 504);
    assert_eq!((slow.hits(), fast.hits()), (1, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_retried_once_a_response_began_or_a_post_was_sent() {
    // By default, and with more tries and peer answers that move on.
    for retries in ["", "retries = 2\nretry_statuses = [502, 504]\n"] {
        let (a, b) = (Flaky::start("a").await, Flaky::start("b").await);
        a.set_broken(true);
        let mg = start(&format!(
            "{retries}{}",
            servers(&[a.addr, b.addr], ", max_fails = 0")
        ));
        let c = client();
        // POSTs, with and without a body: `a` read them and reset; they are
        // not sent to `b` (round robin alternates: half of each kind meet
        // `a`).
        let mut statuses = Vec::new();
        for i in 0..8 {
            let req = c.post(mg.url("/"));
            let req = if i % 4 < 2 { req.body("x") } else { req };
            statuses.push(req.send().await.expect("an answer").status().as_u16());
        }
        let failed = statuses.iter().filter(|&&s| s == 502).count();
        assert_eq!(
            a.requests() + b.requests(),
            8,
            "each reached one peer: {statuses:?}"
        );
        assert_eq!(failed, a.requests(), "{statuses:?}");
        assert!(failed >= 2, "{statuses:?}");
        // A GET whose response head was cut off: the response began, so it
        // is not sent to `b` either.
        a.state.half_head.store(true, Ordering::SeqCst);
        let before = (a.requests(), b.requests());
        let mut cut = 0;
        for _ in 0..4 {
            match get(&c, &mg, "/").await {
                (502, _) => cut += 1,
                (200, origin) => assert_eq!(origin, "b"),
                other => panic!("{other:?}"),
            }
        }
        assert!(cut >= 1, "no GET met `a`");
        assert_eq!(a.requests() - before.0, cut, "one try each, on `a`");
        assert_eq!(b.requests() - before.1, 4 - cut, "never retried on `b`");
    }
}

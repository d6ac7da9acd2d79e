//! Active health checks (`health = {...}`, issue 14 point 1 and issue 15
//! point 3): a hanging peer is taken out by the check's timeout and comes
//! back after `passes` good checks, `expect` decides, `type = "tcp"`
//! connects only, every protocol is checked in its own terms (h2 with the
//! `h2` crate's server, uwsgi against a real uWSGI, FastCGI against a real
//! php-fpm; TLS peers over TLS, their certificate checked), a managed
//! worker that hangs (SIGSTOP) is taken out, one prober per upstream
//! survives an unchanged reload (probes counted at the origin) and stops
//! with its upstream, and `/status` shows each peer's state.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::Value;

use crate::support::{Moongate, Origin, client, text};

/// `[server]` with an admin listener.
pub(crate) const SERVER: &str = "[server]\nlisten = [\"127.0.0.1:0\"]\nworkers = 2\naccess_log = \"off\"\n\n[admin]\nlisten = \"127.0.0.1:0\"\n\n";

/// The peer `addr` of upstream `name` in a `/status` document.
pub(crate) fn peer<'a>(status: &'a Value, name: &str, addr: &str) -> &'a Value {
    status["upstreams"][name]["peers"]
        .as_array()
        .and_then(|peers| peers.iter().find(|p| p["addr"] == addr))
        .unwrap_or_else(|| panic!("no peer {addr} of {name} in {status}"))
}

/// Polls `/status` until the peer's `state` is `want`; the peer's JSON
/// then, and how long it took. Panics after `within`.
pub(crate) async fn wait_state(
    mg: &Moongate,
    name: &str,
    addr: &str,
    want: &str,
    within: Duration,
) -> (Value, Duration) {
    let start = Instant::now();
    loop {
        let status = mg.status().await;
        let p = peer(&status, name, addr).clone();
        if p["state"] == want {
            return (p, start.elapsed());
        }
        assert!(
            start.elapsed() < within,
            "{name} {addr} not {want} within {within:?}: {p}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// An HTTP/1 origin answering `/healthz` with the status in `health` and
/// everything else with 200 `name`; while `hang` is set, every answer waits
/// 5 s first. Counts `/healthz` requests in `probes`, and keeps the last
/// one's Host, X-Check and User-Agent in `seen`.
pub(crate) struct Peer {
    origin: Origin,
    hang: Arc<AtomicBool>,
    pub(crate) health: Arc<AtomicU16>,
    probes: Arc<AtomicUsize>,
    seen: Arc<Mutex<Vec<String>>>,
}

impl Peer {
    pub(crate) async fn start(name: &'static str) -> Peer {
        let hang = Arc::new(AtomicBool::new(false));
        let health = Arc::new(AtomicU16::new(200));
        let probes = Arc::new(AtomicUsize::new(0));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (h, s, p, w) = (hang.clone(), health.clone(), probes.clone(), seen.clone());
        let origin = Origin::start(move |req| {
            let (h, s, p, w) = (h.clone(), s.clone(), p.clone(), w.clone());
            async move {
                if h.load(Ordering::SeqCst) {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                }
                if req.uri().path() == "/healthz" {
                    p.fetch_add(1, Ordering::SeqCst);
                    let header = |name: &str| {
                        req.headers()
                            .get(name)
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("")
                            .to_owned()
                    };
                    *w.lock().unwrap() =
                        vec![header("host"), header("x-check"), header("user-agent")];
                    return text(s.load(Ordering::SeqCst), "health");
                }
                text(200, name)
            }
        })
        .await;
        Peer {
            origin,
            hang,
            health,
            probes,
            seen,
        }
    }

    pub(crate) fn addr(&self) -> String {
        self.origin.addr.to_string()
    }

    pub(crate) fn probes(&self) -> usize {
        self.probes.load(Ordering::SeqCst)
    }
}

/// GET `path`: status, body and how long it took.
async fn get(c: &reqwest::Client, url: &str) -> (u16, String, Duration) {
    let start = Instant::now();
    let resp = c.get(url).send().await.expect("request");
    let status = resp.status().as_u16();
    let body = resp.text().await.expect("body");
    (status, body, start.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_peer_is_taken_out_by_the_timeout_and_comes_back_after_passes() {
    let fast = Peer::start("fast").await;
    let slow = Peer::start("slow").await;
    let mg = Moongate::start(&format!(
        "{SERVER}[upstream.app]\nretries = 0\nservers = [{{ addr = \"{}\" }}, {{ addr = \"{}\" }}]\n\
         health = {{ path = \"/healthz\", interval = \"300ms\", timeout = \"250ms\", fails = 2, passes = 2 }}\n\n\
         [[route]]\npath = \"/\"\nupstream = \"app\"\n",
        fast.addr(),
        slow.addr()
    ));
    // Both pass first: up, with their checks shown.
    let (p, _) = wait_state(&mg, "app", &slow.addr(), "up", Duration::from_secs(3)).await;
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let status = mg.status().await;
        let check = &peer(&status, "app", &slow.addr())["check"];
        if check["passes"].as_u64().unwrap_or(0) >= 2 {
            assert_eq!(check["state"], "up", "{status}");
            assert!(
                check["last_check_unix_ms"].as_u64().unwrap_or(0) > 0,
                "{status}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "no passing checks: {p}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    slow.hang.store(true, Ordering::SeqCst);
    let (p, took) = wait_state(&mg, "app", &slow.addr(), "down", Duration::from_secs(4)).await;
    assert_eq!(p["reason"], "active", "{p}");
    assert!(
        p["check"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("timeout")),
        "{p}"
    );
    assert!(p["check"]["fails"].as_u64().unwrap_or(0) >= 2, "{p}");
    // fails × interval, plus a timeout and a round of slack.
    assert!(
        took < Duration::from_millis(1600),
        "taken out after {took:?}"
    );
    let line = mg.wait_log("peer down:", Duration::from_secs(1));
    assert!(
        line.contains(&slow.addr()) && line.contains("app"),
        "{line}"
    );

    // Out of rotation: every request goes to the fast peer at once.
    let c = client();
    for _ in 0..20 {
        let (status, body, took) = get(&c, &mg.url("/x")).await;
        assert_eq!((status, body.as_str()), (200, "fast"));
        assert!(took < Duration::from_secs(1), "a request took {took:?}");
    }
    // Logged once, however many checks failed since.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let downs = mg
        .log_lines()
        .iter()
        .filter(|l| l.contains("peer down:") && l.contains(&slow.addr()))
        .count();
    assert_eq!(downs, 1, "{:?}", mg.log_lines());

    // Answering again: back after `passes` good checks, and served.
    slow.hang.store(false, Ordering::SeqCst);
    let (p, took) = wait_state(&mg, "app", &slow.addr(), "up", Duration::from_secs(8)).await;
    assert_eq!(p["check"]["state"], "up", "{p}");
    assert!(p["check"]["passes"].as_u64().unwrap_or(0) >= 2, "{p}");
    assert!(took < Duration::from_secs(3), "back after {took:?}");
    mg.wait_log("peer up again", Duration::from_secs(1));
    let mut bodies = Vec::new();
    for _ in 0..10 {
        bodies.push(get(&c, &mg.url("/x")).await.1);
    }
    assert!(bodies.iter().any(|b| b == "slow"), "{bodies:?}");
    assert!(bodies.iter().any(|b| b == "fast"), "{bodies:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expect_decides_and_a_sole_failing_peer_answers_502_at_once() {
    let good = Peer::start("good").await;
    let bad = Peer::start("bad").await;
    bad.health.store(500, Ordering::SeqCst);
    let check = "interval = \"200ms\", timeout = \"500ms\", fails = 2, passes = 2";
    let mg = Moongate::start(&format!(
        "{SERVER}[upstream.two]\nservers = [{{ addr = \"{good}\" }}, {{ addr = \"{bad}\" }}]\n\
         health = {{ path = \"/healthz\", {check}, host = \"check.test\", headers = {{ X-Check = \"1\" }} }}\n\n\
         [upstream.tolerant]\nservers = [{{ addr = \"{bad}\" }}]\n\
         health = {{ path = \"/healthz\", {check}, expect = [\"2xx\", 500] }}\n\n\
         [upstream.sole]\nservers = [{{ addr = \"{bad}\" }}]\n\
         health = {{ path = \"/healthz\", {check} }}\n\n\
         [[route]]\npath = \"/two\"\nupstream = \"two\"\n\n\
         [[route]]\npath = \"/tolerant\"\nupstream = \"tolerant\"\n\n\
         [[route]]\npath = \"/sole\"\nupstream = \"sole\"\n",
        good = good.addr(),
        bad = bad.addr()
    ));
    let (p, took) = wait_state(&mg, "two", &bad.addr(), "down", Duration::from_secs(3)).await;
    assert_eq!(p["reason"], "active", "{p}");
    assert_eq!(p["check"]["error"], "GET /healthz answered 500", "{p}");
    assert!(took < Duration::from_millis(1500), "{took:?}");
    // Zero failed client requests: the healthy peer takes them all.
    let c = client();
    for _ in 0..10 {
        let (status, body, _) = get(&c, &mg.url("/two")).await;
        assert_eq!((status, body.as_str()), (200, "good"));
    }
    // `expect` lists 500: the same peer passes there.
    let status = mg.status().await;
    let tolerant = peer(&status, "tolerant", &bad.addr());
    assert_eq!(tolerant["state"], "up", "{status}");
    assert!(
        tolerant["check"]["passes"].as_u64().unwrap_or(0) >= 1,
        "{status}"
    );
    let (code, body, _) = get(&c, &mg.url("/tolerant")).await;
    assert_eq!((code, body.as_str()), (200, "bad"));
    // A sole peer that fails its checks is down (unlike passive health):
    // 502 at once, although it would answer the request itself.
    let (p, _) = wait_state(&mg, "sole", &bad.addr(), "down", Duration::from_secs(3)).await;
    assert_eq!(p["reason"], "active", "{p}");
    let (code, _, took) = get(&c, &mg.url("/sole")).await;
    assert_eq!(code, 502);
    assert!(took < Duration::from_millis(500), "{took:?}");
    // The checks carry the Host and headers asked for.
    assert_eq!(
        *good.seen.lock().unwrap(),
        ["check.test", "1", "moongate-health"]
    );

    // Healthy again: back after two passes.
    bad.health.store(200, Ordering::SeqCst);
    wait_state(&mg, "two", &bad.addr(), "up", Duration::from_secs(3)).await;
    wait_state(&mg, "sole", &bad.addr(), "up", Duration::from_secs(3)).await;
    let (code, body, _) = get(&c, &mg.url("/sole")).await;
    assert_eq!((code, body.as_str()), (200, "bad"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tcp_check_takes_out_a_closed_port() {
    let good = Peer::start("good").await;
    let closed: SocketAddr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr")
    };
    let mg = Moongate::start(&format!(
        "{SERVER}[upstream.app]\nretries = 0\nservers = [{{ addr = \"{}\", max_fails = 0 }}, {{ addr = \"{closed}\", max_fails = 0 }}]\n\
         health = {{ type = \"tcp\", interval = \"200ms\", timeout = \"500ms\", fails = 1, passes = 1 }}\n\n\
         [[route]]\npath = \"/\"\nupstream = \"app\"\n",
        good.addr()
    ));
    let (p, _) = wait_state(
        &mg,
        "app",
        &closed.to_string(),
        "down",
        Duration::from_secs(3),
    )
    .await;
    assert_eq!(p["reason"], "active", "{p}");
    let error = p["check"]["error"].as_str().unwrap_or("");
    assert!(error.contains(&closed.to_string()), "{p}");
    // The open one is up, and asked nothing but a connection.
    let status = mg.status().await;
    assert_eq!(
        peer(&status, "app", &good.addr())["state"],
        "up",
        "{status}"
    );
    assert_eq!(good.probes(), 0);
    // max_fails = 0: only the active mark keeps requests off the closed port.
    let c = client();
    for _ in 0..10 {
        let (code, body, _) = get(&c, &mg.url("/")).await;
        assert_eq!((code, body.as_str()), (200, "good"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_keeps_one_prober_and_a_removed_upstreams_prober_stops() {
    let origin = Peer::start("app").await;
    let app = format!(
        "[upstream.app]\nservers = [{{ addr = \"{}\" }}]\n\
         health = {{ path = \"/healthz\", interval = \"100ms\", timeout = \"500ms\" }}\n\n\
         [[route]]\npath = \"/\"\nupstream = \"app\"\n",
        origin.addr()
    );
    let mg = Moongate::start(&format!("{SERVER}{app}"));
    // Probes over a window of 1.5 s.
    let window = || async {
        let before = origin.probes();
        tokio::time::sleep(Duration::from_millis(1500)).await;
        origin.probes() - before
    };
    let first = window().await;
    assert!(
        (10..=20).contains(&first),
        "{first} probes in 1.5 s at 100 ms"
    );

    // Same upstream, another route: the upstream (and its prober) is kept.
    mg.write_conf(
        "00-test.toml",
        &format!("{SERVER}{app}\n[[route]]\npath = \"/other\"\nupstream = \"app\"\n"),
    );
    let (code, body) = mg.admin_reload().await;
    assert_eq!(code, 200, "{body}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after = window().await;
    assert!(
        after * 2 < first * 3,
        "{after} probes after the reload, {first} before: a second prober?"
    );

    // A changed `health`: a new prober at the new pace, the old one gone.
    mg.write_conf(
        "00-test.toml",
        &format!("{SERVER}{}", app.replace("\"100ms\"", "\"300ms\"")),
    );
    let (code, body) = mg.admin_reload().await;
    assert_eq!(code, 200, "{body}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let slower = window().await;
    assert!(
        (3..=7).contains(&slower),
        "{slower} probes in 1.5 s at 300 ms (the old prober still running?)"
    );

    // Gone: its prober stops.
    mg.write_conf(
        "00-test.toml",
        &format!(
            "{SERVER}[[route]]\npath = \"/\"\nroot = \"{}/examples/site\"\n",
            env!("CARGO_MANIFEST_DIR")
        ),
    );
    let (code, body) = mg.admin_reload().await;
    assert_eq!(code, 200, "{body}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let gone = window().await;
    assert_eq!(gone, 0, "probes after the upstream was removed");
    assert!(mg.status().await["upstreams"].get("app").is_none());
}

/// An HTTP/2 (h2c) origin answering `/healthz` with the status in
/// `health`, everything else 200; counts `/healthz` streams.
async fn h2_origin(health: Arc<AtomicU16>, probes: Arc<AtomicUsize>) -> SocketAddr {
    h2_origin_with(health, probes, None).await
}

/// [`h2_origin`], over TLS with `tls` when given.
async fn h2_origin_with(
    health: Arc<AtomicU16>,
    probes: Arc<AtomicUsize>,
    tls: Option<Arc<rustls::ServerConfig>>,
) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((io, _)) = listener.accept().await {
            let (health, probes, tls) = (health.clone(), probes.clone(), tls.clone());
            tokio::spawn(async move {
                let io: Box<dyn Io> = match tls {
                    None => Box::new(io),
                    Some(config) => {
                        match tokio_rustls::TlsAcceptor::from(config).accept(io).await {
                            Ok(io) => Box::new(io),
                            Err(_) => return,
                        }
                    }
                };
                let Ok(mut conn) = h2::server::Builder::new().handshake::<_, Bytes>(io).await
                else {
                    return;
                };
                while let Some(Ok((req, mut respond))) = conn.accept().await {
                    let mut status = 200;
                    if req.uri().path() == "/healthz" {
                        probes.fetch_add(1, Ordering::SeqCst);
                        status = health.load(Ordering::SeqCst);
                    }
                    let head = http::Response::builder()
                        .status(status)
                        .body(())
                        .expect("head");
                    let _ = respond.send_response(head, true);
                }
            });
        }
    });
    addr
}

/// A socket of the h2 origin, plain or TLS.
trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Io for T {}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checks_speak_tls_to_tls_peers_and_check_the_certificate() {
    let tls = crate::support::tls_peer(&[b"h2"]);
    let (ca, other_ca, server) = (&tls.ca, &tls.other_ca, tls.server.clone());
    let probes = Arc::new(AtomicUsize::new(0));
    let addr = h2_origin_with(Arc::new(AtomicU16::new(200)), probes.clone(), Some(server)).await;
    let port = addr.port();
    let check = "health = { path = \"/healthz\", interval = \"200ms\", timeout = \"500ms\", fails = 1, passes = 1 }";
    let mg = Moongate::start(&format!(
        "{SERVER}[upstream.trusted]\nprotocol = \"h2\"\nservers = [{{ addr = \"https://localhost:{port}\" }}]\ntls = {{ ca = \"{}\" }}\n{check}\n\n\
         [upstream.untrusted]\nprotocol = \"h2\"\nservers = [{{ addr = \"https://localhost:{port}\" }}]\ntls = {{ ca = \"{}\" }}\n{check}\n\n\
         [[route]]\npath = \"/\"\nupstream = \"trusted\"\n",
        ca.display(),
        other_ca.display()
    ));
    let peer_addr = mg.status().await["upstreams"]["trusted"]["peers"][0]["addr"]
        .as_str()
        .expect("peer addr")
        .to_owned();
    let (p, _) = wait_state(&mg, "untrusted", &peer_addr, "down", Duration::from_secs(3)).await;
    let error = p["check"]["error"].as_str().unwrap_or("");
    assert!(error.to_lowercase().contains("certificate"), "{p}");
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let status = mg.status().await;
        let p = peer(&status, "trusted", &peer_addr);
        if p["check"]["passes"].as_u64().unwrap_or(0) >= 1 {
            assert_eq!(p["state"], "up", "{status}");
            break;
        }
        assert!(Instant::now() < deadline, "{status}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The trusted upstream's checks got through the handshake, over h2.
    assert!(probes.load(Ordering::SeqCst) >= 1);
    let (code, _, _) = get(&client(), &mg.url("/")).await;
    assert_eq!(code, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_peers_are_checked_over_http2() {
    let health = Arc::new(AtomicU16::new(200));
    let probes = Arc::new(AtomicUsize::new(0));
    let addr = h2_origin(health.clone(), probes.clone()).await.to_string();
    let mg = Moongate::start(&format!(
        "{SERVER}[upstream.h2]\nprotocol = \"h2\"\nservers = [{{ addr = \"{addr}\" }}]\n\
         health = {{ path = \"/healthz\", interval = \"200ms\", timeout = \"500ms\", fails = 2, passes = 2 }}\n\n\
         [upstream.grpc]\nprotocol = \"grpc\"\nservers = [{{ addr = \"{addr}\" }}]\n\
         health = {{ path = \"/healthz\", interval = \"200ms\", timeout = \"500ms\", fails = 2, passes = 2, expect = 204 }}\n\n\
         [[route]]\npath = \"/\"\nupstream = \"h2\"\n"
    ));
    // The h2 server answered HTTP/2 checks (an HTTP/1 GET would not parse).
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let status = mg.status().await;
        let p = peer(&status, "h2", &addr);
        if p["check"]["passes"].as_u64().unwrap_or(0) >= 2 {
            assert_eq!(p["state"], "up", "{status}");
            break;
        }
        assert!(Instant::now() < deadline, "{status}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(probes.load(Ordering::SeqCst) >= 2);
    // 200 is not the 204 the grpc upstream expects.
    let (p, _) = wait_state(&mg, "grpc", &addr, "down", Duration::from_secs(3)).await;
    assert_eq!(p["check"]["error"], "GET /healthz answered 200", "{p}");

    health.store(503, Ordering::SeqCst);
    let (p, _) = wait_state(&mg, "h2", &addr, "down", Duration::from_secs(3)).await;
    assert_eq!(p["check"]["error"], "GET /healthz answered 503", "{p}");
    let (code, _, _) = get(&client(), &mg.url("/")).await;
    assert_eq!(code, 502);
    health.store(204, Ordering::SeqCst);
    wait_state(&mg, "h2", &addr, "up", Duration::from_secs(3)).await;
    wait_state(&mg, "grpc", &addr, "up", Duration::from_secs(3)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uwsgi_peers_are_checked_with_uwsgi_requests() {
    let mut app = crate::upstream_uwsgi::Uwsgi::start();
    let addr = app.addr.to_string();
    let mg = Moongate::start(&format!(
        "{SERVER}[upstream.py]\nprotocol = \"uwsgi\"\nservers = [{{ addr = \"{addr}\" }}]\n\
         health = {{ path = \"/healthz\", interval = \"200ms\", timeout = \"1s\", fails = 2, passes = 2, host = \"py.test\" }}\n\n\
         [[route]]\npath = \"/\"\nupstream = \"py\"\n"
    ));
    // uWSGI answered the checks (an HTTP/1 GET on its socket would not be
    // understood).
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let status = mg.status().await;
        let p = peer(&status, "py", &addr);
        if p["check"]["passes"].as_u64().unwrap_or(0) >= 2 {
            assert_eq!(p["state"], "up", "{status}");
            break;
        }
        assert!(Instant::now() < deadline, "{status}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    app.kill();
    let (p, took) = wait_state(&mg, "py", &addr, "down", Duration::from_secs(3)).await;
    assert_eq!(p["reason"], "active", "{p}");
    assert!(took < Duration::from_secs(2), "{took:?}");
    let (code, _, took) = get(&client(), &mg.url("/")).await;
    assert_eq!(code, 502);
    assert!(took < Duration::from_millis(500), "{took:?}");
}

/// A PHP check script: answers the status written in `health_status`
/// next to it (200 without one).
const HEALTH_PHP: &str = r#"<?php
$f = __DIR__ . '/health_status';
$code = file_exists($f) ? intval(trim(file_get_contents($f))) : 200;
http_response_code($code);
header('Content-Type: text/plain');
echo "health $code " . ($_SERVER['HTTP_HOST'] ?? '') . "\n";
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fastcgi_peers_are_checked_with_fastcgi_requests() {
    let php = crate::upstream_fastcgi::Php::start(2, "");
    let root = php.root.path().to_path_buf();
    std::fs::write(root.join("health.php"), HEALTH_PHP).expect("write health.php");
    let addr = php.addr();
    let mg = Moongate::start(&format!(
        "{SERVER}[upstream.php]\nprotocol = \"fastcgi\"\nroot = \"{}\"\nservers = [{{ addr = \"{addr}\" }}]\n\
         health = {{ path = \"/health.php\", interval = \"200ms\", timeout = \"1s\", fails = 2, passes = 2 }}\n\n\
         [upstream.missing]\nprotocol = \"fastcgi\"\nroot = \"{}\"\nservers = [{{ addr = \"{addr}\" }}]\n\
         health = {{ path = \"/nothing-here.php\", interval = \"200ms\", timeout = \"1s\", fails = 2, passes = 2 }}\n\n\
         [[route]]\npath = \"/\"\nupstream = \"php\"\n",
        root.display(),
        root.display()
    ));
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let status = mg.status().await;
        let p = peer(&status, "php", &addr);
        if p["check"]["passes"].as_u64().unwrap_or(0) >= 2 {
            assert_eq!(p["state"], "up", "{status}");
            break;
        }
        assert!(Instant::now() < deadline, "{status}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // PHP-FPM answers a missing script 404: that upstream's peer is down.
    let (p, _) = wait_state(&mg, "missing", &addr, "down", Duration::from_secs(3)).await;
    assert_eq!(
        p["check"]["error"], "GET /nothing-here.php answered 404",
        "{p}"
    );

    std::fs::write(root.join("health_status"), "503").expect("write status");
    let (p, _) = wait_state(&mg, "php", &addr, "down", Duration::from_secs(3)).await;
    assert_eq!(p["check"]["error"], "GET /health.php answered 503", "{p}");
    mg.wait_log(
        "peer down: GET /health.php answered 503",
        Duration::from_secs(1),
    );
    std::fs::remove_file(root.join("health_status")).expect("remove status");
    wait_state(&mg, "php", &addr, "up", Duration::from_secs(3)).await;
    let (code, body, _) = get(&client(), &mg.url("/health.php")).await;
    assert_eq!(code, 200, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_managed_worker_that_hangs_is_taken_out_and_comes_back() {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    // `path` defaults to the pool's `ready` path (/healthz).
    let pool = crate::upstream_uwsgi::Managed::start(
        "health = { interval = \"200ms\", timeout = \"300ms\", fails = 2, passes = 2 }",
    );
    let pids = pool.settled(None).await;
    let peers = |status: &Value| {
        status["upstreams"]["py"]["peers"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    };
    // Both workers pass their checks.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !peers(&pool.mg().status().await)
        .iter()
        .all(|p| p["check"]["passes"].as_u64().unwrap_or(0) >= 2)
    {
        assert!(Instant::now() < deadline, "{}", pool.mg().status().await);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // One worker stops answering (alive, so the supervisor sees nothing).
    let stopped = *pids.iter().next().expect("a pid");
    let other = *pids.iter().nth(1).expect("two pids");
    kill(Pid::from_raw(stopped), Signal::SIGSTOP).expect("SIGSTOP");
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let status = pool.mg().status().await;
        let down: Vec<Value> = peers(&status)
            .into_iter()
            .filter(|p| p["state"] == "down")
            .collect();
        if down.len() == 1 {
            assert_eq!(down[0]["reason"], "active", "{status}");
            break;
        }
        if Instant::now() >= deadline {
            let _ = kill(Pid::from_raw(stopped), Signal::SIGCONT);
            panic!("no worker taken out: {status}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for _ in 0..6 {
        let start = Instant::now();
        let pid = pool.get("/x").await["pid"].as_i64().unwrap_or(-1) as i32;
        assert_eq!(pid, other);
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "{:?}",
            start.elapsed()
        );
    }
    kill(Pid::from_raw(stopped), Signal::SIGCONT).expect("SIGCONT");
    let deadline = Instant::now() + Duration::from_secs(5);
    while !peers(&pool.mg().status().await)
        .iter()
        .all(|p| p["state"] == "up")
    {
        assert!(Instant::now() < deadline, "{}", pool.mg().status().await);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut served = std::collections::BTreeSet::new();
    for _ in 0..8 {
        served.insert(pool.get("/x").await["pid"].as_i64().unwrap_or(-1) as i32);
    }
    assert!(served.contains(&stopped), "{served:?} after SIGCONT");
}

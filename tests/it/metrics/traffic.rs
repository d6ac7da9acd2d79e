//! The traffic families through real requests: requests by route,
//! method and status class; upstream tries per peer for every protocol,
//! with connect errors, timeouts and retries; client connections by
//! listener, TLS and the HTTP version they speak.

use std::time::{Duration, Instant};

use super::{REQUESTS, SERVER, fresh_client, scrape};
use crate::support::{Moongate, Origin, client, text};
use crate::upstream_fastcgi::Php;
use crate::upstream_h2::H2Origin;
use crate::upstream_uwsgi::Uwsgi;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_are_counted_by_route_and_status_class_across_both_workers() {
    let origin = Origin::start(|req| async move {
        if req.uri().path().ends_with("/fail") {
            text(500, "broken")
        } else {
            text(200, "ok")
        }
    })
    .await;
    let conf = format!(
        "{SERVER}[upstream.app]\nservers = [{{ addr = \"{}\" }}]\n\n\
         [[route]]\nname = \"api\"\npath = \"/api/\"\nupstream = \"app\"\n\n\
         [[route]]\npath = \"/other/\"\nupstream = \"app\"\n\n\
         [[route]]\nname = \"who\"\npath_exact = \"/who\"\nlua.content_inline = \"ngx.print(ngx.worker.id())\"\n",
        origin.addr
    );
    // The unnamed route's default name: file:line of its `[[route]]`.
    let line = conf
        .lines()
        .position(|l| l == "path = \"/other/\"")
        .unwrap();
    let other_suffix = format!("00-test.toml:{line}");
    let mg = Moongate::start(&conf);
    let http = fresh_client();
    let before = scrape(&mg).await;

    // Until both workers answered (`ngx.worker.id()`), counting the tries.
    let mut seen = [false, false];
    let mut who = 0;
    while !(seen[0] && seen[1]) {
        assert!(who < 200, "one worker never answered");
        let id = http.get(mg.url("/who")).send().await.unwrap();
        let id: usize = id.text().await.unwrap().parse().unwrap();
        seen[id] = true;
        who += 1;
    }
    for i in 0..20 {
        let resp = http
            .get(mg.url(&format!("/api/item-{i}")))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.text().await.unwrap(), "ok");
    }
    for _ in 0..3 {
        let resp = http
            .post(mg.url("/api/secret-path/fail"))
            .body("hello")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 500);
        resp.text().await.unwrap();
    }
    let resp = http.delete(mg.url("/other/x")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    for _ in 0..2 {
        let resp = http.get(mg.url("/nowhere-at-all")).send().await.unwrap();
        assert_eq!(resp.status(), 404);
        resp.text().await.unwrap();
    }

    let after = scrape(&mg).await;
    let delta =
        |name: &str, labels: &[(&str, &str)]| after.get(name, labels) - before.get(name, labels);
    let req = |route: &str, method: &str, class: &str| {
        delta(
            REQUESTS,
            &[
                ("route", route),
                ("method_class", method),
                ("status_class", class),
            ],
        )
    };
    assert_eq!(req("who", "GET", "2xx"), who as f64);
    assert_eq!(req("api", "GET", "2xx"), 20.0);
    assert_eq!(req("api", "POST", "5xx"), 3.0);
    assert_eq!(delta(REQUESTS, &[("route", "api")]), 23.0);
    assert_eq!(req("", "GET", "4xx"), 2.0, "unrouted: route=\"\"");
    let other = after
        .samples
        .keys()
        .filter(|k| k.name == REQUESTS)
        .filter_map(|k| k.labels.get("route"))
        .find(|r| r.ends_with(&other_suffix))
        .unwrap_or_else(|| panic!("no route named *{other_suffix}:\n{}", after.text))
        .clone();
    assert_eq!(req(&other, "DELETE", "2xx"), 1.0);
    // The file's name within conf.d, not its path.
    assert_eq!(other, other_suffix);

    let api = [("route", "api")];
    assert_eq!(delta("moongate_request_duration_seconds_count", &api), 23.0);
    assert_eq!(
        delta(
            "moongate_request_duration_seconds_bucket",
            &[("route", "api"), ("le", "+Inf")]
        ),
        23.0
    );
    assert!(delta("moongate_request_duration_seconds_sum", &api) > 0.0);
    assert_eq!(delta("moongate_request_bytes_total", &api), 15.0);
    let body_bytes = 20 * "ok".len() + 3 * "broken".len();
    assert_eq!(
        delta("moongate_response_bytes_total", &api),
        body_bytes as f64
    );

    let peer = origin.addr.to_string();
    let up = |class: &str| {
        delta(
            "moongate_upstream_requests_total",
            &[
                ("upstream", "app"),
                ("peer", &peer),
                ("status_class", class),
            ],
        )
    };
    assert_eq!(up("2xx"), 21.0);
    assert_eq!(up("5xx"), 3.0);
    assert_eq!(
        delta(
            "moongate_upstream_response_seconds_count",
            &[("upstream", "app"), ("peer", &peer)]
        ),
        24.0
    );
    assert_eq!(origin.hits(), 24);

    // One connection per request (the client keeps none), on the
    // configured listener; all closed once the client is done, every one
    // having spoken HTTP/1.
    let listener = [("listener", "127.0.0.1:0"), ("tls", "false")];
    let sent = (who + 20 + 3 + 1 + 2) as f64;
    assert_eq!(
        delta("moongate_connections_accepted_total", &listener),
        sent
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let m = scrape(&mg).await;
        let closed = m.get("moongate_connections_closed_total", &listener);
        let open = m.get("moongate_connections_open", &listener);
        if open == 0.0 {
            assert_eq!(
                closed,
                m.get("moongate_connections_accepted_total", &listener)
            );
            let h1 = [listener[0], listener[1], ("protocol", "h1")];
            assert_eq!(m.get("moongate_connections_closed_total", &h1), closed);
            break;
        }
        assert!(Instant::now() < deadline, "still open: {open}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let version = env!("CARGO_PKG_VERSION");
    assert!(after.has("moongate_build_info", &[("version", version)]));
    assert_eq!(after.get("moongate_build_info", &[]), 1.0);
    assert_eq!(after.get("moongate_config_generation", &[]), 1.0);
    assert!(after.has(
        "moongate_upstream_peer_up",
        &[("upstream", "app"), ("peer", &peer), ("reason", "up")]
    ));
    // Label values are route names, upstreams and peers: never a path.
    for v in after.label_values() {
        assert!(
            !v.contains("item-") && !v.contains("secret") && !v.contains("nowhere"),
            "{v}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_tries_are_counted_per_peer_for_http1_h2_uwsgi_and_fastcgi() {
    let (one, two) = (Origin::named("one").await, Origin::named("two").await);
    let (h2a, h2b) = (H2Origin::start(100).await, H2Origin::start(100).await);
    let app = Uwsgi::start();
    let php = Php::start(2, "");
    let mg = Moongate::start(&format!(
        "{SERVER}[upstream.web]\nservers = [{{ addr = \"{}\" }}, {{ addr = \"{}\" }}]\n\n\
         [upstream.grpcish]\nprotocol = \"h2\"\nservers = [{{ addr = \"{}\" }}, {{ addr = \"{}\" }}]\n\n\
         [upstream.wsgi]\nprotocol = \"uwsgi\"\nservers = [{{ addr = \"{}\" }}]\n\n\
         [upstream.php]\nprotocol = \"fastcgi\"\nroot = \"{}\"\nservers = [{{ addr = \"{}\" }}]\n\n\
         [[route]]\nname = \"web\"\npath = \"/web/\"\nupstream = \"web\"\n\n\
         [[route]]\nname = \"h2\"\npath = \"/h2/\"\nupstream = \"grpcish\"\n\n\
         [[route]]\nname = \"wsgi\"\npath = \"/wsgi/\"\nupstream = \"wsgi\"\n\n\
         [[route]]\nname = \"php\"\npath_exact = \"/index.php\"\nupstream = \"php\"\n",
        one.addr,
        two.addr,
        h2a.addr,
        h2b.addr,
        app.addr,
        php.root.path().display(),
        php.addr()
    ));
    let http = fresh_client();
    let before = scrape(&mg).await;
    for path in ["/web/x", "/h2/x", "/wsgi/x", "/index.php"] {
        for _ in 0..10 {
            let resp = http.get(mg.url(path)).send().await.unwrap();
            assert_eq!(resp.status(), 200, "{path}");
            resp.text().await.unwrap();
        }
    }
    let after = scrape(&mg).await;
    let answered = |upstream: &str, peer: &str| {
        let labels = [
            ("upstream", upstream),
            ("peer", peer),
            ("status_class", "2xx"),
        ];
        after.get("moongate_upstream_requests_total", &labels)
            - before.get("moongate_upstream_requests_total", &labels)
    };
    // Round robin over two peers: five each, as the origins saw.
    assert_eq!(answered("web", &one.addr.to_string()), one.hits() as f64);
    assert_eq!(answered("web", &two.addr.to_string()), two.hits() as f64);
    assert_eq!(one.hits(), 5);
    assert_eq!(answered("grpcish", &h2a.addr.to_string()), 5.0);
    assert_eq!(answered("grpcish", &h2b.addr.to_string()), 5.0);
    assert_eq!(answered("wsgi", &app.addr.to_string()), 10.0);
    assert_eq!(answered("php", &php.addr()), 10.0);
    let peers = [
        ("grpcish", h2a.addr.to_string()),
        ("wsgi", app.addr.to_string()),
        ("php", php.addr()),
    ];
    for (upstream, peer) in &peers {
        let labels = [("upstream", *upstream), ("peer", peer.as_str())];
        assert!(
            after.get("moongate_upstream_response_seconds_count", &labels) >= 5.0,
            "{upstream}"
        );
        assert_eq!(
            after.get("moongate_upstream_connect_errors_total", &labels),
            0.0
        );
    }
    // The pool: one kept-alive connection served every request in a row
    // (whichever worker thread took it), uwsgi connects per request, and
    // an HTTP/2 connection (one per worker thread at most) stays active.
    let conns = |upstream: &str, peer: &str| {
        let p = [("upstream", upstream), ("peer", peer)];
        let state = |s| after.get("moongate_upstream_connections", &[p[0], p[1], ("state", s)]);
        (
            after.get("moongate_upstream_connects_total", &p),
            state("idle"),
            state("active"),
        )
    };
    assert_eq!(conns("web", &one.addr.to_string()), (1.0, 1.0, 0.0));
    assert_eq!(conns("php", &php.addr()), (1.0, 1.0, 0.0));
    assert_eq!(conns("wsgi", &app.addr.to_string()), (10.0, 0.0, 0.0));
    let (connects, idle, active) = conns("grpcish", &h2a.addr.to_string());
    assert!((1.0..=2.0).contains(&connects), "{connects}");
    assert_eq!((idle, active), (0.0, connects));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_peer_counts_a_connect_error_and_a_retry_and_shows_passively_down() {
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let live = Origin::named("live").await;
    let mg = Moongate::start(&format!(
        "{SERVER}[upstream.app]\nservers = [{{ addr = \"{dead}\" }}, {{ addr = \"{}\" }}]\n\n\
         [upstream.gone]\nservers = [{{ addr = \"{dead}\" }}]\n\n\
         [[route]]\nname = \"gone\"\npath = \"/gone\"\nupstream = \"gone\"\n\n\
         [[route]]\nname = \"api\"\npath = \"/\"\nupstream = \"app\"\n",
        live.addr
    ));
    let http = fresh_client();
    for _ in 0..4 {
        let resp = http.get(mg.url("/x")).send().await.unwrap();
        assert_eq!(resp.status(), 200);
    }
    let m = scrape(&mg).await;
    let dead_peer = [("upstream", "app"), ("peer", &*dead.to_string())];
    // Round robin picked it once; its failure marked it down (max_fails 1)
    // and the request went on to the live peer.
    assert_eq!(
        m.get("moongate_upstream_connect_errors_total", &dead_peer),
        1.0,
        "{}",
        m.text
    );
    assert_eq!(m.get("moongate_upstream_retries_total", &dead_peer), 1.0);
    assert_eq!(m.get("moongate_upstream_timeouts_total", &dead_peer), 0.0);
    assert_eq!(m.get("moongate_upstream_requests_total", &dead_peer), 0.0);
    let live_peer = [("upstream", "app"), ("peer", &*live.addr.to_string())];
    assert_eq!(m.get("moongate_upstream_requests_total", &live_peer), 4.0);
    assert_eq!(m.get("moongate_upstream_retries_total", &live_peer), 0.0);
    let down = [dead_peer[0], dead_peer[1], ("reason", "passive")];
    assert!(m.has("moongate_upstream_peer_up", &down), "{}", m.text);
    assert_eq!(m.get("moongate_upstream_peer_up", &down), 0.0);
    assert_eq!(
        m.get(REQUESTS, &[("route", "api"), ("status_class", "2xx")]),
        4.0
    );

    // An upstream with nothing but the dead peer: a 502, counted as such.
    let resp = http.get(mg.url("/gone")).send().await.unwrap();
    assert_eq!(resp.status(), 502);
    resp.text().await.unwrap();
    let after = scrape(&mg).await;
    let gone = [("route", "gone"), ("status_class", "5xx")];
    assert_eq!(after.since(&m, REQUESTS, &gone), 1.0);
    let gone_peer = [("upstream", "gone"), ("peer", &*dead.to_string())];
    assert_eq!(
        after.since(&m, "moongate_upstream_connect_errors_total", &gone_peer),
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_peer_counts_a_timeout() {
    let slow = Origin::start(|_req| async move {
        tokio::time::sleep(Duration::from_secs(3)).await;
        text(200, "late")
    })
    .await;
    let mg = Moongate::start(&format!(
        "{SERVER}[upstream.app]\nread_timeout = \"200ms\"\nservers = [{{ addr = \"{}\" }}]\n\n\
         [[route]]\nname = \"slow\"\npath = \"/\"\nupstream = \"app\"\n",
        slow.addr
    ));
    let resp = client().get(mg.url("/x")).send().await.unwrap();
    assert_eq!(resp.status(), 504);
    let m = scrape(&mg).await;
    let peer = [("upstream", "app"), ("peer", &*slow.addr.to_string())];
    assert_eq!(
        m.get("moongate_upstream_timeouts_total", &peer),
        1.0,
        "{}",
        m.text
    );
    assert_eq!(m.get("moongate_upstream_connect_errors_total", &peer), 0.0);
    assert_eq!(
        m.get(
            REQUESTS,
            &[
                ("route", "slow"),
                ("method_class", "GET"),
                ("status_class", "5xx")
            ]
        ),
        1.0
    );
}

/// A client of the TLS listener that trusts `pem`; HTTP/1.1 only when
/// `h1`, else whatever ALPN picks (h2).
fn tls_client(pem: &crate::tls::Pem, addr: std::net::SocketAddr, h1: bool) -> reqwest::Client {
    crate::support::install_crypto();
    let root = reqwest::Certificate::from_pem(pem.cert.as_bytes()).expect("pem");
    let builder = reqwest::Client::builder()
        .no_proxy()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(root)
        .resolve("a.test", addr)
        .timeout(Duration::from_secs(10));
    let builder = if h1 { builder.http1_only() } else { builder };
    builder.build().expect("tls client")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_are_counted_by_tls_and_the_http_version_they_speak() {
    let origin = Origin::named("app").await;
    let pem = crate::tls::self_signed(&["a.test"]);
    let dir = tempfile::tempdir().unwrap();
    let cert = crate::tls::write_pair(dir.path(), "a", &pem);
    let conf = format!(
        "{SERVER}[[server.tls]]\nlisten = \"127.0.0.1:0\"\ncerts = [{cert}]\nalpn = [\"h2\", \"http/1.1\"]\n\n\
         [upstream.app]\nservers = [{{ addr = \"{}\" }}]\n\n[[route]]\npath = \"/\"\nupstream = \"app\"\n",
        origin.addr
    );
    std::fs::write(dir.path().join("00-test.toml"), conf).unwrap();
    let mg = Moongate::start_in(dir);
    let tls_addr = mg.https[0];
    let before = scrape(&mg).await;

    // Clients that keep their connection open: h2c with prior knowledge
    // on the plain listener, h2 and HTTP/1.1 over TLS.
    crate::support::install_crypto();
    let h2c = reqwest::Client::builder()
        .no_proxy()
        .http2_prior_knowledge()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let h2 = tls_client(&pem, tls_addr, false);
    let h1s = tls_client(&pem, tls_addr, true);
    let url = format!("https://a.test:{}/x", tls_addr.port());
    for (client, url, version) in [
        (&h2c, mg.url("/x"), reqwest::Version::HTTP_2),
        (&h2, url.clone(), reqwest::Version::HTTP_2),
        (&h1s, url.clone(), reqwest::Version::HTTP_11),
    ] {
        let resp = client.get(&url).send().await.unwrap();
        assert_eq!((resp.status().as_u16(), resp.version()), (200, version));
        resp.text().await.unwrap();
    }
    // HTTP/1.1 on the plain listener (closed after each request).
    for _ in 0..2 {
        let resp = fresh_client().get(mg.url("/x")).send().await.unwrap();
        assert_eq!(resp.status(), 200);
    }
    // Connections that never speak HTTP: one closed before a byte, one
    // failing its TLS handshake.
    drop(tokio::net::TcpStream::connect(mg.http[0]).await.unwrap());
    let bad =
        crate::support::raw_exchange(tls_addr, b"GET / HTTP/1.1\r\n\r\n", Duration::from_secs(5));
    bad.await;

    let conns = |tls: &'static str, protocol: &'static str| {
        [
            ("listener", "127.0.0.1:0"),
            ("tls", tls),
            ("protocol", protocol),
        ]
    };
    let open = |m: &super::Scrape, tls, protocol| {
        m.get("moongate_connections_open", &conns(tls, protocol))
    };
    let closed = |m: &super::Scrape, tls, protocol| {
        m.since(
            &before,
            "moongate_connections_closed_total",
            &conns(tls, protocol),
        )
    };
    // The kept connections are open under their protocol; the others
    // close as soon as moongate sees their end.
    let deadline = Instant::now() + Duration::from_secs(5);
    let m = loop {
        let m = scrape(&mg).await;
        let settled = closed(&m, "false", "h1") == 2.0
            && closed(&m, "false", "none") == 1.0
            && closed(&m, "true", "none") == 1.0;
        if settled {
            break m;
        }
        assert!(Instant::now() < deadline, "not closed yet:\n{}", m.text);
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(open(&m, "false", "h2"), 1.0, "{}", m.text);
    assert_eq!(open(&m, "true", "h2"), 1.0);
    assert_eq!(open(&m, "true", "h1"), 1.0);
    assert_eq!(open(&m, "false", "h1"), 0.0);
    for tls in ["true", "false"] {
        assert_eq!(open(&m, tls, "none"), 0.0);
    }
    let accepted = |tls| {
        m.since(
            &before,
            "moongate_connections_accepted_total",
            &[("listener", "127.0.0.1:0"), ("tls", tls)],
        )
    };
    assert_eq!(accepted("false"), 4.0, "h2c, two HTTP/1.1, one silent");
    assert_eq!(accepted("true"), 3.0, "h2, HTTP/1.1, one failed handshake");

    // The clients go away: every connection closes under its protocol.
    drop((h2c, h2, h1s));
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let m = scrape(&mg).await;
        let still = m.get("moongate_connections_open", &[("listener", "127.0.0.1:0")]);
        if still == 0.0 {
            assert_eq!(closed(&m, "false", "h2"), 1.0);
            assert_eq!(closed(&m, "true", "h2"), 1.0);
            assert_eq!(closed(&m, "true", "h1"), 1.0);
            break;
        }
        assert!(Instant::now() < deadline, "still open: {still}\n{}", m.text);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

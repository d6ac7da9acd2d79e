//! `GET /metrics` (issue 15 point 1): scrape, send real requests through
//! a server with two worker threads, scrape again and check that each
//! family moved by exactly what was sent, by route and status class, per
//! upstream peer for HTTP/1, HTTP/2 and uwsgi upstreams; connect errors,
//! timeouts and retries of a dead or silent peer; a peer taken out by an
//! active check shown down; client connections accepted, open and
//! closed; reloads and the config generation; no label
//! value carrying a request path. The exposition is parsed by a small
//! parser of the text format here.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::support::{Moongate, Origin, client, text};
use crate::upstream_fastcgi::Php;
use crate::upstream_h2::H2Origin;
use crate::upstream_uwsgi::Uwsgi;

/// `[server]` with two worker threads and an admin listener.
const SERVER: &str = "[server]\nlisten = [\"127.0.0.1:0\"]\nworkers = 2\naccess_log = \"off\"\n\n[admin]\nlisten = \"127.0.0.1:0\"\n\n";

/// One sample: its family name and labels.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Key {
    name: String,
    labels: BTreeMap<String, String>,
}

/// The samples of a scrape.
#[derive(Debug)]
struct Scrape {
    samples: BTreeMap<Key, f64>,
    text: String,
}

impl Scrape {
    /// The sum of the samples of `name` whose labels include `labels`.
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.samples
            .iter()
            .filter(|(k, _)| {
                k.name == name
                    && labels
                        .iter()
                        .all(|(l, v)| k.labels.get(*l).map(String::as_str) == Some(*v))
            })
            .map(|(_, v)| v)
            .sum()
    }

    /// Whether a sample of `name` with exactly `labels` exists.
    fn has(&self, name: &str, labels: &[(&str, &str)]) -> bool {
        let key = Key {
            name: name.to_owned(),
            labels: labels
                .iter()
                .map(|(l, v)| (l.to_string(), v.to_string()))
                .collect(),
        };
        self.samples.contains_key(&key)
    }

    /// Every label value of every sample.
    fn label_values(&self) -> impl Iterator<Item = &str> {
        self.samples
            .keys()
            .flat_map(|k| k.labels.values().map(String::as_str))
    }
}

/// Parses the text format: `# ...` lines skipped, `name{l="v",...} value`
/// (label values with `\"`, `\\` and `\n` escapes), ends with `# EOF`.
fn parse(text: &str) -> Scrape {
    assert!(text.ends_with("# EOF\n"), "no # EOF at the end:\n{text}");
    let mut samples = BTreeMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let (name, rest) = match line.find('{') {
            Some(i) => (&line[..i], &line[i + 1..]),
            None => {
                let (name, value) = line.split_once(' ').expect("name value");
                let key = Key {
                    name: name.to_owned(),
                    labels: BTreeMap::new(),
                };
                samples.insert(key, value.parse().expect("number"));
                continue;
            }
        };
        let mut labels = BTreeMap::new();
        let mut chars = rest.chars();
        loop {
            let label: String = chars.by_ref().take_while(|c| *c != '=').collect();
            assert_eq!(chars.next(), Some('"'), "{line}");
            let mut value = String::new();
            while let Some(c) = chars.next() {
                match c {
                    '"' => break,
                    '\\' => match chars.next() {
                        Some('n') => value.push('\n'),
                        Some(c) => value.push(c),
                        None => panic!("{line}"),
                    },
                    c => value.push(c),
                }
            }
            labels.insert(label, value);
            match chars.next() {
                Some(',') => continue,
                Some('}') => break,
                other => panic!("unexpected {other:?} in {line}"),
            }
        }
        let value = chars.as_str().trim();
        let key = Key {
            name: name.to_owned(),
            labels,
        };
        let value = value.parse().unwrap_or_else(|_| panic!("number in {line}"));
        assert!(samples.insert(key, value).is_none(), "sample twice: {line}");
    }
    Scrape {
        samples,
        text: text.to_owned(),
    }
}

/// `GET /metrics`, parsed.
async fn scrape(mg: &Moongate) -> Scrape {
    let resp = client()
        .get(mg.admin_url("/metrics"))
        .send()
        .await
        .expect("GET /metrics");
    assert_eq!(resp.status(), 200);
    let ctype = resp.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(
        ctype.starts_with("application/openmetrics-text; version=1.0.0"),
        "{ctype}"
    );
    parse(&resp.text().await.expect("body"))
}

/// A client that opens a new connection per request, so the kernel
/// spreads them over both worker threads.
fn fresh_client() -> reqwest::Client {
    crate::support::install_crypto();
    reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(15))
        .build()
        .expect("client")
}

const REQUESTS: &str = "moongate_requests_total";

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
    // configured listener; all closed once the client is done.
    let listener = [("listener", "127.0.0.1:0"), ("protocol", "tcp")];
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_taken_out_by_an_active_check_is_shown_down() {
    let good = Origin::named("good").await;
    let bad = Origin::start(|req| async move {
        if req.uri().path() == "/healthz" {
            text(500, "sick")
        } else {
            text(200, "bad")
        }
    })
    .await;
    let mg = Moongate::start(&format!(
        "{SERVER}[upstream.app]\nservers = [{{ addr = \"{}\" }}, {{ addr = \"{}\" }}]\n\
         health = {{ path = \"/healthz\", interval = \"100ms\", timeout = \"1s\", fails = 1, passes = 1 }}\n\n\
         [[route]]\npath = \"/\"\nupstream = \"app\"\n",
        good.addr, bad.addr
    ));
    let bad_down = [
        ("upstream", "app"),
        ("peer", &*bad.addr.to_string()),
        ("reason", "active"),
    ];
    let deadline = Instant::now() + Duration::from_secs(5);
    let m = loop {
        let m = scrape(&mg).await;
        if m.has("moongate_upstream_peer_up", &bad_down) {
            break m;
        }
        assert!(Instant::now() < deadline, "never down:\n{}", m.text);
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(m.get("moongate_upstream_peer_up", &bad_down), 0.0);
    let good_up = [
        ("upstream", "app"),
        ("peer", &*good.addr.to_string()),
        ("reason", "up"),
    ];
    assert_eq!(m.get("moongate_upstream_peer_up", &good_up), 1.0);
    // One series per peer.
    let bad_series = m
        .samples
        .keys()
        .filter(|k| k.name == "moongate_upstream_peer_up")
        .filter(|k| k.labels["peer"] == bad.addr.to_string())
        .count();
    assert_eq!(bad_series, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_are_counted_and_a_route_counts_on_in_its_series() {
    let origin = Origin::named("app").await;
    let upstream = format!(
        "[upstream.app]\nservers = [{{ addr = \"{}\" }}]\n\n",
        origin.addr
    );
    let api = "[[route]]\nname = \"api\"\npath = \"/api/\"\nupstream = \"app\"\n";
    // conf.d holds a link to a file outside it, so rewriting the file
    // wakes no watcher: only the admin reloads below count.
    let outside = tempfile::tempdir().unwrap();
    let real = outside.path().join("real.toml");
    let write = |text: &str| {
        let tmp = outside.path().join("real.toml.tmp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, &real).unwrap();
    };
    write(&format!("{SERVER}{upstream}{api}"));
    let confd = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(&real, confd.path().join("00-test.toml")).unwrap();
    let mg = Moongate::start_in(confd);
    let http = fresh_client();
    let get = |path: &'static str| {
        let http = http.clone();
        let url = mg.url(path);
        async move {
            let resp = http.get(url).send().await.unwrap();
            assert_eq!(resp.status(), 200);
        }
    };
    get("/api/a").await;
    let before = scrape(&mg).await;
    assert_eq!(
        before.get("moongate_reloads_total", &[("result", "ok")]),
        0.0
    );

    // The route moves to another index in the new snapshot.
    let extra = "[[route]]\nname = \"first\"\npath = \"/first/\"\nupstream = \"app\"\n\n";
    write(&format!("{SERVER}{upstream}{extra}{api}"));
    let (status, body) = mg.admin_reload().await;
    assert_eq!(status, 200, "{body}");
    get("/api/b").await;
    get("/first/c").await;
    write("[[route]]\npath = 3\n");
    let (status, _) = mg.admin_reload().await;
    assert_eq!(status, 422);

    let after = scrape(&mg).await;
    assert_eq!(
        after.get("moongate_reloads_total", &[("result", "ok")]),
        1.0
    );
    assert_eq!(
        after.get("moongate_reloads_total", &[("result", "failed")]),
        1.0
    );
    assert_eq!(
        after.get("moongate_config_generation", &[]),
        before.get("moongate_config_generation", &[]) + 1.0
    );
    assert!(after.get("moongate_last_reload_timestamp_seconds", &[]) > 1.7e9);
    assert_eq!(after.get(REQUESTS, &[("route", "api")]), 2.0);
    assert_eq!(after.get(REQUESTS, &[("route", "first")]), 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_need_the_admin_token_when_one_is_set() {
    let mg = Moongate::start(
        "[server]\nlisten = [\"127.0.0.1:0\"]\nworkers = 1\naccess_log = \"off\"\n\n\
         [admin]\nlisten = \"127.0.0.1:0\"\ntoken = \"s3cret\"\n\n\
         [[route]]\npath = \"/\"\nlua.content_inline = \"ngx.say('hi')\"\n",
    );
    let http = client();
    let none = http.get(mg.admin_url("/metrics")).send().await.unwrap();
    assert_eq!(none.status(), 401);
    let ok = http
        .get(mg.admin_url("/metrics"))
        .bearer_auth("s3cret")
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    let m = parse(&ok.text().await.unwrap());
    assert_eq!(m.get("moongate_build_info", &[]), 1.0);
    let post = http
        .post(mg.admin_url("/metrics"))
        .bearer_auth("s3cret")
        .send()
        .await
        .unwrap();
    assert_eq!(post.status(), 405);
}

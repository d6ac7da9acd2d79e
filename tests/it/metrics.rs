//! `GET /metrics` (issue 15 point 1): scrape, send real requests through
//! a server with two worker threads, scrape again and check that each
//! family moved by exactly what was sent. This file holds the harness (a
//! small parser of the text format, every test's scrapes go through it);
//! the tests are in `traffic` (requests by route and status class,
//! upstream tries per peer for HTTP/1, HTTP/2, uwsgi and FastCGI, connect
//! errors, timeouts and retries, client connections by TLS and HTTP
//! version, no label value carrying a request path), `steps` (cache
//! lookups, stores and tiers, rate-limit decisions and Redis fallbacks,
//! Lua errors, budget overruns and phase durations) and `control` (peer
//! health, reloads, managed worker pools, the admin token, the on/off
//! switch).

use std::collections::BTreeMap;
use std::time::Duration;

use crate::support::{Moongate, client};

mod traffic;
mod steps;
mod control;
mod openmetrics;

/// `[server]` with two worker threads and an admin listener.
pub(crate) const SERVER: &str = "[server]\nlisten = [\"127.0.0.1:0\"]\nworkers = 2\naccess_log = \"off\"\n\n[admin]\nlisten = \"127.0.0.1:0\"\n\n";

/// One sample: its family name and labels.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Key {
    name: String,
    labels: BTreeMap<String, String>,
}

/// The samples of a scrape.
#[derive(Debug)]
pub(crate) struct Scrape {
    samples: BTreeMap<Key, f64>,
    text: String,
}

impl Scrape {
    /// The sum of the samples of `name` whose labels include `labels`.
    pub(crate) fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
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

    /// How much the samples of `name` whose labels include `labels` grew
    /// since `before`.
    pub(crate) fn since(&self, before: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.get(name, labels) - before.get(name, labels)
    }

    /// Whether a sample of `name` with exactly `labels` exists.
    pub(crate) fn has(&self, name: &str, labels: &[(&str, &str)]) -> bool {
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
pub(crate) fn parse(text: &str) -> Scrape {
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
pub(crate) async fn scrape(mg: &Moongate) -> Scrape {
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
pub(crate) fn fresh_client() -> reqwest::Client {
    crate::support::install_crypto();
    reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(15))
        .build()
        .expect("client")
}

pub(crate) const REQUESTS: &str = "moongate_requests_total";

//! The whole exposition through the reference parser: Python's
//! `prometheus_client` OpenMetrics parser (the format moongate serves,
//! `# EOF` included) must read a scrape with every kind of family in it
//! (counters, gauges, histograms; upstream, cache, limit, Lua, pool and
//! connection families), or the test fails with the parser's error.

use std::process::Stdio;

use tokio::io::AsyncWriteExt;

use super::{SERVER, fresh_client};
use crate::support::{Moongate, Origin, text};

/// What the parser prints for a scrape: `family type samples`, one line
/// each.
const PARSE: &str = "import sys\n\
from prometheus_client.openmetrics.parser import text_string_to_metric_families\n\
for f in text_string_to_metric_families(sys.stdin.read()):\n    print(f.name, f.type, len(f.samples))\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scrape_passes_the_reference_openmetrics_parser() {
    let origin = Origin::start(|_req| async { text(200, "ok") }).await;
    let mg = Moongate::start(&format!(
        "{SERVER}[upstream.app]\nservers = [{{ addr = \"{}\" }}]\n\n\
         [[route]]\nname = \"cached\"\npath = \"/c/\"\nupstream = \"app\"\ncache = \"pages\"\n\n\
         [[route]]\nname = \"limited\"\npath = \"/l/\"\nupstream = \"app\"\nlimit = \"tight\"\n\n\
         [[route]]\nname = \"lua\"\npath = \"/lua\"\nlua.content_inline = \"error('boom')\"\n\n\
         [cache.pages]\nmemory = \"1MiB\"\n\n\
         [limit.tight]\nrate = \"1/m\"\nburst = 1\n",
        origin.addr
    ));
    let http = fresh_client();
    for (path, want) in [("/c/x", 200), ("/l/x", 200), ("/l/x", 429), ("/lua", 500)] {
        let resp = http.get(mg.url(path)).send().await.unwrap();
        assert_eq!(resp.status(), want, "{path}");
        resp.bytes().await.unwrap();
    }
    let scrape = http
        .get(mg.admin_url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let mut child = tokio::process::Command::new("python3")
        .args(["-c", PARSE])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("python3 (test.sh installs it)");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(scrape.as_bytes()).await.unwrap();
    drop(stdin);
    let out = child.wait_with_output().await.unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("No module named 'prometheus_client'"),
        "python3's prometheus_client is missing (test.sh installs it: pip install prometheus-client)"
    );
    assert!(
        out.status.success(),
        "the reference parser refused the scrape: {stderr}\n{scrape}"
    );
    let families = String::from_utf8_lossy(&out.stdout);
    for (family, kind) in [
        ("moongate_build", "info"),
        ("moongate_requests", "counter"),
        ("moongate_request_duration_seconds", "histogram"),
        ("moongate_upstream_requests", "counter"),
        ("moongate_upstream_connections", "gauge"),
        ("moongate_upstream_connects", "counter"),
        ("moongate_cache_lookups", "counter"),
        ("moongate_limit_requests", "counter"),
        ("moongate_lua_errors", "counter"),
        ("moongate_connections_open", "gauge"),
    ] {
        let line = families
            .lines()
            .find(|l| l.split(' ').next() == Some(family))
            .unwrap_or_else(|| panic!("no family {family} in:\n{families}"));
        let mut parts = line.split(' ').skip(1);
        assert_eq!(parts.next(), Some(kind), "{line}");
        let samples: usize = parts.next().and_then(|n| n.parse().ok()).unwrap_or(0);
        assert!(samples > 0, "{line}");
    }
}

//! `[tracing]`: W3C trace context continued, started and forwarded
//! upstream; spans exported over OTLP/HTTP JSON to a receiver in the test
//! with the right parents and attributes; a collector that is down or
//! silent never holds a request; config errors with file:line.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::BodyExt;
use serde_json::Value;

use crate::support::{self, Moongate, Origin};

const INCOMING: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
const INCOMING_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const INCOMING_PARENT: &str = "00f067aa0ba902b7";

/// What the origin saw of a request: `traceparent`, `tracestate` and
/// `x-trace-id` (the route's Lua sets it from `ngx.var.trace_id`), each
/// empty when absent.
type Seen = (String, String, String);

/// An origin that answers 200 and keeps what it saw of each request.
async fn recording_origin() -> (Origin, Arc<Mutex<Vec<Seen>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let keep = seen.clone();
    let origin = Origin::start(move |req| {
        let keep = keep.clone();
        async move {
            let get = |n: &str| {
                req.headers()
                    .get(n)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_owned()
            };
            let seen = (get("traceparent"), get("tracestate"), get("x-trace-id"));
            keep.lock().expect("lock").push(seen);
            support::text(200, "ok")
        }
    })
    .await;
    (origin, seen)
}

/// An OTLP/HTTP receiver: keeps every export request's JSON body.
async fn collector() -> (Origin, Arc<Mutex<Vec<Value>>>) {
    let got = Arc::new(Mutex::new(Vec::new()));
    let keep = got.clone();
    let origin = Origin::start(move |req| {
        let keep = keep.clone();
        async move {
            let body = req
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_else(|_| Bytes::new());
            if let Ok(v) = serde_json::from_slice::<Value>(&body) {
                keep.lock().expect("lock").push(v);
            }
            let mut reply = support::text(200, "{}");
            reply.headers_mut().insert(
                "content-type",
                http::HeaderValue::from_static("application/json"),
            );
            reply
        }
    })
    .await;
    (origin, got)
}

/// Every span the collector got so far.
fn spans(got: &Mutex<Vec<Value>>) -> Vec<Value> {
    let mut out = Vec::new();
    for req in got.lock().expect("lock").iter() {
        for rs in req["resourceSpans"].as_array().into_iter().flatten() {
            for ss in rs["scopeSpans"].as_array().into_iter().flatten() {
                out.extend(ss["spans"].as_array().into_iter().flatten().cloned());
            }
        }
    }
    out
}

/// Waits until the collector has `n` spans (bounded).
async fn wait_spans(got: &Mutex<Vec<Value>>, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let s = spans(got);
        if s.len() >= n || Instant::now() > deadline {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// An attribute's value as text (OTLP JSON writes ints as strings or
/// numbers).
fn attr(span: &Value, key: &str) -> Option<String> {
    let a = span["attributes"]
        .as_array()?
        .iter()
        .find(|a| a["key"] == key)?;
    let v = &a["value"];
    for kind in ["stringValue", "intValue", "boolValue", "doubleValue"] {
        match &v[kind] {
            Value::String(s) => return Some(s.clone()),
            Value::Null => {}
            other => return Some(other.to_string()),
        }
    }
    None
}

fn conf(origin: &Origin, tracing: &str) -> String {
    format!(
        r#"[server]
listen = ["127.0.0.1:0"]
access_log = "off"
{tracing}
[upstream.app]
servers = [{{ addr = "{}" }}]

[[route]]
name = "traced"
path = "/t/"
upstream = "app"
lua.access_inline = "ngx.req.set_header('x-trace-id', ngx.var.trace_id or 'none')"
lua.header_filter_inline = "ngx.header['x-filtered'] = '1'"
lua.body_filter_inline = "ngx.arg[1] = ngx.arg[1]"
"#,
        origin.addr
    )
}

/// The parent span id a `traceparent` names, and its trace id.
fn ids(traceparent: &str) -> (String, String) {
    let parts: Vec<&str> = traceparent.split('-').collect();
    assert_eq!(parts.len(), 4, "{traceparent}");
    assert_eq!(parts[0], "00");
    (parts[1].to_owned(), parts[2].to_owned())
}

#[tokio::test]
async fn an_incoming_trace_is_continued_forwarded_and_exported_with_its_parents() {
    let (origin, seen) = recording_origin().await;
    let (col, got) = collector().await;
    let tracing = format!(
        "[tracing]\notlp_endpoint = \"http://{}/v1/traces\"\nservice_name = \"edge-test\"\nbatch_size = 1\n",
        col.addr
    );
    let logs = tempfile::tempdir().expect("log dir");
    let log = logs.path().join("access.log");
    let logged = conf(&origin, &tracing).replace(
        "access_log = \"off\"",
        &format!(
            "access_log = \"{}\"\naccess_log_fields = [\"route\", \"trace_id\"]",
            log.display()
        ),
    );
    let mg = Moongate::start(&logged);
    let c = support::client();
    let resp = c
        .get(mg.url("/t/x?q=1"))
        .header("traceparent", INCOMING)
        .header("tracestate", "vendor=abc")
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), 200);
    let (tp, ts, var) = seen.lock().expect("lock")[0].clone();
    assert_eq!(var, INCOMING_TRACE, "ngx.var.trace_id");
    let (trace, sent_parent) = ids(&tp);
    assert_eq!(trace, INCOMING_TRACE, "same trace upstream");
    assert_ne!(
        sent_parent, INCOMING_PARENT,
        "our span is the upstream's parent"
    );
    assert!(tp.ends_with("-01"), "sampled flag kept: {tp}");
    assert_eq!(ts, "vendor=abc", "tracestate forwarded unchanged");

    let all = wait_spans(&got, 5).await;
    let server = all
        .iter()
        .find(|s| s["kind"] == 2 || s["kind"] == "SPAN_KIND_SERVER")
        .unwrap_or_else(|| panic!("no server span in {all:?}"));
    assert_eq!(server["traceId"], INCOMING_TRACE);
    assert_eq!(server["parentSpanId"], INCOMING_PARENT);
    assert_eq!(server["name"], "HTTP GET traced");
    assert_eq!(attr(server, "http.request.method").as_deref(), Some("GET"));
    assert_eq!(attr(server, "url.path").as_deref(), Some("/t/x"));
    assert_eq!(attr(server, "http.route").as_deref(), Some("traced"));
    assert_eq!(
        attr(server, "http.response.status_code").as_deref(),
        Some("200")
    );
    assert_eq!(attr(server, "client.address").as_deref(), Some("127.0.0.1"));
    assert_eq!(attr(server, "server.address").as_deref(), Some("127.0.0.1"));
    let peer = origin.addr.to_string();
    assert_eq!(
        attr(server, "moongate.upstream.address"),
        Some(peer.clone())
    );
    let server_id = server["spanId"].as_str().expect("span id").to_owned();

    let client = all
        .iter()
        .find(|s| s["kind"] == 3 || s["kind"] == "SPAN_KIND_CLIENT")
        .unwrap_or_else(|| panic!("no client span in {all:?}"));
    assert_eq!(client["traceId"], INCOMING_TRACE);
    assert_eq!(client["parentSpanId"], server_id.as_str());
    assert_eq!(
        client["spanId"],
        sent_parent.as_str(),
        "the upstream's parent is the client span"
    );
    assert_eq!(attr(client, "network.peer.address"), Some(peer));
    assert_eq!(
        attr(client, "http.response.status_code").as_deref(),
        Some("200")
    );

    for phase in ["access", "header_filter", "body_filter"] {
        let name = format!("lua {phase}");
        let lua: Vec<&Value> = all.iter().filter(|s| s["name"] == name.as_str()).collect();
        assert_eq!(lua.len(), 1, "one {name} span in {all:?}");
        assert_eq!(lua[0]["parentSpanId"], server_id.as_str());
        assert_eq!(lua[0]["traceId"], INCOMING_TRACE);
        assert_eq!(attr(lua[0], "moongate.lua.phase").as_deref(), Some(phase));
    }
    assert_eq!(all.len(), 5, "server, client and three Lua spans: {all:?}");

    let line = format!("{{\"route\":\"traced\",\"trace_id\":\"{INCOMING_TRACE}\"}}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains(&line) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no {line} in the access log: {text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let body = &got.lock().expect("lock")[0];
    let resource = body["resourceSpans"][0]["resource"].to_string();
    assert!(resource.contains("edge-test"), "service.name: {resource}");
}

#[tokio::test]
async fn a_missing_or_invalid_traceparent_starts_a_new_trace() {
    let (origin, seen) = recording_origin().await;
    let mg = Moongate::start(&conf(&origin, "[tracing]\n"));
    let c = support::client();
    let bad = "00-00000000000000000000000000000000-00f067aa0ba902b7-01";
    for incoming in [None, Some(bad), Some("garbage")] {
        let mut req = c.get(mg.url("/t/"));
        if let Some(tp) = incoming {
            req = req.header("traceparent", tp).header("tracestate", "a=b");
        }
        assert_eq!(req.send().await.expect("request").status(), 200);
    }
    let seen = seen.lock().expect("lock").clone();
    assert_eq!(seen.len(), 3);
    let mut traces = Vec::new();
    for (tp, ts, var) in &seen {
        let (trace, parent) = ids(tp);
        assert_eq!(var, &trace, "ngx.var.trace_id is the new trace's");
        assert_eq!(trace.len(), 32);
        assert_eq!(parent.len(), 16);
        assert_ne!(trace, "0".repeat(32));
        assert_ne!(parent, "0".repeat(16));
        assert_eq!(ts, "", "a new trace carries no tracestate");
        traces.push(trace);
    }
    traces.dedup();
    assert_eq!(traces.len(), 3, "each request its own trace: {traces:?}");
}

#[tokio::test]
async fn without_tracing_the_headers_pass_untouched() {
    let (origin, seen) = recording_origin().await;
    let mg = Moongate::start(&conf(&origin, ""));
    let c = support::client();
    assert_eq!(
        c.get(mg.url("/t/")).send().await.expect("req").status(),
        200
    );
    let resp = c
        .get(mg.url("/t/"))
        .header("traceparent", INCOMING)
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), 200);
    let seen = seen.lock().expect("lock").clone();
    assert_eq!(seen[0].0, "", "no traceparent made without [tracing]");
    assert_eq!(seen[0].2, "none", "no ngx.var.trace_id without [tracing]");
    assert_eq!(seen[1].0, INCOMING, "passed on as received");
}

#[tokio::test]
async fn a_collector_that_is_down_or_silent_holds_no_request() {
    let (origin, _seen) = recording_origin().await;
    // Silent: accepts and never answers, so exports wait out their
    // timeout while requests keep coming and the queue overflows.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let silent_addr = silent.local_addr().expect("addr");
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            held.push(s);
        }
    });
    // Down: a port nothing listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let closed_addr = closed.local_addr().expect("addr");
    drop(closed);
    for (collector, drops) in [(silent_addr, true), (closed_addr, false)] {
        let tracing = format!(
            "[tracing]\notlp_endpoint = \"http://{collector}/v1/traces\"\nqueue_size = 4\nbatch_size = 2\nexport_timeout = \"3s\"\n\n\
             [admin]\nlisten = \"127.0.0.1:0\"\n"
        );
        let mg = Moongate::start(&conf(&origin, &tracing));
        let c = support::client();
        for _ in 0..40 {
            let resp = tokio::time::timeout(Duration::from_secs(5), c.get(mg.url("/t/")).send())
                .await
                .expect("answered while the collector is unreachable")
                .expect("request");
            assert_eq!(resp.status(), 200);
        }
        if drops {
            let line = mg.wait_log("OTLP span queue full", Duration::from_secs(15));
            assert!(line.contains("dropped"), "{line}");
            // And counted for /metrics.
            let text = c
                .get(mg.admin_url("/metrics"))
                .send()
                .await
                .expect("scrape")
                .text()
                .await
                .expect("text");
            let dropped: f64 = text
                .lines()
                .find_map(|l| l.strip_prefix("moongate_tracing_dropped_spans_total "))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or_else(|| panic!("no dropped-spans counter:\n{text}"));
            assert!(dropped > 0.0, "{dropped}");
        } else {
            mg.wait_log("OTLP export failed", Duration::from_secs(15));
        }
        // Still serving.
        let resp = c.get(mg.url("/t/")).send().await.expect("request");
        assert_eq!(resp.status(), 200);
    }
}

#[tokio::test]
async fn a_changed_tracing_table_takes_effect_on_reload() {
    let (origin, seen) = recording_origin().await;
    let (col, got) = collector().await;
    let mg = Moongate::start(&conf(&origin, ""));
    let c = support::client();
    assert_eq!(
        c.get(mg.url("/t/")).send().await.expect("req").status(),
        200
    );
    assert_eq!(seen.lock().expect("lock")[0].0, "");

    // [tracing] added (propagation only), then an exporter: each taken by
    // the watcher's reload.
    mg.write_conf("00-test.toml", &conf(&origin, "[tracing]\n"));
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        assert_eq!(
            c.get(mg.url("/t/")).send().await.expect("req").status(),
            200
        );
        if !seen
            .lock()
            .expect("lock")
            .last()
            .expect("seen")
            .0
            .is_empty()
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "[tracing] not applied by the reload"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(spans(&got).is_empty(), "no exporter configured yet");
    let exporting = format!(
        "[tracing]\notlp_endpoint = \"http://{}/v1/traces\"\nbatch_size = 1\n",
        col.addr
    );
    mg.write_conf("00-test.toml", &conf(&origin, &exporting));
    let deadline = Instant::now() + Duration::from_secs(15);
    while spans(&got).is_empty() {
        assert_eq!(
            c.get(mg.url("/t/")).send().await.expect("req").status(),
            200
        );
        assert!(
            Instant::now() < deadline,
            "the reloaded exporter sent nothing"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[test]
fn tracing_config_errors_name_file_line_and_column() {
    let cases = [
        ("sample_ratio = 2", "sample_ratio", 16),
        (
            "otlp_endpoint = \"https://127.0.0.1:4318/v1/traces\"",
            "only plain http://",
            17,
        ),
        ("otlp_endpoint = \"not a url\"", "is not a URL", 17),
        ("queue_size = 0", "queue_size", 14),
        ("export_timeout = \"0s\"", "export_timeout", 18),
        ("endpoint = \"x\"", "endpoint", 1),
    ];
    for (line, needle, column) in cases {
        let dir = tempfile::tempdir().expect("dir");
        let text = format!("[server]\nlisten = [\"127.0.0.1:0\"]\n\n[tracing]\n{line}\n");
        std::fs::write(dir.path().join("00-server.toml"), text).expect("write");
        let run = support::moongate_check(dir.path());
        assert_eq!(run.code, Some(1), "{line}: {}", run.stderr);
        let place = format!(
            "{}:5:{column}:",
            dir.path().join("00-server.toml").display()
        );
        assert!(
            run.stderr.starts_with(&place),
            "{line}: wanted {place}, got {}",
            run.stderr
        );
        assert!(run.stderr.contains(needle), "{line}: {}", run.stderr);
    }
}

//! gRPC through moongate with a real gRPC client (grpcio,
//! tests/grpc/echo_client.py) and a real gRPC service
//! (examples/grpc/echo_server.py), for what the example's test does not
//! cover: moongate's own answers as gRPC statuses (UNAVAILABLE for an
//! unreachable service, DEADLINE_EXCEEDED for `grpc-timeout` and
//! `read_timeout`, RESOURCE_EXHAUSTED for a rate limit, UNIMPLEMENTED for
//! no route), a hundred calls in flight on at most two upstream
//! connections, and a gRPC service behind TLS.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use serde_json::Value;

use crate::support::{Moongate, grpc_call};

/// examples/grpc/echo_server.py on a free loopback port; killed by its PID
/// on drop.
struct EchoServer {
    child: Child,
    port: u16,
}

impl EchoServer {
    fn start(extra: &[&str]) -> EchoServer {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/grpc/echo_server.py");
        let mut child = Command::new("python3")
            .arg(script)
            .args(["--host", "127.0.0.1", "--port", "0"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start echo_server.py (python3 with grpcio: run ./test.sh)");
        let mut line = String::new();
        if let Some(out) = child.stdout.take() {
            let _ = BufReader::new(out).read_line(&mut line);
        }
        let port = line
            .trim()
            .strip_prefix("PORT ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| {
                let _ = child.kill();
                panic!("echo_server.py did not say its port (is grpcio installed?): {line:?}")
            });
        EchoServer { child, port }
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn conf(upstream: &str, workers: usize) -> String {
    format!(
        r#"[server]
listen = ["127.0.0.1:0"]
workers = {workers}
access_log = "off"

{upstream}

[upstream.gone]
protocol = "grpc"
servers = [{{ addr = "127.0.0.1:9" }}]
connect_timeout = "1s"

[limit.calls]
rate = "1/m"
burst = 1
key = "$remote_addr"
status = 503

[[route]]
path = "/echo.Echo/"
upstream = "echo"

[[route]]
path = "/gone.Echo/"
upstream = "gone"

[[route]]
path = "/limited.Echo/"
upstream = "echo"
limit = "calls"
rewrite = {{ from = "^/limited(.*)$", to = "/echo$1" }}
"#
    )
}

fn echo_upstream(port: u16, extra: &str) -> String {
    format!(
        "[upstream.echo]\nprotocol = \"grpc\"\nservers = [{{ addr = \"127.0.0.1:{port}\" }}]\n{extra}"
    )
}

fn code(v: &Value) -> &str {
    v["code"].as_str().unwrap_or("")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moongates_own_answers_are_grpc_statuses() {
    let echo = EchoServer::start(&[]);
    let mg = Moongate::start(&conf(&echo_upstream(echo.port, "read_timeout = \"1s\""), 1));
    let at = mg.http[0].to_string();

    let ok = grpc_call(&at, "Unary", &["--payload", "hi"]).await;
    assert_eq!(code(&ok), "OK", "{ok}");
    // The service's own status passes through as it is.
    let failed = grpc_call(&at, "Fail", &["--payload", "9:not now"]).await;
    assert_eq!(code(&failed), "FAILED_PRECONDITION", "{failed}");
    assert_eq!(failed["details"], "not now");

    // Nothing listens: UNAVAILABLE, as gRPC clients retry it.
    let gone = grpc_call(&at, "/gone.Echo/Unary", &[]).await;
    assert_eq!(code(&gone), "UNAVAILABLE", "{gone}");
    // No route: UNIMPLEMENTED.
    let nope = grpc_call(&at, "/nowhere.Svc/Call", &[]).await;
    assert_eq!(code(&nope), "UNIMPLEMENTED", "{nope}");

    // The caller's deadline (grpc-timeout 0.3 s) passes before the
    // service answers (2 s): DEADLINE_EXCEEDED, in about the deadline.
    let late = grpc_call(&at, "Slow", &["--payload", "2000", "--timeout", "0.3"]).await;
    assert_eq!(code(&late), "DEADLINE_EXCEEDED", "{late}");
    assert!(late["seconds"].as_f64().unwrap_or(9.0) < 1.5, "{late}");
    // No deadline from the caller: read_timeout (1 s) ends it, told as
    // DEADLINE_EXCEEDED by moongate itself.
    let silent = grpc_call(&at, "Slow", &["--payload", "3000", "--timeout", "0"]).await;
    assert_eq!(code(&silent), "DEADLINE_EXCEEDED", "{silent}");
    let took = silent["seconds"].as_f64().unwrap_or(9.0);
    assert!((0.9..2.5).contains(&took), "read_timeout is 1 s: {silent}");

    // A rate limit refusing with 503 is still RESOURCE_EXHAUSTED.
    let first = grpc_call(&at, "/limited.Echo/Unary", &[]).await;
    assert_eq!(code(&first), "OK", "{first}");
    let second = grpc_call(&at, "/limited.Echo/Unary", &[]).await;
    assert_eq!(code(&second), "RESOURCE_EXHAUSTED", "{second}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_calls_in_flight_share_at_most_two_upstream_connections() {
    let echo = EchoServer::start(&[]);
    let mg = Moongate::start(&conf(&echo_upstream(echo.port, ""), 2));
    let at = mg.http[0].to_string();
    // Each Whoami waits 300 ms, then names the connection it came on.
    let all = grpc_call(&at, "Whoami", &["--payload", "300", "--parallel", "100"]).await;
    assert_eq!(all["codes"]["OK"], 100, "{all}");
    let conns = all["distinct_count"].as_u64().unwrap_or(0);
    assert!((1..=2).contains(&conns), "upstream connections: {all}");
    // In flight together, not one after another (100 × 300 ms).
    assert!(all["seconds"].as_f64().unwrap_or(99.0) < 5.0, "{all}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grpc_service_behind_tls_is_reached_with_alpn_h2() {
    let dir = tempfile::tempdir().expect("dir");
    let ck =
        rcgen::generate_simple_self_signed(vec!["echo.internal".to_string()]).expect("certificate");
    let (cert, key) = (dir.path().join("echo.pem"), dir.path().join("echo.key"));
    std::fs::write(&cert, ck.cert.pem()).expect("write cert");
    std::fs::write(&key, ck.signing_key.serialize_pem()).expect("write key");
    let (cert, key) = (cert.display().to_string(), key.display().to_string());
    let echo = EchoServer::start(&["--tls-cert", &cert, "--tls-key", &key]);
    let upstream = format!(
        "[upstream.echo]\nprotocol = \"grpc\"\nservers = [{{ addr = \"https://127.0.0.1:{}\" }}]\ntls = {{ ca = \"{cert}\", server_name = \"echo.internal\" }}\n",
        echo.port
    );
    let mg = Moongate::start(&conf(&upstream, 1));
    let at = mg.http[0].to_string();
    let unary = grpc_call(&at, "Unary", &["--payload", "over tls"]).await;
    assert_eq!(code(&unary), "OK", "{unary}");
    assert_eq!(unary["responses"][0], "over tls");
    let bidi = grpc_call(&at, "Bidi", &["--messages", "a,b,c"]).await;
    assert_eq!(bidi["interleaved"], true, "{bidi}");
    let stream = grpc_call(&at, "ServerStream", &["--payload", "200:x"]).await;
    assert_eq!(stream["response_count"], 200, "{stream}");
}

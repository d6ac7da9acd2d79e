//! TLS listeners: certificates chosen by SNI, HTTP/2 over ALPN, h2c with
//! prior knowledge on plain listeners, and certificate errors placed in
//! conf.d.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use reqwest::Version;

use crate::support::{self, Moongate, Origin};

/// A self-signed certificate's PEMs.
pub(crate) struct Pem {
    pub(crate) cert: String,
    key: String,
}

/// A self-signed certificate for `names`.
pub(crate) fn self_signed(names: &[&str]) -> Pem {
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let ck = rcgen::generate_simple_self_signed(names).expect("generate certificate");
    Pem {
        cert: ck.cert.pem(),
        key: ck.signing_key.serialize_pem(),
    }
}

/// Writes `name.pem` / `name.key` into `dir`; returns the TOML cert entry.
pub(crate) fn write_pair(dir: &Path, name: &str, pem: &Pem) -> String {
    let cert = dir.join(format!("{name}.pem"));
    let key = dir.join(format!("{name}.key"));
    std::fs::write(&cert, &pem.cert).expect("write cert");
    std::fs::write(&key, &pem.key).expect("write key");
    format!(
        "{{ cert = \"{}\", key = \"{}\" }}",
        cert.display(),
        key.display()
    )
}

/// conf.d text: a TLS listener (and no plain one, see
/// `plain_and_tls_listeners_on_port_0_keep_their_protocol`), and `/`
/// proxied to `origin`.
fn conf(certs: &[String], alpn: &str, origin: SocketAddr) -> String {
    conf_with_plain(certs, alpn, origin, "")
}

/// Like `conf`, with `plain` as the `[server] listen` list.
fn conf_with_plain(certs: &[String], alpn: &str, origin: SocketAddr, plain: &str) -> String {
    format!(
        "[server]\nlisten = [{plain}]\nworkers = 2\naccess_log = \"off\"\n\n\
         [[server.tls]]\nlisten = \"127.0.0.1:0\"\ncerts = [{}]\nalpn = {alpn}\n\n\
         [upstream.o]\nservers = [{{ addr = \"{origin}\" }}]\n\n\
         [[route]]\npath = \"/\"\nupstream = \"o\"\n",
        certs.join(", ")
    )
}

/// A client that trusts only `root` and sends `host` to `addr`.
pub(crate) fn tls_client(root: &Pem, host: &str, addr: SocketAddr) -> reqwest::Client {
    support::install_crypto();
    reqwest::Client::builder()
        .no_proxy()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(root.cert.as_bytes()).expect("pem"))
        .resolve(host, addr)
        .timeout(Duration::from_secs(10))
        .build()
        .expect("tls client")
}

pub(crate) fn https(host: &str, addr: SocketAddr, path: &str) -> String {
    format!("https://{host}:{}{path}", addr.port())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sni_picks_the_certificate() {
    let origin = Origin::named("tls-origin").await;
    let dir = tempfile::tempdir().expect("conf dir");
    let a = self_signed(&["a.test"]);
    let b = self_signed(&["b.test"]);
    let wild = self_signed(&["*.wild.test"]);
    let certs = [
        write_pair(dir.path(), "a", &a),
        write_pair(dir.path(), "b", &b),
        write_pair(dir.path(), "wild", &wild),
    ];
    std::fs::write(
        dir.path().join("00-test.toml"),
        conf(&certs, "[\"h2\", \"http/1.1\"]", origin.addr),
    )
    .expect("write conf");
    let mg = Moongate::start_in(dir);
    let addr = mg.https[0];

    let ok_a = tls_client(&a, "a.test", addr)
        .get(https("a.test", addr, "/x"))
        .send()
        .await
        .expect("a.test with cert A");
    assert_eq!(ok_a.status(), 200);
    assert_eq!(ok_a.text().await.expect("body"), "tls-origin");

    let wrong = tls_client(&a, "b.test", addr)
        .get(https("b.test", addr, "/x"))
        .send()
        .await;
    assert!(
        wrong.is_err(),
        "b.test must be served with cert B, which the client does not trust"
    );

    let ok_b = tls_client(&b, "b.test", addr)
        .get(https("b.test", addr, "/x"))
        .send()
        .await
        .expect("b.test with cert B");
    assert_eq!(ok_b.status(), 200);

    let ok_wild = tls_client(&wild, "x.wild.test", addr)
        .get(https("x.wild.test", addr, "/x"))
        .send()
        .await
        .expect("x.wild.test with the wildcard cert");
    assert_eq!(ok_wild.status(), 200);

    // A name no certificate covers gets the first one (A).
    let fallback = tls_client(&a, "other.test", addr)
        .get(https("other.test", addr, "/x"))
        .send()
        .await;
    assert!(fallback.is_err(), "cert A does not name other.test");
    assert_eq!(origin.hits(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alpn_decides_between_h2_and_http1() {
    let origin = Origin::named("alpn").await;
    let pem = self_signed(&["a.test"]);
    for (alpn, want) in [
        ("[\"h2\", \"http/1.1\"]", Version::HTTP_2),
        ("[\"http/1.1\"]", Version::HTTP_11),
    ] {
        let dir = tempfile::tempdir().expect("conf dir");
        let certs = [write_pair(dir.path(), "a", &pem)];
        std::fs::write(
            dir.path().join("00-test.toml"),
            conf(&certs, alpn, origin.addr),
        )
        .expect("write conf");
        let mg = Moongate::start_in(dir);
        let addr = mg.https[0];
        let resp = tls_client(&pem, "a.test", addr)
            .get(https("a.test", addr, "/alpn"))
            .send()
            .await
            .expect("request over TLS");
        assert_eq!(resp.status(), 200, "alpn {alpn}");
        assert_eq!(resp.version(), want, "alpn {alpn}");
        assert_eq!(resp.text().await.expect("body"), "alpn");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_prior_knowledge_on_a_plain_listener() {
    let origin = Origin::start(support::echo).await;
    let conf = format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\nworkers = 2\naccess_log = \"off\"\n\n\
         [upstream.o]\nservers = [{{ addr = \"{}\" }}]\n\n[[route]]\npath = \"/\"\nupstream = \"o\"\n",
        origin.addr
    );
    let mg = Moongate::start(&conf);
    support::install_crypto();
    let h2 = reqwest::Client::builder()
        .no_proxy()
        .http2_prior_knowledge()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("h2c client");
    for i in 0..3 {
        let resp = h2
            .get(mg.url(&format!("/h2c/{i}")))
            .send()
            .await
            .expect("h2c request");
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.version(), Version::HTTP_2);
        let json: serde_json::Value =
            serde_json::from_slice(&resp.bytes().await.expect("echo json")).expect("echo json");
        assert_eq!(json["uri"], format!("/h2c/{i}"));
    }
    assert_eq!(origin.hits(), 3);
    // HTTP/1.1 on the same listener still works.
    support::install_crypto();
    let resp = support::client()
        .get(mg.url("/h1"))
        .send()
        .await
        .expect("http/1.1");
    assert_eq!(resp.version(), Version::HTTP_11);
    assert_eq!(resp.status(), 200);
}

#[test]
fn bad_certificate_files_are_config_errors_with_their_place() {
    let pem = self_signed(&["a.test"]);
    // A certificate path that does not exist.
    let dir = tempfile::tempdir().expect("conf dir");
    let missing = dir.path().join("missing.pem");
    let key = dir.path().join("a.key");
    std::fs::write(&key, &pem.key).expect("key");
    let text = format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\n\n[[server.tls]]\nlisten = \"127.0.0.1:0\"\n\
         certs = [\n  {{ cert = \"{}\", key = \"{}\" }},\n]\n",
        missing.display(),
        key.display()
    );
    let file = dir.path().join("10-tls.toml");
    std::fs::write(&file, &text).expect("conf");
    // Missing: found before loading, at the `cert` value itself.
    let run = support::moongate_check(dir.path());
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    assert!(
        run.stderr.starts_with(&format!(
            "{}:7:12: cert {}: No such file or directory",
            file.display(),
            missing.display()
        )),
        "{}",
        run.stderr
    );

    // A file that is there but holds no certificate: at its entry.
    let garbage = dir.path().join("missing.pem");
    std::fs::write(&garbage, "this is not a certificate\n").expect("garbage");
    let run = support::moongate_check(dir.path());
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    assert!(
        run.stderr.starts_with(&format!("{}:7:3:", file.display())),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("missing.pem"), "{}", run.stderr);

    // The right files: OK.
    std::fs::write(&garbage, &pem.cert).expect("cert");
    let run = support::moongate_check(dir.path());
    assert_eq!(run.code, Some(0), "{}", run.stderr);
}

/// A plain and a TLS listener may both be configured on 127.0.0.1:0: each
/// keeps its own protocol, and reloads neither mix them up nor leak sockets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_and_tls_listeners_on_port_0_keep_their_protocol() {
    let origin = Origin::named("both").await;
    let pem = self_signed(&["a.test"]);
    let dir = tempfile::tempdir().expect("conf dir");
    let certs = [write_pair(dir.path(), "a", &pem)];
    std::fs::write(
        dir.path().join("00-test.toml"),
        conf_with_plain(
            &certs,
            "[\"h2\", \"http/1.1\"]",
            origin.addr,
            "\"127.0.0.1:0\"",
        ),
    )
    .expect("write conf");
    let mg = Moongate::start_in(dir);
    assert_eq!((mg.http.len(), mg.https.len()), (1, 1));

    let plain = support::raw_exchange(
        mg.http[0],
        b"GET / HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(support::raw_status(&plain), 200, "{plain:?}");

    let addr = mg.https[0];
    let tls = tls_client(&pem, "a.test", addr)
        .get(https("a.test", addr, "/"))
        .send()
        .await
        .expect("the TLS listener speaks TLS");
    assert_eq!(tls.status(), 200);
    assert_eq!(tls.text().await.expect("body"), "both");

    // A reload with nothing changed opens no listener.
    let before = mg.log_lines().len();
    mg.signal(nix::sys::signal::Signal::SIGHUP);
    mg.wait_log_after(before, "configuration reloaded", Duration::from_secs(10));
    let opened: Vec<String> = mg.log_lines()[before..]
        .iter()
        .filter(|l| l.contains("listening on"))
        .cloned()
        .collect();
    assert!(opened.is_empty(), "a reload opened listeners: {opened:?}");
}

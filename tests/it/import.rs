//! `moongate import`: nginx configurations (the bench's anchor configs and
//! fixtures covering each translated directive) are imported by the real
//! binary, the conf.d it writes passes `moongate check`, and then Debian's
//! real nginx on the original and moongate on the import, in front of the
//! same echo origin, answer the same requests with the same status and body.

mod compare;
mod nginx;

use std::path::{Path, PathBuf};
use std::process::Command;

use compare::{get, same_answers, same_answers_at};
use nginx::{Nginx, free_addr};

use crate::support::{Moongate, Origin};

/// The repository's files.
fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// Files both servers read: static files, a Lua module.
fn share() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("share dir");
    let p = dir.path();
    for d in ["site/static", "data", "lualib"] {
        std::fs::create_dir_all(p.join(d)).expect("mkdir");
    }
    std::fs::write(p.join("site/static/hello.txt"), "hello, static\n").expect("write");
    std::fs::write(p.join("site/static/index.html"), "<h1>static index</h1>\n").expect("write");
    std::fs::write(p.join("data/f.txt"), "aliased file\n").expect("write");
    std::fs::write(p.join("data/robots.txt"), "User-agent: *\n").expect("write");
    std::fs::write(
        p.join("lualib/greet.lua"),
        "return { hi = function(name) return \"hi \" .. name end }\n",
    )
    .expect("write");
    dir
}

/// `conf` with its placeholders filled.
fn render(
    conf: &str,
    listen: &str,
    origin: &Origin,
    share: &Path,
    extra: &[(&str, String)],
) -> String {
    let mut out = conf
        .replace("@LISTEN@", listen)
        .replace("@ORIGIN_LISTEN@", listen)
        .replace("@ORIGIN@", &origin.addr.to_string())
        .replace("@SHARE@", &share.display().to_string());
    for (k, v) in extra {
        out = out.replace(k, v);
    }
    assert!(
        !out.contains("@LISTEN@") && !out.contains("@ORIGIN@"),
        "unrendered: {out}"
    );
    out
}

/// `moongate import` (the binary) of `conf`, with `files` beside it, into
/// a fresh conf.d, which must pass its check; moongate started on it.
fn import_and_start(conf: &str, files: &[(String, String)]) -> Moongate {
    let dir = tempfile::tempdir().expect("import dir");
    for (rel, text) in files {
        let path = dir.path().join(rel);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, text).expect("write an included file");
    }
    let input = dir.path().join("nginx.conf");
    std::fs::write(&input, conf).expect("write nginx.conf");
    let out = Command::new(env!("CARGO_BIN_EXE_moongate"))
        .arg("import")
        .arg(&input)
        .arg("-o")
        .arg(dir.path().join("conf.d"))
        .arg("--nginx-prefix")
        .arg(dir.path())
        .output()
        .expect("run moongate import");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("configuration OK"),
        "import failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    let conf_d = dir.path().join("conf.d");
    Moongate::start_at(dir, conf_d)
}

/// nginx on `conf` and moongate on its import, both before `origin`.
fn both(conf: &str, origin: &Origin, share: &Path, extra: &[(&str, String)]) -> (Nginx, Moongate) {
    both_with(conf, &[], origin, share, extra)
}

/// [`both`], with `files` (fixtures, relative paths) beside the configuration.
fn both_with(
    conf: &str,
    files: &[&str],
    origin: &Origin,
    share: &Path,
    extra: &[(&str, String)],
) -> (Nginx, Moongate) {
    let addr = free_addr();
    let rendered = |listen: &str| -> Vec<(String, String)> {
        files
            .iter()
            .map(|rel| {
                (
                    (*rel).to_owned(),
                    render(&fixture(rel), listen, origin, share, extra),
                )
            })
            .collect()
    };
    let nginx_conf = render(conf, &addr.to_string(), origin, share, extra);
    let nginx = Nginx::start(&nginx_conf, &rendered(&addr.to_string()), addr);
    let mg_conf = render(conf, "127.0.0.1:0", origin, share, extra);
    let mg = import_and_start(&mg_conf, &rendered("127.0.0.1:0"));
    (nginx, mg)
}

fn fixture(name: &str) -> String {
    std::fs::read_to_string(repo(&format!("tests/fixtures/import/{name}"))).expect("fixture")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locations_proxy_pass_rewrite_return_and_static_answer_as_nginx() {
    let origin = Origin::start(compare::echo).await;
    let share = share();
    let (nginx, mg) = both(&fixture("locations.conf"), &origin, share.path(), &[]);
    let cases = [
        get("/exact", 200),
        get("/exact/more", 200),
        get("/prefix/a/b?x=1", 200),
        get("/prefix", 301).status_only(),
        get("/one", 200),
        get("/noslashy?q", 200),
        get("/caret/x.php", 200),
        get("/a/b.php", 200),
        get("/case/Mixed", 200),
        get("/cap/ab/12", 200),
        get("/cap/ab/123", 200),
        get("/static/hello.txt", 200),
        get("/static/", 200),
        get("/static/missing.txt", 404).status_only(),
        get("/files/f.txt", 200),
        get("/robots.txt", 200),
        get("/old/x?y=1", 301).status_only(),
        get("/tmp/a", 302).status_only(),
        get("/v1/q?z=2", 200),
        get("/brk/a", 200),
        get("/args/bob?z=1", 200),
        get("/re/ab/c/d?e=f", 200),
        get("/gone", 410).status_only(),
        get("/redir/p?q=1", 301).status_only(),
        get("/teapot", 418),
        get("/hdr/x?q=7", 200).header("X-Test-Drop", "from the client"),
        get("/private/x", 403).status_only(),
    ];
    same_answers(nginx.addr, mg.http[0], &cases).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lua_handlers_shared_dicts_and_limit_req_answer_as_openresty() {
    let origin = Origin::start(compare::echo).await;
    let share = share();
    let (nginx, mg) = both(&fixture("lua.conf"), &origin, share.path(), &[]);
    let cases = [
        get("/hello?name=x", 200),
        get("/guarded/a", 403).status_only(),
        get("/guarded/a", 403)
            .header("X-Token", "wrong")
            .status_only(),
        get("/guarded/a?b", 200).header("X-Token", "secret"),
        get("/count", 200),
        get("/count", 200),
        get("/module", 200),
        // burst=2 nodelay: three at once, the fourth refused (503).
        get("/limited/1", 200),
        get("/limited/2", 200),
        get("/limited/3", 200),
        get("/limited/4", 503).status_only(),
        get("/rw/a?k=v", 200),
        get("/filtered/x", 200).compare("x-test-filter"),
    ];
    same_answers(nginx.addr, mg.http[0], &cases).await;
}

/// The bench's anchor configurations (bench/nginx, copied from the
/// project's anchors), rendered as bench/run.py renders them.
fn anchor(name: &str) -> String {
    std::fs::read_to_string(repo(&format!("bench/nginx/{name}.conf"))).expect("anchor")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxy_and_cache_anchors_answer_as_nginx() {
    let origin = Origin::start(compare::echo).await;
    let share = share();
    let (nginx, mg) = both(&anchor("proxy"), &origin, share.path(), &[]);
    let cases = [
        get("/", 200),
        get("/api/item/1?x=y", 200).header("X-User", "u"),
    ];
    same_answers(nginx.addr, mg.http[0], &cases).await;
    drop((nginx, mg));

    let cache_dir = tempfile::tempdir().expect("cache dir");
    let extra = [(
        "@CACHE_DIR@",
        cache_dir.path().join("c").display().to_string(),
    )];
    let (nginx, mg) = both(&anchor("cache"), &origin, share.path(), &extra);
    let cases = [
        get("/cached/1", 200).compare("x-cache-status"),
        get("/cached/1", 200).compare("x-cache-status"),
        get("/cached/2?a=b", 200).compare("x-cache-status"),
    ];
    same_answers(nginx.addr, mg.http[0], &cases).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lua_anchors_answer_as_openresty() {
    let origin = Origin::start(compare::echo).await;
    let share = share();
    let (nginx, mg) = both(&anchor("lua-access"), &origin, share.path(), &[]);
    let cases = [
        get("/v1/item", 403).status_only(),
        get("/v1/item", 403)
            .header("Authorization", "Bearer nobody")
            .status_only(),
        get("/v1/item?q=1", 200).header("Authorization", "Bearer bench-token-alice"),
        get("/other", 200).header("Authorization", "Bearer bench-token-bob"),
    ];
    same_answers(nginx.addr, mg.http[0], &cases).await;
    drop((nginx, mg));

    // The anchor's own token bucket in a shared dict: 1 token/s, 2 at once.
    let extra = [
        ("@RL_RATE@", "1".to_owned()),
        ("@RL_BURST@", "2".to_owned()),
    ];
    let (nginx, mg) = both(&anchor("lua-ratelimit"), &origin, share.path(), &extra);
    let alice = ("Authorization", "Bearer bench-token-alice");
    let cases = [
        get("/v1/a", 200).header(alice.0, alice.1),
        get("/v1/b", 200).header(alice.0, alice.1),
        get("/v1/c", 429)
            .header(alice.0, alice.1)
            .status_only()
            .compare("retry-after"),
        get("/v1/d", 403).status_only(),
    ];
    same_answers(nginx.addr, mg.http[0], &cases).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_origin_anchor_answers_as_nginx() {
    let origin = Origin::start(compare::echo).await;
    let share = share();
    let page = share.path().join("page.html");
    std::fs::write(&page, "<p>a page</p>\n").expect("page");
    let extra = [("@PAGE_FILE@", page.display().to_string())];
    let (nginx, mg) = both(&anchor("origin"), &origin, share.path(), &extra);
    let cases = [
        get("/hello", 200),
        get("/api/item/1", 200)
            .header("X-User", "carol")
            .compare("x-origin-user")
            .compare("cache-control"),
        get("/short/x", 200).compare("cache-control"),
        get("/page", 200),
        get("/nothing", 404).status_only(),
    ];
    same_answers(nginx.addr, mg.http[0], &cases).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servers_includes_server_rewrites_and_auth_request_answer_as_nginx() {
    let origin = Origin::start(compare::echo).await;
    let share = share();
    let files = ["snippets/upstreams.conf", "snippets/proxy.conf"];
    let (nginx, mg) = both_with(&fixture("servers.conf"), &files, &origin, share.path(), &[]);
    let cases = [
        get("/x?y", 200).header("Host", "a.example"),
        // Unknown hosts go to the default server.
        get("/x", 200).header("Host", "unknown.example"),
        get("/y", 200).header("Host", "b.example"),
        get("/y", 200).header("Host", "deep.b.example"),
        get("/legacy/z?q=1", 200).header("Host", "a.example"),
        get("/legacy/z", 200).header("Host", "b.example"),
        get("/auth-me/x", 401).status_only(),
        get("/auth-me/x?k", 200).header("X-Test-Pass", "yes"),
        // An internal location is not for clients.
        get("/auth", 404).status_only(),
        get("/gz", 200)
            .header("Accept-Encoding", "gzip")
            .status_only()
            .compare("content-encoding"),
    ];
    same_answers(nginx.addr, mg.http[0], &cases).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tls_anchor_answers_as_nginx_over_tls_and_h2() {
    crate::support::install_crypto();
    let origin = Origin::start(compare::echo).await;
    let share = share();
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("cert");
    let (cert, key) = (share.path().join("site.pem"), share.path().join("site.key"));
    std::fs::write(&cert, ck.cert.pem()).expect("cert");
    std::fs::write(&key, ck.signing_key.serialize_pem()).expect("key");
    let extra = [
        ("@CERT@", cert.display().to_string()),
        ("@KEY@", key.display().to_string()),
    ];
    let (nginx, mg) = both(&anchor("proxy-tls"), &origin, share.path(), &extra);
    let root = reqwest::Certificate::from_pem(ck.cert.pem().as_bytes()).expect("root");
    let client = reqwest::Client::builder()
        .no_proxy()
        .tls_built_in_root_certs(false)
        .add_root_certificate(root)
        // The certificate's name, on 127.0.0.1 (the port comes from the URL).
        .resolve("localhost", std::net::SocketAddr::from(([127, 0, 0, 1], 0)))
        .redirect(reqwest::redirect::Policy::none())
        .timeout(std::time::Duration::from_secs(15))
        .build()
        .expect("client");
    let nginx_base = format!("https://localhost:{}", nginx.addr.port());
    let mg_base = format!("https://localhost:{}", mg.https[0].port());
    let cases = [get("/", 200), get("/a/b?c=d", 200).header("X-User", "dave")];
    same_answers_at(&client, &nginx_base, &mg_base, &cases).await;
    // Both offered h2 (ALPN) and the client took it.
    let version = |base: String| {
        let client = client.clone();
        async move { client.get(base).send().await.expect("h2 request").version() }
    };
    assert_eq!(version(nginx_base).await, reqwest::Version::HTTP_2);
    assert_eq!(version(mg_base).await, reqwest::Version::HTTP_2);
}

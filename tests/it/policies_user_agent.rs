//! The `user_agent` policy through the real server: denied agents get the
//! status, allow-list exceptions and other agents pass, a request without
//! User-Agent is matched as "", and config errors carry file:line.

use std::net::SocketAddr;

use crate::support::{Moongate, Origin, check_one, client};

fn conf(origin: SocketAddr) -> String {
    format!(
        r#"[server]
listen = ["127.0.0.1:0"]
workers = 1
access_log = "off"

[upstream.o]
servers = [{{ addr = "{origin}" }}]

[[route]]
path = "/"
upstream = "o"
policies = [{{ use = "user_agent", deny = ["(?i)curl", "[Bb]ot\\b", "^$"], allow = ["Googlebot"] }}]

[[route]]
path = "/teapot/"
upstream = "o"
policies = [{{ use = "user_agent", deny = ["python-requests"], status = 418 }}]
"#
    )
}

async fn status(mg: &Moongate, path: &str, ua: Option<&str>) -> u16 {
    let mut req = client().get(mg.url(path));
    // reqwest sends no User-Agent unless told.
    if let Some(ua) = ua {
        req = req.header("user-agent", ua);
    }
    req.send().await.expect("GET").status().as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denied_agents_are_refused_and_exceptions_pass() {
    let origin = Origin::named("origin").await;
    let mg = Moongate::start(&conf(origin.addr));
    for (ua, want) in [
        (Some("curl/8.5.0"), 403),
        (Some("CURL/7"), 403),
        (Some("SomeBot/1.0"), 403),
        (None, 403),
        (Some("Mozilla/5.0 (compatible; Googlebot/2.1)"), 200),
        (Some("Mozilla/5.0 (X11; Linux x86_64) Firefox/120.0"), 200),
        (Some("robotics-client"), 200),
    ] {
        assert_eq!(status(&mg, "/x", ua).await, want, "{ua:?}");
    }
    assert_eq!(
        origin.hits(),
        3,
        "only the passed requests reached the upstream"
    );
    assert_eq!(
        status(&mg, "/teapot/x", Some("python-requests/2.31")).await,
        418
    );
    assert_eq!(status(&mg, "/teapot/x", Some("curl/8")).await, 200);
    assert_eq!(origin.hits(), 4);
}

#[test]
fn config_errors_name_file_and_line() {
    let route = |entry: &str| {
        format!("[[route]]\npath = \"/\"\nroot = \".\"\npolicies = [\n  {entry},\n]\n")
    };
    for (entry, message) in [
        (
            r#"{ use = "user_agent", deny = ["bot("] }"#,
            "10-x.toml:5:32: `deny`: `bot(` is not a valid regex: unclosed group",
        ),
        (
            r#"{ use = "user_agent", allow = ["x"] }"#,
            "10-x.toml:5:3: policy `user_agent` needs `deny`",
        ),
        (
            r#"{ use = "user_agent", deny = "bot" }"#,
            "10-x.toml:5:32: `deny`: expected list of regexes",
        ),
    ] {
        let run = check_one(&route(entry));
        assert_eq!(run.code, Some(1), "{entry}");
        assert!(run.stderr.contains(message), "{entry}: {}", run.stderr);
    }
}

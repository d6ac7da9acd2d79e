//! The `basic_auth` policy through the real server, with an htpasswd file
//! made by Debian's real `htpasswd` (apache2-utils, installed by test.sh)
//! in each scheme it offers, consumers' own password hashes, and config
//! errors with file:line.

use std::path::Path;
use std::process::Command;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use crate::policies_jwt::{get, upstream_header};
use crate::support::{Moongate, Origin, check_one, echo};

/// Adds `user` with `password` to the htpasswd file `file` in `scheme`
/// (an htpasswd flag: -B, -m, -2, -5, -s).
fn htpasswd(file: &Path, scheme: &str, user: &str, password: &str) {
    let create = if file.exists() { "-b" } else { "-cb" };
    let out = Command::new("htpasswd")
        .args([create, scheme])
        .arg(file)
        .args([user, password])
        .output()
        .unwrap_or_else(|e| panic!("cannot run htpasswd ({e}): test.sh installs apache2-utils"));
    assert!(out.status.success(), "htpasswd {scheme}: {out:?}");
}

fn basic(user: &str, password: &str) -> String {
    format!("Basic {}", STANDARD.encode(format!("{user}:{password}")))
}

/// A hash of `password` by `htpasswd -nbB` (for a consumer's
/// `password_hash`).
fn bcrypt_hash(password: &str) -> String {
    let out = Command::new("htpasswd")
        .args(["-nbB", "x", password])
        .output()
        .unwrap_or_else(|e| panic!("cannot run htpasswd ({e}): test.sh installs apache2-utils"));
    let line = String::from_utf8(out.stdout).expect("text");
    line.trim().trim_start_matches("x:").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_htpasswd_scheme_and_consumers_passwords() {
    let origin = Origin::start(echo).await;
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("htpasswd");
    let schemes = [
        ("-B", "u_bcrypt"),
        ("-m", "u_apr1"),
        ("-2", "u_sha256"),
        ("-5", "u_sha512"),
        ("-s", "u_sha1"),
    ];
    for (scheme, user) in schemes {
        htpasswd(&file, scheme, user, &format!("pw-{user}"));
    }
    let carol_hash = bcrypt_hash("carol pw");
    let conf = format!(
        r#"[server]
listen = ["127.0.0.1:0"]
workers = 1
access_log = "off"

[upstream.o]
servers = [{{ addr = "{origin}" }}]

[consumer.u_apr1]
groups = ["legacy"]

[consumer.carol]
basic = {{ password_hash = "{carol_hash}" }}
groups = ["ops", "staff"]

[[route]]
path = "/"
upstream = "o"
policies = [{{ use = "basic_auth", htpasswd_file = "{file}", realm = "staff \"area\"" }}]

[[route]]
path = "/hidden/"
upstream = "o"
policies = [{{ use = "basic_auth", htpasswd_file = "{file}", consumers = false, hide_credentials = true }}]
"#,
        origin = origin.addr,
        file = file.display()
    );
    std::fs::write(dir.path().join("00-test.toml"), conf).expect("conf");
    let mg = Moongate::start_in(dir);
    let challenge = "Basic realm=\"staff \\\"area\\\"\", charset=\"UTF-8\"";

    for (_, user) in schemes {
        let auth = basic(user, &format!("pw-{user}"));
        // Twice: the second check of a slow scheme is the remembered one.
        for _ in 0..2 {
            let (status, _, echoed) = get(&mg, "/x", &[("authorization", &auth)]).await;
            assert_eq!(status, 200, "{user}");
            assert_eq!(upstream_header(&echoed, "x-consumer-username"), Some(user));
            assert_eq!(
                upstream_header(&echoed, "authorization"),
                Some(auth.as_str()),
                "kept without hide_credentials"
            );
        }
        let (status, got, echoed) =
            get(&mg, "/x", &[("authorization", &basic(user, "wrong"))]).await;
        assert_eq!((status, got.as_str()), (401, challenge), "{user}");
        assert!(echoed.is_none());
    }
    // A consumer of the same name adds their groups.
    let (_, _, echoed) = get(
        &mg,
        "/x",
        &[("authorization", &basic("u_apr1", "pw-u_apr1"))],
    )
    .await;
    assert_eq!(
        upstream_header(&echoed, "x-consumer-groups"),
        Some("legacy")
    );

    // A consumer's own password.
    let carol = basic("carol", "carol pw");
    let (status, _, echoed) = get(&mg, "/x", &[("authorization", &carol)]).await;
    assert_eq!(status, 200);
    assert_eq!(
        upstream_header(&echoed, "x-consumer-username"),
        Some("carol")
    );
    assert_eq!(
        upstream_header(&echoed, "x-consumer-groups"),
        Some("ops, staff")
    );
    let (status, _, _) = get(&mg, "/x", &[("authorization", &basic("carol", "carol"))]).await;
    assert_eq!(status, 401);

    // Not on a route with `consumers = false`; the header is hidden there.
    let (status, _, _) = get(&mg, "/hidden/x", &[("authorization", &carol)]).await;
    assert_eq!(status, 401);
    let auth = basic("u_sha512", "pw-u_sha512");
    let (status, _, echoed) = get(&mg, "/hidden/x", &[("authorization", &auth)]).await;
    assert_eq!(status, 200);
    assert_eq!(upstream_header(&echoed, "authorization"), None);

    // No credentials, another scheme, garbage, an unknown user.
    for auth in [
        None,
        Some("Bearer abc".to_owned()),
        Some("Basic !!!".to_owned()),
        Some(basic("nobody", "x")),
    ] {
        let headers: Vec<(&str, &str)> =
            auth.iter().map(|a| ("authorization", a.as_str())).collect();
        let (status, got, _) = get(&mg, "/x", &headers).await;
        assert_eq!((status, got.as_str()), (401, challenge), "{auth:?}");
    }
}

#[test]
fn config_errors_name_file_and_line() {
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("htpasswd");
    htpasswd(&file, "-B", "good", "pw");
    let mut text = std::fs::read_to_string(&file).expect("read");
    text.push_str("plain:secret\n");
    std::fs::write(&file, text).expect("write");
    let route = |entry: &str| {
        format!("[[route]]\npath = \"/\"\nroot = \".\"\npolicies = [\n  {entry},\n]\n")
    };
    for (entry, message) in [
        (
            format!(
                r#"{{ use = "basic_auth", htpasswd_file = "{}" }}"#,
                file.display()
            ),
            format!(
                "10-x.toml:5:3: policy `basic_auth`: {}:2: user \"plain\"",
                file.display()
            ),
        ),
        (
            r#"{ use = "basic_auth", consumers = false }"#.to_owned(),
            "10-x.toml:5:3: policy `basic_auth`: give `htpasswd_file`".to_owned(),
        ),
        (
            r#"{ use = "basic_auth", realm = 1 }"#.to_owned(),
            "10-x.toml:5:33: `realm`: expected string".to_owned(),
        ),
    ] {
        let run = check_one(&route(&entry));
        assert_eq!(run.code, Some(1), "{entry}");
        assert!(run.stderr.contains(&message), "{entry}: {}", run.stderr);
    }
    let run = check_one(
        "[server]\nlisten = [\"127.0.0.1:0\"]\n\n[consumer.a]\nbasic = { password_hash = \"plain\" }\n",
    );
    assert_eq!(run.code, Some(1));
    assert!(
        run.stderr
            .contains("10-x.toml:5:27: consumer a: basic.password_hash"),
        "{}",
        run.stderr
    );
}

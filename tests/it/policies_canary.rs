//! The `canary` policy through the real server in front of two origins
//! that say who answered: the random split follows `percentage` within
//! ±5 % over 2 000 requests (also when the `hash_on` key is missing); a
//! `hash_on` key keeps each user on one side, about `percentage` % of users
//! on the canary, and raising the percentage by reload keeps those already
//! there; header, cookie and query-argument matches force the canary at
//! percentage 0; canary answers neither read nor fill the route's cache;
//! and config errors carry file:line.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::Full;
use hyper::Response;

use crate::support::{Moongate, Origin, check_one, client};

/// An origin answering every request with its `name` as the body and the
/// `x-origin` header, cacheable for a minute.
async fn side(name: &'static str) -> Origin {
    Origin::start(move |_req| async move {
        Response::builder()
            .status(200)
            .header("x-origin", name)
            .header("cache-control", "max-age=60")
            .header("content-type", "text/plain")
            .body(Full::new(Bytes::from(name)))
            .expect("reply")
    })
    .await
}

/// `[upstream.stable]` and `[upstream.canary]` in front of the two
/// origins, then `routes`.
fn conf(stable: SocketAddr, canary: SocketAddr, routes: &str) -> String {
    format!(
        r#"[server]
listen = ["127.0.0.1:0"]
workers = 2
access_log = "off"

[upstream.stable]
servers = [{{ addr = "{stable}" }}]

[upstream.canary]
servers = [{{ addr = "{canary}" }}]

{routes}"#
    )
}

/// A route on `path` to the stable upstream with one canary policy whose
/// options (after `upstream = "canary"`) are `options`.
fn route(path: &str, options: &str) -> String {
    format!(
        "[[route]]\npath = \"{path}\"\nupstream = \"stable\"\npolicies = [{{ use = \"canary\", upstream = \"canary\", {options} }}]\n\n"
    )
}

/// Which origin answered a GET of `url` with `headers` (asserting a 200).
async fn who(c: &reqwest::Client, url: &str, headers: &[(&str, &str)]) -> String {
    let mut req = c.get(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.expect("GET");
    assert_eq!(resp.status(), 200, "{url}");
    let origin = (resp.headers().get("x-origin"))
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let body = resp.text().await.expect("body");
    assert_eq!(origin, body, "{url}: the header and the body disagree");
    origin
}

/// How many of `n` GETs of `url` (16 at a time) the canary answered.
async fn canary_share(url: &str, n: usize) -> usize {
    let c = client();
    let sides: Vec<String> = futures_util::stream::iter(0..n)
        .map(|_| {
            let c = c.clone();
            async move { who(&c, url, &[]).await }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    assert!(
        sides.iter().all(|s| s == "stable" || s == "canary"),
        "{sides:?}"
    );
    sides.iter().filter(|s| *s == "canary").count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_random_split_follows_the_percentage() {
    let (stable, canary) = (side("stable").await, side("canary").await);
    let routes = route("/random/", "percentage = 30")
        + &route("/keyed/", "percentage = 30, hash_on = \"$cookie_user\"")
        + &route("/none/", "percentage = 0")
        + &route("/all/", "percentage = 100");
    let mg = Moongate::start(&conf(stable.addr, canary.addr, &routes));
    // 30 % of 2 000 is 600; ±5 % of the total is ±100.
    let n = canary_share(&mg.url("/random/x"), 2000).await;
    assert!((500..=700).contains(&n), "{n} of 2000 went to the canary");
    assert_eq!(canary.hits(), n, "the canary origin served them");
    assert_eq!(stable.hits(), 2000 - n);
    // Without the `user` cookie the key renders empty: random again.
    let n = canary_share(&mg.url("/keyed/x"), 2000).await;
    assert!(
        (500..=700).contains(&n),
        "{n} of 2000 keyless requests went to the canary"
    );
    assert_eq!(canary_share(&mg.url("/none/x"), 50).await, 0);
    assert_eq!(canary_share(&mg.url("/all/x"), 50).await, 50);
}

/// The users (of `users`) the canary answers on `path`, asking each
/// `times` times and checking each always gets the same side.
async fn canary_users(
    mg: &Moongate,
    path: &str,
    users: &[String],
    times: usize,
) -> BTreeSet<String> {
    let c = client();
    let mut on_canary = BTreeSet::new();
    for user in users {
        let cookie = format!("theme=dark; user={user}");
        let first = who(&c, &mg.url(path), &[("cookie", &cookie)]).await;
        for _ in 1..times {
            let again = who(&c, &mg.url(path), &[("cookie", &cookie)]).await;
            assert_eq!(again, first, "{user} changed sides");
        }
        if first == "canary" {
            on_canary.insert(user.clone());
        }
    }
    on_canary
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hash_key_keeps_users_on_their_side_as_the_percentage_grows() {
    let (stable, canary) = (side("stable").await, side("canary").await);
    let sticky = |pct: u32| {
        conf(
            stable.addr,
            canary.addr,
            &route(
                "/",
                &format!("percentage = {pct}, hash_on = \"$cookie_user\""),
            ),
        )
    };
    let mg = Moongate::start(&sticky(30));
    let users: Vec<String> = (0..500).map(|i| format!("user-{i}")).collect();
    let before = canary_users(&mg, "/app", &users, 3).await;
    // 30 % of 500 users is 150; ±5 % of them is ±25.
    assert!(
        (125..=175).contains(&before.len()),
        "{} of 500 users on the canary",
        before.len()
    );

    let skip = mg.log_lines().len();
    mg.write_conf("00-test.toml", &sticky(60));
    tokio::task::block_in_place(|| {
        mg.wait_log_after(skip, "configuration reloaded", Duration::from_secs(10))
    });
    let after = canary_users(&mg, "/app", &users, 2).await;
    let moved_back: Vec<&String> = before.difference(&after).collect();
    assert!(
        moved_back.is_empty(),
        "users left the canary when its share grew: {moved_back:?}"
    );
    assert!(
        (275..=325).contains(&after.len()),
        "{} of 500 users on the canary at 60 %",
        after.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn matching_requests_go_to_the_canary_at_percentage_zero() {
    let (stable, canary) = (side("stable").await, side("canary").await);
    let routes = route(
        "/header/",
        "percentage = 0, header = \"X-Canary\", header_value = \"1\"",
    ) + &route("/cookie/", "percentage = 0, cookie = \"Canary\"")
        + &route("/arg/", "arg = \"canary\", arg_value = \"on\"");
    let mg = Moongate::start(&conf(stable.addr, canary.addr, &routes));
    let c = client();
    for (path, headers, want) in [
        ("/header/x", &[][..], "stable"),
        ("/header/x", &[("X-Canary", "1")][..], "canary"),
        ("/header/x", &[("x-canary", "1")][..], "canary"),
        ("/header/x", &[("X-Canary", "2")][..], "stable"),
        ("/header/x", &[("X-Canary", "")][..], "stable"),
        ("/cookie/x", &[][..], "stable"),
        ("/cookie/x", &[("cookie", "a=1; Canary=yes")][..], "canary"),
        // nginx's `$cookie_NAME` matches the name in any case.
        ("/cookie/x", &[("cookie", "canary=1")][..], "canary"),
        ("/cookie/x", &[("cookie", "Canary=")][..], "stable"),
        ("/cookie/x", &[("cookie", "Canaryx=1")][..], "stable"),
        ("/arg/x?canary=on", &[][..], "canary"),
        ("/arg/x?a=1&canary=on", &[][..], "canary"),
        ("/arg/x?canary=off", &[][..], "stable"),
        ("/arg/x?canary", &[][..], "stable"),
        ("/arg/x", &[][..], "stable"),
    ] {
        // Several times: a percentage split would show as a mix.
        for _ in 0..5 {
            assert_eq!(
                who(&c, &mg.url(path), headers).await,
                want,
                "{path} {headers:?}"
            );
        }
    }
    assert_eq!(canary.hits(), 5 * 6);
    assert_eq!(stable.hits(), 5 * 9);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canary_answers_neither_read_nor_fill_the_cache() {
    let (stable, canary) = (side("stable").await, side("canary").await);
    let routes = "[[route]]\npath = \"/\"\nupstream = \"stable\"\ncache = \"pages\"\n\
                  policies = [{ use = \"canary\", upstream = \"canary\", header = \"X-Canary\" }]\n\n\
                  [cache.pages]\nmemory = \"4MiB\"\n";
    let mg = Moongate::start(&conf(stable.addr, canary.addr, routes));
    let c = client();
    let flag = [("X-Canary", "1")];
    // A stable answer is cached; the canary is still asked every time.
    assert_eq!(who(&c, &mg.url("/a"), &[]).await, "stable");
    assert_eq!(who(&c, &mg.url("/a"), &[]).await, "stable");
    assert_eq!(
        stable.hits(),
        1,
        "the second stable answer came from the cache"
    );
    assert_eq!(who(&c, &mg.url("/a"), &flag).await, "canary");
    assert_eq!(who(&c, &mg.url("/a"), &flag).await, "canary");
    assert_eq!(canary.hits(), 2, "canary requests skip the cache");
    // A canary answer first: not stored, so stable clients get stable.
    assert_eq!(who(&c, &mg.url("/b"), &flag).await, "canary");
    assert_eq!(who(&c, &mg.url("/b"), &[]).await, "stable");
    assert_eq!(who(&c, &mg.url("/b"), &[]).await, "stable");
    assert_eq!((stable.hits(), canary.hits()), (2, 3));
}

#[test]
fn config_errors_name_file_and_line() {
    let conf = |entry: &str| {
        format!(
            "[upstream.stable]\nservers = [{{ addr = \"127.0.0.1:9\" }}]\n[[route]]\npath = \"/\"\nupstream = \"stable\"\npolicies = [\n  {entry},\n]\n"
        )
    };
    for (entry, message) in [
        (
            r#"{ use = "canary", upstream = "beta", percentage = 10 }"#,
            "10-x.toml:7:32: `upstream`: upstream `beta` is not defined (defined upstreams: stable)",
        ),
        (
            r#"{ use = "canary", percentage = 10 }"#,
            "10-x.toml:7:3: policy `canary` needs `upstream`",
        ),
        (
            r#"{ use = "canary", upstream = "stable", percentage = 101 }"#,
            "10-x.toml:7:55: `percentage`: 101 is outside 0..=100",
        ),
        (
            r#"{ use = "canary", upstream = "stable", percentage = -1 }"#,
            "10-x.toml:7:55: `percentage`: -1 is outside 0..=100",
        ),
        (
            r#"{ use = "canary", upstream = "stable", percentage = "30%" }"#,
            "10-x.toml:7:55: `percentage`: expected integer, 0..=100",
        ),
        (
            r#"{ use = "canary", upstream = "stable", weight = 30 }"#,
            "10-x.toml:7:51: unknown option `weight` for policy `canary`; expected one of upstream, percentage, hash_on,",
        ),
        (
            r#"{ use = "canary", upstream = "stable", percentage = 5, hash_on = "$cookie" }"#,
            "10-x.toml:7:68: `hash_on`: unknown variable `$cookie`",
        ),
        (
            r#"{ use = "canary", upstream = "stable", cookie = "a b" }"#,
            "10-x.toml:7:51: `cookie`: `a b` is not a valid cookie name",
        ),
        (
            r#"{ use = "canary", upstream = "stable", percentage = 5, header_value = "1" }"#,
            "10-x.toml:7:3: policy `canary`: `header_value` needs `header`",
        ),
        (
            r#"{ use = "canary", upstream = "stable" }"#,
            "10-x.toml:7:3: policy `canary`: give `percentage`, or `header`, `cookie` or `arg`",
        ),
    ] {
        let run = check_one(&conf(entry));
        assert_eq!(run.code, Some(1), "{entry}");
        assert!(run.stderr.contains(message), "{entry}: {}", run.stderr);
    }
}

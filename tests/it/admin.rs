//! The admin API's token: every call needs `Authorization: Bearer TOKEN`
//! when a token is configured.

use crate::support::{Moongate, client};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configured_token_is_required_for_every_call() {
    let mg = Moongate::start(&format!(
        r#"
[server]
listen = ["127.0.0.1:0"]
workers = 1
access_log = "off"

[admin]
listen = "127.0.0.1:0"
token = "s3cret"

[[route]]
path = "/"
root = "{}/examples/site"
"#,
        env!("CARGO_MANIFEST_DIR")
    ));
    let http = client();
    let status = |r: reqwest::Response| r.status().as_u16();

    let none = http
        .get(mg.admin_url("/status"))
        .send()
        .await
        .expect("status");
    assert_eq!(status(none), 401);
    let wrong = http
        .get(mg.admin_url("/status"))
        .bearer_auth("guess")
        .send()
        .await
        .expect("status");
    assert_eq!(status(wrong), 401);
    let reload = http
        .post(mg.admin_url("/reload"))
        .send()
        .await
        .expect("reload");
    assert_eq!(
        status(reload),
        401,
        "reload without the token must be refused"
    );

    let ok = http
        .get(mg.admin_url("/status"))
        .bearer_auth("s3cret")
        .send()
        .await
        .expect("status");
    assert_eq!(ok.status(), 200);
    let body: serde_json::Value =
        serde_json::from_str(&ok.text().await.expect("body")).expect("JSON");
    assert_eq!(body["generation"], 1);

    let reload = http
        .post(mg.admin_url("/reload"))
        .bearer_auth("s3cret")
        .send()
        .await
        .expect("reload");
    assert_eq!(reload.status(), 200);
    let body: serde_json::Value =
        serde_json::from_str(&reload.text().await.expect("body")).expect("JSON");
    assert_eq!(body["generation"], 2);
}

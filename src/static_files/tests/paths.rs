//! Path safety end to end: traversal in every spelling, symlinks out of the
//! root, special files, directories and their index.

use std::fs;
use std::path::Path;

use http::header::{self, HeaderMap};
use http::{Method, StatusCode};

use super::super::{StaticOptions, serve};
use super::{Site, h};

#[tokio::test]
async fn traversal_is_refused() {
    let site = Site::new();
    fs::write(site.dir.path().join("secret.txt"), b"secret")
        .unwrap_or_else(|e| panic!("write: {e}"));
    site.file("a/b/c.txt", b"ok");
    for (path, want) in [
        ("../secret.txt", StatusCode::NOT_FOUND),
        ("/../secret.txt", StatusCode::NOT_FOUND),
        ("%2e%2e/secret.txt", StatusCode::NOT_FOUND),
        ("%2E./secret.txt", StatusCode::NOT_FOUND),
        ("a/%2e%2e/%2e%2e/secret.txt", StatusCode::NOT_FOUND),
        ("a/b/../../../secret.txt", StatusCode::NOT_FOUND),
        ("..%2fsecret.txt", StatusCode::BAD_REQUEST),
        ("a%2fb/c.txt", StatusCode::BAD_REQUEST),
        ("..%5csecret.txt", StatusCode::BAD_REQUEST),
        ("%00", StatusCode::BAD_REQUEST),
        ("a/b/c.txt%00.png", StatusCode::BAD_REQUEST),
        ("a/b/c%2", StatusCode::BAD_REQUEST),
    ] {
        let (res, body) = site.get(path, &[]).await;
        assert_eq!(res.status(), want, "{path}");
        assert!(body.is_empty(), "{path}");
    }
    // The same file by a plain path is served, so the refusals above are
    // about the path and not the file.
    let (res, body) = site.get("a/b/c.txt", &[]).await;
    assert_eq!((res.status(), &body[..]), (StatusCode::OK, &b"ok"[..]));
}

#[tokio::test]
async fn symlinks_may_not_leave_the_root() {
    let site = Site::new();
    let outside = site.dir.path().join("outside");
    fs::create_dir(&outside).unwrap_or_else(|e| panic!("mkdir: {e}"));
    fs::write(outside.join("secret.txt"), b"secret").unwrap_or_else(|e| panic!("write: {e}"));
    site.file("inside.txt", b"inside");
    let link = |target: &Path, name: &str| {
        std::os::unix::fs::symlink(target, site.root().join(name))
            .unwrap_or_else(|e| panic!("symlink: {e}"));
    };
    link(&outside.join("secret.txt"), "escape.txt");
    link(&outside, "escape-dir");
    link(Path::new("inside.txt"), "alias.txt");
    for path in ["escape.txt", "escape-dir/secret.txt"] {
        let (res, body) = site.get(path, &[]).await;
        assert_eq!(res.status(), StatusCode::FORBIDDEN, "{path}");
        assert!(body.is_empty());
    }
    let (res, body) = site.get("alias.txt", &[]).await;
    assert_eq!((res.status(), &body[..]), (StatusCode::OK, &b"inside"[..]));
}

#[tokio::test]
async fn a_root_that_is_itself_a_symlink_still_serves() {
    let site = Site::new();
    site.file("x.txt", b"x");
    let link = site.dir.path().join("root-link");
    std::os::unix::fs::symlink(site.root(), &link).unwrap_or_else(|e| panic!("symlink: {e}"));
    let opts = StaticOptions::new(link);
    let response = serve(&opts, "x.txt", &Method::GET, &HeaderMap::new()).await;
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn directories_serve_their_index_or_404() {
    let mut site = Site::new();
    site.file("docs/index.html", b"<h1>docs</h1>");
    fs::create_dir(site.root().join("empty")).unwrap_or_else(|e| panic!("mkdir: {e}"));
    for path in ["docs/", "docs", "/docs/"] {
        let (res, body) = site.get(path, &[]).await;
        assert_eq!(res.status(), StatusCode::OK, "{path}");
        assert_eq!(&body[..], b"<h1>docs</h1>");
        assert_eq!(
            h(&res, header::CONTENT_TYPE),
            Some("text/html; charset=utf-8")
        );
    }
    for path in ["empty/", "empty", "missing.txt", "docs/index.html/"] {
        let (res, body) = site.get(path, &[]).await;
        assert_eq!(res.status(), StatusCode::NOT_FOUND, "{path}");
        assert!(body.is_empty());
    }
    // The root itself, and a custom index list tried in order.
    site.file("index.htm", b"htm");
    site.file("default.txt", b"default");
    site.opts.index = vec!["nope.html".into(), "index.htm".into(), "default.txt".into()];
    let (res, body) = site.get("", &[]).await;
    assert_eq!((res.status(), &body[..]), (StatusCode::OK, &b"htm"[..]));
}

#[tokio::test]
async fn special_files_are_forbidden() {
    let site = Site::new();
    let _listener = std::os::unix::net::UnixListener::bind(site.root().join("app.sock"))
        .unwrap_or_else(|e| panic!("bind: {e}"));
    let (res, body) = site.get("app.sock", &[]).await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    assert!(body.is_empty());
}

#[tokio::test]
async fn a_missing_root_is_404() {
    let opts = StaticOptions::new("/nonexistent/moongate/static");
    let response = serve(&opts, "x.txt", &Method::GET, &HeaderMap::new()).await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
}

//! Imports about servers, rewrites, and the output directory.

use super::super::*;
use super::{Run, cert};

#[test]
fn a_plain_server_redirecting_to_https_becomes_the_redirect_policy() {
    let dir = tempfile::tempdir().unwrap();
    cert(dir.path());
    let run = Run::in_dir(
        dir,
        "http {\n\
         server { listen 80; server_name example.com; return 301 https://$host$request_uri; }\n\
         server { listen 8443 ssl; server_name example.com; ssl_certificate certs/site.pem; ssl_certificate_key certs/site.key;\n\
           location / { proxy_pass http://127.0.0.1:9000; } }\n}\n",
    );
    run.check();
    let all = run.toml();
    assert!(
        all.contains(
            "{ use = \"redirect\", http_to_https = true, https_port = 8443, status_code = 301 }"
        ),
        "{all}"
    );
    assert!(all.contains("listen = [\"0.0.0.0:80\"]"), "{all}");
    assert!(
        !all.contains("server-return"),
        "the redirect server has no route of its own: {all}"
    );
    assert_eq!(run.note("return").severity, Severity::Unneeded);
}

#[test]
fn servers_apart_by_port_share_moongate_listeners_and_the_first_route_wins() {
    let run = Run::new(
        "http {\n\
         server { listen 127.0.0.1:8001; location / { return 200 a; } }\n\
         server { listen 127.0.0.1:8002; location / { return 200 b; } location /b/ { return 200 bb; } }\n}\n",
    );
    run.check();
    let all = run.toml();
    assert!(
        all.contains("listen = [\"127.0.0.1:8001\", \"127.0.0.1:8002\"]"),
        "{all}"
    );
    // Both are their port's default server ("*"): the second `/` is dropped.
    assert_eq!(run.done.routes, 2, "{all}");
    let n = run
        .done
        .report
        .notes
        .iter()
        .find(|n| n.why.contains("not by listen address"))
        .unwrap();
    assert!(n.pos.to_string().ends_with("nginx.conf:3"), "{n}");
    assert!(
        run.done
            .report
            .notes
            .iter()
            .any(|n| n.why.contains("also answer on 127.0.0.1:8002"))
    );
}

#[test]
fn server_level_rewrites_run_before_every_route() {
    let run = Run::new(
        "http { server { listen 127.0.0.1:8001;\n\
         rewrite ^/old/(.*)$ /new/$1 last;\n\
         location /new/ { return 200 \"new $uri\"; }\n\
         location / { rewrite ^/x$ /new/x break; proxy_pass http://127.0.0.1:9000/base/; } } }\n",
    );
    run.check();
    let root = run.file("lua/s0-root-rewrite.lua");
    assert!(
        root.contains("if ngx.var.moongate_import_server_rewrites == nil then"),
        "{root}"
    );
    // The URI part applies only when no rewrite changed the URI (nginx's rule).
    assert!(root.contains("if ngx.var.uri == import_uri then ngx.req.set_uri(\"/base/\" .. string.sub(import_uri, 2)) end"), "{root}");
    let all = run.toml();
    assert!(!all.contains("rewrite = {"), "{all}");
}

#[test]
fn an_import_replaces_its_own_files_and_refuses_others() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("nginx.conf");
    std::fs::write(&conf, "http { server { listen 127.0.0.1:8001; location /a { return 204; } location /b { return 204; } } }").unwrap();
    let opts = ImportOptions {
        input: conf.clone(),
        out: dir.path().join("conf.d"),
        nginx_prefix: None,
    };
    import(&opts).unwrap();
    let lua_dir = dir.path().join("conf.d/lua");
    assert_eq!(std::fs::read_dir(&lua_dir).unwrap().count(), 2);
    std::fs::write(
        &conf,
        "http { server { listen 127.0.0.1:8001; location /a { return 204; } } }",
    )
    .unwrap();
    import(&opts).unwrap();
    assert_eq!(
        std::fs::read_dir(&lua_dir).unwrap().count(),
        1,
        "the old file for /b is gone"
    );
    std::fs::write(dir.path().join("conf.d/50-mine.toml"), "[server]\n").unwrap();
    let e = import(&opts).unwrap_err();
    assert!(matches!(e, ImportError::NotOurs(_)), "{e}");
}

#[test]
fn syntax_errors_stop_the_import_with_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("nginx.conf"),
        "http {\n  server {\n    listen 80\n  }\n}\n",
    )
    .unwrap();
    let e = import(&ImportOptions {
        input: dir.path().join("nginx.conf"),
        out: dir.path().join("conf.d"),
        nginx_prefix: None,
    })
    .unwrap_err();
    assert!(
        e.to_string()
            .ends_with("nginx.conf:3: directive \"listen\" has no closing \";\""),
        "{e}"
    );
}

#[test]
fn exact_locations_and_aliases_of_one_file() {
    let run = Run::new(
        "http { server { listen 127.0.0.1:8001; root /srv;\n\
         location = /robots.txt { alias /srv/files/robots.txt; }\n\
         location = /favicon.ico { }\n\
         location /img { }\n} }\n",
    );
    run.mkdirs(&[]);
    let all = run.toml();
    assert!(all.contains("path_exact = \"/robots.txt\"\nroot = \"/srv/files\"\nrewrite = { from = \"^.*$\", to = \"/robots.txt\" }"), "{all}");
    assert!(
        all.contains("path_exact = \"/favicon.ico\"\nroot = \"/srv\""),
        "{all}"
    );
    // A prefix without a trailing slash: nginx's /imgX maps to /srv/imgX.
    assert!(
        all.contains("path = \"/img\"\nroot = \"/srv/img\""),
        "{all}"
    );
    let n = run
        .done
        .report
        .notes
        .iter()
        .find(|n| n.why.contains("without a trailing"))
        .unwrap();
    assert_eq!((n.severity, n.pos.line), (Severity::Differs, 1), "{n}");
}

#[test]
fn internal_locations_answer_only_internal_requests() {
    let run = Run::new(
        "http { server { listen 127.0.0.1:8001;\n\
         location / { content_by_lua_block { ngx.exec(\"/inner\") } }\n\
         location = /inner { internal; return 200 inner; } } }\n",
    );
    run.check();
    let inner = run.file("lua/s0-inner-content.lua");
    assert!(inner.starts_with("-- Generated"), "{inner}");
    let guard = run.file("lua/s0-inner-rewrite.lua");
    assert!(
        guard.contains("if not ngx.req.is_internal() then return ngx.exit(404) end"),
        "{guard}"
    );
}

#[test]
fn lua_files_are_referred_to_and_blocks_written_once() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("lua")).unwrap();
    std::fs::write(dir.path().join("lua/auth.lua"), "return\n").unwrap();
    std::fs::write(dir.path().join("lua/init.lua"), "X = 1\n").unwrap();
    let run = Run::in_dir(
        dir,
        "http { init_by_lua_file lua/init.lua;\n\
         access_by_lua_file lua/auth.lua;\n\
         log_by_lua_block { ngx.log(ngx.INFO, \"done\") }\n\
         server { listen 127.0.0.1:8001;\n\
         location /a { return 204; }\n\
         location /b { return 204; }\n\
         location /c { access_by_lua_block { ngx.exit(403) } return 204; } } }\n",
    );
    run.check();
    let prefix = run.dir.path().display().to_string();
    let all = run.toml();
    assert!(
        all.contains(&format!("init = \"{prefix}/lua/init.lua\"")),
        "{all}"
    );
    assert_eq!(
        all.matches(&format!("lua.access = \"{prefix}/lua/auth.lua\""))
            .count(),
        2,
        "{all}"
    );
    // The http-level log block is one file for the three routes.
    let logs = all.matches("lua.log = \"conf.d/lua/s0-a-log.lua\"").count();
    assert_eq!(logs, 3, "{all}");
    assert!(
        all.contains("lua.access = \"conf.d/lua/s0-c-access.lua\""),
        "{all}"
    );
    // A return with an access handler answers in the rewrite phase, as nginx.
    assert!(
        all.contains("path = \"/c\"\nlua.rewrite = \"conf.d/lua/s0-c-rewrite.lua\""),
        "{all}"
    );
    assert!(
        run.file("lua/s0-c-rewrite.lua")
            .contains("ngx.send_headers()")
    );
    assert!(run.file("lua/s0-c-content.lua").contains("Never reached"));
}

#[test]
fn a_file_of_server_blocks_is_read_as_the_inside_of_http() {
    let run = Run::new(
        "upstream app { server 127.0.0.1:9000; }\n\
         server { listen 127.0.0.1:8080; location / { proxy_pass http://app; } }\n",
    );
    run.check();
    assert_eq!(run.done.routes, 1);
    assert_eq!(run.note("(file)").severity, Severity::Differs);
    assert!(run.toml().contains("[upstream.app]"));
}

#[test]
fn names_that_collide_once_made_safe_stay_apart() {
    let run = Run::new(
        "http { lua_shared_dict my-dict 1m;\n\
         proxy_cache_path /tmp/c1 keys_zone=a.b:1m;\n\
         proxy_cache_path /tmp/c2 keys_zone=a_b:1m;\n\
         upstream a.b { server 127.0.0.1:1; }\n\
         upstream a_b { server 127.0.0.1:2; }\n\
         server { listen 127.0.0.1:8001;\n\
         location /1 { proxy_pass http://a.b; proxy_cache a.b; }\n\
         location /2 { proxy_pass http://a_b; proxy_cache a_b; } } }\n",
    );
    run.check();
    let all = run.toml();
    assert!(
        all.contains("[cache.a_b]") && all.contains("[cache.a_b-2]"),
        "{all}"
    );
    assert!(
        all.contains("[upstream.a_b]") && all.contains("[upstream.a_b-2]"),
        "{all}"
    );
    assert_eq!(
        run.note("lua_shared_dict my-dict").severity,
        Severity::NotTranslated
    );
}

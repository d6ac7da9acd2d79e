//! Whole imports: nginx text in, conf.d out, checked by `moongate
//! check`'s own code, and the notes it prints.

use std::path::{Path, PathBuf};

use super::*;
use crate::reload::ConfigSource;

mod robust;
mod servers;

/// An import of `conf` (written as `nginx.conf` in a temp dir that is
/// also nginx's prefix) into `conf.d` there.
pub(super) struct Run {
    pub(super) dir: tempfile::TempDir,
    pub(super) done: Imported,
}

impl Run {
    pub(super) fn new(conf: &str) -> Run {
        let dir = tempfile::tempdir().unwrap();
        Self::in_dir(dir, conf)
    }

    pub(super) fn in_dir(dir: tempfile::TempDir, conf: &str) -> Run {
        std::fs::write(dir.path().join("nginx.conf"), conf).unwrap();
        let done = import(&ImportOptions {
            input: dir.path().join("nginx.conf"),
            out: dir.path().join("conf.d"),
            nginx_prefix: Some(dir.path().to_path_buf()),
        })
        .unwrap();
        Run { dir, done }
    }

    pub(super) fn out(&self) -> PathBuf {
        self.dir.path().join("conf.d")
    }

    pub(super) fn file(&self, rel: &str) -> String {
        std::fs::read_to_string(self.out().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
    }

    /// Every TOML file's text, in name order.
    pub(super) fn toml(&self) -> String {
        let mut names: Vec<PathBuf> = std::fs::read_dir(self.out())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "toml"))
            .collect();
        names.sort();
        names
            .iter()
            .map(|p| std::fs::read_to_string(p).unwrap())
            .collect()
    }

    /// `moongate check` on the output must pass.
    pub(super) fn check(&self) {
        if let Err(e) = ConfigSource::Dir(self.out()).check() {
            panic!("check failed: {e}\n{}", self.toml());
        }
    }

    /// The printed note for a directive starting with `directive`.
    pub(super) fn note(&self, directive: &str) -> &Note {
        self.done
            .report
            .notes
            .iter()
            .find(|n| n.directive.starts_with(directive))
            .unwrap_or_else(|| panic!("no note for {directive}: {:#?}", self.done.report.notes))
    }

    pub(super) fn mkdirs(&self, dirs: &[&str]) {
        for d in dirs {
            std::fs::create_dir_all(self.dir.path().join(d)).unwrap();
        }
    }
}

/// A self-signed certificate and key written as `certs/site.pem|key`.
pub(super) fn cert(dir: &Path) {
    let c = rcgen::generate_simple_self_signed(vec!["example.com".to_string()]).unwrap();
    std::fs::create_dir_all(dir.join("certs")).unwrap();
    std::fs::write(dir.join("certs/site.pem"), c.cert.pem()).unwrap();
    std::fs::write(dir.join("certs/site.key"), c.signing_key.serialize_pem()).unwrap();
}

const SUBSET: &str = r#"
worker_processes 2;
events { worker_connections 1024; }
http {
    lua_package_path "$prefix/lualib/?.lua;;";
    lua_shared_dict store 1m;
    init_by_lua_block { GREETING = "hi" }
    init_worker_by_lua_block { ngx.log(ngx.INFO, "worker up") }
    limit_req_zone $binary_remote_addr zone=perip:10m rate=5r/s;
    limit_conn_zone $binary_remote_addr zone=conn:10m;
    proxy_cache_path cache keys_zone=pages:10m max_size=64m;
    gzip on;
    gzip_types application/json;
    gzip_comp_level 5;
    client_max_body_size 2m;
    keepalive_timeout 30s;

    upstream app {
        least_conn;
        server 127.0.0.1:9001 weight=3 max_fails=2 fail_timeout=5s;
        server 127.0.0.1:9002 backup;
        server 127.0.0.1:9003 down;
        keepalive 16;
    }
    upstream hashed { hash $request_uri consistent; server 127.0.0.1:9004; }
    upstream sticky { ip_hash; server 127.0.0.1:9005; }

    server {
        listen 8080 default_server;
        listen 8443 ssl http2;
        server_name example.com .example.org;
        ssl_certificate certs/site.pem;
        ssl_certificate_key certs/site.key;
        root site;
        index index.html;

        location = /exact { default_type text/html; return 200 "exact $uri\n"; }
        location ^~ /static/ { expires 1h; }
        location ~* \.(png|jpg)$ { root images; }
        location /files/ { alias data/; }
        location /api/ {
            proxy_pass http://app/v2/;
            proxy_set_header Host $host;
            proxy_set_header X-Start $msec;
            proxy_set_header X-Client $remote_addr;
            proxy_read_timeout 90s;
            proxy_connect_timeout 2s;
            limit_req zone=perip burst=10 nodelay;
            limit_conn conn 5;
        }
        location /cached/ {
            proxy_pass http://app;
            proxy_cache pages;
            proxy_cache_valid 200 10m;
            proxy_cache_key $scheme$host$request_uri;
        }
        location /old/ { rewrite ^/old/(.*)$ /new/$1 permanent; }
        location /v1/ { rewrite ^/v1/(.*)$ /api/$1 last; }
        location /direct { proxy_pass http://127.0.0.1:9010; }
        location /lua {
            access_by_lua_block { if ngx.var.arg_deny then return ngx.exit(403) end }
            content_by_lua_block { ngx.say(GREETING, " ", "}") }
            header_filter_by_lua_block { ngx.header["X-Lua"] = "1" }
            body_filter_by_lua_block { }
            log_by_lua_block { }
        }
        location /private/ { allow 127.0.0.1; deny all; proxy_pass http://hashed; }
        location /upload { client_max_body_size 10m; proxy_pass http://sticky; }
        location /plain/ { gzip off; proxy_pass http://app; }
        location @fallback { return 404; }
        location /legacy { if ($arg_x) { return 403; } proxy_pass http://app; }
    }
}
"#;

#[test]
fn the_common_subset_translates_and_passes_check() {
    let dir = tempfile::tempdir().unwrap();
    cert(dir.path());
    // /old/ and /v1/ serve static files when their rewrite does not match.
    for d in [
        "site/static",
        "site/old",
        "site/v1",
        "images",
        "data",
        "lualib",
    ] {
        std::fs::create_dir_all(dir.path().join(d)).unwrap();
    }
    let run = Run::in_dir(dir, SUBSET);
    run.check();
    let global = run.file("00-import.toml");
    let routes = run.file("10-server-1.toml");
    let prefix = run.dir.path().display().to_string();
    for want in [
        "listen = [\"0.0.0.0:8080\"]",
        "workers = 2",
        "keepalive_timeout = \"30s\"",
        "client_max_body_size = \"2MiB\"",
        "compress = { algorithms = [\"gzip\"], level = 5, min_length = 20, types = [\"text/html\", \"application/json\"] }",
        "[[server.tls]]\nlisten = \"0.0.0.0:8443\"",
        "alpn = [\"h2\", \"http/1.1\"]",
        &format!("package_path = \"{prefix}/lualib/?.lua;lua/?.lua;lua/?/init.lua\""),
        "init = \"conf.d/lua/init.lua\"",
        "init_worker = \"conf.d/lua/init_worker.lua\"",
        "store = \"1MiB\"",
        "[upstream.app]\nbalance = \"least_conn\"\nkeepalive = 16\nservers = [{ addr = \"127.0.0.1:9001\", fail_timeout = \"5s\", max_fails = 2, weight = 3 }, { addr = \"127.0.0.1:9002\", backup = true }, { addr = \"127.0.0.1:9003\", down = true }]",
        "balance = \"hash\"\nkey = \"${request_uri}\"",
        "balance = \"ip_hash\"",
        // The API location's timeouts make a variant of `app`.
        "[upstream.app-2]\nbalance = \"least_conn\"\nkeepalive = 16\nconnect_timeout = \"2s\"\nread_timeout = \"90s\"",
        "[upstream.app]\nbalance",
        "[upstream.127_0_0_1_9010]",
        "[limit.perip]\nrate = \"5/s\"\nburst = 11\nkey = \"${remote_addr}\"\nstatus = 503\nheaders = false",
        "[limit.conn]\nkind = \"conn\"\nmax = 5",
        "[cache.pages]\nmemory = \"64MiB\"",
        "default_ttl = \"600s\"",
    ] {
        assert!(
            global.contains(want),
            "00-import.toml lacks {want:?}:\n{global}"
        );
    }
    for want in [
        "host = [\"example.com\", \"example.org\", \"*.example.org\", \"*\"]",
        "path_exact = \"/exact\"\nlua.content = \"conf.d/lua/s0-exact-content.lua\"",
        // ^~ before the regex location, as a regex.
        "path_regex = \"^/static/\"",
        &format!("root = \"{prefix}/site\"\nexpires = \"3600s\""),
        "path_regex = '(?i)\\.(png|jpg)$'",
        &format!("root = \"{prefix}/images\""),
        &format!("path = \"/files/\"\nroot = \"{prefix}/data/\""),
        "path = \"/api/\"\nupstream = \"app-2\"\nrewrite = { from = \"^/api/\", to = \"/v2/\" }\nlimit = [\"perip\", \"conn\"]",
        "{ use = \"request_transform\", set_headers = { X-Client = \"${remote_addr}\" } }",
        "path = \"/cached/\"\nupstream = \"app\"\ncache = \"pages\"",
        "lua.rewrite = \"conf.d/lua/s0-old-rewrite.lua\"",
        "path = \"/direct\"\nupstream = \"127_0_0_1_9010\"",
        "lua.access = \"conf.d/lua/s0-lua-access.lua\"",
        "lua.content = \"conf.d/lua/s0-lua-content.lua\"",
        "lua.header_filter = ",
        "lua.body_filter = ",
        "lua.log = ",
        "{ use = \"ip\", allow = [\"127.0.0.1\"] }",
        "{ use = \"request_size\", max_body_size = \"10MiB\" }",
        "compress = { enabled = false }",
    ] {
        assert!(
            routes.contains(want),
            "10-server-1.toml lacks {want:?}:\n{routes}"
        );
    }
    // The caret route comes before the case-insensitive regex.
    assert!(routes.find("\"^/static/\"") < routes.find("(?i)"));
    let old = run.file("lua/s0-old-rewrite.lua");
    assert!(old.contains("return ngx.redirect(to, 301)"), "{old}");
    let content = run.file("lua/s0-lua-content.lua");
    assert!(
        content.contains("ngx.say(GREETING, \" \", \"}\")"),
        "{content}"
    );
    let exact = run.file("lua/s0-exact-content.lua");
    assert!(
        exact.contains("ngx.header[\"Content-Type\"] = \"text/html\""),
        "{exact}"
    );

    let n = run.note("proxy_set_header X-Start");
    assert_eq!(n.severity, Severity::NotTranslated);
    assert!(n.why.contains("$msec"), "{n}");
    assert_eq!(
        run.note("location @fallback").severity,
        Severity::NotTranslated
    );
    let n = run.note("if ($arg_x)");
    assert_eq!(n.severity, Severity::NotTranslated);
    assert!(n.pos.to_string().ends_with("nginx.conf:71"), "{n}");
    assert_eq!(
        run.note("proxy_set_header Host").severity,
        Severity::Unneeded
    );
    assert_eq!(run.note("events").severity, Severity::Unneeded);
}

#[test]
fn the_bench_anchor_configs_import_and_pass_check() {
    let bench = Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/nginx");
    for name in [
        "proxy",
        "cache",
        "lua-access",
        "lua-ratelimit",
        "origin",
        "proxy-gzip",
        "proxy-tls",
        "proxy-h2c",
    ] {
        let text = std::fs::read_to_string(bench.join(format!("{name}.conf"))).unwrap();
        let dir = tempfile::tempdir().unwrap();
        cert(dir.path());
        std::fs::write(dir.path().join("page.html"), "<p>page</p>").unwrap();
        let text = text
            .replace("@LISTEN@", "127.0.0.1:18080")
            .replace("@ORIGIN_LISTEN@", "127.0.0.1:18081")
            .replace("@ORIGIN@", "127.0.0.1:18081")
            .replace("@RL_RATE@", "100")
            .replace("@RL_BURST@", "10")
            .replace("@GZIP_LEVEL@", "5")
            .replace("@GZIP_MIN_LENGTH@", "256")
            .replace("@GZIP_TYPES_NGINX@", "application/json")
            .replace(
                "@CACHE_DIR@",
                &dir.path().join("cache").display().to_string(),
            )
            .replace(
                "@PAGE_FILE@",
                &dir.path().join("page.html").display().to_string(),
            )
            .replace(
                "@CERT@",
                &dir.path().join("certs/site.pem").display().to_string(),
            )
            .replace(
                "@KEY@",
                &dir.path().join("certs/site.key").display().to_string(),
            );
        assert!(!text.contains('@'), "{name}: a placeholder is left: {text}");
        let run = Run::in_dir(dir, &text);
        run.check();
        let all = run.toml();
        assert!(all.contains("keepalive_timeout = \"75s\""), "{name}: {all}");
        match name {
            "cache" => assert!(
                all.contains("cache = \"bench\"") && all.contains("lock = true"),
                "{all}"
            ),
            "lua-access" => {
                assert!(all.contains("lua.access = "), "{all}");
                assert!(run.file("lua/init.lua").contains("bench_tokens"));
            }
            "lua-ratelimit" => assert!(
                all.contains("[lua.shared_dict]\nratelimit = \"10MiB\""),
                "{all}"
            ),
            "origin" => {
                assert!(all.contains("path_exact = \"/page\""), "{all}");
                assert_eq!(run.note("stub_status").severity, Severity::NotTranslated);
            }
            "proxy-gzip" => assert!(
                all.contains("algorithms = [\"gzip\"], level = 5, min_length = 256"),
                "{all}"
            ),
            "proxy-tls" => assert!(
                all.contains("[[server.tls]]") && all.contains("\"h2\""),
                "{all}"
            ),
            _ => assert!(all.contains("upstream = \"origin\""), "{name}: {all}"),
        }
    }
}

#[test]
fn nginx_dash_t_output_is_imported_file_by_file() {
    let dir = tempfile::tempdir().unwrap();
    let dump = "nginx: the configuration file /etc/nginx/nginx.conf syntax is ok\n\
        # configuration file /etc/nginx/nginx.conf:\n\
        http {\n    include /etc/nginx/conf.d/*.conf;\n}\n\
        # configuration file /etc/nginx/conf.d/app.conf:\n\
        upstream app { server 127.0.0.1:9000; }\n\
        server {\n    listen 127.0.0.1:8080;\n    location / {\n        proxy_pass http://app; sub_filter a b;\n    }\n}\n";
    std::fs::write(dir.path().join("dump.txt"), dump).unwrap();
    let done = import(&ImportOptions {
        input: dir.path().join("dump.txt"),
        out: dir.path().join("out"),
        nginx_prefix: None,
    })
    .unwrap();
    assert!(done.dump);
    assert_eq!(done.routes, 1);
    let n = done
        .report
        .notes
        .iter()
        .find(|n| n.directive.starts_with("sub_filter"))
        .unwrap();
    assert_eq!(n.pos.to_string(), "/etc/nginx/conf.d/app.conf:5");
    assert_eq!(n.severity, Severity::NotTranslated);
    ConfigSource::Dir(dir.path().join("out")).check().unwrap();
}

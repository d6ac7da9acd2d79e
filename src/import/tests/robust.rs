//! Whatever the input, the import answers with notes or an error, never a
//! panic: random text through the lexer and parser, and random directive
//! soups through the whole translation and rendering.

use proptest::prelude::*;

use super::super::{emit, lexer, parse, report, translate};

/// Directive names, for random configurations.
const NAMES: &[&str] = &[
    "listen",
    "proxy_pass",
    "return",
    "rewrite",
    "root",
    "alias",
    "limit_req",
    "limit_req_zone",
    "limit_conn",
    "limit_conn_zone",
    "proxy_cache",
    "proxy_cache_path",
    "proxy_cache_valid",
    "proxy_cache_key",
    "set",
    "access_by_lua_file",
    "server_name",
    "ssl",
    "http2",
    "ssl_certificate",
    "ssl_certificate_key",
    "gzip",
    "gzip_types",
    "add_header",
    "proxy_set_header",
    "auth_request",
    "auth_request_set",
    "internal",
    "allow",
    "deny",
    "try_files",
    "index",
    "expires",
    "keepalive",
    "least_conn",
    "hash",
    "ip_hash",
    "random",
    "server",
    "lua_shared_dict",
    "lua_package_path",
    "client_max_body_size",
    "proxy_read_timeout",
    "proxy_next_upstream",
    "default_type",
    "break",
    "bogus",
    "include",
    "worker_processes",
    "pid",
    "load_module",
    "init_by_lua",
    "content_by_lua",
    "keepalive_timeout",
    "set_real_ip_from",
    "access_log",
    "stub_status",
    "error_page",
];

/// Block directive names.
const BLOCKS: &[&str] = &[
    "http",
    "server",
    "location",
    "upstream",
    "events",
    "if",
    "limit_except",
    "types",
    "map",
];

/// Arguments.
const ARGS: &[&str] = &[
    "80",
    "443",
    "127.0.0.1:8080",
    "[::]:80",
    "localhost:1",
    "unix:/s",
    "http://a",
    "http://a/b/",
    "https://h:8443/x",
    "http://$v",
    "301",
    "200",
    "444",
    "\"x $uri $1\"",
    "^/(.*)$",
    "/x/$1?a=$arg_b",
    "last",
    "break",
    "permanent",
    "/srv",
    "/d/",
    "/d/f.txt",
    "=",
    "~",
    "^~",
    "~*",
    "/p/",
    "/",
    "@named",
    "zone=z",
    "zone=z:1m",
    "burst=2",
    "nodelay",
    "rate=1r/s",
    "rate=x",
    "$binary_remote_addr",
    "$msec",
    "c",
    "keys_zone=c:1m",
    "max_size=1m",
    "inactive=1m",
    "$v",
    "*.x",
    ".y",
    "_",
    "~^re$",
    "on",
    "off",
    "X",
    "Host",
    "$host",
    "\"\"",
    "all",
    "10.0.0.0/8",
    "GET",
    "$uri",
    "=404",
    "1h",
    "5s",
    "x",
    "1m",
    "default_server",
    "weight=2",
    "backup",
    "down",
    "consistent",
    "\"/x/?.lua;;\"",
    "'ngx.say(1)'",
    "always",
    "${host}",
    "a.lua",
    "(",
    ")",
];

/// A random directive, with blocks nested up to three deep.
fn directive() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        8 => (prop::sample::select(NAMES), prop::collection::vec(prop::sample::select(ARGS), 0..4))
            .prop_map(|(n, a)| format!("{n} {};", a.join(" "))),
        1 => prop::sample::select(&[
            "content_by_lua_block { ngx.say(\"}\") }",
            "access_by_lua_block { if ngx.var.x then return ngx.exit(403) end }",
            "init_by_lua_block { X = {} }",
            "balancer_by_lua_block { }",
        ][..])
        .prop_map(str::to_owned),
    ];
    leaf.prop_recursive(3, 48, 8, |inner| {
        (
            prop::sample::select(BLOCKS),
            prop::collection::vec(prop::sample::select(ARGS), 0..2),
            prop::collection::vec(inner, 0..8),
        )
            .prop_map(|(n, a, body)| format!("{n} {} {{\n{}\n}}", a.join(" "), body.join("\n")))
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn any_text_lexes_and_parses_without_panicking(text in "[ a-z0-9_{};#\"'\\\\$~^=*/.\n\\[\\]-]{0,200}") {
        if let Ok(tokens) = lexer::tokenize(&text) {
            let _ = parse::parse(&"t".into(), tokens);
        }
    }

    #[test]
    fn any_configuration_translates_without_panicking(directives in prop::collection::vec(directive(), 0..10)) {
        let text = directives.join("\n");
        let tokens = lexer::tokenize(&text).map_err(|e| TestCaseError::fail(format!("{e}: {text}")))?;
        let tree = parse::parse(&"t".into(), tokens).map_err(|e| TestCaseError::fail(format!("{e}: {text}")))?;
        let opts = translate::Options {
            lua_ref: "conf.d/lua".into(),
            nginx_prefix: None,
            conf_dir: "/nonexistent".into(),
        };
        let mut report = report::Report::default();
        let conf = translate::translate(&tree, &opts, &mut report);
        let files = emit::render(&conf, &report, "t");
        // Whatever came in, the TOML written is TOML.
        for f in files.iter().filter(|f| f.rel.ends_with(".toml")) {
            toml::from_str::<toml::Table>(&f.text).map_err(|e| TestCaseError::fail(format!("{e}\n{}", f.text)))?;
        }
    }
}

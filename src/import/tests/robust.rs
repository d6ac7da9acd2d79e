//! Whatever the input, the import answers with notes or an error, never a
//! panic: random text through the lexer and parser, and random directive
//! soups through the whole translation and rendering.

use proptest::prelude::*;

use super::super::{emit, lexer, parse, report, translate};

/// Words that make nginx configurations, for random ones.
const VOCAB: &[&str] = &[
    "http",
    "server",
    "location",
    "upstream",
    "{",
    "}",
    ";",
    ";",
    ";",
    "listen",
    "80",
    "443",
    "127.0.0.1:8080",
    "proxy_pass",
    "http://a",
    "http://a/b/",
    "https://h:8443/x",
    "return",
    "301",
    "200",
    "\"x $uri $1\"",
    "rewrite",
    "^/(.*)$",
    "/x/$1?a=$arg_b",
    "last",
    "break",
    "permanent",
    "root",
    "/srv",
    "alias",
    "/d/",
    "/d/f.txt",
    "=",
    "~",
    "^~",
    "~*",
    "/p/",
    "/",
    "@named",
    "limit_req",
    "zone=z",
    "burst=2",
    "nodelay",
    "limit_req_zone",
    "$binary_remote_addr",
    "zone=z:1m",
    "rate=1r/s",
    "limit_conn",
    "limit_conn_zone",
    "proxy_cache",
    "c",
    "proxy_cache_path",
    "/tmp/c",
    "keys_zone=c:1m",
    "max_size=1m",
    "proxy_cache_valid",
    "set",
    "$v",
    "if",
    "($x)",
    "content_by_lua_block",
    "access_by_lua_file",
    "a.lua",
    "server_name",
    "*.x",
    ".y",
    "_",
    "~^re$",
    "ssl",
    "http2",
    "default_server",
    "ssl_certificate",
    "c.pem",
    "ssl_certificate_key",
    "k.pem",
    "gzip",
    "on",
    "off",
    "add_header",
    "X",
    "proxy_set_header",
    "Host",
    "$host",
    "\"\"",
    "auth_request",
    "/auth",
    "internal",
    "allow",
    "deny",
    "all",
    "10.0.0.0/8",
    "limit_except",
    "GET",
    "try_files",
    "$uri",
    "=404",
    "index",
    "expires",
    "1h",
    "keepalive",
    "least_conn",
    "hash",
    "consistent",
    "127.0.0.1:1",
    "weight=2",
    "backup",
    "events",
    "lua_shared_dict",
    "d",
    "1m",
    "lua_package_path",
    "\"/x/?.lua;;\"",
    "init_by_lua_block",
    "client_max_body_size",
    "proxy_read_timeout",
    "5s",
    "bogus",
    "include",
    "x.conf",
];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn any_text_lexes_and_parses_without_panicking(text in "[ a-z0-9_{};#\"'\\\\$~^=*/.\n\\[\\]-]{0,200}") {
        if let Ok(tokens) = lexer::tokenize(&text) {
            let _ = parse::parse(&"t".into(), tokens);
        }
    }

    #[test]
    fn any_directive_soup_translates_without_panicking(words in prop::collection::vec(prop::sample::select(VOCAB), 0..80)) {
        let text = words.join(" ");
        let Ok(tokens) = lexer::tokenize(&text) else { return Ok(()) };
        let Ok(tree) = parse::parse(&"t".into(), tokens) else { return Ok(()) };
        let opts = translate::Options {
            lua_ref: "conf.d/lua".into(),
            nginx_prefix: None,
            conf_dir: "/nonexistent".into(),
        };
        let mut report = report::Report::default();
        // Wrapped in http { } too, so server and location soups are reached.
        let conf = translate::translate(&tree, &opts, &mut report);
        let _ = emit::render(&conf, &report, "t");
        let wrapped = format!("http {{ server {{ {text} }} }}");
        if let Ok(tokens) = lexer::tokenize(&wrapped)
            && let Ok(tree) = parse::parse(&"t".into(), tokens) {
                let conf = translate::translate(&tree, &opts, &mut report);
                let _ = emit::render(&conf, &report, "t");
            }
    }
}

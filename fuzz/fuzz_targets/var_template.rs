//! `$var` templates (`vars::VarTemplate`): arbitrary text parsed, and
//! rendered against a request whose query and `Cookie` header come from
//! the input too. Input: template, `\n`, query, `\n`, cookie header.
//! Invariants: no panic; text without `$` parses and renders as itself;
//! a template without variables renders the same for every request.

#![no_main]

use std::net::IpAddr;

use http::request::Parts;
use libfuzzer_sys::fuzz_target;
use moongate::vars::{RequestFacts, VarTemplate, cookie, query_arg};

/// The request, with `query` and `cookie` when `http` takes them.
fn request(query: &str, cookie: &[u8]) -> Parts {
    let uri = format!("/a/b?{query}");
    let mut b = http::Request::builder()
        .method("POST")
        .uri(if uri.parse::<http::Uri>().is_ok() {
            uri.as_str()
        } else {
            "/a/b?x=1"
        })
        .header("x-api-key", "k1")
        .header("x-user", "bob");
    if http::HeaderValue::from_bytes(cookie).is_ok() {
        b = b.header("cookie", cookie);
    }
    match b.body(()) {
        Ok(r) => r.into_parts().0,
        Err(e) => panic!("the fixed request is refused: {e}"),
    }
}

fn facts(request_uri: &str) -> RequestFacts {
    RequestFacts {
        host: "example.com".into(),
        request_uri: request_uri.parse().unwrap_or_else(|_| http::Uri::from_static("/")),
        client: IpAddr::from([10, 0, 0, 7]),
        scheme: "https",
        server_port: 8443,
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut lines = text.splitn(3, '\n');
    let template = lines.next().unwrap_or_default();
    let query = lines.next().unwrap_or_default();
    let cookie_line = lines.next().unwrap_or_default();

    let parts = request(query, cookie_line.as_bytes());
    let uri = parts.uri.to_string();
    let parsed = VarTemplate::parse(template);
    if !template.contains('$') {
        let t = parsed
            .as_ref()
            .unwrap_or_else(|e| panic!("plain text refused: {e}"));
        assert_eq!(t.render(&facts(&uri).vars(&parts)), template);
    }
    if let Ok(t) = &parsed {
        let rendered = t.render(&facts(&uri).vars(&parts));
        assert_eq!(rendered, t.render(&facts(&uri).vars(&parts)));
        let other = request("", b"");
        if !template.contains('$') {
            assert_eq!(t.render(&facts("/").vars(&other)), rendered);
        }
    }
    // The lookups behind $cookie_NAME and $arg_NAME, with names from the input.
    for name in template.split(['$', '=', ';', '&']) {
        if let Some(v) = cookie(&parts.headers, name) {
            assert!(cookie_line.contains(v));
        }
        if let Some(v) = query_arg(parts.uri.query().unwrap_or(""), name) {
            assert!(query.contains(v) || "x=1".contains(v));
        }
    }
});

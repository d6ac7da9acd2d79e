//! nginx's auto-redirect of a proxied location ending in `/`: a request
//! for `/t` that the router answers with [`RouteMatch::Redirect`] (a route
//! `/t/` with an upstream; see [`crate::route`]) gets `301 Moved
//! Permanently` to the route's path, its query string kept, as nginx's
//! `ngx_http_core_find_config_phase` answers. The route's header filter
//! and log handlers see the response with the `Location` as nginx's
//! location filters do (`/t/`); it is made absolute only as the response
//! leaves ([`absolute_location`]), as nginx's header filter does with
//! `absolute_redirect on`, `server_name_in_redirect off` and
//! `port_in_redirect on` (its defaults): `http://HOST[:PORT]/t/`.
//!
//! [`RouteMatch::Redirect`]: crate::route::RouteMatch::Redirect

use std::net::IpAddr;

use http::header::{self, HeaderValue};
use http::request::Parts;
use http::{Response, StatusCode};

use crate::body::ResponseBody;
use crate::error_page;

/// Marks a response whose `Location` is made absolute as it leaves.
#[derive(Debug, Clone, Copy)]
pub(super) struct AbsoluteLocation;

/// The `301` to `to` (the route's path, with its `/`) for the request in
/// `parts`: moongate's own answer (its body rendered as every error page
/// is), with `Location: to[?query]`.
pub(super) fn response(to: &str, parts: &Parts) -> Response<ResponseBody> {
    let mut resp = error_page::response(StatusCode::MOVED_PERMANENTLY);
    let query = parts.uri.query().filter(|q| !q.is_empty());
    let location = match query {
        Some(q) => HeaderValue::from_str(&format!("{to}?{q}")),
        None => HeaderValue::from_str(to),
    };
    if let Ok(v) = location {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp.extensions_mut().insert(AbsoluteLocation);
    resp
}

/// Makes a `Location` that begins with `/` absolute on a response marked
/// by [`response`]: the scheme, the request's host (else the address the
/// connection came to), and the port unless it is the scheme's own.
pub(super) fn absolute_location(
    resp: &mut Response<ResponseBody>,
    scheme: &str,
    host: &str,
    local: std::net::SocketAddr,
) {
    // The status first: most responses are not 301s, and their
    // extensions are not looked through.
    if resp.status() != StatusCode::MOVED_PERMANENTLY
        || resp.extensions_mut().remove::<AbsoluteLocation>().is_none()
    {
        return;
    }
    let Some(location) = resp.headers().get(header::LOCATION) else {
        return;
    };
    if !location.as_bytes().starts_with(b"/") {
        return;
    }
    let host = if host.is_empty() {
        match local.ip() {
            IpAddr::V4(ip) => ip.to_string(),
            IpAddr::V6(ip) => format!("[{ip}]"),
        }
    } else if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_owned()
    };
    let default_port = if scheme == "https" { 443 } else { 80 };
    let port = match local.port() {
        p if p == default_port => String::new(),
        p => format!(":{p}"),
    };
    let mut out = format!("{scheme}://{host}{port}").into_bytes();
    out.extend_from_slice(location.as_bytes());
    if let Ok(v) = HeaderValue::from_bytes(&out) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(uri: &str) -> Parts {
        http::Request::get(uri).body(()).unwrap().into_parts().0
    }

    fn location(resp: &Response<ResponseBody>) -> &str {
        resp.headers()
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }

    #[test]
    fn the_route_path_with_the_query_made_absolute_as_it_leaves() {
        let mut resp = response("/t/", &parts("/t?a=1&b"));
        assert_eq!(resp.status(), StatusCode::MOVED_PERMANENTLY);
        assert_eq!(location(&resp), "/t/?a=1&b");
        absolute_location(
            &mut resp,
            "http",
            "localhost",
            "127.0.0.1:8080".parse().unwrap(),
        );
        assert_eq!(location(&resp), "http://localhost:8080/t/?a=1&b");
        // Once only.
        absolute_location(&mut resp, "http", "x", "127.0.0.1:1".parse().unwrap());
        assert_eq!(location(&resp), "http://localhost:8080/t/?a=1&b");
    }

    #[test]
    fn default_ports_are_left_out_and_hosts_fall_back_to_the_local_address() {
        let cases = [
            ("http", "a.example", "10.0.0.1:80", "http://a.example/t/"),
            ("https", "a.example", "10.0.0.1:443", "https://a.example/t/"),
            (
                "https",
                "a.example",
                "10.0.0.1:80",
                "https://a.example:80/t/",
            ),
            ("http", "", "10.0.0.1:8080", "http://10.0.0.1:8080/t/"),
            ("http", "", "[::1]:80", "http://[::1]/t/"),
            ("http", "::1", "[::1]:81", "http://[::1]:81/t/"),
        ];
        for (scheme, host, local, want) in cases {
            let mut resp = response("/t/", &parts("/t?"));
            absolute_location(&mut resp, scheme, host, local.parse().unwrap());
            assert_eq!(location(&resp), want, "{scheme} {host} {local}");
        }
    }

    #[test]
    fn a_location_a_handler_made_absolute_or_an_unmarked_response_is_left_alone() {
        let mut resp = response("/t/", &parts("/t"));
        resp.headers_mut().insert(
            header::LOCATION,
            HeaderValue::from_static("https://elsewhere/x"),
        );
        absolute_location(&mut resp, "http", "h", "127.0.0.1:80".parse().unwrap());
        assert_eq!(location(&resp), "https://elsewhere/x");

        let mut resp = error_page::response(StatusCode::FOUND);
        resp.headers_mut()
            .insert(header::LOCATION, HeaderValue::from_static("/y"));
        absolute_location(&mut resp, "http", "h", "127.0.0.1:80".parse().unwrap());
        assert_eq!(location(&resp), "/y");
    }
}

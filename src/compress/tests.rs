use super::*;
use http::Request;

fn parts(method: Method, headers: &[(&str, &str)]) -> Parts {
    let mut b = Request::builder().method(method).uri("/x");
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    match b.body(()) {
        Ok(r) => r.into_parts().0,
        Err(e) => panic!("bad test request: {e}"),
    }
}

fn response(status: u16, headers: &[(&str, &str)], body: ResponseBody) -> Response<ResponseBody> {
    let mut r = Response::new(body);
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    for (k, v) in headers {
        if let (Ok(k), Ok(v)) = (
            header::HeaderName::from_bytes(k.as_bytes()),
            HeaderValue::from_str(v),
        ) {
            r.headers_mut().append(k, v);
        }
    }
    r
}

fn vary(r: &Response<ResponseBody>) -> Vec<&str> {
    r.headers()
        .get_all(header::VARY)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect()
}

const GZ: Offer = Offer {
    coding: Some(Algorithm::Gzip),
};
const NONE: Offer = Offer { coding: None };

#[test]
fn request_side_skips_head_range_upgrade() {
    let s = Settings::default();
    let ae = ("accept-encoding", "gzip");
    assert_eq!(s.offer(&parts(Method::GET, &[ae])), Some(GZ));
    assert_eq!(s.offer(&parts(Method::GET, &[])), Some(NONE));
    assert_eq!(s.offer(&parts(Method::HEAD, &[ae])), None);
    assert_eq!(
        s.offer(&parts(Method::GET, &[ae, ("range", "bytes=0-1")])),
        None
    );
    assert_eq!(
        s.offer(&parts(Method::GET, &[ae, ("upgrade", "websocket")])),
        None
    );
}

#[test]
fn compresses_a_qualifying_response() {
    let s = Settings::default();
    let body = ResponseBody::full(vec![b'a'; 4096]);
    let mut r = response(
        200,
        &[
            ("content-type", "text/html; charset=utf-8"),
            ("content-length", "4096"),
            ("etag", "\"abc\""),
            ("accept-ranges", "bytes"),
        ],
        body,
    );
    s.apply(GZ, &mut r);
    let h = r.headers();
    assert_eq!(
        h.get(header::CONTENT_ENCODING).map(|v| v.as_bytes()),
        Some(&b"gzip"[..])
    );
    assert!(h.get(header::CONTENT_LENGTH).is_none());
    assert!(h.get(header::ACCEPT_RANGES).is_none());
    assert_eq!(
        h.get(header::ETAG).map(|v| v.as_bytes()),
        Some(&b"W/\"abc\""[..])
    );
    assert_eq!(vary(&r), ["Accept-Encoding"]);
    assert_eq!(r.body().size_hint().exact(), None);
}

#[test]
fn identity_still_gets_vary() {
    let s = Settings::default();
    let mut r = response(
        200,
        &[("content-type", "application/json"), ("vary", "Origin")],
        ResponseBody::full(vec![b'{'; 2000]),
    );
    s.apply(NONE, &mut r);
    assert!(r.headers().get(header::CONTENT_ENCODING).is_none());
    assert_eq!(vary(&r), ["Origin, Accept-Encoding"]);
    assert_eq!(r.body().size_hint().exact(), Some(2000));
}

#[test]
fn left_alone() {
    let s = Settings::default();
    let big = || ResponseBody::full(vec![b'a'; 4096]);
    type Case = (u16, Vec<(&'static str, &'static str)>, ResponseBody);
    let cases: Vec<Case> = vec![
        (200, vec![("content-type", "image/png")], big()),
        (200, vec![], big()),
        (
            200,
            vec![("content-type", "text/html"), ("content-encoding", "br")],
            big(),
        ),
        (
            200,
            vec![
                ("content-type", "text/html"),
                ("cache-control", "public, No-Transform"),
            ],
            big(),
        ),
        (206, vec![("content-type", "text/html")], big()),
        (
            204,
            vec![("content-type", "text/html")],
            ResponseBody::empty(),
        ),
        (
            304,
            vec![("content-type", "text/html")],
            ResponseBody::empty(),
        ),
        (
            200,
            vec![("content-type", "text/html"), ("content-length", "1023")],
            big(),
        ),
        (
            200,
            vec![("content-type", "text/html")],
            ResponseBody::full(vec![b'a'; 100]),
        ),
    ];
    for (i, (status, headers, body)) in cases.into_iter().enumerate() {
        let mut r = response(status, &headers, body);
        s.apply(GZ, &mut r);
        assert!(r.headers().get(header::VARY).is_none(), "case {i}");
        let ce = r.headers().get(header::CONTENT_ENCODING);
        assert!(ce.is_none() || ce.is_some_and(|v| v == "br"), "case {i}");
    }
}

#[test]
fn unknown_length_is_compressed() {
    let s = Settings::default();
    let mut body = ResponseBody::full(vec![b'a'; 10]);
    body.hide_length();
    let mut r = response(200, &[("content-type", "text/plain")], body);
    s.apply(GZ, &mut r);
    assert!(r.headers().get(header::CONTENT_ENCODING).is_some());
}

#[test]
fn vary_merging() {
    let mut h = HeaderMap::new();
    h.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    add_vary(&mut h);
    assert_eq!(h.get_all(header::VARY).iter().count(), 1);
    let mut h = HeaderMap::new();
    h.insert(header::VARY, HeaderValue::from_static("*"));
    add_vary(&mut h);
    assert_eq!(h.get(header::VARY).map(|v| v.as_bytes()), Some(&b"*"[..]));
    let mut h = HeaderMap::new();
    h.append(header::VARY, HeaderValue::from_static("Origin"));
    h.append(header::VARY, HeaderValue::from_static("Cookie"));
    add_vary(&mut h);
    let all: Vec<_> = h.get_all(header::VARY).iter().collect();
    assert_eq!(all, ["Origin", "Cookie", "Accept-Encoding"]);
}

#[test]
fn type_patterns() {
    let s = Settings {
        types: vec!["text/*".into(), "application/json".into()],
        ..Settings::default()
    };
    assert!(s.matches_type("text/anything; charset=x"));
    assert!(s.matches_type("Application/JSON"));
    assert!(!s.matches_type("application/xml"));
    assert!(!s.matches_type("textual/x"));
    let any = Settings {
        types: vec!["*".into()],
        ..Settings::default()
    };
    assert!(any.matches_type("image/png"));
}

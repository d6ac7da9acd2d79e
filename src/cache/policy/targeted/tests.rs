//! Unit tests for [`super`]: selection by list order, Structured Fields
//! parsing (valid and failing fields) and the mapping to directives.

use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue};

use super::*;
use crate::cache::policy::tests::headers;

fn cdn() -> Vec<HeaderName> {
    vec![HeaderName::from_static("cdn-cache-control")]
}

fn parsed(value: &str) -> Option<CacheControl> {
    select(&headers(&[("cdn-cache-control", value)]), &cdn())
}

fn secs(n: u64) -> Option<Duration> {
    Some(Duration::from_secs(n))
}

#[test]
fn the_first_present_field_in_list_order_wins() {
    let list = vec![
        HeaderName::from_static("example-cdn-cache-control"),
        HeaderName::from_static("cdn-cache-control"),
    ];
    let both = headers(&[
        ("cdn-cache-control", "max-age=10"),
        ("example-cdn-cache-control", "max-age=20"),
    ]);
    assert_eq!(select(&both, &list).and_then(|c| c.max_age), secs(20));
    let one = headers(&[("cdn-cache-control", "max-age=10")]);
    assert_eq!(select(&one, &list).and_then(|c| c.max_age), secs(10));
    assert_eq!(
        select(&headers(&[("cache-control", "max-age=5")]), &list),
        None
    );
    assert_eq!(select(&one, &[]), None);
}

#[test]
fn an_invalid_or_empty_field_counts_as_absent_and_the_next_is_tried() {
    let list = vec![
        HeaderName::from_static("example-cdn-cache-control"),
        HeaderName::from_static("cdn-cache-control"),
    ];
    for bad in [
        "Max-Age=20",
        "max-age=20,",
        "max-age=20 junk",
        "",
        "max-age=\"20",
        "max-age=1.2.3",
    ] {
        let h = headers(&[
            ("example-cdn-cache-control", bad),
            ("cdn-cache-control", "max-age=10"),
        ]);
        assert_eq!(
            select(&h, &list).and_then(|c| c.max_age),
            secs(10),
            "{bad:?}"
        );
    }
}

#[test]
fn directives_map_like_cache_control() {
    let cc = parsed("max-age=60, s-maxage=30, stale-while-revalidate=5, stale-if-error=7").unwrap();
    assert_eq!((cc.max_age, cc.s_maxage), (secs(60), secs(30)));
    assert_eq!(
        (cc.stale_while_revalidate, cc.stale_if_error),
        (secs(5), secs(7))
    );
    let cc = parsed("no-store, private, no-cache, must-revalidate, public").unwrap();
    assert!(cc.no_store && cc.private && cc.no_cache && cc.must_revalidate && cc.public);
    // Field names on private / no-cache count as the bare directives.
    let cc = parsed("private=\"set-cookie\", no-cache=(\"a\" \"b\")").unwrap();
    assert!(cc.private && cc.no_cache);
}

#[test]
fn values_of_other_types_are_malformed_arguments() {
    let cc = parsed("max-age=-1, s-maxage=1.5, stale-if-error=:AAA=:, no-store=?0").unwrap();
    assert_eq!(cc, CacheControl::default());
    // A later duplicate replaces the earlier member (RFC 8941 §4.2.2).
    assert_eq!(
        parsed("max-age=10, max-age=20").and_then(|c| c.max_age),
        secs(20)
    );
    // A string argument is accepted when it holds delta-seconds.
    assert_eq!(parsed("max-age=\"9\"").and_then(|c| c.max_age), secs(9));
}

#[test]
fn unknown_directives_select_the_field_with_no_directives() {
    assert_eq!(parsed("foo, bar=baz;p=1"), Some(CacheControl::default()));
}

#[test]
fn structured_fields_syntax() {
    let valid = [
        "a",
        "a=1",
        "a=?1;x",
        "a=tok/en:x, b=\"s \\\\ \\\"q\\\"\"",
        "a=(1 2);p, b=( )",
        "  a=1 ,\tb",
        "*a",
        "a=-999999999999999",
        "a=123456789012.123",
    ];
    for v in valid {
        assert!(parsed(v).is_some(), "{v:?}");
    }
    let invalid = [
        "A=1",
        "1a",
        "a=",
        "a=1,,b",
        "a=1 b",
        "a=?2",
        "a=\"\\x\"",
        "a=(1,2)",
        "a=:abc",
        "a=1234567890123456",
        "a=1234567890123.1",
        "a=1.1234",
        "a=1.",
        "a=-",
        "a;",
        "a=é",
    ];
    for v in invalid {
        if let Ok(value) = HeaderValue::from_bytes(v.as_bytes()) {
            let mut h = HeaderMap::new();
            h.insert("cdn-cache-control", value);
            assert_eq!(select(&h, &cdn()), None, "{v:?}");
        }
    }
}

#[test]
fn several_lines_are_one_dictionary() {
    let h = headers(&[
        ("cdn-cache-control", "max-age=10"),
        ("cdn-cache-control", "must-revalidate"),
    ]);
    let cc = select(&h, &cdn()).unwrap();
    assert_eq!(cc.max_age, secs(10));
    assert!(cc.must_revalidate);
}

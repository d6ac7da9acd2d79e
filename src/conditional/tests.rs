//! Unit tests for [`super`]: preconditions, entity tags and ranges over
//! fixed validators.

use super::*;

fn v(weak: bool) -> Validators {
    Validators {
        etag: Some(EntityTag {
            tag: "5f3a-1c".into(),
            weak,
        }),
        last_modified: Some(1_600_000_000),
    }
}

fn map(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
    let mut m = HeaderMap::new();
    for (k, val) in pairs {
        if let Ok(val) = HeaderValue::from_str(val) {
            m.append(k.clone(), val);
        }
    }
    m
}

const LM: &str = "Sun, 13 Sep 2020 12:26:40 GMT"; // 1_600_000_000

#[test]
fn etag_formats() {
    let tag = |v: Validators| v.etag.map(|t| t.header());
    assert_eq!(tag(v(false)).as_deref(), Some("\"5f3a-1c\""));
    assert_eq!(tag(v(true)).as_deref(), Some("W/\"5f3a-1c\""));
}

#[test]
fn if_none_match_uses_weak_comparison() {
    let cases = [
        ("\"5f3a-1c\"", Precondition::NotModified),
        ("W/\"5f3a-1c\"", Precondition::NotModified),
        ("\"x\", \"5f3a-1c\"", Precondition::NotModified),
        ("*", Precondition::NotModified),
        ("\"other\"", Precondition::Proceed),
        ("\"a,b\", \"c\"", Precondition::Proceed),
    ];
    for (inm, want) in cases {
        let h = map(&[(header::IF_NONE_MATCH, inm)]);
        assert_eq!(evaluate(&h, &v(false)), want, "{inm}");
    }
    // A second header line counts too.
    let h = map(&[
        (header::IF_NONE_MATCH, "\"x\""),
        (header::IF_NONE_MATCH, "\"5f3a-1c\""),
    ]);
    assert_eq!(evaluate(&h, &v(false)), Precondition::NotModified);
}

#[test]
fn if_modified_since_only_without_if_none_match() {
    let h = map(&[(header::IF_MODIFIED_SINCE, LM)]);
    assert_eq!(evaluate(&h, &v(false)), Precondition::NotModified);
    let h = map(&[(header::IF_MODIFIED_SINCE, "Sun, 13 Sep 2020 12:26:39 GMT")]);
    assert_eq!(evaluate(&h, &v(false)), Precondition::Proceed);
    let h = map(&[
        (header::IF_MODIFIED_SINCE, LM),
        (header::IF_NONE_MATCH, "\"other\""),
    ]);
    assert_eq!(evaluate(&h, &v(false)), Precondition::Proceed);
    let h = map(&[(header::IF_MODIFIED_SINCE, "yesterday")]);
    assert_eq!(evaluate(&h, &v(false)), Precondition::Proceed);
}

#[test]
fn if_match_and_if_unmodified_since_fail_with_412() {
    let h = map(&[(header::IF_MATCH, "\"other\"")]);
    assert_eq!(evaluate(&h, &v(false)), Precondition::Failed);
    let h = map(&[(header::IF_MATCH, "\"5f3a-1c\"")]);
    assert_eq!(evaluate(&h, &v(false)), Precondition::Proceed);
    // Strong comparison: a weak current tag never matches If-Match.
    assert_eq!(evaluate(&h, &v(true)), Precondition::Failed);
    let h = map(&[(header::IF_UNMODIFIED_SINCE, "Sun, 13 Sep 2020 12:26:39 GMT")]);
    assert_eq!(evaluate(&h, &v(false)), Precondition::Failed);
    let h = map(&[(header::IF_UNMODIFIED_SINCE, LM)]);
    assert_eq!(evaluate(&h, &v(false)), Precondition::Proceed);
}

fn decide(range_h: &str, if_range: Option<&str>, len: u64) -> RangeDecision {
    let mut pairs = vec![(header::RANGE, range_h)];
    if let Some(ir) = if_range {
        pairs.push((header::IF_RANGE, ir));
    }
    range(&map(&pairs), &v(false), len)
}

#[test]
fn single_ranges() {
    use RangeDecision::*;
    assert_eq!(decide("bytes=0-9", None, 100), Partial { start: 0, end: 9 });
    assert_eq!(
        decide("bytes=90-200", None, 100),
        Partial { start: 90, end: 99 }
    );
    assert_eq!(decide("bytes=5-", None, 100), Partial { start: 5, end: 99 });
    assert_eq!(
        decide("bytes=-3", None, 100),
        Partial { start: 97, end: 99 }
    );
    assert_eq!(
        decide("bytes=-300", None, 100),
        Partial { start: 0, end: 99 }
    );
    assert_eq!(
        decide(" Bytes = 1 - 2 ", None, 100),
        Partial { start: 1, end: 2 }
    );
    assert_eq!(decide("bytes=100-", None, 100), Unsatisfiable);
    assert_eq!(decide("bytes=-0", None, 100), Unsatisfiable);
    assert_eq!(decide("bytes=0-0", None, 0), Unsatisfiable);
}

#[test]
fn ignored_ranges() {
    for r in [
        "bytes=0-1,5-6",
        "bytes=0-1,",
        "items=0-1",
        "bytes=5-1",
        "bytes=-",
        "bytes=a-b",
        "bytes=+1-2",
        "0-1",
        "bytes=99999999999999999999-",
    ] {
        assert_eq!(decide(r, None, 100), RangeDecision::Full, "{r}");
    }
}

#[test]
fn if_range_needs_a_strong_match_or_the_exact_date() {
    let partial = RangeDecision::Partial { start: 0, end: 9 };
    assert_eq!(decide("bytes=0-9", Some("\"5f3a-1c\""), 100), partial);
    assert_eq!(decide("bytes=0-9", Some(LM), 100), partial);
    assert_eq!(
        decide("bytes=0-9", Some("\"other\""), 100),
        RangeDecision::Full
    );
    assert_eq!(
        decide("bytes=0-9", Some("W/\"5f3a-1c\""), 100),
        RangeDecision::Full
    );
    assert_eq!(
        decide("bytes=0-9", Some("Sun, 13 Sep 2020 12:26:41 GMT"), 100),
        RangeDecision::Full
    );
    // A failed If-Range also turns an unsatisfiable range into a 200.
    assert_eq!(
        decide("bytes=500-", Some("\"other\""), 100),
        RangeDecision::Full
    );
}

#[test]
fn an_etag_header_holds_one_tag() {
    let parse = |s: &str| {
        EntityTag::parse(&HeaderValue::from_str(s).unwrap_or(HeaderValue::from_static("")))
    };
    let strong = EntityTag {
        tag: "a,b".into(),
        weak: false,
    };
    assert_eq!(parse("\"a,b\""), Some(strong));
    assert_eq!(parse(" W/\"x\" ").map(|t| t.weak), Some(true));
    for bad in ["*", "\"a\", \"b\"", "x", "\"open", ""] {
        assert_eq!(parse(bad), None, "{bad}");
    }
}

#[test]
fn validators_of_a_response() {
    let h = map(&[(header::ETAG, "W/\"5f3a-1c\""), (header::LAST_MODIFIED, LM)]);
    assert_eq!(Validators::of_response(&h), v(true));
    let h = map(&[(header::ETAG, "nope"), (header::LAST_MODIFIED, "yesterday")]);
    assert_eq!(Validators::of_response(&h), Validators::default());
}

#[test]
fn missing_validators_ignore_what_would_test_them() {
    let none = Validators::default();
    let cases = [
        (header::IF_NONE_MATCH, "\"5f3a-1c\"", Precondition::Proceed),
        (header::IF_NONE_MATCH, "*", Precondition::NotModified),
        (header::IF_MODIFIED_SINCE, LM, Precondition::Proceed),
        (header::IF_MATCH, "\"5f3a-1c\"", Precondition::Failed),
        (header::IF_MATCH, "*", Precondition::Proceed),
        (header::IF_UNMODIFIED_SINCE, LM, Precondition::Proceed),
    ];
    for (name, value, want) in cases {
        assert_eq!(
            evaluate(&map(&[(name.clone(), value)]), &none),
            want,
            "{name}: {value}"
        );
    }
    // If-Range cannot hold without the validator it names.
    let h = map(&[(header::RANGE, "bytes=0-1"), (header::IF_RANGE, LM)]);
    assert_eq!(range(&h, &none, 10), RangeDecision::Full);
    let h = map(&[(header::RANGE, "bytes=0-1")]);
    assert_eq!(
        range(&h, &none, 10),
        RangeDecision::Partial { start: 0, end: 1 }
    );
}

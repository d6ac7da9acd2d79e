//! Unit tests for [`super`]: every time is a fixed `SystemTime`, so no
//! clock is read and nothing sleeps.

use super::*;
use http::HeaderName;
use http::header::{IF_MODIFIED_SINCE, IF_NONE_MATCH};
use std::time::UNIX_EPOCH;

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// A fixed "now" with whole seconds, so HTTP dates round-trip exactly.
fn t0() -> SystemTime {
    UNIX_EPOCH + secs(1_700_000_000)
}

fn date(t: SystemTime) -> String {
    httpdate::fmt_http_date(t)
}

/// A header map of `pairs`, in order (for the submodules' tests too).
pub(super) fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        let name = HeaderName::from_bytes(name.as_bytes()).unwrap();
        map.append(name, HeaderValue::from_str(value).unwrap());
    }
    map
}

fn cc(value: &str) -> CacheControl {
    CacheControl::parse(&headers(&[("cache-control", value)]))
}

fn zone() -> Settings {
    Settings {
        default_ttl: secs(10),
        ..Settings::default()
    }
}

fn store(status: u16, req: &[(&str, &str)], resp: &[(&str, &str)]) -> Result<(), NotStored> {
    store_with(status, req, resp, &zone(), &Overrides::default())
}

fn store_with(
    status: u16,
    req: &[(&str, &str)],
    resp: &[(&str, &str)],
    settings: &Settings,
    overrides: &Overrides,
) -> Result<(), NotStored> {
    let status = StatusCode::from_u16(status).unwrap();
    storable(
        &Method::GET,
        &headers(req),
        status,
        &headers(resp),
        settings,
        overrides,
    )
}

fn lifetime(resp: &[(&str, &str)]) -> Duration {
    freshness_lifetime(&headers(resp), t0(), &zone(), &Overrides::default())
}

/// An entry stored at t0 (no round trip) under `settings`.
fn entry(resp: &[(&str, &str)], settings: &Settings) -> Lifetime {
    Lifetime::new(&headers(resp), t0(), t0(), settings, &Overrides::default())
}

/// The entry's verdict `after` seconds past t0 for a request with `req`.
fn verdict(entry: &Lifetime, req: &str, after: u64) -> Freshness {
    entry.freshness(&cc(req), t0() + secs(after))
}

const FRESH: Freshness = Freshness::Fresh;
const SWR: Freshness = Freshness::StaleWhileRevalidate;
const STALE: Freshness = Freshness::Stale {
    serve_on_error: false,
};
const STALE_SERVE_ON_ERROR: Freshness = Freshness::Stale {
    serve_on_error: true,
};

// ---- Cache-Control parsing ----

#[test]
fn parse_reads_every_line_and_comma_list() {
    let map = headers(&[
        ("cache-control", "public, max-age=60"),
        ("cache-control", "s-maxage=30,must-revalidate"),
    ]);
    let cc = CacheControl::parse(&map);
    assert!(cc.public && cc.must_revalidate);
    assert_eq!(cc.max_age, Some(secs(60)));
    assert_eq!(cc.s_maxage, Some(secs(30)));
}

#[test]
fn parse_is_case_insensitive_and_accepts_quoted_values() {
    let cc = cc("No-Store, MAX-AGE=\"120\", Proxy-Revalidate");
    assert!(cc.no_store && cc.proxy_revalidate);
    assert_eq!(cc.max_age, Some(secs(120)));
}

#[test]
fn parse_does_not_split_inside_quotes() {
    let cc = cc("private=\"set-cookie, max-age=5\", stale-if-error=7");
    assert!(cc.private);
    assert_eq!(cc.max_age, None);
    assert_eq!(cc.stale_if_error, Some(secs(7)));
}

#[test]
fn parse_field_names_on_no_cache_and_private_count_as_bare() {
    assert!(cc("no-cache=\"Set-Cookie\"").no_cache);
    assert!(cc("private=x-user").private);
}

#[test]
fn parse_ignores_bad_values_and_keeps_the_rest() {
    let cc = cc("max-age=abc, s-maxage=-1, stale-while-revalidate, min-fresh=\"5, no-store");
    assert_eq!(cc.max_age, None);
    assert_eq!(cc.s_maxage, None);
    assert_eq!(cc.stale_while_revalidate, None);
    assert_eq!(cc.min_fresh, None);
    let cc = CacheControl::parse(&headers(&[("cache-control", ",,;;, max-age=9, =, bogus")]));
    assert_eq!(cc.max_age, Some(secs(9)));
}

#[test]
fn parse_keeps_the_first_of_repeated_directives() {
    assert_eq!(cc("max-age=5, max-age=500").max_age, Some(secs(5)));
    assert_eq!(cc("max-age=x, max-age=7").max_age, Some(secs(7)));
}

#[test]
fn parse_saturates_huge_values_at_2_pow_31() {
    let cc = cc("max-age=99999999999999999999999");
    assert_eq!(cc.max_age, Some(secs(1 << 31)));
}

#[test]
fn parse_request_directives() {
    let cc = cc("only-if-cached, max-stale, min-fresh=3, no-cache");
    assert!(cc.only_if_cached && cc.no_cache);
    assert_eq!(cc.max_stale, Some(Duration::MAX));
    assert_eq!(cc.min_fresh, Some(secs(3)));
    assert_eq!(self::cc("max-stale=20").max_stale, Some(secs(20)));
}

#[test]
fn parse_public_with_an_argument_is_ignored() {
    assert!(!cc("public=yes").public);
    assert!(cc("public").public);
}

// ---- storable ----

#[test]
fn plain_200_with_max_age_is_stored() {
    assert_eq!(store(200, &[], &[("cache-control", "max-age=60")]), Ok(()));
}

#[test]
fn response_no_store_is_not_stored() {
    let resp = [("cache-control", "max-age=60, no-store")];
    assert_eq!(store(200, &[], &resp), Err(NotStored::ResponseNoStore));
}

#[test]
fn request_no_store_is_not_stored() {
    let req = [("cache-control", "no-store")];
    assert_eq!(store(200, &req, &[]), Err(NotStored::RequestNoStore));
}

#[test]
fn private_is_not_stored() {
    let resp = [("cache-control", "private, max-age=60")];
    assert_eq!(store(200, &[], &resp), Err(NotStored::Private));
}

#[test]
fn response_no_cache_is_stored_but_never_fresh_nor_served_stale() {
    let resp = [("cache-control", "no-cache, max-age=60")];
    assert_eq!(store(200, &[], &resp), Ok(()));
    assert_eq!(lifetime(&resp), Duration::ZERO);
    let generous = Settings {
        stale_while_revalidate: secs(100),
        stale_if_error: secs(100),
        ..zone()
    };
    let e = entry(&resp, &generous);
    assert_eq!(verdict(&e, "", 0), STALE);
}

#[test]
fn authorization_request_needs_public_s_maxage_or_must_revalidate() {
    let auth = [("authorization", "Bearer x")];
    let plain = [("cache-control", "max-age=60")];
    assert_eq!(store(200, &auth, &plain), Err(NotStored::Authorization));
    for allowing in ["public", "s-maxage=60", "must-revalidate, max-age=60"] {
        let resp = [("cache-control", allowing)];
        assert_eq!(store(200, &auth, &resp), Ok(()), "{allowing}");
    }
    let proxy_only = [("cache-control", "proxy-revalidate, max-age=60")];
    assert_eq!(
        store(200, &auth, &proxy_only),
        Err(NotStored::Authorization)
    );
}

#[test]
fn set_cookie_is_stored_only_when_the_zone_allows() {
    let resp = [
        ("cache-control", "public, max-age=60"),
        ("set-cookie", "a=b"),
    ];
    assert_eq!(store(200, &[], &resp), Err(NotStored::SetCookie));
    let allow = Settings {
        store_set_cookie: true,
        ..zone()
    };
    assert_eq!(
        store_with(200, &[], &resp, &allow, &Overrides::default()),
        Ok(())
    );
}

#[test]
fn only_get_and_head_are_stored() {
    let (req, resp) = (
        HeaderMap::new(),
        headers(&[("cache-control", "max-age=60")]),
    );
    let try_method = |m: Method| {
        storable(
            &m,
            &req,
            StatusCode::OK,
            &resp,
            &zone(),
            &Overrides::default(),
        )
    };
    assert_eq!(try_method(Method::GET), Ok(()));
    assert_eq!(try_method(Method::HEAD), Ok(()));
    for m in [Method::POST, Method::PUT, Method::DELETE, Method::OPTIONS] {
        assert_eq!(try_method(m.clone()), Err(NotStored::Method), "{m}");
    }
}

#[test]
fn heuristically_cacheable_statuses_are_stored_without_freshness() {
    for code in [200, 203, 204, 300, 301, 308, 404, 405, 410, 414, 501] {
        assert_eq!(store(code, &[], &[]), Ok(()), "{code}");
    }
    for code in [201, 302, 303, 307, 400, 403, 500, 502, 503] {
        assert_eq!(store(code, &[], &[]), Err(NotStored::Status), "{code}");
    }
}

#[test]
fn other_statuses_need_explicit_freshness_or_public() {
    assert_eq!(store(302, &[], &[("cache-control", "max-age=5")]), Ok(()));
    assert_eq!(store(307, &[], &[("cache-control", "s-maxage=5")]), Ok(()));
    assert_eq!(store(500, &[], &[("expires", &date(t0()))]), Ok(()));
    assert_eq!(store(302, &[], &[("cache-control", "public")]), Ok(()));
}

#[test]
fn partial_content_304_and_1xx_are_never_stored() {
    let resp = [("cache-control", "public, max-age=60")];
    for code in [100, 206, 304] {
        assert_eq!(store(code, &[], &resp), Err(NotStored::Status), "{code}");
    }
}

#[test]
fn vary_star_is_not_stored() {
    let resp = [
        ("cache-control", "max-age=60"),
        ("vary", "accept-encoding, *"),
    ];
    assert_eq!(store(200, &[], &resp), Err(NotStored::VaryStar));
    let resp = [("cache-control", "max-age=60"), ("vary", "accept-encoding")];
    assert_eq!(store(200, &[], &resp), Ok(()));
}

// ---- Lua overrides ----

#[test]
fn lua_no_store_wins_even_with_a_ttl() {
    let o = Overrides {
        ttl: Some(secs(60)),
        no_store: true,
    };
    let resp = [("cache-control", "public, max-age=60")];
    assert_eq!(
        store_with(200, &[], &resp, &zone(), &o),
        Err(NotStored::Override)
    );
}

#[test]
fn lua_ttl_makes_a_response_storable_and_fresh_that_long() {
    let o = Overrides {
        ttl: Some(secs(90)),
        no_store: false,
    };
    assert_eq!(store_with(302, &[], &[], &zone(), &o), Ok(()));
    let resp = headers(&[("cache-control", "no-cache, max-age=5, s-maxage=6")]);
    assert_eq!(freshness_lifetime(&resp, t0(), &zone(), &o), secs(90));
    let e = Lifetime::new(&resp, t0(), t0(), &zone(), &o);
    assert_eq!(
        e.freshness(&CacheControl::default(), t0() + secs(89)),
        FRESH
    );
    assert!(!e.must_revalidate);
}

#[test]
fn lua_ttl_does_not_make_sharing_safe() {
    let o = Overrides {
        ttl: Some(secs(90)),
        no_store: false,
    };
    let private = [("cache-control", "private")];
    assert_eq!(
        store_with(200, &[], &private, &zone(), &o),
        Err(NotStored::Private)
    );
    let no_store = [("cache-control", "no-store")];
    assert_eq!(
        store_with(200, &[], &no_store, &zone(), &o),
        Err(NotStored::ResponseNoStore)
    );
    let cookie = [("set-cookie", "a=b")];
    assert_eq!(
        store_with(200, &[], &cookie, &zone(), &o),
        Err(NotStored::SetCookie)
    );
    let auth = [("authorization", "x")];
    assert_eq!(
        store_with(200, &auth, &[], &zone(), &o),
        Err(NotStored::Authorization)
    );
}

// ---- freshness lifetime ----

#[test]
fn max_age_sets_the_lifetime() {
    assert_eq!(lifetime(&[("cache-control", "max-age=60")]), secs(60));
}

#[test]
fn s_maxage_beats_max_age() {
    assert_eq!(
        lifetime(&[("cache-control", "max-age=60, s-maxage=5")]),
        secs(5)
    );
}

#[test]
fn max_age_beats_expires() {
    let expires = date(t0() + secs(1000));
    let resp = [("cache-control", "max-age=60"), ("expires", &expires)];
    assert_eq!(lifetime(&resp), secs(60));
}

#[test]
fn expires_minus_date() {
    let (d, e) = (date(t0() - secs(100)), date(t0() + secs(200)));
    assert_eq!(lifetime(&[("date", &d), ("expires", &e)]), secs(300));
}

#[test]
fn expires_without_date_counts_from_arrival() {
    let e = date(t0() + secs(200));
    assert_eq!(lifetime(&[("expires", &e)]), secs(200));
}

#[test]
fn expires_in_the_past_or_invalid_is_stale() {
    let (d, e) = (date(t0()), date(t0() - secs(5)));
    assert_eq!(lifetime(&[("date", &d), ("expires", &e)]), Duration::ZERO);
    assert_eq!(lifetime(&[("expires", "0")]), Duration::ZERO);
    assert_eq!(lifetime(&[("expires", "tomorrow")]), Duration::ZERO);
    let e = entry(&[("expires", "0")], &zone());
    assert_eq!(verdict(&e, "", 0), STALE);
}

#[test]
fn default_ttl_when_the_response_says_nothing() {
    assert_eq!(lifetime(&[]), secs(10));
    assert_eq!(lifetime(&[("cache-control", "public")]), secs(10));
}

// ---- age ----

#[test]
fn age_is_apparent_age_from_date_plus_resident_time() {
    let resp = headers(&[("date", &date(t0() - secs(30)))]);
    assert_eq!(initial_age(&resp, t0(), t0()), secs(30));
    assert_eq!(age(&resp, t0(), t0(), t0() + secs(5)), secs(35));
}

#[test]
fn age_header_plus_round_trip_when_larger() {
    let resp = headers(&[("date", &date(t0() - secs(10))), ("age", "100")]);
    let sent = t0() - secs(2);
    assert_eq!(initial_age(&resp, sent, t0()), secs(102));
    assert_eq!(age(&resp, sent, t0(), t0() + secs(8)), secs(110));
}

#[test]
fn date_in_the_future_counts_as_zero() {
    let resp = headers(&[("date", &date(t0() + secs(60)))]);
    assert_eq!(initial_age(&resp, t0(), t0()), Duration::ZERO);
}

#[test]
fn an_age_list_or_repeated_age_counts_by_its_first_member() {
    let list = headers(&[("age", "7200, 0")]);
    assert_eq!(initial_age(&list, t0(), t0()), secs(7200));
    let lines = headers(&[("age", "7200"), ("age", "0")]);
    assert_eq!(initial_age(&lines, t0(), t0()), secs(7200));
    let spaced = headers(&[("age", " 30 ,x")]);
    assert_eq!(initial_age(&spaced, t0(), t0()), secs(30));
    // max-age=3600 but already two hours old: stale on arrival.
    let e = entry(
        &[("cache-control", "max-age=3600"), ("age", "7200, 0")],
        &zone(),
    );
    assert_eq!(verdict(&e, "", 0), STALE);
}

#[test]
fn an_invalid_age_is_never_fresher_than_stale() {
    for bad in ["-3", "abc", "1.5", "", ", 5", "0x10"] {
        let resp = headers(&[("cache-control", "max-age=3600"), ("age", bad)]);
        assert_eq!(initial_age(&resp, t0(), t0()), secs(1 << 31), "{bad:?}");
        let e = entry(
            &[
                ("cache-control", "max-age=3600, stale-while-revalidate=60"),
                ("age", bad),
            ],
            &zone(),
        );
        assert_eq!(verdict(&e, "", 0), STALE, "{bad:?}");
    }
    // Huge but valid values saturate the same way.
    let huge = headers(&[("age", "99999999999999999999")]);
    assert_eq!(initial_age(&huge, t0(), t0()), secs(1 << 31));
}

#[test]
fn initial_age_shortens_freshness() {
    let e = entry(&[("cache-control", "max-age=60"), ("age", "50")], &zone());
    assert_eq!(e.expires_at(), t0() + secs(10));
    assert_eq!(verdict(&e, "", 9), FRESH);
    assert_eq!(verdict(&e, "", 10), STALE);
}

// ---- serving stored entries ----

#[test]
fn fresh_until_the_lifetime_then_stale() {
    let e = entry(&[("cache-control", "max-age=60")], &zone());
    assert_eq!(verdict(&e, "", 59), FRESH);
    assert_eq!(verdict(&e, "", 60), STALE);
}

#[test]
fn stale_while_revalidate_window_from_the_zone() {
    let z = Settings {
        stale_while_revalidate: secs(30),
        ..zone()
    };
    let e = entry(&[("cache-control", "max-age=60")], &z);
    assert_eq!(verdict(&e, "", 60), SWR);
    assert_eq!(verdict(&e, "", 89), SWR);
    assert_eq!(verdict(&e, "", 90), STALE);
}

#[test]
fn response_stale_while_revalidate_overrides_the_zone() {
    let z = Settings {
        stale_while_revalidate: secs(30),
        ..zone()
    };
    let longer = entry(
        &[("cache-control", "max-age=60, stale-while-revalidate=100")],
        &z,
    );
    assert_eq!(verdict(&longer, "", 150), SWR);
    let none = entry(
        &[("cache-control", "max-age=60, stale-while-revalidate=0")],
        &z,
    );
    assert_eq!(verdict(&none, "", 60), STALE);
}

#[test]
fn stale_if_error_window_from_the_zone_and_the_response() {
    let z = Settings {
        stale_if_error: secs(300),
        ..zone()
    };
    let e = entry(&[("cache-control", "max-age=60")], &z);
    assert_eq!(verdict(&e, "", 359), STALE_SERVE_ON_ERROR);
    assert_eq!(verdict(&e, "", 360), STALE);
    let own = entry(&[("cache-control", "max-age=60, stale-if-error=10")], &z);
    assert_eq!(verdict(&own, "", 69), STALE_SERVE_ON_ERROR);
    assert_eq!(verdict(&own, "", 70), STALE);
    assert_eq!(e.keep_until(), t0() + secs(360));
}

#[test]
fn must_revalidate_blocks_every_stale_serving() {
    let z = Settings {
        stale_while_revalidate: secs(30),
        stale_if_error: secs(300),
        ..zone()
    };
    for value in [
        "max-age=60, must-revalidate, stale-while-revalidate=30, stale-if-error=30",
        "max-age=60, proxy-revalidate",
    ] {
        let e = entry(&[("cache-control", value)], &z);
        assert_eq!(verdict(&e, "", 59), FRESH, "{value}");
        assert_eq!(verdict(&e, "", 61), STALE, "{value}");
        assert_eq!(verdict(&e, "max-stale", 61), STALE, "{value}");
    }
}

#[test]
fn s_maxage_blocks_zone_windows_but_not_its_own() {
    let z = Settings {
        stale_while_revalidate: secs(30),
        stale_if_error: secs(300),
        ..zone()
    };
    let bare = entry(&[("cache-control", "s-maxage=60")], &z);
    assert_eq!(verdict(&bare, "", 61), STALE);
    assert_eq!(verdict(&bare, "max-stale", 61), STALE);
    let own = entry(
        &[("cache-control", "s-maxage=60, stale-while-revalidate=30")],
        &z,
    );
    assert_eq!(verdict(&own, "", 61), SWR);
}

#[test]
fn request_no_cache_forces_revalidation_of_a_fresh_entry() {
    let e = entry(&[("cache-control", "max-age=60")], &zone());
    assert_eq!(verdict(&e, "no-cache", 1), STALE_SERVE_ON_ERROR);
}

#[test]
fn request_max_age_limits_the_accepted_age() {
    let z = Settings {
        stale_while_revalidate: secs(30),
        ..zone()
    };
    let e = entry(&[("cache-control", "max-age=60")], &z);
    assert_eq!(verdict(&e, "max-age=10", 10), FRESH);
    assert_eq!(verdict(&e, "max-age=10", 11), STALE_SERVE_ON_ERROR);
    assert_eq!(verdict(&e, "max-age=0", 61), STALE);
}

#[test]
fn request_min_fresh_needs_enough_freshness_left() {
    let e = entry(&[("cache-control", "max-age=60")], &zone());
    assert_eq!(verdict(&e, "min-fresh=20", 40), FRESH);
    assert_eq!(verdict(&e, "min-fresh=20", 41), STALE_SERVE_ON_ERROR);
}

#[test]
fn request_max_stale_accepts_stale_entries() {
    let e = entry(&[("cache-control", "max-age=60")], &zone());
    assert_eq!(verdict(&e, "max-stale=10", 70), SWR);
    assert_eq!(verdict(&e, "max-stale=10", 71), STALE);
    assert_eq!(verdict(&e, "max-stale", 100_000), SWR);
}

// ---- Vary ----

#[test]
fn vary_names_are_lowercased_sorted_and_deduplicated() {
    let resp = headers(&[
        ("vary", "User-Agent, Accept-Encoding"),
        ("vary", "accept-encoding"),
    ]);
    let names = vary_names(&resp).unwrap();
    assert_eq!(names, ["accept-encoding", "user-agent"]);
    assert_eq!(vary_names(&headers(&[("vary", "*")])), None);
    assert_eq!(vary_names(&HeaderMap::new()), Some(vec![]));
}

#[test]
fn variant_key_keeps_variants_apart() {
    let names = vary_names(&headers(&[("vary", "accept-encoding")])).unwrap();
    let gzip = variant_key(&names, &headers(&[("accept-encoding", "gzip")]));
    let br = variant_key(&names, &headers(&[("accept-encoding", "br")]));
    let none = variant_key(&names, &HeaderMap::new());
    let empty = variant_key(&names, &headers(&[("accept-encoding", "")]));
    assert_ne!(gzip, br);
    assert_ne!(none, empty);
    assert_ne!(none, gzip);
    let other = headers(&[("accept-encoding", "gzip"), ("cookie", "a=1")]);
    assert_eq!(variant_key(&names, &other), gzip);
}

#[test]
fn variant_key_normalises_whitespace_lines_and_name_order() {
    let names = [HeaderName::from_static("b"), HeaderName::from_static("a")];
    let one = headers(&[("a", " x ,  y"), ("b", "1")]);
    let two = headers(&[("a", "x"), ("a", "y"), ("b", "1 ")]);
    assert_eq!(variant_key(&names, &one), variant_key(&names, &two));
    assert_eq!(variant_key(&names, &one), "a:x,y\nb:1\n");
}

#[test]
fn variant_key_escapes_so_values_cannot_collide() {
    let names = [HeaderName::from_static("a")];
    let mut latin = HeaderMap::new();
    latin.insert("a", HeaderValue::from_bytes(b"\xe9\tz").unwrap());
    let literal = headers(&[("a", "%E9%09")]);
    assert_eq!(variant_key(&names, &latin), "a:%E9%09z\n");
    assert_eq!(variant_key(&names, &literal), "a:%25E9%2509\n");
}

// ---- revalidation ----

#[test]
fn conditional_headers_come_from_validators() {
    let lm = date(t0());
    let entry = headers(&[("etag", "\"v1\""), ("last-modified", &lm), ("x-other", "1")]);
    let cond = conditional_headers(&entry);
    assert_eq!(cond.len(), 2);
    assert_eq!(cond[IF_NONE_MATCH], "\"v1\"");
    assert_eq!(cond[IF_MODIFIED_SINCE], lm.as_str());
    assert!(conditional_headers(&headers(&[("content-type", "text/plain")])).is_empty());
}

#[test]
fn merge_304_replaces_what_it_carries_except_framing_and_hop_by_hop() {
    let mut entry = headers(&[
        ("content-type", "text/plain"),
        ("content-length", "5"),
        ("content-encoding", "gzip"),
        ("cache-control", "max-age=10"),
        ("x-multi", "a"),
        ("x-multi", "b"),
        ("etag", "\"v1\""),
    ]);
    let not_modified = headers(&[
        ("cache-control", "max-age=600"),
        ("content-length", "0"),
        ("content-encoding", "br"),
        ("transfer-encoding", "chunked"),
        ("connection", "x-hop"),
        ("x-hop", "1"),
        ("keep-alive", "timeout=5"),
        ("x-multi", "c"),
        ("etag", "\"v1\""),
        ("x-new", "n"),
    ]);
    merge_304(&mut entry, &not_modified);
    assert_eq!(entry["cache-control"], "max-age=600");
    assert_eq!(entry["content-length"], "5");
    assert_eq!(entry["content-encoding"], "gzip");
    assert_eq!(entry["content-type"], "text/plain");
    let multi: Vec<&[u8]> = entry
        .get_all("x-multi")
        .iter()
        .map(|v| v.as_bytes())
        .collect();
    assert_eq!(multi, [b"c"]);
    assert_eq!(entry["x-new"], "n");
    for hop in ["transfer-encoding", "connection", "x-hop", "keep-alive"] {
        assert!(!entry.contains_key(hop), "{hop}");
    }
    let e = Lifetime::new(&entry, t0(), t0(), &zone(), &Overrides::default());
    assert_eq!(e.fresh_for, secs(600));
}

#[test]
fn merge_304_drops_the_stored_age_for_the_304s_own() {
    let mut entry = headers(&[("cache-control", "max-age=60"), ("age", "7200, 0")]);
    merge_304(&mut entry, &headers(&[("etag", "\"v1\"")]));
    assert!(!entry.contains_key("age"));
    let e = Lifetime::new(&entry, t0(), t0(), &zone(), &Overrides::default());
    assert_eq!(verdict(&e, "", 0), FRESH);
    let mut entry = headers(&[("cache-control", "max-age=60"), ("age", "50")]);
    merge_304(&mut entry, &headers(&[("age", "10")]));
    assert_eq!(entry["age"], "10");
}

#[test]
fn strip_unstorable_removes_hop_by_hop_only() {
    let mut resp = headers(&[
        ("connection", "close, x-hop"),
        ("x-hop", "1"),
        ("transfer-encoding", "chunked"),
        ("content-length", "5"),
        ("content-type", "text/plain"),
    ]);
    strip_unstorable(&mut resp);
    let mut left: Vec<&str> = resp.keys().map(HeaderName::as_str).collect();
    left.sort();
    assert_eq!(left, ["content-length", "content-type"]);
}

// ---- small helpers ----

#[test]
fn age_header_is_whole_seconds_capped() {
    assert_eq!(age_header(Duration::from_millis(61_999)), "61");
    assert_eq!(age_header(Duration::MAX), "2147483648");
}

#[test]
fn unsafe_methods_invalidate_on_non_error_responses() {
    let ok = StatusCode::OK;
    for m in ["POST", "PUT", "DELETE", "PATCH", "PURGE"] {
        let m = Method::from_bytes(m.as_bytes()).unwrap();
        assert!(invalidates(&m, ok), "{m}");
        assert!(invalidates(&m, StatusCode::SEE_OTHER), "{m}");
        assert!(!invalidates(&m, StatusCode::NOT_FOUND), "{m}");
        assert!(!invalidates(&m, StatusCode::BAD_GATEWAY), "{m}");
    }
    for m in [
        Method::GET,
        Method::HEAD,
        Method::OPTIONS,
        Method::TRACE,
        Method::CONNECT,
    ] {
        assert!(!invalidates(&m, ok), "{m}");
    }
}

#[test]
fn not_stored_reasons_have_names() {
    assert_eq!(NotStored::SetCookie.to_string(), "set-cookie");
}

// ---- targeted fields (RFC 9213) ----

#[test]
fn cdn_cache_control_replaces_cache_control_for_storing() {
    let cdn = |v: &'static str| {
        [
            ("cache-control", "no-store, private"),
            ("cdn-cache-control", v),
        ]
    };
    assert_eq!(store(200, &[], &cdn("max-age=60")), Ok(()));
    let refused = store(
        200,
        &[],
        &[
            ("cache-control", "max-age=60"),
            ("cdn-cache-control", "no-store"),
        ],
    );
    assert_eq!(refused, Err(NotStored::ResponseNoStore));
    let private = store(
        200,
        &[],
        &[
            ("cache-control", "max-age=60"),
            ("cdn-cache-control", "private"),
        ],
    );
    assert_eq!(private, Err(NotStored::Private));
    // Authorization: s-maxage in the targeted field makes sharing safe.
    let auth = [("authorization", "Bearer x")];
    assert_eq!(store(200, &auth, &cdn("s-maxage=60")), Ok(()));
    assert_eq!(
        store(
            200,
            &auth,
            &[
                ("cache-control", "public"),
                ("cdn-cache-control", "max-age=60")
            ]
        ),
        Err(NotStored::Authorization)
    );
    // An invalid targeted field is ignored: Cache-Control governs.
    assert_eq!(
        store(200, &[], &cdn("Max-Age=60")),
        Err(NotStored::ResponseNoStore)
    );
}

#[test]
fn cdn_cache_control_sets_the_lifetime_and_ignores_expires() {
    let expires = date(t0() + secs(500));
    let resp = [
        ("cache-control", "max-age=5"),
        ("expires", expires.as_str()),
        ("cdn-cache-control", "max-age=300"),
    ];
    assert_eq!(lifetime(&resp), secs(300));
    // Expires counts only when Cache-Control governs.
    let only_expires = [("expires", expires.as_str()), ("date", &date(t0()))];
    assert_eq!(lifetime(&only_expires), secs(500));
    let ignored = [
        ("expires", expires.as_str()),
        ("date", &date(t0())),
        ("cdn-cache-control", "public"),
    ];
    assert_eq!(lifetime(&ignored), zone().default_ttl);
    // 404 with Expires alone is storable; under a targeted field without
    // freshness it is not.
    assert_eq!(store(404, &[], &[("expires", expires.as_str())]), Ok(()));
    assert_eq!(
        store(
            418,
            &[],
            &[
                ("expires", expires.as_str()),
                ("cdn-cache-control", "must-revalidate")
            ]
        ),
        Err(NotStored::Status)
    );
}

#[test]
fn cdn_cache_control_stale_windows_and_must_revalidate() {
    let e = entry(
        &[
            ("cache-control", "max-age=600, must-revalidate"),
            (
                "cdn-cache-control",
                "max-age=10, stale-while-revalidate=20, stale-if-error=30",
            ),
        ],
        &zone(),
    );
    assert_eq!(e.fresh_for, secs(10));
    assert_eq!(
        (e.stale_while_revalidate, e.stale_if_error),
        (secs(20), secs(30))
    );
    assert!(!e.must_revalidate);
    assert_eq!(verdict(&e, "", 15), SWR);
    let e = entry(
        &[
            ("cache-control", "max-age=600"),
            ("cdn-cache-control", "max-age=10, no-cache"),
        ],
        &zone(),
    );
    assert_eq!((e.fresh_for, e.must_revalidate), (Duration::ZERO, true));
}

#[test]
fn the_zone_list_decides_which_field_is_targeted() {
    let resp = [
        ("cache-control", "max-age=5"),
        ("cdn-cache-control", "max-age=300"),
    ];
    let none = Settings {
        targeted: Vec::new(),
        ..zone()
    };
    assert_eq!(
        freshness_lifetime(&headers(&resp), t0(), &none, &Overrides::default()),
        secs(5)
    );
    let own = Settings {
        targeted: vec![
            HeaderName::from_static("moongate-cache-control"),
            HeaderName::from_static("cdn-cache-control"),
        ],
        ..zone()
    };
    let mut both = resp.to_vec();
    both.push(("moongate-cache-control", "max-age=42"));
    assert_eq!(
        freshness_lifetime(&headers(&both), t0(), &own, &Overrides::default()),
        secs(42)
    );
    assert_eq!(
        freshness_lifetime(&headers(&resp), t0(), &own, &Overrides::default()),
        secs(300)
    );
    let d = response_directives(&headers(&resp), &none);
    assert!(!d.targeted);
}

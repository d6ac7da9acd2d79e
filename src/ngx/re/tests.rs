use std::rc::Rc;
use std::time::{Duration, Instant};

use super::*;

fn re(p: &str, o: &str) -> Regex {
    Regex::new(p, parse_flags(o).unwrap()).unwrap_or_else(|e| panic!("{p:?}/{o:?}: {e}"))
}

fn compile(p: impl AsRef<[u8]>, o: &str) -> Result<Regex, String> {
    Regex::new(p, parse_flags(o)?)
}

fn span(p: &str, o: &str, s: &[u8]) -> Option<(usize, usize)> {
    re(p, o).find_at(s, 0).unwrap().map(|c| c.whole)
}

fn gsub(p: &str, o: &str, s: &str, t: &str) -> (String, usize) {
    let r = re(p, o);
    let engine = Engine::default();
    let (out, n) = sub(&engine, &r, s, &Template::compile(t).unwrap(), true).unwrap();
    (String::from_utf8(out).unwrap(), n)
}

fn sub1(p: &str, o: &str, s: &str, t: &str) -> (String, usize) {
    let r = re(p, o);
    let engine = Engine::default();
    let (out, n) = sub(&engine, &r, s, &Template::compile(t).unwrap(), false).unwrap();
    (String::from_utf8(out).unwrap(), n)
}

#[test]
fn unknown_flag_is_ngx_lua_message() {
    assert_eq!(
        parse_flags("iz"),
        Err("unknown flag \"z\" (flags \"iz\")".to_string())
    );
    assert_eq!(
        Engine::default().compile_opts("a", "q").unwrap_err(),
        "unknown flag \"q\" (flags \"q\")"
    );
    assert!(parse_flags("imsxuUaDJojd").is_ok());
}

#[test]
fn option_i_m_s_x() {
    assert_eq!(span("ABC", "i", b"xabc"), Some((1, 4)));
    assert_eq!(span("ABC", "", b"xabc"), None);
    assert_eq!(span("^b", "m", b"a\nb"), Some((2, 3)));
    assert_eq!(span("^b", "", b"a\nb"), None);
    assert_eq!(span("a$", "m", b"a\nb"), Some((0, 1)));
    assert_eq!(span("a$", "", b"a\nb"), None);
    assert_eq!(span("a.b", "s", b"a\nb"), Some((0, 3)));
    assert_eq!(span("a.b", "", b"a\nb"), None);
    assert_eq!(span("a b # comment\n c", "x", b"xabc"), Some((1, 4)));
    assert_eq!(span("a b", "", b"abc"), None);
    assert_eq!(span("a(?i)b|c", "", b"C"), Some((0, 1)));
    assert_eq!(span("(?i:a)b", "", b"AB"), None);
}

#[test]
fn option_u_and_bytes() {
    let e = "é".as_bytes();
    assert_eq!(span(".", "u", e), Some((0, 2)));
    assert_eq!(span(".", "", e), Some((0, 1)));
    assert_eq!(span("\\xC3", "", e), Some((0, 1)));
    assert_eq!(span("(?:é)+", "u", "ééx".as_bytes()), Some((0, 4)));
    assert_eq!(span("É", "iu", e), Some((0, 2)));
    assert_eq!(span("É", "i", e), None);
    assert_eq!(span("\\xff+", "", b"a\xff\xffb"), Some((1, 3)));
    assert_eq!(
        re(".", "u").find_at(b"\xff", 0).unwrap_err(),
        "pcre_exec() failed: -10"
    );
    assert_eq!(
        re(".", "U").find_at(b"a\xff", 0).unwrap_err(),
        "pcre_exec() failed: -10",
        "U is checked too: PCRE2 without the check is undefined"
    );
    assert_eq!(
        re(".", "u").find_at(e, 1).unwrap_err(),
        "pcre_exec() failed: -11"
    );
    // \d and \w stay ASCII under u (no UCP), as in ngx_lua.
    assert_eq!(span("\\d", "u", "٣".as_bytes()), None);
    assert_eq!(span("\\w+", "u", "éa".as_bytes()), Some((2, 3)));
    // The pattern may turn UTF mode on itself.
    assert!(re("(*UTF)a", "").is_utf());
    assert_eq!(
        re("(*UTF).", "").find_at(b"\xff", 0).unwrap_err(),
        "pcre_exec() failed: -10"
    );
    assert!(compile("\\xff", "u").is_ok());
    assert_eq!(
        compile(b"a\xff".as_slice(), "u").unwrap_err(),
        "pcre_compile() failed: invalid UTF-8 string in \"a\u{fffd}\" at \"\u{fffd}\""
    );
}

#[test]
fn option_a_anchors_at_the_start_offset() {
    assert_eq!(re("b", "a").find_at("ab", 0).unwrap(), None);
    assert_eq!(
        re("b", "a").find_at("ab", 1).unwrap().map(|c| c.whole),
        Some((1, 2))
    );
    assert_eq!(
        re("b", "").find_at("ab", 0).unwrap().map(|c| c.whole),
        Some((1, 2))
    );
    assert_eq!(span("b", "jo", b"ab"), Some((1, 2)));
}

#[test]
fn option_d_is_pcre_dfa_matching() {
    // The longest match at the first position, no captures.
    assert_eq!(span("a|ab|abc", "", b"xabcd"), Some((1, 2)));
    assert_eq!(span("a|ab|abc", "d", b"xabcd"), Some((1, 4)));
    let r = re("(a)(b)?", "d");
    assert_eq!(r.group_count(), 0);
    let c = r.find_at("ab", 0).unwrap().unwrap();
    assert_eq!((c.whole, c.groups.len()), ((0, 2), 0));
    assert!(!r.is_jitted());
    // Back references cannot be matched by a DFA: PCRE's DFA_UITEM.
    assert_eq!(
        re("(a)\\1", "d").find_at("aa", 0).unwrap_err(),
        "pcre_exec() failed: -16"
    );
}

#[test]
fn option_big_d_allows_duplicate_names() {
    let e = compile("(?<n>a)|(?<n>b)", "").unwrap_err();
    assert_eq!(
        e,
        "pcre_compile() failed: two named subpatterns have the same name in \
         \"(?<n>a)|(?<n>b)\" at \"b)\""
    );
    let d = re("(?<n>a)|(?<n>b)", "D");
    assert_eq!(d.names(), &[(b"n".to_vec(), 1), (b"n".to_vec(), 2)]);
    let c = d.find_at("b", 0).unwrap().unwrap();
    assert_eq!(c.groups, vec![None, Some((0, 1))]);
    // A back reference to a duplicated name matches any group of it.
    assert_eq!(span("(?:(?<n>a)|(?<n>b))\\k<n>", "D", b"bb"), Some((0, 2)));
}

#[test]
fn option_big_j_is_javascript_compatibility() {
    // \u is an escape (PCRE2_ALT_BSUX), refused without J.
    assert_eq!(span("\\u0041", "J", b"xA"), Some((1, 2)));
    assert!(
        compile("\\u0041", "")
            .unwrap_err()
            .contains("does not support")
    );
    // [] is an empty class (PCRE2_ALLOW_EMPTY_CLASS): it never matches.
    assert_eq!(span("a[]|b", "J", b"ab"), Some((1, 2)));
    assert!(compile("a[]", "").is_err());
    // An unset back reference matches the empty string.
    assert_eq!(span("(a)?\\1b", "J", b"b"), Some((0, 1)));
    assert_eq!(span("(a)?\\1b", "", b"b"), None);
}

#[test]
fn named_captures_and_backrefs() {
    let r = re("(?<year>\\d{4})-(?P<mon>\\d\\d)(?'day'-\\d\\d)?", "");
    assert_eq!(r.group_count(), 3);
    let c = r.find_at("on 2024-05!", 0).unwrap().unwrap();
    assert_eq!(c.whole, (3, 10));
    assert_eq!(c.groups, vec![Some((3, 7)), Some((8, 10)), None]);
    // PCRE's name table is sorted by name.
    assert_eq!(
        r.names(),
        &[
            (b"day".to_vec(), 3),
            (b"mon".to_vec(), 2),
            (b"year".to_vec(), 1)
        ]
    );
    assert_eq!(c.bytes(1, b"on 2024-05!"), Some(&b"2024"[..]));
    assert_eq!(span("(\\w)\\1", "", b"abccd"), Some((2, 4)));
    assert_eq!(span("(?<c>\\w)\\k<c>", "", b"abccd"), Some((2, 4)));
    assert_eq!(span("(?P<c>\\w)(?P=c)", "", b"abccd"), Some((2, 4)));
    assert_eq!(span("(\\w)\\g{-1}", "", b"abccd"), Some((2, 4)));
    assert_eq!(span("(a)\\1", "i", b"aA"), Some((0, 2)));
    assert_eq!(
        compile("\\k<nope>(a)", "").unwrap_err(),
        "pcre_compile() failed: reference to non-existent subpattern in \"\\k<nope>(a)\" at \"nope>(a)\""
    );
}

#[test]
fn find_positions_and_start() {
    let r = re("\\d+", "");
    let s = b"ab12cd345";
    assert_eq!(r.find_at(s, 0).unwrap().unwrap().whole, (2, 4));
    assert_eq!(r.find_at(s, 3).unwrap().unwrap().whole, (3, 4));
    assert_eq!(r.find_at(s, 4).unwrap().unwrap().whole, (6, 9));
    assert_eq!(r.find_at(s, 9).unwrap(), None);
    assert_eq!(r.find_at(s, 10).unwrap_err(), "pcre_exec() failed: -24");
    // Lookbehind sees before the start offset; ^ does not match there.
    assert_eq!(re("(?<=b)1", "").find_at(s, 3).unwrap(), None);
    assert_eq!(
        re("(?<=b)1", "").find_at(s, 2).unwrap().unwrap().whole,
        (2, 3)
    );
    assert_eq!(re("^1", "").find_at(s, 2).unwrap(), None);
    assert_eq!(re("\\G1", "").find_at(s, 2).unwrap().unwrap().whole, (2, 3));
}

#[test]
fn pcre_syntax_is_pcre_itself() {
    assert_eq!(span("c$", "", b"abc\n"), Some((2, 3)));
    assert_eq!(span("c\\z", "", b"abc\n"), None);
    assert_eq!(span("\\Q.*\\E+", "", b"x.*.*"), Some((1, 3)));
    assert_eq!(span("\\101\\x42\\x{43}\\o{104}", "", b"ABCD"), Some((0, 4)));
    assert_eq!(span("\\h+", "", b"a \t\xa0b"), Some((1, 4)));
    assert_eq!(span("\\R", "", b"a\r\nb"), Some((1, 3)));
    assert_eq!(span("[[:alpha:]]+", "", b"12ab3"), Some((2, 4)));
    assert_eq!(span("(?>a|ab)c", "", b"abc"), None);
    assert_eq!(span("a++b", "", b"aab"), Some((0, 3)));
    assert_eq!(span("a\\Kb", "", b"ab"), Some((1, 2)));
    assert_eq!(span("(a)?(?(1)b|c)", "", b"c"), Some((0, 1)));
    assert_eq!(span("(*FAIL)|z", "", b"z"), Some((0, 1)));
    // Recursion and branch reset, which the old translation refused.
    assert_eq!(span("\\((?:[^()]|(?R))*\\)", "", b"x(a(b)c)"), Some((1, 8)));
    let r = re("(?|(a)|(b))", "");
    assert_eq!(r.group_count(), 1);
    assert_eq!(
        r.find_at("b", 0).unwrap().unwrap().groups,
        vec![Some((0, 1))]
    );
}

#[test]
fn compile_errors_are_ngx_lua_messages() {
    // PCRE 8.x's wording, where ngx_lua's tests check it.
    assert_eq!(
        compile("(abc", "").unwrap_err(),
        "pcre_compile() failed: missing ) in \"(abc\""
    );
    assert_eq!(
        compile("a)b", "").unwrap_err(),
        "pcre_compile() failed: unmatched parentheses in \"a)b\" at \")b\""
    );
    assert_eq!(
        compile("*a", "").unwrap_err(),
        "pcre_compile() failed: nothing to repeat in \"*a\" at \"*a\""
    );
    assert_eq!(
        compile("[z-a]", "").unwrap_err(),
        "pcre_compile() failed: range out of order in character class in \"[z-a]\" at \"a]\""
    );
    assert!(compile("[a", "").is_err());
    assert!(compile("a\\", "").is_err());
    // ngx_lua's error buffer holds 255 bytes.
    let long = format!("({}", "x".repeat(300));
    let e = compile(&long, "").unwrap_err();
    assert_eq!(e.len(), 255);
    assert!(e.starts_with("pcre_compile() failed: missing ) in \"(xxx"));
}

#[test]
fn gmatch_and_gsub_follow_ngx_lua() {
    assert_eq!(gsub("b*", "", "abc", "-"), ("-a--c-".to_string(), 4));
    assert_eq!(gsub("x*", "", "ab", "-"), ("-a-b-".to_string(), 3));
    assert_eq!(sub1("x*", "", "abc", "-"), ("-abc".to_string(), 1));
    assert_eq!(sub1("(?=b)", "", "ab", "-"), ("a-b".to_string(), 1));
    assert_eq!(gsub("z", "", "abc", "-"), ("abc".to_string(), 0));
    let engine = Engine::default();
    let r = re("", "u");
    let starts: Vec<usize> = engine
        .matches(&r, "éa".as_bytes())
        .map(|c| c.unwrap().whole.0)
        .collect();
    assert_eq!(starts, vec![0, 2, 3]);
    let r = re("", "");
    assert_eq!(engine.matches(&r, "é".as_bytes()).count(), 3);
    let r = re("\\w+", "");
    let words: Vec<(usize, usize)> = engine
        .matches(&r, b"ab cd")
        .map(|c| c.unwrap().whole)
        .collect();
    assert_eq!(words, vec![(0, 2), (3, 5)]);
    let u = re(".", "u");
    let mut bad = engine.matches(&u, b"\xff");
    assert_eq!(bad.next(), Some(Err("pcre_exec() failed: -10".to_string())));
    assert_eq!(bad.next(), None);
    // DFA mode in a loop: the longest match each time.
    let d = re("a+|b", "d");
    let all: Vec<(usize, usize)> = engine
        .matches(&d, b"aab")
        .map(|c| c.unwrap().whole)
        .collect();
    assert_eq!(all, vec![(0, 2), (2, 3)]);
}

#[test]
fn templates() {
    assert_eq!(
        sub1("([a-z])[a-z]+", "", "hello, world", "[$0][$1][${1}]$$"),
        ("[hello][h][h]$, world".to_string(), 1)
    );
    assert_eq!(
        gsub("([a-z])([a-z]+)", "", "hello, world", "$2$1ay"),
        ("ellohay, orldway".to_string(), 2)
    );
    assert_eq!(gsub("(a)|b", "", "ab", "<$1$9>"), ("<a><>".to_string(), 2));
    assert_eq!(gsub("a", "", "aa", "${0}1"), ("a1a1".to_string(), 2));
    assert_eq!(gsub("(a)", "", "a", "$10"), ("".to_string(), 1));
    assert_eq!(gsub("(a)", "", "a", "$1b"), ("ab".to_string(), 1));
    // In DFA mode only $0 exists.
    assert_eq!(gsub("(a)", "d", "a", "<$0$1>"), ("<a>".to_string(), 1));
    for bad in [
        "$", "x$", "${1", "${", "$name", "${name}", "${}", "$-", "${1a}",
    ] {
        assert_eq!(
            Template::compile(bad),
            Err("failed to compile the replacement template".to_string()),
            "{bad:?}"
        );
    }
    let r = re("(b)", "");
    let caps = r.find_at("abc", 0).unwrap().unwrap();
    assert_eq!(
        expand_template("<$1|$0|$$>", &caps, "abc").unwrap(),
        b"<b|b|$>"
    );
    assert!(expand_template("$x", &caps, "abc").is_err());
}

#[test]
fn replace_with_callback() {
    let engine = Engine::default();
    let r = re("\\d", "");
    let (out, n) = replace_with(&engine, &r, "a1b2", true, |c| {
        Ok::<_, ()>(vec![b'<', b'0' + c.whole.0 as u8, b'>'])
    })
    .unwrap();
    assert_eq!((out.as_slice(), n), (&b"a<1>b<3>"[..], 2));
    assert_eq!(
        replace_with(&engine, &r, "a1", true, |_| Err("boom")),
        Err(ReplaceError::Callback("boom"))
    );
    // A callback may match again with the same engine (Lua code in a gsub
    // callback calling ngx.re).
    let inner = re("[0-9]", "");
    let (out, _) = replace_with(&engine, &r, "a1b2", true, |c| {
        let again = engine.find_at(&inner, b"x7", 0).unwrap().unwrap();
        Ok::<_, ()>(vec![b'0' + c.whole.0 as u8, b'0' + again.whole.0 as u8])
    })
    .unwrap();
    assert_eq!(out, b"a11b31");
    assert_eq!(
        replace_with(&engine, &re(".", "u"), b"\xff", true, |_| Ok::<_, ()>(
            vec![]
        )),
        Err(ReplaceError::Regex("pcre_exec() failed: -10".to_string()))
    );
}

#[test]
fn the_worker_cache_reuses_and_is_bounded() {
    let engine = Engine::default();
    let a = engine.compile_opts("cache-me-[0-9]+", "i").unwrap();
    let b = engine.compile_opts("cache-me-[0-9]+", "io").unwrap();
    let c = engine.compile_opts("cache-me-[0-9]+", "").unwrap();
    assert!(Rc::ptr_eq(&a, &b), "o does not change the key");
    assert!(!Rc::ptr_eq(&a, &c));
    assert_eq!(engine.len(), 2);
    let small = Engine::with_capacity(2);
    let x = small.compile_opts("x", "").unwrap();
    assert!(Rc::ptr_eq(&x, &small.compile_opts("x", "").unwrap()));
    small.compile_opts("y", "").unwrap();
    small.compile_opts("z", "").unwrap();
    assert_eq!(small.len(), 2);
    assert!(small.compile_opts("(", "").is_err());
    assert_eq!(small.len(), 2);
    let off = Engine::with_capacity(0);
    off.compile_opts("x", "").unwrap();
    assert!(off.is_empty());
}

#[test]
fn patterns_the_fuzzer_found_costly_are_cheap_or_refused() {
    // Found by the ngx_re fuzz target against the old translation layer
    // (which expanded calls): PCRE2 runs calls and recursion natively, so
    // they compile at once and matching stays within the limits.
    let engine = Engine::default();
    let started = Instant::now();
    let mut doubling = String::from("(a)");
    for n in 1..=20 {
        doubling.push_str(&format!("((?{n})(?{n}))"));
    }
    for p in [
        "a|b(?0)(?0)",
        "(a|b(?1)(?1))",
        "x(?R)?y(?R)?",
        "(a(?&n))(?<n>b(?1))",
        doubling.as_str(),
    ] {
        let r = compile(p, "").unwrap_or_else(|e| panic!("{p}: {e}"));
        let result = engine.find_at(&r, "ab".repeat(200).as_bytes(), 0);
        assert!(
            result.is_ok()
                || result
                    .as_ref()
                    .is_err_and(|e| e.starts_with("pcre_exec() failed: ")),
            "{p}: {result:?}"
        );
    }
    // A huge repetition in a lookbehind, and group numbers past 65535.
    for p in [
        "(?<=x+L{33333333})",
        "(?1888888888888888)",
        "(a)(?+70000)",
        "(a)\\g{99999999999}",
        "(a)(?65535)",
    ] {
        let e = compile(p, "").map(|_| ()).unwrap_err();
        assert!(e.starts_with("pcre_compile() failed: "), "{p}: {e}");
    }
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[test]
fn the_match_limit_is_an_exec_error() {
    // Catastrophic backtracking runs into PCRE's match limit.
    for opts in ["", "j"] {
        let r = re("^(\\w+\\s?)*$", opts);
        let subject = format!("{}!", "a".repeat(64));
        assert_eq!(
            r.find_at(&subject, 0).unwrap_err(),
            "pcre_exec() failed: -8",
            "{opts:?}"
        );
    }
}

#[test]
fn the_jit_stack_is_pcres_unless_raised() {
    let subject = format!("{}c", "ab".repeat(1000));
    let engine = Engine::default();
    // With `j`, PCRE's 32 KiB JIT stack runs out as in ngx_lua…
    let jit = re("(a|b)+c", "j");
    assert!(jit.is_jitted());
    assert_eq!(
        engine.find_at(&jit, subject.as_bytes(), 0).unwrap_err(),
        "pcre_exec() failed: -27"
    );
    // …without it the interpreter takes over, as ngx_lua would have used it.
    let plain = re("(a|b)+c", "");
    let c = engine
        .find_at(&plain, subject.as_bytes(), 0)
        .unwrap()
        .unwrap();
    assert_eq!(c.whole, (0, subject.len()));
    // ngx.re.opt("jit_stack_size", 256 KiB).
    assert_eq!(engine.set_jit_stack_size(256 * 1024), Ok(()));
    let c = engine
        .find_at(&jit, subject.as_bytes(), 0)
        .unwrap()
        .unwrap();
    assert_eq!(c.whole, (0, subject.len()));
    assert_eq!(engine.set_jit_stack_size(1), Ok(()), "raised to 32 KiB");
}

fn split_strs(subject: &str, p: &str, o: &str, pos: i64, max: i64) -> Vec<Option<String>> {
    let engine = Engine::default();
    let r = re(p, o);
    let out = split(&engine, &r, subject.as_bytes(), pos, max).unwrap();
    out.values
        .iter()
        .map(|v| v.map(|(s, e)| subject[s..e].to_string()))
        .collect()
}

fn some(parts: &[&str]) -> Vec<Option<String>> {
    let mut v: Vec<Option<String>> = parts.iter().map(|s| Some(s.to_string())).collect();
    v.push(None);
    v
}

#[test]
fn split_follows_resty_core() {
    assert_eq!(
        split_strs("a,b,c,d", ",", "", 1, 0),
        some(&["a", "b", "c", "d"])
    );
    assert_eq!(
        split_strs("a,b,c,d", "(,)", "", 1, 0),
        some(&["a", ",", "b", ",", "c", ",", "d"])
    );
    assert_eq!(
        split_strs("abcd", "", "", 1, 0),
        some(&["a", "b", "c", "d"])
    );
    assert_eq!(split_strs("a,b,c,d", ",", "", 5, 0), some(&["c", "d"]));
    assert_eq!(
        split_strs("a,b,c,d", ",", "", 1, 3),
        some(&["a", "b", "c,d"])
    );
    // Trailing empty pieces are dropped without max, kept with it.
    assert_eq!(split_strs("a,b,,", ",", "", 1, 0), some(&["a", "b"]));
    assert_eq!(
        split_strs("a,b,,", ",", "", 1, 10),
        some(&["a", "b", "", ""])
    );
    assert_eq!(split_strs("éa", "", "u", 1, 0), some(&["é", "a"]));
    let engine = Engine::default();
    let r = re(",", "");
    let out = split(&engine, &r, b"a,b", 1, 0).unwrap();
    assert_eq!(out.ctx_pos, 2);
    assert_eq!(
        split(&engine, &re(".", "u"), b"\xff", 1, 0).unwrap_err(),
        "pcre_exec() failed: -10"
    );
}

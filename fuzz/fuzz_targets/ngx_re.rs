//! `ngx.re`: an arbitrary pattern compiled with arbitrary options, then
//! find, gmatch, sub and gsub (with a template and with a callback) over
//! an arbitrary subject. Invariants: no panic; every span lies inside the
//! subject (on character boundaries under `u`); gmatch ends, moving
//! forward; the first gmatch match is find's; a match-free gsub returns
//! the subject; the time is bounded by PCRE2's match and heap limits.
//!
//! Input: an options byte (bits: i m s x u a D d), then the pattern's and
//! the template's lengths (one byte each), a start offset byte, then
//! pattern, template and subject.

#![no_main]

use libfuzzer_sys::fuzz_target;
use moongate::ngx::re::{self, Captures, Engine, Regex, Template};

/// The option letters of the bits in `b`.
fn letters(b: u8) -> String {
    b"imsxuaDd"
        .iter()
        .enumerate()
        .filter(|(i, _)| b & (1 << i) != 0)
        .map(|(_, &c)| char::from(c))
        .collect()
}

/// Checks a match's spans against the subject.
fn check_spans(re: &Regex, caps: &Captures, subject: &[u8]) {
    let utf8 = re.is_utf();
    let ok = |(s, e): (usize, usize)| {
        let boundary =
            |i: usize| !utf8 || std::str::from_utf8(subject).is_ok_and(|t| t.is_char_boundary(i));
        s <= e && e <= subject.len() && boundary(s) && boundary(e)
    };
    assert!(
        ok(caps.whole),
        "match {:?} outside {} bytes",
        caps.whole,
        subject.len()
    );
    assert_eq!(caps.groups.len(), re.group_count());
    for g in caps.groups.iter().flatten() {
        assert!(
            g.1 <= subject.len() && g.0 <= g.1,
            "group {g:?} outside {} bytes",
            subject.len()
        );
    }
}

fuzz_target!(|data: &[u8]| {
    let [opts, plen, tlen, start, rest @ ..] = data else {
        return;
    };
    let (pattern, rest) = rest.split_at(usize::from(*plen).min(rest.len()));
    let (template, subject) = rest.split_at(usize::from(*tlen).min(rest.len()));
    let letters = letters(*opts);
    let flags = re::parse_flags(&letters).unwrap_or_else(|e| panic!("{letters:?}: {e}"));
    let Ok(re) = Regex::new(pattern, flags) else {
        return;
    };
    assert_eq!(re.pattern(), pattern);
    let engine = Engine::default();

    // One search may use a whole budget (the match limit, or the heap or
    // JIT stack limit): one such search is enough.
    let over_budget = |r: &Result<Option<Captures>, String>| {
        r.as_ref().is_err_and(|e| {
            ["-8", "-21", "-27"].iter().any(|n| e == &format!("pcre_exec() failed: {n}"))
        })
    };
    let first = engine.find_at(&re, subject, 0);
    if over_budget(&first) {
        return;
    }
    let start = usize::from(*start) % (subject.len() + 2);
    let at_start = engine.find_at(&re, subject, start);
    if over_budget(&at_start) {
        return;
    }
    match at_start {
        Ok(Some(caps)) => {
            check_spans(&re, &caps, subject);
            assert!(caps.whole.0 >= start, "a match before the start offset");
        }
        Ok(None) => {}
        Err(e) => assert!(e.starts_with("pcre_exec() failed: "), "{e}"),
    }

    let mut count = 0;
    let mut last_end = 0;
    for (i, m) in engine.matches(&re, subject).enumerate() {
        let caps = match m {
            Ok(caps) => caps,
            Err(e) if over_budget(&Err(e.clone())) => return,
            Err(_) => break,
        };
        check_spans(&re, &caps, subject);
        if i == 0 {
            assert_eq!(first.as_ref().ok().and_then(|c| c.as_ref()), Some(&caps));
        }
        assert!(caps.whole.1 >= last_end, "gmatch went backwards");
        last_end = caps.whole.1;
        count += 1;
        assert!(count <= subject.len() + 1, "gmatch does not end");
    }

    if let Ok(t) = Template::compile(template) {
        for global in [false, true] {
            if let Ok((out, n)) = re::sub(&engine, &re, subject, &t, global) {
                if n == 0 {
                    assert_eq!(out, subject);
                }
                assert!(global || n <= 1);
            }
        }
    }
    let calls = std::cell::Cell::new(0usize);
    let replaced = re::replace_with(&engine, &re, subject, true, |caps| {
        calls.set(calls.get() + 1);
        Ok::<_, ()>(caps.bytes(0, subject).unwrap_or_default().to_vec())
    });
    if let Ok((out, n)) = replaced {
        assert_eq!(n, calls.get());
        // Each match replaced by itself leaves the subject as it was.
        assert_eq!(
            out, subject,
            "gsub with the match itself changed the subject"
        );
    }
});

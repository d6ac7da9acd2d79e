//! `ngx.re` (match, find, gmatch, sub, gsub, and resty.core's `ngx.re`
//! split) on PCRE2, with ngx_lua's option letters and results.
//!
//! Patterns and subjects are bytes. Options map to PCRE2 as lua-resty-core
//! maps them for a PCRE2 build: `i` caseless, `m` multiline, `s` dotall,
//! `x` extended, `u`/`U` UTF, `a` anchored, `D` duplicate names, `J`
//! JavaScript compatibility (`PCRE2_ALT_BSUX | PCRE2_ALLOW_EMPTY_CLASS |
//! PCRE2_MATCH_UNSET_BACKREF`), `d` DFA matching (`pcre2_dfa_match`: the
//! longest match at the first position that matches, no captures), `j` and
//! `o` change nothing in the result (see below).
//!
//! Where moongate differs from ngx_lua v0.10.23 (which ran PCRE 8.x):
//!
//! * Every pattern is JIT-compiled where the JIT can (but `d` ones): the
//!   results are the same and matching is faster. A pattern compiled
//!   without `j` whose JIT match runs out of JIT stack is matched again by
//!   the interpreter, as ngx_lua (which JITs only with `j`) would have.
//! * Every compiled pattern is cached per worker, with or without `o`
//!   ([`Engine`]).
//! * `U` checks the subject's UTF-8 as `u` does: PCRE2's behaviour on
//!   invalid UTF-8 without the check is undefined, and moongate matches
//!   client input. The check is made once per call in Rust, and PCRE2 is
//!   then told not to repeat it.
//! * After an empty match, gmatch, gsub and split step over one character
//!   under `u` (ngx_lua steps one byte, which then fails with
//!   `pcre_exec() failed: -11` inside a multi-byte character).
//! * Error texts and codes are PCRE 8.x's where ngx_lua's tests check them:
//!   a compile error is `pcre_compile() failed: <text> in "<pattern>"` (with
//!   ` at "<rest>"` when PCRE stopped before the end), with PCRE 8.x's text
//!   for the errors whose wording changed in PCRE2 (`missing )`, `nothing to
//!   repeat`, …) and PCRE2's otherwise; a match error is `pcre_exec()
//!   failed: N` with PCRE 8.x's N (`-8` for the match limit, `-10` for bad
//!   UTF-8, …).
//!
//! Offsets are 0-based byte offsets here. The Lua layer converts: Lua's
//! `ctx.pos` is `start + 1`, `ngx.re.find` returns `from = start + 1, to =
//! end`, and after a match `ctx.pos = end + 1`.

use std::fmt;

use pcre::{Code, CompileError, Matcher, Subject};

mod cache;
mod pcre;
mod split;
mod template;

pub use cache::{DEFAULT_CACHE_ENTRIES, Engine};
pub use split::{Split, split};
pub use template::{ReplaceError, Template, expand_template, replace_with, sub};

/// The option letters of an `ngx.re` call, parsed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Flags {
    /// `i`: caseless.
    pub caseless: bool,
    /// `m`: `^`/`$` match at line breaks.
    pub multiline: bool,
    /// `s`: `.` matches a newline.
    pub dotall: bool,
    /// `x`: whitespace and `#` comments in the pattern are ignored.
    pub extended: bool,
    /// `u` (or `U`): UTF-8 mode.
    pub utf8: bool,
    /// `U`: UTF-8 mode without the subject check (checked anyway here).
    pub no_utf8_check: bool,
    /// `a`: the match must start at the start offset.
    pub anchored: bool,
    /// `D`: duplicate group names allowed; their captures come as lists.
    pub dupnames: bool,
    /// `J`: PCRE's JavaScript compatibility.
    pub javascript: bool,
    /// `o`: compile once (every pattern is cached here anyway).
    pub compile_once: bool,
    /// `j`: JIT (every pattern is JIT-compiled here anyway).
    pub jit: bool,
    /// `d`: DFA matching.
    pub dfa: bool,
}

impl Flags {
    /// The bits that change the compiled regex or how it runs (the cache
    /// key): all but `o` and `U`.
    fn key(&self) -> u16 {
        [
            self.caseless,
            self.multiline,
            self.dotall,
            self.extended,
            self.utf8,
            self.anchored,
            self.dupnames,
            self.javascript,
            self.jit,
            self.dfa,
        ]
        .iter()
        .enumerate()
        .fold(0, |acc, (i, &on)| acc | (u16::from(on) << i))
    }

    /// PCRE2's compile options for these letters.
    fn compile_options(&self) -> u32 {
        use pcre2_sys::*;
        let pairs = [
            (self.caseless, PCRE2_CASELESS),
            (self.multiline, PCRE2_MULTILINE),
            (self.dotall, PCRE2_DOTALL),
            (self.extended, PCRE2_EXTENDED),
            (self.utf8, PCRE2_UTF),
            (self.anchored, PCRE2_ANCHORED),
            (self.dupnames, PCRE2_DUPNAMES),
            (
                self.javascript,
                PCRE2_ALT_BSUX | PCRE2_ALLOW_EMPTY_CLASS | PCRE2_MATCH_UNSET_BACKREF,
            ),
        ];
        pairs
            .iter()
            .filter(|(on, _)| *on)
            .fold(0, |acc, (_, bits)| acc | bits)
    }
}

/// Parses ngx_lua's option letters. The error is resty.core's message,
/// which ngx_lua raises as a Lua error (not a `nil, err` return).
pub fn parse_flags(opts: impl AsRef<[u8]>) -> Result<Flags, String> {
    let opts = opts.as_ref();
    let mut f = Flags::default();
    for &c in opts {
        match c {
            b'i' => f.caseless = true,
            b'm' => f.multiline = true,
            b's' => f.dotall = true,
            b'x' => f.extended = true,
            b'u' => f.utf8 = true,
            b'U' => {
                f.utf8 = true;
                f.no_utf8_check = true;
            }
            b'a' => f.anchored = true,
            b'D' => f.dupnames = true,
            b'J' => f.javascript = true,
            b'o' => f.compile_once = true,
            b'j' => f.jit = true,
            b'd' => f.dfa = true,
            _ => {
                return Err(format!(
                    "unknown flag \"{}\" (flags \"{}\")",
                    String::from_utf8_lossy(&[c]),
                    String::from_utf8_lossy(opts)
                ));
            }
        }
    }
    Ok(f)
}

/// ngx_lua's error buffer for compile errors holds 255 bytes of text.
const MAX_ERR_MSG_LEN: usize = 255;

/// PCRE 8.x's wording for the PCRE2 compile errors whose text changed
/// (ngx_lua v0.10.23's tests check `missing )`), by PCRE2 error number.
fn pcre1_text(e: &CompileError) -> Option<&'static str> {
    if e.is_bad_utf() {
        return Some("invalid UTF-8 string");
    }
    Some(match e.number() {
        7 => "invalid escape sequence in character class",
        9 => "nothing to repeat",
        14 => "missing )",
        18 => "missing ) after comment",
        22 => "unmatched parentheses",
        25 => "lookbehind assertion is not fixed length",
        43 => "two named subpatterns have the same name",
        _ => return None,
    })
}

/// ngx_lua's compile error: `pcre_compile() failed: TEXT in "PATTERN"`,
/// plus ` at "REST"` when the error is before the pattern's end; at most
/// 255 bytes.
fn compile_error(pattern: &[u8], e: &CompileError) -> String {
    let text = pcre1_text(e).unwrap_or(&e.message);
    let shown = String::from_utf8_lossy(pattern);
    let mut msg = match pattern.get(e.offset..).filter(|rest| !rest.is_empty()) {
        None => format!("pcre_compile() failed: {text} in \"{shown}\""),
        Some(rest) => {
            // ngx_lua prints the rest as a C string: up to a NUL byte.
            let rest = rest.split(|&b| b == 0).next().unwrap_or_default();
            format!(
                "pcre_compile() failed: {text} in \"{shown}\" at \"{}\"",
                String::from_utf8_lossy(rest)
            )
        }
    };
    if msg.len() > MAX_ERR_MSG_LEN {
        let mut cut = MAX_ERR_MSG_LEN;
        while !msg.is_char_boundary(cut) {
            cut -= 1;
        }
        msg.truncate(cut);
    }
    msg
}

/// PCRE 8.x's number for a PCRE2 match error (as ngx_lua v0.10.23 reports
/// it); PCRE2's own where PCRE 8.x had no such error.
fn pcre1_exec_code(rc: i32) -> i32 {
    match rc {
        -2 => -12,        // partial
        -23..=-3 => -10,  // invalid UTF-8
        -33 => -24,       // bad offset
        -34 => -3,        // bad option
        -36 => -11,       // start inside a UTF-8 character
        -38 => -30,       // DFA bad restart
        -39 => -20,       // DFA recursion
        -40 => -17,       // DFA unsupported condition
        -42 => -16,       // DFA unsupported item
        -43 => -19,       // DFA workspace too small
        -44 => -14,       // internal
        -45 => -31,       // JIT bad option
        -46 => -27,       // JIT stack limit
        -47 => -8,        // match limit
        -48 => -6,        // no memory
        -52 => -26,       // recursion loop
        -53 | -63 => -21, // depth or heap limit: PCRE 8.x's recursion limit
        other => other,
    }
}

fn exec_failed(rc: i32) -> String {
    format!("pcre_exec() failed: {}", pcre1_exec_code(rc))
}

/// PCRE's default `match_limit` (ngx_lua's `lua_regex_match_limit 0`).
#[cfg(not(fuzzing))]
const MATCH_LIMIT: u32 = 10_000_000;
/// Under cargo-fuzz (`--cfg fuzzing`) the budget is 100x smaller: with
/// coverage instrumentation a full budget takes seconds, and patterns that
/// use it all are common among fuzzed inputs. The limit's logic is the same.
#[cfg(fuzzing)]
const MATCH_LIMIT: u32 = 100_000;

/// The interpreter's backtracking memory per match, in KiB (PCRE2's default
/// is 20 GB). PCRE 8.x recursed on the machine stack instead; running out
/// is reported as its recursion limit (`pcre_exec() failed: -21`).
#[cfg(not(fuzzing))]
const HEAP_LIMIT_KIB: u32 = 64 * 1024;
#[cfg(fuzzing)]
const HEAP_LIMIT_KIB: u32 = 8 * 1024;

/// Backtracking memory a worker's match data may keep between matches.
const KEEP_HEAP: usize = 1 << 20;

fn new_matcher() -> Option<Matcher> {
    Matcher::new(pcre::Limits {
        match_limit: MATCH_LIMIT,
        heap_limit_kib: HEAP_LIMIT_KIB,
    })
}

/// A compiled `ngx.re` pattern.
pub struct Regex {
    code: Code,
    flags: Flags,
    /// UTF mode, from `u`/`U` or the pattern's own `(*UTF)`.
    utf: bool,
    /// Whether the JIT compiled it.
    jitted: bool,
    group_count: usize,
    names: Vec<(Vec<u8>, usize)>,
    pattern: Box<[u8]>,
}

impl fmt::Debug for Regex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Regex")
            .field("pattern", &String::from_utf8_lossy(&self.pattern))
            .field("flags", &self.flags)
            .field("jitted", &self.jitted)
            .finish()
    }
}

/// One match: byte offsets into the subject, 0-based, end exclusive.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Captures {
    /// The whole match (`$0`, `m[0]`).
    pub whole: (usize, usize),
    /// Groups 1..=n; `None` for a group that did not take part (Lua
    /// `false`). Empty in DFA mode (`d`), which captures nothing.
    pub groups: Vec<Option<(usize, usize)>>,
}

impl Captures {
    /// Group `n`'s span; 0 is the whole match.
    pub fn get(&self, n: usize) -> Option<(usize, usize)> {
        match n {
            0 => Some(self.whole),
            _ => self.groups.get(n - 1).copied().flatten(),
        }
    }

    /// Group `n`'s bytes in `subject`.
    pub fn bytes<'s>(&self, n: usize, subject: &'s [u8]) -> Option<&'s [u8]> {
        let (s, e) = self.get(n)?;
        // `\K` could once end a match before its start; PCRE reports such
        // a span and ngx_lua's string.sub makes it empty.
        subject.get(s..e.max(s))
    }

    /// Whether any group (not the whole match) took part: ngx_lua's `rc > 1`.
    pub fn any_group(&self) -> bool {
        self.groups.iter().any(Option::is_some)
    }
}

/// A subject checked for one [`Regex`]: any bytes, or valid UTF-8 when the
/// regex is in UTF mode. See [`Regex::hay`].
#[derive(Clone, Copy, Debug)]
pub struct Hay<'s>(Subject<'s>);

impl<'s> Hay<'s> {
    /// The subject's bytes.
    pub fn bytes(&self) -> &'s [u8] {
        match self.0 {
            Subject::Bytes(b) => b,
            Subject::Utf8(s) => s.as_bytes(),
        }
    }

    /// A copy that needs no second check (for an iterator kept by Lua).
    pub fn to_owned_hay(&self) -> OwnedHay {
        match self.0 {
            Subject::Bytes(b) => OwnedHay::Bytes(b.to_vec()),
            Subject::Utf8(s) => OwnedHay::Utf8(s.to_owned()),
        }
    }

    /// Where the next search starts after a match that ended at `end`
    /// (empty when `empty`): `end`, or one character further; `None` past
    /// the subject's end.
    pub fn next_start(&self, end: usize, empty: bool) -> Option<usize> {
        let len = self.bytes().len();
        if !empty {
            return Some(end);
        }
        let step = match self.0 {
            Subject::Utf8(s) => s
                .get(end..)
                .and_then(|r| r.chars().next())
                .map_or(1, char::len_utf8),
            Subject::Bytes(_) => 1,
        };
        Some(end + step).filter(|&p| p <= len)
    }
}

/// An owned [`Hay`].
#[derive(Clone, Debug)]
pub enum OwnedHay {
    /// For a regex not in UTF mode.
    Bytes(Vec<u8>),
    /// Checked UTF-8, for a regex in UTF mode.
    Utf8(String),
}

impl OwnedHay {
    /// The subject, ready to match again.
    pub fn as_hay(&self) -> Hay<'_> {
        match self {
            OwnedHay::Bytes(b) => Hay(Subject::Bytes(b)),
            OwnedHay::Utf8(s) => Hay(Subject::Utf8(s)),
        }
    }
}

impl Regex {
    /// Compiles `pattern` with `flags` (no cache: see [`Engine::compile`]).
    /// The error is ngx_lua's message.
    pub fn new(pattern: impl AsRef<[u8]>, flags: Flags) -> Result<Regex, String> {
        let pattern = pattern.as_ref();
        let mut code = Code::compile(pattern, flags.compile_options())
            .map_err(|e| compile_error(pattern, &e))?;
        let jitted = !flags.dfa && code.jit_compile();
        let utf = code.all_options() & pcre2_sys::PCRE2_UTF != 0;
        let names = code.names();
        Ok(Regex {
            group_count: code.capture_count(),
            code,
            flags,
            utf,
            jitted,
            names,
            pattern: pattern.into(),
        })
    }

    /// The number of capture groups (ngx_lua's `ncaptures`): 0 in DFA mode,
    /// which captures nothing.
    pub fn group_count(&self) -> usize {
        if self.flags.dfa { 0 } else { self.group_count }
    }

    /// Named groups and their numbers in PCRE's name-table order (by name;
    /// with `D`, a repeated name's groups in number order).
    pub fn names(&self) -> &[(Vec<u8>, usize)] {
        &self.names
    }

    /// The options this regex was compiled with.
    pub fn flags(&self) -> Flags {
        self.flags
    }

    /// Whether the regex is in UTF mode (`u`, `U`, or `(*UTF)` in it).
    pub fn is_utf(&self) -> bool {
        self.utf
    }

    /// Whether PCRE2's JIT compiled it.
    pub fn is_jitted(&self) -> bool {
        self.jitted
    }

    /// The pattern as given.
    pub fn pattern(&self) -> &[u8] {
        &self.pattern
    }

    /// Checks `subject` for this regex: in UTF mode it must be valid UTF-8
    /// (otherwise `pcre_exec() failed: -10`, PCRE's `BADUTF8`).
    pub fn hay<'s>(&self, subject: &'s [u8]) -> Result<Hay<'s>, String> {
        if self.utf {
            std::str::from_utf8(subject)
                .map(|s| Hay(Subject::Utf8(s)))
                .map_err(|_| exec_failed(-3))
        } else {
            Ok(Hay(Subject::Bytes(subject)))
        }
    }

    /// Matches once with `matcher` from byte `start`.
    fn exec(
        &self,
        matcher: &mut Matcher,
        hay: Hay<'_>,
        start: usize,
    ) -> Result<Option<Captures>, String> {
        let dfa = self.flags.dfa;
        let pairs = self.group_count() + 1;
        let mut rc = matcher.exec(&self.code, hay.0, start, 0, dfa, pairs);
        if rc == pcre::ERROR_JIT_STACKLIMIT && self.jitted && !self.flags.jit {
            // ngx_lua would not have used the JIT without `j`.
            rc = matcher.exec(
                &self.code,
                hay.0,
                start,
                pcre2_sys::PCRE2_NO_JIT,
                dfa,
                pairs,
            );
        }
        matcher.trim(KEEP_HEAP);
        if rc == pcre::ERROR_NOMATCH {
            return Ok(None);
        }
        if rc < 0 {
            return Err(exec_failed(rc));
        }
        // rc is the number of pairs set; in DFA mode 0 means more matches
        // than pairs, the longest one first, as ngx_lua takes it.
        let set = if dfa {
            1
        } else if rc == 0 {
            return Err("capture size too small".to_string());
        } else {
            usize::try_from(rc).unwrap_or(1)
        };
        let Some(whole) = matcher.pair(0) else {
            return Ok(None);
        };
        let groups = (1..pairs)
            .map(|i| if i < set { matcher.pair(i) } else { None })
            .collect();
        Ok(Some(Captures { whole, groups }))
    }

    /// The first match at or after byte `start` (0-based; with `a`, only a
    /// match starting exactly at `start`), with a matcher of its own (see
    /// [`Engine::find_at`] for the worker's). `Ok(None)` is no match; an
    /// error is ngx_lua's `pcre_exec() failed: N` (`start` past the end,
    /// invalid UTF-8 under `u`, a start inside a UTF-8 character, or a
    /// limit).
    pub fn find_at(
        &self,
        subject: impl AsRef<[u8]>,
        start: usize,
    ) -> Result<Option<Captures>, String> {
        Engine::with_capacity(0).find_at(self, subject.as_ref(), start)
    }
}

/// Iterator over the matches of a [`Regex`] in one subject
/// ([`Engine::matches`]), as `ngx.re.gmatch` and `gsub` find them: the
/// next search starts where a match ended, one character further after an
/// empty match. After an error it ends.
pub struct Matches<'e, 'r, 's> {
    engine: &'e Engine,
    re: &'r Regex,
    hay: Option<Hay<'s>>,
    error: Option<String>,
    pos: Option<usize>,
}

impl fmt::Debug for Matches<'_, '_, '_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Matches").field("pos", &self.pos).finish()
    }
}

impl Iterator for Matches<'_, '_, '_> {
    type Item = Result<Captures, String>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some(e) = self.error.take() {
            return Some(Err(e));
        }
        let (hay, pos) = (self.hay?, self.pos?);
        match self.engine.exec(self.re, hay, pos) {
            Ok(Some(caps)) => {
                let (start, end) = caps.whole;
                self.pos = hay.next_start(end, start == end);
                Some(Ok(caps))
            }
            Ok(None) => {
                self.pos = None;
                None
            }
            Err(e) => {
                self.pos = None;
                Some(Err(e))
            }
        }
    }
}

#[cfg(test)]
mod tests;

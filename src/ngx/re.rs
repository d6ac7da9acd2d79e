//! `ngx.re` (match, find, gmatch, sub, gsub) on a PCRE-compatible engine.
//!
//! Patterns are PCRE syntax with ngx_lua's option letters. They are
//! translated to `fancy-regex` syntax (backreferences, lookaround, atomic
//! groups, possessive quantifiers, `\K`, `\G` and conditionals carry over)
//! so that the PCRE meaning is kept where the two differ:
//!
//! * Without `u`, subjects and patterns are bytes, as in PCRE's non-UTF
//!   mode: `.` is one byte, `\xHH` is a byte, classes and caseless
//!   matching are ASCII. With `u`, the subject must be valid UTF-8
//!   (otherwise `pcre_exec() failed: -10`, PCRE's `BADUTF8`), `.` is one
//!   character and caseless matching is Unicode-aware; `\d`, `\w`, `\s`
//!   and POSIX classes stay ASCII, as PCRE without UCP has them.
//! * `$` (without `m`) and `\Z` also match before a final newline, and
//!   with `m` a `^` never matches after a newline that ends the subject.
//! * `\h`, `\v`, `\R` are PCRE's whitespace classes; `\Q…\E`, `(?#…)`,
//!   `x` comments, octal escapes and `{` as a literal are handled here.
//!
//! Known differences: `\b`/`\B` under `u` use Unicode word characters;
//! recursion (`(?R)`, a group calling itself), subroutine calls that
//! expand the pattern too far, branch reset `(?|…)`, `\C`, `\X`, callouts
//! and most `(*VERB)`s are refused at compile time; `d` (DFA mode) is refused; `J`
//! is accepted and has no effect; a named backreference to a duplicated
//! name (`D`) refers to the first group of that name.
//!
//! Offsets are 0-based byte offsets here. The Lua layer converts: Lua's
//! `ctx.pos`/`init` is `start + 1`, `ngx.re.find` returns `from = start +
//! 1, to = end`, and after a match `ctx.pos = end + 1`.
//!
//! Every compile goes through a bounded cache keyed by pattern and
//! options, whether or not `o` is given (see [`RegexCache`]).

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, LazyLock, Mutex, PoisonError};

use fancy_regex::{BytesMode, RegexBuilder, RegexInput, RuntimeError};

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
    /// `J`: PCRE's JavaScript compatibility (accepted, no effect).
    pub javascript: bool,
    /// `o`: compile once (every pattern is cached here anyway).
    pub compile_once: bool,
    /// `j`: JIT (accepted, no effect).
    pub jit: bool,
    /// `d`: DFA mode (not supported: compiling fails).
    pub dfa: bool,
}

impl Flags {
    /// The bits that change the compiled regex (the cache key).
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
            self.dfa,
        ]
        .iter()
        .enumerate()
        .fold(0, |acc, (i, &on)| acc | (u16::from(on) << i))
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

/// PCRE's `pcre_exec` error codes that ngx_lua reports as
/// `"pcre_exec() failed: N"`.
const MATCH_LIMIT: i32 = -8;
const BAD_UTF8: i32 = -10;
const BAD_UTF8_OFFSET: i32 = -11;
const RECURSION_LIMIT: i32 = -21;
const BAD_OFFSET: i32 = -24;

fn exec_failed(code: i32) -> String {
    format!("pcre_exec() failed: {code}")
}

/// The compiled size of each part fancy-regex hands to regex-automata,
/// the `regex` crate's default. fancy-regex sets none on the reverse
/// automaton of a variable-length lookbehind: `(?<=x+L{33333333})` took
/// 2 GB to compile (found by the ngx_re fuzz target).
const DELEGATE_SIZE_LIMIT: usize = 10 << 20;

/// Backtracking budget per match, PCRE's default `match_limit`.
#[cfg(not(fuzzing))]
const BACKTRACK_LIMIT: usize = 10_000_000;
/// Under cargo-fuzz (`--cfg fuzzing`) the budget is 100x smaller: with
/// coverage instrumentation a full budget takes seconds, and patterns that
/// use it all are common among fuzzed inputs. The limit's logic is the same.
#[cfg(fuzzing)]
const BACKTRACK_LIMIT: usize = 100_000;

/// A compiled `ngx.re` pattern.
pub struct Regex {
    /// Used when the subject does not end with `\n`, where PCRE's `$`
    /// (before a final newline, or at the end) is simply the end.
    fast: fancy_regex::Regex,
    /// PCRE's exact end-of-subject rules, for subjects ending with `\n`;
    /// `None` when the pattern has no such assertion.
    exact: Option<fancy_regex::Regex>,
    flags: Flags,
    group_count: usize,
    names: Vec<(String, usize)>,
    pattern: Vec<u8>,
}

impl fmt::Debug for Regex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Regex")
            .field("pattern", &String::from_utf8_lossy(&self.pattern))
            .field("flags", &self.flags)
            .field("engine", &self.fast.as_str())
            .finish()
    }
}

/// One match: byte offsets into the subject, 0-based, end exclusive.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Captures {
    /// The whole match (`$0`, `m[0]`).
    pub whole: (usize, usize),
    /// Groups 1..=n; `None` for a group that did not take part (Lua
    /// `false`).
    pub groups: Vec<Option<(usize, usize)>>,
    /// Named groups and their numbers, in group order; with `D` a name may
    /// repeat, and ngx_lua then gives `m.name` as the list of the matched
    /// ones.
    pub names: Vec<(String, usize)>,
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
        subject.get(s..e)
    }
}

/// A subject ready for the engine: bytes, or checked UTF-8 under `u`.
#[derive(Clone, Copy)]
enum Hay<'s> {
    Bytes(&'s [u8]),
    Str(&'s str),
}

impl Hay<'_> {
    fn bytes(&self) -> &[u8] {
        match self {
            Hay::Bytes(b) => b,
            Hay::Str(s) => s.as_bytes(),
        }
    }
}

macro_rules! collect_caps {
    ($caps:expr, $n:expr, $names:expr) => {{
        let c = $caps;
        let whole = c.get(0).map(|m| (m.start(), m.end())).unwrap_or((0, 0));
        let groups = (1..=$n)
            .map(|i| c.get(i).map(|m| (m.start(), m.end())))
            .collect();
        Captures {
            whole,
            groups,
            names: $names.clone(),
        }
    }};
}

impl Regex {
    /// Compiles `pattern` with `flags`, bypassing the cache.
    pub fn new(pattern: impl AsRef<[u8]>, flags: Flags) -> Result<Regex, String> {
        let pattern = pattern.as_ref();
        let fail = |msg: &str| {
            format!(
                "pcre_compile() failed: {msg} in \"{}\"",
                String::from_utf8_lossy(pattern)
            )
        };
        if flags.dfa {
            return Err(fail("the \"d\" (DFA) option is not supported"));
        }
        let fast_t = translate::translate(pattern, &flags, false).map_err(|e| fail(&e))?;
        calls::check(&fast_t.pattern).map_err(|e| fail(&e))?;
        let build = |src: &str| {
            RegexBuilder::new(src)
                .case_insensitive(flags.caseless)
                .dot_matches_new_line(flags.dotall)
                .bytes_mode(if flags.utf8 {
                    BytesMode::Unicode
                } else {
                    BytesMode::Ascii
                })
                .backtrack_limit(BACKTRACK_LIMIT)
                .delegate_size_limit(DELEGATE_SIZE_LIMIT)
                .build()
        };
        let fast = build(&fast_t.pattern).map_err(|e| fail(&e.to_string()))?;
        if fast.captures_len() != fast_t.group_count + 1 {
            return Err(fail("capture groups could not be kept in order"));
        }
        // The exact variant only adds lookarounds; should the engine refuse
        // one (say inside a lookbehind), the fast variant serves alone.
        let exact = if fast_t.needs_exact {
            translate::translate(pattern, &flags, true)
                .ok()
                .and_then(|t| build(&t.pattern).ok())
                .filter(|re| re.captures_len() == fast_t.group_count + 1)
        } else {
            None
        };
        Ok(Regex {
            fast,
            exact,
            flags,
            group_count: fast_t.group_count,
            names: fast_t.names,
            pattern: pattern.to_vec(),
        })
    }

    /// The number of capture groups.
    pub fn group_count(&self) -> usize {
        self.group_count
    }

    /// Named groups and their numbers, in group order.
    pub fn names(&self) -> &[(String, usize)] {
        &self.names
    }

    /// The options this regex was compiled with.
    pub fn flags(&self) -> Flags {
        self.flags
    }

    /// The pattern as given.
    pub fn pattern(&self) -> &[u8] {
        &self.pattern
    }

    fn prepare<'s>(&self, subject: &'s [u8]) -> Result<Hay<'s>, String> {
        if self.flags.utf8 {
            std::str::from_utf8(subject)
                .map(Hay::Str)
                .map_err(|_| exec_failed(BAD_UTF8))
        } else {
            Ok(Hay::Bytes(subject))
        }
    }

    fn exec(&self, hay: Hay<'_>, start: usize) -> Result<Option<Captures>, String> {
        let bytes = hay.bytes();
        if start > bytes.len() {
            return Err(exec_failed(BAD_OFFSET));
        }
        let re = match &self.exact {
            Some(exact) if bytes.last() == Some(&b'\n') => exact,
            _ => &self.fast,
        };
        let anchored = self.flags.anchored;
        let result = match hay {
            Hay::Bytes(b) => re
                .captures_input(RegexInput::new(b).from_pos(start).anchored(anchored))
                .map(|c| c.map(|c| collect_caps!(c, self.group_count, self.names))),
            Hay::Str(s) => {
                if !s.is_char_boundary(start) {
                    return Err(exec_failed(BAD_UTF8_OFFSET));
                }
                re.captures_input(RegexInput::new(s).from_pos(start).anchored(anchored))
                    .map(|c| c.map(|c| collect_caps!(c, self.group_count, self.names)))
            }
        };
        result.map_err(|e| match e {
            fancy_regex::Error::RuntimeError(RuntimeError::BacktrackLimitExceeded) => {
                exec_failed(MATCH_LIMIT)
            }
            fancy_regex::Error::RuntimeError(RuntimeError::StackOverflow) => {
                exec_failed(RECURSION_LIMIT)
            }
            other => format!("pcre_exec() failed: {other}"),
        })
    }

    /// The first match at or after byte `start` (0-based; with `a`, only a
    /// match starting exactly at `start`). `Ok(None)` is no match; an
    /// error is ngx_lua's `pcre_exec() failed: N` (`start` past the end,
    /// invalid UTF-8 under `u`, a start inside a UTF-8 character, or the
    /// backtracking limit).
    pub fn find_at(
        &self,
        subject: impl AsRef<[u8]>,
        start: usize,
    ) -> Result<Option<Captures>, String> {
        let hay = self.prepare(subject.as_ref())?;
        self.exec(hay, start)
    }

    /// Successive matches, as `ngx.re.gmatch` (and `gsub`) find them: the
    /// next search starts where a match ended, one character further
    /// after an empty match.
    pub fn matches<'r, 's>(&'r self, subject: &'s [u8]) -> Matches<'r, 's> {
        match self.prepare(subject) {
            Ok(hay) => Matches {
                re: self,
                hay: Some(hay),
                error: None,
                pos: Some(0),
            },
            Err(e) => Matches {
                re: self,
                hay: None,
                error: Some(e),
                pos: None,
            },
        }
    }
}

/// Iterator over the matches of a [`Regex`] in one subject
/// ([`Regex::matches`]). After an error it ends.
pub struct Matches<'r, 's> {
    re: &'r Regex,
    hay: Option<Hay<'s>>,
    error: Option<String>,
    pos: Option<usize>,
}

impl fmt::Debug for Matches<'_, '_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Matches").field("pos", &self.pos).finish()
    }
}

impl Iterator for Matches<'_, '_> {
    type Item = Result<Captures, String>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some(e) = self.error.take() {
            return Some(Err(e));
        }
        let (hay, pos) = (self.hay?, self.pos?);
        match self.re.exec(hay, pos) {
            Ok(Some(caps)) => {
                let (start, end) = caps.whole;
                let len = hay.bytes().len();
                self.pos = if start == end {
                    // Step over one character (one byte without `u`).
                    let step = match hay {
                        Hay::Str(s) => s
                            .get(end..)
                            .and_then(|r| r.chars().next())
                            .map_or(1, char::len_utf8),
                        Hay::Bytes(_) => 1,
                    };
                    Some(end + step).filter(|&p| p <= len)
                } else {
                    Some(end)
                };
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

/// Cache key: the pattern and the compile-relevant option bits.
type CacheMap = HashMap<(Vec<u8>, u16), Arc<Regex>>;

/// ngx_lua's default `lua_regex_cache_max_entries`.
pub const DEFAULT_CACHE_ENTRIES: usize = 1024;

/// A bounded cache of compiled regexes keyed by (pattern, options). When
/// full, an arbitrary entry makes room. Failed compiles are not cached.
pub struct RegexCache {
    capacity: usize,
    map: Mutex<CacheMap>,
}

impl fmt::Debug for RegexCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegexCache")
            .field("capacity", &self.capacity)
            .field("len", &self.len())
            .finish()
    }
}

impl RegexCache {
    /// An empty cache holding at most `capacity` regexes (0 disables it).
    pub fn new(capacity: usize) -> Self {
        RegexCache {
            capacity,
            map: Mutex::new(HashMap::new()),
        }
    }

    /// Parses `opts` and compiles (or finds) `pattern`. Both kinds of
    /// failure come back as the message; call [`parse_flags`] first to
    /// tell an unknown flag (raised by ngx_lua) from a bad pattern
    /// (returned as `nil, err`).
    pub fn compile(
        &self,
        pattern: impl AsRef<[u8]>,
        opts: impl AsRef<[u8]>,
    ) -> Result<Arc<Regex>, String> {
        self.compile_with(pattern, parse_flags(opts)?)
    }

    /// Compiles (or finds) `pattern` with parsed `flags`.
    pub fn compile_with(
        &self,
        pattern: impl AsRef<[u8]>,
        flags: Flags,
    ) -> Result<Arc<Regex>, String> {
        let pattern = pattern.as_ref();
        let key = (pattern.to_vec(), flags.key());
        if let Some(re) = self.lock().get(&key) {
            return Ok(Arc::clone(re));
        }
        let re = Arc::new(Regex::new(pattern, flags)?);
        if self.capacity > 0 {
            let mut map = self.lock();
            if map.len() >= self.capacity
                && !map.contains_key(&key)
                && let Some(victim) = map.keys().next().cloned()
            {
                map.remove(&victim);
            }
            map.insert(key, Arc::clone(&re));
        }
        Ok(re)
    }

    /// How many regexes are cached.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether the cache is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, CacheMap> {
        // The map holds immutable values only, so a panic elsewhere cannot
        // leave it half-updated: a poisoned lock is still safe to use.
        self.map.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The process-wide cache behind [`compile`]: a memo of immutable compiled
/// patterns (not observable state), shared by every worker and VM.
static CACHE: LazyLock<RegexCache> = LazyLock::new(|| RegexCache::new(DEFAULT_CACHE_ENTRIES));

/// Compiles `pattern` with option letters `opts` through the process-wide
/// cache (used for every call, with or without `o`).
pub fn compile(pattern: impl AsRef<[u8]>, opts: impl AsRef<[u8]>) -> Result<Arc<Regex>, String> {
    CACHE.compile(pattern, opts)
}

/// Compiles `pattern` with parsed `flags` through the process-wide cache.
pub fn compile_with(pattern: impl AsRef<[u8]>, flags: Flags) -> Result<Arc<Regex>, String> {
    CACHE.compile_with(pattern, flags)
}

/// The first match of `re` in `subject` at or after byte `start`; see
/// [`Regex::find_at`].
pub fn find_at(
    re: &Regex,
    subject: impl AsRef<[u8]>,
    start: usize,
) -> Result<Option<Captures>, String> {
    re.find_at(subject, start)
}

/// ngx_lua's message for every bad replacement template.
const TEMPLATE_ERROR: &str = "failed to compile the replacement template";

#[derive(Clone, Debug, PartialEq, Eq)]
enum Piece {
    Lit(Vec<u8>),
    Group(usize),
}

/// A compiled `ngx.re.sub`/`gsub` replacement template: `$0`, `$1`…,
/// `${1}`, and `$$` for a literal `$`. Named references (`$name`) are
/// refused, as in ngx_lua; a group that did not match, or does not exist,
/// expands to nothing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Template {
    pieces: Vec<Piece>,
}

impl Template {
    /// Compiles `template` (ngx_lua's `ngx_http_lua_compile_complex_value`
    /// rules); the error is ngx_lua's message.
    pub fn compile(template: impl AsRef<[u8]>) -> Result<Template, String> {
        let t = template.as_ref();
        let bad = || Err(TEMPLATE_ERROR.to_string());
        let mut pieces = Vec::new();
        let mut lit = Vec::new();
        let mut i = 0;
        while let Some(&c) = t.get(i) {
            i += 1;
            if c != b'$' {
                lit.push(c);
                continue;
            }
            let bracket = match t.get(i) {
                None => return bad(),
                Some(b'$') => {
                    lit.push(b'$');
                    i += 1;
                    continue;
                }
                Some(b'{') => {
                    i += 1;
                    true
                }
                Some(_) => false,
            };
            if !t.get(i).is_some_and(u8::is_ascii_digit) {
                return bad();
            }
            let mut n = 0usize;
            while let Some(d) = t.get(i).filter(|d| d.is_ascii_digit()) {
                n = n.saturating_mul(10).saturating_add(usize::from(d - b'0'));
                i += 1;
            }
            if bracket {
                if t.get(i) != Some(&b'}') {
                    return bad();
                }
                i += 1;
            }
            if !lit.is_empty() {
                pieces.push(Piece::Lit(std::mem::take(&mut lit)));
            }
            pieces.push(Piece::Group(n));
        }
        if !lit.is_empty() {
            pieces.push(Piece::Lit(lit));
        }
        Ok(Template { pieces })
    }

    /// Appends the expansion for `caps` (a match in `subject`) to `out`.
    pub fn expand_into(&self, caps: &Captures, subject: &[u8], out: &mut Vec<u8>) {
        for piece in &self.pieces {
            match piece {
                Piece::Lit(bytes) => out.extend_from_slice(bytes),
                Piece::Group(n) => {
                    if let Some(bytes) = caps.bytes(*n, subject) {
                        out.extend_from_slice(bytes);
                    }
                }
            }
        }
    }
}

/// Expands `template` for one match (compiling it first).
pub fn expand_template(
    template: impl AsRef<[u8]>,
    caps: &Captures,
    subject: impl AsRef<[u8]>,
) -> Result<Vec<u8>, String> {
    let template = Template::compile(template)?;
    let mut out = Vec::new();
    template.expand_into(caps, subject.as_ref(), &mut out);
    Ok(out)
}

/// An error from [`replace_with`]: the regex's, or the callback's own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplaceError<E> {
    /// Matching failed (`pcre_exec() failed: N`).
    Regex(String),
    /// The replacement callback failed.
    Callback(E),
}

/// `ngx.re.sub` (`global = false`) and `ngx.re.gsub` (`global = true`) with
/// a function: `replace` gets each match and returns its replacement.
/// Returns the new subject and the number of matches.
pub fn replace_with<E>(
    re: &Regex,
    subject: impl AsRef<[u8]>,
    global: bool,
    mut replace: impl FnMut(&Captures) -> Result<Vec<u8>, E>,
) -> Result<(Vec<u8>, usize), ReplaceError<E>> {
    let subject = subject.as_ref();
    let mut out = Vec::with_capacity(subject.len());
    let mut copied = 0;
    let mut count = 0;
    for caps in re.matches(subject) {
        let caps = caps.map_err(ReplaceError::Regex)?;
        count += 1;
        out.extend_from_slice(subject.get(copied..caps.whole.0).unwrap_or_default());
        out.extend(replace(&caps).map_err(ReplaceError::Callback)?);
        copied = caps.whole.1;
        if !global {
            break;
        }
    }
    if count == 0 {
        return Ok((subject.to_vec(), 0));
    }
    out.extend_from_slice(subject.get(copied..).unwrap_or_default());
    Ok((out, count))
}

/// `ngx.re.sub`/`gsub` with a string template (compile it first with
/// [`Template::compile`], as ngx_lua does before matching).
pub fn sub(
    re: &Regex,
    subject: impl AsRef<[u8]>,
    template: &Template,
    global: bool,
) -> Result<(Vec<u8>, usize), String> {
    let subject = subject.as_ref();
    replace_with(re, subject, global, |caps| {
        let mut piece = Vec::new();
        template.expand_into(caps, subject, &mut piece);
        Ok::<_, ()>(piece)
    })
    .map_err(|e| match e {
        ReplaceError::Regex(msg) => msg,
        ReplaceError::Callback(()) => TEMPLATE_ERROR.to_string(),
    })
}

mod calls;
mod translate;

#[cfg(test)]
mod tests {
    use super::*;

    fn re(p: &str, o: &str) -> Arc<Regex> {
        compile(p, o).unwrap_or_else(|e| panic!("{p:?}/{o:?}: {e}"))
    }

    fn span(p: &str, o: &str, s: &[u8]) -> Option<(usize, usize)> {
        re(p, o).find_at(s, 0).unwrap().map(|c| c.whole)
    }

    fn gsub(p: &str, o: &str, s: &str, t: &str) -> (String, usize) {
        let r = re(p, o);
        let (out, n) = sub(&r, s, &Template::compile(t).unwrap(), true).unwrap();
        (String::from_utf8(out).unwrap(), n)
    }

    fn sub1(p: &str, o: &str, s: &str, t: &str) -> (String, usize) {
        let r = re(p, o);
        let (out, n) = sub(&r, s, &Template::compile(t).unwrap(), false).unwrap();
        (String::from_utf8(out).unwrap(), n)
    }

    #[test]
    fn regexes_are_shareable_across_workers() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<Regex>();
        send_sync::<RegexCache>();
        send_sync::<Template>();
    }

    #[test]
    fn unknown_flag_is_ngx_lua_message() {
        assert_eq!(
            parse_flags("iz"),
            Err("unknown flag \"z\" (flags \"iz\")".to_string())
        );
        assert_eq!(
            compile("a", "q").unwrap_err(),
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
        assert_eq!(span("a\\ b[ ]c", "x", b"a b c"), Some((0, 5)));
        assert_eq!(span("[#]a # not [a class\n", "x", b"#a"), Some((0, 2)));
        // Inline options scope like PCRE's.
        assert_eq!(span("a(?i)b|c", "", b"C"), Some((0, 1)));
        assert_eq!(span("(?i:a)b", "", b"Ab"), Some((0, 2)));
        assert_eq!(span("(?i:a)b", "", b"AB"), None);
        assert_eq!(span("(?x: a b )c d", "", b"abc d"), Some((0, 5)));
    }

    #[test]
    fn option_u_and_bytes() {
        let e = "é".as_bytes();
        assert_eq!(span(".", "u", e), Some((0, 2)));
        assert_eq!(span(".", "", e), Some((0, 1)));
        assert_eq!(span("\\xC3", "", e), Some((0, 1)));
        assert_eq!(span("é+", "", "ééx".as_bytes()), Some((0, 2)));
        assert_eq!(span("(?:é)+", "u", "ééx".as_bytes()), Some((0, 4)));
        assert_eq!(span("É", "iu", e), Some((0, 2)));
        assert_eq!(span("É", "i", e), None);
        assert_eq!(span("\\xff+", "", b"a\xff\xffb"), Some((1, 3)));
        assert_eq!(
            re(".", "u").find_at(b"\xff", 0).unwrap_err(),
            "pcre_exec() failed: -10"
        );
        assert_eq!(
            re(".", "u").find_at(e, 1).unwrap_err(),
            "pcre_exec() failed: -11"
        );
        // \d, \w and \s stay ASCII under u, as in PCRE without UCP.
        assert_eq!(span("\\d", "u", "٣".as_bytes()), None);
        assert_eq!(span("\\w+", "u", "éa".as_bytes()), Some((2, 3)));
        assert_eq!(span("\\W", "u", "éa".as_bytes()), Some((0, 2)));
        assert!(compile("\\xff", "u").is_ok());
        assert!(
            compile(b"\xff".as_slice(), "u")
                .unwrap_err()
                .contains("invalid UTF-8")
        );
    }

    #[test]
    fn option_a_o_j_d_big_d_j() {
        assert_eq!(re("b", "a").find_at("ab", 0).unwrap(), None);
        assert_eq!(
            re("b", "a").find_at("ab", 1).unwrap().map(|c| c.whole),
            Some((1, 2))
        );
        assert_eq!(
            re("(a)\\1|b", "a")
                .find_at("xb", 1)
                .unwrap()
                .map(|c| c.whole),
            Some((1, 2))
        );
        assert_eq!(
            re("b", "").find_at("ab", 0).unwrap().map(|c| c.whole),
            Some((1, 2))
        );
        assert_eq!(span("b", "jo", b"ab"), Some((1, 2)));
        assert!(compile("a", "d").unwrap_err().contains("DFA"));
        assert!(
            compile("(?<n>a)|(?<n>b)", "")
                .unwrap_err()
                .contains("two named subpatterns have the same name")
        );
        let d = re("(?<n>a)|(?<n>b)", "D");
        assert_eq!(d.names(), &[("n".to_string(), 1), ("n".to_string(), 2)]);
        let c = d.find_at("b", 0).unwrap().unwrap();
        assert_eq!(c.groups, vec![None, Some((0, 1))]);
        assert_eq!(span("a", "J", b"a"), Some((0, 1)));
    }

    #[test]
    fn named_captures_and_backrefs() {
        let r = re("(?<year>\\d{4})-(?P<mon>\\d\\d)(?'day'-\\d\\d)?", "");
        assert_eq!(r.group_count(), 3);
        let c = r.find_at("on 2024-05!", 0).unwrap().unwrap();
        assert_eq!(c.whole, (3, 10));
        assert_eq!(c.groups, vec![Some((3, 7)), Some((8, 10)), None]);
        assert_eq!(
            c.names,
            vec![
                ("year".to_string(), 1),
                ("mon".to_string(), 2),
                ("day".to_string(), 3)
            ]
        );
        assert_eq!(c.bytes(1, b"on 2024-05!"), Some(&b"2024"[..]));
        assert_eq!(span("(\\w)\\1", "", b"abccd"), Some((2, 4)));
        assert_eq!(span("(?<c>\\w)\\k<c>", "", b"abccd"), Some((2, 4)));
        assert_eq!(span("(?P<c>\\w)(?P=c)", "", b"abccd"), Some((2, 4)));
        assert_eq!(span("(\\w)\\g{-1}", "", b"abccd"), Some((2, 4)));
        assert_eq!(span("(a)(b)\\g2", "", b"abb"), Some((0, 3)));
        assert_eq!(span("(a)\\1", "i", b"aA"), Some((0, 2)));
        // Forward reference to a name.
        assert_eq!(span("(?:\\k<x>b|(?<x>a))+", "", b"aab"), Some((0, 3)));
        assert!(
            compile("\\k<nope>(a)", "")
                .unwrap_err()
                .contains("non-existent")
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
        assert_eq!(find_at(&r, "x9", 0).unwrap().unwrap().get(0), Some((1, 2)));
    }

    #[test]
    fn pcre_end_of_subject_rules() {
        assert_eq!(span("c$", "", b"abc\n"), Some((2, 3)));
        assert_eq!(span("c\\Z", "", b"abc\n"), Some((2, 3)));
        assert_eq!(span("c\\z", "", b"abc\n"), None);
        assert_eq!(span("c$", "", b"abc\n\n"), None);
        assert_eq!(span("c$", "", b"abc"), Some((2, 3)));
        assert_eq!(gsub("^", "m", "a\nb\n", ">"), (">a\n>b\n".to_string(), 2));
        assert_eq!(gsub("^", "m", "a\nb", ">"), (">a\n>b".to_string(), 2));
        assert_eq!(gsub("$", "", "ab\n", "!"), ("ab!\n!".to_string(), 2));
    }

    #[test]
    fn pcre_syntax_translation() {
        assert_eq!(span("\\Q.*\\E+", "", b"x.*.*"), Some((1, 3)));
        assert_eq!(span("a{,2}", "", b"a{,2}"), Some((0, 5)));
        assert_eq!(span("a{2}", "", b"aaa"), Some((0, 2)));
        assert_eq!(span("x{", "", b"x{"), Some((0, 2)));
        assert_eq!(span("\\101\\x42\\x{43}\\o{104}", "", b"ABCD"), Some((0, 4)));
        assert_eq!(span("\\h+", "", b"a \t\xa0b"), Some((1, 4)));
        assert_eq!(span("\\R", "", b"a\r\nb"), Some((1, 3)));
        assert_eq!(span("[[:alpha:]]+", "", b"12ab3"), Some((2, 4)));
        assert_eq!(span("[^[:^digit:]x]+", "", b"ab12x"), Some((2, 4)));
        assert_eq!(span("[]a]+", "", b"x]a]"), Some((1, 4)));
        assert_eq!(span("[\\w.-]+", "", b"  a.b-c  "), Some((2, 7)));
        assert_eq!(span("[\\d-z]+", "", b"y5-z"), Some((1, 4)));
        assert_eq!(span("[[:digit:]-z]+", "", b"y5-z"), Some((1, 4)));
        assert_eq!(span("[%--]+", "", b"a%+-b"), Some((1, 4)));
        assert_eq!(span("[^\\W]+", "", b"!ab!"), Some((1, 3)));
        assert_eq!(span("[a&&b~~]+", "", b"x&~"), Some((1, 3)));
        assert_eq!(span("a(?#comment)b", "", b"ab"), Some((0, 2)));
        assert_eq!(span("a(?=b)", "", b"acab"), Some((2, 3)));
        assert_eq!(span("(?<!a)b", "", b"abcb"), Some((3, 4)));
        assert_eq!(span("(?>a|ab)c", "", b"abc"), None);
        assert_eq!(span("a++b", "", b"aab"), Some((0, 3)));
        assert_eq!(span("a\\Kb", "", b"ab"), Some((1, 2)));
        assert_eq!(span("(a)?(?(1)b|c)", "", b"c"), Some((0, 1)));
        assert_eq!(span("(?(?=a)ab|cd)", "", b"xcd"), Some((1, 3)));
        assert_eq!(span("(?(?=a)ab|cd)", "", b"ad"), None);
        assert_eq!(span("(?(?<!x)ab|cd)", "", b"xab ab"), Some((4, 6)));
        assert_eq!(span("(?(<n>)a|b)(?<n>x)", "", b"bx"), Some((0, 2)));
        assert_eq!(span("\\bfoo\\b", "", b"a foo."), Some((2, 5)));
        assert_eq!(span("(*FAIL)|z", "", b"z"), Some((0, 1)));
        assert!(
            compile("(", "")
                .unwrap_err()
                .starts_with("pcre_compile() failed: missing ) in \"(\"")
        );
        assert!(
            compile(")", "")
                .unwrap_err()
                .contains("unmatched parentheses")
        );
        assert!(compile("[a", "").is_err());
        assert!(compile("a\\", "").is_err());
        assert!(compile("(?|a)", "").is_err());
        assert!(compile("\\X", "").is_err());
        assert!(
            compile("[z-a]", "")
                .unwrap_err()
                .contains("range out of order")
        );
        assert!(compile("[[:nope:]]", "").is_err());
    }

    #[test]
    fn gmatch_and_gsub_follow_ngx_lua() {
        assert_eq!(gsub("b*", "", "abc", "-"), ("-a--c-".to_string(), 4));
        assert_eq!(gsub("x*", "", "ab", "-"), ("-a-b-".to_string(), 3));
        assert_eq!(sub1("x*", "", "abc", "-"), ("-abc".to_string(), 1));
        assert_eq!(sub1("(?=b)", "", "ab", "-"), ("a-b".to_string(), 1));
        assert_eq!(gsub("z", "", "abc", "-"), ("abc".to_string(), 0));
        let r = re("", "u");
        let starts: Vec<usize> = r
            .matches("éa".as_bytes())
            .map(|c| c.unwrap().whole.0)
            .collect();
        assert_eq!(starts, vec![0, 2, 3]);
        let r = re("", "");
        assert_eq!(r.matches("é".as_bytes()).count(), 3);
        let words: Vec<(usize, usize)> = re("\\w+", "")
            .matches(b"ab cd")
            .map(|c| c.unwrap().whole)
            .collect();
        assert_eq!(words, vec![(0, 2), (3, 5)]);
        let u = re(".", "u");
        let mut bad = u.matches(b"\xff");
        assert_eq!(bad.next(), Some(Err("pcre_exec() failed: -10".to_string())));
        assert_eq!(bad.next(), None);
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
        let r = re("\\d", "");
        let (out, n) = replace_with(&r, "a1b2", true, |c| {
            Ok::<_, ()>(vec![b'<', b'0' + c.whole.0 as u8, b'>'])
        })
        .unwrap();
        assert_eq!((out.as_slice(), n), (&b"a<1>b<3>"[..], 2));
        assert_eq!(
            replace_with(&r, "a1", true, |_| Err("boom")),
            Err(ReplaceError::Callback("boom"))
        );
        assert_eq!(
            replace_with(&re(".", "u"), b"\xff", true, |_| Ok::<_, ()>(vec![])),
            Err(ReplaceError::Regex("pcre_exec() failed: -10".to_string()))
        );
    }

    #[test]
    fn cache_reuse_and_bound() {
        let a = compile("cache-me-[0-9]+", "i").unwrap();
        let b = compile("cache-me-[0-9]+", "io").unwrap();
        let c = compile("cache-me-[0-9]+", "").unwrap();
        assert!(Arc::ptr_eq(&a, &b), "o and j do not change the key");
        assert!(!Arc::ptr_eq(&a, &c));
        let cache = RegexCache::new(2);
        let x = cache.compile("x", "").unwrap();
        assert!(Arc::ptr_eq(&x, &cache.compile("x", "").unwrap()));
        cache.compile("y", "").unwrap();
        cache.compile("z", "").unwrap();
        assert_eq!(cache.len(), 2);
        assert!(cache.compile("(", "").is_err());
        assert_eq!(cache.len(), 2);
        let off = RegexCache::new(0);
        off.compile("x", "").unwrap();
        assert!(off.is_empty());
    }

    #[test]
    fn patterns_that_compile_too_large_are_refused_quickly() {
        // Found by the ngx_re fuzz target (an out-of-memory: a pattern
        // calling itself twice, which fancy-regex expanded 2^19 times),
        // minimised by hand; each took seconds and hundreds of MB.
        for p in [
            &b"a|b(?0)(?0)"[..],
            b"(a|b(?1)(?1))",
            b"x(?R)?y(?R)?",
            b"(a(?&n))(?<n>b(?1))",
        ] {
            let e = Regex::new(p, Flags::default()).map(|_| ()).unwrap_err();
            assert!(e.contains("recursive subroutine calls"), "{e}");
        }
        // Found by the fuzz target too (out of memory), minimised by hand:
        // a huge repetition in a variable-length lookbehind.
        let e = Regex::new(b"(?<=x+L{33333333})", Flags::default())
            .map(|_| ())
            .unwrap_err();
        assert!(e.contains("pcre_compile() failed"), "{e}");
        let mut doubling = b"(a)".to_vec();
        for n in 1..=20 {
            doubling.extend_from_slice(format!("((?{n})(?{n}))").as_bytes());
        }
        let e = Regex::new(&doubling, Flags::default())
            .map(|_| ())
            .unwrap_err();
        assert!(e.contains("expand the pattern"), "{e}");
        // Found by the fuzz target (its RSS grew to 596 MB; one input took
        // 550 MB): a call to a group numbered past PCRE's 65535, which
        // saturated to 4294967295 and made fancy-regex allocate by it.
        for p in [
            &b"(?1888888888888888)"[..],
            b"(a)(?+70000)",
            b"(a)\\g{99999999999}",
        ] {
            let e = Regex::new(p, Flags::default()).map(|_| ()).unwrap_err();
            assert!(e.contains("number is too big"), "{e}");
        }
        let e = Regex::new(b"(a)(?65535)", Flags::default())
            .map(|_| ())
            .unwrap_err();
        assert!(e.contains("non-existent"), "{e}");
        // Calls that stay small are kept.
        let r = re("(?<d>\\d+)-(?&d)-(?1)", "");
        assert_eq!(
            r.find_at("on 12-345-6", 0).ok().flatten().map(|c| c.whole),
            Some((3, 11))
        );
    }

    #[test]
    fn backtracking_limit_is_an_exec_error() {
        let r = re("(a|a)*(\\1)*b", "");
        let subject = "a".repeat(40);
        assert_eq!(
            r.find_at(&subject, 0).unwrap_err(),
            "pcre_exec() failed: -8"
        );
    }
}

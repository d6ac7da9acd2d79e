//! PCRE pattern syntax → fancy-regex syntax, keeping group numbers.

use super::Flags;

/// A translated pattern.
pub(super) struct Translated {
    pub(super) pattern: String,
    pub(super) group_count: usize,
    pub(super) names: Vec<(String, usize)>,
    /// The pattern has an end-of-subject assertion whose PCRE meaning
    /// differs from `\z` on subjects ending with a newline.
    pub(super) needs_exact: bool,
}

const DIGIT: &str = "0-9";
const WORD: &str = "0-9A-Za-z_";
const SPACE: &str = "\\t\\n\\x0B\\x0C\\r\\x20";
const HSPACE: &str = "\\t\\x20\\xA0";
const HSPACE_U: &str =
    "\\t\\x20\\xA0\\x{1680}\\x{180E}\\x{2000}-\\x{200A}\\x{202F}\\x{205F}\\x{3000}";
const VSPACE: &str = "\\n\\x0B\\x0C\\r\\x85";
const VSPACE_U: &str = "\\n\\x0B\\x0C\\r\\x85\\x{2028}\\x{2029}";
const POSIX: [&str; 14] = [
    "alnum", "alpha", "ascii", "blank", "cntrl", "digit", "graph", "lower", "print", "punct",
    "space", "upper", "word", "xdigit",
];

/// ASCII that may stand for itself outside a class in fancy-regex.
fn raw_ok(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"_ !\"%',/:;<=>@`~&-".contains(&c)
}

fn is_space(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)
}

/// `{n}`, `{n,}` or `{n,m}` at the start of `s`: its length.
fn quantifier_len(s: &[u8]) -> Option<usize> {
    let digits = |from: usize| {
        s.iter()
            .skip(from)
            .take_while(|c| c.is_ascii_digit())
            .count()
    };
    let n = digits(1);
    if n == 0 {
        return None;
    }
    let mut i = 1 + n;
    if s.get(i) == Some(&b',') {
        i += 1 + digits(i + 1);
    }
    (s.get(i) == Some(&b'}')).then_some(i + 1)
}

struct Frame {
    x: bool,
    m: bool,
    wrapped: bool,
}

enum Atom {
    Char(u32),
    Set(String),
    Nothing,
}

struct Tr<'a> {
    p: &'a [u8],
    text: Option<&'a str>,
    i: usize,
    utf8: bool,
    exact: bool,
    x: bool,
    m: bool,
    dupnames: bool,
    /// Open groups: the `x` and `m` flags to restore at their `)`, and
    /// whether that `)` also closes a wrapper we opened.
    stack: Vec<Frame>,
    /// The next group opened is an assertion condition (see `condition`).
    wrap_next: bool,
    out: String,
    groups: usize,
    names: Vec<(String, usize)>,
    hint: Option<&'a [(String, usize)]>,
    unresolved: bool,
    needs_exact: bool,
}

/// The largest group number a reference may name (PCRE's limit).
const MAX_GROUP_NUMBER: usize = 65_535;

pub(super) fn translate(p: &[u8], flags: &Flags, exact: bool) -> Result<Translated, String> {
    let text = if flags.utf8 {
        Some(std::str::from_utf8(p).map_err(|_| "invalid UTF-8 string".to_string())?)
    } else {
        None
    };
    let first = pass(p, text, flags, exact, None)?;
    if !first.unresolved {
        return Ok(first.finish());
    }
    // Named references may point forward: a second pass resolves them.
    let names = first.names;
    Ok(pass(p, text, flags, exact, Some(&names))?.finish())
}

fn pass<'a>(
    p: &'a [u8],
    text: Option<&'a str>,
    flags: &Flags,
    exact: bool,
    hint: Option<&'a [(String, usize)]>,
) -> Result<Tr<'a>, String> {
    let mut t = Tr {
        p,
        text,
        i: 0,
        utf8: flags.utf8,
        exact,
        x: flags.extended,
        m: flags.multiline,
        dupnames: flags.dupnames,
        stack: Vec::new(),
        wrap_next: false,
        out: String::with_capacity(p.len() + 16),
        groups: 0,
        names: Vec::new(),
        hint,
        unresolved: false,
        needs_exact: false,
    };
    t.run()?;
    Ok(t)
}

impl Tr<'_> {
    fn finish(self) -> Translated {
        Translated {
            pattern: self.out,
            group_count: self.groups,
            names: self.names,
            needs_exact: self.needs_exact,
        }
    }

    fn peek(&self, k: usize) -> Option<u8> {
        self.p.get(self.i + k).copied()
    }

    fn eat(&mut self, s: &[u8]) -> bool {
        let hit = self.p.get(self.i..).is_some_and(|rest| rest.starts_with(s));
        if hit {
            self.i += s.len();
        }
        hit
    }

    /// One literal character (a byte without `u`) at `i`.
    fn take_char(&mut self) -> Result<u32, String> {
        match self.text {
            Some(text) => {
                let c = text
                    .get(self.i..)
                    .and_then(|r| r.chars().next())
                    .ok_or("invalid UTF-8 string")?;
                self.i += c.len_utf8();
                Ok(u32::from(c))
            }
            None => {
                let b = self.peek(0).ok_or("unexpected end of pattern")?;
                self.i += 1;
                Ok(u32::from(b))
            }
        }
    }

    fn check_char(&self, cp: u32) -> Result<(), String> {
        let max = if self.utf8 { 0x10_ffff } else { 0xff };
        if cp > max {
            return Err("character value in \\x{} or \\o{} is too large".into());
        }
        if self.utf8 && (0xd800..=0xdfff).contains(&cp) {
            return Err("disallowed Unicode code point (>= 0xd800 && <= 0xdfff)".into());
        }
        Ok(())
    }

    fn push_char(&mut self, cp: u32, in_class: bool) -> Result<(), String> {
        self.check_char(cp)?;
        match u8::try_from(cp) {
            Ok(b) if b.is_ascii_alphanumeric() || (!in_class && raw_ok(b)) => {
                self.out.push(char::from(b))
            }
            _ if self.utf8 && cp >= 0x80 => self
                .out
                .push(char::from_u32(cp).ok_or("invalid code point")?),
            _ => self.out.push_str(&format!("\\x{{{cp:X}}}")),
        }
        Ok(())
    }

    fn set(&mut self, frag: &str, negated: bool) {
        self.out.push_str(if negated { "[^" } else { "[" });
        self.out.push_str(frag);
        self.out.push(']');
    }

    fn hspace(&self) -> &'static str {
        if self.utf8 { HSPACE_U } else { HSPACE }
    }

    fn vspace(&self) -> &'static str {
        if self.utf8 { VSPACE_U } else { VSPACE }
    }

    fn eol(&mut self) {
        self.needs_exact = true;
        self.out
            .push_str(if self.exact { "(?=\\n?\\z)" } else { "\\z" });
    }

    fn run(&mut self) -> Result<(), String> {
        while let Some(c) = self.peek(0) {
            if self.x && is_space(c) {
                self.i += 1;
                continue;
            }
            if self.x && c == b'#' {
                while let Some(c) = self.peek(0) {
                    self.i += 1;
                    if c == b'\n' {
                        break;
                    }
                }
                continue;
            }
            match c {
                b'\\' => {
                    self.i += 1;
                    self.escape()?;
                }
                b'[' => {
                    self.i += 1;
                    self.class()?;
                }
                b'(' => {
                    self.i += 1;
                    self.group()?;
                }
                b')' => {
                    self.i += 1;
                    let frame = self.stack.pop().ok_or("unmatched parentheses")?;
                    (self.x, self.m) = (frame.x, frame.m);
                    self.out.push_str(if frame.wrapped { "))" } else { ")" });
                }
                b'^' => {
                    self.i += 1;
                    if self.m {
                        self.needs_exact = true;
                        self.out.push_str(if self.exact {
                            "(?:(?m:^)(?!\\z))"
                        } else {
                            "(?m:^)"
                        });
                    } else {
                        self.out.push_str("\\A");
                    }
                }
                b'$' => {
                    self.i += 1;
                    if self.m {
                        self.out.push_str("(?m:$)");
                    } else {
                        self.eol();
                    }
                }
                b'{' => match self.p.get(self.i..).and_then(quantifier_len) {
                    Some(n) => {
                        let q = self.p.get(self.i..self.i + n).unwrap_or_default();
                        self.out.push_str(&String::from_utf8_lossy(q));
                        self.i += n;
                    }
                    None => {
                        self.i += 1;
                        self.push_char(u32::from(c), false)?;
                    }
                },
                b'.' | b'|' | b'*' | b'+' | b'?' => {
                    self.i += 1;
                    self.out.push(char::from(c));
                }
                _ => {
                    let cp = self.take_char()?;
                    self.push_char(cp, false)?;
                }
            }
        }
        if self.stack.is_empty() {
            Ok(())
        } else {
            Err("missing )".into())
        }
    }

    fn digits(&mut self, radix: u32, max: usize) -> Option<u32> {
        let mut v: u32 = 0;
        let mut n = 0;
        while n < max {
            let Some(d) = self.peek(0).and_then(|c| char::from(c).to_digit(radix)) else {
                break;
            };
            v = v.saturating_mul(radix).saturating_add(d);
            self.i += 1;
            n += 1;
        }
        (n > 0).then_some(v)
    }

    /// `{digits}` after `\x` or `\o`.
    fn braced(&mut self, radix: u32) -> Result<u32, String> {
        let v = self
            .digits(radix, usize::MAX)
            .ok_or("missing digits in \\x{} or \\o{}")?;
        if !self.eat(b"}") {
            return Err("missing terminating } in \\x{} or \\o{}".into());
        }
        Ok(v)
    }

    /// The character of a `\` escape common to classes and the rest:
    /// `c` is the byte after the backslash, already consumed.
    fn char_escape(&mut self, c: u8) -> Result<Option<u32>, String> {
        Ok(Some(match c {
            b'a' => 0x07,
            b'e' => 0x1b,
            b'f' => 0x0c,
            b'n' => 0x0a,
            b'r' => 0x0d,
            b't' => 0x09,
            b'0' => self.digits(8, 2).unwrap_or(0),
            b'o' if self.eat(b"{") => self.braced(8)?,
            b'x' if self.eat(b"{") => self.braced(16)?,
            b'x' => self.digits(16, 2).unwrap_or(0),
            b'c' => {
                let x = self
                    .peek(0)
                    .filter(u8::is_ascii)
                    .ok_or("\\c at end of pattern")?;
                self.i += 1;
                u32::from(x.to_ascii_uppercase() ^ 0x40)
            }
            _ => return Ok(None),
        }))
    }

    fn escape(&mut self) -> Result<(), String> {
        let c = self.peek(0).ok_or("\\ at end of pattern")?;
        self.i += 1;
        if let Some(cp) = self.char_escape(c)? {
            return self.push_char(cp, false);
        }
        match c {
            b'Q' => {
                while self.peek(0).is_some() && !self.eat(b"\\E") {
                    let cp = self.take_char()?;
                    self.push_char(cp, false)?;
                }
            }
            b'E' => {}
            b'd' | b'D' => self.set(DIGIT, c == b'D'),
            b'w' | b'W' => self.set(WORD, c == b'W'),
            b's' | b'S' => self.set(SPACE, c == b'S'),
            b'h' | b'H' => self.set(self.hspace(), c == b'H'),
            b'v' | b'V' => self.set(self.vspace(), c == b'V'),
            b'R' => {
                let v = self.vspace();
                self.out.push_str("(?>\\r\\n|[");
                self.out.push_str(v);
                self.out.push_str("])");
            }
            b'N' => self.out.push_str("[^\\n]"),
            b'b' | b'B' | b'A' | b'z' | b'G' | b'K' => {
                self.out.push('\\');
                self.out.push(char::from(c));
            }
            b'Z' => self.eol(),
            b'1'..=b'9' => {
                self.i -= 1;
                let save = self.i;
                let n = self.digits(10, usize::MAX).unwrap_or(0);
                if n < 10 || n as usize <= self.groups {
                    self.backref(n as usize);
                } else if c <= b'7' {
                    self.i = save;
                    let v = self.digits(8, 3).unwrap_or(0);
                    self.push_char(v, false)?;
                } else {
                    self.i = save + 1;
                    self.push_char(u32::from(c), false)?;
                }
            }
            b'g' => self.g_ref()?,
            b'k' => {
                let name = self.delimited_name()?;
                let n = self.resolve(&name)?;
                self.backref(n);
            }
            b'p' | b'P' => {
                self.out.push('\\');
                self.out.push(char::from(c));
                self.copy_property()?;
            }
            b'C' | b'X' => return Err(format!("\\{} is not supported", char::from(c))),
            b'L' | b'l' | b'U' | b'u' => {
                return Err("PCRE does not support \\L, \\l, \\N{name}, \\U, or \\u".into());
            }
            c if c.is_ascii_alphanumeric() => {
                return Err("unrecognized character follows \\".into());
            }
            _ => {
                self.i -= 1;
                let cp = self.take_char()?;
                self.push_char(cp, false)?;
            }
        }
        Ok(())
    }

    /// The rest of `\p{…}` or `\pL`.
    fn copy_property(&mut self) -> Result<(), String> {
        if self.eat(b"{") {
            self.out.push('{');
            loop {
                let c = self.peek(0).ok_or("malformed \\P or \\p sequence")?;
                self.i += 1;
                self.out.push(char::from(c));
                if c == b'}' {
                    return Ok(());
                }
            }
        }
        let c = self
            .peek(0)
            .filter(u8::is_ascii_alphabetic)
            .ok_or("malformed \\P or \\p sequence")?;
        self.i += 1;
        self.out.push(char::from(c));
        Ok(())
    }

    fn backref(&mut self, n: usize) {
        self.out.push_str(&format!("\\k<{n}>"));
    }

    /// A group number, possibly relative (`-1` is the last opened
    /// group, `+1` the next one).
    fn number(&mut self) -> Result<usize, String> {
        let sign = match self.peek(0) {
            Some(s @ (b'-' | b'+')) => {
                self.i += 1;
                Some(s)
            }
            _ => None,
        };
        let v = self
            .digits(10, usize::MAX)
            .ok_or("a numbered reference must not be zero")? as usize;
        // PCRE's limit; fancy-regex's cost grows with the number named (a
        // call to group 4294967295 took seconds and 1.5 GB to refuse).
        if v > MAX_GROUP_NUMBER {
            return Err("number is too big".into());
        }
        let n = match sign {
            Some(b'-') => (self.groups + 1).checked_sub(v).filter(|&n| n > 0 && v > 0),
            Some(_) => self.groups.checked_add(v).filter(|_| v > 0),
            None => Some(v),
        };
        n.ok_or_else(|| "reference to non-existent subpattern".into())
    }

    fn g_ref(&mut self) -> Result<(), String> {
        match self.peek(0) {
            Some(b'{') => {
                self.i += 1;
                let n = if matches!(self.peek(0), Some(b'-' | b'+' | b'0'..=b'9')) {
                    self.number()?
                } else {
                    let name = self.name_until(b'}')?;
                    self.i -= 1;
                    self.resolve(&name)?
                };
                if !self.eat(b"}") {
                    return Err("\\g is not followed by a braced, angle-bracketed, or quoted name/number or by a plain number".into());
                }
                self.backref(n);
            }
            Some(open @ (b'<' | b'\'')) => {
                self.i += 1;
                let close = if open == b'<' { b'>' } else { b'\'' };
                let n = if matches!(self.peek(0), Some(b'-' | b'+' | b'0'..=b'9')) {
                    self.number()?
                } else {
                    let name = self.name_until(close)?;
                    self.i -= 1;
                    self.resolve(&name)?
                };
                if !self.eat(&[close]) {
                    return Err("syntax error in subpattern name (missing terminator?)".into());
                }
                self.out.push_str(&format!("\\g<{n}>"));
            }
            _ => {
                let n = self.number()?;
                self.backref(n);
            }
        }
        Ok(())
    }

    /// A name up to and including `close`.
    fn name_until(&mut self, close: u8) -> Result<String, String> {
        let start = self.i;
        while self
            .peek(0)
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == b'_')
        {
            self.i += 1;
        }
        let name =
            String::from_utf8_lossy(self.p.get(start..self.i).unwrap_or_default()).into_owned();
        if name.is_empty() || name.as_bytes()[0].is_ascii_digit() {
            return Err("group name must start with a non-digit".into());
        }
        if name.len() > 32 {
            return Err("subpattern name is too long (maximum 32 characters)".into());
        }
        if !self.eat(&[close]) {
            return Err("syntax error in subpattern name (missing terminator?)".into());
        }
        Ok(name)
    }

    /// `<name>`, `'name'` or `{name}` after `\k`.
    fn delimited_name(&mut self) -> Result<String, String> {
        let close = match self.peek(0) {
            Some(b'<') => b'>',
            Some(b'\'') => b'\'',
            Some(b'{') => b'}',
            _ => {
                return Err(
                    "\\k is not followed by a braced, angle-bracketed, or quoted name".into(),
                );
            }
        };
        self.i += 1;
        self.name_until(close)
    }

    fn resolve(&mut self, name: &str) -> Result<usize, String> {
        let table = self.hint.unwrap_or(&self.names);
        match table.iter().find(|(n, _)| n == name) {
            Some(&(_, n)) => Ok(n),
            None if self.hint.is_none() => {
                self.unresolved = true;
                Ok(1)
            }
            None => Err("reference to non-existent subpattern".into()),
        }
    }

    fn open(&mut self, text: &str) {
        self.stack.push(Frame {
            x: self.x,
            m: self.m,
            wrapped: std::mem::take(&mut self.wrap_next),
        });
        self.out.push_str(text);
    }

    fn capture(&mut self, name: Option<String>) -> Result<(), String> {
        self.groups += 1;
        if let Some(name) = name {
            if !self.dupnames && self.names.iter().any(|(n, _)| *n == name) {
                return Err("two named subpatterns have the same name".into());
            }
            self.names.push((name, self.groups));
        }
        self.open("(");
        Ok(())
    }

    fn group(&mut self) -> Result<(), String> {
        if self.peek(0) == Some(b'*') && self.peek(1).is_some_and(|c| c.is_ascii_uppercase()) {
            let start = self.i + 1;
            while self.peek(0).is_some_and(|c| c != b')') {
                self.i += 1;
            }
            let verb =
                String::from_utf8_lossy(self.p.get(start..self.i).unwrap_or_default()).into_owned();
            if !self.eat(b")") {
                return Err("(*VERB) not terminated".into());
            }
            return match verb.as_str() {
                "FAIL" | "F" => {
                    self.out.push_str("(*FAIL)");
                    Ok(())
                }
                _ => Err(format!("(*{verb}) is not supported")),
            };
        }
        if !self.eat(b"?") {
            return self.capture(None);
        }
        let c = self
            .peek(0)
            .ok_or("unrecognized character after (? or (?-")?;
        match c {
            b'#' => {
                while let Some(c) = self.peek(0) {
                    self.i += 1;
                    if c == b')' {
                        return Ok(());
                    }
                }
                Err("missing ) after comment".into())
            }
            b':' | b'=' | b'!' | b'>' => {
                self.i += 1;
                self.open(&format!("(?{}", char::from(c)));
                Ok(())
            }
            b'<' if matches!(self.peek(1), Some(b'=' | b'!')) => {
                let text = if self.peek(1) == Some(b'=') {
                    "(?<="
                } else {
                    "(?<!"
                };
                self.i += 2;
                self.open(text);
                Ok(())
            }
            b'<' | b'\'' => {
                self.i += 1;
                let name = self.name_until(if c == b'<' { b'>' } else { b'\'' })?;
                self.capture(Some(name))
            }
            b'P' => {
                self.i += 1;
                match self.peek(0) {
                    Some(b'<') => {
                        self.i += 1;
                        let name = self.name_until(b'>')?;
                        self.capture(Some(name))
                    }
                    Some(b'=') => {
                        self.i += 1;
                        let name = self.name_until(b')')?;
                        let n = self.resolve(&name)?;
                        self.backref(n);
                        Ok(())
                    }
                    Some(b'>') => {
                        self.i += 1;
                        let name = self.name_until(b')')?;
                        let n = self.resolve(&name)?;
                        self.out.push_str(&format!("\\g<{n}>"));
                        Ok(())
                    }
                    _ => Err("unrecognized character after (?P".into()),
                }
            }
            b'&' => {
                self.i += 1;
                let name = self.name_until(b')')?;
                let n = self.resolve(&name)?;
                self.out.push_str(&format!("\\g<{n}>"));
                Ok(())
            }
            b'R' | b'0'..=b'9' | b'+' | b'-'
                if c != b'-' || self.peek(1).is_some_and(|d| d.is_ascii_digit()) =>
            {
                if c == b'R' {
                    self.i += 1;
                    if !self.eat(b")") {
                        return Err("(?R or (?[+-]digits must be followed by )".into());
                    }
                    self.out.push_str("\\g<0>");
                    return Ok(());
                }
                let n = self.number()?;
                if !self.eat(b")") {
                    return Err("(?R or (?[+-]digits must be followed by )".into());
                }
                self.out.push_str(&format!("\\g<{n}>"));
                Ok(())
            }
            b'(' => {
                self.i += 1;
                self.condition()
            }
            b'|' => Err("branch reset groups (?| are not supported".into()),
            _ => self.options(),
        }
    }

    /// After `(?(`: the condition of a conditional group.
    fn condition(&mut self) -> Result<(), String> {
        let n = match self.peek(0) {
            Some(b'?') => {
                // An assertion condition, `(?(?=a)…)`: fancy-regex takes
                // a pattern as the condition, so the assertion group that
                // follows is wrapped: `(?((?=a))…)`.
                self.i -= 1;
                self.open("(?(");
                self.wrap_next = true;
                return Ok(());
            }
            Some(b'0'..=b'9' | b'+' | b'-') => self.number()?,
            Some(b'<') => {
                self.i += 1;
                let name = self.name_until(b'>')?;
                self.resolve(&name)?
            }
            Some(b'\'') => {
                self.i += 1;
                let name = self.name_until(b'\'')?;
                self.resolve(&name)?
            }
            _ if self.eat(b"DEFINE)") => {
                self.open("(?(DEFINE)");
                return Ok(());
            }
            Some(b'R') => return Err("recursion conditions are not supported".into()),
            _ => {
                let name = self.name_until(b')')?;
                self.i -= 1;
                self.resolve(&name)?
            }
        };
        if !self.eat(b")") {
            return Err("malformed number or name after (?(".into());
        }
        self.open(&format!("(?({n})"));
        Ok(())
    }

    /// `(?imsxU-imsxU)` or `(?imsxU-imsxU:`.
    fn options(&mut self) -> Result<(), String> {
        let (mut on, mut off) = (String::new(), String::new());
        let (mut x, mut m) = (self.x, self.m);
        let mut neg = false;
        loop {
            let c = self.peek(0).ok_or("missing )")?;
            self.i += 1;
            match c {
                b'i' | b's' | b'U' => (if neg { &mut off } else { &mut on }).push(char::from(c)),
                b'm' => m = !neg,
                b'x' => x = !neg,
                b'J' => self.dupnames |= !neg,
                b'X' => {}
                b'-' if !neg => neg = true,
                b')' | b':' => {
                    let mut text = String::from("(?");
                    text.push_str(&on);
                    if !off.is_empty() {
                        text.push('-');
                        text.push_str(&off);
                    }
                    if c == b':' {
                        text.push(':');
                        self.open(&text);
                    } else if !(on.is_empty() && off.is_empty()) {
                        text.push(')');
                        self.out.push_str(&text);
                    }
                    (self.x, self.m) = (x, m);
                    return Ok(());
                }
                _ => return Err("unrecognized character after (? or (?-".into()),
            }
        }
    }

    fn class(&mut self) -> Result<(), String> {
        self.out.push('[');
        if self.eat(b"^") {
            self.out.push('^');
        }
        let mut first = true;
        let mut quoted = false;
        loop {
            let c = self
                .peek(0)
                .ok_or("missing terminating ] for character class")?;
            if quoted {
                if self.eat(b"\\E") {
                    quoted = false;
                } else {
                    let cp = self.take_char()?;
                    self.push_char(cp, true)?;
                }
                first = false;
                continue;
            }
            if c == b']' && !first {
                self.i += 1;
                self.out.push(']');
                return Ok(());
            }
            first = false;
            if c == b'['
                && matches!(self.peek(1), Some(b':' | b'.' | b'='))
                && self.posix_class()?
            {
                self.literal_hyphen()?;
                continue;
            }
            if self.eat(b"\\Q") {
                quoted = true;
                continue;
            }
            match self.class_atom()? {
                Atom::Nothing => {}
                Atom::Set(s) => {
                    self.out.push_str(&s);
                    self.literal_hyphen()?;
                }
                Atom::Char(lo) => {
                    let range = self.peek(0) == Some(b'-')
                        && self.peek(1).is_some_and(|c| c != b']')
                        && !(self.peek(1) == Some(b'[') && self.peek(2) == Some(b':'));
                    if !range {
                        self.push_char(lo, true)?;
                        continue;
                    }
                    self.i += 1;
                    match self.class_atom()? {
                        Atom::Char(hi) => {
                            if hi < lo {
                                return Err("range out of order in character class".into());
                            }
                            self.push_char(lo, true)?;
                            self.out.push('-');
                            self.push_char(hi, true)?;
                        }
                        Atom::Set(s) => {
                            self.push_char(lo, true)?;
                            self.push_char(u32::from(b'-'), true)?;
                            self.out.push_str(&s);
                        }
                        Atom::Nothing => {
                            self.push_char(lo, true)?;
                            self.push_char(u32::from(b'-'), true)?;
                        }
                    }
                }
            }
        }
    }

    /// A `-` right after a class escape or POSIX class is a literal,
    /// not a range (PCRE, like Perl).
    fn literal_hyphen(&mut self) -> Result<(), String> {
        if self.peek(0) == Some(b'-') && self.peek(1) != Some(b']') {
            self.i += 1;
            self.push_char(u32::from(b'-'), true)?;
        }
        Ok(())
    }

    /// `[:name:]` inside a class; `false` when `[` is just a literal.
    fn posix_class(&mut self) -> Result<bool, String> {
        let rest = self.p.get(self.i..).unwrap_or_default();
        let kind = rest.get(1).copied().unwrap_or(b':');
        let Some(len) = rest
            .windows(2)
            .skip(2)
            .position(|w| w[0] == kind && w[1] == b']')
        else {
            return Ok(false);
        };
        if kind != b':' {
            return Err("POSIX collating elements are not supported".into());
        }
        let body = rest.get(2..2 + len).unwrap_or_default();
        let (neg, name) = match body.split_first() {
            Some((b'^', name)) => (true, name),
            _ => (false, body),
        };
        let name = std::str::from_utf8(name).unwrap_or("");
        if !POSIX.contains(&name) {
            return Err("unknown POSIX class name".into());
        }
        self.out
            .push_str(&format!("[:{}{name}:]", if neg { "^" } else { "" }));
        self.i += 2 + len + 2;
        Ok(true)
    }

    fn class_atom(&mut self) -> Result<Atom, String> {
        if !self.eat(b"\\") {
            return Ok(Atom::Char(self.take_char()?));
        }
        let c = self.peek(0).ok_or("\\ at end of pattern")?;
        self.i += 1;
        if let Some(cp) = self.char_escape(c)? {
            return Ok(Atom::Char(cp));
        }
        let frag = |frag: &str, neg: bool| {
            if neg {
                Atom::Set(format!("[^{frag}]"))
            } else {
                Atom::Set(frag.to_string())
            }
        };
        Ok(match c {
            b'd' | b'D' => frag(DIGIT, c == b'D'),
            b'w' | b'W' => frag(WORD, c == b'W'),
            b's' | b'S' => frag(SPACE, c == b'S'),
            b'h' | b'H' => frag(self.hspace(), c == b'H'),
            b'v' | b'V' => frag(self.vspace(), c == b'V'),
            b'b' => Atom::Char(0x08),
            b'1'..=b'7' => {
                self.i -= 1;
                Atom::Char(self.digits(8, 3).unwrap_or(0))
            }
            b'8' | b'9' => Atom::Char(u32::from(c)),
            b'E' => Atom::Nothing,
            b'p' | b'P' => {
                let mark = self.out.len();
                self.out.push('\\');
                self.out.push(char::from(c));
                self.copy_property()?;
                Atom::Set(self.out.split_off(mark))
            }
            c if c.is_ascii_alphanumeric() => {
                return Err("escape sequence is invalid in character class".into());
            }
            _ => {
                self.i -= 1;
                Atom::Char(self.take_char()?)
            }
        })
    }
}

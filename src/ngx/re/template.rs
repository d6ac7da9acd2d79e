//! `ngx.re.sub` and `gsub`: replacement templates (`$0`, `$1`, `${1}`,
//! `$$`, compiled as ngx_lua's `ngx_http_lua_compile_complex_value` does)
//! and the replacing loop, with a template or with a callback.

use super::{Captures, Engine, Regex};

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
    engine: &Engine,
    re: &Regex,
    subject: impl AsRef<[u8]>,
    global: bool,
    mut replace: impl FnMut(&Captures) -> Result<Vec<u8>, E>,
) -> Result<(Vec<u8>, usize), ReplaceError<E>> {
    let subject = subject.as_ref();
    let mut out = Vec::with_capacity(subject.len());
    let mut copied = 0;
    let mut count = 0;
    for caps in engine.matches(re, subject) {
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
    engine: &Engine,
    re: &Regex,
    subject: impl AsRef<[u8]>,
    template: &Template,
    global: bool,
) -> Result<(Vec<u8>, usize), String> {
    let subject = subject.as_ref();
    replace_with(engine, re, subject, global, |caps| {
        let mut piece = Vec::new();
        template.expand_into(caps, subject, &mut piece);
        Ok::<_, ()>(piece)
    })
    .map_err(|e| match e {
        ReplaceError::Regex(msg) => msg,
        ReplaceError::Callback(()) => TEMPLATE_ERROR.to_string(),
    })
}

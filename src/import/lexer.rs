//! nginx's configuration syntax as tokens: words (bare or quoted, with
//! nginx's backslash escapes), `{`, `}`, `;`, and the raw Lua code of a
//! `*_by_lua_block { ... }`.
//!
//! It follows `ngx_conf_read_token`: `#` starts a comment only where a
//! word could start, a quoted string must be followed by a space, `;`,
//! `{` or `}`, and `${name}` inside a bare word is a variable, not a
//! block. After a directive named `*_by_lua_block` the next `{` opens Lua
//! code, read as ngx_lua reads it (strings, long brackets and comments
//! may hold braces) up to the matching `}`. It knows nothing of what the
//! directives mean.

use std::fmt;

/// One token and the line (1-based) it starts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    /// What was read.
    pub kind: Tok,
    /// The line it starts on.
    pub line: usize,
}

/// What a token is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tok {
    /// A word, unescaped; `quoted` when it was written in quotes (an empty
    /// quoted word is still a word).
    Word {
        /// The text with nginx's escapes (`\"`, `\'`, `\\`, `\t`, `\r`, `\n`) applied.
        text: String,
        /// Whether it was written in quotes.
        quoted: bool,
    },
    /// `{`.
    Open,
    /// `}`.
    Close,
    /// `;`.
    Semi,
    /// The code between the braces of a `*_by_lua_block`, as written.
    Lua(String),
}

/// A syntax error at a line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LexError {
    /// The line (1-based).
    pub line: usize,
    /// What is wrong, in plain words.
    pub message: String,
}

impl fmt::Display for LexError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.line, self.message)
    }
}

/// Splits a configuration file into tokens.
pub fn tokenize(text: &str) -> Result<Vec<Token>, LexError> {
    let mut lexer = Lexer {
        src: text.as_bytes(),
        text,
        pos: 0,
        line: 1,
    };
    let mut out = Vec::new();
    // Whether the next word starts a directive, and whether the directive
    // being read is a `*_by_lua_block` whose `{` opens Lua code.
    let mut at_start = true;
    let mut lua_block = false;
    while let Some(c) = lexer.skip_space() {
        let line = lexer.line;
        let kind = match c {
            b'#' => {
                lexer.skip_comment();
                continue;
            }
            b'{' if lua_block => {
                lexer.pos += 1;
                Tok::Lua(lexer.lua_block(line)?)
            }
            b'{' => {
                lexer.pos += 1;
                Tok::Open
            }
            b'}' => {
                lexer.pos += 1;
                Tok::Close
            }
            b';' => {
                lexer.pos += 1;
                Tok::Semi
            }
            b'"' | b'\'' => lexer.quoted(c)?,
            _ => lexer.bare(),
        };
        match &kind {
            Tok::Word { text, .. } if at_start => {
                lua_block = text.ends_with("_by_lua_block");
                at_start = false;
            }
            Tok::Word { .. } => {}
            _ => {
                at_start = true;
                lua_block = false;
            }
        }
        out.push(Token { kind, line });
    }
    Ok(out)
}

struct Lexer<'a> {
    src: &'a [u8],
    text: &'a str,
    pos: usize,
    line: usize,
}

impl Lexer<'_> {
    fn peek(&self) -> Option<u8> {
        self.src.get(self.pos).copied()
    }

    fn at(&self, offset: usize) -> Option<u8> {
        self.src.get(self.pos + offset).copied()
    }

    /// Advances one byte, counting lines.
    fn bump(&mut self) -> Option<u8> {
        let c = self.peek()?;
        self.pos += 1;
        if c == b'\n' {
            self.line += 1;
        }
        Some(c)
    }

    /// Skips whitespace; the next byte, if any.
    fn skip_space(&mut self) -> Option<u8> {
        while let Some(c) = self.peek() {
            if !c.is_ascii_whitespace() {
                return Some(c);
            }
            self.bump();
        }
        None
    }

    fn skip_comment(&mut self) {
        while let Some(c) = self.peek() {
            if c == b'\n' {
                return;
            }
            self.pos += 1;
        }
    }

    /// A quoted word; the quote is at `pos`.
    fn quoted(&mut self, quote: u8) -> Result<Tok, LexError> {
        let start_line = self.line;
        self.pos += 1;
        let start = self.pos;
        loop {
            match self.bump() {
                None => {
                    return Err(LexError {
                        line: start_line,
                        message: format!("a string opened with {} is never closed", quote as char),
                    });
                }
                Some(b'\\') => {
                    self.bump();
                }
                Some(c) if c == quote => break,
                Some(_) => {}
            }
        }
        let raw = &self.text[start..self.pos - 1];
        match self.peek() {
            None | Some(b';' | b'{' | b'}') => {}
            Some(c) if c.is_ascii_whitespace() => {}
            Some(c) => {
                return Err(LexError {
                    line: self.line,
                    message: format!(
                        "unexpected \"{}\" right after a quoted string (nginx wants a space, `;` or `{{` there)",
                        c as char
                    ),
                });
            }
        }
        Ok(Tok::Word {
            text: unescape(raw),
            quoted: true,
        })
    }

    /// A bare word: up to whitespace, `;`, `{` or `}` (a `{` right after
    /// `$` opens a `${variable}` that belongs to the word).
    fn bare(&mut self) -> Tok {
        let start = self.pos;
        while let Some(c) = self.peek() {
            match c {
                b'\\' => {
                    self.pos += 1;
                    if self.peek().is_some() {
                        self.bump();
                    }
                    continue;
                }
                b'{' if self.pos > start && self.src[self.pos - 1] == b'$' => {
                    while let Some(c) = self.peek() {
                        self.pos += 1;
                        if c == b'}' {
                            break;
                        }
                    }
                    continue;
                }
                b';' | b'{' | b'}' => break,
                c if c.is_ascii_whitespace() => break,
                _ => self.pos += 1,
            }
        }
        Tok::Word {
            text: unescape(&self.text[start..self.pos]),
            quoted: false,
        }
    }

    /// Lua code after a `*_by_lua_block`'s `{` up to its matching `}`.
    fn lua_block(&mut self, open_line: usize) -> Result<String, LexError> {
        let start = self.pos;
        let mut depth = 0usize;
        loop {
            let Some(c) = self.peek() else {
                return Err(LexError {
                    line: open_line,
                    message: "the Lua block opened here is never closed".to_owned(),
                });
            };
            match c {
                b'{' => {
                    depth += 1;
                    self.pos += 1;
                }
                b'}' if depth == 0 => {
                    let code = self.text[start..self.pos].to_owned();
                    self.pos += 1;
                    return Ok(code);
                }
                b'}' => {
                    depth -= 1;
                    self.pos += 1;
                }
                b'"' | b'\'' => self.lua_string(c)?,
                b'[' if self.long_bracket().is_some() => {
                    let level = self.long_bracket().unwrap_or(0);
                    self.lua_long(level)?;
                }
                b'-' if self.at(1) == Some(b'-') => {
                    self.pos += 2;
                    match self.long_bracket() {
                        Some(level) => self.lua_long(level)?,
                        None => self.skip_comment(),
                    }
                }
                _ => {
                    self.bump();
                }
            }
        }
    }

    /// A Lua short string; the quote is at `pos`.
    fn lua_string(&mut self, quote: u8) -> Result<(), LexError> {
        let line = self.line;
        self.pos += 1;
        loop {
            match self.bump() {
                None => break,
                Some(b'\\') => {
                    self.bump();
                }
                Some(b'\n') => break,
                Some(c) if c == quote => return Ok(()),
                Some(_) => {}
            }
        }
        Err(LexError {
            line,
            message: "a Lua string in this Lua block is never closed".to_owned(),
        })
    }

    /// The level of a long bracket `[==[` at `pos`, if one opens there.
    fn long_bracket(&self) -> Option<usize> {
        if self.peek() != Some(b'[') {
            return None;
        }
        let mut level = 0;
        while self.at(1 + level) == Some(b'=') {
            level += 1;
        }
        (self.at(1 + level) == Some(b'[')).then_some(level)
    }

    /// Skips a long string or comment of `level` from its opening bracket.
    fn lua_long(&mut self, level: usize) -> Result<(), LexError> {
        let line = self.line;
        self.pos += level + 2;
        let close: Vec<u8> = std::iter::once(b']')
            .chain(std::iter::repeat_n(b'=', level))
            .chain(std::iter::once(b']'))
            .collect();
        while self.peek().is_some() {
            if self.src[self.pos..].starts_with(&close) {
                self.pos += close.len();
                return Ok(());
            }
            self.bump();
        }
        Err(LexError {
            line,
            message: "a Lua long string or comment ([[ ... ]]) in this Lua block is never closed"
                .to_owned(),
        })
    }
}

/// nginx's escapes in a word: `\"`, `\'` and `\\` stand for the character,
/// `\t`, `\r` and `\n` for the control; any other backslash stays.
fn unescape(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.peek() {
            Some(&q @ ('"' | '\'' | '\\')) => {
                out.push(q);
                chars.next();
            }
            Some('t') => {
                out.push('\t');
                chars.next();
            }
            Some('r') => {
                out.push('\r');
                chars.next();
            }
            Some('n') => {
                out.push('\n');
                chars.next();
            }
            _ => out.push('\\'),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(text: &str) -> Vec<String> {
        tokenize(text)
            .unwrap()
            .into_iter()
            .map(|t| match t.kind {
                Tok::Word { text, quoted: true } => format!("q:{text}"),
                Tok::Word { text, .. } => text,
                Tok::Open => "{".into(),
                Tok::Close => "}".into(),
                Tok::Semi => ";".into(),
                Tok::Lua(code) => format!("lua:{code}"),
            })
            .collect()
    }

    #[test]
    fn words_blocks_and_comments() {
        let text = "http {\n  # a comment; with { braces }\n  server_tokens off; # trailing\n}\n";
        assert_eq!(words(text), ["http", "{", "server_tokens", "off", ";", "}"]);
        let lines: Vec<usize> = tokenize(text).unwrap().iter().map(|t| t.line).collect();
        assert_eq!(lines, [1, 1, 3, 3, 3, 4]);
    }

    #[test]
    fn a_hash_inside_a_word_is_not_a_comment() {
        assert_eq!(words("return 200 a#b;"), ["return", "200", "a#b", ";"]);
    }

    #[test]
    fn quotes_and_escapes() {
        let text = r#"add_header X "a \"b\" c;{}" 'it\'s' "tab\there\n" "back\\slash" "\d";"#;
        assert_eq!(
            words(text),
            [
                "add_header",
                "X",
                "q:a \"b\" c;{}",
                "q:it's",
                "q:tab\there\n",
                "q:back\\slash",
                "q:\\d",
                ";"
            ]
        );
        assert_eq!(words("x \"\";"), ["x", "q:", ";"]);
    }

    #[test]
    fn bare_escapes_and_variables() {
        assert_eq!(
            words(r"rewrite ^/a\;b ${host}x/$1;"),
            // nginx keeps a backslash it does not know (PCRE reads `\;` as `;`).
            ["rewrite", "^/a\\;b", "${host}x/$1", ";"]
        );
        // A regex quantifier in braces needs quotes in nginx too; bare, the
        // `{` opens a block (as nginx reads it).
        assert_eq!(
            words("location ~ ^/a{2}"),
            ["location", "~", "^/a", "{", "2", "}"]
        );
    }

    #[test]
    fn text_after_a_closing_quote_is_an_error() {
        let e = tokenize("x \"a\"b;").unwrap_err();
        assert_eq!(e.line, 1);
        assert!(e.message.contains("right after a quoted string"), "{e}");
        let e = tokenize("\n\nx \"never closed;\n").unwrap_err();
        assert_eq!(e.line, 3);
    }

    #[test]
    fn lua_blocks_keep_braces_in_strings_and_comments() {
        let text = r#"content_by_lua_block {
    local t = { a = "}", b = '{' }   -- a } in a comment
    --[==[ long } comment ]==]
    local s = [[ } ]] .. [=[ ]] } ]=]
    if t then ngx.say("ok \" }") end
}
location / { }"#;
        let toks = tokenize(text).unwrap();
        let Tok::Lua(code) = &toks[1].kind else {
            panic!("wanted Lua, got {:?}", toks[1]);
        };
        assert!(code.contains(r#"ngx.say("ok \" }")"#), "{code}");
        assert!(code.trim_end().ends_with("end"), "{code}");
        assert_eq!(toks[1].line, 1);
        assert_eq!(
            toks[2..].iter().map(|t| &t.kind).collect::<Vec<_>>(),
            [
                &Tok::Word {
                    text: "location".into(),
                    quoted: false
                },
                &Tok::Word {
                    text: "/".into(),
                    quoted: false
                },
                &Tok::Open,
                &Tok::Close
            ]
        );
        assert_eq!(toks[2].line, 7);
    }

    #[test]
    fn nested_lua_braces_and_unclosed_blocks() {
        let toks = tokenize("access_by_lua_block { local t = { {1}, {2} } }").unwrap();
        assert_eq!(toks[1].kind, Tok::Lua(" local t = { {1}, {2} } ".into()));
        let e = tokenize("init_by_lua_block {\n local s = \"x }\n").unwrap_err();
        assert!(e.message.contains("never closed"), "{e}");
        let e = tokenize("init_by_lua_block {\n local t = {}\n").unwrap_err();
        assert_eq!(e.line, 1);
    }

    #[test]
    fn only_the_directive_name_makes_a_lua_block() {
        // The word is an argument here, so `{` opens an ordinary block.
        assert_eq!(
            words("set $x content_by_lua_block { y; }"),
            ["set", "$x", "content_by_lua_block", "{", "y", ";", "}"]
        );
    }
}

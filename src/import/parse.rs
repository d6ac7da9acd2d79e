//! Tokens of one file → a tree of directives, each with its file and line.
//!
//! A directive is a name, its arguments, and then `;`, a `{ block }`, or
//! (for `*_by_lua_block`) Lua code. `include` is left in the tree as
//! written: `source` expands it, since only it knows where files are.

use std::fmt;
use std::sync::Arc;

use super::lexer::{Tok, Token};

/// Where a directive was written: file and line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pos {
    /// The file as named on the command line, by an include, or by an
    /// `nginx -T` marker.
    pub file: Arc<str>,
    /// 1-based line.
    pub line: usize,
}

impl fmt::Display for Pos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file, self.line)
    }
}

/// One argument of a directive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Arg {
    /// Unescaped text.
    pub text: String,
    /// Written in quotes.
    pub quoted: bool,
}

/// One directive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Directive {
    /// The name (`proxy_pass`).
    pub name: String,
    /// The arguments, in order.
    pub args: Vec<Arg>,
    /// The directives of its `{ }` block, if it has one.
    pub block: Option<Vec<Directive>>,
    /// The code of a `*_by_lua_block`.
    pub lua: Option<String>,
    /// Where it starts.
    pub pos: Pos,
}

impl Directive {
    /// Argument `i`'s text, if present.
    pub fn arg(&self, i: usize) -> Option<&str> {
        self.args.get(i).map(|a| a.text.as_str())
    }

    /// The directive as a short line for reports: name and arguments,
    /// shortened, with `{...}` for a block.
    pub fn summary(&self) -> String {
        let mut s = self.name.clone();
        for a in &self.args {
            s.push(' ');
            if a.quoted || a.text.is_empty() || a.text.contains(char::is_whitespace) {
                s.push('"');
                s.push_str(&a.text.replace('\n', "\\n"));
                s.push('"');
            } else {
                s.push_str(&a.text);
            }
        }
        if s.chars().count() > 70 {
            s = s.chars().take(67).collect::<String>() + "...";
        }
        if self.block.is_some() || self.lua.is_some() {
            s.push_str(" {...}");
        }
        s
    }

    /// The block's directives (empty without a block).
    pub fn children(&self) -> &[Directive] {
        self.block.as_deref().unwrap_or(&[])
    }
}

/// A syntax error in one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// Where.
    pub pos: Pos,
    /// What, in plain words.
    pub message: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.pos, self.message)
    }
}

/// Builds the directive tree of one file's tokens.
pub fn parse(file: &Arc<str>, tokens: Vec<Token>) -> Result<Vec<Directive>, ParseError> {
    let mut parser = Parser {
        file: file.clone(),
        tokens: tokens.into_iter().peekable(),
        last_line: 1,
    };
    let out = parser.block(None)?;
    Ok(out)
}

struct Parser {
    file: Arc<str>,
    tokens: std::iter::Peekable<std::vec::IntoIter<Token>>,
    last_line: usize,
}

impl Parser {
    fn pos(&self, line: usize) -> Pos {
        Pos {
            file: self.file.clone(),
            line,
        }
    }

    fn err(&self, line: usize, message: impl Into<String>) -> ParseError {
        ParseError {
            pos: self.pos(line),
            message: message.into(),
        }
    }

    /// Directives up to the `}` closing a block opened at `opened` (or the
    /// end of the file at the top level).
    fn block(&mut self, opened: Option<usize>) -> Result<Vec<Directive>, ParseError> {
        let mut out = Vec::new();
        loop {
            let Some(tok) = self.tokens.next() else {
                return match opened {
                    None => Ok(out),
                    Some(line) => Err(self.err(
                        line,
                        "the block opened here is never closed (unexpected end of file)",
                    )),
                };
            };
            self.last_line = tok.line;
            let (name, line) = match tok.kind {
                Tok::Close if opened.is_some() => return Ok(out),
                Tok::Close => return Err(self.err(tok.line, "unexpected \"}\"")),
                Tok::Semi => return Err(self.err(tok.line, "unexpected \";\"")),
                Tok::Open => return Err(self.err(tok.line, "unexpected \"{\"")),
                Tok::Lua(_) => return Err(self.err(tok.line, "unexpected Lua block")),
                Tok::Word { text, .. } => (text, tok.line),
            };
            out.push(self.directive(name, line)?);
        }
    }

    /// The rest of a directive whose name was just read.
    fn directive(&mut self, name: String, line: usize) -> Result<Directive, ParseError> {
        let mut args = Vec::new();
        loop {
            let Some(tok) = self.tokens.next() else {
                let message = format!("directive \"{name}\" has no closing \";\"");
                return Err(self.err(line, message));
            };
            self.last_line = tok.line;
            let (block, lua) = match tok.kind {
                Tok::Word { text, quoted } => {
                    args.push(Arg { text, quoted });
                    continue;
                }
                Tok::Semi => (None, None),
                Tok::Open => (Some(self.block(Some(tok.line))?), None),
                Tok::Lua(code) => (None, Some(code)),
                Tok::Close => {
                    let message = format!("directive \"{name}\" has no closing \";\"");
                    return Err(self.err(line, message));
                }
            };
            return Ok(Directive {
                name,
                args,
                block,
                lua,
                pos: self.pos(line),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::lexer::tokenize;
    use super::*;

    fn tree(text: &str) -> Result<Vec<Directive>, ParseError> {
        parse(&Arc::from("t.conf"), tokenize(text).unwrap())
    }

    #[test]
    fn nested_blocks_with_lines() {
        let t = tree(
            "http {\n  upstream a { server 127.0.0.1:1 weight=2; }\n  server {\n    location = / { return 204; }\n  }\n}\n",
        )
        .unwrap();
        assert_eq!(t.len(), 1);
        let http = &t[0];
        assert_eq!(http.name, "http");
        let up = &http.children()[0];
        assert_eq!((up.name.as_str(), up.arg(0)), ("upstream", Some("a")));
        assert_eq!(up.children()[0].arg(1), Some("weight=2"));
        let loc = &http.children()[1].children()[0];
        assert_eq!(loc.pos.to_string(), "t.conf:4");
        assert_eq!(loc.args.len(), 2);
        assert_eq!(loc.children()[0].summary(), "return 204");
    }

    #[test]
    fn lua_block_is_the_directive_body() {
        let t = tree("location / {\n content_by_lua_block { ngx.say('}') }\n}\n").unwrap();
        let d = &t[0].children()[0];
        assert_eq!(d.name, "content_by_lua_block");
        assert_eq!(d.lua.as_deref(), Some(" ngx.say('}') "));
        assert_eq!(d.summary(), "content_by_lua_block {...}");
    }

    #[test]
    fn errors_name_the_line() {
        let e = tree("http {\n server {\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "t.conf:2: the block opened here is never closed (unexpected end of file)"
        );
        let e = tree("a b;\n}\n").unwrap_err();
        assert_eq!(e.to_string(), "t.conf:2: unexpected \"}\"");
        let e = tree("http {\n listen 80\n}\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "t.conf:2: directive \"listen\" has no closing \";\""
        );
        let e = tree("worker_processes 1").unwrap_err();
        assert!(e.message.contains("no closing"), "{e}");
    }

    #[test]
    fn summary_quotes_and_shortens() {
        let t = tree("add_header X-A \"a b\";").unwrap();
        assert_eq!(t[0].summary(), "add_header X-A \"a b\"");
        let long = format!("return 200 {};", "x".repeat(100));
        let t = tree(&long).unwrap();
        assert!(t[0].summary().ends_with("..."));
    }
}

//! Targeted cache-control fields (RFC 9213), such as `CDN-Cache-Control`:
//! which of a response's fields on the zone's list governs this cache
//! (the first with a valid, non-empty value), read as a Structured Fields
//! Dictionary (RFC 8941 §3.2) whose members are cache directives. A field
//! that fails to parse counts as absent.

use http::{HeaderMap, HeaderName};

use super::directives::CacheControl;

/// The directives of the first field of `targeted` (in list order) that
/// `headers` carries with a valid, non-empty value; `None` when there is
/// none, and Cache-Control (with Expires) governs.
pub(super) fn select(headers: &HeaderMap, targeted: &[HeaderName]) -> Option<CacheControl> {
    targeted.iter().find_map(|name| parse_field(headers, name))
}

/// One targeted field's directives: its lines joined with commas (RFC
/// 8941 §4.2), parsed as a Dictionary. Values map to the directives'
/// arguments as RFC 9213 §2.2 maps them back: a bare member is the bare
/// directive (`?0` is no directive at all), an Integer or String its
/// argument; a negative Integer or another type is a malformed argument.
fn parse_field(headers: &HeaderMap, name: &HeaderName) -> Option<CacheControl> {
    let mut joined = String::new();
    for line in headers.get_all(name) {
        if !joined.is_empty() {
            joined.push_str(", ");
        }
        joined.push_str(line.to_str().ok()?);
    }
    let members = Parser::new(&joined).dictionary()?;
    if members.is_empty() {
        return None;
    }
    let mut cc = CacheControl::default();
    for (key, value) in members {
        let argument = match value {
            Value::True => None,
            Value::False => continue,
            Value::Integer(n) if n >= 0 => Some(Some(n.to_string())),
            Value::Text(t) => Some(Some(t)),
            Value::Integer(_) | Value::Other => Some(None),
        };
        cc.apply(&key, argument);
    }
    Some(cc)
}

/// A dictionary member's value, as far as cache directives care.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Value {
    /// Boolean true: a bare member.
    True,
    /// `?0`.
    False,
    /// An Integer.
    Integer(i64),
    /// A String or a Token.
    Text(String),
    /// A Decimal, a Byte Sequence or an Inner List.
    Other,
}

/// RFC 8941 §4.2's parsing algorithms, for a Dictionary. Every function
/// answers `None` on the first error, failing the whole field.
struct Parser<'a> {
    rest: &'a [u8],
}

impl<'a> Parser<'a> {
    fn new(input: &'a str) -> Parser<'a> {
        Parser {
            rest: input.as_bytes(),
        }
    }

    fn peek(&self) -> Option<u8> {
        self.rest.first().copied()
    }

    fn bump(&mut self) -> Option<u8> {
        let (first, rest) = self.rest.split_first()?;
        self.rest = rest;
        Some(*first)
    }

    fn eat(&mut self, b: u8) -> bool {
        let hit = self.peek() == Some(b);
        if hit {
            self.rest = &self.rest[1..];
        }
        hit
    }

    fn skip(&mut self, ows: bool) {
        while self.peek() == Some(b' ') || (ows && self.peek() == Some(b'\t')) {
            self.rest = &self.rest[1..];
        }
    }

    /// The whole input as a Dictionary: members in order, a later
    /// duplicate key replacing the earlier member (§4.2.2).
    fn dictionary(mut self) -> Option<Vec<(String, Value)>> {
        let mut members: Vec<(String, Value)> = Vec::new();
        self.skip(false);
        while !self.rest.is_empty() {
            let key = self.key()?;
            let value = if self.eat(b'=') {
                self.item_or_inner_list()?
            } else {
                self.parameters()?;
                Value::True
            };
            members.retain(|(k, _)| *k != key);
            members.push((key, value));
            self.skip(true);
            if self.rest.is_empty() {
                break;
            }
            if !self.eat(b',') {
                return None;
            }
            self.skip(true);
            if self.rest.is_empty() {
                return None;
            }
        }
        Some(members)
    }

    fn key(&mut self) -> Option<String> {
        let first = self.peek()?;
        if !(first.is_ascii_lowercase() || first == b'*') {
            return None;
        }
        let len = self
            .rest
            .iter()
            .take_while(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_-.*".contains(b))
            .count();
        let (key, rest) = self.rest.split_at(len);
        self.rest = rest;
        Some(String::from_utf8_lossy(key).into_owned())
    }

    fn item_or_inner_list(&mut self) -> Option<Value> {
        if !self.eat(b'(') {
            let value = self.bare_item()?;
            self.parameters()?;
            return Some(value);
        }
        loop {
            self.skip(false);
            if self.eat(b')') {
                self.parameters()?;
                return Some(Value::Other);
            }
            self.bare_item()?;
            self.parameters()?;
            if !matches!(self.peek(), Some(b' ' | b')')) {
                return None;
            }
        }
    }

    fn parameters(&mut self) -> Option<()> {
        while self.eat(b';') {
            self.skip(false);
            self.key()?;
            if self.eat(b'=') {
                self.bare_item()?;
            }
        }
        Some(())
    }

    fn bare_item(&mut self) -> Option<Value> {
        match self.peek()? {
            b'-' | b'0'..=b'9' => self.number(),
            b'"' => self.string(),
            b'*' | b'A'..=b'Z' | b'a'..=b'z' => Some(self.token()),
            b':' => self.byte_sequence(),
            b'?' => {
                self.bump();
                match self.bump()? {
                    b'1' => Some(Value::True),
                    b'0' => Some(Value::False),
                    _ => None,
                }
            }
            _ => None,
        }
    }

    /// An Integer (at most 15 digits) or a Decimal (at most 12 digits,
    /// a dot, 1 to 3 digits).
    fn number(&mut self) -> Option<Value> {
        let negative = self.eat(b'-');
        let len = self
            .rest
            .iter()
            .take_while(|b| b.is_ascii_digit() || **b == b'.')
            .count();
        let (text, rest) = self.rest.split_at(len);
        self.rest = rest;
        let text = std::str::from_utf8(text).ok()?;
        match text.split_once('.') {
            None if (1..=15).contains(&text.len()) => {
                let n: i64 = text.parse().ok()?;
                Some(Value::Integer(if negative { -n } else { n }))
            }
            Some((int, frac))
                if (1..=12).contains(&int.len())
                    && (1..=3).contains(&frac.len())
                    && !frac.contains('.') =>
            {
                Some(Value::Other)
            }
            _ => None,
        }
    }

    fn string(&mut self) -> Option<Value> {
        self.bump();
        let mut out = String::new();
        loop {
            match self.bump()? {
                b'\\' => match self.bump()? {
                    c @ (b'"' | b'\\') => out.push(char::from(c)),
                    _ => return None,
                },
                b'"' => return Some(Value::Text(out)),
                c @ 0x20..=0x7e => out.push(char::from(c)),
                _ => return None,
            }
        }
    }

    fn token(&mut self) -> Value {
        let tchar = |b: &u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~:/".contains(b);
        let len = self.rest.iter().take_while(|b| tchar(b)).count();
        let (token, rest) = self.rest.split_at(len);
        self.rest = rest;
        Value::Text(String::from_utf8_lossy(token).into_owned())
    }

    fn byte_sequence(&mut self) -> Option<Value> {
        self.bump();
        let base64 = |b: &u8| b.is_ascii_alphanumeric() || b"+/=".contains(b);
        let len = self.rest.iter().take_while(|b| base64(b)).count();
        self.rest = &self.rest[len..];
        self.eat(b':').then_some(Value::Other)
    }
}

#[cfg(test)]
mod tests;

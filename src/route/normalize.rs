//! The path routes are matched on: the request path normalized as nginx's
//! `ngx_http_parse_complex_uri` does before it chooses a location, and its
//! re-encoding for the places that need a URI again (a `rewrite`, static
//! files).
//!
//! Normalizing percent-decodes (`%2F` too: it becomes a `/` and so a
//! separator, as in nginx), merges repeated slashes (nginx's
//! `merge_slashes on`) and resolves `.` and `..` segments. A `..` that
//! would climb above `/`, a malformed `%`, a decoded NUL or bytes that are
//! not UTF-8 make the path unusable: the request is answered 400.
//!
//! Most paths need none of it; those are returned borrowed, so the common
//! request pays one scan of its path and no allocation.

use std::borrow::Cow;

use percent_encoding::{AsciiSet, CONTROLS};

/// Why a path cannot be normalized; each is a 400 for the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadPath {
    /// A `%` not followed by two hex digits.
    Encoding,
    /// A `%00`.
    Nul,
    /// The decoded bytes are not UTF-8.
    Utf8,
    /// A `..` segment climbs above `/`.
    AboveRoot,
}

impl BadPath {
    /// What the client is told (and the log says).
    pub fn message(self) -> &'static str {
        match self {
            BadPath::Encoding => "malformed percent-encoding in the request path",
            BadPath::Nul => "NUL byte in the request path",
            BadPath::Utf8 => "request path is not UTF-8 once decoded",
            BadPath::AboveRoot => "request path climbs above the root",
        }
    }
}

/// Bytes [`encode_path`] escapes: what a URI path cannot carry raw, and `%`
/// itself (the normalized path is decoded, so a `%` in it is a literal).
const PATH_ESCAPE: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'`')
    .add(b'{')
    .add(b'}');

/// The normalized form of `raw`, a request path still percent-encoded.
/// Borrowed when `raw` has no `%`, no `//` and no `.` / `..` segment; a
/// path that does not start with `/` (`*`) is returned as it is.
pub fn normalize_path(raw: &str) -> Result<Cow<'_, str>, BadPath> {
    if !raw.starts_with('/') || is_normal(raw) {
        return Ok(Cow::Borrowed(raw));
    }
    let decoded = decode(raw)?;
    let mut out = String::with_capacity(decoded.len());
    let mut dir = false;
    for segment in decoded.split('/').skip(1) {
        dir = true;
        match segment {
            "" | "." => {}
            ".." => {
                // Back to the `/` before the last segment; at `/` there is
                // no segment left to drop.
                let cut = out.rfind('/').ok_or(BadPath::AboveRoot)?;
                out.truncate(cut);
            }
            name => {
                out.push('/');
                out.push_str(name);
                dir = false;
            }
        }
    }
    if dir || out.is_empty() {
        out.push('/');
    }
    Ok(Cow::Owned(out))
}

/// `path` (decoded) percent-encoded back into a URI path: only what a URI
/// cannot carry raw, and `%`, are escaped; borrowed when nothing is.
pub fn encode_path(path: &str) -> Cow<'_, str> {
    percent_encoding::utf8_percent_encode(path, PATH_ESCAPE).into()
}

/// True when normalizing `raw` (which starts with `/`) would leave it as
/// it is.
fn is_normal(raw: &str) -> bool {
    if raw.contains('%') {
        return false;
    }
    let mut segments = raw.split('/').skip(1).peekable();
    while let Some(segment) = segments.next() {
        match segment {
            // An empty last segment is a trailing `/`, kept as is.
            "" if segments.peek().is_none() => {}
            "" | "." | ".." => return false,
            _ => {}
        }
    }
    true
}

/// Strict `%XX` decoding of the whole path into UTF-8 text without NUL.
fn decode(raw: &str) -> Result<String, BadPath> {
    let input = raw.as_bytes();
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while let Some(&b) = input.get(i) {
        if b == b'%' {
            let hi = input.get(i + 1).and_then(|&h| hex(h));
            let lo = input.get(i + 2).and_then(|&l| hex(l));
            let (Some(hi), Some(lo)) = (hi, lo) else {
                return Err(BadPath::Encoding);
            };
            out.push(hi << 4 | lo);
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    if out.contains(&0) {
        return Err(BadPath::Nul);
    }
    String::from_utf8(out).map_err(|_| BadPath::Utf8)
}

fn hex(b: u8) -> Option<u8> {
    char::from(b)
        .to_digit(16)
        .and_then(|d| u8::try_from(d).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(raw: &str) -> Result<String, BadPath> {
        normalize_path(raw).map(Cow::into_owned)
    }

    #[test]
    fn clean_paths_are_borrowed() {
        for raw in ["/", "/admin/x", "/a/b/", "/.well-known/x", "/a..b/c.", "*"] {
            let got = normalize_path(raw);
            assert!(
                matches!(got, Ok(Cow::Borrowed(p)) if p == raw),
                "{raw}: {got:?}"
            );
        }
    }

    #[test]
    fn decodes_merges_and_resolves() {
        let cases = [
            ("/%61dmin/x", "/admin/x"),
            ("/x/../admin/x", "/admin/x"),
            ("//admin/x", "/admin/x"),
            ("/admin//x///", "/admin/x/"),
            ("/admin/./x", "/admin/x"),
            ("/admin/x/.", "/admin/x/"),
            ("/admin/x/y/..", "/admin/x/"),
            ("/x/%2e%2e/admin/x", "/admin/x"),
            ("/x/%2E./admin", "/admin"),
            ("/x%2F..%2Fadmin/x", "/admin/x"),
            ("/a%20b", "/a b"),
            ("/a%25b", "/a%b"),
            ("/caf%C3%A9", "/café"),
            ("/x/..", "/"),
            ("/./", "/"),
            ("/.//x/.%2F%2e/../admin%2fx", "/admin/x"),
        ];
        for (raw, want) in cases {
            assert_eq!(norm(raw).as_deref(), Ok(want), "{raw}");
        }
    }

    #[test]
    fn refuses_what_nginx_refuses() {
        assert_eq!(norm("/../x"), Err(BadPath::AboveRoot));
        assert_eq!(norm("/.."), Err(BadPath::AboveRoot));
        assert_eq!(norm("/a/../../x"), Err(BadPath::AboveRoot));
        assert_eq!(norm("/%2e%2e/x"), Err(BadPath::AboveRoot));
        assert_eq!(norm("/a%2"), Err(BadPath::Encoding));
        assert_eq!(norm("/a%zz"), Err(BadPath::Encoding));
        assert_eq!(norm("/a%00b"), Err(BadPath::Nul));
        assert_eq!(norm("/a%FFb"), Err(BadPath::Utf8));
    }

    #[test]
    fn encodes_back_to_a_uri_path() {
        assert!(matches!(encode_path("/admin/x"), Cow::Borrowed("/admin/x")));
        assert_eq!(encode_path("/a b%?#"), "/a%20b%25%3F%23");
        assert_eq!(encode_path("/café"), "/caf%C3%A9");
        // Encoding then normalizing gives the normalized path back.
        for path in ["/a b", "/a%b", "/café/", "/q?x"] {
            assert_eq!(norm(&encode_path(path)).as_deref(), Ok(path));
        }
    }
}

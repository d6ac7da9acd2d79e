//! Where a token travels: the `Authorization: Bearer` header, a cookie, a
//! query argument. Pure functions over the header or query text, borrowing
//! from it (no allocation unless a query value needs percent-decoding).

use std::borrow::Cow;

/// The token of an `Authorization` value with the `Bearer` scheme (the
/// scheme is case-insensitive, RFC 7235 §2.1); `None` for other schemes or
/// an empty token.
pub fn bearer(authorization: &str) -> Option<&str> {
    let (scheme, rest) = authorization.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let token = rest.trim_start();
    (!token.is_empty() && !token.contains(' ')).then_some(token)
}

/// The value of cookie `name` in one `Cookie` header value (`a=1; b=2`),
/// with the optional double quotes of RFC 6265 removed.
pub fn cookie<'c>(cookie_header: &'c str, name: &str) -> Option<&'c str> {
    cookie_header.split(';').find_map(|pair| {
        let (k, v) = pair.trim().split_once('=')?;
        if k != name {
            return None;
        }
        let v = v
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or(v);
        (!v.is_empty()).then_some(v)
    })
}

/// The percent-decoded value of query argument `name` (exact name match)
/// in a query string without its `?`; `None` when absent, empty or not
/// UTF-8 once decoded.
pub fn query_arg<'q>(query: &'q str, name: &str) -> Option<Cow<'q, str>> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        if k != name || v.is_empty() {
            return None;
        }
        percent_encoding::percent_decode_str(v).decode_utf8().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_tokens() {
        assert_eq!(bearer("Bearer abc.def.ghi"), Some("abc.def.ghi"));
        assert_eq!(bearer("bearer   abc"), Some("abc"));
        assert_eq!(bearer("BEARER abc "), Some("abc"));
        assert_eq!(bearer("Basic dXNlcjpwYXNz"), None);
        assert_eq!(bearer("Bearer"), None);
        assert_eq!(bearer("Bearer "), None);
        assert_eq!(bearer("Bearer a b"), None);
        assert_eq!(bearer("Bearerabc"), None);
    }

    #[test]
    fn cookies() {
        let h = "a=1; jwt=abc.def.ghi; other=x";
        assert_eq!(cookie(h, "jwt"), Some("abc.def.ghi"));
        assert_eq!(cookie(h, "a"), Some("1"));
        assert_eq!(cookie(h, "JWT"), None);
        assert_eq!(cookie("jwt=\"q.r.s\"", "jwt"), Some("q.r.s"));
        assert_eq!(cookie("jwt=", "jwt"), None);
        assert_eq!(cookie("xjwt=1", "jwt"), None);
    }

    #[test]
    fn query_args() {
        assert_eq!(
            query_arg("a=1&jwt=abc.d-f.g_h", "jwt").as_deref(),
            Some("abc.d-f.g_h")
        );
        assert_eq!(query_arg("jwt=a%2Eb", "jwt").as_deref(), Some("a.b"));
        assert!(matches!(
            query_arg("jwt=abc", "jwt"),
            Some(Cow::Borrowed("abc"))
        ));
        assert_eq!(query_arg("jwt=", "jwt"), None);
        assert_eq!(query_arg("jwtx=1", "jwt"), None);
        assert_eq!(query_arg("jwt=%FF", "jwt"), None);
        assert_eq!(query_arg("", "jwt"), None);
    }
}

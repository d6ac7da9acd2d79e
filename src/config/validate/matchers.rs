//! The string checks behind a route: host patterns, path matchers, methods, regexes and
//! rewrite replacements. Pure functions returning plain-words errors; the caller places them.

use std::net::Ipv6Addr;

use regex::Regex;

use crate::config::model::PathMatch;

/// Checks and lowercases a host pattern: "*", "*.suffix" or an exact name (or IP).
pub(super) fn host_pattern(raw: &str) -> Result<String, String> {
    let host = raw.to_ascii_lowercase();
    if host == "*" {
        return Ok(host);
    }
    let name = host.strip_prefix("*.").unwrap_or(&host);
    if name.contains('*') {
        return Err(format!(
            "host \"{raw}\" has a `*` in the wrong place; write \"*\" alone or at the start, like \"*.example.com\""
        ));
    }
    if let Some(ip) = name.strip_prefix('[').and_then(|n| n.strip_suffix(']'))
        && ip.parse::<Ipv6Addr>().is_ok()
        && name.len() == host.len()
    {
        return Ok(host);
    }
    if name.contains(':') {
        return Err(format!(
            "host \"{raw}\" has a port; routes match the host name only"
        ));
    }
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    };
    if !name.split('.').all(label_ok) {
        return Err(format!(
            "host \"{raw}\" is not a host name; use \"*\", \"*.example.com\" or a name like \"api.example.com\""
        ));
    }
    Ok(host)
}

pub(super) fn path_match(kind: &str, value: &str) -> Result<PathMatch, String> {
    match kind {
        "path_regex" => compile(value, "`path_regex`").map(PathMatch::Regex),
        _ if !value.starts_with('/') => {
            Err(format!("`{kind}` must start with \"/\", found \"{value}\""))
        }
        "path" => Ok(PathMatch::Prefix(value.to_owned())),
        _ => Ok(PathMatch::Exact(value.to_owned())),
    }
}

/// Compiles a regex, keeping just the regex crate's one-line reason on failure.
pub(super) fn compile(pattern: &str, what: &str) -> Result<Regex, String> {
    Regex::new(pattern).map_err(|e| {
        let full = e.to_string();
        let reason = full
            .lines()
            .rev()
            .find_map(|l| l.trim().strip_prefix("error: "))
            .map_or_else(|| full.lines().collect::<Vec<_>>().join(" "), str::to_owned);
        format!("{what} is not a valid regular expression: {reason}")
    })
}

/// Methods are case-sensitive tokens; a lowercase one is almost surely a typo for capitals.
pub(super) fn method(name: &str) -> Result<http::Method, String> {
    if name.bytes().any(|b| b.is_ascii_lowercase()) {
        return Err(format!(
            "method \"{name}\" must be written in capitals: \"{}\"",
            name.to_ascii_uppercase()
        ));
    }
    http::Method::from_bytes(name.as_bytes())
        .map_err(|_| format!("\"{name}\" is not an HTTP method name"))
}

/// Checks `$1` / `$name` / `${name}` in a replacement against the regex's groups, because
/// the regex crate silently replaces an unknown group with "" (and reads `$1a` as group `1a`).
pub(super) fn check_replacement(re: &Regex, to: &str) -> Result<(), String> {
    let mut rest = to;
    while let Some(at) = rest.find('$') {
        let after = &rest[at + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            rest = tail;
            continue;
        }
        let (name, braced, tail) = match after.strip_prefix('{').and_then(|b| b.split_once('}')) {
            Some((name, tail)) => (name, true, tail),
            None => {
                let end = after
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(after.len());
                (&after[..end], false, &after[end..])
            }
        };
        rest = tail;
        if name.is_empty() {
            continue;
        }
        let known = match name.parse::<usize>() {
            Ok(n) => n < re.captures_len(),
            Err(_) => re.capture_names().flatten().any(|c| c == name),
        };
        if !known {
            let digits: String = name.chars().take_while(char::is_ascii_digit).collect();
            let hint = if !braced && !digits.is_empty() && digits.len() < name.len() {
                format!(
                    "; to put text right after group {digits}, write ${{{digits}}}{}",
                    &name[digits.len()..]
                )
            } else {
                String::new()
            };
            return Err(format!(
                "`to` refers to group `{name}`, which `from` does not have{hint}"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_patterns() {
        assert_eq!(host_pattern("*").as_deref(), Ok("*"));
        assert_eq!(
            host_pattern("*.Example.COM").as_deref(),
            Ok("*.example.com")
        );
        assert_eq!(
            host_pattern("API.example.com").as_deref(),
            Ok("api.example.com")
        );
        assert_eq!(host_pattern("127.0.0.1").as_deref(), Ok("127.0.0.1"));
        assert_eq!(host_pattern("[::1]").as_deref(), Ok("[::1]"));
        for bad in ["api.*.com", "*example.com", "a*", "**", "*.*.x"] {
            let e = host_pattern(bad).unwrap_err();
            assert!(e.contains("`*` in the wrong place"), "{bad}: {e}");
        }
        assert!(
            host_pattern("example.com:8080")
                .unwrap_err()
                .contains("has a port")
        );
        assert!(host_pattern("").unwrap_err().contains("is not a host name"));
        assert!(
            host_pattern("a..b")
                .unwrap_err()
                .contains("is not a host name")
        );
        assert!(
            host_pattern("a b")
                .unwrap_err()
                .contains("is not a host name")
        );
    }

    #[test]
    fn methods_are_capital_tokens() {
        assert_eq!(method("GET"), Ok(http::Method::GET));
        assert_eq!(method("PURGE").unwrap().as_str(), "PURGE");
        assert_eq!(
            method("get").unwrap_err(),
            "method \"get\" must be written in capitals: \"GET\""
        );
        assert!(method("GE T").unwrap_err().contains("not an HTTP method"));
        assert!(method("").is_err());
    }

    #[test]
    fn path_kinds() {
        assert!(matches!(path_match("path", "/a"), Ok(PathMatch::Prefix(p)) if p == "/a"));
        assert!(matches!(path_match("path_exact", "/"), Ok(PathMatch::Exact(p)) if p == "/"));
        assert!(
            matches!(path_match("path_regex", "^/v[0-9]+/"), Ok(PathMatch::Regex(r)) if r.is_match("/v2/x"))
        );
        assert_eq!(
            path_match("path", "api").unwrap_err(),
            "`path` must start with \"/\", found \"api\""
        );
        let e = path_match("path_regex", "^/(a").unwrap_err();
        assert_eq!(
            e,
            "`path_regex` is not a valid regular expression: unclosed group"
        );
    }

    #[test]
    fn replacement_references_are_checked() {
        let re = Regex::new("^/v1/(?P<rest>.*)$").unwrap();
        assert!(check_replacement(&re, "/$1").is_ok());
        assert!(check_replacement(&re, "/${1}x/$rest/$$5").is_ok());
        assert!(check_replacement(&re, "/cost/$").is_ok());
        assert_eq!(
            check_replacement(&re, "/$2").unwrap_err(),
            "`to` refers to group `2`, which `from` does not have"
        );
        assert_eq!(
            check_replacement(&re, "/$1a").unwrap_err(),
            "`to` refers to group `1a`, which `from` does not have; to put text right after group 1, write ${1}a"
        );
        assert!(
            check_replacement(&re, "${nope}")
                .unwrap_err()
                .contains("`nope`")
        );
    }
}

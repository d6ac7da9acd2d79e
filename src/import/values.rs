//! nginx values in moongate's spelling: times, sizes, `$variable`
//! templates (split into parts, or turned into Lua expressions), names
//! made safe for conf.d, and Lua string literals.

/// One piece of an nginx "complex value": literal text, `$name` /
/// `${name}`, or a regex capture `$1`..`$9`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    /// Text as written.
    Lit(String),
    /// A variable by name.
    Var(String),
    /// A capture of the last regex that matched.
    Capture(u8),
}

/// Splits an nginx value into its parts, as `ngx_http_script` reads it:
/// a capture is one digit, a name runs over letters, digits and `_`, and a
/// `$` followed by anything else is literal.
pub fn parts(text: &str) -> Vec<Part> {
    let mut out = Vec::new();
    let mut lit = String::new();
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        lit.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let (part, used) = if let Some(d) = after.chars().next().filter(|c| c.is_ascii_digit()) {
            (Some(Part::Capture(d as u8 - b'0')), 1)
        } else if let Some(braced) = after.strip_prefix('{') {
            match braced.find('}') {
                Some(end) if end > 0 => (Some(Part::Var(braced[..end].to_owned())), end + 2),
                _ => (None, 0),
            }
        } else {
            let end = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            if end == 0 {
                (None, 0)
            } else {
                (Some(Part::Var(after[..end].to_owned())), end)
            }
        };
        match part {
            Some(p) => {
                if !lit.is_empty() {
                    out.push(Part::Lit(std::mem::take(&mut lit)));
                }
                out.push(p);
            }
            None => lit.push('$'),
        }
        rest = &after[used..];
    }
    lit.push_str(rest);
    if !lit.is_empty() {
        out.push(Part::Lit(lit));
    }
    out
}

/// Whether a value holds any variable or capture.
pub fn has_vars(text: &str) -> bool {
    parts(text).iter().any(|p| !matches!(p, Part::Lit(_)))
}

/// An nginx value as a Lua expression of string type: literals quoted,
/// variables read from `ngx.var` (`var(name)`), captures from `cap(n)`
/// (the generated code defines both helpers).
pub fn lua_expr(text: &str) -> String {
    let pieces: Vec<String> = parts(text)
        .into_iter()
        .map(|p| match p {
            Part::Lit(s) => lua_str(&s),
            Part::Var(name) => format!("var({})", lua_str(&name)),
            Part::Capture(n) => format!("cap({n})"),
        })
        .collect();
    if pieces.is_empty() {
        "\"\"".to_owned()
    } else {
        pieces.join(" .. ")
    }
}

/// A Lua string literal for any bytes of `s`.
pub fn lua_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c == '\x7f' => out.push_str(&format!("\\{}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// An nginx time (`30s`, `1h30m`, `500ms`, `75` = seconds) in moongate's
/// spelling (`"30s"`, `"5400s"`, `"500ms"`).
pub fn duration(text: &str) -> Result<String, String> {
    let bad = || format!("`{text}` is not an nginx time");
    let mut ms: u64 = 0;
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(bad());
        }
        let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == ' ')
            .unwrap_or(rest.len());
        let factor: u64 = match &rest[..unit_len] {
            "ms" => 1,
            "" | "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "w" => 7 * 86_400_000,
            "M" => 30 * 86_400_000,
            "y" => 365 * 86_400_000,
            _ => return Err(bad()),
        };
        ms = n
            .checked_mul(factor)
            .and_then(|v| v.checked_add(ms))
            .ok_or_else(bad)?;
        rest = rest[unit_len..].trim_start();
    }
    Ok(if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    })
}

/// An nginx size (`10m`, `512k`, `1g`, `4096`) in moongate's spelling
/// (`"10MiB"`, `"512KiB"`, `"1GiB"`, `"4096"`), and its bytes.
pub fn size(text: &str) -> Result<(String, u64), String> {
    let bad = || format!("`{text}` is not an nginx size");
    let t = text.trim();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    if digits == 0 {
        return Err(bad());
    }
    let n: u64 = t[..digits].parse().map_err(|_| bad())?;
    let (unit, factor) = match &t[digits..] {
        "" => ("", 1u64),
        "k" | "K" => ("KiB", 1 << 10),
        "m" | "M" => ("MiB", 1 << 20),
        "g" | "G" => ("GiB", 1 << 30),
        _ => return Err(bad()),
    };
    let bytes = n.checked_mul(factor).ok_or_else(bad)?;
    Ok((format!("{n}{unit}"), bytes))
}

/// A name usable for an upstream, zone or file: letters, digits, `_`
/// and `-`; anything else becomes `_`.
pub fn safe_name(text: &str) -> String {
    let s: String = text
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let s = s.trim_matches('_').to_owned();
    if s.is_empty() { "x".to_owned() } else { s }
}

/// A moongate `$var` template for an nginx value, when every variable in
/// it is one moongate's templates know; `$binary_remote_addr` becomes
/// `$remote_addr`. `Err` names the first unknown one.
pub fn mg_template(text: &str) -> Result<String, String> {
    let mut out = String::new();
    for p in parts(text) {
        match p {
            Part::Lit(s) => {
                if s.contains('$') {
                    return Err(format!("a literal `$` in `{text}`"));
                }
                out.push_str(&s);
            }
            Part::Capture(n) => return Err(format!("the regex capture `${n}`")),
            Part::Var(name) => {
                let name = match name.as_str() {
                    "binary_remote_addr" => "remote_addr".to_owned(),
                    "http_host" => "host".to_owned(),
                    "is_args" => return Err("`$is_args`".to_owned()),
                    _ => name,
                };
                crate::vars::VarTemplate::parse(&format!("${name}"))
                    .map_err(|_| format!("`${name}`"))?;
                out.push_str(&format!("${{{name}}}"));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_follow_nginx_script_rules() {
        assert_eq!(
            parts("a$uri/${host}x$12$-$"),
            [
                Part::Lit("a".into()),
                Part::Var("uri".into()),
                Part::Lit("/".into()),
                Part::Var("host".into()),
                Part::Lit("x".into()),
                Part::Capture(1),
                Part::Lit("2$-$".into()),
            ]
        );
        assert!(has_vars("https://$host$request_uri"));
        assert!(!has_vars("plain $ text"));
    }

    #[test]
    fn lua_expressions_and_strings() {
        assert_eq!(
            lua_expr("https://$host$request_uri"),
            "\"https://\" .. var(\"host\") .. var(\"request_uri\")"
        );
        assert_eq!(lua_expr("/x/$1"), "\"/x/\" .. cap(1)");
        assert_eq!(lua_expr(""), "\"\"");
        assert_eq!(lua_str("a\"b\\c\nd\u{1}"), "\"a\\\"b\\\\c\\nd\\1\"");
    }

    #[test]
    fn times_and_sizes() {
        assert_eq!(duration("30s").unwrap(), "30s");
        assert_eq!(duration("75").unwrap(), "75s");
        assert_eq!(duration("1h30m").unwrap(), "5400s");
        assert_eq!(duration("500ms").unwrap(), "500ms");
        assert_eq!(duration("1m 5s").unwrap(), "65s");
        assert!(duration("soon").is_err());
        assert!(duration("").is_err());
        assert_eq!(size("10m").unwrap(), ("10MiB".into(), 10 << 20));
        assert_eq!(size("512K").unwrap().0, "512KiB");
        assert_eq!(size("4096").unwrap(), ("4096".into(), 4096));
        assert!(size("1.5m").is_err());
    }

    #[test]
    fn names_and_templates() {
        assert_eq!(safe_name("127.0.0.1:8080"), "127_0_0_1_8080");
        assert_eq!(safe_name("api-v2"), "api-v2");
        assert_eq!(
            mg_template("$binary_remote_addr").unwrap(),
            "${remote_addr}"
        );
        assert_eq!(
            mg_template("$scheme$host$request_uri").unwrap(),
            "${scheme}${host}${request_uri}"
        );
        assert_eq!(
            mg_template("key:$http_x_api_key").unwrap(),
            "key:${http_x_api_key}"
        );
        assert!(mg_template("$upstream_cache_status").is_err());
        assert!(mg_template("$1").is_err());
    }
}

//! How a location's matcher becomes a route's: moongate tries exact paths,
//! then regexes in order, then the longest prefix, as nginx does, except
//! for `^~` (a prefix that stops the regexes): it becomes a regex tried
//! before the others when the server has regexes, unless a longer ordinary
//! prefix lies under it.

use super::super::model::PathOut;
use super::super::parse::Directive;
use super::super::report::Severity;
use super::Tx;
use super::location::ServerBuild;

/// How a location matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Exact,
    Prefix,
    Caret,
    Regex,
}

/// `location [=|~|~*|^~] PATH` → kind and path (`(?i)` for `~*`).
pub(super) fn matcher(args: &[&str]) -> Result<(Kind, String), String> {
    let (kind, path) = match args {
        ["=", p] => (Kind::Exact, (*p).to_owned()),
        ["~", p] => (Kind::Regex, (*p).to_owned()),
        ["~*", p] => (Kind::Regex, format!("(?i){p}")),
        ["^~", p] => (Kind::Caret, (*p).to_owned()),
        [p] if p.starts_with('@') => {
            return Err(
                "a named location: moongate has none (ngx.exec(\"@name\") is an error)".into(),
            );
        }
        [p] if p.starts_with("=/") => (Kind::Exact, p[1..].to_owned()),
        [p] if p.starts_with("~*") => (Kind::Regex, format!("(?i){}", &p[2..])),
        [p] if p.starts_with('~') => (Kind::Regex, p[1..].to_owned()),
        [p] if p.starts_with("^~") => (Kind::Caret, p[2..].to_owned()),
        [p] => (Kind::Prefix, (*p).to_owned()),
        _ => return Err("not a location form nginx takes".into()),
    };
    if kind == Kind::Regex {
        regex::Regex::new(&path).map_err(|e| {
            let why = e.to_string().lines().last().unwrap_or_default().to_owned();
            format!("moongate's regexes (Rust's regex crate) cannot take this one: {why}")
        })?;
    }
    Ok((kind, path))
}

/// A short name for files: `/api/v1/` → `api-v1`.
pub(super) fn slug(path: &str) -> String {
    let s: String = path
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    let s: Vec<&str> = s.split('-').filter(|p| !p.is_empty()).collect();
    let s = s.join("-");
    let s: String = s.chars().take(40).collect();
    if s.is_empty() { "root".into() } else { s }
}

/// Every location (nested too) of a list, with its parsed matcher.
fn all_matchers(locs: &[&Directive], out: &mut Vec<(Kind, String)>) {
    for l in locs {
        let args: Vec<&str> = l.args.iter().map(|a| a.text.as_str()).collect();
        if let Ok(m) = matcher(&args) {
            out.push(m);
        }
        let nested: Vec<&Directive> = l
            .children()
            .iter()
            .filter(|c| c.name == "location")
            .collect();
        all_matchers(&nested, out);
    }
}

impl Tx<'_> {
    pub(super) fn path_out(
        &mut self,
        build: &ServerBuild<'_>,
        d: &Directive,
        kind: Kind,
        path: &str,
        alias: bool,
    ) -> PathOut {
        match kind {
            Kind::Exact => PathOut::Exact(path.to_owned()),
            Kind::Prefix => PathOut::Prefix(path.to_owned()),
            Kind::Regex => PathOut::Regex(path.to_owned()),
            Kind::Caret => {
                let mut all = Vec::new();
                all_matchers(&build.locations, &mut all);
                let has_regex = all.iter().any(|(k, _)| *k == Kind::Regex);
                if !has_regex {
                    return PathOut::Prefix(path.to_owned());
                }
                let longer = all.iter().any(|(k, p)| {
                    *k == Kind::Prefix && p.len() > path.len() && p.starts_with(path)
                });
                if longer || alias {
                    let why = if alias {
                        "kept a prefix (it has an alias): regex routes are tried before it here, nginx's ^~ stops them"
                    } else {
                        "kept a prefix (a longer prefix lies under it): regex routes are tried before it here, nginx's ^~ stops them"
                    };
                    self.note_d(d, Severity::Differs, why);
                    return PathOut::Prefix(path.to_owned());
                }
                PathOut::Regex(format!("^{}", regex::escape(path)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn location_forms() {
        assert_eq!(matcher(&["=", "/x"]).unwrap(), (Kind::Exact, "/x".into()));
        assert_eq!(matcher(&["=/x"]).unwrap(), (Kind::Exact, "/x".into()));
        assert_eq!(
            matcher(&["~*", "\\.png$"]).unwrap(),
            (Kind::Regex, "(?i)\\.png$".into())
        );
        assert_eq!(matcher(&["~^/a"]).unwrap(), (Kind::Regex, "^/a".into()));
        assert_eq!(
            matcher(&["^~", "/s/"]).unwrap(),
            (Kind::Caret, "/s/".into())
        );
        assert_eq!(matcher(&["/p"]).unwrap(), (Kind::Prefix, "/p".into()));
        assert!(matcher(&["@fallback"]).is_err());
        // PCRE look-around has no equivalent in the regex crate.
        assert!(
            matcher(&["~", "^/(?!admin)"])
                .unwrap_err()
                .contains("cannot take")
        );
    }

    #[test]
    fn slugs() {
        assert_eq!(slug("/api/v1/"), "api-v1");
        assert_eq!(slug("/"), "root");
        assert_eq!(slug("(?i)\\.(png|jpg)$"), "i-png-jpg");
    }
}

//! Policy option schemas: what each option's value may be, its default,
//! and the checks `moongate check` runs on a route's policy entry. Knows
//! TOML values, not spans: an error names the option (or none, for the
//! entry as a whole) and `config::validate` turns that into file:line.

use super::Descriptor;

/// The type of an option's value.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    /// Any non-empty string.
    Str,
    /// An HTTP header name.
    Header,
    /// A list of HTTP header names.
    HeaderList,
    /// An integer within the bounds (inclusive).
    Int {
        /// Smallest allowed.
        min: i64,
        /// Largest allowed.
        max: i64,
    },
    /// One of the listed integers (e.g. redirect statuses).
    IntOneOf(&'static [i64]),
    /// One of the listed strings (e.g. an algorithm's name).
    OneOf(&'static [&'static str]),
    /// A duration (`"250ms"`, `"30s"`, `"5m"`), as everywhere in conf.d.
    Duration,
    /// true or false.
    Bool,
    /// A list of strings.
    StrList,
    /// A list of IP addresses or CIDRs (v4 and v6).
    Cidrs,
    /// A file path: resolved against the prefix, and must exist at check.
    File,
    /// A `$var` template (`https://$host$request_uri`).
    Template,
    /// An `http://` or `https://` URL with a host (`http://auth:9000/check`).
    Url,
    /// A list of regular expressions (PCRE-compatible subset).
    Regexes,
    /// A size (`"1MiB"`, `"512KiB"`, bytes as a number of bytes).
    Size,
    /// A list of HTTP methods.
    Methods,
    /// A list of CORS origins: `"*"`, an exact origin, or a regex.
    Origins,
    /// A table of header name → `$var` template.
    HeaderTemplates,
    /// A table of query argument name → `$var` template.
    ArgTemplates,
    /// A table of old header name → new header name.
    HeaderRenames,
    /// A table of old query argument name → new name.
    ArgRenames,
    /// A list of strings, each one of these (e.g. algorithms).
    OneOfList(&'static [&'static str]),
    /// A table of claim name → header name (a JWT's claims sent upstream).
    ClaimHeaders,
    /// The name of an `[upstream.NAME]`: `config::validate` checks that
    /// it is defined (here only that it is a non-empty string).
    Upstream,
    /// A cookie name (an RFC 6265 token).
    Cookie,
    /// A query argument name.
    Arg,
}

impl Kind {
    /// How the docs name the type.
    pub fn describe(self) -> String {
        match self {
            Kind::Str => "string".into(),
            Kind::Header => "header name".into(),
            Kind::HeaderList => "list of header names".into(),
            Kind::Int { min, max } => format!("integer, {min}..={max}"),
            Kind::IntOneOf(v) => format!(
                "one of {}",
                v.iter().map(i64::to_string).collect::<Vec<_>>().join(", ")
            ),
            Kind::OneOf(v) => format!(
                "one of {}",
                v.iter()
                    .map(|s| format!("\"{s}\""))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Kind::Duration => "duration (\"30s\")".into(),
            Kind::Bool => "boolean".into(),
            Kind::StrList => "list of strings".into(),
            Kind::Cidrs => "list of IPs / CIDRs".into(),
            Kind::File => "file path".into(),
            Kind::Template => "`$var` template".into(),
            Kind::Url => "http:// or https:// URL".into(),
            Kind::Regexes => "list of regexes".into(),
            Kind::Size => "size (\"1MiB\")".into(),
            Kind::Methods => "list of methods".into(),
            Kind::Origins => "list of origins (`*`, exact, or regex)".into(),
            Kind::HeaderTemplates => "table: header → `$var` template".into(),
            Kind::ArgTemplates => "table: query arg → `$var` template".into(),
            Kind::HeaderRenames => "table: header → new header name".into(),
            Kind::ArgRenames => "table: query arg → new name".into(),
            Kind::OneOfList(v) => format!(
                "list, each one of {}",
                v.iter()
                    .map(|s| format!("\"{s}\""))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Kind::ClaimHeaders => "table: claim → header name".into(),
            Kind::Upstream => "upstream name".into(),
            Kind::Cookie => "cookie name".into(),
            Kind::Arg => "query arg name".into(),
        }
    }
}

/// One option of a policy.
#[derive(Debug, Clone, Copy)]
pub struct OptionSpec {
    /// The key in the policy entry.
    pub key: &'static str,
    /// Its type.
    pub kind: Kind,
    /// The default, written as a TOML value (`"\"X-Api-Key\""`, `"403"`);
    /// filled in when the option is absent, so the implementation sees it.
    pub default: Option<&'static str>,
    /// Whether the entry must give it.
    pub required: bool,
    /// What it does, one line, for the docs.
    pub docs: &'static str,
}

impl OptionSpec {
    /// An optional option without a default.
    pub const fn new(key: &'static str, kind: Kind, docs: &'static str) -> Self {
        OptionSpec {
            key,
            kind,
            default: None,
            required: false,
            docs,
        }
    }

    /// The same, with a default (a TOML value).
    pub const fn default(mut self, toml: &'static str) -> Self {
        self.default = Some(toml);
        self
    }

    /// The same, required.
    pub const fn required(mut self) -> Self {
        self.required = true;
        self
    }

    /// The default as a value (None when there is none, or when the
    /// descriptor's literal does not parse, which a unit test rules out).
    pub fn default_value(&self) -> Option<toml::Value> {
        let text = self.default?;
        let mut table: toml::Table = toml::from_str(&format!("v = {text}")).ok()?;
        table.remove("v")
    }
}

/// The strings of list option `key` (none when absent): for a native
/// policy's compile step, after [`check_options`] passed.
pub fn str_list(options: &toml::Table, key: &str) -> Vec<String> {
    options
        .get(key)
        .and_then(|v| v.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// A policy entry's problem: the option it is about (None: the entry as a
/// whole) and the message.
pub type OptionError = (Option<String>, String);

/// Checks a policy entry's options (`use` removed) against the
/// descriptor: unknown keys, missing required ones, each value, then the
/// policy's own check across options; fills in defaults.
pub fn check_options(d: &Descriptor, options: &mut toml::Table) -> Result<(), OptionError> {
    for (key, value) in options.iter() {
        let Some(spec) = d.option(key) else {
            let keys: Vec<&str> = d.options.iter().map(|o| o.key).collect();
            let message = format!(
                "unknown option `{key}` for policy `{}`; expected one of {}",
                d.name,
                keys.join(", ")
            );
            return Err((Some(key.clone()), message));
        };
        check_value(spec, value).map_err(|e| (Some(key.clone()), format!("`{key}`: {e}")))?;
    }
    for spec in d.options {
        if options.contains_key(spec.key) {
            continue;
        }
        if spec.required {
            let message = format!("policy `{}` needs `{}` ({})", d.name, spec.key, spec.docs);
            return Err((None, message));
        }
        if let Some(v) = spec.default_value() {
            options.insert(spec.key.to_owned(), v);
        }
    }
    if let Some(check) = d.check {
        check(options).map_err(|e| (None, format!("policy `{}`: {e}", d.name)))?;
    }
    Ok(())
}

/// Checks one value against its option's kind; the message says what is
/// wrong without naming the option.
pub fn check_value(spec: &OptionSpec, v: &toml::Value) -> Result<(), String> {
    let want = || format!("expected {}", spec.kind.describe());
    match spec.kind {
        Kind::Str | Kind::File | Kind::Upstream => match v.as_str() {
            Some(s) if !s.is_empty() => Ok(()),
            Some(_) => Err("must not be empty".into()),
            None => Err(want()),
        },
        Kind::Header => header(v.as_str().ok_or_else(want)?),
        Kind::HeaderList => each_str(v, want, header),
        Kind::Int { min, max } => match v.as_integer() {
            Some(n) if (min..=max).contains(&n) => Ok(()),
            Some(n) => Err(format!("{n} is outside {min}..={max}")),
            None => Err(want()),
        },
        Kind::IntOneOf(allowed) => match v.as_integer() {
            Some(n) if allowed.contains(&n) => Ok(()),
            _ => Err(want()),
        },
        Kind::OneOf(allowed) => match v.as_str() {
            Some(s) if allowed.contains(&s) => Ok(()),
            Some(s) => Err(format!("`{s}` is not {}", spec.kind.describe())),
            None => Err(want()),
        },
        Kind::Duration => crate::config::parse_duration(v.as_str().ok_or_else(want)?).map(|_| ()),
        Kind::Bool => v.as_bool().map(|_| ()).ok_or_else(want),
        Kind::StrList => each_str(v, want, |_| Ok(())),
        Kind::Cidrs => each_str(v, want, |c| {
            if c.parse::<ipnet::IpNet>().is_ok() || c.parse::<std::net::IpAddr>().is_ok() {
                Ok(())
            } else {
                Err(format!("`{c}` is not an IP address or CIDR"))
            }
        }),
        Kind::Template => template(v.as_str().ok_or_else(want)?),
        Kind::Regexes => each_str(v, want, regex),
        Kind::Size => match v {
            toml::Value::String(s) => crate::config::parse_size(s).map(|_| ()),
            toml::Value::Integer(n) if *n >= 0 => Ok(()),
            _ => Err(want()),
        },
        Kind::Methods => each_str(v, want, |m| {
            if !m.is_empty() && m.bytes().all(|b| b.is_ascii_uppercase()) {
                Ok(())
            } else {
                Err(format!("`{m}` is not a method (upper case, like \"GET\")"))
            }
        }),
        Kind::Origins => each_str(v, want, origin),
        Kind::OneOfList(allowed) => each_str(v, want, |s| {
            if allowed.contains(&s) {
                Ok(())
            } else {
                Err(format!("`{s}` is not {}", Kind::OneOf(allowed).describe()))
            }
        }),
        Kind::ClaimHeaders => {
            let table = v.as_table().ok_or_else(want)?;
            for (claim, value) in table {
                if claim.is_empty() {
                    return Err("a claim name is empty".into());
                }
                header(
                    value
                        .as_str()
                        .ok_or_else(|| format!("`{claim}`: {}", want()))?,
                )
                .map_err(|e| format!("`{claim}`: {e}"))?;
            }
            Ok(())
        }
        Kind::Url => url(v.as_str().ok_or_else(want)?),
        Kind::Cookie => cookie(v.as_str().ok_or_else(want)?),
        Kind::Arg => arg(v.as_str().ok_or_else(want)?),
        Kind::HeaderTemplates | Kind::ArgTemplates | Kind::HeaderRenames | Kind::ArgRenames => {
            let table = v.as_table().ok_or_else(want)?;
            let headers = matches!(spec.kind, Kind::HeaderTemplates | Kind::HeaderRenames);
            for (name, value) in table {
                if headers {
                    header(name)?;
                } else if name.is_empty() {
                    return Err("a query argument name is empty".into());
                }
                let text = value
                    .as_str()
                    .ok_or_else(|| format!("`{name}`: {}", want()))?;
                match spec.kind {
                    Kind::HeaderRenames => header(text)?,
                    Kind::ArgRenames if text.is_empty() => {
                        return Err(format!("`{name}`: the new name is empty"));
                    }
                    Kind::ArgRenames => {}
                    _ => template(text).map_err(|e| format!("`{name}`: {e}"))?,
                }
            }
            Ok(())
        }
    }
}

/// A list whose items are strings, each passing `item`.
fn each_str(
    v: &toml::Value,
    want: impl Fn() -> String,
    item: impl Fn(&str) -> Result<(), String>,
) -> Result<(), String> {
    let list = v.as_array().ok_or_else(&want)?;
    for entry in list {
        item(entry.as_str().ok_or_else(&want)?)?;
    }
    Ok(())
}

fn header(name: &str) -> Result<(), String> {
    http::HeaderName::from_bytes(name.as_bytes())
        .map(|_| ())
        .map_err(|_| format!("`{name}` is not a valid header name"))
}

/// RFC 6265's cookie-name is a token, as a header name is (any case).
fn cookie(name: &str) -> Result<(), String> {
    http::HeaderName::from_bytes(name.as_bytes())
        .map(|_| ())
        .map_err(|_| format!("`{name}` is not a valid cookie name"))
}

/// A name that can stand between `&` and `=` in a query as written.
fn arg(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("a query argument name is empty".into());
    }
    match name
        .chars()
        .find(|c| "&=#".contains(*c) || c.is_whitespace() || c.is_control())
    {
        Some(c) => Err(format!(
            "`{name}` is not a query argument name ({c:?} in it)"
        )),
        None => Ok(()),
    }
}

/// An absolute `http://` or `https://` URL with a host.
fn url(text: &str) -> Result<(), String> {
    let uri: http::Uri = text
        .parse()
        .map_err(|e| format!("`{text}` is not a URL ({e})"))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        Some(other) => {
            return Err(format!(
                "`{text}`: {other}:// is not supported; use http:// or https://"
            ));
        }
        None => return Err(format!("`{text}` needs http:// or https://")),
    }
    match uri.host() {
        Some(host) if !host.is_empty() => Ok(()),
        _ => Err(format!("`{text}` has no host")),
    }
}

fn template(text: &str) -> Result<(), String> {
    crate::vars::VarTemplate::parse(text).map(|_| ())
}

fn regex(pattern: &str) -> Result<(), String> {
    regex::Regex::new(pattern).map(|_| ()).map_err(|e| {
        // The crate's message draws the pattern over several lines; its
        // last line says what is wrong.
        let text = e.to_string();
        let why = text.lines().last().unwrap_or_default();
        format!(
            "`{pattern}` is not a valid regex: {}",
            why.trim_start_matches("error: ")
        )
    })
}

/// Kong's rule: an entry of only URL characters is an exact origin,
/// anything else a regex matched against the whole Origin.
pub fn origin_is_exact(entry: &str) -> bool {
    entry
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b".:/-".contains(&b))
}

fn origin(entry: &str) -> Result<(), String> {
    if entry == "*" || origin_is_exact(entry) {
        Ok(())
    } else {
        regex(entry)
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Implementation, Phase};
    use super::*;

    const OPTS: &[OptionSpec] = &[
        OptionSpec::new("name", Kind::Header, "a header").default("\"X-Name\""),
        OptionSpec::new("status", Kind::Int { min: 400, max: 599 }, "status"),
        OptionSpec::new("to", Kind::Template, "target").required(),
        OptionSpec::new("nets", Kind::Cidrs, "networks"),
        OptionSpec::new("deny", Kind::Regexes, "patterns"),
        OptionSpec::new("alg", Kind::OneOf(&["HS256", "RS256"]), "algorithm"),
        OptionSpec::new("ttl", Kind::Duration, "lifetime"),
        OptionSpec::new("jar", Kind::Cookie, "a cookie"),
        OptionSpec::new("q", Kind::Arg, "an argument"),
        OptionSpec::new("via", Kind::Upstream, "an upstream"),
        OptionSpec::new("at", Kind::Url, "service"),
    ];
    const TEST: Descriptor = Descriptor {
        name: "t",
        phases: &[Phase::Access],
        options: OPTS,
        check: None,
        docs: "",
        example: "",
        kong: "",
        apisix: "",
        implementation: Implementation::Lua(""),
        compile: None,
        authenticates: false,
    };

    fn checked(text: &str) -> Result<toml::Table, OptionError> {
        let mut t: toml::Table = toml::from_str(text).unwrap_or_else(|e| panic!("{e}"));
        check_options(&TEST, &mut t).map(|()| t)
    }

    #[test]
    fn defaults_fill_in_and_good_values_pass() {
        let t = checked("to = \"https://$host$request_uri\"\nnets = [\"10.0.0.0/8\", \"::1\"]")
            .unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(t.get("name").and_then(|v| v.as_str()), Some("X-Name"));
    }

    #[test]
    fn errors_name_the_option_and_the_problem() {
        let e = checked("to = \"/\"\nstatus = \"403\"").unwrap_err();
        assert_eq!(
            e,
            (
                Some("status".into()),
                "`status`: expected integer, 400..=599".into()
            )
        );
        let e = checked("to = \"/\"\nstatus = 200").unwrap_err();
        assert_eq!(e.1, "`status`: 200 is outside 400..=599");
        let e = checked("to = \"/\"\nstaus = 403").unwrap_err();
        assert_eq!(e.0.as_deref(), Some("staus"));
        assert!(
            e.1.contains("unknown option `staus` for policy `t`"),
            "{}",
            e.1
        );
        let e = checked("status = 403").unwrap_err();
        assert_eq!(e, (None, "policy `t` needs `to` (target)".into()));
        let e = checked("to = \"$nope\"").unwrap_err();
        assert!(e.1.contains("unknown variable `$nope`"), "{}", e.1);
        let e = checked("to = \"/\"\nnets = [\"10.0.0.0/33\"]").unwrap_err();
        assert_eq!(e.1, "`nets`: `10.0.0.0/33` is not an IP address or CIDR");
        let e = checked("to = \"/\"\ndeny = [\"(bot\"]").unwrap_err();
        assert!(
            e.1.starts_with("`deny`: `(bot` is not a valid regex"),
            "{}",
            e.1
        );
        let e = checked("to = \"/\"\nalg = \"none\"").unwrap_err();
        assert_eq!(e.1, "`alg`: `none` is not one of \"HS256\", \"RS256\"");
        assert!(checked("to = \"/\"\nalg = \"RS256\"\nttl = \"5m\"").is_ok());
        let e = checked("to = \"/\"\nttl = \"5 fortnights\"").unwrap_err();
        assert!(e.1.starts_with("`ttl`: "), "{}", e.1);
        let e = checked("to = \"/\"\nttl = 5").unwrap_err();
        assert_eq!(e.1, "`ttl`: expected duration (\"30s\")");
        assert!(checked("to = \"/\"\nat = \"https://auth.internal:8443/check?x=1\"").is_ok());
        let e = checked("to = \"/\"\nat = \"ftp://auth/\"").unwrap_err();
        assert_eq!(
            e.1,
            "`at`: `ftp://auth/`: ftp:// is not supported; use http:// or https://"
        );
        let e = checked("to = \"/\"\nat = \"/check\"").unwrap_err();
        assert_eq!(e.1, "`at`: `/check` needs http:// or https://");
        let e = checked("to = \"/\"\nat = \"http://a b/\"").unwrap_err();
        assert!(
            e.1.starts_with("`at`: `http://a b/` is not a URL ("),
            "{}",
            e.1
        );
        let e = checked("to = \"/\"\nname = \"bad header\"").unwrap_err();
        assert_eq!(e.1, "`name`: `bad header` is not a valid header name");
    }

    #[test]
    fn cookie_arg_and_upstream_names() {
        assert!(checked("to = \"/\"\njar = \"Canary_1\"\nq = \"a[]\"\nvia = \"b\"").is_ok());
        let e = checked("to = \"/\"\njar = \"a b\"").unwrap_err();
        assert_eq!(e.1, "`jar`: `a b` is not a valid cookie name");
        let e = checked("to = \"/\"\njar = \"k=v\"").unwrap_err();
        assert_eq!(e.1, "`jar`: `k=v` is not a valid cookie name");
        let e = checked("to = \"/\"\nq = \"a&b\"").unwrap_err();
        assert_eq!(e.1, "`q`: `a&b` is not a query argument name ('&' in it)");
        let e = checked("to = \"/\"\nq = \"\"").unwrap_err();
        assert_eq!(e.1, "`q`: a query argument name is empty");
        let e = checked("to = \"/\"\nvia = 1").unwrap_err();
        assert_eq!(e.1, "`via`: expected upstream name");
    }

    #[test]
    fn origins_exact_or_regex() {
        assert!(origin_is_exact("https://app.example.com:8443"));
        assert!(!origin_is_exact("https://.*\\.example\\.com"));
        assert!(origin("*").is_ok());
        assert!(origin("https://(.*").is_err());
    }
}

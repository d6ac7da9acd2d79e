//! nginx-style `$variables`: parsing templates such as
//! `$scheme$host$request_uri` once at config compile time, and rendering
//! them per request. Used by the `hash` balancer's `key` (and later by
//! cache keys, limit keys and `ngx.var`).

use std::fmt::Write as _;
use std::net::IpAddr;

use http::request::Parts;

/// One variable a template can name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Var {
    /// `$remote_addr`: the real client address.
    RemoteAddr,
    /// `$host`: the Host header without port, lowercased.
    Host,
    /// `$request_uri`: the original path and query.
    RequestUri,
    /// `$uri`: the (possibly rewritten) path.
    Uri,
    /// `$args`: the query string.
    Args,
    /// `$scheme`: http or https.
    Scheme,
    /// `$request_method`.
    RequestMethod,
    /// `$server_port`: the port the request arrived on.
    ServerPort,
    /// `$http_NAME`: a request header (`_` stands for `-`).
    Http(http::HeaderName),
    /// `$cookie_NAME`.
    Cookie(String),
    /// `$arg_NAME`: a query argument.
    Arg(String),
    /// `$consumer`: who an authentication policy recognised (empty when
    /// none did).
    Consumer,
}

impl Var {
    /// Looks a variable up by its name (without `$`).
    pub fn by_name(name: &str) -> Result<Var, String> {
        Ok(match name {
            "remote_addr" => Var::RemoteAddr,
            "host" => Var::Host,
            "request_uri" => Var::RequestUri,
            "uri" => Var::Uri,
            "args" | "query_string" => Var::Args,
            "scheme" => Var::Scheme,
            "request_method" => Var::RequestMethod,
            "server_port" => Var::ServerPort,
            "consumer" => Var::Consumer,
            _ => {
                if let Some(h) = name.strip_prefix("http_") {
                    let header = h.replace('_', "-").to_ascii_lowercase();
                    let header = http::HeaderName::from_bytes(header.as_bytes())
                        .map_err(|_| format!("`${name}` does not name a valid header"))?;
                    Var::Http(header)
                } else if let Some(c) = name.strip_prefix("cookie_") {
                    Var::Cookie(c.to_string())
                } else if let Some(a) = name.strip_prefix("arg_") {
                    Var::Arg(a.to_string())
                } else {
                    return Err(format!(
                        "unknown variable `${name}`; known: $remote_addr, $host, $request_uri, $uri, $args, \
                         $scheme, $request_method, $server_port, $consumer, $http_NAME, $cookie_NAME, $arg_NAME"
                    ));
                }
            }
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Lit(String),
    Var(Var),
}

/// A parsed template of literal text and `$variables`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VarTemplate {
    parts: Vec<Part>,
}

impl VarTemplate {
    /// Parses `"$scheme$host$request_uri"`, `"user:${http_x_user}"` and the like.
    pub fn parse(text: &str) -> Result<VarTemplate, String> {
        let mut parts = Vec::new();
        let mut lit = String::new();
        let mut rest = text;
        while let Some(pos) = rest.find('$') {
            lit.push_str(&rest[..pos]);
            let after = &rest[pos + 1..];
            let (name, tail) = if let Some(braced) = after.strip_prefix('{') {
                let end = braced
                    .find('}')
                    .ok_or_else(|| format!("`{text}`: `${{` is not closed with `}}`"))?;
                (&braced[..end], &braced[end + 1..])
            } else {
                let end = after
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(after.len());
                (&after[..end], &after[end..])
            };
            if name.is_empty() {
                return Err(format!("`{text}`: `$` must be followed by a variable name"));
            }
            if !lit.is_empty() {
                parts.push(Part::Lit(std::mem::take(&mut lit)));
            }
            parts.push(Part::Var(Var::by_name(name)?));
            rest = tail;
        }
        lit.push_str(rest);
        if !lit.is_empty() {
            parts.push(Part::Lit(lit));
        }
        Ok(VarTemplate { parts })
    }

    /// Renders the template for one request.
    pub fn render(&self, req: &RequestVars<'_>) -> String {
        let mut out = String::with_capacity(64);
        for part in &self.parts {
            match part {
                Part::Lit(s) => out.push_str(s),
                Part::Var(v) => req.write_var(v, &mut out),
            }
        }
        out
    }
}

/// What a request is besides its head, settled once it is checked and
/// routed: what `$host`, `$request_uri`, `$remote_addr`, `$scheme` and
/// `$server_port` say, whatever the phases do to the head.
#[derive(Debug, Clone)]
pub struct RequestFacts {
    /// The host, without port, lowercased (empty until the checks settle it).
    pub host: String,
    /// The request URI as the client sent it (before rewrites).
    pub request_uri: http::Uri,
    /// The real client address (the peer's until `real_ip` rules apply).
    pub client: IpAddr,
    /// "http" or "https".
    pub scheme: &'static str,
    /// The port the request arrived on.
    pub server_port: u16,
    /// `$consumer`, once the access phase recognised one.
    pub consumer: Option<String>,
}

impl RequestFacts {
    /// `$request_uri`: the original path and query.
    pub fn request_uri(&self) -> &str {
        self.request_uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
    }

    /// The variables of a request whose head is now `parts`.
    pub fn vars<'a>(&'a self, parts: &'a Parts) -> RequestVars<'a> {
        RequestVars { parts, facts: self }
    }
}

/// What variables are read from: the request head as it is now, and the
/// request's facts.
pub struct RequestVars<'a> {
    /// The request head (with any rewrite already applied to the URI).
    pub parts: &'a Parts,
    /// The rest.
    pub facts: &'a RequestFacts,
}

impl RequestVars<'_> {
    /// Appends the value of `var` to `out` (nothing when it is unset).
    pub fn write_var(&self, var: &Var, out: &mut String) {
        match var {
            Var::RemoteAddr => {
                let _ = write!(out, "{}", self.facts.client);
            }
            Var::Host => out.push_str(&self.facts.host),
            Var::RequestUri => out.push_str(self.facts.request_uri()),
            // nginx's `$uri` is the normalized path; one that cannot be
            // normalized was refused before any variable is read, or is a
            // Lua `ngx.req.set_uri` target, shown as set.
            Var::Uri => {
                let path = self.parts.uri.path();
                out.push_str(&crate::route::normalize_path(path).unwrap_or(path.into()));
            }
            Var::Args => out.push_str(self.parts.uri.query().unwrap_or("")),
            Var::Scheme => out.push_str(self.facts.scheme),
            Var::RequestMethod => out.push_str(self.parts.method.as_str()),
            Var::ServerPort => {
                let _ = write!(out, "{}", self.facts.server_port);
            }
            Var::Http(name) => {
                if let Some(v) = self.parts.headers.get(name).and_then(|v| v.to_str().ok()) {
                    out.push_str(v);
                }
            }
            Var::Cookie(name) => {
                if let Some(v) = cookie(&self.parts.headers, name) {
                    out.push_str(v);
                }
            }
            Var::Arg(name) => {
                if let Some(v) = query_arg(self.parts.uri.query().unwrap_or(""), name) {
                    out.push_str(v);
                }
            }
            Var::Consumer => out.push_str(self.facts.consumer.as_deref().unwrap_or("")),
        }
    }
}

/// The raw value of cookie `name` from the request's Cookie headers; the
/// name matches in any case, as nginx's `$cookie_NAME` (and ngx.var, which
/// lowercases a name before looking it up, relies on that).
pub fn cookie<'h>(headers: &'h http::HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (k, v) = pair.trim().split_once('=')?;
            k.eq_ignore_ascii_case(name).then_some(v)
        })
}

/// The raw (still encoded) value of query argument `name`.
pub fn query_arg<'q>(query: &'q str, name: &str) -> Option<&'q str> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k.eq_ignore_ascii_case(name)).then_some(v)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(uri: &str, headers: &[(&str, &str)]) -> Parts {
        let mut b = http::Request::builder().uri(uri);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        match b.body(()) {
            Ok(r) => r.into_parts().0,
            Err(e) => panic!("bad test request: {e}"),
        }
    }

    #[test]
    fn renders_literals_and_variables() {
        let p = parts(
            "/a/b?x=1&user=bob",
            &[("x-api-key", "k1"), ("cookie", "a=1; sid=xyz")],
        );
        let facts = RequestFacts {
            host: "example.com".into(),
            request_uri: http::Uri::from_static("/orig?x=1&user=bob"),
            client: "10.0.0.7".parse().unwrap_or(IpAddr::from([0, 0, 0, 0])),
            scheme: "https",
            server_port: 8443,
            consumer: None,
        };
        let vars = facts.vars(&p);
        let t = VarTemplate::parse("$scheme://$host$request_uri|${http_x_api_key}|$cookie_sid|$arg_user|$uri|$remote_addr:$server_port")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            t.render(&vars),
            "https://example.com/orig?x=1&user=bob|k1|xyz|bob|/a/b|10.0.0.7:8443"
        );
    }

    #[test]
    fn cookie_names_match_in_any_case() {
        let p = parts("/", &[("cookie", "a=1; Canary=always"), ("cookie", "b=2")]);
        assert_eq!(cookie(&p.headers, "canary"), Some("always"));
        assert_eq!(cookie(&p.headers, "CANARY"), Some("always"));
        assert_eq!(cookie(&p.headers, "b"), Some("2"));
        assert_eq!(cookie(&p.headers, "canar"), None);
    }

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config::with_cases(256))]

        #[test]
        fn any_text_parses_or_is_refused_and_renders(
            text in "(\\$|\\{|\\}|host|http_|cookie_|arg_|[a-z_]{1,4}|.){0,12}",
        ) {
            let p = parts("/a?user=bob", &[("cookie", "sid=1"), ("x-a", "v")]);
            let facts = RequestFacts {
                host: "h".into(),
                request_uri: http::Uri::from_static("/a?user=bob"),
                client: IpAddr::from([127, 0, 0, 1]),
                scheme: "http",
                server_port: 80,
                consumer: None,
            };
            let vars = facts.vars(&p);
            if let Ok(t) = VarTemplate::parse(&text) {
                let out = t.render(&vars);
                if !text.contains('$') {
                    proptest::prop_assert_eq!(out, text);
                }
            } else {
                proptest::prop_assert!(text.contains('$'));
            }
        }
    }

    #[test]
    fn rejects_unknown_and_malformed() {
        assert!(
            VarTemplate::parse("$nope")
                .unwrap_err()
                .contains("unknown variable")
        );
        assert!(VarTemplate::parse("a$").is_err());
        assert!(VarTemplate::parse("${host").is_err());
        assert_eq!(
            VarTemplate::parse("plain").map(|t| t.parts.len()).ok(),
            Some(1)
        );
    }
}

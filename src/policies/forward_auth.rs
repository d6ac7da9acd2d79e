//! `forward_auth`: each request is first put to an external auth service
//! (nginx `auth_request`, Traefik ForwardAuth, APISIX `forward-auth`),
//! whose answer lets it on or is the client's answer; answers may be
//! cached per key.

use super::{Descriptor, Implementation, Kind, OptionSpec, Phase};

/// The smallest `cache_size`: what a `[lua.shared_dict]` needs too.
const MIN_CACHE: u64 = 8 * 1024;

/// The descriptor.
pub const POLICY: Descriptor = Descriptor {
    name: "forward_auth",
    phases: &[Phase::Access],
    options: &[
        OptionSpec::new(
            "uri",
            Kind::Url,
            "the auth service (`http://auth.internal:9000/check`); https:// is verified against `[lua] ssl_trusted_certificate`, else the system's CAs",
        )
        .required(),
        OptionSpec::new(
            "request_method",
            Kind::OneOf(&["GET", "POST"]),
            "how the auth service is asked: `GET` without a body, or `POST` with the client's body",
        )
        .default("\"GET\""),
        OptionSpec::new(
            "request_headers",
            Kind::HeaderList,
            "the client's headers sent to the auth service (absent: all of them but `Host`, hop-by-hop and body framing ones)",
        ),
        OptionSpec::new(
            "upstream_headers",
            Kind::HeaderList,
            "headers of an allowing (2xx) answer set on the request upstream; the client's own of these names are always removed",
        )
        .default("[]"),
        OptionSpec::new(
            "client_headers",
            Kind::HeaderList,
            "headers of a refusing (non-2xx) answer returned to the client, with its status and body",
        )
        .default("[\"WWW-Authenticate\", \"Location\", \"Set-Cookie\"]"),
        OptionSpec::new(
            "timeout",
            Kind::Duration,
            "for the whole exchange with the auth service (connect, send, answer)",
        )
        .default("\"3s\""),
        OptionSpec::new(
            "ssl_verify",
            Kind::Bool,
            "for https://: check the service's certificate chain and name",
        )
        .default("true"),
        OptionSpec::new(
            "status_on_error",
            Kind::Int { min: 400, max: 599 },
            "the answer when the auth service cannot be asked (refused, timed out, not HTTP)",
        )
        .default("500"),
        OptionSpec::new(
            "allow_degradation",
            Kind::Bool,
            "when the auth service cannot be asked, let the request on (without the `upstream_headers`) instead of answering `status_on_error`",
        )
        .default("false"),
        OptionSpec::new(
            "cache_key",
            Kind::Template,
            "cache answers per this `$var` template (`$http_authorization`); needs `cache_ttl`",
        ),
        OptionSpec::new(
            "cache_ttl",
            Kind::Duration,
            "how long a cached answer is used",
        ),
        OptionSpec::new(
            "cache_size",
            Kind::Size,
            "memory for cached answers (at least \"8KiB\"), the least recently used dropped first",
        )
        .default("\"1MiB\""),
    ],
    check: Some(|o| {
        let ttl = o.get("cache_ttl").and_then(|v| v.as_str());
        match (o.contains_key("cache_key"), ttl) {
            (true, None) => return Err("`cache_key` needs `cache_ttl`".into()),
            (false, Some(_)) => return Err("`cache_ttl` needs `cache_key`".into()),
            (true, Some(t)) if crate::config::parse_duration(t).is_ok_and(|d| d.is_zero()) => {
                return Err("`cache_ttl` must be more than 0".into());
            }
            _ => {}
        }
        let size = match o.get("cache_size") {
            Some(toml::Value::String(s)) => crate::config::parse_size(s)?,
            Some(toml::Value::Integer(n)) => u64::try_from(*n).unwrap_or(0),
            _ => MIN_CACHE,
        };
        if size < MIN_CACHE {
            return Err("`cache_size` must be at least \"8KiB\"".into());
        }
        Ok(())
    }),
    docs: "Puts each request to an external auth service before it goes on, in the access \
phase: a request to `uri` carrying the client's headers (all of them, as nginx's \
`auth_request` and Traefik send, or the `request_headers` named) and \
`X-Forwarded-Proto`, `-Method`, `-Host`, `-Uri` (the request URI with its query, as \
received) and `-For` (the client's address as moongate saw it, never a chain the client \
sent). A 2xx answer lets the request on, with the answer's `upstream_headers` set on it; \
the client's own headers of those names are removed first, so a client cannot pose as \
authenticated by sending them. Any other answer is the client's: its status, its body \
(with its `Content-Type`; moongate's error page when it sent none, as nginx's) and its \
`client_headers` (`WWW-Authenticate` of a 401, `Location` of a redirect to a login \
page, `Set-Cookie`); the upstream is not reached. When the auth service cannot be asked \
— connection refused, no answer within `timeout`, not HTTP — the client gets \
`status_on_error`, 500 by default as with nginx's `auth_request` and Traefik (APISIX \
answers 403), and the error is logged; with `allow_degradation` the request goes on \
instead, without the `upstream_headers`.\n\n\
With `cache_key` and `cache_ttl`, answers are kept per rendered key for the TTL: an \
allow with its upstream headers, a refusal with its status, body and client headers \
(not a 5xx, nor a failure to ask; not when the key renders empty). The cache is one \
store shared by every worker thread (like an `ngx.shared` dict, bounded by \
`cache_size`, least recently used first out), emptied by a reload. Concurrent misses \
on one key each ask the service. The key must hold everything the service decides by \
(the `Authorization` header, the session cookie, and `$request_method`/`$uri` if it \
decides per path).\n\n\
The service is asked over HTTP/1.1 on a new connection each time (`mg.http.request`); \
https:// is supported, the certificate checked against `[lua] ssl_trusted_certificate` \
(else the system's CA bundle) unless `ssl_verify = false`.",
    example: r#"{ use = "forward_auth", uri = "http://127.0.0.1:9000/verify", request_headers = ["Authorization", "Cookie"], upstream_headers = ["X-User-Id"], cache_key = "$http_authorization", cache_ttl = "30s" }"#,
    kong: "",
    apisix: "forward-auth",
    implementation: Implementation::Lua(include_str!("../../lua/policies/forward_auth.lua")),
    compile: None,
    authenticates: false,
};

//! `request_size`: a route's own request-body limit, native: the snapshot
//! compiles it into the route (`RouteEntry::body_limit`) and the proxy
//! applies it as soon as the route is found, to the declared length and to
//! the body as it streams, as `client_max_body_size` is applied.

use super::{Descriptor, Implementation, Kind, Native, OptionSpec, Phase};

/// The descriptor.
pub const POLICY: Descriptor = Descriptor {
    name: "request_size",
    phases: &[Phase::Rewrite],
    options: &[OptionSpec::new(
        "max_body_size",
        Kind::Size,
        "the largest request body (413 above), lower or higher than `[server]`'s",
    )
    .required()],
    check: None,
    docs: "Overrides `[server] client_max_body_size` for the route, lower or higher: a \
request declaring a larger `Content-Length` gets 413 before anything runs, and a \
chunked body is cut off with 413 (or its upstream try fails) once it passes the limit. \
Applied natively as soon as the route is found, before the rewrite phase and any Lua.",
    example: r#"{ use = "request_size", max_body_size = "64KiB" }"#,
    kong: "request-size-limiting",
    apisix: "client-control",
    implementation: Implementation::Native(Native::RequestSize),
    compile: None,
    authenticates: false,
};

/// The limit in bytes a route's `request_size` options give.
pub fn max_body_size(options: &toml::Table) -> Option<u64> {
    match options.get("max_body_size")? {
        toml::Value::String(s) => crate::config::parse_size(s).ok(),
        toml::Value::Integer(n) => u64::try_from(*n).ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_as_text_or_bytes() {
        let t: toml::Table = toml::from_str("max_body_size = \"2KiB\"").unwrap_or_default();
        assert_eq!(max_body_size(&t), Some(2048));
        let t: toml::Table = toml::from_str("max_body_size = 10").unwrap_or_default();
        assert_eq!(max_body_size(&t), Some(10));
    }
}

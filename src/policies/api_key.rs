//! `api_key`: requests need a known API key.

use super::native::Compiled;
use super::{Descriptor, Implementation, Kind, OptionSpec, Phase};

/// The descriptor.
pub const POLICY: Descriptor = Descriptor {
    name: "api_key",
    phases: &[Phase::Access],
    options: &[
        OptionSpec::new("header", Kind::Header, "the header carrying the key")
            .default("\"X-Api-Key\""),
        OptionSpec::new(
            "query_arg",
            Kind::Str,
            "a query argument tried when the header is absent",
        ),
        OptionSpec::new("keys", Kind::StrList, "known keys (each its own consumer)"),
        OptionSpec::new(
            "keys_file",
            Kind::File,
            "a file of `KEY [CONSUMER]` lines (`#` comments)",
        ),
        OptionSpec::new(
            "dict",
            Kind::Str,
            "a `[lua.shared_dict]` mapping key → consumer",
        ),
        OptionSpec::new(
            "consumer_header",
            Kind::Header,
            "the upstream header naming the consumer",
        )
        .default("\"X-Consumer\""),
    ],
    check: None,
    docs: "Requests need a known API key, from a header (or a query argument): one of \
`keys`, `keys_file` or `dict`, or a `[consumer.NAME]`'s `keys`. \
No key: 401 with `WWW-Authenticate: ApiKey header=\"...\"`; an unknown key: 403. \
The consumer's name becomes `$consumer` and goes upstream in `consumer_header` and \
`X-Consumer-Username` (with `X-Consumer-Groups`); the key itself does not.",
    example: r#"{ use = "api_key", keys_file = "conf.d/api-keys.txt", query_arg = "key" }"#,
    kong: "key-auth",
    apisix: "key-auth",
    implementation: Implementation::Lua(include_str!("../../lua/policies/api_key.lua")),
    compile: Some(|o, cx| {
        let own = ["keys", "keys_file", "dict"]
            .iter()
            .any(|k| o.contains_key(*k));
        if own || cx.consumers.has_api_keys() {
            Ok(Compiled::Checked)
        } else {
            Err("give the known keys: `keys`, `keys_file`, `dict`, or consumers with `keys`".into())
        }
    }),
    authenticates: true,
};

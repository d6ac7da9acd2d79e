//! `request_transform`: headers and query arguments changed on the way
//! upstream.

use super::{Descriptor, Implementation, Kind, OptionSpec, Phase};

/// The header changes `response_transform` offers too.
const H: [OptionSpec; 5] = super::response_transform::HEADER_CHANGES;

/// The descriptor.
pub const POLICY: Descriptor = Descriptor {
    name: "request_transform",
    phases: &[Phase::Access],
    options: &[
        H[0],
        H[1],
        H[2],
        H[3],
        H[4],
        OptionSpec::new(
            "remove_querystring",
            Kind::StrList,
            "query arguments removed",
        ),
        OptionSpec::new(
            "rename_querystring",
            Kind::ArgRenames,
            "query arguments renamed",
        ),
        OptionSpec::new("set_querystring", Kind::ArgTemplates, "query arguments set"),
        OptionSpec::new(
            "add_querystring",
            Kind::ArgTemplates,
            "query arguments set only when absent",
        ),
        OptionSpec::new(
            "append_querystring",
            Kind::ArgTemplates,
            "one more value for each argument",
        ),
    ],
    check: Some(|o| {
        if o.is_empty() {
            Err("give at least one change (`set_headers`, `remove_querystring`, ...)".into())
        } else {
            Ok(())
        }
    }),
    docs: "Changes the request on its way upstream, in the access phase, in Kong's \
request-transformer order: remove, rename, set, add (only when absent), append (one more \
value) — headers first, then query arguments. Values are `$var` templates rendered per \
request from the request as it reached the policy, before any of its changes (`$remote_addr`, `$host`, `$http_NAME`, \
`$arg_NAME`, `$cookie_NAME`, ...).",
    example: r#"{ use = "request_transform", set_headers = { "X-Client" = "$remote_addr" }, remove_headers = ["Cookie"], rename_querystring = { q = "query" } }"#,
    kong: "request-transformer",
    apisix: "proxy-rewrite",
    implementation: Implementation::Lua(include_str!("../../lua/policies/request_transform.lua")),
    compile: None,
    authenticates: false,
};

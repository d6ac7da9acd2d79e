//! `response_transform`: response headers changed on the way to the client.

use super::{Descriptor, Implementation, Kind, OptionSpec, Phase};

/// The header changes, in the order they apply; `request_transform`
/// offers the same ones (and its query argument changes after them).
pub(super) const HEADER_CHANGES: [OptionSpec; 5] = [
    OptionSpec::new("remove_headers", Kind::HeaderList, "headers removed"),
    OptionSpec::new(
        "rename_headers",
        Kind::HeaderRenames,
        "headers renamed (value kept)",
    ),
    OptionSpec::new(
        "set_headers",
        Kind::HeaderTemplates,
        "headers set, replacing any value",
    ),
    OptionSpec::new(
        "add_headers",
        Kind::HeaderTemplates,
        "headers set only when absent",
    ),
    OptionSpec::new(
        "append_headers",
        Kind::HeaderTemplates,
        "one more value for each header",
    ),
];

/// The descriptor.
pub const POLICY: Descriptor = Descriptor {
    name: "response_transform",
    phases: &[Phase::HeaderFilter],
    options: &HEADER_CHANGES,
    check: Some(|o| {
        if o.is_empty() {
            Err("give at least one change (`set_headers`, `remove_headers`, ...)".into())
        } else {
            Ok(())
        }
    }),
    docs: "Changes the response head on its way to the client, as a header filter (on \
proxied, cached, static and Lua answers alike), in Kong's response-transformer order: \
remove, rename, set, add (only when absent), append (one more value). Values are `$var` \
templates rendered per request.",
    example: r#"{ use = "response_transform", remove_headers = ["X-Powered-By"], set_headers = { "X-Served-By" = "edge-$server_port" } }"#,
    kong: "response-transformer",
    apisix: "response-rewrite",
    implementation: Implementation::Lua(include_str!("../../lua/policies/response_transform.lua")),
    compile: None,
    authenticates: false,
};

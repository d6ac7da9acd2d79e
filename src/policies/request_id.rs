//! `request_id`: pass a valid request id through, or make one.

use super::{Descriptor, Implementation, Kind, OptionSpec, Phase};

/// The descriptor.
pub const POLICY: Descriptor = Descriptor {
    name: "request_id",
    phases: &[Phase::Rewrite, Phase::HeaderFilter],
    options: &[
        OptionSpec::new("header", Kind::Header, "the header carrying the id")
            .default("\"X-Request-Id\""),
    ],
    check: None,
    docs: "Passes a valid request id (1 to 200 of `A-Za-z0-9._-`) through, or \
replaces it with `$request_id`; the upstream receives it, so does the client in the \
response, and the access log's `request_id` field agrees.",
    example: r#"{ use = "request_id" }"#,
    kong: "correlation-id",
    apisix: "request-id",
    implementation: Implementation::Lua(include_str!("../../lua/policies/request_id.lua")),
    compile: None,
    authenticates: false,
};

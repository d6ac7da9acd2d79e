//! `ip`: allow or deny clients by address.

use super::{Descriptor, Implementation, Kind, OptionSpec, Phase};

/// The descriptor.
pub const POLICY: Descriptor = Descriptor {
    name: "ip",
    phases: &[Phase::Access],
    options: &[
        OptionSpec::new("allow", Kind::Cidrs, "only these clients may pass"),
        OptionSpec::new(
            "deny",
            Kind::Cidrs,
            "these clients are refused (checked first)",
        ),
        OptionSpec::new(
            "status",
            Kind::Int { min: 400, max: 599 },
            "the status a refused client gets",
        )
        .default("403"),
    ],
    check: Some(|o| {
        if o.contains_key("allow") || o.contains_key("deny") {
            Ok(())
        } else {
            Err("give `allow`, `deny` or both".into())
        }
    }),
    docs: "Allows or denies clients by their real address (`$remote_addr`, after \
`trusted_proxies`), IPv4 and IPv6 CIDRs. A denied client, or one outside a given \
allow list, gets `status`.",
    example: r#"{ use = "ip", allow = ["10.0.0.0/8"], deny = ["10.9.0.0/16"] }"#,
    kong: "ip-restriction",
    apisix: "ip-restriction",
    implementation: Implementation::Lua(include_str!("../../lua/policies/ip.lua")),
    compile: None,
    authenticates: false,
};

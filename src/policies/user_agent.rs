//! `user_agent`: refuse clients by User-Agent regexes.

use super::{Descriptor, Implementation, Kind, OptionSpec, Phase};

/// The descriptor.
pub const POLICY: Descriptor = Descriptor {
    name: "user_agent",
    phases: &[Phase::Access],
    options: &[
        OptionSpec::new(
            "deny",
            Kind::Regexes,
            "a User-Agent matching one is refused",
        )
        .required(),
        OptionSpec::new(
            "allow",
            Kind::Regexes,
            "exceptions: a User-Agent matching one passes, checked first",
        ),
        OptionSpec::new(
            "status",
            Kind::Int { min: 400, max: 599 },
            "the status a refused client gets",
        )
        .default("403"),
    ],
    check: None,
    docs: "Refuses clients by `User-Agent`: one matching a `deny` regex (PCRE, unanchored; \
`(?i)` for case-insensitive) gets `status`, unless it matches an `allow` regex too. \
A request without `User-Agent` is matched as the empty string.",
    example: r#"{ use = "user_agent", deny = ["(?i)curl", "[Bb]ot"], allow = ["Googlebot"] }"#,
    kong: "bot-detection",
    apisix: "ua-restriction",
    implementation: Implementation::Lua(include_str!("../../lua/policies/user_agent.lua")),
    compile: None,
    authenticates: false,
};

//! `cors`: Cross-Origin Resource Sharing answered at the edge.

use super::{Descriptor, Implementation, Kind, OptionSpec, Phase};

/// The descriptor.
pub const POLICY: Descriptor = Descriptor {
    name: "cors",
    phases: &[Phase::Access, Phase::HeaderFilter],
    options: &[
        OptionSpec::new(
            "origins",
            Kind::Origins,
            "allowed origins: `\"*\"`, exact ones (`https://app.example.com`) or regexes (any other character, matched against the whole Origin)",
        )
        .default("[\"*\"]"),
        OptionSpec::new("methods", Kind::Methods, "`Access-Control-Allow-Methods`")
            .default("[\"GET\", \"HEAD\", \"PUT\", \"PATCH\", \"POST\", \"DELETE\", \"OPTIONS\"]"),
        OptionSpec::new(
            "headers",
            Kind::HeaderList,
            "`Access-Control-Allow-Headers` (absent: the preflight's `Access-Control-Request-Headers` echoed)",
        ),
        OptionSpec::new(
            "exposed_headers",
            Kind::HeaderList,
            "`Access-Control-Expose-Headers` on actual responses",
        ),
        OptionSpec::new(
            "credentials",
            Kind::Bool,
            "`Access-Control-Allow-Credentials: true` (the Origin is echoed instead of `*`)",
        )
        .default("false"),
        OptionSpec::new(
            "max_age",
            Kind::Int { min: 0, max: 86_400 * 365 },
            "`Access-Control-Max-Age`, seconds a preflight may be cached",
        ),
    ],
    check: None,
    docs: "Cross-Origin Resource Sharing at the edge. A preflight (`OPTIONS` with `Origin` \
and `Access-Control-Request-Method`) is answered with 204 by moongate and never reaches \
the upstream; a plain `OPTIONS` goes upstream. Other responses get \
`Access-Control-Allow-Origin` (and `-Credentials`, `-Expose-Headers`) when their `Origin` \
is allowed; an origin not allowed gets none of them, so the browser refuses the answer. \
`Vary: Origin` is added to every answer whose headers depend on the `Origin` (any \
`origins` but `[\"*\"]` alone, or `credentials`), so a cache keeps one variant per origin. The headers are made per request in the header \
filter, after moongate's own cache: a cached answer gets the asking origin's headers.",
    example: r#"{ use = "cors", origins = ["https://app.example.com", "https://.*\\.example\\.org"], credentials = true, max_age = 600 }"#,
    kong: "cors",
    apisix: "cors",
    implementation: Implementation::Lua(include_str!("../../lua/policies/cors.lua")),
    compile: None,
    authenticates: false,
};

//! `redirect`: answer with a redirect, to HTTPS or to a `$var` template.

use super::{Descriptor, Implementation, Kind, OptionSpec, Phase};

/// The descriptor.
pub const POLICY: Descriptor = Descriptor {
    name: "redirect",
    phases: &[Phase::Rewrite],
    options: &[
        OptionSpec::new(
            "location",
            Kind::Template,
            "where to: a `$var` template (`https://new.example.com$request_uri`)",
        ),
        OptionSpec::new(
            "http_to_https",
            Kind::Bool,
            "plain-HTTP requests go to the same URL over HTTPS; HTTPS ones are served",
        )
        .default("false"),
        OptionSpec::new(
            "https_port",
            Kind::Int {
                min: 1,
                max: 65_535,
            },
            "the port `http_to_https` sends to (443: none written)",
        )
        .default("443"),
        OptionSpec::new(
            "status_code",
            Kind::IntOneOf(&[301, 302, 303, 307, 308]),
            "the redirect's status",
        )
        .default("301"),
    ],
    check: Some(|o| {
        let https = o.get("http_to_https").and_then(|v| v.as_bool()) == Some(true);
        match (o.contains_key("location"), https) {
            (true, false) | (false, true) => Ok(()),
            (true, true) => Err("give `location` or `http_to_https = true`, not both".into()),
            (false, false) => Err("give `location` or `http_to_https = true`".into()),
        }
    }),
    docs: "Answers with a redirect instead of serving the route, in the rewrite phase \
(before any access policy): to the same URL over HTTPS (`http_to_https`; requests that \
came over HTTPS pass on), or to `location`, a template of `$var`s rendered per request \
(`$scheme`, `$host`, `$request_uri`, `$uri`, `$args`, `$http_NAME`, `$cookie_NAME`, \
`$arg_NAME`, ...; checked at `moongate check`).",
    example: r#"{ use = "redirect", location = "https://new.example.com$request_uri", status_code = 308 }"#,
    kong: "redirect",
    apisix: "redirect",
    implementation: Implementation::Lua(include_str!("../../lua/policies/redirect.lua")),
    compile: None,
    authenticates: false,
};

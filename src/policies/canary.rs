//! `canary`: send a share of a route's requests, or those matching a
//! header, cookie or query argument, to another upstream; sticky by a key.

use super::{Descriptor, Implementation, Kind, OptionSpec, Phase};

/// The descriptor.
pub const POLICY: Descriptor = Descriptor {
    name: "canary",
    phases: &[Phase::Access],
    options: &[
        OptionSpec::new(
            "upstream",
            Kind::Upstream,
            "the canary `[upstream.NAME]`; the route's own `upstream` serves the other requests",
        )
        .required(),
        OptionSpec::new(
            "percentage",
            Kind::Int { min: 0, max: 100 },
            "the share of requests, in percent, that go to the canary (absent: 0, only matching requests do)",
        ),
        OptionSpec::new(
            "hash_on",
            Kind::Template,
            "makes the split sticky: requests whose key renders the same go to the same side (`$cookie_user`, `$remote_addr`, `$http_x_user_id`); absent, or rendered empty: each request is drawn at random",
        ),
        OptionSpec::new(
            "header",
            Kind::Header,
            "a request carrying this header (non-empty) always goes to the canary",
        ),
        OptionSpec::new(
            "header_value",
            Kind::Str,
            "... only when `header` has exactly this value",
        ),
        OptionSpec::new(
            "cookie",
            Kind::Cookie,
            "a request carrying this cookie (non-empty) always goes to the canary",
        ),
        OptionSpec::new(
            "cookie_value",
            Kind::Str,
            "... only when `cookie` has exactly this value",
        ),
        OptionSpec::new(
            "arg",
            Kind::Arg,
            "a request with this query argument (non-empty) always goes to the canary",
        ),
        OptionSpec::new(
            "arg_value",
            Kind::Str,
            "... only when `arg` has exactly this value (as sent, not URL-decoded)",
        ),
    ],
    check: Some(check),
    docs: "Sends part of a route's requests to another upstream, the canary, while the \
route's own `upstream` serves the rest. A request matching `header`, `cookie` or `arg` \
(with its `*_value` when given; any of the three) always goes to the canary; of the other \
requests, `percentage` percent do.\n\n\
Without `hash_on`, each request is drawn at random. With it, the side is a function of \
the key: the CRC32 of the rendered `hash_on` modulo 100 (as Kong's `canary`), below \
`percentage` for the canary. So a client keeps its side over its requests, in every \
worker and across reloads; and since `percentage` only moves the boundary between the \
buckets, raising it only moves keys from the stable side to the canary, never back \
(lowering it, the other way). A request whose key renders as the empty string (no \
`user` cookie yet, for `$cookie_user`) is drawn at random.\n\n\
The share is named `percentage`, as in Kong, because it is an absolute share out of \
100; in moongate a `weight` is a server's share relative to the other servers of its \
upstream (APISIX's `traffic-split` gives relative `weight`s to `weighted_upstreams`). \
The conditions correspond to APISIX's `match.vars` and nginx ingress's \
`canary-by-header`, `canary-by-header-value` and `canary-by-cookie`.\n\n\
It runs in the access phase, so it sees the request as the rewrite phase left it and \
after the access policies listed before it (an authentication policy refuses first). \
The canary is chosen as `mg.upstream.set` would choose it: its servers, balancer, \
`lua.balancer` and health checks apply. On a route with a `cache`, requests sent to \
the canary neither read nor fill the cache, so neither side is served the other's \
answers.",
    example: r#"{ use = "canary", upstream = "api_v2", percentage = 10, hash_on = "$cookie_user", header = "X-Canary", header_value = "always" }"#,
    kong: "canary",
    apisix: "traffic-split",
    implementation: Implementation::Lua(include_str!("../../lua/policies/canary.lua")),
    compile: None,
    authenticates: false,
};

/// A `*_value` needs its name; and the entry must send something.
fn check(o: &toml::Table) -> Result<(), String> {
    for (name, what) in [
        ("header", "header"),
        ("cookie", "cookie"),
        ("arg", "query argument"),
    ] {
        let value = format!("{name}_value");
        if o.contains_key(&value) && !o.contains_key(name) {
            return Err(format!("`{value}` needs `{name}`, the {what} it compares"));
        }
    }
    let matching = ["header", "cookie", "arg"]
        .iter()
        .any(|k| o.contains_key(*k));
    if o.contains_key("hash_on") && !o.contains_key("percentage") {
        return Err("`hash_on` makes the `percentage` split sticky; give `percentage`".into());
    }
    if !matching && !o.contains_key("percentage") {
        return Err(
            "give `percentage`, or `header`, `cookie` or `arg` to choose the canary's requests"
                .into(),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checked(text: &str) -> Result<toml::Table, String> {
        let mut t: toml::Table = toml::from_str(text).unwrap_or_else(|e| panic!("{e}"));
        super::super::schema::check_options(&POLICY, &mut t)
            .map(|()| t)
            .map_err(|(_, m)| m)
    }

    #[test]
    fn options_that_go_together() {
        for ok in [
            "upstream = \"b\"\npercentage = 0",
            "upstream = \"b\"\nheader = \"X-Canary\"",
            "upstream = \"b\"\ncookie = \"canary\"\ncookie_value = \"always\"",
            "upstream = \"b\"\narg = \"canary\"\npercentage = 5\nhash_on = \"$remote_addr\"",
        ] {
            assert!(checked(ok).is_ok(), "{ok}: {:?}", checked(ok));
        }
        for (bad, message) in [
            (
                "upstream = \"b\"",
                "policy `canary`: give `percentage`, or `header`, `cookie` or `arg` to choose the canary's requests",
            ),
            (
                "upstream = \"b\"\npercentage = 5\nheader_value = \"1\"",
                "policy `canary`: `header_value` needs `header`, the header it compares",
            ),
            (
                "upstream = \"b\"\ncookie = \"c\"\narg_value = \"1\"",
                "policy `canary`: `arg_value` needs `arg`, the query argument it compares",
            ),
            (
                "upstream = \"b\"\nheader = \"X-Canary\"\nhash_on = \"$remote_addr\"",
                "policy `canary`: `hash_on` makes the `percentage` split sticky; give `percentage`",
            ),
            (
                "upstream = \"b\"\npercentage = 101",
                "`percentage`: 101 is outside 0..=100",
            ),
            ("percentage = 5", "policy `canary` needs `upstream`"),
        ] {
            let e = checked(bad).unwrap_err();
            assert!(e.starts_with(message), "{bad}: {e}");
        }
    }
}

//! `acl`: lets a route's requests on or refuses them by the groups of the
//! consumer an authentication policy recognised before it.

use super::native::{Compiled, Context};
use super::schema::str_list;
use super::{Descriptor, Implementation, Kind, OptionSpec, Phase};

/// The descriptor.
pub const POLICY: Descriptor = Descriptor {
    name: "acl",
    phases: &[Phase::Access],
    options: &[
        OptionSpec::new("allow", Kind::StrList, "groups let in (any one suffices)"),
        OptionSpec::new("deny", Kind::StrList, "groups refused (checked first)"),
        OptionSpec::new(
            "hide_groups_header",
            Kind::Bool,
            "do not send `X-Consumer-Groups` upstream",
        )
        .default("false"),
    ],
    check: Some(|o| {
        let given = |k: &str| {
            o.get(k)
                .and_then(|v| v.as_array())
                .is_some_and(|a| !a.is_empty())
        };
        if given("allow") || given("deny") {
            Ok(())
        } else {
            Err("give `allow` or `deny` groups".into())
        }
    }),
    docs: "Lets requests on by the groups of their consumer (`groups = [...]` of a \
`[consumer.NAME]`), as recognised by an authentication policy listed **before** it on the \
route (`api_key`, `jwt`, `basic_auth`, or a script that set `ngx.var.consumer`). A consumer \
in a `deny` group gets 403; with `allow`, one in none of those groups gets 403. No \
consumer at all: 401 (put an authentication policy first).",
    example: r#"{ use = "acl", allow = ["admins", "ops"] }"#,
    kong: "acl",
    apisix: "consumer-restriction",
    implementation: Implementation::Lua(include_str!("../../lua/policies/acl.lua")),
    compile: Some(compile),
    authenticates: false,
};

/// An `acl` policy, compiled.
pub struct Acl {
    allow: Vec<String>,
    deny: Vec<String>,
    /// Whether `X-Consumer-Groups` is removed from the upstream request.
    pub hide_groups_header: bool,
}

fn compile(o: &toml::Table, _: &Context<'_>) -> Result<Compiled, String> {
    Ok(Compiled::Acl(Acl {
        allow: str_list(o, "allow"),
        deny: str_list(o, "deny"),
        hide_groups_header: o.get("hide_groups_header").and_then(|v| v.as_bool()) == Some(true),
    }))
}

impl Acl {
    /// The status refusing a consumer in `groups`, or `None` to let them on.
    pub fn decide(&self, groups: &[String]) -> Option<u16> {
        let member = |list: &[String]| groups.iter().any(|g| list.contains(g));
        if member(&self.deny) || (!self.allow.is_empty() && !member(&self.allow)) {
            return Some(403);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deny_first_then_allow() {
        let acl = Acl {
            allow: vec!["admins".into(), "ops".into()],
            deny: vec!["banned".into()],
            hide_groups_header: false,
        };
        let g = |l: &[&str]| l.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(acl.decide(&g(&["ops"])), None);
        assert_eq!(acl.decide(&g(&["ops", "banned"])), Some(403));
        assert_eq!(acl.decide(&g(&["users"])), Some(403));
        assert_eq!(acl.decide(&[]), Some(403));
        let deny_only = Acl {
            allow: vec![],
            deny: vec!["banned".into()],
            hide_groups_header: false,
        };
        assert_eq!(deny_only.decide(&[]), None);
    }
}

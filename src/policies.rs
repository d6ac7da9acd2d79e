//! The bundled policies (`policies = [{ use = "NAME", ... }]` on a route):
//! one descriptor per policy, each in its own file under `policies/`, and
//! the registry that lists them. A descriptor states everything about its
//! policy — name, phases, option schema, docs, the Kong/APISIX plugin it
//! stands for, and its implementation — so config validation
//! (`config::validate`), the Lua loader (`lua::policies`) and
//! `docs/policies.md` all read the same place.
//!
//! Adding a policy: a file here with a `pub const POLICY: Descriptor`, and
//! one line in [`REGISTRY`]. This module knows nothing of Lua VMs or
//! spans: it describes, checks option values, and (for the policies with a
//! native half, `native`) compiles options and acts on a request head.

pub mod schema;
pub mod api_key;
pub mod ip;
pub mod request_id;
pub mod cors;
pub mod redirect;
pub mod request_size;
pub mod user_agent;
pub mod request_transform;
pub mod response_transform;
pub mod jwt;
pub mod basic_auth;
pub mod acl;
pub mod credentials;
pub mod native;
pub mod canary;
pub mod forward_auth;
pub mod docs;

pub use schema::{Kind, OptionSpec};

/// Every bundled policy, in the order the docs list them.
pub const REGISTRY: &[&Descriptor] = &[
    &api_key::POLICY,
    &ip::POLICY,
    &request_id::POLICY,
    &cors::POLICY,
    &redirect::POLICY,
    &request_size::POLICY,
    &user_agent::POLICY,
    &request_transform::POLICY,
    &response_transform::POLICY,
    &jwt::POLICY,
    &basic_auth::POLICY,
    &acl::POLICY,
    &canary::POLICY,
    &forward_auth::POLICY,
];

/// A phase a policy runs in (the request phases a route's Lua has).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// `rewrite`: before access; may change the URI, headers, method.
    Rewrite,
    /// `access`: may refuse the request.
    Access,
    /// `header_filter`: sees and may change the response head.
    HeaderFilter,
    /// `body_filter`: sees and may change the response body.
    BodyFilter,
    /// `log`: after the response was sent.
    Log,
}

impl Phase {
    /// The name ngx_lua uses (also the Lua policy object's method name).
    pub fn name(self) -> &'static str {
        match self {
            Phase::Rewrite => "rewrite",
            Phase::Access => "access",
            Phase::HeaderFilter => "header_filter",
            Phase::BodyFilter => "body_filter",
            Phase::Log => "log",
        }
    }
}

/// How a policy is carried out.
#[derive(Debug, Clone, Copy)]
pub enum Implementation {
    /// A Lua module (the text of `lua/policies/NAME.lua`) whose `new(opts)`
    /// builds an object once per VM, with one method per phase.
    Lua(&'static str),
    /// Carried out by moongate's Rust request path; the variant says which
    /// part of it reads the policy's options.
    Native(Native),
}

/// The native policies, each handled where the request path owns the
/// matter (see the variant).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Native {
    /// `request_size`: the route's request-body limit (`snapshot` compiles
    /// it; `proxy` applies it once the route is known).
    RequestSize,
}

/// A descriptor's check across its options: the message when they do not
/// go together.
pub type CrossCheck = fn(&toml::Table) -> Result<(), String>;

/// Everything moongate knows about one bundled policy.
#[derive(Debug)]
pub struct Descriptor {
    /// The name a route gives in `use = "NAME"`.
    pub name: &'static str,
    /// The phases it runs in, in order.
    pub phases: &'static [Phase],
    /// Its options; any other key is a config error.
    pub options: &'static [OptionSpec],
    /// A check across options (e.g. "one of these is required"), after each
    /// option passed its own; the message is reported at the policy.
    pub check: Option<CrossCheck>,
    /// What it does, in Markdown, for docs/policies.md.
    pub docs: &'static str,
    /// A route's `policies` entry using it, for the docs (TOML).
    pub example: &'static str,
    /// The Kong plugin it corresponds to ("" when there is none).
    pub kong: &'static str,
    /// The APISIX plugin it corresponds to ("" when there is none).
    pub apisix: &'static str,
    /// How it runs.
    pub implementation: Implementation,
    /// Its native half, compiled once per configuration from the options
    /// (keys, files), which its Lua handler calls into.
    pub compile: Option<native::Compile>,
    /// Whether it recognises the caller (sets `$consumer`): policies that
    /// decide by the consumer (`acl`) must come after one.
    pub authenticates: bool,
}

impl Descriptor {
    /// The option named `key`.
    pub fn option(&self, key: &str) -> Option<&'static OptionSpec> {
        self.options.iter().find(|o| o.key == key)
    }
}

/// The policy named `name`.
pub fn find(name: &str) -> Option<&'static Descriptor> {
    REGISTRY.iter().copied().find(|d| d.name == name)
}

/// The registered names, for error messages.
pub fn names() -> String {
    REGISTRY
        .iter()
        .map(|d| d.name)
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_defaults_pass_their_own_schema() {
        for (i, d) in REGISTRY.iter().enumerate() {
            assert!(
                REGISTRY[..i].iter().all(|o| o.name != d.name),
                "{} registered twice",
                d.name
            );
            assert!(!d.phases.is_empty(), "{} runs in no phase", d.name);
            for o in d.options {
                if let Some(v) = o.default_value() {
                    schema::check_value(o, &v)
                        .unwrap_or_else(|e| panic!("{}.{}: default: {e}", d.name, o.key));
                }
                assert!(
                    !(o.required && o.default.is_some()),
                    "{}.{}: required with a default",
                    d.name,
                    o.key
                );
            }
        }
    }

    #[test]
    fn every_example_passes_its_schema() {
        for d in REGISTRY {
            let table: toml::Table = toml::from_str(&format!("p = {}", d.example))
                .unwrap_or_else(|e| panic!("{}: example: {e}", d.name));
            let Some(toml::Value::Table(entry)) = table.get("p") else {
                panic!("{}: the example is not an inline table", d.name)
            };
            assert_eq!(
                entry.get("use").and_then(|u| u.as_str()),
                Some(d.name),
                "{}: example",
                d.name
            );
            let mut options = entry.clone();
            options.remove("use");
            schema::check_options(d, &mut options)
                .unwrap_or_else(|(k, e)| panic!("{}: example: {k:?}: {e}", d.name));
        }
    }
}

//! The native half of policies whose work is crypto or lookups (`jwt`,
//! `basic_auth`, `acl`): a descriptor's `compile` turns a route's options
//! into one of these once per configuration (keys parsed, files read),
//! and the policy's Lua handler calls into it per request (`lua::auth`).
//! What every authentication policy does once it knows who is calling —
//! `$consumer` and the `X-Consumer-*` headers — is here too.

use std::path::PathBuf;
use std::sync::Arc;

use http::HeaderValue;
use http::header::HeaderName;
use http::request::Parts;

use super::{acl::Acl, basic_auth::Basic, jwt::Jwt};
use crate::auth::consumer::{Consumer, Consumers};

/// A policy's compiled state.
pub enum Compiled {
    /// `jwt` (boxed: its verifier is the largest by far).
    Jwt(Box<Jwt>),
    /// `basic_auth`.
    Basic(Basic),
    /// `acl`.
    Acl(Acl),
    /// Checked against the configuration, with nothing to keep (`api_key`:
    /// its keys exist somewhere).
    Checked,
}

/// Every policy's compiled state in one configuration, by the policy's
/// number (routes in order, each route's policies in order), and the
/// consumers; shared by every VM of the configuration.
#[derive(Default)]
pub struct Natives {
    /// By policy number; `None` for policies without a native half.
    pub compiled: Vec<Option<Compiled>>,
    /// The configuration's consumers.
    pub consumers: Arc<Consumers>,
}

impl Natives {
    /// Policy `id`'s compiled state.
    pub fn get(&self, id: usize) -> Option<&Compiled> {
        self.compiled.get(id)?.as_ref()
    }
}

impl std::fmt::Debug for Natives {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Natives")
            .field(
                "compiled",
                &self.compiled.iter().filter(|c| c.is_some()).count(),
            )
            .field("consumers", &self.consumers.len())
            .finish()
    }
}

/// What compiling may use besides the options.
pub struct Context<'a> {
    /// The configuration's consumers.
    pub consumers: &'a Arc<Consumers>,
    /// `[lua] ssl_trusted_certificate` (trust roots for `https://` fetches;
    /// the system's when absent).
    pub trusted_certificate: Option<PathBuf>,
}

/// Compiles a policy's options (already checked against its schema).
pub type Compile = fn(&toml::Table, &Context<'_>) -> Result<Compiled, String>;

/// `X-Consumer-Username`: the recognised consumer's name, upstream.
pub const CONSUMER_USERNAME: HeaderName = HeaderName::from_static("x-consumer-username");
/// `X-Consumer-Groups`: their groups, comma-separated (absent when none).
pub const CONSUMER_GROUPS: HeaderName = HeaderName::from_static("x-consumer-groups");
/// `X-Credential-Identifier`: which credential they used (an API key's
/// consumer, a JWT's key claim, a basic-auth user).
pub const CREDENTIAL_IDENTIFIER: HeaderName = HeaderName::from_static("x-credential-identifier");

/// Who an authentication policy recognised.
#[derive(Debug, Clone)]
pub struct Recognised {
    /// `$consumer`.
    pub name: String,
    /// Their `[consumer.NAME]` (or consumers file line), if they have one.
    pub consumer: Option<Arc<Consumer>>,
    /// The credential's identifier (`X-Credential-Identifier`).
    pub credential: String,
}

impl Recognised {
    /// Their groups (none without a consumer entry).
    pub fn groups(&self) -> &[String] {
        self.consumer
            .as_deref()
            .map_or(&[], |c| c.groups.as_slice())
    }
}

/// Drops any `X-Consumer-*` / `X-Credential-Identifier` the client sent:
/// only a policy may say who the caller is.
pub fn clear_consumer_headers(parts: &mut Parts) {
    for h in [&CONSUMER_USERNAME, &CONSUMER_GROUPS, &CREDENTIAL_IDENTIFIER] {
        parts.headers.remove(h);
    }
}

/// Tells the upstream who `who` is (the client's own claims to it were
/// dropped first). A value that cannot be a header (a claim holding a
/// control character) is left out rather than sent mangled.
pub fn announce(parts: &mut Parts, who: &Recognised) {
    clear_consumer_headers(parts);
    let mut put = |name: &HeaderName, value: &str| {
        if let Ok(v) = HeaderValue::from_str(value) {
            parts.headers.insert(name.clone(), v);
        }
    };
    put(&CONSUMER_USERNAME, &who.name);
    put(&CREDENTIAL_IDENTIFIER, &who.credential);
    let groups = who.groups();
    if !groups.is_empty() {
        put(&CONSUMER_GROUPS, &groups.join(", "));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn announce_replaces_what_the_client_claimed() {
        let (mut parts, ()) = http::Request::builder()
            .header("X-Consumer-Username", "admin")
            .header("X-Consumer-Groups", "admins")
            .body(())
            .unwrap_or_default()
            .into_parts();
        let who = Recognised {
            name: "alice".into(),
            consumer: None,
            credential: "alice-iss".into(),
        };
        announce(&mut parts, &who);
        assert_eq!(
            parts.headers.get(&CONSUMER_USERNAME).map(|v| v.as_bytes()),
            Some(&b"alice"[..])
        );
        assert!(parts.headers.get(&CONSUMER_GROUPS).is_none());
        assert_eq!(
            parts
                .headers
                .get(&CREDENTIAL_IDENTIFIER)
                .map(|v| v.as_bytes()),
            Some(&b"alice-iss"[..])
        );
        let bad = Recognised {
            name: "a\nb".into(),
            ..who
        };
        announce(&mut parts, &bad);
        assert!(parts.headers.get(&CONSUMER_USERNAME).is_none());
    }
}

//! `basic_auth`: HTTP Basic authentication (RFC 7617) against an htpasswd
//! file and the consumers' `basic` passwords, checked natively
//! (`crate::auth::htpasswd`), slow hashes off the event loop.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use http::header::AUTHORIZATION;
use http::request::Parts;

use super::native::{Compiled, Context, Recognised};
use super::{Descriptor, Implementation, Kind, OptionSpec, Phase};
use crate::auth::consumer::Consumers;
use crate::auth::htpasswd::{Htpasswd, PasswordHash, VerifyCache};

/// The descriptor.
pub const POLICY: Descriptor = Descriptor {
    name: "basic_auth",
    phases: &[Phase::Access],
    options: &[
        OptionSpec::new(
            "htpasswd_file",
            Kind::File,
            "an htpasswd file (bcrypt, SHA-256/512-crypt, apr1-MD5, `{SHA}`); read again by every reload",
        ),
        OptionSpec::new(
            "consumers",
            Kind::Bool,
            "accept consumers' `basic = { password_hash = ... }` passwords (the user is the consumer's name)",
        )
        .default("true"),
        OptionSpec::new("realm", Kind::Str, "the realm the browser shows").default("\"moongate\""),
        OptionSpec::new(
            "hide_credentials",
            Kind::Bool,
            "remove `Authorization` before the request goes upstream",
        )
        .default("false"),
    ],
    check: Some(|o| {
        if o.contains_key("htpasswd_file") || o.get("consumers").and_then(|v| v.as_bool()) != Some(false) {
            Ok(())
        } else {
            Err("give `htpasswd_file`, or leave `consumers` on".into())
        }
    }),
    docs: "Requests need a user and password (`Authorization: Basic`), checked against an \
htpasswd file made by Apache's `htpasswd` (bcrypt `-B`, SHA-256/512-crypt `-2`/`-5`, \
apr1-MD5 `-m` for migration, `{SHA}` `-s`; plain text and DES crypt are refused at \
`check`) and against consumers with `basic = { password_hash = \"…\" }`. Successful \
checks of the slow schemes are remembered for a minute (keyed by a salted digest; a \
changed password stops matching at once), and a check runs off the event loop.\n\n\
No or wrong credentials: 401 with `WWW-Authenticate: Basic realm=\"…\", charset=\"UTF-8\"`. \
The user becomes `$consumer` and `X-Consumer-Username` upstream (with `X-Consumer-Groups` \
when a consumer of that name has groups).",
    example: r#"{ use = "basic_auth", htpasswd_file = "conf.d/htpasswd", realm = "staff" }"#,
    kong: "basic-auth",
    apisix: "basic-auth",
    implementation: Implementation::Lua(include_str!("../../lua/policies/basic_auth.lua")),
    compile: Some(compile),
    authenticates: true,
};

/// A `basic_auth` policy, compiled.
pub struct Basic {
    file: Option<Htpasswd>,
    consumers: Option<Arc<Consumers>>,
    challenge: String,
    hide_credentials: bool,
    /// Successful checks of slow hashes, remembered.
    pub cache: Arc<VerifyCache>,
}

fn compile(o: &toml::Table, cx: &Context<'_>) -> Result<Compiled, String> {
    let file = match o.get("htpasswd_file").and_then(|v| v.as_str()) {
        Some(path) => Some(Htpasswd::load(path.as_ref())?),
        None => None,
    };
    let realm = o
        .get("realm")
        .and_then(|v| v.as_str())
        .unwrap_or("moongate");
    let quoted: String = realm
        .chars()
        .flat_map(|c| match c {
            '"' | '\\' => vec!['\\', c],
            c if c.is_control() => vec![],
            c => vec![c],
        })
        .collect();
    Ok(Compiled::Basic(Basic {
        file,
        consumers: (o.get("consumers").and_then(|v| v.as_bool()) != Some(false))
            .then(|| cx.consumers.clone()),
        challenge: format!("Basic realm=\"{quoted}\", charset=\"UTF-8\""),
        hide_credentials: o.get("hide_credentials").and_then(|v| v.as_bool()) == Some(true),
        cache: Arc::new(VerifyCache::new(10_000, Duration::from_secs(60))),
    }))
}

/// The user and password of an `Authorization: Basic` value.
pub fn credentials(authorization: &[u8]) -> Option<(String, Vec<u8>)> {
    let text = std::str::from_utf8(authorization).ok()?.trim();
    let (scheme, b64) = text.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let raw = STANDARD.decode(b64.trim()).ok()?;
    let colon = raw.iter().position(|&b| b == b':')?;
    let user = String::from_utf8(raw[..colon].to_vec()).ok()?;
    (!user.is_empty()).then(|| (user, raw[colon + 1..].to_vec()))
}

impl Basic {
    /// The challenge sent with every 401.
    pub fn challenge(&self) -> &str {
        &self.challenge
    }

    /// The request's user and password, if it sent them.
    pub fn request_credentials(&self, parts: &Parts) -> Option<(String, Vec<u8>)> {
        credentials(parts.headers.get(AUTHORIZATION)?.as_bytes())
    }

    /// The stored hash for `user` (the file first, then consumers).
    pub fn stored(&self, user: &str) -> Option<PasswordHash> {
        if let Some(h) = self.file.as_ref().and_then(|f| f.get(user)) {
            return Some(h.clone());
        }
        self.consumers.as_ref()?.by_name(user)?.basic.clone()
    }

    /// Who `user` is once their password checked out.
    pub fn recognised(&self, user: &str) -> Recognised {
        Recognised {
            name: user.to_owned(),
            consumer: self
                .consumers
                .as_ref()
                .and_then(|c| c.by_name(user))
                .cloned(),
            credential: user.to_owned(),
        }
    }

    /// The request as it goes on (`hide_credentials`).
    pub fn apply(&self, parts: &mut Parts) {
        if self.hide_credentials {
            parts.headers.remove(AUTHORIZATION);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_credentials() {
        assert_eq!(
            credentials(b"Basic YWxpY2U6czNjcjN0OndpdGg6Y29sb25z"),
            Some(("alice".into(), b"s3cr3t:with:colons".to_vec()))
        );
        assert_eq!(
            credentials(b"basic   YWxpY2U6"),
            Some(("alice".into(), Vec::new()))
        );
        assert_eq!(credentials(b"Bearer YWxpY2U6"), None);
        assert_eq!(credentials(b"Basic !!"), None);
        assert_eq!(credentials(b"Basic OnB3"), None, "empty user");
        assert_eq!(credentials(b"Basic YWxpY2U="), None, "no colon");
    }
}

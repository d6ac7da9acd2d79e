//! `[consumer.NAME]` and `[consumers]`, as written.

use serde::Deserialize;
use toml::Spanned;

/// `[consumer.NAME]`: who a credential belongs to, and their groups.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConsumer {
    /// API keys (`api_key` policy).
    pub keys: Option<Spanned<Vec<Spanned<String>>>>,
    /// A JWT credential (`jwt` policy).
    pub jwt: Option<Spanned<RawConsumerJwt>>,
    /// A basic-auth password (`basic_auth` policy; the user is NAME).
    pub basic: Option<Spanned<RawConsumerBasic>>,
    /// Groups, for the `acl` policy.
    pub groups: Option<Spanned<Vec<Spanned<String>>>>,
}

/// `jwt = { key, secret | public_key | public_key_file, algorithm }`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConsumerJwt {
    /// The key claim's value naming this consumer (default: NAME).
    pub key: Option<Spanned<String>>,
    /// An HMAC secret.
    pub secret: Option<Spanned<String>>,
    /// A PEM public key (RSA, EC or Ed25519), inline.
    pub public_key: Option<Spanned<String>>,
    /// A PEM public key file.
    pub public_key_file: Option<Spanned<String>>,
    /// The one algorithm the consumer's tokens use.
    pub algorithm: Option<Spanned<String>>,
}

/// `basic = { password_hash }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConsumerBasic {
    /// An htpasswd hash (bcrypt, SHA-256/512-crypt, apr1, `{SHA}`).
    pub password_hash: Spanned<String>,
}

/// `[consumers]`: consumers kept in a file of their own.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConsumers {
    /// One JSON object per line (`{"name": …, "keys": […], …}`).
    pub file: Spanned<String>,
}

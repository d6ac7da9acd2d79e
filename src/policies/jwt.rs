//! `jwt`: requests need a valid JSON Web Token, verified natively
//! (`crate::auth::jwt`) against the policy's own keys (a secret, PEM
//! keys, a JWKS file or URL) or a consumer's `jwt` credential picked by
//! the token's key claim.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::header::{self, HeaderName, HeaderValue};
use http::request::Parts;
use jsonwebtoken::Algorithm;

use super::native::{Compiled, Context, Recognised};
use super::schema::str_list as list;
use super::{Descriptor, Implementation, Kind, OptionSpec, Phase};
use crate::auth::consumer::{Consumers, parse_algorithm};
use crate::auth::jwks::{JwksCache, KeySet};
use crate::auth::jwt::{
    self, Claims, JwtError, Verifier, VerifierConfig, extract, key_from_file, key_from_pem,
    key_from_secret,
};

/// Every algorithm moongate verifies (JOSE names).
pub const ALGORITHMS: &[&str] = &[
    "HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256",
    "ES384", "EdDSA",
];

/// The descriptor.
pub const POLICY: Descriptor = Descriptor {
    name: "jwt",
    phases: &[Phase::Access],
    options: &[
        OptionSpec::new("header", Kind::Header, "the header carrying `Bearer TOKEN`")
            .default("\"Authorization\""),
        OptionSpec::new(
            "cookie",
            Kind::Str,
            "a cookie tried when the header has no token",
        ),
        OptionSpec::new(
            "query_arg",
            Kind::Str,
            "a query argument tried after the header and cookie",
        ),
        OptionSpec::new("secret", Kind::Str, "an HMAC secret (HS256/384/512)"),
        OptionSpec::new(
            "public_key",
            Kind::Str,
            "a PEM public key (RSA, EC P-256/P-384, Ed25519), inline",
        ),
        OptionSpec::new("public_key_file", Kind::File, "a PEM public key file"),
        OptionSpec::new(
            "jwks_file",
            Kind::File,
            "a JWKS document (`{\"keys\": [...]}`); keys picked by `kid`; read again by every reload",
        ),
        OptionSpec::new(
            "jwks_url",
            Kind::Url,
            "a JWKS URL fetched in the background, every `jwks_refresh` and early on an unknown `kid`; a failed fetch keeps the last good keys and is retried after 1 s, 2 s, … up to `jwks_refresh`; https checked against the system's CAs or `[lua] ssl_trusted_certificate`",
        ),
        OptionSpec::new(
            "jwks_refresh",
            Kind::Duration,
            "how often the JWKS is fetched again",
        )
        .default("\"5m\""),
        OptionSpec::new(
            "algorithms",
            Kind::OneOfList(ALGORITHMS),
            "algorithms a token may use (default: every one the keys fit; never `none`)",
        ),
        OptionSpec::new(
            "leeway",
            Kind::Duration,
            "clock skew allowed on `exp` and `nbf`",
        )
        .default("\"0s\""),
        OptionSpec::new(
            "issuers",
            Kind::StrList,
            "accepted `iss` values (unchecked when absent)",
        ),
        OptionSpec::new(
            "audiences",
            Kind::StrList,
            "accepted `aud` values, any one suffices (unchecked when absent)",
        ),
        OptionSpec::new(
            "required_claims",
            Kind::StrList,
            "claims a token must carry (e.g. `[\"exp\", \"sub\"]`)",
        ),
        OptionSpec::new(
            "claims_to_headers",
            Kind::ClaimHeaders,
            "claims sent upstream as headers (`{ sub = \"X-User\" }`); the client's own are dropped",
        ),
        OptionSpec::new(
            "consumers",
            Kind::Bool,
            "accept tokens of consumers with a `jwt` credential, picked by `key_claim_name`",
        )
        .default("true"),
        OptionSpec::new(
            "key_claim_name",
            Kind::Str,
            "the claim naming the consumer's credential (Kong's default)",
        )
        .default("\"iss\""),
        OptionSpec::new(
            "consumer_claim",
            Kind::Str,
            "for tokens verified by the policy's own keys: the claim that becomes `$consumer` (e.g. `sub`)",
        ),
        OptionSpec::new(
            "hide_credentials",
            Kind::Bool,
            "remove the token from the request before it goes upstream",
        )
        .default("false"),
        OptionSpec::new("realm", Kind::Str, "the realm named in `WWW-Authenticate`"),
    ],
    check: Some(|o| {
        let keys = [
            "secret",
            "public_key",
            "public_key_file",
            "jwks_file",
            "jwks_url",
        ];
        let own = keys.iter().filter(|k| o.contains_key(**k)).count();
        if own == 0 && o.get("consumers").and_then(|v| v.as_bool()) == Some(false) {
            return Err(format!(
                "give a key (`{}`), or leave `consumers` on",
                keys.join("`, `")
            ));
        }
        if o.contains_key("jwks_file") && o.contains_key("jwks_url") {
            return Err("give `jwks_file` or `jwks_url`, not both".into());
        }
        if o.contains_key("public_key") && o.contains_key("public_key_file") {
            return Err("give `public_key` or `public_key_file`, not both".into());
        }
        Ok(())
    }),
    docs: "Requests need a valid JWT (RFC 7519), verified natively: HS256/384/512 with a \
`secret`, RS256/384/512, PS256/384/512, ES256/384 and EdDSA with PEM keys or a JWKS \
(a file, or a URL fetched in the background and early when a token names an unknown \
`kid`, so a rotated key is picked up on the first request that uses it). A key only ever \
verifies its own algorithm family, so an RSA key cannot be abused as an HMAC secret, and \
`none` is never accepted. The token comes from `Authorization: Bearer`, else `cookie`, \
else `query_arg`. `exp` and `nbf` are checked with `leeway`; `iss`, `aud` and \
`required_claims` when given.\n\n\
Consumers: a `[consumer.NAME]` with `jwt = { key = \"…\", secret = \"…\" }` (or \
`public_key`, `public_key_file`, and `algorithm`) owns the tokens whose `key_claim_name` \
claim (`iss` by default, as Kong) equals `key`; their tokens are verified with their key \
alone. A recognised caller sets `$consumer` (for limit keys and logs) and the upstream \
headers `X-Consumer-Username`, `X-Consumer-Groups` and `X-Credential-Identifier` (the \
client's own copies are dropped). Tokens verified by the policy's own keys name the \
consumer by `consumer_claim`, if set.\n\n\
No token: 401 with `WWW-Authenticate: Bearer`; a bad, expired or unknown one: 401 with \
`WWW-Authenticate: Bearer error=\"invalid_token\", error_description=\"…\"` (RFC 6750).",
    example: r#"{ use = "jwt", jwks_url = "https://idp.example.com/.well-known/jwks.json", audiences = ["todo-api"], consumer_claim = "sub", claims_to_headers = { sub = "X-User-Id" } }"#,
    kong: "jwt",
    apisix: "jwt-auth",
    implementation: Implementation::Lua(include_str!("../../lua/policies/jwt.lua")),
    compile: Some(compile),
    authenticates: true,
};

/// A `jwt` policy, compiled.
pub struct Jwt {
    verifier: Verifier,
    /// The consumers (`consumers = true`): named by `consumer_claim`, or
    /// owning the token by its key claim.
    consumers: Option<Arc<Consumers>>,
    /// Whether a token's key claim may pick a consumer's own key (some
    /// consumer has a `jwt` credential): saves decoding the claims twice
    /// when none has.
    by_key_claim: bool,
    key_claim: String,
    consumer_claim: Option<String>,
    header: HeaderName,
    cookie: Option<String>,
    query_arg: Option<String>,
    claims_to_headers: Vec<(String, HeaderName)>,
    hide_credentials: bool,
    realm: Option<String>,
    /// The JWKS behind a `jwks_url`, which a request may wait on.
    pub jwks: Option<Arc<JwksCache>>,
}

/// Where a request's token was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum From {
    /// The header (`Bearer`).
    Header,
    /// The cookie.
    Cookie,
    /// The query argument.
    Query,
}

/// A token verified.
pub struct Verified {
    /// Who it belongs to, when the policy can say.
    pub who: Option<Recognised>,
    /// Its claims.
    pub claims: Claims,
}

fn str_opt(o: &toml::Table, key: &str) -> Option<String> {
    o.get(key).and_then(|v| v.as_str()).map(str::to_owned)
}

fn duration(o: &toml::Table, key: &str) -> Result<Duration, String> {
    match o.get(key).and_then(|v| v.as_str()) {
        Some(s) => crate::config::parse_duration(s),
        None => Ok(Duration::ZERO),
    }
}

fn compile(o: &toml::Table, cx: &Context<'_>) -> Result<Compiled, String> {
    let mut keys = Vec::new();
    if let Some(secret) = str_opt(o, "secret") {
        keys.push(key_from_secret(secret.as_bytes(), None));
    }
    if let Some(pem) = str_opt(o, "public_key") {
        keys.push(key_from_pem(pem.as_bytes(), None).map_err(|e| format!("`public_key`: {e}"))?);
    }
    if let Some(path) = str_opt(o, "public_key_file") {
        keys.push(
            key_from_file(path.as_ref(), None).map_err(|e| format!("`public_key_file`: {e}"))?,
        );
    }
    let refresh = duration(o, "jwks_refresh")?;
    let jwks = match (str_opt(o, "jwks_file"), str_opt(o, "jwks_url")) {
        (Some(path), _) => {
            let bytes =
                std::fs::read(&path).map_err(|e| format!("cannot read `jwks_file` {path}: {e}"))?;
            let (set, skipped) =
                KeySet::parse(&bytes).map_err(|e| format!("`jwks_file` {path}: {e}"))?;
            for s in skipped {
                tracing::warn!("jwt: jwks_file {path}: skipped {s}");
            }
            Some(Arc::new(JwksCache::new(set, Duration::from_secs(10))))
        }
        (None, Some(url)) => {
            let cache = Arc::new(JwksCache::new(KeySet::default(), Duration::from_secs(10)));
            start_jwks_url(&cache, &url, refresh, cx)?;
            Some(cache)
        }
        (None, None) => None,
    };
    let use_consumers = o.get("consumers").and_then(|v| v.as_bool()).unwrap_or(true);
    let by_key_claim = use_consumers && cx.consumers.has_jwt_credentials();
    let algorithms: Vec<Algorithm> = match o.get("algorithms") {
        Some(_) => list(o, "algorithms")
            .iter()
            .map(|a| parse_algorithm(a))
            .collect::<Result<_, _>>()?,
        // Every algorithm some key could verify: keys are only ever used
        // with their own family, so this opens no confusion.
        None => ALGORITHMS
            .iter()
            .filter_map(|a| parse_algorithm(a).ok())
            .filter(|a| jwks.is_some() || by_key_claim || keys.iter().any(|k| k.accepts(*a)))
            .collect(),
    };
    let jwks_url = o.contains_key("jwks_url");
    if keys.is_empty() && jwks.is_none() && !by_key_claim {
        return Err(
            "no key: give `secret`, `public_key`, `public_key_file`, `jwks_file` or `jwks_url`, \
             or define consumers with a `jwt` credential"
                .into(),
        );
    }
    let verifier = Verifier::new(VerifierConfig {
        keys,
        jwks: jwks.clone(),
        algorithms,
        leeway: duration(o, "leeway")?.as_secs(),
        issuers: list(o, "issuers"),
        audiences: list(o, "audiences"),
        required_claims: list(o, "required_claims"),
        keys_per_call: by_key_claim,
    })?;
    let header_name = |h: &str| {
        HeaderName::from_bytes(h.as_bytes()).map_err(|_| format!("`{h}` is not a header name"))
    };
    let claims_to_headers = match o.get("claims_to_headers").and_then(|v| v.as_table()) {
        Some(t) => t
            .iter()
            .filter_map(|(claim, h)| Some((claim.clone(), h.as_str()?)))
            .map(|(claim, h)| Ok((claim, header_name(h)?)))
            .collect::<Result<_, String>>()?,
        None => Vec::new(),
    };
    Ok(Compiled::Jwt(Box::new(Jwt {
        verifier,
        consumers: use_consumers.then(|| cx.consumers.clone()),
        by_key_claim,
        key_claim: str_opt(o, "key_claim_name").unwrap_or_else(|| "iss".into()),
        consumer_claim: str_opt(o, "consumer_claim"),
        header: header_name(&str_opt(o, "header").unwrap_or_else(|| "authorization".into()))?,
        cookie: str_opt(o, "cookie"),
        query_arg: str_opt(o, "query_arg"),
        claims_to_headers,
        hide_credentials: o.get("hide_credentials").and_then(|v| v.as_bool()) == Some(true),
        realm: str_opt(o, "realm"),
        jwks: jwks.filter(|_| jwks_url),
    })))
}

/// Time allowed for one JWKS fetch.
const JWKS_TIMEOUT: Duration = Duration::from_secs(10);

/// Starts the background fetches of a `jwks_url` into `cache` (a thread
/// that ends when the configuration holding `cache` is replaced).
fn start_jwks_url(
    cache: &Arc<JwksCache>,
    url: &str,
    every: Duration,
    cx: &Context<'_>,
) -> Result<(), String> {
    // The system's roots unless `[lua] ssl_trusted_certificate` says whom
    // to trust (an in-house IdP).
    let tls = match &cx.trusted_certificate {
        Some(path) => Some(
            crate::tls_client::TlsClients::new(Some(path.clone()))
                .config(crate::tls_client::Verify::Chain { name: true })?,
        ),
        None => None,
    };
    crate::auth::jwks::spawn_refresher(url, cache, every, JWKS_TIMEOUT, tls)
        .map_err(|e| format!("`jwks_url`: {e}"))
}

/// Unix seconds now.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Jwt {
    /// The request's token, and where it was.
    pub fn token(&self, parts: &Parts) -> Option<(String, From)> {
        if let Some(t) = (parts.headers.get_all(&self.header).iter())
            .filter_map(|v| v.to_str().ok())
            .find_map(extract::bearer)
        {
            return Some((t.to_owned(), From::Header));
        }
        if let Some(name) = &self.cookie
            && let Some(t) = (parts.headers.get_all(header::COOKIE).iter())
                .filter_map(|v| v.to_str().ok())
                .find_map(|c| extract::cookie(c, name))
        {
            return Some((t.to_owned(), From::Cookie));
        }
        let name = self.query_arg.as_deref()?;
        let t = extract::query_arg(parts.uri.query()?, name)?;
        Some((t.into_owned(), From::Query))
    }

    /// Verifies `token` at `now`: with the consumer's own key when its key
    /// claim names a consumer, else with the policy's keys.
    pub fn verify(&self, token: &str, now: u64) -> Result<Verified, JwtError> {
        if self.by_key_claim
            && let Some(consumers) = &self.consumers
            && let Some(key) = jwt::unverified_claim(token, &self.key_claim)
            && let Some(c) = consumers.by_jwt_key(&key)
            && let Some(cred) = &c.jwt
        {
            let claims = self.verifier.verify_with(token, now, &cred.verify)?;
            let who = Recognised {
                name: c.name.clone(),
                consumer: Some(c.clone()),
                credential: key,
            };
            return Ok(Verified {
                who: Some(who),
                claims,
            });
        }
        if !self.verifier.has_keys() {
            return Err(JwtError::NoCredential);
        }
        let claims = self.verifier.verify(token, now)?;
        let who = (self.consumer_claim.as_deref())
            .and_then(|c| claims.str(c))
            .map(|name| Recognised {
                name: name.to_owned(),
                consumer: self
                    .consumers
                    .as_ref()
                    .and_then(|cs| cs.by_name(name))
                    .cloned(),
                credential: name.to_owned(),
            });
        Ok(Verified { who, claims })
    }

    /// The `WWW-Authenticate` value for a refusal (`None`: no token).
    pub fn challenge(&self, error: Option<&JwtError>) -> String {
        match error {
            Some(e) => e.www_authenticate(self.realm.as_deref()),
            None => jwt::challenge(self.realm.as_deref()),
        }
    }

    /// The request as it goes on: claims sent as headers (the client's
    /// own copies of those headers dropped), the token removed when
    /// `hide_credentials` says so.
    pub fn apply(&self, parts: &mut Parts, verified: &Verified, from: From) {
        for (claim, header) in &self.claims_to_headers {
            parts.headers.remove(header);
            if let Ok(Some(text)) = verified.claims.header_value(claim)
                && let Ok(v) = HeaderValue::from_str(&text)
            {
                parts.headers.insert(header.clone(), v);
            }
        }
        if !self.hide_credentials {
            return;
        }
        match from {
            From::Header => {
                parts.headers.remove(&self.header);
            }
            From::Cookie => {
                if let Some(name) = &self.cookie {
                    super::credentials::remove_cookie(&mut parts.headers, name);
                }
            }
            From::Query => {
                if let Some(name) = &self.query_arg {
                    super::credentials::remove_query_arg(&mut parts.uri, name);
                }
            }
        }
    }
}

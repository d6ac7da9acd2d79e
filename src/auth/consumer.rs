//! Consumers (`[consumer.NAME]`, or a file of one JSON object per line):
//! who a credential belongs to and which groups they are in, with an index
//! built once per config so a policy finds the consumer of an API key, a
//! JWT `key` claim or a basic-auth user with one hash lookup.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use jsonwebtoken::Algorithm;

use super::htpasswd::PasswordHash;
use super::jwks::{Family, Key};
use super::jwt::{key_from_pem, key_from_secret};

/// A JWT credential: tokens whose key claim (the policy's
/// `key_claim_name`, `iss` by default) equals `key` are this consumer's,
/// verified with its own key and only with its one algorithm.
#[derive(Debug, Clone)]
pub struct JwtCredential {
    /// The claim value that names this consumer.
    pub key: String,
    /// The one algorithm their tokens use.
    pub algorithm: Algorithm,
    /// The HMAC secret or public key that verifies their tokens.
    pub verify: Key,
}

impl JwtCredential {
    /// A credential from its parts: an HMAC `secret` or a PEM `public_key`
    /// (exactly one), and the algorithm (HS256 with a secret, RS256 with a
    /// public key, when not given), which must fit the key.
    pub fn new(
        key: String,
        secret: Option<&str>,
        public_key: Option<&[u8]>,
        algorithm: Option<&str>,
    ) -> Result<JwtCredential, String> {
        if key.is_empty() {
            return Err("jwt.key is empty".to_string());
        }
        let mut verify = match (secret, public_key) {
            (Some(s), None) if !s.is_empty() => key_from_secret(s.as_bytes(), None),
            (Some(_), None) => return Err("jwt.secret is empty".to_string()),
            (None, Some(pem)) => {
                key_from_pem(pem, None).map_err(|e| format!("jwt.public_key: {e}"))?
            }
            (Some(_), Some(_)) => {
                return Err("give jwt.secret or jwt.public_key, not both".to_string());
            }
            (None, None) => return Err("jwt needs `secret` or `public_key`".to_string()),
        };
        let algorithm = match algorithm {
            Some(a) => parse_algorithm(a)?,
            None if verify.family == Family::Hmac => Algorithm::HS256,
            None => Algorithm::RS256,
        };
        if !verify.accepts(algorithm) {
            return Err(format!(
                "jwt.algorithm {algorithm:?} cannot be verified with a {:?} key",
                verify.family
            ));
        }
        verify.alg = Some(algorithm);
        Ok(JwtCredential {
            key,
            algorithm,
            verify,
        })
    }
}

/// A JWT algorithm by its JOSE name (`HS256`, `RS256`, `ES256`, `EdDSA`…).
pub fn parse_algorithm(name: &str) -> Result<Algorithm, String> {
    name.parse().map_err(|_| {
        format!(
            "unknown algorithm {name:?}; known: HS256, HS384, HS512, RS256, RS384, RS512, \
             PS256, PS384, PS512, ES256, ES384, EdDSA"
        )
    })
}

/// One consumer.
#[derive(Debug, Clone)]
pub struct Consumer {
    /// The name (`$consumer`, `X-Consumer-Username`).
    pub name: String,
    /// API keys.
    pub keys: Vec<String>,
    /// A JWT credential.
    pub jwt: Option<JwtCredential>,
    /// A basic-auth password hash (the user name is the consumer's name).
    pub basic: Option<PasswordHash>,
    /// Groups, for `acl`.
    pub groups: Vec<String>,
}

impl Consumer {
    /// A consumer from its parts (what `[consumer.NAME]` holds); the
    /// password hash is parsed here, so a bad one fails at load.
    pub fn from_parts(
        name: String,
        keys: Vec<String>,
        jwt: Option<JwtCredential>,
        basic_password_hash: Option<&str>,
        groups: Vec<String>,
    ) -> Result<Consumer, String> {
        if name.is_empty() {
            return Err("empty consumer name".to_string());
        }
        let basic = basic_password_hash
            .map(PasswordHash::parse)
            .transpose()
            .map_err(|e| format!("consumer {name}: basic.password_hash: {e}"))?;
        Ok(Consumer {
            name,
            keys,
            jwt,
            basic,
            groups,
        })
    }

    /// Whether the consumer is in `group`.
    pub fn in_group(&self, group: &str) -> bool {
        self.groups.iter().any(|g| g == group)
    }
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    name: String,
    #[serde(default)]
    keys: Vec<String>,
    #[serde(default)]
    jwt: Option<JwtLine>,
    #[serde(default)]
    basic: Option<BasicLine>,
    #[serde(default)]
    groups: Vec<String>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct JwtLine {
    #[serde(default)]
    key: Option<String>,
    #[serde(default)]
    secret: Option<String>,
    #[serde(default)]
    public_key: Option<String>,
    #[serde(default)]
    algorithm: Option<String>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct BasicLine {
    password_hash: String,
}

/// Every consumer of a config, indexed by credential.
#[derive(Debug, Clone, Default)]
pub struct Consumers {
    by_name: HashMap<String, Arc<Consumer>>,
    by_key: HashMap<String, Arc<Consumer>>,
    by_jwt_key: HashMap<String, Arc<Consumer>>,
}

impl Consumers {
    /// The index of `consumers`; a name, API key or JWT key used twice is
    /// an error (which consumer it means would be a guess).
    pub fn build(consumers: Vec<Consumer>) -> Result<Consumers, String> {
        let mut out = Consumers::default();
        for c in consumers {
            out.insert(c)?;
        }
        Ok(out)
    }

    /// Adds one consumer, refusing a name, API key or JWT key already taken
    /// (the index is unchanged then).
    pub fn insert(&mut self, c: Consumer) -> Result<(), String> {
        if self.by_name.contains_key(&c.name) {
            return Err(format!("consumer {} is defined twice", c.name));
        }
        for (i, k) in c.keys.iter().enumerate() {
            let other = (self.by_key.get(k).map(|o| o.name.as_str()))
                .or_else(|| c.keys[..i].contains(k).then_some(c.name.as_str()));
            if let Some(other) = other {
                return Err(format!("consumers {other} and {} share an API key", c.name));
            }
        }
        if let Some(j) = &c.jwt
            && let Some(other) = self.by_jwt_key.get(&j.key)
        {
            return Err(format!(
                "consumers {} and {} share a jwt key",
                other.name, c.name
            ));
        }
        let c = Arc::new(c);
        for k in &c.keys {
            self.by_key.insert(k.clone(), c.clone());
        }
        if let Some(j) = &c.jwt {
            self.by_jwt_key.insert(j.key.clone(), c.clone());
        }
        self.by_name.insert(c.name.clone(), c);
        Ok(())
    }

    /// Parses a consumers file: one JSON object per line
    /// (`{"name":…, "keys":[…], "jwt":{"key":…,"secret":…,"algorithm":…},
    /// "basic":{"password_hash":…}, "groups":[…]}`), `#` comments and blank
    /// lines. Errors carry `file:line`.
    pub fn parse_file(text: &str, file: &Path) -> Result<Vec<Consumer>, String> {
        let mut out = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let at = |e: String| format!("{}:{}: {e}", file.display(), i + 1);
            let l: Line = serde_json::from_str(line).map_err(|e| at(e.to_string()))?;
            let basic = l.basic.as_ref().map(|b| b.password_hash.as_str());
            let jwt = l
                .jwt
                .map(|j| {
                    let key = j.key.unwrap_or_else(|| l.name.clone());
                    let public_key = j.public_key.as_deref().map(str::as_bytes);
                    JwtCredential::new(key, j.secret.as_deref(), public_key, j.algorithm.as_deref())
                        .map_err(|e| format!("consumer {}: {e}", l.name))
                })
                .transpose()
                .map_err(at)?;
            out.push(Consumer::from_parts(l.name, l.keys, jwt, basic, l.groups).map_err(at)?);
        }
        Ok(out)
    }

    /// The consumer named `name` (basic auth: the user name).
    pub fn by_name(&self, name: &str) -> Option<&Arc<Consumer>> {
        self.by_name.get(name)
    }

    /// The consumer holding API key `key`.
    pub fn by_api_key(&self, key: &str) -> Option<&Arc<Consumer>> {
        self.by_key.get(key)
    }

    /// The consumer whose JWT credential's key is `key`.
    pub fn by_jwt_key(&self, key: &str) -> Option<&Arc<Consumer>> {
        self.by_jwt_key.get(key)
    }

    /// Whether any consumer has a JWT credential.
    pub fn has_jwt_credentials(&self) -> bool {
        !self.by_jwt_key.is_empty()
    }

    /// Whether any consumer has an API key.
    pub fn has_api_keys(&self) -> bool {
        !self.by_key.is_empty()
    }

    /// How many consumers there are.
    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_lines_build_an_index() {
        let text = r#"# consumers
{"name":"alice","keys":["k1","k2"],"groups":["admin"]}

{"name":"bob","jwt":{"key":"bob-iss","secret":"s","algorithm":"HS512"},"basic":{"password_hash":"{SHA}UWuXg/ylF+7L0dBk2i0WUxCxl1k="}}
"#;
        let list = Consumers::parse_file(text, Path::new("c.jsonl")).expect("parses");
        let idx = Consumers::build(list).expect("index");
        assert_eq!(idx.len(), 2);
        assert_eq!(idx.by_api_key("k2").map(|c| c.name.as_str()), Some("alice"));
        assert!(idx.by_api_key("k3").is_none());
        let bob = idx.by_jwt_key("bob-iss").expect("bob by jwt key");
        assert_eq!(
            bob.jwt.as_ref().map(|j| j.algorithm),
            Some(Algorithm::HS512)
        );
        assert!(bob.basic.as_ref().is_some_and(|h| h.verify(b"p")));
        assert!(
            idx.by_name("alice")
                .is_some_and(|c| c.in_group("admin") && !c.in_group("x"))
        );
    }

    #[test]
    fn bad_lines_and_duplicates_are_named() {
        let p = Path::new("c.jsonl");
        let e = Consumers::parse_file("{\"name\":\"a\"}\n{\"nam\":\"b\"}\n", p).expect_err("typo");
        assert!(e.starts_with("c.jsonl:2: unknown field `nam`"), "{e}");
        let e = Consumers::parse_file(
            r#"{"name":"a","jwt":{"key":"k","secret":"s","algorithm":"XX1"}}"#,
            p,
        )
        .expect_err("alg");
        assert!(
            e.starts_with("c.jsonl:1: ") && e.contains("unknown algorithm"),
            "{e}"
        );
        let e = Consumers::parse_file(r#"{"name":"a","basic":{"password_hash":"plain"}}"#, p)
            .expect_err("hash");
        assert!(
            e.starts_with("c.jsonl:1: consumer a: basic.password_hash"),
            "{e}"
        );
        let two = |a: &str, b: &str| {
            let list = Consumers::parse_file(&format!("{a}\n{b}\n"), p).expect("lines");
            Consumers::build(list).expect_err("duplicate")
        };
        assert!(two(r#"{"name":"a"}"#, r#"{"name":"a"}"#).contains("twice"));
        assert!(
            two(
                r#"{"name":"a","keys":["k"]}"#,
                r#"{"name":"b","keys":["k"]}"#
            )
            .contains("API key")
        );
    }
}

//! Consumers (`[consumer.NAME]`, or a file of one JSON object per line):
//! who a credential belongs to and which groups they are in, with an index
//! built once per config so a policy finds the consumer of an API key, a
//! JWT `key` claim or a basic-auth user with one hash lookup.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use jsonwebtoken::Algorithm;

use super::htpasswd::PasswordHash;

/// A JWT credential: tokens whose `key` claim (or `iss`, as the policy
/// chooses) equals `key` are this consumer's, verified with `secret`.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtCredential {
    /// The claim value that names this consumer.
    pub key: String,
    /// The HMAC secret or PEM public key that verifies their tokens.
    #[serde(default)]
    pub secret: Option<String>,
    /// The one algorithm their tokens use.
    #[serde(default = "hs256", deserialize_with = "algorithm")]
    pub algorithm: Algorithm,
}

fn hs256() -> Algorithm {
    Algorithm::HS256
}

fn algorithm<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Algorithm, D::Error> {
    let s: String = serde::Deserialize::deserialize(d)?;
    s.parse()
        .map_err(|_| serde::de::Error::custom(format!("unknown algorithm {s:?}")))
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
    jwt: Option<JwtCredential>,
    #[serde(default)]
    basic: Option<BasicLine>,
    #[serde(default)]
    groups: Vec<String>,
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
            let c = Arc::new(c);
            if out.by_name.insert(c.name.clone(), c.clone()).is_some() {
                return Err(format!("consumer {} is defined twice", c.name));
            }
            for k in &c.keys {
                if let Some(other) = out.by_key.insert(k.clone(), c.clone()) {
                    return Err(format!(
                        "consumers {} and {} share an API key",
                        other.name, c.name
                    ));
                }
            }
            if let Some(j) = &c.jwt
                && let Some(other) = out.by_jwt_key.insert(j.key.clone(), c.clone())
            {
                return Err(format!(
                    "consumers {} and {} share a jwt key",
                    other.name, c.name
                ));
            }
        }
        Ok(out)
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
            out.push(Consumer::from_parts(l.name, l.keys, l.jwt, basic, l.groups).map_err(at)?);
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
        let e = Consumers::parse_file(r#"{"name":"a","jwt":{"key":"k","algorithm":"XX1"}}"#, p)
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

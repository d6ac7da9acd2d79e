//! A verified token's claims, and their values as upstream header text.

use serde_json::{Map, Value};

use super::JwtError;

/// The claims of a verified token.
#[derive(Debug, Clone, PartialEq)]
pub struct Claims(Map<String, Value>);

/// Why a claim cannot be forwarded as a header value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClaimError {
    /// An object, null, or an array holding one of those.
    #[error("claim {0} is not a string, number, boolean or array of those")]
    NotScalar(String),
    /// A control character (CR, LF, NUL, …) would end or split the header.
    #[error("claim {0} holds a control character")]
    ControlCharacter(String),
}

impl Claims {
    /// Wraps a decoded claims object.
    pub fn new(map: Map<String, Value>) -> Claims {
        Claims(map)
    }

    /// The claim `name`.
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.0.get(name)
    }

    /// The claim `name` when it is a string (`sub`, `iss`, a consumer key).
    pub fn str(&self, name: &str) -> Option<&str> {
        self.0.get(name).and_then(Value::as_str)
    }

    /// A NumericDate claim (`exp`, `nbf`, `iat`) as whole seconds; a
    /// non-numeric or negative value makes the token malformed.
    pub(super) fn time(&self, name: &'static str) -> Result<Option<u64>, JwtError> {
        match self.0.get(name) {
            None => Ok(None),
            Some(v) => match v.as_f64() {
                // Fractions are allowed by RFC 7519; whole seconds are
                // what the checks need.
                Some(t) if t >= 0.0 && t.is_finite() => Ok(Some(t as u64)),
                _ => Err(JwtError::Malformed("a time claim is not a number")),
            },
        }
    }

    /// The claim `name` as header text, `None` when absent: strings as
    /// they are, numbers and booleans as JSON writes them, arrays of those
    /// joined by commas. Objects, nulls and control characters are refused.
    pub fn header_value(&self, name: &str) -> Result<Option<String>, ClaimError> {
        let Some(v) = self.0.get(name) else {
            return Ok(None);
        };
        let mut out = String::new();
        match v {
            Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    push_scalar(&mut out, item, name)?;
                }
            }
            other => push_scalar(&mut out, other, name)?,
        }
        if out.chars().any(char::is_control) {
            return Err(ClaimError::ControlCharacter(name.to_string()));
        }
        Ok(Some(out))
    }

    /// The whole claims object.
    pub fn as_map(&self) -> &Map<String, Value> {
        &self.0
    }
}

fn push_scalar(out: &mut String, v: &Value, name: &str) -> Result<(), ClaimError> {
    match v {
        Value::String(s) => out.push_str(s),
        Value::Number(n) => out.push_str(&n.to_string()),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        _ => return Err(ClaimError::NotScalar(name.to_string())),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(json: &str) -> Claims {
        Claims::new(serde_json::from_str(json).expect("test JSON"))
    }

    #[test]
    fn claims_become_header_text() {
        let c = claims(
            r#"{"sub":"u-1","n":42,"f":1.5,"admin":true,"roles":["a","b",3],
                "obj":{"x":1},"nul":null,"bad":"a\r\nX-Evil: 1","tab":"a\tb",
                "arr_obj":[{"x":1}]}"#,
        );
        assert_eq!(c.header_value("sub"), Ok(Some("u-1".into())));
        assert_eq!(c.header_value("n"), Ok(Some("42".into())));
        assert_eq!(c.header_value("f"), Ok(Some("1.5".into())));
        assert_eq!(c.header_value("admin"), Ok(Some("true".into())));
        assert_eq!(c.header_value("roles"), Ok(Some("a,b,3".into())));
        assert_eq!(c.header_value("absent"), Ok(None));
        assert_eq!(
            c.header_value("obj"),
            Err(ClaimError::NotScalar("obj".into()))
        );
        assert_eq!(
            c.header_value("nul"),
            Err(ClaimError::NotScalar("nul".into()))
        );
        assert_eq!(
            c.header_value("arr_obj"),
            Err(ClaimError::NotScalar("arr_obj".into()))
        );
        assert_eq!(
            c.header_value("bad"),
            Err(ClaimError::ControlCharacter("bad".into()))
        );
        assert_eq!(
            c.header_value("tab"),
            Err(ClaimError::ControlCharacter("tab".into()))
        );
        assert_eq!(c.str("sub"), Some("u-1"));
        assert_eq!(c.str("n"), None);
    }

    #[test]
    fn time_claims_must_be_numbers() {
        let c = claims(r#"{"exp":1700000000.9,"nbf":"soon","iat":-5}"#);
        assert_eq!(c.time("exp"), Ok(Some(1_700_000_000)));
        assert!(c.time("nbf").is_err());
        assert!(c.time("iat").is_err());
        assert_eq!(c.time("absent"), Ok(None));
    }
}

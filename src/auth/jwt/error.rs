//! Why a token was refused, and the `WWW-Authenticate` challenge that
//! says so (RFC 6750 §3).

/// Why [`super::Verifier::verify`] refused a token. Every variant is the
/// client's fault: the policy answers 401.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    /// Not a compact JWS, bad base64url or JSON, a claim of the wrong type.
    #[error("malformed token: {0}")]
    Malformed(&'static str),
    /// `alg` unknown or not in the allowed list.
    #[error("algorithm not allowed")]
    AlgorithmNotAllowed,
    /// The token names a `kid` no key (nor the JWKS) has.
    #[error("unknown key id")]
    UnknownKid,
    /// No consumer's credential matches the token's key claim, and the
    /// policy has no key of its own.
    #[error("no credential for this token")]
    NoCredential,
    /// No allowed key verifies the signature.
    #[error("bad signature")]
    BadSignature,
    /// `exp` passed (beyond the leeway).
    #[error("token expired")]
    Expired,
    /// `nbf` is still ahead (beyond the leeway).
    #[error("token not yet valid")]
    NotYetValid,
    /// A required claim (or `iss`/`aud` when those are checked) is absent.
    #[error("missing claim {0}")]
    MissingClaim(String),
    /// `iss` is not an accepted issuer.
    #[error("wrong issuer")]
    WrongIssuer,
    /// No `aud` value is an accepted audience.
    #[error("wrong audience")]
    WrongAudience,
}

impl JwtError {
    /// The `WWW-Authenticate` value for a 401 with this error:
    /// `Bearer realm="…", error="invalid_token", error_description="…"`.
    /// The description is our own text (claim names come from config and
    /// are kept only when they are plain), never bytes from the token.
    pub fn www_authenticate(&self, realm: Option<&str>) -> String {
        let mut out = String::from("Bearer");
        push_realm(&mut out, realm);
        out.push_str(if realm.is_some() { ", " } else { " " });
        out.push_str("error=\"invalid_token\", error_description=\"");
        let text = self.to_string();
        if text.bytes().all(is_qdtext) {
            out.push_str(&text);
        } else {
            out.push_str("missing claim");
        }
        out.push('"');
        out
    }
}

/// The challenge for a request that carried no token at all: RFC 6750
/// §3.1 says no error code then, only the scheme (and realm).
pub fn challenge(realm: Option<&str>) -> String {
    let mut out = String::from("Bearer");
    push_realm(&mut out, realm);
    out
}

fn push_realm(out: &mut String, realm: Option<&str>) {
    if let Some(realm) = realm {
        out.push_str(" realm=\"");
        // A config value, but quote-safe anyway.
        out.extend(
            realm
                .chars()
                .filter(|c| *c != '"' && *c != '\\' && !c.is_control()),
        );
        out.push('"');
    }
}

/// A byte allowed inside a quoted-string without escaping.
fn is_qdtext(b: u8) -> bool {
    b == b' ' || b == b'\t' || (b.is_ascii_graphic() && b != b'"' && b != b'\\')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_follow_rfc_6750() {
        assert_eq!(challenge(None), "Bearer");
        assert_eq!(challenge(Some("api \"x\"")), "Bearer realm=\"api x\"");
        assert_eq!(
            JwtError::Expired.www_authenticate(Some("api")),
            "Bearer realm=\"api\", error=\"invalid_token\", error_description=\"token expired\""
        );
        assert_eq!(
            JwtError::MissingClaim("sub".into()).www_authenticate(None),
            "Bearer error=\"invalid_token\", error_description=\"missing claim sub\""
        );
        assert_eq!(
            JwtError::MissingClaim("a\"b".into()).www_authenticate(None),
            "Bearer error=\"invalid_token\", error_description=\"missing claim\""
        );
    }
}

//! TLS for `tcpsock:sslhandshake`: the client configurations (shared with
//! upstreams, [`crate::tls_client`]) and the error strings ngx_lua gives
//! for failed handshakes.

use rustls::CertificateError;

pub use crate::tls_client::{TlsClients, Verify};

/// ngx_lua's error string for a failed handshake (OpenSSL's verify
/// messages where the failure was the certificate).
pub fn handshake_error(e: &std::io::Error) -> String {
    let Some(tls) = e.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>()) else {
        return "handshake failed".into();
    };
    match tls {
        rustls::Error::InvalidCertificate(c) => match c {
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                "certificate host mismatch".into()
            }
            CertificateError::UnknownIssuer => "unable to get local issuer certificate".into(),
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                "certificate has expired".into()
            }
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                "certificate is not yet valid".into()
            }
            CertificateError::Revoked => "certificate revoked".into(),
            CertificateError::BadSignature => "certificate signature failure".into(),
            _ => format!("certificate verify failed ({tls})"),
        },
        _ => "handshake failed".into(),
    }
}

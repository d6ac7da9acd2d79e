//! TLS client configurations over rustls, for Lua cosockets
//! (`tcpsock:sslhandshake`) and upstreams with `tls`: made on first use and
//! kept, trusting a given PEM file (`[lua] ssl_trusted_certificate`, an
//! upstream's `tls.ca`), else the system's CA bundle; the chain checked
//! with or without the name, or nothing checked.

use std::cell::OnceCell;
use std::path::PathBuf;
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};

/// Where the system's CA bundle usually is, after `$SSL_CERT_FILE`
/// (Debian/Ubuntu/Alpine, Fedora/RHEL, openSUSE, macOS/BSD).
const SYSTEM_BUNDLES: [&str; 4] = [
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/ssl/cert.pem",
];

/// How a handshake checks the server.
#[derive(Clone, Copy)]
pub enum Verify {
    /// `ssl_verify` false or nil (ngx_lua's default): no check.
    Off,
    /// Chain checked against the trust roots; the name too when
    /// `server_name` was given.
    Chain {
        /// A `server_name` was given: the certificate must be valid for it.
        name: bool,
    },
}

/// The verifying configurations: checking the name, and not.
type Verifying = (Arc<ClientConfig>, Arc<ClientConfig>);

/// One VM's client configurations, made on first use.
pub struct TlsClients {
    trusted: Option<PathBuf>,
    off: OnceCell<Result<Arc<ClientConfig>, String>>,
    chain: OnceCell<Result<Verifying, String>>,
}

impl TlsClients {
    /// Configurations trusting `trusted` (a PEM file) or, without it, the
    /// system's CA bundle.
    pub fn new(trusted: Option<PathBuf>) -> TlsClients {
        TlsClients {
            trusted,
            off: OnceCell::new(),
            chain: OnceCell::new(),
        }
    }

    /// The configuration for `verify`, or why there is none (unreadable
    /// trust file).
    pub fn config(&self, verify: Verify) -> Result<Arc<ClientConfig>, String> {
        match verify {
            Verify::Off => self
                .off
                .get_or_init(|| with_verifier(Arc::new(AcceptAny(provider()))))
                .clone(),
            Verify::Chain { name } => {
                let (named, unnamed) = self
                    .chain
                    .get_or_init(|| {
                        let (roots, listed) = roots(self.trusted.as_ref())?;
                        let listed = Arc::new(listed);
                        let webpki = WebPkiServerVerifier::builder_with_provider(
                            Arc::new(roots),
                            provider(),
                        )
                        .build()
                        .map_err(|e| format!("no usable trusted certificate: {e}"))?;
                        let named = with_verifier(Arc::new(Chain {
                            inner: webpki.clone(),
                            listed: listed.clone(),
                            check_name: true,
                        }))?;
                        let unnamed = with_verifier(Arc::new(Chain {
                            inner: webpki,
                            listed,
                            check_name: false,
                        }))?;
                        Ok((named, unnamed))
                    })
                    .as_ref()
                    .map_err(Clone::clone)?;
                Ok(if name { named.clone() } else { unnamed.clone() })
            }
        }
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn with_verifier(verifier: Arc<dyn ServerCertVerifier>) -> Result<Arc<ClientConfig>, String> {
    let config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup failed: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// The trust roots: the PEM file given, else `$SSL_CERT_FILE` or the first
/// system bundle found.
/// Also returns the certificates themselves: a self-signed server
/// certificate listed in the file is trusted as itself, as OpenSSL does.
fn roots(
    trusted: Option<&PathBuf>,
) -> Result<(RootCertStore, Vec<CertificateDer<'static>>), String> {
    let path = match trusted {
        Some(p) => p.clone(),
        None => std::env::var_os("SSL_CERT_FILE")
            .map(PathBuf::from)
            .into_iter()
            .chain(SYSTEM_BUNDLES.iter().map(PathBuf::from))
            .find(|p| p.is_file())
            .ok_or("no trusted certificates: no system CA bundle found; name a PEM file")?,
    };
    let mut store = RootCertStore::empty();
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&path)
        .and_then(|certs| certs.collect())
        .map_err(|e| format!("{}: {e}", path.display()))?;
    for cert in &certs {
        // A bundle may hold certificates webpki cannot use; skip those.
        let _ = store.add(cert.clone());
    }
    if store.is_empty() {
        return Err(format!("{}: no usable certificate", path.display()));
    }
    Ok((store, certs))
}

/// `ssl_verify` off: any certificate is taken, signatures are still
/// checked (the handshake itself stays sound).
#[derive(Debug)]
struct AcceptAny(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `ssl_verify` on: webpki's chain check; without a `server_name` the
/// name is not checked (ngx_lua checks the host only when one is given).
#[derive(Debug)]
struct Chain {
    inner: Arc<WebPkiServerVerifier>,
    /// The trusted certificates as listed.
    listed: Arc<Vec<CertificateDer<'static>>>,
    check_name: bool,
}

impl ServerCertVerifier for Chain {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) if !self.check_name => Ok(ServerCertVerified::assertion()),
            // webpki refuses a CA certificate as the server's own; a
            // self-signed one the operator listed is trusted as itself.
            Err(rustls::Error::InvalidCertificate(CertificateError::Other(e)))
                if e.to_string().contains("CaUsedAsEndEntity")
                    && intermediates.is_empty()
                    && self.listed.iter().any(|c| c == end_entity) =>
            {
                if self.check_name {
                    let cert = webpki::EndEntityCert::try_from(end_entity).map_err(|_| {
                        rustls::Error::InvalidCertificate(CertificateError::BadEncoding)
                    })?;
                    cert.verify_is_valid_for_subject_name(server_name)
                        .map_err(|_| {
                            rustls::Error::InvalidCertificate(CertificateError::NotValidForName)
                        })?;
                }
                Ok(ServerCertVerified::assertion())
            }
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

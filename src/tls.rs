//! TLS for `[[server.tls]]` listeners: rustls with the ring provider
//! (faster handshakes here than aws-lc's post-quantum default, and no
//! cmake/C++ build), several certificates chosen by SNI, ALPN `h2` /
//! `http/1.1`. Certificates are loaded while a snapshot is compiled, so a
//! bad or missing file is a config error with its place, and a reload picks
//! up renewed certificates.

use std::sync::Arc;

use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::config::{CertPair, ConfigError, TlsListener};

/// Builds the rustls configuration of one TLS listener.
pub fn server_config(listener: &TlsListener) -> Result<Arc<ServerConfig>, ConfigError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut certs = Vec::with_capacity(listener.certs.len());
    for pair in &listener.certs {
        certs.push(load_pair(pair, &provider)?);
    }
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ConfigError::at(&listener.listen.place, format!("TLS setup failed: {e}")))?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(SniResolver { certs }));
    config.alpn_protocols = listener
        .alpn
        .iter()
        .map(|p| p.as_bytes().to_vec())
        .collect();
    Ok(Arc::new(config))
}

fn load_pair(pair: &CertPair, provider: &CryptoProvider) -> Result<LoadedCert, ConfigError> {
    let place = &pair.place;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&pair.cert)
        .map_err(|e| {
            ConfigError::at(
                place,
                format!("cannot read certificate {}: {e}", pair.cert.display()),
            )
        })?
        .collect::<Result<_, _>>()
        .map_err(|e| {
            ConfigError::at(
                place,
                format!("certificate {} is not valid PEM: {e}", pair.cert.display()),
            )
        })?;
    if chain.is_empty() {
        return Err(ConfigError::at(
            place,
            format!(
                "{} holds no certificate (expected PEM \"BEGIN CERTIFICATE\")",
                pair.cert.display()
            ),
        ));
    }
    let key = PrivateKeyDer::from_pem_file(&pair.key).map_err(|e| {
        ConfigError::at(
            place,
            format!("cannot read private key {}: {e}", pair.key.display()),
        )
    })?;
    let certified = CertifiedKey::from_der(chain, key, provider).map_err(|e| {
        ConfigError::at(
            place,
            format!(
                "certificate {} and key {} do not fit together: {e}",
                pair.cert.display(),
                pair.key.display()
            ),
        )
    })?;
    Ok(LoadedCert {
        key: Arc::new(certified),
    })
}

#[derive(Debug)]
struct LoadedCert {
    key: Arc<CertifiedKey>,
}

impl LoadedCert {
    fn valid_for(&self, name: &ServerName<'_>) -> bool {
        let Some(leaf) = self.key.cert.first() else {
            return false;
        };
        webpki::EndEntityCert::try_from(leaf)
            .map(|ee| ee.verify_is_valid_for_subject_name(name).is_ok())
            .unwrap_or(false)
    }
}

/// Picks the first certificate valid for the client's SNI name (wildcards
/// included); without SNI or without a match, the first certificate.
#[derive(Debug)]
struct SniResolver {
    certs: Vec<LoadedCert>,
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        if self.certs.len() > 1
            && let Some(name) = hello
                .server_name()
                .and_then(|n| ServerName::try_from(n).ok())
            && let Some(c) = self.certs.iter().find(|c| c.valid_for(&name))
        {
            return Some(c.key.clone());
        }
        self.certs.first().map(|c| c.key.clone())
    }
}

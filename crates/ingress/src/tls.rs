//! TLS: certificates from `kubernetes.io/tls` Secrets chosen by SNI from the current
//! table, and the controller's default certificate (self-signed, made at start, as
//! ingress-nginx's "Kubernetes Ingress Controller Fake Certificate") for every other name.

use std::io::BufReader;
use std::sync::Arc;

use rustls::crypto::ring::default_provider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::routes::Cert;
use crate::{IngressError, Shared};

/// The common name of the default certificate.
pub const DEFAULT_CN: &str = "Kins Ingress Controller Default Certificate";

/// A PEM certificate chain and private key as a certificate rustls can serve; the key
/// must match the first certificate.
pub fn parse_pem(cert_pem: &[u8], key_pem: &[u8]) -> Result<Cert, String> {
    let chain: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut BufReader::new(cert_pem))
        .collect::<Result<_, _>>()
        .map_err(|e| format!("tls.crt: {e}"))?;
    if chain.is_empty() {
        return Err("tls.crt: no PEM certificate".into());
    }
    let key: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut BufReader::new(key_pem))
        .map_err(|e| format!("tls.key: {e}"))?
        .ok_or("tls.key: no PEM private key")?;
    let ck = CertifiedKey::from_der(chain, key, &default_provider())
        .map_err(|e| format!("tls.crt and tls.key: {e}"))?;
    Ok(Arc::new(ck))
}

/// A self-signed certificate for [`DEFAULT_CN`].
pub fn default_cert() -> Result<Cert, IngressError> {
    let key = rcgen::KeyPair::generate().map_err(|e| IngressError::Tls(e.to_string()))?;
    let mut params = rcgen::CertificateParams::new(vec!["ingress.local".to_string()])
        .map_err(|e| IngressError::Tls(e.to_string()))?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, DEFAULT_CN);
    params.not_before = rcgen::date_time_ymd(2024, 1, 1);
    params.not_after = rcgen::date_time_ymd(2054, 1, 1);
    let cert = params
        .self_signed(&key)
        .map_err(|e| IngressError::Tls(e.to_string()))?;
    parse_pem(cert.pem().as_bytes(), key.serialize_pem().as_bytes()).map_err(IngressError::Tls)
}

/// Picks the certificate by SNI from the table current at the handshake.
#[derive(Debug)]
pub struct Resolver {
    pub shared: Arc<Shared>,
    pub default: Cert,
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let table = self.shared.table();
        hello
            .server_name()
            .and_then(|n| table.cert(n).cloned())
            .or_else(|| Some(self.default.clone()))
    }
}

/// The server configuration: certificates by SNI, HTTP/2 and HTTP/1.1 by ALPN.
pub fn server_config(resolver: Resolver) -> Result<rustls::ServerConfig, IngressError> {
    let mut cfg = rustls::ServerConfig::builder_with_provider(Arc::new(default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| IngressError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(resolver));
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(cfg)
}

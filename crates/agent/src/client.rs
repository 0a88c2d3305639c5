//! The agent's API client: bearer token and the cluster CA.

use base64::Engine;
use secrecy::SecretString;

use crate::{AgentError, Config};

/// DER certificates from PEM text.
pub fn pem_to_der(pem: &str) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut inside = false;
    for line in pem.lines() {
        if line.starts_with("-----BEGIN CERTIFICATE") {
            inside = true;
            cur.clear();
        } else if line.starts_with("-----END CERTIFICATE") {
            inside = false;
            if let Ok(der) = base64::engine::general_purpose::STANDARD.decode(&cur) {
                out.push(der);
            }
        } else if inside {
            cur.push_str(line.trim());
        }
    }
    out
}

/// A client for the configured server, CA and token.
pub fn build(cfg: &Config) -> Result<kube::Client, AgentError> {
    let uri = cfg
        .server
        .parse()
        .map_err(|e| AgentError::Config(format!("--server {}: {e}", cfg.server)))?;
    let mut kc = kube::Config::new(uri);
    kc.default_namespace = "default".into();
    kc.root_cert = Some(pem_to_der(&cfg.ca_pem));
    kc.auth_info.token = Some(SecretString::from(cfg.token.clone()));
    kube::Client::try_from(kc).map_err(AgentError::Kube)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem() {
        let pem = "-----BEGIN CERTIFICATE-----\nAAEC\nAw==\n-----END CERTIFICATE-----\n";
        assert_eq!(pem_to_der(pem), vec![vec![0, 1, 2, 3]]);
    }
}

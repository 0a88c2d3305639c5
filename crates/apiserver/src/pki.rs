//! The cluster's certificates: a CA made at first start, a serving certificate with the
//! SANs clients use, and client certificates (the admin's goes into the kubeconfig).

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("certificate generation: {0}")]
    Rcgen(#[from] rcgen::Error),
}

fn read(path: &Path) -> Result<String, PkiError> {
    std::fs::read_to_string(path).map_err(|source| PkiError::Io {
        path: path.to_owned(),
        source,
    })
}

fn write(path: &Path, contents: &str, private: bool) -> Result<(), PkiError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let io = |source| PkiError::Io {
        path: path.to_owned(),
        source,
    };
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(if private { 0o600 } else { 0o644 })
        .open(&tmp)
        .map_err(io)?;
    f.write_all(contents.as_bytes()).map_err(io)?;
    f.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

/// The PEM files of the cluster's PKI, under `<data>/pki/`.
#[derive(Debug, Clone)]
pub struct Pki {
    pub dir: PathBuf,
    pub ca_cert_pem: String,
    ca_key_pem: String,
}

/// A certificate and its key, PEM-encoded.
#[derive(Debug, Clone)]
pub struct CertPair {
    pub cert_pem: String,
    pub key_pem: String,
}

fn name(cn: &str, orgs: &[&str]) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    for o in orgs {
        dn.push(DnType::OrganizationName, *o);
    }
    dn.push(DnType::CommonName, cn);
    dn
}

fn validity(params: &mut CertificateParams, years: i32) {
    let now = rcgen::date_time_ymd(2024, 1, 1);
    params.not_before = now;
    params.not_after = rcgen::date_time_ymd(2024 + years, 1, 1);
}

impl Pki {
    /// Loads the CA under `dir`, creating it on first use.
    pub fn load_or_create(dir: &Path) -> Result<Pki, PkiError> {
        std::fs::create_dir_all(dir).map_err(|source| PkiError::Io {
            path: dir.to_owned(),
            source,
        })?;
        let cert_path = dir.join("ca.crt");
        let key_path = dir.join("ca.key");
        if cert_path.exists() && key_path.exists() {
            return Ok(Pki {
                dir: dir.to_owned(),
                ca_cert_pem: read(&cert_path)?,
                ca_key_pem: read(&key_path)?,
            });
        }
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        params.distinguished_name = name("kins-ca", &[]);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        validity(&mut params, 30);
        let cert = params.self_signed(&key)?;
        write(&key_path, &key.serialize_pem(), true)?;
        write(&cert_path, &cert.pem(), false)?;
        Ok(Pki {
            dir: dir.to_owned(),
            ca_cert_pem: cert.pem(),
            ca_key_pem: key.serialize_pem(),
        })
    }

    fn issue(&self, mut params: CertificateParams) -> Result<CertPair, PkiError> {
        let ca_key = KeyPair::from_pem(&self.ca_key_pem)?;
        let issuer = Issuer::from_ca_cert_pem(&self.ca_cert_pem, ca_key)?;
        let key = KeyPair::generate()?;
        validity(&mut params, 10);
        let cert = params.signed_by(&key, &issuer)?;
        Ok(CertPair {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// The serving certificate for these IPs and DNS names; reissued when the SANs change.
    pub fn serving(&self, ips: &[IpAddr], dns: &[String]) -> Result<CertPair, PkiError> {
        let cert_path = self.dir.join("apiserver.crt");
        let key_path = self.dir.join("apiserver.key");
        let sans_path = self.dir.join("apiserver.sans");
        let sans = format!("{ips:?} {dns:?}");
        if cert_path.exists()
            && key_path.exists()
            && read(&sans_path).ok().as_deref() == Some(&sans)
        {
            return Ok(CertPair {
                cert_pem: read(&cert_path)?,
                key_pem: read(&key_path)?,
            });
        }
        let mut params = CertificateParams::default();
        params.distinguished_name = name("kube-apiserver", &[]);
        params.subject_alt_names = ips
            .iter()
            .map(|ip| SanType::IpAddress(*ip))
            .chain(
                dns.iter()
                    .filter_map(|d| d.clone().try_into().ok().map(SanType::DnsName)),
            )
            .collect();
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        let pair = self.issue(params)?;
        write(&key_path, &pair.key_pem, true)?;
        write(&cert_path, &pair.cert_pem, false)?;
        write(&sans_path, &sans, false)?;
        Ok(pair)
    }

    /// A client certificate for user `cn` in groups `orgs` (Kubernetes reads CN and O).
    pub fn client(&self, cn: &str, orgs: &[&str]) -> Result<CertPair, PkiError> {
        let mut params = CertificateParams::default();
        params.distinguished_name = name(cn, orgs);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        self.issue(params)
    }

    /// The service-account token signing key (PKCS#8 PEM, ECDSA P-256), made once and
    /// kept under `sa.key`, with its public half in `sa.pub`.
    pub fn service_account_key(&self) -> Result<String, PkiError> {
        let key_path = self.dir.join("sa.key");
        if key_path.exists() {
            return read(&key_path);
        }
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        write(&self.dir.join("sa.pub"), &key.public_key_pem(), false)?;
        write(&key_path, &key.serialize_pem(), true)?;
        Ok(key.serialize_pem())
    }

    /// The admin client certificate, made once and kept under `admin.crt`/`admin.key`.
    pub fn admin(&self) -> Result<CertPair, PkiError> {
        let cert_path = self.dir.join("admin.crt");
        let key_path = self.dir.join("admin.key");
        if cert_path.exists() && key_path.exists() {
            return Ok(CertPair {
                cert_pem: read(&cert_path)?,
                key_pem: read(&key_path)?,
            });
        }
        let pair = self.client("kins-admin", &["system:masters"])?;
        write(&key_path, &pair.key_pem, true)?;
        write(&cert_path, &pair.cert_pem, false)?;
        Ok(pair)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ca_is_stable_and_serving_cert_follows_sans() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pki = Pki::load_or_create(dir.path()).expect("create");
        let again = Pki::load_or_create(dir.path()).expect("load");
        assert_eq!(pki.ca_cert_pem, again.ca_cert_pem);
        let ip: IpAddr = "127.0.0.1".parse().expect("ip");
        let a = pki.serving(&[ip], &["kubernetes".into()]).expect("serving");
        let b = pki.serving(&[ip], &["kubernetes".into()]).expect("serving");
        assert_eq!(a.cert_pem, b.cert_pem, "same SANs keep the certificate");
        let c = pki
            .serving(
                &[ip, "10.96.0.1".parse().expect("ip")],
                &["kubernetes".into()],
            )
            .expect("serving");
        assert_ne!(a.cert_pem, c.cert_pem, "new SANs reissue it");
        let sa = pki.service_account_key().expect("sa key");
        assert_eq!(sa, pki.service_account_key().expect("sa key"));
        assert!(dir.path().join("sa.pub").exists());
        let admin = pki.admin().expect("admin");
        assert_eq!(admin.cert_pem, pki.admin().expect("admin").cert_pem);
    }
}

//! The kubeconfig `kins up` writes (mode 0600): the cluster CA and an admin client
//! certificate, context `kins-<name>`.

use std::path::Path;

use base64::Engine;

use crate::{io_err, LabError};

pub struct Credentials<'a> {
    pub server: &'a str,
    pub ca_pem: &'a str,
    pub cert_pem: &'a str,
    pub key_pem: &'a str,
}

/// The kubeconfig text.
pub fn render(cluster: &str, c: &Credentials<'_>) -> String {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: kins-{cluster}\n  cluster:\n    server: {}\n    certificate-authority-data: {}\nusers:\n- name: kins-{cluster}-admin\n  user:\n    client-certificate-data: {}\n    client-key-data: {}\ncontexts:\n- name: kins-{cluster}\n  context:\n    cluster: kins-{cluster}\n    user: kins-{cluster}-admin\ncurrent-context: kins-{cluster}\npreferences: {{}}\n",
        c.server,
        b64(c.ca_pem),
        b64(c.cert_pem),
        b64(c.key_pem)
    )
}

/// Writes the kubeconfig with mode 0600.
pub fn write(path: &Path, cluster: &str, c: &Credentials<'_>) -> Result<(), LabError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io_err(&tmp))?;
    f.write_all(render(cluster, c).as_bytes())
        .map_err(io_err(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io_err(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mode_and_content() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("kubeconfig");
        let c = Credentials {
            server: "https://127.0.0.1:6443",
            ca_pem: "CA",
            cert_pem: "C",
            key_pem: "K",
        };
        write(&p, "t", &c).expect("write");
        let meta = std::fs::metadata(&p).expect("stat");
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        let text = std::fs::read_to_string(&p).expect("read");
        assert!(text.contains("server: https://127.0.0.1:6443"));
        assert!(text.contains("current-context: kins-t"));
        assert!(text.contains("certificate-authority-data: Q0E="));
    }
}

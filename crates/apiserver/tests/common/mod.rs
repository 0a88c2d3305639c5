//! What the API tests share: an API server started in-process on a temporary directory,
//! listening on 127.0.0.1, with one bearer token for a cluster admin.

// Each test file is its own crate and uses only a part of this module.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;

/// The bearer token of the tests' user, `tester` in group `system:masters`.
pub const TOKEN: &str = "test-token-0123456789";

/// The API server's data directory, below the temporary directory.
const DATA: &str = "apiserver";

/// An API server running in-process.
pub struct Server {
    /// The temporary directory: the API server's data is under `apiserver/`, the rest is
    /// the test's. Removed when dropped.
    pub dir: tempfile::TempDir,
    pub running: apiserver::Running,
    /// A client that trusts the cluster CA.
    pub client: reqwest::Client,
    /// `https://127.0.0.1:<port>`.
    pub url: String,
    /// The cluster CA certificate (PEM).
    pub ca_pem: String,
}

impl Server {
    /// Starts an API server on a fresh temporary directory, on any free port of 127.0.0.1,
    /// with [`TOKEN`] as its only token.
    pub async fn start() -> anyhow::Result<Server> {
        let dir = tempfile::tempdir()?;
        let mut cfg = apiserver::Config::new(dir.path().join(DATA));
        std::fs::create_dir_all(&cfg.data_dir)?;
        std::fs::write(
            cfg.data_dir.join("tokens.csv"),
            format!("{TOKEN},tester,1,\"system:masters\"\n"),
        )?;
        let addr: SocketAddr = "127.0.0.1:0".parse()?;
        cfg.bind = vec![addr];
        cfg.advertise = addr;
        let ca_file = cfg.data_dir.join("pki/ca.crt");
        let running = apiserver::start(cfg).await?;
        let ca_pem = std::fs::read_to_string(ca_file)?;
        let client = reqwest::Client::builder()
            .use_rustls_tls()
            .add_root_certificate(reqwest::Certificate::from_pem(ca_pem.as_bytes())?)
            .build()?;
        let url = format!("https://127.0.0.1:{}", running.addrs[0].port());
        Ok(Server {
            dir,
            running,
            client,
            url,
            ca_pem,
        })
    }

    /// The cluster CA certificate's file (for a kubeconfig).
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join(DATA).join("pki/ca.crt")
    }
}

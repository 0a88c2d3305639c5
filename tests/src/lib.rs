//! Helpers for the end-to-end tests: a cluster made by the real `kins` binary in its own
//! data directory, with its own name and port, removed when the test ends (also when it
//! fails), and the real kubectl binaries to drive it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use anyhow::{bail, Context};

/// The kins binary under test: $KINS_BIN, else the workspace's release or debug build.
pub fn kins_bin() -> PathBuf {
    if let Ok(p) = std::env::var("KINS_BIN") {
        return PathBuf::from(p);
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for profile in ["release", "debug"] {
        let p = root.join("target").join(profile).join("kins");
        if p.exists() {
            return p;
        }
    }
    PathBuf::from("kins")
}

/// The kubectl binaries to test with: $KINS_KUBECTLS (colon-separated), else `kubectl`.
pub fn kubectls() -> Vec<PathBuf> {
    match std::env::var("KINS_KUBECTLS") {
        Ok(v) if !v.is_empty() => v.split(':').map(PathBuf::from).collect(),
        _ => vec![PathBuf::from("kubectl")],
    }
}

/// A free loopback port (the kernel's choice).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// A running cluster owned by one test.
pub struct Cluster {
    pub name: String,
    pub data: tempfile::TempDir,
    pub kubeconfig: PathBuf,
    pub port: u16,
}

impl Cluster {
    /// `kins up --nodes 0` with a fresh data directory.
    pub fn up(name: &str) -> anyhow::Result<Cluster> {
        let data = tempfile::Builder::new().prefix("kins-test-").tempdir()?;
        let port = free_port();
        let c = Cluster {
            name: name.to_string(),
            kubeconfig: data.path().join(name).join("kubeconfig"),
            data,
            port,
        };
        let out = c.kins(&["up", "--name", name, "--nodes", "0", "--api-port", &port.to_string()])?;
        if !out.status.success() {
            bail!("kins up failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(c)
    }

    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    /// Runs `kins --data-dir <ours> ARGS`.
    pub fn kins(&self, args: &[&str]) -> anyhow::Result<Output> {
        Command::new(kins_bin())
            .arg("--data-dir")
            .arg(self.data.path())
            .args(args)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("running kins {args:?}"))
    }

    /// Runs a kubectl binary against this cluster.
    pub fn kubectl(&self, kubectl: &Path, args: &[&str]) -> anyhow::Result<Output> {
        self.kubectl_stdin(kubectl, args, None)
    }

    /// Runs kubectl with text on its standard input.
    pub fn kubectl_stdin(&self, kubectl: &Path, args: &[&str], input: Option<&str>) -> anyhow::Result<Output> {
        use std::io::Write;
        let mut child = Command::new(kubectl)
            .env("KUBECONFIG", &self.kubeconfig)
            .env("HOME", self.data.path())
            .args(args)
            .stdin(if input.is_some() { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("running {} {args:?}", kubectl.display()))?;
        if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
            stdin.write_all(text.as_bytes())?;
        }
        Ok(child.wait_with_output()?)
    }

    /// Path of the API server's data directory (store, pki, tokens).
    pub fn apiserver_dir(&self) -> PathBuf {
        self.data.path().join(&self.name).join("apiserver")
    }

    /// `kins down --purge`.
    pub fn down(&self) -> anyhow::Result<Output> {
        self.kins(&["down", "--name", &self.name, "--purge"])
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self.down();
    }
}

/// stdout of a successful command, or an error with its stderr.
pub fn ok(out: Output) -> anyhow::Result<String> {
    if !out.status.success() {
        bail!(
            "command failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// stderr of a failed command, or an error if it succeeded.
pub fn fails(out: Output) -> anyhow::Result<String> {
    if out.status.success() {
        bail!("command succeeded but should have failed: {}", String::from_utf8_lossy(&out.stdout));
    }
    Ok(String::from_utf8_lossy(&out.stderr).into_owned())
}

//! Helpers for the end-to-end tests: a cluster made by the real `kins` binary in its own
//! data directory, with its own name and port, removed when the test ends (also when it
//! fails), and the real kubectl binaries to drive it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use anyhow::{bail, Context};

pub mod cni;
pub mod dns;
pub mod netpol;
pub mod pods;
pub mod services;
pub mod term;

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
        Self::up_with(name, &["--nodes", "0"])
    }

    /// `kins up` with `nodes` nodes.
    pub fn up_nodes(name: &str, nodes: u32) -> anyhow::Result<Cluster> {
        Self::up_with(name, &["--nodes", &nodes.to_string()])
    }

    /// `kins up --name NAME --api-port P EXTRA...` with a fresh data directory; without
    /// the DNS and ingress add-ons unless EXTRA says `--dns=true` or `--ingress=true` (tests of other parts stay
    /// independent of it, and no test cluster can forward a query to the host's resolver).
    pub fn up_with(name: &str, extra: &[&str]) -> anyhow::Result<Cluster> {
        let data = tempfile::Builder::new().prefix("kins-test-").tempdir()?;
        let port = free_port();
        let c = Cluster {
            name: name.to_string(),
            kubeconfig: data.path().join(name).join("kubeconfig"),
            data,
            port,
        };
        let port_s = port.to_string();
        let mut args = vec!["up", "--name", name, "--api-port", port_s.as_str()];
        if !extra.iter().any(|a| a.starts_with("--dns")) {
            args.push("--dns=false");
        }
        if !extra.iter().any(|a| a.starts_with("--ingress")) {
            args.push("--ingress=false");
        }
        args.extend_from_slice(extra);
        let out = c.kins(&args)?;
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
    pub fn kubectl_stdin(
        &self,
        kubectl: &Path,
        args: &[&str],
        input: Option<&str>,
    ) -> anyhow::Result<Output> {
        use std::io::Write;
        let mut child = Command::new(kubectl)
            .env("KUBECONFIG", &self.kubeconfig)
            .env("HOME", self.data.path())
            .args(args)
            .stdin(if input.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
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
        bail!(
            "command succeeded but should have failed: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    Ok(String::from_utf8_lossy(&out.stderr).into_owned())
}

/// Waiting for and killing the processes of a cluster, for the tests of crashes and
/// restarts.
impl Cluster {
    /// The pid of the cluster's API server process, if one runs.
    pub fn apiserver_pid(&self) -> Option<i32> {
        lab::procs::find(&self.name)
            .into_iter()
            .find(|p| p.role == "apiserver")
            .map(|p| p.pid)
    }

    /// `kill -9` of the cluster's API server process (the supervisor restarts it); returns
    /// the pid it had.
    pub fn kill_apiserver(&self) -> anyhow::Result<i32> {
        let pid = self
            .apiserver_pid()
            .with_context(|| format!("no API server process of cluster {}", self.name))?;
        ok(Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .output()
            .context("running kill")?)?;
        Ok(pid)
    }

    /// Waits until an API server process other than `old` runs and accepts connections on
    /// the cluster's port; returns its pid.
    pub fn wait_apiserver_restarted(
        &self,
        old: i32,
        timeout: std::time::Duration,
    ) -> anyhow::Result<i32> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Some(pid) = self.apiserver_pid().filter(|p| *p != old) {
                if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                    return Ok(pid);
                }
            }
            if std::time::Instant::now() > deadline {
                bail!(
                    "the API server of cluster {} was not restarted within {timeout:?}",
                    self.name
                );
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

impl Cluster {
    /// A kubectl command aimed at this cluster, to spawn (background watches) or to run
    /// with extra environment (KUBE_EDITOR).
    pub fn kubectl_cmd(&self, kubectl: &Path, args: &[&str]) -> Command {
        let mut cmd = Command::new(kubectl);
        cmd.env("KUBECONFIG", &self.kubeconfig)
            .env("HOME", self.data.path())
            .args(args)
            .stdin(Stdio::null());
        cmd
    }
}

//! exec and port-forward from the other clients people script with, unchanged: the
//! official Python client's `stream()` and `portforward()` (tests/python/stream.py) and
//! kube-rs's `Api::exec` and `Api::portforward`. Each test owns its cluster.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use k8s_openapi::api::core::v1::Pod;
use kins_tests::pods::{create, wait_running};
use kins_tests::Cluster;
use kube::api::{Api, AttachParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const SLEEPER: &str = r#"{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "bb"},
  "spec": {"terminationGracePeriodSeconds": 0,
    "containers": [{"name": "bb", "image": "busybox", "command": ["sleep", "3600"]}]}}"#;
const WEB: &str = r#"{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web"},
  "spec": {"terminationGracePeriodSeconds": 0,
    "containers": [{"name": "nginx", "image": "nginx", "ports": [{"containerPort": 80}]}]}}"#;

fn cluster(name: &str) -> Result<Cluster> {
    let c = Cluster::up_nodes(name, 1)?;
    create(&c, SLEEPER)?;
    create(&c, WEB)?;
    wait_running(&c, "bb")?;
    wait_running(&c, "web")?;
    Ok(c)
}

/// The Python with the `kubernetes` package: $KINS_PYTHON, else the tools venv
/// scripts/test.sh installs it into.
fn python() -> PathBuf {
    std::env::var_os("KINS_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/opt/kins-tools/bin/python"))
}

#[test]
fn python_client_exec_and_portforward() -> Result<()> {
    let c = cluster("kpy")?;
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("python/stream.py");
    let out = std::process::Command::new(python())
        .arg(&script)
        .arg(&c.kubeconfig)
        .args(["bb", "web"])
        .output()
        .with_context(|| {
            format!(
                "running {} (scripts/test.sh installs it)",
                python().display()
            )
        })?;
    let text = String::from_utf8_lossy(&out.stdout);
    ensure!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Every check of the script ran.
    ensure!(
        text.lines().filter(|l| l.starts_with("ok ")).count() == 7,
        "{text}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn kube_rs_exec_and_portforward() -> Result<()> {
    let c = tokio::task::spawn_blocking(|| cluster("kkrs")).await??;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let kc = Kubeconfig::read_from(&c.kubeconfig)?;
    let cfg = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await?;
    let pods: Api<Pod> = Api::default_namespaced(kube::Client::try_from(cfg)?);

    // exec: stdin in, stdout out, the exit code in the Status.
    let ap = AttachParams::default().stdin(true).stderr(false);
    let mut p = pods
        .exec("bb", ["sh", "-c", "read l; echo kube-rs $l; exit 4"], &ap)
        .await?;
    let mut stdin = p.stdin().context("stdin")?;
    stdin.write_all(b"here\n").await?;
    let mut out = String::new();
    p.stdout()
        .context("stdout")?
        .read_to_string(&mut out)
        .await?;
    ensure!(out == "kube-rs here\n", "{out:?}");
    let status = p
        .take_status()
        .context("status")?
        .await
        .context("a status")?;
    ensure!(
        status.reason.as_deref() == Some("NonZeroExitCode"),
        "{status:?}"
    );
    let code = status.details.and_then(|d| d.causes).unwrap_or_default();
    ensure!(
        code.iter().any(|c| c.message.as_deref() == Some("4")),
        "{code:?}"
    );

    // port-forward: an HTTP request to nginx through the forwarded stream.
    let mut pf = pods.portforward("web", &[80]).await?;
    let mut s = pf.take_stream(80).context("stream for port 80")?;
    s.write_all(b"GET / HTTP/1.0\r\nHost: web\r\n\r\n").await?;
    let mut page = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), s.read_to_end(&mut page)).await??;
    let page = String::from_utf8_lossy(&page);
    ensure!(page.contains("Welcome to nginx!"), "{page}");
    drop(s);
    pf.abort();
    Ok(())
}

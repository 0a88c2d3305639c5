//! Helpers for tests that run pods: kubectl as JSON, waiting, and entering a pod.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::Value;

use crate::{kubectls, ok, Cluster};

/// The first kubectl of $KINS_KUBECTLS, its stdout.
pub fn kubectl(c: &Cluster, args: &[&str]) -> anyhow::Result<String> {
    ok(c.kubectl(&kubectls()[0], args)?)
}

pub fn get_json(c: &Cluster, args: &[&str]) -> anyhow::Result<Value> {
    let mut a = args.to_vec();
    a.extend(["-o", "json"]);
    Ok(serde_json::from_str(&kubectl(c, &a)?)?)
}

/// Polls `f` until it returns Some, or fails after `secs`.
pub fn wait_for<T>(
    what: &str,
    secs: u64,
    mut f: impl FnMut() -> anyhow::Result<Option<T>>,
) -> anyhow::Result<T> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut last = String::new();
    loop {
        match f() {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(e) => last = e.to_string(),
        }
        if Instant::now() > deadline {
            bail!("timed out waiting for {what} {last}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub fn create(c: &Cluster, manifest: &str) -> anyhow::Result<()> {
    ok(c.kubectl_stdin(&kubectls()[0], &["create", "-f", "-"], Some(manifest))?)?;
    Ok(())
}

/// Waits until the pod is Running and Ready; returns it.
pub fn wait_running(c: &Cluster, pod: &str) -> anyhow::Result<Value> {
    wait_for(&format!("pod {pod} to run"), 60, || {
        let p = get_json(c, &["get", "pod", pod])?;
        let ready = p["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|x| x["type"] == "Ready" && x["status"] == "True");
        Ok(
            (p["status"]["phase"] == "Running" && ready && p["status"]["podIP"].is_string())
                .then_some(p),
        )
    })
}

pub fn pod_netns(c: &Cluster, pod: &Value) -> PathBuf {
    let node = pod["spec"]["nodeName"].as_str().unwrap_or("");
    let uid = pod["metadata"]["uid"].as_str().unwrap_or("");
    PathBuf::from(format!("/run/kins/{}/nodes/{node}/pods/{uid}/net", c.name))
}

/// Runs a host command inside a pod's network namespace.
pub fn in_pod(c: &Cluster, pod: &Value, argv: &[&str]) -> anyhow::Result<String> {
    let ns = format!("--net={}", pod_netns(c, pod).display());
    let out = Command::new("nsenter")
        .arg(ns)
        .args(argv)
        .output()
        .context("nsenter")?;
    ok(out)
}

/// The host pid of a container's process (from its shim's pid file).
pub fn container_pid(c: &Cluster, pod: &Value, container: &str) -> anyhow::Result<i32> {
    let node = pod["spec"]["nodeName"].as_str().unwrap_or("");
    let uid = pod["metadata"]["uid"].as_str().unwrap_or("");
    let dir = PathBuf::from(format!(
        "/run/kins/{}/nodes/{node}/pods/{uid}/containers",
        c.name
    ));
    // The newest run of the container.
    let mut runs: Vec<(u32, PathBuf)> = std::fs::read_dir(&dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .flatten()
        .filter_map(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            let (name, attempt) = n.rsplit_once('.')?;
            (name == container).then(|| Some((attempt.parse().ok()?, e.path())))?
        })
        .collect();
    runs.sort();
    let (_, run) = runs.last().context("no run of the container")?;
    let pid = std::fs::read_to_string(run.join("pid")).context("reading the pid file")?;
    Ok(pid.trim().parse()?)
}

/// Runs a command inside a running container (all its namespaces, its root), like
/// `kubectl exec` would; stdout.
pub fn exec(c: &Cluster, pod: &Value, container: &str, argv: &[&str]) -> anyhow::Result<String> {
    let pid = container_pid(c, pod, container)?;
    let out = Command::new("nsenter")
        .args(["-t", &pid.to_string(), "-a"])
        .args(argv)
        .output()
        .context("nsenter")?;
    ok(out)
}

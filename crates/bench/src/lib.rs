//! Shared pieces of the benchmark programs: an HTTPS client with the admin identity of a
//! cluster's kubeconfig, percentiles, and (`dataplane`) pod-to-pod throughput and
//! connection-rate measurements.

use std::path::Path;

use anyhow::Context;
use base64::Engine;

pub mod dataplane;

/// Reads `key: value` fields of the kubeconfig kins writes.
fn field(text: &str, key: &str) -> anyhow::Result<String> {
    let line = text
        .lines()
        .map(str::trim)
        .find_map(|l| l.strip_prefix(&format!("{key}: ")))
        .with_context(|| format!("kubeconfig has no {key}"))?;
    Ok(line.to_string())
}

/// An HTTP/2 client that trusts the cluster CA and presents the admin certificate.
pub fn client(kubeconfig: &Path) -> anyhow::Result<reqwest::Client> {
    let text = std::fs::read_to_string(kubeconfig)?;
    let b64 = |k: &str| -> anyhow::Result<Vec<u8>> {
        Ok(base64::engine::general_purpose::STANDARD.decode(field(&text, k)?)?)
    };
    let ca = reqwest::Certificate::from_pem(&b64("certificate-authority-data")?)?;
    let mut id = b64("client-certificate-data")?;
    id.extend(b64("client-key-data")?);
    let identity = reqwest::Identity::from_pem(&id)?;
    Ok(reqwest::Client::builder()
        .use_rustls_tls()
        .add_root_certificate(ca)
        .identity(identity)
        .pool_max_idle_per_host(64)
        .build()?)
}

/// The p-th percentile (0..=100) of sorted samples.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Resident memory of a process in MiB, from /proc.
pub fn rss_mib(pid: i32) -> Option<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: f64 = s
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(kb / 1024.0)
}

/// The pid of a cluster's API server process.
pub fn apiserver_pid(cluster: &str) -> Option<i32> {
    lab::procs::find(cluster)
        .into_iter()
        .find(|p| p.role == "apiserver")
        .map(|p| p.pid)
}

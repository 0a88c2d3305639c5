//! Pod network helpers shared by the CNI plugin e2e tests and the CNI benchmark: the
//! agents' `pod network ready` log lines (the CNI ADD duration of each pod's chain), a
//! pod's interface MTU and its veth's node end, iperf3 between pods' namespaces, and the
//! addresses a node's IPAM holds.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::pods::{in_pod, pod_netns, wait_for};
use crate::services::node_exec;
use crate::{ok, Cluster};

/// The plugins `kins up --cni` offers.
pub const PLUGINS: [&str; 4] = ["kins", "bridge", "ptp", "vxlan"];

/// The log file of a node's agent.
pub fn agent_log(c: &Cluster, node: &str) -> PathBuf {
    c.data
        .path()
        .join(&c.name)
        .join("logs")
        .join(format!("agent-{node}.log"))
}

/// `text` without ANSI escape sequences (CSI `ESC [ ... letter`, and lone ESCs).
pub fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(ch) = chars.next() {
        if ch != '\u{1b}' {
            out.push(ch);
            continue;
        }
        if chars.peek() == Some(&'[') {
            chars.next();
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        }
    }
    out
}

/// The value of a `key=value` field of a tracing fmt line (quotes removed); the first
/// one when the line has several.
pub fn log_field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let at = line
        .match_indices(&format!("{key}="))
        .find(|(i, _)| *i == 0 || !line[..*i].ends_with(|c: char| c.is_alphanumeric() || c == '_'))?
        .0;
    let rest = &line[at + key.len() + 1..];
    if let Some(quoted) = rest.strip_prefix('"') {
        return quoted.split('"').next();
    }
    rest.split(|c: char| c.is_whitespace() || c == ',' || c == '}')
        .next()
}

/// One `pod network ready` line of an agent's log.
#[derive(Debug, Clone, PartialEq)]
pub struct NetworkReady {
    /// The `pod` field: the pod's name (a `namespace/` prefix is removed).
    pub pod: String,
    /// The `add_ms` field: how long the CNI ADD of the pod's chain took.
    pub add_ms: f64,
}

/// Every `pod network ready` line of `node`'s agent log, in order (a missing log is none).
pub fn network_ready(c: &Cluster, node: &str) -> Result<Vec<NetworkReady>> {
    let path = agent_log(c, node);
    let text = match std::fs::read(&path) {
        Ok(b) => String::from_utf8_lossy(&b).into_owned(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let mut out = Vec::new();
    for line in strip_ansi(&text).lines() {
        if !line.contains("pod network ready") {
            continue;
        }
        let (Some(pod), Some(ms)) = (log_field(line, "pod"), log_field(line, "add_ms")) else {
            continue;
        };
        let Ok(add_ms) = ms.trim_end_matches("ms").parse::<f64>() else {
            continue;
        };
        let pod = pod.rsplit('/').next().unwrap_or(pod).to_string();
        out.push(NetworkReady { pod, add_ms });
    }
    Ok(out)
}

/// `ip -j link show IFACE` inside a pod's network namespace: the link's JSON object.
pub fn pod_link(c: &Cluster, pod: &Value, iface: &str) -> Result<Value> {
    let out = ok(Command::new("nsenter")
        .arg(format!("--net={}", pod_netns(c, pod).display()))
        .args(["ip", "-j", "link", "show", iface])
        .output()
        .context("nsenter ip link")?)?;
    let v: Value = serde_json::from_str(&out).with_context(|| format!("ip -j link: {out}"))?;
    v.as_array()
        .and_then(|a| a.first())
        .cloned()
        .with_context(|| format!("no link {iface} in the pod: {out}"))
}

/// The MTU of a pod's eth0.
pub fn pod_mtu(c: &Cluster, pod: &Value) -> Result<u64> {
    let link = pod_link(c, pod, "eth0")?;
    link["mtu"]
        .as_u64()
        .with_context(|| format!("eth0 without an mtu: {link}"))
}

// ---- traffic shaping and IPAM (the cni_limits suite) ----

/// The port of `iperf3 -s` in a server pod's namespace.
pub const IPERF_PORT: u16 = 5201;

/// The host's `iperf3 -s` run inside a pod's network namespace, killed on drop.
pub struct PodIperfServer(Child);

impl PodIperfServer {
    /// Starts it and waits until it listens on [`IPERF_PORT`].
    pub fn start(c: &Cluster, pod: &Value) -> Result<PodIperfServer> {
        let child = Command::new("nsenter")
            .arg(format!("--net={}", pod_netns(c, pod).display()))
            .args(["iperf3", "-s", "-p", &IPERF_PORT.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting iperf3 -s")?;
        let mut server = PodIperfServer(child);
        let port = format!("sport = :{IPERF_PORT}");
        wait_for("iperf3 -s to listen", 10, || {
            if let Some(status) = server.0.try_wait()? {
                bail!("iperf3 -s exited: {status}");
            }
            let out = in_pod(c, pod, &["ss", "-Hltn", &port])?;
            Ok((!out.trim().is_empty()).then_some(()))
        })?;
        Ok(server)
    }
}

impl Drop for PodIperfServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `iperf3 -c IP` (one TCP stream) from inside `pod`'s network namespace: `secs` seconds
/// measured after `omit` seconds left out of the figures; with `reverse` the server sends
/// (`-R`). The receiver's Mbit/s.
pub fn iperf_mbits(
    c: &Cluster,
    pod: &Value,
    ip: &str,
    secs: u64,
    omit: u64,
    reverse: bool,
) -> Result<f64> {
    let mut cmd = Command::new("timeout");
    cmd.args(["-k", "5", &(secs + omit + 30).to_string(), "nsenter"])
        .arg(format!("--net={}", pod_netns(c, pod).display()))
        .args(["iperf3", "-c", ip, "-p", &IPERF_PORT.to_string(), "-J"])
        .args(["-t", &secs.to_string(), "-O", &omit.to_string()])
        .args(["--connect-timeout", "3000"])
        .stdin(Stdio::null());
    if reverse {
        cmd.arg("-R");
    }
    // The server serves one test at a time and takes a moment to finish the last one (a
    // shaped stream drains its queue first): "busy" is waited out, other errors are not.
    let mut tries = 0;
    let v = loop {
        let v = iperf_once(&mut cmd, ip)?;
        match v["error"].as_str() {
            Some(e) if e.contains("busy") && tries < 40 => {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(500));
            }
            Some(e) => bail!("iperf3 -c {ip}: {e}"),
            None => break v,
        }
    };
    let bps = v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .with_context(|| format!("iperf3 -c {ip}: no end.sum_received in {v}"))?;
    Ok(bps / 1e6)
}

/// One run of a prepared `iperf3 -c ... -J`: its JSON report.
fn iperf_once(cmd: &mut Command, ip: &str) -> Result<Value> {
    let out = cmd.output().context("running iperf3 -c")?;
    let v: Value = serde_json::from_slice(&out.stdout).with_context(|| {
        format!(
            "iperf3 -c {ip} printed no JSON ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )
    })?;
    Ok(v)
}

/// The node-side end of a pod's eth0 (a veth): its name in the node's namespace, found
/// by the peer index the pod's end reports.
pub fn host_veth(c: &Cluster, pod: &Value) -> Result<String> {
    let link = pod_link(c, pod, "eth0")?;
    let peer = link["link_index"]
        .as_u64()
        .with_context(|| format!("the pod's eth0 names no peer: {link}"))?;
    let node = pod["spec"]["nodeName"]
        .as_str()
        .context("the pod is not bound to a node")?;
    let out = node_exec(c, node, &["ip", "-j", "link", "show"])?;
    let links: Value =
        serde_json::from_str(&out).with_context(|| format!("ip -j link on {node}: {out}"))?;
    links
        .as_array()
        .into_iter()
        .flatten()
        .find(|l| l["ifindex"].as_u64() == Some(peer))
        .and_then(|l| l["ifname"].as_str())
        .map(str::to_string)
        .with_context(|| format!("no link with index {peer} on {node}: {out}"))
}

/// The addresses a node's IPAM holds: files named like an IPv4 address anywhere under
/// the node's `ipam` run directory (`${IPAM_DIR}`; host-local and kins-host-local both
/// keep one file per address), sorted, one entry per file (so an address held twice, in
/// two networks, shows twice).
pub fn ipam_addresses(c: &Cluster, node: &str) -> Vec<Ipv4Addr> {
    fn walk(dir: &Path, out: &mut Vec<Ipv4Addr>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let Ok(t) = e.file_type() else { continue };
            let name = e.file_name().to_string_lossy().into_owned();
            if t.is_dir() {
                walk(&e.path(), out);
            } else if let (true, Ok(ip)) = (t.is_file(), name.parse::<Ipv4Addr>()) {
                out.push(ip);
            }
        }
    }
    let mut out = Vec::new();
    walk(
        &Path::new("/run/kins")
            .join(&c.name)
            .join("nodes")
            .join(node)
            .join("ipam"),
        &mut out,
    );
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_of_log_lines() {
        let line = "\u{1b}[2m2024-01-01T00:00:00Z\u{1b}[0m \u{1b}[32m INFO\u{1b}[0m agent: pod network ready \u{1b}[3mpod\u{1b}[0m\u{1b}[2m=\u{1b}[0mweb-1 \u{1b}[3madd_ms\u{1b}[0m\u{1b}[2m=\u{1b}[0m12.5";
        let plain = strip_ansi(line);
        assert_eq!(log_field(&plain, "pod"), Some("web-1"));
        assert_eq!(log_field(&plain, "add_ms"), Some("12.5"));
        let quoted = r#"INFO pod network ready pod="default/x" add_ms=3.25 node=n"#;
        assert_eq!(log_field(quoted, "pod"), Some("default/x"));
        assert_eq!(log_field(quoted, "add_ms"), Some("3.25"));
        // `xpod=` is not `pod=`.
        assert_eq!(log_field("a xpod=1 pod=2", "pod"), Some("2"));
    }
}

//! Pod network helpers shared by the CNI plugin e2e tests and the CNI benchmark: the
//! agents' `pod network ready` log lines (the CNI ADD duration of each pod's chain) and a
//! pod's interface MTU.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result};
use serde_json::Value;

use crate::pods::pod_netns;
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

//! Stale UDP flows. UDP has no connection to end, so a conntrack entry that was NATed to
//! an endpoint keeps steering a client's packets there after the endpoint is gone, and an
//! entry made while a service had no endpoints keeps its packets away once it has some.
//! After each change the proxy deletes those entries (as kube-proxy does); TCP needs
//! nothing, its connections fail and reconnect.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::process::Command;
use std::sync::Mutex;

use crate::model::{Desired, Endpoint, Proto, ID_MASK};
use crate::ProxyError;

/// Conntrack entries to delete.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Flush {
    /// UDP entries translated to this endpoint (their reply comes from it).
    Endpoint(Ipv4Addr, u16),
    /// UDP entries to this frontend address and port (it had no endpoints).
    Frontend(Ipv4Addr, u16),
    /// UDP entries to this NodePort on any address (it had no endpoints).
    NodePort(u16),
}

impl Flush {
    /// The `conntrack` arguments that delete these entries.
    pub fn args(&self) -> Vec<String> {
        let mut a: Vec<String> = ["-D", "-p", "udp"].map(String::from).to_vec();
        match self {
            Flush::Endpoint(ip, port) => a.extend([
                "--reply-src".into(),
                ip.to_string(),
                "--reply-port-src".into(),
                port.to_string(),
            ]),
            Flush::Frontend(ip, port) => a.extend([
                "--orig-dst".into(),
                ip.to_string(),
                "--dport".into(),
                port.to_string(),
            ]),
            Flush::NodePort(port) => a.extend(["--dport".into(), port.to_string()]),
        }
        a
    }
}

/// The UDP flows that going from `old` to `new` leaves stale: endpoints no UDP frontend
/// uses any more, and UDP frontends that had no endpoints and now have some. Pure; its
/// cost follows the number of UDP frontends and their buckets.
pub fn stale_udp(old: &Desired, new: &Desired) -> Vec<Flush> {
    let before = udp_endpoints(old);
    let after = udp_endpoints(new);
    let mut out: BTreeSet<Flush> = before
        .difference(&after)
        .map(|e| Flush::Endpoint(e.0, e.1))
        .collect();
    for k in old.no_endpoints.keys().filter(|k| k.1 == Proto::Udp) {
        if new.service_ips.contains_key(k) || new.external_ips.contains_key(k) {
            out.insert(Flush::Frontend(k.0, k.2));
        }
    }
    for k in old
        .no_endpoint_node_ports
        .keys()
        .filter(|k| k.0 == Proto::Udp)
    {
        if new.node_ports.contains_key(k) {
            out.insert(Flush::NodePort(k.1));
        }
    }
    out.into_iter().collect()
}

/// The endpoints behind any UDP frontend of `d`.
fn udp_endpoints(d: &Desired) -> BTreeSet<Endpoint> {
    let groups: BTreeSet<u32> = d
        .service_ips
        .iter()
        .chain(d.external_ips.iter())
        .filter(|(k, _)| k.1 == Proto::Udp)
        .map(|(_, e)| e.value.0 & ID_MASK)
        .chain(
            d.node_ports
                .iter()
                .filter(|(k, _)| k.0 == Proto::Udp)
                .map(|(_, e)| e.value.0 & ID_MASK),
        )
        .collect();
    if groups.is_empty() {
        return BTreeSet::new();
    }
    d.backends
        .iter()
        .filter(|(b, _)| groups.contains(&(b.0 .0 & ID_MASK)))
        .map(|(_, e)| e.value)
        .collect()
}

/// Something that deletes conntrack entries in the caller's network namespace.
pub trait Conntrack: Send + Sync {
    fn flush(&self, f: &Flush) -> Result<(), ProxyError>;
}

/// The `conntrack` program (conntrack-tools).
#[derive(Debug, Clone)]
pub struct ConntrackCommand {
    pub program: String,
}

impl Default for ConntrackCommand {
    fn default() -> Self {
        ConntrackCommand {
            program: "conntrack".into(),
        }
    }
}

impl Conntrack for ConntrackCommand {
    fn flush(&self, f: &Flush) -> Result<(), ProxyError> {
        let out = Command::new(&self.program)
            .args(f.args())
            .output()
            .map_err(|e| ProxyError::Spawn {
                program: self.program.clone(),
                source: e,
            })?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        // Nothing to delete is not an error (conntrack exits 1 and says so).
        if out.status.success() || stderr.contains("0 flow entries") {
            return Ok(());
        }
        Err(ProxyError::Conntrack {
            args: f.args().join(" "),
            stderr: stderr.trim().to_string(),
        })
    }
}

/// Records the flushes asked for: for unit tests.
#[derive(Debug, Default)]
pub struct RecordingConntrack {
    flushed: Mutex<Vec<Flush>>,
}

impl RecordingConntrack {
    pub fn flushed(&self) -> Vec<Flush> {
        self.flushed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl Conntrack for RecordingConntrack {
    fn flush(&self, f: &Flush) -> Result<(), ProxyError> {
        self.flushed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(*f);
        Ok(())
    }
}

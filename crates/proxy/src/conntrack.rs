//! Stale UDP flows. UDP has no connection to end, so a conntrack entry that was NATed to
//! an endpoint keeps steering a client's packets there after the endpoint is gone, and an
//! entry made while a service had no endpoints keeps its packets away once it has some.
//! After each change the proxy deletes those entries (as kube-proxy does); TCP needs
//! nothing, its connections fail and reconnect.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::process::Command;
use std::sync::Mutex;

use crate::model::{Desired, Proto, ID_MASK};
use crate::ProxyError;

/// Conntrack entries to delete. `dst` None stands for a NodePort (any local address).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Flush {
    /// UDP entries to this frontend that were translated to `endpoint`, no longer behind it.
    Translated {
        dst: Option<Ipv4Addr>,
        port: u16,
        endpoint: Ipv4Addr,
    },
    /// UDP entries to this frontend made while it had no endpoints (refused, untranslated).
    Untranslated { dst: Option<Ipv4Addr>, port: u16 },
}

impl Flush {
    /// The `conntrack` arguments that delete these entries.
    pub fn args(&self) -> Vec<String> {
        let mut a: Vec<String> = ["-D", "-p", "udp"].map(String::from).to_vec();
        let (dst, port, endpoint) = match *self {
            Flush::Translated {
                dst,
                port,
                endpoint,
            } => (dst, port, Some(endpoint)),
            Flush::Untranslated { dst, port } => (dst, port, None),
        };
        if let Some(ip) = dst {
            a.extend(["--orig-dst".into(), ip.to_string()]);
        }
        a.extend(["--orig-port-dst".into(), port.to_string()]);
        if let Some(ep) = endpoint {
            a.extend(["--dst-nat".into(), ep.to_string()]);
        }
        a
    }
}

/// The UDP flows that going from `old` to `new` leaves stale (as kube-proxy flushes them):
/// for each UDP frontend, those translated to an endpoint no longer behind it; and those
/// of frontends that had no endpoints and now have some. Pure; its cost follows the UDP
/// frontends and their endpoints.
pub fn stale_udp(old: &Desired, new: &Desired) -> Vec<Flush> {
    let (old_fronts, new_fronts) = (udp_frontends(old), udp_frontends(new));
    let (before, after) = (groups(old, &old_fronts), groups(new, &new_fronts));
    let members = |g: &BTreeMap<u32, BTreeSet<Ipv4Addr>>, id: Option<u32>| {
        id.and_then(|id| g.get(&id)).cloned().unwrap_or_default()
    };
    let mut out: BTreeSet<Flush> = BTreeSet::new();
    for (&(dst, port), &old_id) in &old_fronts {
        let new_id = new_fronts.get(&(dst, port)).copied();
        let now = members(&after, new_id);
        for endpoint in members(&before, Some(old_id)).difference(&now) {
            out.insert(Flush::Translated {
                dst,
                port,
                endpoint: *endpoint,
            });
        }
    }
    for k in old.no_endpoints.keys().filter(|k| k.1 == Proto::Udp) {
        if new.service_ips.contains_key(k) || new.external_ips.contains_key(k) {
            out.insert(Flush::Untranslated {
                dst: Some(k.0),
                port: k.2,
            });
        }
    }
    for k in old
        .no_endpoint_node_ports
        .keys()
        .filter(|k| k.0 == Proto::Udp)
    {
        if new.node_ports.contains_key(k) {
            out.insert(Flush::Untranslated {
                dst: None,
                port: k.1,
            });
        }
    }
    out.into_iter().collect()
}

/// UDP frontends (address or None for a NodePort, port) to their group id.
fn udp_frontends(d: &Desired) -> BTreeMap<(Option<Ipv4Addr>, u16), u32> {
    d.service_ips
        .iter()
        .chain(d.external_ips.iter())
        .filter(|(k, _)| k.1 == Proto::Udp)
        .map(|(k, e)| ((Some(k.0), k.2), e.value.0 & ID_MASK))
        .chain(
            d.node_ports
                .iter()
                .filter(|(k, _)| k.0 == Proto::Udp)
                .map(|(k, e)| ((None, k.1), e.value.0 & ID_MASK)),
        )
        .collect()
}

/// The endpoint addresses of the groups behind `fronts` (UDP ones: TCP costs nothing).
fn groups(
    d: &Desired,
    fronts: &BTreeMap<(Option<Ipv4Addr>, u16), u32>,
) -> BTreeMap<u32, BTreeSet<Ipv4Addr>> {
    let ids: BTreeSet<u32> = fronts.values().copied().collect();
    let mut out: BTreeMap<u32, BTreeSet<Ipv4Addr>> = BTreeMap::new();
    if ids.is_empty() {
        return out;
    }
    for (b, e) in &d.backends {
        let id = b.0 .0 & ID_MASK;
        if ids.contains(&id) {
            out.entry(id).or_default().insert(e.value.0);
        }
    }
    out
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

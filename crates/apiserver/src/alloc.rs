//! ClusterIP and NodePort allocation. The store is the truth: every allocation is a key
//! under `/registry/ranges/` created or deleted in the same transaction as its Service, so
//! nothing is handed out twice, also across restarts. An in-memory copy only speeds up the
//! choice of a free value; a stale copy costs a retry, never a duplicate.

use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::sync::Mutex;

use rand::Rng;
use serde_json::{json, Value};

use crate::status::ApiError;

pub const IP_PREFIX: &str = "/registry/ranges/serviceips/";
pub const PORT_PREFIX: &str = "/registry/ranges/servicenodeports/";

/// An IPv4 CIDR.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub base: Ipv4Addr,
    pub prefix: u8,
}

impl Cidr {
    pub fn parse(s: &str) -> Result<Cidr, String> {
        let (ip, len) = s
            .split_once('/')
            .ok_or_else(|| format!("{s}: not a CIDR (want a.b.c.d/n)"))?;
        let ip: Ipv4Addr = ip.parse().map_err(|e| format!("{s}: {e}"))?;
        let prefix: u8 = len.parse().map_err(|e| format!("{s}: {e}"))?;
        if prefix > 30 {
            return Err(format!("{s}: prefix must be at most /30"));
        }
        let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
        Ok(Cidr {
            base: Ipv4Addr::from(u32::from(ip) & mask),
            prefix,
        })
    }

    pub fn size(&self) -> u32 {
        1u32 << (32 - u32::from(self.prefix))
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        let off = u32::from(ip).wrapping_sub(u32::from(self.base));
        u32::from(ip) >= u32::from(self.base) && off < self.size()
    }

    /// The n-th address of the range.
    pub fn nth(&self, n: u32) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.base) + n)
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.base, self.prefix)
    }
}

/// Allocation state of one Service: its ClusterIP (if any) and node ports.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Held {
    pub ip: Option<Ipv4Addr>,
    pub ports: Vec<u16>,
}

impl Held {
    /// What a stored Service object holds.
    pub fn of(svc: &Value) -> Held {
        let spec = &svc["spec"];
        let ip = spec["clusterIP"].as_str().and_then(|s| s.parse().ok());
        let mut ports: Vec<u16> = spec["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| p["nodePort"].as_u64())
            .filter_map(|p| u16::try_from(p).ok())
            .filter(|p| *p != 0)
            .collect();
        if let Some(hc) = spec["healthCheckNodePort"]
            .as_u64()
            .and_then(|p| u16::try_from(p).ok())
        {
            if hc != 0 {
                ports.push(hc);
            }
        }
        ports.sort_unstable();
        ports.dedup();
        Held { ip, ports }
    }
}

pub struct Allocator {
    pub service_cidr: Cidr,
    pub node_ports: (u16, u16),
    ips: Mutex<HashSet<Ipv4Addr>>,
    ports: Mutex<HashSet<u16>>,
}

fn invalid(field: &str, value: String, detail: String) -> api::validation::FieldError {
    api::validation::FieldError {
        kind: api::validation::FieldErrorKind::Invalid,
        field: field.to_string(),
        value: Some(value),
        detail,
    }
}

impl Allocator {
    pub fn new(service_cidr: Cidr, node_ports: (u16, u16)) -> Allocator {
        Allocator {
            service_cidr,
            node_ports,
            ips: Mutex::new(HashSet::new()),
            ports: Mutex::new(HashSet::new()),
        }
    }

    /// Loads what the store says is allocated.
    pub fn load(&self, store: &dyn store::Backend) -> Result<(), store::Error> {
        let ips = store.list(IP_PREFIX, None, None, None)?;
        let ports = store.list(PORT_PREFIX, None, None, None)?;
        let mut i = self.ips.lock().unwrap_or_else(|e| e.into_inner());
        i.clear();
        i.extend(
            ips.items
                .iter()
                .filter_map(|kv| kv.key[IP_PREFIX.len()..].parse::<Ipv4Addr>().ok()),
        );
        let mut p = self.ports.lock().unwrap_or_else(|e| e.into_inner());
        p.clear();
        p.extend(
            ports
                .items
                .iter()
                .filter_map(|kv| kv.key[PORT_PREFIX.len()..].parse::<u16>().ok()),
        );
        Ok(())
    }

    /// The first usable address (the `kubernetes` service's).
    pub fn first_ip(&self) -> Ipv4Addr {
        self.service_cidr.nth(1)
    }

    /// The tenth address (kube-dns's, by kubeadm's convention).
    pub fn dns_ip(&self) -> Ipv4Addr {
        self.service_cidr.nth(10)
    }

    fn random_ip(&self) -> Option<Ipv4Addr> {
        let size = self.service_cidr.size();
        let used = self.ips.lock().unwrap_or_else(|e| e.into_inner());
        if used.len() as u64 + 2 >= u64::from(size) {
            return None;
        }
        // Dynamic allocations prefer the upper part of the range, leaving the lower
        // sixteenth (at least 16 addresses) for addresses people ask for, as Kubernetes does.
        let low = (size / 16).clamp(16.min(size - 2), size - 2);
        let mut rng = rand::thread_rng();
        for _ in 0..64 {
            let n = rng.gen_range(low..size - 1);
            let ip = self.service_cidr.nth(n);
            if !used.contains(&ip) {
                return Some(ip);
            }
        }
        (1..size - 1)
            .map(|n| self.service_cidr.nth(n))
            .find(|ip| !used.contains(ip))
    }

    fn random_port(&self, taken: &HashSet<u16>) -> Option<u16> {
        let used = self.ports.lock().unwrap_or_else(|e| e.into_inner());
        let (lo, hi) = self.node_ports;
        let mut rng = rand::thread_rng();
        for _ in 0..64 {
            let p = rng.gen_range(lo..=hi);
            if !used.contains(&p) && !taken.contains(&p) {
                return Some(p);
            }
        }
        (lo..=hi).find(|p| !used.contains(p) && !taken.contains(p))
    }

    /// Fills in spec.clusterIP(s) and node ports of a Service about to be written, given
    /// what its previous version held. Returns what it will hold, or field errors.
    pub fn assign(
        &self,
        svc: &mut Value,
        old: &Held,
    ) -> Result<Held, Vec<api::validation::FieldError>> {
        let spec = svc
            .get_mut("spec")
            .and_then(Value::as_object_mut)
            .ok_or_else(|| vec![invalid("spec", "null".into(), "spec is required".into())])?;
        let ty = spec
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("ClusterIP")
            .to_string();
        let mut held = Held::default();
        let mut errors = Vec::new();

        // ClusterIP.
        if ty == "ExternalName" {
            spec.remove("clusterIP");
            spec.remove("clusterIPs");
        } else {
            let requested = spec
                .get("clusterIP")
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .or_else(|| {
                    spec.get("clusterIPs")
                        .and_then(|v| v.get(0))
                        .and_then(Value::as_str)
                        .map(str::to_string)
                });
            match requested.as_deref() {
                Some("None") => {
                    spec.insert("clusterIP".into(), json!("None"));
                    spec.insert("clusterIPs".into(), json!(["None"]));
                }
                Some(s) => {
                    match s.parse::<Ipv4Addr>() {
                        Err(_) => errors.push(invalid(
                            "spec.clusterIPs",
                            format!("[\"{s}\"]"),
                            "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)".into(),
                        )),
                        Ok(ip) if old.ip == Some(ip) => held.ip = Some(ip),
                        Ok(ip) => {
                            let last = self.service_cidr.nth(self.service_cidr.size() - 1);
                            if !self.service_cidr.contains(ip)
                                || ip == self.service_cidr.base
                                || ip == last
                            {
                                errors.push(invalid(
                                "spec.clusterIPs",
                                format!("[\"{s}\"]"),
                                format!("failed to allocate IP {s}: the provided IP ({s}) is not in the valid range. The range of valid IPs is {}", self.service_cidr),
                            ));
                            } else if self
                                .ips
                                .lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .contains(&ip)
                            {
                                errors.push(invalid(
                                "spec.clusterIPs",
                                format!("[\"{s}\"]"),
                                format!("failed to allocate IP {s}: provided IP is already allocated"),
                            ));
                            } else {
                                held.ip = Some(ip);
                            }
                        }
                    }
                }
                None => match old.ip.or_else(|| self.random_ip()) {
                    Some(ip) => held.ip = Some(ip),
                    None => errors.push(invalid(
                        "spec.clusterIPs",
                        "[]".into(),
                        format!(
                            "failed to allocate a serviceIP: range is full ({})",
                            self.service_cidr
                        ),
                    )),
                },
            }
            if let Some(ip) = held.ip {
                spec.insert("clusterIP".into(), json!(ip.to_string()));
                spec.insert("clusterIPs".into(), json!([ip.to_string()]));
            }
        }

        // Node ports.
        let wants_node_ports = ty == "NodePort"
            || (ty == "LoadBalancer"
                && spec
                    .get("allocateLoadBalancerNodePorts")
                    .and_then(Value::as_bool)
                    .unwrap_or(true));
        let (lo, hi) = self.node_ports;
        let mut mine: HashSet<u16> = HashSet::new();
        if let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) {
            for (i, port) in ports.iter_mut().enumerate() {
                let Some(port) = port.as_object_mut() else {
                    continue;
                };
                let given = port.get("nodePort").and_then(Value::as_u64).unwrap_or(0);
                if !wants_node_ports && ty != "LoadBalancer" {
                    continue;
                }
                let p = if given != 0 {
                    let Ok(p) = u16::try_from(given) else {
                        errors.push(invalid(
                            &format!("spec.ports[{i}].nodePort"),
                            given.to_string(),
                            "must be between 1 and 65535, inclusive".into(),
                        ));
                        continue;
                    };
                    if old.ports.contains(&p) || mine.contains(&p) {
                        p
                    } else if p < lo || p > hi {
                        errors.push(invalid(
                            &format!("spec.ports[{i}].nodePort"),
                            p.to_string(),
                            format!("provided port is not in the valid range. The range of valid ports is {lo}-{hi}"),
                        ));
                        continue;
                    } else if self
                        .ports
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .contains(&p)
                    {
                        errors.push(invalid(
                            &format!("spec.ports[{i}].nodePort"),
                            p.to_string(),
                            "provided port is already allocated".into(),
                        ));
                        continue;
                    } else {
                        p
                    }
                } else if wants_node_ports {
                    // Reuse what the previous version held for this position, if any.
                    let reuse = old.ports.iter().copied().find(|p| !mine.contains(p));
                    match reuse.or_else(|| self.random_port(&mine)) {
                        Some(p) => p,
                        None => {
                            errors.push(invalid(
                                &format!("spec.ports[{i}].nodePort"),
                                "0".into(),
                                format!("failed to allocate a nodePort: range is full ({lo}-{hi})"),
                            ));
                            continue;
                        }
                    }
                } else {
                    continue;
                };
                port.insert("nodePort".into(), json!(p));
                mine.insert(p);
            }
        }
        let local = spec.get("externalTrafficPolicy").and_then(Value::as_str) == Some("Local");
        if ty == "LoadBalancer" && local {
            let given = spec
                .get("healthCheckNodePort")
                .and_then(Value::as_u64)
                .unwrap_or(0);
            let p = u16::try_from(given).ok().filter(|p| *p != 0);
            let hc = match p {
                Some(p) => Some(p),
                None => old
                    .ports
                    .iter()
                    .copied()
                    .find(|p| !mine.contains(p))
                    .or_else(|| self.random_port(&mine)),
            };
            if let Some(hc) = hc {
                spec.insert("healthCheckNodePort".into(), json!(hc));
                mine.insert(hc);
            }
        } else {
            spec.remove("healthCheckNodePort");
        }
        held.ports = mine.into_iter().collect();
        held.ports.sort_unstable();
        if errors.is_empty() {
            Ok(held)
        } else {
            Err(errors)
        }
    }

    /// The store operations that move the allocation from `old` to `new` for `owner`.
    pub fn ops(&self, owner: &str, old: &Held, new: &Held) -> Vec<store::Op> {
        let mut ops = Vec::new();
        let ip_key = |ip: Ipv4Addr| format!("{IP_PREFIX}{ip}");
        let port_key = |p: u16| format!("{PORT_PREFIX}{p}");
        if old.ip != new.ip {
            if let Some(ip) = old.ip {
                ops.push(store::Op::Delete {
                    key: ip_key(ip),
                    expected: None,
                });
            }
            if let Some(ip) = new.ip {
                ops.push(store::Op::Create {
                    key: ip_key(ip),
                    value: owner.as_bytes().to_vec(),
                });
            }
        }
        for p in old.ports.iter().filter(|p| !new.ports.contains(p)) {
            ops.push(store::Op::Delete {
                key: port_key(*p),
                expected: None,
            });
        }
        for p in new.ports.iter().filter(|p| !old.ports.contains(p)) {
            ops.push(store::Op::Create {
                key: port_key(*p),
                value: owner.as_bytes().to_vec(),
            });
        }
        ops
    }

    /// Records a committed move from `old` to `new` in the in-memory copy.
    pub fn committed(&self, old: &Held, new: &Held) {
        let mut ips = self.ips.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(ip) = old.ip {
            ips.remove(&ip);
        }
        if let Some(ip) = new.ip {
            ips.insert(ip);
        }
        let mut ports = self.ports.lock().unwrap_or_else(|e| e.into_inner());
        for p in &old.ports {
            ports.remove(p);
        }
        ports.extend(new.ports.iter().copied());
    }
}

/// Maps a failed allocation transaction (someone took the value first) to the API error.
pub fn taken_error(key: &str) -> ApiError {
    if let Some(ip) = key.strip_prefix(IP_PREFIX) {
        ApiError::new(
            422,
            "Invalid",
            format!("failed to allocate IP {ip}: provided IP is already allocated"),
        )
    } else if let Some(p) = key.strip_prefix(PORT_PREFIX) {
        ApiError::new(
            422,
            "Invalid",
            format!("spec.ports.nodePort: Invalid value: {p}: provided port is already allocated"),
        )
    } else {
        ApiError::internal(format!("allocation conflict on {key}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alloc() -> Allocator {
        Allocator::new(Cidr::parse("10.96.0.0/12").expect("cidr"), (30000, 32767))
    }

    #[test]
    fn cidr() {
        let c = Cidr::parse("10.96.3.4/12").expect("cidr");
        assert_eq!(c.to_string(), "10.96.0.0/12");
        assert!(c.contains("10.111.255.255".parse().expect("ip")));
        assert!(!c.contains("10.112.0.0".parse().expect("ip")));
        assert!(Cidr::parse("10.0.0.0").is_err());
    }

    #[test]
    fn assigns_and_refuses() {
        let a = alloc();
        let mut svc = json!({"spec": {"type": "NodePort", "ports": [{"port": 80}, {"port": 81, "nodePort": 30080}]}});
        let held = a.assign(&mut svc, &Held::default()).expect("assign");
        assert!(held.ip.is_some_and(|ip| a.service_cidr.contains(ip)));
        assert_eq!(held.ports.len(), 2);
        assert!(held.ports.contains(&30080));
        a.committed(&Held::default(), &held);

        let mut taken =
            json!({"spec": {"type": "NodePort", "ports": [{"port": 80, "nodePort": 30080}]}});
        let errs = a.assign(&mut taken, &Held::default()).expect_err("taken");
        assert_eq!(errs[0].detail, "provided port is already allocated");

        let mut out =
            json!({"spec": {"type": "NodePort", "ports": [{"port": 80, "nodePort": 80}]}});
        let errs = a.assign(&mut out, &Held::default()).expect_err("range");
        assert!(errs[0]
            .detail
            .starts_with("provided port is not in the valid range"));

        let mut ip = json!({"spec": {"clusterIP": held.ip.expect("ip").to_string(), "ports": [{"port": 80}]}});
        let errs = a.assign(&mut ip, &Held::default()).expect_err("ip taken");
        assert!(errs[0].detail.ends_with("provided IP is already allocated"));

        let mut bad = json!({"spec": {"clusterIP": "10.0.0.1", "ports": [{"port": 80}]}});
        let errs = a.assign(&mut bad, &Held::default()).expect_err("ip range");
        assert!(errs[0].detail.contains("is not in the valid range"));

        // The same service keeps what it holds.
        let again = a.assign(&mut svc.clone(), &held).expect("reassign");
        assert_eq!(again, held);
        // Changing to ClusterIP releases node ports.
        let mut cip = svc.clone();
        cip["spec"]["type"] = json!("ClusterIP");
        for p in cip["spec"]["ports"].as_array_mut().expect("ports") {
            p.as_object_mut().expect("port").remove("nodePort");
        }
        let now = a.assign(&mut cip, &held).expect("to clusterip");
        assert!(now.ports.is_empty());
        let ops = a.ops("svc", &held, &now);
        assert_eq!(ops.len(), 2, "two node ports released");
    }
}

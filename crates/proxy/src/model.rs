//! The desired state, computed from Services and EndpointSlices without IO.
//!
//! Every service port becomes elements of a few maps (see the crate documentation for the
//! layout). Endpoints are grouped per service port and traffic scope ("all endpoints" or
//! "this node's endpoints"); each non-empty group gets a 28-bit id, carried in the packet
//! mark between the lookup of the frontend and the DNAT:
//!
//! | bits | meaning |
//! |------|---------|
//! | 0-6 (`0x7f`) | pick class: 1..=64 = exactly that many buckets, 65..=68 = 2^11..2^14 buckets |
//! | 7-9 (`0x380`) | session affinity timeout class (0 = no affinity) |
//! | 10-27 (`0x0ffffc00`) | slot, from a hash of the group (stable across changes) |
//! | 30 (`0x40000000`) | masquerade (set on frontends, not part of the id) |

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::Ipv4Addr;
use std::sync::Arc;

use ipnet::Ipv4Net;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

/// Bits of the mark that identify an endpoint group.
pub const ID_MASK: u32 = 0x0fff_ffff;
/// Bits of the mark that hold the pick class.
pub const CLASS_MASK: u32 = 0x7f;
/// Bits of the mark that hold the affinity timeout class.
pub const AFFINITY_MASK: u32 = 0x380;
/// The mark bit asking for masquerade in postrouting.
pub const MASQ_BIT: u32 = 0x4000_0000;
/// Groups of at most this many endpoints get one bucket per endpoint (exact uniformity).
pub const EXACT_MAX: usize = 64;
/// Power-of-two bucket counts used above [`EXACT_MAX`] endpoints: 2^11..=2^14.
pub const POW_CLASSES: [u32; 4] = [11, 12, 13, 14];
/// Endpoints beyond this many in one group are not used.
pub const MAX_ENDPOINTS: usize = 1 << 14;
/// Distinct session affinity timeouts with their own class; longer ones share the last.
pub const MAX_AFFINITY_CLASSES: usize = 7;
/// Kubernetes' default `sessionAffinityConfig.clientIP.timeoutSeconds`.
pub const DEFAULT_AFFINITY_TIMEOUT: u32 = 10800;

const SLOT_SHIFT: u32 = 10;
const SLOTS: u32 = 1 << 18;

const LABEL_SERVICE_NAME: &str = "kubernetes.io/service-name";
const LABEL_PROXY_NAME: &str = "service.kubernetes.io/service-proxy-name";
const LABEL_HEADLESS: &str = "service.kubernetes.io/headless";

/// The node this proxy runs on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeConfig {
    pub node_name: String,
    pub node_ip: Ipv4Addr,
    /// Pods' addresses; traffic to a ClusterIP from outside it is masqueraded.
    pub cluster_cidr: String,
    /// ClusterIPs; addresses in it that no rule translates are rejected, never routed.
    pub service_cidr: String,
}

/// A transport protocol the proxy handles (SCTP ports are skipped).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Proto {
    Tcp,
    Udp,
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        })
    }
}

/// `address . protocol . port`: a ClusterIP or external IP frontend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IpPort(pub Ipv4Addr, pub Proto, pub u16);

impl fmt::Display for IpPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} . {} . {}", self.0, self.1, self.2)
    }
}

/// `protocol . port`: a NodePort frontend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ProtoPort(pub Proto, pub u16);

impl fmt::Display for ProtoPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} . {}", self.0, self.1)
    }
}

/// A packet mark value: group id, maybe with [`MASQ_BIT`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Mark(pub u32);

impl fmt::Display for Mark {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#010x}", self.0)
    }
}

/// `group id . bucket`: the key of the backends map.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Bucket(pub Mark, pub u32);

impl fmt::Display for Bucket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} . {}", self.0, self.1)
    }
}

/// `address . port` of an endpoint: a DNAT target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Endpoint(pub Ipv4Addr, pub u16);

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} . {}", self.0, self.1)
    }
}

/// `address . address`: a local endpoint reaching itself through a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Hairpin(pub Ipv4Addr);

impl fmt::Display for Hairpin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} . {}", self.0, self.0)
    }
}

/// `frontend . source range`: a client allowed to reach a LoadBalancer IP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SourceRange(pub IpPort, pub Ipv4Net);

impl fmt::Display for SourceRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} . {}", self.0, self.1)
    }
}

/// What happens to traffic for a frontend without endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Verdict {
    /// TCP reset or ICMP port unreachable: the client fails at once.
    Reject,
    /// Dropped: external traffic with externalTrafficPolicy Local and no local endpoint
    /// (as kube-proxy does, so a load balancer's health check moves traffic elsewhere).
    Drop,
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Verdict::Reject => "goto reject_packet",
            Verdict::Drop => "drop",
        })
    }
}

/// The value of a set element (sets have none).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NoValue;

/// One element's value and its comment (the service port it belongs to).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Elem<V> {
    pub value: V,
    pub comment: Arc<str>,
}

/// The elements of one set or map, by key.
pub type Elements<K, V> = BTreeMap<K, Elem<V>>;

/// What decides the chains and rules of the table (everything else is elements).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Shape {
    pub cluster_cidr: Option<Ipv4Net>,
    pub service_cidr: Option<Ipv4Net>,
    /// Timeout (seconds) of affinity class `i + 1`.
    pub affinity_timeouts: Vec<u32>,
}

/// The whole desired table: its shape and the elements of every set and map.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Desired {
    pub shape: Shape,
    /// ClusterIP frontends to their group id (with [`MASQ_BIT`] never set here).
    pub service_ips: Elements<IpPort, Mark>,
    /// LoadBalancer ingress IPs and externalIPs to their group id (masquerade unless eTP Local).
    pub external_ips: Elements<IpPort, Mark>,
    /// NodePorts (on any local address) to their group id.
    pub node_ports: Elements<ProtoPort, Mark>,
    /// Frontends whose group is empty.
    pub no_endpoints: Elements<IpPort, Verdict>,
    pub no_endpoint_node_ports: Elements<ProtoPort, Verdict>,
    /// `group id . bucket` to endpoint.
    pub backends: Elements<Bucket, Endpoint>,
    /// Local endpoint addresses (masqueraded when they reach themselves).
    pub hairpin: Elements<Hairpin, NoValue>,
    /// LoadBalancer frontends with loadBalancerSourceRanges.
    pub lb_restricted: Elements<IpPort, NoValue>,
    pub lb_allowed: Elements<SourceRange, NoValue>,
}

impl Desired {
    /// How many elements the table holds.
    pub fn len(&self) -> usize {
        self.service_ips.len()
            + self.external_ips.len()
            + self.node_ports.len()
            + self.no_endpoints.len()
            + self.no_endpoint_node_ports.len()
            + self.backends.len()
            + self.hairpin.len()
            + self.lb_restricted.len()
            + self.lb_allowed.len()
    }

    /// Whether the table holds no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The bucket count for `n` endpoints and its pick class (the low bits of the id).
pub fn buckets(n: usize) -> (u32, u32) {
    if n <= EXACT_MAX {
        return (n as u32, n as u32);
    }
    let want = (n.min(MAX_ENDPOINTS) * 16)
        .next_power_of_two()
        .trailing_zeros();
    let k = want.clamp(POW_CLASSES[0], POW_CLASSES[POW_CLASSES.len() - 1]);
    (1 << k, EXACT_MAX as u32 + 1 + (k - POW_CLASSES[0]))
}

/// Every pick class with its bucket count (the chains `pick_<buckets>`).
pub fn pick_classes() -> impl Iterator<Item = (u32, u32)> {
    let exact = (1..=EXACT_MAX as u32).map(|n| (n, n));
    let pow = POW_CLASSES
        .iter()
        .enumerate()
        .map(|(i, k)| (EXACT_MAX as u32 + 1 + i as u32, 1u32 << k));
    exact.chain(pow)
}

/// One service port's endpoints for one traffic scope.
struct Group {
    key: String,
    comment: Arc<str>,
    endpoints: Vec<Endpoint>,
    affinity: Option<u32>,
}

/// The desired table for the cluster's Services and EndpointSlices as seen from `node`.
pub fn desired<'a>(
    services: impl IntoIterator<Item = &'a Service>,
    slices: impl IntoIterator<Item = &'a EndpointSlice>,
    node: &NodeConfig,
) -> Desired {
    // Slices by (namespace, service name).
    let mut by_service: BTreeMap<(&str, &str), Vec<&EndpointSlice>> = BTreeMap::new();
    for slice in slices {
        if slice.address_type != "IPv4" {
            continue;
        }
        let ns = slice.metadata.namespace.as_deref().unwrap_or_default();
        let Some(svc) = label(&slice.metadata.labels, LABEL_SERVICE_NAME) else {
            continue;
        };
        by_service.entry((ns, svc)).or_default().push(slice);
    }

    let mut out = Desired {
        shape: Shape {
            cluster_cidr: node.cluster_cidr.parse().ok(),
            service_cidr: node.service_cidr.parse().ok(),
            affinity_timeouts: Vec::new(),
        },
        ..Desired::default()
    };

    // First pass: frontends per group (group ids come after all groups are known).
    let mut groups: BTreeMap<String, Group> = BTreeMap::new();
    enum Front {
        Cluster(IpPort),
        External(IpPort, bool),
        NodePort(ProtoPort, bool),
    }
    let mut fronts: Vec<(Front, String, Arc<str>)> = Vec::new();
    let mut timeouts: BTreeSet<u32> = BTreeSet::new();

    let mut services: Vec<&Service> = services.into_iter().collect();
    services.sort_by(|a, b| {
        (&a.metadata.namespace, &a.metadata.name).cmp(&(&b.metadata.namespace, &b.metadata.name))
    });
    for svc in services {
        let Some(spec) = &svc.spec else { continue };
        let labels = &svc.metadata.labels;
        if label(labels, LABEL_PROXY_NAME).is_some() || label(labels, LABEL_HEADLESS).is_some() {
            continue;
        }
        if spec.type_.as_deref() == Some("ExternalName") {
            continue;
        }
        let cluster_ips: Vec<Ipv4Addr> = match &spec.cluster_ips {
            Some(ips) if !ips.is_empty() => ips.iter().filter_map(|s| s.parse().ok()).collect(),
            _ => spec
                .cluster_ip
                .iter()
                .filter_map(|s| s.parse().ok())
                .collect(),
        };
        if cluster_ips.is_empty() {
            continue; // headless ("None") or not allocated yet
        }
        let ns = svc.metadata.namespace.as_deref().unwrap_or_default();
        let name = svc.metadata.name.as_deref().unwrap_or_default();
        let slices = by_service
            .get(&(ns, name))
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        let itp_local = spec.internal_traffic_policy.as_deref() == Some("Local");
        let etp_local = spec.external_traffic_policy.as_deref() == Some("Local");
        let affinity = (spec.session_affinity.as_deref() == Some("ClientIP")).then(|| {
            spec.session_affinity_config
                .as_ref()
                .and_then(|c| c.client_ip.as_ref())
                .and_then(|c| c.timeout_seconds)
                .and_then(|t| u32::try_from(t).ok())
                .filter(|t| *t > 0)
                .unwrap_or(DEFAULT_AFFINITY_TIMEOUT)
        });
        timeouts.extend(affinity);
        let is_lb = spec.type_.as_deref() == Some("LoadBalancer");
        let mut external: Vec<Ipv4Addr> = spec
            .external_ips
            .iter()
            .flatten()
            .filter_map(|s| s.parse().ok())
            .collect();
        if is_lb {
            let ingress = svc
                .status
                .as_ref()
                .and_then(|s| s.load_balancer.as_ref())
                .and_then(|lb| lb.ingress.as_ref());
            external.extend(
                ingress
                    .into_iter()
                    .flatten()
                    .filter_map(|i| i.ip.as_deref()?.parse::<Ipv4Addr>().ok()),
            );
        }
        let ranges: Vec<Ipv4Net> = if is_lb {
            spec.load_balancer_source_ranges
                .iter()
                .flatten()
                .filter_map(|r| r.trim().parse().ok())
                .collect()
        } else {
            Vec::new()
        };

        for port in spec.ports.iter().flatten() {
            let proto = match port.protocol.as_deref().unwrap_or("TCP") {
                "TCP" => Proto::Tcp,
                "UDP" => Proto::Udp,
                _ => continue,
            };
            let Ok(number) = u16::try_from(port.port) else {
                continue;
            };
            let port_name = port.name.as_deref().unwrap_or_default();
            let base = if port_name.is_empty() {
                format!("{ns}/{name}")
            } else {
                format!("{ns}/{name}:{port_name}")
            };
            let all = endpoints(slices, port_name, proto, None);
            let local = endpoints(slices, port_name, proto, Some(&node.node_name));
            let mut group = |is_local: bool| -> String {
                let key = if is_local {
                    format!("{base} (local)")
                } else {
                    base.clone()
                };
                groups.entry(key.clone()).or_insert_with(|| Group {
                    comment: key.as_str().into(),
                    key: key.clone(),
                    endpoints: if is_local { local.clone() } else { all.clone() },
                    affinity,
                });
                key
            };
            for e in &local {
                let elem = Elem {
                    value: NoValue,
                    comment: Arc::from("local endpoint"),
                };
                out.hairpin.insert(Hairpin(e.0), elem);
            }
            let comment: Arc<str> = base.as_str().into();
            let cluster_group = group(itp_local);
            for ip in &cluster_ips {
                let front = Front::Cluster(IpPort(*ip, proto, number));
                fronts.push((front, cluster_group.clone(), comment.clone()));
            }
            let node_port = port.node_port.and_then(|p| u16::try_from(p).ok());
            if external.is_empty() && node_port.is_none() {
                continue;
            }
            let external_group = group(etp_local);
            for ip in &external {
                let key = IpPort(*ip, proto, number);
                fronts.push((
                    Front::External(key, !etp_local),
                    external_group.clone(),
                    comment.clone(),
                ));
                if !ranges.is_empty() {
                    let elem = Elem {
                        value: NoValue,
                        comment: comment.clone(),
                    };
                    out.lb_restricted.insert(key, elem.clone());
                    for r in &ranges {
                        out.lb_allowed.insert(SourceRange(key, *r), elem.clone());
                    }
                }
            }
            if let Some(p) = node_port {
                fronts.push((
                    Front::NodePort(ProtoPort(proto, p), !etp_local),
                    external_group,
                    comment.clone(),
                ));
            }
        }
    }

    // Affinity timeout classes.
    out.shape.affinity_timeouts = timeouts
        .iter()
        .copied()
        .take(MAX_AFFINITY_CLASSES)
        .collect();
    let affinity_class = |t: u32| -> u32 {
        let classes = &out.shape.affinity_timeouts;
        let i = classes
            .iter()
            .position(|c| *c == t)
            .unwrap_or(classes.len() - 1);
        i as u32 + 1
    };

    // Group ids: a hashed slot, probing in key order so ids stay put as groups come and go.
    let mut used = vec![false; SLOTS as usize];
    let mut ids: BTreeMap<String, Mark> = BTreeMap::new();
    for g in groups.values() {
        if g.endpoints.is_empty() {
            continue;
        }
        let mut h = fnv1a(g.key.as_bytes());
        if g.affinity.is_some() {
            // A new endpoint set gets a new id, so no client sticks to a removed endpoint.
            for e in &g.endpoints {
                h = fnv1a_more(h, e.to_string().as_bytes());
            }
        }
        let mut slot = (h % SLOTS as u64) as u32;
        while used[slot as usize] {
            slot = (slot + 1) % SLOTS;
        }
        used[slot as usize] = true;
        let (n_buckets, class) = buckets(g.endpoints.len());
        let aff = g.affinity.map(affinity_class).unwrap_or(0);
        let id = Mark(slot << SLOT_SHIFT | aff << 7 | class);
        ids.insert(g.key.clone(), id);
        let eps = &g.endpoints[..g.endpoints.len().min(MAX_ENDPOINTS)];
        for b in 0..n_buckets {
            let ep = eps[b as usize % eps.len()];
            let elem = Elem {
                value: ep,
                comment: g.comment.clone(),
            };
            out.backends.insert(Bucket(id, b), elem);
        }
    }

    for (front, group, comment) in fronts {
        let id = ids.get(&group).copied();
        match front {
            Front::Cluster(k) => match id {
                Some(id) => {
                    out.service_ips.insert(k, Elem { value: id, comment });
                }
                None => {
                    let value = Verdict::Reject;
                    out.no_endpoints.insert(k, Elem { value, comment });
                }
            },
            Front::External(k, masq) => match id {
                Some(id) => {
                    let value = Mark(id.0 | if masq { MASQ_BIT } else { 0 });
                    out.external_ips.insert(k, Elem { value, comment });
                }
                None => {
                    let value = if masq { Verdict::Reject } else { Verdict::Drop };
                    out.no_endpoints.insert(k, Elem { value, comment });
                }
            },
            Front::NodePort(k, masq) => match id {
                Some(id) => {
                    let value = Mark(id.0 | if masq { MASQ_BIT } else { 0 });
                    out.node_ports.insert(k, Elem { value, comment });
                }
                None => {
                    let value = if masq { Verdict::Reject } else { Verdict::Drop };
                    out.no_endpoint_node_ports
                        .insert(k, Elem { value, comment });
                }
            },
        }
    }
    out
}

fn label<'a>(labels: &'a Option<BTreeMap<String, String>>, key: &str) -> Option<&'a str> {
    labels.as_ref()?.get(key).map(String::as_str)
}

/// The usable endpoints of a service port, sorted, optionally only those of one node.
/// Ready endpoints; when there are none, serving and terminating ones (as Kubernetes does).
fn endpoints(
    slices: &[&EndpointSlice],
    port_name: &str,
    proto: Proto,
    node: Option<&str>,
) -> Vec<Endpoint> {
    let mut ready = BTreeSet::new();
    let mut terminating = BTreeSet::new();
    for slice in slices {
        let port = slice.ports.iter().flatten().find(|p| {
            p.name.as_deref().unwrap_or_default() == port_name
                && match p.protocol.as_deref().unwrap_or("TCP") {
                    "TCP" => proto == Proto::Tcp,
                    "UDP" => proto == Proto::Udp,
                    _ => false,
                }
        });
        let Some(number) = port
            .and_then(|p| p.port)
            .and_then(|p| u16::try_from(p).ok())
        else {
            continue;
        };
        for ep in &slice.endpoints {
            if node.is_some() && ep.node_name.as_deref() != node {
                continue;
            }
            let Some(addr) = ep.addresses.first().and_then(|a| a.parse().ok()) else {
                continue;
            };
            let c = ep.conditions.as_ref();
            let ready_c = c.and_then(|c| c.ready).unwrap_or(true);
            let serving = c.and_then(|c| c.serving).unwrap_or(ready_c);
            let term = c.and_then(|c| c.terminating).unwrap_or(false);
            if ready_c {
                ready.insert(Endpoint(addr, number));
            } else if serving && term {
                terminating.insert(Endpoint(addr, number));
            }
        }
    }
    if ready.is_empty() {
        terminating.into_iter().collect()
    } else {
        ready.into_iter().collect()
    }
}

fn fnv1a(bytes: &[u8]) -> u64 {
    fnv1a_more(0xcbf2_9ce4_8422_2325, bytes)
}

fn fnv1a_more(mut h: u64, bytes: &[u8]) -> u64 {
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

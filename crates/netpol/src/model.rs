//! The desired table (pure): NetworkPolicies, Pods and Namespaces → the sets, their
//! elements and the per-policy chains one node needs for the pods it runs.
//!
//! Each node enforces for its own pods only: egress of traffic its pods send, ingress of
//! traffic to them. A policy is on a node's table only when it selects a pod of that node;
//! its peers (pods anywhere, ipBlocks) are set elements.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write;
use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::networking::v1::{NetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use api::selectors::labels_match as selector_matches;

use crate::ranges::{normalize, subtract, IpRange};

/// Set of the node's pods isolated for ingress (element comment: the policies).
pub const INGRESS_ISOLATED: &str = "ingress_isolated";
/// Set of the node's pods isolated for egress.
pub const EGRESS_ISOLATED: &str = "egress_isolated";
/// Pairs (pod . pod) of each node pod with itself: a pod reaching itself through a
/// Service is always allowed.
pub const SELF: &str = "self";
/// The dispatch chains: a jump per policy, then the refusal.
pub const INGRESS: &str = "ingress";
pub const EGRESS: &str = "egress";

/// A transport protocol of a NetworkPolicy port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Proto {
    Tcp,
    Udp,
    Sctp,
}

impl Proto {
    /// Kubernetes' name (`TCP`, `UDP`, `SCTP`); `None` for anything else.
    pub fn parse(s: &str) -> Option<Proto> {
        match s {
            "TCP" => Some(Proto::Tcp),
            "UDP" => Some(Proto::Udp),
            "SCTP" => Some(Proto::Sctp),
            _ => None,
        }
    }

    /// nft's name.
    pub fn nft(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
            Proto::Sctp => "sctp",
        }
    }
}

/// The kind of a set, which fixes its type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetKind {
    /// `ipv4_addr`, interval: pods, peers.
    Addr,
    /// `ipv4_addr . inet_proto . inet_service`, interval: a rule's allowed destinations
    /// with their ports.
    AddrPort,
    /// `ipv4_addr . ipv4_addr`: the self pairs.
    Pair,
}

/// An element of a set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Elem {
    Addr(IpRange),
    AddrPort(IpRange, Proto, u16, u16),
    Pair(Ipv4Addr, Ipv4Addr),
}

impl std::fmt::Display for Elem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Elem::Addr(r) => write!(f, "{r}"),
            Elem::AddrPort(r, p, lo, hi) if lo == hi => write!(f, "{r} . {} . {lo}", p.nft()),
            Elem::AddrPort(r, p, lo, hi) => write!(f, "{r} . {} . {lo}-{hi}", p.nft()),
            Elem::Pair(a, b) => write!(f, "{a} . {b}"),
        }
    }
}

/// A set: its kind and its elements, each with a comment (empty for none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Set {
    pub kind: SetKind,
    pub elems: BTreeMap<Elem, String>,
}

impl Set {
    fn new(kind: SetKind) -> Set {
        Set {
            kind,
            elems: BTreeMap::new(),
        }
    }

    /// A set of disjoint address ranges (nft refuses overlapping intervals).
    fn addrs(ranges: Vec<IpRange>) -> Set {
        let mut s = Set::new(SetKind::Addr);
        for r in normalize(ranges) {
            s.elems.insert(Elem::Addr(r), String::new());
        }
        s
    }
}

/// Everything of the table that changes: sets with their elements, the per-policy chains
/// with their rules, and the jump lists of the dispatch chains ([`INGRESS`], [`EGRESS`]).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Desired {
    pub sets: BTreeMap<String, Set>,
    /// Per-policy chains: rules as nft text (without `add rule TABLE CHAIN`).
    pub chains: BTreeMap<String, Vec<String>>,
    /// The policy chains [`INGRESS`] jumps to, in order.
    pub ingress_jumps: Vec<String>,
    /// The policy chains [`EGRESS`] jumps to, in order.
    pub egress_jumps: Vec<String>,
}

impl Desired {
    /// The number of elements in all sets.
    pub fn len(&self) -> usize {
        self.sets.values().map(|s| s.elems.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A pod as policies see it: only pods with an IPv4 pod IP of their own (not hostNetwork,
/// not finished).
#[derive(Debug)]
struct PodView<'a> {
    ns: &'a str,
    name: &'a str,
    ip: Ipv4Addr,
    labels: &'a BTreeMap<String, String>,
    local: bool,
    /// Named container ports: (name, protocol) → port.
    ports: HashMap<(&'a str, Proto), u16>,
}

static NO_LABELS: BTreeMap<String, String> = BTreeMap::new();

fn pod_view<'a>(p: &'a Pod, node: &str) -> Option<PodView<'a>> {
    let spec = p.spec.as_ref()?;
    let status = p.status.as_ref()?;
    if spec.host_network == Some(true) {
        return None;
    }
    if matches!(status.phase.as_deref(), Some("Succeeded" | "Failed")) {
        return None;
    }
    let ip: Ipv4Addr = status.pod_ip.as_deref()?.parse().ok()?;
    let mut ports = HashMap::new();
    for c in &spec.containers {
        for port in c.ports.iter().flatten() {
            let (Some(name), Ok(num)) = (port.name.as_deref(), u16::try_from(port.container_port))
            else {
                continue;
            };
            let proto = Proto::parse(port.protocol.as_deref().unwrap_or("TCP"));
            if let Some(proto) = proto {
                ports.entry((name, proto)).or_insert(num);
            }
        }
    }
    Some(PodView {
        ns: p.metadata.namespace.as_deref()?,
        name: p.metadata.name.as_deref()?,
        ip,
        labels: p.metadata.labels.as_ref().unwrap_or(&NO_LABELS),
        local: spec.node_name.as_deref() == Some(node),
        ports,
    })
}

/// The longest name nft keeps is 255 bytes; names are cut (with a hash of the whole)
/// well before that so set suffixes fit.
const NAME_MAX: usize = 200;

/// FNV-1a: a hash that is the same in every run and process (names must be).
fn fnv64(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// `DIR/NS/NAME`, shortened with a hash when long.
fn base_name(dir: &str, ns: &str, name: &str) -> String {
    let full = format!("{dir}/{ns}/{name}");
    if full.len() <= NAME_MAX {
        return full;
    }
    let h = fnv64(&full);
    let mut cut = NAME_MAX - 17;
    while !full.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}~{h:016x}", &full[..cut])
}

/// nft keeps comments up to 128 bytes.
fn comment(text: &str) -> String {
    let clean: String = text.chars().filter(|c| *c != '"' && *c != '\\').collect();
    if clean.len() <= 120 {
        return clean;
    }
    let mut cut = 116;
    while !clean.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}...", &clean[..cut])
}

/// A resolved port of a rule: protocol and a range, or a name to resolve per pod.
#[derive(Clone, Copy)]
enum PortSpec<'a> {
    Range(Proto, u16, u16),
    Named(Proto, &'a str),
}

fn port_specs(ports: &[NetworkPolicyPort]) -> Vec<PortSpec<'_>> {
    ports
        .iter()
        .filter_map(|p| {
            let proto = Proto::parse(p.protocol.as_deref().unwrap_or("TCP"))?;
            Some(match &p.port {
                None => PortSpec::Range(proto, 0, u16::MAX),
                Some(IntOrString::Int(n)) => {
                    let lo = u16::try_from(*n).ok()?;
                    let hi = match p.end_port {
                        Some(e) => u16::try_from(e).ok()?.max(lo),
                        None => lo,
                    };
                    PortSpec::Range(proto, lo, hi)
                }
                Some(IntOrString::String(name)) => PortSpec::Named(proto, name.as_str()),
            })
        })
        .collect()
}

/// The elements (address . proto . ports) of `specs` on `pod`: named ports resolved in
/// that pod.
fn pod_ports(pod: &PodView<'_>, specs: &[PortSpec<'_>], out: &mut BTreeSet<Elem>) {
    let r = IpRange::one(pod.ip);
    for s in specs {
        match *s {
            PortSpec::Range(p, lo, hi) => {
                out.insert(Elem::AddrPort(r, p, lo, hi));
            }
            PortSpec::Named(p, name) => {
                if let Some(&n) = pod.ports.get(&(name, p)) {
                    out.insert(Elem::AddrPort(r, p, n, n));
                }
            }
        }
    }
}

/// What a rule's peers match: `None` for every address (no peers listed), else pods and
/// address ranges.
struct Peers<'p, 'a> {
    pods: Vec<&'p PodView<'a>>,
    blocks: Vec<IpRange>,
}

struct World<'a> {
    pods: Vec<PodView<'a>>,
    /// Pod indexes by namespace.
    by_ns: BTreeMap<&'a str, Vec<usize>>,
    ns_labels: HashMap<&'a str, &'a BTreeMap<String, String>>,
}

impl<'a> World<'a> {
    fn ns_labels(&self, ns: &str) -> &BTreeMap<String, String> {
        self.ns_labels.get(ns).copied().unwrap_or(&NO_LABELS)
    }

    fn pods_in(&self, ns: &str) -> impl Iterator<Item = &PodView<'a>> {
        self.by_ns
            .get(ns)
            .into_iter()
            .flatten()
            .map(|&i| &self.pods[i])
    }

    fn peers(&self, policy_ns: &str, peers: &[NetworkPolicyPeer]) -> Option<Peers<'_, 'a>> {
        if peers.is_empty() {
            return None;
        }
        let mut out = Peers {
            pods: Vec::new(),
            blocks: Vec::new(),
        };
        for peer in peers {
            if let Some(b) = &peer.ip_block {
                if let Some(cidr) = IpRange::cidr(&b.cidr) {
                    let holes: Vec<IpRange> = b
                        .except
                        .iter()
                        .flatten()
                        .filter_map(|e| IpRange::cidr(e))
                        .collect();
                    out.blocks.extend(subtract(cidr, &holes));
                }
                continue;
            }
            // A pod two peers match is listed twice: the sets built from these dedupe.
            let namespaces: Vec<&Vec<usize>> = match &peer.namespace_selector {
                None => self.by_ns.get(policy_ns).into_iter().collect(),
                Some(sel) => self
                    .by_ns
                    .iter()
                    .filter(|(ns, _)| selector_matches(sel, self.ns_labels(ns)))
                    .map(|(_, idx)| idx)
                    .collect(),
            };
            let pod_sel = peer.pod_selector.as_ref();
            for &i in namespaces.into_iter().flatten() {
                let p = &self.pods[i];
                if pod_sel.is_none_or(|s| selector_matches(s, p.labels)) {
                    out.pods.push(p);
                }
            }
        }
        Some(out)
    }
}

/// The table a node needs: `policies`, `pods` and `namespaces` of the whole cluster, the
/// node's own name.
pub fn desired<'a>(
    policies: impl IntoIterator<Item = &'a NetworkPolicy>,
    pods: impl IntoIterator<Item = &'a Pod>,
    namespaces: impl IntoIterator<Item = &'a Namespace>,
    node: &str,
) -> Desired {
    let mut world = World {
        pods: pods.into_iter().filter_map(|p| pod_view(p, node)).collect(),
        by_ns: BTreeMap::new(),
        ns_labels: HashMap::new(),
    };
    // Two pods may briefly hold one address (a deleted pod's IP reused): the newer view
    // wins nothing, both match; order is by namespace and name for stable output.
    world
        .pods
        .sort_by(|a, b| (a.ns, a.name).cmp(&(b.ns, b.name)));
    for (i, p) in world.pods.iter().enumerate() {
        world.by_ns.entry(p.ns).or_default().push(i);
    }
    for n in namespaces {
        if let (Some(name), Some(labels)) = (n.metadata.name.as_deref(), n.metadata.labels.as_ref())
        {
            world.ns_labels.insert(name, labels);
        }
    }

    let mut d = Desired::default();
    let mut ingress_iso = Isolated::new();
    let mut egress_iso = Isolated::new();
    let mut self_pairs = Set::new(SetKind::Pair);
    for p in world.pods.iter().filter(|p| p.local) {
        self_pairs
            .elems
            .insert(Elem::Pair(p.ip, p.ip), String::new());
    }

    let mut policies: Vec<&NetworkPolicy> = policies.into_iter().collect();
    policies.sort_by(|a, b| {
        (&a.metadata.namespace, &a.metadata.name).cmp(&(&b.metadata.namespace, &b.metadata.name))
    });
    for pol in policies {
        let (Some(ns), Some(name), Some(spec)) = (
            pol.metadata.namespace.as_deref(),
            pol.metadata.name.as_deref(),
            pol.spec.as_ref(),
        ) else {
            continue;
        };
        let selected: Vec<&PodView<'_>> = world
            .pods_in(ns)
            .filter(|p| {
                p.local
                    && spec
                        .pod_selector
                        .as_ref()
                        .is_none_or(|s| selector_matches(s, p.labels))
            })
            .collect();
        if selected.is_empty() {
            continue;
        }
        let types: Vec<&str> = match spec.policy_types.as_deref() {
            Some(t) if !t.is_empty() => t.iter().map(String::as_str).collect(),
            _ if spec.egress.as_ref().is_some_and(|e| !e.is_empty()) => vec!["Ingress", "Egress"],
            _ => vec!["Ingress"],
        };
        let label = format!("{ns}/{name}");
        let local_ips: Vec<IpRange> = selected.iter().map(|p| IpRange::one(p.ip)).collect();

        if types.contains(&"Ingress") {
            isolate(&mut ingress_iso, &selected, &label);
            let base = base_name("ingress", ns, name);
            let pods_set = format!("{base}/pods");
            d.sets
                .insert(pods_set.clone(), Set::addrs(local_ips.clone()));
            let mut lines = Vec::new();
            for (i, rule) in spec.ingress.iter().flatten().enumerate() {
                let peers = rule.from.as_deref().unwrap_or_default();
                let mut line = String::new();
                if !peers.is_empty() {
                    let set = intern(&mut d, "peers", &peer_key(ns, peers, None), || {
                        peer_addrs(&world, ns, peers)
                    });
                    let _ = write!(line, "ip saddr @{set} ");
                }
                let specs = port_specs(rule.ports.as_deref().unwrap_or_default());
                if rule.ports.as_ref().is_none_or(Vec::is_empty) {
                    let _ = write!(line, "ip daddr @{pods_set} ");
                } else {
                    let mut elems = BTreeSet::new();
                    for p in &selected {
                        pod_ports(p, &specs, &mut elems);
                    }
                    let set = format!("{base}/{i}/ports");
                    d.sets.insert(set.clone(), port_set(elems));
                    let _ = write!(line, "ip daddr . meta l4proto . th dport @{set} ");
                }
                let _ = write!(
                    line,
                    "counter accept comment \"{}\"",
                    comment(&format!("{label} ingress[{i}]"))
                );
                lines.push(line);
            }
            d.chains.insert(base.clone(), lines);
            d.ingress_jumps.push(base);
        }

        if types.contains(&"Egress") {
            isolate(&mut egress_iso, &selected, &label);
            let base = base_name("egress", ns, name);
            let pods_set = format!("{base}/pods");
            d.sets.insert(pods_set.clone(), Set::addrs(local_ips));
            let mut lines = Vec::new();
            for (i, rule) in spec.egress.iter().flatten().enumerate() {
                let peers = rule.to.as_deref().unwrap_or_default();
                let mut line = format!("ip saddr @{pods_set} ");
                let ports = rule.ports.as_deref().unwrap_or_default();
                if ports.is_empty() {
                    if !peers.is_empty() {
                        let set = intern(&mut d, "peers", &peer_key(ns, peers, None), || {
                            peer_addrs(&world, ns, peers)
                        });
                        let _ = write!(line, "ip daddr @{set} ");
                    }
                } else {
                    let set = intern(
                        &mut d,
                        "peer-ports",
                        &peer_key(ns, peers, Some(ports)),
                        || peer_ports(&world, ns, peers, ports),
                    );
                    let _ = write!(line, "ip daddr . meta l4proto . th dport @{set} ");
                }
                let _ = write!(
                    line,
                    "counter goto ingress_check comment \"{}\"",
                    comment(&format!("{label} egress[{i}]"))
                );
                lines.push(line);
            }
            d.chains.insert(base.clone(), lines);
            d.egress_jumps.push(base);
        }
    }
    finish(d, ingress_iso, egress_iso, self_pairs)
}

/// The node's pods a policy isolates, each with the policies that isolate it.
type Isolated = BTreeMap<Ipv4Addr, (String, Vec<String>)>;

/// Records that `policy` isolates the `selected` pods.
fn isolate(iso: &mut Isolated, selected: &[&PodView<'_>], policy: &str) {
    for p in selected {
        iso.entry(p.ip)
            .or_insert_with(|| (format!("{}/{}", p.ns, p.name), Vec::new()))
            .1
            .push(policy.to_string());
    }
}

/// The addresses of a rule's peers, as disjoint ranges.
fn peer_addrs(world: &World<'_>, ns: &str, peers: &[NetworkPolicyPeer]) -> Set {
    let mut ranges = Vec::new();
    if let Some(p) = world.peers(ns, peers) {
        ranges = p.blocks;
        ranges.extend(p.pods.iter().map(|p| IpRange::one(p.ip)));
    }
    Set::addrs(ranges)
}

/// An egress rule's destinations with their ports (named ports resolved per pod).
fn peer_ports(
    world: &World<'_>,
    ns: &str,
    peers: &[NetworkPolicyPeer],
    ports: &[NetworkPolicyPort],
) -> Set {
    let specs = port_specs(ports);
    {
        let mut elems = BTreeSet::new();
        let to = world.peers(ns, peers);
        match to {
            Some(to) => {
                for p in &to.pods {
                    pod_ports(p, &specs, &mut elems);
                }
                block_ports(&to.blocks, &specs, &mut elems);
            }
            None => {
                // Every destination: numbered ports anywhere, named ports on
                // the pods that have them.
                block_ports(&[IpRange::ALL], &specs, &mut elems);
                let named: Vec<PortSpec<'_>> = specs
                    .iter()
                    .copied()
                    .filter(|s| matches!(s, PortSpec::Named(..)))
                    .collect();
                if !named.is_empty() {
                    for p in &world.pods {
                        pod_ports(p, &named, &mut elems);
                    }
                }
            }
        }
        port_set(elems)
    }
}

/// The set named after `key` (a hash of it under `prefix`), made by `make` only the first
/// time: rules with the same peers (and ports) share one set, so a pod or label change
/// updates it once, however many policies name it.
fn intern(d: &mut Desired, prefix: &str, key: &str, make: impl FnOnce() -> Set) -> String {
    let name = format!("{prefix}/{:016x}", fnv64(key));
    if !d.sets.contains_key(&name) {
        d.sets.insert(name.clone(), make());
    }
    name
}

/// What a rule's peers (and ports) mean: the policy's namespace (peers without a
/// namespaceSelector are in it) and the peers and ports as JSON.
fn peer_key(ns: &str, peers: &[NetworkPolicyPeer], ports: Option<&[NetworkPolicyPort]>) -> String {
    let text = serde_json::to_string(peers).unwrap_or_default();
    let ports = ports
        .map(|p| serde_json::to_string(p).unwrap_or_default())
        .unwrap_or_default();
    // Only peers without a namespaceSelector (nor ipBlock) depend on the namespace.
    let in_ns = peers.is_empty()
        || peers
            .iter()
            .any(|p| p.namespace_selector.is_none() && p.ip_block.is_none());
    let ns = if in_ns { ns } else { "" };
    format!("{ns}\n{text}\n{ports}")
}

fn finish(mut d: Desired, ingress_iso: Isolated, egress_iso: Isolated, self_pairs: Set) -> Desired {
    for (name, iso) in [
        (INGRESS_ISOLATED, ingress_iso),
        (EGRESS_ISOLATED, egress_iso),
    ] {
        let mut s = Set::new(SetKind::Addr);
        for (ip, (pod, pols)) in iso {
            let text = comment(&format!("{pod}: {}", pols.join(", ")));
            s.elems.insert(Elem::Addr(IpRange::one(ip)), text);
        }
        d.sets.insert(name.into(), s);
    }
    d.sets.insert(SELF.into(), self_pairs);
    d
}

/// Numbered ports on address ranges (named ports do not apply to addresses).
fn block_ports(blocks: &[IpRange], specs: &[PortSpec<'_>], out: &mut BTreeSet<Elem>) {
    for r in blocks {
        for s in specs {
            if let PortSpec::Range(p, lo, hi) = *s {
                out.insert(Elem::AddrPort(*r, p, lo, hi));
            }
        }
    }
}

fn port_set(elems: BTreeSet<Elem>) -> Set {
    Set {
        kind: SetKind::AddrPort,
        elems: elems.into_iter().map(|e| (e, String::new())).collect(),
    }
}

//! The cluster record index: Services, EndpointSlices and Pods turned into DNS records
//! (the Kubernetes DNS specification), kept up to date one object at a time.
//!
//! No IO. The watchers in `watch` feed it; `answer` reads it.
//!
//! Shape: every service *contributes* a list of `(name, records)` to a hash map keyed by the
//! lower-cased name. A name's slot concatenates the contributions of all its owners (usually
//! one; a PTR name or a namespace's empty non-terminal can have several) into a prebuilt
//! [`Node`] behind an `Arc`, so a lookup is one hash-map hit that clones an `Arc`.
//!
//! Cost: a lookup is O(1) in the number of services. Applying a Service or an EndpointSlice
//! rebuilds only that service's names: O(its ports × ready endpoints), plus O(other owners of
//! the same names), which is O(1) except for shared PTR names. A namespace's empty
//! non-terminal is reference-counted, not concatenated. Changing the configuration (zone,
//! TTL, options) rebuilds everything: O(all services + endpoints). Memory is O(records).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use hickory_proto::rr::rdata::{self, A, AAAA, SOA, SRV, TXT};
use hickory_proto::rr::{LowerName, Name, RData, Record, RecordType};
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;

/// The label an EndpointSlice names its Service with.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// The value of `dns-version.<zone>` (Kubernetes DNS specification version).
pub const SCHEMA_VERSION: &str = "1.1.0";

/// What the index is built for: the kubernetes plugin's options that shape records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexConfig {
    /// All zones of the kubernetes plugin, lower case with a trailing dot (forward and reverse).
    pub zones: Vec<String>,
    /// TTL of every record (and of the SOA's minimum).
    pub ttl: u32,
    /// Name endpoints without a hostname after their pod (targetRef) instead of their IP.
    pub endpoint_pod_names: bool,
    /// Only these namespaces are exposed (all when empty).
    pub namespaces: Vec<String>,
    /// No endpoint names (`<host>.<svc>.<ns>.svc.<zone>`).
    pub noendpoints: bool,
    /// A ClusterIP service without ready endpoints is NXDOMAIN.
    pub ignore_empty_service: bool,
}

impl Default for IndexConfig {
    fn default() -> Self {
        Self {
            zones: vec![
                "cluster.local.".into(),
                "in-addr.arpa.".into(),
                "ip6.arpa.".into(),
            ],
            ttl: 5,
            endpoint_pod_names: false,
            namespaces: Vec::new(),
            noendpoints: false,
            ignore_empty_service: false,
        }
    }
}

impl IndexConfig {
    /// Zones that hold service names (not the reverse zones).
    pub fn forward_zones(&self) -> impl Iterator<Item = &str> {
        self.zones
            .iter()
            .map(String::as_str)
            .filter(|z| !is_reverse_zone(z))
    }

    fn exposes(&self, namespace: &str) -> bool {
        self.namespaces.is_empty() || self.namespaces.iter().any(|n| n == namespace)
    }
}

/// Whether `zone` is (under) in-addr.arpa. or ip6.arpa.
pub fn is_reverse_zone(zone: &str) -> bool {
    zone == "in-addr.arpa."
        || zone == "ip6.arpa."
        || zone.ends_with(".in-addr.arpa.")
        || zone.ends_with(".ip6.arpa.")
}

/// The records of one name, grouped by type, ready to be sent.
#[derive(Debug, Default)]
pub struct Node {
    rrsets: Vec<(RecordType, Arc<[Record]>)>,
}

impl Node {
    /// The records of type `rtype` (CNAME is returned by `answer` for every type).
    pub fn get(&self, rtype: RecordType) -> Option<&Arc<[Record]>> {
        self.rrsets
            .iter()
            .find(|(t, _)| *t == rtype)
            .map(|(_, r)| r)
    }

    /// Every record of the name.
    pub fn all(&self) -> impl Iterator<Item = &Record> {
        self.rrsets.iter().flat_map(|(_, r)| r.iter())
    }

    /// Groups the records of all parts by type, without duplicates: O(records).
    fn build(parts: &[(Owner, Vec<Record>)]) -> Self {
        let mut seen: HashSet<(&Name, &RData)> = HashSet::new();
        let mut rrsets: Vec<(RecordType, Vec<Record>)> = Vec::new();
        for record in parts.iter().flat_map(|(_, r)| r) {
            if !seen.insert((&record.name, &record.data)) {
                continue;
            }
            let rtype = record.record_type();
            match rrsets.iter_mut().find(|(t, _)| *t == rtype) {
                Some((_, v)) => v.push(record.clone()),
                None => rrsets.push((rtype, vec![record.clone()])),
            }
        }
        Self {
            rrsets: rrsets.into_iter().map(|(t, v)| (t, Arc::from(v))).collect(),
        }
    }
}

/// Who contributed records to a name: a service (`ns/name`) or the zone itself (`""`).
type Owner = Arc<str>;
type Key = (String, String);
/// A named port: name, protocol (lower case), number.
type NamedPort = (String, String, u16);

#[derive(Debug, Default)]
struct Slot {
    /// Non-empty contributions.
    parts: Vec<(Owner, Vec<Record>)>,
    /// Number of owners, including those that only make the name exist.
    refs: u32,
    node: Arc<Node>,
}

#[derive(Debug, Clone)]
enum ServiceKind {
    /// ClusterIPs (empty while none is allocated) and ports `(name, protocol, port)`.
    ClusterIp(Vec<IpAddr>),
    Headless,
    ExternalName(String),
}

#[derive(Debug, Clone)]
struct ServiceInfo {
    kind: ServiceKind,
    ports: Vec<(String, String, u16)>,
}

#[derive(Debug, Clone)]
struct SliceEndpoint {
    ips: Vec<IpAddr>,
    hostname: Option<String>,
    pod_name: Option<String>,
}

#[derive(Debug, Clone)]
struct SliceInfo {
    service: String,
    /// Ready endpoints only.
    endpoints: Vec<SliceEndpoint>,
    /// Named ports `(name, protocol, port)`.
    ports: Vec<(String, String, u16)>,
}

/// The index. See the module documentation for its shape and costs.
#[derive(Debug)]
pub struct Index {
    config: IndexConfig,
    services: HashMap<Key, ServiceInfo>,
    slices: HashMap<Key, SliceInfo>,
    slices_by_service: HashMap<Key, BTreeSet<String>>,
    /// Pod IPs per pod (for `pods verified`), and how many pods hold `(namespace, ip)`.
    pods: HashMap<Key, Vec<IpAddr>>,
    pod_ips: HashMap<(String, IpAddr), u32>,
    names: HashMap<LowerName, Slot>,
    contributed: HashMap<Key, Vec<LowerName>>,
    /// SOA of each zone of the configuration, as an authority section.
    soas: Vec<(LowerName, Arc<[Record]>)>,
    serial: u32,
}

impl Default for Index {
    fn default() -> Self {
        Self::new(IndexConfig::default())
    }
}

impl Index {
    /// An empty index for `config`.
    pub fn new(config: IndexConfig) -> Self {
        let mut index = Self {
            config,
            services: HashMap::new(),
            slices: HashMap::new(),
            slices_by_service: HashMap::new(),
            pods: HashMap::new(),
            pod_ips: HashMap::new(),
            names: HashMap::new(),
            contributed: HashMap::new(),
            soas: Vec::new(),
            serial: now_serial(),
        };
        index.rebuild_all();
        index
    }

    /// The configuration the records are built for.
    pub fn config(&self) -> &IndexConfig {
        &self.config
    }

    /// Switches to another configuration; rebuilds every name when it differs.
    pub fn set_config(&mut self, config: IndexConfig) {
        if config != self.config {
            self.config = config;
            self.rebuild_all();
        }
    }

    /// Number of distinct names held (for tests and metrics).
    pub fn name_count(&self) -> usize {
        self.names.len()
    }

    /// The prebuilt records of a lower-cased name.
    pub fn lookup(&self, name: &LowerName) -> Option<&Arc<Node>> {
        self.names.get(name).map(|s| &s.node)
    }

    /// The SOA (as an authority section) of the configured zone `zone` is in, longest match.
    pub fn soa_for(&self, name: &LowerName) -> Option<(&LowerName, &Arc<[Record]>)> {
        self.soas
            .iter()
            .filter(|(z, _)| z.zone_of(name))
            .max_by_key(|(z, _)| z.num_labels())
            .map(|(z, s)| (z, s))
    }

    /// Whether a pod with `ip` exists in `namespace` (`pods verified`).
    pub fn pod_exists(&self, namespace: &str, ip: IpAddr) -> bool {
        self.pod_ips.contains_key(&(namespace.to_string(), ip))
    }

    /// Whether `namespace` is exposed by the `namespaces` option.
    pub fn exposes(&self, namespace: &str) -> bool {
        self.config.exposes(namespace)
    }

    /// Adds or replaces a Service.
    pub fn apply_service(&mut self, service: &Service) {
        let (Some(ns), Some(name)) = (&service.metadata.namespace, &service.metadata.name) else {
            return;
        };
        let key = (ns.clone(), name.clone());
        self.services.insert(key.clone(), service_info(service));
        self.rebuild(&key);
    }

    /// Removes a Service.
    pub fn delete_service(&mut self, namespace: &str, name: &str) {
        let key = (namespace.to_string(), name.to_string());
        if self.services.remove(&key).is_some() {
            self.rebuild(&key);
        }
    }

    /// Adds or replaces an EndpointSlice (ready endpoints of its service).
    pub fn apply_slice(&mut self, slice: &EndpointSlice) {
        let (Some(ns), Some(name)) = (&slice.metadata.namespace, &slice.metadata.name) else {
            return;
        };
        let key = (ns.clone(), name.clone());
        let info = slice_info(slice);
        let old = self.slices.remove(&key);
        if let Some(old) = &old {
            if Some(&old.service) != info.as_ref().map(|i| &i.service) {
                let skey = (ns.clone(), old.service.clone());
                if let Some(set) = self.slices_by_service.get_mut(&skey) {
                    set.remove(name);
                    if set.is_empty() {
                        self.slices_by_service.remove(&skey);
                    }
                }
                self.rebuild(&skey);
            }
        }
        if let Some(info) = info {
            let skey = (ns.clone(), info.service.clone());
            self.slices_by_service
                .entry(skey.clone())
                .or_default()
                .insert(name.clone());
            self.slices.insert(key, info);
            self.rebuild(&skey);
        }
    }

    /// Removes an EndpointSlice.
    pub fn delete_slice(&mut self, namespace: &str, name: &str) {
        let key = (namespace.to_string(), name.to_string());
        if let Some(old) = self.slices.remove(&key) {
            let skey = (namespace.to_string(), old.service);
            if let Some(set) = self.slices_by_service.get_mut(&skey) {
                set.remove(name);
                if set.is_empty() {
                    self.slices_by_service.remove(&skey);
                }
            }
            self.rebuild(&skey);
        }
    }

    /// Adds or replaces a Pod (its IPs, for `pods verified`).
    pub fn apply_pod(&mut self, pod: &Pod) {
        let (Some(ns), Some(name)) = (&pod.metadata.namespace, &pod.metadata.name) else {
            return;
        };
        let mut ips: Vec<IpAddr> = pod
            .status
            .as_ref()
            .map(|s| {
                let mut v: Vec<&str> = s.pod_ips.iter().flatten().map(|p| p.ip.as_str()).collect();
                v.extend(s.pod_ip.as_deref());
                v.into_iter().filter_map(|ip| ip.parse().ok()).collect()
            })
            .unwrap_or_default();
        ips.sort();
        ips.dedup();
        self.delete_pod(ns, name);
        for ip in &ips {
            *self.pod_ips.entry((ns.clone(), *ip)).or_default() += 1;
        }
        self.pods.insert((ns.clone(), name.clone()), ips);
    }

    /// Removes a Pod.
    pub fn delete_pod(&mut self, namespace: &str, name: &str) {
        let Some(ips) = self.pods.remove(&(namespace.to_string(), name.to_string())) else {
            return;
        };
        for ip in ips {
            let k = (namespace.to_string(), ip);
            if let Some(n) = self.pod_ips.get_mut(&k) {
                *n -= 1;
                if *n == 0 {
                    self.pod_ips.remove(&k);
                }
            }
        }
    }

    /// Drops every Service, EndpointSlice and Pod (before a re-list).
    pub fn clear_objects(&mut self) {
        self.services.clear();
        self.slices.clear();
        self.slices_by_service.clear();
        self.pods.clear();
        self.pod_ips.clear();
        self.rebuild_all();
    }

    fn rebuild_all(&mut self) {
        self.names.clear();
        self.contributed.clear();
        self.bump_serial(true);
        let zone_owner: Owner = Arc::from("");
        let ttl = self.config.ttl;
        let mut statics = Vec::new();
        for zone in self.config.zones.clone() {
            let Ok(apex) = Name::from_ascii(&zone) else {
                continue;
            };
            let ns_name = name(&format!("ns.dns.{zone}"));
            let mut apex_records = vec![Record::from_rdata(
                apex.clone(),
                ttl,
                RData::NS(rdata::NS(ns_name)),
            )];
            apex_records.extend(self.soa_record(&zone));
            statics.push((LowerName::from(&apex), apex_records));
            if !is_reverse_zone(&zone) {
                let version = name(&format!("dns-version.{zone}"));
                let txt = Record::from_rdata(
                    version.clone(),
                    ttl,
                    RData::TXT(TXT::new(vec![SCHEMA_VERSION.into()])),
                );
                statics.push((LowerName::from(&version), vec![txt]));
                statics.push((LowerName::from(&name(&format!("svc.{zone}"))), Vec::new()));
                statics.push((LowerName::from(&name(&format!("pod.{zone}"))), Vec::new()));
            }
        }
        for (n, records) in statics {
            self.add_part(n, &zone_owner, records);
        }
        let keys: BTreeSet<Key> = self.services.keys().cloned().collect();
        for key in keys {
            self.rebuild(&key);
        }
    }

    fn soa_record(&self, zone: &str) -> Option<Record> {
        let apex = Name::from_ascii(zone).ok()?;
        let ttl = self.config.ttl;
        let soa = SOA::new(
            name(&format!("ns.dns.{zone}")),
            name(&format!("hostmaster.{zone}")),
            self.serial,
            7200,
            1800,
            86400,
            ttl,
        );
        Some(Record::from_rdata(apex, ttl, RData::SOA(soa)))
    }

    /// Moves the serial to now (CoreDNS: the time of the last change); `force` rebuilds the
    /// SOAs anyway (new zones or TTL).
    fn bump_serial(&mut self, force: bool) {
        let serial = now_serial().max(self.serial);
        if serial == self.serial && !force {
            return;
        }
        self.serial = serial;
        self.soas = self
            .config
            .zones
            .iter()
            .filter_map(|z| {
                let record = self.soa_record(z)?;
                Some((LowerName::from(&record.name), Arc::from(vec![record])))
            })
            .collect();
    }

    /// Rebuilds the names of one service: removes what it contributed, adds what it now does.
    fn rebuild(&mut self, key: &Key) {
        let owner: Owner = Arc::from(format!("{}/{}", key.0, key.1));
        if let Some(old) = self.contributed.remove(key) {
            for n in old {
                self.remove_part(&n, &owner);
            }
        }
        let desired = self.desired(key);
        let mut names = Vec::with_capacity(desired.len());
        for (n, records) in desired {
            names.push(n.clone());
            self.add_part(n, &owner, records);
        }
        if !names.is_empty() {
            self.contributed.insert(key.clone(), names);
        }
        self.bump_serial(false);
    }

    fn add_part(&mut self, n: LowerName, owner: &Owner, records: Vec<Record>) {
        let slot = self.names.entry(n).or_default();
        slot.refs += 1;
        if !records.is_empty() {
            match slot.parts.iter_mut().find(|(o, _)| o == owner) {
                Some((_, v)) => v.extend(records),
                None => slot.parts.push((owner.clone(), records)),
            }
            slot.node = Arc::new(Node::build(&slot.parts));
        }
    }

    fn remove_part(&mut self, n: &LowerName, owner: &Owner) {
        let Some(slot) = self.names.get_mut(n) else {
            return;
        };
        slot.refs = slot.refs.saturating_sub(1);
        if slot.refs == 0 {
            self.names.remove(n);
            return;
        }
        let before = slot.parts.len();
        slot.parts.retain(|(o, _)| o != owner);
        if slot.parts.len() != before {
            slot.node = Arc::new(Node::build(&slot.parts));
        }
    }

    /// What service `key` contributes now. The same name may appear several times (merged).
    fn desired(&self, key: &Key) -> Vec<(LowerName, Vec<Record>)> {
        let mut out: Vec<(LowerName, Vec<Record>)> = Vec::new();
        let Some(service) = self.services.get(key) else {
            return out;
        };
        let (ns, svc) = (key.0.as_str(), key.1.as_str());
        if !self.config.exposes(ns) {
            return out;
        }
        let ttl = self.config.ttl;
        let endpoints: Vec<(&SliceEndpoint, &[NamedPort])> = self
            .slices_by_service
            .get(key)
            .into_iter()
            .flatten()
            .filter_map(|slice| self.slices.get(&(ns.to_string(), slice.clone())))
            .flat_map(|s| s.endpoints.iter().map(move |e| (e, s.ports.as_slice())))
            .collect();
        let mut first_zone = true;
        let zones: Vec<String> = self.config.forward_zones().map(str::to_string).collect();
        for zone in &zones {
            let base_str = format!("{svc}.{ns}.svc.{zone}");
            let base = name(&base_str);
            out.push((lower(&format!("{ns}.svc.{zone}")), Vec::new()));
            let endpoint_host = |e: &SliceEndpoint, ip: &IpAddr| -> String {
                if let Some(h) = e.hostname.as_deref().filter(|h| !h.is_empty()) {
                    return h.to_string();
                }
                if self.config.endpoint_pod_names {
                    if let Some(p) = e.pod_name.as_deref().filter(|p| !p.is_empty()) {
                        return p.to_string();
                    }
                }
                dashed(ip)
            };
            match &service.kind {
                ServiceKind::ExternalName(target) => {
                    let Ok(target) = Name::from_ascii(fqdn(target)) else {
                        continue;
                    };
                    out.push((
                        LowerName::from(&base),
                        vec![Record::from_rdata(
                            base,
                            ttl,
                            RData::CNAME(rdata::CNAME(target)),
                        )],
                    ));
                }
                ServiceKind::ClusterIp(ips) => {
                    if ips.is_empty() || (self.config.ignore_empty_service && endpoints.is_empty())
                    {
                        continue;
                    }
                    let mut records: Vec<Record> =
                        ips.iter().map(|ip| address(&base, ttl, *ip)).collect();
                    for (port, proto, number) in &service.ports {
                        let srv = Record::from_rdata(
                            base.clone(),
                            ttl,
                            RData::SRV(SRV::new(0, 100, *number, base.clone())),
                        );
                        records.push(srv.clone());
                        out.push((lower(&format!("_{proto}.{base_str}")), Vec::new()));
                        let owner = name(&format!("_{port}._{proto}.{base_str}"));
                        let srv = Record::from_rdata(owner.clone(), ttl, srv.data);
                        out.push((LowerName::from(&owner), vec![srv]));
                    }
                    out.push((LowerName::from(&base), records));
                    if first_zone {
                        for ip in ips {
                            let ptr = Name::from(*ip);
                            out.push((
                                LowerName::from(&ptr),
                                vec![Record::from_rdata(
                                    ptr,
                                    ttl,
                                    RData::PTR(rdata::PTR(base.clone())),
                                )],
                            ));
                        }
                    }
                }
                ServiceKind::Headless => {
                    if endpoints.is_empty() {
                        continue;
                    }
                    let mut records = Vec::new();
                    let mut srvs: Vec<(String, Vec<Record>)> = Vec::new();
                    for (e, ports) in &endpoints {
                        for ip in &e.ips {
                            records.push(address(&base, ttl, *ip));
                            let host = name(&format!("{}.{base_str}", endpoint_host(e, ip)));
                            for (port, proto, number) in ports.iter() {
                                let srv = RData::SRV(SRV::new(0, 100, *number, host.clone()));
                                records.push(Record::from_rdata(base.clone(), ttl, srv.clone()));
                                let owner_str = format!("_{port}._{proto}.{base_str}");
                                let owner = name(&owner_str);
                                let rec = Record::from_rdata(owner, ttl, srv);
                                match srvs.iter_mut().find(|(o, _)| *o == owner_str) {
                                    Some((_, v)) => v.push(rec),
                                    None => {
                                        out.push((
                                            lower(&format!("_{proto}.{base_str}")),
                                            Vec::new(),
                                        ));
                                        srvs.push((owner_str, vec![rec]));
                                    }
                                }
                            }
                            if first_zone {
                                let ptr = Name::from(*ip);
                                out.push((
                                    LowerName::from(&ptr),
                                    vec![Record::from_rdata(
                                        ptr,
                                        ttl,
                                        RData::PTR(rdata::PTR(host)),
                                    )],
                                ));
                            }
                        }
                    }
                    out.push((LowerName::from(&base), records));
                    out.extend(srvs.into_iter().map(|(o, v)| (lower(&o), v)));
                }
            }
            if !self.config.noendpoints && !matches!(service.kind, ServiceKind::ExternalName(_)) {
                for (e, _) in &endpoints {
                    for ip in &e.ips {
                        let host = name(&format!("{}.{base_str}", endpoint_host(e, ip)));
                        out.push((LowerName::from(&host), vec![address(&host, ttl, *ip)]));
                    }
                }
            }
            first_zone = false;
        }
        out
    }
}

fn now_serial() -> u32 {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    u32::try_from(secs).unwrap_or(u32::MAX)
}

fn fqdn(s: &str) -> String {
    let s = s.to_ascii_lowercase();
    if s.ends_with('.') {
        s
    } else {
        format!("{s}.")
    }
}

/// A name from text built out of Kubernetes names (already valid DNS labels). An invalid one
/// (which the API server's validation rules out) becomes the root, which no query matches.
fn name(s: &str) -> Name {
    Name::from_ascii(s)
        .map(|n| n.to_lowercase())
        .unwrap_or_else(|_| Name::root())
}

fn lower(s: &str) -> LowerName {
    LowerName::from(&name(s))
}

fn address(owner: &Name, ttl: u32, ip: IpAddr) -> Record {
    let data = match ip {
        IpAddr::V4(v4) => RData::A(A(v4)),
        IpAddr::V6(v6) => RData::AAAA(AAAA(v6)),
    };
    Record::from_rdata(owner.clone(), ttl, data)
}

/// `10.0.0.1` → `10-0-0-1`; `fd00::1` → `fd00--1` (as CoreDNS).
pub fn dashed(ip: &IpAddr) -> String {
    ip.to_string().replace(['.', ':'], "-")
}

/// The inverse of [`dashed`]: a pod label back to its address.
pub fn undashed(label: &str) -> Option<IpAddr> {
    if let Ok(v4) = label.replace('-', ".").parse::<Ipv4Addr>() {
        return Some(IpAddr::V4(v4));
    }
    label.replace('-', ":").parse().ok()
}

/// A named port as SRV records want it: (name, protocol, number), lower-case; unnamed
/// ports have no SRV record.
fn named_port(
    name: Option<&str>,
    protocol: Option<&str>,
    port: Option<i32>,
) -> Option<(String, String, u16)> {
    let name = name.filter(|n| !n.is_empty())?;
    let proto = protocol.unwrap_or("TCP").to_ascii_lowercase();
    Some((name.to_ascii_lowercase(), proto, u16::try_from(port?).ok()?))
}

fn service_info(service: &Service) -> ServiceInfo {
    let spec = service.spec.clone().unwrap_or_default();
    let ports = spec
        .ports
        .iter()
        .flatten()
        .filter_map(|p| named_port(p.name.as_deref(), p.protocol.as_deref(), Some(p.port)))
        .collect();
    let kind = if spec.type_.as_deref() == Some("ExternalName") {
        ServiceKind::ExternalName(spec.external_name.unwrap_or_default())
    } else if spec.cluster_ip.as_deref() == Some("None") {
        ServiceKind::Headless
    } else {
        let mut ips: Vec<IpAddr> = spec
            .cluster_ips
            .iter()
            .flatten()
            .filter_map(|ip| ip.parse().ok())
            .collect();
        if ips.is_empty() {
            ips.extend(
                spec.cluster_ip
                    .as_deref()
                    .and_then(|ip| ip.parse::<IpAddr>().ok()),
            );
        }
        ServiceKind::ClusterIp(ips)
    };
    ServiceInfo { kind, ports }
}

fn slice_info(slice: &EndpointSlice) -> Option<SliceInfo> {
    let service = slice
        .metadata
        .labels
        .as_ref()?
        .get(SERVICE_NAME_LABEL)?
        .clone();
    if slice.address_type == "FQDN" {
        return Some(SliceInfo {
            service,
            endpoints: Vec::new(),
            ports: Vec::new(),
        });
    }
    let endpoints = slice
        .endpoints
        .iter()
        .filter(|e| e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true))
        .map(|e| SliceEndpoint {
            ips: e.addresses.iter().filter_map(|a| a.parse().ok()).collect(),
            hostname: e.hostname.as_ref().map(|h| h.to_ascii_lowercase()),
            pod_name: e
                .target_ref
                .as_ref()
                .filter(|r| r.kind.as_deref() == Some("Pod"))
                .and_then(|r| r.name.as_ref().map(|n| n.to_ascii_lowercase())),
        })
        .collect();
    let ports = slice
        .ports
        .iter()
        .flatten()
        .filter_map(|p| named_port(p.name.as_deref(), p.protocol.as_deref(), p.port))
        .collect();
    Some(SliceInfo {
        service,
        endpoints,
        ports,
    })
}

//! What the endpoint controllers want to exist, without IO: the endpoints a Service's pods
//! give (grouped by their resolved port set), the legacy Endpoints object, the endpoints
//! mirrored from a user's Endpoints, and the plan that turns the existing EndpointSlices
//! into the wanted ones with as few writes as possible.

use std::collections::BTreeMap;
use std::net::IpAddr;

use k8s_openapi::api::core::v1::{
    EndpointAddress, EndpointPort as CorePort, EndpointSubset, Endpoints, ObjectReference, Pod,
    Service, ServicePort,
};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

/// The label naming a slice's Service.
pub const LABEL_SERVICE_NAME: &str = "kubernetes.io/service-name";
/// The label naming the controller that manages a slice.
pub const LABEL_SLICE_MANAGED_BY: &str = "endpointslice.kubernetes.io/managed-by";
/// Slices made from a Service's pods.
pub const SLICE_MANAGER: &str = "endpointslice-controller.k8s.io";
/// Slices mirrored from a user's Endpoints.
pub const MIRROR_MANAGER: &str = "endpointslicemirroring-controller.k8s.io";
/// The label naming the controller that manages an Endpoints object.
pub const LABEL_ENDPOINTS_MANAGED_BY: &str = "endpoints.kubernetes.io/managed-by";
/// Endpoints written by the endpoints controller (Kubernetes 1.33 and later label them).
pub const ENDPOINTS_MANAGER: &str = "endpoint-controller";
/// Endpoints carrying this label set to "true" are not mirrored.
pub const LABEL_SKIP_MIRROR: &str = "endpointslice.kubernetes.io/skip-mirror";
/// Set on objects of headless Services.
pub const LABEL_HEADLESS: &str = "service.kubernetes.io/headless";
/// Set on an Endpoints object whose addresses were cut to [`MAX_ENDPOINTS_ADDRESSES`].
pub const ANNOTATION_OVER_CAPACITY: &str = "endpoints.kubernetes.io/over-capacity";
/// The most endpoints one slice holds.
pub const MAX_PER_SLICE: usize = 100;
/// The most addresses an Endpoints object holds, and the most that are mirrored.
pub const MAX_ENDPOINTS_ADDRESSES: usize = 1000;

/// Endpoints sharing one address type and one port set: one or more slices.
#[derive(Debug, Clone, PartialEq)]
pub struct Group {
    /// `IPv4` or `IPv6`.
    pub address_type: String,
    /// The ports, in the Service's order.
    pub ports: Vec<EndpointPort>,
    /// The endpoints, sorted by address.
    pub endpoints: Vec<Endpoint>,
}

impl Group {
    fn key(&self) -> String {
        group_key(&self.address_type, &self.ports)
    }
}

fn group_key(address_type: &str, ports: &[EndpointPort]) -> String {
    let ports: Vec<String> = ports
        .iter()
        .map(|p| {
            format!(
                "{}/{}/{}/{}",
                p.name.as_deref().unwrap_or(""),
                p.port.unwrap_or(0),
                p.protocol.as_deref().unwrap_or("TCP"),
                p.app_protocol.as_deref().unwrap_or("")
            )
        })
        .collect();
    format!("{address_type}|{}", ports.join(","))
}

/// The selector of a Service whose endpoints come from pods, or `None` (no selector, an
/// empty one, or type ExternalName): then the user manages its Endpoints.
pub fn selector(svc: &Service) -> Option<&BTreeMap<String, String>> {
    let spec = svc.spec.as_ref()?;
    if spec.type_.as_deref() == Some("ExternalName") {
        return None;
    }
    spec.selector.as_ref().filter(|s| !s.is_empty())
}

/// Whether a Service has a selector at all (of any type).
pub fn has_selector(svc: &Service) -> bool {
    svc.spec
        .as_ref()
        .and_then(|s| s.selector.as_ref())
        .is_some_and(|s| !s.is_empty())
}

/// Whether every pair of `selector` is among the pod's labels.
pub fn matches(selector: &BTreeMap<String, String>, pod: &Pod) -> bool {
    let labels = pod.metadata.labels.as_ref();
    selector
        .iter()
        .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
}

/// The pod's IPv4 address, if it has one.
pub fn pod_ipv4(pod: &Pod) -> Option<&str> {
    let st = pod.status.as_ref()?;
    let from_list = st
        .pod_ips
        .iter()
        .flatten()
        .map(|p| p.ip.as_str())
        .find(|ip| ip.parse::<std::net::Ipv4Addr>().is_ok());
    from_list.or_else(|| {
        st.pod_ip
            .as_deref()
            .filter(|ip| ip.parse::<std::net::Ipv4Addr>().is_ok())
    })
}

/// Whether the pod's Ready condition is True.
pub fn pod_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn terminating(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_some()
}

/// Whether a pod of the Service's namespace may back it at all: selected, with an IPv4
/// address, not finished.
fn candidate<'p>(svc: &Service, sel: &BTreeMap<String, String>, pod: &'p Pod) -> Option<&'p str> {
    if pod.metadata.namespace != svc.metadata.namespace
        || !matches(sel, pod)
        || crate::podgc::is_terminal(pod)
    {
        return None;
    }
    pod_ipv4(pod)
}

/// The port number a Service port reaches on a pod: a number as is, a name looked up
/// among the pod's container ports of the same protocol (`None` if it has none).
pub fn resolve_port(pod: &Pod, sp: &ServicePort) -> Option<i32> {
    match &sp.target_port {
        None => Some(sp.port),
        Some(IntOrString::Int(n)) => Some(*n),
        Some(IntOrString::String(name)) => {
            let proto = sp.protocol.as_deref().unwrap_or("TCP");
            let spec = pod.spec.as_ref()?;
            let sidecars = spec
                .init_containers
                .iter()
                .flatten()
                .filter(|c| c.restart_policy.as_deref() == Some("Always"));
            spec.containers
                .iter()
                .chain(sidecars)
                .flat_map(|c| c.ports.iter().flatten())
                .find(|p| {
                    p.name.as_deref() == Some(name.as_str())
                        && p.protocol.as_deref().unwrap_or("TCP") == proto
                })
                .map(|p| p.container_port)
        }
    }
}

/// The ports of a Service as one pod serves them (ports whose name the pod lacks are left
/// out), in the Service's order.
fn pod_ports(svc: &Service, pod: &Pod) -> Vec<EndpointPort> {
    let ports = svc.spec.as_ref().and_then(|s| s.ports.as_ref());
    ports
        .into_iter()
        .flatten()
        .filter_map(|sp| {
            Some(EndpointPort {
                name: Some(sp.name.clone().unwrap_or_default()),
                port: Some(resolve_port(pod, sp)?),
                protocol: Some(sp.protocol.clone().unwrap_or_else(|| "TCP".into())),
                app_protocol: sp.app_protocol.clone(),
            })
        })
        .collect()
}

fn hostname(svc: &Service, pod: &Pod) -> Option<String> {
    let spec = pod.spec.as_ref()?;
    let name = spec.hostname.as_deref().filter(|h| !h.is_empty())?;
    (spec.subdomain.as_deref() == svc.metadata.name.as_deref()).then(|| name.to_string())
}

fn pod_ref(pod: &Pod) -> ObjectReference {
    ObjectReference {
        kind: Some("Pod".into()),
        namespace: pod.metadata.namespace.clone(),
        name: pod.metadata.name.clone(),
        uid: pod.metadata.uid.clone(),
        ..Default::default()
    }
}

fn node_name(pod: &Pod) -> Option<String> {
    crate::podgc::node_name(pod).map(str::to_string)
}

fn publish_not_ready(svc: &Service) -> bool {
    svc.spec
        .as_ref()
        .and_then(|s| s.publish_not_ready_addresses)
        .unwrap_or(false)
}

/// The endpoint of one pod, with Kubernetes' conditions: serving = Ready; terminating =
/// being deleted; ready = serving and not terminating, or always with
/// publishNotReadyAddresses.
fn pod_endpoint(svc: &Service, pod: &Pod, ip: &str) -> Endpoint {
    let serving = pod_ready(pod);
    let terminating = terminating(pod);
    let ready = publish_not_ready(svc) || (serving && !terminating);
    Endpoint {
        addresses: vec![ip.to_string()],
        conditions: Some(EndpointConditions {
            ready: Some(ready),
            serving: Some(serving),
            terminating: Some(terminating),
        }),
        hostname: hostname(svc, pod),
        node_name: node_name(pod),
        target_ref: Some(pod_ref(pod)),
        ..Default::default()
    }
}

fn address(e: &Endpoint) -> &str {
    e.addresses.first().map(String::as_str).unwrap_or("")
}

/// Groups endpoints by key; each group's endpoints deduplicated by address and sorted.
fn group(items: impl IntoIterator<Item = (String, Vec<EndpointPort>, Endpoint)>) -> Vec<Group> {
    let mut groups: BTreeMap<String, (Group, BTreeMap<String, Endpoint>)> = BTreeMap::new();
    for (address_type, ports, ep) in items {
        let key = group_key(&address_type, &ports);
        let (_, eps) = groups.entry(key).or_insert_with(|| {
            (
                Group {
                    address_type,
                    ports,
                    endpoints: Vec::new(),
                },
                BTreeMap::new(),
            )
        });
        eps.entry(address(&ep).to_string()).or_insert(ep);
    }
    groups
        .into_values()
        .map(|(mut g, eps)| {
            g.endpoints = eps.into_values().collect();
            g
        })
        .collect()
}

/// The endpoints a Service's pods give, one group per resolved port set (IPv4 only).
/// Terminating pods are included (terminating=true); pods without an address, finished,
/// not selected or of another namespace are not. Empty for a Service without a selector.
pub fn pod_groups<'p>(svc: &Service, pods: impl IntoIterator<Item = &'p Pod>) -> Vec<Group> {
    let Some(sel) = selector(svc) else {
        return Vec::new();
    };
    group(pods.into_iter().filter_map(|pod| {
        let ip = candidate(svc, sel, pod)?;
        Some((
            "IPv4".to_string(),
            pod_ports(svc, pod),
            pod_endpoint(svc, pod, ip),
        ))
    }))
}

/// The labels of the objects made for a Service: its own, the headless mark, and `extra`.
fn service_labels(svc: &Service, extra: &[(&str, &str)]) -> BTreeMap<String, String> {
    let mut labels = svc.metadata.labels.clone().unwrap_or_default();
    for (k, _) in extra {
        labels.remove(*k);
    }
    labels.remove(LABEL_HEADLESS);
    if svc.spec.as_ref().and_then(|s| s.cluster_ip.as_deref()) == Some("None") {
        labels.insert(LABEL_HEADLESS.into(), String::new());
    }
    for (k, v) in extra {
        labels.insert(k.to_string(), v.to_string());
    }
    labels
}

/// The Endpoints object of a Service with a selector (labels, annotations, subsets; no
/// resourceVersion): ready addresses, not-ready ones (not terminating), grouped by port
/// set; at most [`MAX_ENDPOINTS_ADDRESSES`] addresses, ready ones first.
pub fn legacy_endpoints<'p>(svc: &Service, pods: impl IntoIterator<Item = &'p Pod>) -> Endpoints {
    let tolerate = publish_not_ready(svc);
    let headless = svc.spec.as_ref().and_then(|s| s.cluster_ip.as_deref()) == Some("None");
    let no_ports = svc
        .spec
        .as_ref()
        .and_then(|s| s.ports.as_ref())
        .is_none_or(|p| p.is_empty());
    // port key -> (ports, ready by ip, not ready by ip)
    type Subset = (
        Vec<CorePort>,
        BTreeMap<String, EndpointAddress>,
        BTreeMap<String, EndpointAddress>,
    );
    let mut subsets: BTreeMap<String, Subset> = BTreeMap::new();
    if let Some(sel) = selector(svc) {
        for pod in pods {
            let Some(ip) = candidate(svc, sel, pod) else {
                continue;
            };
            if terminating(pod) && !tolerate {
                continue;
            }
            if no_ports && !headless {
                continue;
            }
            let ports = pod_ports(svc, pod);
            if ports.is_empty() && !no_ports {
                continue;
            }
            let addr = EndpointAddress {
                ip: ip.to_string(),
                hostname: hostname(svc, pod),
                node_name: node_name(pod),
                target_ref: Some(pod_ref(pod)),
            };
            let key = group_key("", &ports);
            let entry = subsets.entry(key).or_insert_with(|| {
                let core = ports
                    .iter()
                    .map(|p| CorePort {
                        name: p.name.clone().filter(|n| !n.is_empty()),
                        port: p.port.unwrap_or(0),
                        protocol: p.protocol.clone(),
                        app_protocol: p.app_protocol.clone(),
                    })
                    .collect();
                (core, BTreeMap::new(), BTreeMap::new())
            });
            if tolerate || pod_ready(pod) {
                entry.1.insert(ip.to_string(), addr);
            } else {
                entry.2.insert(ip.to_string(), addr);
            }
        }
    }
    // Ready addresses first (of every subset), then not-ready ones, up to the cap.
    let mut budget = MAX_ENDPOINTS_ADDRESSES;
    let mut truncated = false;
    let mut cut = |m: &mut BTreeMap<String, EndpointAddress>| {
        let n = m.len().min(budget);
        truncated |= n < m.len();
        budget -= n;
        while m.len() > n {
            m.pop_last();
        }
    };
    let mut subsets: Vec<Subset> = subsets.into_values().collect();
    for s in &mut subsets {
        cut(&mut s.1);
    }
    for s in &mut subsets {
        cut(&mut s.2);
    }
    let subsets: Vec<EndpointSubset> = subsets
        .into_iter()
        .filter(|(_, r, n)| !r.is_empty() || !n.is_empty())
        .map(|(ports, ready, not_ready)| EndpointSubset {
            addresses: (!ready.is_empty()).then(|| ready.into_values().collect()),
            not_ready_addresses: (!not_ready.is_empty()).then(|| not_ready.into_values().collect()),
            ports: (!ports.is_empty()).then_some(ports),
        })
        .collect();
    Endpoints {
        metadata: ObjectMeta {
            name: svc.metadata.name.clone(),
            namespace: svc.metadata.namespace.clone(),
            labels: Some(service_labels(
                svc,
                &[(LABEL_ENDPOINTS_MANAGED_BY, ENDPOINTS_MANAGER)],
            )),
            annotations: truncated.then(|| {
                BTreeMap::from([(
                    ANNOTATION_OVER_CAPACITY.to_string(),
                    "truncated".to_string(),
                )])
            }),
            ..Default::default()
        },
        subsets: (!subsets.is_empty()).then_some(subsets),
    }
}

/// The Endpoints object to write to get `desired` (from [`legacy_endpoints`]), or `None`
/// when `existing` already has its labels, subsets and over-capacity mark. Other
/// annotations of `existing` are kept.
pub fn endpoints_write(existing: Option<&Endpoints>, desired: Endpoints) -> Option<Endpoints> {
    let Some(cur) = existing else {
        return Some(desired);
    };
    let over = |e: &Endpoints| {
        e.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(ANNOTATION_OVER_CAPACITY).cloned())
    };
    let subsets = |e: &Endpoints| e.subsets.clone().unwrap_or_default();
    if cur.metadata.labels.clone().unwrap_or_default()
        == desired.metadata.labels.clone().unwrap_or_default()
        && subsets(cur) == subsets(&desired)
        && over(cur) == over(&desired)
    {
        return None;
    }
    let mut next = cur.clone();
    next.metadata.labels = desired.metadata.labels.clone();
    let mut annotations = cur.metadata.annotations.clone().unwrap_or_default();
    annotations.remove(ANNOTATION_OVER_CAPACITY);
    if let Some(v) = over(&desired) {
        annotations.insert(ANNOTATION_OVER_CAPACITY.into(), v);
    }
    next.metadata.annotations = (!annotations.is_empty()).then_some(annotations);
    next.subsets = desired.subsets;
    Some(next)
}

/// Whether a user's Endpoints are to be mirrored into slices: its Service exists, has no
/// selector, and the Endpoints are not marked skip-mirror.
pub fn should_mirror(svc: Option<&Service>, ep: &Endpoints) -> bool {
    let skip = ep
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(LABEL_SKIP_MIRROR))
        .is_some_and(|v| v == "true");
    !skip && svc.is_some_and(|s| !has_selector(s))
}

/// The endpoints mirrored from a user's Endpoints: ready addresses ready=true,
/// notReadyAddresses ready=false, grouped by address family and port set, at most
/// [`MAX_ENDPOINTS_ADDRESSES`] of them; addresses that are not IPs are left out.
pub fn mirror_groups(ep: &Endpoints) -> Vec<Group> {
    let mut items = Vec::new();
    for subset in ep.subsets.iter().flatten() {
        let ports: Vec<EndpointPort> = subset
            .ports
            .iter()
            .flatten()
            .map(|p| EndpointPort {
                name: Some(p.name.clone().unwrap_or_default()),
                port: Some(p.port),
                protocol: Some(p.protocol.clone().unwrap_or_else(|| "TCP".into())),
                app_protocol: p.app_protocol.clone(),
            })
            .collect();
        let ready = subset.addresses.iter().flatten().map(|a| (a, true));
        let not_ready = subset
            .not_ready_addresses
            .iter()
            .flatten()
            .map(|a| (a, false));
        for (a, ready) in ready.chain(not_ready) {
            let address_type = match a.ip.parse::<IpAddr>() {
                Ok(IpAddr::V4(_)) => "IPv4",
                Ok(IpAddr::V6(_)) => "IPv6",
                Err(_) => continue,
            };
            let endpoint = Endpoint {
                addresses: vec![a.ip.clone()],
                conditions: Some(EndpointConditions {
                    ready: Some(ready),
                    ..Default::default()
                }),
                hostname: a.hostname.clone(),
                node_name: a.node_name.clone(),
                target_ref: a.target_ref.clone(),
                ..Default::default()
            };
            items.push((address_type.to_string(), ports.clone(), endpoint));
        }
    }
    items.truncate(MAX_ENDPOINTS_ADDRESSES);
    group(items)
}

/// What every slice of one owner carries.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    /// The namespace.
    pub namespace: String,
    /// The generateName of new slices.
    pub prefix: String,
    /// Every label of the slices.
    pub labels: BTreeMap<String, String>,
    /// Every annotation of the slices.
    pub annotations: BTreeMap<String, String>,
    /// The owner (controller) reference.
    pub owner: OwnerReference,
    /// Whether an owner without endpoints keeps one empty slice (as the endpointslice
    /// controller does; the mirroring controller does not).
    pub placeholder: bool,
}

/// `<name>-`, cut as Kubernetes' name generator cuts a base (58 characters).
fn prefix(name: &str) -> String {
    let mut p = format!("{name}-");
    p.truncate(58);
    p
}

/// The template of the slices of a Service with a selector.
pub fn service_template(svc: &Service) -> Template {
    let name = svc.metadata.name.clone().unwrap_or_default();
    Template {
        namespace: svc.metadata.namespace.clone().unwrap_or_default(),
        prefix: prefix(&name),
        labels: service_labels(
            svc,
            &[
                (LABEL_SERVICE_NAME, name.as_str()),
                (LABEL_SLICE_MANAGED_BY, SLICE_MANAGER),
            ],
        ),
        annotations: BTreeMap::new(),
        owner: OwnerReference {
            api_version: "v1".into(),
            kind: "Service".into(),
            name: name.clone(),
            uid: svc.metadata.uid.clone().unwrap_or_default(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        },
        placeholder: true,
    }
}

/// The template of the slices mirrored from an Endpoints object: its labels and
/// annotations (less last-applied-configuration and the trigger time), owned by it.
pub fn mirror_template(ep: &Endpoints) -> Template {
    let name = ep.metadata.name.clone().unwrap_or_default();
    let mut labels = ep.metadata.labels.clone().unwrap_or_default();
    labels.insert(LABEL_SERVICE_NAME.into(), name.clone());
    labels.insert(LABEL_SLICE_MANAGED_BY.into(), MIRROR_MANAGER.into());
    let mut annotations = ep.metadata.annotations.clone().unwrap_or_default();
    annotations.remove("kubectl.kubernetes.io/last-applied-configuration");
    annotations.remove("endpoints.kubernetes.io/last-change-trigger-time");
    Template {
        namespace: ep.metadata.namespace.clone().unwrap_or_default(),
        prefix: prefix(&name),
        labels,
        annotations,
        owner: OwnerReference {
            api_version: "v1".into(),
            kind: "Endpoints".into(),
            name,
            uid: ep.metadata.uid.clone().unwrap_or_default(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        },
        placeholder: false,
    }
}

/// The writes that turn an owner's existing slices into the wanted ones.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Plan {
    /// New slices (generateName, no name).
    pub create: Vec<EndpointSlice>,
    /// Changed slices (with the existing name and resourceVersion).
    pub update: Vec<EndpointSlice>,
    /// Names of slices to delete.
    pub delete: Vec<String>,
}

impl Plan {
    /// Whether nothing is to be written.
    pub fn is_empty(&self) -> bool {
        self.create.is_empty() && self.update.is_empty() && self.delete.is_empty()
    }
}

struct Slot<'a> {
    base: Option<&'a EndpointSlice>,
    address_type: String,
    ports: Vec<EndpointPort>,
    endpoints: Vec<Endpoint>,
}

fn slice_key(s: &EndpointSlice) -> String {
    group_key(&s.address_type, s.ports.as_deref().unwrap_or_default())
}

/// Plans the writes from `existing` (the owner's slices, by this controller) to `groups`.
/// An endpoint stays in the slice it is in when that slice still fits it; new endpoints
/// fill the free room of existing slices of their port set before new slices are made;
/// slices no longer needed are reused (rewritten) for new port sets before any is created,
/// and deleted otherwise. A slice whose content is unchanged is not written.
pub fn plan(t: &Template, mut groups: Vec<Group>, existing: &[&EndpointSlice]) -> Plan {
    let mut existing: Vec<&EndpointSlice> = existing.to_vec();
    existing.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    let mut by_key: BTreeMap<String, Vec<&EndpointSlice>> = BTreeMap::new();
    for s in existing {
        by_key.entry(slice_key(s)).or_default().push(s);
    }
    if groups.is_empty() && t.placeholder {
        groups.push(Group {
            address_type: "IPv4".into(),
            ports: Vec::new(),
            endpoints: Vec::new(),
        });
    }
    let mut slots: Vec<Slot> = Vec::new();
    let mut spare: Vec<&EndpointSlice> = Vec::new();
    for g in groups {
        let key = g.key();
        let mut want: BTreeMap<String, Endpoint> = g
            .endpoints
            .into_iter()
            .map(|e| (address(&e).to_string(), e))
            .collect();
        let mut mine: Vec<Slot> = by_key
            .remove(&key)
            .unwrap_or_default()
            .into_iter()
            .map(|s| Slot {
                base: Some(s),
                address_type: g.address_type.clone(),
                ports: g.ports.clone(),
                endpoints: s
                    .endpoints
                    .iter()
                    .filter_map(|e| want.remove(address(e)))
                    .collect(),
            })
            .collect();
        let mut rest = want.into_values().peekable();
        for slot in &mut mine {
            while slot.endpoints.len() < MAX_PER_SLICE {
                match rest.next() {
                    Some(e) => slot.endpoints.push(e),
                    None => break,
                }
            }
        }
        while rest.peek().is_some() {
            mine.push(Slot {
                base: None,
                address_type: g.address_type.clone(),
                ports: g.ports.clone(),
                endpoints: rest.by_ref().take(MAX_PER_SLICE).collect(),
            });
        }
        if mine.iter().all(|s| s.endpoints.is_empty()) {
            // An owner without endpoints keeps one (placeholder) slice.
            let mut keep = mine.drain(..);
            let first = keep.next().unwrap_or(Slot {
                base: None,
                address_type: g.address_type.clone(),
                ports: g.ports.clone(),
                endpoints: Vec::new(),
            });
            spare.extend(keep.filter_map(|s| s.base));
            slots.push(first);
        } else {
            for s in mine {
                match (s.endpoints.is_empty(), s.base) {
                    (true, Some(b)) => spare.push(b),
                    (true, None) => {}
                    (false, _) => slots.push(s),
                }
            }
        }
    }
    spare.extend(by_key.into_values().flatten());
    spare.sort_by(|a, b| b.metadata.name.cmp(&a.metadata.name));
    let mut plan = Plan::default();
    for mut slot in slots {
        if slot.base.is_none() {
            slot.base = spare.pop();
        }
        slot.endpoints.sort_by(|a, b| address(a).cmp(address(b)));
        let ports = (!slot.ports.is_empty()).then_some(slot.ports);
        match slot.base {
            Some(base) => {
                let same = base.address_type == slot.address_type
                    && base.ports.as_deref().unwrap_or_default()
                        == ports.as_deref().unwrap_or_default()
                    && base.endpoints == slot.endpoints
                    && base.metadata.labels.clone().unwrap_or_default() == t.labels
                    && base.metadata.annotations.clone().unwrap_or_default() == t.annotations
                    && base.metadata.owner_references.as_deref()
                        == Some(std::slice::from_ref(&t.owner));
                if !same {
                    let mut s = base.clone();
                    s.metadata.labels = Some(t.labels.clone());
                    s.metadata.annotations =
                        (!t.annotations.is_empty()).then(|| t.annotations.clone());
                    s.metadata.owner_references = Some(vec![t.owner.clone()]);
                    s.address_type = slot.address_type;
                    s.ports = ports;
                    s.endpoints = slot.endpoints;
                    plan.update.push(s);
                }
            }
            None => plan.create.push(EndpointSlice {
                metadata: ObjectMeta {
                    generate_name: Some(t.prefix.clone()),
                    namespace: Some(t.namespace.clone()),
                    labels: Some(t.labels.clone()),
                    annotations: (!t.annotations.is_empty()).then(|| t.annotations.clone()),
                    owner_references: Some(vec![t.owner.clone()]),
                    ..Default::default()
                },
                address_type: slot.address_type,
                ports,
                endpoints: slot.endpoints,
            }),
        }
    }
    plan.delete = spare
        .into_iter()
        .rev()
        .filter_map(|s| s.metadata.name.clone())
        .collect();
    plan
}

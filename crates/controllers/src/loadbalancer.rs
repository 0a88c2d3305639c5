//! Services of type LoadBalancer, like MetalLB's layer-2 mode: every LoadBalancer Service
//! (without a `spec.loadBalancerClass`, or with ours) gets a free address of a pool on the
//! node network, written to `status.loadBalancer.ingress` (`ipMode: VIP`), and one Ready
//! node that answers for it, recorded in the annotation [`LB_NODE_ANNOTATION`]. That node's
//! agent adds the address to its eth0, so the host's ARP for it is answered there; its
//! service proxy translates the address like any other LoadBalancer ingress IP.
//!
//! The address of a Service is kept across restarts (read back from its status), honours
//! `spec.loadBalancerIP` when that is in the pool and free, and is released (status
//! cleared) when the Service stops being a LoadBalancer; a deleted Service's address is
//! free at once. An exhausted pool is an `AllocationFailed` Warning event on the Service.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::future::Future;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, ObjectReference, Service};
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client, ResourceExt};
use serde_json::json;

use crate::events::{self, Recorder};
use crate::runner::{self, Ready, Reconciler};
use crate::{Error, Metrics};

/// The annotation naming the node that answers for a Service's address.
pub const LB_NODE_ANNOTATION: &str = "kins.dev/lb-node";

/// The `spec.loadBalancerClass` this controller serves (besides none at all).
pub const LB_CLASS: &str = "kins.dev/l2";

/// How often a Service that got no address is tried again.
const RETRY: Duration = Duration::from_secs(10);

/// An inclusive range of IPv4 addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pool {
    /// The first address.
    pub first: Ipv4Addr,
    /// The last address (not before `first`).
    pub last: Ipv4Addr,
}

impl Pool {
    /// The pool `first..=last`; `None` if `last` comes before `first`.
    pub fn new(first: Ipv4Addr, last: Ipv4Addr) -> Option<Pool> {
        (u32::from(first) <= u32::from(last)).then_some(Pool { first, last })
    }

    /// Parses `A-B` (two IPv4 addresses, A not after B).
    pub fn parse(s: &str) -> Option<Pool> {
        let (a, b) = s.split_once('-')?;
        Pool::new(a.trim().parse().ok()?, b.trim().parse().ok()?)
    }

    /// Whether `ip` is in the pool.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        (u32::from(self.first)..=u32::from(self.last)).contains(&u32::from(ip))
    }

    /// The pool's addresses, in order.
    pub fn iter(&self) -> impl Iterator<Item = Ipv4Addr> {
        (u32::from(self.first)..=u32::from(self.last)).map(Ipv4Addr::from)
    }
}

impl fmt::Display for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.first, self.last)
    }
}

/// Why a Service got no address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllocError {
    /// Every address of the pool is taken.
    Exhausted(Pool),
    /// `spec.loadBalancerIP` is outside the pool.
    OutsidePool(Ipv4Addr, Pool),
    /// `spec.loadBalancerIP` is another Service's.
    Taken(Ipv4Addr),
}

impl fmt::Display for AllocError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AllocError::Exhausted(p) => write!(f, "no free address in the pool {p}"),
            AllocError::OutsidePool(ip, p) => {
                write!(f, "requested address {ip} is not in the pool {p}")
            }
            AllocError::Taken(ip) => {
                write!(
                    f,
                    "requested address {ip} is already used by another service"
                )
            }
        }
    }
}

/// The address a Service gets: its `requested` one (spec.loadBalancerIP) if in the pool and
/// not `taken` by others; else its `current` one (from its status) if still valid; else
/// the first free one of the pool.
pub fn allocate(
    pool: Pool,
    taken: &BTreeSet<Ipv4Addr>,
    requested: Option<Ipv4Addr>,
    current: Option<Ipv4Addr>,
) -> Result<Ipv4Addr, AllocError> {
    if let Some(ip) = requested {
        if !pool.contains(ip) {
            return Err(AllocError::OutsidePool(ip, pool));
        }
        if taken.contains(&ip) {
            return Err(AllocError::Taken(ip));
        }
        return Ok(ip);
    }
    if let Some(ip) = current.filter(|ip| pool.contains(*ip) && !taken.contains(ip)) {
        return Ok(ip);
    }
    pool.iter()
        .find(|ip| !taken.contains(ip))
        .ok_or(AllocError::Exhausted(pool))
}

/// 64-bit FNV-1a: a hash that stays the same across builds and restarts.
fn fnv1a(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            h ^= u64::from(b'/');
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        for b in p.bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

/// The node that answers for the Service `key` (`namespace/name`): its `current` one while
/// that stays Ready, else the first Ready node by a stable hash of key and node name
/// (rendezvous hashing: a node coming or going moves only its own Services).
pub fn pick_node(key: &str, ready: &[String], current: Option<&str>) -> Option<String> {
    if let Some(c) = current.filter(|c| ready.iter().any(|n| n == c)) {
        return Some(c.to_string());
    }
    ready
        .iter()
        .min_by_key(|n| (fnv1a(&[key, n]), n.as_str()))
        .cloned()
}

/// Whether this controller serves the Service: type LoadBalancer, no class or ours.
pub fn is_ours(svc: &Service) -> bool {
    let Some(spec) = svc.spec.as_ref() else {
        return false;
    };
    spec.type_.as_deref() == Some("LoadBalancer")
        && spec
            .load_balancer_class
            .as_deref()
            .is_none_or(|c| c == LB_CLASS)
}

/// The IPv4 addresses of the Service's `status.loadBalancer.ingress`.
pub fn ingress_ips(svc: &Service) -> Vec<Ipv4Addr> {
    svc.status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|i| i.ip.as_deref()?.parse().ok())
        .collect()
}

/// The Service's `spec.loadBalancerIP`, if set (and IPv4).
pub fn requested_ip(svc: &Service) -> Option<Ipv4Addr> {
    svc.spec
        .as_ref()?
        .load_balancer_ip
        .as_deref()
        .filter(|s| !s.is_empty())?
        .parse()
        .ok()
}

/// Whether a Node is Ready (and not being deleted).
pub fn node_ready(node: &Node) -> bool {
    node.metadata.deletion_timestamp.is_none()
        && node
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .into_iter()
            .flatten()
            .any(|c| c.type_ == "Ready" && c.status == "True")
}

fn svc_ref(svc: &Service) -> ObjectReference {
    ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Service".into()),
        name: Some(svc.name_any()),
        namespace: svc.namespace(),
        uid: svc.uid(),
        resource_version: svc.resource_version(),
        ..Default::default()
    }
}

/// The LoadBalancer reconciler.
pub struct LoadBalancer {
    client: Client,
    pool: Pool,
    services: Store<Service>,
    services_ready: Ready,
    nodes: Store<Node>,
    nodes_ready: Ready,
    recorder: Arc<Recorder>,
    /// Addresses given out by this process, by Service uid: the watch cache may not show
    /// our own status writes yet. Held across a whole reconcile, so two Services never get
    /// the same address.
    assigned: tokio::sync::Mutex<HashMap<String, Ipv4Addr>>,
}

impl LoadBalancer {
    /// The pool addresses other Services hold.
    fn taken(&self, me: &str, assigned: &HashMap<String, Ipv4Addr>) -> BTreeSet<Ipv4Addr> {
        let mut taken = BTreeSet::new();
        for s in self.services.state() {
            let uid = s.uid().unwrap_or_default();
            if uid == me {
                continue;
            }
            if let Some(ip) = assigned.get(&uid) {
                taken.insert(*ip);
            } else if is_ours(&s) {
                taken.extend(
                    ingress_ips(&s)
                        .into_iter()
                        .filter(|ip| self.pool.contains(*ip)),
                );
            }
        }
        taken
    }

    async fn release(&self, svc: &Service) -> Result<(), Error> {
        let ns = svc.namespace().unwrap_or_default();
        let name = svc.name_any();
        let key = format!("{ns}/{name}");
        let api: Api<Service> = Api::namespaced(self.client.clone(), &ns);
        let ours = ingress_ips(svc).iter().any(|ip| self.pool.contains(*ip));
        let not_lb = svc.spec.as_ref().and_then(|s| s.type_.as_deref()) != Some("LoadBalancer");
        if ours && not_lb {
            let patch = json!({"status": {"loadBalancer": {"ingress": null}}});
            match api
                .patch_status(&name, &PatchParams::default(), &Patch::Merge(patch))
                .await
            {
                Ok(_) => tracing::info!(service = %key, "released load balancer address"),
                Err(kube::Error::Api(s)) if s.is_not_found() => return Ok(()),
                Err(e) => return Err(Error::api("clearing service status", key, e)),
            }
        }
        if svc.annotations().contains_key(LB_NODE_ANNOTATION) {
            let patch = json!({"metadata": {"annotations": {LB_NODE_ANNOTATION: null}}});
            match api
                .patch(&name, &PatchParams::default(), &Patch::Merge(patch))
                .await
            {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.is_not_found() => {}
                Err(e) => return Err(Error::api("annotating service", key, e)),
            }
        }
        Ok(())
    }
}

impl Reconciler for LoadBalancer {
    type Object = Service;
    const NAME: &'static str = "loadbalancer";

    async fn reconcile(&self, svc: Arc<Service>) -> Result<Action, Error> {
        if svc.metadata.deletion_timestamp.is_some() {
            return Ok(Action::await_change());
        }
        self.services_ready.wait().await;
        self.nodes_ready.wait().await;
        let uid = svc.uid().unwrap_or_default();
        let mut assigned = self.assigned.lock().await;
        // Forget Services that are gone.
        let live: BTreeSet<String> = self
            .services
            .state()
            .iter()
            .filter_map(|s| s.uid())
            .collect();
        assigned.retain(|u, _| live.contains(u) || *u == uid);
        if !is_ours(&svc) {
            assigned.remove(&uid);
            self.release(&svc).await?;
            return Ok(Action::await_change());
        }
        let ns = svc.namespace().unwrap_or_default();
        let name = svc.name_any();
        let key = format!("{ns}/{name}");
        let taken = self.taken(&uid, &assigned);
        let current = assigned.get(&uid).copied().or_else(|| {
            ingress_ips(&svc)
                .into_iter()
                .find(|ip| self.pool.contains(*ip))
        });
        let ip = match allocate(self.pool, &taken, requested_ip(&svc), current) {
            Ok(ip) => ip,
            Err(e) => {
                tracing::warn!(service = %key, error = %e, "no load balancer address");
                self.recorder
                    .publish(
                        svc_ref(&svc),
                        events::WARNING,
                        "AllocationFailed",
                        &e.to_string(),
                    )
                    .await;
                return Ok(Action::requeue(RETRY));
            }
        };
        assigned.insert(uid, ip);
        let api: Api<Service> = Api::namespaced(self.client.clone(), &ns);
        let want = ip.to_string();
        let ingress = svc
            .status
            .as_ref()
            .and_then(|s| s.load_balancer.as_ref())
            .and_then(|lb| lb.ingress.as_ref());
        let up_to_date = ingress.is_some_and(|i| {
            i.len() == 1
                && i[0].ip.as_deref() == Some(want.as_str())
                && i[0].ip_mode.as_deref() == Some("VIP")
        });
        if !up_to_date {
            let patch =
                json!({"status": {"loadBalancer": {"ingress": [{"ip": want, "ipMode": "VIP"}]}}});
            match api
                .patch_status(&name, &PatchParams::default(), &Patch::Merge(patch))
                .await
            {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.is_not_found() => return Ok(Action::await_change()),
                Err(e) => return Err(Error::api("writing service status", key, e)),
            }
            tracing::info!(service = %key, %ip, "assigned load balancer address");
            self.recorder
                .publish(
                    svc_ref(&svc),
                    events::NORMAL,
                    "IPAllocated",
                    &format!("Assigned IP [\"{ip}\"]"),
                )
                .await;
        }
        drop(assigned);
        let mut ready: Vec<String> = self
            .nodes
            .state()
            .iter()
            .filter(|n| node_ready(n))
            .map(|n| n.name_any())
            .collect();
        ready.sort();
        let current_node = svc
            .annotations()
            .get(LB_NODE_ANNOTATION)
            .map(String::as_str);
        if let Some(node) = pick_node(&key, &ready, current_node) {
            if current_node != Some(node.as_str()) {
                let patch = json!({"metadata": {"annotations": {LB_NODE_ANNOTATION: node}}});
                match api
                    .patch(&name, &PatchParams::default(), &Patch::Merge(patch))
                    .await
                {
                    Ok(_) => {}
                    Err(kube::Error::Api(s)) if s.is_not_found() => {}
                    Err(e) => return Err(Error::api("annotating service", key, e)),
                }
                tracing::info!(service = %key, %node, %ip, "node announces load balancer address");
            }
        }
        Ok(Action::await_change())
    }
}

/// Runs the LoadBalancer controller over `pool` until `shutdown`.
pub fn run(
    client: Client,
    pool: Pool,
    recorder: Arc<Recorder>,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) -> impl Future<Output = ()> + Send + 'static {
    let (services, services_ready, svc_events) = runner::reflect(
        Api::<Service>::all(client.clone()),
        watcher::Config::default(),
    );
    let (nodes, nodes_ready, node_events) =
        runner::reflect(Api::<Node>::all(client.clone()), watcher::Config::default());
    let svc_store = services.clone();
    // A node changing (Ready or not, coming, going) brings back every LoadBalancer Service.
    let controller = runner::controller(services.clone(), svc_events).watches_stream(
        node_events.touched_objects(),
        move |_node: Node| {
            svc_store
                .state()
                .into_iter()
                .filter(|s| is_ours(s))
                .map(|s| ObjectRef::from_obj(s.as_ref()))
                .collect::<Vec<_>>()
        },
    );
    let reconciler = Arc::new(LoadBalancer {
        client,
        pool,
        services,
        services_ready,
        nodes,
        nodes_ready,
        recorder,
        assigned: tokio::sync::Mutex::new(HashMap::new()),
    });
    runner::run(controller, reconciler, metrics, shutdown)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().expect("ip")
    }

    fn pool() -> Pool {
        Pool::parse("172.29.3.200-172.29.3.202").expect("pool")
    }

    #[test]
    fn pools() {
        let p = pool();
        assert_eq!(p.to_string(), "172.29.3.200-172.29.3.202");
        assert_eq!(p.iter().count(), 3);
        assert!(p.contains(ip("172.29.3.201")));
        assert!(!p.contains(ip("172.29.3.203")));
        assert!(Pool::parse("172.29.3.202-172.29.3.200").is_none());
        assert!(Pool::parse("172.29.3.200").is_none());
        assert!(Pool::parse("a-b").is_none());
    }

    #[test]
    fn allocation() {
        let p = pool();
        let mut taken = BTreeSet::new();
        // First free, in order.
        assert_eq!(allocate(p, &taken, None, None), Ok(ip("172.29.3.200")));
        taken.insert(ip("172.29.3.200"));
        assert_eq!(allocate(p, &taken, None, None), Ok(ip("172.29.3.201")));
        // The current address is kept (stable across restarts).
        assert_eq!(
            allocate(p, &taken, None, Some(ip("172.29.3.202"))),
            Ok(ip("172.29.3.202"))
        );
        // ... unless another holds it or it left the pool.
        assert_eq!(
            allocate(p, &taken, None, Some(ip("172.29.3.200"))),
            Ok(ip("172.29.3.201"))
        );
        assert_eq!(
            allocate(p, &taken, None, Some(ip("10.0.0.1"))),
            Ok(ip("172.29.3.201"))
        );
        // A requested address wins when free and in the pool.
        assert_eq!(
            allocate(
                p,
                &taken,
                Some(ip("172.29.3.202")),
                Some(ip("172.29.3.201"))
            ),
            Ok(ip("172.29.3.202"))
        );
        assert_eq!(
            allocate(p, &taken, Some(ip("172.29.3.200")), None),
            Err(AllocError::Taken(ip("172.29.3.200")))
        );
        assert_eq!(
            allocate(p, &taken, Some(ip("172.29.3.9")), None),
            Err(AllocError::OutsidePool(ip("172.29.3.9"), p))
        );
        // Exhausted, then released.
        taken.insert(ip("172.29.3.201"));
        taken.insert(ip("172.29.3.202"));
        let e = allocate(p, &taken, None, None).expect_err("full");
        assert_eq!(
            e.to_string(),
            "no free address in the pool 172.29.3.200-172.29.3.202"
        );
        taken.remove(&ip("172.29.3.200"));
        assert_eq!(allocate(p, &taken, None, None), Ok(ip("172.29.3.200")));
    }

    #[test]
    fn node_choice() {
        let nodes: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
        let first = pick_node("default/web", &nodes, None).expect("a node");
        // Stable: the same answer every time, whatever the order of the nodes.
        let mut rev = nodes.clone();
        rev.reverse();
        assert_eq!(pick_node("default/web", &rev, None), Some(first.clone()));
        // The current node is kept while Ready.
        let other = nodes.iter().find(|n| **n != first).expect("other");
        assert_eq!(
            pick_node("default/web", &nodes, Some(other)),
            Some(other.clone())
        );
        // A node leaving moves only its own Services.
        let without: Vec<String> = nodes.iter().filter(|n| **n != first).cloned().collect();
        let moved = pick_node("default/web", &without, Some(&first)).expect("moved");
        assert_ne!(moved, first);
        assert_eq!(pick_node("default/web", &[], None), None);
        // Different Services spread over the nodes.
        let picked: BTreeSet<String> = (0..32)
            .filter_map(|i| pick_node(&format!("default/s{i}"), &nodes, None))
            .collect();
        assert!(picked.len() > 1, "{picked:?}");
    }

    #[test]
    fn reads_services() {
        let svc = |v: serde_json::Value| -> Service { serde_json::from_value(v).expect("svc") };
        let lb = svc(json!({
            "metadata": {"name": "s", "namespace": "default"},
            "spec": {"type": "LoadBalancer", "loadBalancerIP": "172.29.3.201"},
            "status": {"loadBalancer": {"ingress": [{"ip": "172.29.3.200", "ipMode": "VIP"}]}},
        }));
        assert!(is_ours(&lb));
        assert_eq!(ingress_ips(&lb), vec![ip("172.29.3.200")]);
        assert_eq!(requested_ip(&lb), Some(ip("172.29.3.201")));
        assert!(is_ours(&svc(
            json!({"spec": {"type": "LoadBalancer", "loadBalancerClass": LB_CLASS}})
        )));
        assert!(!is_ours(&svc(
            json!({"spec": {"type": "LoadBalancer", "loadBalancerClass": "example.com/other"}})
        )));
        assert!(!is_ours(&svc(json!({"spec": {"type": "NodePort"}}))));
        assert_eq!(requested_ip(&svc(json!({"spec": {}}))), None);
        let node = |v: serde_json::Value| -> Node { serde_json::from_value(v).expect("node") };
        assert!(node_ready(&node(
            json!({"status": {"conditions": [{"type": "Ready", "status": "True"}]}})
        )));
        assert!(!node_ready(&node(
            json!({"status": {"conditions": [{"type": "Ready", "status": "Unknown"}]}})
        )));
    }
}

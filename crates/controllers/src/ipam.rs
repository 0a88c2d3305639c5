//! Node IPAM: gives every Node a `spec.podCIDR` (and `spec.podCIDRs`) from the cluster
//! CIDR, as kube-controller-manager's range allocator does.
//!
//! The allocator's state is never stored: before each allocation it is brought in line with
//! the Nodes in the reflector store ([`sync`]): blocks of Nodes that are gone are freed,
//! every Node's podCIDRs are held. So a restarted controller hands out nothing twice, and a
//! Node that has a podCIDR keeps it. A block handed out but not yet seen on its Node stays
//! held by that Node (by uid) until the store catches up.
//!
//! When the cluster CIDR is exhausted the Node gets a `CIDRNotAvailable` Warning event and
//! is tried again after [`Config::cidr_retry`](crate::Config::cidr_retry), or at once when
//! a Node is deleted.

use std::collections::HashSet;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Node;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::Store;
use kube::runtime::watcher;
use kube::{Api, Client, ResourceExt};
use serde_json::json;

use crate::cidr::{CidrAllocator, Ipv4Cidr, Occupied};
use crate::events::{self, Recorder};
use crate::runner::{self, lock, Reconciler};
use crate::{Config, Error, Metrics};

/// The allocator's key for a Node: its uid (a Node deleted and created again under the
/// same name is another owner), or its name if it has none.
pub fn owner(node: &Node) -> String {
    node.uid().unwrap_or_else(|| node.name_any())
}

/// The IPv4 CIDRs a Node has: `spec.podCIDRs`, else `spec.podCIDR`. Others (IPv6, junk)
/// are ignored.
pub fn node_cidrs(node: &Node) -> Vec<Ipv4Cidr> {
    let Some(spec) = &node.spec else {
        return Vec::new();
    };
    let list: Vec<&String> = match &spec.pod_cidrs {
        Some(l) if !l.is_empty() => l.iter().collect(),
        _ => spec.pod_cidr.iter().filter(|s| !s.is_empty()).collect(),
    };
    list.into_iter()
        .filter_map(|s| Ipv4Cidr::parse(s).ok())
        .collect()
}

/// Whether the Node has any pod CIDR at all (also one this allocator cannot parse).
fn has_pod_cidr(node: &Node) -> bool {
    node.spec.as_ref().is_some_and(|s| {
        s.pod_cidr.as_ref().is_some_and(|c| !c.is_empty())
            || s.pod_cidrs.as_ref().is_some_and(|l| !l.is_empty())
    })
}

/// Brings the allocator in line with the Nodes that exist: frees the blocks of Nodes that
/// are gone, makes each Node with podCIDRs hold exactly those. Blocks of Nodes without
/// podCIDRs (handed out, not yet seen on the Node) stay held. Returns the freed blocks and
/// the conflicts (two Nodes claiming one block: the first keeps it), for logging.
pub fn sync(alloc: &mut CidrAllocator, nodes: &[Arc<Node>]) -> Synced {
    let present: HashSet<String> = nodes.iter().map(|n| owner(n)).collect();
    let freed = alloc
        .retain(|o| present.contains(o))
        .into_iter()
        .flat_map(|(_, c)| c)
        .collect();
    let mut conflicts = Vec::new();
    for n in nodes {
        if !has_pod_cidr(n) {
            continue;
        }
        for c in alloc.hold_exactly(&owner(n), &node_cidrs(n)) {
            if let Occupied::Conflict { holder } = c {
                conflicts.push((n.name_any(), holder));
            }
        }
    }
    Synced { freed, conflicts }
}

/// What [`sync`] changed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Synced {
    /// Blocks freed because their Node is gone.
    pub freed: Vec<Ipv4Cidr>,
    /// (node, owner that holds its block).
    pub conflicts: Vec<(String, String)>,
}

/// The Node IPAM reconciler.
pub struct NodeIpam {
    api: Api<Node>,
    nodes: Store<Node>,
    alloc: Mutex<CidrAllocator>,
    recorder: Arc<Recorder>,
    metrics: Arc<Metrics>,
    retry: Duration,
}

impl NodeIpam {
    fn sync_locked(&self, alloc: &mut CidrAllocator) {
        let s = sync(alloc, &self.nodes.state());
        for c in &s.freed {
            tracing::info!(cidr = %c, "released pod CIDR of a deleted node");
        }
        for (node, holder) in &s.conflicts {
            tracing::warn!(node, holder, "node's pod CIDR is also held by another node");
        }
        self.metrics
            .set("kins_node_ipam_cidrs_used", &[], alloc.used() as f64);
        self.metrics.set(
            "kins_node_ipam_cidrs_total",
            &[],
            f64::from(alloc.capacity()),
        );
    }
}

impl Reconciler for NodeIpam {
    type Object = Node;
    const NAME: &'static str = "node-ipam";

    async fn reconcile(&self, node: Arc<Node>) -> Result<Action, Error> {
        // The controller runs reconciles only once its store is complete, so every
        // existing podCIDR is known before anything is handed out.
        let name = node.name_any();
        if has_pod_cidr(&node) || node.metadata.deletion_timestamp.is_some() {
            // Keeps the allocator (and its metrics) current as Nodes come and go.
            self.sync_locked(&mut lock(&self.alloc));
            return Ok(Action::await_change());
        }
        let me = owner(&node);
        let cidr = {
            let mut alloc = lock(&self.alloc);
            self.sync_locked(&mut alloc);
            let c = alloc.allocate(&me);
            self.metrics
                .set("kins_node_ipam_cidrs_used", &[], alloc.used() as f64);
            c
        };
        let Some(cidr) = cidr else {
            tracing::warn!(node = %name, "no pod CIDR available: the cluster CIDR is exhausted");
            self.metrics
                .inc("kins_node_ipam_cidr_not_available_total", &[]);
            self.recorder
                .publish(
                    events::node_ref(&node),
                    events::WARNING,
                    "CIDRNotAvailable",
                    &format!("Node {name} status is now: CIDRNotAvailable"),
                )
                .await;
            return Ok(Action::requeue(self.retry));
        };
        let c = cidr.to_string();
        let patch = json!({"spec": {"podCIDR": c, "podCIDRs": [c]}});
        match self
            .api
            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {
                tracing::info!(node = %name, cidr = %c, "assigned pod CIDR");
                Ok(Action::await_change())
            }
            Err(kube::Error::Api(s)) if s.is_not_found() => {
                lock(&self.alloc).release(&me);
                Ok(Action::await_change())
            }
            // The block stays held by this Node: the retry hands out the same one, and a
            // patch that did land is not handed out again.
            Err(e) => Err(Error::api("setting the pod CIDR of node", name, e)),
        }
    }
}

/// Runs the Node IPAM controller until `shutdown`.
pub fn run(
    client: Client,
    config: &Config,
    recorder: Arc<Recorder>,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) -> Result<impl Future<Output = ()> + Send + 'static, Error> {
    let alloc = CidrAllocator::new(config.cluster_cidr, config.node_cidr_mask_size)?;
    let api: Api<Node> = Api::all(client);
    let (nodes, _, events) = runner::reflect(api.clone(), watcher::Config::default());
    // A deleted Node frees its block: retry the Nodes still waiting for one.
    let (deleted_tx, deleted_rx) = futures::channel::mpsc::unbounded::<()>();
    let events = events.inspect_ok(move |ev| {
        if matches!(ev, watcher::Event::Delete(_)) {
            let _ = deleted_tx.unbounded_send(());
        }
    });
    let controller =
        runner::controller(nodes.clone(), events).reconcile_all_on(deleted_rx.map(|_| ()));
    let reconciler = Arc::new(NodeIpam {
        api,
        nodes,
        alloc: Mutex::new(alloc),
        recorder,
        metrics: metrics.clone(),
        retry: config.cidr_retry,
    });
    Ok(runner::run(controller, reconciler, metrics, shutdown))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn node(name: &str, uid: &str, cidrs: &[&str]) -> Arc<Node> {
        let mut v = json!({"metadata": {"name": name, "uid": uid}, "spec": {}});
        if let Some(first) = cidrs.first() {
            v["spec"]["podCIDR"] = Value::from(*first);
            v["spec"]["podCIDRs"] = json!(cidrs);
        }
        Arc::new(serde_json::from_value(v).expect("test node"))
    }

    fn cidr(s: &str) -> Ipv4Cidr {
        Ipv4Cidr::parse(s).expect("test CIDR")
    }

    fn alloc() -> CidrAllocator {
        CidrAllocator::new(cidr("10.244.0.0/16"), 24).expect("valid")
    }

    #[test]
    fn reads_pod_cidrs() {
        assert_eq!(node_cidrs(&node("a", "1", &[])), vec![]);
        assert_eq!(
            node_cidrs(&node("a", "1", &["10.244.3.0/24", "fd00::/64"])),
            vec![cidr("10.244.3.0/24")]
        );
        let only_old: Node = serde_json::from_value(
            json!({"metadata": {"name": "a"}, "spec": {"podCIDR": "10.244.9.0/24"}}),
        )
        .expect("test node");
        assert_eq!(node_cidrs(&only_old), vec![cidr("10.244.9.0/24")]);
        assert_eq!(owner(&only_old), "a");
    }

    #[test]
    fn restart_keeps_existing_cidrs() {
        // A fresh allocator (a restarted controller) sees two Nodes with CIDRs and one
        // without: the new one gets a block neither of the others has.
        let mut a = alloc();
        let nodes = vec![
            node("a", "1", &["10.244.0.0/24"]),
            node("b", "2", &["10.244.1.0/24"]),
            node("c", "3", &[]),
        ];
        assert_eq!(sync(&mut a, &nodes), Synced::default());
        assert_eq!(a.allocate("3"), Some(cidr("10.244.2.0/24")));
        // The store has not seen c's CIDR yet: c keeps its block across syncs.
        assert_eq!(sync(&mut a, &nodes), Synced::default());
        assert_eq!(a.allocate("4"), Some(cidr("10.244.3.0/24")));
    }

    #[test]
    fn deleted_nodes_release() {
        let mut a = alloc();
        let both = vec![
            node("a", "1", &["10.244.0.0/24"]),
            node("b", "2", &["10.244.1.0/24"]),
        ];
        sync(&mut a, &both);
        let s = sync(&mut a, &both[1..]);
        assert_eq!(s.freed, vec![cidr("10.244.0.0/24")]);
        assert_eq!(a.used(), 1);
        // Same name, new uid: the old one's block is freed.
        let s = sync(&mut a, &[node("b", "9", &[])]);
        assert_eq!(s.freed, vec![cidr("10.244.1.0/24")]);
    }

    #[test]
    fn conflicting_nodes_are_reported() {
        let mut a = alloc();
        let s = sync(
            &mut a,
            &[
                node("a", "1", &["10.244.0.0/24"]),
                node("b", "2", &["10.244.0.0/24"]),
            ],
        );
        assert_eq!(s.conflicts, vec![("b".to_string(), "1".to_string())]);
    }
}

//! Node lifecycle: notices nodes whose agent stopped heartbeating, as
//! kube-controller-manager's node lifecycle controller does.
//!
//! Agents heartbeat by renewing their Lease in `kube-node-lease` (name = node name) and by
//! posting Node status. A node is *stale* when neither the Lease's `renewTime` nor the Ready
//! condition's `lastHeartbeatTime` changed for longer than the grace period, measured on this
//! process's clock from when the change was seen (so clock skew between hosts does not
//! matter, and a restarted controller gives every node a full grace period). A stale node's
//! Ready, MemoryPressure, DiskPressure and PIDPressure conditions become `Unknown`
//! (reason `NodeStatusUnknown`, through `nodes/status`).
//!
//! Taints follow the Ready condition (Kubernetes' TaintNodesByCondition and taint-based
//! eviction taints): `Unknown` → `node.kubernetes.io/unreachable` with effects NoSchedule
//! and NoExecute; `False` → `node.kubernetes.io/not-ready` likewise; `True` → neither. So when
//! the agent posts Ready=True again (with a fresh Lease) the taints go away.
//!
//! Like Kubernetes, marking a node Unknown also records a `NodeNotReady` event and sets
//! `Ready=False` on the pods bound to it (so endpoints stop sending them traffic).

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, NodeCondition, Pod, Taint};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client, ResourceExt};
use serde_json::{json, Value};

use crate::events::{self, Recorder};
use crate::podgc::is_terminal;
use crate::runner::{self, lock, to_value, Ready, Reconciler};
use crate::{Config, Error, Metrics};

/// Namespace of the node Leases.
pub const LEASE_NAMESPACE: &str = "kube-node-lease";
/// Taint of nodes whose Ready condition is Unknown.
pub const TAINT_UNREACHABLE: &str = "node.kubernetes.io/unreachable";
/// Taint of nodes whose Ready condition is False.
pub const TAINT_NOT_READY: &str = "node.kubernetes.io/not-ready";
/// Reason of conditions set Unknown because the node stopped posting status.
pub const REASON_UNKNOWN: &str = "NodeStatusUnknown";
/// Reason of conditions set Unknown because the node never posted them.
pub const REASON_NEVER_UPDATED: &str = "NodeStatusNeverUpdated";
/// The conditions a stale node gets as Unknown.
pub const CONDITIONS: [&str; 4] = ["Ready", "MemoryPressure", "DiskPressure", "PIDPressure"];

/// A node's condition of the given type.
pub fn condition<'a>(node: &'a Node, type_: &str) -> Option<&'a NodeCondition> {
    node.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_)
}

/// The status of a node's Ready condition ("True", "False", "Unknown"), if it has one.
pub fn ready_status(node: &Node) -> Option<&str> {
    condition(node, "Ready").map(|c| c.status.as_str())
}

/// The conditions of a node that stopped posting status: Ready and the pressure conditions
/// `Unknown`, others as they were. `None` when they already are.
pub fn unknown_conditions(node: &Node, now: Timestamp) -> Option<Vec<NodeCondition>> {
    let mut conds = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default();
    let mut changed = false;
    for type_ in CONDITIONS {
        match conds.iter_mut().find(|c| c.type_ == type_) {
            Some(c) if c.status == "Unknown" => {}
            Some(c) => {
                c.status = "Unknown".into();
                c.reason = Some(REASON_UNKNOWN.into());
                c.message = Some("Kubelet stopped posting node status.".into());
                c.last_transition_time = Some(Time(now));
                changed = true;
            }
            None => {
                conds.push(NodeCondition {
                    type_: type_.into(),
                    status: "Unknown".into(),
                    reason: Some(REASON_NEVER_UPDATED.into()),
                    message: Some("Kubelet never posted node status.".into()),
                    last_heartbeat_time: node.metadata.creation_timestamp.clone(),
                    last_transition_time: Some(Time(now)),
                });
                changed = true;
            }
        }
    }
    changed.then_some(conds)
}

/// The taints a node should have for its Ready condition: its other taints unchanged, the
/// unreachable / not-ready ones added (NoExecute ones stamped `timeAdded`) or removed.
/// `None` when they are right already, or the node has no Ready condition yet.
pub fn desired_taints(node: &Node, now: Timestamp) -> Option<Vec<Taint>> {
    let want: &[(&str, &str)] = match ready_status(node)? {
        "True" => &[],
        "False" => &[
            (TAINT_NOT_READY, "NoSchedule"),
            (TAINT_NOT_READY, "NoExecute"),
        ],
        _ => &[
            (TAINT_UNREACHABLE, "NoSchedule"),
            (TAINT_UNREACHABLE, "NoExecute"),
        ],
    };
    let current = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default();
    let managed = |t: &Taint| t.key == TAINT_UNREACHABLE || t.key == TAINT_NOT_READY;
    let mut out: Vec<Taint> = current
        .iter()
        .filter(|t| !managed(t) || want.contains(&(t.key.as_str(), t.effect.as_str())))
        .cloned()
        .collect();
    let mut changed = out.len() != current.len();
    for (key, effect) in want {
        if !out.iter().any(|t| t.key == *key && t.effect == *effect) {
            out.push(Taint {
                key: (*key).into(),
                effect: (*effect).into(),
                time_added: (*effect == "NoExecute").then_some(Time(now)),
                value: None,
            });
            changed = true;
        }
    }
    changed.then_some(out)
}

/// When each node's heartbeats were last seen changing, on this process's clock.
#[derive(Debug, Default)]
pub struct Health {
    seen: HashMap<String, Probe>,
}

#[derive(Debug)]
struct Probe {
    renew: Option<Timestamp>,
    heartbeat: Option<Timestamp>,
    at: Instant,
}

impl Health {
    /// Records the node's Lease `renewTime` and Ready `lastHeartbeatTime` as seen at `now`
    /// (`None`: nothing to say); returns how long ago either last changed. A node seen for
    /// the first time changed just now.
    pub fn observe(
        &mut self,
        node: &str,
        renew: Option<Timestamp>,
        heartbeat: Option<Timestamp>,
        now: Instant,
    ) -> Duration {
        let p = self.seen.entry(node.to_string()).or_insert(Probe {
            renew,
            heartbeat,
            at: now,
        });
        let fresh = (renew.is_some() && renew != p.renew)
            || (heartbeat.is_some() && heartbeat != p.heartbeat);
        if fresh {
            p.renew = renew.or(p.renew);
            p.heartbeat = heartbeat.or(p.heartbeat);
            p.at = now;
        }
        now.saturating_duration_since(p.at)
    }

    /// Forgets nodes for which `keep` is false.
    pub fn retain(&mut self, mut keep: impl FnMut(&str) -> bool) {
        self.seen.retain(|k, _| keep(k));
    }

    /// How many nodes are tracked.
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    /// Whether no node is tracked.
    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }
}

/// The Ready heartbeat the agent posted, not one this controller wrote.
fn agent_heartbeat(node: &Node) -> Option<Timestamp> {
    let c = condition(node, "Ready")?;
    if matches!(
        c.reason.as_deref(),
        Some(REASON_UNKNOWN | REASON_NEVER_UPDATED)
    ) {
        return None;
    }
    c.last_heartbeat_time.as_ref().map(|t| t.0)
}

/// The node lifecycle reconciler.
pub struct NodeLifecycle {
    client: Client,
    recorder: Arc<Recorder>,
    api: Api<Node>,
    nodes: Store<Node>,
    leases: Store<Lease>,
    leases_ready: Ready,
    health: Mutex<Health>,
    grace: Duration,
    metrics: Arc<Metrics>,
}

impl NodeLifecycle {
    /// Sets Ready=False on the pods of an unreachable node, as Kubernetes does, so that
    /// endpoints stop sending them traffic.
    async fn mark_pods_not_ready(&self, node: &str) -> Result<(), Error> {
        let all: Api<Pod> = Api::all(self.client.clone());
        let pods = all
            .list(&ListParams::default().fields(&format!("spec.nodeName={node}")))
            .await
            .map_err(|e| Error::api("listing the pods of node", node, e))?;
        for pod in pods.items {
            let ready = pod
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
            if !ready || is_terminal(&pod) {
                continue;
            }
            let ns = pod.namespace().unwrap_or_default();
            let name = pod.name_any();
            let patch = json!({"status": {"conditions": [
                {"type": "Ready", "status": "False", "lastTransitionTime": Time(Timestamp::now())},
            ]}});
            match Api::<Pod>::namespaced(self.client.clone(), &ns)
                .patch_status(&name, &PatchParams::default(), &Patch::Strategic(patch))
                .await
            {
                Ok(_) => {
                    tracing::info!(pod = %format!("{ns}/{name}"), node, "pod marked not ready: its node is unreachable")
                }
                Err(kube::Error::Api(s)) if s.is_not_found() => {}
                Err(e) => {
                    return Err(Error::api(
                        "marking pod not ready",
                        format!("{ns}/{name}"),
                        e,
                    ))
                }
            }
        }
        Ok(())
    }
}

impl Reconciler for NodeLifecycle {
    type Object = Node;
    const NAME: &'static str = "node-lifecycle";

    async fn reconcile(&self, node: Arc<Node>) -> Result<Action, Error> {
        self.leases_ready.wait().await;
        let name = node.name_any();
        let lease = self
            .leases
            .get(&ObjectRef::new(&name).within(LEASE_NAMESPACE));
        let renew = lease
            .as_ref()
            .and_then(|l| l.spec.as_ref())
            .and_then(|s| s.renew_time.as_ref())
            .map(|t| t.0);
        let since = {
            let mut health = lock(&self.health);
            let since = health.observe(&name, renew, agent_heartbeat(&node), Instant::now());
            if health.len() > self.nodes.state().len() + 16 {
                let present: std::collections::HashSet<String> =
                    self.nodes.state().iter().map(|n| n.name_any()).collect();
                health.retain(|n| present.contains(n));
            }
            since
        };
        let stale = since > self.grace;
        let now = Timestamp::now();
        let mut current: Node = (*node).clone();
        if stale {
            if let Some(conds) = unknown_conditions(&current, now) {
                let patch = json!({
                    "metadata": {"resourceVersion": current.resource_version()},
                    "status": {"conditions": to_value(&conds)},
                });
                current = self
                    .api
                    .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                    .map_err(|e| Error::api("marking node Unknown", name.clone(), e))?;
                self.metrics
                    .inc("kins_node_lifecycle_transitions_total", &[]);
                tracing::warn!(node = %name, silent_for = ?since, "node stopped posting status: Ready=Unknown");
                self.recorder
                    .publish(
                        events::node_ref(&current),
                        events::NORMAL,
                        "NodeNotReady",
                        &format!("Node {name} status is now: NodeNotReady"),
                    )
                    .await;
            }
            if ready_status(&current) == Some("Unknown") {
                self.mark_pods_not_ready(&name).await?;
            }
        }
        if let Some(taints) = desired_taints(&current, now) {
            let taints = if taints.is_empty() {
                Value::Null
            } else {
                to_value(&taints)
            };
            let patch = json!({
                "metadata": {"resourceVersion": current.resource_version()},
                "spec": {"taints": taints},
            });
            self.api
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map_err(|e| Error::api("updating the taints of node", name.clone(), e))?;
            self.metrics
                .inc("kins_node_lifecycle_taint_changes_total", &[]);
            tracing::info!(node = %name, ready = ?ready_status(&current), "node taints updated");
        }
        Ok(Action::requeue(if stale {
            self.grace
        } else {
            self.grace.saturating_sub(since) + Duration::from_millis(100)
        }))
    }
}

/// Runs the node lifecycle controller until `shutdown`.
pub fn run(
    client: Client,
    config: &Config,
    recorder: Arc<Recorder>,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) -> impl Future<Output = ()> + Send + 'static {
    let api: Api<Node> = Api::all(client.clone());
    let (nodes, _, node_events) = runner::reflect(api.clone(), watcher::Config::default());
    let (leases, leases_ready, lease_events) = runner::reflect(
        Api::<Lease>::namespaced(client.clone(), LEASE_NAMESPACE),
        watcher::Config::default(),
    );
    let controller = runner::controller(nodes.clone(), node_events)
        .watches_stream(lease_events.touched_objects(), |lease: Lease| {
            Some(ObjectRef::<Node>::new(&lease.name_any()))
        });
    let reconciler = Arc::new(NodeLifecycle {
        client,
        recorder,
        api,
        nodes,
        leases,
        leases_ready,
        health: Mutex::new(Health::default()),
        grace: config.node_monitor_grace_period,
        metrics: metrics.clone(),
    });
    runner::run(controller, reconciler, metrics, shutdown)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().expect("test timestamp")
    }

    const NOW: &str = "2025-01-02T03:04:05Z";

    fn node(conditions: Value, taints: Value) -> Node {
        serde_json::from_value(json!({
            "metadata": {"name": "n1", "creationTimestamp": "2025-01-01T00:00:00Z"},
            "spec": {"taints": taints},
            "status": {"conditions": conditions},
        }))
        .expect("test node")
    }

    fn cond(type_: &str, status: &str) -> Value {
        json!({"type": type_, "status": status, "reason": "KubeletReady", "message": "ok",
               "lastHeartbeatTime": "2025-01-02T03:00:00Z", "lastTransitionTime": "2025-01-01T00:00:00Z"})
    }

    /// The conditions as `type=status/reason`.
    fn summary(conds: &[NodeCondition]) -> Vec<String> {
        conds
            .iter()
            .map(|c| {
                format!(
                    "{}={}/{}",
                    c.type_,
                    c.status,
                    c.reason.clone().unwrap_or_default()
                )
            })
            .collect()
    }

    #[test]
    fn stale_conditions_become_unknown() {
        let n = node(
            json!([
                cond("Ready", "True"),
                cond("MemoryPressure", "False"),
                cond("NetworkUnavailable", "False")
            ]),
            Value::Null,
        );
        let got = unknown_conditions(&n, ts(NOW)).expect("changes");
        assert_eq!(
            summary(&got),
            [
                "Ready=Unknown/NodeStatusUnknown",
                "MemoryPressure=Unknown/NodeStatusUnknown",
                "NetworkUnavailable=False/KubeletReady",
                "DiskPressure=Unknown/NodeStatusNeverUpdated",
                "PIDPressure=Unknown/NodeStatusNeverUpdated",
            ]
        );
        let ready = &got[0];
        assert_eq!(
            ready.message.as_deref(),
            Some("Kubelet stopped posting node status.")
        );
        assert_eq!(ready.last_transition_time, Some(Time(ts(NOW))));
        // The heartbeat stays the last one the agent posted.
        assert_eq!(
            ready.last_heartbeat_time,
            Some(Time(ts("2025-01-02T03:00:00Z")))
        );
        assert_eq!(
            got[3].message.as_deref(),
            Some("Kubelet never posted node status.")
        );
        assert_eq!(
            got[3].last_heartbeat_time,
            Some(Time(ts("2025-01-01T00:00:00Z")))
        );
        // Idempotent.
        let again = node(serde_json::to_value(&got).expect("json"), Value::Null);
        assert_eq!(unknown_conditions(&again, ts(NOW)), None);
    }

    /// The taints as `key:effect` (`+t` when timeAdded is set).
    fn taints(ready: Option<&str>, existing: Value) -> Option<Vec<String>> {
        let conds = match ready {
            Some(s) => json!([cond("Ready", s)]),
            None => json!([]),
        };
        desired_taints(&node(conds, existing), ts(NOW)).map(|ts| {
            ts.iter()
                .map(|t| {
                    format!(
                        "{}:{}{}",
                        t.key,
                        t.effect,
                        if t.time_added.is_some() { "+t" } else { "" }
                    )
                })
                .collect()
        })
    }

    #[test]
    fn taints_follow_ready() {
        let unreachable = json!([
            {"key": TAINT_UNREACHABLE, "effect": "NoSchedule"},
            {"key": TAINT_UNREACHABLE, "effect": "NoExecute", "timeAdded": "2025-01-02T03:00:00Z"},
        ]);
        let user = json!([{"key": "dedicated", "value": "db", "effect": "NoSchedule"}]);
        type Case<'a> = (Option<&'a str>, Value, Option<Vec<&'a str>>);
        let cases: Vec<Case> = vec![
            (Some("True"), Value::Null, None),
            (None, Value::Null, None),
            (
                Some("Unknown"),
                Value::Null,
                Some(vec![
                    "node.kubernetes.io/unreachable:NoSchedule",
                    "node.kubernetes.io/unreachable:NoExecute+t",
                ]),
            ),
            (Some("Unknown"), unreachable.clone(), None),
            (Some("True"), unreachable.clone(), Some(vec![])),
            (
                Some("False"),
                unreachable.clone(),
                Some(vec![
                    "node.kubernetes.io/not-ready:NoSchedule",
                    "node.kubernetes.io/not-ready:NoExecute+t",
                ]),
            ),
            (Some("True"), user.clone(), None),
            (
                Some("Unknown"),
                user,
                Some(vec![
                    "dedicated:NoSchedule",
                    "node.kubernetes.io/unreachable:NoSchedule",
                    "node.kubernetes.io/unreachable:NoExecute+t",
                ]),
            ),
        ];
        for (ready, existing, want) in cases {
            let want = want.map(|w| w.into_iter().map(String::from).collect::<Vec<_>>());
            assert_eq!(
                taints(ready, existing.clone()),
                want,
                "{ready:?} {existing}"
            );
        }
    }

    #[test]
    fn health_measures_silence() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut h = Health::default();
        let r1 = Some(ts("2025-01-01T00:00:00Z"));
        let r2 = Some(ts("2025-01-01T00:00:10Z"));
        assert_eq!(h.observe("n", r1, None, t0), s(0));
        assert_eq!(h.observe("n", r1, None, t0 + s(30)), s(30));
        assert_eq!(h.observe("n", None, None, t0 + s(35)), s(35));
        assert_eq!(h.observe("n", r2, None, t0 + s(50)), s(0));
        // A status heartbeat counts too.
        assert_eq!(h.observe("n", r2, r1, t0 + s(60)), s(0));
        assert_eq!(h.observe("n", r2, r1, t0 + s(70)), s(10));
        h.retain(|n| n != "n");
        assert!(h.is_empty());
    }
}

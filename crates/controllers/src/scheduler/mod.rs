//! The scheduler: binds each pending pod (no `spec.nodeName`, `schedulerName`
//! default-scheduler, not being deleted, not finished, no scheduling gates) to a node
//! through `pods/NAME/binding`, as kube-scheduler does. Pods with a nodeName are never
//! touched.
//!
//! Decisions are made one pod at a time, from the watch caches of pods and nodes plus the
//! pods this process bound but has not yet seen bound in its cache ("assumed" pods, as in
//! kube-scheduler), so a burst of pods spreads evenly.
//!
//! A pod no node fits stays Pending with the condition `PodScheduled=False`, reason
//! `Unschedulable` and Kubernetes' message (through `pods/status`), and a FailedScheduling
//! Warning event. It is tried again when a node changes in a way that matters (labels,
//! taints, readiness, podCIDR, cordon, capacity), when a bound pod goes away, and every
//! [`Config::unschedulable_retry`](crate::Config::unschedulable_retry).

pub mod predicates;

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::future::Future;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Node, Pod, PodCondition};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{watcher, PredicateConfig, WatchStreamExt};
use kube::{Api, Client, ResourceExt};
use serde_json::{json, Value};

use crate::events::{self, Recorder};
use crate::podgc::{is_terminal, node_name};
use crate::runner::{self, lock, Ready, Reconciler};
use crate::{Config, Error, Metrics, SCHEDULER_NAME};

/// How long a pod this process bound counts on its node without the cache showing it
/// bound (a binding whose watch event never came is forgotten after this).
const ASSUME_TTL: Duration = Duration::from_secs(30);

/// Whether the scheduler should place this pod.
pub fn wants_scheduling(pod: &Pod) -> bool {
    let Some(spec) = &pod.spec else {
        return false;
    };
    node_name(pod).is_none()
        && spec
            .scheduler_name
            .as_deref()
            .is_none_or(|s| s.is_empty() || s == SCHEDULER_NAME)
        && pod.metadata.deletion_timestamp.is_none()
        && !is_terminal(pod)
        && spec.scheduling_gates.as_ref().is_none_or(|g| g.is_empty())
}

/// The pod's PodScheduled condition.
fn scheduled_condition(pod: &Pod) -> Option<&PodCondition> {
    pod.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "PodScheduled")
}

/// What about a node matters to scheduling: a node update that changes none of it (a
/// heartbeat) does not wake pending pods.
pub fn node_fingerprint(node: &Node) -> Option<u64> {
    let mut h = DefaultHasher::new();
    node.metadata.labels.hash(&mut h);
    if let Some(spec) = &node.spec {
        spec.unschedulable.hash(&mut h);
        spec.pod_cidr.hash(&mut h);
        spec.pod_cidrs.hash(&mut h);
        for t in spec.taints.iter().flatten() {
            (&t.key, &t.value, &t.effect).hash(&mut h);
        }
    }
    predicates::is_ready(node).hash(&mut h);
    predicates::allocatable_pods(node).hash(&mut h);
    Some(h.finish())
}

#[derive(Debug)]
struct Assumed {
    pod: ObjectRef<Pod>,
    uid: String,
    node: String,
    at: Instant,
}

/// The scheduler reconciler.
pub struct Scheduler {
    client: Client,
    pods: Store<Pod>,
    nodes: Store<Node>,
    nodes_ready: Ready,
    /// One decision at a time.
    decide: tokio::sync::Mutex<()>,
    /// Pods bound by us, by uid, until the cache shows them bound.
    assumed: Mutex<HashMap<String, Assumed>>,
    /// Last FailedScheduling event per pod uid: (message, when).
    last_event: Mutex<HashMap<String, (String, Instant)>>,
    recorder: Arc<Recorder>,
    metrics: Arc<Metrics>,
    retry: Duration,
}

impl Scheduler {
    /// How many pods each node runs: bound, unfinished pods in the cache plus assumed ones.
    fn pods_per_node(&self) -> HashMap<String, usize> {
        let mut counts: HashMap<String, usize> = HashMap::new();
        for p in self.pods.state() {
            if let Some(n) = node_name(&p) {
                if !is_terminal(&p) {
                    *counts.entry(n.to_string()).or_default() += 1;
                }
            }
        }
        let mut assumed = lock(&self.assumed);
        assumed.retain(|_, a| {
            let cached = self.pods.get(&a.pod);
            let still_pending = cached.as_ref().is_some_and(|p| {
                p.uid().as_deref() == Some(a.uid.as_str()) && node_name(p).is_none()
            });
            still_pending && a.at.elapsed() < ASSUME_TTL
        });
        for a in assumed.values() {
            *counts.entry(a.node.clone()).or_default() += 1;
        }
        counts
    }

    async fn bind(&self, pod: &Pod, node: &str) -> Result<Action, Error> {
        let ns = pod.namespace().unwrap_or_default();
        let name = pod.name_any();
        let key = format!("{ns}/{name}");
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &ns);
        let binding = json!({
            "apiVersion": "v1",
            "kind": "Binding",
            "metadata": {"name": name, "namespace": ns, "uid": pod.uid()},
            "target": {"apiVersion": "v1", "kind": "Node", "name": node},
        });
        match api
            .create_subresource::<Value, Value>("binding", &name, &PostParams::default(), &binding)
            .await
        {
            // The pod's next watch event (bound) brings it back to set PodScheduled=True.
            Ok(_) => {}
            // Bound meanwhile, being deleted, or gone: nothing to do.
            Err(kube::Error::Api(s)) if s.code == 409 || s.is_not_found() => {
                tracing::debug!(pod = %key, reason = %s.message, "not bound");
                return Ok(Action::await_change());
            }
            Err(e) => {
                self.metrics
                    .inc("kins_scheduler_attempts_total", &[("result", "error")]);
                return Err(Error::api("binding pod", key, e));
            }
        }
        if let Some(uid) = pod.uid() {
            lock(&self.assumed).insert(
                uid.clone(),
                Assumed {
                    pod: ObjectRef::from_obj(pod),
                    uid: uid.clone(),
                    node: node.to_string(),
                    at: Instant::now(),
                },
            );
            lock(&self.last_event).remove(&uid);
        }
        self.metrics
            .inc("kins_scheduler_attempts_total", &[("result", "scheduled")]);
        tracing::info!(pod = %key, node, "bound pod to node");
        self.recorder
            .publish(
                events::pod_ref(pod),
                events::NORMAL,
                "Scheduled",
                &format!("Successfully assigned {key} to {node}"),
            )
            .await;
        Ok(Action::await_change())
    }

    /// Sets PodScheduled=True on a bound pod that still says Unschedulable (the binding
    /// subresource of kins' API server does not set the condition, Kubernetes' does).
    async fn mark_scheduled(&self, pod: &Pod) -> Result<(), Error> {
        let ns = pod.namespace().unwrap_or_default();
        let name = pod.name_any();
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &ns);
        let patch = json!({"status": {"conditions": [{
            "type": "PodScheduled", "status": "True", "reason": null, "message": null,
            "lastProbeTime": null, "lastTransitionTime": Time(Timestamp::now()),
        }]}});
        match api
            .patch_status(&name, &PatchParams::default(), &Patch::Strategic(patch))
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.is_not_found() => Ok(()),
            Err(e) => Err(Error::api(
                "setting PodScheduled of pod",
                format!("{ns}/{name}"),
                e,
            )),
        }
    }

    async fn unschedulable(&self, pod: &Pod, fit: predicates::FitError) -> Result<Action, Error> {
        let ns = pod.namespace().unwrap_or_default();
        let name = pod.name_any();
        let key = format!("{ns}/{name}");
        let message = fit.to_string();
        self.metrics.inc(
            "kins_scheduler_attempts_total",
            &[("result", "unschedulable")],
        );
        let current = scheduled_condition(pod);
        let same = current.is_some_and(|c| {
            c.status == "False"
                && c.reason.as_deref() == Some("Unschedulable")
                && c.message.as_deref() == Some(message.as_str())
        });
        if !same {
            let api: Api<Pod> = Api::namespaced(self.client.clone(), &ns);
            let transition = match current {
                Some(c) if c.status == "False" => c.last_transition_time.clone(),
                _ => None,
            }
            .unwrap_or(Time(Timestamp::now()));
            let patch = json!({"status": {"conditions": [{
                "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                "message": message, "lastProbeTime": null, "lastTransitionTime": transition,
            }]}});
            match api
                .patch_status(&name, &PatchParams::default(), &Patch::Strategic(patch))
                .await
            {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.is_not_found() => return Ok(Action::await_change()),
                Err(e) => return Err(Error::api("setting PodScheduled of pod", key, e)),
            }
            tracing::info!(pod = %key, reason = %message, "pod is unschedulable");
        }
        // An event per attempt, but not for the attempts our own status write triggers.
        let uid = pod.uid().unwrap_or_default();
        let due = lock(&self.last_event).get(&uid).is_none_or(|(m, at)| {
            *m != message || at.elapsed() + Duration::from_millis(500) >= self.retry
        });
        if due {
            {
                let mut last = lock(&self.last_event);
                if last.len() > 4096 {
                    // Forget pods that are gone (deleted while pending).
                    let present: std::collections::HashSet<String> =
                        self.pods.state().iter().filter_map(|p| p.uid()).collect();
                    last.retain(|uid, _| present.contains(uid));
                }
                last.insert(uid, (message.clone(), Instant::now()));
            }
            self.recorder
                .publish(
                    events::pod_ref(pod),
                    events::WARNING,
                    "FailedScheduling",
                    &message,
                )
                .await;
        }
        Ok(Action::requeue(self.retry))
    }
}

impl Reconciler for Scheduler {
    type Object = Pod;
    const NAME: &'static str = "scheduler";

    async fn reconcile(&self, pod: Arc<Pod>) -> Result<Action, Error> {
        if node_name(&pod).is_some() {
            let stale = scheduled_condition(&pod).is_some_and(|c| {
                c.status == "False" && c.reason.as_deref() == Some("Unschedulable")
            });
            if stale {
                self.mark_scheduled(&pod).await?;
            }
            return Ok(Action::await_change());
        }
        if !wants_scheduling(&pod) {
            return Ok(Action::await_change());
        }
        // The pod store is complete (the controller waits for it); the node store may not be.
        self.nodes_ready.wait().await;
        let _one_at_a_time = self.decide.lock().await;
        // The newest cached state, now that it is our turn.
        let Some(pod) = self.pods.get(&ObjectRef::from_obj(pod.as_ref())) else {
            return Ok(Action::await_change());
        };
        if !wants_scheduling(&pod) {
            return Ok(Action::await_change());
        }
        let counts = self.pods_per_node();
        if pod
            .uid()
            .is_some_and(|u| lock(&self.assumed).contains_key(&u))
        {
            return Ok(Action::await_change());
        }
        let nodes = self.nodes.state();
        // Host ports held per node: only when this pod asks for some (the common case
        // costs nothing).
        let mut ports: HashMap<String, Vec<predicates::HostPort>> = HashMap::new();
        if !predicates::host_ports(&pod).is_empty() {
            for p in self.pods.state() {
                if let Some(n) = node_name(&p).filter(|_| !is_terminal(&p)) {
                    ports
                        .entry(n.to_string())
                        .or_default()
                        .extend(predicates::host_ports(&p));
                }
            }
            for a in lock(&self.assumed).values() {
                if let Some(p) = self.pods.get(&a.pod) {
                    ports
                        .entry(a.node.clone())
                        .or_default()
                        .extend(predicates::host_ports(&p));
                }
            }
        }
        let views: Vec<(&Node, usize, &[predicates::HostPort])> = nodes
            .iter()
            .map(|n| {
                let name = n.name_any();
                let count = counts.get(&name).copied().unwrap_or(0);
                let used = ports.get(&name).map(Vec::as_slice).unwrap_or(&[]);
                (n.as_ref(), count, used)
            })
            .collect();
        match predicates::schedule_with_ports(&pod, &views) {
            Ok(node) => self.bind(&pod, &node).await,
            Err(fit) => self.unschedulable(&pod, fit).await,
        }
    }
}

/// The pending pods in the cache.
fn pending(pods: &Store<Pod>) -> Vec<ObjectRef<Pod>> {
    pods.state()
        .iter()
        .filter(|p| wants_scheduling(p))
        .map(|p| ObjectRef::from_obj(p.as_ref()))
        .collect()
}

/// Runs the scheduler until `shutdown`.
pub fn run(
    client: Client,
    config: &Config,
    recorder: Arc<Recorder>,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) -> impl Future<Output = ()> + Send + 'static {
    let (pods, _, pod_events) =
        runner::reflect(Api::<Pod>::all(client.clone()), watcher::Config::default());
    let (nodes, nodes_ready, node_events) =
        runner::reflect(Api::<Node>::all(client.clone()), watcher::Config::default());
    // A bound pod that goes away or finishes frees room: retry the pending ones.
    let (freed_tx, freed_rx) = futures::channel::mpsc::unbounded::<()>();
    let pod_events = pod_events.inspect_ok(move |ev| {
        let frees = match ev {
            watcher::Event::Delete(p) => node_name(p).is_some(),
            watcher::Event::Apply(p) => node_name(p).is_some() && is_terminal(p),
            _ => false,
        };
        if frees {
            let _ = freed_tx.unbounded_send(());
        }
    });
    let for_nodes = pods.clone();
    let for_freed = pods.clone();
    let controller = runner::controller(pods.clone(), pod_events)
        .watches_stream(
            node_events
                .touched_objects()
                .predicate_filter(node_fingerprint, PredicateConfig::default()),
            move |_node: Node| pending(&for_nodes),
        )
        .reconcile_on(
            freed_rx
                .ready_chunks(64)
                .flat_map(move |_| futures::stream::iter(pending(&for_freed))),
        );
    let reconciler = Arc::new(Scheduler {
        client,
        pods,
        nodes,
        nodes_ready,
        decide: tokio::sync::Mutex::new(()),
        assumed: Mutex::new(HashMap::new()),
        last_event: Mutex::new(HashMap::new()),
        recorder,
        metrics: metrics.clone(),
        retry: config.unschedulable_retry,
    });
    runner::run(controller, reconciler, metrics, shutdown)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(v: Value) -> Pod {
        let mut base = json!({"metadata": {"name": "p"}, "spec": {"containers": []}});
        if let (Some(b), Some(o)) = (base.as_object_mut(), v.as_object()) {
            for (k, val) in o {
                b.insert(k.clone(), val.clone());
            }
        }
        serde_json::from_value(base).expect("test pod")
    }

    #[test]
    fn which_pods_are_scheduled() {
        let cases = [
            (json!({}), true),
            (
                json!({"spec": {"containers": [], "schedulerName": "default-scheduler"}}),
                true,
            ),
            (
                json!({"spec": {"containers": [], "schedulerName": "other"}}),
                false,
            ),
            (json!({"spec": {"containers": [], "nodeName": "n1"}}), false),
            (
                json!({"metadata": {"name": "p", "deletionTimestamp": "2025-01-01T00:00:00Z"}}),
                false,
            ),
            (json!({"status": {"phase": "Succeeded"}}), false),
            (
                json!({"spec": {"containers": [], "schedulingGates": [{"name": "g"}]}}),
                false,
            ),
        ];
        for (v, want) in cases {
            assert_eq!(wants_scheduling(&pod(v.clone())), want, "{v}");
        }
    }

    #[test]
    fn heartbeats_do_not_change_the_fingerprint() {
        let node = |hb: &str, ready: &str| -> Node {
            serde_json::from_value(json!({
                "metadata": {"name": "n"},
                "status": {"conditions": [{"type": "Ready", "status": ready, "lastHeartbeatTime": hb}]},
            }))
            .expect("test node")
        };
        let a = node_fingerprint(&node("2025-01-01T00:00:00Z", "True"));
        assert_eq!(a, node_fingerprint(&node("2025-01-01T00:00:10Z", "True")));
        assert_ne!(
            a,
            node_fingerprint(&node("2025-01-01T00:00:10Z", "Unknown"))
        );
    }
}

//! Pod garbage collection, as kube-controller-manager's PodGC does for orphans: a pod bound
//! to a Node that no longer exists is marked (phase Failed, condition DisruptionTarget with
//! reason DeletionByPodGC) and deleted with grace period 0. No agent will ever stop it, so
//! nobody else would.
//!
//! A Node missing from the watch cache is confirmed missing with a GET before anything is
//! deleted, so a lagging cache never costs a pod.

use std::future::Future;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::controller::Action;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client, ResourceExt};
use serde_json::json;

use crate::runner::{self, Ready, Reconciler};
use crate::{Error, Metrics};

/// The node a pod is bound to, if any.
pub fn node_name(pod: &Pod) -> Option<&str> {
    pod.spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .filter(|n| !n.is_empty())
}

/// Whether a pod has finished (phase Succeeded or Failed).
pub fn is_terminal(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

/// The status patch that marks a pod deleted by PodGC (strategic merge: the condition is
/// merged by type into the pod's others).
pub fn gc_status_patch(now: k8s_openapi::jiff::Timestamp) -> serde_json::Value {
    json!({
        "status": {
            "phase": "Failed",
            "conditions": [{
                "type": "DisruptionTarget",
                "status": "True",
                "reason": "DeletionByPodGC",
                "message": "PodGC: node no longer exists",
                "lastTransitionTime": k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(now),
            }],
        }
    })
}

/// The pod GC reconciler.
pub struct PodGc {
    client: Client,
    nodes: Store<Node>,
    nodes_ready: Ready,
    metrics: Arc<Metrics>,
}

impl Reconciler for PodGc {
    type Object = Pod;
    const NAME: &'static str = "pod-gc";

    async fn reconcile(&self, pod: Arc<Pod>) -> Result<Action, Error> {
        let Some(node) = node_name(&pod) else {
            return Ok(Action::await_change());
        };
        if pod.metadata.deletion_timestamp.is_some()
            && pod.metadata.deletion_grace_period_seconds == Some(0)
        {
            // Already force-deleted (waiting for finalizers, or for the watch to say so).
            return Ok(Action::await_change());
        }
        self.nodes_ready.wait().await;
        if self.nodes.get(&ObjectRef::new(node)).is_some() {
            return Ok(Action::await_change());
        }
        let nodes: Api<Node> = Api::all(self.client.clone());
        if nodes
            .get_opt(node)
            .await
            .map_err(|e| Error::api("getting node", node, e))?
            .is_some()
        {
            // The cache is behind; the node's own event will bring us back if it goes.
            return Ok(Action::await_change());
        }
        let ns = pod.namespace().unwrap_or_default();
        let name = pod.name_any();
        let key = format!("{ns}/{name}");
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &ns);
        if !is_terminal(&pod) {
            match pods
                .patch_status(
                    &name,
                    &PatchParams::default(),
                    &Patch::Strategic(gc_status_patch(k8s_openapi::jiff::Timestamp::now())),
                )
                .await
            {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.is_not_found() => return Ok(Action::await_change()),
                Err(e) => return Err(Error::api("marking pod failed", key, e)),
            }
        }
        let dp = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: pod.uid(),
                resource_version: None,
            }),
            ..Default::default()
        };
        match pods.delete(&name, &dp).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.is_not_found() || s.code == 409 => {
                return Ok(Action::await_change())
            }
            Err(e) => return Err(Error::api("deleting pod", key, e)),
        }
        self.metrics.inc("kins_pod_gc_deleted_total", &[]);
        tracing::info!(pod = %key, node, "deleted pod of a node that no longer exists");
        Ok(Action::await_change())
    }
}

/// Runs the pod GC controller until `shutdown`.
pub fn run(
    client: Client,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) -> impl Future<Output = ()> + Send + 'static {
    let (pods, _, pod_events) =
        runner::reflect(Api::<Pod>::all(client.clone()), watcher::Config::default());
    let (nodes, nodes_ready, node_events) =
        runner::reflect(Api::<Node>::all(client.clone()), watcher::Config::default());
    let pod_store = pods.clone();
    let node_store = nodes.clone();
    // A node that left the cache (deleted) brings back every pod bound to it.
    let controller = runner::controller(pods, pod_events).watches_stream(
        node_events.touched_objects(),
        move |node: Node| {
            let name = node.name_any();
            let gone = node_store.get(&ObjectRef::new(&name)).is_none();
            pod_store
                .state()
                .into_iter()
                .filter(|p| gone && node_name(p) == Some(name.as_str()))
                .map(|p| ObjectRef::from_obj(p.as_ref()))
                .collect::<Vec<_>>()
        },
    );
    let reconciler = Arc::new(PodGc {
        client,
        nodes,
        nodes_ready,
        metrics: metrics.clone(),
    });
    runner::run(controller, reconciler, metrics, shutdown)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_pods() {
        let pod = |v: serde_json::Value| -> Pod { serde_json::from_value(v).expect("test pod") };
        assert_eq!(
            node_name(&pod(json!({"spec": {"nodeName": "n1", "containers": []}}))),
            Some("n1")
        );
        assert_eq!(
            node_name(&pod(json!({"spec": {"nodeName": "", "containers": []}}))),
            None
        );
        assert!(is_terminal(&pod(json!({"status": {"phase": "Failed"}}))));
        assert!(!is_terminal(&pod(json!({"status": {"phase": "Running"}}))));
        let p = gc_status_patch("2025-01-01T00:00:00Z".parse().expect("ts"));
        assert_eq!(p["status"]["conditions"][0]["reason"], "DeletionByPodGC");
        assert_eq!(
            p["status"]["conditions"][0]["lastTransitionTime"],
            "2025-01-01T00:00:00Z"
        );
    }
}

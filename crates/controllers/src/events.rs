//! core/v1 Events, as client-go's legacy event recorder writes them: one Event per
//! (object, type, reason, message), whose `count` and `lastTimestamp` grow when the same
//! thing happens again, so `kubectl describe` shows "(x3 over 2m)".
//!
//! Publishing an event never fails a reconcile: errors are logged and forgotten, as in
//! Kubernetes.

use std::collections::HashMap;
use std::sync::Mutex;

use k8s_openapi::api::core::v1::{Event, EventSource, Node, ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};
use serde_json::json;

use crate::runner::lock;

/// Event type `Normal`.
pub const NORMAL: &str = "Normal";
/// Event type `Warning`.
pub const WARNING: &str = "Warning";

/// Events about Nodes are written to this namespace (their object has none).
const NODE_EVENT_NAMESPACE: &str = "default";

/// What an event is about.
pub fn node_ref(node: &Node) -> ObjectReference {
    // Nodes are special: events name them by their name as uid, which is what the kubelet
    // does and what `kubectl describe node` searches for.
    ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Node".into()),
        name: Some(node.name_any()),
        uid: Some(node.name_any()),
        ..Default::default()
    }
}

/// What an event about a pod is about.
pub fn pod_ref(pod: &Pod) -> ObjectReference {
    ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Pod".into()),
        name: Some(pod.name_any()),
        namespace: pod.namespace(),
        uid: pod.uid(),
        resource_version: pod.resource_version(),
        ..Default::default()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    kind: String,
    namespace: String,
    name: String,
    uid: String,
    type_: String,
    reason: String,
    message: String,
}

#[derive(Debug, Clone)]
struct Seen {
    name: String,
    count: i32,
    first: Timestamp,
}

/// Writes Events for one component (`source.component`, `reportingComponent`).
pub struct Recorder {
    client: Client,
    component: String,
    instance: String,
    seen: Mutex<HashMap<Key, Seen>>,
}

/// Seen events kept for aggregation; beyond this the oldest are forgotten.
const MAX_SEEN: usize = 4096;

impl Recorder {
    /// A recorder for `component`, this process being `instance`.
    pub fn new(client: Client, component: &str, instance: &str) -> Recorder {
        Recorder {
            client,
            component: component.to_string(),
            instance: instance.to_string(),
            seen: Mutex::new(HashMap::new()),
        }
    }

    /// Records that `reason` happened to `object`: a new Event, or one more of the same.
    pub async fn publish(&self, object: ObjectReference, type_: &str, reason: &str, message: &str) {
        let namespace = object
            .namespace
            .clone()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| NODE_EVENT_NAMESPACE.to_string());
        let key = Key {
            kind: object.kind.clone().unwrap_or_default(),
            namespace: object.namespace.clone().unwrap_or_default(),
            name: object.name.clone().unwrap_or_default(),
            uid: object.uid.clone().unwrap_or_default(),
            type_: type_.to_string(),
            reason: reason.to_string(),
            message: message.to_string(),
        };
        let now = Timestamp::now();
        let api: Api<Event> = Api::namespaced(self.client.clone(), &namespace);
        let previous = lock(&self.seen).get(&key).cloned();
        if let Some(seen) = previous {
            let count = seen.count.saturating_add(1);
            let patch = json!({"count": count, "lastTimestamp": Time(now)});
            match api
                .patch(&seen.name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => {
                    lock(&self.seen).insert(key, Seen { count, ..seen });
                    return;
                }
                Err(kube::Error::Api(s)) if s.is_not_found() => {}
                Err(e) => {
                    tracing::warn!(reason, object = ?object.name, error = %e, "could not update event");
                    return;
                }
            }
        }
        let name = format!(
            "{}.{:x}",
            object.name.clone().unwrap_or_default(),
            now.as_nanosecond()
        );
        let event = Event {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(namespace.clone()),
                ..Default::default()
            },
            involved_object: object.clone(),
            reason: Some(reason.to_string()),
            message: Some(message.to_string()),
            type_: Some(type_.to_string()),
            source: Some(EventSource {
                component: Some(self.component.clone()),
                host: None,
            }),
            reporting_component: Some(self.component.clone()),
            reporting_instance: Some(self.instance.clone()),
            first_timestamp: Some(Time(now)),
            last_timestamp: Some(Time(now)),
            count: Some(1),
            ..Default::default()
        };
        match api.create(&PostParams::default(), &event).await {
            Ok(_) => {
                let mut seen = lock(&self.seen);
                if seen.len() >= MAX_SEEN {
                    if let Some(oldest) = seen
                        .iter()
                        .min_by_key(|(_, s)| s.first)
                        .map(|(k, _)| k.clone())
                    {
                        seen.remove(&oldest);
                    }
                }
                seen.insert(
                    key,
                    Seen {
                        name,
                        count: 1,
                        first: now,
                    },
                );
            }
            Err(e) => {
                tracing::warn!(reason, object = ?object.name, error = %e, "could not write event")
            }
        }
    }
}

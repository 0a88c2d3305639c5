//! Strategic merge patch cases, most of them the shapes `kubectl apply`, `kubectl patch` and
//! controllers send. Each is one `check(kind, original, patch, expected)`.

use serde_json::{json, Value};

use crate::patch::{strategic_merge_patch, PatchError};
use crate::resources::{Resource, RESOURCES};

fn resource(kind: &str) -> &'static Resource {
    RESOURCES
        .iter()
        .find(|r| r.kind == kind)
        .unwrap_or_else(|| panic!("{kind} is served"))
}

/// Applies `patch` to `original` as a `kind` object and compares with `expected`.
#[track_caller]
fn check(kind: &str, original: Value, patch: Value, expected: Value) {
    let got = strategic_merge_patch(resource(kind), &original, &patch)
        .unwrap_or_else(|e| panic!("patch failed: {e}"));
    assert_eq!(
        got,
        expected,
        "\n got: {}\nwant: {}",
        serde_json::to_string_pretty(&got).unwrap_or_default(),
        serde_json::to_string_pretty(&expected).unwrap_or_default()
    );
}

/// Applies `patch` and returns the error it must fail with.
#[track_caller]
fn check_err(kind: &str, original: Value, patch: Value) -> PatchError {
    match strategic_merge_patch(resource(kind), &original, &patch) {
        Ok(v) => panic!("expected an error, got {v}"),
        Err(e) => e,
    }
}

fn deployment(containers: Value) -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "web"}},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": containers}
            }
        }
    })
}

#[test]
fn maps_merge_and_null_deletes() {
    check(
        "ConfigMap",
        json!({"metadata": {"name": "c", "labels": {"a": "1", "b": "2"}}, "data": {"x": "1"}}),
        json!({"metadata": {"labels": {"a": null, "c": "3"}}, "data": {"y": "2"}}),
        json!({"metadata": {"name": "c", "labels": {"b": "2", "c": "3"}}, "data": {"x": "1", "y": "2"}}),
    );
    // A null for a missing key is ignored; a scalar replaces a map.
    check(
        "ConfigMap",
        json!({"data": {"x": "1"}, "binaryData": {"k": "AA=="}}),
        json!({"nope": null, "binaryData": "gone"}),
        json!({"data": {"x": "1"}, "binaryData": "gone"}),
    );
}

#[test]
fn kubectl_apply_image_change() {
    check(
        "Deployment",
        deployment(json!([
            {"name": "web", "image": "nginx:1.25", "ports": [{"containerPort": 80, "protocol": "TCP"}]},
            {"name": "sidecar", "image": "busybox"}
        ])),
        json!({"spec": {"template": {"spec": {
            "$setElementOrder/containers": [{"name": "web"}, {"name": "sidecar"}],
            "containers": [{"image": "nginx:1.26", "name": "web"}]
        }}}}),
        deployment(json!([
            {"name": "web", "image": "nginx:1.26", "ports": [{"containerPort": 80, "protocol": "TCP"}]},
            {"name": "sidecar", "image": "busybox"}
        ])),
    );
}

#[test]
fn kubectl_apply_container_removed() {
    check(
        "Deployment",
        deployment(json!([
            {"name": "web", "image": "nginx"},
            {"name": "sidecar", "image": "busybox"}
        ])),
        json!({"spec": {"template": {"spec": {
            "$setElementOrder/containers": [{"name": "web"}],
            "containers": [{"$patch": "delete", "name": "sidecar"}]
        }}}}),
        deployment(json!([{"name": "web", "image": "nginx"}])),
    );
}

#[test]
fn kubectl_apply_container_added_and_reordered() {
    // A new container placed where $setElementOrder puts it.
    check(
        "Deployment",
        deployment(json!([{"name": "a", "image": "a"}, {"name": "c", "image": "c"}])),
        json!({"spec": {"template": {"spec": {
            "$setElementOrder/containers": [{"name": "a"}, {"name": "b"}, {"name": "c"}],
            "containers": [{"image": "b", "name": "b"}]
        }}}}),
        deployment(json!([
            {"name": "a", "image": "a"},
            {"name": "b", "image": "b"},
            {"name": "c", "image": "c"}
        ])),
    );
    // Only an order change.
    check(
        "Deployment",
        deployment(json!([{"name": "a", "image": "a"}, {"name": "b", "image": "b"}])),
        json!({"spec": {"template": {"spec": {
            "$setElementOrder/containers": [{"name": "b"}, {"name": "a"}]
        }}}}),
        deployment(json!([{"name": "b", "image": "b"}, {"name": "a", "image": "a"}])),
    );
    // A container added on the server (not in the user's order) keeps its place.
    check(
        "Deployment",
        deployment(json!([
            {"name": "a", "image": "a"},
            {"name": "injected", "image": "i"},
            {"name": "b", "image": "b"}
        ])),
        json!({"spec": {"template": {"spec": {
            "$setElementOrder/containers": [{"name": "a"}, {"name": "b"}],
            "containers": [{"image": "b2", "name": "b"}]
        }}}}),
        deployment(json!([
            {"name": "a", "image": "a"},
            {"name": "injected", "image": "i"},
            {"name": "b", "image": "b2"}
        ])),
    );
}

#[test]
fn kubectl_apply_env_and_ports() {
    check(
        "Deployment",
        deployment(json!([{
            "name": "web",
            "image": "nginx",
            "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
            "ports": [{"containerPort": 80, "name": "http"}]
        }])),
        json!({"spec": {"template": {"spec": {
            "$setElementOrder/containers": [{"name": "web"}],
            "containers": [{
                "$setElementOrder/env": [{"name": "A"}, {"name": "C"}],
                "$setElementOrder/ports": [{"containerPort": 80}, {"containerPort": 443}],
                "env": [{"$patch": "delete", "name": "B"}, {"name": "C", "value": "3"}],
                "ports": [{"containerPort": 443, "name": "https"}],
                "name": "web"
            }]
        }}}}),
        deployment(json!([{
            "name": "web",
            "image": "nginx",
            "env": [{"name": "A", "value": "1"}, {"name": "C", "value": "3"}],
            "ports": [{"containerPort": 80, "name": "http"}, {"containerPort": 443, "name": "https"}]
        }])),
    );
    // An env var's value removed: null inside a keyed item.
    check(
        "Pod",
        json!({"spec": {"containers": [{"name": "c", "env": [{"name": "A", "value": "1"}]}]}}),
        json!({"spec": {"containers": [{"name": "c", "env": [{"name": "A", "value": null, "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]}]}}),
        json!({"spec": {"containers": [{"name": "c", "env": [{"name": "A", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]}]}}),
    );
}

#[test]
fn kubectl_apply_strategy_retain_keys() {
    // RollingUpdate -> Recreate: $retainKeys drops rollingUpdate.
    let mut expected = deployment(json!([{"name": "web", "image": "nginx"}]));
    expected["spec"]["strategy"] = json!({"type": "Recreate"});
    check(
        "Deployment",
        deployment(json!([{"name": "web", "image": "nginx"}])),
        json!({"spec": {"strategy": {"$retainKeys": ["type"], "rollingUpdate": null, "type": "Recreate"}}}),
        expected.clone(),
    );
    // Even without the null, keys the list does not name go.
    check(
        "Deployment",
        deployment(json!([{"name": "web", "image": "nginx"}])),
        json!({"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate"}}}),
        expected,
    );
}

#[test]
fn kubectl_apply_volume_source_switch() {
    check(
        "Pod",
        json!({"spec": {"volumes": [
            {"name": "data", "emptyDir": {}},
            {"name": "cfg", "configMap": {"name": "old"}}
        ]}}),
        json!({"spec": {
            "$setElementOrder/volumes": [{"name": "data"}, {"name": "cfg"}],
            "volumes": [{"$retainKeys": ["hostPath", "name"], "emptyDir": null, "hostPath": {"path": "/srv"}, "name": "data"}]
        }}),
        json!({"spec": {"volumes": [
            {"name": "data", "hostPath": {"path": "/srv"}},
            {"name": "cfg", "configMap": {"name": "old"}}
        ]}}),
    );
}

#[test]
fn finalizers_merge_as_a_set() {
    // kubectl apply: one finalizer removed, one added.
    check(
        "ConfigMap",
        json!({"metadata": {"name": "c", "finalizers": ["a", "b"]}}),
        json!({"metadata": {
            "$deleteFromPrimitiveList/finalizers": ["b"],
            "$setElementOrder/finalizers": ["a", "c"],
            "finalizers": ["c"]
        }}),
        json!({"metadata": {"name": "c", "finalizers": ["a", "c"]}}),
    );
    // Only a deletion.
    check(
        "ConfigMap",
        json!({"metadata": {"finalizers": ["a", "b", "c"]}}),
        json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["b", "zzz"]}}),
        json!({"metadata": {"finalizers": ["a", "c"]}}),
    );
    // A controller adding its finalizer: union, duplicates dropped. Without $setElementOrder
    // Kubernetes puts new items first, unless an existing item of the patch anchors them.
    check(
        "Pod",
        json!({"metadata": {"finalizers": ["a", "b"]}}),
        json!({"metadata": {"finalizers": ["x"]}}),
        json!({"metadata": {"finalizers": ["x", "a", "b"]}}),
    );
    check(
        "Pod",
        json!({"metadata": {"finalizers": ["a", "b"]}}),
        json!({"metadata": {"finalizers": ["b", "x"]}}),
        json!({"metadata": {"finalizers": ["a", "b", "x"]}}),
    );
    // A deletion for a list the object does not have changes nothing.
    check(
        "Pod",
        json!({"metadata": {"name": "p"}}),
        json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["a"]}}),
        json!({"metadata": {"name": "p"}}),
    );
    // Node podCIDRs are a set too.
    check(
        "Node",
        json!({"spec": {"podCIDRs": ["10.0.0.0/24"]}}),
        json!({"spec": {"podCIDRs": ["10.0.0.0/24", "fd00::/64"]}}),
        json!({"spec": {"podCIDRs": ["10.0.0.0/24", "fd00::/64"]}}),
    );
}

#[test]
fn lists_without_strategy_replace() {
    check(
        "Pod",
        json!({"spec": {"tolerations": [{"key": "a", "operator": "Exists"}], "containers": [{"name": "c", "args": ["x", "y"]}]}}),
        json!({"spec": {"tolerations": [{"key": "b", "operator": "Exists"}], "containers": [{"name": "c", "args": ["z"]}]}}),
        json!({"spec": {"tolerations": [{"key": "b", "operator": "Exists"}], "containers": [{"name": "c", "args": ["z"]}]}}),
    );
    check(
        "Node",
        json!({"spec": {"taints": [{"key": "a", "effect": "NoSchedule"}]}}),
        json!({"spec": {"taints": [{"key": "b", "effect": "NoExecute"}]}}),
        json!({"spec": {"taints": [{"key": "b", "effect": "NoExecute"}]}}),
    );
    check(
        "Endpoints",
        json!({"subsets": [{"addresses": [{"ip": "10.0.0.1"}]}]}),
        json!({"subsets": [{"addresses": [{"ip": "10.0.0.2"}]}]}),
        json!({"subsets": [{"addresses": [{"ip": "10.0.0.2"}]}]}),
    );
}

#[test]
fn new_items_without_order_come_first() {
    // `kubectl patch -p '{"spec":{"containers":[...]}}'`: Kubernetes puts new items before the
    // existing ones when no $setElementOrder is sent (its mergeSortedSlice takes a patch item
    // unless a server item is known to precede it).
    check(
        "Pod",
        json!({"spec": {"containers": [{"name": "a", "image": "a"}, {"name": "b", "image": "b"}]}}),
        json!({"spec": {"containers": [{"name": "new", "image": "n"}, {"name": "b", "image": "b2"}]}}),
        json!({"spec": {"containers": [
            {"name": "new", "image": "n"},
            {"name": "a", "image": "a"},
            {"name": "b", "image": "b2"}
        ]}}),
    );
    // Changed items stay in place.
    check(
        "Pod",
        json!({"spec": {"containers": [{"name": "a", "image": "a"}, {"name": "b", "image": "b"}, {"name": "c", "image": "c"}]}}),
        json!({"spec": {"containers": [{"name": "b", "image": "b2"}]}}),
        json!({"spec": {"containers": [{"name": "a", "image": "a"}, {"name": "b", "image": "b2"}, {"name": "c", "image": "c"}]}}),
    );
    check(
        "Pod",
        json!({"spec": {"containers": [{"name": "a", "image": "a"}]}}),
        json!({"spec": {"containers": [{"name": "b", "image": "b"}]}}),
        json!({"spec": {"containers": [{"name": "b", "image": "b"}, {"name": "a", "image": "a"}]}}),
    );
}

#[test]
fn status_and_metadata_lists() {
    // A status update merging conditions by type.
    check(
        "Pod",
        json!({"status": {"phase": "Pending", "conditions": [
            {"type": "PodScheduled", "status": "True"},
            {"type": "Ready", "status": "False"}
        ]}}),
        json!({"status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}}),
        json!({"status": {"phase": "Running", "conditions": [
            {"type": "PodScheduled", "status": "True"},
            {"type": "Ready", "status": "True"}
        ]}}),
    );
    check(
        "Node",
        json!({"status": {"addresses": [{"type": "InternalIP", "address": "10.0.0.1"}, {"type": "Hostname", "address": "n1"}]}}),
        json!({"status": {"addresses": [{"type": "InternalIP", "address": "10.0.0.2"}]}}),
        json!({"status": {"addresses": [{"type": "InternalIP", "address": "10.0.0.2"}, {"type": "Hostname", "address": "n1"}]}}),
    );
    check(
        "ReplicaSet",
        json!({"metadata": {"ownerReferences": [{"uid": "u1", "name": "d", "kind": "Deployment"}]}}),
        json!({"metadata": {"ownerReferences": [{"uid": "u1", "controller": true}]}}),
        json!({"metadata": {"ownerReferences": [{"uid": "u1", "name": "d", "kind": "Deployment", "controller": true}]}}),
    );
    check(
        "Service",
        json!({"spec": {"ports": [{"port": 80, "targetPort": 8080}, {"port": 443, "targetPort": 8443}]}}),
        json!({"spec": {
            "$setElementOrder/ports": [{"port": 80}, {"port": 443}],
            "ports": [{"port": 80, "targetPort": 9090}]
        }}),
        json!({"spec": {"ports": [{"port": 80, "targetPort": 9090}, {"port": 443, "targetPort": 8443}]}}),
    );
}

#[test]
fn patch_directives_on_maps() {
    check(
        "Service",
        json!({"spec": {"selector": {"app": "a", "tier": "web"}, "type": "ClusterIP"}}),
        json!({"spec": {"selector": {"$patch": "replace", "app": "b"}}}),
        json!({"spec": {"selector": {"app": "b"}, "type": "ClusterIP"}}),
    );
    check(
        "Deployment",
        json!({"spec": {"strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}}, "replicas": 1}}),
        json!({"spec": {"strategy": {"$patch": "delete"}}}),
        json!({"spec": {"strategy": {}, "replicas": 1}}),
    );
    check(
        "ConfigMap",
        json!({"data": {"a": "1"}}),
        json!({"data": {"$patch": "merge", "b": "2"}}),
        json!({"data": {"a": "1", "b": "2"}}),
    );
    // A map new to the object: its directives are applied, never stored.
    check(
        "Pod",
        json!({"spec": {}}),
        json!({"spec": {"securityContext": {"$patch": "replace", "runAsUser": 1000}}}),
        json!({"spec": {"securityContext": {"runAsUser": 1000}}}),
    );
    // `$patch: replace` at the root replaces the whole object.
    check(
        "ConfigMap",
        json!({"metadata": {"name": "a"}, "data": {"x": "1"}}),
        json!({"$patch": "replace", "metadata": {"name": "a"}, "data": {"y": "2"}}),
        json!({"metadata": {"name": "a"}, "data": {"y": "2"}}),
    );
}

#[test]
fn patch_directives_in_lists() {
    // `$patch: replace` as a list item: the list becomes the other items.
    check(
        "Pod",
        json!({"spec": {"containers": [{"name": "a", "image": "a"}, {"name": "b", "image": "b"}]}}),
        json!({"spec": {"containers": [{"name": "c", "image": "c"}, {"$patch": "replace"}]}}),
        json!({"spec": {"containers": [{"name": "c", "image": "c"}]}}),
    );
    // Deleting an item that is not there, and a delete in a list the object lacks.
    check(
        "Pod",
        json!({"spec": {"containers": [{"name": "a", "image": "a"}]}}),
        json!({"spec": {
            "containers": [{"name": "zzz", "$patch": "delete"}],
            "initContainers": [{"name": "i", "$patch": "delete"}]
        }}),
        json!({"spec": {"containers": [{"name": "a", "image": "a"}], "initContainers": []}}),
    );
    // `$patch: merge` on an item merges it.
    check(
        "Pod",
        json!({"spec": {"containers": [{"name": "a", "image": "a"}]}}),
        json!({"spec": {"containers": [{"name": "a", "$patch": "merge", "tty": true}]}}),
        json!({"spec": {"containers": [{"name": "a", "image": "a", "tty": true}]}}),
    );
    // Volume mounts keyed by mountPath, devices by devicePath.
    check(
        "Pod",
        json!({"spec": {"containers": [{"name": "a", "volumeMounts": [{"name": "v", "mountPath": "/a"}], "volumeDevices": [{"name": "d", "devicePath": "/dev/x"}]}]}}),
        json!({"spec": {"containers": [{"name": "a", "volumeMounts": [{"name": "w", "mountPath": "/a"}], "volumeDevices": [{"devicePath": "/dev/x", "$patch": "delete"}]}]}}),
        json!({"spec": {"containers": [{"name": "a", "volumeMounts": [{"name": "w", "mountPath": "/a"}], "volumeDevices": []}]}}),
    );
}

#[test]
fn errors() {
    let pod = json!({"spec": {"containers": [{"name": "a"}]}});
    let e = check_err(
        "Pod",
        pod.clone(),
        json!({"spec": {"containers": [{"image": "x"}]}}),
    );
    assert!(matches!(e, PatchError::NoMergeKey { .. }), "{e}");
    assert_eq!(
        e.to_string(),
        r#"map: {"image":"x"} does not contain declared merge key: name"#
    );
    assert_eq!(e.code(), 400);

    let e = check_err("Pod", pod.clone(), json!({"spec": {"$patch": "explode"}}));
    assert!(
        e.to_string().starts_with("unknown patch type: \"explode\""),
        "{e}"
    );

    let e = check_err(
        "Deployment",
        json!({"spec": {"strategy": {"type": "Recreate"}}}),
        json!({"spec": {"strategy": {"$retainKeys": ["type"], "rollingUpdate": {"maxSurge": 1}}}}),
    );
    assert!(matches!(e, PatchError::BadRetainKeys), "{e}");
    let e = check_err(
        "Deployment",
        json!({}),
        json!({"spec": {"$retainKeys": "type"}}),
    );
    assert!(matches!(e, PatchError::BadRetainKeys), "{e}");

    let e = check_err(
        "Pod",
        json!({"spec": {"containers": [{"name": "a"}, {"name": "b"}]}}),
        json!({"spec": {
            "$setElementOrder/containers": [{"name": "a"}, {"name": "b"}],
            "containers": [{"name": "b", "tty": true}, {"name": "a", "tty": true}]
        }}),
    );
    assert!(
        matches!(e, PatchError::SetElementOrderMismatch { .. }),
        "{e}"
    );
    let e = check_err(
        "Pod",
        pod.clone(),
        json!({"spec": {"$setElementOrder/containers": "a"}}),
    );
    assert!(matches!(e, PatchError::BadSetElementOrder), "{e}");
    let e = check_err(
        "Pod",
        pod.clone(),
        json!({"spec": {"$setElementOrder/containers": [{"image": "a"}]}}),
    );
    assert!(matches!(e, PatchError::NoMergeKey { .. }), "{e}");
    let e = check_err(
        "Pod",
        pod.clone(),
        json!({"spec": {"$setElementOrder": []}}),
    );
    assert!(matches!(e, PatchError::BadSetElementOrder), "{e}");

    let e = check_err(
        "Pod",
        json!({"metadata": {"finalizers": ["a"]}}),
        json!({"metadata": {"$deleteFromPrimitiveList/finalizers": "a"}}),
    );
    assert!(matches!(e, PatchError::BadPrimitiveList), "{e}");
    let e = check_err(
        "Pod",
        pod.clone(),
        json!({"spec": {"$deleteFromPrimitiveList/containers": [{"name": "a"}]}}),
    );
    assert!(matches!(e, PatchError::BadPrimitiveList), "{e}");

    let e = check_err(
        "Pod",
        json!({"metadata": {"finalizers": ["a"]}}),
        json!({"metadata": {"finalizers": [["b"]]}}),
    );
    assert!(matches!(e, PatchError::ListOfLists), "{e}");
    assert_eq!(e.code(), 422);
    let e = check_err(
        "Pod",
        json!({"metadata": {"finalizers": ["a"]}}),
        json!({"metadata": {"finalizers": [1]}}),
    );
    assert!(matches!(e, PatchError::MixedList(_)), "{e}");
    let e = check_err(
        "Pod",
        json!({"metadata": {"finalizers": [{"a": 1}]}}),
        json!({"metadata": {"finalizers": [{"b": 1}]}}),
    );
    assert!(matches!(e, PatchError::NoMergeKeyForList(_)), "{e}");

    let e = check_err("Pod", pod, json!([1]));
    assert!(matches!(e, PatchError::NotAnObject { .. }), "{e}");
}

#[test]
fn unknown_fields_merge_maps_and_replace_lists() {
    check(
        "Pod",
        json!({"spec": {"x-custom": {"a": 1, "l": [1, 2]}}}),
        json!({"spec": {"x-custom": {"b": 2, "l": [3]}}}),
        json!({"spec": {"x-custom": {"a": 1, "l": [3], "b": 2}}}),
    );
}

#[test]
fn real_kubectl_apply_patch() {
    // The patch kubectl 1.32 sent (captured against this crate's /openapi/v3) when
    // re-applying a Deployment with: a finalizer swapped, strategy RollingUpdate -> Recreate,
    // an image changed, env B replaced by C, a port added, the sidecar removed and a volume
    // switched from emptyDir to hostPath. The last-applied annotation is left out.
    let original = json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default", "finalizers": ["a.example/x", "b.example/y"]},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "web"}},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {
                    "containers": [
                        {"name": "web", "image": "nginx:1.25", "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}], "ports": [{"containerPort": 80}]},
                        {"name": "sidecar", "image": "busybox"}
                    ],
                    "volumes": [{"name": "data", "emptyDir": {}}]
                }
            }
        }
    });
    let patch = json!({
        "metadata": {
            "$deleteFromPrimitiveList/finalizers": ["b.example/y"],
            "$setElementOrder/finalizers": ["a.example/x", "c.example/z"],
            "finalizers": ["c.example/z"]
        },
        "spec": {
            "strategy": {"$retainKeys": ["type"], "rollingUpdate": null, "type": "Recreate"},
            "template": {"spec": {
                "$setElementOrder/containers": [{"name": "web"}],
                "$setElementOrder/volumes": [{"name": "data"}],
                "containers": [
                    {
                        "$setElementOrder/env": [{"name": "A"}, {"name": "C"}],
                        "$setElementOrder/ports": [{"containerPort": 80}, {"containerPort": 443}],
                        "env": [{"name": "C", "value": "3"}, {"$patch": "delete", "name": "B"}],
                        "image": "nginx:1.26",
                        "name": "web",
                        "ports": [{"containerPort": 443}]
                    },
                    {"$patch": "delete", "name": "sidecar"}
                ],
                "volumes": [{
                    "$retainKeys": ["hostPath", "name"],
                    "emptyDir": null,
                    "hostPath": {"path": "/srv"},
                    "name": "data"
                }]
            }}
        }
    });
    let expected = json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default", "finalizers": ["a.example/x", "c.example/z"]},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "web"}},
            "strategy": {"type": "Recreate"},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {
                    "containers": [
                        {"name": "web", "image": "nginx:1.26", "env": [{"name": "A", "value": "1"}, {"name": "C", "value": "3"}], "ports": [{"containerPort": 80}, {"containerPort": 443}]}
                    ],
                    "volumes": [{"name": "data", "hostPath": {"path": "/srv"}}]
                }
            }
        }
    });
    check("Deployment", original, patch, expected);
}

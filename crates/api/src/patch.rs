//! The three Kubernetes patch types applied to objects held as `serde_json::Value`:
//! JSON patch (RFC 6902), JSON merge patch (RFC 7396) and strategic merge patch.
//!
//! Strategic merge patch follows k8s.io/apimachinery/pkg/util/strategicpatch (the server side,
//! `StrategicMergeMapPatch`): lists are merged by key or as sets where the Kubernetes types say so
//! (the `patchStrategy`/`patchMergeKey` tags), and the directives kubectl sends are honoured:
//! `$patch: replace | delete | merge`, `$setElementOrder/<list>`, `$retainKeys`,
//! `$deleteFromPrimitiveList/<list>` and `null` to remove a key.
//!
//! The merge keys live in one table (`patch/fields.rs`), keyed by Kubernetes definition name
//! (`io.k8s.api.core.v1.PodSpec`) and field; the OpenAPI documents of [`crate::openapi`] publish
//! the same table as `x-kubernetes-patch-merge-key` / `x-kubernetes-patch-strategy`, so kubectl
//! computes its patches with the keys this module applies them with. A path through an object
//! is followed from the kind's definition along the `$ref`s of the generated schemas.

mod fields;
mod strategic;

use serde_json::Value;

use crate::resources::{Resource, RESOURCES};

pub(crate) use fields::{FieldPatch, PATCH_FIELDS};

/// Why a patch could not be applied. The messages are written for a Kubernetes `Status`;
/// [`PatchError::code`] says which HTTP status the API server answers with.
#[derive(Debug, thiserror::Error)]
pub enum PatchError {
    /// The body of a JSON patch is not a list of RFC 6902 operations.
    #[error("invalid JSON patch: {0}")]
    InvalidJsonPatch(String),
    /// An RFC 6902 operation failed against the object (a failed `test`, a missing path...).
    #[error("{0}")]
    JsonPatchFailed(String),
    /// The patch (or the patched result) is not a JSON object.
    #[error("{what} must be a JSON object")]
    NotAnObject { what: &'static str },
    /// A list item lacks the key its list is merged by.
    #[error("map: {item} does not contain declared merge key: {key}")]
    NoMergeKey { key: String, item: String },
    /// A `$patch` directive with an unknown value.
    #[error("unknown patch type: {directive} in map: {map}")]
    BadPatchType { directive: String, map: String },
    /// `$retainKeys` is not a list, or the patch sets a field it does not name.
    #[error("invalid patch format of retainKeys")]
    BadRetainKeys,
    /// `$deleteFromPrimitiveList/<field>` is malformed or names a list of objects.
    #[error("invalid patch format of primitive list")]
    BadPrimitiveList,
    /// `$setElementOrder/<field>` is malformed.
    #[error("invalid patch format of setElementOrder list")]
    BadSetElementOrder,
    /// The items of a patch list are not in the order `$setElementOrder` gives.
    #[error("the order in patch list {patch} doesn't match $setElementOrder list {order}")]
    SetElementOrderMismatch { patch: String, order: String },
    /// A list holding lists.
    #[error("lists of lists are not supported")]
    ListOfLists,
    /// A merged list mixing objects and scalars (or scalars of different types).
    #[error("list element types are not identical: {0}")]
    MixedList(String),
    /// A list of objects whose strategy has no merge key.
    #[error("cannot merge lists of objects without a merge key at {0}")]
    NoMergeKeyForList(String),
}

impl PatchError {
    /// The HTTP status the API server answers with: 422 where Kubernetes answers
    /// Unprocessable Entity (a JSON patch operation that fails, lists of lists), 400 otherwise.
    pub fn code(&self) -> u16 {
        match self {
            PatchError::JsonPatchFailed(_) | PatchError::ListOfLists => 422,
            _ => 400,
        }
    }

    /// The `reason` of the Kubernetes `Status` carrying this error.
    pub fn reason(&self) -> &'static str {
        if self.code() == 422 {
            "Invalid"
        } else {
            "BadRequest"
        }
    }
}

/// Applies an RFC 6902 JSON patch (a list of operations) to `original`.
pub fn json_patch(original: &Value, patch: &Value) -> Result<Value, PatchError> {
    let ops: json_patch::Patch = serde_json::from_value(patch.clone())
        .map_err(|e| PatchError::InvalidJsonPatch(e.to_string()))?;
    let mut doc = original.clone();
    json_patch::patch(&mut doc, &ops).map_err(|e| PatchError::JsonPatchFailed(e.to_string()))?;
    if !doc.is_object() {
        return Err(PatchError::NotAnObject {
            what: "the patched object",
        });
    }
    Ok(doc)
}

/// Applies an RFC 7396 JSON merge patch: objects merge key by key, `null` removes a key,
/// anything else (lists included) replaces.
pub fn merge_patch(original: &Value, patch: &Value) -> Result<Value, PatchError> {
    if !patch.is_object() {
        return Err(PatchError::NotAnObject {
            what: "a merge patch",
        });
    }
    let mut doc = original.clone();
    json_patch::merge(&mut doc, patch);
    Ok(doc)
}

/// Applies a strategic merge patch to an object of `resource`'s kind, as the Kubernetes API
/// server does for `application/strategic-merge-patch+json`.
pub fn strategic_merge_patch(
    resource: &Resource,
    original: &Value,
    patch: &Value,
) -> Result<Value, PatchError> {
    let Value::Object(patch) = patch else {
        return Err(PatchError::NotAnObject {
            what: "a strategic merge patch",
        });
    };
    let original = match original {
        Value::Object(m) => m.clone(),
        _ => serde_json::Map::new(),
    };
    let root = fields::definition_of(resource.group, resource.version, resource.kind);
    let merged = strategic::merge_map(original, patch.clone(), root)?;
    Ok(Value::Object(merged))
}

/// How a list field is patched by a strategic merge patch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListStrategy {
    /// The patch's list replaces the whole list (no `patchStrategy`, Kubernetes' default).
    Replace,
    /// Items are objects matched by this key; matching items merge, others are added.
    MergeByKey(&'static str),
    /// Items are scalars merged as a set (union), e.g. `metadata.finalizers`.
    MergePrimitives,
}

/// The strategy of the list at `path` (object field names from the root of a `kind` object,
/// list levels transparent: `["spec", "template", "spec", "containers", "ports"]` for a
/// Deployment's container ports). Unknown kinds and fields give [`ListStrategy::Replace`].
pub fn list_strategy(kind: &str, path: &[&str]) -> ListStrategy {
    field_at(kind, path).map_or(ListStrategy::Replace, |f| f.list)
}

/// Whether the field at `path` has the `retainKeys` patch strategy (kubectl then sends
/// `$retainKeys` for it, or for each of its items when it is a list): a pod's `spec.volumes`,
/// a Deployment's `spec.strategy`...
pub fn retain_keys_field(kind: &str, path: &[&str]) -> bool {
    field_at(kind, path).is_some_and(|f| f.retain_keys)
}

/// The table entry of the last field of `path`, after walking the schemas of `kind`.
fn field_at(kind: &str, path: &[&str]) -> Option<&'static FieldPatch> {
    let (last, parents) = path.split_last()?;
    let mut definition = root_definition(kind)?;
    for field in parents {
        definition = fields::child_definition(definition, field)?;
    }
    fields::lookup(definition, last)
}

/// The definition of a kind named without its group: the served resources first, then the
/// other kinds the OpenAPI documents describe (Scale, Binding...).
fn root_definition(kind: &str) -> Option<&'static str> {
    RESOURCES
        .iter()
        .find(|r| r.kind == kind)
        .and_then(|r| fields::definition_of(r.group, r.version, r.kind))
        .or_else(|| fields::definition_of_kind(kind))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn json_patch_applies_operations() {
        let obj = json!({"metadata": {"name": "a", "labels": {"x": "1"}}, "spec": {"replicas": 1}});
        let out = json_patch(
            &obj,
            &json!([
                {"op": "replace", "path": "/spec/replicas", "value": 3},
                {"op": "add", "path": "/metadata/labels/y", "value": "2"},
                {"op": "remove", "path": "/metadata/labels/x"}
            ]),
        )
        .expect("valid patch");
        assert_eq!(
            out,
            json!({"metadata": {"name": "a", "labels": {"y": "2"}}, "spec": {"replicas": 3}})
        );
    }

    #[test]
    fn json_patch_errors() {
        let obj = json!({"spec": {"replicas": 1}});
        let err = json_patch(&obj, &json!({"op": "add"})).expect_err("not a list");
        assert!(matches!(err, PatchError::InvalidJsonPatch(_)));
        assert_eq!(err.code(), 400);
        let err = json_patch(
            &obj,
            &json!([{"op": "test", "path": "/spec/replicas", "value": 2}]),
        )
        .expect_err("test fails");
        assert!(matches!(err, PatchError::JsonPatchFailed(_)));
        assert_eq!(err.code(), 422);
        assert_eq!(err.reason(), "Invalid");
        let err =
            json_patch(&obj, &json!([{"op": "remove", "path": "/nope"}])).expect_err("no path");
        assert!(err.to_string().contains("/nope"), "{err}");
        let err = json_patch(&obj, &json!([{"op": "replace", "path": "", "value": 1}]))
            .expect_err("root replaced by a scalar");
        assert!(matches!(err, PatchError::NotAnObject { .. }));
    }

    #[test]
    fn merge_patch_rfc7396() {
        let obj = json!({"metadata": {"labels": {"a": "1", "b": "2"}}, "spec": {"ports": [1, 2]}});
        let out = merge_patch(
            &obj,
            &json!({"metadata": {"labels": {"a": null, "c": "3"}}, "spec": {"ports": [3]}}),
        )
        .expect("valid patch");
        assert_eq!(
            out,
            json!({"metadata": {"labels": {"b": "2", "c": "3"}}, "spec": {"ports": [3]}})
        );
        let err = merge_patch(&obj, &json!([1])).expect_err("not an object");
        assert_eq!(err.to_string(), "a merge patch must be a JSON object");
        assert_eq!(err.code(), 400);
    }

    #[test]
    fn list_strategies() {
        use ListStrategy::*;
        let cases: &[(&str, &[&str], ListStrategy)] = &[
            ("Pod", &["spec", "containers"], MergeByKey("name")),
            (
                "Pod",
                &["spec", "containers", "ports"],
                MergeByKey("containerPort"),
            ),
            ("Pod", &["spec", "containers", "env"], MergeByKey("name")),
            (
                "Pod",
                &["spec", "containers", "volumeMounts"],
                MergeByKey("mountPath"),
            ),
            ("Pod", &["spec", "containers", "args"], Replace),
            (
                "Pod",
                &["spec", "initContainers", "volumeDevices"],
                MergeByKey("devicePath"),
            ),
            (
                "Pod",
                &["spec", "ephemeralContainers", "env"],
                MergeByKey("name"),
            ),
            ("Pod", &["spec", "volumes"], MergeByKey("name")),
            ("Pod", &["spec", "tolerations"], Replace),
            ("Pod", &["spec", "hostAliases"], MergeByKey("ip")),
            ("Pod", &["spec", "imagePullSecrets"], MergeByKey("name")),
            (
                "Pod",
                &["spec", "topologySpreadConstraints"],
                MergeByKey("topologyKey"),
            ),
            ("Pod", &["status", "conditions"], MergeByKey("type")),
            ("Pod", &["status", "podIPs"], MergeByKey("ip")),
            ("Pod", &["status", "containerStatuses"], Replace),
            ("Pod", &["metadata", "finalizers"], MergePrimitives),
            ("Pod", &["metadata", "ownerReferences"], MergeByKey("uid")),
            ("Pod", &["metadata", "managedFields"], Replace),
            (
                "Deployment",
                &["spec", "template", "spec", "containers"],
                MergeByKey("name"),
            ),
            (
                "Deployment",
                &["spec", "template", "spec", "containers", "ports"],
                MergeByKey("containerPort"),
            ),
            (
                "Deployment",
                &["spec", "template", "metadata", "finalizers"],
                MergePrimitives,
            ),
            ("Deployment", &["status", "conditions"], MergeByKey("type")),
            (
                "ReplicaSet",
                &["spec", "template", "spec", "volumes"],
                MergeByKey("name"),
            ),
            ("ReplicaSet", &["status", "conditions"], MergeByKey("type")),
            ("Service", &["spec", "ports"], MergeByKey("port")),
            ("Service", &["spec", "externalIPs"], Replace),
            ("Node", &["status", "addresses"], MergeByKey("type")),
            ("Node", &["status", "conditions"], MergeByKey("type")),
            ("Node", &["spec", "taints"], Replace),
            ("Node", &["spec", "podCIDRs"], MergePrimitives),
            ("Namespace", &["status", "conditions"], MergeByKey("type")),
            ("ServiceAccount", &["secrets"], MergeByKey("name")),
            ("ServiceAccount", &["imagePullSecrets"], Replace),
            ("Endpoints", &["subsets"], Replace),
            ("EndpointSlice", &["endpoints"], Replace),
            ("Ingress", &["spec", "rules"], Replace),
            ("ConfigMap", &["metadata", "finalizers"], MergePrimitives),
            ("NoSuchKind", &["spec", "containers"], Replace),
            ("Pod", &["spec", "nope", "containers"], Replace),
        ];
        for (kind, path, want) in cases {
            assert_eq!(list_strategy(kind, path), *want, "{kind} {path:?}");
        }
    }

    #[test]
    fn retain_keys_fields() {
        assert!(retain_keys_field("Pod", &["spec", "volumes"]));
        assert!(retain_keys_field(
            "Deployment",
            &["spec", "template", "spec", "volumes"]
        ));
        assert!(retain_keys_field("Deployment", &["spec", "strategy"]));
        assert!(!retain_keys_field("Deployment", &["spec", "template"]));
        assert!(!retain_keys_field("Pod", &["spec", "containers"]));
        assert!(!retain_keys_field("ReplicaSet", &["spec", "strategy"]));
    }
}

//! The patch metadata of Kubernetes fields: which lists merge and by what key, which fields
//! retain keys, and the list types server-side apply knows. Taken from the `patchStrategy`,
//! `patchMergeKey`, `+listType` and `+listMapKey` tags of k8s.io/api (core/v1, apps/v1) and
//! k8s.io/apimachinery (meta/v1) types.go, for every type reachable from a served kind.
//!
//! Fields are named by the Kubernetes definition that holds them, so one entry covers every
//! place the type appears (a `PodSpec` in a Pod, a Deployment's template, a ReplicaSet's).

use serde_json::Value;

use super::ListStrategy;
use crate::openapi::schemas;

/// Patch metadata of one field of one definition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FieldPatch {
    /// Kubernetes definition name of the type holding the field.
    pub definition: &'static str,
    /// JSON name of the field.
    pub field: &'static str,
    /// How a strategic merge patch merges the field when it is a list.
    pub list: ListStrategy,
    /// The field has the `retainKeys` patch strategy.
    pub retain_keys: bool,
    /// `x-kubernetes-list-type` ("map", "set" or "atomic") where Kubernetes publishes one.
    pub list_type: Option<&'static str>,
    /// `x-kubernetes-list-map-keys` for `map` lists.
    pub list_map_keys: &'static [&'static str],
}

impl FieldPatch {
    /// The `x-kubernetes-patch-strategy` value: "merge", "retainKeys" or "merge,retainKeys".
    pub fn patch_strategy(&self) -> Option<&'static str> {
        let merge = self.list != ListStrategy::Replace;
        match (merge, self.retain_keys) {
            (true, true) => Some("merge,retainKeys"),
            (true, false) => Some("merge"),
            (false, true) => Some("retainKeys"),
            (false, false) => None,
        }
    }

    /// The `x-kubernetes-patch-merge-key` value.
    pub fn merge_key(&self) -> Option<&'static str> {
        match self.list {
            ListStrategy::MergeByKey(key) => Some(key),
            _ => None,
        }
    }
}

/// A list merged by `key`, published as a `map` list keyed by `map_keys`.
const fn by_key(
    definition: &'static str,
    field: &'static str,
    key: &'static str,
    map_keys: &'static [&'static str],
) -> FieldPatch {
    FieldPatch {
        definition,
        field,
        list: ListStrategy::MergeByKey(key),
        retain_keys: false,
        list_type: if map_keys.is_empty() {
            None
        } else {
            Some("map")
        },
        list_map_keys: map_keys,
    }
}

/// Like [`by_key`], with `retainKeys` on each item.
const fn by_key_retain(
    definition: &'static str,
    field: &'static str,
    key: &'static str,
    map_keys: &'static [&'static str],
) -> FieldPatch {
    FieldPatch {
        retain_keys: true,
        ..by_key(definition, field, key, map_keys)
    }
}

/// A list of scalars merged as a set.
const fn set(definition: &'static str, field: &'static str) -> FieldPatch {
    FieldPatch {
        definition,
        field,
        list: ListStrategy::MergePrimitives,
        retain_keys: false,
        list_type: Some("set"),
        list_map_keys: &[],
    }
}

/// A field without a patch strategy that still carries a list type.
const fn list_type(
    definition: &'static str,
    field: &'static str,
    list_type: &'static str,
    map_keys: &'static [&'static str],
) -> FieldPatch {
    FieldPatch {
        definition,
        field,
        list: ListStrategy::Replace,
        retain_keys: false,
        list_type: Some(list_type),
        list_map_keys: map_keys,
    }
}

const NAME: &[&str] = &["name"];
const TYPE: &[&str] = &["type"];
const CONTAINER: &str = "io.k8s.api.core.v1.Container";
const EPHEMERAL: &str = "io.k8s.api.core.v1.EphemeralContainer";
const POD_SPEC: &str = "io.k8s.api.core.v1.PodSpec";
const META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta";

/// Every field with patch metadata, for the types reachable from the served kinds.
pub(crate) static PATCH_FIELDS: &[FieldPatch] = &[
    // meta/v1 ObjectMeta
    set(META, "finalizers"),
    by_key(META, "ownerReferences", "uid", &["uid"]),
    // core/v1 PodSpec
    by_key(POD_SPEC, "containers", "name", NAME),
    by_key(POD_SPEC, "initContainers", "name", NAME),
    by_key(POD_SPEC, "ephemeralContainers", "name", NAME),
    by_key_retain(POD_SPEC, "volumes", "name", NAME),
    by_key(POD_SPEC, "imagePullSecrets", "name", NAME),
    by_key(POD_SPEC, "hostAliases", "ip", &["ip"]),
    by_key(
        POD_SPEC,
        "topologySpreadConstraints",
        "topologyKey",
        &["topologyKey", "whenUnsatisfiable"],
    ),
    by_key_retain(POD_SPEC, "resourceClaims", "name", NAME),
    by_key(POD_SPEC, "schedulingGates", "name", NAME),
    list_type(POD_SPEC, "tolerations", "atomic", &[]),
    // core/v1 Container and EphemeralContainer (the same tags)
    by_key(
        CONTAINER,
        "ports",
        "containerPort",
        &["containerPort", "protocol"],
    ),
    by_key(CONTAINER, "env", "name", NAME),
    by_key(CONTAINER, "volumeMounts", "mountPath", &["mountPath"]),
    by_key(CONTAINER, "volumeDevices", "devicePath", &["devicePath"]),
    by_key(
        EPHEMERAL,
        "ports",
        "containerPort",
        &["containerPort", "protocol"],
    ),
    by_key(EPHEMERAL, "env", "name", NAME),
    by_key(EPHEMERAL, "volumeMounts", "mountPath", &["mountPath"]),
    by_key(EPHEMERAL, "volumeDevices", "devicePath", &["devicePath"]),
    list_type(
        "io.k8s.api.core.v1.ResourceRequirements",
        "claims",
        "map",
        NAME,
    ),
    list_type(
        "io.k8s.api.core.v1.ContainerRestartRuleOnExitCodes",
        "values",
        "set",
        &[],
    ),
    // core/v1 PodStatus and ContainerStatus
    by_key("io.k8s.api.core.v1.PodStatus", "conditions", "type", TYPE),
    by_key("io.k8s.api.core.v1.PodStatus", "podIPs", "ip", &["ip"]),
    by_key("io.k8s.api.core.v1.PodStatus", "hostIPs", "ip", &[]),
    by_key_retain(
        "io.k8s.api.core.v1.PodStatus",
        "resourceClaimStatuses",
        "name",
        NAME,
    ),
    by_key(
        "io.k8s.api.core.v1.ContainerStatus",
        "volumeMounts",
        "mountPath",
        &["mountPath"],
    ),
    by_key(
        "io.k8s.api.core.v1.ContainerStatus",
        "allocatedResourcesStatus",
        "name",
        NAME,
    ),
    list_type(
        "io.k8s.api.core.v1.ResourceStatus",
        "resources",
        "map",
        &["resourceID"],
    ),
    // core/v1 Node
    set("io.k8s.api.core.v1.NodeSpec", "podCIDRs"),
    list_type("io.k8s.api.core.v1.NodeSpec", "taints", "atomic", &[]),
    by_key("io.k8s.api.core.v1.NodeStatus", "conditions", "type", TYPE),
    by_key("io.k8s.api.core.v1.NodeStatus", "addresses", "type", &[]),
    // core/v1 Namespace, Service, ServiceAccount
    by_key(
        "io.k8s.api.core.v1.NamespaceStatus",
        "conditions",
        "type",
        TYPE,
    ),
    by_key(
        "io.k8s.api.core.v1.ServiceSpec",
        "ports",
        "port",
        &["port", "protocol"],
    ),
    by_key(
        "io.k8s.api.core.v1.ServiceStatus",
        "conditions",
        "type",
        TYPE,
    ),
    by_key("io.k8s.api.core.v1.ServiceAccount", "secrets", "name", &[]),
    // discovery/v1
    list_type("io.k8s.api.discovery.v1.Endpoint", "addresses", "set", &[]),
    // apps/v1
    FieldPatch {
        definition: "io.k8s.api.apps.v1.DeploymentSpec",
        field: "strategy",
        list: ListStrategy::Replace,
        retain_keys: true,
        list_type: None,
        list_map_keys: &[],
    },
    by_key(
        "io.k8s.api.apps.v1.DeploymentStatus",
        "conditions",
        "type",
        TYPE,
    ),
    by_key(
        "io.k8s.api.apps.v1.ReplicaSetStatus",
        "conditions",
        "type",
        TYPE,
    ),
];

/// The patch metadata of `field` in `definition`, if it has any.
pub(crate) fn lookup(definition: &str, field: &str) -> Option<&'static FieldPatch> {
    PATCH_FIELDS
        .iter()
        .find(|f| f.field == field && f.definition == definition)
}

/// The strategy of `field` in `definition` (unknown definitions and fields replace).
pub(crate) fn strategy(definition: Option<&str>, field: &str) -> ListStrategy {
    definition
        .and_then(|d| lookup(d, field))
        .map_or(ListStrategy::Replace, |f| f.list)
}

/// The definition of the served kind `group/version/kind`.
pub(crate) fn definition_of(group: &str, version: &str, kind: &str) -> Option<&'static str> {
    schemas::catalog()
        .kinds
        .iter()
        .find(|k| k.group == group && k.version == version && k.kind == kind)
        .map(|k| k.definition.as_str())
}

/// The definition of a kind named without group and version (the first one described).
pub(crate) fn definition_of_kind(kind: &str) -> Option<&'static str> {
    schemas::catalog()
        .kinds
        .iter()
        .find(|k| k.kind == kind)
        .map(|k| k.definition.as_str())
}

/// The definition of the values of `field` in `definition`: the type of the field, of its
/// items when it is a list, of its values when it is a map. `None` for scalars and unknowns.
pub(crate) fn child_definition(definition: &str, field: &str) -> Option<&'static str> {
    let property = schemas::catalog()
        .definitions
        .get(definition)?
        .get("properties")?
        .get(field)?;
    referenced_definition(property)
}

/// Follows a property schema to the definition it names, through `allOf`, `items` and
/// `additionalProperties`.
fn referenced_definition(schema: &'static Value) -> Option<&'static str> {
    if let Some(r) = schema.get("$ref").and_then(Value::as_str) {
        return r.strip_prefix(schemas::REF_PREFIX);
    }
    if let Some(first) = schema
        .get("allOf")
        .and_then(Value::as_array)
        .and_then(|a| a.first())
    {
        return referenced_definition(first);
    }
    if let Some(items) = schema.get("items") {
        return referenced_definition(items);
    }
    match schema.get("additionalProperties") {
        Some(v @ Value::Object(_)) => referenced_definition(v),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_entry_names_an_existing_field() {
        let defs = &schemas::catalog().definitions;
        for f in PATCH_FIELDS {
            let def = defs
                .get(f.definition)
                .unwrap_or_else(|| panic!("no definition {}", f.definition));
            let prop = def
                .get("properties")
                .and_then(|p| p.get(f.field))
                .unwrap_or_else(|| panic!("no field {}.{}", f.definition, f.field));
            let is_list = prop.get("type").and_then(Value::as_str) == Some("array");
            assert_eq!(
                is_list,
                f.list != ListStrategy::Replace || f.list_type.is_some(),
                "{}.{}",
                f.definition,
                f.field
            );
            if let ListStrategy::MergeByKey(key) = f.list {
                let item = child_definition(f.definition, f.field)
                    .unwrap_or_else(|| panic!("{}.{} has no item type", f.definition, f.field));
                assert!(
                    defs[item]["properties"].get(key).is_some(),
                    "{item} has no merge key {key}"
                );
            }
        }
    }

    #[test]
    fn entries_are_unique() {
        for (i, a) in PATCH_FIELDS.iter().enumerate() {
            for b in &PATCH_FIELDS[i + 1..] {
                assert!(
                    !(a.definition == b.definition && a.field == b.field),
                    "{}.{} twice",
                    a.definition,
                    a.field
                );
            }
        }
    }

    #[test]
    fn strategies_published() {
        let volumes = lookup(POD_SPEC, "volumes").expect("in the table");
        assert_eq!(volumes.patch_strategy(), Some("merge,retainKeys"));
        assert_eq!(volumes.merge_key(), Some("name"));
        let finalizers = lookup(META, "finalizers").expect("in the table");
        assert_eq!(finalizers.patch_strategy(), Some("merge"));
        assert_eq!(finalizers.merge_key(), None);
        let strategy = lookup("io.k8s.api.apps.v1.DeploymentSpec", "strategy").expect("in table");
        assert_eq!(strategy.patch_strategy(), Some("retainKeys"));
        let tolerations = lookup(POD_SPEC, "tolerations").expect("in the table");
        assert_eq!(tolerations.patch_strategy(), None);
    }
}

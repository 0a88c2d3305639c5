//! The schema catalog: every definition reachable from the described kinds, generated once
//! from k8s-openapi's `JsonSchema` impls (which already use Kubernetes' dotted definition names
//! and carry the API reference's descriptions), then completed with what k8s-openapi leaves
//! out: `x-kubernetes-group-version-kind` on kinds, the `<Kind>List` definitions, and the patch
//! metadata of [`crate::patch`]'s table.
//!
//! References are `#/components/schemas/<name>` with their siblings kept (a field's
//! `description` next to its `$ref`); the v3 and v2 renderings in [`super::docs`] reshape them.

use std::sync::OnceLock;

use k8s_openapi::api::{apps, autoscaling, coordination, core, discovery, networking};
use k8s_openapi::apimachinery::pkg::apis::meta::v1 as meta;
use schemars::generate::{SchemaGenerator, SchemaSettings};
use schemars::JsonSchema;
use serde_json::{json, Map, Value};

use crate::patch::PATCH_FIELDS;
use crate::resources::RESOURCES;

/// How a definition is referenced.
pub(crate) const REF_PREFIX: &str = "#/components/schemas/";

/// A kind with a definition: a served kind, its list, or a kind of a subresource.
#[derive(Debug, Clone)]
pub(crate) struct KindSchema {
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    /// Kubernetes definition name, e.g. `io.k8s.api.core.v1.Pod`.
    pub definition: String,
}

/// All definitions, and which kinds they describe.
#[derive(Debug)]
pub(crate) struct Catalog {
    pub definitions: Map<String, Value>,
    pub kinds: Vec<KindSchema>,
}

impl Catalog {
    /// The definition of `group/version/kind`.
    pub fn definition(&self, group: &str, version: &str, kind: &str) -> Option<&str> {
        self.kinds
            .iter()
            .find(|k| k.group == group && k.version == version && k.kind == kind)
            .map(|k| k.definition.as_str())
    }
}

/// The catalog, built on first use.
pub(crate) fn catalog() -> &'static Catalog {
    static CATALOG: OnceLock<Catalog> = OnceLock::new();
    CATALOG.get_or_init(build)
}

/// Declares the Rust type of every kind with a schema.
macro_rules! kinds {
    ($($group:literal $version:literal $kind:literal => $ty:ty,)*) => {
        /// Generates the schemas of every kind, returning where each one is.
        fn generate_kinds(generator: &mut SchemaGenerator) -> Vec<KindSchema> {
            vec![$(
                KindSchema {
                    group: $group,
                    version: $version,
                    kind: $kind,
                    definition: {
                        generator.subschema_for::<$ty>();
                        <$ty as JsonSchema>::schema_name().into_owned()
                    },
                },
            )*]
        }
    };
}

kinds! {
    "" "v1" "Namespace" => core::v1::Namespace,
    "" "v1" "Node" => core::v1::Node,
    "" "v1" "Pod" => core::v1::Pod,
    "" "v1" "Service" => core::v1::Service,
    "" "v1" "Endpoints" => core::v1::Endpoints,
    "" "v1" "ConfigMap" => core::v1::ConfigMap,
    "" "v1" "Secret" => core::v1::Secret,
    "" "v1" "ServiceAccount" => core::v1::ServiceAccount,
    "" "v1" "Event" => core::v1::Event,
    "" "v1" "Binding" => core::v1::Binding,
    "" "v1" "Status" => meta::Status,
    "discovery.k8s.io" "v1" "EndpointSlice" => discovery::v1::EndpointSlice,
    "apps" "v1" "Deployment" => apps::v1::Deployment,
    "apps" "v1" "ReplicaSet" => apps::v1::ReplicaSet,
    "networking.k8s.io" "v1" "Ingress" => networking::v1::Ingress,
    "networking.k8s.io" "v1" "IngressClass" => networking::v1::IngressClass,
    "networking.k8s.io" "v1" "NetworkPolicy" => networking::v1::NetworkPolicy,
    "coordination.k8s.io" "v1" "Lease" => coordination::v1::Lease,
    "autoscaling" "v1" "Scale" => autoscaling::v1::Scale,
}

/// Definition names of the types every document's operations use besides the kinds.
pub(crate) const DELETE_OPTIONS: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions";
pub(crate) const PATCH: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.Patch";
pub(crate) const STATUS: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.Status";
const LIST_META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.ListMeta";

fn build() -> Catalog {
    let mut generator = SchemaSettings::openapi3()
        .with(|s| {
            // Keep `$ref` siblings (descriptions); docs.rs reshapes them per OpenAPI version.
            s.transforms.clear();
            s.meta_schema = None;
        })
        .into_generator();
    let mut kinds = generate_kinds(&mut generator);
    generator.subschema_for::<meta::DeleteOptions>();
    generator.subschema_for::<meta::Patch>();
    generator.subschema_for::<meta::ListMeta>();
    generator.subschema_for::<meta::WatchEvent<core::v1::Pod>>();
    let mut definitions = generator.take_definitions(false);

    for k in &kinds {
        if let Some(Value::Object(def)) = definitions.get_mut(&k.definition) {
            def.insert("x-kubernetes-group-version-kind".into(), gvk_list(k));
            // k8s-openapi marks `metadata` required (it is not an Option in Rust); Kubernetes
            // does not, and explain would print it as required.
            if let Some(Value::Array(required)) = def.get_mut("required") {
                required.retain(|f| f != "metadata");
                if required.is_empty() {
                    def.shift_remove("required");
                }
            }
        }
    }

    for r in RESOURCES {
        let Some(item) = kinds
            .iter()
            .find(|k| k.group == r.group && k.version == r.version && k.kind == r.kind)
            .map(|k| k.definition.clone())
        else {
            continue;
        };
        let list = KindSchema {
            group: r.group,
            version: r.version,
            kind: r.list_kind,
            definition: format!("{item}List"),
        };
        definitions.insert(list.definition.clone(), list_schema(&list, &item, r.plural));
        kinds.push(list);
    }

    for f in PATCH_FIELDS {
        let Some(property) = definitions
            .get_mut(f.definition)
            .and_then(|d| d.get_mut("properties"))
            .and_then(|p| p.get_mut(f.field))
            .and_then(Value::as_object_mut)
        else {
            continue;
        };
        if !f.list_map_keys.is_empty() {
            property.insert("x-kubernetes-list-map-keys".into(), json!(f.list_map_keys));
        }
        if let Some(t) = f.list_type {
            property.insert("x-kubernetes-list-type".into(), json!(t));
        }
        if let Some(key) = f.merge_key() {
            property.insert("x-kubernetes-patch-merge-key".into(), json!(key));
        }
        if let Some(strategy) = f.patch_strategy() {
            property.insert("x-kubernetes-patch-strategy".into(), json!(strategy));
        }
    }

    Catalog { definitions, kinds }
}

/// `[{"group", "kind", "version"}]`, as Kubernetes writes it on definitions.
fn gvk_list(k: &KindSchema) -> Value {
    json!([{"group": k.group, "kind": k.kind, "version": k.version}])
}

/// The `<Kind>List` definition, as Kubernetes publishes it.
fn list_schema(list: &KindSchema, item: &str, plural: &str) -> Value {
    let kind = list.kind.strip_suffix("List").unwrap_or(list.kind);
    json!({
        "description": format!("{} is a list of {kind} objects.", list.kind),
        "type": "object",
        "properties": {
            "apiVersion": {
                "description": "APIVersion defines the versioned schema of this representation of an object. Servers should convert recognized schemas to the latest internal value, and may reject unrecognized values. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#resources",
                "type": "string"
            },
            "items": {
                "description": format!("List of {plural}."),
                "type": "array",
                "items": {"$ref": format!("{REF_PREFIX}{item}")}
            },
            "kind": {
                "description": "Kind is a string value representing the REST resource this object represents. Servers may infer this from the endpoint the client submits requests to. Cannot be updated. In CamelCase. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#types-kinds",
                "type": "string"
            },
            "metadata": {
                "$ref": format!("{REF_PREFIX}{LIST_META}"),
                "description": "Standard list metadata. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#types-kinds"
            }
        },
        "required": ["items"],
        "x-kubernetes-group-version-kind": gvk_list(list)
    })
}

/// Calls `f` on every `$ref` string under `value`.
pub(crate) fn for_each_ref(value: &Value, f: &mut impl FnMut(&str)) {
    match value {
        Value::Object(m) => {
            for (k, v) in m {
                match (k.as_str(), v) {
                    ("$ref", Value::String(r)) => f(r),
                    _ => for_each_ref(v, f),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|v| for_each_ref(v, f)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_ref_resolves() {
        let c = catalog();
        for (name, def) in &c.definitions {
            for_each_ref(def, &mut |r| {
                let target = r.strip_prefix(REF_PREFIX).unwrap_or(r);
                assert!(
                    c.definitions.contains_key(target),
                    "{name} refers to missing {r}"
                );
            });
        }
        for name in [DELETE_OPTIONS, PATCH, STATUS, LIST_META] {
            assert!(c.definitions.contains_key(name), "{name}");
        }
    }

    #[test]
    fn kinds_have_gvk_and_no_required_metadata() {
        let c = catalog();
        let pod = &c.definitions["io.k8s.api.core.v1.Pod"];
        assert_eq!(
            pod["x-kubernetes-group-version-kind"],
            json!([{"group": "", "kind": "Pod", "version": "v1"}])
        );
        assert!(pod.get("required").is_none(), "{}", pod["required"]);
        let list = &c.definitions["io.k8s.api.apps.v1.DeploymentList"];
        assert_eq!(
            list["x-kubernetes-group-version-kind"],
            json!([{"group": "apps", "kind": "DeploymentList", "version": "v1"}])
        );
        assert_eq!(
            list["properties"]["items"]["items"]["$ref"],
            "#/components/schemas/io.k8s.api.apps.v1.Deployment"
        );
        assert_eq!(
            c.definition("autoscaling", "v1", "Scale"),
            Some("io.k8s.api.autoscaling.v1.Scale")
        );
    }
}

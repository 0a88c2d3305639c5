//! The OpenAPI documents of the served API: `/openapi/v3` (an index), `/openapi/v3/api/v1` and
//! `/openapi/v3/apis/<group>/<version>` (OpenAPI 3.0, one per group-version) and `/openapi/v2`
//! (Swagger 2.0, everything in one), shaped as Kubernetes publishes them, for kubectl:
//!
//! - validation (`--validate=strict`, the default): kubectl reads the index, fetches the
//!   group-version document and looks for a PATCH operation whose
//!   `x-kubernetes-group-version-kind` is the object's kind and whose parameters list
//!   `fieldValidation`; then it leaves validation to the server (`?fieldValidation=Strict`).
//!   Otherwise it falls back to validating on the client with `/openapi/v2`.
//! - `kubectl explain`: finds the operation of the resource's paths carrying the GVK, then the
//!   `components.schemas` entry whose `x-kubernetes-group-version-kind` list holds it, and walks
//!   `properties` through `$ref`, `allOf`, `items` and `additionalProperties`, printing
//!   `description`s.
//! - `kubectl apply`: computes its three-way strategic merge patch from the kind's schema,
//!   reading `x-kubernetes-patch-merge-key` / `x-kubernetes-patch-strategy` on each field, once
//!   the PATCH operation's request body lists `application/strategic-merge-patch+json`.
//!
//! Schemas come from k8s-openapi's `JsonSchema` impls (descriptions included) completed with
//! the GVKs, the list kinds and [`crate::patch`]'s merge-key table; everything is generated once
//! on first use and kept.

mod docs;
mod paths;
pub(crate) mod schemas;
mod v2proto;

use serde_json::{json, Map, Value};

/// `GET /openapi/v3`: every group-version document with its URL and digest,
/// `{"paths": {"api/v1": {"serverRelativeURL": "/openapi/v3/api/v1?hash=..."}, ...}}`.
pub fn v3_index() -> Value {
    let mut index = Map::new();
    for (group, version, doc) in &docs::docs().v3 {
        let path = v3_path(group, version);
        index.insert(
            path.clone(),
            json!({"serverRelativeURL": format!("/openapi/v3/{path}?hash={}", doc.hash)}),
        );
    }
    json!({ "paths": index })
}

/// The OpenAPI 3.0 document of one group-version ("" for the core group), or `None` when the
/// group-version is not served.
pub fn v3_group_version(group: &str, version: &str) -> Option<Value> {
    v3_doc(group, version).map(|d| d.value.clone())
}

/// [`v3_group_version`] serialized, ready to send (built once).
pub fn v3_group_version_json(group: &str, version: &str) -> Option<&'static str> {
    v3_doc(group, version).map(|d| d.json.as_str())
}

/// The digest of a group-version document, as published in the index's `hash=`; empty when
/// the group-version is not served.
pub fn v3_hash(group: &str, version: &str) -> String {
    v3_doc(group, version).map_or_else(String::new, |d| d.hash.clone())
}

/// The index key of a group-version and the tail of its URL: `api/v1`, `apis/apps/v1`.
pub fn v3_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

/// The group-version of an index key or URL tail (`api/v1`, `apis/apps/v1`), if served.
pub fn v3_group_version_of_path(path: &str) -> Option<(&'static str, &'static str)> {
    docs::docs()
        .v3
        .iter()
        .find(|(g, v, _)| v3_path(g, v) == path)
        .map(|(g, v, _)| (*g, *v))
}

/// `GET /openapi/v2`: the Swagger 2.0 document of every served resource.
pub fn v2_document() -> Value {
    docs::docs().v2.value.clone()
}

/// [`v2_document`] serialized, ready to send (built once).
pub fn v2_document_json() -> &'static str {
    &docs::docs().v2.json
}

/// The media type kubectl (client-go) asks `/openapi/v2` for, and the only encoding it decodes
/// there. Kubernetes also accepts it spelled with a `.` for the `@`.
pub const V2_PROTOBUF_MEDIA_TYPE: &str =
    "application/com.github.proto-openapi.spec.v2@v1.0+protobuf";

/// The `Content-Type` to answer [`v2_document_protobuf`] with, as Kubernetes does: Go's
/// media-type parser rejects the `@` of the requested type, so the answer must not echo it.
pub const V2_PROTOBUF_CONTENT_TYPE: &str =
    "application/com.github.proto-openapi.spec.v2.v1.0+protobuf";

/// [`v2_document`] as the gnostic `openapi.v2.Document` protobuf, for requests accepting
/// [`V2_PROTOBUF_MEDIA_TYPE`]; send it with [`V2_PROTOBUF_CONTENT_TYPE`] (built once).
pub fn v2_document_protobuf() -> &'static [u8] {
    &docs::docs().v2_protobuf
}

fn v3_doc(group: &str, version: &str) -> Option<&'static docs::Doc> {
    docs::docs()
        .v3
        .iter()
        .find(|(g, v, _)| *g == group && *v == version)
        .map(|(_, _, d)| d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::{group_versions, RESOURCES};

    fn doc(group: &str, version: &str) -> Value {
        v3_group_version(group, version).expect("served group-version")
    }

    /// Resolves `#/components/schemas/<name>` in a v3 document.
    fn resolve<'a>(doc: &'a Value, r: &str) -> &'a Value {
        let name = r
            .strip_prefix("#/components/schemas/")
            .unwrap_or_else(|| panic!("bad ref {r}"));
        doc["components"]["schemas"]
            .get(name)
            .unwrap_or_else(|| panic!("{r} is not in the document"))
    }

    /// The schema a property leads to, the way kubectl follows it (`allOf[0]`, `$ref`, `items`).
    fn follow<'a>(doc: &'a Value, schema: &'a Value) -> &'a Value {
        let mut s = schema;
        loop {
            if let Some(first) = s.get("allOf").and_then(|a| a.get(0)) {
                s = first;
            } else if let Some(r) = s.get("$ref").and_then(Value::as_str) {
                s = resolve(doc, r);
            } else if let Some(items) = s.get("items") {
                s = items;
            } else {
                return s;
            }
        }
    }

    /// The top-level schema carrying a GVK, as kubectl explain and apply find it.
    fn kind_schema<'a>(doc: &'a Value, group: &str, version: &str, kind: &str) -> &'a Value {
        let want = json!({"group": group, "kind": kind, "version": version});
        doc["components"]["schemas"]
            .as_object()
            .expect("schemas are a map")
            .values()
            .find(|s| {
                s["x-kubernetes-group-version-kind"]
                    .as_array()
                    .is_some_and(|l| l.contains(&want))
            })
            .unwrap_or_else(|| panic!("no schema for {group}/{version} {kind}"))
    }

    /// Walks field names from a kind's schema; returns the last property schema (unresolved,
    /// where kubectl reads the patch extensions).
    fn field<'a>(doc: &'a Value, kind: &'a Value, path: &[&str]) -> &'a Value {
        let mut schema = kind;
        let mut property = kind;
        for name in path {
            property = schema["properties"]
                .get(*name)
                .unwrap_or_else(|| panic!("no field {name}"));
            schema = follow(doc, property);
        }
        property
    }

    #[test]
    fn index_lists_every_group_version_with_a_hash() {
        let index = v3_index();
        let paths = index["paths"].as_object().expect("paths");
        assert_eq!(paths.len(), group_versions().len());
        for (g, v) in group_versions() {
            let key = v3_path(g, v);
            let url = paths[&key]["serverRelativeURL"].as_str().expect("url");
            let hash = v3_hash(g, v);
            assert_eq!(hash.len(), 32);
            assert_eq!(url, format!("/openapi/v3/{key}?hash={hash}"));
            assert_eq!(v3_group_version_of_path(&key), Some((g, v)));
            let json = v3_group_version_json(g, v).expect("served");
            assert_eq!(docs::digest(json.as_bytes()), hash);
        }
        assert!(paths.contains_key("api/v1"));
        assert!(paths.contains_key("apis/apps/v1"));
        assert_eq!(v3_hash("nope", "v1"), "");
        assert!(v3_group_version("apps", "v2").is_none());
        assert!(v3_group_version_of_path("apis/nope/v1").is_none());
    }

    #[test]
    fn pod_schema_has_its_gvk_and_descriptions() {
        let core = doc("", "v1");
        assert_eq!(core["openapi"], "3.0.0");
        let pod = &core["components"]["schemas"]["io.k8s.api.core.v1.Pod"];
        assert_eq!(
            pod["x-kubernetes-group-version-kind"],
            json!([{"group": "", "kind": "Pod", "version": "v1"}])
        );
        assert!(pod["description"]
            .as_str()
            .is_some_and(|d| d.starts_with("Pod is a collection of containers")));
        // `kubectl explain pods.spec`: the spec field keeps its own description beside allOf.
        let spec = &pod["properties"]["spec"];
        assert_eq!(
            spec["allOf"],
            json!([{"$ref": "#/components/schemas/io.k8s.api.core.v1.PodSpec"}])
        );
        assert!(spec["description"]
            .as_str()
            .is_some_and(|d| d.starts_with("Specification of the desired behavior")));
        let image = field(&core, pod, &["spec", "containers", "image"]);
        assert!(image["description"]
            .as_str()
            .is_some_and(|d| d.contains("Container image name")));
    }

    #[test]
    fn list_fields_carry_merge_keys() {
        let core = doc("", "v1");
        let pod = kind_schema(&core, "", "v1", "Pod");
        let containers = field(&core, pod, &["spec", "containers"]);
        assert_eq!(containers["x-kubernetes-patch-merge-key"], "name");
        assert_eq!(containers["x-kubernetes-patch-strategy"], "merge");
        assert_eq!(containers["x-kubernetes-list-type"], "map");
        assert_eq!(containers["x-kubernetes-list-map-keys"], json!(["name"]));
        let volumes = field(&core, pod, &["spec", "volumes"]);
        assert_eq!(volumes["x-kubernetes-patch-strategy"], "merge,retainKeys");
        let ports = field(&core, pod, &["spec", "containers", "ports"]);
        assert_eq!(ports["x-kubernetes-patch-merge-key"], "containerPort");
        let finalizers = field(&core, pod, &["metadata", "finalizers"]);
        assert_eq!(finalizers["x-kubernetes-patch-strategy"], "merge");
        assert!(finalizers.get("x-kubernetes-patch-merge-key").is_none());
        let tolerations = field(&core, pod, &["spec", "tolerations"]);
        assert!(tolerations.get("x-kubernetes-patch-strategy").is_none());
        let service = kind_schema(&core, "", "v1", "Service");
        assert_eq!(
            field(&core, service, &["spec", "ports"])["x-kubernetes-patch-merge-key"],
            "port"
        );

        // A Deployment's pod template, in the apps/v1 document.
        let apps = doc("apps", "v1");
        let deploy = kind_schema(&apps, "apps", "v1", "Deployment");
        let env = field(
            &apps,
            deploy,
            &["spec", "template", "spec", "containers", "env"],
        );
        assert_eq!(env["x-kubernetes-patch-merge-key"], "name");
        let strategy = field(&apps, deploy, &["spec", "strategy"]);
        assert_eq!(strategy["x-kubernetes-patch-strategy"], "retainKeys");
        let conditions = field(&apps, deploy, &["status", "conditions"]);
        assert_eq!(conditions["x-kubernetes-patch-merge-key"], "type");
    }

    #[test]
    fn patch_operations_declare_server_side_validation() {
        for r in RESOURCES {
            let d = doc(r.group, r.version);
            let want = json!({"group": r.group, "kind": r.kind, "version": r.version});
            let patches: Vec<&Value> = d["paths"]
                .as_object()
                .expect("paths")
                .values()
                .filter_map(|p| p.get("patch"))
                .filter(|op| op["x-kubernetes-group-version-kind"] == want)
                .collect();
            assert!(!patches.is_empty(), "{} has no PATCH operation", r.kind);
            for op in patches {
                let names: Vec<&str> = op["parameters"]
                    .as_array()
                    .expect("parameters")
                    .iter()
                    .filter_map(|p| p["name"].as_str())
                    .collect();
                assert!(names.contains(&"fieldValidation"), "{}: {names:?}", r.kind);
                assert!(names.contains(&"dryRun"), "{}: {names:?}", r.kind);
                assert!(
                    op["requestBody"]["content"]
                        .get("application/strategic-merge-patch+json")
                        .is_some(),
                    "{}",
                    r.kind
                );
                assert_eq!(op["x-kubernetes-action"], "patch");
            }
        }
        let core = doc("", "v1");
        let pod = &core["paths"]["/api/v1/namespaces/{namespace}/pods/{name}"];
        assert_eq!(pod["patch"]["operationId"], "patchCoreV1NamespacedPod");
        let path_params: Vec<&str> = pod["parameters"]
            .as_array()
            .expect("path parameters")
            .iter()
            .filter_map(|p| p["name"].as_str())
            .collect();
        assert_eq!(path_params, ["name", "namespace", "pretty"]);
        assert_eq!(pod["parameters"][0]["required"], true);
    }

    #[test]
    fn every_served_kind_has_a_schema_with_its_gvk() {
        for r in RESOURCES {
            let d = doc(r.group, r.version);
            for kind in [r.kind, r.list_kind] {
                let schema = kind_schema(&d, r.group, r.version, kind);
                assert!(schema["properties"].get("apiVersion").is_some(), "{kind}");
            }
            // explain finds the GVK on the resource's paths.
            let base = if r.group.is_empty() {
                format!("/api/{}", r.version)
            } else {
                format!("/apis/{}/{}", r.group, r.version)
            };
            let list = &d["paths"][format!("{base}/{}", r.plural)]["get"];
            assert_eq!(list["x-kubernetes-group-version-kind"]["kind"], r.kind);
            assert_eq!(list["x-kubernetes-action"], "list");
        }
    }

    #[test]
    fn documents_are_self_contained() {
        for (g, v) in group_versions() {
            let d = doc(g, v);
            schemas::for_each_ref(&d, &mut |r| {
                resolve(&d, r);
            });
            // No `$ref` keeps siblings in OpenAPI 3.
            fn no_siblings(v: &Value) {
                match v {
                    Value::Object(m) => {
                        assert!(!(m.contains_key("$ref") && m.len() > 1), "{v}");
                        m.values().for_each(no_siblings);
                    }
                    Value::Array(a) => a.iter().for_each(no_siblings),
                    _ => {}
                }
            }
            no_siblings(&d["components"]);
        }
    }

    #[test]
    fn v2_document_uses_definitions() {
        let v2 = v2_document();
        assert_eq!(v2["swagger"], "2.0");
        let defs = v2["definitions"].as_object().expect("definitions");
        schemas::for_each_ref(&v2, &mut |r| {
            let name = r
                .strip_prefix("#/definitions/")
                .unwrap_or_else(|| panic!("bad ref {r}"));
            assert!(defs.contains_key(name), "{r}");
        });
        let spec = &defs["io.k8s.api.core.v1.PodSpec"]["properties"]["containers"];
        assert_eq!(spec["x-kubernetes-patch-merge-key"], "name");
        // Swagger 2.0 keeps a field's description beside its `$ref`.
        let pod_spec = &defs["io.k8s.api.core.v1.Pod"]["properties"]["spec"];
        assert_eq!(pod_spec["$ref"], "#/definitions/io.k8s.api.core.v1.PodSpec");
        assert!(pod_spec["description"].is_string());
        let patch =
            &v2["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]["patch"];
        let names: Vec<&str> = patch["parameters"]
            .as_array()
            .expect("parameters")
            .iter()
            .filter_map(|p| p["name"].as_str())
            .collect();
        assert!(names.contains(&"fieldValidation") && names.contains(&"body"));
        assert_eq!(
            patch["x-kubernetes-group-version-kind"],
            json!({"group": "apps", "kind": "Deployment", "version": "v1"})
        );
        assert_eq!(v2_document_json(), v2.to_string());
        // Document{swagger = 1: "2.0", ...} in protobuf.
        assert!(v2_document_protobuf().starts_with(&[0x0a, 3, b'2', b'.', b'0']));
    }
}

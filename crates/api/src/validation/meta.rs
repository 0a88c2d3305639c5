//! ObjectMeta checks: names, namespace, labels, annotations, owner references, finalizers, and
//! what an update may not change.

use serde_json::{Map, Value};

use super::checks::{
    is_dns1035_label, is_dns1123_label, is_dns1123_subdomain, is_qualified_name,
    is_valid_label_value, mask_trailing_dash,
};
use super::{go_quote, json, Errs};
use crate::Resource;

/// The most bytes all annotations of an object may hold together.
pub(crate) const TOTAL_ANNOTATION_SIZE_LIMIT: usize = 256 * 1024;

/// Finalizer names without a `/` that Kubernetes accepts.
const STANDARD_FINALIZERS: &[&str] = &["kubernetes", "orphan", "foregroundDeletion"];

/// Which syntax a kind's names follow.
#[derive(Clone, Copy)]
enum NameRule {
    Subdomain,
    Label,
    Dns1035,
    /// Core Events: legacy validation checks no name syntax.
    Any,
}

fn name_rule(resource: &Resource) -> NameRule {
    match (resource.group, resource.kind) {
        ("", "Namespace") => NameRule::Label,
        ("", "Service") => NameRule::Dns1035,
        ("", "Event") => NameRule::Any,
        _ => NameRule::Subdomain,
    }
}

/// The name check of a rule; `prefix` is set for a `generateName`.
fn check_name(rule: NameRule, name: &str, prefix: bool) -> Vec<String> {
    let name = if prefix {
        mask_trailing_dash(name)
    } else {
        name.to_string()
    };
    match rule {
        NameRule::Subdomain => is_dns1123_subdomain(&name),
        NameRule::Label => is_dns1123_label(&name),
        NameRule::Dns1035 => is_dns1035_label(&name),
        NameRule::Any => Vec::new(),
    }
}

/// `metadata` of a new or updated object.
pub(crate) fn validate_meta(resource: &Resource, obj: &Value, e: &mut Errs) {
    let empty = Value::Object(Map::new());
    let meta = obj
        .get("metadata")
        .filter(|m| m.is_object())
        .unwrap_or(&empty);
    let rule = name_rule(resource);
    let name = json::str(meta, "name");
    let generate = json::str(meta, "generateName");
    if !generate.is_empty() {
        e.each_invalid(
            "metadata.generateName",
            generate,
            check_name(rule, generate, true),
        );
    }
    if name.is_empty() {
        if generate.is_empty() {
            e.required("metadata.name", "name or generateName is required");
        }
    } else {
        e.each_invalid("metadata.name", name, check_name(rule, name, false));
    }
    validate_object_meta_common(resource.namespaced, meta, "metadata", e);
}

/// The parts of ObjectMeta checked the same way for every kind.
fn validate_object_meta_common(namespaced: bool, meta: &Value, path: &str, e: &mut Errs) {
    let ns = json::str(meta, "namespace");
    if namespaced {
        if ns.is_empty() {
            e.required(&format!("{path}.namespace"), "");
        } else {
            e.each_invalid(&format!("{path}.namespace"), ns, is_dns1123_label(ns));
        }
    } else if !ns.is_empty() {
        e.forbidden(&format!("{path}.namespace"), "not allowed on this type");
    }
    if let Some(g) = json::int(meta, "generation") {
        if g < 0 {
            e.invalid_int(
                &format!("{path}.generation"),
                g,
                "must be greater than or equal to 0",
            );
        }
    }
    if let Some(labels) = json::obj(meta, "labels") {
        validate_labels(labels, &format!("{path}.labels"), e);
    }
    if let Some(annotations) = json::obj(meta, "annotations") {
        validate_annotations(annotations, &format!("{path}.annotations"), e);
    }
    validate_owner_references(
        json::arr(meta, "ownerReferences"),
        &format!("{path}.ownerReferences"),
        e,
    );
    let finalizers = json::string_list(meta, "finalizers");
    for f in &finalizers {
        e.each_invalid(&format!("{path}.finalizers"), f, is_qualified_name(f));
    }
    for (i, f) in finalizers.iter().enumerate() {
        validate_kube_finalizer_name(f, &format!("{path}.finalizers[{i}]"), e);
    }
}

/// Label keys and values, all reported at `path` (Kubernetes does not key them).
pub(crate) fn validate_labels(labels: &Map<String, Value>, path: &str, e: &mut Errs) {
    for (k, v) in labels {
        e.each_invalid(path, k, is_qualified_name(k));
        let v = v.as_str().unwrap_or("");
        e.each_invalid(path, v, is_valid_label_value(v));
    }
}

/// Annotation keys (qualified names, case-insensitive) and their total size.
pub(crate) fn validate_annotations(annotations: &Map<String, Value>, path: &str, e: &mut Errs) {
    let mut total = 0usize;
    for (k, v) in annotations {
        for m in is_qualified_name(&k.to_lowercase()) {
            e.invalid_str(path, k, &m);
        }
        total += k.len() + v.as_str().map_or(0, str::len);
    }
    if total > TOTAL_ANNOTATION_SIZE_LIMIT {
        e.push(super::FieldError::too_long(
            path,
            TOTAL_ANNOTATION_SIZE_LIMIT,
        ));
    }
}

fn validate_owner_references(refs: &[Value], path: &str, e: &mut Errs) {
    for r in refs {
        let api_version = json::str(r, "apiVersion");
        let version = api_version.rsplit('/').next().unwrap_or("");
        if version.is_empty() {
            e.invalid_str(
                &format!("{path}.apiVersion"),
                api_version,
                "version must not be empty",
            );
        }
        for key in ["kind", "name", "uid"] {
            let v = json::str(r, key);
            if v.is_empty() {
                e.invalid_str(&format!("{path}.{key}"), v, "must not be empty");
            }
        }
    }
}

/// A finalizer without a domain prefix must be one Kubernetes defines.
fn validate_kube_finalizer_name(name: &str, path: &str, e: &mut Errs) {
    if !name.contains('/') && !STANDARD_FINALIZERS.contains(&name) {
        e.invalid_str(
            path,
            name,
            "name is neither a standard finalizer name nor is it fully qualified",
        );
    }
}

/// `spec.finalizers` of a Namespace.
pub(crate) fn validate_namespace_spec(spec: &Value, e: &mut Errs) {
    for f in json::string_list(spec, "finalizers") {
        e.each_invalid("spec.finalizers", &f, is_qualified_name(&f));
        validate_kube_finalizer_name(&f, "spec.finalizers", e);
    }
}

/// The metadata an update may not change. An empty new `uid` is fine: the server keeps the
/// stored one.
pub(crate) fn validate_meta_update(obj: &Value, old: &Value, e: &mut Errs) {
    let null = Value::Null;
    let new_meta = obj.get("metadata").unwrap_or(&null);
    let old_meta = old.get("metadata").unwrap_or(&null);
    for key in ["name", "namespace", "uid"] {
        let n = json::str(new_meta, key);
        let o = json::str(old_meta, key);
        if key == "uid" && n.is_empty() {
            continue;
        }
        if n != o {
            e.invalid_raw(
                &format!("metadata.{key}"),
                go_quote(n),
                "field is immutable",
            );
        }
    }
    // Kubernetes' ValidateNoNewFinalizers: an object being deleted can only lose finalizers.
    if !json::str(old_meta, "deletionTimestamp").is_empty() {
        let before = json::string_list(old_meta, "finalizers");
        let mut extra: Vec<String> = json::string_list(new_meta, "finalizers")
            .into_iter()
            .filter(|f| !before.contains(f))
            .collect();
        extra.sort();
        extra.dedup();
        if !extra.is_empty() {
            let quoted: Vec<String> = extra.iter().map(|f| go_quote(f)).collect();
            e.forbidden(
                "metadata.finalizers",
                &format!(
                    "no new finalizers can be added if the object is being deleted, found new finalizers []string{{{}}}",
                    quoted.join(", ")
                ),
            );
        }
    }
}

/// The labels and annotations of a pod template, at `<path>.labels` and `<path>.annotations`.
pub(crate) fn validate_template_meta(meta: &Value, path: &str, e: &mut Errs) {
    if let Some(labels) = json::obj(meta, "labels") {
        validate_labels(labels, &format!("{path}.labels"), e);
    }
    if let Some(annotations) = json::obj(meta, "annotations") {
        validate_annotations(annotations, &format!("{path}.annotations"), e);
    }
}

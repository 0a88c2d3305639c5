//! Server-side printing: the `meta.k8s.io/v1` `Table` that `kubectl get` asks for with
//! `Accept: application/json;as=Table;v=v1;g=meta.k8s.io`.
//!
//! The columns, their order, types, formats, descriptions and priorities, and the rules that
//! turn an object into cells follow Kubernetes' `pkg/printers/internalversion/printers.go`.
//! Like the real API server, every row carries every cell, wide ones (priority 1) included;
//! kubectl hides the wide columns unless asked for `-o wide`.
//!
//! Objects are read as `serde_json::Value`s as they are stored, that is defaulted: where a field
//! the API server always defaults is missing (a Service's `type`, a port's `protocol`, a
//! Deployment's `replicas`, a Secret's `type`), the printers read the default.
//!
//! Kinds without a printer of their own get Kubernetes' default table: `Name` and `Created At`.

mod cells;
mod columns;
mod format;
#[cfg(test)]
mod tests;

use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde_json::{json, Map, Value};

use crate::resources::Resource;
use columns::Column;

/// Which form of each object a table row carries: the `includeObject` query parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IncludeObject {
    /// No object: `"object": null`.
    None,
    /// The object's metadata as a `meta.k8s.io/v1` `PartialObjectMetadata`; the default.
    #[default]
    Metadata,
    /// The whole object.
    Object,
}

/// An `includeObject` value other than `None`, `Metadata` or `Object`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unrecognized includeObject value: {0:?}")]
pub struct InvalidIncludeObject(pub String);

impl FromStr for IncludeObject {
    type Err = InvalidIncludeObject;

    /// Parses the query parameter; the empty string means the default, `Metadata`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "None" => Ok(IncludeObject::None),
            "Metadata" | "" => Ok(IncludeObject::Metadata),
            "Object" => Ok(IncludeObject::Object),
            other => Err(InvalidIncludeObject(other.to_string())),
        }
    }
}

/// The table columns of a resource, as `metav1.TableColumnDefinition` JSON objects
/// (`name`, `type`, `format`, `description`, `priority`), normal columns and wide ones
/// (priority 1) in Kubernetes' order.
pub fn column_definitions(resource: &Resource) -> Vec<Value> {
    printer(resource)
        .columns
        .iter()
        .copied()
        .map(Column::to_json)
        .collect()
}

/// The cells of one object's row: one JSON string or integer per entry of
/// [`column_definitions`], ages measured against `now`.
pub fn row_cells(resource: &Resource, obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    (printer(resource).cells)(obj, now)
}

/// Kubernetes' `duration.HumanDuration`: a duration with two or three significant figures,
/// such as `5s`, `119s`, `3m2s`, `42m`, `5h3m`, `2d3h`, `45d` or `3y20d`.
///
/// A duration slightly negative (down to -1s, clocks that disagree) prints as `0s`; more negative
/// ones print as `<invalid>`.
pub fn human_duration(d: chrono::Duration) -> String {
    let seconds = d.num_seconds();
    if seconds < -1 {
        return "<invalid>".to_string();
    }
    if seconds < 0 {
        return "0s".to_string();
    }
    if seconds < 60 * 2 {
        return format!("{seconds}s");
    }
    let minutes = d.num_minutes();
    if minutes < 10 {
        let s = seconds % 60;
        return if s == 0 {
            format!("{minutes}m")
        } else {
            format!("{minutes}m{s}s")
        };
    }
    if minutes < 60 * 3 {
        return format!("{minutes}m");
    }
    let hours = d.num_hours();
    if hours < 8 {
        let m = minutes % 60;
        return if m == 0 {
            format!("{hours}h")
        } else {
            format!("{hours}h{m}m")
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    let days = hours / 24;
    if hours < 24 * 8 {
        let h = hours % 24;
        return if h == 0 {
            format!("{days}d")
        } else {
            format!("{days}d{h}h")
        };
    }
    if hours < 24 * 365 * 2 {
        return format!("{days}d");
    }
    let years = days / 365;
    if hours < 24 * 365 * 8 {
        let dy = days % 365;
        return if dy == 0 {
            format!("{years}y")
        } else {
            format!("{years}y{dy}d")
        };
    }
    format!("{years}y")
}

/// A complete `meta.k8s.io/v1` `Table` of `objects` (one object when it is served alone).
///
/// `list_meta` becomes the table's `metadata` (`resourceVersion`, `continue`); each row holds
/// its `cells`, `conditions` for pods that have finished (as Kubernetes marks them), and the
/// object in the form `include_object` asks for.
pub fn table(
    resource: &Resource,
    objects: &[Value],
    now: DateTime<Utc>,
    include_object: IncludeObject,
    list_meta: Value,
) -> Value {
    let printer = printer(resource);
    let rows: Vec<Value> = objects
        .iter()
        .map(|obj| {
            let mut row = Map::new();
            row.insert("cells".to_string(), Value::Array((printer.cells)(obj, now)));
            if let Some(conditions) = row_conditions(resource, obj) {
                row.insert("conditions".to_string(), conditions);
            }
            row.insert(
                "object".to_string(),
                row_object(resource, obj, include_object),
            );
            Value::Object(row)
        })
        .collect();
    let metadata = if list_meta.is_null() {
        json!({})
    } else {
        list_meta
    };
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": metadata,
        "columnDefinitions": column_definitions(resource),
        "rows": rows,
    })
}

/// The columns of one kind and the function that fills them.
struct Printer {
    columns: &'static [Column],
    cells: cells::CellFn,
}

/// The printer of a resource; Kubernetes' default (name and creation time) for kinds without one.
fn printer(resource: &Resource) -> Printer {
    let (columns, cells): (&'static [Column], cells::CellFn) = match (resource.group, resource.kind)
    {
        ("", "Namespace") => (columns::NAMESPACE, cells::namespace),
        ("", "Node") => (columns::NODE, cells::node),
        ("", "Pod") => (columns::POD, cells::pod),
        ("", "Service") => (columns::SERVICE, cells::service),
        ("", "Endpoints") => (columns::ENDPOINTS, cells::endpoints),
        ("", "ConfigMap") => (columns::CONFIG_MAP, cells::config_map),
        ("", "Secret") => (columns::SECRET, cells::secret),
        ("", "ServiceAccount") => (columns::SERVICE_ACCOUNT, cells::service_account),
        ("", "Event") => (columns::EVENT, cells::event),
        ("discovery.k8s.io", "EndpointSlice") => (columns::ENDPOINT_SLICE, cells::endpoint_slice),
        ("apps", "Deployment") => (columns::DEPLOYMENT, cells::deployment),
        ("apps", "ReplicaSet") => (columns::REPLICA_SET, cells::replica_set),
        ("networking.k8s.io", "Ingress") => (columns::INGRESS, cells::ingress),
        ("networking.k8s.io", "IngressClass") => (columns::INGRESS_CLASS, cells::ingress_class),
        ("networking.k8s.io", "NetworkPolicy") => (columns::NETWORK_POLICY, cells::network_policy),
        ("coordination.k8s.io", "Lease") => (columns::LEASE, cells::lease),
        _ => (columns::DEFAULT, cells::default),
    };
    Printer { columns, cells }
}

/// Row conditions: a pod that succeeded or failed is marked `Completed`.
fn row_conditions(resource: &Resource, obj: &Value) -> Option<Value> {
    if (resource.group, resource.kind) != ("", "Pod") {
        return None;
    }
    let (reason, message) = match format::string(obj, &["status", "phase"]) {
        "Succeeded" => ("Succeeded", "The pod has completed successfully."),
        "Failed" => ("Failed", "The pod failed."),
        _ => return None,
    };
    Some(json!([{
        "type": "Completed",
        "status": "True",
        "reason": reason,
        "message": message,
    }]))
}

/// The `object` of a row in the form asked for.
fn row_object(resource: &Resource, obj: &Value, include: IncludeObject) -> Value {
    match include {
        IncludeObject::None => Value::Null,
        IncludeObject::Metadata => json!({
            "kind": "PartialObjectMetadata",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": obj.get("metadata").cloned().unwrap_or_else(|| json!({})),
        }),
        IncludeObject::Object => with_type_meta(resource, obj),
    }
}

/// The object with `kind` and `apiVersion` set (first) when it lacks them, so that clients can
/// decode it on its own.
fn with_type_meta(resource: &Resource, obj: &Value) -> Value {
    let Some(fields) = obj.as_object() else {
        return obj.clone();
    };
    if fields.contains_key("kind") && fields.contains_key("apiVersion") {
        return obj.clone();
    }
    let mut out = Map::new();
    out.insert("kind".to_string(), json!(resource.kind));
    out.insert("apiVersion".to_string(), json!(resource.api_version()));
    for (key, value) in fields {
        if key != "kind" && key != "apiVersion" {
            out.insert(key.clone(), value.clone());
        }
    }
    Value::Object(out)
}

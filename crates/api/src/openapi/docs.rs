//! Rendering the operations of [`super::paths`] and the definitions of [`super::schemas`] as
//! OpenAPI 3.0 documents (one per group-version) and one Swagger 2.0 document, built once.

use std::collections::BTreeSet;
use std::sync::OnceLock;

use serde_json::{json, Map, Value};

use super::paths::{self, Answer, Body, In, Operation, Param, PathItem, PATCH_TYPES};
use super::schemas::{self, Catalog, REF_PREFIX};
use crate::resources::group_versions;

/// `info.version` of the documents: the Kubernetes API the types come from.
const API_VERSION: &str = "v1.34.0";

/// One rendered document: its value, its JSON text and the digest of that text.
pub(crate) struct Doc {
    pub value: Value,
    pub json: String,
    pub hash: String,
}

impl Doc {
    fn new(value: Value) -> Doc {
        let json = value.to_string();
        let hash = digest(json.as_bytes());
        Doc { value, json, hash }
    }
}

/// Every document, built on first use.
pub(crate) struct Docs {
    /// (group, version, document) for every served group-version, core first.
    pub v3: Vec<(&'static str, &'static str, Doc)>,
    pub v2: Doc,
    /// The v2 document as gnostic protobuf.
    pub v2_protobuf: Vec<u8>,
}

pub(crate) fn docs() -> &'static Docs {
    static DOCS: OnceLock<Docs> = OnceLock::new();
    DOCS.get_or_init(build)
}

fn build() -> Docs {
    let catalog = schemas::catalog();
    let v3 = group_versions()
        .into_iter()
        .map(|(g, v)| (g, v, Doc::new(v3_document(catalog, g, v))))
        .collect();
    let v2 = Doc::new(v2_document(catalog));
    let v2_protobuf = super::v2proto::encode(&v2.value);
    Docs {
        v3,
        v2,
        v2_protobuf,
    }
}

/// A 128-bit FNV-1a digest of `bytes`, as 32 upper-case hex digits (Kubernetes publishes a
/// SHA-512 here; clients only compare it).
pub(crate) fn digest(bytes: &[u8]) -> String {
    const OFFSET: u128 = 0x6c62_272e_07bb_0142_62b8_2175_6295_c58d;
    const PRIME: u128 = 0x0000_0000_0100_0000_0000_0000_0000_013b;
    let mut h = OFFSET;
    for b in bytes {
        h ^= u128::from(*b);
        h = h.wrapping_mul(PRIME);
    }
    format!("{h:032X}")
}

/// The OpenAPI 3.0 document of one group-version.
fn v3_document(catalog: &Catalog, group: &str, version: &str) -> Value {
    let items = paths::paths(catalog, group, version);
    let mut rendered = Map::new();
    for item in &items {
        rendered.insert(item.path.clone(), v3_path(item));
    }
    let rendered = Value::Object(rendered);
    let mut schemas_out = Map::new();
    for name in referenced(catalog, &rendered) {
        if let Some(def) = catalog.definitions.get(&name) {
            schemas_out.insert(name, v3_schema(def.clone()));
        }
    }
    json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": API_VERSION},
        "paths": rendered,
        "components": {
            "schemas": schemas_out,
            "securitySchemes": {
                "BearerToken": {
                    "type": "apiKey",
                    "description": "Bearer Token authentication",
                    "name": "authorization",
                    "in": "header"
                }
            }
        },
        "security": [{"BearerToken": []}]
    })
}

/// The names of every definition `value` refers to, directly or through other definitions.
fn referenced(catalog: &Catalog, value: &Value) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let mut todo: Vec<String> = Vec::new();
    let note = |r: &str, todo: &mut Vec<String>| {
        if let Some(name) = r.strip_prefix(REF_PREFIX) {
            todo.push(name.to_string());
        }
    };
    schemas::for_each_ref(value, &mut |r| note(r, &mut todo));
    while let Some(name) = todo.pop() {
        if !seen.insert(name.clone()) {
            continue;
        }
        if let Some(def) = catalog.definitions.get(&name) {
            schemas::for_each_ref(def, &mut |r| note(r, &mut todo));
        }
    }
    seen
}

/// A definition in OpenAPI 3 form: a `$ref` with siblings becomes `allOf: [{$ref}]` beside
/// them, as Kubernetes publishes it (siblings of `$ref` are ignored by OpenAPI 3.0).
fn v3_schema(value: Value) -> Value {
    match value {
        Value::Object(mut m) => {
            if m.len() > 1 && m.contains_key("$ref") {
                let r = m.shift_remove("$ref").unwrap_or_default();
                let mut out = Map::new();
                out.insert("allOf".into(), json!([{"$ref": r}]));
                for (k, v) in m {
                    out.insert(k, v3_schema(v));
                }
                Value::Object(out)
            } else {
                Value::Object(m.into_iter().map(|(k, v)| (k, v3_schema(v))).collect())
            }
        }
        Value::Array(a) => Value::Array(a.into_iter().map(v3_schema).collect()),
        other => other,
    }
}

fn schema_ref(def: &str) -> Value {
    json!({"$ref": format!("{REF_PREFIX}{def}")})
}

fn v3_param(p: &Param) -> Value {
    let mut m = Map::new();
    m.insert("name".into(), json!(p.name));
    m.insert(
        "in".into(),
        json!(match p.location {
            In::Path => "path",
            In::Query => "query",
        }),
    );
    m.insert("description".into(), json!(p.description));
    if p.location == In::Path {
        m.insert("required".into(), json!(true));
    }
    m.insert("schema".into(), json!({"type": p.ty, "uniqueItems": true}));
    Value::Object(m)
}

fn gvk(op: &Operation) -> Value {
    json!({"group": op.gvk.group, "kind": op.gvk.kind, "version": op.gvk.version})
}

fn status_text(code: u16) -> &'static str {
    match code {
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        _ => "Unauthorized",
    }
}

fn v3_path(item: &PathItem) -> Value {
    let mut m = Map::new();
    for op in &item.ops {
        m.insert(op.method.into(), v3_operation(op));
    }
    m.insert(
        "parameters".into(),
        Value::Array(item.params.iter().map(v3_param).collect()),
    );
    Value::Object(m)
}

fn v3_operation(op: &Operation) -> Value {
    let mut m = Map::new();
    m.insert("tags".into(), json!([op.tag]));
    m.insert("description".into(), json!(op.description));
    m.insert("operationId".into(), json!(op.id));
    if !op.query.is_empty() {
        m.insert(
            "parameters".into(),
            Value::Array(op.query.iter().map(v3_param).collect()),
        );
    }
    match &op.body {
        Some(Body::Object(def)) => {
            m.insert(
                "requestBody".into(),
                json!({"content": {"*/*": {"schema": schema_ref(def)}}, "required": true}),
            );
        }
        Some(Body::Patch) => {
            let content: Map<String, Value> = PATCH_TYPES
                .iter()
                .map(|t| (t.to_string(), json!({"schema": schema_ref(schemas::PATCH)})))
                .collect();
            m.insert(
                "requestBody".into(),
                json!({"content": content, "required": true}),
            );
        }
        Some(Body::DeleteOptions) => {
            m.insert(
                "requestBody".into(),
                json!({"content": {"*/*": {"schema": schema_ref(schemas::DELETE_OPTIONS)}}}),
            );
        }
        None => {}
    }
    let mut responses = Map::new();
    for code in op.codes {
        let content = match &op.answer {
            Answer::Object(def) => {
                let mut c = Map::new();
                c.insert(
                    "application/json".into(),
                    json!({"schema": schema_ref(def)}),
                );
                if op.watch {
                    c.insert(
                        "application/json;stream=watch".into(),
                        json!({"schema": schema_ref(def)}),
                    );
                }
                Value::Object(c)
            }
            Answer::Text => json!({"text/plain": {"schema": {"type": "string"}}}),
        };
        responses.insert(
            code.to_string(),
            json!({"description": status_text(*code), "content": content}),
        );
    }
    responses.insert("401".into(), json!({"description": "Unauthorized"}));
    m.insert("responses".into(), Value::Object(responses));
    m.insert("x-kubernetes-action".into(), json!(op.action));
    m.insert("x-kubernetes-group-version-kind".into(), gvk(op));
    Value::Object(m)
}

/// The Swagger 2.0 document of every group-version.
fn v2_document(catalog: &Catalog) -> Value {
    let mut rendered = Map::new();
    for (g, v) in group_versions() {
        for item in paths::paths(catalog, g, v) {
            rendered.insert(item.path.clone(), v2_path(&item));
        }
    }
    let definitions: Map<String, Value> = catalog
        .definitions
        .iter()
        .map(|(k, v)| (k.clone(), v2_refs(v.clone())))
        .collect();
    json!({
        "swagger": "2.0",
        "info": {"title": "Kubernetes", "version": API_VERSION},
        "paths": rendered,
        "definitions": definitions,
        "securityDefinitions": {
            "BearerToken": {
                "description": "Bearer Token authentication",
                "type": "apiKey",
                "name": "authorization",
                "in": "header"
            }
        },
        "security": [{"BearerToken": []}]
    })
}

/// Rewrites `#/components/schemas/` references to `#/definitions/`.
fn v2_refs(value: Value) -> Value {
    match value {
        Value::Object(m) => Value::Object(
            m.into_iter()
                .map(|(k, v)| match (k.as_str(), v) {
                    ("$ref", Value::String(r)) => {
                        let name = r.strip_prefix(REF_PREFIX).unwrap_or(&r).to_string();
                        (k, Value::String(format!("#/definitions/{name}")))
                    }
                    (_, v) => (k, v2_refs(v)),
                })
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.into_iter().map(v2_refs).collect()),
        other => other,
    }
}

fn v2_ref(def: &str) -> Value {
    json!({"$ref": format!("#/definitions/{def}")})
}

fn v2_param(p: &Param) -> Value {
    let mut m = Map::new();
    m.insert("uniqueItems".into(), json!(true));
    m.insert("type".into(), json!(p.ty));
    m.insert("description".into(), json!(p.description));
    m.insert("name".into(), json!(p.name));
    m.insert(
        "in".into(),
        json!(match p.location {
            In::Path => "path",
            In::Query => "query",
        }),
    );
    if p.location == In::Path {
        m.insert("required".into(), json!(true));
    }
    Value::Object(m)
}

fn v2_path(item: &PathItem) -> Value {
    let mut m = Map::new();
    for op in &item.ops {
        m.insert(op.method.into(), v2_operation(op));
    }
    m.insert(
        "parameters".into(),
        Value::Array(item.params.iter().map(v2_param).collect()),
    );
    Value::Object(m)
}

fn v2_operation(op: &Operation) -> Value {
    let mut m = Map::new();
    m.insert("description".into(), json!(op.description));
    let consumes: Vec<&str> = match op.body {
        Some(Body::Patch) => PATCH_TYPES.to_vec(),
        _ => vec!["*/*"],
    };
    m.insert("consumes".into(), json!(consumes));
    let produces: Vec<&str> = match (&op.answer, op.watch) {
        (Answer::Text, _) => vec!["text/plain", "application/json"],
        (_, true) => vec!["application/json", "application/json;stream=watch"],
        _ => vec!["application/json"],
    };
    m.insert("produces".into(), json!(produces));
    m.insert("schemes".into(), json!(["https"]));
    m.insert("tags".into(), json!([op.tag]));
    m.insert("operationId".into(), json!(op.id));
    let mut params: Vec<Value> = Vec::new();
    match &op.body {
        Some(Body::Object(def)) => params.push(
            json!({"name": "body", "in": "body", "required": true, "schema": v2_ref(def)}),
        ),
        Some(Body::Patch) => params.push(
            json!({"name": "body", "in": "body", "required": true, "schema": v2_ref(schemas::PATCH)}),
        ),
        Some(Body::DeleteOptions) => params.push(
            json!({"name": "body", "in": "body", "schema": v2_ref(schemas::DELETE_OPTIONS)}),
        ),
        None => {}
    }
    params.extend(op.query.iter().map(v2_param));
    if !params.is_empty() {
        m.insert("parameters".into(), Value::Array(params));
    }
    let mut responses = Map::new();
    for code in op.codes {
        let schema = match &op.answer {
            Answer::Object(def) => v2_ref(def),
            Answer::Text => json!({"type": "string"}),
        };
        responses.insert(
            code.to_string(),
            json!({"description": status_text(*code), "schema": schema}),
        );
    }
    responses.insert("401".into(), json!({"description": "Unauthorized"}));
    m.insert("responses".into(), Value::Object(responses));
    m.insert("x-kubernetes-action".into(), json!(op.action));
    m.insert("x-kubernetes-group-version-kind".into(), gvk(op));
    Value::Object(m)
}

//! Kubernetes-style validation of the objects kins serves.
//!
//! Each check returns [`FieldError`]s that the API server turns into a 422 `Invalid` Status;
//! [`FieldError::message`] and [`FieldError::body`] print them exactly as Kubernetes'
//! `field.Error` does, so clients and humans see the messages they know.
//!
//! Validation runs after [`crate::defaults::apply_defaults`]: fields that defaulting fills
//! (`restartPolicy`, `protocol`, `sessionAffinity`, ...) are checked only when present, so an
//! object that skipped defaulting is not rejected for lacking them.
//!
//! The messages follow Kubernetes v1.34 (`pkg/apis/core/validation`, `pkg/apis/apps/validation`,
//! `pkg/apis/networking/validation` and apimachinery's `util/validation`); no code is shared
//! with it.

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{Map, Value};

use crate::selectors::LabelSelector;
use crate::Resource;

mod checks;
mod meta;
mod networking;
mod pod;
mod service;
mod workloads;

#[cfg(test)]
mod tests;

pub use checks::{
    is_config_map_key, is_dns1035_label, is_dns1123_label, is_dns1123_subdomain, is_qualified_name,
    is_valid_ip, is_valid_label_value, is_valid_port_name,
};

/// Why a field was rejected; the machine-readable `reason` of a Status cause.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldErrorKind {
    /// A required value is missing.
    Required,
    /// The value is malformed or out of range.
    Invalid,
    /// The value must be unique but is not.
    Duplicate,
    /// The value is not one of an enumerated set.
    NotSupported,
    /// The value is too long (the value itself is not printed).
    TooLong,
    /// The value is valid in form but not allowed here.
    Forbidden,
    /// The value refers to something that does not exist.
    NotFound,
}

impl FieldErrorKind {
    /// The `reason` Kubernetes puts in a Status cause.
    pub fn reason(self) -> &'static str {
        match self {
            Self::Required => "FieldValueRequired",
            Self::Invalid => "FieldValueInvalid",
            Self::Duplicate => "FieldValueDuplicate",
            Self::NotSupported => "FieldValueNotSupported",
            Self::TooLong => "FieldValueTooLong",
            Self::Forbidden => "FieldValueForbidden",
            Self::NotFound => "FieldValueNotFound",
        }
    }

    /// The words Kubernetes starts an error body with.
    fn words(self) -> &'static str {
        match self {
            Self::Required => "Required value",
            Self::Invalid => "Invalid value",
            Self::Duplicate => "Duplicate value",
            Self::NotSupported => "Unsupported value",
            Self::TooLong => "Too long",
            Self::Forbidden => "Forbidden",
            Self::NotFound => "Not found",
        }
    }
}

/// One rejected field, as Kubernetes' `field.Error`.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldError {
    /// Why the field was rejected.
    pub kind: FieldErrorKind,
    /// The path of the field, e.g. `metadata.name` or `spec.ports[0].port`.
    pub field: String,
    /// The bad value already printed as Kubernetes prints it: strings quoted (`"Foo_bar"`),
    /// numbers and booleans bare (`0`), lists as Go does (`[]string{"a"}`). `None` for kinds that
    /// print no value (Required, Forbidden, TooLong).
    pub value: Option<String>,
    /// The explanation after the value; may be empty.
    pub detail: String,
}

impl FieldError {
    fn new(
        kind: FieldErrorKind,
        field: impl Into<String>,
        value: Option<String>,
        detail: impl Into<String>,
    ) -> Self {
        Self {
            kind,
            field: field.into(),
            value,
            detail: detail.into(),
        }
    }

    /// A required field is missing.
    pub fn required(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::new(FieldErrorKind::Required, field, None, detail)
    }

    /// A field is malformed; `value` is printed as Kubernetes prints it.
    pub fn invalid(field: impl Into<String>, value: &Value, detail: impl Into<String>) -> Self {
        Self::new(
            FieldErrorKind::Invalid,
            field,
            Some(go_value(value)),
            detail,
        )
    }

    /// A value repeats one that must be unique.
    pub fn duplicate(field: impl Into<String>, value: &Value) -> Self {
        Self::new(FieldErrorKind::Duplicate, field, Some(go_value(value)), "")
    }

    /// A value outside an enumerated set; the supported values are listed as given.
    pub fn not_supported(field: impl Into<String>, value: &Value, supported: &[&str]) -> Self {
        Self::new(
            FieldErrorKind::NotSupported,
            field,
            Some(go_value(value)),
            supported_detail(supported),
        )
    }

    /// A value that is allowed in form but not here.
    pub fn forbidden(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::new(FieldErrorKind::Forbidden, field, None, detail)
    }

    /// A value longer than `max` bytes.
    pub fn too_long(field: impl Into<String>, max: usize) -> Self {
        Self::new(
            FieldErrorKind::TooLong,
            field,
            None,
            format!("must have at most {max} bytes"),
        )
    }

    /// A reference to something that does not exist.
    pub fn not_found(field: impl Into<String>, value: &Value) -> Self {
        Self::new(FieldErrorKind::NotFound, field, Some(go_value(value)), "")
    }

    /// The Status cause `reason`: `FieldValueInvalid`, `FieldValueRequired`, ...
    pub fn reason(&self) -> &'static str {
        self.kind.reason()
    }

    /// The message without the field path (Kubernetes' `ErrorBody`), which is what a Status
    /// cause carries in `message`: `Invalid value: "Foo_bar": a lowercase RFC 1123 ...`.
    pub fn body(&self) -> String {
        let mut s = self.kind.words().to_string();
        let prints_value = !matches!(
            self.kind,
            FieldErrorKind::Required | FieldErrorKind::Forbidden | FieldErrorKind::TooLong
        );
        if prints_value {
            s.push_str(": ");
            s.push_str(self.value.as_deref().unwrap_or("null"));
        }
        if !self.detail.is_empty() {
            s.push_str(": ");
            s.push_str(&self.detail);
        }
        s
    }

    /// The full message, `<field>: <body>`, e.g.
    /// `metadata.name: Invalid value: "Foo_bar": a lowercase RFC 1123 subdomain must consist of ...`.
    pub fn message(&self) -> String {
        format!("{}: {}", self.field, self.body())
    }
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message())
    }
}

/// The errors joined as Kubernetes' `ErrorList.ToAggregate()` prints them, for the message of
/// an Invalid Status (`<Kind> "<name>" is invalid: <this>`): one message alone, several as
/// `[a, b]`, repeated messages once.
pub fn aggregate_message(errors: &[FieldError]) -> String {
    let mut seen: Vec<String> = Vec::new();
    for e in errors {
        let m = e.message();
        if !seen.contains(&m) {
            seen.push(m);
        }
    }
    if seen.len() == 1 {
        seen.remove(0)
    } else {
        format!("[{}]", seen.join(", "))
    }
}

/// `supported values: "a", "b"` as `field.NotSupported` builds it.
fn supported_detail(supported: &[&str]) -> String {
    if supported.is_empty() {
        return String::new();
    }
    let quoted: Vec<String> = supported.iter().map(|v| go_quote(v)).collect();
    format!("supported values: {}", quoted.join(", "))
}

/// A string quoted as Go's `%q` / `strconv.Quote` does.
pub(crate) fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            '\u{07}' => out.push_str("\\a"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            '\u{0b}' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            c if c.is_control() => {
                if (c as u32) <= 0xffff {
                    out.push_str(&format!("\\u{:04x}", c as u32));
                } else {
                    out.push_str(&format!("\\U{:08x}", c as u32));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A `[]string` as Go's `%#v` prints it; `nil` prints as `[]string(nil)`.
pub(crate) fn go_string_slice(items: Option<&[String]>) -> String {
    match items {
        None => "[]string(nil)".to_string(),
        Some(items) => {
            let q: Vec<String> = items.iter().map(|s| go_quote(s)).collect();
            format!("[]string{{{}}}", q.join(", "))
        }
    }
}

/// A JSON value printed as Kubernetes prints the Go value behind it in a field error.
pub(crate) fn go_value(v: &Value) -> String {
    match v {
        Value::String(s) => go_quote(s),
        Value::Null => "null".to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::Array(items) if items.iter().all(Value::is_string) => {
            let strings: Vec<String> = items
                .iter()
                .filter_map(|i| i.as_str().map(str::to_string))
                .collect();
            go_string_slice(Some(&strings))
        }
        Value::Object(map) if map.values().all(Value::is_string) => go_string_map(map),
        other => other.to_string(),
    }
}

/// A `map[string]string` as Go's `%#v` prints it (keys sorted).
pub(crate) fn go_string_map(map: &Map<String, Value>) -> String {
    let mut pairs: Vec<(&String, &str)> = map
        .iter()
        .map(|(k, v)| (k, v.as_str().unwrap_or("")))
        .collect();
    pairs.sort();
    let body: Vec<String> = pairs
        .iter()
        .map(|(k, v)| format!("{}:{}", go_quote(k), go_quote(v)))
        .collect();
    format!("map[string]string{{{}}}", body.join(", "))
}

/// Accumulates errors while walking an object; keeps the checks short.
#[derive(Default)]
pub(crate) struct Errs(pub(crate) Vec<FieldError>);

impl Errs {
    pub(crate) fn push(&mut self, e: FieldError) {
        self.0.push(e);
    }

    pub(crate) fn required(&mut self, field: &str, detail: &str) {
        self.push(FieldError::required(field, detail));
    }

    pub(crate) fn forbidden(&mut self, field: &str, detail: &str) {
        self.push(FieldError::forbidden(field, detail));
    }

    /// Invalid with a string value.
    pub(crate) fn invalid_str(&mut self, field: &str, value: &str, detail: &str) {
        self.push(FieldError::new(
            FieldErrorKind::Invalid,
            field,
            Some(go_quote(value)),
            detail,
        ));
    }

    /// Invalid with an integer value.
    pub(crate) fn invalid_int(&mut self, field: &str, value: i64, detail: &str) {
        self.push(FieldError::new(
            FieldErrorKind::Invalid,
            field,
            Some(value.to_string()),
            detail,
        ));
    }

    /// Invalid with a value already printed.
    pub(crate) fn invalid_raw(&mut self, field: &str, value: String, detail: &str) {
        self.push(FieldError::new(
            FieldErrorKind::Invalid,
            field,
            Some(value),
            detail,
        ));
    }

    pub(crate) fn not_supported(&mut self, field: &str, value: &str, supported: &[&str]) {
        self.push(FieldError::new(
            FieldErrorKind::NotSupported,
            field,
            Some(go_quote(value)),
            supported_detail(supported),
        ));
    }

    pub(crate) fn duplicate_str(&mut self, field: &str, value: &str) {
        self.push(FieldError::new(
            FieldErrorKind::Duplicate,
            field,
            Some(go_quote(value)),
            "",
        ));
    }

    pub(crate) fn duplicate_raw(&mut self, field: &str, value: String) {
        self.push(FieldError::new(
            FieldErrorKind::Duplicate,
            field,
            Some(value),
            "",
        ));
    }

    pub(crate) fn not_found_str(&mut self, field: &str, value: &str) {
        self.push(FieldError::new(
            FieldErrorKind::NotFound,
            field,
            Some(go_quote(value)),
            "",
        ));
    }

    /// One Invalid error per message, all about the same string value.
    pub(crate) fn each_invalid(&mut self, field: &str, value: &str, msgs: Vec<String>) {
        for m in msgs {
            self.invalid_str(field, value, &m);
        }
    }
}

/// Small accessors over JSON objects, all tolerant of missing or mistyped fields.
pub(crate) mod json {
    use serde_json::{Map, Value};

    pub(crate) fn obj<'a>(v: &'a Value, key: &str) -> Option<&'a Map<String, Value>> {
        v.get(key).and_then(Value::as_object)
    }

    pub(crate) fn arr<'a>(v: &'a Value, key: &str) -> &'a [Value] {
        v.get(key)
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }

    pub(crate) fn str<'a>(v: &'a Value, key: &str) -> &'a str {
        v.get(key).and_then(Value::as_str).unwrap_or("")
    }

    pub(crate) fn opt_str<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
        v.get(key).and_then(Value::as_str)
    }

    pub(crate) fn int(v: &Value, key: &str) -> Option<i64> {
        v.get(key).and_then(Value::as_i64)
    }

    pub(crate) fn present(v: &Value, key: &str) -> bool {
        v.get(key).is_some_and(|x| !x.is_null())
    }

    pub(crate) fn string_list(v: &Value, key: &str) -> Vec<String> {
        arr(v, key)
            .iter()
            .filter_map(|s| s.as_str().map(str::to_string))
            .collect()
    }
}

/// Validates an object about to be created.
pub fn validate_create(resource: &Resource, obj: &Value) -> Vec<FieldError> {
    let mut e = Errs::default();
    validate_object(resource, obj, None, &mut e);
    match (resource.group, resource.kind) {
        ("", "Pod") => pod::validate_pod_create(obj, &mut e),
        ("networking.k8s.io", "Ingress") => networking::validate_ingress_create(obj, &mut e),
        _ => {}
    }
    e.0
}

/// Validates an update of `old` into `obj`: everything [`validate_create`] checks, plus the
/// fields Kubernetes keeps immutable (metadata name/namespace/uid, Service clusterIPs, most of
/// a Pod's spec, Deployment and ReplicaSet selectors, immutable ConfigMaps and Secrets, an
/// IngressClass's controller).
pub fn validate_update(resource: &Resource, obj: &Value, old: &Value) -> Vec<FieldError> {
    let mut e = Errs::default();
    meta::validate_meta_update(obj, old, &mut e);
    match (resource.group, resource.kind) {
        ("", "Service") => service::validate_service_update(obj, old, &mut e),
        ("", "ConfigMap") | ("", "Secret") => {
            workloads::validate_immutable_data(resource.kind, obj, old, &mut e)
        }
        ("networking.k8s.io", "IngressClass") => {
            networking::validate_ingress_class_update(obj, old, &mut e)
        }
        _ => {}
    }
    validate_object(resource, obj, Some(old), &mut e);
    match (resource.group, resource.kind) {
        ("", "Pod") => pod::validate_pod_update(obj, old, &mut e),
        ("apps", "Deployment") | ("apps", "ReplicaSet") => {
            workloads::validate_selector_update(obj, old, &mut e)
        }
        _ => {}
    }
    e.0
}

/// The checks of an update through `pods/ephemeralcontainers` (besides
/// [`validate_update`]'s): only new ephemeral containers, each well formed.
pub fn validate_ephemeral_containers(obj: &Value, old: &Value) -> Vec<FieldError> {
    let mut e = Errs::default();
    pod::validate_ephemeral_update(obj, old, &mut e);
    e.0
}

/// The checks shared by create and update: metadata, then the kind's own rules. `old` is the
/// stored object on update, for kinds that tolerate what it already had.
fn validate_object(resource: &Resource, obj: &Value, old: Option<&Value>, e: &mut Errs) {
    meta::validate_meta(resource, obj, e);
    let spec = obj.get("spec").unwrap_or(&Value::Null);
    match (resource.group, resource.kind) {
        ("", "Namespace") => meta::validate_namespace_spec(spec, e),
        ("", "Pod") => pod::validate_pod_spec(spec, "spec", true, e),
        ("", "Service") => service::validate_service(obj, e),
        ("", "Endpoints") => service::validate_endpoints(obj, e),
        ("", "ConfigMap") => workloads::validate_config_map(obj, e),
        ("", "Secret") => workloads::validate_secret(obj, e),
        ("", "Event") => workloads::validate_event(obj, e),
        ("discovery.k8s.io", "EndpointSlice") => service::validate_endpoint_slice(obj, e),
        ("apps", "Deployment") => workloads::validate_deployment(spec, e),
        ("apps", "ReplicaSet") => workloads::validate_replica_set(spec, e),
        ("coordination.k8s.io", "Lease") => workloads::validate_lease(spec, e),
        ("networking.k8s.io", "Ingress") => networking::validate_ingress(obj, old, e),
        ("networking.k8s.io", "IngressClass") => networking::validate_ingress_class(obj, e),
        ("networking.k8s.io", "NetworkPolicy") => networking::validate_network_policy(obj, old, e),
        _ => {}
    }
}

/// Paths of the fields in `obj` that the Kubernetes schema of its kind does not know, as
/// Kubernetes reports them for `fieldValidation=Strict|Warn` (`unknown field "<path>"`; this
/// returns the `<path>` part, e.g. `spec.containers[0].imag`).
///
/// The object is decoded into the k8s-openapi type of its kind and encoded again; a key of the
/// input that the round trip drops is unknown (keys whose value is null are ignored). Maps of
/// arbitrary keys (labels, data, ...) survive the round trip and so are never reported.
///
/// # Errors
/// The decoder's message when `obj` does not decode as its kind at all (a string where a
/// number belongs, bad base64 in Secret data, a mismatched apiVersion or kind, ...). Callers
/// may run this on every write to catch such errors, whatever the field validation mode.
pub fn unknown_fields(resource: &Resource, obj: &Value) -> Result<Vec<String>, String> {
    use k8s_openapi::api::{apps, coordination, core, discovery, networking};
    let round = match (resource.group, resource.kind) {
        ("", "Namespace") => round_trip::<core::v1::Namespace>(obj),
        ("", "Node") => round_trip::<core::v1::Node>(obj),
        ("", "Pod") => round_trip::<core::v1::Pod>(obj),
        ("", "Service") => round_trip::<core::v1::Service>(obj),
        ("", "Endpoints") => round_trip::<core::v1::Endpoints>(obj),
        ("", "ConfigMap") => round_trip::<core::v1::ConfigMap>(obj),
        ("", "Secret") => round_trip::<core::v1::Secret>(obj),
        ("", "ServiceAccount") => round_trip::<core::v1::ServiceAccount>(obj),
        ("", "Event") => round_trip::<core::v1::Event>(obj),
        ("discovery.k8s.io", "EndpointSlice") => round_trip::<discovery::v1::EndpointSlice>(obj),
        ("apps", "Deployment") => round_trip::<apps::v1::Deployment>(obj),
        ("apps", "ReplicaSet") => round_trip::<apps::v1::ReplicaSet>(obj),
        ("networking.k8s.io", "Ingress") => round_trip::<networking::v1::Ingress>(obj),
        ("networking.k8s.io", "IngressClass") => round_trip::<networking::v1::IngressClass>(obj),
        ("networking.k8s.io", "NetworkPolicy") => round_trip::<networking::v1::NetworkPolicy>(obj),
        ("coordination.k8s.io", "Lease") => round_trip::<coordination::v1::Lease>(obj),
        // A kind without a schema here: nothing can be called unknown.
        _ => return Ok(Vec::new()),
    }?;
    let mut out = Vec::new();
    collect_unknown(obj, &round, "", &mut out);
    Ok(out)
}

/// Decodes `obj` as `T` and encodes it back.
fn round_trip<T: DeserializeOwned + Serialize>(obj: &Value) -> Result<Value, String> {
    let typed = T::deserialize(obj).map_err(|e| e.to_string())?;
    serde_json::to_value(&typed).map_err(|e| e.to_string())
}

/// Records the paths of `input` that are missing from `output`.
fn collect_unknown(input: &Value, output: &Value, path: &str, out: &mut Vec<String>) {
    match (input, output) {
        (Value::Object(inp), Value::Object(outp)) => {
            for (k, v) in inp {
                if v.is_null() {
                    continue;
                }
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                match outp.get(k) {
                    None => out.push(p),
                    Some(o) => collect_unknown(v, o, &p, out),
                }
            }
        }
        (Value::Array(inp), Value::Array(outp)) => {
            for (i, (v, o)) in inp.iter().zip(outp.iter()).enumerate() {
                collect_unknown(v, o, &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

/// A `metav1.LabelSelector` validated as `ValidateLabelSelector` does.
pub(crate) fn validate_label_selector(sel: &Value, path: &str, e: &mut Errs) {
    if let Some(labels) = sel.get("matchLabels").and_then(Value::as_object) {
        meta::validate_labels(labels, &format!("{path}.matchLabels"), e);
    }
    for (i, expr) in json::arr(sel, "matchExpressions").iter().enumerate() {
        let p = format!("{path}.matchExpressions[{i}]");
        let values = json::string_list(expr, "values");
        let op = json::str(expr, "operator");
        match op {
            "In" | "NotIn" => {
                if values.is_empty() {
                    e.required(
                        &format!("{p}.values"),
                        "must be specified when `operator` is 'In' or 'NotIn'",
                    );
                }
            }
            "Exists" | "DoesNotExist" => {
                if !values.is_empty() {
                    e.forbidden(
                        &format!("{p}.values"),
                        "may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
                    );
                }
            }
            _ => e.invalid_str(
                &format!("{p}.operator"),
                op,
                "not a valid selector operator",
            ),
        }
        let key = json::str(expr, "key");
        e.each_invalid(&format!("{p}.key"), key, is_qualified_name(key));
        for (vi, v) in values.iter().enumerate() {
            e.each_invalid(&format!("{p}.values[{vi}]"), v, is_valid_label_value(v));
        }
    }
}

/// Whether a selector given as JSON matches a set of labels (false when it does not parse).
pub(crate) fn selector_matches(sel: &Value, labels: Option<&Map<String, Value>>) -> Option<bool> {
    LabelSelector::from_json(sel)
        .ok()
        .map(|s| s.matches(labels))
}

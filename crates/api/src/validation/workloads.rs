//! Deployments, ReplicaSets, ConfigMaps, Secrets, Events and Leases.

use serde_json::{Map, Value};

use super::checks::{is_config_map_key, is_dns1123_subdomain, is_qualified_name, regex_error};
use super::pod::{normalize, validate_pod_template};
use super::{
    go_quote, go_string_map, go_string_slice, json, selector_matches, validate_label_selector,
    Errs, FieldError,
};

/// The most bytes of data a ConfigMap or Secret may hold.
pub(crate) const MAX_SECRET_SIZE: usize = 1024 * 1024;

/// A `*metav1.LabelSelector` as Go's `%#v` prints it in a field error.
fn go_label_selector(sel: Option<&Value>) -> String {
    let Some(sel) = sel.filter(|s| s.is_object()) else {
        return "null".to_string();
    };
    let labels = match json::obj(sel, "matchLabels") {
        Some(m) if !m.is_empty() => go_string_map(m),
        _ => "map[string]string(nil)".to_string(),
    };
    let exprs = json::arr(sel, "matchExpressions");
    let exprs = if exprs.is_empty() {
        "[]v1.LabelSelectorRequirement(nil)".to_string()
    } else {
        let items: Vec<String> = exprs
            .iter()
            .map(|x| {
                let values = json::string_list(x, "values");
                format!(
                    "v1.LabelSelectorRequirement{{Key:{}, Operator:{}, Values:{}}}",
                    go_quote(json::str(x, "key")),
                    go_quote(json::str(x, "operator")),
                    go_string_slice(if values.is_empty() {
                        None
                    } else {
                        Some(&values)
                    })
                )
            })
            .collect();
        format!("[]v1.LabelSelectorRequirement{{{}}}", items.join(", "))
    };
    format!("v1.LabelSelector{{MatchLabels:{labels}, MatchExpressions:{exprs}}}")
}

fn nonnegative(spec: &Value, key: &str, e: &mut Errs) {
    if let Some(n) = json::int(spec, key) {
        if n < 0 {
            e.invalid_int(
                &format!("spec.{key}"),
                n,
                "must be greater than or equal to 0",
            );
        }
    }
}

/// What Deployments and ReplicaSets share: replicas, selector, template.
fn validate_replicated(spec: &Value, e: &mut Errs) {
    nonnegative(spec, "replicas", e);
    nonnegative(spec, "minReadySeconds", e);
    let selector = spec.get("selector").filter(|s| !s.is_null());
    match selector {
        None => e.required("spec.selector", ""),
        Some(sel) => {
            validate_label_selector(sel, "spec.selector", e);
            let n = json::obj(sel, "matchLabels").map_or(0, Map::len)
                + json::arr(sel, "matchExpressions").len();
            if n == 0 {
                e.invalid_raw(
                    "spec.selector",
                    go_label_selector(Some(sel)),
                    "empty selector is invalid for deployment",
                );
            }
        }
    }
    let null = Value::Null;
    let template = spec.get("template").unwrap_or(&null);
    let template_meta = template.get("metadata").unwrap_or(&null);
    let labels = json::obj(template_meta, "labels");
    let selector_json = selector.cloned().unwrap_or(Value::Null);
    match selector_matches(&selector_json, labels) {
        None => e.invalid_raw(
            "spec.selector",
            go_label_selector(selector),
            "invalid label selector",
        ),
        Some(matches) => {
            let everything = selector.is_some_and(|s| {
                json::obj(s, "matchLabels").map_or(0, Map::len)
                    + json::arr(s, "matchExpressions").len()
                    == 0
            });
            if !everything && !matches {
                let shown =
                    labels.map_or_else(|| "map[string]string(nil)".to_string(), go_string_map);
                e.invalid_raw(
                    "spec.template.metadata.labels",
                    shown,
                    "`selector` does not match template `labels`",
                );
            }
            validate_pod_template(template, "spec.template", e);
            let tspec = template.get("spec").unwrap_or(&null);
            if let Some(rp) = json::opt_str(tspec, "restartPolicy") {
                if rp != "Always" {
                    e.not_supported("spec.template.spec.restartPolicy", rp, &["Always"]);
                }
            }
            if json::present(tspec, "activeDeadlineSeconds") {
                e.forbidden(
                    "spec.template.spec.activeDeadlineSeconds",
                    "activeDeadlineSeconds in ReplicaSet is not Supported",
                );
            }
        }
    }
}

/// A Deployment spec.
pub(crate) fn validate_deployment(spec: &Value, e: &mut Errs) {
    validate_replicated(spec, e);
    let null = Value::Null;
    let strategy = spec.get("strategy").unwrap_or(&null);
    match json::opt_str(strategy, "type") {
        Some("Recreate") if json::present(strategy, "rollingUpdate") => e.forbidden(
            "spec.strategy.rollingUpdate",
            "may not be specified when strategy `type` is 'Recreate'",
        ),
        Some("Recreate") => {}
        Some("RollingUpdate") => match strategy.get("rollingUpdate").filter(|r| !r.is_null()) {
            None => e.required(
                "spec.strategy.rollingUpdate",
                "this should be defaulted and never be nil",
            ),
            Some(ru) => validate_rolling_update(ru, e),
        },
        Some(other) => e.not_supported("spec.strategy.type", other, &["Recreate", "RollingUpdate"]),
        None => {}
    }
    if let Some(n) = json::int(spec, "revisionHistoryLimit") {
        if n < 0 {
            e.invalid_int(
                "spec.revisionHistoryLimit",
                n,
                "must be greater than or equal to 0",
            );
        }
    }
    if let Some(pds) = json::int(spec, "progressDeadlineSeconds") {
        if pds < 0 {
            e.invalid_int(
                "spec.progressDeadlineSeconds",
                pds,
                "must be greater than or equal to 0",
            );
        }
        if pds <= json::int(spec, "minReadySeconds").unwrap_or(0) {
            e.invalid_int(
                "spec.progressDeadlineSeconds",
                pds,
                "must be greater than minReadySeconds",
            );
        }
    }
}

/// An IntOrString printed as its `String()`: `5` or `25%`.
fn int_or_percent_shown(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The number an IntOrString stands for (a percentage's number); 0 when it is neither.
fn int_or_percent_value(v: Option<&Value>) -> i64 {
    match v {
        Some(Value::String(s)) => s.trim_end_matches('%').parse().unwrap_or(0),
        Some(other) => other.as_i64().unwrap_or(0),
        None => 0,
    }
}

fn validate_rolling_update(ru: &Value, e: &mut Errs) {
    for key in ["maxUnavailable", "maxSurge"] {
        let p = format!("spec.strategy.rollingUpdate.{key}");
        match ru.get(key) {
            Some(Value::String(s)) => {
                let digits = s.strip_suffix('%').unwrap_or("");
                if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                    e.invalid_raw(
                        &p,
                        s.clone(),
                        &regex_error(
                            "a valid percent string must be a numeric string followed by an ending '%'",
                            "[0-9]+%",
                            &["1%", "93%"],
                        ),
                    );
                }
            }
            Some(v @ Value::Number(_)) => {
                let n = v.as_i64().unwrap_or(0);
                if n < 0 {
                    e.invalid_int(&p, n, "must be greater than or equal to 0");
                }
            }
            Some(Value::Null) | None => {}
            Some(other) => e.invalid_raw(
                &p,
                other.to_string(),
                "must be an integer or percentage (e.g '5%')",
            ),
        }
    }
    let unavailable = ru.get("maxUnavailable");
    if int_or_percent_value(unavailable) == 0 && int_or_percent_value(ru.get("maxSurge")) == 0 {
        e.invalid_raw(
            "spec.strategy.rollingUpdate.maxUnavailable",
            unavailable.map_or_else(|| "0".to_string(), int_or_percent_shown),
            "may not be 0 when `maxSurge` is 0",
        );
    }
    if let Some(Value::String(s)) = unavailable {
        if s.ends_with('%') && int_or_percent_value(unavailable) > 100 {
            e.invalid_raw(
                "spec.strategy.rollingUpdate.maxUnavailable",
                s.clone(),
                "must not be greater than 100%",
            );
        }
    }
}

/// A ReplicaSet spec.
pub(crate) fn validate_replica_set(spec: &Value, e: &mut Errs) {
    validate_replicated(spec, e);
}

/// apps/v1 keeps a Deployment's or ReplicaSet's selector immutable.
pub(crate) fn validate_selector_update(obj: &Value, old: &Value, e: &mut Errs) {
    let null = Value::Null;
    let sel = obj
        .get("spec")
        .and_then(|s| s.get("selector"))
        .unwrap_or(&null);
    let old_sel = old
        .get("spec")
        .and_then(|s| s.get("selector"))
        .unwrap_or(&null);
    if normalize(sel) != normalize(old_sel) {
        e.invalid_raw(
            "spec.selector",
            go_label_selector(Some(sel)),
            "field is immutable",
        );
    }
}

/// Bytes a base64 string decodes to (without decoding it).
fn base64_len(s: &str) -> usize {
    let s = s.trim_end_matches('=');
    s.len() * 3 / 4
}

/// A ConfigMap: keys, no key in both `data` and `binaryData`, at most 1 MiB in all.
pub(crate) fn validate_config_map(obj: &Value, e: &mut Errs) {
    let mut total = 0usize;
    let binary = json::obj(obj, "binaryData");
    if let Some(data) = json::obj(obj, "data") {
        for (k, v) in data {
            e.each_invalid(&format!("data[{k}]"), k, is_config_map_key(k));
            if binary.is_some_and(|b| b.contains_key(k)) {
                e.invalid_str(
                    &format!("data[{k}]"),
                    k,
                    "duplicate of key present in binaryData",
                );
            }
            total += v.as_str().map_or(0, str::len);
        }
    }
    if let Some(binary) = binary {
        for (k, v) in binary {
            e.each_invalid(&format!("binaryData[{k}]"), k, is_config_map_key(k));
            total += v.as_str().map_or(0, base64_len);
        }
    }
    if total > MAX_SECRET_SIZE {
        e.push(FieldError::too_long("", MAX_SECRET_SIZE));
    }
}

/// The data of a Secret as Kubernetes sees it after merging `stringData` into `data`:
/// key → decoded bytes (`None` when the base64 does not decode).
fn secret_data(obj: &Value) -> Vec<(String, Option<Vec<u8>>)> {
    let mut out: Vec<(String, Option<Vec<u8>>)> = Vec::new();
    if let Some(data) = json::obj(obj, "data") {
        for (k, v) in data {
            let bytes = serde_json::from_value::<k8s_openapi::ByteString>(v.clone())
                .ok()
                .map(|b| b.0);
            out.push((k.clone(), bytes));
        }
    }
    if let Some(data) = json::obj(obj, "stringData") {
        for (k, v) in data {
            let bytes = Some(v.as_str().unwrap_or("").as_bytes().to_vec());
            match out.iter_mut().find(|(key, _)| key == k) {
                Some(slot) => slot.1 = bytes,
                None => out.push((k.clone(), bytes)),
            }
        }
    }
    out
}

/// A Secret: keys, size, and the keys its type requires.
pub(crate) fn validate_secret(obj: &Value, e: &mut Errs) {
    let data = secret_data(obj);
    let mut total = 0usize;
    for (k, v) in &data {
        e.each_invalid(&format!("data[{k}]"), k, is_config_map_key(k));
        total += v.as_ref().map_or(0, Vec::len);
    }
    if total > MAX_SECRET_SIZE {
        e.push(FieldError::too_long("data", MAX_SECRET_SIZE));
    }
    let get = |key: &str| {
        data.iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone().unwrap_or_default())
    };
    let require_json = |key: &str, e: &mut Errs| match get(key) {
        None => e.required(&format!("data[{key}]"), ""),
        Some(bytes) => {
            if let Err(err) = serde_json::from_slice::<Map<String, Value>>(&bytes) {
                e.invalid_str(
                    &format!("data[{key}]"),
                    "<secret contents redacted>",
                    &err.to_string(),
                );
            }
        }
    };
    match json::str(obj, "type") {
        "kubernetes.io/service-account-token" => {
            let annotations = obj
                .get("metadata")
                .and_then(|m| json::obj(m, "annotations"));
            let sa = annotations
                .and_then(|a| a.get("kubernetes.io/service-account.name"))
                .and_then(Value::as_str)
                .unwrap_or("");
            if sa.is_empty() {
                e.required(
                    "metadata.annotations[kubernetes.io/service-account.name]",
                    "",
                );
            }
        }
        "kubernetes.io/dockercfg" => require_json(".dockercfg", e),
        "kubernetes.io/dockerconfigjson" => require_json(".dockerconfigjson", e),
        "kubernetes.io/basic-auth" if get("username").is_none() && get("password").is_none() => {
            e.required("data[username]", "");
            e.required("data[password]", "");
        }
        "kubernetes.io/ssh-auth" if get("ssh-privatekey").is_none_or(|v| v.is_empty()) => {
            e.required("data[ssh-privatekey]", "");
        }
        "kubernetes.io/tls" => {
            for key in ["tls.crt", "tls.key"] {
                if get(key).is_none() {
                    e.required(&format!("data[{key}]"), "");
                }
            }
        }
        _ => {}
    }
}

/// ConfigMaps and Secrets marked immutable keep their data; a Secret keeps its type.
pub(crate) fn validate_immutable_data(kind: &str, obj: &Value, old: &Value, e: &mut Errs) {
    if kind == "Secret" {
        let ty = json::opt_str(obj, "type").unwrap_or("Opaque");
        if ty != json::opt_str(old, "type").unwrap_or("Opaque") {
            e.invalid_str("type", ty, "field is immutable");
        }
    }
    if old.get("immutable").and_then(Value::as_bool) != Some(true) {
        return;
    }
    let msg = "field is immutable when `immutable` is set";
    if obj.get("immutable").and_then(Value::as_bool) != Some(true) {
        e.forbidden("immutable", msg);
    }
    let keys: &[&str] = if kind == "Secret" {
        &["data"]
    } else {
        &["data", "binaryData"]
    };
    for key in keys {
        let null = Value::Null;
        if normalize(obj.get(*key).unwrap_or(&null)) != normalize(old.get(*key).unwrap_or(&null)) {
            e.forbidden(key, msg);
        }
    }
}

/// A core/v1 Event, checked as Kubernetes' legacy event validation does.
pub(crate) fn validate_event(obj: &Value, e: &mut Errs) {
    let null = Value::Null;
    let ns = obj
        .get("metadata")
        .map_or("", |m| json::str(m, "namespace"));
    let involved_ns = obj
        .get("involvedObject")
        .map_or("", |i| json::str(i, "namespace"));
    let event_time = obj.get("eventTime").unwrap_or(&null);
    if event_time.is_null() || event_time.as_str() == Some("") {
        let ok = if involved_ns.is_empty() {
            ns.is_empty() || ns == "default"
        } else {
            ns == involved_ns
        };
        if !ok {
            e.invalid_str(
                "involvedObject.namespace",
                involved_ns,
                "does not match event.namespace",
            );
        }
    } else {
        if involved_ns.is_empty() && ns != "default" && ns != "kube-system" {
            e.invalid_str(
                "involvedObject.namespace",
                involved_ns,
                "does not match event.namespace",
            );
        }
        let rc = json::str(obj, "reportingComponent");
        if rc.is_empty() {
            e.required("reportingComponent", "");
        }
        e.each_invalid("reportingComponent", rc, is_qualified_name(rc));
        let too_long = |key: &str, limit: usize, e: &mut Errs| {
            if json::str(obj, key).len() > limit {
                e.invalid_str(key, "", &format!("can have at most {limit} characters"));
            }
        };
        if json::str(obj, "reportingInstance").is_empty() {
            e.required("reportingInstance", "");
        }
        too_long("reportingInstance", 128, e);
        if json::str(obj, "action").is_empty() {
            e.required("action", "");
        }
        too_long("action", 128, e);
        if json::str(obj, "reason").is_empty() {
            e.required("reason", "");
        }
        too_long("reason", 128, e);
        too_long("message", 1024, e);
    }
    e.each_invalid("namespace", ns, is_dns1123_subdomain(ns));
}

/// A Lease spec: a positive duration, non-negative transitions.
pub(crate) fn validate_lease(spec: &Value, e: &mut Errs) {
    if let Some(d) = json::int(spec, "leaseDurationSeconds") {
        if d <= 0 {
            e.invalid_int("spec.leaseDurationSeconds", d, "must be greater than 0");
        }
    }
    if let Some(t) = json::int(spec, "leaseTransitions") {
        if t < 0 {
            e.invalid_int(
                "spec.leaseTransitions",
                t,
                "must be greater than or equal to 0",
            );
        }
    }
}

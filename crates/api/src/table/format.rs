//! Readers and formatters shared by the printers: JSON fields read with Go's zero values,
//! timestamps and ages, label maps, label selectors and truncated lists.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::human_duration;

/// The value at `path`; None when a step is missing or the value is null.
pub(super) fn get<'a>(v: &'a Value, path: &[&str]) -> Option<&'a Value> {
    let mut cur = v;
    for key in path {
        cur = cur.get(key)?;
    }
    (!cur.is_null()).then_some(cur)
}

/// The string at `path`, "" when absent.
pub(super) fn string<'a>(v: &'a Value, path: &[&str]) -> &'a str {
    get(v, path).and_then(Value::as_str).unwrap_or("")
}

/// The integer at `path`, 0 when absent.
pub(super) fn int(v: &Value, path: &[&str]) -> i64 {
    get(v, path).and_then(Value::as_i64).unwrap_or(0)
}

/// The boolean at `path`, false when absent.
pub(super) fn boolean(v: &Value, path: &[&str]) -> bool {
    get(v, path).and_then(Value::as_bool).unwrap_or(false)
}

/// The array at `path`, empty when absent.
pub(super) fn list<'a>(v: &'a Value, path: &[&str]) -> &'a [Value] {
    get(v, path)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

/// The number of entries of the map or array at `path`.
pub(super) fn len(v: &Value, path: &[&str]) -> usize {
    match get(v, path) {
        Some(Value::Object(map)) => map.len(),
        Some(Value::Array(items)) => items.len(),
        _ => 0,
    }
}

/// `s`, or `placeholder` when `s` is empty.
pub(super) fn or(s: &str, placeholder: &str) -> String {
    if s.is_empty() { placeholder } else { s }.to_string()
}

/// The RFC 3339 timestamp at `path` (`metav1.Time` or `metav1.MicroTime`).
pub(super) fn time(v: &Value, path: &[&str]) -> Option<DateTime<Utc>> {
    let text = get(v, path)?.as_str()?;
    DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// Kubernetes' `translateTimestampSince`: the human duration from `t` to `now`,
/// `<unknown>` without a time.
pub(super) fn since(t: Option<DateTime<Utc>>, now: DateTime<Utc>) -> String {
    match t {
        Some(t) => human_duration(now - t),
        None => "<unknown>".to_string(),
    }
}

/// The AGE cell: time since `metadata.creationTimestamp`.
pub(super) fn age(obj: &Value, now: DateTime<Utc>) -> String {
    since(time(obj, &["metadata", "creationTimestamp"]), now)
}

/// The object's name.
pub(super) fn name(obj: &Value) -> &str {
    string(obj, &["metadata", "name"])
}

/// `labels.FormatLabels`: `k1=v1,k2=v2` sorted by key, `<none>` when empty.
pub(super) fn labels(map: Option<&Value>) -> String {
    let sorted: BTreeMap<&str, &str> = map
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .map(|(k, v)| (k.as_str(), v.as_str().unwrap_or("")))
        .collect();
    let text = sorted
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",");
    or(&text, "<none>")
}

/// `metav1.LabelSelectorAsSelector(sel).String()`: requirements sorted by key and joined with
/// commas (`app=web,tier in (a,b),!canary`); "" for a missing or empty selector, None for an
/// invalid one.
pub(super) fn selector(sel: Option<&Value>) -> Option<String> {
    let Some(sel) = sel else {
        return Some(String::new());
    };
    let mut requirements: Vec<(&str, String)> = Vec::new();
    if let Some(labels) = get(sel, &["matchLabels"]).and_then(Value::as_object) {
        for (key, value) in labels {
            requirements.push((key, format!("{key}={}", value.as_str().unwrap_or(""))));
        }
    }
    for expr in list(sel, &["matchExpressions"]) {
        let key = string(expr, &["key"]);
        let mut values: Vec<&str> = list(expr, &["values"])
            .iter()
            .map(|v| v.as_str().unwrap_or(""))
            .collect();
        values.sort_unstable();
        let text = match (string(expr, &["operator"]), values.is_empty()) {
            ("In", false) => format!("{key} in ({})", values.join(",")),
            ("NotIn", false) => format!("{key} notin ({})", values.join(",")),
            ("Exists", true) => key.to_string(),
            ("DoesNotExist", true) => format!("!{key}"),
            _ => return None,
        };
        requirements.push((key, text));
    }
    requirements.sort_by(|a, b| a.0.cmp(b.0));
    Some(
        requirements
            .into_iter()
            .map(|(_, text)| text)
            .collect::<Vec<_>>()
            .join(","),
    )
}

/// `metav1.FormatLabelSelector`: the selector, `<none>` when empty, `<error>` when invalid.
pub(super) fn label_selector(sel: Option<&Value>) -> String {
    match selector(sel) {
        Some(text) => or(&text, "<none>"),
        None => "<error>".to_string(),
    }
}

/// Kubernetes' `listWithMoreString`: the first items joined with commas, then
/// ` + N more...` for the rest; `<unset>` when there is nothing.
pub(super) fn list_with_more(list: &[String], more: bool, count: usize, max: usize) -> String {
    let joined = list.join(",");
    if more {
        return format!("{joined} + {} more...", count - max);
    }
    or(&joined, "<unset>")
}

/// Go's `net.JoinHostPort`: IPv6 addresses in brackets.
pub(super) fn join_host_port(host: &str, port: i64) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// Kubernetes' `layoutContainerCells`: container names and images of a pod template, each
/// joined with commas.
pub(super) fn container_cells(obj: &Value) -> (String, String) {
    let containers = list(obj, &["spec", "template", "spec", "containers"]);
    let names: Vec<&str> = containers.iter().map(|c| string(c, &["name"])).collect();
    let images: Vec<&str> = containers.iter().map(|c| string(c, &["image"])).collect();
    (names.join(","), images.join(","))
}

/// The distinct load-balancer ingress points (IP, else hostname), sorted and joined with commas,
/// as Kubernetes prints them in wide output.
pub(super) fn load_balancer_ingress(status: Option<&Value>) -> String {
    let mut points: Vec<&str> = status
        .map(|s| list(s, &["ingress"]))
        .unwrap_or(&[])
        .iter()
        .filter_map(|ingress| {
            let ip = string(ingress, &["ip"]);
            let hostname = string(ingress, &["hostname"]);
            if !ip.is_empty() {
                Some(ip)
            } else if !hostname.is_empty() {
                Some(hostname)
            } else {
                None
            }
        })
        .collect();
    points.sort_unstable();
    points.dedup();
    points.join(",")
}

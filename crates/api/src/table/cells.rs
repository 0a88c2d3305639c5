//! The cells of one row per kind, in the order of the kind's columns (wide ones included), as
//! Kubernetes' `printers.go` computes them.

use std::collections::BTreeSet;

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{json, Value};

use super::format::{
    age, boolean, container_cells, get, int, join_host_port, label_selector, labels, len, list,
    list_with_more, load_balancer_ingress, name, or, selector, since, string, time,
};

/// Computes the cells of one object's row at a given time.
pub(super) type CellFn = fn(&Value, DateTime<Utc>) -> Vec<Value>;

/// Kubernetes' default table: name and creation time in RFC 3339.
pub(super) fn default(obj: &Value, _now: DateTime<Utc>) -> Vec<Value> {
    let created = time(obj, &["metadata", "creationTimestamp"])
        .map(|t| t.to_rfc3339_opts(SecondsFormat::Secs, true))
        .unwrap_or_else(|| "0001-01-01T00:00:00Z".to_string());
    vec![json!(name(obj)), json!(created)]
}

pub(super) fn namespace(obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    vec![
        json!(name(obj)),
        json!(string(obj, &["status", "phase"])),
        json!(age(obj, now)),
    ]
}

/// Label marking a node role: `node-role.kubernetes.io/<role>`.
const NODE_ROLE_PREFIX: &str = "node-role.kubernetes.io/";
/// Older label naming a node's role in its value.
const NODE_ROLE_LABEL: &str = "kubernetes.io/role";

pub(super) fn node(obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    // Only the Ready condition counts; the last one wins if it is listed twice.
    let ready = list(obj, &["status", "conditions"])
        .iter()
        .rev()
        .find(|c| string(c, &["type"]) == "Ready");
    let mut status = vec![match ready {
        Some(c) if string(c, &["status"]) == "True" => "Ready",
        Some(_) => "NotReady",
        None => "Unknown",
    }];
    if boolean(obj, &["spec", "unschedulable"]) {
        status.push("SchedulingDisabled");
    }

    let mut roles = BTreeSet::new();
    if let Some(node_labels) = get(obj, &["metadata", "labels"]).and_then(Value::as_object) {
        for (key, value) in node_labels {
            if let Some(role) = key.strip_prefix(NODE_ROLE_PREFIX) {
                if !role.is_empty() {
                    roles.insert(role);
                }
            } else if key == NODE_ROLE_LABEL {
                let role = value.as_str().unwrap_or("");
                if !role.is_empty() {
                    roles.insert(role);
                }
            }
        }
    }
    let roles: Vec<&str> = roles.into_iter().collect();

    let address = |kind: &str| {
        list(obj, &["status", "addresses"])
            .iter()
            .find(|a| string(a, &["type"]) == kind)
            .map(|a| string(a, &["address"]))
            .unwrap_or("<none>")
            .to_string()
    };
    let info = |field: &str| or(string(obj, &["status", "nodeInfo", field]), "<unknown>");
    vec![
        json!(name(obj)),
        json!(status.join(",")),
        json!(or(&roles.join(","), "<none>")),
        json!(age(obj, now)),
        json!(string(obj, &["status", "nodeInfo", "kubeletVersion"])),
        json!(address("InternalIP")),
        json!(address("ExternalIP")),
        json!(info("osImage")),
        json!(info("kernelVersion")),
        json!(info("containerRuntimeVersion")),
    ]
}

/// Whether an init container is a sidecar (`restartPolicy: Always`), which runs alongside the
/// app containers and counts among them.
fn is_restartable(container: Option<&Value>) -> bool {
    container.is_some_and(|c| string(c, &["restartPolicy"]) == "Always")
}

/// Keeps the later of `latest` and `t`.
fn keep_latest(latest: &mut Option<DateTime<Utc>>, t: Option<DateTime<Utc>>) {
    if let Some(t) = t {
        if latest.is_none_or(|l| l < t) {
            *latest = Some(t);
        }
    }
}

/// Whether the pod has a condition of this type with status True.
fn has_true_condition(pod: &Value, kind: &str) -> bool {
    list(pod, &["status", "conditions"])
        .iter()
        .any(|c| string(c, &["type"]) == kind && string(c, &["status"]) == "True")
}

/// `ExitCode:N`, or `Signal:N` when a signal ended the container.
fn exit_reason(terminated: &Value) -> String {
    let signal = int(terminated, &["signal"]);
    if signal != 0 {
        format!("Signal:{signal}")
    } else {
        format!("ExitCode:{}", int(terminated, &["exitCode"]))
    }
}

pub(super) fn pod(obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let init_specs = list(obj, &["spec", "initContainers"]);
    let init_spec = |name: &str| init_specs.iter().find(|c| string(c, &["name"]) == name);
    let total = list(obj, &["spec", "containers"]).len()
        + init_specs
            .iter()
            .filter(|c| is_restartable(Some(c)))
            .count();
    let mut ready = 0;
    let mut restarts = 0;
    let mut sidecar_restarts = 0;
    let mut last_restart = None;
    let mut last_sidecar_restart = None;

    let phase = string(obj, &["status", "phase"]);
    let mut reason = or(string(obj, &["status", "reason"]), phase);
    let gated = list(obj, &["status", "conditions"]).iter().any(|c| {
        string(c, &["type"]) == "PodScheduled" && string(c, &["reason"]) == "SchedulingGated"
    });
    if gated {
        reason = "SchedulingGated".to_string();
    }

    // The first init container that has not finished decides the status.
    let mut initializing = false;
    for (i, status) in list(obj, &["status", "initContainerStatuses"])
        .iter()
        .enumerate()
    {
        let count = int(status, &["restartCount"]);
        let finished = time(status, &["lastState", "terminated", "finishedAt"]);
        restarts += count;
        keep_latest(&mut last_restart, finished);
        let restartable = is_restartable(init_spec(string(status, &["name"])));
        if restartable {
            sidecar_restarts += count;
            keep_latest(&mut last_sidecar_restart, finished);
        }
        let terminated = get(status, &["state", "terminated"]);
        let waiting_reason = string(status, &["state", "waiting", "reason"]);
        if terminated.is_some_and(|t| int(t, &["exitCode"]) == 0) {
            continue;
        }
        if restartable && boolean(status, &["started"]) {
            if boolean(status, &["ready"]) {
                ready += 1;
            }
            continue;
        }
        reason = if let Some(terminated) = terminated {
            match string(terminated, &["reason"]) {
                "" => format!("Init:{}", exit_reason(terminated)),
                r => format!("Init:{r}"),
            }
        } else if !waiting_reason.is_empty() && waiting_reason != "PodInitializing" {
            format!("Init:{waiting_reason}")
        } else {
            format!("Init:{i}/{}", init_specs.len())
        };
        initializing = true;
        break;
    }

    if !initializing || has_true_condition(obj, "Initialized") {
        restarts = sidecar_restarts;
        last_restart = last_sidecar_restart;
        let mut has_running = false;
        for status in list(obj, &["status", "containerStatuses"]).iter().rev() {
            restarts += int(status, &["restartCount"]);
            keep_latest(
                &mut last_restart,
                time(status, &["lastState", "terminated", "finishedAt"]),
            );
            let waiting_reason = string(status, &["state", "waiting", "reason"]);
            let terminated = get(status, &["state", "terminated"]);
            if !waiting_reason.is_empty() {
                reason = waiting_reason.to_string();
            } else if let Some(terminated) = terminated {
                reason = match string(terminated, &["reason"]) {
                    "" => exit_reason(terminated),
                    r => r.to_string(),
                };
            } else if boolean(status, &["ready"]) && get(status, &["state", "running"]).is_some() {
                has_running = true;
                ready += 1;
            }
        }
        // A pod with a container still running is not Completed.
        if reason == "Completed" && has_running {
            reason = if has_true_condition(obj, "Ready") {
                "Running"
            } else {
                "NotReady"
            }
            .to_string();
        }
    }

    if get(obj, &["metadata", "deletionTimestamp"]).is_some() {
        if string(obj, &["status", "reason"]) == "NodeLost" {
            reason = "Unknown".to_string();
        } else if phase != "Succeeded" && phase != "Failed" {
            reason = "Terminating".to_string();
        }
    }

    let restarts_cell = match last_restart {
        Some(t) if restarts != 0 => format!("{restarts} ({} ago)", since(Some(t), now)),
        _ => restarts.to_string(),
    };

    // The v1 API fills podIPs from podIP; read podIP for objects that only have that.
    let ip = list(obj, &["status", "podIPs"])
        .first()
        .map(|p| string(p, &["ip"]))
        .unwrap_or_else(|| string(obj, &["status", "podIP"]));
    let gates = list(obj, &["spec", "readinessGates"]);
    let readiness_gates = if gates.is_empty() {
        "<none>".to_string()
    } else {
        let conditions = list(obj, &["status", "conditions"]);
        let passed = gates
            .iter()
            .filter(|gate| {
                let kind = string(gate, &["conditionType"]);
                conditions
                    .iter()
                    .find(|c| string(c, &["type"]) == kind)
                    .is_some_and(|c| string(c, &["status"]) == "True")
            })
            .count();
        format!("{passed}/{}", gates.len())
    };
    vec![
        json!(name(obj)),
        json!(format!("{ready}/{total}")),
        json!(reason),
        json!(restarts_cell),
        json!(age(obj, now)),
        json!(or(ip, "<none>")),
        json!(or(string(obj, &["spec", "nodeName"]), "<none>")),
        json!(or(string(obj, &["status", "nominatedNodeName"]), "<none>")),
        json!(readiness_gates),
    ]
}

/// The EXTERNAL-IP cell of a service of the given type.
fn service_external_ip(obj: &Value, kind: &str) -> String {
    let external_ips: Vec<&str> = list(obj, &["spec", "externalIPs"])
        .iter()
        .map(|ip| ip.as_str().unwrap_or(""))
        .collect();
    match kind {
        "ClusterIP" | "NodePort" => or(&external_ips.join(","), "<none>"),
        "LoadBalancer" => {
            let balancer = load_balancer_ingress(get(obj, &["status", "loadBalancer"]));
            if !external_ips.is_empty() {
                let mut all: Vec<&str> = Vec::new();
                if !balancer.is_empty() {
                    all.extend(balancer.split(','));
                }
                all.extend(external_ips);
                all.join(",")
            } else {
                or(&balancer, "<pending>")
            }
        }
        "ExternalName" => string(obj, &["spec", "externalName"]).to_string(),
        _ => "<unknown>".to_string(),
    }
}

pub(super) fn service(obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let kind = or(string(obj, &["spec", "type"]), "ClusterIP");
    let cluster_ip = list(obj, &["spec", "clusterIPs"])
        .first()
        .and_then(Value::as_str)
        .unwrap_or_else(|| string(obj, &["spec", "clusterIP"]));
    let ports: Vec<String> = list(obj, &["spec", "ports"])
        .iter()
        .map(|p| {
            let port = int(p, &["port"]);
            let protocol = or(string(p, &["protocol"]), "TCP");
            match int(p, &["nodePort"]) {
                node_port if node_port > 0 => format!("{port}:{node_port}/{protocol}"),
                _ => format!("{port}/{protocol}"),
            }
        })
        .collect();
    vec![
        json!(name(obj)),
        json!(kind),
        json!(or(cluster_ip, "<none>")),
        json!(service_external_ip(obj, &kind)),
        json!(or(&ports.join(","), "<none>")),
        json!(age(obj, now)),
        json!(labels(get(obj, &["spec", "selector"]))),
    ]
}

/// How many endpoints Endpoints and EndpointSlice rows list before `+ N more...`.
const MAX_LISTED: usize = 3;

/// Kubernetes' `formatEndpoints`: `ip:port` for every ready address and port, the first three
/// and then how many more.
fn format_endpoints(obj: &Value) -> String {
    let subsets = list(obj, &["subsets"]);
    if subsets.is_empty() {
        return "<none>".to_string();
    }
    let mut listed: Vec<String> = Vec::new();
    let mut more = false;
    let mut count = 0;
    for subset in subsets {
        let addresses = list(subset, &["addresses"]);
        let ports = list(subset, &["ports"]);
        let ip = |a: &Value| string(a, &["ip"]).to_string();
        if ports.is_empty() {
            // Headless services may have no ports.
            count += addresses.len();
            for address in addresses {
                if listed.len() == MAX_LISTED {
                    more = true;
                    break;
                }
                listed.push(ip(address));
            }
            continue;
        }
        for port in ports {
            count += addresses.len();
            for address in addresses {
                if listed.len() == MAX_LISTED {
                    more = true;
                    break;
                }
                listed.push(join_host_port(&ip(address), int(port, &["port"])));
            }
        }
    }
    let joined = listed.join(",");
    if more {
        format!("{joined} + {} more...", count - MAX_LISTED)
    } else {
        joined
    }
}

pub(super) fn endpoints(obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    vec![
        json!(name(obj)),
        json!(format_endpoints(obj)),
        json!(age(obj, now)),
    ]
}

pub(super) fn config_map(obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let data = len(obj, &["data"]) + len(obj, &["binaryData"]);
    vec![json!(name(obj)), json!(data), json!(age(obj, now))]
}

pub(super) fn secret(obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    vec![
        json!(name(obj)),
        json!(or(string(obj, &["type"]), "Opaque")),
        json!(len(obj, &["data"])),
        json!(age(obj, now)),
    ]
}

pub(super) fn service_account(obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    vec![
        json!(name(obj)),
        json!(len(obj, &["secrets"])),
        json!(age(obj, now)),
    ]
}

pub(super) fn event(obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let first_seen = match time(obj, &["firstTimestamp"]) {
        Some(t) => since(Some(t), now),
        None => since(time(obj, &["eventTime"]), now),
    };
    let mut last_seen = match time(obj, &["lastTimestamp"]) {
        Some(t) => since(Some(t), now),
        None => first_seen.clone(),
    };
    let mut count = int(obj, &["count"]);
    if let Some(series) = get(obj, &["series"]) {
        last_seen = since(time(series, &["lastObservedTime"]), now);
        count = int(series, &["count"]);
    } else if count == 0 {
        // Events of the events.k8s.io API seen once have no count.
        count = 1;
    }

    let kind = string(obj, &["involvedObject", "kind"]).to_lowercase();
    let involved = string(obj, &["involvedObject", "name"]);
    let target = if involved.is_empty() {
        kind
    } else {
        format!("{kind}/{involved}")
    };

    let component = or(
        string(obj, &["source", "component"]),
        string(obj, &["reportingComponent"]),
    );
    let instance = or(
        string(obj, &["source", "host"]),
        string(obj, &["reportingInstance"]),
    );
    let source = if instance.is_empty() {
        component
    } else {
        format!("{component}, {instance}")
    };

    vec![
        json!(last_seen),
        json!(string(obj, &["type"])),
        json!(string(obj, &["reason"])),
        json!(target),
        json!(string(obj, &["involvedObject", "fieldPath"])),
        json!(source),
        json!(string(obj, &["message"]).trim()),
        json!(first_seen),
        json!(count),
        json!(name(obj)),
    ]
}

pub(super) fn endpoint_slice(obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let ports = list(obj, &["ports"]);
    let port_names: Vec<String> = ports
        .iter()
        .take(MAX_LISTED)
        .map(|p| match (get(p, &["port"]), get(p, &["name"])) {
            (Some(port), _) => port.to_string(),
            (None, Some(name)) => name.as_str().unwrap_or("").to_string(),
            (None, None) => "*".to_string(),
        })
        .collect();
    let addresses: Vec<&Value> = list(obj, &["endpoints"])
        .iter()
        .flat_map(|e| list(e, &["addresses"]))
        .collect();
    let listed: Vec<String> = addresses
        .iter()
        .take(MAX_LISTED)
        .map(|a| a.as_str().unwrap_or("").to_string())
        .collect();
    vec![
        json!(name(obj)),
        json!(string(obj, &["addressType"])),
        json!(list_with_more(
            &port_names,
            ports.len() > MAX_LISTED,
            ports.len(),
            MAX_LISTED
        )),
        json!(list_with_more(
            &listed,
            addresses.len() > MAX_LISTED,
            addresses.len(),
            MAX_LISTED
        )),
        json!(age(obj, now)),
    ]
}

/// `spec.replicas`, which the API server defaults to 1.
fn desired_replicas(obj: &Value) -> i64 {
    get(obj, &["spec", "replicas"])
        .and_then(Value::as_i64)
        .unwrap_or(1)
}

pub(super) fn deployment(obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let ready = int(obj, &["status", "readyReplicas"]);
    let (containers, images) = container_cells(obj);
    let selector =
        selector(get(obj, &["spec", "selector"])).unwrap_or_else(|| "<invalid>".to_string());
    vec![
        json!(name(obj)),
        json!(format!("{ready}/{}", desired_replicas(obj))),
        json!(int(obj, &["status", "updatedReplicas"])),
        json!(int(obj, &["status", "availableReplicas"])),
        json!(age(obj, now)),
        json!(containers),
        json!(images),
        json!(selector),
    ]
}

pub(super) fn replica_set(obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let (containers, images) = container_cells(obj);
    vec![
        json!(name(obj)),
        json!(desired_replicas(obj)),
        json!(int(obj, &["status", "replicas"])),
        json!(int(obj, &["status", "readyReplicas"])),
        json!(age(obj, now)),
        json!(containers),
        json!(images),
        json!(label_selector(get(obj, &["spec", "selector"]))),
    ]
}

/// Kubernetes' `formatHosts`: the hosts of the first rules, `*` when none names one.
fn ingress_hosts(rules: &[Value]) -> String {
    let mut hosts: Vec<&str> = Vec::new();
    let mut more = false;
    for rule in rules {
        if hosts.len() == MAX_LISTED {
            more = true;
        }
        let host = string(rule, &["host"]);
        if !more && !host.is_empty() {
            hosts.push(host);
        }
    }
    if hosts.is_empty() {
        return "*".to_string();
    }
    let joined = hosts.join(",");
    if more {
        format!("{joined} + {} more...", rules.len() - MAX_LISTED)
    } else {
        joined
    }
}

pub(super) fn ingress(obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let ports = if list(obj, &["spec", "tls"]).is_empty() {
        "80"
    } else {
        "80, 443"
    };
    vec![
        json!(name(obj)),
        json!(or(string(obj, &["spec", "ingressClassName"]), "<none>")),
        json!(ingress_hosts(list(obj, &["spec", "rules"]))),
        json!(load_balancer_ingress(get(obj, &["status", "loadBalancer"]))),
        json!(ports),
        json!(age(obj, now)),
    ]
}

pub(super) fn ingress_class(obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let parameters = match get(obj, &["spec", "parameters"]) {
        None => "<none>".to_string(),
        Some(p) => {
            let kind = string(p, &["kind"]);
            let name = string(p, &["name"]);
            match get(p, &["apiGroup"]).and_then(Value::as_str) {
                Some(group) => format!("{kind}.{group}/{name}"),
                None => format!("{kind}/{name}"),
            }
        }
    };
    vec![
        json!(name(obj)),
        json!(string(obj, &["spec", "controller"])),
        json!(parameters),
        json!(age(obj, now)),
    ]
}

pub(super) fn network_policy(obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    // podSelector is not a pointer in Go: a missing one is the empty selector.
    let empty = json!({});
    let pod_selector = label_selector(Some(get(obj, &["spec", "podSelector"]).unwrap_or(&empty)));
    vec![json!(name(obj)), json!(pod_selector), json!(age(obj, now))]
}

pub(super) fn lease(obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    vec![
        json!(name(obj)),
        json!(string(obj, &["spec", "holderIdentity"])),
        json!(age(obj, now)),
    ]
}

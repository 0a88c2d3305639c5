//! The scheduler's filters and score, as pure functions of a pod and the nodes with how
//! many pods each already runs. They follow kube-scheduler's default plugins, in its order:
//! NodeUnschedulable, TaintToleration, NodeAffinity (nodeSelector and required node
//! affinity), then two of our own (the node is Ready, the node has a pod CIDR), then
//! NodePorts (a hostPort taken on the node by another pod) and NodeResourcesFit for the
//! pod count. The score prefers the node with the fewest pods,
//! ties broken by name.
//!
//! When no node fits, [`FitError`] renders Kubernetes' message, e.g. "0/3 nodes are
//! available: 1 node(s) didn't match Pod's node affinity/selector, 2 node(s) had
//! untolerated taint {node.kubernetes.io/unreachable: }. preemption: 0/3 nodes are
//! available: 3 Preemption is not helpful for scheduling."

use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::api::core::v1::{
    Node, NodeSelectorRequirement, NodeSelectorTerm, Pod, Taint, Toleration,
};

/// Taint a pod must tolerate to land on an unschedulable (cordoned) node.
pub const TAINT_UNSCHEDULABLE: &str = "node.kubernetes.io/unschedulable";

/// Why a node cannot take a pod.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Unfit {
    /// spec.unschedulable, not tolerated.
    Unschedulable,
    /// A NoSchedule or NoExecute taint the pod does not tolerate (the first one).
    Taint {
        /// The taint's key.
        key: String,
        /// The taint's value ("" if none).
        value: String,
    },
    /// nodeSelector or required node affinity does not match.
    Affinity,
    /// The Ready condition is not True.
    NotReady,
    /// The node has no pod CIDR yet (pods on the pod network need one).
    NoPodCidr,
    /// A hostPort the pod asks for is taken on the node.
    HostPort,
    /// The node runs `status.allocatable.pods` pods already.
    TooManyPods,
}

/// A host port a pod holds: (protocol, hostIP, port), hostIP "" for every address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPort {
    pub protocol: String,
    pub ip: String,
    pub port: i32,
}

/// The host ports a pod's containers ask for.
pub fn host_ports(pod: &Pod) -> Vec<HostPort> {
    let Some(spec) = pod.spec.as_ref() else {
        return Vec::new();
    };
    spec.containers
        .iter()
        .flat_map(|c| c.ports.iter().flatten())
        .filter_map(|p| {
            let port = p.host_port.filter(|h| *h > 0)?;
            let ip = p.host_ip.clone().unwrap_or_default();
            Some(HostPort {
                protocol: p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                ip: if ip == "0.0.0.0" { String::new() } else { ip },
                port,
            })
        })
        .collect()
}

/// Kubernetes' NodePorts rule: two host ports conflict with the same protocol and port
/// when their hostIPs are equal or either is every address.
pub fn ports_conflict(a: &HostPort, b: &HostPort) -> bool {
    a.port == b.port
        && a.protocol == b.protocol
        && (a.ip == b.ip || a.ip.is_empty() || b.ip.is_empty())
}

impl fmt::Display for Unfit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unfit::Unschedulable => f.write_str("node(s) were unschedulable"),
            Unfit::Taint { key, value } => {
                write!(f, "node(s) had untolerated taint {{{key}: {value}}}")
            }
            Unfit::Affinity => f.write_str("node(s) didn't match Pod's node affinity/selector"),
            Unfit::NotReady => f.write_str("node(s) were not ready"),
            Unfit::NoPodCidr => f.write_str("node(s) had no pod CIDR assigned"),
            Unfit::HostPort => {
                f.write_str("node(s) didn't have free ports for the requested pod ports")
            }
            Unfit::TooManyPods => f.write_str("Too many pods"),
        }
    }
}

impl Unfit {
    /// Whether evicting lower-priority pods could make room (Kubernetes' preemption
    /// message distinguishes these).
    fn resolvable_by_preemption(&self) -> bool {
        matches!(self, Unfit::TooManyPods | Unfit::HostPort)
    }
}

/// No node fits the pod: how many nodes there were, and why each did not fit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FitError {
    /// Every node considered.
    pub nodes: usize,
    /// (node, why it does not fit), one per node.
    pub reasons: Vec<(String, Unfit)>,
}

/// "N reason, M reason" sorted as Kubernetes sorts it (as strings).
fn histogram<'a>(reasons: impl Iterator<Item = String> + 'a) -> String {
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for r in reasons {
        *counts.entry(r).or_default() += 1;
    }
    let mut lines: Vec<String> = counts
        .into_iter()
        .map(|(r, n)| format!("{n} {r}"))
        .collect();
    lines.sort();
    lines.join(", ")
}

impl fmt::Display for FitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.nodes == 0 {
            return f.write_str("no nodes available to schedule pods");
        }
        let n = self.nodes;
        let why = histogram(self.reasons.iter().map(|(_, r)| r.to_string()));
        let preemption = histogram(self.reasons.iter().map(|(_, r)| {
            if r.resolvable_by_preemption() {
                "No preemption victims found for incoming pod".to_string()
            } else {
                "Preemption is not helpful for scheduling".to_string()
            }
        }));
        write!(
            f,
            "0/{n} nodes are available: {why}. preemption: 0/{n} nodes are available: {preemption}."
        )
    }
}

/// Kubernetes' toleration matching: the effect matches (or the toleration names none), the
/// key matches (or the toleration names none, which only `Exists` may do), and the value
/// matches for `Equal` (the default operator) or anything for `Exists`.
pub fn tolerates(t: &Toleration, taint: &Taint) -> bool {
    if let Some(effect) = t.effect.as_deref().filter(|e| !e.is_empty()) {
        if effect != taint.effect {
            return false;
        }
    }
    if let Some(key) = t.key.as_deref().filter(|k| !k.is_empty()) {
        if key != taint.key {
            return false;
        }
    }
    match t.operator.as_deref().unwrap_or("Equal") {
        "Exists" => true,
        "Equal" | "" => t.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or(""),
        _ => false,
    }
}

fn tolerations(pod: &Pod) -> &[Toleration] {
    pod.spec
        .as_ref()
        .and_then(|s| s.tolerations.as_deref())
        .unwrap_or(&[])
}

/// The first NoSchedule/NoExecute taint of the node the pod does not tolerate.
pub fn untolerated_taint<'a>(pod: &Pod, node: &'a Node) -> Option<&'a Taint> {
    let tols = tolerations(pod);
    node.spec
        .as_ref()
        .and_then(|s| s.taints.as_deref())
        .unwrap_or(&[])
        .iter()
        .filter(|t| t.effect == "NoSchedule" || t.effect == "NoExecute")
        .find(|t| !tols.iter().any(|tol| tolerates(tol, t)))
}

/// Whether one node selector requirement holds for the node's labels (or name, for
/// `matchFields` on metadata.name).
pub fn requirement_matches(req: &NodeSelectorRequirement, value: Option<&str>) -> bool {
    let values = req.values.as_deref().unwrap_or(&[]);
    match req.operator.as_str() {
        "In" => !values.is_empty() && value.is_some_and(|v| values.iter().any(|x| x == v)),
        "NotIn" => !values.is_empty() && value.is_none_or(|v| !values.iter().any(|x| x == v)),
        "Exists" => values.is_empty() && value.is_some(),
        "DoesNotExist" => values.is_empty() && value.is_none(),
        op @ ("Gt" | "Lt") => {
            let (Some(v), [bound]) = (value, values) else {
                return false;
            };
            match (v.parse::<i64>(), bound.parse::<i64>()) {
                (Ok(v), Ok(b)) => {
                    if op == "Gt" {
                        v > b
                    } else {
                        v < b
                    }
                }
                _ => false,
            }
        }
        _ => false,
    }
}

/// Whether a node selector term holds: all its expressions and fields; an empty term
/// matches nothing.
pub fn term_matches(term: &NodeSelectorTerm, node: &Node) -> bool {
    let exprs = term.match_expressions.as_deref().unwrap_or(&[]);
    let fields = term.match_fields.as_deref().unwrap_or(&[]);
    if exprs.is_empty() && fields.is_empty() {
        return false;
    }
    let labels = node.metadata.labels.as_ref();
    exprs
        .iter()
        .all(|r| requirement_matches(r, labels.and_then(|l| l.get(&r.key)).map(String::as_str)))
        && fields.iter().all(|r| {
            r.key == "metadata.name" && requirement_matches(r, node.metadata.name.as_deref())
        })
}

/// Whether the node matches the pod's nodeSelector and required node affinity.
pub fn matches_node_selector(pod: &Pod, node: &Node) -> bool {
    let Some(spec) = &pod.spec else {
        return true;
    };
    let labels = node.metadata.labels.as_ref();
    let selector_ok = spec.node_selector.as_ref().is_none_or(|sel| {
        sel.iter()
            .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
    });
    let required = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|na| {
            na.required_during_scheduling_ignored_during_execution
                .as_ref()
        });
    let affinity_ok = required.is_none_or(|sel| {
        sel.node_selector_terms
            .iter()
            .any(|t| term_matches(t, node))
    });
    selector_ok && affinity_ok
}

/// Whether the node's Ready condition is True.
pub fn is_ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Whether the node has a pod CIDR.
pub fn has_pod_cidr(node: &Node) -> bool {
    node.spec.as_ref().is_some_and(|s| {
        s.pod_cidr.as_ref().is_some_and(|c| !c.is_empty())
            || s.pod_cidrs.as_ref().is_some_and(|l| !l.is_empty())
    })
}

/// `status.allocatable.pods` (0 when missing or not a whole number, as in Kubernetes).
pub fn allocatable_pods(node: &Node) -> usize {
    node.status
        .as_ref()
        .and_then(|s| s.allocatable.as_ref())
        .and_then(|a| a.get("pods"))
        .and_then(|q| q.0.trim().parse::<usize>().ok())
        .unwrap_or(0)
}

/// Whether the node can take the pod, given how many pods it runs; the first reason it
/// cannot.
pub fn check(pod: &Pod, node: &Node, pods_on_node: usize) -> Result<(), Unfit> {
    let spec = node.spec.as_ref();
    if spec.and_then(|s| s.unschedulable).unwrap_or(false) {
        let cordon = Taint {
            key: TAINT_UNSCHEDULABLE.into(),
            effect: "NoSchedule".into(),
            time_added: None,
            value: None,
        };
        if !tolerations(pod).iter().any(|t| tolerates(t, &cordon)) {
            return Err(Unfit::Unschedulable);
        }
    }
    if let Some(t) = untolerated_taint(pod, node) {
        return Err(Unfit::Taint {
            key: t.key.clone(),
            value: t.value.clone().unwrap_or_default(),
        });
    }
    if !matches_node_selector(pod, node) {
        return Err(Unfit::Affinity);
    }
    if !is_ready(node) {
        return Err(Unfit::NotReady);
    }
    let host_network = pod
        .spec
        .as_ref()
        .and_then(|s| s.host_network)
        .unwrap_or(false);
    if !host_network && !has_pod_cidr(node) {
        return Err(Unfit::NoPodCidr);
    }
    if pods_on_node + 1 > allocatable_pods(node) {
        return Err(Unfit::TooManyPods);
    }
    Ok(())
}

/// The node for the pod: among the nodes that fit, the one with the fewest pods (ties
/// by name). `nodes` pairs each node with how many pods it runs.
pub fn schedule(pod: &Pod, nodes: &[(&Node, usize)]) -> Result<String, FitError> {
    let views: Vec<(&Node, usize, &[HostPort])> =
        nodes.iter().map(|(n, c)| (*n, *c, &[][..])).collect();
    schedule_with_ports(pod, &views)
}

/// [`schedule`] with the host ports each node's pods hold (the NodePorts filter).
pub fn schedule_with_ports(
    pod: &Pod,
    nodes: &[(&Node, usize, &[HostPort])],
) -> Result<String, FitError> {
    let mut reasons = Vec::new();
    let mut best: Option<(usize, &str)> = None;
    let wanted = host_ports(pod);
    for (node, count, used) in nodes {
        let name = node.metadata.name.as_deref().unwrap_or("");
        let ports_taken = || {
            wanted
                .iter()
                .any(|w| used.iter().any(|u| ports_conflict(w, u)))
        };
        let fit = check(pod, node, *count).and_then(|()| {
            if ports_taken() {
                Err(Unfit::HostPort)
            } else {
                Ok(())
            }
        });
        match fit {
            Ok(()) => {
                if best.is_none_or(|b| (*count, name) < b) {
                    best = Some((*count, name));
                }
            }
            Err(r) => reasons.push((name.to_string(), r)),
        }
    }
    match best {
        Some((_, name)) => Ok(name.to_string()),
        None => Err(FitError {
            nodes: nodes.len(),
            reasons,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    /// A Ready node with a pod CIDR and room for 110 pods, changed by `extra` (merged in).
    fn node(name: &str, extra: Value) -> Node {
        let mut v = json!({
            "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
            "spec": {"podCIDR": "10.244.0.0/24"},
            "status": {
                "conditions": [{"type": "Ready", "status": "True"}],
                "allocatable": {"pods": "110"},
            },
        });
        merge(&mut v, extra);
        serde_json::from_value(v).expect("test node")
    }

    fn pod(spec: Value) -> Pod {
        let mut v = json!({"metadata": {"name": "p", "namespace": "default"}, "spec": {"containers": [{"name": "c", "image": "i"}]}});
        merge(&mut v["spec"], spec);
        serde_json::from_value(v).expect("test pod")
    }

    fn merge(into: &mut Value, from: Value) {
        match (into, from) {
            (Value::Object(a), Value::Object(b)) => {
                for (k, v) in b {
                    merge(a.entry(k).or_insert(Value::Null), v);
                }
            }
            (a, b) => *a = b,
        }
    }

    /// The one place the filters are exercised: pod spec, node changes, pods on the node
    /// → the outcome as text ("ok" or the reason).
    fn check_fit(pod_spec: Value, node_extra: Value, pods: usize) -> String {
        match check(&pod(pod_spec), &node("n", node_extra), pods) {
            Ok(()) => "ok".into(),
            Err(r) => r.to_string(),
        }
    }

    #[test]
    fn filters() {
        let unreachable = json!({"spec": {"taints": [
            {"key": "node.kubernetes.io/unreachable", "effect": "NoSchedule"},
            {"key": "node.kubernetes.io/unreachable", "effect": "NoExecute"}]}});
        let cases: Vec<(&str, Value, Value, usize, &str)> = vec![
            ("plain", json!({}), json!({}), 0, "ok"),
            (
                "cordoned",
                json!({}),
                json!({"spec": {"unschedulable": true}}),
                0,
                "node(s) were unschedulable",
            ),
            (
                "cordoned, tolerated",
                json!({"tolerations": [{"key": TAINT_UNSCHEDULABLE, "operator": "Exists", "effect": "NoSchedule"}]}),
                json!({"spec": {"unschedulable": true}}),
                0,
                "ok",
            ),
            (
                "unreachable",
                json!({}),
                unreachable.clone(),
                0,
                "node(s) had untolerated taint {node.kubernetes.io/unreachable: }",
            ),
            (
                "unreachable, NoExecute tolerated only",
                json!({"tolerations": [{"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}]}),
                unreachable.clone(),
                0,
                "node(s) had untolerated taint {node.kubernetes.io/unreachable: }",
            ),
            (
                "tolerate everything",
                json!({"tolerations": [{"operator": "Exists"}]}),
                unreachable,
                0,
                "ok",
            ),
            (
                "PreferNoSchedule is ignored",
                json!({}),
                json!({"spec": {"taints": [{"key": "k", "value": "v", "effect": "PreferNoSchedule"}]}}),
                0,
                "ok",
            ),
            (
                "taint with a value",
                json!({}),
                json!({"spec": {"taints": [{"key": "dedicated", "value": "db", "effect": "NoSchedule"}]}}),
                0,
                "node(s) had untolerated taint {dedicated: db}",
            ),
            (
                "Equal toleration",
                json!({"tolerations": [{"key": "dedicated", "value": "db", "effect": "NoSchedule"}]}),
                json!({"spec": {"taints": [{"key": "dedicated", "value": "db", "effect": "NoSchedule"}]}}),
                0,
                "ok",
            ),
            (
                "nodeSelector",
                json!({"nodeSelector": {"disk": "ssd"}}),
                json!({"metadata": {"labels": {"disk": "ssd"}}}),
                0,
                "ok",
            ),
            (
                "nodeSelector mismatch",
                json!({"nodeSelector": {"disk": "ssd"}}),
                json!({"metadata": {"labels": {"disk": "hdd"}}}),
                0,
                "node(s) didn't match Pod's node affinity/selector",
            ),
            (
                "affinity In",
                json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                    {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a", "b"]}]}]}}}}),
                json!({"metadata": {"labels": {"zone": "b"}}}),
                0,
                "ok",
            ),
            (
                "affinity terms are ORed",
                json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                    {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["x"]}]},
                    {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n"]}]}]}}}}),
                json!({}),
                0,
                "ok",
            ),
            (
                "affinity NotIn",
                json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                    {"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "NotIn", "values": ["n"]}]}]}}}}),
                json!({}),
                0,
                "node(s) didn't match Pod's node affinity/selector",
            ),
            (
                "not ready",
                json!({}),
                json!({"status": {"conditions": [{"type": "Ready", "status": "Unknown"}]}}),
                0,
                "node(s) were not ready",
            ),
            (
                "no pod CIDR",
                json!({}),
                json!({"spec": {"podCIDR": null}}),
                0,
                "node(s) had no pod CIDR assigned",
            ),
            (
                "no pod CIDR, host network",
                json!({"hostNetwork": true}),
                json!({"spec": {"podCIDR": null}}),
                0,
                "ok",
            ),
            (
                "full",
                json!({}),
                json!({"status": {"allocatable": {"pods": "3"}}}),
                3,
                "Too many pods",
            ),
            (
                "room for one more",
                json!({}),
                json!({"status": {"allocatable": {"pods": "3"}}}),
                2,
                "ok",
            ),
            (
                "no allocatable",
                json!({}),
                json!({"status": {"allocatable": null}}),
                0,
                "Too many pods",
            ),
        ];
        for (what, pod_spec, node_extra, pods, want) in cases {
            assert_eq!(check_fit(pod_spec, node_extra, pods), want, "{what}");
        }
    }

    fn tol(
        key: Option<&str>,
        op: Option<&str>,
        value: Option<&str>,
        effect: Option<&str>,
    ) -> Toleration {
        Toleration {
            key: key.map(String::from),
            operator: op.map(String::from),
            value: value.map(String::from),
            effect: effect.map(String::from),
            toleration_seconds: None,
        }
    }

    #[test]
    fn toleration_rules() {
        let taint = Taint {
            key: "k".into(),
            value: Some("v".into()),
            effect: "NoSchedule".into(),
            time_added: None,
        };
        let cases = [
            (
                tol(Some("k"), Some("Equal"), Some("v"), Some("NoSchedule")),
                true,
            ),
            (tol(Some("k"), None, Some("v"), None), true),
            (tol(Some("k"), Some("Equal"), Some("w"), None), false),
            (tol(Some("k"), Some("Exists"), None, None), true),
            (
                tol(Some("k"), Some("Exists"), None, Some("NoExecute")),
                false,
            ),
            (tol(Some("other"), Some("Exists"), None, None), false),
            (tol(None, Some("Exists"), None, None), true),
            (
                tol(Some(""), Some("Exists"), None, Some("NoSchedule")),
                true,
            ),
            (tol(Some("k"), Some("Lt"), Some("v"), None), false),
        ];
        for (t, want) in cases {
            assert_eq!(tolerates(&t, &taint), want, "{t:?}");
        }
    }

    #[test]
    fn requirements() {
        let req = |op: &str, values: &[&str]| NodeSelectorRequirement {
            key: "k".into(),
            operator: op.into(),
            values: Some(values.iter().map(|s| s.to_string()).collect()),
        };
        let cases: &[(&str, &[&str], Option<&str>, bool)] = &[
            ("In", &["a"], Some("a"), true),
            ("In", &["a"], None, false),
            ("In", &[], Some("a"), false),
            ("NotIn", &["a"], Some("b"), true),
            ("NotIn", &["a"], None, true),
            ("NotIn", &["a"], Some("a"), false),
            ("Exists", &[], Some(""), true),
            ("Exists", &[], None, false),
            ("DoesNotExist", &[], None, true),
            ("DoesNotExist", &[], Some("x"), false),
            ("Gt", &["5"], Some("6"), true),
            ("Gt", &["5"], Some("5"), false),
            ("Lt", &["5"], Some("4"), true),
            ("Lt", &["5"], Some("x"), false),
            ("Gt", &["5", "6"], Some("9"), false),
            ("Bogus", &[], Some("x"), false),
        ];
        for (op, values, value, want) in cases {
            assert_eq!(
                requirement_matches(&req(op, values), *value),
                *want,
                "{op} {values:?} {value:?}"
            );
        }
        let empty_term = NodeSelectorTerm::default();
        assert!(!term_matches(&empty_term, &node("n", json!({}))));
    }

    #[test]
    fn host_ports_conflict_as_kubernetes_says() {
        let hp = |protocol: &str, ip: &str, port: i32| HostPort {
            protocol: protocol.into(),
            ip: ip.into(),
            port,
        };
        for (a, b, conflict) in [
            (hp("TCP", "", 80), hp("TCP", "", 80), true),
            (hp("TCP", "", 80), hp("UDP", "", 80), false),
            (hp("TCP", "", 80), hp("TCP", "", 81), false),
            (hp("TCP", "10.0.0.1", 80), hp("TCP", "10.0.0.2", 80), false),
            (hp("TCP", "10.0.0.1", 80), hp("TCP", "", 80), true),
            (hp("TCP", "10.0.0.1", 80), hp("TCP", "10.0.0.1", 80), true),
        ] {
            assert_eq!(ports_conflict(&a, &b), conflict, "{a:?} {b:?}");
        }
        let p = pod(json!({"containers": [{"name": "a", "image": "x", "ports": [
            {"containerPort": 80, "hostPort": 8080}, {"containerPort": 53, "hostPort": 53, "protocol": "UDP", "hostIP": "0.0.0.0"}, {"containerPort": 90}]}]}));
        assert_eq!(host_ports(&p), [hp("TCP", "", 8080), hp("UDP", "", 53)]);
        let (a, b) = (node("a", json!({})), node("b", json!({})));
        let taken = [hp("TCP", "", 8080)];
        let views: Vec<(&Node, usize, &[HostPort])> = vec![(&a, 0, &taken[..]), (&b, 5, &[][..])];
        assert_eq!(schedule_with_ports(&p, &views).expect("fits"), "b");
        let views: Vec<(&Node, usize, &[HostPort])> = vec![(&a, 0, &taken[..])];
        assert_eq!(
            schedule_with_ports(&p, &views).expect_err("no fit").to_string(),
            "0/1 nodes are available: 1 node(s) didn't have free ports for the requested pod ports. preemption: 0/1 nodes are available: 1 No preemption victims found for incoming pod."
        );
    }

    #[test]
    fn spreads_by_pod_count_then_name() {
        let (a, b, c) = (
            node("a", json!({})),
            node("b", json!({})),
            node("c", json!({})),
        );
        let p = pod(json!({}));
        let cases: &[(usize, usize, usize, &str)] = &[
            (0, 0, 0, "a"),
            (1, 0, 0, "b"),
            (1, 1, 0, "c"),
            (1, 1, 1, "a"),
            (2, 1, 1, "b"),
        ];
        for (na, nb, nc, want) in cases {
            let got = schedule(&p, &[(&c, *nc), (&a, *na), (&b, *nb)]);
            assert_eq!(got.as_deref(), Ok(*want), "{na} {nb} {nc}");
        }
    }

    #[test]
    fn fit_error_messages() {
        let unreachable = json!({"spec": {"taints": [{"key": "node.kubernetes.io/unreachable", "effect": "NoSchedule"}]}});
        let p = pod(json!({"nodeSelector": {"disk": "ssd"}}));
        let nodes = [
            node("a", json!({"metadata": {"labels": {"disk": "hdd"}}})),
            node("b", unreachable.clone()),
            node("c", unreachable),
        ];
        let views: Vec<(&Node, usize)> = nodes.iter().map(|n| (n, 0)).collect();
        let err = schedule(&p, &views).expect_err("nothing fits");
        assert_eq!(
            err.to_string(),
            "0/3 nodes are available: 1 node(s) didn't match Pod's node affinity/selector, 2 node(s) had untolerated taint {node.kubernetes.io/unreachable: }. preemption: 0/3 nodes are available: 3 Preemption is not helpful for scheduling."
        );
        let full = [
            node("a", json!({"spec": {"unschedulable": true}})),
            node("b", json!({"status": {"allocatable": {"pods": "1"}}})),
            node("c", json!({"status": {"allocatable": {"pods": "1"}}})),
        ];
        let views: Vec<(&Node, usize)> = full.iter().map(|n| (n, 1)).collect();
        assert_eq!(
            schedule(&pod(json!({})), &views).expect_err("full").to_string(),
            "0/3 nodes are available: 1 node(s) were unschedulable, 2 Too many pods. preemption: 0/3 nodes are available: 1 Preemption is not helpful for scheduling, 2 No preemption victims found for incoming pod."
        );
        assert_eq!(
            schedule(&pod(json!({})), &[])
                .expect_err("no nodes")
                .to_string(),
            "no nodes available to schedule pods"
        );
    }
}

use std::sync::Arc;

use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use proxy::RecordingNft;
use serde_json::{json, Value};

use super::*;

fn from<T: serde::de::DeserializeOwned>(v: Value) -> T {
    match serde_json::from_value(v) {
        Ok(t) => t,
        Err(e) => panic!("bad test object: {e}"),
    }
}

fn pod(ns: &str, name: &str, node: &str, ip: &str, labels: Value) -> Pod {
    from(json!({
        "metadata": {"namespace": ns, "name": name, "labels": labels},
        "spec": {"nodeName": node, "containers": [{"name": "c", "ports": [
            {"name": "http", "containerPort": 8080},
            {"name": "dns", "containerPort": 5353, "protocol": "UDP"}]}]},
        "status": {"phase": "Running", "podIP": ip}
    }))
}

fn ns(name: &str, labels: Value) -> Namespace {
    let mut l = labels;
    l["kubernetes.io/metadata.name"] = json!(name);
    from(json!({"metadata": {"name": name, "labels": l}}))
}

fn policy(ns: &str, name: &str, spec: Value) -> NetworkPolicy {
    from(json!({"metadata": {"namespace": ns, "name": name}, "spec": spec}))
}

struct Fixture {
    pods: Vec<Pod>,
    nss: Vec<Namespace>,
}

fn fixture() -> Fixture {
    Fixture {
        pods: vec![
            pod("x", "a", "n1", "10.244.0.2", json!({"pod": "a"})),
            pod("x", "b", "n2", "10.244.1.2", json!({"pod": "b"})),
            pod("y", "a", "n1", "10.244.0.3", json!({"pod": "a"})),
            pod("y", "b", "n2", "10.244.1.3", json!({"pod": "b"})),
        ],
        nss: vec![ns("x", json!({"ns": "x"})), ns("y", json!({"ns": "y"}))],
    }
}

fn compute(f: &Fixture, pols: &[NetworkPolicy], node: &str) -> Desired {
    desired(pols, &f.pods, &f.nss, node)
}

fn elems(d: &Desired, set: &str) -> Vec<String> {
    d.sets
        .get(set)
        .map(|s| s.elems.keys().map(ToString::to_string).collect())
        .unwrap_or_default()
}

/// The set a policy chain's rule `i` names after `marker` (`saddr @`, `daddr @`, `dport @`).
fn rule_set(d: &Desired, chain: &str, i: usize, marker: &str) -> String {
    let rule = d
        .chains
        .get(chain)
        .and_then(|r| r.get(i))
        .cloned()
        .unwrap_or_default();
    rule.split(marker)
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .unwrap_or_default()
        .to_string()
}

/// The elements of that set.
fn rule_elems(d: &Desired, chain: &str, i: usize, marker: &str) -> Vec<String> {
    elems(d, &rule_set(d, chain, i, marker))
}

#[test]
fn ranges_normalize_and_subtract() {
    let r = |s| IpRange::cidr(s).unwrap_or(IpRange::ALL);
    assert_eq!(r("10.0.0.0/8").to_string(), "10.0.0.0/8");
    assert_eq!(r("10.1.2.3/32").to_string(), "10.1.2.3");
    assert_eq!(
        r("10.1.2.3/24").to_string(),
        "10.1.2.0/24",
        "host bits ignored"
    );
    assert_eq!(IpRange::cidr("10.0.0.0/33"), None);
    let holes = subtract(r("10.0.0.0/24"), &[r("10.0.0.5/32"), r("10.0.0.128/25")]);
    let text: Vec<String> = holes.iter().map(ToString::to_string).collect();
    assert_eq!(text, ["10.0.0.0-10.0.0.4", "10.0.0.6-10.0.0.127"]);
    assert!(subtract(r("10.0.0.0/24"), &[r("10.0.0.0/16")]).is_empty());
    let merged = normalize(vec![r("10.0.0.1/32"), r("10.0.0.0/24"), r("10.0.1.0/24")]);
    assert_eq!(merged.len(), 1);
    assert_eq!(merged[0].to_string(), "10.0.0.0/23");
    assert_eq!(
        normalize(vec![IpRange::ALL, r("1.2.3.4/32")]),
        vec![IpRange::ALL]
    );
}

#[test]
fn a_policy_is_on_the_nodes_of_the_pods_it_selects() {
    let f = fixture();
    let pols = [policy(
        "x",
        "deny",
        json!({"podSelector": {"matchLabels": {"pod": "a"}}}),
    )];
    let n1 = compute(&f, &pols, "n1");
    assert_eq!(elems(&n1, INGRESS_ISOLATED), ["10.244.0.2"]);
    assert!(elems(&n1, EGRESS_ISOLATED).is_empty());
    assert_eq!(n1.ingress_jumps, ["ingress/x/deny"]);
    assert_eq!(
        n1.chains.get("ingress/x/deny").map(Vec::len),
        Some(0),
        "no rule: deny all"
    );
    let comment = n1.sets[INGRESS_ISOLATED].elems.values().next().cloned();
    assert_eq!(comment.as_deref(), Some("x/a: x/deny"));
    // x/a runs on n1 only: n2 has nothing of it.
    let n2 = compute(&f, &pols, "n2");
    assert!(n2.ingress_jumps.is_empty() && n2.chains.is_empty());
    assert!(elems(&n2, INGRESS_ISOLATED).is_empty());
    // Every local pod may reach itself.
    assert_eq!(
        elems(&n1, SELF),
        ["10.244.0.2 . 10.244.0.2", "10.244.0.3 . 10.244.0.3"]
    );
}

#[test]
fn peers_and_or_namespaces_and_ip_blocks() {
    let f = fixture();
    let pols = [policy(
        "x",
        "p",
        json!({"podSelector": {}, "ingress": [
            {"from": [{"namespaceSelector": {"matchLabels": {"ns": "y"}}, "podSelector": {"matchLabels": {"pod": "b"}}}]},
            {"from": [{"namespaceSelector": {"matchLabels": {"ns": "y"}}}, {"podSelector": {"matchLabels": {"pod": "b"}}}]},
            {"from": [{"ipBlock": {"cidr": "10.244.0.0/16", "except": ["10.244.1.0/24"]}}]},
            {}
        ]}),
    )];
    let d = compute(&f, &pols, "n1");
    // AND: pods pod=b in namespaces ns=y.
    assert_eq!(rule_elems(&d, "ingress/x/p", 0, "saddr @"), ["10.244.1.3"]);
    // OR: every pod of y, and pod=b of the policy's own namespace x.
    assert_eq!(
        rule_elems(&d, "ingress/x/p", 1, "saddr @"),
        ["10.244.0.3", "10.244.1.2/31"]
    );
    assert_eq!(
        rule_elems(&d, "ingress/x/p", 2, "saddr @"),
        ["10.244.0.0/24", "10.244.2.0-10.244.255.255"]
    );
    let rules = &d.chains["ingress/x/p"];
    assert_eq!(rules.len(), 4);
    assert!(rules[0].starts_with("ip saddr @peers/"));
    assert!(rules[0].contains(" ip daddr @ingress/x/p/pods "));
    assert!(
        rules[3].starts_with("ip daddr @ingress/x/p/pods counter accept"),
        "an empty rule allows every source: {}",
        rules[3]
    );
    assert_eq!(elems(&d, "ingress/x/p/pods"), ["10.244.0.2"]);
}

#[test]
fn ports_by_number_name_and_range() {
    let f = fixture();
    let pols = [policy(
        "x",
        "p",
        json!({"podSelector": {}, "policyTypes": ["Ingress", "Egress"],
        "ingress": [{"ports": [
            {"protocol": "TCP", "port": "http"},
            {"protocol": "UDP", "port": "http"},
            {"protocol": "TCP", "port": 80, "endPort": 81},
            {"protocol": "UDP"}]}],
        "egress": [
            {"to": [{"namespaceSelector": {}}], "ports": [{"protocol": "UDP", "port": "dns"}]},
            {"ports": [{"protocol": "TCP", "port": 443}]},
            {"to": [{"ipBlock": {"cidr": "192.0.2.0/24"}}], "ports": [{"protocol": "TCP", "port": "http"}, {"protocol": "SCTP", "port": 9}]}
        ]}),
    )];
    let d = compute(&f, &pols, "n1");
    // Named ports resolve in the destination pod, by name and protocol: no UDP "http".
    assert_eq!(
        elems(&d, "ingress/x/p/0/ports"),
        [
            "10.244.0.2 . tcp . 80-81",
            "10.244.0.2 . tcp . 8080",
            "10.244.0.2 . udp . 0-65535"
        ]
    );
    // Egress named ports resolve in each destination pod.
    assert_eq!(rule_elems(&d, "egress/x/p", 0, "dport @").len(), 4);
    assert!(
        rule_elems(&d, "egress/x/p", 0, "dport @").contains(&"10.244.1.3 . udp . 5353".to_string())
    );
    assert_eq!(
        rule_elems(&d, "egress/x/p", 1, "dport @"),
        ["0.0.0.0/0 . tcp . 443"]
    );
    // A named port means nothing on an address block.
    assert_eq!(
        rule_elems(&d, "egress/x/p", 2, "dport @"),
        ["192.0.2.0/24 . sctp . 9"]
    );
    assert_eq!(elems(&d, EGRESS_ISOLATED), ["10.244.0.2"]);
    assert!(d.chains["egress/x/p"][0].contains("goto ingress_check"));
}

#[test]
fn policy_types_default_from_the_rules() {
    let f = fixture();
    let pols = [policy("x", "e", json!({"podSelector": {}, "egress": [{}]}))];
    let d = compute(&f, &pols, "n1");
    assert_eq!(elems(&d, EGRESS_ISOLATED), ["10.244.0.2"]);
    assert_eq!(elems(&d, INGRESS_ISOLATED), ["10.244.0.2"]);
    let only = [policy(
        "x",
        "e",
        json!({"podSelector": {}, "policyTypes": ["Egress"]}),
    )];
    let d = compute(&f, &only, "n1");
    assert!(elems(&d, INGRESS_ISOLATED).is_empty());
    assert_eq!(elems(&d, EGRESS_ISOLATED), ["10.244.0.2"]);
}

#[test]
fn host_network_and_finished_pods_are_not_peers_or_targets() {
    let mut f = fixture();
    f.pods.push(from(json!({
        "metadata": {"namespace": "x", "name": "h", "labels": {"pod": "a"}},
        "spec": {"nodeName": "n1", "hostNetwork": true, "containers": [{"name": "c"}]},
        "status": {"phase": "Running", "podIP": "172.29.0.2"}})));
    f.pods.push(from(json!({
        "metadata": {"namespace": "y", "name": "done", "labels": {"pod": "b"}},
        "spec": {"nodeName": "n1", "containers": [{"name": "c"}]},
        "status": {"phase": "Succeeded", "podIP": "10.244.0.9"}})));
    let pols = [policy(
        "x",
        "p",
        json!({"podSelector": {}, "ingress": [{"from": [{"namespaceSelector": {}}]}]}),
    )];
    let d = compute(&f, &pols, "n1");
    assert_eq!(elems(&d, INGRESS_ISOLATED), ["10.244.0.2"]);
    assert!(!rule_elems(&d, "ingress/x/p", 0, "saddr @")
        .iter()
        .any(|e| e.contains("172.29") || e.contains(".9")));
}

#[test]
fn long_names_are_cut_with_a_hash() {
    let f = fixture();
    let long = "p".repeat(250);
    let pols = [policy("x", &long, json!({"podSelector": {}}))];
    let d = compute(&f, &pols, "n1");
    let name = &d.ingress_jumps[0];
    assert!(name.len() <= 200 && name.contains('~'), "{name}");
    assert!(d.sets.contains_key(&format!("{name}/pods")));
}

#[test]
fn diffs_change_only_what_changed() {
    let mut f = fixture();
    let pols = [policy(
        "x",
        "p",
        json!({"podSelector": {}, "ingress": [{"from": [{"podSelector": {"matchLabels": {"pod": "b"}}}]}]}),
    )];
    let old = compute(&f, &pols, "n1");
    assert_eq!(diff_script(&old, &old), None);
    // A pod relabelled: one element in, nothing else.
    f.pods[0] = pod("x", "a", "n1", "10.244.0.2", json!({"pod": "b"}));
    let new = compute(&f, &pols, "n1");
    let script = diff_script(&old, &new).unwrap_or_default();
    let from = rule_set(&new, "ingress/x/p", 0, "saddr @");
    assert_eq!(
        script.trim(),
        format!("add element inet kins_policy {from} {{ 10.244.0.2 }}"),
        "{script}"
    );
}

#[test]
fn rules_with_the_same_peers_share_one_set() {
    let f = fixture();
    let from_b = json!([{"podSelector": {"matchLabels": {"pod": "b"}}}]);
    let pols = [
        policy(
            "x",
            "p1",
            json!({"podSelector": {}, "ingress": [{"from": from_b}]}),
        ),
        policy(
            "x",
            "p2",
            json!({"podSelector": {"matchLabels": {"pod": "a"}}, "ingress": [{"from": from_b, "ports": [{"port": 80}]}]}),
        ),
        // The same selector in another namespace means other pods.
        policy(
            "y",
            "p3",
            json!({"podSelector": {}, "ingress": [{"from": from_b}]}),
        ),
    ];
    let d = compute(&f, &pols, "n1");
    let (s1, s2) = (
        rule_set(&d, "ingress/x/p1", 0, "saddr @"),
        rule_set(&d, "ingress/x/p2", 0, "saddr @"),
    );
    assert_eq!(s1, s2);
    assert_ne!(s1, rule_set(&d, "ingress/y/p3", 0, "saddr @"));
    assert_eq!(elems(&d, &s1), ["10.244.1.2"]);
    assert_eq!(rule_elems(&d, "ingress/y/p3", 0, "saddr @"), ["10.244.1.3"]);
}

#[test]
fn a_policy_deleted_removes_its_chain_after_the_jump() {
    let f = fixture();
    let pols = [policy(
        "x",
        "p",
        json!({"podSelector": {}, "ingress": [{"from": [{"podSelector": {}}]}]}),
    )];
    let old = compute(&f, &pols, "n1");
    let new = compute(&f, &[], "n1");
    let script = diff_script(&old, &new).unwrap_or_default();
    let pos = |s: &str| script.find(s).unwrap_or(usize::MAX);
    assert!(
        pos("flush chain inet kins_policy ingress\n")
            < pos("delete chain inet kins_policy ingress/x/p")
    );
    let from = rule_set(&old, "ingress/x/p", 0, "saddr @");
    assert!(
        pos("delete chain inet kins_policy ingress/x/p")
            < pos(&format!("delete set inet kins_policy {from}"))
    );
    assert!(script.contains("delete element inet kins_policy ingress_isolated { 10.244.0.2 }"));
}

#[test]
fn a_failed_apply_writes_the_whole_table_next() {
    let f = fixture();
    let nft = Arc::new(RecordingNft::default());
    let mut e = Enforcer::new(nft.clone());
    let pols = [policy("x", "p", json!({"podSelector": {}}))];
    assert!(matches!(e.sync(compute(&f, &[], "n1")), Ok(true)));
    assert!(nft.scripts()[0].starts_with("table inet kins_policy\ndelete table"));
    nft.fail_next(1);
    assert!(e.sync(compute(&f, &pols, "n1")).is_err());
    assert!(matches!(e.sync(compute(&f, &pols, "n1")), Ok(true)));
    let scripts = nft.scripts();
    assert!(!scripts[1].starts_with("table inet"), "a diff first");
    assert!(
        scripts[2].starts_with("table inet kins_policy\ndelete table"),
        "then the whole table"
    );
    assert!(matches!(e.sync(compute(&f, &pols, "n1")), Ok(false)));
}

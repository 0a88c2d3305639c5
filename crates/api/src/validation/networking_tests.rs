//! NetworkPolicy validation: an object in, the exact Kubernetes messages out.

use serde_json::{json, Value};

use crate::defaults::apply_defaults;
use crate::validation::{aggregate_message, validate_create, validate_update, FieldError};
use crate::Resource;

const LABEL_VALUE: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')";
const NAME_PART: &str = "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";
const SUBDOMAIN: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
const CIDR: &str = "must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)";
const PORT_RANGE: &str = "must be between 1 and 65535, inclusive";
const PROTOCOLS: &str = "supported values: \"TCP\", \"UDP\", \"SCTP\"";
const STRICT_SUBSET: &str = "must be a strict subset of `cidr`";

fn res() -> &'static Resource {
    crate::RESOURCES
        .iter()
        .find(|r| r.group == "networking.k8s.io" && r.kind == "NetworkPolicy")
        .expect("NetworkPolicy is served")
}

fn messages(errs: &[FieldError]) -> Vec<String> {
    errs.iter().map(FieldError::message).collect()
}

/// Defaults `obj` as the server does, validates it for create and compares the messages.
fn check(obj: Value, expect: &[&str]) {
    let mut obj = obj;
    apply_defaults(res(), &mut obj);
    assert_eq!(
        messages(&validate_create(res(), &obj)),
        expect,
        "create: {obj}"
    );
}

/// Defaults both objects, validates `new` as an update of `old` and compares the messages.
fn check_update(new: Value, old: Value, expect: &[&str]) {
    let (mut new, mut old) = (new, old);
    apply_defaults(res(), &mut new);
    apply_defaults(res(), &mut old);
    assert_eq!(
        messages(&validate_update(res(), &new, &old)),
        expect,
        "update: {new}"
    );
}

fn policy_named(name: &str, spec: Value) -> Value {
    json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": "default"}, "spec": spec})
}

fn policy(spec: Value) -> Value {
    policy_named("np", spec)
}

/// A policy with one ingress rule of these ports and peers.
fn ingress(ports: Value, from: Value) -> Value {
    policy(json!({"podSelector": {}, "ingress": [{"ports": ports, "from": from}]}))
}

/// A policy with one ingress rule of these ports.
fn ports(ports: Value) -> Value {
    policy(json!({"podSelector": {}, "ingress": [{"ports": ports}]}))
}

/// A policy with one ingress rule from these peers.
fn from(peers: Value) -> Value {
    policy(json!({"podSelector": {}, "ingress": [{"from": peers}]}))
}

fn run(cases: Vec<(Value, Vec<String>)>) {
    for (obj, expect) in cases {
        let expect: Vec<&str> = expect.iter().map(String::as_str).collect();
        check(obj, &expect);
    }
}

#[test]
fn network_policies_accepted() {
    let examples = [
        // The examples of the Kubernetes NetworkPolicy documentation.
        policy_named(
            "test-network-policy",
            json!({
                "podSelector": {"matchLabels": {"role": "db"}},
                "policyTypes": ["Ingress", "Egress"],
                "ingress": [{
                    "from": [
                        {"ipBlock": {"cidr": "172.17.0.0/16", "except": ["172.17.1.0/24"]}},
                        {"namespaceSelector": {"matchLabels": {"project": "myproject"}}},
                        {"podSelector": {"matchLabels": {"role": "frontend"}}},
                    ],
                    "ports": [{"protocol": "TCP", "port": 6379}],
                }],
                "egress": [{
                    "to": [{"ipBlock": {"cidr": "10.0.0.0/24"}}],
                    "ports": [{"protocol": "TCP", "port": 5978}],
                }],
            }),
        ),
        policy_named(
            "default-deny-ingress",
            json!({"podSelector": {}, "policyTypes": ["Ingress"]}),
        ),
        policy_named(
            "allow-all-ingress",
            json!({"podSelector": {}, "ingress": [{}], "policyTypes": ["Ingress"]}),
        ),
        policy_named(
            "default-deny-egress",
            json!({"podSelector": {}, "policyTypes": ["Egress"]}),
        ),
        policy_named(
            "allow-all-egress",
            json!({"podSelector": {}, "egress": [{}], "policyTypes": ["Egress"]}),
        ),
        policy_named(
            "default-deny-all",
            json!({"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}),
        ),
        // A namespace and a pod selector in one peer: both must match.
        from(json!([{
            "namespaceSelector": {"matchLabels": {"user": "alice"}},
            "podSelector": {"matchLabels": {"role": "client"}},
        }])),
        // A port range.
        policy_named(
            "multi-port-egress",
            json!({
                "podSelector": {"matchLabels": {"role": "db"}},
                "policyTypes": ["Egress"],
                "egress": [{
                    "to": [{"ipBlock": {"cidr": "10.0.0.0/24"}}],
                    "ports": [{"protocol": "TCP", "port": 32000, "endPort": 32768}],
                }],
            }),
        ),
        // Targeting a namespace by name.
        from(
            json!([{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "prod"}}}]),
        ),
        // Named ports, every protocol, a single-port range, a protocol left to defaulting.
        ports(json!([
            {"port": "http"},
            {"protocol": "UDP", "port": "dns-udp"},
            {"protocol": "SCTP", "port": 1, "endPort": 65535},
            {"port": 53, "endPort": 53},
            {},
        ])),
        // policyTypes left to defaulting, with and without egress rules.
        policy(json!({"podSelector": {}, "egress": [{"ports": [{"port": 53}]}]})),
        policy(json!({"podSelector": {}, "policyTypes": []})),
        policy(json!({})),
        // Selector expressions, empty selectors in peers.
        policy(json!({"podSelector": {"matchExpressions": [
            {"key": "app", "operator": "In", "values": ["web", "api"]},
            {"key": "tier", "operator": "DoesNotExist"},
        ]}, "ingress": [{"from": [{"podSelector": {}}, {"namespaceSelector": {}}]}]})),
        // A null selector beside an ipBlock is not a second peer type.
        from(json!([{"ipBlock": {"cidr": "10.0.0.0/8"}, "podSelector": null}])),
        // IPv6, several excepts, and CIDRs Kubernetes reads sloppily (host bits set, leading
        // zeros in an octet or the prefix length).
        from(json!([
            {"ipBlock": {"cidr": "2001:db8::/32", "except": ["2001:db8:1::/48", "2001:db8:2::/64"]}},
            {"ipBlock": {"cidr": "10.1.2.3/8", "except": ["10.1.0.0/16", "10.2.0.0/16"]}},
            {"ipBlock": {"cidr": "010.0.0.0/8", "except": ["10.0.0.0/09"]}},
            {"ipBlock": {"cidr": "0.0.0.0/0", "except": ["169.254.169.254/32"]}},
            {"ipBlock": {"cidr": "::/0"}},
        ])),
    ];
    for obj in examples {
        check(obj, &[]);
    }
}

#[test]
fn network_policy_ports_rejected() {
    let p = "spec.ingress[0].ports[0]";
    run(vec![
        (
            ports(json!([{"protocol": "ICMP", "port": 80}])),
            vec![format!("{p}.protocol: Unsupported value: \"ICMP\": {PROTOCOLS}")],
        ),
        (
            ports(json!([{"protocol": "tcp"}])),
            vec![format!("{p}.protocol: Unsupported value: \"tcp\": {PROTOCOLS}")],
        ),
        (
            ports(json!([{"protocol": ""}])),
            vec![format!("{p}.protocol: Unsupported value: \"\": {PROTOCOLS}")],
        ),
        (
            ports(json!([{"port": 0}, {"port": 65536}, {"port": -1}])),
            vec![
                format!("{p}.port: Invalid value: 0: {PORT_RANGE}"),
                format!("spec.ingress[0].ports[1].port: Invalid value: 65536: {PORT_RANGE}"),
                format!("spec.ingress[0].ports[2].port: Invalid value: -1: {PORT_RANGE}"),
            ],
        ),
        // Named ports are IANA service names.
        (
            ports(json!([{"port": "HTTP"}])),
            vec![
                format!("{p}.port: Invalid value: \"HTTP\": must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)"),
                format!("{p}.port: Invalid value: \"HTTP\": must contain at least one letter (a-z)"),
            ],
        ),
        (
            ports(json!([{"port": "8080"}])),
            vec![format!("{p}.port: Invalid value: \"8080\": must contain at least one letter (a-z)")],
        ),
        (
            ports(json!([{"port": "a-very-long-port-name"}])),
            vec![format!("{p}.port: Invalid value: \"a-very-long-port-name\": must be no more than 15 characters")],
        ),
        (
            ports(json!([{"port": "-web--ui-"}])),
            vec![
                format!("{p}.port: Invalid value: \"-web--ui-\": must not contain consecutive hyphens"),
                format!("{p}.port: Invalid value: \"-web--ui-\": must not begin or end with a hyphen"),
            ],
        ),
        (
            ports(json!([{"port": ""}])),
            vec![
                format!("{p}.port: Invalid value: \"\": must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)"),
                format!("{p}.port: Invalid value: \"\": must contain at least one letter (a-z)"),
            ],
        ),
        // endPort only with a numeric port, not below it, within range.
        (
            ports(json!([{"port": "http", "endPort": 8080}])),
            vec![format!("{p}.endPort: Invalid value: 8080: may not be specified when `port` is non-numeric")],
        ),
        (
            ports(json!([{"port": "HTTP", "endPort": 8080}])),
            vec![
                format!("{p}.endPort: Invalid value: 8080: may not be specified when `port` is non-numeric"),
                format!("{p}.port: Invalid value: \"HTTP\": must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)"),
                format!("{p}.port: Invalid value: \"HTTP\": must contain at least one letter (a-z)"),
            ],
        ),
        (
            ports(json!([{"endPort": 8080}])),
            vec![format!("{p}.endPort: Invalid value: 8080: may not be specified when `port` is not specified")],
        ),
        (
            ports(json!([{"port": null, "endPort": 8080}])),
            vec![format!("{p}.endPort: Invalid value: 8080: may not be specified when `port` is not specified")],
        ),
        (
            ports(json!([{"port": 32000, "endPort": 31999}])),
            vec![format!("{p}.endPort: Invalid value: 31999: must be greater than or equal to `port`")],
        ),
        (
            ports(json!([{"port": 32000, "endPort": 65536}])),
            vec![format!("{p}.endPort: Invalid value: 65536: {PORT_RANGE}")],
        ),
        (
            ports(json!([{"port": 80, "endPort": 0}])),
            vec![
                format!("{p}.endPort: Invalid value: 0: must be greater than or equal to `port`"),
                format!("{p}.endPort: Invalid value: 0: {PORT_RANGE}"),
            ],
        ),
        (
            ports(json!([{"port": 0, "endPort": 0}])),
            vec![
                format!("{p}.port: Invalid value: 0: {PORT_RANGE}"),
                format!("{p}.endPort: Invalid value: 0: {PORT_RANGE}"),
            ],
        ),
        // Egress ports are checked the same way.
        (
            policy(json!({"egress": [{"ports": [{"protocol": "ICMP", "port": 70000}]}]})),
            vec![
                format!("spec.egress[0].ports[0].protocol: Unsupported value: \"ICMP\": {PROTOCOLS}"),
                format!("spec.egress[0].ports[0].port: Invalid value: 70000: {PORT_RANGE}"),
            ],
        ),
    ]);
}

#[test]
fn network_policy_peers_rejected() {
    let f = "spec.ingress[0].from[0]";
    run(vec![
        (
            from(json!([{}])),
            vec![format!("{f}: Required value: must specify a peer")],
        ),
        (
            from(json!([{"podSelector": null, "namespaceSelector": null, "ipBlock": null}])),
            vec![format!("{f}: Required value: must specify a peer")],
        ),
        (
            from(json!([{"ipBlock": {"cidr": "10.0.0.0/8"}, "podSelector": {}}])),
            vec![format!("{f}: Forbidden: may not specify both ipBlock and another peer")],
        ),
        (
            from(json!([{"ipBlock": {"cidr": "10.0.0.0/8"}, "podSelector": {"matchLabels": {"a": "b"}},
                "namespaceSelector": {"matchLabels": {"c": "d"}}}])),
            vec![format!("{f}: Forbidden: may not specify both ipBlock and another peer")],
        ),
        (
            policy(json!({"egress": [{"to": [{"podSelector": {}}, {}]}]})),
            vec!["spec.egress[0].to[1]: Required value: must specify a peer".to_string()],
        ),
        // The selectors of a peer are label selectors.
        (
            from(json!([{"podSelector": {"matchLabels": {"app": "bad value!"}}}])),
            vec![format!("{f}.podSelector.matchLabels: Invalid value: \"bad value!\": {LABEL_VALUE}")],
        ),
        (
            from(json!([{"namespaceSelector": {"matchExpressions": [{"key": "env", "operator": "In"}]}}])),
            vec![format!("{f}.namespaceSelector.matchExpressions[0].values: Required value: must be specified when `operator` is 'In' or 'NotIn'")],
        ),
        (
            from(json!([{"namespaceSelector": {"matchExpressions": [{"key": "env", "operator": "Equals", "values": ["a"]}]},
                "podSelector": {"matchExpressions": [{"key": "app", "operator": "Exists", "values": ["a"]}]}}])),
            vec![
                format!("{f}.podSelector.matchExpressions[0].values: Forbidden: may not be specified when `operator` is 'Exists' or 'DoesNotExist'"),
                format!("{f}.namespaceSelector.matchExpressions[0].operator: Invalid value: \"Equals\": not a valid selector operator"),
            ],
        ),
        // An ipBlock needs a CIDR.
        (
            from(json!([{"ipBlock": {}}])),
            vec![format!("{f}.ipBlock.cidr: Required value")],
        ),
        (
            from(json!([{"ipBlock": {"cidr": "", "except": ["bad"]}}])),
            vec![format!("{f}.ipBlock.cidr: Required value")],
        ),
        (
            from(json!([
                {"ipBlock": {"cidr": "10.0.0.0"}},
                {"ipBlock": {"cidr": "10.0.0.0/33"}},
                {"ipBlock": {"cidr": "2001:db8::/129"}},
                {"ipBlock": {"cidr": "10.0.0.256/8"}},
                {"ipBlock": {"cidr": "10.0.0.0/+8"}},
                {"ipBlock": {"cidr": "fe80::1%eth0/64"}},
                {"ipBlock": {"cidr": "example.com/8", "except": ["also bad"]}},
            ])),
            vec![
                format!("{f}.ipBlock.cidr: Invalid value: \"10.0.0.0\": {CIDR}"),
                format!("spec.ingress[0].from[1].ipBlock.cidr: Invalid value: \"10.0.0.0/33\": {CIDR}"),
                format!("spec.ingress[0].from[2].ipBlock.cidr: Invalid value: \"2001:db8::/129\": {CIDR}"),
                format!("spec.ingress[0].from[3].ipBlock.cidr: Invalid value: \"10.0.0.256/8\": {CIDR}"),
                format!("spec.ingress[0].from[4].ipBlock.cidr: Invalid value: \"10.0.0.0/+8\": {CIDR}"),
                format!("spec.ingress[0].from[5].ipBlock.cidr: Invalid value: \"fe80::1%eth0/64\": {CIDR}"),
                format!("spec.ingress[0].from[6].ipBlock.cidr: Invalid value: \"example.com/8\": {CIDR}"),
            ],
        ),
        // Each except is a CIDR strictly inside cidr.
        (
            from(json!([{"ipBlock": {"cidr": "10.0.0.0/8", "except": [
                "10.1.0.0/16",
                "192.168.0.0/24",
                "10.0.0.0/8",
                "10.0.0.0/7",
                "10.0.0.0",
                "2001:db8::/64",
                "11.0.0.0/16",
            ]}}])),
            vec![
                format!("{f}.ipBlock.except[1]: Invalid value: \"192.168.0.0/24\": {STRICT_SUBSET}"),
                format!("{f}.ipBlock.except[2]: Invalid value: \"10.0.0.0/8\": {STRICT_SUBSET}"),
                format!("{f}.ipBlock.except[3]: Invalid value: \"10.0.0.0/7\": {STRICT_SUBSET}"),
                format!("{f}.ipBlock.except[4]: Invalid value: \"10.0.0.0\": {CIDR}"),
                format!("{f}.ipBlock.except[5]: Invalid value: \"2001:db8::/64\": {STRICT_SUBSET}"),
                format!("{f}.ipBlock.except[6]: Invalid value: \"11.0.0.0/16\": {STRICT_SUBSET}"),
            ],
        ),
        (
            policy(json!({"egress": [{"to": [{"ipBlock": {"cidr": "2001:db8::/48",
                "except": ["2001:db8:0:1::/64", "2001:db9::/64", "10.0.0.0/8"]}}]}]})),
            vec![
                format!("spec.egress[0].to[0].ipBlock.except[1]: Invalid value: \"2001:db9::/64\": {STRICT_SUBSET}"),
                format!("spec.egress[0].to[0].ipBlock.except[2]: Invalid value: \"10.0.0.0/8\": {STRICT_SUBSET}"),
            ],
        ),
    ]);
}

#[test]
fn network_policy_spec_rejected() {
    run(vec![
        (
            policy(json!({"policyTypes": ["Foo"]})),
            vec!["spec.policyTypes[0]: Unsupported value: \"Foo\": supported values: \"Ingress\", \"Egress\"".to_string()],
        ),
        (
            policy(json!({"policyTypes": ["Egress", "ingress"]})),
            vec!["spec.policyTypes[1]: Unsupported value: \"ingress\": supported values: \"Ingress\", \"Egress\"".to_string()],
        ),
        // Too many policyTypes: that error alone, the entries are not looked at.
        (
            policy(json!({"policyTypes": ["Ingress", "Egress", "Ingress"]})),
            vec!["spec.policyTypes: Invalid value: []networking.PolicyType{\"Ingress\", \"Egress\", \"Ingress\"}: may not specify more than two policyTypes".to_string()],
        ),
        (
            policy(json!({"policyTypes": ["Ingress", "Egress", "Foo"]})),
            vec!["spec.policyTypes: Invalid value: []networking.PolicyType{\"Ingress\", \"Egress\", \"Foo\"}: may not specify more than two policyTypes".to_string()],
        ),
        // spec.podSelector is a label selector.
        (
            policy(json!({"podSelector": {"matchLabels": {"bad key!": "v"}}})),
            vec![format!("spec.podSelector.matchLabels: Invalid value: \"bad key!\": {NAME_PART}")],
        ),
        (
            policy(json!({"podSelector": {"matchExpressions": [{"key": "app", "operator": "NotIn", "values": ["ok", "not ok"]}]}})),
            vec![format!("spec.podSelector.matchExpressions[0].values[1]: Invalid value: \"not ok\": {LABEL_VALUE}")],
        ),
        // Metadata as for every namespaced object.
        (
            json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                "metadata": {"name": "Bad_Name"}, "spec": {}}),
            vec![
                format!("metadata.name: Invalid value: \"Bad_Name\": {SUBDOMAIN}"),
                "metadata.namespace: Required value".to_string(),
            ],
        ),
        // Everything in order: the pod selector, each ingress then each egress rule (ports,
        // then peers), then policyTypes.
        (
            policy(json!({
                "podSelector": {"matchLabels": {"a": "-"}},
                "ingress": [{"ports": [{"port": 0}], "from": [{}]}],
                "egress": [{"ports": [{"protocol": "ICMP"}], "to": [{"ipBlock": {"cidr": "x"}}]}],
                "policyTypes": ["Ingress", "Sideways"],
            })),
            vec![
                format!("spec.podSelector.matchLabels: Invalid value: \"-\": {LABEL_VALUE}"),
                format!("spec.ingress[0].ports[0].port: Invalid value: 0: {PORT_RANGE}"),
                "spec.ingress[0].from[0]: Required value: must specify a peer".to_string(),
                format!("spec.egress[0].ports[0].protocol: Unsupported value: \"ICMP\": {PROTOCOLS}"),
                format!("spec.egress[0].to[0].ipBlock.cidr: Invalid value: \"x\": {CIDR}"),
                "spec.policyTypes[1]: Unsupported value: \"Sideways\": supported values: \"Ingress\", \"Egress\"".to_string(),
            ],
        ),
    ]);
}

#[test]
fn network_policy_invalid_message() {
    let obj = ingress(json!([{"port": "http", "endPort": 90}]), json!([{}]));
    let errs = validate_create(res(), &obj);
    assert_eq!(
        format!("The NetworkPolicy \"np\" is invalid: {}", aggregate_message(&errs)),
        "The NetworkPolicy \"np\" is invalid: [spec.ingress[0].ports[0].endPort: Invalid value: 90: may not be specified when `port` is non-numeric, spec.ingress[0].from[0]: Required value: must specify a peer]"
    );
    assert_eq!(errs[0].reason(), "FieldValueInvalid");
    assert_eq!(errs[1].reason(), "FieldValueRequired");
}

#[test]
fn network_policy_defaults_before_validation() {
    // Defaulting fills protocol and policyTypes, so the validated object has them.
    let mut obj = policy(json!({"podSelector": {}, "egress": [{"ports": [{"port": 53}]}]}));
    apply_defaults(res(), &mut obj);
    assert_eq!(obj["spec"]["policyTypes"], json!(["Ingress", "Egress"]));
    assert_eq!(
        obj["spec"]["egress"][0]["ports"][0]["protocol"],
        json!("TCP")
    );
    assert!(validate_create(res(), &obj).is_empty());
}

#[test]
fn network_policy_updates() {
    let bad_value = |v: &str| {
        policy(
            json!({"podSelector": {"matchExpressions": [{"key": "app", "operator": "In", "values": [v]}]},
            "ingress": [{"from": [{"podSelector": {"matchExpressions": [{"key": "role", "operator": "In", "values": [v]}]}}]}]}),
        )
    };
    let ok = policy(json!({"podSelector": {}}));
    // A stored pod selector that is not valid lets invalid label values through, in every
    // selector; a create does not.
    check_update(bad_value("not ok"), bad_value("not ok"), &[]);
    check_update(bad_value("still not ok"), bad_value("not ok"), &[]);
    check(
        bad_value("not ok"),
        &[
            &format!("spec.podSelector.matchExpressions[0].values[0]: Invalid value: \"not ok\": {LABEL_VALUE}"),
            &format!("spec.ingress[0].from[0].podSelector.matchExpressions[0].values[0]: Invalid value: \"not ok\": {LABEL_VALUE}"),
        ],
    );
    // The ratchet covers label values only: other selector errors still count.
    check_update(
        policy(json!({"podSelector": {"matchExpressions": [{"key": "app", "operator": "In"}]}})),
        bad_value("not ok"),
        &["spec.podSelector.matchExpressions[0].values: Required value: must be specified when `operator` is 'In' or 'NotIn'"],
    );
    // A valid stored policy lets nothing through.
    check_update(
        bad_value("not ok"),
        ok.clone(),
        &[
            &format!("spec.podSelector.matchExpressions[0].values[0]: Invalid value: \"not ok\": {LABEL_VALUE}"),
            &format!("spec.ingress[0].from[0].podSelector.matchExpressions[0].values[0]: Invalid value: \"not ok\": {LABEL_VALUE}"),
        ],
    );
    // Otherwise an update is checked as a create, metadata immutability included.
    check_update(
        from(json!([{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.0.0.0/8"]}}])),
        ok.clone(),
        &[&format!("spec.ingress[0].from[0].ipBlock.except[0]: Invalid value: \"10.0.0.0/8\": {STRICT_SUBSET}")],
    );
    check_update(
        policy_named("other", json!({"podSelector": {}})),
        ok.clone(),
        &["metadata.name: Invalid value: \"other\": field is immutable"],
    );
    check_update(
        policy(json!({"podSelector": {"matchLabels": {"a": "b"}}})),
        ok,
        &[],
    );
}

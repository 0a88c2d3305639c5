//! NetworkPolicy end to end, as root: the upstream suite's matrix (namespaces x, y, z with
//! pods a, b, c on two nodes, each serving 80 and 81 over TCP and UDP; see
//! `kins_tests::netpol`) probed with `agnhost probe` through real kubectl after every
//! change, and compared with a model of the NetworkPolicy specification written in the test
//! (not the enforcer's code). Ingress rules with Services (ClusterIP from a pod, NodePort
//! from the host) in one cluster; egress rules, DNS and live changes (policies edited and
//! deleted, pods and namespaces relabelled) in another; `kubectl get/describe` and the
//! refusal of invalid policies in a third. Every scenario waits for the observed table to
//! equal the model's (a convergence wait, no timing assertion) and prints the table of
//! differences when it never does.
//!
//! Network safety: traffic goes only to pod IPs, ClusterIPs and node IPs of the test's own
//! clusters; the one name looked up is a Service of the cluster zone, fully qualified.

use std::net::{Ipv4Addr, SocketAddrV4};

use anyhow::{ensure, Context, Result};
use kins_tests::netpol::{
    apply, labels, pod_cidr, policy, wait_pods, Extra, HostProbe, Matrix, Proto,
};
use kins_tests::pods::get_json;
use kins_tests::services::node_ip;
use kins_tests::{fails, kubectls, ok, Cluster};
use serde_json::{json, Value};

/// A Service in `namespace` selecting `pod=<pod>`, with `ports` as (port, protocol).
fn service(namespace: &str, name: &str, pod: &str, kind: &str, ports: &[(u16, Proto)]) -> Value {
    let ports: Vec<Value> = ports
        .iter()
        .map(|(p, proto)| {
            json!({"name": format!("{}-{p}", proto.probe()), "port": p, "targetPort": p,
                   "protocol": proto.api()})
        })
        .collect();
    json!({"apiVersion": "v1", "kind": "Service",
           "metadata": {"name": name, "namespace": namespace},
           "spec": {"type": kind, "selector": {"pod": pod}, "ports": ports}})
}

/// Runs one step (a change, then the wait for the model's table); a table that never
/// matches is printed and remembered in `failed`, so that the remaining steps still run
/// and one run shows every difference. A failing kubectl ends the test.
fn step(
    m: &mut Matrix,
    failed: &mut Vec<String>,
    name: &str,
    change: impl FnOnce(&mut Matrix) -> Result<()>,
) -> Result<()> {
    change(m).with_context(|| format!("netpol step {name:?}"))?;
    if let Err(e) = m.expect(name) {
        eprintln!("{e:#}\n");
        failed.push(name.to_string());
    }
    Ok(())
}

/// [`step`] for a scenario: apply its policies, wait; delete them, wait for the table
/// without them.
fn scenario(
    m: &mut Matrix,
    failed: &mut Vec<String>,
    name: &str,
    policies: Vec<Value>,
) -> Result<()> {
    step(m, failed, name, |m| m.apply(&policies))?;
    step(m, failed, &format!("{name} (deleted again)"), |m| {
        m.delete(&policies)
    })
}

fn all_matched(failed: &[String]) -> Result<()> {
    ensure!(
        failed.is_empty(),
        "{} steps never matched the model (their tables are printed above): {failed:?}",
        failed.len()
    );
    Ok(())
}

#[test]
fn ingress_rules_and_services() -> Result<()> {
    let c = Cluster::up_nodes("np-in", 2)?;
    let nodes = ["np-in-worker", "np-in-worker2"];
    let mut m = Matrix::setup(&c, "np-in", &nodes)?;
    let (x, y, z) = (m.ns("x")?, m.ns("y")?, m.ns("z")?);
    // x/a behind a ClusterIP (TCP and UDP 80), probed from y/b, and a NodePort, probed
    // from the host through the node that does not run x/a: the connection reaches the
    // pod masqueraded to that node's address (not the pod's own node, whose traffic a
    // policy may always let in).
    apply(
        &c,
        &[
            service(
                &x,
                "s-x-a",
                "a",
                "ClusterIP",
                &[(80, Proto::Tcp), (80, Proto::Udp)],
            ),
            service(&x, "n-x-a", "a", "NodePort", &[(80, Proto::Tcp)]),
        ],
    )?;
    let cip = get_json(&c, &["-n", &x, "get", "svc", "s-x-a"])?["spec"]["clusterIP"]
        .as_str()
        .context("clusterIP")?
        .to_string();
    let np = get_json(&c, &["-n", &x, "get", "svc", "n-x-a"])?["spec"]["ports"][0]["nodePort"]
        .as_u64()
        .context("nodePort")?;
    let (xa, yb) = (m.index("x", "a")?, m.index("y", "b")?);
    for proto in Proto::ALL {
        m.add_extra(Extra {
            src: yb,
            target: format!("{}:{cip}:80", proto.probe()),
            dst: xa,
            port: 80,
            proto,
            dns: None,
        });
    }
    let xa_node = m.world.pods[xa].node.clone();
    let other = nodes
        .iter()
        .find(|n| **n != xa_node)
        .context("x/a's node is not one of ours")?;
    let other_ip: Ipv4Addr = node_ip(&c, other)?.parse()?;
    m.add_host_probe(HostProbe {
        addr: SocketAddrV4::new(other_ip, u16::try_from(np)?),
        seen_as: other_ip,
        dst: xa,
        port: 80,
    });
    // The all-allowed baseline before any policy (also: every server answers).
    m.expect("baseline, no policies")?;

    // ipBlock: the pod subnet of the second node, minus one pod of y there.
    let subnet = pod_cidr(&c, nodes[1])?;
    let except = m.world.pods[..m.names.len()]
        .iter()
        .find(|p| p.namespace == y && p.node == nodes[1])
        .context("no pod of y on the second node")?
        .ip;
    let a = labels("pod", "a");
    let deny_x = policy(
        &x,
        "deny-ingress",
        json!({"podSelector": {}, "policyTypes": ["Ingress"]}),
    );
    let scenarios = vec![
        ("default deny ingress in x", vec![deny_x.clone()]),
        (
            "x/a from namespace y (namespaceSelector)",
            vec![policy(
                &x,
                "a-from-y",
                json!({"podSelector": a, "ingress": [{"from": [{"namespaceSelector": labels("ns", "y")}]}]}),
            )],
        ),
        (
            "x/a from pod=b in namespace y (both selectors in one peer: AND)",
            vec![policy(
                &x,
                "a-from-y-b",
                json!({"podSelector": a, "ingress": [{"from": [
                    {"namespaceSelector": labels("ns", "y"), "podSelector": labels("pod", "b")}]}]}),
            )],
        ),
        (
            "x/a from namespace y or from pod=b of x (two peers: OR)",
            vec![policy(
                &x,
                "a-from-y-or-b",
                json!({"podSelector": a, "ingress": [{"from": [
                    {"namespaceSelector": labels("ns", "y")}, {"podSelector": labels("pod", "b")}]}]}),
            )],
        ),
        (
            "matchExpressions In, NotIn, Exists, DoesNotExist",
            vec![policy(
                &x,
                "exprs",
                json!({"podSelector": {"matchExpressions": [{"key": "pod", "operator": "In", "values": ["a", "b"]}]},
                       "ingress": [{"from": [{
                           "namespaceSelector": {"matchExpressions": [
                               {"key": "ns", "operator": "NotIn", "values": ["y"]},
                               {"key": "kubernetes.io/metadata.name", "operator": "Exists"}]},
                           "podSelector": {"matchExpressions": [
                               {"key": "pod", "operator": "NotIn", "values": ["a"]},
                               {"key": "tier", "operator": "DoesNotExist"}]}}]}]}),
            )],
        ),
        (
            "policies add up: deny all in x, x/a from z on TCP 81",
            vec![
                deny_x.clone(),
                policy(
                    &x,
                    "a-from-z-81",
                    json!({"podSelector": a, "ingress": [{
                        "from": [{"namespaceSelector": labels("ns", "z")}],
                        "ports": [{"port": 81, "protocol": "TCP"}]}]}),
                ),
            ],
        ),
        (
            "x/a from an ipBlock (a node's pod subnet) with an except",
            vec![policy(
                &x,
                "a-from-block",
                json!({"podSelector": a, "ingress": [{"from": [
                    {"ipBlock": {"cidr": subnet, "except": [format!("{except}/32")]}}]}]}),
            )],
        ),
        (
            "named ports (name and protocol both count)",
            vec![policy(
                &x,
                "named",
                json!({"podSelector": {}, "ingress": [{"ports": [
                    {"port": "serve-80-tcp"}, {"port": "serve-81-udp", "protocol": "UDP"},
                    {"port": "serve-80-udp"}]}]}),
            )],
        ),
        (
            "endPort: TCP 80 to 81 into x/a, UDP 81 to 81 into x/b",
            vec![
                policy(
                    &x,
                    "range-a",
                    json!({"podSelector": a, "ingress": [{"ports": [{"protocol": "TCP", "port": 80, "endPort": 81}]}]}),
                ),
                policy(
                    &x,
                    "range-b",
                    json!({"podSelector": labels("pod", "b"),
                           "ingress": [{"ports": [{"protocol": "UDP", "port": 81, "endPort": 81}]}]}),
                ),
            ],
        ),
        (
            "an Ingress-only policy's egress rules do not count; z takes only from z",
            vec![policy(
                &z,
                "ingress-only",
                json!({"podSelector": {}, "policyTypes": ["Ingress"],
                       "ingress": [{"from": [{"podSelector": {}}]}],
                       "egress": [{"to": [{"podSelector": labels("pod", "nobody")}]}]}),
            )],
        ),
    ];
    let mut failed = Vec::new();
    for (name, policies) in scenarios {
        scenario(&mut m, &mut failed, name, policies)?;
    }
    all_matched(&failed)
}

#[test]
fn egress_rules_dns_and_live_changes() -> Result<()> {
    let c = Cluster::up_with("np-eg", &["--nodes", "2", "--dns=true"])?;
    let nodes = ["np-eg-worker", "np-eg-worker2"];
    let mut m = Matrix::setup(&c, "np-eg", &nodes)?;
    let (x, y, z) = (m.ns("x")?, m.ns("y")?, m.ns("z")?);
    // The DNS server is in the model (egress to it must be allowed to resolve a name),
    // and y/a is behind a Service x/a probes by its fully qualified name.
    let dns_pods = wait_pods(&c, "kube-system", "k8s-app=kube-dns", 1)?;
    let dns = m.add_pod(&dns_pods[0])?;
    apply(
        &c,
        &[service(
            &y,
            "s-y-a",
            "a",
            "ClusterIP",
            &[(80, Proto::Tcp), (81, Proto::Tcp)],
        )],
    )?;
    let (xa, ya) = (m.index("x", "a")?, m.index("y", "a")?);
    for port in [80, 81] {
        m.add_extra(Extra {
            src: xa,
            target: format!("tcp:s-y-a.{y}.svc.cluster.local.:{port}"),
            dst: ya,
            port,
            proto: Proto::Tcp,
            dns: Some(dns),
        });
    }
    m.expect("baseline, no policies")?;

    let subnet = pod_cidr(&c, nodes[0])?;
    let except = m.world.pods[..m.names.len()]
        .iter()
        .find(|p| p.namespace != x && p.node == nodes[0])
        .context("no pod outside x on the first node")?
        .ip;
    let deny_egress = policy(
        &x,
        "deny-egress",
        json!({"podSelector": {}, "policyTypes": ["Egress"]}),
    );
    let allow_dns = policy(
        &x,
        "allow-dns",
        json!({"podSelector": {}, "policyTypes": ["Egress"], "egress": [{
            "to": [{"namespaceSelector": labels("kubernetes.io/metadata.name", "kube-system"),
                    "podSelector": labels("k8s-app", "kube-dns")}],
            "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]}]}),
    );
    let scenarios = vec![
        ("default deny egress in x (DNS denied too)", vec![deny_egress.clone()]),
        (
            "default deny egress in x, DNS allowed, y on TCP 80 allowed",
            vec![
                deny_egress.clone(),
                allow_dns,
                policy(
                    &x,
                    "to-y-80",
                    json!({"podSelector": {}, "policyTypes": ["Egress"], "egress": [{
                        "to": [{"namespaceSelector": labels("ns", "y")}],
                        "ports": [{"protocol": "TCP", "port": 80}]}]}),
                ),
            ],
        ),
        (
            "egress ports: x/a to z on UDP 80 and the named serve-81-tcp, x/b to an ipBlock on TCP 80-81",
            vec![
                policy(
                    &x,
                    "a-to-z",
                    json!({"podSelector": labels("pod", "a"), "egress": [{
                        "to": [{"namespaceSelector": labels("ns", "z")}],
                        "ports": [{"protocol": "UDP", "port": 80}, {"port": "serve-81-tcp"}]}]}),
                ),
                policy(
                    &x,
                    "b-to-block",
                    json!({"podSelector": labels("pod", "b"), "policyTypes": ["Egress"], "egress": [{
                        "to": [{"ipBlock": {"cidr": subnet, "except": [format!("{except}/32")]}}],
                        "ports": [{"protocol": "TCP", "port": 80, "endPort": 81}]}]}),
                ),
            ],
        ),
        (
            "both sides count: y/b may send only to z, x/a takes only from y",
            vec![
                policy(
                    &y,
                    "b-to-z",
                    json!({"podSelector": labels("pod", "b"), "policyTypes": ["Egress"],
                           "egress": [{"to": [{"namespaceSelector": labels("ns", "z")}]}]}),
                ),
                policy(
                    &x,
                    "a-from-y",
                    json!({"podSelector": labels("pod", "a"),
                           "ingress": [{"from": [{"namespaceSelector": labels("ns", "y")}]}]}),
                ),
            ],
        ),
        (
            "z/c isolated both ways by policyTypes without rules",
            vec![policy(
                &z,
                "isolate-c",
                json!({"podSelector": labels("pod", "c"), "policyTypes": ["Ingress", "Egress"]}),
            )],
        ),
    ];
    let mut failed = Vec::new();
    for (name, policies) in scenarios {
        scenario(&mut m, &mut failed, name, policies)?;
    }

    // Live changes: a policy edited in place (kubectl apply of the same name), deleted;
    // pods and namespaces relabelled under policies that select by those labels.
    let from_ns = |ns: &str| {
        policy(
            &x,
            "a-from",
            json!({"podSelector": labels("pod", "a"),
                   "ingress": [{"from": [{"namespaceSelector": labels("ns", ns)}]}]}),
        )
    };
    let f = &mut failed;
    step(&mut m, f, "live: x/a from namespace y", |m| {
        m.apply(&[from_ns("y")])
    })?;
    step(&mut m, f, "live: the policy edited to namespace z", |m| {
        m.apply(&[from_ns("z")])
    })?;
    step(&mut m, f, "live: the policy deleted", |m| {
        m.delete(&[from_ns("z")])
    })?;
    let from_b = policy(
        &x,
        "a-from-b",
        json!({"podSelector": labels("pod", "a"),
               "ingress": [{"from": [{"namespaceSelector": {}, "podSelector": labels("pod", "b")}]}]}),
    );
    step(&mut m, f, "live: x/a from pod=b of any namespace", |m| {
        m.apply(std::slice::from_ref(&from_b))
    })?;
    step(
        &mut m,
        f,
        "live: z/c relabelled pod=b (a source now)",
        |m| m.label_pod("z", "c", "pod", "b"),
    )?;
    step(
        &mut m,
        f,
        "live: x/c relabelled pod=a (selected now)",
        |m| m.label_pod("x", "c", "pod", "a"),
    )?;
    step(&mut m, f, "live: pod labels restored", |m| {
        m.label_pod("z", "c", "pod", "c")?;
        m.label_pod("x", "c", "pod", "c")
    })?;
    step(
        &mut m,
        f,
        "live: x/a from namespace y again, pod=b policy deleted",
        |m| {
            m.delete(std::slice::from_ref(&from_b))?;
            m.apply(&[from_ns("y")])
        },
    )?;
    step(
        &mut m,
        f,
        "live: namespace z relabelled ns=y (a source now)",
        |m| m.label_namespace("z", "ns", "y"),
    )?;
    step(
        &mut m,
        f,
        "live: namespace y relabelled ns=w (no source now)",
        |m| m.label_namespace("y", "ns", "w"),
    )?;
    step(&mut m, f, "live: namespace labels restored", |m| {
        m.label_namespace("z", "ns", "z")?;
        m.label_namespace("y", "ns", "y")
    })?;
    step(&mut m, f, "live: every policy deleted", |m| m.delete_all())?;
    all_matched(&failed)
}

/// A kubectl output with every run of whitespace made one space.
fn flat(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[test]
fn kubectl_get_describe_and_invalid_policies() -> Result<()> {
    let c = Cluster::up("np-cli")?;
    let web = policy(
        "default",
        "web",
        json!({
            "podSelector": labels("app", "web"),
            "ingress": [{
                "from": [{"namespaceSelector": labels("ns", "y"), "podSelector": labels("pod", "b")},
                         {"ipBlock": {"cidr": "10.0.0.0/24", "except": ["10.0.0.5/32"]}}],
                "ports": [{"port": 80}, {"port": "serve-81-udp", "protocol": "UDP"}]}],
            "egress": [{
                "to": [{"namespaceSelector": labels("kubernetes.io/metadata.name", "kube-system")}],
                "ports": [{"protocol": "UDP", "port": 53}]}],
        }),
    );
    let deny = policy(
        "default",
        "deny-all",
        json!({"podSelector": {}, "policyTypes": ["Ingress"]}),
    );
    apply(&c, &[web, deny])?;
    // Defaulting: policyTypes from the rules, TCP for a port without protocol.
    let got = get_json(&c, &["get", "netpol", "web"])?;
    ensure!(
        got["spec"]["policyTypes"] == json!(["Ingress", "Egress"])
            && got["spec"]["ingress"][0]["ports"][0]["protocol"] == "TCP",
        "defaults: {}",
        got["spec"]
    );
    for k in kubectls() {
        let list = ok(c.kubectl(&k, &["get", "netpol"])?)?;
        let rows: Vec<Vec<&str>> = list
            .lines()
            .map(|l| l.split_whitespace().collect())
            .collect();
        ensure!(
            rows.first()
                .is_some_and(|h| h[..] == ["NAME", "POD-SELECTOR", "AGE"]),
            "{}: get netpol:\n{list}",
            k.display()
        );
        for (name, selector) in [("web", "app=web"), ("deny-all", "<none>")] {
            ensure!(
                rows.iter()
                    .any(|r| r.len() == 3 && r[0] == name && r[1] == selector),
                "{}: get netpol has no row {name} {selector}:\n{list}",
                k.display()
            );
        }
        let short = ok(c.kubectl(
            &k,
            &["get", "networkpolicies.networking.k8s.io", "-o", "name"],
        )?)?;
        ensure!(
            short
                .lines()
                .any(|l| l == "networkpolicy.networking.k8s.io/web"),
            "{short}"
        );
        // The describer's layout (kubectl renders it from the object).
        let d = ok(c.kubectl(&k, &["describe", "networkpolicy", "web"])?)?;
        let text = flat(&d);
        for want in [
            "Name: web",
            "Namespace: default",
            "Spec: PodSelector: app=web",
            "Allowing ingress traffic: To Port: 80/TCP To Port: serve-81-udp/UDP From: NamespaceSelector: ns=y PodSelector: pod=b From: IPBlock: CIDR: 10.0.0.0/24 Except: 10.0.0.5/32",
            "Allowing egress traffic: To Port: 53/UDP To: NamespaceSelector: kubernetes.io/metadata.name=kube-system",
            "Policy Types: Ingress, Egress",
        ] {
            ensure!(text.contains(want), "{}: describe lacks {want:?}:\n{d}", k.display());
        }
        let d = ok(c.kubectl(&k, &["describe", "netpol", "deny-all"])?)?;
        let text = flat(&d);
        for want in [
            "PodSelector: <none> (Allowing the specific traffic to all pods in this namespace)",
            "Allowing ingress traffic: <none> (Selected pods are isolated for ingress connectivity)",
            "Not affecting egress traffic",
            "Policy Types: Ingress",
        ] {
            ensure!(text.contains(want), "{}: describe lacks {want:?}:\n{d}", k.display());
        }
    }

    // Invalid policies are refused, with the field in the message, and not stored.
    let port = |p: Value| json!({"podSelector": {}, "ingress": [{"ports": [p]}]});
    let bad = [
        (
            port(json!({"endPort": 81})),
            "spec.ingress[0].ports[0].endPort",
        ),
        (
            port(json!({"protocol": "ICMP", "port": 80})),
            "spec.ingress[0].ports[0].protocol",
        ),
        (
            port(json!({"port": 81, "endPort": 80})),
            "spec.ingress[0].ports[0].endPort",
        ),
        (
            port(json!({"port": "serve-80-tcp", "endPort": 81})),
            "spec.ingress[0].ports[0].endPort",
        ),
        (
            json!({"podSelector": {}, "ingress": [{"from": [
                {"ipBlock": {"cidr": "10.0.0.0/24"}, "podSelector": {}}]}]}),
            "spec.ingress[0].from[0]",
        ),
        (
            json!({"podSelector": {}, "egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/33"}}]}]}),
            "spec.egress[0].to[0].ipBlock.cidr",
        ),
    ];
    let mut wrong = Vec::new();
    for (i, (spec, field)) in bad.iter().enumerate() {
        let name = format!("bad-{i}");
        let obj = policy("default", &name, spec.clone());
        let out = c.kubectl_stdin(
            &kubectls()[0],
            &["apply", "-f", "-"],
            Some(&obj.to_string()),
        )?;
        match fails(out) {
            Ok(err) if err.contains(field) => {
                eprintln!("netpol: {name} refused: {}", err.trim());
            }
            Ok(err) => wrong.push(format!(
                "{name} ({spec}): the error does not name {field}: {err}"
            )),
            Err(e) => wrong.push(format!("{name} ({spec}): {e}")),
        }
        let get = c.kubectl(&kubectls()[0], &["get", "netpol", &name])?;
        if get.status.success() {
            wrong.push(format!("{name} was stored"));
        }
    }
    ensure!(wrong.is_empty(), "invalid policies:\n{}", wrong.join("\n"));
    Ok(())
}

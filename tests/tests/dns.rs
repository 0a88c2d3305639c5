//! Cluster DNS, as root: the DNS add-on (kube-system/coredns running kins-dns behind the
//! kube-dns Service) answers the Kubernetes DNS specification's records to pods, pods
//! resolve services through their search path, an edited Corefile applies live (and a
//! broken one is refused), forwarding goes only to the upstream the test made, malformed
//! queries are answered with FORMERR, and answers keep coming while the API server is down.
//!
//! Network safety: before any query that could leave the cluster zone, the Corefile is
//! switched to forward to an upstream DNS server the test runs in a pod of its own; until
//! then only names of the cluster zone (answered authoritatively) are asked.

use std::process::Command;

use anyhow::{bail, ensure, Context, Result};
use kins_tests::dns::{
    corefile, data, dig, dns_basic, set_corefile, wait_answer, wait_ttl, BASIC_TTL, DNS,
};
use kins_tests::pods::{create, exec, get_json, in_pod, kubectl, pod_netns, wait_for};
use kins_tests::{ok, Cluster};
use serde_json::{json, Value};

fn manifest(v: Value) -> String {
    v.to_string()
}

/// A raw UDP exchange with kube-dns from a pod's network namespace: the reply's bytes
/// (hex), or "" when none came.
fn raw_udp(c: &Cluster, pod: &Value, payload_hex: &str) -> Result<String> {
    let script = format!(
        "import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\ns.settimeout(3)\ns.sendto(bytes.fromhex('{payload_hex}'),('{DNS}',53))\ntry:\n print(s.recv(4096).hex())\nexcept Exception:\n print('')\n"
    );
    Ok(in_pod(c, pod, &["python3", "-c", &script])?
        .trim()
        .to_string())
}

/// kube-dns's Prometheus metrics (port 9153 through the Service), from a pod's namespace.
fn dns_metrics(c: &Cluster, pod: &Value) -> Result<String> {
    ok(Command::new("nsenter")
        .arg(format!("--net={}", pod_netns(c, pod).display()))
        .args([
            "curl",
            "-s",
            "-m",
            "5",
            &format!("http://{DNS}:9153/metrics"),
        ])
        .output()?)
}

#[test]
fn cluster_dns_records_search_paths_corefile_and_resilience() -> Result<()> {
    let c = Cluster::up_with("dns-e2e", &["--nodes", "2", "--dns=true"])?;
    let n1 = "dns-e2e-worker";
    // The add-on's objects, as kubeadm makes them.
    let svc = get_json(&c, &["-n", "kube-system", "get", "svc", "kube-dns"])?;
    ensure!(svc["spec"]["clusterIP"] == DNS, "kube-dns: {}", svc["spec"]);
    let ports: Vec<String> = svc["spec"]["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| format!("{}/{}", p["port"], p["protocol"].as_str().unwrap_or("")))
        .collect();
    ensure!(
        ports == ["53/UDP", "53/TCP", "9153/TCP"],
        "kube-dns ports {ports:?}"
    );
    // The basic check (shared with the CNI plugin suite): web-1 and web-2 under the
    // headless Service hl, the Service web, dnsutils on the second node, and forwarding to
    // the test's own upstream from the first query on.
    let basic = dns_basic(&c, n1, "dns-e2e-worker2")?;
    let (dns_pod, du, up, up_ip) = (&basic.dns_pod, &basic.du, &basic.upstream, &basic.up_ip);
    let (ip1, web_ip) = (basic.ip1.clone(), basic.web_ip.clone());
    ensure!(basic.ip2 != ip1, "web-1 and web-2 share {ip1}");

    // More objects to resolve: the same names in another namespace, an ExternalName.
    kubectl(&c, &["create", "namespace", "other"])?;
    create(
        &c,
        &kins_tests::dns::busybox_pod(
            "web-o",
            "other",
            json!({"app": "web"}),
            json!({"nodeName": n1, "hostname": "web-o", "subdomain": "hl"}),
        ),
    )?;
    create(
        &c,
        &manifest(json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "web", "namespace": "other"},
            "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}})),
    )?;
    create(
        &c,
        &manifest(
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "ext"},
            "spec": {"type": "ExternalName", "externalName": "db.example.test"}}),
        ),
    )?;
    // A hosts entry added to the Corefile (still forwarding to the test's upstream).
    let hosts = "    hosts {\n       10.0.0.42 legacy.example.test\n       fallthrough\n    }";
    let ttl = BASIC_TTL + 1;
    set_corefile(&c, &corefile(ttl, up_ip, hosts))?;
    wait_ttl(&c, du, ttl)?;

    wait_answer(
        &c,
        du,
        "ext.default.svc.cluster.local",
        "CNAME",
        &["db.example.test."],
    )?;
    let (_, a) = dig(&c, du, &["ext.default.svc.cluster.local", "A"])?;
    ensure!(
        data(&a, "CNAME") == ["db.example.test."],
        "ExternalName: {a:?}"
    );
    let (_, a) = dig(&c, du, &["dns-version.cluster.local", "TXT"])?;
    ensure!(data(&a, "TXT") == ["\"1.1.0\""], "dns-version: {a:?}");
    // Truncation over UDP, the whole answer over TCP: 40 endpoints of a headless service.
    create(
        &c,
        &manifest(
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "many"},
            "spec": {"clusterIP": "None", "ports": [{"port": 80}]}}),
        ),
    )?;
    let eps: Vec<Value> = (1..=40)
        .map(|i| json!({"addresses": [format!("10.99.0.{i}")], "conditions": {"ready": true}}))
        .collect();
    create(
        &c,
        &manifest(
            json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": "many-1", "labels": {"kubernetes.io/service-name": "many"}},
            "addressType": "IPv4", "ports": [{"port": 80, "protocol": "TCP"}], "endpoints": eps}),
        ),
    )?;
    let over_tcp = wait_for("40 addresses over TCP", 30, || {
        let (_, a) = dig(&c, du, &["+tcp", "many.default.svc.cluster.local", "A"])?;
        Ok((data(&a, "A").len() == 40).then_some(()))
    });
    over_tcp?;
    let udp = exec(
        &c,
        du,
        "dnsutils",
        &[
            "dig",
            "+ignore",
            "+noedns",
            "+tries=1",
            "many.default.svc.cluster.local",
            "A",
        ],
    )?;
    ensure!(
        udp.contains(" tc") || udp.contains("tc "),
        "no TC bit over UDP:\n{udp}"
    );

    // Search paths from the pod, as programs resolve (glibc through resolv.conf): a
    // service of another namespace as `name.namespace`.
    let other_ip = get_json(&c, &["-n", "other", "get", "svc", "web"])?["spec"]["clusterIP"]
        .as_str()
        .context("clusterIP")?
        .to_string();
    wait_answer(&c, du, "web.other.svc.cluster.local", "A", &[&other_ip])?;
    let out = exec(&c, du, "dnsutils", &["getent", "hosts", "web.other"])?;
    ensure!(out.starts_with(&other_ip), "getent hosts web.other: {out}");

    // ExternalName changes follow.
    kubectl(
        &c,
        &[
            "patch",
            "svc",
            "ext",
            "--type=merge",
            "-p",
            r#"{"spec":{"externalName":"db2.example.test"}}"#,
        ],
    )?;
    wait_answer(
        &c,
        du,
        "ext.default.svc.cluster.local",
        "CNAME",
        &["db2.example.test."],
    )?;
    // A CNAME is followed (stub resolvers do not): inside the zone from the index, outside
    // through forward (the test's upstream answers 192.0.2.1).
    create(
        &c,
        &manifest(
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "inner"},
            "spec": {"type": "ExternalName", "externalName": "web.default.svc.cluster.local"}}),
        ),
    )?;
    wait_answer(&c, du, "inner.default.svc.cluster.local", "A", &[&web_ip])?;
    let (_, a) = dig(&c, du, &["ext.default.svc.cluster.local", "A"])?;
    ensure!(
        data(&a, "CNAME") == ["db2.example.test."] && data(&a, "A") == ["192.0.2.1"],
        "ExternalName to an outside name: {a:?}"
    );
    let out = exec(&c, du, "dnsutils", &["getent", "hosts", "inner"])?;
    ensure!(out.starts_with(&web_ip), "getent hosts inner: {out}");

    // The Corefile's hosts entry, and forwarding to the test's upstream only.
    wait_answer(&c, du, "legacy.example.test", "A", &["10.0.0.42"])?;
    wait_answer(&c, du, "outside.example.test", "A", &["192.0.2.1"])?;
    let asked = std::fs::read_to_string(&up.log).context("reading the upstream's log")?;
    ensure!(
        asked.lines().any(|l| l == "outside.example.test"),
        "the upstream was not asked: {asked}"
    );
    ensure!(
        !asked
            .lines()
            .any(|l| l.ends_with("cluster.local") || l == "legacy.example.test"),
        "cluster or hosts names reached the upstream: {asked}"
    );
    // kins-dns counts its forwarded queries per upstream: only the test's was used.
    let metrics = dns_metrics(&c, du)?;
    let forwards: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("coredns_forward_requests_total{"))
        .collect();
    ensure!(
        !forwards.is_empty()
            && forwards
                .iter()
                .all(|l| l.contains(&format!("to=\"{up_ip}:53\""))),
        "forwarded elsewhere: {forwards:?}"
    );

    // A Corefile it cannot apply: the old one keeps serving, the pod's log and an event say why.
    set_corefile(
        &c,
        ".:53 {\n    kubernetes cluster.local {\n       ttl 99999\n    }\n    bogus\n}\n",
    )?;
    let pod_name = dns_pod["metadata"]["name"]
        .as_str()
        .context("name")?
        .to_string();
    wait_for("the CorefileInvalid event", 30, || {
        let ev = get_json(
            &c,
            &[
                "-n",
                "kube-system",
                "get",
                "events",
                "--field-selector",
                "reason=CorefileInvalid",
            ],
        )?;
        Ok(ev["items"]
            .as_array()
            .is_some_and(|a| {
                a.iter()
                    .any(|e| e["involvedObject"]["name"] == pod_name.as_str())
            })
            .then_some(()))
    })?;
    let logs = kubectl(&c, &["-n", "kube-system", "logs", &pod_name])?;
    ensure!(
        logs.contains("Corefile not applied"),
        "no word in the log:\n{logs}"
    );
    wait_answer(&c, du, "legacy.example.test", "A", &["10.0.0.42"])?;
    set_corefile(&c, &corefile(9, up_ip, ""))?;
    wait_ttl(&c, du, 9)?;

    // Malformed queries: FORMERR, and the server stays up. A header claiming two questions
    // with one; then a truncated question.
    let two_questions = "abcd010000020000000000000377656207636c7573746572056c6f63616c0000010001";
    let reply = raw_udp(&c, du, two_questions)?;
    ensure!(reply.len() >= 8, "no reply to a malformed query: {reply:?}");
    let rcode = u8::from_str_radix(&reply[6..8], 16)? & 0x0f;
    ensure!(
        rcode == 1,
        "rcode {rcode} for two questions, want FORMERR (1): {reply}"
    );
    let _ = raw_udp(&c, du, "abcd0100000100000000000003776562")?;
    wait_answer(&c, du, "web.default.svc.cluster.local", "A", &[&web_ip])?;

    // The metrics port answers through the Service.
    ensure!(
        dns_metrics(&c, du)?.contains("coredns_dns_requests_total{"),
        "no request counters"
    );

    // The API server stopped: answers keep coming. Then killed and restarted: new
    // services are answered again (the watches came back).
    let api = c.apiserver_pid().context("API server pid")?;
    ok(Command::new("kill")
        .args(["-STOP", &api.to_string()])
        .output()?)?;
    let stopped = (|| -> Result<()> {
        for _ in 0..3 {
            let (_, a) = dig(&c, du, &["web.default.svc.cluster.local", "A"])?;
            ensure!(
                data(&a, "A") == [web_ip.clone()],
                "while the API is stopped: {a:?}"
            );
        }
        Ok(())
    })();
    ok(Command::new("kill")
        .args(["-CONT", &api.to_string()])
        .output()?)?;
    stopped?;
    let old = c.kill_apiserver()?;
    c.wait_apiserver_restarted(old, std::time::Duration::from_secs(30))?;
    let (_, a) = dig(&c, du, &["web.default.svc.cluster.local", "A"])?;
    ensure!(
        data(&a, "A") == [web_ip.clone()],
        "after the restart: {a:?}"
    );
    create(
        &c,
        &manifest(
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "late"},
            "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}}),
        ),
    )?;
    let late = get_json(&c, &["get", "svc", "late"])?["spec"]["clusterIP"]
        .as_str()
        .context("clusterIP")?
        .to_string();
    wait_answer(&c, du, "late.default.svc.cluster.local", "A", &[&late])?;
    if late.is_empty() {
        bail!("no ClusterIP");
    }
    Ok(())
}

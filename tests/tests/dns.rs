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
use kins_tests::pods::{
    create, exec, get_json, in_pod, kubectl, pod_netns, wait_for, wait_running,
};
use kins_tests::{ok, Cluster};
use serde_json::{json, Value};

const DNS: &str = "10.96.0.10";

/// One `dig` from inside the dnsutils pod's container (its own dig and resolv.conf):
/// the status and the answer lines (`name ttl class type data`).
fn dig(c: &Cluster, pod: &Value, args: &[&str]) -> Result<(String, Vec<String>)> {
    let mut argv = vec![
        "dig",
        "+noall",
        "+answer",
        "+comments",
        "+tries=1",
        "+time=3",
    ];
    argv.extend_from_slice(args);
    let out = exec(c, pod, "dnsutils", &argv)?;
    let status = out
        .lines()
        .find_map(|l| l.split("status: ").nth(1))
        .and_then(|s| s.split(',').next())
        .with_context(|| format!("no status in dig output:\n{out}"))?
        .to_string();
    let answers = out
        .lines()
        .filter(|l| !l.starts_with(';') && !l.trim().is_empty())
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    Ok((status, answers))
}

/// The data of the answers of one type (`A`, `SRV`, ...), sorted.
fn data(answers: &[String], rtype: &str) -> Vec<String> {
    let mut out: Vec<String> = answers
        .iter()
        .filter_map(|a| {
            let f: Vec<&str> = a.splitn(5, ' ').collect();
            (f.len() == 5 && f[3] == rtype).then(|| f[4].to_string())
        })
        .collect();
    out.sort();
    out
}

/// Asks until the answer's data of `rtype` is `want` (watch-driven changes take a moment).
fn wait_answer(c: &Cluster, pod: &Value, name: &str, rtype: &str, want: &[&str]) -> Result<()> {
    let mut want: Vec<String> = want.iter().map(|s| s.to_string()).collect();
    want.sort();
    let mut last = Vec::new();
    let got = wait_for(&format!("{name} {rtype} = {want:?}"), 30, || {
        let (_, answers) = dig(c, pod, &[name, rtype])?;
        last = data(&answers, rtype);
        Ok((last == want).then_some(()))
    });
    got.with_context(|| format!("last answer {last:?}"))
}

fn pod_ip(pod: &Value) -> Result<String> {
    Ok(pod["status"]["podIP"]
        .as_str()
        .context("podIP")?
        .to_string())
}

fn manifest(v: Value) -> String {
    v.to_string()
}

fn busybox_pod(name: &str, ns: &str, labels: Value, extra_spec: Value) -> String {
    let mut spec = json!({"terminationGracePeriodSeconds": 0,
        "containers": [{"name": "c", "image": "busybox", "command": ["sleep", "3600"]}]});
    if let (Some(s), Some(e)) = (spec.as_object_mut(), extra_spec.as_object()) {
        s.extend(e.clone());
    }
    manifest(json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "labels": labels}, "spec": spec}))
}

/// A DNS server the test runs in a pod's network namespace (the host's python3 there):
/// it answers A questions with 192.0.2.1 (a documentation address, never contacted) and
/// other types with no data, and appends every question's name to a file.
struct Upstream {
    child: std::process::Child,
    log: std::path::PathBuf,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn upstream(c: &Cluster, pod: &Value) -> Result<Upstream> {
    let log = c.data.path().join("upstream.log");
    let script = format!(
        r#"import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", 53))
log = open("{log}", "a")
while True:
    d, a = s.recvfrom(4096)
    i, labels = 12, []
    while d[i] != 0:
        labels.append(d[i + 1:i + 1 + d[i]].decode())
        i += 1 + d[i]
    q = d[12:i + 5]
    qtype = int.from_bytes(d[i + 1:i + 3], "big")
    log.write(".".join(labels).lower() + "\n")
    log.flush()
    if qtype == 1:
        ans = b"\xc0\x0c\x00\x01\x00\x01\x00\x00\x00\x3c\x00\x04" + bytes([192, 0, 2, 1])
        s.sendto(d[:2] + b"\x81\x80\x00\x01\x00\x01\x00\x00\x00\x00" + q + ans, a)
    else:
        s.sendto(d[:2] + b"\x81\x80\x00\x01\x00\x00\x00\x00\x00\x00" + q, a)
"#,
        log = log.display()
    );
    let child = Command::new("nsenter")
        .arg(format!("--net={}", pod_netns(c, pod).display()))
        .args(["python3", "-c", &script])
        .spawn()
        .context("starting the upstream DNS server")?;
    Ok(Upstream { child, log })
}

fn set_corefile(c: &Cluster, corefile: &str) -> Result<()> {
    let patch = json!({"data": {"Corefile": corefile}}).to_string();
    kubectl(
        c,
        &[
            "-n",
            "kube-system",
            "patch",
            "configmap",
            "coredns",
            "--type=merge",
            "-p",
            &patch,
        ],
    )?;
    Ok(())
}

/// A Corefile like kubeadm's, with the kubernetes TTL `ttl` (to see when it applies),
/// forwarding to `upstream`, and `extra` plugins.
fn corefile(ttl: u32, upstream: &str, extra: &str) -> String {
    format!(
        ".:53 {{
    errors
    health {{
       lameduck 5s
    }}
    ready
{extra}
    kubernetes cluster.local in-addr.arpa ip6.arpa {{
       pods insecure
       fallthrough in-addr.arpa ip6.arpa
       ttl {ttl}
    }}
    prometheus :9153
    forward . {upstream}
    cache 30
    reload
    loadbalance
}}
"
    )
}

/// Waits until the kubernetes plugin answers with TTL `ttl`: the Corefile carrying it
/// is the one serving.
fn wait_ttl(c: &Cluster, pod: &Value, ttl: u32) -> Result<()> {
    wait_for(&format!("the Corefile with ttl {ttl} to apply"), 30, || {
        let (_, answers) = dig(c, pod, &["kubernetes.default.svc.cluster.local", "A"])?;
        Ok(answers
            .first()
            .is_some_and(|a| a.split(' ').nth(1) == Some(ttl.to_string().as_str()))
            .then_some(()))
    })
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
    let dns_pod = wait_for("the coredns pod to be ready", 60, || {
        let pods = get_json(
            &c,
            &["-n", "kube-system", "get", "pods", "-l", "k8s-app=kube-dns"],
        )?;
        Ok(pods["items"]
            .as_array()
            .and_then(|a| a.first())
            .cloned()
            .filter(|p| {
                p["status"]["conditions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True")
            }))
    })?;

    // The objects to resolve.
    kubectl(&c, &["create", "namespace", "other"])?;
    for (name, ns, node) in [
        ("web-1", "default", n1),
        ("web-2", "default", n1),
        ("web-o", "other", n1),
    ] {
        create(
            &c,
            &busybox_pod(
                name,
                ns,
                json!({"app": "web"}),
                json!({"nodeName": node, "hostname": name, "subdomain": "hl"}),
            ),
        )?;
    }
    for ns in ["default", "other"] {
        create(
            &c,
            &manifest(json!({"apiVersion": "v1", "kind": "Service",
                "metadata": {"name": "web", "namespace": ns},
                "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}})),
        )?;
    }
    create(
        &c,
        &manifest(
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "hl"},
            "spec": {"clusterIP": "None", "selector": {"app": "web"},
                     "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}}),
        ),
    )?;
    create(
        &c,
        &manifest(
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "ext"},
            "spec": {"type": "ExternalName", "externalName": "db.example.test"}}),
        ),
    )?;
    create(
        &c,
        &manifest(
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "dnsutils"},
            "spec": {"nodeName": "dns-e2e-worker2", "terminationGracePeriodSeconds": 0, "containers": [{
                "name": "dnsutils", "image": "registry.k8s.io/e2e-test-images/jessie-dnsutils:1.3",
                "command": ["sleep", "3600"]}]}}),
        ),
    )?;
    create(
        &c,
        &busybox_pod("upstream", "default", json!({}), json!({"nodeName": n1})),
    )?;
    let w1 = wait_running(&c, "web-1")?;
    let w2 = wait_running(&c, "web-2")?;
    let du = wait_running(&c, "dnsutils")?;
    let up_pod = wait_running(&c, "upstream")?;
    let (ip1, ip2) = (pod_ip(&w1)?, pod_ip(&w2)?);
    let web_ip = get_json(&c, &["get", "svc", "web"])?["spec"]["clusterIP"]
        .as_str()
        .context("clusterIP")?
        .to_string();

    // First, forwarding goes to the test's own upstream (and a hosts entry is added).
    let up = upstream(&c, &up_pod)?;
    let up_ip = pod_ip(&up_pod)?;
    let hosts = "    hosts {\n       10.0.0.42 legacy.example.test\n       fallthrough\n    }";
    set_corefile(&c, &corefile(7, &up_ip, hosts))?;
    wait_ttl(&c, &du, 7)?;

    // The pod's resolver configuration (dnsPolicy ClusterFirst).
    let resolv = exec(&c, &du, "dnsutils", &["cat", "/etc/resolv.conf"])?;
    ensure!(
        resolv == "nameserver 10.96.0.10\nsearch default.svc.cluster.local svc.cluster.local cluster.local\noptions ndots:5\n",
        "resolv.conf:\n{resolv}"
    );

    // Records of the specification.
    wait_answer(&c, &du, "web.default.svc.cluster.local", "A", &[&web_ip])?;
    wait_answer(&c, &du, "hl.default.svc.cluster.local", "A", &[&ip1, &ip2])?;
    wait_answer(&c, &du, "web-1.hl.default.svc.cluster.local", "A", &[&ip1])?;
    wait_answer(&c, &du, "WEB.Default.SVC.cluster.LOCAL", "A", &[&web_ip])?;
    let (_, a) = dig(
        &c,
        &du,
        &["_http._tcp.web.default.svc.cluster.local", "SRV"],
    )?;
    ensure!(
        data(&a, "SRV") == ["0 100 80 web.default.svc.cluster.local."],
        "SRV of a ClusterIP service: {a:?}"
    );
    let (_, a) = dig(&c, &du, &["_http._tcp.hl.default.svc.cluster.local", "SRV"])?;
    let targets: Vec<String> = data(&a, "SRV")
        .iter()
        .filter_map(|r| r.rsplit(' ').next().map(str::to_string))
        .collect();
    ensure!(
        targets
            == [
                "web-1.hl.default.svc.cluster.local.",
                "web-2.hl.default.svc.cluster.local."
            ],
        "SRV per endpoint of a headless service: {a:?}"
    );
    let (_, a) = dig(&c, &du, &["-x", &web_ip])?;
    ensure!(
        data(&a, "PTR") == ["web.default.svc.cluster.local."],
        "PTR of the ClusterIP: {a:?}"
    );
    let (_, a) = dig(&c, &du, &["-x", &ip1])?;
    ensure!(
        data(&a, "PTR") == ["web-1.hl.default.svc.cluster.local."],
        "PTR of a headless endpoint: {a:?}"
    );
    let (_, a) = dig(&c, &du, &["ext.default.svc.cluster.local", "A"])?;
    ensure!(
        data(&a, "CNAME") == ["db.example.test."],
        "ExternalName: {a:?}"
    );
    let dashed = ip1.replace('.', "-");
    let (_, a) = dig(
        &c,
        &du,
        &[&format!("{dashed}.default.pod.cluster.local"), "A"],
    )?;
    ensure!(data(&a, "A") == [ip1.clone()], "pod A record: {a:?}");
    let (_, a) = dig(&c, &du, &["dns-version.cluster.local", "TXT"])?;
    ensure!(data(&a, "TXT") == ["\"1.1.0\""], "dns-version: {a:?}");
    let (status, a) = dig(&c, &du, &["nope.default.svc.cluster.local", "A"])?;
    ensure!(
        status == "NXDOMAIN" && a.is_empty(),
        "missing name: {status} {a:?}"
    );
    let (status, a) = dig(&c, &du, &["web.default.svc.cluster.local", "AAAA"])?;
    ensure!(
        status == "NOERROR" && a.is_empty(),
        "no AAAA (NODATA): {status} {a:?}"
    );
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
        let (_, a) = dig(&c, &du, &["+tcp", "many.default.svc.cluster.local", "A"])?;
        Ok((data(&a, "A").len() == 40).then_some(()))
    });
    over_tcp?;
    let udp = exec(
        &c,
        &du,
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

    // Search paths from the pod, as programs resolve (glibc through resolv.conf).
    let out = exec(&c, &du, "dnsutils", &["getent", "hosts", "web"])?;
    ensure!(
        out.split_whitespace().collect::<Vec<_>>()
            == [web_ip.as_str(), "web.default.svc.cluster.local"],
        "getent hosts web: {out}"
    );
    let other_ip = get_json(&c, &["-n", "other", "get", "svc", "web"])?["spec"]["clusterIP"]
        .as_str()
        .context("clusterIP")?
        .to_string();
    let out = exec(&c, &du, "dnsutils", &["getent", "hosts", "web.other"])?;
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
        &du,
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
    wait_answer(&c, &du, "inner.default.svc.cluster.local", "A", &[&web_ip])?;
    let (_, a) = dig(&c, &du, &["ext.default.svc.cluster.local", "A"])?;
    ensure!(
        data(&a, "CNAME") == ["db2.example.test."] && data(&a, "A") == ["192.0.2.1"],
        "ExternalName to an outside name: {a:?}"
    );
    let out = exec(&c, &du, "dnsutils", &["getent", "hosts", "inner"])?;
    ensure!(out.starts_with(&web_ip), "getent hosts inner: {out}");

    // The Corefile's hosts entry, and forwarding to the test's upstream only.
    wait_answer(&c, &du, "legacy.example.test", "A", &["10.0.0.42"])?;
    wait_answer(&c, &du, "outside.example.test", "A", &["192.0.2.1"])?;
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
    let metrics = dns_metrics(&c, &du)?;
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
    wait_answer(&c, &du, "legacy.example.test", "A", &["10.0.0.42"])?;
    set_corefile(&c, &corefile(9, &up_ip, ""))?;
    wait_ttl(&c, &du, 9)?;

    // Malformed queries: FORMERR, and the server stays up. A header claiming two questions
    // with one; then a truncated question.
    let two_questions = "abcd010000020000000000000377656207636c7573746572056c6f63616c0000010001";
    let reply = raw_udp(&c, &du, two_questions)?;
    ensure!(reply.len() >= 8, "no reply to a malformed query: {reply:?}");
    let rcode = u8::from_str_radix(&reply[6..8], 16)? & 0x0f;
    ensure!(
        rcode == 1,
        "rcode {rcode} for two questions, want FORMERR (1): {reply}"
    );
    let _ = raw_udp(&c, &du, "abcd0100000100000000000003776562")?;
    wait_answer(&c, &du, "web.default.svc.cluster.local", "A", &[&web_ip])?;

    // The metrics port answers through the Service.
    ensure!(
        dns_metrics(&c, &du)?.contains("coredns_dns_requests_total{"),
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
            let (_, a) = dig(&c, &du, &["web.default.svc.cluster.local", "A"])?;
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
    let (_, a) = dig(&c, &du, &["web.default.svc.cluster.local", "A"])?;
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
    wait_answer(&c, &du, "late.default.svc.cluster.local", "A", &[&late])?;
    if late.is_empty() {
        bail!("no ClusterIP");
    }
    Ok(())
}

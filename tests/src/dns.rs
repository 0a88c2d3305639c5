//! Cluster DNS checks shared by the e2e tests (the DNS suite and the CNI plugin suite run
//! the same check on clusters with different pod networks): `dig` from a dnsutils pod, a
//! test upstream DNS server in a pod, Corefiles, and the basic records check.
//!
//! Network safety: before any query, the Corefile is switched to forward to an upstream
//! DNS server the check runs in a pod of its own, so nothing a query asks can leave the
//! cluster; until then only names of the cluster zone (answered authoritatively) are asked.

use std::process::Command;

use anyhow::{ensure, Context, Result};
use serde_json::{json, Value};

use crate::pods::{create, exec, get_json, kubectl, pod_netns, wait_for, wait_running};
use crate::Cluster;

/// kube-dns's ClusterIP (the default service CIDR's tenth address).
pub const DNS: &str = "10.96.0.10";

/// The dnsutils image of the Kubernetes e2e tests (a host-package recipe in kins).
pub const DNSUTILS_IMAGE: &str = "registry.k8s.io/e2e-test-images/jessie-dnsutils:1.3";

/// One `dig` from inside the dnsutils pod's container (its own dig and resolv.conf):
/// the status and the answer lines (`name ttl class type data`).
pub fn dig(c: &Cluster, pod: &Value, args: &[&str]) -> Result<(String, Vec<String>)> {
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
pub fn data(answers: &[String], rtype: &str) -> Vec<String> {
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
pub fn wait_answer(c: &Cluster, pod: &Value, name: &str, rtype: &str, want: &[&str]) -> Result<()> {
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

/// A pod's IP.
pub fn pod_ip(pod: &Value) -> Result<String> {
    Ok(pod["status"]["podIP"]
        .as_str()
        .context("podIP")?
        .to_string())
}

/// A busybox pod sleeping in namespace `ns`, with `extra_spec` merged into its spec.
pub fn busybox_pod(name: &str, ns: &str, labels: Value, extra_spec: Value) -> String {
    let mut spec = json!({"terminationGracePeriodSeconds": 0,
        "containers": [{"name": "c", "image": "busybox", "command": ["sleep", "3600"]}]});
    if let (Some(s), Some(e)) = (spec.as_object_mut(), extra_spec.as_object()) {
        s.extend(e.clone());
    }
    json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "labels": labels}, "spec": spec})
    .to_string()
}

/// A DNS server the test runs in a pod's network namespace (the host's python3 there):
/// it answers A questions with 192.0.2.1 (a documentation address, never contacted) and
/// other types with no data, and appends every question's name to a file.
pub struct Upstream {
    child: std::process::Child,
    /// The file of the names asked, one per line.
    pub log: std::path::PathBuf,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts an [`Upstream`] in `pod`'s network namespace, logging to the cluster's data dir.
pub fn upstream(c: &Cluster, pod: &Value) -> Result<Upstream> {
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

/// Replaces the Corefile of kube-system/coredns.
pub fn set_corefile(c: &Cluster, corefile: &str) -> Result<()> {
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
pub fn corefile(ttl: u32, upstream: &str, extra: &str) -> String {
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
pub fn wait_ttl(c: &Cluster, pod: &Value, ttl: u32) -> Result<()> {
    wait_for(&format!("the Corefile with ttl {ttl} to apply"), 30, || {
        let (_, answers) = dig(c, pod, &["kubernetes.default.svc.cluster.local", "A"])?;
        Ok(answers
            .first()
            .is_some_and(|a| a.split(' ').nth(1) == Some(ttl.to_string().as_str()))
            .then_some(()))
    })
}

/// Waits until a kube-system/coredns pod is Ready; returns it.
pub fn wait_dns_ready(c: &Cluster) -> Result<Value> {
    wait_for("the coredns pod to be ready", 60, || {
        let pods = get_json(
            c,
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
    })
}

/// What [`dns_basic`] made, for checks that go on from there.
pub struct DnsBasic {
    /// The kube-system/coredns pod.
    pub dns_pod: Value,
    /// The pods `web-1` and `web-2`.
    pub w1: Value,
    pub w2: Value,
    /// The dnsutils pod, to ask from.
    pub du: Value,
    /// The test's upstream DNS server (in the pod `upstream`), and its pod IP.
    pub upstream: Upstream,
    pub up_ip: String,
    /// The pod IPs of `web-1` and `web-2`, and the ClusterIP of the Service `web`.
    pub ip1: String,
    pub ip2: String,
    pub web_ip: String,
}

/// The TTL of the Corefile [`dns_basic`] installs.
pub const BASIC_TTL: u32 = 7;

/// The basic DNS check, on a cluster made with `--dns=true`: the records of the
/// Kubernetes DNS specification for a ClusterIP Service, a headless Service and its pods
/// (`hostname.subdomain`), pods' A records, PTR records, NXDOMAIN and NODATA, as the
/// dnsutils pod asks them (queries crossing from `client_node` to wherever kube-dns runs),
/// and a service's short name through the pod's search path (glibc).
///
/// It creates, in the default namespace, the pods `web-1` and `web-2` (hostnames under the
/// headless Service `hl`, label app=web) and `upstream` on `server_node`, `dnsutils` on
/// `client_node`, and the Services `web` and `hl`; and forwards to the test's upstream
/// (Corefile TTL [`BASIC_TTL`]) before the first query.
pub fn dns_basic(c: &Cluster, server_node: &str, client_node: &str) -> Result<DnsBasic> {
    let dns_pod = wait_dns_ready(c)?;
    for name in ["web-1", "web-2"] {
        create(
            c,
            &busybox_pod(
                name,
                "default",
                json!({"app": "web"}),
                json!({"nodeName": server_node, "hostname": name, "subdomain": "hl"}),
            ),
        )?;
    }
    create(
        c,
        &json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}})
        .to_string(),
    )?;
    create(
        c,
        &json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "hl"},
            "spec": {"clusterIP": "None", "selector": {"app": "web"},
                     "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}})
        .to_string(),
    )?;
    create(
        c,
        &json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "dnsutils"},
            "spec": {"nodeName": client_node, "terminationGracePeriodSeconds": 0, "containers": [{
                "name": "dnsutils", "image": DNSUTILS_IMAGE, "command": ["sleep", "3600"]}]}})
        .to_string(),
    )?;
    create(
        c,
        &busybox_pod(
            "upstream",
            "default",
            json!({}),
            json!({"nodeName": server_node}),
        ),
    )?;
    let w1 = wait_running(c, "web-1")?;
    let w2 = wait_running(c, "web-2")?;
    let du = wait_running(c, "dnsutils")?;
    let up_pod = wait_running(c, "upstream")?;
    let (ip1, ip2) = (pod_ip(&w1)?, pod_ip(&w2)?);
    let web_ip = get_json(c, &["get", "svc", "web"])?["spec"]["clusterIP"]
        .as_str()
        .context("clusterIP")?
        .to_string();

    // First, forwarding goes to the test's own upstream.
    let upstream = upstream(c, &up_pod)?;
    let up_ip = pod_ip(&up_pod)?;
    set_corefile(c, &corefile(BASIC_TTL, &up_ip, ""))?;
    wait_ttl(c, &du, BASIC_TTL)?;

    // The pod's resolver configuration (dnsPolicy ClusterFirst).
    let resolv = exec(c, &du, "dnsutils", &["cat", "/etc/resolv.conf"])?;
    ensure!(
        resolv == "nameserver 10.96.0.10\nsearch default.svc.cluster.local svc.cluster.local cluster.local\noptions ndots:5\n",
        "resolv.conf:\n{resolv}"
    );

    // Records of the specification.
    wait_answer(c, &du, "web.default.svc.cluster.local", "A", &[&web_ip])?;
    wait_answer(c, &du, "hl.default.svc.cluster.local", "A", &[&ip1, &ip2])?;
    wait_answer(c, &du, "web-1.hl.default.svc.cluster.local", "A", &[&ip1])?;
    wait_answer(c, &du, "WEB.Default.SVC.cluster.LOCAL", "A", &[&web_ip])?;
    let (_, a) = dig(c, &du, &["_http._tcp.web.default.svc.cluster.local", "SRV"])?;
    ensure!(
        data(&a, "SRV") == ["0 100 80 web.default.svc.cluster.local."],
        "SRV of a ClusterIP service: {a:?}"
    );
    let (_, a) = dig(c, &du, &["_http._tcp.hl.default.svc.cluster.local", "SRV"])?;
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
    let (_, a) = dig(c, &du, &["-x", &web_ip])?;
    ensure!(
        data(&a, "PTR") == ["web.default.svc.cluster.local."],
        "PTR of the ClusterIP: {a:?}"
    );
    let (_, a) = dig(c, &du, &["-x", &ip1])?;
    ensure!(
        data(&a, "PTR") == ["web-1.hl.default.svc.cluster.local."],
        "PTR of a headless endpoint: {a:?}"
    );
    let dashed = ip1.replace('.', "-");
    let (_, a) = dig(
        c,
        &du,
        &[&format!("{dashed}.default.pod.cluster.local"), "A"],
    )?;
    ensure!(data(&a, "A") == [ip1.clone()], "pod A record: {a:?}");
    let (status, a) = dig(c, &du, &["nope.default.svc.cluster.local", "A"])?;
    ensure!(
        status == "NXDOMAIN" && a.is_empty(),
        "missing name: {status} {a:?}"
    );
    let (status, a) = dig(c, &du, &["web.default.svc.cluster.local", "AAAA"])?;
    ensure!(
        status == "NOERROR" && a.is_empty(),
        "no AAAA (NODATA): {status} {a:?}"
    );
    // Search paths from the pod, as programs resolve (glibc through resolv.conf).
    let out = exec(c, &du, "dnsutils", &["getent", "hosts", "web"])?;
    ensure!(
        out.split_whitespace().collect::<Vec<_>>()
            == [web_ip.as_str(), "web.default.svc.cluster.local"],
        "getent hosts web: {out}"
    );
    Ok(DnsBasic {
        dns_pod,
        w1,
        w2,
        du,
        upstream,
        up_ip,
        ip1,
        ip2,
        web_ip,
    })
}

//! NetworkPolicy benchmark: what enforcing policies costs.
//!
//! Scale (no cluster): POLICIES policies over PODS pods in 50 namespaces on 3 nodes, as
//! one node's agent sees them: time of the pure `netpol::desired` for the node, size of
//! the whole table and the time `nft` takes to load it into a scratch namespace
//! (`kinsbench-np-<pid>`, deleted afterwards); then per change (a pod relabelled, a
//! policy added) the time of desired + diff and of applying the diff, median of 20.
//!
//! Live (a two-node cluster `bnp`, deleted afterwards): a server pod on the first node, a
//! client on the second, a server of accept-write-close connections in the server pod's
//! namespace, and a prober in the client's connecting every millisecond. For ROUNDS
//! rounds: a default-deny policy is POSTed → time to the first refused connection; an
//! allowing policy (from app=client) → the first allowed one; the client relabelled →
//! refused; relabelled back → allowed (p50/p99 of each). Then throughput (iperf3, one
//! stream) and connections/s with no policy and with the allowing policies (the server
//! isolated, the client allowed), median of RUNS, and their ratio.
//!
//! Traffic goes only between pods of the cluster this program makes.
//!
//! Usage: bench-netpol [POLICIES] [PODS] [ROUNDS] [SECONDS] [RUNS] (default 1000, 5000,
//! 20, 5, 3); BENCH_SCALE=0 or BENCH_LIVE=0 skips a part. Needs root, nft, nsenter, iperf3.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bench::dataplane::{
    busybox_pod, conn_rate, iperf, median, one_connection, ConnServer, IperfServer, CONN_PORT,
};
use bench::{client, percentile};
use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kins_tests::pods::{create, pod_netns, wait_for, wait_running};
use kins_tests::Cluster;
use proxy::Nft;
use serde_json::{json, Value};

fn arg(i: usize, default: usize) -> usize {
    std::env::args()
        .nth(i)
        .and_then(|a| a.parse().ok())
        .unwrap_or(default)
}

fn main() -> anyhow::Result<()> {
    let policies = arg(1, 1000);
    let pods = arg(2, 5000);
    let rounds = arg(3, 20);
    let secs = arg(4, 5) as u64;
    let runs = arg(5, 3);
    if std::env::var("BENCH_SCALE").as_deref() != Ok("0") {
        scale(policies, pods)?;
    }
    if std::env::var("BENCH_LIVE").as_deref() == Ok("0") {
        return Ok(());
    }
    live(rounds, secs, runs)
}

// ---- scale ----

const NAMESPACES: usize = 50;
const APPS: usize = 20;

fn parse<T: serde::de::DeserializeOwned>(v: Value) -> anyhow::Result<T> {
    Ok(serde_json::from_value(v)?)
}

fn synthetic_pod(i: usize, app: usize) -> anyhow::Result<Pod> {
    let ns = i % NAMESPACES;
    parse(json!({
        "metadata": {"namespace": format!("ns-{ns}"), "name": format!("pod-{i}"),
            "labels": {"app": format!("app-{app}"), "tier": if i.is_multiple_of(2) { "web" } else { "db" }}},
        "spec": {"nodeName": format!("node-{}", i % 3), "containers": [{"name": "c",
            "ports": [{"name": "http", "containerPort": 8080}]}]},
        "status": {"phase": "Running", "podIP": format!("10.{}.{}.{}", 100 + i / 65536, (i / 256) % 256, i % 256)}
    }))
}

fn synthetic_policy(i: usize) -> anyhow::Result<NetworkPolicy> {
    let ns = i % NAMESPACES;
    parse(json!({
        "metadata": {"namespace": format!("ns-{ns}"), "name": format!("pol-{i}")},
        "spec": {"podSelector": {"matchLabels": {"app": format!("app-{}", i % APPS)}},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [
                {"from": [{"namespaceSelector": {"matchLabels": {"team": format!("t-{}", i % 5)}},
                           "podSelector": {"matchLabels": {"tier": "web"}}}],
                 "ports": [{"port": "http"}, {"port": 80, "endPort": 81}]},
                {"from": [{"ipBlock": {"cidr": "10.100.0.0/16", "except": [format!("10.100.{}.0/24", i % 256)]}}]}],
            "egress": [{"to": [{"podSelector": {}}], "ports": [{"protocol": "UDP", "port": 53}]}]}
    }))
}

fn namespaces() -> anyhow::Result<Vec<Namespace>> {
    (0..NAMESPACES)
        .map(|n| {
            parse(json!({"metadata": {"name": format!("ns-{n}"),
                "labels": {"kubernetes.io/metadata.name": format!("ns-{n}"), "team": format!("t-{}", n % 5)}}}))
        })
        .collect()
}

/// A network namespace of this program's, deleted on drop.
struct Scratch(String);

impl Scratch {
    fn new() -> anyhow::Result<Scratch> {
        let name = format!("kinsbench-np-{}", std::process::id());
        let st = std::process::Command::new("ip")
            .args(["netns", "add", &name])
            .status()?;
        if !st.success() {
            bail!("ip netns add {name} failed");
        }
        Ok(Scratch(name))
    }

    fn path(&self) -> std::path::PathBuf {
        Path::new("/run/netns").join(&self.0)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &self.0])
            .status();
    }
}

fn apply_in(ns: &Path, script: String) -> anyhow::Result<f64> {
    let started = Instant::now();
    net::run_in_netns(ns, move || proxy::NftCommand::default().apply(&script))??;
    Ok(started.elapsed().as_secs_f64() * 1e3)
}

fn ms(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1e3
}

fn scale(n_policies: usize, n_pods: usize) -> anyhow::Result<()> {
    let mut pods: Vec<Pod> = (0..n_pods)
        .map(|i| synthetic_pod(i, i % APPS))
        .collect::<anyhow::Result<_>>()?;
    let mut policies: Vec<NetworkPolicy> = (0..n_policies)
        .map(synthetic_policy)
        .collect::<anyhow::Result<_>>()?;
    let nss = namespaces()?;
    let node = "node-0";
    let mut compute = Vec::new();
    let mut d = netpol::Desired::default();
    for _ in 0..5 {
        let t = Instant::now();
        d = netpol::desired(&policies, &pods, &nss, node);
        compute.push(ms(t));
    }
    let mut sizes: Vec<(usize, &String)> = d.sets.iter().map(|(n, s)| (s.elems.len(), n)).collect();
    sizes.sort_by(|a, b| b.cmp(a));
    let top: Vec<String> = sizes
        .iter()
        .take(3)
        .map(|(n, s)| format!("{s} ({n})"))
        .collect();
    println!("scale: largest sets: {}", top.join(", "));
    let full = netpol::full_script(&d);
    let scratch = Scratch::new()?;
    let load = apply_in(&scratch.path(), full.clone())?;
    println!(
        "scale: {n_policies} policies, {n_pods} pods, {NAMESPACES} namespaces, 3 nodes; node-0's table: {} chains, {} sets, {} elements, script {:.1} KiB",
        d.chains.len(),
        d.sets.len(),
        d.len(),
        full.len() as f64 / 1024.0
    );
    println!(
        "scale: desired (whole cluster → node-0) median {:.1} ms; nft load of the whole table {load:.0} ms",
        median(&compute)
    );
    // Changes: relabel a pod of node 0 (app-k → app-k+1), then add a policy.
    let (mut relabel_cpu, mut relabel_nft, mut add_cpu, mut add_nft) =
        (vec![], vec![], vec![], vec![]);
    for r in 0..20 {
        let i = r * 3 * 7 % n_pods / 3 * 3; // a pod of node-0
        pods[i] = synthetic_pod(i, (i + r + 1) % APPS)?;
        let t = Instant::now();
        let new = netpol::desired(&policies, &pods, &nss, node);
        let script = netpol::diff_script(&d, &new).unwrap_or_default();
        relabel_cpu.push(ms(t));
        relabel_nft.push(apply_in(&scratch.path(), script)?);
        d = new;

        policies.push(synthetic_policy(n_policies + r)?);
        let t = Instant::now();
        let new = netpol::desired(&policies, &pods, &nss, node);
        let script = netpol::diff_script(&d, &new).unwrap_or_default();
        add_cpu.push(ms(t));
        add_nft.push(apply_in(&scratch.path(), script)?);
        d = new;
    }
    println!(
        "scale: a pod relabelled: desired+diff {:.1} ms, nft {:.1} ms; a policy added: desired+diff {:.1} ms, nft {:.1} ms (medians of 20)",
        median(&relabel_cpu),
        median(&relabel_nft),
        median(&add_cpu),
        median(&add_nft)
    );
    Ok(())
}

// ---- live ----

struct Api {
    rt: tokio::runtime::Runtime,
    client: reqwest::Client,
    base: String,
}

impl Api {
    fn send(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> anyhow::Result<()> {
        self.rt.block_on(async {
            let mut req = self
                .client
                .request(method.clone(), format!("{}{path}", self.base));
            if let Some(b) = body {
                req = if method == reqwest::Method::PATCH {
                    req.header("Content-Type", "application/merge-patch+json")
                        .body(b.to_string())
                } else {
                    req.json(&b)
                };
            }
            let r = req
                .send()
                .await
                .with_context(|| format!("{method} {path}"))?;
            let status = r.status();
            if !status.is_success() {
                bail!("{method} {path}: {status}: {}", r.text().await?);
            }
            Ok(())
        })
    }
}

const POLICIES: &str = "/apis/networking.k8s.io/v1/namespaces/default/networkpolicies";

fn policy(name: &str, from_app: Option<&str>) -> Value {
    let ingress = match from_app {
        Some(app) => json!([{"from": [{"podSelector": {"matchLabels": {"app": app}}}]}]),
        None => json!([]),
    };
    json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": name},
        "spec": {"podSelector": {"matchLabels": {"app": "server"}}, "policyTypes": ["Ingress"], "ingress": ingress}})
}

/// Time from `act` to the first connection from `netns` to `addr` whose outcome is
/// `allowed` (a connection every millisecond).
fn until(
    netns: &Path,
    addr: SocketAddr,
    allowed: bool,
    act: impl FnOnce() -> anyhow::Result<()>,
) -> anyhow::Result<f64> {
    let ns = netns.to_path_buf();
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let prober = std::thread::spawn(move || -> anyhow::Result<Option<f64>> {
        Ok(net::run_in_netns(&ns, move || {
            let _ = rx.recv();
            let t0 = Instant::now();
            while t0.elapsed() < Duration::from_secs(30) {
                if one_connection(&addr).is_ok() == allowed {
                    return Some(t0.elapsed().as_secs_f64() * 1e3);
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            None
        })?)
    });
    let _ = tx.send(());
    act()?;
    let r = prober
        .join()
        .map_err(|_| anyhow::anyhow!("prober panicked"))??;
    r.with_context(|| {
        format!(
            "no {} connection to {addr} within 30 s",
            if allowed { "allowed" } else { "refused" }
        )
    })
}

fn p50_p99(mut v: Vec<f64>) -> String {
    v.sort_by(f64::total_cmp);
    format!(
        "p50 {:.1} ms, p99 {:.1} ms",
        percentile(&v, 50.0),
        percentile(&v, 99.0)
    )
}

fn live(rounds: usize, secs: u64, runs: usize) -> anyhow::Result<()> {
    let name = "bnp";
    let c = Cluster::up_with(name, &["--nodes", "2"])?;
    let (n1, n2) = (format!("{name}-worker"), format!("{name}-worker2"));
    create(&c, &busybox_pod("server", &n1, json!({"app": "server"})))?;
    create(&c, &busybox_pod("client", &n2, json!({"app": "client"})))?;
    let server = wait_running(&c, "server")?;
    let client_pod = wait_running(&c, "client")?;
    let ip = server["status"]["podIP"]
        .as_str()
        .context("server has no podIP")?
        .to_string();
    let (server_ns, client_ns) = (pod_netns(&c, &server), pod_netns(&c, &client_pod));
    let _conns = ConnServer::start(&server_ns, &[CONN_PORT])?;
    let _iperf = IperfServer::start(&server_ns)?;
    let addr: SocketAddr = format!("{ip}:{CONN_PORT}").parse()?;
    net::run_in_netns(&client_ns, || {
        wait_for("a connection to the server pod", 30, || {
            Ok(one_connection(&addr).ok())
        })
    })??;
    let api = Api {
        rt: tokio::runtime::Runtime::new()?,
        client: client(&c.kubeconfig)?,
        base: c.url(),
    };
    let client_path = "/api/v1/namespaces/default/pods/client";
    let relabel = |app: &str| json!({"metadata": {"labels": {"app": app}}});
    let (mut deny, mut allow, mut lab_deny, mut lab_allow) = (vec![], vec![], vec![], vec![]);
    for r in 0..rounds {
        let (d, a) = (format!("deny-{r}"), format!("allow-{r}"));
        deny.push(until(&client_ns, addr, false, || {
            api.send(reqwest::Method::POST, POLICIES, Some(policy(&d, None)))
        })?);
        allow.push(until(&client_ns, addr, true, || {
            api.send(
                reqwest::Method::POST,
                POLICIES,
                Some(policy(&a, Some("client"))),
            )
        })?);
        lab_deny.push(until(&client_ns, addr, false, || {
            api.send(reqwest::Method::PATCH, client_path, Some(relabel("other")))
        })?);
        lab_allow.push(until(&client_ns, addr, true, || {
            api.send(reqwest::Method::PATCH, client_path, Some(relabel("client")))
        })?);
        for p in [&d, &a] {
            api.send(reqwest::Method::DELETE, &format!("{POLICIES}/{p}"), None)?;
        }
    }
    println!(
        "live: policy created → first refused connection: {}",
        p50_p99(deny)
    );
    println!(
        "live: allowing policy created → first allowed connection: {}",
        p50_p99(allow)
    );
    println!(
        "live: pod relabelled out → first refused: {}",
        p50_p99(lab_deny)
    );
    println!(
        "live: pod relabelled back → first allowed: {}",
        p50_p99(lab_allow)
    );

    // The data path: no policy, then the server isolated with the client allowed.
    let measure = |what: &str| -> anyhow::Result<(f64, f64)> {
        conn_rate(&client_ns, addr, 1.0, 1)?;
        let (mut tp, mut cps) = (vec![], vec![]);
        for _ in 0..runs {
            tp.push(iperf(&client_ns, &ip, secs)?);
            cps.push(conn_rate(&client_ns, addr, secs as f64, 1)?.0);
        }
        println!(
            "live: {what}: {:.2} Gbit/s, {:.0} connections/s (medians of {runs})",
            median(&tp),
            median(&cps)
        );
        Ok((median(&tp), median(&cps)))
    };
    wait_for("the policies to go", 30, || {
        Ok(net::run_in_netns(&client_ns, || {
            one_connection(&addr).ok()
        })?)
    })?;
    let (tp0, cps0) = measure("no policy")?;
    api.send(reqwest::Method::POST, POLICIES, Some(policy("deny", None)))?;
    until(&client_ns, addr, true, || {
        api.send(
            reqwest::Method::POST,
            POLICIES,
            Some(policy("allow", Some("client"))),
        )
    })?;
    let (tp1, cps1) = measure("allowed by a policy")?;
    println!(
        "live: ratio with policy / without: throughput {:.3}, connections/s {:.3}",
        tp1 / tp0,
        cps1 / cps0
    );
    c.down()?;
    Ok(())
}

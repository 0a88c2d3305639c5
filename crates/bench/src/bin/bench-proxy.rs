//! Service proxy benchmark: the kins_proxy nftables layout (constant chains, services and
//! endpoints as map elements) against a kube-proxy-style layout (a chain per service and
//! per endpoint) at the same scale, in a scratch network namespace this program creates
//! and deletes. Figures: full load, one-service changes (p50/p99), `nft list table`, and
//! the RSS after building the desired state.
//!
//! Usage: bench-proxy [SERVICES] [KUBE_PROXY_SERVICES] (default 10000 and 10000; 5
//! endpoints each). Needs root, ip and nft.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context};
use bench::{percentile, rss_mib};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use proxy::{desired, diff_script, full_script, Desired, Nft, NodeConfig, ProxyError};
use serde_json::json;

const ENDPOINTS: usize = 5;
const CHANGES: usize = 20;

/// The scratch namespace, deleted on drop.
struct Netns(String);

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// `nft -f -` inside the scratch namespace.
struct NsNft(String);

impl Nft for NsNft {
    fn apply(&self, script: &str) -> Result<(), ProxyError> {
        let spawn = |e| ProxyError::Spawn {
            program: "ip netns exec nft".into(),
            source: e,
        };
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.0, "nft", "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(spawn)?;
        let mut stdin = child.stdin.take().expect("stdin is piped");
        stdin.write_all(script.as_bytes()).map_err(spawn)?;
        drop(stdin);
        let out = child.wait_with_output().map_err(spawn)?;
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            return Err(ProxyError::Nft {
                status: out.status.to_string(),
                stderr: stderr.lines().take(5).collect::<Vec<_>>().join("\n"),
            });
        }
        Ok(())
    }
}

fn ms(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1000.0
}

fn cluster_ip(i: usize) -> String {
    format!("10.96.{}.{}", i / 250, i % 250 + 1)
}

fn endpoint_ip(i: usize, e: usize) -> String {
    let n = i * ENDPOINTS + e;
    format!("10.{}.{}.{}", 128 + n / 62500, n / 250 % 250, n % 250 + 1)
}

/// Service `i` (ClusterIP, port 80) and its slice (`ENDPOINTS` endpoints, generation `gen`).
fn objects(i: usize, gen: usize) -> (Service, EndpointSlice) {
    let name = format!("svc-{i}");
    let svc = json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": "bench"},
        "spec": {"clusterIP": cluster_ip(i), "ports": [{"name": "http", "port": 80}]}});
    let eps: Vec<_> = (0..ENDPOINTS)
        .map(|e| {
            json!({"addresses": [endpoint_ip(i, e + gen)], "nodeName": format!("n{}", e % 3),
                         "conditions": {"ready": true}})
        })
        .collect();
    let slice = json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": format!("{name}-a"), "namespace": "bench",
                     "labels": {"kubernetes.io/service-name": name}},
        "addressType": "IPv4", "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": eps});
    (
        serde_json::from_value(svc).expect("a valid Service"),
        serde_json::from_value(slice).expect("a valid EndpointSlice"),
    )
}

fn node() -> NodeConfig {
    NodeConfig {
        node_name: "n0".into(),
        node_ip: "172.29.0.2".parse().expect("literal"),
        cluster_cidr: "10.128.0.0/9".into(),
        service_cidr: "10.96.0.0/12".into(),
    }
}

fn build(svcs: &[Service], slices: &[EndpointSlice]) -> Desired {
    desired(svcs, slices, &node())
}

/// kube-proxy's nftables layout: a verdict map to a chain per service, each choosing a
/// chain per endpoint with `numgen random mod N vmap`, each doing the DNAT.
fn kube_proxy_table(services: impl Iterator<Item = usize>) -> String {
    let mut chains = String::new();
    let mut elements = Vec::new();
    for i in services {
        let (c, e) = kube_proxy_service(i);
        chains.push_str(&c);
        elements.push(e);
    }
    let head = "table ip kp\ndelete table ip kp\ntable ip kp {\n\
        \tmap service_ips { type ipv4_addr . inet_proto . inet_service : verdict; }\n\
        \tchain services { ip daddr . meta l4proto . th dport vmap @service_ips; }\n\
        \tchain nat_prerouting { type nat hook prerouting priority dstnat; policy accept; jump services; }\n\
        \tchain nat_output { type nat hook output priority -100; policy accept; jump services; }\n}\n";
    let mut s = String::from(head);
    s.push_str(&chains);
    for chunk in elements.chunks(2000) {
        s.push_str(&format!(
            "add element ip kp service_ips {{ {} }}\n",
            chunk.join(", ")
        ));
    }
    s
}

/// One service of the kube-proxy layout: its chains, and its service_ips element.
fn kube_proxy_service(i: usize) -> (String, String) {
    let mut s = String::new();
    for e in 0..ENDPOINTS {
        s.push_str(&format!(
            "add chain ip kp ep-{i}-{e}\nadd rule ip kp ep-{i}-{e} meta l4proto tcp dnat to {}:8080\n",
            endpoint_ip(i, e)
        ));
    }
    let targets: Vec<String> = (0..ENDPOINTS)
        .map(|e| format!("{e} : goto ep-{i}-{e}"))
        .collect();
    s.push_str(&format!(
        "add chain ip kp svc-{i}\nadd rule ip kp svc-{i} numgen random mod {ENDPOINTS} vmap {{ {} }}\n",
        targets.join(", ")
    ));
    let elem = format!("{} . tcp . 80 : goto svc-{i}", cluster_ip(i));
    (s, elem)
}

fn timed(nft: &NsNft, script: &str) -> anyhow::Result<f64> {
    let t = Instant::now();
    nft.apply(script)?;
    Ok(ms(t))
}

fn list_ms(ns: &str, table: &str) -> anyhow::Result<(f64, usize)> {
    let t = Instant::now();
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "nft", "list", "table", "ip", table])
        .output()?;
    if !out.status.success() {
        bail!("nft list: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok((ms(t), out.stdout.len()))
}

fn p50_p99(mut v: Vec<f64>) -> (f64, f64) {
    v.sort_by(f64::total_cmp);
    (percentile(&v, 50.0), percentile(&v, 99.0))
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let n: usize = args
        .next()
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(10_000);
    let kp_n: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(n);
    let ns = Netns(format!("kinsproxybench-{}", std::process::id()));
    let st = Command::new("ip").args(["netns", "add", &ns.0]).status()?;
    if !st.success() {
        bail!("ip netns add {}", ns.0);
    }
    let nft = NsNft(ns.0.clone());
    let me = std::process::id() as i32;

    // Our layout.
    let rss0 = rss_mib(me).unwrap_or(f64::NAN);
    let (mut svcs, mut slices): (Vec<_>, Vec<_>) = (0..n).map(|i| objects(i, 0)).unzip();
    let rss1 = rss_mib(me).unwrap_or(f64::NAN);
    let t = Instant::now();
    let mut state = build(&svcs, &slices);
    let desired_ms = ms(t);
    let rss2 = rss_mib(me).unwrap_or(f64::NAN);
    println!(
        "kins_proxy: {n} services x {ENDPOINTS} endpoints, {} elements",
        state.len()
    );
    println!("kins_proxy: desired() {desired_ms:.0} ms");
    println!(
        "kins_proxy: RSS {rss0:.0} MiB at start, {rss1:.0} MiB with the objects, {rss2:.0} MiB with Desired (+{:.0} MiB)",
        rss2 - rss1
    );
    let t = Instant::now();
    let script = full_script(&state);
    println!(
        "kins_proxy: full_script {:.0} ms, {:.1} MB",
        ms(t),
        script.len() as f64 / 1e6
    );
    let noop = (0..5)
        .map(|_| timed(&nft, ""))
        .collect::<anyhow::Result<Vec<_>>>()?;
    println!(
        "baseline: `ip netns exec nft -f -` of an empty script {:.1} ms (p50)",
        p50_p99(noop).0
    );
    let full = timed(&nft, &script).context("full load")?;
    println!("kins_proxy: full load {full:.0} ms");
    let reload = timed(&nft, &script).context("full reload")?;
    println!("kins_proxy: full reload over the existing table {reload:.0} ms");

    let mut times = Vec::new();
    let mut diff_ms = Vec::new();
    let mut desired_ms = Vec::new();
    for c in 0..CHANGES {
        // Even: add a new service; odd: replace one endpoint of an existing service.
        if c % 2 == 0 {
            let (s, e) = objects(n + c, 0);
            svcs.push(s);
            slices.push(e);
        } else {
            let i = c * 37 % n;
            slices[i] = objects(i, 1).1;
        }
        let t = Instant::now();
        let next = build(&svcs, &slices);
        desired_ms.push(ms(t));
        let t = Instant::now();
        let script = diff_script(&state, &next).context("a change")?;
        diff_ms.push(ms(t));
        times.push(timed(&nft, &script).context("diff")?);
        state = next;
    }
    let (p50, p99) = p50_p99(times);
    let (d50, d99) = p50_p99(diff_ms);
    let (b50, b99) = p50_p99(desired_ms);
    println!(
        "kins_proxy: one-service change via diff_script: apply p50 {p50:.1} ms, p99 {p99:.1} ms"
    );
    println!(
        "kins_proxy: per change, desired() of all services (CPU): p50 {b50:.0} ms, p99 {b99:.0} ms"
    );
    println!("kins_proxy: per change, diff_script (CPU): p50 {d50:.1} ms, p99 {d99:.1} ms");
    let (list, bytes) = list_ms(&ns.0, proxy::TABLE)?;
    println!(
        "kins_proxy: nft list table {list:.0} ms ({:.1} MB)",
        bytes as f64 / 1e6
    );

    // The same changes on a 10-service table: is nft's cache reading what costs?
    let small_svcs: Vec<_> = (0..10).map(|i| objects(i, 0)).collect();
    let (ss, sl): (Vec<_>, Vec<_>) = small_svcs.into_iter().unzip();
    let mut small = build(&ss, &sl);
    timed(&nft, &full_script(&small))?;
    let mut small_times = Vec::new();
    for c in 0..CHANGES {
        let (mut ss2, mut sl2) = (ss.clone(), sl.clone());
        let (s, e) = objects(10 + c, 0);
        ss2.push(s);
        sl2.push(e);
        let next = build(&ss2, &sl2);
        small_times.push(timed(
            &nft,
            &diff_script(&small, &next).context("a change")?,
        )?);
        small = next;
    }
    let (s50, s99) = p50_p99(small_times);
    println!(
        "kins_proxy: one-service change on a 10-service table: p50 {s50:.1} ms, p99 {s99:.1} ms"
    );
    proxy::remove_table(&nft)?;

    // kube-proxy-style layout.
    let script = kube_proxy_table(0..kp_n);
    println!(
        "kube-proxy layout: {kp_n} services x {ENDPOINTS} endpoints, {} chains, {:.1} MB script",
        kp_n * (ENDPOINTS + 1) + 3,
        script.len() as f64 / 1e6
    );
    let full = timed(&nft, &script).context("kube-proxy full load")?;
    println!("kube-proxy layout: full load {full:.0} ms");
    let mut times = Vec::new();
    for c in 0..CHANGES {
        let (chains, elem) = kube_proxy_service(kp_n + c);
        let script = format!("{chains}add element ip kp service_ips {{ {elem} }}\n");
        times.push(timed(&nft, &script)?);
    }
    let (p50, p99) = p50_p99(times);
    println!("kube-proxy layout: add one service: p50 {p50:.1} ms, p99 {p99:.1} ms");
    let (list, bytes) = list_ms(&ns.0, "kp")?;
    println!(
        "kube-proxy layout: nft list table {list:.0} ms ({:.1} MB)",
        bytes as f64 / 1e6
    );
    Ok(())
}

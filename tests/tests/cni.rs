//! The pod network plugins of `kins up --cni` (issue 13), as root with real namespaces:
//! for each of kins, bridge, ptp and vxlan, on a two-node cluster of its own,
//!
//! - pods on two nodes reach each other by pod IP without NAT (the server sees the client's
//!   pod IP), and pod IPs are inside their node's podCIDR;
//! - the Services and DNS checks of the Services and DNS suites (the same code, from
//!   `kins_tests::services` and `kins_tests::dns`) pass on top;
//! - a hostPort answers from the host at the node's address, and stops with its pod;
//! - pods' eth0 MTU (1450 under vxlan's 50-byte encapsulation, else 1500) and what the
//!   plugin builds in the node (cni0 for kins and bridge, none for ptp, the VXLAN device
//!   `kins.1` with its FDB, neighbour and route entries for every other node);
//! - 50 pods created and deleted on one node leave its links, addresses, routes, nftables
//!   and iptables rules and IPAM allocations as they were;
//! - vxlan: a node added live gets peers' entries on every node (and they on it), a pod on
//!   it is reachable, and removing it removes them.
//!
//! And bad choices: an unknown plugin name, a conflist naming a plugin that does not exist
//! (the pod stays ContainerCreating with a FailedCreatePodSandBox event, and leaves no veth
//! when deleted), another plugin for an existing cluster; and hostPorts in scheduling as
//! Kubernetes' NodePorts filter does it.
//!
//! Network safety: traffic goes only to pod IPs, node IPs and ClusterIPs of the test
//! clusters (and DNS queries are answered in the cluster or by the test's own upstream).

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, ensure, Context, Result};
use kins_tests::cni::{network_ready, pod_link, pod_mtu, PLUGINS};
use kins_tests::dns::dns_basic;
use kins_tests::pods::{create, get_json, kubectl, wait_for, wait_running};
use kins_tests::services::{
    curl_host, curl_in, node_exec, node_ip, services_basic, services_basic_cleanup, strip_mapped,
    web_pod,
};
use kins_tests::{kins_bin, ok, Cluster};
use serde_json::{json, Value};

/// The MTU of a node's eth0 (the host veth's default).
const NODE_MTU: u64 = 1500;
/// What VXLAN's encapsulation takes (outer Ethernet, IPv4, UDP, VXLAN headers).
const VXLAN_OVERHEAD: u64 = 50;
/// The VXLAN device of the vxlan plugin, its VNI and UDP port (flannel's).
const VXLAN_DEV: &str = "kins.1";
const VXLAN_VNI: u64 = 1;
const VXLAN_PORT: u64 = 8472;
/// Pods created and deleted on one node by the churn check, in rounds of `CHURN_BATCH`.
const CHURN_PODS: usize = 50;
const CHURN_BATCH: usize = 10;

#[test]
fn kins_plugin() -> Result<()> {
    let c = plugin_cluster("cn-kins", "kins")?;
    check_plugin(&c, "kins")?;
    host_ports_in_scheduling(&c)?;
    another_plugin_needs_a_new_cluster(&c)
}

#[test]
fn bridge_plugin() -> Result<()> {
    check_plugin(&plugin_cluster("cn-br", "bridge")?, "bridge")
}

#[test]
fn ptp_plugin() -> Result<()> {
    check_plugin(&plugin_cluster("cn-ptp", "ptp")?, "ptp")
}

#[test]
fn vxlan_plugin() -> Result<()> {
    let c = plugin_cluster("cn-vx", "vxlan")?;
    check_plugin(&c, "vxlan")?;
    vxlan_nodes_come_and_go(&c)
}

/// A two-node cluster with the DNS add-on and pod network `plugin`.
fn plugin_cluster(name: &str, plugin: &str) -> Result<Cluster> {
    Cluster::up_with(name, &["--nodes", "2", "--dns=true", "--cni", plugin])
}

fn workers(c: &Cluster) -> (String, String) {
    (format!("{}-worker", c.name), format!("{}-worker2", c.name))
}

/// Everything every plugin must do, on a cluster made by [`plugin_cluster`].
fn check_plugin(c: &Cluster, plugin: &str) -> Result<()> {
    let (n1, n2) = workers(c);
    reported_plugin(c, plugin).context("the plugin in kins status and kins cni ls")?;
    pod_to_pod_without_nat(c, &n1, &n2).context("pod to pod")?;
    mtu_and_node_devices(c, plugin, &n1, &n2).context("MTU and node devices")?;
    host_port_from_the_host(c, &n1, &n2).context("hostPort")?;
    services_basic(c, &n1, &n2).context("the Services check")?;
    services_basic_cleanup(c)?;
    dns_basic(c, &n1, &n2).context("the DNS check")?;
    churn_returns_to_baseline(c, &n1).context("create/delete churn")?;
    Ok(())
}

// ---- which plugin ----

/// `kins status` has a CNI column saying `plugin` for the cluster, and `kins cni ls`
/// lists every plugin once, the cluster's marked with `*`.
fn reported_plugin(c: &Cluster, plugin: &str) -> Result<()> {
    let out = ok(c.kins(&["status"])?)?;
    let header: Vec<&str> = out
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let col = header
        .iter()
        .position(|h| *h == "CNI")
        .with_context(|| format!("no CNI column in kins status:\n{out}"))?;
    let row: Vec<&str> = out
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|cells| cells.first() == Some(&c.name.as_str()))
        .with_context(|| format!("no line for {} in:\n{out}", c.name))?;
    ensure!(
        row.get(col) == Some(&plugin),
        "kins status CNI column: {:?}, want {plugin}:\n{out}",
        row.get(col)
    );
    // One line per plugin, its name first (after the `*` of the cluster's own); headers,
    // descriptions and notes around them are free.
    let out = ok(c.kins(&["cni", "ls", "--name", &c.name])?)?;
    let entries: Vec<(bool, &str)> = out
        .lines()
        .filter_map(|l| {
            let t = l.trim_start();
            let (marked, rest) = match t.strip_prefix('*') {
                Some(r) => (true, r),
                None => (false, t),
            };
            Some((marked, rest.split_whitespace().next()?))
        })
        .collect();
    for p in PLUGINS {
        let n = entries.iter().filter(|(_, name)| *name == p).count();
        ensure!(n == 1, "kins cni ls lists {p} {n} times:\n{out}");
    }
    let marked: Vec<&str> = entries
        .iter()
        .filter(|(m, _)| *m)
        .map(|(_, n)| *n)
        .collect();
    ensure!(
        marked == [plugin],
        "kins cni ls marks {marked:?}, want {plugin}:\n{out}"
    );
    Ok(())
}

// ---- (a) pod to pod ----

fn pod_ip(pod: &Value) -> Result<String> {
    Ok(pod["status"]["podIP"]
        .as_str()
        .with_context(|| format!("no podIP: {}", pod["status"]))?
        .to_string())
}

fn in_cidr(ip: &str, cidr: &str) -> Result<bool> {
    let ip: Ipv4Addr = ip.parse().with_context(|| format!("not an IPv4: {ip}"))?;
    let (base, len) = cidr.split_once('/').context("CIDR without /")?;
    let base: Ipv4Addr = base.parse()?;
    let len: u32 = len.parse()?;
    let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
    Ok(u32::from(ip) & mask == u32::from(base) & mask)
}

/// Web and client pods on both nodes (`pp-web-1`, `pp-cli-1` on n1, `pp-web-2`, `pp-cli-2`
/// on n2; left running): every client reaches every server by pod IP, and the server sees
/// the client's own pod IP.
fn pod_to_pod_without_nat(c: &Cluster, n1: &str, n2: &str) -> Result<()> {
    for (i, node) in [(1, n1), (2, n2)] {
        create(
            c,
            &web_pod(&format!("pp-web-{i}"), node, json!({"app": "pp"})),
        )?;
        create(
            c,
            &kins_tests::services::client_pod(&format!("pp-cli-{i}"), node),
        )?;
    }
    let mut servers = Vec::new();
    let mut clients = Vec::new();
    for (i, node) in [(1, n1), (2, n2)] {
        let cidr = get_json(c, &["get", "node", node])?["spec"]["podCIDR"]
            .as_str()
            .context("node without podCIDR")?
            .to_string();
        for (name, list) in [
            (format!("pp-web-{i}"), &mut servers),
            (format!("pp-cli-{i}"), &mut clients),
        ] {
            let pod = wait_running(c, &name)?;
            let ip = pod_ip(&pod)?;
            ensure!(
                in_cidr(&ip, &cidr)?,
                "{name} on {node} has {ip}, outside the node's podCIDR {cidr}"
            );
            list.push(pod);
        }
    }
    for client in &clients {
        let cip = pod_ip(client)?;
        for server in &servers {
            let sip = pod_ip(server)?;
            let (code, seen) = curl_in(c, client, &format!("http://{sip}:8080/cgi-bin/ip"))?;
            ensure!(
                code == 0 && strip_mapped(&seen) == cip,
                "{} → {}: curl exit {code}, the server saw {seen:?}, the client is {cip}",
                client["metadata"]["name"],
                server["metadata"]["name"]
            );
        }
    }
    Ok(())
}

// ---- (d) MTU and what the plugin builds in the node ----

/// `kins node exec NODE -- ARGV` printing JSON (`ip -j`, `bridge -j`); nothing is `[]`.
fn node_json(c: &Cluster, node: &str, argv: &[&str]) -> Result<Value> {
    let out = node_exec(c, node, argv)?;
    if out.trim().is_empty() {
        return Ok(json!([]));
    }
    serde_json::from_str(&out).with_context(|| format!("{argv:?} on {node} printed {out}"))
}

fn items(v: &Value) -> Vec<Value> {
    v.as_array().cloned().unwrap_or_default()
}

fn link_names(c: &Cluster, node: &str) -> Result<BTreeSet<String>> {
    Ok(items(&node_json(c, node, &["ip", "-j", "link", "show"])?)
        .iter()
        .filter_map(|l| l["ifname"].as_str().map(str::to_string))
        .collect())
}

fn mtu_and_node_devices(c: &Cluster, plugin: &str, n1: &str, n2: &str) -> Result<()> {
    let want = if plugin == "vxlan" {
        NODE_MTU - VXLAN_OVERHEAD
    } else {
        NODE_MTU
    };
    for name in ["pp-web-1", "pp-web-2", "pp-cli-1"] {
        let pod = get_json(c, &["get", "pod", name])?;
        let mtu = pod_mtu(c, &pod)?;
        ensure!(mtu == want, "{name}: eth0 MTU {mtu}, want {want}");
    }
    for node in [n1, n2] {
        let links = link_names(c, node)?;
        match plugin {
            "kins" | "bridge" => ensure!(
                links.contains("cni0"),
                "{plugin}: no cni0 bridge on {node}: {links:?}"
            ),
            "ptp" => ensure!(!links.contains("cni0"), "ptp: a cni0 on {node}: {links:?}"),
            "vxlan" => {
                let dev = items(&node_json(
                    c,
                    node,
                    &["ip", "-d", "-j", "link", "show", VXLAN_DEV],
                )?)
                .into_iter()
                .next()
                .with_context(|| format!("no {VXLAN_DEV} on {node}: {links:?}"))?;
                let info = &dev["linkinfo"];
                ensure!(
                    info["info_kind"] == "vxlan"
                        && info["info_data"]["id"] == VXLAN_VNI
                        && info["info_data"]["port"] == VXLAN_PORT,
                    "{VXLAN_DEV} on {node}: want vxlan id {VXLAN_VNI} dstport {VXLAN_PORT}, got {info}"
                );
                let eth0 = items(&node_json(c, node, &["ip", "-j", "link", "show", "eth0"])?)
                    .into_iter()
                    .next()
                    .context("no eth0 in the node")?;
                let (mtu, eth0_mtu) = (dev["mtu"].as_u64(), eth0["mtu"].as_u64());
                ensure!(
                    mtu.is_some()
                        && eth0_mtu.is_some()
                        && mtu == eth0_mtu.map(|m| m - VXLAN_OVERHEAD),
                    "{VXLAN_DEV} MTU {mtu:?}, eth0's {eth0_mtu:?}: want {VXLAN_OVERHEAD} less"
                );
            }
            other => bail!("no expectations for plugin {other}"),
        }
    }
    if plugin == "vxlan" {
        let nodes = node_infos(c)?;
        vxlan_peers(c, &nodes)?;
    }
    Ok(())
}

/// A node as the VXLAN entries name it.
#[derive(Debug, Clone)]
struct NodeInfo {
    name: String,
    ip: String,
    cidr: String,
    /// The podCIDR's first address (flannel's `.0`), the next hop on the VXLAN device.
    gw: String,
}

fn node_infos(c: &Cluster) -> Result<Vec<NodeInfo>> {
    let nodes = get_json(c, &["get", "nodes"])?;
    items(&nodes["items"])
        .iter()
        .map(|n| {
            let name = n["metadata"]["name"].as_str().context("name")?.to_string();
            let ip = items(&n["status"]["addresses"])
                .iter()
                .find(|a| a["type"] == "InternalIP")
                .and_then(|a| a["address"].as_str())
                .with_context(|| format!("{name} has no InternalIP"))?
                .to_string();
            let cidr = n["spec"]["podCIDR"]
                .as_str()
                .with_context(|| format!("{name} has no podCIDR"))?
                .to_string();
            let gw = cidr.split('/').next().unwrap_or("").to_string();
            Ok(NodeInfo { name, ip, cidr, gw })
        })
        .collect()
}

/// On every node of `nodes`, the VXLAN device has exactly one FDB entry (the peer's
/// `kins.1` MAC, `dst` its node IP), one permanent neighbour entry (its `.0`, that MAC)
/// and one route (its podCIDR via its `.0`, onlink) per other node of `nodes`.
fn vxlan_peers(c: &Cluster, nodes: &[NodeInfo]) -> Result<()> {
    let mut macs = BTreeMap::new();
    for n in nodes {
        let dev = items(&node_json(
            c,
            &n.name,
            &["ip", "-j", "link", "show", VXLAN_DEV],
        )?)
        .into_iter()
        .next()
        .with_context(|| format!("no {VXLAN_DEV} on {}", n.name))?;
        let mac = dev["address"].as_str().context("no MAC")?.to_string();
        macs.insert(n.name.clone(), mac);
    }
    for n in nodes {
        let others: Vec<&NodeInfo> = nodes.iter().filter(|o| o.name != n.name).collect();
        let fdb = items(&node_json(
            c,
            &n.name,
            &["bridge", "-j", "fdb", "show", "dev", VXLAN_DEV],
        )?);
        let dsts: BTreeSet<&str> = fdb.iter().filter_map(|e| e["dst"].as_str()).collect();
        let want: BTreeSet<&str> = others.iter().map(|o| o.ip.as_str()).collect();
        ensure!(
            dsts == want,
            "FDB of {VXLAN_DEV} on {}: dst {dsts:?}, want {want:?}: {fdb:?}",
            n.name
        );
        let neigh = items(&node_json(
            c,
            &n.name,
            &["ip", "-j", "neigh", "show", "dev", VXLAN_DEV],
        )?);
        let ndsts: BTreeSet<&str> = neigh.iter().filter_map(|e| e["dst"].as_str()).collect();
        let want_gw: BTreeSet<&str> = others.iter().map(|o| o.gw.as_str()).collect();
        ensure!(
            ndsts == want_gw,
            "neighbours of {VXLAN_DEV} on {}: {ndsts:?}, want {want_gw:?}",
            n.name
        );
        let routes: Vec<Value> = items(&node_json(c, &n.name, &["ip", "-j", "route", "show"])?)
            .into_iter()
            .filter(|r| r["dev"] == VXLAN_DEV)
            .collect();
        let rdsts: BTreeSet<&str> = routes.iter().filter_map(|r| r["dst"].as_str()).collect();
        let want_cidr: BTreeSet<&str> = others.iter().map(|o| o.cidr.as_str()).collect();
        ensure!(
            rdsts == want_cidr,
            "routes over {VXLAN_DEV} on {}: {rdsts:?}, want {want_cidr:?}",
            n.name
        );
        for o in &others {
            let mac = &macs[&o.name];
            ensure!(
                fdb.iter()
                    .any(|e| e["dst"] == o.ip.as_str() && e["mac"] == mac.as_str()),
                "FDB on {}: no {mac} dst {}: {fdb:?}",
                n.name,
                o.ip
            );
            let e = neigh
                .iter()
                .find(|e| e["dst"] == o.gw.as_str())
                .context("neighbour")?;
            ensure!(
                e["lladdr"] == mac.as_str() && items(&e["state"]).iter().any(|s| s == "PERMANENT"),
                "neighbour {} on {}: {e}, want lladdr {mac} PERMANENT",
                o.gw,
                n.name
            );
            let r = routes
                .iter()
                .find(|r| r["dst"] == o.cidr.as_str())
                .context("route")?;
            ensure!(
                r["gateway"] == o.gw.as_str() && items(&r["flags"]).iter().any(|f| f == "onlink"),
                "route to {} on {}: {r}, want via {} onlink",
                o.cidr,
                n.name,
                o.gw
            );
        }
    }
    Ok(())
}

// ---- (c) hostPort ----

/// A web pod whose port 8080 is also `host_port` on its node (`extra` merged into the
/// port: protocol, hostIP); `node` None leaves it to the scheduler, with `selector` as
/// its nodeSelector when given.
fn host_port_pod(
    name: &str,
    node: Option<&str>,
    host_port: u16,
    extra: Value,
    selector: Option<&str>,
) -> Result<String> {
    let mut pod: Value = serde_json::from_str(&web_pod(name, node.unwrap_or(""), json!({})))?;
    let mut port = json!({"containerPort": 8080, "hostPort": host_port});
    if let (Some(p), Some(e)) = (port.as_object_mut(), extra.as_object()) {
        p.extend(e.clone());
    }
    pod["spec"]["containers"][0]["ports"] = json!([port]);
    let spec = pod["spec"].as_object_mut().context("spec")?;
    if node.is_none() {
        spec.remove("nodeName");
    }
    if let Some(n) = selector {
        spec.insert("nodeSelector".into(), json!({"kubernetes.io/hostname": n}));
    }
    Ok(pod.to_string())
}

/// Pods with hostPort 18080 on both nodes answer from the host at their node's IP; once
/// one is deleted its node refuses that port again.
fn host_port_from_the_host(c: &Cluster, n1: &str, n2: &str) -> Result<()> {
    for (name, node) in [("hp-1", n1), ("hp-2", n2)] {
        create(c, &host_port_pod(name, Some(node), 18080, json!({}), None)?)?;
    }
    for (name, node) in [("hp-1", n1), ("hp-2", n2)] {
        wait_running(c, name)?;
        let url = format!("http://{}:18080/cgi-bin/name", node_ip(c, node)?);
        let mut last = (0, String::new());
        wait_for(&format!("{name}'s hostPort at {url}"), 30, || {
            last = curl_host(&url)?;
            Ok((last.0 == 0 && last.1 == name).then_some(()))
        })
        .with_context(|| format!("last answer {last:?}"))?;
    }
    kubectl(
        c,
        &[
            "delete",
            "pod",
            "hp-1",
            "hp-2",
            "--wait=true",
            "--timeout=120s",
        ],
    )?;
    let url = format!("http://{}:18080/healthz", node_ip(c, n1)?);
    wait_for(
        "the hostPort to be refused once its pod is gone",
        30,
        || Ok((curl_host(&url)?.0 == 7).then_some(())),
    )?;
    Ok(())
}

/// The scheduler keeps hostPorts apart as Kubernetes' NodePorts filter does: the same
/// port and protocol on the same address family of a node fit once (a second pod goes to
/// the other node, a third stays Pending), another protocol fits, and distinct hostIPs
/// fit on one node while 0.0.0.0 conflicts with any of them.
fn host_ports_in_scheduling(c: &Cluster) -> Result<()> {
    let (n1, n2) = workers(c);
    let bound = |name: &str| -> Result<String> {
        wait_for(&format!("{name} to be bound"), 60, || {
            let p = get_json(c, &["get", "pod", name])?;
            Ok(p["spec"]["nodeName"].as_str().map(str::to_string))
        })
    };
    let unschedulable = |name: &str| -> Result<()> {
        let p = wait_for(&format!("{name} to be unschedulable"), 60, || {
            let p = get_json(c, &["get", "pod", name])?;
            let cond = items(&p["status"]["conditions"])
                .into_iter()
                .find(|x| x["type"] == "PodScheduled" && x["status"] == "False");
            Ok(cond
                .filter(|x| x["reason"] == "Unschedulable")
                .map(|x| (p, x)))
        })?;
        ensure!(
            p.0["spec"]["nodeName"].is_null(),
            "{name} was bound: {}",
            p.0["spec"]
        );
        let msg = p.1["message"].as_str().unwrap_or("");
        ensure!(
            msg.contains("free ports"),
            "{name}: the message does not name the ports: {msg:?}"
        );
        Ok(())
    };
    create(
        c,
        &host_port_pod("hs-a", Some(&n1), 18090, json!({}), None)?,
    )?;
    wait_running(c, "hs-a")?;
    create(c, &host_port_pod("hs-b", None, 18090, json!({}), None)?)?;
    let node = bound("hs-b")?;
    ensure!(
        node == n2,
        "hs-b shares hostPort 18090 with hs-a on {n1}, but went to {node}"
    );
    create(c, &host_port_pod("hs-c", None, 18090, json!({}), None)?)?;
    unschedulable("hs-c")?;
    create(
        c,
        &host_port_pod("hs-udp", None, 18090, json!({"protocol": "UDP"}), None)?,
    )?;
    bound("hs-udp")?;
    // Distinct host addresses on one node: both fit; the wildcard then does not.
    let ip1 = node_ip(c, &n1)?;
    create(
        c,
        &host_port_pod("hs-ip1", None, 18091, json!({"hostIP": ip1}), Some(&n1))?,
    )?;
    create(
        c,
        &host_port_pod(
            "hs-lo",
            None,
            18091,
            json!({"hostIP": "127.0.0.1"}),
            Some(&n1),
        )?,
    )?;
    for name in ["hs-ip1", "hs-lo"] {
        let node = bound(name)?;
        ensure!(node == n1, "{name} went to {node}, not {n1}");
    }
    create(
        c,
        &host_port_pod("hs-any", None, 18091, json!({}), Some(&n1))?,
    )?;
    unschedulable("hs-any")?;
    // The port is freed with its pod: the pending pod takes it.
    kubectl(
        c,
        &["delete", "pod", "hs-a", "--wait=true", "--timeout=120s"],
    )?;
    let node = bound("hs-c")?;
    ensure!(node == n1, "hs-c went to {node} once {n1}'s port was free");
    Ok(())
}

// ---- (e) churn ----

/// What the pod network leaves in a node's namespace, by kind, normalized (no counters,
/// no timers), sorted.
type Snapshot = BTreeMap<&'static str, BTreeSet<String>>;

/// `ip` JSON objects as stable strings: sorted keys without the volatile ones.
fn stable(v: &Value, skip: &[&str]) -> String {
    match v.as_object() {
        Some(o) => {
            let m: BTreeMap<&String, &Value> = o
                .iter()
                .filter(|(k, _)| !skip.contains(&k.as_str()))
                .collect();
            serde_json::to_string(&m).unwrap_or_default()
        }
        None => v.to_string(),
    }
}

/// A ruleset line without counters and timers: `packets N bytes N`, `expires T`, and
/// iptables-save's `[packets:bytes]`.
fn without_counters(line: &str) -> String {
    let mut out = Vec::new();
    let mut words = line.split_whitespace();
    while let Some(w) = words.next() {
        match w {
            "packets" | "bytes" | "expires" => {
                words.next();
            }
            _ if w.starts_with('[') && w.ends_with(']') && w.contains(':') => out.push("[]"),
            _ => out.push(w),
        }
    }
    out.join(" ")
}

fn snapshot(c: &Cluster, node: &str) -> Result<Snapshot> {
    let mut s = Snapshot::new();
    let links = items(&node_json(c, node, &["ip", "-j", "link", "show"])?);
    s.insert(
        "links",
        links
            .iter()
            .map(|l| format!("{} mtu {}", l["ifname"].as_str().unwrap_or("?"), l["mtu"]))
            .collect(),
    );
    let addrs = items(&node_json(c, node, &["ip", "-j", "addr", "show"])?);
    s.insert(
        "addresses",
        addrs
            .iter()
            .flat_map(|l| {
                let name = l["ifname"].as_str().unwrap_or("?").to_string();
                items(&l["addr_info"]).into_iter().map(move |a| {
                    format!(
                        "{name} {} {}/{}",
                        a["family"].as_str().unwrap_or(""),
                        a["local"].as_str().unwrap_or(""),
                        a["prefixlen"]
                    )
                })
            })
            .collect(),
    );
    let mut routes = BTreeSet::new();
    for family in ["-4", "-6"] {
        for r in items(&node_json(
            c,
            node,
            &["ip", family, "-j", "route", "show", "table", "all"],
        )?) {
            routes.insert(stable(&r, &["expires", "cache", "age"]));
        }
    }
    s.insert("routes", routes);
    // (Set and map elements are printed several to a line, in no promised order: one
    // entry per element.)
    let nft = node_exec(c, node, &["nft", "list", "ruleset"])?;
    s.insert(
        "nftables",
        nft.lines()
            .flat_map(|l| l.split(','))
            .map(without_counters)
            .filter(|l| !l.is_empty())
            .collect(),
    );
    let ipt = node_exec(c, node, &["iptables-save"])?;
    s.insert(
        "iptables",
        ipt.lines()
            .filter(|l| !l.starts_with('#'))
            .map(without_counters)
            .filter(|l| !l.is_empty())
            .collect(),
    );
    Ok(s)
}

/// What differs between two snapshots, for a failure message.
fn diff(before: &Snapshot, after: &Snapshot) -> String {
    let mut out = String::new();
    for (kind, was) in before {
        let empty = BTreeSet::new();
        let now = after.get(kind).unwrap_or(&empty);
        for l in was.difference(now) {
            out.push_str(&format!("\n  {kind} - {l}"));
        }
        for l in now.difference(was) {
            out.push_str(&format!("\n  {kind} + {l}"));
        }
    }
    out
}

/// Files named like an IPv4 address under `dir` (host-local's allocations), recursively,
/// not entering pods' directories.
fn ip_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let Ok(t) = e.file_type() else { continue };
        let name = e.file_name().to_string_lossy().into_owned();
        if t.is_dir() && name != "pods" && name != "containers" {
            ip_files(&e.path(), out);
        } else if t.is_file() && name.parse::<Ipv4Addr>().is_ok() {
            out.push(e.path());
        }
    }
}

/// IPAM allocations of a node: (files under its run directory, the files anywhere under
/// the cluster's run directory or /var/lib/cni/networks that name one of `uids`).
fn ipam_allocations(c: &Cluster, node: &str, uids: &[String]) -> (usize, Vec<PathBuf>) {
    let mut local = Vec::new();
    ip_files(
        &Path::new("/run/kins")
            .join(&c.name)
            .join("nodes")
            .join(node),
        &mut local,
    );
    let mut all = Vec::new();
    ip_files(&Path::new("/run/kins").join(&c.name), &mut all);
    ip_files(Path::new("/var/lib/cni/networks"), &mut all);
    all.sort();
    all.dedup();
    let naming: Vec<PathBuf> = all
        .into_iter()
        .filter(|p| {
            std::fs::read_to_string(p)
                .map(|t| uids.iter().any(|u| t.contains(u.as_str())))
                .unwrap_or(false)
        })
        .collect();
    (local.len(), naming)
}

/// A churn pod. It has a grace period (and leaves at once on SIGTERM): a pod whose grace
/// period is 0 is deleted from the API at once, as in Kubernetes, and torn down by its
/// agent afterwards; with one, the agent deletes the object after the teardown (CNI DEL
/// included), so `kubectl delete --wait` returns when the network is gone.
fn churn_pod(name: &str, node: &str, round: usize) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {"churn": format!("r{round}")}},
        "spec": {"nodeName": node, "terminationGracePeriodSeconds": 10,
                 "containers": [{"name": "c", "image": "busybox", "command":
                     ["sh", "-c", "trap 'exit 0' TERM; sleep 3600 & wait"]}]}})
}

/// Waits until the pods `node`'s agent keeps state for (its `pods/<uid>` directories,
/// removed last in a teardown) are the pods the API binds to it: pods deleted with a
/// grace period of 0 (as the other checks' pods are) are gone from the API before their
/// agent has torn them down.
fn wait_node_settled(c: &Cluster, node: &str) -> Result<()> {
    let dir = Path::new("/run/kins")
        .join(&c.name)
        .join("nodes")
        .join(node)
        .join("pods");
    let mut last = (BTreeSet::new(), BTreeSet::new());
    wait_for(
        &format!("{node}'s deleted pods to be torn down"),
        120,
        || {
            let on_disk: BTreeSet<String> = std::fs::read_dir(&dir)
                .with_context(|| format!("reading {}", dir.display()))?
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            let pods = get_json(
                c,
                &[
                    "get",
                    "pods",
                    "-A",
                    "--field-selector",
                    &format!("spec.nodeName={node}"),
                ],
            )?;
            let bound: BTreeSet<String> = items(&pods["items"])
                .iter()
                .filter_map(|p| p["metadata"]["uid"].as_str().map(str::to_string))
                .collect();
            let same = on_disk == bound;
            last = (on_disk, bound);
            Ok(same.then_some(()))
        },
    )
    .with_context(|| {
        format!(
            "pod state on disk {:?}, pods of the API {:?}",
            last.0, last.1
        )
    })
}

/// CHURN_PODS pods created (CHURN_BATCH at a time, each batch Running) and deleted on
/// `node`: its kernel objects and IPAM allocations come back to what they were, and the
/// agent logged each pod's CNI ADD.
fn churn_returns_to_baseline(c: &Cluster, node: &str) -> Result<()> {
    wait_node_settled(c, node)?;
    let before = snapshot(c, node)?;
    let (local_before, _) = ipam_allocations(c, node, &[]);
    let mut uids = Vec::new();
    let mut names = Vec::new();
    // Whether the allocations were found (by the pods' ids, or as new files of the node).
    let mut ipam_found = None;
    for round in 0..CHURN_PODS / CHURN_BATCH {
        let batch: Vec<String> = (0..CHURN_BATCH)
            .map(|i| format!("churn-{round}-{i}"))
            .collect();
        let list = json!({"apiVersion": "v1", "kind": "List",
            "items": batch.iter().map(|n| churn_pod(n, node, round)).collect::<Vec<_>>()});
        create(c, &list.to_string())?;
        let mut round_uids = Vec::new();
        for name in &batch {
            let pod = wait_running(c, name)?;
            round_uids.push(pod["metadata"]["uid"].as_str().context("uid")?.to_string());
        }
        if round == 0 {
            let (local, naming) = ipam_allocations(c, node, &round_uids);
            ipam_found = if naming.len() == CHURN_BATCH {
                Some(true)
            } else if naming.is_empty() && local == local_before + CHURN_BATCH {
                Some(false)
            } else if naming.is_empty() && local == local_before {
                eprintln!("{}: IPAM allocation files not found; not checked", c.name);
                None
            } else {
                bail!(
                    "{CHURN_BATCH} running pods, but {} allocation files name them and the node has {local} (was {local_before}): {naming:?}",
                    naming.len()
                );
            };
        }
        uids.extend(round_uids);
        names.extend(batch);
        kubectl(
            c,
            &[
                "delete",
                "pod",
                "-l",
                &format!("churn=r{round}"),
                "--wait=true",
                "--timeout=120s",
            ],
        )?;
    }
    ensure!(uids.len() == CHURN_PODS, "cycled {} pods", uids.len());
    wait_node_settled(c, node)?;
    let mut last = Snapshot::new();
    let back = wait_for("the node's network to return to its baseline", 30, || {
        last = snapshot(c, node)?;
        Ok((last == before).then_some(()))
    });
    back.with_context(|| format!("after {CHURN_PODS} pods:{}", diff(&before, &last)))?;
    let (local, naming) = ipam_allocations(c, node, &uids);
    if ipam_found.is_some() {
        ensure!(
            local == local_before && naming.is_empty(),
            "IPAM after {CHURN_PODS} pods: {local} files on the node (was {local_before}), still naming deleted pods: {naming:?}"
        );
    }
    // The agent logged every pod's CNI ADD with its duration.
    let ready = network_ready(c, node)?;
    for name in &names {
        let line = ready.iter().find(|r| &r.pod == name);
        ensure!(
            line.is_some_and(|r| r.add_ms.is_finite() && r.add_ms >= 0.0),
            "no `pod network ready` line with add_ms for {name} in {}",
            kins_tests::cni::agent_log(c, node).display()
        );
    }
    Ok(())
}

// ---- (f) vxlan: nodes come and go ----

fn vxlan_nodes_come_and_go(c: &Cluster) -> Result<()> {
    let before: BTreeSet<String> = node_infos(c)?.into_iter().map(|n| n.name).collect();
    ok(c.kins(&["node", "add", "--name", &c.name])?)?;
    let new = wait_for("the new node", 60, || {
        let now: Vec<NodeInfo> = node_infos(c)?;
        Ok(now.into_iter().find(|n| !before.contains(&n.name)))
    })?;
    let all = wait_for("the new node's VXLAN peers everywhere", 60, || {
        let nodes = node_infos(c)?;
        vxlan_peers(c, &nodes)?;
        Ok(Some(nodes))
    })?;
    ensure!(all.len() == 3, "nodes: {all:?}");
    // A pod on the new node answers pods of the old ones, seeing their own IPs.
    create(c, &web_pod("vx-new", &new.name, json!({"app": "vx"})))?;
    let pod = wait_running(c, "vx-new")?;
    let ip = pod_ip(&pod)?;
    ensure!(
        in_cidr(&ip, &new.cidr)?,
        "vx-new has {ip}, outside {}",
        new.cidr
    );
    ensure!(
        pod_mtu(c, &pod)? == NODE_MTU - VXLAN_OVERHEAD,
        "vx-new's MTU: {}",
        pod_link(c, &pod, "eth0")?
    );
    for client in ["pp-cli-1", "pp-cli-2"] {
        let cl = get_json(c, &["get", "pod", client])?;
        let cip = pod_ip(&cl)?;
        let (code, seen) = curl_in(c, &cl, &format!("http://{ip}:8080/cgi-bin/ip"))?;
        ensure!(
            code == 0 && strip_mapped(&seen) == cip,
            "{client} → vx-new on {}: curl exit {code}, the server saw {seen:?}, want {cip}",
            new.name
        );
    }
    kubectl(
        c,
        &["delete", "pod", "vx-new", "--wait=true", "--timeout=120s"],
    )?;
    ok(c.kins(&["node", "rm", &new.name, "--name", &c.name])?)?;
    wait_for("the removed node's VXLAN entries to go", 60, || {
        let nodes = node_infos(c)?;
        ensure!(
            !nodes.iter().any(|n| n.name == new.name),
            "{} is still a Node",
            new.name
        );
        vxlan_peers(c, &nodes)?;
        Ok(Some(()))
    })?;
    Ok(())
}

// ---- bad choices ----

/// `kins up --cni OTHER` on an existing cluster is refused (exit 2), and the cluster
/// keeps its plugin.
fn another_plugin_needs_a_new_cluster(c: &Cluster) -> Result<()> {
    let port = c.port.to_string();
    let out = c.kins(&["up", "--name", &c.name, "--api-port", &port, "--cni", "ptp"])?;
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    ensure!(
        out.status.code() == Some(2),
        "kins up --cni ptp on a kins cluster: {:?} {err}",
        out.status
    );
    ensure!(
        err.contains("needs a new cluster"),
        "kins up --cni ptp on a kins cluster said {err:?}"
    );
    reported_plugin(c, "kins")
}

#[test]
fn bad_plugin_choices() -> Result<()> {
    // An unknown name: usage error, listing the valid ones; no cluster is made.
    let base = tempfile::Builder::new().prefix("kins-test-").tempdir()?;
    let port = kins_tests::free_port().to_string();
    let out = Command::new(kins_bin())
        .arg("--data-dir")
        .arg(base.path())
        .args(["up", "--name", "cn-bad", "--nodes", "0", "--dns=false"])
        .args(["--api-port", &port, "--cni", "nosuch"])
        .stdin(Stdio::null())
        .output()?;
    if out.status.success() {
        let _ = Command::new(kins_bin())
            .arg("--data-dir")
            .arg(base.path())
            .args(["down", "--name", "cn-bad", "--purge"])
            .output();
    }
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(
        out.status.code() == Some(2),
        "kins up --cni nosuch: {:?} {err}",
        out.status
    );
    for p in PLUGINS {
        ensure!(
            err.contains(p),
            "kins up --cni nosuch does not list {p}: {err}"
        );
    }

    // A conflist whose second plugin does not exist: the first (the reference bridge)
    // makes a veth and takes an address, then the chain fails.
    let conf_dir = tempfile::Builder::new()
        .prefix("kins-test-cni-")
        .tempdir()?;
    let ipam_dir = conf_dir.path().join("ipam");
    let conf = conf_dir.path().join("bad.conflist");
    std::fs::write(
        &conf,
        json!({"cniVersion": "1.0.0", "name": "badchain", "plugins": [
            {"type": "bridge", "bridge": "cnitest0", "isGateway": true,
             "ipam": {"type": "host-local", "subnet": "10.250.0.0/24", "dataDir": ipam_dir}},
            {"type": "nosuch-plugin"}]})
        .to_string(),
    )?;
    let conf_s = conf.to_str().context("path")?;
    let c = Cluster::up_with("cn-conf", &["--nodes", "1", "--cni-conf", conf_s])?;
    let node = "cn-conf-worker";
    let veths = |c: &Cluster| -> Result<BTreeSet<String>> {
        Ok(items(&node_json(
            c,
            node,
            &["ip", "-j", "link", "show", "type", "veth"],
        )?)
        .iter()
        .filter_map(|l| l["ifname"].as_str().map(str::to_string))
        .collect())
    };
    let veths_before = veths(&c)?;
    create(
        &c,
        &json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "bad"},
            "spec": {"nodeName": node, "terminationGracePeriodSeconds": 0,
                     "containers": [{"name": "c", "image": "busybox", "command": ["sleep", "3600"]}]}})
        .to_string(),
    )?;
    let event = wait_for("a FailedCreatePodSandBox event", 60, || {
        let ev = get_json(
            &c,
            &[
                "get",
                "events",
                "--field-selector",
                "involvedObject.name=bad,reason=FailedCreatePodSandBox",
            ],
        )?;
        Ok(items(&ev["items"]).into_iter().next())
    })?;
    let msg = event["message"].as_str().unwrap_or("");
    ensure!(
        event["type"] == "Warning" && msg.contains("nosuch-plugin"),
        "the event does not name the plugin: {event}"
    );
    let pod = get_json(&c, &["get", "pod", "bad"])?;
    let waiting = &pod["status"]["containerStatuses"][0]["state"]["waiting"]["reason"];
    ensure!(
        pod["status"]["phase"] == "Pending"
            && (waiting.is_null() || waiting == "ContainerCreating"),
        "the pod should wait in ContainerCreating: {}",
        pod["status"]
    );
    kubectl(
        &c,
        &["delete", "pod", "bad", "--wait=true", "--timeout=120s"],
    )?;
    let mut last = BTreeSet::new();
    wait_for("the failed pod's veth to go", 30, || {
        last = veths(&c)?;
        Ok((last == veths_before).then_some(()))
    })
    .with_context(|| format!("veths {last:?}, before the pod {veths_before:?}"))?;
    let mut left = Vec::new();
    ip_files(&ipam_dir, &mut left);
    ensure!(left.is_empty(), "addresses still allocated: {left:?}");
    Ok(())
}

//! The node's share of the pod network: a route to every other node's pod CIDR, either via
//! that node's IP (host-gw) or through the VXLAN device `kins.1` (the vxlan backend, as
//! flannel builds it: via the other node's VTEP address, with a permanent neighbour entry
//! for its VTEP MAC and an FDB entry sending that MAC to the node's IP); never NAT between
//! pods. Also an unreachable route for the rest of the cluster CIDR, masquerade for pod
//! traffic leaving the cluster CIDR, and the node's CNI configuration list, written once the
//! pod CIDR is known. Kept in sync with the Nodes by a watch.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use kube::runtime::watcher;
use kube::Api;
use tokio::io::AsyncWriteExt;

use crate::cni::{Backend, NodeCni, VXLAN_DEV};
use crate::{AgentError, Config};

/// Routing protocol number that marks the routes kins owns.
pub const ROUTE_PROTO: &str = "77";

/// The annotation holding a node's VTEP MAC (flannel's `backend-data`).
pub const VTEP_ANNOTATION: &str = "kins.dev/vtep-mac";

/// A node as the network needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub pod_cidr: String,
    pub ip: String,
    /// Its VXLAN device's MAC, once its agent published it.
    pub vtep_mac: Option<String>,
}

/// One route kins owns: destination, gateway, and the device for onlink routes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Route {
    pub dst: String,
    pub via: String,
    pub dev: Option<String>,
}

/// What this node's kernel should hold for the other nodes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Desired {
    pub routes: Vec<Route>,
    /// VTEP address → VTEP MAC (permanent neighbour entries on the VXLAN device).
    pub neigh: Vec<(String, String)>,
    /// VTEP MAC → node IP (permanent FDB entries on the VXLAN device).
    pub fdb: Vec<(String, String)>,
}

/// The first address of a pod CIDR (`10.244.2.0/24` → `10.244.2.0`): the node's VTEP.
fn vtep_addr(cidr: &str) -> String {
    cidr.split('/').next().unwrap_or("").to_string()
}

/// The kernel state for `peers` other than `me`, for a backend (pure).
pub fn desired(me: &str, peers: &BTreeMap<String, Peer>, backend: Backend) -> Desired {
    let mut d = Desired::default();
    for (name, p) in peers {
        if name == me {
            continue;
        }
        match backend {
            Backend::HostGw => d.routes.push(Route {
                dst: p.pod_cidr.clone(),
                via: p.ip.clone(),
                dev: None,
            }),
            Backend::Vxlan => {
                // Until its agent published its MAC, the node is not reachable.
                let Some(mac) = &p.vtep_mac else { continue };
                let gw = vtep_addr(&p.pod_cidr);
                d.routes.push(Route {
                    dst: p.pod_cidr.clone(),
                    via: gw.clone(),
                    dev: Some(VXLAN_DEV.into()),
                });
                d.neigh.push((gw, mac.clone()));
                d.fdb.push((mac.clone(), p.ip.clone()));
            }
        }
    }
    d.routes.sort();
    d.neigh.sort();
    d.fdb.sort();
    d
}

/// The VTEP MAC of a node: fixed by its IP (locally administered, `02:4b` = "K"), so it
/// survives agent restarts and re-creation of the device.
pub fn vtep_mac(ip: std::net::Ipv4Addr) -> String {
    let o = ip.octets();
    format!("02:4b:{:02x}:{:02x}:{:02x}:{:02x}", o[0], o[1], o[2], o[3])
}

fn peer_of(n: &Node) -> Option<(String, Peer)> {
    let name = n.metadata.name.clone()?;
    let pod_cidr = n.spec.as_ref()?.pod_cidr.clone()?;
    let ip = n
        .status
        .as_ref()?
        .addresses
        .as_ref()?
        .iter()
        .find(|a| a.type_ == "InternalIP")?
        .address
        .clone();
    let vtep_mac = n
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(VTEP_ANNOTATION))
        .cloned();
    Some((
        name,
        Peer {
            pod_cidr,
            ip,
            vtep_mac,
        },
    ))
}

async fn run_cmd(program: &str, args: &[&str], input: Option<&str>) -> Result<String, AgentError> {
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(crate::io(format!("running {program}")))?;
    if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
        stdin
            .write_all(text.as_bytes())
            .await
            .map_err(crate::io(format!("writing to {program}")))?;
    }
    let out = child
        .wait_with_output()
        .await
        .map_err(crate::io(format!("running {program}")))?;
    if !out.status.success() {
        return Err(AgentError::Other(format!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Routes with our protocol: destination → gateway ("" for the unreachable route).
async fn current_routes() -> Result<BTreeMap<String, String>, AgentError> {
    let out = run_cmd(
        "ip",
        &["-j", "-4", "route", "show", "proto", ROUTE_PROTO],
        None,
    )
    .await?;
    let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_default();
    Ok(v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| {
            Some((
                r["dst"].as_str()?.to_string(),
                r["gateway"].as_str().unwrap_or("").to_string(),
            ))
        })
        .collect())
}

async fn sync(want: &Desired, backend: Backend) -> Result<(), AgentError> {
    let have = current_routes().await?;
    for r in &want.routes {
        if have.get(&r.dst) != Some(&r.via) {
            let mut args = vec!["route", "replace", &r.dst, "via", &r.via];
            if let Some(dev) = &r.dev {
                args.extend(["dev", dev, "onlink"]);
            }
            args.extend(["proto", ROUTE_PROTO]);
            run_cmd("ip", &args, None).await?;
            tracing::info!(dst = %r.dst, via = %r.via, "route added");
        }
    }
    for (dst, via) in &have {
        if via.is_empty() {
            continue; // the unreachable route for the cluster CIDR
        }
        if !want.routes.iter().any(|r| &r.dst == dst) {
            run_cmd("ip", &["route", "del", dst, "proto", ROUTE_PROTO], None).await?;
            tracing::info!(dst = %dst, "route removed");
        }
    }
    if backend == Backend::Vxlan {
        sync_vxlan_entries(want).await?;
    }
    Ok(())
}

/// The permanent neighbour and FDB entries of the VXLAN device, as `want` says.
async fn sync_vxlan_entries(want: &Desired) -> Result<(), AgentError> {
    let list = |v: String| -> Vec<serde_json::Value> {
        serde_json::from_str::<serde_json::Value>(&v)
            .ok()
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_default()
    };
    let neigh = list(run_cmd("ip", &["-j", "neigh", "show", "dev", VXLAN_DEV], None).await?);
    let have_neigh: Vec<(String, String)> = neigh
        .iter()
        .filter_map(|n| {
            Some((
                n["dst"].as_str()?.to_string(),
                n["lladdr"].as_str()?.to_string(),
            ))
        })
        .collect();
    for (ip, mac) in &want.neigh {
        if !have_neigh.contains(&(ip.clone(), mac.clone())) {
            run_cmd(
                "ip",
                &[
                    "neigh",
                    "replace",
                    ip,
                    "lladdr",
                    mac,
                    "dev",
                    VXLAN_DEV,
                    "nud",
                    "permanent",
                ],
                None,
            )
            .await?;
        }
    }
    for (ip, _) in &have_neigh {
        if !want.neigh.iter().any(|(w, _)| w == ip) {
            run_cmd("ip", &["neigh", "del", ip, "dev", VXLAN_DEV], None).await?;
        }
    }
    let fdb = list(run_cmd("bridge", &["-j", "fdb", "show", "dev", VXLAN_DEV], None).await?);
    let have_fdb: Vec<(String, String)> = fdb
        .iter()
        .filter_map(|f| {
            Some((
                f["mac"].as_str()?.to_string(),
                f["dst"].as_str()?.to_string(),
            ))
        })
        .collect();
    for (mac, ip) in &want.fdb {
        if !have_fdb.contains(&(mac.clone(), ip.clone())) {
            run_cmd(
                "bridge",
                &[
                    "fdb",
                    "replace",
                    mac,
                    "dev",
                    VXLAN_DEV,
                    "dst",
                    ip,
                    "self",
                    "permanent",
                ],
                None,
            )
            .await?;
            tracing::info!(mac = %mac, dst = %ip, "VXLAN FDB entry added");
        }
    }
    for (mac, ip) in &have_fdb {
        if !want.fdb.contains(&(mac.clone(), ip.clone())) {
            run_cmd(
                "bridge",
                &["fdb", "del", mac, "dev", VXLAN_DEV, "dst", ip, "self"],
                None,
            )
            .await?;
            tracing::info!(mac = %mac, dst = %ip, "VXLAN FDB entry removed");
        }
    }
    Ok(())
}

/// The VXLAN device of this node (VNI 1, UDP 8472, no learning: the agent fills the FDB),
/// 50 bytes below eth0's MTU, up; its address (the VTEP, the pod CIDR's first address) is
/// set once the pod CIDR is known.
async fn ensure_vxlan(cfg: &Config, pod_cidr: Option<&str>) -> Result<(), AgentError> {
    let mac = vtep_mac(cfg.node_ip);
    let ip = cfg.node_ip.to_string();
    if crate::cni::link_mtu(VXLAN_DEV).is_none() {
        run_cmd(
            "ip",
            &[
                "link",
                "add",
                VXLAN_DEV,
                "address",
                &mac,
                "type",
                "vxlan",
                "id",
                "1",
                "local",
                &ip,
                "dev",
                "eth0",
                "dstport",
                "8472",
                "nolearning",
            ],
            None,
        )
        .await?;
        tracing::info!(dev = VXLAN_DEV, mac = %mac, "VXLAN device created");
    }
    let mtu = crate::cni::link_mtu("eth0")
        .unwrap_or(1500)
        .saturating_sub(crate::cni::VXLAN_OVERHEAD)
        .to_string();
    run_cmd("ip", &["link", "set", VXLAN_DEV, "mtu", &mtu, "up"], None).await?;
    if let Some(cidr) = pod_cidr {
        let addr = format!("{}/32", vtep_addr(cidr));
        run_cmd("ip", &["addr", "replace", &addr, "dev", VXLAN_DEV], None).await?;
    }
    Ok(())
}

/// Publishes this node's VTEP MAC on its Node object (merge patch; a no-op when set).
async fn publish_vtep(client: &kube::Client, cfg: &Config) -> Result<(), AgentError> {
    let nodes: Api<Node> = Api::all(client.clone());
    let patch =
        serde_json::json!({"metadata": {"annotations": {VTEP_ANNOTATION: vtep_mac(cfg.node_ip)}}});
    nodes
        .patch(
            &cfg.node_name,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&patch),
        )
        .await?;
    Ok(())
}

/// The nftables ruleset for pod egress, applied as one transaction: masquerade when it
/// leaves the cluster CIDR; and with `only_to` (the lab, whose host routes nothing out),
/// pod traffic to anything outside the cluster CIDR and that network is refused at once
/// (ICMP admin-prohibited) instead of vanishing at the host: a forwarded DNS query or a
/// `curl` to the outside fails in a moment, not after a timeout.
pub fn masquerade_ruleset(pod_cidr: &str, cluster_cidr: &str, only_to: Option<&str>) -> String {
    let mut s = format!(
        "table ip kins_masq\ndelete table ip kins_masq\ntable ip kins_masq {{\n  chain postrouting {{\n    type nat hook postrouting priority srcnat; policy accept;\n    ip saddr {pod_cidr} ip daddr != {cluster_cidr} masquerade comment \"pod egress leaves the cluster CIDR\"\n  }}\n"
    );
    if let Some(net) = only_to {
        s.push_str(&format!(
            "  chain forward {{\n    type filter hook forward priority filter; policy accept;\n    ct state new ip saddr {pod_cidr} ip daddr != {{ {cluster_cidr}, {net} }} reject with icmp type admin-prohibited comment \"nothing leaves the lab: refused at once\"\n  }}\n"
        ));
    }
    s.push_str("}\n");
    s
}

/// Watches Nodes and keeps routes and masquerade in sync; publishes this node's podCIDR.
pub async fn run(
    client: kube::Client,
    cfg: Arc<Config>,
    cni: Arc<NodeCni>,
    pod_cidr: tokio::sync::watch::Sender<Option<String>>,
) {
    let backend = cni.plugin.backend();
    let mut vtep_published = false;
    let mut conf_for: Option<String> = None;
    if let Err(e) = run_cmd(
        "ip",
        &[
            "route",
            "replace",
            "unreachable",
            &cfg.cluster_cidr,
            "proto",
            ROUTE_PROTO,
        ],
        None,
    )
    .await
    {
        tracing::warn!(error = %e, "unreachable route for the cluster CIDR");
    }
    let nodes: Api<Node> = Api::all(client.clone());
    let mut peers: BTreeMap<String, Peer> = BTreeMap::new();
    let mut stream = watcher(nodes, watcher::Config::default()).boxed();
    let mut masq_for: Option<String> = None;
    let mut init: BTreeMap<String, Peer> = BTreeMap::new();
    // Besides every change, a resync every few seconds repairs what failed or was changed
    // by hand.
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(5));
    loop {
        let ev = tokio::select! {
            ev = stream.next() => match ev {
                Some(ev) => Some(ev),
                None => return,
            },
            _ = tick.tick() => None,
        };
        match ev {
            None => {}
            Some(ev) => match ev {
                Ok(watcher::Event::Apply(n)) => {
                    let name = n.metadata.name.clone().unwrap_or_default();
                    match peer_of(&n) {
                        Some((k, p)) => {
                            peers.insert(k, p);
                        }
                        None => {
                            peers.remove(&name);
                        }
                    }
                }
                Ok(watcher::Event::Delete(n)) => {
                    peers.remove(n.metadata.name.as_deref().unwrap_or(""));
                }
                Ok(watcher::Event::Init) => {
                    init.clear();
                    continue;
                }
                Ok(watcher::Event::InitApply(n)) => {
                    if let Some((k, p)) = peer_of(&n) {
                        init.insert(k, p);
                    }
                    continue;
                }
                Ok(watcher::Event::InitDone) => {
                    peers = std::mem::take(&mut init);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "watching nodes");
                    continue;
                }
            },
        }
        let mine = peers.get(&cfg.node_name).map(|p| p.pod_cidr.clone());
        if backend == Backend::Vxlan {
            if let Err(e) = ensure_vxlan(&cfg, mine.as_deref()).await {
                tracing::warn!(error = %e, "the VXLAN device");
            }
            if !vtep_published {
                match publish_vtep(&client, &cfg).await {
                    Ok(()) => vtep_published = true,
                    Err(e) => tracing::warn!(error = %e, "publishing the VTEP MAC"),
                }
            }
        }
        // The CNI configuration, before pods may start (they wait for the pod CIDR).
        if let Some(cidr) = mine.as_ref().filter(|c| conf_for.as_ref() != Some(*c)) {
            let c2 = cfg.clone();
            let n2 = cni.clone();
            let cidr2 = cidr.clone();
            let written = tokio::task::spawn_blocking(move || {
                n2.write_conf(&c2, &cidr2, c2.cni_template.as_deref())
            })
            .await;
            match written {
                Ok(Ok(_)) => conf_for = Some(cidr.clone()),
                Ok(Err(e)) => tracing::warn!(error = %e, "writing the CNI configuration"),
                Err(e) => tracing::warn!(error = %e, "writing the CNI configuration"),
            }
        }
        let mine = mine.filter(|_| conf_for.is_some());
        if let Some(cidr) = &mine {
            if masq_for.as_ref() != Some(cidr) {
                match run_cmd(
                    "nft",
                    &["-f", "-"],
                    Some(&masquerade_ruleset(
                        cidr,
                        &cfg.cluster_cidr,
                        cfg.egress_only_to.as_deref(),
                    )),
                )
                .await
                {
                    Ok(_) => masq_for = Some(cidr.clone()),
                    Err(e) => tracing::warn!(error = %e, "masquerade rules"),
                }
            }
        }
        if mine.is_some() {
            // Registered, with a pod CIDR: the node can run pods (`kins up` waits for this).
            let ready = cfg.run_dir.join("ready");
            if !ready.exists() {
                if let Err(e) = std::fs::write(&ready, mine.clone().unwrap_or_default()) {
                    tracing::warn!(error = %e, "writing the ready file");
                }
            }
        }
        pod_cidr.send_if_modified(|cur| {
            if *cur != mine {
                *cur = mine.clone();
                true
            } else {
                false
            }
        });
        if let Err(e) = sync(&desired(&cfg.node_name, &peers, backend), backend).await {
            tracing::warn!(error = %e, "syncing routes");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_to_other_nodes_only() {
        let mut peers = BTreeMap::new();
        for (n, c, ip) in [
            ("a", "10.244.0.0/24", "172.29.0.2"),
            ("b", "10.244.1.0/24", "172.29.0.3"),
            ("c", "10.244.2.0/24", "172.29.0.4"),
        ] {
            peers.insert(
                n.to_string(),
                Peer {
                    pod_cidr: c.into(),
                    ip: ip.into(),
                    vtep_mac: (n != "c").then(|| vtep_mac(ip.parse().expect("ok"))),
                },
            );
        }
        let r = |dst: &str, via: &str, dev: Option<&str>| Route {
            dst: dst.into(),
            via: via.into(),
            dev: dev.map(Into::into),
        };
        assert_eq!(
            desired("b", &peers, Backend::HostGw),
            Desired {
                routes: vec![
                    r("10.244.0.0/24", "172.29.0.2", None),
                    r("10.244.2.0/24", "172.29.0.4", None)
                ],
                ..Default::default()
            }
        );
        // VXLAN: via each VTEP, onlink on kins.1; node c has not published its MAC yet.
        assert_eq!(
            desired("b", &peers, Backend::Vxlan),
            Desired {
                routes: vec![r("10.244.0.0/24", "10.244.0.0", Some("kins.1"))],
                neigh: vec![("10.244.0.0".into(), "02:4b:ac:1d:00:02".into())],
                fdb: vec![("02:4b:ac:1d:00:02".into(), "172.29.0.2".into())],
            }
        );
    }

    #[test]
    fn masquerade_excludes_the_cluster_cidr() {
        let r = masquerade_ruleset("10.244.1.0/24", "10.244.0.0/16", None);
        assert!(r.contains("ip saddr 10.244.1.0/24 ip daddr != 10.244.0.0/16 masquerade"));
        assert!(r.starts_with("table ip kins_masq\ndelete table ip kins_masq\n"));
        assert!(!r.contains("reject"));
        let lab = masquerade_ruleset("10.244.1.0/24", "10.244.0.0/16", Some("172.29.1.0/24"));
        assert!(lab.contains(
            "ct state new ip saddr 10.244.1.0/24 ip daddr != { 10.244.0.0/16, 172.29.1.0/24 } reject with icmp type admin-prohibited"
        ));
    }
}

//! The node's share of the pod network: a route to every other node's pod CIDR via that
//! node's IP (host-gw, never NAT between pods), an unreachable route for the rest of the
//! cluster CIDR, and masquerade for pod traffic leaving the cluster CIDR (to the node
//! network and the host). Kept in sync with the Nodes by a watch.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use kube::runtime::watcher;
use kube::Api;
use tokio::io::AsyncWriteExt;

use crate::{AgentError, Config};

/// Routing protocol number that marks the routes kins owns.
pub const ROUTE_PROTO: &str = "77";

/// A node as the network needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub pod_cidr: String,
    pub ip: String,
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
    Some((name, Peer { pod_cidr, ip }))
}

/// The routes this node should have: (destination, gateway), sorted.
pub fn desired_routes(me: &str, peers: &BTreeMap<String, Peer>) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = peers
        .iter()
        .filter(|(name, _)| name.as_str() != me)
        .map(|(_, p)| (p.pod_cidr.clone(), p.ip.clone()))
        .collect();
    out.sort();
    out
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

/// Routes with our protocol: destination → gateway.
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

async fn sync_routes(cfg: &Config, peers: &BTreeMap<String, Peer>) -> Result<(), AgentError> {
    let want = desired_routes(&cfg.node_name, peers);
    let have = current_routes().await?;
    for (dst, via) in &want {
        if have.get(dst) != Some(via) {
            run_cmd(
                "ip",
                &["route", "replace", dst, "via", via, "proto", ROUTE_PROTO],
                None,
            )
            .await?;
            tracing::info!(dst = %dst, via = %via, "route added");
        }
    }
    for (dst, via) in &have {
        if via.is_empty() {
            continue; // the unreachable route for the cluster CIDR
        }
        if !want.iter().any(|(d, _)| d == dst) {
            run_cmd("ip", &["route", "del", dst, "proto", ROUTE_PROTO], None).await?;
            tracing::info!(dst = %dst, "route removed");
        }
    }
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
    pod_cidr: tokio::sync::watch::Sender<Option<String>>,
) {
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
    let nodes: Api<Node> = Api::all(client);
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
        if let Err(e) = sync_routes(&cfg, &peers).await {
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
                },
            );
        }
        assert_eq!(
            desired_routes("b", &peers),
            vec![
                ("10.244.0.0/24".to_string(), "172.29.0.2".to_string()),
                ("10.244.2.0/24".to_string(), "172.29.0.4".to_string())
            ]
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

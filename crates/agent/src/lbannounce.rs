//! The node's share of LoadBalancer Services (MetalLB's layer-2 speaker): every Service
//! whose annotation `kins.dev/lb-node` names this node gets its ingress IP added to the
//! node's eth0 as `<ip>/32`, so the host's ARP for the address is answered by this node
//! (and its service proxy translates the traffic). Addresses this node added and no longer
//! owns are removed again; which ones it added is kept in `<run_dir>/lb-addresses`, so only
//! those are ever removed, also after a restart.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Service;
use kube::runtime::{reflector, watcher, WatchStreamExt};
use kube::{Api, Client};
use net::{Ipv4Net, Net};

use crate::{AgentError, Config};

/// The annotation naming the node that answers for a Service's address.
pub const LB_NODE_ANNOTATION: &str = "kins.dev/lb-node";

/// The node's interface on the node network.
const IFACE: &str = "eth0";

/// How often the addresses are checked even when nothing changes.
const RESYNC: Duration = Duration::from_secs(30);

/// The file listing the addresses this node added.
const STATE_FILE: &str = "lb-addresses";

/// The addresses `node` answers for: the ingress IPs of the Services annotated with it.
pub fn desired<'a>(
    services: impl IntoIterator<Item = &'a Service>,
    node: &str,
    node_ip: Ipv4Addr,
) -> BTreeSet<Ipv4Addr> {
    let mut out = BTreeSet::new();
    for svc in services {
        let mine = svc
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(LB_NODE_ANNOTATION))
            .is_some_and(|n| n == node);
        let lb = svc.spec.as_ref().and_then(|s| s.type_.as_deref()) == Some("LoadBalancer");
        if !mine || !lb || svc.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let ips = svc
            .status
            .as_ref()
            .and_then(|s| s.load_balancer.as_ref())
            .and_then(|lb| lb.ingress.as_ref())
            .into_iter()
            .flatten()
            .filter_map(|i| i.ip.as_deref()?.parse::<Ipv4Addr>().ok());
        out.extend(ips.filter(|ip| *ip != node_ip && !ip.is_loopback() && !ip.is_unspecified()));
    }
    out
}

/// What to do: (addresses to add, addresses to remove). Only addresses this node added
/// (`owned`) and still has (`present`, its /32s) are removed.
pub fn plan(
    desired: &BTreeSet<Ipv4Addr>,
    present: &BTreeSet<Ipv4Addr>,
    owned: &BTreeSet<Ipv4Addr>,
) -> (Vec<Ipv4Addr>, Vec<Ipv4Addr>) {
    let add = desired.difference(present).copied().collect();
    let remove = owned
        .intersection(present)
        .filter(|ip| !desired.contains(ip))
        .copied()
        .collect();
    (add, remove)
}

fn read_owned(path: &Path) -> BTreeSet<Ipv4Addr> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

fn write_owned(path: &Path, owned: &BTreeSet<Ipv4Addr>) -> Result<(), AgentError> {
    let text: String = owned.iter().map(|ip| format!("{ip}\n")).collect();
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).map_err(crate::io(format!("writing {}", tmp.display())))?;
    std::fs::rename(&tmp, path).map_err(crate::io(format!("writing {}", path.display())))
}

fn host(ip: Ipv4Addr) -> Ipv4Net {
    Ipv4Net::new(ip, 32).unwrap_or_else(|_| Ipv4Net::from(ip))
}

/// Brings eth0's addresses in line with `desired`.
pub fn sync(net: &dyn Net, state: &Path, desired: &BTreeSet<Ipv4Addr>) -> Result<(), AgentError> {
    let err = |e: net::Error| AgentError::Other(format!("load balancer addresses: {e}"));
    let present: BTreeSet<Ipv4Addr> = net
        .addrs(IFACE)
        .map_err(err)?
        .into_iter()
        .filter(|a| a.prefix_len() == 32)
        .map(|a| a.addr())
        .collect();
    let owned = read_owned(state);
    let (add, remove) = plan(desired, &present, &owned);
    if add.is_empty() && remove.is_empty() && owned.iter().all(|ip| desired.contains(ip)) {
        return Ok(());
    }
    // Recorded before they are added: a crash in between never leaks an address.
    let mut all: BTreeSet<Ipv4Addr> = owned.union(desired).copied().collect();
    write_owned(state, &all)?;
    for ip in &add {
        net.set_addr(IFACE, host(*ip)).map_err(err)?;
        tracing::info!(%ip, "announcing load balancer address");
    }
    for ip in &remove {
        net.del_addr(IFACE, host(*ip)).map_err(err)?;
        tracing::info!(%ip, "no longer announcing load balancer address");
    }
    all.retain(|ip| desired.contains(ip));
    write_owned(state, &all)
}

/// Watches Services and keeps this node's load balancer addresses on eth0; runs until the
/// process ends (errors are logged and retried).
pub async fn run(client: Client, cfg: Arc<Config>) -> Result<(), AgentError> {
    let net: Arc<dyn Net> = Arc::new(
        net::RtNet::current().map_err(|e| AgentError::Other(format!("opening netlink: {e}")))?,
    );
    let state = cfg.run_dir.join(STATE_FILE);
    let (reader, writer) = reflector::store::<Service>();
    let api: Api<Service> = Api::all(client);
    let mut events = Box::pin(reflector::reflector(
        writer,
        watcher(api, watcher::Config::default()).default_backoff(),
    ));
    let mut tick = tokio::time::interval(RESYNC);
    let mut listed = false;
    loop {
        let mut dirty = false;
        tokio::select! {
            ev = events.next() => match ev {
                Some(Ok(watcher::Event::InitDone)) => {
                    listed = true;
                    dirty = true;
                }
                Some(Ok(watcher::Event::Apply(_) | watcher::Event::Delete(_))) => dirty = true,
                Some(Ok(_)) => {}
                Some(Err(e)) => tracing::warn!(error = %e, "service watch failed; retrying"),
                None => return Err(AgentError::Other("service watch ended".into())),
            },
            _ = tick.tick() => dirty = true,
        }
        if !dirty || !listed {
            continue;
        }
        let services = reader.state();
        let want = desired(
            services.iter().map(|s| s.as_ref()),
            &cfg.node_name,
            cfg.node_ip,
        );
        let (net, state) = (net.clone(), state.clone());
        let res = tokio::task::spawn_blocking(move || sync(net.as_ref(), &state, &want)).await;
        match res {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "syncing load balancer addresses"),
            Err(e) => tracing::warn!(error = %e, "syncing load balancer addresses"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().expect("ip")
    }

    fn set(ips: &[&str]) -> BTreeSet<Ipv4Addr> {
        ips.iter().map(|s| ip(s)).collect()
    }

    #[test]
    fn picks_this_nodes_addresses() {
        let svc = |node: &str, ty: &str, addr: &str| -> Service {
            serde_json::from_value(json!({
                "metadata": {"name": "s", "annotations": {LB_NODE_ANNOTATION: node}},
                "spec": {"type": ty},
                "status": {"loadBalancer": {"ingress": [{"ip": addr, "ipMode": "VIP"}]}},
            }))
            .expect("svc")
        };
        let svcs = [
            svc("n1", "LoadBalancer", "172.29.1.200"),
            svc("n2", "LoadBalancer", "172.29.1.201"),
            svc("n1", "ClusterIP", "172.29.1.202"),
            svc("n1", "LoadBalancer", "172.29.1.2"),
        ];
        assert_eq!(
            desired(svcs.iter(), "n1", ip("172.29.1.2")),
            set(&["172.29.1.200"])
        );
    }

    #[test]
    fn syncs_eth0_and_removes_only_its_own() {
        let dir = tempfile::tempdir().expect("tmp");
        let state = dir.path().join(STATE_FILE);
        let fake = net::FakeNet::new("node");
        fake.create_bridge("eth0", None, None).expect("link");
        let node_ip: Ipv4Net = "172.29.1.2/24".parse().expect("cidr");
        let foreign: Ipv4Net = "172.29.1.230/32".parse().expect("cidr");
        fake.set_addr("eth0", node_ip).expect("addr");
        fake.set_addr("eth0", foreign).expect("addr");
        let addrs = |n: &net::FakeNet| -> BTreeSet<Ipv4Net> {
            n.addrs("eth0").expect("addrs").into_iter().collect()
        };
        sync(&fake, &state, &set(&["172.29.1.200", "172.29.1.201"])).expect("sync");
        assert_eq!(read_owned(&state), set(&["172.29.1.200", "172.29.1.201"]));
        assert!(addrs(&fake).contains(&host(ip("172.29.1.201"))));
        sync(&fake, &state, &set(&["172.29.1.201"])).expect("sync");
        let want: BTreeSet<Ipv4Net> = [node_ip, foreign, host(ip("172.29.1.201"))].into();
        assert_eq!(addrs(&fake), want);
        sync(&fake, &state, &BTreeSet::new()).expect("sync");
        assert_eq!(addrs(&fake), [node_ip, foreign].into());
        assert!(read_owned(&state).is_empty());
    }

    #[test]
    fn plans_only_owned_removals() {
        let (add, remove) = plan(
            &set(&["10.0.0.1", "10.0.0.2"]),
            &set(&["10.0.0.2", "10.0.0.3", "10.0.0.4"]),
            &set(&["10.0.0.3", "10.0.0.5"]),
        );
        assert_eq!(add, vec![ip("10.0.0.1")]);
        // 10.0.0.4 is somebody else's; 10.0.0.5 is already gone.
        assert_eq!(remove, vec![ip("10.0.0.3")]);
    }
}

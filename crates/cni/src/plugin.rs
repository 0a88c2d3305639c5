//! `kins-bridge`: ADD, DEL and CHECK on a node's bridge, through [`Net`].
//!
//! ADD, in the node's namespace (the caller's): the bridge exists with the gateway
//! address and is up, IPv4 forwarding is on, an address is allocated, a veth pair is
//! created with its host end `veth<8 hex>` here and its peer `CNI_IFNAME` born inside
//! `CNI_NETNS`, the host end joins the bridge and comes up; inside the pod: `lo` up, the
//! address on the interface, up, default route via the gateway.

use std::net::Ipv4Addr;
use std::path::Path;

use ipnet::Ipv4Net;
use net::{default_dst, Mac, Net, Route};

use crate::config::{CniEnv, NetConf};
use crate::hostport::{self, Nft};
use crate::ipam::Store;
use crate::types::{CniResult, Dns, Interface, IpConfig, RouteEntry};
use crate::{Error, Result};

/// The host end's name: `veth` and 8 hex digits of a hash (FNV-1a, 32 bits) of the
/// container id and the interface name, so that DEL finds it from its environment alone
/// and two interfaces of one container get two names.
pub fn veth_name(container_id: &str, ifname: &str) -> String {
    let mut h: u32 = 0x811c_9dc5;
    for b in container_id
        .bytes()
        .chain(std::iter::once(b'/'))
        .chain(ifname.bytes())
    {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    format!("veth{h:08x}")
}

/// The alias set on the host end, naming its owner (read back by ADD and DEL so that
/// a hash collision never touches another container's interface).
pub fn veth_alias(container_id: &str, ifname: &str) -> String {
    format!("kins-cni:{container_id}:{ifname}")
}

fn store(conf: &NetConf) -> Store {
    Store::new(conf.store_dir(), &conf.name, conf.subnet(), conf.gateway())
}

/// The bridge exists, is a bridge, has the gateway address and is up. Returns its MAC.
fn ensure_bridge(net: &dyn Net, conf: &NetConf, gw: Ipv4Net) -> Result<Option<Mac>> {
    match net.link(&conf.bridge)? {
        None => {
            let mac = Mac::from_ipv4(gw.addr());
            match net.create_bridge(&conf.bridge, conf.mtu, Some(mac)) {
                Ok(()) => {}
                // Another ADD made it in between.
                Err(e) if e.is_exists() => {}
                Err(e) => return Err(e.into()),
            }
            net.set_addr(&conf.bridge, gw)?;
            net.set_up(&conf.bridge)?;
            Ok(Some(mac))
        }
        Some(link) => {
            if link.kind.as_deref() != Some("bridge") {
                return Err(Error::Config(format!(
                    "bridge {}: exists and is a {} link, not a bridge",
                    conf.bridge,
                    link.kind.as_deref().unwrap_or("physical")
                )));
            }
            if !net.addrs(&conf.bridge)?.contains(&gw) {
                net.set_addr(&conf.bridge, gw)?;
            }
            if !link.up {
                net.set_up(&conf.bridge)?;
            }
            Ok(link.mac)
        }
    }
}

fn ensure_forwarding(net: &dyn Net) -> Result<()> {
    const FORWARD: &str = "net/ipv4/ip_forward";
    if net.sysctl(FORWARD)? != "1" {
        net.set_sysctl(FORWARD, "1")?;
    }
    Ok(())
}

/// ADD: sets up the container's interface and returns the result to print.
///
/// Repeating ADD for the same container and interface gives the same address and a
/// fresh veth pair. On failure, what this call set up is taken down again.
pub fn add(net: &dyn Net, nft: &dyn Nft, conf: &NetConf, env: &CniEnv) -> Result<CniResult> {
    env.validate(false)?;
    let store = store(conf);
    let ip = store.allocate(&env.container_id, &env.ifname)?;
    let maps = &conf.runtime_config.port_mappings;
    let done = setup(net, conf, env, ip).and_then(|result| {
        if !maps.is_empty() {
            hostport::add(
                nft,
                &conf.store_dir(),
                &conf.bridge,
                conf.subnet(),
                &env.container_id,
                ip,
                maps,
            )?;
        }
        Ok(result)
    });
    match done {
        Ok(result) => Ok(result),
        Err(e) => {
            let _ = teardown(net, env);
            let _ = store.release(&env.container_id, &env.ifname);
            Err(e)
        }
    }
}

fn setup(net: &dyn Net, conf: &NetConf, env: &CniEnv, ip: Ipv4Addr) -> Result<CniResult> {
    let prefix = conf.subnet().prefix_len();
    let gw = conf.gateway();
    let gw_net = Ipv4Net::new(gw, prefix).map_err(|e| Error::Config(e.to_string()))?;
    let addr = Ipv4Net::new(ip, prefix).map_err(|e| Error::Config(e.to_string()))?;
    let bridge_mac = ensure_bridge(net, conf, gw_net)?;
    ensure_forwarding(net)?;

    let host = veth_name(&env.container_id, &env.ifname);
    let alias = veth_alias(&env.container_id, &env.ifname);
    if let Some(old) = net.link(&host)? {
        match old.alias {
            // Ours from an earlier ADD (or one that stopped before naming it).
            Some(a) if a == alias => {}
            None => {}
            Some(owner) => return Err(Error::NameTaken { name: host, owner }),
        }
        net.delete_link(&host)?;
    }
    let netns = Path::new(&env.netns);
    net.create_veth_into(&host, &env.ifname, netns, conf.mtu)
        .map_err(|e| netns_gone(e, env))?;
    net.set_alias(&host, &alias)?;
    net.set_master(&host, &conf.bridge)?;
    net.set_hairpin(&host)?;
    net.set_up(&host)?;

    let pod = net.open_netns(netns)?;
    pod.set_up("lo")?;
    pod.set_addr(&env.ifname, addr)?;
    pod.set_up(&env.ifname)?;
    pod.add_route(&Route::via(default_dst(), gw, Some(&env.ifname)))?;
    let pod_mac = pod.link(&env.ifname)?.and_then(|l| l.mac);
    let host_mac = net.link(&host)?.and_then(|l| l.mac);

    let iface = |name: &str, mac: Option<Mac>, sandbox: Option<&str>| Interface {
        name: name.to_string(),
        mac: mac.map(|m| m.to_string()),
        mtu: conf.mtu,
        sandbox: sandbox.map(str::to_string),
    };
    Ok(CniResult {
        cni_version: conf.cni_version.clone(),
        interfaces: vec![
            iface(&conf.bridge, bridge_mac, None),
            iface(&host, host_mac, None),
            iface(&env.ifname, pod_mac, Some(&env.netns)),
        ],
        ips: vec![IpConfig {
            version: conf.pre_1_0().then(|| "4".to_string()),
            address: addr,
            gateway: Some(gw),
            interface: Some(2),
        }],
        routes: vec![RouteEntry {
            dst: default_dst(),
            gw: Some(gw),
        }],
        dns: Dns::default(),
    })
}

/// A namespace file that does not exist is the CNI's "unknown container".
fn netns_gone(e: net::Error, env: &CniEnv) -> Error {
    match &e {
        net::Error::Netns { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
            Error::NoSuchNetns(env.netns.clone())
        }
        _ => Error::Net(e),
    }
}

/// Deletes the host end if it is this container's (its peer goes with it).
fn teardown(net: &dyn Net, env: &CniEnv) -> Result<()> {
    let host = veth_name(&env.container_id, &env.ifname);
    let alias = veth_alias(&env.container_id, &env.ifname);
    if let Some(link) = net.link(&host)? {
        if link.alias.is_none() || link.alias.as_deref() == Some(alias.as_str()) {
            net.delete_link(&host)?;
        }
    }
    Ok(())
}

/// DEL: removes the container's veth pair (if still there) and releases its address.
/// Succeeds when everything is gone already; CNI_NETNS is not needed.
pub fn del(net: &dyn Net, nft: &dyn Nft, conf: &NetConf, env: &CniEnv) -> Result<()> {
    env.validate(true)?;
    if !conf.runtime_config.port_mappings.is_empty() {
        hostport::remove(nft, &|c| c == env.container_id)?;
    }
    teardown(net, env)?;
    store(conf).release(&env.container_id, &env.ifname)?;
    Ok(())
}

/// CHECK: the container still has its address and default route, and its host end is
/// on the bridge and up. With a `prevResult`, its address must be the allocated one.
pub fn check(net: &dyn Net, conf: &NetConf, env: &CniEnv) -> Result<()> {
    env.validate(false)?;
    let fail = |m: String| Err(Error::Check(m));
    let Some(ip) = store(conf).lookup(&env.container_id, &env.ifname)? else {
        return fail(format!(
            "no address allocated to container {} ({})",
            env.container_id, env.ifname
        ));
    };
    let addr =
        Ipv4Net::new(ip, conf.subnet().prefix_len()).map_err(|e| Error::Config(e.to_string()))?;
    if let Some(prev) = &conf.prev_result {
        let prev: CniResult = serde_json::from_value(prev.clone())?;
        if !prev.ips.iter().any(|c| c.address == addr) {
            return fail(format!(
                "prevResult does not hold the allocated address {addr}"
            ));
        }
    }
    let host = veth_name(&env.container_id, &env.ifname);
    let Some(bridge) = net.link(&conf.bridge)? else {
        return fail(format!("bridge {} is missing", conf.bridge));
    };
    match net.link(&host)? {
        None => return fail(format!("host interface {host} is missing")),
        Some(l) if l.master != Some(bridge.index) => {
            return fail(format!("host interface {host} is not on {}", conf.bridge))
        }
        Some(l) if !l.up => return fail(format!("host interface {host} is down")),
        Some(_) => {}
    }
    let pod = net
        .open_netns(Path::new(&env.netns))
        .map_err(|e| netns_gone(e, env))?;
    if !pod.addrs(&env.ifname)?.contains(&addr) {
        return fail(format!("{} in {} lacks {addr}", env.ifname, env.netns));
    }
    let gw = conf.gateway();
    let has_default = pod.routes()?.iter().any(|r| {
        r.dst.prefix_len() == 0 && r.via == Some(gw) && r.dev.as_deref() == Some(&env.ifname)
    });
    if !has_default {
        return fail(format!(
            "{} lacks the default route via {gw} dev {}",
            env.netns, env.ifname
        ));
    }
    Ok(())
}

/// GC (specification 1.1): releases the addresses of attachments not in `valid`
/// (`cni.dev/valid-attachments`) and removes their host veths; returns the released
/// container ids.
pub fn gc(
    net: &dyn Net,
    nft: &dyn Nft,
    conf: &NetConf,
    valid: &[(String, String)],
) -> Result<Vec<String>> {
    let store = store(conf);
    let mut released = hostport::remove(nft, &|c| !valid.iter().any(|(v, _)| v == c))?;
    for a in store.allocations()? {
        if valid
            .iter()
            .any(|(c, i)| *c == a.container_id && *i == a.ifname)
        {
            continue;
        }
        let env = CniEnv {
            container_id: a.container_id.clone(),
            ifname: a.ifname.clone(),
            ..Default::default()
        };
        teardown(net, &env)?;
        store.release(&a.container_id, &a.ifname)?;
        released.push(a.container_id);
    }
    released.sort();
    released.dedup();
    Ok(released)
}

/// STATUS (specification 1.1): the plugin can take ADDs when its address store is
/// usable; an exhausted subnet is reported as unavailable (code 50).
pub fn status(conf: &NetConf) -> Result<()> {
    let store = store(conf);
    let used = store.allocations()?.len();
    // Hosts of the subnet minus network, broadcast and gateway.
    let hosts = (1usize << (32 - conf.subnet().prefix_len())).saturating_sub(3);
    if used >= hosts {
        return Err(Error::Unavailable(format!(
            "no free address left in {} (network {})",
            conf.subnet(),
            conf.name
        )));
    }
    Ok(())
}

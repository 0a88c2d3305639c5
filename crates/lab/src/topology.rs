//! The single-host lab topology: one bridge per cluster on the host (`kins-<cluster>`,
//! the node network's gateway), and one network namespace per node with an `eth0` whose
//! peer sits on that bridge. Planning is pure (it yields `ip -batch` text, compared with
//! expected text in tests); applying runs `ip`, `nsenter` and `unshare`.
//!
//! Every host link carries the alias `kins:<cluster>[:<node>]`, so `down` finds them by
//! name even when the cluster's files are gone.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::LabError;

/// The node network of a cluster: 172.29.N.0/24 by default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeNet {
    /// The network address (x.y.z.0).
    pub base: Ipv4Addr,
    /// Index used in host link names (kn<index>-<node>).
    pub index: u8,
}

impl NodeNet {
    pub fn gateway(&self) -> Ipv4Addr {
        let o = self.base.octets();
        Ipv4Addr::new(o[0], o[1], o[2], 1)
    }
    pub fn node_ip(&self, node_index: u32) -> Ipv4Addr {
        let o = self.base.octets();
        Ipv4Addr::new(o[0], o[1], o[2], (node_index + 1).min(254) as u8)
    }
    pub fn cidr(&self) -> String {
        format!("{}/24", self.base)
    }
}

/// The host bridge of a cluster.
pub fn bridge_name(cluster: &str) -> String {
    format!("kins-{cluster}")
}

/// The host end of a node's veth.
pub fn veth_name(net: &NodeNet, node_index: u32) -> String {
    format!("kn{}-{node_index}", net.index)
}

pub fn cluster_alias(cluster: &str) -> String {
    format!("kins:{cluster}")
}

pub fn node_alias(cluster: &str, node: &str) -> String {
    format!("kins:{cluster}:{node}")
}

/// `ip -batch` commands that make the host bridge.
pub fn plan_bridge(cluster: &str, net: &NodeNet) -> String {
    let br = bridge_name(cluster);
    format!(
        "link add {br} type bridge nf_call_iptables 0 nf_call_arptables 0\nlink set {br} alias {}\naddr add {}/24 dev {br}\nlink set {br} up\n",
        cluster_alias(cluster),
        net.gateway()
    )
}

/// The host's nftables table of a cluster.
pub fn host_table(cluster: &str) -> String {
    format!("kins_{}", cluster.replace('-', "_"))
}

/// nftables ruleset for the host: nothing that comes from the cluster's bridge is
/// forwarded anywhere else, whatever the host's `ip_forward` says (the nodes reach the
/// host itself, and each other across the bridge, and nothing more).
pub fn plan_host_guard(cluster: &str) -> String {
    let t = host_table(cluster);
    let br = bridge_name(cluster);
    format!(
        "table inet {t}\ndelete table inet {t}\ntable inet {t} {{\n  chain forward {{\n    type filter hook forward priority filter; policy accept;\n    iifname \"{br}\" oifname != \"{br}\" counter drop comment \"cluster traffic never leaves the host\"\n    oifname \"{br}\" iifname != \"{br}\" counter drop comment \"and nothing is routed into it\"\n  }}\n}}\n"
    )
}

/// Applies a ruleset with `nft -f -`.
pub fn nft_apply(ruleset: &str, what: &str) -> Result<(), LabError> {
    run(Command::new("nft").args(["-f", "-"]), what, Some(ruleset)).map(|_| ())
}

/// Deletes the cluster's host table; false when there was none.
pub fn delete_host_table(cluster: &str) -> bool {
    let t = host_table(cluster);
    run(
        Command::new("nft").args(["delete", "table", "inet", &t]),
        "deleting the host table",
        None,
    )
    .is_ok()
}

/// Host-side `ip -batch` commands for one node: the veth, created with its peer directly
/// inside the node's namespace.
pub fn plan_node_host(
    cluster: &str,
    node: &str,
    node_index: u32,
    net: &NodeNet,
    netns: &Path,
) -> String {
    let v = veth_name(net, node_index);
    format!(
        "link add {v} type veth peer name eth0 netns {}\nlink set {v} alias {}\nlink set {v} master {}\nlink set {v} up\n",
        netns.display(),
        node_alias(cluster, node),
        bridge_name(cluster)
    )
}

/// Node-side `ip -batch` commands: loopback, eth0 with the node IP, the default route via
/// the bridge, and the service CIDR as a local route: a ClusterIP is translated by the
/// proxy's rules (from pods and from the node itself), and anything else addressed to the
/// service CIDR is delivered to the node and refused there — it never leaves the node.
/// Its source is the node IP, so replies to the node's own connections find their way back.
pub fn plan_node_inside(node_index: u32, net: &NodeNet, service_cidr: &str) -> String {
    format!(
        "link set lo up\naddr add {}/24 dev eth0\nlink set eth0 up\nroute add default via {}\nroute add local {service_cidr} dev lo src {}\n",
        net.node_ip(node_index),
        net.gateway(),
        net.node_ip(node_index)
    )
}

fn run(cmd: &mut Command, what: &str, input: Option<&str>) -> Result<String, LabError> {
    use std::io::Write;
    let mut child = cmd
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| LabError::Other(format!("{what}: {e}")))?;
    if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
        stdin
            .write_all(text.as_bytes())
            .map_err(|e| LabError::Other(format!("{what}: {e}")))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| LabError::Other(format!("{what}: {e}")))?;
    if !out.status.success() {
        return Err(LabError::Other(format!(
            "{what}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs `ip -batch -` on the host.
pub fn ip_batch(batch: &str, what: &str) -> Result<(), LabError> {
    run(Command::new("ip").args(["-batch", "-"]), what, Some(batch)).map(|_| ())
}

/// Runs `ip -batch -` inside a network namespace file.
pub fn ip_batch_in(netns: &Path, batch: &str, what: &str) -> Result<(), LabError> {
    let ns = format!("--net={}", netns.display());
    run(
        Command::new("nsenter").args([ns.as_str(), "ip", "-batch", "-"]),
        what,
        Some(batch),
    )
    .map(|_| ())
}

/// Runs a command inside a network namespace file.
pub fn run_in(netns: &Path, argv: &[&str], what: &str) -> Result<String, LabError> {
    let ns = format!("--net={}", netns.display());
    run(Command::new("nsenter").arg(ns).args(argv), what, None)
}

/// Creates a network namespace file (a bind mount that keeps the namespace alive).
pub fn create_netns(path: &Path) -> Result<(), LabError> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(crate::io_err(parent))?;
    }
    if is_mounted(path) {
        return Ok(());
    }
    std::fs::write(path, b"").map_err(crate::io_err(path))?;
    let arg = format!("--net={}", path.display());
    run(
        Command::new("unshare").args([arg.as_str(), "true"]),
        &format!("creating the network namespace {}", path.display()),
        None,
    )
    .map(|_| ())
}

/// Mount points under `dir`, deepest first.
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let prefix = dir.to_string_lossy().trim_end_matches('/').to_string();
    let mut out: Vec<PathBuf> = text
        .lines()
        .filter_map(|l| l.split(' ').nth(1))
        .map(|m| m.replace("\\040", " "))
        .filter(|m| m == &prefix || m.starts_with(&format!("{prefix}/")))
        .map(PathBuf::from)
        .collect();
    out.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    out.dedup();
    out
}

pub fn is_mounted(path: &Path) -> bool {
    mounts_under(path).iter().any(|m| m == path)
}

/// Unmounts everything under `dir` (namespace files, later overlays), deepest first.
pub fn unmount_all(dir: &Path) -> usize {
    let mounts = mounts_under(dir);
    for m in &mounts {
        let _ = nix::mount::umount2(m, nix::mount::MntFlags::MNT_DETACH);
    }
    mounts.len()
}

/// Host links of a cluster, found by alias or bridge name: (name, alias).
pub fn cluster_links(cluster: &str) -> Vec<String> {
    let out = run(
        Command::new("ip").args(["-j", "link", "show"]),
        "listing links",
        None,
    )
    .unwrap_or_default();
    let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_default();
    let mine = cluster_alias(cluster);
    let node_prefix = format!("{mine}:");
    let br = bridge_name(cluster);
    v.as_array()
        .into_iter()
        .flatten()
        .filter(|l| {
            let alias = l["ifalias"].as_str().unwrap_or("");
            let name = l["ifname"].as_str().unwrap_or("");
            alias == mine || alias.starts_with(&node_prefix) || name == br
        })
        .filter_map(|l| l["ifname"].as_str().map(str::to_string))
        .collect()
}

/// Deletes a host link; a link that is already gone is fine (a veth goes by itself when
/// its peer's namespace is destroyed).
pub fn delete_link(name: &str) -> Result<(), LabError> {
    match run(
        Command::new("ip").args(["link", "del", name]),
        &format!("deleting link {name}"),
        None,
    ) {
        Ok(_) => Ok(()),
        Err(LabError::Other(msg)) if msg.contains("Cannot find device") => Ok(()),
        Err(e) => Err(e),
    }
}

/// Third octets of 172.29.x.0/24 networks already used on this host.
pub fn used_node_nets() -> Vec<u8> {
    let out = run(
        Command::new("ip").args(["-j", "-4", "addr", "show"]),
        "listing addresses",
        None,
    )
    .unwrap_or_default();
    let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_default();
    let mut used = Vec::new();
    for l in v.as_array().into_iter().flatten() {
        for a in l["addr_info"].as_array().into_iter().flatten() {
            if let Some(ip) = a["local"].as_str().and_then(|s| s.parse::<Ipv4Addr>().ok()) {
                let o = ip.octets();
                if o[0] == 172 && o[1] == 29 {
                    used.push(o[2]);
                }
            }
        }
    }
    used
}

/// The first free 172.29.N.0/24 (N ≥ 1), skipping `also_used`.
pub fn pick_node_net(also_used: &[u8]) -> Result<NodeNet, LabError> {
    let used = used_node_nets();
    (1..=254u8)
        .find(|n| !used.contains(n) && !also_used.contains(n))
        .map(|n| NodeNet {
            base: Ipv4Addr::new(172, 29, n, 0),
            index: n,
        })
        .ok_or_else(|| LabError::Other("no free node network in 172.29.0.0/16".into()))
}

/// Parses a --node-cidr (an IPv4 /24).
pub fn parse_node_cidr(s: &str, index: u8) -> Result<NodeNet, LabError> {
    let (ip, len) = s
        .split_once('/')
        .ok_or_else(|| LabError::Other(format!("--node-cidr {s}: want a.b.c.0/24")))?;
    let ip: Ipv4Addr = ip
        .parse()
        .map_err(|e| LabError::Other(format!("--node-cidr {s}: {e}")))?;
    if len != "24" || ip.octets()[3] != 0 {
        return Err(LabError::Other(format!("--node-cidr {s}: want a.b.c.0/24")));
    }
    Ok(NodeNet { base: ip, index })
}

/// An exclusive lock on the lab's shared resources (node network choice), released on drop.
pub struct LabLock(#[allow(dead_code)] nix::fcntl::Flock<std::fs::File>);

pub fn lock() -> Result<LabLock, LabError> {
    let dir = Path::new(crate::cluster::RUN_BASE);
    std::fs::create_dir_all(dir).map_err(crate::io_err(dir))?;
    let p = dir.join(".lock");
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&p)
        .map_err(crate::io_err(&p))?;
    nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusive)
        .map(LabLock)
        .map_err(|(_, e)| LabError::Other(format!("locking {}: {e}", p.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net() -> NodeNet {
        NodeNet {
            base: Ipv4Addr::new(172, 29, 3, 0),
            index: 3,
        }
    }

    #[test]
    fn plans() {
        assert_eq!(
            plan_bridge("lab", &net()),
            "link add kins-lab type bridge nf_call_iptables 0 nf_call_arptables 0\nlink set kins-lab alias kins:lab\naddr add 172.29.3.1/24 dev kins-lab\nlink set kins-lab up\n"
        );
        assert_eq!(
            plan_node_host("lab", "lab-worker2", 2, &net(), Path::new("/run/kins/lab/netns/lab-worker2")),
            "link add kn3-2 type veth peer name eth0 netns /run/kins/lab/netns/lab-worker2\nlink set kn3-2 alias kins:lab:lab-worker2\nlink set kn3-2 master kins-lab\nlink set kn3-2 up\n"
        );
        assert_eq!(
            plan_node_inside(2, &net(), "10.96.0.0/12"),
            "link set lo up\naddr add 172.29.3.3/24 dev eth0\nlink set eth0 up\nroute add default via 172.29.3.1\nroute add local 10.96.0.0/12 dev lo src 172.29.3.3\n"
        );
        assert!(
            veth_name(
                &NodeNet {
                    base: Ipv4Addr::new(172, 29, 254, 0),
                    index: 254
                },
                999
            )
            .len()
                <= 15
        );
        assert!(bridge_name("abcdefghij").len() <= 15);
    }

    #[test]
    fn host_guard() {
        let g = plan_host_guard("a-b");
        assert!(
            g.starts_with("table inet kins_a_b\ndelete table inet kins_a_b\n"),
            "{g}"
        );
        assert!(
            g.contains("iifname \"kins-a-b\" oifname != \"kins-a-b\" counter drop"),
            "{g}"
        );
    }

    #[test]
    fn node_cidr() {
        assert_eq!(
            parse_node_cidr("172.30.5.0/24", 7).expect("ok").gateway(),
            Ipv4Addr::new(172, 30, 5, 1)
        );
        assert!(parse_node_cidr("172.30.5.0/16", 7).is_err());
        assert!(parse_node_cidr("172.30.5.1/24", 7).is_err());
    }
}

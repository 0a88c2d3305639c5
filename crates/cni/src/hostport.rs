//! hostPort for kins-bridge, on nftables (the `portMappings` capability, what the portmap
//! plugin does with iptables): the table `ip kins_hostport` in the node's namespace, one
//! DNAT rule per mapping in its chain `hostports`, commented with the container id so DEL
//! and GC find them. Traffic to a node address (not loopback) and a mapped port goes to
//! the pod; traffic from pods of the node (hairpin included) is masqueraded, as portmap's
//! `snat` does, traffic from elsewhere keeps its source.

use std::net::Ipv4Addr;
use std::path::Path;

use ipnet::Ipv4Net;
use serde::Deserialize;

use crate::{Error, Result};

/// The table, in each node's network namespace.
pub const TABLE: &str = "kins_hostport";
/// The conntrack mark of connections that came through a hostPort.
const MARK: &str = "0x4b";

/// One entry of `runtimeConfig.portMappings`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortMapping {
    pub host_port: u16,
    pub container_port: u16,
    #[serde(default = "tcp")]
    pub protocol: String,
    #[serde(default, rename = "hostIP")]
    pub host_ip: Option<String>,
}

fn tcp() -> String {
    "tcp".into()
}

/// Runs `nft`.
pub trait Nft {
    /// `nft ARGS`, with `stdin` when given; stdout.
    fn run(&self, args: &[&str], stdin: Option<&str>) -> Result<String>;
}

/// The `nft` program.
pub struct NftCommand;

impl Nft for NftCommand {
    fn run(&self, args: &[&str], stdin: Option<&str>) -> Result<String> {
        use std::io::Write;
        use std::process::{Command, Stdio};
        let fail = |why: String| Error::Config(format!("nft {}: {why}", args.join(" ")));
        let mut child = Command::new("nft")
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| fail(e.to_string()))?;
        if let (Some(text), Some(mut input)) = (stdin, child.stdin.take()) {
            input
                .write_all(text.as_bytes())
                .map_err(|e| fail(e.to_string()))?;
        }
        let out = child.wait_with_output().map_err(|e| fail(e.to_string()))?;
        if !out.status.success() {
            return Err(fail(
                String::from_utf8_lossy(&out.stderr).trim().to_string(),
            ));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

/// No nftables (unit tests of the rest of the plugin): listing finds nothing, changes fail.
pub struct NoNft;

impl Nft for NoNft {
    fn run(&self, args: &[&str], stdin: Option<&str>) -> Result<String> {
        match stdin {
            None => Ok(String::new()),
            Some(_) => Err(Error::Config(format!(
                "no nftables here: nft {}",
                args.join(" ")
            ))),
        }
    }
}

/// The table with its chains (no mappings yet): made once per node.
pub fn table(bridge: &str, subnet: Ipv4Net) -> String {
    format!(
        "table ip {TABLE} {{
  chain hostports {{
  }}
  chain prerouting {{
    type nat hook prerouting priority -110; policy accept;
    fib daddr type local jump hostports comment \"hostPort: to an address of this node\"
  }}
  chain output {{
    type nat hook output priority -110; policy accept;
    ip daddr != 127.0.0.0/8 fib daddr type local jump hostports
  }}
  chain postrouting {{
    type nat hook postrouting priority 90; policy accept;
    ct mark {MARK} ip saddr {{ 127.0.0.0/8, {subnet} }} masquerade comment \"hostPort from pods of {bridge} (hairpin too)\"
  }}
}}
"
    )
}

/// The rules of one pod's mappings (pure).
pub fn rules(container_id: &str, pod_ip: Ipv4Addr, maps: &[PortMapping]) -> Result<String> {
    let mut s = String::new();
    for m in maps {
        let proto = m.protocol.to_ascii_lowercase();
        if !matches!(proto.as_str(), "tcp" | "udp" | "sctp") {
            return Err(Error::Config(format!(
                "portMappings: protocol {:?}: tcp, udp or sctp",
                m.protocol
            )));
        }
        if m.host_port == 0 || m.container_port == 0 {
            return Err(Error::Config(format!(
                "portMappings: {}:{}: ports must be 1-65535",
                m.host_port, m.container_port
            )));
        }
        let daddr = match m
            .host_ip
            .as_deref()
            .filter(|s| !s.is_empty() && *s != "0.0.0.0")
        {
            Some(ip) => {
                let ip: Ipv4Addr = ip.parse().map_err(|_| {
                    Error::Config(format!("portMappings: hostIP {ip:?}: not an IPv4 address"))
                })?;
                format!("ip daddr {ip} ")
            }
            None => String::new(),
        };
        s.push_str(&format!(
            "add rule ip {TABLE} hostports {daddr}{proto} dport {} ct mark set {MARK} dnat ip to {pod_ip}:{} comment \"{container_id}\"\n",
            m.host_port, m.container_port
        ));
    }
    Ok(s)
}

/// Adds a pod's mappings in one transaction (the table first, if the node has none).
pub fn add(
    nft: &dyn Nft,
    lock_dir: &Path,
    bridge: &str,
    subnet: Ipv4Net,
    container_id: &str,
    pod_ip: Ipv4Addr,
    maps: &[PortMapping],
) -> Result<()> {
    let text = rules(container_id, pod_ip, maps)?;
    // One ADD at a time makes the table: two would both add its jump rules.
    let _lock = crate::ipam::lock_file(&lock_dir.join("hostport.lock"))?;
    let mut batch = String::new();
    if nft.run(&["list", "table", "ip", TABLE], None).is_err() {
        batch.push_str(&table(bridge, subnet));
    }
    // An ADD repeated for the same container replaces its rules.
    for (h, _) in handles(nft, &|c| c == container_id)? {
        batch.push_str(&format!("delete rule ip {TABLE} hostports handle {h}\n"));
    }
    batch.push_str(&text);
    nft.run(&["-f", "-"], Some(&batch)).map(|_| ())
}

/// Handles of the rules whose comment (a container id) `select` picks.
fn handles(nft: &dyn Nft, select: &dyn Fn(&str) -> bool) -> Result<Vec<(u64, String)>> {
    let Ok(out) = nft.run(
        &["-a", "-j", "list", "chain", "ip", TABLE, "hostports"],
        None,
    ) else {
        return Ok(Vec::new()); // no table: nothing mapped
    };
    Ok(parse_rules(&out)
        .into_iter()
        .filter(|(_, c)| select(c))
        .collect())
}

/// (handle, comment) of each rule in `nft -j` output.
fn parse_rules(json: &str) -> Vec<(u64, String)> {
    let v: serde_json::Value = serde_json::from_str(json).unwrap_or_default();
    v["nftables"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|o| {
            let r = o.get("rule")?;
            Some((r["handle"].as_u64()?, r["comment"].as_str()?.to_string()))
        })
        .collect()
}

/// Removes the rules of the containers `select` picks; their ids.
pub fn remove(nft: &dyn Nft, select: &dyn Fn(&str) -> bool) -> Result<Vec<String>> {
    let found = handles(nft, select)?;
    if found.is_empty() {
        return Ok(Vec::new());
    }
    let batch: String = found
        .iter()
        .map(|(h, _)| format!("delete rule ip {TABLE} hostports handle {h}\n"))
        .collect();
    nft.run(&["-f", "-"], Some(&batch))?;
    let mut ids: Vec<String> = found.into_iter().map(|(_, c)| c).collect();
    ids.dedup();
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    #[derive(Default)]
    struct FakeNft {
        listing: Option<String>,
        batches: Mutex<Vec<String>>,
    }

    impl Nft for FakeNft {
        fn run(&self, args: &[&str], stdin: Option<&str>) -> Result<String> {
            if let Some(text) = stdin {
                self.batches.lock().expect("lock").push(text.to_string());
                return Ok(String::new());
            }
            match (&self.listing, args.first()) {
                (Some(l), Some(&"-a")) => Ok(l.clone()),
                (Some(_), _) => Ok("table".into()),
                (None, _) => Err(Error::Config("No such file or directory".into())),
            }
        }
    }

    fn maps() -> Vec<PortMapping> {
        serde_json::from_str(
            r#"[{"hostPort": 18080, "containerPort": 8080, "protocol": "tcp"},
                {"hostPort": 53, "containerPort": 5353, "protocol": "UDP", "hostIP": "172.29.1.2"}]"#,
        )
        .expect("json")
    }

    #[test]
    fn the_first_add_makes_the_table_then_only_rules() {
        let subnet: Ipv4Net = "10.244.1.0/24".parse().expect("net");
        let dir = tempfile::tempdir().expect("tmp");
        let ip: Ipv4Addr = "10.244.1.5".parse().expect("ip");
        let fresh = FakeNft::default();
        add(&fresh, dir.path(), "cni0", subnet, "c1", ip, &maps()).expect("add");
        let b = fresh.batches.lock().expect("lock")[0].clone();
        assert!(b.starts_with("table ip kins_hostport {"), "{b}");
        assert!(b.contains("ct mark 0x4b ip saddr { 127.0.0.0/8, 10.244.1.0/24 } masquerade"));
        assert!(b.ends_with(
            "add rule ip kins_hostport hostports tcp dport 18080 ct mark set 0x4b dnat ip to 10.244.1.5:8080 comment \"c1\"\n\
             add rule ip kins_hostport hostports ip daddr 172.29.1.2 udp dport 53 ct mark set 0x4b dnat ip to 10.244.1.5:5353 comment \"c1\"\n"
        ));
        let listing = r#"{"nftables": [{"metainfo": {}}, {"chain": {"name": "hostports"}},
            {"rule": {"handle": 7, "comment": "c1"}}, {"rule": {"handle": 8, "comment": "c1"}},
            {"rule": {"handle": 9, "comment": "c2"}}]}"#;
        let made = FakeNft {
            listing: Some(listing.into()),
            ..Default::default()
        };
        // Again for c1: its old rules go in the same transaction.
        add(&made, dir.path(), "cni0", subnet, "c1", ip, &maps()[..1]).expect("add");
        assert_eq!(
            made.batches.lock().expect("lock")[0],
            "delete rule ip kins_hostport hostports handle 7\n\
             delete rule ip kins_hostport hostports handle 8\n\
             add rule ip kins_hostport hostports tcp dport 18080 ct mark set 0x4b dnat ip to 10.244.1.5:8080 comment \"c1\"\n"
        );
        assert_eq!(remove(&made, &|c| c != "c1").expect("gc"), ["c2"]);
        assert_eq!(
            made.batches.lock().expect("lock")[1],
            "delete rule ip kins_hostport hostports handle 9\n"
        );
        // Nothing to remove without a table.
        assert!(remove(&fresh, &|_| true).expect("none").is_empty());
    }

    #[test]
    fn bad_mappings_are_refused() {
        let ip: Ipv4Addr = "10.244.1.5".parse().expect("ip");
        for (m, want) in [
            (
                r#"{"hostPort": 80, "containerPort": 80, "protocol": "icmp"}"#,
                "protocol",
            ),
            (r#"{"hostPort": 0, "containerPort": 80}"#, "1-65535"),
            (
                r#"{"hostPort": 80, "containerPort": 80, "hostIP": "nope"}"#,
                "hostIP",
            ),
        ] {
            let m: PortMapping = serde_json::from_str(m).expect("json");
            let e = rules("c1", ip, &[m]).expect_err("bad").to_string();
            assert!(e.contains(want), "{e}");
        }
    }
}

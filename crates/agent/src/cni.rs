//! The pod network through CNI, as the kubelet and containerd run it: the node's
//! configuration list in `<data dir>/etc/cni/net.d` (written by the agent for the built-in
//! choices, from the user's template for `custom`), plugin binaries on a search path (kins'
//! own, `/opt/cni/bin`, Debian's `/usr/lib/cni`), and `cni::runtime` running the chain with
//! the pod's CNI_ARGS and capability arguments (hostPort mappings, bandwidth).
//!
//! The choice of plugin also decides how nodes reach each other's pod CIDRs
//! ([`Backend`]): routes via the other node's IP (host-gw) or the VXLAN overlay.

use std::path::{Path, PathBuf};
use std::time::Instant;

use cni::runtime::{Attachment, ConfList, ProcessExec, Runtime, RuntimeError};
use k8s_openapi::api::core::v1::Pod;
use serde_json::{json, Map, Value};

use crate::{AgentError, Config};

/// The plugins `kins up --cni` offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plugin {
    Kins,
    Bridge,
    Ptp,
    Vxlan,
    Custom,
}

/// How pod traffic crosses between nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// A route to each other node's pod CIDR via that node's IP.
    HostGw,
    /// The VXLAN device [`VXLAN_DEV`]: routes via each node's VTEP, FDB and neighbour
    /// entries kept from the Node objects (flannel's vxlan backend).
    Vxlan,
}

/// The overlay device (flannel calls it `flannel.1`: VNI 1).
pub const VXLAN_DEV: &str = "kins.1";
/// VXLAN's cost in MTU: outer IPv4 (20) + UDP (8) + VXLAN (8) + inner Ethernet (14).
pub const VXLAN_OVERHEAD: u32 = 50;

/// Every choice: name, what it builds.
pub const PLUGINS: &[(&str, &str)] = &[
    ("kins", "kins-bridge (built in, CNI 1.1, hostPort on nftables); cni0 bridge, host-gw routes between nodes"),
    ("bridge", "reference bridge + host-local IPAM + portmap + bandwidth; cni0 bridge, host-gw routes"),
    ("ptp", "reference ptp + host-local IPAM + portmap + bandwidth; a veth and a /32 route per pod, no bridge, host-gw routes"),
    ("vxlan", "reference bridge + host-local on a VXLAN overlay (flannel's vxlan backend): kins.1, VNI 1, UDP 8472, MTU -50"),
    ("custom", "your own conflist (kins up --cni-conf FILE), host-gw routes between nodes"),
];

impl Plugin {
    pub fn parse(s: &str) -> Option<Plugin> {
        Some(match s {
            "kins" => Plugin::Kins,
            "bridge" => Plugin::Bridge,
            "ptp" => Plugin::Ptp,
            "vxlan" => Plugin::Vxlan,
            "custom" => Plugin::Custom,
            _ => return None,
        })
    }

    pub fn backend(self) -> Backend {
        match self {
            Plugin::Vxlan => Backend::Vxlan,
            _ => Backend::HostGw,
        }
    }
}

/// What a configuration list is made from.
#[derive(Debug, Clone)]
pub struct ConfInputs<'a> {
    pub pod_cidr: &'a str,
    pub node_name: &'a str,
    /// The node's uplink MTU (eth0).
    pub link_mtu: u32,
    /// Where host-local and kins-host-local keep their allocation files.
    pub ipam_dir: &'a Path,
    /// The version the chain's plugins all speak.
    pub cni_version: &'a str,
}

/// The configuration list of a built-in choice (pure), or the user's template with
/// `${POD_CIDR}`, `${NODE_NAME}`, `${MTU}`, `${IPAM_DIR}` and `${CNI_VERSION}` replaced.
pub fn conflist(plugin: Plugin, inp: &ConfInputs, template: Option<&str>) -> String {
    let host_local = json!({
        "type": "host-local", "ranges": [[{"subnet": inp.pod_cidr}]],
        "routes": [{"dst": "0.0.0.0/0"}], "dataDir": inp.ipam_dir,
    });
    let tail = [
        json!({"type": "portmap", "capabilities": {"portMappings": true}, "snat": true}),
        json!({"type": "bandwidth", "capabilities": {"bandwidth": true}}),
    ];
    let first = match plugin {
        Plugin::Kins => {
            // One plugin does it all (hostPort too): one process per pod, not three.
            let only = json!({
                "type": "kins-bridge", "bridge": "cni0",
                "capabilities": {"portMappings": true},
                "ipam": {"type": "kins-host-local", "subnet": inp.pod_cidr, "dataDir": inp.ipam_dir},
            });
            let list = json!({"cniVersion": inp.cni_version, "name": "kins", "plugins": [only]});
            return serde_json::to_string_pretty(&list).unwrap_or_default() + "\n";
        }
        Plugin::Bridge => json!({
            "type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": false,
            "hairpinMode": true, "ipam": host_local,
        }),
        Plugin::Ptp => json!({"type": "ptp", "ipMasq": false, "ipam": host_local}),
        Plugin::Vxlan => json!({
            "type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": false,
            "hairpinMode": true, "mtu": inp.link_mtu.saturating_sub(VXLAN_OVERHEAD),
            "ipam": host_local,
        }),
        Plugin::Custom => {
            return template
                .unwrap_or("")
                .replace("${POD_CIDR}", inp.pod_cidr)
                .replace("${NODE_NAME}", inp.node_name)
                .replace("${MTU}", &inp.link_mtu.to_string())
                .replace("${IPAM_DIR}", &inp.ipam_dir.display().to_string())
                .replace("${CNI_VERSION}", inp.cni_version)
        }
    };
    let mut plugins = vec![first];
    plugins.extend(tail);
    let list = json!({"cniVersion": inp.cni_version, "name": "kins", "plugins": plugins});
    serde_json::to_string_pretty(&list).unwrap_or_default() + "\n"
}

/// The capability arguments of a pod: `portMappings` from its containers' hostPorts and
/// `bandwidth` from the `kubernetes.io/ingress-bandwidth` and `egress-bandwidth`
/// annotations (bits per second), as the kubelet passes them.
pub fn capability_args(pod: &Pod) -> Result<Map<String, Value>, String> {
    let mut out = Map::new();
    let spec = pod.spec.clone().unwrap_or_default();
    let mut maps = Vec::new();
    for c in &spec.containers {
        for p in c.ports.iter().flatten() {
            let Some(hp) = p.host_port.filter(|h| *h > 0) else {
                continue;
            };
            let mut m = json!({
                "hostPort": hp, "containerPort": p.container_port,
                "protocol": p.protocol.as_deref().unwrap_or("TCP").to_ascii_lowercase(),
            });
            if let Some(ip) = p.host_ip.as_deref().filter(|s| !s.is_empty()) {
                m["hostIP"] = json!(ip);
            }
            maps.push(m);
        }
    }
    if !maps.is_empty() {
        out.insert("portMappings".into(), Value::Array(maps));
    }
    let ann = pod.metadata.annotations.clone().unwrap_or_default();
    let mut bw = Map::new();
    for (key, dir) in [
        ("kubernetes.io/ingress-bandwidth", "ingress"),
        ("kubernetes.io/egress-bandwidth", "egress"),
    ] {
        if let Some(v) = ann.get(key) {
            let rate = parse_bits(v)
                .ok_or_else(|| format!("annotation {key}: {v:?} is not a quantity like 10M"))?;
            bw.insert(format!("{dir}Rate"), json!(rate));
            // The kubelet's burst: as good as unlimited.
            bw.insert(format!("{dir}Burst"), json!(i32::MAX));
        }
    }
    if !bw.is_empty() {
        out.insert("bandwidth".into(), Value::Object(bw));
    }
    Ok(out)
}

/// A Kubernetes quantity (`10M`, `1Gi`, `500k`) in bits per second.
fn parse_bits(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num.parse().ok()?;
    let mul: f64 = match unit {
        "" => 1.0,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "Ki" => 1024.0,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        _ => return None,
    };
    Some((n * mul) as u64)
}

/// A node's CNI: where its configuration is, how plugins are run.
pub struct NodeCni {
    pub plugin: Plugin,
    pub conf_dir: PathBuf,
    pub ipam_dir: PathBuf,
    runtime: std::sync::Arc<Runtime<ProcessExec>>,
}

fn cni_err(e: RuntimeError) -> AgentError {
    AgentError::Other(e.to_string())
}

impl NodeCni {
    /// The search path: kins' own plugins first (links to the kins binary in the run
    /// directory), then `/opt/cni/bin` and Debian's `/usr/lib/cni`.
    pub fn new(cfg: &Config) -> Result<NodeCni, AgentError> {
        let own = cfg.run_dir.join("cni").join("bin");
        std::fs::create_dir_all(&own).map_err(crate::io(format!("creating {}", own.display())))?;
        let link = own.join(cni::config::PLUGIN_TYPE);
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&cfg.kins_exe, &link)
            .map_err(crate::io(format!("linking {}", link.display())))?;
        let plugin = Plugin::parse(&cfg.cni).unwrap_or(Plugin::Kins);
        Ok(NodeCni {
            plugin,
            conf_dir: cfg.data_dir.join("etc").join("cni").join("net.d"),
            ipam_dir: cfg.run_dir.join("ipam"),
            runtime: std::sync::Arc::new(Runtime {
                exec: ProcessExec,
                path: vec![own, "/opt/cni/bin".into(), "/usr/lib/cni".into()],
                cache_dir: cfg.run_dir.join("cni").join("cache"),
            }),
        })
    }

    /// The newest version every plugin of the chain speaks (1.1.0 when they all do, as
    /// newer reference plugins and kins-bridge do; Debian's 1.1.1 plugins stop at 1.0.0).
    fn negotiate(&self, types: &[&str]) -> String {
        for want in ["1.1.0", "1.0.0"] {
            let all = types.iter().all(|t| {
                self.runtime
                    .version(t, want)
                    .is_ok_and(|v| v.iter().any(|s| s == want))
            });
            if all {
                return want.to_string();
            }
        }
        "1.0.0".into()
    }

    /// Writes the node's configuration list (when it changed) for its pod CIDR.
    pub fn write_conf(
        &self,
        cfg: &Config,
        pod_cidr: &str,
        template: Option<&str>,
    ) -> Result<PathBuf, AgentError> {
        std::fs::create_dir_all(&self.conf_dir)
            .map_err(crate::io(format!("creating {}", self.conf_dir.display())))?;
        let link_mtu = link_mtu("eth0").unwrap_or(1500);
        let mut inp = ConfInputs {
            pod_cidr,
            node_name: &cfg.node_name,
            link_mtu,
            ipam_dir: &self.ipam_dir,
            cni_version: "1.0.0",
        };
        let version = match self.plugin {
            Plugin::Custom => "1.0.0".to_string(),
            p => {
                let probe = conflist(p, &inp, None);
                let types: Vec<String> = ConfList::parse(probe.as_bytes(), "generated")
                    .map(|l| l.types().iter().map(|s| s.to_string()).collect())
                    .unwrap_or_default();
                let types: Vec<&str> = types.iter().map(String::as_str).collect();
                self.negotiate(&types)
            }
        };
        inp.cni_version = &version;
        let text = conflist(self.plugin, &inp, template);
        let path = self.conf_dir.join("10-kins.conflist");
        if std::fs::read_to_string(&path).ok().as_deref() != Some(text.as_str()) {
            let tmp = path.with_extension("tmp");
            std::fs::write(&tmp, &text).map_err(crate::io(format!("writing {}", tmp.display())))?;
            std::fs::rename(&tmp, &path)
                .map_err(crate::io(format!("writing {}", path.display())))?;
            tracing::info!(path = %path.display(), plugin = ?self.plugin, version, "CNI configuration written");
        }
        Ok(path)
    }

    fn load(&self) -> Result<ConfList, AgentError> {
        ConfList::load_dir(&self.conf_dir).map_err(cni_err)
    }

    /// ADD: the chain for a pod; its first IPv4 address and how long ADD took.
    pub async fn add(
        &self,
        pod: &Pod,
        uid: &str,
        netns: &Path,
    ) -> Result<(String, f64), AgentError> {
        let list = self.load()?;
        let caps = capability_args(pod).map_err(AgentError::Other)?;
        let att = attachment(pod, uid, netns, caps);
        let rt = self.runtime.clone();
        let started = Instant::now();
        let res = tokio::task::spawn_blocking(move || {
            rt.status(&list)?;
            rt.add(&list, &att)
        })
        .await
        .map_err(|e| AgentError::Other(format!("CNI ADD: {e}")))?
        .map_err(cni_err)?;
        let ms = started.elapsed().as_secs_f64() * 1e3;
        let ip = res["ips"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|i| i["address"].as_str())
            .find(|a| !a.contains(':'))
            .and_then(|a| a.split('/').next())
            .unwrap_or("")
            .to_string();
        if ip.is_empty() {
            return Err(AgentError::Other(format!(
                "CNI ADD gave no IPv4 address: {res}"
            )));
        }
        Ok((ip, ms))
    }

    /// DEL: with what ADD ran (the cache), else the node's current list.
    pub async fn del(&self, uid: &str, netns: &Path) -> Result<(), AgentError> {
        let list = self.load()?;
        let att = Attachment {
            container_id: uid.to_string(),
            netns: netns.to_path_buf(),
            if_name: "eth0".into(),
            ..Default::default()
        };
        let rt = self.runtime.clone();
        tokio::task::spawn_blocking(move || rt.del(&list, &att))
            .await
            .map_err(|e| AgentError::Other(format!("CNI DEL: {e}")))?
            .map_err(cni_err)
    }

    /// GC: everything held for pods other than `live` (uids) is released.
    pub async fn gc(&self, live: Vec<String>) -> Result<Vec<String>, AgentError> {
        let list = self.load()?;
        let valid: Vec<(String, String)> =
            live.into_iter().map(|u| (u, "eth0".to_string())).collect();
        let rt = self.runtime.clone();
        tokio::task::spawn_blocking(move || rt.gc(&list, &valid))
            .await
            .map_err(|e| AgentError::Other(format!("CNI GC: {e}")))?
            .map_err(cni_err)
    }
}

fn attachment(pod: &Pod, uid: &str, netns: &Path, caps: Map<String, Value>) -> Attachment {
    Attachment {
        container_id: uid.to_string(),
        netns: netns.to_path_buf(),
        if_name: "eth0".into(),
        args: vec![
            ("IgnoreUnknown".into(), "1".into()),
            (
                "K8S_POD_NAMESPACE".into(),
                pod.metadata.namespace.clone().unwrap_or_default(),
            ),
            (
                "K8S_POD_NAME".into(),
                pod.metadata.name.clone().unwrap_or_default(),
            ),
            ("K8S_POD_INFRA_CONTAINER_ID".into(), uid.to_string()),
            ("K8S_POD_UID".into(), uid.to_string()),
        ],
        capability_args: caps,
    }
}

/// The MTU of a link of the current network namespace, None when there is no such link.
/// (Asked over netlink through `ip`: the agent's /sys is the host's.)
pub fn link_mtu(name: &str) -> Option<u32> {
    let out = std::process::Command::new("ip")
        .args(["-j", "link", "show", "dev", name])
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let v: Value = serde_json::from_slice(&out.stdout).ok()?;
    v[0]["mtu"].as_u64().map(|m| m as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs(v: &str) -> ConfInputs<'_> {
        ConfInputs {
            pod_cidr: "10.244.1.0/24",
            node_name: "c-worker",
            link_mtu: 1500,
            ipam_dir: Path::new("/run/kins/c/nodes/c-worker/ipam"),
            cni_version: v,
        }
    }

    #[test]
    fn every_builtin_list_parses_and_has_its_chain() {
        for (p, types, mtu) in [
            (Plugin::Kins, vec!["kins-bridge"], None),
            (Plugin::Bridge, vec!["bridge", "portmap", "bandwidth"], None),
            (Plugin::Ptp, vec!["ptp", "portmap", "bandwidth"], None),
            (
                Plugin::Vxlan,
                vec!["bridge", "portmap", "bandwidth"],
                Some(1450),
            ),
        ] {
            let text = conflist(p, &inputs("1.0.0"), None);
            let l = ConfList::parse(text.as_bytes(), "t").expect("ok");
            assert_eq!(l.types(), types, "{p:?}");
            assert_eq!(l.cni_version, "1.0.0");
            assert_eq!(
                l.plugins[0].get("mtu").and_then(Value::as_u64),
                mtu,
                "{p:?}"
            );
            assert!(text.contains("10.244.1.0/24"));
        }
        let t = r#"{"cniVersion":"${CNI_VERSION}","name":"mine","plugins":[{"type":"x","subnet":"${POD_CIDR}","mtu":${MTU},"n":"${NODE_NAME}","d":"${IPAM_DIR}"}]}"#;
        let l = ConfList::parse(
            conflist(Plugin::Custom, &inputs("0.4.0"), Some(t)).as_bytes(),
            "t",
        )
        .expect("ok");
        assert_eq!(
            Value::Object(l.plugins[0].clone()),
            json!({"type":"x","subnet":"10.244.1.0/24","mtu":1500,"n":"c-worker","d":"/run/kins/c/nodes/c-worker/ipam"})
        );
        assert_eq!(l.cni_version, "0.4.0");
    }

    #[test]
    fn host_ports_and_bandwidth_become_capability_args() {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "p", "annotations": {"kubernetes.io/ingress-bandwidth": "10M", "kubernetes.io/egress-bandwidth": "1Gi"}},
            "spec": {"containers": [
                {"name": "a", "ports": [{"containerPort": 80, "hostPort": 8080}, {"containerPort": 53, "hostPort": 53, "protocol": "UDP", "hostIP": "172.29.1.2"}, {"containerPort": 9000}]},
            ]},
        }))
        .expect("ok");
        assert_eq!(
            Value::Object(capability_args(&pod).expect("ok")),
            json!({
                "portMappings": [
                    {"hostPort": 8080, "containerPort": 80, "protocol": "tcp"},
                    {"hostPort": 53, "containerPort": 53, "protocol": "udp", "hostIP": "172.29.1.2"},
                ],
                "bandwidth": {"ingressRate": 10_000_000u64, "ingressBurst": i32::MAX, "egressRate": 1_073_741_824u64, "egressBurst": i32::MAX},
            })
        );
        let bad: Pod = serde_json::from_value(json!({"metadata": {"name": "p", "annotations": {"kubernetes.io/ingress-bandwidth": "fast"}}})).expect("ok");
        assert!(capability_args(&bad)
            .expect_err("should fail")
            .contains("kubernetes.io/ingress-bandwidth"));
        assert!(capability_args(&Pod::default()).expect("ok").is_empty());
    }
}

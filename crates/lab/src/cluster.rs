//! A cluster's directories and persisted configuration.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::{io_err, LabError};

/// Where a cluster keeps its files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paths {
    pub name: String,
    /// Durable data: store, certificates, logs, kubeconfig (`<base>/<name>`).
    pub data: PathBuf,
    /// Runtime state: pid files, sockets, netns bind mounts (`/run/kins/<name>`).
    pub run: PathBuf,
}

/// The default base of data directories.
pub const DEFAULT_DATA_BASE: &str = "/var/lib/kins";
/// The base of runtime directories.
pub const RUN_BASE: &str = "/run/kins";

/// Cluster names end up in interface names (`kins-<name>`, 15 characters at most), so
/// they are short DNS labels: at most 10 characters.
pub fn check_name(name: &str) -> Result<(), LabError> {
    let ok = !name.is_empty()
        && name.len() <= 10
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && !name.ends_with('-')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if ok {
        Ok(())
    } else {
        Err(LabError::BadName(name.to_string()))
    }
}

impl Paths {
    pub fn new(data_base: &Path, name: &str) -> Result<Paths, LabError> {
        check_name(name)?;
        Ok(Paths {
            name: name.to_string(),
            data: data_base.join(name),
            run: Path::new(RUN_BASE).join(name),
        })
    }

    pub fn config(&self) -> PathBuf {
        self.data.join("cluster.json")
    }
    pub fn kubeconfig(&self) -> PathBuf {
        self.data.join("kubeconfig")
    }
    pub fn logs(&self) -> PathBuf {
        self.data.join("logs")
    }
    pub fn apiserver_data(&self) -> PathBuf {
        self.data.join("apiserver")
    }
    /// The user's configuration list template of a `custom` CNI cluster (copied at `up`).
    pub fn cni_conf(&self) -> PathBuf {
        self.data.join("cni.conflist")
    }
    pub fn supervisor_pid(&self) -> PathBuf {
        self.run.join("supervisor.pid")
    }

    pub fn exists(&self) -> bool {
        self.config().exists()
    }

    /// Creates the directories (data 0700: it holds keys).
    pub fn create_dirs(&self) -> Result<(), LabError> {
        use std::os::unix::fs::PermissionsExt;
        for d in [&self.data, &self.logs(), &self.apiserver_data(), &self.run] {
            std::fs::create_dir_all(d).map_err(io_err(d))?;
        }
        std::fs::set_permissions(&self.data, std::fs::Permissions::from_mode(0o700))
            .map_err(io_err(&self.data))?;
        Ok(())
    }
}

/// What `kins up` decided for a cluster, kept so that restarts keep the same values.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ClusterConfig {
    pub name: String,
    /// Loopback port of the API server.
    pub api_port: u16,
    pub service_cidr: String,
    pub node_port_range: String,
    /// The pod network, a /24 of it per node.
    #[serde(default = "default_cluster_cidr")]
    pub cluster_cidr: String,
    /// The node network (a /24; the bridge has its first address).
    #[serde(default)]
    pub node_net: String,
    /// Index used in host link names.
    #[serde(default)]
    pub node_net_index: u8,
    #[serde(default)]
    pub nodes: Vec<NodeEntry>,
    /// Whether the DNS add-on (kins-dns as kube-system/coredns behind kube-dns) is made.
    #[serde(default = "yes")]
    pub dns: bool,
    /// Whether the ingress add-on (kube-system/kins-ingress behind a LoadBalancer
    /// Service, IngressClass `kins` as the default) is made.
    #[serde(default = "yes")]
    pub ingress: bool,
    /// The CNI plugin (`kins`, `bridge`, `ptp`, `vxlan`, `custom`); fixed for the
    /// cluster's life.
    #[serde(default = "default_cni")]
    pub cni: String,
}

fn default_cni() -> String {
    "kins".into()
}

fn default_cluster_cidr() -> String {
    "10.244.0.0/16".into()
}

fn yes() -> bool {
    true
}

/// One node of a lab cluster.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct NodeEntry {
    pub name: String,
    /// 1-based; the node's IP is the (index+1)-th address of the node network.
    pub index: u32,
}

impl ClusterConfig {
    pub fn load(paths: &Paths) -> Result<ClusterConfig, LabError> {
        let p = paths.config();
        let text = match std::fs::read_to_string(&p) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(LabError::NoSuchCluster(paths.name.clone()))
            }
            Err(e) => return Err(LabError::Io { path: p, source: e }),
        };
        serde_json::from_str(&text).map_err(|source| LabError::Json { path: p, source })
    }

    pub fn save(&self, paths: &Paths) -> Result<(), LabError> {
        let p = paths.config();
        let tmp = p.with_extension("tmp");
        let text = serde_json::to_string_pretty(self).map_err(|source| LabError::Json {
            path: p.clone(),
            source,
        })?;
        std::fs::write(&tmp, text).map_err(io_err(&tmp))?;
        std::fs::rename(&tmp, &p).map_err(io_err(&p))
    }

    pub fn server_url(&self) -> String {
        format!("https://127.0.0.1:{}", self.api_port)
    }

    /// The node network, if one was chosen.
    pub fn node_net(&self) -> Option<crate::topology::NodeNet> {
        crate::topology::parse_node_cidr(&self.node_net, self.node_net_index).ok()
    }

    /// The URL agents use: the bridge address, port 6443.
    pub fn agent_server_url(&self) -> Option<String> {
        self.node_net()
            .map(|n| format!("https://{}:6443", n.gateway()))
    }

    /// The next node name, kind-style: <cluster>-worker, <cluster>-worker2, ...
    pub fn next_node(&self) -> NodeEntry {
        let index = self.nodes.iter().map(|n| n.index).max().unwrap_or(0) + 1;
        let mut i = index;
        loop {
            let name = if i == 1 {
                format!("{}-worker", self.name)
            } else {
                format!("{}-worker{i}", self.name)
            };
            if !self.nodes.iter().any(|n| n.name == name) {
                return NodeEntry { name, index };
            }
            i += 1;
        }
    }
}

/// 6443 when it is free on loopback, else a free port the kernel picks.
pub fn pick_api_port() -> Result<u16, LabError> {
    let bind = |port: u16| std::net::TcpListener::bind(("127.0.0.1", port));
    if bind(6443).is_ok() {
        return Ok(6443);
    }
    let l = bind(0).map_err(io_err(Path::new("127.0.0.1:0")))?;
    l.local_addr()
        .map(|a| a.port())
        .map_err(io_err(Path::new("127.0.0.1:0")))
}

/// Names of the clusters that have data under `data_base`.
pub fn list(data_base: &Path) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(data_base)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().join("cluster.json").exists())
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["kins", "a", "test-1", "abcdefghij"] {
            assert!(check_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "1abc",
            "Abc",
            "a_b",
            "a-",
            "abcdefghijklmnopqrstu",
            "a/b",
            "..",
        ] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn config_round_trip() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = Paths::new(dir.path(), "t1").expect("paths");
        std::fs::create_dir_all(&p.data).expect("mkdir");
        assert!(matches!(
            ClusterConfig::load(&p),
            Err(LabError::NoSuchCluster(_))
        ));
        let c = ClusterConfig {
            name: "t1".into(),
            api_port: 6443,
            service_cidr: "10.96.0.0/12".into(),
            node_port_range: "30000-32767".into(),
            cluster_cidr: "10.244.0.0/16".into(),
            node_net: "172.29.1.0/24".into(),
            node_net_index: 1,
            nodes: vec![],
            dns: true,
            ingress: true,
            cni: "vxlan".into(),
        };
        assert_eq!(c.next_node().name, "t1-worker");
        let mut c2 = c.clone();
        c2.nodes.push(c.next_node());
        assert_eq!(
            c2.next_node(),
            NodeEntry {
                name: "t1-worker2".into(),
                index: 2
            }
        );
        assert_eq!(
            c.agent_server_url().as_deref(),
            Some("https://172.29.1.1:6443")
        );
        c.save(&p).expect("save");
        assert_eq!(ClusterConfig::load(&p).expect("load"), c);
        assert_eq!(list(dir.path()), vec!["t1".to_string()]);
    }
}

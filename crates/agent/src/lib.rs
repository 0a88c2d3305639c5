//! The node agent, kins' kubelet. It registers its Node, renews its Lease, keeps the
//! node's routes to other nodes' pod CIDRs (host-gw) and the masquerade rule for pod
//! egress, and runs every pod bound to its node: a network namespace set up through a
//! CNI plugin, and the pod's containers under per-container shims that outlive the agent.
//!
//! Invariants: talks to the cluster only through the API; all pod state it needs to adopt
//! running pods after a restart is on disk under its run directory; kernel work goes
//! through the `net` crate, the CNI plugin and `ip`/`nft` (never nftables service rules:
//! that is the proxy's).

pub mod client;
pub mod cni;
pub mod lbannounce;
pub mod logs;
pub mod network;
pub mod node;
pub mod pods;
pub mod probes;
pub mod runtime;
pub mod server;
pub mod spec;
pub mod state;
pub mod stream;
pub mod volumes;

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Arc;

/// How an agent runs (`kins agent` flags).
#[derive(Debug, Clone)]
pub struct Config {
    pub cluster: String,
    pub node_name: String,
    /// API server URL, e.g. https://172.29.1.1:6443.
    pub server: String,
    pub token: String,
    /// PEM of the cluster CA.
    pub ca_pem: String,
    /// The node's address (InternalIP).
    pub node_ip: Ipv4Addr,
    /// The cluster (pod) CIDR: pod-to-pod traffic inside it is never NATed.
    pub cluster_cidr: String,
    /// The service CIDR, for the service proxy.
    pub service_cidr: String,
    /// Per-node runtime state (pods, IPAM), e.g. /run/kins/<cluster>/nodes/<node>.
    pub run_dir: PathBuf,
    /// Per-node durable data (logs), e.g. /var/lib/kins/<cluster>/nodes/<node>.
    pub data_dir: PathBuf,
    /// The kins binary, run as CNI plugin (`kins cni`) and as shim (`kins shim`).
    pub kins_exe: PathBuf,
    /// Seconds between lease renewals.
    pub lease_seconds: u64,
    /// The HTTPS port of the agent's endpoint (container logs), on `node_ip`.
    pub kubelet_port: u16,
    /// The cluster's image store, shared by its nodes (/var/lib/kins/<cluster>/images).
    pub images_dir: PathBuf,
    /// The cluster DNS service IP written to pods' resolv.conf (kube-dns, 10.96.0.10).
    pub cluster_dns: String,
    /// The cluster domain (cluster.local).
    pub cluster_domain: String,
    /// Pod traffic may only go to the cluster CIDR and this network (the lab's node
    /// network); anything else is refused at the node. None: masquerade only.
    pub egress_only_to: Option<String>,
    /// The CNI plugin choice (`kins`, `bridge`, `ptp`, `vxlan`, `custom`).
    pub cni: String,
    /// For `custom`: the configuration list template (`${POD_CIDR}`, `${MTU}`, ...).
    pub cni_template: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("kubernetes client: {0}")]
    Kube(#[from] kube::Error),
    #[error("kubernetes client configuration: {0}")]
    Config(String),
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Other(String),
}

pub fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> AgentError {
    let what = what.into();
    move |source| AgentError::Io { what, source }
}

/// Runs the agent until the process ends.
pub async fn run(cfg: Config) -> Result<(), AgentError> {
    let cfg = Arc::new(cfg);
    let client = client::build(&cfg)?;
    std::fs::create_dir_all(cfg.run_dir.join("pods"))
        .map_err(io(format!("creating {}", cfg.run_dir.display())))?;
    std::fs::create_dir_all(cfg.data_dir.join("logs"))
        .map_err(io(format!("creating {}", cfg.data_dir.display())))?;
    let _ = std::fs::remove_file(cfg.run_dir.join("ready"));
    node::register(&client, &cfg).await?;
    tracing::info!(node = %cfg.node_name, ip = %cfg.node_ip, "node registered");
    let heartbeat = tokio::spawn(node::heartbeat(client.clone(), cfg.clone()));
    let (cidr_tx, cidr_rx) = tokio::sync::watch::channel(None);
    let node_cni = Arc::new(cni::NodeCni::new(&cfg)?);
    let net = tokio::spawn(network::run(
        client.clone(),
        cfg.clone(),
        node_cni.clone(),
        cidr_tx,
    ));
    let pods = tokio::spawn(pods::run(client.clone(), cfg.clone(), node_cni, cidr_rx));
    // The service proxy (kube-proxy's share): nftables rules in this node's namespace.
    let node = proxy::NodeConfig {
        node_name: cfg.node_name.clone(),
        node_ip: cfg.node_ip,
        cluster_cidr: cfg.cluster_cidr.clone(),
        service_cidr: cfg.service_cidr.clone(),
    };
    let nft: Arc<dyn proxy::Nft> = Arc::new(proxy::NftCommand {
        program: "nft".into(),
    });
    let conntrack: Arc<dyn proxy::Conntrack> = Arc::new(proxy::ConntrackCommand::default());
    let services = tokio::spawn(proxy::run(client.clone(), node, nft, conntrack));
    // NetworkPolicy: nftables rules in this node's namespace, on the forward hook, which
    // bridged pod traffic passes only with bridge-nf-call-iptables (per namespace).
    enable_bridge_netfilter();
    let policy_nft: Arc<dyn proxy::Nft> = Arc::new(proxy::NftCommand::default());
    let policies = tokio::spawn(netpol::run(
        client.clone(),
        cfg.node_name.clone(),
        policy_nft,
    ));
    // LoadBalancer addresses this node answers for (MetalLB's layer-2 speaker).
    let lb = tokio::spawn(lbannounce::run(client.clone(), cfg.clone()));
    let endpoint = server::bind(&cfg).await?;
    let endpoint = tokio::spawn(endpoint.serve());
    tokio::select! {
        r = heartbeat => tracing::error!(?r, "heartbeat loop ended"),
        r = net => tracing::error!(?r, "network loop ended"),
        r = pods => tracing::error!(?r, "pod loop ended"),
        r = services => tracing::error!(?r, "service proxy ended"),
        r = policies => tracing::error!(?r, "network policy enforcement ended"),
        r = lb => tracing::error!(?r, "load balancer announcer ended"),
        r = endpoint => tracing::error!(?r, "agent endpoint ended"),
    }
    Err(AgentError::Other("an agent loop ended".into()))
}

/// Makes bridged IPv4 traffic of this namespace pass the IP netfilter hooks, so policies
/// see pod-to-pod traffic on the node's bridge. A kernel without br_netfilter is named in
/// the log: policies then apply only to routed traffic.
fn enable_bridge_netfilter() {
    use net::Net;
    const KEY: &str = "net/bridge/bridge-nf-call-iptables";
    let set = net::RtNet::current()
        .map_err(|e| e.to_string())
        .and_then(|n| n.set_sysctl(KEY, "1").map_err(|e| e.to_string()));
    if let Err(e) = set {
        tracing::warn!(error = %e, "cannot set {KEY}: NetworkPolicy applies to routed pod traffic only (the kernel needs br_netfilter for bridged traffic)");
    }
}

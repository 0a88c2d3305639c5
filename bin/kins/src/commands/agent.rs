//! `kins agent`: the node agent. On a lab node it runs inside the node's network
//! namespace (`--netns`, entered before any thread starts); on a real host it runs as is.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

#[derive(clap::Args)]
pub struct Args {
    /// Cluster this agent belongs to (names its state; marks the process for `kins down`).
    #[arg(long, default_value = "kins")]
    pub cluster: String,
    #[arg(long)]
    pub node_name: String,
    /// API server URL.
    #[arg(long)]
    pub server: String,
    /// Bearer token (or --token-file).
    #[arg(long, env = "KINS_AGENT_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    #[arg(long)]
    pub token_file: Option<PathBuf>,
    /// The cluster CA (PEM).
    #[arg(long)]
    pub ca_file: PathBuf,
    /// Network namespace file to run in (lab nodes).
    #[arg(long)]
    pub netns: Option<PathBuf>,
    /// The node's InternalIP (default: the first global IPv4 address).
    #[arg(long)]
    pub node_ip: Option<Ipv4Addr>,
    #[arg(long, default_value = "10.244.0.0/16")]
    pub cluster_cidr: String,
    /// The service CIDR (ClusterIPs the node's proxy translates; the rest is refused).
    #[arg(long, default_value = "10.96.0.0/12")]
    pub service_cidr: String,
    /// Runtime state (default /run/kins/<cluster>/nodes/<node>).
    #[arg(long)]
    pub run_dir: Option<PathBuf>,
    /// Durable data such as logs (default /var/lib/kins/<cluster>/nodes/<node>).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Seconds between lease renewals.
    #[arg(long, default_value_t = 10)]
    pub lease_seconds: u64,
    /// The HTTPS port of the agent's endpoint (container logs), like the kubelet's.
    #[arg(long, default_value_t = 10250)]
    pub kubelet_port: u16,
    /// The cluster's image store (default /var/lib/kins/<cluster>/images).
    #[arg(long)]
    pub images_dir: Option<PathBuf>,
    /// The cluster DNS service IP pods resolve with (dnsPolicy ClusterFirst).
    #[arg(long, default_value = "10.96.0.10")]
    pub cluster_dns: String,
    #[arg(long, default_value = "cluster.local")]
    pub cluster_domain: String,
    /// Refuse pod traffic to anything but the cluster CIDR and this CIDR (the lab passes
    /// its node network: its host routes nothing out).
    #[arg(long)]
    pub egress_only_to: Option<String>,
    /// The CNI plugin: kins, bridge, ptp, vxlan, or custom (with --cni-conf).
    #[arg(long, default_value = "kins", value_parser = ["kins", "bridge", "ptp", "vxlan", "custom"])]
    pub cni: String,
    /// A configuration list template for `--cni custom` (${POD_CIDR}, ${MTU}, ...).
    #[arg(long)]
    pub cni_conf: Option<PathBuf>,
}

/// The first global IPv4 address of the current network namespace.
fn detect_ip() -> anyhow::Result<Ipv4Addr> {
    let out = std::process::Command::new("ip")
        .args(["-4", "-j", "addr", "show", "scope", "global"])
        .output()
        .context("running ip")?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    for link in v.as_array().into_iter().flatten() {
        if link["ifname"]
            .as_str()
            .is_some_and(|n| n.starts_with("cni") || n.starts_with("veth"))
        {
            continue;
        }
        for a in link["addr_info"].as_array().into_iter().flatten() {
            if let Some(ip) = a["local"].as_str().and_then(|s| s.parse().ok()) {
                return Ok(ip);
            }
        }
    }
    bail!("no global IPv4 address found: pass --node-ip")
}

pub fn run(args: Args) -> anyhow::Result<()> {
    if let Some(ns) = &args.netns {
        // Still single-threaded here: setns affects the whole process from now on.
        let f = std::fs::File::open(ns).with_context(|| format!("opening {}", ns.display()))?;
        nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET)
            .with_context(|| format!("entering the network namespace {}", ns.display()))?;
    }
    let token = match (&args.token, &args.token_file) {
        (Some(t), _) => t.clone(),
        (None, Some(f)) => std::fs::read_to_string(f)
            .with_context(|| format!("reading {}", f.display()))?
            .trim()
            .to_string(),
        (None, None) => bail!("--token or --token-file is required"),
    };
    let ca_pem = std::fs::read_to_string(&args.ca_file)
        .with_context(|| format!("reading {}", args.ca_file.display()))?;
    let node_ip = match args.node_ip {
        Some(ip) => ip,
        None => detect_ip()?,
    };
    let data_dir = args.data_dir.clone().unwrap_or_else(|| {
        PathBuf::from(lab::cluster::DEFAULT_DATA_BASE)
            .join(&args.cluster)
            .join("nodes")
            .join(&args.node_name)
    });
    // The cluster's data directory holds the nodes' directories and the shared images.
    let images_dir = args.images_dir.clone().unwrap_or_else(|| {
        data_dir
            .parent()
            .and_then(Path::parent)
            .unwrap_or(Path::new("/var/lib/kins"))
            .join("images")
    });
    let cfg = agent::Config {
        run_dir: args.run_dir.clone().unwrap_or_else(|| {
            PathBuf::from(lab::cluster::RUN_BASE)
                .join(&args.cluster)
                .join("nodes")
                .join(&args.node_name)
        }),
        data_dir,
        cluster: args.cluster,
        node_name: args.node_name,
        server: args.server,
        token,
        ca_pem,
        node_ip,
        cluster_cidr: args.cluster_cidr,
        service_cidr: args.service_cidr,
        kins_exe: std::env::current_exe().context("locating the kins binary")?,
        lease_seconds: args.lease_seconds,
        kubelet_port: args.kubelet_port,
        images_dir,
        cluster_dns: args.cluster_dns.clone(),
        cluster_domain: args.cluster_domain.clone(),
        egress_only_to: args.egress_only_to.clone(),
        cni: args.cni.clone(),
        cni_template: match &args.cni_conf {
            Some(p) => Some(
                std::fs::read_to_string(p)
                    .with_context(|| format!("reading the CNI configuration {}", p.display()))?,
            ),
            None => None,
        },
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            r = agent::run(cfg) => r.map_err(anyhow::Error::from),
            _ = term.recv() => Ok(()),
            _ = tokio::signal::ctrl_c() => Ok(()),
        }
    })
}

//! `kins controller-manager`: node IPAM, node lifecycle, pod GC and the scheduler, in the
//! foreground, talking to the cluster only through its API.

use std::net::SocketAddr;
use std::path::PathBuf;

use super::Usage;

#[derive(clap::Args)]
pub struct Args {
    /// Cluster these controllers belong to (marks the process for `kins down`).
    #[arg(long)]
    pub cluster: String,
    /// Kubeconfig to reach the API server with (its current context).
    #[arg(long)]
    pub kubeconfig: PathBuf,
    /// The pod network, split into one block per node.
    #[arg(long, default_value = "10.244.0.0/16")]
    pub cluster_cidr: String,
    /// Prefix length of each node's pod CIDR.
    #[arg(long, default_value_t = 24)]
    pub node_cidr_mask_size: u8,
    /// How long a node may go without renewing its Lease before it is marked Ready=Unknown
    /// and tainted unreachable (like 20s, 1m).
    #[arg(long, default_value = "20s")]
    pub node_monitor_grace_period: String,
    /// Where to serve Prometheus metrics on /metrics (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub metrics_bind: SocketAddr,
    /// The addresses LoadBalancer Services get theirs from, as FIRST-LAST (like
    /// 172.29.1.200-172.29.1.250); without it, LoadBalancer Services get no address.
    #[arg(long)]
    pub lb_pool: Option<String>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let cidr = controllers::Ipv4Cidr::parse(&args.cluster_cidr)
        .map_err(|e| Usage(format!("--cluster-cidr: {e}")))?;
    let mut cfg = controllers::Config::new(cidr, args.node_cidr_mask_size)
        .map_err(|e| Usage(format!("--node-cidr-mask-size: {e}")))?;
    cfg.node_monitor_grace_period = controllers::parse_duration(&args.node_monitor_grace_period)
        .map_err(|e| Usage(format!("--node-monitor-grace-period: {e}")))?;
    cfg.metrics_bind = Some(args.metrics_bind);
    if let Some(p) = &args.lb_pool {
        let pool = controllers::loadbalancer::Pool::parse(p).ok_or_else(|| {
            Usage(format!(
                "--lb-pool: {p:?}: want FIRST-LAST, two IPv4 addresses, the first not after the last"
            ))
        })?;
        cfg.lb_pool = Some((pool.first, pool.last));
    }
    cfg.instance = format!("kins-controller-manager-{}", args.cluster);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let client = controllers::client_from_kubeconfig(&args.kubeconfig).await?;
        let running = controllers::start(client, cfg).await?;
        tracing::info!(cluster = %args.cluster, metrics = ?running.metrics_addr, "controller manager running");
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        tracing::info!("controller manager stopping");
        running.shutdown().await;
        anyhow::Ok(())
    })
}

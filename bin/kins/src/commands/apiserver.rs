//! `kins apiserver`: run the API server in the foreground.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;

use super::Usage;

#[derive(clap::Args)]
pub struct Args {
    /// Cluster this server belongs to (marks the process for `kins down`).
    #[arg(long, default_value = "kins")]
    pub cluster: String,
    /// Directory of the store, certificates and tokens.
    #[arg(long)]
    pub data_dir: PathBuf,
    /// Address to listen on (repeatable).
    #[arg(long, default_value = "127.0.0.1:6443")]
    pub bind: Vec<SocketAddr>,
    /// Address the `kubernetes` Endpoints point at (default: the first --bind).
    #[arg(long)]
    pub advertise_address: Option<SocketAddr>,
    /// Extra IP address for the serving certificate (repeatable).
    #[arg(long)]
    pub tls_san: Vec<std::net::IpAddr>,
    #[arg(long, default_value = "10.96.0.0/12")]
    pub service_cidr: String,
    #[arg(long, default_value = "30000-32767")]
    pub node_port_range: String,
    /// Watch history kept, in revisions.
    #[arg(long, default_value_t = 10_000)]
    pub history: usize,
    /// Create the DNS add-on (kube-system: coredns Deployment running kins-dns, its
    /// ConfigMap and ServiceAccount, the kube-dns Service) when missing.
    #[arg(long)]
    pub dns_addon: bool,
    /// Create the ingress add-on (kube-system: kins-ingress Deployment, ServiceAccount
    /// and LoadBalancer Service; the default IngressClass `kins`) when missing.
    #[arg(long)]
    pub ingress_addon: bool,
    /// File created once the server serves (removed at start).
    #[arg(long)]
    pub ready_file: Option<PathBuf>,
}

pub fn parse_port_range(s: &str) -> Result<(u16, u16), String> {
    let (a, b) = s
        .split_once('-')
        .ok_or_else(|| format!("{s}: want FROM-TO"))?;
    let a: u16 = a.trim().parse().map_err(|e| format!("{s}: {e}"))?;
    let b: u16 = b.trim().parse().map_err(|e| format!("{s}: {e}"))?;
    if a == 0 || a > b {
        return Err(format!("{s}: FROM must be at least 1 and at most TO"));
    }
    Ok((a, b))
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let mut cfg = apiserver::Config::new(args.data_dir.clone());
    cfg.service_cidr = apiserver::alloc::Cidr::parse(&args.service_cidr)
        .map_err(|e| Usage(format!("--service-cidr {e}")))?;
    cfg.node_port_range = parse_port_range(&args.node_port_range)
        .map_err(|e| Usage(format!("--node-port-range {e}")))?;
    cfg.bind = args.bind.clone();
    cfg.advertise = args.advertise_address.unwrap_or(args.bind[0]);
    cfg.extra_sans = args.tls_san.clone();
    cfg.history = args.history;
    cfg.dns_addon = args.dns_addon;
    cfg.ingress_addon = args.ingress_addon;
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating {}", args.data_dir.display()))?;
    if let Some(r) = &args.ready_file {
        let _ = std::fs::remove_file(r);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let running = apiserver::start(cfg).await?;
        tracing::info!(cluster = %args.cluster, addrs = ?running.addrs, "API server serving");
        if let Some(r) = &args.ready_file {
            std::fs::write(r, format!("{:?}\n", running.addrs))
                .with_context(|| format!("writing {}", r.display()))?;
        }
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        tracing::info!("API server stopping");
        if let Some(r) = &args.ready_file {
            let _ = std::fs::remove_file(r);
        }
        running.shutdown();
        anyhow::Ok(())
    })
}

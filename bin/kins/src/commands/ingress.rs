//! `kins ingress`: the cluster's ingress controller (kins-ingress), as the
//! kube-system/kins-ingress pod runs it. It talks to the API with the pod's
//! service-account token (in-cluster configuration) or a kubeconfig.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;

#[derive(clap::Args)]
pub struct Args {
    /// A kubeconfig (default: the in-cluster service account, then $KUBECONFIG).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// The LoadBalancer Service whose address goes into each Ingress's status,
    /// NAMESPACE/NAME.
    #[arg(long, default_value = "kube-system/kins-ingress")]
    pub publish_service: String,
    /// The IngressClass controller name served.
    #[arg(long, default_value = api::addons::INGRESS_CONTROLLER)]
    pub controller_class: String,
    /// The class the legacy annotation kubernetes.io/ingress.class must name.
    #[arg(long, default_value = "kins")]
    pub ingress_class: String,
    #[arg(long, default_value = "0.0.0.0:80")]
    pub http: SocketAddr,
    #[arg(long, default_value = "0.0.0.0:443")]
    pub https: SocketAddr,
    /// `/healthz` and `/metrics`.
    #[arg(long, default_value = "0.0.0.0:10254")]
    pub metrics: SocketAddr,
    /// Data-path threads, each with its own listeners and upstream pool (default: one
    /// per CPU).
    #[arg(long)]
    pub workers: Option<usize>,
    /// This pod's name, for events (the downward API sets it).
    #[arg(long, env = "POD_NAME")]
    pub pod_name: Option<String>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let (ns, name) = args.publish_service.split_once('/').ok_or_else(|| {
        super::Usage(format!(
            "--publish-service {:?}: want NAMESPACE/NAME",
            args.publish_service
        ))
    })?;
    let opts = ingress::RunOptions {
        http: args.http,
        https: args.https,
        metrics: args.metrics,
        publish_service: (ns.to_string(), name.to_string()),
        identity: ingress::routes::Identity {
            controller: args.controller_class.clone(),
            legacy_name: args.ingress_class.clone(),
        },
        pod_name: args.pod_name.clone(),
        workers: args.workers,
    };
    // The watches and the API calls; the data path has threads of its own.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let client = super::addon_client(args.kubeconfig.as_deref()).await?;
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            r = ingress::run(client, opts) => r.context("kins-ingress")?,
            _ = term.recv() => tracing::info!("kins-ingress stopping"),
            _ = tokio::signal::ctrl_c() => tracing::info!("kins-ingress stopping"),
        }
        anyhow::Ok(())
    })
}

//! `kins dns`: the cluster DNS server (kins-dns), as the kube-system/coredns pods run it.
//! It talks to the API with the pod's service-account token (in-cluster configuration) or
//! a kubeconfig, and reads its Corefile from the coredns ConfigMap.

use std::net::IpAddr;
use std::path::PathBuf;

use anyhow::Context;

#[derive(clap::Args)]
pub struct Args {
    /// A kubeconfig (default: the in-cluster service account, then $KUBECONFIG).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// The ConfigMap holding the Corefile, NAMESPACE/NAME.
    #[arg(long, default_value = "kube-system/coredns")]
    pub configmap: String,
    /// The address the DNS listeners bind.
    #[arg(long, default_value = "0.0.0.0")]
    pub listen: IpAddr,
    /// This pod's name, for events about the Corefile (the downward API sets it).
    #[arg(long, env = "POD_NAME")]
    pub pod_name: Option<String>,
    #[arg(long, env = "POD_NAMESPACE")]
    pub pod_namespace: Option<String>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let (ns, name) = args.configmap.split_once('/').ok_or_else(|| {
        super::Usage(format!(
            "--configmap {:?}: want NAMESPACE/NAME",
            args.configmap
        ))
    })?;
    let opts = dns::RunOptions {
        corefile_configmap: (ns.to_string(), name.to_string()),
        pod_name: args.pod_name.clone(),
        pod_namespace: args.pod_namespace.clone(),
        listen_ip: args.listen,
        ..dns::RunOptions::default()
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let client = super::addon_client(args.kubeconfig.as_deref()).await?;
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            r = dns::run(client, opts) => r.context("kins-dns")?,
            _ = term.recv() => tracing::info!("kins-dns stopping"),
            _ = tokio::signal::ctrl_c() => tracing::info!("kins-dns stopping"),
        }
        anyhow::Ok(())
    })
}

//! `kins supervise`: the cluster's supervisor process (started by `kins up`). It runs the
//! API server, the controller manager and one agent per node, restarts them when they
//! exit, re-reads the cluster on SIGHUP (nodes added or removed), and stops everything on
//! SIGTERM.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::Context;
use lab::supervisor::ChildSpec;
use lab::{ClusterConfig, Paths};

#[derive(clap::Args)]
pub struct Args {
    #[arg(long)]
    pub cluster: String,
}

fn s(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// The LoadBalancer address pool on a node network: x.y.z.200-x.y.z.250.
pub fn lb_pool(net: &lab::topology::NodeNet) -> String {
    let o = net.base.octets();
    format!(
        "{a}.{b}.{c}.200-{a}.{b}.{c}.250",
        a = o[0],
        b = o[1],
        c = o[2]
    )
}

/// The kube-dns address pods resolve with: the service CIDR's tenth address.
fn cluster_dns(service_cidr: &str) -> String {
    apiserver::alloc::Cidr::parse(service_cidr)
        .map(|c| c.nth(10).to_string())
        .unwrap_or_else(|_| "10.96.0.10".into())
}

/// The processes a cluster needs, from its configuration.
pub fn specs(exe: &str, paths: &Paths, cfg: &ClusterConfig) -> Vec<ChildSpec> {
    let mut out = Vec::new();
    let mut api = vec![
        exe.to_string(),
        "apiserver".into(),
        "--cluster".into(),
        cfg.name.clone(),
        "--data-dir".into(),
        s(&paths.apiserver_data()),
        "--bind".into(),
        format!("127.0.0.1:{}", cfg.api_port),
        "--service-cidr".into(),
        cfg.service_cidr.clone(),
        "--node-port-range".into(),
        cfg.node_port_range.clone(),
        "--ready-file".into(),
        s(&super::up::ready_file(paths)),
    ];
    if cfg.dns {
        api.push("--dns-addon".into());
    }
    if cfg.ingress {
        api.push("--ingress-addon".into());
    }
    let agent_url = cfg.agent_server_url();
    if let (Some(net), false) = (cfg.node_net(), cfg.nodes.is_empty()) {
        let gw = format!("{}:6443", net.gateway());
        api.extend([
            "--bind".into(),
            gw.clone(),
            "--advertise-address".into(),
            gw,
        ]);
    }
    out.push(ChildSpec {
        name: "apiserver".into(),
        argv: api,
        log: paths.logs().join("apiserver.log"),
    });
    let mut cm = vec![
        exe.to_string(),
        "controller-manager".into(),
        "--cluster".into(),
        cfg.name.clone(),
        "--kubeconfig".into(),
        s(&paths.kubeconfig()),
        "--cluster-cidr".into(),
        cfg.cluster_cidr.clone(),
    ];
    if let Some(pool) = cfg.node_net().map(|n| lb_pool(&n)) {
        cm.extend(["--lb-pool".into(), pool]);
    }
    out.push(ChildSpec {
        name: "controller-manager".into(),
        argv: cm,
        log: paths.logs().join("controller-manager.log"),
    });
    if let (Some(net), Some(url)) = (cfg.node_net(), agent_url) {
        for n in &cfg.nodes {
            out.push(ChildSpec {
                name: format!("agent-{}", n.name),
                argv: vec![
                    exe.to_string(),
                    "agent".into(),
                    "--cluster".into(),
                    cfg.name.clone(),
                    "--node-name".into(),
                    n.name.clone(),
                    "--netns".into(),
                    s(&super::up::netns_file(paths, &n.name)),
                    "--server".into(),
                    url.clone(),
                    "--token-file".into(),
                    s(&paths.data.join("agent-token")),
                    "--ca-file".into(),
                    s(&paths.apiserver_data().join("pki").join("ca.crt")),
                    "--node-ip".into(),
                    net.node_ip(n.index).to_string(),
                    "--cluster-cidr".into(),
                    cfg.cluster_cidr.clone(),
                    "--service-cidr".into(),
                    cfg.service_cidr.clone(),
                    "--run-dir".into(),
                    s(&paths.run.join("nodes").join(&n.name)),
                    "--data-dir".into(),
                    s(&paths.data.join("nodes").join(&n.name)),
                    "--images-dir".into(),
                    s(&paths.data.join("images")),
                    "--cluster-dns".into(),
                    cluster_dns(&cfg.service_cidr),
                    "--egress-only-to".into(),
                    net.cidr(),
                    "--cni".into(),
                    cfg.cni.clone(),
                ]
                .into_iter()
                .chain(
                    (cfg.cni == "custom")
                        .then(|| ["--cni-conf".to_string(), s(&paths.cni_conf())])
                        .into_iter()
                        .flatten(),
                )
                .collect(),
                log: paths.logs().join(format!("agent-{}.log", n.name)),
            });
        }
    }
    out
}

pub fn run(data_base: &Path, args: Args) -> anyhow::Result<()> {
    let paths = Paths::new(data_base, &args.cluster)?;
    let cfg = ClusterConfig::load(&paths)?;
    paths.create_dirs()?;
    std::fs::write(paths.supervisor_pid(), std::process::id().to_string())
        .with_context(|| format!("writing {}", paths.supervisor_pid().display()))?;
    let exe = std::env::current_exe().context("locating the kins binary")?;
    let exe = exe.to_string_lossy().into_owned();
    let stop = Arc::new(AtomicBool::new(false));
    let reload = Arc::new(AtomicBool::new(false));
    let (s2, r2) = (stop.clone(), reload.clone());
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build();
        let Ok(rt) = rt else {
            return;
        };
        rt.block_on(async {
            use tokio::signal::unix::{signal, SignalKind};
            let (Ok(mut term), Ok(mut hup), Ok(mut int)) = (
                signal(SignalKind::terminate()),
                signal(SignalKind::hangup()),
                signal(SignalKind::interrupt()),
            ) else {
                return;
            };
            loop {
                tokio::select! {
                    _ = term.recv() => break,
                    _ = int.recv() => break,
                    _ = hup.recv() => r2.store(true, Ordering::SeqCst),
                }
            }
        });
        s2.store(true, Ordering::SeqCst);
    });
    tracing::info!(cluster = %cfg.name, "supervisor started");
    let mut last = cfg;
    lab::supervisor::run(
        || {
            if let Ok(c) = ClusterConfig::load(&paths) {
                last = c;
            }
            specs(&exe, &paths, &last)
        },
        stop,
        reload,
    )?;
    let _ = std::fs::remove_file(paths.supervisor_pid());
    tracing::info!(cluster = %args.cluster, "supervisor stopped");
    Ok(())
}

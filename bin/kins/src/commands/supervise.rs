//! `kins supervise`: the cluster's supervisor process (started by `kins up`).

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

pub fn run(data_base: &Path, args: Args) -> anyhow::Result<()> {
    let paths = Paths::new(data_base, &args.cluster)?;
    let cfg = ClusterConfig::load(&paths)?;
    paths.create_dirs()?;
    std::fs::write(paths.supervisor_pid(), std::process::id().to_string())
        .with_context(|| format!("writing {}", paths.supervisor_pid().display()))?;
    let exe = std::env::current_exe().context("locating the kins binary")?;
    let exe = exe.to_string_lossy().into_owned();
    let apiserver = ChildSpec {
        name: "apiserver".into(),
        argv: vec![
            exe,
            "apiserver".into(),
            "--cluster".into(),
            cfg.name.clone(),
            "--data-dir".into(),
            paths.apiserver_data().to_string_lossy().into_owned(),
            "--bind".into(),
            format!("127.0.0.1:{}", cfg.api_port),
            "--service-cidr".into(),
            cfg.service_cidr.clone(),
            "--node-port-range".into(),
            cfg.node_port_range.clone(),
            "--ready-file".into(),
            super::up::ready_file(&paths).to_string_lossy().into_owned(),
        ],
        log: paths.logs().join("apiserver.log"),
    };
    let stop = Arc::new(AtomicBool::new(false));
    let s2 = stop.clone();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build();
        if let Ok(rt) = rt {
            rt.block_on(async {
                let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
                let int = tokio::signal::ctrl_c();
                tokio::select! {
                    _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending::<()>().await } } => {}
                    _ = int => {}
                }
            });
        }
        s2.store(true, Ordering::SeqCst);
    });
    tracing::info!(cluster = %cfg.name, "supervisor started");
    lab::supervisor::run(vec![apiserver], stop)?;
    let _ = std::fs::remove_file(paths.supervisor_pid());
    tracing::info!(cluster = %cfg.name, "supervisor stopped");
    Ok(())
}

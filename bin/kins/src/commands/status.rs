//! `kins status`: the clusters under the data directory and whether they run.

use std::path::Path;

use lab::{ClusterConfig, Paths};

#[derive(clap::Args)]
pub struct Args {}

pub fn run(data_base: &Path, _args: Args) -> anyhow::Result<()> {
    let names = lab::cluster::list(data_base);
    if names.is_empty() {
        println!("no clusters under {}", data_base.display());
        return Ok(());
    }
    println!(
        "{:<20} {:<9} {:<26} {:<7} {:<10} KUBECONFIG",
        "NAME", "STATE", "API", "CNI", "PROCESSES"
    );
    for name in names {
        let paths = Paths::new(data_base, &name)?;
        let cfg = ClusterConfig::load(&paths)?;
        let procs = lab::procs::find(&name);
        let state = if super::up::supervisor_alive(&paths) && super::up::ready_file(&paths).exists()
        {
            "running"
        } else if procs.is_empty() {
            "stopped"
        } else {
            "degraded"
        };
        println!(
            "{:<20} {:<9} {:<26} {:<7} {:<10} {}",
            name,
            state,
            cfg.server_url(),
            cfg.cni,
            procs.len(),
            paths.kubeconfig().display()
        );
    }
    Ok(())
}

//! `kins down`: stop every process of a cluster and remove its runtime state; `--purge`
//! also deletes its data. Works from names alone, so it also cleans up after kill -9.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use lab::Paths;

#[derive(clap::Args)]
pub struct Args {
    #[arg(long, default_value = "kins")]
    pub name: String,
    /// Also delete the cluster's data (store, certificates, logs, kubeconfig).
    #[arg(long)]
    pub purge: bool,
}

pub fn run(data_base: &Path, args: Args) -> anyhow::Result<()> {
    let paths = Paths::new(data_base, &args.name)?;
    let stopped = lab::procs::stop_all(&args.name, Duration::from_secs(5));
    if paths.run.exists() {
        std::fs::remove_dir_all(&paths.run)
            .with_context(|| format!("removing {}", paths.run.display()))?;
    }
    if args.purge && paths.data.exists() {
        std::fs::remove_dir_all(&paths.data)
            .with_context(|| format!("removing {}", paths.data.display()))?;
    }
    eprintln!(
        "cluster {:?} is down ({stopped} process{} stopped{})",
        args.name,
        if stopped == 1 { "" } else { "es" },
        if args.purge { ", data deleted" } else { "" }
    );
    Ok(())
}

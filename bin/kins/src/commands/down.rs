//! `kins down`: stop every process of a cluster and remove every kernel object it made —
//! namespaces, links, mounts — and its runtime state; `--purge` also deletes its data.
//! Works from names alone, so it also cleans up after kill -9 or a crashed `kins up`.

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
    let r = lab::cleanup::everything(&paths, Duration::from_secs(5))?;
    let (stopped, unmounted, links, tables) = (r.processes, r.mounts, r.links, r.tables);
    if args.purge && paths.data.exists() {
        std::fs::remove_dir_all(&paths.data)
            .with_context(|| format!("removing {}", paths.data.display()))?;
    }
    eprintln!(
        "cluster {:?} is down: {stopped} process{} stopped, {unmounted} namespace{} and {links} link{} and {tables} table{} removed{}",
        args.name,
        if stopped == 1 { "" } else { "es" },
        if unmounted == 1 { "" } else { "s" },
        if links == 1 { "" } else { "s" },
        if tables == 1 { "" } else { "s" },
        if args.purge { ", data deleted" } else { "" }
    );
    Ok(())
}

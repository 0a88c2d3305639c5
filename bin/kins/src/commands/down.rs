//! `kins down`: stop every process of a cluster and remove every kernel object it made —
//! namespaces, links, mounts — and its runtime state; `--purge` also deletes its data.
//! Works from names alone, so it also cleans up after kill -9 or a crashed `kins up`.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use lab::{topology, Paths};

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
    // Containers whose shims were killed are found by the namespace they run in.
    let stopped = stopped
        + lab::procs::kill_in_netns(&topology::mounts_under(&paths.run), Duration::from_secs(2));
    // Namespace files and any other mount under the runtime dir (nftables tables, routes
    // and pod veths live inside the node namespaces and go with them).
    let unmounted = topology::unmount_all(&paths.run);
    let mut links = 0;
    for l in topology::cluster_links(&args.name) {
        match topology::delete_link(&l) {
            Ok(()) => links += 1,
            Err(e) => eprintln!("kins: {e}"),
        }
    }
    let tables = usize::from(topology::delete_host_table(&args.name));
    if paths.run.exists() {
        std::fs::remove_dir_all(&paths.run)
            .with_context(|| format!("removing {}", paths.run.display()))?;
    }
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

//! `kins shim`: owns one container. Reads `<state-dir>/config.json` (a
//! `runtime::container::ContainerConfig`) and runs `runtime::container::shim::run`, which
//! forks the container and records pid, start, exit code and reason in the state
//! directory. Started detached by the agent; single-threaded (it forks).

use std::path::PathBuf;

use anyhow::Context;
use runtime::container::ContainerConfig;

#[derive(clap::Args)]
pub struct Args {
    /// Cluster this shim belongs to (marks the process for `kins down`).
    #[arg(long)]
    pub cluster: String,
    #[arg(long)]
    pub node: String,
    /// Holds config.json; pid, started, exit, reason, finished and error files go here.
    #[arg(long)]
    pub state_dir: PathBuf,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let path = args.state_dir.join("config.json");
    let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    let cfg: ContainerConfig =
        serde_json::from_slice(&bytes).with_context(|| format!("parsing {}", path.display()))?;
    tracing::debug!(cluster = %args.cluster, node = %args.node, container = %cfg.id, "shim");
    runtime::container::shim::run(&cfg, &args.state_dir)
        .with_context(|| format!("container {}", cfg.id))
}

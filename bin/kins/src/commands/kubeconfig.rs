//! `kins kubeconfig`: print a cluster's kubeconfig.

use std::path::Path;

use anyhow::Context;
use lab::Paths;

#[derive(clap::Args)]
pub struct Args {
    #[arg(long, default_value = "kins")]
    pub name: String,
    /// Print only the path of the file.
    #[arg(long)]
    pub path: bool,
}

pub fn run(data_base: &Path, args: Args) -> anyhow::Result<()> {
    let paths = Paths::new(data_base, &args.name)?;
    if !paths.exists() {
        return Err(lab::LabError::NoSuchCluster(args.name).into());
    }
    if args.path {
        println!("{}", paths.kubeconfig().display());
        return Ok(());
    }
    let text = std::fs::read_to_string(paths.kubeconfig())
        .with_context(|| format!("reading {}", paths.kubeconfig().display()))?;
    print!("{text}");
    Ok(())
}

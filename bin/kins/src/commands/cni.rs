//! `kins cni`: the CNI plugin `kins-bridge`, as a container runtime calls one (CNI_COMMAND
//! and the other CNI_* variables in the environment, the network configuration on stdin,
//! the result, or an error object with exit code 1, on stdout; also run as `kins-bridge`
//! through a link named so); and `kins cni ls`, the plugins a cluster can be made with.

use std::io::{IsTerminal, Read, Write};
use std::path::Path;

use anyhow::Context;

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub command: Option<CniCommand>,
}

#[derive(clap::Subcommand)]
pub enum CniCommand {
    /// The CNI plugins `kins up --cni` offers; `*` marks the one a cluster runs.
    Ls {
        /// The cluster whose plugin is marked (default: kins, if it exists).
        #[arg(long, default_value = "kins")]
        name: String,
    },
}

pub fn run(data_base: &Path, args: Args) -> anyhow::Result<()> {
    match args.command {
        Some(CniCommand::Ls { name }) => ls(data_base, &name),
        None => plugin(),
    }
}

fn ls(data_base: &Path, name: &str) -> anyhow::Result<()> {
    let paths = lab::Paths::new(data_base, name)?;
    let current = lab::ClusterConfig::load(&paths).ok().map(|c| c.cni);
    println!("  {:<8} WHAT IT BUILDS", "NAME");
    for (n, what) in agent::cni::PLUGINS {
        let mark = if current.as_deref() == Some(n) {
            "*"
        } else {
            " "
        };
        println!("{mark} {n:<8} {what}");
    }
    if let Some(c) = current {
        println!(
            "\ncluster {name:?} runs {c}; each node's list is in {}/nodes/<node>/etc/cni/net.d",
            paths.data.display()
        );
    }
    Ok(())
}

/// The plugin itself: a CNI plugin takes everything from its environment and stdin.
pub fn plugin() -> anyhow::Result<()> {
    let command = std::env::var("CNI_COMMAND").unwrap_or_default();
    let env = cni::CniEnv::from_process();
    let mut config = Vec::new();
    // A runtime always pipes the configuration; a person asking VERSION may not.
    if !std::io::stdin().is_terminal() {
        std::io::stdin()
            .read_to_end(&mut config)
            .context("reading the network configuration from stdin")?;
    }
    let out = cni::run(&command, &env, &config);
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(out.stdout.as_bytes())
        .and_then(|()| stdout.flush())
        .context("writing the result")?;
    if out.exit != 0 {
        // The error object is on stdout already, as the CNI specification wants.
        std::process::exit(i32::from(out.exit));
    }
    Ok(())
}

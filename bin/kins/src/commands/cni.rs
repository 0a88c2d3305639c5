//! `kins cni`: the CNI plugin `kins-bridge`, as a container runtime calls one: CNI_COMMAND
//! and the other CNI_* variables in the environment, the network configuration on stdin,
//! the result (or an error object, with exit code 1) on stdout.

use std::io::{IsTerminal, Read, Write};

use anyhow::Context;

/// No flags: a CNI plugin takes everything from its environment and stdin.
#[derive(clap::Args)]
pub struct Args {}

pub fn run(_args: Args) -> anyhow::Result<()> {
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

//! `kins pause`: the first process of a pod's shared PID namespace
//! (`shareProcessNamespace: true`), like Kubernetes' pause container: it holds the
//! namespace, reaps the orphans its containers leave, and ends on SIGTERM or SIGINT.

use anyhow::Context;
use nix::sys::signal::{SigSet, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};

#[derive(clap::Args)]
pub struct Args {
    /// Cluster this process belongs to (marks it for `kins down`).
    #[arg(long)]
    pub cluster: String,
}

pub fn run(_args: Args) -> anyhow::Result<()> {
    let mut set = SigSet::empty();
    for s in [Signal::SIGCHLD, Signal::SIGTERM, Signal::SIGINT] {
        set.add(s);
    }
    set.thread_block().context("blocking signals")?;
    loop {
        match set.wait().context("waiting for signals")? {
            Signal::SIGCHLD => loop {
                match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                    Ok(WaitStatus::StillAlive) | Err(_) => break,
                    Ok(_) => {}
                }
            },
            _ => return Ok(()),
        }
    }
}

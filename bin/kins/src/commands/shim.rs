//! `kins shim`: owns one container process. It enters the pod's network namespace, starts
//! the process with its output going to the container's log, records the pid, and when
//! the process ends records its exit code, so that an agent restart loses nothing. It is
//! started detached by the agent and stays single-threaded.

use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::Context;

#[derive(clap::Args)]
pub struct Args {
    /// Cluster this shim belongs to (marks the process for `kins down`).
    #[arg(long)]
    pub cluster: String,
    #[arg(long)]
    pub node: String,
    /// Where pid, started, exit, finished and error files go.
    #[arg(long)]
    pub state_dir: PathBuf,
    /// The container's log file (stdout and stderr).
    #[arg(long)]
    pub log: PathBuf,
    /// Network namespace file to run in.
    #[arg(long)]
    pub netns: Option<PathBuf>,
    #[arg(long)]
    pub workdir: Option<PathBuf>,
    /// NAME=VALUE (repeatable).
    #[arg(long)]
    pub env: Vec<String>,
    /// The command and its arguments.
    #[arg(last = true, required = true)]
    pub argv: Vec<String>,
}

fn now() -> String {
    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn put(dir: &Path, name: &str, value: &str) -> anyhow::Result<()> {
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, value).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, dir.join(name)).with_context(|| format!("writing {name}"))
}

/// Go's wording for a failed exec, which users of kubectl know.
fn exec_error(cmd: &str, e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => {
            format!("exec: \"{cmd}\": executable file not found in $PATH")
        }
        std::io::ErrorKind::PermissionDenied => format!("exec: \"{cmd}\": permission denied"),
        _ => format!("exec: \"{cmd}\": {e}"),
    }
}

pub fn run(args: Args) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.state_dir)
        .with_context(|| format!("creating {}", args.state_dir.display()))?;
    if let Some(ns) = &args.netns {
        let f = std::fs::File::open(ns).with_context(|| format!("opening {}", ns.display()))?;
        nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET)
            .with_context(|| format!("entering the network namespace {}", ns.display()))?;
    }
    if let Some(parent) = args.log.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    let mut log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&args.log)
        .with_context(|| format!("opening {}", args.log.display()))?;
    let err = log.try_clone()?;
    let (program, rest) = args.argv.split_first().context("no command")?;
    let mut cmd = Command::new(program);
    cmd.args(rest)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(err);
    cmd.env_clear();
    cmd.env(
        "PATH",
        "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    );
    cmd.env("HOME", "/root");
    for kv in &args.env {
        if let Some((k, v)) = kv.split_once('=') {
            cmd.env(k, v);
        }
    }
    if let Some(wd) = &args.workdir {
        cmd.current_dir(wd);
    }
    let started = now();
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            let msg = exec_error(program, &e);
            let _ = writeln!(log, "{msg}");
            put(&args.state_dir, "finished", &now())?;
            put(&args.state_dir, "error", &msg)?;
            return Ok(());
        }
    };
    put(&args.state_dir, "started", &started)?;
    put(&args.state_dir, "pid", &child.id().to_string())?;
    let status = child.wait().context("waiting for the container")?;
    let code = status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0));
    put(&args.state_dir, "finished", &now())?;
    put(&args.state_dir, "exit", &code.to_string())?;
    Ok(())
}

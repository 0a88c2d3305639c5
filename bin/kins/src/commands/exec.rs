//! `kins exec`: runs a command inside a running container (exec probes, debugging). Reads
//! `<state-dir>/config.json` and `<state-dir>/pid`, enters the container and runs the
//! command with this process's stdin, stdout and stderr; ends with the command's exit code
//! (128 + signal), or 126 (cannot run) / 127 (not found) with runc's message on stderr.
//! Single-threaded (it forks and joins namespaces).

use std::path::PathBuf;
use std::time::Duration;

#[derive(clap::Args)]
pub struct Args {
    /// The container's state directory (config.json and pid, as its shim wrote them).
    #[arg(long)]
    pub state_dir: PathBuf,
    /// Kill the command (exit code 137) after this many milliseconds.
    #[arg(long)]
    pub timeout_ms: Option<u64>,
    /// The command and its arguments, after `--`.
    #[arg(last = true, required = true)]
    pub command: Vec<String>,
}

pub fn run(args: Args) -> ! {
    let timeout = args.timeout_ms.map(Duration::from_millis);
    let code = match runtime::container::exec::run(&args.state_dir, &args.command, timeout) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("{e}");
            e.exit_code()
        }
    };
    std::process::exit(code)
}

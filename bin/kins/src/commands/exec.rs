//! `kins exec`: runs a command inside a running container (exec probes, `kubectl exec`).
//! Reads `<state-dir>/config.json` and `<state-dir>/pid`, enters the container and runs
//! the command with this process's stdin, stdout and stderr; ends with the command's exit
//! code (128 + signal), or 126 (cannot run) / 127 (not found) with runc's message on
//! stderr, or in `--error-file` when given (so that a caller can tell a command that did
//! not start from one that printed the same words). Single-threaded (it forks and joins
//! namespaces).

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
    /// stdin is a terminal: make it the command's controlling terminal.
    #[arg(long)]
    pub tty: bool,
    /// Write why the command could not be run here instead of to stderr.
    #[arg(long)]
    pub error_file: Option<PathBuf>,
    /// The command and its arguments, after `--`.
    #[arg(last = true, required = true)]
    pub command: Vec<String>,
}

pub fn run(args: Args) -> ! {
    let opts = runtime::container::exec::Options {
        timeout: args.timeout_ms.map(Duration::from_millis),
        tty: args.tty,
    };
    // Opened before the container's mount namespace is joined (the path is the host's).
    let mut error_file = args
        .error_file
        .as_ref()
        .and_then(|f| std::fs::File::create(f).ok());
    let code = match runtime::container::exec::run(&args.state_dir, &args.command, &opts) {
        Ok(code) => code,
        Err(e) => {
            use std::io::Write;
            let written = error_file
                .as_mut()
                .is_some_and(|f| f.write_all(e.to_string().as_bytes()).is_ok());
            if !written {
                eprintln!("{e}");
            }
            e.exit_code()
        }
    };
    std::process::exit(code)
}

//! `kins`: Kubernetes in namespaces. A thin binary: each command is one file in
//! `commands/`, calling into the libraries.

mod commands;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "kins",
    version,
    about = "Kubernetes in namespaces: a small Kubernetes-compatible cluster on Linux namespaces"
)]
struct Cli {
    /// Base directory of cluster data (one folder per cluster).
    #[arg(long, global = true, env = "KINS_DATA_DIR", default_value = lab::cluster::DEFAULT_DATA_BASE)]
    data_dir: PathBuf,
    #[command(subcommand)]
    command: Command,
}

// Parsed once per process: the size of the largest variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Create (or start again) a cluster and wait until its API answers.
    Up(commands::up::Args),
    /// The chapter's first example: a 2-node cluster, the nginx + curl sidecar pod, its log.
    Demo(commands::demo::Args),
    /// Stop a cluster and remove everything it made; --purge also deletes its data.
    Down(commands::down::Args),
    /// List clusters and whether they run.
    Status(commands::status::Args),
    /// Print a cluster's kubeconfig.
    Kubeconfig(commands::kubeconfig::Args),
    /// Run the API server in the foreground.
    Apiserver(commands::apiserver::Args),
    /// A cluster's nodes: ls, add, rm, exec.
    Node(commands::node::Args),
    /// A cluster's images: load (docker save / OCI archives), ls, rm, build-host.
    Image(commands::image::Args),
    /// Run a node agent (the kubelet) in the foreground.
    Agent(commands::agent::Args),
    /// Run a cluster's supervisor in the foreground (started by `kins up`).
    #[command(hide = true)]
    Supervise(commands::supervise::Args),
    /// Run the cluster DNS server (kins-dns) in the foreground, as the coredns pods do.
    Dns(commands::dns::Args),
    /// Run the ingress controller (kins-ingress) in the foreground, as the
    /// kube-system/kins-ingress pod does.
    Ingress(commands::ingress::Args),
    /// Run the controller manager (node IPAM, node lifecycle, scheduler) in the foreground.
    ControllerManager(commands::controller_manager::Args),
    /// CNI: `kins cni ls` lists the plugins; without a subcommand, the built-in plugin
    /// kins-bridge (CNI_COMMAND and friends in the environment).
    Cni(commands::cni::Args),
    /// The first process of a pod's shared PID namespace (started by the agent).
    #[command(hide = true)]
    Pause(commands::pause::Args),
    /// Own one container process (started by the agent).
    #[command(hide = true)]
    Shim(commands::shim::Args),
    /// Run a command inside a running container (exec probes).
    #[command(hide = true)]
    Exec(commands::exec::Args),
    /// The e2e test image's program (serve-hostname, connect, probe), as /agnhost in the
    /// image registry.k8s.io/e2e-test-images/agnhost runs it.
    #[command(hide = true, disable_help_flag = true)]
    Agnhost(commands::agnhost::Args),
}

fn main() -> ExitCode {
    // Run through a link named like a CNI plugin type (the agent's plugin folder), kins is
    // that plugin.
    let argv0 = std::env::args_os().next().unwrap_or_default();
    if Path::new(&argv0)
        .file_name()
        .is_some_and(|n| n == "kins-bridge")
    {
        return match commands::cni::plugin() {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("kins-bridge: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    // Run as /agnhost (the e2e test image), kins is agnhost.
    if Path::new(&argv0)
        .file_name()
        .is_some_and(|n| n == "agnhost")
    {
        let args: Result<Vec<String>, _> = std::env::args_os()
            .skip(1)
            .map(std::ffi::OsString::into_string)
            .collect();
        return match args {
            Ok(a) => commands::agnhost::main(&a),
            Err(bad) => {
                eprintln!("agnhost: argument {bad:?} is not UTF-8");
                ExitCode::from(2)
            }
        };
    }
    let cli = Cli::parse();
    let quiet = matches!(
        cli.command,
        Command::Up(_)
            | Command::Demo(_)
            | Command::Down(_)
            | Command::Status(_)
            | Command::Kubeconfig(_)
            | Command::Exec(_)
            | Command::Agnhost(_)
    );
    let default = if quiet {
        "warn"
    } else if matches!(cli.command, Command::Dns(_)) {
        // hickory-server logs every query at info: the Corefile's `log` plugin decides.
        "info,hickory_server=warn,hickory_proto=warn"
    } else {
        "info"
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colours only on a terminal: logs in files and containers stay plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let result = match cli.command {
        Command::Up(a) => commands::up::run(&cli.data_dir, a),
        Command::Demo(a) => commands::demo::run(&cli.data_dir, a),
        Command::Down(a) => commands::down::run(&cli.data_dir, a),
        Command::Status(a) => commands::status::run(&cli.data_dir, a),
        Command::Kubeconfig(a) => commands::kubeconfig::run(&cli.data_dir, a),
        Command::Apiserver(a) => commands::apiserver::run(a),
        Command::Supervise(a) => commands::supervise::run(&cli.data_dir, a),
        Command::Node(a) => commands::node::run(&cli.data_dir, a),
        Command::Image(a) => commands::image::run(&cli.data_dir, a),
        Command::Agent(a) => commands::agent::run(a),
        Command::Shim(a) => commands::shim::run(a),
        Command::Pause(a) => commands::pause::run(a),
        Command::Exec(a) => commands::exec::run(a),
        Command::ControllerManager(a) => commands::controller_manager::run(a),
        Command::Dns(a) => commands::dns::run(a),
        Command::Ingress(a) => commands::ingress::run(a),
        Command::Cni(a) => commands::cni::run(&cli.data_dir, a),
        // Its own exit codes and messages, as upstream's.
        Command::Agnhost(a) => return commands::agnhost::run(&a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kins: {e:#}");
            ExitCode::from(commands::exit_code(&e))
        }
    }
}

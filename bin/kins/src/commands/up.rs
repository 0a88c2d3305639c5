//! `kins up`: create or restart a cluster, wait for its API, print how to use it.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use lab::{ClusterConfig, Paths};

use super::Usage;

#[derive(clap::Args)]
pub struct Args {
    /// Cluster name (1-20 lower-case letters, digits, '-').
    #[arg(long, default_value = "kins")]
    pub name: String,
    /// Number of worker nodes (0: control plane only).
    #[arg(long, default_value_t = 0)]
    pub nodes: u32,
    /// Service CIDR.
    #[arg(long, default_value = "10.96.0.0/12")]
    pub service_cidr: String,
    /// NodePort range.
    #[arg(long, default_value = "30000-32767")]
    pub node_port_range: String,
    /// Loopback port of the API server (default: 6443 when free, else any free port).
    #[arg(long)]
    pub api_port: Option<u16>,
    /// Seconds to wait for the API.
    #[arg(long, default_value_t = 60)]
    pub timeout: u64,
}

/// Whether the supervisor of a cluster is alive.
pub fn supervisor_alive(paths: &Paths) -> bool {
    std::fs::read_to_string(paths.supervisor_pid())
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok())
        .is_some_and(|pid| {
            lab::procs::find(&paths.name)
                .iter()
                .any(|p| p.pid == pid && p.role == "supervise")
        })
}

pub fn ready_file(paths: &Paths) -> std::path::PathBuf {
    paths.run.join("apiserver.ready")
}

/// Waits until the API server has said it is ready and accepts connections.
pub fn wait_ready(paths: &Paths, cfg: &ClusterConfig, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if ready_file(paths).exists()
            && std::net::TcpStream::connect(("127.0.0.1", cfg.api_port)).is_ok()
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            let log = paths.logs().join("apiserver.log");
            let tail = std::fs::read_to_string(&log).unwrap_or_default();
            let tail: Vec<&str> = tail.lines().rev().take(15).collect();
            bail!(
                "the API server of cluster {} did not become ready within {}s; last lines of {}:\n{}",
                paths.name,
                timeout.as_secs(),
                log.display(),
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

pub fn run(data_base: &Path, args: Args) -> anyhow::Result<()> {
    let start = Instant::now();
    let paths = Paths::new(data_base, &args.name)?;
    if args.nodes > 0 {
        return Err(Usage(format!(
            "--nodes {}: this build runs the control plane only; nodes arrive with the node agent (use --nodes 0)",
            args.nodes
        ))
        .into());
    }
    apiserver::alloc::Cidr::parse(&args.service_cidr)
        .map_err(|e| Usage(format!("--service-cidr {e}")))?;
    super::apiserver::parse_port_range(&args.node_port_range)
        .map_err(|e| Usage(format!("--node-port-range {e}")))?;
    paths.create_dirs()?;
    let cfg = match ClusterConfig::load(&paths) {
        Ok(c) => c,
        Err(lab::LabError::NoSuchCluster(_)) => {
            let c = ClusterConfig {
                name: args.name.clone(),
                api_port: match args.api_port {
                    Some(p) => p,
                    None => lab::cluster::pick_api_port()?,
                },
                service_cidr: args.service_cidr.clone(),
                node_port_range: args.node_port_range.clone(),
                nodes: args.nodes,
            };
            c.save(&paths)?;
            c
        }
        Err(e) => return Err(e.into()),
    };
    // Credentials first, so the kubeconfig exists as soon as the API answers.
    let pki = apiserver::pki::Pki::load_or_create(&paths.apiserver_data().join("pki"))?;
    let admin = pki.admin()?;
    lab::kubeconfig::write(
        &paths.kubeconfig(),
        &cfg.name,
        &lab::kubeconfig::Credentials {
            server: &cfg.server_url(),
            ca_pem: &pki.ca_cert_pem,
            cert_pem: &admin.cert_pem,
            key_pem: &admin.key_pem,
        },
    )?;
    if !supervisor_alive(&paths) {
        // Anything left of an earlier run (kill -9, crash) goes first.
        lab::procs::stop_all(&cfg.name, Duration::from_secs(2));
        let _ = std::fs::remove_file(ready_file(&paths));
        let exe = std::env::current_exe().context("locating the kins binary")?;
        let log_path = paths.logs().join("supervisor.log");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .with_context(|| format!("opening {}", log_path.display()))?;
        let err = log.try_clone()?;
        use std::os::unix::process::CommandExt;
        Command::new(exe)
            .arg("--data-dir")
            .arg(data_base)
            .args(["supervise", "--cluster", &cfg.name])
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .process_group(0)
            .spawn()
            .context("starting the supervisor")?;
    }
    wait_ready(&paths, &cfg, Duration::from_secs(args.timeout))?;
    eprintln!(
        "cluster {:?} is up in {:.2}s: API https://127.0.0.1:{}, data {}",
        cfg.name,
        start.elapsed().as_secs_f64(),
        cfg.api_port,
        paths.data.display()
    );
    println!("export KUBECONFIG={}", paths.kubeconfig().display());
    Ok(())
}

//! `kins up`: create or restart a cluster — its node network, node namespaces and
//! processes — and wait until the API answers and every node is Ready.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use lab::topology;
use lab::{ClusterConfig, Paths};

use super::Usage;

#[derive(clap::Args)]
pub struct Args {
    /// Cluster name (1-10 lower-case letters, digits, '-').
    #[arg(long, default_value = "kins")]
    pub name: String,
    /// Number of nodes (0: control plane only). Kept from the first `up` unless given.
    #[arg(long)]
    pub nodes: Option<u32>,
    /// Service CIDR.
    #[arg(long, default_value = "10.96.0.0/12")]
    pub service_cidr: String,
    /// Cluster (pod) CIDR, a /24 of it per node.
    #[arg(long, default_value = "10.244.0.0/16")]
    pub cluster_cidr: String,
    /// Node network, a /24 (default: the first free 172.29.N.0/24).
    #[arg(long)]
    pub node_cidr: Option<String>,
    /// NodePort range.
    #[arg(long, default_value = "30000-32767")]
    pub node_port_range: String,
    /// Loopback port of the API server (default: 6443 when free, else any free port).
    #[arg(long)]
    pub api_port: Option<u16>,
    /// The DNS add-on (kube-system/coredns running kins-dns, Service kube-dns at the
    /// service CIDR's tenth address): `--dns=false` for a cluster without it. Kept from
    /// the first `up` unless given.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub dns: Option<bool>,
    /// The ingress add-on (kube-system/kins-ingress, IngressClass `kins` as the default,
    /// reached on a LoadBalancer address, ports 80 and 443): `--ingress=false` for a
    /// cluster without it. Kept from the first `up` unless given.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub ingress: Option<bool>,
    /// The CNI plugin: kins (built in, host-gw), bridge, ptp (reference plugins, host-gw)
    /// or vxlan (an overlay like flannel's); see `kins cni ls`. Fixed when the cluster is
    /// made: switching needs a new cluster.
    #[arg(long)]
    pub cni: Option<String>,
    /// Your own CNI configuration list (a template: ${POD_CIDR}, ${MTU}, ${NODE_NAME},
    /// ${IPAM_DIR}, ${CNI_VERSION}); implies --cni custom.
    #[arg(long)]
    pub cni_conf: Option<std::path::PathBuf>,
    /// Seconds to wait for the API and the nodes.
    #[arg(long, default_value_t = 60)]
    pub timeout: u64,
}

/// Whether the supervisor of a cluster is alive.
pub fn supervisor_pid(paths: &Paths) -> Option<i32> {
    std::fs::read_to_string(paths.supervisor_pid())
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok())
        .filter(|pid| {
            lab::procs::find(&paths.name)
                .iter()
                .any(|p| p.pid == *pid && p.role == "supervise")
        })
}

pub fn supervisor_alive(paths: &Paths) -> bool {
    supervisor_pid(paths).is_some()
}

pub fn ready_file(paths: &Paths) -> std::path::PathBuf {
    paths.run.join("apiserver.ready")
}

/// The agent of a node writes this once its node is registered and has a pod CIDR.
pub fn node_ready_file(paths: &Paths, node: &str) -> std::path::PathBuf {
    paths.run.join("nodes").join(node).join("ready")
}

pub fn netns_file(paths: &Paths, node: &str) -> std::path::PathBuf {
    paths.run.join("netns").join(node)
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
            bail!(
                "the API server of cluster {} did not become ready within {}s; last lines of its log:\n{}",
                paths.name,
                timeout.as_secs(),
                tail(&paths.logs().join("apiserver.log"))
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().rev().take(15).collect();
    lines.into_iter().rev().collect::<Vec<_>>().join("\n")
}

/// Waits until every node's agent reported its node ready.
pub fn wait_nodes(paths: &Paths, nodes: &[String], timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let missing: Vec<&String> = nodes
            .iter()
            .filter(|n| !node_ready_file(paths, n).exists())
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        if Instant::now() > deadline {
            let n = missing[0];
            bail!(
                "node {n} of cluster {} was not ready within {}s; last lines of its agent's log:\n{}",
                paths.name,
                timeout.as_secs(),
                tail(&paths.logs().join(format!("agent-{n}.log")))
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Makes the host bridge (if missing) and every node's namespace and veth (if missing).
pub fn ensure_topology(paths: &Paths, cfg: &mut ClusterConfig) -> anyhow::Result<()> {
    if cfg.nodes.is_empty() {
        return Ok(());
    }
    let br = topology::bridge_name(&cfg.name);
    let have_bridge = !topology::cluster_links(&cfg.name).iter().all(|l| l != &br);
    if !have_bridge {
        // The saved node network may have been taken by another cluster meanwhile.
        // Keep the saved network unless another cluster's bridge took it meanwhile.
        let taken = |n: &topology::NodeNet| {
            let o = n.base.octets();
            o[0] == 172 && o[1] == 29 && topology::used_node_nets().contains(&o[2])
        };
        let saved = cfg.node_net().filter(|n| !taken(n));
        let net = match saved {
            Some(n) => n,
            None => topology::pick_node_net(&[])?,
        };
        cfg.node_net = net.cidr();
        cfg.node_net_index = net.index;
        topology::ip_batch(
            &topology::plan_bridge(&cfg.name, &net),
            &format!("creating bridge {br}"),
        )?;
    }
    topology::nft_apply(
        &topology::plan_host_guard(&cfg.name),
        "installing the host's forward guard",
    )?;
    let net = cfg.node_net().context("the cluster has no node network")?;
    for node in cfg.nodes.clone() {
        add_node_topology(paths, cfg, &net, &node)?;
    }
    Ok(())
}

/// One node's namespace, veth and addresses; idempotent.
pub fn add_node_topology(
    paths: &Paths,
    cfg: &ClusterConfig,
    net: &topology::NodeNet,
    node: &lab::NodeEntry,
) -> anyhow::Result<()> {
    let ns = netns_file(paths, &node.name);
    let fresh = !topology::is_mounted(&ns);
    topology::create_netns(&ns)?;
    if fresh
        || !lab::topology::cluster_links(&cfg.name).contains(&topology::veth_name(net, node.index))
    {
        topology::ip_batch(
            &topology::plan_node_host(&cfg.name, &node.name, node.index, net, &ns),
            &format!("creating the veth of node {}", node.name),
        )?;
        topology::ip_batch_in(
            &ns,
            &topology::plan_node_inside(node.index, net, &cfg.service_cidr),
            &format!("configuring node {}", node.name),
        )?;
        topology::run_in(
            &ns,
            &["sysctl", "-qw", "net.ipv4.ip_forward=1"],
            "enabling forwarding in the node",
        )?;
    }
    Ok(())
}

/// A random hex token.
fn token() -> anyhow::Result<String> {
    let mut b = [0u8; 24];
    use std::io::Read;
    std::fs::File::open("/dev/urandom")?.read_exact(&mut b)?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

/// The agents' bearer token (kept in the data dir) and the API server's token file.
pub fn ensure_agent_token(paths: &Paths) -> anyhow::Result<()> {
    let tok_path = paths.data.join("agent-token");
    if !tok_path.exists() {
        let t = token()?;
        std::fs::write(&tok_path, &t).with_context(|| format!("writing {}", tok_path.display()))?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&tok_path, std::fs::Permissions::from_mode(0o600))?;
    }
    let t = std::fs::read_to_string(&tok_path)?.trim().to_string();
    let csv = paths.apiserver_data().join("tokens.csv");
    let line = format!("{t},system:node:kins-agent,kins-agent,\"system:nodes\"\n");
    if std::fs::read_to_string(&csv).unwrap_or_default() != line {
        std::fs::write(&csv, line).with_context(|| format!("writing {}", csv.display()))?;
    }
    Ok(())
}

/// Asks the supervisor to re-read the cluster (nodes added or removed).
pub fn reload_supervisor(paths: &Paths) {
    if let Some(pid) = supervisor_pid(paths) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGHUP,
        );
    }
}

pub fn run(data_base: &Path, args: Args) -> anyhow::Result<()> {
    let start = Instant::now();
    let paths = Paths::new(data_base, &args.name)?;
    apiserver::alloc::Cidr::parse(&args.service_cidr)
        .map_err(|e| Usage(format!("--service-cidr {e}")))?;
    apiserver::alloc::Cidr::parse(&args.cluster_cidr)
        .map_err(|e| Usage(format!("--cluster-cidr {e}")))?;
    super::apiserver::parse_port_range(&args.node_port_range)
        .map_err(|e| Usage(format!("--node-port-range {e}")))?;
    if let Some(c) = &args.node_cidr {
        topology::parse_node_cidr(c, 0).map_err(|e| Usage(e.to_string()))?;
    }
    let cni = match (&args.cni, &args.cni_conf) {
        (Some(c), Some(_)) if c != "custom" => {
            return Err(Usage(format!("--cni-conf means --cni custom, not --cni {c}")).into())
        }
        (_, Some(_)) => Some("custom".to_string()),
        (Some(c), None) if c == "custom" => {
            return Err(Usage("--cni custom needs --cni-conf FILE".into()).into())
        }
        (Some(c), None) => {
            if agent::cni::Plugin::parse(c).is_none() {
                let names: Vec<&str> = agent::cni::PLUGINS.iter().map(|(n, _)| *n).collect();
                return Err(Usage(format!(
                    "--cni {c:?}: not a CNI plugin kins knows; choose one of {} (see kins cni ls)",
                    names.join(", ")
                ))
                .into());
            }
            Some(c.clone())
        }
        (None, None) => None,
    };
    let template = match &args.cni_conf {
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .map_err(|e| Usage(format!("--cni-conf {}: {e}", p.display())))?;
            // Checked with sample values now, so a typo fails here and not in every pod.
            let sample = agent::cni::conflist(
                agent::cni::Plugin::Custom,
                &agent::cni::ConfInputs {
                    pod_cidr: "10.244.1.0/24",
                    node_name: "node",
                    link_mtu: 1500,
                    ipam_dir: Path::new("/run/kins/ipam"),
                    cni_version: "1.0.0",
                },
                Some(&text),
            );
            cni::runtime::ConfList::parse(sample.as_bytes(), &p.display().to_string())
                .map_err(|e| Usage(e.to_string()))?;
            Some(text)
        }
        None => None,
    };
    if args.nodes.is_some_and(|n| n > 50) {
        return Err(Usage("--nodes: at most 50 nodes on one host".into()).into());
    }
    paths.create_dirs()?;
    let lock = topology::lock()?;
    let mut cfg = match ClusterConfig::load(&paths) {
        Ok(c) => c,
        Err(lab::LabError::NoSuchCluster(_)) => {
            // A new cluster: whatever an earlier cluster of this name left goes first.
            lab::cleanup::everything(&paths, Duration::from_secs(2))?;
            paths.create_dirs()?;
            let net = match &args.node_cidr {
                Some(c) => topology::parse_node_cidr(c, 200)?,
                None => topology::pick_node_net(&[])?,
            };
            ClusterConfig {
                name: args.name.clone(),
                api_port: match args.api_port {
                    Some(p) => p,
                    None => lab::cluster::pick_api_port()?,
                },
                service_cidr: args.service_cidr.clone(),
                node_port_range: args.node_port_range.clone(),
                cluster_cidr: args.cluster_cidr.clone(),
                node_net: net.cidr(),
                node_net_index: net.index,
                nodes: vec![],
                dns: true,
                ingress: true,
                cni: cni.clone().unwrap_or_else(|| "kins".into()),
            }
        }
        Err(e) => return Err(e.into()),
    };
    if let Some(want) = cni.as_ref().filter(|w| **w != cfg.cni) {
        return Err(Usage(format!(
            "cluster {:?} runs the CNI plugin {}; switching to {want} needs a new cluster: kins down --name {} --purge, then kins up --name {} --cni {want}",
            cfg.name, cfg.cni, cfg.name, cfg.name
        ))
        .into());
    }
    if let Some(text) = &template {
        match std::fs::read_to_string(paths.cni_conf()) {
            Ok(old) if old != *text => {
                return Err(Usage(format!(
                    "cluster {:?} runs another CNI configuration ({}); a new one needs a new cluster: kins down --name {} --purge first",
                    cfg.name,
                    paths.cni_conf().display(),
                    cfg.name
                ))
                .into())
            }
            Ok(_) => {}
            Err(_) => std::fs::write(paths.cni_conf(), text)
                .with_context(|| format!("writing {}", paths.cni_conf().display()))?,
        }
    }
    if let Some(dns) = args.dns {
        cfg.dns = dns;
    }
    if let Some(ingress) = args.ingress {
        cfg.ingress = ingress;
    }
    if let Some(n) = args.nodes {
        while cfg.nodes.len() < n as usize {
            let next = cfg.next_node();
            cfg.nodes.push(next);
        }
        cfg.nodes.truncate(n as usize);
    }
    ensure_topology(&paths, &mut cfg)?;
    cfg.save(&paths)?;
    drop(lock);
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
    ensure_agent_token(&paths)?;
    if !supervisor_alive(&paths) {
        // Anything left of an earlier run (kill -9, crash) goes first.
        lab::procs::stop_all(&cfg.name, Duration::from_secs(2));
        let _ = std::fs::remove_file(ready_file(&paths));
        for n in &cfg.nodes {
            let _ = std::fs::remove_file(node_ready_file(&paths, &n.name));
        }
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
            .args(["supervise", "--cluster", &cfg.name])
            .arg("--data-dir")
            .arg(data_base)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .process_group(0)
            .spawn()
            .context("starting the supervisor")?;
    } else {
        reload_supervisor(&paths);
    }
    let timeout = Duration::from_secs(args.timeout);
    wait_ready(&paths, &cfg, timeout)?;
    let names: Vec<String> = cfg.nodes.iter().map(|n| n.name.clone()).collect();
    wait_nodes(&paths, &names, timeout)?;
    eprintln!(
        "cluster {:?} is up in {:.2}s: API https://127.0.0.1:{}, {} node{}{}, data {}",
        cfg.name,
        start.elapsed().as_secs_f64(),
        cfg.api_port,
        cfg.nodes.len(),
        if cfg.nodes.len() == 1 { "" } else { "s" },
        if cfg.nodes.is_empty() {
            String::new()
        } else {
            format!(" on {}", cfg.node_net)
        },
        paths.data.display()
    );
    println!("export KUBECONFIG={}", paths.kubeconfig().display());
    Ok(())
}

//! `kins node ls|add|rm|exec`: a cluster's nodes, like `docker exec` into a kind node.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context};
use lab::{topology, ClusterConfig, Paths};

use super::up;
use super::Usage;

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub command: NodeCommand,
}

#[derive(clap::Subcommand)]
pub enum NodeCommand {
    /// List the nodes: name, IP, namespace, agent.
    Ls {
        #[arg(long, default_value = "kins")]
        name: String,
    },
    /// Add a node to a running cluster.
    Add {
        /// Node name (default: the next <cluster>-workerN).
        node: Option<String>,
        #[arg(long, default_value = "kins")]
        name: String,
        #[arg(long, default_value_t = 60)]
        timeout: u64,
    },
    /// Remove a node: its agent, its pods' processes, its namespace and its Node object.
    Rm {
        node: String,
        #[arg(long, default_value = "kins")]
        name: String,
    },
    /// Run a command inside a node's network namespace (default: a shell).
    Exec {
        node: String,
        #[arg(long, default_value = "kins")]
        name: String,
        #[arg(last = true)]
        command: Vec<String>,
    },
}

fn load(data_base: &Path, name: &str) -> anyhow::Result<(Paths, ClusterConfig)> {
    let paths = Paths::new(data_base, name)?;
    let cfg = ClusterConfig::load(&paths)?;
    Ok((paths, cfg))
}

fn find_node<'a>(cfg: &'a ClusterConfig, node: &str) -> anyhow::Result<&'a lab::NodeEntry> {
    cfg.nodes.iter().find(|n| n.name == node).ok_or_else(|| {
        Usage(format!(
            "cluster {} has no node {node:?} (nodes: {})",
            cfg.name,
            cfg.nodes
                .iter()
                .map(|n| n.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))
        .into()
    })
}

pub fn run(data_base: &Path, args: Args) -> anyhow::Result<()> {
    match args.command {
        NodeCommand::Ls { name } => {
            let (paths, cfg) = load(data_base, &name)?;
            let procs = lab::procs::find(&name);
            println!(
                "{:<24} {:<15} {:<8} {:<8} NETNS",
                "NAME", "IP", "AGENT", "READY"
            );
            let net = cfg.node_net();
            for n in &cfg.nodes {
                let agent = procs.iter().any(|p| {
                    p.role == "agent"
                        && p.args
                            .windows(2)
                            .any(|w| w[0] == "--node-name" && w[1] == n.name)
                });
                println!(
                    "{:<24} {:<15} {:<8} {:<8} {}",
                    n.name,
                    net.map(|x| x.node_ip(n.index).to_string())
                        .unwrap_or_default(),
                    if agent { "running" } else { "stopped" },
                    if up::node_ready_file(&paths, &n.name).exists() {
                        "yes"
                    } else {
                        "no"
                    },
                    up::netns_file(&paths, &n.name).display()
                );
            }
            Ok(())
        }
        NodeCommand::Add {
            node,
            name,
            timeout,
        } => {
            let (paths, mut cfg) = load(data_base, &name)?;
            let lock = topology::lock()?;
            let mut entry = cfg.next_node();
            if let Some(n) = node {
                if cfg.nodes.iter().any(|x| x.name == n) {
                    return Err(Usage(format!("cluster {name} already has a node {n:?}")).into());
                }
                if !api::validation::is_dns1123_subdomain(&n).is_empty() {
                    return Err(Usage(format!(
                        "node name {n:?} is not a valid DNS-1123 subdomain"
                    ))
                    .into());
                }
                entry.name = n;
            }
            cfg.nodes.push(entry.clone());
            up::ensure_topology(&paths, &mut cfg)?;
            cfg.save(&paths)?;
            drop(lock);
            up::ensure_agent_token(&paths)?;
            if !up::supervisor_alive(&paths) {
                bail!("cluster {name} is not running: `kins up --name {name}` starts it with the new node");
            }
            up::reload_supervisor(&paths);
            up::wait_nodes(
                &paths,
                std::slice::from_ref(&entry.name),
                Duration::from_secs(timeout),
            )?;
            eprintln!("node {} added", entry.name);
            Ok(())
        }
        NodeCommand::Rm { node, name } => {
            let (paths, mut cfg) = load(data_base, &name)?;
            let entry = find_node(&cfg, &node)?.clone();
            cfg.nodes.retain(|n| n.name != node);
            cfg.save(&paths)?;
            up::reload_supervisor(&paths);
            // The agent goes with the reload; the node's pods' processes go here.
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while std::time::Instant::now() < deadline
                && lab::procs::find(&name).iter().any(|p| {
                    p.role == "agent"
                        && p.args
                            .windows(2)
                            .any(|w| w[0] == "--node-name" && w[1] == node)
                })
            {
                std::thread::sleep(Duration::from_millis(20));
            }
            lab::procs::stop_matching(&name, Duration::from_secs(2), |p| {
                p.args
                    .windows(2)
                    .any(|w| (w[0] == "--node" || w[0] == "--node-name") && w[1] == node)
            });
            let node_run = paths.run.join("nodes").join(&node);
            topology::unmount_all(&node_run);
            let ns = up::netns_file(&paths, &node);
            topology::unmount_all(&ns);
            let _ = std::fs::remove_file(&ns);
            let _ = std::fs::remove_dir_all(&node_run);
            if let Some(net) = cfg.node_net() {
                let _ = topology::delete_link(&topology::veth_name(&net, entry.index));
            }
            delete_node_object(&paths, &node)?;
            eprintln!("node {node} removed");
            Ok(())
        }
        NodeCommand::Exec {
            node,
            name,
            command,
        } => {
            let (paths, cfg) = load(data_base, &name)?;
            find_node(&cfg, &node)?;
            let ns = up::netns_file(&paths, &node);
            let f =
                std::fs::File::open(&ns).with_context(|| format!("opening {}", ns.display()))?;
            nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET)
                .context("entering the node's network namespace")?;
            let argv = if command.is_empty() {
                vec![std::env::var("SHELL").unwrap_or_else(|_| "/bin/sh".into())]
            } else {
                command
            };
            let err = std::process::Command::new(&argv[0])
                .args(&argv[1..])
                .env("KINS_NODE", &node)
                .exec();
            bail!("running {:?} in node {node}: {err}", argv[0])
        }
    }
}

/// Deletes the Node object through the API (its pods are then marked and removed by the
/// controller manager, as Kubernetes does).
fn delete_node_object(paths: &Paths, node: &str) -> anyhow::Result<()> {
    let out = std::process::Command::new("kubectl")
        .env("KUBECONFIG", paths.kubeconfig())
        .args(["delete", "node", node, "--ignore-not-found", "--wait=false"])
        .output();
    match out {
        Ok(o) if o.status.success() => Ok(()),
        Ok(o) => bail!(
            "deleting the Node object {node}: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        ),
        Err(e) => bail!("deleting the Node object {node} (kubectl): {e}"),
    }
}

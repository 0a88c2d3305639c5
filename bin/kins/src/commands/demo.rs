//! `kins demo`: the chapter's first example, end to end. Brings up a 2-node cluster,
//! creates the multi-container pod (nginx + a curl sidecar) with kubectl, waits for it and
//! shows the sidecar's log with nginx's welcome page, one line of explanation per step.
//! The cluster stays up for exploring.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// The chapter's manifest, as printed (examples/pod.yaml).
const POD_YAML: &str = include_str!("../../../../examples/pod.yaml");

#[derive(clap::Args)]
pub struct Args {
    /// Cluster name.
    #[arg(long, default_value = "kins")]
    pub name: String,
    /// Seconds to wait for the pod and its log.
    #[arg(long, default_value_t = 120)]
    pub timeout: u64,
}

/// kubectl: $KINS_KUBECTL, the one kins' setup installs, or the first on PATH.
fn kubectl() -> anyhow::Result<PathBuf> {
    if let Some(k) = std::env::var_os("KINS_KUBECTL") {
        return Ok(PathBuf::from(k));
    }
    let mut candidates = vec![PathBuf::from("/opt/kins-tools/bin/kubectl")];
    if let Some(path) = std::env::var_os("PATH") {
        candidates.extend(std::env::split_paths(&path).map(|d| d.join("kubectl")));
    }
    candidates
        .into_iter()
        .find(|p| p.is_file())
        .context("kubectl not found: run scripts/setup.sh, or set KINS_KUBECTL")
}

fn say(step: &str) {
    println!("\n# {step}");
}

/// Runs kubectl, showing the command as a person would type it.
fn run_kubectl(
    kubectl: &Path,
    kubeconfig: &Path,
    args: &[&str],
    stdin: Option<&str>,
) -> anyhow::Result<String> {
    println!("$ kubectl {}", args.join(" "));
    let mut cmd = Command::new(kubectl);
    cmd.arg("--kubeconfig").arg(kubeconfig).args(args);
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().context("running kubectl")?;
    if let (Some(text), Some(mut w)) = (stdin, child.stdin.take()) {
        use std::io::Write;
        w.write_all(text.as_bytes()).context("writing to kubectl")?;
    }
    let out = child.wait_with_output().context("running kubectl")?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        bail!(
            "kubectl {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(text)
}

pub fn run(data_base: &Path, args: Args) -> anyhow::Result<()> {
    let kubectl = kubectl()?;
    say("Bring up a cluster of 2 nodes: each node is a network namespace with its own pod subnet");
    super::up::run(
        data_base,
        super::up::Args {
            name: args.name.clone(),
            nodes: Some(2),
            service_cidr: "10.96.0.0/12".into(),
            cluster_cidr: "10.244.0.0/16".into(),
            node_cidr: None,
            node_port_range: "30000-32767".into(),
            api_port: None,
            dns: None,
            ingress: None,
            cni: None,
            cni_conf: None,
            timeout: 60,
        },
    )?;
    let paths = lab::Paths::new(data_base, &args.name)?;
    let kc = paths.kubeconfig();
    say("The nodes, their IPs and pod CIDRs");
    print!(
        "{}",
        run_kubectl(&kubectl, &kc, &["get", "nodes", "-o", "wide"], None)?
    );
    say("Create the chapter's pod: nginx (app) and a curl sidecar sharing one network namespace");
    let _ = run_kubectl(
        &kubectl,
        &kc,
        &[
            "delete",
            "pod",
            "multi-container",
            "--ignore-not-found",
            "--grace-period=1",
        ],
        None,
    );
    print!(
        "{}",
        run_kubectl(&kubectl, &kc, &["create", "-f", "-"], Some(POD_YAML))?
    );
    say("Wait until both containers run (images are built from host packages on first use)");
    let timeout = format!("--timeout={}s", args.timeout);
    print!(
        "{}",
        run_kubectl(
            &kubectl,
            &kc,
            &[
                "wait",
                "--for=condition=Ready",
                "pod/multi-container",
                &timeout
            ],
            None,
        )?
    );
    print!(
        "{}",
        run_kubectl(
            &kubectl,
            &kc,
            &["get", "pod", "multi-container", "-o", "wide"],
            None
        )?
    );
    say("The sidecar curls localhost:80 every 5 s: its log shows nginx's welcome page");
    let deadline = Instant::now() + Duration::from_secs(args.timeout);
    loop {
        let log = {
            let out = Command::new(&kubectl)
                .arg("--kubeconfig")
                .arg(&kc)
                .args(["logs", "multi-container", "-c", "sidecar"])
                .output()
                .context("running kubectl")?;
            String::from_utf8_lossy(&out.stdout).into_owned()
        };
        if log.contains("Welcome to nginx!") {
            println!("$ kubectl logs multi-container -c sidecar");
            print!("{log}");
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "the sidecar's log shows no welcome page after {}s:\n{log}",
                args.timeout
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    say("Explore");
    let name_flag = if args.name == "kins" {
        String::new()
    } else {
        format!(" --name {}", args.name)
    };
    println!("export KUBECONFIG={}", kc.display());
    println!("kubectl describe pod multi-container      # events: image built from host packages, started");
    println!("kubectl logs -f multi-container -c sidecar");
    println!("kins node ls{name_flag}; kins node exec <node>{name_flag} -- ip route");
    println!("kins down{name_flag}                       # removes everything");
    Ok(())
}

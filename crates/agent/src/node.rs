//! Node registration, status and the Lease heartbeat.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{json, Value};

use crate::{AgentError, Config};

fn now() -> String {
    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn now_micro() -> String {
    chrono::Utc::now()
        .format("%Y-%m-%dT%H:%M:%S%.6fZ")
        .to_string()
}

fn read(path: &str) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .trim()
        .to_string()
}

fn memory_kib() -> u64 {
    read("/proc/meminfo")
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn os_image() -> String {
    read("/etc/os-release")
        .lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .map(|v| v.trim_matches('"').to_string())
        .unwrap_or_else(|| "Linux".into())
}

/// The node's status as the agent reports it.
pub fn status(cfg: &Config) -> Value {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let capacity = json!({
        "cpu": cpus.to_string(),
        "memory": format!("{}Ki", memory_kib()),
        "pods": "110",
        "ephemeral-storage": "10Gi",
    });
    let t = now();
    let cond = |ty: &str, status: &str, reason: &str, message: &str| {
        json!({"type": ty, "status": status, "reason": reason, "message": message,
               "lastHeartbeatTime": t, "lastTransitionTime": t})
    };
    json!({
        "addresses": [
            {"type": "InternalIP", "address": cfg.node_ip.to_string()},
            {"type": "Hostname", "address": cfg.node_name},
        ],
        "capacity": capacity,
        "allocatable": capacity,
        "conditions": [
            cond("MemoryPressure", "False", "KubeletHasSufficientMemory", "kins agent has sufficient memory available"),
            cond("DiskPressure", "False", "KubeletHasNoDiskPressure", "kins agent has no disk pressure"),
            cond("PIDPressure", "False", "KubeletHasSufficientPID", "kins agent has sufficient PID available"),
            cond("Ready", "True", "KubeletReady", "kins agent is posting ready status"),
        ],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": cfg.kubelet_port}},
        "nodeInfo": {
            "machineID": read("/etc/machine-id"),
            "systemUUID": read("/etc/machine-id"),
            "bootID": read("/proc/sys/kernel/random/boot_id"),
            "kernelVersion": read("/proc/sys/kernel/osrelease"),
            "osImage": os_image(),
            "containerRuntimeVersion": format!("kins://{}", env!("CARGO_PKG_VERSION")),
            "kubeletVersion": format!("v1.34.0-kins.{}", env!("CARGO_PKG_VERSION")),
            "kubeProxyVersion": "",
            "operatingSystem": "linux",
            "architecture": if cfg!(target_arch = "aarch64") { "arm64" } else { "amd64" },
        },
    })
}

/// Creates the Node if needed and posts its status (Ready=True).
pub async fn register(client: &kube::Client, cfg: &Config) -> Result<(), AgentError> {
    let nodes: Api<Node> = Api::all(client.clone());
    let arch = if cfg!(target_arch = "aarch64") {
        "arm64"
    } else {
        "amd64"
    };
    let node: Node = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": cfg.node_name, "labels": {
            "kubernetes.io/hostname": cfg.node_name,
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": arch,
            "beta.kubernetes.io/os": "linux",
            "beta.kubernetes.io/arch": arch,
            "kins.dev/cluster": cfg.cluster,
        }},
        "spec": {},
    }))
    .map_err(|e| AgentError::Other(format!("node object: {e}")))?;
    let mut tries = 0;
    loop {
        match nodes.create(&PostParams::default(), &node).await {
            Ok(_) => break,
            Err(kube::Error::Api(e)) if e.code == 409 => break,
            Err(e) if tries < 50 => {
                tries += 1;
                tracing::warn!(error = %e, "registering the node; retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
    post_status(client, cfg).await
}

async fn post_status(client: &kube::Client, cfg: &Config) -> Result<(), AgentError> {
    let nodes: Api<Node> = Api::all(client.clone());
    nodes
        .patch_status(
            &cfg.node_name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": status(cfg)})),
        )
        .await?;
    Ok(())
}

async fn renew_lease(client: &kube::Client, cfg: &Config) -> Result<(), AgentError> {
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let spec = json!({
        "holderIdentity": cfg.node_name,
        "leaseDurationSeconds": 40,
        "renewTime": now_micro(),
    });
    match leases.get_opt(&cfg.node_name).await? {
        Some(_) => {
            leases
                .patch(
                    &cfg.node_name,
                    &PatchParams::default(),
                    &Patch::Merge(json!({"spec": spec})),
                )
                .await?;
        }
        None => {
            let lease: Lease = serde_json::from_value(json!({
                "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": cfg.node_name, "namespace": "kube-node-lease"},
                "spec": spec,
            }))
            .map_err(|e| AgentError::Other(format!("lease object: {e}")))?;
            leases.create(&PostParams::default(), &lease).await?;
        }
    }
    Ok(())
}

fn ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Renews the Lease every `lease_seconds` and re-posts status when the node is not Ready
/// (after the lifecycle controller marked it Unknown) or was deleted and must register again.
pub async fn heartbeat(client: kube::Client, cfg: Arc<Config>) {
    let nodes: Api<Node> = Api::all(client.clone());
    let mut ticks = 0u64;
    loop {
        if let Err(e) = renew_lease(&client, &cfg).await {
            tracing::warn!(error = %e, "renewing the lease");
        }
        match nodes.get_opt(&cfg.node_name).await {
            Ok(None) => {
                if let Err(e) = register(&client, &cfg).await {
                    tracing::warn!(error = %e, "registering again");
                }
            }
            Ok(Some(n)) if !ready(&n) || ticks.is_multiple_of(6) => {
                if let Err(e) = post_status(&client, &cfg).await {
                    tracing::warn!(error = %e, "posting node status");
                }
            }
            Ok(Some(_)) => {}
            Err(e) => tracing::warn!(error = %e, "reading the node"),
        }
        ticks += 1;
        tokio::time::sleep(Duration::from_secs(cfg.lease_seconds)).await;
    }
}

//! The controllers against a real API server: each test starts its own `kins up` cluster
//! (control plane only, no root needed), runs the controllers in-process, and plays the
//! node agents itself by creating Nodes, posting their status and renewing their Leases.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Endpoints, Event, Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, Time};
use k8s_openapi::jiff::Timestamp;
use kins_tests::Cluster;
use kube::api::{
    DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use kube::{Api, Client, ResourceExt};
use serde_json::{json, Value};

/// How long a test waits for what should happen within a few seconds.
const WAIT: Duration = Duration::from_secs(20);

/// A test's own cluster, whose supervisor is paused so that the controllers under test are
/// the only ones (`kins up` starts a controller manager of its own). On drop, also when
/// the test fails, the paused supervisor is killed (so it restarts nothing while the
/// cluster is taken down) and the cluster removed.
struct Env {
    paused: Vec<i32>,
    cluster: Cluster,
}

impl Drop for Env {
    fn drop(&mut self) {
        for pid in &self.paused {
            signal("KILL", *pid);
        }
    }
}

fn signal(sig: &str, pid: i32) {
    let _ = std::process::Command::new("kill")
        .args([format!("-{sig}"), pid.to_string()])
        .output();
}

/// The kins subcommand a process runs (`supervise`, `apiserver`, ...), from its command
/// line: the first argument that is not a global flag.
fn subcommand(pid: i32) -> Option<String> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let args: Vec<String> = raw
        .split(|b| *b == 0)
        .skip(1)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        if a == "--data-dir" {
            it.next();
        } else if !a.starts_with('-') {
            return Some(a);
        }
    }
    None
}

/// The pids of the cluster's processes running `role`.
fn procs(cluster: &Cluster, role: &str) -> Vec<i32> {
    lab::procs::find(&cluster.name)
        .into_iter()
        .map(|p| p.pid)
        .filter(|pid| subcommand(*pid).as_deref() == Some(role))
        .collect()
}

/// Pauses the cluster's supervisor and stops the controller managers it started; returns
/// the paused processes.
fn take_over(cluster: &Cluster) -> anyhow::Result<Vec<i32>> {
    // Every process that runs `supervise` (a child forked but not yet exec'ed looks like
    // one too: pausing it keeps it from becoming anything).
    let supervisors = procs(cluster, "supervise");
    for pid in &supervisors {
        signal("STOP", *pid);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut quiet_since = Instant::now();
    loop {
        std::thread::sleep(Duration::from_millis(50));
        let cms = procs(cluster, "controller-manager");
        if cms.is_empty() {
            if quiet_since.elapsed() > Duration::from_millis(300) {
                return Ok(supervisors);
            }
            continue;
        }
        quiet_since = Instant::now();
        ensure!(
            Instant::now() < deadline,
            "controller managers {cms:?} did not stop"
        );
        for pid in cms {
            signal("KILL", pid);
        }
    }
}

/// A cluster of the test's own (removed on drop) and a client for it.
async fn up(name: &str) -> anyhow::Result<(Env, Client)> {
    let n = name.to_string();
    let env = tokio::task::spawn_blocking(move || -> anyhow::Result<Env> {
        let cluster = Cluster::up(&n)?;
        let paused = take_over(&cluster)?;
        Ok(Env { paused, cluster })
    })
    .await??;
    let client = controllers::client_from_kubeconfig(&env.cluster.kubeconfig).await?;
    Ok((env, client))
}

/// Runs a write again while it fails with 409 Conflict (the controllers under test write
/// the same Nodes).
async fn retry_conflicts<T, Fut>(mut f: impl FnMut() -> Fut) -> anyhow::Result<T>
where
    Fut: Future<Output = Result<T, kube::Error>>,
{
    for _ in 0..20 {
        match f().await {
            Err(kube::Error::Api(s)) if s.code == 409 => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            other => return Ok(other?),
        }
    }
    bail!("still conflicting after 20 attempts")
}

/// The `reportingInstance` of the controllers under test.
const INSTANCE: &str = "controllers-under-test";

fn config(cidr: &str, mask: u8) -> anyhow::Result<controllers::Config> {
    let mut c = controllers::Config::new(controllers::Ipv4Cidr::parse(cidr)?, mask)?;
    c.metrics_bind = Some("127.0.0.1:0".parse()?);
    c.instance = INSTANCE.into();
    Ok(c)
}

/// Checks that every event was written by the controllers under test (none by a
/// controller manager the cluster started itself).
async fn only_ours(client: &Client) -> anyhow::Result<()> {
    let list = Api::<Event>::all(client.clone())
        .list(&ListParams::default())
        .await?;
    for e in &list.items {
        ensure!(
            e.reporting_instance.as_deref() == Some(INSTANCE),
            "an event from another controller: {e:?}"
        );
    }
    Ok(())
}

/// Runs a test's body, failing it if it takes more than two minutes (so a hang still
/// takes its cluster down).
async fn within(body: impl Future<Output = anyhow::Result<()>>) -> anyhow::Result<()> {
    tokio::time::timeout(Duration::from_secs(120), body)
        .await
        .context("the test took more than two minutes")?
}

/// Polls `f` until it returns `Some`, for at most `timeout`.
async fn wait_for<T, Fut>(
    what: &str,
    timeout: Duration,
    mut f: impl FnMut() -> Fut,
) -> anyhow::Result<T>
where
    Fut: Future<Output = anyhow::Result<Option<T>>>,
{
    let deadline = Instant::now() + timeout;
    let mut last = String::new();
    loop {
        match f().await {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(e) => last = format!(" (last error: {e:#})"),
        }
        if Instant::now() > deadline {
            bail!("timed out after {timeout:?} waiting for {what}{last}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn create_node(client: &Client, name: &str, labels: Value) -> anyhow::Result<Node> {
    let mut l = json!({"kubernetes.io/hostname": name});
    if let (Some(m), Some(extra)) = (l.as_object_mut(), labels.as_object()) {
        m.extend(extra.clone());
    }
    let node: Node = serde_json::from_value(json!({"metadata": {"name": name, "labels": l}}))?;
    Ok(Api::<Node>::all(client.clone())
        .create(&PostParams::default(), &node)
        .await?)
}

/// What the agent posts: Ready with a fresh heartbeat, room for `pods` pods.
async fn post_status(client: &Client, name: &str, ready: &str, pods: usize) -> anyhow::Result<()> {
    let now = Time(Timestamp::now());
    let patch = json!({"status": {
        "conditions": [{"type": "Ready", "status": ready, "reason": "KubeletReady",
                        "message": "kubelet is posting ready status",
                        "lastHeartbeatTime": now, "lastTransitionTime": now}],
        "capacity": {"pods": pods.to_string()},
        "allocatable": {"pods": pods.to_string()},
    }});
    let api = Api::<Node>::all(client.clone());
    retry_conflicts(|| {
        let (api, patch) = (api.clone(), patch.clone());
        async move {
            api.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
        }
    })
    .await?;
    Ok(())
}

/// Creates or renews the node's Lease, as the agent does.
async fn renew_lease(client: &Client, name: &str) -> anyhow::Result<()> {
    let api: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let now = MicroTime(Timestamp::now());
    let patch = json!({"spec": {"renewTime": now}});
    match retry_conflicts(|| {
        let (api, patch) = (api.clone(), patch.clone());
        async move {
            api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
        }
    })
    .await
    {
        Ok(_) => Ok(()),
        Err(e)
            if e.downcast_ref::<kube::Error>()
                .is_some_and(|k| matches!(k, kube::Error::Api(s) if s.is_not_found())) =>
        {
            let lease: Lease = serde_json::from_value(json!({
                "metadata": {"name": name, "namespace": "kube-node-lease"},
                "spec": {"holderIdentity": name, "leaseDurationSeconds": 40, "renewTime": now},
            }))?;
            api.create(&PostParams::default(), &lease).await?;
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// Renews the Lease every 500 ms while `on` is set, until the test ends.
fn agent(client: Client, name: &str, on: Arc<AtomicBool>) {
    let name = name.to_string();
    tokio::spawn(async move {
        loop {
            if on.load(Ordering::SeqCst) {
                let _ = renew_lease(&client, &name).await;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    });
}

fn pod_cidr(n: &Node) -> Option<String> {
    n.spec.as_ref()?.pod_cidr.clone().filter(|c| !c.is_empty())
}

async fn wait_cidr(client: &Client, name: &str) -> anyhow::Result<String> {
    let api: Api<Node> = Api::all(client.clone());
    wait_for(&format!("a pod CIDR on node {name}"), WAIT, || {
        let api = api.clone();
        async move {
            let n = api.get(name).await?;
            if let Some(c) = pod_cidr(&n) {
                let cidrs = n.spec.as_ref().and_then(|s| s.pod_cidrs.clone());
                ensure!(
                    cidrs == Some(vec![c.clone()]),
                    "podCIDRs {cidrs:?} != [{c}]"
                );
                return Ok(Some(c));
            }
            Ok(None)
        }
    })
    .await
}

/// Events of `reason` about the object `name` in `ns`.
async fn events(client: &Client, ns: &str, name: &str, reason: &str) -> anyhow::Result<Vec<Event>> {
    let list = Api::<Event>::namespaced(client.clone(), ns)
        .list(&ListParams::default().fields(&format!("involvedObject.name={name}")))
        .await?;
    Ok(list
        .items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some(reason))
        .collect())
}

async fn metrics_text(addr: std::net::SocketAddr) -> anyhow::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
        .await?;
    let mut out = String::new();
    s.read_to_string(&mut out).await?;
    ensure!(
        out.starts_with("HTTP/1.0 200") || out.starts_with("HTTP/1.1 200"),
        "{out}"
    );
    Ok(out)
}

fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_ipam() -> anyhow::Result<()> {
    let (_cluster, client) = up("cmipam").await?;
    within(async move {
        let nodes: Api<Node> = Api::all(client.clone());
        // 10.250.0.0/22 in /24s: room for four nodes.
        let mut cfg = config("10.250.0.0/22", 24)?;
        cfg.cidr_retry = Duration::from_secs(60);
        let running = controllers::start(client.clone(), cfg.clone()).await?;

        for n in ["n1", "n2", "n3"] {
            create_node(&client, n, json!({})).await?;
        }
        let mut first = BTreeMap::new();
        for n in ["n1", "n2", "n3"] {
            first.insert(n, wait_cidr(&client, n).await?);
        }
        let distinct: BTreeSet<&String> = first.values().collect();
        ensure!(distinct.len() == 3, "CIDRs not distinct: {first:?}");
        for c in first.values() {
            ensure!(
                c.starts_with("10.250.") && c.ends_with("/24"),
                "{c} outside 10.250.0.0/22"
            );
        }

        // Restart: a node created while the controllers are down gets a fourth, distinct block,
        // and the others keep theirs.
        running.shutdown().await;
        create_node(&client, "n4", json!({})).await?;
        tokio::time::sleep(Duration::from_millis(500)).await;
        ensure!(
            pod_cidr(&nodes.get("n4").await?).is_none(),
            "n4 got a CIDR with no controller"
        );
        let running = controllers::start(client.clone(), cfg.clone()).await?;
        let n4 = wait_cidr(&client, "n4").await?;
        ensure!(
            !distinct.contains(&n4),
            "n4 got {n4}, already in use: {first:?}"
        );
        for (n, c) in &first {
            ensure!(
                pod_cidr(&nodes.get(n).await?).as_ref() == Some(c),
                "{n} lost {c}"
            );
        }

        // Exhausted: n5 gets no CIDR and a CIDRNotAvailable event; nothing crashes.
        create_node(&client, "n5", json!({})).await?;
        let ev = wait_for("CIDRNotAvailable event for n5", WAIT, || {
            let client = client.clone();
            async move {
                Ok(events(&client, "default", "n5", "CIDRNotAvailable")
                    .await?
                    .pop())
            }
        })
        .await?;
        ensure!(ev.type_.as_deref() == Some("Warning"), "{ev:?}");
        ensure!(ev.involved_object.kind.as_deref() == Some("Node"), "{ev:?}");
        ensure!(
            ev.message.as_deref() == Some("Node n5 status is now: CIDRNotAvailable"),
            "{ev:?}"
        );
        ensure!(pod_cidr(&nodes.get("n5").await?).is_none());
        let text = metrics_text(running.metrics_addr.context("metrics address")?).await?;
        ensure!(
            metric(&text, "kins_node_ipam_cidrs_used") == Some(4.0),
            "{text}"
        );
        ensure!(
            metric(&text, "kins_node_ipam_cidrs_total") == Some(4.0),
            "{text}"
        );
        ensure!(
            metric(&text, "kins_node_ipam_cidr_not_available_total").is_some_and(|v| v >= 1.0),
            "{text}"
        );

        // Deleting n2 releases its block, and n5 gets it at once (not after the 60 s retry).
        nodes.delete("n2", &DeleteParams::default()).await?;
        let n5 = wait_cidr(&client, "n5").await?;
        ensure!(
            Some(&n5) == first.get("n2"),
            "n5 got {n5}, want n2's {:?}",
            first.get("n2")
        );

        // A node that comes with a pod CIDR keeps it.
        let preset: Node = serde_json::from_value(
            json!({"metadata": {"name": "n6"}, "spec": {"podCIDR": "10.99.0.0/24", "podCIDRs": ["10.99.0.0/24"]}}),
        )?;
        nodes.create(&PostParams::default(), &preset).await?;
        tokio::time::sleep(Duration::from_secs(1)).await;
        ensure!(pod_cidr(&nodes.get("n6").await?).as_deref() == Some("10.99.0.0/24"));
        only_ours(&client).await?;
        running.shutdown().await;
        Ok(())
    })
    .await
}

fn condition(n: &Node, type_: &str) -> Option<(String, String, String)> {
    let c = n
        .status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_)?;
    Some((
        c.status.clone(),
        c.reason.clone().unwrap_or_default(),
        c.message.clone().unwrap_or_default(),
    ))
}

/// The node's taints as `key:effect`, with `+t` when timeAdded is set.
fn taints(n: &Node) -> Vec<String> {
    n.spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default()
        .iter()
        .map(|t| {
            format!(
                "{}:{}{}",
                t.key,
                t.effect,
                if t.time_added.is_some() { "+t" } else { "" }
            )
        })
        .collect()
}

fn test_pod(name: &str, spec: Value) -> anyhow::Result<Pod> {
    let mut s = json!({"containers": [{"name": "c", "image": "nginx"}]});
    if let (Some(m), Some(extra)) = (s.as_object_mut(), spec.as_object()) {
        m.extend(extra.clone());
    }
    Ok(serde_json::from_value(
        json!({"metadata": {"name": name, "namespace": "default"}, "spec": s}),
    )?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_lifecycle_and_pod_gc() -> anyhow::Result<()> {
    let (_cluster, client) = up("cmlife").await?;
    within(async move {
        let nodes: Api<Node> = Api::all(client.clone());
        let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
        let mut cfg = config("10.244.0.0/16", 24)?;
        cfg.node_monitor_grace_period = Duration::from_secs(3);
        let running = controllers::start(client.clone(), cfg).await?;

        create_node(&client, "n1", json!({})).await?;
        renew_lease(&client, "n1").await?;
        post_status(&client, "n1", "True", 10).await?;
        let heartbeat = Arc::new(AtomicBool::new(true));
        agent(client.clone(), "n1", heartbeat.clone());
        wait_cidr(&client, "n1").await?;

        // While the Lease is renewed the node stays Ready, past the grace period.
        tokio::time::sleep(Duration::from_secs(5)).await;
        let n = nodes.get("n1").await?;
        ensure!(
            condition(&n, "Ready").is_some_and(|c| c.0 == "True"),
            "{:?}",
            n.status
        );
        ensure!(taints(&n).is_empty(), "{:?}", taints(&n));

        // A running, ready pod on n1.
        pods.create(
            &PostParams::default(),
            &test_pod("runs", json!({"nodeName": "n1"}))?,
        )
        .await?;
        let running_status = json!({"status": {"phase": "Running", "conditions": [
            {"type": "Ready", "status": "True"}, {"type": "PodScheduled", "status": "True"}]}});
        pods.patch_status(
            "runs",
            &PatchParams::default(),
            &Patch::Merge(&running_status),
        )
        .await?;

        // The agent goes quiet: Ready=Unknown, pressure conditions Unknown, unreachable taints.
        heartbeat.store(false, Ordering::SeqCst);
        let n = wait_for("n1 Ready=Unknown and tainted", WAIT, || {
            let nodes = nodes.clone();
            async move {
                let n = nodes.get("n1").await?;
                let unknown = condition(&n, "Ready").is_some_and(|c| c.0 == "Unknown");
                Ok((unknown && taints(&n).len() == 2).then_some(n))
            }
        })
        .await?;
        ensure!(
            condition(&n, "Ready")
                == Some((
                    "Unknown".into(),
                    "NodeStatusUnknown".into(),
                    "Kubelet stopped posting node status.".into()
                )),
            "{:?}",
            n.status
        );
        for c in ["MemoryPressure", "DiskPressure", "PIDPressure"] {
            ensure!(
                condition(&n, c).is_some_and(|c| c.0 == "Unknown"),
                "{c}: {:?}",
                n.status
            );
        }
        ensure!(
            taints(&n)
                == [
                    "node.kubernetes.io/unreachable:NoSchedule",
                    "node.kubernetes.io/unreachable:NoExecute+t"
                ],
            "{:?}",
            taints(&n)
        );

        // ... its pods are no longer Ready, and an event says so.
        wait_for("pod on n1 not ready", WAIT, || {
            let pods = pods.clone();
            async move {
                let p = pods.get("runs").await?;
                let conds = p.status.and_then(|s| s.conditions).unwrap_or_default();
                let ready = conds
                    .iter()
                    .find(|c| c.type_ == "Ready")
                    .map(|c| c.status.clone());
                let scheduled = conds
                    .iter()
                    .any(|c| c.type_ == "PodScheduled" && c.status == "True");
                Ok((ready.as_deref() == Some("False") && scheduled).then_some(()))
            }
        })
        .await?;
        let ev = wait_for("NodeNotReady event", WAIT, || {
            let client = client.clone();
            async move {
                Ok(events(&client, "default", "n1", "NodeNotReady")
                    .await?
                    .pop())
            }
        })
        .await?;
        ensure!(
            ev.message.as_deref() == Some("Node n1 status is now: NodeNotReady"),
            "{ev:?}"
        );
        ensure!(ev.source.and_then(|s| s.component).as_deref() == Some("node-controller"));

        // Back: a fresh Lease and Ready=True remove the taints.
        heartbeat.store(true, Ordering::SeqCst);
        renew_lease(&client, "n1").await?;
        post_status(&client, "n1", "True", 10).await?;
        wait_for("n1 untainted", WAIT, || {
            let nodes = nodes.clone();
            async move {
                let n = nodes.get("n1").await?;
                Ok(
                    (taints(&n).is_empty()
                        && condition(&n, "Ready").is_some_and(|c| c.0 == "True"))
                    .then_some(()),
                )
            }
        })
        .await?;

        // A pod bound to a node that does not exist is marked Failed (DisruptionTarget,
        // DeletionByPodGC) and deleted.
        let rv = pods
            .list(&ListParams::default())
            .await?
            .metadata
            .resource_version;
        let mut watch = pods
            .watch(
                &WatchParams::default()
                    .fields("metadata.name=orphan")
                    .timeout(60),
                rv.as_deref().unwrap_or("0"),
            )
            .await?
            .boxed();
        pods.create(
            &PostParams::default(),
            &test_pod("orphan", json!({"nodeName": "ghost"}))?,
        )
        .await?;
        let mut marked = false;
        let deleted = tokio::time::timeout(WAIT, async {
            while let Some(ev) = watch.try_next().await? {
                match ev {
                    WatchEvent::Modified(p) => {
                        let st = p.status.clone().unwrap_or_default();
                        let gc = st.conditions.unwrap_or_default().iter().any(|c| {
                            c.type_ == "DisruptionTarget"
                                && c.status == "True"
                                && c.reason.as_deref() == Some("DeletionByPodGC")
                        });
                        marked |= gc && st.phase.as_deref() == Some("Failed");
                    }
                    WatchEvent::Deleted(_) => return anyhow::Ok(true),
                    _ => {}
                }
            }
            Ok(false)
        })
        .await
        .context("orphan pod not deleted in time")??;
        ensure!(deleted && marked, "deleted {deleted}, marked {marked}");

        // A pod on a live node stays; deleting the node deletes it.
        pods.create(
            &PostParams::default(),
            &test_pod("onnode", json!({"nodeName": "n1"}))?,
        )
        .await?;
        tokio::time::sleep(Duration::from_secs(1)).await;
        ensure!(
            pods.get_opt("onnode").await?.is_some(),
            "pod of a live node deleted"
        );
        heartbeat.store(false, Ordering::SeqCst);
        nodes.delete("n1", &DeleteParams::default()).await?;
        wait_for("pod of deleted node n1 gone", WAIT, || {
            let pods = pods.clone();
            async move { Ok(pods.get_opt("onnode").await?.is_none().then_some(())) }
        })
        .await?;
        ensure!(running.metrics.get("kins_pod_gc_deleted_total", &[]) >= 2.0);
        only_ours(&client).await?;
        running.shutdown().await;
        Ok(())
    })
    .await
}

fn scheduled(p: &Pod) -> Option<(String, String, String)> {
    let c = p
        .status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "PodScheduled")?;
    Some((
        c.status.clone(),
        c.reason.clone().unwrap_or_default(),
        c.message.clone().unwrap_or_default(),
    ))
}

fn node_of(p: &Pod) -> Option<String> {
    p.spec.as_ref()?.node_name.clone().filter(|n| !n.is_empty())
}

async fn wait_bound(pods: &Api<Pod>, name: &str) -> anyhow::Result<String> {
    wait_for(&format!("pod {name} bound"), WAIT, || {
        let pods = pods.clone();
        async move { Ok(node_of(&pods.get(name).await?)) }
    })
    .await
}

async fn wait_unschedulable(pods: &Api<Pod>, name: &str) -> anyhow::Result<String> {
    wait_for(&format!("pod {name} unschedulable"), WAIT, || {
        let pods = pods.clone();
        async move {
            let p = pods.get(name).await?;
            ensure!(
                node_of(&p).is_none(),
                "{name} was bound to {:?}",
                node_of(&p)
            );
            Ok(scheduled(&p)
                .filter(|c| c.0 == "False" && c.1 == "Unschedulable")
                .map(|c| c.2))
        }
    })
    .await
}

async fn failed_scheduling(client: &Client, pod: &str, message: &str) -> anyhow::Result<Event> {
    wait_for(
        &format!("FailedScheduling event of {pod}"),
        WAIT,
        || async move {
            let evs = events(client, "default", pod, "FailedScheduling").await?;
            Ok(evs
                .into_iter()
                .find(|e| e.message.as_deref() == Some(message)))
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduler() -> anyhow::Result<()> {
    let (_cluster, client) = up("cmsched").await?;
    within(async move {
        let nodes: Api<Node> = Api::all(client.clone());
        let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
        let mut cfg = config("10.244.0.0/16", 24)?;
        cfg.node_monitor_grace_period = Duration::from_secs(600);
        // Long, so that what happens below happens because something changed.
        cfg.unschedulable_retry = Duration::from_secs(120);
        let running = controllers::start(client.clone(), cfg).await?;

        // No nodes yet.
        pods.create(&PostParams::default(), &test_pod("early", json!({}))?)
            .await?;
        let msg = wait_unschedulable(&pods, "early").await?;
        ensure!(msg == "no nodes available to schedule pods", "{msg}");
        let ev = failed_scheduling(&client, "early", &msg).await?;
        ensure!(ev.type_.as_deref() == Some("Warning"), "{ev:?}");
        ensure!(
            ev.reporting_component.as_deref() == Some("default-scheduler"),
            "{ev:?}"
        );
        ensure!(
            ev.source.as_ref().and_then(|s| s.component.as_deref()) == Some("default-scheduler"),
            "{ev:?}"
        );

        for (n, labels) in [
            ("a", json!({})),
            ("b", json!({})),
            ("c", json!({"disk": "ssd"})),
        ] {
            create_node(&client, n, labels).await?;
            post_status(&client, n, "True", 10).await?;
        }
        for n in ["a", "b", "c"] {
            wait_cidr(&client, n).await?;
        }
        // The nodes' arrival schedules the waiting pod: fewest pods, ties by name.
        ensure!(wait_bound(&pods, "early").await? == "a");
        let p = wait_for("early PodScheduled=True", WAIT, || {
            let pods = pods.clone();
            async move {
                let p = pods.get("early").await?;
                Ok(scheduled(&p).is_some_and(|c| c.0 == "True").then_some(p))
            }
        })
        .await?;
        ensure!(
            scheduled(&p).is_some_and(|c| c.0 == "True"),
            "{:?}",
            p.status
        );
        ensure!(!events(&client, "default", "early", "Scheduled")
            .await?
            .is_empty());

        // Spread.
        for i in 1..=5 {
            pods.create(
                &PostParams::default(),
                &test_pod(&format!("s{i}"), json!({}))?,
            )
            .await?;
        }
        let mut per_node: BTreeMap<String, usize> = BTreeMap::new();
        per_node.insert("a".into(), 1);
        for i in 1..=5 {
            *per_node
                .entry(wait_bound(&pods, &format!("s{i}")).await?)
                .or_default() += 1;
        }
        ensure!(
            per_node.values().all(|n| *n == 2),
            "not spread: {per_node:?}"
        );

        // nodeSelector.
        pods.create(
            &PostParams::default(),
            &test_pod("ssd", json!({"nodeSelector": {"disk": "ssd"}}))?,
        )
        .await?;
        ensure!(wait_bound(&pods, "ssd").await? == "c");

        // Taints and tolerations.
        let taint =
            json!({"spec": {"taints": [{"key": "dedicated", "value": "db", "effect": "NoSchedule"}]}});
        retry_conflicts(|| {
            let (nodes, taint) = (nodes.clone(), taint.clone());
            async move {
                nodes
                    .patch("b", &PatchParams::default(), &Patch::Merge(&taint))
                    .await
            }
        })
        .await?;
        let on_b = json!({"nodeSelector": {"kubernetes.io/hostname": "b"}});
        let tolerant = json!({"nodeSelector": {"kubernetes.io/hostname": "b"},
            "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "db", "effect": "NoSchedule"}]});
        wait_for("taint seen by the scheduler", WAIT, || {
            let nodes = nodes.clone();
            async move { Ok((!taints(&nodes.get("b").await?).is_empty()).then_some(())) }
        })
        .await?;
        tokio::time::sleep(Duration::from_millis(500)).await;
        pods.create(&PostParams::default(), &test_pod("onb", on_b)?)
            .await?;
        pods.create(&PostParams::default(), &test_pod("onb-tol", tolerant)?)
            .await?;
        ensure!(wait_bound(&pods, "onb-tol").await? == "b");
        let msg = wait_unschedulable(&pods, "onb").await?;
        let want = "0/3 nodes are available: 1 node(s) had untolerated taint {dedicated: db}, 2 node(s) didn't match Pod's node affinity/selector. preemption: 0/3 nodes are available: 3 Preemption is not helpful for scheduling.";
        ensure!(msg == want, "{msg}");
        failed_scheduling(&client, "onb", want).await?;
        // Untainting b schedules it (long before the periodic retry).
        let untaint = json!({"spec": {"taints": null}});
        retry_conflicts(|| {
            let (nodes, untaint) = (nodes.clone(), untaint.clone());
            async move {
                nodes
                    .patch("b", &PatchParams::default(), &Patch::Merge(&untaint))
                    .await
            }
        })
        .await?;
        ensure!(wait_bound(&pods, "onb").await? == "b");

        // Pods with a nodeName, or for another scheduler, are left alone.
        pods.create(
            &PostParams::default(),
            &test_pod("preset", json!({"nodeName": "a"}))?,
        )
        .await?;
        pods.create(
            &PostParams::default(),
            &test_pod("other", json!({"schedulerName": "other-scheduler"}))?,
        )
        .await?;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let other = pods.get("other").await?;
        ensure!(
            node_of(&other).is_none() && scheduled(&other).is_none(),
            "{other:?}"
        );
        ensure!(node_of(&pods.get("preset").await?).as_deref() == Some("a"));
        ensure!(events(&client, "default", "preset", "Scheduled")
            .await?
            .is_empty());

        // Full and cordoned: c has room for exactly what it runs, a and b are cordoned.
        let on_c = pods
            .list(&ListParams::default())
            .await?
            .items
            .iter()
            .filter(|p| node_of(p).as_deref() == Some("c"))
            .count();
        post_status(&client, "c", "True", on_c).await?;
        for n in ["a", "b"] {
            let cordon = json!({"spec": {"unschedulable": true}});
            retry_conflicts(|| {
                let (nodes, cordon) = (nodes.clone(), cordon.clone());
                async move {
                    nodes
                        .patch(n, &PatchParams::default(), &Patch::Merge(&cordon))
                        .await
                }
            })
            .await?;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        pods.create(&PostParams::default(), &test_pod("full", json!({}))?)
            .await?;
        let msg = wait_unschedulable(&pods, "full").await?;
        let want = "0/3 nodes are available: 1 Too many pods, 2 node(s) were unschedulable. preemption: 0/3 nodes are available: 1 No preemption victims found for incoming pod, 2 Preemption is not helpful for scheduling.";
        ensure!(msg == want, "{msg}");
        // A pod leaving c makes room at once.
        let victim = pods
            .list(&ListParams::default())
            .await?
            .items
            .into_iter()
            .find(|p| node_of(p).as_deref() == Some("c"))
            .context("a pod on c")?;
        pods.delete(&victim.name_any(), &DeleteParams::default().grace_period(0))
            .await?;
        ensure!(wait_bound(&pods, "full").await? == "c");

        let text = metrics_text(running.metrics_addr.context("metrics address")?).await?;
        ensure!(
            metric(&text, "kins_scheduler_attempts_total{result=\"scheduled\"}")
                .is_some_and(|v| v >= 10.0),
            "{text}"
        );
        only_ours(&client).await?;
        running.shutdown().await;
        Ok(())
    })
    .await
}

/// The slices of the Service `svc` in default, one line each, sorted:
/// `manager [ports] ip/pod:RST ...` (R ready, S serving, T terminating, `-` when not).
async fn slices_of(client: &Client, svc: &str) -> anyhow::Result<Vec<String>> {
    let list = Api::<EndpointSlice>::namespaced(client.clone(), "default")
        .list(&ListParams::default().labels(&format!("kubernetes.io/service-name={svc}")))
        .await?;
    let mut out: Vec<String> = list
        .items
        .iter()
        .map(|s| {
            let manager = s
                .labels()
                .get("endpointslice.kubernetes.io/managed-by")
                .map(|m| m.split('-').next().unwrap_or(m).to_string())
                .unwrap_or_default();
            let ports: Vec<String> = s
                .ports
                .iter()
                .flatten()
                .map(|p| {
                    format!(
                        "{}={}/{}",
                        p.name.as_deref().unwrap_or(""),
                        p.port.unwrap_or(0),
                        p.protocol.as_deref().unwrap_or("")
                    )
                })
                .collect();
            let eps: Vec<String> = s
                .endpoints
                .iter()
                .map(|e| {
                    let c = e.conditions.clone().unwrap_or_default();
                    let f = |b: Option<bool>, ch: char| if b == Some(true) { ch } else { '-' };
                    let pod = e
                        .target_ref
                        .as_ref()
                        .and_then(|r| r.name.clone())
                        .map(|n| format!("/{n}"))
                        .unwrap_or_default();
                    format!(
                        "{}{pod}:{}{}{}",
                        e.addresses.join(","),
                        f(c.ready, 'R'),
                        f(c.serving, 'S'),
                        f(c.terminating, 'T')
                    )
                })
                .collect();
            format!("{manager} [{}] {}", ports.join(","), eps.join(" "))
                .trim_end()
                .to_string()
        })
        .collect();
    out.sort();
    Ok(out)
}

/// The Endpoints `name` in default as `[ports] ready=ips notReady=ips` per subset, or
/// `None` when there is none.
async fn endpoints_of(client: &Client, name: &str) -> anyhow::Result<Option<Vec<String>>> {
    let Some(e) = Api::<Endpoints>::namespaced(client.clone(), "default")
        .get_opt(name)
        .await?
    else {
        return Ok(None);
    };
    let ips = |a: &Option<Vec<k8s_openapi::api::core::v1::EndpointAddress>>| {
        a.iter()
            .flatten()
            .map(|a| a.ip.clone())
            .collect::<Vec<_>>()
            .join(",")
    };
    Ok(Some(
        e.subsets
            .iter()
            .flatten()
            .map(|s| {
                let ports: Vec<String> = s
                    .ports
                    .iter()
                    .flatten()
                    .map(|p| format!("{}={}", p.name.as_deref().unwrap_or(""), p.port))
                    .collect();
                format!(
                    "[{}] ready={} notReady={}",
                    ports.join(","),
                    ips(&s.addresses),
                    ips(&s.not_ready_addresses)
                )
            })
            .collect(),
    ))
}

/// Waits until the slices of `svc` read `want`; returns how long it took.
async fn wait_slices(client: &Client, svc: &str, want: &[&str]) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let deadline = started + WAIT;
    loop {
        let got = slices_of(client, svc).await?;
        if got == want {
            return Ok(started.elapsed());
        }
        if Instant::now() > deadline {
            bail!("slices of {svc}: {got:?}, want {want:?}");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn wait_endpoints(client: &Client, name: &str, want: Option<&[&str]>) -> anyhow::Result<()> {
    let want: Option<Vec<String>> = want.map(|w| w.iter().map(|s| s.to_string()).collect());
    let deadline = Instant::now() + WAIT;
    loop {
        let got = endpoints_of(client, name).await?;
        if got == want {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("endpoints {name}: {got:?}, want {want:?}");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A pod of the endpoints test: labelled app=web, port `web` on `port`, never scheduled
/// (no scheduler takes schedulerName "none"), with a finalizer so that its deletion can
/// be seen.
fn web_pod(name: &str, port: i32) -> anyhow::Result<Pod> {
    Ok(serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "default", "labels": {"app": "web"},
                     "finalizers": ["kins.test/hold"]},
        "spec": {"schedulerName": "none", "containers": [{"name": "c", "image": "nginx",
                 "ports": [{"name": "web", "containerPort": port}]}]},
    }))?)
}

/// Sets a pod's status as an agent would: Running at `ip`, Ready as said.
async fn pod_running(pods: &Api<Pod>, name: &str, ip: &str, ready: bool) -> anyhow::Result<()> {
    let patch = json!({"status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}],
        "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]}});
    pods.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    Ok(())
}

async fn release(pods: &Api<Pod>, name: &str) -> anyhow::Result<()> {
    pods.patch(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoint_slices_and_endpoints() -> anyhow::Result<()> {
    let (_cluster, client) = up("cmeps").await?;
    within(async move {
        let running = controllers::start(client.clone(), config("10.244.0.0/16", 24)?).await?;
        let services: Api<Service> = Api::namespaced(client.clone(), "default");
        let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
        let eps: Api<Endpoints> = Api::namespaced(client.clone(), "default");
        let svc: Service = serde_json::from_value(json!({
            "metadata": {"name": "web", "labels": {"tier": "front"}},
            "spec": {"selector": {"app": "web"},
                     "ports": [{"name": "http", "port": 80, "targetPort": "web"}]},
        }))?;
        services.create(&PostParams::default(), &svc).await?;
        // No pods: one placeholder slice, an Endpoints without subsets.
        wait_slices(&client, "web", &["endpointslice []"]).await?;
        wait_endpoints(&client, "web", Some(&[])).await?;
        let e = eps.get("web").await?;
        ensure!(
            e.labels().get("endpoints.kubernetes.io/managed-by").map(String::as_str)
                == Some("endpoint-controller")
                && e.labels().get("tier").map(String::as_str) == Some("front"),
            "{:?}",
            e.metadata.labels
        );

        // A pod without an address is not an endpoint; with one, not ready, it is.
        pods.create(&PostParams::default(), &web_pod("a", 8080)?).await?;
        pod_running(&pods, "a", "10.244.1.5", false).await?;
        wait_slices(&client, "web", &["endpointslice [http=8080/TCP] 10.244.1.5/a:---"]).await?;
        wait_endpoints(&client, "web", Some(&["[http=8080] ready= notReady=10.244.1.5"])).await?;
        pod_running(&pods, "a", "10.244.1.5", true).await?;
        let took =
            wait_slices(&client, "web", &["endpointslice [http=8080/TCP] 10.244.1.5/a:RS-"]).await?;
        eprintln!("a ready pod was in its slice {took:?} after its status was written");
        wait_endpoints(&client, "web", Some(&["[http=8080] ready=10.244.1.5 notReady="])).await?;
        let slice = Api::<EndpointSlice>::namespaced(client.clone(), "default")
            .list(&ListParams::default().labels("kubernetes.io/service-name=web"))
            .await?
            .items
            .remove(0);
        ensure!(slice.name_any().starts_with("web-") && slice.name_any().len() == 9, "{}", slice.name_any());
        let owner = &slice.metadata.owner_references.clone().unwrap_or_default()[0];
        ensure!(
            owner.kind == "Service" && owner.name == "web" && owner.controller == Some(true),
            "{owner:?}"
        );

        // A second pod on another port number: a second slice, a second subset.
        pods.create(&PostParams::default(), &web_pod("b", 9090)?).await?;
        pod_running(&pods, "b", "10.244.2.7", true).await?;
        wait_slices(
            &client,
            "web",
            &[
                "endpointslice [http=8080/TCP] 10.244.1.5/a:RS-",
                "endpointslice [http=9090/TCP] 10.244.2.7/b:RS-",
            ],
        )
        .await?;
        wait_endpoints(
            &client,
            "web",
            Some(&["[http=8080] ready=10.244.1.5 notReady=", "[http=9090] ready=10.244.2.7 notReady="]),
        )
        .await?;

        // Nothing changes: nothing is written, even when pods are touched.
        let versions = |list: Vec<EndpointSlice>| -> Vec<(String, Option<String>)> {
            list.into_iter().map(|s| (s.name_any(), s.metadata.resource_version)).collect()
        };
        let slices_api = Api::<EndpointSlice>::namespaced(client.clone(), "default");
        let lp = ListParams::default().labels("kubernetes.io/service-name=web");
        let before = versions(slices_api.list(&lp).await?.items);
        let ep_before = eps.get("web").await?.metadata.resource_version;
        pods.patch("a", &PatchParams::default(), &Patch::Merge(json!({"metadata": {"annotations": {"touched": "yes"}}})))
            .await?;
        tokio::time::sleep(Duration::from_secs(1)).await;
        ensure!(versions(slices_api.list(&lp).await?.items) == before, "slices rewritten");
        ensure!(eps.get("web").await?.metadata.resource_version == ep_before, "endpoints rewritten");

        // Deleting b: terminating (held by its finalizer), then gone.
        pods.delete("b", &DeleteParams::default()).await?;
        wait_slices(
            &client,
            "web",
            &[
                "endpointslice [http=8080/TCP] 10.244.1.5/a:RS-",
                "endpointslice [http=9090/TCP] 10.244.2.7/b:-ST",
            ],
        )
        .await?;
        wait_endpoints(&client, "web", Some(&["[http=8080] ready=10.244.1.5 notReady="])).await?;
        release(&pods, "b").await?;
        wait_slices(&client, "web", &["endpointslice [http=8080/TCP] 10.244.1.5/a:RS-"]).await?;

        // a's labels change: it leaves the Service; back again, it returns.
        pods.patch("a", &PatchParams::default(), &Patch::Merge(json!({"metadata": {"labels": {"app": "other"}}})))
            .await?;
        wait_slices(&client, "web", &["endpointslice []"]).await?;
        wait_endpoints(&client, "web", Some(&[])).await?;
        pods.patch("a", &PatchParams::default(), &Patch::Merge(json!({"metadata": {"labels": {"app": "web"}}})))
            .await?;
        wait_slices(&client, "web", &["endpointslice [http=8080/TCP] 10.244.1.5/a:RS-"]).await?;

        // A slice deleted by someone comes back.
        slices_api.delete_collection(&DeleteParams::default(), &lp).await?;
        wait_slices(&client, "web", &["endpointslice [http=8080/TCP] 10.244.1.5/a:RS-"]).await?;

        // The Service goes: its slices and Endpoints go with it.
        services.delete("web", &DeleteParams::default()).await?;
        wait_slices(&client, "web", &[]).await?;
        wait_endpoints(&client, "web", None).await?;
        release(&pods, "a").await?;

        // A Service without a selector: its Endpoints are mirrored.
        let ext: Service = serde_json::from_value(json!({
            "metadata": {"name": "ext"}, "spec": {"ports": [{"name": "http", "port": 80}]},
        }))?;
        services.create(&PostParams::default(), &ext).await?;
        let mut ep: Endpoints = serde_json::from_value(json!({
            "metadata": {"name": "ext", "labels": {"team": "a"}},
            "subsets": [{"addresses": [{"ip": "192.0.2.1"}], "notReadyAddresses": [{"ip": "192.0.2.2"}],
                         "ports": [{"name": "http", "port": 8000}]}],
        }))?;
        eps.create(&PostParams::default(), &ep).await?;
        wait_slices(&client, "ext", &["endpointslicemirroring [http=8000/TCP] 192.0.2.1:R-- 192.0.2.2:---"]).await?;
        ep = eps.get("ext").await?;
        ep.subsets = Some(serde_json::from_value(json!([{"addresses": [{"ip": "192.0.2.3"}], "ports": [{"name": "http", "port": 8000}]}]))?);
        eps.replace("ext", &PostParams::default(), &ep).await?;
        wait_slices(&client, "ext", &["endpointslicemirroring [http=8000/TCP] 192.0.2.3:R--"]).await?;
        // The user's Endpoints outlive the controller's interest in them.
        ensure!(endpoints_of(&client, "ext").await?.is_some());
        eps.delete("ext", &DeleteParams::default()).await?;
        wait_slices(&client, "ext", &[]).await?;

        // The API server's own `kubernetes` slice is left alone, and not mirrored.
        let own = slices_of(&client, "kubernetes").await?;
        ensure!(own.len() == 1 && own[0].starts_with("kube ["), "{own:?}");
        running.shutdown().await;
        Ok(())
    })
    .await
}

/// Marks every pod labelled app=dep that is not ready yet Running and Ready (as an agent
/// would); returns how many it marked.
async fn ready_dep_pods(pods: &Api<Pod>, next_ip: &mut u8) -> anyhow::Result<usize> {
    let list = pods.list(&ListParams::default().labels("app=dep")).await?;
    let mut marked = 0;
    for p in list.items {
        let ready = p
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
        if ready || p.metadata.deletion_timestamp.is_some() {
            continue;
        }
        *next_ip = next_ip.wrapping_add(1);
        match pod_running(pods, &p.name_any(), &format!("10.244.9.{next_ip}"), true).await {
            Ok(()) => marked += 1,
            // Deleted meanwhile by a scale-down.
            Err(e)
                if e.downcast_ref::<kube::Error>()
                    .is_some_and(|e| matches!(e, kube::Error::Api(s) if s.code == 404)) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(marked)
}

/// The ReplicaSets of the deployment test: name -> (spec.replicas, revision).
async fn dep_replicasets(
    rss: &Api<k8s_openapi::api::apps::v1::ReplicaSet>,
) -> anyhow::Result<BTreeMap<String, (i32, String)>> {
    let list = rss.list(&ListParams::default().labels("app=dep")).await?;
    Ok(list
        .items
        .into_iter()
        .map(|rs| {
            let replicas = rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
            let rev = rs
                .annotations()
                .get("deployment.kubernetes.io/revision")
                .cloned()
                .unwrap_or_default();
            (rs.name_any(), (replicas, rev))
        })
        .collect())
}

/// Waits until the Deployment `dep` is rolled out at `replicas` as `kubectl rollout
/// status` judges it, marking new pods ready as they come.
async fn wait_rolled_out(
    deploys: &Api<k8s_openapi::api::apps::v1::Deployment>,
    pods: &Api<Pod>,
    replicas: i32,
    next_ip: &mut u8,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + WAIT;
    loop {
        ready_dep_pods(pods, next_ip).await?;
        let d = deploys.get("dep").await?;
        let s = d.status.clone().unwrap_or_default();
        let progressing = s
            .conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == "Progressing")
            .and_then(|c| c.reason.clone());
        let done = d.metadata.generation <= s.observed_generation
            && s.updated_replicas == Some(replicas)
            && s.replicas == Some(replicas)
            && s.available_replicas == Some(replicas)
            && progressing.as_deref() == Some("NewReplicaSetAvailable");
        if done {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("deployment not rolled out at {replicas}: {s:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The active pods of the deployment test.
async fn dep_pods(pods: &Api<Pod>) -> anyhow::Result<Vec<Pod>> {
    Ok(pods
        .list(&ListParams::default().labels("app=dep"))
        .await?
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deployments_and_replicasets() -> anyhow::Result<()> {
    use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
    let (_cluster, client) = up("cmdeploy").await?;
    within(async move {
        let running = controllers::start(client.clone(), config("10.244.0.0/16", 24)?).await?;
        let deploys: Api<Deployment> = Api::namespaced(client.clone(), "default");
        let rss: Api<ReplicaSet> = Api::namespaced(client.clone(), "default");
        let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
        let mut ip = 0u8;
        let d: Deployment = serde_json::from_value(json!({
            "metadata": {"name": "dep"},
            "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "dep"}},
                     "template": {"metadata": {"labels": {"app": "dep"}},
                                  "spec": {"schedulerName": "none",
                                           "containers": [{"name": "c", "image": "nginx"}]}}},
        }))?;
        deploys.create(&PostParams::default(), &d).await?;

        // One ReplicaSet, three pods it owns.
        let first = wait_for("one replicaset with 3 pods", WAIT, || async {
            let sets = dep_replicasets(&rss).await?;
            let ps = dep_pods(&pods).await?;
            Ok((sets.len() == 1 && ps.len() == 3).then_some(sets))
        })
        .await?;
        let (rs_name, (replicas, rev)) = first.iter().next().map(|(k, v)| (k.clone(), v.clone())).context("no rs")?;
        ensure!(replicas == 3 && rev == "1", "{first:?}");
        let hash = rs_name.strip_prefix("dep-").context("rs name")?;
        ensure!(!hash.is_empty() && hash.chars().all(|c| "456789bcdf".contains(c)), "{rs_name}");
        for p in dep_pods(&pods).await? {
            let owner = &p.metadata.owner_references.clone().unwrap_or_default()[0];
            ensure!(owner.kind == "ReplicaSet" && owner.name == rs_name && owner.controller == Some(true), "{owner:?}");
            ensure!(p.labels().get("pod-template-hash").map(String::as_str) == Some(hash), "{:?}", p.metadata.labels);
            ensure!(p.name_any().starts_with(&format!("{rs_name}-")), "{}", p.name_any());
        }
        wait_rolled_out(&deploys, &pods, 3, &mut ip).await?;
        let rs = rss.get(&rs_name).await?;
        let st = rs.status.clone().unwrap_or_default();
        ensure!(
            st.replicas == 3 && st.ready_replicas == Some(3) && st.available_replicas == Some(3)
                && st.fully_labeled_replicas == Some(3) && st.observed_generation == rs.metadata.generation,
            "{st:?}"
        );
        let d = deploys.get("dep").await?;
        ensure!(d.annotations().get("deployment.kubernetes.io/revision").map(String::as_str) == Some("1"));

        // Nothing changes: nothing is created, even after a while.
        tokio::time::sleep(Duration::from_secs(1)).await;
        ensure!(dep_pods(&pods).await?.len() == 3);

        // Scale to 1: two pods go.
        deploys
            .patch_scale("dep", &PatchParams::default(), &Patch::Merge(json!({"spec": {"replicas": 1}})))
            .await?;
        wait_for("one pod left", WAIT, || async { Ok((dep_pods(&pods).await?.len() == 1).then_some(())) }).await?;
        wait_rolled_out(&deploys, &pods, 1, &mut ip).await?;
        ensure!(dep_pods(&pods).await?.len() == 1);

        // A new template: a second ReplicaSet, which takes over as its pods turn ready.
        deploys
            .patch(
                "dep",
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "nginx:2"}]}}}})),
            )
            .await?;
        wait_rolled_out(&deploys, &pods, 1, &mut ip).await?;
        let sets = dep_replicasets(&rss).await?;
        ensure!(sets.len() == 2, "{sets:?}");
        ensure!(sets.get(&rs_name) == Some(&(0, "1".to_string())), "{sets:?}");
        let (new_name, new_state) = sets.iter().find(|(n, _)| **n != rs_name).context("new rs")?;
        ensure!(*new_state == (1, "2".to_string()), "{sets:?}");
        let d = deploys.get("dep").await?;
        ensure!(d.annotations().get("deployment.kubernetes.io/revision").map(String::as_str) == Some("2"));
        wait_for("the old pods gone", WAIT, || async {
            let ps = dep_pods(&pods).await?;
            Ok((ps.len() == 1 && ps[0].name_any().starts_with(new_name.as_str())).then_some(()))
        })
        .await?;

        // Rolling back as `kubectl rollout undo` does (the old template, hash label
        // removed): the first ReplicaSet comes back, as revision 3.
        let old_template = rss.get(&rs_name).await?.spec.context("spec")?.template.context("template")?;
        let mut t = serde_json::to_value(&old_template)?;
        if let Some(l) = t["metadata"]["labels"].as_object_mut() {
            l.remove("pod-template-hash");
        }
        let mut d = deploys.get("dep").await?;
        d.spec.as_mut().context("spec")?.template = serde_json::from_value(t)?;
        deploys.replace("dep", &PostParams::default(), &d).await?;
        wait_rolled_out(&deploys, &pods, 1, &mut ip).await?;
        let sets = dep_replicasets(&rss).await?;
        ensure!(sets.get(&rs_name) == Some(&(1, "3".to_string())), "{sets:?}");
        ensure!(sets.get(new_name) == Some(&(0, "2".to_string())), "{sets:?}");

        // Deleting the Deployment takes its ReplicaSets and pods.
        deploys.delete("dep", &DeleteParams::default()).await?;
        wait_for("replicasets and pods gone", WAIT, || async {
            let n = dep_replicasets(&rss).await?.len() + dep_pods(&pods).await?.len();
            Ok((n == 0).then_some(()))
        })
        .await?;
        running.shutdown().await;
        Ok(())
    })
    .await
}

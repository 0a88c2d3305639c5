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
use k8s_openapi::api::core::v1::{Event, Node, Pod};
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

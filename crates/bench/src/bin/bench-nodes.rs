//! Node benchmark: `kins up --nodes 3` until every node is Ready; pod startup (create →
//! Running with an IP) for 100 pods on 3 nodes, one at a time and in a burst; and kernel
//! objects after 500 pod create/delete cycles compared with the baseline.
//!
//! Usage: bench-nodes [CYCLES] (default 500). Needs root and the kins binary.

use std::collections::HashMap;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bench::{client, percentile};
use futures::StreamExt;
use kins_tests::Cluster;
use serde_json::{json, Value};

fn pod(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": {"bench": "nodes"}},
           "spec": {"terminationGracePeriodSeconds": 1, "containers": [{"name": "c", "image": "busybox", "command": ["sleep", "3600"]}]}})
}

/// Counts of what pods leave on a node: mounts, veths, IP files, shims, pod dirs.
fn kernel_objects(cluster: &str) -> anyhow::Result<Vec<(String, usize)>> {
    let run = format!("/run/kins/{cluster}");
    let mounts = std::fs::read_to_string("/proc/self/mounts")?
        .lines()
        .filter(|l| l.contains(&format!("{run}/")))
        .count();
    let mut veths = 0;
    let mut ips = 0;
    let mut pod_dirs = 0;
    for node in std::fs::read_dir(format!("{run}/netns"))?.flatten() {
        let out = Command::new("nsenter")
            .arg(format!("--net={}", node.path().display()))
            .args(["ip", "-o", "link", "show", "type", "veth"])
            .output()?;
        veths += String::from_utf8_lossy(&out.stdout).lines().count();
        let n = node.file_name().to_string_lossy().into_owned();
        let ipam = format!("{run}/nodes/{n}/ipam/kins");
        ips += std::fs::read_dir(&ipam)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| {
                e.file_name()
                    .to_string_lossy()
                    .parse::<std::net::Ipv4Addr>()
                    .is_ok()
            })
            .count();
        pod_dirs += std::fs::read_dir(format!("{run}/nodes/{n}/pods"))
            .into_iter()
            .flatten()
            .count();
    }
    let procs = lab_procs(cluster);
    // Container cgroups (any hierarchy that has the cluster's tree) and pod data dirs.
    let cgroups: usize = std::fs::read_dir("/sys/fs/cgroup")?
        .flatten()
        .map(|h| count_dirs(&h.path().join("kins").join(cluster)))
        .sum();
    Ok(vec![
        ("container cgroups (all hierarchies)".into(), cgroups),
        ("mounts (node and pod netns)".into(), mounts),
        ("veths in node namespaces".into(), veths),
        ("allocated pod IPs".into(), ips),
        ("pod state dirs".into(), pod_dirs),
        ("kins processes".into(), procs),
    ])
}

/// Directories under `dir`, recursively (0 when it does not exist).
fn count_dirs(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| 1 + count_dirs(&e.path()))
        .sum()
}

fn lab_procs(cluster: &str) -> usize {
    lab::procs::find(cluster).len()
}

/// Watches pods and reports when each first is Running with an IP.
async fn running_times(
    c: &reqwest::Client,
    base: &str,
    rv: &str,
) -> anyhow::Result<tokio::sync::mpsc::UnboundedReceiver<(String, Instant)>> {
    let url = format!("{base}/api/v1/namespaces/default/pods?watch=true&resourceVersion={rv}&labelSelector=bench%3Dnodes");
    let resp = c.get(url).send().await?;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut stream = resp.bytes_stream();
        let mut buf = Vec::new();
        while let Some(Ok(chunk)) = stream.next().await {
            let now = Instant::now();
            buf.extend_from_slice(&chunk);
            while let Some(pos) = buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = buf.drain(..=pos).collect();
                let Ok(ev) = serde_json::from_slice::<Value>(&line) else {
                    continue;
                };
                let o = &ev["object"];
                if o["status"]["phase"] == "Running" && o["status"]["podIP"].is_string() {
                    let _ = tx.send((
                        o["metadata"]["name"].as_str().unwrap_or("").to_string(),
                        now,
                    ));
                }
            }
        }
    });
    Ok(rx)
}

async fn list_rv(c: &reqwest::Client, base: &str) -> anyhow::Result<String> {
    let v: Value = c
        .get(format!(
            "{base}/api/v1/namespaces/default/pods?labelSelector=bench%3Dnodes"
        ))
        .send()
        .await?
        .json()
        .await?;
    Ok(v["metadata"]["resourceVersion"]
        .as_str()
        .unwrap_or("0")
        .to_string())
}

async fn create(c: &reqwest::Client, base: &str, name: &str) -> anyhow::Result<()> {
    let r = c
        .post(format!("{base}/api/v1/namespaces/default/pods"))
        .json(&pod(name))
        .send()
        .await?;
    if r.status().as_u16() != 201 {
        bail!("create {name}: {}", r.text().await?);
    }
    Ok(())
}

async fn delete_all(c: &reqwest::Client, base: &str) -> anyhow::Result<()> {
    c.delete(format!(
        "{base}/api/v1/namespaces/default/pods?labelSelector=bench%3Dnodes"
    ))
    .send()
    .await?;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let v: Value = c
            .get(format!(
                "{base}/api/v1/namespaces/default/pods?labelSelector=bench%3Dnodes"
            ))
            .send()
            .await?
            .json()
            .await?;
        if v["items"].as_array().is_none_or(Vec::is_empty) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("pods were not deleted within 120 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Creates `names` (all at once when `burst`, else one after another waiting for each)
/// and returns create → Running latencies in ms.
async fn startup(
    c: &reqwest::Client,
    base: &str,
    names: &[String],
    burst: bool,
) -> anyhow::Result<Vec<f64>> {
    let rv = list_rv(c, base).await?;
    let mut rx = running_times(c, base, &rv).await?;
    let mut sent: HashMap<String, Instant> = HashMap::new();
    let mut lat = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for n in names {
        sent.insert(n.clone(), Instant::now());
        create(c, base, n).await?;
        if !burst {
            loop {
                let (name, at) = tokio::time::timeout(Duration::from_secs(60), rx.recv())
                    .await?
                    .context("watch ended")?;
                if seen.insert(name.clone()) {
                    lat.push(at.duration_since(sent[&name]).as_secs_f64() * 1000.0);
                }
                if &name == n {
                    break;
                }
            }
        }
    }
    while seen.len() < names.len() {
        let Ok(next) = tokio::time::timeout(Duration::from_secs(120), rx.recv()).await else {
            let missing: Vec<&String> = names.iter().filter(|n| !seen.contains(*n)).collect();
            bail!("pods not Running after 120 s: {missing:?}");
        };
        let (name, at) = next.context("watch ended")?;
        if let Some(s) = sent.get(&name) {
            if seen.insert(name.clone()) {
                lat.push(at.duration_since(*s).as_secs_f64() * 1000.0);
            }
        }
    }
    lat.sort_by(f64::total_cmp);
    Ok(lat)
}

/// A field of a process's memory summary in KiB (0 when it is gone): "Rss", "Pss"
/// (shared pages divided among the processes sharing them), "Private_Dirty".
fn mem_kib(pid: i32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cycles: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(500);
    // 1. kins up --nodes 3 until every node is Ready (three runs).
    let mut ups = Vec::new();
    for i in 0..3 {
        let t = Instant::now();
        let c = Cluster::up_nodes(&format!("bn-up{i}"), 3)?;
        ups.push(t.elapsed().as_secs_f64());
        drop(c);
    }
    println!(
        "up: kins up --nodes 3 to all nodes Ready: {}",
        ups.iter()
            .map(|s| format!("{s:.2} s"))
            .collect::<Vec<_>>()
            .join(", ")
    );

    let cluster = Cluster::up_nodes("bn-pods", 3)?;
    let c = client(&cluster.kubeconfig)?;
    let base = cluster.url();
    let baseline = kernel_objects(&cluster.name)?;

    // 2. Pod startup, one at a time and as a burst of 100. The busybox image is built
    // from host packages on first use: one warm-up pod first, measured on its own.
    let warm = startup(&c, &base, &["warm-up".to_string()], false).await?;
    delete_all(&c, &base).await?;
    println!(
        "pods: first pod, busybox image built from host packages on the way: {:.1} ms",
        warm.first().copied().unwrap_or(0.0)
    );
    let names: Vec<String> = (0..100).map(|i| format!("seq-{i:03}")).collect();
    let seq = startup(&c, &base, &names, false).await?;
    delete_all(&c, &base).await?;
    println!(
        "pods: 100 pods one at a time, create → Running with IP: p50 {:.1} ms, p99 {:.1} ms",
        percentile(&seq, 50.0),
        percentile(&seq, 99.0)
    );
    let names: Vec<String> = (0..100).map(|i| format!("burst-{i:03}")).collect();
    let t = Instant::now();
    let burst = startup(&c, &base, &names, true).await?;
    println!(
        "pods: burst of 100, create → Running with IP: p50 {:.1} ms, p99 {:.1} ms; all 100 running after {:.2} s",
        percentile(&burst, 50.0),
        percentile(&burst, 99.0),
        t.elapsed().as_secs_f64()
    );
    let procs = lab::procs::find(&cluster.name);
    let median = |role: &str, field: &str| {
        let mut v: Vec<f64> = procs
            .iter()
            .filter(|p| p.role == role)
            .map(|p| mem_kib(p.pid, field) as f64)
            .collect();
        v.sort_by(f64::total_cmp);
        percentile(&v, 50.0)
    };
    println!(
        "memory with 100 pods running (median per process, KiB): agent RSS {:.0}, PSS {:.0}, private dirty {:.0}; shim ({} of them) RSS {:.0}, PSS {:.0}, private dirty {:.0}",
        median("agent", "Rss"),
        median("agent", "Pss"),
        median("agent", "Private_Dirty"),
        procs.iter().filter(|p| p.role == "shim").count(),
        median("shim", "Rss"),
        median("shim", "Pss"),
        median("shim", "Private_Dirty"),
    );
    delete_all(&c, &base).await?;

    // 3. Create/delete cycles in batches of 10; kernel objects must be back to baseline.
    let t = Instant::now();
    let mut done = 0;
    while done < cycles {
        let batch: Vec<String> = (done..(done + 10).min(cycles))
            .map(|i| format!("cyc-{i:04}"))
            .collect();
        startup(&c, &base, &batch, true).await?;
        delete_all(&c, &base).await?;
        done += batch.len();
    }
    // Deleted pods are torn down before their objects go; give the last ones a moment.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = kernel_objects(&cluster.name)?;
    println!(
        "cycles: {cycles} pod create/delete cycles in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    for ((what, b), (_, a)) in baseline.iter().zip(after.iter()) {
        println!(
            "  {what}: baseline {b}, after {a}{}",
            if a == b { "" } else { "  <-- differs" }
        );
    }
    Ok(())
}

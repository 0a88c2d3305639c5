//! API server benchmark: durable creates/s with 32 concurrent HTTPS clients, watch delay
//! (write acknowledged → event received) at 100 watchers, LIST of 10,000 pods, and the
//! API server's resident memory with 10,000 pods stored.
//!
//! Usage: bench-api [PODS] (default 10000). Needs root (kins up) and the kins binary
//! ($KINS_BIN or the workspace's target/release/kins).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bench::{apiserver_pid, client, percentile, rss_mib};
use futures::StreamExt;
use kins_tests::Cluster;
use serde_json::{json, Value};

const CLIENTS: usize = 32;
const WATCHERS: usize = 100;
const WATCH_EVENTS: usize = 200;

fn pod(name: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": "bench", "shard": (name.len() % 7).to_string()}},
        "spec": {"containers": [{"name": "app", "image": "nginx:1.27", "ports": [{"containerPort": 80}]}]},
    })
}

async fn post(c: &reqwest::Client, url: &str, body: &Value) -> anyhow::Result<Value> {
    let r = c.post(url).json(body).send().await?;
    let status = r.status();
    let v: Value = r.json().await?;
    if status.as_u16() != 201 {
        bail!("create answered {status}: {v}");
    }
    Ok(v)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let pods: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(10_000);
    let cluster = Cluster::up("bench-api").context("kins up")?;
    let c = client(&cluster.kubeconfig)?;
    let base = cluster.url();
    let pid = apiserver_pid(&cluster.name).context("finding the API server process")?;
    let rss_start = rss_mib(pid).unwrap_or(f64::NAN);
    for ns in ["bench", "bench-watch"] {
        post(
            &c,
            &format!("{base}/api/v1/namespaces"),
            &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
        )
        .await?;
    }

    // 1. Durable creates/s, 32 concurrent clients.
    let next = Arc::new(AtomicUsize::new(0));
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..CLIENTS {
        let (c, next, url) = (
            c.clone(),
            next.clone(),
            format!("{base}/api/v1/namespaces/bench/pods"),
        );
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= pods {
                    return anyhow::Ok(lat);
                }
                let t = Instant::now();
                post(&c, &url, &pod(&format!("pod-{i:05}"))).await?;
                lat.push(t.elapsed().as_secs_f64() * 1000.0);
            }
        }));
    }
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await??);
    }
    let secs = t0.elapsed().as_secs_f64();
    lat.sort_by(f64::total_cmp);
    println!(
        "creates: {pods} pods by {CLIENTS} clients in {secs:.2}s = {:.0} creates/s (latency p50 {:.2} ms, p99 {:.2} ms)",
        pods as f64 / secs,
        percentile(&lat, 50.0),
        percentile(&lat, 99.0)
    );

    // 2. LIST of all pods, whole and in kubectl's chunks of 500.
    let mut whole = Vec::new();
    let mut chunked = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        let v: Value = c
            .get(format!("{base}/api/v1/namespaces/bench/pods"))
            .send()
            .await?
            .json()
            .await?;
        whole.push(t.elapsed().as_secs_f64() * 1000.0);
        let n = v["items"].as_array().map_or(0, Vec::len);
        if n != pods {
            bail!("LIST returned {n} pods, expected {pods}");
        }
        let t = Instant::now();
        let mut cont = String::new();
        let mut n = 0;
        loop {
            let v: Value = c
                .get(format!(
                    "{base}/api/v1/namespaces/bench/pods?limit=500&continue={cont}"
                ))
                .send()
                .await?
                .json()
                .await?;
            n += v["items"].as_array().map_or(0, Vec::len);
            match v["metadata"]["continue"].as_str() {
                Some(k) if !k.is_empty() => cont = k.to_string(),
                _ => break,
            }
        }
        chunked.push(t.elapsed().as_secs_f64() * 1000.0);
        if n != pods {
            bail!("chunked LIST returned {n} pods, expected {pods}");
        }
    }
    whole.sort_by(f64::total_cmp);
    chunked.sort_by(f64::total_cmp);
    println!(
        "list: {pods} pods in one response median {:.1} ms (min {:.1}); in chunks of 500 median {:.1} ms",
        percentile(&whole, 50.0),
        whole[0],
        percentile(&chunked, 50.0)
    );
    let rss_full = rss_mib(pid).unwrap_or(f64::NAN);

    // 3. Watch delay at 100 watchers: each watcher records when it sees each configmap.
    let rv = c
        .get(format!("{base}/api/v1/namespaces/bench-watch/configmaps"))
        .send()
        .await?
        .json::<Value>()
        .await?["metadata"]["resourceVersion"]
        .as_str()
        .unwrap_or("0")
        .to_string();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(String, Instant)>();
    let ready = Arc::new(AtomicUsize::new(0));
    for _ in 0..WATCHERS {
        let (c, tx, ready) = (c.clone(), tx.clone(), ready.clone());
        let url = format!(
            "{base}/api/v1/namespaces/bench-watch/configmaps?watch=true&resourceVersion={rv}"
        );
        tokio::spawn(async move {
            let Ok(resp) = c.get(url).send().await else {
                return;
            };
            ready.fetch_add(1, Ordering::SeqCst);
            let mut stream = resp.bytes_stream();
            let mut buf = Vec::new();
            while let Some(Ok(chunk)) = stream.next().await {
                let now = Instant::now();
                buf.extend_from_slice(&chunk);
                while let Some(pos) = buf.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = buf.drain(..=pos).collect();
                    if let Ok(ev) = serde_json::from_slice::<Value>(&line) {
                        if let Some(name) = ev["object"]["metadata"]["name"].as_str() {
                            let _ = tx.send((name.to_string(), now));
                        }
                    }
                }
            }
        });
    }
    drop(tx);
    let deadline = Instant::now() + Duration::from_secs(30);
    while ready.load(Ordering::SeqCst) < WATCHERS && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut acked = std::collections::HashMap::new();
    for i in 0..WATCH_EVENTS {
        let name = format!("cm-{i:04}");
        let sent = Instant::now();
        post(&c, &format!("{base}/api/v1/namespaces/bench-watch/configmaps"), &json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"k": "v"}})).await?;
        acked.insert(name, (sent, Instant::now()));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut delays = Vec::new();
    let mut from_send = Vec::new();
    let want = WATCHERS * WATCH_EVENTS;
    let deadline = Instant::now() + Duration::from_secs(30);
    while delays.len() < want && Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_secs(5), rx.recv()).await {
            Ok(Some((name, at))) => {
                if let Some((sent, acked)) = acked.get(&name) {
                    delays.push(at.saturating_duration_since(*acked).as_secs_f64() * 1000.0);
                    from_send.push(at.saturating_duration_since(*sent).as_secs_f64() * 1000.0);
                }
            }
            _ => break,
        }
    }
    delays.sort_by(f64::total_cmp);
    from_send.sort_by(f64::total_cmp);
    println!(
        "watch: {} of {want} events at {WATCHERS} watchers; delay from acknowledgement p50 {:.2} ms, p99 {:.2} ms (0 = the event arrived before the response); from the request being sent p50 {:.2} ms, p99 {:.2} ms",
        delays.len(),
        percentile(&delays, 50.0),
        percentile(&delays, 99.0),
        percentile(&from_send, 50.0),
        percentile(&from_send, 99.0)
    );
    println!(
        "memory: API server RSS {rss_start:.1} MiB empty, {rss_full:.1} MiB with {pods} pods stored, {:.1} MiB with {WATCHERS} watchers",
        rss_mib(pid).unwrap_or(f64::NAN)
    );
    Ok(())
}

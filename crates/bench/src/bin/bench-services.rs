//! Service programming latency: with ready pods behind a selector, a Service is created
//! and a client pod on another node connects to its ClusterIP as soon as it can; the time
//! from the create request to the first successful connection, p50 and p99 over a number
//! of services (each deleted before the next). The connection is made from inside the
//! client pod's network namespace, so it goes through the proxy's rules on the pod's node.
//!
//! Usage: bench-services [COUNT] (default 50). Needs root and the kins binary.

use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bench::{client, percentile};
use kins_tests::pods::{create, wait_running};
use kins_tests::Cluster;
use serde_json::json;

fn web_pod(name: &str, node: &str) -> String {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": {"app": "web"}},
        "spec": {"nodeName": node, "terminationGracePeriodSeconds": 0, "containers": [{"name": "web", "image": "busybox",
            "command": ["sh", "-c", "mkdir -p /www && echo ok > /www/index.html && exec httpd -f -p 8080 -h /www"]}]}})
    .to_string()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let count: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(50);
    let cluster = Cluster::up_nodes("bn-svc", 2)?;
    let (n1, n2) = ("bn-svc-worker", "bn-svc-worker2");
    create(&cluster, &web_pod("web-1", n1))?;
    create(&cluster, &web_pod("web-2", n1))?;
    create(
        &cluster,
        &json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "client"},
            "spec": {"nodeName": n2, "terminationGracePeriodSeconds": 0,
                     "containers": [{"name": "c", "image": "busybox", "command": ["sleep", "3600"]}]}})
        .to_string(),
    )?;
    wait_running(&cluster, "web-1")?;
    wait_running(&cluster, "web-2")?;
    let client_pod = wait_running(&cluster, "client")?;
    let netns = kins_tests::pods::pod_netns(&cluster, &client_pod);
    let c = client(&cluster.kubeconfig)?;
    let base = cluster.url();
    let mut lat = Vec::new();
    for i in 0..count {
        let name = format!("svc-{i}");
        let t = Instant::now();
        let r = c
            .post(format!("{base}/api/v1/namespaces/default/services"))
            .json(
                &json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
                "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]}}),
            )
            .send()
            .await?;
        let svc: serde_json::Value = r.json().await?;
        let ip = svc["spec"]["clusterIP"]
            .as_str()
            .with_context(|| format!("no clusterIP: {svc}"))?;
        let addr: SocketAddr = format!("{ip}:80").parse()?;
        let ns = netns.clone();
        // Poll from inside the client pod's namespace until a connection succeeds.
        let done = tokio::task::spawn_blocking(move || {
            net::run_in_netns(&ns, move || {
                let deadline = Instant::now() + Duration::from_secs(30);
                while Instant::now() < deadline {
                    if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                        return Some(Instant::now());
                    }
                    std::thread::sleep(Duration::from_micros(500));
                }
                None
            })
        })
        .await??;
        let Some(at) = done else {
            bail!("service {name} ({ip}) never answered");
        };
        lat.push(at.duration_since(t).as_secs_f64() * 1000.0);
        c.delete(format!("{base}/api/v1/namespaces/default/services/{name}"))
            .send()
            .await?;
    }
    lat.sort_by(f64::total_cmp);
    println!(
        "service programming: create → first connection from a pod on another node, {count} services: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        percentile(&lat, 50.0),
        percentile(&lat, 99.0),
        lat.last().copied().unwrap_or(0.0)
    );
    Ok(())
}

//! Service programming latency: with ready pods behind a selector, a Service is created
//! and a client pod on another node connects to its ClusterIP as soon as it can; the time
//! from the create request to the first successful connection, p50 and p99 over a number
//! of services (each deleted before the next). The connection is made from inside the
//! client pod's network namespace, so it goes through the proxy's rules on the pod's node.
//!
//! The cluster runs the DNS add-on, and in the same loop a second poller in the client pod
//! asks kube-dns for the new service's name until it answers with its ClusterIP: the time
//! from the create request to the first answer is the DNS programming latency (the issue
//! asks for a name answerable within 100 ms). Only names of the cluster zone are asked, so
//! nothing is forwarded.
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
    let cluster = Cluster::up_with("bn-svc", &["--nodes", "2", "--dns=true"])?;
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
    // kube-dns answers (its pod is ready) before the loop starts.
    let ns = netns.clone();
    tokio::task::spawn_blocking(move || {
        net::run_in_netns(&ns, || {
            wait_dns(
                "kubernetes.default.svc.cluster.local",
                Duration::from_secs(60),
            )
        })
    })
    .await??
    .context("kube-dns never answered")?;
    let mut dns_lat = Vec::new();
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
        let qname = format!("{name}.default.svc.cluster.local");
        let dns_done = tokio::task::spawn_blocking(move || {
            net::run_in_netns(&ns, move || wait_dns(&qname, Duration::from_secs(30)))
        });
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
        let Some(at) = dns_done.await?? else {
            bail!("kube-dns never answered for {name}");
        };
        dns_lat.push(at.duration_since(t).as_secs_f64() * 1000.0);
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
    dns_lat.sort_by(f64::total_cmp);
    println!(
        "DNS programming: create → first A answer from kube-dns in that pod, {count} services: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms (target < 100 ms)",
        percentile(&dns_lat, 50.0),
        percentile(&dns_lat, 99.0),
        dns_lat.last().copied().unwrap_or(0.0)
    );
    Ok(())
}

/// Asks kube-dns (10.96.0.10) for `name` A over UDP until an answer has a record; the
/// time it came, or None at the deadline. Runs in the caller's network namespace.
fn wait_dns(name: &str, within: Duration) -> Option<Instant> {
    let sock = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    sock.connect("10.96.0.10:53").ok()?;
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .ok()?;
    let mut q = vec![0x4b, 0x53, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in name.split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    let deadline = Instant::now() + within;
    let mut buf = [0u8; 512];
    while Instant::now() < deadline {
        if sock.send(&q).is_ok() {
            if let Ok(n) = sock.recv(&mut buf) {
                let rcode = buf[3] & 0x0f;
                let answers = u16::from_be_bytes([buf[6], buf[7]]);
                if n >= 12 && buf[..2] == q[..2] && rcode == 0 && answers > 0 {
                    return Some(Instant::now());
                }
            }
        }
        std::thread::sleep(Duration::from_micros(500));
    }
    None
}

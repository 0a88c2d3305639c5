//! Data plane benchmark: ClusterIP against direct pod IP, between two pods on different
//! nodes. A server pod runs on the first node, a client pod on the second; the host's
//! `iperf3` runs inside their network namespaces (`nsenter --net`), and so do this
//! program's own TCP connect/accept loops (sockets made by threads that entered the pod's
//! namespace), so the traffic takes the path pod traffic takes: pod → veth → node (cni0,
//! the node's nftables, host-gw route) → host bridge → other node → veth → pod. A Service
//! (ClusterIP) selects the server pod; the ClusterIP path adds the client node's DNAT.
//!
//! Figures, each the median of RUNS runs (pod IP and ClusterIP runs alternate):
//! - throughput: `iperf3 -c ADDR -t SECONDS -J`, one stream, received bits per second;
//! - connections per second: CONNECTORS threads each connect, read to EOF (the server
//!   writes one byte and closes), close, for SECONDS.
//!
//! The server closes first, so TIME_WAIT is held by the server's side (which accepts a new
//! SYN for the same 4-tuple when its timestamp is newer), and the client's ephemeral ports
//! are free again as soon as its close completes: no port exhaustion without SO_LINGER
//! tricks, and every connection ends with a normal FIN handshake, as short-lived
//! connections usually do.
//!
//! The two paths reach the server on different ports (pod IP: 5202; ClusterIP: service
//! port 5202 → targetPort 5203). On one port they would share the server's 4-tuples
//! (client IP:port → pod IP:5202) while the client keys TCP timestamps and initial sequence
//! numbers by the address it dials (pod IP or ClusterIP): a SYN from one path that lands on
//! a TIME_WAIT left by the other then fails the server's timestamp check and is answered
//! with an ACK instead of a SYN-ACK (the server netns's TcpExtPAWSTimewait counts them), and
//! the client retries only after its 1 s SYN timeout. That measures what mixing the two
//! paths to one port does at thousands of connections per second, not the cost of the
//! ClusterIP hop; set BENCH_DP_SHARED_PORT=1 to see it (connections/s collapse for both).
//!
//! Traffic goes only to the pods' IPs and the Service's ClusterIP, from inside the
//! namespaces of the cluster this program creates (and deletes).
//!
//! Usage: bench-dataplane [SECONDS] [RUNS] [CONNECTORS] (default 5, 3, 1). Needs root,
//! nsenter, timeout and iperf3.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context};
use bench::dataplane::{
    busybox_pod, conn_rate, iperf, list, median, one_connection, tcp_ext, ConnServer, IperfServer,
    CONN_PORT, IPERF_PORT,
};
use kins_tests::pods::{create, get_json, pod_netns, wait_for, wait_running};
use kins_tests::Cluster;
use serde_json::json;

/// The connection server's port for the ClusterIP path (see the top).
const CONN_PORT_SVC: u16 = 5203;

fn main() -> anyhow::Result<()> {
    let arg = |i: usize, default: u64| -> anyhow::Result<u64> {
        Ok(std::env::args()
            .nth(i)
            .map(|s| s.parse())
            .transpose()
            .context("usage: bench-dataplane [SECONDS] [RUNS] [CONNECTORS]")?
            .unwrap_or(default))
    };
    let (secs, runs, connectors) = (arg(1, 5)?, arg(2, 3)? as usize, arg(3, 1)? as usize);
    if secs == 0 || runs == 0 || connectors == 0 {
        bail!("SECONDS, RUNS and CONNECTORS must be at least 1");
    }
    let began = Instant::now();

    // Declared first, dropped last: the servers below stop before the cluster goes.
    let cluster = Cluster::up_nodes("bn-dp", 2)?;
    let (n1, n2) = ("bn-dp-worker", "bn-dp-worker2");
    create(&cluster, &busybox_pod("server", n1, json!({"app": "dp"})))?;
    create(&cluster, &busybox_pod("client", n2, json!({})))?;
    let server = wait_running(&cluster, "server")?;
    let client = wait_running(&cluster, "client")?;
    let up_at = began.elapsed();
    let pod_ip = server["status"]["podIP"]
        .as_str()
        .context("server has no podIP")?
        .to_string();
    let server_ns: PathBuf = pod_netns(&cluster, &server);
    let client_ns: PathBuf = pod_netns(&cluster, &client);

    let _iperf_server = IperfServer::start(&server_ns)?;
    let shared = std::env::var("BENCH_DP_SHARED_PORT").is_ok_and(|v| v == "1");
    let conn_target = if shared { CONN_PORT } else { CONN_PORT_SVC };
    let conn_server = ConnServer::start(&server_ns, &[CONN_PORT, CONN_PORT_SVC])?;

    create(
        &cluster,
        &json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "dp"},
            "spec": {"selector": {"app": "dp"}, "ports": [
                {"name": "iperf", "port": IPERF_PORT, "targetPort": IPERF_PORT, "protocol": "TCP"},
                {"name": "conn", "port": CONN_PORT, "targetPort": conn_target, "protocol": "TCP"}]}})
        .to_string(),
    )?;
    let svc = get_json(&cluster, &["get", "service", "dp"])?;
    let cluster_ip = svc["spec"]["clusterIP"]
        .as_str()
        .with_context(|| format!("no clusterIP: {svc}"))?
        .to_string();
    wait_for(
        "the EndpointSlice of dp to list the server ready",
        30,
        || {
            let slices = get_json(
                &cluster,
                &[
                    "get",
                    "endpointslices",
                    "-l",
                    "kubernetes.io/service-name=dp",
                ],
            )?;
            let ready = slices["items"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|s| s["endpoints"].as_array().into_iter().flatten())
                .any(|e| {
                    e["conditions"]["ready"] == true
                        && e["addresses"]
                            .as_array()
                            .is_some_and(|a| a.iter().any(|x| x == pod_ip.as_str()))
                });
            Ok(ready.then_some(()))
        },
    )?;
    let svc_addr: SocketAddr = format!("{cluster_ip}:{CONN_PORT}").parse()?;
    let pod_addr: SocketAddr = format!("{pod_ip}:{CONN_PORT}").parse()?;
    let ns = client_ns.clone();
    net::run_in_netns(&ns, || {
        wait_for("a connection to the ClusterIP", 30, || {
            Ok(one_connection(&svc_addr).ok())
        })
    })??;
    println!(
        "cluster up and pods running in {:.1} s; server {pod_ip} on {n1}, client on {n2}, ClusterIP {cluster_ip}",
        up_at.as_secs_f64()
    );
    if shared {
        println!(
            "BENCH_DP_SHARED_PORT=1: both paths reach the connection server on port {CONN_PORT}"
        );
    }

    // Warm-up (not counted): one second of each path.
    for addr in [pod_addr, svc_addr] {
        conn_rate(&client_ns, addr, 1.0, connectors)?;
    }
    iperf(&client_ns, &pod_ip, 1)?;
    iperf(&client_ns, &cluster_ip, 1)?;

    let (mut tp_pod, mut tp_svc, mut cps_pod, mut cps_svc) = (vec![], vec![], vec![], vec![]);
    let mut failed = 0;
    for run in 1..=runs {
        tp_pod.push(iperf(&client_ns, &pod_ip, secs)?);
        tp_svc.push(iperf(&client_ns, &cluster_ip, secs)?);
        let (r, f) = conn_rate(&client_ns, pod_addr, secs as f64, connectors)?;
        cps_pod.push(r);
        failed += f;
        let (r, f) = conn_rate(&client_ns, svc_addr, secs as f64, connectors)?;
        cps_svc.push(r);
        failed += f;
        println!(
            "run {run}/{runs}: throughput pod IP {:.2} / ClusterIP {:.2} Gbit/s; connections/s pod IP {:.0} / ClusterIP {:.0}",
            tp_pod[run - 1], tp_svc[run - 1], cps_pod[run - 1], cps_svc[run - 1]
        );
    }
    drop(conn_server);
    let paws = tcp_ext(&server_ns, "PAWSTimewait")?;
    let syn_retrans = tcp_ext(&client_ns, "TCPSynRetrans")?;

    let (tp_p, tp_s) = (median(&tp_pod), median(&tp_svc));
    let (cp_p, cp_s) = (median(&cps_pod), median(&cps_svc));
    let verdict = |r: f64| if r >= 0.95 { "ok" } else { "BELOW 0.95" };
    println!();
    println!(
        "data plane: client pod on {n2} → server pod on {n1}, median of {runs} runs of {secs} s (alternating)"
    );
    println!("| measure | pod IP | ClusterIP | ClusterIP / pod IP |");
    println!("| --- | --- | --- | --- |");
    println!(
        "| throughput (iperf3, 1 stream) | {tp_p:.2} Gbit/s | {tp_s:.2} Gbit/s | {:.3} ({}) |",
        tp_s / tp_p,
        verdict(tp_s / tp_p)
    );
    println!(
        "| connections/s ({connectors} connector{}, connect + 1 byte + close) | {cp_p:.0} | {cp_s:.0} | {:.3} ({}) |",
        if connectors == 1 { "" } else { "s" },
        cp_s / cp_p,
        verdict(cp_s / cp_p)
    );
    let paired =
        |a: &[f64], b: &[f64]| median(&a.iter().zip(b).map(|(p, s)| s / p).collect::<Vec<_>>());
    println!(
        "paired (median over runs of each run's ClusterIP / pod IP): throughput {:.3}, connections/s {:.3}",
        paired(&tp_pod, &tp_svc),
        paired(&cps_pod, &cps_svc)
    );
    println!(
        "runs: throughput pod IP [{}], ClusterIP [{}] Gbit/s; connections/s pod IP [{}], ClusterIP [{}]; failed connections {failed}",
        list(&tp_pod, 2),
        list(&tp_svc, 2),
        list(&cps_pod, 0),
        list(&cps_svc, 0)
    );
    println!(
        "SYN stalls: server SYNs refused by a TIME_WAIT's timestamp check {paws}, client SYN retransmits {syn_retrans} (whole benchmark)"
    );
    println!(
        "floors on this machine (measurements.md, iperf3 one stream): veth pair 24.3, bridge 19.4, \
         routed through a middle netns 19.4, nftables DNAT hop 18.9 Gbit/s (0.97 of routed)"
    );
    println!("total time {:.1} s", began.elapsed().as_secs_f64());
    Ok(())
}

//! CNI plugin benchmark: what each pod network of `kins up --cni` costs. For each plugin
//! of $BENCH_CNI (comma-separated, default `kins,bridge,ptp,vxlan`), a two-node cluster of
//! its own (`bc-<plugin>`, made with `--cni <plugin>` and deleted afterwards):
//!
//! - CNI ADD latency: PODS busybox pods are created on the first node one after another
//!   (each Running before the next, so every ADD runs alone), and the `add_ms` field of the
//!   agent's `pod network ready` log line of each (the duration of the plugin chain's ADD,
//!   as the agent measured it) gives p50 and p99;
//! - throughput: `iperf3 -c POD_IP -t SECONDS -J`, one stream, from a client pod on the
//!   second node to a server pod on the first, received bits per second, median of RUNS;
//! - connections per second: CONNECTORS threads each connect, read one byte to EOF and
//!   close, for SECONDS, median of RUNS (the same code as bench-dataplane's pod IP path,
//!   from `bench::dataplane`);
//! - the MTU of the client pod's eth0.
//!
//! It prints a table with each plugin's figures and its ratio to kins (when kins is in the
//! list), then the same as Markdown for the README.
//!
//! Traffic goes only to pod IPs, from inside the namespaces of the clusters this program
//! creates (and deletes).
//!
//! Usage: bench-cni [PODS] [SECONDS] [RUNS] [CONNECTORS] (default 30, 5, 3, 1), with
//! BENCH_CNI=kins,bridge,ptp,vxlan. Needs root, nsenter, timeout and iperf3.

use std::net::SocketAddr;
use std::time::Instant;

use anyhow::{bail, Context};
use bench::dataplane::{
    busybox_pod, conn_rate, iperf, list, median, one_connection, ConnServer, IperfServer, CONN_PORT,
};
use bench::percentile;
use kins_tests::cni::{network_ready, pod_mtu};
use kins_tests::pods::{create, pod_netns, wait_for, wait_running};
use kins_tests::Cluster;
use serde_json::json;

/// One plugin's figures.
struct Row {
    plugin: String,
    add_p50: f64,
    add_p99: f64,
    gbps: f64,
    cps: f64,
    mtu: u64,
}

struct Params {
    pods: usize,
    secs: u64,
    runs: usize,
    connectors: usize,
}

fn measure(plugin: &str, p: &Params) -> anyhow::Result<Row> {
    let began = Instant::now();
    let name = format!("bc-{plugin}");
    // Declared first, dropped last: the servers below stop before the cluster goes.
    let cluster = Cluster::up_with(&name, &["--nodes", "2", "--cni", plugin])?;
    let (n1, n2) = (format!("{name}-worker"), format!("{name}-worker2"));
    let up_at = began.elapsed();

    // CNI ADD, one pod at a time.
    let names: Vec<String> = (0..p.pods).map(|i| format!("add-{i}")).collect();
    for pod in &names {
        create(&cluster, &busybox_pod(pod, &n1, json!({})))?;
        wait_running(&cluster, pod)?;
    }
    let logged = network_ready(&cluster, &n1)?;
    let mut adds: Vec<f64> = names
        .iter()
        .filter_map(|n| logged.iter().rev().find(|r| &r.pod == n).map(|r| r.add_ms))
        .collect();
    if adds.len() != names.len() {
        bail!(
            "{plugin}: the agent logged `pod network ready` with add_ms for {} of {} pods (see {})",
            adds.len(),
            names.len(),
            kins_tests::cni::agent_log(&cluster, &n1).display()
        );
    }
    adds.sort_by(f64::total_cmp);

    // The data plane: a server pod on node 1, a client pod on node 2.
    create(&cluster, &busybox_pod("server", &n1, json!({})))?;
    create(&cluster, &busybox_pod("client", &n2, json!({})))?;
    let server = wait_running(&cluster, "server")?;
    let client = wait_running(&cluster, "client")?;
    let pod_ip = server["status"]["podIP"]
        .as_str()
        .context("server has no podIP")?
        .to_string();
    let server_ns = pod_netns(&cluster, &server);
    let client_ns = pod_netns(&cluster, &client);
    let mtu = pod_mtu(&cluster, &client)?;
    let _iperf_server = IperfServer::start(&server_ns)?;
    let conn_server = ConnServer::start(&server_ns, &[CONN_PORT])?;
    let addr: SocketAddr = format!("{pod_ip}:{CONN_PORT}").parse()?;
    net::run_in_netns(&client_ns, || {
        wait_for("a connection to the server pod", 30, || {
            Ok(one_connection(&addr).ok())
        })
    })??;
    println!(
        "{plugin}: cluster up in {:.1} s, {} pods in {:.1} s; server {pod_ip} on {n1}, client on {n2}, MTU {mtu}",
        up_at.as_secs_f64(),
        p.pods,
        (began.elapsed() - up_at).as_secs_f64()
    );
    // Warm-up (not counted).
    conn_rate(&client_ns, addr, 1.0, p.connectors)?;
    iperf(&client_ns, &pod_ip, 1)?;
    let (mut tp, mut cps) = (vec![], vec![]);
    for run in 1..=p.runs {
        tp.push(iperf(&client_ns, &pod_ip, p.secs)?);
        cps.push(conn_rate(&client_ns, addr, p.secs as f64, p.connectors)?.0);
        println!(
            "{plugin}: run {run}/{}: {:.2} Gbit/s, {:.0} connections/s",
            p.runs,
            tp[run - 1],
            cps[run - 1]
        );
    }
    drop(conn_server);
    println!(
        "{plugin}: ADD ms [{}]; Gbit/s [{}]; connections/s [{}]; {:.1} s in all",
        list(&adds, 1),
        list(&tp, 2),
        list(&cps, 0),
        began.elapsed().as_secs_f64()
    );
    Ok(Row {
        plugin: plugin.to_string(),
        add_p50: percentile(&adds, 50.0),
        add_p99: percentile(&adds, 99.0),
        gbps: median(&tp),
        cps: median(&cps),
        mtu,
    })
}

fn main() -> anyhow::Result<()> {
    let usage = "usage: bench-cni [PODS] [SECONDS] [RUNS] [CONNECTORS]";
    let arg = |i: usize, default: u64| -> anyhow::Result<u64> {
        Ok(std::env::args()
            .nth(i)
            .map(|s| s.parse())
            .transpose()
            .context(usage)?
            .unwrap_or(default))
    };
    let p = Params {
        pods: arg(1, 30)? as usize,
        secs: arg(2, 5)?,
        runs: arg(3, 3)? as usize,
        connectors: arg(4, 1)? as usize,
    };
    if p.pods == 0 || p.secs == 0 || p.runs == 0 || p.connectors == 0 {
        bail!("PODS, SECONDS, RUNS and CONNECTORS must be at least 1");
    }
    let plugins: Vec<String> = std::env::var("BENCH_CNI")
        .unwrap_or_else(|_| "kins,bridge,ptp,vxlan".into())
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect();
    if plugins.is_empty() {
        bail!("BENCH_CNI names no plugin");
    }
    let began = Instant::now();
    let mut rows = Vec::new();
    let mut failed = Vec::new();
    for plugin in &plugins {
        match measure(plugin, &p) {
            Ok(r) => rows.push(r),
            Err(e) => {
                eprintln!("{plugin}: {e:#}");
                failed.push(plugin.clone());
            }
        }
    }

    let base = rows.iter().find(|r| r.plugin == "kins");
    let ratio = |v: f64, b: Option<f64>| match b {
        Some(b) if b > 0.0 => format!("{:.2}", v / b),
        _ => "-".to_string(),
    };
    let cells: Vec<[String; 8]> = rows
        .iter()
        .map(|r| {
            [
                r.plugin.clone(),
                format!("{:.1}", r.add_p50),
                format!("{:.1}", r.add_p99),
                format!("{:.2}", r.gbps),
                ratio(r.gbps, base.map(|b| b.gbps)),
                format!("{:.0}", r.cps),
                ratio(r.cps, base.map(|b| b.cps)),
                r.mtu.to_string(),
            ]
        })
        .collect();
    let header = [
        "plugin",
        "add p50 ms",
        "add p99 ms",
        "Gbit/s",
        "vs kins",
        "conn/s",
        "vs kins",
        "MTU",
    ];
    println!();
    println!(
        "CNI plugins: ADD over {} pods created one at a time on one node; pod to pod across two nodes, \
         median of {} runs of {} s (iperf3 one stream; {} connector{}, connect + 1 byte + close)",
        p.pods,
        p.runs,
        p.secs,
        p.connectors,
        if p.connectors == 1 { "" } else { "s" }
    );
    let widths: Vec<usize> = (0..header.len())
        .map(|i| {
            cells
                .iter()
                .map(|c| c[i].len())
                .chain([header[i].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |c: &[&str]| -> String {
        c.iter()
            .zip(&widths)
            .enumerate()
            .map(|(i, (s, w))| {
                if i == 0 {
                    format!("{s:<w$}")
                } else {
                    format!("{s:>w$}")
                }
            })
            .collect::<Vec<_>>()
            .join("  ")
    };
    println!("{}", line(&header));
    for c in &cells {
        println!(
            "{}",
            line(&c.iter().map(String::as_str).collect::<Vec<_>>())
        );
    }
    println!();
    println!("| {} |", header.join(" | "));
    println!(
        "|{}",
        header
            .iter()
            .enumerate()
            .map(|(i, _)| if i == 0 { " --- |" } else { " ---: |" })
            .collect::<String>()
    );
    for c in &cells {
        println!("| {} |", c.join(" | "));
    }
    println!();
    println!("total time {:.1} s", began.elapsed().as_secs_f64());
    if !failed.is_empty() {
        bail!("failed: {}", failed.join(", "));
    }
    Ok(())
}

//! Streaming benchmark: kubectl exec and port-forward through the API server and the
//! node's agent, on a one-node cluster this program creates (and deletes).
//!
//! Figures:
//! - exec round trip: `kubectl exec bb -- true`, median and p90 over EXECS runs, beside
//!   kubectl's own floor measured alone (`kubectl version --client`: start-up only) and a
//!   plain API request (`kubectl get pod bb -o name`);
//! - port-forward throughput of one stream: `iperf3 -c 127.0.0.1` through
//!   `kubectl port-forward` to `iperf3 -s` in the pod, and the direct transfer to the pod
//!   IP from its node's namespace in the same run (their ratio);
//! - requests per second through one port-forward: CONNS threads each doing HTTP/1.0
//!   GETs to nginx (one forwarded connection per request) for SECONDS.
//!
//! Traffic goes only to loopback and to the pod's IP from inside the cluster's node
//! namespace.
//!
//! Usage: bench-streams [EXECS] [SECONDS] [CONNS] (default 50, 5, 50). Needs root, nsenter
//! and iperf3; KINS_KUBECTL picks the kubectl (default `kubectl`).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use bench::percentile;
use kins_tests::pods::{pod_netns, wait_running};
use kins_tests::{free_port, ok, Cluster};

const PODS: &str = r#"{"apiVersion": "v1", "kind": "List", "items": [
  {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "bb"},
   "spec": {"terminationGracePeriodSeconds": 0,
     "containers": [{"name": "bb", "image": "busybox", "command": ["sleep", "3600"]}]}},
  {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web"},
   "spec": {"terminationGracePeriodSeconds": 0,
     "containers": [{"name": "nginx", "image": "nginx"}]}}]}"#;

/// A child process killed on drop (port-forward, iperf3 -s).
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn kubectl() -> PathBuf {
    std::env::var_os("KINS_KUBECTL")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("kubectl"))
}

/// Median and p90 in ms of `runs` runs of kubectl `args` (each must succeed).
fn timed(c: &Cluster, args: &[&str], runs: usize) -> anyhow::Result<(f64, f64)> {
    let mut ms = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t = Instant::now();
        ok(c.kubectl(&kubectl(), args)?)?;
        ms.push(t.elapsed().as_secs_f64() * 1e3);
    }
    ms.sort_by(f64::total_cmp);
    Ok((percentile(&ms, 50.0), percentile(&ms, 90.0)))
}

/// `kubectl port-forward pod/NAME LOCAL:REMOTE`, once it listens.
fn forward(c: &Cluster, pod: &str, remote: u16) -> anyhow::Result<(Killed, u16)> {
    let local = free_port();
    let mut child = c
        .kubectl_cmd(
            &kubectl(),
            &["port-forward", pod, &format!("{local}:{remote}")],
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let out = child.stdout.take().context("stdout")?;
    let guard = Killed(child);
    let mut lines = BufReader::new(out).lines();
    loop {
        match lines.next() {
            Some(l) => {
                if l?.starts_with("Forwarding from 127.0.0.1") {
                    break;
                }
            }
            None => bail!("kubectl port-forward {pod} ended"),
        }
    }
    std::thread::spawn(move || lines.for_each(drop));
    Ok((guard, local))
}

/// One-stream iperf3 throughput in Gbit/s (received), with `prefix` (nsenter) if given.
fn iperf(prefix: &[String], addr: &str, port: u16, secs: u64) -> anyhow::Result<f64> {
    let mut cmd = if prefix.is_empty() {
        Command::new("iperf3")
    } else {
        let mut c = Command::new(&prefix[0]);
        c.args(&prefix[1..]).arg("iperf3");
        c
    };
    let out = cmd
        .args([
            "-c",
            addr,
            "-p",
            &port.to_string(),
            "-t",
            &secs.to_string(),
            "-J",
        ])
        .output()
        .context("running iperf3 -c")?;
    ensure!(
        out.status.success(),
        "iperf3 -c {addr}: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let bps = v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .context("iperf3 JSON without end.sum_received")?;
    Ok(bps / 1e9)
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let arg = |i: usize, d: u64| args.get(i).and_then(|a| a.parse().ok()).unwrap_or(d);
    let (execs, secs, conns) = (arg(1, 50) as usize, arg(2, 5), arg(3, 50) as usize);
    let c = Cluster::up_nodes("bstreams", 1)?;
    ok(c.kubectl_stdin(&kubectl(), &["create", "-f", "-"], Some(PODS))?)?;
    let bb = wait_running(&c, "bb")?;
    wait_running(&c, "web")?;

    let (alone, alone90) = timed(&c, &["version", "--client"], execs)?;
    let (get, get90) = timed(&c, &["get", "pod", "bb", "-o", "name"], execs)?;
    let (exec, exec90) = timed(&c, &["exec", "bb", "--", "true"], execs)?;
    println!("kubectl alone (version --client): median {alone:.1} ms, p90 {alone90:.1} ms");
    println!("kubectl get pod (one API request): median {get:.1} ms, p90 {get90:.1} ms");
    println!(
        "kubectl exec bb -- true: median {exec:.1} ms, p90 {exec90:.1} ms ({:.1} ms above kubectl get)",
        exec - get
    );

    // Throughput: through port-forward, and directly from the node to the pod IP.
    let netns = pod_netns(&c, &bb);
    let server = Command::new("nsenter")
        .arg(format!("--net={}", netns.display()))
        .args(["iperf3", "-s", "-p", "5201"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting iperf3 -s in the pod")?;
    let _server = Killed(server);
    std::thread::sleep(Duration::from_millis(300));
    let pod_ip = bb["status"]["podIP"].as_str().context("podIP")?.to_string();
    let node_netns = format!("/run/kins/{}/netns/{}-worker", c.name, c.name);
    let direct_prefix = vec!["nsenter".to_string(), format!("--net={node_netns}")];
    let (_pf, local) = forward(&c, "pod/bb", 5201)?;
    let mut via = Vec::new();
    let mut direct = Vec::new();
    for _ in 0..3 {
        via.push(iperf(&[], "127.0.0.1", local, secs)?);
        direct.push(iperf(&direct_prefix, &pod_ip, 5201, secs)?);
    }
    via.sort_by(f64::total_cmp);
    direct.sort_by(f64::total_cmp);
    let (v, d) = (percentile(&via, 50.0), percentile(&direct, 50.0));
    println!(
        "one stream, {secs} s, median of 3: port-forward {v:.2} Gbit/s, direct to the pod IP {d:.2} Gbit/s (ratio {:.3})",
        v / d
    );

    // Requests per second through one port-forward, `conns` connections at a time.
    let (_pf, local) = forward(&c, "pod/web", 80)?;
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let threads: Vec<_> = (0..conns)
        .map(|_| {
            let (stop, done, failed) = (stop.clone(), done.clone(), failed.clone());
            std::thread::spawn(move || {
                let mut buf = Vec::with_capacity(1024);
                while !stop.load(Ordering::Relaxed) {
                    let r = (|| -> std::io::Result<bool> {
                        let mut s = TcpStream::connect(("127.0.0.1", local))?;
                        s.set_read_timeout(Some(Duration::from_secs(10)))?;
                        s.write_all(b"GET / HTTP/1.0\r\nHost: web\r\n\r\n")?;
                        buf.clear();
                        s.read_to_end(&mut buf)?;
                        Ok(buf.starts_with(b"HTTP/1.1 200"))
                    })();
                    match r {
                        Ok(true) => done.fetch_add(1, Ordering::Relaxed),
                        _ => failed.fetch_add(1, Ordering::Relaxed),
                    };
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(secs));
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        let _ = t.join();
    }
    let elapsed = start.elapsed().as_secs_f64();
    println!(
        "HTTP/1.0 GETs through one port-forward, {conns} connections: {:.0} requests/s ({} failed)",
        done.load(Ordering::Relaxed) as f64 / elapsed,
        failed.load(Ordering::Relaxed)
    );
    Ok(())
}

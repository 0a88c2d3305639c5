//! Pod-to-pod data plane measurements shared by bench-dataplane and bench-cni: the host's
//! `iperf3` run inside pods' network namespaces (`nsenter --net`), and TCP connect/accept
//! loops on sockets made by threads that entered a pod's namespace, so the traffic takes
//! the path pod traffic takes.
//!
//! The connection server closes first (it writes one byte and closes), so TIME_WAIT is
//! held by the server's side and the client's ephemeral ports are free again at once.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::{json, Value};

use crate::percentile;

/// The port of `iperf3 -s` in the server pod.
pub const IPERF_PORT: u16 = 5201;
/// The port of the accept-write-close server (pod IP path).
pub const CONN_PORT: u16 = 5202;

/// `iperf3 -s` inside the server pod's namespace, killed on drop.
pub struct IperfServer(Child);

impl IperfServer {
    pub fn start(netns: &Path) -> anyhow::Result<Self> {
        let mut child = Command::new("nsenter")
            .arg(format!("--net={}", netns.display()))
            .args(["iperf3", "-s", "-p", &IPERF_PORT.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting iperf3 -s")?;
        std::thread::sleep(Duration::from_millis(300));
        if let Some(status) = child.try_wait()? {
            bail!("iperf3 -s exited at once: {status}");
        }
        Ok(IperfServer(child))
    }
}

impl Drop for IperfServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The accept-write-close server: listeners made inside the server pod's namespace and a
/// thread accepting on each. Dropping it shuts the listeners down, which wakes the threads.
pub struct ConnServer {
    _listeners: Vec<ConnListener>,
}

impl ConnServer {
    pub fn start(netns: &Path, ports: &[u16]) -> anyhow::Result<Self> {
        let mut all = Vec::new();
        for &port in ports {
            all.push(ConnListener::start(netns, port)?);
        }
        Ok(ConnServer { _listeners: all })
    }
}

pub struct ConnListener {
    listener: TcpListener,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<u64>>,
}

impl ConnListener {
    pub fn start(netns: &Path, port: u16) -> anyhow::Result<Self> {
        let listener = net::run_in_netns(netns, || {
            TcpListener::bind(SocketAddr::from(([0, 0, 0, 0], port)))
        })??;
        let stop = Arc::new(AtomicBool::new(false));
        let (l, s) = (listener.try_clone()?, stop.clone());
        let thread = std::thread::spawn(move || {
            let mut served = 0u64;
            while !s.load(Ordering::Relaxed) {
                match l.accept() {
                    Ok((mut conn, _)) => {
                        let _ = conn.write_all(b"x");
                        served += 1;
                        // Dropped here: the server sends its FIN first.
                    }
                    Err(_) if s.load(Ordering::Relaxed) => break,
                    Err(_) => std::thread::sleep(Duration::from_millis(1)),
                }
            }
            served
        });
        Ok(ConnListener {
            listener,
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for ConnListener {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // shutdown(2) on a listening socket makes a blocked accept(2) return (EINVAL).
        if let Ok(fd) = self.listener.try_clone() {
            let s = TcpStream::from(std::os::fd::OwnedFd::from(fd));
            let _ = s.shutdown(Shutdown::Both);
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One connection: connect, read until EOF (one byte expected), close.
pub fn one_connection(addr: &SocketAddr) -> std::io::Result<()> {
    let mut s = TcpStream::connect_timeout(addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut buf = [0u8; 8];
    let mut got = 0;
    loop {
        match s.read(&mut buf)? {
            0 => break,
            n => got += n,
        }
    }
    if got != 1 {
        return Err(std::io::Error::other(format!("read {got} bytes, not 1")));
    }
    Ok(())
}

/// Connections per second to `addr` from inside `netns`, `connectors` threads for `secs`.
/// Returns (connections/s, failed connections).
pub fn conn_rate(
    netns: &Path,
    addr: SocketAddr,
    secs: f64,
    connectors: usize,
) -> anyhow::Result<(f64, u64)> {
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(secs);
    let handles: Vec<_> = (0..connectors)
        .map(|_| {
            let ns = netns.to_path_buf();
            std::thread::spawn(move || -> anyhow::Result<(u64, u64, Option<String>)> {
                Ok(net::run_in_netns(&ns, move || {
                    let (mut ok, mut failed, mut first_err) = (0u64, 0u64, None);
                    while Instant::now() < end {
                        match one_connection(&addr) {
                            Ok(()) => ok += 1,
                            Err(e) => {
                                failed += 1;
                                first_err.get_or_insert_with(|| e.to_string());
                                if failed > 100 {
                                    break;
                                }
                            }
                        }
                    }
                    (ok, failed, first_err)
                })?)
            })
        })
        .collect();
    let (mut ok, mut failed) = (0, 0);
    let mut errors = Vec::new();
    for h in handles {
        let (o, f, e) = h
            .join()
            .map_err(|_| anyhow::anyhow!("connector panicked"))??;
        ok += o;
        failed += f;
        errors.extend(e);
    }
    let elapsed = start.elapsed().as_secs_f64();
    if failed > 100 {
        bail!("{failed} connections to {addr} failed: {errors:?}");
    }
    if !errors.is_empty() {
        eprintln!("  {failed} connection(s) to {addr} failed, first: {errors:?}");
    }
    Ok((ok as f64 / elapsed, failed))
}

/// `iperf3 -c ADDR -t SECS -J` inside `netns`; received Gbit/s.
pub fn iperf(netns: &Path, ip: &str, secs: u64) -> anyhow::Result<f64> {
    let out = Command::new("timeout")
        .args(["-k", "5", &(secs + 30).to_string(), "nsenter"])
        .arg(format!("--net={}", netns.display()))
        .args(["iperf3", "-c", ip, "-p", &IPERF_PORT.to_string()])
        .args(["-t", &secs.to_string(), "-J", "--connect-timeout", "3000"])
        .stdin(Stdio::null())
        .output()
        .context("running iperf3 -c")?;
    let v: Value = serde_json::from_slice(&out.stdout).with_context(|| {
        format!(
            "iperf3 -c {ip} printed no JSON ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )
    })?;
    if let Some(e) = v["error"].as_str() {
        bail!("iperf3 -c {ip}: {e}");
    }
    let bps = v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .with_context(|| format!("iperf3 -c {ip}: no end.sum_received in its output"))?;
    Ok(bps / 1e9)
}

/// A TcpExt counter of a network namespace (/proc/net/netstat as seen from inside it).
pub fn tcp_ext(netns: &Path, name: &str) -> anyhow::Result<u64> {
    let text = net::run_in_netns(netns, || {
        std::fs::read_to_string("/proc/thread-self/net/netstat")
    })??;
    let lines: Vec<&str> = text.lines().collect();
    for pair in lines.chunks(2) {
        let [names, values] = pair else { break };
        if !names.starts_with("TcpExt:") {
            continue;
        }
        if let Some((_, v)) = names
            .split_whitespace()
            .zip(values.split_whitespace())
            .find(|(n, _)| *n == name)
        {
            return Ok(v.parse()?);
        }
    }
    bail!("no TcpExt {name} in /proc/net/netstat")
}

/// A busybox pod sleeping on `node` (where the host's tools run in its namespace).
pub fn busybox_pod(name: &str, node: &str, labels: Value) -> String {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": labels},
        "spec": {"nodeName": node, "terminationGracePeriodSeconds": 0,
                 "containers": [{"name": "c", "image": "busybox", "command": ["sleep", "3600"]}]}})
    .to_string()
}

/// The median of unsorted samples.
pub fn median(samples: &[f64]) -> f64 {
    let mut s = samples.to_vec();
    s.sort_by(f64::total_cmp);
    percentile(&s, 50.0)
}

/// Samples as `a, b, c` with `digits` decimals.
pub fn list(samples: &[f64], digits: usize) -> String {
    samples
        .iter()
        .map(|x| format!("{x:.digits$}"))
        .collect::<Vec<_>>()
        .join(", ")
}

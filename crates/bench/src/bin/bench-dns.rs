//! Cluster DNS benchmark: dnsperf against kins-dns serving 10,000 services, and in the same
//! run against Knot DNS serving the equivalent zone files, each server pinned to CPU 0 and
//! dnsperf pinned to CPU 1. Figures: queries per second, average, p50 and p99 latency, lost
//! queries and response codes, the kins/Knot ratio against the target (≥ 50,000 QPS per
//! core, ≥ 0.3 of Knot), and the resident memory of both servers.
//!
//! Usage: bench-dns [SECONDS] (default 10: length of each throughput run). Needs dnsperf,
//! knotd (Debian `knot`), dig and taskset, and two CPUs; measured as root (knotd keeps its
//! run and storage directories in a temporary directory, removed at the end).
//!
//! Setup. 10,000 services over 10 namespaces: 9,000 ClusterIP (10.96.0.0/16, named ports
//! `http` 80 and `metrics` 9090) and 1,000 headless, each with an EndpointSlice of 3 ready
//! endpoints (10.128.0.0/16, named port `http` 8080). kins-dns runs in a child process (this
//! program re-executed as `bench-dns serve`, under `taskset -c 0`, with a current_thread
//! tokio runtime), so its RSS is that of the DNS server alone. Its Corefile is kubeadm's
//! default without `forward` (no upstream at all), every port ephemeral on 127.0.0.1. Knot
//! gets `cluster.local` and `10.in-addr.arpa` zone files with the same records (A, SRV on
//! the service and on `_port._proto`, endpoint names, PTRs), one UDP, one TCP and one
//! background worker, under `taskset -c 0`. All traffic is on 127.0.0.1; neither server
//! can forward anything. Before measuring, a sample of queries of every kind is asked of
//! both servers with dig and the answers (rcode and answer section without TTLs) compared.
//!
//! Query mix (20,000 lines, cycled by dnsperf): 60 % A of ClusterIP services, 10 % A of
//! headless services, 10 % SRV `_http._tcp.<svc>.<ns>.svc.cluster.local`, 8 % PTR of
//! ClusterIPs, 7 % NXDOMAIN names in `<ns>.svc.cluster.local`, 5 % AAAA of ClusterIP
//! services (NODATA).
//!
//! Runs: `taskset -c 1 dnsperf -s 127.0.0.1 -p PORT -d FILE -l SECONDS -c 10 -T 1 -Q 1000000`
//! against kins-dns then Knot, twice; the better run of each server is reported (both are
//! printed). QPS and the average latency are dnsperf's. dnsperf prints no percentiles, so
//! p50/p99 come from a separate 3-second run of each server with the same options plus
//! `-v`, which prints one line per answered query with its latency (written to a file and
//! sorted afterwards); lost queries are not in those lines. The throughput runs are
//! closed-loop at saturation (dnsperf keeps up to 100 queries outstanding), so latencies
//! include the queueing at the server: with 100 queries in flight the average is about
//! 100 / QPS (Little's law), not the service time. Service latency is therefore also
//! measured at a fixed rate under both servers' capacity (`-Q 20000`, 3 s, `-v`), the same
//! offered load for both.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bench::{percentile, rss_mib};
use dns::{serve, Index, IndexConfig, ServeOptions};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde_json::json;

const SERVICES: usize = 10_000;
const NAMESPACES: usize = 10;
const ENDPOINTS: usize = 3;
const TTL: u32 = 30;
const QUERY_LINES: usize = 20_000;
const VERBOSE_SECONDS: u32 = 3;
const ROUNDS: usize = 2;
/// dnsperf's `-Q` for the throughput runs (no limit in practice).
const MAX_QPS: u32 = 1_000_000;
/// dnsperf's `-Q` for the latency runs at a fixed rate, under both servers' capacity.
const FIXED_QPS: u32 = 20_000;

/// kubeadm's CoreDNS Corefile (the add-on's default) without its `forward` block: nothing
/// may leave the host.
fn corefile() -> String {
    let mut out = String::new();
    let mut skipping = false;
    for line in dns::corefile::KUBEADM_DEFAULT.lines() {
        if line.trim_start().starts_with("forward ") {
            skipping = line.trim_end().ends_with('{');
            continue;
        }
        if skipping {
            skipping = line.trim() != "}";
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// Reference figures from shared/design/measurements.md.
const REF_KNOT: &str =
    "Knot DNS 3.2, 1 UDP worker on 1 core, 10,000 A records: 174k QPS, avg 159 µs, p99 369 µs";
const REF_COREDNS: &str = "CoreDNS (published, cluster names): about 17k QPS per core";

/// One service of the model both servers are filled from.
struct Svc {
    name: String,
    ns: String,
    /// The ClusterIP, or None for a headless service.
    cluster_ip: Option<Ipv4Addr>,
    /// Ready endpoint IPs (headless services only).
    endpoints: Vec<Ipv4Addr>,
}

impl Svc {
    fn fqdn(&self) -> String {
        format!("{}.{}.svc.cluster.local", self.name, self.ns)
    }
}

/// Every tenth block of ten services is headless: 1,000 of them, in every namespace.
fn model() -> Vec<Svc> {
    let mut headless = 0;
    (0..SERVICES)
        .map(|i| {
            let name = format!("svc-{i}");
            let ns = format!("ns-{}", i % NAMESPACES);
            if (i / 10) % 10 == 0 {
                let endpoints = (0..ENDPOINTS)
                    .map(|k| {
                        let n = headless * ENDPOINTS + k;
                        Ipv4Addr::new(10, 128, (n / 250) as u8, (n % 250 + 1) as u8)
                    })
                    .collect();
                headless += 1;
                Svc {
                    name,
                    ns,
                    cluster_ip: None,
                    endpoints,
                }
            } else {
                let ip = Ipv4Addr::new(10, 96, (i / 250) as u8, (i % 250 + 1) as u8);
                Svc {
                    name,
                    ns,
                    cluster_ip: Some(ip),
                    endpoints: Vec::new(),
                }
            }
        })
        .collect()
}

fn objects(s: &Svc) -> anyhow::Result<(Service, Option<EndpointSlice>)> {
    let meta = json!({"name": s.name, "namespace": s.ns});
    let Some(ip) = s.cluster_ip else {
        let svc = json!({"metadata": meta, "spec": {"clusterIP": "None", "clusterIPs": ["None"],
            "ports": [{"name": "http", "protocol": "TCP", "port": 8080}]}});
        let eps: Vec<_> = s
            .endpoints
            .iter()
            .map(|ip| json!({"addresses": [ip.to_string()], "conditions": {"ready": true}}))
            .collect();
        let slice = json!({"metadata": {"name": format!("{}-a", s.name), "namespace": s.ns,
                "labels": {"kubernetes.io/service-name": s.name}},
            "addressType": "IPv4", "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
            "endpoints": eps});
        return Ok((
            serde_json::from_value(svc)?,
            Some(serde_json::from_value(slice)?),
        ));
    };
    let ip = ip.to_string();
    let svc = json!({"metadata": meta, "spec": {"clusterIP": ip, "clusterIPs": [ip], "ports": [
        {"name": "http", "protocol": "TCP", "port": 80},
        {"name": "metrics", "protocol": "TCP", "port": 9090}]}});
    Ok((serde_json::from_value(svc)?, None))
}

fn ptr_name(ip: Ipv4Addr) -> String {
    let [a, b, c, d] = ip.octets();
    format!("{d}.{c}.{b}.{a}.in-addr.arpa")
}

fn dashed(ip: Ipv4Addr) -> String {
    ip.to_string().replace('.', "-")
}

/// The zone files for Knot: `cluster.local` and `10.in-addr.arpa`, the records kins-dns
/// builds for the same objects.
fn knot_zones(model: &[Svc]) -> (String, String) {
    let mut fwd = format!(
        "$ORIGIN cluster.local.\n$TTL {TTL}\n\
         @ SOA ns.dns.cluster.local. hostmaster.cluster.local. 1 7200 1800 86400 {TTL}\n\
         @ NS ns.dns.cluster.local.\ndns-version TXT \"1.1.0\"\n"
    );
    let mut rev = format!(
        "$ORIGIN 10.in-addr.arpa.\n$TTL {TTL}\n\
         @ SOA ns.dns.in-addr.arpa. hostmaster.in-addr.arpa. 1 7200 1800 86400 {TTL}\n\
         @ NS ns.dns.in-addr.arpa.\n"
    );
    for s in model {
        let base = format!("{}.", s.fqdn());
        match s.cluster_ip {
            Some(ip) => {
                fwd.push_str(&format!("{base} A {ip}\n"));
                for (port, number) in [("http", 80), ("metrics", 9090)] {
                    fwd.push_str(&format!("{base} SRV 0 100 {number} {base}\n"));
                    fwd.push_str(&format!("_{port}._tcp.{base} SRV 0 100 {number} {base}\n"));
                }
                rev.push_str(&format!("{}. PTR {base}\n", ptr_name(ip)));
            }
            None => {
                for ip in &s.endpoints {
                    let host = format!("{}.{base}", dashed(*ip));
                    fwd.push_str(&format!("{base} A {ip}\n"));
                    fwd.push_str(&format!("{base} SRV 0 100 8080 {host}\n"));
                    fwd.push_str(&format!("_http._tcp.{base} SRV 0 100 8080 {host}\n"));
                    fwd.push_str(&format!("{host} A {ip}\n"));
                    rev.push_str(&format!("{}. PTR {host}\n", ptr_name(*ip)));
                }
            }
        }
    }
    (fwd, rev)
}

/// The kinds of query in the mix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    ClusterIpA,
    HeadlessA,
    Srv,
    Ptr,
    NxDomain,
    Aaaa,
}

/// The query mix: `(kind, "name TYPE")`, deterministic.
fn queries(model: &[Svc]) -> Vec<(Kind, String)> {
    let clusterip: Vec<&Svc> = model.iter().filter(|s| s.cluster_ip.is_some()).collect();
    let headless: Vec<&Svc> = model.iter().filter(|s| s.cluster_ip.is_none()).collect();
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = move || {
        // xorshift64
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state as usize
    };
    (0..QUERY_LINES)
        .map(|_| {
            let pick = next() % 100;
            let r = next();
            let c = clusterip[r % clusterip.len()];
            match pick {
                0..=59 => (Kind::ClusterIpA, format!("{} A", c.fqdn())),
                60..=69 => {
                    let h = headless[r % headless.len()];
                    (Kind::HeadlessA, format!("{} A", h.fqdn()))
                }
                70..=79 => {
                    let s = &model[r % model.len()];
                    (Kind::Srv, format!("_http._tcp.{} SRV", s.fqdn()))
                }
                80..=87 => {
                    let ip = c.cluster_ip.expect("a ClusterIP service");
                    (Kind::Ptr, format!("{} PTR", ptr_name(ip)))
                }
                88..=94 => (
                    Kind::NxDomain,
                    format!(
                        "missing-{}.ns-{}.svc.cluster.local A",
                        r % 100_000,
                        r % NAMESPACES
                    ),
                ),
                _ => (Kind::Aaaa, format!("{} AAAA", c.fqdn())),
            }
        })
        .collect()
}

/// `bench-dns serve`: fills the index and serves kins-dns on an ephemeral 127.0.0.1 port
/// with one thread; prints `ADDR <addr> NAMES <n> FILL_MS <ms>`, exits when stdin closes.
fn serve_child() -> anyhow::Result<()> {
    std::thread::spawn(|| {
        let mut sink = Vec::new();
        let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut sink);
        std::process::exit(0);
    });
    let t0 = Instant::now();
    let mut index = Index::new(IndexConfig::default());
    for s in model() {
        let (svc, slice) = objects(&s)?;
        index.apply_service(&svc);
        if let Some(slice) = slice {
            index.apply_slice(&slice);
        }
    }
    let fill_ms = t0.elapsed().as_secs_f64() * 1000.0;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let opts = ServeOptions {
            listen_ip: "127.0.0.1".parse()?,
            ephemeral_ports: true,
            ..ServeOptions::default()
        };
        let dns = serve(&corefile(), index, opts).await?;
        let addr = dns.dns_addr(53).await.context("no DNS listener")?;
        let names = dns.index().read().map(|i| i.name_count()).unwrap_or(0);
        let mut out = std::io::stdout();
        writeln!(out, "ADDR {addr} NAMES {names} FILL_MS {fill_ms:.0}")?;
        out.flush()?;
        std::future::pending::<()>().await;
        Ok(())
    })
}

/// A child process killed (and reaped) on drop.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Guard {
    fn pid(&self) -> i32 {
        self.0.id() as i32
    }
}

fn free_port() -> anyhow::Result<u16> {
    for _ in 0..20 {
        let udp = UdpSocket::bind("127.0.0.1:0")?;
        let port = udp.local_addr()?.port();
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    bail!("no free port on 127.0.0.1")
}

fn start_kins() -> anyhow::Result<(Guard, u16, String)> {
    let exe = std::env::current_exe()?;
    let child = Command::new("taskset")
        .args(["-c", "0"])
        .arg(exe)
        .arg("serve")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("spawning the kins-dns server")?;
    let mut guard = Guard(child);
    let stdout = guard.0.stdout.take().context("stdout")?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx
        .recv_timeout(Duration::from_secs(120))
        .context("kins-dns server did not start")?;
    let mut words = line.split_whitespace();
    if words.next() != Some("ADDR") {
        bail!("kins-dns server: unexpected output {line:?}");
    }
    let addr: std::net::SocketAddr = words.next().context("address")?.parse()?;
    if !addr.ip().is_loopback() {
        bail!("kins-dns listens on {addr}, not loopback");
    }
    Ok((guard, addr.port(), line.trim().to_string()))
}

fn start_knot(dir: &Path, model: &[Svc]) -> anyhow::Result<(Guard, u16)> {
    let port = free_port()?;
    let (fwd, rev) = knot_zones(model);
    std::fs::write(dir.join("cluster.local.zone"), fwd)?;
    std::fs::write(dir.join("10.in-addr.arpa.zone"), rev)?;
    let d = dir.display();
    let conf = format!(
        "server:
    rundir: {d}
    pidfile: {d}/knot.pid
    listen: 127.0.0.1@{port}
    udp-workers: 1
    tcp-workers: 1
    background-workers: 1
log:
  - target: stderr
    any: warning
control:
    listen: {d}/knot.sock
database:
    storage: {d}
template:
  - id: default
    storage: {d}
    file: \"%s.zone\"
    zonefile-sync: -1
    zonefile-load: whole
    journal-content: none
zone:
  - domain: cluster.local
  - domain: 10.in-addr.arpa
"
    );
    let conf_path = dir.join("knot.conf");
    std::fs::write(&conf_path, conf)?;
    let log = std::fs::File::create(dir.join("knot.log"))?;
    let child = Command::new("taskset")
        .args(["-c", "0", "knotd", "-c"])
        .arg(&conf_path)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("spawning knotd")?;
    Ok((Guard(child), port))
}

/// Rcode and answer section (name, class, type, data; TTLs dropped), sorted.
fn dig(port: u16, name: &str, rtype: &str) -> anyhow::Result<(String, Vec<String>)> {
    let out = Command::new("dig")
        .args([
            "@127.0.0.1",
            "-p",
            &port.to_string(),
            "+tries=1",
            "+time=2",
            "+norecurse",
            "+noall",
            "+comments",
            "+answer",
            name,
            rtype,
        ])
        .output()
        .context("running dig")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let status = text
        .split("status: ")
        .nth(1)
        .and_then(|s| s.split(',').next())
        .unwrap_or("NO ANSWER")
        .to_string();
    let mut answer: Vec<String> = text
        .lines()
        .filter(|l| !l.starts_with(';') && !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let mut kept = vec![f[0].to_ascii_lowercase()];
            kept.extend(f.iter().skip(2).map(|s| s.to_ascii_lowercase()));
            kept.join(" ")
        })
        .collect();
    answer.sort();
    Ok((status, answer))
}

fn wait_answer(port: u16, name: &str, what: &str) -> anyhow::Result<()> {
    let t0 = Instant::now();
    loop {
        if let Ok((status, answer)) = dig(port, name, "A") {
            if status == "NOERROR" && !answer.is_empty() {
                return Ok(());
            }
        }
        if t0.elapsed() > Duration::from_secs(60) {
            bail!("{what} does not answer {name} on 127.0.0.1:{port}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Asks both servers a few queries of each kind; returns the number of differences.
fn compare(qs: &[(Kind, String)], kins: u16, knot: u16) -> anyhow::Result<usize> {
    let mut per_kind: BTreeMap<Kind, usize> = BTreeMap::new();
    let mut diffs = 0;
    let mut asked = 0;
    for (kind, line) in qs {
        let n = per_kind.entry(*kind).or_default();
        if *n >= 20 {
            continue;
        }
        *n += 1;
        asked += 1;
        let (name, rtype) = line.split_once(' ').context("query line")?;
        let a = dig(kins, name, rtype)?;
        let b = dig(knot, name, rtype)?;
        if a != b {
            diffs += 1;
            println!("  DIFFERENT {line} ({kind:?}):\n    kins-dns: {a:?}\n    knot:     {b:?}");
        }
    }
    println!(
        "answers: {asked} sample queries ({} kinds) asked of both servers, {diffs} differ (rcode or answer section without TTLs)",
        per_kind.len()
    );
    Ok(diffs)
}

/// One dnsperf run.
#[derive(Debug, Clone, Default)]
struct Perf {
    sent: u64,
    completed: u64,
    lost: u64,
    rcodes: String,
    qps: f64,
    avg_us: f64,
    /// From `-v` lines (answered queries): latencies in µs, sorted.
    lat_us: Vec<f64>,
}

fn stat<'a>(text: &'a str, key: &str) -> anyhow::Result<&'a str> {
    text.lines()
        .map(str::trim)
        .find_map(|l| l.strip_prefix(key))
        .map(str::trim)
        .with_context(|| format!("dnsperf printed no {key:?}"))
}

fn first<T: std::str::FromStr>(text: &str, key: &str) -> anyhow::Result<T>
where
    T::Err: std::error::Error + Send + Sync + 'static,
{
    let s = stat(text, key)?;
    s.split_whitespace()
        .next()
        .unwrap_or_default()
        .parse()
        .with_context(|| format!("dnsperf {key} {s:?}"))
}

fn dnsperf(
    dir: &Path,
    file: &Path,
    port: u16,
    secs: u32,
    max_qps: u32,
    verbose: bool,
) -> anyhow::Result<Perf> {
    let out_path = dir.join(format!("dnsperf-{port}.out"));
    let out = std::fs::File::create(&out_path)?;
    let mut cmd = Command::new("taskset");
    cmd.args(["-c", "1", "dnsperf", "-s", "127.0.0.1", "-p"])
        .arg(port.to_string())
        .arg("-d")
        .arg(file)
        .args([
            "-l",
            &secs.to_string(),
            "-c",
            "10",
            "-T",
            "1",
            "-Q",
            &max_qps.to_string(),
        ]);
    if verbose {
        cmd.arg("-v");
    }
    let status = cmd
        .stdout(out)
        .stderr(Stdio::inherit())
        .status()
        .context("running dnsperf")?;
    let text = std::fs::read_to_string(&out_path)?;
    if !status.success() {
        bail!(
            "dnsperf failed ({status}): {}",
            text.lines().take(20).collect::<Vec<_>>().join("\n")
        );
    }
    let mut lat_us: Vec<f64> = text
        .lines()
        .filter(|l| l.starts_with("> "))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|s| s * 1e6)
        .collect();
    lat_us.sort_by(f64::total_cmp);
    let _ = std::fs::remove_file(&out_path);
    Ok(Perf {
        sent: first(&text, "Queries sent:")?,
        completed: first(&text, "Queries completed:")?,
        lost: first(&text, "Queries lost:")?,
        rcodes: stat(&text, "Response codes:")?.to_string(),
        qps: first(&text, "Queries per second:")?,
        avg_us: first::<f64>(&text, "Average Latency (s):")? * 1e6,
        lat_us,
    })
}

fn pin_self_to_cpu1() -> anyhow::Result<()> {
    let mut set = nix::sched::CpuSet::new();
    set.set(1)?;
    nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set)?;
    Ok(())
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn main() -> anyhow::Result<()> {
    let arg = std::env::args().nth(1);
    if arg.as_deref() == Some("serve") {
        return serve_child();
    }
    let secs: u32 = arg.map(|a| a.parse()).transpose()?.unwrap_or(10);
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    if cpus < 2 {
        bail!("needs two CPUs (server on CPU 0, dnsperf on CPU 1); {cpus} available");
    }
    for tool in ["dnsperf", "knotd", "dig", "taskset"] {
        let found = std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).exists()))
            .unwrap_or(false)
            || Path::new("/usr/sbin").join(tool).exists();
        if !found {
            bail!("{tool} not found (Debian packages dnsperf, knot, bind9-dnsutils, util-linux)");
        }
    }
    pin_self_to_cpu1().context("pinning the benchmark process to CPU 1")?;
    let t_start = Instant::now();
    println!("load average at start: {}", loadavg());

    let tmp = tempfile::tempdir()?;
    let dir: PathBuf = tmp.path().to_path_buf();
    let model = model();
    let qs = queries(&model);
    let qfile = dir.join("queries.txt");
    let mut w = std::io::BufWriter::new(std::fs::File::create(&qfile)?);
    let mut mix: BTreeMap<Kind, usize> = BTreeMap::new();
    for (kind, line) in &qs {
        writeln!(w, "{line}")?;
        *mix.entry(*kind).or_default() += 1;
    }
    w.flush()?;
    drop(w);
    let nx_share = 100.0 * mix.get(&Kind::NxDomain).copied().unwrap_or(0) as f64 / qs.len() as f64;
    println!(
        "services: {SERVICES} in {NAMESPACES} namespaces ({} ClusterIP, {} headless with {ENDPOINTS} endpoints); query mix of {} lines: {}",
        model.iter().filter(|s| s.cluster_ip.is_some()).count(),
        model.iter().filter(|s| s.cluster_ip.is_none()).count(),
        qs.len(),
        mix.iter()
            .map(|(k, n)| format!("{k:?} {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    );

    let (kins, kins_port, kins_line) = start_kins()?;
    let probe = model
        .iter()
        .find(|s| s.cluster_ip.is_some())
        .context("a ClusterIP service")?
        .fqdn();
    wait_answer(kins_port, &probe, "kins-dns")?;
    let kins_rss_filled = rss_mib(kins.pid()).unwrap_or(f64::NAN);
    println!(
        "kins-dns: pid {} on 127.0.0.1:{kins_port} ({kins_line}), RSS {kins_rss_filled:.1} MiB",
        kins.pid()
    );

    let t_knot = Instant::now();
    let (knot, knot_port) = start_knot(&dir, &model)?;
    wait_answer(knot_port, &probe, "knotd")
        .with_context(|| std::fs::read_to_string(dir.join("knot.log")).unwrap_or_default())?;
    let knot_version = Command::new("knotd")
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    println!(
        "knotd: pid {} on 127.0.0.1:{knot_port} ({knot_version}), zones loaded in {:.1} s, RSS {:.1} MiB",
        knot.pid(),
        t_knot.elapsed().as_secs_f64(),
        rss_mib(knot.pid()).unwrap_or(f64::NAN)
    );

    let diffs = compare(&qs, kins_port, knot_port)?;

    let mut runs: BTreeMap<&str, Vec<Perf>> = BTreeMap::new();
    for round in 1..=ROUNDS {
        for (server, port) in [("kins-dns", kins_port), ("knot", knot_port)] {
            let p = dnsperf(&dir, &qfile, port, secs, MAX_QPS, false)?;
            println!(
                "  round {round} {server:<8}: {:>9.0} QPS, avg {:>6.0} µs, sent {}, completed {}, lost {}; {} (load {})",
                p.qps,
                p.avg_us,
                p.sent,
                p.completed,
                p.lost,
                p.rcodes,
                loadavg()
            );
            runs.entry(server).or_default().push(p);
        }
    }
    let mut verbose: BTreeMap<&str, Perf> = BTreeMap::new();
    for (server, port) in [("kins-dns", kins_port), ("knot", knot_port)] {
        let p = dnsperf(&dir, &qfile, port, VERBOSE_SECONDS, MAX_QPS, true)?;
        println!(
            "  -v run {server:<8}: {:>9.0} QPS, avg {:>6.0} µs, {} latencies, p50 {:.0} µs, p99 {:.0} µs, p99.9 {:.0} µs, lost {}",
            p.qps,
            p.avg_us,
            p.lat_us.len(),
            percentile(&p.lat_us, 50.0),
            percentile(&p.lat_us, 99.0),
            percentile(&p.lat_us, 99.9),
            p.lost
        );
        verbose.insert(server, p);
    }
    let mut fixed: BTreeMap<&str, Perf> = BTreeMap::new();
    for (server, port) in [("kins-dns", kins_port), ("knot", knot_port)] {
        let p = dnsperf(&dir, &qfile, port, VERBOSE_SECONDS, FIXED_QPS, true)?;
        println!(
            "  -v run at {FIXED_QPS} QPS {server:<8}: {:>7.0} QPS, avg {:>5.0} µs, {} latencies, p50 {:.0} µs, p99 {:.0} µs, p99.9 {:.0} µs, lost {}",
            p.qps,
            p.avg_us,
            p.lat_us.len(),
            percentile(&p.lat_us, 50.0),
            percentile(&p.lat_us, 99.0),
            percentile(&p.lat_us, 99.9),
            p.lost
        );
        fixed.insert(server, p);
    }
    let kins_rss_after = rss_mib(kins.pid()).unwrap_or(f64::NAN);
    let knot_rss = rss_mib(knot.pid()).unwrap_or(f64::NAN);

    let best = |s: &str| -> Perf {
        runs[s]
            .iter()
            .max_by(|a, b| a.qps.total_cmp(&b.qps))
            .cloned()
            .unwrap_or_default()
    };
    let (k, n) = (best("kins-dns"), best("knot"));
    let (kv, nv) = (&verbose["kins-dns"], &verbose["knot"]);
    println!();
    println!(
        "{:<14} {:>8} {:>8} {:>8} {:>8} {:>10} {:>10} {:>6} {:>8}  response codes (expected ≈ {:.1} % NXDOMAIN)",
        "server,1 core",
        "QPS",
        "avg µs",
        "p50 µs",
        "p99 µs",
        "p50@20k",
        "p99@20k",
        "lost",
        "RSS MiB",
        nx_share
    );
    for (name, p, v, f, rss) in [
        ("kins-dns", &k, kv, &fixed["kins-dns"], kins_rss_after),
        ("knot 3.2", &n, nv, &fixed["knot"], knot_rss),
    ] {
        println!(
            "{:<14} {:>8.0} {:>8.0} {:>8.0} {:>8.0} {:>10.0} {:>10.0} {:>6} {:>8.1}  {}",
            name,
            p.qps,
            p.avg_us,
            percentile(&v.lat_us, 50.0),
            percentile(&v.lat_us, 99.0),
            percentile(&f.lat_us, 50.0),
            percentile(&f.lat_us, 99.0),
            p.lost,
            rss,
            p.rcodes
        );
    }
    println!(
        "(QPS, avg: best of {ROUNDS} runs of {secs} s at saturation; p50/p99: a {VERBOSE_SECONDS} s -v run at saturation; p50@20k/p99@20k µs: a {VERBOSE_SECONDS} s -v run at -Q {FIXED_QPS})"
    );
    let ratio = k.qps / n.qps;
    println!(
        "kins-dns / knot QPS     {ratio:>10.2}   target ≥ 0.30: {}",
        if ratio >= 0.3 { "met" } else { "NOT met" }
    );
    println!(
        "kins-dns QPS per core   {:>10.0}   target ≥ 50,000: {}",
        k.qps,
        if k.qps >= 50_000.0 { "met" } else { "NOT met" }
    );
    println!("reference: {REF_KNOT}");
    println!("reference: {REF_COREDNS}");
    println!(
        "kins-dns RSS: {kins_rss_filled:.1} MiB with {SERVICES} services loaded, {kins_rss_after:.1} MiB after the runs (server process alone: a child process)"
    );
    println!(
        "answers compared: {diffs} differences; load average at end: {}; total {:.0} s",
        loadavg(),
        t_start.elapsed().as_secs_f64()
    );
    drop(knot);
    drop(kins);
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_benchmark_corefile_is_kubeadms_without_forward() {
        let c = super::corefile();
        assert!(
            !c.contains("forward") && !c.contains("max_concurrent"),
            "{c}"
        );
        assert!(
            c.contains("kubernetes cluster.local") && c.contains("cache 30"),
            "{c}"
        );
        dns::corefile::parse(&c).expect("it parses");
    }
}

//! Ingress benchmark: the kins ingress controller against nginx and HAProxy set up by hand
//! as reverse proxies to the same pods, then how fast a new Ingress is served and what
//! 1,000 Ingresses cost the controller in memory.
//!
//! A cluster of its own (`bing`, BENCH_NODES nodes, default 1, with the ingress add-on
//! `kins up` deploys by default) runs BACKENDS nginx pods (Deployment `web`, image `nginx`
//! built from the host's packages, whose conf.d is a ConfigMap: `return 200 "ok\n"`, no
//! access log) behind the Service `web`, and the Ingress `bench` (host `bench.local`,
//! class `kins`) routes to it. Then, from the host:
//!
//! - throughput: `wrk -t2 -c50 -d{SECONDS}s --latency -H 'Host: bench.local'` (keep-alive),
//!   BENCH_RUNS times (default 3) round the proxies in turn after a 2 s warm-up of each,
//!   the median of each figure, against (1) the kins ingress at its LoadBalancer address
//!   (Service kube-system/kins-ingress, port 80); (2) the host's nginx (Debian
//!   nginx-light), its own configuration, pid and logs in a temporary directory, started
//!   inside the network namespace of the node that runs the ingress pod, listening on a
//!   free port of the node's IP, `proxy_pass` to an upstream of the same pod IPs with
//!   `keepalive 64` (HTTP/1.1, `Connection ""`); (3) the host's HAProxy (Debian) the same
//!   way (`mode http`, `http-reuse always`, `option http-keep-alive`). nginx gets
//!   `worker_processes` and HAProxy `nbthread` = BENCH_WORKERS (default: the number of
//!   cores, what `auto` gives). Keep-alive limits are raised on both sides of nginx (its
//!   default closes a connection every 1,000 requests), so every proxy keeps its
//!   connections. It prints requests/s, p50 and p99 latency (wrk's distribution), errors
//!   (non-2xx responses and socket errors) and the ratio to nginx (target ≥ 1.0);
//! - programming latency: ROUNDS times an Ingress `pN` (host `pN.bench.local` → `web`)
//!   is created through the API, and a request with that Host on a new connection to the
//!   LoadBalancer address is repeated every 2 ms until it answers 200: p50 and p99 of
//!   create request → first 200 (target < 100 ms);
//! - memory: VmRSS of the controller's process (`kins ingress` in /proc/*/cmdline, in a
//!   cgroup of this cluster) before and after INGRESSES more Ingresses (`mN.bench.local`,
//!   created through the API, 16 at a time) all route, and 5 s later.
//!
//! BENCH_PROXIES=kins,nginx,haproxy (the default) chooses the rows; without `kins` the
//! cluster is made with `--ingress=false` and only the throughput rows run (the two
//! references alone).
//!
//! A missed target is printed (`MISSED`, and a closing `targets missed:` line); the exit
//! code is 1 only when a check fails: more than 1% errors through a proxy, an Ingress
//! without the LoadBalancer address in its status, or anything that did not come up.
//!
//! Traffic goes only to addresses inside the cluster's own namespaces (node IP, pod IPs,
//! the LoadBalancer address on the node network). The nginx and HAProxy processes and the
//! cluster are removed at the end, also on an error or SIGINT/SIGTERM/SIGHUP.
//!
//! Usage: bench-ingress [BACKENDS] [SECONDS] [INGRESSES] [ROUNDS] (default 2, 10, 1000, 30),
//! with BENCH_NODES, BENCH_WORKERS, BENCH_RUNS, BENCH_PROXIES. Needs root, nsenter, timeout, wrk and
//! haproxy (installed with apt-get when missing) and /usr/sbin/nginx (scripts/setup.sh).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use bench::dataplane::{list, median};
use bench::{client, percentile, rss_mib};
use futures::{StreamExt, TryStreamExt};
use kins_tests::pods::{create, get_json, wait_for};
use kins_tests::services::{node_ip, slice_ips};
use kins_tests::Cluster;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::{json, Value};

const CLUSTER: &str = "bing";
const HOST: &str = "bench.local";
/// wrk's connections and threads.
const CONNECTIONS: u32 = 50;
const THREADS: u32 = 2;
/// First port tried for nginx and HAProxy on the node IP: below the NodePort range and
/// the ephemeral ports.
const FIRST_PORT: u16 = 18080;
const NGINX: &str = "/usr/sbin/nginx";
const INGRESS_NS: &str = "kube-system";
const INGRESS_SVC: &str = "kins-ingress";
const INGRESS_POD_LABEL: &str = "app.kubernetes.io/name=kins-ingress";

struct Params {
    backends: usize,
    secs: u64,
    runs: usize,
    ingresses: usize,
    rounds: usize,
    nodes: usize,
    workers: usize,
    proxies: Vec<String>,
}

impl Params {
    fn kins(&self) -> bool {
        self.proxies.iter().any(|p| p == "kins")
    }
}

// ---------------------------------------------------------------------------------------
// Cleanup on signals: what must go when the program is interrupted (its drops do not run).

struct Cleanup {
    /// The cluster's name and data directory.
    cluster: Option<(String, PathBuf)>,
    /// Processes started by this program (nginx, HAProxy, wrk).
    pids: Vec<i32>,
    /// Their temporary directories.
    dirs: Vec<PathBuf>,
}

static CLEANUP: Mutex<Cleanup> = Mutex::new(Cleanup {
    cluster: None,
    pids: Vec::new(),
    dirs: Vec::new(),
});

fn cleanup_state() -> std::sync::MutexGuard<'static, Cleanup> {
    CLEANUP.lock().unwrap_or_else(|p| p.into_inner())
}

fn register_pid(pid: i32) {
    cleanup_state().pids.push(pid);
}

fn unregister_pid(pid: i32) {
    cleanup_state().pids.retain(|p| *p != pid);
}

/// Starts a thread that, on SIGINT, SIGTERM or SIGHUP, stops the registered processes,
/// takes the cluster down (`kins down --purge`), removes its data directory and exits 130.
fn watch_signals() -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (mut int, mut term, mut hup) = {
        let _guard = rt.enter();
        (
            signal(SignalKind::interrupt())?,
            signal(SignalKind::terminate())?,
            signal(SignalKind::hangup())?,
        )
    };
    std::thread::spawn(move || {
        rt.block_on(async {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
                _ = hup.recv() => {}
            }
        });
        eprintln!("bench-ingress: interrupted, cleaning up");
        // Held to the exit: the main thread waits at its next registration or at the
        // cluster's drop instead of cleaning up at the same time.
        let mut state = cleanup_state();
        let (cluster, pids) = (state.cluster.take(), std::mem::take(&mut state.pids));
        for &pid in &pids {
            let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        }
        std::thread::sleep(Duration::from_millis(500));
        for &pid in &pids {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        for d in &state.dirs {
            let _ = std::fs::remove_dir_all(d);
        }
        if let Some((name, data)) = cluster {
            let _ = Command::new(kins_tests::kins_bin())
                .arg("--data-dir")
                .arg(&data)
                .args(["down", "--name", &name, "--purge"])
                .stdin(Stdio::null())
                .status();
            let _ = std::fs::remove_dir_all(&data);
        }
        std::process::exit(130);
    });
    Ok(())
}

/// The cluster, registered for the signal cleanup; its drop (`kins down --purge`) holds
/// the cleanup lock, so it never runs beside the signal thread's.
struct Owned(Option<Cluster>);

impl Owned {
    fn new(c: Cluster) -> Owned {
        cleanup_state().cluster = Some((c.name.clone(), c.data.path().to_path_buf()));
        Owned(Some(c))
    }
}

impl std::ops::Deref for Owned {
    type Target = Cluster;
    fn deref(&self) -> &Cluster {
        self.0.as_ref().expect("the cluster is only taken in drop")
    }
}

impl Drop for Owned {
    fn drop(&mut self) {
        let mut state = cleanup_state();
        state.cluster = None;
        drop(self.0.take());
    }
}

// ---------------------------------------------------------------------------------------
// Tools.

fn on_path(prog: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(prog).is_file()))
        .unwrap_or(false)
}

/// Installs wrk and HAProxy with apt-get when missing (apt-get update first if the
/// install fails, as on a machine whose package lists were never fetched).
fn ensure_tools() -> anyhow::Result<()> {
    if !Path::new(NGINX).exists() {
        bail!("{NGINX} is missing: install nginx-light (scripts/setup.sh does)");
    }
    for tool in ["nsenter", "timeout"] {
        ensure!(on_path(tool), "{tool} is not on PATH");
    }
    let missing: Vec<&str> = [("wrk", "wrk"), ("haproxy", "haproxy")]
        .into_iter()
        .filter(|(bin, _)| !on_path(bin))
        .map(|(_, pkg)| pkg)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    println!("installing {} with apt-get", missing.join(" "));
    let install = || {
        Command::new("apt-get")
            .args(["install", "-y", "-q"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdin(Stdio::null())
            .status()
            .context("running apt-get install")
    };
    if !install()?.success() {
        let updated = Command::new("apt-get")
            .args(["update", "-q"])
            .stdin(Stdio::null())
            .status()
            .context("running apt-get update")?;
        ensure!(updated.success(), "apt-get update failed");
        ensure!(
            install()?.success(),
            "apt-get install {} failed",
            missing.join(" ")
        );
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// HTTP from the host: one request on a new connection.

/// `GET /` with `Host: host` on a new connection to `addr` (Connection: close): the
/// status code and the body.
fn http_get(addr: SocketAddr, host: &str) -> std::io::Result<(u16, Vec<u8>)> {
    let bad = |what: &str| std::io::Error::other(format!("{addr}: {what}"));
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(500))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    s.set_write_timeout(Some(Duration::from_secs(2)))?;
    s.set_nodelay(true)?;
    write!(
        s,
        "GET / HTTP/1.1\r\nHost: {host}\r\nUser-Agent: bench-ingress\r\nConnection: close\r\n\r\n"
    )?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let header_end = loop {
        let n = s.read(&mut chunk)?;
        if n == 0 {
            return Err(bad("connection closed before the response headers"));
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > 65536 {
            return Err(bad("response headers longer than 64 KiB"));
        }
    };
    let head = String::from_utf8_lossy(&buf[..header_end]).into_owned();
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| bad("no status line"))?;
    let length = head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        if k.trim().eq_ignore_ascii_case("content-length") {
            v.trim().parse::<usize>().ok()
        } else {
            None
        }
    });
    let mut body = buf[header_end..].to_vec();
    // The body as far as it comes: its length, else to the end of the connection.
    while length.is_none_or(|n| body.len() < n) && body.len() < 65536 {
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => body.extend_from_slice(&chunk[..n]),
        }
    }
    Ok((status, body))
}

/// Repeats `GET /` with `Host: host` every `every` until one answers 200 (and, with
/// `want_body`, a body containing it); the time it came.
fn wait_200(
    addr: SocketAddr,
    host: &str,
    want_body: Option<&str>,
    within: Duration,
    every: Duration,
) -> anyhow::Result<Instant> {
    let deadline = Instant::now() + within;
    loop {
        let last = match http_get(addr, host) {
            Ok((200, body)) => {
                let text = String::from_utf8_lossy(&body);
                match want_body {
                    Some(w) if !text.contains(w) => format!("200 with body {text:?}"),
                    _ => return Ok(Instant::now()),
                }
            }
            Ok((code, _)) => format!("status {code}"),
            Err(e) => e.to_string(),
        };
        if Instant::now() > deadline {
            bail!("http://{addr}/ with Host {host} did not answer 200 within {within:?}: {last}");
        }
        std::thread::sleep(every);
    }
}

// ---------------------------------------------------------------------------------------
// wrk.

/// One wrk run's figures.
#[derive(Debug, Clone, PartialEq)]
struct WrkResult {
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    requests: u64,
    /// Non-2xx/3xx responses plus socket errors.
    errors: u64,
}

/// A wrk duration (`540.00us`, `1.23ms`, `2.00s`, `1.00m`) in milliseconds.
fn wrk_ms(s: &str) -> Option<f64> {
    let s = s.trim();
    let (num, scale) = if let Some(n) = s.strip_suffix("us") {
        (n, 0.001)
    } else if let Some(n) = s.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1000.0)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60_000.0)
    } else if let Some(n) = s.strip_suffix('h') {
        (n, 3_600_000.0)
    } else {
        return None;
    };
    Some(num.parse::<f64>().ok()? * scale)
}

/// The figures of `wrk --latency` output.
fn parse_wrk(text: &str) -> Option<WrkResult> {
    let mut rps = None;
    let (mut p50, mut p99) = (None, None);
    let (mut requests, mut errors) = (None, 0u64);
    let mut in_distribution = false;
    for line in text.lines().map(str::trim) {
        if line.starts_with("Latency Distribution") {
            in_distribution = true;
            continue;
        }
        if in_distribution {
            if let Some(v) = line.strip_prefix("50%") {
                p50 = wrk_ms(v);
                continue;
            }
            if let Some(v) = line.strip_prefix("99%") {
                p99 = wrk_ms(v);
                continue;
            }
            if line.starts_with("75%") || line.starts_with("90%") {
                continue;
            }
            in_distribution = false;
        }
        if let Some(v) = line.strip_prefix("Requests/sec:") {
            rps = v.trim().parse::<f64>().ok();
        } else if let Some(v) = line.strip_prefix("Non-2xx or 3xx responses:") {
            errors += v.trim().parse::<u64>().ok()?;
        } else if let Some(v) = line.strip_prefix("Socket errors:") {
            // connect 0, read 0, write 0, timeout 0
            errors += v
                .split(',')
                .filter_map(|f| f.split_whitespace().nth(1)?.parse::<u64>().ok())
                .sum::<u64>();
        } else if line.contains(" requests in ") {
            requests = line.split_whitespace().next()?.parse::<u64>().ok();
        }
    }
    Some(WrkResult {
        rps: rps?,
        p50_ms: p50?,
        p99_ms: p99?,
        requests: requests?,
        errors,
    })
}

/// Runs a command to its end with its pid registered for the signal cleanup.
fn run_registered(mut cmd: Command) -> anyhow::Result<Output> {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("running {cmd:?}"))?;
    let pid = child.id() as i32;
    register_pid(pid);
    let out = child.wait_with_output();
    unregister_pid(pid);
    Ok(out?)
}

/// `wrk -t2 -c50 -d{secs}s --latency -H 'Host: bench.local' URL`.
fn wrk(url: &str, secs: u64) -> anyhow::Result<WrkResult> {
    let mut cmd = Command::new("timeout");
    cmd.args(["-k", "5", &(secs + 30).to_string(), "wrk"])
        .args(["-t", &THREADS.to_string(), "-c", &CONNECTIONS.to_string()])
        .args(["-d", &format!("{secs}s"), "--latency", "--timeout", "5s"])
        .args(["-H", &format!("Host: {HOST}"), url]);
    let out = run_registered(cmd)?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "wrk {url} failed ({}): {}{text}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    parse_wrk(&text).with_context(|| format!("wrk {url}: cannot read its output:\n{text}"))
}

// ---------------------------------------------------------------------------------------
// The reference proxies: the host's nginx and HAProxy inside a node's namespace.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Nginx,
    Haproxy,
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Kind::Nginx => "nginx",
            Kind::Haproxy => "HAProxy",
        })
    }
}

/// A reference proxy started inside a node's network namespace; stopped on drop.
struct RefProxy {
    child: Child,
    dir: tempfile::TempDir,
}

fn nginx_conf(dir: &Path, listen: SocketAddr, pods: &[String], workers: usize) -> String {
    let d = dir.display();
    let servers: String = pods
        .iter()
        .map(|ip| format!("        server {ip}:80;\n"))
        .collect();
    format!(
        "worker_processes {workers};
daemon off;
pid {d}/nginx.pid;
error_log {d}/error.log warn;

events {{
    worker_connections 4096;
}}

http {{
    access_log off;
    client_body_temp_path {d}/client_temp;
    proxy_temp_path {d}/proxy_temp;
    fastcgi_temp_path {d}/fastcgi_temp;
    uwsgi_temp_path {d}/uwsgi_temp;
    scgi_temp_path {d}/scgi_temp;
    keepalive_timeout 65;
    keepalive_requests 1000000;

    upstream backends {{
{servers}        keepalive 64;
        keepalive_requests 1000000;
    }}

    server {{
        listen {listen};
        server_name {HOST};
        location / {{
            proxy_pass http://backends;
            proxy_http_version 1.1;
            proxy_set_header Connection \"\";
            proxy_set_header Host $host;
        }}
    }}
}}
"
    )
}

fn haproxy_conf(listen: SocketAddr, pods: &[String], workers: usize) -> String {
    let servers: String = pods
        .iter()
        .enumerate()
        .map(|(i, ip)| format!("    server web{i} {ip}:80\n"))
        .collect();
    format!(
        "global
    nbthread {workers}
    # 2 file descriptors a connection: within the usual 20,000 of a shell here
    maxconn 5000

defaults
    mode http
    option http-keep-alive
    http-reuse always
    timeout connect 5s
    timeout client 30s
    timeout server 30s
    timeout http-keep-alive 65s

frontend bench
    bind {listen}
    default_backend web

backend web
    balance roundrobin
{servers}"
    )
}

/// A port of `ip` free inside `netns`, from FIRST_PORT on, other than `taken`.
fn free_port_in(netns: &Path, ip: &str, taken: &[u16]) -> anyhow::Result<u16> {
    for port in FIRST_PORT..FIRST_PORT + 200 {
        if taken.contains(&port) {
            continue;
        }
        let addr: SocketAddr = format!("{ip}:{port}").parse()?;
        if net::run_in_netns(netns, || TcpListener::bind(addr).is_ok())? {
            return Ok(port);
        }
    }
    bail!("no free port on {ip} in {}", netns.display())
}

impl RefProxy {
    fn start(
        kind: Kind,
        netns: &Path,
        addr: SocketAddr,
        pods: &[String],
        workers: usize,
    ) -> anyhow::Result<RefProxy> {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::Builder::new()
            .prefix(match kind {
                Kind::Nginx => "bench-ingress-nginx-",
                Kind::Haproxy => "bench-ingress-haproxy-",
            })
            .tempdir()?;
        // nginx's workers run as nobody.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))?;
        let (conf_path, conf) = match kind {
            Kind::Nginx => (
                dir.path().join("nginx.conf"),
                nginx_conf(dir.path(), addr, pods, workers),
            ),
            Kind::Haproxy => (
                dir.path().join("haproxy.cfg"),
                haproxy_conf(addr, pods, workers),
            ),
        };
        std::fs::write(&conf_path, conf)
            .with_context(|| format!("writing {}", conf_path.display()))?;
        let out = std::fs::File::create(dir.path().join("output.log"))?;
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net={}", netns.display()));
        match kind {
            Kind::Nginx => cmd
                .arg(NGINX)
                .arg("-p")
                .arg(dir.path())
                .arg("-e")
                .arg(dir.path().join("error.log"))
                .arg("-c")
                .arg(&conf_path),
            Kind::Haproxy => cmd.args(["haproxy", "-db", "-f"]).arg(&conf_path),
        };
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("starting {kind} in {}", netns.display()))?;
        register_pid(child.id() as i32);
        cleanup_state().dirs.push(dir.path().to_path_buf());
        let mut p = RefProxy { child, dir };
        // It answers 200 with the backends' body through its address, from the host.
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = p.child.try_wait()? {
                bail!("{kind} exited at once ({status}):\n{}", p.logs());
            }
            if wait_200(addr, HOST, Some("ok"), Duration::ZERO, Duration::ZERO).is_ok() {
                return Ok(p);
            }
            if Instant::now() > deadline {
                bail!("{kind} on {addr} never answered 200:\n{}", p.logs());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Its own output and nginx's error log.
    fn logs(&self) -> String {
        ["output.log", "error.log"]
            .iter()
            .filter_map(|f| std::fs::read_to_string(self.dir.path().join(f)).ok())
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// The processes whose parent is `pid` (nginx's workers).
fn children_of(pid: i32) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|p| {
            std::fs::read_to_string(format!("/proc/{p}/stat"))
                .ok()
                .and_then(|s| {
                    // pid (comm) state ppid ...: comm may hold spaces, so after the last ')'.
                    let rest = &s[s.rfind(')')? + 1..];
                    rest.split_whitespace().nth(1)?.parse::<i32>().ok()
                })
                == Some(pid)
        })
        .collect()
}

impl Drop for RefProxy {
    fn drop(&mut self) {
        let pid = self.child.id() as i32;
        let workers = children_of(pid);
        // SIGTERM: nginx's fast shutdown (workers too), HAProxy's hard stop.
        let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline && matches!(self.child.try_wait(), Ok(None)) {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        for w in workers {
            let _ = kill(Pid::from_raw(w), Signal::SIGKILL);
        }
        unregister_pid(pid);
        let path = self.dir.path();
        cleanup_state().dirs.retain(|d| d != path);
    }
}

// ---------------------------------------------------------------------------------------
// The cluster's objects.

fn backends_manifest(replicas: usize) -> String {
    let conf = "server {\n    listen 80;\n    access_log off;\n    keepalive_requests 1000000;\n    location / {\n        return 200 \"ok\\n\";\n    }\n}\n";
    let items = [
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "web-conf"},
               "data": {"default.conf": conf}}),
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
               "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}},
                        "template": {"metadata": {"labels": {"app": "web"}},
                                     "spec": {"terminationGracePeriodSeconds": 0,
                                              "containers": [{"name": "nginx", "image": "nginx",
                                                              "ports": [{"containerPort": 80}],
                                                              "readinessProbe": {"httpGet": {"path": "/", "port": 80},
                                                                                 "periodSeconds": 1},
                                                              "volumeMounts": [{"name": "conf", "mountPath": "/etc/nginx/conf.d"}]}],
                                              "volumes": [{"name": "conf", "configMap": {"name": "web-conf"}}]}}}}),
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
               "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": 80}]}}),
    ];
    json!({"apiVersion": "v1", "kind": "List", "items": items}).to_string()
}

fn ingress(name: &str, host: &str) -> Value {
    json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": {"name": name},
           "spec": {"ingressClassName": "kins", "rules": [{"host": host, "http": {"paths": [
               {"path": "/", "pathType": "Prefix",
                "backend": {"service": {"name": "web", "port": {"number": 80}}}}]}}]}})
}

const INGRESSES_URL: &str = "/apis/networking.k8s.io/v1/namespaces/default/ingresses";

/// The cluster's API with the admin identity, for the writes that are timed.
struct Api {
    rt: tokio::runtime::Runtime,
    client: reqwest::Client,
    base: String,
}

impl Api {
    fn new(c: &Cluster) -> anyhow::Result<Api> {
        Ok(Api {
            rt: tokio::runtime::Runtime::new()?,
            client: client(&c.kubeconfig)?,
            base: c.url(),
        })
    }

    async fn post_ingress(&self, name: &str, host: &str) -> anyhow::Result<()> {
        let r = self
            .client
            .post(format!("{}{INGRESSES_URL}", self.base))
            .json(&ingress(name, host))
            .send()
            .await
            .with_context(|| format!("creating Ingress {name}"))?;
        let status = r.status();
        if !status.is_success() {
            bail!("creating Ingress {name}: {status}: {}", r.text().await?);
        }
        Ok(())
    }

    /// Creates the Ingress `name` for `host` (→ Service web, port 80).
    fn create_ingress(&self, name: &str, host: &str) -> anyhow::Result<()> {
        self.rt.block_on(self.post_ingress(name, host))
    }

    /// Creates the Ingresses `names` (hosts `NAME.bench.local`), 16 requests at a time.
    fn create_ingresses(&self, names: &[String]) -> anyhow::Result<()> {
        self.rt.block_on(
            futures::stream::iter(
                names
                    .iter()
                    .map(|n| async move { self.post_ingress(n, &format!("{n}.{HOST}")).await }),
            )
            .buffer_unordered(16)
            .try_collect::<Vec<()>>(),
        )?;
        Ok(())
    }
}

/// The LoadBalancer address of kube-system/kins-ingress.
fn ingress_lb_ip(c: &Cluster) -> anyhow::Result<String> {
    wait_for(
        "the LoadBalancer address of kube-system/kins-ingress",
        180,
        || {
            let s = get_json(c, &["-n", INGRESS_NS, "get", "service", INGRESS_SVC])?;
            Ok(s["status"]["loadBalancer"]["ingress"][0]["ip"]
                .as_str()
                .map(str::to_string))
        },
    )
}

/// The ingress controller's pods (Running), to find its node and its resources.
fn ingress_pods(c: &Cluster) -> anyhow::Result<Vec<Value>> {
    let v = get_json(
        c,
        &["-n", INGRESS_NS, "get", "pods", "-l", INGRESS_POD_LABEL],
    )?;
    Ok(v["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["status"]["phase"] == "Running")
        .cloned()
        .collect())
}

/// The processes `kins ingress ...` in a cgroup of cluster `cluster`.
fn controller_pids(cluster: &str) -> Vec<i32> {
    let marker = format!("/kins/{cluster}/");
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let argv: Vec<String> = cmdline
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let is_kins = argv
            .first()
            .is_some_and(|a| a.rsplit('/').next() == Some("kins"));
        // The subcommand: the first argument that is no option (nor --data-dir's value).
        let mut role = None;
        let mut skip = false;
        for a in argv.iter().skip(1) {
            if skip {
                skip = false;
            } else if a == "--data-dir" {
                skip = true;
            } else if !a.starts_with('-') {
                role = Some(a.as_str());
                break;
            }
        }
        if !is_kins || role != Some("ingress") {
            continue;
        }
        let in_cluster = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
            .is_ok_and(|cg| cg.lines().any(|l| l.contains(&marker)));
        if in_cluster {
            out.push(pid);
        }
    }
    out.sort();
    out
}

/// The summed VmRSS (MiB) of the controller's processes.
fn controller_rss(cluster: &str) -> anyhow::Result<(Vec<i32>, f64)> {
    let pids = controller_pids(cluster);
    ensure!(
        !pids.is_empty(),
        "no `kins ingress` process in a cgroup of cluster {cluster} (/proc/*/cmdline, /proc/*/cgroup)"
    );
    let rss = pids.iter().filter_map(|p| rss_mib(*p)).sum();
    Ok((pids, rss))
}

fn threads_of(pid: i32) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))?
        .trim()
        .parse()
        .ok()
}

// ---------------------------------------------------------------------------------------
// The benchmark.

/// One row of the throughput table: a proxy and its runs.
struct Row {
    proxy: String,
    target: SocketAddr,
    runs: Vec<WrkResult>,
}

impl Row {
    /// The median of each figure over the runs; requests and errors summed.
    fn summary(&self) -> WrkResult {
        let m = |f: fn(&WrkResult) -> f64| median(&self.runs.iter().map(f).collect::<Vec<_>>());
        WrkResult {
            rps: m(|r| r.rps),
            p50_ms: m(|r| r.p50_ms),
            p99_ms: m(|r| r.p99_ms),
            requests: self.runs.iter().map(|r| r.requests).sum(),
            errors: self.runs.iter().map(|r| r.errors).sum(),
        }
    }
}

struct Figures {
    rows: Vec<Row>,
    programming: Option<Vec<f64>>,
    memory: Option<Memory>,
}

struct Memory {
    pids: Vec<i32>,
    before: f64,
    after: f64,
    settled: f64,
    total: usize,
    routed_s: f64,
    with_status: usize,
}

fn run(p: &Params) -> anyhow::Result<Figures> {
    let began = Instant::now();
    // The test helper turns the ingress add-on off unless told.
    let ingress_flag = if p.kins() {
        "--ingress=true"
    } else {
        "--ingress=false"
    };
    // Dropped last (`kins down --purge`), after everything started in it.
    let cluster = Owned::new(Cluster::up_with(
        CLUSTER,
        &["--nodes", &p.nodes.to_string(), ingress_flag],
    )?);
    let api = Api::new(&cluster)?;
    println!(
        "cluster {CLUSTER} up with {} node(s) in {:.1} s",
        p.nodes,
        began.elapsed().as_secs_f64()
    );

    create(&cluster, &backends_manifest(p.backends))?;
    let pods = wait_for(
        &format!("{} ready endpoints of web", p.backends),
        180,
        || {
            let ips = slice_ips(&cluster, "web")?;
            Ok((ips.len() == p.backends).then_some(ips))
        },
    )?;
    println!("backends: {}", pods.join(", "));

    let (lb, proxy_node) = if p.kins() {
        let (addr, node) = ingress_up(&cluster, &api)?;
        (
            Some(addr),
            node.unwrap_or_else(|| format!("{CLUSTER}-worker")),
        )
    } else {
        (None, format!("{CLUSTER}-worker"))
    };

    let netns = PathBuf::from(format!("/run/kins/{CLUSTER}/netns/{proxy_node}"));
    let nip = node_ip(&cluster, &proxy_node)?;
    println!(
        "reference proxies in {} ({nip}), {} worker(s) each; wrk -t{THREADS} -c{CONNECTIONS} -d{}s from the host",
        netns.display(),
        p.workers,
        p.secs
    );

    let rows = throughput(p, lb, &netns, &nip, &pods)?;

    let Some(addr) = lb else {
        return Ok(Figures {
            rows,
            programming: None,
            memory: None,
        });
    };

    // Programming latency: create → first 200 from the host.
    let lat = programming(&api, addr, p.rounds)?;
    // Memory with INGRESSES more Ingresses.
    let memory = memory(&cluster, &api, addr, p.ingresses)?;
    Ok(Figures {
        rows,
        programming: Some(lat),
        memory: Some(memory),
    })
}

/// The Ingress `bench` created and routed by the kins ingress: its LoadBalancer address
/// (port 80) and the node of the controller's pod.
fn ingress_up(cluster: &Cluster, api: &Api) -> anyhow::Result<(SocketAddr, Option<String>)> {
    api.create_ingress("bench", HOST)?;
    let ip = ingress_lb_ip(cluster)?;
    let addr: SocketAddr = format!("{ip}:80").parse()?;
    wait_200(
        addr,
        HOST,
        Some("ok"),
        Duration::from_secs(180),
        Duration::from_millis(20),
    )
    .context("the kins ingress never routed Host bench.local")?;
    let status = wait_for("the status of Ingress bench", 30, || {
        let v = get_json(cluster, &["get", "ingress", "bench"])?;
        Ok(v["status"]["loadBalancer"]["ingress"][0]["ip"]
            .as_str()
            .map(str::to_string))
    });
    match status {
        Ok(s) if s == ip => {}
        Ok(s) => eprintln!("warning: Ingress bench has status address {s}, not {ip}"),
        Err(e) => eprintln!("warning: {e:#}"),
    }
    let ipods = ingress_pods(cluster)?;
    let node = ipods
        .first()
        .and_then(|x| x["spec"]["nodeName"].as_str())
        .map(str::to_string);
    for x in &ipods {
        let res = &x["spec"]["containers"][0]["resources"];
        if res.get("limits").is_some() {
            println!(
                "note: ingress pod {} has limits {}",
                x["metadata"]["name"], res["limits"]
            );
        }
    }
    let pids = controller_pids(&cluster.name);
    let threads: Vec<String> = pids
        .iter()
        .map(|p| format!("pid {p}, {} threads", threads_of(*p).unwrap_or(0)))
        .collect();
    println!(
        "kins ingress at {addr} (pods {}; {}), routing Host {HOST}",
        ipods
            .iter()
            .map(|x| format!(
                "{} on {}",
                x["metadata"]["name"].as_str().unwrap_or("?"),
                x["spec"]["nodeName"].as_str().unwrap_or("?")
            ))
            .collect::<Vec<_>>()
            .join(", "),
        if threads.is_empty() {
            "process not found".to_string()
        } else {
            threads.join("; ")
        }
    );
    Ok((addr, node))
}

/// wrk against each proxy of BENCH_PROXIES: the kins ingress at `lb`, nginx and HAProxy
/// started in `netns` on ports of `nip`, proxying to `pods`.
fn throughput(
    p: &Params,
    lb: Option<SocketAddr>,
    netns: &Path,
    nip: &str,
    pods: &[String],
) -> anyhow::Result<Vec<Row>> {
    // Every proxy is up before the first run; the runs go round them in turn, so a
    // change of the machine's load over time is shared.
    let mut rows = Vec::new();
    let mut running = Vec::new();
    for proxy in &p.proxies {
        let target = match proxy.as_str() {
            "kins" => lb.context("no LoadBalancer address")?,
            _ => {
                let kind = if proxy == "nginx" {
                    Kind::Nginx
                } else {
                    Kind::Haproxy
                };
                let taken: Vec<u16> = rows.iter().map(|r: &Row| r.target.port()).collect();
                let port = free_port_in(netns, nip, &taken)?;
                let addr: SocketAddr = format!("{nip}:{port}").parse()?;
                running.push(RefProxy::start(kind, netns, addr, pods, p.workers)?);
                addr
            }
        };
        let url = format!("http://{target}/");
        wrk(&url, 2).with_context(|| format!("{proxy}: warm-up"))?;
        rows.push(Row {
            proxy: if proxy == "kins" {
                "kins ingress".into()
            } else {
                proxy.clone()
            },
            target,
            runs: Vec::new(),
        });
    }
    for run in 1..=p.runs {
        for row in &mut rows {
            let url = format!("http://{}/", row.target);
            let r = wrk(&url, p.secs).with_context(|| format!("{}: wrk", row.proxy))?;
            println!(
                "run {run}/{}: {}: {:.0} req/s, p50 {:.2} ms, p99 {:.2} ms, {} requests, {} errors",
                p.runs, row.proxy, r.rps, r.p50_ms, r.p99_ms, r.requests, r.errors
            );
            row.runs.push(r);
        }
    }
    drop(running);

    Ok(rows)
}

/// Create → first 200 from the host, `rounds` Ingresses one after another; sorted ms.
fn programming(api: &Api, addr: SocketAddr, rounds: usize) -> anyhow::Result<Vec<f64>> {
    let mut lat = Vec::new();
    for i in 0..rounds {
        let name = format!("p{i}");
        let host = format!("{name}.{HOST}");
        let t = Instant::now();
        api.create_ingress(&name, &host)?;
        let at = wait_200(
            addr,
            &host,
            None,
            Duration::from_secs(30),
            Duration::from_millis(2),
        )?;
        lat.push(at.duration_since(t).as_secs_f64() * 1000.0);
    }
    lat.sort_by(f64::total_cmp);
    println!(
        "programming: {rounds} Ingresses, ms: p50 {:.1}, p99 {:.1}, max {:.1}",
        percentile(&lat, 50.0),
        percentile(&lat, 99.0),
        lat.last().copied().unwrap_or(f64::NAN)
    );
    Ok(lat)
}

/// The controller's RSS before and after `count` more Ingresses all route.
fn memory(cluster: &Cluster, api: &Api, addr: SocketAddr, count: usize) -> anyhow::Result<Memory> {
    let (pids, before) = controller_rss(&cluster.name)?;
    let t = Instant::now();
    let names: Vec<String> = (0..count).map(|i| format!("m{i}")).collect();
    api.create_ingresses(&names)?;
    let created_s = t.elapsed().as_secs_f64();
    // The last created first: once it routes, most others do too.
    let mut pending: Vec<&String> = names.iter().rev().collect();
    let deadline = Instant::now() + Duration::from_secs(300);
    while !pending.is_empty() {
        pending.retain(|n| !matches!(http_get(addr, &format!("{n}.{HOST}")), Ok((200, _))));
        if pending.is_empty() {
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "{} of {count} Ingresses did not route within 300 s (first: {})",
                pending.len(),
                pending[0]
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let routed_s = t.elapsed().as_secs_f64();
    let (_, after) = controller_rss(&cluster.name)?;
    std::thread::sleep(Duration::from_secs(5));
    let (pids_now, settled) = controller_rss(&cluster.name)?;
    if pids_now != pids {
        eprintln!("warning: the controller's processes changed: {pids:?} → {pids_now:?}");
    }
    let list = get_json(cluster, &["get", "ingresses"])?;
    let items = list["items"].as_array().cloned().unwrap_or_default();
    let lb_ip = addr.ip().to_string();
    let with_status = items
        .iter()
        .filter(|i| i["status"]["loadBalancer"]["ingress"][0]["ip"].as_str() == Some(&lb_ip))
        .count();
    println!(
        "memory: {count} Ingresses created in {created_s:.2} s, all routed after {routed_s:.2} s; \
         RSS {before:.1} → {after:.1} MiB ({settled:.1} MiB 5 s later)"
    );
    Ok(Memory {
        pids,
        before,
        after,
        settled,
        total: items.len(),
        routed_s,
        with_status,
    })
}

fn print_table(header: &[&str], cells: &[Vec<String>]) {
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
    println!("{}", line(header));
    for c in cells {
        println!(
            "{}",
            line(&c.iter().map(String::as_str).collect::<Vec<_>>())
        );
    }
    println!();
    println!("| {} |", header.join(" | "));
    println!(
        "|{}",
        (0..header.len())
            .map(|i| if i == 0 { " --- |" } else { " ---: |" })
            .collect::<String>()
    );
    for c in cells {
        println!("| {} |", c.join(" | "));
    }
}

/// What the run showed against the targets, and the checks that failed.
#[derive(Default)]
struct Verdict {
    missed: Vec<String>,
    failed: Vec<String>,
}

fn report(p: &Params, f: &Figures) -> Verdict {
    let mut v = Verdict::default();
    let sums: Vec<(&Row, WrkResult)> = f.rows.iter().map(|r| (r, r.summary())).collect();
    let rps_of = |name: &str| {
        sums.iter()
            .find(|(r, _)| r.proxy == name)
            .map(|(_, s)| s.rps)
    };
    let nginx = rps_of("nginx");
    let cells: Vec<Vec<String>> = sums
        .iter()
        .map(|(r, s)| {
            vec![
                r.proxy.clone(),
                format!("{:.0}", s.rps),
                format!("{:.2}", s.p50_ms),
                format!("{:.2}", s.p99_ms),
                s.errors.to_string(),
                match nginx {
                    Some(n) if n > 0.0 => format!("{:.2}", s.rps / n),
                    _ => "-".into(),
                },
                r.target.to_string(),
            ]
        })
        .collect();
    println!();
    println!(
        "HTTP through each proxy: wrk -t{THREADS} -c{CONNECTIONS} -d{}s --latency from the host, keep-alive, Host {HOST}, \
         response \"ok\\n\" from {} nginx pod(s); median of {} run(s), taken in turn; \
         nginx worker_processes / HAProxy nbthread {} on {} core(s)",
        p.secs,
        p.backends,
        p.runs,
        p.workers,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    print_table(
        &[
            "proxy", "req/s", "p50 ms", "p99 ms", "errors", "vs nginx", "address",
        ],
        &cells,
    );
    for (r, s) in &sums {
        println!(
            "{}: req/s [{}]",
            r.proxy,
            list(&r.runs.iter().map(|x| x.rps).collect::<Vec<_>>(), 0)
        );
        if s.errors * 100 > s.requests {
            v.failed.push(format!(
                "{}: {} errors in {} requests",
                r.proxy, s.errors, s.requests
            ));
        }
    }
    if let (Some(k), Some(n)) = (rps_of("kins ingress"), nginx) {
        let ratio = k / n;
        println!(
            "kins ingress / nginx req/s: {ratio:.2} (target ≥ 1.0) {}",
            if ratio >= 1.0 { "met" } else { "MISSED" }
        );
        if ratio < 1.0 {
            v.missed
                .push(format!("req/s {ratio:.2} of nginx's (target ≥ 1.0)"));
        }
    }
    if let Some(lat) = &f.programming {
        let (p50, p99) = (percentile(lat, 50.0), percentile(lat, 99.0));
        println!();
        println!(
            "configuration programming: Ingress created (API) → first 200 from the host (a new connection every 2 ms), \
             {} Ingresses: p50 {p50:.1} ms, p99 {p99:.1} ms, max {:.1} ms (target < 100 ms) {}",
            lat.len(),
            lat.last().copied().unwrap_or(f64::NAN),
            if p99 < 100.0 { "met" } else { "MISSED" }
        );
        if p99 >= 100.0 {
            v.missed
                .push(format!("programming p99 {p99:.1} ms (target < 100 ms)"));
        }
    }
    if let Some(m) = &f.memory {
        println!();
        println!(
            "controller memory (VmRSS of `kins ingress`, pid {}): {:.1} MiB before, {:.1} MiB once {} more Ingresses \
             ({} in all) all routed ({:.1} s after the first create), {:.1} MiB 5 s later",
            m.pids
                .iter()
                .map(|p| p.to_string())
                .collect::<Vec<_>>()
                .join(", "),
            m.before,
            m.after,
            p.ingresses,
            m.total,
            m.routed_s,
            m.settled,
        );
        println!(
            "{} of {} Ingresses have the LoadBalancer address in status.loadBalancer.ingress",
            m.with_status, m.total
        );
        if m.with_status != m.total {
            v.failed.push(format!(
                "{} of {} Ingresses lack status.loadBalancer.ingress",
                m.total - m.with_status,
                m.total
            ));
        }
    }
    v
}

fn main() -> anyhow::Result<()> {
    let usage = "usage: bench-ingress [BACKENDS] [SECONDS] [INGRESSES] [ROUNDS]";
    let arg = |i: usize, default: usize| -> anyhow::Result<usize> {
        Ok(std::env::args()
            .nth(i)
            .map(|s| s.parse())
            .transpose()
            .context(usage)?
            .unwrap_or(default))
    };
    let env_num = |k: &str, default: usize| -> anyhow::Result<usize> {
        match std::env::var(k) {
            Ok(v) if !v.is_empty() => v.parse().with_context(|| format!("{k}={v}")),
            _ => Ok(default),
        }
    };
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let p = Params {
        backends: arg(1, 2)?,
        secs: arg(2, 10)? as u64,
        ingresses: arg(3, 1000)?,
        rounds: arg(4, 30)?,
        runs: env_num("BENCH_RUNS", 3)?,
        nodes: env_num("BENCH_NODES", 1)?,
        workers: env_num("BENCH_WORKERS", cores)?,
        proxies: std::env::var("BENCH_PROXIES")
            .unwrap_or_else(|_| "kins,nginx,haproxy".into())
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect(),
    };
    if std::env::args().nth(5).is_some() {
        bail!("{usage}");
    }
    if [
        p.backends,
        p.secs as usize,
        p.rounds,
        p.runs,
        p.nodes,
        p.workers,
    ]
    .contains(&0)
    {
        bail!("BACKENDS, SECONDS, ROUNDS, BENCH_RUNS, BENCH_NODES and BENCH_WORKERS must be at least 1");
    }
    if p.proxies.is_empty() {
        bail!("BENCH_PROXIES names no proxy");
    }
    if let Some(other) = p
        .proxies
        .iter()
        .find(|x| !["kins", "nginx", "haproxy"].contains(&x.as_str()))
    {
        bail!("unknown proxy {other} in BENCH_PROXIES (kins, nginx, haproxy)");
    }
    ensure_tools()?;
    watch_signals()?;
    let began = Instant::now();
    let figures = run(&p)?;
    let verdict = report(&p, &figures);
    println!();
    println!("total time {:.1} s", began.elapsed().as_secs_f64());
    if !verdict.missed.is_empty() {
        println!("targets missed: {}", verdict.missed.join("; "));
    }
    if !verdict.failed.is_empty() {
        bail!("checks failed: {}", verdict.failed.join("; "));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const WRK: &str = "Running 10s test @ http://172.29.1.240/
  2 threads and 50 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.21ms  512.30us  21.40ms   91.20%
    Req/Sec    20.91k     1.02k   23.10k    70.50%
  Latency Distribution
     50%  540.00us
     75%    1.30ms
     90%    1.80ms
     99%    3.02ms
  416123 requests in 10.00s, 60.12MB read
  Non-2xx or 3xx responses: 3
  Socket errors: connect 0, read 2, write 0, timeout 1
Requests/sec:  41600.12
Transfer/sec:      6.01MB
";

    fn check(text: &str, expect: Option<WrkResult>) {
        assert_eq!(parse_wrk(text), expect);
    }

    #[test]
    fn wrk_output() {
        check(
            WRK,
            Some(WrkResult {
                rps: 41600.12,
                p50_ms: 0.54,
                p99_ms: 3.02,
                requests: 416123,
                errors: 6,
            }),
        );
        let clean: String = WRK
            .lines()
            .filter(|l| !l.contains("Non-2xx") && !l.contains("Socket errors"))
            .map(|l| format!("{l}\n"))
            .collect();
        check(
            &clean,
            Some(WrkResult {
                rps: 41600.12,
                p50_ms: 0.54,
                p99_ms: 3.02,
                requests: 416123,
                errors: 0,
            }),
        );
        // Without --latency there is no distribution.
        let no_dist: String = WRK
            .lines()
            .filter(|l| {
                !l.trim_start()
                    .starts_with(|c: char| c.is_ascii_digit() && l.contains('%'))
            })
            .map(|l| format!("{l}\n"))
            .collect();
        check(&no_dist, None);
    }

    #[test]
    fn wrk_durations() {
        for (s, ms) in [
            ("540.00us", 0.54),
            ("1.30ms", 1.3),
            ("2.00s", 2000.0),
            ("1.00m", 60_000.0),
        ] {
            assert_eq!(wrk_ms(s), Some(ms), "{s}");
        }
        assert_eq!(wrk_ms("12"), None);
    }

    #[test]
    fn configs_name_every_pod() {
        let pods = ["10.244.0.2".to_string(), "10.244.0.3".to_string()];
        let listen: SocketAddr = "172.29.1.2:18080".parse().expect("an address");
        let n = nginx_conf(Path::new("/tmp/x"), listen, &pods, 2);
        assert!(n.contains(
            "server 10.244.0.2:80;\n        server 10.244.0.3:80;\n        keepalive 64;"
        ));
        assert!(n.contains("listen 172.29.1.2:18080;"));
        assert!(n.contains("worker_processes 2;"));
        let h = haproxy_conf(listen, &pods, 2);
        assert!(h.contains("    server web0 10.244.0.2:80\n    server web1 10.244.0.3:80\n"));
        assert!(h.contains("bind 172.29.1.2:18080"));
        assert!(h.contains("nbthread 2"));
    }
}

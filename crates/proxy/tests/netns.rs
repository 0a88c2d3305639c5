//! Root tests: the rules applied in network namespaces this test creates — a "node" with
//! veths to two "pod" namespaces running busybox httpd — and real connections through them.
//! Every namespace is named `kinsproxytest-*` and removed on drop, also after a failure.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use nix::sched::{setns, CloneFlags};
use proxy::{desired, diff_script, full_script, Desired, Nft, NftCommand, NodeConfig};
use serde_json::{json, Value};

/// Namespaces and servers of one test, removed on drop.
struct Lab {
    node: String,
    pods: Vec<String>,
    servers: Vec<Child>,
    dir: std::path::PathBuf,
}

impl Drop for Lab {
    fn drop(&mut self) {
        for s in &mut self.servers {
            let _ = s.kill();
            let _ = s.wait();
        }
        for ns in self.pods.iter().chain([&self.node]) {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn sh(args: &[&str]) -> Result<()> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .with_context(|| format!("{args:?}"))?;
    if !out.status.success() {
        bail!("{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

/// Runs `f` on a thread inside network namespace `ns` (children it spawns are there too).
fn in_ns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> Result<T> {
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || -> Result<T> {
        let fd = File::open(&path).with_context(|| path.clone())?;
        setns(fd, CloneFlags::CLONE_NEWNET).context("setns")?;
        Ok(f())
    })
    .join()
    .map_err(|_| anyhow::anyhow!("thread in {ns} panicked"))?
}

const NODE_IP: &str = "10.201.0.1";

/// ext 10.201.0.2 ── veth ── node (eth0 = NODE_IP) ── veths ── pod0 10.200.1.2, pod1 10.200.2.2,
/// each pod serving its own name over HTTP on port 8080. `pods` = [ext, pod0, pod1].
fn lab() -> Result<Lab> {
    let tag: u32 = rand::random::<u32>() % 1_000_000;
    let node = format!("kinsproxytest-{tag}-node");
    let dir = std::env::temp_dir().join(format!("kinsproxytest-{tag}"));
    let mut lab = Lab {
        node: node.clone(),
        pods: Vec::new(),
        servers: Vec::new(),
        dir: dir.clone(),
    };
    sh(&["ip", "netns", "add", &node])?;
    let n = |args: &str| -> Result<()> {
        let mut v = vec!["ip", "-n", &node];
        v.extend(args.split(' '));
        sh(&v)
    };
    n("link set lo up")?;
    // An outside client on the node's eth0, also the node's default route.
    let ext = format!("kinsproxytest-{tag}-ext");
    sh(&["ip", "netns", "add", &ext])?;
    lab.pods.push(ext.clone());
    sh(&[
        "ip", "-n", &node, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns",
        &ext,
    ])?;
    n(&format!("addr add {NODE_IP}/24 dev eth0"))?;
    n("link set eth0 up")?;
    n("route add default via 10.201.0.2")?;
    sh(&["ip", "-n", &ext, "link", "set", "lo", "up"])?;
    sh(&[
        "ip",
        "-n",
        &ext,
        "addr",
        "add",
        "10.201.0.2/24",
        "dev",
        "eth0",
    ])?;
    sh(&["ip", "-n", &ext, "link", "set", "eth0", "up"])?;
    sh(&[
        "ip",
        "netns",
        "exec",
        &node,
        "sysctl",
        "-qw",
        "net.ipv4.ip_forward=1",
    ])?;
    for i in 0..2 {
        let pod = format!("kinsproxytest-{tag}-pod{i}");
        sh(&["ip", "netns", "add", &pod])?;
        lab.pods.push(pod.clone());
        let veth = format!("veth{i}");
        sh(&[
            "ip", "-n", &node, "link", "add", &veth, "type", "veth", "peer", "name", "eth0",
            "netns", &pod,
        ])?;
        n(&format!("addr add 10.200.{}.1/24 dev {veth}", i + 1))?;
        n(&format!("link set {veth} up"))?;
        let p = |args: &str| -> Result<()> {
            let mut v = vec!["ip", "-n", &pod];
            v.extend(args.split(' '));
            sh(&v)
        };
        p("link set lo up")?;
        p(&format!("addr add 10.200.{}.2/24 dev eth0", i + 1))?;
        p("link set eth0 up")?;
        p(&format!("route add default via 10.200.{}.1", i + 1))?;
        let www = dir.join(format!("pod{i}"));
        std::fs::create_dir_all(&www)?;
        std::fs::write(www.join("index.html"), format!("pod{i}"))?;
        let www = www.to_string_lossy().into_owned();
        let server = Command::new("ip")
            .args([
                "netns", "exec", &pod, "busybox", "httpd", "-f", "-p", "8080", "-h", &www,
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        lab.servers.push(server);
    }
    for i in 1..=2 {
        let target = format!("10.200.{i}.2:8080");
        let deadline = Instant::now() + Duration::from_secs(5);
        while get(&node, &target).is_err() {
            if Instant::now() > deadline {
                bail!("server {target} did not come up");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    Ok(lab)
}

/// GET / from namespace `ns`: the body, or the connection error.
fn get(ns: &str, addr: &str) -> Result<String, std::io::Error> {
    let addr: SocketAddr = addr.parse().expect("test addresses are valid");
    in_ns(ns, move || -> Result<String, std::io::Error> {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(3))?;
        s.set_read_timeout(Some(Duration::from_secs(3)))?;
        s.write_all(b"GET / HTTP/1.0\r\n\r\n")?;
        let mut buf = String::new();
        s.read_to_string(&mut buf)?;
        Ok(buf
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or(buf))
    })
    .map_err(std::io::Error::other)?
}

/// Bodies of `n` GETs of `addr` from `ns`.
fn bodies(ns: &str, addr: &str, n: usize) -> Result<std::collections::BTreeSet<String>> {
    (0..n)
        .map(|_| get(ns, addr).with_context(|| format!("GET {addr} from {ns}")))
        .collect()
}

fn apply(ns: &str, script: String) -> Result<()> {
    in_ns(ns, move || NftCommand::default().apply(&script))??;
    Ok(())
}

fn node_config() -> NodeConfig {
    NodeConfig {
        node_name: "n1".into(),
        node_ip: NODE_IP.parse().expect("literal"),
        cluster_cidr: "10.200.0.0/16".into(),
        service_cidr: "10.96.0.0/12".into(),
    }
}

fn state(objects: &[Value]) -> Desired {
    let mut svcs: Vec<Service> = Vec::new();
    let mut slices: Vec<EndpointSlice> = Vec::new();
    for o in objects {
        if o["kind"] == "Service" {
            svcs.push(serde_json::from_value(o.clone()).expect("valid Service"));
        } else {
            slices.push(serde_json::from_value(o.clone()).expect("valid EndpointSlice"));
        }
    }
    desired(&svcs, &slices, &node_config())
}

fn web(affinity: bool) -> Value {
    let mut spec = json!({"type": "NodePort", "clusterIP": "10.96.0.10",
                          "ports": [{"name": "http", "port": 80, "nodePort": 30080}]});
    if affinity {
        spec["sessionAffinity"] = json!("ClientIP");
    }
    json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "default"}, "spec": spec})
}

fn web_slice(pods: &[u32]) -> Value {
    let eps: Vec<Value> = pods
        .iter()
        .map(|i| json!({"addresses": [format!("10.200.{}.2", i + 1)], "nodeName": "n1", "conditions": {"ready": true}}))
        .collect();
    json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
           "metadata": {"name": "web-1", "namespace": "default", "labels": {"kubernetes.io/service-name": "web"}},
           "addressType": "IPv4", "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}], "endpoints": eps})
}

fn empty() -> Value {
    json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "empty", "namespace": "default"},
           "spec": {"clusterIP": "10.96.0.11", "ports": [{"port": 80}]}})
}

fn refused_at_once(ns: &str, addr: &str) -> Result<()> {
    let started = Instant::now();
    match get(ns, addr) {
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {}
        other => bail!("{addr}: expected connection refused, got {other:?}"),
    }
    let took = started.elapsed();
    if took > Duration::from_millis(500) {
        bail!("{addr}: refused only after {took:?}");
    }
    Ok(())
}

#[test]
fn services_through_nftables() -> Result<()> {
    let lab = lab()?;
    let node = lab.node.clone();
    let both = state(&[web(false), web_slice(&[0, 1]), empty()]);
    apply(&node, full_script(&both))?;

    // ClusterIP reaches both endpoints.
    let seen = bodies(&node, "10.96.0.10:80", 30)?;
    assert_eq!(
        seen,
        ["pod0", "pod1"].map(String::from).into(),
        "ClusterIP from the node"
    );
    // NodePort on the node's IP.
    let seen = bodies(&node, &format!("{NODE_IP}:30080"), 30)?;
    assert_eq!(seen, ["pod0", "pod1"].map(String::from).into(), "NodePort");
    // NodePort from outside (masqueraded: pods have no route back to 10.201.0.0/24 but via the node).
    let seen = bodies(&lab.pods[0], &format!("{NODE_IP}:30080"), 30)?;
    assert_eq!(seen.len(), 2, "NodePort from outside: {seen:?}");
    // From a pod too.
    let seen = bodies(&lab.pods[2], "10.96.0.10:80", 30)?;
    assert_eq!(seen.len(), 2, "ClusterIP from a pod: {seen:?}");
    // No endpoints, and an unused address of the service CIDR: refused at once.
    refused_at_once(&node, "10.96.0.11:80")?;
    refused_at_once(&lab.pods[1], "10.96.0.11:80")?;
    refused_at_once(&node, "10.96.0.99:80")?;

    // Remove pod1 with a diff: only pod0 answers, also to itself (hairpin).
    let one = state(&[web(false), web_slice(&[0]), empty()]);
    let diff = diff_script(&both, &one).context("a diff")?;
    assert!(!diff.contains("chain"), "{diff}");
    apply(&node, diff)?;
    assert_eq!(
        bodies(&node, "10.96.0.10:80", 20)?,
        ["pod0".to_owned()].into()
    );
    assert_eq!(
        bodies(&lab.pods[1], "10.96.0.10:80", 5)?,
        ["pod0".to_owned()].into(),
        "hairpin"
    );

    // Session affinity: one client sticks to one endpoint.
    let sticky = state(&[web(true), web_slice(&[0, 1]), empty()]);
    apply(&node, diff_script(&one, &sticky).context("a diff")?)?;
    let seen = bodies(&node, "10.96.0.10:80", 20)?;
    assert_eq!(seen.len(), 1, "affinity: {seen:?}");
    Ok(())
}

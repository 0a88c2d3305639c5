//! Root-only tests of the plugin on real namespaces: a node namespace and pod namespaces
//! made by the test under its own temporary folder (`kins-cni-*`), removed by a guard even
//! when the test fails. Traffic goes only between the pods of that node.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use cni::types::CniResult;
use cni::{veth_name, CniEnv, Output};
use net::{create_netns, delete_netns, run_in_netns, Ipv4Net, Net, RtNet};

/// A node namespace, its pods' namespaces and the IPAM folder, removed on drop.
struct Lab {
    dir: tempfile::TempDir,
    node: PathBuf,
    made: Vec<PathBuf>,
}

impl Lab {
    fn new() -> Lab {
        let dir = tempfile::Builder::new()
            .prefix("kins-cni-")
            .tempdir()
            .expect("temp dir");
        let node = dir.path().join("node");
        let mut lab = Lab {
            dir,
            node: node.clone(),
            made: vec![],
        };
        lab.netns("node");
        lab
    }

    fn netns(&mut self, name: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        self.made.push(p.clone());
        create_netns(&p).expect("create netns");
        p
    }

    fn conf(&self, subnet: &str) -> String {
        format!(
            r#"{{"cniVersion": "1.0.0", "name": "kins", "type": "kins-bridge", "bridge": "cni0",
                "ipam": {{"type": "kins-host-local", "subnet": "{subnet}", "dataDir": "{}"}}}}"#,
            self.dir.path().join("ipam").display()
        )
    }

    /// One plugin invocation, from inside the node's namespace as the agent makes it.
    fn invoke(&self, command: &str, id: &str, netns: &Path, conf: &str) -> Output {
        let env = CniEnv {
            container_id: id.to_string(),
            netns: netns.display().to_string(),
            ifname: "eth0".to_string(),
            ..CniEnv::default()
        };
        run_in_netns(&self.node, || cni::run(command, &env, conf.as_bytes())).expect("in node")
    }

    fn add(&self, id: &str, netns: &Path, conf: &str) -> CniResult {
        let out = self.invoke("ADD", id, netns, conf);
        assert_eq!(out.exit, 0, "ADD {id}: {}", out.stdout);
        serde_json::from_str(&out.stdout).expect("result")
    }

    fn ip_files(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.dir.path().join("ipam/kins"))
            .expect("ipam dir")
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.parse::<Ipv4Addr>().is_ok())
            .collect();
        names.sort();
        names
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for p in self.made.iter().rev() {
            let _ = delete_netns(p);
        }
    }
}

fn cidr(s: &str) -> Ipv4Net {
    s.parse().expect("test cidr")
}

/// Accepts one connection inside `netns` on `ip:port` and answers "pong" to "ping".
fn serve_once(netns: &Path, ip: Ipv4Addr, port: u16) -> std::thread::JoinHandle<String> {
    let listener = run_in_netns(netns, || TcpListener::bind((ip, port)))
        .expect("in pod")
        .expect("bind in pod");
    std::thread::spawn(move || {
        let (mut conn, peer) = listener.accept().expect("accept");
        let mut buf = [0u8; 4];
        conn.read_exact(&mut buf).expect("read");
        conn.write_all(b"pong").expect("write");
        format!("{} from {}", String::from_utf8_lossy(&buf), peer.ip())
    })
}

/// Connects from inside `netns` to `ip:port`, says "ping" and returns the answer.
fn ping(netns: &Path, ip: Ipv4Addr, port: u16) -> String {
    let stream = run_in_netns(netns, || {
        TcpStream::connect_timeout(&SocketAddr::from((ip, port)), Duration::from_secs(2))
    })
    .expect("in pod")
    .expect("connect across the bridge");
    let mut stream = stream;
    stream
        .set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    stream.write_all(b"ping").expect("write");
    let mut buf = [0u8; 4];
    stream.read_exact(&mut buf).expect("read");
    String::from_utf8_lossy(&buf).into_owned()
}

#[test]
fn two_pods_on_one_node_talk_then_go_away() {
    let mut lab = Lab::new();
    let pod1 = lab.netns("pod1");
    let pod2 = lab.netns("pod2");
    let conf = lab.conf("10.244.1.0/24");

    let r1 = lab.add("c1", &pod1, &conf);
    let r2 = lab.add("c2", &pod2, &conf);
    assert_eq!(r1.ips[0].address, cidr("10.244.1.2/24"));
    assert_eq!(r2.ips[0].address, cidr("10.244.1.3/24"));
    assert_eq!(r1.interfaces[1].name, veth_name("c1", "eth0"));
    assert_eq!(
        r1.interfaces[2].sandbox.as_deref(),
        Some(pod1.to_str().expect("utf-8"))
    );

    // Each pod has its address and a default route via the bridge.
    for (pod, addr) in [(&pod1, "10.244.1.2/24"), (&pod2, "10.244.1.3/24")] {
        let net = RtNet::in_netns(pod).expect("pod socket");
        assert_eq!(net.addrs("eth0").expect("addrs"), [cidr(addr)]);
        let routes: Vec<String> = net
            .routes()
            .expect("routes")
            .iter()
            .map(|r| r.to_string())
            .collect();
        assert!(
            routes.contains(&"default via 10.244.1.1 dev eth0".to_string()),
            "{routes:?}"
        );
        assert!(net.link("lo").expect("lo").expect("lo").up);
    }
    let node = RtNet::in_netns(&lab.node).expect("node socket");
    assert_eq!(node.addrs("cni0").expect("bridge"), [cidr("10.244.1.1/24")]);
    assert_eq!(node.sysctl("net/ipv4/ip_forward").expect("sysctl"), "1");

    // Pod to pod across the bridge, both ways.
    let server = serve_once(&pod2, Ipv4Addr::new(10, 244, 1, 3), 7000);
    assert_eq!(ping(&pod1, Ipv4Addr::new(10, 244, 1, 3), 7000), "pong");
    assert_eq!(server.join().expect("server"), "ping from 10.244.1.2");
    let server = serve_once(&pod1, Ipv4Addr::new(10, 244, 1, 2), 7001);
    assert_eq!(ping(&pod2, Ipv4Addr::new(10, 244, 1, 2), 7001), "pong");
    assert_eq!(server.join().expect("server"), "ping from 10.244.1.3");

    // CHECK, and a repeated ADD keeps the address.
    assert_eq!(lab.invoke("CHECK", "c1", &pod1, &conf).exit, 0);
    let again = lab.add("c1", &pod1, &conf);
    assert_eq!(again.ips, r1.ips);
    assert_eq!(lab.invoke("CHECK", "c1", &pod1, &conf).exit, 0);

    // DEL: pod 1 normally; pod 2 after its namespace is gone already.
    assert_eq!(lab.invoke("DEL", "c1", &pod1, &conf).exit, 0);
    delete_netns(&pod2).expect("delete pod2 netns");
    let out = lab.invoke("DEL", "c2", &pod2, &conf);
    assert_eq!(out.exit, 0, "{}", out.stdout);
    for id in ["c1", "c2"] {
        assert!(
            !node.link_exists(&veth_name(id, "eth0")).expect("link"),
            "veth of {id} gone"
        );
    }
    assert_eq!(lab.ip_files(), Vec::<String>::new(), "addresses released");
    let check = lab.invoke("CHECK", "c1", &pod1, &conf);
    assert_eq!(check.exit, 1);
    assert!(check.stdout.contains(r#""code":103"#), "{}", check.stdout);
    // DEL again, with or without a namespace: nothing to do, success.
    assert_eq!(lab.invoke("DEL", "c1", &pod1, &conf).exit, 0);
    assert_eq!(lab.invoke("DEL", "c2", Path::new(""), &conf).exit, 0);
    // The bridge stays for the next pods.
    assert!(node.link_exists("cni0").expect("bridge"));
}

#[test]
fn parallel_adds_on_a_fresh_node_get_distinct_addresses() {
    let mut lab = Lab::new();
    let pods: Vec<PathBuf> = (0..8).map(|i| lab.netns(&format!("p{i}"))).collect();
    let conf = lab.conf("10.244.2.0/24");
    let results: Vec<CniResult> = std::thread::scope(|s| {
        let handles: Vec<_> = pods
            .iter()
            .enumerate()
            .map(|(i, pod)| {
                let lab = &lab;
                let conf = &conf;
                s.spawn(move || lab.add(&format!("par{i}"), pod, conf))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("thread"))
            .collect()
    });
    let mut ips: Vec<String> = results
        .iter()
        .map(|r| r.ips[0].address.to_string())
        .collect();
    ips.sort();
    ips.dedup();
    assert_eq!(ips.len(), 8, "{ips:?}");
    assert_eq!(lab.ip_files().len(), 8);
    let node = RtNet::in_netns(&lab.node).expect("node");
    let bridge = node.link("cni0").expect("bridge").expect("bridge");
    let ports = node
        .links()
        .expect("links")
        .iter()
        .filter(|l| l.master == Some(bridge.index))
        .count();
    assert_eq!(ports, 8);
    for (i, pod) in pods.iter().enumerate() {
        let out = lab.invoke("DEL", &format!("par{i}"), pod, &conf);
        assert_eq!(out.exit, 0, "{}", out.stdout);
    }
    assert_eq!(lab.ip_files().len(), 0);
}

#[test]
fn add_into_a_missing_namespace_fails_cleanly() {
    let lab = Lab::new();
    let conf = lab.conf("10.244.3.0/24");
    let missing = lab.dir.path().join("no-such-pod");
    let out = lab.invoke("ADD", "gone", &missing, &conf);
    assert_eq!(out.exit, 1);
    assert!(
        out.stdout
            .contains(r#""code":3,"msg":"no network namespace at /"#),
        "{}",
        out.stdout
    );
    assert_eq!(lab.ip_files(), Vec::<String>::new(), "address given back");
}

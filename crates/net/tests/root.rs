//! Root-only tests on real namespaces. Each test makes its namespaces as files in its own
//! temporary folder (`kins-net-*`), and a guard unmounts and removes them even when the
//! test fails. No traffic leaves the namespaces the tests create.

use std::net::Ipv4Addr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use net::{
    create_netns, default_dst, delete_netns, netns_exists, run_in_netns, Error, Ipv4Net, Mac, Net,
    Route, RouteKind, RtNet,
};

/// Namespaces under a temporary folder, removed on drop.
struct Namespaces {
    dir: tempfile::TempDir,
    made: Vec<PathBuf>,
}

impl Namespaces {
    fn new() -> Namespaces {
        Namespaces {
            dir: tempfile::Builder::new()
                .prefix("kins-net-")
                .tempdir()
                .expect("temp dir"),
            made: vec![],
        }
    }

    fn create(&mut self, name: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        self.made.push(p.clone());
        create_netns(&p).expect("create netns");
        p
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for p in &self.made {
            let _ = delete_netns(p);
        }
    }
}

fn cidr(s: &str) -> Ipv4Net {
    s.parse().expect("test cidr")
}

fn netns_inode(p: &Path) -> u64 {
    std::fs::metadata(p).expect("stat ns").ino()
}

#[test]
fn namespaces_are_files_that_come_and_go() {
    let mut ns = Namespaces::new();
    let a = ns.create("a");
    assert!(netns_exists(&a));
    assert!(matches!(create_netns(&a), Err(Error::NetnsExists(_))));
    let inside = run_in_netns(&a, || netns_inode(Path::new("/proc/thread-self/ns/net")))
        .expect("run in netns");
    assert_eq!(
        inside,
        netns_inode(&a),
        "the thread ran inside the namespace"
    );
    assert_ne!(
        netns_inode(Path::new("/proc/thread-self/ns/net")),
        inside,
        "the caller stayed where it was"
    );
    delete_netns(&a).expect("delete");
    assert!(!netns_exists(&a));
    assert!(!a.exists());
    delete_netns(&a).expect("deleting again is fine");
    let missing = run_in_netns(&a, || ()).expect_err("no namespace");
    assert!(missing.to_string().contains("open"), "{missing}");
}

#[test]
fn links_addresses_routes_and_sysctls() {
    let mut ns = Namespaces::new();
    let node_path = ns.create("node");
    let pod_path = ns.create("pod");
    let node = RtNet::in_netns(&node_path).expect("node socket");

    // A bridge with a fixed MAC and its gateway address.
    let mac = Mac::from_ipv4(Ipv4Addr::new(10, 250, 7, 1));
    node.create_bridge("kinsbr0", Some(1400), Some(mac))
        .expect("bridge");
    let again = node
        .create_bridge("kinsbr0", None, None)
        .expect_err("exists");
    assert!(again.is_exists(), "{again}");
    node.set_addr("kinsbr0", cidr("10.250.7.1/24"))
        .expect("addr");
    node.set_addr("kinsbr0", cidr("10.250.7.1/24"))
        .expect("same address again is fine");
    node.set_up("kinsbr0").expect("up");
    assert_eq!(
        node.addrs("kinsbr0").expect("addrs"),
        [cidr("10.250.7.1/24")]
    );
    let br = node.link("kinsbr0").expect("get").expect("present");
    assert_eq!(br.kind.as_deref(), Some("bridge"));
    assert_eq!(br.mac, Some(mac));
    assert_eq!(br.mtu, 1400);
    assert!(br.up);

    // A veth whose peer is born in the pod's namespace.
    node.create_veth_into("vethkn000001", "eth0", &pod_path, Some(1400))
        .expect("veth");
    node.set_master("vethkn000001", "kinsbr0").expect("master");
    node.set_up("vethkn000001").expect("up");
    node.set_alias("vethkn000001", "kins:test").expect("alias");
    let host = node.link("vethkn000001").expect("get").expect("present");
    assert_eq!(host.kind.as_deref(), Some("veth"));
    assert_eq!(host.master, Some(br.index));
    assert_eq!(host.alias.as_deref(), Some("kins:test"));
    assert!(
        node.link("eth0").expect("get").is_none(),
        "peer not on the node"
    );
    let names: Vec<String> = node
        .links()
        .expect("links")
        .into_iter()
        .map(|l| l.name)
        .collect();
    assert_eq!(names, ["lo", "kinsbr0", "vethkn000001"]);

    let pod = node.open_netns(&pod_path).expect("pod socket");
    let eth0 = pod.link("eth0").expect("get").expect("peer in the pod");
    assert_eq!(eth0.mtu, 1400);
    pod.set_up("lo").expect("lo up");
    pod.set_addr("eth0", cidr("10.250.7.5/24")).expect("addr");
    pod.set_up("eth0").expect("up");
    let gw = Ipv4Addr::new(10, 250, 7, 1);
    let default = Route::via(default_dst(), gw, Some("eth0"));
    pod.add_route(&default).expect("default route");
    let dup = pod.add_route(&default).expect_err("exists");
    assert!(dup.is_exists(), "{dup}");
    pod.replace_route(&default).expect("replace");
    let svc = Route::unreachable(cidr("10.96.0.0/12"));
    pod.add_route(&svc).expect("unreachable");
    let routes = pod.routes().expect("routes");
    let shown: Vec<String> = routes.iter().map(|r| r.to_string()).collect();
    assert!(
        shown.contains(&"default via 10.250.7.1 dev eth0".to_string()),
        "{shown:?}"
    );
    assert!(
        shown.contains(&"10.250.7.0/24 dev eth0".to_string()),
        "{shown:?}"
    );
    assert!(routes.iter().any(|r| r.kind == RouteKind::Unreachable));
    assert!(pod.del_route(&svc).expect("delete"));
    assert!(!pod.del_route(&svc).expect("delete again"));

    // An unreachable gateway is refused with the kernel's words.
    let far = Route::via(cidr("10.251.0.0/16"), Ipv4Addr::new(10, 99, 0, 1), None);
    let err = pod.add_route(&far).expect_err("unreachable gateway");
    let msg = err.to_string();
    assert!(
        msg.starts_with("add route 10.251.0.0/16 via 10.99.0.1 (in netns "),
        "{msg}"
    );
    assert!(
        msg.ends_with(": Network is unreachable: Nexthop has invalid gateway"),
        "{msg}"
    );

    // Sysctls of the node namespace, not the caller's.
    let host_forward = std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").expect("read");
    node.set_sysctl("net/ipv4/ip_forward", "1").expect("set");
    assert_eq!(node.sysctl("net/ipv4/ip_forward").expect("get"), "1");
    assert_eq!(
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").expect("read"),
        host_forward,
        "the host's value is untouched"
    );
    assert!(node.sysctl("../etc/passwd").is_err());
    // `current()` keeps the namespace it was made in, used from any thread.
    let current = run_in_netns(&node_path, RtNet::current)
        .expect("in node")
        .expect("socket");
    assert!(current.link_exists("kinsbr0").expect("link"));
    assert_eq!(current.sysctl("net/ipv4/ip_forward").expect("get"), "1");

    // Deleting the host end takes the peer along; deleting again is fine.
    assert!(node.delete_link("vethkn000001").expect("delete"));
    assert!(!node.delete_link("vethkn000001").expect("delete again"));
    assert!(pod.link("eth0").expect("get").is_none());
    let missing = node.set_up("vethkn000001").expect_err("gone");
    assert!(missing.is_not_found(), "{missing}");
}

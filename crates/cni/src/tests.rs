//! The plugin on [`FakeNet`]: each test is a table of invocations, the kernel calls they
//! make and what they print.

use std::path::Path;

use net::{FakeNet, Net};

use super::*;

struct Node {
    net: FakeNet,
    data: tempfile::TempDir,
}

impl Node {
    fn new() -> Node {
        Node {
            net: FakeNet::new("node"),
            data: tempfile::tempdir().expect("tmp"),
        }
    }

    fn conf(&self, extra: &str) -> String {
        format!(
            r#"{{"cniVersion": "1.0.0", "name": "kins", "type": "kins-bridge"{extra},
                "ipam": {{"type": "kins-host-local", "subnet": "10.244.1.0/24",
                          "dataDir": "{}"}}}}"#,
            self.data.path().display()
        )
    }

    /// Runs one invocation and compares the calls made and the output with `expect`:
    /// the calls, one per line, then `exit N` and the stdout.
    fn check(&self, command: &str, id: &str, netns: &str, conf: &str, expect: &str) {
        let env = CniEnv {
            container_id: id.to_string(),
            netns: netns.to_string(),
            ifname: "eth0".to_string(),
            ..CniEnv::default()
        };
        let out = run_with(&self.net, command, &env, conf.as_bytes());
        let calls = self.net.take_calls();
        let mut got = String::new();
        if !calls.is_empty() {
            got.push_str(&calls);
            got.push('\n');
        }
        got.push_str(&format!("exit {}\n{}", out.exit, out.stdout));
        let expect = expect
            .replace("{v1}", &veth_name("c1", "eth0"))
            .replace("{v2}", &veth_name("c2", "eth0"));
        assert_eq!(got.trim_end(), expect.trim(), "{command} {id}");
    }
}

#[test]
fn veth_names_are_short_stable_and_distinct() {
    let a = veth_name(
        "4f3c2b1a0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a",
        "eth0",
    );
    assert_eq!(a.len(), 12);
    assert!(a.starts_with("veth") && a[4..].chars().all(|c| c.is_ascii_hexdigit()));
    assert_eq!(
        a,
        veth_name(
            "4f3c2b1a0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a",
            "eth0"
        )
    );
    assert_ne!(veth_name("c1", "eth0"), veth_name("c1", "eth1"));
    assert_ne!(veth_name("c1", "eth0"), veth_name("c2", "eth0"));
}

#[test]
fn add_on_a_fresh_node_then_a_second_pod_then_del() {
    let node = Node::new();
    let conf = node.conf("");
    node.check(
        "ADD",
        "c1",
        "/run/pod1",
        &conf,
        r#"
node: link cni0
node: create_bridge cni0 mtu=- mac=0a:58:0a:f4:01:01
node: set_addr cni0 10.244.1.1/24
node: set_up cni0
node: sysctl net/ipv4/ip_forward
node: set_sysctl net/ipv4/ip_forward 1
node: link {v1}
node: create_veth_into {v1} eth0 /run/pod1 mtu=-
node: set_alias {v1} kins-cni:c1:eth0
node: set_master {v1} cni0
node: set_hairpin {v1}
node: set_up {v1}
node: open_netns /run/pod1
/run/pod1: set_up lo
/run/pod1: set_addr eth0 10.244.1.2/24
/run/pod1: set_up eth0
/run/pod1: add_route default via 10.244.1.1 dev eth0
/run/pod1: link eth0
node: link {v1}
exit 0
{"cniVersion":"1.0.0","interfaces":[{"name":"cni0","mac":"0a:58:0a:f4:01:01"},{"name":"{v1}","mac":"02:00:00:00:00:01"},{"name":"eth0","mac":"02:00:00:00:00:02","sandbox":"/run/pod1"}],"ips":[{"address":"10.244.1.2/24","gateway":"10.244.1.1","interface":2}],"routes":[{"dst":"0.0.0.0/0","gw":"10.244.1.1"}],"dns":{}}
"#,
    );
    // The bridge and forwarding are there: two queries, no change.
    node.check(
        "ADD",
        "c2",
        "/run/pod2",
        &conf,
        r#"
node: link cni0
node: addrs cni0
node: sysctl net/ipv4/ip_forward
node: link {v2}
node: create_veth_into {v2} eth0 /run/pod2 mtu=-
node: set_alias {v2} kins-cni:c2:eth0
node: set_master {v2} cni0
node: set_hairpin {v2}
node: set_up {v2}
node: open_netns /run/pod2
/run/pod2: set_up lo
/run/pod2: set_addr eth0 10.244.1.3/24
/run/pod2: set_up eth0
/run/pod2: add_route default via 10.244.1.1 dev eth0
/run/pod2: link eth0
node: link {v2}
exit 0
{"cniVersion":"1.0.0","interfaces":[{"name":"cni0","mac":"0a:58:0a:f4:01:01"},{"name":"{v2}","mac":"02:00:00:00:00:03"},{"name":"eth0","mac":"02:00:00:00:00:04","sandbox":"/run/pod2"}],"ips":[{"address":"10.244.1.3/24","gateway":"10.244.1.1","interface":2}],"routes":[{"dst":"0.0.0.0/0","gw":"10.244.1.1"}],"dns":{}}
"#,
    );
    node.check(
        "CHECK",
        "c1",
        "/run/pod1",
        &conf,
        r#"
node: link cni0
node: link {v1}
node: open_netns /run/pod1
/run/pod1: addrs eth0
/run/pod1: routes
exit 0
"#,
    );
    node.check(
        "DEL",
        "c1",
        "",
        &conf,
        r#"
node: link {v1}
node: delete_link {v1}
exit 0
"#,
    );
    assert!(!node.data.path().join("kins/10.244.1.2").exists());
    assert!(node.data.path().join("kins/10.244.1.3").exists());
    // DEL again: nothing left, still a success.
    node.check(
        "DEL",
        "c1",
        "",
        &conf,
        r#"
node: link {v1}
exit 0
"#,
    );
    node.check(
        "CHECK",
        "c1",
        "/run/pod1",
        &conf,
        r#"
exit 1
{"cniVersion":"1.0.0","code":103,"msg":"check failed: no address allocated to container c1 (eth0)","details":"container c1, netns \"/run/pod1\", interface \"eth0\""}
"#,
    );
}

#[test]
fn add_repeated_keeps_the_address_and_makes_a_fresh_pair() {
    let node = Node::new();
    let conf = node.conf(r#", "mtu": 1400"#);
    let first = run_with(&node.net, "ADD", &env("c1", "/run/pod1"), conf.as_bytes());
    assert_eq!(first.exit, 0, "{}", first.stdout);
    node.net.take_calls();
    node.check(
        "ADD",
        "c1",
        "/run/pod1",
        &conf,
        r#"
node: link cni0
node: addrs cni0
node: sysctl net/ipv4/ip_forward
node: link {v1}
node: delete_link {v1}
node: create_veth_into {v1} eth0 /run/pod1 mtu=1400
node: set_alias {v1} kins-cni:c1:eth0
node: set_master {v1} cni0
node: set_hairpin {v1}
node: set_up {v1}
node: open_netns /run/pod1
/run/pod1: set_up lo
/run/pod1: set_addr eth0 10.244.1.2/24
/run/pod1: set_up eth0
/run/pod1: add_route default via 10.244.1.1 dev eth0
/run/pod1: link eth0
node: link {v1}
exit 0
{"cniVersion":"1.0.0","interfaces":[{"name":"cni0","mac":"0a:58:0a:f4:01:01","mtu":1400},{"name":"{v1}","mac":"02:00:00:00:00:03","mtu":1400},{"name":"eth0","mac":"02:00:00:00:00:04","mtu":1400,"sandbox":"/run/pod1"}],"ips":[{"address":"10.244.1.2/24","gateway":"10.244.1.1","interface":2}],"routes":[{"dst":"0.0.0.0/0","gw":"10.244.1.1"}],"dns":{}}
"#,
    );
}

fn env(id: &str, netns: &str) -> CniEnv {
    CniEnv {
        container_id: id.to_string(),
        netns: netns.to_string(),
        ifname: "eth0".to_string(),
        ..CniEnv::default()
    }
}

#[test]
fn a_failed_add_takes_down_what_it_set_up() {
    let node = Node::new();
    let conf = node.conf("");
    node.net.fail_when("add_route");
    node.check(
        "ADD",
        "c1",
        "/run/pod1",
        &conf,
        r#"
node: link cni0
node: create_bridge cni0 mtu=- mac=0a:58:0a:f4:01:01
node: set_addr cni0 10.244.1.1/24
node: set_up cni0
node: sysctl net/ipv4/ip_forward
node: set_sysctl net/ipv4/ip_forward 1
node: link {v1}
node: create_veth_into {v1} eth0 /run/pod1 mtu=-
node: set_alias {v1} kins-cni:c1:eth0
node: set_master {v1} cni0
node: set_hairpin {v1}
node: set_up {v1}
node: open_netns /run/pod1
/run/pod1: set_up lo
/run/pod1: set_addr eth0 10.244.1.2/24
/run/pod1: set_up eth0
/run/pod1: add_route default via 10.244.1.1 dev eth0
node: link {v1}
node: delete_link {v1}
exit 1
{"cniVersion":"1.0.0","code":102,"msg":"injected failure add_route default via 10.244.1.1 dev eth0 (in /run/pod1): I/O error","details":"container c1, netns \"/run/pod1\", interface \"eth0\""}
"#,
    );
    let store = ipam::Store::new(
        node.data.path().join("kins"),
        "kins",
        "10.244.1.0/24".parse().expect("subnet"),
        "10.244.1.1".parse().expect("gw"),
    );
    assert_eq!(
        store.allocations().expect("list"),
        vec![],
        "address released"
    );
}

#[test]
fn a_veth_name_owned_by_another_container_is_left_alone() {
    let node = Node::new();
    let conf = node.conf("");
    let v1 = veth_name("c1", "eth0");
    node.net
        .create_veth_into(&v1, "eth0", Path::new("/run/other"), None)
        .expect("veth");
    node.net
        .set_alias(&v1, "kins-cni:someone:eth0")
        .expect("alias");
    node.net.take_calls();
    let out = run_with(&node.net, "ADD", &env("c1", "/run/pod1"), conf.as_bytes());
    assert_eq!(out.exit, 1);
    assert!(
        out.stdout.contains(&format!(
            r#""code":102,"msg":"interface {v1} belongs to another container (kins-cni:someone:eth0)""#
        )),
        "{}",
        out.stdout
    );
    node.net.take_calls();
    node.check(
        "DEL",
        "c1",
        "",
        &conf,
        r#"
node: link {v1}
exit 0
"#,
    );
    assert!(node.net.link_exists(&v1).expect("link"), "not deleted");
}

#[test]
fn errors_are_cni_error_objects() {
    let node = Node::new();
    let conf = node.conf("");
    let check = |command: &str, env: CniEnv, stdin: &str, expect: &str| {
        let out = run_with(&node.net, command, &env, stdin.as_bytes());
        assert_eq!(
            format!("exit {}\n{}", out.exit, out.stdout).trim(),
            expect.trim()
        );
    };
    check(
        "ADD",
        env("", "/run/pod1"),
        &conf,
        r#"
exit 1
{"cniVersion":"1.0.0","code":4,"msg":"invalid environment variable CNI_CONTAINERID: \"\": letters, digits, '-', '_' and '.' only"}"#,
    );
    check(
        "ADD",
        env("c1", "relative"),
        &conf,
        r#"
exit 1
{"cniVersion":"1.0.0","code":4,"msg":"invalid environment variable CNI_NETNS: \"relative\": not an absolute path","details":"container c1, netns \"relative\", interface \"eth0\""}"#,
    );
    check(
        "FROB",
        env("c1", "/run/pod1"),
        &conf,
        r#"
exit 1
{"cniVersion":"1.0.0","code":4,"msg":"invalid environment variable CNI_COMMAND: \"FROB\": expected ADD, DEL, CHECK, STATUS, GC or VERSION","details":"container c1, netns \"/run/pod1\", interface \"eth0\""}"#,
    );
    check(
        "ADD",
        env("c1", "/run/pod1"),
        "{not json",
        r#"
exit 1
{"cniVersion":"1.1.0","code":6,"msg":"decoding the network configuration: key must be a string at line 1 column 2","details":"container c1, netns \"/run/pod1\", interface \"eth0\""}"#,
    );
    check(
        "CHECK",
        env("c1", "/run/pod1"),
        &conf.replace("1.0.0", "0.3.1"),
        r#"
exit 1
{"cniVersion":"0.3.1","code":1,"msg":"incompatible CNI version \"0.3.1\" (supported: 0.3.0, 0.3.1, 0.4.0, 1.0.0, 1.1.0)","details":"container c1, netns \"/run/pod1\", interface \"eth0\""}"#,
    );
    check(
        "VERSION",
        CniEnv::default(),
        r#"{"cniVersion": "0.4.0"}"#,
        r#"
exit 0
{"cniVersion":"0.4.0","supportedVersions":["0.3.0","0.3.1","0.4.0","1.0.0","1.1.0"]}"#,
    );
    check(
        "VERSION",
        CniEnv::default(),
        "",
        r#"
exit 0
{"cniVersion":"1.1.0","supportedVersions":["0.3.0","0.3.1","0.4.0","1.0.0","1.1.0"]}"#,
    );
    assert_eq!(node.net.take_calls(), "", "no kernel call for any of these");
}

#[test]
fn pre_1_0_results_carry_the_ip_version() {
    let node = Node::new();
    let conf = node.conf("").replace("1.0.0", "0.4.0");
    let out = run_with(&node.net, "ADD", &env("c1", "/run/pod1"), conf.as_bytes());
    assert_eq!(out.exit, 0, "{}", out.stdout);
    assert!(
        out.stdout
            .contains(r#""ips":[{"version":"4","address":"10.244.1.2/24""#),
        "{}",
        out.stdout
    );
    assert!(out.stdout.starts_with(r#"{"cniVersion":"0.4.0""#));
}

#[test]
fn an_exhausted_subnet_is_a_clear_error() {
    let node = Node::new();
    let conf = node.conf("").replace("10.244.1.0/24", "10.244.1.0/30");
    let ok = run_with(&node.net, "ADD", &env("c1", "/run/pod1"), conf.as_bytes());
    assert_eq!(ok.exit, 0, "{}", ok.stdout);
    node.net.take_calls();
    node.check(
        "ADD",
        "c2",
        "/run/pod2",
        &conf,
        r#"
exit 1
{"cniVersion":"1.0.0","code":101,"msg":"no free address left in 10.244.1.0/30 (network kins)","details":"container c2, netns \"/run/pod2\", interface \"eth0\""}
"#,
    );
}

#[test]
fn gc_releases_what_is_not_valid_and_status_reports_exhaustion() {
    let node = Node::new();
    let conf = node.conf("").replace("1.0.0", "1.1.0");
    for (id, ns) in [("c1", "/run/pod1"), ("c2", "/run/pod2")] {
        let env = CniEnv {
            container_id: id.into(),
            netns: ns.into(),
            ifname: "eth0".into(),
            ..Default::default()
        };
        assert_eq!(run_with(&node.net, "ADD", &env, conf.as_bytes()).exit, 0);
    }
    node.net.take_calls();
    let gc = conf.replacen(
        '{',
        r#"{"cni.dev/valid-attachments": [{"containerID": "c1", "ifname": "eth0"}], "#,
        1,
    );
    node.check(
        "GC",
        "",
        "",
        &gc,
        "node: link {v2}\nnode: delete_link {v2}\nexit 0",
    );
    let left: Vec<String> = ipam::Store::new(
        node.data.path().join("kins"),
        "kins",
        "10.244.1.0/24".parse().expect("ok"),
        "10.244.1.1".parse().expect("ok"),
    )
    .allocations()
    .expect("ok")
    .into_iter()
    .map(|a| a.container_id)
    .collect();
    assert_eq!(left, ["c1"]);
    node.check("STATUS", "", "", &conf, "exit 0");
    // STATUS and GC need 1.1.0; a /30 with one pod has no address left.
    let out = run_with(
        &node.net,
        "GC",
        &CniEnv::default(),
        node.conf("").as_bytes(),
    );
    assert!(out.stdout.contains(r#""code":1"#), "{}", out.stdout);
    let tiny = conf.replace("10.244.1.0/24", "10.244.9.0/30");
    let env = CniEnv {
        container_id: "c3".into(),
        netns: "/run/pod3".into(),
        ifname: "eth0".into(),
        ..Default::default()
    };
    assert_eq!(run_with(&node.net, "ADD", &env, tiny.as_bytes()).exit, 0);
    let out = run_with(&node.net, "STATUS", &CniEnv::default(), tiny.as_bytes());
    assert!(
        out.exit == 1
            && out.stdout.contains(r#""code":50"#)
            && out.stdout.contains("no free address left in 10.244.9.0/30"),
        "{}",
        out.stdout
    );
}

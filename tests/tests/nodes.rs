//! Nodes and pod networking, as root with real namespaces and veths: pods on different
//! nodes reach each other by IP without NAT, IPs are unique and inside their node's
//! podCIDR, nodes come and go, heartbeats matter, agents can be killed, and `kins down`
//! leaves nothing behind.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::Context;
use kins_tests::pods::{create, get_json, in_pod, kubectl, pod_netns, wait_for, wait_running};
use kins_tests::{kubectls, ok, Cluster};
use serde_json::Value;

/// A pod that serves HTTP on 8080 with busybox httpd; /cgi-bin/ip answers the client's
/// address as the server saw it.
fn server_pod(name: &str, node: &str) -> String {
    let dir = format!("/tmp/kins-test-www-{name}-{}", std::process::id());
    let script = format!(
        "mkdir -p {dir}/cgi-bin && printf '#!/bin/sh\\necho Content-Type: text/plain\\necho\\necho $REMOTE_ADDR\\n' > {dir}/cgi-bin/ip && chmod +x {dir}/cgi-bin/ip && exec busybox httpd -f -p 8080 -h {dir}"
    );
    serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": "server"}},
        "spec": {"nodeName": node, "containers": [{"name": "httpd", "image": "busybox", "command": ["sh", "-c", script]}]},
    })
    .to_string()
}

fn sleeper_pod(name: &str, node: &str) -> String {
    serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name},
        "spec": {"nodeName": node, "containers": [{"name": "sleep", "image": "busybox", "command": ["sleep", "3600"]}]},
    })
    .to_string()
}

fn ipv4(s: &str) -> anyhow::Result<u32> {
    Ok(u32::from(
        s.parse::<std::net::Ipv4Addr>()
            .with_context(|| format!("not an IP: {s}"))?,
    ))
}

fn in_cidr(ip: &str, cidr: &str) -> anyhow::Result<bool> {
    let (base, len) = cidr.split_once('/').context("cidr")?;
    let len: u32 = len.parse()?;
    let mask = u32::MAX << (32 - len);
    Ok(ipv4(ip)? & mask == ipv4(base)? & mask)
}

#[test]
fn pods_on_different_nodes_reach_each_other_without_nat() -> anyhow::Result<()> {
    let c = Cluster::up_nodes("n-talk", 3)?;
    let nodes = get_json(&c, &["get", "nodes"])?;
    let nodes: Vec<(String, String, String)> = nodes["items"]
        .as_array()
        .context("nodes")?
        .iter()
        .map(|n| {
            let ip = n["status"]["addresses"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|a| a["type"] == "InternalIP")
                .and_then(|a| a["address"].as_str())
                .unwrap_or("")
                .to_string();
            (
                n["metadata"]["name"].as_str().unwrap_or("").to_string(),
                n["spec"]["podCIDR"].as_str().unwrap_or("").to_string(),
                ip,
            )
        })
        .collect();
    assert_eq!(nodes.len(), 3, "{nodes:?}");
    let cidrs: std::collections::HashSet<&String> = nodes.iter().map(|n| &n.1).collect();
    assert_eq!(cidrs.len(), 3, "distinct podCIDRs: {nodes:?}");
    let wide = kubectl(&c, &["get", "nodes", "-o", "wide"])?;
    assert!(wide.contains("INTERNAL-IP"), "{wide}");
    for (name, _, ip) in &nodes {
        assert!(
            wide.lines().any(|l| l.starts_with(name.as_str())
                && l.contains(ip.as_str())
                && l.contains("Ready")),
            "{wide}"
        );
    }
    for (i, (node, _, _)) in nodes.iter().enumerate() {
        create(&c, &server_pod(&format!("srv{i}"), node))?;
    }
    create(&c, &sleeper_pod("client", &nodes[0].0))?;
    let client = wait_running(&c, "client")?;
    let client_ip = client["status"]["podIP"]
        .as_str()
        .context("client IP")?
        .to_string();
    let mut ips = vec![client_ip.clone()];
    for (i, (node, cidr, node_ip)) in nodes.iter().enumerate() {
        let p = wait_running(&c, &format!("srv{i}"))?;
        let ip = p["status"]["podIP"].as_str().context("pod IP")?.to_string();
        assert_eq!(p["spec"]["nodeName"].as_str(), Some(node.as_str()));
        assert!(in_cidr(&ip, cidr)?, "{ip} is inside {cidr} of {node}");
        assert_eq!(p["status"]["hostIP"].as_str(), Some(node_ip.as_str()));
        ips.push(ip.clone());
        // ICMP and TCP from the client on node 0; the server sees the client's pod IP.
        in_pod(&c, &client, &["busybox", "ping", "-c", "1", "-W", "2", &ip])?;
        let seen = wait_for("an HTTP answer", 20, || {
            Ok(in_pod(
                &c,
                &client,
                &[
                    "curl",
                    "-s",
                    "-m",
                    "2",
                    &format!("http://{ip}:8080/cgi-bin/ip"),
                ],
            )
            .ok())
        })?;
        // busybox httpd listens on a dual-stack socket: IPv4 peers show as [::ffff:a.b.c.d].
        let seen = seen
            .trim()
            .trim_start_matches("[::ffff:")
            .trim_end_matches(']');
        assert_eq!(
            seen, client_ip,
            "the server on {node} saw the client's own pod IP (no NAT)"
        );
    }
    let unique: std::collections::HashSet<&String> = ips.iter().collect();
    assert_eq!(unique.len(), ips.len(), "pod IPs are unique: {ips:?}");
    let pods = kubectl(&c, &["get", "pods", "-o", "wide"])?;
    assert!(
        pods.lines()
            .next()
            .is_some_and(|h| h.contains("IP") && h.contains("NODE")),
        "{pods}"
    );
    for ip in &ips {
        assert!(pods.contains(ip.as_str()), "{pods}");
    }
    // Egress to the host (the node network's gateway) is masqueraded, and answered.
    let gw = nodes[0]
        .2
        .rsplit_once('.')
        .map(|(a, _)| format!("{a}.1"))
        .context("gateway")?;
    in_pod(&c, &client, &["busybox", "ping", "-c", "1", "-W", "2", &gw])?;
    Ok(())
}

#[test]
fn a_failing_command_gets_a_clear_state_and_event() -> anyhow::Result<()> {
    let c = Cluster::up_nodes("n-badcmd", 1)?;
    let node = format!("{}-worker", c.name);
    let pod = serde_json::json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "bad"},
        "spec": {"nodeName": node, "restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox", "command": ["/no/such/binary"]}]},
    });
    create(&c, &pod.to_string())?;
    let p = wait_for("the start error", 30, || {
        let p = get_json(&c, &["get", "pod", "bad"])?;
        let st = &p["status"]["containerStatuses"][0]["state"];
        Ok(st["terminated"]["reason"]
            .as_str()
            .is_some_and(|r| r == "StartError")
            .then_some(p))
    })?;
    let st = &p["status"]["containerStatuses"][0]["state"]["terminated"];
    assert!(
        st["message"]
            .as_str()
            .unwrap_or("")
            .contains("/no/such/binary: no such file or directory"),
        "{st}"
    );
    assert_eq!(p["status"]["phase"], "Failed");
    let events = wait_for("a Failed event", 30, || {
        let e = kubectl(
            &c,
            &[
                "get",
                "events",
                "--field-selector",
                "involvedObject.name=bad,reason=Failed",
            ],
        )?;
        Ok(e.contains("/no/such/binary: no such file or directory")
            .then_some(e))
    })?;
    assert!(events.contains("Warning"), "{events}");
    // The agent goes on: a good pod on the same node still runs.
    create(&c, &sleeper_pod("good", &node))?;
    wait_running(&c, "good")?;
    Ok(())
}

fn agent_pid(c: &Cluster, node: &str) -> Option<i32> {
    lab_procs(&c.name)
        .into_iter()
        .find(|(_, args)| {
            args.get(1).map(String::as_str) == Some("agent")
                && args
                    .windows(2)
                    .any(|w| w[0] == "--node-name" && w[1] == node)
        })
        .map(|(p, _)| p)
}

/// (pid, argv) of every process of the cluster, as `kins down` finds them.
fn lab_procs(cluster: &str) -> Vec<(i32, Vec<String>)> {
    lab::procs::find(cluster)
        .into_iter()
        .map(|p| (p.pid, p.args))
        .collect()
}

fn signal(pid: i32, sig: &str) -> anyhow::Result<()> {
    ok(Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .output()?)?;
    Ok(())
}

#[test]
fn agent_kill9_leaves_pods_running_and_is_adopted() -> anyhow::Result<()> {
    let c = Cluster::up_nodes("n-adopt", 1)?;
    let node = format!("{}-worker", c.name);
    create(&c, &server_pod("srv", &node))?;
    create(&c, &sleeper_pod("client", &node))?;
    let srv = wait_running(&c, "srv")?;
    let client = wait_running(&c, "client")?;
    let ip = srv["status"]["podIP"].as_str().context("ip")?.to_string();
    let pid = agent_pid(&c, &node).context("agent pid")?;
    signal(pid, "KILL")?;
    // Pods keep running and reachable while the agent is gone and after it is back.
    in_pod(
        &c,
        &client,
        &[
            "curl",
            "-s",
            "-m",
            "2",
            "-o",
            "/dev/null",
            &format!("http://{ip}:8080/cgi-bin/ip"),
        ],
    )?;
    let new = wait_for("the agent to be restarted", 30, || {
        Ok(agent_pid(&c, &node).filter(|p| *p != pid))
    })?;
    assert_ne!(new, pid);
    create(&c, &sleeper_pod("after", &node))?;
    wait_running(&c, "after")?;
    let again = get_json(&c, &["get", "pod", "srv"])?;
    assert_eq!(
        again["status"]["podIP"].as_str(),
        Some(ip.as_str()),
        "same IP after adoption"
    );
    assert_eq!(
        again["status"]["containerStatuses"][0]["restartCount"], 0,
        "not restarted"
    );
    in_pod(
        &c,
        &client,
        &[
            "curl",
            "-s",
            "-m",
            "2",
            "-o",
            "/dev/null",
            &format!("http://{ip}:8080/cgi-bin/ip"),
        ],
    )?;
    // Exactly one namespace per pod and one allocated IP per pod: nothing made twice.
    let pods_dir = format!("/run/kins/{}/nodes/{node}/pods", c.name);
    assert_eq!(
        std::fs::read_dir(&pods_dir)?.count(),
        3,
        "three pods, three sandboxes"
    );
    let ipam = format!("/run/kins/{}/nodes/{node}/ipam", c.name);
    let ip_files = walk(&PathBuf::from(ipam))
        .into_iter()
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.parse::<std::net::Ipv4Addr>().is_ok())
        })
        .count();
    assert_eq!(ip_files, 3, "three IPs allocated");
    Ok(())
}

fn walk(dir: &PathBuf) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

fn ready_status(c: &Cluster, node: &str) -> anyhow::Result<String> {
    let n = get_json(c, &["get", "node", node])?;
    Ok(n["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|x| x["type"] == "Ready")
        .and_then(|x| x["status"].as_str())
        .unwrap_or("")
        .to_string())
}

#[test]
fn a_node_whose_agent_stops_becomes_not_ready_and_recovers() -> anyhow::Result<()> {
    let c = Cluster::up_nodes("n-ready", 1)?;
    let node = format!("{}-worker", c.name);
    assert_eq!(ready_status(&c, &node)?, "True");
    let pid = agent_pid(&c, &node).context("agent pid")?;
    signal(pid, "STOP")?;
    // Observe the NotReady state while the agent is frozen, then let it go in any case.
    let stopped = (|| -> anyhow::Result<String> {
        wait_for("Ready=Unknown", 120, || {
            Ok((ready_status(&c, &node)? == "Unknown").then_some(()))
        })?;
        let wide = kubectl(&c, &["get", "nodes"])?;
        wait_for("the unreachable taint", 30, || {
            let n = get_json(&c, &["get", "node", &node])?;
            Ok(n["spec"]["taints"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|t| t["key"] == "node.kubernetes.io/unreachable")
                .then_some(()))
        })?;
        Ok(wide)
    })();
    signal(pid, "CONT")?;
    let wide = stopped?;
    assert!(wide.contains("NotReady"), "{wide}");
    wait_for("Ready=True again", 60, || {
        Ok((ready_status(&c, &node)? == "True").then_some(()))
    })?;
    wait_for("the unreachable taint to go", 60, || {
        let n = get_json(&c, &["get", "node", &node])?;
        Ok((!n["spec"]["taints"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|t| t["key"] == "node.kubernetes.io/unreachable"))
        .then_some(()))
    })?;
    Ok(())
}

#[test]
fn nodes_are_added_and_removed() -> anyhow::Result<()> {
    let c = Cluster::up_nodes("n-addrm", 1)?;
    ok(c.kins(&["node", "add", "--name", &c.name])?)?;
    let second = format!("{}-worker2", c.name);
    assert_eq!(ready_status(&c, &second)?, "True");
    let ls = ok(c.kins(&["node", "ls", "--name", &c.name])?)?;
    assert!(ls.contains(&second) && ls.contains("running"), "{ls}");
    let n = get_json(&c, &["get", "node", &second])?;
    assert!(n["spec"]["podCIDR"].is_string(), "{n}");
    create(&c, &sleeper_pod("on2", &second))?;
    let p = wait_running(&c, "on2")?;
    let netns = pod_netns(&c, &p);
    assert!(netns.exists());
    // `kins node exec` runs inside the node.
    let routes = ok(c.kins(&[
        "node", "exec", &second, "--name", &c.name, "--", "ip", "-4", "addr", "show", "eth0",
    ])?)?;
    let ip = n["status"]["addresses"][0]["address"]
        .as_str()
        .context("node ip")?;
    assert!(routes.contains(ip), "{routes}");
    ok(c.kins(&["node", "rm", &second, "--name", &c.name])?)?;
    let out = c.kubectl(&kubectls()[0], &["get", "node", &second])?;
    assert!(!out.status.success(), "the Node object is gone");
    assert!(!netns.exists(), "the node's pods' namespaces are gone");
    assert!(!PathBuf::from(format!("/run/kins/{}/netns/{second}", c.name)).exists());
    wait_for("the removed node's pod to be deleted", 60, || {
        Ok((!c
            .kubectl(&kubectls()[0], &["get", "pod", "on2"])?
            .status
            .success())
        .then_some(()))
    })?;
    assert!(agent_pid(&c, &second).is_none());
    Ok(())
}

/// What a cluster has on the host: links by alias or bridge name, mounts under its run
/// dir, its processes, its run dir.
fn host_state(name: &str) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    let links: Value = serde_json::from_slice(
        &Command::new("ip")
            .args(["-j", "link", "show"])
            .output()?
            .stdout,
    )?;
    for l in links.as_array().into_iter().flatten() {
        let alias = l["ifalias"].as_str().unwrap_or("");
        let n = l["ifname"].as_str().unwrap_or("");
        if alias == format!("kins:{name}")
            || alias.starts_with(&format!("kins:{name}:"))
            || n == format!("kins-{name}")
        {
            out.push(format!("link {n}"));
        }
    }
    let tables = String::from_utf8_lossy(
        &Command::new("nft")
            .args(["list", "tables"])
            .output()?
            .stdout,
    )
    .into_owned();
    for t in tables
        .lines()
        .filter(|t| t.ends_with(&format!(" kins_{}", name.replace('-', "_"))))
    {
        out.push(format!("nft {t}"));
    }
    let mounts = std::fs::read_to_string("/proc/self/mounts")?;
    for m in mounts
        .lines()
        .filter(|m| m.contains(&format!("/run/kins/{name}/")))
    {
        out.push(format!("mount {m}"));
    }
    for (pid, argv) in lab_procs(name) {
        out.push(format!("process {pid} {}", argv.join(" ")));
    }
    if PathBuf::from(format!("/run/kins/{name}")).exists() {
        out.push("run dir".into());
    }
    Ok(out)
}

#[test]
fn down_after_kill9_of_everything_leaves_nothing() -> anyhow::Result<()> {
    let name = "n-down";
    let before = host_state(name)?;
    assert!(before.is_empty(), "nothing of {name} before: {before:?}");
    let c = Cluster::up_nodes(name, 2)?;
    create(&c, &sleeper_pod("a", &format!("{name}-worker")))?;
    create(&c, &sleeper_pod("b", &format!("{name}-worker2")))?;
    let a = wait_running(&c, "a")?;
    wait_running(&c, "b")?;
    let during = host_state(name)?;
    assert!(
        during.iter().any(|s| s.starts_with("link kins-"))
            && during.iter().any(|s| s.starts_with("mount")),
        "{during:?}"
    );
    // kill -9 every kins process of the cluster, shims included: containers are orphaned.
    for (pid, _) in lab_procs(name) {
        let _ = signal(pid, "KILL");
    }
    let sleeper_alive = in_pod(&c, &a, &["true"]).is_ok();
    assert!(sleeper_alive, "the pod namespace still exists before down");
    ok(c.kins(&["down", "--name", name])?)?;
    let after = host_state(name)?;
    assert_eq!(
        after, before,
        "the host is back to its state before `kins up`"
    );
    // No process is left inside the pod's (now gone) namespace: the sleeper was found and killed.
    let left = Command::new("pgrep")
        .args(["-f", "^sleep 3600$"])
        .output()?;
    let _ = left;
    Ok(())
}

/// Counts of what pods leave behind on a cluster's nodes.
fn leftovers(c: &Cluster) -> anyhow::Result<(usize, usize, usize, usize)> {
    let run = format!("/run/kins/{}", c.name);
    let mounts = std::fs::read_to_string("/proc/self/mounts")?
        .lines()
        .filter(|l| l.contains(&format!("{run}/nodes/")))
        .count();
    let mut veths = 0;
    let mut ips = 0;
    let mut dirs = 0;
    for node in std::fs::read_dir(format!("{run}/netns"))?.flatten() {
        let out = Command::new("nsenter")
            .arg(format!("--net={}", node.path().display()))
            .args(["ip", "-o", "link", "show", "type", "veth"])
            .output()?;
        veths += String::from_utf8_lossy(&out.stdout).lines().count();
        let n = node.file_name().to_string_lossy().into_owned();
        ips += walk(&PathBuf::from(format!("{run}/nodes/{n}/ipam")))
            .iter()
            .filter(|p| {
                p.file_name()
                    .and_then(|x| x.to_str())
                    .is_some_and(|x| x.parse::<std::net::Ipv4Addr>().is_ok())
            })
            .count();
        dirs += std::fs::read_dir(format!("{run}/nodes/{n}/pods"))
            .into_iter()
            .flatten()
            .count();
    }
    Ok((mounts, veths, ips, dirs))
}

#[test]
fn create_delete_cycles_leak_nothing() -> anyhow::Result<()> {
    let c = Cluster::up_nodes("n-cycle", 2)?;
    let before = leftovers(&c)?;
    for round in 0..10 {
        let names: Vec<String> = (0..5).map(|i| format!("cy{round}-{i}")).collect();
        for n in &names {
            let pod = serde_json::json!({
                "apiVersion": "v1", "kind": "Pod", "metadata": {"name": n, "labels": {"cycle": "yes"}},
                "spec": {"terminationGracePeriodSeconds": 1, "containers": [{"name": "c", "image": "busybox", "command": ["sleep", "3600"]}]},
            });
            create(&c, &pod.to_string())?;
        }
        for n in &names {
            wait_running(&c, n)?;
        }
        kubectl(&c, &["delete", "pods", "-l", "cycle=yes", "--wait=true"])?;
    }
    let after = wait_for("the node state to be back to its baseline", 30, || {
        let now = leftovers(&c)?;
        Ok((now == before).then_some(now))
    })?;
    assert_eq!(
        after, before,
        "(netns mounts, veths, IPs, pod dirs) back to baseline"
    );
    Ok(())
}

#[test]
fn host_network_pods_use_the_node_namespace() -> anyhow::Result<()> {
    let c = Cluster::up_nodes("n-hostnet", 1)?;
    let node = format!("{}-worker", c.name);
    let pod = serde_json::json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "hn"},
        "spec": {"nodeName": node, "hostNetwork": true, "containers": [{"name": "c", "image": "busybox", "command": ["sleep", "3600"]}]},
    });
    create(&c, &pod.to_string())?;
    let p = wait_running(&c, "hn")?;
    let n = get_json(&c, &["get", "node", &node])?;
    let node_ip = n["status"]["addresses"][0]["address"]
        .as_str()
        .context("node ip")?;
    assert_eq!(
        p["status"]["podIP"].as_str(),
        Some(node_ip),
        "a hostNetwork pod has its node's IP"
    );
    assert!(!pod_netns(&c, &p).exists(), "and no namespace of its own");
    Ok(())
}

/// `kubectl logs` end to end: the API server proxies pods/log to the node's agent over TLS
/// with its kubelet client certificate; the agent reads the container's CRI log.
#[test]
fn kubectl_logs_reads_and_follows_container_output() -> anyhow::Result<()> {
    let c = Cluster::up_nodes("n-logs", 1)?;
    let node = format!("{}-worker", c.name);
    let talk =
        "echo one; echo oops >&2; echo two; for i in 1 2 3 4 5 6; do sleep 0.5; echo tick $i; done";
    let pod = serde_json::json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "chatty"},
        "spec": {"nodeName": node, "restartPolicy": "Never", "containers": [
            {"name": "talk", "image": "busybox", "command": ["sh", "-c", talk]},
            {"name": "sleep", "image": "busybox", "command": ["sleep", "3600"]},
        ]},
    });
    create(&c, &pod.to_string())?;
    let first = wait_for("the first lines", 60, || {
        Ok(kubectl(&c, &["logs", "chatty", "-c", "talk"])
            .ok()
            .filter(|s| s.contains("two")))
    })?;
    assert!(first.contains("oops\n"), "{first}");
    let stdout: Vec<&str> = first.lines().filter(|l| *l != "oops").collect();
    assert_eq!(stdout[..2], ["one", "two"], "{first}");

    // kubectl picks the first container itself (with a notice); the API asks for one.
    let err = kins_tests::fails(c.kubectl(
        &kubectls()[0],
        &["get", "--raw", "/api/v1/namespaces/default/pods/chatty/log"],
    )?)?;
    assert!(
        err.contains(
            "a container name must be specified for pod chatty, choose one of: [talk sleep]"
        ),
        "{err}"
    );
    let err = kins_tests::fails(c.kubectl(
        &kubectls()[0],
        &["logs", "chatty", "-c", "talk", "--previous"],
    )?)?;
    assert!(
        err.contains("previous terminated container \"talk\" in pod \"chatty\" not found"),
        "{err}"
    );
    let last = kubectl(
        &c,
        &["logs", "chatty", "-c", "talk", "--tail=1", "--timestamps"],
    )?;
    assert_eq!(last.lines().count(), 1, "{last}");
    let (ts, _) = last.split_once(' ').context("a timestamp")?;
    chrono::DateTime::parse_from_rfc3339(ts).with_context(|| format!("timestamp in {last}"))?;

    // Follow streams until the container exits, then ends by itself.
    let t0 = Instant::now();
    let followed = kubectl(&c, &["logs", "-f", "chatty", "-c", "talk"])?;
    assert!(followed.ends_with("tick 6\n"), "{followed}");
    assert!(t0.elapsed() < Duration::from_secs(20));
    let limited = kubectl(&c, &["logs", "chatty", "-c", "talk", "--limit-bytes=3"])?;
    assert!(limited.len() == 3, "{limited:?}");
    Ok(())
}

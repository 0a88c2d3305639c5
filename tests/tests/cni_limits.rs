//! Limits of the pod network (issue 13), as root with real namespaces and kubectl:
//!
//! - traffic shaping: with `--cni bridge` (the reference chain ends in `bandwidth`), a pod
//!   annotated `kubernetes.io/ingress-bandwidth` and `egress-bandwidth` gets the plugin's
//!   tc objects in its node (a tbf qdisc on its host-side veth for what it receives; an
//!   ingress qdisc there redirecting to an ifb device `bwp...` with a tbf for what it
//!   sends), its traffic to and from another pod is held near the rate while an
//!   unannotated pod's is not, and the objects go with the pod;
//! - IPAM exhaustion: a node whose pod IPAM range has five addresses (a `--cni-conf`
//!   list: `kins up` has no per-node CIDR size, every node gets a /24 of the cluster
//!   CIDR), with kins-bridge's own IPAM and with the reference host-local: pods beyond the
//!   five get a FailedCreatePodSandBox event carrying the IPAM error and wait without an
//!   IP; each deleted pod lets exactly one waiting pod start, with the freed address; no
//!   address is handed out twice and the IPAM holds exactly the running pods' addresses.
//!
//! Network safety: traffic goes only between pods of the test clusters (iperf3 runs in
//! the pods' own network namespaces).

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use kins_tests::cni::{host_veth, ipam_addresses, iperf_mbits, PodIperfServer};
use kins_tests::pods::{create, get_json, kubectl, wait_for, wait_running};
use kins_tests::services::node_exec;
use kins_tests::Cluster;
use serde_json::{json, Value};

// ---- traffic shaping ----

/// The rate both annotations ask for, as the annotation says it and in Mbit/s.
const RATE: &str = "10M";
const RATE_MBITS: f64 = 10.0;
/// How tc prints that rate.
const RATE_TC: &str = "rate 10Mbit";
/// iperf3: seconds measured, and seconds left out first. The kubelet's burst
/// (`math.MaxInt32` bits, which the agent passes too) makes a 256 MiB bucket: it lets that
/// much through at full speed before the rate holds, which takes a fraction of a second
/// at the unlimited pair's Gbit/s.
const IPERF_SECS: u64 = 3;
const IPERF_OMIT: u64 = 2;

/// A busybox pod that sleeps, on `node`, with `annotations`.
fn sleeper(name: &str, node: &str, annotations: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "annotations": annotations},
        "spec": {"nodeName": node, "terminationGracePeriodSeconds": 0,
                 "containers": [{"name": "c", "image": "busybox", "command": ["sleep", "3600"]}]}})
}

fn pod_ip(pod: &Value) -> Result<String> {
    Ok(pod["status"]["podIP"]
        .as_str()
        .with_context(|| format!("no podIP: {}", pod["status"]))?
        .to_string())
}

/// The `tc qdisc show` lines of `dev`.
fn qdiscs_of<'a>(qdiscs: &'a str, dev: &str) -> Vec<&'a str> {
    let needle = format!(" dev {dev} ");
    qdiscs
        .lines()
        .filter(|l| format!("{l} ").contains(&needle))
        .collect()
}

#[test]
fn bandwidth_annotations_shape_pod_traffic() -> Result<()> {
    let started = Instant::now();
    let c = Cluster::up_with("kbw", &["--nodes", "1", "--cni", "bridge"])?;
    let node = "kbw-worker";
    let limits = json!({"kubernetes.io/ingress-bandwidth": RATE,
                        "kubernetes.io/egress-bandwidth": RATE});
    let list = json!({"apiVersion": "v1", "kind": "List", "items": [
        sleeper("bw-lim", node, limits),
        sleeper("bw-free", node, json!({})),
        sleeper("bw-srv", node, json!({})),
    ]});
    create(&c, &list.to_string())?;
    let lim = wait_running(&c, "bw-lim")?;
    let free = wait_running(&c, "bw-free")?;
    let srv = wait_running(&c, "bw-srv")?;

    // What the bandwidth plugin made in the node.
    let lim_veth = host_veth(&c, &lim)?;
    let free_veth = host_veth(&c, &free)?;
    let qdiscs = node_exec(&c, node, &["tc", "qdisc", "show"])?;
    let on_veth = qdiscs_of(&qdiscs, &lim_veth);
    ensure!(
        on_veth
            .iter()
            .any(|l| l.starts_with("qdisc tbf ") && l.contains(RATE_TC)),
        "no tbf qdisc with {RATE_TC} on bw-lim's veth {lim_veth} (its ingress limit):\n{qdiscs}"
    );
    ensure!(
        on_veth.iter().any(|l| l.starts_with("qdisc ingress ")),
        "no ingress qdisc on bw-lim's veth {lim_veth} (its egress redirection):\n{qdiscs}"
    );
    let ifb = qdiscs
        .lines()
        .filter(|l| l.starts_with("qdisc tbf ") && l.contains(RATE_TC))
        .filter_map(|l| l.split_whitespace().skip_while(|w| *w != "dev").nth(1))
        .find(|d| d.starts_with("bwp"))
        .with_context(|| format!("no ifb device bwp... with a tbf qdisc at {RATE_TC}:\n{qdiscs}"))?
        .to_string();
    let filters = node_exec(
        &c,
        node,
        &["tc", "filter", "show", "dev", &lim_veth, "parent", "ffff:"],
    )?;
    ensure!(
        filters.contains("mirred") && filters.contains(&ifb),
        "bw-lim's veth {lim_veth} does not redirect what the pod sends to {ifb}:\n{filters}"
    );
    ensure!(
        !qdiscs_of(&qdiscs, &free_veth)
            .iter()
            .any(|l| l.starts_with("qdisc tbf ") || l.starts_with("qdisc ingress ")),
        "the unannotated bw-free's veth {free_veth} is shaped too:\n{qdiscs}"
    );

    // Throughput to and from bw-srv: bw-lim's is held near the rate, bw-free's is not.
    let srv_ip = pod_ip(&srv)?;
    let server = PodIperfServer::start(&c, &srv)?;
    for (what, reverse) in [
        ("egress (pod → bw-srv)", false),
        ("ingress (bw-srv → pod)", true),
    ] {
        let unlimited = iperf_mbits(&c, &free, &srv_ip, IPERF_SECS, IPERF_OMIT, reverse)
            .with_context(|| format!("bw-free {what}"))?;
        let limited = iperf_mbits(&c, &lim, &srv_ip, IPERF_SECS, IPERF_OMIT, reverse)
            .with_context(|| format!("bw-lim {what}"))?;
        eprintln!("{what}: bw-lim {limited:.2} Mbit/s, bw-free {unlimited:.2} Mbit/s");
        ensure!(
            limited < 0.5 * unlimited && limited < 2.0 * RATE_MBITS,
            "{what}: bw-lim ({RATE}) made {limited:.2} Mbit/s, bw-free {unlimited:.2} Mbit/s: want under half of bw-free's and under {} Mbit/s",
            2.0 * RATE_MBITS
        );
        ensure!(
            limited > 0.5 * RATE_MBITS,
            "{what}: bw-lim made {limited:.2} Mbit/s, far below its {RATE}"
        );
    }
    drop(server);

    // The shaping goes with the pod.
    kubectl(
        &c,
        &["delete", "pod", "bw-lim", "--wait=true", "--timeout=60s"],
    )?;
    let mut last = String::new();
    wait_for("bw-lim's veth, ifb and qdiscs to go", 30, || {
        let links = node_exec(&c, node, &["ip", "-br", "link", "show"])?;
        last = node_exec(&c, node, &["tc", "qdisc", "show"])? + &links;
        let gone = |dev: &str| {
            !links.lines().any(|l| {
                l.split_whitespace()
                    .next()
                    .and_then(|n| n.split('@').next())
                    == Some(dev)
            })
        };
        Ok((gone(&lim_veth) && gone(&ifb) && qdiscs_of(&last, &ifb).is_empty()).then_some(()))
    })
    .with_context(|| format!("after deleting bw-lim ({lim_veth}, {ifb}):\n{last}"))?;
    eprintln!("bandwidth test: {:.1}s", started.elapsed().as_secs_f64());
    Ok(())
}

// ---- IPAM exhaustion ----

/// The cluster CIDR of the IPAM clusters: exactly one node block, so the node's podCIDR
/// is known before `kins up` (the conflist template names addresses of it).
const IPAM_CLUSTER_CIDR: &str = "10.244.0.0/24";
/// The addresses the IPAM range holds: .2 to .6 (.1 is the gateway, cni0's address).
const IPAM_SIZE: usize = 5;
const IPAM_FIRST: Ipv4Addr = Ipv4Addr::new(10, 244, 0, 2);
const IPAM_LAST: Ipv4Addr = Ipv4Addr::new(10, 244, 0, 6);
/// Pods created beyond the range.
const EXTRA: usize = 2;
/// How long a pod without an address is watched to stay so (the agent retries every 2 s).
const STAYS_PENDING: Duration = Duration::from_secs(6);

/// kins-bridge with its own IPAM on a /29 of the node's /24: gateway .1, pods .2-.6. A 1.1
/// list, so the agent asks STATUS (code 50 when exhausted) before each ADD.
#[test]
fn ipam_exhaustion_kins_bridge() -> Result<()> {
    let conf = json!({"cniVersion": "1.1.0", "name": "kins", "plugins": [
        {"type": "kins-bridge", "bridge": "cni0",
         "ipam": {"type": "kins-host-local", "subnet": "10.244.0.0/29", "dataDir": "${IPAM_DIR}"}}]});
    ipam_exhaustion(
        "kipam",
        &conf,
        &["kins-bridge", "no free address left in 10.244.0.0/29"],
    )
}

/// The reference bridge with host-local on the node's podCIDR, limited to .2-.6 by
/// rangeStart and rangeEnd. A 1.0 list (Debian's plugins stop there): no STATUS, ADD
/// fails.
#[test]
fn ipam_exhaustion_host_local() -> Result<()> {
    let conf = json!({"cniVersion": "1.0.0", "name": "kins", "plugins": [
        {"type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": false,
         "ipam": {"type": "host-local", "dataDir": "${IPAM_DIR}", "routes": [{"dst": "0.0.0.0/0"}],
                  "ranges": [[{"subnet": "${POD_CIDR}", "rangeStart": IPAM_FIRST.to_string(),
                               "rangeEnd": IPAM_LAST.to_string()}]]}}]});
    ipam_exhaustion(
        "kipamh",
        &conf,
        &["bridge", "no IP addresses available in range set"],
    )
}

/// A pod that sleeps and leaves at once on SIGTERM. It has a grace period, so the agent
/// deletes the object only after its teardown (CNI DEL included): `kubectl delete --wait`
/// returns when the address is free.
fn ipam_pod(name: &str, node: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": {"ipam": "t"}},
        "spec": {"nodeName": node, "terminationGracePeriodSeconds": 10,
                 "containers": [{"name": "c", "image": "busybox", "command":
                     ["sh", "-c", "trap 'exit 0' TERM; sleep 3600 & wait"]}]}})
}

fn in_cidr(ip: Ipv4Addr, cidr: &str) -> Result<bool> {
    let (base, len) = cidr.split_once('/').context("CIDR without /")?;
    let base: Ipv4Addr = base.parse()?;
    let len: u32 = len.parse()?;
    let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
    Ok(u32::from(ip) & mask == u32::from(base) & mask)
}

/// The pods of the test (label ipam=t): name → (phase, podIP).
fn ipam_pods(c: &Cluster) -> Result<Vec<(String, String, Option<Ipv4Addr>)>> {
    let v = get_json(c, &["get", "pods", "-l", "ipam=t"])?;
    v["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            let name = p["metadata"]["name"].as_str().context("name")?.to_string();
            let phase = p["status"]["phase"].as_str().unwrap_or("").to_string();
            let ip = match p["status"]["podIP"].as_str() {
                Some(s) => Some(s.parse().with_context(|| format!("{name}'s podIP {s}"))?),
                None => None,
            };
            Ok((name, phase, ip))
        })
        .collect()
}

/// Every Running pod has an address, no two the same, inside the node's podCIDR and the
/// range; no pod that is not Running has one; the IPAM holds exactly the Running pods'
/// addresses. The Running pods' names, sorted, with their addresses.
fn check_addresses(c: &Cluster, node: &str, cidr: &str) -> Result<Vec<(String, Ipv4Addr)>> {
    let pods = ipam_pods(c)?;
    let mut running = Vec::new();
    for (name, phase, ip) in &pods {
        match (phase.as_str(), ip) {
            ("Running", Some(ip)) => {
                ensure!(
                    in_cidr(*ip, cidr)? && (IPAM_FIRST..=IPAM_LAST).contains(ip),
                    "{name} has {ip}: outside the node's podCIDR {cidr} or the range {IPAM_FIRST}-{IPAM_LAST}"
                );
                running.push((name.clone(), *ip));
            }
            ("Running", None) => bail!("{name} runs without a podIP"),
            (_, Some(ip)) => bail!("{name} is {phase} but has the podIP {ip}"),
            (_, None) => {}
        }
    }
    running.sort();
    let ips: Vec<Ipv4Addr> = running.iter().map(|(_, ip)| *ip).collect();
    let distinct: BTreeSet<Ipv4Addr> = ips.iter().copied().collect();
    ensure!(
        distinct.len() == ips.len(),
        "an address handed out twice: {running:?}"
    );
    let held = ipam_addresses(c, node);
    ensure!(
        held == distinct.iter().copied().collect::<Vec<_>>(),
        "the IPAM holds {held:?}, the Running pods have {running:?}"
    );
    Ok(running)
}

/// The pod's FailedCreatePodSandBox events.
fn sandbox_events(c: &Cluster, pod: &str) -> Result<Vec<Value>> {
    let ev = get_json(
        c,
        &[
            "get",
            "events",
            "--field-selector",
            &format!("involvedObject.name={pod},reason=FailedCreatePodSandBox"),
        ],
    )?;
    Ok(ev["items"].as_array().cloned().unwrap_or_default())
}

/// `waiting` (names) stay not Running, without an IP, for STAYS_PENDING; the addresses
/// stay as [`check_addresses`] wants them meanwhile.
fn stay_pending(c: &Cluster, node: &str, cidr: &str, waiting: &[String]) -> Result<()> {
    let until = Instant::now() + STAYS_PENDING;
    while Instant::now() < until {
        check_addresses(c, node, cidr)?;
        for (name, phase, ip) in ipam_pods(c)? {
            if waiting.contains(&name) {
                ensure!(
                    phase == "Pending" && ip.is_none(),
                    "{name} should wait for an address, but is {phase} with {ip:?}"
                );
            }
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    Ok(())
}

/// A one-node cluster whose IPAM range is [IPAM_FIRST, IPAM_LAST] by the conflist
/// template `conf`; `want` are what each waiting pod's event message must contain.
fn ipam_exhaustion(name: &str, conf: &Value, want: &[&str]) -> Result<()> {
    let started = Instant::now();
    let dir = tempfile::Builder::new()
        .prefix("kins-test-cni-")
        .tempdir()?;
    let path = dir.path().join("small.conflist");
    std::fs::write(&path, serde_json::to_string_pretty(conf)?)?;
    let path_s = path.to_str().context("conflist path")?;
    let c = Cluster::up_with(
        name,
        &[
            "--nodes",
            "1",
            "--cluster-cidr",
            IPAM_CLUSTER_CIDR,
            "--cni-conf",
            path_s,
        ],
    )?;
    let node = format!("{name}-worker");
    let cidr = get_json(&c, &["get", "node", &node])?["spec"]["podCIDR"]
        .as_str()
        .context("the node has no podCIDR")?
        .to_string();
    ensure!(
        cidr == IPAM_CLUSTER_CIDR,
        "the node's podCIDR is {cidr}, want {IPAM_CLUSTER_CIDR}"
    );

    // The range filled.
    let fill: Vec<String> = (0..IPAM_SIZE).map(|i| format!("fill-{i}")).collect();
    let list = json!({"apiVersion": "v1", "kind": "List",
        "items": fill.iter().map(|n| ipam_pod(n, &node)).collect::<Vec<_>>()});
    create(&c, &list.to_string())?;
    for n in &fill {
        wait_running(&c, n)?;
    }
    let running = check_addresses(&c, &node, &cidr)?;
    ensure!(
        running.len() == IPAM_SIZE,
        "{IPAM_SIZE} pods created, Running: {running:?}"
    );

    // Pods beyond it: an event with the IPAM's error each, and they wait.
    let mut waiting: Vec<String> = (0..EXTRA).map(|i| format!("extra-{i}")).collect();
    let list = json!({"apiVersion": "v1", "kind": "List",
        "items": waiting.iter().map(|n| ipam_pod(n, &node)).collect::<Vec<_>>()});
    create(&c, &list.to_string())?;
    for n in &waiting {
        let event = wait_for(
            &format!("a FailedCreatePodSandBox event of {n}"),
            60,
            || Ok(sandbox_events(&c, n)?.into_iter().next()),
        )?;
        let msg = event["message"].as_str().unwrap_or("");
        ensure!(
            event["type"] == "Warning" && want.iter().all(|w| msg.contains(w)),
            "{n}'s event should be a Warning naming {want:?}: {event}"
        );
        eprintln!("{name}: {n}: {msg}");
        let pod = get_json(&c, &["get", "pod", n])?;
        let reason = &pod["status"]["containerStatuses"][0]["state"]["waiting"]["reason"];
        ensure!(
            reason.is_null() || reason == "ContainerCreating",
            "{n} should wait in ContainerCreating: {}",
            pod["status"]
        );
    }
    stay_pending(&c, &node, &cidr, &waiting)?;

    // Each deleted pod lets exactly one waiting pod start, with the address it freed.
    for (gone, freed) in running.iter().take(EXTRA) {
        kubectl(&c, &["delete", "pod", gone, "--wait=true", "--timeout=60s"])?;
        let (now, ip) = wait_for(&format!("a waiting pod to take {freed}"), 60, || {
            Ok(ipam_pods(&c)?
                .into_iter()
                .find(|(n, phase, _)| waiting.contains(n) && phase == "Running")
                .map(|(n, _, ip)| (n, ip)))
        })?;
        wait_running(&c, &now)?;
        ensure!(
            ip == Some(*freed),
            "{now} started with {ip:?}; the only free address was {gone}'s {freed}"
        );
        waiting.retain(|n| *n != now);
        eprintln!(
            "{name}: {gone} deleted, {now} Running with {freed} at {:.1}s",
            started.elapsed().as_secs_f64()
        );
        stay_pending(&c, &node, &cidr, &waiting)?;
    }
    ensure!(waiting.is_empty(), "still waiting: {waiting:?}");
    let running = check_addresses(&c, &node, &cidr)?;
    ensure!(
        running.len() == IPAM_SIZE,
        "after the swaps, Running: {running:?}"
    );
    eprintln!(
        "{name}: IPAM exhaustion test {:.1}s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

//! Services, as root with real nftables: EndpointSlices follow pods, the node's proxy
//! translates ClusterIPs (from pods on any node and from the node itself, keeping the
//! client's IP) and NodePorts (from the host, on every node), a service without endpoints
//! refuses at once, a pod reaches itself through its own service, readiness probes gate
//! endpoints, and the proxy's table is complete again after its agent is killed.

use std::process::Command;

use anyhow::{ensure, Context, Result};
use kins_tests::pods::{create, get_json, kubectl, wait_for, wait_running};
use kins_tests::services::{
    client_pod, curl_host, curl_in, node_ip, service, services_basic, slice_ips, strip_mapped,
    web_pod,
};
use kins_tests::{ok, Cluster};
use serde_json::{json, Value};

#[test]
fn clusterip_nodeport_and_no_endpoints() -> Result<()> {
    let c = Cluster::up_nodes("sv-basic", 2)?;
    services_basic(&c, "sv-basic-worker", "sv-basic-worker2")
}

#[test]
fn readiness_gates_endpoints_and_the_table_survives_agent_kill_9() -> Result<()> {
    let c = Cluster::up_nodes("sv-ready", 1)?;
    let node = "sv-ready-worker";
    create(
        &c,
        &service(
            "web",
            json!({"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": "http"}]}),
        ),
    )?;
    // Ready only while /www/ready exists.
    let mut pod: Value = serde_json::from_str(&web_pod("gated", node, json!({"app": "web"})))?;
    pod["spec"]["containers"][0]["readinessProbe"] = json!({
        "httpGet": {"path": "/ready", "port": "http"}, "periodSeconds": 1, "failureThreshold": 1,
    });
    create(&c, &pod.to_string())?;
    let p = wait_for("the pod to run, not ready", 60, || {
        let p = get_json(&c, &["get", "pod", "gated"])?;
        let s = &p["status"]["containerStatuses"][0];
        Ok((s["state"]["running"].is_object() && s["ready"] == false).then_some(p))
    })?;
    ensure!(
        slice_ips(&c, "web")?.is_empty(),
        "a not-ready pod is an endpoint"
    );
    let pid = kins_tests::pods::container_pid(&c, &p, "web")?;
    std::fs::write(format!("/proc/{pid}/root/www/ready"), "yes")?;
    let ip = p["status"]["podIP"].as_str().context("podIP")?.to_string();
    wait_for("the ready pod in the slice", 30, || {
        Ok((slice_ips(&c, "web")? == vec![ip.clone()]).then_some(()))
    })?;
    std::fs::remove_file(format!("/proc/{pid}/root/www/ready"))?;
    wait_for("the pod out of the slice", 30, || {
        Ok(slice_ips(&c, "web")?.is_empty().then_some(()))
    })?;
    let ev = kubectl(
        &c,
        &[
            "get",
            "events",
            "--field-selector",
            "involvedObject.name=gated",
        ],
    )?;
    ensure!(ev.contains("Readiness probe failed"), "{ev}");
    // The proxy's table after kill -9 of the agent (it runs the proxy): complete again.
    let list = |c: &Cluster| -> Result<String> {
        ok(c.kins(&[
            "node",
            "exec",
            node,
            "--name",
            "sv-ready",
            "--",
            "nft",
            "list",
            "table",
            "ip",
            "kins_proxy",
        ])?)
    };
    let svc = get_json(&c, &["get", "svc", "web"])?;
    let cip = svc["spec"]["clusterIP"]
        .as_str()
        .context("clusterIP")?
        .to_string();
    wait_for("the service in the table", 30, || {
        Ok(list(&c)?.contains(&cip).then_some(()))
    })?;
    let agent = lab::procs::find("sv-ready")
        .into_iter()
        .find(|p| p.role == "agent")
        .context("no agent")?;
    ok(Command::new("kill")
        .args(["-KILL", &agent.pid.to_string()])
        .output()?)?;
    ensure!(list(&c)?.contains(&cip), "the table went with the agent");
    kubectl(
        &c,
        &["create", "service", "clusterip", "later", "--tcp=81:8080"],
    )?;
    let later = get_json(&c, &["get", "svc", "later"])?;
    let lip = later["spec"]["clusterIP"]
        .as_str()
        .context("clusterIP")?
        .to_string();
    wait_for("the restarted proxy to program a new service", 60, || {
        let t = list(&c)?;
        Ok((t.contains(&cip) && t.contains(&lip) && t.contains("default/later")).then_some(()))
    })?;
    Ok(())
}

#[test]
fn session_affinity_and_type_changes() -> Result<()> {
    let c = Cluster::up_nodes("sv-aff", 2)?;
    let (n1, n2) = ("sv-aff-worker", "sv-aff-worker2");
    create(
        &c,
        &service(
            "web",
            json!({"selector": {"app": "web"}, "sessionAffinity": "ClientIP",
                   "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}),
        ),
    )?;
    create(&c, &web_pod("web-1", n1, json!({"app": "web"})))?;
    create(&c, &web_pod("web-2", n2, json!({"app": "web"})))?;
    create(&c, &client_pod("client", n1))?;
    wait_running(&c, "web-1")?;
    wait_running(&c, "web-2")?;
    let client = wait_running(&c, "client")?;
    wait_for("both pods in the slice", 30, || {
        Ok((slice_ips(&c, "web")?.len() == 2).then_some(()))
    })?;
    let svc = get_json(&c, &["get", "svc", "web"])?;
    let cip = svc["spec"]["clusterIP"]
        .as_str()
        .context("clusterIP")?
        .to_string();
    let names = |n: usize| -> Result<std::collections::BTreeSet<String>> {
        let mut out = std::collections::BTreeSet::new();
        for _ in 0..n {
            let (code, body) = curl_in(&c, &client, &format!("http://{cip}/cgi-bin/name"))?;
            ensure!(code == 0, "curl exit {code}");
            out.insert(body);
        }
        Ok(out)
    };
    // ClientIP affinity: every request from the client goes to the same pod.
    let sticky = names(12)?;
    ensure!(sticky.len() == 1, "affinity did not hold: {sticky:?}");
    // Switched off live: both pods answer again.
    kubectl(
        &c,
        &[
            "patch",
            "svc",
            "web",
            "-p",
            r#"{"spec":{"sessionAffinity":"None"}}"#,
        ],
    )?;
    wait_for("both pods to answer without affinity", 60, || {
        Ok((names(10)?.len() == 2).then_some(()))
    })?;
    // ClusterIP → NodePort: the host reaches it on a node; → ClusterIP: the port is gone.
    kubectl(
        &c,
        &[
            "patch",
            "svc",
            "web",
            "-p",
            r#"{"spec":{"type":"NodePort"}}"#,
        ],
    )?;
    let svc = get_json(&c, &["get", "svc", "web"])?;
    let np = svc["spec"]["ports"][0]["nodePort"]
        .as_i64()
        .context("nodePort")?;
    let ip = node_ip(&c, n2)?;
    wait_for("the NodePort to answer", 30, || {
        let (code, body) = curl_host(&format!("http://{ip}:{np}/healthz"))?;
        Ok((code == 0 && body == "ok").then_some(()))
    })?;
    kubectl(
        &c,
        &[
            "patch",
            "svc",
            "web",
            "--type=json",
            "-p",
            r#"[{"op":"replace","path":"/spec/type","value":"ClusterIP"},{"op":"remove","path":"/spec/ports/0/nodePort"}]"#,
        ],
    )?;
    wait_for("the NodePort to be refused", 30, || {
        let (code, _) = curl_host(&format!("http://{ip}:{np}/healthz"))?;
        Ok((code == 7).then_some(()))
    })?;
    // The ClusterIP still works after the changes.
    let (code, body) = curl_in(&c, &client, &format!("http://{cip}/healthz"))?;
    ensure!(
        code == 0 && body == "ok",
        "ClusterIP after type changes: {code} {body}"
    );
    Ok(())
}

/// A pod serving HTTP (busybox httpd, /cgi-bin/name as in [`web_pod`]) on each of `ports`,
/// which are declared as named container ports.
fn multi_port_pod(name: &str, node: &str, labels: Value, ports: &[(&str, u16)]) -> String {
    let mut script = "mkdir -p /www/cgi-bin && printf '#!/bin/sh\\necho Content-Type: text/plain\\necho\\nhostname\\n' > /www/cgi-bin/name && chmod +x /www/cgi-bin/* && echo ok > /www/healthz".to_string();
    for (_, p) in ports {
        script.push_str(&format!(" && httpd -p {p} -h /www"));
    }
    script.push_str(" && exec sleep 1000000");
    let declared: Vec<Value> = ports
        .iter()
        .map(|(n, p)| json!({"name": n, "containerPort": p}))
        .collect();
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": labels},
        "spec": {"nodeName": node, "terminationGracePeriodSeconds": 0, "containers": [{
            "name": "web", "image": "busybox", "command": ["sh", "-c", script], "ports": declared,
        }]},
    })
    .to_string()
}

fn cluster_ip(c: &Cluster, svc: &str) -> Result<String> {
    let svc = get_json(c, &["get", "svc", svc])?;
    Ok(svc["spec"]["clusterIP"]
        .as_str()
        .context("clusterIP")?
        .to_string())
}

/// `kubectl patch svc NAME --type=merge -p PATCH`.
fn patch_svc(c: &Cluster, name: &str, patch: &str) -> Result<String> {
    kubectl(c, &["patch", "svc", name, "--type=merge", "-p", patch])
}

/// Waits until `url` (a /healthz) answers "ok" from `client`.
fn wait_healthy(c: &Cluster, client: &Value, url: &str, what: &str) -> Result<()> {
    wait_for(what, 30, || {
        let (code, body) = curl_in(c, client, url)?;
        Ok((code == 0 && body == "ok").then_some(()))
    })
}

/// The pod names that answer `url` from `client` over `tries` requests (all must succeed).
fn answering(
    c: &Cluster,
    client: &Value,
    url: &str,
    tries: usize,
) -> Result<std::collections::BTreeSet<String>> {
    let mut out = std::collections::BTreeSet::new();
    for _ in 0..tries {
        let (code, body) = curl_in(c, client, url)?;
        ensure!(code == 0, "curl {url}: exit {code}");
        out.insert(body);
    }
    Ok(out)
}

/// A UDP server in a pod's network namespace (the host's python3 run there): it answers
/// every datagram on `port` with `reply`. Killed when dropped.
struct UdpServer(std::process::Child);

impl Drop for UdpServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn udp_server(c: &Cluster, pod: &Value, port: u16, reply: &str) -> Result<UdpServer> {
    let script = format!(
        "import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\ns.bind(('0.0.0.0',{port}))\nwhile True:\n d,a=s.recvfrom(512)\n s.sendto(b'{reply}',a)\n"
    );
    let child = Command::new("nsenter")
        .arg(format!(
            "--net={}",
            kins_tests::pods::pod_netns(c, pod).display()
        ))
        .args(["python3", "-c", &script])
        .spawn()
        .context("starting the UDP server")?;
    Ok(UdpServer(child))
}

/// One UDP question from a pod's network namespace, from source port `sport`: the
/// answer, or "" when none came within 2 s.
fn udp_ask(c: &Cluster, pod: &Value, dst: &str, port: u16, sport: u16) -> Result<String> {
    let script = format!(
        "import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\ns.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\ns.bind(('0.0.0.0',{sport}))\ns.settimeout(2)\ns.sendto(b'q',('{dst}',{port}))\ntry:\n print(s.recv(512).decode())\nexcept Exception:\n print('')\n"
    );
    Ok(
        kins_tests::pods::in_pod(c, pod, &["python3", "-c", &script])?
            .trim()
            .to_string(),
    )
}

#[test]
fn tcp_and_udp_on_one_port_named_ports_and_stale_udp_flows() -> Result<()> {
    let c = Cluster::up_nodes("sv-udp", 2)?;
    let (n1, n2) = ("sv-udp-worker", "sv-udp-worker2");
    // One port number, two protocols: 53/TCP and 53/UDP both to 5353.
    create(
        &c,
        &service(
            "dns",
            json!({"selector": {"app": "dns"}, "ports": [
                {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 5353},
                {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 5353}]}),
        ),
    )?;
    // Named target ports resolved per pod: "web" is 8080 in one pod and 8081 in the other.
    create(
        &c,
        &service(
            "multi",
            json!({"selector": {"app": "multi"}, "ports": [
                {"name": "http", "port": 80, "targetPort": "web"},
                {"name": "alt", "port": 81, "targetPort": 9090}]}),
        ),
    )?;
    create(
        &c,
        &multi_port_pod("srv-a", n1, json!({"app": "dns"}), &[("dns-tcp", 5353)]),
    )?;
    create(
        &c,
        &multi_port_pod(
            "multi-1",
            n1,
            json!({"app": "multi"}),
            &[("web", 8080), ("alt", 9090)],
        ),
    )?;
    create(
        &c,
        &multi_port_pod(
            "multi-2",
            n2,
            json!({"app": "multi"}),
            &[("web", 8081), ("alt", 9090)],
        ),
    )?;
    create(&c, &client_pod("client", n2))?;
    let srv_a = wait_running(&c, "srv-a")?;
    wait_running(&c, "multi-1")?;
    wait_running(&c, "multi-2")?;
    let client = wait_running(&c, "client")?;
    let _udp_a = udp_server(&c, &srv_a, 5353, "srv-a")?;
    let dns = cluster_ip(&c, "dns")?;
    let multi = cluster_ip(&c, "multi")?;
    wait_for("the multi-port slices", 30, || {
        Ok((slice_ips(&c, "multi")?.len() == 2).then_some(()))
    })?;
    // The named port went to each pod's own number: two slices, 8080 and 8081.
    let slices = get_json(
        &c,
        &[
            "get",
            "endpointslices",
            "-l",
            "kubernetes.io/service-name=multi",
        ],
    )?;
    let mut http_ports: Vec<i64> = slices["items"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|s| s["ports"].as_array().cloned().unwrap_or_default())
        .filter(|p| p["name"] == "http")
        .filter_map(|p| p["port"].as_i64())
        .collect();
    http_ports.sort();
    ensure!(
        http_ports == [8080, 8081],
        "named port numbers: {http_ports:?}"
    );
    for port in [80, 81] {
        let url = format!("http://{multi}:{port}/cgi-bin/name");
        wait_for(&format!("both pods behind port {port}"), 30, || {
            Ok((answering(&c, &client, &url, 10)?.len() == 2).then_some(()))
        })?;
    }
    // TCP and UDP on the same service port reach the same pod, each its own protocol.
    let (code, body) = curl_in(&c, &client, &format!("http://{dns}:53/cgi-bin/name"))?;
    ensure!(code == 0 && body == "srv-a", "TCP 53: {code} {body}");
    wait_for("UDP 53 to answer", 30, || {
        Ok((udp_ask(&c, &client, &dns, 53, 40053)? == "srv-a").then_some(()))
    })?;
    // A second endpoint comes, the first goes: the client's flow (same source port, so the
    // same conntrack entry) must move to the new endpoint, not stay with the removed one.
    create(
        &c,
        &multi_port_pod("srv-b", n1, json!({"app": "dns"}), &[("dns-tcp", 5353)]),
    )?;
    let srv_b = wait_running(&c, "srv-b")?;
    let _udp_b = udp_server(&c, &srv_b, 5353, "srv-b")?;
    let ip_b = srv_b["status"]["podIP"]
        .as_str()
        .context("podIP")?
        .to_string();
    wait_for("srv-b in the slice", 30, || {
        Ok((slice_ips(&c, "dns")?.len() == 2).then_some(()))
    })?;
    ensure!(
        udp_ask(&c, &client, &dns, 53, 40053)? == "srv-a",
        "the flow stays while srv-a lives"
    );
    kubectl(&c, &["delete", "pod", "srv-a", "--wait=true"])?;
    wait_for("srv-a out of the slice", 30, || {
        Ok((slice_ips(&c, "dns")? == vec![ip_b.clone()]).then_some(()))
    })?;
    // Asking repeatedly from the same port would keep a stale entry alive for ever.
    wait_for("the UDP flow to move to srv-b", 20, || {
        Ok((udp_ask(&c, &client, &dns, 53, 40053)? == "srv-b").then_some(()))
    })?;
    Ok(())
}

/// The host's own address towards `ip` (what a server sees when the host is the client).
fn host_source_for(ip: &str) -> Result<String> {
    let out = ok(Command::new("ip")
        .args(["-o", "route", "get", ip])
        .output()?)?;
    let mut words = out.split_whitespace();
    while let Some(w) = words.next() {
        if w == "src" {
            return words
                .next()
                .map(str::to_string)
                .context("src without address");
        }
    }
    anyhow::bail!("no src in {out}")
}

#[test]
fn external_and_internal_traffic_policy_local() -> Result<()> {
    let c = Cluster::up_nodes("sv-local", 2)?;
    let (n1, n2) = ("sv-local-worker", "sv-local-worker2");
    let http = json!([{"name": "http", "port": 80, "targetPort": "http"}]);
    create(
        &c,
        &service(
            "local",
            json!({"type": "NodePort", "externalTrafficPolicy": "Local",
                   "selector": {"app": "web"}, "ports": http}),
        ),
    )?;
    create(
        &c,
        &service(
            "cluster",
            json!({"type": "NodePort", "selector": {"app": "web"}, "ports": http}),
        ),
    )?;
    create(
        &c,
        &service(
            "internal",
            json!({"internalTrafficPolicy": "Local", "selector": {"app": "web"}, "ports": http}),
        ),
    )?;
    // The only endpoint is on node 1.
    create(&c, &web_pod("web-1", n1, json!({"app": "web"})))?;
    create(&c, &client_pod("client-1", n1))?;
    create(&c, &client_pod("client-2", n2))?;
    wait_running(&c, "web-1")?;
    let client_1 = wait_running(&c, "client-1")?;
    let client_2 = wait_running(&c, "client-2")?;
    wait_for("web-1 in the slices", 30, || {
        Ok((slice_ips(&c, "local")?.len() == 1
            && slice_ips(&c, "cluster")?.len() == 1
            && slice_ips(&c, "internal")?.len() == 1)
            .then_some(()))
    })?;
    let node_port = |svc: &str| -> Result<i64> {
        let s = get_json(&c, &["get", "svc", svc])?;
        s["spec"]["ports"][0]["nodePort"]
            .as_i64()
            .context("nodePort")
    };
    let (ip1, ip2) = (node_ip(&c, n1)?, node_ip(&c, n2)?);
    let host = host_source_for(&ip1)?;
    // externalTrafficPolicy Local: the node with the endpoint answers and the pod sees the
    // host's own address; the node without one does not answer.
    let np = node_port("local")?;
    let (code, seen) = wait_for("the Local NodePort on node 1", 30, || {
        let r = curl_host(&format!("http://{ip1}:{np}/cgi-bin/ip"))?;
        Ok((r.0 == 0).then_some(r))
    })?;
    ensure!(
        code == 0 && strip_mapped(&seen) == host,
        "eTP Local kept {seen}, the client was {host}"
    );
    // (dropped, as kube-proxy does: curl times out, exit 28)
    let (code, _) = curl_host(&format!("http://{ip2}:{np}/healthz"))?;
    ensure!(
        code == 28,
        "node 2 has no local endpoint: curl exit {code}, want 28"
    );
    // externalTrafficPolicy Cluster: node 2 forwards to node 1, masquerading the client.
    let np = node_port("cluster")?;
    let (code, seen) = wait_for("the Cluster NodePort on node 2", 30, || {
        let r = curl_host(&format!("http://{ip2}:{np}/cgi-bin/ip"))?;
        Ok((r.0 == 0).then_some(r))
    })?;
    ensure!(
        code == 0 && strip_mapped(&seen) != host,
        "eTP Cluster through another node should not keep the client's address: {seen}"
    );
    // internalTrafficPolicy Local: only clients on node 1 reach it.
    let cip = cluster_ip(&c, "internal")?;
    let (code, body) = curl_in(&c, &client_1, &format!("http://{cip}/cgi-bin/name"))?;
    ensure!(
        code == 0 && body == "web-1",
        "iTP Local from node 1: {code} {body}"
    );
    // (no local endpoint: refused at once, exit 7, as a service without endpoints)
    let (code, _) = curl_in(&c, &client_2, &format!("http://{cip}/healthz"))?;
    ensure!(code == 7, "iTP Local from node 2: curl exit {code}, want 7");
    Ok(())
}

#[test]
fn affinity_expires_ignored_services_and_externalname() -> Result<()> {
    let c = Cluster::up_nodes("sv-exp", 2)?;
    let (n1, n2) = ("sv-exp-worker", "sv-exp-worker2");
    let http = json!([{"name": "http", "port": 80, "targetPort": "http"}]);
    create(
        &c,
        &service(
            "sticky",
            json!({"selector": {"app": "web"}, "sessionAffinity": "ClientIP",
                   "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 3}}, "ports": http}),
        ),
    )?;
    for (name, label) in [
        ("other", "service.kubernetes.io/service-proxy-name"),
        ("headless-label", "service.kubernetes.io/headless"),
    ] {
        create(
            &c,
            &json!({"apiVersion": "v1", "kind": "Service",
                    "metadata": {"name": name, "labels": {label: "someone-else"}},
                    "spec": {"selector": {"app": "web"}, "ports": http}})
            .to_string(),
        )?;
    }
    create(&c, &web_pod("web-1", n1, json!({"app": "web"})))?;
    create(&c, &web_pod("web-2", n2, json!({"app": "web"})))?;
    create(&c, &client_pod("client", n1))?;
    wait_running(&c, "web-1")?;
    wait_running(&c, "web-2")?;
    let client = wait_running(&c, "client")?;
    wait_for("both pods in the slices", 30, || {
        Ok(
            (slice_ips(&c, "sticky")?.len() == 2 && slice_ips(&c, "other")?.len() == 2)
                .then_some(()),
        )
    })?;
    // Affinity holds while the client keeps coming, and expires after 3 s of quiet.
    let sticky = cluster_ip(&c, "sticky")?;
    let url = format!("http://{sticky}/cgi-bin/name");
    let first = wait_for("the sticky service", 30, || {
        let r = curl_in(&c, &client, &url)?;
        Ok((r.0 == 0).then_some(r.1))
    })?;
    let held = answering(&c, &client, &url, 10)?;
    ensure!(
        held.len() == 1 && held.contains(&first),
        "affinity did not hold: {first} then {held:?}"
    );
    let mut seen = held;
    for _ in 0..20 {
        std::thread::sleep(std::time::Duration::from_millis(3500));
        seen.extend(answering(&c, &client, &url, 1)?);
        if seen.len() == 2 {
            break;
        }
    }
    ensure!(seen.len() == 2, "affinity never expired: {seen:?}");
    // Services for another proxy, or labelled headless, are not ours: their ClusterIPs
    // stay unanswered (refused, as any untranslated service address).
    for svc in ["other", "headless-label"] {
        let ip = cluster_ip(&c, svc)?;
        let (code, _) = curl_in(&c, &client, &format!("http://{ip}/healthz"))?;
        ensure!(
            code == 7,
            "{svc}: curl exit {code}, the proxy should ignore it"
        );
    }
    // The label removed: the service is ours, live.
    kubectl(
        &c,
        &[
            "label",
            "svc",
            "other",
            "service.kubernetes.io/service-proxy-name-",
        ],
    )?;
    let other = cluster_ip(&c, "other")?;
    let url = format!("http://{other}/healthz");
    wait_healthy(&c, &client, &url, "the unlabelled service to answer")?;
    // ClusterIP → ExternalName: the address is released and refused; and back.
    patch_svc(
        &c,
        "other",
        r#"{"spec":{"type":"ExternalName","externalName":"web.example.test","clusterIP":null,"clusterIPs":null,"selector":null}}"#,
    )?;
    let svc = get_json(&c, &["get", "svc", "other"])?;
    ensure!(
        svc["spec"]["externalName"] == "web.example.test" && svc["spec"]["clusterIP"].is_null(),
        "ExternalName service: {}",
        svc["spec"]
    );
    wait_for("the old ClusterIP to be refused", 30, || {
        let (code, _) = curl_in(&c, &client, &url)?;
        Ok((code == 7).then_some(()))
    })?;
    patch_svc(
        &c,
        "other",
        r#"{"spec":{"type":"ClusterIP","externalName":null,"selector":{"app":"web"}}}"#,
    )?;
    let back = cluster_ip(&c, "other")?;
    let url = format!("http://{back}/healthz");
    wait_healthy(
        &c,
        &client,
        &url,
        "the service to answer again as ClusterIP",
    )?;
    Ok(())
}

//! Services, as root with real nftables: EndpointSlices follow pods, the node's proxy
//! translates ClusterIPs (from pods on any node and from the node itself, keeping the
//! client's IP) and NodePorts (from the host, on every node), a service without endpoints
//! refuses at once, a pod reaches itself through its own service, readiness probes gate
//! endpoints, and the proxy's table is complete again after its agent is killed.

use std::process::Command;

use anyhow::{ensure, Context, Result};
use kins_tests::pods::{create, get_json, kubectl, wait_for, wait_running};
use kins_tests::{ok, Cluster};
use serde_json::{json, Value};

/// A pod answering HTTP on 8080 (busybox httpd); /cgi-bin/ip prints the client address
/// the server saw and /cgi-bin/name the pod's name.
fn web_pod(name: &str, node: &str, labels: Value) -> String {
    let script = "mkdir -p /www/cgi-bin && printf '#!/bin/sh\\necho Content-Type: text/plain\\necho\\necho $REMOTE_ADDR\\n' > /www/cgi-bin/ip && printf '#!/bin/sh\\necho Content-Type: text/plain\\necho\\nhostname\\n' > /www/cgi-bin/name && chmod +x /www/cgi-bin/* && echo ok > /www/healthz && exec httpd -f -p 8080 -h /www";
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": labels},
        "spec": {"nodeName": node, "terminationGracePeriodSeconds": 0, "containers": [{
            "name": "web", "image": "busybox", "command": ["sh", "-c", script],
            "ports": [{"name": "http", "containerPort": 8080}],
        }]},
    })
    .to_string()
}

fn client_pod(name: &str, node: &str) -> String {
    json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
        "spec": {"nodeName": node, "terminationGracePeriodSeconds": 0,
                 "containers": [{"name": "c", "image": "curlimages/curl", "command": ["sleep", "3600"]}]},
    })
    .to_string()
}

/// curl from inside a pod's container; (exit code, body).
fn curl_in(c: &Cluster, pod: &Value, url: &str) -> Result<(i32, String)> {
    let pid = kins_tests::pods::container_pid(c, pod, container_name(pod))?;
    let out = Command::new("nsenter")
        .args(["-t", &pid.to_string(), "-a", "curl", "-s", "-m", "5", url])
        .output()
        .context("nsenter curl")?;
    Ok((
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
    ))
}

fn container_name(pod: &Value) -> &str {
    pod["spec"]["containers"][0]["name"].as_str().unwrap_or("")
}

/// curl from the host ("outside the cluster"); (exit code, body).
fn curl_host(url: &str) -> Result<(i32, String)> {
    let out = Command::new("curl")
        .args(["-s", "-m", "5", url])
        .output()
        .context("curl")?;
    Ok((
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
    ))
}

fn node_ip(c: &Cluster, node: &str) -> Result<String> {
    let n = get_json(c, &["get", "node", node])?;
    n["status"]["addresses"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|a| a["type"] == "InternalIP")
        .and_then(|a| a["address"].as_str())
        .map(str::to_string)
        .context("no InternalIP")
}

fn slice_ips(c: &Cluster, svc: &str) -> Result<Vec<String>> {
    let v = get_json(
        c,
        &[
            "get",
            "endpointslices",
            "-l",
            &format!("kubernetes.io/service-name={svc}"),
        ],
    )?;
    let mut ips: Vec<String> = v["items"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|s| s["endpoints"].as_array().cloned().unwrap_or_default())
        .filter(|e| e["conditions"]["ready"] == true)
        .filter_map(|e| e["addresses"][0].as_str().map(str::to_string))
        .collect();
    ips.sort();
    Ok(ips)
}

fn service(name: &str, spec: Value) -> String {
    json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name}, "spec": spec})
        .to_string()
}

#[test]
fn clusterip_nodeport_and_no_endpoints() -> Result<()> {
    let c = Cluster::up_nodes("sv-basic", 2)?;
    let (n1, n2) = ("sv-basic-worker", "sv-basic-worker2");
    // The seed's example: the Service's port 80 goes to targetPort 8080, the container's.
    create(
        &c,
        &service(
            "web",
            json!({"type": "NodePort", "selector": {"app": "web"},
                   "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}),
        ),
    )?;
    create(
        &c,
        &service(
            "empty",
            json!({"selector": {"app": "nothing"}, "ports": [{"port": 80}]}),
        ),
    )?;
    // Endpoints follow pods: none, then one, then two.
    ensure!(slice_ips(&c, "web")?.is_empty());
    create(&c, &web_pod("web-1", n1, json!({"app": "web"})))?;
    let w1 = wait_running(&c, "web-1")?;
    let ip1 = w1["status"]["podIP"].as_str().context("podIP")?.to_string();
    wait_for("web-1 in the slice", 30, || {
        Ok((slice_ips(&c, "web")? == vec![ip1.clone()]).then_some(()))
    })?;
    create(&c, &web_pod("web-2", n2, json!({"app": "web"})))?;
    let w2 = wait_running(&c, "web-2")?;
    let ip2 = w2["status"]["podIP"].as_str().context("podIP")?.to_string();
    let mut both = vec![ip1.clone(), ip2.clone()];
    both.sort();
    wait_for("both pods in the slice", 30, || {
        Ok((slice_ips(&c, "web")? == both).then_some(()))
    })?;
    let svc = get_json(&c, &["get", "svc", "web"])?;
    let cip = svc["spec"]["clusterIP"]
        .as_str()
        .context("clusterIP")?
        .to_string();
    let np = svc["spec"]["ports"][0]["nodePort"]
        .as_i64()
        .context("nodePort")?;
    // ClusterIP from a pod on each node: both endpoints answer, and they see the
    // client's own pod IP (no NAT between pods).
    create(&c, &client_pod("client", n1))?;
    let client = wait_running(&c, "client")?;
    let client_ip = client["status"]["podIP"]
        .as_str()
        .context("podIP")?
        .to_string();
    let mut names = std::collections::BTreeSet::new();
    for _ in 0..40 {
        let (code, body) = curl_in(&c, &client, &format!("http://{cip}/cgi-bin/name"))?;
        ensure!(code == 0, "curl to the ClusterIP failed with {code}");
        names.insert(body);
        if names.len() == 2 {
            break;
        }
    }
    ensure!(
        names.len() == 2,
        "only {names:?} answered through the ClusterIP"
    );
    let (_, seen) = curl_in(&c, &client, &format!("http://{cip}/cgi-bin/ip"))?;
    // busybox httpd listens on IPv6 and prints IPv4 clients as [::ffff:a.b.c.d].
    let seen = seen
        .trim_start_matches("[::ffff:")
        .trim_end_matches(']')
        .to_string();
    ensure!(
        seen == client_ip,
        "the server saw {seen}, not the client pod {client_ip}"
    );
    // NodePort from the host, on every node.
    for node in [n1, n2] {
        let ip = node_ip(&c, node)?;
        let (code, body) = curl_host(&format!("http://{ip}:{np}/healthz"))?;
        ensure!(
            code == 0 && body == "ok",
            "NodePort on {node}: {code} {body}"
        );
    }
    // From the node itself.
    let out = ok(c.kins(&[
        "node",
        "exec",
        n2,
        "--name",
        "sv-basic",
        "--",
        "curl",
        "-s",
        "-m",
        "5",
        &format!("http://{cip}/healthz"),
    ])?)?;
    ensure!(out.trim() == "ok", "from the node: {out}");
    // A service without endpoints refuses at once (curl 7: refused), it does not time out
    // (curl 28); so does an unallocated address of the service CIDR.
    let empty = get_json(&c, &["get", "svc", "empty"])?;
    let eip = empty["spec"]["clusterIP"].as_str().context("clusterIP")?;
    let (code, _) = curl_in(&c, &client, &format!("http://{eip}/"))?;
    ensure!(code == 7, "no endpoints: curl exit {code}");
    let (code, _) = curl_in(&c, &client, "http://10.96.255.254/")?;
    ensure!(code == 7, "unallocated ClusterIP: curl exit {code}");
    // Hairpin: a pod reaches itself through its own service.
    kubectl(&c, &["delete", "pod", "web-2", "--wait=true"])?;
    wait_for("web-2 out of the slice", 30, || {
        Ok((slice_ips(&c, "web")? == vec![ip1.clone()]).then_some(()))
    })?;
    // (busybox has no curl, and the static busybox's wget crashes in a container without
    // NSS libraries: plain HTTP over its nc.)
    let pid = kins_tests::pods::container_pid(&c, &w1, "web")?;
    let out = Command::new("nsenter")
        .args(["-t", &pid.to_string(), "-a", "sh", "-c"])
        .arg(format!(
            "printf 'GET /healthz HTTP/1.0\\r\\n\\r\\n' | nc -w 5 {cip} 80 | tail -n 1"
        ))
        .output()?;
    let (code, body) = (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
    );
    ensure!(code == 0 && body == "ok", "hairpin: {code} {body}");
    // The NodePort is released with its service and can be taken again.
    kubectl(&c, &["delete", "svc", "web"])?;
    create(
        &c,
        &service(
            "again",
            json!({"type": "NodePort", "selector": {"app": "web"},
                   "ports": [{"port": 80, "targetPort": 8080, "nodePort": np}]}),
        ),
    )?;
    let ip = node_ip(&c, n1)?;
    wait_for("the reused NodePort to answer", 30, || {
        let (code, body) = curl_host(&format!("http://{ip}:{np}/healthz"))?;
        Ok((code == 0 && body == "ok").then_some(()))
    })?;
    Ok(())
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

//! Service checks shared by the e2e tests (the Services suite and the CNI plugin suite run
//! the same check on clusters with different pod networks): HTTP pods, a curl client, curl
//! from inside a pod and from the host, node addresses and EndpointSlice addresses.

use std::process::Command;

use anyhow::{ensure, Context, Result};
use serde_json::{json, Value};

use crate::pods::{container_pid, create, get_json, kubectl, wait_for, wait_running};
use crate::{ok, Cluster};

/// A pod answering HTTP on 8080 (busybox httpd); /cgi-bin/ip prints the client address
/// the server saw and /cgi-bin/name the pod's name.
pub fn web_pod(name: &str, node: &str, labels: Value) -> String {
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

/// A pod with curl (curlimages/curl) that sleeps, to run curl in.
pub fn client_pod(name: &str, node: &str) -> String {
    json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
        "spec": {"nodeName": node, "terminationGracePeriodSeconds": 0,
                 "containers": [{"name": "c", "image": "curlimages/curl", "command": ["sleep", "3600"]}]},
    })
    .to_string()
}

/// curl from inside a pod's (first) container; (exit code, body).
pub fn curl_in(c: &Cluster, pod: &Value, url: &str) -> Result<(i32, String)> {
    let pid = container_pid(c, pod, container_name(pod))?;
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
pub fn curl_host(url: &str) -> Result<(i32, String)> {
    let out = Command::new("curl")
        .args(["-s", "-m", "5", url])
        .output()
        .context("curl")?;
    Ok((
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
    ))
}

/// A node's InternalIP.
pub fn node_ip(c: &Cluster, node: &str) -> Result<String> {
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

/// The ready endpoint addresses of a Service's EndpointSlices, sorted.
pub fn slice_ips(c: &Cluster, svc: &str) -> Result<Vec<String>> {
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

/// A Service manifest.
pub fn service(name: &str, spec: Value) -> String {
    json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name}, "spec": spec})
        .to_string()
}

/// An address as busybox httpd prints it (IPv4 clients of its IPv6 socket as
/// `[::ffff:a.b.c.d]`), without the mapping.
pub fn strip_mapped(addr: &str) -> &str {
    addr.trim_start_matches("[::ffff:").trim_end_matches(']')
}

/// `kins node exec NODE --name CLUSTER -- ARGV...`: stdout.
pub fn node_exec(c: &Cluster, node: &str, argv: &[&str]) -> Result<String> {
    let mut args = vec!["node", "exec", node, "--name", c.name.as_str(), "--"];
    args.extend_from_slice(argv);
    ok(c.kins(&args)?)
}

/// The basic Service check, on two nodes `n1` and `n2` of `c`: EndpointSlices follow pods,
/// a ClusterIP reaches endpoints on both nodes from a pod (which see the client's own pod
/// IP) and from a node, a NodePort answers from the host on every node, a service without
/// endpoints (and an unallocated service address) refuses at once, a pod reaches itself
/// through its own service (hairpin), and a released NodePort can be taken again.
///
/// It creates the Services `web`, `empty` and `again` and the pods `web-1` (on `n1`, left
/// running), `web-2` (deleted again) and `client` (on `n1`) in the default namespace.
pub fn services_basic(c: &Cluster, n1: &str, n2: &str) -> Result<()> {
    // The seed's example: the Service's port 80 goes to targetPort 8080, the container's.
    create(
        c,
        &service(
            "web",
            json!({"type": "NodePort", "selector": {"app": "web"},
                   "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}),
        ),
    )?;
    create(
        c,
        &service(
            "empty",
            json!({"selector": {"app": "nothing"}, "ports": [{"port": 80}]}),
        ),
    )?;
    // Endpoints follow pods: none, then one, then two.
    ensure!(slice_ips(c, "web")?.is_empty());
    create(c, &web_pod("web-1", n1, json!({"app": "web"})))?;
    let w1 = wait_running(c, "web-1")?;
    let ip1 = w1["status"]["podIP"].as_str().context("podIP")?.to_string();
    wait_for("web-1 in the slice", 30, || {
        Ok((slice_ips(c, "web")? == vec![ip1.clone()]).then_some(()))
    })?;
    create(c, &web_pod("web-2", n2, json!({"app": "web"})))?;
    let w2 = wait_running(c, "web-2")?;
    let ip2 = w2["status"]["podIP"].as_str().context("podIP")?.to_string();
    let mut both = vec![ip1.clone(), ip2.clone()];
    both.sort();
    wait_for("both pods in the slice", 30, || {
        Ok((slice_ips(c, "web")? == both).then_some(()))
    })?;
    let svc = get_json(c, &["get", "svc", "web"])?;
    let cip = svc["spec"]["clusterIP"]
        .as_str()
        .context("clusterIP")?
        .to_string();
    let np = svc["spec"]["ports"][0]["nodePort"]
        .as_i64()
        .context("nodePort")?;
    // ClusterIP from a pod on each node: both endpoints answer, and they see the
    // client's own pod IP (no NAT between pods).
    create(c, &client_pod("client", n1))?;
    let client = wait_running(c, "client")?;
    let client_ip = client["status"]["podIP"]
        .as_str()
        .context("podIP")?
        .to_string();
    let mut names = std::collections::BTreeSet::new();
    for _ in 0..40 {
        let (code, body) = curl_in(c, &client, &format!("http://{cip}/cgi-bin/name"))?;
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
    let (_, seen) = curl_in(c, &client, &format!("http://{cip}/cgi-bin/ip"))?;
    let seen = strip_mapped(&seen).to_string();
    ensure!(
        seen == client_ip,
        "the server saw {seen}, not the client pod {client_ip}"
    );
    // NodePort from the host, on every node.
    for node in [n1, n2] {
        let ip = node_ip(c, node)?;
        let (code, body) = curl_host(&format!("http://{ip}:{np}/healthz"))?;
        ensure!(
            code == 0 && body == "ok",
            "NodePort on {node}: {code} {body}"
        );
    }
    // From the node itself.
    let out = node_exec(
        c,
        n2,
        &["curl", "-s", "-m", "5", &format!("http://{cip}/healthz")],
    )?;
    ensure!(out.trim() == "ok", "from the node: {out}");
    // A service without endpoints refuses at once (curl 7: refused), it does not time out
    // (curl 28); so does an unallocated address of the service CIDR.
    let empty = get_json(c, &["get", "svc", "empty"])?;
    let eip = empty["spec"]["clusterIP"].as_str().context("clusterIP")?;
    let (code, _) = curl_in(c, &client, &format!("http://{eip}/"))?;
    ensure!(code == 7, "no endpoints: curl exit {code}");
    let (code, _) = curl_in(c, &client, "http://10.96.255.254/")?;
    ensure!(code == 7, "unallocated ClusterIP: curl exit {code}");
    // Hairpin: a pod reaches itself through its own service.
    kubectl(c, &["delete", "pod", "web-2", "--wait=true"])?;
    wait_for("web-2 out of the slice", 30, || {
        Ok((slice_ips(c, "web")? == vec![ip1.clone()]).then_some(()))
    })?;
    // (busybox has no curl, and the static busybox's wget crashes in a container without
    // NSS libraries: plain HTTP over its nc.)
    let pid = container_pid(c, &w1, "web")?;
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
    kubectl(c, &["delete", "svc", "web"])?;
    create(
        c,
        &service(
            "again",
            json!({"type": "NodePort", "selector": {"app": "web"},
                   "ports": [{"port": 80, "targetPort": 8080, "nodePort": np}]}),
        ),
    )?;
    let ip = node_ip(c, n1)?;
    wait_for("the reused NodePort to answer", 30, || {
        let (code, body) = curl_host(&format!("http://{ip}:{np}/healthz"))?;
        Ok((code == 0 && body == "ok").then_some(()))
    })?;
    Ok(())
}

/// Deletes what [`services_basic`] leaves behind (the pods `web-1` and `client`, the
/// Services `empty` and `again`), waiting for the pods to be gone, so that other checks
/// can use those names in the same cluster.
pub fn services_basic_cleanup(c: &Cluster) -> Result<()> {
    kubectl(
        c,
        &[
            "delete",
            "pod",
            "web-1",
            "client",
            "--wait=true",
            "--timeout=120s",
        ],
    )?;
    kubectl(c, &["delete", "svc", "empty", "again"])?;
    Ok(())
}

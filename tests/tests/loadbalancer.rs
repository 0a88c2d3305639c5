//! Services of type LoadBalancer (MetalLB's layer-2 mode), as root on a real node network:
//! the controller gives the Service an address of the pool 172.29.N.200-250 and a node, that
//! node's agent adds the address to its eth0 so the host's ARP finds it, and the proxy
//! translates it to the pods; the address is released when the Service goes away or stops
//! being a LoadBalancer, and `allocateLoadBalancerNodePorts: false` allocates no nodePort;
//! `loadBalancerSourceRanges` lets only the listed clients through, changed live.

use std::process::Command;

use anyhow::{ensure, Context, Result};
use kins_tests::pods::{create, get_json, kubectl, wait_for, wait_running};
use kins_tests::Cluster;
use serde_json::{json, Value};

/// A pod answering HTTP on 8080 (busybox httpd) with its own name.
fn web_pod(name: &str, node: &str) -> String {
    let script = "mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 8080 -h /www";
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": "web"}},
        "spec": {"nodeName": node, "terminationGracePeriodSeconds": 0, "containers": [{
            "name": "web", "image": "busybox", "command": ["sh", "-c", script],
            "ports": [{"name": "http", "containerPort": 8080}],
        }]},
    })
    .to_string()
}

fn lb_service(name: &str, extra: Value) -> String {
    let mut spec = json!({"type": "LoadBalancer", "selector": {"app": "web"},
                          "ports": [{"name": "http", "port": 80, "targetPort": 8080}]});
    if let (Some(s), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            s.insert(k.clone(), v.clone());
        }
    }
    json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name}, "spec": spec})
        .to_string()
}

/// curl from the host; (exit code, body).
fn curl_host(url: &str) -> Result<(i32, String)> {
    let out = Command::new("curl")
        .args(["-s", "-m", "3", url])
        .output()
        .context("curl")?;
    Ok((
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
    ))
}

/// The first three octets of the node network, from a node's InternalIP.
fn node_net_prefix(c: &Cluster, node: &str) -> Result<String> {
    let n = get_json(c, &["get", "node", node])?;
    let ip = n["status"]["addresses"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|a| a["type"] == "InternalIP")
        .and_then(|a| a["address"].as_str())
        .context("no InternalIP")?;
    let (prefix, _) = ip.rsplit_once('.').context("not IPv4")?;
    Ok(prefix.to_string())
}

/// Waits for the Service's ingress IP and node annotation.
fn wait_assigned(c: &Cluster, svc: &str) -> Result<(String, String)> {
    wait_for(&format!("an address for {svc}"), 30, || {
        let s = get_json(c, &["get", "service", svc])?;
        let ip = s["status"]["loadBalancer"]["ingress"][0]["ip"].as_str();
        let mode = s["status"]["loadBalancer"]["ingress"][0]["ipMode"].as_str();
        let node = s["metadata"]["annotations"]["kins.dev/lb-node"].as_str();
        Ok(match (ip, mode, node) {
            (Some(ip), Some("VIP"), Some(node)) => Some((ip.to_string(), node.to_string())),
            _ => None,
        })
    })
}

#[test]
fn loadbalancer_addresses_from_the_pool() -> Result<()> {
    let c = Cluster::up_nodes("lb-l2", 2)?;
    let (n1, n2) = ("lb-l2-worker", "lb-l2-worker2");
    let prefix = node_net_prefix(&c, n1)?;
    create(&c, &web_pod("web-1", n1))?;
    create(&c, &web_pod("web-2", n2))?;
    wait_running(&c, "web-1")?;
    wait_running(&c, "web-2")?;

    // The first address of the pool, a Ready node, and the host reaches the pods through it.
    create(&c, &lb_service("web", json!({})))?;
    let (ip, node) = wait_assigned(&c, "web")?;
    ensure!(ip == format!("{prefix}.200"), "got {ip}, want {prefix}.200");
    ensure!(node == n1 || node == n2, "lb-node {node}");
    let s = get_json(&c, &["get", "service", "web"])?;
    ensure!(
        s["spec"]["ports"][0]["nodePort"].is_u64(),
        "a LoadBalancer gets a nodePort by default: {s}"
    );
    let url = format!("http://{ip}/");
    let body = wait_for("the load balancer to answer from the host", 30, || {
        let (code, body) = curl_host(&url)?;
        Ok((code == 0 && body.starts_with("web-")).then_some(body))
    })?;
    ensure!(body == "web-1" || body == "web-2", "{body}");

    // A second one gets the next address; without nodePorts when asked.
    create(
        &c,
        &lb_service("web2", json!({"allocateLoadBalancerNodePorts": false})),
    )?;
    let (ip2, _) = wait_assigned(&c, "web2")?;
    ensure!(ip2 == format!("{prefix}.201"), "got {ip2}");
    let s2 = get_json(&c, &["get", "service", "web2"])?;
    ensure!(
        s2["spec"]["ports"][0]["nodePort"].is_null(),
        "allocateLoadBalancerNodePorts false still allocated a nodePort: {s2}"
    );
    wait_for("the second address to answer", 30, || {
        let (code, body) = curl_host(&format!("http://{ip2}/"))?;
        Ok((code == 0 && body.starts_with("web-")).then_some(()))
    })?;

    // A requested address in the pool is honoured.
    create(
        &c,
        &lb_service("web3", json!({"loadBalancerIP": format!("{prefix}.240")})),
    )?;
    let (ip3, _) = wait_assigned(&c, "web3")?;
    ensure!(ip3 == format!("{prefix}.240"), "got {ip3}");

    // Deleting the first releases its address: the node stops answering, and a new
    // LoadBalancer Service gets it again.
    kubectl(&c, &["delete", "service", "web"])?;
    wait_for("the released address to stop answering", 30, || {
        let (code, _) = curl_host(&url)?;
        Ok((code != 0).then_some(()))
    })?;
    create(&c, &lb_service("again", json!({})))?;
    let (again, _) = wait_assigned(&c, "again")?;
    ensure!(again == ip, "got {again}, want the released {ip}");
    wait_for("the reused address to answer", 30, || {
        let (code, body) = curl_host(&url)?;
        Ok((code == 0 && body.starts_with("web-")).then_some(()))
    })?;

    // Changing the type releases too: status cleared, annotation gone.
    kubectl(
        &c,
        &[
            "patch",
            "service",
            "web2",
            "--type=merge",
            "-p",
            r#"{"spec":{"type":"ClusterIP","allocateLoadBalancerNodePorts":null,"ports":[{"name":"http","port":80,"targetPort":8080,"nodePort":null}]}}"#,
        ],
    )?;
    wait_for("web2's address to be released", 30, || {
        let s = get_json(&c, &["get", "service", "web2"])?;
        let gone = s["status"]["loadBalancer"]["ingress"].is_null()
            && s["metadata"]["annotations"]["kins.dev/lb-node"].is_null();
        Ok(gone.then_some(()))
    })?;
    wait_for("web2's address to stop answering", 30, || {
        let (code, _) = curl_host(&format!("http://{ip2}/"))?;
        Ok((code != 0).then_some(()))
    })?;
    create(&c, &lb_service("fourth", json!({})))?;
    let (ip4, _) = wait_assigned(&c, "fourth")?;
    ensure!(ip4 == ip2, "got {ip4}, want the released {ip2}");
    Ok(())
}

#[test]
fn loadbalancer_source_ranges_are_honoured() -> Result<()> {
    let c = Cluster::up_nodes("lb-src", 1)?;
    let n1 = "lb-src-worker";
    let prefix = node_net_prefix(&c, n1)?;
    create(&c, &web_pod("web-1", n1))?;
    wait_running(&c, "web-1")?;
    let node_net = format!("{prefix}.0/24");
    let ranges = |r: &[&str]| json!({"spec": {"loadBalancerSourceRanges": r}}).to_string();
    // Clients from the node network (the host) allowed: the host gets through.
    create(
        &c,
        &lb_service(
            "web",
            json!({"loadBalancerSourceRanges": ["192.0.2.0/24", node_net]}),
        ),
    )?;
    let (ip, _) = wait_assigned(&c, "web")?;
    let url = format!("http://{ip}/");
    let through = || -> Result<bool> {
        let (code, body) = curl_host(&url)?;
        Ok(code == 0 && body == "web-1")
    };
    wait_for("the allowed host to get through", 30, || {
        Ok(through()?.then_some(()))
    })?;
    // Only a documentation range allowed, live: the host is dropped (curl times out).
    kubectl(
        &c,
        &[
            "patch",
            "svc",
            "web",
            "--type=merge",
            "-p",
            &ranges(&["192.0.2.0/24"]),
        ],
    )?;
    wait_for("the host to be dropped", 30, || {
        let (code, _) = curl_host(&url)?;
        Ok((code == 28).then_some(()))
    })?;
    // And allowed again.
    kubectl(
        &c,
        &[
            "patch",
            "svc",
            "web",
            "--type=merge",
            "-p",
            &ranges(&["192.0.2.0/24", &node_net]),
        ],
    )?;
    wait_for("the host to get through again", 30, || {
        Ok(through()?.then_some(()))
    })?;
    Ok(())
}

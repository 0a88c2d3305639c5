//! The ingress add-on for real, as root: the kins-ingress pod behind its LoadBalancer
//! Service, Ingresses applied with kubectl, requests from the host with curl (every name
//! pinned to the LoadBalancer address with `--resolve`, so nothing is looked up).
//! Backends are nginx pods answering with their Service's name, the request line and the
//! forwarded headers. The cluster is this test's own.

use std::path::Path;

use anyhow::{ensure, Context, Result};
use kins_tests::pods::{get_json, kubectl, wait_for};
use kins_tests::services::node_exec;
use kins_tests::Cluster;

/// nginx answering `svc=<name> uri=<uri> host=<host> xff=.. proto=.. xfh=..`.
fn backend(name: &str, replicas: u32) -> String {
    format!(
        r#"apiVersion: v1
kind: ConfigMap
metadata: {{name: {name}-conf}}
data:
  default.conf: |
    server {{
      listen 80;
      location / {{
        default_type text/plain;
        return 200 "svc={name} uri=$request_uri host=$host xff=$http_x_forwarded_for proto=$http_x_forwarded_proto xfh=$http_x_forwarded_host\n";
      }}
    }}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata: {{labels: {{app: {name}}}}}
    spec:
      terminationGracePeriodSeconds: 0
      containers:
      - name: nginx
        image: nginx
        volumeMounts: [{{name: conf, mountPath: /etc/nginx/conf.d}}]
      volumes: [{{name: conf, configMap: {{name: {name}-conf}}}}]
---
apiVersion: v1
kind: Service
metadata: {{name: {name}}}
spec:
  selector: {{app: {name}}}
  ports: [{{name: web, port: 8080, targetPort: 80}}]
"#
    )
}

const ROUTES: &str = r#"
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: routes}
spec:
  defaultBackend: {service: {name: fallback, port: {number: 8080}}}
  rules:
  - host: one.example
    http:
      paths:
      - {path: /a, pathType: Prefix, backend: {service: {name: alpha, port: {number: 8080}}}}
      - {path: /a/exact, pathType: Exact, backend: {service: {name: beta, port: {name: web}}}}
      - {path: /b/, pathType: Prefix, backend: {service: {name: beta, port: {name: web}}}}
      - {path: /imp, pathType: ImplementationSpecific, backend: {service: {name: beta, port: {number: 8080}}}}
  - host: "*.wild.example"
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: alpha, port: {number: 8080}}}}
  - http:
      paths:
      - {path: /hostless, pathType: Prefix, backend: {service: {name: beta, port: {number: 8080}}}}
  - host: empty.example
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: nobody, port: {number: 8080}}}}
---
apiVersion: v1
kind: Service
metadata: {name: nobody}
spec:
  selector: {app: nobody-has-this-label}
  ports: [{port: 8080, targetPort: 80}]
---
apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata: {name: other}
spec: {controller: example.com/other-controller}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: not-ours}
spec:
  ingressClassName: other
  rules:
  - host: other.example
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: alpha, port: {number: 8080}}}}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: resource}
spec:
  rules:
  - host: resource.example
    http:
      paths:
      - path: /
        pathType: Prefix
        backend: {resource: {apiGroup: example.com, kind: Bucket, name: photos}}
"#;

/// One request from the host: (HTTP status, body, curl's stderr).
struct Reply {
    status: u16,
    body: String,
    verbose: String,
}

/// `curl` to `scheme://host:port/path` with `host` pinned to `lb`; extra args first.
fn curl(lb: &str, scheme: &str, host: &str, path: &str, extra: &[&str]) -> Result<Reply> {
    let port = if scheme == "https" { 443 } else { 80 };
    let resolve = format!("{host}:{port}:{lb}");
    let url = format!("{scheme}://{host}{path}");
    let out = std::process::Command::new("curl")
        .args([
            "-s",
            "-v",
            "-m",
            "5",
            "--resolve",
            &resolve,
            "-w",
            "\n%{http_code}",
        ])
        .args(extra)
        .arg(&url)
        .output()
        .context("curl")?;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    Ok(Reply {
        status: code.trim().parse().unwrap_or(0),
        body: body.to_string(),
        verbose: String::from_utf8_lossy(&out.stderr).to_string(),
    })
}

/// The Service answering `host` + `path` over plain HTTP.
fn svc_of(lb: &str, host: &str, path: &str) -> Result<String> {
    let r = curl(lb, "http", host, path, &[])?;
    ensure!(r.status == 200, "{host}{path}: {} {}", r.status, r.body);
    Ok(r.body
        .split_whitespace()
        .find_map(|w| w.strip_prefix("svc="))
        .unwrap_or("")
        .to_string())
}

fn apply(c: &Cluster, yaml: &str) -> Result<()> {
    let out = c.kubectl_stdin(Path::new("kubectl"), &["apply", "-f", "-"], Some(yaml))?;
    ensure!(
        out.status.success(),
        "kubectl apply: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// The LoadBalancer address of kube-system/kins-ingress, once the controller is ready.
fn ingress_address(c: &Cluster) -> Result<String> {
    let ip = wait_for("the kins-ingress LoadBalancer address", 60, || {
        let s = get_json(c, &["get", "svc", "-n", "kube-system", "kins-ingress"])?;
        Ok(s["status"]["loadBalancer"]["ingress"][0]["ip"]
            .as_str()
            .map(str::to_string))
    })?;
    wait_for("the kins-ingress pod to be ready", 90, || {
        let p = get_json(
            c,
            &[
                "get",
                "pods",
                "-n",
                "kube-system",
                "-l",
                "app.kubernetes.io/name=kins-ingress",
            ],
        )?;
        let ready = p["items"].as_array().into_iter().flatten().any(|p| {
            p["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        });
        Ok(ready.then_some(()))
    })?;
    Ok(ip)
}

fn wait_rollout(c: &Cluster, names: &[&str]) -> Result<()> {
    for n in names {
        kubectl(
            c,
            &["rollout", "status", &format!("deploy/{n}"), "--timeout=90s"],
        )?;
    }
    Ok(())
}

fn events_of(c: &Cluster, ingress: &str) -> Result<Vec<(String, String)>> {
    let ev = get_json(
        c,
        &[
            "get",
            "events",
            "--field-selector",
            &format!("involvedObject.name={ingress}"),
        ],
    )?;
    Ok(ev["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            (
                e["reason"].as_str().unwrap_or("").to_string(),
                e["message"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect())
}

fn wait_event(c: &Cluster, ingress: &str, reason: &str) -> Result<String> {
    wait_for(&format!("a {reason} event on {ingress}"), 30, || {
        Ok(events_of(c, ingress)?
            .into_iter()
            .find(|(r, _)| r == reason)
            .map(|(_, m)| m))
    })
    .with_context(|| {
        let events = kubectl(c, &["get", "events", "-A"]).unwrap_or_default();
        let logs =
            kubectl(c, &["logs", "-n", "kube-system", "deploy/kins-ingress"]).unwrap_or_default();
        format!("events:\n{events}\ncontroller log:\n{logs}")
    })
}

/// Routing: hosts (exact, wildcard of one label, none), Exact / Prefix /
/// ImplementationSpecific, the longest match, fall-through to the default backend, ports
/// by number and by name, 503 at once without endpoints, X-Forwarded-*, an Ingress of
/// another class ignored, a resource backend refused with an event, ADDRESS in status,
/// and `kubectl describe` listing rules with their endpoints.
#[test]
fn ingress_routing_status_and_classes() -> Result<()> {
    let c = Cluster::up_with("king", &["--nodes", "2", "--ingress=true"])?;
    let lb = ingress_address(&c)?;
    for (name, replicas) in [("alpha", 2), ("beta", 1), ("fallback", 1)] {
        apply(&c, &backend(name, replicas))?;
    }
    wait_rollout(&c, &["alpha", "beta", "fallback"])?;
    apply(&c, ROUTES)?;
    // Defaulted to the default class at admission.
    let routes = get_json(&c, &["get", "ingress", "routes"])?;
    ensure!(
        routes["spec"]["ingressClassName"] == "kins",
        "{}",
        routes["spec"]
    );
    wait_for("the routes to be served", 30, || {
        Ok((svc_of(&lb, "one.example", "/a").ok().as_deref() == Some("alpha")).then_some(()))
    })?;
    for (host, path, want) in [
        ("one.example", "/a", "alpha"),
        ("one.example", "/a/", "alpha"),
        ("one.example", "/a/x/y?q=1", "alpha"),
        ("ONE.example", "/a", "alpha"),
        // Prefix is element-wise: /a does not match /ab.
        ("one.example", "/ab", "fallback"),
        // Exact wins at its path only; the longest match wins.
        ("one.example", "/a/exact", "beta"),
        ("one.example", "/a/exact/", "alpha"),
        ("one.example", "/a/exactly", "alpha"),
        // A rule path's trailing slash is ignored.
        ("one.example", "/b", "beta"),
        ("one.example", "/b/c", "beta"),
        // ImplementationSpecific is a string prefix here.
        ("one.example", "/imp", "beta"),
        ("one.example", "/impossible", "beta"),
        // Wildcards cover exactly one label.
        ("x.wild.example", "/", "alpha"),
        ("wild.example", "/", "fallback"),
        ("y.x.wild.example", "/", "fallback"),
        // Rules without a host apply to every host; nothing matched: the default backend.
        ("anything.example", "/hostless/1", "beta"),
        ("one.example", "/hostless", "beta"),
        ("anything.example", "/", "fallback"),
        // Another class's Ingress is not served.
        ("other.example", "/", "fallback"),
    ] {
        let got = svc_of(&lb, host, path)?;
        ensure!(got == want, "{host}{path}: {got}, want {want}");
    }
    // A newer Ingress claiming the same host, path and type: the older one keeps it, and
    // the newer is told (created in the same second, the name decides: "routes" <
    // "takeover").
    apply(
        &c,
        r#"{"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": {"name": "takeover"},
        "spec": {"rules": [{"host": "one.example", "http": {"paths": [{"path": "/a", "pathType": "Prefix",
        "backend": {"service": {"name": "beta", "port": {"number": 8080}}}}]}}]}}"#,
    )?;
    let m = wait_event(&c, "takeover", "Conflict")?;
    ensure!(m.contains("Ingress default/routes"), "{m}");
    ensure!(svc_of(&lb, "one.example", "/a")? == "alpha");
    // Invalid Ingresses are refused with Kubernetes' messages, and nothing changes.
    for (bad, want) in [
        (
            r#"{"path": "/x", "backend": {"service": {"name": "alpha", "port": {"number": 8080}}}}"#,
            "spec.rules[0].http.paths[0].pathType: Required value: pathType must be specified",
        ),
        (
            r#"{"path": "x", "pathType": "Prefix", "backend": {"service": {"name": "alpha", "port": {"number": 8080}}}}"#,
            "spec.rules[0].http.paths[0].path: Invalid value: \"x\": must be an absolute path",
        ),
        (
            r#"{"path": "/x", "pathType": "Regex", "backend": {"service": {"name": "alpha", "port": {"number": 8080}}}}"#,
            "spec.rules[0].http.paths[0].pathType: Unsupported value: \"Regex\"",
        ),
    ] {
        let yaml = format!(
            r#"{{"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": {{"name": "bad"}},
            "spec": {{"rules": [{{"host": "bad.example", "http": {{"paths": [{bad}]}}}}]}}}}"#
        );
        let out = c.kubectl_stdin(Path::new("kubectl"), &["apply", "-f", "-"], Some(&yaml))?;
        let err = String::from_utf8_lossy(&out.stderr);
        ensure!(!out.status.success() && err.contains(want), "{err}");
    }
    ensure!(!kubectl(&c, &["get", "ingress"])?.contains("bad.example"));
    // Both alpha pods answer (straight to the endpoints, round robin).
    let alpha = kins_tests::services::slice_ips(&c, "alpha")?;
    ensure!(alpha.len() == 2, "{alpha:?}");
    // The request as the backend saw it: path and query kept, X-Forwarded-* set.
    let r = curl(
        &lb,
        "http",
        "one.example",
        "/a/x?q=1",
        &["-H", "X-Forwarded-For: 192.0.2.7"],
    )?;
    ensure!(
        r.body.contains("uri=/a/x?q=1 host=one.example"),
        "{}",
        r.body
    );
    ensure!(r.body.contains("xff=192.0.2.7, "), "{}", r.body);
    ensure!(r.body.contains("proto=http xfh=one.example"), "{}", r.body);
    // The same through a node's NodePort of the kins-ingress Service.
    let svc = get_json(&c, &["get", "svc", "-n", "kube-system", "kins-ingress"])?;
    let np = svc["spec"]["ports"][0]["nodePort"]
        .as_u64()
        .context("nodePort")?;
    let node = kins_tests::services::node_ip(&c, "king-worker2")?;
    let r = std::process::Command::new("curl")
        .args([
            "-s",
            "-m",
            "5",
            "-H",
            "Host: one.example",
            &format!("http://{node}:{np}/a"),
        ])
        .output()?;
    let body = String::from_utf8_lossy(&r.stdout);
    ensure!(body.contains("svc=alpha"), "NodePort {node}:{np}: {body}");
    // No ready endpoint: 503 at once.
    let r = curl(&lb, "http", "empty.example", "/", &[])?;
    ensure!(r.status == 503, "{} {}", r.status, r.body);
    ensure!(
        r.body
            .contains("no ready endpoints for service default/nobody"),
        "{}",
        r.body
    );
    // A resource backend: an event, and 503.
    let m = wait_event(&c, "resource", "ResourceBackendUnsupported")?;
    ensure!(m.contains("Bucket/photos"), "{m}");
    ensure!(curl(&lb, "http", "resource.example", "/", &[])?.status == 503);
    // Status: our address on ours only.
    let addr = wait_for("ADDRESS on the Ingress", 30, || {
        let i = get_json(&c, &["get", "ingress", "routes"])?;
        Ok(i["status"]["loadBalancer"]["ingress"][0]["ip"]
            .as_str()
            .map(str::to_string))
    })?;
    ensure!(addr == lb, "{addr} vs {lb}");
    let table = kubectl(&c, &["get", "ingress", "routes"])?;
    ensure!(table.contains(&lb) && table.contains("kins"), "{table}");
    let other = get_json(&c, &["get", "ingress", "not-ours"])?;
    ensure!(
        other["status"]["loadBalancer"].get("ingress").is_none(),
        "{}",
        other["status"]
    );
    // describe: rules with backends and their endpoints, our Sync event.
    let d = kubectl(&c, &["describe", "ingress", "routes"])?;
    ensure!(
        d.contains("one.example") && d.contains("/a/exact") && d.contains("beta:web"),
        "{d}"
    );
    ensure!(d.contains(&format!("{}:80", alpha[0])), "{d}");
    ensure!(d.contains("Sync"), "{d}");
    // A backend scaled to zero: 503 at once, and back.
    kubectl(&c, &["scale", "deploy/beta", "--replicas=0"])?;
    wait_for("beta without endpoints: 503", 30, || {
        Ok((curl(&lb, "http", "one.example", "/b", &[])?.status == 503).then_some(()))
    })?;
    kubectl(&c, &["scale", "deploy/beta", "--replicas=1"])?;
    wait_for("beta back", 60, || {
        Ok((svc_of(&lb, "one.example", "/b").ok().as_deref() == Some("beta")).then_some(()))
    })?;
    // Metrics per Ingress and backend, read from the node.
    let pod = get_json(
        &c,
        &[
            "get",
            "pods",
            "-n",
            "kube-system",
            "-l",
            "app.kubernetes.io/name=kins-ingress",
        ],
    )?;
    let p = &pod["items"][0];
    let (node, ip) = (
        p["spec"]["nodeName"].as_str().unwrap_or(""),
        p["status"]["podIP"].as_str().unwrap_or(""),
    );
    let m = node_exec(
        &c,
        node,
        &[
            "curl",
            "-s",
            "-m",
            "5",
            &format!("http://{ip}:10254/metrics"),
        ],
    )?;
    let value = |prefix: &str| -> u64 {
        m.lines()
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
            .map_or(0, |v| v as u64)
    };
    ensure!(
        value("kins_ingress_requests_total{namespace=\"default\",ingress=\"routes\",service=\"default/alpha\",port=\"8080\",status=\"2xx\"}") > 0,
        "{m}"
    );
    ensure!(
        value("kins_ingress_no_endpoints_total{namespace=\"default\",ingress=\"routes\",service=\"default/nobody\"") > 0,
        "{m}"
    );
    ensure!(!m.contains("ingress=\"not-ours\""), "{m}");
    // An Ingress deleted: its routes go (fall back to nothing: 404).
    // The older Ingress deleted: the newer one's conflicting rule takes over.
    kubectl(&c, &["delete", "ingress", "routes"])?;
    wait_for("takeover to route /a", 30, || {
        Ok((svc_of(&lb, "one.example", "/a").ok().as_deref() == Some("beta")).then_some(()))
    })?;
    kubectl(&c, &["delete", "ingress", "takeover"])?;
    wait_for("the routes to go", 30, || {
        Ok((curl(&lb, "http", "one.example", "/a", &[])?.status == 404).then_some(()))
    })?;
    Ok(())
}

/// A self-signed certificate and key for `host` (PEM).
fn cert(host: &str) -> Result<(String, String)> {
    let key = rcgen::KeyPair::generate()?;
    let params = rcgen::CertificateParams::new(vec![host.to_string()])?;
    let cert = params.self_signed(&key)?;
    Ok((cert.pem(), key.serialize_pem()))
}

fn tls_secret(c: &Cluster, name: &str, host: &str, dir: &Path) -> Result<std::path::PathBuf> {
    let (crt, key) = cert(host)?;
    let crt_path = dir.join(format!("{name}.crt"));
    let key_path = dir.join(format!("{name}.key"));
    std::fs::write(&crt_path, crt)?;
    std::fs::write(&key_path, key)?;
    let yaml = kubectl(
        c,
        &[
            "create",
            "secret",
            "tls",
            name,
            "--cert",
            crt_path.to_str().unwrap_or_default(),
            "--key",
            key_path.to_str().unwrap_or_default(),
            "--dry-run=client",
            "-o",
            "yaml",
        ],
    )?;
    apply(c, &yaml)?;
    Ok(crt_path)
}

const SECURE: &str = r#"
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: secure}
spec:
  tls:
  - {hosts: [a.tls.example], secretName: tls-a}
  - {hosts: [b.tls.example], secretName: tls-b}
  - {hosts: [c.tls.example], secretName: tls-missing}
  rules:
  - host: a.tls.example
    http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: alpha, port: {number: 8080}}}}]}
  - host: b.tls.example
    http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: alpha, port: {number: 8080}}}}]}
  - host: c.tls.example
    http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: alpha, port: {number: 8080}}}}]}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: no-redirect
  annotations: {kins.dev/ssl-redirect: "false"}
spec:
  tls: [{hosts: [d.tls.example], secretName: tls-a}]
  rules:
  - host: d.tls.example
    http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: alpha, port: {number: 8080}}}}]}
"#;

/// TLS: a certificate per host by SNI (each verified against its own CA file), HTTP →
/// HTTPS redirect (and an Ingress turning it off), a missing Secret reported and the
/// default certificate served for its host, and a Secret rotated live.
#[test]
fn ingress_tls_sni_redirect_and_rotation() -> Result<()> {
    let c = Cluster::up_with("kingtls", &["--nodes", "1", "--ingress=true"])?;
    let lb = ingress_address(&c)?;
    apply(&c, &backend("alpha", 1))?;
    wait_rollout(&c, &["alpha"])?;
    let dir = tempfile::tempdir()?;
    let ca_a = tls_secret(&c, "tls-a", "a.tls.example", dir.path())?;
    let ca_b = tls_secret(&c, "tls-b", "b.tls.example", dir.path())?;
    apply(&c, SECURE)?;
    let https = |host: &str, ca: &Path| {
        curl(
            &lb,
            "https",
            host,
            "/s?x=1",
            &["--cacert", ca.to_str().unwrap_or_default()],
        )
    };
    wait_for("a.tls.example over HTTPS", 30, || {
        Ok((https("a.tls.example", &ca_a)?.status == 200).then_some(()))
    })?;
    let a = https("a.tls.example", &ca_a)?;
    ensure!(
        a.body.contains("svc=alpha uri=/s?x=1") && a.body.contains("proto=https"),
        "{}",
        a.body
    );
    // SNI: b's certificate for b (a's CA does not verify it).
    ensure!(https("b.tls.example", &ca_b)?.status == 200);
    ensure!(
        https("b.tls.example", &ca_a)?.status == 0,
        "b served a's certificate"
    );
    // Plain HTTP to a TLS host: 308 to the same URL over HTTPS.
    let r = curl(&lb, "http", "a.tls.example", "/p?q=1", &[])?;
    ensure!(r.status == 308, "{} {}", r.status, r.body);
    ensure!(
        r.verbose
            .to_ascii_lowercase()
            .contains("location: https://a.tls.example/p?q=1"),
        "{}",
        r.verbose
    );
    // Turned off by annotation.
    ensure!(svc_of(&lb, "d.tls.example", "/")? == "alpha");
    // A missing Secret: an event, and the default certificate meanwhile.
    let m = wait_event(&c, "secure", "TLSSecretInvalid")?;
    ensure!(
        m.contains("default/tls-missing") && m.contains("not found"),
        "{m}"
    );
    let r = curl(&lb, "https", "c.tls.example", "/", &["-k"])?;
    ensure!(r.status == 200, "{} {}", r.status, r.body);
    ensure!(
        r.verbose
            .contains("Kins Ingress Controller Default Certificate"),
        "{}",
        r.verbose
    );
    // A malformed Secret: an event too.
    let bad = r#"{"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "tls-missing"},
        "type": "kubernetes.io/tls", "data": {"tls.crt": "bm90IGEgY2VydA==", "tls.key": "bm90IGEga2V5"}}"#;
    apply(&c, bad)?;
    wait_for("a malformed-Secret event", 30, || {
        Ok(events_of(&c, "secure")?
            .into_iter()
            .any(|(r, m)| r == "TLSSecretInvalid" && m.contains("malformed"))
            .then_some(()))
    })?;
    // Rotation: a new certificate for a, served without a restart.
    let rotated = dir.path().join("rotated");
    std::fs::create_dir_all(&rotated)?;
    let ca_a2 = tls_secret(&c, "tls-a", "a.tls.example", &rotated)?;
    wait_for("the rotated certificate", 30, || {
        Ok((https("a.tls.example", &ca_a2)?.status == 200).then_some(()))
    })?;
    ensure!(
        https("a.tls.example", &ca_a)?.status == 0,
        "the old certificate is still served"
    );
    let restarts = get_json(
        &c,
        &[
            "get",
            "pods",
            "-n",
            "kube-system",
            "-l",
            "app.kubernetes.io/name=kins-ingress",
        ],
    )?;
    ensure!(
        restarts["items"][0]["status"]["containerStatuses"][0]["restartCount"] == 0,
        "{}",
        restarts["items"][0]["status"]
    );
    Ok(())
}

//! `kubectl port-forward` for real, as root, with every kubectl under test and over both
//! of its transports (SPDY tunnelled through WebSocket, kubectl ≥ 1.31's default, and
//! plain SPDY/3.1 as `KUBECTL_PORT_FORWARD_WEBSOCKETS=false` and older clients use): to a
//! pod, `svc/NAME` and `deploy/NAME`, two ports at once, 50 concurrent connections, the
//! error for a port nothing listens on, and the end when the pod goes.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use kins_tests::pods::{create, kubectl as kc, wait_for};
use kins_tests::{free_port, kubectls, Cluster};

const WEB: &str = r#"{"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
  "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
    "template": {"metadata": {"labels": {"app": "web"}}, "spec": {
      "terminationGracePeriodSeconds": 0,
      "containers": [{"name": "nginx", "image": "nginx", "ports": [{"containerPort": 80}]}]}}}}"#;
const SVC: &str = r#"{"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
  "spec": {"selector": {"app": "web"}, "ports": [{"port": 8080, "targetPort": 80}]}}"#;

/// A running `kubectl port-forward`, killed when dropped.
struct Forward {
    child: Child,
}

impl Drop for Forward {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Forward {
    /// Starts kubectl port-forward and waits until it listens on every local port.
    fn start(c: &Cluster, k: &Path, spdy: bool, target: &str, ports: &[String]) -> Result<Forward> {
        let mut args = vec!["port-forward", target];
        args.extend(ports.iter().map(String::as_str));
        let mut cmd = c.kubectl_cmd(k, &args);
        cmd.env(
            "KUBECTL_PORT_FORWARD_WEBSOCKETS",
            if spdy { "false" } else { "true" },
        );
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().context("starting kubectl port-forward")?;
        let stdout = child.stdout.take().context("stdout")?;
        let mut f = Forward { child };
        let mut lines = BufReader::new(stdout).lines();
        let mut listening = 0;
        while listening < ports.len() {
            match lines.next() {
                Some(l) => {
                    if l?.starts_with("Forwarding from 127.0.0.1:") {
                        listening += 1;
                    }
                }
                None => bail!("kubectl port-forward {target} ended: {}", f.stderr()),
            }
        }
        // Keep draining stdout ("Handling connection for ...") so kubectl never blocks.
        std::thread::spawn(move || lines.for_each(drop));
        Ok(f)
    }

    /// Waits for kubectl to end; its exit code and stderr.
    fn wait(&mut self) -> Result<(Option<i32>, String)> {
        let st = self.child.wait()?;
        Ok((st.code(), self.stderr()))
    }

    fn stderr(&mut self) -> String {
        let mut s = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            let _ = e.read_to_string(&mut s);
        }
        s
    }
}

/// An HTTP/1.0 GET of `/` through 127.0.0.1:`port`; the whole answer.
fn get(port: u16) -> Result<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(20)))?;
    s.write_all(b"GET / HTTP/1.0\r\nHost: web\r\n\r\n")?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

fn nginx_answers(port: u16) -> Result<()> {
    let a = get(port)?;
    ensure!(
        a.starts_with("HTTP/1.1 200") && a.contains("Welcome to nginx!"),
        "{a}"
    );
    Ok(())
}

#[test]
fn kubectl_port_forward() -> Result<()> {
    let c = Cluster::up_nodes("kpf", 2)?;
    create(&c, WEB)?;
    create(&c, SVC)?;
    let pods = wait_for("two running web pods", 60, || {
        let out = kc(
            &c,
            &[
                "get",
                "pods",
                "-l",
                "app=web",
                "-o",
                "jsonpath={range .items[?(@.status.phase==\"Running\")]}{.metadata.name} {end}",
            ],
        )?;
        let names: Vec<String> = out.split_whitespace().map(String::from).collect();
        Ok((names.len() == 2).then_some(names))
    })?;
    for k in kubectls() {
        for spdy in [false, true] {
            over(&c, &k, spdy, &pods[0]).with_context(|| format!("{} spdy={spdy}", k.display()))?;
        }
    }
    // The pod goes: kubectl's forward to it ends ("lost connection to pod").
    let k = &kubectls()[0];
    let p = free_port();
    let mut f = Forward::start(
        &c,
        k,
        false,
        &format!("pod/{}", pods[1]),
        &[format!("{p}:80")],
    )?;
    nginx_answers(p)?;
    kc(&c, &["delete", "pod", &pods[1], "--wait=false"])?;
    let (code, err) = f.wait()?;
    ensure!(
        code != Some(0) && err.contains("lost connection to pod"),
        "{code:?} {err}"
    );
    Ok(())
}

fn over(c: &Cluster, k: &Path, spdy: bool, pod: &str) -> Result<()> {
    // A pod, the Service (port 8080 → 80) and the Deployment, as kubectl resolves them.
    for (target, remote) in [
        (format!("pod/{pod}"), 80),
        ("svc/web".to_string(), 8080),
        ("deploy/web".to_string(), 80),
    ] {
        let p = free_port();
        let _f = Forward::start(c, k, spdy, &target, &[format!("{p}:{remote}")])?;
        nginx_answers(p).with_context(|| target.clone())?;
    }
    // Two ports at once, and 50 connections at the same time through one of them.
    let (a, b) = (free_port(), free_port());
    let _f = Forward::start(c, k, spdy, pod, &[format!("{a}:80"), format!("{b}:80")])?;
    nginx_answers(b)?;
    let threads: Vec<_> = (0..50)
        .map(|_| std::thread::spawn(move || nginx_answers(a)))
        .collect();
    for t in threads {
        t.join()
            .map_err(|_| anyhow::anyhow!("a client thread panicked"))??;
    }
    drop(_f);
    // A port nothing listens on: kubectl reports the pod's refusal (and, as client-go
    // does since 1.29, gives up the whole forward).
    let p = free_port();
    let mut f = Forward::start(c, k, spdy, pod, &[format!("{p}:81")])?;
    let answer = get(p).unwrap_or_default();
    ensure!(answer.is_empty(), "{answer}");
    let (code, err) = f.wait()?;
    ensure!(
        code != Some(0)
            && err.contains("error forwarding port 81")
            && err.contains("connection refused"),
        "{code:?} {err}"
    );
    Ok(())
}

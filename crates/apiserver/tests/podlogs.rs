//! API test without root: `pods/log` through an in-process API server to an agent endpoint
//! on 127.0.0.1 (the agent crate's server over CRI files in a temporary directory), with the
//! checks kube-apiserver makes, Status errors, following, and kubectl on top.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};

mod common;

use common::TOKEN;

struct Env {
    api: common::Server,
    /// The agent's data directory (logs/).
    data: PathBuf,
    run: PathBuf,
}

async fn env() -> anyhow::Result<Env> {
    let api = common::Server::start().await?;
    let dir = api.dir.path();

    // The node's agent endpoint, trusting the cluster CA for client certificates.
    let (data, run) = (dir.join("node/data"), dir.join("node/run"));
    let endpoint = agent::server::Endpoint::bind(agent::server::Settings {
        addr: "127.0.0.1:0".parse()?,
        ca_pem: api.ca_pem.clone(),
        sans: vec!["127.0.0.1".into()],
        data_dir: data.clone(),
        run_dir: run.clone(),
        kins_exe: std::path::PathBuf::from("kins"),
    })
    .await?;
    let port = endpoint.local_addr()?.port();
    tokio::spawn(endpoint.serve());
    let e = Env { api, data, run };
    let node = |name: &str, port: u16| {
        json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}, "status": {
            "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": port}},
        }})
    };
    e.post("/api/v1/nodes", &node("n1", port)).await?;
    // A node whose agent is not listening (port 1 is closed).
    e.post("/api/v1/nodes", &node("n2", 1)).await?;
    Ok(e)
}

impl Env {
    async fn post(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        let r = self
            .api
            .client
            .post(format!("{}{path}", self.api.url))
            .bearer_auth(TOKEN)
            .json(body)
            .send()
            .await?;
        anyhow::ensure!(r.status().as_u16() == 201, "POST {path}: {}", r.status());
        Ok(r.json().await?)
    }

    /// Creates pod `name` on `node` with these containers; returns its log directory.
    async fn pod(
        &self,
        name: &str,
        node: Option<&str>,
        containers: &[&str],
    ) -> anyhow::Result<PathBuf> {
        let cs: Vec<Value> = containers
            .iter()
            .map(|c| json!({"name": c, "image": "busybox"}))
            .collect();
        let mut spec = json!({"containers": cs});
        if let Some(n) = node {
            spec["nodeName"] = json!(n);
        }
        let pod =
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec});
        let created = self.post("/api/v1/namespaces/default/pods", &pod).await?;
        let uid = created["metadata"]["uid"].as_str().unwrap_or_default();
        Ok(self.data.join(format!("logs/default_{name}_{uid}")))
    }

    async fn logs(&self, pod: &str, query: &str) -> anyhow::Result<(u16, String)> {
        let r = self
            .api
            .client
            .get(format!(
                "{}/api/v1/namespaces/default/pods/{pod}/log?{query}",
                self.api.url
            ))
            .bearer_auth(TOKEN)
            .send()
            .await?;
        let code = r.status().as_u16();
        let text = r.text().await?;
        if code == 200 {
            return Ok((code, text));
        }
        // Errors are Status objects: keep their message.
        let v: Value = serde_json::from_str(&text)?;
        anyhow::ensure!(
            v["kind"] == "Status" && v["code"] == code,
            "not a Status: {text}"
        );
        Ok((code, v["message"].as_str().unwrap_or_default().to_string()))
    }
}

fn write(path: &Path, text: &str) -> anyhow::Result<()> {
    std::fs::create_dir_all(path.parent().expect("a file has a parent"))?;
    std::fs::write(path, text)?;
    Ok(())
}

fn append(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new().append(true).open(path)?;
    f.write_all(text.as_bytes())?;
    Ok(())
}

const LOG: &str = "\
2024-05-01T09:00:00Z stdout F hello
2024-05-01T09:00:01Z stderr F oops
2024-05-01T09:00:02Z stdout F bye
";

#[tokio::test]
async fn pod_logs_are_proxied_to_the_agent() -> anyhow::Result<()> {
    let e = env().await?;
    let dir = e.pod("web", Some("n1"), &["app", "side"]).await?;
    write(
        &dir.join("app/0.log"),
        "2024-05-01T08:00:00Z stdout F run 0\n",
    )?;
    write(&dir.join("app/1.log"), LOG)?;
    let check = |query: &'static str, code: u16, body: &'static str| {
        let e = &e;
        async move {
            assert_eq!(
                e.logs("web", query).await?,
                (code, body.to_string()),
                "{query}"
            );
            anyhow::Ok(())
        }
    };
    check("container=app", 200, "hello\noops\nbye\n").await?;
    check(
        "container=app&tailLines=1&timestamps=true",
        200,
        "2024-05-01T09:00:02Z bye\n",
    )
    .await?;
    check("container=app&limitBytes=3", 200, "hel").await?;
    check(
        "container=app&sinceTime=2024-05-01T09%3A00%3A01Z",
        200,
        "oops\nbye\n",
    )
    .await?;
    check("container=app&previous=true", 200, "run 0\n").await?;
    check(
        "",
        400,
        "a container name must be specified for pod web, choose one of: [app side]",
    )
    .await?;
    check(
        "container=nope",
        400,
        "container nope is not valid for pod web",
    )
    .await?;
    // The agent's own answers come back as Status objects with its message.
    check(
        "container=side",
        404,
        "container \"side\" not found in pod \"web\"",
    )
    .await?;
    check(
        "container=app&tailLines=-1",
        400,
        "tailLines: Invalid value: -1: must be greater than or equal to 0",
    )
    .await?;

    e.pod("lonely", None, &["app"]).await?;
    assert_eq!(
        e.logs("lonely", "").await?,
        (400, "pod lonely does not have a host assigned".into())
    );
    e.pod("far", Some("n2"), &["app"]).await?;
    let (code, msg) = e.logs("far", "").await?;
    assert_eq!(code, 503, "{msg}");
    assert!(
        msg.starts_with("the agent of node n2 could not be reached at 127.0.0.1:1"),
        "{msg}"
    );
    assert_eq!(
        e.logs("ghost", "").await?,
        (404, "pods \"ghost\" not found".into())
    );
    Ok(())
}

#[tokio::test]
async fn follow_streams_live() -> anyhow::Result<()> {
    let e = env().await?;
    let dir = e.pod("tail", Some("n1"), &["app"]).await?;
    let log = dir.join("app/0.log");
    write(&log, LOG)?;
    let uid = dir
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.rsplit('_').next())
        .unwrap_or_default()
        .to_string();
    // Run 0 (attempt 1) is running: its pid is ours.
    let state = e.run.join(format!("pods/{uid}/containers/app.1"));
    write(&state.join("pid"), &std::process::id().to_string())?;

    let mut r = e
        .api
        .client
        .get(format!(
            "{}/api/v1/namespaces/default/pods/tail/log?follow=true&tailLines=1",
            e.api.url
        ))
        .bearer_auth(TOKEN)
        .send()
        .await?;
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(
        r.headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("text/plain")
    );
    let mut next = async || -> anyhow::Result<Option<bytes::Bytes>> {
        Ok(tokio::time::timeout(Duration::from_secs(5), r.chunk()).await??)
    };
    assert_eq!(next().await?.as_deref(), Some(&b"bye\n"[..]));
    tokio::time::sleep(Duration::from_millis(700)).await;
    append(&log, "2024-05-01T09:00:03Z stdout F more\n")?;
    assert_eq!(next().await?.as_deref(), Some(&b"more\n"[..]));
    write(&state.join("exit"), "0")?;
    assert_eq!(next().await?, None);
    Ok(())
}

#[tokio::test]
async fn kubectl_logs() -> anyhow::Result<()> {
    let e = env().await?;
    let dir = e.pod("kc", Some("n1"), &["app"]).await?;
    write(&dir.join("app/0.log"), LOG)?;
    let kubeconfig = e.api.dir.path().join("kubeconfig");
    let ca = e.api.ca_file();
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {}\n    certificate-authority: {}\n\
             users:\n- name: u\n  user:\n    token: {TOKEN}\ncontexts:\n- name: x\n  context:\n    cluster: c\n    user: u\n\
             current-context: x\n",
            e.api.url,
            ca.display()
        ),
    )?;
    let kubectl = |args: &[&str]| {
        let mut cmd = tokio::process::Command::new("kubectl");
        cmd.arg("--kubeconfig").arg(&kubeconfig).args(args);
        async move {
            let out = cmd.output().await?;
            anyhow::Ok((
                out.status.success(),
                String::from_utf8_lossy(&out.stdout).into_owned(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            ))
        }
    };
    assert_eq!(
        kubectl(&["logs", "kc"]).await?,
        (true, "hello\noops\nbye\n".into(), String::new())
    );
    assert_eq!(
        kubectl(&["logs", "kc", "-c", "app", "--tail=2", "--timestamps"]).await?,
        (
            true,
            "2024-05-01T09:00:01Z oops\n2024-05-01T09:00:02Z bye\n".into(),
            String::new()
        )
    );
    let (ok, _, err) = kubectl(&["logs", "kc", "--previous"]).await?;
    assert!(!ok);
    assert!(
        err.contains("previous terminated container \"app\" in pod \"kc\" not found"),
        "{err}"
    );
    // Follow of a container that is not running ends by itself.
    assert_eq!(
        kubectl(&["logs", "-f", "kc", "--limit-bytes=5"]).await?,
        (true, "hello".into(), String::new())
    );
    Ok(())
}

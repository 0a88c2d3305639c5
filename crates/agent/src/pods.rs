//! Pod sync: for every pod bound to this node, a network namespace set up through the CNI
//! plugin, its containers started and restarted per restartPolicy, its status reported;
//! on deletion, the grace period honoured (SIGTERM, wait, SIGKILL), the network torn down,
//! the IP released, and only then the API object let go.

use std::collections::HashSet;
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Container, Pod};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::ResourceExt;
use nix::sys::signal::Signal;
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;

use crate::runtime::{ContainerRuntime, ContainerSpec, ContainerState, ShimRuntime};
use crate::state::{self, ContainerRecord, PodState};
use crate::{AgentError, Config};

struct Ctx {
    client: kube::Client,
    cfg: Arc<Config>,
    runtime: Box<dyn ContainerRuntime>,
    pod_cidr: tokio::sync::watch::Receiver<Option<String>>,
}

fn now() -> String {
    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// Runs the pod controller and the orphan sweeper until the process ends.
pub async fn run(
    client: kube::Client,
    cfg: Arc<Config>,
    pod_cidr: tokio::sync::watch::Receiver<Option<String>>,
) {
    let ctx = Arc::new(Ctx {
        client: client.clone(),
        cfg: cfg.clone(),
        runtime: Box::new(ShimRuntime {
            kins_exe: cfg.kins_exe.clone(),
            cluster: cfg.cluster.clone(),
            node: cfg.node_name.clone(),
        }),
        pod_cidr,
    });
    tokio::spawn(sweep_orphans(ctx.clone()));
    let pods: Api<Pod> = Api::all(client);
    let wc = watcher::Config::default().fields(&format!("spec.nodeName={}", cfg.node_name));
    Controller::new(pods, wc)
        .run(reconcile, error_policy, ctx)
        .for_each(|r| async move {
            if let Err(e) = r {
                tracing::debug!(error = %e, "pod reconcile");
            }
        })
        .await;
}

fn error_policy(_pod: Arc<Pod>, err: &AgentError, _ctx: Arc<Ctx>) -> Action {
    tracing::warn!(error = %err, "pod sync failed; retrying");
    Action::requeue(Duration::from_secs(2))
}

async fn run_cni(
    ctx: &Ctx,
    command: &str,
    uid: &str,
    netns: &Path,
    subnet: Option<&str>,
) -> Result<Value, AgentError> {
    let conf = json!({
        "cniVersion": "1.0.0",
        "name": "kins",
        "type": "kins-bridge",
        "bridge": "cni0",
        "ipam": {
            "type": "kins-host-local",
            "subnet": subnet.unwrap_or(""),
            "dataDir": ctx.cfg.run_dir.join("ipam"),
        },
    });
    let mut child = tokio::process::Command::new(&ctx.cfg.kins_exe)
        .arg("cni")
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", uid)
        .env("CNI_NETNS", netns)
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", "/usr/lib/cni")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(crate::io("running the CNI plugin"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(conf.to_string().as_bytes())
            .await
            .map_err(crate::io("writing to the CNI plugin"))?;
    }
    let out = child
        .wait_with_output()
        .await
        .map_err(crate::io("running the CNI plugin"))?;
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    if !out.status.success() {
        return Err(AgentError::Other(format!(
            "CNI {command} failed: {} {}",
            v["msg"].as_str().unwrap_or(""),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(v)
}

/// The container's command line, as Kubernetes combines command and args (no image yet:
/// a container needs a command).
pub fn argv(c: &Container) -> Option<Vec<String>> {
    let mut v: Vec<String> = c.command.clone().unwrap_or_default();
    v.extend(c.args.clone().unwrap_or_default());
    (!v.is_empty() && !c.command.clone().unwrap_or_default().is_empty()).then_some(v)
}

async fn event(ctx: &Ctx, pod: &Pod, ty: &str, reason: &str, message: &str) {
    let ns = pod.namespace().unwrap_or_default();
    let api: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(ctx.client.clone(), &ns);
    let t = now();
    let ev = json!({
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"generateName": format!("{}.", pod.name_any()), "namespace": ns},
        "involvedObject": {"kind": "Pod", "namespace": ns, "name": pod.name_any(), "uid": pod.uid(), "apiVersion": "v1"},
        "reason": reason, "message": message, "type": ty,
        "source": {"component": "kubelet", "host": ctx.cfg.node_name},
        "reportingComponent": "kubelet", "reportingInstance": ctx.cfg.node_name,
        "firstTimestamp": t, "lastTimestamp": t, "count": 1,
    });
    if let Ok(ev) = serde_json::from_value(ev) {
        if let Err(e) = api.create(&PostParams::default(), &ev).await {
            tracing::debug!(error = %e, "posting an event");
        }
    }
}

fn should_restart(policy: &str, code: i32) -> bool {
    match policy {
        "Never" => false,
        "OnFailure" => code != 0,
        _ => true,
    }
}

/// Kubernetes' container back-off: 10 s doubling to 300 s.
pub fn next_backoff(cur: u64) -> u64 {
    if cur == 0 {
        10
    } else {
        (cur * 2).min(300)
    }
}

async fn reconcile(pod: Arc<Pod>, ctx: Arc<Ctx>) -> Result<Action, AgentError> {
    let uid = pod.uid().unwrap_or_default();
    let cfg = &ctx.cfg;
    if pod.metadata.deletion_timestamp.is_some() {
        let grace = pod
            .metadata
            .deletion_grace_period_seconds
            .unwrap_or(30)
            .max(0) as u64;
        teardown(&ctx, &uid, Duration::from_secs(grace)).await;
        let api: Api<Pod> =
            Api::namespaced(ctx.client.clone(), &pod.namespace().unwrap_or_default());
        let dp = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(kube::api::Preconditions {
                uid: Some(uid.clone()),
                resource_version: None,
            }),
            ..Default::default()
        };
        match api.delete(&pod.name_any(), &dp).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
            Err(e) => return Err(e.into()),
        }
        return Ok(Action::await_change());
    }
    let spec = pod.spec.clone().unwrap_or_default();
    let host_network = spec.host_network.unwrap_or(false);
    let mut st = state::load(&cfg.run_dir, &uid).unwrap_or_else(|| PodState {
        uid: uid.clone(),
        namespace: pod.namespace().unwrap_or_default(),
        name: pod.name_any(),
        host_network,
        start_time: now(),
        ..Default::default()
    });
    // Sandbox: the pod's network namespace and IP.
    if st.ip.is_empty() {
        if host_network {
            st.ip = cfg.node_ip.to_string();
        } else {
            let cidr = ctx.pod_cidr.borrow().clone();
            let Some(cidr) = cidr else {
                tracing::info!(pod = %pod.name_any(), "waiting for the node's podCIDR");
                return Ok(Action::requeue(Duration::from_millis(500)));
            };
            let netns = state::netns_path(&cfg.run_dir, &uid);
            std::fs::create_dir_all(state::pod_dir(&cfg.run_dir, &uid))
                .map_err(crate::io("creating the pod directory"))?;
            if !netns.exists() {
                net::create_netns(&netns)
                    .map_err(|e| AgentError::Other(format!("pod {}: {e}", pod.name_any())))?;
            }
            // Recorded before ADD, so a DEL after a crash in between releases the IP.
            st.subnet = cidr.clone();
            state::save(&cfg.run_dir, &st)?;
            let res = run_cni(&ctx, "ADD", &uid, &netns, Some(&cidr)).await?;
            let addr = res["ips"][0]["address"].as_str().unwrap_or("");
            st.ip = addr.split('/').next().unwrap_or("").to_string();
            if st.ip.is_empty() {
                return Err(AgentError::Other(format!("CNI ADD gave no IP: {res}")));
            }
            tracing::info!(pod = %pod.name_any(), ip = %st.ip, "pod network ready");
        }
        state::save(&cfg.run_dir, &st)?;
    }
    // Containers.
    let policy = spec
        .restart_policy
        .clone()
        .unwrap_or_else(|| "Always".into());
    let netns = (!host_network).then(|| state::netns_path(&cfg.run_dir, &uid));
    let mut statuses = Vec::new();
    let mut changed = false;
    let now_s = chrono::Utc::now().timestamp();
    for c in &spec.containers {
        let rec = st.containers.entry(c.name.clone()).or_default();
        let image = c.image.clone().unwrap_or_default();
        let Some(argv) = argv(c) else {
            statuses.push(json!({
                "name": c.name, "image": image, "imageID": "", "ready": false, "restartCount": 0, "started": false,
                "state": {"waiting": {"reason": "CreateContainerConfigError", "message": "kins runs containers as plain processes until image support lands: set `command`"}},
            }));
            continue;
        };
        if rec.attempts == 0 {
            rec.attempts = 1;
            changed = true;
            start(&ctx, &uid, c, &argv, netns.as_deref(), 1)?;
            event(
                &ctx,
                &pod,
                "Normal",
                "Started",
                &format!("Started container {}", c.name),
            )
            .await;
        }
        let dir = state::container_dir(&cfg.run_dir, &uid, &c.name, rec.attempts);
        let mut cs = ctx.runtime.state(&dir);
        // Exited or failed: restart per policy, with back-off.
        let exit = match &cs {
            ContainerState::Exited { code, .. } => Some(*code),
            ContainerState::StartFailed { .. } => Some(128),
            ContainerState::Lost => Some(137),
            _ => None,
        };
        if let Some(code) = exit {
            if rec.reported != rec.attempts {
                rec.reported = rec.attempts;
                changed = true;
                match &cs {
                    ContainerState::StartFailed { message, .. } => {
                        event(
                            &ctx,
                            &pod,
                            "Warning",
                            "Failed",
                            &format!("Error: failed to start container \"{}\": {message}", c.name),
                        )
                        .await;
                    }
                    _ => {
                        event(
                            &ctx,
                            &pod,
                            "Normal",
                            "Exited",
                            &format!("Container {} exited with code {code}", c.name),
                        )
                        .await;
                    }
                }
            }
            if should_restart(&policy, code) {
                if rec.not_before == 0 {
                    rec.backoff = next_backoff(rec.backoff);
                    rec.not_before = now_s + rec.backoff as i64;
                    rec.last_state = Some(terminated_json(&cs));
                    changed = true;
                } else if now_s >= rec.not_before {
                    rec.attempts += 1;
                    rec.not_before = 0;
                    changed = true;
                    start(&ctx, &uid, c, &argv, netns.as_deref(), rec.attempts)?;
                    cs = ContainerState::Starting;
                }
            }
        }
        let rec = st.containers.get(&c.name).cloned().unwrap_or_default();
        statuses.push(container_status(c, &uid, &cs, &rec));
    }
    if changed {
        state::save(&cfg.run_dir, &st)?;
    }
    let status = pod_status(&pod, &st, &statuses, &policy, cfg);
    if !same_status(pod.status.as_ref(), &status) {
        let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &st.namespace);
        api.patch_status(
            &pod.name_any(),
            &PatchParams::default(),
            &Patch::Merge(json!({"status": status})),
        )
        .await?;
    }
    // A container that is still starting is looked at again soon, so Running is reported
    // as soon as its shim says so; otherwise once a second (exits, restarts).
    let starting = statuses
        .iter()
        .any(|s| s["state"]["waiting"]["reason"] == "ContainerCreating");
    Ok(Action::requeue(if starting {
        Duration::from_millis(10)
    } else {
        Duration::from_secs(1)
    }))
}

fn start(
    ctx: &Ctx,
    uid: &str,
    c: &Container,
    argv: &[String],
    netns: Option<&Path>,
    attempt: u32,
) -> Result<(), AgentError> {
    let cfg = &ctx.cfg;
    let env = c
        .env
        .clone()
        .unwrap_or_default()
        .into_iter()
        .filter_map(|e| Some((e.name, e.value?)))
        .collect();
    let spec = ContainerSpec {
        argv: argv.to_vec(),
        env,
        working_dir: c.working_dir.clone(),
        netns: netns.map(Path::to_path_buf),
        log: cfg
            .data_dir
            .join("logs")
            .join(uid)
            .join(format!("{}.{attempt}.log", c.name)),
        state_dir: state::container_dir(&cfg.run_dir, uid, &c.name, attempt),
    };
    tracing::info!(pod_uid = %uid, container = %c.name, attempt, "starting container");
    ctx.runtime.start(&spec)
}

fn terminated_json(cs: &ContainerState) -> Value {
    match cs {
        ContainerState::Exited {
            code,
            started_at,
            finished_at,
        } => json!({"terminated": {
            "exitCode": code, "reason": if *code == 0 { "Completed" } else { "Error" },
            "startedAt": started_at, "finishedAt": finished_at, "containerID": ""}}),
        ContainerState::StartFailed { message, at } => json!({"terminated": {
            "exitCode": 128, "reason": "StartError", "message": message, "finishedAt": at}}),
        _ => {
            json!({"terminated": {"exitCode": 137, "reason": "Error", "message": "the container's shim disappeared"}})
        }
    }
}

fn container_status(c: &Container, uid: &str, cs: &ContainerState, rec: &ContainerRecord) -> Value {
    let restart_count = rec.attempts.saturating_sub(1);
    let waiting_backoff = rec.not_before != 0;
    let (state, ready, started) = match cs {
        ContainerState::Running { started_at, .. } => {
            (json!({"running": {"startedAt": started_at}}), true, true)
        }
        ContainerState::Starting => (
            json!({"waiting": {"reason": "ContainerCreating"}}),
            false,
            false,
        ),
        _ if waiting_backoff => {
            let why = match cs {
                ContainerState::StartFailed { message, .. } => message.clone(),
                _ => format!("back-off restarting failed container {} in pod", c.name),
            };
            (
                json!({"waiting": {"reason": if matches!(cs, ContainerState::StartFailed { .. }) { "RunContainerError" } else { "CrashLoopBackOff" }, "message": why}}),
                false,
                false,
            )
        }
        other => (terminated_json(other), false, false),
    };
    let mut s = json!({
        "name": c.name, "image": c.image.clone().unwrap_or_default(), "imageID": "",
        "containerID": format!("kins://{uid}/{}", c.name),
        "ready": ready, "started": started, "restartCount": restart_count, "state": state,
    });
    if let Some(last) = &rec.last_state {
        s["lastState"] = last.clone();
    }
    s
}

fn pod_status(pod: &Pod, st: &PodState, statuses: &[Value], policy: &str, cfg: &Config) -> Value {
    let running = statuses
        .iter()
        .filter(|s| s["state"].get("running").is_some())
        .count();
    let terminated: Vec<i64> = statuses
        .iter()
        .filter_map(|s| s["state"]["terminated"]["exitCode"].as_i64())
        .collect();
    let all_ready = !statuses.is_empty() && statuses.iter().all(|s| s["ready"] == true);
    let all_done = !statuses.is_empty() && terminated.len() == statuses.len();
    let phase = if all_done && policy == "Never" {
        if terminated.iter().all(|c| *c == 0) {
            "Succeeded"
        } else {
            "Failed"
        }
    } else if all_done && policy == "OnFailure" && terminated.iter().all(|c| *c == 0) {
        "Succeeded"
    } else if running > 0
        || statuses.iter().any(|s| {
            s["restartCount"].as_u64().unwrap_or(0) > 0 || s["state"].get("terminated").is_some()
        })
    {
        "Running"
    } else {
        "Pending"
    };
    let old_conditions = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default();
    let t = now();
    let cond = |ty: &str, ok: bool| {
        let status = if ok { "True" } else { "False" };
        let since = old_conditions
            .iter()
            .find(|c| c.type_ == ty && c.status == status)
            .and_then(|c| c.last_transition_time.as_ref())
            .map(|t| t.0.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
            .unwrap_or_else(|| t.clone());
        let mut c = json!({"type": ty, "status": status, "lastTransitionTime": since, "lastProbeTime": null});
        if !ok && (ty == "Ready" || ty == "ContainersReady") {
            c["reason"] = json!("ContainersNotReady");
        }
        c
    };
    json!({
        "phase": phase,
        "conditions": [cond("PodReadyToStartContainers", !st.ip.is_empty()), cond("Initialized", true), cond("Ready", all_ready), cond("ContainersReady", all_ready), cond("PodScheduled", true)],
        "hostIP": cfg.node_ip.to_string(),
        "hostIPs": [{"ip": cfg.node_ip.to_string()}],
        "podIP": st.ip,
        "podIPs": [{"ip": st.ip}],
        "startTime": st.start_time,
        "containerStatuses": statuses,
    })
}

/// Whether the reported status already says what we would patch (so nothing is written).
fn same_status(old: Option<&k8s_openapi::api::core::v1::PodStatus>, new: &Value) -> bool {
    let Some(old) = old else { return false };
    let Ok(old) = serde_json::to_value(old) else {
        return false;
    };
    let strip = |v: &Value| -> Value {
        let mut v = v.clone();
        if let Some(cs) = v.get_mut("conditions").and_then(Value::as_array_mut) {
            for c in cs {
                if let Some(o) = c.as_object_mut() {
                    o.remove("lastTransitionTime");
                    o.remove("lastProbeTime");
                }
            }
        }
        v
    };
    let (o, n) = (strip(&old), strip(new));
    [
        "phase",
        "podIP",
        "hostIP",
        "containerStatuses",
        "conditions",
    ]
    .iter()
    .all(|k| o.get(*k) == n.get(*k) || (o.get(*k).is_none() && n[*k].is_null()))
}

/// Stops a pod's containers within `grace`, tears down its network and state.
async fn teardown(ctx: &Ctx, uid: &str, grace: Duration) {
    let cfg = &ctx.cfg;
    let dir = state::pod_dir(&cfg.run_dir, uid);
    let cdirs: Vec<std::path::PathBuf> = std::fs::read_dir(dir.join("containers"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .collect();
    for d in &cdirs {
        ctx.runtime.signal(d, Signal::SIGTERM);
    }
    let deadline = tokio::time::Instant::now() + grace;
    while tokio::time::Instant::now() < deadline
        && cdirs
            .iter()
            .any(|d| matches!(ctx.runtime.state(d), ContainerState::Running { .. }))
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for d in &cdirs {
        ctx.runtime.signal(d, Signal::SIGKILL);
    }
    let netns = state::netns_path(&cfg.run_dir, uid);
    let st = state::load(&cfg.run_dir, uid);
    if !st.as_ref().is_some_and(|s| s.host_network) {
        // DEL gets the configuration ADD had: the pod CIDR the IP came from.
        let subnet = st
            .as_ref()
            .map(|s| s.subnet.clone())
            .filter(|s| !s.is_empty())
            .or_else(|| ctx.pod_cidr.borrow().clone());
        if let Err(e) = run_cni(ctx, "DEL", uid, &netns, subnet.as_deref()).await {
            tracing::warn!(pod_uid = %uid, error = %e, "CNI DEL");
        }
        if let Err(e) = net::delete_netns(&netns) {
            tracing::warn!(pod_uid = %uid, error = %e, "deleting the pod netns");
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    tracing::info!(pod_uid = %uid, "pod torn down");
}

/// Tears down pods whose API object is gone (deleted while the agent was away).
async fn sweep_orphans(ctx: Arc<Ctx>) {
    let pods: Api<Pod> = Api::all(ctx.client.clone());
    loop {
        tokio::time::sleep(Duration::from_secs(5)).await;
        let lp = ListParams::default().fields(&format!("spec.nodeName={}", ctx.cfg.node_name));
        let Ok(list) = pods.list(&lp).await else {
            continue;
        };
        let live: HashSet<String> = list.items.iter().filter_map(|p| p.uid()).collect();
        for uid in state::all(&ctx.cfg.run_dir) {
            if !live.contains(&uid) {
                tracing::info!(pod_uid = %uid, "tearing down a pod whose object is gone");
                teardown(&ctx, &uid, Duration::from_secs(2)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_and_args() {
        let c: Container = serde_json::from_value(
            json!({"name": "a", "command": ["sh", "-c"], "args": ["echo hi"]}),
        )
        .expect("container");
        assert_eq!(
            argv(&c),
            Some(vec!["sh".into(), "-c".into(), "echo hi".into()])
        );
        let c: Container =
            serde_json::from_value(json!({"name": "a", "args": ["x"]})).expect("container");
        assert_eq!(argv(&c), None, "args alone need an image entrypoint");
        assert!(
            should_restart("Always", 0)
                && should_restart("OnFailure", 1)
                && !should_restart("OnFailure", 0)
                && !should_restart("Never", 1)
        );
        assert_eq!(
            (next_backoff(0), next_backoff(10), next_backoff(200)),
            (10, 20, 300)
        );
    }
}

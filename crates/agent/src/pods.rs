//! Pod sync: for every pod bound to this node, a network namespace set up through the CNI
//! plugin, its containers started and restarted per restartPolicy, its status reported;
//! on deletion, the grace period honoured (SIGTERM, wait, SIGKILL), the network torn down,
//! the IP released, and only then the API object let go.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, Secret, Service};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::runtime::WatchStreamExt;
use kube::ResourceExt;
use nix::sys::signal::Signal;
use serde_json::{json, Value};

use crate::runtime::{ContainerRuntime, ContainerSpec, ContainerState, ShimRuntime};
use crate::state::{self, ContainerRecord, PodState};
use crate::{spec, volumes, AgentError, Config};

struct Ctx {
    client: kube::Client,
    cfg: Arc<Config>,
    runtime: Box<dyn ContainerRuntime>,
    images: Arc<runtime::image::ImageStore>,
    /// Readiness, liveness and startup probes of running containers.
    prober: Arc<crate::probes::Prober>,
    /// Every Service, kept by a watch (for the service links in containers' environment).
    services: kube::runtime::reflector::Store<Service>,
    pod_cidr: tokio::sync::watch::Receiver<Option<String>>,
    /// The node's CNI configuration and plugin runner.
    cni: Arc<crate::cni::NodeCni>,
}

fn now() -> String {
    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// Runs the pod controller and the orphan sweeper until the process ends.
pub async fn run(
    client: kube::Client,
    cfg: Arc<Config>,
    cni: Arc<crate::cni::NodeCni>,
    pod_cidr: tokio::sync::watch::Receiver<Option<String>>,
) {
    let images = match runtime::image::ImageStore::open(&cfg.images_dir) {
        Ok(s) => Arc::new(s),
        Err(e) => {
            tracing::error!(error = %e, dir = %cfg.images_dir.display(), "opening the image store");
            return;
        }
    };
    let (probe_tx, probe_rx) = tokio::sync::mpsc::unbounded_channel();
    let prober = Arc::new(crate::probes::Prober::new(cfg.kins_exe.clone(), probe_tx));
    // A probe result that flips reconciles its pod at once.
    let probed = futures::stream::unfold(probe_rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|k: crate::probes::PodKey| (k.object_ref(), rx))
    });
    let (services, writer) = kube::runtime::reflector::store();
    let svc_api: Api<Service> = Api::all(client.clone());
    tokio::spawn(
        watcher(svc_api, watcher::Config::default())
            .default_backoff()
            .reflect(writer)
            .for_each(|_| futures::future::ready(())),
    );
    let ctx = Arc::new(Ctx {
        client: client.clone(),
        cfg: cfg.clone(),
        images,
        prober,
        services,
        runtime: Box::new(ShimRuntime {
            kins_exe: cfg.kins_exe.clone(),
            cluster: cfg.cluster.clone(),
            node: cfg.node_name.clone(),
        }),
        pod_cidr,
        cni,
    });
    tokio::spawn(sweep_orphans(ctx.clone()));
    let pods: Api<Pod> = Api::all(client);
    let wc = watcher::Config::default().fields(&format!("spec.nodeName={}", cfg.node_name));
    Controller::new(pods, wc)
        .reconcile_on(probed)
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

/// Posts an event about the pod in the background (events never hold up a pod's start).
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
    if let Ok(ev) = serde_json::from_value::<k8s_openapi::api::core::v1::Event>(ev) {
        tokio::spawn(async move {
            if let Err(e) = api.create(&PostParams::default(), &ev).await {
                tracing::debug!(error = %e, "posting an event");
            }
        });
    }
}

fn should_restart(policy: &str, code: i32) -> bool {
    match policy {
        "Never" => false,
        "OnFailure" => code != 0,
        _ => true,
    }
}

/// How often a running pod's volumes are written again from their sources.
const VOLUME_RESYNC_SECONDS: i64 = 60;
/// Projected service-account tokens (3607 s) are renewed at 80% of their life.
const TOKEN_REFRESH_SECONDS: i64 = 2885;

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
            match ctx.cni.add(&pod, &uid, &netns).await {
                Ok((ip, ms)) => {
                    st.ip = ip;
                    st.sandbox_error.clear();
                    tracing::info!(pod = %pod.name_any(), ip = %st.ip, add_ms = %format!("{ms:.2}"), "pod network ready");
                }
                Err(e) => {
                    // The kubelet's event; the chain undid its part, the pod waits.
                    let msg = format!(
                        "Failed to create pod sandbox: failed to set up the pod network: {e}"
                    );
                    if st.sandbox_error != msg {
                        event(&ctx, &pod, "Warning", "FailedCreatePodSandBox", &msg).await;
                        st.sandbox_error = msg;
                        state::save(&cfg.run_dir, &st)?;
                    }
                    return Err(e);
                }
            }
        }
        state::save(&cfg.run_dir, &st)?;
    }
    // The rest of the sandbox: IPC and UTS namespaces (hostname) and the /etc files.
    if !st.sandbox_ready {
        sandbox(&ctx, &pod, &st)?;
        st.sandbox_ready = true;
        state::save(&cfg.run_dir, &st)?;
    }
    let policy = spec
        .restart_policy
        .clone()
        .unwrap_or_else(|| "Always".into());
    // Volumes, before any container starts.
    let now_s = chrono::Utc::now().timestamp();
    if !st.volumes_ready {
        match volumes::prepare(&ctx.client, cfg, &pod, &st.ip, true).await {
            Ok(_) => {
                st.volumes_ready = true;
                st.volume_error.clear();
                st.volumes_synced_at = now_s;
                st.token_at = now_s;
                state::save(&cfg.run_dir, &st)?;
            }
            Err(e) => {
                let msg = e.to_string();
                if st.volume_error != msg {
                    event(&ctx, &pod, "Warning", "FailedMount", &msg).await;
                    st.volume_error = msg;
                    state::save(&cfg.run_dir, &st)?;
                }
                let waiting = |c: &Container| {
                    json!({"name": c.name, "image": c.image.clone().unwrap_or_default(), "imageID": "",
                        "ready": false, "restartCount": 0, "started": false,
                        "state": {"waiting": {"reason": "ContainerCreating"}}})
                };
                let init: Vec<Value> = spec
                    .init_containers
                    .iter()
                    .flatten()
                    .map(|c| {
                        let mut v = waiting(c);
                        v["state"]["waiting"]["reason"] = json!("PodInitializing");
                        v
                    })
                    .collect();
                let statuses: Vec<Value> = spec.containers.iter().map(waiting).collect();
                report(&ctx, &pod, &st, &init, &statuses, &[], &policy).await?;
                return Ok(Action::requeue(Duration::from_secs(2)));
            }
        }
    }
    // Resync volumes every minute; a new token at 80% of its life (3607 s).
    if now_s - st.volumes_synced_at >= VOLUME_RESYNC_SECONDS {
        let new_token = now_s - st.token_at >= TOKEN_REFRESH_SECONDS;
        match volumes::prepare(&ctx.client, cfg, &pod, &st.ip, new_token).await {
            Ok(_) => {
                st.volumes_synced_at = now_s;
                if new_token {
                    st.token_at = now_s;
                }
                state::save(&cfg.run_dir, &st)?;
            }
            Err(e) => tracing::warn!(pod = %st.name, error = %e, "volume resync"),
        }
    }
    if spec.share_process_namespace == Some(true) {
        start_pause(&ctx, &st)?;
    }
    let mut changed = false;
    // Init containers, one after the other; the app containers once all have succeeded.
    let init_policy = if policy == "Never" {
        "Never"
    } else {
        "OnFailure"
    };
    let mut init_statuses = Vec::new();
    let mut initialized = true;
    for c in spec.init_containers.iter().flatten() {
        if !initialized {
            init_statuses.push(
                json!({"name": c.name, "image": c.image.clone().unwrap_or_default(),
                "imageID": "", "ready": false, "restartCount": 0, "started": false,
                "state": {"waiting": {"reason": "PodInitializing"}}}),
            );
            continue;
        }
        let sidecar = c.restart_policy.as_deref() == Some("Always");
        let s = drive(
            &ctx,
            &pod,
            &mut st,
            c,
            if sidecar { "Always" } else { init_policy },
            now_s,
            &mut changed,
        )
        .await?;
        let done = if sidecar {
            s["state"].get("running").is_some()
        } else {
            s["state"]["terminated"]["exitCode"] == 0
        };
        initialized = done;
        init_statuses.push(s);
    }
    let mut statuses = Vec::new();
    for c in &spec.containers {
        if !initialized {
            statuses.push(
                json!({"name": c.name, "image": c.image.clone().unwrap_or_default(),
                "imageID": "", "ready": false, "restartCount": 0, "started": false,
                "state": {"waiting": {"reason": "PodInitializing"}}}),
            );
            continue;
        }
        statuses.push(drive(&ctx, &pod, &mut st, c, &policy, now_s, &mut changed).await?);
    }
    // Ephemeral containers (kubectl debug): once the pod's containers run, each started
    // once and never restarted; with a target, in that container's PID namespace.
    let mut ephemeral_statuses = Vec::new();
    for ec in spec.ephemeral_containers.iter().flatten() {
        if !initialized {
            break;
        }
        let c = ephemeral_as_container(ec)?;
        ephemeral_statuses
            .push(drive(&ctx, &pod, &mut st, &c, "Never", now_s, &mut changed).await?);
    }
    if changed {
        state::save(&cfg.run_dir, &st)?;
    }
    report(
        &ctx,
        &pod,
        &st,
        &init_statuses,
        &statuses,
        &ephemeral_statuses,
        &policy,
    )
    .await?;
    // A container that is still starting is looked at again soon, so Running is reported
    // as soon as its shim says so; otherwise once a second (exits, restarts).
    let starting = statuses
        .iter()
        .chain(init_statuses.iter())
        .any(|s| s["state"]["waiting"]["reason"] == "ContainerCreating")
        || init_statuses
            .iter()
            .any(|s| s["state"].get("running").is_some());
    Ok(Action::requeue(if starting {
        Duration::from_millis(10)
    } else {
        Duration::from_secs(1)
    }))
}

/// An ephemeral container as the container it runs as (the same fields, bar the target).
fn ephemeral_as_container(
    ec: &k8s_openapi::api::core::v1::EphemeralContainer,
) -> Result<Container, AgentError> {
    let mut v = serde_json::to_value(ec).map_err(|e| AgentError::Other(e.to_string()))?;
    if let Some(o) = v.as_object_mut() {
        o.remove("targetContainerName");
    }
    serde_json::from_value(v).map_err(|e| AgentError::Other(e.to_string()))
}

/// The PID namespace of the running container `target` of the pod, for an ephemeral
/// container that targets it.
fn target_pidns(ctx: &Ctx, st: &PodState, target: &str) -> Option<std::path::PathBuf> {
    let rec = st.containers.get(target)?;
    let dir = state::container_dir(&ctx.cfg.run_dir, &st.uid, target, rec.attempts);
    match ctx.runtime.state(&dir) {
        ContainerState::Running { pid, .. } => {
            Some(std::path::PathBuf::from(format!("/proc/{pid}/ns/pid")))
        }
        _ => None,
    }
}

async fn report(
    ctx: &Ctx,
    pod: &Pod,
    st: &PodState,
    init: &[Value],
    statuses: &[Value],
    ephemeral: &[Value],
    policy: &str,
) -> Result<(), AgentError> {
    let mut status = pod_status(pod, st, init, statuses, policy, &ctx.cfg);
    if !ephemeral.is_empty() {
        status["ephemeralContainerStatuses"] = json!(ephemeral);
    }
    if !same_status(pod.status.as_ref(), &status) {
        let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &st.namespace);
        api.patch_status(
            &pod.name_any(),
            &PatchParams::default(),
            &Patch::Merge(json!({"status": status})),
        )
        .await?;
    }
    Ok(())
}

/// The pod's IPC and UTS namespaces (hostname set) and its /etc/hosts, /etc/hostname and
/// /etc/resolv.conf.
fn sandbox(ctx: &Ctx, pod: &Pod, st: &PodState) -> Result<(), AgentError> {
    let cfg = &ctx.cfg;
    let dir = state::pod_dir(&cfg.run_dir, &st.uid);
    std::fs::create_dir_all(&dir).map_err(crate::io(format!("creating {}", dir.display())))?;
    let hostname = if st.host_network {
        cfg.node_name.clone()
    } else {
        spec::hostname(pod)
    };
    net::create_ipc_uts(&dir.join("ipc"), &dir.join("uts"), &hostname)
        .map_err(|e| AgentError::Other(format!("pod {}: {e}", st.name)))?;
    let etc = volumes::pod_data_dir(cfg, &st.uid).join("etc");
    std::fs::create_dir_all(&etc).map_err(crate::io(format!("creating {}", etc.display())))?;
    let main = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let upstream = std::fs::read_to_string("/run/systemd/resolve/resolv.conf").ok();
    let host_resolv = spec::host_resolv(&main, upstream.as_deref());
    let dns = spec::DnsSettings {
        cluster_dns: &cfg.cluster_dns,
        cluster_domain: &cfg.cluster_domain,
        host_resolv: &host_resolv,
    };
    for (name, text) in [
        ("hosts", spec::hosts_file(pod, &st.ip)),
        ("hostname", format!("{hostname}\n")),
        ("resolv.conf", spec::resolv_conf(pod, &dns)),
    ] {
        let p = etc.join(name);
        std::fs::write(&p, text).map_err(crate::io(format!("writing {}", p.display())))?;
    }
    Ok(())
}

/// Starts, watches and restarts one container; returns its status.
async fn drive(
    ctx: &Arc<Ctx>,
    pod: &Pod,
    st: &mut PodState,
    c: &Container,
    policy: &str,
    now_s: i64,
    changed: &mut bool,
) -> Result<Value, AgentError> {
    let cfg = &ctx.cfg;
    let uid = st.uid.clone();
    let mut rec = st.containers.get(&c.name).cloned().unwrap_or_default();
    let mut cs = if rec.attempts == 0 {
        ContainerState::Starting
    } else {
        ctx.runtime.state(&state::container_dir(
            &cfg.run_dir,
            &uid,
            &c.name,
            rec.attempts,
        ))
    };
    let exit = match &cs {
        ContainerState::Exited { code, .. } => Some(*code),
        ContainerState::StartFailed { .. } => Some(128),
        ContainerState::Lost => Some(137),
        _ => None,
    };
    if exit.is_some() && rec.reported != rec.attempts {
        rec.reported = rec.attempts;
        *changed = true;
        match &cs {
            ContainerState::StartFailed { message, .. } => {
                let msg = format!("Error: failed to start container \"{}\": {message}", c.name);
                event(ctx, pod, "Warning", "Failed", &msg).await;
            }
            ContainerState::Exited { reason, .. } if reason == "OOMKilled" => {
                let msg = format!("Container {} was OOM-killed (memory limit reached)", c.name);
                event(ctx, pod, "Warning", "OOMKilled", &msg).await;
            }
            _ => {}
        }
    }
    // Start: the first time, or a restart whose back-off is over.
    let mut want = rec.attempts == 0;
    if let Some(code) = exit {
        if should_restart(policy, code) {
            if rec.not_before == 0 {
                rec.backoff = next_backoff(rec.backoff);
                rec.not_before = now_s + rec.backoff as i64;
                rec.last_state = Some(terminated_json(&cs, &rec));
                *changed = true;
            } else if now_s >= rec.not_before {
                want = true;
            }
        }
    }
    if rec.waiting.is_some() && rec.not_before != 0 && now_s < rec.not_before {
        want = false;
    }
    if want {
        match start(ctx, pod, st, c, rec.attempts + 1).await {
            Ok(started) => {
                rec.attempts += 1;
                rec.not_before = if rec.waiting.is_some() {
                    0
                } else {
                    rec.not_before
                };
                if exit.is_some() {
                    rec.not_before = 0;
                }
                rec.waiting = None;
                rec.id = started.id;
                rec.image = started.image;
                rec.image_id = started.image_id;
                // The shim takes a few milliseconds to start the process: wait for it
                // here (up to 50 ms), so Running is reported by this very sync.
                let dir = state::container_dir(&cfg.run_dir, &uid, &c.name, rec.attempts);
                cs = ContainerState::Starting;
                for _ in 0..50 {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    cs = ctx.runtime.state(&dir);
                    if cs != ContainerState::Starting {
                        break;
                    }
                }
            }
            Err((reason, message)) => {
                let first = rec.waiting.as_ref().map(|w| &w.1) != Some(&message);
                if first {
                    let ev = if reason == "ErrImagePull" {
                        format!(
                            "Failed to pull image \"{}\": {message}",
                            c.image.clone().unwrap_or_default()
                        )
                    } else {
                        format!("Error: {message}")
                    };
                    event(ctx, pod, "Warning", "Failed", &ev).await;
                    if reason == "ErrImagePull" {
                        event(ctx, pod, "Warning", "Failed", "Error: ErrImagePull").await;
                    }
                }
                // Image pulls back off like restarts; configuration errors are retried.
                let pull = reason == "ErrImagePull";
                rec.backoff = if pull { next_backoff(rec.backoff) } else { 0 };
                rec.not_before = if pull { now_s + rec.backoff as i64 } else { 0 };
                let shown = if pull && !first {
                    "ImagePullBackOff"
                } else {
                    reason.as_str()
                };
                rec.waiting = Some((shown.to_string(), message));
            }
        }
        *changed = true;
    }
    // Probes of the running container; a failed liveness (or startup) probe kills it,
    // and the restart policy takes it from there.
    let key = crate::probes::ContainerKey {
        uid: uid.clone(),
        container: c.name.clone(),
        attempt: rec.attempts,
    };
    let dir = state::container_dir(&cfg.run_dir, &uid, &c.name, rec.attempts);
    let probe = match &cs {
        ContainerState::Running { started_at, .. } => {
            ctx.prober.ensure(
                key.clone(),
                crate::probes::PodKey {
                    namespace: st.namespace.clone(),
                    name: st.name.clone(),
                },
                &st.ip,
                c,
                dir.clone(),
                crate::probes::started_instant(started_at),
            );
            for (reason, msg) in ctx.prober.take_events(&key) {
                event(ctx, pod, "Warning", &reason, &msg).await;
            }
            ctx.prober.status(&key)
        }
        _ => {
            ctx.prober.forget_run(&key);
            crate::probes::ProbeStatus::default()
        }
    };
    if let Some(msg) = &probe.liveness_failed {
        if rec.killed != rec.attempts {
            rec.killed = rec.attempts;
            *changed = true;
            event(ctx, pod, "Normal", "Killing", msg).await;
            let grace = probe.kill_grace_seconds.unwrap_or_else(|| {
                pod.spec
                    .as_ref()
                    .and_then(|s| s.termination_grace_period_seconds)
                    .unwrap_or(30)
            });
            ctx.runtime.signal(&dir, Signal::SIGTERM);
            let ctx2 = ctx.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_secs(grace.max(0) as u64)).await;
                ctx2.runtime.signal(&dir, Signal::SIGKILL);
            });
        }
    }
    st.containers.insert(c.name.clone(), rec.clone());
    Ok(container_status(c, &cs, &rec, &probe))
}

/// "host packages: nginx 1.22, libc6 2.36, ..." → "host packages: nginx 1.22 (and 6 more
/// packages: kins image ls --no-trunc)" so an event stays readable; "the kins binary ...;
/// host packages: ..." → "the kins binary ...".
fn short_origin(from: &str) -> String {
    if let Some((binary, _)) = from.split_once("; ") {
        return binary.to_string();
    }
    let mut parts = from.split(", ");
    let first = parts.next().unwrap_or(from).to_string();
    match parts.count() {
        0 => first,
        n => format!("{first} (and {n} more packages: kins image ls --no-trunc)"),
    }
}

/// What a successful start reports.
struct Started {
    id: String,
    image: String,
    image_id: String,
}

/// Resolves the image, builds the container's configuration and starts its shim. An
/// error is (waiting reason, message): ErrImagePull or CreateContainerConfigError.
async fn start(
    ctx: &Arc<Ctx>,
    pod: &Pod,
    st: &PodState,
    c: &Container,
    attempt: u32,
) -> Result<Started, (String, String)> {
    let cfg = &ctx.cfg;
    let image_ref = c.image.clone().unwrap_or_default();
    let images = ctx.images.clone();
    let r = image_ref.clone();
    let t0 = std::time::Instant::now();
    let img = tokio::task::spawn_blocking(move || images.resolve(&r))
        .await
        .map_err(|e| ("ErrImagePull".to_string(), e.to_string()))?
        .map_err(|e| ("ErrImagePull".to_string(), e.to_string()))?;
    let pulled = match img.built_from.as_deref().map(short_origin) {
        Some(ref from) if img.built_now => format!(
            "Built image \"{}\" from {from} in {:.3}s (kins builds a few well-known images from the host's packages; no registry is used)",
            img.reference,
            t0.elapsed().as_secs_f64()
        ),
        Some(ref from) => format!(
            "Container image \"{image_ref}\" already present on machine (built from {from})"
        ),
        None if img.built_now => format!("Imported image \"{}\"", img.reference),
        None => format!("Container image \"{image_ref}\" already present on machine"),
    };
    event(ctx, pod, "Normal", "Pulled", &pulled).await;
    let config_err = |m: String| ("CreateContainerConfigError".to_string(), m);
    let env = container_env(ctx, pod, st, c, &img.config.env)
        .await
        .map_err(config_err)?;
    let defaults = spec::ImageDefaults {
        entrypoint: img.config.entrypoint.clone(),
        cmd: img.config.cmd.clone(),
        env: img.config.env.clone(),
        working_dir: img.config.working_dir.clone(),
        user: img.config.user.clone(),
    };
    let argv = spec::command_line(c, &defaults, &env);
    if argv.is_empty() {
        return Err(config_err(format!(
            "no command specified: image \"{}\" has no ENTRYPOINT or CMD and the container sets no command",
            img.reference
        )));
    }
    let passwd = layer_file(&img.layers, "etc/passwd");
    let group = layer_file(&img.layers, "etc/group");
    let (uid, gid) = spec::user(pod, c, &img.config.user, &passwd, &group).map_err(config_err)?;
    let sec = spec::security(c);
    let (memory_limit, cpu_limit_millis, cpu_request_millis) = spec::resources(c);
    let id = container_id();
    let pdir = volumes::pod_data_dir(cfg, &st.uid);
    let cdir = pdir
        .join("containers")
        .join(format!("{}.{attempt}", c.name));
    // The previous run's writable layer goes: a restarted container starts from the image.
    if attempt > 1 {
        let _ = std::fs::remove_dir_all(pdir.join("containers").join(format!(
            "{}.{}",
            c.name,
            attempt - 1
        )));
    }
    let mut mounts = Vec::new();
    let etc = pdir.join("etc");
    for (name, dest) in [
        ("hosts", "/etc/hosts"),
        ("hostname", "/etc/hostname"),
        ("resolv.conf", "/etc/resolv.conf"),
    ] {
        mounts.push(runtime::container::Mount {
            source: etc.join(name),
            destination: dest.into(),
            read_only: false,
        });
    }
    let term = cdir.join("termination-log");
    std::fs::create_dir_all(&cdir).map_err(|e| config_err(e.to_string()))?;
    std::fs::write(&term, b"").map_err(|e| config_err(e.to_string()))?;
    mounts.push(runtime::container::Mount {
        source: term,
        destination: c
            .termination_message_path
            .clone()
            .unwrap_or_else(|| "/dev/termination-log".into()),
        read_only: false,
    });
    let vols = volume_paths(cfg, pod);
    for m in c.volume_mounts.iter().flatten() {
        let Some((path, ro)) = vols.get(&m.name) else {
            return Err(config_err(format!(
                "volume \"{}\" not found in the pod",
                m.name
            )));
        };
        let mut source = path.clone();
        if let Some(sub) = m.sub_path.as_deref().filter(|s| !s.is_empty()) {
            if sub.split('/').any(|p| p == "..") || sub.starts_with('/') {
                return Err(config_err(format!("invalid subPath {sub:?}")));
            }
            source = source.join(sub);
            if !source.exists() {
                std::fs::create_dir_all(&source).map_err(|e| config_err(e.to_string()))?;
            }
        }
        mounts.push(runtime::container::Mount {
            source,
            destination: m.mount_path.clone(),
            read_only: *ro || m.read_only == Some(true),
        });
    }
    let run_dir = state::pod_dir(&cfg.run_dir, &st.uid);
    let target = pod
        .spec
        .as_ref()
        .and_then(|s| s.ephemeral_containers.as_ref())
        .and_then(|ecs| ecs.iter().find(|e| e.name == c.name))
        .and_then(|e| e.target_container_name.clone())
        .filter(|t| !t.is_empty());
    let pidns = if let Some(t) = target {
        Some(target_pidns(ctx, st, &t).ok_or_else(|| {
            (
                "RunContainerError".to_string(),
                format!("the target container \"{t}\" is not running"),
            )
        })?)
    } else if pod.spec.as_ref().and_then(|s| s.share_process_namespace) == Some(true) {
        Some(pause_pidns(ctx, &st.uid).await.ok_or_else(|| {
            (
                "RunContainerError".to_string(),
                "the pod's shared process namespace is not ready".to_string(),
            )
        })?)
    } else {
        None
    };
    let config = runtime::container::ContainerConfig {
        id: id.clone(),
        argv,
        env: env.iter().map(|(k, v)| format!("{k}={v}")).collect(),
        cwd: c
            .working_dir
            .clone()
            .filter(|w| !w.is_empty())
            .unwrap_or_else(|| img.config.working_dir.clone()),
        uid,
        gid,
        supplemental_groups: spec::supplemental_groups(pod),
        rootfs: Some(runtime::container::RootFs {
            layers: img.layers.clone(),
            upper: cdir.join("upper"),
            work: cdir.join("work"),
            merged: cdir.join("rootfs"),
        }),
        netns: (!st.host_network).then(|| state::netns_path(&cfg.run_dir, &st.uid)),
        ipcns: Some(run_dir.join("ipc")),
        utsns: Some(run_dir.join("uts")),
        pidns,
        mounts,
        privileged: sec.privileged,
        cap_add: sec.cap_add,
        cap_drop: sec.cap_drop,
        no_new_privs: sec.no_new_privs,
        read_only_rootfs: sec.read_only_rootfs,
        cgroup: Some(runtime::container::CgroupConfig {
            path: format!("kins/{}/{}/{id}", cfg.cluster, st.uid),
            memory_limit,
            cpu_limit_millis,
            cpu_request_millis,
            pids_limit: None,
        }),
        log: runtime::container::LogConfig {
            path: state::log_path(
                &cfg.data_dir,
                &st.namespace,
                &st.name,
                &st.uid,
                &c.name,
                attempt - 1,
            ),
            max_size: 10 << 20,
            max_files: 5,
        },
        stdin: c.stdin == Some(true),
        stdin_once: c.stdin_once == Some(true),
        tty: c.tty == Some(true),
    };
    let spec = ContainerSpec {
        config,
        state_dir: state::container_dir(&cfg.run_dir, &st.uid, &c.name, attempt),
    };
    tracing::info!(pod = %st.name, container = %c.name, attempt, image = %img.reference, "starting container");
    ctx.runtime
        .start(&spec)
        .map_err(|e| ("RunContainerError".to_string(), e.to_string()))?;
    event(
        ctx,
        pod,
        "Normal",
        "Created",
        &format!("Created container {}", c.name),
    )
    .await;
    event(
        ctx,
        pod,
        "Normal",
        "Started",
        &format!("Started container {}", c.name),
    )
    .await;
    let repo = img
        .reference
        .rsplit_once(':')
        .map(|(r, _)| r)
        .unwrap_or(&img.reference);
    Ok(Started {
        id,
        image: img.reference.clone(),
        image_id: format!("{}@{}", repo.split('@').next().unwrap_or(repo), img.id),
    })
}

/// The state directory of a pod's pause process (a name no container can have).
fn pause_dir(cfg: &Config, uid: &str) -> std::path::PathBuf {
    state::container_dir(&cfg.run_dir, uid, "_pause", 1)
}

/// Starts the first process of the pod's shared PID namespace (`kins pause`, on the
/// host's filesystem, in the pod's namespaces), once.
fn start_pause(ctx: &Ctx, st: &PodState) -> Result<(), AgentError> {
    let cfg = &ctx.cfg;
    let dir = pause_dir(cfg, &st.uid);
    if dir.exists() {
        return Ok(());
    }
    let run_dir = state::pod_dir(&cfg.run_dir, &st.uid);
    let config = runtime::container::ContainerConfig {
        id: container_id(),
        argv: vec![
            cfg.kins_exe.display().to_string(),
            "pause".into(),
            "--cluster".into(),
            cfg.cluster.clone(),
        ],
        netns: (!st.host_network).then(|| state::netns_path(&cfg.run_dir, &st.uid)),
        ipcns: Some(run_dir.join("ipc")),
        utsns: Some(run_dir.join("uts")),
        cap_drop: vec!["ALL".into()],
        no_new_privs: true,
        log: runtime::container::LogConfig {
            path: dir.join("pause.log"),
            max_size: 1 << 20,
            max_files: 1,
        },
        ..Default::default()
    };
    ctx.runtime.start(&ContainerSpec {
        config,
        state_dir: dir,
    })
}

/// The pause process's PID namespace, once it runs (waits up to 100 ms).
async fn pause_pidns(ctx: &Ctx, uid: &str) -> Option<std::path::PathBuf> {
    let dir = pause_dir(&ctx.cfg, uid);
    for _ in 0..100 {
        match ctx.runtime.state(&dir) {
            ContainerState::Running { pid, .. } => {
                return Some(std::path::PathBuf::from(format!("/proc/{pid}/ns/pid")))
            }
            ContainerState::Starting => tokio::time::sleep(Duration::from_millis(1)).await,
            _ => return None,
        }
    }
    None
}

/// Host paths of the pod's volumes (set up by `volumes::prepare`), with read-only flags.
fn volume_paths(
    cfg: &Config,
    pod: &Pod,
) -> std::collections::BTreeMap<String, (std::path::PathBuf, bool)> {
    let uid = pod.uid().unwrap_or_default();
    let base = volumes::pod_data_dir(cfg, &uid).join("volumes");
    let mut out = std::collections::BTreeMap::new();
    for v in pod
        .spec
        .as_ref()
        .and_then(|s| s.volumes.clone())
        .unwrap_or_default()
    {
        let (path, ro) = if let Some(h) = &v.host_path {
            (std::path::PathBuf::from(&h.path), false)
        } else if v.empty_dir.is_some() {
            (base.join("kubernetes.io~empty-dir").join(&v.name), false)
        } else if v.config_map.is_some() {
            (base.join("kubernetes.io~configmap").join(&v.name), true)
        } else if v.secret.is_some() {
            (base.join("kubernetes.io~secret").join(&v.name), true)
        } else if v.downward_api.is_some() {
            (base.join("kubernetes.io~downward-api").join(&v.name), true)
        } else if v.projected.is_some() {
            (base.join("kubernetes.io~projected").join(&v.name), true)
        } else {
            continue;
        };
        out.insert(v.name.clone(), (path, ro));
    }
    out
}

/// A file of the image (topmost layer wins), e.g. etc/passwd; "" when absent.
fn layer_file(layers: &[std::path::PathBuf], rel: &str) -> String {
    layers
        .iter()
        .rev()
        .find_map(|l| std::fs::read_to_string(l.join(rel)).ok())
        .unwrap_or_default()
}

fn container_id() -> String {
    let mut b = [0u8; 32];
    for (i, chunk) in b.chunks_mut(16).enumerate() {
        let v = uuid::Uuid::new_v4().as_u128() ^ (i as u128);
        chunk.copy_from_slice(&v.to_le_bytes());
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The container's environment, in order: the image's, HOSTNAME, service links, then
/// envFrom and env (with valueFrom and `$(VAR)` expansion), later entries winning.
async fn container_env(
    ctx: &Ctx,
    pod: &Pod,
    st: &PodState,
    c: &Container,
    image_env: &[String],
) -> Result<Vec<(String, String)>, String> {
    let ns = st.namespace.clone();
    let mut env: Vec<(String, String)> = image_env
        .iter()
        .filter_map(|kv| {
            kv.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
        })
        .collect();
    let hostname = if st.host_network {
        ctx.cfg.node_name.clone()
    } else {
        spec::hostname(pod)
    };
    env.push(("HOSTNAME".into(), hostname));
    let links = pod
        .spec
        .as_ref()
        .and_then(|s| s.enable_service_links)
        .unwrap_or(true);
    // Like the kubelet, containers start once the service cache is filled.
    let _ = tokio::time::timeout(Duration::from_secs(5), ctx.services.wait_until_ready()).await;
    let services: Vec<Service> = ctx
        .services
        .state()
        .iter()
        .filter(|s| {
            let sns = s.metadata.namespace.as_deref();
            sns == Some(ns.as_str())
                || (sns == Some("default") && s.metadata.name.as_deref() == Some("kubernetes"))
        })
        .map(|s| (**s).clone())
        .collect();
    env.extend(spec::service_env(&services, &ns, links));
    let mut cms: std::collections::HashMap<String, Option<ConfigMap>> = Default::default();
    let mut secrets: std::collections::HashMap<String, Option<Secret>> = Default::default();
    let cm_api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &ns);
    let sec_api: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
    for from in c.env_from.iter().flatten() {
        let prefix = from.prefix.clone().unwrap_or_default();
        if let Some(r) = &from.config_map_ref {
            let cm = cm_api.get_opt(&r.name).await.map_err(|e| e.to_string())?;
            match cm {
                Some(cm) => env.extend(
                    cm.data
                        .unwrap_or_default()
                        .into_iter()
                        .map(|(k, v)| (format!("{prefix}{k}"), v)),
                ),
                None if r.optional == Some(true) => {}
                None => return Err(format!("configmap \"{}\" not found", r.name)),
            }
        }
        if let Some(r) = &from.secret_ref {
            let s = sec_api.get_opt(&r.name).await.map_err(|e| e.to_string())?;
            match s {
                Some(s) => env.extend(s.data.unwrap_or_default().into_iter().map(|(k, v)| {
                    (
                        format!("{prefix}{k}"),
                        String::from_utf8_lossy(&v.0).into_owned(),
                    )
                })),
                None if r.optional == Some(true) => {}
                None => return Err(format!("secret \"{}\" not found", r.name)),
            }
        }
    }
    for e in c.env.iter().flatten() {
        let value = if let Some(v) = &e.value {
            let vars: std::collections::BTreeMap<&str, &str> =
                env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            spec::expand(v, &vars)
        } else if let Some(from) = &e.value_from {
            if let Some(f) = &from.field_ref {
                spec::field_ref(pod, &st.ip, &ctx.cfg.node_ip.to_string(), &f.field_path)?
            } else if let Some(r) = &from.resource_field_ref {
                spec::resource_field(c, &r.resource)?
            } else if let Some(r) = &from.config_map_key_ref {
                if !cms.contains_key(&r.name) {
                    let cm = cm_api.get_opt(&r.name).await.map_err(|e| e.to_string())?;
                    cms.insert(r.name.clone(), cm);
                }
                match cms[&r.name]
                    .as_ref()
                    .and_then(|cm| cm.data.as_ref()?.get(&r.key).cloned())
                {
                    Some(v) => v,
                    None if r.optional == Some(true) => continue,
                    None if cms[&r.name].is_none() => {
                        return Err(format!("configmap \"{}\" not found", r.name))
                    }
                    None => {
                        return Err(format!(
                            "couldn't find key {} in ConfigMap {ns}/{}",
                            r.key, r.name
                        ))
                    }
                }
            } else if let Some(r) = &from.secret_key_ref {
                if !secrets.contains_key(&r.name) {
                    let s = sec_api.get_opt(&r.name).await.map_err(|e| e.to_string())?;
                    secrets.insert(r.name.clone(), s);
                }
                match secrets[&r.name]
                    .as_ref()
                    .and_then(|s| s.data.as_ref()?.get(&r.key).cloned())
                {
                    Some(v) => String::from_utf8_lossy(&v.0).into_owned(),
                    None if r.optional == Some(true) => continue,
                    None if secrets[&r.name].is_none() => {
                        return Err(format!("secret \"{}\" not found", r.name))
                    }
                    None => {
                        return Err(format!(
                            "couldn't find key {} in Secret {ns}/{}",
                            r.key, r.name
                        ))
                    }
                }
            } else {
                String::new()
            }
        } else {
            String::new()
        };
        env.retain(|(k, _)| k != &e.name);
        env.push((e.name.clone(), value));
    }
    // Later entries win; keep the first position of each name.
    let mut seen = std::collections::HashMap::new();
    let mut out: Vec<(String, String)> = Vec::new();
    for (k, v) in env {
        if let Some(&i) = seen.get(&k) {
            out[i] = (k, v);
        } else {
            seen.insert(k.clone(), out.len());
            out.push((k, v));
        }
    }
    Ok(out)
}

fn terminated_json(cs: &ContainerState, rec: &ContainerRecord) -> Value {
    let id = format!("kins://{}", rec.id);
    match cs {
        ContainerState::Exited {
            code,
            reason,
            started_at,
            finished_at,
        } => json!({"terminated": {
            "exitCode": code, "reason": reason,
            "startedAt": started_at, "finishedAt": finished_at, "containerID": id}}),
        ContainerState::StartFailed { message, at } => json!({"terminated": {
            "exitCode": 128, "reason": "StartError", "message": message, "finishedAt": at, "containerID": id}}),
        _ => {
            json!({"terminated": {"exitCode": 137, "reason": "Error", "message": "the container's shim disappeared", "containerID": id}})
        }
    }
}

fn container_status(
    c: &Container,
    cs: &ContainerState,
    rec: &ContainerRecord,
    probe: &crate::probes::ProbeStatus,
) -> Value {
    let restart_count = rec.attempts.saturating_sub(1);
    let waiting_backoff = rec.not_before != 0;
    let (state, ready, started) = if let Some((reason, message)) = &rec.waiting {
        (
            json!({"waiting": {"reason": reason, "message": message}}),
            false,
            false,
        )
    } else {
        match cs {
            ContainerState::Running { started_at, .. } => (
                json!({"running": {"startedAt": started_at}}),
                probe.ready,
                probe.started,
            ),
            ContainerState::Starting => (
                json!({"waiting": {"reason": "ContainerCreating"}}),
                false,
                false,
            ),
            _ if waiting_backoff => {
                let why = match cs {
                    ContainerState::StartFailed { message, .. } => message.clone(),
                    _ => format!(
                        "back-off {}s restarting failed container={} pod=",
                        rec.backoff, c.name
                    ),
                };
                (
                    json!({"waiting": {"reason": if matches!(cs, ContainerState::StartFailed { .. }) { "RunContainerError" } else { "CrashLoopBackOff" }, "message": why}}),
                    false,
                    false,
                )
            }
            other => (terminated_json(other, rec), false, false),
        }
    };
    let mut s = json!({
        "name": c.name,
        "image": if rec.image.is_empty() { c.image.clone().unwrap_or_default() } else { rec.image.clone() },
        "imageID": rec.image_id,
        "ready": ready, "started": started, "restartCount": restart_count, "state": state,
    });
    if !rec.id.is_empty() {
        s["containerID"] = json!(format!("kins://{}", rec.id));
    }
    if let Some(last) = &rec.last_state {
        s["lastState"] = last.clone();
    }
    s
}

fn pod_status(
    pod: &Pod,
    st: &PodState,
    init: &[Value],
    statuses: &[Value],
    policy: &str,
    cfg: &Config,
) -> Value {
    let initialized = init
        .iter()
        .all(|s| s["state"]["terminated"]["exitCode"] == 0 || s["state"].get("running").is_some());
    let init_failed = policy == "Never"
        && init.iter().any(|s| {
            s["state"]["terminated"]["exitCode"]
                .as_i64()
                .is_some_and(|c| c != 0)
        });
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
    let phase = if init_failed {
        "Failed"
    } else if !initialized {
        "Pending"
    } else if all_done && policy == "Never" {
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
        if !ok && ty == "Initialized" {
            c["reason"] = json!("ContainersNotInitialized");
        }
        c
    };
    let mut v = json!({
        "phase": phase,
        "conditions": [cond("PodReadyToStartContainers", !st.ip.is_empty()), cond("Initialized", initialized), cond("Ready", all_ready), cond("ContainersReady", all_ready), cond("PodScheduled", true)],
        "hostIP": cfg.node_ip.to_string(),
        "hostIPs": [{"ip": cfg.node_ip.to_string()}],
        "podIP": st.ip,
        "podIPs": [{"ip": st.ip}],
        "startTime": st.start_time,
        "containerStatuses": statuses,
    });
    if !init.is_empty() {
        v["initContainerStatuses"] = json!(init);
    }
    v
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
        "initContainerStatuses",
        "ephemeralContainerStatuses",
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
        // DEL runs what ADD ran (the CNI cache keeps its configuration and result).
        if let Err(e) = ctx.cni.del(uid, &netns).await {
            tracing::warn!(pod_uid = %uid, error = %e, "CNI DEL");
        }
        if let Err(e) = net::delete_netns(&netns) {
            tracing::warn!(pod_uid = %uid, error = %e, "deleting the pod netns");
        }
    }
    ctx.prober.forget_pod(uid);
    for ns in ["ipc", "uts"] {
        if let Err(e) = net::delete_netns(&dir.join(ns)) {
            tracing::warn!(pod_uid = %uid, error = %e, "deleting the pod's {ns} namespace");
        }
    }
    if let Err(e) = runtime::container::cgroup::remove_tree(&format!("kins/{}/{uid}", cfg.cluster))
    {
        tracing::warn!(pod_uid = %uid, error = %e, "removing the pod's cgroups");
    }
    let _ = std::fs::remove_dir_all(volumes::pod_data_dir(cfg, uid));
    // The pod's logs go with it, as with the kubelet.
    if let Ok(rd) = std::fs::read_dir(cfg.data_dir.join("logs")) {
        for e in rd.flatten() {
            if e.file_name()
                .to_string_lossy()
                .ends_with(&format!("_{uid}"))
            {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    tracing::info!(pod_uid = %uid, "pod torn down");
}

/// Tears down pods whose API object is gone (deleted while the agent was away).
async fn sweep_orphans(ctx: Arc<Ctx>) {
    let pods: Api<Pod> = Api::all(ctx.client.clone());
    let mut round: u64 = 0;
    loop {
        tokio::time::sleep(Duration::from_secs(5)).await;
        round += 1;
        let lp = ListParams::default().fields(&format!("spec.nodeName={}", ctx.cfg.node_name));
        // Only pods set up before the list was asked for can be orphans: a pod created
        // since is missing from the list without being gone.
        let listed_at = std::time::SystemTime::now() - Duration::from_secs(1);
        let Ok(list) = pods.list(&lp).await else {
            continue;
        };
        let live: HashSet<String> = list.items.iter().filter_map(|p| p.uid()).collect();
        // CNI GC: what the chain holds for pods this node no longer has (every pod with
        // state on disk is still valid: teardown DELs those).
        // Once at start, then every minute.
        if round % 12 == 1 {
            let mut valid: Vec<String> = state::all(&ctx.cfg.run_dir);
            valid.extend(live.iter().cloned());
            valid.sort();
            valid.dedup();
            match ctx.cni.gc(valid).await {
                Ok(gone) if !gone.is_empty() => {
                    tracing::info!(?gone, "CNI GC released attachments")
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "CNI GC"),
            }
        }
        for uid in state::all(&ctx.cfg.run_dir) {
            let made = std::fs::metadata(state::pod_dir(&ctx.cfg.run_dir, &uid))
                .and_then(|m| m.modified())
                .unwrap_or(std::time::UNIX_EPOCH);
            if !live.contains(&uid) && made < listed_at {
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
    fn restart_policy_and_backoff() {
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

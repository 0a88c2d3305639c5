//! Durability: every acknowledged write survives a kill -9 of the API server in the middle
//! of a stream of concurrent creates, and a full `kins down` + `kins up`; revisions keep
//! increasing across both.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, ensure, Context};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret, Service};
use kins_tests::{ok, Cluster};
use kube::api::{Api, ListParams, PostParams, WatchEvent, WatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Resource, ResourceExt};
use serde_json::json;
use tokio::time::{timeout, Instant};

/// How long a test waits for something that should happen soon.
const WAIT: Duration = Duration::from_secs(60);

/// Concurrent writers.
const WRITERS: usize = 16;

async fn client(c: &Cluster) -> anyhow::Result<Client> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let kc = Kubeconfig::read_from(&c.kubeconfig)?;
    let cfg = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await?;
    Ok(Client::try_from(cfg)?)
}

fn rv<K: Resource>(obj: &K) -> anyhow::Result<u64> {
    obj.meta()
        .resource_version
        .as_deref()
        .context("object without resourceVersion")?
        .parse()
        .context("resourceVersion is not a number")
}

async fn namespace(client: &Client, name: &str) -> anyhow::Result<()> {
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name}}))?;
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await?;
    Ok(())
}

/// Polls a list until the API server answers it (a new connection each time, so no
/// connection to the dead server is reused), and returns a client that works.
async fn wait_answering(c: &Cluster) -> anyhow::Result<Client> {
    let deadline = Instant::now() + WAIT;
    loop {
        let last = match client(c).await {
            Ok(cl) => match Api::<Namespace>::all(cl.clone())
                .list(&ListParams::default().limit(1))
                .await
            {
                Ok(_) => return Ok(cl),
                Err(e) => anyhow::Error::from(e),
            },
            Err(e) => e,
        };
        if Instant::now() > deadline {
            return Err(last).context("the API server did not answer again");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// An acknowledged create.
#[derive(Debug, Clone)]
struct Ack {
    name: String,
    rv: u64,
}

/// kill -9 of the API server during 16 streams of creates: every create answered 201 is
/// there afterwards with its resourceVersion, and new writes get higher ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_creates_survive_kill_9() -> anyhow::Result<()> {
    let c = Arc::new(tokio::task::spawn_blocking(|| Cluster::up("dur-kill")).await??);
    let cl = client(&c).await?;
    namespace(&cl, "dur").await?;
    let api: Api<ConfigMap> = Api::namespaced(cl.clone(), "dur");
    let start: u64 = api
        .list(&ListParams::default())
        .await?
        .metadata
        .resource_version
        .context("list without resourceVersion")?
        .parse()?;

    let acks = Arc::new(Mutex::new(Vec::<Ack>::new()));
    // Set just before the kill: failures from then on are expected.
    let killing = Arc::new(AtomicBool::new(false));
    // Set after the kill: a writer whose create the new server answered stops too.
    let killed = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let (api, acks) = (api.clone(), acks.clone());
        let (killing, killed) = (killing.clone(), killed.clone());
        writers.push(tokio::spawn(async move {
            let mut i = 0u64;
            loop {
                let name = format!("w{w:02}-{i:06}");
                let cm: ConfigMap = serde_json::from_value(json!({
                    "metadata": {"name": name, "labels": {"writer": w.to_string()}},
                    "data": {"i": i.to_string()},
                }))?;
                match api.create(&PostParams::default(), &cm).await {
                    Ok(o) => {
                        ensure!(o.name_any() == name, "created {} for {name}", o.name_any());
                        let rv = rv(&o)?;
                        acks.lock().expect("not poisoned").push(Ack { name, rv });
                        if killed.load(Ordering::SeqCst) {
                            return anyhow::Ok(());
                        }
                    }
                    // The first failure after the kill ends this writer.
                    Err(_) if killing.load(Ordering::SeqCst) => return anyhow::Ok(()),
                    Err(e) => return Err(e).context(format!("create {name} before the kill")),
                }
                i += 1;
            }
        }));
    }

    // Once every writer has had a create acknowledged, let them run a little longer and
    // kill the server in the middle of their stream.
    let deadline = Instant::now() + WAIT;
    loop {
        let going = {
            let acks = acks.lock().expect("not poisoned");
            let mut names: Vec<&str> = acks.iter().map(|a| &a.name[..3]).collect();
            names.sort_unstable();
            names.dedup();
            names.len()
        };
        if going == WRITERS {
            break;
        }
        ensure!(Instant::now() < deadline, "the writers did not get going");
        if let Some(w) = writers.iter().position(|w| w.is_finished()) {
            let w = writers.swap_remove(w);
            w.await??;
            bail!("a writer stopped before the kill");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    killing.store(true, Ordering::SeqCst);
    let c2 = c.clone();
    let old = tokio::task::spawn_blocking(move || c2.kill_apiserver()).await??;
    killed.store(true, Ordering::SeqCst);
    for w in writers {
        timeout(WAIT, w)
            .await
            .context("a writer hung after the kill")???;
    }
    let acks = acks.lock().expect("not poisoned").clone();

    // The supervisor starts a new server on the same store.
    let c2 = c.clone();
    let new = tokio::task::spawn_blocking(move || c2.wait_apiserver_restarted(old, WAIT)).await??;
    ensure!(new != old);
    let cl = wait_answering(&c).await?;
    let api: Api<ConfigMap> = Api::namespaced(cl.clone(), "dur");

    // Only the writers' objects, whatever else runs in the cluster.
    let list = api.list(&ListParams::default().labels("writer")).await?;
    let stored: BTreeMap<String, u64> = list
        .items
        .iter()
        .map(|o| Ok((o.name_any(), rv(o)?)))
        .collect::<anyhow::Result<_>>()?;
    let mut lost = Vec::new();
    let mut max_ack = 0;
    for a in &acks {
        max_ack = max_ack.max(a.rv);
        match stored.get(&a.name) {
            Some(&v) if v >= a.rv => {}
            other => lost.push((a.clone(), other.copied())),
        }
    }
    ensure!(
        lost.is_empty(),
        "{} of {} acknowledged creates lost or older after kill -9: {:?}",
        lost.len(),
        acks.len(),
        &lost[..lost.len().min(20)]
    );
    // Each acknowledged create had its own revision.
    let mut revs: Vec<u64> = acks.iter().map(|a| a.rv).collect();
    revs.sort_unstable();
    revs.dedup();
    ensure!(
        revs.len() == acks.len(),
        "two creates answered one revision"
    );
    let list_rv: u64 = list
        .metadata
        .resource_version
        .as_deref()
        .context("list without resourceVersion")?
        .parse()?;
    ensure!(
        list_rv >= max_ack,
        "list at {list_rv}, below acknowledged {max_ack}"
    );

    // The revision kept increasing: a new write is above everything acknowledged.
    let cm: ConfigMap = serde_json::from_value(
        json!({"metadata": {"name": "after-kill", "labels": {"writer": "none"}}}),
    )?;
    let after = rv(&api.create(&PostParams::default(), &cm).await?)?;
    ensure!(
        after > max_ack,
        "new write at {after}, acknowledged up to {max_ack}"
    );
    ensure!(
        after > list_rv,
        "new write at {after}, list was at {list_rv}"
    );

    // The history agrees with the objects: a watch from before the writes replays one
    // ADDED per stored object, at its resourceVersion, in order, then the new write.
    let mut w = api
        .watch(
            &WatchParams::default().labels("writer").timeout(120),
            &start.to_string(),
        )
        .await?
        .boxed();
    let mut replayed = BTreeMap::new();
    let mut prev = start;
    loop {
        let ev = timeout(WAIT, w.next()).await?.context("watch ended")??;
        let o = match ev {
            WatchEvent::Added(o) => o,
            WatchEvent::Bookmark(_) => continue,
            other => bail!("unexpected event in the replay: {other:?}"),
        };
        let v = rv(&o)?;
        ensure!(v > prev, "replay out of order: {v} after {prev}");
        prev = v;
        if o.name_any() == "after-kill" {
            break;
        }
        replayed.insert(o.name_any(), v);
    }
    ensure!(
        replayed == stored,
        "the watch history differs from the objects"
    );

    // Stored but not acknowledged are only the creates in flight at the kill, one per
    // writer at most.
    let unacked = stored.len() - acks.len();
    ensure!(
        unacked <= WRITERS,
        "{unacked} objects nobody was told about"
    );
    eprintln!(
        "kill -9 after {} acknowledged creates: all present, \
         {unacked} in-flight creates also stored, next revision {after} > {max_ack}",
        acks.len()
    );
    Ok(())
}

/// `kins down` (without --purge) and `kins up`: objects, their uids and resourceVersions,
/// allocations and watch history are all still there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn down_and_up_keeps_everything() -> anyhow::Result<()> {
    let c = Arc::new(tokio::task::spawn_blocking(|| Cluster::up("dur-downup")).await??);
    let cl = client(&c).await?;
    namespace(&cl, "keep").await?;

    let cms: Api<ConfigMap> = Api::namespaced(cl.clone(), "keep");
    let mut before: BTreeMap<String, (String, u64)> = BTreeMap::new();
    let mut first_rv = 0;
    for i in 0..20 {
        let cm: ConfigMap = serde_json::from_value(
            json!({"metadata": {"name": format!("cm-{i:02}"), "labels": {"keep": "yes"}}, "data": {"i": i.to_string()}}),
        )?;
        let o = cms.create(&PostParams::default(), &cm).await?;
        if i == 0 {
            first_rv = rv(&o)?;
        }
        before.insert(
            format!("cm/{}", o.name_any()),
            (o.uid().unwrap_or_default(), rv(&o)?),
        );
    }
    let svcs: Api<Service> = Api::namespaced(cl.clone(), "keep");
    let svc: Service = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {"type": "NodePort", "selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]},
    }))?;
    let svc = svcs.create(&PostParams::default(), &svc).await?;
    let spec = svc.spec.clone().context("no spec")?;
    let ip = spec.cluster_ip.clone().context("no clusterIP")?;
    let node_port = spec
        .ports
        .as_ref()
        .and_then(|p| p[0].node_port)
        .context("no nodePort")?;
    before.insert("svc/web".into(), (svc.uid().unwrap_or_default(), rv(&svc)?));
    let deploys: Api<Deployment> = Api::namespaced(cl.clone(), "keep");
    let d: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "nginx"}]}}},
    }))?;
    let d = deploys.create(&PostParams::default(), &d).await?;
    // The deployment controller writes the Deployment's status (and so its
    // resourceVersion) at any time: its spec's generation is what must survive.
    let generation = |d: &Deployment| d.metadata.generation.unwrap_or(0) as u64;
    before.insert(
        "deploy/web".into(),
        (d.uid().unwrap_or_default(), generation(&d)),
    );
    let secrets: Api<Secret> = Api::namespaced(cl.clone(), "keep");
    let s: Secret = serde_json::from_value(
        json!({"metadata": {"name": "token"}, "data": {"password": "aHVudGVyMg=="}}),
    )?;
    let s = secrets.create(&PostParams::default(), &s).await?;
    before.insert(
        "secret/token".into(),
        (s.uid().unwrap_or_default(), rv(&s)?),
    );
    // A delete is durable too.
    cms.delete("cm-19", &Default::default()).await?;
    before.remove("cm/cm-19");
    let last_rv = before.values().map(|v| v.1).max().unwrap_or(0);

    // Down without purge, then up again.
    let name = c.name.clone();
    let c2 = c.clone();
    let down = tokio::task::spawn_blocking(move || c2.kins(&["down", "--name", &name])).await??;
    ok(down)?;
    ensure!(
        c.apiserver_pid().is_none(),
        "an API server survived kins down"
    );
    let (name, port) = (c.name.clone(), c.port.to_string());
    let c2 = c.clone();
    let up = tokio::task::spawn_blocking(move || {
        c2.kins(&["up", "--name", &name, "--nodes", "0", "--api-port", &port])
    })
    .await??;
    ok(up)?;

    // The same kubeconfig (and so the same CA and client certificate) still works.
    let cl = wait_answering(&c).await?;
    let cms: Api<ConfigMap> = Api::namespaced(cl.clone(), "keep");
    let svcs: Api<Service> = Api::namespaced(cl.clone(), "keep");
    let deploys: Api<Deployment> = Api::namespaced(cl.clone(), "keep");
    let secrets: Api<Secret> = Api::namespaced(cl.clone(), "keep");
    let mut after: BTreeMap<String, (String, u64)> = BTreeMap::new();
    for o in cms.list(&ListParams::default().labels("keep=yes")).await? {
        ensure!(
            o.data.as_ref().and_then(|d| d.get("i")).is_some(),
            "{o:?} lost its data"
        );
        after.insert(
            format!("cm/{}", o.name_any()),
            (o.uid().unwrap_or_default(), rv(&o)?),
        );
    }
    let svc = svcs.get("web").await?;
    after.insert("svc/web".into(), (svc.uid().unwrap_or_default(), rv(&svc)?));
    let d = deploys.get("web").await?;
    ensure!(d.spec.as_ref().and_then(|s| s.replicas) == Some(2));
    after.insert(
        "deploy/web".into(),
        (d.uid().unwrap_or_default(), generation(&d)),
    );
    let s = secrets.get("token").await?;
    let password = s
        .data
        .as_ref()
        .and_then(|d| d.get("password"))
        .context("no password")?;
    ensure!(password.0 == b"hunter2", "{s:?}");
    after.insert(
        "secret/token".into(),
        (s.uid().unwrap_or_default(), rv(&s)?),
    );
    ensure!(
        after == before,
        "after down and up:\n{after:?}\nbefore:\n{before:?}"
    );

    // The Service kept its ClusterIP and NodePort, and they are still taken.
    let spec = svc.spec.clone().context("no spec")?;
    ensure!(spec.cluster_ip.as_deref() == Some(ip.as_str()), "{spec:?}");
    ensure!(
        spec.ports.as_ref().and_then(|p| p[0].node_port) == Some(node_port),
        "{spec:?}"
    );
    let taken: Service = serde_json::from_value(json!({
        "metadata": {"name": "same-ip"},
        "spec": {"clusterIP": ip, "ports": [{"port": 80}]},
    }))?;
    match svcs.create(&PostParams::default(), &taken).await {
        Err(kube::Error::Api(s)) if s.code == 422 => {}
        other => bail!("a second Service got ClusterIP {ip}: {other:?}"),
    }
    let taken: Service = serde_json::from_value(json!({
        "metadata": {"name": "same-port"},
        "spec": {"type": "NodePort", "ports": [{"port": 80, "nodePort": node_port}]},
    }))?;
    match svcs.create(&PostParams::default(), &taken).await {
        Err(kube::Error::Api(s)) if s.code == 422 => {}
        other => bail!("a second Service got NodePort {node_port}: {other:?}"),
    }

    // New writes continue above the old revisions.
    let cm: ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": "new", "labels": {"keep": "yes"}}}))?;
    let new_rv = rv(&cms.create(&PostParams::default(), &cm).await?)?;
    ensure!(
        new_rv > last_rv,
        "new write at {new_rv}, before down at {last_rv}"
    );

    // The watch history survived: a watch from the first create replays what followed,
    // the delete of cm-19 included.
    let mut w = cms
        .watch(
            &WatchParams::default().labels("keep").timeout(60),
            &first_rv.to_string(),
        )
        .await?
        .boxed();
    let mut replayed = Vec::new();
    loop {
        match timeout(WAIT, w.next()).await?.context("watch ended")?? {
            WatchEvent::Added(o) => replayed.push(format!("ADDED {}", o.name_any())),
            WatchEvent::Modified(o) => replayed.push(format!("MODIFIED {}", o.name_any())),
            WatchEvent::Deleted(o) => replayed.push(format!("DELETED {}", o.name_any())),
            WatchEvent::Bookmark(_) => continue,
            WatchEvent::Error(e) => bail!("watch error {e:?}"),
        }
        if replayed.last().is_some_and(|l| l == "ADDED new") {
            break;
        }
    }
    let mut want: Vec<String> = (1..20).map(|i| format!("ADDED cm-{i:02}")).collect();
    want.push("DELETED cm-19".into());
    want.push("ADDED new".into());
    ensure!(replayed == want, "{replayed:?}");
    Ok(())
}

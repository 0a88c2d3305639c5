//! kube-rs as a real client of kins: typed CRUD with the three patch types, conflicts,
//! selectors, pagination, watches and the `watcher` of kube-runtime, also across a kill -9
//! of the API server.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::time::Duration;

use anyhow::{bail, ensure, Context};
use futures::{Stream, StreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Endpoints, Namespace, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::serde::de::DeserializeOwned;
use k8s_openapi::serde::Serialize;
use kins_tests::Cluster;
use kube::api::{
    Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Client, Resource, ResourceExt};
use serde_json::{json, Value};
use tokio::time::timeout;

/// How long a test waits for something that should happen at once.
const WAIT: Duration = Duration::from_secs(60);

/// A kube client from the cluster's kubeconfig file.
async fn client(c: &Cluster) -> anyhow::Result<Client> {
    // Only ring is compiled in, but say so in case another provider ever is.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let kc = Kubeconfig::read_from(&c.kubeconfig)?;
    let cfg = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await?;
    Ok(Client::try_from(cfg)?)
}

/// Starts a cluster (`kins up` blocks, so off the runtime's threads) and a client for it.
async fn up(name: &str) -> anyhow::Result<(Cluster, Client)> {
    let name = name.to_string();
    let c = tokio::task::spawn_blocking(move || Cluster::up(&name)).await??;
    let client = client(&c).await?;
    Ok((c, client))
}

/// Creates a namespace for a test's objects.
async fn namespace(client: &Client, name: &str) -> anyhow::Result<()> {
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name}}))?;
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await?;
    Ok(())
}

fn rv<K: Resource>(obj: &K) -> anyhow::Result<String> {
    obj.meta()
        .resource_version
        .clone()
        .filter(|v| !v.is_empty())
        .context("object without resourceVersion")
}

/// The Status of a failed call, or an error if it did not fail with one.
fn status<T: Debug>(r: Result<T, kube::Error>) -> anyhow::Result<kube::core::Status> {
    match r {
        Err(kube::Error::Api(s)) => Ok(*s),
        other => bail!("expected an API error, got {other:?}"),
    }
}

fn expect_status<T: Debug>(
    r: Result<T, kube::Error>,
    code: u16,
    reason: &str,
) -> anyhow::Result<()> {
    let s = status(r)?;
    ensure!(
        s.code == code && s.reason == reason,
        "expected {code} {reason}, got {s:?}"
    );
    Ok(())
}

/// One kind's CRUD round: what to create and, for each kind of write, the change and how
/// to recognise it in what the server stored.
struct Crud<K> {
    obj: Value,
    created: fn(&K) -> anyhow::Result<()>,
    replace: fn(&mut K),
    replaced: fn(&K) -> anyhow::Result<()>,
    strategic: Value,
    strategic_ok: fn(&K) -> anyhow::Result<()>,
    merge: Value,
    merge_ok: fn(&K) -> anyhow::Result<()>,
    json: Value,
    json_ok: fn(&K) -> anyhow::Result<()>,
}

fn rv_num<K: Resource>(obj: &K) -> anyhow::Result<u64> {
    rv(obj)?.parse().context("resourceVersion is not a number")
}

/// Checks a write's answer and the object then stored, and that the resourceVersion went
/// up. Controllers may write the object too (the scheduler sets a pod's conditions), so
/// the stored object may be newer than the answer, never older.
async fn check_write<K>(
    api: &Api<K>,
    what: &str,
    answer: &K,
    before: u64,
    ok: fn(&K) -> anyhow::Result<()>,
) -> anyhow::Result<u64>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    ok(answer).with_context(|| format!("{what}: the answer"))?;
    let stored = api.get(&answer.name_any()).await?;
    ok(&stored).with_context(|| format!("{what}: the stored object"))?;
    let now = rv_num(answer)?;
    ensure!(now > before, "{what}: resourceVersion {now} after {before}");
    ensure!(
        rv_num(&stored)? >= now,
        "{what}: the stored object is older than the answer"
    );
    Ok(now)
}

/// Replaces the object with `change` applied to its current state, again on a conflict
/// with another writer.
async fn replace_with<K>(api: &Api<K>, name: &str, change: fn(&mut K)) -> anyhow::Result<(K, K)>
where
    K: Resource + Clone + DeserializeOwned + Serialize + Debug,
{
    for _ in 0..10 {
        let mut obj = api.get(name).await?;
        change(&mut obj);
        match api.replace(name, &PostParams::default(), &obj).await {
            Ok(answer) => return Ok((obj, answer)),
            Err(kube::Error::Api(s)) if s.code == 409 => continue,
            Err(e) => return Err(e.into()),
        }
    }
    bail!("replace of {name} kept conflicting")
}

fn annotate<K: Resource>(obj: &mut K, key: &str, value: &str) {
    obj.meta_mut()
        .annotations
        .get_or_insert_with(Default::default)
        .insert(key.into(), value.into());
}

/// Create, get, list, replace, the three patches, a stale replace, a second create,
/// generateName and delete, with their answers and stored objects checked.
async fn check_crud<K>(api: &Api<K>, c: Crud<K>) -> anyhow::Result<()>
where
    K: Resource + Clone + DeserializeOwned + Serialize + Debug,
{
    let obj: K = serde_json::from_value(c.obj.clone())?;
    let name = obj.name_any();
    let pp = PostParams::default();

    let created = api.create(&pp, &obj).await?;
    (c.created)(&created).context("create: the answer")?;
    ensure!(
        created.meta().uid.as_deref().is_some_and(|u| !u.is_empty()),
        "no uid"
    );
    ensure!(
        created.meta().creation_timestamp.is_some(),
        "no creationTimestamp"
    );
    let rv0 = rv_num(&created)?;

    let got = api.get(&name).await?;
    (c.created)(&got).context("get")?;
    ensure!(rv_num(&got)? >= rv0, "get: older than the create");
    ensure!(got.meta().uid == created.meta().uid, "get: uid differs");

    let listed = api.list(&ListParams::default()).await?;
    let item = listed
        .items
        .iter()
        .find(|o| o.name_any() == name)
        .context("list: created object missing")?;
    ensure!(rv_num(item)? >= rv0, "list: older than the create");
    let list_rv: u64 = listed
        .metadata
        .resource_version
        .as_deref()
        .context("list without resourceVersion")?
        .parse()?;
    ensure!(list_rv >= rv_num(item)?, "list older than its item");

    // Replace.
    let (mut sent, replaced) = replace_with(api, &name, c.replace).await?;
    let rv1 = check_write(api, "replace", &replaced, rv0, c.replaced).await?;

    // A replace carrying an old resourceVersion conflicts and changes nothing.
    annotate(&mut sent, "kins.test/stale", "true");
    expect_status(api.replace(&name, &pp, &sent).await, 409, "Conflict")?;
    ensure!(
        !annotations(&api.get(&name).await?).contains_key("kins.test/stale"),
        "a failed replace changed the object"
    );

    // The three patch types.
    let patched = api
        .patch(
            &name,
            &PatchParams::default(),
            &Patch::Strategic(&c.strategic),
        )
        .await?;
    let rv2 = check_write(api, "strategic patch", &patched, rv1, c.strategic_ok).await?;
    let patched = api
        .patch(&name, &PatchParams::default(), &Patch::Merge(&c.merge))
        .await?;
    let rv3 = check_write(api, "merge patch", &patched, rv2, c.merge_ok).await?;
    let json_patch = Patch::<()>::Json(serde_json::from_value(c.json.clone())?);
    let patched = api
        .patch(&name, &PatchParams::default(), &json_patch)
        .await?;
    check_write(api, "json patch", &patched, rv3, c.json_ok).await?;
    // A patch naming an old resourceVersion conflicts too.
    let stale = json!({"metadata": {"resourceVersion": rv3.to_string(), "annotations": {"kins.test/stale": "true"}}});
    expect_status(
        api.patch(&name, &PatchParams::default(), &Patch::Merge(&stale))
            .await,
        409,
        "Conflict",
    )?;

    // Creating the same name again fails and leaves the object as the patches made it.
    expect_status(api.create(&pp, &obj).await, 409, "AlreadyExists")?;
    let now = api.get(&name).await?;
    (c.json_ok)(&now).context("after a failed create")?;
    ensure!(
        !annotations(&now).contains_key("kins.test/stale"),
        "a failed patch changed the object"
    );

    // generateName: two creates, two names.
    let mut gen = c.obj.clone();
    gen["metadata"]
        .as_object_mut()
        .context("metadata")?
        .remove("name");
    gen["metadata"]["generateName"] = json!(format!("{name}-"));
    let gen: K = serde_json::from_value(gen)?;
    let g1 = api.create(&pp, &gen).await?;
    let g2 = api.create(&pp, &gen).await?;
    for g in [&g1, &g2] {
        let n = g.name_any();
        ensure!(
            n.starts_with(&format!("{name}-")) && n.len() > name.len() + 1,
            "generated name {n}"
        );
        (c.created)(g).context("generateName")?;
        api.get(&n).await?;
    }
    ensure!(
        g1.name_any() != g2.name_any(),
        "generateName repeated a name"
    );

    // Delete.
    let gone = api.delete(&name, &DeleteParams::default()).await?;
    if let Some(o) = gone.left() {
        ensure!(o.name_any() == name, "delete answered another object");
    }
    expect_status(api.get(&name).await, 404, "NotFound")?;
    expect_status(
        api.delete(&name, &DeleteParams::default()).await,
        404,
        "NotFound",
    )?;
    ensure!(
        !api.list(&ListParams::default())
            .await?
            .items
            .iter()
            .any(|o| o.name_any() == name),
        "deleted object still listed"
    );
    Ok(())
}

fn labels<K: Resource>(o: &K) -> BTreeMap<String, String> {
    o.meta().labels.clone().unwrap_or_default()
}

fn annotations<K: Resource>(o: &K) -> BTreeMap<String, String> {
    o.meta().annotations.clone().unwrap_or_default()
}

fn label(o: &impl Resource, k: &str) -> Option<String> {
    labels(o).get(k).cloned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_crud() -> anyhow::Result<()> {
    let (_c, client) = up("kr-pod").await?;
    let api: Api<Pod> = Api::default_namespaced(client);
    fn container(p: &Pod) -> anyhow::Result<&k8s_openapi::api::core::v1::Container> {
        let spec = p.spec.as_ref().context("no spec")?;
        ensure!(
            spec.containers.len() == 1,
            "containers: {:?}",
            spec.containers
        );
        Ok(&spec.containers[0])
    }
    check_crud(
        &api,
        Crud {
            obj: json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": "web", "labels": {"app": "web"}},
                // A scheduler that does not run: only this test writes the pod.
                "spec": {"schedulerName": "kins-test-none", "containers": [{"name": "app", "image": "nginx:1.27", "command": ["nginx", "-g", "daemon off;"]}]},
            }),
            created: |p| {
                ensure!(label(p, "app").as_deref() == Some("web"));
                ensure!(container(p)?.image.as_deref() == Some("nginx:1.27"));
                let status = p.status.as_ref().context("no status")?;
                ensure!(status.phase.as_deref() == Some("Pending"), "{status:?}");
                ensure!(p.metadata.namespace.as_deref() == Some("default"));
                Ok(())
            },
            replace: |p| {
                p.labels_mut().insert("tier".into(), "front".into());
            },
            replaced: |p| {
                ensure!(label(p, "tier").as_deref() == Some("front"));
                ensure!(label(p, "app").as_deref() == Some("web"));
                Ok(())
            },
            // Containers merge by name: the image changes, the command stays.
            strategic: json!({"spec": {"containers": [{"name": "app", "image": "nginx:1.28"}]}}),
            strategic_ok: |p| {
                let c = container(p)?;
                ensure!(c.image.as_deref() == Some("nginx:1.28"), "{c:?}");
                ensure!(c.command.as_ref().is_some_and(|c| c[0] == "nginx"), "{c:?}");
                Ok(())
            },
            merge: json!({"metadata": {"annotations": {"note": "merged"}, "labels": {"tier": null}}}),
            merge_ok: |p| {
                ensure!(annotations(p).get("note").map(String::as_str) == Some("merged"));
                ensure!(label(p, "tier").is_none() && label(p, "app").is_some());
                Ok(())
            },
            json: json!([
                {"op": "test", "path": "/metadata/name", "value": "web"},
                {"op": "add", "path": "/metadata/labels/patched", "value": "json"},
                {"op": "add", "path": "/spec/activeDeadlineSeconds", "value": 600},
            ]),
            json_ok: |p| {
                ensure!(label(p, "patched").as_deref() == Some("json"));
                ensure!(p.spec.as_ref().and_then(|s| s.active_deadline_seconds) == Some(600));
                ensure!(container(p)?.image.as_deref() == Some("nginx:1.28"));
                Ok(())
            },
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configmap_crud() -> anyhow::Result<()> {
    let (_c, client) = up("kr-cm").await?;
    let api: Api<ConfigMap> = Api::default_namespaced(client);
    fn data(cm: &ConfigMap) -> BTreeMap<String, String> {
        cm.data.clone().unwrap_or_default()
    }
    fn kv(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }
    check_crud(
        &api,
        Crud {
            obj: json!({
                "apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "settings", "labels": {"app": "web"}},
                "data": {"a": "1"},
            }),
            created: |cm| {
                ensure!(data(cm) == kv(&[("a", "1")]), "{cm:?}");
                Ok(())
            },
            replace: |cm| {
                cm.data
                    .get_or_insert_with(Default::default)
                    .insert("b".into(), "2".into());
            },
            replaced: |cm| {
                ensure!(data(cm) == kv(&[("a", "1"), ("b", "2")]), "{cm:?}");
                Ok(())
            },
            strategic: json!({"data": {"c": "3"}}),
            strategic_ok: |cm| {
                ensure!(
                    data(cm) == kv(&[("a", "1"), ("b", "2"), ("c", "3")]),
                    "{cm:?}"
                );
                Ok(())
            },
            merge: json!({"data": {"a": null}}),
            merge_ok: |cm| {
                ensure!(data(cm) == kv(&[("b", "2"), ("c", "3")]), "{cm:?}");
                Ok(())
            },
            json: json!([
                {"op": "replace", "path": "/data/b", "value": "20"},
                {"op": "remove", "path": "/data/c"},
            ]),
            json_ok: |cm| {
                ensure!(data(cm) == kv(&[("b", "20")]), "{cm:?}");
                ensure!(label(cm, "app").as_deref() == Some("web"));
                Ok(())
            },
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_crud() -> anyhow::Result<()> {
    let (_c, client) = up("kr-svc").await?;
    let api: Api<Service> = Api::default_namespaced(client);
    fn ports(s: &Service) -> Vec<(i32, String, String)> {
        s.spec
            .as_ref()
            .and_then(|s| s.ports.clone())
            .unwrap_or_default()
            .into_iter()
            .map(|p| {
                let target = match p.target_port {
                    Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(i)) => {
                        i.to_string()
                    }
                    Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String(s)) => s,
                    None => String::new(),
                };
                (p.port, p.name.unwrap_or_default(), target)
            })
            .collect()
    }
    fn selector(s: &Service) -> BTreeMap<String, String> {
        s.spec
            .as_ref()
            .and_then(|s| s.selector.clone())
            .unwrap_or_default()
    }
    fn cluster_ip(s: &Service) -> anyhow::Result<()> {
        let spec = s.spec.as_ref().context("no spec")?;
        let ip: std::net::Ipv4Addr = spec
            .cluster_ip
            .as_deref()
            .context("no clusterIP")?
            .parse()?;
        // The default service CIDR, 10.96.0.0/12.
        ensure!(
            ip.octets()[0] == 10 && (ip.octets()[1] & 0xf0) == 96,
            "{ip}"
        );
        ensure!(
            spec.cluster_ips.as_deref() == Some(&[ip.to_string()][..]),
            "{spec:?}"
        );
        ensure!(spec.type_.as_deref() == Some("ClusterIP"));
        Ok(())
    }
    check_crud(
        &api,
        Crud {
            obj: json!({
                "apiVersion": "v1", "kind": "Service",
                "metadata": {"name": "web"},
                "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": 8080}]},
            }),
            created: |s| {
                cluster_ip(s)?;
                ensure!(ports(s) == vec![(80, "http".into(), "8080".into())], "{s:?}");
                Ok(())
            },
            replace: |s| {
                if let Some(spec) = s.spec.as_mut() {
                    spec.selector = Some([("app".to_string(), "web2".to_string())].into());
                }
            },
            replaced: |s| {
                cluster_ip(s)?;
                ensure!(selector(s) == [("app".to_string(), "web2".to_string())].into());
                Ok(())
            },
            // Ports merge by port number: one added, the existing one kept.
            strategic: json!({"spec": {"ports": [{"name": "https", "port": 443, "targetPort": 8443}]}}),
            strategic_ok: |s| {
                cluster_ip(s)?;
                let mut p = ports(s);
                p.sort();
                ensure!(
                    p == vec![(80, "http".into(), "8080".into()), (443, "https".into(), "8443".into())],
                    "{p:?}"
                );
                Ok(())
            },
            merge: json!({"spec": {"selector": {"tier": "front"}}}),
            merge_ok: |s| {
                ensure!(
                    selector(s)
                        == [
                            ("app".to_string(), "web2".to_string()),
                            ("tier".to_string(), "front".to_string())
                        ]
                        .into()
                );
                Ok(())
            },
            json: json!([{"op": "replace", "path": "/spec/ports/0/targetPort", "value": 9090}]),
            json_ok: |s| {
                cluster_ip(s)?;
                let p = ports(s);
                ensure!(p.len() == 2 && p[0].2 == "9090", "{p:?}");
                Ok(())
            },
        },
    )
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deployment_crud() -> anyhow::Result<()> {
    let (_c, client) = up("kr-deploy").await?;
    let api: Api<Deployment> = Api::default_namespaced(client);
    fn replicas(d: &Deployment) -> Option<i32> {
        d.spec.as_ref().and_then(|s| s.replicas)
    }
    fn generation(d: &Deployment) -> Option<i64> {
        d.metadata.generation
    }
    fn containers(d: &Deployment) -> Vec<k8s_openapi::api::core::v1::Container> {
        d.spec
            .as_ref()
            .and_then(|s| s.template.spec.as_ref())
            .map(|s| s.containers.clone())
            .unwrap_or_default()
    }
    check_crud(
        &api,
        Crud {
            obj: json!({
                "apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": "web", "labels": {"app": "web"}},
                "spec": {
                    "replicas": 1,
                    "selector": {"matchLabels": {"app": "web"}},
                    "template": {
                        "metadata": {"labels": {"app": "web"}},
                        "spec": {"containers": [{"name": "app", "image": "nginx:1.27", "ports": [{"containerPort": 80}]}]},
                    },
                },
            }),
            created: |d| {
                ensure!(replicas(d) == Some(1) && generation(d) == Some(1), "{d:?}");
                ensure!(containers(d).len() == 1);
                Ok(())
            },
            replace: |d| {
                if let Some(s) = d.spec.as_mut() {
                    s.replicas = Some(3);
                }
            },
            replaced: |d| {
                ensure!(replicas(d) == Some(3) && generation(d) == Some(2), "{d:?}");
                Ok(())
            },
            // Containers merge by name: the image changes, the ports stay.
            strategic: json!({"spec": {"template": {"spec": {"containers": [{"name": "app", "image": "nginx:1.28"}]}}}}),
            strategic_ok: |d| {
                let c = containers(d);
                ensure!(c.len() == 1 && c[0].image.as_deref() == Some("nginx:1.28"), "{c:?}");
                ensure!(c[0].ports.as_ref().is_some_and(|p| p[0].container_port == 80), "{c:?}");
                ensure!(generation(d) == Some(3), "{d:?}");
                Ok(())
            },
            merge: json!({"spec": {"replicas": 2}}),
            merge_ok: |d| {
                ensure!(replicas(d) == Some(2) && generation(d) == Some(4), "{d:?}");
                Ok(())
            },
            json: json!([{"op": "add", "path": "/metadata/annotations", "value": {"owner": "team-a"}}]),
            json_ok: |d| {
                ensure!(annotations(d).get("owner").map(String::as_str) == Some("team-a"));
                // Metadata alone does not change the generation.
                ensure!(generation(d) == Some(4), "{d:?}");
                ensure!(replicas(d) == Some(2));
                Ok(())
            },
        },
    )
    .await
}

/// Patches without a resourceVersion are not optimistic: concurrent patches of one
/// object all succeed (the server retries them on its own conflicts), none is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_patches_all_apply() -> anyhow::Result<()> {
    let (_c, client) = up("kr-patch").await?;
    let api: Api<ConfigMap> = Api::default_namespaced(client);
    let cm: ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": "shared"}, "data": {}}))?;
    api.create(&PostParams::default(), &cm).await?;
    const TASKS: usize = 4;
    const EACH: usize = 50;
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let api = api.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..EACH {
                let key = format!("t{t}-{i:02}");
                let pp = PatchParams::default();
                let r = match t % 3 {
                    0 => {
                        api.patch("shared", &pp, &Patch::Merge(json!({"data": {&key: "x"}})))
                            .await
                    }
                    1 => {
                        api.patch(
                            "shared",
                            &pp,
                            &Patch::Strategic(json!({"data": {&key: "x"}})),
                        )
                        .await
                    }
                    _ => {
                        let ops =
                            json!([{"op": "add", "path": format!("/data/{key}"), "value": "x"}]);
                        api.patch(
                            "shared",
                            &pp,
                            &Patch::<()>::Json(serde_json::from_value(ops)?),
                        )
                        .await
                    }
                };
                r.with_context(|| format!("patch {key}"))?;
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let data = api.get("shared").await?.data.unwrap_or_default();
    ensure!(
        data.len() == TASKS * EACH,
        "{} keys of {}",
        data.len(),
        TASKS * EACH
    );
    Ok(())
}

/// Lists with label and field selectors, as a table of selectors and the names they find.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn selectors() -> anyhow::Result<()> {
    let (_c, client) = up("kr-select").await?;
    namespace(&client, "sel").await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "sel");
    for (name, labels) in [
        ("web-1", json!({"app": "web", "tier": "front"})),
        ("web-2", json!({"app": "web", "tier": "db"})),
        ("web-3", json!({"app": "web"})),
        ("api-1", json!({"app": "api", "tier": "front"})),
    ] {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": name, "labels": labels},
            "spec": {"containers": [{"name": "c", "image": "busybox"}]},
        }))?;
        pods.create(&PostParams::default(), &pod).await?;
    }
    // Another namespace's pod is never listed.
    let other: Api<Pod> = Api::default_namespaced(client.clone());
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "web-1", "labels": {"app": "web", "tier": "front"}},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]},
    }))?;
    other.create(&PostParams::default(), &pod).await?;

    let cases: &[(&str, &str, &[&str])] = &[
        ("", "", &["api-1", "web-1", "web-2", "web-3"]),
        ("app=web,tier!=db", "", &["web-1", "web-3"]),
        ("app=web", "metadata.name=web-2", &["web-2"]),
        ("", "metadata.name=web-2", &["web-2"]),
        ("", "metadata.name=nope", &[]),
        ("", "metadata.name!=web-2", &["api-1", "web-1", "web-3"]),
        (
            "",
            "status.phase=Pending",
            &["api-1", "web-1", "web-2", "web-3"],
        ),
        ("", "status.phase!=Pending", &[]),
        ("tier in (front,db)", "", &["api-1", "web-1", "web-2"]),
        ("!tier", "", &["web-3"]),
        ("tier", "metadata.name!=web-1", &["api-1", "web-2"]),
        ("app notin (web)", "", &["api-1"]),
        ("", "metadata.namespace=sel,metadata.name=web-1", &["web-1"]),
    ];
    for (labels, fields, want) in cases {
        let mut lp = ListParams::default();
        if !labels.is_empty() {
            lp = lp.labels(labels);
        }
        if !fields.is_empty() {
            lp = lp.fields(fields);
        }
        let got: Vec<String> = pods.list(&lp).await?.iter().map(|p| p.name_any()).collect();
        ensure!(
            got == *want,
            "labels {labels:?} fields {fields:?}: got {got:?}, want {want:?}"
        );
    }

    // Across namespaces.
    let all: Api<Pod> = Api::all(client.clone());
    let got: Vec<String> = all
        .list(&ListParams::default().fields("metadata.name=web-1"))
        .await?
        .iter()
        .map(|p| format!("{}/{}", p.namespace().unwrap_or_default(), p.name_any()))
        .collect();
    ensure!(got == ["default/web-1", "sel/web-1"], "{got:?}");

    // Bad selectors are a 400 BadRequest.
    expect_status(
        pods.list(&ListParams::default().labels("app in (web"))
            .await,
        400,
        "BadRequest",
    )?;
    expect_status(
        pods.list(&ListParams::default().fields("spec.nonsense=x"))
            .await,
        400,
        "BadRequest",
    )?;
    Ok(())
}

/// limit and continue over 25 objects: in order, without gap or repeat, and consistent as
/// of the first page (the same as an exact list at its resourceVersion).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pagination() -> anyhow::Result<()> {
    let (_c, client) = up("kr-page").await?;
    namespace(&client, "paging").await?;
    let api: Api<ConfigMap> = Api::namespaced(client, "paging");
    for i in 0..25 {
        let cm: ConfigMap =
            serde_json::from_value(json!({"metadata": {"name": format!("cm-{i:02}")}}))?;
        api.create(&PostParams::default(), &cm).await?;
    }

    for limit in [1u32, 7, 10, 25, 100] {
        let mut seen = Vec::new();
        let mut token: Option<String> = None;
        let mut pages = 0;
        let mut list_rv: Option<String> = None;
        loop {
            let mut lp = ListParams::default().limit(limit);
            if let Some(t) = &token {
                lp = lp.continue_token(t);
            }
            let page = api.list(&lp).await?;
            pages += 1;
            ensure!(page.items.len() <= limit as usize, "page over the limit");
            seen.extend(page.items.iter().map(|o| o.name_any()));
            let this_rv = page.metadata.resource_version.clone();
            ensure!(
                list_rv.is_none() || list_rv == this_rv,
                "pages at different revisions"
            );
            list_rv = this_rv;
            if pages == 1 && limit == 10 {
                // Changes after the first page do not show in the later ones.
                let cm: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "cm-99"}}))?;
                api.create(&PostParams::default(), &cm).await?;
                api.delete("cm-20", &DeleteParams::default()).await?;
            }
            match page.metadata.continue_.filter(|c| !c.is_empty()) {
                Some(c) => token = Some(c),
                None => break,
            }
            ensure!(pages <= 30, "endless pagination");
        }
        let list_rv = list_rv.context("list without resourceVersion")?;
        let exact = api
            .list(
                &ListParams::default()
                    .at(&list_rv)
                    .matching(kube::api::VersionMatch::Exact),
            )
            .await?;
        let want: Vec<String> = exact.iter().map(|o| o.name_any()).collect();
        ensure!(seen == want, "limit {limit}: got {seen:?}, want {want:?}");
        let ours = seen.iter().filter(|n| n.starts_with("cm-")).count();
        ensure!(
            ours == 25,
            "limit {limit}: {ours} of our 25 objects: {seen:?}"
        );
        ensure!(
            pages == seen.len().div_ceil(limit as usize),
            "limit {limit}: {pages} pages for {} objects",
            seen.len()
        );
        if limit == 10 {
            ensure!(
                seen.iter().any(|n| n == "cm-20") && !seen.iter().any(|n| n == "cm-99"),
                "the later pages saw changes made after the first: {seen:?}"
            );
        }
    }

    // A continue token that is not one is a 400.
    expect_status(
        api.list(&ListParams::default().limit(5).continue_token("garbage!"))
            .await,
        400,
        "BadRequest",
    )?;
    Ok(())
}

/// Waits for the next item of a stream that `f` maps to something.
async fn next_where<S, T, U>(
    stream: &mut S,
    what: &str,
    mut f: impl FnMut(T) -> Option<U>,
) -> anyhow::Result<U>
where
    S: Stream<Item = T> + Unpin,
{
    timeout(WAIT, async {
        while let Some(item) = stream.next().await {
            if let Some(u) = f(item) {
                return Ok(u);
            }
        }
        bail!("stream ended while waiting for {what}")
    })
    .await
    .with_context(|| format!("timed out waiting for {what}"))?
}

/// The ADDED, MODIFIED and DELETED events of a plain watch, with the resourceVersions the
/// writes answered; then kube-runtime's watcher on the same changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_events() -> anyhow::Result<()> {
    let (_c, client) = up("kr-watch").await?;
    let api: Api<ConfigMap> = Api::default_namespaced(client);
    // Only this test's objects, whatever else runs in the cluster.
    let sel = "test=watch";
    let list_rv = api
        .list(&ListParams::default().labels(sel))
        .await?
        .metadata
        .resource_version
        .context("list rv")?;
    let mut events = api
        .watch(&WatchParams::default().labels(sel).timeout(120), &list_rv)
        .await?
        .boxed();
    let mut applied = watcher(api.clone(), watcher::Config::default().labels(sel)).boxed();
    next_where(&mut applied, "InitDone", |e| {
        matches!(e, Ok(watcher::Event::InitDone)).then_some(())
    })
    .await?;

    let labelled = |name: &str| -> anyhow::Result<ConfigMap> {
        Ok(serde_json::from_value(json!({
            "metadata": {"name": name, "labels": {"test": "watch"}},
            "data": {"v": "1"},
        }))?)
    };
    let cm = labelled("w")?;
    let created = api.create(&PostParams::default(), &cm).await?;
    let patched = api
        .patch(
            "w",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"v": "2"}})),
        )
        .await?;
    api.delete("w", &DeleteParams::default()).await?;
    // Another namespace's object is not in this watch.
    let other: Api<ConfigMap> = Api::namespaced(api.clone().into_client(), "kube-public");
    other.create(&PostParams::default(), &cm).await?;
    let last = api
        .create(&PostParams::default(), &labelled("last")?)
        .await?;

    let mut got = Vec::new();
    while got.len() < 4 {
        let ev = timeout(WAIT, events.next())
            .await
            .context("timed out waiting for watch events")?
            .context("watch ended")??;
        match ev {
            WatchEvent::Added(o) => got.push(("ADDED", o.name_any(), rv(&o)?, o.data)),
            WatchEvent::Modified(o) => got.push(("MODIFIED", o.name_any(), rv(&o)?, o.data)),
            WatchEvent::Deleted(o) => got.push(("DELETED", o.name_any(), rv(&o)?, o.data)),
            WatchEvent::Bookmark(_) => {}
            WatchEvent::Error(e) => bail!("watch error {e:?}"),
        }
    }
    let types: Vec<(&str, &str)> = got.iter().map(|g| (g.0, g.1.as_str())).collect();
    ensure!(
        types
            == [
                ("ADDED", "w"),
                ("MODIFIED", "w"),
                ("DELETED", "w"),
                ("ADDED", "last")
            ],
        "{types:?}"
    );
    ensure!(
        got[0].2 == rv(&created)? && got[1].2 == rv(&patched)?,
        "{got:?}"
    );
    ensure!(got[3].2 == rv(&last)?, "{got:?}");
    let v = |i: usize| got[i].3.as_ref().and_then(|d| d.get("v").cloned());
    ensure!(
        v(0).as_deref() == Some("1") && v(1).as_deref() == Some("2"),
        "{got:?}"
    );
    // The delete's event carries the last state, at a later revision.
    ensure!(v(2).as_deref() == Some("2"), "{got:?}");
    ensure!(
        got[2].2.parse::<u64>()? > got[1].2.parse::<u64>()?,
        "{got:?}"
    );

    // The watcher: Apply, Apply, Delete, Apply.
    let mut seen = Vec::new();
    while seen.len() < 4 {
        let ev = timeout(WAIT, applied.next())
            .await
            .context("timed out waiting for watcher events")?
            .context("watcher ended")?;
        match ev {
            Ok(watcher::Event::Apply(o)) => seen.push(("apply", o.name_any())),
            Ok(watcher::Event::Delete(o)) => seen.push(("delete", o.name_any())),
            Ok(other) => bail!("unexpected watcher event {other:?}"),
            Err(e) => bail!("watcher error {e:?}"),
        }
    }
    let seen: Vec<(&str, &str)> = seen.iter().map(|(t, n)| (*t, n.as_str())).collect();
    ensure!(
        seen == [
            ("apply", "w"),
            ("apply", "w"),
            ("delete", "w"),
            ("apply", "last")
        ],
        "{seen:?}"
    );

    // A watch from a resourceVersion replays what happened after it.
    let mut replay = api
        .watch(
            &WatchParams::default().labels(sel).timeout(60),
            &rv(&created)?,
        )
        .await?
        .boxed();
    let mut replayed = Vec::new();
    while replayed.len() < 3 {
        match timeout(WAIT, replay.next())
            .await?
            .context("watch ended")??
        {
            WatchEvent::Modified(o) => replayed.push(("MODIFIED", o.name_any())),
            WatchEvent::Deleted(o) => replayed.push(("DELETED", o.name_any())),
            WatchEvent::Added(o) => replayed.push(("ADDED", o.name_any())),
            WatchEvent::Bookmark(_) => {}
            WatchEvent::Error(e) => bail!("watch error {e:?}"),
        }
    }
    let replayed: Vec<(&str, &str)> = replayed.iter().map(|(t, n)| (*t, n.as_str())).collect();
    ensure!(
        replayed == [("MODIFIED", "w"), ("DELETED", "w"), ("ADDED", "last")],
        "{replayed:?}"
    );
    Ok(())
}

/// Polls `get` until the object is gone.
async fn wait_gone<K>(api: &Api<K>, name: &str) -> anyhow::Result<()>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    timeout(WAIT, async {
        loop {
            match api.get_opt(name).await? {
                None => return anyhow::Ok(()),
                Some(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    })
    .await
    .with_context(|| format!("timed out waiting for {name} to be deleted"))?
}

fn owned_by<K: Resource<DynamicType = ()>>(owner: &K, json: Value) -> anyhow::Result<Value> {
    let mut json = json;
    json["metadata"]["ownerReferences"] = json!([{
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "name": owner.meta().name,
        "uid": owner.meta().uid,
    }]);
    Ok(json)
}

/// Garbage collection by ownerReferences with the three propagation policies, and
/// dependents never collected while their owner exists, even when both are created while
/// a collection pass runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owner_references() -> anyhow::Result<()> {
    let (_c, client) = up("kr-gc").await?;
    namespace(&client, "gc").await?;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "gc");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "gc");
    let pp = PostParams::default();
    // Owners name a scheduler that does not run, so that only this test writes them.
    let owner = |name: &str| -> anyhow::Result<Pod> {
        Ok(serde_json::from_value(json!({
            "metadata": {"name": name},
            "spec": {"schedulerName": "kins-test-none", "containers": [{"name": "c", "image": "busybox"}]},
        }))?)
    };
    let dependent = |name: &str, o: &Pod| -> anyhow::Result<ConfigMap> {
        Ok(serde_json::from_value(owned_by(
            o,
            json!({"metadata": {"name": name}}),
        )?)?)
    };

    // Background (the default): the owner goes at once, its dependent after it.
    let o = pods.create(&pp, &owner("bg")?).await?;
    cms.create(&pp, &dependent("bg-dep", &o)?).await?;
    pods.delete("bg", &DeleteParams::default()).await?;
    wait_gone(&pods, "bg").await?;
    wait_gone(&cms, "bg-dep").await?;

    // Foreground: the owner stays, marked, until its dependent is gone.
    let o = pods.create(&pp, &owner("fg")?).await?;
    cms.create(&pp, &dependent("fg-dep", &o)?).await?;
    let marked = pods.delete("fg", &DeleteParams::foreground()).await?;
    let marked = marked
        .left()
        .context("foreground delete removed the owner at once")?;
    ensure!(
        marked.metadata.deletion_timestamp.is_some()
            && marked
                .finalizers()
                .iter()
                .any(|f| f == "foregroundDeletion"),
        "{marked:?}"
    );
    wait_gone(&cms, "fg-dep").await?;
    wait_gone(&pods, "fg").await?;

    // Orphan: the dependent stays, without the reference.
    let o = pods.create(&pp, &owner("or")?).await?;
    cms.create(&pp, &dependent("or-dep", &o)?).await?;
    pods.delete("or", &DeleteParams::orphan()).await?;
    wait_gone(&pods, "or").await?;
    let dep = cms.get("or-dep").await?;
    ensure!(dep.owner_references().is_empty(), "{dep:?}");

    // Owners and dependents created in quick succession while passes run (each new
    // reference starts one). The owners' kind (Pod) is read early in a pass and the
    // dependents' (Lease) last, with ballast between to make that take a while.
    for i in 0..600 {
        let cm: ConfigMap = serde_json::from_value(
            json!({"metadata": {"name": format!("ballast-{i:03}")}, "data": {"x": "y".repeat(2000)}}),
        )?;
        cms.create(&pp, &cm).await?;
    }
    let leases: Api<Lease> = Api::namespaced(client.clone(), "gc");
    let mut deps = Vec::new();
    for i in 0..400 {
        let o = pods.create(&pp, &owner(&format!("race-{i:03}"))?).await?;
        let lease: Lease = serde_json::from_value(owned_by(
            &o,
            json!({"metadata": {"name": format!("race-{i:03}-dep")}}),
        )?)?;
        deps.push(leases.create(&pp, &lease).await?.name_any());
    }
    // A pass that collects this sentinel started after all of the above.
    let o = pods.create(&pp, &owner("sentinel")?).await?;
    let lease: Lease =
        serde_json::from_value(owned_by(&o, json!({"metadata": {"name": "sentinel-dep"}}))?)?;
    leases.create(&pp, &lease).await?;
    pods.delete("sentinel", &DeleteParams::default()).await?;
    wait_gone(&leases, "sentinel-dep").await?;
    let left: BTreeSet<String> = leases
        .list(&ListParams::default())
        .await?
        .iter()
        .map(|c| c.name_any())
        .collect();
    let lost: Vec<&String> = deps.iter().filter(|d| !left.contains(*d)).collect();
    ensure!(
        lost.is_empty(),
        "{} dependents of live owners were collected: {lost:?}",
        lost.len()
    );
    Ok(())
}

/// Bookmarks of a watch that sees no events still move forward with the store, so a
/// client that resumes from its last bookmark (kube-runtime's watcher does) after a
/// disconnect does not start from a revision compaction may already have dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bookmarks_of_a_quiet_watch_advance() -> anyhow::Result<()> {
    let (_c, client) = up("kr-bmark").await?;
    namespace(&client, "quiet").await?;
    let quiet: Api<ConfigMap> = Api::namespaced(client.clone(), "quiet");
    let busy: Api<ConfigMap> = Api::default_namespaced(client.clone());
    let start = quiet
        .list(&ListParams::default())
        .await?
        .metadata
        .resource_version
        .context("list rv")?;
    let mut w = quiet
        .watch(&WatchParams::default().timeout(120), &start)
        .await?
        .boxed();
    let mut last = 0;
    for i in 0..10 {
        let cm: ConfigMap =
            serde_json::from_value(json!({"metadata": {"name": format!("b-{i}")}}))?;
        last = rv(&busy.create(&PostParams::default(), &cm).await?)?.parse::<u64>()?;
    }
    // Bookmarks come every few seconds; wait for one that covers the writes elsewhere.
    let at = next_where(
        &mut w,
        "a bookmark past the other namespace's writes",
        |ev| match ev {
            Ok(WatchEvent::Bookmark(b)) => b
                .metadata
                .resource_version
                .parse::<u64>()
                .ok()
                .filter(|v| *v >= last),
            _ => None,
        },
    )
    .await?;
    ensure!(at >= last);
    Ok(())
}

/// What a watcher test collects: object name to the resourceVersions applied and deleted.
#[derive(Default, Debug)]
struct Seen {
    applied: BTreeMap<String, Vec<String>>,
    deleted: BTreeMap<String, String>,
    inits: usize,
    errors: usize,
}

/// Waits until what the watcher task collected satisfies `done`.
async fn wait_seen(
    seen: &std::sync::Mutex<Seen>,
    tick: &mut tokio::sync::watch::Receiver<u64>,
    what: &str,
    done: impl Fn(&Seen) -> bool,
) -> anyhow::Result<()> {
    timeout(WAIT, async {
        while !done(&seen.lock().expect("not poisoned")) {
            if tick.changed().await.is_err() {
                bail!("the watcher task ended");
            }
        }
        Ok(())
    })
    .await
    .with_context(|| format!("timed out waiting for {what}"))?
}

/// A `watcher` keeps going through a kill -9 of the API server: it resumes from its last
/// resourceVersion (no relist), and sees every object created after the restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watcher_survives_apiserver_restart() -> anyhow::Result<()> {
    let (c, client) = up("kr-restart").await?;
    let c = std::sync::Arc::new(c);
    namespace(&client, "rs").await?;
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "rs");
    let make = |name: &str| -> anyhow::Result<ConfigMap> {
        Ok(serde_json::from_value(
            json!({"metadata": {"name": name}, "data": {"k": name}}),
        )?)
    };
    api.create(&PostParams::default(), &make("before")?).await?;

    // The watcher runs in its own task, collecting into `seen`.
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Seen::default()));
    let (tick_tx, mut tick) = tokio::sync::watch::channel(0u64);
    let stream = watcher(api.clone(), watcher::Config::default()).default_backoff();
    let s2 = seen.clone();
    let task = tokio::spawn(async move {
        let mut stream = stream.boxed();
        let mut n = 0u64;
        while let Some(ev) = stream.next().await {
            {
                let mut s = s2.lock().expect("not poisoned");
                match ev {
                    Ok(watcher::Event::Init) => s.inits += 1,
                    Ok(watcher::Event::InitApply(o) | watcher::Event::Apply(o)) => {
                        let v = o.resource_version().unwrap_or_default();
                        s.applied.entry(o.name_any()).or_default().push(v);
                    }
                    Ok(watcher::Event::Delete(o)) => {
                        s.deleted
                            .insert(o.name_any(), o.resource_version().unwrap_or_default());
                    }
                    Ok(watcher::Event::InitDone) => {}
                    Err(_) => s.errors += 1,
                }
            }
            n += 1;
            let _ = tick_tx.send(n);
        }
    });
    wait_seen(&seen, &mut tick, "the initial list", |s| {
        s.applied.contains_key("before")
    })
    .await?;
    let pre = api
        .create(&PostParams::default(), &make("pre-kill")?)
        .await?;
    let pre_rv = rv(&pre)?;
    wait_seen(&seen, &mut tick, "pre-kill", |s| {
        s.applied.contains_key("pre-kill")
    })
    .await?;
    ensure!(
        seen.lock().expect("not poisoned").applied["pre-kill"] == std::slice::from_ref(&pre_rv)
    );

    // kill -9; the supervisor starts a new API server.
    let c2 = c.clone();
    let old = tokio::task::spawn_blocking(move || c2.kill_apiserver()).await??;
    let c2 = c.clone();
    let new = tokio::task::spawn_blocking(move || c2.wait_apiserver_restarted(old, WAIT)).await??;
    ensure!(new != old);
    // Writes as soon as the new server answers, likely before the watcher reconnects.
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut want = BTreeMap::new();
    loop {
        match api.create(&PostParams::default(), &make("after-00")?).await {
            Ok(o) => {
                want.insert(o.name_any(), rv(&o)?);
                break;
            }
            Err(_) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => return Err(e).context("the API server did not come back"),
        }
    }
    for i in 1..30 {
        let o = api
            .create(&PostParams::default(), &make(&format!("after-{i:02}"))?)
            .await?;
        want.insert(o.name_any(), rv(&o)?);
    }
    let modified = api
        .patch(
            "before",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"k": "changed"}})),
        )
        .await?;
    let deleted = api.delete("pre-kill", &DeleteParams::default()).await?;
    let deleted_rv = deleted.left().map(|o| rv(&o)).transpose()?;
    let modified_rv = rv(&modified)?;

    wait_seen(
        &seen,
        &mut tick,
        "the objects created after the restart",
        |s| {
            want.keys().all(|k| s.applied.contains_key(k))
                && s.applied["before"].contains(&modified_rv)
                && s.deleted.contains_key("pre-kill")
        },
    )
    .await?;
    task.abort();
    let s = seen.lock().expect("not poisoned");
    for (name, v) in &want {
        ensure!(
            s.applied[name] == std::slice::from_ref(v),
            "{name}: {:?}, want [{v}]",
            s.applied[name]
        );
    }
    ensure!(
        s.applied["before"].len() == 2,
        "before: {:?}",
        s.applied["before"]
    );
    if let Some(d) = deleted_rv {
        // The DELETED event's resourceVersion is the deletion's.
        ensure!(
            s.deleted["pre-kill"].parse::<u64>()? >= d.parse::<u64>()?,
            "{s:?}"
        );
    }
    // One Init: the watcher resumed from its resourceVersion, it did not list again.
    ensure!(s.inits == 1, "the watcher relisted: {s:?}");
    eprintln!(
        "watcher: API server {old} killed, {new} started; {} errors while reconnecting, \
         all {} objects created after the restart seen",
        s.errors,
        want.len()
    );
    Ok(())
}

/// The `kubernetes` Service in default, with its Endpoints and EndpointSlice pointing at
/// this API server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubernetes_service() -> anyhow::Result<()> {
    let (c, client) = up("kr-k8s-svc").await?;
    let svc = Api::<Service>::namespaced(client.clone(), "default")
        .get("kubernetes")
        .await?;
    let spec = svc.spec.as_ref().context("no spec")?;
    ensure!(spec.cluster_ip.as_deref() == Some("10.96.0.1"), "{spec:?}");
    ensure!(spec.type_.as_deref() == Some("ClusterIP"), "{spec:?}");
    let ports = spec.ports.clone().unwrap_or_default();
    ensure!(
        ports.len() == 1 && ports[0].port == 443 && ports[0].name.as_deref() == Some("https"),
        "{ports:?}"
    );
    ensure!(label(&svc, "component").as_deref() == Some("apiserver"));

    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), "default");
    let slice = slices.get("kubernetes").await?;
    ensure!(slice.address_type == "IPv4", "{slice:?}");
    ensure!(
        label(&slice, "kubernetes.io/service-name").as_deref() == Some("kubernetes"),
        "{slice:?}"
    );
    ensure!(
        slice.endpoints.len() == 1 && slice.endpoints[0].addresses == ["127.0.0.1"],
        "{slice:?}"
    );
    ensure!(
        slice.endpoints[0].conditions.as_ref().and_then(|c| c.ready) == Some(true),
        "{slice:?}"
    );
    let sp = slice.ports.clone().unwrap_or_default();
    ensure!(
        sp.len() == 1
            && sp[0].port == Some(i32::from(c.port))
            && sp[0].name.as_deref() == Some("https"),
        "{sp:?}"
    );
    let by_label = slices
        .list(&ListParams::default().labels("kubernetes.io/service-name=kubernetes"))
        .await?;
    ensure!(
        by_label
            .items
            .iter()
            .map(|s| s.name_any())
            .collect::<Vec<_>>()
            == ["kubernetes"],
        "{by_label:?}"
    );

    let ep = Api::<Endpoints>::namespaced(client.clone(), "default")
        .get("kubernetes")
        .await?;
    let subsets = ep.subsets.unwrap_or_default();
    ensure!(
        subsets.len() == 1
            && subsets[0]
                .addresses
                .as_ref()
                .is_some_and(|a| a.len() == 1 && a[0].ip == "127.0.0.1")
            && subsets[0]
                .ports
                .as_ref()
                .is_some_and(|p| p.len() == 1 && p[0].port == i32::from(c.port)),
        "{subsets:?}"
    );

    // The default namespaces and their service accounts.
    let namespaces: Vec<String> = Api::<Namespace>::all(client.clone())
        .list(&ListParams::default())
        .await?
        .iter()
        .map(|n| n.name_any())
        .collect();
    for ns in ["default", "kube-node-lease", "kube-public", "kube-system"] {
        ensure!(namespaces.iter().any(|n| n == ns), "{namespaces:?}");
        Api::<k8s_openapi::api::core::v1::ServiceAccount>::namespaced(client.clone(), ns)
            .get("default")
            .await
            .with_context(|| format!("the default service account of {ns}"))?;
    }
    Ok(())
}

/// `watcher::Config::default().streaming_lists()`: the initial state as ADDED events ended
/// by the initial-events-end bookmark (sendInitialEvents), then live events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streaming_lists() -> anyhow::Result<()> {
    let (_c, client) = up("kr-stream").await?;
    namespace(&client, "st").await?;
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "st");
    for i in 0..5 {
        let cm: ConfigMap = serde_json::from_value(
            json!({"metadata": {"name": format!("s-{i}"), "labels": {"set": "a"}}}),
        )?;
        api.create(&PostParams::default(), &cm).await?;
    }
    let cm: ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": "other", "labels": {"set": "b"}}}))?;
    api.create(&PostParams::default(), &cm).await?;

    let cfg = watcher::Config::default().streaming_lists().labels("set=a");
    let mut stream = watcher(api.clone(), cfg).boxed();
    let mut initial = BTreeSet::new();
    let mut started = false;
    loop {
        let ev = timeout(WAIT, stream.next())
            .await
            .context("timed out during the initial events")?
            .context("watcher ended")?;
        match ev? {
            watcher::Event::Init => started = true,
            watcher::Event::InitApply(o) => {
                ensure!(started, "InitApply before Init");
                initial.insert(o.name_any());
            }
            watcher::Event::InitDone => break,
            other => bail!("unexpected event during the initial events: {other:?}"),
        }
    }
    let want: BTreeSet<String> = (0..5).map(|i| format!("s-{i}")).collect();
    ensure!(initial == want, "{initial:?}");

    let cm: ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": "s-new", "labels": {"set": "a"}}}))?;
    api.create(&PostParams::default(), &cm).await?;
    // Leaves the selector: seen as a delete.
    api.patch(
        "s-0",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"set": "b"}}})),
    )
    .await?;
    let mut live = Vec::new();
    while live.len() < 2 {
        match timeout(WAIT, stream.next())
            .await?
            .context("watcher ended")??
        {
            watcher::Event::Apply(o) => live.push(("apply", o.name_any())),
            watcher::Event::Delete(o) => live.push(("delete", o.name_any())),
            other => bail!("unexpected event {other:?}"),
        }
    }
    let live: Vec<(&str, &str)> = live.iter().map(|(t, n)| (*t, n.as_str())).collect();
    ensure!(live == [("apply", "s-new"), ("delete", "s-0")], "{live:?}");

    // The protocol underneath: ADDED events, then a bookmark marking their end at a
    // resourceVersion that includes every write made before the watch.
    let last_write = rv(&api.get("s-0").await?)?.parse::<u64>()?;
    let mut raw = api
        .watch(
            &WatchParams::streaming_lists().labels("set=a").timeout(60),
            "",
        )
        .await?
        .boxed();
    let mut added = BTreeSet::new();
    loop {
        match timeout(WAIT, raw.next()).await?.context("watch ended")?? {
            WatchEvent::Added(o) => {
                added.insert(o.name_any());
            }
            WatchEvent::Bookmark(b) => {
                if b.metadata
                    .annotations
                    .contains_key("k8s.io/initial-events-end")
                {
                    ensure!(b.metadata.resource_version.parse::<u64>()? >= last_write);
                    break;
                }
            }
            other => bail!("unexpected initial event {other:?}"),
        }
    }
    let want: BTreeSet<String> = ["s-1", "s-2", "s-3", "s-4", "s-new"]
        .map(String::from)
        .into();
    ensure!(added == want, "{added:?}");
    Ok(())
}

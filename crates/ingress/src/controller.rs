//! The cluster-facing runner: reflector stores of Ingresses, IngressClasses, Services,
//! EndpointSlices and Secrets; on every change (debounced by a few milliseconds) the
//! table is rebuilt whole and swapped in. Then, apart from the data path: the address of
//! our LoadBalancer Service written to each served Ingress's status, and events for what
//! the build found wrong (once per message).
//!
//! Watch errors are retried with kube-runtime's back-off while the last table keeps
//! serving, so routing survives an API server restart.

use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{stream, StreamExt};
use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client};
use serde_json::{json, Value};
use tokio::net::TcpListener;

use crate::routes::{self, Identity, Inputs, Key};
use crate::{metrics, tls, IngressError, Shared};

/// Changes closer together than this are built as one table.
pub const DEBOUNCE: Duration = Duration::from_millis(2);

/// Options of [`run`].
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub http: SocketAddr,
    pub https: SocketAddr,
    /// `/healthz` and `/metrics`.
    pub metrics: SocketAddr,
    /// The LoadBalancer Service whose address is written to the Ingresses' status.
    pub publish_service: (String, String),
    pub identity: Identity,
    /// This pod (the events' reporting instance).
    pub pod_name: Option<String>,
    /// Data-path threads (default: one per CPU).
    pub workers: Option<usize>,
}

impl Default for RunOptions {
    fn default() -> Self {
        let any = |port| SocketAddr::from(([0, 0, 0, 0], port));
        RunOptions {
            http: any(80),
            https: any(443),
            metrics: any(10254),
            publish_service: ("kube-system".into(), "kins-ingress".into()),
            identity: Identity {
                controller: "kins.dev/ingress-controller".into(),
                legacy_name: "kins".into(),
            },
            pod_name: None,
            workers: None,
        }
    }
}

enum Change {
    /// A watch delivered something; true once its first list is complete.
    Kind(usize, bool),
    /// Nothing that routing depends on (e.g. only an Ingress's status).
    Ignored,
}

/// What of an Ingress routing depends on: spec, annotations, deletion.
fn routing_fingerprint(i: &Ingress) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    serde_json::to_string(&i.spec)
        .unwrap_or_default()
        .hash(&mut h);
    format!("{:?}", i.metadata.annotations).hash(&mut h);
    i.metadata.deletion_timestamp.is_some().hash(&mut h);
    h.finish()
}

fn watch_all<K>(
    api: Api<K>,
    cfg: watcher::Config,
    index: usize,
) -> (Store<K>, stream::BoxStream<'static, Change>)
where
    K: kube::Resource<DynamicType = ()> + Clone + std::fmt::Debug + Send + Sync + 'static,
    K: serde::de::DeserializeOwned,
{
    let (store, writer) = reflector::store::<K>();
    let s = reflector::reflector(writer, watcher(api, cfg).default_backoff())
        .map(move |ev| match ev {
            Ok(ev) => Change::Kind(index, matches!(ev, watcher::Event::InitDone)),
            Err(e) => {
                tracing::warn!(index, error = %e, "watch error (retrying)");
                Change::Ignored
            }
        })
        .boxed();
    (store, s)
}

/// Runs the controller until a listener fails.
pub async fn run(client: Client, opts: RunOptions) -> Result<(), IngressError> {
    let shared = Arc::new(Shared::default());
    let metrics_l =
        TcpListener::bind(opts.metrics)
            .await
            .map_err(|source| IngressError::Listen {
                addr: opts.metrics,
                source,
            })?;
    let resolver = tls::Resolver {
        shared: shared.clone(),
        default: tls::default_cert()?,
    };
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls::server_config(resolver)?));
    let synced = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let workers = opts.workers.unwrap_or_else(|| {
        std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
    });
    crate::proxy::spawn_workers(workers, opts.http, opts.https, shared.clone(), acceptor)?;
    tokio::spawn(serve_metrics(metrics_l, shared.clone(), synced.clone()));
    tracing::info!(http = %opts.http, https = %opts.https, metrics = %opts.metrics, workers, "kins-ingress listening");

    let (ingresses, ing_events) = watch_all(
        Api::<Ingress>::all(client.clone()),
        watcher::Config::default(),
        0,
    );
    // Status writes come back as Ingress events: only routing changes rebuild.
    let mut seen: HashMap<String, u64> = HashMap::new();
    let ing_store = ingresses.clone();
    let ing_events = ing_events
        .map(move |c| match c {
            Change::Kind(i, done) if !done => {
                let state = ing_store.state();
                let now: HashMap<String, u64> = state
                    .iter()
                    .map(|i| {
                        (
                            i.metadata.uid.clone().unwrap_or_default(),
                            routing_fingerprint(i),
                        )
                    })
                    .collect();
                if now == seen {
                    Change::Ignored
                } else {
                    seen = now;
                    Change::Kind(i, false)
                }
            }
            c => c,
        })
        .boxed();
    let (classes, cls_events) = watch_all(
        Api::<IngressClass>::all(client.clone()),
        watcher::Config::default(),
        1,
    );
    let (services, svc_events) = watch_all(
        Api::<Service>::all(client.clone()),
        watcher::Config::default(),
        2,
    );
    let (slices, eps_events) = watch_all(
        Api::<EndpointSlice>::all(client.clone()),
        watcher::Config::default().labels("kubernetes.io/service-name"),
        3,
    );
    let (secrets, sec_events) = watch_all(
        Api::<Secret>::all(client.clone()),
        watcher::Config::default(),
        4,
    );
    let mut events =
        stream::select_all([ing_events, cls_events, svc_events, eps_events, sec_events]);
    let mut ready = [false; 5];
    let mut dirty = false;
    let status = StatusWriter::new(client.clone(), opts.clone());
    loop {
        let Some(first) = events.next().await else {
            return Ok(());
        };
        let mut batch = vec![first];
        while let Ok(Some(c)) = tokio::time::timeout(DEBOUNCE, events.next()).await {
            batch.push(c);
        }
        for c in batch {
            if let Change::Kind(i, done) = c {
                ready[i] |= done;
                dirty = true;
            }
        }
        if !dirty || ready.iter().any(|r| !r) {
            continue;
        }
        dirty = false;
        let started = Instant::now();
        let (ing, cls, svc, eps, sec) = (
            ingresses.state(),
            classes.state(),
            services.state(),
            slices.state(),
            secrets.state(),
        );
        let inputs = Inputs {
            ingresses: &ing,
            classes: &cls,
            services: &svc,
            slices: &eps,
            secrets: &sec,
        };
        let table = routes::build(&inputs, &opts.identity, &shared.registry, &tls::parse_pem);
        let took = started.elapsed();
        let g = &shared.global;
        g.reloads.fetch_add(1, Ordering::Relaxed);
        g.last_reload_us
            .store(took.as_micros() as u64, Ordering::Relaxed);
        g.ingresses
            .store(table.served.len() as u64, Ordering::Relaxed);
        g.routes.store(table.routes as u64, Ordering::Relaxed);
        tracing::debug!(
            ingresses = table.served.len(),
            routes = table.routes,
            tls_hosts = table.tls_hosts(),
            build_us = took.as_micros(),
            "routing table built"
        );
        let served = table.served.clone();
        let problems = table.problems.clone();
        shared.registry.retain(&served);
        shared.set_table(table);
        synced.store(true, Ordering::Relaxed);
        status.update(&ing, &svc, &served, &problems);
    }
}

/// Writes Ingress statuses and events off the rebuild path: one task, the latest wish wins.
struct StatusWriter {
    tx: tokio::sync::watch::Sender<Option<Wish>>,
    publish: (String, String),
}

#[derive(Clone)]
struct Wish {
    /// Ingresses whose status should change: key, uid, status.loadBalancer value.
    statuses: Vec<(Key, String, Value)>,
    /// What the build found wrong, with the Ingress's uid.
    problems: Vec<(routes::Problem, String)>,
    /// Served Ingresses with their uid and routing fingerprint: a new pair is an event.
    synced: Vec<(Key, String, String)>,
}

impl StatusWriter {
    fn new(client: Client, opts: RunOptions) -> StatusWriter {
        let (tx, mut rx) = tokio::sync::watch::channel::<Option<Wish>>(None);
        let opts2 = opts.clone();
        tokio::spawn(async move {
            let opts = opts2;
            // Per object (uid), so a re-created Ingress is told again.
            let mut reported: HashSet<(String, &'static str, String)> = HashSet::new();
            // What was written last per uid (the store lags our own writes a little).
            let mut written: HashMap<String, Value> = HashMap::new();
            let mut announced: HashSet<String> = HashSet::new();
            while rx.changed().await.is_ok() {
                let Some(wish) = rx.borrow_and_update().clone() else {
                    continue;
                };
                for (key, uid, fp) in &wish.synced {
                    if announced.insert(fp.clone()) {
                        event(
                            &client,
                            &opts,
                            key,
                            uid,
                            "Normal",
                            "Sync",
                            "Scheduled for sync".into(),
                        )
                        .await;
                    }
                }
                for (p, uid) in &wish.problems {
                    if reported.insert((uid.clone(), p.reason, p.message.clone())) {
                        event(
                            &client,
                            &opts,
                            &p.ingress,
                            uid,
                            "Warning",
                            p.reason,
                            p.message.clone(),
                        )
                        .await;
                    }
                }
                let writes = wish
                    .statuses
                    .into_iter()
                    .filter(|(_, uid, v)| written.get(uid) != Some(v))
                    .map(|(key, uid, lb)| {
                        let client = client.clone();
                        async move {
                            let api: Api<Ingress> = Api::namespaced(client, &key.0);
                            let patch = json!({"status": {"loadBalancer": lb}});
                            let r = api
                                .patch_status(&key.1, &PatchParams::default(), &Patch::Merge(&patch))
                                .await;
                            if let Err(e) = &r {
                                tracing::warn!(ingress = %format!("{}/{}", key.0, key.1), error = %e, "status");
                            }
                            (uid, lb, r.is_ok())
                        }
                    });
                let done: Vec<_> = stream::iter(writes).buffer_unordered(16).collect().await;
                for (uid, lb, ok) in done {
                    if ok {
                        written.insert(uid, lb);
                    }
                }
            }
        });
        StatusWriter {
            tx,
            publish: opts.publish_service.clone(),
        }
    }

    /// Works out what the statuses and events should be now and hands it to the task.
    fn update(
        &self,
        ingresses: &[Arc<Ingress>],
        services: &[Arc<Service>],
        served: &[Key],
        problems: &[routes::Problem],
    ) {
        let lb = {
            let (ns, name) = &self.publish;
            services
                .iter()
                .find(|s| {
                    s.metadata.namespace.as_deref() == Some(ns)
                        && s.metadata.name.as_deref() == Some(name)
                })
                .and_then(|s| s.status.as_ref()?.load_balancer.as_ref()?.ingress.clone())
                .unwrap_or_default()
        };
        let addresses: Vec<Value> = lb
            .iter()
            .filter_map(|i| {
                let mut v = serde_json::Map::new();
                if let Some(ip) = &i.ip {
                    v.insert("ip".into(), json!(ip));
                }
                if let Some(h) = &i.hostname {
                    v.insert("hostname".into(), json!(h));
                }
                (!v.is_empty()).then_some(Value::Object(v))
            })
            .collect();
        let want = json!({"ingress": addresses});
        let served: HashSet<&Key> = served.iter().collect();
        let mut statuses = Vec::new();
        let mut synced = Vec::new();
        let mut uids: HashMap<Key, String> = HashMap::new();
        for i in ingresses {
            let key = (
                i.metadata.namespace.clone().unwrap_or_default(),
                i.metadata.name.clone().unwrap_or_default(),
            );
            let uid = i.metadata.uid.clone().unwrap_or_default();
            let current = i
                .status
                .as_ref()
                .and_then(|s| s.load_balancer.as_ref())
                .and_then(|l| serde_json::to_value(l).ok())
                .unwrap_or(json!({}));
            let current_list = current.get("ingress").cloned().unwrap_or(json!([]));
            if served.contains(&key) {
                if current_list != want["ingress"] {
                    statuses.push((key.clone(), uid.clone(), want.clone()));
                }
                let fp = format!("{uid}:{}", routing_fingerprint(i));
                synced.push((key.clone(), uid.clone(), fp));
                uids.insert(key, uid);
            } else if current_list.as_array().is_some_and(|a| !a.is_empty())
                && addresses
                    .iter()
                    .any(|a| current_list.as_array().is_some_and(|c| c.contains(a)))
            {
                // No longer ours (class changed): our address goes.
                statuses.push((key, uid, json!({"ingress": []})));
            }
        }
        self.tx.send_replace(Some(Wish {
            statuses,
            problems: problems
                .iter()
                .map(|p| (p.clone(), uids.get(&p.ingress).cloned().unwrap_or_default()))
                .collect(),
            synced,
        }));
    }
}

async fn event(
    client: &Client,
    opts: &RunOptions,
    key: &Key,
    uid: &str,
    type_: &str,
    reason: &str,
    message: String,
) {
    let now = Timestamp::now();
    let ev = Event {
        metadata: ObjectMeta {
            name: Some(format!("{}.{:x}", key.1, now.as_nanosecond())),
            namespace: Some(key.0.clone()),
            ..Default::default()
        },
        involved_object: ObjectReference {
            api_version: Some("networking.k8s.io/v1".into()),
            kind: Some("Ingress".into()),
            namespace: Some(key.0.clone()),
            name: Some(key.1.clone()),
            uid: Some(uid.to_string()),
            ..Default::default()
        },
        reason: Some(reason.into()),
        message: Some(message),
        type_: Some(type_.into()),
        source: Some(EventSource {
            component: Some("kins-ingress".into()),
            host: None,
        }),
        reporting_component: Some("kins-ingress".into()),
        reporting_instance: opts.pod_name.clone(),
        first_timestamp: Some(Time(now)),
        last_timestamp: Some(Time(now)),
        count: Some(1),
        ..Default::default()
    };
    let api: Api<Event> = Api::namespaced(client.clone(), &key.0);
    if let Err(error) = api.create(&PostParams::default(), &ev).await {
        tracing::warn!(%error, reason, "cannot record an event");
    }
}

/// `/healthz` (200 once the first table is in) and `/metrics`.
async fn serve_metrics(
    l: TcpListener,
    shared: Arc<Shared>,
    synced: Arc<std::sync::atomic::AtomicBool>,
) {
    use axum::routing::get;
    let s2 = shared.clone();
    let app = axum::Router::new()
        .route(
            "/healthz",
            get(move || {
                let ok = synced.load(Ordering::Relaxed);
                async move {
                    if ok {
                        (axum::http::StatusCode::OK, "ok")
                    } else {
                        (axum::http::StatusCode::SERVICE_UNAVAILABLE, "syncing")
                    }
                }
            }),
        )
        .route(
            "/metrics",
            get(move || {
                let body = metrics::render(&s2.registry, &s2.global);
                async move {
                    (
                        [(
                            axum::http::header::CONTENT_TYPE,
                            "text/plain; version=0.0.4",
                        )],
                        body,
                    )
                }
            }),
        );
    if let Err(e) = axum::serve(l, app).await {
        tracing::warn!(error = %e, "metrics server");
    }
}

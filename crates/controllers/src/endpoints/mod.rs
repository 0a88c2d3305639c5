//! The endpoint controllers of kube-controller-manager:
//!
//! - [`Slices`] (endpointslice + endpoints controllers), keyed by Service: for a Service
//!   with a selector, the EndpointSlices of its pods (one or more per resolved port set,
//!   at most 100 endpoints each, one empty placeholder when it has none) and its legacy
//!   Endpoints object. Triggered by the Service, its pods (a pod maps to the Services
//!   whose selector matches it now, and to those whose slices hold it, which covers its
//!   old labels), its slices and its Endpoints.
//! - [`Mirror`] (endpointslice-mirroring controller), keyed by Endpoints: mirrors the
//!   Endpoints of a Service without a selector into slices; deletes the Endpoints this
//!   controller wrote once their Service is gone (its slices go by ownerReference).
//!
//! What is wanted is computed by [`desired`] from the reflector stores alone; a slice or
//! Endpoints object is written only when it differs. Since the stores may lag behind this
//! controller's own writes, each key remembers the resourceVersions it wrote (and the
//! slices it deleted) and is not planned again before the stores have caught up (the
//! awaited watch event reconciles it again), so a lagging store never duplicates a slice.

pub mod desired;

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Endpoints, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{DeleteParams, PostParams, Preconditions};
use kube::runtime::controller::Action;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client, ResourceExt};

use crate::runner::{self, lock, Ready, Reconciler};
use crate::{Error, Metrics};

use desired::{
    LABEL_ENDPOINTS_MANAGED_BY, LABEL_SERVICE_NAME, LABEL_SLICE_MANAGED_BY, MIRROR_MANAGER,
    SLICE_MANAGER,
};

/// How soon a key whose stores lag behind its own writes is looked at again if the
/// awaited watch event has not brought it back before.
const STALE_RETRY: Duration = Duration::from_secs(1);

/// How long writes are waited for in the stores: past it they are forgotten (someone else
/// may have deleted or replaced what was written, so the store never shows it).
const CATCH_UP_LIMIT: Duration = Duration::from_secs(5);

fn rv(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> Option<u64> {
    meta.resource_version.as_deref()?.parse().ok()
}

/// What one key's last writes left, which its stores must show before it is planned again.
#[derive(Debug)]
struct Expected {
    /// When the writes were made.
    at: Instant,
    /// Slice name -> the resourceVersion written, or `None` for a slice deleted.
    slices: HashMap<String, Option<u64>>,
    /// The resourceVersion of the Endpoints written.
    endpoints: Option<u64>,
}

impl Default for Expected {
    fn default() -> Self {
        Expected {
            at: Instant::now(),
            slices: HashMap::new(),
            endpoints: None,
        }
    }
}

impl Expected {
    fn is_empty(&self) -> bool {
        self.slices.is_empty() && self.endpoints.is_none()
    }
}

/// The writes of each key not yet seen in the stores.
#[derive(Debug, Default)]
struct Tracker(Mutex<HashMap<String, Expected>>);

impl Tracker {
    /// Whether the stores show every write of `key` (then it is forgotten).
    fn caught_up(&self, key: &str, slices: &[Arc<EndpointSlice>], endpoints: Option<u64>) -> bool {
        let mut map = lock(&self.0);
        let Some(exp) = map.get(key) else {
            return true;
        };
        let slice_ok = exp.slices.iter().all(|(name, want)| {
            let have = slices
                .iter()
                .find(|s| s.metadata.name.as_deref() == Some(name.as_str()));
            match (want, have) {
                (None, None) => true,
                (None, Some(_)) => false,
                (Some(_), None) => false,
                (Some(w), Some(s)) => rv(&s.metadata).is_none_or(|h| h >= *w),
            }
        });
        let ep_ok = match (exp.endpoints, endpoints) {
            (None, _) => true,
            (Some(w), Some(h)) => h >= w,
            (Some(_), None) => false,
        };
        let done = (slice_ok && ep_ok) || exp.at.elapsed() > CATCH_UP_LIMIT;
        if done {
            map.remove(key);
        }
        done
    }

    fn set(&self, key: String, exp: Expected) {
        let mut map = lock(&self.0);
        if exp.is_empty() {
            map.remove(&key);
        } else {
            map.insert(key, exp);
        }
    }
}

/// The slices of `store` for the Service `namespace/name`.
fn slices_of(store: &Store<EndpointSlice>, namespace: &str, name: &str) -> Vec<Arc<EndpointSlice>> {
    store
        .state()
        .into_iter()
        .filter(|s| {
            s.metadata.namespace.as_deref() == Some(namespace)
                && s.labels().get(LABEL_SERVICE_NAME).map(String::as_str) == Some(name)
        })
        .collect()
}

/// Applies a slice plan, recording each write in `exp`.
async fn apply(
    client: &Client,
    namespace: &str,
    owner: &str,
    plan: desired::Plan,
    exp: &mut Expected,
    metrics: &Metrics,
    manager: &str,
) -> Result<(), Error> {
    let api: Api<EndpointSlice> = Api::namespaced(client.clone(), namespace);
    let object = |n: &str| format!("{namespace}/{n}");
    for s in plan.create {
        let made = api
            .create(&PostParams::default(), &s)
            .await
            .map_err(|e| Error::api("creating endpointslice", object(owner), e))?;
        metrics.inc(
            "kins_endpointslice_writes_total",
            &[("controller", manager), ("verb", "create")],
        );
        exp.slices.insert(made.name_any(), rv(&made.metadata));
    }
    for s in plan.update {
        let name = s.name_any();
        let made = api
            .replace(&name, &PostParams::default(), &s)
            .await
            .map_err(|e| Error::api("updating endpointslice", object(&name), e))?;
        metrics.inc(
            "kins_endpointslice_writes_total",
            &[("controller", manager), ("verb", "update")],
        );
        exp.slices.insert(name, rv(&made.metadata));
    }
    for name in plan.delete {
        match api.delete(&name, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.is_not_found() => {}
            Err(e) => return Err(Error::api("deleting endpointslice", object(&name), e)),
        }
        metrics.inc(
            "kins_endpointslice_writes_total",
            &[("controller", manager), ("verb", "delete")],
        );
        exp.slices.insert(name, None);
    }
    Ok(())
}

/// The endpointslice and endpoints controllers (keyed by Service).
pub struct Slices {
    client: Client,
    pods: Store<Pod>,
    pods_ready: Ready,
    slices: Store<EndpointSlice>,
    slices_ready: Ready,
    endpoints: Store<Endpoints>,
    endpoints_ready: Ready,
    tracker: Tracker,
    metrics: Arc<Metrics>,
}

impl Slices {
    async fn sync(
        &self,
        svc: &Service,
        ns: &str,
        name: &str,
        existing: &[Arc<EndpointSlice>],
        current_ep: Option<Arc<Endpoints>>,
        exp: &mut Expected,
    ) -> Result<(), Error> {
        let refs: Vec<&EndpointSlice> = existing.iter().map(Arc::as_ref).collect();
        if desired::selector(svc).is_none() {
            // No selector (or ExternalName): no slices of ours; the Endpoints are the user's.
            let plan = desired::Plan {
                delete: refs
                    .iter()
                    .filter_map(|s| s.metadata.name.clone())
                    .collect(),
                ..Default::default()
            };
            return apply(&self.client, ns, name, plan, exp, &self.metrics, Self::NAME).await;
        }
        let pods: Vec<Arc<Pod>> = self
            .pods
            .state()
            .into_iter()
            .filter(|p| p.metadata.namespace.as_deref() == Some(ns))
            .collect();
        let groups = desired::pod_groups(svc, pods.iter().map(Arc::as_ref));
        let plan = desired::plan(&desired::service_template(svc), groups, &refs);
        if !plan.is_empty() {
            tracing::debug!(service = %format!("{ns}/{name}"), create = plan.create.len(), update = plan.update.len(), delete = plan.delete.len(), "writing endpointslices");
        }
        apply(&self.client, ns, name, plan, exp, &self.metrics, Self::NAME).await?;

        let want = desired::legacy_endpoints(svc, pods.iter().map(Arc::as_ref));
        if let Some(write) = desired::endpoints_write(current_ep.as_deref(), want) {
            let api: Api<Endpoints> = Api::namespaced(self.client.clone(), ns);
            let key = format!("{ns}/{name}");
            let made = if write.metadata.resource_version.is_some() {
                api.replace(name, &PostParams::default(), &write)
                    .await
                    .map_err(|e| Error::api("updating endpoints", key, e))?
            } else {
                api.create(&PostParams::default(), &write)
                    .await
                    .map_err(|e| Error::api("creating endpoints", key, e))?
            };
            self.metrics
                .inc("kins_endpoints_writes_total", &[("controller", Self::NAME)]);
            exp.endpoints = rv(&made.metadata);
        }
        Ok(())
    }
}

impl Reconciler for Slices {
    type Object = Service;
    const NAME: &'static str = "endpointslice";

    async fn reconcile(&self, svc: Arc<Service>) -> Result<Action, Error> {
        self.pods_ready.wait().await;
        self.slices_ready.wait().await;
        self.endpoints_ready.wait().await;
        let ns = svc.namespace().unwrap_or_default();
        let name = svc.name_any();
        let key = format!("{ns}/{name}");
        let existing = slices_of(&self.slices, &ns, &name);
        let current_ep = self.endpoints.get(&ObjectRef::new(&name).within(&ns));
        let ep_rv = current_ep.as_ref().and_then(|e| rv(&e.metadata));
        if !self.tracker.caught_up(&key, &existing, ep_rv) {
            return Ok(Action::requeue(STALE_RETRY));
        }
        let mut exp = Expected::default();
        let result = self
            .sync(&svc, &ns, &name, &existing, current_ep, &mut exp)
            .await;
        self.tracker.set(key, exp);
        result.map(|()| Action::await_change())
    }
}

/// Runs the endpointslice and endpoints controllers until `shutdown`.
pub fn run_slices(
    client: Client,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) -> impl Future<Output = ()> + Send + 'static {
    let (services, _, service_events) = runner::reflect(
        Api::<Service>::all(client.clone()),
        watcher::Config::default(),
    );
    let (pods, pods_ready, pod_events) =
        runner::reflect(Api::<Pod>::all(client.clone()), watcher::Config::default());
    let (slices, slices_ready, slice_events) = runner::reflect(
        Api::<EndpointSlice>::all(client.clone()),
        watcher::Config::default().labels(&format!("{LABEL_SLICE_MANAGED_BY}={SLICE_MANAGER}")),
    );
    let (endpoints, endpoints_ready, endpoint_events) = runner::reflect(
        Api::<Endpoints>::all(client.clone()),
        watcher::Config::default(),
    );
    let (svc_store, slice_store) = (services.clone(), slices.clone());
    let controller = runner::controller(services, service_events)
        .watches_stream(pod_events.touched_objects(), move |pod: Pod| {
            services_of_pod(&svc_store, &slice_store, &pod)
        })
        .watches_stream(slice_events.touched_objects(), |s: EndpointSlice| {
            owner_service(&s)
        })
        .watches_stream(endpoint_events.touched_objects(), |ep: Endpoints| {
            let ns = ep.namespace().unwrap_or_default();
            Some(ObjectRef::new(&ep.name_any()).within(&ns))
        });
    let reconciler = Arc::new(Slices {
        client,
        pods,
        pods_ready,
        slices,
        slices_ready,
        endpoints,
        endpoints_ready,
        tracker: Tracker::default(),
        metrics: metrics.clone(),
    });
    runner::run(controller, reconciler, metrics, shutdown)
}

/// The Service a slice belongs to (by its service-name label).
fn owner_service<K: kube::Resource<DynamicType = ()>>(s: &EndpointSlice) -> Option<ObjectRef<K>> {
    let name = s.labels().get(LABEL_SERVICE_NAME)?;
    Some(ObjectRef::new(name).within(&s.namespace().unwrap_or_default()))
}

/// The Services a pod concerns: those of its namespace that select it, and those whose
/// slices hold it (so a pod whose labels changed leaves the Services it left).
fn services_of_pod(
    services: &Store<Service>,
    slices: &Store<EndpointSlice>,
    pod: &Pod,
) -> Vec<ObjectRef<Service>> {
    let ns = pod.metadata.namespace.as_deref();
    let mut refs: Vec<ObjectRef<Service>> = services
        .state()
        .iter()
        .filter(|s| s.metadata.namespace.as_deref() == ns)
        .filter(|s| desired::selector(s).is_some_and(|sel| desired::matches(sel, pod)))
        .map(|s| ObjectRef::from_obj(s.as_ref()))
        .collect();
    for s in slices.state() {
        if s.metadata.namespace.as_deref() != ns {
            continue;
        }
        let holds = s.endpoints.iter().any(|e| {
            e.target_ref
                .as_ref()
                .is_some_and(|r| r.name == pod.metadata.name && r.kind.as_deref() == Some("Pod"))
        });
        if let Some(r) = holds.then(|| owner_service(&s)).flatten() {
            if !refs.contains(&r) {
                refs.push(r);
            }
        }
    }
    refs
}

/// The endpointslice-mirroring controller (keyed by Endpoints).
pub struct Mirror {
    client: Client,
    services: Store<Service>,
    services_ready: Ready,
    slices: Store<EndpointSlice>,
    slices_ready: Ready,
    tracker: Tracker,
    metrics: Arc<Metrics>,
}

impl Mirror {
    async fn sync(
        &self,
        ep: &Endpoints,
        ns: &str,
        name: &str,
        existing: &[Arc<EndpointSlice>],
        exp: &mut Expected,
    ) -> Result<(), Error> {
        let mut svc = self.services.get(&ObjectRef::new(name).within(ns));
        if svc.is_none() {
            // The cache may lag behind a Service just made: ask.
            let api: Api<Service> = Api::namespaced(self.client.clone(), ns);
            svc = api
                .get_opt(name)
                .await
                .map_err(|e| Error::api("getting service", format!("{ns}/{name}"), e))?
                .map(Arc::new);
        }
        let ours = ep
            .labels()
            .get(LABEL_ENDPOINTS_MANAGED_BY)
            .map(String::as_str)
            == Some(desired::ENDPOINTS_MANAGER);
        if svc.is_none() && ours {
            let api: Api<Endpoints> = Api::namespaced(self.client.clone(), ns);
            let dp = DeleteParams {
                preconditions: Some(Preconditions {
                    uid: ep.uid(),
                    resource_version: None,
                }),
                ..Default::default()
            };
            match api.delete(name, &dp).await {
                Ok(_) => {
                    tracing::debug!(endpoints = %format!("{ns}/{name}"), "deleted endpoints of a deleted service")
                }
                Err(kube::Error::Api(s)) if s.is_not_found() || s.code == 409 => {}
                Err(e) => return Err(Error::api("deleting endpoints", format!("{ns}/{name}"), e)),
            }
        }
        let refs: Vec<&EndpointSlice> = existing.iter().map(Arc::as_ref).collect();
        let plan = if desired::should_mirror(svc.as_deref(), ep) {
            desired::plan(
                &desired::mirror_template(ep),
                desired::mirror_groups(ep),
                &refs,
            )
        } else {
            desired::Plan {
                delete: refs
                    .iter()
                    .filter_map(|s| s.metadata.name.clone())
                    .collect(),
                ..Default::default()
            }
        };
        apply(&self.client, ns, name, plan, exp, &self.metrics, Self::NAME).await
    }
}

impl Reconciler for Mirror {
    type Object = Endpoints;
    const NAME: &'static str = "endpointslice-mirroring";

    async fn reconcile(&self, ep: Arc<Endpoints>) -> Result<Action, Error> {
        self.services_ready.wait().await;
        self.slices_ready.wait().await;
        let ns = ep.namespace().unwrap_or_default();
        let name = ep.name_any();
        let key = format!("{ns}/{name}");
        let existing = slices_of(&self.slices, &ns, &name);
        if !self.tracker.caught_up(&key, &existing, None) {
            return Ok(Action::requeue(STALE_RETRY));
        }
        let mut exp = Expected::default();
        let result = self.sync(&ep, &ns, &name, &existing, &mut exp).await;
        self.tracker.set(key, exp);
        result.map(|()| Action::await_change())
    }
}

/// Runs the endpointslice-mirroring controller until `shutdown`.
pub fn run_mirroring(
    client: Client,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) -> impl Future<Output = ()> + Send + 'static {
    let (endpoints, _, endpoint_events) = runner::reflect(
        Api::<Endpoints>::all(client.clone()),
        watcher::Config::default(),
    );
    let (services, services_ready, service_events) = runner::reflect(
        Api::<Service>::all(client.clone()),
        watcher::Config::default(),
    );
    let (slices, slices_ready, slice_events) = runner::reflect(
        Api::<EndpointSlice>::all(client.clone()),
        watcher::Config::default().labels(&format!("{LABEL_SLICE_MANAGED_BY}={MIRROR_MANAGER}")),
    );
    let controller = runner::controller(endpoints, endpoint_events)
        .watches_stream(service_events.touched_objects(), |svc: Service| {
            let ns = svc.namespace().unwrap_or_default();
            Some(ObjectRef::new(&svc.name_any()).within(&ns))
        })
        .watches_stream(slice_events.touched_objects(), |s: EndpointSlice| {
            owner_service(&s)
        });
    let reconciler = Arc::new(Mirror {
        client,
        services,
        services_ready,
        slices,
        slices_ready,
        tracker: Tracker::default(),
        metrics: metrics.clone(),
    });
    runner::run(controller, reconciler, metrics, shutdown)
}

#[cfg(test)]
mod tests;

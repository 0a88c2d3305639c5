//! The ReplicaSet controller of kube-controller-manager, keyed by ReplicaSet: keeps
//! `spec.replicas` active pods that match `spec.selector` and that it controls (adopting
//! matching orphans, releasing owned pods that no longer match), creates missing pods from
//! `spec.template`, deletes surplus ones in Kubernetes' preference order, and writes
//! `status` (replicas, fullyLabeledReplicas, readyReplicas, availableReplicas,
//! observedGeneration).
//!
//! What to do is computed by [`plan`] from the pod store alone. Since the store may lag
//! behind this controller's own writes, each ReplicaSet remembers the pods it created,
//! patched and deleted ([`Expectations`], Kubernetes' "expectations") and is not planned
//! again before the store shows them, so a lagging store never makes it create twice.
//!
//! The helpers for selectors, ownerReferences and expectations are shared with the
//! Deployment controller ([`crate::deployment`]).

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::{ReplicaSet, ReplicaSetStatus};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::controller::Action;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client, Resource, ResourceExt};
use serde_json::{json, Value};

use crate::podgc::{is_terminal, node_name};
use crate::runner::{self, lock, Ready, Reconciler};
use crate::{Error, Metrics};

/// How soon a key whose store lags behind its own writes is looked at again if the awaited
/// watch event has not brought it back before.
pub(crate) const STALE_RETRY: Duration = Duration::from_secs(1);

/// How long writes are waited for in the store: past it they are forgotten (someone else
/// may have deleted what was created, so the store never shows it).
pub(crate) const CATCH_UP_LIMIT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------
// Selectors and ownership (shared with the Deployment controller)

/// Whether `labels` match a label selector. An empty selector matches nothing (apps/v1
/// forbids them; matching everything would adopt a whole namespace).
pub fn selector_matches(sel: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let empty = sel.match_expressions.as_ref().is_none_or(Vec::is_empty)
        && sel.match_labels.as_ref().is_none_or(BTreeMap::is_empty);
    !empty && api::selectors::labels_match(sel, labels)
}

/// The controller ownerReference an object gets from `owner`.
pub fn controller_ref(api_version: &str, kind: &str, owner: &ObjectMeta) -> OwnerReference {
    OwnerReference {
        api_version: api_version.into(),
        kind: kind.into(),
        name: owner.name.clone().unwrap_or_default(),
        uid: owner.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// The controller ownerReference of an object, if it has one.
pub fn controller_of(meta: &ObjectMeta) -> Option<&OwnerReference> {
    meta.owner_references
        .as_deref()
        .unwrap_or_default()
        .iter()
        .find(|r| r.controller == Some(true))
}

/// The owners of kind `K` an object (`meta`) concerns: its controller if that is a `K`
/// (nothing if something else controls it), else (an orphan) those `K`s of its namespace
/// whose selector, as `selector` reads it, matches its labels.
pub fn owners_of<K>(
    owners: &Store<K>,
    meta: &ObjectMeta,
    selector: impl Fn(&K) -> Option<&LabelSelector>,
) -> Vec<ObjectRef<K>>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    let ns = meta.namespace.clone().unwrap_or_default();
    if let Some(r) = controller_of(meta) {
        return if r.kind == K::kind(&()) {
            vec![ObjectRef::new(&r.name).within(&ns)]
        } else {
            Vec::new()
        };
    }
    let empty = BTreeMap::new();
    let labels = meta.labels.as_ref().unwrap_or(&empty);
    owners
        .state()
        .iter()
        .filter(|o| o.meta().namespace.as_deref() == Some(ns.as_str()))
        .filter(|o| selector(o).is_some_and(|s| selector_matches(s, labels)))
        .map(|o| ObjectRef::from_obj(o.as_ref()))
        .collect()
}

/// What a controller does with an object its selector may concern (Kubernetes'
/// `ClaimPods`/`ClaimReplicaSets`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// Controlled by the owner and matching: its own.
    Owned,
    /// An orphan that matches: to adopt.
    Adopt,
    /// Controlled by the owner but no longer matching: to release.
    Release,
    /// None of its business.
    Ignore,
}

/// Classifies one object for the owner with uid `owner_uid`.
pub fn claim(
    owner_uid: &str,
    owner_deleting: bool,
    sel: &LabelSelector,
    meta: &ObjectMeta,
) -> Claim {
    let empty = BTreeMap::new();
    let matches = selector_matches(sel, meta.labels.as_ref().unwrap_or(&empty));
    match controller_of(meta) {
        Some(r) if r.uid == owner_uid => match (matches, owner_deleting) {
            (true, _) => Claim::Owned,
            (false, false) => Claim::Release,
            (false, true) => Claim::Ignore,
        },
        Some(_) => Claim::Ignore,
        None if matches && !owner_deleting && meta.deletion_timestamp.is_none() => Claim::Adopt,
        None => Claim::Ignore,
    }
}

/// The merge patch that makes `owner` the controller of an object (its other references
/// kept; pinned to the object's resourceVersion, so a concurrent change conflicts).
pub fn adopt_patch(meta: &ObjectMeta, owner: &OwnerReference) -> Value {
    let mut refs: Vec<Value> = meta
        .owner_references
        .iter()
        .flatten()
        .filter(|r| r.uid != owner.uid)
        .map(runner::to_value)
        .collect();
    refs.push(runner::to_value(owner));
    json!({"metadata": {"ownerReferences": refs, "resourceVersion": meta.resource_version}})
}

/// The merge patch that removes the owner with uid `owner_uid` from an object's references.
pub fn release_patch(meta: &ObjectMeta, owner_uid: &str) -> Value {
    let refs: Vec<Value> = meta
        .owner_references
        .iter()
        .flatten()
        .filter(|r| r.uid != owner_uid)
        .map(runner::to_value)
        .collect();
    let refs = if refs.is_empty() {
        Value::Null
    } else {
        Value::Array(refs)
    };
    json!({"metadata": {"ownerReferences": refs, "resourceVersion": meta.resource_version}})
}

/// The resourceVersion of an object as a number.
pub(crate) fn rv(meta: &ObjectMeta) -> Option<u64> {
    meta.resource_version.as_deref()?.parse().ok()
}

// ---------------------------------------------------------------------------------------
// Expectations

/// What one key's last writes left, which its store must show before it is planned again:
/// object name -> the resourceVersion written, or `None` for an object deleted.
#[derive(Debug)]
pub(crate) struct Expected {
    at: Instant,
    objects: HashMap<String, Option<u64>>,
}

impl Default for Expected {
    fn default() -> Self {
        Expected {
            at: Instant::now(),
            objects: HashMap::new(),
        }
    }
}

impl Expected {
    /// Remembers a write of `name` that left it at `meta`'s resourceVersion.
    pub(crate) fn wrote(&mut self, name: String, meta: &ObjectMeta) {
        self.objects.insert(name, rv(meta));
    }
    /// Remembers a deletion of `name`.
    pub(crate) fn deleted(&mut self, name: String) {
        self.objects.insert(name, None);
    }
}

/// The writes of each key not yet seen in the store.
#[derive(Debug, Default)]
pub(crate) struct Expectations(Mutex<HashMap<String, Expected>>);

impl Expectations {
    /// Whether the store shows every write of `key` (then they are forgotten). `lookup`
    /// gives an object of the store by name: its resourceVersion and whether it is being
    /// deleted (which satisfies a deletion).
    pub(crate) fn caught_up(
        &self,
        key: &str,
        lookup: impl Fn(&str) -> Option<(Option<u64>, bool)>,
    ) -> bool {
        let mut map = lock(&self.0);
        let Some(exp) = map.get(key) else {
            return true;
        };
        let seen = exp
            .objects
            .iter()
            .all(|(name, want)| match (want, lookup(name)) {
                (None, None) => true,
                (None, Some((_, deleting))) => deleting,
                (Some(_), None) => false,
                (Some(w), Some((have, _))) => have.is_none_or(|h| h >= *w),
            });
        let done = seen || exp.at.elapsed() > CATCH_UP_LIMIT;
        if done {
            map.remove(key);
        }
        done
    }

    pub(crate) fn set(&self, key: String, exp: Expected) {
        let mut map = lock(&self.0);
        if exp.objects.is_empty() {
            map.remove(&key);
        } else {
            map.insert(key, exp);
        }
    }
}

// ---------------------------------------------------------------------------------------
// Pods

/// Whether a pod counts: not being deleted, not finished.
pub fn is_active(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none() && !is_terminal(pod)
}

/// The pod's Ready condition when it is True: `Some(since)` (the transition time, if any).
fn ready_since(pod: &Pod) -> Option<Option<Timestamp>> {
    let c = pod
        .status
        .as_ref()?
        .conditions
        .as_deref()?
        .iter()
        .find(|c| c.type_ == "Ready" && c.status == "True")?;
    Some(c.last_transition_time.as_ref().map(|t| t.0))
}

/// Whether a pod is ready (condition Ready True).
pub fn is_ready(pod: &Pod) -> bool {
    ready_since(pod).is_some()
}

/// How long until a pod becomes available: `Some(ZERO)` if it is, `Some(d)` if it is ready
/// but not for `min_ready` yet, `None` if it is not ready.
pub fn until_available(pod: &Pod, min_ready: i32, now: Timestamp) -> Option<Duration> {
    let since = ready_since(pod)?;
    if min_ready <= 0 {
        return Some(Duration::ZERO);
    }
    let min = Duration::from_secs(min_ready as u64);
    // Kubernetes: a ready pod without a transition time never becomes available.
    let since = since?;
    let age = Duration::try_from(now.duration_since(since)).unwrap_or(Duration::ZERO);
    if age > min {
        Some(Duration::ZERO)
    } else {
        Some((min - age).max(Duration::from_millis(1)))
    }
}

fn phase_rank(pod: &Pod) -> u8 {
    match pod.status.as_ref().and_then(|s| s.phase.as_deref()) {
        Some("Unknown") => 1,
        Some("Running") => 2,
        _ => 0,
    }
}

fn restarts(pod: &Pod) -> i32 {
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_deref())
        .unwrap_or_default()
        .iter()
        .map(|c| c.restart_count)
        .sum()
}

/// Kubernetes' order of pods to delete first when scaling down (`ActivePods`):
/// unscheduled before scheduled, Pending before Unknown before Running, not ready before
/// ready, ready for less time before more, more restarts before fewer, newer before older.
pub fn delete_first(a: &Pod, b: &Pod) -> Ordering {
    let assigned = |p: &Pod| node_name(p).is_some();
    // A missing time sorts as the latest one.
    let later_first = |x: Option<Timestamp>, y: Option<Timestamp>| match (x, y) {
        (None, None) => Ordering::Equal,
        (None, Some(_)) => Ordering::Less,
        (Some(_), None) => Ordering::Greater,
        (Some(x), Some(y)) => y.cmp(&x),
    };
    assigned(a)
        .cmp(&assigned(b))
        .then(phase_rank(a).cmp(&phase_rank(b)))
        .then(is_ready(a).cmp(&is_ready(b)))
        .then_with(|| match (ready_since(a), ready_since(b)) {
            (Some(x), Some(y)) => later_first(x, y),
            _ => Ordering::Equal,
        })
        .then(restarts(b).cmp(&restarts(a)))
        .then_with(|| {
            later_first(
                a.metadata.creation_timestamp.as_ref().map(|t| t.0),
                b.metadata.creation_timestamp.as_ref().map(|t| t.0),
            )
        })
        .then_with(|| a.metadata.name.cmp(&b.metadata.name))
}

/// What one ReplicaSet needs done.
#[derive(Debug, Default, PartialEq)]
pub struct Plan {
    /// Orphan pods to adopt.
    pub adopt: Vec<String>,
    /// Owned pods to release.
    pub release: Vec<String>,
    /// How many pods to create.
    pub create: usize,
    /// Pods to delete, in order.
    pub delete: Vec<String>,
    /// The status it should show (from the pods before these changes, as Kubernetes).
    pub status: ReplicaSetStatus,
    /// When a ready pod becomes available (minReadySeconds), to look again then.
    pub recheck: Option<Duration>,
}

/// Plans one ReplicaSet from the pods of its namespace.
pub fn plan(rs: &ReplicaSet, pods: &[&Pod], now: Timestamp) -> Plan {
    let mut plan = Plan::default();
    let spec = rs.spec.as_ref();
    let uid = rs.metadata.uid.as_deref().unwrap_or_default();
    let deleting = rs.metadata.deletion_timestamp.is_some();
    let default_sel = LabelSelector::default();
    let sel = spec.map(|s| &s.selector).unwrap_or(&default_sel);
    let mut owned: Vec<&Pod> = Vec::new();
    for &pod in pods.iter().filter(|p| is_active(p)) {
        match claim(uid, deleting, sel, &pod.metadata) {
            Claim::Owned => owned.push(pod),
            Claim::Adopt => {
                plan.adopt.push(pod.name_any());
                owned.push(pod);
            }
            Claim::Release => plan.release.push(pod.name_any()),
            Claim::Ignore => {}
        }
    }
    let want = spec.and_then(|s| s.replicas).unwrap_or(1).max(0) as usize;
    if !deleting {
        if owned.len() < want {
            plan.create = want - owned.len();
        } else if owned.len() > want {
            let mut order = owned.clone();
            order.sort_by(|a, b| delete_first(a, b));
            plan.delete = order[..owned.len() - want]
                .iter()
                .map(|p| p.name_any())
                .collect();
        }
    }
    let template_labels = spec
        .and_then(|s| s.template.as_ref())
        .and_then(|t| t.metadata.as_ref())
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    let min_ready = spec.and_then(|s| s.min_ready_seconds).unwrap_or(0);
    let count = |f: &dyn Fn(&Pod) -> bool| owned.iter().filter(|p| f(p)).count() as i32;
    let mut available = 0;
    for p in &owned {
        match until_available(p, min_ready, now) {
            Some(Duration::ZERO) => available += 1,
            Some(d) => plan.recheck = Some(plan.recheck.map_or(d, |r: Duration| r.min(d))),
            None => {}
        }
    }
    plan.status = ReplicaSetStatus {
        replicas: owned.len() as i32,
        fully_labeled_replicas: Some(count(&|p| {
            let labels = p.metadata.labels.as_ref();
            template_labels
                .iter()
                .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
        })),
        ready_replicas: Some(count(&is_ready)),
        available_replicas: Some(available),
        observed_generation: rs.metadata.generation,
        conditions: rs.status.as_ref().and_then(|s| s.conditions.clone()),
        terminating_replicas: None,
    };
    plan
}

/// Whether a stored status already says what `want` says.
pub fn status_matches(have: Option<&ReplicaSetStatus>, want: &ReplicaSetStatus) -> bool {
    let Some(h) = have else {
        return false;
    };
    h.replicas == want.replicas
        && h.fully_labeled_replicas.unwrap_or(0) == want.fully_labeled_replicas.unwrap_or(0)
        && h.ready_replicas.unwrap_or(0) == want.ready_replicas.unwrap_or(0)
        && h.available_replicas.unwrap_or(0) == want.available_replicas.unwrap_or(0)
        && h.observed_generation == want.observed_generation
}

/// A pod of a ReplicaSet, from its template.
pub fn pod_from_template(rs: &ReplicaSet) -> Pod {
    let template = rs
        .spec
        .as_ref()
        .and_then(|s| s.template.clone())
        .unwrap_or_default();
    let tm = template.metadata.unwrap_or_default();
    Pod {
        metadata: ObjectMeta {
            generate_name: Some(format!("{}-", rs.name_any())),
            namespace: rs.metadata.namespace.clone(),
            labels: tm.labels,
            annotations: tm.annotations,
            finalizers: tm.finalizers,
            owner_references: Some(vec![controller_ref("apps/v1", "ReplicaSet", &rs.metadata)]),
            ..Default::default()
        },
        spec: template.spec,
        status: None,
    }
}

// ---------------------------------------------------------------------------------------
// The controller

/// The ReplicaSet controller.
pub struct ReplicaSets {
    client: Client,
    pods: Store<Pod>,
    pods_ready: Ready,
    expectations: Expectations,
    metrics: Arc<Metrics>,
}

impl ReplicaSets {
    async fn apply(
        &self,
        rs: &ReplicaSet,
        ns: &str,
        plan: &Plan,
        exp: &mut Expected,
    ) -> Result<(), Error> {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), ns);
        let pp = PatchParams::default();
        let object = |n: &str| format!("{ns}/{n}");
        let owner = controller_ref("apps/v1", "ReplicaSet", &rs.metadata);
        let uid = owner.uid.clone();
        let find = |name: &str| {
            self.pods
                .get(&ObjectRef::new(name).within(ns))
                .map(|p| p.metadata.clone())
        };
        for name in &plan.adopt {
            let Some(meta) = find(name) else { continue };
            let made = pods
                .patch(name, &pp, &Patch::Merge(adopt_patch(&meta, &owner)))
                .await
                .map_err(|e| Error::api("adopting pod", object(name), e))?;
            exp.wrote(name.clone(), &made.metadata);
        }
        for name in &plan.release {
            let Some(meta) = find(name) else { continue };
            match pods
                .patch(name, &pp, &Patch::Merge(release_patch(&meta, &uid)))
                .await
            {
                Ok(made) => exp.wrote(name.clone(), &made.metadata),
                Err(kube::Error::Api(s)) if s.is_not_found() => {}
                Err(e) => return Err(Error::api("releasing pod", object(name), e)),
            }
        }
        if plan.create > 0 {
            let pod = pod_from_template(rs);
            for _ in 0..plan.create {
                let made = pods
                    .create(&PostParams::default(), &pod)
                    .await
                    .map_err(|e| Error::api("creating pod", object(&rs.name_any()), e))?;
                self.metrics
                    .inc("kins_replicaset_pod_writes_total", &[("verb", "create")]);
                exp.wrote(made.name_any(), &made.metadata);
            }
            tracing::debug!(replicaset = %object(&rs.name_any()), created = plan.create, "created pods");
        }
        for name in &plan.delete {
            let uid = find(name).and_then(|m| m.uid);
            let dp = DeleteParams {
                preconditions: Some(Preconditions {
                    uid,
                    resource_version: None,
                }),
                ..Default::default()
            };
            match pods.delete(name, &dp).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.is_not_found() || s.code == 409 => {}
                Err(e) => return Err(Error::api("deleting pod", object(name), e)),
            }
            self.metrics
                .inc("kins_replicaset_pod_writes_total", &[("verb", "delete")]);
            exp.deleted(name.clone());
        }
        if !plan.delete.is_empty() {
            tracing::debug!(replicaset = %object(&rs.name_any()), deleted = ?plan.delete, "deleted pods");
        }
        Ok(())
    }
}

impl Reconciler for ReplicaSets {
    type Object = ReplicaSet;
    const NAME: &'static str = "replicaset";

    async fn reconcile(&self, rs: Arc<ReplicaSet>) -> Result<Action, Error> {
        self.pods_ready.wait().await;
        let ns = rs.namespace().unwrap_or_default();
        let name = rs.name_any();
        let key = format!("{ns}/{name}");
        let pods: Vec<Arc<Pod>> = self
            .pods
            .state()
            .into_iter()
            .filter(|p| p.metadata.namespace.as_deref() == Some(ns.as_str()))
            .collect();
        let lookup = |n: &str| {
            pods.iter()
                .find(|p| p.metadata.name.as_deref() == Some(n))
                .map(|p| (rv(&p.metadata), p.metadata.deletion_timestamp.is_some()))
        };
        if !self.expectations.caught_up(&key, lookup) {
            return Ok(Action::requeue(STALE_RETRY));
        }
        let refs: Vec<&Pod> = pods.iter().map(Arc::as_ref).collect();
        let plan = plan(&rs, &refs, Timestamp::now());
        let mut exp = Expected::default();
        let result = self.apply(&rs, &ns, &plan, &mut exp).await;
        self.expectations.set(key.clone(), exp);
        result?;
        if !status_matches(rs.status.as_ref(), &plan.status) {
            let s = &plan.status;
            let patch = json!({"status": {
                "replicas": s.replicas,
                "fullyLabeledReplicas": s.fully_labeled_replicas,
                "readyReplicas": s.ready_replicas,
                "availableReplicas": s.available_replicas,
                "observedGeneration": s.observed_generation,
            }});
            let api: Api<ReplicaSet> = Api::namespaced(self.client.clone(), &ns);
            match api
                .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.is_not_found() => {}
                Err(e) => return Err(Error::api("updating replicaset status", key, e)),
            }
        }
        Ok(plan
            .recheck
            .map(Action::requeue)
            .unwrap_or_else(Action::await_change))
    }
}

/// Runs the ReplicaSet controller until `shutdown`.
pub fn run(
    client: Client,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) -> impl Future<Output = ()> + Send + 'static {
    let (rss, _, rs_events) = runner::reflect(
        Api::<ReplicaSet>::all(client.clone()),
        watcher::Config::default(),
    );
    let (pods, pods_ready, pod_events) =
        runner::reflect(Api::<Pod>::all(client.clone()), watcher::Config::default());
    let rs_store = rss.clone();
    let controller = runner::controller(rss, rs_events).watches_stream(
        pod_events.touched_objects(),
        move |pod: Pod| {
            owners_of(&rs_store, &pod.metadata, |rs: &ReplicaSet| {
                rs.spec.as_ref().map(|s| &s.selector)
            })
        },
    );
    let reconciler = Arc::new(ReplicaSets {
        client,
        pods,
        pods_ready,
        expectations: Expectations::default(),
        metrics: metrics.clone(),
    });
    runner::run(controller, reconciler, metrics, shutdown)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, labels: Value, extra: Value) -> Pod {
        let mut v = json!({"metadata": {"name": name, "namespace": "default", "labels": labels,
                           "uid": format!("uid-{name}"), "resourceVersion": "5"},
                           "spec": {"containers": [{"name": "c", "image": "nginx"}]}});
        merge(&mut v, extra);
        serde_json::from_value(v).expect("valid pod")
    }

    fn merge(a: &mut Value, b: Value) {
        match (a, b) {
            (Value::Object(a), Value::Object(b)) => {
                for (k, v) in b {
                    merge(a.entry(k).or_insert(Value::Null), v);
                }
            }
            (a, b) => *a = b,
        }
    }

    fn rs(replicas: i32) -> ReplicaSet {
        serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "default", "uid": "rs-uid", "generation": 3},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}},
                     "template": {"metadata": {"labels": {"app": "web", "tier": "front"}},
                                  "spec": {"containers": [{"name": "c", "image": "nginx"}]}}},
        }))
        .expect("valid replicaset")
    }

    fn owned() -> Value {
        json!({"metadata": {"ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
            "name": "web", "uid": "rs-uid", "controller": true}]}})
    }

    fn ready(t: &str) -> Value {
        json!({"status": {"phase": "Running",
            "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": t}]}})
    }

    #[test]
    fn selectors() {
        let labels: BTreeMap<String, String> =
            [("app".into(), "web".into()), ("env".into(), "prod".into())].into();
        let check = |sel: Value, want: bool| {
            let sel: LabelSelector = serde_json::from_value(sel.clone()).expect("selector");
            assert_eq!(selector_matches(&sel, &labels), want, "{sel:?}");
        };
        check(json!({"matchLabels": {"app": "web"}}), true);
        check(json!({"matchLabels": {"app": "db"}}), false);
        check(json!({}), false);
        check(
            json!({"matchExpressions": [{"key": "env", "operator": "In", "values": ["prod", "qa"]}]}),
            true,
        );
        check(
            json!({"matchExpressions": [{"key": "env", "operator": "NotIn", "values": ["prod"]}]}),
            false,
        );
        check(
            json!({"matchExpressions": [{"key": "x", "operator": "DoesNotExist"}]}),
            true,
        );
        check(
            json!({"matchLabels": {"app": "web"}, "matchExpressions": [{"key": "x", "operator": "Exists"}]}),
            false,
        );
    }

    #[test]
    fn owners() {
        let (store, mut writer) = kube::runtime::reflector::store::<ReplicaSet>();
        let replicaset = |name: &str, ns: &str, app: &str| -> ReplicaSet {
            serde_json::from_value(json!({
                "metadata": {"name": name, "namespace": ns, "uid": format!("uid-{name}")},
                "spec": {"selector": {"matchLabels": {"app": app}},
                         "template": {"metadata": {"labels": {"app": app}}}},
            }))
            .expect("valid replicaset")
        };
        for r in [
            replicaset("web-a", "default", "web"),
            replicaset("web-b", "default", "web"),
            replicaset("db", "default", "db"),
            replicaset("web-elsewhere", "other", "web"),
        ] {
            writer.apply_watcher_event(&watcher::Event::Apply(r));
        }
        let controlled_by = |kind: &str| {
            json!({"metadata": {"ownerReferences": [{"apiVersion": "apps/v1", "kind": kind,
                "name": "web-b", "uid": "uid-web-b", "controller": true}]}})
        };
        let check = |labels: Value, extra: Value, want: &[&str]| {
            let p = pod("p", labels, extra);
            let mut got: Vec<String> = owners_of(&store, &p.metadata, |rs: &ReplicaSet| {
                rs.spec.as_ref().map(|s| &s.selector)
            })
            .into_iter()
            .inspect(|r| assert_eq!(r.namespace.as_deref(), Some("default")))
            .map(|r| r.name)
            .collect();
            got.sort();
            assert_eq!(got, want, "{:?}", p.metadata);
        };
        // An orphan: every matching ReplicaSet of its namespace.
        check(json!({"app": "web"}), json!({}), &["web-a", "web-b"]);
        check(json!({"app": "db"}), json!({}), &["db"]);
        check(json!({"app": "cache"}), json!({}), &[]);
        // Controlled: only its controller, whatever its labels say.
        check(
            json!({"app": "db"}),
            controlled_by("ReplicaSet"),
            &["web-b"],
        );
        check(json!({"app": "web"}), controlled_by("StatefulSet"), &[]);
    }

    #[test]
    fn scale_down_order() {
        let t = |s: &str| json!({"metadata": {"creationTimestamp": s}});
        let mut pods = [
            pod("ready-old", json!({}), ready("2024-01-01T00:00:00Z")),
            pod("ready-new", json!({}), ready("2024-01-01T00:05:00Z")),
            pod(
                "running-notready",
                json!({}),
                json!({"spec": {"nodeName": "n1"}, "status": {"phase": "Running"}}),
            ),
            pod(
                "pending-scheduled",
                json!({}),
                json!({"spec": {"nodeName": "n1"}, "status": {"phase": "Pending"}}),
            ),
            pod("unscheduled-old", json!({}), t("2024-01-01T00:00:00Z")),
            pod("unscheduled-new", json!({}), t("2024-01-01T01:00:00Z")),
        ];
        for p in pods.iter_mut().take(2) {
            p.spec.as_mut().expect("spec").node_name = Some("n1".into());
        }
        pods.sort_by(delete_first);
        let order: Vec<String> = pods.iter().map(|p| p.name_any()).collect();
        assert_eq!(
            order,
            [
                "unscheduled-new",
                "unscheduled-old",
                "pending-scheduled",
                "running-notready",
                "ready-new",
                "ready-old"
            ]
        );
    }

    /// One planning case: pods (name, labels, extra), replicas, expected plan summary.
    fn check(
        replicas: i32,
        pods: &[Pod],
        want: (&[&str], &[&str], usize, &[&str]),
        status: [i32; 4],
    ) {
        let refs: Vec<&Pod> = pods.iter().collect();
        let now: Timestamp = "2024-01-01T01:00:00Z".parse().expect("time");
        let p = plan(&rs(replicas), &refs, now);
        assert_eq!(
            (
                p.adopt.iter().map(String::as_str).collect::<Vec<_>>(),
                p.release.iter().map(String::as_str).collect::<Vec<_>>(),
                p.create,
                p.delete.iter().map(String::as_str).collect::<Vec<_>>()
            ),
            (want.0.to_vec(), want.1.to_vec(), want.2, want.3.to_vec())
        );
        let s = &p.status;
        assert_eq!(
            [
                s.replicas,
                s.fully_labeled_replicas.unwrap_or(0),
                s.ready_replicas.unwrap_or(0),
                s.available_replicas.unwrap_or(0)
            ],
            status
        );
        assert_eq!(s.observed_generation, Some(3));
    }

    #[test]
    fn plans() {
        let web = json!({"app": "web", "tier": "front"});
        let mut owned_ready = owned();
        merge(&mut owned_ready, ready("2024-01-01T00:00:00Z"));
        // Nothing yet: create all.
        check(3, &[], (&[], &[], 3, &[]), [0, 0, 0, 0]);
        // An orphan is adopted and counted; a pod of another controller is not.
        let other = json!({"metadata": {"ownerReferences": [{"apiVersion": "apps/v1",
            "kind": "ReplicaSet", "name": "x", "uid": "x", "controller": true}]}});
        check(
            2,
            &[
                pod("orphan", web.clone(), json!({})),
                pod("theirs", web.clone(), other),
            ],
            (&["orphan"], &[], 1, &[]),
            [1, 1, 0, 0],
        );
        // Owned but no longer matching: released (and not counted).
        check(
            1,
            &[
                pod("moved", json!({"app": "db"}), owned()),
                pod("a", json!({"app": "web"}), owned_ready.clone()),
            ],
            (&[], &["moved"], 0, &[]),
            [1, 0, 1, 1],
        );
        // Terminating and finished pods do not count.
        let mut gone = owned();
        merge(
            &mut gone,
            json!({"metadata": {"deletionTimestamp": "2024-01-01T00:00:00Z"}}),
        );
        let mut failed = owned();
        merge(&mut failed, json!({"status": {"phase": "Failed"}}));
        check(
            2,
            &[
                pod("gone", web.clone(), gone),
                pod("failed", web.clone(), failed),
                pod("a", web.clone(), owned_ready.clone()),
            ],
            (&[], &[], 1, &[]),
            [1, 1, 1, 1],
        );
        // Too many: the not-ready one goes first.
        check(
            1,
            &[
                pod("a", web.clone(), owned_ready.clone()),
                pod("b", web.clone(), owned()),
            ],
            (&[], &[], 0, &["b"]),
            [2, 2, 1, 1],
        );
    }

    #[test]
    fn min_ready_seconds() {
        let now: Timestamp = "2024-01-01T00:00:10Z".parse().expect("time");
        let mut p = owned();
        merge(&mut p, ready("2024-01-01T00:00:00Z"));
        let p = pod("a", json!({"app": "web"}), p);
        assert_eq!(until_available(&p, 0, now), Some(Duration::ZERO));
        assert_eq!(until_available(&p, 5, now), Some(Duration::ZERO));
        assert_eq!(until_available(&p, 30, now), Some(Duration::from_secs(20)));
        let not_ready = pod("b", json!({}), json!({}));
        assert_eq!(until_available(&not_ready, 0, now), None);
    }

    #[test]
    fn pods_from_the_template() {
        let p = pod_from_template(&rs(1));
        assert_eq!(p.metadata.generate_name.as_deref(), Some("web-"));
        assert_eq!(p.labels().get("tier").map(String::as_str), Some("front"));
        let r = &p.metadata.owner_references.expect("owner")[0];
        assert_eq!(
            (
                r.kind.as_str(),
                r.uid.as_str(),
                r.controller,
                r.block_owner_deletion
            ),
            ("ReplicaSet", "rs-uid", Some(true), Some(true))
        );
    }

    #[test]
    fn expectations_wait_for_the_store() {
        let e = Expectations::default();
        let mut exp = Expected::default();
        exp.objects.insert("a".into(), Some(10));
        exp.objects.insert("b".into(), None);
        e.set("k".into(), exp);
        assert!(!e.caught_up("k", |_| None));
        assert!(!e.caught_up("k", |n| (n == "a").then_some((Some(9), false))));
        assert!(!e.caught_up("k", |_| Some((Some(10), false))));
        assert!(e.caught_up("k", |n| Some((Some(10), n == "b"))));
        // Forgotten once seen.
        assert!(e.caught_up("k", |_| None));
    }
}

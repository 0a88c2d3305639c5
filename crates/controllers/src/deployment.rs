//! The Deployment controller of kube-controller-manager, keyed by Deployment: owns
//! ReplicaSets named `<deployment>-<pod-template-hash>` (one per pod template, the newest
//! being the "new" one), rolls from old to new (RollingUpdate within maxSurge and
//! maxUnavailable, or Recreate), scales proportionally on `kubectl scale`, stops when
//! paused, prunes old empty ReplicaSets beyond `revisionHistoryLimit`, keeps the
//! `deployment.kubernetes.io/revision` annotations that `kubectl rollout history/undo` read,
//! and writes the status `kubectl rollout status` waits on.
//!
//! The steps are pure functions over [`Rs`], a ReplicaSet's counts: [`plan`] (what to
//! create, scale and delete now, following Kubernetes' `rolloutRolling`, `rolloutRecreate`
//! and `scale`) and [`status`]. Like the ReplicaSet controller, a Deployment is not planned
//! again before the ReplicaSet store shows its last writes.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::future::Future;
use std::sync::Arc;

use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentCondition, DeploymentStatus, ReplicaSet, ReplicaSetSpec,
};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::controller::Action;
use kube::runtime::reflector::Store;
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client, ResourceExt};
use serde_json::{json, Value};

use crate::replicaset::{
    adopt_patch, claim, controller_of, controller_ref, owners_of, release_patch, rv, Claim,
    Expectations, Expected, STALE_RETRY,
};
use crate::runner::{self, Ready, Reconciler};
use crate::{Error, Metrics};

/// The revision of a ReplicaSet and of its Deployment.
pub const REVISION: &str = "deployment.kubernetes.io/revision";
/// The Deployment's replicas when a ReplicaSet was last scaled.
pub const DESIRED_REPLICAS: &str = "deployment.kubernetes.io/desired-replicas";
/// The Deployment's replicas plus maxSurge when a ReplicaSet was last scaled.
pub const MAX_REPLICAS: &str = "deployment.kubernetes.io/max-replicas";
/// The label that tells the pods of one template from another's.
pub const HASH_LABEL: &str = "pod-template-hash";

/// Deployment annotations not copied to its ReplicaSets.
const NOT_COPIED: &[&str] = &[
    "kubectl.kubernetes.io/last-applied-configuration",
    REVISION,
    "deployment.kubernetes.io/revision-history",
    DESIRED_REPLICAS,
    MAX_REPLICAS,
    "deprecated.deployment.rollback.to",
];

// ---------------------------------------------------------------------------------------
// pod-template-hash

/// Kubernetes' `rand.SafeEncodeString`: each character mapped into an alphabet without
/// vowels (so no words) and without characters easily confused.
pub fn safe_encode(s: &str) -> String {
    const ALPHANUMS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    s.chars()
        .map(|c| ALPHANUMS[c as usize % ALPHANUMS.len()] as char)
        .collect()
}

/// FNV-1a, 32 bits (Go's `hash/fnv.New32a`).
pub fn fnv32a(data: &[u8]) -> u32 {
    data.iter().fold(0x811c_9dc5u32, |h, b| {
        (h ^ u32::from(*b)).wrapping_mul(0x0100_0193)
    })
}

/// JSON with object keys sorted at every level, so that equal values hash equally.
fn canonical(v: &Value, out: &mut String) {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                let _ = write!(out, "{}:", Value::String(k.clone()));
                canonical(&m[k], out);
            }
            out.push('}');
        }
        Value::Array(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical(x, out);
            }
            out.push(']');
        }
        other => {
            let _ = write!(out, "{other}");
        }
    }
}

/// The pod-template-hash of a template: Kubernetes' `ComputeHash` (FNV-32a of the
/// template, then of the collision count as 8 little-endian bytes, rendered in decimal
/// through [`safe_encode`]). Kubernetes hashes Go's debug printing of the template, which
/// has no equivalent here; this hashes its canonical JSON, so the names look like
/// Kubernetes' (`web-7c5ddbdf54`) without being the same ones.
pub fn pod_template_hash(template: &PodTemplateSpec, collision_count: Option<i32>) -> String {
    let mut text = String::new();
    canonical(&runner::to_value(template), &mut text);
    let mut bytes = text.into_bytes();
    if let Some(c) = collision_count {
        let mut b = [0u8; 8];
        b[..4].copy_from_slice(&(c as u32).to_le_bytes());
        bytes.extend_from_slice(&b);
    }
    safe_encode(&fnv32a(&bytes).to_string())
}

/// A template as JSON without its pod-template-hash label (Kubernetes' `EqualIgnoreHash`).
fn template_key(t: Option<&PodTemplateSpec>) -> Value {
    let mut v = t.map(runner::to_value).unwrap_or(Value::Null);
    if let Some(labels) = v
        .get_mut("metadata")
        .and_then(|m| m.get_mut("labels"))
        .and_then(Value::as_object_mut)
    {
        labels.remove(HASH_LABEL);
        if labels.is_empty() {
            if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
                m.remove("labels");
            }
        }
    }
    v
}

// ---------------------------------------------------------------------------------------
// Planning

/// A resolved update strategy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// Kill all old pods before creating new ones.
    Recreate,
    /// Replace pods gradually within these bounds (absolute numbers).
    Rolling {
        /// Pods allowed above the desired count.
        max_surge: i32,
        /// Pods allowed to be unavailable.
        max_unavailable: i32,
    },
}

/// Kubernetes' `GetScaledValueFromIntOrPercent`.
fn scaled(v: Option<&IntOrString>, total: i32, round_up: bool) -> i32 {
    match v {
        None => 0,
        Some(IntOrString::Int(i)) => *i,
        Some(IntOrString::String(s)) => {
            let Some(pct) = s.strip_suffix('%').and_then(|p| p.parse::<f64>().ok()) else {
                return s.parse().unwrap_or(0);
            };
            let x = pct * f64::from(total) / 100.0;
            (if round_up { x.ceil() } else { x.floor() }) as i32
        }
    }
}

/// Kubernetes' `ResolveFenceposts`: surge rounds up, unavailable down; both 0 → 1
/// unavailable.
pub fn fenceposts(
    surge: Option<&IntOrString>,
    unavailable: Option<&IntOrString>,
    replicas: i32,
) -> (i32, i32) {
    let surge = scaled(surge, replicas, true);
    let unavailable = scaled(unavailable, replicas, false);
    if surge == 0 && unavailable == 0 {
        (0, 1)
    } else {
        (surge, unavailable)
    }
}

/// What the plan needs of a Deployment.
#[derive(Debug, Clone, PartialEq)]
pub struct Params {
    /// spec.replicas.
    pub replicas: i32,
    /// spec.strategy, resolved.
    pub strategy: Strategy,
    /// spec.paused.
    pub paused: bool,
    /// spec.revisionHistoryLimit.
    pub history_limit: i32,
    /// status.replicas (the fallback size of a ReplicaSet without max-replicas).
    pub status_replicas: i32,
}

impl Params {
    /// The parameters of a Deployment.
    pub fn of(d: &Deployment) -> Params {
        let spec = d.spec.as_ref();
        let replicas = spec.and_then(|s| s.replicas).unwrap_or(1);
        let strategy = spec.and_then(|s| s.strategy.as_ref());
        let strategy = if strategy.and_then(|s| s.type_.as_deref()) == Some("Recreate") {
            Strategy::Recreate
        } else {
            let ru = strategy.and_then(|s| s.rolling_update.as_ref());
            let pct = IntOrString::String("25%".into());
            let (max_surge, max_unavailable) = fenceposts(
                Some(ru.and_then(|r| r.max_surge.as_ref()).unwrap_or(&pct)),
                Some(ru.and_then(|r| r.max_unavailable.as_ref()).unwrap_or(&pct)),
                replicas,
            );
            Strategy::Rolling {
                max_surge,
                max_unavailable,
            }
        };
        Params {
            replicas,
            strategy,
            paused: spec.and_then(|s| s.paused).unwrap_or(false),
            history_limit: spec.and_then(|s| s.revision_history_limit).unwrap_or(10),
            status_replicas: d.status.as_ref().and_then(|s| s.replicas).unwrap_or(0),
        }
    }

    /// Kubernetes' `MaxSurge`.
    pub fn max_surge(&self) -> i32 {
        match self.strategy {
            Strategy::Rolling { max_surge, .. } => max_surge,
            Strategy::Recreate => 0,
        }
    }

    /// Kubernetes' `MaxUnavailable`.
    pub fn max_unavailable(&self) -> i32 {
        match self.strategy {
            Strategy::Rolling {
                max_unavailable, ..
            } if self.replicas > 0 => max_unavailable.min(self.replicas),
            _ => 0,
        }
    }
}

/// The counts of one ReplicaSet that planning needs.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Rs {
    /// Its name.
    pub name: String,
    /// When it was made.
    pub created: Option<Timestamp>,
    /// Its revision annotation.
    pub revision: i64,
    /// spec.replicas.
    pub replicas: i32,
    /// status.replicas.
    pub status_replicas: i32,
    /// status.readyReplicas.
    pub ready: i32,
    /// status.availableReplicas.
    pub available: i32,
    /// Its desired-replicas annotation.
    pub desired_annotation: Option<i32>,
    /// Its max-replicas annotation.
    pub max_annotation: Option<i32>,
}

impl Rs {
    /// The counts of a ReplicaSet.
    pub fn of(rs: &ReplicaSet) -> Rs {
        let ann = |k: &str| rs.annotations().get(k).and_then(|v| v.parse().ok());
        let status = rs.status.as_ref();
        Rs {
            name: rs.name_any(),
            created: rs.metadata.creation_timestamp.as_ref().map(|t| t.0),
            revision: ann(REVISION).unwrap_or(0),
            replicas: rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1),
            status_replicas: status.map_or(0, |s| s.replicas),
            ready: status.and_then(|s| s.ready_replicas).unwrap_or(0),
            available: status.and_then(|s| s.available_replicas).unwrap_or(0),
            desired_annotation: ann(DESIRED_REPLICAS).map(|v: i64| v as i32),
            max_annotation: ann(MAX_REPLICAS).map(|v: i64| v as i32),
        }
    }
}

/// Older first (creation time, then revision, then name).
fn older_first(a: &Rs, b: &Rs) -> Ordering {
    a.created
        .cmp(&b.created)
        .then(a.revision.cmp(&b.revision))
        .then_with(|| a.name.cmp(&b.name))
}

/// What to do now for one Deployment.
#[derive(Debug, Default, PartialEq)]
pub struct Step {
    /// Create the new ReplicaSet with this many replicas.
    pub create: Option<i32>,
    /// ReplicaSets to give these replicas (and the Deployment's replica annotations).
    pub scale: Vec<(String, i32)>,
    /// Old ReplicaSets to delete (revision history).
    pub delete: Vec<String>,
}

impl Step {
    fn scale(&mut self, name: &str, replicas: i32) {
        self.scale.retain(|(n, _)| n != name);
        self.scale.push((name.to_string(), replicas));
    }
}

/// Whether a ReplicaSet's replica annotations are not those of the Deployment now.
fn annotations_stale(p: &Params, rs: &Rs) -> bool {
    rs.desired_annotation != Some(p.replicas)
        || rs.max_annotation != Some(p.replicas + p.max_surge())
}

/// Kubernetes' `isScalingEvent`: an active ReplicaSet was sized for other replicas.
fn is_scaling_event(p: &Params, new: Option<&Rs>, olds: &[Rs]) -> bool {
    new.into_iter()
        .chain(olds)
        .filter(|rs| rs.replicas > 0)
        .any(|rs| rs.desired_annotation.is_some_and(|d| d != p.replicas))
}

/// Kubernetes' `NewRSNewReplicas`: how many replicas the new ReplicaSet may have now.
fn new_rs_replicas(p: &Params, new_replicas: i32, all_replicas: i32) -> i32 {
    match p.strategy {
        Strategy::Recreate => p.replicas,
        Strategy::Rolling { max_surge, .. } => {
            let max_total = p.replicas + max_surge;
            if all_replicas >= max_total {
                return new_replicas;
            }
            let up = (max_total - all_replicas).min(p.replicas - new_replicas);
            new_replicas + up.max(0)
        }
    }
}

/// Kubernetes' `scale`: sizes the active ReplicaSets for a changed `spec.replicas`
/// (proportionally during a rolling update). Every active ReplicaSet is listed, so that its
/// replica annotations follow.
fn scale(p: &Params, new: Option<&Rs>, olds: &[Rs]) -> Vec<(String, i32)> {
    let all: Vec<&Rs> = new.into_iter().chain(olds).collect();
    let active: Vec<&Rs> = all.iter().copied().filter(|rs| rs.replicas > 0).collect();
    let single = match active.len() {
        0 => new.or_else(|| olds.iter().max_by(|a, b| older_first(a, b))),
        1 => Some(active[0]),
        _ => None,
    };
    if let Some(rs) = single {
        return if rs.replicas != p.replicas || annotations_stale(p, rs) {
            vec![(rs.name.clone(), p.replicas)]
        } else {
            Vec::new()
        };
    }
    if let Some(n) = new {
        let saturated = n.replicas == p.replicas
            && n.desired_annotation == Some(p.replicas)
            && n.available >= p.replicas;
        if saturated {
            return olds
                .iter()
                .filter(|rs| rs.replicas > 0)
                .map(|rs| (rs.name.clone(), 0))
                .collect();
        }
    }
    if !matches!(p.strategy, Strategy::Rolling { .. }) {
        return Vec::new();
    }
    let allowed = p.replicas + p.max_surge();
    let current: i32 = all.iter().map(|rs| rs.replicas).sum();
    let to_add = allowed - current;
    let mut sorted = active;
    // Larger first; among equals newer first when adding, older first when removing.
    sorted.sort_by(|a, b| {
        b.replicas.cmp(&a.replicas).then_with(|| {
            if to_add > 0 {
                older_first(b, a)
            } else {
                older_first(a, b)
            }
        })
    });
    let mut sizes: Vec<(String, i32)> = sorted
        .iter()
        .map(|rs| (rs.name.clone(), rs.replicas))
        .collect();
    if to_add != 0 {
        let mut added = 0;
        for (i, rs) in sorted.iter().enumerate() {
            let prop = proportion(p, rs, to_add, added);
            sizes[i].1 += prop;
            added += prop;
        }
        let leftover = to_add - added;
        sizes[0].1 = (sizes[0].1 + leftover).max(0);
    }
    sizes
}

/// Kubernetes' `getProportion`.
fn proportion(p: &Params, rs: &Rs, to_add: i32, added: i32) -> i32 {
    if rs.replicas == 0 || to_add == 0 || to_add == added {
        return 0;
    }
    let fraction = if p.replicas == 0 {
        -rs.replicas
    } else {
        let d_replicas = p.replicas + p.max_surge();
        let annotated = rs.max_annotation.unwrap_or(p.status_replicas);
        if annotated == 0 {
            0
        } else {
            (f64::from(rs.replicas * d_replicas) / f64::from(annotated)).round() as i32
                - rs.replicas
        }
    };
    let allowed = to_add - added;
    if to_add > 0 {
        fraction.min(allowed)
    } else {
        fraction.max(allowed)
    }
}

/// Kubernetes' `reconcileOldReplicaSets` (with `cleanupUnhealthyReplicas` and
/// `scaleDownOldReplicaSetsForRollingUpdate`): old ReplicaSets scaled down within
/// maxUnavailable, unhealthy pods first. `olds` is updated.
fn scale_down_olds(p: &Params, new: &Rs, olds: &mut [Rs]) -> bool {
    let old_count: i32 = olds.iter().map(|rs| rs.replicas).sum();
    if old_count == 0 {
        return false;
    }
    let all_count = old_count + new.replicas;
    let min_available = p.replicas - p.max_unavailable();
    let new_unavailable = new.replicas - new.available;
    let max_scaled_down = all_count - min_available - new_unavailable;
    if max_scaled_down <= 0 {
        return false;
    }
    olds.sort_by(older_first);
    let mut cleaned = 0;
    for rs in olds.iter_mut() {
        if cleaned >= max_scaled_down {
            break;
        }
        if rs.replicas == 0 || rs.available >= rs.replicas {
            continue;
        }
        let n = (max_scaled_down - cleaned).min(rs.replicas - rs.available);
        rs.replicas -= n;
        cleaned += n;
    }
    let available: i32 = olds.iter().map(|rs| rs.available).sum::<i32>() + new.available;
    let mut scaled = 0;
    if available > min_available {
        let total = available - min_available;
        for rs in olds.iter_mut() {
            if scaled >= total {
                break;
            }
            if rs.replicas == 0 {
                continue;
            }
            let n = rs.replicas.min(total - scaled);
            rs.replicas -= n;
            scaled += n;
        }
    }
    cleaned + scaled > 0
}

/// Old ReplicaSets beyond the revision history to delete (Kubernetes' `cleanupDeployment`):
/// those without replicas or pods, lowest revision first.
pub fn prune(olds: &[Rs], limit: i32) -> Vec<String> {
    let mut cleanable: Vec<&Rs> = olds
        .iter()
        .filter(|rs| rs.replicas == 0 && rs.status_replicas == 0)
        .collect();
    let excess = cleanable.len() as i64 - i64::from(limit.max(0));
    if excess <= 0 {
        return Vec::new();
    }
    cleanable.sort_by(|a, b| a.revision.cmp(&b.revision).then_with(|| older_first(a, b)));
    cleanable
        .iter()
        .take(excess as usize)
        .map(|rs| rs.name.clone())
        .collect()
}

/// Whether the new ReplicaSet has taken over completely.
fn rolled_out(p: &Params, new: &Rs, olds: &[Rs]) -> bool {
    new.replicas == p.replicas
        && new.available >= p.replicas
        && olds.iter().all(|rs| rs.replicas == 0)
}

/// What to do now: Kubernetes' sync for a paused Deployment or a scaling event, else one
/// step of `rolloutRecreate` or `rolloutRolling`. `new` is the ReplicaSet of the current
/// template, if it exists.
pub fn plan(p: &Params, new: Option<&Rs>, olds: &[Rs]) -> Step {
    let mut step = Step::default();
    if p.paused || is_scaling_event(p, new, olds) {
        step.scale = scale(p, new, olds);
        if p.paused && step.scale.is_empty() {
            step.delete = prune(olds, p.history_limit);
        }
        return step;
    }
    let mut olds = olds.to_vec();
    match p.strategy {
        Strategy::Recreate => {
            let active: Vec<String> = olds
                .iter()
                .filter(|rs| rs.replicas > 0)
                .map(|rs| rs.name.clone())
                .collect();
            if !active.is_empty() {
                step.scale = active.into_iter().map(|n| (n, 0)).collect();
                return step;
            }
            if olds.iter().any(|rs| rs.status_replicas > 0) {
                // Old pods still running: wait for them.
                return step;
            }
            let Some(new) = new else {
                step.create = Some(p.replicas);
                return step;
            };
            if new.replicas != p.replicas || annotations_stale(p, new) {
                step.scale(&new.name, p.replicas);
            } else if rolled_out(p, new, &olds) {
                step.delete = prune(&olds, p.history_limit);
            }
        }
        Strategy::Rolling { .. } => {
            let old_total: i32 = olds.iter().map(|rs| rs.replicas).sum();
            let new = match new {
                Some(n) => {
                    let mut n = n.clone();
                    let want = if n.replicas > p.replicas {
                        p.replicas
                    } else {
                        new_rs_replicas(p, n.replicas, old_total + n.replicas)
                    };
                    if want != n.replicas {
                        step.scale(&n.name, want);
                        return step;
                    }
                    if annotations_stale(p, &n) {
                        step.scale(&n.name, n.replicas);
                    }
                    n.replicas = want;
                    n
                }
                None => {
                    let want = new_rs_replicas(p, 0, old_total);
                    step.create = Some(want);
                    Rs {
                        replicas: want,
                        ..Default::default()
                    }
                }
            };
            let before = olds.clone();
            if scale_down_olds(p, &new, &mut olds) {
                for rs in &olds {
                    let was = before
                        .iter()
                        .find(|b| b.name == rs.name)
                        .map(|b| b.replicas);
                    if was != Some(rs.replicas) {
                        step.scale(&rs.name, rs.replicas);
                    }
                }
                return step;
            }
            if step.create.is_none() && step.scale.is_empty() && rolled_out(p, &new, &olds) {
                step.delete = prune(&olds, p.history_limit);
            }
        }
    }
    step
}

// ---------------------------------------------------------------------------------------
// Status

/// Why the Deployment's Progressing condition changes this time, besides counts.
#[derive(Debug, Clone, PartialEq)]
pub enum Progress {
    /// The new ReplicaSet was created now.
    Created(String),
    /// The new ReplicaSet was found and its revision brought up to date.
    Found(String),
}

fn condition(
    type_: &str,
    status: &str,
    reason: &str,
    message: String,
    now: Timestamp,
) -> DeploymentCondition {
    DeploymentCondition {
        type_: type_.into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(message),
        last_update_time: Some(Time(now)),
        last_transition_time: Some(Time(now)),
    }
}

/// Kubernetes' `SetDeploymentCondition`: nothing changes if status and reason are the same;
/// the transition time is kept if the status is.
fn set_condition(conds: &mut Vec<DeploymentCondition>, mut c: DeploymentCondition) {
    if let Some(cur) = conds.iter().find(|x| x.type_ == c.type_) {
        if cur.status == c.status && cur.reason == c.reason {
            return;
        }
        if cur.status == c.status {
            c.last_transition_time = cur.last_transition_time.clone();
        }
    }
    conds.retain(|x| x.type_ != c.type_);
    conds.push(c);
}

/// The Deployment's status after this sync: counts from its ReplicaSets (`all`, with the
/// replicas just given; `new` among them by name), Available and Progressing conditions.
pub fn status(
    d: &Deployment,
    p: &Params,
    new: Option<&str>,
    all: &[Rs],
    progress: Option<Progress>,
    now: Timestamp,
) -> DeploymentStatus {
    let old = d.status.clone().unwrap_or_default();
    let spec_total: i32 = all.iter().map(|rs| rs.replicas).sum();
    let available: i32 = all.iter().map(|rs| rs.available).sum();
    let new_rs = new.and_then(|n| all.iter().find(|rs| rs.name == n));
    let mut s = DeploymentStatus {
        observed_generation: d.metadata.generation,
        replicas: Some(all.iter().map(|rs| rs.status_replicas).sum()),
        updated_replicas: Some(new_rs.map_or(0, |rs| rs.status_replicas)),
        ready_replicas: Some(all.iter().map(|rs| rs.ready).sum()),
        available_replicas: Some(available),
        unavailable_replicas: Some((spec_total - available).max(0)),
        collision_count: old.collision_count,
        conditions: old.conditions.clone(),
        terminating_replicas: None,
    };
    let mut conds = s.conditions.take().unwrap_or_default();
    if available >= p.replicas - p.max_unavailable() {
        set_condition(
            &mut conds,
            condition(
                "Available",
                "True",
                "MinimumReplicasAvailable",
                "Deployment has minimum availability.".into(),
                now,
            ),
        );
    } else {
        set_condition(
            &mut conds,
            condition(
                "Available",
                "False",
                "MinimumReplicasUnavailable",
                "Deployment does not have minimum availability.".into(),
                now,
            ),
        );
    }
    let cur = conds.iter().find(|c| c.type_ == "Progressing").cloned();
    let cur_reason = cur.as_ref().and_then(|c| c.reason.as_deref());
    if p.paused {
        if cur_reason != Some("DeploymentPaused") {
            set_condition(
                &mut conds,
                condition(
                    "Progressing",
                    "Unknown",
                    "DeploymentPaused",
                    "Deployment is paused".into(),
                    now,
                ),
            );
        }
    } else {
        if cur_reason == Some("DeploymentPaused") {
            set_condition(
                &mut conds,
                condition(
                    "Progressing",
                    "Unknown",
                    "DeploymentResumed",
                    "Deployment is resumed".into(),
                    now,
                ),
            );
        }
        match progress {
            Some(Progress::Created(n)) => set_condition(
                &mut conds,
                condition(
                    "Progressing",
                    "True",
                    "NewReplicaSetCreated",
                    format!("Created new replica set {n:?}"),
                    now,
                ),
            ),
            Some(Progress::Found(n)) => set_condition(
                &mut conds,
                condition(
                    "Progressing",
                    "True",
                    "FoundNewReplicaSet",
                    format!("Found new replica set {n:?}"),
                    now,
                ),
            ),
            None => {}
        }
        let complete_before = s.replicas == s.updated_replicas
            && conds.iter().any(|c| {
                c.type_ == "Progressing" && c.reason.as_deref() == Some("NewReplicaSetAvailable")
            });
        if let (Some(n), false) = (new_rs, complete_before) {
            let complete = s.updated_replicas == Some(p.replicas)
                && s.replicas == Some(p.replicas)
                && available == p.replicas;
            let z = |v: Option<i32>| v.unwrap_or(0);
            let progressed = z(s.updated_replicas) > z(old.updated_replicas)
                || z(s.replicas) < z(old.replicas)
                || z(s.ready_replicas) > z(old.ready_replicas)
                || z(s.available_replicas) > z(old.available_replicas);
            if complete {
                set_condition(
                    &mut conds,
                    condition(
                        "Progressing",
                        "True",
                        "NewReplicaSetAvailable",
                        format!("ReplicaSet {:?} has successfully progressed.", n.name),
                        now,
                    ),
                );
            } else if progressed {
                let mut c = condition(
                    "Progressing",
                    "True",
                    "ReplicaSetUpdated",
                    format!("ReplicaSet {:?} is progressing.", n.name),
                    now,
                );
                if let Some(cur) = conds
                    .iter()
                    .find(|c| c.type_ == "Progressing" && c.status == "True")
                {
                    c.last_transition_time = cur.last_transition_time.clone();
                }
                // Replaced outright, so that the update time moves (Kubernetes does too).
                conds.retain(|x| x.type_ != "Progressing");
                conds.push(c);
            }
        }
    }
    // Available first, then Progressing, like Kubernetes lists them.
    conds.sort_by_key(|c| c.type_ != "Available");
    s.conditions = Some(conds);
    s
}

/// A stored status compared with a computed one (missing counts are 0).
fn same_status(have: Option<&DeploymentStatus>, want: &DeploymentStatus) -> bool {
    let Some(h) = have else {
        return false;
    };
    let n = |v: Option<i32>| v.unwrap_or(0);
    h.observed_generation == want.observed_generation
        && n(h.replicas) == n(want.replicas)
        && n(h.updated_replicas) == n(want.updated_replicas)
        && n(h.ready_replicas) == n(want.ready_replicas)
        && n(h.available_replicas) == n(want.available_replicas)
        && n(h.unavailable_replicas) == n(want.unavailable_replicas)
        && h.collision_count == want.collision_count
        && h.conditions.clone().unwrap_or_default() == want.conditions.clone().unwrap_or_default()
}

/// The new ReplicaSet of a Deployment for a template hash and revision.
pub fn new_replica_set(
    d: &Deployment,
    p: &Params,
    hash: &str,
    revision: i64,
    replicas: i32,
) -> ReplicaSet {
    let spec = d.spec.clone().unwrap_or_default();
    let mut template = spec.template;
    let tm = template.metadata.get_or_insert_with(Default::default);
    tm.labels
        .get_or_insert_with(Default::default)
        .insert(HASH_LABEL.into(), hash.into());
    let labels = tm.labels.clone();
    let mut selector: LabelSelector = spec.selector;
    selector
        .match_labels
        .get_or_insert_with(Default::default)
        .insert(HASH_LABEL.into(), hash.into());
    let mut annotations: BTreeMap<String, String> = d
        .annotations()
        .iter()
        .filter(|(k, _)| !NOT_COPIED.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    annotations.insert(REVISION.into(), revision.to_string());
    annotations.insert(DESIRED_REPLICAS.into(), p.replicas.to_string());
    annotations.insert(
        MAX_REPLICAS.into(),
        (p.replicas + p.max_surge()).to_string(),
    );
    ReplicaSet {
        metadata: ObjectMeta {
            name: Some(format!("{}-{hash}", d.name_any())),
            namespace: d.metadata.namespace.clone(),
            labels,
            annotations: Some(annotations),
            owner_references: Some(vec![controller_ref("apps/v1", "Deployment", &d.metadata)]),
            ..Default::default()
        },
        spec: Some(ReplicaSetSpec {
            replicas: Some(replicas),
            min_ready_seconds: spec.min_ready_seconds,
            selector,
            template: Some(template),
        }),
        status: None,
    }
}

// ---------------------------------------------------------------------------------------
// The controller

/// The Deployment controller.
pub struct Deployments {
    client: Client,
    rss: Store<ReplicaSet>,
    rss_ready: Ready,
    expectations: Expectations,
    metrics: Arc<Metrics>,
}

/// What a sync ends with.
enum Outcome {
    Done,
    Retry,
}

impl Deployments {
    async fn sync(
        &self,
        d: &Deployment,
        ns: &str,
        rss: Vec<Arc<ReplicaSet>>,
        exp: &mut Expected,
    ) -> Result<Outcome, Error> {
        let name = d.name_any();
        let key = format!("{ns}/{name}");
        let rs_api: Api<ReplicaSet> = Api::namespaced(self.client.clone(), ns);
        let d_api: Api<Deployment> = Api::namespaced(self.client.clone(), ns);
        let pp = PatchParams::default();
        let obj = |n: &str| format!("{ns}/{n}");
        let uid = d.metadata.uid.clone().unwrap_or_default();
        let deleting = d.metadata.deletion_timestamp.is_some();
        let default_sel = LabelSelector::default();
        let sel = d.spec.as_ref().map_or(&default_sel, |s| &s.selector);
        let owner = controller_ref("apps/v1", "Deployment", &d.metadata);

        // Claim the ReplicaSets.
        let mut owned: Vec<ReplicaSet> = Vec::new();
        for rs in &rss {
            let rs_name = rs.name_any();
            match claim(&uid, deleting, sel, &rs.metadata) {
                Claim::Owned => owned.push(rs.as_ref().clone()),
                Claim::Adopt => {
                    let made = rs_api
                        .patch(
                            &rs_name,
                            &pp,
                            &Patch::Merge(adopt_patch(&rs.metadata, &owner)),
                        )
                        .await
                        .map_err(|e| Error::api("adopting replicaset", obj(&rs_name), e))?;
                    exp.wrote(rs_name, &made.metadata);
                    owned.push(made);
                }
                Claim::Release => {
                    match rs_api
                        .patch(
                            &rs_name,
                            &pp,
                            &Patch::Merge(release_patch(&rs.metadata, &uid)),
                        )
                        .await
                    {
                        Ok(made) => exp.wrote(rs_name, &made.metadata),
                        Err(kube::Error::Api(s)) if s.is_not_found() => {}
                        Err(e) => return Err(Error::api("releasing replicaset", obj(&rs_name), e)),
                    }
                }
                Claim::Ignore => {}
            }
        }
        owned.sort_by(|a, b| older_first(&Rs::of(a), &Rs::of(b)));

        let p = Params::of(d);
        let template = d.spec.as_ref().map(|s| &s.template);
        let want_key = template_key(template);
        let new_rs = owned
            .iter()
            .find(|rs| template_key(rs.spec.as_ref().and_then(|s| s.template.as_ref())) == want_key)
            .cloned();
        let new_name = new_rs.as_ref().map(|rs| rs.name_any());
        let mut olds: Vec<Rs> = owned
            .iter()
            .filter(|rs| Some(rs.name_any()) != new_name)
            .map(Rs::of)
            .collect();
        let mut new = new_rs.as_ref().map(Rs::of);
        let max_old_revision = olds.iter().map(|rs| rs.revision).max().unwrap_or(0);
        let mut progress = None;

        if deleting {
            let mut all = olds.clone();
            all.extend(new.clone());
            return self
                .write_status(d, &p, new_name.as_deref(), &all, None)
                .await;
        }

        // The new ReplicaSet's revision comes after every old one.
        if let Some(n) = new.as_mut() {
            if n.revision <= max_old_revision {
                n.revision = max_old_revision + 1;
                let patch =
                    json!({"metadata": {"annotations": {REVISION: n.revision.to_string()}}});
                let made = rs_api
                    .patch(&n.name, &pp, &Patch::Merge(&patch))
                    .await
                    .map_err(|e| Error::api("updating replicaset revision", obj(&n.name), e))?;
                exp.wrote(n.name.clone(), &made.metadata);
                let has_progressing = d
                    .status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|c| c.iter().any(|c| c.type_ == "Progressing"));
                if !has_progressing {
                    progress = Some(Progress::Found(n.name.clone()));
                }
            }
        }

        let step = plan(&p, new.as_ref(), &olds);
        let mut new_name = new_name;
        if let Some(replicas) = step.create {
            let collision = d.status.as_ref().and_then(|s| s.collision_count);
            let hash =
                pod_template_hash(template.unwrap_or(&PodTemplateSpec::default()), collision);
            let rs = new_replica_set(d, &p, &hash, max_old_revision + 1, replicas);
            let rs_name = rs.name_any();
            match rs_api.create(&PostParams::default(), &rs).await {
                Ok(made) => {
                    tracing::info!(deployment = %key, replicaset = %rs_name, replicas, "created new replicaset");
                    self.metrics.inc(
                        "kins_deployment_replicaset_writes_total",
                        &[("verb", "create")],
                    );
                    exp.wrote(rs_name.clone(), &made.metadata);
                    new = Some(Rs::of(&made));
                    new_name = Some(rs_name.clone());
                    progress = Some(Progress::Created(rs_name));
                }
                Err(kube::Error::Api(s)) if s.code == 409 => {
                    // A ReplicaSet of that name exists but is not this template's (or is
                    // not ours): a hash collision. Count it, and the next name differs.
                    let ours = rs_api
                        .get_opt(&rs_name)
                        .await
                        .map_err(|e| Error::api("getting replicaset", obj(&rs_name), e))?
                        .is_some_and(|existing| {
                            controller_of(&existing.metadata).is_some_and(|r| r.uid == uid)
                                && template_key(
                                    existing.spec.as_ref().and_then(|s| s.template.as_ref()),
                                ) == want_key
                        });
                    if !ours {
                        let count = collision.unwrap_or(0).saturating_add(1);
                        tracing::info!(deployment = %key, replicaset = %rs_name, collision_count = count, "pod-template-hash collision");
                        let patch = json!({"status": {"collisionCount": count}});
                        d_api
                            .patch_status(&name, &pp, &Patch::Merge(&patch))
                            .await
                            .map_err(|e| {
                                Error::api("updating deployment status", key.clone(), e)
                            })?;
                    }
                    return Ok(Outcome::Retry);
                }
                Err(e) => return Err(Error::api("creating replicaset", key.clone(), e)),
            }
        }
        for (rs_name, replicas) in &step.scale {
            let patch = json!({
                "metadata": {"annotations": {
                    DESIRED_REPLICAS: p.replicas.to_string(),
                    MAX_REPLICAS: (p.replicas + p.max_surge()).to_string(),
                }},
                "spec": {"replicas": replicas},
            });
            let made = rs_api
                .patch(rs_name, &pp, &Patch::Merge(&patch))
                .await
                .map_err(|e| Error::api("scaling replicaset", obj(rs_name), e))?;
            self.metrics.inc(
                "kins_deployment_replicaset_writes_total",
                &[("verb", "scale")],
            );
            tracing::debug!(deployment = %key, replicaset = %rs_name, replicas, "scaled replicaset");
            exp.wrote(rs_name.clone(), &made.metadata);
            for rs in olds.iter_mut().chain(new.iter_mut()) {
                if &rs.name == rs_name {
                    rs.replicas = *replicas;
                }
            }
        }
        for rs_name in &step.delete {
            let rs_uid = owned
                .iter()
                .find(|rs| &rs.name_any() == rs_name)
                .and_then(|rs| rs.metadata.uid.clone());
            let dp = DeleteParams {
                preconditions: Some(Preconditions {
                    uid: rs_uid,
                    resource_version: None,
                }),
                ..Default::default()
            };
            match rs_api.delete(rs_name, &dp).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.is_not_found() || s.code == 409 => {}
                Err(e) => return Err(Error::api("deleting old replicaset", obj(rs_name), e)),
            }
            tracing::debug!(deployment = %key, replicaset = %rs_name, "deleted old replicaset");
            exp.deleted(rs_name.clone());
            olds.retain(|rs| &rs.name != rs_name);
        }

        // The Deployment's revision is its new ReplicaSet's.
        if let Some(n) = &new {
            let revision = n.revision.to_string();
            if d.annotations().get(REVISION) != Some(&revision) {
                let patch = json!({"metadata": {"annotations": {REVISION: revision}}});
                d_api
                    .patch(&name, &pp, &Patch::Merge(&patch))
                    .await
                    .map_err(|e| Error::api("updating deployment revision", key.clone(), e))?;
            }
        }
        let mut all = olds;
        all.extend(new);
        self.write_status(d, &p, new_name.as_deref(), &all, progress)
            .await
    }

    async fn write_status(
        &self,
        d: &Deployment,
        p: &Params,
        new: Option<&str>,
        all: &[Rs],
        progress: Option<Progress>,
    ) -> Result<Outcome, Error> {
        let s = status(d, p, new, all, progress, Timestamp::now());
        if same_status(d.status.as_ref(), &s) {
            return Ok(Outcome::Done);
        }
        let ns = d.namespace().unwrap_or_default();
        let name = d.name_any();
        let api: Api<Deployment> = Api::namespaced(self.client.clone(), &ns);
        let patch = json!({"status": runner::to_value(&s)});
        match api
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => Ok(Outcome::Done),
            Err(kube::Error::Api(e)) if e.is_not_found() => Ok(Outcome::Done),
            Err(e) => Err(Error::api(
                "updating deployment status",
                format!("{ns}/{name}"),
                e,
            )),
        }
    }
}

impl Reconciler for Deployments {
    type Object = Deployment;
    const NAME: &'static str = "deployment";

    async fn reconcile(&self, d: Arc<Deployment>) -> Result<Action, Error> {
        self.rss_ready.wait().await;
        let ns = d.namespace().unwrap_or_default();
        let key = format!("{ns}/{}", d.name_any());
        let rss: Vec<Arc<ReplicaSet>> = self
            .rss
            .state()
            .into_iter()
            .filter(|rs| rs.metadata.namespace.as_deref() == Some(ns.as_str()))
            .collect();
        let lookup = |n: &str| {
            rss.iter()
                .find(|rs| rs.metadata.name.as_deref() == Some(n))
                .map(|rs| (rv(&rs.metadata), rs.metadata.deletion_timestamp.is_some()))
        };
        if !self.expectations.caught_up(&key, lookup) {
            return Ok(Action::requeue(STALE_RETRY));
        }
        let mut exp = Expected::default();
        let result = self.sync(&d, &ns, rss, &mut exp).await;
        self.expectations.set(key, exp);
        match result? {
            Outcome::Done => Ok(Action::await_change()),
            Outcome::Retry => Ok(Action::requeue(STALE_RETRY)),
        }
    }
}

/// Runs the Deployment controller until `shutdown`.
pub fn run(
    client: Client,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) -> impl Future<Output = ()> + Send + 'static {
    let (ds, _, d_events) = runner::reflect(
        Api::<Deployment>::all(client.clone()),
        watcher::Config::default(),
    );
    let (rss, rss_ready, rs_events) = runner::reflect(
        Api::<ReplicaSet>::all(client.clone()),
        watcher::Config::default(),
    );
    let d_store = ds.clone();
    let controller = runner::controller(ds, d_events).watches_stream(
        rs_events.touched_objects(),
        move |rs: ReplicaSet| {
            owners_of(&d_store, &rs.metadata, |d: &Deployment| {
                d.spec.as_ref().map(|s| &s.selector)
            })
        },
    );
    let reconciler = Arc::new(Deployments {
        client,
        rss,
        rss_ready,
        expectations: Expectations::default(),
        metrics: metrics.clone(),
    });
    runner::run(controller, reconciler, metrics, shutdown)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deployment(extra: Value) -> Deployment {
        let mut v = json!({
            "metadata": {"name": "web", "namespace": "default", "uid": "d-uid", "generation": 2,
                         "annotations": {"kubernetes.io/change-cause": "v2", REVISION: "1"}},
            "spec": {"replicas": 4, "selector": {"matchLabels": {"app": "web"}},
                     "template": {"metadata": {"labels": {"app": "web"}},
                                  "spec": {"containers": [{"name": "c", "image": "nginx"}]}}},
        });
        merge(&mut v, extra);
        serde_json::from_value(v).expect("valid deployment")
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

    #[test]
    fn hashing() {
        // FNV-1a test vectors, and Kubernetes' alphabet: the decimal digits of a hash map
        // onto "4 5 6 7 8 9 b c d f" (digit d -> alphabet[(48 + d) % 27]).
        assert_eq!(fnv32a(b""), 0x811c_9dc5);
        assert_eq!(fnv32a(b"a"), 0xe40c_292c);
        assert_eq!(fnv32a(b"foobar"), 0xbf9c_f968);
        assert_eq!(safe_encode("3718868910"), "7c5ddbdf54");
        assert_eq!(safe_encode("0123456789"), "456789bcdf");

        let d = deployment(json!({}));
        let t = &d.spec.as_ref().expect("spec").template;
        let h = pod_template_hash(t, None);
        assert!(!h.is_empty() && h.len() <= 10, "{h}");
        assert!(h.chars().all(|c| "456789bcdf".contains(c)), "{h}");
        // Stable, whatever the key order of the JSON it came from.
        let reordered: PodTemplateSpec = serde_json::from_value(json!({
            "spec": {"containers": [{"image": "nginx", "name": "c"}]},
            "metadata": {"labels": {"app": "web"}},
        }))
        .expect("template");
        assert_eq!(pod_template_hash(&reordered, None), h);
        // A different template or a collision count gives another hash.
        let d2 = deployment(
            json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "nginx:2"}]}}}}),
        );
        assert_ne!(
            pod_template_hash(&d2.spec.as_ref().expect("spec").template, None),
            h
        );
        assert_ne!(pod_template_hash(t, Some(1)), h);
        assert_ne!(pod_template_hash(t, Some(1)), pod_template_hash(t, Some(2)));
    }

    #[test]
    fn the_new_replica_set() {
        let d = deployment(json!({"spec": {"minReadySeconds": 5}}));
        let p = Params::of(&d);
        let rs = new_replica_set(&d, &p, "abc", 2, 1);
        assert_eq!(rs.name_any(), "web-abc");
        let spec = rs.spec.as_ref().expect("spec");
        assert_eq!(spec.replicas, Some(1));
        assert_eq!(spec.min_ready_seconds, Some(5));
        let hash =
            |m: Option<&BTreeMap<String, String>>| m.and_then(|l| l.get(HASH_LABEL)).cloned();
        assert_eq!(hash(rs.metadata.labels.as_ref()).as_deref(), Some("abc"));
        assert_eq!(
            hash(spec.selector.match_labels.as_ref()).as_deref(),
            Some("abc")
        );
        let tl = spec
            .template
            .as_ref()
            .and_then(|t| t.metadata.as_ref())
            .and_then(|m| m.labels.as_ref());
        assert_eq!(hash(tl).as_deref(), Some("abc"));
        let a = rs.annotations();
        assert_eq!(a.get(REVISION).map(String::as_str), Some("2"));
        assert_eq!(a.get(DESIRED_REPLICAS).map(String::as_str), Some("4"));
        assert_eq!(a.get(MAX_REPLICAS).map(String::as_str), Some("5"));
        assert_eq!(
            a.get("kubernetes.io/change-cause").map(String::as_str),
            Some("v2")
        );
        let owner = &rs.metadata.owner_references.as_ref().expect("owner")[0];
        assert_eq!(
            (owner.kind.as_str(), owner.controller),
            ("Deployment", Some(true))
        );
        // Its template is the Deployment's, hash aside.
        assert_eq!(
            template_key(spec.template.as_ref()),
            template_key(Some(&d.spec.as_ref().expect("spec").template))
        );
    }

    #[test]
    fn fenceposts_round_like_kubernetes() {
        let pct = |s: &str| IntOrString::String(s.into());
        let cases: &[(IntOrString, IntOrString, i32, (i32, i32))] = &[
            (pct("25%"), pct("25%"), 4, (1, 1)),
            (pct("25%"), pct("25%"), 10, (3, 2)),
            (pct("25%"), pct("25%"), 1, (1, 0)),
            (IntOrString::Int(0), IntOrString::Int(0), 4, (0, 1)),
            (pct("0%"), pct("0%"), 4, (0, 1)),
            (pct("50%"), IntOrString::Int(0), 3, (2, 0)),
            (IntOrString::Int(2), pct("30%"), 3, (2, 0)),
        ];
        for (surge, unavail, replicas, want) in cases {
            assert_eq!(
                fenceposts(Some(surge), Some(unavail), *replicas),
                *want,
                "{surge:?} {unavail:?} {replicas}"
            );
        }
    }

    fn rolling(replicas: i32, max_surge: i32, max_unavailable: i32) -> Params {
        Params {
            replicas,
            strategy: Strategy::Rolling {
                max_surge,
                max_unavailable,
            },
            paused: false,
            history_limit: 10,
            status_replicas: replicas,
        }
    }

    fn rs(name: &str, revision: i64, replicas: i32, p: &Params) -> Rs {
        Rs {
            name: name.into(),
            revision,
            replicas,
            status_replicas: replicas,
            ready: replicas,
            available: replicas,
            desired_annotation: Some(p.replicas),
            max_annotation: Some(p.replicas + p.max_surge()),
            ..Default::default()
        }
    }

    /// Rolls a Deployment of `p` from one old ReplicaSet of `p.replicas` to a new one,
    /// planning step after step; between steps the pods of every ReplicaSet exist and, if
    /// `ready`, are available. Returns (old, new) replicas after each step that changed
    /// something.
    fn roll(p: &Params, ready: bool) -> Vec<(i32, i32)> {
        let mut old = rs("web-old", 1, p.replicas, p);
        let mut new: Option<Rs> = None;
        let mut got = Vec::new();
        for _ in 0..30 {
            let step = plan(p, new.as_ref(), std::slice::from_ref(&old));
            if step == Step::default() {
                return got;
            }
            if let Some(n) = step.create {
                new = Some(Rs {
                    name: "web-new".into(),
                    revision: 2,
                    replicas: n,
                    desired_annotation: Some(p.replicas),
                    max_annotation: Some(p.replicas + p.max_surge()),
                    ..Default::default()
                });
            }
            for (name, n) in &step.scale {
                let target = if *name == old.name {
                    &mut old
                } else {
                    new.as_mut().expect("new exists")
                };
                target.replicas = *n;
                target.desired_annotation = Some(p.replicas);
                target.max_annotation = Some(p.replicas + p.max_surge());
            }
            let n = new.as_mut().map_or(0, |n| n.replicas);
            got.push((old.replicas, n));
            // The ReplicaSet controller catches up.
            old.status_replicas = old.replicas;
            old.available = old.replicas.min(old.available);
            if let Some(n) = new.as_mut() {
                n.status_replicas = n.replicas;
                n.available = if ready { n.replicas } else { 0 };
            }
        }
        panic!("no end to the rollout: {got:?}");
    }

    #[test]
    fn rolling_updates() {
        type Case = (i32, i32, bool, &'static [(i32, i32)]);
        let cases: &[Case] = &[
            // maxSurge 1, maxUnavailable 1 (25% of 4).
            (1, 1, true, &[(3, 1), (3, 2), (1, 2), (1, 4), (0, 4)]),
            // No surge: one down, one up.
            (
                0,
                1,
                true,
                &[
                    (3, 0),
                    (3, 1),
                    (2, 1),
                    (2, 2),
                    (1, 2),
                    (1, 3),
                    (0, 3),
                    (0, 4),
                ],
            ),
            // No unavailability: up two, then down.
            (2, 0, true, &[(4, 2), (2, 2), (2, 4), (0, 4)]),
            // Everything at once.
            (4, 4, true, &[(0, 4)]),
            // New pods never ready: stops with 3 of 4 available.
            (1, 1, false, &[(3, 1), (3, 2)]),
            (2, 0, false, &[(4, 2)]),
        ];
        for (surge, unavail, ready, want) in cases {
            let p = rolling(4, *surge, *unavail);
            assert_eq!(
                roll(&p, *ready),
                *want,
                "surge {surge} unavailable {unavail} ready {ready}"
            );
        }
    }

    #[test]
    fn unhealthy_old_pods_go_first() {
        let p = rolling(4, 1, 1);
        let mut old = rs("web-old", 1, 4, &p);
        old.available = 2;
        let new = Rs {
            name: "web-new".into(),
            revision: 2,
            replicas: 1,
            status_replicas: 1,
            ..rs("x", 2, 1, &p)
        };
        let new = Rs {
            available: 0,
            ..new
        };
        // all 5, min available 3, new unavailable 1: 1 may go, one of the 2 unhealthy.
        let step = plan(&p, Some(&new), &[old]);
        assert_eq!(step.scale, [("web-old".to_string(), 3)]);
    }

    #[test]
    fn recreate() {
        let p = Params {
            strategy: Strategy::Recreate,
            ..rolling(4, 0, 0)
        };
        let mut old = rs("web-old", 1, 4, &p);
        assert_eq!(
            plan(&p, None, std::slice::from_ref(&old)).scale,
            [("web-old".to_string(), 0)]
        );
        old.replicas = 0;
        // Its pods are still there: wait.
        assert_eq!(plan(&p, None, std::slice::from_ref(&old)), Step::default());
        old.status_replicas = 0;
        old.available = 0;
        assert_eq!(plan(&p, None, std::slice::from_ref(&old)).create, Some(4));
        let new = rs("web-new", 2, 4, &p);
        assert_eq!(plan(&p, Some(&new), &[old]), Step::default());
    }

    #[test]
    fn scaling() {
        let p = rolling(4, 1, 1);
        // One ReplicaSet: it takes the new size.
        let mut new = rs("web-new", 2, 2, &rolling(2, 1, 1));
        assert_eq!(
            plan(&p, Some(&new), &[]).scale,
            [("web-new".to_string(), 4)]
        );
        new.replicas = 4;
        new.desired_annotation = Some(4);
        // Size right but annotations stale: they are refreshed.
        assert_eq!(
            plan(&p, Some(&new), &[]).scale,
            [("web-new".to_string(), 4)]
        );

        // In the middle of a rollout from 10 (surge 3) to 15 (surge 4): proportionally.
        let before = rolling(10, 3, 2);
        let p = rolling(15, 4, 3);
        let old = Rs {
            status_replicas: 8,
            available: 8,
            ..rs("web-old", 1, 8, &before)
        };
        let new = Rs {
            status_replicas: 5,
            available: 0,
            ..rs("web-new", 2, 5, &before)
        };
        let mut step = plan(&p, Some(&new), std::slice::from_ref(&old));
        step.scale.sort();
        assert_eq!(
            step.scale,
            [("web-new".to_string(), 7), ("web-old".to_string(), 12)]
        );
        // And down to 5 (surge 2): 7 from 13.
        let p = rolling(5, 2, 1);
        let mut step = plan(&p, Some(&new), &[old]);
        step.scale.sort();
        assert_eq!(
            step.scale,
            [("web-new".to_string(), 3), ("web-old".to_string(), 4)]
        );
    }

    #[test]
    fn paused() {
        let mut p = rolling(4, 1, 1);
        p.paused = true;
        let old = rs("web-old", 1, 4, &p);
        // No new ReplicaSet while paused.
        assert_eq!(plan(&p, None, std::slice::from_ref(&old)), Step::default());
        p.replicas = 2;
        assert_eq!(plan(&p, None, &[old]).scale, [("web-old".to_string(), 2)]);
    }

    #[test]
    fn revision_history() {
        let p = rolling(4, 1, 1);
        let olds: Vec<Rs> = (1..=5)
            .map(|r| Rs {
                status_replicas: 0,
                available: 0,
                ..rs(&format!("web-{r}"), r, 0, &p)
            })
            .chain([rs("web-busy", 0, 1, &p)])
            .collect();
        let cases: &[(i32, &[&str])] = &[
            (10, &[]),
            (5, &[]),
            (2, &["web-1", "web-2", "web-3"]),
            (0, &["web-1", "web-2", "web-3", "web-4", "web-5"]),
        ];
        for (limit, want) in cases {
            assert_eq!(prune(&olds, *limit), *want, "limit {limit}");
        }
        // Pruned only once rolled out.
        let p = Params {
            history_limit: 1,
            ..p
        };
        let new = rs("web-6", 6, 4, &p);
        let done: Vec<Rs> = olds[..5].to_vec();
        assert_eq!(
            plan(&p, Some(&new), &done).delete,
            ["web-1", "web-2", "web-3", "web-4"]
        );
    }

    fn conds(s: &DeploymentStatus) -> Vec<(String, String, String)> {
        s.conditions
            .iter()
            .flatten()
            .map(|c| {
                (
                    c.type_.clone(),
                    c.status.clone(),
                    c.reason.clone().unwrap_or_default(),
                )
            })
            .collect()
    }

    #[test]
    fn statuses() {
        let now: Timestamp = "2024-01-01T00:00:00Z".parse().expect("time");
        let d = deployment(json!({}));
        let p = Params::of(&d);
        let c = |t: &str, s: &str, r: &str| (t.to_string(), s.to_string(), r.to_string());

        // Just created: nothing available yet.
        let new = Rs {
            status_replicas: 0,
            ready: 0,
            available: 0,
            ..rs("web-1", 1, 4, &p)
        };
        let s = status(
            &d,
            &p,
            Some("web-1"),
            std::slice::from_ref(&new),
            Some(Progress::Created("web-1".into())),
            now,
        );
        assert_eq!(
            conds(&s),
            [
                c("Available", "False", "MinimumReplicasUnavailable"),
                c("Progressing", "True", "NewReplicaSetCreated")
            ]
        );
        assert_eq!(s.observed_generation, Some(2));
        assert_eq!(s.unavailable_replicas, Some(4));

        // Mid-rollout: 3 old available, 2 new of which 1 available.
        let d = Deployment {
            status: Some(s),
            ..d
        };
        let old = Rs {
            status_replicas: 3,
            ready: 3,
            available: 3,
            ..rs("web-0", 1, 3, &p)
        };
        let new = Rs {
            status_replicas: 2,
            ready: 1,
            available: 1,
            ..rs("web-1", 2, 2, &p)
        };
        let s = status(&d, &p, Some("web-1"), &[old, new], None, now);
        assert_eq!(
            (
                s.replicas,
                s.updated_replicas,
                s.ready_replicas,
                s.available_replicas,
                s.unavailable_replicas
            ),
            (Some(5), Some(2), Some(4), Some(4), Some(1))
        );
        assert_eq!(
            conds(&s),
            [
                c("Available", "True", "MinimumReplicasAvailable"),
                c("Progressing", "True", "ReplicaSetUpdated")
            ]
        );

        // Done.
        let d = Deployment {
            status: Some(s),
            ..d
        };
        let old = Rs {
            status_replicas: 0,
            ready: 0,
            available: 0,
            ..rs("web-0", 1, 0, &p)
        };
        let new = rs("web-1", 2, 4, &p);
        let s = status(
            &d,
            &p,
            Some("web-1"),
            &[old.clone(), new.clone()],
            None,
            now,
        );
        assert_eq!(
            (
                s.replicas,
                s.updated_replicas,
                s.available_replicas,
                s.unavailable_replicas
            ),
            (Some(4), Some(4), Some(4), Some(0))
        );
        assert_eq!(
            conds(&s),
            [
                c("Available", "True", "MinimumReplicasAvailable"),
                c("Progressing", "True", "NewReplicaSetAvailable")
            ]
        );
        // Computing again changes nothing (no status write loop), even later.
        let d = Deployment {
            status: Some(s.clone()),
            ..d
        };
        let later: Timestamp = "2024-01-01T01:00:00Z".parse().expect("time");
        assert!(same_status(
            Some(&s),
            &status(&d, &p, Some("web-1"), &[old, new.clone()], None, later)
        ));

        // Paused.
        let paused = deployment(json!({"spec": {"paused": true}}));
        let paused = Deployment {
            status: Some(s),
            ..paused
        };
        let s = status(
            &paused,
            &Params::of(&paused),
            Some("web-1"),
            &[new],
            None,
            now,
        );
        assert_eq!(
            conds(&s),
            [
                c("Available", "True", "MinimumReplicasAvailable"),
                c("Progressing", "Unknown", "DeploymentPaused")
            ]
        );
    }
}

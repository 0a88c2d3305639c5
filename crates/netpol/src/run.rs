//! The runtime loop: reflector stores of NetworkPolicies, Pods and Namespaces, and on
//! every change (debounced) the diff against what was last applied.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{stream, StreamExt};
use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::runtime::{reflector, watcher, WatchStreamExt};
use kube::Api;
use proxy::Nft;

use crate::model::{desired, Desired};
use crate::script::{diff_script, full_script};
use crate::NetpolError;

/// How long the loop waits after a change for more changes to batch with it.
pub const DEBOUNCE: Duration = Duration::from_millis(2);
/// The wait before retrying after a failed apply.
const RETRY: Duration = Duration::from_secs(1);

/// The table as last applied, and how to apply the next state.
pub struct Enforcer {
    nft: Arc<dyn Nft>,
    applied: Option<Desired>,
    full_next: bool,
}

impl Enforcer {
    /// An enforcer that has applied nothing yet (its first sync writes the whole table).
    pub fn new(nft: Arc<dyn Nft>) -> Self {
        Enforcer {
            nft,
            applied: None,
            full_next: true,
        }
    }

    /// Brings the table to `new`: whole the first time and after a failure, else only
    /// what changed. Returns whether a script was applied.
    pub fn sync(&mut self, new: Desired) -> Result<bool, NetpolError> {
        let (script, full) = match &self.applied {
            Some(old) if !self.full_next => (diff_script(old, &new), false),
            _ => (Some(full_script(&new)), true),
        };
        let Some(script) = script else {
            return Ok(false);
        };
        let started = Instant::now();
        match self.nft.apply(&script) {
            Ok(()) => {
                tracing::debug!(
                    full,
                    elements = new.len(),
                    bytes = script.len(),
                    took_ms = started.elapsed().as_millis() as u64,
                    "policy rules applied"
                );
                self.applied = Some(new);
                self.full_next = false;
                Ok(true)
            }
            Err(e) => {
                self.full_next = true;
                Err(NetpolError::Apply(e))
            }
        }
    }

    /// The state last applied successfully.
    pub fn applied(&self) -> Option<&Desired> {
        self.applied.as_ref()
    }
}

/// Which store a change came from, and whether its initial list is complete.
enum Change {
    Policies(bool),
    Pods(bool),
    Namespaces(bool),
}

fn changes<K>(
    api: Api<K>,
    writer: reflector::store::Writer<K>,
    wrap: fn(bool) -> Change,
    resource: &'static str,
) -> impl futures::Stream<Item = Result<Change, (&'static str, watcher::Error)>>
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    reflector::reflector(
        writer,
        watcher(api, watcher::Config::default()).default_backoff(),
    )
    .map(move |ev| match ev {
        Ok(ev) => Ok(wrap(matches!(ev, watcher::Event::InitDone))),
        Err(e) => Err((resource, e)),
    })
}

/// Keeps the table `inet kins_policy` of the current network namespace in step with the
/// cluster's NetworkPolicies for the pods of `node`, until a watch ends.
pub async fn run(client: kube::Client, node: String, nft: Arc<dyn Nft>) -> Result<(), NetpolError> {
    let (policies, pol_writer) = reflector::store::<NetworkPolicy>();
    let (pods, pod_writer) = reflector::store::<Pod>();
    let (namespaces, ns_writer) = reflector::store::<Namespace>();
    let mut events = stream::select_all([
        changes(
            Api::<NetworkPolicy>::all(client.clone()),
            pol_writer,
            Change::Policies,
            "networkpolicies",
        )
        .boxed(),
        changes(
            Api::<Pod>::all(client.clone()),
            pod_writer,
            Change::Pods,
            "pods",
        )
        .boxed(),
        changes(
            Api::<Namespace>::all(client),
            ns_writer,
            Change::Namespaces,
            "namespaces",
        )
        .boxed(),
    ]);

    let mut enforcer = Enforcer::new(nft);
    let mut ready = [false; 3];
    let mut dirty = false;
    let mut retry_at: Option<tokio::time::Instant> = None;
    loop {
        let next = match retry_at {
            Some(at) => tokio::select! {
                ev = events.next() => Some(ev),
                _ = tokio::time::sleep_until(at) => None,
            },
            None => Some(events.next().await),
        };
        let mut batch = match next {
            Some(Some(ev)) => vec![ev],
            Some(None) => {
                return Err(NetpolError::Watch {
                    resource: "networkpolicies, pods and namespaces",
                    message: "watch ended".into(),
                })
            }
            None => Vec::new(),
        };
        while let Ok(Some(ev)) = tokio::time::timeout(DEBOUNCE, events.next()).await {
            batch.push(ev);
        }
        for ev in batch {
            match ev {
                Ok(Change::Policies(done)) => ready[0] |= done,
                Ok(Change::Pods(done)) => ready[1] |= done,
                Ok(Change::Namespaces(done)) => ready[2] |= done,
                Err((resource, e)) => {
                    tracing::warn!(resource, error = %e, "watch error (retrying)");
                    continue;
                }
            }
            dirty = true;
        }
        if !ready.iter().all(|r| *r) || !(dirty || retry_at.is_some()) {
            continue;
        }
        dirty = false;
        let (pols, all_pods, nss) = (policies.state(), pods.state(), namespaces.state());
        let started = Instant::now();
        let want = desired(
            pols.iter().map(|p| p.as_ref()),
            all_pods.iter().map(|p| p.as_ref()),
            nss.iter().map(|n| n.as_ref()),
            &node,
        );
        let computed_us = started.elapsed().as_micros() as u64;
        let (result, back) = tokio::task::spawn_blocking(move || {
            let r = enforcer.sync(want);
            (r, enforcer)
        })
        .await
        .map_err(|e| NetpolError::Watch {
            resource: "apply task",
            message: e.to_string(),
        })?;
        enforcer = back;
        match result {
            Ok(applied) => {
                retry_at = None;
                if applied {
                    tracing::info!(
                        node = %node,
                        policies = pols.len(),
                        pods = all_pods.len(),
                        computed_us,
                        took_ms = started.elapsed().as_millis() as u64,
                        "network policy rules updated"
                    );
                }
            }
            Err(e) => {
                tracing::warn!(node = %node, error = %e, "applying network policy rules failed; retrying with the whole table");
                retry_at = Some(tokio::time::Instant::now() + RETRY);
            }
        }
    }
}

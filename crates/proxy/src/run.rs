//! The runtime loop: reflector stores of Services and EndpointSlices, and on every change
//! (debounced) the element diff against what was last applied.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{stream, StreamExt};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::{reflector, watcher, WatchStreamExt};
use kube::Api;

use crate::conntrack::{stale_udp, Conntrack};
use crate::model::{desired, Desired, NodeConfig};
use crate::nft::Nft;
use crate::script::{diff_script, full_script};
use crate::ProxyError;

/// How long the loop waits after a change for more changes to batch with it.
pub const DEBOUNCE: Duration = Duration::from_millis(3);
/// The wait before retrying after a failed apply.
const RETRY: Duration = Duration::from_secs(1);

/// The table as last applied, and how to apply the next state.
pub struct Proxy {
    nft: Arc<dyn Nft>,
    conntrack: Arc<dyn Conntrack>,
    /// The state last applied successfully (a failed transaction changes nothing).
    applied: Option<Desired>,
    /// Write the whole table next time (first sync, or after a failure).
    full_next: bool,
}

impl Proxy {
    /// A proxy that has applied nothing yet (its first sync writes the whole table).
    pub fn new(nft: Arc<dyn Nft>, conntrack: Arc<dyn Conntrack>) -> Self {
        Proxy {
            nft,
            conntrack,
            applied: None,
            full_next: true,
        }
    }

    /// Brings the table to `new`: the whole table the first time and after a failure, else
    /// only the changed elements; then deletes the UDP conntrack entries the change left
    /// stale. Returns whether a script was applied.
    pub fn sync(&mut self, new: Desired) -> Result<bool, ProxyError> {
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
                    "applied"
                );
                if let Some(old) = &self.applied {
                    for f in stale_udp(old, &new) {
                        // A failed flush costs a client one stale flow, not the table.
                        if let Err(e) = self.conntrack.flush(&f) {
                            tracing::warn!(error = %e, "deleting stale UDP conntrack entries");
                        }
                    }
                }
                self.applied = Some(new);
                self.full_next = false;
                Ok(true)
            }
            Err(e) => {
                self.full_next = true;
                Err(e)
            }
        }
    }

    /// The state last applied successfully.
    pub fn applied(&self) -> Option<&Desired> {
        self.applied.as_ref()
    }
}

enum Change {
    Services(bool),
    Slices(bool),
}

/// Keeps the table `ip kins_proxy` of the current network namespace in step with the
/// cluster's Services and EndpointSlices until a watch ends.
pub async fn run(
    client: kube::Client,
    node: NodeConfig,
    nft: Arc<dyn Nft>,
    conntrack: Arc<dyn Conntrack>,
) -> Result<(), ProxyError> {
    let (services, svc_writer) = reflector::store::<Service>();
    let (slices, eps_writer) = reflector::store::<EndpointSlice>();
    let svc_events = reflector::reflector(
        svc_writer,
        watcher(
            Api::<Service>::all(client.clone()),
            watcher::Config::default(),
        )
        .default_backoff(),
    )
    .map(|ev| match ev {
        Ok(ev) => Ok(Change::Services(matches!(ev, watcher::Event::InitDone))),
        Err(e) => Err(("services", e)),
    });
    let slice_config = watcher::Config::default().labels("kubernetes.io/service-name");
    let eps_events = reflector::reflector(
        eps_writer,
        watcher(Api::<EndpointSlice>::all(client), slice_config).default_backoff(),
    )
    .map(|ev| match ev {
        Ok(ev) => Ok(Change::Slices(matches!(ev, watcher::Event::InitDone))),
        Err(e) => Err(("endpointslices", e)),
    });
    let mut events = stream::select(svc_events.boxed(), eps_events.boxed());

    let mut proxy = Proxy::new(nft, conntrack);
    let (mut svc_ready, mut eps_ready) = (false, false);
    let mut dirty = false;
    let mut retry_at: Option<tokio::time::Instant> = None;
    loop {
        // Wait for a change, or for the retry of a failed apply.
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
                return Err(ProxyError::Watch {
                    resource: "services and endpointslices",
                    message: "watch ended".into(),
                })
            }
            None => Vec::new(),
        };
        // Debounce: take whatever else arrives shortly after.
        while let Ok(Some(ev)) = tokio::time::timeout(DEBOUNCE, events.next()).await {
            batch.push(ev);
        }
        for ev in batch {
            match ev {
                Ok(Change::Services(done)) => svc_ready |= done,
                Ok(Change::Slices(done)) => eps_ready |= done,
                Err((resource, e)) => {
                    tracing::warn!(resource, error = %e, "watch error (retrying)");
                    continue;
                }
            }
            dirty = true;
        }
        if !(svc_ready && eps_ready) || !(dirty || retry_at.is_some()) {
            continue;
        }
        dirty = false;
        let svcs = services.state();
        let eps = slices.state();
        let want = desired(
            svcs.iter().map(|s| s.as_ref()),
            eps.iter().map(|s| s.as_ref()),
            &node,
        );
        let (result, back) = tokio::task::spawn_blocking(move || {
            let r = proxy.sync(want);
            (r, proxy)
        })
        .await
        .map_err(|e| ProxyError::Watch {
            resource: "apply task",
            message: e.to_string(),
        })?;
        proxy = back;
        match result {
            Ok(applied) => {
                retry_at = None;
                if applied {
                    tracing::info!(
                        node = %node.node_name,
                        services = svcs.len(),
                        slices = eps.len(),
                        "service rules updated"
                    );
                }
            }
            Err(e) => {
                tracing::warn!(node = %node.node_name, error = %e, "applying service rules failed; retrying with the whole table");
                retry_at = Some(tokio::time::Instant::now() + RETRY);
            }
        }
    }
}

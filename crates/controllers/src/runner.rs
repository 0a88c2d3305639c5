//! The one reconcile loop every controller is written as: kube-runtime's `Controller`
//! (watch → reflector store → `reconcile(object) -> Action`, never two reconciles of one
//! key at once) plus what every controller wants the same way: a per-key exponential
//! back-off after errors, logs with the controller and object, and metrics.
//!
//! A controller implements [`Reconciler`], builds its `Controller` from the streams of
//! [`reflect`] (one watch per resource, whose store the reconciler reads), and hands both
//! to [`run`].

use std::collections::HashMap;
use std::fmt::Debug;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use futures::{Stream, StreamExt, TryStreamExt};
use kube::runtime::controller::{Action, Controller, Error as ControllerError};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Resource};
use serde_json::Value;
use tokio::sync::watch;

use crate::{Error, Metrics};

/// The first retry after an error; doubled after each further error of the same key.
pub const BACKOFF_BASE: Duration = Duration::from_millis(250);
/// The longest wait between retries of a failing key.
pub const BACKOFF_MAX: Duration = Duration::from_secs(60);

/// A resource a controller can watch.
pub trait Object:
    Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + Debug + Send + Sync + 'static
{
}
impl<K> Object for K where
    K: Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + Debug
        + Send
        + Sync
        + 'static
{
}

/// One controller's reconcile function. It must be idempotent: it is called again for the
/// same object after every change, after errors and after restarts.
pub trait Reconciler: Send + Sync + 'static {
    /// The watched resource whose objects are reconciled.
    type Object: Object;
    /// Name in logs and metrics.
    const NAME: &'static str;
    /// Brings the world in line with one object; says when to look again.
    fn reconcile(
        &self,
        obj: Arc<Self::Object>,
    ) -> impl Future<Output = Result<Action, Error>> + Send;
}

/// The back-off of a failing watch: kube's default starts at 0.8 s, which costs a
/// controller started with its API server seconds of idling; this one starts at 0.1 s
/// (with jitter, up to 10 s, reset after two quiet minutes).
pub fn watch_backoff() -> impl kube::runtime::utils::Backoff {
    let exp = backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(Duration::from_secs(10))
        .with_factor(2.0)
        .with_jitter()
        .without_max_times();
    kube::runtime::utils::ResetTimerBackoff::new(
        kube::runtime::watcher::ExponentialBackoff::from(exp),
        Duration::from_secs(120),
    )
}

/// The delay before retry `n` (1-based) of a failing key.
pub fn backoff(n: u32) -> Duration {
    let factor = 1u32 << n.saturating_sub(1).min(16);
    (BACKOFF_BASE * factor).min(BACKOFF_MAX)
}

/// Locks a mutex whose data stays usable if a holder panicked (every critical section in
/// this crate leaves its data consistent).
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Becomes true once a watch has listed every object, that is once its store is complete.
/// Any number of tasks may wait on it.
///
/// (kube-runtime's `Store::wait_until_ready` wakes only the last of several tasks waiting
/// at once; reconciles of different objects run in different tasks, so they wait on this.)
#[derive(Debug, Clone)]
pub struct Ready(watch::Receiver<bool>);

impl Ready {
    /// Waits until the store is complete (returns at once if the watch is gone).
    pub async fn wait(&self) {
        let mut rx = self.0.clone();
        let _ = rx.wait_for(|ready| *ready).await;
    }
}

/// A watch of one resource feeding a reflector store: the store to read, when it is
/// complete, and the stream of watch events (after the store has applied them) to drive a
/// `Controller` with. Watch errors are retried with kube-runtime's default back-off.
pub fn reflect<K: Object>(
    api: Api<K>,
    config: watcher::Config,
) -> (
    Store<K>,
    Ready,
    impl Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static,
) {
    let (reader, writer) = reflector::store();
    let (ready_tx, ready_rx) = watch::channel(false);
    let stream = reflector::reflector(writer, watcher(api, config).backoff(watch_backoff()))
        .inspect_ok(move |ev| {
            if matches!(ev, watcher::Event::InitDone) {
                ready_tx.send_replace(true);
            }
        });
    (reader, Ready(ready_rx), stream)
}

/// Builds a `Controller` over a [`reflect`]ed stream (its applied objects).
pub fn controller<K: Object>(
    store: Store<K>,
    events: impl Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static,
) -> Controller<K> {
    Controller::for_stream(events.applied_objects(), store)
}

struct Context<R: Reconciler> {
    reconciler: Arc<R>,
    failures: Mutex<HashMap<ObjectRef<R::Object>, u32>>,
    metrics: Arc<Metrics>,
}

async fn reconcile<R: Reconciler>(
    obj: Arc<R::Object>,
    ctx: Arc<Context<R>>,
) -> Result<Action, Error> {
    let key = ObjectRef::from_obj(obj.as_ref());
    let started = Instant::now();
    let result = ctx.reconciler.reconcile(obj).await;
    ctx.metrics
        .reconciled(R::NAME, started.elapsed(), result.is_ok());
    if result.is_ok() {
        lock(&ctx.failures).remove(&key);
    }
    result
}

fn error_policy<R: Reconciler>(obj: Arc<R::Object>, err: &Error, ctx: Arc<Context<R>>) -> Action {
    let key = ObjectRef::from_obj(obj.as_ref());
    let n = {
        let mut failures = lock(&ctx.failures);
        let n = failures.entry(key.clone()).or_insert(0);
        *n = n.saturating_add(1);
        *n
    };
    let delay = backoff(n);
    if err.code() == Some(409) && n < 5 {
        // Someone wrote the object since our cache saw it: normal, retried at once.
        tracing::debug!(controller = R::NAME, object = %key, error = %err, retry_in = ?delay, "conflict; retrying");
    } else {
        tracing::warn!(controller = R::NAME, object = %key, error = %err, retry_in = ?delay, attempt = n, "reconcile failed");
    }
    Action::requeue(delay)
}

/// Runs a controller until `shutdown` completes (reconciles in flight finish first).
pub async fn run<R: Reconciler>(
    controller: Controller<R::Object>,
    reconciler: Arc<R>,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let ctx = Arc::new(Context {
        reconciler,
        failures: Mutex::new(HashMap::new()),
        metrics,
    });
    tracing::debug!(controller = R::NAME, "controller running");
    controller
        .graceful_shutdown_on(shutdown)
        .run(reconcile::<R>, error_policy::<R>, ctx)
        .for_each(|res| async move {
            match res {
                Ok((obj, _)) => tracing::trace!(controller = R::NAME, object = %obj, "reconciled"),
                // Logged by error_policy.
                Err(ControllerError::ReconcilerFailed(..)) => {}
                Err(ControllerError::ObjectNotFound(obj)) => {
                    tracing::trace!(controller = R::NAME, object = %obj, "gone before its reconcile")
                }
                Err(e) => tracing::warn!(controller = R::NAME, error = %e, "watch failed; retrying"),
            }
        })
        .await;
    tracing::debug!(controller = R::NAME, "controller stopped");
}

/// A JSON value from a typed object, for building patches.
pub fn to_value<T: serde::Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let got: Vec<u64> = (1..=10).map(|n| backoff(n).as_millis() as u64).collect();
        assert_eq!(
            got,
            [250, 500, 1000, 2000, 4000, 8000, 16000, 32000, 60000, 60000]
        );
        assert_eq!(backoff(u32::MAX), BACKOFF_MAX);
    }
}

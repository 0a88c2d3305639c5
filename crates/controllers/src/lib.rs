//! The cluster's controllers. Like Kubernetes' kube-controller-manager and kube-scheduler
//! they talk to the cluster only through the API (with kube-rs), so they can run anywhere a
//! kubeconfig reaches the API server, and be killed and restarted at any moment.
//!
//! - [`ipam`]: assigns every Node a `spec.podCIDR` from the cluster CIDR (the range
//!   allocator of kube-controller-manager).
//! - [`lifecycle`]: turns a Node whose Lease is no longer renewed `Ready=Unknown` and taints
//!   it unreachable; the agent's next heartbeat clears it.
//! - [`podgc`]: deletes the pods of Nodes that no longer exist.
//! - [`scheduler`]: binds pending pods to nodes (filters in [`scheduler::predicates`]).
//! - [`replicaset`] and [`deployment`]: the pods of ReplicaSets, the ReplicaSets and
//!   rollouts of Deployments.
//! - [`endpoints`]: the EndpointSlices and Endpoints of Services (from their pods, or
//!   mirrored from a user's Endpoints).
//! - [`loadbalancer`]: addresses from a pool on the node network for LoadBalancer
//!   Services, and the node that answers for each (MetalLB's layer-2 mode).
//!
//! Every controller is the same loop, [`runner::run`]: watch → reflector store →
//! idempotent `reconcile(object) -> Action`, one reconcile of a key at a time, requeue with
//! back-off on error. [`start`] runs them all; [`Running::shutdown`] stops them.

pub mod cidr;
pub mod deployment;
pub mod endpoints;
pub mod events;
pub mod ipam;
pub mod lifecycle;
pub mod loadbalancer;
pub mod metrics;
pub mod podgc;
pub mod replicaset;
pub mod runner;
pub mod scheduler;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use cidr::{CidrAllocator, CidrError, Ipv4Cidr};
pub use metrics::Metrics;

/// How long [`Running::shutdown`] lets reconciles in flight finish.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// The name events and logs give the scheduler, as in Kubernetes.
pub const SCHEDULER_NAME: &str = "default-scheduler";

/// Everything that can go wrong in the controllers.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A call to the API server failed.
    #[error("{action} {object}: {}", describe(source))]
    Api {
        /// What was being done ("patching node", "binding pod", ...).
        action: &'static str,
        /// Which object, as `name` or `namespace/name`.
        object: String,
        /// The client's error (a Kubernetes Status for API errors).
        #[source]
        source: kube::Error,
    },
    /// The kubeconfig could not be read or used.
    #[error("kubeconfig {path}: {source}")]
    Kubeconfig {
        /// Its path.
        path: PathBuf,
        /// What was wrong.
        #[source]
        source: kube::config::KubeconfigError,
    },
    /// No client could be made from the configuration.
    #[error("creating the API client: {0}")]
    Client(#[source] kube::Error),
    /// A CIDR flag is wrong.
    #[error(transparent)]
    Cidr(#[from] CidrError),
    /// A duration flag is wrong.
    #[error("invalid duration {0:?}: want a number with a unit, like 20s, 500ms, 1m or 1h30m")]
    Duration(String),
    /// The metrics endpoint could not listen.
    #[error("serving metrics on {addr}: {source}")]
    Metrics {
        /// The address asked for.
        addr: SocketAddr,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
}

/// A client error in one line: for API errors the Status's message, reason and code.
fn describe(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => format!("{} ({} {})", s.message, s.code, s.reason),
        other => other.to_string(),
    }
}

impl Error {
    /// Wraps an API error with what was being done to which object.
    pub fn api(action: &'static str, object: impl Into<String>, source: kube::Error) -> Error {
        Error::Api {
            action,
            object: object.into(),
            source,
        }
    }

    /// The HTTP status code of an API error, if this is one.
    pub fn code(&self) -> Option<u16> {
        match self {
            Error::Api {
                source: kube::Error::Api(s),
                ..
            } => Some(s.code),
            _ => None,
        }
    }
}

/// How the controllers are configured (the flags of `kins controller-manager`).
#[derive(Debug, Clone)]
pub struct Config {
    /// The pod network, split into one block per node.
    pub cluster_cidr: Ipv4Cidr,
    /// Prefix length of each node's block.
    pub node_cidr_mask_size: u8,
    /// How long a node may go without renewing its Lease (or posting status) before it is
    /// marked `Ready=Unknown` and tainted unreachable.
    pub node_monitor_grace_period: Duration,
    /// Where to serve Prometheus metrics (port 0: any free port); `None`: not at all.
    pub metrics_bind: Option<SocketAddr>,
    /// How often a node that got no CIDR (cluster CIDR exhausted) is tried again.
    pub cidr_retry: Duration,
    /// How often a pod that could not be scheduled is tried again when nothing changes.
    pub unschedulable_retry: Duration,
    /// This process's name in events (`reportingInstance`).
    pub instance: String,
    /// The addresses (first, last) LoadBalancer Services get theirs from; `None`: no
    /// LoadBalancer controller.
    pub lb_pool: Option<(Ipv4Addr, Ipv4Addr)>,
}

impl Config {
    /// A configuration with Kubernetes' defaults around the given pod network; checks that
    /// the node mask fits the cluster CIDR.
    pub fn new(cluster_cidr: Ipv4Cidr, node_cidr_mask_size: u8) -> Result<Config, Error> {
        CidrAllocator::new(cluster_cidr, node_cidr_mask_size)?;
        Ok(Config {
            cluster_cidr,
            node_cidr_mask_size,
            node_monitor_grace_period: Duration::from_secs(20),
            metrics_bind: None,
            cidr_retry: Duration::from_secs(30),
            unschedulable_retry: Duration::from_secs(30),
            instance: format!("kins-controller-manager-{}", std::process::id()),
            lb_pool: None,
        })
    }
}

/// Parses a Go-style duration: `20s`, `500ms`, `1m30s`, `2h`, `1.5s` (units ns, us, µs,
/// ms, s, m, h).
pub fn parse_duration(s: &str) -> Result<Duration, Error> {
    let bad = || Error::Duration(s.to_string());
    let mut rest = s.trim();
    if rest.is_empty() {
        return Err(bad());
    }
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        if num_end == 0 {
            return Err(bad());
        }
        let n: f64 = rest[..num_end].parse().map_err(|_| bad())?;
        rest = &rest[num_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_end] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(bad()),
        };
        total += n * scale;
        rest = &rest[unit_end..];
    }
    Duration::try_from_secs_f64(total).map_err(|_| bad())
}

/// A kube client from a kubeconfig file (its current context).
pub async fn client_from_kubeconfig(path: &Path) -> Result<kube::Client, Error> {
    // Only ring is compiled in; installing it explicitly keeps rustls from guessing.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let kc_err = |source| Error::Kubeconfig {
        path: path.to_path_buf(),
        source,
    };
    let kc = kube::config::Kubeconfig::read_from(path).map_err(kc_err)?;
    let cfg = kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
        .await
        .map_err(kc_err)?;
    kube::Client::try_from(cfg).map_err(Error::Client)
}

/// The controllers, running. Dropping it stops them too, without waiting.
pub struct Running {
    /// Where the metrics are served, if they are.
    pub metrics_addr: Option<SocketAddr>,
    /// The metrics themselves (also readable in-process).
    pub metrics: Arc<Metrics>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Running {
    /// Stops every controller and the metrics server. Reconciles in flight may finish
    /// for up to [`SHUTDOWN_GRACE`]; whatever still runs then is aborted.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let deadline = tokio::time::Instant::now() + SHUTDOWN_GRACE;
        for mut t in self.tasks {
            if tokio::time::timeout_at(deadline, &mut t).await.is_err() {
                tracing::warn!("a controller did not stop in time; aborting it");
                t.abort();
            }
        }
    }
}

/// A future that completes once `stop` says so (or its sender is gone).
async fn stopped(mut stop: watch::Receiver<bool>) {
    while !*stop.borrow_and_update() {
        if stop.changed().await.is_err() {
            return;
        }
    }
}

/// Starts every controller (node IPAM, node lifecycle, pod GC, scheduler, endpoints,
/// replicasets, deployments, LoadBalancer addresses when there is a pool) and,
/// if asked, the metrics endpoint. Fails only when the metrics address cannot be bound: the
/// controllers themselves wait for the API and retry with back-off.
pub async fn start(client: kube::Client, config: Config) -> Result<Running, Error> {
    let metrics = Arc::new(Metrics::default());
    let (stop, stop_rx) = watch::channel(false);
    let mut tasks = Vec::new();
    let metrics_addr = match config.metrics_bind {
        Some(addr) => {
            let (bound, task) =
                metrics::serve(addr, metrics.clone(), stopped(stop_rx.clone())).await?;
            tasks.push(task);
            Some(bound)
        }
        None => None,
    };
    // The component names Kubernetes' range allocator and scheduler write events as.
    let recorder = Arc::new(events::Recorder::new(
        client.clone(),
        "cidrAllocator",
        &config.instance,
    ));
    let sched_recorder = Arc::new(events::Recorder::new(
        client.clone(),
        SCHEDULER_NAME,
        &config.instance,
    ));
    tasks.push(tokio::spawn(ipam::run(
        client.clone(),
        &config,
        recorder.clone(),
        metrics.clone(),
        stopped(stop_rx.clone()),
    )?));
    tasks.push(tokio::spawn(lifecycle::run(
        client.clone(),
        &config,
        Arc::new(events::Recorder::new(
            client.clone(),
            "node-controller",
            &config.instance,
        )),
        metrics.clone(),
        stopped(stop_rx.clone()),
    )));
    tasks.push(tokio::spawn(podgc::run(
        client.clone(),
        metrics.clone(),
        stopped(stop_rx.clone()),
    )));
    tasks.push(tokio::spawn(endpoints::run_slices(
        client.clone(),
        metrics.clone(),
        stopped(stop_rx.clone()),
    )));
    tasks.push(tokio::spawn(endpoints::run_mirroring(
        client.clone(),
        metrics.clone(),
        stopped(stop_rx.clone()),
    )));
    tasks.push(tokio::spawn(replicaset::run(
        client.clone(),
        metrics.clone(),
        stopped(stop_rx.clone()),
    )));
    tasks.push(tokio::spawn(deployment::run(
        client.clone(),
        metrics.clone(),
        stopped(stop_rx.clone()),
    )));
    if let Some(pool) = config
        .lb_pool
        .and_then(|(first, last)| loadbalancer::Pool::new(first, last))
    {
        tasks.push(tokio::spawn(loadbalancer::run(
            client.clone(),
            pool,
            Arc::new(events::Recorder::new(
                client.clone(),
                "kins-lb-controller",
                &config.instance,
            )),
            metrics.clone(),
            stopped(stop_rx.clone()),
        )));
    }
    tasks.push(tokio::spawn(scheduler::run(
        client,
        &config,
        sched_recorder,
        metrics.clone(),
        stopped(stop_rx),
    )));
    tracing::info!(
        cluster_cidr = %config.cluster_cidr,
        node_cidr_mask_size = config.node_cidr_mask_size,
        grace = ?config.node_monitor_grace_period,
        metrics = ?metrics_addr,
        "controllers started"
    );
    Ok(Running {
        metrics_addr,
        metrics,
        stop,
        tasks,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        let cases: &[(&str, Option<Duration>)] = &[
            ("20s", Some(Duration::from_secs(20))),
            ("500ms", Some(Duration::from_millis(500))),
            ("1m30s", Some(Duration::from_secs(90))),
            ("2h", Some(Duration::from_secs(7200))),
            ("1.5s", Some(Duration::from_millis(1500))),
            ("0", Some(Duration::ZERO)),
            ("", None),
            ("20", None),
            ("s", None),
            ("-1s", None),
            ("5d", None),
        ];
        for (input, want) in cases {
            assert_eq!(parse_duration(input).ok(), *want, "{input:?}");
        }
    }

    #[test]
    fn config_checks_the_mask() {
        let c = Ipv4Cidr::parse("10.244.0.0/16").expect("valid");
        assert!(Config::new(c, 24).is_ok());
        assert!(matches!(Config::new(c, 8), Err(Error::Cidr(_))));
    }
}

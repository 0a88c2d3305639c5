//! Prometheus metrics of the controllers, served as text on `/metrics`.
//!
//! Few enough families that a map of counters and gauges behind a mutex is all it takes;
//! the text format is Prometheus' exposition format 0.0.4.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::JoinHandle;

use crate::runner::lock;
use crate::Error;

/// Every metric family: name, type, help.
const FAMILIES: &[(&str, &str, &str)] = &[
    (
        "kins_controller_reconciles_total",
        "counter",
        "Reconciles by controller and result (ok or error).",
    ),
    (
        "kins_controller_reconcile_duration_seconds",
        "summary",
        "Time spent in reconciles, by controller.",
    ),
    (
        "kins_node_ipam_cidrs_used",
        "gauge",
        "Node CIDRs held by nodes.",
    ),
    (
        "kins_node_ipam_cidrs_total",
        "gauge",
        "Node CIDRs in the cluster CIDR.",
    ),
    (
        "kins_node_ipam_cidr_not_available_total",
        "counter",
        "Times a node could not get a CIDR because the cluster CIDR was exhausted.",
    ),
    (
        "kins_node_lifecycle_transitions_total",
        "counter",
        "Nodes marked Ready=Unknown by the node lifecycle controller.",
    ),
    (
        "kins_node_lifecycle_taint_changes_total",
        "counter",
        "Node taint updates (unreachable / not-ready taints added or removed).",
    ),
    (
        "kins_pod_gc_deleted_total",
        "counter",
        "Pods deleted because their node no longer exists.",
    ),
    (
        "kins_scheduler_attempts_total",
        "counter",
        "Scheduling attempts by result (scheduled, unschedulable, error).",
    ),
];

/// The controllers' metrics.
#[derive(Debug, Default)]
pub struct Metrics {
    /// (family, labels as `k="v",...`) → value.
    values: Mutex<BTreeMap<(&'static str, String), f64>>,
}

fn labels(l: &[(&str, &str)]) -> String {
    let mut s = String::new();
    for (i, (k, v)) in l.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        let v = v
            .replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('\n', "\\n");
        let _ = write!(s, "{k}=\"{v}\"");
    }
    s
}

impl Metrics {
    /// Adds to a counter (or a summary's `_sum`/`_count` series).
    pub fn add(&self, name: &'static str, l: &[(&str, &str)], v: f64) {
        *lock(&self.values).entry((name, labels(l))).or_insert(0.0) += v;
    }

    /// Adds one to a counter.
    pub fn inc(&self, name: &'static str, l: &[(&str, &str)]) {
        self.add(name, l, 1.0);
    }

    /// Sets a gauge.
    pub fn set(&self, name: &'static str, l: &[(&str, &str)], v: f64) {
        lock(&self.values).insert((name, labels(l)), v);
    }

    /// The current value of a series (0 when never set), for tests and logs.
    pub fn get(&self, name: &'static str, l: &[(&str, &str)]) -> f64 {
        lock(&self.values)
            .get(&(name, labels(l)))
            .copied()
            .unwrap_or(0.0)
    }

    /// Records one reconcile.
    pub fn reconciled(&self, controller: &str, took: Duration, ok: bool) {
        let result = if ok { "ok" } else { "error" };
        self.inc(
            "kins_controller_reconciles_total",
            &[("controller", controller), ("result", result)],
        );
        self.add(
            "kins_controller_reconcile_duration_seconds_sum",
            &[("controller", controller)],
            took.as_secs_f64(),
        );
        self.inc(
            "kins_controller_reconcile_duration_seconds_count",
            &[("controller", controller)],
        );
    }

    /// The exposition text.
    pub fn render(&self) -> String {
        let values = lock(&self.values);
        let mut out = String::new();
        for (family, kind, help) in FAMILIES {
            let _ = writeln!(out, "# HELP {family} {help}");
            let _ = writeln!(out, "# TYPE {family} {kind}");
            for ((name, l), v) in values.iter() {
                let belongs = *name == *family
                    || (*kind == "summary"
                        && name
                            .strip_prefix(family)
                            .is_some_and(|s| s == "_sum" || s == "_count"));
                if !belongs {
                    continue;
                }
                if l.is_empty() {
                    let _ = writeln!(out, "{name} {v}");
                } else {
                    let _ = writeln!(out, "{name}{{{l}}} {v}");
                }
            }
        }
        out
    }
}

/// Serves `GET /metrics` on `addr` until `shutdown`; returns the bound address.
pub async fn serve(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(SocketAddr, JoinHandle<()>), Error> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Metrics { addr, source })?;
    let bound = listener
        .local_addr()
        .map_err(|source| Error::Metrics { addr, source })?;
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let m = metrics.clone();
            async move {
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "text/plain; version=0.0.4; charset=utf-8",
                    )],
                    m.render(),
                )
            }
        }),
    );
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
        {
            tracing::warn!(error = %e, "metrics server failed");
        }
    });
    tracing::info!(addr = %bound, "serving metrics on /metrics");
    Ok((bound, task))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_families_and_series() {
        let m = Metrics::default();
        m.reconciled("node-ipam", Duration::from_millis(500), true);
        m.reconciled("node-ipam", Duration::from_millis(250), false);
        m.set("kins_node_ipam_cidrs_used", &[], 3.0);
        m.inc("kins_scheduler_attempts_total", &[("result", "say \"hi\"")]);
        let text = m.render();
        for want in [
            "# TYPE kins_controller_reconciles_total counter",
            "kins_controller_reconciles_total{controller=\"node-ipam\",result=\"ok\"} 1",
            "kins_controller_reconciles_total{controller=\"node-ipam\",result=\"error\"} 1",
            "kins_controller_reconcile_duration_seconds_sum{controller=\"node-ipam\"} 0.75",
            "kins_controller_reconcile_duration_seconds_count{controller=\"node-ipam\"} 2",
            "kins_node_ipam_cidrs_used 3",
            "kins_scheduler_attempts_total{result=\"say \\\"hi\\\"\"} 1",
        ] {
            assert!(
                text.lines().any(|l| l == want),
                "missing {want:?} in\n{text}"
            );
        }
        assert_eq!(m.get("kins_node_ipam_cidrs_used", &[]), 3.0);
    }
}

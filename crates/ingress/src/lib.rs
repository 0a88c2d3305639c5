//! kins-ingress: the cluster's ingress controller (run by `kins ingress` in the
//! kube-system/kins-ingress pod). Layers, pure first: `routes` (Ingresses, Services,
//! EndpointSlices and Secrets → a routing table with Kubernetes' matching rules), `tls`
//! (certificates by SNI), `proxy` (hyper server and pooled client: HTTP/1.1, HTTP/2 over
//! TLS, WebSocket upgrades, X-Forwarded-*), `metrics`, and `controller` (the watches,
//! the table swapped in on every change, Ingress status and events).

pub mod controller;
pub mod metrics;
pub mod proxy;
pub mod routes;
pub mod tls;

use std::sync::{Arc, RwLock};

pub use controller::{run, RunOptions};

/// Errors of the controller.
#[derive(Debug, thiserror::Error)]
pub enum IngressError {
    #[error("listening on {addr}: {source}")]
    Listen {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("tls: {0}")]
    Tls(String),
    #[error("kubernetes: {0}")]
    Kube(#[from] kube::Error),
}

/// What the request path and the controller share: the current table (swapped whole),
/// the per-backend counters and the global figures.
#[derive(Debug, Default)]
pub struct Shared {
    table: RwLock<Arc<routes::Table>>,
    pub registry: routes::Registry,
    pub global: metrics::Global,
}

impl Shared {
    /// The table current now; a request keeps it to its end.
    pub fn table(&self) -> Arc<routes::Table> {
        self.table.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Swaps in a new table.
    pub fn set_table(&self, t: routes::Table) {
        *self.table.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(t);
    }
}

//! kins-dns: the cluster DNS server.
//!
//! It reads CoreDNS's Corefile (the `kube-system/coredns` ConfigMap) and answers like CoreDNS
//! with the plugins a cluster uses: the Kubernetes DNS specification for the cluster zone
//! (`kubernetes`), `forward`, `cache`, `hosts`, `rewrite`, `log`/`errors`, `health`, `ready`,
//! `prometheus` and `loadbalance`.
//!
//! Layers, pure first:
//! - `corefile`: text → typed [`corefile::Corefile`] (no IO).
//! - `records`: Services, EndpointSlices, Pods → a name → records hash map ([`Index`]).
//! - `answer`: one query against the index → [`Response`] (no IO).
//! - `rewrite`, `hosts`, `cache`: the other plugins' logic (hosts reads its file).
//! - `chain`: a Corefile compiled into server blocks and their plugin chain in CoreDNS's
//!   fixed order; `forward` talks to upstreams.
//! - `server`: hickory-server glue (UDP and TCP listeners, [`Dns`], live reconfiguration),
//!   `http` (health, ready, metrics), `metrics`.
//! - `watch`: [`run`], the cluster-facing runner (kube watchers, the ConfigMap, events).

pub mod answer;
pub mod cache;
pub mod chain;
pub mod corefile;
pub mod forward;
pub mod hosts;
mod http;
pub mod metrics;
pub mod records;
pub mod rewrite;
pub mod server;
pub mod watch;

#[cfg(test)]
mod tests;

pub use answer::{Outcome, Response, Section};
pub use records::{Index, IndexConfig};
pub use server::{serve, Dns, ServeOptions};
pub use watch::{run, RunOptions};

/// Errors of the DNS server.
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    /// The Corefile does not parse.
    #[error("{0}")]
    Corefile(#[from] corefile::CorefileError),
    /// The Corefile parses but cannot be used.
    #[error("{0}")]
    Config(String),
    /// A listener could not be bound.
    #[error("listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// A file named by the Corefile could not be read.
    #[error("read {path}: {source}")]
    Read {
        /// The file.
        path: std::path::PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The Kubernetes API failed.
    #[error("kubernetes api: {0}")]
    Kube(#[from] kube::Error),
}

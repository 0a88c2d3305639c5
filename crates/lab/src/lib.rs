//! Single-host clusters: where a cluster's files live, its configuration, the kubeconfig,
//! the supervisor that keeps its processes running, and `down`, which finds everything a
//! cluster made by name, even after every kins process was killed.
//!
//! Invariants: knows nothing about HTTP handlers or Kubernetes objects; every process it
//! starts carries `--cluster <name>` in its arguments, so it can always be found again.

pub mod cleanup;
pub mod cluster;
pub mod kubeconfig;
pub mod procs;
pub mod supervisor;
pub mod topology;

pub use cluster::{ClusterConfig, NodeEntry, Paths};

#[derive(Debug, thiserror::Error)]
pub enum LabError {
    #[error("{path}: {source}")]
    Io {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Json {
        path: std::path::PathBuf,
        source: serde_json::Error,
    },
    #[error("invalid cluster name {0:?}: use 1-10 lower-case letters, digits and '-', starting with a letter")]
    BadName(String),
    #[error("cluster {0:?} does not exist")]
    NoSuchCluster(String),
    #[error("{0}")]
    Other(String),
}

pub(crate) fn io_err(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> LabError + '_ {
    move |source| LabError::Io {
        path: path.to_owned(),
        source,
    }
}

//! The container runtime: an OCI image store on disk (`image`), the launch of isolated
//! containers from those images under a per-container shim (`container`), container logs
//! in the CRI format (`logs`), and cgroups v1/v2 (`container::cgroup`).
//!
//! Invariants: knows nothing about the Kubernetes API; every kernel object it makes
//! (mounts, cgroups) carries the `kins` prefix or lives under a kins directory.

pub mod container;
pub mod image;
pub mod logs;

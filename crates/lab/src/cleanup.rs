//! Removing everything a cluster made on this host, by name alone: its processes (by
//! `--cluster <name>` and by the namespaces they run in), namespace files and other mounts
//! under its run dir, its host links (by alias or bridge name), its host nftables table,
//! its container cgroups (`kins/<name>`), and the run dir itself. Used by `kins down`, and by `kins up` before it makes a cluster
//! whose name still has leftovers.

use std::time::Duration;

use crate::{topology, LabError, Paths};

/// What a clean-up removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Removed {
    pub processes: usize,
    pub mounts: usize,
    pub links: usize,
    pub tables: usize,
}

pub fn everything(paths: &Paths, grace: Duration) -> Result<Removed, LabError> {
    // The control plane and agents first (so nothing restarts or starts containers),
    // then the containers at once (this is a teardown, not a graceful pod deletion):
    // found by the namespace they run in and by their cgroups, so also when their shims
    // were killed; then the shims, which end by themselves once their container is gone.
    let mut r = Removed {
        processes: crate::procs::stop_matching(&paths.name, grace, |p| p.role != "shim"),
        ..Removed::default()
    };
    r.processes += crate::procs::kill_in_netns(&topology::mounts_under(&paths.run), Duration::ZERO);
    let mut errors = Vec::new();
    if let Err(e) = runtime::container::cgroup::remove_tree(&format!("kins/{}", paths.name)) {
        errors.push(e.to_string());
    }
    runtime::container::cgroup::remove_empty("kins");
    r.processes += crate::procs::stop_all(&paths.name, Duration::from_secs(1));
    // Namespace files and any other mount under the run dir (routes, nftables tables and
    // pod veths live inside the node namespaces and go with them).
    r.mounts = topology::unmount_all(&paths.run);
    for l in topology::cluster_links(&paths.name) {
        match topology::delete_link(&l) {
            Ok(()) => r.links += 1,
            Err(e) => errors.push(e.to_string()),
        }
    }
    r.tables = usize::from(topology::delete_host_table(&paths.name));
    if paths.run.exists() {
        std::fs::remove_dir_all(&paths.run).map_err(crate::io_err(&paths.run))?;
    }
    if errors.is_empty() {
        Ok(r)
    } else {
        Err(LabError::Other(errors.join("; ")))
    }
}

//! What the agent keeps on disk per pod, so that a restarted agent adopts running pods:
//! `<run_dir>/pods/<uid>/pod.json`, the pod's netns file `net`, and one directory per
//! container written by its shim.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::{io, AgentError};

/// One pod's sandbox and container bookkeeping.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PodState {
    pub uid: String,
    pub namespace: String,
    pub name: String,
    /// The pod IP ("" until the network is set up).
    pub ip: String,
    /// The node pod CIDR the IP came from (kept for reading; DEL now runs the configuration
    /// the CNI cache recorded at ADD).
    #[serde(default)]
    pub subnet: String,
    pub host_network: bool,
    pub start_time: String,
    pub containers: BTreeMap<String, ContainerRecord>,
    /// The pod's IPC/UTS namespaces and /etc files exist.
    #[serde(default)]
    pub sandbox_ready: bool,
    /// Every volume was set up.
    #[serde(default)]
    pub volumes_ready: bool,
    /// The last FailedMount message posted (posted again only when it changes).
    #[serde(default)]
    pub volume_error: String,
    /// The last FailedCreatePodSandBox message (the CNI chain's error) posted.
    #[serde(default)]
    pub sandbox_error: String,
    /// Unix seconds of the last volume sync and of the last service-account token.
    #[serde(default)]
    pub volumes_synced_at: i64,
    #[serde(default)]
    pub token_at: i64,
}

/// Restart bookkeeping of one container.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ContainerRecord {
    /// How many times it was started (restartCount = attempts - 1).
    pub attempts: u32,
    /// The state of the previous run, as a Kubernetes ContainerState JSON.
    pub last_state: Option<serde_json::Value>,
    /// Unix seconds before which it must not be restarted (back-off).
    pub not_before: i64,
    /// Current back-off in seconds.
    pub backoff: u64,
    /// The attempt whose end was already reported (events are posted once).
    pub reported: u32,
    /// The id of the current run (kins://<id>).
    #[serde(default)]
    pub id: String,
    /// The normalized image reference and image id of the current run.
    #[serde(default)]
    pub image: String,
    #[serde(default)]
    pub image_id: String,
    /// Why the container cannot be started now: (reason, message), e.g.
    /// ("ErrImagePull", ...) or ("CreateContainerConfigError", ...).
    #[serde(default)]
    pub waiting: Option<(String, String)>,
    /// The attempt killed for failing its liveness (or startup) probe (killed once).
    #[serde(default)]
    pub killed: u32,
}

pub fn pod_dir(run_dir: &Path, uid: &str) -> PathBuf {
    run_dir.join("pods").join(uid)
}

pub fn netns_path(run_dir: &Path, uid: &str) -> PathBuf {
    pod_dir(run_dir, uid).join("net")
}

/// The directory of one run (attempt) of a container.
pub fn container_dir(run_dir: &Path, uid: &str, name: &str, attempt: u32) -> PathBuf {
    pod_dir(run_dir, uid)
        .join("containers")
        .join(format!("{name}.{attempt}"))
}

/// A pod's log directory, laid out as the kubelet does:
/// `<data_dir>/logs/<namespace>_<name>_<uid>/<container>/<restartCount>.log`.
pub fn pod_log_dir(data_dir: &Path, namespace: &str, name: &str, uid: &str) -> PathBuf {
    data_dir
        .join("logs")
        .join(format!("{namespace}_{name}_{uid}"))
}

/// The CRI log file of one run of a container (restart_count = attempt - 1).
pub fn log_path(
    data_dir: &Path,
    namespace: &str,
    name: &str,
    uid: &str,
    container: &str,
    restart_count: u32,
) -> PathBuf {
    pod_log_dir(data_dir, namespace, name, uid)
        .join(container)
        .join(format!("{restart_count}.log"))
}

pub fn load(run_dir: &Path, uid: &str) -> Option<PodState> {
    let p = pod_dir(run_dir, uid).join("pod.json");
    std::fs::read(&p)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
}

pub fn save(run_dir: &Path, st: &PodState) -> Result<(), AgentError> {
    let dir = pod_dir(run_dir, &st.uid);
    std::fs::create_dir_all(&dir).map_err(io(format!("creating {}", dir.display())))?;
    let p = dir.join("pod.json");
    let tmp = dir.join("pod.json.tmp");
    let text =
        serde_json::to_vec_pretty(st).map_err(|e| AgentError::Other(format!("pod state: {e}")))?;
    std::fs::write(&tmp, text).map_err(io(format!("writing {}", tmp.display())))?;
    std::fs::rename(&tmp, &p).map_err(io(format!("writing {}", p.display())))
}

/// UIDs of every pod with state on this node.
pub fn all(run_dir: &Path) -> Vec<String> {
    std::fs::read_dir(run_dir.join("pods"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut st = PodState {
            uid: "u1".into(),
            name: "p".into(),
            ip: "10.244.1.2".into(),
            ..Default::default()
        };
        st.containers.insert(
            "c".into(),
            ContainerRecord {
                attempts: 2,
                ..Default::default()
            },
        );
        save(dir.path(), &st).expect("save");
        assert_eq!(load(dir.path(), "u1"), Some(st));
        assert_eq!(all(dir.path()), vec!["u1".to_string()]);
        assert!(load(dir.path(), "nope").is_none());
    }
}

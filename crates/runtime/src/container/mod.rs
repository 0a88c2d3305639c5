//! Isolated containers. The agent writes a `ContainerConfig` as `config.json` into the
//! container's state directory and starts `kins shim`, which calls `shim::run`: it makes
//! the cgroup, forks the container (new mount and PID namespaces, joins the pod's network,
//! IPC and UTS namespaces), pumps its stdout and stderr into the CRI log, and records pid,
//! start, exit code and reason in the state directory.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub mod attach;
pub mod caps;
pub mod cgroup;
mod child;
pub mod exec;
pub mod mounts;
pub mod shim;
mod sys;

/// Why a container could not be set up, started or cleaned up.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("{what} {}: {error}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{what}: {}", errno_text(*errno))]
    Sys {
        what: String,
        errno: nix::errno::Errno,
    },
    #[error("unknown capability {0:?}")]
    UnknownCapability(String),
    #[error("invalid container config: {0}")]
    Config(String),
}

/// An errno in Go's wording (lower case), which users of kubectl know.
pub fn errno_text(e: nix::errno::Errno) -> String {
    let desc = e.desc();
    let mut c = desc.chars();
    match c.next() {
        Some(first) => first.to_lowercase().chain(c).collect(),
        None => desc.to_string(),
    }
}

/// An `io::Error` in the same wording.
pub fn io_text(e: &std::io::Error) -> String {
    match e.raw_os_error() {
        Some(n) => errno_text(nix::errno::Errno::from_raw(n)),
        None => e.to_string(),
    }
}

/// Everything needed to start one container (one attempt).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerConfig {
    /// A unique id (64 hex characters) of this container run.
    pub id: String,
    /// The final command line (image ENTRYPOINT/CMD already combined with command/args).
    pub argv: Vec<String>,
    /// KEY=VALUE, in order; later entries win.
    pub env: Vec<String>,
    /// Working directory inside the container ("" = "/").
    pub cwd: String,
    pub uid: u32,
    pub gid: u32,
    pub supplemental_groups: Vec<u32>,
    /// None: run on the host's root filesystem (no mount namespace, no pivot_root): used
    /// only by tests of the launcher.
    pub rootfs: Option<RootFs>,
    /// Namespace files to join (None: keep the shim's).
    pub netns: Option<PathBuf>,
    pub ipcns: Option<PathBuf>,
    pub utsns: Option<PathBuf>,
    /// Join this PID namespace (a pod-level one when shareProcessNamespace); None: a new
    /// PID namespace whose init is the container's process.
    pub pidns: Option<PathBuf>,
    /// Bind mounts (volumes, /etc/hosts, /etc/hostname, /etc/resolv.conf, the token).
    pub mounts: Vec<Mount>,
    /// privileged: true keeps every capability and mounts /sys read-write.
    pub privileged: bool,
    /// Capabilities (names like "NET_ADMIN" or "CAP_NET_ADMIN") added to / dropped from
    /// containerd's default set; "ALL" allowed in drop.
    pub cap_add: Vec<String>,
    pub cap_drop: Vec<String>,
    /// allowPrivilegeEscalation: false sets no_new_privs (kins sets it unless privileged).
    pub no_new_privs: bool,
    pub read_only_rootfs: bool,
    pub cgroup: Option<CgroupConfig>,
    pub log: LogConfig,
    /// `stdin: true`: the container's stdin is a pipe the shim keeps open for `kubectl
    /// attach` (else /dev/null).
    #[serde(default)]
    pub stdin: bool,
    /// `stdinOnce: true`: that stdin is closed when the first attach with stdin ends.
    #[serde(default)]
    pub stdin_once: bool,
    /// `tty: true`: stdin, stdout and stderr are a terminal whose master the shim keeps.
    #[serde(default)]
    pub tty: bool,
}

/// An overlay root: read-only image layers and a writable layer of this container.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RootFs {
    /// Unpacked image layers, bottom (base) layer first.
    pub layers: Vec<PathBuf>,
    /// Writable upper and overlay work directories (created if missing).
    pub upper: PathBuf,
    pub work: PathBuf,
    /// Where the overlay is mounted (inside the container's own mount namespace only).
    pub merged: PathBuf,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Mount {
    /// Host path (a directory or a file).
    pub source: PathBuf,
    /// Absolute path inside the container (created if missing).
    pub destination: String,
    pub read_only: bool,
}

/// The container's cgroup, named `kins/<cluster>/<pod uid>/<container id>` under each
/// controller (v1) or under the unified hierarchy (v2).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CgroupConfig {
    /// Relative path, e.g. "kins/demo/<pod uid>/<container id>".
    pub path: String,
    pub memory_limit: Option<u64>,
    /// CPU limit in millicores (quota = millis * period / 1000, period 100 ms).
    pub cpu_limit_millis: Option<u64>,
    /// CPU request in millicores (shares / weight).
    pub cpu_request_millis: Option<u64>,
    pub pids_limit: Option<i64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LogConfig {
    /// The CRI log file, e.g. <data>/logs/<ns>_<pod>_<uid>/<container>/<restartCount>.log.
    pub path: PathBuf,
    /// Rotate when the file is larger than this (kubelet default 10 MiB).
    pub max_size: u64,
    /// Files kept, the current one included (kubelet default 5).
    pub max_files: u32,
}

/// Terminals for `kubectl exec -t`: a pseudo-terminal pair from the host's devpts, the
/// slave end given to the command (its controlling terminal), the master kept by the
/// caller, which sets the window size on it.
pub mod pty {
    use std::os::fd::{BorrowedFd, OwnedFd};

    /// A new pseudo-terminal: (master, slave).
    pub fn open() -> Result<(OwnedFd, OwnedFd), String> {
        let p = nix::pty::openpty(None, None)
            .map_err(|e| format!("opening a pseudo-terminal: {}", super::errno_text(e)))?;
        Ok((p.master, p.slave))
    }

    /// Sets the terminal's size in columns and rows.
    pub fn resize(master: BorrowedFd<'_>, cols: u16, rows: u16) -> Result<(), String> {
        super::sys::set_window_size(master, cols, rows)
            .map_err(|e| format!("resizing the terminal: {}", super::errno_text(e)))
    }
}

//! Launching containers. Each container runs under a per-container shim (`kins shim`)
//! that makes it an isolated container from its image (see the `runtime` crate), owns the
//! process and its output, and records its pid, exit code and reason in files, so that
//! containers outlive the agent and no exit code is lost. The `ContainerRuntime` trait is
//! the seam the pod loop uses (a fake in unit tests).

use std::path::{Path, PathBuf};
use std::process::Stdio;

use runtime::container::ContainerConfig;

use crate::{io, AgentError};

/// What to run: the container's configuration and the shim's state directory.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerSpec {
    pub config: ContainerConfig,
    /// The shim's state directory (config.json, pid, started, exit, reason, error files).
    pub state_dir: PathBuf,
}

/// A container's state as its shim recorded it.
#[derive(Debug, Clone, PartialEq)]
pub enum ContainerState {
    /// Launched, but the shim has not reported yet.
    Starting,
    Running {
        pid: i32,
        started_at: String,
    },
    Exited {
        code: i32,
        /// Completed, Error or OOMKilled.
        reason: String,
        started_at: String,
        finished_at: String,
    },
    /// The process could not be started (e.g. the command does not exist).
    StartFailed {
        message: String,
        at: String,
    },
    /// The shim died without a word (kill -9 of the shim).
    Lost,
}

pub trait ContainerRuntime: Send + Sync {
    fn start(&self, spec: &ContainerSpec) -> Result<(), AgentError>;
    fn state(&self, state_dir: &Path) -> ContainerState;
    /// Sends a signal to the container's process; false if it is not running.
    fn signal(&self, state_dir: &Path, sig: nix::sys::signal::Signal) -> bool;
}

/// Runs each container under `kins shim`.
pub struct ShimRuntime {
    pub kins_exe: PathBuf,
    pub cluster: String,
    pub node: String,
}

fn read(p: &Path) -> Option<String> {
    std::fs::read_to_string(p)
        .ok()
        .map(|s| s.trim().to_string())
}

fn alive(pid: i32) -> bool {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .rsplit(')')
            .next()
            .is_some_and(|r| r.trim_start().starts_with('Z'))
}

fn exited(dir: &Path, code: &str, started_at: String) -> ContainerState {
    let code = code.parse().unwrap_or(-1);
    let reason = read(&dir.join("reason"))
        .unwrap_or_else(|| if code == 0 { "Completed" } else { "Error" }.to_string());
    ContainerState::Exited {
        code,
        reason,
        started_at,
        finished_at: read(&dir.join("finished")).unwrap_or_default(),
    }
}

/// Reads the state files a shim writes.
pub fn read_state(dir: &Path) -> ContainerState {
    if let Some(msg) = read(&dir.join("error")) {
        return ContainerState::StartFailed {
            message: msg,
            at: read(&dir.join("finished")).unwrap_or_default(),
        };
    }
    let started = read(&dir.join("started")).unwrap_or_default();
    if let Some(code) = read(&dir.join("exit")) {
        return exited(dir, &code, started);
    }
    match read(&dir.join("pid")).and_then(|p| p.parse::<i32>().ok()) {
        Some(pid) if alive(pid) => ContainerState::Running {
            pid,
            started_at: started,
        },
        Some(_) => {
            // The process is gone; the shim may be writing its exit file right now.
            let shim = read(&dir.join("shim.pid")).and_then(|p| p.parse::<i32>().ok());
            if shim.is_some_and(alive) {
                ContainerState::Starting
            } else if let Some(code) = read(&dir.join("exit")) {
                exited(dir, &code, started)
            } else {
                ContainerState::Lost
            }
        }
        None => {
            let shim = read(&dir.join("shim.pid")).and_then(|p| p.parse::<i32>().ok());
            if shim.is_none_or(alive) {
                ContainerState::Starting
            } else {
                ContainerState::Lost
            }
        }
    }
}

impl ContainerRuntime for ShimRuntime {
    fn start(&self, spec: &ContainerSpec) -> Result<(), AgentError> {
        std::fs::create_dir_all(&spec.state_dir)
            .map_err(io(format!("creating {}", spec.state_dir.display())))?;
        if let Some(parent) = spec.config.log.path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(io(format!("creating {}", parent.display())))?;
        }
        let config_path = spec.state_dir.join("config.json");
        let text = serde_json::to_vec_pretty(&spec.config)
            .map_err(|e| AgentError::Other(format!("container config: {e}")))?;
        std::fs::write(&config_path, text)
            .map_err(io(format!("writing {}", config_path.display())))?;
        let mut cmd = std::process::Command::new(&self.kins_exe);
        cmd.args(["shim", "--cluster", &self.cluster, "--node", &self.node]);
        cmd.arg("--state-dir").arg(&spec.state_dir);
        use std::os::unix::process::CommandExt;
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0);
        let child = cmd
            .spawn()
            .map_err(io(format!("starting the shim {}", self.kins_exe.display())))?;
        std::fs::write(spec.state_dir.join("shim.pid"), child.id().to_string())
            .map_err(io(format!("writing {}", spec.state_dir.display())))?;
        // Reap the shim when it ends while we live (after an agent restart, init does).
        std::thread::spawn(move || {
            let mut child = child;
            let _ = child.wait();
        });
        Ok(())
    }

    fn state(&self, state_dir: &Path) -> ContainerState {
        read_state(state_dir)
    }

    fn signal(&self, state_dir: &Path, sig: nix::sys::signal::Signal) -> bool {
        match read_state(state_dir) {
            ContainerState::Running { pid, .. } => {
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig).is_ok()
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_from_files() {
        let d = tempfile::tempdir().expect("tempdir");
        let p = d.path();
        std::fs::write(p.join("shim.pid"), std::process::id().to_string()).expect("write");
        assert_eq!(read_state(p), ContainerState::Starting);
        std::fs::write(p.join("pid"), std::process::id().to_string()).expect("write");
        std::fs::write(p.join("started"), "2024-01-01T00:00:00Z").expect("write");
        assert!(matches!(read_state(p), ContainerState::Running { .. }));
        std::fs::write(p.join("exit"), "3").expect("write");
        assert!(matches!(
            read_state(p),
            ContainerState::Exited { code: 3, .. }
        ));
        std::fs::write(
            p.join("error"),
            "exec: \"nope\": executable file not found in $PATH",
        )
        .expect("write");
        assert!(matches!(read_state(p), ContainerState::StartFailed { .. }));
    }
}

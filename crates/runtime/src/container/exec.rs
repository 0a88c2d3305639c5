//! Running a command inside a running container (`kins exec`, exec probes): the helper
//! joins the container's cgroup and its IPC, UTS, network, PID and mount namespaces, forks
//! (the PID namespace applies to children), and the child takes the container's working
//! directory, user, groups, capabilities, no_new_privs and environment before it execs the
//! command with stdin, stdout and stderr inherited. The helper waits for the command and
//! returns its exit code (128 + the signal number), killing it after the timeout.
//!
//! Like the shim, the caller must be single-threaded (it forks and calls setns, which a
//! multi-threaded process cannot do for the mount namespace).

use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sched::CloneFlags;
use nix::sys::signal::Signal;
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{ForkResult, Pid};

use super::cgroup::{self, Manager};
use super::{caps, child, errno_text, io_text, sys, ContainerConfig};

/// How a command is run.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Kill the command (and its process group) after this long.
    pub timeout: Option<Duration>,
    /// Descriptor 0 is a terminal: the command gets a session of its own with that
    /// terminal as its controlling terminal (`kubectl exec -t`).
    pub tty: bool,
}

/// Exit code of a command that could not be run (`kubectl exec` and Docker use it).
pub const CANNOT_RUN: i32 = 126;
/// Exit code of a command that does not exist.
pub const NOT_FOUND: i32 = 127;

/// Why the command did not run to its end. Messages in runc's wording.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExecError {
    /// No `pid` file, an `exit` or `error` file, or a process that is gone.
    #[error("cannot exec in a stopped container")]
    NotRunning,
    /// The container could not be entered (config, namespaces, cgroup, fork).
    #[error("exec failed: {0}")]
    Setup(String),
    /// The child could not exec the command (not found, permission denied, bad cwd, ...).
    #[error("exec failed: unable to start container process: {message}")]
    Start { message: String, code: i32 },
    /// The command ran longer than the timeout and was killed.
    #[error("command timed out after {}ms", .0.as_millis())]
    TimedOut(Duration),
}

impl ExecError {
    /// The exit code `kins exec` ends with: 127 for a command that does not exist, 137 for
    /// a command killed at its timeout, 126 otherwise.
    pub fn exit_code(&self) -> i32 {
        match self {
            ExecError::Start { code, .. } => *code,
            ExecError::TimedOut(_) => 128 + Signal::SIGKILL as i32,
            _ => CANNOT_RUN,
        }
    }
}

/// The namespaces joined, in this order (the mount namespace last: it changes root).
const NAMESPACES: [(&str, CloneFlags); 5] = [
    ("ipc", CloneFlags::CLONE_NEWIPC),
    ("uts", CloneFlags::CLONE_NEWUTS),
    ("net", CloneFlags::CLONE_NEWNET),
    ("pid", CloneFlags::CLONE_NEWPID),
    ("mnt", CloneFlags::CLONE_NEWNS),
];

/// Reads `<state_dir>/config.json`.
pub fn read_config(state_dir: &Path) -> Result<ContainerConfig, ExecError> {
    let path = state_dir.join("config.json");
    let bytes = std::fs::read(&path)
        .map_err(|e| ExecError::Setup(format!("reading {}: {}", path.display(), io_text(&e))))?;
    serde_json::from_slice(&bytes)
        .map_err(|e| ExecError::Setup(format!("parsing {}: {e}", path.display())))
}

/// The pid of the container's process if it is running: a `pid` file, no `exit` or
/// `error` file, and a live (not zombie) process.
pub fn running_pid(state_dir: &Path) -> Option<i32> {
    if state_dir.join("exit").exists() || state_dir.join("error").exists() {
        return None;
    }
    let pid: i32 = std::fs::read_to_string(state_dir.join("pid"))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let zombie = stat
        .rsplit(')')
        .next()
        .is_some_and(|r| r.trim_start().starts_with('Z'));
    (pid > 0 && !zombie).then_some(pid)
}

/// Whether the rest of a child's report (after its code byte) means "not found".
fn start_code(message: &str) -> i32 {
    if message.contains("executable file not found") || message.contains("no such file") {
        NOT_FOUND
    } else {
        CANNOT_RUN
    }
}

/// Runs `argv` in the container whose shim state is in `state_dir` and returns the
/// command's exit code (128 + the signal number when it was killed by one).
pub fn run(state_dir: &Path, argv: &[String], opts: &Options) -> Result<i32, ExecError> {
    let timeout = opts.timeout;
    if argv.is_empty() {
        return Err(ExecError::Start {
            message: "no command given".into(),
            code: CANNOT_RUN,
        });
    }
    let cfg = read_config(state_dir)?;
    let pid = running_pid(state_dir).ok_or(ExecError::NotRunning)?;
    // Every namespace file is opened before any is joined: /proc is the container's once
    // the mount namespace is.
    let mut targets: Vec<(OwnedFd, CloneFlags, &str)> = Vec::new();
    for (name, flag) in NAMESPACES {
        let path = PathBuf::from(format!("/proc/{pid}/ns/{name}"));
        let f = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(ExecError::NotRunning)
            }
            Err(e) => {
                return Err(ExecError::Setup(format!(
                    "opening {}: {}",
                    path.display(),
                    io_text(&e)
                )))
            }
        };
        // Joining the namespace we are in already is skipped (a container on the host's
        // root filesystem shares our mount namespace).
        let ours = std::fs::metadata(format!("/proc/self/ns/{name}")).map(|m| m.ino());
        let theirs = f.metadata().map(|m| m.ino());
        if let (Ok(a), Ok(b)) = (ours, theirs) {
            if a == b {
                continue;
            }
        }
        targets.push((OwnedFd::from(f), flag, name));
    }
    // The pid may have been reused by now if the container ended meanwhile.
    if running_pid(state_dir) != Some(pid) {
        return Err(ExecError::NotRunning);
    }
    let caps = if cfg.privileged {
        None
    } else {
        Some(
            caps::container_set(&cfg.cap_add, &cfg.cap_drop)
                .map_err(|e| ExecError::Setup(e.to_string()))?,
        )
    };
    // The helper joins the container's cgroup itself (its child inherits it): the cgroup
    // file system may not be visible from inside the container.
    if let Some(cg) = &cfg.cgroup {
        cgroup::detect(&cg.path)
            .add_task(std::process::id() as i32)
            .map_err(|e| ExecError::Setup(format!("joining the container's cgroup: {e}")))?;
    }
    for (fd, flag, name) in &targets {
        nix::sched::setns(fd, *flag).map_err(|e| {
            ExecError::Setup(format!(
                "joining the {name} namespace of process {pid}: {}",
                errno_text(e)
            ))
        })?;
    }
    drop(targets);
    let (report_r, report_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC)
        .map_err(|e| ExecError::Setup(format!("creating a pipe: {}", errno_text(e))))?;
    let child = match sys::fork() {
        Err(e) => return Err(ExecError::Setup(format!("fork: {}", errno_text(e)))),
        Ok(ForkResult::Child) => {
            drop(report_r);
            let message = match child_exec(&cfg, argv, caps, timeout.is_some(), opts.tty) {
                Ok(never) => match never {},
                Err(m) => m,
            };
            let code = start_code(&message);
            let mut buf = vec![code as u8];
            buf.extend_from_slice(message.as_bytes());
            let _ = sys::write_all(&report_w, &buf);
            sys::exit_now(CANNOT_RUN)
        }
        Ok(ForkResult::Parent { child }) => child,
    };
    drop(report_w);
    let report = sys::read_to_end(&report_r);
    if let Some((code, message)) = report.split_first() {
        let _ = waitpid(child, None);
        return Err(ExecError::Start {
            message: String::from_utf8_lossy(message).into_owned(),
            code: i32::from(*code),
        });
    }
    wait(child, timeout)
}

/// In the forked child: the container's cwd, user and capabilities, then exec. Returns
/// only with the reason it could not exec.
fn child_exec(
    cfg: &ContainerConfig,
    argv: &[String],
    caps: Option<u64>,
    own_group: bool,
    tty: bool,
) -> Result<std::convert::Infallible, String> {
    if tty {
        // A session of its own (so also a process group) with the terminal on stdin.
        sys::take_controlling_tty()
            .map_err(|e| format!("setting the controlling terminal: {}", errno_text(e)))?;
    } else if own_group {
        // Its own process group, so that a timeout kills what it started too.
        nix::unistd::setpgid(Pid::from_raw(0), Pid::from_raw(0))
            .map_err(|e| format!("setpgid: {}", errno_text(e)))?;
    }
    let cwd = if cfg.cwd.is_empty() { "/" } else { &cfg.cwd };
    nix::unistd::chdir(cwd).map_err(|e| {
        format!(
            "chdir to cwd ({cwd:?}) set in config.json failed: {}",
            errno_text(e)
        )
    })?;
    child::set_user_and_caps(cfg, caps)?;
    // After the credential change, which clears it: the command dies with the helper.
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)
        .map_err(|e| format!("setting the parent death signal: {}", errno_text(e)))?;
    sys::reset_signals().map_err(|e| format!("resetting signals: {}", errno_text(e)))?;
    sys::cloexec_from(3).map_err(|e| format!("close_range: {}", errno_text(e)))?;
    let argv0 = &argv[0];
    let program = child::look_path(argv0, &cfg.env)?;
    let cstr = |s: &str| {
        std::ffi::CString::new(s).map_err(|_| format!("exec: {s:?}: contains a NUL byte"))
    };
    let path = cstr(&program.to_string_lossy())?;
    let args = argv
        .iter()
        .map(|a| cstr(a))
        .collect::<Result<Vec<_>, _>>()?;
    let env = cfg
        .env
        .iter()
        .map(|a| cstr(a))
        .collect::<Result<Vec<_>, _>>()?;
    match nix::unistd::execve(&path, &args, &env) {
        Ok(never) => match never {},
        Err(e) => Err(format!("exec: {argv0:?}: {}", errno_text(e))),
    }
}

fn exit_code(status: WaitStatus) -> i32 {
    match status {
        WaitStatus::Exited(_, code) => code,
        WaitStatus::Signaled(_, sig, _) => 128 + sig as i32,
        _ => 128,
    }
}

/// Waits for the command; kills it (and its process group) at the timeout.
fn wait(child: Pid, timeout: Option<Duration>) -> Result<i32, ExecError> {
    let Some(timeout) = timeout else {
        loop {
            match waitpid(child, None) {
                Ok(s @ (WaitStatus::Exited(..) | WaitStatus::Signaled(..))) => {
                    return Ok(exit_code(s))
                }
                Ok(_) | Err(Errno::EINTR) => {}
                Err(e) => return Err(ExecError::Setup(format!("wait: {}", errno_text(e)))),
            }
        }
    };
    let deadline = Instant::now() + timeout;
    let pidfd = sys::pidfd_open(child).ok();
    loop {
        match waitpid(child, Some(nix::sys::wait::WaitPidFlag::WNOHANG)) {
            Ok(s @ (WaitStatus::Exited(..) | WaitStatus::Signaled(..))) => return Ok(exit_code(s)),
            Ok(_) | Err(Errno::EINTR) => {}
            Err(e) => return Err(ExecError::Setup(format!("wait: {}", errno_text(e)))),
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            let _ = nix::sys::signal::kill(Pid::from_raw(-child.as_raw()), Signal::SIGKILL);
            let _ = nix::sys::signal::kill(child, Signal::SIGKILL);
            let _ = waitpid(child, None);
            return Err(ExecError::TimedOut(timeout));
        }
        // Poll the pidfd (readable at exit); without one, check every 10 ms.
        let ms = left
            .as_millis()
            .min(if pidfd.is_some() { 1000 } else { 10 }) as u16;
        match &pidfd {
            Some(fd) => {
                let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
                let _ = nix::poll::poll(&mut fds, PollTimeout::from(ms.max(1)));
            }
            None => std::thread::sleep(Duration::from_millis(u64::from(ms.max(1)))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_and_messages() {
        let missing = "exec: \"nope\": executable file not found in $PATH";
        assert_eq!(start_code(missing), NOT_FOUND);
        assert_eq!(
            start_code("exec: \"/x\": stat /x: no such file or directory"),
            NOT_FOUND
        );
        assert_eq!(start_code("exec: \"/etc\": permission denied"), CANNOT_RUN);
        let e = ExecError::Start {
            message: missing.into(),
            code: NOT_FOUND,
        };
        assert_eq!(
            e.to_string(),
            "exec failed: unable to start container process: exec: \"nope\": executable file not found in $PATH"
        );
        assert_eq!(e.exit_code(), 127);
        assert_eq!(ExecError::NotRunning.exit_code(), 126);
        assert_eq!(
            ExecError::TimedOut(Duration::from_millis(1500)).to_string(),
            "command timed out after 1500ms"
        );
        assert_eq!(ExecError::TimedOut(Duration::ZERO).exit_code(), 137);
    }

    #[test]
    fn stopped_containers() {
        let d = tempfile::tempdir().expect("tempdir");
        assert_eq!(running_pid(d.path()), None);
        std::fs::write(d.path().join("pid"), std::process::id().to_string()).expect("write");
        assert_eq!(running_pid(d.path()), Some(std::process::id() as i32));
        std::fs::write(d.path().join("exit"), "0").expect("write");
        assert_eq!(running_pid(d.path()), None);
        assert_eq!(
            run(d.path(), &["true".into()], &Options::default()),
            Err(ExecError::Setup(format!(
                "reading {}: no such file or directory",
                d.path().join("config.json").display()
            )))
        );
        let cfg = serde_json::to_vec(&ContainerConfig::default()).expect("json");
        std::fs::write(d.path().join("config.json"), cfg).expect("write");
        assert_eq!(
            run(d.path(), &["true".into()], &Options::default()),
            Err(ExecError::NotRunning)
        );
    }
}

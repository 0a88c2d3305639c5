//! The shim: owns one container process from fork to exit. Single-threaded (it forks).
//!
//! State files in the state directory, each written atomically (temp file + rename),
//! times as `%Y-%m-%dT%H:%M:%SZ` (UTC):
//! - `started`, then `pid` (the container's pid on the host) once the command is exec'd;
//! - at exit `finished`, `reason` (`Completed`, `OOMKilled` or `Error`), then `exit` (the
//!   exit code, or 128 + the signal number);
//! - when the container could not start: `finished`, then `error` (the message, in Go's or
//!   runc's wording: `exec: "nope": executable file not found in $PATH`).
//!
//! (`shim.pid` is written by the agent.)

use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sched::CloneFlags;
use nix::sys::signal::Signal;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{ForkResult, Pid};

use super::cgroup::{self, AnyManager, Manager};
use super::child::{self, ChildFds, ChildPlan};
use super::{attach, caps, errno_text, mounts, sys, ContainerConfig, RuntimeError};
use crate::logs::{CriLogWriter, Stream};

/// How long output is still collected after the container's process exited, when
/// something else (a daemonized grandchild) keeps its stdout or stderr open.
pub const DRAIN_AFTER_EXIT: Duration = Duration::from_millis(500);

/// The time format of the state files.
pub fn now() -> String {
    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// Writes `dir/name` atomically.
pub fn put(dir: &Path, name: &str, value: &str) -> Result<(), RuntimeError> {
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, value).map_err(|error| RuntimeError::Io {
        what: "writing",
        path: tmp.clone(),
        error,
    })?;
    let dest = dir.join(name);
    std::fs::rename(&tmp, &dest).map_err(|error| RuntimeError::Io {
        what: "writing",
        path: dest,
        error,
    })
}

/// Runs the container described by `cfg` to its end, recording its life in `state_dir`.
/// A container that cannot start is not an error of the shim: it is recorded in the
/// `error` file (and the log) and `run` returns Ok.
pub fn run(cfg: &ContainerConfig, state_dir: &Path) -> Result<(), RuntimeError> {
    std::fs::create_dir_all(state_dir).map_err(|error| RuntimeError::Io {
        what: "creating",
        path: state_dir.to_path_buf(),
        error,
    })?;
    // The agent signals the container, never the shim; a terminal's ^C must not stop it.
    for sig in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
        sys::set_ignored(sig, true).map_err(|errno| RuntimeError::Sys {
            what: format!("ignoring {sig}"),
            errno,
        })?;
    }
    let mut log = match CriLogWriter::open(&cfg.log) {
        Ok(l) => l,
        Err(e) => {
            put(state_dir, "finished", &now())?;
            put(state_dir, "error", &e.to_string())?;
            return Err(e);
        }
    };
    let cgroup = cfg.cgroup.as_ref().map(|c| cgroup::detect(&c.path));
    let result = start(cfg, cgroup.as_ref());
    let outcome = match result {
        Err(message) => {
            tracing::warn!(container = %cfg.id, %message, "container did not start");
            let _ = log.message(Stream::Stderr, &message);
            put(state_dir, "finished", &now())?;
            put(state_dir, "error", &message)
        }
        Ok(mut started) => {
            let hub = match attach::listen(state_dir) {
                Ok(l) => Some(attach::Hub::new(
                    l,
                    state_dir.join(attach::SOCKET),
                    started.stdin.take(),
                    started.master.as_ref().and_then(|m| m.try_clone().ok()),
                )),
                Err(e) => {
                    tracing::warn!(container = %cfg.id, error = %e, "no attach socket");
                    None
                }
            };
            put(state_dir, "started", &now())?;
            put(state_dir, "pid", &started.pid.to_string())?;
            let status = pump(started, &mut log, hub);
            let code = match status {
                WaitStatus::Exited(_, code) => code,
                WaitStatus::Signaled(_, sig, _) => 128 + sig as i32,
                _ => 128,
            };
            let reason = if cgroup.as_ref().is_some_and(|c| c.oom_killed()) {
                "OOMKilled"
            } else if code == 0 {
                "Completed"
            } else {
                "Error"
            };
            put(state_dir, "finished", &now())?;
            put(state_dir, "reason", reason)?;
            put(state_dir, "exit", &code.to_string())
        }
    };
    if let Some(c) = &cgroup {
        if let Err(e) = c.remove() {
            tracing::warn!(container = %cfg.id, error = %e, "removing the cgroup");
        }
    }
    outcome
}

/// A container whose command was exec'd.
struct Started {
    pid: Pid,
    /// Its output: stdout and stderr pipes, or the terminal's master (all stdout).
    outputs: Vec<(OwnedFd, Stream)>,
    /// The shim's end of its stdin, for attach.
    stdin: Option<attach::Stdin>,
    /// The terminal's master, for window sizes.
    master: Option<OwnedFd>,
}

fn pipe() -> Result<(OwnedFd, OwnedFd), String> {
    nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| format!("creating a pipe: {}", errno_text(e)))
}

fn dup(fd: &OwnedFd) -> Result<OwnedFd, String> {
    fd.try_clone()
        .map_err(|e| format!("duplicating a descriptor: {}", super::io_text(&e)))
}

/// The container's stdin, stdout and stderr (child's ends) and the shim's ends.
struct Stdio {
    child: (OwnedFd, OwnedFd, OwnedFd),
    outputs: Vec<(OwnedFd, Stream)>,
    stdin: Option<attach::Stdin>,
    master: Option<OwnedFd>,
}

fn stdio(cfg: &ContainerConfig) -> Result<Stdio, String> {
    if cfg.tty {
        let (master, slave) = super::pty::open()?;
        let child = (dup(&slave)?, dup(&slave)?, slave);
        let stdin = attach::Stdin {
            fd: dup(&master)?,
            tty: true,
            once: cfg.stdin_once,
        };
        return Ok(Stdio {
            child,
            outputs: vec![(dup(&master)?, Stream::Stdout)],
            stdin: cfg.stdin.then_some(stdin),
            master: Some(master),
        });
    }
    let (stdin_r, stdin) = if cfg.stdin {
        let (r, w) = pipe()?;
        (
            r,
            Some(attach::Stdin {
                fd: w,
                tty: false,
                once: cfg.stdin_once,
            }),
        )
    } else {
        let null = nix::fcntl::open(
            "/dev/null",
            OFlag::O_RDONLY | OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .map_err(|e| format!("opening /dev/null: {}", errno_text(e)))?;
        (null, None)
    };
    let (out_r, out_w) = pipe()?;
    let (err_r, err_w) = pipe()?;
    Ok(Stdio {
        child: (stdin_r, out_w, err_w),
        outputs: vec![(out_r, Stream::Stdout), (err_r, Stream::Stderr)],
        stdin,
        master: None,
    })
}

/// Makes the cgroup, forks the container and waits until it exec'd (or failed to).
fn start(cfg: &ContainerConfig, cgroup: Option<&AnyManager>) -> Result<Started, String> {
    if cfg.argv.is_empty() {
        return Err("no command given".into());
    }
    let steps = mounts::plan_mounts(cfg).map_err(|e| e.to_string())?;
    let caps = if cfg.privileged {
        None
    } else {
        Some(caps::container_set(&cfg.cap_add, &cfg.cap_drop).map_err(|e| e.to_string())?)
    };
    if let (Some(m), Some(c)) = (cgroup, &cfg.cgroup) {
        m.apply(c)
            .map_err(|e| format!("creating the cgroup: {e}"))?;
    }
    match &cfg.pidns {
        None => nix::sched::unshare(CloneFlags::CLONE_NEWPID)
            .map_err(|e| format!("creating the PID namespace: {}", errno_text(e)))?,
        Some(p) => {
            let f = std::fs::File::open(p)
                .map_err(|e| format!("opening {}: {}", p.display(), super::io_text(&e)))?;
            nix::sched::setns(&f, CloneFlags::CLONE_NEWPID).map_err(|e| {
                format!(
                    "joining the PID namespace {}: {}",
                    p.display(),
                    errno_text(e)
                )
            })?;
        }
    }
    let io = stdio(cfg)?;
    let (sync_r, sync_w) = pipe()?;
    let (report_r, report_w) = pipe()?;

    match sys::fork().map_err(|e| format!("fork: {}", errno_text(e)))? {
        ForkResult::Child => {
            drop((io.outputs, io.stdin, io.master, sync_w, report_r));
            let plan = ChildPlan {
                steps: &steps,
                caps,
            };
            let (stdin, stdout, stderr) = io.child;
            let fds = ChildFds {
                sync: sync_r,
                stdin,
                stdout,
                stderr,
                tty: cfg.tty,
            };
            let message = child::exec(cfg, &plan, fds);
            let _ = sys::write_all(&report_w, message.as_bytes());
            sys::exit_now(1)
        }
        ForkResult::Parent { child } => {
            drop((io.child, sync_r, report_w));
            let placed = match (cgroup, &cfg.cgroup) {
                (Some(m), Some(_)) => m.add_task(child.as_raw()),
                _ => Ok(()),
            };
            if let Err(e) = placed {
                // Closing the sync pipe unwritten makes the child give up.
                drop(sync_w);
                let _ = waitpid(child, None);
                return Err(format!("adding the container to its cgroup: {e}"));
            }
            if let Err(e) = sys::write_all(&sync_w, b"1") {
                let _ = waitpid(child, None);
                return Err(format!("starting the container: {}", errno_text(e)));
            }
            drop(sync_w);
            let report = sys::read_to_end(&report_r);
            if !report.is_empty() {
                let _ = waitpid(child, None);
                return Err(String::from_utf8_lossy(&report).into_owned());
            }
            Ok(Started {
                pid: child,
                outputs: io.outputs,
                stdin: io.stdin,
                master: io.master,
            })
        }
    }
}

/// What a polled descriptor of the pump stands for.
#[derive(Clone, Copy)]
enum Token {
    Output(usize),
    Pid,
    Attach(attach::Token),
}

/// Copies the container's output into the log (and to attached clients) until every
/// output is closed and the process has exited (or, after its exit, until
/// `DRAIN_AFTER_EXIT` passes without them closing: a grandchild holding them must not
/// delay the exit being recorded). Serves attach clients meanwhile.
fn pump(c: Started, log: &mut CriLogWriter, mut hub: Option<attach::Hub>) -> WaitStatus {
    let pidfd = sys::pidfd_open(c.pid).ok();
    let streams: Vec<Stream> = c.outputs.iter().map(|(_, s)| *s).collect();
    let mut open: Vec<Option<OwnedFd>> = c.outputs.into_iter().map(|(fd, _)| Some(fd)).collect();
    let _keep_master = c.master;
    let mut status: Option<WaitStatus> = None;
    let mut exited_at: Option<Instant> = None;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        if status.is_none() {
            match waitpid(c.pid, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(Errno::EINTR) => {}
                Ok(s @ (WaitStatus::Exited(..) | WaitStatus::Signaled(..))) => {
                    status = Some(s);
                    exited_at = Some(Instant::now());
                }
                Ok(_) => {}
                Err(_) => {
                    // ECHILD: nothing to wait for any more.
                    status = Some(WaitStatus::Exited(c.pid, 128));
                    exited_at = Some(Instant::now());
                }
            }
        }
        let drained = open.iter().all(Option::is_none);
        if let Some(s) = status {
            let late = exited_at.is_some_and(|t| t.elapsed() >= DRAIN_AFTER_EXIT);
            if drained || late {
                for s in &streams {
                    let _ = log.finish(*s);
                }
                if let Some(h) = hub {
                    h.finish(Duration::from_secs(1));
                }
                return s;
            }
        }
        let mut fds: Vec<PollFd> = Vec::with_capacity(8);
        let mut tokens: Vec<Token> = Vec::with_capacity(8);
        for (i, fd) in open.iter().enumerate() {
            if let Some(fd) = fd {
                fds.push(PollFd::new(fd.as_fd(), PollFlags::POLLIN));
                tokens.push(Token::Output(i));
            }
        }
        if status.is_none() {
            if let Some(p) = &pidfd {
                fds.push(PollFd::new(p.as_fd(), PollFlags::POLLIN));
                tokens.push(Token::Pid);
            }
        }
        if let Some(h) = &hub {
            for (fd, flags, t) in h.interest() {
                fds.push(PollFd::new(fd, flags));
                tokens.push(Token::Attach(t));
            }
        }
        let timeout = match (status, &pidfd) {
            (Some(_), _) => PollTimeout::from(50u16),
            // An incomplete line is written as a partial record after 100 ms of quiet.
            (None, _) if log.has_pending() => PollTimeout::from(100u16),
            (None, Some(_)) => PollTimeout::from(1000u16),
            (None, None) => PollTimeout::from(100u16),
        };
        match nix::poll::poll(&mut fds, timeout) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
        let ready: Vec<(Token, PollFlags)> = fds
            .iter()
            .zip(tokens.iter())
            .filter_map(|(fd, t)| fd.revents().filter(|r| !r.is_empty()).map(|r| (*t, r)))
            .collect();
        drop(fds);
        let outputs: Vec<usize> = ready
            .iter()
            .filter_map(|(t, _)| match t {
                Token::Output(i) => Some(*i),
                _ => None,
            })
            .collect();
        let attach: Vec<(attach::Token, PollFlags)> = ready
            .iter()
            .filter_map(|(t, r)| match t {
                Token::Attach(a) => Some((*a, *r)),
                _ => None,
            })
            .collect();
        if outputs.is_empty() && log.has_pending() {
            if let Err(e) = log.flush_partial() {
                tracing::warn!(error = %e, "writing the container log");
            }
        }
        for i in outputs {
            let Some(fd) = &open[i] else { continue };
            match nix::unistd::read(fd.as_fd(), &mut buf) {
                Ok(0) => {
                    open[i] = None;
                    let _ = log.finish(streams[i]);
                }
                Ok(n) => {
                    if let Err(e) = log.write(streams[i], &buf[..n]) {
                        tracing::warn!(error = %e, "writing the container log");
                    }
                    if let Some(h) = &mut hub {
                        let kind = match streams[i] {
                            Stream::Stdout => attach::STDOUT,
                            Stream::Stderr => attach::STDERR,
                        };
                        h.output(kind, &buf[..n]);
                    }
                }
                Err(Errno::EINTR | Errno::EAGAIN) => {}
                // EIO from a terminal's master: every slave end is closed.
                Err(_) => {
                    open[i] = None;
                    let _ = log.finish(streams[i]);
                }
            }
        }
        if let Some(h) = &mut hub {
            if !attach.is_empty() {
                h.ready(&attach);
            }
        }
    }
}

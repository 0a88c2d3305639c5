//! The supervisor: starts a cluster's processes, restarts them with back-off when they
//! exit, and stops them all on SIGTERM. It runs as `kins supervise --cluster <name>`.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::{io_err, LabError};

/// One supervised process.
#[derive(Debug, Clone)]
pub struct ChildSpec {
    pub name: String,
    pub argv: Vec<String>,
    pub log: PathBuf,
}

struct Running {
    spec: ChildSpec,
    child: Option<Child>,
    failures: u32,
    next_start: Instant,
    started: Instant,
}

fn spawn(spec: &ChildSpec) -> Result<Child, LabError> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&spec.log)
        .map_err(io_err(&spec.log))?;
    let err = log.try_clone().map_err(io_err(&spec.log))?;
    let (exe, args) = spec
        .argv
        .split_first()
        .ok_or_else(|| LabError::Other(format!("{}: empty command", spec.name)))?;
    Command::new(exe)
        .args(args)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(err)
        .spawn()
        .map_err(io_err(std::path::Path::new(exe)))
}

/// Back-off after `failures` quick exits: 100 ms doubling up to 10 s.
pub fn backoff(failures: u32) -> Duration {
    Duration::from_millis(100u64.saturating_mul(1 << failures.min(7))).min(Duration::from_secs(10))
}

fn terminate(k: &mut Running, deadline: Instant) {
    if let Some(c) = &mut k.child {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(c.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        while Instant::now() < deadline {
            if let Ok(Some(_)) = c.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = c.kill();
        let _ = c.wait();
    }
    k.child = None;
}

fn fresh(spec: ChildSpec) -> Running {
    Running {
        spec,
        child: None,
        failures: 0,
        next_start: Instant::now(),
        started: Instant::now(),
    }
}

/// Runs the children `specs()` names until `stop` is set, then terminates them (SIGTERM,
/// then SIGKILL). When `reload` is set, `specs()` is asked again: children no longer named
/// are stopped, new ones started, changed ones restarted.
pub fn run(
    mut specs: impl FnMut() -> Vec<ChildSpec>,
    stop: Arc<AtomicBool>,
    reload: Arc<AtomicBool>,
) -> Result<(), LabError> {
    let mut kids: Vec<Running> = specs().into_iter().map(fresh).collect();
    while !stop.load(Ordering::SeqCst) {
        if reload.swap(false, Ordering::SeqCst) {
            let want = specs();
            let deadline = Instant::now() + Duration::from_secs(5);
            for k in &mut kids {
                let keep = want
                    .iter()
                    .any(|w| w.name == k.spec.name && w.argv == k.spec.argv);
                if !keep {
                    tracing::info!(process = %k.spec.name, "stopping (no longer wanted)");
                    terminate(k, deadline);
                }
            }
            kids.retain(|k| {
                want.iter()
                    .any(|w| w.name == k.spec.name && w.argv == k.spec.argv)
            });
            for w in want {
                if !kids.iter().any(|k| k.spec.name == w.name) {
                    kids.push(fresh(w));
                }
            }
        }
        for k in &mut kids {
            if let Some(c) = &mut k.child {
                if let Ok(Some(status)) = c.try_wait() {
                    tracing::warn!(process = %k.spec.name, %status, "exited; restarting");
                    k.child = None;
                    if k.started.elapsed() < Duration::from_secs(10) {
                        k.failures += 1;
                    } else {
                        k.failures = 0;
                    }
                    k.next_start = Instant::now() + backoff(k.failures);
                }
            }
            if k.child.is_none() && Instant::now() >= k.next_start {
                match spawn(&k.spec) {
                    Ok(c) => {
                        tracing::info!(process = %k.spec.name, pid = c.id(), "started");
                        k.child = Some(c);
                        k.started = Instant::now();
                    }
                    Err(e) => {
                        tracing::error!(process = %k.spec.name, error = %e, "could not start");
                        k.failures += 1;
                        k.next_start = Instant::now() + backoff(k.failures);
                    }
                }
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    for k in &kids {
        if let Some(c) = &k.child {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(c.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    for k in &mut kids {
        terminate(k, deadline);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_caps() {
        assert_eq!(backoff(0), Duration::from_millis(100));
        assert_eq!(backoff(1), Duration::from_millis(200));
        assert_eq!(backoff(20), Duration::from_secs(10));
    }

    #[test]
    fn restarts_a_child_that_exits() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("log");
        let spec = ChildSpec {
            name: "echo".into(),
            argv: vec!["/bin/sh".into(), "-c".into(), "echo run".into()],
            log: log.clone(),
        };
        let stop = Arc::new(AtomicBool::new(false));
        let s2 = stop.clone();
        let t = std::thread::spawn(move || {
            run(
                move || vec![spec.clone()],
                s2,
                Arc::new(AtomicBool::new(false)),
            )
        });
        // Wait until it has run at least twice (restart after exit).
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            let n = std::fs::read_to_string(&log)
                .unwrap_or_default()
                .matches("run")
                .count();
            if n >= 2 {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        stop.store(true, Ordering::SeqCst);
        t.join().expect("join").expect("run");
        let n = std::fs::read_to_string(&log)
            .expect("log")
            .matches("run")
            .count();
        assert!(n >= 2, "the child ran {n} times");
    }
}

//! Finding and stopping a cluster's processes by their arguments: every kins process of a
//! cluster runs as `kins <role> --cluster <name> ...`.

use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// A process of a cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proc {
    pub pid: i32,
    /// The kins subcommand (`supervise`, `apiserver`, ...).
    pub role: String,
    /// The whole command line.
    pub args: Vec<String>,
}

/// Whether an argv belongs to cluster `name`: argv[0] is a kins binary and `--cluster name`
/// (or `--cluster=name`) is among the arguments.
pub fn belongs(argv: &[String], name: &str) -> Option<String> {
    let exe = argv.first()?;
    let base = exe.rsplit('/').next().unwrap_or(exe);
    if base != "kins" {
        return None;
    }
    let mine = argv.windows(2).any(|w| w[0] == "--cluster" && w[1] == name)
        || argv
            .iter()
            .any(|a| a.strip_prefix("--cluster=") == Some(name));
    // The role is the subcommand: the first argument that is neither an option nor the
    // value of a global option.
    let mut role = String::new();
    let mut skip = false;
    for a in &argv[1..] {
        if skip {
            skip = false;
        } else if a == "--data-dir" {
            skip = true;
        } else if !a.starts_with('-') {
            role = a.clone();
            break;
        }
    }
    mine.then_some(role)
}

/// Every live process of the cluster, this one excluded.
pub fn find(name: &str) -> Vec<Proc> {
    let me = std::process::id() as i32;
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(raw) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let argv: Vec<String> = raw
            .split(|b| *b == 0)
            .filter(|s| !s.is_empty())
            .map(|s| String::from_utf8_lossy(s).into_owned())
            .collect();
        if let Some(role) = belongs(&argv, name) {
            out.push(Proc {
                pid,
                role,
                args: argv,
            });
        }
    }
    out
}

fn alive(pid: i32) -> bool {
    // A zombie is dead for our purposes.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => !s
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// Sends SIGTERM to every process of the cluster, waits up to `grace`, then SIGKILLs what
/// is left. Returns how many processes there were.
pub fn stop_all(name: &str, grace: Duration) -> usize {
    stop_matching(name, grace, |_| true)
}

/// `stop_all` for the processes of the cluster that `pick` selects.
pub fn stop_matching(name: &str, grace: Duration, pick: impl Fn(&Proc) -> bool) -> usize {
    let mine = |name: &str| -> Vec<Proc> { find(name).into_iter().filter(|p| pick(p)).collect() };
    let procs = mine(name);
    for p in &procs {
        let _ = kill(Pid::from_raw(p.pid), Signal::SIGTERM);
    }
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline && procs.iter().any(|p| alive(p.pid)) {
        std::thread::sleep(Duration::from_millis(20));
    }
    for p in mine(name) {
        let _ = kill(Pid::from_raw(p.pid), Signal::SIGKILL);
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline && !mine(name).iter().all(|p| !alive(p.pid)) {
        std::thread::sleep(Duration::from_millis(20));
    }
    procs.len()
}

/// Processes whose network namespace is one of these namespace files (a node's or a
/// pod's): the agents and containers, even when their shims were killed and nothing else
/// leads to them.
pub fn in_netns(netns_files: &[std::path::PathBuf]) -> Vec<i32> {
    use std::os::unix::fs::MetadataExt;
    let ids: Vec<(u64, u64)> = netns_files
        .iter()
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| (m.dev(), m.ino()))
        .collect();
    if ids.is_empty() {
        return Vec::new();
    }
    let me = std::process::id() as i32;
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        if pid == me {
            continue;
        }
        if let Ok(m) = std::fs::metadata(entry.path().join("ns/net")) {
            if ids.contains(&(m.dev(), m.ino())) {
                out.push(pid);
            }
        }
    }
    out
}

/// SIGTERM, then after `grace` SIGKILL, to every process inside these namespaces.
pub fn kill_in_netns(netns_files: &[std::path::PathBuf], grace: Duration) -> usize {
    let pids = in_netns(netns_files);
    for p in &pids {
        let _ = kill(Pid::from_raw(*p), Signal::SIGTERM);
    }
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline && pids.iter().any(|p| alive(*p)) {
        std::thread::sleep(Duration::from_millis(20));
    }
    for p in in_netns(netns_files) {
        let _ = kill(Pid::from_raw(p), Signal::SIGKILL);
    }
    pids.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(s: &str) -> Vec<String> {
        s.split(' ').map(str::to_string).collect()
    }

    #[test]
    fn matching() {
        assert_eq!(
            belongs(&argv("/usr/bin/kins apiserver --cluster a --x"), "a"),
            Some("apiserver".into())
        );
        assert_eq!(
            belongs(&argv("kins supervise --cluster=a"), "a"),
            Some("supervise".into())
        );
        assert_eq!(belongs(&argv("kins apiserver --cluster ab"), "a"), None);
        assert_eq!(belongs(&argv("/bin/sleep --cluster a"), "a"), None);
        assert_eq!(belongs(&argv("kins apiserver --name a"), "a"), None);
    }
}

//! The container side of the fork: joins the namespaces, builds the root filesystem, drops
//! to the container's user and capabilities and execs the command. Runs in the freshly
//! forked child of the single-threaded shim; every failure comes back as a message in
//! runc's or Go's wording, which the shim records.

use std::ffi::CString;
use std::os::fd::OwnedFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use nix::sched::CloneFlags;
use nix::unistd::{Gid, Uid};

use super::mounts::{Applier, Step};
use super::{caps, errno_text, io_text, sys, ContainerConfig};

/// PATH when the container's environment has none (runc's default).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The descriptors the child needs.
pub struct ChildFds {
    /// Read end of the sync pipe: one byte once the parent has put us in the cgroup.
    pub sync: OwnedFd,
    pub stdin: OwnedFd,
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
    /// stdin is a terminal: it becomes the controlling terminal of a new session.
    pub tty: bool,
}

/// What the child needs besides the config, computed by the parent.
pub struct ChildPlan<'a> {
    pub steps: &'a [Step],
    /// The capability set; None: privileged (keep the bounding set).
    pub caps: Option<u64>,
}

/// Sets up and execs the container; returns only with the reason it could not.
pub fn exec(cfg: &ContainerConfig, plan: &ChildPlan<'_>, fds: ChildFds) -> String {
    match setup_and_exec(cfg, plan, fds) {
        Ok(never) => match never {},
        Err(message) => message,
    }
}

fn setup_and_exec(
    cfg: &ContainerConfig,
    plan: &ChildPlan<'_>,
    fds: ChildFds,
) -> Result<std::convert::Infallible, String> {
    let mut go = [0u8; 1];
    match nix::unistd::read(&fds.sync, &mut go) {
        Ok(1) => {}
        _ => return Err("the shim gave up before the start".into()),
    }
    drop(fds.sync);

    for (path, flag, what) in [
        (&cfg.netns, CloneFlags::CLONE_NEWNET, "network"),
        (&cfg.ipcns, CloneFlags::CLONE_NEWIPC, "IPC"),
        (&cfg.utsns, CloneFlags::CLONE_NEWUTS, "UTS"),
    ] {
        if let Some(path) = path {
            join(path, flag, what)?;
        }
    }

    if let Some(rootfs) = &cfg.rootfs {
        nix::sched::unshare(CloneFlags::CLONE_NEWNS)
            .map_err(|e| format!("creating the mount namespace: {}", errno_text(e)))?;
        let applier = Applier {
            root: rootfs.merged.clone(),
        };
        for step in plan.steps {
            applier.apply(step)?;
        }
    }
    let cwd = if cfg.cwd.is_empty() { "/" } else { &cfg.cwd };
    if cfg.rootfs.is_some() || !cfg.cwd.is_empty() {
        nix::unistd::chdir(cwd).map_err(|e| {
            format!(
                "chdir to cwd ({cwd:?}) set in config.json failed: {}",
                errno_text(e)
            )
        })?;
    }

    set_user_and_caps(cfg, plan.caps)?;

    nix::unistd::dup2_stdin(&fds.stdin).map_err(|e| format!("dup2 stdin: {}", errno_text(e)))?;
    nix::unistd::dup2_stdout(&fds.stdout).map_err(|e| format!("dup2 stdout: {}", errno_text(e)))?;
    nix::unistd::dup2_stderr(&fds.stderr).map_err(|e| format!("dup2 stderr: {}", errno_text(e)))?;
    drop(fds.stdin);
    drop(fds.stdout);
    drop(fds.stderr);
    if fds.tty {
        sys::take_controlling_tty()
            .map_err(|e| format!("setting the controlling terminal: {}", errno_text(e)))?;
    }
    sys::reset_signals().map_err(|e| format!("resetting signals: {}", errno_text(e)))?;
    // Everything but 0, 1, 2 closes at exec (the error pipe stays usable until then).
    sys::cloexec_from(3).map_err(|e| format!("close_range: {}", errno_text(e)))?;

    let argv0 = cfg.argv.first().ok_or("no command given")?;
    let program = look_path(argv0, &cfg.env)?;
    let cstr = |s: &str| CString::new(s).map_err(|_| format!("exec: {s:?}: contains a NUL byte"));
    let path = cstr(&program.to_string_lossy())?;
    let argv = cfg
        .argv
        .iter()
        .map(|a| cstr(a))
        .collect::<Result<Vec<_>, _>>()?;
    let env = cfg
        .env
        .iter()
        .map(|a| cstr(a))
        .collect::<Result<Vec<_>, _>>()?;
    match nix::unistd::execve(&path, &argv, &env) {
        Ok(never) => match never {},
        Err(e) => Err(format!("exec: {argv0:?}: {}", errno_text(e))),
    }
}

fn join(path: &Path, flag: CloneFlags, what: &str) -> Result<(), String> {
    let f = std::fs::File::open(path)
        .map_err(|e| format!("opening {}: {}", path.display(), io_text(&e)))?;
    nix::sched::setns(&f, flag).map_err(|e| {
        format!(
            "joining the {what} namespace {}: {}",
            path.display(),
            errno_text(e)
        )
    })
}

/// Groups, gid, uid, then the capability sets: bounding reduced to the container's set
/// (root gets exactly that set at exec), permitted = effective = the set, inheritable and
/// ambient empty (a non-root user thus ends with none after exec, like Docker).
pub(super) fn set_user_and_caps(cfg: &ContainerConfig, set: Option<u64>) -> Result<(), String> {
    let bounding: u64 = (0..caps::NAMES.len() as u32)
        .filter(|c| sys::capbset_has(*c))
        .fold(0, |m, c| m | 1 << c);
    let set = match set {
        Some(s) => {
            for cap in 0..caps::NAMES.len() as u32 {
                if bounding & (1 << cap) != 0 && s & (1 << cap) == 0 {
                    sys::capbset_drop(cap).map_err(|e| {
                        format!(
                            "dropping CAP_{} from the bounding set: {}",
                            caps::NAMES[cap as usize],
                            errno_text(e)
                        )
                    })?;
                }
            }
            s & bounding
        }
        None => bounding,
    };
    if cfg.no_new_privs {
        nix::sys::prctl::set_no_new_privs()
            .map_err(|e| format!("setting no_new_privs: {}", errno_text(e)))?;
    }
    let mut groups: Vec<Gid> = vec![Gid::from_raw(cfg.gid)];
    groups.extend(cfg.supplemental_groups.iter().map(|g| Gid::from_raw(*g)));
    groups.dedup();
    nix::unistd::setgroups(&groups).map_err(|e| format!("setgroups: {}", errno_text(e)))?;
    nix::unistd::setgid(Gid::from_raw(cfg.gid))
        .map_err(|e| format!("setgid {}: {}", cfg.gid, errno_text(e)))?;
    if cfg.uid != 0 {
        nix::sys::prctl::set_keepcaps(true)
            .map_err(|e| format!("setting keepcaps: {}", errno_text(e)))?;
    }
    nix::unistd::setuid(Uid::from_raw(cfg.uid))
        .map_err(|e| format!("setuid {}: {}", cfg.uid, errno_text(e)))?;
    sys::capset(set, set, 0).map_err(|e| format!("capset: {}", errno_text(e)))?;
    match sys::ambient_clear() {
        Ok(()) | Err(nix::errno::Errno::EINVAL) => Ok(()),
        Err(e) => Err(format!("clearing ambient capabilities: {}", errno_text(e))),
    }
}

enum Unusable {
    Missing(String),
    Denied,
}

fn check_executable(p: &Path) -> Result<(), Unusable> {
    match std::fs::metadata(p) {
        Ok(m) if m.is_dir() || m.permissions().mode() & 0o111 == 0 => Err(Unusable::Denied),
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => Err(Unusable::Denied),
        Err(e) => Err(Unusable::Missing(format!(
            "stat {}: {}",
            p.display(),
            io_text(&e)
        ))),
    }
}

/// Go's exec.LookPath inside the container: a name with a slash is used as is, others are
/// searched in the container's PATH.
pub fn look_path(argv0: &str, env: &[String]) -> Result<PathBuf, String> {
    if argv0.contains('/') {
        return match check_executable(Path::new(argv0)) {
            Ok(()) => Ok(PathBuf::from(argv0)),
            Err(Unusable::Denied) => Err(format!("exec: {argv0:?}: permission denied")),
            Err(Unusable::Missing(why)) => Err(format!("exec: {argv0:?}: {why}")),
        };
    }
    let path = env
        .iter()
        .rev()
        .find_map(|kv| kv.strip_prefix("PATH="))
        .unwrap_or(DEFAULT_PATH);
    let mut denied = false;
    for dir in path.split(':') {
        let dir = if dir.is_empty() { "." } else { dir };
        let candidate = Path::new(dir).join(argv0);
        match check_executable(&candidate) {
            Ok(()) => return Ok(candidate),
            Err(Unusable::Denied) => denied = true,
            Err(Unusable::Missing(_)) => {}
        }
    }
    if denied {
        Err(format!("exec: {argv0:?}: permission denied"))
    } else {
        Err(format!(
            "exec: {argv0:?}: executable file not found in $PATH"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn look_path_like_go() {
        let d = tempfile::tempdir().expect("tempdir");
        let bin = d.path().join("bin");
        std::fs::create_dir(&bin).expect("mkdir");
        let tool = bin.join("tool");
        std::fs::write(&tool, "#!/bin/sh\n").expect("write");
        std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let plain = bin.join("plain");
        std::fs::write(&plain, "").expect("write");
        let env = vec![format!("PATH=/nonexistent:{}", bin.display())];
        assert_eq!(look_path("tool", &env), Ok(tool.clone()));
        assert_eq!(
            look_path("nope", &env),
            Err("exec: \"nope\": executable file not found in $PATH".into())
        );
        assert_eq!(
            look_path(&plain.to_string_lossy(), &env),
            Err(format!(
                "exec: {:?}: permission denied",
                plain.display().to_string()
            ))
        );
        assert_eq!(
            look_path("/x/nope", &env),
            Err("exec: \"/x/nope\": stat /x/nope: no such file or directory".into())
        );
    }
}

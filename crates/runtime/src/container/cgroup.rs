//! Cgroups of containers, v1 and v2 behind one trait (`Manager`), picked by `detect`. The
//! limits are computed by pure functions (`v1_limits`, `v2_limits`); the kernel's files
//! are reached through `CgroupFs` so that unit tests check the writes with a fake.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::{CgroupConfig, RuntimeError};

/// Where cgroup filesystems are mounted.
pub const ROOT: &str = "/sys/fs/cgroup";
/// The v1 controllers kins uses (cpu and cpuacct may be one hierarchy).
pub const V1_CONTROLLERS: &[&str] = &["memory", "cpu", "cpuacct", "pids"];
/// CFS period, microseconds.
pub const CPU_PERIOD: u64 = 100_000;

/// The kernel's cgroup files.
pub trait CgroupFs {
    fn exists(&self, p: &Path) -> bool;
    fn create_dir_all(&self, p: &Path) -> std::io::Result<()>;
    fn write(&self, p: &Path, value: &str) -> std::io::Result<()>;
    fn read(&self, p: &Path) -> std::io::Result<String>;
    fn remove_dir(&self, p: &Path) -> std::io::Result<()>;
}

/// The real cgroup filesystem.
pub struct RealFs;

impl CgroupFs for RealFs {
    fn exists(&self, p: &Path) -> bool {
        p.exists()
    }
    fn create_dir_all(&self, p: &Path) -> std::io::Result<()> {
        std::fs::create_dir_all(p)
    }
    fn write(&self, p: &Path, value: &str) -> std::io::Result<()> {
        // One write(2) per value: cgroup files take one value per call.
        use std::io::Write;
        std::fs::OpenOptions::new()
            .write(true)
            .open(p)?
            .write_all(value.as_bytes())
    }
    fn read(&self, p: &Path) -> std::io::Result<String> {
        std::fs::read_to_string(p)
    }
    fn remove_dir(&self, p: &Path) -> std::io::Result<()> {
        std::fs::remove_dir(p)
    }
}

/// A container's cgroup.
pub trait Manager {
    /// Creates the cgroup (and its parents) and writes the limits.
    fn apply(&self, cfg: &CgroupConfig) -> Result<(), RuntimeError>;
    /// Moves a process into the cgroup.
    fn add_task(&self, pid: i32) -> Result<(), RuntimeError>;
    /// Whether the kernel OOM-killed a process of the cgroup.
    fn oom_killed(&self) -> bool;
    /// Kills what is left in the cgroup and removes it.
    fn remove(&self) -> Result<(), RuntimeError>;
}

/// cpu.shares of a CPU request (the kubelet's MilliCPUToShares).
pub fn cpu_shares(request_millis: Option<u64>) -> u64 {
    (request_millis.unwrap_or(0) * 1024 / 1000).max(2)
}

/// CFS quota of a CPU limit, microseconds per `CPU_PERIOD` (at least 1 ms, as the kubelet).
pub fn cpu_quota(limit_millis: u64) -> u64 {
    (limit_millis * CPU_PERIOD / 1000).max(1000)
}

/// (controller, file, value) for cgroup v1, in write order.
pub fn v1_limits(cfg: &CgroupConfig) -> Vec<(&'static str, &'static str, String)> {
    let mut out = Vec::new();
    if let Some(m) = cfg.memory_limit {
        out.push(("memory", "memory.limit_in_bytes", m.to_string()));
    }
    out.push((
        "cpu",
        "cpu.shares",
        cpu_shares(cfg.cpu_request_millis).to_string(),
    ));
    if let Some(l) = cfg.cpu_limit_millis {
        out.push(("cpu", "cpu.cfs_period_us", CPU_PERIOD.to_string()));
        out.push(("cpu", "cpu.cfs_quota_us", cpu_quota(l).to_string()));
    }
    if let Some(p) = cfg.pids_limit {
        out.push(("pids", "pids.max", pids_value(p)));
    }
    out
}

fn pids_value(p: i64) -> String {
    if p > 0 {
        p.to_string()
    } else {
        "max".to_string()
    }
}

/// (file, value) for cgroup v2, in write order. `memory.swap.max` is written only where
/// the kernel has it (see `V2::apply`).
pub fn v2_limits(cfg: &CgroupConfig) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    if let Some(m) = cfg.memory_limit {
        out.push(("memory.max", m.to_string()));
        out.push(("memory.swap.max", "0".to_string()));
    }
    // The runc conversion of shares [2, 262144] to weight [1, 10000].
    let shares = cpu_shares(cfg.cpu_request_millis);
    out.push((
        "cpu.weight",
        (1 + (shares - 2) * 9999 / 262_142).to_string(),
    ));
    if let Some(l) = cfg.cpu_limit_millis {
        out.push(("cpu.max", format!("{} {CPU_PERIOD}", cpu_quota(l))));
    }
    if let Some(p) = cfg.pids_limit {
        out.push(("pids.max", pids_value(p)));
    }
    out
}

fn io_err(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> RuntimeError {
    let path = path.to_path_buf();
    move |error| RuntimeError::Io { what, path, error }
}

/// The `oom_kill N` counter of a memory.oom_control (v1) or memory.events (v2) file.
pub fn oom_kills(text: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix("oom_kill "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

/// Cgroup v1: one directory per controller hierarchy.
pub struct V1<F: CgroupFs> {
    pub fs: F,
    /// <mount>/<controller>/<rel> for each hierarchy present (cpu and cpuacct once if
    /// they are one hierarchy).
    pub dirs: Vec<(&'static str, PathBuf)>,
}

impl V1<RealFs> {
    pub fn new(root: &Path, rel: &str) -> V1<RealFs> {
        let mut dirs: Vec<(&'static str, PathBuf)> = Vec::new();
        let mut seen: Vec<PathBuf> = Vec::new();
        for c in V1_CONTROLLERS {
            let mount = root.join(c);
            let Ok(real) = std::fs::canonicalize(&mount) else {
                continue;
            };
            if seen.contains(&real) {
                continue;
            }
            seen.push(real);
            dirs.push((c, mount.join(rel)));
        }
        V1 { fs: RealFs, dirs }
    }
}

impl<F: CgroupFs> V1<F> {
    fn dir_of(&self, controller: &str) -> Option<&Path> {
        self.dirs
            .iter()
            .find(|(c, _)| *c == controller)
            .map(|(_, d)| d.as_path())
    }
}

impl<F: CgroupFs> Manager for V1<F> {
    fn apply(&self, cfg: &CgroupConfig) -> Result<(), RuntimeError> {
        for (_, dir) in &self.dirs {
            self.fs
                .create_dir_all(dir)
                .map_err(io_err("creating the cgroup", dir))?;
        }
        for (controller, file, value) in v1_limits(cfg) {
            let Some(dir) = self.dir_of(controller) else {
                continue;
            };
            let p = dir.join(file);
            self.fs.write(&p, &value).map_err(io_err("writing", &p))?;
        }
        Ok(())
    }

    fn add_task(&self, pid: i32) -> Result<(), RuntimeError> {
        for (_, dir) in &self.dirs {
            let p = dir.join("cgroup.procs");
            self.fs
                .write(&p, &pid.to_string())
                .map_err(io_err("writing", &p))?;
        }
        Ok(())
    }

    fn oom_killed(&self) -> bool {
        self.dir_of("memory")
            .and_then(|d| self.fs.read(&d.join("memory.oom_control")).ok())
            .is_some_and(|t| oom_kills(&t) > 0)
    }

    fn remove(&self) -> Result<(), RuntimeError> {
        for (_, dir) in &self.dirs {
            remove_dir_killing(&self.fs, dir)?;
        }
        Ok(())
    }
}

/// Cgroup v2: one directory in the unified hierarchy.
pub struct V2<F: CgroupFs> {
    pub fs: F,
    pub root: PathBuf,
    pub rel: PathBuf,
}

impl<F: CgroupFs> V2<F> {
    fn dir(&self) -> PathBuf {
        self.root.join(&self.rel)
    }
}

impl<F: CgroupFs> Manager for V2<F> {
    fn apply(&self, cfg: &CgroupConfig) -> Result<(), RuntimeError> {
        // Enable the controllers for the children of the root and of every ancestor.
        let mut dir = self.root.clone();
        for part in self.rel.components() {
            let control = dir.join("cgroup.subtree_control");
            let available = self
                .fs
                .read(&dir.join("cgroup.controllers"))
                .unwrap_or_default();
            let enable: Vec<String> = ["memory", "cpu", "pids"]
                .iter()
                .filter(|c| available.split_whitespace().any(|a| a == **c))
                .map(|c| format!("+{c}"))
                .collect();
            if !enable.is_empty() {
                self.fs
                    .write(&control, &enable.join(" "))
                    .map_err(io_err("writing", &control))?;
            }
            dir.push(part);
            self.fs
                .create_dir_all(&dir)
                .map_err(io_err("creating the cgroup", &dir))?;
        }
        for (file, value) in v2_limits(cfg) {
            let p = dir.join(file);
            if file == "memory.swap.max" && !self.fs.exists(&p) {
                continue;
            }
            self.fs.write(&p, &value).map_err(io_err("writing", &p))?;
        }
        Ok(())
    }

    fn add_task(&self, pid: i32) -> Result<(), RuntimeError> {
        let p = self.dir().join("cgroup.procs");
        self.fs
            .write(&p, &pid.to_string())
            .map_err(io_err("writing", &p))
    }

    fn oom_killed(&self) -> bool {
        self.fs
            .read(&self.dir().join("memory.events"))
            .is_ok_and(|t| oom_kills(&t) > 0)
    }

    fn remove(&self) -> Result<(), RuntimeError> {
        remove_dir_killing(&self.fs, &self.dir())
    }
}

/// The manager for this machine: v2 when the unified hierarchy is mounted at `ROOT`.
pub enum AnyManager {
    V1(V1<RealFs>),
    V2(V2<RealFs>),
}

/// Whether `ROOT` is a cgroup v2 (unified) mount.
pub fn is_v2() -> bool {
    Path::new(ROOT).join("cgroup.controllers").exists()
}

pub fn detect(rel: &str) -> AnyManager {
    if is_v2() {
        AnyManager::V2(V2 {
            fs: RealFs,
            root: PathBuf::from(ROOT),
            rel: PathBuf::from(rel),
        })
    } else {
        AnyManager::V1(V1::new(Path::new(ROOT), rel))
    }
}

impl Manager for AnyManager {
    fn apply(&self, cfg: &CgroupConfig) -> Result<(), RuntimeError> {
        match self {
            AnyManager::V1(m) => m.apply(cfg),
            AnyManager::V2(m) => m.apply(cfg),
        }
    }
    fn add_task(&self, pid: i32) -> Result<(), RuntimeError> {
        match self {
            AnyManager::V1(m) => m.add_task(pid),
            AnyManager::V2(m) => m.add_task(pid),
        }
    }
    fn oom_killed(&self) -> bool {
        match self {
            AnyManager::V1(m) => m.oom_killed(),
            AnyManager::V2(m) => m.oom_killed(),
        }
    }
    fn remove(&self) -> Result<(), RuntimeError> {
        match self {
            AnyManager::V1(m) => m.remove(),
            AnyManager::V2(m) => m.remove(),
        }
    }
}

/// Removes one cgroup directory (which must have no child cgroups): kills the tasks still
/// in it and retries rmdir for up to 2 s while it is busy. A missing directory is fine.
fn remove_dir_killing<F: CgroupFs>(fs: &F, dir: &Path) -> Result<(), RuntimeError> {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        match fs.remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) if Instant::now() >= deadline => {
                return Err(RuntimeError::Io {
                    what: "removing the cgroup",
                    path: dir.to_path_buf(),
                    error: e,
                })
            }
            Err(_) => {
                let procs = fs.read(&dir.join("cgroup.procs")).unwrap_or_default();
                for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

/// Every directory of a tree, children before parents.
fn dirs_bottom_up(dir: &Path, out: &mut Vec<PathBuf>) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                dirs_bottom_up(&e.path(), out);
            }
        }
    }
    out.push(dir.to_path_buf());
}

/// Removes the directory `rel` in every hierarchy if it is empty (no child cgroups, no
/// tasks); anything else is left alone. For the shared `kins` parent of all clusters.
pub fn remove_empty(rel: &str) {
    let tops: Vec<PathBuf> = match detect(rel) {
        AnyManager::V2(m) => vec![m.dir()],
        AnyManager::V1(m) => m.dirs.into_iter().map(|(_, d)| d).collect(),
    };
    for top in tops {
        let _ = std::fs::remove_dir(top);
    }
}

/// Removes the cgroup subtree `rel` (e.g. "kins/<cluster>") in every hierarchy, bottom-up,
/// killing the processes still in it. Missing directories are fine.
pub fn remove_tree(rel: &str) -> Result<(), RuntimeError> {
    let rel = rel.trim_matches('/');
    if rel.is_empty() || rel.split('/').any(|p| p == ".." || p == ".") {
        return Err(RuntimeError::Config(format!(
            "refusing to remove the cgroup tree {rel:?}"
        )));
    }
    let tops: Vec<PathBuf> = match detect(rel) {
        AnyManager::V2(m) => vec![m.dir()],
        AnyManager::V1(m) => m.dirs.into_iter().map(|(_, d)| d).collect(),
    };
    for top in tops {
        if !top.exists() {
            continue;
        }
        let mut dirs = Vec::new();
        dirs_bottom_up(&top, &mut dirs);
        for d in dirs {
            remove_dir_killing(&RealFs, &d)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::collections::BTreeMap;

    /// Records writes; files in `files` exist and can be read.
    #[derive(Default)]
    struct FakeFs {
        files: RefCell<BTreeMap<PathBuf, String>>,
        writes: RefCell<Vec<String>>,
    }

    impl CgroupFs for &FakeFs {
        fn exists(&self, p: &Path) -> bool {
            self.files.borrow().contains_key(p)
        }
        fn create_dir_all(&self, p: &Path) -> std::io::Result<()> {
            self.writes
                .borrow_mut()
                .push(format!("mkdir {}", p.display()));
            Ok(())
        }
        fn write(&self, p: &Path, value: &str) -> std::io::Result<()> {
            self.writes
                .borrow_mut()
                .push(format!("{} = {value}", p.display()));
            Ok(())
        }
        fn read(&self, p: &Path) -> std::io::Result<String> {
            self.files
                .borrow()
                .get(p)
                .cloned()
                .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::NotFound))
        }
        fn remove_dir(&self, p: &Path) -> std::io::Result<()> {
            self.writes
                .borrow_mut()
                .push(format!("rmdir {}", p.display()));
            Ok(())
        }
    }

    fn cfg() -> CgroupConfig {
        CgroupConfig {
            path: "kins/t/pod/c1".into(),
            memory_limit: Some(33_554_432),
            cpu_limit_millis: Some(500),
            cpu_request_millis: Some(250),
            pids_limit: Some(100),
        }
    }

    fn check(writes: &RefCell<Vec<String>>, expect: &str) {
        assert_eq!(writes.borrow().join("\n"), expect.trim());
    }

    #[test]
    fn v1_writes() {
        let fake = FakeFs::default();
        let m = V1 {
            fs: &fake,
            dirs: vec![
                ("memory", "/cg/memory/kins/t/pod/c1".into()),
                ("cpu", "/cg/cpu/kins/t/pod/c1".into()),
                ("pids", "/cg/pids/kins/t/pod/c1".into()),
            ],
        };
        m.apply(&cfg()).expect("apply");
        m.add_task(42).expect("add");
        check(
            &fake.writes,
            r#"
mkdir /cg/memory/kins/t/pod/c1
mkdir /cg/cpu/kins/t/pod/c1
mkdir /cg/pids/kins/t/pod/c1
/cg/memory/kins/t/pod/c1/memory.limit_in_bytes = 33554432
/cg/cpu/kins/t/pod/c1/cpu.shares = 256
/cg/cpu/kins/t/pod/c1/cpu.cfs_period_us = 100000
/cg/cpu/kins/t/pod/c1/cpu.cfs_quota_us = 50000
/cg/pids/kins/t/pod/c1/pids.max = 100
/cg/memory/kins/t/pod/c1/cgroup.procs = 42
/cg/cpu/kins/t/pod/c1/cgroup.procs = 42
/cg/pids/kins/t/pod/c1/cgroup.procs = 42
"#,
        );
        assert!(!m.oom_killed());
        fake.files.borrow_mut().insert(
            "/cg/memory/kins/t/pod/c1/memory.oom_control".into(),
            "oom_kill_disable 0\nunder_oom 0\noom_kill 1\n".into(),
        );
        assert!(m.oom_killed());
    }

    #[test]
    fn v1_best_effort() {
        let c = CgroupConfig {
            path: "x".into(),
            ..Default::default()
        };
        assert_eq!(v1_limits(&c), vec![("cpu", "cpu.shares", "2".to_string())]);
        let tiny = CgroupConfig {
            cpu_limit_millis: Some(1),
            ..c
        };
        assert_eq!(
            v1_limits(&tiny)[2],
            ("cpu", "cpu.cfs_quota_us", "1000".into())
        );
    }

    #[test]
    fn v2_writes() {
        let fake = FakeFs::default();
        for (p, v) in [
            ("/cg/cgroup.controllers", "cpuset cpu io memory pids"),
            ("/cg/kins/cgroup.controllers", "cpu memory pids"),
            ("/cg/kins/t/cgroup.controllers", "cpu memory pids"),
            ("/cg/kins/t/pod/cgroup.controllers", "cpu memory pids"),
            ("/cg/kins/t/pod/c1/memory.swap.max", "max"),
            (
                "/cg/kins/t/pod/c1/memory.events",
                "low 0\noom 1\noom_kill 2\n",
            ),
        ] {
            fake.files.borrow_mut().insert(p.into(), v.into());
        }
        let m = V2 {
            fs: &fake,
            root: "/cg".into(),
            rel: "kins/t/pod/c1".into(),
        };
        m.apply(&cfg()).expect("apply");
        m.add_task(42).expect("add");
        check(
            &fake.writes,
            r#"
/cg/cgroup.subtree_control = +memory +cpu +pids
mkdir /cg/kins
/cg/kins/cgroup.subtree_control = +memory +cpu +pids
mkdir /cg/kins/t
/cg/kins/t/cgroup.subtree_control = +memory +cpu +pids
mkdir /cg/kins/t/pod
/cg/kins/t/pod/cgroup.subtree_control = +memory +cpu +pids
mkdir /cg/kins/t/pod/c1
/cg/kins/t/pod/c1/memory.max = 33554432
/cg/kins/t/pod/c1/memory.swap.max = 0
/cg/kins/t/pod/c1/cpu.weight = 10
/cg/kins/t/pod/c1/cpu.max = 50000 100000
/cg/kins/t/pod/c1/pids.max = 100
/cg/kins/t/pod/c1/cgroup.procs = 42
"#,
        );
        assert!(m.oom_killed());
    }

    #[test]
    fn remove_tree_refuses_the_root() {
        for rel in ["", "/", "kins/../x"] {
            assert!(matches!(remove_tree(rel), Err(RuntimeError::Config(_))));
        }
    }
}

//! `exec` into a running container on the real kernel (needs root; skipped otherwise): a
//! busybox root filesystem, a container started by this program re-executed as its shim
//! (`KINS_TEST_SHIM_STATE`), then commands run in it by this program re-executed as the
//! single-threaded exec helper (`KINS_TEST_EXEC_STATE`, `KINS_TEST_EXEC_TIMEOUT_MS`).
//!
//! `cargo test -p runtime --test exec`

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use runtime::container::{cgroup, exec, CgroupConfig, ContainerConfig, LogConfig, RootFs};

const SHIM_ENV: &str = "KINS_TEST_SHIM_STATE";
const EXEC_ENV: &str = "KINS_TEST_EXEC_STATE";
const TIMEOUT_ENV: &str = "KINS_TEST_EXEC_TIMEOUT_MS";
const BUSYBOX_APPLETS: &[&str] = &[
    "sh", "cat", "id", "sleep", "pwd", "test", "true", "echo", "hostname",
];

/// A running container and its shim.
struct Running {
    dir: tempfile::TempDir,
    state_dir: PathBuf,
    cfg: ContainerConfig,
    shim: Child,
}

/// What one exec gave.
#[derive(Debug)]
struct Outcome {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Running {
    fn start() -> Running {
        let dir = tempfile::tempdir().expect("tempdir");
        let layer = dir.path().join("layer");
        for d in ["bin", "etc", "tmp", "work"] {
            std::fs::create_dir_all(layer.join(d)).expect("mkdir");
        }
        std::fs::write(layer.join("etc/from-image"), "image\n").expect("write");
        std::fs::copy("/bin/busybox", layer.join("bin/busybox")).expect("copy busybox");
        for a in BUSYBOX_APPLETS {
            std::os::unix::fs::symlink("busybox", layer.join("bin").join(a)).expect("symlink");
        }
        let c = dir.path().join("c");
        let cfg = ContainerConfig {
            id: "exec-test".into(),
            argv: vec!["sleep".into(), "60".into()],
            env: vec!["PATH=/bin".into(), "FOO=from-config".into()],
            cwd: "/work".into(),
            uid: 1000,
            gid: 1000,
            supplemental_groups: vec![2000],
            rootfs: Some(RootFs {
                layers: vec![layer],
                upper: c.join("upper"),
                work: c.join("work"),
                merged: c.join("merged"),
            }),
            no_new_privs: true,
            cgroup: Some(CgroupConfig {
                path: format!("kins/test-exec-{}/pod/c", std::process::id()),
                ..Default::default()
            }),
            log: LogConfig {
                path: c.join("log/0.log"),
                max_size: 10 << 20,
                max_files: 5,
            },
            ..Default::default()
        };
        let state_dir = dir.path().join("state");
        std::fs::create_dir_all(&state_dir).expect("mkdir");
        std::fs::write(
            state_dir.join("config.json"),
            serde_json::to_vec(&cfg).expect("json"),
        )
        .expect("write config");
        let shim = Command::new(std::env::current_exe().expect("current exe"))
            .env(SHIM_ENV, &state_dir)
            .spawn()
            .expect("spawn the shim");
        let deadline = Instant::now() + Duration::from_secs(20);
        while exec::running_pid(&state_dir).is_none() {
            let error = std::fs::read_to_string(state_dir.join("error")).unwrap_or_default();
            assert!(error.is_empty(), "the container did not start: {error}");
            assert!(Instant::now() < deadline, "the container did not start");
            std::thread::sleep(Duration::from_millis(10));
        }
        Running {
            dir,
            state_dir,
            cfg,
            shim,
        }
    }

    fn exec(&self, argv: &[&str], timeout_ms: Option<u64>) -> Outcome {
        let mut cmd = Command::new(std::env::current_exe().expect("current exe"));
        cmd.env(EXEC_ENV, &self.state_dir).args(argv);
        if let Some(t) = timeout_ms {
            cmd.env(TIMEOUT_ENV, t.to_string());
        }
        let out = cmd.output().expect("run the exec helper");
        Outcome {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Kills the container and waits for its shim.
    fn stop(&mut self) {
        if let Some(pid) = exec::running_pid(&self.state_dir) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.shim.try_wait().expect("wait").is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

fn cases(c: &mut Running) {
    let check = |argv: &[&str], code: i32, stdout: &str| {
        let o = c.exec(argv, None);
        assert_eq!(
            (o.code, o.stdout.as_str()),
            (code, stdout),
            "{argv:?}: {o:?}"
        );
    };
    // The container's files, not the host's.
    check(&["cat", "/etc/from-image"], 0, "image\n");
    check(&["test", "-e", "/usr"], 1, "");
    // Its user, groups, working directory and environment.
    check(&["id", "-u"], 0, "1000\n");
    check(&["id", "-G"], 0, "1000 2000\n");
    check(&["pwd"], 0, "/work\n");
    check(&["sh", "-c", "echo $FOO"], 0, "from-config\n");
    check(
        &["sh", "-c", "grep CapEff /proc/self/status"],
        0,
        "CapEff:\t0000000000000000\n",
    );
    // Its PID namespace (pid 1 is the container's command) and its cgroup.
    check(&["cat", "/proc/1/cmdline"], 0, "sleep\u{0}60\u{0}");
    let cg = c.exec(&["cat", "/proc/self/cgroup"], None);
    let path = &c.cfg.cgroup.as_ref().expect("cgroup").path;
    assert!(cg.stdout.contains(path.as_str()), "{cg:?}");
    // Exit codes, signals.
    check(&["sh", "-c", "exit 7"], 7, "");
    check(&["sh", "-c", "kill -9 $$"], 137, "");
    // Commands that cannot run.
    let o = c.exec(&["nope"], None);
    assert_eq!(o.code, 127, "{o:?}");
    assert_eq!(
        o.stderr,
        "exec failed: unable to start container process: \
         exec: \"nope\": executable file not found in $PATH\n"
    );
    let o = c.exec(&["/etc/from-image"], None);
    assert_eq!(o.code, 126, "{o:?}");
    assert!(o.stderr.contains("permission denied"), "{o:?}");
    // The timeout.
    let t0 = Instant::now();
    let o = c.exec(&["sh", "-c", "sleep 30; echo late"], Some(300));
    assert_eq!(o.code, 137, "{o:?}");
    assert_eq!(o.stderr, "command timed out after 300ms\n");
    assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());
    check(&["true"], 0, "");
    // A stopped container.
    c.stop();
    let o = c.exec(&["true"], None);
    assert_eq!(
        (o.code, o.stderr.as_str()),
        (126, "cannot exec in a stopped container\n")
    );
}

fn main() {
    if let Some(state) = std::env::var_os(SHIM_ENV) {
        let state = PathBuf::from(state);
        let cfg = exec::read_config(&state).expect("config.json");
        if let Err(e) = runtime::container::shim::run(&cfg, &state) {
            eprintln!("shim: {e}");
            std::process::exit(1);
        }
        return;
    }
    if let Some(state) = std::env::var_os(EXEC_ENV) {
        let argv: Vec<String> = std::env::args().skip(1).collect();
        let timeout = std::env::var(TIMEOUT_ENV)
            .ok()
            .and_then(|t| t.parse().ok())
            .map(Duration::from_millis);
        let code = match exec::run(
            Path::new(&state),
            &argv,
            &exec::Options {
                timeout,
                tty: false,
            },
        ) {
            Ok(code) => code,
            Err(e) => {
                eprintln!("{e}");
                e.exit_code()
            }
        };
        std::process::exit(code);
    }
    if !nix::unistd::Uid::effective().is_root() || !Path::new("/bin/busybox").exists() {
        println!("exec tests skipped: they need root and /bin/busybox");
        return;
    }
    if std::env::args()
        .skip(1)
        .any(|a| !a.starts_with('-') && !"exec".contains(&a))
    {
        println!("test result: ok (filtered out)");
        return;
    }
    let started = Instant::now();
    let mut c = Running::start();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| cases(&mut c)));
    c.stop();
    let group = format!("kins/test-exec-{}", std::process::id());
    let cleanup = cgroup::remove_tree(&group);
    drop(c.dir);
    println!(
        "test exec ... {} ({:?})",
        if result.is_ok() { "ok" } else { "FAILED" },
        started.elapsed()
    );
    if let Err(e) = cleanup {
        println!("cleanup: {e}");
        std::process::exit(1);
    }
    if result.is_err() {
        println!("test result: FAILED");
        std::process::exit(1);
    }
    println!("test result: ok");
}

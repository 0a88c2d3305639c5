//! The shim on the real kernel (needs root; skipped otherwise): a busybox root filesystem
//! in a temporary directory, one container per case, run by this very program
//! re-executed as a single-threaded shim (`KINS_TEST_SHIM_STATE=<state dir>`).
//!
//! `cargo test -p runtime --test shim [filter]`

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use runtime::container::{cgroup, CgroupConfig, ContainerConfig, LogConfig, Mount, RootFs};

const SHIM_ENV: &str = "KINS_TEST_SHIM_STATE";
const BUSYBOX_APPLETS: &[&str] = &[
    "sh", "cat", "ls", "ps", "id", "sleep", "hostname", "mount", "echo", "grep", "head", "tr",
    "touch", "test", "true", "false", "wc", "stty", "tty",
];

struct Fixture {
    dir: tempfile::TempDir,
    layer: PathBuf,
    /// Every cgroup of this run lives under kins/<group>.
    group: String,
    n: std::cell::Cell<u32>,
}

/// What a finished container left behind.
struct Outcome {
    files: BTreeMap<String, String>,
    log: String,
    state_dir: PathBuf,
}

impl Outcome {
    fn file(&self, name: &str) -> &str {
        self.files.get(name).map(String::as_str).unwrap_or("")
    }

    /// The stdout lines of the log, without time stamps.
    fn stdout(&self) -> Vec<String> {
        self.lines("stdout")
    }

    fn lines(&self, stream: &str) -> Vec<String> {
        self.log
            .lines()
            .filter_map(|l| {
                let mut f = l.splitn(4, ' ');
                let (_, s, tag, rest) = (f.next()?, f.next()?, f.next()?, f.next()?);
                (s == stream && tag == "F").then(|| rest.to_string())
            })
            .collect()
    }
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().expect("tempdir");
        let layer = dir.path().join("layer");
        std::fs::create_dir_all(layer.join("bin")).expect("mkdir");
        std::fs::create_dir_all(layer.join("etc")).expect("mkdir");
        std::fs::create_dir_all(layer.join("tmp")).expect("mkdir");
        std::fs::write(layer.join("etc/from-image"), "image\n").expect("write");
        std::fs::copy("/bin/busybox", layer.join("bin/busybox")).expect("copy busybox");
        for a in BUSYBOX_APPLETS {
            std::os::unix::fs::symlink("busybox", layer.join("bin").join(a)).expect("symlink");
        }
        Fixture {
            dir,
            layer,
            group: format!("test-{}", std::process::id()),
            n: std::cell::Cell::new(0),
        }
    }

    fn config(&self, script: &str) -> ContainerConfig {
        let n = self.n.get() + 1;
        self.n.set(n);
        let c = self.dir.path().join(format!("c{n}"));
        ContainerConfig {
            id: format!("c{n}"),
            argv: vec!["sh".into(), "-c".into(), script.into()],
            env: vec!["PATH=/bin".into(), "HOME=/root".into()],
            rootfs: Some(RootFs {
                layers: vec![self.layer.clone()],
                upper: c.join("upper"),
                work: c.join("work"),
                merged: c.join("merged"),
            }),
            no_new_privs: true,
            cgroup: Some(CgroupConfig {
                path: format!("kins/{}/pod/c{n}", self.group),
                ..Default::default()
            }),
            log: LogConfig {
                path: c.join("log/0.log"),
                max_size: 10 << 20,
                max_files: 5,
            },
            ..Default::default()
        }
    }

    fn run(&self, cfg: &ContainerConfig) -> Outcome {
        let (child, state_dir) = self.spawn(cfg);
        self.wait(cfg, child, state_dir)
    }

    /// Starts the shim for `cfg`; returns it with its state directory.
    fn spawn(&self, cfg: &ContainerConfig) -> (std::process::Child, PathBuf) {
        let state_dir = self.dir.path().join(format!("state-{}", cfg.id));
        std::fs::create_dir_all(&state_dir).expect("mkdir");
        std::fs::write(
            state_dir.join("config.json"),
            serde_json::to_vec(cfg).expect("json"),
        )
        .expect("write config");
        let child = Command::new(std::env::current_exe().expect("current exe"))
            .env(SHIM_ENV, &state_dir)
            .spawn()
            .expect("spawn the shim");
        (child, state_dir)
    }

    fn wait(
        &self,
        cfg: &ContainerConfig,
        mut child: std::process::Child,
        state_dir: PathBuf,
    ) -> Outcome {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if child.try_wait().expect("wait").is_some() {
                break;
            }
            assert!(Instant::now() < deadline, "the shim did not finish");
            std::thread::sleep(Duration::from_millis(20));
        }
        let mut files = BTreeMap::new();
        for e in std::fs::read_dir(&state_dir).expect("read state").flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name != "config.json" {
                files.insert(name, std::fs::read_to_string(e.path()).unwrap_or_default());
            }
        }
        let log = std::fs::read_to_string(&cfg.log.path).unwrap_or_default();
        if let Some(cg) = &cfg.cgroup {
            for c in ["memory", "cpu", "pids"] {
                let d = Path::new(cgroup::ROOT).join(c).join(&cg.path);
                assert!(!d.exists(), "{} is left behind", d.display());
            }
        }
        Outcome {
            files,
            log,
            state_dir,
        }
    }
}

/// Connects to the attach socket of a running container (waits for its `pid` file).
fn attach(state_dir: &Path, with_stdin: bool) -> std::os::unix::net::UnixStream {
    use runtime::container::attach;
    use std::io::Write;
    use std::os::fd::AsFd;
    let deadline = Instant::now() + Duration::from_secs(20);
    while !state_dir.join("pid").exists() {
        assert!(Instant::now() < deadline, "the container did not start");
        std::thread::sleep(Duration::from_millis(10));
    }
    let dir = attach::open_dir(state_dir).expect("open the state dir");
    let mut s = std::os::unix::net::UnixStream::connect(attach::socket_path(dir.as_fd()))
        .expect("connect to the attach socket");
    s.write_all(&attach::encode(attach::HELLO, &[u8::from(with_stdin)]))
        .expect("hello");
    s
}

/// Every output frame until the shim closes the connection.
fn attached_output(s: &mut std::os::unix::net::UnixStream) -> Vec<(u8, String)> {
    use std::io::Read;
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let mut d = runtime::container::attach::Decoder::default();
    let mut buf = [0u8; 4096];
    let mut out: Vec<(u8, String)> = Vec::new();
    loop {
        while let Some((kind, p)) = d.next_frame().expect("frame") {
            let text = String::from_utf8_lossy(&p).into_owned();
            match out.last_mut() {
                Some((k, t)) if *k == kind => t.push_str(&text),
                _ => out.push((kind, text)),
            }
        }
        match s.read(&mut buf).expect("read the attached output") {
            0 => return out,
            n => d.push(&buf[..n]),
        }
    }
}

fn attach_to_stdin(f: &Fixture) {
    use runtime::container::attach;
    use std::io::Write;
    let mut cfg = f.config("read a; echo \"got $a\"; echo warn >&2; cat; echo done");
    cfg.stdin = true;
    cfg.stdin_once = true;
    let (child, state) = f.spawn(&cfg);
    let mut s = attach(&state, true);
    s.write_all(&attach::encode(attach::STDIN, b"one\ntwo\n"))
        .expect("stdin");
    s.write_all(&attach::encode(attach::STDIN_EOF, b""))
        .expect("eof");
    let frames = attached_output(&mut s);
    let o = f.wait(&cfg, child, state);
    assert_eq!(o.file("exit"), "0", "{}", o.log);
    let out: String = frames
        .iter()
        .filter(|(k, _)| *k == attach::STDOUT)
        .map(|(_, t)| t.as_str())
        .collect();
    let err: String = frames
        .iter()
        .filter(|(k, _)| *k == attach::STDERR)
        .map(|(_, t)| t.as_str())
        .collect();
    assert_eq!(out, "got one\ntwo\ndone\n");
    assert_eq!(err, "warn\n");
    // The log has it all as well.
    assert_eq!(o.stdout(), vec!["got one", "two", "done"]);
    assert!(
        !o.state_dir.join(attach::SOCKET).exists(),
        "socket left behind"
    );
}

fn attach_to_a_terminal(f: &Fixture) {
    use runtime::container::attach;
    use std::io::Write;
    // `read` first: the size is set by then.
    let mut cfg =
        f.config("read a; stty size; [ -t 0 ] && [ -t 1 ] && echo terminal; echo \"[$a]\"");
    cfg.stdin = true;
    cfg.tty = true;
    let (child, state) = f.spawn(&cfg);
    let mut s = attach(&state, true);
    s.write_all(&attach::resize(100, 30)).expect("resize");
    s.write_all(&attach::encode(attach::STDIN, b"typed\n"))
        .expect("stdin");
    let frames = attached_output(&mut s);
    let o = f.wait(&cfg, child, state);
    assert_eq!(o.file("exit"), "0", "{}", o.log);
    assert!(
        frames.iter().all(|(k, _)| *k == attach::STDOUT),
        "{frames:?}"
    );
    let out: String = frames.iter().map(|(_, t)| t.as_str()).collect();
    // The terminal echoes the input and ends lines with CR LF.
    assert_eq!(out, "typed\r\n30 100\r\nterminal\r\n[typed]\r\n");
}

fn output_exit_code_and_reason(f: &Fixture) {
    let o = f.run(&f.config("echo out; echo err >&2; printf partial; exit 3"));
    assert_eq!(o.file("exit"), "3");
    assert_eq!(o.file("reason"), "Error");
    assert!(o.file("started").ends_with('Z'), "{:?}", o.files);
    assert!(o.file("finished").ends_with('Z'));
    assert!(o.file("pid").parse::<i32>().is_ok());
    assert_eq!(o.stdout(), vec!["out", "partial"]);
    assert_eq!(o.lines("stderr"), vec!["err"]);
    assert!(!o.files.contains_key("error"));
    assert!(o.state_dir.join("exit").exists());
    let o = f.run(&f.config("true"));
    assert_eq!((o.file("exit"), o.file("reason")), ("0", "Completed"));
}

fn isolation(f: &Fixture) {
    let cfg = f.config(
        "ps -o pid,args; test -e /etc/debian_version && echo host-visible; \
         cat /etc/from-image; echo written > /etc/new; echo x > /dev/null && echo null-ok; \
         echo shm > /dev/shm/x && cat /dev/shm/x; head -c 3 /dev/zero | wc -c; \
         cat /proc/1/cmdline | tr '\\0' ' '; echo",
    );
    let o = f.run(&cfg);
    assert_eq!(o.file("exit"), "0", "{}", o.log);
    let out = o.stdout();
    // PID 1 is the container's command; only it and ps are visible.
    assert_eq!(out[0].split_whitespace().next(), Some("PID"), "{out:?}");
    assert!(out[1].trim_start().starts_with("1 sh -c ps"), "{out:?}");
    assert!(out[2].contains("ps -o pid,args"), "{out:?}");
    let rest: Vec<&str> = out[3..].iter().map(String::as_str).collect();
    assert_eq!(
        rest,
        vec![
            "image",
            "null-ok",
            "shm",
            "3",
            &format!("sh -c {} ", cfg.argv[2])
        ],
        "{out:?}"
    );
    let rootfs = cfg.rootfs.as_ref().expect("rootfs");
    assert_eq!(
        std::fs::read_to_string(rootfs.upper.join("etc/new")).expect("upper"),
        "written\n"
    );
    assert!(!f.layer.join("etc/new").exists(), "the layer was written");
}

fn capabilities(f: &Fixture) {
    let script = "grep -E '^Cap(Eff|Prm|Bnd)' /proc/self/status";
    let check = |mut cfg: ContainerConfig, expect: &[&str]| {
        cfg.no_new_privs = false;
        let o = f.run(&cfg);
        assert_eq!(o.file("exit"), "0", "{}", o.log);
        assert_eq!(o.stdout(), expect, "uid {} add {:?}", cfg.uid, cfg.cap_add);
    };
    check(
        f.config(script),
        &[
            "CapPrm:\t00000000a80425fb",
            "CapEff:\t00000000a80425fb",
            "CapBnd:\t00000000a80425fb",
        ],
    );
    let mut cfg = f.config(script);
    cfg.cap_add = vec!["NET_ADMIN".into()];
    cfg.cap_drop = vec!["CAP_KILL".into()];
    check(
        cfg,
        &[
            "CapPrm:\t00000000a80435db",
            "CapEff:\t00000000a80435db",
            "CapBnd:\t00000000a80435db",
        ],
    );
    let mut cfg = f.config(&format!("id -u; id -G; {script}"));
    cfg.uid = 1000;
    cfg.gid = 1000;
    cfg.supplemental_groups = vec![2000];
    check(
        cfg,
        &[
            "1000",
            "1000 2000",
            "CapPrm:\t0000000000000000",
            "CapEff:\t0000000000000000",
            "CapBnd:\t00000000a80425fb",
        ],
    );
    let mut cfg = f.config("grep CapEff /proc/self/status; touch /sys/kernel/x 2>&1 | wc -l");
    cfg.privileged = true;
    let host = std::fs::read_to_string("/proc/self/status")
        .expect("status")
        .lines()
        .find(|l| l.starts_with("CapBnd:"))
        .map(|l| l.replace("CapBnd:", "CapEff:"))
        .expect("CapBnd");
    let o = f.run(&cfg);
    assert_eq!(o.stdout()[0], host);
}

fn start_errors(f: &Fixture) {
    let mut cfg = f.config("");
    cfg.argv = vec!["nope".into()];
    let o = f.run(&cfg);
    let msg = "exec: \"nope\": executable file not found in $PATH";
    assert_eq!(o.file("error"), msg);
    assert!(o.file("finished").ends_with('Z'));
    assert!(!o.files.contains_key("exit") && !o.files.contains_key("pid"));
    assert_eq!(o.lines("stderr"), vec![msg]);

    cfg.argv = vec!["/etc/from-image".into()];
    let o = f.run(&cfg);
    assert_eq!(
        o.file("error"),
        "exec: \"/etc/from-image\": permission denied"
    );

    let mut cfg = f.config("true");
    cfg.cwd = "/missing".into();
    let o = f.run(&cfg);
    assert_eq!(
        o.file("error"),
        "chdir to cwd (\"/missing\") set in config.json failed: no such file or directory"
    );
}

fn oom_killed(f: &Fixture) {
    let mut cfg = f.config("x=$(head -c 200000000 /dev/zero | tr '\\0' a); echo survived");
    if let Some(cg) = cfg.cgroup.as_mut() {
        cg.memory_limit = Some(32 << 20);
        cg.pids_limit = Some(50);
        cg.cpu_limit_millis = Some(1000);
    }
    let o = f.run(&cfg);
    assert_eq!(o.file("reason"), "OOMKilled", "{}", o.log);
    assert_eq!(o.file("exit"), "137");
}

fn bind_mounts_and_read_only_root(f: &Fixture) {
    let vol = f.dir.path().join("vol");
    std::fs::create_dir_all(&vol).expect("mkdir");
    std::fs::write(vol.join("file"), "volume\n").expect("write");
    let hosts = f.dir.path().join("hosts");
    std::fs::write(&hosts, "127.0.0.1 localhost\n").expect("write");
    let mut cfg = f.config(
        "cat /ro/file; touch /ro/x 2>/dev/null || echo ro-refused; echo rw > /rw/new; \
         cat /etc/hosts; touch /rootfile 2>/dev/null || echo root-refused; \
         echo tmp > /dev/shm/ok && echo shm-ok",
    );
    cfg.mounts = vec![
        Mount {
            source: vol.clone(),
            destination: "/ro".into(),
            read_only: true,
        },
        Mount {
            source: vol.clone(),
            destination: "/rw".into(),
            read_only: false,
        },
        Mount {
            source: hosts,
            destination: "/etc/hosts".into(),
            read_only: true,
        },
    ];
    cfg.read_only_rootfs = true;
    let o = f.run(&cfg);
    assert_eq!(o.file("exit"), "0", "{}", o.log);
    assert_eq!(
        o.stdout(),
        vec![
            "volume",
            "ro-refused",
            "127.0.0.1 localhost",
            "root-refused",
            "shm-ok"
        ]
    );
    assert_eq!(
        std::fs::read_to_string(vol.join("new")).expect("rw"),
        "rw\n"
    );
}

fn shared_pid_namespace(f: &Fixture) {
    // A pod-level PID namespace whose init is `sleep`.
    let mut holder = Command::new("unshare")
        .args(["--pid", "--fork", "sleep", "60"])
        .spawn()
        .expect("unshare");
    let deadline = Instant::now() + Duration::from_secs(5);
    let init = loop {
        let children = std::fs::read_to_string(format!(
            "/proc/{}/task/{}/children",
            holder.id(),
            holder.id()
        ))
        .unwrap_or_default();
        if let Some(pid) = children.split_whitespace().next() {
            break pid.to_string();
        }
        assert!(Instant::now() < deadline, "no init in the PID namespace");
        std::thread::sleep(Duration::from_millis(10));
    };
    let mut cfg = f.config("echo $$; ps -o pid,args | grep '^ *1 '");
    cfg.pidns = Some(PathBuf::from(format!("/proc/{init}/ns/pid")));
    let o = f.run(&cfg);
    let _ = holder.kill();
    let _ = Command::new("kill").args(["-9", &init]).status();
    let _ = holder.wait();
    assert_eq!(o.file("exit"), "0", "{}", o.log);
    let out = o.stdout();
    assert_ne!(out[0], "1", "the container is not the namespace's init");
    assert_eq!(out[1].trim(), "1 sleep 60", "{out:?}");
}

fn main() {
    if let Some(state) = std::env::var_os(SHIM_ENV) {
        let state = PathBuf::from(state);
        let cfg: ContainerConfig = serde_json::from_slice(
            &std::fs::read(state.join("config.json")).expect("read config.json"),
        )
        .expect("parse config.json");
        if let Err(e) = runtime::container::shim::run(&cfg, &state) {
            eprintln!("shim: {e}");
            std::process::exit(1);
        }
        return;
    }
    if !nix::unistd::Uid::effective().is_root() || !Path::new("/bin/busybox").exists() {
        println!("shim tests skipped: they need root and /bin/busybox");
        return;
    }
    type Case = (&'static str, fn(&Fixture));
    let cases: &[Case] = &[
        ("output_exit_code_and_reason", output_exit_code_and_reason),
        ("isolation", isolation),
        ("capabilities", capabilities),
        ("start_errors", start_errors),
        ("oom_killed", oom_killed),
        (
            "bind_mounts_and_read_only_root",
            bind_mounts_and_read_only_root,
        ),
        ("shared_pid_namespace", shared_pid_namespace),
        ("attach_to_stdin", attach_to_stdin),
        ("attach_to_a_terminal", attach_to_a_terminal),
    ];
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let fixture = Fixture::new();
    let mut failed = Vec::new();
    for (name, case) in cases {
        if !filters.is_empty() && !filters.iter().any(|f| name.contains(f.as_str())) {
            continue;
        }
        let started = Instant::now();
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| case(&fixture)));
        let verdict = if result.is_ok() { "ok" } else { "FAILED" };
        println!("test {name} ... {verdict} ({:?})", started.elapsed());
        if result.is_err() {
            failed.push(*name);
        }
    }
    let cleanup = cgroup::remove_tree(&format!("kins/{}", fixture.group));
    if let Err(e) = cleanup {
        println!("cleanup: {e}");
        failed.push("cleanup");
    }
    for c in ["memory", "cpu", "cpuacct", "pids"] {
        // Only when no other user of kins/ is left.
        let _ = std::fs::remove_dir(Path::new(cgroup::ROOT).join(c).join("kins"));
    }
    if failed.is_empty() {
        println!("test result: ok");
    } else {
        println!("test result: FAILED: {failed:?}");
        std::process::exit(1);
    }
}

//! End-to-end tests of the `kins` command line: up, down, status, kubeconfig, and what is
//! left (nothing) after them. Each test owns its clusters and data directory. Processes
//! are found here the way `kins down` is meant to find them, by `--cluster <name>` in
//! /proc/*/cmdline, but with code of its own so that a bug there cannot hide itself.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use kins_tests::{fails, kins_bin, kubectls, ok, Cluster};

/// The live processes whose arguments name `--cluster <name>`: (pid, argv).
fn cluster_processes(name: &str) -> Vec<(i32, Vec<String>)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        // A zombie has an empty cmdline: it is dead, only not reaped.
        let Ok(raw) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let argv: Vec<String> = raw
            .split(|b| *b == 0)
            .filter(|s| !s.is_empty())
            .map(|s| String::from_utf8_lossy(s).into_owned())
            .collect();
        let mine = argv.windows(2).any(|w| w[0] == "--cluster" && w[1] == name)
            || argv
                .iter()
                .any(|a| a.strip_prefix("--cluster=") == Some(name));
        if mine {
            out.push((pid, argv));
        }
    }
    out.sort();
    out
}

/// The pids of the cluster's processes.
fn pids(name: &str) -> Vec<i32> {
    cluster_processes(name)
        .into_iter()
        .map(|(p, _)| p)
        .collect()
}

/// The pid of the cluster's process running kins subcommand `role`.
fn pid_of(name: &str, role: &str) -> Result<i32> {
    let procs = cluster_processes(name);
    let found: Vec<i32> = procs
        .iter()
        .filter(|(_, argv)| argv.iter().any(|a| a == role))
        .map(|(p, _)| *p)
        .collect();
    match found.as_slice() {
        [one] => Ok(*one),
        _ => bail!("want one {role} process of {name}, found {found:?} among {procs:?}"),
    }
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        if Instant::now() > deadline {
            bail!("timed out waiting until {what}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

fn kins_in(base: &Path, args: &[&str]) -> Result<Output> {
    Command::new(kins_bin())
        .arg("--data-dir")
        .arg(base)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running kins {args:?}"))
}

fn run_dir(name: &str) -> PathBuf {
    Path::new("/run/kins").join(name)
}

/// The cells of the `kins status` line of cluster `name`.
fn status_row(c: &Cluster) -> Result<Vec<String>> {
    let out = ok(c.kins(&["status"])?)?;
    let header = out.lines().next().unwrap_or_default();
    ensure!(
        header.starts_with("NAME") && header.contains("STATE"),
        "status header: {out}"
    );
    out.lines()
        .map(|l| l.split_whitespace().map(str::to_string).collect::<Vec<_>>())
        .find(|cells| cells.first() == Some(&c.name))
        .with_context(|| format!("no line for {} in:\n{out}", c.name))
}

/// Every kubectl reads `namespace/default` through the cluster's kubeconfig.
fn api_answers(c: &Cluster) -> Result<()> {
    for k in kubectls() {
        let out = ok(c.kubectl(&k, &["get", "namespace", "default", "-o", "name"])?)
            .with_context(|| format!("kubectl {} against {}", k.display(), c.name))?;
        ensure!(out.trim() == "namespace/default", "got {out:?}");
    }
    Ok(())
}

fn create_configmap(c: &Cluster, name: &str, value: &str) -> Result<()> {
    let k = kubectls().into_iter().next().context("a kubectl")?;
    let body = serde_json::json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": "default"},
        "data": {"v": value},
    });
    let out = ok(c.kubectl_stdin(&k, &["create", "-f", "-"], Some(&body.to_string()))?)?;
    ensure!(
        out.trim() == format!("configmap/{name} created"),
        "got {out:?}"
    );
    Ok(())
}

/// Every kubectl reads the configmap's value.
fn configmap_value(c: &Cluster, name: &str) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for k in kubectls() {
        let v = ok(c.kubectl(
            &k,
            &[
                "get",
                "configmap",
                name,
                "-n",
                "default",
                "-o",
                "jsonpath={.data.v}",
            ],
        )?)?;
        out.push(v);
    }
    Ok(out)
}

#[test]
fn up_twice_is_idempotent() -> Result<()> {
    let c = Cluster::up("cli-up")?;
    let path = c.data.path().join("cli-up").join("kubeconfig");
    eq_path(&c.kubeconfig, &path)?;
    let mode = std::fs::metadata(&path)?.permissions().mode() & 0o777;
    ensure!(mode == 0o600, "kubeconfig mode {mode:o}, want 600");
    let first = std::fs::read_to_string(&path)?;
    ensure!(
        first.contains(&format!("server: https://127.0.0.1:{}", c.port)),
        "kubeconfig without the API address:\n{first}"
    );
    api_answers(&c)?;
    let supervisor = pid_of("cli-up", "supervise")?;
    let apiserver = pid_of("cli-up", "apiserver")?;
    let before = pids("cli-up");

    // Again, without naming the port: same port, same kubeconfig, same processes.
    let out = c.kins(&["up", "--name", "cli-up"])?;
    let stdout = ok(out)?;
    ensure!(
        stdout == format!("export KUBECONFIG={}\n", path.display()),
        "second kins up printed {stdout:?}"
    );
    ensure!(
        std::fs::read_to_string(&path)? == first,
        "the kubeconfig changed"
    );
    let mode = std::fs::metadata(&path)?.permissions().mode() & 0o777;
    ensure!(
        mode == 0o600,
        "kubeconfig mode {mode:o} after the second up"
    );
    ensure!(
        pid_of("cli-up", "supervise")? == supervisor,
        "the second up replaced the supervisor"
    );
    ensure!(
        pid_of("cli-up", "apiserver")? == apiserver,
        "the second up restarted the API server"
    );
    ensure!(
        pids("cli-up") == before,
        "processes before the second up: {before:?}, after: {:?}",
        cluster_processes("cli-up")
    );
    api_answers(&c)?;

    // status: one line, running, with its API address and kubeconfig.
    let row = status_row(&c)?;
    ensure!(
        row.get(1).map(String::as_str) == Some("running"),
        "status row {row:?}"
    );
    ensure!(row.contains(&c.url()), "no {} in {row:?}", c.url());
    ensure!(
        row.contains(&path.display().to_string()),
        "no kubeconfig path in {row:?}"
    );

    // kubeconfig prints the file, or its path.
    let printed = ok(c.kins(&["kubeconfig", "--name", "cli-up"])?)?;
    ensure!(
        printed == first,
        "kins kubeconfig printed something else:\n{printed}"
    );
    let printed = ok(c.kins(&["kubeconfig", "--name", "cli-up", "--path"])?)?;
    ensure!(
        printed.trim() == path.display().to_string(),
        "kins kubeconfig --path printed {printed:?}"
    );
    Ok(())
}

fn eq_path(a: &Path, b: &Path) -> Result<()> {
    ensure!(a == b, "{} != {}", a.display(), b.display());
    Ok(())
}

#[test]
fn bad_names_and_missing_clusters_exit_2() -> Result<()> {
    let base = tempfile::Builder::new().prefix("kins-test-").tempdir()?;
    for name in [
        "Bad_Name",
        "UPPER",
        "trail-",
        "9lives",
        "elevenchars",
        "a.b",
        "",
    ] {
        for verb in ["up", "down", "kubeconfig"] {
            let out = kins_in(base.path(), &[verb, "--name", name])?;
            ensure!(
                out.status.code() == Some(2),
                "kins {verb} --name {name:?}: {:?}",
                out.status
            );
            let err = String::from_utf8_lossy(&out.stderr);
            ensure!(
                err.starts_with(&format!("kins: invalid cluster name \"{name}\": ")),
                "kins {verb} --name {name:?} said {err:?}"
            );
            ensure!(
                out.stdout.is_empty(),
                "kins {verb} printed {:?}",
                String::from_utf8_lossy(&out.stdout)
            );
        }
    }
    ensure!(
        std::fs::read_dir(base.path())?.next().is_none(),
        "bad names left files behind"
    );
    ensure!(!run_dir("Bad_Name").exists(), "a run dir for a bad name");

    let out = kins_in(base.path(), &["kubeconfig", "--name", "nothere"])?;
    ensure!(
        out.status.code() == Some(2),
        "kubeconfig of a missing cluster: {:?}",
        out.status
    );
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(
        err.trim() == "kins: cluster \"nothere\" does not exist",
        "said {err:?}"
    );
    let out = ok(kins_in(base.path(), &["status"])?)?;
    ensure!(
        out.trim() == format!("no clusters under {}", base.path().display()),
        "status said {out:?}"
    );
    // A usage error is 2 as well.
    let out = kins_in(base.path(), &["up", "--name", "x", "--bogus"])?;
    ensure!(
        out.status.code() == Some(2),
        "unknown flag: {:?}",
        out.status
    );
    Ok(())
}

#[test]
fn down_stops_every_process_and_keeps_data() -> Result<()> {
    let c = Cluster::up("cli-down")?;
    create_configmap(&c, "kept", "before-down")?;
    let procs = cluster_processes("cli-down");
    pid_of("cli-down", "supervise")?;
    pid_of("cli-down", "apiserver")?;
    ensure!(run_dir("cli-down").exists(), "no run dir");

    let out = c.kins(&["down", "--name", "cli-down"])?;
    let said = String::from_utf8_lossy(&out.stderr);
    ensure!(out.status.success(), "kins down failed: {said}");
    ensure!(
        said.starts_with(&format!(
            "cluster \"cli-down\" is down: {} processes stopped",
            procs.len()
        )),
        "down said {said:?}"
    );
    let left = cluster_processes("cli-down");
    ensure!(left.is_empty(), "processes left after kins down: {left:?}");
    ensure!(!run_dir("cli-down").exists(), "the run dir is left");
    let data = c.data.path().join("cli-down");
    ensure!(
        data.join("cluster.json").exists(),
        "cluster.json went without --purge"
    );
    ensure!(
        data.join("kubeconfig").exists(),
        "the kubeconfig went without --purge"
    );
    ensure!(
        std::net::TcpStream::connect(("127.0.0.1", c.port)).is_err(),
        "the API port still accepts"
    );
    let row = status_row(&c)?;
    ensure!(
        row.get(1).map(String::as_str) == Some("stopped"),
        "status row {row:?}"
    );
    for k in kubectls() {
        let err = fails(c.kubectl(&k, &["get", "namespaces"])?)?;
        ensure!(
            err.trim()
                == format!(
                    "The connection to the server 127.0.0.1:{} was refused - did you specify the right host or port?",
                    c.port
                ),
            "kubectl against a stopped cluster said {err:?}"
        );
    }
    // down again is fine and finds nothing.
    let out = c.kins(&["down", "--name", "cli-down"])?;
    ensure!(
        out.status.success(),
        "second down: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    ensure!(
        String::from_utf8_lossy(&out.stderr)
            .starts_with("cluster \"cli-down\" is down: 0 processes stopped"),
        "second down said {:?}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Up again: same port, the data is still there.
    ok(c.kins(&["up", "--name", "cli-down"])?)?;
    ensure!(
        configmap_value(&c, "kept")?
            .iter()
            .all(|v| v == "before-down"),
        "configmap after restart"
    );
    pid_of("cli-down", "supervise")?;
    pid_of("cli-down", "apiserver")?;
    Ok(())
}

#[test]
fn down_after_kill_9_of_every_process() -> Result<()> {
    let c = Cluster::up("cli-kill9")?;
    create_configmap(&c, "survivor", "written-before-kill")?;
    // Every process of the cluster, the supervisor first so that it cannot restart the
    // others.
    let supervisor = pid_of("cli-kill9", "supervise")?;
    let apiserver = pid_of("cli-kill9", "apiserver")?;
    let old = pids("cli-kill9");
    let mut victims = vec![supervisor];
    victims.extend(old.iter().filter(|p| **p != supervisor));
    for pid in victims {
        ok(Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .output()?)?;
    }
    wait_until("the killed processes are gone", || {
        cluster_processes("cli-kill9").is_empty()
    })?;
    // What a crash leaves: the run dir with a stale pid file and ready file.
    ensure!(run_dir("cli-kill9").exists(), "no run dir after kill -9");
    let row = status_row(&c)?;
    ensure!(
        row.get(1).map(String::as_str) == Some("stopped"),
        "status after kill -9: {row:?}"
    );

    let out = c.kins(&["down", "--name", "cli-kill9"])?;
    ensure!(
        out.status.success(),
        "down after kill -9: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    ensure!(
        cluster_processes("cli-kill9").is_empty(),
        "{:?}",
        cluster_processes("cli-kill9")
    );
    ensure!(!run_dir("cli-kill9").exists(), "the run dir is left");

    ok(c.kins(&["up", "--name", "cli-kill9"])?)?;
    api_answers(&c)?;
    ensure!(
        configmap_value(&c, "survivor")?
            .iter()
            .all(|v| v == "written-before-kill"),
        "the configmap written before kill -9"
    );
    ensure!(
        pid_of("cli-kill9", "apiserver")? != apiserver,
        "the old API server"
    );
    let now = pids("cli-kill9");
    ensure!(
        !now.iter().any(|p| old.contains(p)),
        "old pids {old:?} among {now:?}"
    );
    Ok(())
}

#[test]
fn down_purge_deletes_the_data() -> Result<()> {
    let c = Cluster::up("cli-purge")?;
    let data = c.data.path().join("cli-purge");
    ensure!(data.join("apiserver").exists(), "no apiserver data dir");
    let out = c.kins(&["down", "--name", "cli-purge", "--purge"])?;
    ensure!(
        out.status.success(),
        "down --purge: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let said = String::from_utf8_lossy(&out.stderr);
    ensure!(
        said.trim_end().ends_with("data deleted"),
        "down --purge said {said:?}"
    );
    ensure!(!data.exists(), "{} is left", data.display());
    ensure!(!run_dir("cli-purge").exists(), "the run dir is left");
    ensure!(
        cluster_processes("cli-purge").is_empty(),
        "{:?}",
        cluster_processes("cli-purge")
    );
    let out = ok(c.kins(&["status"])?)?;
    ensure!(
        out.trim() == format!("no clusters under {}", c.data.path().display()),
        "status said {out:?}"
    );
    let out = c.kins(&["kubeconfig", "--name", "cli-purge"])?;
    ensure!(
        out.status.code() == Some(2),
        "kubeconfig of a purged cluster: {:?}",
        out.status
    );

    // A new cluster of that name starts empty.
    ok(c.kins(&[
        "up",
        "--name",
        "cli-purge",
        "--api-port",
        &c.port.to_string(),
    ])?)?;
    api_answers(&c)?;
    Ok(())
}

#[test]
fn two_clusters_answer_independently() -> Result<()> {
    let a = Cluster::up("cli-a")?;
    let b = Cluster::up("cli-b")?;
    let b_pids = pids("cli-b");
    ensure!(a.port != b.port, "same port {}", a.port);
    api_answers(&a)?;
    api_answers(&b)?;
    create_configmap(&a, "only-in-a", "a")?;
    create_configmap(&b, "only-in-b", "b")?;
    for k in kubectls() {
        let err = fails(b.kubectl(&k, &["get", "configmap", "only-in-a", "-n", "default"])?)?;
        ensure!(
            err.trim() == "Error from server (NotFound): configmaps \"only-in-a\" not found",
            "b said {err:?}"
        );
        let err = fails(a.kubectl(&k, &["get", "configmap", "only-in-b", "-n", "default"])?)?;
        ensure!(
            err.contains("configmaps \"only-in-b\" not found"),
            "a said {err:?}"
        );
        // Each cluster has its own CA: a's credentials do not work against b.
        let out = Command::new(&k)
            .env("KUBECONFIG", &a.kubeconfig)
            .env("HOME", a.data.path())
            .args(["--server", &b.url(), "get", "namespaces"])
            .stdin(Stdio::null())
            .output()?;
        let err = fails(out)?;
        ensure!(
            err.contains("certificate signed by unknown authority"),
            "a's kubeconfig against b: {err:?}"
        );
    }
    let ka = std::fs::read_to_string(&a.kubeconfig)?;
    let kb = std::fs::read_to_string(&b.kubeconfig)?;
    ensure!(ka != kb, "both clusters have the same kubeconfig");

    // Stopping one leaves the other running.
    ok(a.kins(&["down", "--name", "cli-a"])?)?;
    ensure!(
        cluster_processes("cli-a").is_empty(),
        "{:?}",
        cluster_processes("cli-a")
    );
    ensure!(
        pids("cli-b") == b_pids,
        "b's processes were {b_pids:?}, now {:?}",
        cluster_processes("cli-b")
    );
    api_answers(&b)?;
    ensure!(
        configmap_value(&b, "only-in-b")?.iter().all(|v| v == "b"),
        "b's configmap"
    );
    Ok(())
}

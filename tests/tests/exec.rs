//! `kubectl exec` for real, as root, with every kubectl under test and over both of its
//! transports (WebSocket v5, and SPDY/3.1 as `KUBECTL_REMOTE_COMMAND_WEBSOCKETS=false`
//! and client-go's fallback use): stdin piped in and out, exit codes, a named container,
//! a pod on each node, a terminal (under `script`), and the errors for a missing
//! container or command. The cluster is this test's own.

use std::io::Write;
use std::path::Path;
use std::process::{Output, Stdio};

use anyhow::{ensure, Context, Result};
use kins_tests::pods::{create, wait_running};
use kins_tests::{fails, kubectls, ok, Cluster};

/// kubectl `args`, over SPDY when `spdy`, with `stdin` written to it if given.
fn kubectl(
    c: &Cluster,
    k: &Path,
    spdy: bool,
    args: &[&str],
    stdin: Option<&str>,
) -> Result<Output> {
    let mut cmd = c.kubectl_cmd(k, args);
    if spdy {
        cmd.env("KUBECTL_REMOTE_COMMAND_WEBSOCKETS", "false");
    }
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    if stdin.is_some() {
        cmd.stdin(Stdio::piped());
    }
    let mut child = cmd.spawn().context("running kubectl")?;
    if let (Some(text), Some(mut w)) = (stdin, child.stdin.take()) {
        w.write_all(text.as_bytes())?;
    }
    Ok(child.wait_with_output()?)
}

fn pod(name: &str, node: &str) -> String {
    format!(
        r#"{{"apiVersion": "v1", "kind": "Pod", "metadata": {{"name": "{name}"}},
  "spec": {{"nodeName": "{node}", "terminationGracePeriodSeconds": 0, "containers": [
    {{"name": "app", "image": "busybox", "command": ["sleep", "3600"], "env": [{{"name": "WHO", "value": "app"}}]}},
    {{"name": "side", "image": "busybox", "command": ["sleep", "3600"], "env": [{{"name": "WHO", "value": "side"}}]}}]}}}}"#
    )
}

#[test]
fn kubectl_exec() -> Result<()> {
    let c = Cluster::up_nodes("kexec", 2)?;
    create(&c, &pod("one", "kexec-worker"))?;
    create(&c, &pod("two", "kexec-worker2"))?;
    wait_running(&c, "one")?;
    wait_running(&c, "two")?;
    for k in kubectls() {
        for spdy in [false, true] {
            over(&c, &k, spdy).with_context(|| format!("{} spdy={spdy}", k.display()))?;
        }
    }
    Ok(())
}

fn over(c: &Cluster, k: &Path, spdy: bool) -> Result<()> {
    let run = |args: &[&str]| kubectl(c, k, spdy, args, None);
    for p in ["one", "two"] {
        // stdin in, stdout and stderr apart, the exit code through.
        let script = "cat; echo oops >&2; exit 3";
        let args = ["exec", "-i", p, "-c", "app", "--", "sh", "-c", script];
        let out = kubectl(c, k, spdy, &args, Some("hello from stdin\n"))?;
        ensure!(out.status.code() == Some(3), "{p}: exit {:?}", out.status);
        let stdout = String::from_utf8_lossy(&out.stdout);
        ensure!(stdout == "hello from stdin\n", "{p}: {out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        ensure!(
            err.contains("oops") && err.contains("command terminated with exit code 3"),
            "{err}"
        );
        // The named container: its environment and hostname (the pod's).
        let side = ok(run(&[
            "exec",
            p,
            "-c",
            "side",
            "--",
            "sh",
            "-c",
            "echo $WHO $(hostname)",
        ])?)?;
        ensure!(side.trim() == format!("side {p}"), "{side}");
        ensure!(ok(run(&["exec", p, "-c", "app", "--", "true"])?)?.is_empty());
    }
    // The container's own namespaces: its processes, not the host's.
    let ps = ok(run(&[
        "exec", "one", "-c", "app", "--", "ps", "-o", "pid,args",
    ])?)?;
    ensure!(
        ps.contains("sleep 3600") && !ps.contains("kins agent"),
        "{ps}"
    );
    // Errors: a container the pod does not have, a command the image does not have.
    let e = fails(run(&["exec", "one", "-c", "nope", "--", "true"])?)?;
    ensure!(e.contains("container nope is not valid for pod one"), "{e}");
    let e = fails(run(&["exec", "one", "-c", "app", "--", "no-such-command"])?)?;
    ensure!(e.contains("executable file not found"), "{e}");
    let e = fails(run(&["exec", "missing", "--", "true"])?)?;
    ensure!(e.contains("not found"), "{e}");
    // A terminal: kubectl under script(1), so that its stdin is a tty; the size of
    // kubectl's terminal arrives as a resize.
    let cmd = format!(
        "stty cols 100 rows 30; {} exec -it one -c app -- sh -c 'test -t 0 && echo is-a-tty; stty size'",
        k.display()
    );
    let out = std::process::Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .env("KUBECONFIG", &c.kubeconfig)
        .env("HOME", c.data.path())
        .env(
            "KUBECTL_REMOTE_COMMAND_WEBSOCKETS",
            if spdy { "false" } else { "true" },
        )
        .stdin(Stdio::null())
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    ensure!(text.contains("is-a-tty"), "{text} {out:?}");
    ensure!(text.contains("30 100"), "the terminal's size: {text}");
    Ok(())
}

/// `kubectl cp` both ways with a directory tree, into the host-built nginx image (kubectl
/// runs `tar` in the container over exec, so the image must have one that works).
#[test]
fn kubectl_cp() -> Result<()> {
    let c = Cluster::up_nodes("kcp", 1)?;
    create(
        &c,
        r#"{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web"},
  "spec": {"terminationGracePeriodSeconds": 0, "containers": [{"name": "nginx", "image": "nginx"}]}}"#,
    )?;
    wait_running(&c, "web")?;
    let local = tempfile::tempdir()?;
    let src = local.path().join("site");
    std::fs::create_dir_all(src.join("css"))?;
    std::fs::write(src.join("index.html"), "<h1>copied</h1>\n")?;
    std::fs::write(src.join("css/site.css"), "h1 { color: teal }\n")?;
    for (i, k) in kubectls().iter().enumerate() {
        let dst = format!("/usr/share/nginx/html/site{i}");
        let to = format!("web:{dst}");
        ok(c.kubectl(k, &["cp", &src.to_string_lossy(), &to])?)?;
        // nginx serves what was copied in.
        let page = ok(c.kubectl(
            k,
            &["exec", "web", "--", "cat", &format!("{dst}/css/site.css")],
        )?)?;
        ensure!(page == "h1 { color: teal }\n", "{page}");
        // And back out, the tree intact.
        let back = local.path().join(format!("back{i}"));
        ok(c.kubectl(k, &["cp", &to, &back.to_string_lossy()])?)?;
        ensure!(std::fs::read_to_string(back.join("index.html"))? == "<h1>copied</h1>\n");
        ensure!(std::fs::read_to_string(back.join("css/site.css"))? == "h1 { color: teal }\n");
    }
    Ok(())
}

/// `kubectl debug POD --image=busybox --target=app`: an ephemeral container added through
/// pods/ephemeralcontainers, started in the target's PID namespace (it sees the target's
/// processes), its log read like any container's; existing ones cannot be changed.
#[test]
fn kubectl_debug() -> Result<()> {
    let c = Cluster::up_nodes("kdbg", 1)?;
    create(&c, &pod("one", "kdbg-worker"))?;
    wait_running(&c, "one")?;
    for (i, k) in kubectls().iter().enumerate() {
        let name = format!("dbg{i}");
        let args = [
            "debug",
            "one",
            "--image=busybox",
            "--target=app",
            "-c",
            &name,
            "--",
            "ps",
            "-o",
            "args",
        ];
        ok(c.kubectl(k, &args)?)?;
        let done = kins_tests::pods::wait_for("the debug container to finish", 60, || {
            let p = kins_tests::pods::get_json(&c, &["get", "pod", "one"])?;
            let st = p["status"]["ephemeralContainerStatuses"]
                .as_array()
                .and_then(|a| a.iter().find(|s| s["name"] == name.as_str()).cloned());
            Ok(st.filter(|s| s["state"].get("terminated").is_some()))
        })?;
        ensure!(done["state"]["terminated"]["exitCode"] == 0, "{done}");
        let log = ok(c.kubectl(k, &["logs", "one", "-c", &name])?)?;
        // The target's process (sleep 3600), not the side container's own PID namespace.
        ensure!(
            log.contains("sleep 3600") && log.contains("ps -o args"),
            "{log}"
        );
        // A name already taken: the API's validation error.
        let e = fails(c.kubectl(
            k,
            &[
                "debug",
                "one",
                "--image=busybox",
                "-c",
                "side",
                "--",
                "true",
            ],
        )?)?;
        ensure!(
            e.contains("Duplicate value") || e.contains("already exists"),
            "{e}"
        );
    }
    // An ordinary update does not remove them.
    ok(c.kubectl(
        &kubectls()[0],
        &[
            "patch",
            "pod",
            "one",
            "-p",
            r#"{"spec":{"ephemeralContainers":null}}"#,
        ],
    )?)?;
    let p = kins_tests::pods::get_json(&c, &["get", "pod", "one"])?;
    let n = p["spec"]["ephemeralContainers"]
        .as_array()
        .map_or(0, Vec::len);
    ensure!(n == kubectls().len(), "{}", p["spec"]);
    Ok(())
}

/// exec into a running init container; and an agent killed (-9) during an exec: that exec
/// ends with an error, the container keeps running, and once the supervisor has restarted
/// the agent a new exec works.
#[test]
fn exec_into_init_container_and_across_an_agent_restart() -> Result<()> {
    let c = Cluster::up_nodes("kexr", 1)?;
    create(
        &c,
        r#"{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "ini"},
  "spec": {"terminationGracePeriodSeconds": 0,
    "initContainers": [{"name": "wait", "image": "busybox", "command": ["sleep", "3600"]}],
    "containers": [{"name": "app", "image": "busybox", "command": ["sleep", "3600"]}]}}"#,
    )?;
    create(&c, &pod("one", "kexr-worker"))?;
    wait_running(&c, "one")?;
    kins_tests::pods::wait_for("the init container to run", 60, || {
        let p = kins_tests::pods::get_json(&c, &["get", "pod", "ini"])?;
        Ok(p["status"]["initContainerStatuses"][0]["state"]
            .get("running")
            .cloned())
    })?;
    let k = &kubectls()[0];
    let out = ok(c.kubectl(
        k,
        &[
            "exec",
            "ini",
            "-c",
            "wait",
            "--",
            "sh",
            "-c",
            "echo in-init $(hostname)",
        ],
    )?)?;
    ensure!(out.trim() == "in-init ini", "{out}");
    // A long exec, running for sure (it said so), then the agent goes.
    let script = "echo started; sleep 30; echo finished";
    let mut long = c
        .kubectl_cmd(k, &["exec", "one", "-c", "app", "--", "sh", "-c", script])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let mut stdout = std::io::BufReader::new(long.stdout.take().context("stdout")?);
    let mut first = String::new();
    std::io::BufRead::read_line(&mut stdout, &mut first)?;
    ensure!(first == "started\n", "{first:?}");
    let agent = lab::procs::find(&c.name)
        .into_iter()
        .find(|p| p.role == "agent")
        .context("the agent process")?;
    ok(std::process::Command::new("kill")
        .args(["-KILL", &agent.pid.to_string()])
        .output()?)?;
    let out = long.wait_with_output()?;
    let err = String::from_utf8_lossy(&out.stderr);
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut rest)?;
    ensure!(
        !out.status.success() && !rest.contains("finished"),
        "{out:?} {rest}"
    );
    // kubectl's default transport (WebSocket channels): the API server says what happened
    // on the error channel, not "close 1006 (abnormal closure)".
    ensure!(
        err.contains("the connection to the agent of node kexr-worker was lost"),
        "{err}"
    );
    // The container was not touched, and exec works again with the restarted agent.
    let again = kins_tests::pods::wait_for("an exec after the agent's restart", 60, || {
        Ok(c.kubectl(
            k,
            &["exec", "one", "-c", "app", "--", "cat", "/proc/1/cmdline"],
        )
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned()))
    })?;
    ensure!(again.starts_with("sleep"), "{again:?}");
    let p = kins_tests::pods::get_json(&c, &["get", "pod", "one"])?;
    ensure!(
        p["status"]["containerStatuses"][0]["restartCount"] == 0,
        "{}",
        p["status"]
    );
    Ok(())
}

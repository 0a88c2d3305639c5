//! `kubectl attach`, `kubectl run -i/-it --rm` and `kubectl debug -it` for real, as root,
//! with every kubectl under test over both transports (WebSocket v5 and SPDY/3.1): the
//! container's own stdin and output through its shim, a terminal with its size, stdinOnce
//! closing stdin (the command sees EOF and the pod is removed), a detached terminal
//! leaving the container running. The cluster is this test's own.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use kins_tests::pods::{create, get_json, wait_for, wait_running};
use kins_tests::term::Term;
use kins_tests::{fails, kubectls, Cluster};

const POD: &str = r#"{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "shell"},
  "spec": {"terminationGracePeriodSeconds": 0, "containers": [
    {"name": "sh", "image": "busybox", "command": ["sh"], "stdin": true, "tty": true},
    {"name": "echo", "image": "busybox", "stdin": true,
     "command": ["sh", "-c", "while read l; do echo \"got $l\"; echo \"err $l\" >&2; done"]}]}}"#;

fn transport(spdy: bool) -> &'static str {
    if spdy {
        "false"
    } else {
        "true"
    }
}

fn env(c: &Cluster, spdy: bool) -> Vec<(&str, &str)> {
    vec![
        ("KUBECONFIG", c.kubeconfig.to_str().unwrap_or_default()),
        ("HOME", c.data.path().to_str().unwrap_or_default()),
        ("KUBECTL_REMOTE_COMMAND_WEBSOCKETS", transport(spdy)),
    ]
}

#[test]
fn kubectl_attach_run_and_debug() -> Result<()> {
    let c = Cluster::up_nodes("katt", 1)?;
    create(&c, POD)?;
    wait_running(&c, "shell")?;
    let mut n = 0;
    for k in kubectls() {
        for spdy in [false, true] {
            n += 1;
            let what = format!("{} spdy={spdy}", k.display());
            // A failed step prints what the pod and its node said.
            let checked = |step: &dyn Fn() -> Result<()>, label: &str| -> Result<()> {
                step()
                    .inspect_err(|_| diagnose(&c))
                    .with_context(|| format!("{label}, {what}"))
            };
            checked(&|| attach_pipe(&c, &k, spdy, n), "attach -i")?;
            run_pipe(&c, &k, spdy, n).with_context(|| format!("run -i --rm, {what}"))?;
            run_terminal(&c, &k, spdy, n).with_context(|| format!("run -it --rm, {what}"))?;
            checked(&|| attach_terminal(&c, &k, spdy, n), "attach -it")?;
        }
        n += 1;
        debug_terminal(&c, &k, n).with_context(|| format!("debug -it, {}", k.display()))?;
    }
    // Bad input: a container the pod does not have; a pod that is not there.
    let k = &kubectls()[0];
    let e = fails(c.kubectl(k, &["attach", "shell", "-c", "nope"])?)?;
    // (kubectl's wording: "not found in pod", or "not valid for pod ... out of: ..." once
    // the pod has ephemeral containers.)
    ensure!(
        e.contains("container nope not found in pod shell")
            || e.contains("container nope is not valid for pod shell"),
        "{e}"
    );
    let e = fails(c.kubectl(k, &["attach", "missing"])?)?;
    ensure!(e.contains("not found"), "{e}");
    // Nothing above restarted the attached containers.
    let p = get_json(&c, &["get", "pod", "shell"])?;
    for s in p["status"]["containerStatuses"]
        .as_array()
        .into_iter()
        .flatten()
    {
        ensure!(s["restartCount"] == 0, "{s}");
        ensure!(s["state"].get("running").is_some(), "{s}");
    }
    Ok(())
}

/// What the pod and its node say, printed when a step fails.
fn diagnose(c: &Cluster) {
    if let Ok(p) = get_json(c, &["get", "pod", "shell"]) {
        eprintln!(
            "pod shell containerStatuses: {}",
            p["status"]["containerStatuses"]
        );
    }
    let logs = c.data.path().join(&c.name).join("logs");
    for e in std::fs::read_dir(&logs).into_iter().flatten().flatten() {
        let text = std::fs::read_to_string(e.path()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = &lines[lines.len().saturating_sub(40)..];
        eprintln!(
            "--- {} (last {} lines)\n{}",
            e.path().display(),
            tail.len(),
            tail.join("\n")
        );
    }
}

/// `kubectl attach -i` to a container reading stdin without a terminal: the line typed
/// reaches its process, its stdout and stderr come back apart; the container's stdin
/// stays open after kubectl goes (no stdinOnce), so the next attach works too.
fn attach_pipe(c: &Cluster, k: &Path, spdy: bool, n: u32) -> Result<()> {
    let mut cmd = c.kubectl_cmd(k, &["attach", "-i", "shell", "-c", "echo"]);
    cmd.env("KUBECTL_REMOTE_COMMAND_WEBSOCKETS", transport(spdy))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn()?;
    let mut stdin = child.stdin.take().context("stdin")?;
    // Both streams' lines, tagged, into one channel.
    let (tx, rx) = std::sync::mpsc::channel::<(bool, String)>();
    let out = child.stdout.take().context("stdout")?;
    let err = child.stderr.take().context("stderr")?;
    for (is_err, r) in [
        (false, Box::new(out) as Box<dyn std::io::Read + Send>),
        (true, Box::new(err)),
    ] {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for l in BufReader::new(r).lines().map_while(Result::ok) {
                if tx.send((is_err, l)).is_err() {
                    return;
                }
            }
        });
    }
    // Lines typed before the attach is made are lost as with the kubelet: type until one
    // comes back on stdout, then wait for its stderr line.
    let (want_out, want_err) = (format!("got hello-{n}"), format!("err hello-{n}"));
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen: Vec<(bool, String)> = Vec::new();
    let has =
        |seen: &[(bool, String)], e: bool, w: &str| seen.iter().any(|(x, l)| *x == e && l == w);
    while !(has(&seen, false, &want_out) && has(&seen, true, &want_err)) {
        if !has(&seen, false, &want_out) {
            stdin.write_all(format!("hello-{n}\n").as_bytes())?;
            stdin.flush()?;
        }
        while let Ok(l) = rx.recv_timeout(Duration::from_millis(300)) {
            seen.push(l);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            bail!("no {want_out:?} and {want_err:?} came back: {seen:?}");
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    // Nothing but these lines (and kubectl's hints on stderr) came back.
    for (is_err, l) in &seen {
        let expected = if *is_err { &want_err } else { &want_out };
        ensure!(
            l == expected || (*is_err && !l.starts_with("err ")),
            "{seen:?}"
        );
    }
    Ok(())
}

/// `kubectl run -i --rm` with stdin piped (stdinOnce): the command reads everything,
/// sees EOF, ends; kubectl prints its output and removes the pod.
fn run_pipe(c: &Cluster, k: &Path, spdy: bool, n: u32) -> Result<()> {
    let name = format!("pipe{n}");
    let args = [
        "run",
        &name,
        "-i",
        "--rm",
        "--image=busybox",
        "--restart=Never",
        "--",
        "sh",
        "-c",
        "wc -l; echo end",
    ];
    let mut cmd = c.kubectl_cmd(k, &args);
    cmd.env("KUBECTL_REMOTE_COMMAND_WEBSOCKETS", transport(spdy))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn()?;
    let mut stdin = child.stdin.take().context("stdin")?;
    stdin.write_all(b"one\ntwo\nthree\n")?;
    drop(stdin);
    let out = child.wait_with_output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    ensure!(out.status.success(), "{out:?}");
    ensure!(stdout.contains("3\nend\n"), "{stdout}");
    gone(c, &name)
}

/// The pod `name` is deleted (kubectl --rm waits for nothing: the API removes it).
fn gone(c: &Cluster, name: &str) -> Result<()> {
    wait_for(&format!("pod {name} to be gone"), 60, || {
        let out = c.kubectl(Path::new("kubectl"), &["get", "pod", name])?;
        Ok((!out.status.success()).then_some(()))
    })
}

/// `kubectl run -it --rm -- sh`: a shell at a terminal of kubectl's size; `exit` ends
/// the container and kubectl removes the pod.
fn run_terminal(c: &Cluster, k: &Path, spdy: bool, n: u32) -> Result<()> {
    let name = format!("tty{n}");
    let cmd = format!(
        "{} run {name} --rm -it --image=busybox --restart=Never -- sh",
        k.display()
    );
    let mut t = Term::spawn(&cmd, &env(c, spdy))?;
    t.expect("If you don't see a command prompt", 60)?;
    // The prompt was printed before the attach: Enter brings a new one.
    t.send("\n")?;
    t.expect("/ # ", 30)?;
    // What is looked for is computed, so that the echo of the typed line never matches.
    t.send("echo hi-$((6*7)); stty size; [ -t 0 ] && echo on-a-$((1+1))-tty\n")?;
    let out = t.expect("on-a-2-tty", 30)?;
    ensure!(out.contains("hi-42") && out.contains("30 100"), "{out:?}");
    t.send("exit\n")?;
    let (code, out) = t.wait(60)?;
    ensure!(code == Some(0), "exit {code:?}: {out:?}");
    ensure!(out.contains(&format!("pod \"{name}\" deleted")), "{out:?}");
    gone(c, &name)
}

/// `kubectl attach -it` to a running shell (tty, no stdinOnce): commands run in it;
/// closing the terminal detaches and the shell keeps running.
fn attach_terminal(c: &Cluster, k: &Path, spdy: bool, n: u32) -> Result<()> {
    let cmd = format!("{} attach -it shell -c sh", k.display());
    let mut t = Term::spawn(&cmd, &env(c, spdy))?;
    t.expect("If you don't see a command prompt", 60)?;
    t.send(&format!("echo at-$(({n}*1000)); stty size\n"))?;
    let out = t.expect(&format!("at-{}", n * 1000), 30)?;
    t.expect("30 100", 30).with_context(|| out.clone())?;
    t.hang_up();
    // Still the same process: running, never restarted.
    let p = get_json(c, &["get", "pod", "shell"])?;
    let sh = p["status"]["containerStatuses"]
        .as_array()
        .and_then(|a| a.iter().find(|s| s["name"] == "sh").cloned())
        .unwrap_or_default();
    ensure!(
        sh["state"].get("running").is_some() && sh["restartCount"] == 0,
        "{sh}"
    );
    Ok(())
}

/// `kubectl debug -it --target`: a shell in an ephemeral container that sees the target
/// container's processes; exiting ends it (it is not restarted).
fn debug_terminal(c: &Cluster, k: &Path, n: u32) -> Result<()> {
    let name = format!("dbg{n}");
    let cmd = format!(
        "{} debug -it shell --image=busybox --target=echo -c {name}",
        k.display()
    );
    let mut t = Term::spawn(&cmd, &env(c, false))?;
    t.expect("If you don't see a command prompt", 60)?;
    t.send("\n")?;
    t.expect("/ # ", 30)?;
    t.send("ps -o args | grep -c '[w]hile read'; echo dbg-$((1+1))\n")?;
    let out = t.expect("dbg-2\r\n", 30)?;
    ensure!(out.contains("\r\n1\r\n"), "the target's process: {out:?}");
    t.send("exit\n")?;
    let (code, out) = t.wait(60)?;
    ensure!(code == Some(0), "exit {code:?}: {out:?}");
    let st = wait_for("the debug container to end", 60, || {
        let p = get_json(c, &["get", "pod", "shell"])?;
        Ok(p["status"]["ephemeralContainerStatuses"]
            .as_array()
            .and_then(|a| a.iter().find(|s| s["name"] == name.as_str()).cloned())
            .filter(|s| s["state"].get("terminated").is_some()))
    })?;
    ensure!(st["state"]["terminated"]["exitCode"] == 0, "{st}");
    Ok(())
}
